/*
 * The document store: documents, chunks and ACL rows in one SQLite database (<dir>/quarry.db), the
 * chunk vectors in a file beside it (<dir>/quarry.vec, whose rules store_vec.c states), the FTS5
 * index of the chunks in a database of its own (<dir>/quarry.fts, store_fts.c), and the change
 * log the indexes follow.
 *
 * Consistency rests on three choices. Every write is one IMMEDIATE transaction (the write lock
 * is taken up front, so two writers never deadlock upgrading a read lock), and the rows of a
 * document -- its documents row, chunk rows, ACL rows, and the values its FTS rows were indexed
 * with when they are to go -- are written and removed together inside it (its vector rows are
 * written and synced before that transaction commits). The database
 * runs in WAL mode with synchronous=FULL: WAL alone keeps the file consistent across a killed process or a
 * power cut, and FULL syncs the WAL at every commit, so a commit that returned also survives power loss.
 * synchronous=NORMAL keeps the same guarantees against a killed process (the WAL frames are in the OS before
 * COMMIT returns) but could lose the last commits on power loss, and then hand out again chunk ids and change
 * counters that a vector index saved to its own files had already seen (a bulk load, store_bulk_begin, runs
 * under NORMAL and ends with a synced commit that makes all of it durable at once). Foreign keys are on, as a
 * second line of defence behind the explicit deletes. A batch (store_batch_begin) only widens the transaction
 * to several documents: each is still written whole inside it, and a failure half-way through a write rolls
 * the whole batch back.
 *
 * The full-text index follows the change counter rather than sharing the documents' transactions,
 * so that a bulk load indexes on a second core (SQLite has one writer per database file): every
 * public call that committed changes to indexed text brings it up to date before it returns, and
 * bulk mode has a thread for it. store_fts.c says how it stays exact.
 *
 * All SQL uses bound parameters; values are never formatted into SQL. sqlite3 messages are
 * translated into quarry statuses in one place (store_sql_fail).
 *
 * This file has the schema, the prepared statements, the transaction and error helpers every
 * store file uses (store_int.h), opening, batches and verification. The rest is one idea per
 * file: store_write.c the writes, store_read.c reading documents back, store_feed.c the change
 * log and the feeds the indexes follow, store_query.c the search queries and the tokenizer.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "index/backup.h"
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
    /* 3: background jobs (store_jobs.c), so that a restart resumes them. staged is the job's
     * upload manifest (JSON text, opaque here); each document's result is a row of job_results,
     * written in the transaction that moves the job's counts. No change counter: jobs are not
     * documents, and no index follows them. */
    "CREATE TABLE jobs("
    "  id TEXT PRIMARY KEY,"
    "  kind TEXT NOT NULL, state TEXT NOT NULL, user TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL DEFAULT 0,"
    "  finished_ms INTEGER NOT NULL DEFAULT 0,"
    "  docs INTEGER NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0,"
    "  failed INTEGER NOT NULL DEFAULT 0, chunks INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT NOT NULL DEFAULT '', staged TEXT NOT NULL DEFAULT '[]') WITHOUT ROWID;"
    "CREATE INDEX jobs_created ON jobs(created_ms, id);"
    "CREATE INDEX jobs_finished ON jobs(finished_ms);"
    "CREATE TABLE job_results("
    "  job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  ordinal INTEGER NOT NULL, result TEXT NOT NULL,"
    "  PRIMARY KEY (job, ordinal)) WITHOUT ROWID;",
    /* 4: the vectors move out of the database into the vectors file (store_vec.c):
     * vectors_to_file copies them first, inside the migration's transaction */
    "DROP TABLE vectors;",
    /* 5: the full-text index moves out into a database of its own (<dir>/quarry.fts, store_fts.c),
     * written by a follower of the change counter so that a bulk load indexes on a second core.
     * Its table there is contentless, so FTS5 must be given the exact values it indexed to remove
     * a row: the writes record them here when chunks go or a title changes, with the counter at
     * which the removed version was written (since) and the counter of the change (counter); the
     * follower applies them and they are pruned once it is durably past them. The old table's
     * rows are not copied: the follower indexes every chunk again from counter 0. */
    "DROP TABLE chunks_fts;"
    "DROP VIEW chunks_fts_source;"
    "CREATE TABLE fts_gone("
    "  chunk_id INTEGER NOT NULL, since INTEGER NOT NULL, counter INTEGER NOT NULL,"
    "  title TEXT NOT NULL, headings TEXT NOT NULL, body TEXT NOT NULL);"
    "CREATE INDEX fts_gone_counter ON fts_gone(counter);",
};
#define MIGRATION_VECTORS_OUT 3 /* the migration from version 3 to 4 */
#define STORE_SCHEMA_VERSION  ((int)(sizeof(store_migrations) / sizeof(store_migrations[0])))

