/*
 * The full-text index: an FTS5 table in a database of its own (<dir>/quarry.fts, attached to the
 * store's connections as schema "fts"), written by a follower of the store's change counter
 * rather than inside each document's transaction, so that a bulk load indexes on a second core
 * while the writer stores documents (SQLite has one writer per database file).
 *
 * The table is contentless (content=''): the text lives once, in quarry.db's chunks, and searches
 * join the matches with chunks as before. Chunk ids are never reused, so a match the follower has
 * not yet removed joins with nothing and is never returned. FTS5 removes a contentless row only
 * when given the exact values it indexed, and SQLite 3.40 has no contentless_delete: the writes
 * therefore record those values in quarry.db's fts_gone before chunks go or a title changes
 * (store_fts_gone), with `since`, the counter at which that version was written, and `counter`,
 * that of the change.
 *
 * The follower applies (applied, head]: tombstones of versions it had indexed (since <= applied),
 * then every chunk added after applied and the chunks of documents retitled after it, and records
 * head as applied, in one transaction of quarry.fts. The order makes a version removed only after
 * it was indexed, and indexed only if it is the current one. Tombstones are pruned, by a catch-up
 * that holds quarry.db's write lock, up to the applied value it began with: that one was committed
 * (and synced) by an earlier transaction, so a crash can never leave the index needing a tombstone
 * that is gone.
 *
 * When it runs: after every commit that changed indexed text (store_fts_due), on the committing
 * thread, so that a write that returned is searchable (read-your-writes for the API); in bulk mode
 * (store_bulk_begin) on a thread of its own with its own connection, which indexes each
 * transaction's new chunks as the writer hands them over and commits after the writer's commit (a
 * transaction that also removed or retitled something, or that did not begin where the index
 * stands, is read back from quarry.db after its commit instead), and once more, synced, at
 * store_bulk_end; and when the store is opened, if the index is behind, is
 * not the store's (another store_uid), or is ahead of it (a store restored from an older copy):
 * then it is emptied and built again from counter 0.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "index/store.h"
#include "index/store_int.h"

#define FTS_FILE            "quarry.fts"
#define FTS_BUSY_TIMEOUT_MS 5000
/* The page size of a new quarry.fts: 32 KiB where quarry.db has 16. FTS5 keeps its index as blobs
 * of about 4 KB that a load appends and merges; with larger pages SQLite writes the WAL's frames,
 * copies them at each checkpoint and spills pages with fewer system calls: a 23 MB load took 5%
 * less wall time with 32 KiB or 64 KiB pages (bench/README.md, "The full-text index as it is
 * written"). Queries read the same blobs: p50 and p95 of 300 bm25() queries were the same with 16
 * and 64. 32 rather than 64 because every commit writes whole pages: a single document's write
 * rewrites a few of them. An existing file keeps the page size it has. */
#define FTS_PAGE_SIZE 32768
/* In bulk mode the WAL starts over past as many bytes as quarry.db's (STORE_BULK_CHECKPOINT_PAGES
 * of 16 KiB). */
#define FTS_BULK_WAL_BYTES ((int64_t)STORE_BULK_CHECKPOINT_PAGES * 16384)

/* The follower's statements, prepared per connection (the store's own, and the bulk thread's). */
enum {
    F_LOCK,
    F_APPLIED,
    F_HEAD,
    F_GONE,
    F_DELETE,
    F_ADDED,
    F_ALL,
    F_RETITLED,
    F_INSERT,
    F_SET,
    F_PRUNE,
    F_PRUNED,
    F_PRUNED_SET,
    F_COUNT
};

static const char *const fts_sql[F_COUNT] = {
    /* takes quarry.fts's write lock and nothing of quarry.db's: an UPDATE starts a write
     * transaction on its database when it starts, whatever it changes */
    [F_LOCK] = "UPDATE fts.fts_meta SET value = value WHERE key = 'applied'",
    [F_APPLIED] = "SELECT value FROM fts.fts_meta WHERE key = 'applied'",
    [F_HEAD] = "SELECT value FROM main.meta WHERE key = 'change_counter'",
    [F_GONE] = "SELECT chunk_id, title, headings, body FROM main.fts_gone"
               " WHERE counter > ?1 AND since <= ?1 ORDER BY rowid",
    [F_DELETE] = "INSERT INTO fts.chunks_fts(chunks_fts, rowid, title, headings, body)"
                 " VALUES ('delete', ?1, ?2, ?3, ?4)",
    /* the same plans as the store's text feeds (store.c, Q_TEXT_ADDED and Q_TEXT_ALL) */
    [F_ADDED] =
        "SELECT c.id, d.title, c.headings, c.body"
        " FROM main.chunks AS c INDEXED BY chunks_added CROSS JOIN main.documents AS d ON d.id = c.doc"
        " WHERE c.added > ?1 ORDER BY c.id",
    [F_ALL] = "SELECT c.id, d.title, c.headings, c.body"
              " FROM main.chunks AS c CROSS JOIN main.documents AS d ON d.id = c.doc ORDER BY c.id",
    /* documents whose title changed after applied, their chunks from before it (the newer ones
     * come with F_ADDED) */
    [F_RETITLED] = "SELECT c.id, d.title, c.headings, c.body"
                   " FROM main.documents AS d INDEXED BY documents_changed CROSS JOIN main.chunks AS c"
                   " ON c.doc = d.id WHERE d.changed > ?1 AND d.fts_changed > ?1 AND c.added <= ?1",
    /* one row per statement: a multi-row INSERT ... SELECT into FTS5 opens a statement savepoint,
     * at which FTS5 flushes its pending terms into a new segment */
    [F_INSERT] = "INSERT INTO fts.chunks_fts(rowid, title, headings, body) VALUES (?1, ?2, ?3, ?4)",
    [F_SET] = "UPDATE fts.fts_meta SET value = ?1 WHERE key = 'applied'",
    [F_PRUNE] = "DELETE FROM main.fts_gone WHERE counter <= ?1",
    /* how far tombstones were pruned: an index behind it cannot catch up (a copy of quarry.fts
     * older than the store's, an index that lost commits) and is built again */
    [F_PRUNED] = "SELECT value FROM main.meta WHERE key = 'fts_pruned_through'",
    [F_PRUNED_SET] = "INSERT INTO main.meta(key, value) VALUES ('fts_pruned_through', ?1)"
                     " ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
};

