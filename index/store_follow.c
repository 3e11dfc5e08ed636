/*
 * store_follow: a follower's store (issue #24, store.backend = postgres). The system of record is
 * elsewhere; this store is written only from a feed of document states (store_follow_doc,
 * index/feed.h), each applied under the document key and chunk ids the system of record gave and
 * stamped with its counter, so that what is derived from this store -- FTS5, the pruned BM25
 * index, the vector index and their generations -- means the same on every node. A batch is one
 * local write transaction (store_batch_begin's), whose commit moves the change counter to the
 * feed's `through`: a follower's counter jumps, it does not move by one per transaction.
 *
 * A record is checked whole with store_put's own checks before anything is written, then written
 * with store_put's helpers (store_write.c), so that the rows are those store_put writes for the
 * same change. What differs: keys and chunk ids are given, not drawn, and may have gaps; and a
 * chunk id may come below ids the store already holds (a document the follower learns of only
 * after others that changed later, when the feed sends each document's latest state), so the
 * rows of those ids are taken out of any hole a delete recorded (store_vec_unfree).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/feed.h"
#include "index/store.h"
#include "index/store_int.h"

#define FOLLOW_UID_KEY "follow_uid" /* meta: the system of record's uid; absent (0): not a follower */
/* meta: the last counter up to which every change is in the store (store_follow_exact), and the
 * furthest head a pull cut short has seen */
#define FOLLOW_EXACT_KEY "follow_exact"
#define FOLLOW_SEEN_KEY  "follow_seen"

qr_status store_follow_refuse(store *s, char *err)
{
    int64_t uid = 0;
    qr_status st = store_meta_get_int(s, FOLLOW_UID_KEY, &uid, err);
    if (!st && uid)
        st = qr_fail(err, QR_EINVAL,
                     "store '%s' follows a system of record (uid %lld): write to the system of record, "
                     "not to this store",
                     s->path, (long long)uid);
    return st;
}

qr_status store_follow_identity(store *s, int64_t uid, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_follow_identity: NULL store");
    if (uid <= 0)
        return qr_fail(err, QR_EINVAL, "invalid system of record uid %lld: expected a positive number",
                       (long long)uid);
    if (s->batch != BATCH_NONE)
        return qr_fail(err, QR_EINVAL,
                       "store '%s': the followed system of record cannot be set inside a batch", s->path);
    int64_t followed = 0, counter = 0, seq = 0;
    qr_status st;
    if ((st = store_begin_write(s, err)) || (st = store_meta_get_int(s, FOLLOW_UID_KEY, &followed, err)))
        goto out;
    if (followed == uid)
        goto out; /* nothing to write: store_end_call rolls back */
    if (followed) {
        st = qr_fail(err, QR_EINVAL, "store '%s' follows the system of record of uid %lld, not %lld", s->path,
                     (long long)followed, (long long)uid);
        goto out;
    }
    if ((st = store_meta_get_int(s, "change_counter", &counter, err)) || (st = store_chunk_seq(s, &seq, err)))
        goto out;
    if (counter || seq) {
        st = qr_fail(err, QR_EINVAL,
                     "store '%s' holds writes of its own (change counter %lld): a follower starts from an "
                     "empty store",
                     s->path, (long long)counter);
        goto out;
    }
    if ((st = store_meta_set_int(s, FOLLOW_UID_KEY, uid, err)) ||
        (st = store_meta_set_int(s, "store_uid", uid, err)) || (st = store_commit(s, err)))
        goto out;
    /* a vectors file this handle opened before (a write that was rolled back) bears the old uid;
     * no row of it counts, since no chunk id was ever handed out: the next chunk makes it anew */
    if (s->vec_fd >= 0) {
        close(s->vec_fd);
        s->vec_fd = -1;
        s->vec_dirty = false;
    }
    store_vectors_close(s->vec_read);
    s->vec_read = NULL;
out:
    return store_end_call(s, st, err);
}

