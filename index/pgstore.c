/*
 * pgstore: PostgreSQL as quarry's system of record (index/pgstore.h has the contract, the
 * tables and the counter argument). Writes check a document exactly as store_write.c does (its
 * checks are shared through store_int.h; metadata is made canonical by SQLite's json(), in a
 * private in-memory database, so that the text PostgreSQL keeps is the text a follower's store
 * keeps), then run one READ COMMITTED transaction in three round trips: a lookup (an unchanged
 * document ends there, without waiting for anyone), the counter row's UPDATE and the lookup again
 * under its lock in one libpq pipeline, and the writes with the COMMIT in another. Reads for
 * followers (pgstore_pull) are one REPEATABLE READ, READ ONLY transaction with results in binary
 * format: vectors travel as the raw float32 bytes they are stored as, integers as 8 bytes, with
 * no text to parse.
 *
 * libpq's messages and SQLSTATEs become quarry statuses in one place (pg_fail). Every value
 * goes to the server as a bound parameter; none is formatted into SQL.
 */
#include <endian.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/pgstore.h"
#include "index/store_int.h"
#include "index/vindex_int.h"

/* Vectors are stored as the host's float32 bytes, declared little-endian as in the local store. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "pgstore's vector bytes are little-endian float32");

#define PG_LOCK_TIMEOUT  "5s"
#define PG_NODE_NAME_MAX 256 /* the maintainer's are "<host>:<data dir>", up to 241 bytes */
#define PG_BUF_CAP       ((size_t)1 << 34)
/* pg_advisory_xact_lock's key for schema migrations: "quarry01" in ASCII */
#define PG_MIGRATE_LOCK "8175547842735714353"
/* chunks and vectors go to the server in groups of at most this many bytes of vectors */
#define PG_GROUP_BYTES  ((size_t)32 << 20)
#define PG_GROUP_CHUNKS 65536

/* PostgreSQL type OIDs (pg_type.h is server-side only) of the columns pgstore_pull reads */
#define OID_BOOL  16
#define OID_BYTEA 17
#define OID_INT8  20
#define OID_TEXT  25

struct pgstore {
    PGconn *conn;
    int64_t uid;
    int64_t dim;   /* the recorded embedding dimension once read (never changes); 0 */
    sqlite3 *json; /* in-memory, for canonical metadata */
    int piped;     /* statements sent in the open pipeline (pipe_begin); -1 outside one */
    sqlite3_stmt *json_q;
    /* a batch (pgstore_batch_begin): one transaction, each call inside it a savepoint */
    bool batch;
    bool sp;              /* a call's savepoint exists */
    bool release_pending; /* its release was sent in the open pipeline */
    bool batch_lost;      /* the batch's transaction is gone (a lost connection, a failed savepoint) */
    /* a write of the batch was released into it: the batch's transaction holds the counter row
     * lock until its commit (a savepoint rolled back gives its locks back, a released one keeps them) */
    bool holds_counter;
};

/* ---- schema ------------------------------------------------------------------------------ */

/* Migration i brings the schema from version i to i + 1, inside the transaction that records
 * it. Never edit a released migration: add one. */
static const char *const pg_migrations[] = {
    /* 1: the initial schema */
    "CREATE TABLE quarry.meta(key text PRIMARY KEY, value text NOT NULL);"
    /* the store's identity: 63 random bits from gen_random_uuid (a strong source), never 0 */
    "INSERT INTO quarry.meta(key, value) VALUES"
    "  ('store_uid', greatest(1, ('x' || substr(md5(gen_random_uuid()::text), 1, 16))::bit(64)::bigint"
    "                            & 9223372036854775807)::text),"
    "  ('tombstones_pruned', '0');"
    /* the one row every write transaction updates first (see pgstore.h) */
    "CREATE TABLE quarry.counter("
    "  one boolean PRIMARY KEY DEFAULT true CHECK (one),"
    "  value bigint NOT NULL, next_chunk bigint NOT NULL, next_doc bigint NOT NULL);"
    "INSERT INTO quarry.counter(value, next_chunk, next_doc) VALUES (0, 1, 1);"
    "CREATE TABLE quarry.documents("
    "  key bigint PRIMARY KEY, doc_id text NOT NULL UNIQUE,"
    "  title text NOT NULL, uri text NOT NULL, content_type text NOT NULL, metadata text NOT NULL,"
    "  content_hash text NOT NULL, text text NOT NULL, counter bigint NOT NULL);"
    "CREATE INDEX documents_counter ON quarry.documents(counter);"
    "CREATE TABLE quarry.chunks("
    "  id bigint PRIMARY KEY,"
    "  doc bigint NOT NULL REFERENCES quarry.documents(key) ON DELETE CASCADE,"
    "  ordinal integer NOT NULL, start bigint NOT NULL, \"end\" bigint NOT NULL,"
    "  headings text NOT NULL, counter bigint NOT NULL, UNIQUE (doc, ordinal));"
    "CREATE TABLE quarry.vectors("
    "  chunk_id bigint PRIMARY KEY REFERENCES quarry.chunks(id) ON DELETE CASCADE,"
    "  vec bytea NOT NULL, counter bigint NOT NULL);"
    /* float32 rows do not compress: spare the server pglz's attempt on large dimensions */
    "ALTER TABLE quarry.vectors ALTER COLUMN vec SET STORAGE EXTERNAL;"
    /* COLLATE "C": principals sort and compare byte by byte, as the local store's */
    "CREATE TABLE quarry.acl("
    "  doc bigint NOT NULL REFERENCES quarry.documents(key) ON DELETE CASCADE,"
    "  principal text COLLATE \"C\" NOT NULL, counter bigint NOT NULL,"
    "  PRIMARY KEY (doc, principal));"
    /* document keys are never reused, so one deletion per key */
    "CREATE TABLE quarry.tombstones(doc bigint PRIMARY KEY, doc_id text NOT NULL, counter bigint NOT NULL);"
    "CREATE INDEX tombstones_counter ON quarry.tombstones(counter);"
    "CREATE TABLE quarry.nodes(name text PRIMARY KEY, watermark bigint NOT NULL, updated_ms bigint NOT "
    "NULL);",
    /* 2: small named blobs every node shares (store_shared_read); each write draws a new version
     * from a sequence, so a version never comes back, even for a name deleted and created again */
    "CREATE TABLE quarry.shared(name text COLLATE \"C\" PRIMARY KEY, data bytea NOT NULL,"
    "  version bigint NOT NULL CHECK (version > 0));"
    "CREATE SEQUENCE quarry.shared_version;",
    /* 3: background jobs (store_job_*), readable from every node: the local store's jobs tables
     * (its migration 3) and node, the node that accepted the job, holds its staged upload and
     * resumes it. Ids compare byte by byte (COLLATE "C"), so listings page as the local store's. A
     * result keeps its document's failed and chunks beside its (canonical) JSON text. */
    "CREATE TABLE quarry.jobs("
    "  id text COLLATE \"C\" PRIMARY KEY, node text NOT NULL,"
    "  kind text NOT NULL, state text NOT NULL, \"user\" text NOT NULL,"
    "  created_ms bigint NOT NULL, started_ms bigint NOT NULL DEFAULT 0,"
    "  finished_ms bigint NOT NULL DEFAULT 0,"
    "  docs bigint NOT NULL DEFAULT 0, done bigint NOT NULL DEFAULT 0,"
    "  failed bigint NOT NULL DEFAULT 0, chunks bigint NOT NULL DEFAULT 0,"
    "  error text NOT NULL DEFAULT '', staged text NOT NULL DEFAULT '[]');"
    "CREATE INDEX jobs_created ON quarry.jobs(created_ms, id);"
    "CREATE INDEX jobs_finished ON quarry.jobs(finished_ms);"
    "CREATE INDEX jobs_unfinished ON quarry.jobs(node, created_ms, id)"
    "  WHERE state IN ('queued', 'running', 'interrupted');"
    "CREATE TABLE quarry.job_results("
    "  job text COLLATE \"C\" NOT NULL REFERENCES quarry.jobs(id) ON DELETE CASCADE,"
    "  ordinal bigint NOT NULL, failed boolean NOT NULL, chunks bigint NOT NULL, result text NOT NULL,"
    "  PRIMARY KEY (job, ordinal));",
    /* 4: failed-login counters every node shares (pgstore_failures_count), timed by the server's
     * clock. A window's end is fixed when it starts, so that expired rows are the same for every
     * caller; later counts delete them, oldest first, through the index on window_end. */
    "CREATE TABLE quarry.login_failures(key text COLLATE \"C\" PRIMARY KEY,"
    "  window_start timestamptz NOT NULL, window_end timestamptz NOT NULL,"
    "  failures integer NOT NULL CHECK (failures > 0));"
    "CREATE INDEX login_failures_end ON quarry.login_failures(window_end);",
};
#define PG_SCHEMA_VERSION ((int)(sizeof(pg_migrations) / sizeof(pg_migrations[0])))

/* ---- errors and statements ----------------------------------------------------------------- */

/* The status a failed result (or a lost connection, r NULL) stands for. */
static qr_status pg_status(PGconn *c, const PGresult *r)
{
    if (PQstatus(c) == CONNECTION_BAD)
        return QR_EUNAVAILABLE;
    const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!code)
        return QR_EIO;
    if (strncmp(code, "08", 2) == 0 || strncmp(code, "57P", 3) == 0 || strcmp(code, "25006") == 0)
        return QR_EUNAVAILABLE; /* connection, shutdown, or a write on a standby */
    if (strcmp(code, "40001") == 0 || strcmp(code, "40P01") == 0)
        return QR_EUNAVAILABLE; /* transient: a standby cancelled a read that held back its replay */
    if (strcmp(code, "55P03") == 0 || strcmp(code, "57014") == 0)
        return QR_ETIMEOUT; /* lock_timeout, statement_timeout */
    if (strcmp(code, "53100") == 0)
        return QR_ENOSPC;
    if (strcmp(code, "53200") == 0)
        return QR_ENOMEM;
    return QR_EIO;
}

/* Fills err with "PostgreSQL: cannot <what>: <its message on one line>" and returns the status. */
static qr_status pg_fail(pgstore *pg, const PGresult *r, char *err, const char *what)
{
    const char *msg = r ? PQresultErrorMessage(r) : "";
    if (!msg[0])
        msg = PQerrorMessage(pg->conn);
    char line[QR_ERR_LEN];
    snprintf(line, sizeof(line), "%s", msg);
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    size_t n = strlen(line);
    while (n && line[n - 1] == ' ')
        line[--n] = '\0';
    return qr_fail(err, pg_status(pg->conn, r), "PostgreSQL: cannot %s: %s", what, line);
}

/* Bound parameters of one statement, in text format but for p_bytes: bytes with their length in
 * binary format (a text value's binary form is its bytes), which need no NUL at their end. */
#define PG_MAX_PARAMS 16
typedef struct {
    const char *v[PG_MAX_PARAMS];
    int len[PG_MAX_PARAMS];
    int fmt[PG_MAX_PARAMS];
    char num[PG_MAX_PARAMS][24];
    int n;
} pg_params;

static void p_int(pg_params *p, int64_t v)
{
    snprintf(p->num[p->n], sizeof(p->num[0]), "%lld", (long long)v);
    p->v[p->n] = p->num[p->n];
    p->len[p->n] = 0;
    p->fmt[p->n++] = 0;
}

static void p_bytes(pg_params *p, const void *v, size_t n)
{
    p->v[p->n] = n ? v : "";
    p->len[p->n] = (int)n;
    p->fmt[p->n++] = 1;
}

static void p_str(pg_params *p, const char *s)
{
    p->v[p->n] = s;
    p->len[p->n] = 0;
    p->fmt[p->n++] = 0;
}

/* Runs sql with p's parameters; on success *out (may be NULL: cleared) holds the result, rows in
 * text format, or binary when binary. */
