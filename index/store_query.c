/*
 * store_query: the store's search queries for retrieval: BM25 over FTS5, the permitted chunk ids
 * and the per-chunk permission test that vector searches use, the re-read of a result page with
 * its permission check, and the FTS index's tokenizer. A store_filter becomes SQL from fixed
 * fragments with every value bound, and every query applies the whole filter before any ranking
 * or limit.
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

/* ---- search queries ---------------------------------------------------------------------- */

/*
 * The filter becomes SQL from fixed fragments, one per condition that is set, over chunks `c`
 * (and documents `d` where a fragment needs the document row); its values are bound by name.
 * Two shapes: SET fragments for queries over many chunks, where the permitted documents are
 * computed once per statement (SQLite materialises an uncorrelated IN subquery) and probed per
 * chunk; ROW fragments for the one-chunk permission test, correlated so that a test costs index
 * lookups for that chunk only instead of listing every permitted document each time.
 */
typedef enum { FILTER_SET, FILTER_ROW } filter_shape;

/* The filter's values in bindable form: principals and doc ids as JSON arrays, read in SQL
 * with json_each. */
typedef struct {
    const store_filter *f;
    qr_buf principals, doc_ids;
    bool acl, docs, uri, type, updated, require, exclude;
    bool acl_docset; /* SET shape: the ACL test reads a docset bound as :docset (below) */
} filter_sql;

static void filter_sql_release(filter_sql *fs)
{
    qr_buf_release(&fs->principals);
    qr_buf_release(&fs->doc_ids);
}

static qr_status json_array(qr_buf *out, const char *const *v, size_t n)
{
    qr_status st = qr_buf_putc(out, '[');
    for (size_t i = 0; i < n && !st; i++) {
        if (i)
            st = qr_buf_putc(out, ',');
        if (!st)
            st = qr_json_escape(out, v[i], strlen(v[i]));
    }
    return st ? st : qr_buf_putc(out, ']');
}

/* Checks a filter and prepares its values. */
static qr_status filter_prepare(const store_filter *f, filter_sql *fs, char *err)
{
    memset(fs, 0, sizeof(*fs));
    qr_buf_init(&fs->principals, (size_t)STORE_FILTER_PRINCIPALS_MAX * (STORE_PRINCIPAL_MAX * 6 + 16));
    qr_buf_init(&fs->doc_ids, (size_t)STORE_FILTER_DOC_IDS_MAX * (STORE_DOC_ID_MAX * 6 + 4));
    fs->f = f;
    if (!f)
        return qr_fail(err, QR_EINVAL, "search: NULL filter");
    if (f->nprincipals > STORE_FILTER_PRINCIPALS_MAX)
        return qr_fail(err, QR_ELIMIT, "search: %zu principals, more than %d", f->nprincipals,
                       STORE_FILTER_PRINCIPALS_MAX);
    if (f->ndoc_ids > STORE_FILTER_DOC_IDS_MAX)
        return qr_fail(err, QR_ELIMIT, "search: %zu document ids, more than %d", f->ndoc_ids,
                       STORE_FILTER_DOC_IDS_MAX);
    if ((f->nprincipals && !f->principals) || (f->ndoc_ids && !f->doc_ids))
        return qr_fail(err, QR_EINVAL, "search: NULL list in the filter");
    for (size_t i = 0; i < f->nprincipals; i++)
        if (!store_principal_valid(f->principals[i]))
            return qr_fail(err, QR_EINVAL, "search: invalid principal #%zu", i);
    qr_status st;
    for (size_t i = 0; i < f->ndoc_ids; i++)
        if ((st = store_check_doc_id(f->doc_ids[i], err)))
            return st;
    const char *fields[] = {f->uri_prefix, f->content_type};
    const char *names[] = {"URI prefix", "content type"};
    for (int i = 0; i < 2; i++)
        if (fields[i] && (st = store_check_field(names[i], fields[i], STORE_FIELD_MAX, true, err)))
            return st;
    fs->acl = !f->all_documents;
    fs->docs = f->ndoc_ids > 0;
    fs->uri = f->uri_prefix && *f->uri_prefix;
    fs->type = f->content_type && *f->content_type;
    fs->updated = f->updated_after_ms > 0;
    fs->require = f->require_match && *f->require_match;
    fs->exclude = f->exclude_match && *f->exclude_match;
    if ((fs->acl && json_array(&fs->principals, f->principals, f->nprincipals)) ||
        (fs->docs && json_array(&fs->doc_ids, f->doc_ids, f->ndoc_ids)))
        return qr_fail(err, QR_ENOMEM, "out of memory for a search filter");
    return QR_OK;
}

