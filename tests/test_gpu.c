/*
 * Tests of the GPU build path (index/gpu/). On any machine: the CPU reference of its k-means
 * against FAISS's own (same centroids from the same seed, subsampling and empty-cluster splits
 * included), the host steps it shares with the device (generator, shuffle, split rule,
 * assignment, exact top-k and rescoring, memory plans), the public calls' argument checks and
 * their answers without a device, and the seam into vindex: centroids from the CPU reference
 * build IVF indexes that FAISS accepts and serves with the recall of its own training. Cases named
 * device_* need a CUDA device and exit 77 (skipped) where there is none.
 */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/gpu/gpu.h"
#include "index/index.h"
#include "index/vindex_int.h"
#include "tests/harness.h"

/* ---- data -------------------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_gauss(uint64_t *s)
{
    double u = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
    double v = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

static void normalize(float *row, int dim)
{
    double sum = 0;
    for (int i = 0; i < dim; i++)
        sum += (double)row[i] * row[i];
    double inv = 1.0 / sqrt(sum);
    for (int i = 0; i < dim; i++)
        row[i] = (float)(row[i] * inv);
}

/* n rows around nclusters Gaussian centres, L2-normalised when unit. */
static float *clustered(size_t n, int dim, int nclusters, double noise, uint64_t seed, bool unit)
{
    float *x = malloc(n * (size_t)dim * sizeof(float));
    float *c = malloc((size_t)nclusters * (size_t)dim * sizeof(float));
    uint64_t s = seed;
    for (int j = 0; j < nclusters * dim; j++)
        c[j] = (float)rng_gauss(&s);
    for (size_t i = 0; i < n; i++) {
        const float *centre = c + (rng_next(&s) % (uint64_t)nclusters) * (size_t)dim;
        for (int j = 0; j < dim; j++)
            x[i * (size_t)dim + j] = (float)(centre[j] + noise * rng_gauss(&s));
        if (unit)
            normalize(x + i * (size_t)dim, dim);
    }
    free(c);
    return x;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        m = d > m ? d : m;
    }
    return m;
}

static bool device_present(void)
{
    return index_gpu_available();
}

#define NEED_DEVICE()                                                                              \
    do {                                                                                           \
        if (!device_present()) {                                                                   \
            printf("skipped: no usable CUDA device (%s)\n", gpu_compiled() ? "" : "not compiled"); \
            exit(77);                                                                              \
        }                                                                                          \
    } while (0)

/* ---- FAISS's random choices ------------------------------------------------------------------ */

TEST(mt19937_matches_the_standard)
{
    /* the C++ standard fixes mt19937's 10000th output for the default seed 5489 */
    gpu_rng r;
    gpu_rng_seed(&r, 5489);
    CHECK(gpu_rng_next(&r) == 3499211612u);
    uint32_t v = 0;
    for (int i = 1; i < 10000; i++)
        v = gpu_rng_next(&r);
    CHECK(v == 4123659995u);
}

TEST(rand_perm_prefix_is_the_full_shuffle_s_prefix)
{
    const size_t n = 1000;
    size_t *full = malloc(n * sizeof(size_t)), *part = malloc(n * sizeof(size_t));
    char *seen = calloc(n, 1);
    gpu_rand_perm_prefix(full, n, n, 1235);
    gpu_rand_perm_prefix(part, n, 17, 1235);
    CHECK(memcmp(full, part, 17 * sizeof(size_t)) == 0);
    for (size_t i = 0; i < n; i++) {
        CHECK(full[i] < n && !seen[full[i]]);
        seen[full[i]] = 1;
    }
    /* a shuffle, not the identity; another seed, another order */
    size_t fixed = 0;
    for (size_t i = 0; i < n; i++)
        fixed += full[i] == i;
    CHECK(fixed < 20);
    gpu_rand_perm_prefix(part, n, 17, 1236);
    CHECK(memcmp(full, part, 17 * sizeof(size_t)) != 0);
    free(full);
    free(part);
    free(seen);
}

TEST(sample_follows_faiss_rule)
{
    char err[QR_ERR_LEN];
    size_t *rows = NULL, nx = 0;
    /* at most k * max_points rows: all of them, no sample */
    CHECK_OK(gpu_kmeans_sample(2560, 10, 256, 1234, &rows, &nx, err), err);
    CHECK(rows == NULL && nx == 2560);
    CHECK_OK(gpu_kmeans_sample(5000, 10, 0, 1234, &rows, &nx, err), err);
    CHECK(rows == NULL && nx == 5000);
    CHECK_OK(gpu_kmeans_sample(5000, 10, 256, 1234, &rows, &nx, err), err);
    CHECK(rows != NULL && nx == 2560);
    size_t *expect = malloc(5000 * sizeof(size_t));
    gpu_rand_perm_prefix(expect, 5000, 2560, 1234); /* FAISS: rand_perm(perm, nx, seed) */
    CHECK(memcmp(rows, expect, 2560 * sizeof(size_t)) == 0);
    free(rows);
    free(expect);
}

/* ---- the CPU reference against FAISS --------------------------------------------------------- */

/* The smallest gap, over every row and every iteration of our reference's trajectory, between a
 * row's best and second-best centroid score, computed in double (L2 as x.c - |c|^2 / 2). FAISS
 * scores with BLAS, whose kernels round differently on each CPU (OPENBLAS_CORETYPE, thread
 * count): only where this gap is far above float rounding is FAISS's assignment the same as ours
 * on every machine, and only then can the centroids be compared. *splits gets our split count. */
