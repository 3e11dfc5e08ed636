/*
 * vindex_search: permission-filtered top-k over a snapshot of the vector index. The main index
 * (ANN for IVF and HNSW) is asked for candidates with adaptive over-fetch until k pass the
 * tombstones and the caller's predicate, falling back to an exact BLAS scan of the generation's
 * rows; the delta is always scanned exactly; vindex_search_subset scores an explicit set of
 * chunk ids with BLAS. Every candidate is re-scored with vindex_dot_exact (vindex.c) over the
 * generation's own rows, so a chunk scores the same whichever path found it. A search holds a
 * reference to its snapshot and the delta's read lock, never a lock a build holds.
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <faiss/c_api/Index_c.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "index/vector.h"
#include "index/vindex_impl.h"
#include "index/vindex_int.h"

#define SCAN_BLOCK           4096 /* most rows per BLAS call in exact scans, see scan_block */
#define EXACT_MARGIN         16   /* extra candidates kept by exact scans, see heap_finish */
#define OVERFETCH_MIN_GROWTH 2
#define OVERFETCH_MAX_GROWTH 64
#define OVERFETCH_MIN_MAX    4096
/* BLAS blocks between two checks of the search's cancellation token (a clock read each): about
 * 40 µs of scanning at 384 dimensions. */
#define CANCEL_BLOCKS 16

/* Candidates fetched per wanted result before exact re-scoring. 4-bit PQ codes rank coarsely,
 * so ivf_pq needs a much deeper list than the types whose scores are nearly exact (measured in
 * bench/README.md: depth 10 gave recall@10 0.81 at 100k where 50 gives 0.97). */
static size_t rerank_depth(vtype t)
{
    return t == VT_IVF_PQ ? 50 : 2;
}

/* How far a BLAS or FAISS float score of two unit vectors may be from vindex_dot_exact's: the float
 * rounding bound d*u (u = FLT_EPSILON/2) doubled for the two sides of a comparison, doubled
 * again for safety. */
static float score_slack(int dim)
{
    return 2.0f * (float)dim * FLT_EPSILON;
}

static bool tombstoned(const vsnap *s, int64_t id)
{
    return vindex_idmap_get(&s->tomb, id, NULL);
}

/* ---- search ---------------------------------------------------------------------------------- */

typedef struct {
    float score;
    int64_t id;
} hit;

typedef struct {
    hit *v;
    size_t n, cap;
} hits;

static qr_status hits_push(hits *h, float score, int64_t id)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        hit *nv = realloc(h->v, cap * sizeof(hit));
        if (!nv)
            return QR_ENOMEM;
        h->v = nv;
        h->cap = cap;
    }
    h->v[h->n].score = score;
    h->v[h->n].id = id;
    h->n++;
    return QR_OK;
}

/* Best first; equal scores by smaller id. */
static int cmp_hit(const void *a, const void *b)
{
    const hit *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Candidates of an exact scan: a bounded heap on approximate (BLAS) scores whose root is the
 * worst kept candidate. */
typedef struct {
    float approx;
    int64_t id;
    const float *row;
} cand;

typedef struct {
    cand *v;
    size_t n, cap;
} cheap;

static bool cand_worse(const cand *a, const cand *b)
{
    return a->approx < b->approx || (a->approx == b->approx && a->id > b->id);
}

static void cheap_sift_down(cheap *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < h->n && cand_worse(&h->v[l], &h->v[w]))
            w = l;
        if (r < h->n && cand_worse(&h->v[r], &h->v[w]))
            w = r;
        if (w == i)
            return;
        cand t = h->v[i];
        h->v[i] = h->v[w];
        h->v[w] = t;
        i = w;
    }
}

static bool cheap_wants(const cheap *h, float approx)
{
    return h->n < h->cap || approx >= h->v[0].approx;
}

