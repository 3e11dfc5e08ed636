/*
 * A pruned BM25 top-k beside FTS5 ([bm25-topk], issue 9): a PROTOTYPE, not used by retrieval.
 *
 * store_bm25_build reads the full-text index once into memory -- every term's postings (chunk,
 * occurrences per column) from an fts5vocab 'instance' table, every row's column sizes from the
 * FTS5 docsize table -- and store_bm25_search answers an OR of single-token terms with the top k
 * by MaxScore (Turtle and Flood 1995): terms are ordered by their upper bound, the lists whose
 * bounds sum to no more than the k-th best score so far are not walked, only probed for the
 * candidates the others bring, and a candidate is dropped as soon as its bound falls below the
 * k-th score. Scores are FTS5's bm25() computed the way FTS5 computes them (IDF
 * log((N - n + 0.5) / (n + 0.5)) floored at 1e-6, k1 1.2, b 0.75, per-column weights added once
 * per occurrence in column order, the row length summed over all columns, phrases added in query
 * order), so the top k, its scores and its tie order (smaller chunk id first) are those of
 * store_search_bm25 for the expression "t1" OR "t2" ... (tests/test_bm25topk.c checks it).
 *
 * Not done yet (see bench/README.md, "BM25 top-k"): the index is a snapshot, not kept in step
 * with ingestion; permission is a sorted list of permitted chunk ids made into a bitmap per query
 * (the pruned loop skips forbidden chunks, so they never take a place, but listing them costs
 * O(permitted)); no per-document limit, phrases or exclusions; no block-max bounds; memory is
 * plain arrays (16 bytes per posting plus growth slack).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "index/index.h"
#include "index/store_int.h"

#define BM25_K1 1.2
#define BM25_B  0.75
#define NCOLS   3
/* A bound is compared with a score only after this relative slack, so that rounding in the
 * bound's sum can never prune a chunk whose exact score would have entered the top k. */
#define BOUND_SLACK 1e-9

typedef struct {
    char *term;
    uint32_t *rows;        /* dense row numbers, ascending */
    uint32_t (*tf)[NCOLS]; /* occurrences per column, parallel to rows */
    size_t n, cap;
    uint32_t max_tf[NCOLS]; /* per column, over the list */
    uint32_t min_len;       /* shortest row holding the term */
} posting_list;

struct store_bm25_index {
    int64_t *chunk_ids; /* row number -> chunk id, ascending */
    int64_t *docs;      /* row number -> document key */
    uint32_t *lens;     /* row number -> tokens over all columns */
    size_t nrows;
    double avgdl;
    posting_list *terms; /* sorted by term */
    size_t nterms, cap_terms;
};

void store_bm25_free(store_bm25_index *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->nterms; i++) {
        free(x->terms[i].term);
        free(x->terms[i].rows);
        free(x->terms[i].tf);
    }
    free(x->terms);
    free(x->chunk_ids);
    free(x->docs);
    free(x->lens);
    free(x);
}

static qr_status sql_fail(sqlite3 *db, char *err, const char *what)
{
    return qr_fail(err, QR_EIO, "cannot %s for the BM25 index: %s", what, sqlite3_errmsg(db));
}

/* SQLite's varint (FTS5 writes column sizes with it); 0 bytes read when the blob ends early. */
static size_t get_varint(const unsigned char *p, size_t n, uint64_t *v)
{
    *v = 0;
    for (size_t i = 0; i < n && i < 9; i++) {
        if (i == 8) {
            *v = (*v << 8) | p[i];
            return 9;
        }
        *v = (*v << 7) | (p[i] & 0x7f);
        if (!(p[i] & 0x80))
            return i + 1;
    }
    return 0;
}