/* ---- prepared statements ----------------------------------------------------------------- */

static const char *const store_sql[Q_COUNT] = {
    [Q_BEGIN_READ] = "BEGIN",
    [Q_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [Q_META_SET] = "INSERT INTO meta(key, value) VALUES (?1, ?2)"
                   " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [Q_COUNTER_BUMP] = "UPDATE meta SET value = value + 1 WHERE key = 'change_counter' RETURNING value",
    [Q_JSON_CHECK] = STORE_JSON_CHECK_SQL,
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
    [Q_CHUNK_EXISTS] = "SELECT 1 FROM chunks WHERE id = ?1",
    [Q_CHUNK_RANGE_DOC] = "SELECT min(id), max(id) FROM chunks WHERE doc = ?1",
    /* the live neighbours of a deleted range: the rows between them are free */
    [Q_CHUNK_BELOW] = "SELECT max(id) FROM chunks WHERE id < ?1",
    [Q_CHUNK_ABOVE] = "SELECT min(id) FROM chunks WHERE id > ?1",
    [Q_CHUNK_SEQ] = "SELECT seq FROM sqlite_sequence WHERE name = 'chunks'",
    /* the FTS rows of a document's chunks as they were indexed (store_fts.c), before its chunks
     * or title change */
    [Q_FTS_GONE_DOC] = "INSERT INTO fts_gone(chunk_id, since, counter, title, headings, body)"
                       " SELECT c.id, max(c.added, d.fts_changed), ?2, d.title, c.headings, c.body"
                       " FROM chunks c JOIN documents d ON d.id = c.doc WHERE c.doc = ?1",
    [Q_TOMBSTONE_DOC] =
        "INSERT INTO deleted_chunks(chunk_id, counter) SELECT id, ?2 FROM chunks WHERE doc = ?1",
    [Q_ACL_LIST] = "SELECT principal FROM acl WHERE doc = ?1 ORDER BY principal",
    [Q_ACL_INSERT] = "INSERT OR IGNORE INTO acl(principal, doc) VALUES (?2, ?1)",
    [Q_ACL_DELETE_DOC] = "DELETE FROM acl WHERE doc = ?1",
    [Q_STATS] = "SELECT count(*), coalesce(sum(chunk_count), 0), coalesce(sum(text_len), 0) FROM documents",
    [Q_CHANGED_DELETED] = "SELECT chunk_id, counter FROM deleted_chunks WHERE counter > ?1 ORDER BY chunk_id",
    [Q_CHANGED_ADDED] = "SELECT id, added FROM chunks WHERE added > ?1 ORDER BY id",
    [Q_VECS_ALL] = "SELECT id, added FROM chunks ORDER BY id",
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
    /* a follower's store (store_follow.c) keeps the keys and chunk ids its system of record gave */
    [Q_FOLLOW_DOC_BY_KEY] = "SELECT doc_id FROM documents WHERE id = ?1",
    [Q_FOLLOW_DOC_INSERT] =
        "INSERT INTO documents(id, doc_id, title, uri, content_type, metadata, content_hash,"
        " text_len, chunk_count, version, created_ms, updated_ms, changed)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?10, ?11)",
    [Q_FOLLOW_CHUNK_IDS] = "SELECT id FROM chunks WHERE doc = ?1 ORDER BY ordinal",
    [Q_FOLLOW_CHUNK_DOC] = "SELECT doc FROM chunks WHERE id = ?1",
    [Q_FOLLOW_CHUNK_INSERT] = "INSERT INTO chunks(id, doc, ordinal, start, \"end\", headings, body, added)"
                              " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [Q_FOLLOW_TOMBSTONED] = "SELECT 1 FROM deleted_chunks WHERE chunk_id = ?1",
};

/* ---- SQLite errors, translated once ------------------------------------------------------ */

qr_status store_sql_status(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return QR_ETIMEOUT;
    case SQLITE_NOMEM: return QR_ENOMEM;
    case SQLITE_TOOBIG: return QR_ELIMIT;
    case SQLITE_FULL: return QR_ENOSPC;
    case SQLITE_IOERR:
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
qr_status store_sql_fail(store *s, int rc, char *err, const char *what)
{
    const char *why = sqlite3_errmsg(s->db);
    /* the progress handler stopped the statement: the token says why */
    qr_status stopped = (rc & 0xff) == SQLITE_INTERRUPT ? qr_cancel_check(s->cancel, err) : QR_OK;
    if (stopped)
        return stopped;
    if ((rc & 0xff) == SQLITE_BUSY)
        return qr_fail(err, QR_ETIMEOUT,
                       "cannot %s in store '%s': another process held it locked for %d ms (%s)", what,
                       s->path, STORE_BUSY_TIMEOUT_MS, why);
    /* SQLite says SQLITE_FULL for ENOSPC only; a quota or a file size limit (EDQUOT, EFBIG) is a
     * write error whose errno is usually gone by now, so the file system is asked */
    if ((rc & 0xff) == SQLITE_FULL ||
        ((rc == SQLITE_IOERR_WRITE || rc == SQLITE_IOERR_TRUNCATE || rc == SQLITE_IOERR_SHMSIZE) &&
         (qr_errno_status(sqlite3_system_errno(s->db)) == QR_ENOSPC || qr_fs_full(s->path))))
        return qr_fail(err, QR_ENOSPC,
                       "cannot %s in store '%s': the data directory's file system is full or a file "
                       "size limit was reached (%s)",
                       what, s->path, why);
    return qr_fail(err, store_sql_status(rc), "cannot %s in store '%s': %s", what, s->path, why);
}

/* Steps q to completion (rows are skipped) and resets it. */
qr_status store_run(store *s, sqlite3_stmt *q, char *err, const char *what)
{
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW)
        ;
    qr_status st = rc == SQLITE_DONE ? QR_OK : store_sql_fail(s, rc, err, what);
    sqlite3_reset(q);
    return st;
}

/* Steps a query once: QR_OK and *has_row, or a failure (the statement is then reset). */
qr_status store_step_row(store *s, sqlite3_stmt *q, bool *has_row, char *err, const char *what)
{
    int rc = sqlite3_step(q);
    *has_row = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        return QR_OK;
    qr_status st = store_sql_fail(s, rc, err, what);
    sqlite3_reset(q);
    return st;
}

/* Binds with SQLITE_STATIC: every caller keeps the value alive until the statement is reset. */
int store_bind_text(sqlite3_stmt *q, int i, const char *v, size_t n)
{
    return sqlite3_bind_text64(q, i, v, n, SQLITE_STATIC, SQLITE_UTF8);
}

int store_bind_str(sqlite3_stmt *q, int i, const char *v)
{
    return store_bind_text(q, i, v, strlen(v));
}

qr_status store_bind_fail(store *s, char *err)
{
    return qr_fail(err, QR_EINTERNAL, "cannot bind a value in store '%s': %s", s->path,
                   sqlite3_errmsg(s->db));
}

const char *store_col_str(sqlite3_stmt *q, int i)
{
    const char *v = (const char *)sqlite3_column_text(q, i);
    return v ? v : "";
}

static void rollback(store *s)
{
    store_fts_txn_end(s, false);
    s->fts_changed = false;
    if (!sqlite3_get_autocommit(s->db)) {
        sqlite3_step(s->q[Q_ROLLBACK]);
        sqlite3_reset(s->q[Q_ROLLBACK]);
    }
    store_vec_rolled_back(s);
}

/* COMMIT of the open transaction: the vector rows it wrote are synced first, so that no commit
 * reaches the disk before its rows; after it, the rows its deletes freed may go once durable
 * (every commit outside bulk mode is synced). */
static qr_status commit(store *s, char *err, const char *what)
{
    qr_status st = store_vec_sync(s, err);
    if (!st)
        st = store_run(s, s->q[Q_COMMIT], err, what);
    if (!st) {
        store_vec_committed(s, !s->bulk);
        if (s->fts_bulk)
            store_fts_txn_end(s, true); /* handed to bulk mode's thread */
        else
            s->fts_due |= s->fts_changed;
        s->fts_changed = false;
    }
    return st;
}

/* Ends a public call and returns st. Every statement is reset (a statement left mid-query would
 * hold a read snapshot open and stall WAL checkpoints) and bindings are dropped (they point at
 * the caller's memory). Outside a batch, a transaction still open because of an error, or
 * because nothing needed writing, is rolled back. Inside a batch, a call that failed after it
 * began writing, or whose failure made SQLite end the transaction, rolls the whole batch back:
 * its earlier writes cannot be separated from the half-done one. */
qr_status store_end_call(store *s, qr_status st, char *err)
{
    for (int i = 0; i < Q_COUNT; i++) {
        if (s->q[i]) {
            sqlite3_reset(s->q[i]);
            sqlite3_clear_bindings(s->q[i]);
        }
    }
    bool wrote = s->wrote;
    s->wrote = false; /* a later call that fails before store_begin_write has written nothing */
    if (s->batch != BATCH_OPEN) {
        rollback(s);
        store_fts_due(s);
        return st;
    }
    if (st && (wrote || sqlite3_get_autocommit(s->db))) {
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
qr_status store_begin_write(store *s, char *err)
{
    s->wrote = false;
    if (s->batch == BATCH_OPEN)
        return QR_OK;
    if (s->batch == BATCH_FAILED)
        return qr_fail(err, s->batch_st, "the open batch was rolled back by an earlier failure: %s",
                       s->batch_err);
    return store_run(s, s->q[Q_BEGIN_WRITE], err, "start a write transaction");
}

qr_status store_begin_read(store *s, char *err)
{
    if (s->batch == BATCH_OPEN)
        return QR_OK;
    return store_run(s, s->q[Q_BEGIN_READ], err, "start a read transaction");
}

/* Commits the call's transaction; inside an open batch, store_batch_commit does. */
qr_status store_commit(store *s, char *err)
{
    if (s->batch == BATCH_OPEN)
        return QR_OK;
    return commit(s, err, "commit");
}

qr_status store_chunk_seq(store *s, int64_t *seq, char *err)
{
    sqlite3_stmt *q = s->q[Q_CHUNK_SEQ];
    bool row;
    qr_status st = store_step_row(s, q, &row, err, "read the largest chunk id");
    if (st)
        return st;
    *seq = row ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_reset(q);
    return QR_OK;
}

/* ---- meta values ------------------------------------------------------------------------- */

/* Reads an integer meta value; a missing key reads as 0. */
qr_status store_meta_get_int(store *s, const char *key, int64_t *out, char *err)
{
    sqlite3_stmt *q = s->q[Q_META_GET];
    bool row;
    if (store_bind_str(q, 1, key))
        return store_bind_fail(s, err);
    qr_status st = store_step_row(s, q, &row, err, "read the store's settings");
    if (st)
        return st;
    *out = row ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_reset(q);
    return QR_OK;
}

/* Copies a text meta value into out (size n); a missing key reads as "". */
qr_status store_meta_get_str(store *s, const char *key, char *out, size_t n, char *err)
{
    sqlite3_stmt *q = s->q[Q_META_GET];
    bool row;
    if (store_bind_str(q, 1, key))
        return store_bind_fail(s, err);
    qr_status st = store_step_row(s, q, &row, err, "read the store's settings");
    if (st)
        return st;
    snprintf(out, n, "%s", row ? store_col_str(q, 0) : "");
    sqlite3_reset(q);
    return QR_OK;
}

qr_status store_meta_set_int(store *s, const char *key, int64_t v, char *err)
{
    s->wrote = true;
    sqlite3_stmt *q = s->q[Q_META_SET];
    if (store_bind_str(q, 1, key) || sqlite3_bind_int64(q, 2, v))
        return store_bind_fail(s, err);
    return store_run(s, q, err, "write the store's settings");
}

qr_status store_meta_set_str(store *s, const char *key, const char *v, char *err)
{
    s->wrote = true;
    sqlite3_stmt *q = s->q[Q_META_SET];
    if (store_bind_str(q, 1, key) || store_bind_str(q, 2, v))
        return store_bind_fail(s, err);
    return store_run(s, q, err, "write the store's settings");
}

/* Bumps the change counter inside the current write transaction and returns the new value. */
qr_status store_bump_counter(store *s, int64_t *counter, char *err)
{
    s->wrote = true;
    sqlite3_stmt *q = s->q[Q_COUNTER_BUMP];
    bool row;
    qr_status st = store_step_row(s, q, &row, err, "bump the change counter");
    if (st)
        return st;
    if (!row) {
        sqlite3_reset(q);
        return qr_fail(err, QR_EIO, "store '%s' has no change counter: the file is damaged", s->path);
    }
    *counter = sqlite3_column_int64(q, 0);
    st = store_run(s, q, err, "bump the change counter");
    if (!st)
        store_fts_counted(s, *counter);
    return st;
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
    return rc == SQLITE_OK ? QR_OK : store_sql_fail(s, rc, err, what);
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
        qr_status st = store_sql_fail(s, rc, err, "read the schema version");
        sqlite3_finalize(q);
        return st;
    }
    *version = sqlite3_column_int(q, 0); /* 0 when the table does not exist yet */
    sqlite3_finalize(q);
    return QR_OK;
}

/* Migration 4's first half: every row of the vectors table into the vectors file (normalised),
 * synced before the table is dropped in the same transaction. A crash before the commit leaves
 * the table, and the next open copies again over what the file holds. */
static qr_status vectors_to_file(store *s, char *err)
{
    int64_t dim = 0;
    qr_status st = QR_OK;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(
        s->db, "SELECT coalesce((SELECT value FROM meta WHERE key = 'embedding_dim'), 0)", -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW)
        dim = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    q = NULL;
    if (rc != SQLITE_ROW)
        return store_sql_fail(s, rc, err, "read the embedding dimension");
    if (dim > 0 && dim <= STORE_DIM_MAX && (st = store_vec_create(s, (int)dim, err)))
        return st;
    rc = sqlite3_prepare_v2(s->db, "SELECT chunk_id, vec FROM vectors ORDER BY chunk_id", -1, &q, NULL);
    while (!st && rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(q, 0);
        const void *v = sqlite3_column_blob(q, 1);
        if (dim < 1 || dim > STORE_DIM_MAX || !v ||
            (size_t)sqlite3_column_bytes(q, 1) != (size_t)dim * sizeof(float) || id < 1)
            st = qr_fail(err, QR_EIO,
                         "store '%s' is inconsistent: vector of chunk %lld has %d bytes, expected %lld",
                         s->path, (long long)id, sqlite3_column_bytes(q, 1), (long long)dim * 4);
        else
            st = store_vec_write(s, id, v, 1, (int)dim, err);
        rc = SQLITE_OK;
    }
    if (!st && rc != SQLITE_DONE)
        st = store_sql_fail(s, rc, err, "move the vectors into their file");
    sqlite3_finalize(q);
    if (!st)
        st = store_vec_sync(s, err);
    return st;
}

static qr_status apply_migration(store *s, int from, char *err)
{
    char what[64];
    snprintf(what, sizeof(what), "migrate the schema to version %d", from + 1);
    qr_status st = from == MIGRATION_VECTORS_OUT ? vectors_to_file(s, err) : QR_OK;
    if (!st)
        st = exec_sql(s, store_migrations[from], err, what);
    if (st)
        return st;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, "INSERT INTO schema_version(version, applied_ms) VALUES (?1, ?2)", -1,
                                &q, NULL);
    if (rc == SQLITE_OK && !(rc = sqlite3_bind_int(q, 1, from + 1)) &&
        !(rc = sqlite3_bind_int64(q, 2, qr_wall_ms())))
        rc = sqlite3_step(q);
    if (rc != SQLITE_DONE)
        st = store_sql_fail(s, rc, err, what);
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
            "data directory has schema %d, this quarry knows up to %d: upgrade quarry (store '%s')", version,
            STORE_SCHEMA_VERSION, s->path);
    return QR_OK;
}

