/*
 * vindex_plan: the arithmetic the vector index and its GPU build path share, in library
 * quarry_gpu so that both use it without a cycle between quarry_gpu and quarry_index: the
 * index types and their names, which type and how many IVF lists a build of n vectors gets, and
 * the normalisation of a row. vindex_build.c builds what this file plans; index_gpu.c trains
 * centroids for exactly that plan.
 */
#include <math.h>
#include <string.h>

#include "index/vector.h"
#include "index/vindex_int.h"

const char *const vindex_type_names[] = {"none", "flat", "ivf_flat", "ivf_sq8", "ivf_pq", "hnsw", "auto"};

bool vindex_parse_type(const char *s, vtype *out)
{
    for (int t = VT_FLAT; t <= VT_AUTO; t++) {
        if (s && strcmp(s, vindex_type_names[t]) == 0) {
            *out = (vtype)t;
            return true;
        }
    }
    return false;
}

/* ---- vector helpers ------------------------------------------------------------------------ */

bool vindex_vector_usable(const float *vec, int dim)
{
    if (!vec || dim < 1)
        return false;
    double sum = 0;
    for (int i = 0; i < dim; i++) {
        if (!isfinite(vec[i]))
            return false;
        sum += (double)vec[i] * vec[i];
    }
    return sum > 0 && isfinite(sum);
}

/* Copies a row normalised to unit length. Zero, NaN and infinite rows cannot be normalised and
 * would poison every inner product, so they are refused. Shared with the GPU path (vindex_int.h),
 * so that both train on exactly the rows the index holds. */
bool vindex_normalize_row(const float *in, float *out, int dim)
{
    double sum = 0;
    for (int i = 0; i < dim; i++) {
        if (!isfinite(in[i]))
            return false;
        sum += (double)in[i] * in[i];
    }
    if (!(sum > 0) || !isfinite(sum))
        return false;
    double inv = 1.0 / sqrt(sum);
    for (int i = 0; i < dim; i++)
        out[i] = (float)(in[i] * inv);
    return true;
}

/* ---- planning a build ------------------------------------------------------------------------ */

static size_t isqrt_round(double x)
{
    return (size_t)llround(sqrt(x));
}

/* nlist for n vectors: about 4*sqrt(n), but never fewer than 39 training points per list
 * (FAISS's k-means warns below that and the lists turn to noise). */
size_t vindex_choose_nlist(const vindex_opts *o, size_t n)
{
    size_t nlist = o->nlist ? o->nlist : 4 * isqrt_round((double)n);
    if (!o->nlist && nlist > n / 39)
        nlist = n / 39;
    if (nlist > n)
        nlist = n;
    return nlist ? nlist : 1;
}

vtype vindex_choose_type(vtype configured, const vindex_opts *o, size_t n)
{
    if (n == 0)
        return VT_FLAT;
    if (configured == VT_AUTO)
        return n <= o->exact_threshold ? VT_FLAT : VT_IVF_SQ8;
    return configured;
}

bool vindex_plan_ivf(const vindex_opts *o, size_t n, size_t *nlist)
{
    vtype configured, type;
    if (nlist)
        *nlist = 0;
    if (!o || !o->type || !vindex_parse_type(o->type, &configured))
        return false;
    type = vindex_choose_type(configured, o, n);
    if (type != VT_IVF_FLAT && type != VT_IVF_SQ8 && type != VT_IVF_PQ)
        return false;
    if (nlist)
        *nlist = vindex_choose_nlist(o, n);
    return true;
}
