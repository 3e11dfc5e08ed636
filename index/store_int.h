/*
 * Private to index/: the store's handle and connection for the store's own files (store.c,
 * store_write.c, store_read.c, store_feed.c, store_query.c, store_follow.c), and store_db for any other file
 * of index/. SQLite stays inside index/; none of this is part of index/store.h.
 */
#ifndef QUARRY_STORE_INT_H
#define QUARRY_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "index/feed.h"
#include "index/store.h"

/* The store's connection. The caller must not leave a transaction or statement open on it. */
sqlite3 *store_db(store *s);

/* ---- shared by the store's files (store.c, store_write.c, store_read.c, store_feed.c,
 * store_query.c) ------------------------------------------------------------------------------ */

/* The prepared statements, by number (their SQL is store.c's store_sql). */
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
    Q_CHUNK_EXISTS,
    Q_CHUNK_RANGE_DOC,
    Q_CHUNK_BELOW,
    Q_CHUNK_ABOVE,
    Q_CHUNK_SEQ,
    Q_FTS_GONE_DOC,
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
    Q_FOLLOW_DOC_BY_KEY,
    Q_FOLLOW_DOC_INSERT,
    Q_FOLLOW_CHUNK_IDS,
    Q_FOLLOW_CHUNK_DOC,
    Q_FOLLOW_CHUNK_INSERT,
    Q_FOLLOW_TOMBSTONED,
    Q_COUNT
};

/* A macro's value as a string literal (for SQL text built at compile time). */
#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

enum { BATCH_NONE, BATCH_OPEN, BATCH_FAILED };

/* Chunk ids [lo, hi) whose rows a delete freed. */
typedef struct {
    int64_t lo, hi;
} store_vec_hole;

/* Search statements a handle keeps between calls (store_query.c's prepare_search). */
#define STORE_STMT_CACHE 16

struct store {
    sqlite3 *db;
    char *path; /* <dir>/quarry.db, for messages */
    sqlite3_stmt *q[Q_COUNT];
    int batch;               /* BATCH_*: see store_batch_begin */
    bool wrote;              /* the current call has written inside the transaction */
    bool bulk;               /* between store_bulk_begin and store_bulk_end */
    struct store_ckpt *ckpt; /* bulk mode's checkpointing thread (store_ckpt.c); NULL outside it */
    qr_status batch_st;      /* the failure that rolled the batch back */
    char batch_err[QR_ERR_LEN];
    fts5_tokenizer tokenizer;   /* the FTS index's tokenizer, made on first store_tokenize */
    Fts5Tokenizer *tokenizer_p; /* NULL until then */
    bool docset_fn;             /* quarry_docset_has() is registered (store_query.c) */
    qr_cancel *cancel;          /* store_set_cancel's token: the progress handler checks it */
    /* store_query.c's search statements, reset and unbound, found again by their SQL text;
     * NULL slots are free (a statement in use is out of the cache) */
    sqlite3_stmt *stmt_cache[STORE_STMT_CACHE];
    unsigned stmt_next;    /* the slot replaced next when every slot is taken */
    int64_t embedding_dim; /* the recorded vector dimension once read (never changes then); 0 */
    char *dir;             /* the data directory */
    /* the vectors file (store_vec.c): written through vec_fd (opened on the first write, rows
     * normalised in vec_buf), read through vec_read (opened on the first read) */
    int vec_fd;
    int vec_dim;
    bool vec_dirty; /* rows written since the last sync */
    float *vec_buf; /* rows of ids vec_pend_first.. not yet written (vec_pend_n of them) */
    size_t vec_cap;
    int64_t vec_pend_first;
    size_t vec_pend_n;
    store_vec_hole *vec_holes; /* ranges of deleted chunk ids whose rows are to be freed: the */
    size_t vec_nholes;         /* first vec_ready were committed, the rest are the open */
    size_t vec_capholes;       /* transaction's */
    size_t vec_ready;
    store_vectors *vec_read;
    struct store_route *route; /* store_route.c: the system of record, or NULL */
    /* a follow batch (store_follow.c): open, the change counter it began at, and the counter of
     * the last record it applied (follow_since before the first) */
    bool follow_open;
    int64_t follow_since, follow_last;
    /* the full-text index (store_fts.c): quarry.fts attached to db (NULL while detached: bulk
     * mode, or a failure to attach), bulk mode's follower thread, and whether the open
     * transaction changed indexed text (fts_changed) or a committed one did (fts_due) */
    struct store_fts_conn *fts;
    struct store_fts_bulk *fts_bulk;
    bool fts_changed, fts_due;
};

