/*
 * index/vector.h: the vector index (vindex*.c), keeping it in step with the store (sync.c) and
 * the GPU build path (gpu/, library quarry_gpu).
 */
#ifndef QUARRY_INDEX_VECTOR_H
#define QUARRY_INDEX_VECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "index/store.h"

/* ---- vector index (vindex*.c) ------------------------------------------------------------ */

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
 * ascending order and their normalised float32 rows, mapped into memory for exact search; in
 * rows mode the ids only, the rows being the store's, see below), and MANIFEST names the served
 * generation with its type, dimension, count, the store change counter it was built from and a
 * checksum of every file. A build writes its files under temporary names, syncs and renames
 * them, and commits by renaming MANIFEST last: a crash at any moment leaves the previous
 * generation served, and leftovers are removed at the next open or build. One process at a time
 * may open a directory (a lock file; the second open is QR_EPERM).
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
 * Costs: vindex_search is milliseconds (the ANN index, the exact delta, and the exact re-scoring
 * of its candidates; an exact scan of every vector when the predicate passes few, see below);
 * vindex_search_subset costs one dot product per permitted id; vindex_add and vindex_remove cost
 * what they hold (a copy of the rows, a tombstone each) under the write lock, never waiting for
 * a build; a build (vindex_build, vindex_build_commit) trains and fills FAISS over every vector
 * (seconds to minutes per million, bench/README.md), writes and syncs its files, and holds the
 * write lock only for the short commit; vindex_open maps the generation and, with a checksum,
 * reads it whole; vindex_get_info and vindex_needs_rebuild take a snapshot reference briefly.
 * In the server only the maintainer (index/maintainer.h) opens, changes and builds; request
 * threads only search.
 *
 * Chunks without a usable vector (zero, NaN or infinite values, or another dimension: a text with
 * no words the embedder knows embeds to zero) cannot be normalised or searched. They are never
 * fatal: whoever feeds the index from the store (sync.c, vindex_build) tells the index about them
 * with vindex_skip or vindex_build_skip instead of adding them, so they are left out of every
 * vector search, counted (vindex_info.skipped, persisted with the generation as gen-N.skip) and
 * found by BM25 only; the store's change log moves past them like any other change.
 *
 * Errors: QR_EINVAL for bad arguments (wrong dimension, NaN/Inf or zero vectors given to
 * vindex_add or vindex_build_add, k outside 1..VINDEX_K_MAX, negative or duplicate ids); QR_EIO
 * and QR_ENOMEM from the system, QR_EINTERNAL with FAISS's message. Unless a function says
 * otherwise, a call that fails changes nothing.
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
    const char *scan;         /* ivf_flat/ivf_sq8 scan: "int8" (quarry's, of int8 codes) or "faiss" */
    size_t rerank;            /* int8 scan: candidates re-scored exactly per query (at least 2k) */
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

/*
 * Rows mode: the normalised float32 rows of a generation's chunks are read from their owner (the
 * store's vector file) instead of from a copy in gen-N.vec, which then holds the chunk ids only,
 * so the data directory keeps one float copy fewer. Every exact score of a main row (re-scoring
 * of ANN and int8 candidates, exact and subset scans) reads it there; the FAISS index, its
 * centroids and the int8 codes are computed as before (from the vectors given to
 * vindex_build_add, the same rows; and the int8 codes from the provider's rows when a generation
 * is loaded or published). The delta keeps its own copy, in memory, as before.
 *
 * map: sets *base so that the row of chunk id i (dim floats, exactly vindex_normalize_row of
 * the chunk's vector) is at base + i * dim for every id the index was given, up to max_id. The
 * whole range base[0 .. (max_id + 1) * dim) must be readable memory: exact scans read runs of
 * rows across the ids between a generation's (the scores of ids the index does not hold are
 * discarded). The row of a chunk the index has removed (vindex_remove) may read as anything
 * finite, all zeros where the owner freed it: it is never returned. The memory stays valid until
 * vindex_close (a later map may return another base; earlier ones stay valid too). Called on
 * the thread that opens the index (when it loads a generation) or commits a build (before the
 * commit takes any lock), never during a search, and not for a generation with no rows. A
 * non-zero status fails the open (or leaves it stale, with rebuild_on_mismatch) or the commit,
 * with the provider's status and err.
 * uid: the identity of the rows' owner (the store's uid), recorded in MANIFEST with the mode.
 * release (may be NULL): called once by vindex_close, after the last read of the provider's
 * memory, so that the index can own the provider; a failed open does not call it (the caller
 * still owns ctx then).
 */
typedef struct {
    qr_status (*map)(void *ctx, int64_t max_id, const float **base, char *err);
    void (*release)(void *ctx);
    void *ctx;
    int64_t uid;
} vindex_rows;

