/*
 * store_feed: the reads the indexes follow the store through (index/feed.h). The change log --
 * chunks added after a counter, with their vectors or their text, and the tombstones of chunks
 * deleted after it -- and the whole-store walks that rebuilds read, each from one read
 * transaction whose change counter it reports, so that an index knows exactly which changes it
 * has seen. Also here: the documents changed after a counter with their ACL, the documents of
 * one principal, and the meta values (counter, uid, pruned counter) the indexes check.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/feed.h"
#include "index/store.h"
#include "index/store_int.h"

/* ---- change log and vector iteration ----------------------------------------------------- */

/* Walks q's rows (chunk id, counter) calling fn, with the vector of each added chunk. */
static qr_status walk(store *s, sqlite3_stmt *q, bool deleted, int dim, float *vec, store_change_fn fn,
                      void *ctx, char *err)
{
    bool row;
    qr_status st;
    while (!(st = store_step_row(s, q, &row, err, "read the change log")) && row) {
        store_change c = {.chunk_id = sqlite3_column_int64(q, 0),
                          .counter = sqlite3_column_int64(q, 1),
                          .deleted = deleted,
                          .vector = deleted ? NULL : vec,
                          .dim = deleted ? 0 : dim};
        if (!deleted && (st = store_vec_read(s, c.chunk_id, vec, dim, err)))
            break;
        if ((st = fn(ctx, &c, err)))
            break;
    }
    sqlite3_reset(q);
    return st;
}

/* Opens a snapshot and reads its counter and dimension; allocates the vector buffer. */
static qr_status snapshot(store *s, int64_t *counter, int *dim, float **vec, char *err)
{
    int64_t d = 0;
    qr_status st;
    if ((st = store_begin_read(s, err)) || (st = store_meta_get_int(s, "change_counter", counter, err)) ||
        (st = store_meta_get_int(s, "embedding_dim", &d, err)))
        return st;
    *dim = (int)d;
    if (!(*vec = malloc((d ? (size_t)d : 1) * sizeof(float))))
        return qr_fail(err, QR_ENOMEM, "out of memory for a vector of dimension %lld", (long long)d);
    return QR_OK;
}

qr_status store_changes_since(store *s, int64_t since, store_change_fn fn, void *ctx, int64_t *counter,
                              char *err)
{
    if (!s || !fn || !counter)
        return qr_fail(err, QR_EINVAL, "store_changes_since: NULL argument");
    float *vec = NULL;
    int dim = 0;
    int64_t now = 0;
    qr_status st = snapshot(s, &now, &dim, &vec, err);
    if (st)
        goto out;
    if (sqlite3_bind_int64(s->q[Q_CHANGED_DELETED], 1, since) ||
        sqlite3_bind_int64(s->q[Q_CHANGED_ADDED], 1, since)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = walk(s, s->q[Q_CHANGED_DELETED], true, dim, vec, fn, ctx, err)) ||
        (st = walk(s, s->q[Q_CHANGED_ADDED], false, dim, vec, fn, ctx, err)) || (st = store_commit(s, err)))
        goto out;
    *counter = now;
out:
    st = store_end_call(s, st, err);
    free(vec);
    return st;
}

qr_status store_each_vector(store *s, store_change_fn fn, void *ctx, int64_t *counter, char *err)
{
    if (!s || !fn || !counter)
        return qr_fail(err, QR_EINVAL, "store_each_vector: NULL argument");
    float *vec = NULL;
    int dim = 0;
    int64_t now = 0;
    qr_status st = snapshot(s, &now, &dim, &vec, err);
    if (st || (st = walk(s, s->q[Q_VECS_ALL], false, dim, vec, fn, ctx, err)) || (st = store_commit(s, err)))
        goto out;
    *counter = now;
out:
    st = store_end_call(s, st, err);
    free(vec);
    return st;
}

qr_status store_prune_tombstones(store *s, int64_t counter, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_prune_tombstones: NULL store");
    sqlite3_stmt *q = s->q[Q_PRUNE];
    int64_t pruned = 0;
    qr_status st = store_begin_write(s, err);
    if (st)
        goto out;
    s->wrote = true;
    if ((st = sqlite3_bind_int64(q, 1, counter) ? store_bind_fail(s, err)
                                                : store_run(s, q, err, "prune tombstones")))
        goto out;
    /* readers behind this counter can no longer learn every deletion (store_pruned_through) */
    if ((st = store_meta_get_int(s, "tombstones_pruned", &pruned, err)) ||
        (counter > pruned && (st = store_meta_set_int(s, "tombstones_pruned", counter, err))))
        goto out;
    st = store_commit(s, err);
out:
    return store_end_call(s, st, err);
}

