/*
 * index/store.h: the document store (store.c, store_write.c, store_read.c, store_query.c,
 * store_fts.c; store_feed.c behind index/feed.h):
 * documents, chunks and ACLs in one SQLite database, the FTS5 index in another, and the queries
 * retrieval runs on them. The change log and the feeds the indexes follow are in the private index/feed.h.
 */
#ifndef QUARRY_INDEX_STORE_H
#define QUARRY_INDEX_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/*
 * The document store: one SQLite database, <dir>/quarry.db, in WAL mode, and a vectors file
 * beside it, <dir>/quarry.vec. It holds documents, their chunks (text, heading path, offsets
 * into the normalised text), ACL rows, one float32 vector per chunk, L2-normalised, in the file
 * (so the vector index can be rebuilt without re-embedding, and reads its exact scores there)
 * and an FTS5 index of the chunks (columns title, headings, body; tokenizer porter unicode61) in
 * <dir>/quarry.fts, which follows the store's change counter: every write call that changes
 * indexed text brings the index up to date before it returns (a bulk load's thread does it after
 * each batch), and opening the store catches up, or rebuilds, an index that lags or is not the
 * store's. Should that update fail (the index's file locked by another process for 5 s, a full
 * disk), the write stays committed, a warning is logged, and the next write or opening catches
 * up; until then FTS5 does not find the change (a deleted chunk is never returned all the same).
 *
 * Every write is one transaction (or part of a batch, below): after a crash (a killed process,
 * a power cut) a document is wholly present or wholly absent. Commits are synced
 * (synchronous=FULL), so a write that returned QR_OK outside a batch also survives power loss;
 * the vector index relies on that, see store_changes_since.
 *
 * Threads: a store handle is used by one thread at a time. Open one handle per thread; WAL lets
 * any number of readers run while one writer writes, and a second writer waits up to 5 s
 * (then QR_ETIMEOUT). Every function that fails writes the reason into err (QR_ERR_LEN bytes,
 * may be NULL) and, unless it says otherwise, changes nothing.
 *
 * Costs, where a call does not say: a write (store_put, store_delete, store_set_acl,
 * store_check_embedding on first use, store_set_index_generation) is one transaction, and outside
 * a batch its commit syncs the WAL (a disk flush, milliseconds); store_put also writes every
 * chunk's vector, store_delete removes them, and a write that changed indexed text then updates
 * the full-text index in a transaction of its own (FTS5's indexing of the chunks; one more flush). Reads of
 * one document or chunk (store_get_hash, store_get_vector, store_get_document, store_change_counter) are
 * indexed lookups: microseconds, plus the document's ACL rows and chunks when asked for; per-id calls
 * (store_chunk_docs, store_read_chunks, store_permit_test) are one indexed lookup per id;
 * store_get_stats reads every document row (one pass over the documents table);
 * store_list_documents reads at most `limit` documents with their ACL rows; the search queries
 * cost what FTS5 or the filter reads (see each); store_tokenize touches no table; store_verify
 * reads everything. store_open runs any pending migration, once.
 */
typedef struct store store;

/* Limits on what one document may carry; larger input is refused with QR_ELIMIT. */
#define STORE_DOC_ID_MAX     512        /* bytes */
#define STORE_PRINCIPAL_MAX  256        /* bytes after "user:" or "group:" */
#define STORE_ACL_MAX        4096       /* principals per document */
#define STORE_FIELD_MAX      4096       /* title, uri, content type, headings (bytes) */
#define STORE_METADATA_MAX   (64 << 10) /* metadata JSON (bytes) */
#define STORE_CHUNK_TEXT_MAX (1 << 20)  /* one chunk's text (bytes) */
#define STORE_CHUNKS_MAX     (1 << 20)  /* chunks per document */
#define STORE_MODEL_MAX      127        /* embedding model name (bytes) */
#define STORE_DIM_MAX        16384      /* embedding dimension */

/* Opens <dir>/quarry.db, creating dir (mode 0700, parents too) and the database when missing,
 * and brings the schema up to date (migrations run in one transaction: a crash mid-migration
 * leaves the old schema). On error *out is NULL and err names the path: QR_EIO when the
 * directory or file cannot be created or read or is not a SQLite database, QR_EINVAL when the
 * schema is newer than this quarry, QR_ETIMEOUT when another process holds the write lock. */
qr_status store_open(const char *dir, store **out, char *err);
/* Opens another handle on s's store (the same data directory), e.g. for a second thread. */
qr_status store_open_another(const store *s, store **out, char *err);
/* Closes the handle; NULL is a no-op. */
void store_close(store *s);

/* Bounds the heap memory SQLite holds in this process, every handle together: near `bytes` the
 * page caches reuse their least recently used pages instead of allocating more (a soft limit:
 * nothing fails for it; 0 lifts it). Without it each handle's cache grows to its own 2 MB as
 * the handle meets new pages, which adds up over a server's many handles. Process-wide;
 * `quarry serve` sets it from data.cache_mib before it opens its handles. */
void store_set_memory_limit(int64_t bytes);
/* Stops SQLite keeping allocation statistics in this process (SQLITE_CONFIG_MEMSTATUS off), so
 * that no allocation takes its process-wide mutex, which a bulk load's writer and full-text thread
 * would otherwise take turns on. store_set_memory_limit and store_memory_used then do nothing.
 * Only before any SQLite connection of the process is opened; `quarry ingest` calls it. */
qr_status store_skip_memory_stats(char *err);
/* Has every store handle opened from now on read the first `bytes` of the database file through a
 * memory map (PRAGMA mmap_size; SQLite caps it; 0, the default, maps nothing). Process-wide;
 * `quarry serve` sets it from data.mmap_mib before it opens its handles. */
void store_set_mmap(int64_t bytes);
/*
 * A system of record (store.backend = postgres, issue #24; index/store_route.c). After
 * store_set_primary every store handle the process opens is routed: store_put, store_delete,
 * store_set_acl and store_check_embedding write to PostgreSQL's primary (conninfo) and then apply
 * its change feed to the local store up to their own write before they return (a batch is one
 * transaction on the primary, a savepoint per call, applied here at store_batch_commit;
 * store_batch_rollback discards it there; bulk mode changes nothing), and the local store follows the
 * primary's identity, document keys, chunk ids and counters. The feed is read from feed_conninfo (a standby;
 * NULL or "": conninfo). Process-wide; set it before opening handles. Connections are opened on
 * first use. QR_EINVAL without a conninfo or with fence_ms < 1.
 */
qr_status store_set_primary(const char *conninfo, const char *feed_conninfo, int64_t fence_ms, char *err);
/* Names every PostgreSQL member of the cluster directly (store.postgres_members: host=a,b
 * port=p1,p2 ...; NULL or "": none). When the primary cannot be reached (etcd down: Patroni demoted
 * the leader and there is none), a fence then asks every member for its change counter and applies
 * the feed up to the highest, which holds every write acknowledged before: searches go on while
 * writes fail. One member that does not answer within the fence's budget and the search fails closed
 * (it might be a primary this node cannot see). Process-wide; set it before opening handles.
 * QR_EINVAL for a connection string without hosts, or with more than 16. */
qr_status store_set_members(const char *conninfo, char *err);
/* Handles opened from now on are not routed (tests). */
void store_clear_primary(void);
/* Whether the handle writes to a system of record. */
bool store_routed(const store *s);
/* Before a search on a routed handle: reads the primary's change counter and applies the feed up
 * to it (from the standby, then from the primary) within fence_ms, so that every delete and ACL
 * change committed before the call is in the local rows the search's permission checks read.
 * QR_EUNAVAILABLE when that cannot be done (the primary unreachable, the feed too far behind):
 * the search must fail closed. QR_OK at once on a handle that is not routed. */
qr_status store_fence(store *s, char *err);

/*
 * Shared state (issue #24; index/store_shared.c): small named blobs every node of a system of
 * record must agree on (auth's API keys and generated token secret), kept in PostgreSQL's
 * quarry.shared while a primary is set (store_set_primary). Each call is one round trip on one
 * connection to the primary that the process shares (any thread may call; the calls take turns),
 * opened on first use and again after a connection failure. Names are 1..STORE_SHARED_NAME_MAX
 * bytes of printable ASCII, data at most STORE_SHARED_MAX bytes; every write of a name moves its
 * version (drawn from a sequence: versions only grow, and never come back). QR_EINVAL for a bad name or with
 * no primary set; QR_EUNAVAILABLE when the primary cannot be reached or is a standby (a write whose commit
 * got no answer may or may not have happened).
 */
#define STORE_SHARED_NAME_MAX 128
#define STORE_SHARED_MAX      (16 << 20)
/* Whether a primary is set, so that shared state lives in PostgreSQL (else: in the data directory,
 * as each caller does it). */
bool store_shared_on(void);
/* The blob and its version; *data (free it) has a NUL after its *len bytes. QR_ENOTFOUND when
 * absent. */
qr_status store_shared_read(const char *name, void **data, size_t *len, int64_t *version, char *err);
/* Its version alone (QR_ENOTFOUND when absent): what tells whether a cached copy is current. */
qr_status store_shared_version(const char *name, int64_t *version, char *err);
/* Compare and swap: writes data when the blob is at expect_version (0: only when absent), and
 * *new_version (may be NULL) gets its new version. QR_EEXIST, changing nothing, when it is not
 * (another writer came first: read it again and retry); QR_ELIMIT for more than STORE_SHARED_MAX
 * bytes. */
qr_status store_shared_write(const char *name, const void *data, size_t len, int64_t expect_version,
                             int64_t *new_version, char *err);

/*
 * Failed-login counters every node shares (issue #24; index/store_limits.c), in PostgreSQL's
 * quarry.login_failures while a primary is set (store_shared_on): a count per key (auth's "u:",
 * "d:" and "a:" keys) in a window that begins at the key's first failure and lasts the window_s
 * given then (a window already running keeps its end), timed by PostgreSQL's clock, so that the
 * nodes' clocks do not matter. Each call is one round trip on a connection to the primary that
 * the process shares, its own (any thread may call; the calls take turns), opened on first use
 * and again after a connection failure (each call then tries to connect: bound that wait with
 * connect_timeout in store.postgres). A call takes 1..STORE_FAILURE_KEYS keys, each NULL (none)
 * or 1..STORE_FAILURE_KEY_MAX bytes of valid UTF-8. QR_EINVAL for bad keys or window, or with no
 * primary set; QR_EUNAVAILABLE when the primary cannot be reached or is a standby (a count whose
 * commit got no answer may or may not have happened): the caller falls back to counters of its
 * own.
 */
#define STORE_FAILURE_KEYS    3
#define STORE_FAILURE_KEY_MAX 512
/* Counts one failure for each key, in a window of window_s (1..86400) seconds for a key whose
 * window has ended or that has none. The table keeps little more than the keys that failed within
 * the last window: each count deletes a few rows whose window has ended. */
qr_status store_shared_failures_count(const char *const keys[], size_t n, int64_t window_s, char *err);
/* failures[i] gets key i's failures in its current window (0: none, or it has ended) and left_ms[i]
 * (0 with no failures) the milliseconds until that window ends. */
qr_status store_shared_failures_read(const char *const keys[], size_t n, int64_t *failures, int64_t *left_ms,
                                     char *err);
/* Forgets the keys' failures (after a successful login). */
qr_status store_shared_failures_clear(const char *const keys[], size_t n, char *err);

/* Bytes of heap SQLite holds now in this process (for /metrics). */
int64_t store_memory_used(void);

/* True for "public", "user:<uid>" and "group:<name>" where the name is 1..STORE_PRINCIPAL_MAX
 * bytes of valid UTF-8 without control characters or leading/trailing white space: a principal
 * store_principal_canonical accepts. */
bool store_principal_valid(const char *principal);
/* The spelling an ACL principal is stored in. Principals are compared byte for byte, and auth
 * lower-cases the ASCII letters of the uid and group names a caller holds (auth/auth.h), so the
 * stored ACL does too: the name's ASCII letters lower-cased ("group:Engineering" is stored as
 * "group:engineering", "user:AVA" as "user:ava"; other bytes are kept). Every write of
 * an ACL (store_put, store_set_acl) stores this form. Writes it into out (strlen(principal) + 1
 * bytes are enough). QR_EINVAL, err naming the principal (when it prints safely) and what is wrong
 * with it, when it cannot be made valid (see store_principal_valid). */
qr_status store_principal_canonical(const char *principal, char *out, size_t cap, char *err);

typedef struct {
    const char *doc_id; /* external stable id, 1..512 bytes valid UTF-8, no control chars */
    const char *title;  /* NULL means "" (title, uri, content_type: UTF-8, no controls) */
    const char *uri;
    const char *content_type;
    const char *metadata_json; /* a JSON object, or NULL for {} */
    const char *const *acl;    /* principals; duplicates are folded; none = administrators only */
    size_t nacl;
    const char *content_hash; /* hex SHA-256 of the source bytes (64 hex digits) */
    const char *text;         /* normalised text: valid UTF-8 without NUL; chunks point into it */
    size_t text_len;
} store_document;

typedef struct {
    size_t start, end;    /* byte offsets into text, start < end, on UTF-8 character boundaries */
    const char *headings; /* heading path "A > B", or NULL/"" */
} store_chunk;

typedef enum {
    STORE_ADDED,       /* a new doc_id */
    STORE_UPDATED,     /* new content hash: chunks, vectors and FTS rows replaced (new chunk ids);
                        * or, same hash with a new title: FTS rows rewritten, chunk ids kept */
    STORE_UNCHANGED,   /* same hash, title, uri, content type, metadata and ACL: nothing written */
    STORE_ACL_UPDATED, /* same hash and title: only ACL rows and document fields rewritten */
} store_put_result;

/* Writes a document in one transaction (or in the open batch). vectors holds nchunks * dim
 * float32 values (chunk i at vectors[i * dim]); dim must equal the dimension recorded by
 * store_check_embedding (call it first) and the values must be finite.
 * When doc_id is stored with the same content_hash, the stored chunks and vectors are kept and
 * text, chunks and vectors may be NULL/0 (so ingest can apply ACL or metadata changes without
 * extraction or embedding); whatever is passed is still validated.
 * Otherwise text is required, and the document's old chunks (their ids go to the change log as
 * deleted), vectors and FTS rows are replaced by the new ones, whose ids are larger than any id
 * ever used. Every call that writes bumps the change counter; STORE_UNCHANGED writes nothing.
 * Errors: QR_EINVAL (with the offending field or chunk index) for bad input, QR_ELIMIT past
 * the limits above, QR_EIO/QR_ETIMEOUT/QR_ENOMEM from SQLite. On error nothing changes (inside a
 * batch, a failure while writing rolls the batch back: see below). */
qr_status store_put(store *s, const store_document *doc, const store_chunk *chunks, size_t nchunks,
                    const float *vectors, int dim, store_put_result *result, char *err);

/*
 * Batches, for bulk ingest. store_batch_begin opens one write transaction that the following
 * store_put, store_delete, store_set_acl (and other writes) on this handle join, until
 * store_batch_commit. The full-text index follows once per batch (FTS5 writes its pending index
 * once per transaction), so batches of ~50 documents make puts about 3x faster (bench/README.md). Each
 * document stays atomic: after a crash every document of an uncommitted batch is as it was before the batch.
 * While a batch is open this handle holds the store's write lock: other writers wait (up to 5 s,
 * then QR_ETIMEOUT) and readers on other handles see none of it until it commits, so keep
 * batches short (tens of documents, well under a second). Reads on this handle see its writes.
 * Writes inside a batch are durable only once store_batch_commit returned QR_OK.
 * A call inside a batch that fails before writing (bad input, QR_ENOTFOUND) changes nothing and
 * the batch goes on. A call that fails while writing (I/O error, disk full) rolls the whole
 * batch back: its message says so, later calls fail with the same status, and
 * store_batch_commit returns it: re-send the batch's documents. store_close rolls an open batch
 * back.
 */
/* QR_EINVAL when a batch is already open; QR_ETIMEOUT when another writer holds the lock. */
qr_status store_batch_begin(store *s, char *err);
/* Commits and ends the batch. QR_EINVAL when none is open; the first failure's status when the
 * batch was rolled back; an SQLite failure of the commit itself (nothing of the batch stays). */
qr_status store_batch_commit(store *s, char *err);
/* Discards the batch's writes and ends it; a no-op without a batch. */
void store_batch_rollback(store *s);
/* Whether a batch is open on this handle (its reads see writes that may yet be rolled back). */
bool store_in_batch(const store *s);

/*
 * Bulk loads (`quarry ingest`): from store_bulk_begin to store_bulk_end this handle's commits are
 * written to the WAL without an fdatasync each (synchronous=NORMAL), the WAL is checkpointed
 * after each commit by a thread of its own (with its own connection) and started over once it
 * holds more than STORE_BULK_CHECKPOINT_PAGES pages (the full-text index's WAL likewise, by
 * another), and the handle's page cache is 16 MB instead of 2. A killed process loses
 * nothing committed (the frames are in the kernel before COMMIT returns); a power cut during the
 * load may lose its last commits, never part of a document, and leaves a consistent store.
 * store_bulk_end restores synchronous=FULL and ends with a synced commit, which carries every
 * frame written before it to disk (one fdatasync of the WAL file; checkpoints sync as always): a
 * load whose store_bulk_end returned QR_OK is exactly as durable as one committed with FULL.
 * It then copies the WAL into the database and empties the file, unless another connection
 * reads the store for more than 0.1 s (it waits no longer for one).
 * Both outside a batch (QR_EINVAL otherwise). Other handles, a server's, keep FULL.
 */
#define STORE_BULK_CHECKPOINT_PAGES 1000
qr_status store_bulk_begin(store *s, char *err);
/* Ends bulk mode with the synced commit; a no-op when none was begun. */
qr_status store_bulk_end(store *s, char *err);

/* Looks up the stored content hash (64 lowercase hex digits and NUL) of doc_id. An absent
 * document is not an error: *found is false and hash is "". QR_EINVAL for an invalid doc_id. */
qr_status store_get_hash(store *s, const char *doc_id, char hash[65], bool *found, char *err);

/* Removes a document with its chunks, vectors, FTS rows and ACL rows in one transaction; the
 * chunk ids go to the change log as deleted. QR_ENOTFOUND when doc_id is not stored. */
qr_status store_delete(store *s, const char *doc_id, char *err);

/* Replaces the ACL of a stored document: ACL rows only (plus the document's version and update
 * time); chunks, vectors and FTS rows are untouched. An equal ACL writes nothing.
 * QR_ENOTFOUND when doc_id is not stored, QR_EINVAL for an invalid principal. */
qr_status store_set_acl(store *s, const char *doc_id, const char *const *acl, size_t nacl, char *err);

/* Records the embedding model and dimension on first use. Afterwards a different model or
 * dimension is refused with QR_EINVAL and a message naming the stored and the requested ones;
 * the same pair is QR_OK. QR_EINVAL as well for an empty or over-long model name or a dim
 * outside 1..STORE_DIM_MAX. */
qr_status store_check_embedding(store *s, const char *model, int dim, char *err);

typedef struct {
    int64_t documents, chunks, text_bytes;
    char embedding_model[STORE_MODEL_MAX + 1]; /* "" until store_check_embedding */
    int embedding_dim;                         /* 0 until store_check_embedding */
    int64_t change_counter;                    /* see store_changes_since */
    int64_t index_generation;                  /* set by the vector index */
    /* the change counter up to which the full-text index has applied the store's changes (it
     * follows them right after each commit, index/store_fts.c); -1 where it is not attached (a
     * handle in bulk mode). store_get_heads only. */
    int64_t fts_applied;
} store_stats;

/* Fills *out from one consistent snapshot. The counts cost a scan of every document row (about
 * 0.1 s at a million documents). */
qr_status store_get_stats(store *s, store_stats *out, char *err);
/* The same without the counts (documents, chunks and text_bytes are 0): the embedding and the
 * counters alone, a few keyed reads, for callers that run often (the index maintainer's pass). */
qr_status store_get_heads(store *s, store_stats *out, char *err);

/* Records the generation the vector index published (shown by `quarry stats`). Generations
 * only go up: a smaller one is QR_EINVAL. Does not bump the change counter. */
qr_status store_set_index_generation(store *s, int64_t generation, char *err);

/* One stored chunk, as returned by store_get_document. */
typedef struct {
    int64_t chunk_id;
    size_t start, end;    /* offsets into the document's normalised text */
    const char *headings; /* "" when none */
    const char *text;     /* text[start, end) of the document, NUL-terminated */
    size_t text_len;
} store_chunk_row;

/* A stored document. Every pointer points into the struct's own memory. */
typedef struct {
    const char *doc_id, *title, *uri, *content_type, *metadata_json, *content_hash;
    const char **acl; /* sorted, byte order */
    size_t nacl;
    int64_t version; /* 1 when added, +1 on every change */
    int64_t created_ms, updated_ms;
    size_t text_len;
    size_t chunk_count;      /* chunks the document has */
    store_chunk_row *chunks; /* in document order; NULL unless asked for */
    size_t nchunks;
    qr_arena arena_; /* private */
} store_doc_info;

/* Reads a document, and its chunks when with_chunks, from one snapshot. The caller frees *out
 * with store_doc_info_free. QR_ENOTFOUND when doc_id is not stored (*out is NULL then). */
qr_status store_get_document(store *s, const char *doc_id, bool with_chunks, store_doc_info **out, char *err);
/* Frees a document read by store_get_document; NULL is a no-op. */
void store_doc_info_free(store_doc_info *d);

/* Copies the vector of a chunk into out (dim floats, the store's dimension), as stored:
 * L2-normalised (the store normalises every vector it is given; a zero vector stays zeros).
 * QR_ENOTFOUND for an unknown chunk id, QR_EINVAL when dim is not the store's dimension. */
qr_status store_get_vector(store *s, int64_t chunk_id, float *out, int dim, char *err);

/* Checks the whole store: SQLite's integrity_check and foreign_key_check, FTS5's
 * integrity-check, the full-text index against one built again from the chunks (term by term and
 * row by row, after catching it up), and that every chunk has its document and
 * vector of the right size, every document the chunk count its row records, and every ACL row
 * its document. QR_EIO with the first problem found when the store is inconsistent. Reads
 * everything: seconds per million chunks. */
qr_status store_verify(store *s, char *err);

/* One document as a listing shows it. Strings are valid during the callback only. */
typedef struct {
    const char *doc_id, *title, *uri, *content_type;
    const char *acl_json; /* the ACL as a JSON array of principals, sorted */
    int64_t version, created_ms, updated_ms;
    size_t text_len, chunk_count;
} store_doc_summary;
typedef qr_status (*store_doc_fn)(void *ctx, const store_doc_summary *d, char *err);

/* Lists documents in doc_id byte order, for cursor pagination: calls fn for at most `limit`
 * (1..10000) documents whose doc_id sorts after `after` (NULL or "": from the first), all from one
 * snapshot, and sets *more when further documents follow. fn's non-zero status stops the walk and
 * is returned; fn must not call other store functions on the same handle. */
qr_status store_list_documents(store *s, const char *after, size_t limit, store_doc_fn fn, void *ctx,
                               bool *more, char *err);

/*
 * Search queries, for retrieval. They never see user text as syntax: retrieval hands in FTS5
 * expressions it built from quoted tokens, and the store binds them (and everything else) as
 * parameters.
 *
 * A store_filter says which chunks a search may see: those whose document's ACL holds one of
 * the caller's principals (an indexed lookup of the acl table, which is keyed by principal) --
 * or every document, ACL or not, for an administrator (all_documents) -- and that pass every
 * metadata filter that is set. Every function below applies the whole filter in SQL, before any
 * ranking or limit, so a limit never cuts permitted chunks in favour of forbidden ones.
 */
#define STORE_FILTER_PRINCIPALS_MAX 8192 /* principals of one caller */
#define STORE_FILTER_DOC_IDS_MAX    1024 /* documents named by one filter */

typedef struct {
    const char *const *principals; /* the caller's ACL principals (store_principal_valid) */
    size_t nprincipals;
    bool all_documents;         /* an administrator: the ACL is not consulted */
    const char *const *doc_ids; /* only these documents (external ids); none: any */
    size_t ndoc_ids;
    const char *uri_prefix;    /* only documents whose URI starts with this; NULL or "": any */
    const char *content_type;  /* only documents of exactly this type; NULL or "": any */
    int64_t updated_after_ms;  /* only documents changed after this time; <= 0: any */
    const char *require_match; /* FTS5 expression every chunk must match; NULL or "": none */
    const char *exclude_match; /* FTS5 expression no chunk may match; NULL or "": none */
} store_filter;

/* Puts this handle's statements under a cancellation token until the next call (NULL: none):
 * while it is set, SQLite's progress handler checks the token every STORE_PROGRESS_OPS virtual
 * machine instructions of any statement stepped on the handle -- FTS5 matching, the filters'
 * subqueries, the page's reads -- and a failed check stops the statement, whose function then
 * fails with the token's status (QR_ETIMEOUT past its deadline, QR_ECANCELED once cancelled) and
 * changes nothing. The token is borrowed: it must outlive its use. Retrieval sets it for the time
 * of one search. */
#define STORE_PROGRESS_OPS 1000
void store_set_cancel(store *s, qr_cancel *c);

/* A chunk found by a search, with its document's internal key (for per-document limits). */
typedef struct {
    int64_t chunk_id;
    int64_t doc;
    double score;
} store_hit;

/* BM25 over the FTS5 index: the chunks that match the FTS5 expression `match` and pass f, best
 * first, at most `limit` of them and, when max_per_doc > 0, at most max_per_doc per document
 * (each document's best). Scores are FTS5's bm25() with the column weights weights[0..3) (title,
 * headings, body), negated so that higher is better; equal scores are ordered by smaller chunk
 * id. FTS5 computes bm25 from whole-index statistics, so a chunk scores the same whoever
 * searches. *n gets the number written to out (room for limit hits). QR_EINVAL for a malformed
 * expression (FTS5's message), an invalid principal or doc id, or more principals or doc ids
 * than the limits above. */
qr_status store_search_bm25(store *s, const char *match, const double weights[3], const store_filter *f,
                            size_t max_per_doc, size_t limit, store_hit *out, size_t *n, char *err);

/* The ids of up to `limit` chunks that pass f, in no particular order, into ids (*n of them);
 * *more is true when further chunks pass. Used to search vectors over the permitted chunks only
 * when they are few. */
qr_status store_filter_chunks(store *s, const store_filter *f, size_t limit, int64_t *ids, size_t *n,
                              bool *more, char *err);

/* How the chunks that pass f changed after counter `since`, from one snapshot whose counter goes
 * to *counter: fn(ctx, chunk_id, passes) for every chunk deleted after `since` (passes false) and
 * every chunk of a document written after it (its content, ACL or metadata), first with passes
 * false, then once more with passes true when it passes f now. So a list of the chunks that passed
 * f at `since` becomes the list at *counter by removing every chunk reported and adding those
 * reported as passing. QR_ELIMIT, with fn not called, when more than `limit` rows would be reported
 * or the tombstones after `since` were pruned (store_pruned_through): list them again instead. */
typedef qr_status (*store_filter_change_fn)(void *ctx, int64_t chunk_id, bool passes, char *err);
qr_status store_filter_changes(store *s, const store_filter *f, int64_t since, size_t limit,
                               store_filter_change_fn fn, void *ctx, int64_t *counter, char *err);

/* The permission test of a list of chunks: docs[i] gets the document key of chunk ids[i] when
 * it exists and passes f, else -1. One indexed lookup (and the ACL rows of its document) per id,
 * the same for a chunk that passes as for one that does not; every entry is -1 on error. */
qr_status store_filter_ids(store *s, const store_filter *f, const int64_t *ids, size_t n, int64_t *docs,
                           char *err);

/* A per-chunk permission test built from a filter, for vindex_search's predicate when the
 * permitted chunks are too many to list. store_permit_test answers whether a chunk exists and
 * passes f, with one indexed query; it fails closed (false) on an error, which
 * store_permit_close then returns. Use the store handle for nothing else between open and close,
 * from the thread that opened it. */
typedef struct store_permit store_permit;
qr_status store_permit_open(store *s, const store_filter *f, store_permit **out, char *err);
bool store_permit_test(store_permit *p, int64_t chunk_id);
/* The tests share one read transaction, begun by store_permit_open and ended here: they see the
 * store as it was at open. Frees the test and returns the first error a test met (QR_OK when
 * none). NULL is a no-op. */
qr_status store_permit_close(store_permit *p, char *err);

/* Document keys of n chunks into docs (-1 for a chunk that no longer exists). */
qr_status store_chunk_docs(store *s, const int64_t *ids, size_t n, int64_t *docs, char *err);

/* A chunk and its document as a search result shows it. Strings are valid during the callback. */
typedef struct {
    int64_t chunk_id, doc;
    const char *doc_id, *title, *uri, *content_type;
    const char *headings; /* "" when none */
    const char *text;     /* the chunk's text */
    size_t text_len;
    size_t start, end; /* the chunk's byte offsets in its document's normalised text */
} store_chunk_view;
typedef qr_status (*store_chunk_view_fn)(void *ctx, const store_chunk_view *c, char *err);

/* Calls fn, in order, for each of ids[0..n) that still exists and passes f (checked again: a
 * document deleted or whose ACL changed since the search is left out), all from one snapshot.
 * fn must not call the store; its non-zero status stops the walk and is returned. */
qr_status store_read_chunks(store *s, const int64_t *ids, size_t n, const store_filter *f,
                            store_chunk_view_fn fn, void *ctx, char *err);

/* Splits text into the tokens the FTS index holds (porter unicode61: case-folded, diacritics
 * removed, Porter-stemmed) and calls fn with each token's indexed form and its byte range in
 * text, in order. Retrieval matches query words against chunk text this way, for highlights,
 * exactly as FTS5 matched them. fn's non-zero status stops and is returned. Touches no table. */
typedef qr_status (*store_token_fn)(void *ctx, const char *form, size_t form_len, size_t start, size_t end,
                                    char *err);
qr_status store_tokenize(store *s, const char *text, size_t len, store_token_fn fn, void *ctx, char *err);

/* The store's change counter (one indexed read): an index that saw this counter is current. */
qr_status store_change_counter(store *s, int64_t *counter, char *err);

/* ---- background jobs (store_jobs.c) --------------------------------------------------------- */

/* A background job as the jobs table holds it (the API's ingestion and rebuild jobs). state is
 * "queued", "running", "interrupted" (stopped by a shutdown; resumes at the next start),
 * "succeeded" or "failed"; finished_ms is 0 until it ends. */
typedef struct {
    char id[33];
    char kind[16];
    char state[16];
    char user[320];
    int64_t created_ms, started_ms, finished_ms;
    int64_t docs, done, failed, chunks;
    char error[QR_ERR_LEN];
} store_job;

/* Records a new job (counts as given; no results yet) with staged, the job's manifest: text the
 * store keeps as it is (the API writes JSON), "" for none. QR_EEXIST when the id is taken. The
 * row is durable when this returns. */
qr_status store_job_insert(store *s, const store_job *job, const char *staged, char *err);
/* Reads job id into *out. With staged or results non-NULL, *staged receives the manifest and
 * *results the per-document results as a JSON array in order ("[]" for none); free() both.
 * QR_ENOTFOUND for an unknown id (nothing is allocated). One snapshot. */
qr_status store_job_get(store *s, const char *id, store_job *out, char **staged, char **results, char *err);
/* Writes the job's state, times, counts and error (the row must exist: QR_ENOTFOUND). */
qr_status store_job_update(store *s, const store_job *job, char *err);
/* One document's result for store_job_add_results: result is JSON text. */
typedef struct {
    int64_t ordinal;
    bool failed;
    int64_t chunks;
    const char *result;
} store_job_result;
/* Records n documents' results and moves the job's counts in one transaction: done by one per
 * result, failed by one per failed result, chunks by their chunks. A result already recorded
 * for an ordinal (a document redone after a crash) is replaced and the counts are left as they
 * were for it. */
qr_status store_job_add_results(store *s, const char *id, const store_job_result *r, size_t n, char *err);
/* A page of jobs, newest first (created_ms, then id, descending), state "" or NULL for any;
 * after_ms/after_id (after_id NULL: from the newest) continue a listing after that job. *out is
 * calloc'd (free() it) with *n jobs; *more when later jobs exist. limit 1..10000. */
qr_status store_job_list(store *s, const char *state, int64_t after_ms, const char *after_id, size_t limit,
                         store_job **out, size_t *n, bool *more, char *err);
/* The jobs not finished (queued, running or interrupted), oldest first; free() *out. On a routed
 * store (store.backend = postgres) only this node's: the node that accepted a job holds its staged
 * upload and resumes it; the other calls see every node's jobs. */
qr_status store_job_unfinished(store *s, store_job **out, size_t *n, char *err);
/* Deletes the jobs that finished before before_ms, with their results; *pruned counts them. */
qr_status store_job_prune(store *s, int64_t before_ms, size_t *pruned, char *err);

#endif