/* store_query.c: finalizes the cached search statements (store_close, before sqlite3_close). */
void store_stmt_cache_clear(store *s);

/* store.c: SQLite's result codes become quarry statuses here, and only here; the definitions
 * say what each helper does. */
qr_status store_sql_status(int rc);
qr_status store_sql_fail(store *s, int rc, char *err, const char *what);
qr_status store_run(store *s, sqlite3_stmt *q, char *err, const char *what);
qr_status store_step_row(store *s, sqlite3_stmt *q, bool *has_row, char *err, const char *what);
int store_bind_text(sqlite3_stmt *q, int i, const char *v, size_t n);
int store_bind_str(sqlite3_stmt *q, int i, const char *v);
qr_status store_bind_fail(store *s, char *err);
const char *store_col_str(sqlite3_stmt *q, int i);
qr_status store_end_call(store *s, qr_status st, char *err);
qr_status store_begin_write(store *s, char *err);
qr_status store_begin_read(store *s, char *err);
qr_status store_commit(store *s, char *err);
qr_status store_meta_get_int(store *s, const char *key, int64_t *out, char *err);
qr_status store_meta_get_str(store *s, const char *key, char *out, size_t n, char *err);
/* store_get_heads' reads, inside the caller's transaction. */
qr_status store_read_heads(store *s, store_stats *out, char *err);
qr_status store_meta_set_int(store *s, const char *key, int64_t v, char *err);
qr_status store_meta_set_str(store *s, const char *key, const char *v, char *err);
qr_status store_bump_counter(store *s, int64_t *counter, char *err);

/* store_write.c: input checks the queries share */
qr_status store_check_field(const char *what, const char *v, size_t max, bool allow_empty, char *err);
qr_status store_check_doc_id(const char *doc_id, char *err);
qr_status store_not_found(const char *doc_id, char *err);
/* store_write.c: store_put's checks of a document, shared with pgstore.c so that PostgreSQL
 * refuses exactly what the local store refuses. normalise_acl's *out is one allocation: free() it.
 * check_hash writes the hash lower-cased into out. */
qr_status store_normalise_acl(const char *const *acl, size_t nacl, const char ***out, size_t *nout,
                              char *err);
qr_status store_check_hash(const char *hash, char out[65], char *err);
qr_status store_check_text_and_chunks(const char *doc_id, const store_document *doc,
                                      const store_chunk *chunks, size_t nchunks, char *err);
qr_status store_check_vectors(const char *doc_id, size_t nchunks, const float *vectors, int dim, char *err);

/* store_write.c: store_put's checks and the writes of a document's rows, which a follower's store
 * (store_follow.c) applies too; the definitions say what each does. */
typedef struct {
    const char *title, *uri, *content_type;
    char *metadata;   /* canonical JSON (minified by SQLite's json()), malloc'd */
    const char **acl; /* canonical, sorted, deduplicated; one allocation with its strings */
    size_t nacl;
    char hash[65]; /* lowercase */
} store_put_input;
/* The SQL of the statement store_check_document checks metadata with (Q_JSON_CHECK; pgstore.c
 * prepares it on an in-memory database): the JSON type and the canonical (minified) text. */
#define STORE_JSON_CHECK_SQL \
    "SELECT CASE WHEN json_valid(?1) THEN json_type(?1) END, CASE WHEN json_valid(?1) THEN json(?1) END"
/* store_put's checks of a document, with json_check (STORE_JSON_CHECK_SQL) for its metadata: the
 * local store, a follower's records and PostgreSQL refuse the same input with the same status. */
qr_status store_check_document(sqlite3_stmt *json_check, const store_document *doc, const store_chunk *chunks,
                               size_t nchunks, const float *vectors, int dim, store_put_input *in, char *err);
void store_put_input_release(store_put_input *in);
qr_status store_check_dim(store *s, const char *doc_id, size_t nchunks, int dim, char *err);
qr_status store_acl_equal(store *s, int64_t id, const char **acl, size_t nacl, bool *equal, char *err);
qr_status store_write_acl(store *s, int64_t id, bool is_new, const char **acl, size_t nacl, char *err);
qr_status store_doc_stmt(store *s, int which, int64_t id, int64_t counter, char *err, const char *what);
qr_status store_fts_gone(store *s, int64_t id, int64_t counter, char *err);
qr_status store_remove_chunks(store *s, int64_t id, int64_t counter, char *err);