/* A connection the follower runs on, with its statements. */
typedef struct store_fts_conn {
    sqlite3 *db;
    const char *path; /* quarry.db's, for messages */
    sqlite3_stmt *q[F_COUNT];
} fts_conn;

typedef struct {
    int64_t id;
    bool remove;
    size_t at[3], len[3]; /* title, headings, body in bytes */
} change_row;

/* One catch-up's rows, read before they are written. The bulk thread keeps its buffers from
 * one catch-up to the next: released each time, their megabytes were mapped and faulted in again
 * for every batch. */
typedef struct {
    qr_buf rows;  /* change_row, in the order they apply */
    qr_buf bytes; /* their text */
} change_set;

#define CHANGE_SET_CAP ((size_t)1 << 40)

/* A piece of the writer's open transaction, handed to bulk mode's thread: the chunks it added
 * since the last piece, and, for the last piece, how the transaction ended. */
enum { PIECE_MORE, PIECE_COMMIT, PIECE_ROLLBACK };

typedef struct fts_piece {
    struct fts_piece *next;
    int end;       /* PIECE_* */
    int64_t first; /* the counter of the transaction's first change (0: none yet) */
    int64_t last;  /* PIECE_COMMIT: that of its last */
    bool broken;   /* PIECE_COMMIT: it also changed the index otherwise (removals, titles, a
                    * follower's writes), or some of its rows were not handed over */
    change_set cs; /* its rows, in the order they were written */
} fts_piece;

/* Rows are handed over in pieces of about this much text, and no more than FTS_QUEUE_BYTES wait
 * (beyond that the transaction is read back from the store after its commit instead). */
#define FTS_PIECE_BYTES ((size_t)128 << 10)
#define FTS_QUEUE_BYTES ((size_t)64 << 20)

/* Bulk mode's follower thread (store_bulk_begin). The writer hands it each transaction's new
 * chunks as it writes them (store_fts_capture), and the thread indexes them in a transaction of
 * quarry.fts that it commits once the writer's commit is done: the index keeps pace with the
 * writer instead of reading each batch back after it. Only a transaction that did nothing else to
 * the index, and began where the index stands, is indexed that way; any other is read from
 * quarry.db after its commit, as outside bulk mode. */
typedef struct store_fts_bulk {
    fts_conn c;
    change_set cs;
    store_ckpt *ckpt; /* checkpoints quarry.fts on a thread of its own; NULL: c's autocheckpoint */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t asked, done;
    bool stop;    /* the last catch-up is asked for */
    bool finish;  /* ... and is to be synced and checkpointed (store_fts_bulk_finish) */
    qr_status st; /* the first failure; the thread stops applying after it */
    double cpu_s; /* the thread's CPU time, when it ended */
    char err[QR_ERR_LEN];
    /* under mu: pieces handed over and not yet taken, their text's bytes, pieces taken (kept with
     * their buffers for the writer: released, their pages were faulted in again every time) */
    fts_piece *head, *tail, *spare;
    size_t queued;
    uint64_t n_whole, n_read; /* the thread's: transactions indexed as written, and read back */
    /* the thread's: whether a transaction of quarry.fts is open for the writer's current one
     * (indexing its pieces as they come), or was found not to begin where the index stands */
    enum { TXN_NONE, TXN_STREAM, TXN_SKIP } txn;
    /* the writer's: the piece being filled, and its open transaction's counters, whether it did
     * something else to the index, whether some of its pieces were handed over */
    fts_piece *cur;
    int64_t w_first, w_last;
    bool w_broken, w_handed;
} fts_bulk;

static qr_status conn_fail(const fts_conn *c, int rc, char *err, const char *what)
{
    if ((rc & 0xff) == SQLITE_BUSY)
        return qr_fail(err, QR_ETIMEOUT,
                       "cannot %s for store '%s': another process held the full-text index locked for %d ms",
                       what, c->path, FTS_BUSY_TIMEOUT_MS);
    return qr_fail(err, store_sql_status(rc), "cannot %s for store '%s': %s", what, c->path,
                   sqlite3_errmsg(c->db));
}

static void conn_release(fts_conn *c)
{
    for (int i = 0; i < F_COUNT; i++) {
        sqlite3_finalize(c->q[i]);
        c->q[i] = NULL;
    }
}

static qr_status conn_prepare(fts_conn *c, char *err)
{
    for (int i = 0; i < F_COUNT; i++) {
        int rc = sqlite3_prepare_v3(c->db, fts_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->q[i], NULL);
        if (rc != SQLITE_OK) {
            qr_status st = conn_fail(c, rc, err, "prepare the full-text follower");
            conn_release(c);
            return st;
        }
    }
    return QR_OK;
}

static qr_status conn_exec(const fts_conn *c, const char *sql, char *err, const char *what)
{
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? QR_OK : conn_fail(c, rc, err, what);
}

