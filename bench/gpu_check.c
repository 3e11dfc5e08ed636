/*
 * GPU check for the [gpu-build] path: correctness of the device's k-means, assignment and exact
 * top-k against the CPU reference of the same steps (index/gpu/kmeans.c), then timings at scale,
 * as markdown tables. bench/gpu_check.sh builds it with nvcc and cc alone (no SQLite, FAISS or
 * BLAS), so it runs on a bare device machine; CMake builds it too, so that it never rots.
 *
 * Correctness (each line says PASS or FAIL; any FAIL makes the exit status 1):
 *   - k-means (IP, spherical, and L2): the objective of the device's centroids within 1% of the
 *     CPU reference's, both evaluated by the CPU on the same rows; same initial centroids.
 *   - assignment: device and CPU labels for the same centroids agree on >= 99% of the rows.
 *   - streaming: a budget too small for the rows gives the resident run's results.
 *   - top-k: the device's exact top k equals the CPU's double-precision scan, id for id.
 * Timings: k-means, assignment and top-k at --n rows (default 1M x 384, nlist 4096, 10,000
 * queries), with the peak device memory of each call; the CPU reference (OpenMP, every core)
 * for one k-means iteration, the assignment and 100 top-k queries.
 *
 * The data: unit rows around random unit centres (uniform noise), clustered like embeddings
 * enough for k-means to have structure; queries come from the same process and are not rows.
 *
 * Usage: gpu_check [--tiny] [--n N] [--dim D] [--nlist K] [--queries Q] [--iters I]
 * Without a device it runs the CPU reference parts, says so, and exits 77.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/core.h"
#include "index/gpu/gpu.h"

typedef struct {
    size_t n;       /* timing rows */
    int dim;        /* dimension of every data set */
    size_t nlist;   /* timing clusters */
    size_t queries; /* timed top-k queries */
    int iters;      /* k-means iterations */
    size_t check_n; /* correctness rows */
    size_t check_k; /* correctness clusters */
    size_t check_q; /* top-k correctness queries */
    size_t centres; /* true clusters in the generated data */
} sizes;

static int failures;
static double cpu_knn_seconds; /* the correctness top-k scan on the CPU */

static void verdict(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void verdict(bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", ok ? "PASS" : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (!ok)
        failures++;
}

static uint64_t mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [-1, 1) from a counter-based stream, so rows do not depend on the thread count */
static float unif(uint64_t *s)
{
    *s = mix(*s);
    return (float)((double)(*s >> 40) / 8388608.0 - 1.0);
}

static void normalize(float *row, int d)
{
    double s = 0;
    for (int j = 0; j < d; j++)
        s += (double)row[j] * row[j];
    float inv = (float)(1.0 / sqrt(s));
    for (int j = 0; j < d; j++)
        row[j] *= inv;
}

static float *make_centres(size_t n, int d, uint64_t seed)
{
    float *c = malloc(n * (size_t)d * sizeof(float));
    if (!c)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        uint64_t s = mix(seed ^ (i * 0x632be59bd9b4e019ull));
        for (int j = 0; j < d; j++)
            c[i * (size_t)d + j] = unif(&s);
        normalize(c + i * (size_t)d, d);
    }
    return c;
}

/* n unit rows, each a random centre plus uniform noise of amplitude sigma per coordinate */
static float *make_rows(size_t n, int d, const float *centres, size_t ncentres, float sigma, uint64_t seed)
{
    float *x = malloc(n * (size_t)d * sizeof(float));
    if (!x)
        return NULL;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (size_t i = 0; i < n; i++) {
        uint64_t s = mix(seed ^ (i * 0x9e3779b97f4a7c15ull));
        s = mix(s);
        const float *c = centres + (s % ncentres) * (size_t)d;
        float *row = x + i * (size_t)d;
        for (int j = 0; j < d; j++)
            row[j] = c[j] + sigma * unif(&s);
        normalize(row, d);
    }
    return x;
}

