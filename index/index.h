/*
 * index: quarry's storage. The document store (SQLite with FTS5; store.c) and the vector index
 * (FAISS through its C API; vindex.c), with the GPU build path under gpu/. Only this module sees
 * sqlite3 and FAISS types.
 *
 * Also here: the dependency layer (library versions and runtime checks that the libraries quarry
 * links behave as the build promised) and sync.c, which keeps the vector index in step with the
 * store.
 */
#ifndef QUARRY_INDEX_H
#define QUARRY_INDEX_H

#include <stdbool.h>

#include "core/core.h"

/* "1.7.3 (avx2)": the FAISS quarry was built against and its SIMD level. */
const char *index_faiss_version(void);
/* The SQLite library in use at run time ("3.40.1"). */
const char *index_sqlite_version(void);

/* Checks at run time that SQLite has FTS5 with the porter and unicode61 tokenizers, and that the
 * FAISS C API builds and searches an inner-product index. On failure returns QR_EINTERNAL with
 * the library's message in err. */
qr_status index_selfcheck(char *err);

/* Whether the CUDA build path was compiled in, and how many devices the driver reports (0 when
 * not compiled, no driver or no device). */
bool index_gpu_compiled(void);
int index_gpu_device_count(void);
/* CUDA runtime version the GPU path was compiled with ("13.0"), or "" when not compiled. */
const char *index_gpu_cuda_version(void);

/* ---- document store (store.c) ------------------------------------------------------------ */

/*
 * The document store: one SQLite database, <dir>/quarry.db, in WAL mode. It holds documents,
 * their chunks (text, heading path, offsets into the normalised text), ACL rows, one float32
 * vector per chunk (so the vector index can be rebuilt without re-embedding) and an FTS5 index
 * of the chunks (columns title, headings, body; tokenizer porter unicode61).
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
/* Closes the handle; NULL is a no-op. */
void store_close(store *s);

/* True for "public", "user:<uid>" and "group:<name>" where the name is 1..STORE_PRINCIPAL_MAX
 * bytes of valid UTF-8 without control characters or leading/trailing white space. Principals
 * are compared byte for byte: auth must produce them in the same form ingest stores them. */
bool store_principal_valid(const char *principal);

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
 * store_batch_commit. FTS5 writes its pending index once per transaction, so batches of ~50
 * documents make puts about 3x faster (bench/README.md). Each document stays atomic: after a
 * crash every document of an uncommitted batch is as it was before the batch.
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
} store_stats;

/* Fills *out from one consistent snapshot. */
qr_status store_get_stats(store *s, store_stats *out, char *err);

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

/* Copies the vector of a chunk into out (dim floats, the store's dimension).
 * QR_ENOTFOUND for an unknown chunk id, QR_EINVAL when dim is not the store's dimension. */
qr_status store_get_vector(store *s, int64_t chunk_id, float *out, int dim, char *err);

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

/* Checks the whole store: SQLite's integrity_check and foreign_key_check, FTS5's
 * integrity-check against the chunk table, and that every chunk has its document, FTS row and
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

/* A per-chunk permission test built from a filter, for vindex_search's predicate when the
 * permitted chunks are too many to list. store_permit_test answers whether a chunk exists and
 * passes f, with one indexed query; it fails closed (false) on an error, which
 * store_permit_close then returns. Use the store handle for nothing else between open and close,
 * from the thread that opened it. */
typedef struct store_permit store_permit;
qr_status store_permit_open(store *s, const store_filter *f, store_permit **out, char *err);
bool store_permit_test(store_permit *p, int64_t chunk_id);
/* Frees the test and returns the first error a test met (QR_OK when none). NULL is a no-op. */
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

/*
 * Feeds for the pruned BM25 index (bm25.c), which keeps its own postings beside FTS5 and follows
 * the store through these reads. All of them read one snapshot and report its change counter.
 */

/* The store's change counter (one indexed read): an index that saw this counter is current. */
qr_status store_change_counter(store *s, int64_t *counter, char *err);

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

