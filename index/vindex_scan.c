/*
 * vindex_search_permitted: top-k over a caller's permitted chunks with the permission test inside
 * the IVF scan. FAISS 1.7.3's C API cannot filter a search, so the generation's inverted lists
 * are read once (the IVF layout: for each list, the positions of its members among the
 * generation's rows), and a search asks the coarse quantizer for the query's nearest lists, walks
 * their members, keeps those the caller may read and that are not tombstoned, and scores them
 * exactly from the generation's float32 rows, with the delta's permitted rows beside them. The
 * lists probed grow with the inverse square root of the permitted share (never with anything the
 * scan finds), so the work is set by the query, the index and the permitted set; chunks the
 * caller may not read only cost a bit test each. Flat and HNSW generations, and permitted sets so
 * small that scoring each of them is cheaper than walking the lists, go to vindex_search_subset.
 *
 * Under vindex.scan=int8 (the default) the same walk ranks members by their int8 codes
 * (vindex_i8.c) and scores only the best vindex.rerank exactly, and the lists come from the int8
 * centroids (the best re-ranked exactly); vindex_search uses that scan for unfiltered IVF
 * searches (vindex_i8_scan_main), and vindex_search_subset the codes with a bound on their error
 * for its exact answer (vindex_i8_subset).
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "index/vector.h"
#include "index/vindex_impl.h"
#include "index/vindex_int.h"

/* Probes are widened by 1/sqrt(share) up to this factor of vindex.nprobe. */
#define PROBE_WIDEN_MAX 16
/* With the int8 scan the probes are widened by 1/share^widen_i8 (bench/README.md: recall by
 * share); vindex_test_set_widen changes it for benchmarks. */
static double widen_i8 = 0.25;

void vindex_test_set_widen(double exponent)
{
    widen_i8 = exponent;
}

/* Permitted members expected in the probed lists per wanted result, at the least. */
#define PROBE_PER_RESULT 8
/* Walking a list member costs a bit test; scoring a permitted id directly costs a lookup and a
 * dot product: above this ratio of members walked to permitted ids, the exact subset is cheaper. */
#define SUBSET_RATIO 16
/* The same with the int8 scan, where a permitted member met costs a dot product of its codes:
 * walking lists stays cheaper than the exact subset up to about this ratio (bench/README.md). */
#define SUBSET_RATIO_I8 64
/* Rows gathered per BLAS call: 8192 floats, kept on the calling thread (see vindex_search.c). */
#define GATHER_FLOATS 8192
#define CANCEL_BLOCKS 16

/* ---- the IVF layout -------------------------------------------------------------------------- */

/* Reads every inverted list of s->index into s->lay_off, lay_ids and lay_pos. The ids are kept in
 * list order beside the positions so that walking a list reads memory in order: looking each
 * member's id up by its position instead costs a cache miss per member. Called under
 * s->lay_lock. */
static qr_status layout_build(vsnap *s, char *err)
{
    _Static_assert(sizeof(idx_t) == sizeof(int64_t), "FAISS ids must be 64-bit");
    qr_status st = QR_OK;
    FaissIndexIVF *ivf = faiss_IndexIVF_cast(s->index);
    uint32_t *off = NULL, *pos = NULL;
    int64_t *lids = NULL;
    if (!ivf)
        return qr_fail(err, QR_EINTERNAL, "vector index is not an IVF index");
    size_t nlist = faiss_IndexIVF_nlist(ivf), total = 0;
    if (s->count > UINT32_MAX)
        return qr_fail(err, QR_EINTERNAL, "vector index: %zu rows are too many for the IVF layout", s->count);
    off = malloc((nlist + 1) * sizeof(uint32_t));
    pos = malloc((s->count ? s->count : 1) * sizeof(uint32_t));
    lids = malloc((s->count ? s->count : 1) * sizeof(int64_t));
    if (!off || !pos || !lids) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for the IVF layout");
        goto out;
    }
    for (size_t l = 0; l < nlist; l++) {
        off[l] = (uint32_t)total;
        total += faiss_IndexIVF_get_list_size(ivf, l);
        if (total > s->count)
            break;
    }
    if (total != s->count) {
        st = qr_fail(err, QR_EINTERNAL, "vector index: the IVF lists hold %zu vectors, the generation %zu",
                     total, s->count);
        goto out;
    }
    off[nlist] = (uint32_t)total;
    for (size_t l = 0; l < nlist; l++) {
        size_t len = off[l + 1] - off[l];
        int64_t *ids = lids + off[l];
        if (!len)
            continue;
        faiss_IndexIVF_invlists_get_ids(ivf, l, (idx_t *)ids);
        for (size_t i = 0; i < len; i++) {
            ssize_t p = vindex_main_find(s, ids[i]);
            if (p < 0) {
                st = qr_fail(err, QR_EINTERNAL,
                             "vector index: IVF list %zu holds id %lld, unknown to the generation", l,
                             (long long)ids[i]);
                goto out;
            }
            pos[off[l] + i] = (uint32_t)p;
        }
    }
    s->lay_off = off;
    s->lay_ids = lids;
    s->lay_pos = pos;
    off = NULL;
    lids = NULL;
    pos = NULL;