/* True when the fragments need the documents row `d`. */
static bool filter_needs_doc(const filter_sql *fs, filter_shape shape)
{
    return fs->uri || fs->type || fs->updated || (shape == FILTER_ROW && fs->docs);
}

/* Appends the WHERE conditions (each starting with " AND "). */
static qr_status filter_where(const filter_sql *fs, filter_shape shape, qr_buf *sql)
{
    qr_status st = QR_OK;
    bool set = shape == FILTER_SET;
    if (fs->acl && set && fs->acl_docset)
        st = qr_buf_puts(sql, " AND quarry_docset_has(:docset, c.doc)");
    else if (fs->acl)
        st = qr_buf_puts(sql, set ? " AND c.doc IN (SELECT doc FROM acl WHERE principal IN"
                                    " (SELECT value FROM json_each(:principals)))"
                                  : " AND EXISTS (SELECT 1 FROM acl a WHERE a.doc = c.doc AND a.principal IN"
                                    " (SELECT value FROM json_each(:principals)))");
    if (!st && fs->docs)
        st = qr_buf_puts(sql, set ? " AND c.doc IN (SELECT id FROM documents WHERE doc_id IN"
                                    " (SELECT value FROM json_each(:doc_ids)))"
                                  : " AND d.doc_id IN (SELECT value FROM json_each(:doc_ids))");
    if (!st && fs->uri)
        st = qr_buf_puts(sql, " AND substr(d.uri, 1, length(:uri_prefix)) = :uri_prefix");
    if (!st && fs->type)
        st = qr_buf_puts(sql, " AND d.content_type = :content_type");
    if (!st && fs->updated)
        st = qr_buf_puts(sql, " AND d.updated_ms > :updated_after");
    if (!st && fs->require)
        st = qr_buf_puts(sql,
                         set ? " AND c.id IN (SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH :require)"
                             : " AND EXISTS (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH :require"
                               " AND rowid = c.id)");
    if (!st && fs->exclude)
        st =
            qr_buf_puts(sql, set ? " AND c.id NOT IN (SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH"
                                   " :exclude)"
                                 : " AND NOT EXISTS (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH :exclude"
                                   " AND rowid = c.id)");
    return st;
}

/* Binds a text value by parameter name when the statement has that parameter (a copy: the
 * statement may outlive the caller's strings). */
static int bind_named_text(sqlite3_stmt *q, const char *name, const char *v, size_t n)
{
    int i = sqlite3_bind_parameter_index(q, name);
    return i ? sqlite3_bind_text64(q, i, v, n, SQLITE_TRANSIENT, SQLITE_UTF8) : SQLITE_OK;
}

static int bind_named_int(sqlite3_stmt *q, const char *name, int64_t v)
{
    int i = sqlite3_bind_parameter_index(q, name);
    return i ? sqlite3_bind_int64(q, i, v) : SQLITE_OK;
}

static int bind_named_double(sqlite3_stmt *q, const char *name, double v)
{
    int i = sqlite3_bind_parameter_index(q, name);
    return i ? sqlite3_bind_double(q, i, v) : SQLITE_OK;
}

static int filter_bind(const filter_sql *fs, sqlite3_stmt *q)
{
    const store_filter *f = fs->f;
    int rc = SQLITE_OK;
    if (fs->acl)
        rc = bind_named_text(q, ":principals", qr_buf_str(&fs->principals), qr_buf_len(&fs->principals));
    if (!rc && fs->docs)
        rc = bind_named_text(q, ":doc_ids", qr_buf_str(&fs->doc_ids), qr_buf_len(&fs->doc_ids));
    if (!rc && fs->uri)
        rc = bind_named_text(q, ":uri_prefix", f->uri_prefix, strlen(f->uri_prefix));
    if (!rc && fs->type)
        rc = bind_named_text(q, ":content_type", f->content_type, strlen(f->content_type));
    if (!rc && fs->updated)
        rc = bind_named_int(q, ":updated_after", f->updated_after_ms);
    if (!rc && fs->require)
        rc = bind_named_text(q, ":require", f->require_match, strlen(f->require_match));
    if (!rc && fs->exclude)
        rc = bind_named_text(q, ":exclude", f->exclude_match, strlen(f->exclude_match));
    return rc;
}