void store_set_memory_limit(int64_t bytes)
{
    sqlite3_soft_heap_limit64(bytes > 0 ? bytes : 0);
}

qr_status store_skip_memory_stats(char *err)
{
    /* SQLite takes configuration only while it is not initialized: the dependency check at start
     * (index/deps.c) has initialized it, with no connection left open */
    int rc = sqlite3_shutdown();
    if (rc == SQLITE_OK)
        rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_initialize();
    return rc == SQLITE_OK
               ? QR_OK
               : qr_fail(err, QR_EINTERNAL, "cannot configure SQLite's allocator: %s", sqlite3_errstr(rc));
}

static _Atomic int64_t store_mmap_bytes;

void store_set_mmap(int64_t bytes)
{
    store_mmap_bytes = bytes > 0 ? bytes : 0;
}

int64_t store_memory_used(void)
{
    return (int64_t)sqlite3_memory_used();
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
    if (!(s = calloc(1, sizeof(*s)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory opening the store");
        goto out;
    }
    s->vec_fd = -1;
    if (!(s->path = malloc(strlen(dir) + sizeof("/" STORE_FILE))) || !(s->dir = strdup(dir))) {
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
        st = store_sql_fail(s, rc, err, "open the database");
        goto out;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
    /* A new store gets 16 KiB pages (SQLite's default is 4 KiB): a bulk load writes every page
     * to the WAL and again at the checkpoint, a system call each, and on this kind of virtual
     * machine system calls, not bytes, were a quarter of the writer's time. An existing store
     * keeps its page size (the pragma does nothing once the file has pages). */
    if ((st = exec_sql(s, "PRAGMA page_size = 16384", err, "set the page size")))
        goto out;
    /* journal_mode answers with the mode in force: a file system without shared memory for the
     * WAL index would silently stay in rollback mode */
    sqlite3_stmt *q = NULL;
    rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        st = store_sql_fail(s, rc, err, "switch to WAL mode");
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
    int64_t map = store_mmap_bytes;
    if (map > 0) {
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA mmap_size = %lld", (long long)map);
        if ((st = exec_sql(s, sql, err, "map the store into memory")))
            goto out;
    }
    for (int i = 0; i < Q_COUNT; i++) {
        rc = sqlite3_prepare_v3(s->db, store_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->q[i], NULL);
        if (rc != SQLITE_OK) {
            st = qr_fail(err, QR_EINTERNAL, "cannot prepare statement %d in store '%s': %s", i, s->path,
                         sqlite3_errmsg(s->db));
            goto out;
        }
    }
    if (!(st = store_fts_attach(s, err)))
        st = store_route_attach(s, err);
out:
    if (st) {
        store_close(s);
        return st;
    }
    *out = s;
    return QR_OK;
}

qr_status store_open_another(const store *s, store **out, char *err)
{
    if (!s || !out)
        return qr_fail(err, QR_EINVAL, "store_open_another: NULL argument");
    size_t n = strlen(s->path) - (sizeof("/" STORE_FILE) - 1);
    char *dir = malloc(n + 1);
    if (!dir)
        return qr_fail(err, QR_ENOMEM, "out of memory opening the store again");
    memcpy(dir, s->path, n);
    dir[n] = '\0';
    qr_status st = store_open(dir, out, err);
    free(dir);
    return st;
}

int index_store_schema_version(void)
{
    return STORE_SCHEMA_VERSION;
}

sqlite3 *store_db(store *s)
{
    return s->db;
}

static void ckpt_stop(store *s);

void store_close(store *s)
{
    if (!s)
        return;
    if (s->batch == BATCH_OPEN)
        rollback(s);
    store_route_detach(s);
    ckpt_stop(s);
    store_fts_close(s);
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(s->q[i]);
    store_stmt_cache_clear(s);
    if (s->tokenizer_p)
        s->tokenizer.xDelete(s->tokenizer_p);
    sqlite3_close(s->db); /* all statements are finalized: closes now */
    store_vec_close(s);
    free(s->path);
    free(s->dir);
    free(s);
}

/* ---- batches ----------------------------------------------------------------------------- */

qr_status store_batch_begin(store *s, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_batch_begin: NULL store");
    if (s->route) /* each write commits on the primary; the batch only defers the catch-up */
        return store_route_batch_begin(s, err);
    return store_batch_begin_local(s, err);
}

qr_status store_batch_begin_local(store *s, char *err)
{
    if (s->batch != BATCH_NONE)
        return qr_fail(err, QR_EINVAL, "a batch is already open on store '%s'", s->path);
    qr_status st = store_run(s, s->q[Q_BEGIN_WRITE], err, "start a batch");
    if (!st)
        s->batch = BATCH_OPEN;
    return st;
}

qr_status store_batch_commit(store *s, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_batch_commit: NULL store");
    if (s->route)
        return store_route_batch_end(s, err);
    return store_batch_commit_local(s, err);
}

qr_status store_batch_commit_local(store *s, char *err)
{
    int batch = s->batch;
    s->batch = BATCH_NONE;
    if (batch == BATCH_NONE)
        return qr_fail(err, QR_EINVAL, "no batch is open on store '%s'", s->path);
    if (batch == BATCH_FAILED)
        return qr_fail(err, s->batch_st, "the batch was rolled back: %s", s->batch_err);
    qr_status st = commit(s, err, "commit a batch");
    rollback(s); /* a failed COMMIT can leave the transaction open */
    store_fts_due(s);
    return st;
}

bool store_in_batch(const store *s)
{
    return s && (s->batch != BATCH_NONE || store_route_in_batch(s));
}

void store_batch_rollback(store *s)
{
    if (s && s->route)
        store_route_batch_rollback(s);
    else
        store_batch_rollback_local(s);
}

void store_batch_rollback_local(store *s)
{
    if (s && s->batch != BATCH_NONE) {
        rollback(s);
        s->batch = BATCH_NONE;
    }
}

/* ---- bulk loads -------------------------------------------------------------------------- */

/* SQLite's default page cache (2 MB) is what a server's many handles each keep; a bulk load's
 * batches dirty more than that, and pages spilled or dropped mid-batch are written or read again:
 * measured on 23 MB of input, 16 MB took pwrite calls from 27,700 to 20,200 and pread from 15,700
 * to 6,300 (64 MB: no fewer). */
#define STORE_BULK_CACHE_KIB        16384
#define STORE_BULK_TRUNCATE_WAIT_MS 100

/* Bulk mode checkpoints quarry.db on a thread of its own (store_ckpt.c); without it (no memory,
 * no thread) on the writer, every STORE_BULK_CHECKPOINT_PAGES pages, as SQLite does. */
static void ckpt_stop(store *s)
{
    store_ckpt_stop(s->ckpt);
    s->ckpt = NULL;
}

qr_status store_bulk_begin(store *s, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_bulk_begin: NULL store");
    if (s->batch != BATCH_NONE)
        return qr_fail(err, QR_EINVAL, "bulk mode cannot start inside a batch on store '%s'", s->path);
    if (s->bulk)
        return QR_OK;
    qr_status st =
        exec_sql(s,
                 "PRAGMA synchronous = NORMAL;"
                 " PRAGMA wal_autocheckpoint = " STRINGIFY(
                     STORE_BULK_CHECKPOINT_PAGES) ";"
                                                  " PRAGMA cache_size = -" STRINGIFY(STORE_BULK_CACHE_KIB),
                 err, "enter bulk mode");
    if (st)
        return st;
    s->bulk = true;
    s->ckpt = store_ckpt_start(s->db, s->path, STORE_BULK_CHECKPOINT_PAGES);
    store_fts_bulk_begin(s);
    return QR_OK;
}

qr_status store_bulk_end(store *s, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_bulk_end: NULL store");
    if (!s->bulk)
        return QR_OK;
    if (s->batch != BATCH_NONE)
        return qr_fail(err, QR_EINVAL, "bulk mode cannot end inside a batch on store '%s'", s->path);
    store_fts_bulk_finish(s);
    ckpt_stop(s);
    /* SQLite refuses to change synchronous inside a transaction, so the last batch committed
     * under NORMAL: one more commit under FULL syncs the WAL file, and with it every frame of
     * the load. It adds a meta row and removes it again: pages change, so the commit writes a
     * frame and syncs (rewriting a row with its own value would not: SQLite skips identical
     * content), and nothing anyone reads has changed. The pragma wal_autocheckpoint puts
     * SQLite's own checkpointing back in place of the thread's hook. */
    qr_status st = exec_sql(s,
                            "PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 1000;"
                            " PRAGMA cache_size = -2000",
                            err, "leave bulk mode");
    if (st)
        return st;
    s->bulk = false;
    if ((st = store_vec_sync(s, err)))
        return st;
    st = exec_sql(s,
                  "BEGIN IMMEDIATE;"
                  " INSERT INTO meta(key, value) VALUES ('bulk_load_sync', 1);"
                  " DELETE FROM meta WHERE key = 'bulk_load_sync';"
                  " COMMIT",
                  err, "sync the bulk load to disk");
    if (!st)
        store_vec_committed(s, true); /* the load is durable: its deletes' rows may go */
    rollback(s);                      /* a failed COMMIT can leave the transaction open */
    if (!st) {
        /* The load's WAL file (up to STORE_BULK_CHECKPOINT_PAGES pages) would be deleted when the
         * store closes, and freeing its blocks took ext4 11-14 ms of this thread at the very end
         * of a load. It is copied and emptied here instead, while the full-text thread does its
         * last catch-up on the other core. Readers are waited for briefly (the full-text thread
         * reads the last batch's rows at about this time), no longer: while another process
         * reads the store, the file stays as it is (and is not deleted at close either). */
        sqlite3_busy_timeout(s->db, STORE_BULK_TRUNCATE_WAIT_MS);
        sqlite3_wal_checkpoint_v2(s->db, "main", SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
    }
    char fts_err[QR_ERR_LEN];
    qr_status fts = store_fts_bulk_end(s, fts_err);
    if (!st && fts)
        return qr_fail(err, fts, "%s", fts_err);
    return st;
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
        st = store_sql_fail(s, rc, err, what);
    else if (rc == SQLITE_ROW && strcmp(store_col_str(q, 0), "ok") != 0)
        st = qr_fail(err, QR_EIO, "store '%s' is inconsistent: %s: %s", s->path, what, store_col_str(q, 0));
    sqlite3_finalize(q);
    return st;
}

qr_status store_verify(store *s, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_verify: NULL store");
    sqlite3_stmt *q = NULL;
    /* the FTS5 check is an INSERT: take the write lock so all checks see one state */
    qr_status st = store_begin_write(s, err);
    /* the full-text index as of this transaction: its follower's catch-up, rolled back after */
    if (st || (st = store_fts_apply_locked(s, err)) ||
        (st = expect_ok(s, "PRAGMA integrity_check", err, "integrity_check")))
        goto out;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA foreign_key_check", -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        st = qr_fail(err, QR_EIO, "store '%s' is inconsistent: table %s has a row whose parent is missing",
                     s->path, store_col_str(q, 0));
        goto out;
    }
    if (rc != SQLITE_DONE) {
        st = store_sql_fail(s, rc, err, "check foreign keys");
        goto out;
    }
    sqlite3_finalize(q);
    q = NULL;
    for (size_t i = 0; i < sizeof(store_checks) / sizeof(store_checks[0]); i++) {
        rc = sqlite3_prepare_v2(s->db, store_checks[i].sql, -1, &q, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(q);
        if (rc != SQLITE_ROW) {
            st = store_sql_fail(s, rc, err, "check consistency");
            goto out;
        }
        if (sqlite3_column_int64(q, 0) > 0) {
            char what[256];
            snprintf(what, sizeof(what), store_checks[i].what, store_col_str(q, 1));
            st = qr_fail(err, QR_EIO, "store '%s' is inconsistent: %lld %s", s->path,
                         (long long)sqlite3_column_int64(q, 0), what);
            goto out;
        }
        sqlite3_finalize(q);
        q = NULL;
    }
    if ((st = store_vec_verify(s, err)))
        goto out;
    /* the index's own structure, then the index against the chunks it was built from */
    rc = sqlite3_exec(s->db, "INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')", NULL, NULL,
                      NULL);
    if (rc != SQLITE_OK) {
        if ((rc & 0xff) == SQLITE_CORRUPT)
            st = qr_fail(err, QR_EIO, "store '%s' is inconsistent: the full-text index is damaged (%s)",
                         s->path, sqlite3_errmsg(s->db));
        else
            st = store_sql_fail(s, rc, err, "check the full-text index");
    }
    if (!st)
        st = store_fts_verify(s, err);
out:
    sqlite3_finalize(q);
    st = store_end_call(s, st, err);
    return st;
}