/* One integer from statement i (no parameters); *out 0 without a row. */
static qr_status conn_int(fts_conn *c, int i, int64_t *out, char *err, const char *what)
{
    sqlite3_stmt *q = c->q[i];
    int rc = sqlite3_step(q);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_reset(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? QR_OK : conn_fail(c, rc, err, what);
}

/* The one integer a statement without parameters gives; nonzero on any failure. */
static int conn_int_sql(const fts_conn *c, const char *sql, int64_t *out)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        *out = sqlite3_column_int64(q, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    return rc;
}

static qr_status conn_run(fts_conn *c, int i, int64_t v, char *err, const char *what)
{
    sqlite3_stmt *q = c->q[i];
    int rc = sqlite3_bind_parameter_count(q) ? sqlite3_bind_int64(q, 1, v) : SQLITE_OK;
    if (rc == SQLITE_OK) {
        while ((rc = sqlite3_step(q)) == SQLITE_ROW)
            ;
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? QR_OK : conn_fail(c, rc, err, what);
}

/* Feeds every row of query src (bound to `after` when it takes it) to dst, one statement each:
 * (rowid, title, headings, body). */
static qr_status copy_stmt_rows(fts_conn *c, sqlite3_stmt *src, int64_t after, sqlite3_stmt *dst,
                                const char *what, char *err)
{
    int rc = sqlite3_bind_parameter_count(src) ? sqlite3_bind_int64(src, 1, after) : SQLITE_OK;
    while (rc == SQLITE_OK && (rc = sqlite3_step(src)) == SQLITE_ROW) {
        rc = sqlite3_bind_int64(dst, 1, sqlite3_column_int64(src, 0));
        for (int i = 1; i < 4 && rc == SQLITE_OK; i++)
            rc = sqlite3_bind_value(dst, i + 1, sqlite3_column_value(src, i));
        if (rc == SQLITE_OK && (rc = sqlite3_step(dst)) == SQLITE_DONE)
            rc = SQLITE_OK;
        if (rc != SQLITE_OK) {
            qr_status st = conn_fail(c, rc, err, what);
            sqlite3_reset(dst);
            sqlite3_reset(src);
            return st;
        }
        sqlite3_reset(dst);
    }
    qr_status st = rc == SQLITE_DONE ? QR_OK : conn_fail(c, rc, err, what);
    sqlite3_reset(src);
    return st;
}

/* copy_stmt_rows between the follower's statements `from` and `to` (F_INSERT or F_DELETE). */
static qr_status copy_rows(fts_conn *c, int from, int64_t after, int to, char *err)
{
    return copy_stmt_rows(
        c, c->q[from], after, c->q[to],
        to == F_INSERT ? "add chunks to the full-text index" : "remove chunks from the full-text index", err);
}

/* Ends the transaction open on c: with st QR_OK it commits (sync: after writing a page, so that
 * the commit syncs even when nothing else changed), otherwise, or when the commit fails, it rolls
 * back. Returns st or the commit's failure. */
static qr_status end_txn(fts_conn *c, qr_status st, bool sync, char *err, const char *what)
{
    if (!st && sync)
        st = conn_exec(c,
                       "INSERT INTO fts.fts_meta(key, value) VALUES ('sync', 1);"
                       " DELETE FROM fts.fts_meta WHERE key = 'sync'",
                       err, "sync the full-text index");
    if (!st)
        st = conn_exec(c, "COMMIT", err, what);
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

/* Applies (applied, head] inside the caller's transaction, which holds quarry.fts's write lock.
 * prune: the transaction also holds quarry.db's, and tombstones up to the applied value found
 * here go, and meta's fts_pruned_through records it (*did_prune: some did; the commit then
 * syncs quarry.fts too, since that value may have been committed by bulk mode's thread under
 * synchronous=NORMAL). */
static qr_status apply(fts_conn *c, bool prune, bool *did_prune, char *err)
{
    *did_prune = false;
    int64_t applied, head, pruned;
    qr_status st;
    if ((st = conn_int(c, F_APPLIED, &applied, err, "read the full-text index's position")) ||
        (st = conn_int(c, F_HEAD, &head, err, "read the change counter")) ||
        (st = conn_int(c, F_PRUNED, &pruned, err, "read the full-text index's tombstones")))
        return st;
    if (head != applied) {
        /* the store is older than its index (restored from a copy), or pruned tombstones the
         * index still needs: start over */
        if (head < applied || applied < pruned) {
            if ((st = conn_exec(c, "INSERT INTO fts.chunks_fts(chunks_fts) VALUES ('delete-all')", err,
                                "empty the full-text index")))
                return st;
            applied = 0;
        }
        if (applied == 0)
            st = copy_rows(c, F_ALL, 0, F_INSERT, err);
        else if (!(st = copy_rows(c, F_GONE, applied, F_DELETE, err)) &&
                 !(st = copy_rows(c, F_ADDED, applied, F_INSERT, err)))
            st = copy_rows(c, F_RETITLED, applied, F_INSERT, err);
        if (!st)
            st = conn_run(c, F_SET, head, err, "record the full-text index's position");
    }
    if (!st && prune && applied > pruned &&
        !(st = conn_run(c, F_PRUNE, applied, err, "prune the full-text index's tombstones")) &&
        (*did_prune = sqlite3_changes(c->db) > 0))
        st = conn_run(c, F_PRUNED_SET, applied, err, "record the full-text index's tombstones");
    return st;
}

/* One catch-up as a transaction of its own. own_lock: the connection is the store's (outside bulk
 * mode), which takes both write locks and prunes; otherwise only quarry.fts's. sync: the commit
 * writes a page even when nothing was applied, so that it syncs everything before it. */
static qr_status catch_up(fts_conn *c, bool own_lock, bool sync, char *err)
{
    qr_status st = conn_exec(c, own_lock ? "BEGIN IMMEDIATE" : "BEGIN", err, "start the full-text follower");
    if (st)
        return st;
    if (!own_lock)
        st = conn_run(c, F_LOCK, 0, err, "lock the full-text index");
    bool pruned = false;
    if (!st)
        st = apply(c, own_lock, &pruned, err);
    return end_txn(c, st, sync || pruned, err, "commit the full-text index");
}

/* Bulk mode's catch-ups read the changes first and index them after, in two transactions: one
 * that holds FTS5's work would hold a read snapshot of quarry.db all along, and the checkpoints of
 * the load could then never copy the last batches into the database nor start the WAL over. */

/* Appends every row of query `from`, bound to `after`. */
static qr_status collect(fts_conn *c, int from, int64_t after, bool remove, change_set *cs, char *err)
{
    sqlite3_stmt *src = c->q[from];
    qr_status st = QR_OK;
    int rc = sqlite3_bind_int64(src, 1, after);
    while (!st && rc == SQLITE_OK && (rc = sqlite3_step(src)) == SQLITE_ROW) {
        change_row r = {.id = sqlite3_column_int64(src, 0), .remove = remove};
        for (int i = 0; i < 3 && !st; i++) {
            const void *v = sqlite3_column_text(src, i + 1);
            r.len[i] = (size_t)sqlite3_column_bytes(src, i + 1);
            r.at[i] = qr_buf_len(&cs->bytes);
            st = qr_buf_append(&cs->bytes, v ? v : "", r.len[i]);
        }
        if (!st)
            st = qr_buf_append(&cs->rows, &r, sizeof(r));
        rc = SQLITE_OK;
    }
    if (st)
        qr_fail(err, st, "cannot hold the full-text index's changes for store '%s' in memory", c->path);
    else if (rc != SQLITE_DONE)
        st = conn_fail(c, rc, err, "read the changes for the full-text index");
    sqlite3_reset(src);
    return st;
}

static qr_status apply_set(fts_conn *c, const change_set *cs, char *err)
{
    const change_row *rows = (const change_row *)(const void *)qr_buf_str(&cs->rows);
    size_t n = qr_buf_len(&cs->rows) / sizeof(change_row);
    const char *bytes = qr_buf_str(&cs->bytes);
    for (size_t k = 0; k < n; k++) {
        const change_row *r = &rows[k];
        sqlite3_stmt *q = c->q[r->remove ? F_DELETE : F_INSERT];
        int rc = sqlite3_bind_int64(q, 1, r->id);
        for (int i = 0; i < 3 && rc == SQLITE_OK; i++)
            rc = sqlite3_bind_text64(q, i + 2, bytes + r->at[i], r->len[i], SQLITE_STATIC, SQLITE_UTF8);
        if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_DONE)
            rc = SQLITE_OK;
        sqlite3_reset(q);
        if (rc != SQLITE_OK)
            return conn_fail(c, rc, err,
                             r->remove ? "remove chunks from the full-text index"
                                       : "add chunks to the full-text index");
    }
    return QR_OK;
}

/* Bulk mode's catch-up: (applied, head] read in one read transaction, written in one of
 * quarry.fts alone. A rebuild (from 0) reads and writes in one, as catch_up does. */
static qr_status catch_up_bulk(fts_conn *c, change_set *cs, bool sync, char *err)
{
    for (int tries = 0;; tries++) {
        int64_t applied = 0, head = 0, pruned = 0;
        qr_status st = conn_exec(c, "BEGIN", err, "start the full-text follower");
        if (!st && !(st = conn_int(c, F_APPLIED, &applied, err, "read the full-text index's position")) &&
            !(st = conn_int(c, F_HEAD, &head, err, "read the change counter")))
            st = conn_int(c, F_PRUNED, &pruned, err, "read the full-text index's tombstones");
        if (!st && (applied == 0 || head < applied || applied < pruned || tries >= 3)) {
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            return catch_up(c, false, sync, err);
        }
        qr_buf_reset(&cs->rows);
        qr_buf_reset(&cs->bytes);
        if (!st && head != applied && !(st = collect(c, F_GONE, applied, true, cs, err)) &&
            !(st = collect(c, F_ADDED, applied, false, cs, err)))
            st = collect(c, F_RETITLED, applied, false, cs, err);
        if (!sqlite3_get_autocommit(c->db))
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL); /* it only read */
        int64_t now = -1;
        if (!st && !(st = conn_exec(c, "BEGIN", err, "start the full-text follower")) &&
            !(st = conn_run(c, F_LOCK, 0, err, "lock the full-text index")))
            st = conn_int(c, F_APPLIED, &now, err, "read the full-text index's position");
        bool again = !st && now != applied; /* another connection caught up meanwhile */
        if (!st && !again && head != applied && !(st = apply_set(c, cs, err)))
            st = conn_run(c, F_SET, head, err, "record the full-text index's position");
        st = end_txn(c, st, !again && sync, err, "commit the full-text index");
        if (st || !again)
            return st;
    }
}

/* ---- attaching quarry.fts ------------------------------------------------------------------ */

/* Attaches <dir>/quarry.fts to db as "fts" in WAL mode with the given synchronous setting. */
static qr_status attach(fts_conn *c, const char *dir, const char *synchronous, char *err)
{
    char *path = malloc(strlen(dir) + sizeof("/" FTS_FILE));
    if (!path)
        return qr_fail(err, QR_ENOMEM, "out of memory opening the full-text index");
    sprintf(path, "%s/%s", dir, FTS_FILE);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(c->db, "ATTACH DATABASE ?1 AS fts", -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_bind_text(q, 1, path, -1, SQLITE_TRANSIENT)) == SQLITE_OK &&
        (rc = sqlite3_step(q)) == SQLITE_DONE)
        rc = SQLITE_OK;
    sqlite3_finalize(q);
    free(path);
    if (rc != SQLITE_OK)
        return conn_fail(c, rc, err, "attach the full-text index");
    /* a new file gets pages of FTS_PAGE_SIZE; WAL, checked as the store's is */
    rc = sqlite3_exec(c->db, "PRAGMA fts.page_size = " STRINGIFY(FTS_PAGE_SIZE), NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(c->db, "PRAGMA fts.journal_mode = WAL", -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    bool wal = rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(q, 0), "wal") == 0;
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW)
        return conn_fail(c, rc, err, "switch the full-text index to WAL mode");
    if (!wal)
        return qr_fail(err, QR_EIO, "the full-text index of store '%s' cannot use WAL mode", c->path);
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA fts.synchronous = %s", synchronous);
    return conn_exec(c, sql, err, "set the full-text index's pragmas");
}

