/*
 * The int8 codes of an IVF generation and the integer dot products that scan them. Every vector of
 * the generation is kept as dim signed bytes and one float scale (row ~ scale * code, codes in
 * -127..127), in the order of the IVF layout (vindex_scan.c), so that scanning a list reads its
 * codes in one run; the coarse centroids are kept the same way, with their float rows for the
 * exact ranking of the lists. The codes are derived from the generation's float rows when the
 * layout is first read, never written to disk: the generation files are unchanged.
 *
 * The scores they give are approximate; searches keep the best few by code (vindex.rerank) and
 * score those exactly from the float rows (vindex_dot_exact). The dot product has an AVX2 kernel,
 * chosen at run time where the CPU has AVX2 (no -march flags), and a portable one; both compute
 * the same integer sums, so they rank alike.
 */
#define _GNU_SOURCE
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "index/vindex_impl.h"
#include "index/vindex_int.h"

typedef void (*dots_fn)(const int8_t *codes, size_t n, int dim, const int8_t *q, int32_t *out);

static void dots_portable(const int8_t *codes, size_t n, int dim, const int8_t *q, int32_t *out)
{
    for (size_t r = 0; r < n; r++) {
        const int8_t *c = codes + r * (size_t)dim;
        int32_t sum = 0;
        for (int i = 0; i < dim; i++)
            sum += (int32_t)c[i] * (int32_t)q[i];
        out[r] = sum;
    }
}

/* 32 bytes a step: |q| (unsigned) times code * sign(q) (signed), pairs summed to 16 bits (at most
 * 2 * 127 * 127, no saturation), then to 32 bits. */
__attribute__((target("avx2"))) static void dots_avx2(const int8_t *codes, size_t n, int dim, const int8_t *q,
                                                      int32_t *out)
{
    int vec = dim & ~31;
    const __m256i ones = _mm256_set1_epi16(1);
    for (size_t r = 0; r < n; r++) {
        const int8_t *c = codes + r * (size_t)dim;
        __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
        int i = 0;
        for (; i + 64 <= vec; i += 64) {
            __m256i q0 = _mm256_loadu_si256((const __m256i *)(q + i));
            __m256i q1 = _mm256_loadu_si256((const __m256i *)(q + i + 32));
            __m256i c0 = _mm256_loadu_si256((const __m256i *)(c + i));
            __m256i c1 = _mm256_loadu_si256((const __m256i *)(c + i + 32));
            __m256i p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(q0, q0), _mm256_sign_epi8(c0, q0));
            __m256i p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(q1, q1), _mm256_sign_epi8(c1, q1));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p0, ones));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(p1, ones));
        }
        for (; i < vec; i += 32) {
            __m256i q0 = _mm256_loadu_si256((const __m256i *)(q + i));
            __m256i c0 = _mm256_loadu_si256((const __m256i *)(c + i));
            __m256i p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(q0, q0), _mm256_sign_epi8(c0, q0));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p0, ones));
        }
        __m256i acc = _mm256_add_epi32(acc0, acc1);
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
        int32_t sum = _mm_cvtsi128_si32(s);
        for (; i < dim; i++)
            sum += (int32_t)c[i] * (int32_t)q[i];
        out[r] = sum;
    }
}

static dots_fn dots_chosen; /* NULL until the first call */
static bool force_portable;

void vindex_i8_use_portable(bool on)
{
    __atomic_store_n(&force_portable, on, __ATOMIC_RELAXED);
}

bool vindex_i8_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

void vindex_i8_dots(const int8_t *codes, size_t n, int dim, const int8_t *q, int32_t *out)
{
    if (__atomic_load_n(&force_portable, __ATOMIC_RELAXED)) {
        dots_portable(codes, n, dim, q, out);
        return;
    }
    dots_fn f = __atomic_load_n(&dots_chosen, __ATOMIC_ACQUIRE);
    if (!f) {
        f = vindex_i8_has_avx2() ? dots_avx2 : dots_portable;
        __atomic_store_n(&dots_chosen, f, __ATOMIC_RELEASE);
    }
    f(codes, n, dim, q, out);
}

bool vindex_scan_int8(const vindex_opts *o)
{
    return !o->scan || strcmp(o->scan, "faiss") != 0;
}