/* vindex_open in rows mode (rows NULL: vindex_open itself, a copy of the rows in gen-N.vec).
 * *rows is copied. A generation of the other mode, or in rows mode of another uid, is stale like
 * one of another dimension: with o->rebuild_on_mismatch the open succeeds with *stale true and
 * serves nothing until a build; without it QR_EINVAL. A failed map is reported as above. */
qr_status vindex_open_rows(const char *dir, int dim, const vindex_opts *o, const vindex_rows *rows,
                           int64_t store_counter, vindex **out, bool *stale, char *err);

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
/* Records n chunks of the snapshot being built that have no usable vector (vindex_vector_usable
 * false): the generation leaves them out of searches and counts them (vindex_info.skipped). An id
 * both added and skipped is a duplicate (QR_EINVAL at the commit). On error nothing of this call
 * is recorded. */
qr_status vindex_build_skip(vindex_builder *b, const int64_t *ids, size_t n, char *err);
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
 * sets *n; *n = 0 means the end. A non-zero status stops the build (the source fills err). Rows
 * with no usable vector are skipped (vindex_build_skip), never an error. */
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
/* True when vec (dim floats) can go into the index: every value finite and not all zero. The one
 * test of vindex_add, vindex_build_add and the GPU path, for callers that sort rows out first. */
bool vindex_vector_usable(const float *vec, int dim);
/* Records n chunks that the store holds but that have no usable vector (zero, NaN or infinite,
 * another dimension): searches never see them and vindex_info.skipped counts them until they are
 * removed (vindex_remove) or a build from a store without them. Same counter and QR_EEXIST rules
 * as vindex_add. */
qr_status vindex_skip(vindex *v, const int64_t *ids, size_t n, int64_t store_counter, char *err);
/* Tombstones n chunk ids (from the main index, the delta or the skipped ones) so that searches
 * skip them. Ids the index does not hold, and ids already removed, are accepted: the store's
 * change log reports chunks added and deleted since a counter as deleted only. Same counter rule
 * as vindex_add. n may be 0 (ids NULL): the call then only records store_counter, for store
 * changes that touched no chunk (ACL or title edits), so that the index counts as up to date. */
qr_status vindex_remove(vindex *v, const int64_t *ids, size_t n, int64_t store_counter, char *err);
/* True when the delta rows plus tombstones exceed vindex_delta_limit: time to build a new
 * generation. */
bool vindex_needs_rebuild(vindex *v);
/* The delta rows plus tombstones a generation of count rows carries before a rebuild: delta_max,
 * or a quarter of the generation when that is less, but at least 1,000. */
size_t vindex_delta_limit(size_t count, size_t delta_max);

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
 * An ivf_flat or ivf_sq8 index under vindex.scan=int8 (the default) with permit NULL is searched by quarry's
 * own scanner instead: the vindex.nprobe nearest lists (centroids ranked by int8 codes, the best ranked again
 * exactly), every live member ranked by its int8 codes, the best max(vindex.rerank, 2k) scored
 * exactly. vindex_open and the publication of a build read the generation's inverted lists and
 * quantize its rows first (about 2 s at 1M vectors on a 2-core VM; 385 MB at 1M x 384), so no
 * search pays for it. When those lists hold fewer than k live chunks the path above answers.
 * With IVF or HNSW, a predicate that passes few chunks costs recall (the permitted neighbours lie
 * outside the lists visited) and, below about 0.1%, an exact scan of every vector: when the
 * caller knows the permitted ids and they are few (up to some 10% of the index, see
 * bench/README.md), vindex_search_subset is exact and faster.
 * cancel (NULL: none) is checked before anything, before each round of the main index and every
 * few BLAS blocks of an exact scan: a failed check ends the search with its status (QR_ETIMEOUT,
 * QR_ECANCELED) and nothing in ids. */
qr_status vindex_search(vindex *v, const float *query, int dim, size_t k, vindex_permit_fn permit, void *ctx,
                        int64_t *ids, float *scores, size_t *found, qr_cancel *cancel, char *err);

/* Exact top-k over an explicit set of permitted chunk ids (any order, duplicates allowed; ids
 * the index does not hold and removed ids are skipped): the rows are gathered by id and scored
 * with BLAS, or on an IVF index under vindex.scan=int8 ranked by their int8 codes with a bound
 * on the codes' error, and every row whose bound reaches the k-th scored exactly (a quarter of
 * the bytes per row). The result is the true top-k of the set, equal scores by smaller id, either
 * way. cancel as for vindex_search. */
qr_status vindex_search_subset(vindex *v, const float *query, int dim, size_t k, const int64_t *permitted,
                               size_t n, int64_t *ids, float *scores, size_t *found, qr_cancel *cancel,
                               char *err);

/* What one vindex_search_permitted did (for benchmarks and tests). */
typedef struct {
    bool subset;      /* answered by vindex_search_subset (see below) */
    size_t probes;    /* IVF lists walked */
    size_t walked;    /* their members, each tested against the permitted set */
    size_t scored;    /* permitted, not removed: scored, with the delta's permitted rows */
    double layout_ms; /* this call read the generation's IVF layout first, taking this long */
} vindex_scan_report;