qr_status store_follow_begin(store *s, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_follow_begin: NULL store");
    int64_t uid = 0, counter = 0;
    qr_status st = store_batch_begin_local(s, err);
    if (st)
        return st;
    if (!(st = store_meta_get_int(s, FOLLOW_UID_KEY, &uid, err)) && !uid)
        st = qr_fail(err, QR_EINVAL,
                     "store '%s' does not follow a system of record (store_follow_identity marks it)",
                     s->path);
    if (!st)
        st = store_meta_get_int(s, "change_counter", &counter, err);
    if (st) {
        store_batch_rollback_local(s);
        return st;
    }
    s->follow_open = true;
    s->follow_since = s->follow_last = counter;
    return QR_OK;
}

/* ---- checking a record ------------------------------------------------------------------- */

/* The checks that need no table: counters, key, text and chunk ids. */
static qr_status check_record(const store *s, const store_follow_doc *d, char *err)
{
    const char *id = d->doc.doc_id;
    if (d->counter <= s->follow_since)
        return qr_fail(err, QR_EINVAL,
                       "record of document '%.200s' at counter %lld: the store is already at %lld", id,
                       (long long)d->counter, (long long)s->follow_since);
    if (d->counter < s->follow_last)
        return qr_fail(err, QR_EINVAL,
                       "record of document '%.200s' at counter %lld comes after one at %lld: records must be "
                       "in counter order",
                       id, (long long)d->counter, (long long)s->follow_last);
    if (d->doc_key <= 0)
        return qr_fail(err, QR_EINVAL, "record of document '%.200s': invalid document key %lld", id,
                       (long long)d->doc_key);
    if (d->deleted)
        return QR_OK;
    if (!d->doc.text)
        return qr_fail(err, QR_EINVAL,
                       "record of document '%.200s' has no text: a record carries the whole state", id);
    if (d->nchunks && !d->chunk_ids)
        return qr_fail(err, QR_EINVAL, "record of document '%.200s': %zu chunks without their ids", id,
                       d->nchunks);
    for (size_t i = 0; i < d->nchunks; i++) {
        if (d->chunk_ids[i] <= (i ? d->chunk_ids[i - 1] : 0))
            return qr_fail(
                err, QR_EINVAL,
                "record of document '%.200s': chunk ids must be positive and increasing (chunk %zu "
                "has id %lld)",
                id, i, (long long)d->chunk_ids[i]);
    }
    return QR_OK;
}

/* What the store holds for a record: the document under its doc_id, and what holds its key. */
typedef struct {
    bool found;     /* doc_id is stored ... */
    int64_t id;     /* ... under this key */
    bool at_key;    /* ... and that key is the record's */
    bool key_other; /* another doc_id is stored under the record's key */
    bool same_hash, same_title, same_fields, same_acl, same_ids;
} follow_row;