static double trajectory_gap(const float *x, size_t n, int d, size_t k, const gpu_kmeans_opts *o,
                             size_t *splits)
{
    char err[QR_ERR_LEN];
    size_t *sample = NULL, nx = 0;
    double gap = INFINITY;
    if (gpu_kmeans_sample(n, k, o->max_points_per_centroid, o->seed, &sample, &nx, err))
        return -1;
    float *train = malloc(nx * (size_t)d * sizeof(float)), *dist = malloc(nx * sizeof(float));
    int32_t *labels = malloc(nx * sizeof(int32_t));
    for (size_t i = 0; i < nx; i++)
        memcpy(train + i * d, x + (sample ? sample[i] : i) * d, (size_t)d * sizeof(float));
    gpu_kmeans_state s;
    bool done = false;
    if (gpu_kmeans_begin(&s, train, nx, d, k, o->metric, o->seed, &done, err))
        gap = -1;
    for (int it = 0; gap >= 0 && !done && it < o->niter; it++) {
        for (size_t i = 0; i < nx; i++) {
            double best = -INFINITY, second = -INFINITY;
            for (size_t j = 0; j < k; j++) {
                double dot = 0, cc = 0;
                for (int t = 0; t < d; t++) {
                    dot += (double)train[i * d + t] * s.centroids[j * d + t];
                    cc += (double)s.centroids[j * d + t] * s.centroids[j * d + t];
                }
                double sc = o->metric == GPU_METRIC_L2 ? dot - cc / 2 : dot;
                if (sc > best) {
                    second = best;
                    best = sc;
                } else if (sc > second) {
                    second = sc;
                }
            }
            gap = best - second < gap ? best - second : gap;
        }
        gpu_assign_cpu(train, nx, d, s.centroids, k, o->metric, s.half_norm, labels, NULL, dist);
        gpu_kmeans_iteration_reset(&s);
        gpu_kmeans_accumulate(&s, train, nx, labels, dist);
        gpu_kmeans_iteration_end(&s);
    }
    if (splits)
        *splits = s.splits;
    gpu_kmeans_release(&s);
    free(sample);
    free(train);
    free(dist);
    free(labels);
    return gap;
}

/* Our CPU k-means and FAISS's Clustering from the same options give the same centroids, checked
 * only on data whose assignments are clear of near-ties (min_gap, see trajectory_gap): there
 * the centroids agree to rounding whatever BLAS kernel FAISS runs. */
static bool same_as_faiss(const float *x, size_t n, int d, size_t k, const gpu_kmeans_opts *o, double min_gap,
                          double tol, size_t *splits)
{
    char err[QR_ERR_LEN];
    double gap = trajectory_gap(x, n, d, k, o, splits);
    if (gap < min_gap) {
        harness_fail(__FILE__, __LINE__,
                     "test data has a near-tie (gap %g < %g): FAISS's BLAS may break it either way", gap,
                     min_gap);
        return false;
    }
    float *ours = malloc(k * (size_t)d * sizeof(float)), *theirs = malloc(k * (size_t)d * sizeof(float));
    gpu_report rep;
    bool ok = gpu_kmeans_cpu(x, n, d, k, o, ours, &rep, err) == QR_OK;
    if (!ok)
        harness_fail(__FILE__, __LINE__, "gpu_kmeans_cpu: %s", err);
    if (ok && gpu_kmeans_faiss(x, n, d, k, o, theirs, NULL, err) != QR_OK) {
        harness_fail(__FILE__, __LINE__, "gpu_kmeans_faiss: %s", err);
        ok = false;
    }
    if (ok) {
        double diff = max_abs_diff(ours, theirs, k * (size_t)d);
        if (diff > tol) {
            harness_fail(__FILE__, __LINE__, "centroids differ from FAISS's by %g (k %zu, n %zu)", diff, k,
                         n);
            ok = false;
        }
    }
    if (ok && splits && *splits != rep.splits) {
        harness_fail(__FILE__, __LINE__, "the replay split %zu clusters, the reference %zu", *splits,
                     rep.splits);
        ok = false;
    }
    free(ours);
    free(theirs);
    return ok;
}

/* The gaps the tests below require. A float dot product of d terms is within d * 2^-24 * |x||c|
 * of exact whatever the summation order: 2e-6 for unit rows at d = 32; for the L2 rows here
 * (|x|^2 near 20, and FAISS adds |x|^2 + |c|^2 - 2 x.c) about 2e-5. Gaps 5x those bounds cannot be
 * flipped by any BLAS kernel's rounding. */
#define GAP_UNIT 1e-5
#define GAP_L2   1e-4

TEST(kmeans_cpu_equals_faiss_spherical)
{
    const int d = 32;
    const size_t n = 3000, k = 24;
    float *x = clustered(n, d, 30, 0.4, 5, true);
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    CHECK(same_as_faiss(x, n, d, k, &o, GAP_UNIT, 1e-6, NULL));
    o.seed = 4; /* a trajectory clear of near-ties for 25 iterations (seed 77's is not) */
    o.niter = 25;
    CHECK(same_as_faiss(x, n, d, k, &o, GAP_UNIT, 1e-6, NULL));
    /* more rows than 256 per centroid: FAISS subsamples first, and so do we */
    o.seed = 1234;
    o.niter = 10;
    CHECK(same_as_faiss(x, n, d, 4, &o, GAP_UNIT, 1e-6, NULL));
    free(x);
}

TEST(kmeans_cpu_equals_faiss_l2)
{
    const int d = 16;
    const size_t n = 2500, k = 20;
    float *x = clustered(n, d, 12, 0.5, 9, false);
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    o.metric = GPU_METRIC_L2;
    CHECK(same_as_faiss(x, n, d, k, &o, GAP_L2, 1e-5, NULL));
    free(x);
}