/* The k best chunks among permitted (ascending, distinct chunk ids: QR_EINVAL otherwise; ids the
 * index does not hold and removed ids are skipped), best first, with exact scores, as
 * vindex_search_subset returns them but with the permission test inside the IVF scan: the coarse
 * quantizer names the query's nearest lists, their members are tested against the permitted set
 * (a bitmap over the ids) and the tombstones, and the permitted ones are scored exactly from the
 * generation's rows (under vindex.scan=int8: ranked by their int8 codes, the best
 * max(vindex.rerank, 2k) scored exactly); the delta's permitted rows are scored too. The lists
 * probed are vindex.nprobe times 1/sqrt(permitted share) (1/share^0.25 under vindex.scan=int8),
 * and enough to hold 8k permitted chunks on average, at most 16 times nprobe (the share is n over
 * the index's rows): so the work depends on
 * the query, the index and the permitted set, never on where chunks outside the set rank; the
 * smaller the share, the more lists (bench/README.md has recall by share).
 * Answered by vindex_search_subset instead (exact, rep->subset) when the generation is flat or
 * HNSW, when walking the lists would cost more than scoring every permitted chunk (the set is
 * smaller than 1/16 of the members the lists hold, 1/64 under vindex.scan=int8), and when the probed lists
 * hold fewer than k permitted chunks and the set has more. The first call on an IVF generation reads its
 * inverted lists (12 bytes per vector; at 1M vectors, rep->layout_ms in bench/README.md), later ones reuse
 * them. rep may be NULL. cancel as for vindex_search. */
qr_status vindex_search_permitted(vindex *v, const float *query, int dim, size_t k, const int64_t *permitted,
                                  size_t n, int64_t *ids, float *scores, size_t *found, qr_cancel *cancel,
                                  vindex_scan_report *rep, char *err);

/* Up to n chunk ids spread evenly over the served index (main rows in id order, then the delta),
 * into ids; returns how many (fewer only when the index holds fewer). The same ids for the same
 * snapshot, whoever asks: callers estimate the share of the index a caller may read from them
 * without looking at any query. Removed ids may be among them. */
size_t vindex_sample_ids(vindex *v, size_t n, int64_t *ids);

typedef struct {
    uint64_t generation; /* 0: nothing built yet */
    char type[16];       /* "flat", "ivf_flat", "ivf_sq8", "ivf_pq", "hnsw", "none" */
    int dim;
    size_t count;         /* vectors in the main index */
    size_t nlist, nprobe; /* IVF only */
    size_t ef_search;     /* HNSW only */
    size_t delta;         /* rows in the delta */
    size_t tombstones;
    size_t skipped;        /* chunks left out: no usable vector (vindex_skip, vindex_build_skip) */
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
 * handle is used by the calling thread only. Cost: one indexed read when nothing changed, a read
 * of the changed chunks' vectors for a replay, and for a build a read of every stored vector
 * plus the build (see above). Searches on v go on meanwhile.
 */
typedef struct {
    bool rebuilt;          /* a new generation was built and published */
    size_t added, removed; /* chunk changes replayed into the delta */
    size_t skipped;        /* chunks this sync left out of vector search: no usable vector */
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
/* Opens the vector index for serving at once, without building: the generation on disk however
 * far behind (index_sync then replays or rebuilds while it serves), or, when there is none
 * usable (a fresh or damaged index), a vindex holding every stored vector in its exact delta:
 * searches over it are exact, and cost a scan of every vector until index_sync builds a
 * generation (at 1M vectors, 1.8 to 2.8 s per search on the shared 2-core machine while the
 * build ran beside it: slow, but right). Costs one read of every stored vector in the
 * second case, the open alone in the first. The same settings and errors as index_sync_open
 * (no force); rep->added counts the vectors put in the delta. The maintainer's first pass. */
qr_status index_open_serving(store *s, const char *data_dir, const vindex_opts *o, vindex **out,
                             index_sync_report *rep, char *err);
/* index_sync_open with force, building the new generation with IVF centroids trained on the GPU
 * as gpu says (`quarry index build --gpu`). QR_EUNAVAILABLE for INDEX_GPU_ON without a usable
 * GPU (nothing is built then); rep->gpu_note says what the GPU path did. */
qr_status index_build_open(store *s, const char *data_dir, const vindex_opts *o, index_gpu_mode gpu,
                           vindex **out, index_sync_report *rep, char *err);

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

/* Threads and costs of the GPU calls: any thread; index_gpu_check loads cuBLAS on first use
 * (about 0.1 s), later calls are cheap; training and top k run on the device for as long as the
 * work takes (bench/README.md) and serialise on it. */

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
