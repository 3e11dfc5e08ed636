/*
 * index/feed.h, private to index/ (and its tests and benchmarks): the store's change log and the
 * feeds the vector index (sync.c) and the pruned BM25 index (bm25_*.c) follow the store through
 * (store_feed.c). Retrieval, the API and the CLI read the store through index/store.h only.
 *
 * Every feed reads one snapshot and reports its change counter; callbacks run on the caller's
 * thread inside the read transaction. Costs: a walk reads every row it reports (the change log's
 * rows are indexed by counter, so a catch-up costs what changed, a full walk what is stored).
 */
#ifndef QUARRY_INDEX_FEED_H
#define QUARRY_INDEX_FEED_H

#include <stdbool.h>
#include <stdint.h>

#include "index/store.h"

/*
 * The change log, for the vector index. Every write transaction that changes documents, chunks
 * or ACLs bumps a monotonically increasing change counter and stamps the chunks it adds with
 * it; chunks it deletes are kept as tombstones (chunk id, counter). Chunk ids are never reused.
 *
 * store_changes_since calls fn for every chunk deleted after counter `since` (deleted = true,
 * vector NULL), then for every live chunk added after it (with its vector), in chunk id order,
 * all from one snapshot, and sets *counter to that snapshot's change counter: the vector index
 * records it and passes it as `since` next time. A chunk added and deleted after `since` is
 * reported once, as deleted. fn runs on the caller's thread inside a read transaction; it must
 * not call other store functions on the same handle, and the vector is valid only during the
 * call. When fn returns non-zero status the walk stops and that status is returned (fn fills
 * err itself). On a store error fn may have been called for a prefix of the changes.
 */
typedef struct {
    int64_t chunk_id;
    int64_t counter; /* the change that added or deleted it */
    bool deleted;
    const float *vector; /* dim floats, NULL when deleted */
    int dim;
} store_change;
typedef qr_status (*store_change_fn)(void *ctx, const store_change *change, char *err);
qr_status store_changes_since(store *s, int64_t since, store_change_fn fn, void *ctx, int64_t *counter,
                              char *err);

/* Forgets the tombstones of changes up to and including `counter` (the vector index calls it
 * once a generation that folded them in is published). Nothing else changes. */
qr_status store_prune_tombstones(store *s, int64_t counter, char *err);

/* Calls fn for every (chunk id, vector) in chunk id order from one snapshot, for index
 * rebuilds, and sets *counter to that snapshot's change counter. Same callback rules as
 * store_changes_since (the change's counter field is the chunk's added counter). */
qr_status store_each_vector(store *s, store_change_fn fn, void *ctx, int64_t *counter, char *err);

/*
 * The store's vectors file, read directly (store_vec.c has its layout and consistency rules): the
 * vector index reads its exact scores from it instead of keeping rows of its own. The row of chunk
 * id i is dim floats, L2-normalised (zeros for a zero vector), at base + i * dim; it is readable
 * for every chunk the store has committed, never changes while the chunk lives, and reads as zeros
 * once the chunk is deleted and its delete durable. A handle may be used from several threads.
 */
#define STORE_VEC_FILE "quarry.vec" /* in the data directory, beside quarry.db */
typedef struct store_vectors store_vectors;
/* Opens <data_dir>/quarry.vec read-only. QR_ENOTFOUND when the store has no vectors file yet (no
 * chunk was ever written), QR_EIO for a damaged header. */
qr_status store_vectors_open(const char *data_dir, store_vectors **out, char *err);
int store_vectors_dim(const store_vectors *f);
/* The uid of the store the file belongs to (store_uid). */
int64_t store_vectors_uid(const store_vectors *f);
/* Sets *base so that rows up to max_id can be read; the pointer stays valid until the handle is
 * closed (a longer file may be mapped anew, older mappings stay). QR_EIO when the file is too
 * short for max_id (damage: a committed chunk always has its row). */
qr_status store_vectors_map(store_vectors *f, int64_t max_id, const float **base, char *err);
/* Takes a shared lock on the file until the handle is closed: rows of deleted chunks are not
 * freed meanwhile (a backup holds it from before its snapshot of the store until its copy of
 * the file is done). */
qr_status store_vectors_hold(store_vectors *f, char *err);
/* Copies the file's header and rows up to max_id (0: the header only) to the new file dest, holes
 * kept as holes, and syncs it. */
qr_status store_vectors_copy(store_vectors *f, int64_t max_id, const char *dest, char *err);
void store_vectors_close(store_vectors *f);

/* The feeds of the pruned BM25 index, which keeps its own postings beside FTS5 and follows the
 * store through these reads (with store_change_counter, in index/store.h). */

/* The store's identity: a random number drawn when the store was created (or brought to schema
 * 2). Copies and backups of the file keep it; another store has another. An index derived from a
 * store records it and refuses to follow a store with another. */
qr_status store_uid(store *s, int64_t *uid, char *err);

