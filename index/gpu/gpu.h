/*
 * index/gpu: the CUDA build path of the vector index (private to index/). Compiled when CUDA and
 * cuBLAS are found (QUARRY_CUDA=AUTO|ON); otherwise gpu_none.c answers "not compiled". Every
 * function is callable on a machine without a device: they report 0 devices or QR_EUNAVAILABLE.
 *
 * The path trains the coarse quantizer of an IVF index the way FAISS 1.7.3's Clustering does
 * (FAISS's own random choices, replayed with the same Mersenne Twister: subsample, first
 * centroids, the donor of an empty cluster), assigns vectors to their nearest centroid and finds
 * the exact top k of queries by brute force. The device computes distances (cuBLAS GEMM), argmins,
 * top-k candidates and per-cluster sums; everything FAISS decides on the host (random choices,
 * dividing the sums, splitting empty clusters, renormalising) runs on the host here too, in
 * kmeans.c, shared with the CPU reference that tests and bench/gpu_check compare against.
 * Rows stream through the device in batches sized to a memory budget, so inputs larger than the
 * device's memory still work.
 */
#ifndef QUARRY_INDEX_GPU_H
#define QUARRY_INDEX_GPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

bool gpu_compiled(void);
/* Devices the CUDA driver reports; 0 when there is no driver, no device or no CUDA build. */
int gpu_device_count(void);
/* "13.0" or "". */
const char *gpu_cuda_version(void);
/* L2-normalises n rows of d floats in place on the device (the first step of every vector the
 * index holds). QR_EUNAVAILABLE without a device; the rows are unchanged on error. */
qr_status gpu_l2_normalize(float *rows, size_t n, size_t d, char *err);

/* ---- device work (gpu.cu; gpu_none.c answers QR_EUNAVAILABLE) ---------------------------- */

/* Inner product (vindex's metric: IVF over L2-normalised rows, spherical k-means) or squared L2
 * distance. */
typedef enum { GPU_METRIC_IP = 0, GPU_METRIC_L2 = 1 } gpu_metric;

/* Most results gpu_knn and gpu_knn_cpu return per query: the device keeps each query's
 * candidates in per-thread local memory, and larger lists would reserve gigabytes of it. */
#define GPU_KNN_K_MAX 100
/* Extra candidates the device keeps per query beyond k, so that float rounding at the k-th place
 * cannot drop a true neighbour before the exact rescoring on the host. */
#define GPU_KNN_MARGIN 16

typedef struct {
    char device[64];          /* device name ("" when no device ran) */
    bool resident;            /* the rows were uploaded once; false: streamed in batches each pass */
    size_t batch_rows;        /* rows per GEMM batch */
    size_t batches;           /* batches run, every pass counted */
    size_t peak_device_bytes; /* most device memory the call held at once: its buffers, cuBLAS's workspace */
    size_t train_rows;        /* k-means: rows clustered after FAISS's subsampling */
    int iterations;           /* k-means iterations run */
    size_t splits;            /* k-means: empty clusters split, all iterations */
    double objective;         /* k-means: FAISS's obj of the last iteration (sum of inner products or
                               * of squared distances of the rows to their centroid of that iteration) */
    double seconds;           /* wall time of the call, copies and host steps included */
} gpu_report;

typedef struct {
    gpu_metric metric;              /* GPU_METRIC_IP: spherical, as FAISS's IVF with inner product */
    int niter;                      /* iterations (FAISS's IVF: 10) */
    int seed;                       /* FAISS's ClusteringParameters::seed (1234) */
    size_t max_points_per_centroid; /* subsample to k * this many rows first (FAISS: 256); 0: never */
    size_t device_budget;           /* device bytes the call may hold; 0: 90% of the free memory */
} gpu_kmeans_opts;

/* IP, 10 iterations, seed 1234, 256 points per centroid, budget from the free memory. */
void gpu_kmeans_opts_default(gpu_kmeans_opts *o);

/* Loads cuBLAS (dlopen, once per process: linking it would cost every quarry process about 0.1 s
 * at start-up, GPU or not). The library is $QUARRY_CUBLAS when set, else libcublas.so.<major>.
 * QR_EUNAVAILABLE with the loader's message when it cannot be loaded; the result is remembered. */
qr_status gpu_blas_load(char *err);