/* ---- feeds for the pruned BM25 index ----------------------------------------------------- */

/* Reads one counter from the meta table in its own snapshot (or the open batch's). */
static qr_status read_meta_counter(store *s, const char *key, int64_t *out, char *err)
{
    int64_t v = 0;
    qr_status st;
    if (!(st = store_begin_read(s, err)) && !(st = store_meta_get_int(s, key, &v, err)) &&
        !(st = store_commit(s, err)))
        *out = v;
    return store_end_call(s, st, err);
}

qr_status store_change_counter(store *s, int64_t *counter, char *err)
{
    if (!s || !counter)
        return qr_fail(err, QR_EINVAL, "store_change_counter: NULL argument");
    return read_meta_counter(s, "change_counter", counter, err);
}

qr_status store_uid(store *s, int64_t *uid, char *err)
{
    if (!s || !uid)
        return qr_fail(err, QR_EINVAL, "store_uid: NULL argument");
    return read_meta_counter(s, "store_uid", uid, err);
}

qr_status store_pruned_through(store *s, int64_t *counter, char *err)
{
    if (!s || !counter)
        return qr_fail(err, QR_EINVAL, "store_pruned_through: NULL argument");
    return read_meta_counter(s, "tombstones_pruned", counter, err);
}

/* Walks q's rows calling fn: (chunk id, counter) for deleted chunks, (chunk id, added, doc,
 * title, headings, body) for live ones. */
static qr_status walk_text(store *s, sqlite3_stmt *q, bool deleted, store_text_fn fn, void *ctx, char *err)
{
    bool row;
    qr_status st;
    while (!(st = store_step_row(s, q, &row, err, "read chunk texts")) && row) {
        store_text t = {.chunk_id = sqlite3_column_int64(q, 0),
                        .doc = -1,
                        .counter = sqlite3_column_int64(q, 1),
                        .deleted = deleted};
        if (!deleted) {
            t.doc = sqlite3_column_int64(q, 2);
            for (int i = 0; i < 3; i++) {
                t.col[i] = store_col_str(q, 3 + i); /* text before bytes: the length is the UTF-8 one */
                t.col_len[i] = (size_t)sqlite3_column_bytes(q, 3 + i);
            }
        }
        if ((st = fn(ctx, &t, err)))
            break;
    }
    sqlite3_reset(q);
    return st;
}

qr_status store_text_changes_since(store *s, int64_t since, store_text_fn fn, void *ctx, int64_t *counter,
                                   char *err)
{
    if (!s || !fn || !counter)
        return qr_fail(err, QR_EINVAL, "store_text_changes_since: NULL argument");
    int64_t now = 0;
    qr_status st;
    if ((st = store_begin_read(s, err)) || (st = store_meta_get_int(s, "change_counter", &now, err)))
        goto out;
    if (sqlite3_bind_int64(s->q[Q_CHANGED_DELETED], 1, since) ||
        sqlite3_bind_int64(s->q[Q_TEXT_ADDED], 1, since)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = walk_text(s, s->q[Q_CHANGED_DELETED], true, fn, ctx, err)) ||
        (st = walk_text(s, s->q[Q_TEXT_ADDED], false, fn, ctx, err)) || (st = store_commit(s, err)))
        goto out;
    *counter = now;
out:
    return store_end_call(s, st, err);
}

qr_status store_each_text(store *s, store_text_fn fn, void *ctx, int64_t *counter, char *err)
{
    if (!s || !fn || !counter)
        return qr_fail(err, QR_EINVAL, "store_each_text: NULL argument");
    int64_t now = 0;
    qr_status st;
    if ((st = store_begin_read(s, err)) || (st = store_meta_get_int(s, "change_counter", &now, err)) ||
        (st = walk_text(s, s->q[Q_TEXT_ALL], false, fn, ctx, err)) || (st = store_commit(s, err)))
        goto out;
    *counter = now;
out:
    return store_end_call(s, st, err);
}