/* Makes the schema of a new quarry.fts, and empties one that belongs to another store; under
 * both write locks. */
static qr_status make_schema(fts_conn *c, char *err)
{
    qr_status st =
        conn_exec(c,
                  "BEGIN IMMEDIATE;"
                  " CREATE TABLE IF NOT EXISTS fts.fts_meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
                  " CREATE VIRTUAL TABLE IF NOT EXISTS fts.chunks_fts USING fts5(title, headings, body,"
                  "   content = '', tokenize = 'porter unicode61');"
                  " INSERT OR IGNORE INTO fts.fts_meta(key, value) VALUES ('applied', 0),"
                  "   ('store_uid', (SELECT value FROM main.meta WHERE key = 'store_uid'));",
                  err, "create the full-text index");
    sqlite3_stmt *q = NULL;
    int rc = SQLITE_OK;
    if (!st)
        rc = sqlite3_prepare_v2(c->db,
                                "SELECT (SELECT value FROM fts.fts_meta WHERE key = 'store_uid') IS"
                                " (SELECT value FROM main.meta WHERE key = 'store_uid')",
                                -1, &q, NULL);
    if (!st && rc == SQLITE_OK)
        rc = sqlite3_step(q);
    bool same = rc == SQLITE_ROW && sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (!st && rc != SQLITE_ROW)
        st = conn_fail(c, rc, err, "read the full-text index's store");
    if (!st && !same)
        st =
            conn_exec(c,
                      "INSERT INTO fts.chunks_fts(chunks_fts) VALUES ('delete-all');"
                      " UPDATE fts.fts_meta SET value = 0 WHERE key = 'applied';"
                      " UPDATE fts.fts_meta SET value = (SELECT value FROM main.meta WHERE key = 'store_uid')"
                      "  WHERE key = 'store_uid'",
                      err, "empty the full-text index of another store");
    return end_txn(c, st, false, err, "create the full-text index");
}

