/*
 * store_write: the store's writes. store_put checks a document whole before it writes anything
 * (fields, ACL, UTF-8 chunk boundaries, vectors, canonical metadata), then replaces the
 * document's rows -- documents row, chunks, vectors, ACL rows, and the values the full-text
 * index holds for what goes (fts_gone, recorded before the rows they came from change; the index
 * itself follows after the commit, see store_fts.c) -- in one transaction that bumps the change
 * counter and tombstones the chunk ids it drops. Also here: store_delete, store_set_acl, and the
 * embedding model, statistics and vector index generation kept in the meta table.
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

/* ---- input checks ------------------------------------------------------------------------ */

/* Index of the first control character (C0, DEL, C1) in valid UTF-8 s[0..n), or -1. */
static long find_control(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f)
            return (long)i;
        /* C1 controls U+0080..U+009F are encoded C2 80..C2 9F */
        if (p[i] == 0xc2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f)
            return (long)i;
    }
    return -1;
}

/* Checks a short text field: valid UTF-8, no control characters, at most max bytes. The value
 * is not echoed: it may be the very bytes that make it invalid. */
qr_status store_check_field(const char *what, const char *v, size_t max, bool allow_empty, char *err)
{
    size_t n = strlen(v);
    if (!n && !allow_empty)
        return qr_fail(err, QR_EINVAL, "invalid %s: empty", what);
    if (n > max)
        return qr_fail(err, QR_ELIMIT, "invalid %s: %zu bytes, more than %zu", what, n, max);
    if (!qr_utf8_valid(v, n))
        return qr_fail(err, QR_EINVAL, "invalid %s: not valid UTF-8", what);
    long c = find_control(v, n);
    if (c >= 0)
        return qr_fail(err, QR_EINVAL, "invalid %s: control character at byte %ld", what, c);
    return QR_OK;
}

qr_status store_check_doc_id(const char *doc_id, char *err)
{
    if (!doc_id)
        return qr_fail(err, QR_EINVAL, "invalid doc_id: NULL");
    return store_check_field("doc_id", doc_id, STORE_DOC_ID_MAX, false, err);
}

static bool is_space(unsigned char c)
{
    return c == ' ';
}

/* What is wrong with a principal; NULL when nothing is. */
static const char *principal_problem(const char *principal)
{
    if (!principal)
        return "no principal";
    if (strcmp(principal, "public") == 0)
        return NULL;
    size_t at;
    if (strncmp(principal, "user:", 5) == 0)
        at = 5;
    else if (strncmp(principal, "group:", 6) == 0)
        at = 6;
    else
        return "expected \"public\", \"user:<uid>\" or \"group:<name>\" (in lower case)";
    const char *name = principal + at;
    size_t n = strlen(name);
    if (n == 0)
        return "the name is empty";
    if (n > STORE_PRINCIPAL_MAX)
        return "the name is longer than " STRINGIFY(STORE_PRINCIPAL_MAX) " bytes";
    if (!qr_utf8_valid(name, n))
        return "the name is not valid UTF-8";
    if (find_control(name, n) >= 0)
        return "the name holds a control character";
    /* " alice" and "alice" would be different principals that print alike */
    if (is_space((unsigned char)name[0]) || is_space((unsigned char)name[n - 1]))
        return "the name starts or ends with a space";
    return NULL;
}

bool store_principal_valid(const char *principal)
{
    return principal_problem(principal) == NULL;
}

