/*
 * bm25_search: MaxScore top-k over the pruned BM25 index. Per term a cursor over the
 * generation's blocks, then the delta's postings; terms sorted by their upper bounds, the
 * non-essential ones only probed for candidates the essential ones found. Candidates go by
 * windows of rows, first bounded from their postings alone (no row length, no division), then
 * tested against the caller's permissions (a bit per row of the union of its principals'
 * document sets, cached) and the tombstones, probed in the other lists on bounds, and scored
 * exactly only when they may still enter; a top-k heap with an optional per-document limit.
 * Scores are FTS5's bm25() arithmetic over the live rows (see bm25.c).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/bm25_int.h"
#include "index/feed.h"
#include "index/files_int.h"
#include "index/text.h"

#define BM25_K1 1.2
#define BM25_B  0.75
/* A bound is compared with a score only after this relative slack, so that rounding in the
 * bound's sum can never prune a chunk whose exact score would have entered the top k. */
#define BOUND_SLACK 1e-9
#define DFCACHE_MAX 65536 /* terms whose tombstoned-row counts are cached */
#define UB_TF       16    /* body frequencies whose posting bound a cursor keeps in a table */
#define WINDOW      2048  /* rows of a window of candidates, at most (a multiple of 64) */
/* Candidate rows between two checks of the search's cancellation token: a check is a clock read,
 * a candidate at most a few hundred nanoseconds, so the token costs well under 1% and is seen
 * within about a tenth of a millisecond. */
#define CANCEL_EVERY 256

/* ---- searching --------------------------------------------------------------------------- */

/* The documents a caller may read (a bit per document key) and, over the generation's rows, which
 * groups of 64 rows hold one (see struct caller_union). */
struct caller_set {
    const uint64_t *bits;
    size_t nwords;
    const uint32_t *groups;
    size_t ngroups;
    const uint64_t *rows; /* a bit per generation row below nrows: its document is readable */
    size_t nrows;
};

/* False only when no row in [first, last] can belong to a document the caller may read: rows past
 * the groups counted (added since) always may. */
static bool rows_may_pass(const struct caller_set *cs, uint32_t first, uint32_t last)
{
    size_t a = first >> 6, b = last >> 6;
    return !cs || !cs->groups || b >= cs->ngroups || cs->groups[b + 1] > cs->groups[a];
}

/* Whether the caller may read row's document: a bit of the row's own for the generation's rows,
 * the document's bit for the others. */
static inline bool may_read(const bm25_index *x, const struct caller_set *cs, uint32_t row)
{
    if (row < cs->nrows)
        return cs->rows[row >> 6] >> (row & 63) & 1;
    uint32_t doc = bm25_row_doc(x, row);
    return (size_t)(doc >> 6) < cs->nwords && (cs->bits[doc >> 6] >> (doc & 63) & 1);
}

/* A term's postings: generation blocks first, then the delta's (whose rows are all larger). */
typedef struct {
    const file_term *gt;  /* NULL: not in the generation */
    const delta_list *dl; /* NULL: not in the delta */
    uint64_t gb, gb_end;  /* next generation block to load, and the end */
    size_t dpos;          /* next delta posting to load */
    uint32_t rows[BLOCK];
    uint32_t tf[BLOCK][NCOLS];
    uint32_t bn, bi; /* postings in the buffer, the current one */
    double idf, bound;
    uint32_t min_len;            /* the shortest row holding the term */
    double ub[UB_TF];            /* ub[t]: posting_bound of a posting with t occurrences, all in the body */
    size_t mult;                 /* how many times the query names the term */
    const struct caller_set *cs; /* the caller's readable rows, or NULL: every row */
    uint64_t decoded, skipped;   /* generation blocks, for bm25_info */
} cursor;

/* A varint, the one-byte case inline (most row gaps and frequencies of a common term). */
static inline const unsigned char *get_varint(const unsigned char *p, const unsigned char *end, uint32_t *v)
{
    if (p < end && *p < 0x80) {
        *v = *p;
        return p + 1;
    }
    return bm25_get_varint(p, end, v);
}

static void decode_block(const bm25_index *x, cursor *c, uint64_t b)
{
    const file_block *fb = &x->blocks[b];
    const unsigned char *p = x->data + fb->data_off, *end = x->data + x->h->data_len;
    uint32_t row = fb->first_row, n = 0;
    for (; n < fb->n && p; n++) {
        /* the usual posting, a one-byte row gap and one byte of body frequency, at once */
        if (end - p >= 2 && p[0] < 0x80 && p[1] < 0x80) {
            row += p[0];
            c->rows[n] = row;
            c->tf[n][0] = c->tf[n][1] = 0;
            c->tf[n][2] = p[1];
            p += 2;
            continue;
        }
        uint32_t delta = 0;
        if (!(p = get_varint(p, end, &delta)) || p >= end)
            break;
        row += delta;
        c->rows[n] = row;
        if (*p < 0x80) {
            c->tf[n][0] = c->tf[n][1] = 0;
            c->tf[n][2] = *p++;
        } else {
            p++;
            for (int k = 0; k < NCOLS && p; k++)
                p = get_varint(p, end, &c->tf[n][k]);
        }
    }
    /* a block the checksum passed decodes whole; stop short rather than read past it */
    c->bn = n;
    c->bi = 0;
}