static void cheap_offer(cheap *h, float approx, int64_t id, const float *row)
{
    cand c = {approx, id, row};
    if (h->n < h->cap) {
        size_t i = h->n++;
        h->v[i] = c;
        while (i && cand_worse(&h->v[i], &h->v[(i - 1) / 2])) {
            cand t = h->v[i];
            h->v[i] = h->v[(i - 1) / 2];
            h->v[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
        return;
    }
    if (!cand_worse(&h->v[0], &c))
        return;
    h->v[0] = c;
    cheap_sift_down(h, 0);
}

static int cmp_cand_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (cand_worse(x, y))
        return 1;
    if (cand_worse(y, x))
        return -1;
    return 0;
}

/* Turns an exact scan's candidates into exact hits. Every chunk of the true top k has an
 * approximate score within the slack of the k-th approximate one, so those candidates are
 * re-scored exactly; when the heap is full down to that band, chunks beyond it may belong too
 * and *retry asks for a larger heap. */
static qr_status cheap_finish(cheap *h, size_t k, const float *q, int dim, hits *out, bool *retry)
{
    *retry = false;
    if (h->n == 0)
        return QR_OK;
    qsort(h->v, h->n, sizeof(cand), cmp_cand_desc);
    float slack = score_slack(dim);
    float floor = h->n >= k ? h->v[k - 1].approx - slack : -INFINITY;
    if (h->n == h->cap && h->v[h->n - 1].approx >= floor) {
        *retry = true;
        return QR_OK;
    }
    for (size_t i = 0; i < h->n && h->v[i].approx >= floor; i++)
        if (hits_push(out, vindex_dot_exact(h->v[i].row, q, dim), h->v[i].id))
            return QR_ENOMEM;
    return QR_OK;
}

typedef struct {
    const vsnap *s;
    vindex_permit_fn permit;
    void *ctx;
    qr_cancel *cancel; /* checked between blocks and rounds; NULL: none */
} filter;

static bool filter_pass(const filter *f, int64_t id)
{
    return !tombstoned(f->s, id) && (!f->permit || f->permit(f->ctx, id));
}

/* Rows per BLAS call in the exact scans. OpenBLAS hands a gemv of 2304*4 elements or more to its
 * worker threads, which then spin between calls; searches already run on many request threads,
 * so each call stays below that size and runs on the calling thread. */
static size_t scan_block(int dim)
{
    size_t rows = 8192 / (size_t)dim;
    return rows < 1 ? 1 : rows > SCAN_BLOCK ? SCAN_BLOCK : rows;
}

/* Offers rows[0..n) (ids[i], contiguous) scored by BLAS to the heap. */
static void scan_rows(cheap *h, const float *rows, const int64_t *ids, size_t n, const float *q, int dim,
                      const filter *f, float *scores)
{
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)n, dim, 1.0f, rows, dim, q, 1, 0.0f, scores, 1);
    for (size_t i = 0; i < n; i++) {
        if (!cheap_wants(h, scores[i]) || !filter_pass(f, ids[i]))
            continue;
        cheap_offer(h, scores[i], ids[i], rows + i * (size_t)dim);
    }
}

/* Rows mode: offers the rows of ids[0..n) (ascending), which lie in base by id, to the heap.
 * dense: BLAS scores every row from the first id to the last where they lie (ids with gaps, as
 * deletions leave them; at most a scan block of rows), and the gaps' scores are dropped;
 * otherwise the rows are gathered into block first. */
static void scan_rows_by_id(cheap *h, const float *base, const int64_t *ids, size_t n, bool dense,
                            const float *q, int dim, const filter *f, float *scores, float *block)
{
    const float *first = base + (size_t)ids[0] * (size_t)dim;
    if (dense) {
        size_t span = (size_t)(ids[n - 1] - ids[0]) + 1;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)span, dim, 1.0f, first, dim, q, 1, 0.0f, scores, 1);
    } else {
        for (size_t i = 0; i < n; i++)
            memcpy(block + i * (size_t)dim, base + (size_t)ids[i] * (size_t)dim, (size_t)dim * sizeof(float));
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)n, dim, 1.0f, block, dim, q, 1, 0.0f, scores, 1);
    }
    for (size_t i = 0; i < n; i++) {
        float sc = scores[dense ? (size_t)(ids[i] - ids[0]) : i];
        if (!cheap_wants(h, sc) || !filter_pass(f, ids[i]))
            continue;
        cheap_offer(h, sc, ids[i], base + (size_t)ids[i] * (size_t)dim);
    }
}