out:
    free(off);
    free(lids);
    free(pos);
    return st;
}

qr_status vindex_layout_get(vsnap *s, bool i8, double *built_ms, char *err)
{
    /* lay_ready is set once the layout and, when asked for, the codes are complete; codes asked
     * for after a layout read without them (not done by quarry: a handle's scan is fixed) are
     * read then */
    if (__atomic_load_n(&s->lay_ready, __ATOMIC_ACQUIRE) &&
        (!i8 || __atomic_load_n(&s->i8_codes, __ATOMIC_ACQUIRE)))
        return QR_OK;
    qr_status st = QR_OK;
    pthread_mutex_lock(&s->lay_lock);
    uint64_t t0 = qr_now_ns();
    bool built = false;
    if (!s->lay_off) {
        st = layout_build(s, err);
        built = !st;
    }
    if (!st && i8 && !s->i8_codes) {
        st = vindex_i8_prepare(s, err);
        built = !st;
    }
    if (!st && built) {
        *built_ms = (double)(qr_now_ns() - t0) / 1e6;
        __atomic_store_n(&s->lay_ready, true, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&s->lay_lock);
    return st;
}

void vindex_layout_warm(const vindex_opts *o, vsnap *s)
{
    char err[QR_ERR_LEN];
    double built_ms = 0;
    if (!s->count || !vindex_i8_serves(o, s->type))
        return;
    if (vindex_layout_get(s, true, &built_ms, err) != QR_OK)
        qr_log(QR_LOG_WARN, "index",
               "vector index: the int8 codes are not ready (%s); the first search tries again", err);
}

/* ---- the permitted set ----------------------------------------------------------------------- */

/* Membership in an ascending id list: a bitmap over [lo, hi] when it is not much larger than the
 * list, binary search otherwise. */
typedef struct {
    const int64_t *ids;
    size_t n;
    int64_t lo, hi;
    uint64_t *bits; /* NULL: binary search */
} permset;

static qr_status permset_init(permset *p, const int64_t *ids, size_t n)
{
    memset(p, 0, sizeof(*p));
    p->ids = ids;
    p->n = n;
    if (!n)
        return QR_OK;
    p->lo = ids[0];
    p->hi = ids[n - 1];
    uint64_t words = ((uint64_t)(p->hi - p->lo) >> 6) + 1;
    if (words > 4 * (uint64_t)n + 1024)
        return QR_OK; /* sparse ids: the list itself is smaller */
    p->bits = calloc(words, sizeof(uint64_t));
    if (!p->bits)
        return QR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = (uint64_t)(ids[i] - p->lo);
        p->bits[b >> 6] |= 1ull << (b & 63);
    }
    return QR_OK;
}

static bool permset_has(const permset *p, int64_t id)
{
    if (!p->n || id < p->lo || id > p->hi)
        return false;
    if (p->bits) {
        uint64_t b = (uint64_t)(id - p->lo);
        return (p->bits[b >> 6] >> (b & 63)) & 1;
    }
    size_t a = 0, z = p->n;
    while (a < z) {
        size_t mid = a + (z - a) / 2;
        if (p->ids[mid] < id)
            a = mid + 1;
        else
            z = mid;
    }
    return a < p->n && p->ids[a] == id;
}

/* ---- scoring --------------------------------------------------------------------------------- */

typedef struct {
    float approx;
    int64_t id;
    const float *row;
} cand;

typedef struct {
    cand *v;
    size_t n, cap;
    /* the block being gathered */
    float *block, *scores;
    const float **rows;
    int64_t *ids;
    size_t nb, blk;
    int dim;
    const float *q;
} scorer;

static qr_status scorer_flush(scorer *c)
{
    if (!c->nb)
        return QR_OK;
    if (c->n + c->nb > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->n + c->nb)
            cap *= 2;
        cand *nv = realloc(c->v, cap * sizeof(cand));
        if (!nv)
            return QR_ENOMEM;
        c->v = nv;
        c->cap = cap;
    }
    for (size_t j = 0; j < c->nb; j++)
        memcpy(c->block + j * (size_t)c->dim, c->rows[j], (size_t)c->dim * sizeof(float));
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)c->nb, c->dim, 1.0f, c->block, c->dim, c->q, 1, 0.0f,
                c->scores, 1);
    for (size_t j = 0; j < c->nb; j++)
        c->v[c->n++] = (cand){c->scores[j], c->ids[j], c->rows[j]};
    c->nb = 0;
    return QR_OK;
}

static qr_status scorer_add(scorer *c, int64_t id, const float *row)
{
    c->ids[c->nb] = id;
    c->rows[c->nb] = row;
    return ++c->nb == c->blk ? scorer_flush(c) : QR_OK;
}

