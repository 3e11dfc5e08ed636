/*
 * Private to index/: pieces of the vector index that other parts of the module (the GPU build
 * path under gpu/) and the index tests need, but that retrieval and the CLI must not call.
 *
 * vindex_kmeans is the CPU reference of the spherical k-means that trains IVF coarse quantizers.
 * It follows the steps FAISS's Clustering takes for an inner-product IVF (random distinct points
 * as the first centroids, assignment by largest inner product, centroids as means, empty
 * clusters split off the largest one with a +-1/1024 symmetric perturbation, centroids
 * renormalised every iteration), deterministically, so that the [gpu-build] path can be checked
 * against it and its output fed to vindex_build through vindex_centroids.
 */
#ifndef QUARRY_INDEX_VINDEX_INT_H
#define QUARRY_INDEX_VINDEX_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "index/vector.h"

/* Clusters n rows of dim floats (expected L2-normalised, as the index holds them) into k unit
 * centroids written to centroids (k * dim floats) after niter iterations. seed picks the initial
 * centroids. QR_EINVAL for k == 0, n < k, dim < 1, niter < 1 or a non-finite value; QR_ENOMEM.
 * On error centroids is unchanged. */
qr_status vindex_kmeans(const float *x, size_t n, int dim, size_t k, int niter, uint64_t seed,
                        float *centroids, char *err);

/* Copies the coarse centroids of the served IVF generation into out (nlist * dim floats, nlist
 * from vindex_get_info). QR_EINVAL when the served generation is not IVF or nlist differs. */
qr_status vindex_get_centroids(vindex *v, float *out, size_t nlist, char *err);

/* Test-only: called at named points of a build's publication so that a test can kill the
 * process there (a crash during publish) or act concurrently with it. Stages, in order:
 * "files_written" (generation files renamed, manifest not yet written), "before_commit" (no
 * lock held), "manifest_written" (MANIFEST.tmp synced, not yet renamed), "published" (new
 * MANIFEST renamed, snapshot not yet swapped). Not thread-safe: set it before starting builds.
 * NULL removes the hook. */
typedef void (*vindex_test_hook_fn)(const char *stage, void *arg);
void vindex_test_set_hook(vindex_test_hook_fn fn, void *arg);

/* Test-only: makes every int8 dot product of the vector index (vindex_i8.c) use the portable
 * kernel instead of the AVX2 one (on: true), process-wide; vindex_i8_has_avx2 says whether the
 * CPU has the AVX2 kernel at all. */
void vindex_i8_use_portable(bool on);
bool vindex_i8_has_avx2(void);
/* Bench-only: vindex_search_permitted with the int8 scan probes vindex.nprobe / share^exponent
 * lists (default 0.25). Not thread-safe: set it before searching. */
void vindex_test_set_widen(double exponent);
/* code = x / scale rounded half away from zero, in -127..127, with scale = max |x_i| / 127 (0
 * and zero codes for a zero row); the AVX2 and portable versions give the same codes. */
void vindex_i8_quantize(const float *x, int dim, int8_t *code, float *scale);
/* out[r] = sum over i of codes[r * dim + i] * q[i] for n rows of int8 codes (each in -127..127),
 * by the AVX2 kernel where the CPU has it, else (or under vindex_i8_use_portable) the portable
 * one; both give the same sums. */
void vindex_i8_dots(const int8_t *codes, size_t n, int dim, const int8_t *q, int32_t *out);

/* ---- the plan of a build (vindex_plan.c, in quarry_gpu with the GPU path) ------------------- */

typedef enum { VT_NONE = 0, VT_FLAT, VT_IVF_FLAT, VT_IVF_SQ8, VT_IVF_PQ, VT_HNSW, VT_AUTO } vtype;

/* The names of the types, by vtype ("none" .. "auto"), as vindex.type and MANIFEST spell them. */
extern const char *const vindex_type_names[];

/* The vtype named s (vindex_type_names, "none" excluded); false for anything else. */
bool vindex_parse_type(const char *s, vtype *out);
/* The type a build of n vectors gets when configured says type (VT_AUTO: by o->exact_threshold);
 * an empty build is flat. */
vtype vindex_choose_type(vtype configured, const vindex_opts *o, size_t n);
/* The number of IVF lists for n vectors (see vindex_opts.nlist). */
size_t vindex_choose_nlist(const vindex_opts *o, size_t n);

/* Copies a row normalised to unit length into out; false (out undefined) for a zero, NaN or
 * infinite row. The one normalisation of every vector the index or its GPU training sees. */
bool vindex_normalize_row(const float *in, float *out, int dim);

/* True when a build of n vectors under o is an IVF index (the type vindex_build would choose), with
 * the number of lists it would use in *nlist (may be NULL). The GPU path asks this, so that the
 * centroids it trains are exactly the ones the build wants. */
bool vindex_plan_ivf(const vindex_opts *o, size_t n, size_t *nlist);

#endif