/* ---- pruned BM25 top-k (bm25.c) ---------------------------------------------------------- */

/*
 * BM25 top-k without scoring every match ([bm25-topk]). FTS5's ORDER BY rank computes bm25()
 * for every chunk that matches any query word; this index answers the same question -- the top
 * `limit` chunks for an OR of words, with the caller's permissions and an optional per-document
 * limit -- by MaxScore over postings quarry keeps beside FTS5, skipping every chunk whose upper
 * bound cannot reach the current k-th score. FTS5 stays the source of truth for text, phrases,
 * exclusions and snippets; retrieval uses this path for word queries (retrieval.bm25_path).
 *
 * Exactness: scores are FTS5's bm25() arithmetic, computed in FTS5's order from the same
 * whole-index statistics (rows, tokens, rows per term, as of the store's latest change), and
 * equal scores are ordered by smaller chunk id; so the top k, its scores and its order are those
 * of store_search_bm25 with the expression "w1" OR "w2" ... (tests/test_bm25.c checks it on
 * random corpora with writes, deletes and ACL changes in between).
 *
 * On disk, under <data_dir>/bm25: current.bm25, one generation (rows with their chunk id,
 * document key and length; the sorted vocabulary; postings in blocks of 128 with per-block
 * maxima, delta- and varint-coded), written under a temporary name, synced and renamed, with a
 * checksum checked at open and the store change counter it was built from. Changes after that
 * counter live in memory: chunks added are tokenised with FTS5's own tokenizer into a delta,
 * deleted chunks become tombstones, and documents whose ACL changed update the cached per-
 * principal document sets. A lag of more than bm25.delta_max chunk changes, a store whose counter
 * went backwards or whose tombstones were pruned past the generation, a title rewritten under
 * the same chunk ids, or a damaged file, builds a new generation from the store.
 *
 * Permissions: each principal's readable documents are a bitset over document keys, read once
 * from the acl table and kept (up to bm25.principal_cache principals) and updated as documents
 * change; a search ORs the caller's sets and tests every candidate before it is scored, so a
 * chunk the caller may not read never enters the heap nor takes one of the k places.
 *
 * Threads: one bm25_index may be shared by threads, each with its own store handle; searches
 * run concurrently, catching up with the store takes the index exclusively for the time of the
 * catch-up.
 */
typedef struct bm25_index bm25_index;

typedef struct {
    size_t delta_max;       /* bm25.delta_max: chunk changes kept in memory before a rebuild */
    size_t principal_cache; /* bm25.principal_cache: principals whose document sets are kept */
} bm25_opts;

typedef struct {
    bool rebuilt;          /* a new generation was built and written */
    size_t added, removed; /* chunk changes replayed into the delta */
    size_t docs_changed;   /* documents whose ACL sets were refreshed */
    int64_t counter;       /* the store change counter the index now reflects */
    double seconds;        /* time spent */
} bm25_report;

typedef struct {
    int64_t counter;            /* the store change counter reflected */
    int64_t generation_counter; /* the counter the file on disk was built from */
    size_t rows;                /* live chunks */
    size_t terms;               /* distinct terms in the generation */
    uint64_t postings;          /* postings in the generation */
    size_t delta_rows;          /* chunks added since the generation */
    size_t tombstones;          /* rows deleted since the generation */
    uint64_t file_bytes;        /* size of current.bm25 */
    uint64_t memory_bytes;      /* heap held besides the mapped file (delta, sets, caches) */
    size_t principals_cached;
} bm25_info;

void bm25_opts_default(bm25_opts *o);
/* The bm25.* keys. */
void bm25_opts_from_config(const qr_config *cfg, bm25_opts *o);

/* Opens the index under <data_dir>/bm25 (creating the directory, mode 0700) and brings it up to
 * the store's latest change, building a generation when there is none or it cannot be caught up
 * (see above); force builds one whatever. rep may be NULL. QR_EIO when files cannot be written,
 * QR_ENOMEM, and the store's errors. On error *out is NULL. */
qr_status bm25_open(store *s, const char *data_dir, const bm25_opts *o, bool force, bm25_index **out,
                    bm25_report *rep, char *err);