static qr_status load_rows(sqlite3 *db, store_bm25_index *x, char *err)
{
    sqlite3_stmt *q = NULL;
    qr_status st = QR_OK;
    size_t cap = 0;
    int rc =
        sqlite3_prepare_v2(db,
                           "SELECT f.id, c.doc, f.sz FROM chunks_fts_docsize f JOIN chunks c ON c.id = f.id"
                           " ORDER BY f.id",
                           -1, &q, NULL);
    if (rc != SQLITE_OK)
        return sql_fail(db, err, "read row sizes");
    uint64_t total = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (x->nrows == cap) {
            cap = cap ? cap * 2 : 1024;
            int64_t *ids = realloc(x->chunk_ids, cap * sizeof(*ids));
            if (ids)
                x->chunk_ids = ids;
            int64_t *docs = realloc(x->docs, cap * sizeof(*docs));
            if (docs)
                x->docs = docs;
            uint32_t *lens = realloc(x->lens, cap * sizeof(*lens));
            if (lens)
                x->lens = lens;
            if (!ids || !docs || !lens) {
                st = qr_fail(err, QR_ENOMEM, "out of memory for the BM25 index");
                goto out;
            }
        }
        const unsigned char *sz = sqlite3_column_blob(q, 2);
        size_t nsz = (size_t)sqlite3_column_bytes(q, 2), at = 0;
        uint64_t len = 0;
        for (int c = 0; c < NCOLS; c++) {
            uint64_t v;
            size_t used = get_varint(sz + at, nsz - at, &v);
            if (!used) {
                st = qr_fail(err, QR_EIO, "malformed column sizes of chunk %lld",
                             (long long)sqlite3_column_int64(q, 0));
                goto out;
            }
            at += used;
            len += v;
        }
        x->chunk_ids[x->nrows] = sqlite3_column_int64(q, 0);
        x->docs[x->nrows] = sqlite3_column_int64(q, 1);
        x->lens[x->nrows] = (uint32_t)len;
        total += len;
        x->nrows++;
    }
    if (rc != SQLITE_DONE)
        st = sql_fail(db, err, "read row sizes");
    x->avgdl = x->nrows ? (double)total / (double)x->nrows : 0;
out:
    sqlite3_finalize(q);
    return st;
}

