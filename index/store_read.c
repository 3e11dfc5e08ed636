/*
 * store_read: reading documents back: one document with its ACL and chunks (store_get_document,
 * from one snapshot, into an arena the caller frees with store_doc_info_free), a page of the
 * document listing (store_list_documents), and one chunk's vector (store_get_vector).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/store.h"
#include "index/store_int.h"

/* ---- reading documents and vectors ------------------------------------------------------- */

void store_doc_info_free(store_doc_info *d)
{
    if (!d)
        return;
    qr_arena_release(&d->arena_);
    free(d);
}

/* Copies column i of q into the arena; NULL on allocation failure. */
static const char *arena_col(qr_arena *a, sqlite3_stmt *q, int i, size_t *len)
{
    const char *v = store_col_str(q, i);
    size_t n = (size_t)sqlite3_column_bytes(q, i);
    if (len)
        *len = n;
    return qr_arena_strndup(a, v, n);
}

static qr_status read_doc(store *s, const char *doc_id, bool with_chunks, store_doc_info *d, char *err)
{
    qr_arena *a = &d->arena_;
    sqlite3_stmt *dq = s->q[Q_DOC_READ], *q;
    bool row;
    qr_status st;
    if (store_bind_str(dq, 1, doc_id))
        return store_bind_fail(s, err);
    if ((st = store_step_row(s, dq, &row, err, "look up a document")))
        return st;
    if (!row)
        return store_not_found(doc_id, err);
    int64_t id = sqlite3_column_int64(dq, 0);
    id = sqlite3_column_int64(dq, 0);
    d->doc_id = arena_col(a, dq, 1, NULL);
    d->title = arena_col(a, dq, 2, NULL);
    d->uri = arena_col(a, dq, 3, NULL);
    d->content_type = arena_col(a, dq, 4, NULL);
    d->metadata_json = arena_col(a, dq, 5, NULL);
    d->content_hash = arena_col(a, dq, 6, NULL);
    d->version = sqlite3_column_int64(dq, 7);
    d->created_ms = sqlite3_column_int64(dq, 8);
    d->updated_ms = sqlite3_column_int64(dq, 9);
    d->text_len = (size_t)sqlite3_column_int64(dq, 10);
    d->chunk_count = (size_t)sqlite3_column_int64(dq, 11);
    if (!d->doc_id || !d->title || !d->uri || !d->content_type || !d->metadata_json || !d->content_hash)
        goto nomem;

    q = s->q[Q_ACL_LIST];
    size_t cap = 16;
    d->acl = qr_arena_alloc(a, cap * sizeof(*d->acl));
    if (!d->acl || sqlite3_bind_int64(q, 1, id))
        goto nomem;
    while (!(st = store_step_row(s, q, &row, err, "read an ACL")) && row) {
        if (d->nacl == cap) {
            const char **bigger = qr_arena_alloc(a, 2 * cap * sizeof(*bigger));
            if (!bigger)
                goto nomem;
            memcpy(bigger, d->acl, cap * sizeof(*bigger));
            d->acl = bigger;
            cap *= 2;
        }
        if (!(d->acl[d->nacl++] = arena_col(a, q, 0, NULL)))
            goto nomem;
    }
    sqlite3_reset(q);
    if (st || !with_chunks)
        return st;

    q = s->q[Q_CHUNKS_OF_DOC];
    d->chunks = qr_arena_calloc(a, d->chunk_count ? d->chunk_count : 1, sizeof(*d->chunks));
    if (!d->chunks || sqlite3_bind_int64(q, 1, id))
        goto nomem;
    while (!(st = store_step_row(s, q, &row, err, "read chunks")) && row) {
        if (d->nchunks == d->chunk_count) {
            st =
                qr_fail(err, QR_EIO, "store '%s' is inconsistent: document '%.200s' has more than %zu chunks",
                        s->path, doc_id, d->chunk_count);
            goto out;
        }
        store_chunk_row *c = &d->chunks[d->nchunks++];
        c->chunk_id = sqlite3_column_int64(q, 0);
        c->start = (size_t)sqlite3_column_int64(q, 1);
        c->end = (size_t)sqlite3_column_int64(q, 2);
        if (!(c->headings = arena_col(a, q, 3, NULL)) || !(c->text = arena_col(a, q, 4, &c->text_len)))
            goto nomem;
    }
    if (!st && d->nchunks != d->chunk_count)
        st = qr_fail(err, QR_EIO, "store '%s' is inconsistent: document '%.200s' has %zu of its %zu chunks",
                     s->path, doc_id, d->nchunks, d->chunk_count);
out:
    return st;
nomem:
    return qr_fail(err, QR_ENOMEM, "out of memory reading document '%.200s'", doc_id);
}

qr_status store_get_document(store *s, const char *doc_id, bool with_chunks, store_doc_info **out, char *err)
{
    if (!s || !out)
        return qr_fail(err, QR_EINVAL, "store_get_document: NULL argument");
    *out = NULL;
    qr_status st = store_check_doc_id(doc_id, err);
    if (st)
        return st;
    store_doc_info *d = calloc(1, sizeof(*d));
    if (!d)
        return qr_fail(err, QR_ENOMEM, "out of memory reading document '%.200s'", doc_id);
    qr_arena_init(&d->arena_, (size_t)1 << 40);
    if (!(st = store_begin_read(s, err)) && !(st = read_doc(s, doc_id, with_chunks, d, err)))
        st = store_commit(s, err);
    st = store_end_call(s, st, err);
    if (st) {
        store_doc_info_free(d);
        return st;
    }
    *out = d;
    return QR_OK;
}

