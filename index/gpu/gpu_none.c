/*
 * The GPU path when quarry is built without CUDA: no devices, and a clear error for any call
 * that would need one. The host side (kmeans.c: the CPU reference, FAISS's random choices, the
 * memory planner) is compiled either way.
 */
#include "index/gpu/gpu.h"

#define NOT_COMPILED "quarry was built without CUDA (QUARRY_CUDA=OFF or no nvcc/cuBLAS)"

bool gpu_compiled(void)
{
    return false;
}

int gpu_device_count(void)
{
    return 0;
}

const char *gpu_cuda_version(void)
{
    return "";
}

qr_status gpu_l2_normalize(float *rows, size_t n, size_t d, char *err)
{
    (void)rows;
    (void)n;
    (void)d;
    return qr_fail(err, QR_EUNAVAILABLE, NOT_COMPILED);
}

qr_status gpu_blas_load(char *err)
{
    return qr_fail(err, QR_EUNAVAILABLE, NOT_COMPILED);
}

qr_status gpu_kmeans(const float *x, size_t n, int dim, size_t k, const gpu_kmeans_opts *opts,
                     float *centroids, gpu_report *rep, char *err)
{
    (void)x;
    (void)n;
    (void)dim;
    (void)k;
    (void)opts;
    (void)centroids;
    (void)rep;
    return qr_fail(err, QR_EUNAVAILABLE, NOT_COMPILED);
}

qr_status gpu_assign(const float *x, size_t n, int dim, const float *centroids, size_t k, gpu_metric metric,
                     size_t budget, int64_t *labels, float *dist, gpu_report *rep, char *err)
{
    (void)x;
    (void)n;
    (void)dim;
    (void)centroids;
    (void)k;
    (void)metric;
    (void)budget;
    (void)labels;
    (void)dist;
    (void)rep;
    return qr_fail(err, QR_EUNAVAILABLE, NOT_COMPILED);
}

qr_status gpu_knn(const float *base, size_t nb, const float *queries, size_t nq, int dim, size_t k,
                  gpu_metric metric, size_t budget, int64_t *ids, float *scores, gpu_report *rep, char *err)
{
    (void)base;
    (void)nb;
    (void)queries;
    (void)nq;
    (void)dim;
    (void)k;
    (void)metric;
    (void)budget;
    (void)ids;
    (void)scores;
    (void)rep;
    return qr_fail(err, QR_EUNAVAILABLE, NOT_COMPILED);
}