static qr_status pg_exec(pgstore *pg, const char *sql, const pg_params *p, bool binary, PGresult **out,
                         char *err, const char *what)
{
    if (out)
        *out = NULL;
    if (pg->piped >= 0) {
        /* in a pipeline: sent now (libpq copies the values), its result read by pipe_end */
        if (!PQsendQueryParams(pg->conn, sql, p ? p->n : 0, NULL, p ? p->v : NULL, p ? p->len : NULL,
                               p ? p->fmt : NULL, binary))
            return pg_fail(pg, NULL, err, what);
        pg->piped++;
        return QR_OK;
    }
    PGresult *r = PQexecParams(pg->conn, sql, p ? p->n : 0, NULL, p ? p->v : NULL, p ? p->len : NULL,
                               p ? p->fmt : NULL, binary);
    ExecStatusType es = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK) {
        qr_status st = pg_fail(pg, r, err, what);
        PQclear(r);
        return st;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return QR_OK;
}

/* A pipeline (libpq 14): the statements pg_exec is given from pipe_begin to pipe_end go to the
 * server together and cost one round trip, for writes whose results the next ones do not need.
 * They run in order; after a failure the server skips the rest, and pipe_end returns the first
 * failure. */
static qr_status pipe_begin(pgstore *pg, char *err)
{
    if (!PQenterPipelineMode(pg->conn))
        return pg_fail(pg, NULL, err, "start a pipeline");
    pg->piped = 0;
    return QR_OK;
}

/* keep[i] (i < nkeep, may be NULL) receives the rows of the i-th statement sent, when it
 * succeeded: PQclear() them. */
static qr_status pipe_end(pgstore *pg, qr_status st, PGresult **keep, int nkeep, char *err, const char *what)
{
    int n = pg->piped;
    pg->piped = -1;
    for (int i = 0; i < nkeep; i++)
        keep[i] = NULL;
    if (!PQpipelineSync(pg->conn) && !st)
        st = pg_fail(pg, NULL, err, what);
    /* every statement sent has its result, then a NULL; the sync has its result alone */
    for (int i = 0; i <= n; i++) {
        PGresult *r = PQgetResult(pg->conn);
        if (!r)
            break; /* the connection is gone: nothing more will come */
        ExecStatusType es = PQresultStatus(r);
        if (i < n)
            PQclear(PQgetResult(pg->conn));
        if (!st && es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK && es != PGRES_PIPELINE_SYNC &&
            es != PGRES_PIPELINE_ABORTED)
            st = pg_fail(pg, r, err, what);
        if (i < nkeep && es == PGRES_TUPLES_OK) {
            keep[i] = r;
            continue;
        }
        PQclear(r);
    }
    if (!PQexitPipelineMode(pg->conn) && !st)
        st = pg_fail(pg, NULL, err, what);
    if (pg->release_pending && !st) { /* the call's savepoint was released with the rest */
        pg->sp = false;
        pg->holds_counter = true;
    }
    pg->release_pending = false;
    return st;
}

/* Runs a script of several statements without parameters (a migration). */
static qr_status pg_script(pgstore *pg, const char *sql, char *err, const char *what)
{
    PGresult *r = PQexec(pg->conn, sql);
    qr_status st = r && PQresultStatus(r) == PGRES_COMMAND_OK ? QR_OK : pg_fail(pg, r, err, what);
    PQclear(r);
    return st;
}

/* An int64 of a text result; 0 when the row is absent or the value NULL. */
static int64_t text_i64(const PGresult *r, int row, int col)
{
    if (PQntuples(r) <= row || PQgetisnull(r, row, col))
        return 0;
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static qr_status pg_int(pgstore *pg, const char *sql, const pg_params *p, int64_t *out, char *err,
                        const char *what)
{
    PGresult *r;
    qr_status st = pg_exec(pg, sql, p, false, &r, err, what);
    if (!st) {
        *out = text_i64(r, 0, 0);
        PQclear(r);
    }
    return st;
}

/* Runs one statement without parameters or rows; whether it succeeded. */
static bool pg_simple(pgstore *pg, const char *sql)
{
    PGresult *r = PQexec(pg->conn, sql);
    bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok;
}

/* Ends whatever transaction the connection is in (after a failure: nothing of it stays). Inside
 * a batch, ends the call's savepoint instead: what the call did goes, the batch stays. */
static void pg_rollback(pgstore *pg)
{
    PGTransactionStatusType ts = PQtransactionStatus(pg->conn);
    if (pg->batch) {
        if (pg->sp && !(pg_simple(pg, "ROLLBACK TO SAVEPOINT quarry_call") &&
                        pg_simple(pg, "RELEASE SAVEPOINT quarry_call")))
            pg->batch_lost = true;
        else if (!pg->sp && ts != PQTRANS_INTRANS)
            pg->batch_lost = true; /* an error outside any savepoint aborted the batch */
        pg->sp = false;
        return;
    }
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
        PQclear(PQexec(pg->conn, "ROLLBACK"));
}

/* The server's notices ("already exists, skipping") are not for quarry's users. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* The session's settings, after every (re)connection: writers wait for the counter row lock
 * at most PG_LOCK_TIMEOUT, as the local store's writers wait for its write lock. */
static qr_status pg_session(pgstore *pg, char *err)
{
    if (PQstatus(pg->conn) != CONNECTION_OK)
        return pg_fail(pg, NULL, err, "connect");
    PQsetNoticeProcessor(pg->conn, ignore_notice, NULL);
    if (PQsetClientEncoding(pg->conn, "UTF8") != 0)
        return pg_fail(pg, NULL, err, "set the client encoding to UTF8");
    const char *enc = PQparameterStatus(pg->conn, "server_encoding");
    if (!enc || strcmp(enc, "UTF8") != 0)
        return qr_fail(err, QR_EINVAL,
                       "the PostgreSQL database's encoding is %s; quarry needs UTF8 (CREATE "
                       "DATABASE ... ENCODING 'UTF8')",
                       enc ? enc : "unknown");
    return pg_exec(pg, "SET lock_timeout = '" PG_LOCK_TIMEOUT "'", NULL, false, NULL, err,
                   "set lock_timeout");
}

/* Makes sure the connection is up before a call: a connection lost earlier (a failover, a
 * restarted server) is made again. */
static qr_status pg_ready(pgstore *pg, char *err)
{
    if (pg->batch && (pg->batch_lost || PQstatus(pg->conn) != CONNECTION_OK)) {
        pg->batch_lost = true; /* a new connection would be outside the batch's transaction */
        return qr_fail(err, QR_EUNAVAILABLE,
                       "PostgreSQL: the open batch was rolled back (its connection or transaction was lost)");
    }
    if (PQstatus(pg->conn) == CONNECTION_OK)
        return QR_OK;
    PQreset(pg->conn);
    return pg_session(pg, err);
}

/* Begins a call's transaction; inside a batch, its savepoint. */
static const char *begin_sql(pgstore *pg)
{
    if (!pg->batch)
        return "BEGIN";
    pg->sp = true; /* sent; a failure to make it aborts the batch's transaction (pg_rollback) */
    return "SAVEPOINT quarry_call";
}

static qr_status pg_begin(pgstore *pg, char *err)
{
    qr_status st = pg_exec(pg, begin_sql(pg), NULL, false, NULL, err, "begin a transaction");
    if (st && pg->batch)
        pg->sp = false;
    return st;
}

/* Commits a call's transaction; inside a batch, releases its savepoint (the batch commits at
 * pgstore_batch_commit). */
static qr_status pg_commit(pgstore *pg, char *err)
{
    if (!pg->batch)
        return pg_exec(pg, "COMMIT", NULL, false, NULL, err, "commit");
    qr_status st = pg_exec(pg, "RELEASE SAVEPOINT quarry_call", NULL, false, NULL, err, "end a write");
    if (!st && pg->piped >= 0)
        pg->release_pending = true;
    else if (!st) {
        pg->sp = false;
        pg->holds_counter = true;
    }
    return st;
}

/* ---- opening --------------------------------------------------------------------------------- */

static qr_status schema_version(pgstore *pg, int64_t *version, char *err)
{
    return pg_int(pg, "SELECT coalesce(max(version), 0) FROM quarry.schema_version", NULL, version, err,
                  "read the schema version");
}

/* Brings the schema to PG_SCHEMA_VERSION in one transaction under an advisory lock, so that of
 * two nodes starting together one migrates and the other then finds the schema current. */
static qr_status migrate(pgstore *pg, char *err)
{
    int64_t version = 0;
    qr_status st;
    if ((st = pg_begin(pg, err)) ||
        (st = pg_exec(pg, "SELECT pg_advisory_xact_lock(" PG_MIGRATE_LOCK ")", NULL, false, NULL, err,
                      "take the migration lock")) ||
        (st = pg_script(pg,
                        "CREATE SCHEMA IF NOT EXISTS quarry;"
                        "CREATE TABLE IF NOT EXISTS quarry.schema_version("
                        "  version integer PRIMARY KEY, applied_ms bigint NOT NULL)",
                        err, "create the schema version table")) ||
        (st = schema_version(pg, &version, err)))
        goto out;
    for (int v = (int)version; v < PG_SCHEMA_VERSION; v++) {
        char what[64];
        snprintf(what, sizeof(what), "migrate the schema to version %d", v + 1);
        pg_params p = {0};
        p_int(&p, v + 1);
        p_int(&p, qr_wall_ms());
        /* a multi-statement string cannot take parameters: the migration, then its record */
        if ((st = pg_script(pg, pg_migrations[v], err, what)) ||
            (st = pg_exec(pg, "INSERT INTO quarry.schema_version(version, applied_ms) VALUES ($1, $2)", &p,
                          false, NULL, err, what)))
            goto out;
    }
    if (version > PG_SCHEMA_VERSION) {
        st = qr_fail(err, QR_EINVAL,
                     "the PostgreSQL store has schema %lld, this quarry knows up to %d: upgrade quarry",
                     (long long)version, PG_SCHEMA_VERSION);
        goto out;
    }
    st = pg_commit(pg, err);
out:
    pg_rollback(pg);
    return st;
}

/* Whether quarry's schema is there and its version (0 when not), read without taking a lock or
 * creating anything: what a standby, or a node opening a current store, needs. */
static qr_status read_schema(pgstore *pg, int64_t *version, char *err)
{
    int64_t exists = 0;
    *version = 0;
    qr_status st = pg_int(
        pg, "SELECT count(*) FROM pg_tables WHERE schemaname = 'quarry' AND tablename = 'schema_version'",
        NULL, &exists, err, "look for quarry's schema");
    return st || !exists ? st : schema_version(pg, version, err);
}

/* Makes sure the schema is current: migrates it on a primary when it is older (or absent); a
 * standby cannot create anything, so there it must be current already. */
static qr_status prepare_schema(pgstore *pg, char *err)
{
    int64_t standby = 0, version = 0;
    qr_status st;
    if ((st = pg_int(pg, "SELECT pg_is_in_recovery()::int", NULL, &standby, err,
                     "ask whether the server is a standby")) ||
        (st = read_schema(pg, &version, err)))
        return st;
    if (version > PG_SCHEMA_VERSION)
        return qr_fail(err, QR_EINVAL,
                       "the PostgreSQL store has schema %lld, this quarry knows up to %d: upgrade quarry",
                       (long long)version, PG_SCHEMA_VERSION);
    if (version == PG_SCHEMA_VERSION)
        return QR_OK;
    if (standby)
        return qr_fail(
            err, QR_EINVAL,
            "the PostgreSQL server is a standby and quarry's schema there is at version %lld, not %d: "
            "open the store on the primary first",
            (long long)version, PG_SCHEMA_VERSION);
    return migrate(pg, err);
}

qr_status pgstore_open(const char *conninfo, pgstore **out, char *err)
{
    if (!conninfo || !out)
        return qr_fail(err, QR_EINVAL, "pgstore_open: NULL argument");
    *out = NULL;
    char *why = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &why);
    if (!opts) {
        qr_status bad = why ? qr_fail(err, QR_EINVAL, "invalid PostgreSQL connection string: %s", why)
                            : qr_fail(err, QR_ENOMEM, "out of memory for a PostgreSQL connection string");
        PQfreemem(why);
        return bad;
    }
    PQconninfoFree(opts);
    pgstore *pg = calloc(1, sizeof(*pg));
    if (!pg)
        return qr_fail(err, QR_ENOMEM, "out of memory for a PostgreSQL handle");
    pg->piped = -1;
    qr_status st = QR_OK;
    pg->conn = PQconnectdb(conninfo);
    if (!pg->conn) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for a PostgreSQL connection");
        goto out;
    }
    if ((st = pg_session(pg, err)) || (st = prepare_schema(pg, err)) ||
        (st = pg_int(pg, "SELECT value::bigint FROM quarry.meta WHERE key = 'store_uid'", NULL, &pg->uid, err,
                     "read the store uid")))
        goto out;
    int rc = sqlite3_open_v2(":memory:", &pg->json, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(pg->json, STORE_JSON_CHECK_SQL, -1, &pg->json_q, NULL);
    if (rc != SQLITE_OK)
        st = qr_fail(err, rc == SQLITE_NOMEM ? QR_ENOMEM : QR_EINTERNAL,
                     "cannot prepare the metadata check: %s",
                     pg->json ? sqlite3_errmsg(pg->json) : sqlite3_errstr(rc));
out:
    if (st) {
        pgstore_close(pg);
        return st;
    }
    *out = pg;
    return QR_OK;
}