TEST(kmeans_cpu_splits_empty_clusters_as_faiss)
{
    /* Clusters that empty in the second iteration with every assignment clear of near-ties (the
     * seeds were searched for that; trajectory_gap checks it), so the splits are FAISS's on any
     * CPU: the donors drawn, the perturbation, the shared counts. The run stops at the split: in
     * the next iteration the two halves of a split centroid score rows nearly equal (for unit
     * rows within O(eps^3) = 1e-9, below float rounding), and BLAS kernels may break those ties
     * either way. Duplicated rows would empty clusters at once, but through exact ties between
     * equal centroids, which BLAS kernels break differently by column: not a portable check. */
    const int d = 8;
    const size_t n = 300, k = 40;
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    o.niter = 2;
    size_t splits = 0;
    float *x = clustered(n, d, 10, 0.5, 684, false);
    o.metric = GPU_METRIC_L2;
    CHECK(same_as_faiss(x, n, d, k, &o, GAP_L2, 1e-5, &splits));
    CHECK_MSG(splits == 2, "the L2 data was meant to empty 2 clusters (%zu splits)", splits);
    free(x);
    x = clustered(n, d, 10, 0.5, 2847, true);
    o.metric = GPU_METRIC_IP;
    CHECK(same_as_faiss(x, n, d, k, &o, GAP_UNIT, 1e-6, &splits));
    CHECK_MSG(splits == 1, "the unit data was meant to empty a cluster (%zu splits)", splits);
    free(x);
}

TEST(kmeans_rejects_bad_input)
{
    char err[QR_ERR_LEN];
    float x[4 * 2] = {1, 0, 0, 1, 1, 1, -1, 0};
    float c[4 * 2];
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    CHECK_INT(gpu_kmeans_cpu(x, 3, 2, 4, &o, c, NULL, err), QR_EINVAL);
    CHECK(strstr(err, "at least as many rows"));
    CHECK_INT(gpu_kmeans_cpu(x, 4, 2, 0, &o, c, NULL, err), QR_EINVAL);
    o.niter = 0;
    CHECK_INT(gpu_kmeans_cpu(x, 4, 2, 2, &o, c, NULL, err), QR_EINVAL);
    o.niter = 10;
    x[5] = NAN;
    CHECK_INT(gpu_kmeans_cpu(x, 4, 2, 2, &o, c, NULL, err), QR_EINVAL);
    CHECK(strstr(err, "row 2"));
    /* n == k: FAISS's corner case, the rows themselves */
    x[5] = 1;
    CHECK_OK(gpu_kmeans_cpu(x, 4, 2, 4, &o, c, NULL, err), err);
    CHECK(memcmp(c, x, sizeof(x)) == 0);
}

TEST(split_rule_halves_the_donor)
{
    /* clusters 0 empty, 1 with 8 rows, 2 with 2, n = 10 rows: the walk starts at cluster 0
     * (p < 0), reaches 1 whose p = (8 - 1) / (10 - 3) = 1 and takes it */
    gpu_kmeans_state s = {0};
    char err[QR_ERR_LEN];
    bool done;
    float rows[10 * 4];
    for (int i = 0; i < 40; i++)
        rows[i] = (float)(i % 7) - 2.5f;
    CHECK_OK(gpu_kmeans_begin(&s, rows, 10, 4, 3, GPU_METRIC_L2, 1234, &done, err), err);
    CHECK(!done);
    gpu_kmeans_iteration_reset(&s);
    const float sum1[4] = {8, 16, -8, 4}, sum2[4] = {2, 2, 2, 2};
    memcpy(s.centroids + 4, sum1, sizeof(sum1));
    memcpy(s.centroids + 8, sum2, sizeof(sum2));
    s.hassign[1] = 8;
    s.hassign[2] = 2;
    CHECK_INT(gpu_kmeans_iteration_end(&s), 1);
    CHECK_INT(s.splits, 1);
    const float mean1[4] = {1, 2, -1, 0.5f};
    const double up = 1 + 1 / 1024., down = 1 - 1 / 1024.;
    for (int j = 0; j < 4; j++) {
        CHECK(s.centroids[j] == (float)(mean1[j] * (j % 2 == 0 ? up : down)));
        CHECK(s.centroids[4 + j] == (float)(mean1[j] * (j % 2 == 0 ? down : up)));
        CHECK(s.centroids[8 + j] == 1.0f);
    }
    CHECK(s.hassign[0] == 4 && s.hassign[1] == 4 && s.hassign[2] == 2);
    /* L2 keeps the half norms of the new centroids for the next assignment */
    float half[3];
    gpu_half_norms(s.centroids, 3, 4, half);
    CHECK(memcmp(half, s.half_norm, sizeof(half)) == 0);
    gpu_kmeans_release(&s);
    gpu_kmeans_release(&s); /* released twice: a no-op */
}

/* ---- assignment, objective, top-k ------------------------------------------------------------ */

TEST(assign_cpu_is_the_nearest_centroid)
{
    const int d = 24;
    const size_t n = 777, k = 37; /* not multiples of the tiles */
    float *x = clustered(n, d, 9, 0.5, 21, false);
    float *c = clustered(k, d, 9, 0.5, 22, false);
    memcpy(c + 5 * d, c + 3 * d, d * sizeof(float)); /* 3 and 5 equal: 5 never wins */
    float half[37], dist[777];
    int32_t l32[777];
    int64_t l64[777];
    for (int m = 0; m < 2; m++) {
        gpu_metric metric = m ? GPU_METRIC_L2 : GPU_METRIC_IP;
        gpu_half_norms(c, k, d, half);
        gpu_assign_cpu(x, n, d, c, k, metric, half, l32, l64, dist);
        size_t wrong = 0;
        for (size_t i = 0; i < n; i++) {
            CHECK(l32[i] == l64[i] && l64[i] != 5);
            double best = 0;
            size_t arg = 0;
            for (size_t j = 0; j < k; j++) {
                double sc = gpu_exact_score(x + i * d, c + j * d, d, metric);
                sc = metric == GPU_METRIC_L2 ? -sc : sc;
                if (j == 0 || sc > best + 1e-6) {
                    best = sc;
                    arg = j;
                }
            }
            /* a float argmax may differ from the exact one only between near-equal centroids */
            double chosen = gpu_exact_score(x + i * d, c + (size_t)l64[i] * d, d, metric);
            chosen = metric == GPU_METRIC_L2 ? -chosen : chosen;
            wrong += (size_t)l64[i] != arg && chosen < best - 1e-5 * (1 + fabs(best));
            double got = metric == GPU_METRIC_L2 ? -(double)dist[i] : (double)dist[i];
            CHECK_MSG(fabs(got - best) <= 1e-4 * (1 + fabs(best)), "row %zu: distance %g, exact %g", i,
                      dist[i], best);
        }
        CHECK_MSG(wrong == 0, "%zu rows not on their nearest centroid (metric %d)", wrong, m);
    }
    double obj = 0, want = 0;
    char err[QR_ERR_LEN];
    CHECK_OK(gpu_objective_cpu(x, n, d, c, k, GPU_METRIC_IP, &obj, err), err);
    gpu_assign_cpu(x, n, d, c, k, GPU_METRIC_IP, NULL, NULL, l64, dist);
    for (size_t i = 0; i < n; i++)
        want += gpu_exact_score(x + i * d, c + (size_t)l64[i] * d, d, GPU_METRIC_IP);
    CHECK(fabs(obj - want) <= 1e-4 * fabs(want));
    free(x);
    free(c);
}