static size_t row_of(const store_bm25_index *x, int64_t chunk_id)
{
    size_t lo = 0, hi = x->nrows;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (x->chunk_ids[mid] < chunk_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static qr_status push_posting(posting_list *p, uint32_t row, int col, char *err)
{
    if (!p->n || p->rows[p->n - 1] != row) {
        if (p->n == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 4;
            uint32_t *rows = realloc(p->rows, cap * sizeof(*rows));
            if (rows)
                p->rows = rows;
            uint32_t(*tf)[NCOLS] = realloc(p->tf, cap * sizeof(*tf));
            if (tf)
                p->tf = tf;
            if (!rows || !tf)
                return qr_fail(err, QR_ENOMEM, "out of memory for the BM25 index");
            p->cap = cap;
        }
        p->rows[p->n] = row;
        memset(p->tf[p->n], 0, sizeof(p->tf[p->n]));
        p->n++;
    }
    p->tf[p->n - 1][col]++; /* a chunk is at most 1 MiB: far below 2^32 occurrences */
    return QR_OK;
}

static qr_status load_postings(sqlite3 *db, store_bm25_index *x, char *err)
{
    sqlite3_stmt *q = NULL;
    qr_status st = QR_OK;
    int rc = sqlite3_exec(db,
                          "CREATE VIRTUAL TABLE IF NOT EXISTS temp.quarry_bm25_instance"
                          " USING fts5vocab(main, 'chunks_fts', 'instance')",
                          NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sql_fail(db, err, "open the term instances");
    /* fts5vocab lists instances by term, then row, column and offset */
    rc = sqlite3_prepare_v2(db, "SELECT term, doc, col FROM temp.quarry_bm25_instance", -1, &q, NULL);
    if (rc != SQLITE_OK)
        return sql_fail(db, err, "read the term instances");
    posting_list *cur = NULL;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *term = (const char *)sqlite3_column_text(q, 0);
        const char *colname = (const char *)sqlite3_column_text(q, 2);
        int64_t chunk_id = sqlite3_column_int64(q, 1);
        if (!term || !colname)
            continue;
        int col = strcmp(colname, "title") == 0 ? 0 : strcmp(colname, "headings") == 0 ? 1 : 2;
        size_t row = row_of(x, chunk_id);
        if (row == x->nrows || x->chunk_ids[row] != chunk_id) {
            st = qr_fail(err, QR_EIO, "term '%.100s' in chunk %lld, which has no row size", term,
                         (long long)chunk_id);
            goto out;
        }
        if (!cur || strcmp(cur->term, term) != 0) {
            if (x->nterms == x->cap_terms) {
                size_t cap = x->cap_terms ? x->cap_terms * 2 : 1024;
                posting_list *t = realloc(x->terms, cap * sizeof(*t));
                if (!t) {
                    st = qr_fail(err, QR_ENOMEM, "out of memory for the BM25 index");
                    goto out;
                }
                x->terms = t;
                x->cap_terms = cap;
            }
            cur = &x->terms[x->nterms];
            memset(cur, 0, sizeof(*cur));
            if (!(cur->term = strdup(term))) {
                st = qr_fail(err, QR_ENOMEM, "out of memory for the BM25 index");
                goto out;
            }
            x->nterms++;
        }
        if ((st = push_posting(cur, (uint32_t)row, col, err)))
            goto out;
    }
    if (rc != SQLITE_DONE) {
        st = sql_fail(db, err, "read the term instances");
        goto out;
    }
    for (size_t t = 0; t < x->nterms; t++) {
        posting_list *p = &x->terms[t];
        p->min_len = UINT32_MAX;
        for (size_t i = 0; i < p->n; i++) {
            for (int c = 0; c < NCOLS; c++)
                if (p->tf[i][c] > p->max_tf[c])
                    p->max_tf[c] = p->tf[i][c];
            if (x->lens[p->rows[i]] < p->min_len)
                p->min_len = x->lens[p->rows[i]];
        }
    }
out:
    sqlite3_finalize(q);
    return st;
}

static int cmp_term(const void *a, const void *b)
{
    return strcmp(((const posting_list *)a)->term, ((const posting_list *)b)->term);
}

qr_status store_bm25_build(store *s, store_bm25_index **out, char *err)
{
    if (!s || !out)
        return qr_fail(err, QR_EINVAL, "store_bm25_build: NULL argument");
    *out = NULL;
    sqlite3 *db = store_db(s);
    if (!sqlite3_get_autocommit(db))
        return qr_fail(err, QR_EINVAL, "store_bm25_build: a transaction is open on the store");
    store_bm25_index *x = calloc(1, sizeof(*x));
    if (!x)
        return qr_fail(err, QR_ENOMEM, "out of memory for the BM25 index");
    qr_status st = QR_OK;
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        st = sql_fail(db, err, "start a read transaction");
        goto out;
    }
    if (!(st = load_rows(db, x, err)))
        st = load_postings(db, x, err);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    /* the vocabulary arrives in FTS5's order (bytes); sort for bsearch whatever it is */
    if (!st && x->nterms)
        qsort(x->terms, x->nterms, sizeof(*x->terms), cmp_term);
out:
    if (st) {
        store_bm25_free(x);
        return st;
    }
    *out = x;
    return QR_OK;
}

size_t store_bm25_rows(const store_bm25_index *x)
{
    return x ? x->nrows : 0;
}

/* ---- search ------------------------------------------------------------------------------ */

typedef struct {
    const posting_list *p; /* NULL: the term is not in the index */
    double idf, bound;
    size_t at; /* cursor */
    double f;  /* the weighted frequency at the current candidate */
} term_cursor;

/* The row's score exactly as FTS5's bm25() adds it up: phrases in query order, each term's
 * saturation divided out before its IDF multiplies it (the order matters to the last bit). */
static double score_row(const term_cursor *tc, size_t nt, double len, double avgdl)
{
    double score = 0.0;
    for (size_t i = 0; i < nt; i++)
        score += tc[i].idf *
                 ((tc[i].f * (BM25_K1 + 1.0)) / (tc[i].f + BM25_K1 * (1 - BM25_B + BM25_B * len / avgdl)));
    return score;
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

/* Moves the cursor to the first posting at or after row (galloping, then bisection). */
static void seek(term_cursor *c, uint32_t row)
{
    const posting_list *p = c->p;
    if (c->at >= p->n || p->rows[c->at] >= row)
        return;
    size_t step = 1, lo = c->at, hi = c->at + 1;
    while (hi < p->n && p->rows[hi] < row) {
        lo = hi;
        step *= 2;
        hi = lo + step;
    }
    if (hi > p->n)
        hi = p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->rows[mid] < row)
            lo = mid + 1;
        else
            hi = mid;
    }
    c->at = lo;
}