void pgstore_close(pgstore *pg)
{
    if (!pg)
        return;
    sqlite3_finalize(pg->json_q);
    sqlite3_close(pg->json);
    PQfinish(pg->conn);
    free(pg);
}

/* ---- members ----------------------------------------------------------------------------------- */

#define PG_MEMBERS_MAX 16

/* The i-th entry of a comma-separated list (host, hostaddr or port) into out; a list of one entry
 * stands for every member. */
static qr_status list_entry(const char *list, size_t i, char *out, size_t cap, const char *what, char *err)
{
    const char *p = list;
    for (size_t k = 0; k < i; k++) {
        const char *comma = strchr(p, ',');
        if (!comma)
            return qr_fail(err, QR_EINVAL, "store.postgres_members: fewer %s entries than members in '%s'",
                           what, list);
        p = comma + 1;
    }
    size_t len = strcspn(p, ",");
    if (len == 0)
        return qr_fail(err, QR_EINVAL, "store.postgres_members: an empty %s in the list '%s'", what, list);
    if (len >= cap)
        return qr_fail(err, QR_EINVAL, "store.postgres_members: the %s '%.*s' is too long", what, (int)len,
                       p);
    memcpy(out, p, len);
    out[len] = '\0';
    return QR_OK;
}

static size_t list_count(const char *list)
{
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    return n;
}

/* keyword='value' with the value quoted as libpq reads it (\' and \\). */
static qr_status put_option(qr_buf *b, const char *key, const char *value)
{
    qr_buf_printf(b, "%s%s='", qr_buf_len(b) ? " " : "", key);
    for (const char *p = value; *p; p++) {
        if (*p == '\'' || *p == '\\')
            qr_buf_putc(b, '\\');
        qr_buf_putc(b, *p);
    }
    qr_buf_putc(b, '\'');
    return qr_buf_failed(b);
}

static qr_status member_conninfo(const PQconninfoOption *opts, const char *hosts, const char *addrs,
                                 const char *ports, size_t i, char **out, char *err)
{
    char host[256] = "", addr[256] = "", port[32] = "";
    qr_status st = QR_OK;
    if (hosts && (st = list_entry(hosts, list_count(hosts) == 1 ? 0 : i, host, sizeof(host), "host", err)))
        return st;
    if (addrs &&
        (st = list_entry(addrs, list_count(addrs) == 1 ? 0 : i, addr, sizeof(addr), "hostaddr", err)))
        return st;
    if (ports && (st = list_entry(ports, list_count(ports) == 1 ? 0 : i, port, sizeof(port), "port", err)))
        return st;
    qr_buf b;
    qr_buf_init(&b, 1u << 16);
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val || strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "hostaddr") == 0 ||
            strcmp(o->keyword, "port") == 0 || strcmp(o->keyword, "target_session_attrs") == 0)
            continue;
        put_option(&b, o->keyword, o->val);
    }
    if (*host)
        put_option(&b, "host", host);
    if (*addr)
        put_option(&b, "hostaddr", addr);
    if (*port)
        put_option(&b, "port", port);
    /* each member is asked as it is, primary or standby */
    put_option(&b, "target_session_attrs", "any");
    if ((st = qr_buf_failed(&b))) {
        qr_buf_release(&b);
        return qr_fail(err, st, "store.postgres_members: the connection string is too long");
    }
    *out = qr_buf_detach(&b);
    return *out ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory");
}

void pgstore_members_free(char **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

qr_status pgstore_members(const char *conninfo, char ***out, size_t *n, char *err)
{
    if (!conninfo || !out || !n)
        return qr_fail(err, QR_EINVAL, "pgstore_members: NULL argument");
    *out = NULL;
    *n = 0;
    char *why = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &why);
    if (!opts) {
        qr_status bad =
            why ? qr_fail(err, QR_EINVAL, "store.postgres_members: invalid connection string: %s", why)
                : qr_fail(err, QR_ENOMEM, "out of memory for a PostgreSQL connection string");
        PQfreemem(why);
        return bad;
    }
    const char *hosts = NULL, *addrs = NULL, *ports = NULL;
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        const char *v = o->val && *o->val ? o->val : NULL;
        if (strcmp(o->keyword, "host") == 0)
            hosts = v;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            addrs = v;
        else if (strcmp(o->keyword, "port") == 0)
            ports = v;
    }
    qr_status st = QR_OK;
    size_t count = hosts ? list_count(hosts) : addrs ? list_count(addrs) : 0;
    if (count == 0)
        st = qr_fail(err, QR_EINVAL,
                     "store.postgres_members: name every PostgreSQL member by host (host=a,b port=p1,p2)");
    else if (count > PG_MEMBERS_MAX)
        st =
            qr_fail(err, QR_EINVAL, "store.postgres_members: %zu members; at most %d", count, PG_MEMBERS_MAX);
    else if ((hosts && addrs && list_count(addrs) != count && list_count(addrs) != 1) ||
             (ports && list_count(ports) != count && list_count(ports) != 1))
        st = qr_fail(err, QR_EINVAL,
                     "store.postgres_members: %zu hosts but another number of hostaddr or port entries",
                     count);
    char **list = st ? NULL : calloc(count, sizeof(*list));
    if (!st && !list)
        st = qr_fail(err, QR_ENOMEM, "out of memory");
    for (size_t i = 0; !st && i < count; i++)
        st = member_conninfo(opts, hosts, addrs, ports, i, &list[i], err);
    PQconninfoFree(opts);
    if (st) {
        pgstore_members_free(list, count);
        return st;
    }
    *out = list;
    *n = count;
    return QR_OK;
}

int64_t pgstore_uid(const pgstore *pg)
{
    return pg ? pg->uid : 0;
}

/* ---- embedding ------------------------------------------------------------------------------ */

static qr_status read_dim(pgstore *pg, char *err)
{
    if (pg->dim)
        return QR_OK;
    return pg_int(pg, "SELECT value::bigint FROM quarry.meta WHERE key = 'embedding_dim'", NULL, &pg->dim,
                  err, "read the embedding dimension");
}

qr_status pgstore_embedding(pgstore *pg, char *model, size_t cap, int *dim, char *err)
{
    if (!pg || !model || !cap || !dim)
        return qr_fail(err, QR_EINVAL, "pgstore_embedding: NULL argument");
    model[0] = '\0';
    *dim = 0;
    qr_status st = pg_ready(pg, err);
    if (st)
        return st;
    PGresult *r = NULL;
    if (!(st = pg_exec(pg,
                       "SELECT (SELECT value FROM quarry.meta WHERE key = 'embedding_model'),"
                       " (SELECT value::bigint FROM quarry.meta WHERE key = 'embedding_dim')",
                       NULL, false, &r, err, "read the embedding model")) &&
        !PQgetisnull(r, 0, 0)) {
        snprintf(model, cap, "%s", PQgetvalue(r, 0, 0));
        *dim = (int)text_i64(r, 0, 1);
    }
    PQclear(r);
    return st;
}

qr_status pgstore_check_embedding(pgstore *pg, const char *model, int dim, char *err)
{
    if (!pg || !model)
        return qr_fail(err, QR_EINVAL, "pgstore_check_embedding: NULL argument");
    qr_status st = store_check_field("embedding model name", model, STORE_MODEL_MAX, false, err);
    if (st)
        return st;
    if (dim <= 0 || dim > STORE_DIM_MAX)
        return qr_fail(err, QR_EINVAL, "invalid embedding dimension %d: expected 1..%d", dim, STORE_DIM_MAX);
    if ((st = pg_ready(pg, err)))
        return st;
    pg_params p = {0};
    PGresult *r = NULL;
    p_str(&p, model);
    p_int(&p, dim);
    /* the first node to record a model wins; a node racing it waits for its commit, inserts
     * nothing and compares with what it recorded */
    if ((st = pg_begin(pg, err)) ||
        (st = pg_exec(
             pg,
             "INSERT INTO quarry.meta(key, value) VALUES ('embedding_model', $1), ('embedding_dim', $2)"
             " ON CONFLICT (key) DO NOTHING",
             &p, false, NULL, err, "record the embedding model")) ||
        (st = pg_exec(pg,
                      "SELECT (SELECT value FROM quarry.meta WHERE key = 'embedding_model'),"
                      " (SELECT value::bigint FROM quarry.meta WHERE key = 'embedding_dim')",
                      NULL, false, &r, err, "read the embedding model")))
        goto out;
    const char *stored = PQgetvalue(r, 0, 0);
    int64_t stored_dim = text_i64(r, 0, 1);
    if (strcmp(stored, model) != 0 || stored_dim != dim) {
        st = qr_fail(
            err, QR_EINVAL,
            "the PostgreSQL store holds vectors of embedding model '%s' (dimension %lld); refusing model "
            "'%s' (dimension %d): use the same model, or a new store",
            stored, (long long)stored_dim, model, dim);
        goto out;
    }
    if (!(st = pg_commit(pg, err)))
        pg->dim = dim;
out:
    PQclear(r);
    pg_rollback(pg);
    return st;
}

/* ---- checking a document ---------------------------------------------------------------------- */

/* A PostgreSQL array literal of strings ({"a","b \"c\""}) for a text[] parameter. */
static qr_status text_array(qr_buf *b, const char *const *v, size_t n, size_t stride, char *err)
{
    qr_buf_reset(b);
    qr_buf_putc(b, '{');
    for (size_t i = 0; i < n; i++) {
        const char *s = *(const char *const *)((const char *)v + i * stride);
        qr_buf_puts(b, i ? ",\"" : "\"");
        for (; s && *s; s++) {
            if (*s == '"' || *s == '\\')
                qr_buf_putc(b, '\\');
            qr_buf_putc(b, *s);
        }
        qr_buf_putc(b, '"');
    }
    qr_buf_putc(b, '}');
    qr_status st = qr_buf_failed(b);
    return st ? qr_fail(err, st, "out of memory for an array of %zu strings", n) : QR_OK;
}

/* ---- writing ---------------------------------------------------------------------------------- */

/* PostgreSQL keeps at most 1 GB in one field. */
#define PG_FIELD_MAX ((size_t)1 << 30)

/* What the store holds for a doc_id, compared with a write's input. */
typedef struct {
    bool found;
    int64_t key;
    bool same_hash, same_title, same_fields, same_acl;
} pg_doc;

/* Looks doc_id up (its parameters: doc_id, the sorted ACL as an array literal). */
#define FIND_DOC_SQL                                                                     \
    "SELECT key, content_hash, title, uri, content_type, metadata,"                      \
    " (array(SELECT principal FROM quarry.acl a WHERE a.doc = d.key ORDER BY principal)" \
    "  = $2::text[])::int"                                                               \
    " FROM quarry.documents d WHERE doc_id = $1"

/* FIND_DOC_SQL's row compared with in (NULL: presence and ACL only). */
static void read_doc(const PGresult *r, const store_put_input *in, pg_doc *d)
{
    memset(d, 0, sizeof(*d));
    if (PQntuples(r) != 1)
        return;
    d->found = true;
    d->key = text_i64(r, 0, 0);
    d->same_acl = text_i64(r, 0, 6) == 1;
    if (in) {
        d->same_hash = strcmp(PQgetvalue(r, 0, 1), in->hash) == 0;
        d->same_title = strcmp(PQgetvalue(r, 0, 2), in->title) == 0;
        d->same_fields = strcmp(PQgetvalue(r, 0, 3), in->uri) == 0 &&
                         strcmp(PQgetvalue(r, 0, 4), in->content_type) == 0 &&
                         strcmp(PQgetvalue(r, 0, 5), in->metadata) == 0;
    }
}

