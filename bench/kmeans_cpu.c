/*
 * CPU k-means timings for the [gpu-build] comparison: FAISS's own Clustering (what `quarry index
 * build --gpu off` runs inside IVF training) and the GPU path's CPU reference (index/gpu/kmeans.c)
 * on the same generated rows, with the objective of each (sum of the rows' inner products with
 * their nearest centroid) and how far the two sets of centroids are apart. bench/gpu_check.sh
 * measures the device on machines without FAISS; this measures FAISS where quarry is built.
 *
 * The data: unit rows around random unit centres plus uniform noise, as bench/gpu_check.c makes
 * them (same generator and seeds, so the same rows for the same sizes).
 *
 * Usage: bench_kmeans_cpu [--n N] [--dim D] [--nlist K] [--iters I] [--faiss-only 1]
 * (--faiss-only 1 skips the reference, which is several times slower without BLAS.) Set OPENBLAS_CORETYPE for
 * the CPU (see the warning FAISS's BLAS check prints) before timing.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "index/gpu/gpu.h"

static uint64_t mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

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

int main(int argc, char **argv)
{
    size_t n = 1000000, k = 4096, ncentres = 2000;
    int d = 384, iters = 1, faiss_only = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--n") == 0)
            n = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--dim") == 0)
            d = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--nlist") == 0)
            k = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--iters") == 0)
            iters = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--faiss-only") == 0)
            faiss_only = atoi(argv[i + 1]);
        else {
            fprintf(stderr,
                    "usage: bench_kmeans_cpu [--n N] [--dim D] [--nlist K] [--iters I] [--faiss-only 1]\n");
            return 2;
        }
    }
    char err[QR_ERR_LEN];
    float *c = malloc(ncentres * (size_t)d * sizeof(float)), *x = malloc(n * (size_t)d * sizeof(float));
    float *ours = malloc(k * (size_t)d * sizeof(float)), *faiss = malloc(k * (size_t)d * sizeof(float));
    if (!c || !x || !ours || !faiss)
        return 1;
    for (size_t i = 0; i < ncentres; i++) {
        uint64_t s = mix(11 ^ (i * 0x632be59bd9b4e019ull));
        for (int j = 0; j < d; j++)
            c[i * (size_t)d + j] = unif(&s);
        normalize(c + i * (size_t)d, d);
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t s = mix(1 ^ (i * 0x9e3779b97f4a7c15ull));
        s = mix(s);
        const float *centre = c + (s % ncentres) * (size_t)d;
        for (int j = 0; j < d; j++)
            x[i * (size_t)d + j] = centre[j] + 0.08f * unif(&s);
        normalize(x + i * (size_t)d, d);
    }
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    o.niter = iters;
    double t_faiss = 0, obj_f = 0, obj_o = 0;
    gpu_report rep = {0};
    if (gpu_kmeans_faiss(x, n, d, k, &o, faiss, &t_faiss, err) ||
        (!faiss_only && gpu_kmeans_cpu(x, n, d, k, &o, ours, &rep, err)) ||
        gpu_objective_cpu(x, n, d, faiss, k, GPU_METRIC_IP, &obj_f, err) ||
        (!faiss_only && gpu_objective_cpu(x, n, d, ours, k, GPU_METRIC_IP, &obj_o, err))) {
        fprintf(stderr, "bench_kmeans_cpu: %s\n", err);
        return 1;
    }
    double diff = 0;
    for (size_t i = 0; i < k * (size_t)d; i++)
        diff = fmax(diff, fabs((double)ours[i] - faiss[i]));
    printf("| k-means (%zu x %d, nlist %zu, %d iterations) | seconds | seconds per iteration | objective |\n",
           n, d, k, iters);
    printf("|---|---|---|---|\n");
    printf("| FAISS Clustering (OpenBLAS) | %.2f | %.2f | %.6g |\n", t_faiss, t_faiss / iters, obj_f);
    if (!faiss_only) {
        printf("| CPU reference (index/gpu/kmeans.c) | %.2f | %.2f | %.6g |\n", rep.seconds,
               rep.seconds / iters, obj_o);
        printf("\ncentroids: max abs difference %.3g, %zu empty clusters split by the reference\n", diff,
               rep.splits);
    }
    free(c);
    free(x);
    free(ours);
    free(faiss);
    return 0;
}
