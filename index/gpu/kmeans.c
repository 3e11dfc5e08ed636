/*
 * The host side of the GPU build path, compiled with or without CUDA: FAISS 1.7.3's k-means as
 * its Clustering::train runs it for an IVF quantizer, split into the steps the host owns (the
 * random choices, dividing the sums, splitting empty clusters, renormalising) and the steps the
 * device takes over (assignment, per-cluster sums). The CPU reference runs the device's steps
 * here too, so gpu_kmeans and gpu_kmeans_cpu differ only where the GEMM rounds differently.
 *
 * FAISS's choices are replayed, not imitated: its RandomGenerator is std::mt19937, rand_perm a
 * Fisher-Yates shuffle drawing mt() % (n - i), split_clusters walks the clusters with a
 * RandomGenerator(1234) whatever the seed, and sums and counts are floats accumulated in row
 * order. With the same input the CPU reference gives FAISS's centroids (tests/test_gpu.c checks).
 *
 * Also here: the exact top-k reference and the rescoring that makes the device's top-k exact, and
 * the device memory planner (pure arithmetic, so the CPU tests cover it).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "index/gpu/gpu.h"

#define EMPTY_SPLIT_EPS (1 / 1024.) /* FAISS's symmetric perturbation of a split centroid */
#define SPLIT_SEED      1234        /* FAISS's split_clusters seeds its own generator */
#define ROW_TILE        128         /* CPU assignment: rows and centroids per cache tile */
#define CENT_TILE       64
#define PLAN_MIN_BATCH  4096 /* resident only if a batch this large still fits */

/* ---- MT19937 --------------------------------------------------------------------------------- */

void gpu_rng_seed(gpu_rng *r, uint32_t seed)
{
    r->state[0] = seed;
    for (int i = 1; i < 624; i++)
        r->state[i] = 1812433253u * (r->state[i - 1] ^ (r->state[i - 1] >> 30)) + (uint32_t)i;
    r->next = 624;
}