/* A failure of a search statement: an FTS5 expression error is the caller's bad input. */
static qr_status search_fail(store *s, int rc, char *err, const char *what)
{
    const char *why = sqlite3_errmsg(s->db);
    if ((rc & 0xff) == SQLITE_ERROR && strncmp(why, "fts5:", 5) == 0)
        return qr_fail(err, QR_EINVAL, "invalid full-text query: %s", why);
    return store_sql_fail(s, rc, err, what);
}

/* SQLite's progress handler (the searching thread): non-zero stops the running statement with
 * SQLITE_INTERRUPT, which store_sql_fail turns back into the token's status. */
static int on_progress(void *ctx)
{
    store *s = ctx;
    return qr_cancel_check(s->cancel, NULL) != QR_OK;
}

void store_set_cancel(store *s, qr_cancel *c)
{
    if (!s)
        return;
    s->cancel = c;
    sqlite3_progress_handler(s->db, c ? STORE_PROGRESS_OPS : 0, c ? on_progress : NULL, s);
}

/* Prepares one of the search statements (not cached: its text depends on the filter). */
/* Search statements are built from the request's filter, but the same shapes come back query after
 * query: a handle keeps the last STORE_STMT_CACHE of them, so a repeated search skips SQLite's
 * parser and planner. A statement is taken out of the cache while it is used (a handle serves one
 * thread at a time, but a call may hold two) and put back reset and unbound (release_search). */
static qr_status prepare_search(store *s, const qr_buf *sql, sqlite3_stmt **q, char *err)
{
    for (int i = 0; i < STORE_STMT_CACHE; i++) {
        sqlite3_stmt *c = s->stmt_cache[i];
        if (c && strcmp(sqlite3_sql(c), qr_buf_str(sql)) == 0) {
            s->stmt_cache[i] = NULL;
            *q = c;
            return QR_OK;
        }
    }
    int rc =
        sqlite3_prepare_v3(s->db, qr_buf_str(sql), (int)qr_buf_len(sql), SQLITE_PREPARE_PERSISTENT, q, NULL);
    if (rc != SQLITE_OK) {
        qr_status st = (rc & 0xff) == SQLITE_INTERRUPT
                           ? store_sql_fail(s, rc, err, "prepare a search")
                           : qr_fail(err, QR_EINTERNAL, "cannot prepare a search in store '%s': %s", s->path,
                                     sqlite3_errmsg(s->db));
        sqlite3_finalize(*q);
        *q = NULL;
        return st;
    }
    return QR_OK;
}

/* Puts a statement from prepare_search back in the cache (NULL: nothing), replacing the oldest
 * when every slot is taken. */
static void release_search(store *s, sqlite3_stmt *q)
{
    if (!q)
        return;
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    int slot = -1;
    for (int i = 0; i < STORE_STMT_CACHE && slot < 0; i++)
        if (!s->stmt_cache[i])
            slot = i;
    if (slot < 0) {
        slot = (int)(s->stmt_next++ % STORE_STMT_CACHE);
        sqlite3_finalize(s->stmt_cache[slot]);
    }
    s->stmt_cache[slot] = q;
}

void store_stmt_cache_clear(store *s)
{
    for (int i = 0; i < STORE_STMT_CACHE; i++) {
        sqlite3_finalize(s->stmt_cache[i]);
        s->stmt_cache[i] = NULL;
    }
}

/*
 * The caller's readable documents as a bitset over document keys, for the full-text search. In
 * SQL the ACL test (an IN subquery) is materialised when the first matching chunk reaches it, so
 * a word that some chunk holds -- one only other users may read included -- cost the listing of
 * every document the caller may read, and a word no chunk holds did not: one hidden chunk showed
 * in the time of a search. The bitset is read before the search, match or not, and the query
 * tests each matching chunk against it through quarry_docset_has(:docset, doc), the set bound as
 * a pointer (SQLite's pointer-passing interface, so SQL text can never forge one).
 */
typedef struct {
    uint64_t *bits;
    size_t nwords;
} docset;

static void docset_has(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    const docset *d = sqlite3_value_pointer(argv[0], "quarry_docset");
    sqlite3_int64 doc = sqlite3_value_int64(argv[1]);
    sqlite3_result_int(ctx, d && doc >= 0 && (uint64_t)doc / 64 < d->nwords &&
                                (d->bits[(uint64_t)doc / 64] >> ((uint64_t)doc % 64) & 1));
}

/* Reads the documents whose ACL holds one of fs's principals into d (d->bits is the caller's to
 * free, also on error). */