/* Best first; equal scores by smaller id. */
static int cmp_exact(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->approx != y->approx)
        return x->approx > y->approx ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The k-th largest approximate score of v[0..n) (n >= k): a min-heap of the k largest. */
static float kth_largest(const cand *v, size_t n, size_t k, float *heap)
{
    size_t h = 0;
    for (size_t i = 0; i < n; i++) {
        float x = v[i].approx;
        if (h < k) {
            size_t j = h++;
            heap[j] = x;
            while (j && heap[j] < heap[(j - 1) / 2]) {
                float t = heap[j];
                heap[j] = heap[(j - 1) / 2];
                heap[(j - 1) / 2] = t;
                j = (j - 1) / 2;
            }
        } else if (x > heap[0]) {
            heap[0] = x;
            for (size_t j = 0;;) {
                size_t l = 2 * j + 1, r = l + 1, w = j;
                if (l < k && heap[l] < heap[w])
                    w = l;
                if (r < k && heap[r] < heap[w])
                    w = r;
                if (w == j)
                    break;
                float t = heap[j];
                heap[j] = heap[w];
                heap[w] = t;
                j = w;
            }
        }
    }
    return heap[0];
}

/* Re-scores exactly every candidate whose BLAS score is within the rounding slack of the k-th
 * one (none of the true top k can lie below), sorts them and emits the best k. */
static qr_status scorer_finish(scorer *c, size_t k, int64_t *ids, float *scores, size_t *found)
{
    size_t kept = 0;
    if (c->n > k) {
        float *heap = malloc(k * sizeof(float));
        if (!heap)
            return QR_ENOMEM;
        float floor = kth_largest(c->v, c->n, k, heap) - 2.0f * (float)c->dim * FLT_EPSILON;
        free(heap);
        for (size_t i = 0; i < c->n; i++)
            if (c->v[i].approx >= floor)
                c->v[kept++] = c->v[i];
    } else {
        kept = c->n;
    }
    for (size_t i = 0; i < kept; i++)
        c->v[i].approx = vindex_dot_exact(c->v[i].row, c->q, c->dim);
    if (kept > 1)
        qsort(c->v, kept, sizeof(cand), cmp_exact);
    *found = kept < k ? kept : k;
    for (size_t i = 0; i < *found; i++) {
        ids[i] = c->v[i].id;
        scores[i] = c->v[i].approx;
    }
    return QR_OK;
}

/* ---- the search ------------------------------------------------------------------------------ */

/* Lists to probe for a permitted share of n out of total rows: vindex.nprobe times
 * 1/sqrt(share) (the permitted top k lie about as deep among all chunks as the top k/share, which
 * more lists reach), and enough lists to hold PROBE_PER_RESULT * k permitted members on average;
 * at most PROBE_WIDEN_MAX * nprobe and nlist. */
static size_t probes_for(size_t nprobe, size_t nlist, size_t count, size_t n, size_t total, size_t k, bool i8)
{
    double share = total ? (double)n / (double)total : 1;
    if (share > 1)
        share = 1;
    double want = (double)nprobe / pow(share, i8 ? widen_i8 : 0.5);
    double enough = (double)PROBE_PER_RESULT * (double)k * (double)nlist / ((double)count * share);
    if (want < enough)
        want = enough;
    if (want > (double)nprobe * PROBE_WIDEN_MAX)
        want = (double)nprobe * PROBE_WIDEN_MAX;
    size_t p = (size_t)ceil(want);
    if (p < nprobe)
        p = nprobe;
    return p > nlist ? nlist : p;
}

/* ---- the int8 scan ---------------------------------------------------------------------------- */

/* A candidate of the int8 scan: its approximate score and its place in the layout. */
typedef struct {
    float approx;
    uint32_t at;
} i8cand;

/* Worse: lower score, or the later place for equal scores (so the kept set is deterministic). */
static bool i8_worse(const i8cand *a, const i8cand *b)
{
    return a->approx < b->approx || (a->approx == b->approx && a->at > b->at);
}