qr_status store_principal_canonical(const char *principal, char *out, size_t cap, char *err)
{
    const char *why = principal_problem(principal);
    if (why) {
        /* echo it only when printing it cannot forge or garble a log line */
        size_t n = principal ? strlen(principal) : 0;
        bool printable =
            principal && n <= 100 && qr_utf8_valid(principal, n) && find_control(principal, n) < 0;
        return qr_fail(err, QR_EINVAL, "invalid principal%s%s%s: %s", printable ? " '" : "",
                       printable ? principal : "", printable ? "'" : "", why);
    }
    size_t n = strlen(principal);
    if (!out || cap <= n)
        return qr_fail(err, QR_EINVAL, "store_principal_canonical: no room for %zu bytes", n + 1);
    /* the name's ASCII letters in lower case (the kind is already): auth's spelling of uids and
     * groups */
    for (size_t i = 0; i <= n; i++) {
        char c = principal[i];
        out[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    return QR_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Validates an ACL and returns it canonical (store_principal_canonical), sorted and without
 * duplicates in *out: one allocation holding the array and the strings, so free() the array. */
qr_status store_normalise_acl(const char *const *acl, size_t nacl, const char ***out, size_t *nout, char *err)
{
    *out = NULL;
    *nout = 0;
    if (nacl && !acl)
        return qr_fail(err, QR_EINVAL, "invalid ACL: NULL list of %zu principals", nacl);
    if (nacl > STORE_ACL_MAX)
        return qr_fail(err, QR_ELIMIT, "invalid ACL: %zu principals, more than %d", nacl, STORE_ACL_MAX);
    size_t bytes = (nacl ? nacl : 1) * sizeof(char *);
    for (size_t i = 0; i < nacl; i++) {
        char why[QR_ERR_LEN];
        if (!store_principal_valid(acl[i])) {
            store_principal_canonical(acl[i], NULL, 0, why);
            return qr_fail(err, QR_EINVAL, "ACL principal #%zu: %s", i, why);
        }
        bytes += strlen(acl[i]) + 1;
    }
    const char **v = malloc(bytes);
    if (!v)
        return qr_fail(err, QR_ENOMEM, "out of memory for an ACL of %zu principals", nacl);
    char *text = (char *)(v + (nacl ? nacl : 1));
    for (size_t i = 0; i < nacl; i++) {
        size_t n = strlen(acl[i]) + 1;
        store_principal_canonical(acl[i], text, n, NULL); /* checked above: cannot fail */
        v[i] = text;
        text += n;
    }
    if (nacl) /* qsort must not see NULL */
        qsort(v, nacl, sizeof(*v), cmp_str);
    size_t n = 0;
    for (size_t i = 0; i < nacl; i++) {
        if (n == 0 || strcmp(v[n - 1], v[i]) != 0)
            v[n++] = v[i];
    }
    *out = v;
    *nout = n;
    return QR_OK;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

qr_status store_check_hash(const char *hash, char out[65], char *err)
{
    if (!hash || strlen(hash) != 64)
        return qr_fail(err, QR_EINVAL, "invalid content_hash: expected 64 hex digits (SHA-256)");
    for (int i = 0; i < 64; i++) {
        if (!is_hex(hash[i]))
            return qr_fail(err, QR_EINVAL, "invalid content_hash: expected 64 hex digits (SHA-256)");
        out[i] = (char)(hash[i] >= 'A' && hash[i] <= 'F' ? hash[i] - 'A' + 'a' : hash[i]);
    }
    out[64] = '\0';
    return QR_OK;
}

static bool is_continuation(unsigned char c)
{
    return (c & 0xc0) == 0x80;
}

qr_status store_check_text_and_chunks(const char *doc_id, const store_document *doc,
                                      const store_chunk *chunks, size_t nchunks, char *err)
{
    if (nchunks && !chunks)
        return qr_fail(err, QR_EINVAL, "document '%.200s': NULL chunk list of %zu chunks", doc_id, nchunks);
    if (nchunks > STORE_CHUNKS_MAX)
        return qr_fail(err, QR_ELIMIT, "document '%.200s': %zu chunks, more than %d", doc_id, nchunks,
                       STORE_CHUNKS_MAX);
    if (!doc->text) {
        if (nchunks || doc->text_len)
            return qr_fail(err, QR_EINVAL, "document '%.200s': chunks or text_len given without text",
                           doc_id);
        return QR_OK;
    }
    if (!qr_utf8_valid(doc->text, doc->text_len))
        return qr_fail(err, QR_EINVAL, "document '%.200s': text is not valid UTF-8", doc_id);
    if (memchr(doc->text, '\0', doc->text_len))
        return qr_fail(err, QR_EINVAL, "document '%.200s': text contains a NUL byte", doc_id);
    const unsigned char *t = (const unsigned char *)doc->text;
    for (size_t i = 0; i < nchunks; i++) {
        const store_chunk *c = &chunks[i];
        if (c->start >= c->end || c->end > doc->text_len)
            return qr_fail(
                err, QR_EINVAL,
                "document '%.200s': chunk %zu has offsets [%zu, %zu) outside the text of %zu bytes "
                "or empty",
                doc_id, i, c->start, c->end, doc->text_len);
        if (c->end - c->start > STORE_CHUNK_TEXT_MAX)
            return qr_fail(err, QR_ELIMIT, "document '%.200s': chunk %zu has %zu bytes, more than %d", doc_id,
                           i, c->end - c->start, STORE_CHUNK_TEXT_MAX);
        if (is_continuation(t[c->start]) || (c->end < doc->text_len && is_continuation(t[c->end])))
            return qr_fail(err, QR_EINVAL, "document '%.200s': chunk %zu [%zu, %zu) splits a UTF-8 character",
                           doc_id, i, c->start, c->end);
        char what[64];
        snprintf(what, sizeof(what), "headings of chunk %zu", i);
        qr_status st = store_check_field(what, c->headings ? c->headings : "", STORE_FIELD_MAX, true, err);
        if (st)
            return st;
    }
    return QR_OK;
}

qr_status store_check_vectors(const char *doc_id, size_t nchunks, const float *vectors, int dim, char *err)
{
    if (!nchunks)
        return QR_OK;
    if (!vectors)
        return qr_fail(err, QR_EINVAL, "document '%.200s': %zu chunks but no vectors", doc_id, nchunks);
    if (dim <= 0 || dim > STORE_DIM_MAX)
        return qr_fail(err, QR_EINVAL, "document '%.200s': vector dimension %d outside 1..%d", doc_id, dim,
                       STORE_DIM_MAX);
    for (size_t i = 0; i < nchunks * (size_t)dim; i++) {
        if (!isfinite(vectors[i]))
            return qr_fail(err, QR_EINVAL, "document '%.200s': vector of chunk %zu has a non-finite value",
                           doc_id, i / (size_t)dim);
    }
    return QR_OK;
}

void store_put_input_release(store_put_input *in)
{
    free(in->metadata);
    free(in->acl);
}

/* Checks that metadata is a JSON object and stores SQLite's canonical text of it, so that the
 * same object sent twice with other spacing compares equal. */
static qr_status canonical_metadata(sqlite3_stmt *q, const char *doc_id, const char *json, char **out,
                                    char *err)
{
    *out = NULL;
    if (!json) /* what SQLite's json() makes of "{}": no statement needed */
        return (*out = strdup("{}")) ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory for metadata");
    size_t n = strlen(json);
    if (n > STORE_METADATA_MAX)
        return qr_fail(err, QR_ELIMIT, "document '%.200s': metadata of %zu bytes, more than %d", doc_id, n,
                       STORE_METADATA_MAX);
    if (!qr_utf8_valid(json, n))
        return qr_fail(err, QR_EINVAL, "document '%.200s': metadata is not valid UTF-8", doc_id);
    qr_status st = QR_OK;
    int rc = store_bind_text(q, 1, json, n);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        st = qr_fail(err, store_sql_status(rc), "cannot check metadata: %s",
                     sqlite3_errmsg(sqlite3_db_handle(q)));
    } else if (sqlite3_column_type(q, 0) == SQLITE_NULL) {
        st = qr_fail(err, QR_EINVAL, "document '%.200s': metadata is not valid JSON", doc_id);
    } else if (strcmp(store_col_str(q, 0), "object") != 0) {
        st = qr_fail(err, QR_EINVAL, "document '%.200s': metadata must be a JSON object, not %s", doc_id,
                     store_col_str(q, 0));
    } else if (!(*out = strdup(store_col_str(q, 1)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for metadata");
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return st;
}

qr_status store_check_document(sqlite3_stmt *json_check, const store_document *doc, const store_chunk *chunks,
                               size_t nchunks, const float *vectors, int dim, store_put_input *in, char *err)
{
    qr_status st = store_check_doc_id(doc->doc_id, err);
    if (st)
        return st;
    const char *id = doc->doc_id;
    in->title = doc->title ? doc->title : "";
    in->uri = doc->uri ? doc->uri : "";
    in->content_type = doc->content_type ? doc->content_type : "";
    char what[256];
    const char *names[] = {"title", "uri", "content_type"};
    const char *values[] = {in->title, in->uri, in->content_type};
    for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof(what), "%s of document '%.200s'", names[i], id);
        if ((st = store_check_field(what, values[i], STORE_FIELD_MAX, true, err)))
            return st;
    }
    if ((st = store_check_hash(doc->content_hash, in->hash, err)))
        return st;
    if ((st = store_check_text_and_chunks(id, doc, chunks, nchunks, err)))
        return st;
    if ((st = store_check_vectors(id, nchunks, vectors, dim, err)))
        return st;
    if ((st = store_normalise_acl(doc->acl, doc->nacl, &in->acl, &in->nacl, err)))
        return st;
    return canonical_metadata(json_check, id, doc->metadata_json, &in->metadata, err);
}

/* ---- writing documents ------------------------------------------------------------------- */

/* What the store holds for a doc_id, compared with a put's input. */
typedef struct {
    bool found;
    int64_t id;
    bool same_hash, same_title, same_fields; /* fields: uri, content type, metadata */
    int64_t text_len, chunk_count;
    char hash[65];
} doc_row;

static qr_status find_doc(store *s, const char *doc_id, const store_put_input *in, doc_row *r, char *err)
{
    sqlite3_stmt *q = s->q[Q_DOC_FIND];
    bool row;
    memset(r, 0, sizeof(*r));
    if (store_bind_str(q, 1, doc_id))
        return store_bind_fail(s, err);
    qr_status st = store_step_row(s, q, &row, err, "look up a document");
    if (st || !row)
        goto out;
    r->found = true;
    r->id = sqlite3_column_int64(q, 0);
    snprintf(r->hash, sizeof(r->hash), "%s", store_col_str(q, 1));
    r->text_len = sqlite3_column_int64(q, 6);
    r->chunk_count = sqlite3_column_int64(q, 7);
    if (in) {
        r->same_hash = strcmp(r->hash, in->hash) == 0;
        r->same_title = strcmp(store_col_str(q, 2), in->title) == 0;
        r->same_fields = strcmp(store_col_str(q, 3), in->uri) == 0 &&
                         strcmp(store_col_str(q, 4), in->content_type) == 0 &&
                         strcmp(store_col_str(q, 5), in->metadata) == 0;
    }
out:
    sqlite3_reset(q);
    return st;
}

/* Compares the stored ACL of document `id` with a sorted, deduplicated list. */
qr_status store_acl_equal(store *s, int64_t id, const char **acl, size_t nacl, bool *equal, char *err)
{
    sqlite3_stmt *q = s->q[Q_ACL_LIST];
    size_t i = 0;
    bool row;
    qr_status st;
    *equal = true;
    if (sqlite3_bind_int64(q, 1, id))
        return store_bind_fail(s, err);
    while (!(st = store_step_row(s, q, &row, err, "read an ACL")) && row) {
        if (i >= nacl || strcmp(store_col_str(q, 0), acl[i]) != 0) {
            *equal = false;
            break;
        }
        i++;
    }
    if (!st && *equal && i != nacl)
        *equal = false;
    sqlite3_reset(q);
    return st;
}

/* Replaces the ACL rows of document `id` (a new document has none to delete). */
qr_status store_write_acl(store *s, int64_t id, bool is_new, const char **acl, size_t nacl, char *err)
{
    sqlite3_stmt *q = s->q[Q_ACL_DELETE_DOC];
    qr_status st = QR_OK;
    if (!is_new) {
        if (sqlite3_bind_int64(q, 1, id))
            return store_bind_fail(s, err);
        st = store_run(s, q, err, "delete ACL rows");
    }
    q = s->q[Q_ACL_INSERT];
    for (size_t i = 0; !st && i < nacl; i++) {
        if (sqlite3_bind_int64(q, 1, id) || store_bind_str(q, 2, acl[i]))
            return store_bind_fail(s, err);
        st = store_run(s, q, err, "insert an ACL row");
    }
    return st;
}

/* Runs one of the per-document statements (?1 = internal document id, ?2 = counter). */
qr_status store_doc_stmt(store *s, int which, int64_t id, int64_t counter, char *err, const char *what)
{
    sqlite3_stmt *q = s->q[which];
    if (sqlite3_bind_int64(q, 1, id) ||
        (sqlite3_bind_parameter_count(q) >= 2 && sqlite3_bind_int64(q, 2, counter)))
        return store_bind_fail(s, err);
    return store_run(s, q, err, what);
}

/* Records the FTS rows of document `id` as they were indexed, for the full-text follower to
 * remove at `counter` (store_fts.c): before its chunks are deleted or its title changes. */
qr_status store_fts_gone(store *s, int64_t id, int64_t counter, char *err)
{
    s->fts_changed = true;
    store_fts_uncaptured(s);
    return store_doc_stmt(s, Q_FTS_GONE_DOC, id, counter, err, "record full-text rows to remove");
}

/* One integer (or *null) from statement which, bound to v. */
static qr_status id_query(store *s, int which, int64_t v, int64_t *out, bool *null, char *err)
{
    sqlite3_stmt *q = s->q[which];
    bool row;
    if (sqlite3_bind_int64(q, 1, v))
        return store_bind_fail(s, err);
    qr_status st = store_step_row(s, q, &row, err, "read chunk ids");
    if (st)
        return st;
    *null = !row || sqlite3_column_type(q, 0) == SQLITE_NULL;
    *out = *null ? 0 : sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return QR_OK;
}

/* Records the rows of the deleted chunks [first, last] as free, widened to the live chunks on
 * either side (the rows between were freed with them, and a block they share is whole now);
 * past the last live chunk, up to the largest id handed out. After the chunks are deleted. */
static qr_status free_rows(store *s, int64_t first, int64_t last, char *err)
{
    int64_t below, above, seq;
    bool none_below, none_above;
    qr_status st;
    if ((st = id_query(s, Q_CHUNK_BELOW, first, &below, &none_below, err)) ||
        (st = id_query(s, Q_CHUNK_ABOVE, last, &above, &none_above, err)))
        return st;
    if (none_above) {
        if ((st = store_chunk_seq(s, &seq, err)))
            return st;
        above = (seq > last ? seq : last) + 1;
    }
    return store_vec_free(s, none_below ? 1 : below + 1, above, err);
}

/* Removes the chunks of document `id` (their FTS rows recorded for the follower to remove),
 * records them as deleted at `counter` and their vector rows as free. */
qr_status store_remove_chunks(store *s, int64_t id, int64_t counter, char *err)
{
    sqlite3_stmt *q = s->q[Q_CHUNK_RANGE_DOC];
    bool row;
    if (sqlite3_bind_int64(q, 1, id))
        return store_bind_fail(s, err);
    qr_status st = store_step_row(s, q, &row, err, "read chunk ids");
    if (st)
        return st;
    bool none = !row || sqlite3_column_type(q, 0) == SQLITE_NULL;
    int64_t first = none ? 0 : sqlite3_column_int64(q, 0), last = none ? 0 : sqlite3_column_int64(q, 1);
    sqlite3_reset(q);
    st = store_doc_stmt(s, Q_TOMBSTONE_DOC, id, counter, err, "record deleted chunks");
    if (!st)
        st = store_fts_gone(s, id, counter, err);
    if (!st)
        st = store_doc_stmt(s, Q_CHUNKS_DELETE_DOC, id, counter, err, "delete chunks");
    if (!st && !none)
        st = free_rows(s, first, last, err);
    return st;
}

/* Inserts the chunks of document `id` with their vectors (the full-text follower indexes them
 * after the commit, or, in bulk mode, its thread as they are handed to it here: store_fts.c). The chunks get
 * consecutive ids (one writer, AUTOINCREMENT), so their rows are written at once; ids that are not
 * consecutive are written one by one. */
static qr_status insert_chunks(store *s, int64_t id, const store_document *doc, const char *title,
                               const store_chunk *chunks, size_t nchunks, const float *vectors, int dim,
                               int64_t counter, char *err)
{
    qr_status st = QR_OK;
    int64_t run_first = 0; /* the first id of the rows not written yet, chunks [run_at, i) */
    size_t run_at = 0;
    if (nchunks && (st = store_vec_open_write(s, dim, err)))
        return st;
    for (size_t i = 0; i < nchunks && !st; i++) {
        const store_chunk *c = &chunks[i];
        const char *headings = c->headings ? c->headings : "";
        sqlite3_stmt *q = s->q[Q_CHUNK_INSERT];
        if (sqlite3_bind_int64(q, 1, id) || sqlite3_bind_int64(q, 2, (int64_t)i) ||
            sqlite3_bind_int64(q, 3, (int64_t)c->start) || sqlite3_bind_int64(q, 4, (int64_t)c->end) ||
            store_bind_str(q, 5, headings) ||
            store_bind_text(q, 6, doc->text + c->start, c->end - c->start) ||
            sqlite3_bind_int64(q, 7, counter))
            return store_bind_fail(s, err);
        if ((st = store_run(s, q, err, "insert a chunk")))
            break;
        int64_t chunk_id = sqlite3_last_insert_rowid(s->db);
        store_fts_capture(s, chunk_id, title, headings, doc->text + c->start, c->end - c->start);
        if (i == run_at)
            run_first = chunk_id;
        else if (chunk_id != run_first + (int64_t)(i - run_at)) {
            if ((st = store_vec_write(s, run_first, vectors + run_at * (size_t)dim, i - run_at, dim, err)))
                break;
            run_at = i;
            run_first = chunk_id;
        }
    }
    s->fts_changed |= nchunks > 0;
    if (!st && nchunks > run_at)
        st = store_vec_write(s, run_first, vectors + run_at * (size_t)dim, nchunks - run_at, dim, err);
    return st;
}

/* Inserts or updates the document row, stamping it with the write's counter; fts_rewritten
 * records that its FTS rows were rewritten under the same chunk ids (updates only). */
static qr_status write_doc_row(store *s, const doc_row *r, const char *doc_id, const store_put_input *in,
                               const char *hash, int64_t text_len, int64_t chunk_count, int64_t counter,
                               bool fts_rewritten, int64_t *id, char *err)
{
    sqlite3_stmt *q = s->q[r->found ? Q_DOC_UPDATE : Q_DOC_INSERT];
    if ((r->found ? sqlite3_bind_int64(q, 1, r->id) : store_bind_str(q, 1, doc_id)) ||
        store_bind_str(q, 2, in->title) || store_bind_str(q, 3, in->uri) ||
        store_bind_str(q, 4, in->content_type) || store_bind_str(q, 5, in->metadata) ||
        store_bind_str(q, 6, hash) || sqlite3_bind_int64(q, 7, text_len) ||
        sqlite3_bind_int64(q, 8, chunk_count) || sqlite3_bind_int64(q, 9, qr_wall_ms()) ||
        sqlite3_bind_int64(q, 10, counter) || (r->found && sqlite3_bind_int(q, 11, fts_rewritten)))
        return store_bind_fail(s, err);
    qr_status st = store_run(s, q, err, r->found ? "update a document" : "insert a document");
    *id = r->found ? r->id : sqlite3_last_insert_rowid(s->db);
    return st;
}

/* The vector dimension the store records; refuses vectors before store_check_embedding. */
qr_status store_check_dim(store *s, const char *doc_id, size_t nchunks, int dim, char *err)
{
    if (!nchunks)
        return QR_OK;
    int64_t stored = s->embedding_dim;
    qr_status st = stored ? QR_OK : store_meta_get_int(s, "embedding_dim", &stored, err);
    if (st)
        return st;
    s->embedding_dim = stored; /* once recorded it never changes (store_check_embedding) */
    if (stored == 0)
        return qr_fail(err, QR_EINVAL,
                       "document '%.200s': the store has no embedding model recorded yet (call "
                       "store_check_embedding first)",
                       doc_id);
    if (stored != dim)
        return qr_fail(err, QR_EINVAL, "document '%.200s': vectors have dimension %d, the store's are %lld",
                       doc_id, dim, (long long)stored);
    return QR_OK;
}

qr_status store_put(store *s, const store_document *doc, const store_chunk *chunks, size_t nchunks,
                    const float *vectors, int dim, store_put_result *result, char *err)
{
    if (!s || !doc || !result)
        return qr_fail(err, QR_EINVAL, "store_put: NULL argument");
    if (s->route)
        return store_route_put(s, doc, chunks, nchunks, vectors, dim, result, err);
    store_put_input in = {0};
    doc_row r;
    int64_t counter = 0, id = 0;
    bool same_acl = false;
    qr_status st = store_check_document(s->q[Q_JSON_CHECK], doc, chunks, nchunks, vectors, dim, &in, err);
    if (st)
        goto out;
    if ((st = store_begin_write(s, err)) || (st = store_follow_refuse(s, err)) ||
        (st = find_doc(s, doc->doc_id, &in, &r, err)))
        goto out;
    if (r.found && (st = store_acl_equal(s, r.id, in.acl, in.nacl, &same_acl, err)))
        goto out;
    if ((st = store_check_dim(s, doc->doc_id, nchunks, dim, err)))
        goto out;

    if (r.found && r.same_hash) {
        /* the content is what the store has: keep chunks, vectors and their ids */
        if (r.same_title && r.same_fields && same_acl) {
            *result = STORE_UNCHANGED;
            goto out; /* end_call rolls back: nothing was written */
        }
        if ((st = store_bump_counter(s, &counter, err)))
            goto out;
        if (!r.same_title && (st = store_fts_gone(s, r.id, counter, err)))
            goto out;
        if ((st = write_doc_row(s, &r, doc->doc_id, &in, r.hash, r.text_len, r.chunk_count, counter,
                                !r.same_title, &id, err)))
            goto out;
        if (!same_acl && (st = store_write_acl(s, r.id, false, in.acl, in.nacl, err)))
            goto out;
        if ((st = store_commit(s, err)))
            goto out;
        *result = r.same_title ? STORE_ACL_UPDATED : STORE_UPDATED;
        goto out;
    }

    /* new document, or new content: the text is needed now */
    if (!doc->text) {
        st = qr_fail(err, QR_EINVAL, "document '%.200s': text is required (its content hash is new)",
                     doc->doc_id);
        goto out;
    }
    if ((st = store_bump_counter(s, &counter, err)))
        goto out;
    if (r.found && (st = store_remove_chunks(s, r.id, counter, err)))
        goto out;
    if ((st = write_doc_row(s, &r, doc->doc_id, &in, in.hash, (int64_t)doc->text_len, (int64_t)nchunks,
                            counter, false, &id, err)))
        goto out;
    if ((!r.found || !same_acl) && (st = store_write_acl(s, id, !r.found, in.acl, in.nacl, err)))
        goto out;
    if ((st = insert_chunks(s, id, doc, in.title, chunks, nchunks, vectors, dim, counter, err)))
        goto out;
    if ((st = store_commit(s, err)))
        goto out;
    *result = r.found ? STORE_UPDATED : STORE_ADDED;
out:
    st = store_end_call(s, st, err);
    store_put_input_release(&in);
    return st;
}

qr_status store_get_hash(store *s, const char *doc_id, char hash[65], bool *found, char *err)
{
    if (!s || !hash || !found)
        return qr_fail(err, QR_EINVAL, "store_get_hash: NULL argument");
    hash[0] = '\0';
    *found = false;
    qr_status st = store_check_doc_id(doc_id, err);
    if (st)
        return st;
    sqlite3_stmt *q = s->q[Q_HASH_GET];
    bool row;
    if (store_bind_str(q, 1, doc_id)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = store_step_row(s, q, &row, err, "look up a content hash")) || !row)
        goto out;
    snprintf(hash, 65, "%s", store_col_str(q, 0));
    *found = true;
out:
    st = store_end_call(s, st, err);
    return st;
}

qr_status store_not_found(const char *doc_id, char *err)
{
    return qr_fail(err, QR_ENOTFOUND, "no document '%.200s' in the store", doc_id);
}

qr_status store_delete(store *s, const char *doc_id, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_delete: NULL store");
    if (s->route)
        return store_route_delete(s, doc_id, err);
    qr_status st = store_check_doc_id(doc_id, err);
    doc_row r;
    int64_t counter;
    if (st)
        return st;
    if ((st = store_begin_write(s, err)) || (st = store_follow_refuse(s, err)) ||
        (st = find_doc(s, doc_id, NULL, &r, err)))
        goto out;
    if (!r.found) {
        st = store_not_found(doc_id, err);
        goto out;
    }
    if ((st = store_bump_counter(s, &counter, err)) || (st = store_remove_chunks(s, r.id, counter, err)) ||
        (st = store_doc_stmt(s, Q_ACL_DELETE_DOC, r.id, counter, err, "delete ACL rows")) ||
        (st = store_doc_stmt(s, Q_DOC_DELETE, r.id, counter, err, "delete a document")))
        goto out;
    st = store_commit(s, err);
out:
    st = store_end_call(s, st, err);
    return st;
}

qr_status store_set_acl(store *s, const char *doc_id, const char *const *acl, size_t nacl, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_set_acl: NULL store");
    if (s->route)
        return store_route_set_acl(s, doc_id, acl, nacl, err);
    const char **sorted = NULL;
    size_t nsorted = 0;
    doc_row r;
    bool same;
    int64_t counter;
    qr_status st = store_check_doc_id(doc_id, err);
    if (st || (st = store_normalise_acl(acl, nacl, &sorted, &nsorted, err)))
        goto out;
    if ((st = store_begin_write(s, err)) || (st = store_follow_refuse(s, err)) ||
        (st = find_doc(s, doc_id, NULL, &r, err)))
        goto out;
    if (!r.found) {
        st = store_not_found(doc_id, err);
        goto out;
    }
    if ((st = store_acl_equal(s, r.id, sorted, nsorted, &same, err)) || same)
        goto out;
    if ((st = store_bump_counter(s, &counter, err)))
        goto out;
    sqlite3_stmt *q = s->q[Q_DOC_TOUCH];
    if (sqlite3_bind_int64(q, 1, r.id) || sqlite3_bind_int64(q, 2, qr_wall_ms()) ||
        sqlite3_bind_int64(q, 3, counter)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = store_run(s, q, err, "update a document")) ||
        (st = store_write_acl(s, r.id, false, sorted, nsorted, err)))
        goto out;
    st = store_commit(s, err);
out:
    st = store_end_call(s, st, err);
    free(sorted);
    return st;
}

/* ---- embedding model, stats, generations ------------------------------------------------- */

qr_status store_check_embedding(store *s, const char *model, int dim, char *err)
{
    if (!s || !model)
        return qr_fail(err, QR_EINVAL, "store_check_embedding: NULL argument");
    /* routed: the primary records it first (whichever node comes first), then this store */
    qr_status st = s->route ? store_route_check_embedding(s, model, dim, err) : QR_OK;
    return st ? st : store_check_embedding_local(s, model, dim, err);
}

qr_status store_check_embedding_local(store *s, const char *model, int dim, char *err)
{
    qr_status st = store_check_field("embedding model name", model, STORE_MODEL_MAX, false, err);
    if (st)
        return st;
    if (dim <= 0 || dim > STORE_DIM_MAX)
        return qr_fail(err, QR_EINVAL, "invalid embedding dimension %d: expected 1..%d", dim, STORE_DIM_MAX);
    char stored[STORE_MODEL_MAX + 1];
    int64_t stored_dim = 0;
    if ((st = store_begin_write(s, err)) ||
        (st = store_meta_get_str(s, "embedding_model", stored, sizeof(stored), err)) ||
        (st = store_meta_get_int(s, "embedding_dim", &stored_dim, err)))
        goto out;
    if (!stored[0]) {
        if (!(st = store_meta_set_str(s, "embedding_model", model, err)) &&
            !(st = store_meta_set_int(s, "embedding_dim", dim, err)))
            st = store_commit(s, err);
    } else if (strcmp(stored, model) != 0 || stored_dim != dim) {
        st = qr_fail(err, QR_EINVAL,
                     "store '%s' holds vectors of embedding model '%s' (dimension %lld); refusing model '%s' "
                     "(dimension %d): use the same model, or ingest into a new data directory",
                     s->path, stored, (long long)stored_dim, model, dim);
    }
out:
    st = store_end_call(s, st, err);
    return st;
}

qr_status store_get_stats(store *s, store_stats *out, char *err)
{
    if (!s || !out)
        return qr_fail(err, QR_EINVAL, "store_get_stats: NULL argument");
    memset(out, 0, sizeof(*out));
    sqlite3_stmt *q = s->q[Q_STATS];
    bool row;
    qr_status st;
    if ((st = store_begin_read(s, err)) || (st = store_step_row(s, q, &row, err, "count documents")))
        goto out;
    if (row) {
        out->documents = sqlite3_column_int64(q, 0);
        out->chunks = sqlite3_column_int64(q, 1);
        out->text_bytes = sqlite3_column_int64(q, 2);
    }
    sqlite3_reset(q);
    if (!(st = store_read_heads(s, out, err)))
        st = store_commit(s, err);
out:
    st = store_end_call(s, st, err);
    return st;
}

qr_status store_set_index_generation(store *s, int64_t generation, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_set_index_generation: NULL store");
    int64_t current = 0;
    qr_status st;
    if ((st = store_begin_write(s, err)) || (st = store_meta_get_int(s, "index_generation", &current, err)))
        goto out;
    if (generation < current) {
        st = qr_fail(err, QR_EINVAL, "index generation %lld is older than the recorded %lld",
                     (long long)generation, (long long)current);
        goto out;
    }
    if (!(st = store_meta_set_int(s, "index_generation", generation, err)))
        st = store_commit(s, err);
out:
    st = store_end_call(s, st, err);
    return st;
}