/* store_fts.c: the full-text index in quarry.fts, following the change counter (the comment at
 * its top says how). attach: at store_open (makes, checks, catches up). due: after a public call
 * or a batch committed changes to indexed text (catches up, or wakes bulk mode's thread).
 * bulk_begin/bulk_end: bulk mode's thread; bulk_finish asks it for its last, synced catch-up
 * early, so that it runs while the writer syncs its own load. apply_locked: catches up inside the caller's
 * write transaction (store_verify); verify compares the index with one built again from the chunks
 * (store_verify, after apply_locked). close: before sqlite3_close. */
qr_status store_fts_attach(store *s, char *err);
void store_fts_due(store *s);
void store_fts_bulk_begin(store *s);
void store_fts_bulk_finish(store *s);
qr_status store_fts_bulk_end(store *s, char *err);
qr_status store_fts_apply_locked(store *s, char *err);
qr_status store_fts_verify(store *s, char *err);
/* The counter the index has applied, inside the caller's transaction; -1 when not attached. */
qr_status store_fts_applied(store *s, int64_t *out, char *err);
/* Bulk mode's writer hands its transaction's new chunks to the full-text thread as it writes them:
 * counted, after each change-counter bump; capture, for each chunk added (with its document's
 * title); uncaptured, when the transaction changes the index in any other way (it is then read
 * back from quarry.db after its commit); txn_end, when it commits or rolls back. No-ops outside
 * bulk mode. */
void store_fts_counted(store *s, int64_t counter);
void store_fts_capture(store *s, int64_t id, const char *title, const char *headings, const char *body,
                       size_t body_len);
void store_fts_uncaptured(store *s);
void store_fts_txn_end(store *s, bool committed);
void store_fts_close(store *s);

/* store_ckpt.c: bulk mode's checkpointing thread for the WAL of the database at path, which the
 * connection writer writes (its WAL hook, replacing the autocheckpoint, asks for a PASSIVE
 * checkpoint after each commit); NULL when it cannot start (no memory, no thread), and the
 * writer's own autocheckpoint stays. stop removes the hook, waits for the checkpoint still asked
 * for and frees; NULL is a no-op. */
typedef struct store_ckpt store_ckpt;
store_ckpt *store_ckpt_start(sqlite3 *writer, const char *path, int max_frames);
void store_ckpt_stop(store_ckpt *c);

/* store_follow.c: QR_EINVAL when the store follows a system of record (store_follow_identity), whose
 * writes only a feed brings; inside the caller's write transaction. */
qr_status store_follow_refuse(store *s, char *err);

/* store.c: the largest chunk id ever handed out (sqlite_sequence), inside the caller's
 * transaction. */
qr_status store_chunk_seq(store *s, int64_t *seq, char *err);

/* store_vec.c: the vectors file (the comment at its top says how it stays consistent). */
/* Writes the rows of chunk ids first_id .. first_id + n - 1 (normalised), inside the caller's
 * write transaction; creates the file on first use. */
qr_status store_vec_write(store *s, int64_t first_id, const float *vectors, size_t n, int dim, char *err);
/* Opens the file for writing (made when no chunk id was handed out yet): before the
 * transaction inserts its first chunk. */
qr_status store_vec_open_write(store *s, int dim, char *err);
/* Makes the file anew, empty, for vectors of dim (the migration that fills it). */
qr_status store_vec_create(store *s, int dim, char *err);
/* Syncs the rows written since the last sync: before every commit. */
qr_status store_vec_sync(store *s, char *err);
/* Copies the row of a committed chunk into out; dim is the store's dimension. */
qr_status store_vec_read(store *s, int64_t chunk_id, float *out, int dim, char *err);
/* Records that the open transaction deleted the chunks [lo, hi) (widened to the live neighbours). */
qr_status store_vec_free(store *s, int64_t lo, int64_t hi, char *err);
/* The open transaction committed; durable: the commit was synced (the rows of every delete
 * committed so far may go). */
void store_vec_committed(store *s, bool durable);
/* The open transaction rolled back: its deletes are forgotten. */
void store_vec_rolled_back(store *s);
/* The chunk ids [lo, hi) live again (a follower's store receives ids below ones it holds): no
 * recorded hole, committed or not, frees their rows. */