/* Fills the buffer with the next postings; false when the term has no more. */
static bool refill(const bm25_index *x, cursor *c)
{
    /* a block of postings only documents the caller may not read hold is passed over undecoded:
     * a word that only hidden documents hold costs a test per block, not per posting */
    while (c->gb < c->gb_end &&
           !rows_may_pass(c->cs, x->blocks[c->gb].first_row, x->blocks[c->gb].last_row)) {
        c->gb++;
        c->skipped++;
    }
    if (c->gb < c->gb_end) {
        c->decoded++;
        decode_block(x, c, c->gb++);
        if (c->bn)
            return true;
        c->gb = c->gb_end;
    }
    if (c->dl && c->dpos < c->dl->n) {
        size_t n = c->dl->n - c->dpos < BLOCK ? c->dl->n - c->dpos : BLOCK;
        memcpy(c->rows, c->dl->rows + c->dpos, n * sizeof(uint32_t));
        for (size_t i = 0; i < n; i++) {
            uint32_t p = c->dl->tfp[c->dpos + i];
            if (p & TF_OVER) {
                memcpy(c->tf[i], x->d_over[p & ~TF_OVER], sizeof(c->tf[i]));
            } else {
                c->tf[i][0] = p >> 24;
                c->tf[i][1] = (p >> 16) & 0xff;
                c->tf[i][2] = p & 0xffff;
            }
        }
        c->dpos += n;
        c->bn = (uint32_t)n;
        c->bi = 0;
        return true;
    }
    c->bn = c->bi = 0;
    return false;
}

static uint32_t cur_row(const bm25_index *x, cursor *c)
{
    if (c->bi >= c->bn && !refill(x, c))
        return UINT32_MAX;
    return c->rows[c->bi];
}

/* Moves to the first posting at or after row: whole blocks are skipped by their last row. */
static uint32_t seek(const bm25_index *x, cursor *c, uint32_t row)
{
    if (c->bi < c->bn && c->rows[c->bn - 1] >= row) {
        uint32_t lo = c->bi, hi = c->bn - 1;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (c->rows[mid] < row)
                lo = mid + 1;
            else
                hi = mid;
        }
        c->bi = lo;
        return c->rows[lo];
    }
    if (c->gb < c->gb_end && x->blocks[c->gb_end - 1].last_row >= row) {
        uint64_t lo = c->gb, hi = c->gb_end - 1;
        while (lo < hi) {
            uint64_t mid = lo + (hi - lo) / 2;
            if (x->blocks[mid].last_row < row)
                lo = mid + 1;
            else
                hi = mid;
        }
        c->gb = lo;
        c->bn = c->bi = 0;
    } else if (c->gb < c->gb_end) {
        c->gb = c->gb_end;
        c->bn = c->bi = 0;
    }
    if (c->gb >= c->gb_end && c->dl && c->dpos < c->dl->n && (c->bi >= c->bn || c->rows[c->bn - 1] < row)) {
        size_t lo = c->dpos, hi = c->dl->n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (c->dl->rows[mid] < row)
                lo = mid + 1;
            else
                hi = mid;
        }
        c->dpos = lo;
        c->bn = c->bi = 0;
    }
    uint32_t r;
    while ((r = cur_row(x, c)) < row)
        c->bi++;
    return r;
}

/* seek for a row at or after the cursor's current one: a few postings on within the buffer (the
 * usual probe of a candidate, rows coming in order) without a call or a bisection. */
static inline uint32_t probe(const bm25_index *x, cursor *c, uint32_t row)
{
    uint32_t i = c->bi;
    if (i < c->bn && c->rows[c->bn - 1] >= row)
        for (uint32_t stop = i + 8; i < stop; i++)
            if (c->rows[i] >= row) {
                c->bi = i;
                return c->rows[i];
            }
    return seek(x, c, row);
}

static double term_score(double idf, double f, double len, double avgdl)
{
    return idf * ((f * (BM25_K1 + 1.0)) / (f + BM25_K1 * (1 - BM25_B + BM25_B * len / avgdl)));
}

/* One occurrence adds its column's weight, in column order, as FTS5 walks instances. */
static double weighted_tf(const uint32_t tf[NCOLS], const double w[NCOLS])
{
    double f = 0.0;
    for (int c = 0; c < NCOLS; c++)
        for (uint32_t i = 0; i < tf[c]; i++)
            f += w[c];
    return f;
}

/* An upper bound of what the cursor's posting i (in its buffer) adds to its row's score (times the term's
 * multiplicity): its frequencies scored as if the row were the term's shortest. It needs neither
 * the row's length nor a division for the usual postings (a few occurrences in the body), so
 * that a candidate which cannot enter the top k is passed over before either. */