static double agreement(const int64_t *a, const int64_t *b, size_t n)
{
    size_t same = 0;
    for (size_t i = 0; i < n; i++)
        same += a[i] == b[i];
    return (double)same / (double)n;
}

/* Disagreements whose two centroids score within 1e-5 of each other (in double) for the row:
 * float rounding, not a wrong kernel. */
static size_t near_ties(const float *x, size_t n, int d, const float *c, const int64_t *a, const int64_t *b,
                        gpu_metric m)
{
    size_t ties = 0;
    for (size_t i = 0; i < n; i++) {
        if (a[i] == b[i])
            continue;
        const float *row = x + i * (size_t)d;
        double sa = gpu_exact_score(row, c + (size_t)a[i] * (size_t)d, d, m);
        double sb = gpu_exact_score(row, c + (size_t)b[i] * (size_t)d, d, m);
        ties += fabs(sa - sb) <= 1e-5;
    }
    return ties;
}

static double mib(size_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

static int threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- correctness ---------------------------------------------------------------------------- */

/* k-means on the device and on the CPU from the same seed; objective and assignment checks. */
static int check_kmeans(const float *x, size_t n, int d, size_t k, int iters, gpu_metric m, bool device)
{
    char err[QR_ERR_LEN];
    const char *name = m == GPU_METRIC_IP ? "IP (spherical)" : "L2";
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    o.metric = m;
    o.niter = iters;
    float *cc = malloc(k * (size_t)d * sizeof(float)), *gc = malloc(k * (size_t)d * sizeof(float));
    int64_t *lg = malloc(n * sizeof(int64_t)), *lc = malloc(n * sizeof(int64_t));
    float *half = malloc(k * sizeof(float));
    gpu_report cr = {0}, gr = {0};
    int rc = 1;
    if (!cc || !gc || !lg || !lc || !half)
        goto out;
    if (gpu_kmeans_cpu(x, n, d, k, &o, cc, &cr, err)) {
        fprintf(stderr, "cpu k-means: %s\n", err);
        goto out;
    }
    double obj_c = 0, obj_g = 0;
    if (gpu_objective_cpu(x, n, d, cc, k, m, &obj_c, err))
        goto out;
    printf(
        "k-means %s, %zu x %d, k %zu, %d iterations: CPU %.2f s (%d threads), objective %.6g, %zu splits\n",
        name, n, d, k, iters, cr.seconds, threads(), obj_c, cr.splits);
    if (!device) {
        rc = 0;
        goto out;
    }
    if (gpu_kmeans(x, n, d, k, &o, gc, &gr, err)) {
        fprintf(stderr, "gpu k-means: %s\n", err);
        failures++;
        goto out;
    }
    if (gpu_objective_cpu(x, n, d, gc, k, m, &obj_g, err))
        goto out;
    double maxdiff = 0;
    size_t same_rows = 0;
    for (size_t j = 0; j < k; j++) {
        bool same = true;
        for (int t = 0; t < d; t++) {
            double diff = fabs((double)cc[j * (size_t)d + t] - gc[j * (size_t)d + t]);
            maxdiff = diff > maxdiff ? diff : maxdiff;
            same = same && diff == 0;
        }
        same_rows += same;
    }
    printf("k-means %s on %s: %.2f s, objective %.6g, %zu splits; centroids bit-identical to the CPU's: %zu "
           "of %zu "
           "(max abs diff %.3g)\n",
           name, gr.device, gr.seconds, obj_g, gr.splits, same_rows, k, maxdiff);
    double rel = fabs(obj_g - obj_c) / fabs(obj_c);
    verdict(rel <= 0.01,
            "k-means %s objective: device %.6g vs CPU %.6g (relative difference %.2e, limit 1e-2)", name,
            obj_g, obj_c, rel);
    /* assignment of the same rows to the same (device) centroids on both sides */
    gpu_half_norms(gc, k, d, half);
    gpu_assign_cpu(x, n, d, gc, k, m, half, NULL, lc, NULL);
    if (gpu_assign(x, n, d, gc, k, m, 0, lg, NULL, NULL, err)) {
        fprintf(stderr, "gpu assign: %s\n", err);
        failures++;
        goto out;
    }
    double agree = agreement(lg, lc, n);
    verdict(agree >= 0.99,
            "assignment %s: device and CPU agree on %.4f%% of %zu rows (%zu of the %zu others are near-ties)",
            name, 100 * agree, n, near_ties(x, n, d, gc, lg, lc, m), (size_t)((1 - agree) * (double)n + 0.5));
    rc = 0;
out:
    free(cc);
    free(gc);
    free(lg);
    free(lc);
    free(half);
    return rc;
}

/* The same k-means and assignment with a budget that forces streaming: results as resident. */
static int check_streaming(const float *x, size_t n, int d, size_t k, int iters)
{
    char err[QR_ERR_LEN];
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    o.niter = iters;
    float *a = malloc(k * (size_t)d * sizeof(float)), *b = malloc(k * (size_t)d * sizeof(float));
    int64_t *la = malloc(n * sizeof(int64_t)), *lb = malloc(n * sizeof(int64_t));
    gpu_report ra = {0}, rb = {0}, rl = {0};
    int rc = 1;
    if (!a || !b || !la || !lb)
        goto out;
    if (gpu_kmeans(x, n, d, k, &o, a, &ra, err))
        goto fail;
    /* cuBLAS's 32 MiB workspace and room for half the rows: the rows cannot stay resident */
    o.device_budget = ((size_t)32 << 20) + n * (size_t)d * sizeof(float) / 2;
    if (gpu_kmeans(x, n, d, k, &o, b, &rb, err))
        goto fail;
    double oa = 0, ob = 0;
    if (gpu_objective_cpu(x, n, d, a, k, GPU_METRIC_IP, &oa, err) ||
        gpu_objective_cpu(x, n, d, b, k, GPU_METRIC_IP, &ob, err))
        goto fail;
    size_t same = 0;
    for (size_t i = 0; i < k * (size_t)d; i++)
        same += a[i] == b[i];
    verdict(ra.resident && !rb.resident && rb.batches > (size_t)iters &&
                rb.peak_device_bytes <= o.device_budget && fabs(oa - ob) <= 1e-4 * fabs(oa),
            "streamed k-means (budget %.0f MiB, %zu batches of %zu rows, peak %.0f MiB) vs resident (peak "
            "%.0f MiB): "
            "objective %.8g vs %.8g, %.4f%% of centroid values bit-identical",
            mib(o.device_budget), rb.batches, rb.batch_rows, mib(rb.peak_device_bytes),
            mib(ra.peak_device_bytes), ob, oa, 100.0 * (double)same / (double)(k * (size_t)d));
    if (gpu_assign(x, n, d, a, k, GPU_METRIC_IP, 0, la, NULL, NULL, err) ||
        gpu_assign(x, n, d, a, k, GPU_METRIC_IP, o.device_budget, lb, NULL, &rl, err))
        goto fail;
    double agree = agreement(la, lb, n);
    verdict(!rl.resident && agree >= 0.9999, "streamed assignment (%zu batches) vs resident: %.4f%% agree",
            rl.batches, 100 * agree);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "streaming check: %s\n", err);
    failures++;
out:
    free(a);
    free(b);
    free(la);
    free(lb);
    return rc;
}