static qr_status docset_load(store *s, const filter_sql *fs, docset *d, char *err)
{
    d->bits = NULL;
    d->nwords = 0;
    if (!s->docset_fn) {
        int rc = sqlite3_create_function_v2(s->db, "quarry_docset_has", 2, SQLITE_UTF8 | SQLITE_DIRECTONLY,
                                            NULL, docset_has, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return store_sql_fail(s, rc, err, "register quarry_docset_has");
        s->docset_fn = true;
    }
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(
        s->db, "SELECT doc FROM acl WHERE principal IN (SELECT value FROM json_each(?1))", -1, &q, NULL);
    if (rc != SQLITE_OK)
        return store_sql_fail(s, rc, err, "prepare the readable documents");
    qr_status st = QR_OK;
    if (sqlite3_bind_text64(q, 1, qr_buf_str(&fs->principals), qr_buf_len(&fs->principals), SQLITE_STATIC,
                            SQLITE_UTF8)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        sqlite3_int64 doc = sqlite3_column_int64(q, 0);
        if (doc < 0)
            continue;
        size_t w = (size_t)((uint64_t)doc / 64);
        if (w >= d->nwords) {
            size_t n = d->nwords ? d->nwords : 64;
            while (n <= w)
                n *= 2;
            uint64_t *b = realloc(d->bits, n * sizeof(*b));
            if (!b) {
                st = qr_fail(err, QR_ENOMEM, "out of memory for a search");
                goto out;
            }
            memset(b + d->nwords, 0, (n - d->nwords) * sizeof(*b));
            d->bits = b;
            d->nwords = n;
        }
        d->bits[w] |= 1ull << ((uint64_t)doc % 64);
    }
    if (rc != SQLITE_DONE)
        st = search_fail(s, rc, err, "read the readable documents");
out:
    sqlite3_finalize(q);
    return st;
}

qr_status store_search_bm25(store *s, const char *match, const double weights[3], const store_filter *f,
                            size_t max_per_doc, size_t limit, store_hit *out, size_t *n, char *err)
{
    if (!s || !match || !weights || !n || (limit && !out))
        return qr_fail(err, QR_EINVAL, "store_search_bm25: NULL argument");
    *n = 0;
    for (int i = 0; i < 3; i++)
        if (!isfinite(weights[i]) || weights[i] < 0)
            return qr_fail(err, QR_EINVAL, "search: column weights must be finite and not negative");
    filter_sql fs;
    qr_buf sql;
    qr_buf_init(&sql, 1 << 16);
    sqlite3_stmt *q = NULL;
    docset ds = {0};
    qr_status st = filter_prepare(f, &fs, err);
    if (st || !limit || !*match)
        goto out;
    if ((st = store_begin_read(s, err)))
        goto out;
    fs.acl_docset = fs.acl;
    if (fs.acl && (st = docset_load(s, &fs, &ds, err)))
        goto out;
    /* bm25() can only run where the FTS5 cursor of the MATCH is, so the per-document limit
     * ranks each document's chunks over a materialised copy of the scored matches */
    if (qr_buf_puts(&sql, max_per_doc ? "WITH m AS MATERIALIZED (" : "SELECT id, doc, score FROM (") ||
        qr_buf_puts(&sql,
                    "SELECT chunks_fts.rowid AS id, c.doc AS doc, bm25(chunks_fts, :wt, :wh, :wb) AS score"
                    " FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid") ||
        (filter_needs_doc(&fs, FILTER_SET) && qr_buf_puts(&sql, " JOIN documents d ON d.id = c.doc")) ||
        qr_buf_puts(&sql, " WHERE chunks_fts MATCH :match") || filter_where(&fs, FILTER_SET, &sql) ||
        qr_buf_puts(&sql, max_per_doc
                              ? ") SELECT id, doc, score FROM (SELECT id, doc, score, row_number() OVER"
                                " (PARTITION BY doc ORDER BY score, id) AS r FROM m) WHERE r <= :cap"
                              : ")") ||
        qr_buf_puts(&sql, " ORDER BY score, id LIMIT :limit")) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for a search");
        goto out;
    }
    if ((st = prepare_search(s, &sql, &q, err)))
        goto out;
    if (filter_bind(&fs, q) || bind_named_text(q, ":match", match, strlen(match)) ||
        bind_named_double(q, ":wt", weights[0]) || bind_named_double(q, ":wh", weights[1]) ||
        bind_named_double(q, ":wb", weights[2]) || bind_named_int(q, ":cap", (int64_t)max_per_doc) ||
        bind_named_int(q, ":limit", limit > INT64_MAX ? INT64_MAX : (int64_t)limit) ||
        (fs.acl &&
         sqlite3_bind_pointer(q, sqlite3_bind_parameter_index(q, ":docset"), &ds, "quarry_docset", NULL))) {
        st = store_bind_fail(s, err);
        goto out;
    }
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW && *n < limit) {
        out[*n].chunk_id = sqlite3_column_int64(q, 0);
        out[*n].doc = sqlite3_column_int64(q, 1);
        out[*n].score = -sqlite3_column_double(q, 2);
        (*n)++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        st = search_fail(s, rc, err, "run a full-text search");
        *n = 0;
        goto out;
    }
    sqlite3_reset(q);
    st = store_commit(s, err);