/* Brings x up to s's latest change: a no-op costing one read when nothing changed, a replay of
 * the change log otherwise. With rebuild false, a lag that needs a new generation is refused
 * with QR_EUNAVAILABLE (the index is left as it was: callers fall back to FTS5 and rebuild
 * elsewhere); with rebuild true it is built (force: always). rep may be NULL. A handle with an
 * open batch sees writes that may be rolled back, so the index never learns from one: unless
 * nothing changed, QR_EUNAVAILABLE (QR_EINVAL with force). */
qr_status bm25_sync(bm25_index *x, store *s, bool rebuild, bool force, bm25_report *rep, char *err);

/* Frees the index; NULL is a no-op. Every other call on it must have returned. */
void bm25_close(bm25_index *x);

void bm25_get_info(bm25_index *x, bm25_info *out);

/* What <data_dir>/bm25/current.bm25's header says (generation counter, rows, terms, file size;
 * counter = generation_counter), without opening, checking or catching up the index: for
 * `quarry stats`. QR_ENOTFOUND when there is no file, QR_EIO when it is not a BM25 index. */
qr_status bm25_peek(const char *data_dir, bm25_info *out, char *err);

#define BM25_TERMS_MAX 1024 /* words in one search (repeats count) */

/* The top `limit` chunks for the OR of terms (indexed forms as store_tokenize gives them;
 * repeats count twice, as in FTS5) with column weights weights[0..3) (title, headings, body;
 * finite, >= 0), best first, scores negated bm25 (higher is better), ties by smaller chunk id;
 * at most max_per_doc per document when > 0 (each document's best). Only chunks of documents
 * whose ACL holds one of principals pass, or every chunk for all_documents. First catches up
 * with s as bm25_sync(x, s, false, false): QR_EUNAVAILABLE when that needs a rebuild. s is also
 * read for principals not cached yet. *n gets the number written to out (room for limit).
 * QR_EINVAL for bad arguments or an invalid principal, QR_ELIMIT past BM25_TERMS_MAX or
 * STORE_FILTER_PRINCIPALS_MAX. */
qr_status bm25_search(bm25_index *x, store *s, const char *const *terms, size_t nterms,
                      const double weights[3], const char *const *principals, size_t nprincipals,
                      bool all_documents, size_t max_per_doc, size_t limit, store_hit *out, size_t *n,
                      char *err);

/* ---- vector index (vindex.c) ------------------------------------------------------------- */

/*
 * The vector index: FAISS over the chunks' embedding vectors, L2-normalised on the way in and
 * searched by inner product (so scores are cosines); FAISS ids are chunk ids (>= 0). The type
 * follows the size (vindex.type): exact (IndexFlatIP behind an id map) up to
 * vindex.exact_threshold vectors, IVF above (SQ8 by default; Flat, or 4-bit PQ fast scan; nlist
 * about 4*sqrt(N)), or HNSW32 when configured. bench/README.md has the measurements.
 * Every result is re-scored exactly from the float32 vectors kept per generation, so scores are
 * the same whichever path found a chunk, and equal scores are ordered by smaller chunk id.
 *
 * On disk, under dir: generation N is gen-N.faiss (the FAISS index) and gen-N.vec (chunk ids in
 * ascending order and their normalised float32 rows, mapped into memory for exact search), and
 * MANIFEST names the served generation with its type, dimension, count, the store change counter
 * it was built from and a checksum of every file. A build writes its files under temporary
 * names, syncs and renames them, and commits by renaming MANIFEST last: a crash at any moment
 * leaves the previous generation served, and leftovers are removed at the next open or build.
 * One process at a time may open a directory (a lock file; the second open is QR_EPERM).
 *
 * Incremental changes live in memory: vindex_add puts chunks into an exact delta searched with
 * the main index, vindex_remove records tombstones filtered at search time. They are not written
 * to disk: the store's change log has them (store_changes_since from the counter in
 * vindex_get_info), and a build folds them in. Each change carries the store change counter that
 * made it; a build from a store snapshot at counter C keeps the changes made after C.
 *
 * Threads: every function may be called from any thread, concurrently with searches. Searches
 * hold a reference-counted snapshot (main index, vectors, delta, tombstones) and never wait for
 * a build; publishing a generation swaps the snapshot atomically. Adds, removes and the commit
 * of a build are serialised; one build runs at a time. vindex_close needs every other call on
 * the handle to have returned.
 *
 * Errors: QR_EINVAL for bad arguments (wrong dimension, NaN/Inf or zero vectors, k outside
 * 1..VINDEX_K_MAX, negative or duplicate ids); QR_EIO and QR_ENOMEM from the system,
 * QR_EINTERNAL with FAISS's message. Unless a function says otherwise, a call that fails changes
 * nothing.
 */