static bool same_topk(const int64_t *a, const float *as, const int64_t *b, const float *bs, size_t nq,
                      size_t k, size_t ka, size_t kb, size_t *bad)
{
    *bad = 0;
    for (size_t q = 0; q < nq; q++)
        for (size_t i = 0; i < k; i++)
            if (a[q * ka + i] != b[q * kb + i] || as[q * ka + i] != bs[q * kb + i]) {
                (*bad)++;
                break;
            }
    return *bad == 0;
}

/* Device top-k against the CPU's exact scan: ids and scores identical. cpu_ids/cpu_scores hold
 * the CPU's top kmax per query; smaller k are their prefixes. */
static void check_knn(const float *base, size_t nb, const float *q, size_t nq, int d, gpu_metric m,
                      const int64_t *cpu_ids, const float *cpu_scores, size_t kmax, const size_t *ks, int nks,
                      size_t budget, const char *what)
{
    char err[QR_ERR_LEN];
    int64_t *ids = malloc(nq * kmax * sizeof(int64_t));
    float *sc = malloc(nq * kmax * sizeof(float));
    if (!ids || !sc) {
        failures++;
        goto out;
    }
    for (int t = 0; t < nks; t++) {
        gpu_report r = {0};
        size_t bad = 0;
        if (gpu_knn(base, nb, q, nq, d, ks[t], m, budget, ids, sc, &r, err)) {
            fprintf(stderr, "gpu top-k: %s\n", err);
            failures++;
            goto out;
        }
        bool ok = same_topk(ids, sc, cpu_ids, cpu_scores, nq, ks[t], ks[t], kmax, &bad);
        verdict(
            ok,
            "top-%zu %s%s over %zu rows, %zu queries: %zu lists differ from the CPU's exact scan (%s, %zu "
            "batches)",
            ks[t], m == GPU_METRIC_IP ? "IP" : "L2", what, nb, nq, bad, r.resident ? "resident" : "streamed",
            r.batches);
    }
out:
    free(ids);
    free(sc);
}