/* The ids a write takes with the counter row. */
typedef struct {
    int64_t counter;     /* the write's change counter */
    int64_t first_chunk; /* the first of the nchunks chunk ids asked for */
    int64_t doc_key;     /* a key for the document, should it turn out new */
} pg_ids;

/*
 * Looks doc_id up (with BEGIN, as the write's transaction begins, when begin) and, when lock,
 * then takes the counter row -- its lock, to commit, and the ids -- and looks doc_id up again
 * under that lock; *d has the last lookup. All in one pipeline, one round trip: the second lookup
 * is a statement of its own, so its snapshot is taken once the UPDATE holds the lock and holds
 * every earlier writer (pgstore.h). The UPDATE hands out nchunks chunk ids and one document key
 * before it is known whether the document is new or its content changed: ids a write does not use
 * are left unused, which nothing minds (they only need to increase).
 */
static qr_status look_up(pgstore *pg, bool begin, bool lock, const char *doc_id, const store_put_input *in,
                         const char *acl_lit, size_t nchunks, pg_ids *ids, pg_doc *d, char *err)
{
    PGresult *res[4];
    pg_params f = {0}, u = {0};
    p_str(&f, doc_id);
    p_str(&f, acl_lit ? acl_lit : "{}");
    p_int(&u, (int64_t)nchunks);
    qr_status st = pipe_begin(pg, err);
    if (st)
        return st;
    int at = 0, updated = -1, found = -1;
    if (begin && !(st = pg_exec(pg, begin_sql(pg), NULL, false, NULL, err, "begin a transaction")))
        at++;
    if (!st && !lock && !(st = pg_exec(pg, FIND_DOC_SQL, &f, false, NULL, err, "look up a document")))
        found = at++;
    if (!st && lock &&
        !(st = pg_exec(pg,
                       "UPDATE quarry.counter SET value = value + 1, next_chunk = next_chunk + $1,"
                       " next_doc = next_doc + 1 RETURNING value, next_chunk - $1, next_doc - 1",
                       &u, false, NULL, err, "move the change counter")))
        updated = at++;
    if (!st && lock && !(st = pg_exec(pg, FIND_DOC_SQL, &f, false, NULL, err, "look up a document")))
        found = at++;
    if ((st = pipe_end(pg, st, res, at, err, lock ? "move the change counter" : "look up a document")))
        goto out;
    if (updated >= 0) {
        ids->counter = text_i64(res[updated], 0, 0);
        ids->first_chunk = text_i64(res[updated], 0, 1);
        ids->doc_key = text_i64(res[updated], 0, 2);
    }
    read_doc(res[found], in, d);
out:
    for (int i = 0; i < at; i++)
        PQclear(res[i]);
    return st;
}

static qr_status write_acl(pgstore *pg, int64_t key, bool is_new, const char *acl_lit, int64_t counter,
                           char *err)
{
    pg_params p = {0};
    p_int(&p, key);
    qr_status st = is_new ? QR_OK
                          : pg_exec(pg, "DELETE FROM quarry.acl WHERE doc = $1", &p, false, NULL, err,
                                    "delete ACL rows");
    p_str(&p, acl_lit);
    p_int(&p, counter);
    if (!st)
        st = pg_exec(pg,
                     "INSERT INTO quarry.acl(doc, principal, counter) SELECT $1::bigint, unnest($2::text[]), "
                     "$3::bigint",
                     &p, false, NULL, err, "insert ACL rows");
    return st;
}

/* Inserts chunks [0, nchunks) with ids first.. and their vectors, L2-normalised as the local
 * store keeps them (a zero vector stays zeros), in groups of bounded size. */
static qr_status insert_chunks(pgstore *pg, int64_t key, const store_chunk *chunks, size_t nchunks,
                               const float *vectors, int dim, int64_t first, int64_t counter, char *err)
{
    size_t rowb = (size_t)dim * sizeof(float);
    size_t per = nchunks ? PG_GROUP_BYTES / rowb : 0;
    per = per < 1 ? 1 : per > PG_GROUP_CHUNKS ? PG_GROUP_CHUNKS : per;
    qr_buf starts, ends, heads;
    qr_buf_init(&starts, PG_BUF_CAP);
    qr_buf_init(&ends, PG_BUF_CAP);
    qr_buf_init(&heads, PG_BUF_CAP);
    float *rows = NULL;
    qr_status st = QR_OK;
    if (nchunks && !(rows = malloc((nchunks < per ? nchunks : per) * rowb)))
        st = qr_fail(err, QR_ENOMEM, "out of memory for %zu vectors", nchunks < per ? nchunks : per);
    for (size_t at = 0; !st && at < nchunks; at += per) {
        size_t n = nchunks - at < per ? nchunks - at : per;
        qr_buf_reset(&starts);
        qr_buf_reset(&ends);
        for (size_t i = 0; i < n; i++) {
            qr_buf_printf(&starts, "%c%zu", i ? ',' : '{', chunks[at + i].start);
            qr_buf_printf(&ends, "%c%zu", i ? ',' : '{', chunks[at + i].end);
            if (!vindex_normalize_row(vectors + (at + i) * (size_t)dim, rows + i * (size_t)dim, dim))
                memset(rows + i * (size_t)dim, 0, rowb);
        }
        qr_buf_putc(&starts, '}');
        qr_buf_putc(&ends, '}');
        if ((st = qr_buf_failed(&starts)) || (st = qr_buf_failed(&ends))) {
            st = qr_fail(err, st, "out of memory for %zu chunk offsets", n);
            break;
        }
        if ((st = text_array(&heads, (const char *const *)&chunks[at].headings, n, sizeof(store_chunk), err)))
            break;
        pg_params p = {0};
        p_int(&p, first + (int64_t)at);
        p_int(&p, key);
        p_int(&p, counter);
        p_str(&p, qr_buf_str(&starts));
        p_str(&p, qr_buf_str(&ends));
        p_str(&p, qr_buf_str(&heads));
        p_int(&p, (int64_t)at);
        if ((st = pg_exec(
                 pg,
                 "INSERT INTO quarry.chunks(id, doc, ordinal, start, \"end\", headings, counter)"
                 " SELECT $1::bigint + t.o - 1, $2::bigint, $7::int + t.o - 1, t.s, t.e, t.h, $3::bigint"
                 " FROM unnest($4::bigint[], $5::bigint[], $6::text[]) WITH ORDINALITY AS t(s, e, h, o)",
                 &p, false, NULL, err, "insert chunks")))
            break;
        pg_params v = {0};
        p_int(&v, first + (int64_t)at);
        p_bytes(&v, rows, n * rowb);
        p_int(&v, (int64_t)rowb);
        p_int(&v, (int64_t)n);
        p_int(&v, counter);
        st = pg_exec(
            pg,
            "INSERT INTO quarry.vectors(chunk_id, vec, counter)"
            " SELECT $1::bigint + i, substring($2::bytea FROM i * $3::int + 1 FOR $3::int), $5::bigint"
            " FROM generate_series(0, $4::int - 1) AS i",
            &v, false, NULL, err, "insert vectors");
    }
    free(rows);
    qr_buf_release(&starts);
    qr_buf_release(&ends);
    qr_buf_release(&heads);
    return st;
}

/* store_write.c's check_store_dim: vectors need the recorded dimension. */
static qr_status check_dim(pgstore *pg, const char *doc_id, size_t nchunks, int dim, char *err)
{
    if (!nchunks)
        return QR_OK;
    qr_status st = read_dim(pg, err);
    if (st)
        return st;
    if (pg->dim == 0)
        return qr_fail(err, QR_EINVAL,
                       "document '%.200s': the store has no embedding model recorded yet (call "
                       "pgstore_check_embedding first)",
                       doc_id);
    if (pg->dim != dim)
        return qr_fail(err, QR_EINVAL, "document '%.200s': vectors have dimension %d, the store's are %lld",
                       doc_id, dim, (long long)pg->dim);
    return QR_OK;
}

static bool unchanged(const pg_doc *d)
{
    return d->found && d->same_hash && d->same_title && d->same_fields && d->same_acl;
}