typedef struct vindex vindex;

#define VINDEX_DIM_MAX 16384
#define VINDEX_K_MAX   10000

typedef struct {
    const char *type;         /* "auto", "flat", "ivf_flat", "ivf_sq8", "ivf_pq", "hnsw" (vindex.type) */
    size_t exact_threshold;   /* auto: flat up to this many vectors, ivf_sq8 above */
    size_t nlist;             /* IVF lists; 0: round(4 * sqrt(N)), at most N / 39 */
    size_t train_per_list;    /* IVF training sample: this many vectors per list (39..256) */
    size_t nprobe;            /* IVF lists visited per query */
    size_t ef_search;         /* HNSW candidate list length per query */
    size_t delta_max;         /* vindex_needs_rebuild above this many delta rows + tombstones */
    bool rebuild_on_mismatch; /* vindex_open: a stale or damaged index is reported, not an error */
} vindex_opts;

/* The defaults of the vindex.* configuration keys. */
void vindex_opts_default(vindex_opts *o);
/* Reads the vindex.* keys. Cannot fail: the configuration validated them. The type string
 * points into cfg. */
void vindex_opts_from_config(const qr_config *cfg, vindex_opts *o);

/* Opens the index under dir (created with its parents, mode 0700, when missing) for vectors of
 * dim floats, and checks it against the store: store_counter is the store's change counter and
 * dim its embedding dimension.
 * When MANIFEST, the generation files and dim agree and the index reflects store_counter, *stale
 * is false. Otherwise (store_counter differs from the index's, another dimension, a corrupted or
 * missing file): with o->rebuild_on_mismatch the open succeeds with *stale true, serving the
 * generation it could load (or nothing), and the caller brings it up to date (vindex_add and
 * vindex_remove from the store's change log, or vindex_build); without it the open fails with
 * QR_EINVAL (stale, other dimension) or QR_EIO (damaged files), err says which and nothing is
 * changed. QR_EPERM when another handle holds the directory. Opening removes files left by an
 * interrupted build. On error *out is NULL. */
qr_status vindex_open(const char *dir, int dim, const vindex_opts *o, int64_t store_counter, vindex **out,
                      bool *stale, char *err);
/* Closes the handle; the files stay. NULL is a no-op. */
void vindex_close(vindex *v);

/* Coarse centroids computed elsewhere (the GPU build path, or vindex_kmeans): nlist rows of dim
 * floats. An IVF build given centroids skips FAISS's k-means and uses them (normalised) as its
 * lists; a flat or HNSW build ignores them. */
typedef struct {
    const float *data;
    size_t nlist;
    int dim;
} vindex_centroids;

/* A build in progress: vindex_build_begin, vindex_build_add any number of times (chunk ids in
 * any order, ascending is cheapest), then vindex_build_commit or vindex_build_abort. The vectors
 * are held in memory until the commit. */
typedef struct vindex_builder vindex_builder;

/* Starts a build. centroids may be NULL (FAISS k-means on a sample). QR_EEXIST when a build of
 * this index is already running; QR_EINVAL for centroids of another dimension, no rows, or a
 * zero or non-finite row. */
qr_status vindex_build_begin(vindex *v, const vindex_centroids *centroids, vindex_builder **out, char *err);
/* Adds n vectors of dim floats with their chunk ids. On error nothing of this call is added and
 * the builder stays usable. */