/* ---- timings -------------------------------------------------------------------------------- */

static void row(const char *step, const char *where, const gpu_report *r, double seconds, const char *note)
{
    if (r && r->batch_rows)
        printf("| %s | %s | %s | %zu | %zu | %.0f | %.3f | %s |\n", step, where,
               r->resident ? "resident" : "streamed", r->batch_rows, r->batches, mib(r->peak_device_bytes),
               seconds, note);
    else
        printf("| %s | %s | - | - | - | - | %.3f | %s |\n", step, where, seconds, note);
}

static int timings(const sizes *z, const float *x, const float *queries, bool device)
{
    char err[QR_ERR_LEN], note[160];
    size_t n = z->n, k = z->nlist, d = (size_t)z->dim;
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    o.niter = z->iters;
    float *gc = malloc(k * d * sizeof(float)), *cc = malloc(k * d * sizeof(float));
    float *half = malloc(k * sizeof(float));
    int64_t *lg = malloc(n * sizeof(int64_t)), *lc = malloc(n * sizeof(int64_t));
    int64_t *ids = malloc(z->queries * 10 * sizeof(int64_t));
    float *sc = malloc(z->queries * 10 * sizeof(float));
    gpu_report r = {0};
    int rc = 1;
    if (!gc || !cc || !half || !lg || !lc || !ids || !sc)
        goto out;
    printf("\nTimings: %zu x %zu rows, nlist %zu, %d k-means iterations, top-10 of %zu queries; CPU with %d "
           "threads\n\n",
           n, d, k, z->iters, z->queries, threads());
    printf("| step | where | rows | batch rows | batches | peak device MiB | seconds | note |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    if (device) {
        if (gpu_kmeans(x, n, z->dim, k, &o, gc, &r, err))
            goto fail;
        snprintf(note, sizeof(note), "%.3f s per iteration incl. upload; %zu splits; %zu training rows",
                 r.seconds / z->iters, r.splits, r.train_rows);
        row("k-means", r.device, &r, r.seconds, note);
        /* the same with a quarter of the rows' size as budget: streamed every iteration */
        gpu_kmeans_opts so = o;
        so.device_budget = ((size_t)32 << 20) + n * d * sizeof(float) / 4;
        if (gpu_kmeans(x, n, z->dim, k, &so, cc, &r, err))
            goto fail;
        snprintf(note, sizeof(note), "budget %.0f MiB (cuBLAS workspace + a quarter of the rows)",
                 mib(so.device_budget));
        row("k-means, streamed", r.device, &r, r.seconds, note);
        if (gpu_assign(x, n, z->dim, gc, k, GPU_METRIC_IP, 0, lg, NULL, &r, err))
            goto fail;
        row("assignment", r.device, &r, r.seconds, "every row to its nearest of nlist centroids");
        if (gpu_knn(x, n, queries, z->queries, z->dim, 10, GPU_METRIC_IP, 0, ids, sc, &r, err))
            goto fail;
        snprintf(note, sizeof(note), "%.1f us per query; exact (host rescoring included)",
                 r.seconds * 1e6 / (double)z->queries);
        row("top-10", r.device, &r, r.seconds, note);
    }
    /* CPU reference: one iteration of k-means, the assignment, 100 top-k queries */
    char where[32];
    snprintf(where, sizeof(where), "CPU, %d threads", threads());
    gpu_kmeans_opts one = o;
    one.niter = 1;
    uint64_t t0 = qr_now_ns();
    if (gpu_kmeans_cpu(x, n, z->dim, k, &one, cc, &r, err))
        goto fail;
    row("k-means, 1 iteration", where, NULL, (double)(qr_now_ns() - t0) / 1e9, "reference (no BLAS)");
    const float *cent = device ? gc : cc;
    gpu_half_norms(cent, k, z->dim, half);
    t0 = qr_now_ns();
    gpu_assign_cpu(x, n, z->dim, cent, k, GPU_METRIC_IP, half, NULL, lc, NULL);
    row("assignment", where, NULL, (double)(qr_now_ns() - t0) / 1e9, "reference (no BLAS)");
    snprintf(note, sizeof(note), "%zu queries (the correctness scan), double precision", z->check_q);
    row("top-100", where, NULL, cpu_knn_seconds, note);
    printf("\n");
    if (device) {
        double agree = agreement(lg, lc, n);
        verdict(agree >= 0.99,
                "assignment at scale: device and CPU agree on %.4f%% of %zu rows (%zu near-ties among "
                "the others)",
                100 * agree, n, near_ties(x, n, z->dim, gc, lg, lc, GPU_METRIC_IP));
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "timings: %s\n", err);
    failures++;
out:
    free(gc);
    free(cc);
    free(half);
    free(lg);
    free(lc);
    free(ids);
    free(sc);
    return rc;
}

