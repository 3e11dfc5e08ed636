/*
 * index/pgstore.h, private to index/ (and its tests and benchmarks): PostgreSQL as quarry's
 * system of record (issue #24, store.backend = postgres). Documents, chunks, vectors and ACLs are
 * written to PostgreSQL with the same checks and results as the local store (store_put,
 * store_delete, store_set_acl); every write moves one commit-ordered change counter, and each
 * node's local store follows it through pgstore_pull (a store_follow_pull_fn, index/feed.h).
 * libpq stays inside pgstore.c: no PGconn or PGresult leaves it.
 *
 * Schema (in PostgreSQL schema "quarry", created and migrated by pgstore_open; pgstore.c has the
 * SQL): counter (one row: the change counter, the next chunk id, the next document key), meta
 * (store_uid, embedding_model, embedding_dim, tombstones_pruned), documents (key, doc_id, fields,
 * canonical metadata, content hash, text, counter of the last change), chunks (id, document key,
 * ordinal, byte offsets, heading path, counter), vectors (chunk id, dim float32 L2-normalised as
 * little-endian bytes, counter), acl (document key, canonical principal, counter), tombstones
 * (doc_id, document key, counter of its deletion), nodes (follower name, applied counter), shared
 * (name, data, version: the shared state below), jobs and job_results (background jobs, below),
 * login_failures (key, window start and end, failures: the failed-login counters below).
 *
 * The counter argument: every write transaction runs UPDATE on the counter row before it writes
 * anything else. The row lock that UPDATE takes is held to commit, so writers pass that point one
 * at a time and each sees the previous one committed: counters are handed out in commit order, and
 * a reader whose snapshot shows counter c sees every transaction with a counter <= c. A sequence
 * would not do: nextval() does not wait, so a transaction could draw 7, commit after another's 8,
 * and a reader that already moved past 8 would miss 7 for ever. Chunk ids and document keys come
 * from the same row under the same lock, so they too increase in commit order. The document lookup
 * that decides added/updated/unchanged runs after that UPDATE (READ COMMITTED gives each statement
 * a fresh snapshot, which then holds every earlier writer; it cannot be part of the UPDATE's own
 * statement, whose snapshot predates the wait), so two puts of one new doc_id cannot both insert
 * it. A write that turns out to change nothing rolls back: the counter stays, and counters are
 * gap-free.
 *
 * Threads: a handle is one connection, used by one thread at a time; open one per thread. Every
 * function that fails writes the reason into err (QR_ERR_LEN bytes, may be NULL) and, unless it
 * says otherwise, changes nothing. PostgreSQL errors become QR_EUNAVAILABLE (the connection is
 * lost, a write reached a standby, a standby cancelled a read for its replay), QR_ETIMEOUT (a
 * lock waited more than 5 s, a statement timeout), QR_ENOSPC, QR_ENOMEM, else QR_EIO. The call
 * that finds the connection lost fails with QR_EUNAVAILABLE (a write whose COMMIT got no answer
 * may or may not have happened: a put or an ACL change can simply be sent again); the next call
 * connects again.
 */
#ifndef QUARRY_INDEX_PGSTORE_H
#define QUARRY_INDEX_PGSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "index/feed.h"
#include "index/store.h"

typedef struct pgstore pgstore;

/* Connects (conninfo is a libpq key=value string or a postgresql:// URI) and, on a primary,
 * creates or migrates quarry's schema in one transaction under an advisory lock (two nodes that
 * start together migrate once); on a standby the schema must already be there. The database's
 * encoding must be UTF8. QR_EUNAVAILABLE when the server cannot be reached, QR_EINVAL for a
 * schema newer than this quarry, a non-UTF8 database, or a standby without the schema yet. */
qr_status pgstore_open(const char *conninfo, pgstore **out, char *err);
/* Closes the connection; NULL is a no-op. */
void pgstore_close(pgstore *pg);

/* Splits a connection string that names several PostgreSQL servers (host=a,b port=p1,p2, or a
 * postgresql://a:p1,b:p2/db URI) into one key=value connection string per server, each with the
 * other options and target_session_attrs=any, into a malloc'd list (pgstore_members_free).
 * QR_EINVAL without a host, with more than 16, or with host, hostaddr and port lists of different
 * lengths (a list of one entry applies to every server). */
qr_status pgstore_members(const char *conninfo, char ***list, size_t *n, char *err);
void pgstore_members_free(char **list, size_t n);

/* The store's identity, drawn once when the schema was created (a random positive int64). */
int64_t pgstore_uid(const pgstore *pg);

/* As store_check_embedding: records the model and dimension on first use (once, whichever node
 * comes first), then refuses another with QR_EINVAL. */
