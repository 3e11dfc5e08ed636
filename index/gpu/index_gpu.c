/*
 * The GPU build path as the rest of quarry sees it (the index_gpu_* block of index/vector.h):
 * whether a GPU can be used here, whether a build will want centroids, and the calls that train
 * IVF centroids and find exact top k on the device. Arguments are checked here, before anything
 * touches a device, so that bad input gets the same answer with or without one.
 *
 * index_gpu_wants_centroids asks vindex_plan.c, which vindex_build.c also asks, for the index type
 * and list count; both files are in quarry_gpu, so the GPU path needs nothing of quarry_index
 * (which links quarry_gpu). tests/test_gpu.c builds indexes to check that the two agree.
 */
#include <stdlib.h>
#include <string.h>

#include "index/gpu/gpu.h"
#include "index/vector.h"
#include "index/vindex_int.h"

#define MAX_ITERATIONS 1000

qr_status index_gpu_check(char *err)
{
    if (!gpu_compiled())
        return qr_fail(
            err, QR_EUNAVAILABLE,
            "this quarry was built without the CUDA path (QUARRY_CUDA=OFF, or no nvcc/cuBLAS at build time)");
    if (gpu_device_count() == 0)
        return qr_fail(err, QR_EUNAVAILABLE, "no CUDA device is visible (driver missing, or no GPU)");
    return gpu_blas_load(err);
}

bool index_gpu_available(void)
{
    return index_gpu_check(NULL) == QR_OK;
}

bool index_gpu_wants_centroids(const vindex_opts *o, size_t n, size_t *nlist)
{
    return vindex_plan_ivf(o, n, nlist);
}

static void copy_report(index_gpu_report *out, const gpu_report *in, uint64_t t0)
{
    if (!out)
        return;
    memset(out, 0, sizeof(*out));
    memcpy(out->device, in->device, sizeof(out->device));
    out->train_rows = in->train_rows;
    out->iterations = in->iterations;
    out->splits = in->splits;
    out->objective = in->objective;
    out->resident = in->resident;
    out->batch_rows = in->batch_rows;
    out->batches = in->batches;
    out->peak_device_bytes = in->peak_device_bytes;
    out->seconds = (double)(qr_now_ns() - t0) / 1e9;
}

qr_status index_gpu_train_centroids(const float *vecs, size_t n, int dim, size_t nlist, int iterations,
                                    uint64_t seed, float *centroids_out, index_gpu_report *report, char *err)
{
    uint64_t t0 = qr_now_ns();
    if (!vecs || !centroids_out)
        return qr_fail(err, QR_EINVAL, "GPU training: missing vectors or output");
    if (dim < 1 || dim > VINDEX_DIM_MAX)
        return qr_fail(err, QR_EINVAL, "GPU training: dimension must be 1..%d (got %d)", VINDEX_DIM_MAX, dim);
    if (nlist == 0 || n < nlist)
        return qr_fail(err, QR_EINVAL, "GPU training: %zu vectors cannot make %zu lists", n, nlist);
    if (iterations < 1 || iterations > MAX_ITERATIONS)
        return qr_fail(err, QR_EINVAL, "GPU training: iterations must be 1..%d (got %d)", MAX_ITERATIONS,
                       iterations);
    qr_status st = index_gpu_check(err);
    if (st)
        return st;
    gpu_kmeans_opts o;
    gpu_kmeans_opts_default(&o);
    o.niter = iterations;
    o.seed = (int)(seed & 0x7fffffff);
    size_t *rows = NULL, nx = 0, d = (size_t)dim;
    float *train = NULL;
    gpu_report rep = {0};
    if ((st = gpu_kmeans_sample(n, nlist, o.max_points_per_centroid, o.seed, &rows, &nx, err)))
        goto out;
    if (!(train = malloc(nx * d * sizeof(float)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for %zu training vectors", nx);
        goto out;
    }
    for (size_t i = 0; i < nx; i++) {
        size_t row = rows ? rows[i] : i;
        if (!vindex_normalize_row(vecs + row * d, train + i * d, dim)) {
            st = qr_fail(err, QR_EINVAL, "GPU training: vector %zu is zero or not finite", row);
            goto out;
        }
    }
    /* the sample is already FAISS's: no second subsampling */
    o.max_points_per_centroid = 0;
    if ((st = gpu_kmeans(train, nx, dim, nlist, &o, centroids_out, &rep, err)))
        goto out;
    copy_report(report, &rep, t0);
out:
    free(rows);
    free(train);
    return st;
}

qr_status index_gpu_knn(const float *base, size_t nb, const float *queries, size_t nq, int dim, size_t k,
                        int64_t *ids, float *scores, index_gpu_report *report, char *err)
{
    uint64_t t0 = qr_now_ns();
    if (!base || !queries || !ids || !scores || nq == 0 || dim < 1)
        return qr_fail(err, QR_EINVAL, "GPU top-k: missing base rows, queries or outputs");
    if (k < 1 || k > nb || k > GPU_KNN_K_MAX)
        return qr_fail(err, QR_EINVAL, "GPU top-k: k must be 1..%d and at most the %zu base rows (got %zu)",
                       GPU_KNN_K_MAX, nb, k);
    qr_status st = index_gpu_check(err);
    if (st)
        return st;
    gpu_report rep = {0};
    if ((st = gpu_knn(base, nb, queries, nq, dim, k, GPU_METRIC_IP, 0, ids, scores, &rep, err)))
        return st;
    copy_report(report, &rep, t0);
    return QR_OK;
}