/* Whether the index needs its schema made or checked (a new file, another store's) or a catch-up,
 * read without a write lock so that opening a store that is up to date writes nothing. */
static qr_status needs_work(fts_conn *c, bool *schema, bool *behind, char *err)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(c->db,
                                "SELECT (SELECT value FROM fts.fts_meta WHERE key = 'store_uid') IS"
                                " (SELECT value FROM main.meta WHERE key = 'store_uid'),"
                                " (SELECT value FROM fts.fts_meta WHERE key = 'applied') IS NOT"
                                " (SELECT value FROM main.meta WHERE key = 'change_counter')",
                                -1, &q, NULL);
    *schema = *behind = true;
    if (rc == SQLITE_ERROR) { /* no fts_meta yet */
        sqlite3_finalize(q);
        return QR_OK;
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *schema = !sqlite3_column_int(q, 0);
        *behind = sqlite3_column_int(q, 1);
    }
    sqlite3_finalize(q);
    return rc == SQLITE_ROW ? QR_OK : conn_fail(c, rc, err, "read the full-text index's position");
}

static qr_status store_conn(store *s, char *err)
{
    if (s->fts)
        return QR_OK;
    fts_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return qr_fail(err, QR_ENOMEM, "out of memory opening the full-text index");
    c->db = s->db;
    c->path = s->path;
    qr_status st = attach(c, s->dir, "FULL", err);
    bool schema = false, behind = false;
    if (!st)
        st = needs_work(c, &schema, &behind, err);
    if (!st && schema)
        st = make_schema(c, err);
    if (!st)
        st = conn_prepare(c, err);
    if (!st && (behind || schema)) /* a schema made or emptied just now: behind what it said */
        st = catch_up(c, true, false, err);
    if (st) {
        conn_release(c);
        sqlite3_exec(s->db, "DETACH DATABASE fts", NULL, NULL, NULL);
        free(c);
        return st;
    }
    s->fts = c;
    return QR_OK;
}

qr_status store_fts_attach(store *s, char *err)
{
    return store_conn(s, err);
}

/* Detaches quarry.fts from the store's connection (no transaction open). */
static void store_detach(store *s)
{
    if (!s->fts)
        return;
    store_stmt_cache_clear(s); /* cached searches name chunks_fts */
    conn_release(s->fts);
    sqlite3_exec(s->db, "DETACH DATABASE fts", NULL, NULL, NULL);
    free(s->fts);
    s->fts = NULL;
}

/* ---- bulk mode's thread -------------------------------------------------------------------- */

/* Takes one piece of the writer's transaction, in order. Its first piece opens a transaction of
 * quarry.fts, which indexes the pieces as they come if the index stands just before the writer's
 * transaction (every counter from there on is that transaction's, so its rows are all the index
 * lacks); otherwise the pieces are let go. At the commit, a transaction indexed whole records its
 * last counter as applied and commits; any other is read back from quarry.db (catch_up_bulk). */
static qr_status take_piece(fts_bulk *b, const fts_piece *p, char *err)
{
    fts_conn *c = &b->c;
    qr_status st = QR_OK;
    if (p->end == PIECE_ROLLBACK) {
        if (b->txn == TXN_STREAM)
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        b->txn = TXN_NONE;
        return QR_OK;
    }
    if (b->txn == TXN_NONE && !p->broken) {
        int64_t applied = -1;
        if (!(st = conn_exec(c, "BEGIN", err, "start the full-text follower")) &&
            !(st = conn_run(c, F_LOCK, 0, err, "lock the full-text index")))
            st = conn_int(c, F_APPLIED, &applied, err, "read the full-text index's position");
        b->txn = !st && p->first > 0 && applied == p->first - 1 ? TXN_STREAM : TXN_SKIP;
        if (b->txn == TXN_SKIP && !sqlite3_get_autocommit(c->db))
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    }
    if (!st && b->txn == TXN_STREAM && !p->broken)
        st = apply_set(c, &p->cs, err);
    if (p->end == PIECE_MORE) {
        if (st && b->txn == TXN_STREAM) {
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            b->txn = TXN_SKIP;
        }
        return st;
    }
    bool whole = !st && b->txn == TXN_STREAM && !p->broken;
    if (whole) {
        st = conn_run(c, F_SET, p->last, err, "record the full-text index's position");
        st = end_txn(c, st, false, err, "commit the full-text index");
    } else if (b->txn == TXN_STREAM)
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    b->txn = TXN_NONE;
    if (!st && !whole) {
        b->n_read++;
        st = catch_up_bulk(c, &b->cs, false, err);
    } else if (!st)
        b->n_whole++;
    return st;
}