qr_status pgstore_put(pgstore *pg, const store_document *doc, const store_chunk *chunks, size_t nchunks,
                      const float *vectors, int dim, store_put_result *result, int64_t *counter, char *err)
{
    if (!pg || !doc || !result)
        return qr_fail(err, QR_EINVAL, "pgstore_put: NULL argument");
    if (counter)
        *counter = 0;
    store_put_input in = {0};
    pg_doc d;
    pg_ids ids = {0};
    int64_t c = 0, key;
    qr_buf acl;
    qr_buf_init(&acl, PG_BUF_CAP);
    qr_status st = store_check_document(pg->json_q, doc, chunks, nchunks, vectors, dim, &in, err);
    if (st || (st = text_array(&acl, in.acl, in.nacl, sizeof(char *), err)) || (st = pg_ready(pg, err)))
        goto out;
    /* An unchanged document (a re-ingest) is answered without waiting for the counter row, and
     * what the store holds is decided once this transaction holds it: two round trips. Inside a
     * batch that holds it already nobody waits, and one round trip does both. */
    bool held = pg->batch && pg->holds_counter;
    size_t take = doc->text ? nchunks : 0;
    if ((st = look_up(pg, true, held, doc->doc_id, &in, qr_buf_str(&acl), held ? take : 0, &ids, &d, err)) ||
        (st = check_dim(pg, doc->doc_id, nchunks, dim, err)))
        goto out;
    if (!held && !unchanged(&d) &&
        (st = look_up(pg, false, true, doc->doc_id, &in, qr_buf_str(&acl), take, &ids, &d, err)))
        goto out;
    c = ids.counter;
    if (unchanged(&d)) {
        *result = STORE_UNCHANGED; /* a rollback gives a counter taken back */
        goto out;
    }
    pg_params p = {0};
    if (d.found && d.same_hash) {
        /* the content is what the store has: chunks, vectors and their ids stay */
        p_int(&p, d.key);
        p_str(&p, in.title);
        p_str(&p, in.uri);
        p_str(&p, in.content_type);
        p_str(&p, in.metadata);
        p_int(&p, c);
        if ((st = pipe_begin(pg, err)))
            goto out;
        st = pg_exec(pg,
                     "UPDATE quarry.documents SET title = $2, uri = $3, content_type = $4, metadata = $5,"
                     " counter = $6 WHERE key = $1",
                     &p, false, NULL, err, "update a document");
        if (!st && !d.same_acl)
            st = write_acl(pg, d.key, false, qr_buf_str(&acl), c, err);
        if (!st)
            st = pg_commit(pg, err);
        if ((st = pipe_end(pg, st, NULL, 0, err, "update a document")))
            goto out;
        *result = d.same_title ? STORE_ACL_UPDATED : STORE_UPDATED;
        goto out;
    }
    if (!doc->text) {
        st = qr_fail(err, QR_EINVAL, "document '%.200s': text is required (its content hash is new)",
                     doc->doc_id);
        goto out;
    }
    if (doc->text_len >= PG_FIELD_MAX) {
        st = qr_fail(err, QR_ELIMIT,
                     "document '%.200s': text of %zu bytes, more than PostgreSQL keeps in a field",
                     doc->doc_id, doc->text_len);
        goto out;
    }
    key = d.found ? d.key : ids.doc_key;
    p_int(&p, key);
    p_str(&p, doc->doc_id);
    p_str(&p, in.title);
    p_str(&p, in.uri);
    p_str(&p, in.content_type);
    p_str(&p, in.metadata);
    p_str(&p, in.hash);
    p_bytes(&p, doc->text, doc->text_len);
    p_int(&p, c);
    /* what is left needs no answer before the next statement: one round trip to the commit */
    if ((st = pipe_begin(pg, err)))
        goto out;
    if (d.found) {
        pg_params k = {0};
        p_int(&k, key);
        /* the old chunks go (their vectors with them); the follower replaces them by the record */
        if (!(st = pg_exec(pg, "DELETE FROM quarry.chunks WHERE doc = $1", &k, false, NULL, err,
                           "delete chunks")))
            st = pg_exec(pg,
                         "UPDATE quarry.documents SET title = $3, uri = $4, content_type = $5, metadata = $6,"
                         " content_hash = $7, text = $8, counter = $9 WHERE key = $1 AND doc_id = $2",
                         &p, false, NULL, err, "update a document");
    } else {
        st = pg_exec(pg,
                     "INSERT INTO quarry.documents(key, doc_id, title, uri, content_type, metadata,"
                     " content_hash, text, counter) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                     &p, false, NULL, err, "insert a document");
    }
    if (!st && (!d.found || !d.same_acl))
        st = write_acl(pg, key, !d.found, qr_buf_str(&acl), c, err);
    if (!st && !(st = insert_chunks(pg, key, chunks, nchunks, vectors, dim, ids.first_chunk, c, err)))
        st = pg_commit(pg, err);
    if ((st = pipe_end(pg, st, NULL, 0, err, "write a document")))
        goto out;
    *result = d.found ? STORE_UPDATED : STORE_ADDED;
out:
    pg_rollback(pg);
    if (!st && counter && *result != STORE_UNCHANGED)
        *counter = c;
    store_put_input_release(&in);
    qr_buf_release(&acl);
    return st;
}

qr_status pgstore_delete(pgstore *pg, const char *doc_id, int64_t *counter, char *err)
{
    if (!pg)
        return qr_fail(err, QR_EINVAL, "pgstore_delete: NULL handle");
    if (counter)
        *counter = 0;
    pg_doc d;
    pg_ids ids = {0};
    int64_t c = 0;
    qr_status st = store_check_doc_id(doc_id, err);
    if (st || (st = pg_ready(pg, err)))
        return st;
    if ((st = look_up(pg, true, true, doc_id, NULL, NULL, 0, &ids, &d, err)))
        goto out;
    c = ids.counter;
    if (!d.found) {
        st = store_not_found(doc_id, err);
        goto out;
    }
    pg_params p = {0}, k = {0};
    p_int(&p, d.key);
    p_str(&p, doc_id);
    p_int(&p, c);
    p_int(&k, d.key);
    /* the document's chunks, vectors and ACL rows go with it (ON DELETE CASCADE) */
    if ((st = pipe_begin(pg, err)))
        goto out;
    st = pg_exec(pg, "INSERT INTO quarry.tombstones(doc, doc_id, counter) VALUES ($1, $2, $3)", &p, false,
                 NULL, err, "record a deletion");
    if (!st && !(st = pg_exec(pg, "DELETE FROM quarry.documents WHERE key = $1", &k, false, NULL, err,
                              "delete a document")))
        st = pg_commit(pg, err);
    if ((st = pipe_end(pg, st, NULL, 0, err, "delete a document")))
        goto out;
    if (counter)
        *counter = c;
out:
    pg_rollback(pg);
    return st;
}

qr_status pgstore_set_acl(pgstore *pg, const char *doc_id, const char *const *acl, size_t nacl,
                          int64_t *counter, char *err)
{
    if (!pg)
        return qr_fail(err, QR_EINVAL, "pgstore_set_acl: NULL handle");
    if (counter)
        *counter = 0;
    const char **sorted = NULL;
    size_t nsorted = 0;
    pg_doc d;
    pg_ids ids = {0};
    int64_t c = 0;
    qr_buf lit;
    qr_buf_init(&lit, PG_BUF_CAP);
    qr_status st = store_check_doc_id(doc_id, err);
    if (st || (st = store_normalise_acl(acl, nacl, &sorted, &nsorted, err)) ||
        (st = text_array(&lit, sorted, nsorted, sizeof(char *), err)) || (st = pg_ready(pg, err)))
        goto out;
    if ((st = look_up(pg, true, true, doc_id, NULL, qr_buf_str(&lit), 0, &ids, &d, err)))
        goto out;
    c = ids.counter;
    if (!d.found) {
        st = store_not_found(doc_id, err);
        goto out;
    }
    if (d.same_acl)
        goto out; /* an equal ACL writes nothing: the rollback gives the counter back */
    pg_params p = {0};
    p_int(&p, d.key);
    p_int(&p, c);
    if ((st = pipe_begin(pg, err)))
        goto out;
    st = pg_exec(pg, "UPDATE quarry.documents SET counter = $2 WHERE key = $1", &p, false, NULL, err,
                 "update a document");
    if (!st && !(st = write_acl(pg, d.key, false, qr_buf_str(&lit), c, err)))
        st = pg_commit(pg, err);
    if ((st = pipe_end(pg, st, NULL, 0, err, "change an ACL")))
        goto out;
    if (counter)
        *counter = c;
out:
    pg_rollback(pg);
    free(sorted);
    qr_buf_release(&lit);
    return st;
}

qr_status pgstore_counter(pgstore *pg, int64_t *counter, char *err)
{
    if (!pg || !counter)
        return qr_fail(err, QR_EINVAL, "pgstore_counter: NULL argument");
    qr_status st = pg_ready(pg, err);
    if (!st)
        st = pg_int(pg, "SELECT value FROM quarry.counter", NULL, counter, err, "read the change counter");
    return st;
}

qr_status pgstore_counter_role(pgstore *pg, int64_t *counter, bool *standby, char *err)
{
    if (!pg || !counter || !standby)
        return qr_fail(err, QR_EINVAL, "pgstore_counter_role: NULL argument");
    int64_t v = 0;
    qr_status st = pg_ready(pg, err);
    /* the counter times two, plus one on a standby: one integer, one round trip */
    if (!st)
        st = pg_int(pg, "SELECT value * 2 + pg_is_in_recovery()::int FROM quarry.counter", NULL, &v, err,
                    "read the change counter");
    if (!st) {
        *counter = v / 2;
        *standby = v % 2 != 0;
    }
    return st;
}

qr_status pgstore_primary_counter(pgstore *pg, int64_t *counter, char *err)
{
    if (!pg || !counter)
        return qr_fail(err, QR_EINVAL, "pgstore_primary_counter: NULL argument");
    qr_status st = pg_ready(pg, err);
    if (!st)
        st = pg_int(pg, "SELECT CASE WHEN pg_is_in_recovery() THEN -1 ELSE value END FROM quarry.counter",
                    NULL, counter, err, "read the change counter");
    if (!st && *counter < 0)
        st = qr_fail(err, QR_EUNAVAILABLE, "the server is a standby (in recovery), not the primary");
    return st;
}

qr_status pgstore_doc_digest(pgstore *pg, const char *doc_id, int64_t *counter, char **digest,
                             int64_t *deleted_at, char *err)
{
    if (!pg || !doc_id || !counter || !digest || !deleted_at)
        return qr_fail(err, QR_EINVAL, "pgstore_doc_digest: NULL argument");
    *counter = *deleted_at = 0;
    *digest = NULL;
    pg_params p = {0};
    p_str(&p, doc_id);
    PGresult *r = NULL;
    /* the tombstones are only looked through (no index on doc_id) when the document is absent */
    qr_status st = pg_ready(pg, err);
    if (st ||
        (st = pg_exec(pg,
                      "SELECT d.counter, d.content_hash || E'\\n' || d.title || E'\\n' || d.uri || E'\\n' ||"
                      " d.content_type || E'\\n' || d.metadata || E'\\n' || coalesce((SELECT"
                      " string_agg(a.principal, E'\\n' ORDER BY a.principal) FROM quarry.acl a WHERE a.doc ="
                      " d.key), ''), CASE WHEN d.key IS NULL THEN (SELECT max(t.counter) FROM"
                      " quarry.tombstones t WHERE t.doc_id = $1) END, pg_is_in_recovery()"
                      " FROM (SELECT 1) one LEFT JOIN quarry.documents d ON d.doc_id = $1",
                      &p, false, &r, err, "read a document's digest")))
        goto out;
    if (PQntuples(r) != 1) {
        st = qr_fail(err, QR_EIO, "reading a document's digest gave %d rows", PQntuples(r));
        goto out;
    }
    if (strcmp(PQgetvalue(r, 0, 3), "f") != 0) {
        st = qr_fail(err, QR_EUNAVAILABLE, "the server is a standby (in recovery), not the primary");
        goto out;
    }
    if (!PQgetisnull(r, 0, 2))
        *deleted_at = text_i64(r, 0, 2);
    if (!PQgetisnull(r, 0, 0)) {
        *counter = text_i64(r, 0, 0);
        if (!(*digest = strdup(PQgetvalue(r, 0, 1))))
            st = qr_fail(err, QR_ENOMEM, "out of memory");
    }
out:
    PQclear(r);
    return st;
}

/* ---- following -------------------------------------------------------------------------------- */

/* Column types of a binary result, one letter each (b bool, y bytea, i int8, t text). */
static qr_status check_types(const PGresult *r, const char *types, char *err)
{
    for (int i = 0; types[i]; i++) {
        Oid want = types[i] == 'b'   ? OID_BOOL
                   : types[i] == 'y' ? OID_BYTEA
                   : types[i] == 'i' ? OID_INT8
                                     : OID_TEXT;
        if (i >= PQnfields(r) || PQftype(r, i) != want)
            return qr_fail(err, QR_EIO,
                           "quarry's PostgreSQL schema is not what this quarry expects (column %d)", i);
    }
    return QR_OK;
}

static int64_t bin_i64(const PGresult *r, int row, int col)
{
    uint64_t v;
    memcpy(&v, PQgetvalue(r, row, col), sizeof(v));
    return (int64_t)be64toh(v);
}

/* Reused buffers of one pull: a record's chunks, ids and vectors. */
typedef struct {
    store_chunk *chunks;
    int64_t *ids;
    float *vecs;
    const char **acl;
    size_t cap_chunks, cap_ids, cap_vecs, cap_acl;
} pull_bufs;

static qr_status grow(void **p, size_t *cap, size_t need, size_t size, char *err)
{
    if (need <= *cap)
        return QR_OK;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * size);
    if (!q)
        return qr_fail(err, QR_ENOMEM, "out of memory for a record of %zu rows", need);
    *p = q;
    *cap = n;
    return QR_OK;
}

/* The three ordered results of a pull -- records, ACL rows, chunk rows -- walked together: the
 * ACL and chunk rows of the document records come in the records' order. */
typedef struct {
    PGresult *docs, *acl, *chunks;
    int nacl_rows, nchunk_rows;
    int at_acl, at_chunk;
    int dim;
    pull_bufs b;
} pull_walk;

static qr_status emit_record(pull_walk *w, int row, store_follow_emit_fn emit, void *emit_ctx, char *err)
{
    PGresult *r = w->docs;
    store_follow_doc f = {.counter = bin_i64(r, row, 0), .doc_key = bin_i64(r, row, 1)};
    f.deleted = PQgetvalue(r, row, 2)[0] != 0;
    f.doc.doc_id = PQgetvalue(r, row, 3);
    qr_status st;
    if (!f.deleted) {
        size_t na = 0, nc = 0;
        while (w->at_acl + (int)na < w->nacl_rows && bin_i64(w->acl, w->at_acl + (int)na, 0) == f.doc_key)
            na++;
        while (w->at_chunk + (int)nc < w->nchunk_rows &&
               bin_i64(w->chunks, w->at_chunk + (int)nc, 0) == f.doc_key)
            nc++;
        if ((st = grow((void **)&w->b.acl, &w->b.cap_acl, na, sizeof(char *), err)) ||
            (st = grow((void **)&w->b.chunks, &w->b.cap_chunks, nc, sizeof(store_chunk), err)) ||
            (st = grow((void **)&w->b.ids, &w->b.cap_ids, nc, sizeof(int64_t), err)) ||
            (st = grow((void **)&w->b.vecs, &w->b.cap_vecs, nc * (size_t)w->dim, sizeof(float), err)))
            return st;
        for (size_t i = 0; i < na; i++)
            w->b.acl[i] = PQgetvalue(w->acl, w->at_acl + (int)i, 1);
        size_t rowb = (size_t)w->dim * sizeof(float);
        for (size_t i = 0; i < nc; i++) {
            int cr = w->at_chunk + (int)i;
            w->b.ids[i] = bin_i64(w->chunks, cr, 1);
            w->b.chunks[i].start = (size_t)bin_i64(w->chunks, cr, 2);
            w->b.chunks[i].end = (size_t)bin_i64(w->chunks, cr, 3);
            w->b.chunks[i].headings = PQgetvalue(w->chunks, cr, 4);
            if ((size_t)PQgetlength(w->chunks, cr, 5) != rowb || !rowb)
                return qr_fail(err, QR_EIO, "chunk %lld's vector in PostgreSQL has %d bytes, expected %zu",
                               (long long)w->b.ids[i], PQgetlength(w->chunks, cr, 5), rowb);
            memcpy(w->b.vecs + i * (size_t)w->dim, PQgetvalue(w->chunks, cr, 5), rowb);
        }
        w->at_acl += (int)na;
        w->at_chunk += (int)nc;
        f.doc.title = PQgetvalue(r, row, 4);
        f.doc.uri = PQgetvalue(r, row, 5);
        f.doc.content_type = PQgetvalue(r, row, 6);
        f.doc.metadata_json = PQgetvalue(r, row, 7);
        f.doc.content_hash = PQgetvalue(r, row, 8);
        f.doc.text = PQgetvalue(r, row, 9);
        f.doc.text_len = (size_t)PQgetlength(r, row, 9);
        f.doc.acl = w->b.acl;
        f.doc.nacl = na;
        f.chunks = w->b.chunks;
        f.nchunks = nc;
        f.chunk_ids = w->b.ids;
        f.vectors = nc ? w->b.vecs : NULL;
        f.dim = nc ? w->dim : 0;
    }
    return emit(emit_ctx, &f, err);
}

