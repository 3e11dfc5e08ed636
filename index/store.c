/*
 * The document store: documents, chunks, ACL rows, chunk vectors and the FTS5 index of the chunks
 * in one SQLite database (<dir>/quarry.db), and the change log the vector index follows.
 *
 * Consistency rests on three choices. Every write is one IMMEDIATE transaction (the write lock
 * is taken up front, so two writers never deadlock upgrading a read lock), and the rows of a
 * document -- its documents row, chunk rows, FTS rows, vectors, ACL rows -- are written and
 * removed together inside it. The database runs in WAL mode with synchronous=FULL: WAL alone
 * keeps the file consistent across a killed process or a power cut, and FULL syncs the WAL at
 * every commit, so a commit that returned also survives power loss. synchronous=NORMAL keeps
 * the same guarantees against a killed process (the WAL frames are in the OS before COMMIT
 * returns) but could lose the last commits on power loss, and then hand out again chunk ids and
 * change counters that a vector index saved to its own files had already seen. Foreign
 * keys are on, as a second line of defence behind the explicit deletes. A batch
 * (store_batch_begin) only widens the transaction to several documents: each is still written
 * whole inside it, and a failure half-way through a write rolls the whole batch back.
 *
 * The FTS5 table is external-content: its content table is the view chunks_fts_source, which
 * joins each chunk's heading path and text with its document's title. The chunk text is thus
 * stored once (a regular FTS5 table would keep a second copy of every chunk), while title,
 * headings and body are indexed per chunk. The price of external content is that FTS5 must be
 * told the exact old values when a row goes away ('delete' command); the store therefore removes
 * a document's FTS rows, reading them from the view, before it deletes or changes the chunks or
 * title they came from, always in the same transaction. SQLite 3.40 has no contentless-delete
 * tables, which would have avoided both the copy and that rule.
 *
 * All SQL uses bound parameters; values are never formatted into SQL. sqlite3 messages are
 * translated into quarry statuses in one place (sql_fail).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "index/feed.h"
#include "index/store.h"
#include "index/store_int.h"

/* Vectors are stored as the host's float32 bytes; the format is declared little-endian. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "the store's vector BLOBs are little-endian float32");
_Static_assert(sizeof(float) == 4, "float must be IEEE-754 binary32");

#define STORE_FILE            "quarry.db"
#define STORE_BUSY_TIMEOUT_MS 5000

/* ---- schema and migrations --------------------------------------------------------------- */

/* Migration i brings the schema from version i to i + 1. Never edit a released migration: add
 * one. Each runs inside the transaction that records it in schema_version. */
static const char *const store_migrations[] = {
    /* 1: the initial schema */
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
    "INSERT INTO meta(key, value) VALUES ('change_counter', 0), ('index_generation', 0);"
    /* doc_id is the external id; id the internal key that chunks and ACL rows refer to */
    "CREATE TABLE documents("
    "  id INTEGER PRIMARY KEY,"
    "  doc_id TEXT NOT NULL UNIQUE,"
    "  title TEXT NOT NULL, uri TEXT NOT NULL, content_type TEXT NOT NULL,"
    "  metadata TEXT NOT NULL,"
    "  content_hash TEXT NOT NULL,"
    "  text_len INTEGER NOT NULL, chunk_count INTEGER NOT NULL,"
    "  version INTEGER NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
    /* AUTOINCREMENT: chunk ids are FAISS ids and tombstones, never to be reused */
    "CREATE TABLE chunks("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  doc INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  ordinal INTEGER NOT NULL,"
    "  start INTEGER NOT NULL, \"end\" INTEGER NOT NULL,"
    "  headings TEXT NOT NULL, body TEXT NOT NULL,"
    "  added INTEGER NOT NULL);" /* change counter of the transaction that added it */
    "CREATE INDEX chunks_doc ON chunks(doc, ordinal);"
    "CREATE INDEX chunks_added ON chunks(added);"
    "CREATE TABLE vectors("
    "  chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,"
    "  vec BLOB NOT NULL);"
    /* keyed by principal first: retrieval restricts to the documents of a set of principals */
    "CREATE TABLE acl("
    "  principal TEXT NOT NULL,"
    "  doc INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  PRIMARY KEY (principal, doc)) WITHOUT ROWID;"
    "CREATE INDEX acl_doc ON acl(doc);"
    "CREATE TABLE deleted_chunks(chunk_id INTEGER PRIMARY KEY, counter INTEGER NOT NULL);"
    "CREATE INDEX deleted_chunks_counter ON deleted_chunks(counter);"
    "CREATE VIEW chunks_fts_source AS"
    "  SELECT c.id AS id, d.title AS title, c.headings AS headings, c.body AS body, c.doc AS doc"
    "  FROM chunks c JOIN documents d ON d.id = c.doc;"
    "CREATE VIRTUAL TABLE chunks_fts USING fts5(title, headings, body,"
    "  content = 'chunks_fts_source', content_rowid = 'id', tokenize = 'porter unicode61');",
    /* 2: what changed in each document, for the pruned BM25 index (store_docs_changed_since).
     * changed is the counter of the last write to the document row; fts_changed that of the last
     * rewrite of its FTS rows under the same chunk ids (a new title, same content). Documents
     * already stored get the current counter for both: their history is unknown, so a reader that
     * saw an older counter must treat them as changed. */
    "ALTER TABLE documents ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE documents ADD COLUMN fts_changed INTEGER NOT NULL DEFAULT 0;"
    "UPDATE documents SET changed = (SELECT value FROM meta WHERE key = 'change_counter'),"
    "  fts_changed = (SELECT value FROM meta WHERE key = 'change_counter');"
    "CREATE INDEX documents_changed ON documents(changed);"
    /* the store's identity, for indexes derived from it (store_uid) */
    "INSERT INTO meta(key, value) VALUES ('store_uid', random() & 0x7fffffffffffffff);",
};
#define STORE_SCHEMA_VERSION ((int)(sizeof(store_migrations) / sizeof(store_migrations[0])))

/* ---- prepared statements ----------------------------------------------------------------- */

enum {
    Q_BEGIN_READ,
    Q_BEGIN_WRITE,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_META_GET,
    Q_META_SET,
    Q_COUNTER_BUMP,
    Q_JSON_CHECK,
    Q_DOC_FIND,
    Q_DOC_READ,
    Q_DOC_INSERT,
    Q_DOC_UPDATE,
    Q_DOC_TOUCH,
    Q_DOC_DELETE,
    Q_HASH_GET,
    Q_CHUNK_INSERT,
    Q_CHUNKS_OF_DOC,
    Q_CHUNKS_DELETE_DOC,
    Q_VEC_INSERT,
    Q_VEC_GET,
    Q_VECS_DELETE_DOC,
    Q_FTS_SOURCE_DOC,
    Q_FTS_INSERT,
    Q_FTS_DELETE,
    Q_TOMBSTONE_DOC,
    Q_ACL_LIST,
    Q_ACL_INSERT,
    Q_ACL_DELETE_DOC,
    Q_STATS,
    Q_CHANGED_DELETED,
    Q_CHANGED_ADDED,
    Q_VECS_ALL,
    Q_PRUNE,
    Q_TEXT_ADDED,
    Q_TEXT_ALL,
    Q_DOCS_CHANGED,
    Q_PRINCIPAL_DOCS,
    Q_COUNT
};