static int cmp_key(const void *a, const void *b)
{
    const double *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] > y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

TEST(knn_cpu_is_exact_with_ties_by_id)
{
    char err[QR_ERR_LEN];
    const int d = 12;
    const size_t nb = 500, nq = 7, k = 9;
    float *base = clustered(nb, d, 6, 0.3, 31, false);
    float *q = clustered(nq, d, 6, 0.3, 32, false);
    for (size_t i = 0; i < 40; i++) /* duplicates: equal scores, ranked by row number */
        memcpy(base + (100 + i) * d, base + (10 + i % 3) * d, d * sizeof(float));
    memcpy(q, base + 10 * d, d * sizeof(float));
    int64_t ids[7 * 9];
    float sc[7 * 9];
    double(*all)[2] = malloc(nb * sizeof(*all));
    for (int m = 0; m < 2; m++) {
        gpu_metric metric = m ? GPU_METRIC_L2 : GPU_METRIC_IP;
        CHECK_OK(gpu_knn_cpu(base, nb, q, nq, d, k, metric, ids, sc, err), err);
        for (size_t qi = 0; qi < nq; qi++) {
            for (size_t b = 0; b < nb; b++) {
                double s = gpu_exact_score(q + qi * d, base + b * d, d, metric);
                all[b][0] = metric == GPU_METRIC_L2 ? -s : s;
                all[b][1] = (double)b;
            }
            qsort(all, nb, sizeof(*all), cmp_key);
            for (size_t i = 0; i < k; i++) {
                CHECK_INT(ids[qi * k + i], (int64_t)all[i][1]);
                CHECK(sc[qi * k + i] == (float)(metric == GPU_METRIC_L2 ? -all[i][0] : all[i][0]));
            }
        }
    }
    /* query 0 is row 10, whose copies 100, 103, ... tie with it */
    CHECK_INT(ids[0], 10);
    CHECK_INT(ids[1], 100);
    CHECK_INT(ids[2], 103);
    CHECK_INT(gpu_knn_cpu(base, nb, q, nq, d, 0, GPU_METRIC_IP, ids, sc, err), QR_EINVAL);
    CHECK_INT(gpu_knn_cpu(base, 5, q, nq, d, 6, GPU_METRIC_IP, ids, sc, err), QR_EINVAL);
    CHECK_INT(gpu_knn_cpu(base, nb, q, nq, d, GPU_KNN_K_MAX + 1, GPU_METRIC_IP, ids, sc, err), QR_EINVAL);
    free(all);
    free(base);
    free(q);
}

TEST(knn_rescore_recovers_the_exact_top_k)
{
    char err[QR_ERR_LEN];
    const int d = 16;
    const size_t nb = 300, nq = 5, k = 10, ncand = 32;
    float *base = clustered(nb, d, 4, 0.4, 41, true);
    float *q = clustered(nq, d, 4, 0.4, 42, true);
    int64_t want[5 * 16], ids[5 * 10], cand[5 * 32];
    float wsc[5 * 16], sc[5 * 10];
    CHECK_OK(gpu_knn_cpu(base, nb, q, nq, d, 16, GPU_METRIC_IP, want, wsc, err), err);
    /* the true top 16 in reverse, around junk: -1, out of range, repeats, far rows */
    for (size_t qi = 0; qi < nq; qi++) {
        int64_t *c = cand + qi * ncand;
        for (size_t j = 0; j < ncand; j++)
            c[j] = -1;
        for (size_t j = 0; j < 16; j++)
            c[j] = want[qi * 16 + 15 - j];
        c[16] = (int64_t)nb;
        c[17] = c[3];
        c[18] = want[qi * 16];
        c[20] = (int64_t)((qi * 37 + 11) % nb);
    }
    CHECK_OK(gpu_knn_rescore(base, nb, q, nq, d, k, GPU_METRIC_IP, cand, ncand, ids, sc, err), err);
    for (size_t qi = 0; qi < nq; qi++)
        for (size_t i = 0; i < k; i++) {
            CHECK_INT(ids[qi * k + i], want[qi * 16 + i]);
            CHECK(sc[qi * k + i] == wsc[qi * 16 + i]);
        }
    /* fewer valid candidates than k: the tail is -1 and NaN */
    for (size_t j = 0; j < ncand; j++)
        cand[j] = j < 3 ? (int64_t)j : -1;
    CHECK_OK(gpu_knn_rescore(base, nb, q, 1, d, k, GPU_METRIC_IP, cand, ncand, ids, sc, err), err);
    CHECK(ids[2] >= 0 && ids[3] == -1 && isnan(sc[9]));
    free(base);
    free(q);
}

/* ---- device memory plans ---------------------------------------------------------------------- */