/* One document's rows of Q_DOCS_CHANGED being gathered: the principals are copied, since the
 * statement's column text does not outlive the next step. */
typedef struct {
    store_doc_change d;
    const char **acl; /* malloc'd, cap entries; strings in arena */
    size_t cap;
    qr_arena arena;
} doc_change_acc;

static qr_status acc_add_principal(doc_change_acc *a, sqlite3_stmt *q, int col, char *err)
{
    if (a->d.nacl == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 16;
        const char **bigger = realloc(a->acl, cap * sizeof(*bigger));
        if (!bigger)
            return qr_fail(err, QR_ENOMEM, "out of memory for an ACL of %zu principals", cap);
        a->acl = bigger;
        a->cap = cap;
    }
    const char *p = qr_arena_strndup(&a->arena, store_col_str(q, col), (size_t)sqlite3_column_bytes(q, col));
    if (!p)
        return qr_fail(err, QR_ENOMEM, "out of memory for an ACL");
    a->acl[a->d.nacl++] = p;
    return QR_OK;
}

qr_status store_docs_changed_since(store *s, int64_t since, store_doc_change_fn fn, void *ctx,
                                   int64_t *counter, char *err)
{
    if (!s || !fn || !counter)
        return qr_fail(err, QR_EINVAL, "store_docs_changed_since: NULL argument");
    sqlite3_stmt *q = s->q[Q_DOCS_CHANGED];
    doc_change_acc a = {0};
    qr_arena_init(&a.arena, (size_t)64 << 20); /* one document's principals: about 1 MiB at most */
    int64_t now = 0;
    bool have = false, row;
    qr_status st;
    if ((st = store_begin_read(s, err)) || (st = store_meta_get_int(s, "change_counter", &now, err)))
        goto out;
    if (sqlite3_bind_int64(q, 1, since)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    while (!(st = store_step_row(s, q, &row, err, "read changed documents")) && row) {
        int64_t id = sqlite3_column_int64(q, 0);
        if (have && id != a.d.doc) {
            a.d.acl = a.acl;
            if ((st = fn(ctx, &a.d, err)))
                goto out;
            have = false;
        }
        if (!have) {
            qr_arena_reset(&a.arena);
            a.d = (store_doc_change){.doc = id,
                                     .counter = sqlite3_column_int64(q, 1),
                                     .fts_rewritten = sqlite3_column_int64(q, 2) > since};
            have = true;
        }
        if (sqlite3_column_type(q, 3) != SQLITE_NULL && (st = acc_add_principal(&a, q, 3, err)))
            goto out;
    }
    if (st)
        goto out;
    sqlite3_reset(q);
    if (have) {
        a.d.acl = a.acl;
        if ((st = fn(ctx, &a.d, err)))
            goto out;
    }
    if ((st = store_commit(s, err)))
        goto out;
    *counter = now;
out:
    st = store_end_call(s, st, err);
    free(a.acl);
    qr_arena_release(&a.arena);
    return st;
}

qr_status store_principal_docs(store *s, const char *principal, store_doc_key_fn fn, void *ctx,
                               int64_t *counter, char *err)
{
    if (!s || !principal || !fn || !counter)
        return qr_fail(err, QR_EINVAL, "store_principal_docs: NULL argument");
    if (!store_principal_valid(principal))
        return qr_fail(err, QR_EINVAL,
                       "invalid principal: expected \"public\", \"user:<uid>\" or \"group:<name>\"");
    sqlite3_stmt *q = s->q[Q_PRINCIPAL_DOCS];
    int64_t now = 0;
    bool row;
    qr_status st;
    if ((st = store_begin_read(s, err)) || (st = store_meta_get_int(s, "change_counter", &now, err)))
        goto out;
    if (store_bind_str(q, 1, principal)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    while (!(st = store_step_row(s, q, &row, err, "read a principal's documents")) && row) {
        if ((st = fn(ctx, sqlite3_column_int64(q, 0), err)))
            goto out;
    }
    if (st)
        goto out;
    sqlite3_reset(q);
    if ((st = store_commit(s, err)))
        goto out;
    *counter = now;
out:
    return store_end_call(s, st, err);
}