static const char *const store_sql[Q_COUNT] = {
    [Q_BEGIN_READ] = "BEGIN",
    [Q_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [Q_META_SET] = "INSERT INTO meta(key, value) VALUES (?1, ?2)"
                   " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [Q_COUNTER_BUMP] = "UPDATE meta SET value = value + 1 WHERE key = 'change_counter' RETURNING value",
    [Q_JSON_CHECK] = "SELECT CASE WHEN json_valid(?1) THEN json_type(?1) END,"
                     " CASE WHEN json_valid(?1) THEN json(?1) END",
    [Q_DOC_FIND] = "SELECT id, content_hash, title, uri, content_type, metadata, text_len, chunk_count"
                   " FROM documents WHERE doc_id = ?1",
    [Q_DOC_READ] = "SELECT id, doc_id, title, uri, content_type, metadata, content_hash, version, created_ms,"
                   " updated_ms, text_len, chunk_count FROM documents WHERE doc_id = ?1",
    [Q_DOC_INSERT] = "INSERT INTO documents(doc_id, title, uri, content_type, metadata, content_hash,"
                     " text_len, chunk_count, version, created_ms, updated_ms, changed)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?9, ?10)",
    [Q_DOC_UPDATE] = "UPDATE documents SET title = ?2, uri = ?3, content_type = ?4, metadata = ?5,"
                     " content_hash = ?6, text_len = ?7, chunk_count = ?8, version = version + 1,"
                     " updated_ms = ?9, changed = ?10,"
                     " fts_changed = CASE WHEN ?11 THEN ?10 ELSE fts_changed END WHERE id = ?1",
    [Q_DOC_TOUCH] = "UPDATE documents SET version = version + 1, updated_ms = ?2, changed = ?3 WHERE id = ?1",
    [Q_DOC_DELETE] = "DELETE FROM documents WHERE id = ?1",
    [Q_HASH_GET] = "SELECT content_hash FROM documents WHERE doc_id = ?1",
    [Q_CHUNK_INSERT] = "INSERT INTO chunks(doc, ordinal, start, \"end\", headings, body, added)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [Q_CHUNKS_OF_DOC] =
        "SELECT id, start, \"end\", headings, body FROM chunks WHERE doc = ?1 ORDER BY ordinal",
    [Q_CHUNKS_DELETE_DOC] = "DELETE FROM chunks WHERE doc = ?1",
    [Q_VEC_INSERT] = "INSERT INTO vectors(chunk_id, vec) VALUES (?1, ?2)",
    [Q_VEC_GET] = "SELECT vec FROM vectors WHERE chunk_id = ?1",
    [Q_VECS_DELETE_DOC] = "DELETE FROM vectors WHERE chunk_id IN (SELECT id FROM chunks WHERE doc = ?1)",
    /* FTS rows are written one by one: a multi-row INSERT ... SELECT into FTS5 opens a statement
     * savepoint, at which FTS5 flushes its pending terms into a new segment (measured: 45% slower
     * per document, and no gain from larger transactions) */
    [Q_FTS_SOURCE_DOC] = "SELECT id, title, headings, body FROM chunks_fts_source WHERE doc = ?1",
    [Q_FTS_INSERT] = "INSERT INTO chunks_fts(rowid, title, headings, body) VALUES (?1, ?2, ?3, ?4)",
    /* external content: FTS5 must be given the values it indexed, which the view still holds */
    [Q_FTS_DELETE] = "INSERT INTO chunks_fts(chunks_fts, rowid, title, headings, body)"
                     " VALUES ('delete', ?1, ?2, ?3, ?4)",
    [Q_TOMBSTONE_DOC] =
        "INSERT INTO deleted_chunks(chunk_id, counter) SELECT id, ?2 FROM chunks WHERE doc = ?1",
    [Q_ACL_LIST] = "SELECT principal FROM acl WHERE doc = ?1 ORDER BY principal",
    [Q_ACL_INSERT] = "INSERT OR IGNORE INTO acl(principal, doc) VALUES (?2, ?1)",
    [Q_ACL_DELETE_DOC] = "DELETE FROM acl WHERE doc = ?1",
    [Q_STATS] = "SELECT count(*), coalesce(sum(chunk_count), 0), coalesce(sum(text_len), 0) FROM documents",
    [Q_CHANGED_DELETED] = "SELECT chunk_id, counter FROM deleted_chunks WHERE counter > ?1 ORDER BY chunk_id",
    [Q_CHANGED_ADDED] = "SELECT c.id, c.added, v.vec FROM chunks c JOIN vectors v ON v.chunk_id = c.id"
                        " WHERE c.added > ?1 ORDER BY c.id",
    [Q_VECS_ALL] = "SELECT v.chunk_id, c.added, v.vec FROM vectors v JOIN chunks c ON c.id = v.chunk_id"
                   " ORDER BY v.chunk_id",
    [Q_PRUNE] = "DELETE FROM deleted_chunks WHERE counter <= ?1",
    /* A catch-up reads few chunks of many: INDEXED BY makes the planner, which has no statistics,
     * take the range of the added index and sort those rows rather than scan every chunk in id
     * order. CROSS JOIN keeps chunks the outer loop, with a primary-key lookup of the document. */
    [Q_TEXT_ADDED] = "SELECT c.id, c.added, c.doc, d.title, c.headings, c.body"
                     " FROM chunks c INDEXED BY chunks_added CROSS JOIN documents d ON d.id = c.doc"
                     " WHERE c.added > ?1 ORDER BY c.id",
    /* index builds: one pass over chunks in id order, no sort */
    [Q_TEXT_ALL] = "SELECT c.id, c.added, c.doc, d.title, c.headings, c.body"
                   " FROM chunks c CROSS JOIN documents d ON d.id = c.doc ORDER BY c.id",
    /* one row per (document, principal), a NULL principal for an empty ACL; the changed index
     * for the same reason as above */
    [Q_DOCS_CHANGED] = "SELECT d.id, d.changed, d.fts_changed, a.principal"
                       " FROM documents d INDEXED BY documents_changed LEFT JOIN acl a ON a.doc = d.id"
                       " WHERE d.changed > ?1 ORDER BY d.id, a.principal",
    [Q_PRINCIPAL_DOCS] = "SELECT doc FROM acl WHERE principal = ?1 ORDER BY doc",
};

enum { BATCH_NONE, BATCH_OPEN, BATCH_FAILED };

struct store {
    sqlite3 *db;
    char *path; /* <dir>/quarry.db, for messages */
    sqlite3_stmt *q[Q_COUNT];
    int batch;          /* BATCH_*: see store_batch_begin */
    bool wrote;         /* the current call has written inside the transaction */
    qr_status batch_st; /* the failure that rolled the batch back */
    char batch_err[QR_ERR_LEN];
    fts5_tokenizer tokenizer;   /* the FTS index's tokenizer, made on first store_tokenize */
    Fts5Tokenizer *tokenizer_p; /* NULL until then */
};

/* ---- SQLite errors, translated once ------------------------------------------------------ */

static qr_status sql_status(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return QR_ETIMEOUT;
    case SQLITE_NOMEM: return QR_ENOMEM;
    case SQLITE_TOOBIG: return QR_ELIMIT;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_PROTOCOL:
    case SQLITE_NOLFS: return QR_EIO;
    default: return QR_EINTERNAL;
    }
}

/* Must run right after the failing call, before anything else touches the connection. */
static qr_status sql_fail(store *s, int rc, char *err, const char *what)
{
    const char *why = sqlite3_errmsg(s->db);
    if ((rc & 0xff) == SQLITE_BUSY)
        return qr_fail(err, QR_ETIMEOUT,
                       "cannot %s in store '%s': another process held it locked for %d ms (%s)", what,
                       s->path, STORE_BUSY_TIMEOUT_MS, why);
    return qr_fail(err, sql_status(rc), "cannot %s in store '%s': %s", what, s->path, why);
}

/* Steps q to completion (rows are skipped) and resets it. */
static qr_status run(store *s, sqlite3_stmt *q, char *err, const char *what)
{
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW)
        ;
    qr_status st = rc == SQLITE_DONE ? QR_OK : sql_fail(s, rc, err, what);
    sqlite3_reset(q);
    return st;
}

/* Steps a query once: QR_OK and *has_row, or a failure (the statement is then reset). */
static qr_status step_row(store *s, sqlite3_stmt *q, bool *has_row, char *err, const char *what)
{
    int rc = sqlite3_step(q);
    *has_row = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        return QR_OK;
    qr_status st = sql_fail(s, rc, err, what);
    sqlite3_reset(q);
    return st;
}

/* Binds with SQLITE_STATIC: every caller keeps the value alive until the statement is reset. */
static int bind_text(sqlite3_stmt *q, int i, const char *v, size_t n)
{
    return sqlite3_bind_text64(q, i, v, n, SQLITE_STATIC, SQLITE_UTF8);
}

static int bind_str(sqlite3_stmt *q, int i, const char *v)
{
    return bind_text(q, i, v, strlen(v));
}

static qr_status bind_fail(store *s, char *err)
{
    return qr_fail(err, QR_EINTERNAL, "cannot bind a value in store '%s': %s", s->path,
                   sqlite3_errmsg(s->db));
}

static const char *col_str(sqlite3_stmt *q, int i)
{
    const char *v = (const char *)sqlite3_column_text(q, i);
    return v ? v : "";
}

static void rollback(store *s)
{
    if (!sqlite3_get_autocommit(s->db)) {
        sqlite3_step(s->q[Q_ROLLBACK]);
        sqlite3_reset(s->q[Q_ROLLBACK]);
    }
}

/* Ends a public call and returns st. Every statement is reset (a statement left mid-query would
 * hold a read snapshot open and stall WAL checkpoints) and bindings are dropped (they point at
 * the caller's memory). Outside a batch, a transaction still open because of an error, or
 * because nothing needed writing, is rolled back. Inside a batch, a call that failed after it
 * began writing, or whose failure made SQLite end the transaction, rolls the whole batch back:
 * its earlier writes cannot be separated from the half-done one. */
static qr_status end_call(store *s, qr_status st, char *err)
{
    for (int i = 0; i < Q_COUNT; i++) {
        if (s->q[i]) {
            sqlite3_reset(s->q[i]);
            sqlite3_clear_bindings(s->q[i]);
        }
    }
    if (s->batch != BATCH_OPEN) {
        rollback(s);
        return st;
    }
    if (st && (s->wrote || sqlite3_get_autocommit(s->db))) {
        rollback(s);
        s->batch = BATCH_FAILED;
        s->batch_st = st;
        snprintf(s->batch_err, sizeof(s->batch_err), "%s", err ? err : qr_status_name(st));
        if (err) {
            size_t n = strlen(err);
            snprintf(err + n, QR_ERR_LEN - n, " (the open batch was rolled back)");
        }
    }
    return st;
}

/* Starts the transaction of a write call; inside an open batch the call joins the batch's. */
static qr_status begin_write(store *s, char *err)
{
    s->wrote = false;
    if (s->batch == BATCH_OPEN)
        return QR_OK;
    if (s->batch == BATCH_FAILED)
        return qr_fail(err, s->batch_st, "the open batch was rolled back by an earlier failure: %s",
                       s->batch_err);
    return run(s, s->q[Q_BEGIN_WRITE], err, "start a write transaction");
}