qr_status vindex_build_add(vindex_builder *b, const int64_t *ids, const float *vecs, size_t n, int dim,
                           char *err);
/* Builds the index of every vector added (type chosen by size or vindex.type; an empty build is
 * flat), writes the generation, commits its MANIFEST and swaps it in for searches, then removes
 * the old generation's files. store_counter is the store change counter the added vectors are a
 * snapshot of: delta rows and tombstones with a larger counter are carried into the new
 * generation, the others are dropped. Frees the builder, also on error. QR_EINVAL for a
 * duplicate chunk id; on any error the previous generation stays served and on disk. */
qr_status vindex_build_commit(vindex_builder *b, int64_t store_counter, char *err);
/* Drops a build; NULL is a no-op. */
void vindex_build_abort(vindex_builder *b);

/* A pull source of vectors for vindex_build: fills up to cap rows (ids[i], vecs[i * dim]) and
 * sets *n; *n = 0 means the end. A non-zero status stops the build (the source fills err). */
typedef qr_status (*vindex_source_fn)(void *ctx, int dim, int64_t *ids, float *vecs, size_t cap, size_t *n,
                                      char *err);
/* vindex_build_begin, the source drained into vindex_build_add, vindex_build_commit. */
qr_status vindex_build(vindex *v, vindex_source_fn src, void *ctx, int64_t store_counter,
                       const vindex_centroids *centroids, char *err);

/* Adds n chunks to the exact delta. store_counter (>= 0) is the store change that added them;
 * changes may arrive in any order (store_changes_since reports deletions first), the index
 * remembers the largest. QR_EEXIST when an id is already in the index (removed ids included:
 * chunk ids are never reused) or twice in the call. */
qr_status vindex_add(vindex *v, const int64_t *ids, const float *vecs, size_t n, int dim,
                     int64_t store_counter, char *err);
/* Tombstones n chunk ids (from the main index or the delta) so that searches skip them. Ids the
 * index does not hold, and ids already removed, are accepted: the store's change log reports
 * chunks added and deleted since a counter as deleted only. Same counter rule as vindex_add.
 * n may be 0 (ids NULL): the call then only records store_counter, for store changes that
 * touched no chunk (ACL or title edits), so that the index counts as up to date. */
qr_status vindex_remove(vindex *v, const int64_t *ids, size_t n, int64_t store_counter, char *err);
/* True when the delta rows plus tombstones exceed delta_max: time to build a new generation. */
bool vindex_needs_rebuild(vindex *v);

/* Permission predicate for vindex_search: true when the caller may read chunk id. Called on the
 * searching thread, any number of times per search, while the snapshot's delta is read-locked:
 * it must not call back into the same vindex. */
typedef bool (*vindex_permit_fn)(void *ctx, int64_t id);

/* The k best permitted chunks for query (dim floats, normalised here), best first, into
 * ids[0..*found) and scores[0..*found) (cosines). permit NULL permits everything. The main
 * index (approximate for IVF and HNSW) is asked for 2k candidates (50k for ivf_pq, whose codes
 * rank coarsely), all re-scored exactly, then more (2 to 64 times, by the pass rate seen) while
 * fewer than k pass the tombstones and the predicate; when the ANN index has no more to give, or
 * past max(4096, 32k) candidates, the search goes exact (BLAS over the generation's vectors), so
 * if k permitted chunks exist, k are returned. A flat index goes exact right after its first
 * round, and its results are always the exact top k. The delta is always searched exactly.
 * *found < k only when fewer than k permitted chunks exist.
 * With IVF or HNSW, a predicate that passes few chunks costs recall (the permitted neighbours lie
 * outside the lists visited) and, below about 0.1%, an exact scan of every vector: when the
 * caller knows the permitted ids and they are few (up to some 10% of the index, see
 * bench/README.md), vindex_search_subset is exact and faster. */
qr_status vindex_search(vindex *v, const float *query, int dim, size_t k, vindex_permit_fn permit, void *ctx,
                        int64_t *ids, float *scores, size_t *found, char *err);