static qr_status find_rows(store *s, const store_follow_doc *d, const store_put_input *in, follow_row *r,
                           char *err)
{
    sqlite3_stmt *q = s->q[Q_DOC_FIND];
    bool row;
    memset(r, 0, sizeof(*r));
    if (store_bind_str(q, 1, d->doc.doc_id))
        return store_bind_fail(s, err);
    qr_status st = store_step_row(s, q, &row, err, "look up a document");
    if (st)
        return st;
    if (row) {
        r->found = true;
        r->id = sqlite3_column_int64(q, 0);
        r->at_key = r->id == d->doc_key;
        if (in) {
            r->same_hash = strcmp(store_col_str(q, 1), in->hash) == 0;
            r->same_title = strcmp(store_col_str(q, 2), in->title) == 0;
            r->same_fields = strcmp(store_col_str(q, 3), in->uri) == 0 &&
                             strcmp(store_col_str(q, 4), in->content_type) == 0 &&
                             strcmp(store_col_str(q, 5), in->metadata) == 0;
        }
    }
    sqlite3_reset(q);
    if (!r->at_key) {
        q = s->q[Q_FOLLOW_DOC_BY_KEY];
        if (sqlite3_bind_int64(q, 1, d->doc_key))
            return store_bind_fail(s, err);
        if ((st = store_step_row(s, q, &row, err, "look up a document key")))
            return st;
        r->key_other = row;
        sqlite3_reset(q);
    }
    if (!r->at_key || !in)
        return QR_OK;
    if ((st = store_acl_equal(s, r->id, in->acl, in->nacl, &r->same_acl, err)))
        return st;
    /* the chunk ids it holds, in order, against the record's */
    q = s->q[Q_FOLLOW_CHUNK_IDS];
    size_t i = 0;
    r->same_ids = true;
    if (sqlite3_bind_int64(q, 1, r->id))
        return store_bind_fail(s, err);
    while (!(st = store_step_row(s, q, &row, err, "read chunk ids")) && row) {
        if (i >= d->nchunks || sqlite3_column_int64(q, 0) != d->chunk_ids[i]) {
            r->same_ids = false;
            break;
        }
        i++;
    }
    r->same_ids = r->same_ids && i == d->nchunks;
    sqlite3_reset(q);
    return st;
}

/* A chunk id the record brings anew must be unknown to the store: chunk ids are never reused, so
 * one held by a document, or deleted before, means the feed is not this store's. */
static qr_status check_new_ids(store *s, const store_follow_doc *d, char *err)
{
    qr_status st = QR_OK;
    for (size_t i = 0; i < d->nchunks && !st; i++) {
        bool held, deleted;
        sqlite3_stmt *a = s->q[Q_FOLLOW_CHUNK_DOC], *b = s->q[Q_FOLLOW_TOMBSTONED];
        if (sqlite3_bind_int64(a, 1, d->chunk_ids[i]) || sqlite3_bind_int64(b, 1, d->chunk_ids[i]))
            return store_bind_fail(s, err);
        if ((st = store_step_row(s, a, &held, err, "look up a chunk id")))
            break;
        int64_t doc = held ? sqlite3_column_int64(a, 0) : 0;
        sqlite3_reset(a);
        if ((st = store_step_row(s, b, &deleted, err, "look up a deleted chunk id")))
            break;
        sqlite3_reset(b);
        if (held)
            st = qr_fail(err, QR_EINVAL,
                         "record of document '%.200s': chunk id %lld is already stored (document key %lld): "
                         "the feed does not match this store",
                         d->doc.doc_id, (long long)d->chunk_ids[i], (long long)doc);
        else if (deleted)
            st = qr_fail(err, QR_EINVAL,
                         "record of document '%.200s': chunk id %lld was deleted before, and chunk ids are "
                         "never reused: the feed does not match this store",
                         d->doc.doc_id, (long long)d->chunk_ids[i]);
    }
    return st;
}

/* ---- writing a record -------------------------------------------------------------------- */

/* Removes the document under key `id` with its chunks (tombstoned at counter), FTS, ACL and
 * vector rows, as store_delete does. */
static qr_status remove_doc(store *s, int64_t id, int64_t counter, char *err)
{
    qr_status st;
    if ((st = store_remove_chunks(s, id, counter, err)) ||
        (st = store_doc_stmt(s, Q_ACL_DELETE_DOC, id, counter, err, "delete ACL rows")))
        return st;
    return store_doc_stmt(s, Q_DOC_DELETE, id, counter, err, "delete a document");
}

/* Inserts the record's chunks under their ids with their vector rows (the full-text follower
 * indexes them after the commit). */