/* k-means of n rows of dim floats into k centroids (k * dim floats), as FAISS's Clustering::train
 * with opts: rows beyond k * max_points_per_centroid are subsampled, the first centroids are
 * rows picked by FAISS's rand_perm(seed + 1), empty clusters are split off a large one exactly as
 * FAISS's split_clusters does, and with GPU_METRIC_IP the centroids are renormalised each
 * iteration. rep may be NULL. QR_EINVAL for n < k, k == 0, dim < 1, niter < 1 or non-finite
 * input; QR_ENOMEM when the budget cannot hold one batch; QR_EUNAVAILABLE without a device or
 * cuBLAS; QR_EINTERNAL with CUDA's message. On error centroids is unchanged. */
qr_status gpu_kmeans(const float *x, size_t n, int dim, size_t k, const gpu_kmeans_opts *opts,
                     float *centroids, gpu_report *rep, char *err);

/* Nearest centroid of each of n rows: labels[i] (ties: the smaller centroid number) and, when
 * dist is not NULL, the inner product (IP) or squared distance (L2) to it. budget as in
 * gpu_kmeans_opts. Errors as gpu_kmeans; on error labels and dist are unchanged. */
qr_status gpu_assign(const float *x, size_t n, int dim, const float *centroids, size_t k, gpu_metric metric,
                     size_t budget, int64_t *labels, float *dist, gpu_report *rep, char *err);

/* Exact top k of each of nq queries among nb base rows (ids are row numbers): ids[q * k + i] and
 * scores[q * k + i], best first (IP: largest inner product; L2: smallest squared distance; equal
 * scores by smaller id). The device ranks by float GEMM scores and keeps k + GPU_KNN_MARGIN
 * candidates; the host rescores them with gpu_exact_score, so the result equals gpu_knn_cpu's.
 * QR_EINVAL for k outside 1..min(nb, GPU_KNN_K_MAX); other errors as gpu_kmeans. */
qr_status gpu_knn(const float *base, size_t nb, const float *queries, size_t nq, int dim, size_t k,
                  gpu_metric metric, size_t budget, int64_t *ids, float *scores, gpu_report *rep, char *err);

/* ---- host side, with or without CUDA (kmeans.c) ------------------------------------------ */

/* MT19937, the generator behind FAISS's RandomGenerator (std::mt19937 seeded with a 32-bit
 * value), so that its draws can be replayed exactly. */
typedef struct {
    uint32_t state[624];
    int next;
} gpu_rng;
void gpu_rng_seed(gpu_rng *r, uint32_t seed);
uint32_t gpu_rng_next(gpu_rng *r);

/* Fills perm (n entries) so that its first `prefix` entries are those of FAISS's
 * rand_perm(perm, n, seed), a Fisher-Yates shuffle drawing mt() % (n - i): the shuffle's later
 * steps never touch them, so only `prefix` steps are taken. prefix <= n. */
void gpu_rand_perm_prefix(size_t *perm, size_t n, size_t prefix, int64_t seed);

/* The rows FAISS's Clustering trains on: when n > k * max_points, *rows is set to the k *
 * max_points row numbers FAISS's subsample picks (free() them) and *nx to their count; otherwise
 * *rows is NULL and *nx is n. QR_ENOMEM. */
qr_status gpu_kmeans_sample(size_t n, size_t k, size_t max_points, int seed, size_t **rows, size_t *nx,
                            char *err);

/* One k-means in progress on the host: the centroids, the sums and counts of the iteration being
 * accumulated (FAISS's centroids and hassign arrays), and what the assignment step needs. */
typedef struct {
    size_t n, k;
    int dim;
    gpu_metric metric;
    float *centroids; /* k * dim; during an iteration: the per-cluster sums */
    float *hassign;   /* k: rows assigned in this iteration (FAISS counts in float) */
    float *half_norm; /* k: 0.5 * |c|^2 of the current centroids (GPU_METRIC_L2), else zeros */
    size_t splits;    /* empty clusters split so far */
    double objective; /* of the iteration accumulated last */
} gpu_kmeans_state;

/* Starts a k-means of n rows (already subsampled): checks the input (QR_EINVAL as gpu_kmeans),
 * picks the first centroids as FAISS does (rand_perm(seed + 1), then renormalised for IP).
 * *done is true when n == k: FAISS then takes the rows as centroids and runs no iteration. */
qr_status gpu_kmeans_begin(gpu_kmeans_state *s, const float *x, size_t n, int dim, size_t k,
                           gpu_metric metric, int seed, bool *done, char *err);
/* Zeroes the sums and counts before an iteration's assignment. */
void gpu_kmeans_iteration_reset(gpu_kmeans_state *s);
/* Adds n rows with their labels (and their distances to the objective) to the iteration's sums,
 * in row order within each cluster, as FAISS's compute_centroids does. */