/* Exact top-k over an explicit set of permitted chunk ids (any order, duplicates allowed; ids
 * the index does not hold and removed ids are skipped): the rows are gathered by id and scored
 * with BLAS. The result is the true top-k of the set, equal scores by smaller id. */
qr_status vindex_search_subset(vindex *v, const float *query, int dim, size_t k, const int64_t *permitted,
                               size_t n, int64_t *ids, float *scores, size_t *found, char *err);

typedef struct {
    uint64_t generation; /* 0: nothing built yet */
    char type[16];       /* "flat", "ivf_flat", "ivf_sq8", "ivf_pq", "hnsw", "none" */
    int dim;
    size_t count;         /* vectors in the main index */
    size_t nlist, nprobe; /* IVF only */
    size_t ef_search;     /* HNSW only */
    size_t delta;         /* rows in the delta */
    size_t tombstones;
    int64_t built_counter; /* store change counter the generation was built from */
    int64_t store_counter; /* the latest change the index reflects (catch up from here) */
    uint64_t searches;     /* vindex_search calls answered since open */
    uint64_t exact_scans;  /* of which fell back to an exact scan of the main index */
} vindex_info;

/* Describes the served snapshot. */
void vindex_get_info(vindex *v, vindex_info *out);

/* ---- keeping the vector index up to date (sync.c) ---------------------------------------- */

/*
 * The store is the truth and the vector index a copy that can lag it. index_sync brings an open
 * index up to the store's latest change: a lag of at most vindex.delta_max chunk changes is
 * replayed from the change log into the index's delta, in memory; anything more, an index with
 * no generation or another dimension, or a store whose change counter went backwards (a restored
 * backup) builds a new generation from every stored vector, after which the store records the
 * generation and forgets the tombstones it folded in. Same threading as the store: the store
 * handle is used by the calling thread only.
 */
typedef struct {
    bool rebuilt;          /* a new generation was built and published */
    size_t added, removed; /* chunk changes replayed into the delta */
    uint64_t generation;   /* the generation served afterwards */
    char type[16];         /* its type ("flat", "ivf_sq8", ...) */
    size_t count;          /* vectors in its main index */
    bool gpu_trained;      /* index_build_open: the IVF centroids came from the GPU */
    char gpu_note[192];    /* index_build_open: what the GPU path did, or why it was not used */
} index_sync_report;

/* What a build does with the GPU path (the GPU section below says exactly). */
typedef enum { INDEX_GPU_OFF = 0, INDEX_GPU_AUTO, INDEX_GPU_ON } index_gpu_mode;

/* Brings v up to date with s as described above; force builds a new generation whatever the
 * lag. rep may be NULL. QR_EINVAL when the store holds no vectors yet; the errors of the
 * store's reads and of vindex_add/vindex_remove/vindex_build otherwise. A failed build leaves
 * the previous generation served. */
qr_status index_sync(store *s, vindex *v, const vindex_opts *o, bool force, index_sync_report *rep,
                     char *err);

/* Opens the vector index of the store under <data_dir>/vindex for the store's embedding
 * dimension and change counter (vindex_open), then index_sync. With force the index is rebuilt
 * even when vindex.rebuild_on_mismatch is off; without it, that setting decides whether a stale
 * or damaged index is rebuilt or refused (QR_EINVAL/QR_EIO). When the store holds no vectors
 * yet there is nothing to index: QR_OK with *out NULL. QR_EPERM when another process has the
 * index open (a running server). On error *out is NULL. */
qr_status index_sync_open(store *s, const char *data_dir, const vindex_opts *o, bool force, vindex **out,
                          index_sync_report *rep, char *err);
/* index_sync_open with force, building the new generation with IVF centroids trained on the GPU
 * as gpu says (`quarry index build --gpu`). QR_EUNAVAILABLE for INDEX_GPU_ON without a usable
 * GPU (nothing is built then); rep->gpu_note says what the GPU path did. */