static size_t arg_size(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "%s needs a value\n", argv[*i]);
        exit(2);
    }
    return (size_t)strtoull(argv[++*i], NULL, 10);
}

int main(int argc, char **argv)
{
    sizes z = {1000000, 384, 4096, 10000, 10, 100000, 1024, 100, 2000};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tiny") == 0)
            z = (sizes){20000, 64, 128, 200, 10, 8000, 64, 50, 100};
        else if (strcmp(argv[i], "--n") == 0)
            z.n = arg_size(argc, argv, &i);
        else if (strcmp(argv[i], "--dim") == 0)
            z.dim = (int)arg_size(argc, argv, &i);
        else if (strcmp(argv[i], "--nlist") == 0)
            z.nlist = arg_size(argc, argv, &i);
        else if (strcmp(argv[i], "--queries") == 0)
            z.queries = arg_size(argc, argv, &i);
        else if (strcmp(argv[i], "--iters") == 0)
            z.iters = (int)arg_size(argc, argv, &i);
        else {
            fprintf(stderr,
                    "usage: gpu_check [--tiny] [--n N] [--dim D] [--nlist K] [--queries Q] [--iters I]\n");
            return 2;
        }
    }
    char err[QR_ERR_LEN] = "";
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines reach a log file even if the run is cut short */
    int devices = gpu_device_count();
    bool device = devices > 0 && gpu_blas_load(err) == QR_OK;
    printf("CUDA %s, %d device(s)%s%s; CPU reference with %d threads\n\n",
           gpu_compiled() ? gpu_cuda_version() : "-", devices, device ? "" : ": ",
           device ? "" : (err[0] ? err : "no device, CPU parts only"), threads());
    uint64_t t0 = qr_now_ns();
    float *centres = make_centres(z.centres, z.dim, 11);
    float *x = centres ? make_rows(z.n, z.dim, centres, z.centres, 0.08f, 1) : NULL;
    float *queries = centres ? make_rows(z.queries, z.dim, centres, z.centres, 0.08f, 2) : NULL;
    if (!x || !queries) {
        fprintf(stderr, "out of memory generating %zu rows\n", z.n);
        return 1;
    }
    /* the correctness rows are the first check_n timing rows: same process, smaller */
    size_t cn = z.check_n < z.n ? z.check_n : z.n;
    printf("data: %zu + %zu rows of %d generated in %.1f s\n\n", z.n, z.queries, z.dim,
           (double)(qr_now_ns() - t0) / 1e9);

    printf("Correctness\n\n");
    if (check_kmeans(x, cn, z.dim, z.check_k, z.iters, GPU_METRIC_IP, device) ||
        check_kmeans(x, cn / 2, z.dim, z.check_k / 4, z.iters, GPU_METRIC_L2, device))
        failures++;
    if (device && check_streaming(x, cn, z.dim, z.check_k, 3))
        failures++;
    /* top-k: the CPU's exact top 100 (or fewer) once; smaller k are its prefixes */
    size_t kmax = z.n < 100 ? z.n : 100, nq = z.check_q < z.queries ? z.check_q : z.queries;
    int64_t *cids = malloc(nq * kmax * sizeof(int64_t));
    float *csc = malloc(nq * kmax * sizeof(float));
    if (!cids || !csc)
        return 1;
    t0 = qr_now_ns();
    if (gpu_knn_cpu(x, z.n, queries, nq, z.dim, kmax, GPU_METRIC_IP, cids, csc, err)) {
        fprintf(stderr, "cpu top-k: %s\n", err);
        return 1;
    }
    cpu_knn_seconds = (double)(qr_now_ns() - t0) / 1e9;
    printf("top-%zu IP on the CPU: %zu queries over %zu rows in %.2f s\n", kmax, nq, z.n, cpu_knn_seconds);
    if (device) {
        const size_t ks[] = {1, 10, kmax};
        check_knn(x, z.n, queries, nq, z.dim, GPU_METRIC_IP, cids, csc, kmax, ks, 3, 0, "");
        /* streamed: cuBLAS's workspace and room for an eighth of the rows */
        check_knn(x, z.n, queries, nq, z.dim, GPU_METRIC_IP, cids, csc, kmax, ks + 1, 1,
                  ((size_t)32 << 20) + z.n * (size_t)z.dim * sizeof(float) / 8, ", streamed");
    }
    /* L2 on the correctness rows */
    if (gpu_knn_cpu(x, cn, queries, nq, z.dim, 10, GPU_METRIC_L2, cids, csc, err)) {
        fprintf(stderr, "cpu top-k: %s\n", err);
        return 1;
    }
    if (device) {
        const size_t k10[] = {10};
        check_knn(x, cn, queries, nq, z.dim, GPU_METRIC_L2, cids, csc, 10, k10, 1, 0, "");
    }
    free(cids);
    free(csc);

    if (timings(&z, x, queries, device))
        failures++;
    free(centres);
    free(x);
    free(queries);
    if (!device) {
        printf("no CUDA device: the device checks did not run\n");
        return 77;
    }
    printf("%s\n",
           failures ? "FAIL: the device disagrees with the CPU reference" : "ok: every device check passed");
    return failures ? 1 : 0;
}