void vindex_i8_dots_at(const int8_t *codes, const float *scale, const uint32_t *at, size_t n, int dim,
                       const int8_t *q, float *out)
{
    /* the rows lie far apart in a large array: each is a few cache misses, so the next ones are
     * asked for (I8_AHEAD rows on) while this one is scored */
    enum { I8_AHEAD = 6 };
    size_t row = (size_t)dim;
    for (size_t j = 0; j < n && j < I8_AHEAD; j++)
        for (size_t o = 0; o < row; o += 64)
            __builtin_prefetch(codes + (size_t)at[j] * row + o);
    for (size_t j = 0; j < n; j++) {
        if (j + I8_AHEAD < n) {
            const int8_t *next = codes + (size_t)at[j + I8_AHEAD] * row;
            for (size_t o = 0; o < row; o += 64)
                __builtin_prefetch(next + o);
            __builtin_prefetch(scale + at[j + I8_AHEAD]);
        }
        int32_t d;
        vindex_i8_dots(codes + (size_t)at[j] * row, 1, dim, q, &d);
        out[j] = (float)d * scale[at[j]];
    }
}

/* The portable quantizer: the max |x_i|, then x_i * 127 / max rounded half away from zero. */
static void quantize_portable(const float *x, int dim, int8_t *code, float *scale)
{
    float m = 0;
    for (int i = 0; i < dim; i++)
        m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    if (!(m > 0)) {
        memset(code, 0, (size_t)dim);
        *scale = 0;
        return;
    }
    float inv = 127.0f / m;
    for (int i = 0; i < dim; i++) {
        float y = x[i] * inv;
        int c = (int)(y + (y < 0 ? -0.5f : 0.5f));
        code[i] = (int8_t)(c > 127 ? 127 : c < -127 ? -127 : c);
    }
    *scale = m / 127.0f;
}

/* The same operations eight at a time (the same products and sums, so the same codes):
 * quantizing a generation one element at a time took seconds at 1M vectors. */
__attribute__((target("avx2"))) static void quantize_avx2(const float *x, int dim, int8_t *code, float *scale)
{
    int vec = dim & ~7;
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
    __m256 mv = _mm256_setzero_ps();
    for (int i = 0; i < vec; i += 8)
        mv = _mm256_max_ps(mv, _mm256_and_ps(_mm256_loadu_ps(x + i), _mm256_castsi256_ps(absmask)));
    float lanes[8];
    _mm256_storeu_ps(lanes, mv);
    float m = 0;
    for (int j = 0; j < 8; j++)
        m = lanes[j] > m ? lanes[j] : m;
    for (int i = vec; i < dim; i++)
        m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    if (!(m > 0)) {
        memset(code, 0, (size_t)dim);
        *scale = 0;
        return;
    }
    float inv = 127.0f / m;
    const __m256 vinv = _mm256_set1_ps(inv), half = _mm256_set1_ps(0.5f), zero = _mm256_setzero_ps();
    const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    int32_t c32[8];
    for (int i = 0; i < vec; i += 8) {
        __m256 y = _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv);
        __m256 neg = _mm256_cmp_ps(y, zero, _CMP_LT_OQ);
        __m256 h = _mm256_blendv_ps(half, _mm256_sub_ps(zero, half), neg);
        __m256 r = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(y, h), lo), hi);
        _mm256_storeu_si256((__m256i *)c32, _mm256_cvttps_epi32(r));
        for (int j = 0; j < 8; j++)
            code[i + j] = (int8_t)c32[j];
    }
    for (int i = vec; i < dim; i++) {
        float y = x[i] * inv;
        int c = (int)(y + (y < 0 ? -0.5f : 0.5f));
        code[i] = (int8_t)(c > 127 ? 127 : c < -127 ? -127 : c);
    }
    *scale = m / 127.0f;
}

bool vindex_i8_serves(const vindex_opts *o, vtype type)
{
    return (type == VT_IVF_FLAT || type == VT_IVF_SQ8) && vindex_scan_int8(o);
}

void vindex_i8_quantize(const float *x, int dim, int8_t *code, float *scale)
{
    static int avx2 = -1; /* -1: not asked yet */
    int a = __atomic_load_n(&avx2, __ATOMIC_RELAXED);
    if (a < 0) {
        a = vindex_i8_has_avx2();
        __atomic_store_n(&avx2, a, __ATOMIC_RELAXED);
    }
    if (a && !__atomic_load_n(&force_portable, __ATOMIC_RELAXED))
        quantize_avx2(x, dim, code, scale);
    else
        quantize_portable(x, dim, code, scale);
}