static void *bulk_main(void *arg)
{
    fts_bulk *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stop && b->done == b->asked)
            pthread_cond_wait(&b->cv, &b->mu);
        char err[QR_ERR_LEN];
        qr_status st = QR_OK;
        if (b->head) {
            fts_piece *list = b->head, *p = list;
            b->head = b->tail = NULL;
            bool failed = b->st != QR_OK;
            pthread_mutex_unlock(&b->mu);
            size_t bytes = 0;
            for (;; p = p->next) {
                if (!failed && !st)
                    st = take_piece(b, p, err);
                bytes += qr_buf_len(&p->cs.bytes);
                if (!p->next)
                    break;
            }
            pthread_mutex_lock(&b->mu);
            p->next = b->spare;
            b->spare = list;
            b->queued -= bytes;
        } else if (b->done == b->asked)
            break;
        else {
            uint64_t asked = b->asked;
            bool failed = b->st != QR_OK, last = b->stop && b->finish;
            pthread_mutex_unlock(&b->mu);
            if (b->txn == TXN_STREAM) /* the writer's transaction never ended (a close inside it) */
                sqlite3_exec(b->c.db, "ROLLBACK", NULL, NULL, NULL);
            b->txn = TXN_NONE;
            /* the last one syncs everything the thread committed; its checkpoint, on the
             * checkpointing thread, copies the WAL into the file while the store attaches the
             * index again (without that thread, here, rather than on the writer's thread) */
            if (!failed && last)
                st = conn_exec(&b->c, "PRAGMA fts.synchronous = FULL", err, "sync the full-text index");
            if (!failed && !st)
                st = catch_up_bulk(&b->c, &b->cs, last, err);
            if (!failed && !st && last && !b->ckpt)
                st = conn_exec(&b->c, "PRAGMA fts.wal_checkpoint(PASSIVE)", err,
                               "checkpoint the full-text index");
            pthread_mutex_lock(&b->mu);
            b->done = asked;
        }
        if (st && !b->st) {
            b->st = st;
            snprintf(b->err, sizeof(b->err), "%s", err);
        }
        pthread_cond_broadcast(&b->cv);
    }
    struct timespec cpu;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu) == 0)
        b->cpu_s = (double)cpu.tv_sec + (double)cpu.tv_nsec / 1e9;
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

#define FTS_PIECES_AT_START 2

static fts_piece *piece_new(void)
{
    fts_piece *p = calloc(1, sizeof(*p));
    if (p) {
        qr_buf_init(&p->cs.rows, CHANGE_SET_CAP);
        qr_buf_init(&p->cs.bytes, CHANGE_SET_CAP);
    }
    return p;
}

static void pieces_free(fts_piece *p)
{
    while (p) {
        fts_piece *next = p->next;
        qr_buf_release(&p->cs.rows);
        qr_buf_release(&p->cs.bytes);
        free(p);
        p = next;
    }
}