/* The largest counter passed to store_prune_tombstones so far (0 when never): a reader that last
 * saw a smaller counter can no longer learn every deletion from the change log. */
qr_status store_pruned_through(store *s, int64_t *counter, char *err);

/* A chunk's text as its FTS5 row holds it: the document's title, the chunk's heading path and
 * body (the columns of chunks_fts, in that order). Strings are valid during the callback only and
 * are NUL-terminated; col_len excludes the NUL. */
typedef struct {
    int64_t chunk_id;
    int64_t doc;     /* the document's internal key; -1 for a deleted chunk */
    int64_t counter; /* the change that added (or deleted) the chunk */
    bool deleted;    /* store_text_changes_since: deleted after `since`; no text then */
    const char *col[3];
    size_t col_len[3];
} store_text;
typedef qr_status (*store_text_fn)(void *ctx, const store_text *t, char *err);

/* As store_changes_since, with each added chunk's text and document key instead of its vector:
 * chunks deleted after `since` (chunk id order), then live chunks added after it (chunk id
 * order), from one snapshot; *counter gets the snapshot's counter. Same callback rules. */
qr_status store_text_changes_since(store *s, int64_t since, store_text_fn fn, void *ctx, int64_t *counter,
                                   char *err);

/* Every live chunk's text and document key in chunk id order from one snapshot; *counter gets
 * its counter. Same callback rules (counter is the chunk's added counter). */
qr_status store_each_text(store *s, store_text_fn fn, void *ctx, int64_t *counter, char *err);

/* A stored document whose row changed after some counter: added, new content, new ACL, new
 * fields or title. Strings are valid during the callback only. */
typedef struct {
    int64_t doc;            /* internal key */
    int64_t counter;        /* the last change to the document */
    bool fts_rewritten;     /* after `since`, its FTS rows were rewritten under the same chunk
                             * ids (a new title with the same content hash) */
    const char *const *acl; /* its principals now, sorted; none = administrators only */
    size_t nacl;
} store_doc_change;
typedef qr_status (*store_doc_change_fn)(void *ctx, const store_doc_change *d, char *err);

/* Calls fn for every stored document changed after `since`, in key order, from one snapshot;
 * *counter gets its counter. Deleted documents are not reported (their chunks are, as deleted,
 * by store_text_changes_since); a key reused by a later document is reported as changed. */
qr_status store_docs_changed_since(store *s, int64_t since, store_doc_change_fn fn, void *ctx,
                                   int64_t *counter, char *err);

/* The keys of the documents whose ACL holds principal (store_principal_valid), ascending, from
 * one snapshot, through fn; *counter gets its counter. QR_EINVAL for an invalid principal. */
typedef qr_status (*store_doc_key_fn)(void *ctx, int64_t doc, char *err);
qr_status store_principal_docs(store *s, const char *principal, store_doc_key_fn fn, void *ctx,
                               int64_t *counter, char *err);

/*
 * Following another system of record (issue #24: store.backend = postgres). A follower's store
 * is written from a feed of document states, never by store_put: each record is one document's
 * whole state as of change `counter` of the system of record, whose counters are in commit order,
 * with the document key and chunk ids the primary assigned, so that the counters, keys and ids
 * the derived indexes record mean the same on every node. A batch of records is applied in one
 * local transaction, in counter order, and the local change counter becomes the batch's
 * `through`: every change of the system of record up to it is applied.
 */
typedef struct {
    int64_t counter;    /* the change that wrote this state (> the follower's counter) */
    int64_t doc_key;    /* the primary's internal key of the document (> 0) */
    bool deleted;       /* the document is gone: doc.doc_id and doc_key only */
    store_document doc; /* every field, the ACL, the content hash and the text */
    const store_chunk *chunks;
    size_t nchunks;
    const int64_t *chunk_ids; /* nchunks ids the primary assigned, increasing */
    const float *vectors;     /* nchunks * dim floats (chunk i at vectors[i * dim]) */
    int dim;
} store_follow_doc;
typedef qr_status (*store_follow_emit_fn)(void *ctx, const store_follow_doc *d, char *err);

/* A source of such records (pgstore_pull for PostgreSQL): calls emit for every document whose
 * state changed after `since`, and every deletion after it, in counter order, from one snapshot;
 * about `limit` records at most, but never part of one counter's changes; sets *through to the
 * counter the records bring a follower to (every change up to it was emitted) and *head to the
 * snapshot's counter (*through == *head when nothing was left out). A pull from since 0 (a node
 * that has nothing) may ignore the limit: a source whose deletions are pruned must send a whole
 * snapshot then (pgstore_pull does). */
typedef qr_status (*store_follow_pull_fn)(void *ctx, int64_t since, size_t limit, store_follow_emit_fn emit,
                                          void *emit_ctx, int64_t *through, int64_t *head, char *err);