/* The top k as a binary heap whose root is the worst: lowest score, then largest row. */
typedef struct {
    double score;
    uint32_t row;
} heap_item;

static bool worse(heap_item a, heap_item b)
{
    return a.score < b.score || (a.score == b.score && a.row > b.row);
}

static void heap_sift_down(heap_item *h, size_t n, size_t i)
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

static void heap_push(heap_item *h, size_t *n, size_t k, heap_item it)
{
    if (*n < k) {
        size_t i = (*n)++;
        h[i] = it;
        while (i > 0 && worse(h[i], h[(i - 1) / 2])) {
            heap_item t = h[i];
            h[i] = h[(i - 1) / 2];
            h[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
    } else if (worse(h[0], it)) {
        h[0] = it;
        heap_sift_down(h, *n, 0);
    }
}

static int cmp_hit(const void *a, const void *b)
{
    const heap_item *x = a, *y = b;
    return worse(*y, *x) ? -1 : worse(*x, *y) ? 1 : 0;
}

static const posting_list *find_term(const store_bm25_index *x, const char *term)
{
    posting_list key = {.term = (char *)term};
    return x->nterms ? bsearch(&key, x->terms, x->nterms, sizeof(*x->terms), cmp_term) : NULL;
}

qr_status store_bm25_search(const store_bm25_index *x, const char *const *terms, size_t nterms,
                            const double weights[3], const int64_t *permitted, size_t npermitted,
                            bool all_permitted, size_t limit, store_hit *out, size_t *n, char *err)
{
    if (!x || (nterms && !terms) || !weights || !n || (limit && !out) ||
        (!all_permitted && npermitted && !permitted))
        return qr_fail(err, QR_EINVAL, "store_bm25_search: NULL argument");
    *n = 0;
    for (int i = 0; i < NCOLS; i++)
        if (!isfinite(weights[i]) || weights[i] < 0)
            return qr_fail(err, QR_EINVAL, "search: column weights must be finite and not negative");
    if (!limit || !nterms || !x->nrows)
        return QR_OK;
    qr_status st = QR_OK;
    term_cursor *tc = calloc(nterms, sizeof(*tc));
    size_t *order = calloc(nterms, sizeof(*order));
    double *cum = calloc(nterms, sizeof(*cum));
    heap_item *heap = calloc(limit < x->nrows ? limit : x->nrows, sizeof(*heap));
    uint8_t *allowed = all_permitted ? NULL : calloc((x->nrows + 7) / 8, 1);
    size_t k = limit < x->nrows ? limit : x->nrows, nheap = 0;
    if (!tc || !order || !cum || !heap || (!all_permitted && !allowed)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for a search");
        goto out;
    }
    for (size_t i = 0; !all_permitted && i < npermitted; i++) {
        size_t row = row_of(x, permitted[i]);
        if (row < x->nrows && x->chunk_ids[row] == permitted[i])
            allowed[row / 8] |= (uint8_t)(1u << (row % 8));
    }
    double N = (double)x->nrows;
    for (size_t i = 0; i < nterms; i++) {
        if (!terms[i]) {
            st = qr_fail(err, QR_EINVAL, "store_bm25_search: NULL term");
            goto out;
        }
        tc[i].p = find_term(x, terms[i]);
        if (!tc[i].p)
            continue;
        double hits = (double)tc[i].p->n;
        double idf = log((N - hits + 0.5) / (hits + 0.5));
        tc[i].idf = idf <= 0.0 ? 1e-6 : idf;
        double fmax = 0.0;
        for (int c = 0; c < NCOLS; c++)
            fmax += weights[c] * tc[i].p->max_tf[c];
        tc[i].bound = fmax > 0 ? term_score(tc[i].idf, fmax, tc[i].p->min_len, x->avgdl) : 0.0;
    }
    /* MaxScore's order: lists by ascending bound; cum[j] bounds what lists order[0..j] add */
    for (size_t i = 0; i < nterms; i++)
        order[i] = i;
    for (size_t i = 1; i < nterms; i++)
        for (size_t j = i; j > 0 && tc[order[j - 1]].bound > tc[order[j]].bound; j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (size_t j = 0; j < nterms; j++)
        cum[j] = (j ? cum[j - 1] : 0.0) + tc[order[j]].bound;

    size_t essential = 0; /* lists order[essential..] are walked; the others only probed */
    for (;;) {
        double threshold = nheap == k ? heap[0].score : -1.0;
        if (nheap == k)
            while (essential < nterms && cum[essential] * (1 + BOUND_SLACK) < threshold)
                essential++;
        if (essential == nterms)
            break;
        uint32_t row = UINT32_MAX;
        for (size_t j = essential; j < nterms; j++) {
            term_cursor *c = &tc[order[j]];
            if (c->p && c->at < c->p->n && c->p->rows[c->at] < row)
                row = c->p->rows[c->at];
        }
        if (row == UINT32_MAX)
            break;
        for (size_t i = 0; i < nterms; i++)
            tc[i].f = 0.0;
        bool ok = all_permitted || (allowed[row / 8] >> (row % 8) & 1);
        double len = (double)x->lens[row], partial = 0.0;
        for (size_t j = essential; j < nterms; j++) {
            term_cursor *c = &tc[order[j]];
            if (c->p && c->at < c->p->n && c->p->rows[c->at] == row) {
                if (ok) {
                    c->f = weighted_tf(c->p->tf[c->at], weights);
                    partial += term_score(c->idf, c->f, len, x->avgdl);
                }
                c->at++;
            }
        }
        if (!ok)
            continue;
        /* probe the non-essential lists, largest bound first, while the chunk can still enter */
        for (size_t j = essential; j-- > 0;) {
            if (nheap == k && (partial + cum[j]) * (1 + BOUND_SLACK) < threshold) {
                ok = false;
                break;
            }
            term_cursor *c = &tc[order[j]];
            if (!c->p)
                continue;
            seek(c, row);
            if (c->at < c->p->n && c->p->rows[c->at] == row) {
                c->f = weighted_tf(c->p->tf[c->at], weights);
                partial += term_score(c->idf, c->f, len, x->avgdl);
            }
        }
        if (!ok)
            continue;
        heap_push(heap, &nheap, k, (heap_item){score_row(tc, nterms, len, x->avgdl), row});
    }
    qsort(heap, nheap, sizeof(*heap), cmp_hit);
    for (size_t i = 0; i < nheap; i++)
        out[i] = (store_hit){
            .chunk_id = x->chunk_ids[heap[i].row], .doc = x->docs[heap[i].row], .score = heap[i].score};
    *n = nheap;
out:
    free(tc);
    free(order);
    free(cum);
    free(heap);
    free(allowed);
    return st;
}