qr_status pgstore_pull(void *ctx, int64_t since, size_t limit, store_follow_emit_fn emit, void *emit_ctx,
                       int64_t *through, int64_t *head, char *err)
{
    pgstore *pg = ctx;
    if (!pg || !emit || !through || !head)
        return qr_fail(err, QR_EINVAL, "pgstore_pull: NULL argument");
    if (limit < 1 || limit > INT32_MAX || since < 0)
        return qr_fail(err, QR_EINVAL, "pgstore_pull: limit %zu outside 1..%d or since %lld below 0", limit,
                       INT32_MAX, (long long)since);
    pull_walk w = {0};
    PGresult *r = NULL;
    int64_t now = 0, pruned = 0, bound;
    qr_status st = pg_ready(pg, err);
    if (st ||
        (st = pg_exec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", NULL, false, NULL, err,
                      "begin a read transaction")) ||
        (st = pg_exec(
             pg,
             "SELECT c.value, (SELECT value::bigint FROM quarry.meta WHERE key = 'tombstones_pruned'),"
             " (SELECT value::bigint FROM quarry.meta WHERE key = 'embedding_dim') FROM quarry.counter c",
             NULL, false, &r, err, "read the change counter")))
        goto out;
    now = text_i64(r, 0, 0);
    pruned = text_i64(r, 0, 1);
    w.dim = (int)text_i64(r, 0, 2);
    PQclear(r);
    r = NULL;
    /* a follower with nothing yet (since 0) needs no deletions */
    if (since && since < pruned) {
        st = qr_fail(err, QR_ELIMIT,
                     "tombstones after change %lld were pruned (through %lld): this node cannot learn every "
                     "deletion from the feed and must be rebuilt",
                     (long long)since, (long long)pruned);
        goto out;
    }
    *head = now;
    *through = since > now ? since : now; /* a source behind the follower has nothing for it yet */
    if (since >= now)
        goto commit;
    /* the cut: the counter of the limit-th record, unless no more than limit records are left.
     * A pull from 0 is never cut: a node that has nothing must take one whole snapshot, since
     * the tombstones a later pull from inside it would need may already be pruned (they were of
     * documents that snapshot no longer holds, which the node never had). It costs memory and a
     * local transaction the size of the store: start a large node from a peer's backup instead. */
    bound = now;
    pg_params p = {0};
    p_int(&p, since);
    p_int(&p, (int64_t)limit + 1);
    if (since > 0 &&
        (st = pg_exec(pg,
                      "SELECT counter FROM (SELECT counter FROM quarry.documents WHERE counter > $1"
                      " UNION ALL SELECT counter FROM quarry.tombstones WHERE counter > $1) c"
                      " ORDER BY counter LIMIT $2",
                      &p, false, &r, err, "find the changes after a counter")))
        goto out;
    if (since > 0 && PQntuples(r) > (int)limit)
        bound = text_i64(r, (int)limit - 1, 0);
    PQclear(r);
    r = NULL;
    pg_params q = {0};
    p_int(&q, since);
    p_int(&q, bound);
    /* in a counter, a deletion before the document records: a doc_id deleted and added again */
    if ((st = pg_exec(
             pg,
             "SELECT counter, key, deleted, doc_id, title, uri, content_type, metadata, content_hash, text"
             " FROM (SELECT counter, key, false AS deleted, doc_id, title, uri, content_type, metadata,"
             "       content_hash, text FROM quarry.documents WHERE counter > $1 AND counter <= $2"
             "     UNION ALL SELECT counter, doc, true, doc_id, NULL, NULL, NULL, NULL, NULL, NULL"
             "       FROM quarry.tombstones WHERE counter > $1 AND counter <= $2) r"
             " ORDER BY counter, deleted DESC, key",
             &q, true, &w.docs, err, "read changed documents")) ||
        (st = check_types(w.docs, "iibttttttt", err)) ||
        (st = pg_exec(pg,
                      "SELECT a.doc, a.principal FROM quarry.acl a JOIN quarry.documents d ON d.key = a.doc"
                      " WHERE d.counter > $1 AND d.counter <= $2 ORDER BY d.counter, d.key, a.principal",
                      &q, true, &w.acl, err, "read ACL rows")) ||
        (st = check_types(w.acl, "it", err)) ||
        (st = pg_exec(pg,
                      "SELECT c.doc, c.id, c.start, c.\"end\", c.headings, v.vec FROM quarry.chunks c"
                      " JOIN quarry.documents d ON d.key = c.doc JOIN quarry.vectors v ON v.chunk_id = c.id"
                      " WHERE d.counter > $1 AND d.counter <= $2 ORDER BY d.counter, d.key, c.ordinal",
                      &q, true, &w.chunks, err, "read chunks")) ||
        (st = check_types(w.chunks, "iiiity", err)))
        goto out;
    w.nacl_rows = PQntuples(w.acl);
    w.nchunk_rows = PQntuples(w.chunks);
    for (int i = 0; i < PQntuples(w.docs); i++)
        if ((st = emit_record(&w, i, emit, emit_ctx, err)))
            goto out;
    *through = bound;
commit:
    st = pg_commit(pg, err);
out:
    pg_rollback(pg);
    PQclear(r);
    PQclear(w.docs);
    PQclear(w.acl);
    PQclear(w.chunks);
    free(w.b.chunks);
    free(w.b.ids);
    free(w.b.vecs);
    free(w.b.acl);
    return st;
}

/* ---- tombstone pruning ---------------------------------------------------------------------- */

qr_status pgstore_register_node(pgstore *pg, const char *node, int64_t watermark, char *err)
{
    if (!pg || !node)
        return qr_fail(err, QR_EINVAL, "pgstore_register_node: NULL argument");
    qr_status st = store_check_field("node name", node, PG_NODE_NAME_MAX, false, err);
    if (st)
        return st;
    if (watermark < 0)
        return qr_fail(err, QR_EINVAL, "node watermark %lld is negative", (long long)watermark);
    if ((st = pg_ready(pg, err)))
        return st;
    pg_params p = {0};
    p_str(&p, node);
    p_int(&p, watermark);
    p_int(&p, qr_wall_ms());
    return pg_exec(
        pg,
        "INSERT INTO quarry.nodes(name, watermark, updated_ms) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO UPDATE SET watermark = excluded.watermark, updated_ms = excluded.updated_ms",
        &p, false, NULL, err, "register a node");
}

qr_status pgstore_prune(pgstore *pg, int64_t *pruned_through, char *err)
{
    if (!pg)
        return qr_fail(err, QR_EINVAL, "pgstore_prune: NULL handle");
    int64_t low = 0, nodes = 0, pruned = 0;
    PGresult *r = NULL;
    qr_status st = pg_ready(pg, err);
    if (st || (st = pg_begin(pg, err)) ||
        (st = pg_exec(pg, "SELECT count(*), coalesce(min(watermark), 0) FROM quarry.nodes", NULL, false, &r,
                      err, "read the nodes' watermarks")))
        goto out;
    nodes = text_i64(r, 0, 0);
    low = text_i64(r, 0, 1);
    if (nodes) {
        pg_params p = {0};
        p_int(&p, low);
        if ((st = pg_exec(pg, "DELETE FROM quarry.tombstones WHERE counter <= $1", &p, false, NULL, err,
                          "prune tombstones")) ||
            (st = pg_exec(pg,
                          "UPDATE quarry.meta SET value = greatest(value::bigint, $1)::text"
                          " WHERE key = 'tombstones_pruned'",
                          &p, false, NULL, err, "record the pruned counter")))
            goto out;
    }
    if ((st = pg_int(pg, "SELECT value::bigint FROM quarry.meta WHERE key = 'tombstones_pruned'", NULL,
                     &pruned, err, "read the pruned counter")) ||
        (st = pg_commit(pg, err)))
        goto out;
    if (pruned_through)
        *pruned_through = pruned;
out:
    PQclear(r);
    pg_rollback(pg);
    return st;
}

/* ---- batches ----------------------------------------------------------------------------------- */

qr_status pgstore_batch_begin(pgstore *pg, char *err)
{
    if (!pg)
        return qr_fail(err, QR_EINVAL, "pgstore_batch_begin: NULL handle");
    if (pg->batch)
        return qr_fail(err, QR_EINVAL, "PostgreSQL: a batch is already open");
    qr_status st = pg_ready(pg, err);
    if (!st && !(st = pg_exec(pg, "BEGIN", NULL, false, NULL, err, "begin a batch"))) {
        pg->batch = true;
        pg->sp = pg->release_pending = pg->batch_lost = pg->holds_counter = false;
    }
    return st;
}

qr_status pgstore_batch_commit(pgstore *pg, char *err)
{
    if (!pg || !pg->batch)
        return qr_fail(err, QR_EINVAL, "PostgreSQL: no batch is open");
    bool lost = pg->batch_lost;
    pg->batch = false;
    if (lost || PQstatus(pg->conn) != CONNECTION_OK) {
        pg_rollback(pg);
        return qr_fail(err, QR_EUNAVAILABLE,
                       "PostgreSQL: the batch was rolled back (its connection or transaction was lost): "
                       "send its documents again");
    }
    qr_status st = pg_exec(pg, "COMMIT", NULL, false, NULL, err, "commit a batch");
    pg_rollback(pg);
    return st;
}

void pgstore_batch_rollback(pgstore *pg)
{
    if (!pg || !pg->batch)
        return;
    pg->batch = false;
    pg_rollback(pg);
}

bool pgstore_in_batch(const pgstore *pg)
{
    return pg && pg->batch;
}

/* ---- shared state ------------------------------------------------------------------------------ */

qr_status pgstore_shared_read(pgstore *pg, const char *name, bool any_server, void **data, size_t *len,
                              int64_t *version, char *err)
{
    if (!pg || !name || !data || !len || !version)
        return qr_fail(err, QR_EINVAL, "pgstore_shared_read: NULL argument");
    *data = NULL;
    *len = 0;
    *version = 0;
    PGresult *r = NULL;
    pg_params p = {0};
    p_str(&p, name);
    /* one row either way, so that a standby is told apart from an absent name */
    qr_status st = pg_ready(pg, err);
    if (st ||
        (st = pg_exec(pg,
                      "SELECT s.data, s.version, pg_is_in_recovery() FROM (SELECT 1) one"
                      " LEFT JOIN quarry.shared s ON s.name = $1",
                      &p, true, &r, err, "read shared state")) ||
        (st = check_types(r, "yib", err)))
        goto out;
    if (PQntuples(r) != 1 || (!any_server && PQgetvalue(r, 0, 2)[0])) {
        st = qr_fail(err, QR_EUNAVAILABLE, "the server is a standby (in recovery), not the primary");
        goto out;
    }
    if (PQgetisnull(r, 0, 0)) {
        st = qr_fail(err, QR_ENOTFOUND, "no shared state '%s'", name);
        goto out;
    }
    size_t n = (size_t)PQgetlength(r, 0, 0);
    char *copy = malloc(n + 1);
    if (!copy) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for shared state '%s' (%zu bytes)", name, n);
        goto out;
    }
    memcpy(copy, PQgetvalue(r, 0, 0), n);
    copy[n] = '\0';
    *data = copy;
    *len = n;
    *version = bin_i64(r, 0, 1);
out:
    PQclear(r);
    return st;
}