uint32_t gpu_rng_next(gpu_rng *r)
{
    if (r->next >= 624) {
        for (int i = 0; i < 624; i++) {
            uint32_t y = (r->state[i] & 0x80000000u) | (r->state[(i + 1) % 624] & 0x7fffffffu);
            r->state[i] = r->state[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        r->next = 0;
    }
    uint32_t y = r->state[r->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

void gpu_rand_perm_prefix(size_t *perm, size_t n, size_t prefix, int64_t seed)
{
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    gpu_rng r;
    /* FAISS's RandomGenerator(int64_t seed) seeds mt19937 with (unsigned int)seed */
    gpu_rng_seed(&r, (uint32_t)seed);
    for (size_t i = 0; i < prefix && i + 1 < n; i++) {
        size_t j = i + gpu_rng_next(&r) % (n - i);
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* ---- FAISS's host steps ------------------------------------------------------------------ */

/* fvec_norm_L2sqr as FAISS's SSE build computes it: four lanes of products added in order, then
 * (l0 + l1) + (l2 + l3). The product goes through memory so that no compiler fuses it into an
 * FMA, which FAISS's separate _mm_mul_ps and _mm_add_ps never do. */
static float norm_sq_faiss(const float *x, int d)
{
    float lane[4] = {0, 0, 0, 0};
    for (int i = 0; i < d; i++) {
        volatile float p = x[i] * x[i];
        lane[i % 4] += p;
    }
    return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

/* fvec_renorm_L2: rows scaled by a float 1 / sqrtf(|x|^2) computed in double. */
static void renorm_rows(float *x, size_t n, int d)
{
    for (size_t i = 0; i < n; i++) {
        float *row = x + i * (size_t)d;
        float nr = norm_sq_faiss(row, d);
        if (nr > 0) {
            const float inv = (float)(1.0 / sqrtf(nr));
            for (int j = 0; j < d; j++)
                row[j] *= inv;
        }
    }
}

void gpu_half_norms(const float *c, size_t k, int dim, float *half)
{
    for (size_t j = 0; j < k; j++) {
        const float *row = c + j * (size_t)dim;
        float s = 0;
        for (int t = 0; t < dim; t++)
            s += row[t] * row[t];
        half[j] = 0.5f * s;
    }
}

void gpu_kmeans_opts_default(gpu_kmeans_opts *o)
{
    o->metric = GPU_METRIC_IP;
    o->niter = 10;
    o->seed = 1234;
    o->max_points_per_centroid = 256;
    o->device_budget = 0;
}

qr_status gpu_kmeans_sample(size_t n, size_t k, size_t max_points, int seed, size_t **rows, size_t *nx,
                            char *err)
{
    *rows = NULL;
    *nx = n;
    if (max_points == 0 || k > n / max_points || n <= k * max_points)
        return QR_OK;
    size_t *perm = malloc(n * sizeof(size_t));
    if (!perm)
        return qr_fail(err, QR_ENOMEM, "out of memory subsampling %zu rows", n);
    gpu_rand_perm_prefix(perm, n, k * max_points, seed);
    *rows = perm; /* the first k * max_points entries are the sample */
    *nx = k * max_points;
    return QR_OK;
}

void gpu_kmeans_release(gpu_kmeans_state *s)
{
    free(s->centroids);
    free(s->hassign);
    free(s->half_norm);
    s->centroids = s->hassign = s->half_norm = NULL;
}

qr_status gpu_kmeans_begin(gpu_kmeans_state *s, const float *x, size_t n, int dim, size_t k,
                           gpu_metric metric, int seed, bool *done, char *err)
{
    memset(s, 0, sizeof(*s));
    *done = false;
    if (!x || dim < 1 || k == 0)
        return qr_fail(err, QR_EINVAL, "k-means needs rows, a dimension >= 1 and k >= 1");
    if (n < k)
        return qr_fail(err, QR_EINVAL,
                       "k-means of %zu rows into %zu clusters: need at least as many rows as clusters", n, k);
    if (metric != GPU_METRIC_IP && metric != GPU_METRIC_L2)
        return qr_fail(err, QR_EINVAL, "unknown k-means metric %d", (int)metric);
    size_t d = (size_t)dim;
    for (size_t i = 0; i < n * d; i++)
        if (!isfinite(x[i]))
            return qr_fail(err, QR_EINVAL, "k-means input row %zu is not finite", i / d);
    s->n = n;
    s->k = k;
    s->dim = dim;
    s->metric = metric;
    s->centroids = malloc(k * d * sizeof(float));
    s->hassign = calloc(k, sizeof(float));
    s->half_norm = calloc(k, sizeof(float));
    size_t *perm = malloc(n * sizeof(size_t));
    if (!s->centroids || !s->hassign || !s->half_norm || !perm) {
        free(perm);
        gpu_kmeans_release(s);
        return qr_fail(err, QR_ENOMEM, "out of memory for k-means of %zu rows into %zu clusters", n, k);
    }
    if (n == k) {
        /* FAISS's corner case: the rows are the centroids, no iteration, no renormalisation */
        memcpy(s->centroids, x, k * d * sizeof(float));
        *done = true;
    } else {
        gpu_rand_perm_prefix(perm, n, k, (int64_t)seed + 1);
        for (size_t i = 0; i < k; i++)
            memcpy(s->centroids + i * d, x + perm[i] * d, d * sizeof(float));
        if (metric == GPU_METRIC_IP)
            renorm_rows(s->centroids, k, dim);
    }
    if (metric == GPU_METRIC_L2)
        gpu_half_norms(s->centroids, k, dim, s->half_norm);
    free(perm);
    return QR_OK;
}

void gpu_kmeans_iteration_reset(gpu_kmeans_state *s)
{
    memset(s->centroids, 0, s->k * (size_t)s->dim * sizeof(float));
    memset(s->hassign, 0, s->k * sizeof(float));
    s->objective = 0;
}

void gpu_kmeans_accumulate(gpu_kmeans_state *s, const float *x, size_t n, const int32_t *labels,
                           const float *dist)
{
    size_t d = (size_t)s->dim, k = s->k;
    /* as FAISS: each thread owns a range of clusters and walks every row, so each cluster's sum
     * is added in row order whatever the thread count */
#ifdef _OPENMP
#pragma omp parallel
#endif
    {
        size_t c0 = 0, c1 = k;
#ifdef _OPENMP
        int nt = omp_get_num_threads(), rank = omp_get_thread_num();
        c0 = k * (size_t)rank / (size_t)nt;
        c1 = k * (size_t)(rank + 1) / (size_t)nt;
#endif
        for (size_t i = 0; i < n; i++) {
            size_t c = (size_t)labels[i];
            if (c < c0 || c >= c1)
                continue;
            float *sum = s->centroids + c * d;
            const float *row = x + i * d;
            s->hassign[c] += 1.0f;
            for (size_t j = 0; j < d; j++)
                sum[j] += row[j];
        }
    }
    if (dist)
        for (size_t i = 0; i < n; i++)
            s->objective += dist[i];
}

/* FAISS's split_clusters: each empty cluster copies a donor drawn with probability
 * (count - 1) / (n - k), walking the clusters in a circle, and the two move apart by a
 * symmetric 1/1024 perturbation; the donor's count is shared between them. */
static size_t split_clusters(gpu_kmeans_state *s)
{
    size_t d = (size_t)s->dim, k = s->k, n = s->n, nsplit = 0;
    float *c = s->centroids, *h = s->hassign;
    gpu_rng r;
    gpu_rng_seed(&r, SPLIT_SEED);
    for (size_t ci = 0; ci < k; ci++) {
        if (h[ci] != 0)
            continue;
        size_t cj;
        for (cj = 0;; cj = (cj + 1) % k) {
            float p = (float)(((double)h[cj] - 1.0) / (double)(float)(n - k));
            float u = (float)gpu_rng_next(&r) / (float)UINT32_MAX;
            if (u < p)
                break;
        }
        memcpy(c + ci * d, c + cj * d, d * sizeof(float));
        for (size_t j = 0; j < d; j++) {
            double up = 1 + EMPTY_SPLIT_EPS, down = 1 - EMPTY_SPLIT_EPS;
            c[ci * d + j] = (float)(c[ci * d + j] * (j % 2 == 0 ? up : down));
            c[cj * d + j] = (float)(c[cj * d + j] * (j % 2 == 0 ? down : up));
        }
        h[ci] = h[cj] / 2;
        h[cj] -= h[ci];
        nsplit++;
    }
    return nsplit;
}

size_t gpu_kmeans_iteration_end(gpu_kmeans_state *s)
{
    size_t d = (size_t)s->dim;
    for (size_t c = 0; c < s->k; c++) {
        if (s->hassign[c] == 0)
            continue;
        float norm = 1 / s->hassign[c];
        for (size_t j = 0; j < d; j++)
            s->centroids[c * d + j] *= norm;
    }
    size_t nsplit = split_clusters(s);
    s->splits += nsplit;
    if (s->metric == GPU_METRIC_IP)
        renorm_rows(s->centroids, s->k, s->dim);
    else
        gpu_half_norms(s->centroids, s->k, s->dim, s->half_norm);
    return nsplit;
}

/* ---- CPU assignment ---------------------------------------------------------------------- */

/* 8-float vectors (GCC vector extensions: AVX where the target has it, else two SSE halves).
 * They are passed by pointer: by value their ABI depends on the target's vector width. */
typedef float v8f __attribute__((vector_size(32)));

#define LOAD8(dst, p) memcpy(&(dst), (p), sizeof(v8f))

static float hsum8(const v8f *v)
{
    return (((*v)[0] + (*v)[1]) + ((*v)[2] + (*v)[3])) + (((*v)[4] + (*v)[5]) + ((*v)[6] + (*v)[7]));
}

/* Dot products of 4 rows with 2 centroids: each load is used 2 or 4 times. */
static void dot_4x2(const float *const *x, const float *c0, const float *c1, int d, float out[4][2])
{
    v8f a[4][2] = {{{0}}};
    int i = 0;
    for (; i + 8 <= d; i += 8) {
        v8f y0, y1;
        LOAD8(y0, c0 + i);
        LOAD8(y1, c1 + i);
        for (int r = 0; r < 4; r++) {
            v8f xr;
            LOAD8(xr, x[r] + i);
            a[r][0] += xr * y0;
            a[r][1] += xr * y1;
        }
    }
    for (int r = 0; r < 4; r++) {
        float s0 = hsum8(&a[r][0]), s1 = hsum8(&a[r][1]);
        for (int t = i; t < d; t++) {
            s0 += x[r][t] * c0[t];
            s1 += x[r][t] * c1[t];
        }
        out[r][0] = s0;
        out[r][1] = s1;
    }
}

static float dot_1x1(const float *x, const float *c, int d)
{
    v8f a = {0};
    int i = 0;
    for (; i + 8 <= d; i += 8) {
        v8f u, v;
        LOAD8(u, x + i);
        LOAD8(v, c + i);
        a += u * v;
    }
    float s = hsum8(&a);
    for (; i < d; i++)
        s += x[i] * c[i];
    return s;
}

/* Best centroid of rows [r0, r1): score x.c (IP) or x.c - 0.5|c|^2 (L2), centroids in
 * increasing order with a strict comparison so that ties go to the smaller number. */
static void assign_tile(const float *x, size_t r0, size_t r1, int d, const float *c, size_t k,
                        const float *half, float *best, int32_t *label)
{
    size_t nr = r1 - r0;
    for (size_t r = 0; r < nr; r++) {
        best[r] = -INFINITY;
        label[r] = 0;
    }
    for (size_t c0 = 0; c0 < k; c0 += CENT_TILE) {
        size_t c1 = c0 + CENT_TILE < k ? c0 + CENT_TILE : k;
        size_t r = 0;
        for (; r + 4 <= nr; r += 4) {
            const float *rows[4];
            for (int t = 0; t < 4; t++)
                rows[t] = x + (r0 + r + (size_t)t) * (size_t)d;
            size_t j = c0;
            for (; j + 2 <= c1; j += 2) {
                float out[4][2];
                dot_4x2(rows, c + j * (size_t)d, c + (j + 1) * (size_t)d, d, out);
                for (int t = 0; t < 4; t++)
                    for (int u = 0; u < 2; u++) {
                        float sc = half ? out[t][u] - half[j + (size_t)u] : out[t][u];
                        if (sc > best[r + (size_t)t]) {
                            best[r + (size_t)t] = sc;
                            label[r + (size_t)t] = (int32_t)(j + (size_t)u);
                        }
                    }
            }
            for (; j < c1; j++)
                for (int t = 0; t < 4; t++) {
                    float dot = dot_1x1(rows[t], c + j * (size_t)d, d);
                    float sc = half ? dot - half[j] : dot;
                    if (sc > best[r + (size_t)t]) {
                        best[r + (size_t)t] = sc;
                        label[r + (size_t)t] = (int32_t)j;
                    }
                }
        }
        for (; r < nr; r++)
            for (size_t j = c0; j < c1; j++) {
                float dot = dot_1x1(x + (r0 + r) * (size_t)d, c + j * (size_t)d, d);
                float sc = half ? dot - half[j] : dot;
                if (sc > best[r]) {
                    best[r] = sc;
                    label[r] = (int32_t)j;
                }
            }
    }
}

void gpu_assign_cpu(const float *x, size_t n, int dim, const float *centroids, size_t k, gpu_metric metric,
                    const float *half_norm, int32_t *labels32, int64_t *labels64, float *dist)
{
    const float *half = metric == GPU_METRIC_L2 ? half_norm : NULL;
    size_t ntiles = (n + ROW_TILE - 1) / ROW_TILE;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 4)
#endif
    for (size_t t = 0; t < ntiles; t++) {
        float best[ROW_TILE];
        int32_t label[ROW_TILE];
        size_t r0 = t * ROW_TILE, r1 = r0 + ROW_TILE < n ? r0 + ROW_TILE : n;
        assign_tile(x, r0, r1, dim, centroids, k, half, best, label);
        for (size_t r = r0; r < r1; r++) {
            if (labels32)
                labels32[r] = label[r - r0];
            if (labels64)
                labels64[r] = label[r - r0];
            if (dist) {
                if (half) {
                    /* |x - c|^2 = |x|^2 - 2 (x.c - 0.5|c|^2) */
                    const float *row = x + r * (size_t)dim;
                    float xx = 0;
                    for (int j = 0; j < dim; j++)
                        xx += row[j] * row[j];
                    dist[r] = xx - 2 * best[r - r0];
                } else {
                    dist[r] = best[r - r0];
                }
            }
        }
    }
}

qr_status gpu_objective_cpu(const float *x, size_t n, int dim, const float *centroids, size_t k,
                            gpu_metric metric, double *out, char *err)
{
    float *dist = malloc((n ? n : 1) * sizeof(float));
    float *half = malloc(k * sizeof(float));
    if (!dist || !half) {
        free(dist);
        free(half);
        return qr_fail(err, QR_ENOMEM, "out of memory for the k-means objective");
    }
    gpu_half_norms(centroids, k, dim, half);
    gpu_assign_cpu(x, n, dim, centroids, k, metric, half, NULL, NULL, dist);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += dist[i];
    *out = sum;
    free(dist);
    free(half);
    return QR_OK;
}

/* ---- the CPU reference k-means ----------------------------------------------------------- */

static qr_status check_kmeans_opts(const gpu_kmeans_opts *o, char *err)
{
    if (!o)
        return qr_fail(err, QR_EINVAL, "k-means options missing");
    if (o->niter < 1)
        return qr_fail(err, QR_EINVAL, "k-means needs at least one iteration (got %d)", o->niter);
    return QR_OK;
}

qr_status gpu_kmeans_cpu(const float *x, size_t n, int dim, size_t k, const gpu_kmeans_opts *opts,
                         float *centroids, gpu_report *rep, char *err)
{
    uint64_t t0 = qr_now_ns();
    gpu_kmeans_state s = {0};
    size_t *sample = NULL, nx = 0;
    float *xs = NULL, *dist = NULL;
    int32_t *labels = NULL;
    bool done = false;
    qr_status st = check_kmeans_opts(opts, err);
    if (st)
        return st;
    if (!x || !centroids || dim < 1)
        return qr_fail(err, QR_EINVAL, "k-means needs rows, a dimension >= 1 and an output");
    if ((st = gpu_kmeans_sample(n, k, opts->max_points_per_centroid, opts->seed, &sample, &nx, err)))
        goto out;
    const float *train = x;
    if (sample) {
        if (!(xs = malloc(nx * (size_t)dim * sizeof(float)))) {
            st = qr_fail(err, QR_ENOMEM, "out of memory for a k-means sample of %zu rows", nx);
            goto out;
        }
        for (size_t i = 0; i < nx; i++)
            memcpy(xs + i * (size_t)dim, x + sample[i] * (size_t)dim, (size_t)dim * sizeof(float));
        train = xs;
    }
    if ((st = gpu_kmeans_begin(&s, train, nx, dim, k, opts->metric, opts->seed, &done, err)))
        goto out;
    int it = 0;
    if (!done) {
        labels = malloc(nx * sizeof(int32_t));
        dist = malloc(nx * sizeof(float));
        if (!labels || !dist) {
            st = qr_fail(err, QR_ENOMEM, "out of memory for k-means labels of %zu rows", nx);
            goto out;
        }
        for (; it < opts->niter; it++) {
            gpu_assign_cpu(train, nx, dim, s.centroids, k, opts->metric, s.half_norm, labels, NULL, dist);
            gpu_kmeans_iteration_reset(&s);
            gpu_kmeans_accumulate(&s, train, nx, labels, dist);
            gpu_kmeans_iteration_end(&s);
        }
    }
    memcpy(centroids, s.centroids, k * (size_t)dim * sizeof(float));
    if (rep) {
        memset(rep, 0, sizeof(*rep));
        rep->train_rows = nx;
        rep->iterations = it;
        rep->splits = s.splits;
        rep->objective = s.objective;
        rep->seconds = (double)(qr_now_ns() - t0) / 1e9;
    }
out:
    gpu_kmeans_release(&s);
    free(sample);
    free(xs);
    free(labels);
    free(dist);
    return st;
}

/* ---- exact top-k --------------------------------------------------------------------------- */

double gpu_exact_score(const float *a, const float *b, int dim, gpu_metric metric)
{
    double s[4] = {0, 0, 0, 0};
    int i = 0;
    if (metric == GPU_METRIC_L2) {
        for (; i + 4 <= dim; i += 4)
            for (int t = 0; t < 4; t++) {
                double diff = (double)a[i + t] - b[i + t];
                s[t] += diff * diff;
            }
        for (; i < dim; i++) {
            double diff = (double)a[i] - b[i];
            s[0] += diff * diff;
        }
    } else {
        for (; i + 4 <= dim; i += 4)
            for (int t = 0; t < 4; t++)
                s[t] += (double)a[i + t] * b[i + t];
        for (; i < dim; i++)
            s[0] += (double)a[i] * b[i];
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* Ranking key: larger is better for both metrics; equal keys rank the smaller id first. */
static double rank_key(double score, gpu_metric metric)
{
    return metric == GPU_METRIC_L2 ? -score : score;
}

static bool better(double ka, int64_t ia, double kb, int64_t ib)
{
    return ka > kb || (ka == kb && ia < ib);
}

/* A sorted list of the best k (key, id) pairs seen. */
typedef struct {
    double *key;
    int64_t *id;
    size_t n, k;
} toplist;

static void toplist_offer(toplist *t, double key, int64_t id)
{
    if (t->n == t->k && !better(key, id, t->key[t->k - 1], t->id[t->k - 1]))
        return;
    size_t pos = t->n < t->k ? t->n++ : t->k - 1;
    while (pos > 0 && better(key, id, t->key[pos - 1], t->id[pos - 1])) {
        t->key[pos] = t->key[pos - 1];
        t->id[pos] = t->id[pos - 1];
        pos--;
    }
    t->key[pos] = key;
    t->id[pos] = id;
}

static void toplist_emit(const toplist *t, gpu_metric metric, int64_t *ids, float *scores)
{
    for (size_t i = 0; i < t->k; i++) {
        ids[i] = i < t->n ? t->id[i] : -1;
        scores[i] = i < t->n ? (float)(metric == GPU_METRIC_L2 ? -t->key[i] : t->key[i]) : NAN;
    }
}

static qr_status check_knn(const float *base, size_t nb, const float *queries, size_t nq, int dim, size_t k,
                           gpu_metric metric, const int64_t *ids, const float *scores, char *err)
{
    if (!base || !queries || !ids || !scores || dim < 1 || nq == 0)
        return qr_fail(err, QR_EINVAL, "top-k needs base rows, queries, outputs and a dimension >= 1");
    if (metric != GPU_METRIC_IP && metric != GPU_METRIC_L2)
        return qr_fail(err, QR_EINVAL, "unknown top-k metric %d", (int)metric);
    if (k < 1 || k > nb || k > GPU_KNN_K_MAX)
        return qr_fail(err, QR_EINVAL, "top-k: k must be 1..%zu (got %zu for %zu base rows)",
                       nb < GPU_KNN_K_MAX ? nb : (size_t)GPU_KNN_K_MAX, k, nb);
    return QR_OK;
}

qr_status gpu_knn_cpu(const float *base, size_t nb, const float *queries, size_t nq, int dim, size_t k,
                      gpu_metric metric, int64_t *ids, float *scores, char *err)
{
    qr_status st = check_knn(base, nb, queries, nq, dim, k, metric, ids, scores, err);
    if (st)
        return st;
    double *keys = malloc(nq * k * sizeof(double));
    int64_t *tids = malloc(nq * k * sizeof(int64_t));
    if (!keys || !tids) {
        free(keys);
        free(tids);
        return qr_fail(err, QR_ENOMEM, "out of memory for top-k of %zu queries", nq);
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (size_t q = 0; q < nq; q++) {
        toplist t = {keys + q * k, tids + q * k, 0, k};
        const float *qv = queries + q * (size_t)dim;
        for (size_t b = 0; b < nb; b++)
            toplist_offer(&t, rank_key(gpu_exact_score(qv, base + b * (size_t)dim, dim, metric), metric),
                          (int64_t)b);
        toplist_emit(&t, metric, ids + q * k, scores + q * k);
    }
    free(keys);
    free(tids);
    return QR_OK;
}

qr_status gpu_knn_rescore(const float *base, size_t nb, const float *queries, size_t nq, int dim, size_t k,
                          gpu_metric metric, const int64_t *cand, size_t ncand, int64_t *ids, float *scores,
                          char *err)
{
    if (!base || !queries || !cand || !ids || !scores || dim < 1 || k < 1)
        return qr_fail(err, QR_EINVAL, "top-k rescoring: missing argument");
    double *keys = malloc(nq * k * sizeof(double));
    int64_t *tids = malloc(nq * k * sizeof(int64_t));
    if (!keys || !tids) {
        free(keys);
        free(tids);
        return qr_fail(err, QR_ENOMEM, "out of memory rescoring top-k of %zu queries", nq);
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (size_t q = 0; q < nq; q++) {
        toplist t = {keys + q * k, tids + q * k, 0, k};
        const float *qv = queries + q * (size_t)dim;
        const int64_t *cq = cand + q * ncand;
        for (size_t j = 0; j < ncand; j++) {
            int64_t id = cq[j];
            if (id < 0 || (uint64_t)id >= nb)
                continue;
            bool seen = false; /* candidate lists are short: a linear check beats a sort */
            for (size_t i = 0; i < t.n && !seen; i++)
                seen = t.id[i] == id;
            if (seen)
                continue;
            toplist_offer(
                &t, rank_key(gpu_exact_score(qv, base + (size_t)id * (size_t)dim, dim, metric), metric), id);
        }
        toplist_emit(&t, metric, ids + q * k, scores + q * k);
    }
    free(keys);
    free(tids);
    return QR_OK;
}

/* ---- device memory plans ------------------------------------------------------------------- */

/* a * b + c, or SIZE_MAX when it overflows */
static size_t mul_add(size_t a, size_t b, size_t c)
{
    if (b && a > (SIZE_MAX - c) / b)
        return SIZE_MAX;
    return a * b + c;
}

qr_status gpu_plan_pass(size_t n, size_t row_bytes, size_t fixed_bytes, size_t per_row_bytes, size_t budget,
                        size_t max_batch, gpu_plan *out, char *err)
{
    if (n == 0 || row_bytes == 0 || max_batch == 0)
        return qr_fail(err, QR_EINVAL, "device plan: no rows");
    memset(out, 0, sizeof(*out));
    size_t cap = n < max_batch ? n : max_batch;
    size_t bmin = cap < PLAN_MIN_BATCH ? cap : PLAN_MIN_BATCH;
    size_t data = mul_add(n, row_bytes, fixed_bytes);
    size_t need_resident = mul_add(bmin, per_row_bytes, data);
    if (need_resident != SIZE_MAX && need_resident <= budget) {
        size_t b = per_row_bytes ? (budget - data) / per_row_bytes : cap;
        out->resident = true;
        out->batch_rows = b < cap ? b : cap;
        out->bytes = data + out->batch_rows * per_row_bytes;
        return QR_OK;
    }
    /* streamed: two batch buffers, one filling while the other is in use */
    size_t per = mul_add(2, row_bytes, per_row_bytes);
    size_t need_one = per == SIZE_MAX ? SIZE_MAX : mul_add(1, per, fixed_bytes);
    if (need_one == SIZE_MAX || need_one > budget)
        return qr_fail(
            err, QR_ENOMEM,
            "device memory budget of %zu bytes is too small: one row needs %zu bytes with the %zu the "
            "call holds anyway",
            budget, per, fixed_bytes);
    size_t b = (budget - fixed_bytes) / per;
    out->resident = false;
    out->batch_rows = b < cap ? b : cap;
    out->bytes = fixed_bytes + out->batch_rows * per;
    return QR_OK;
}