TEST(plan_resident_streamed_and_too_small)
{
    char err[QR_ERR_LEN];
    gpu_plan p;
    /* 1M rows of 1536 bytes, 16 KiB of scores per batch row, 64 MiB fixed */
    const size_t n = 1000000, row = 1536, per = 16400, fixed = 64u << 20, cap = 65536;
    CHECK_OK(gpu_plan_pass(n, row, fixed, per, (size_t)70 << 30, cap, &p, err), err);
    CHECK(p.resident && p.batch_rows == cap && p.bytes == fixed + n * row + cap * per);
    /* the rows fit, but only with a smaller batch: still resident */
    size_t budget = fixed + n * row + 5000 * per + 10;
    CHECK_OK(gpu_plan_pass(n, row, fixed, per, budget, cap, &p, err), err);
    CHECK(p.resident && p.batch_rows == 5000 && p.bytes <= budget);
    /* less than a 4096-row batch besides the rows: streamed, two buffers per batch row */
    budget = fixed + n * row + 4000 * per;
    CHECK_OK(gpu_plan_pass(n, row, fixed, per, budget, cap, &p, err), err);
    CHECK(!p.resident && p.bytes <= budget);
    CHECK(p.batch_rows == (budget - fixed) / (2 * row + per) || p.batch_rows == cap);
    CHECK(p.bytes == fixed + p.batch_rows * (2 * row + per));
    CHECK_OK(gpu_plan_pass(n, row, fixed, per, (size_t)1 << 30, cap, &p, err), err);
    CHECK(!p.resident && p.batch_rows == (((size_t)1 << 30) - fixed) / (2 * row + per));
    /* small inputs: batches never exceed the rows */
    CHECK_OK(gpu_plan_pass(100, row, fixed, per, (size_t)1 << 30, cap, &p, err), err);
    CHECK(p.resident && p.batch_rows == 100);
    /* not one row fits */
    CHECK_INT(gpu_plan_pass(n, row, fixed, per, fixed + 2 * row + per - 1, cap, &p, err), QR_ENOMEM);
    CHECK(strstr(err, "too small"));
    CHECK_INT(gpu_plan_pass(n, row, fixed, per, fixed / 2, cap, &p, err), QR_ENOMEM);
    /* overflowing sizes are refused, not wrapped */
    CHECK_INT(gpu_plan_pass(SIZE_MAX / 2, row, fixed, per, SIZE_MAX / 4, cap, &p, err), QR_OK);
    CHECK(!p.resident);
    CHECK_INT(gpu_plan_pass(0, row, fixed, per, budget, cap, &p, err), QR_EINVAL);
}

/* ---- the public calls ------------------------------------------------------------------------ */

TEST(public_calls_check_arguments_and_availability)
{
    char err[QR_ERR_LEN] = "";
    float x[8 * 4], c[2 * 4];
    int64_t ids[4];
    float sc[4];
    for (int i = 0; i < 32; i++)
        x[i] = (float)(i % 5) + 1;
    CHECK_INT(index_gpu_train_centroids(NULL, 8, 4, 2, 10, 1234, c, NULL, err), QR_EINVAL);
    CHECK_INT(index_gpu_train_centroids(x, 8, 0, 2, 10, 1234, c, NULL, err), QR_EINVAL);
    CHECK_INT(index_gpu_train_centroids(x, 1, 4, 2, 10, 1234, c, NULL, err), QR_EINVAL);
    CHECK_INT(index_gpu_train_centroids(x, 8, 4, 0, 10, 1234, c, NULL, err), QR_EINVAL);
    CHECK_INT(index_gpu_train_centroids(x, 8, 4, 2, 0, 1234, c, NULL, err), QR_EINVAL);
    CHECK_INT(index_gpu_knn(x, 8, x, 1, 4, 9, ids, sc, NULL, err), QR_EINVAL);
    CHECK_INT(index_gpu_knn(x, 8, x, 1, 4, 0, ids, sc, NULL, err), QR_EINVAL);
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    if (device_present()) {
        CHECK_OK(index_gpu_check(err), err);
        return;
    }
    /* no usable device: every call says why, and nothing is written */
    CHECK(!index_gpu_available());
    CHECK_INT(index_gpu_check(err), QR_EUNAVAILABLE);
    CHECK(strstr(err, gpu_compiled() ? (gpu_device_count() ? "cuBLAS" : "no CUDA device")
                                     : "without the CUDA path"));
    unsigned char before[sizeof(c)];
    memset(c, 0x7f, sizeof(c));
    memcpy(before, c, sizeof(c));
    CHECK_INT(index_gpu_train_centroids(x, 8, 4, 2, 10, 1234, c, NULL, err), QR_EUNAVAILABLE);
    CHECK(memcmp(before, c, sizeof(c)) == 0);
    CHECK_INT(index_gpu_knn(x, 8, x, 1, 4, 2, ids, sc, NULL, err), QR_EUNAVAILABLE);
    CHECK_INT(gpu_kmeans(x, 8, 4, 2, &o, c, NULL, err), QR_EUNAVAILABLE);
    CHECK_INT(gpu_assign(x, 8, 4, c, 2, GPU_METRIC_IP, 0, ids, NULL, NULL, err), QR_EUNAVAILABLE);
    CHECK_INT(gpu_knn(x, 8, x, 1, 4, 2, GPU_METRIC_IP, 0, ids, sc, NULL, err), QR_EUNAVAILABLE);
    CHECK(err[0] != '\0');
}

TEST(cublas_loads_without_a_device)
{
    char err[QR_ERR_LEN] = "";
    if (!gpu_compiled()) {
        CHECK_INT(gpu_blas_load(err), QR_EUNAVAILABLE);
        CHECK(strstr(err, "without CUDA"));
        return;
    }
    /* loading the library needs no device: the toolkit this quarry was built with has it */
    CHECK_OK(gpu_blas_load(err), err);
    CHECK_OK(gpu_blas_load(err), err); /* once per process, then remembered */
}