/*
 * The follower's side (store_follow.c). A follower's store refuses store_put, store_delete and
 * store_set_acl (QR_EINVAL: its writes go to the system of record); store_check_embedding, the
 * indexes' own writes (generations, tombstone pruning) and jobs are still its own.
 */

/* Marks the store as a follower of the system of record whose identity is uid (> 0). On a store
 * that never held a chunk or a document (change counter 0) the store's own uid (store_uid)
 * becomes uid too, so that index generations stamped with it read the same on every node. Again
 * with the same uid: QR_OK, nothing changes. QR_EINVAL for another uid, for a store that holds
 * writes of its own, or for uid <= 0. */
qr_status store_follow_identity(store *s, int64_t uid, char *err);

/* Opens a follow batch: one write transaction (store_batch_begin's, with its rules: the write
 * lock is held until commit or rollback, so keep a batch short) that store_follow_apply fills.
 * QR_EINVAL on a store that is not a follower or when a batch is already open; QR_ETIMEOUT
 * when another writer holds the lock. */
qr_status store_follow_begin(store *s, char *err);

/* Makes the local state of document d->doc.doc_id exactly the record's, inside the follow batch:
 * deleted, the document (and whatever local document holds d->doc_key) is removed with its
 * chunks (tombstoned at d->counter), FTS rows, ACL rows and vector rows; otherwise it is stored
 * under d->doc_key with the given chunk ids. When the local document already has those chunk ids
 * (and content hash) only its fields, ACL and, for a new title, FTS rows are rewritten; else its
 * chunks are replaced: the old ones tombstoned at d->counter, the new ones written with their
 * vectors. A local document with the same doc_id under another key, or another doc_id under
 * d->doc_key, is removed first (the system of record deleted and re-added it). Rows are stamped
 * with d->counter as store_put stamps its own counter. A record equal to the local state writes
 * nothing.
 * The record is checked whole before anything is written, as store_put checks its input (same
 * messages and limits), and: d->counter must be greater than the store's change counter when
 * the batch began and not less than the previous record's; doc_key > 0; the text is required
 * (unless deleted); chunk ids positive and increasing, none of them held by another document or
 * deleted before (chunk ids are never reused; either means the feed diverged from this store).
 * A refused record (QR_EINVAL, QR_ELIMIT) changes nothing and the batch goes on; a failure while
 * writing rolls the whole batch back, as in store_batch_begin's rules (later calls and
 * store_follow_commit return it). QR_EINVAL without an open follow batch. */
qr_status store_follow_apply(store *s, const store_follow_doc *d, char *err);

/* Sets the store's change counter to `through` and commits the batch (the vectors file synced
 * before the COMMIT, as every commit). through must be at least every applied record's counter
 * and the counter the batch began at; otherwise QR_EINVAL and the batch is rolled back. Ends the
 * batch in every case: the first failure's status when it was rolled back meanwhile. */
qr_status store_follow_commit(store *s, int64_t through, char *err);

/* Discards the follow batch; a no-op without one. store_close rolls an open one back too. */
void store_follow_rollback(store *s);

/* Exactness. A record is a document's state at its last change, so a pull cut short (*through <
 * *head) leaves out a document changed both before and after *through: after it the store holds
 * every document's changes up to some counter, not necessarily up to *through. follow_step calls
 * store_follow_mark inside each batch with the pull's through and head: a cut pull records how
 * far its snapshot saw; a whole pull (through == head) whose snapshot reaches at least that far
 * (so from the same source or one no further behind) records that every change up to through is
 * in the store. Later batches only bring documents further. store_follow_exact reads that counter
 * (0: never), which is what a search's fence compares with the primary's (store_fence). */
qr_status store_follow_mark(store *s, int64_t through, int64_t head, char *err);
qr_status store_follow_exact(store *s, int64_t *counter, char *err);

/* The document this follower changed last: its doc_id and the counter of that change (*doc_id NULL
 * in an empty store), and its digest: content_hash, title, uri, content_type and metadata, then
 * its ACL principals in byte order, each followed by a newline but the last (free both). What the
 * primary must still hold after a failover (pgstore_doc_digest builds the same text there), unless
 * the document changed again since. */
qr_status store_follow_last_doc(store *s, char **doc_id, int64_t *counter, char **digest, char *err);

/* A routed store's feed follower (index/store_route.c, for the maintainer's follower thread): one
 * batch of at most `limit` records from the feed's connection (follow_step), after reading the
 * primary's counter into *primary_head; *counter and *head as follow_step sets them. */
qr_status store_follow_poll(store *s, size_t limit, int64_t *counter, int64_t *head, int64_t *primary_head,
                            char *err);
/* Records on the primary that this node (a name unique to it) applied every change up to
 * watermark, so that tombstones it still needs are kept; with prune, then deletes the tombstones
 * every registered node has passed (pgstore_prune). */
qr_status store_route_register(store *s, const char *node, int64_t watermark, bool prune, char *err);

#endif