qr_status pgstore_check_embedding(pgstore *pg, const char *model, int dim, char *err);
/* The recorded model (into model, cap bytes) and dimension; "" and 0 before the first. */
qr_status pgstore_embedding(pgstore *pg, char *model, size_t cap, int *dim, char *err);

/* As store_put, store_delete and store_set_acl (the same checks, statuses and results), one
 * transaction each. *counter (may be NULL) gets the change counter of the write, 0 when nothing
 * was written (STORE_UNCHANGED, an equal ACL). Chunk ids (consecutive within a document) and
 * document keys are handed out by PostgreSQL, increasing in commit order, with gaps (ids a write
 * took but did not need). */
qr_status pgstore_put(pgstore *pg, const store_document *doc, const store_chunk *chunks, size_t nchunks,
                      const float *vectors, int dim, store_put_result *result, int64_t *counter, char *err);
qr_status pgstore_delete(pgstore *pg, const char *doc_id, int64_t *counter, char *err);
qr_status pgstore_set_acl(pgstore *pg, const char *doc_id, const char *const *acl, size_t nacl,
                          int64_t *counter, char *err);

/*
 * Batches (quarry ingest): pgstore_batch_begin opens one transaction that the following puts,
 * deletes and ACL changes on this handle join, each in a savepoint of its own, until
 * pgstore_batch_commit; one commit (one wait for the synchronous standby) for many documents.
 * A call that fails or changes nothing rolls back to its savepoint and the batch goes on; each
 * write still moves the counter. The counter row stays locked from the batch's first write to its
 * commit, so other writers wait (up to the lock timeout): keep batches short. Writes inside a batch
 * are visible to others, and durable, only once pgstore_batch_commit returned QR_OK; a lost
 * connection loses the batch (QR_EUNAVAILABLE from the calls after it and from the commit).
 */
qr_status pgstore_batch_begin(pgstore *pg, char *err);
qr_status pgstore_batch_commit(pgstore *pg, char *err);
void pgstore_batch_rollback(pgstore *pg);
bool pgstore_in_batch(const pgstore *pg);

/* The change counter as this connection sees it now (on the primary, the fence of a search). */
qr_status pgstore_counter(pgstore *pg, int64_t *counter, char *err);
/* The same on a primary; QR_EUNAVAILABLE from a server in recovery (a standby, or a leader Patroni
 * demoted that a load balancer still sends connections to). */
qr_status pgstore_primary_counter(pgstore *pg, int64_t *counter, char *err);
/* The counter and whether the server is in recovery (a standby), in one round trip. */
qr_status pgstore_counter_role(pgstore *pg, int64_t *counter, bool *standby, char *err);

/* Document doc_id as the server holds it: the counter of its last change and its digest (the text
 * store_follow_last_doc builds: free it), or *digest NULL when it holds no such document, with
 * *deleted_at the counter of its latest deletion (0: none recorded). On a primary only: a standby
 * (which may be behind) answers QR_EUNAVAILABLE. */
qr_status pgstore_doc_digest(pgstore *pg, const char *doc_id, int64_t *counter, char **digest,
                             int64_t *deleted_at, char *err);

/* A store_follow_pull_fn (ctx is the pgstore *): one REPEATABLE READ, READ ONLY transaction, so
 * it works on a hot standby. Records come in counter order: a document's record is its whole
 * state now (at its last change), a deletion's record carries doc_id and key. When a batch is
 * cut (*through < *head), a document changed both at or below *through and again later comes
 * with its later change, in a later batch: a follower holds the primary's state as of *head
 * exactly when a pull returned *through == *head. A source behind the follower (a lagging
 * standby: since > *head) emits nothing and sets *through to since. limit >= 1; a pull from since 0
 * is never cut (a whole snapshot: see feed.h). QR_ELIMIT when
 * since is above 0 and below the counter through which tombstones were pruned (pgstore_prune):
 * the follower can no longer learn every deletion and must be rebuilt (core has no "stale"
 * status; QR_ELIMIT is what store_filter_changes answers for pruned tombstones too). emit's
 * non-zero status stops the pull and is returned. */
qr_status pgstore_pull(void *ctx, int64_t since, size_t limit, store_follow_emit_fn emit, void *emit_ctx,
                       int64_t *through, int64_t *head, char *err);

/* Records that follower `node` (1..256 bytes of printable UTF-8) applied every change up to
 * watermark; a node's watermark is replaced by each call. */
qr_status pgstore_register_node(pgstore *pg, const char *node, int64_t watermark, char *err);
/* Deletes the tombstones at or below the smallest registered watermark (none without a
 * registered node) and records that counter as pruned; *pruned_through (may be NULL) gets the
 * counter pruned through so far. */