qr_status index_build_open(store *s, const char *data_dir, const vindex_opts *o, index_gpu_mode gpu,
                           vindex **out, index_sync_report *rep, char *err);

/* ---- the maintainer (maintainer.c) --------------------------------------------------------- */

/*
 * One thread per process that keeps the pruned BM25 index and the vector index in step with the
 * store, so that no search and no write request ever does index upkeep. Writers (ingestion, PUT,
 * DELETE, ACL changes) move the store's change counter and call index_maintainer_signal; the
 * thread then catches both indexes up at once (a replay of the change log into their in-memory
 * deltas) or, past their delta limits, builds new generations on its own store handle and
 * publishes them atomically. It also looks every index.refresh_ms on its own, so that a `quarry
 * ingest` run beside the server shows up. Searches read whatever is published (bm25_search still
 * replays the few changes after its generation itself, which never waits for a build); deletes
 * and ACL changes do not wait for the maintainer: the store's permission checks see them at once.
 *
 * Cold start: index_maintainer_start returns at once; the first pass opens (and if needed builds)
 * both indexes in the background. Until an index is published its accessor returns NULL and
 * searches rank with FTS5 alone.
 *
 * Threads: every function may be called from any thread. Published indexes stay valid until
 * index_maintainer_stop.
 */
typedef struct index_maintainer index_maintainer;

typedef struct {
    const char *data_dir; /* data.dir (copied) */
    vindex_opts vopts;    /* the vector index's settings (type strings must outlive the maintainer) */
    bm25_opts bopts;      /* the pruned BM25 index's settings */
    bool bm25;            /* keep the pruned BM25 index (retrieval.bm25_path = pruned) */
    uint64_t refresh_ms;  /* index.refresh_ms: the longest an external change waits (>= 1) */
} index_maintainer_opts;

/* Called by the thread before each pass that may build, with the pass's number (from 1); for
 * tests that slow the maintainer down. Runs on the maintainer's thread. */
typedef void (*index_maintainer_hook)(void *ctx, uint64_t pass);

typedef struct {
    bool first_pass_done;        /* the cold start is over (whatever its outcome) */
    bool bm25_warm;              /* a pruned BM25 index is published */
    bool vector_warm;            /* a vector index is published */
    bool busy;                   /* a pass is running now */
    int64_t visible;             /* store change counter both indexes reflect (-1: none yet) */
    uint64_t passes;             /* passes run */
    uint64_t builds;             /* passes that built a new generation of either index */
    double last_pass_s;          /* duration of the last pass */
    char last_error[QR_ERR_LEN]; /* the last pass's error, "" when it succeeded */
} index_maintainer_status;

/* Opens a store handle on data_dir for the thread and starts it; the first pass begins at once.
 * QR_EINVAL for bad options, the store's errors, QR_ENOMEM. On error *out is NULL. */
qr_status index_maintainer_start(const index_maintainer_opts *o, index_maintainer **out, char *err);
/* Stops the thread (a build in progress finishes first), then closes the published indexes and
 * its store handle. NULL is a no-op. No other call may be in progress or follow. */
void index_maintainer_stop(index_maintainer *m);

/* A write happened: catch up now. Never waits. */
void index_maintainer_signal(index_maintainer *m);
/* Signals, then waits until both indexes reflect the store's change counter `counter` (e.g. the
 * one a write left: store_change_counter after it), or timeout_ms passes: QR_ETIMEOUT. A pass
 * that fails to catch up is reported with its error (QR_EIO, ...) rather than waited out. For
 * `?refresh=wait_for`; never call it from a thread a search needs. */
qr_status index_maintainer_wait(index_maintainer *m, int64_t counter, uint64_t timeout_ms, char *err);
/* Asks for a pass that builds new generations of both indexes whatever their lag, and waits for
 * it (rep may be NULL: the vector index's report). The pass's errors. */
qr_status index_maintainer_rebuild(index_maintainer *m, index_sync_report *rep, char *err);

/* The published indexes (NULL until the first is published, or with the option off). Never
 * waits. */