/* Exact top k with the filter, into out, over count rows: contiguous rows (the generation's own
 * copy, or the delta) when base is NULL, else (rows mode) the rows of ids in base by id. */
static qr_status exact_scan(const float *rows, const float *base, const int64_t *ids, size_t count,
                            const float *q, int dim, size_t k, const filter *f, hits *out, char *err)
{
    qr_status st = QR_OK;
    size_t margin = EXACT_MARGIN;
    float *scores = malloc(SCAN_BLOCK * sizeof(float));
    float *block = base ? malloc((size_t)SCAN_BLOCK * (size_t)dim * sizeof(float)) : NULL;
    cheap h = {0};
    if (!scores || (base && !block)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    for (;;) {
        h.cap = k + margin;
        free(h.v);
        h.n = 0;
        h.v = malloc(h.cap * sizeof(cand));
        if (!h.v) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        size_t blk = scan_block(dim);
        for (size_t i = 0, b = 0, n; i < count; i += n, b++) {
            if (b % CANCEL_BLOCKS == 0 && (st = qr_cancel_check(f->cancel, err)))
                goto out;
            n = count - i < blk ? count - i : blk;
            if (!base) {
                scan_rows(&h, rows + i * (size_t)dim, ids + i, n, q, dim, f, scores);
                continue;
            }
            /* the ids that lie within a block's rows of the first are scored where they lie when
             * they fill half of those rows at least; sparser ones are gathered, a block of them */
            size_t m = n;
            while (ids[i + m - 1] - ids[i] >= (int64_t)blk)
                m--;
            size_t span = (size_t)(ids[i + m - 1] - ids[i]) + 1;
            bool dense = 2 * m >= span && (m == n || 2 * m >= blk);
            if (dense)
                n = m;
            scan_rows_by_id(&h, base, ids + i, n, dense, q, dim, f, scores, block);
        }
        bool retry;
        if (cheap_finish(&h, k, q, dim, out, &retry)) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        if (!retry)
            break;
        margin *= 4;
    }
out:
    free(h.v);
    free(scores);
    free(block);
    return st;
}

/* ANN over the main index with adaptive over-fetch; falls back to exact_scan. Appends to out. */
static qr_status search_main(vindex *v, const vsnap *s, const float *q, size_t k, const filter *f, hits *out,
                             char *err)
{
    qr_status st = QR_OK;
    int dim = s->dim;
    size_t base = out->n; /* the delta's hits stay; main hits are redone each round */
    size_t kf = rerank_depth(s->type) * k, kf_max = 32 * k > OVERFETCH_MIN_MAX ? 32 * k : OVERFETCH_MIN_MAX;
    float *dist = NULL;
    idx_t *labels = NULL;
    bool exact = false;
    hits sorted = {0};
    if (kf > s->count)
        kf = s->count;
    for (;;) {
        if ((st = qr_cancel_check(f->cancel, err)))
            goto out;
        float *nd = realloc(dist, kf * sizeof(float));
        if (nd)
            dist = nd;
        idx_t *nl = nd ? realloc(labels, kf * sizeof(idx_t)) : NULL;
        if (!nl) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        labels = nl;
        if (faiss_Index_search(s->index, 1, q, (idx_t)kf, dist, labels) != 0) {
            st = vindex_faiss_fail(err, "vector search failed");
            goto out;
        }
        out->n = base;
        size_t nret = 0;
        for (; nret < kf && labels[nret] >= 0; nret++) {
            int64_t id = labels[nret];
            if (!filter_pass(f, id))
                continue;
            ssize_t pos = vindex_main_find(s, id);
            if (pos < 0)
                continue; /* cannot happen with a verified generation */
            if (hits_push(out, vindex_dot_exact(vindex_main_row(s, (size_t)pos, id), q, dim), id)) {
                st = qr_fail(err, QR_ENOMEM, "out of memory");
                goto out;
            }
        }
        bool all = nret == s->count;
        bool enough = out->n >= k;
        if (nret == 0 && !enough) {
            exact = true;
            break;
        }
        if (enough && s->type == VT_FLAT && !all && nret) {
            /* exact index: done only when no unfetched chunk can reach the k-th score or tie it */
            sorted.n = 0;
            for (size_t i = 0; i < out->n; i++)
                if (hits_push(&sorted, out->v[i].score, out->v[i].id)) {
                    st = qr_fail(err, QR_ENOMEM, "out of memory");
                    goto out;
                }
            qsort(sorted.v, sorted.n, sizeof(hit), cmp_hit);
            enough = sorted.v[k - 1].score > dist[nret - 1] + score_slack(dim);
        }
        if (enough || all)
            break;
        /* a flat index costs a full scan per round: one exact scan with the filter is cheaper
         * than fetching more */
        if (nret < kf || kf >= kf_max || s->type == VT_FLAT) {
            /* the ANN index has nothing more to give (IVF lists visited, HNSW frontier), or the
             * predicate rejects nearly everything: only an exact scan can find k */
            exact = true;
            break;
        }
        /* each IVF round costs a full nprobe scan whatever kf is: jump by the pass rate seen so
         * far (half again for luck) rather than in fixed steps */
        size_t passed = out->n - base, grow = OVERFETCH_MAX_GROWTH;
        if (passed)
            grow = (3 * k * nret) / (2 * passed * kf) + 1;
        grow = grow < OVERFETCH_MIN_GROWTH   ? OVERFETCH_MIN_GROWTH
               : grow > OVERFETCH_MAX_GROWTH ? OVERFETCH_MAX_GROWTH
                                             : grow;
        kf = kf * grow < s->count ? kf * grow : s->count;
        if (kf > kf_max)
            kf = kf_max;
    }
    if (exact) {
        __atomic_fetch_add(&v->exact_scans, 1, __ATOMIC_RELAXED);
        out->n = base;
        st = exact_scan(s->rows, s->base, s->ids, s->count, q, dim, k, f, out, err);
    }
out:
    free(dist);
    free(labels);
    free(sorted.v);
    return st;
}

/* An unfiltered search of an IVF generation by the int8 scan (vindex_scan.c): the best
 * vindex.rerank of the nprobe nearest lists by int8 codes, scored exactly, appended to out.
 * *done is false when the lists probed hold fewer than k live chunks (search_main answers). */
static qr_status search_i8(vsnap *s, const float *q, size_t k, const vindex_opts *o, qr_cancel *cancel,
                           hits *out, bool *done, char *err)
{
    qr_status st = QR_OK;
    double built_ms = 0;
    size_t cap = vindex_i8_rerank(o, k), nc = 0;
    int64_t *cids = malloc(cap * sizeof(int64_t));
    float *cscores = malloc(cap * sizeof(float));
    *done = false;
    if (!cids || !cscores) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    if ((st = vindex_layout_get(s, true, &built_ms, err)) ||
        (st = vindex_i8_scan_main(s, q, k, o->nprobe, cap, NULL, 0, cancel, cids, cscores, &nc, NULL, err)))
        goto out;
    if (nc < k)
        goto out;
    for (size_t i = 0; i < nc; i++)
        if (hits_push(out, cscores[i], cids[i])) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
    *done = true;
out:
    free(cids);
    free(cscores);
    return st;
}

static qr_status check_query(const vindex *v, const float *query, int dim, size_t k, int64_t *ids,
                             float *scores, size_t *found, float **q, char *err)
{
    *q = NULL;
    if (!query || !ids || !scores || !found)
        return qr_fail(err, QR_EINVAL, "vector search: missing argument");
    *found = 0;
    if (dim != v->dim)
        return qr_fail(err, QR_EINVAL, "query dimension %d does not match the index's %d", dim, v->dim);
    if (k < 1 || k > VINDEX_K_MAX)
        return qr_fail(err, QR_EINVAL, "k must be 1..%d (got %zu)", VINDEX_K_MAX, k);
    *q = malloc((size_t)dim * sizeof(float));
    if (!*q)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    if (!vindex_normalize_row(query, *q, dim)) {
        free(*q);
        *q = NULL;
        return qr_fail(err, QR_EINVAL, "query vector is zero or not finite");
    }
    return QR_OK;
}

static void emit(hits *h, size_t k, int64_t *ids, float *scores, size_t *found)
{
    if (h->n)
        qsort(h->v, h->n, sizeof(hit), cmp_hit);
    size_t n = h->n < k ? h->n : k;
    for (size_t i = 0; i < n; i++) {
        ids[i] = h->v[i].id;
        scores[i] = h->v[i].score;
    }
    *found = n;
}

qr_status vindex_search(vindex *v, const float *query, int dim, size_t k, vindex_permit_fn permit, void *ctx,
                        int64_t *ids, float *scores, size_t *found, qr_cancel *cancel, char *err)
{
    float *q = NULL;
    if (!v)
        return qr_fail(err, QR_EINVAL, "vector search: missing index");
    qr_status st = check_query(v, query, dim, k, ids, scores, found, &q, err);
    if (!st && (st = qr_cancel_check(cancel, err)))
        free(q);
    if (st)
        return st;
    hits h = {0};
    vsnap *s = vindex_snap_acquire(v);
    if (s->dim != dim) {
        st = qr_fail(err, QR_EINVAL, "the served vector index has dimension %d: build it first", s->dim);
        goto release;
    }
    filter f = {s, permit, ctx, cancel};
    pthread_rwlock_rdlock(&s->lock);
    if (s->d_n && (st = exact_scan(s->d_rows, NULL, s->d_ids, s->d_n, q, dim, k, &f, &h, err)))
        goto unlock;
    bool done = false;
    if (s->count && !permit && vindex_i8_serves(&v->opts, s->type) &&
        (st = search_i8(s, q, k, &v->opts, cancel, &h, &done, err)))
        goto unlock;
    if (s->count && !done && (st = search_main(v, s, q, k, &f, &h, err)))
        goto unlock;
    __atomic_fetch_add(&v->searches, 1, __ATOMIC_RELAXED);
    emit(&h, k, ids, scores, found);
unlock:
    pthread_rwlock_unlock(&s->lock);
release:
    vindex_snap_release(v, s);
    free(h.v);
    free(q);
    return st;
}

qr_status vindex_search_subset(vindex *v, const float *query, int dim, size_t k, const int64_t *permitted,
                               size_t n, int64_t *ids, float *scores, size_t *found, qr_cancel *cancel,
                               char *err)
{
    float *q = NULL;
    if (!v || (n && !permitted))
        return qr_fail(err, QR_EINVAL, "vector search: missing argument");
    qr_status st = check_query(v, query, dim, k, ids, scores, found, &q, err);
    if (!st && (st = qr_cancel_check(cancel, err)))
        free(q);
    if (st)
        return st;
    hits h = {0};
    cheap c = {0};
    int64_t *sorted = NULL, *bids = NULL;
    float *block = NULL, *bscores = NULL;
    const float **brows = NULL;
    const int64_t *list = permitted;
    vsnap *s = NULL;

    /* ascending ids walk the mapped rows forwards and make duplicates adjacent */
    bool asc = true;
    for (size_t i = 1; i < n && asc; i++)
        asc = permitted[i - 1] < permitted[i];
    if (!asc) {
        sorted = malloc(n * sizeof(int64_t));
        if (!sorted) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(sorted, permitted, n * sizeof(int64_t));
        qsort(sorted, n, sizeof(int64_t), vindex_cmp_i64);
        list = sorted;
    }
    block = malloc((size_t)SCAN_BLOCK * (size_t)dim * sizeof(float));
    bscores = malloc(SCAN_BLOCK * sizeof(float));
    bids = malloc(SCAN_BLOCK * sizeof(int64_t));
    brows = malloc(SCAN_BLOCK * sizeof(*brows));
    if (!block || !bscores || !bids || !brows) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    s = vindex_snap_acquire(v);
    if (s->dim != dim) {
        st = qr_fail(err, QR_EINVAL, "the served vector index has dimension %d: build it first", s->dim);
        goto out;
    }
    pthread_rwlock_rdlock(&s->lock);
    if (s->count && vindex_i8_serves(&v->opts, s->type)) {
        /* the int8 codes with a bound on their error: 4 times fewer bytes per listed chunk, and
         * still the exact answer */
        double built_ms = 0;
        if (!(st = vindex_layout_get(s, true, &built_ms, err)))
            st = vindex_i8_subset(s, q, k, list, n, cancel, ids, scores, found, err);
        pthread_rwlock_unlock(&s->lock);
        goto out;
    }
    size_t margin = EXACT_MARGIN, blk = scan_block(dim);
    for (;;) {
        c.cap = k + margin;
        free(c.v);
        c.n = 0;
        c.v = malloc(c.cap * sizeof(cand));
        if (!c.v) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            break;
        }
        size_t lo = 0, nb = 0, blocks = 0;
        for (size_t i = 0; i <= n; i++) {
            if (i < n) {
                int64_t id = list[i];
                if (id < 0 || (i && list[i - 1] == id) || tombstoned(s, id))
                    continue;
                const float *row = NULL;
                /* the list is ascending: search the main ids only from the last match on */
                size_t a = lo, b = s->count;
                while (a < b) {
                    size_t mid = a + (b - a) / 2;
                    if (s->ids[mid] < id)
                        a = mid + 1;
                    else
                        b = mid;
                }
                lo = a;
                int64_t dpos;
                if (a < s->count && s->ids[a] == id)
                    row = vindex_main_row(s, a, id);
                else if (vindex_idmap_get(&s->d_pos, id, &dpos))
                    row = s->d_rows + (size_t)dpos * (size_t)dim;
                if (!row)
                    continue;
                bids[nb] = id;
                brows[nb] = row;
                nb++;
            }
            if (nb == blk || (i == n && nb)) {
                if (blocks++ % CANCEL_BLOCKS == 0 && (st = qr_cancel_check(cancel, err)))
                    break;
                /* rows that lie one after the other (a permitted run of chunks) are scored where
                 * they are; others are gathered first */
                bool run = true;
                for (size_t j = 1; j < nb && run; j++)
                    run = brows[j] == brows[0] + j * (size_t)dim;
                if (!run)
                    for (size_t j = 0; j < nb; j++)
                        memcpy(block + j * (size_t)dim, brows[j], (size_t)dim * sizeof(float));
                cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)nb, dim, 1.0f, run ? brows[0] : block, dim,
                            q, 1, 0.0f, bscores, 1);
                for (size_t j = 0; j < nb; j++)
                    if (cheap_wants(&c, bscores[j]))
                        cheap_offer(&c, bscores[j], bids[j], brows[j]);
                nb = 0;
            }
        }
        if (st)
            break;
        bool retry;
        h.n = 0;
        if (cheap_finish(&c, k, q, dim, &h, &retry)) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            break;
        }
        if (!retry)
            break;
        margin *= 4;
    }
    if (!st)
        emit(&h, k, ids, scores, found);
    pthread_rwlock_unlock(&s->lock);
out:
    if (s)
        vindex_snap_release(v, s);
    free(c.v);
    free(h.v);
    free(sorted);
    free(block);
    free(bscores);
    free(bids);
    free(brows);
    free(q);
    return st;
}

size_t vindex_sample_ids(vindex *v, size_t n, int64_t *ids)
{
    if (!v || !n || !ids)
        return 0;
    vsnap *s = vindex_snap_acquire(v);
    pthread_rwlock_rdlock(&s->lock);
    size_t total = s->count + s->d_n, m = n < total ? n : total, got = 0;
    /* rows i * total / m for i < m (without overflow): main rows in id order, then the delta's in
     * arrival order */
    for (size_t i = 0; i < m; i++) {
        size_t row = i * (total / m) + (size_t)((uint64_t)i * (total % m) / m);
        ids[got++] = row < s->count ? s->ids[row] : s->d_ids[row - s->count];
    }
    pthread_rwlock_unlock(&s->lock);
    vindex_snap_release(v, s);
    return got;
}