static qr_status insert_chunks(store *s, const store_follow_doc *d, char *err)
{
    qr_status st = d->nchunks ? store_vec_open_write(s, d->dim, err) : QR_OK;
    for (size_t i = 0; i < d->nchunks && !st; i++) {
        const store_chunk *c = &d->chunks[i];
        const char *headings = c->headings ? c->headings : "", *body = d->doc.text + c->start;
        int64_t id = d->chunk_ids[i];
        sqlite3_stmt *q = s->q[Q_FOLLOW_CHUNK_INSERT];
        if (sqlite3_bind_int64(q, 1, id) || sqlite3_bind_int64(q, 2, d->doc_key) ||
            sqlite3_bind_int64(q, 3, (int64_t)i) || sqlite3_bind_int64(q, 4, (int64_t)c->start) ||
            sqlite3_bind_int64(q, 5, (int64_t)c->end) || store_bind_str(q, 6, headings) ||
            store_bind_text(q, 7, body, c->end - c->start) || sqlite3_bind_int64(q, 8, d->counter))
            return store_bind_fail(s, err);
        if ((st = store_run(s, q, err, "insert a chunk")) || (st = store_vec_unfree(s, id, id + 1, err)) ||
            (st = store_vec_write(s, id, d->vectors + i * (size_t)d->dim, 1, d->dim, err)))
            break;
    }
    s->fts_changed |= d->nchunks > 0;
    store_fts_uncaptured(s); /* a follower's counters jump: its changes are read back */
    return st;
}

/* Rewrites the row of the document under the record's key (store_put's Q_DOC_UPDATE). */
static qr_status update_doc_row(store *s, const store_follow_doc *d, const store_put_input *in,
                                bool fts_rewritten, char *err)
{
    sqlite3_stmt *q = s->q[Q_DOC_UPDATE];
    if (sqlite3_bind_int64(q, 1, d->doc_key) || store_bind_str(q, 2, in->title) ||
        store_bind_str(q, 3, in->uri) || store_bind_str(q, 4, in->content_type) ||
        store_bind_str(q, 5, in->metadata) || store_bind_str(q, 6, in->hash) ||
        sqlite3_bind_int64(q, 7, (int64_t)d->doc.text_len) || sqlite3_bind_int64(q, 8, (int64_t)d->nchunks) ||
        sqlite3_bind_int64(q, 9, qr_wall_ms()) || sqlite3_bind_int64(q, 10, d->counter) ||
        sqlite3_bind_int(q, 11, fts_rewritten))
        return store_bind_fail(s, err);
    return store_run(s, q, err, "update a document");
}

static qr_status insert_doc_row(store *s, const store_follow_doc *d, const store_put_input *in, char *err)
{
    sqlite3_stmt *q = s->q[Q_FOLLOW_DOC_INSERT];
    if (sqlite3_bind_int64(q, 1, d->doc_key) || store_bind_str(q, 2, d->doc.doc_id) ||
        store_bind_str(q, 3, in->title) || store_bind_str(q, 4, in->uri) ||
        store_bind_str(q, 5, in->content_type) || store_bind_str(q, 6, in->metadata) ||
        store_bind_str(q, 7, in->hash) || sqlite3_bind_int64(q, 8, (int64_t)d->doc.text_len) ||
        sqlite3_bind_int64(q, 9, (int64_t)d->nchunks) || sqlite3_bind_int64(q, 10, qr_wall_ms()) ||
        sqlite3_bind_int64(q, 11, d->counter))
        return store_bind_fail(s, err);
    return store_run(s, q, err, "insert a document");
}

/* Writes a checked record of a live document (store_put's order: the FTS rows to remove recorded
 * before the title or chunks they came from change). */