void gpu_kmeans_accumulate(gpu_kmeans_state *s, const float *x, size_t n, const int32_t *labels,
                           const float *dist);
/* Ends an iteration: divides the sums by the counts, splits empty clusters (FAISS's
 * split_clusters, its RandomGenerator(1234) included), renormalises for IP and recomputes the
 * half norms. Returns the number of clusters split. */
size_t gpu_kmeans_iteration_end(gpu_kmeans_state *s);
/* Frees the state's arrays; safe on a zeroed or released state. */
void gpu_kmeans_release(gpu_kmeans_state *s);

/* 0.5 * |c|^2 of k rows into half (float), for the L2 argmin as an argmax of x.c - 0.5|c|^2. */
void gpu_half_norms(const float *c, size_t k, int dim, float *half);

/* The CPU reference of gpu_kmeans: the same steps with the assignment on the CPU (OpenMP when
 * built with it). Same contract; rep's device fields stay zero. */
qr_status gpu_kmeans_cpu(const float *x, size_t n, int dim, size_t k, const gpu_kmeans_opts *opts,
                         float *centroids, gpu_report *rep, char *err);

/* The CPU reference of gpu_assign (float dot products, ties to the smaller centroid). half_norm
 * is gpu_half_norms of the centroids for L2, ignored for IP (may be NULL then). labels32 may be
 * NULL; labels64 may be NULL; dist may be NULL. Cannot fail. */
void gpu_assign_cpu(const float *x, size_t n, int dim, const float *centroids, size_t k, gpu_metric metric,
                    const float *half_norm, int32_t *labels32, int64_t *labels64, float *dist);

/* Sum over n rows of the inner product with (IP) or squared distance to (L2) their nearest
 * centroid, in double: the k-means objective of a set of centroids. QR_ENOMEM. */
qr_status gpu_objective_cpu(const float *x, size_t n, int dim, const float *centroids, size_t k,
                            gpu_metric metric, double *out, char *err);

/* The exact score both top-k paths rank by: the inner product or squared distance of two rows,
 * summed in double in one fixed order. */
double gpu_exact_score(const float *a, const float *b, int dim, gpu_metric metric);

/* The CPU reference of gpu_knn: gpu_exact_score against every base row. Same contract. */
qr_status gpu_knn_cpu(const float *base, size_t nb, const float *queries, size_t nq, int dim, size_t k,
                      gpu_metric metric, int64_t *ids, float *scores, char *err);

/* Rescores ncand candidate row numbers per query (cand[q * ncand + j]; -1 and repeats are
 * skipped) with gpu_exact_score and writes the best k, ordered as gpu_knn_cpu orders them.
 * Fewer than k valid candidates leave ids -1 and scores NaN in the tail. QR_ENOMEM. */
qr_status gpu_knn_rescore(const float *base, size_t nb, const float *queries, size_t nq, int dim, size_t k,
                          gpu_metric metric, const int64_t *cand, size_t ncand, int64_t *ids, float *scores,
                          char *err);

/* FAISS's own CPU k-means (Clustering with opts: spherical for IP, the same seed, iterations and
 * subsampling) on an IndexFlatIP or IndexFlatL2, for the tests and benchmarks that compare
 * against it; seconds (may be NULL) gets its wall time. Part of quarry_index (faiss_kmeans.c),
 * since it needs FAISS. QR_EINVAL; QR_EINTERNAL with FAISS's message. */
qr_status gpu_kmeans_faiss(const float *x, size_t n, int dim, size_t k, const gpu_kmeans_opts *opts,
                           float *centroids, double *seconds, char *err);

/* ---- device memory plans (kmeans.c, host only) ------------------------------------------- */

/* How a pass over n rows uses the device: the rows resident (uploaded once) or streamed through
 * two batch buffers, and the rows per GEMM batch. */
typedef struct {
    bool resident;
    size_t batch_rows;
    size_t bytes; /* device bytes the plan holds at most */
} gpu_plan;

/* Plans a pass over n rows of row_bytes each, when the call holds fixed_bytes whatever the batch
 * and per_row_bytes per row of a batch (scores, labels), within budget bytes and at most
 * max_batch rows per batch. Resident when the rows fit with a batch of min(n, 4096) rows or more;
 * otherwise streamed. QR_ENOMEM with the bytes needed when not even one row fits. */
qr_status gpu_plan_pass(size_t n, size_t row_bytes, size_t fixed_bytes, size_t per_row_bytes, size_t budget,
                        size_t max_batch, gpu_plan *out, char *err);

#ifdef __cplusplus
}
#endif

#endif
