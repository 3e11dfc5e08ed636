/*
 * FAISS's own CPU k-means, run through its C API with the parameters the GPU path replays: the
 * yardstick that tests/test_gpu.c holds the CPU reference (kmeans.c) to, and what a build
 * without a GPU runs anyway (inside FAISS's IVF training). It needs FAISS, so it is part of
 * quarry_index, not of quarry_gpu (which bench/gpu_check.sh builds without FAISS).
 */
#include <faiss/c_api/Clustering_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <limits.h>
#include <string.h>

#include "index/gpu/gpu.h"

qr_status gpu_kmeans_faiss(const float *x, size_t n, int dim, size_t k, const gpu_kmeans_opts *o,
                           float *centroids, double *seconds, char *err)
{
    if (!x || !centroids || !o || dim < 1 || k == 0 || k > INT_MAX || n < k || o->niter < 1)
        return qr_fail(err, QR_EINVAL, "FAISS k-means: bad arguments");
    FaissClusteringParameters cp;
    faiss_ClusteringParameters_init(&cp);
    cp.niter = o->niter;
    cp.seed = o->seed;
    cp.spherical = o->metric == GPU_METRIC_IP;
    cp.min_points_per_centroid = 1; /* no warning for small tests */
    cp.max_points_per_centroid = o->max_points_per_centroid && o->max_points_per_centroid < INT_MAX
                                     ? (int)o->max_points_per_centroid
                                     : INT_MAX;
    FaissClustering *clus = NULL;
    FaissIndexFlat *index = NULL;
    qr_status st = QR_OK;
    uint64_t t0 = qr_now_ns();
    int rc = faiss_Clustering_new_with_params(&clus, dim, (int)k, &cp);
    if (rc == 0)
        rc = o->metric == GPU_METRIC_IP ? faiss_IndexFlatIP_new_with((FaissIndexFlatIP **)&index, dim)
                                        : faiss_IndexFlatL2_new_with((FaissIndexFlatL2 **)&index, dim);
    if (rc == 0)
        rc = faiss_Clustering_train(clus, (idx_t)n, x, index);
    if (rc != 0) {
        const char *msg = faiss_get_last_error();
        st =
            qr_fail(err, QR_EINTERNAL, "FAISS k-means failed: %s", msg && *msg ? msg : "unknown FAISS error");
        goto out;
    }
    float *c = NULL;
    size_t size = 0;
    faiss_Clustering_centroids(clus, &c, &size);
    if (size != k * (size_t)dim) {
        st = qr_fail(err, QR_EINTERNAL, "FAISS k-means returned %zu values, expected %zu", size,
                     k * (size_t)dim);
        goto out;
    }
    memcpy(centroids, c, size * sizeof(float));
    if (seconds)
        *seconds = (double)(qr_now_ns() - t0) / 1e9;
out:
    faiss_Index_free(index);
    faiss_Clustering_free(clus);
    return st;
}