static qr_status write_doc(store *s, const store_follow_doc *d, const store_put_input *in,
                           const follow_row *r, char *err)
{
    qr_status st = QR_OK;
    if (r->at_key && r->same_ids && r->same_hash) {
        /* the content is what the store has: chunks, vectors and their ids stay */
        if (!r->same_title && (st = store_fts_gone(s, d->doc_key, d->counter, err)))
            return st;
        if ((st = update_doc_row(s, d, in, !r->same_title, err)))
            return st;
        return r->same_acl ? QR_OK : store_write_acl(s, d->doc_key, false, in->acl, in->nacl, err);
    }
    if (r->at_key) {
        if ((st = store_remove_chunks(s, d->doc_key, d->counter, err)) ||
            (st = update_doc_row(s, d, in, false, err)) ||
            (!r->same_acl && (st = store_write_acl(s, d->doc_key, false, in->acl, in->nacl, err))))
            return st;
    } else if ((st = insert_doc_row(s, d, in, err)) ||
               (st = store_write_acl(s, d->doc_key, true, in->acl, in->nacl, err))) {
        return st;
    }
    return insert_chunks(s, d, err);
}

qr_status store_follow_apply(store *s, const store_follow_doc *d, char *err)
{
    if (!s || !d)
        return qr_fail(err, QR_EINVAL, "store_follow_apply: NULL argument");
    if (!s->follow_open || s->batch == BATCH_NONE)
        return qr_fail(err, QR_EINVAL, "no follow batch is open on store '%s' (store_follow_begin)", s->path);
    store_put_input in = {0};
    follow_row r;
    s->wrote = false; /* nothing yet: a refused record leaves the batch open */
    qr_status st = store_check_doc_id(d->doc.doc_id, err);
    if (st || (st = check_record(s, d, err)))
        return st;
    if (!d->deleted && (st = store_check_document(s->q[Q_JSON_CHECK], &d->doc, d->chunks, d->nchunks,
                                                  d->vectors, d->dim, &in, err)))
        goto out;
    if ((st = store_begin_write(s, err)) || (st = find_rows(s, d, d->deleted ? NULL : &in, &r, err)))
        goto out;
    if (!d->deleted) {
        if ((st = store_check_dim(s, d->doc.doc_id, d->nchunks, d->dim, err)))
            goto out;
        if (r.at_key && r.same_ids && !r.same_hash && d->nchunks) {
            st =
                qr_fail(err, QR_EINVAL,
                        "record of document '%.200s' keeps its chunk ids with another content hash: the feed "
                        "does not match this store",
                        d->doc.doc_id);
            goto out;
        }
        if (!(r.at_key && r.same_ids) && (st = check_new_ids(s, d, err)))
            goto out;
        if (r.at_key && r.same_ids && r.same_hash && r.same_title && r.same_fields && r.same_acl)
            goto applied; /* the store has this state already */
    }
    /* checked: from here on a failure rolls the batch back */
    s->wrote = true;
    /* what the record's doc_id or key held before is gone at its counter: deleted and re-added */
    if (r.found && (d->deleted || !r.at_key) && (st = remove_doc(s, r.id, d->counter, err)))
        goto out;
    if (r.key_other && (st = remove_doc(s, d->doc_key, d->counter, err)))
        goto out;
    if (!d->deleted && (st = write_doc(s, d, &in, &r, err)))
        goto out;
applied:
    s->follow_last = d->counter;
out:
    st = store_end_call(s, st, err);
    store_put_input_release(&in);
    return st;
}

qr_status store_follow_commit(store *s, int64_t through, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_follow_commit: NULL store");
    if (!s->follow_open)
        return qr_fail(err, QR_EINVAL, "no follow batch is open on store '%s'", s->path);
    s->follow_open = false;
    qr_status st = QR_OK;
    if (s->batch == BATCH_OPEN && through < s->follow_last) {
        store_batch_rollback_local(s);
        return qr_fail(
            err, QR_EINVAL,
            "cannot commit a follow batch through counter %lld: it applied changes up to %lld; the "
            "batch was rolled back",
            (long long)through, (long long)s->follow_last);
    }
    if (s->batch == BATCH_OPEN && through > s->follow_since &&
        (st = store_meta_set_int(s, "change_counter", through, err))) {
        store_batch_rollback_local(s);
        return st;
    }
    return store_batch_commit_local(s, err);
}

void store_follow_rollback(store *s)
{
    if (s && s->follow_open) {
        s->follow_open = false;
        store_batch_rollback_local(s);
    }
}