out:
    release_search(s, q);
    free(ds.bits);
    qr_buf_release(&sql);
    filter_sql_release(&fs);
    if (st)
        *n = 0;
    return store_end_call(s, st, err);
}

qr_status store_filter_chunks(store *s, const store_filter *f, size_t limit, int64_t *ids, size_t *n,
                              bool *more, char *err)
{
    if (!s || !n || !more || (limit && !ids))
        return qr_fail(err, QR_EINVAL, "store_filter_chunks: NULL argument");
    *n = 0;
    *more = false;
    filter_sql fs;
    qr_buf sql;
    qr_buf_init(&sql, 1 << 16);
    sqlite3_stmt *q = NULL;
    qr_status st = filter_prepare(f, &fs, err);
    if (st)
        goto out;
    /* no ORDER BY: SQLite then walks from the permitted documents to their chunks (chunks_doc)
     * instead of scanning every chunk in id order */
    if (qr_buf_puts(&sql, "SELECT c.id FROM chunks c") ||
        (filter_needs_doc(&fs, FILTER_SET) && qr_buf_puts(&sql, " JOIN documents d ON d.id = c.doc")) ||
        qr_buf_puts(&sql, " WHERE 1") || filter_where(&fs, FILTER_SET, &sql) ||
        qr_buf_puts(&sql, " LIMIT :limit")) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for a search");
        goto out;
    }
    if ((st = prepare_search(s, &sql, &q, err)))
        goto out;
    if (filter_bind(&fs, q) ||
        bind_named_int(q, ":limit", limit >= INT64_MAX ? INT64_MAX : (int64_t)limit + 1)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = store_begin_read(s, err)))
        goto out;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (*n == limit) {
            *more = true;
            rc = SQLITE_DONE;
            break;
        }
        ids[(*n)++] = sqlite3_column_int64(q, 0);
    }
    if (rc != SQLITE_DONE) {
        st = search_fail(s, rc, err, "list permitted chunks");
        goto out;
    }
    sqlite3_reset(q);
    st = store_commit(s, err);
out:
    release_search(s, q);
    qr_buf_release(&sql);
    filter_sql_release(&fs);
    if (st) {
        *n = 0;
        *more = false;
    }
    return store_end_call(s, st, err);
}

/* Counts the rows q gives, up to limit + 1. */
static qr_status count_rows(store *s, sqlite3_stmt *q, size_t limit, size_t *n, char *err)
{
    int rc = SQLITE_DONE;
    *n = 0;
    while (*n <= limit && (rc = sqlite3_step(q)) == SQLITE_ROW)
        (*n)++;
    if (*n <= limit && rc != SQLITE_DONE)
        return search_fail(s, rc, err, "count changed chunks");
    sqlite3_reset(q);
    return QR_OK;
}

/* Calls fn for each row of q (a chunk id) with passes. */
static qr_status report_rows(store *s, sqlite3_stmt *q, bool passes, store_filter_change_fn fn, void *ctx,
                             char *err)
{
    int rc = SQLITE_DONE;
    qr_status st = QR_OK;
    while (!st && (rc = sqlite3_step(q)) == SQLITE_ROW)
        st = fn(ctx, sqlite3_column_int64(q, 0), passes, err);
    if (!st && rc != SQLITE_DONE)
        st = search_fail(s, rc, err, "read changed chunks");
    sqlite3_reset(q);
    return st;
}