static qr_status begin_read(store *s, char *err)
{
    if (s->batch == BATCH_OPEN)
        return QR_OK;
    return run(s, s->q[Q_BEGIN_READ], err, "start a read transaction");
}

/* Commits the call's transaction; inside an open batch, store_batch_commit does. */
static qr_status commit(store *s, char *err)
{
    if (s->batch == BATCH_OPEN)
        return QR_OK;
    return run(s, s->q[Q_COMMIT], err, "commit");
}

/* ---- meta values ------------------------------------------------------------------------- */

/* Reads an integer meta value; a missing key reads as 0. */
static qr_status meta_get_int(store *s, const char *key, int64_t *out, char *err)
{
    sqlite3_stmt *q = s->q[Q_META_GET];
    bool row;
    if (bind_str(q, 1, key))
        return bind_fail(s, err);
    qr_status st = step_row(s, q, &row, err, "read the store's settings");
    if (st)
        return st;
    *out = row ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_reset(q);
    return QR_OK;
}

/* Copies a text meta value into out (size n); a missing key reads as "". */
static qr_status meta_get_str(store *s, const char *key, char *out, size_t n, char *err)
{
    sqlite3_stmt *q = s->q[Q_META_GET];
    bool row;
    if (bind_str(q, 1, key))
        return bind_fail(s, err);
    qr_status st = step_row(s, q, &row, err, "read the store's settings");
    if (st)
        return st;
    snprintf(out, n, "%s", row ? col_str(q, 0) : "");
    sqlite3_reset(q);
    return QR_OK;
}

static qr_status meta_set_int(store *s, const char *key, int64_t v, char *err)
{
    s->wrote = true;
    sqlite3_stmt *q = s->q[Q_META_SET];
    if (bind_str(q, 1, key) || sqlite3_bind_int64(q, 2, v))
        return bind_fail(s, err);
    return run(s, q, err, "write the store's settings");
}

static qr_status meta_set_str(store *s, const char *key, const char *v, char *err)
{
    s->wrote = true;
    sqlite3_stmt *q = s->q[Q_META_SET];
    if (bind_str(q, 1, key) || bind_str(q, 2, v))
        return bind_fail(s, err);
    return run(s, q, err, "write the store's settings");
}

/* Bumps the change counter inside the current write transaction and returns the new value. */
static qr_status bump_counter(store *s, int64_t *counter, char *err)
{
    s->wrote = true;
    sqlite3_stmt *q = s->q[Q_COUNTER_BUMP];
    bool row;
    qr_status st = step_row(s, q, &row, err, "bump the change counter");
    if (st)
        return st;
    if (!row) {
        sqlite3_reset(q);
        return qr_fail(err, QR_EIO, "store '%s' has no change counter: the file is damaged", s->path);
    }
    *counter = sqlite3_column_int64(q, 0);
    return run(s, q, err, "bump the change counter");
}

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
static qr_status check_field(const char *what, const char *v, size_t max, bool allow_empty, char *err)
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

static qr_status check_doc_id(const char *doc_id, char *err)
{
    if (!doc_id)
        return qr_fail(err, QR_EINVAL, "invalid doc_id: NULL");
    return check_field("doc_id", doc_id, STORE_DOC_ID_MAX, false, err);
}

static bool is_space(unsigned char c)
{
    return c == ' ';
}