/* ---- exactness ----------------------------------------------------------------------------- */

qr_status store_follow_mark(store *s, int64_t through, int64_t head, char *err)
{
    if (!s || !s->follow_open)
        return qr_fail(err, QR_EINVAL, "store_follow_mark: no follow batch is open");
    int64_t seen = 0;
    qr_status st = store_meta_get_int(s, FOLLOW_SEEN_KEY, &seen, err);
    if (st)
        return st;
    if (through < head) /* cut short: what it left out lies at or below head */
        return head > seen ? store_meta_set_int(s, FOLLOW_SEEN_KEY, head, err) : QR_OK;
    /* whole, and no earlier cut pull saw further than this one's snapshot: every document it left
     * out has come since, in this pull or before */
    return head >= seen ? store_meta_set_int(s, FOLLOW_EXACT_KEY, through, err) : QR_OK;
}

qr_status store_follow_exact(store *s, int64_t *counter, char *err)
{
    if (!s || !counter)
        return qr_fail(err, QR_EINVAL, "store_follow_exact: NULL argument");
    *counter = 0;
    qr_status st = store_begin_read(s, err);
    if (!st)
        st = store_meta_get_int(s, FOLLOW_EXACT_KEY, counter, err);
    return store_end_call(s, st, err);
}

/* ---- the last change, for a failover's check (store_route.c) ------------------------------- */

qr_status store_follow_last_doc(store *s, char **doc_id, int64_t *counter, char **digest, char *err)
{
    if (!s || !doc_id || !counter || !digest)
        return qr_fail(err, QR_EINVAL, "store_follow_last_doc: NULL argument");
    *doc_id = *digest = NULL;
    *counter = 0;
    sqlite3_stmt *d = NULL, *a = NULL;
    qr_buf b;
    qr_buf_init(&b, (size_t)1 << 26);
    bool row = false;
    qr_status st = store_begin_read(s, err);
    int rc = SQLITE_OK;
    if (!st && (rc = sqlite3_prepare_v2(
                    s->db,
                    "SELECT id, doc_id, changed, content_hash, title, uri, content_type, metadata "
                    "FROM documents ORDER BY changed DESC LIMIT 1",
                    -1, &d, NULL)) != SQLITE_OK)
        st = store_sql_fail(s, rc, err, "find the last changed document");
    if (!st)
        st = store_step_row(s, d, &row, err, "find the last changed document");
    if (!st && row) {
        for (int col = 3; col <= 7; col++)
            qr_buf_printf(&b, "%s\n", store_col_str(d, col));
        if ((rc = sqlite3_prepare_v2(s->db, "SELECT principal FROM acl WHERE doc = ? ORDER BY principal", -1,
                                     &a, NULL)) != SQLITE_OK)
            st = store_sql_fail(s, rc, err, "read the last changed document's ACL");
        if (!st && sqlite3_bind_int64(a, 1, sqlite3_column_int64(d, 0)) != SQLITE_OK)
            st = store_bind_fail(s, err);
        for (bool more = true, first = true; !st && more; first = false) {
            if (!(st = store_step_row(s, a, &more, err, "read the last changed document's ACL")) && more)
                qr_buf_printf(&b, "%s%s", first ? "" : "\n", store_col_str(a, 0));
        }
        if (!st && (st = qr_buf_failed(&b)))
            st = qr_fail(err, st, "the last changed document's digest is too large");
        if (!st) {
            *counter = sqlite3_column_int64(d, 2);
            if (!(*doc_id = strdup(store_col_str(d, 1))) || !(*digest = qr_buf_detach(&b))) {
                free(*doc_id);
                *doc_id = NULL;
                st = qr_fail(err, QR_ENOMEM, "out of memory");
            }
        }
    }
    sqlite3_finalize(a);
    sqlite3_finalize(d);
    qr_buf_release(&b);
    return store_end_call(s, st, err);
}