qr_status store_vec_unfree(store *s, int64_t lo, int64_t hi, char *err);
/* store_verify's rules for the file: its header is the store's, it holds a row for every chunk,
 * and each live chunk's row is finite and normalised (or zero). */
qr_status store_vec_verify(store *s, char *err);
void store_vec_close(store *s);

/* store_route.c: a routed handle (store_set_primary). attach at open (a no-op without a primary),
 * detach at close; the write calls forward to the primary and catch the local store up;
 * batch_end applies a batch's writes at its commit. */
qr_status store_route_attach(store *s, char *err);
void store_route_detach(store *s);
qr_status store_route_put(store *s, const store_document *doc, const store_chunk *chunks, size_t nchunks,
                          const float *vectors, int dim, store_put_result *result, char *err);
qr_status store_route_delete(store *s, const char *doc_id, char *err);
qr_status store_route_set_acl(store *s, const char *doc_id, const char *const *acl, size_t nacl, char *err);
qr_status store_route_check_embedding(store *s, const char *model, int dim, char *err);
/* store_write.c: store_check_embedding on this store alone */
qr_status store_check_embedding_local(store *s, const char *model, int dim, char *err);
qr_status store_route_batch_begin(store *s, char *err);
qr_status store_route_batch_end(store *s, char *err);
void store_route_batch_rollback(store *s);
bool store_route_in_batch(const store *s);
/* store_route.c: a copy of store_set_primary's conninfo into *conninfo (free it), NULL when no
 * primary is set; QR_ENOMEM. */
qr_status store_route_primary(char **conninfo, char *err);
/* store_route.c: a copy of store.postgres_members, one conninfo per member (pgstore_members_free),
 * none when not named; QR_ENOMEM. */
qr_status store_route_members(char ***list, size_t *n, char *err);
/* store_link.c: a process-wide connection to the primary for one kind of call (the shared state,
 * the failed-login counters, the jobs), opened on first use from store_set_primary's conninfo
 * (QR_EINVAL when none is set), dropped after a connection failure and when another primary is
 * named. Define one with STORE_LINK_INIT(what), what naming its calls in messages. */
typedef struct {
    pthread_mutex_t mu;
    struct pgstore *pg;
    char *conninfo; /* the conninfo pg was opened with */
    const char *what;
} store_link;
#define STORE_LINK_INIT(what)                       \
    {                                               \
        PTHREAD_MUTEX_INITIALIZER, NULL, NULL, what \
    }
typedef qr_status (*store_link_fn)(struct pgstore *pg, void *ctx, char *err);
/* Runs fn on the link's connection, the link's mutex held; with retry (a call that may run twice),
 * once more on a new connection when one that had served turns out lost. */
qr_status store_link_call(store_link *l, store_link_fn fn, void *ctx, bool retry, char *err);
/* Closes the link's connection: the next call connects to the primary named then. */
void store_link_drop(store_link *l);
/* store_shared.c: closes the shared state's connection, for store_set_primary and
 * store_clear_primary: the next call connects to the primary named then. */
void store_shared_drop(void);
/* store_jobs_pg.c: the store_job_* calls of a routed store (store_jobs.c checked their arguments),
 * on PostgreSQL's quarry.jobs through one process-wide connection to the primary. insert records
 * this node (s's host and data directory) as the job's; unfinished lists this node's jobs. */
qr_status store_jobs_pg_insert(store *s, const store_job *job, const char *staged, char *err);
qr_status store_jobs_pg_get(const char *id, store_job *out, char **staged, char **results, char *err);
qr_status store_jobs_pg_update(const store_job *job, char *err);
qr_status store_jobs_pg_add_results(const char *id, const store_job_result *r, size_t n, char *err);
qr_status store_jobs_pg_list(const char *state, int64_t after_ms, const char *after_id, size_t limit,
                             store_job **out, size_t *n, bool *more, char *err);
qr_status store_jobs_pg_unfinished(store *s, store_job **out, size_t *n, char *err);
qr_status store_jobs_pg_prune(int64_t before_ms, size_t *pruned, char *err);
/* store.c: the store's own batch, which store_batch_* open on a handle that is not routed and a
 * follow batch (store_follow.c) opens on any */
qr_status store_batch_begin_local(store *s, char *err);
qr_status store_batch_commit_local(store *s, char *err);
void store_batch_rollback_local(store *s);

#endif