/* A bounded min-heap of the best cap candidates; the root is the worst kept. */
static void i8_offer(i8cand *h, size_t *n, size_t cap, float approx, uint32_t at)
{
    i8cand c = {approx, at};
    size_t i;
    if (*n < cap) {
        i = (*n)++;
        while (i && i8_worse(&c, &h[(i - 1) / 2])) {
            h[i] = h[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        h[i] = c;
        return;
    }
    if (!i8_worse(&h[0], &c))
        return;
    i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        const i8cand *wc = &c;
        if (l < cap && i8_worse(&h[l], wc)) {
            w = l;
            wc = &h[l];
        }
        if (r < cap && i8_worse(&h[r], wc))
            w = r;
        if (w == i)
            break;
        h[i] = h[w];
        i = w;
    }
    h[i] = c;
}

typedef struct {
    float score;
    uint32_t list;
} lscore;

static int cmp_lscore(const void *a, const void *b)
{
    const lscore *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->list < y->list ? -1 : x->list > y->list;
}

size_t vindex_i8_rerank(const vindex_opts *o, size_t k)
{
    size_t r = o->rerank;
    return r < 2 * k ? 2 * k : r;
}

/* The probes lists nearest q: every centroid ranked by its int8 code, the best probes + probes/4
 * + 16 of those ranked again exactly. */
static qr_status coarse_lists(const vsnap *s, const float *q, const int8_t *qc, size_t probes,
                              uint32_t *lists, char *err)
{
    size_t nlist = s->nlist, m = probes + probes / 4 + 16;
    if (m > nlist)
        m = nlist;
    int32_t *d = malloc(nlist * sizeof(int32_t));
    i8cand *h = malloc(m * sizeof(i8cand));
    lscore *ls = malloc(m * sizeof(lscore));
    if (!d || !h || !ls) {
        free(d);
        free(h);
        free(ls);
        return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    vindex_i8_dots(s->i8_cent, nlist, s->dim, qc, d);
    size_t n = 0;
    for (size_t l = 0; l < nlist; l++)
        i8_offer(h, &n, m, (float)d[l] * s->i8_cscale[l], (uint32_t)l);
    for (size_t i = 0; i < n; i++)
        ls[i] = (lscore){vindex_dot_exact(s->cent + (size_t)h[i].at * (size_t)s->dim, q, s->dim), h[i].at};
    if (n > 1)
        qsort(ls, n, sizeof(lscore), cmp_lscore);
    for (size_t i = 0; i < probes && i < n; i++)
        lists[i] = ls[i].list;
    free(d);
    free(h);
    free(ls);
    return QR_OK;
}

#define I8_BATCH 256

/* Scores the selected layout places sel[0..*nsel) (tombstoned ones dropped first) by their int8
 * codes into the heap, and empties sel. */
static void score_selected(const vsnap *s, const int8_t *qc, uint32_t *sel, size_t *nsel, bool tombs,
                           float *approx, i8cand *h, size_t *nh, size_t cap, size_t *scored)
{
    size_t n = *nsel;
    if (tombs) {
        size_t m = 0;
        for (size_t j = 0; j < n; j++)
            if (!vindex_idmap_get(&s->tomb, s->lay_ids[sel[j]], NULL))
                sel[m++] = sel[j];
        n = m;
    }
    vindex_i8_dots_at(s->i8_codes, s->i8_scale, sel, n, s->dim, qc, approx);
    for (size_t j = 0; j < n; j++)
        i8_offer(h, nh, cap, approx[j], sel[j]);
    *scored += n;
    *nsel = 0;
}

/* vindex_i8_scan_main with the permitted set as a permset (NULL: every chunk). */
static qr_status i8_scan(vsnap *s, const float *q, size_t k, size_t probes, size_t rerank, const permset *ps,
                         qr_cancel *cancel, int64_t *cids, float *cscores, size_t *ncand,
                         vindex_scan_report *rep, char *err)
{
    qr_status st = QR_OK;
    int dim = s->dim;
    size_t cap = rerank < 2 * k ? 2 * k : rerank, nh = 0, walked = 0, scored = 0;
    int8_t *qc = malloc((size_t)dim);
    uint32_t *lists = malloc((probes ? probes : 1) * sizeof(uint32_t));
    i8cand *h = malloc(cap * sizeof(i8cand));
    int32_t dots[I8_BATCH];
    uint32_t sel[I8_BATCH];
    float approx[I8_BATCH];
    size_t nsel = 0;
    uint64_t span = ps && ps->n ? (uint64_t)(ps->hi - ps->lo) : 0;
    float qs;
    *ncand = 0;
    if (!qc || !lists || !h) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    if (probes > s->nlist)
        probes = s->nlist;
    vindex_i8_quantize(q, dim, qc, &qs);
    if ((st = coarse_lists(s, q, qc, probes, lists, err)))
        goto out;
    bool tombs = s->tomb.n > 0;
    for (size_t p = 0; p < probes; p++) {
        if (p % CANCEL_BLOCKS == 0 && (st = qr_cancel_check(cancel, err)))
            goto out;
        size_t a = s->lay_off[lists[p]], z = s->lay_off[lists[p] + 1];
        walked += z - a;
        if (ps) {
            /* the permitted members are picked out first, then scored together (their codes
             * fetched ahead) */
            for (size_t i = a; i < z; i++) {
                if (ps->bits) {
                    /* without a branch on the bit: which members are permitted is not
                     * predictable, and most are not */
                    uint64_t b = (uint64_t)(s->lay_ids[i] - ps->lo);
                    uint64_t in = b <= span ? (ps->bits[b >> 6] >> (b & 63)) & 1 : 0;
                    sel[nsel] = (uint32_t)i;
                    nsel += (size_t)in;
                } else if (permset_has(ps, s->lay_ids[i])) {
                    sel[nsel++] = (uint32_t)i;
                }
                if (nsel == I8_BATCH)
                    score_selected(s, qc, sel, &nsel, tombs, approx, h, &nh, cap, &scored);
            }
            continue;
        }
        for (size_t i = a; i < z; i += I8_BATCH) {
            size_t b = z - i < I8_BATCH ? z - i : I8_BATCH;
            vindex_i8_dots(s->i8_codes + i * (size_t)dim, b, dim, qc, dots);
            for (size_t j = 0; j < b; j++) {
                if (tombs && vindex_idmap_get(&s->tomb, s->lay_ids[i + j], NULL))
                    continue;
                scored++;
                i8_offer(h, &nh, cap, (float)dots[j] * s->i8_scale[i + j], (uint32_t)(i + j));
            }
        }
    }
    if (nsel)
        score_selected(s, qc, sel, &nsel, tombs, approx, h, &nh, cap, &scored);
    for (size_t i = 0; i < nh; i++) {
        cids[i] = s->lay_ids[h[i].at];
        cscores[i] = vindex_dot_exact(vindex_main_row(s, s->lay_pos[h[i].at], cids[i]), q, dim);
    }
    *ncand = nh;
    if (rep) {
        rep->probes = probes;
        rep->walked = walked;
        rep->scored = scored;
    }
out:
    free(qc);
    free(lists);
    free(h);
    return st;
}

qr_status vindex_i8_scan_main(vsnap *s, const float *q, size_t k, size_t probes, size_t rerank,
                              const int64_t *permitted, size_t n, qr_cancel *cancel, int64_t *cids,
                              float *cscores, size_t *ncand, vindex_scan_report *rep, char *err)
{
    permset ps = {0};
    *ncand = 0;
    if (permitted && permset_init(&ps, permitted, n))
        return qr_fail(err, QR_ENOMEM, "out of memory");
    qr_status st =
        i8_scan(s, q, k, probes, rerank, permitted ? &ps : NULL, cancel, cids, cscores, ncand, rep, err);
    free(ps.bits);
    return st;
}

/* Best first; equal scores by smaller id. */
static int cmp_idscore(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->approx != y->approx)
        return x->approx > y->approx ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* vindex_search_permitted's int8 path: the main rows by vindex_i8_scan_main, the delta's
 * permitted rows exactly. *few: fewer than k permitted chunks were met (the caller answers with
 * the exact subset then). */
static qr_status permitted_i8(vsnap *s, const float *q, size_t k, size_t probes, size_t rerank,
                              const int64_t *permitted, size_t n, qr_cancel *cancel, int64_t *ids,
                              float *scores, size_t *found, bool *few, vindex_scan_report *rep, char *err)
{
    qr_status st = QR_OK;
    int dim = s->dim;
    size_t cap = rerank < 2 * k ? 2 * k : rerank, nc = 0, nd = 0;
    int64_t *cids = malloc(cap * sizeof(int64_t));
    float *cscores = malloc(cap * sizeof(float));
    cand *all = NULL;
    permset ps = {0};
    *few = false;
    if (!cids || !cscores || permset_init(&ps, permitted, n)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    vindex_scan_report r = {0};
    if ((st = i8_scan(s, q, k, probes, rerank, &ps, cancel, cids, cscores, &nc, &r, err)))
        goto out;
    bool tombs = s->tomb.n > 0;
    for (size_t i = 0; i < s->d_n; i++)
        nd += permset_has(&ps, s->d_ids[i]) && !(tombs && vindex_idmap_get(&s->tomb, s->d_ids[i], NULL));
    r.scored += nd;
    if (rep) {
        rep->probes = r.probes;
        rep->walked = r.walked;
        rep->scored = r.scored;
    }
    if (r.scored < k && r.scored < n) {
        *few = true;
        goto out;
    }
    all = malloc((nc + nd + 1) * sizeof(cand));
    if (!all) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    size_t m = 0;
    for (size_t i = 0; i < nc; i++)
        all[m++] = (cand){cscores[i], cids[i], NULL};
    for (size_t i = 0; i < s->d_n; i++) {
        int64_t id = s->d_ids[i];
        if (!permset_has(&ps, id) || (tombs && vindex_idmap_get(&s->tomb, id, NULL)))
            continue;
        all[m++] = (cand){vindex_dot_exact(s->d_rows + i * (size_t)dim, q, dim), id, NULL};
    }
    if (m > 1)
        qsort(all, m, sizeof(cand), cmp_idscore);
    *found = m < k ? m : k;
    for (size_t i = 0; i < *found; i++) {
        ids[i] = all[i].id;
        scores[i] = all[i].approx;
    }
out:
    free(cids);
    free(cscores);
    free(all);
    free(ps.bits);
    return st;
}

/* ---- the exact subset by int8 codes ------------------------------------------------------------ */

/* A listed chunk that may belong to the top k: an upper bound of its score, and where its row is
 * (a place in the layout, or a delta row whose score is exact already). */
typedef struct {
    float upper;
    float exact; /* delta rows: the score */
    int64_t id;
    int64_t where; /* >= 0: layout place; < 0: -1 - delta row */
} subcand;

/* A min-heap of the k largest lower bounds: its root, once full, is a score that k listed chunks
 * reach at least, so a chunk whose upper bound is below it cannot be among the top k. */
static void lower_offer(float *heap, size_t *n, size_t k, float x)
{
    size_t i;
    if (*n < k) {
        i = (*n)++;
        while (i && x < heap[(i - 1) / 2]) {
            heap[i] = heap[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        heap[i] = x;
        return;
    }
    if (x <= heap[0])
        return;
    i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        float wx = x;
        if (l < k && heap[l] < wx) {
            w = l;
            wx = heap[l];
        }
        if (r < k && heap[r] < wx)
            w = r;
        if (w == i)
            break;
        heap[i] = heap[w];
        i = w;
    }
    heap[i] = x;
}

static int cmp_subcand_exact(const void *a, const void *b)
{
    const subcand *x = a, *y = b;
    if (x->exact != y->exact)
        return x->exact > y->exact ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Highest upper bound first; equal bounds by smaller id. */
static int cmp_subcand_upper(const void *a, const void *b)
{
    const subcand *x = a, *y = b;
    if (x->upper != y->upper)
        return x->upper > y->upper ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The first place in ids[lo..n) holding a value >= id: galloping from lo (the listed ids are
 * ascending, so the next one is usually a little further on), then binary search. */
static size_t gallop(const int64_t *ids, size_t lo, size_t n, int64_t id)
{
    /* distinct ascending integers: the place sought lies at most id - ids[lo] places after lo,
     * and exactly there when no id between is missing (chunk ids are dense but for deletes), so
     * that place is tried first, and bounds the search when it misses */
    if (lo < n && ids[lo] < id && (uint64_t)(id - ids[lo]) < (uint64_t)(n - lo)) {
        size_t at = lo + (size_t)(id - ids[lo]);
        if (ids[at] == id)
            return at;
        n = at + 1;
    }
    size_t step = 1, a = lo, z = lo;
    while (z < n && ids[z] < id) {
        a = z + 1;
        z += step;
        step *= 2;
    }
    if (z > n)
        z = n;
    while (a < z) {
        size_t mid = a + (z - a) / 2;
        if (ids[mid] < id)
            a = mid + 1;
        else
            z = mid;
    }
    return a;
}

qr_status vindex_i8_subset(vsnap *s, const float *q, size_t k, const int64_t *list, size_t n,
                           qr_cancel *cancel, int64_t *ids, float *scores, size_t *found, char *err)
{
    qr_status st = QR_OK;
    int dim = s->dim;
    int8_t *qc = malloc((size_t)dim);
    float *lower = malloc(k * sizeof(float));
    subcand *c = NULL;
    size_t nc = 0, cap = 0, nl = 0, nsel = 0, lo = 0;
    uint32_t sel[I8_BATCH];
    int64_t selid[I8_BATCH];
    float approx[I8_BATCH];
    float qs;
    bool tombs = s->tomb.n > 0;
    *found = 0;
    if (!qc || !lower) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    vindex_i8_quantize(q, dim, qc, &qs);
    /* |score - approx| <= qs*xs*|qc|_1/2 + qs*sqrt(d)*(1 + sqrt(d)*xs/2)/2 + d*qs*xs/4 for a unit
     * row x ~ xs * code (each code off by at most half a step, on either side), plus the float
     * rounding of both scores */
    double q1 = 0, sd = sqrt((double)dim);
    for (int i = 0; i < dim; i++)
        q1 += abs(qc[i]);
    float e_fixed = (float)(0.5 * qs * sd) + 4.0f * (float)dim * FLT_EPSILON;
    float e_per_xs = (float)(0.5 * qs * q1 + 0.25 * qs * sd * sd + 0.25 * qs * (double)dim);
    for (size_t i = 0; i <= n; i++) {
        if (i < n) {
            int64_t id = list[i];
            if (id < 0 || (i && list[i - 1] == id) || (tombs && vindex_idmap_get(&s->tomb, id, NULL)))
                continue;
            lo = gallop(s->ids, lo, s->count, id);
            int64_t dpos;
            if (lo < s->count && s->ids[lo] == id) {
                sel[nsel] = (uint32_t)lo; /* the row; its place in the layout is looked up below */
                selid[nsel++] = id;
            } else if (vindex_idmap_get(&s->d_pos, id, &dpos)) {
                float sc = vindex_dot_exact(s->d_rows + (size_t)dpos * (size_t)dim, q, dim);
                lower_offer(lower, &nl, k, sc);
                if (nc == cap) {
                    size_t ncap = cap ? cap * 2 : 256;
                    subcand *nv = realloc(c, ncap * sizeof(subcand));
                    if (!nv) {
                        st = qr_fail(err, QR_ENOMEM, "out of memory");
                        goto out;
                    }
                    c = nv;
                    cap = ncap;
                }
                c[nc++] = (subcand){sc, sc, id, -1 - dpos};
            }
        }
        if (nsel == I8_BATCH || (i == n && nsel)) {
            if ((st = qr_cancel_check(cancel, err)))
                goto out;
            /* rows to places: reads far apart in a 4-byte-per-row map, asked for ahead */
            for (size_t j = 0; j < nsel && j < 16; j++)
                __builtin_prefetch(s->i8_at + sel[j]);
            for (size_t j = 0; j < nsel; j++) {
                if (j + 16 < nsel)
                    __builtin_prefetch(s->i8_at + sel[j + 16]);
                sel[j] = s->i8_at[sel[j]];
            }
            vindex_i8_dots_at(s->i8_codes, s->i8_scale, sel, nsel, dim, qc, approx);
            for (size_t j = 0; j < nsel; j++) {
                float xs = s->i8_scale[sel[j]], e = e_fixed + e_per_xs * xs;
                e += e * 1e-5f;
                float a = approx[j] * qs;
                lower_offer(lower, &nl, k, a - e);
                if (nl == k && a + e < lower[0])
                    continue;
                if (nc == cap) {
                    size_t ncap = cap ? cap * 2 : 256;
                    subcand *nv = realloc(c, ncap * sizeof(subcand));
                    if (!nv) {
                        st = qr_fail(err, QR_ENOMEM, "out of memory");
                        goto out;
                    }
                    c = nv;
                    cap = ncap;
                }
                c[nc++] = (subcand){a + e, 0, selid[j], (int64_t)sel[j]};
            }
            nsel = 0;
        }
    }
    /* the bound only rose: drop what fell below it; score the rest exactly from the highest
     * upper bound down, and stop at the first whose bound is below the k-th exact score found
     * (lower now keeps the k best exact scores): no later one can enter (an equal bound goes
     * on, for ties broken by id). The bounds hold for the worst case and the errors are mostly
     * far smaller, so this scores fewer rows than every chunk the bound cannot rule out. */
    size_t m = 0, scored = 0;
    for (size_t i = 0; i < nc; i++)
        if (!(nl == k && c[i].upper < lower[0]))
            c[m++] = c[i];
    if (m > 1)
        qsort(c, m, sizeof(subcand), cmp_subcand_upper);
    nl = 0;
    for (; scored < m; scored++) {
        if (nl == k && c[scored].upper < lower[0])
            break;
        if (c[scored].where >= 0)
            c[scored].exact =
                vindex_dot_exact(vindex_main_row(s, s->lay_pos[c[scored].where], c[scored].id), q, dim);
        lower_offer(lower, &nl, k, c[scored].exact);
    }
    if (scored > 1)
        qsort(c, scored, sizeof(subcand), cmp_subcand_exact);
    *found = scored < k ? scored : k;
    for (size_t i = 0; i < *found; i++) {
        ids[i] = c[i].id;
        scores[i] = c[i].exact;
    }
out:
    free(qc);
    free(lower);
    free(c);
    return st;
}

qr_status vindex_search_permitted(vindex *v, const float *query, int dim, size_t k, const int64_t *permitted,
                                  size_t n, int64_t *ids, float *scores, size_t *found, qr_cancel *cancel,
                                  vindex_scan_report *rep, char *err)
{
    if (rep)
        memset(rep, 0, sizeof(*rep));
    if (!v || (n && !permitted) || !query || !ids || !scores || !found)
        return qr_fail(err, QR_EINVAL, "vector search: missing argument");
    *found = 0;
    if (dim != v->dim)
        return qr_fail(err, QR_EINVAL, "query dimension %d does not match the index's %d", dim, v->dim);
    if (k < 1 || k > VINDEX_K_MAX)
        return qr_fail(err, QR_EINVAL, "k must be 1..%d (got %zu)", VINDEX_K_MAX, k);
    for (size_t i = 1; i < n; i++)
        if (permitted[i - 1] >= permitted[i])
            return qr_fail(err, QR_EINVAL, "permitted chunk ids must be ascending and distinct");
    qr_status st = QR_OK;
    float *q = NULL, *dist = NULL;
    idx_t *lists = NULL;
    permset ps = {0};
    scorer c = {0};
    bool subset = false, locked = false;
    vsnap *s = vindex_snap_acquire(v);
    size_t nprobe = 0, probes = 0;

    if (s->dim != dim) {
        st = qr_fail(err, QR_EINVAL, "the served vector index has dimension %d: build it first", s->dim);
        goto out;
    }
    if (!vindex_is_ivf(s->type) || !s->count) {
        subset = true;
        goto out;
    }
    nprobe = faiss_IndexIVF_nprobe(faiss_IndexIVF_cast(s->index));
    pthread_rwlock_rdlock(&s->lock);
    size_t total = s->count + s->d_n;
    pthread_rwlock_unlock(&s->lock);
    bool i8 = vindex_i8_serves(&v->opts, s->type);
    probes = probes_for(nprobe, s->nlist, s->count, n, total, k, i8);
    if ((double)probes * (double)s->count / (double)s->nlist >=
        (double)(i8 ? SUBSET_RATIO_I8 : SUBSET_RATIO) * (double)n) {
        subset = true; /* few permitted chunks: score each of them */
        goto out;
    }
    double built_ms = 0;
    if ((st = qr_cancel_check(cancel, err)) || (st = vindex_layout_get(s, i8, &built_ms, err)))
        goto out;
    if (i8) {
        q = malloc((size_t)dim * sizeof(float));
        if (!q) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        if (!vindex_normalize_row(query, q, dim)) {
            st = qr_fail(err, QR_EINVAL, "query vector is zero or not finite");
            goto out;
        }
        pthread_rwlock_rdlock(&s->lock);
        locked = true;
        bool few = false;
        st = permitted_i8(s, q, k, probes, vindex_i8_rerank(&v->opts, k), permitted, n, cancel, ids, scores,
                          found, &few, rep, err);
        if (rep)
            rep->layout_ms = built_ms;
        if (!st && few) {
            *found = 0;
            subset = true;
        } else if (!st) {
            __atomic_fetch_add(&v->searches, 1, __ATOMIC_RELAXED);
        }
        goto out;
    }
    q = malloc((size_t)dim * sizeof(float));
    dist = malloc(probes * sizeof(float));
    lists = malloc(probes * sizeof(idx_t));
    c.blk = GATHER_FLOATS / (size_t)dim ? GATHER_FLOATS / (size_t)dim : 1;
    c.block = malloc(c.blk * (size_t)dim * sizeof(float));
    c.scores = malloc(c.blk * sizeof(float));
    c.rows = malloc(c.blk * sizeof(*c.rows));
    c.ids = malloc(c.blk * sizeof(int64_t));
    if (!q || !dist || !lists || !c.block || !c.scores || !c.rows || !c.ids ||
        permset_init(&ps, permitted, n)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    if (!vindex_normalize_row(query, q, dim)) {
        st = qr_fail(err, QR_EINVAL, "query vector is zero or not finite");
        goto out;
    }
    c.dim = dim;
    c.q = q;
    if (faiss_Index_search(faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(s->index)), 1, q, (idx_t)probes, dist,
                           lists) != 0) {
        st = vindex_faiss_fail(err, "vector search: cannot rank the IVF lists");
        goto out;
    }
    pthread_rwlock_rdlock(&s->lock);
    locked = true;
    bool tombs = s->tomb.n > 0;
    size_t walked = 0, blocks = 0;
    for (size_t p = 0; p < probes && !st; p++) {
        if (lists[p] < 0 || (size_t)lists[p] >= s->nlist)
            continue;
        if (blocks++ % CANCEL_BLOCKS == 0 && (st = qr_cancel_check(cancel, err)))
            break;
        size_t a = s->lay_off[lists[p]], z = s->lay_off[lists[p] + 1];
        walked += z - a;
        for (size_t i = a; i < z; i++) {
            int64_t id = s->lay_ids[i];
            if (!permset_has(&ps, id) || (tombs && vindex_idmap_get(&s->tomb, id, NULL)))
                continue;
            if (scorer_add(&c, id, vindex_main_row(s, s->lay_pos[i], id))) {
                st = qr_fail(err, QR_ENOMEM, "out of memory");
                break;
            }
        }
    }
    /* the delta is small and exact: every permitted row of it */
    for (size_t i = 0; i < s->d_n && !st; i++) {
        int64_t id = s->d_ids[i];
        if (!permset_has(&ps, id) || (tombs && vindex_idmap_get(&s->tomb, id, NULL)))
            continue;
        if (scorer_add(&c, id, s->d_rows + i * (size_t)dim))
            st = qr_fail(err, QR_ENOMEM, "out of memory");
    }
    if (!st && scorer_flush(&c))
        st = qr_fail(err, QR_ENOMEM, "out of memory");
    if (st)
        goto out;
    if (rep) {
        rep->probes = probes;
        rep->walked = walked;
        rep->scored = c.n;
        rep->layout_ms = built_ms;
    }
    if (c.n < k && c.n < n) {
        /* the probed lists hold fewer than k permitted chunks (a count of permitted chunks only,
         * whatever lies hidden around the query): the exact scan of the set answers instead */
        subset = true;
        goto out;
    }
    if (scorer_finish(&c, k, ids, scores, found))
        st = qr_fail(err, QR_ENOMEM, "out of memory");
    __atomic_fetch_add(&v->searches, 1, __ATOMIC_RELAXED);
out:
    if (locked)
        pthread_rwlock_unlock(&s->lock);
    vindex_snap_release(v, s);
    free(q);
    free(dist);
    free(lists);
    free(ps.bits);
    free(c.v);
    free(c.block);
    free(c.scores);
    free(c.rows);
    free(c.ids);
    if (subset && !st) {
        if (rep)
            rep->subset = true;
        st = vindex_search_subset(v, query, dim, k, permitted, n, ids, scores, found, cancel, err);
    }
    return st;
}