/* One share of the rows to quantize: rows [from, to) in row order, written at their place in
 * the layout. */
typedef struct {
    const vsnap *s;
    const uint32_t *at; /* row -> place in the layout */
    int8_t *codes;
    float *scale;
    size_t from, to;
} qjob;

static void *quantize_rows(void *arg)
{
    qjob *j = arg;
    size_t dim = (size_t)j->s->dim;
    for (size_t r = j->from; r < j->to; r++)
        vindex_i8_quantize(vindex_main_row(j->s, r, j->s->ids[r]), j->s->dim,
                           j->codes + (size_t)j->at[r] * dim, j->scale + j->at[r]);
    return NULL;
}

#define QUANTIZE_THREADS 4

qr_status vindex_i8_prepare(vsnap *s, char *err)
{
    qr_status st = QR_OK;
    size_t dim = (size_t)s->dim, nlist = s->nlist;
    int8_t *codes = malloc((s->count ? s->count : 1) * dim);
    float *scale = malloc((s->count ? s->count : 1) * sizeof(float));
    uint32_t *at = malloc((s->count ? s->count : 1) * sizeof(uint32_t));
    float *cent = malloc((nlist ? nlist : 1) * dim * sizeof(float));
    int8_t *ccodes = malloc((nlist ? nlist : 1) * dim);
    float *cscale = malloc((nlist ? nlist : 1) * sizeof(float));
    if (!codes || !scale || !at || !cent || !ccodes || !cscale) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for the int8 codes of the vector index");
        goto out;
    }
    FaissIndex *quant = faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(s->index));
    if (!quant || (size_t)faiss_Index_ntotal(quant) != nlist) {
        st = qr_fail(err, QR_EINTERNAL, "vector index: the IVF quantizer does not hold %zu lists", nlist);
        goto out;
    }
    if (nlist && faiss_Index_reconstruct_n(quant, 0, (idx_t)nlist, cent) != 0) {
        st = vindex_faiss_fail(err, "cannot read the IVF centroids");
        goto out;
    }
    for (size_t l = 0; l < nlist; l++)
        vindex_i8_quantize(cent + l * dim, s->dim, ccodes + l * dim, cscale + l);
    /* the rows are read in their own order (the mapped file forwards), a share per thread; the
     * mapping is advised random for searches (no read-ahead), which made this pass fault in
     * every page on its own: sequential for the pass (in rows mode the provider's mapping is
     * read in id order, forwards too, under whatever advice its owner gave) */
    if (s->map && s->rows)
        madvise(s->map, s->map_len, MADV_SEQUENTIAL);
    for (size_t i = 0; i < s->count; i++)
        at[s->lay_pos[i]] = (uint32_t)i;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nt = cpus < 1 ? 1 : cpus > QUANTIZE_THREADS ? QUANTIZE_THREADS : (size_t)cpus;
    if (s->count < 65536)
        nt = 1;
    pthread_t th[QUANTIZE_THREADS];
    qjob jobs[QUANTIZE_THREADS];
    size_t started = 0;
    for (size_t t = 0; t < nt; t++) {
        jobs[t] = (qjob){s, at, codes, scale, s->count * t / nt, s->count * (t + 1) / nt};
        if (t + 1 == nt || pthread_create(&th[t], NULL, quantize_rows, &jobs[t]) != 0) {
            /* the last share (or one a thread could not take) runs here */
            jobs[t].to = s->count * (t + 1 == nt ? nt : t + 1) / nt;
            quantize_rows(&jobs[t]);
            if (t + 1 < nt) {
                /* no thread: the rest of the rows here too */
                qjob rest = {s, at, codes, scale, jobs[t].to, s->count};
                quantize_rows(&rest);
                break;
            }
        } else {
            started++;
        }
    }
    for (size_t t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    if (s->map && s->rows)
        madvise(s->map, s->map_len, MADV_RANDOM);
    s->i8_scale = scale;
    s->i8_at = at;
    at = NULL;
    s->cent = cent;
    s->i8_cent = ccodes;
    s->i8_cscale = cscale;
    __atomic_store_n(&s->i8_codes, codes, __ATOMIC_RELEASE); /* last: vindex_layout_get reads it */
    codes = NULL;
    scale = NULL;
    cent = NULL;
    ccodes = NULL;
    cscale = NULL;
out:
    free(codes);
    free(scale);
    free(at);
    free(cent);
    free(ccodes);
    free(cscale);
    return st;
}