static void bulk_free(fts_bulk *b)
{
    store_ckpt_stop(b->ckpt);
    pieces_free(b->head);
    pieces_free(b->spare);
    pieces_free(b->cur);
    conn_release(&b->c);
    sqlite3_close(b->c.db);
    qr_buf_release(&b->cs.rows);
    qr_buf_release(&b->cs.bytes);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* Starts the thread with a connection of its own (quarry.db read, quarry.fts written under
 * synchronous=NORMAL: store_fts_bulk_end syncs it), and detaches quarry.fts from the writer's
 * connection, whose BEGIN IMMEDIATE would otherwise lock it for every batch. Without a thread
 * (no memory), the writer's commits catch up as outside bulk mode. */
void store_fts_bulk_begin(store *s)
{
    if (s->fts_bulk || !s->fts)
        return;
    fts_bulk *b = calloc(1, sizeof(*b));
    if (!b)
        return;
    char err[QR_ERR_LEN];
    b->c.path = s->path;
    qr_buf_init(&b->cs.rows, CHANGE_SET_CAP);
    qr_buf_init(&b->cs.bytes, CHANGE_SET_CAP);
    if (sqlite3_open_v2(s->path, &b->c.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        sqlite3_close(b->c.db);
        free(b);
        return;
    }
    sqlite3_busy_timeout(b->c.db, FTS_BUSY_TIMEOUT_MS);
    if (attach(&b->c, s->dir, "NORMAL", err) ||
        conn_exec(&b->c, "PRAGMA fts.cache_size = -16384", err, "size the cache") ||
        conn_prepare(&b->c, err)) {
        conn_release(&b->c);
        sqlite3_close(b->c.db);
        free(b);
        return;
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    for (int i = 0; i < FTS_PIECES_AT_START; i++) {
        fts_piece *p = piece_new();
        if (!p) {
            bulk_free(b);
            return;
        }
        p->next = b->spare;
        b->spare = p;
    }
    int64_t page = 0;
    if (conn_int_sql(&b->c, "PRAGMA fts.page_size", &page) || page <= 0)
        page = FTS_PAGE_SIZE;
    int frames = (int)(FTS_BULK_WAL_BYTES / page);
    b->ckpt = store_ckpt_start(b->c.db, sqlite3_db_filename(b->c.db, "fts"), frames);
    if (pthread_create(&b->thread, NULL, bulk_main, b) != 0) {
        bulk_free(b);
        return;
    }
    store_detach(s);
    s->fts_bulk = b;
}

/* Asks the thread for its last catch-up (finish: synced and checkpointed). */
static void bulk_ask_stop(fts_bulk *b, bool finish)
{
    pthread_mutex_lock(&b->mu);
    if (!b->stop) {
        b->asked++;
        b->stop = true;
        b->finish = finish;
        pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
}

void store_fts_bulk_finish(store *s)
{
    if (s->fts_bulk)
        bulk_ask_stop(s->fts_bulk, true);
}

/* Stops the thread after a last catch-up and takes it off the store; its first failure, if
 * any. The caller frees it (bulk_free: that waits for its last checkpoint). */
static qr_status bulk_stop(store *s, fts_bulk **out, char *err)
{
    fts_bulk *b = *out = s->fts_bulk;
    if (!b)
        return QR_OK;
    bulk_ask_stop(b, false);
    pthread_join(b->thread, NULL);
    qr_status st = b->st;
    if (st)
        snprintf(err, QR_ERR_LEN, "%s", b->err);
    qr_log(QR_LOG_DEBUG, "store",
           "full-text follower of a bulk load: %.2f s CPU, %llu transactions indexed as written, %llu read"
           " back from the store",
           b->cpu_s, (unsigned long long)b->n_whole, (unsigned long long)b->n_read);
    s->fts_bulk = NULL;
    return st;
}

qr_status store_fts_bulk_end(store *s, char *err)
{
    char thread_err[QR_ERR_LEN] = "";
    bool finished = s->fts_bulk && s->fts_bulk->finish;
    fts_bulk *b = NULL;
    qr_status thread_st = bulk_stop(s, &b, thread_err);
    /* attached again, the store's connection catches up whatever the thread did not and prunes
     * the tombstones the load's replacements left (the thread cannot: it holds no write lock of
     * quarry.db); unless the thread's last catch-up synced everything up to the store's counter,
     * it commits once more under FULL, which syncs the thread's commits. Meanwhile the thread's
     * last checkpoint copies its WAL into quarry.fts. */
    qr_status st = store_conn(s, err);
    if (!st)
        st = catch_up(s->fts, true, !finished || thread_st, err);
    if (b)
        bulk_free(b);
    if (st && thread_st)
        qr_log(QR_LOG_WARN, "store", "the full-text follower of a bulk load failed: %s", thread_err);
    return st;
}

void store_fts_close(store *s)
{
    char err[QR_ERR_LEN];
    fts_bulk *b = NULL;
    if (bulk_stop(s, &b, err))
        qr_log(QR_LOG_WARN, "store", "the full-text follower of a bulk load failed: %s", err);
    if (b)
        bulk_free(b);
    store_detach(s);
}

/* ---- bulk mode: the writer's rows, handed over as they are written ---------------------------- */

/* A spare piece, or a new one; without memory NULL, or, if wait, the next piece the thread gives
 * back (bulk mode starts with FTS_PIECES_AT_START, so one is always on its way back when neither
 * the writer nor the spares hold one: an end of a transaction is never lost). */
static fts_piece *piece_take(fts_bulk *b, bool wait)
{
    pthread_mutex_lock(&b->mu);
    fts_piece *p = b->spare;
    if (!p) {
        pthread_mutex_unlock(&b->mu);
        if ((p = piece_new()) || !wait)
            goto out;
        pthread_mutex_lock(&b->mu);
        while (!(p = b->spare))
            pthread_cond_wait(&b->cv, &b->mu);
    }
    b->spare = p->next;
    pthread_mutex_unlock(&b->mu);
out:
    if (p) {
        p->next = NULL;
        qr_buf_reset(&p->cs.rows);
        qr_buf_reset(&p->cs.bytes);
    }
    return p;
}

/* Hands the writer's current piece (an empty one if none) to the thread, ending the transaction
 * with it unless end is PIECE_MORE. A piece that would queue more than FTS_QUEUE_BYTES is kept
 * back, and the transaction is read back after its commit instead. */
static void hand_over(fts_bulk *b, int end)
{
    fts_piece *p = b->cur ? b->cur : piece_take(b, end != PIECE_MORE);
    b->cur = NULL;
    if (!p) {
        b->w_broken = true;
        return;
    }
    size_t bytes = qr_buf_len(&p->cs.bytes);
    p->end = end;
    p->first = b->w_first;
    p->last = b->w_last;
    pthread_mutex_lock(&b->mu);
    if (end == PIECE_MORE && b->queued + bytes > FTS_QUEUE_BYTES) {
        b->w_broken = true;
        p->next = b->spare;
        b->spare = p;
        pthread_mutex_unlock(&b->mu);
        return;
    }
    if (end == PIECE_ROLLBACK ||
        (end == PIECE_COMMIT && (b->w_broken || b->queued + bytes > FTS_QUEUE_BYTES))) {
        p->broken = true;
        qr_buf_reset(&p->cs.rows);
        qr_buf_reset(&p->cs.bytes);
        bytes = 0;
    } else
        p->broken = false;
    b->queued += bytes;
    if (b->tail)
        b->tail->next = p;
    else
        b->head = p;
    b->tail = p;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    b->w_handed = true;
}

void store_fts_counted(store *s, int64_t counter)
{
    fts_bulk *b = s->fts_bulk;
    if (!b)
        return;
    if (!b->w_first)
        b->w_first = counter;
    b->w_last = counter;
}

void store_fts_uncaptured(store *s)
{
    if (s->fts_bulk)
        s->fts_bulk->w_broken = true;
}

void store_fts_capture(store *s, int64_t id, const char *title, const char *headings, const char *body,
                       size_t body_len)
{
    fts_bulk *b = s->fts_bulk;
    if (!b || b->w_broken)
        return;
    if (!b->w_first || (!b->cur && !(b->cur = piece_take(b, false)))) {
        b->w_broken = true;
        return;
    }
    change_set *cs = &b->cur->cs;
    change_row r = {.id = id};
    const char *v[3] = {title, headings, body};
    size_t n[3] = {strlen(title), strlen(headings), body_len};
    qr_status st = QR_OK;
    for (int i = 0; i < 3 && !st; i++) {
        r.at[i] = qr_buf_len(&cs->bytes);
        r.len[i] = n[i];
        st = qr_buf_append(&cs->bytes, v[i], n[i]);
    }
    if (!st)
        st = qr_buf_append(&cs->rows, &r, sizeof(r));
    if (st) {
        b->w_broken = true;
        return;
    }
    if (qr_buf_len(&cs->bytes) >= FTS_PIECE_BYTES)
        hand_over(b, PIECE_MORE);
}

void store_fts_txn_end(store *s, bool committed)
{
    fts_bulk *b = s->fts_bulk;
    if (!b)
        return;
    if (s->fts_changed && !b->w_first)
        b->w_broken = true; /* indexed text changed with no counter of its own: read it back */
    if (committed && (b->w_first || b->w_broken))
        hand_over(b, PIECE_COMMIT);
    else if (!committed && b->w_handed)
        hand_over(b, PIECE_ROLLBACK);
    else if (b->cur) {
        pthread_mutex_lock(&b->mu);
        b->cur->next = b->spare;
        b->spare = b->cur;
        pthread_mutex_unlock(&b->mu);
        b->cur = NULL;
    }
    b->w_first = b->w_last = 0;
    b->w_broken = b->w_handed = false;
}

/* ---- after commits ------------------------------------------------------------------------- */

void store_fts_due(store *s)
{
    if (!s->fts_due)
        return;
    s->fts_due = false;
    fts_bulk *b = s->fts_bulk;
    if (b) {
        pthread_mutex_lock(&b->mu);
        b->asked++;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        return;
    }
    char err[QR_ERR_LEN];
    qr_status st = s->fts ? catch_up(s->fts, true, false, err) : store_conn(s, err);
    if (st) {
        /* the write is committed; the next commit, or the next opening, catches up */
        s->fts_due = true;
        qr_log(QR_LOG_WARN, "store", "the full-text index is behind the store: %s", err);
    }
}

qr_status store_fts_catch_up(store *s, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_fts_catch_up: NULL store");
    if (s->fts_bulk)
        return qr_fail(err, QR_EINVAL, "store '%s' is in bulk mode: its thread keeps the full-text index",
                       s->path);
    qr_status st = s->fts ? catch_up(s->fts, true, false, err) : store_conn(s, err);
    if (!st)
        s->fts_due = false;
    return st;
}

qr_status store_fts_applied(store *s, int64_t *out, char *err)
{
    *out = -1;
    return s->fts ? conn_int(s->fts, F_APPLIED, out, err, "read the full-text index's position") : QR_OK;
}

qr_status store_fts_apply_locked(store *s, char *err)
{
    if (!s->fts)
        return qr_fail(err, QR_EIO, "the full-text index of store '%s' is not attached", s->path);
    bool pruned;
    return apply(s->fts, false, &pruned, err);
}

/* ---- verification -------------------------------------------------------------------------- */

/* Inside store_verify's write transaction, after store_fts_apply_locked: the index is built again
 * from the chunks in a temporary table and compared term by term (fts5vocab's rows: each term's
 * rows and occurrences) and row by row (each row's column sizes), which finds a row indexed with
 * other values than the chunk's, a removal that took the wrong values, a missing or extra row.
 * It costs what indexing every chunk costs, as FTS5's own content check did. */
qr_status store_fts_verify(store *s, char *err)
{
    fts_conn *c = s->fts;
    if (!c)
        return qr_fail(err, QR_EIO, "the full-text index of store '%s' is not attached", s->path);
    static const struct {
        const char *sql, *what;
    } diff[] = {
        {"SELECT count(*), min(term) FROM (SELECT term, doc, cnt FROM temp.fts_check_live"
         " EXCEPT SELECT term, doc, cnt FROM temp.fts_check_vocab)",
         "terms the chunks do not hold (first '%s')"},
        {"SELECT count(*), min(term) FROM (SELECT term, doc, cnt FROM temp.fts_check_vocab"
         " EXCEPT SELECT term, doc, cnt FROM temp.fts_check_live)",
         "terms of the chunks missing (first '%s')"},
        {"SELECT count(*), min(id) FROM (SELECT id, sz FROM fts.chunks_fts_docsize"
         " EXCEPT SELECT id, sz FROM temp.fts_check_docsize)",
         "rows that do not match their chunk (first id %s)"},
        {"SELECT count(*), min(id) FROM (SELECT id, sz FROM temp.fts_check_docsize"
         " EXCEPT SELECT id, sz FROM fts.chunks_fts_docsize)",
         "chunks missing or indexed otherwise (first id %s)"},
    };
    sqlite3_stmt *ins = NULL, *q = NULL;
    qr_status st =
        conn_exec(c,
                  "CREATE VIRTUAL TABLE temp.fts_check USING fts5(title, headings, body,"
                  "  content = '', tokenize = 'porter unicode61');"
                  " CREATE VIRTUAL TABLE temp.fts_check_vocab USING fts5vocab(temp, fts_check, row);"
                  " CREATE VIRTUAL TABLE temp.fts_check_live USING fts5vocab(fts, chunks_fts, row);",
                  err, "check the full-text index");
    int rc = SQLITE_OK;
    if (!st && (rc = sqlite3_prepare_v2(
                    c->db, "INSERT INTO temp.fts_check(rowid, title, headings, body) VALUES (?1, ?2, ?3, ?4)",
                    -1, &ins, NULL)) != SQLITE_OK)
        st = conn_fail(c, rc, err, "check the full-text index");
    if (!st)
        st = copy_stmt_rows(c, c->q[F_ALL], 0, ins, "check the full-text index", err);
    for (size_t i = 0; !st && i < sizeof(diff) / sizeof(diff[0]); i++) {
        rc = sqlite3_prepare_v2(c->db, diff[i].sql, -1, &q, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(q);
        if (rc != SQLITE_ROW)
            st = conn_fail(c, rc, err, "check the full-text index");
        else if (sqlite3_column_int64(q, 0) > 0) {
            char what[256];
            const char *ex = (const char *)sqlite3_column_text(q, 1);
            snprintf(what, sizeof(what), diff[i].what, ex ? ex : "");
            st = qr_fail(err, QR_EIO, "store '%s' is inconsistent: the full-text index has %lld %s", s->path,
                         (long long)sqlite3_column_int64(q, 0), what);
        }
        sqlite3_finalize(q);
        q = NULL;
    }
    sqlite3_finalize(ins);
    sqlite3_exec(c->db,
                 "DROP TABLE IF EXISTS temp.fts_check_live; DROP TABLE IF EXISTS temp.fts_check_vocab;"
                 " DROP TABLE IF EXISTS temp.fts_check",
                 NULL, NULL, NULL);
    return st;
}