qr_status pgstore_shared_version(pgstore *pg, const char *name, bool any_server, int64_t *version, char *err)
{
    if (!pg || !name || !version)
        return qr_fail(err, QR_EINVAL, "pgstore_shared_version: NULL argument");
    pg_params p = {0};
    p_str(&p, name);
    qr_status st = pg_ready(pg, err);
    if (!st)
        st = pg_int(pg,
                    any_server ? "SELECT coalesce((SELECT version FROM quarry.shared WHERE name = $1), 0)"
                               : "SELECT CASE WHEN pg_is_in_recovery() THEN -1"
                                 " ELSE coalesce((SELECT version FROM quarry.shared WHERE name = $1), 0) END",
                    &p, version, err, "read the version of shared state");
    if (!st && *version < 0)
        st = qr_fail(err, QR_EUNAVAILABLE, "the server is a standby (in recovery), not the primary");
    else if (!st && *version == 0)
        st = qr_fail(err, QR_ENOTFOUND, "no shared state '%s'", name);
    return st;
}

qr_status pgstore_shared_write(pgstore *pg, const char *name, const void *data, size_t len, int64_t expect,
                               int64_t *version, char *err)
{
    if (!pg || !name || (len && !data))
        return qr_fail(err, QR_EINVAL, "pgstore_shared_write: NULL argument");
    if (expect < 0 || len > INT32_MAX)
        return qr_fail(err, QR_EINVAL, "pgstore_shared_write: version %lld or size %zu out of range",
                       (long long)expect, len);
    pg_params p = {0};
    p_str(&p, name);
    p_bytes(&p, data, len);
    if (expect)
        p_int(&p, expect);
    /* One statement each, so the check and the write are one: a concurrent UPDATE of the row waits
     * for the first one's commit and then finds the version moved; a concurrent INSERT waits for
     * the other's and then conflicts. RETURNING gives no row when the version did not match. */
    const char *sql = expect
                          ? "UPDATE quarry.shared SET data = $2, version = nextval('quarry.shared_version')"
                            " WHERE name = $1 AND version = $3 RETURNING version"
                          : "INSERT INTO quarry.shared(name, data, version)"
                            " VALUES ($1, $2, nextval('quarry.shared_version'))"
                            " ON CONFLICT (name) DO NOTHING RETURNING version";
    int64_t v = 0;
    qr_status st = pg_ready(pg, err);
    if (!st)
        st = pg_int(pg, sql, &p, &v, err, "write shared state");
    if (!st && v == 0)
        st = expect ? qr_fail(err, QR_EEXIST,
                              "shared state '%s' is no longer at version %lld (another writer changed it)",
                              name, (long long)expect)
                    : qr_fail(err, QR_EEXIST, "shared state '%s' exists already (another writer created it)",
                              name);
    if (!st && version)
        *version = v;
    return st;
}

/* ---- background jobs --------------------------------------------------------------------------- */

/* the columns read_job reads, in its order */
#define PG_JOB_COLUMNS \
    "id, kind, state, \"user\", created_ms, started_ms, finished_ms, docs, done, failed, chunks, error"
/* a node name, "<hostname>:<data directory>" (store_jobs_pg.c): a host name (255 bytes at most),
 * the colon and an absolute path (PATH_MAX, 4096) */
#define PG_JOB_NODE_MAX 4400
/* results sent in one pipeline: libpq does not read answers while it sends, so an unbounded
 * pipeline could fill both sockets' buffers and wait for ever */
#define PG_JOB_RESULTS_GROUP 256

static qr_status job_check_id(const char *id, char *err)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 32)
        return qr_fail(err, QR_EINVAL, "a job id is 1 to 32 characters");
    if (!qr_utf8_valid(id, n))
        return qr_fail(err, QR_EINVAL, "a job id must be UTF-8");
    return QR_OK;
}

/* PostgreSQL keeps UTF-8 text only: a field that is not is refused here, with its name, rather
 * than by the server as an I/O error. */
static qr_status job_text(const char *id, const char *what, const char *v, char *err)
{
    size_t n = strlen(v);
    if (n >= PG_FIELD_MAX)
        return qr_fail(err, QR_ELIMIT,
                       "job '%s': its %s of %zu bytes is more than PostgreSQL keeps in a field", id, what, n);
    if (!qr_utf8_valid(v, n))
        return qr_fail(err, QR_EINVAL, "job '%s': its %s is not valid UTF-8", id, what);
    return QR_OK;
}

/* A job's error message made UTF-8: every byte outside a well-formed sequence becomes '?'. The
 * message comes from anywhere (an err buffer cut at QR_ERR_LEN can end inside a character), and a
 * failure the server refused to record would leave the job running for ever. */
static void job_error_text(const char *in, char out[QR_ERR_LEN])
{
    size_t n = strnlen(in, QR_ERR_LEN - 1), k = 0;
    for (size_t i = 0; i < n;) {
        size_t len = qr_utf8_seq_len((const unsigned char *)in + i, n - i);
        if (!len) {
            out[k++] = '?';
            i++;
            continue;
        }
        memcpy(out + k, in + i, len);
        k += len;
        i += len;
    }
    out[k] = '\0';
}

/* Fills job from row of a result whose first columns are PG_JOB_COLUMNS. */
static void read_job(const PGresult *r, int row, store_job *job)
{
    memset(job, 0, sizeof(*job));
    snprintf(job->id, sizeof(job->id), "%s", PQgetvalue(r, row, 0));
    snprintf(job->kind, sizeof(job->kind), "%s", PQgetvalue(r, row, 1));
    snprintf(job->state, sizeof(job->state), "%s", PQgetvalue(r, row, 2));
    snprintf(job->user, sizeof(job->user), "%s", PQgetvalue(r, row, 3));
    job->created_ms = text_i64(r, row, 4);
    job->started_ms = text_i64(r, row, 5);
    job->finished_ms = text_i64(r, row, 6);
    job->docs = text_i64(r, row, 7);
    job->done = text_i64(r, row, 8);
    job->failed = text_i64(r, row, 9);
    job->chunks = text_i64(r, row, 10);
    snprintf(job->error, sizeof(job->error), "%s", PQgetvalue(r, row, 11));
}

qr_status pgstore_job_insert(pgstore *pg, const store_job *job, const char *staged, const char *node,
                             char *err)
{
    if (!pg || !job || !node)
        return qr_fail(err, QR_EINVAL, "pgstore_job_insert: NULL argument");
    if (!staged)
        staged = "";
    char error[QR_ERR_LEN];
    qr_status st;
    if ((st = job_check_id(job->id, err)) || (st = job_text(job->id, "kind", job->kind, err)) ||
        (st = job_text(job->id, "state", job->state, err)) ||
        (st = job_text(job->id, "user", job->user, err)) ||
        (st = job_text(job->id, "manifest", staged, err)) ||
        (st = store_check_field("node name", node, PG_JOB_NODE_MAX, false, err)) || (st = pg_ready(pg, err)))
        return st;
    job_error_text(job->error, error);
    pg_params p = {0};
    p_str(&p, job->id);
    p_str(&p, job->kind);
    p_str(&p, job->state);
    p_str(&p, job->user);
    p_int(&p, job->created_ms);
    p_int(&p, job->started_ms);
    p_int(&p, job->finished_ms);
    p_int(&p, job->docs);
    p_int(&p, job->done);
    p_int(&p, job->failed);
    p_int(&p, job->chunks);
    p_str(&p, error);
    p_str(&p, node);
    p_str(&p, staged);
    int64_t added = 0;
    if ((st = pg_int(pg,
                     "INSERT INTO quarry.jobs(" PG_JOB_COLUMNS ", node, staged) VALUES ($1, $2, $3, $4, $5,"
                     " $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (id) DO NOTHING RETURNING 1",
                     &p, &added, err, "record a job")))
        return st;
    return added ? QR_OK : qr_fail(err, QR_EEXIST, "job '%s' already exists", job->id);
}

qr_status pgstore_job_get(pgstore *pg, const char *id, store_job *out, char **staged, char **results,
                          char *err)
{
    if (!pg || !out)
        return qr_fail(err, QR_EINVAL, "pgstore_job_get: NULL argument");
    if (staged)
        *staged = NULL;
    if (results)
        *results = NULL;
    qr_status st = job_check_id(id, err);
    if (st || (st = pg_ready(pg, err)))
        return st;
    pg_params p = {0};
    p_str(&p, id);
    p_int(&p, staged != NULL);
    p_int(&p, results != NULL);
    PGresult *r = NULL;
    char *man = NULL, *res = NULL;
    /* one statement: the job and its results from one snapshot. Each result is SQLite's minified
     * JSON (pgstore_job_add_results), so the array is the text the local store's
     * json_group_array makes. */
    if ((st = pg_exec(pg,
                      "SELECT " PG_JOB_COLUMNS ", CASE WHEN $2::boolean THEN staged END,"
                      " CASE WHEN $3::boolean THEN '[' || coalesce((SELECT string_agg(r.result, ','"
                      " ORDER BY r.ordinal) FROM quarry.job_results r WHERE r.job = j.id), '') || ']' END"
                      " FROM quarry.jobs j WHERE j.id = $1",
                      &p, false, &r, err, "read a job")))
        goto out;
    if (PQntuples(r) == 0) {
        st = qr_fail(err, QR_ENOTFOUND, "no job '%s'", id);
        goto out;
    }
    read_job(r, 0, out);
    if ((staged && !(man = strdup(PQgetvalue(r, 0, 12)))) ||
        (results && !(res = strdup(PQgetvalue(r, 0, 13)))))
        st = qr_fail(err, QR_ENOMEM, "out of memory reading job '%s'", id);
out:
    PQclear(r);
    if (st) {
        free(man);
        free(res);
    } else {
        if (staged)
            *staged = man;
        if (results)
            *results = res;
    }
    return st;
}

qr_status pgstore_job_update(pgstore *pg, const store_job *job, char *err)
{
    if (!pg || !job)
        return qr_fail(err, QR_EINVAL, "pgstore_job_update: NULL argument");
    char error[QR_ERR_LEN];
    qr_status st;
    if ((st = job_check_id(job->id, err)) || (st = job_text(job->id, "state", job->state, err)) ||
        (st = pg_ready(pg, err)))
        return st;
    job_error_text(job->error, error);
    pg_params p = {0};
    p_str(&p, job->id);
    p_str(&p, job->state);
    p_int(&p, job->started_ms);
    p_int(&p, job->finished_ms);
    p_int(&p, job->docs);
    p_int(&p, job->done);
    p_int(&p, job->failed);
    p_int(&p, job->chunks);
    p_str(&p, error);
    int64_t found = 0;
    if ((st = pg_int(
             pg,
             "UPDATE quarry.jobs SET state = $2, started_ms = $3, finished_ms = $4, docs = $5, done = $6,"
             " failed = $7, chunks = $8, error = $9 WHERE id = $1 RETURNING 1",
             &p, &found, err, "update a job")))
        return st;
    return found ? QR_OK : qr_fail(err, QR_ENOTFOUND, "no job '%s'", job->id);
}

/* Sends the upsert of one result (r.result checked as UTF-8) in the open pipeline, its JSON made
 * canonical by SQLite's json() as the local store's reads make it. */
static qr_status send_result(pgstore *pg, const char *id, const store_job_result *r, char *err)
{
    qr_status st = QR_OK;
    int rc = store_bind_text(pg->json_q, 1, r->result, strlen(r->result));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(pg->json_q);
    if (rc != SQLITE_ROW) {
        st = qr_fail(err, store_sql_status(rc), "cannot check a job's result: %s", sqlite3_errmsg(pg->json));
    } else if (sqlite3_column_type(pg->json_q, 0) == SQLITE_NULL) {
        st = qr_fail(err, QR_EINVAL, "job '%s': the result of document %lld is not valid JSON", id,
                     (long long)r->ordinal);
    } else {
        pg_params p = {0};
        p_str(&p, id);
        p_int(&p, r->ordinal);
        p_int(&p, r->failed ? 1 : 0);
        p_int(&p, r->chunks);
        p_str(&p, store_col_str(pg->json_q, 1));
        /* One statement, one snapshot: prev sees the results as they were before this upsert, so a
         * result recorded again replaces the first and leaves the counts as they are. The job's row
         * is locked (pgstore_job_add_results), so no other call records results for it meanwhile. */
        st = pg_exec(
            pg,
            "WITH prev AS (SELECT 1 FROM quarry.job_results WHERE job = $1 AND ordinal = $2::bigint),"
            " put AS (INSERT INTO quarry.job_results(job, ordinal, failed, chunks, result)"
            " VALUES ($1, $2::bigint, $3::boolean, $4::bigint, $5) ON CONFLICT (job, ordinal) DO UPDATE"
            " SET failed = excluded.failed, chunks = excluded.chunks, result = excluded.result)"
            " UPDATE quarry.jobs SET done = done + 1, failed = failed + $3::boolean::int,"
            " chunks = chunks + $4::bigint WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM prev)",
            &p, false, NULL, err, "record a job result");
    }
    sqlite3_reset(pg->json_q);
    sqlite3_clear_bindings(pg->json_q);
    return st;
}