qr_status store_filter_changes(store *s, const store_filter *f, int64_t since, size_t limit,
                               store_filter_change_fn fn, void *ctx, int64_t *counter, char *err)
{
    if (!s || !fn || !counter)
        return qr_fail(err, QR_EINVAL, "store_filter_changes: NULL argument");
    filter_sql fs;
    qr_buf sql;
    qr_buf_init(&sql, 1 << 16);
    sqlite3_stmt *gone = NULL, *touched = NULL, *passing = NULL;
    int64_t now = 0, pruned = 0;
    size_t ngone = 0, ntouched = 0;
    qr_status st = filter_prepare(f, &fs, err);
    if (st)
        goto out;
    /* the chunks of documents written after `since`, and those of them that pass f now */
    static const char touched_sql[] = "SELECT c.id FROM documents d INDEXED BY documents_changed"
                                      " JOIN chunks c ON c.doc = d.id WHERE d.changed > :since";
    if (qr_buf_puts(&sql, "SELECT c.id FROM documents d INDEXED BY documents_changed JOIN chunks c"
                          " ON c.doc = d.id WHERE d.changed > :since") ||
        filter_where(&fs, FILTER_ROW, &sql)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for a search");
        goto out;
    }
    if (sqlite3_prepare_v2(s->db, "SELECT chunk_id FROM deleted_chunks WHERE counter > :since", -1, &gone,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, touched_sql, -1, &touched, NULL) != SQLITE_OK) {
        st = qr_fail(err, QR_EINTERNAL, "cannot prepare the changed chunks' queries: %s",
                     sqlite3_errmsg(s->db));
        goto out;
    }
    if ((st = prepare_search(s, &sql, &passing, err)))
        goto out;
    if (bind_named_int(gone, ":since", since) || bind_named_int(touched, ":since", since) ||
        bind_named_int(passing, ":since", since) || filter_bind(&fs, passing)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = store_begin_read(s, err)) || (st = store_meta_get_int(s, "change_counter", &now, err)) ||
        (st = store_meta_get_int(s, "tombstones_pruned", &pruned, err)))
        goto out;
    if (since < pruned) {
        st = qr_fail(err, QR_ELIMIT, "tombstones after change %lld were pruned (through %lld)",
                     (long long)since, (long long)pruned);
        goto out;
    }
    if ((st = count_rows(s, gone, limit, &ngone, err)) ||
        (st = count_rows(s, touched, limit - (ngone < limit ? ngone : limit), &ntouched, err)))
        goto out;
    if (ngone + ntouched > limit) {
        st = qr_fail(err, QR_ELIMIT, "more than %zu chunks changed after change %lld", limit,
                     (long long)since);
        goto out;
    }
    if ((st = report_rows(s, gone, false, fn, ctx, err)) ||
        (st = report_rows(s, touched, false, fn, ctx, err)) ||
        (st = report_rows(s, passing, true, fn, ctx, err)) || (st = store_commit(s, err)))
        goto out;
    *counter = now;
out:
    sqlite3_finalize(gone);
    sqlite3_finalize(touched);
    release_search(s, passing);
    qr_buf_release(&sql);
    filter_sql_release(&fs);
    return store_end_call(s, st, err);
}

/* Prepares `select` (ending in "WHERE c.id = :id") with fs's row conditions appended and bound:
 * the statement the per-id lookups below step once per id. *id_param gets :id's index. On error
 * *q may be set: the caller releases it (release_search). */
static qr_status prepare_per_id(store *s, const filter_sql *fs, const char *select, sqlite3_stmt **q,
                                int *id_param, char *err)
{
    qr_buf sql;
    qr_buf_init(&sql, 1 << 16);
    qr_status st = QR_OK;
    if (qr_buf_puts(&sql, select) || filter_where(fs, FILTER_ROW, &sql))
        st = qr_fail(err, QR_ENOMEM, "out of memory for a search");
    else if (!(st = prepare_search(s, &sql, q, err)) && filter_bind(fs, *q))
        st = store_bind_fail(s, err);
    else if (!st)
        *id_param = sqlite3_bind_parameter_index(*q, ":id");
    qr_buf_release(&sql);
    return st;
}