vindex *index_maintainer_vindex(index_maintainer *m);
bm25_index *index_maintainer_bm25(index_maintainer *m);
void index_maintainer_get_status(index_maintainer *m, index_maintainer_status *out);
/* For tests: called before each pass (NULL: none). Set it before the passes it should slow. */
void index_maintainer_set_hook(index_maintainer *m, index_maintainer_hook fn, void *ctx);

/* ---- GPU build path (gpu/) --------------------------------------------------------------- */

/*
 * IVF centroids trained on a GPU: FAISS's own k-means (spherical, as FAISS trains an IVF with
 * inner product) with distances, assignments and sums on the device, handed to vindex_build as
 * vindex_centroids, so the served index is the ordinary FAISS CPU index either way. What
 * `quarry index build --gpu` does with it:
 *   off   builds with centroids NULL: FAISS's CPU k-means on vindex's training sample.
 *   auto  when index_gpu_wants_centroids says the build is an IVF and index_gpu_check is QR_OK:
 *         index_gpu_train_centroids on the vectors to be built, then the build with those
 *         centroids; if training fails, a warning and the build with centroids NULL. Otherwise
 *         as off (no device, not compiled, a flat or HNSW build).
 *   on    index_gpu_check must be QR_OK, else exit 1 with its message; a training failure is
 *         an error, not a fallback. A build that trains no centroids (flat, HNSW) goes ahead.
 */
typedef struct {
    char device[64];   /* the device's name */
    size_t train_rows; /* rows clustered: all, or FAISS's subsample of 256 per list */
    int iterations;
    size_t splits;    /* empty clusters re-seeded, all iterations */
    double objective; /* sum of the rows' inner products with their centroid (last iteration) */
    bool resident;    /* rows uploaded once; false: streamed in batches every iteration */
    size_t batch_rows, batches;
    size_t peak_device_bytes; /* most device memory held at once */
    double seconds;           /* the whole call: sampling, normalising, copies, k-means */
} index_gpu_report;

/* QR_OK when the GPU path can run here: compiled in, a CUDA device visible and cuBLAS loadable.
 * Otherwise QR_EUNAVAILABLE, and err says which of the three is missing. */
qr_status index_gpu_check(char *err);
/* index_gpu_check(NULL) == QR_OK. */
bool index_gpu_available(void);

/* True when vindex_build of n vectors under options o builds an IVF index, whose coarse
 * centroids can then come from index_gpu_train_centroids; *nlist (may be NULL) is the number of
 * lists vindex would choose, to be passed as nlist. False for flat and HNSW builds. */
bool index_gpu_wants_centroids(const vindex_opts *o, size_t n, size_t *nlist);

/* Trains nlist centroids (nlist * dim floats into centroids_out) on n vectors of dim floats, as
 * FAISS trains an IVF quantizer: more than 256 * nlist vectors are subsampled the way FAISS does,
 * the rows are L2-normalised (as the index holds them), then `iterations` rounds of spherical
 * k-means (FAISS's IVF: 10) from seed (FAISS's default: 1234; its low 31 bits are used). report
 * may be NULL. QR_EINVAL for bad arguments, n < nlist, or a zero or non-finite vector;
 * QR_EUNAVAILABLE without a usable GPU (see index_gpu_check); QR_ENOMEM; QR_EINTERNAL with
 * CUDA's message. On error centroids_out is unchanged. */
qr_status index_gpu_train_centroids(const float *vecs, size_t n, int dim, size_t nlist, int iterations,
                                    uint64_t seed, float *centroids_out, index_gpu_report *report, char *err);

/* Exact top k (1..100, at most nb) by inner product of nq queries among nb base rows, all as
 * given (normalise first for cosines): ids[q * k + i] are base row numbers, best first, equal
 * scores by the smaller row. Identical to a double-precision scan on the CPU. For ground truth
 * and large exact subsets. Errors as index_gpu_train_centroids. */
qr_status index_gpu_knn(const float *base, size_t nb, const float *queries, size_t nq, int dim, size_t k,
                        int64_t *ids, float *scores, index_gpu_report *report, char *err);

#endif