static inline double posting_bound(const cursor *c, uint32_t i, const double w[NCOLS], double avgdl)
{
    const uint32_t *tf = c->tf[i];
    if (!tf[0] && !tf[1] && tf[2] < UB_TF)
        return c->ub[tf[2]];
    double f = weighted_tf(tf, w);
    return f > 0 ? term_score(c->idf, f, (double)c->min_len, avgdl) * (double)c->mult : 0.0;
}

/* The top k, worst at the root (lower score, then larger row), with per-document counts when
 * a per-document limit applies: a new chunk of a document that has its share replaces that
 * document's worst if better (the exchange that keeps the best k under a partition limit). */
typedef struct {
    double score;
    uint32_t row, doc;
} heap_item;

static bool worse(heap_item a, heap_item b)
{
    return a.score < b.score || (a.score == b.score && a.row > b.row);
}

typedef struct {
    heap_item *h;
    size_t n, k, cap_doc;
} topk;

static void sift_down(heap_item *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(h[l], h[m]))
            m = l;
        if (r < n && worse(h[r], h[m]))
            m = r;
        if (m == i)
            return;
        heap_item t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void sift_up(heap_item *h, size_t i)
{
    while (i > 0 && worse(h[i], h[(i - 1) / 2])) {
        heap_item t = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static void topk_push(topk *t, heap_item it)
{
    if (t->n == t->k && !worse(t->h[0], it))
        return; /* not better than the k-th: not better than its document's worst either */
    if (t->cap_doc) {
        size_t count = 0, w = SIZE_MAX;
        for (size_t i = 0; i < t->n; i++)
            if (t->h[i].doc == it.doc) {
                count++;
                if (w == SIZE_MAX || worse(t->h[i], t->h[w]))
                    w = i;
            }
        if (count >= t->cap_doc) {
            /* the document has its share: the new chunk replaces its worst, if better */
            if (!worse(t->h[w], it))
                return;
            t->h[w] = it;
            sift_down(t->h, t->n, w); /* better than before: it can only move down */
            return;
        }
    }
    if (t->n < t->k) {
        t->h[t->n] = it;
        sift_up(t->h, t->n++);
    } else {
        t->h[0] = it;
        sift_down(t->h, t->n, 0);
    }
}

static int cmp_hit(const void *a, const void *b)
{
    const heap_item *x = a, *y = b;
    return worse(*y, *x) ? -1 : worse(*x, *y) ? 1 : 0;
}

static const file_term *find_gen_term(const bm25_index *x, const char *term, size_t n)
{
    size_t lo = 0, hi = x->h ? (size_t)x->h->nterms : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const file_term *t = &x->terms[mid];
        size_t m = t->str_len < n ? t->str_len : n;
        int c = memcmp(x->strings + t->str_off, term, m);
        if (!c)
            c = t->str_len < n ? -1 : t->str_len > n ? 1 : 0;
        if (c < 0)
            lo = mid + 1;
        else if (c > 0)
            hi = mid;
        else
            return t;
    }
    return NULL;
}

/* Whether generation row `row` holds the term t (a probe into its blocks). */
static bool gen_has(const bm25_index *x, const file_term *t, uint32_t row)
{
    cursor c = {.gt = t, .gb = t->first_block, .gb_end = t->first_block + t->nblocks};
    return seek(x, &c, row) == row;
}

/* Rows holding the term among the live ones: the generation's count less its tombstoned rows
 * (counted once per term and tombstone, cached), plus the live delta postings. Caller holds
 * x->lock (read) and not cache_mu. */
static qr_status live_df(bm25_index *x, const char *term, const file_term *gt, const delta_list *dl,
                         uint64_t *df, char *err)
{
    uint64_t n = 0;
    if (gt) {
        n = gt->df;
        if (x->ndead_gen) {
            size_t n_term = strlen(term);
            pthread_mutex_lock(&x->cache_mu);
            bool added = false;
            if (x->df_terms.n >= DFCACHE_MAX)
                bm25_dfcache_clear(x);
            size_t at = x->ndfc;
            if (!x->dfc && !(x->dfc = malloc(DFCACHE_MAX * sizeof(*x->dfc)))) {
                pthread_mutex_unlock(&x->cache_mu);
                return qr_fail(err, QR_ENOMEM, "out of memory for a search");
            }
            if (!bm25_smap_put(&x->df_terms, term, n_term, &at, &added)) {
                pthread_mutex_unlock(&x->cache_mu);
                return qr_fail(err, QR_ENOMEM, "out of memory for a search");
            }
            if (added)
                x->dfc[x->ndfc++] = (df_entry){0, 0};
            df_entry *e = &x->dfc[at];
            for (; e->upto < x->ndead_gen; e->upto++)
                if (gen_has(x, gt, x->dead_gen[e->upto]))
                    e->dead++;
            n -= e->dead;
            pthread_mutex_unlock(&x->cache_mu);
        }
    }
    if (dl)
        for (size_t i = 0; i < dl->n; i++)
            if (!bm25_row_dead(x, dl->rows[i]))
                n++;
    *df = n;
    return QR_OK;
}

static qr_status set_doc_bit(void *ctx, int64_t doc, char *err)
{
    pset *p = ctx;
    if (doc < 0 || doc > (int64_t)DOC_KEY_MAX)
        return QR_OK; /* no row of the index can belong to it */
    if (!bm25_set_bit(&p->bits, &p->nwords, (size_t)doc))
        return qr_fail(err, QR_ENOMEM, "out of memory for a search");
    return QR_OK;
}

/* The cached set of principal, read from the store on first use (the least recently used set
 * makes room). Caller holds cache_mu. */
static qr_status principal_set(bm25_index *x, store *s, const char *principal, pset **out, char *err)
{
    for (size_t j = 0; j < x->nps; j++)
        if (strcmp(x->ps[j].name, principal) == 0) {
            *out = &x->ps[j];
            return QR_OK;
        }
    pset fresh = {0};
    int64_t counter = 0;
    if (!(fresh.name = strdup(principal)))
        return qr_fail(err, QR_ENOMEM, "out of memory for a search");
    qr_status st = store_principal_docs(s, principal, set_doc_bit, &fresh, &counter, err);
    if (st) {
        free(fresh.name);
        free(fresh.bits);
        return st;
    }
    size_t at = x->nps;
    if (x->nps >= x->o.principal_cache) {
        at = 0;
        for (size_t j = 1; j < x->nps; j++)
            if (x->ps[j].used < x->ps[at].used)
                at = j;
        free(x->ps[at].name);
        free(x->ps[at].bits);
    } else {
        pset *ps = realloc(x->ps, (x->nps + 1) * sizeof(*ps));
        if (!ps) {
            free(fresh.name);
            free(fresh.bits);
            return qr_fail(err, QR_ENOMEM, "out of memory for a search");
        }
        x->ps = ps;
        x->nps++;
    }
    x->ps[at] = fresh;
    *out = &x->ps[at];
    return QR_OK;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Over the generation's rows, which ones belong to a document in bits (*rows, a bit per row, so
 * that a search tests a candidate without reading its document key) and, for the whole groups of
 * 64 rows, how many groups before each hold one (see struct caller_union): O(rows), once per
 * union. False when out of memory. */
static bool row_sets(const bm25_index *x, const uint64_t *bits, size_t nwords, uint32_t **groups,
                     size_t *ngroups, uint64_t **rows)
{
    size_t ng = x->gen_rows >> 6, nrw = (x->gen_rows + 63) >> 6;
    uint32_t *g = malloc((ng + 1) * sizeof(*g));
    uint64_t *rb = calloc(nrw ? nrw : 1, sizeof(*rb));
    *ngroups = 0;
    *groups = NULL;
    *rows = NULL;
    if (!g || !rb) {
        free(g);
        free(rb);
        return false;
    }
    for (size_t r = 0; r < x->gen_rows; r++) {
        uint32_t doc = x->gen_docs[r];
        if ((size_t)(doc >> 6) < nwords && (bits[doc >> 6] >> (doc & 63) & 1))
            rb[r >> 6] |= 1ULL << (r & 63);
    }
    uint32_t count = 0;
    for (size_t gi = 0; gi < ng; gi++) {
        g[gi] = count;
        count += rb[gi] != 0;
    }
    g[ng] = count;
    *ngroups = ng;
    *groups = g;
    *rows = rb;
    return true;
}

/* The caller's readable documents: the union of its principals' sets, kept per principal list
 * (the least recently used list no search is using makes room), with its row groups. Caller
 * holds x->lock (read); cs->bits has cs->nwords words covering every document key of a row;
 * *held is the cache entry to give back with caller_docs_done, or NULL when cs's arrays are the
 * caller's to free. */
static qr_status caller_docs(bm25_index *x, store *s, const char *const *principals, size_t np,
                             struct caller_set *cs, struct caller_union **held, char *err)
{
    size_t nw = ((size_t)x->max_doc >> 6) + 1;
    const char **sorted = malloc((np ? np : 1) * sizeof(*sorted));
    if (!sorted)
        return qr_fail(err, QR_ENOMEM, "out of memory for a search");
    memcpy(sorted, principals, np * sizeof(*sorted));
    qsort(sorted, np, sizeof(*sorted), cmp_str_ptr);
    uint64_t key = 1469598103934665603ULL;
    for (size_t i = 0; i < np; i++)
        key = (key ^ bm25_hash_str(sorted[i], strlen(sorted[i]))) * 1099511628211ULL;
    qr_status st = QR_OK;
    pthread_mutex_lock(&x->cache_mu);
    for (size_t i = 0; i < x->nunions; i++) {
        struct caller_union *c = &x->unions[i];
        bool same = c->key == key && c->np == np && c->nwords == nw;
        for (size_t j = 0; same && j < np; j++)
            same = strcmp(c->principals[j], sorted[j]) == 0;
        if (same) {
            c->refs++;
            c->used = ++x->tick;
            pthread_mutex_unlock(&x->cache_mu);
            free(sorted);
            *cs = (struct caller_set){c->bits, nw, c->groups, c->ngroups, c->rows, c->nrows};
            *held = c;
            return QR_OK;
        }
    }
    uint64_t *u = calloc(nw, sizeof(*u));
    if (!u)
        st = qr_fail(err, QR_ENOMEM, "out of memory for a search");
    uint64_t tick = ++x->tick;
    for (size_t i = 0; i < np && !st; i++) {
        pset *p = NULL;
        if ((st = principal_set(x, s, sorted[i], &p, err)))
            break;
        p->used = tick;
        size_t n = p->nwords < nw ? p->nwords : nw;
        for (size_t w = 0; w < n; w++)
            u[w] |= p->bits[w];
    }
    size_t ngroups = 0;
    uint32_t *groups = NULL;
    uint64_t *rows = NULL;
    if (!st && !row_sets(x, u, nw, &groups, &ngroups, &rows))
        st = qr_fail(err, QR_ENOMEM, "out of memory for a search");
    *held = NULL;
    size_t slot = x->nunions;
    if (!st && slot == UNION_CACHE) {
        for (size_t i = 0; i < x->nunions; i++)
            if (!x->unions[i].refs && (slot == UNION_CACHE || x->unions[i].used < x->unions[slot].used))
                slot = i;
        if (slot < UNION_CACHE) {
            struct caller_union *c = &x->unions[slot];
            for (size_t j = 0; j < c->np; j++)
                free(c->principals[j]);
            free(c->principals);
            free(c->bits);
            free(c->groups);
            free(c->rows);
            x->unions[slot] = x->unions[--x->nunions];
            slot = x->nunions;
        }
    }
    if (!st && slot < UNION_CACHE) {
        struct caller_union *c = &x->unions[slot];
        c->principals = calloc(np ? np : 1, sizeof(char *));
        bool ok = c->principals != NULL;
        for (size_t j = 0; ok && j < np; j++)
            ok = (c->principals[j] = strdup(sorted[j])) != NULL;
        if (ok) {
            c->key = key;
            c->np = np;
            c->bits = u;
            c->nwords = nw;
            c->groups = groups;
            c->ngroups = ngroups;
            c->rows = rows;
            c->nrows = x->gen_rows;
            c->used = tick;
            c->refs = 1;
            x->nunions++;
            *held = c;
        } else if (c->principals) {
            for (size_t j = 0; j < np; j++)
                free(c->principals[j]);
            free(c->principals);
        }
    }
    pthread_mutex_unlock(&x->cache_mu);
    free(sorted);
    if (st) {
        free(u);
        free(groups);
        free(rows);
        return st;
    }
    *cs = (struct caller_set){u, nw, groups, ngroups, rows, x->gen_rows};
    return QR_OK;
}

static void caller_docs_done(bm25_index *x, struct caller_union *held, struct caller_set *cs)
{
    if (!held) {
        free((void *)cs->bits);
        free((void *)cs->groups);
        free((void *)cs->rows);
        return;
    }
    pthread_mutex_lock(&x->cache_mu);
    held->refs--;
    pthread_mutex_unlock(&x->cache_mu);
}

static bool delta_find(const bm25_index *x, const char *term, size_t n, const delta_list **out)
{
    size_t at;
    if (!bm25_smap_get(&x->d_terms, term, n, &at))
        return false;
    *out = &x->dl[at];
    return true;
}

/* The search proper; caller holds x->lock (read). */
static qr_status search_locked(bm25_index *x, store *s, const char *const *terms, size_t nterms,
                               const double w[3], const char *const *principals, size_t np, bool all,
                               size_t max_per_doc, size_t limit, store_hit *out, size_t *nout,
                               qr_cancel *cancel, char *err)
{
    if (!x->live_rows)
        return QR_OK;
    qr_status st = QR_OK;
    cursor *tc = calloc(nterms, sizeof(*tc));
    size_t *qmap = calloc(nterms, sizeof(*qmap)); /* query term -> cursor */
    size_t *order = calloc(nterms, sizeof(*order));
    double *cum = calloc(nterms, sizeof(*cum));
    double *sc = calloc(nterms, sizeof(*sc));
    uint32_t *cur = calloc(nterms, sizeof(*cur));
    uint32_t *lo = calloc(nterms, sizeof(*lo)), *hi = calloc(nterms, sizeof(*hi));
    double *acc = malloc(WINDOW * sizeof(*acc));
    uint64_t hit[WINDOW / 64] = {0}; /* the window's rows that some essential list holds */
    struct caller_set cs = {0};
    struct caller_union *held = NULL;
    size_t k = limit < x->live_rows ? limit : (size_t)x->live_rows;
    topk top = {.h = calloc(k, sizeof(heap_item)), .k = k, .cap_doc = max_per_doc};
    if (!tc || !qmap || !order || !cum || !sc || !cur || !lo || !hi || !acc || !top.h) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for a search");
        goto out;
    }
    if (!all && (st = caller_docs(x, s, principals, np, &cs, &held, err)))
        goto out;

    /* one cursor per distinct term */
    double N = (double)x->live_rows, avgdl = (double)x->live_len / N;
    size_t nc = 0;
    for (size_t i = 0; i < nterms; i++) {
        size_t j = 0;
        while (j < i && strcmp(terms[j], terms[i]) != 0)
            j++;
        if (j < i) {
            qmap[i] = qmap[j];
            tc[qmap[i]].mult++;
            continue;
        }
        cursor *c = &tc[nc];
        qmap[i] = nc++;
        c->mult = 1;
        c->cs = all ? NULL : &cs;
        size_t len = strlen(terms[i]);
        c->gt = find_gen_term(x, terms[i], len);
        const delta_list *dl = NULL;
        if (delta_find(x, terms[i], len, &dl))
            c->dl = dl;
        if (c->gt) {
            c->gb = c->gt->first_block;
            c->gb_end = c->gt->first_block + c->gt->nblocks;
        }
        uint64_t df = 0;
        if ((c->gt || c->dl) && (st = live_df(x, terms[i], c->gt, c->dl, &df, err)))
            goto out;
        double idf = log((N - (double)df + 0.5) / ((double)df + 0.5));
        c->idf = idf <= 0.0 ? 1e-6 : idf;
        uint32_t max_tf[NCOLS] = {0}, min_len = UINT32_MAX;
        for (int col = 0; col < NCOLS; col++) {
            if (c->gt && c->gt->max_tf[col] > max_tf[col])
                max_tf[col] = c->gt->max_tf[col];
            if (c->dl && c->dl->max_tf[col] > max_tf[col])
                max_tf[col] = c->dl->max_tf[col];
        }
        if (c->gt && c->gt->min_len < min_len)
            min_len = c->gt->min_len;
        if (c->dl && c->dl->n && c->dl->min_len < min_len)
            min_len = c->dl->min_len;
        double fmax = weighted_tf(max_tf, w);
        c->bound = df && fmax > 0 ? term_score(c->idf, fmax, min_len, avgdl) : 0.0;
        c->min_len = min_len;
    }
    for (size_t i = 0; i < nc; i++) {
        cursor *c = &tc[i];
        for (uint32_t t = 0; t < UB_TF; t++) {
            double f = weighted_tf((const uint32_t[NCOLS]){0, 0, t}, w);
            c->ub[t] = f > 0 && c->min_len != UINT32_MAX
                           ? term_score(c->idf, f, (double)c->min_len, avgdl) * (double)c->mult
                           : 0.0;
        }
    }
    /* MaxScore's order: lists by ascending bound; cum[j] bounds what lists order[0..j] add */
    for (size_t i = 0; i < nc; i++)
        order[i] = i;
    for (size_t i = 1; i < nc; i++)
        for (size_t j = i;
             j > 0 && tc[order[j - 1]].bound * tc[order[j - 1]].mult > tc[order[j]].bound * tc[order[j]].mult;
             j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (size_t j = 0; j < nc; j++)
        cum[j] = (j ? cum[j - 1] : 0.0) + tc[order[j]].bound * (double)tc[order[j]].mult;

    /* The candidates go by windows of rows: a window starts at the smallest row of the essential
     * lists and ends at most WINDOW rows on, where the first of their buffers ends, so that every
     * essential posting of the window is in a buffer. A first pass adds up, per row of the
     * window, the bounds of its essential postings (posting_bound: no row length, no division);
     * a second visits the rows in order and scores in full only those that bound can still bring
     * into the top k, each list's buffer passed over in the same order. cur[j]: the row list
     * order[j] is at, while essential; lo[j], hi[j]: its buffer's postings in the window not yet
     * passed; sc[i]: cursor i's score at the current candidate (0 where the chunk lacks it). */
    for (size_t j = 0; j < nc; j++)
        cur[j] = cur_row(x, &tc[order[j]]);
    size_t essential = 0; /* lists order[essential..] are walked; the others only probed */
    size_t steps = 0;     /* candidate rows */
    for (;;) {
        bool full = top.n == top.k;
        double threshold = full ? top.h[0].score : 0.0;
        if (full)
            while (essential < nc && cum[essential] * (1 + BOUND_SLACK) < threshold)
                essential++;
        if (essential == nc)
            break;
        uint32_t base = UINT32_MAX;
        for (size_t j = essential; j < nc; j++)
            if (cur[j] < base)
                base = cur[j];
        if (base == UINT32_MAX)
            break;
        uint32_t wend = base > UINT32_MAX - WINDOW ? UINT32_MAX - 1 : base + (WINDOW - 1);
        for (size_t j = essential; j < nc; j++) {
            const cursor *c = &tc[order[j]];
            if (cur[j] != UINT32_MAX && c->rows[c->bn - 1] < wend)
                wend = c->rows[c->bn - 1];
        }
        for (size_t j = essential; j < nc; j++) {
            const cursor *c = &tc[order[j]];
            uint32_t i = c->bi;
            lo[j] = i;
            if (cur[j] != UINT32_MAX)
                for (; i < c->bn && c->rows[i] <= wend; i++) {
                    uint32_t o = c->rows[i] - base;
                    double bound = posting_bound(c, i, w, avgdl);
                    if (hit[o >> 6] >> (o & 63) & 1) {
                        acc[o] += bound;
                    } else {
                        hit[o >> 6] |= 1ULL << (o & 63);
                        acc[o] = bound;
                    }
                }
            hi[j] = i;
        }
        double rest = essential ? cum[essential - 1] : 0.0; /* what the other lists may add */
        size_t nwords = ((size_t)(wend - base) >> 6) + 1;
        for (size_t wi = 0; wi < nwords; wi++) {
            uint64_t bits = hit[wi];
            hit[wi] = 0;
            for (; bits; bits &= bits - 1) {
                if (++steps % CANCEL_EVERY == 0 && (st = qr_cancel_check(cancel, err)))
                    goto out;
                uint32_t o = (uint32_t)(wi << 6) | (uint32_t)__builtin_ctzll(bits), row = base + o;
                if (full && (acc[o] + rest) * (1 + BOUND_SLACK) < threshold)
                    continue;
                if (bm25_row_dead(x, row) || (!all && !may_read(x, &cs, row)))
                    continue;
                if (row < x->gen_rows) { /* its length and document, while the probes run */
                    __builtin_prefetch(&x->gen_lens[row]);
                    __builtin_prefetch(&x->gen_docs[row]);
                }
                /* probe the non-essential lists, largest bound first, while the chunk can still
                 * enter by the bounds of its postings */
                double ub = acc[o];
                bool in = true;
                for (size_t j = essential; j-- > 0;) {
                    if (full && (ub + cum[j]) * (1 + BOUND_SLACK) < threshold) {
                        in = false;
                        break;
                    }
                    cursor *c = &tc[order[j]];
                    if ((c->gt || c->dl) && probe(x, c, row) == row)
                        ub += posting_bound(c, c->bi, w, avgdl);
                }
                if (!in)
                    continue;
                /* it may: its exact terms, the length part of the denominator as term_score
                 * computes it */
                double len = (double)bm25_row_len(x, row), kd = BM25_K1 * (1 - BM25_B + BM25_B * len / avgdl);
                for (size_t i = 0; i < nc; i++)
                    sc[i] = 0.0;
                for (size_t j = 0; j < nc; j++) {
                    const cursor *c = &tc[order[j]];
                    uint32_t l;
                    if (j >= essential) {
                        for (l = lo[j]; l < hi[j] && c->rows[l] < row; l++)
                            ;
                        lo[j] = l;
                        if (l >= hi[j] || c->rows[l] != row)
                            continue;
                        lo[j] = l + 1;
                    } else {
                        /* probed above: at row if it holds it */
                        l = c->bi;
                        if (l >= c->bn || c->rows[l] != row)
                            continue;
                    }
                    double f = weighted_tf(c->tf[l], w);
                    sc[order[j]] = c->idf * ((f * (BM25_K1 + 1.0)) / (f + kd));
                }
                /* the exact score, added up in query order as FTS5 does */
                double score = 0.0;
                for (size_t i = 0; i < nterms; i++)
                    score += sc[qmap[i]];
                heap_item it = {score, row, 0};
                if (full && !worse(top.h[0], it))
                    continue; /* not better than the k-th: its document need not be read */
                it.doc = bm25_row_doc(x, row);
                topk_push(&top, it);
                full = top.n == top.k;
                threshold = full ? top.h[0].score : 0.0;
            }
        }
        /* the essential lists move past the window */
        for (size_t j = essential; j < nc; j++) {
            if (cur[j] == UINT32_MAX)
                continue;
            cursor *c = &tc[order[j]];
            c->bi = hi[j];
            cur[j] = c->bi < c->bn ? c->rows[c->bi] : refill(x, c) ? c->rows[0] : UINT32_MAX;
        }
    }
    qsort(top.h, top.n, sizeof(*top.h), cmp_hit);
    for (size_t i = 0; i < top.n; i++) {
        uint32_t row = top.h[i].row;
        out[i] = (store_hit){.chunk_id = row < x->gen_rows ? x->gen_ids[row] : x->d_ids[row - x->gen_rows],
                             .doc = top.h[i].doc,
                             .score = top.h[i].score};
    }
    *nout = top.n;
out:
    if (tc) {
        uint64_t decoded = 0, skipped = 0;
        for (size_t j = 0; j < nterms; j++)
            decoded += tc[j].decoded, skipped += tc[j].skipped;
        __atomic_fetch_add(&x->blocks_decoded, decoded, __ATOMIC_RELAXED);
        __atomic_fetch_add(&x->blocks_skipped, skipped, __ATOMIC_RELAXED);
    }
    free(tc);
    free(qmap);
    free(order);
    free(cum);
    free(sc);
    free(cur);
    free(lo);
    free(hi);
    free(acc);
    if (cs.bits)
        caller_docs_done(x, held, &cs);
    free(top.h);
    return st;
}

qr_status bm25_search(bm25_index *x, store *s, const char *const *terms, size_t nterms,
                      const double weights[3], const char *const *principals, size_t nprincipals,
                      bool all_documents, size_t max_per_doc, size_t limit, store_hit *out, size_t *n,
                      qr_cancel *cancel, char *err)
{
    if (!x || !s || (nterms && !terms) || !weights || !n || (limit && !out) || (nprincipals && !principals))
        return qr_fail(err, QR_EINVAL, "bm25_search: NULL argument");
    *n = 0;
    if (nterms > BM25_TERMS_MAX)
        return qr_fail(err, QR_ELIMIT, "search: %zu words, at most %d", nterms, BM25_TERMS_MAX);
    if (nprincipals > STORE_FILTER_PRINCIPALS_MAX)
        return qr_fail(err, QR_ELIMIT, "search: %zu principals, at most %d", nprincipals,
                       STORE_FILTER_PRINCIPALS_MAX);
    for (int i = 0; i < NCOLS; i++)
        if (!isfinite(weights[i]) || weights[i] < 0)
            return qr_fail(err, QR_EINVAL, "search: column weights must be finite and not negative");
    for (size_t i = 0; i < nterms; i++)
        if (!terms[i] || !terms[i][0])
            return qr_fail(err, QR_EINVAL, "search: an empty word");
    for (size_t i = 0; !all_documents && i < nprincipals; i++)
        if (!store_principal_valid(principals[i]))
            return qr_fail(err, QR_EINVAL, "search: invalid principal '%.100s'",
                           principals[i] ? principals[i] : "");
    qr_status st = qr_cancel_check(cancel, err);
    if (!st)
        st = bm25_sync(x, s, false, false, NULL, err);
    if (st || !limit || !nterms || (!all_documents && !nprincipals))
        return st;
    pthread_rwlock_rdlock(&x->lock);
    if (x->broken || !x->map)
        st = qr_fail(err, QR_EUNAVAILABLE, "the BM25 index needs a rebuild");
    else
        st = search_locked(x, s, terms, nterms, weights, principals, nprincipals, all_documents, max_per_doc,
                           limit, out, n, cancel, err);
    pthread_rwlock_unlock(&x->lock);
    return st;
}

qr_status bm25_filter_chunks(bm25_index *x, store *s, const char *const *principals, size_t nprincipals,
                             bool all_documents, const int64_t *ids, size_t n, int64_t *docs, char *err)
{
    if (!x || !s || (n && (!ids || !docs)) || (nprincipals && !principals))
        return qr_fail(err, QR_EINVAL, "bm25_filter_chunks: NULL argument");
    if (nprincipals > STORE_FILTER_PRINCIPALS_MAX)
        return qr_fail(err, QR_ELIMIT, "search: %zu principals, at most %d", nprincipals,
                       STORE_FILTER_PRINCIPALS_MAX);
    for (size_t i = 0; !all_documents && i < nprincipals; i++)
        if (!store_principal_valid(principals[i]))
            return qr_fail(err, QR_EINVAL, "search: invalid principal '%.100s'",
                           principals[i] ? principals[i] : "");
    for (size_t i = 0; i < n; i++)
        docs[i] = -1;
    qr_status st = n ? bm25_sync(x, s, false, false, NULL, err) : QR_OK;
    if (st || !n || (!all_documents && !nprincipals))
        return st;
    struct caller_set cs = {0};
    struct caller_union *held = NULL;
    pthread_rwlock_rdlock(&x->lock);
    if (x->broken || !x->map)
        st = qr_fail(err, QR_EUNAVAILABLE, "the BM25 index needs a rebuild");
    else if (!all_documents)
        st = caller_docs(x, s, principals, nprincipals, &cs, &held, err);
    for (size_t i = 0; i < n && !st; i++) {
        uint32_t row = bm25_find_row(x, ids[i]);
        if (row == UINT32_MAX) {
            docs[i] = -2;
            continue;
        }
        uint32_t doc = bm25_row_doc(x, row);
        if (!bm25_row_dead(x, row) &&
            (all_documents || ((size_t)(doc >> 6) < cs.nwords && (cs.bits[doc >> 6] >> (doc & 63) & 1))))
            docs[i] = doc;
    }
    if (cs.bits)
        caller_docs_done(x, held, &cs);
    pthread_rwlock_unlock(&x->lock);
    if (st)
        for (size_t i = 0; i < n; i++)
            docs[i] = -1;
    return st;
}