bool store_principal_valid(const char *principal)
{
    if (!principal)
        return false;
    if (strcmp(principal, "public") == 0)
        return true;
    const char *name;
    if (strncmp(principal, "user:", 5) == 0)
        name = principal + 5;
    else if (strncmp(principal, "group:", 6) == 0)
        name = principal + 6;
    else
        return false;
    size_t n = strlen(name);
    if (n == 0 || n > STORE_PRINCIPAL_MAX || !qr_utf8_valid(name, n) || find_control(name, n) >= 0)
        return false;
    /* " alice" and "alice" would be different principals that print alike */
    return !is_space((unsigned char)name[0]) && !is_space((unsigned char)name[n - 1]);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Validates an ACL and returns it sorted and without duplicates in *out (free() the array, not
 * the strings, which stay the caller's). */
static qr_status normalise_acl(const char *const *acl, size_t nacl, const char ***out, size_t *nout,
                               char *err)
{
    *out = NULL;
    *nout = 0;
    if (nacl && !acl)
        return qr_fail(err, QR_EINVAL, "invalid ACL: NULL list of %zu principals", nacl);
    if (nacl > STORE_ACL_MAX)
        return qr_fail(err, QR_ELIMIT, "invalid ACL: %zu principals, more than %d", nacl, STORE_ACL_MAX);
    for (size_t i = 0; i < nacl; i++) {
        if (store_principal_valid(acl[i]))
            continue;
        /* echo it only when printing it cannot forge or garble a log line */
        size_t n = acl[i] ? strlen(acl[i]) : 0;
        bool printable = acl[i] && n <= 100 && qr_utf8_valid(acl[i], n) && find_control(acl[i], n) < 0;
        return qr_fail(
            err, QR_EINVAL,
            "invalid principal #%zu in ACL%s%s%s: expected \"public\", \"user:<uid>\" or \"group:<name>\" "
            "(name 1..%d bytes of UTF-8, no control characters, no leading or trailing space)",
            i, printable ? " '" : "", printable ? acl[i] : "", printable ? "'" : "", STORE_PRINCIPAL_MAX);
    }
    const char **v = malloc((nacl ? nacl : 1) * sizeof(*v));
    if (!v)
        return qr_fail(err, QR_ENOMEM, "out of memory for an ACL of %zu principals", nacl);
    if (nacl) { /* acl may be NULL for an empty ACL, and memcpy/qsort must not see NULL */
        memcpy(v, acl, nacl * sizeof(*v));
        qsort(v, nacl, sizeof(*v), cmp_str);
    }
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

static qr_status check_hash(const char *hash, char out[65], char *err)
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

static qr_status check_text_and_chunks(const char *doc_id, const store_document *doc,
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
        qr_status st = check_field(what, c->headings ? c->headings : "", STORE_FIELD_MAX, true, err);
        if (st)
            return st;
    }
    return QR_OK;
}

static qr_status check_vectors(const char *doc_id, size_t nchunks, const float *vectors, int dim, char *err)
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

/* The validated, normalised form of a store_document's fields. */
typedef struct {
    const char *title, *uri, *content_type;
    char *metadata;   /* canonical JSON (minified by SQLite's json()), malloc'd */
    const char **acl; /* sorted, deduplicated; malloc'd array of the caller's strings */
    size_t nacl;
    char hash[65]; /* lowercase */
} put_input;

static void put_input_release(put_input *in)
{
    free(in->metadata);
    free(in->acl);
}

/* Checks that metadata is a JSON object and stores SQLite's canonical text of it, so that the
 * same object sent twice with other spacing compares equal. */
static qr_status canonical_metadata(store *s, const char *doc_id, const char *json, char **out, char *err)
{
    *out = NULL;
    if (!json)
        json = "{}";
    size_t n = strlen(json);
    if (n > STORE_METADATA_MAX)
        return qr_fail(err, QR_ELIMIT, "document '%.200s': metadata of %zu bytes, more than %d", doc_id, n,
                       STORE_METADATA_MAX);
    if (!qr_utf8_valid(json, n))
        return qr_fail(err, QR_EINVAL, "document '%.200s': metadata is not valid UTF-8", doc_id);
    sqlite3_stmt *q = s->q[Q_JSON_CHECK];
    bool row;
    if (bind_text(q, 1, json, n))
        return bind_fail(s, err);
    qr_status st = step_row(s, q, &row, err, "check metadata");
    if (st)
        return st;
    if (!row || sqlite3_column_type(q, 0) == SQLITE_NULL) {
        st = qr_fail(err, QR_EINVAL, "document '%.200s': metadata is not valid JSON", doc_id);
    } else if (strcmp(col_str(q, 0), "object") != 0) {
        st = qr_fail(err, QR_EINVAL, "document '%.200s': metadata must be a JSON object, not %s", doc_id,
                     col_str(q, 0));
    } else if (!(*out = strdup(col_str(q, 1)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for metadata");
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return st;
}

static qr_status check_put_input(store *s, const store_document *doc, const store_chunk *chunks,
                                 size_t nchunks, const float *vectors, int dim, put_input *in, char *err)
{
    qr_status st = check_doc_id(doc->doc_id, err);
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
        if ((st = check_field(what, values[i], STORE_FIELD_MAX, true, err)))
            return st;
    }
    if ((st = check_hash(doc->content_hash, in->hash, err)))
        return st;
    if ((st = check_text_and_chunks(id, doc, chunks, nchunks, err)))
        return st;
    if ((st = check_vectors(id, nchunks, vectors, dim, err)))
        return st;
    if ((st = normalise_acl(doc->acl, doc->nacl, &in->acl, &in->nacl, err)))
        return st;
    return canonical_metadata(s, id, doc->metadata_json, &in->metadata, err);
}

/* ---- opening ----------------------------------------------------------------------------- */

/* mkdir -p with mode 0700 for what it creates: the store holds documents users may not read. */
static qr_status make_dirs(const char *dir, char *err)
{
    char *p = strdup(dir);
    qr_status st = QR_OK;
    if (!p)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    for (char *slash = strchr(p + 1, '/');; slash = strchr(slash + 1, '/')) {
        if (slash)
            *slash = '\0';
        if (p[0] && mkdir(p, 0700) != 0 && errno != EEXIST) {
            st = qr_fail(err, QR_EIO, "cannot create directory '%s': %s", p, strerror(errno));
            break;
        }
        if (!slash)
            break;
        *slash = '/';
        while (slash[1] == '/')
            slash++;
    }
    struct stat sb;
    if (!st && stat(dir, &sb) != 0)
        st = qr_fail(err, QR_EIO, "cannot use '%s' as the data directory: %s", dir, strerror(errno));
    else if (!st && !S_ISDIR(sb.st_mode))
        st = qr_fail(err, QR_EIO, "cannot use '%s' as the data directory: not a directory", dir);
    free(p);
    return st;
}

static qr_status exec_sql(store *s, const char *sql, char *err, const char *what)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? QR_OK : sql_fail(s, rc, err, what);
}

/* Reads the schema version; 0 for a new database. */
static qr_status schema_version(store *s, int *version, char *err)
{
    sqlite3_stmt *q = NULL;
    const char *sql = "SELECT CASE WHEN EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'schema_version')"
                      " THEN 1 ELSE 0 END";
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW && sqlite3_column_int(q, 0)) {
        sqlite3_finalize(q);
        rc = sqlite3_prepare_v2(s->db, "SELECT coalesce(max(version), 0) FROM schema_version", -1, &q, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(q);
    }
    if (rc != SQLITE_ROW) {
        qr_status st = sql_fail(s, rc, err, "read the schema version");
        sqlite3_finalize(q);
        return st;
    }
    *version = sqlite3_column_int(q, 0); /* 0 when the table does not exist yet */
    sqlite3_finalize(q);
    return QR_OK;
}

static qr_status apply_migration(store *s, int from, char *err)
{
    char what[64];
    snprintf(what, sizeof(what), "migrate the schema to version %d", from + 1);
    qr_status st = exec_sql(s, store_migrations[from], err, what);
    if (st)
        return st;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, "INSERT INTO schema_version(version, applied_ms) VALUES (?1, ?2)", -1,
                                &q, NULL);
    if (rc == SQLITE_OK && !(rc = sqlite3_bind_int(q, 1, from + 1)) &&
        !(rc = sqlite3_bind_int64(q, 2, qr_wall_ms())))
        rc = sqlite3_step(q);
    if (rc != SQLITE_DONE)
        st = sql_fail(s, rc, err, what);
    sqlite3_finalize(q);
    return st;
}

/* Brings the schema to STORE_SCHEMA_VERSION in one transaction, so that a crash mid-way leaves
 * the schema as it was. */
static qr_status migrate(store *s, char *err)
{
    int version = 0;
    qr_status st = schema_version(s, &version, err);
    if (st)
        return st;
    if (version < STORE_SCHEMA_VERSION) {
        if ((st = exec_sql(s, "BEGIN IMMEDIATE", err, "start the schema migration")))
            return st;
        st = exec_sql(s,
                      "CREATE TABLE IF NOT EXISTS schema_version(version INTEGER PRIMARY KEY, applied_ms "
                      "INTEGER NOT NULL)",
                      err, "create the schema version table");
        /* decide again under the write lock: another process may have migrated meanwhile */
        if (!st)
            st = schema_version(s, &version, err);
        for (int v = version; !st && v < STORE_SCHEMA_VERSION; v++)
            st = apply_migration(s, v, err);
        if (!st && version <= STORE_SCHEMA_VERSION)
            st = exec_sql(s, "COMMIT", err, "commit the schema migration");
        if (!sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        if (st)
            return st;
    }
    if (version > STORE_SCHEMA_VERSION)
        return qr_fail(
            err, QR_EINVAL,
            "store '%s' has schema version %d, newer than this quarry understands (%d): upgrade quarry",
            s->path, version, STORE_SCHEMA_VERSION);
    return QR_OK;
}

qr_status store_open(const char *dir, store **out, char *err)
{
    qr_status st = QR_OK;
    store *s = NULL;
    if (!out)
        return qr_fail(err, QR_EINVAL, "store_open: NULL output");
    *out = NULL;
    if (!dir || !dir[0])
        return qr_fail(err, QR_EINVAL, "store_open: empty data directory");
    if ((st = make_dirs(dir, err)))
        return st;
    if (!(s = calloc(1, sizeof(*s))) || !(s->path = malloc(strlen(dir) + sizeof("/" STORE_FILE)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory opening the store");
        goto out;
    }
    sprintf(s->path, "%s/%s", dir, STORE_FILE);
    int rc = sqlite3_open_v2(s->path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW, NULL);
    if (rc != SQLITE_OK) {
        if (!s->db) {
            st = qr_fail(err, QR_ENOMEM, "out of memory opening store '%s'", s->path);
            goto out;
        }
        st = sql_fail(s, rc, err, "open the database");
        goto out;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
    /* journal_mode answers with the mode in force: a file system without shared memory for the
     * WAL index would silently stay in rollback mode */
    sqlite3_stmt *q = NULL;
    rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        st = sql_fail(s, rc, err, "switch to WAL mode");
        sqlite3_finalize(q);
        goto out;
    }
    if (strcmp((const char *)sqlite3_column_text(q, 0), "wal") != 0) {
        st = qr_fail(err, QR_EIO, "store '%s' cannot use WAL mode (journal mode stays '%s')", s->path,
                     (const char *)sqlite3_column_text(q, 0));
        sqlite3_finalize(q);
        goto out;
    }
    sqlite3_finalize(q);
    if ((st = exec_sql(s, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON", err,
                       "set the store's pragmas")))
        goto out;
    if ((st = migrate(s, err)))
        goto out;
    for (int i = 0; i < Q_COUNT; i++) {
        rc = sqlite3_prepare_v3(s->db, store_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->q[i], NULL);
        if (rc != SQLITE_OK) {
            st = qr_fail(err, QR_EINTERNAL, "cannot prepare statement %d in store '%s': %s", i, s->path,
                         sqlite3_errmsg(s->db));
            goto out;
        }
    }
out:
    if (st) {
        store_close(s);
        return st;
    }
    *out = s;
    return QR_OK;
}

sqlite3 *store_db(store *s)
{
    return s->db;
}

void store_close(store *s)
{
    if (!s)
        return;
    if (s->batch == BATCH_OPEN)
        rollback(s);
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(s->q[i]);
    if (s->tokenizer_p)
        s->tokenizer.xDelete(s->tokenizer_p);
    sqlite3_close(s->db); /* all statements are finalized: closes now */
    free(s->path);
    free(s);
}

/* ---- batches ----------------------------------------------------------------------------- */

qr_status store_batch_begin(store *s, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_batch_begin: NULL store");
    if (s->batch != BATCH_NONE)
        return qr_fail(err, QR_EINVAL, "a batch is already open on store '%s'", s->path);
    qr_status st = run(s, s->q[Q_BEGIN_WRITE], err, "start a batch");
    if (!st)
        s->batch = BATCH_OPEN;
    return st;
}

qr_status store_batch_commit(store *s, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_batch_commit: NULL store");
    int batch = s->batch;
    s->batch = BATCH_NONE;
    if (batch == BATCH_NONE)
        return qr_fail(err, QR_EINVAL, "no batch is open on store '%s'", s->path);
    if (batch == BATCH_FAILED)
        return qr_fail(err, s->batch_st, "the batch was rolled back: %s", s->batch_err);
    qr_status st = run(s, s->q[Q_COMMIT], err, "commit a batch");
    rollback(s); /* a failed COMMIT can leave the transaction open */
    return st;
}

bool store_in_batch(const store *s)
{
    return s && s->batch != BATCH_NONE;
}

void store_batch_rollback(store *s)
{
    if (s && s->batch != BATCH_NONE) {
        rollback(s);
        s->batch = BATCH_NONE;
    }
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

static qr_status find_doc(store *s, const char *doc_id, const put_input *in, doc_row *r, char *err)
{
    sqlite3_stmt *q = s->q[Q_DOC_FIND];
    bool row;
    memset(r, 0, sizeof(*r));
    if (bind_str(q, 1, doc_id))
        return bind_fail(s, err);
    qr_status st = step_row(s, q, &row, err, "look up a document");
    if (st || !row)
        goto out;
    r->found = true;
    r->id = sqlite3_column_int64(q, 0);
    snprintf(r->hash, sizeof(r->hash), "%s", col_str(q, 1));
    r->text_len = sqlite3_column_int64(q, 6);
    r->chunk_count = sqlite3_column_int64(q, 7);
    if (in) {
        r->same_hash = strcmp(r->hash, in->hash) == 0;
        r->same_title = strcmp(col_str(q, 2), in->title) == 0;
        r->same_fields = strcmp(col_str(q, 3), in->uri) == 0 &&
                         strcmp(col_str(q, 4), in->content_type) == 0 &&
                         strcmp(col_str(q, 5), in->metadata) == 0;
    }
out:
    sqlite3_reset(q);
    return st;
}

/* Compares the stored ACL of document `id` with a sorted, deduplicated list. */
static qr_status acl_equal(store *s, int64_t id, const char **acl, size_t nacl, bool *equal, char *err)
{
    sqlite3_stmt *q = s->q[Q_ACL_LIST];
    size_t i = 0;
    bool row;
    qr_status st;
    *equal = true;
    if (sqlite3_bind_int64(q, 1, id))
        return bind_fail(s, err);
    while (!(st = step_row(s, q, &row, err, "read an ACL")) && row) {
        if (i >= nacl || strcmp(col_str(q, 0), acl[i]) != 0) {
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

static qr_status write_acl(store *s, int64_t id, const char **acl, size_t nacl, char *err)
{
    sqlite3_stmt *q = s->q[Q_ACL_DELETE_DOC];
    if (sqlite3_bind_int64(q, 1, id))
        return bind_fail(s, err);
    qr_status st = run(s, q, err, "delete ACL rows");
    q = s->q[Q_ACL_INSERT];
    for (size_t i = 0; !st && i < nacl; i++) {
        if (sqlite3_bind_int64(q, 1, id) || bind_str(q, 2, acl[i]))
            return bind_fail(s, err);
        st = run(s, q, err, "insert an ACL row");
    }
    return st;
}

/* Runs one of the per-document statements (?1 = internal document id, ?2 = counter). */
static qr_status doc_stmt(store *s, int which, int64_t id, int64_t counter, char *err, const char *what)
{
    sqlite3_stmt *q = s->q[which];
    if (sqlite3_bind_int64(q, 1, id) ||
        (sqlite3_bind_parameter_count(q) >= 2 && sqlite3_bind_int64(q, 2, counter)))
        return bind_fail(s, err);
    return run(s, q, err, what);
}

/* Adds (Q_FTS_INSERT) or removes (Q_FTS_DELETE) the FTS rows of document `id`, reading the
 * values from the view chunks_fts_source: to remove, they must be exactly those indexed, so this
 * runs before the chunks or the title change. */
static qr_status fts_doc(store *s, int which, int64_t id, char *err)
{
    sqlite3_stmt *src = s->q[Q_FTS_SOURCE_DOC], *q = s->q[which];
    const char *what = which == Q_FTS_INSERT ? "add chunks to the full-text index"
                                             : "remove chunks from the full-text index";
    bool row;
    qr_status st;
    if (sqlite3_bind_int64(src, 1, id))
        return bind_fail(s, err);
    while (!(st = step_row(s, src, &row, err, what)) && row) {
        for (int i = 0; i < 4; i++) {
            int rc = i == 0 ? sqlite3_bind_int64(q, 1, sqlite3_column_int64(src, 0))
                            : sqlite3_bind_value(q, i + 1, sqlite3_column_value(src, i));
            if (rc) {
                st = bind_fail(s, err);
                break;
            }
        }
        if (st || (st = run(s, q, err, what)))
            break;
    }
    sqlite3_reset(src);
    return st;
}

/* Removes the chunks of document `id` with their FTS rows and vectors, and records them as
 * deleted at `counter`. */
static qr_status remove_chunks(store *s, int64_t id, int64_t counter, char *err)
{
    qr_status st = doc_stmt(s, Q_TOMBSTONE_DOC, id, counter, err, "record deleted chunks");
    if (!st)
        st = fts_doc(s, Q_FTS_DELETE, id, err);
    if (!st)
        st = doc_stmt(s, Q_VECS_DELETE_DOC, id, counter, err, "delete vectors");
    if (!st)
        st = doc_stmt(s, Q_CHUNKS_DELETE_DOC, id, counter, err, "delete chunks");
    return st;
}

/* Inserts the chunks of document `id` (whose row already holds `title`) with their vectors and
 * FTS rows. */
static qr_status insert_chunks(store *s, int64_t id, const char *title, const store_document *doc,
                               const store_chunk *chunks, size_t nchunks, const float *vectors, int dim,
                               int64_t counter, char *err)
{
    qr_status st = QR_OK;
    for (size_t i = 0; i < nchunks && !st; i++) {
        const store_chunk *c = &chunks[i];
        const char *headings = c->headings ? c->headings : "";
        sqlite3_stmt *q = s->q[Q_CHUNK_INSERT];
        if (sqlite3_bind_int64(q, 1, id) || sqlite3_bind_int64(q, 2, (int64_t)i) ||
            sqlite3_bind_int64(q, 3, (int64_t)c->start) || sqlite3_bind_int64(q, 4, (int64_t)c->end) ||
            bind_str(q, 5, headings) || bind_text(q, 6, doc->text + c->start, c->end - c->start) ||
            sqlite3_bind_int64(q, 7, counter))
            return bind_fail(s, err);
        if ((st = run(s, q, err, "insert a chunk")))
            break;
        int64_t chunk_id = sqlite3_last_insert_rowid(s->db);
        q = s->q[Q_VEC_INSERT];
        if (sqlite3_bind_int64(q, 1, chunk_id) ||
            sqlite3_bind_blob64(q, 2, vectors + i * (size_t)dim, (sqlite3_uint64)dim * sizeof(float),
                                SQLITE_STATIC))
            return bind_fail(s, err);
        if ((st = run(s, q, err, "insert a vector")))
            break;
        q = s->q[Q_FTS_INSERT];
        if (sqlite3_bind_int64(q, 1, chunk_id) || bind_str(q, 2, title) || bind_str(q, 3, headings) ||
            bind_text(q, 4, doc->text + c->start, c->end - c->start))
            return bind_fail(s, err);
        st = run(s, q, err, "add a chunk to the full-text index");
    }
    return st;
}

/* Inserts or updates the document row, stamping it with the write's counter; fts_rewritten
 * records that its FTS rows were rewritten under the same chunk ids (updates only). */
static qr_status write_doc_row(store *s, const doc_row *r, const char *doc_id, const put_input *in,
                               const char *hash, int64_t text_len, int64_t chunk_count, int64_t counter,
                               bool fts_rewritten, int64_t *id, char *err)
{
    sqlite3_stmt *q = s->q[r->found ? Q_DOC_UPDATE : Q_DOC_INSERT];
    if ((r->found ? sqlite3_bind_int64(q, 1, r->id) : bind_str(q, 1, doc_id)) || bind_str(q, 2, in->title) ||
        bind_str(q, 3, in->uri) || bind_str(q, 4, in->content_type) || bind_str(q, 5, in->metadata) ||
        bind_str(q, 6, hash) || sqlite3_bind_int64(q, 7, text_len) || sqlite3_bind_int64(q, 8, chunk_count) ||
        sqlite3_bind_int64(q, 9, qr_wall_ms()) || sqlite3_bind_int64(q, 10, counter) ||
        (r->found && sqlite3_bind_int(q, 11, fts_rewritten)))
        return bind_fail(s, err);
    qr_status st = run(s, q, err, r->found ? "update a document" : "insert a document");
    *id = r->found ? r->id : sqlite3_last_insert_rowid(s->db);
    return st;
}

/* The vector dimension the store records; refuses vectors before store_check_embedding. */
static qr_status check_store_dim(store *s, const char *doc_id, size_t nchunks, int dim, char *err)
{
    if (!nchunks)
        return QR_OK;
    int64_t stored = 0;
    qr_status st = meta_get_int(s, "embedding_dim", &stored, err);
    if (st)
        return st;
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
    put_input in = {0};
    doc_row r;
    int64_t counter = 0, id = 0;
    bool same_acl = false;
    qr_status st = check_put_input(s, doc, chunks, nchunks, vectors, dim, &in, err);
    if (st)
        goto out;
    if ((st = begin_write(s, err)) || (st = find_doc(s, doc->doc_id, &in, &r, err)))
        goto out;
    if (r.found && (st = acl_equal(s, r.id, in.acl, in.nacl, &same_acl, err)))
        goto out;
    if ((st = check_store_dim(s, doc->doc_id, nchunks, dim, err)))
        goto out;

    if (r.found && r.same_hash) {
        /* the content is what the store has: keep chunks, vectors and their ids */
        if (r.same_title && r.same_fields && same_acl) {
            *result = STORE_UNCHANGED;
            goto out; /* end_call rolls back: nothing was written */
        }
        if ((st = bump_counter(s, &counter, err)))
            goto out;
        if (!r.same_title && (st = fts_doc(s, Q_FTS_DELETE, r.id, err)))
            goto out;
        if ((st = write_doc_row(s, &r, doc->doc_id, &in, r.hash, r.text_len, r.chunk_count, counter,
                                !r.same_title, &id, err)))
            goto out;
        if (!r.same_title && (st = fts_doc(s, Q_FTS_INSERT, r.id, err)))
            goto out;
        if (!same_acl && (st = write_acl(s, r.id, in.acl, in.nacl, err)))
            goto out;
        if ((st = commit(s, err)))
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
    if ((st = bump_counter(s, &counter, err)))
        goto out;
    if (r.found && (st = remove_chunks(s, r.id, counter, err)))
        goto out;
    if ((st = write_doc_row(s, &r, doc->doc_id, &in, in.hash, (int64_t)doc->text_len, (int64_t)nchunks,
                            counter, false, &id, err)))
        goto out;
    if ((!r.found || !same_acl) && (st = write_acl(s, id, in.acl, in.nacl, err)))
        goto out;
    if ((st = insert_chunks(s, id, in.title, doc, chunks, nchunks, vectors, dim, counter, err)))
        goto out;
    if ((st = commit(s, err)))
        goto out;
    *result = r.found ? STORE_UPDATED : STORE_ADDED;
out:
    st = end_call(s, st, err);
    put_input_release(&in);
    return st;
}

qr_status store_get_hash(store *s, const char *doc_id, char hash[65], bool *found, char *err)
{
    if (!s || !hash || !found)
        return qr_fail(err, QR_EINVAL, "store_get_hash: NULL argument");
    hash[0] = '\0';
    *found = false;
    qr_status st = check_doc_id(doc_id, err);
    if (st)
        return st;
    sqlite3_stmt *q = s->q[Q_HASH_GET];
    bool row;
    if (bind_str(q, 1, doc_id)) {
        st = bind_fail(s, err);
        goto out;
    }
    if ((st = step_row(s, q, &row, err, "look up a content hash")) || !row)
        goto out;
    snprintf(hash, 65, "%s", col_str(q, 0));
    *found = true;
out:
    st = end_call(s, st, err);
    return st;
}

static qr_status not_found(const char *doc_id, char *err)
{
    return qr_fail(err, QR_ENOTFOUND, "no document '%.200s' in the store", doc_id);
}

qr_status store_delete(store *s, const char *doc_id, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_delete: NULL store");
    qr_status st = check_doc_id(doc_id, err);
    doc_row r;
    int64_t counter;
    if (st)
        return st;
    if ((st = begin_write(s, err)) || (st = find_doc(s, doc_id, NULL, &r, err)))
        goto out;
    if (!r.found) {
        st = not_found(doc_id, err);
        goto out;
    }
    if ((st = bump_counter(s, &counter, err)) || (st = remove_chunks(s, r.id, counter, err)) ||
        (st = doc_stmt(s, Q_ACL_DELETE_DOC, r.id, counter, err, "delete ACL rows")) ||
        (st = doc_stmt(s, Q_DOC_DELETE, r.id, counter, err, "delete a document")))
        goto out;
    st = commit(s, err);
out:
    st = end_call(s, st, err);
    return st;
}

qr_status store_set_acl(store *s, const char *doc_id, const char *const *acl, size_t nacl, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_set_acl: NULL store");
    const char **sorted = NULL;
    size_t nsorted = 0;
    doc_row r;
    bool same;
    int64_t counter;
    qr_status st = check_doc_id(doc_id, err);
    if (st || (st = normalise_acl(acl, nacl, &sorted, &nsorted, err)))
        goto out;
    if ((st = begin_write(s, err)) || (st = find_doc(s, doc_id, NULL, &r, err)))
        goto out;
    if (!r.found) {
        st = not_found(doc_id, err);
        goto out;
    }
    if ((st = acl_equal(s, r.id, sorted, nsorted, &same, err)) || same)
        goto out;
    if ((st = bump_counter(s, &counter, err)))
        goto out;
    sqlite3_stmt *q = s->q[Q_DOC_TOUCH];
    if (sqlite3_bind_int64(q, 1, r.id) || sqlite3_bind_int64(q, 2, qr_wall_ms()) ||
        sqlite3_bind_int64(q, 3, counter)) {
        st = bind_fail(s, err);
        goto out;
    }
    if ((st = run(s, q, err, "update a document")) || (st = write_acl(s, r.id, sorted, nsorted, err)))
        goto out;
    st = commit(s, err);
out:
    st = end_call(s, st, err);
    free(sorted);
    return st;
}

/* ---- embedding model, stats, generations ------------------------------------------------- */

qr_status store_check_embedding(store *s, const char *model, int dim, char *err)
{
    if (!s || !model)
        return qr_fail(err, QR_EINVAL, "store_check_embedding: NULL argument");
    qr_status st = check_field("embedding model name", model, STORE_MODEL_MAX, false, err);
    if (st)
        return st;
    if (dim <= 0 || dim > STORE_DIM_MAX)
        return qr_fail(err, QR_EINVAL, "invalid embedding dimension %d: expected 1..%d", dim, STORE_DIM_MAX);
    char stored[STORE_MODEL_MAX + 1];
    int64_t stored_dim = 0;
    if ((st = begin_write(s, err)) ||
        (st = meta_get_str(s, "embedding_model", stored, sizeof(stored), err)) ||
        (st = meta_get_int(s, "embedding_dim", &stored_dim, err)))
        goto out;
    if (!stored[0]) {
        if (!(st = meta_set_str(s, "embedding_model", model, err)) &&
            !(st = meta_set_int(s, "embedding_dim", dim, err)))
            st = commit(s, err);
    } else if (strcmp(stored, model) != 0 || stored_dim != dim) {
        st = qr_fail(err, QR_EINVAL,
                     "store '%s' holds vectors of embedding model '%s' (dimension %lld); refusing model '%s' "
                     "(dimension %d): use the same model, or ingest into a new data directory",
                     s->path, stored, (long long)stored_dim, model, dim);
    }
out:
    st = end_call(s, st, err);
    return st;
}

qr_status store_get_stats(store *s, store_stats *out, char *err)
{
    if (!s || !out)
        return qr_fail(err, QR_EINVAL, "store_get_stats: NULL argument");
    memset(out, 0, sizeof(*out));
    sqlite3_stmt *q = s->q[Q_STATS];
    bool row;
    int64_t dim = 0;
    qr_status st;
    if ((st = begin_read(s, err)) || (st = step_row(s, q, &row, err, "count documents")))
        goto out;
    if (row) {
        out->documents = sqlite3_column_int64(q, 0);
        out->chunks = sqlite3_column_int64(q, 1);
        out->text_bytes = sqlite3_column_int64(q, 2);
    }
    sqlite3_reset(q);
    if ((st = meta_get_str(s, "embedding_model", out->embedding_model, sizeof(out->embedding_model), err)) ||
        (st = meta_get_int(s, "embedding_dim", &dim, err)) ||
        (st = meta_get_int(s, "change_counter", &out->change_counter, err)) ||
        (st = meta_get_int(s, "index_generation", &out->index_generation, err)))
        goto out;
    out->embedding_dim = (int)dim;
    st = commit(s, err);
out:
    st = end_call(s, st, err);
    return st;
}

qr_status store_set_index_generation(store *s, int64_t generation, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_set_index_generation: NULL store");
    int64_t current = 0;
    qr_status st;
    if ((st = begin_write(s, err)) || (st = meta_get_int(s, "index_generation", &current, err)))
        goto out;
    if (generation < current) {
        st = qr_fail(err, QR_EINVAL, "index generation %lld is older than the recorded %lld",
                     (long long)generation, (long long)current);
        goto out;
    }
    if (!(st = meta_set_int(s, "index_generation", generation, err)))
        st = commit(s, err);
out:
    st = end_call(s, st, err);
    return st;
}

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
    const char *v = col_str(q, i);
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
    if (bind_str(dq, 1, doc_id))
        return bind_fail(s, err);
    if ((st = step_row(s, dq, &row, err, "look up a document")))
        return st;
    if (!row)
        return not_found(doc_id, err);
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
    while (!(st = step_row(s, q, &row, err, "read an ACL")) && row) {
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
    while (!(st = step_row(s, q, &row, err, "read chunks")) && row) {
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
    qr_status st = check_doc_id(doc_id, err);
    if (st)
        return st;
    store_doc_info *d = calloc(1, sizeof(*d));
    if (!d)
        return qr_fail(err, QR_ENOMEM, "out of memory reading document '%.200s'", doc_id);
    qr_arena_init(&d->arena_, (size_t)1 << 40);
    if (!(st = begin_read(s, err)) && !(st = read_doc(s, doc_id, with_chunks, d, err)))
        st = commit(s, err);
    st = end_call(s, st, err);
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
    qr_status st = after && *after ? check_doc_id(after, err) : QR_OK;
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
        st = sql_fail(s, rc, err, "prepare the document listing");
        goto out;
    }
    if (bind_str(q, 1, after ? after : "") || sqlite3_bind_int64(q, 2, (sqlite3_int64)limit + 1)) {
        st = bind_fail(s, err);
        goto out;
    }
    if ((st = begin_read(s, err)))
        goto out;
    size_t seen = 0;
    bool row;
    while (!(st = step_row(s, q, &row, err, "list documents")) && row) {
        if (seen++ == limit) {
            *more = true;
            break;
        }
        store_doc_summary d = {
            .doc_id = col_str(q, 0),
            .title = col_str(q, 1),
            .uri = col_str(q, 2),
            .content_type = col_str(q, 3),
            .version = sqlite3_column_int64(q, 4),
            .created_ms = sqlite3_column_int64(q, 5),
            .updated_ms = sqlite3_column_int64(q, 6),
            .text_len = (size_t)sqlite3_column_int64(q, 7),
            .chunk_count = (size_t)sqlite3_column_int64(q, 8),
            .acl_json = col_str(q, 9),
        };
        if ((st = fn(ctx, &d, err)))
            break;
    }
    sqlite3_finalize(q);
    q = NULL;
    if (!st)
        st = commit(s, err);
out:
    sqlite3_finalize(q);
    return end_call(s, st, err);
}

/* Copies a vector BLOB into out (column data need not be aligned for float). */
static qr_status blob_vector(store *s, sqlite3_stmt *q, int col, int64_t chunk_id, float *out, int dim,
                             char *err)
{
    const void *blob = sqlite3_column_blob(q, col);
    size_t n = (size_t)sqlite3_column_bytes(q, col);
    if (n != (size_t)dim * sizeof(float) || !blob)
        return qr_fail(err, QR_EIO,
                       "store '%s' is inconsistent: vector of chunk %lld has %zu bytes, expected %zu",
                       s->path, (long long)chunk_id, n, (size_t)dim * sizeof(float));
    memcpy(out, blob, n);
    return QR_OK;
}

qr_status store_get_vector(store *s, int64_t chunk_id, float *out, int dim, char *err)
{
    if (!s || !out)
        return qr_fail(err, QR_EINVAL, "store_get_vector: NULL argument");
    if (dim <= 0 || dim > STORE_DIM_MAX)
        return qr_fail(err, QR_EINVAL, "invalid vector dimension %d", dim);
    int64_t stored = 0;
    bool row;
    sqlite3_stmt *q = s->q[Q_VEC_GET];
    qr_status st;
    if ((st = begin_read(s, err)) || (st = meta_get_int(s, "embedding_dim", &stored, err)))
        goto out;
    if (stored != dim) {
        st =
            qr_fail(err, QR_EINVAL, "vector dimension %d asked, the store's is %lld", dim, (long long)stored);
        goto out;
    }
    if (sqlite3_bind_int64(q, 1, chunk_id)) {
        st = bind_fail(s, err);
        goto out;
    }
    if ((st = step_row(s, q, &row, err, "read a vector")))
        goto out;
    if (!row) {
        st = qr_fail(err, QR_ENOTFOUND, "no chunk %lld in the store", (long long)chunk_id);
        goto out;
    }
    if (!(st = blob_vector(s, q, 0, chunk_id, out, dim, err)))
        st = commit(s, err);
out:
    st = end_call(s, st, err);
    return st;
}

/* ---- change log and vector iteration ----------------------------------------------------- */

/* Walks q's rows (chunk id, counter[, vector]) calling fn. */
static qr_status walk(store *s, sqlite3_stmt *q, bool deleted, int dim, float *vec, store_change_fn fn,
                      void *ctx, char *err)
{
    bool row;
    qr_status st;
    while (!(st = step_row(s, q, &row, err, "read the change log")) && row) {
        store_change c = {.chunk_id = sqlite3_column_int64(q, 0),
                          .counter = sqlite3_column_int64(q, 1),
                          .deleted = deleted,
                          .vector = deleted ? NULL : vec,
                          .dim = deleted ? 0 : dim};
        if (!deleted && (st = blob_vector(s, q, 2, c.chunk_id, vec, dim, err)))
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
    if ((st = begin_read(s, err)) || (st = meta_get_int(s, "change_counter", counter, err)) ||
        (st = meta_get_int(s, "embedding_dim", &d, err)))
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
        st = bind_fail(s, err);
        goto out;
    }
    if ((st = walk(s, s->q[Q_CHANGED_DELETED], true, dim, vec, fn, ctx, err)) ||
        (st = walk(s, s->q[Q_CHANGED_ADDED], false, dim, vec, fn, ctx, err)) || (st = commit(s, err)))
        goto out;
    *counter = now;
out:
    st = end_call(s, st, err);
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
    if (st || (st = walk(s, s->q[Q_VECS_ALL], false, dim, vec, fn, ctx, err)) || (st = commit(s, err)))
        goto out;
    *counter = now;
out:
    st = end_call(s, st, err);
    free(vec);
    return st;
}

qr_status store_prune_tombstones(store *s, int64_t counter, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_prune_tombstones: NULL store");
    sqlite3_stmt *q = s->q[Q_PRUNE];
    int64_t pruned = 0;
    qr_status st = begin_write(s, err);
    if (st)
        goto out;
    s->wrote = true;
    if ((st = sqlite3_bind_int64(q, 1, counter) ? bind_fail(s, err) : run(s, q, err, "prune tombstones")))
        goto out;
    /* readers behind this counter can no longer learn every deletion (store_pruned_through) */
    if ((st = meta_get_int(s, "tombstones_pruned", &pruned, err)) ||
        (counter > pruned && (st = meta_set_int(s, "tombstones_pruned", counter, err))))
        goto out;
    st = commit(s, err);
out:
    return end_call(s, st, err);
}

/* ---- feeds for the pruned BM25 index ----------------------------------------------------- */

/* Reads one counter from the meta table in its own snapshot (or the open batch's). */
static qr_status read_meta_counter(store *s, const char *key, int64_t *out, char *err)
{
    int64_t v = 0;
    qr_status st;
    if (!(st = begin_read(s, err)) && !(st = meta_get_int(s, key, &v, err)) && !(st = commit(s, err)))
        *out = v;
    return end_call(s, st, err);
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
    while (!(st = step_row(s, q, &row, err, "read chunk texts")) && row) {
        store_text t = {.chunk_id = sqlite3_column_int64(q, 0),
                        .doc = -1,
                        .counter = sqlite3_column_int64(q, 1),
                        .deleted = deleted};
        if (!deleted) {
            t.doc = sqlite3_column_int64(q, 2);
            for (int i = 0; i < 3; i++) {
                t.col[i] = col_str(q, 3 + i); /* text before bytes: the length is the UTF-8 one */
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
    if ((st = begin_read(s, err)) || (st = meta_get_int(s, "change_counter", &now, err)))
        goto out;
    if (sqlite3_bind_int64(s->q[Q_CHANGED_DELETED], 1, since) ||
        sqlite3_bind_int64(s->q[Q_TEXT_ADDED], 1, since)) {
        st = bind_fail(s, err);
        goto out;
    }
    if ((st = walk_text(s, s->q[Q_CHANGED_DELETED], true, fn, ctx, err)) ||
        (st = walk_text(s, s->q[Q_TEXT_ADDED], false, fn, ctx, err)) || (st = commit(s, err)))
        goto out;
    *counter = now;
out:
    return end_call(s, st, err);
}

qr_status store_each_text(store *s, store_text_fn fn, void *ctx, int64_t *counter, char *err)
{
    if (!s || !fn || !counter)
        return qr_fail(err, QR_EINVAL, "store_each_text: NULL argument");
    int64_t now = 0;
    qr_status st;
    if ((st = begin_read(s, err)) || (st = meta_get_int(s, "change_counter", &now, err)) ||
        (st = walk_text(s, s->q[Q_TEXT_ALL], false, fn, ctx, err)) || (st = commit(s, err)))
        goto out;
    *counter = now;
out:
    return end_call(s, st, err);
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
    const char *p = qr_arena_strndup(&a->arena, col_str(q, col), (size_t)sqlite3_column_bytes(q, col));
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
    if ((st = begin_read(s, err)) || (st = meta_get_int(s, "change_counter", &now, err)))
        goto out;
    if (sqlite3_bind_int64(q, 1, since)) {
        st = bind_fail(s, err);
        goto out;
    }
    while (!(st = step_row(s, q, &row, err, "read changed documents")) && row) {
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
    if ((st = commit(s, err)))
        goto out;
    *counter = now;
out:
    st = end_call(s, st, err);
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
    if ((st = begin_read(s, err)) || (st = meta_get_int(s, "change_counter", &now, err)))
        goto out;
    if (bind_str(q, 1, principal)) {
        st = bind_fail(s, err);
        goto out;
    }
    while (!(st = step_row(s, q, &row, err, "read a principal's documents")) && row) {
        if ((st = fn(ctx, sqlite3_column_int64(q, 0), err)))
            goto out;
    }
    if (st)
        goto out;
    sqlite3_reset(q);
    if ((st = commit(s, err)))
        goto out;
    *counter = now;
out:
    return end_call(s, st, err);
}

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
        if ((st = check_doc_id(f->doc_ids[i], err)))
            return st;
    const char *fields[] = {f->uri_prefix, f->content_type};
    const char *names[] = {"URI prefix", "content type"};
    for (int i = 0; i < 2; i++)
        if (fields[i] && (st = check_field(names[i], fields[i], STORE_FIELD_MAX, true, err)))
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
    if (fs->acl)
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
    return sql_fail(s, rc, err, what);
}

/* Prepares one of the search statements (not cached: its text depends on the filter). */
static qr_status prepare_search(store *s, const qr_buf *sql, sqlite3_stmt **q, char *err)
{
    int rc = sqlite3_prepare_v2(s->db, qr_buf_str(sql), (int)qr_buf_len(sql), q, NULL);
    if (rc != SQLITE_OK) {
        qr_status st = qr_fail(err, QR_EINTERNAL, "cannot prepare a search in store '%s': %s", s->path,
                               sqlite3_errmsg(s->db));
        sqlite3_finalize(*q);
        *q = NULL;
        return st;
    }
    return QR_OK;
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
    qr_status st = filter_prepare(f, &fs, err);
    if (st || !limit || !*match)
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
        bind_named_int(q, ":limit", limit > INT64_MAX ? INT64_MAX : (int64_t)limit)) {
        st = bind_fail(s, err);
        goto out;
    }
    if ((st = begin_read(s, err)))
        goto out;
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
    st = commit(s, err);
out:
    sqlite3_finalize(q);
    qr_buf_release(&sql);
    filter_sql_release(&fs);
    if (st)
        *n = 0;
    return end_call(s, st, err);
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
        st = bind_fail(s, err);
        goto out;
    }
    if ((st = begin_read(s, err)))
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
    st = commit(s, err);
out:
    sqlite3_finalize(q);
    qr_buf_release(&sql);
    filter_sql_release(&fs);
    if (st) {
        *n = 0;
        *more = false;
    }
    return end_call(s, st, err);
}

struct store_permit {
    store *s;
    sqlite3_stmt *q;
    qr_status st; /* the first failure of a test */
    char err[QR_ERR_LEN];
};

qr_status store_permit_open(store *s, const store_filter *f, store_permit **out, char *err)
{
    if (!s || !out)
        return qr_fail(err, QR_EINVAL, "store_permit_open: NULL argument");
    *out = NULL;
    filter_sql fs;
    qr_buf sql;
    qr_buf_init(&sql, 1 << 16);
    store_permit *p = NULL;
    qr_status st = filter_prepare(f, &fs, err);
    if (st)
        goto out;
    if (!(p = calloc(1, sizeof(*p)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for a permission test");
        goto out;
    }
    p->s = s;
    if (qr_buf_puts(&sql, "SELECT 1 FROM chunks c") ||
        (filter_needs_doc(&fs, FILTER_ROW) && qr_buf_puts(&sql, " JOIN documents d ON d.id = c.doc")) ||
        qr_buf_puts(&sql, " WHERE c.id = :id") || filter_where(&fs, FILTER_ROW, &sql)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for a permission test");
        goto out;
    }
    if ((st = prepare_search(s, &sql, &p->q, err)))
        goto out;
    if (filter_bind(&fs, p->q))
        st = bind_fail(s, err);
out:
    qr_buf_release(&sql);
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
    sqlite3_finalize(p->q);
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
        st = sql_fail(s, rc, err, "prepare a chunk lookup");
        goto out;
    }
    if ((st = begin_read(s, err)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        bool row;
        if (sqlite3_bind_int64(q, 1, ids[i])) {
            st = bind_fail(s, err);
            goto out;
        }
        if ((st = step_row(s, q, &row, err, "look up a chunk")))
            goto out;
        docs[i] = row ? sqlite3_column_int64(q, 0) : -1;
        sqlite3_reset(q);
    }
    st = commit(s, err);
out:
    sqlite3_finalize(q);
    return end_call(s, st, err);
}

qr_status store_read_chunks(store *s, const int64_t *ids, size_t n, const store_filter *f,
                            store_chunk_view_fn fn, void *ctx, char *err)
{
    if (!s || !fn || (n && !ids))
        return qr_fail(err, QR_EINVAL, "store_read_chunks: NULL argument");
    filter_sql fs;
    qr_buf sql;
    qr_buf_init(&sql, 1 << 16);
    sqlite3_stmt *q = NULL;
    qr_status st = filter_prepare(f, &fs, err);
    if (st)
        goto out;
    if (qr_buf_puts(&sql,
                    "SELECT c.id, c.doc, d.doc_id, d.title, d.uri, d.content_type, c.headings, c.body,"
                    " c.start, c.\"end\" FROM chunks c JOIN documents d ON d.id = c.doc WHERE c.id = :id") ||
        filter_where(&fs, FILTER_ROW, &sql)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for a search");
        goto out;
    }
    if ((st = prepare_search(s, &sql, &q, err)))
        goto out;
    if (filter_bind(&fs, q)) {
        st = bind_fail(s, err);
        goto out;
    }
    if ((st = begin_read(s, err)))
        goto out;
    int id_param = sqlite3_bind_parameter_index(q, ":id");
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
            .doc_id = col_str(q, 2),
            .title = col_str(q, 3),
            .uri = col_str(q, 4),
            .content_type = col_str(q, 5),
            .headings = col_str(q, 6),
            .text = col_str(q, 7),
            .text_len = (size_t)sqlite3_column_bytes(q, 7),
            .start = (size_t)sqlite3_column_int64(q, 8),
            .end = (size_t)sqlite3_column_int64(q, 9),
        };
        st = fn(ctx, &v, err);
        sqlite3_reset(q);
        if (st)
            goto out;
    }
    st = commit(s, err);
out:
    sqlite3_finalize(q);
    qr_buf_release(&sql);
    filter_sql_release(&fs);
    return end_call(s, st, err);
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
        return qr_fail(err, sql_status(rc), "cannot tokenize text in store '%s' (FTS5 error %d)", s->path,
                       rc);
    return QR_OK;
}

/* ---- verification ------------------------------------------------------------------------ */

/* Consistency rules: each query answers (number of violations, an example). */
static const struct {
    const char *sql;
    const char *what;
} store_checks[] = {
    {"SELECT count(*), min(c.id) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = "
     "c.doc)",
     "chunks without their document (first chunk id %s)"},
    {"SELECT count(*), min(c.id) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM vectors v WHERE v.chunk_id = "
     "c.id)",
     "chunks without a vector (first chunk id %s)"},
    {"SELECT count(*), min(v.chunk_id) FROM vectors v WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = "
     "v.chunk_id)",
     "vectors without their chunk (first chunk id %s)"},
    {"SELECT count(*), min(v.chunk_id) FROM vectors v WHERE length(v.vec) != 4 * coalesce((SELECT value FROM "
     "meta "
     "WHERE key = 'embedding_dim'), 0)",
     "vectors of the wrong size (first chunk id %s)"},
    {"SELECT count(*), min(c.id) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM chunks_fts_docsize f WHERE "
     "f.id = "
     "c.id)",
     "chunks missing from the full-text index (first chunk id %s)"},
    {"SELECT count(*), min(f.id) FROM chunks_fts_docsize f WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE "
     "c.id = "
     "f.id)",
     "full-text rows without their chunk (first id %s)"},
    {"SELECT count(*), min(d.doc_id) FROM documents d WHERE d.chunk_count != (SELECT count(*) FROM chunks c "
     "WHERE "
     "c.doc = d.id)",
     "documents whose chunk count is wrong (first '%s')"},
    {"SELECT count(*), min(a.doc) FROM acl a WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = a.doc)",
     "ACL rows without their document (first document key %s)"},
    {"SELECT count(*), min(t.chunk_id) FROM deleted_chunks t WHERE EXISTS (SELECT 1 FROM chunks c WHERE c.id "
     "= "
     "t.chunk_id)",
     "live chunks recorded as deleted (first chunk id %s)"},
    {"SELECT count(*), NULL FROM (SELECT max(coalesce((SELECT max(added) FROM chunks), 0),"
     " coalesce((SELECT max(counter) FROM deleted_chunks), 0)) AS m) WHERE m > (SELECT value FROM meta WHERE "
     "key = "
     "'change_counter')",
     "a change counter behind its changes%s"},
};

/* Runs a query whose first row's first column must be "ok" (integrity_check). */
static qr_status expect_ok(store *s, const char *sql, char *err, const char *what)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    qr_status st = QR_OK;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        st = sql_fail(s, rc, err, what);
    else if (rc == SQLITE_ROW && strcmp(col_str(q, 0), "ok") != 0)
        st = qr_fail(err, QR_EIO, "store '%s' is inconsistent: %s: %s", s->path, what, col_str(q, 0));
    sqlite3_finalize(q);
    return st;
}

qr_status store_verify(store *s, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_verify: NULL store");
    sqlite3_stmt *q = NULL;
    /* the FTS5 check is an INSERT: take the write lock so all checks see one state */
    qr_status st = begin_write(s, err);
    if (st || (st = expect_ok(s, "PRAGMA integrity_check", err, "integrity_check")))
        goto out;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA foreign_key_check", -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        st = qr_fail(err, QR_EIO, "store '%s' is inconsistent: table %s has a row whose parent is missing",
                     s->path, col_str(q, 0));
        goto out;
    }
    if (rc != SQLITE_DONE) {
        st = sql_fail(s, rc, err, "check foreign keys");
        goto out;
    }
    sqlite3_finalize(q);
    q = NULL;
    for (size_t i = 0; i < sizeof(store_checks) / sizeof(store_checks[0]); i++) {
        rc = sqlite3_prepare_v2(s->db, store_checks[i].sql, -1, &q, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(q);
        if (rc != SQLITE_ROW) {
            st = sql_fail(s, rc, err, "check consistency");
            goto out;
        }
        if (sqlite3_column_int64(q, 0) > 0) {
            char what[256];
            snprintf(what, sizeof(what), store_checks[i].what, col_str(q, 1));
            st = qr_fail(err, QR_EIO, "store '%s' is inconsistent: %lld %s", s->path,
                         (long long)sqlite3_column_int64(q, 0), what);
            goto out;
        }
        sqlite3_finalize(q);
        q = NULL;
    }
    /* rank 1: compare the index with the content it was built from, not only its own structure */
    rc = sqlite3_exec(s->db, "INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)", NULL,
                      NULL, NULL);
    if (rc != SQLITE_OK) {
        if ((rc & 0xff) == SQLITE_CORRUPT)
            st = qr_fail(err, QR_EIO,
                         "store '%s' is inconsistent: the full-text index does not match the chunks (%s)",
                         s->path, sqlite3_errmsg(s->db));
        else
            st = sql_fail(s, rc, err, "check the full-text index");
    }
out:
    sqlite3_finalize(q);
    st = end_call(s, st, err);
    return st;
}