qr_status store_filter_ids(store *s, const store_filter *f, const int64_t *ids, size_t n, int64_t *docs,
                           char *err)
{
    if (!s || (n && (!ids || !docs)))
        return qr_fail(err, QR_EINVAL, "store_filter_ids: NULL argument");
    for (size_t i = 0; i < n; i++)
        docs[i] = -1;
    filter_sql fs;
    sqlite3_stmt *q = NULL;
    int id_param = 0;
    qr_status st = filter_prepare(f, &fs, err);
    if (st || !n)
        goto out;
    /* ROW fragments: each id costs its own lookups, whatever the size of the permitted set */
    if ((st = prepare_per_id(
             s, &fs,
             filter_needs_doc(&fs, FILTER_ROW)
                 ? "SELECT c.doc FROM chunks c JOIN documents d ON d.id = c.doc WHERE c.id = :id"
                 : "SELECT c.doc FROM chunks c WHERE c.id = :id",
             &q, &id_param, err)) ||
        (st = store_begin_read(s, err)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        int rc = sqlite3_bind_int64(q, id_param, ids[i]);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(q);
        if (rc == SQLITE_ROW)
            docs[i] = sqlite3_column_int64(q, 0);
        else if (rc != SQLITE_DONE) {
            st = search_fail(s, rc, err, "test chunks' permissions");
            goto out;
        }
        sqlite3_reset(q);
    }
    st = store_commit(s, err);
out:
    release_search(s, q);
    filter_sql_release(&fs);
    if (st)
        for (size_t i = 0; i < n; i++)
            docs[i] = -1;
    return store_end_call(s, st, err);
}

struct store_permit {
    store *s;
    sqlite3_stmt *q;
    bool in_read; /* holds the read transaction its tests share (store_permit_close ends it) */
    qr_status st; /* the first failure of a test */
    char err[QR_ERR_LEN];
};

qr_status store_permit_open(store *s, const store_filter *f, store_permit **out, char *err)
{
    if (!s || !out)
        return qr_fail(err, QR_EINVAL, "store_permit_open: NULL argument");
    *out = NULL;
    filter_sql fs;
    store_permit *p = NULL;
    int id_param = 0;
    qr_status st = filter_prepare(f, &fs, err);
    if (st)
        goto out;
    if (!(p = calloc(1, sizeof(*p)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for a permission test");
        goto out;
    }
    p->s = s;
    st = prepare_per_id(s, &fs,
                        filter_needs_doc(&fs, FILTER_ROW)
                            ? "SELECT 1 FROM chunks c JOIN documents d ON d.id = c.doc WHERE c.id = :id"
                            : "SELECT 1 FROM chunks c WHERE c.id = :id",
                        &p->q, &id_param, err);
    /* one read transaction for every test: without it each lookup begins and ends its own
     * (file locks and the WAL header each time), which cost more than the lookup */
    if (!st && !(st = store_begin_read(s, err)))
        p->in_read = true;
out:
    filter_sql_release(&fs);
    if (st) {
        store_permit_close(p, NULL);
        return st;
    }
    *out = p;
    return QR_OK;
}

bool store_permit_test(store_permit *p, int64_t chunk_id)
{
    if (!p || p->st)
        return false;
    int rc = sqlite3_bind_int64(p->q, sqlite3_bind_parameter_index(p->q, ":id"), chunk_id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(p->q);
    bool ok = rc == SQLITE_ROW;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        p->st = search_fail(p->s, rc, p->err, "test a chunk's permission");
    sqlite3_reset(p->q);
    return ok;
}

qr_status store_permit_close(store_permit *p, char *err)
{
    if (!p)
        return QR_OK;
    qr_status st = p->st;
    if (st && err)
        snprintf(err, QR_ERR_LEN, "%s", p->err);
    release_search(p->s, p->q);
    if (p->in_read) {
        char e2[QR_ERR_LEN];
        qr_status cs = store_commit(p->s, e2);
        if (!st && cs) {
            st = cs;
            if (err)
                snprintf(err, QR_ERR_LEN, "%s", e2);
        }
        st = store_end_call(p->s, st, st ? err : NULL);
    }
    free(p);
    return st;
}

qr_status store_chunk_docs(store *s, const int64_t *ids, size_t n, int64_t *docs, char *err)
{
    if (!s || (n && (!ids || !docs)))
        return qr_fail(err, QR_EINVAL, "store_chunk_docs: NULL argument");
    sqlite3_stmt *q = NULL;
    qr_status st = QR_OK;
    int rc = sqlite3_prepare_v2(s->db, "SELECT doc FROM chunks WHERE id = ?1", -1, &q, NULL);
    if (rc != SQLITE_OK) {
        st = store_sql_fail(s, rc, err, "prepare a chunk lookup");
        goto out;
    }
    if ((st = store_begin_read(s, err)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        bool row;
        if (sqlite3_bind_int64(q, 1, ids[i])) {
            st = store_bind_fail(s, err);
            goto out;
        }
        if ((st = store_step_row(s, q, &row, err, "look up a chunk")))
            goto out;
        docs[i] = row ? sqlite3_column_int64(q, 0) : -1;
        sqlite3_reset(q);
    }
    st = store_commit(s, err);
out:
    sqlite3_finalize(q);
    return store_end_call(s, st, err);
}

qr_status store_read_chunks(store *s, const int64_t *ids, size_t n, const store_filter *f,
                            store_chunk_view_fn fn, void *ctx, char *err)
{
    if (!s || !fn || (n && !ids))
        return qr_fail(err, QR_EINVAL, "store_read_chunks: NULL argument");
    filter_sql fs;
    sqlite3_stmt *q = NULL;
    int id_param = 0;
    qr_status st = filter_prepare(f, &fs, err);
    if (st)
        goto out;
    if ((st = prepare_per_id(
             s, &fs,
             "SELECT c.id, c.doc, d.doc_id, d.title, d.uri, d.content_type, c.headings, c.body,"
             " c.start, c.\"end\" FROM chunks c JOIN documents d ON d.id = c.doc WHERE c.id = :id",
             &q, &id_param, err)) ||
        (st = store_begin_read(s, err)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        int rc = sqlite3_bind_int64(q, id_param, ids[i]);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(q);
        if (rc == SQLITE_DONE) {
            sqlite3_reset(q);
            continue; /* gone, or no longer permitted */
        }
        if (rc != SQLITE_ROW) {
            st = search_fail(s, rc, err, "read a search result");
            goto out;
        }
        store_chunk_view v = {
            .chunk_id = sqlite3_column_int64(q, 0),
            .doc = sqlite3_column_int64(q, 1),
            .doc_id = store_col_str(q, 2),
            .title = store_col_str(q, 3),
            .uri = store_col_str(q, 4),
            .content_type = store_col_str(q, 5),
            .headings = store_col_str(q, 6),
            .text = store_col_str(q, 7),
            .text_len = (size_t)sqlite3_column_bytes(q, 7),
            .start = (size_t)sqlite3_column_int64(q, 8),
            .end = (size_t)sqlite3_column_int64(q, 9),
        };
        st = fn(ctx, &v, err);
        sqlite3_reset(q);
        if (st)
            goto out;
    }
    st = store_commit(s, err);
out:
    release_search(s, q);
    filter_sql_release(&fs);
    return store_end_call(s, st, err);
}

/* ---- the index's tokenizer ------------------------------------------------------------------ */

/* FTS5 hands its API out through a pointer-passing SQL function (sqlite3_bind_pointer), the way
 * its documentation prescribes for code that links SQLite dynamically. */
static fts5_api *fts5_api_of(sqlite3 *db)
{
    fts5_api *api = NULL;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_bind_pointer(q, 1, (void *)&api, "fts5_api_ptr", NULL) == SQLITE_OK)
        sqlite3_step(q);
    sqlite3_finalize(q);
    return api;
}

typedef struct {
    store_token_fn fn;
    void *ctx;
    qr_status st;
    char *err;
} tokenize_ctx;

static int on_token(void *pctx, int flags, const char *token, int ntoken, int start, int end)
{
    tokenize_ctx *t = pctx;
    if (flags & FTS5_TOKEN_COLOCATED)
        return SQLITE_OK; /* porter unicode61 makes no synonyms; a custom one would */
    t->st = t->fn(t->ctx, token, (size_t)ntoken, (size_t)start, (size_t)end, t->err);
    return t->st ? SQLITE_ABORT : SQLITE_OK;
}

qr_status store_tokenize(store *s, const char *text, size_t len, store_token_fn fn, void *ctx, char *err)
{
    if (!s || !fn || (len && !text))
        return qr_fail(err, QR_EINVAL, "store_tokenize: NULL argument");
    if (len > INT_MAX)
        return qr_fail(err, QR_ELIMIT, "store_tokenize: %zu bytes, more than FTS5 takes", len);
    if (!s->tokenizer_p) {
        /* the schema's tokenize = 'porter unicode61' */
        fts5_api *api = fts5_api_of(s->db);
        void *user = NULL;
        const char *args[] = {"unicode61"};
        if (!api || api->xFindTokenizer(api, "porter", &user, &s->tokenizer) != SQLITE_OK ||
            s->tokenizer.xCreate(user, args, 1, &s->tokenizer_p) != SQLITE_OK) {
            s->tokenizer_p = NULL;
            return qr_fail(err, QR_EINTERNAL, "cannot load FTS5's porter tokenizer in store '%s'", s->path);
        }
    }
    tokenize_ctx t = {fn, ctx, QR_OK, err};
    int rc = s->tokenizer.xTokenize(s->tokenizer_p, &t, FTS5_TOKENIZE_DOCUMENT, text ? text : "", (int)len,
                                    on_token);
    if (t.st)
        return t.st;
    if (rc != SQLITE_OK)
        return qr_fail(err, store_sql_status(rc), "cannot tokenize text in store '%s' (FTS5 error %d)",
                       s->path, rc);
    return QR_OK;
}