TEST(cublas_load_failure_is_unavailable)
{
    char err[QR_ERR_LEN] = "";
    if (!gpu_compiled()) {
        printf("skipped: built without CUDA\n");
        exit(77);
    }
    setenv("QUARRY_CUBLAS", "/nonexistent/libcublas.so.99", 1);
    CHECK_INT(gpu_blas_load(err), QR_EUNAVAILABLE);
    CHECK(strstr(err, "/nonexistent/libcublas.so.99"));
    if (gpu_device_count() > 0) {
        CHECK_INT(index_gpu_check(err), QR_EUNAVAILABLE);
        CHECK(strstr(err, "cuBLAS"));
    }
}

/* ---- the seam into vindex ---------------------------------------------------------------------- */

static char *make_dir(void)
{
    char tmpl[] = "/tmp/quarry-gpu-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static void remove_dir(char *dir)
{
    if (!dir)
        return;
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
    free(dir);
}

/* Builds an index of rows 0..n-1 (chunk id = row + 1) in a fresh directory. */
static qr_status build(const char *dir, const vindex_opts *o, const float *x, size_t n, int d,
                       const vindex_centroids *vc, vindex **out, char *err)
{
    bool stale;
    vindex_builder *b = NULL;
    int64_t *ids = malloc(n * sizeof(int64_t));
    for (size_t i = 0; i < n; i++)
        ids[i] = (int64_t)i + 1;
    qr_status st = vindex_open(dir, d, o, 0, out, &stale, err);
    if (!st && !(st = vindex_build_begin(*out, vc, &b, err)) &&
        !(st = vindex_build_add(b, ids, x, n, d, err)))
        st = vindex_build_commit(b, 1, err);
    else if (b)
        vindex_build_abort(b);
    free(ids);
    return st;
}

TEST(wants_centroids_matches_vindex)
{
    char err[QR_ERR_LEN];
    const int d = 8;
    struct {
        const char *type;
        size_t threshold, nlist, n;
    } cases[] = {
        {"auto", 1000, 0, 800},  /* flat: at most the threshold */
        {"auto", 100, 0, 4000},  /* ivf_sq8, 4 * sqrt(4000) = 253 capped at 4000 / 39 = 102 */
        {"ivf_flat", 0, 0, 200}, /* 4 * sqrt(200) = 57, capped at 5 */
        {"ivf_flat", 0, 7, 300}, {"ivf_pq", 0, 0, 90000}, /* 4 * sqrt(90000) = 1200, under 2307 */
        {"hnsw", 0, 0, 500},     {"flat", 0, 0, 500},
    };
    for (size_t t = 0; t < sizeof(cases) / sizeof(cases[0]); t++) {
        vindex_opts o;
        vindex_opts_default(&o);
        o.type = cases[t].type;
        o.exact_threshold = cases[t].threshold;
        o.nlist = cases[t].nlist;
        size_t nlist = 99;
        bool want = index_gpu_wants_centroids(&o, cases[t].n, &nlist);
        if (cases[t].n > 20000) {
            /* too large to build here: the rule's own arithmetic */
            CHECK(want && nlist == 1200);
            continue;
        }
        float *x = clustered(cases[t].n, d, 10, 0.5, 50 + t, false);
        char *dir = make_dir();
        vindex *v = NULL;
        CHECK_OK(build(dir, &o, x, cases[t].n, d, NULL, &v, err), err);
        vindex_info info;
        vindex_get_info(v, &info);
        bool ivf = strncmp(info.type, "ivf", 3) == 0;
        CHECK_MSG(want == ivf, "case %zu: wants %d, vindex built %s", t, want, info.type);
        if (ivf)
            CHECK_MSG(nlist == info.nlist, "case %zu: nlist %zu, vindex %zu", t, nlist, info.nlist);
        else
            CHECK(nlist == 0);
        vindex_close(v);
        remove_dir(dir);
        free(x);
    }
    CHECK(!index_gpu_wants_centroids(NULL, 10, NULL));
    vindex_opts o;
    vindex_opts_default(&o);
    CHECK(!index_gpu_wants_centroids(&o, 0, NULL));
}

/* Recall@k of an index against exact search (chunk ids are rows + 1). */
static double recall(vindex *v, const float *x, size_t n, const float *q, size_t nq, int d, size_t k)
{
    char err[QR_ERR_LEN];
    int64_t *want = malloc(nq * k * sizeof(int64_t)), got[10];
    float *wsc = malloc(nq * k * sizeof(float)), sc[10];
    size_t hits = 0, found;
    if (gpu_knn_cpu(x, n, q, nq, d, k, GPU_METRIC_IP, want, wsc, err))
        return -1;
    for (size_t qi = 0; qi < nq; qi++) {
        if (vindex_search(v, q + qi * d, d, k, NULL, NULL, got, sc, &found, NULL, err))
            return -1;
        for (size_t i = 0; i < found; i++)
            for (size_t j = 0; j < k; j++)
                hits += got[i] == want[qi * k + j] + 1;
    }
    free(want);
    free(wsc);
    return (double)hits / (double)(nq * k);
}

TEST(cpu_centroids_serve_through_vindex)
{
    /* the GPU path's steps on the CPU give centroids that FAISS takes as its coarse quantizer
     * and serves with the recall of its own training */
    char err[QR_ERR_LEN];
    const int d = 32;
    const size_t n = 6000, nq = 40, k = 10, nlist = 60;
    float *x = clustered(n + nq, d, 40, 0.35, 61, true);
    const float *q = x + n * d;
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    float *cent = malloc(nlist * d * sizeof(float)), *got = malloc(nlist * d * sizeof(float));
    gpu_report rep;
    CHECK_OK(gpu_kmeans_cpu(x, n, d, nlist, &o, cent, &rep, err), err);
    CHECK_INT(rep.iterations, 10);
    const char *types[] = {"ivf_flat", "ivf_sq8"};
    for (int t = 0; t < 2; t++) {
        vindex_opts vo;
        vindex_opts_default(&vo);
        vo.type = types[t];
        vo.nprobe = 6;
        vo.nlist = nlist;
        vindex_centroids vc = {cent, nlist, d};
        char *dir = make_dir(), *dir2 = make_dir();
        vindex *v = NULL, *faiss = NULL;
        CHECK_OK(build(dir, &vo, x, n, d, &vc, &v, err), err);
        CHECK_OK(build(dir2, &vo, x, n, d, NULL, &faiss, err), err);
        vindex_info info;
        vindex_get_info(v, &info);
        CHECK_STR(info.type, types[t]);
        CHECK_INT(info.nlist, nlist);
        CHECK_OK(vindex_get_centroids(v, got, nlist, err), err);
        CHECK_MSG(max_abs_diff(got, cent, nlist * d) < 1e-6, "the quantizer does not hold our centroids");
        double ours = recall(v, x, n, q, nq, d, k), theirs = recall(faiss, x, n, q, nq, d, k);
        CHECK_MSG(ours >= 0.9 && ours >= theirs - 0.05, "%s recall@10: ours %.3f, FAISS-trained %.3f",
                  types[t], ours, theirs);
        vindex_close(v);
        vindex_close(faiss);
        remove_dir(dir);
        remove_dir(dir2);
    }
    free(x);
    free(cent);
    free(got);
}

/* ---- on a device --------------------------------------------------------------------------------- */

TEST(device_kmeans_and_assignment_match_cpu)
{
    NEED_DEVICE();
    char err[QR_ERR_LEN];
    const int d = 48;
    const size_t n = 20000, k = 100;
    float *x = clustered(n, d, 80, 0.4, 71, true);
    float *cc = malloc(k * d * sizeof(float)), *gc = malloc(k * d * sizeof(float)), half[100];
    int64_t *lc = malloc(n * sizeof(int64_t)), *lg = malloc(n * sizeof(int64_t));
    for (int m = 0; m < 2; m++) {
        gpu_kmeans_opts o;
        gpu_kmeans_opts_default(&o);
        o.metric = m ? GPU_METRIC_L2 : GPU_METRIC_IP;
        gpu_report rep;
        CHECK_OK(gpu_kmeans_cpu(x, n, d, k, &o, cc, NULL, err), err);
        CHECK_OK(gpu_kmeans(x, n, d, k, &o, gc, &rep, err), err);
        CHECK(rep.device[0] && rep.peak_device_bytes > 0 && rep.iterations == 10 && rep.resident);
        double oc, og;
        CHECK_OK(gpu_objective_cpu(x, n, d, cc, k, o.metric, &oc, err), err);
        CHECK_OK(gpu_objective_cpu(x, n, d, gc, k, o.metric, &og, err), err);
        CHECK_MSG(fabs(oc - og) <= 0.01 * fabs(oc), "objective: CPU %g, device %g", oc, og);
        gpu_half_norms(gc, k, d, half);
        gpu_assign_cpu(x, n, d, gc, k, o.metric, half, NULL, lc, NULL);
        CHECK_OK(gpu_assign(x, n, d, gc, k, o.metric, 0, lg, NULL, NULL, err), err);
        size_t same = 0;
        for (size_t i = 0; i < n; i++)
            same += lc[i] == lg[i];
        CHECK_MSG(same >= n * 99 / 100, "assignments agree on %zu of %zu rows", same, n);
    }
    free(x);
    free(cc);
    free(gc);
    free(lc);
    free(lg);
}

TEST(device_knn_is_exact)
{
    NEED_DEVICE();
    char err[QR_ERR_LEN];
    const int d = 40;
    const size_t nb = 30000, nq = 64;
    float *base = clustered(nb, d, 50, 0.4, 81, true), *q = clustered(nq, d, 50, 0.4, 82, true);
    int64_t *want = malloc(nq * 100 * sizeof(int64_t)), *got = malloc(nq * 100 * sizeof(int64_t));
    float *wsc = malloc(nq * 100 * sizeof(float)), *gsc = malloc(nq * 100 * sizeof(float));
    const size_t ks[] = {1, 10, 100};
    for (int m = 0; m < 2; m++)
        for (int t = 0; t < 3; t++) {
            gpu_metric metric = m ? GPU_METRIC_L2 : GPU_METRIC_IP;
            CHECK_OK(gpu_knn_cpu(base, nb, q, nq, d, ks[t], metric, want, wsc, err), err);
            /* the default budget, then one that streams the base rows in batches */
            for (int s = 0; s < 2; s++) {
                gpu_report rep;
                /* cuBLAS's 32 MiB workspace and room for half the rows */
                size_t budget = s ? ((size_t)32 << 20) + nb * d * sizeof(float) / 2 : 0;
                CHECK_OK(gpu_knn(base, nb, q, nq, d, ks[t], metric, budget, got, gsc, &rep, err), err);
                CHECK(s == 0 ? rep.resident : !rep.resident);
                CHECK(memcmp(got, want, nq * ks[t] * sizeof(int64_t)) == 0);
                CHECK(memcmp(gsc, wsc, nq * ks[t] * sizeof(float)) == 0);
            }
        }
    free(base);
    free(q);
    free(want);
    free(got);
    free(wsc);
    free(gsc);
}

TEST(device_streaming_matches_resident)
{
    NEED_DEVICE();
    char err[QR_ERR_LEN];
    const int d = 64;
    const size_t n = 50000, k = 200;
    float *x = clustered(n, d, 120, 0.4, 91, true);
    float *a = malloc(k * d * sizeof(float)), *b = malloc(k * d * sizeof(float));
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    o.niter = 4;
    gpu_report ra, rb;
    CHECK_OK(gpu_kmeans(x, n, d, k, &o, a, &ra, err), err);
    o.device_budget = ((size_t)32 << 20) + n * d * sizeof(float) / 2; /* workspace and half the rows */
    CHECK_OK(gpu_kmeans(x, n, d, k, &o, b, &rb, err), err);
    CHECK(ra.resident && !rb.resident && rb.batches > ra.batches && rb.peak_device_bytes <= o.device_budget);
    double oa, ob;
    CHECK_OK(gpu_objective_cpu(x, n, d, a, k, GPU_METRIC_IP, &oa, err), err);
    CHECK_OK(gpu_objective_cpu(x, n, d, b, k, GPU_METRIC_IP, &ob, err), err);
    CHECK_MSG(fabs(oa - ob) <= 1e-4 * fabs(oa), "objective resident %g, streamed %g", oa, ob);
    free(x);
    free(a);
    free(b);
}

TEST(device_train_centroids_builds_an_index)
{
    NEED_DEVICE();
    char err[QR_ERR_LEN];
    const int d = 32;
    const size_t n = 8000, nq = 40;
    /* raw (unnormalised) vectors, as the store may hold them */
    float *x = clustered(n + nq, d, 40, 0.35, 101, false);
    vindex_opts vo;
    vindex_opts_default(&vo);
    vo.type = "ivf_flat";
    vo.nprobe = 6;
    size_t nlist = 0;
    CHECK(index_gpu_wants_centroids(&vo, n, &nlist) && nlist > 1);
    float *cent = malloc(nlist * d * sizeof(float));
    index_gpu_report rep;
    CHECK_OK(index_gpu_train_centroids(x, n, d, nlist, 10, 1234, cent, &rep, err), err);
    CHECK(rep.iterations == 10 && rep.train_rows == n && rep.peak_device_bytes > 0 && rep.device[0]);
    vindex_centroids vc = {cent, nlist, d};
    char *dir = make_dir();
    vindex *v = NULL;
    CHECK_OK(build(dir, &vo, x, n, d, &vc, &v, err), err);
    float *xn = malloc((n + nq) * d * sizeof(float));
    memcpy(xn, x, (n + nq) * d * sizeof(float));
    for (size_t i = 0; i < n + nq; i++)
        normalize(xn + i * d, d);
    double r = recall(v, xn, n, xn + n * d, nq, d, 10);
    CHECK_MSG(r >= 0.9, "recall@10 %.3f", r);
    /* the same as the CPU reference's centroids from the same normalised rows */
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    float *cc = malloc(nlist * d * sizeof(float));
    double og, oc;
    CHECK_OK(gpu_kmeans_cpu(xn, n, d, nlist, &o, cc, NULL, err), err);
    CHECK_OK(gpu_objective_cpu(xn, n, d, cent, nlist, GPU_METRIC_IP, &og, err), err);
    CHECK_OK(gpu_objective_cpu(xn, n, d, cc, nlist, GPU_METRIC_IP, &oc, err), err);
    CHECK_MSG(fabs(og - oc) <= 0.01 * fabs(oc), "objective: device %g, CPU %g", og, oc);
    vindex_close(v);
    remove_dir(dir);
    free(x);
    free(xn);
    free(cent);
    free(cc);
}

/* Stores a document of nchunks chunks with the given vectors (one line of text per chunk). */
static qr_status store_rows(store *s, const char *doc_id, const float *vecs, size_t nchunks, int dim,
                            char *err)
{
    size_t cap = nchunks * 48 + 1, len = 0;
    char *text = malloc(cap);
    store_chunk *chunks = calloc(nchunks ? nchunks : 1, sizeof(*chunks));
    if (!text || !chunks) {
        free(text);
        free(chunks);
        return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < nchunks; i++) {
        chunks[i].start = len;
        len += (size_t)snprintf(text + len, cap - len, "%s chunk %zu words\n", doc_id, i);
        chunks[i].end = len - 1;
    }
    /* any 64 hex digits do: the documents differ by id */
    size_t h = 0;
    for (const char *c = doc_id; *c; c++)
        h = h * 131 + (unsigned char)*c;
    char hash[65];
    snprintf(hash, sizeof(hash), "%064zx", h);
    const char *acl[] = {"public"};
    store_document doc = {
        .doc_id = doc_id, .acl = acl, .nacl = 1, .content_hash = hash, .text = text, .text_len = len};
    store_put_result r;
    qr_status st = store_put(s, &doc, chunks, nchunks, vecs, dim, &r, err);
    free(text);
    free(chunks);
    return st;
}

TEST(device_build_leaves_out_unusable_rows)
{
    /* A store whose vectors include zero rows (texts the embedder has no word for): a build with
     * --gpu on trains the IVF centroids on the usable rows only and builds past the others. */
    NEED_DEVICE();
    char err[QR_ERR_LEN];
    const int d = 16;
    const size_t ndocs = 40, per = 100, n = ndocs * per;
    float *x = clustered(n, d, 20, 0.35, 401, false);
    size_t zeros = 0;
    for (size_t i = 5; i < n; i += 97, zeros++)
        memset(x + i * d, 0, d * sizeof(float));
    char *dir = make_dir();
    store *s = NULL;
    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_OK(store_check_embedding(s, "test-model", d, err), err);
    for (size_t i = 0; i < ndocs; i++) {
        char id[16];
        snprintf(id, sizeof(id), "doc-%zu", i);
        CHECK_OK(store_rows(s, id, x + i * per * d, per, d, err), err);
    }
    vindex_opts vo;
    vindex_opts_default(&vo);
    vo.type = "ivf_flat";
    vindex *v = NULL;
    index_sync_report rep;
    CHECK_OK(index_build_open(s, dir, &vo, INDEX_GPU_ON, &v, &rep, err), err);
    CHECK_MSG(rep.gpu_trained, "%s", rep.gpu_note);
    CHECK_INT(rep.count, n - zeros);
    CHECK_INT(rep.skipped, zeros);
    vindex_info info;
    vindex_get_info(v, &info);
    CHECK_STR(info.type, "ivf_flat");
    CHECK_INT(info.skipped, zeros);
    vindex_close(v);
    store_close(s);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    free(dir);
    free(x);
}