qr_status pgstore_prune(pgstore *pg, int64_t *pruned_through, char *err);

/*
 * Shared state (store_shared_read, index/store.h; store_shared.c checks names and sizes): small
 * named blobs in quarry.shared, each with a version that counts its writes (1 after the first).
 * Each call is one statement in a transaction of its own. Read from a server in recovery (a
 * standby, a demoted leader a load balancer still sends connections to), which may be behind:
 * QR_EUNAVAILABLE, as a write there is, unless any_server (a member asked directly while there is
 * no primary: store_shared.c takes the highest version among every member).
 */
/* The blob and its version; *data (free it) has a NUL after its *len bytes. QR_ENOTFOUND when
 * absent. */
qr_status pgstore_shared_read(pgstore *pg, const char *name, bool any_server, void **data, size_t *len,
                              int64_t *version, char *err);
/* Its version alone; QR_ENOTFOUND when absent. */
qr_status pgstore_shared_version(pgstore *pg, const char *name, bool any_server, int64_t *version, char *err);
/* Writes data when the blob is at version expect (0: only when absent) and gives it a new version
 * (from a sequence: versions only grow) in *version (may be NULL); QR_EEXIST, changing nothing,
 * when it is not. */
qr_status pgstore_shared_write(pgstore *pg, const char *name, const void *data, size_t len, int64_t expect,
                               int64_t *version, char *err);

/*
 * Background jobs (store_job_*, index/store.h; store_jobs_pg.c routes a routed store's calls here):
 * quarry.jobs and quarry.job_results, each call with the statuses, results and order its store_job_*
 * counterpart documents. A job also records node, the node that accepted it (1 to 4400 bytes of
 * printable UTF-8): its staged upload is there, and pgstore_job_unfinished lists one node's jobs,
 * the ones that node resumes; every other call sees every node's jobs. Text PostgreSQL cannot keep
 * (not UTF-8) is refused with QR_EINVAL, but for a job's error message, whose malformed bytes are
 * recorded as '?'. A result must be JSON (QR_EINVAL otherwise), kept in SQLite's minified form, so
 * that pgstore_job_get's array is the text the local store returns.
 */
qr_status pgstore_job_insert(pgstore *pg, const store_job *job, const char *staged, const char *node,
                             char *err);
qr_status pgstore_job_get(pgstore *pg, const char *id, store_job *out, char **staged, char **results,
                          char *err);
qr_status pgstore_job_update(pgstore *pg, const store_job *job, char *err);
/* One transaction, the job's row locked first: concurrent calls for one job take turns. */
qr_status pgstore_job_add_results(pgstore *pg, const char *id, const store_job_result *r, size_t n,
                                  char *err);
qr_status pgstore_job_list(pgstore *pg, const char *state, int64_t after_ms, const char *after_id,
                           size_t limit, store_job **out, size_t *n, bool *more, char *err);
/* The unfinished jobs that node accepted, oldest first; free() *out. */
qr_status pgstore_job_unfinished(pgstore *pg, const char *node, store_job **out, size_t *n, char *err);
qr_status pgstore_job_prune(pgstore *pg, int64_t before_ms, size_t *pruned, char *err);

/*
 * Failed-login counters (store_shared_failures_count, index/store.h; store_limits.c checks the
 * keys): a row per key in quarry.login_failures with its failures and its window's start and end,
 * timed by the server's clock. Each call takes up to PGSTORE_FAILURE_KEYS keys (a NULL entry is
 * none) and is one statement in a transaction of its own. A read from a server in recovery:
 * QR_EUNAVAILABLE, as a count there is.
 */
#define PGSTORE_FAILURE_KEYS 3
/* Counts one failure for each key (a key given twice, once): a key without a row, or whose window
 * has ended, starts a window of window_s (>= 1) seconds now with 1 failure. Deletes a few rows
 * whose window has ended too (more than a count can add), so that the table holds little more
 * than the keys that failed within the last window. */
qr_status pgstore_failures_count(pgstore *pg, const char *const keys[], size_t n, int64_t window_s,
                                 char *err);
/* failures[i] gets key i's failures in its current window (0: none, or the window has ended) and
 * left_ms[i] the milliseconds until that window ends (0 with no failures). */
qr_status pgstore_failures_read(pgstore *pg, const char *const keys[], size_t n, int64_t *failures,
                                int64_t *left_ms, char *err);
/* Forgets the keys' failures (a successful login). */
qr_status pgstore_failures_clear(pgstore *pg, const char *const keys[], size_t n, char *err);

#endif