qr_status store_list_documents(store *s, const char *after, size_t limit, store_doc_fn fn, void *ctx,
                               bool *more, char *err)
{
    if (!s || !fn || !more)
        return qr_fail(err, QR_EINVAL, "store_list_documents: NULL argument");
    *more = false;
    if (limit < 1 || limit > 10000)
        return qr_fail(err, QR_EINVAL, "store_list_documents: limit %zu outside 1..10000", limit);
    qr_status st = after && *after ? store_check_doc_id(after, err) : QR_OK;
    if (st)
        return st;
    /* not a cached statement: listings are rare, and the ACL subquery makes it a long one */
    static const char sql[] =
        "SELECT d.doc_id, d.title, d.uri, d.content_type, d.version, d.created_ms, d.updated_ms, d.text_len,"
        " d.chunk_count, (SELECT json_group_array(principal) FROM"
        " (SELECT principal FROM acl a WHERE a.doc = d.id ORDER BY principal))"
        " FROM documents d WHERE d.doc_id > ?1 ORDER BY d.doc_id LIMIT ?2";
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &q, NULL);
    if (rc != SQLITE_OK) {
        st = store_sql_fail(s, rc, err, "prepare the document listing");
        goto out;
    }
    if (store_bind_str(q, 1, after ? after : "") || sqlite3_bind_int64(q, 2, (sqlite3_int64)limit + 1)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = store_begin_read(s, err)))
        goto out;
    size_t seen = 0;
    bool row;
    while (!(st = store_step_row(s, q, &row, err, "list documents")) && row) {
        if (seen++ == limit) {
            *more = true;
            break;
        }
        store_doc_summary d = {
            .doc_id = store_col_str(q, 0),
            .title = store_col_str(q, 1),
            .uri = store_col_str(q, 2),
            .content_type = store_col_str(q, 3),
            .version = sqlite3_column_int64(q, 4),
            .created_ms = sqlite3_column_int64(q, 5),
            .updated_ms = sqlite3_column_int64(q, 6),
            .text_len = (size_t)sqlite3_column_int64(q, 7),
            .chunk_count = (size_t)sqlite3_column_int64(q, 8),
            .acl_json = store_col_str(q, 9),
        };
        if ((st = fn(ctx, &d, err)))
            break;
    }
    sqlite3_finalize(q);
    q = NULL;
    if (!st)
        st = store_commit(s, err);
out:
    sqlite3_finalize(q);
    return store_end_call(s, st, err);
}

qr_status store_read_heads(store *s, store_stats *out, char *err)
{
    int64_t dim = 0;
    qr_status st;
    if ((st = store_meta_get_str(s, "embedding_model", out->embedding_model, sizeof(out->embedding_model),
                                 err)) ||
        (st = store_meta_get_int(s, "embedding_dim", &dim, err)) ||
        (st = store_meta_get_int(s, "change_counter", &out->change_counter, err)) ||
        (st = store_meta_get_int(s, "index_generation", &out->index_generation, err)) ||
        (st = store_fts_applied(s, &out->fts_applied, err)))
        return st;
    out->embedding_dim = (int)dim;
    return QR_OK;
}

qr_status store_get_heads(store *s, store_stats *out, char *err)
{
    if (!s || !out)
        return qr_fail(err, QR_EINVAL, "store_get_heads: NULL argument");
    memset(out, 0, sizeof(*out));
    qr_status st = store_begin_read(s, err);
    if (!st && !(st = store_read_heads(s, out, err)))
        st = store_commit(s, err);
    return store_end_call(s, st, err);
}

qr_status store_get_vector(store *s, int64_t chunk_id, float *out, int dim, char *err)
{
    if (!s || !out)
        return qr_fail(err, QR_EINVAL, "store_get_vector: NULL argument");
    if (dim <= 0 || dim > STORE_DIM_MAX)
        return qr_fail(err, QR_EINVAL, "invalid vector dimension %d", dim);
    int64_t stored = 0;
    bool row;
    sqlite3_stmt *q = s->q[Q_CHUNK_EXISTS];
    qr_status st;
    if ((st = store_begin_read(s, err)) || (st = store_meta_get_int(s, "embedding_dim", &stored, err)))
        goto out;
    if (stored != dim) {
        st =
            qr_fail(err, QR_EINVAL, "vector dimension %d asked, the store's is %lld", dim, (long long)stored);
        goto out;
    }
    if (sqlite3_bind_int64(q, 1, chunk_id)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = store_step_row(s, q, &row, err, "find a chunk")))
        goto out;
    if (!row) {
        st = qr_fail(err, QR_ENOTFOUND, "no chunk %lld in the store", (long long)chunk_id);
        goto out;
    }
    if (!(st = store_vec_read(s, chunk_id, out, dim, err)))
        st = store_commit(s, err);
out:
    st = store_end_call(s, st, err);
    return st;
}