qr_status pgstore_job_add_results(pgstore *pg, const char *id, const store_job_result *r, size_t n, char *err)
{
    if (!pg || (!r && n))
        return qr_fail(err, QR_EINVAL, "pgstore_job_add_results: NULL argument");
    qr_status st = job_check_id(id, err);
    if (st)
        return st;
    for (size_t i = 0; i < n; i++) {
        if (!r[i].result)
            return qr_fail(err, QR_EINVAL, "pgstore_job_add_results: NULL result");
        if ((st = job_text(id, "result", r[i].result, err)))
            return st;
    }
    if ((st = pg_ready(pg, err)))
        return st;
    pg_params p = {0};
    p_str(&p, id);
    PGresult *res[2] = {NULL, NULL};
    /* the job's row is locked first: results recorded for it by another call wait for this one */
    if ((st = pipe_begin(pg, err)))
        return st;
    if (!(st = pg_exec(pg, "BEGIN", NULL, false, NULL, err, "begin a transaction")))
        st = pg_exec(pg, "SELECT 1 FROM quarry.jobs WHERE id = $1 FOR UPDATE", &p, false, NULL, err,
                     "look up a job");
    if ((st = pipe_end(pg, st, res, 2, err, "look up a job")))
        goto out;
    if (!res[1] || PQntuples(res[1]) == 0) {
        st = qr_fail(err, QR_ENOTFOUND, "no job '%s'", id);
        goto out;
    }
    size_t i = 0;
    do {
        if ((st = pipe_begin(pg, err)))
            goto out;
        for (size_t end = i + PG_JOB_RESULTS_GROUP; !st && i < n && i < end; i++)
            st = send_result(pg, id, &r[i], err);
        if (!st && i == n)
            st = pg_commit(pg, err);
        if ((st = pipe_end(pg, st, NULL, 0, err, "record a job's results")))
            goto out;
    } while (i < n);
out:
    PQclear(res[0]);
    PQclear(res[1]);
    pg_rollback(pg);
    return st;
}

/* The jobs of a result whose rows are PG_JOB_COLUMNS, at most limit of them into a calloc'd
 * *out; *more (may be NULL) when another row follows. */
static qr_status collect_jobs(const PGresult *r, size_t limit, store_job **out, size_t *n, bool *more,
                              char *err)
{
    size_t rows = (size_t)PQntuples(r), k = rows < limit ? rows : limit;
    store_job *jobs = calloc(k ? k : 1, sizeof(*jobs));
    if (!jobs)
        return qr_fail(err, QR_ENOMEM, "out of memory listing jobs");
    for (size_t i = 0; i < k; i++)
        read_job(r, (int)i, &jobs[i]);
    *out = jobs;
    *n = k;
    if (more)
        *more = rows > k;
    return QR_OK;
}

qr_status pgstore_job_list(pgstore *pg, const char *state, int64_t after_ms, const char *after_id,
                           size_t limit, store_job **out, size_t *n, bool *more, char *err)
{
    if (!pg || !out || !n || !more)
        return qr_fail(err, QR_EINVAL, "pgstore_job_list: NULL argument");
    *out = NULL;
    *n = 0;
    *more = false;
    if (limit < 1 || limit > 10000)
        return qr_fail(err, QR_EINVAL, "store_job_list: limit %zu outside 1..10000", limit);
    if (!state)
        state = "";
    if (!qr_utf8_valid(state, strlen(state)) || (after_id && !qr_utf8_valid(after_id, strlen(after_id))))
        return qr_fail(err, QR_EINVAL, "store_job_list: a state or job id that is not UTF-8");
    qr_status st = pg_ready(pg, err);
    if (st)
        return st;
    pg_params p = {0};
    p_str(&p, state);
    p_str(&p, after_id); /* NULL: from the newest */
    p_int(&p, after_ms);
    p_int(&p, (int64_t)limit + 1);
    PGresult *r = NULL;
    if (!(st = pg_exec(
              pg,
              "SELECT " PG_JOB_COLUMNS " FROM quarry.jobs WHERE ($1::text = '' OR state = $1)"
              " AND ($2::text IS NULL OR created_ms < $3::bigint OR (created_ms = $3::bigint AND id < $2))"
              " ORDER BY created_ms DESC, id DESC LIMIT $4",
              &p, false, &r, err, "list jobs")))
        st = collect_jobs(r, limit, out, n, more, err);
    PQclear(r);
    return st;
}

qr_status pgstore_job_unfinished(pgstore *pg, const char *node, store_job **out, size_t *n, char *err)
{
    if (!pg || !node || !out || !n)
        return qr_fail(err, QR_EINVAL, "pgstore_job_unfinished: NULL argument");
    *out = NULL;
    *n = 0;
    qr_status st = store_check_field("node name", node, PG_JOB_NODE_MAX, false, err);
    if (st || (st = pg_ready(pg, err)))
        return st;
    pg_params p = {0};
    p_str(&p, node);
    PGresult *r = NULL;
    if (!(st = pg_exec(pg,
                       "SELECT " PG_JOB_COLUMNS " FROM quarry.jobs WHERE node = $1"
                       " AND state IN ('queued', 'running', 'interrupted') ORDER BY created_ms, id",
                       &p, false, &r, err, "list the unfinished jobs")))
        st = collect_jobs(r, SIZE_MAX, out, n, NULL, err);
    PQclear(r);
    return st;
}

qr_status pgstore_job_prune(pgstore *pg, int64_t before_ms, size_t *pruned, char *err)
{
    if (!pg || !pruned)
        return qr_fail(err, QR_EINVAL, "pgstore_job_prune: NULL argument");
    *pruned = 0;
    qr_status st = pg_ready(pg, err);
    if (st)
        return st;
    pg_params p = {0};
    p_int(&p, before_ms);
    int64_t count = 0;
    /* job_results go with their job (ON DELETE CASCADE) */
    if (!(st = pg_int(pg,
                      "WITH gone AS (DELETE FROM quarry.jobs WHERE finished_ms > 0 AND finished_ms < $1"
                      " RETURNING 1) SELECT count(*) FROM gone",
                      &p, &count, err, "prune finished jobs")))
        *pruned = (size_t)count;
    return st;
}

/* ---- failed-login counters ------------------------------------------------------------------- */

/* Expired rows a count deletes besides its own work: more than the at most PGSTORE_FAILURE_KEYS
 * rows it can add, so that expired rows shrink while failures go on, and few enough that a count
 * stays one short statement. */
#define PG_FAILURES_PURGE "16"

/* The keys as $1..$3, NULL entries and those past n as SQL NULLs, which match no row. */
static qr_status failure_keys(pg_params *p, const char *const keys[], size_t n, char *err, const char *fn)
{
    if (!keys || n > PGSTORE_FAILURE_KEYS)
        return qr_fail(err, QR_EINVAL, "%s: %zu keys, at most %d", fn, keys ? n : 0, PGSTORE_FAILURE_KEYS);
    for (size_t i = 0; i < PGSTORE_FAILURE_KEYS; i++)
        p_str(p, i < n ? keys[i] : NULL);
    return QR_OK;
}

qr_status pgstore_failures_count(pgstore *pg, const char *const keys[], size_t n, int64_t window_s, char *err)
{
    if (!pg)
        return qr_fail(err, QR_EINVAL, "pgstore_failures_count: NULL argument");
    if (window_s < 1)
        return qr_fail(err, QR_EINVAL, "pgstore_failures_count: a window of %lld s", (long long)window_s);
    pg_params p = {0};
    qr_status st;
    if ((st = failure_keys(&p, keys, n, err, "pgstore_failures_count")) || (st = pg_ready(pg, err)))
        return st;
    p_int(&p, window_s);
    /* One statement: a node that counts a key another node is counting waits for the other's row
     * (ON CONFLICT) and adds to it. A row whose window has ended starts a new one. The expired rows
     * deleted are never the call's own keys (one statement must not both delete and update a row),
     * and SKIP LOCKED leaves the rows another count holds to that count; the call's own rows are
     * taken in key order, so that two counts never wait for each other in a cycle. now() is the
     * server's clock, the same for every node whatever their own clocks say. */
    return pg_exec(pg,
                   "WITH k AS (SELECT DISTINCT key FROM unnest(ARRAY[$1, $2, $3]::text[]) AS u(key)"
                   "           WHERE key IS NOT NULL),"
                   " expired AS (DELETE FROM quarry.login_failures WHERE key IN ("
                   "   SELECT key FROM quarry.login_failures"
                   "    WHERE window_end <= now() AND key NOT IN (SELECT key FROM k)"
                   "    ORDER BY window_end LIMIT " PG_FAILURES_PURGE " FOR UPDATE SKIP LOCKED))"
                   " INSERT INTO quarry.login_failures AS f(key, window_start, window_end, failures)"
                   " SELECT key, now(), now() + make_interval(secs => $4), 1 FROM k ORDER BY key"
                   " ON CONFLICT (key) DO UPDATE SET"
                   "  failures = CASE WHEN f.window_end > now() THEN f.failures + 1 ELSE 1 END,"
                   "  window_start = CASE WHEN f.window_end > now() THEN f.window_start ELSE now() END,"
                   "  window_end = CASE WHEN f.window_end > now() THEN f.window_end"
                   "                    ELSE now() + make_interval(secs => $4) END",
                   &p, false, NULL, err, "count a failed login");
}

qr_status pgstore_failures_read(pgstore *pg, const char *const keys[], size_t n, int64_t *failures,
                                int64_t *left_ms, char *err)
{
    if (!pg || !failures || !left_ms)
        return qr_fail(err, QR_EINVAL, "pgstore_failures_read: NULL argument");
    pg_params p = {0};
    PGresult *r = NULL;
    qr_status st;
    if ((st = failure_keys(&p, keys, n, err, "pgstore_failures_read")) || (st = pg_ready(pg, err)))
        return st;
    /* a row per key, even an absent one, so that a standby (which may be behind) is told apart */
    if ((st = pg_exec(pg,
                      "SELECT coalesce(f.failures, 0),"
                      "  coalesce(ceil(extract(epoch FROM f.window_end - now()) * 1000)::bigint, 0),"
                      "  pg_is_in_recovery()::int"
                      " FROM unnest(ARRAY[$1, $2, $3]::text[]) WITH ORDINALITY AS k(key, i)"
                      " LEFT JOIN quarry.login_failures f ON f.key = k.key AND f.window_end > now()"
                      " ORDER BY k.i",
                      &p, false, &r, err, "read failed-login counts")))
        return st;
    if (PQntuples(r) != PGSTORE_FAILURE_KEYS || text_i64(r, 0, 2))
        st = qr_fail(err, QR_EUNAVAILABLE, "the server is a standby (in recovery), not the primary");
    for (size_t i = 0; !st && i < n; i++) {
        failures[i] = text_i64(r, (int)i, 0);
        left_ms[i] = text_i64(r, (int)i, 1);
    }
    PQclear(r);
    return st;
}

qr_status pgstore_failures_clear(pgstore *pg, const char *const keys[], size_t n, char *err)
{
    if (!pg)
        return qr_fail(err, QR_EINVAL, "pgstore_failures_clear: NULL argument");
    pg_params p = {0};
    qr_status st;
    if ((st = failure_keys(&p, keys, n, err, "pgstore_failures_clear")) || (st = pg_ready(pg, err)))
        return st;
    return pg_exec(pg, "DELETE FROM quarry.login_failures WHERE key IN ($1, $2, $3)", &p, false, NULL, err,
                   "clear failed-login counts");
}
