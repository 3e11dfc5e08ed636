/*
 * What BM25 statistics over the caller's permitted set would cost (issue #16 item 4). quarry
 * scores with whole-index statistics (rows, average length, rows per term), as FTS5 and the
 * pruned index do, so a caller's scores move when documents they may not read are added. The
 * alternative is statistics over the chunks the caller may read. This bench measures both sides.
 *
 * Quality: each shared collection is ingested with ACLs from a hash of the document id: every
 * document is readable by group:all, one in two by group:half, one in ten by group:tenth. For a
 * caller of each group, every judged query (as `quarry eval` runs them: plain text, documents
 * at their best chunk, title weight 2) is ranked over the caller's chunks twice by the bench's
 * own BM25 -- FTS5's bm25() arithmetic, checked against quarry's ranking for group:all, where
 * both statistics are the same -- once with whole-index statistics (what quarry returns), once
 * with the permitted set's; nDCG@10 and MAP@100 against the judgments of the documents the caller
 * may read (queries with none are skipped). Then the score of one document is followed while
 * documents only another caller may read are added: the experiment of the issue.
 *
 * Cost: the permitted set's rows per term are not in any index (they change with every ACL and
 * every caller); counting them means walking each query word's whole postings. With --scale DIR
 * (a store with its pruned BM25 index, e.g. one of bench_timing_channel's), 200 queries of 2 to
 * 6 words taken from the store's chunks are timed as a caller of group:staff: the pruned search,
 * and the walk of every query word's postings that permitted-set statistics would add (one
 * single-word search per word, which MaxScore cannot prune).
 *
 * Usage: bench_bm25_stats [--datasets DIR] [--scale STOREDIR] WORKDIR
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/bench_corpus.h"
#include "core/core.h"
#include "index/feed.h"
#include "index/index.h"
#include "ingest/ingest.h"
#include "retrieval/retrieval.h"

#define K1 1.2
#define B  0.75

static const double WEIGHTS[3] = {2, 1, 1};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The ACL of a document: group:all, and group:half / group:tenth by a hash of its id. */
static bool readable(const char *doc_id, int caller)
{
    uint64_t h = hash_str(doc_id) >> 7;
    return caller == 0 || (caller == 1 && h % 2 == 0) || (caller == 2 && h % 10 == 0);
}
static const char *const CALLERS[] = {"group:all", "group:half", "group:tenth"};

/* ---- an in-memory copy of the full-text index -------------------------------------------------- */

typedef struct {
    uint32_t chunk;
    uint32_t tf[3];
} posting;

typedef struct {
    char *term;
    posting *p;
    size_t n, cap;
} term_list;

typedef struct {
    term_list *t; /* open addressing by hash_str */
    size_t cap, n;
    int64_t *ids;   /* chunk ids */
    char **doc_ids; /* their documents */
    uint32_t *len;  /* tokens in all three columns */
    size_t nchunks, cap_chunks;
    int col;
    store *s;
} mem_index;

static term_list *term_get(mem_index *m, const char *term, size_t n, bool add)
{
    if (add && 2 * (m->n + 1) > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4096;
        term_list *t = calloc(cap, sizeof(*t));
        for (size_t i = 0; i < m->cap; i++)
            if (m->t[i].term) {
                size_t j = hash_str(m->t[i].term) & (cap - 1);
                while (t[j].term)
                    j = (j + 1) & (cap - 1);
                t[j] = m->t[i];
            }
        free(m->t);
        m->t = t;
        m->cap = cap;
    }
    if (!m->cap)
        return NULL;
    char key[256];
    snprintf(key, sizeof(key), "%.*s", (int)n, term);
    size_t j = hash_str(key) & (m->cap - 1);
    while (m->t[j].term && strcmp(m->t[j].term, key) != 0)
        j = (j + 1) & (m->cap - 1);
    if (!m->t[j].term) {
        if (!add)
            return NULL;
        m->t[j].term = strdup(key);
        m->n++;
    }
    return &m->t[j];
}

static qr_status on_token(void *ctx, const char *form, size_t len, size_t start, size_t end, char *err)
{
    (void)start, (void)end, (void)err;
    mem_index *m = ctx;
    term_list *t = term_get(m, form, len, true);
    uint32_t chunk = (uint32_t)(m->nchunks - 1);
    if (!t->n || t->p[t->n - 1].chunk != chunk) {
        if (t->n == t->cap)
            t->p = realloc(t->p, (t->cap = t->cap ? t->cap * 2 : 8) * sizeof(posting));
        t->p[t->n++] = (posting){chunk, {0, 0, 0}};
    }
    t->p[t->n - 1].tf[m->col]++;
    m->len[chunk]++;
    return QR_OK;
}

static qr_status on_text(void *ctx, const store_text *t, char *err)
{
    mem_index *m = ctx;
    if (m->nchunks == m->cap_chunks) {
        m->cap_chunks = m->cap_chunks ? m->cap_chunks * 2 : 1024;
        m->ids = realloc(m->ids, m->cap_chunks * sizeof(*m->ids));
        m->doc_ids = realloc(m->doc_ids, m->cap_chunks * sizeof(*m->doc_ids));
        m->len = realloc(m->len, m->cap_chunks * sizeof(*m->len));
    }
    m->ids[m->nchunks] = t->chunk_id;
    m->doc_ids[m->nchunks] = NULL;
    m->len[m->nchunks] = 0;
    m->nchunks++;
    for (m->col = 0; m->col < 3; m->col++) {
        qr_status st = store_tokenize(m->s, t->col[m->col], t->col_len[m->col], on_token, m, err);
        if (st)
            return st;
    }
    return QR_OK;
}

typedef struct {
    mem_index *m;
    size_t at;
} doc_reader;

static qr_status on_chunk(void *ctx, const store_chunk_view *c, char *err)
{
    (void)err;
    doc_reader *d = ctx;
    while (d->at < d->m->nchunks && d->m->ids[d->at] != c->chunk_id)
        d->at++;
    if (d->at < d->m->nchunks)
        d->m->doc_ids[d->at] = strdup(c->doc_id);
    return QR_OK;
}

static qr_status mem_load(mem_index *m, store *s, char *err)
{
    memset(m, 0, sizeof(*m));
    m->s = s;
    int64_t counter;
    qr_status st = store_each_text(s, on_text, m, &counter, err);
    store_filter all = {.all_documents = true};
    doc_reader d = {m, 0};
    return st ? st : store_read_chunks(s, m->ids, m->nchunks, &all, on_chunk, &d, err);
}

/* ---- ranking ------------------------------------------------------------------------------ */

typedef struct {
    double score;
    uint32_t chunk;
} scored;

static int cmp_scored(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->chunk > y->chunk) - (x->chunk < y->chunk);
}

typedef struct {
    const char *term;
    const term_list *t;
} qterm;

/* FTS5's bm25() over the chunks of `caller` for the query terms (repeats count), statistics
 * from every chunk (permitted false) or from the caller's (true); best first into out. */
static size_t rank(const mem_index *m, const qterm *q, size_t nq, int caller, bool permitted,
                   const bool *extra, scored *out)
{
    double nrows = 0, ntok = 0;
    for (size_t c = 0; c < m->nchunks; c++)
        if (!permitted || readable(m->doc_ids[c], caller) || (extra && extra[c])) {
            nrows++;
            ntok += m->len[c];
        }
    double avgdl = ntok / nrows;
    static double *score;
    static bool *hit;
    score = realloc(score, m->nchunks * sizeof(double));
    hit = realloc(hit, m->nchunks);
    memset(score, 0, m->nchunks * sizeof(double));
    memset(hit, 0, m->nchunks);
    for (size_t i = 0; i < nq; i++) {
        if (!q[i].t)
            continue;
        double df = 0;
        for (size_t j = 0; j < q[i].t->n; j++) {
            uint32_t c = q[i].t->p[j].chunk;
            df += !permitted || readable(m->doc_ids[c], caller) || (extra && extra[c]);
        }
        double idf = log((nrows - df + 0.5) / (df + 0.5));
        if (idf <= 0)
            idf = 1e-6;
        for (size_t j = 0; j < q[i].t->n; j++) {
            const posting *p = &q[i].t->p[j];
            double f = 0;
            for (int col = 0; col < 3; col++)
                f += WEIGHTS[col] * p->tf[col];
            score[p->chunk] += idf * f * (K1 + 1) / (f + K1 * (1 - B + B * m->len[p->chunk] / avgdl));
            hit[p->chunk] = 1;
        }
    }
    size_t n = 0;
    for (size_t c = 0; c < m->nchunks; c++)
        if (hit[c] && readable(m->doc_ids[c], caller))
            out[n++] = (scored){score[c], (uint32_t)c};
    qsort(out, n, sizeof(scored), cmp_scored);
    return n;
}

/* The query's words as `quarry eval` searches them (the rank expression's quoted words), as
 * the index holds them. */
typedef struct {
    char form[64];
} word_form;

static qr_status first_form(void *ctx, const char *form, size_t len, size_t start, size_t end, char *err)
{
    (void)start, (void)end, (void)err;
    word_form *w = ctx;
    if (!w->form[0])
        snprintf(w->form, sizeof(w->form), "%.*s", (int)len, form);
    return QR_OK;
}

static size_t query_terms(retrieval *r, store *s, const mem_index *m, const char *text, qterm *out,
                          size_t cap, char forms[][64])
{
    qr_buf rk, rq, ex;
    qr_buf_init(&rk, 1 << 20);
    qr_buf_init(&rq, 1 << 20);
    qr_buf_init(&ex, 1 << 20);
    char err[QR_ERR_LEN];
    size_t n = 0;
    if (!retrieval_query_expressions(r, text, true, &rk, &rq, &ex, err)) {
        const char *p = qr_buf_str(&rk);
        while ((p = strchr(p, '"')) && n < cap) {
            const char *e = strchr(p + 1, '"');
            if (!e)
                break;
            word_form w = {""};
            store_tokenize(s, p + 1, (size_t)(e - p - 1), first_form, &w, err);
            snprintf(forms[n], 64, "%s", w.form);
            out[n] = (qterm){forms[n], term_get((mem_index *)m, w.form, strlen(w.form), false)};
            n++;
            p = e + 1;
        }
    }
    qr_buf_release(&rk);
    qr_buf_release(&rq);
    qr_buf_release(&ex);
    return n;
}

/* ---- the collections ------------------------------------------------------------------------ */

static qr_status ingest(const char *src, qr_config *cfg, store **out, ingest_session **is, char *err)
{
    qr_status st = ingest_session_open(cfg, is, err);
    if (st)
        return st;
    store *s = ingest_session_store(*is);
    store_stats ss;
    if ((st = store_get_stats(s, &ss, err)) || ss.documents) {
        *out = s;
        return st;
    }
    char path[1100], *line = malloc(1 << 20);
    snprintf(path, sizeof(path), "%s/corpus.jsonl", src);
    FILE *f = fopen(path, "r");
    size_t docs = 0;
    ingest_session_batch_begin(*is, err);
    while (f && fgets(line, 1 << 20, f)) {
        json_t *o = json_loads(line, 0, NULL);
        const char *id = json_string_value(json_object_get(o, "_id")),
                   *t = json_string_value(json_object_get(o, "text"));
        if (id && t) {
            const char *acl[3];
            size_t nacl = 0;
            for (int c = 0; c < 3; c++)
                if (readable(id, c))
                    acl[nacl++] = CALLERS[c];
            ingest_source src_doc = {.doc_id = id,
                                     .title = json_string_value(json_object_get(o, "title")),
                                     .declared_type = "text/plain",
                                     .acl = acl,
                                     .nacl = nacl,
                                     .bytes = t,
                                     .len = strlen(t)};
            store_put_result res;
            size_t nch;
            if (!ingest_put(*is, &src_doc, &res, &nch, err) && ++docs % 50 == 0) {
                ingest_session_batch_commit(*is, err);
                ingest_session_batch_begin(*is, err);
            }
        }
        json_decref(o);
    }
    st = ingest_session_batch_commit(*is, err);
    if (f)
        fclose(f);
    free(line);
    *out = s;
    return st;
}

/* Ranks the query over m for caller, documents at their best chunk, into ranked (100 at most). */
static size_t ranked_docs(const mem_index *m, const qterm *q, size_t nq, int caller, bool permitted,
                          const bool *extra, scored *buf, const char **ranked)
{
    size_t n = rank(m, q, nq, caller, permitted, extra, buf), nr = 0;
    for (size_t i = 0; i < n && nr < 100; i++) {
        const char *d = m->doc_ids[buf[i].chunk];
        bool seen = false;
        for (size_t j = 0; j < nr && !seen; j++)
            seen = strcmp(ranked[j], d) == 0;
        if (!seen)
            ranked[nr++] = d;
    }
    return nr;
}

static int quality(const char *work, const char *datasets, const char *name, qr_config *cfg)
{
    char err[QR_ERR_LEN], dir[1024], src[1024];
    snprintf(dir, sizeof(dir), "%s/%s", work, name);
    snprintf(src, sizeof(src), "%s/%s", datasets, name);
    ingest_session *is = NULL;
    store *s = NULL;
    retrieval *r = NULL;
    mem_index m;
    memset(&m, 0, sizeof(m));
    int rc = 1;
    if (qr_config_set(cfg, "data.dir", dir, QR_CFG_SRC_CLI, err) || ingest(src, cfg, &s, &is, err) ||
        mem_load(&m, s, err)) {
        fprintf(stderr, "bench_bm25_stats: %s\n", err);
        goto out;
    }
    retrieval_opts o;
    retrieval_opts_from_config(cfg, &o);
    o.bm25_pruned = false;
    if (retrieval_open(s, NULL, &o, &r, err)) {
        fprintf(stderr, "bench_bm25_stats: %s\n", err);
        goto out;
    }
    bench_query *qs = NULL;
    size_t nq = bench_load_queries(src, &qs);
    scored *buf = malloc(m.nchunks * sizeof(scored));
    qterm terms[512];
    char(*forms)[64] = malloc(512 * 64);
    const char *ranked[100];
    /* the bench's arithmetic against quarry's, for group:all: same chunks, same scores */
    size_t compared = 0, differ = 0;
    double max_diff = 0;
    for (size_t i = 0; i < nq; i++) {
        size_t nt = query_terms(r, s, &m, qs[i].text, terms, 512, forms);
        const char *p[] = {CALLERS[0]};
        retrieval_caller c = {p, 1, false};
        retrieval_request q = {.query = qs[i].text, .plain = true, .mode = RETRIEVAL_BM25, .k = 10};
        retrieval_result *res = NULL;
        if (retrieval_search(r, &c, &q, &res, err))
            continue;
        size_t n = rank(&m, terms, nt, 0, false, NULL, buf);
        for (size_t h = 0; h < res->nhits && h < n; h++, compared++) {
            differ += res->hits[h].chunk_id != m.ids[buf[h].chunk];
            double d = fabs(res->hits[h].score - buf[h].score) / fmax(1, fabs(res->hits[h].score));
            max_diff = d > max_diff ? d : max_diff;
        }
        retrieval_result_free(res);
    }
    printf(
        "\n%s: %zu chunks; the bench's BM25 against quarry's for group:all: %zu of %zu top-10 places differ, "
        "largest relative score difference %.1e\n\n",
        name, m.nchunks, differ, compared, max_diff);
    printf("| collection | caller | statistics | nDCG@10 | MAP@100 | queries |\n|---|---|---|---|---|---|\n");
    for (int caller = 0; caller < 3; caller++) {
        for (int perm = 0; perm < 2 && !(caller == 0 && perm); perm++) {
            double ndcg = 0, map = 0;
            size_t counted = 0;
            for (size_t i = 0; i < nq; i++) {
                retrieval_judgment *j = malloc((qs[i].nj ? qs[i].nj : 1) * sizeof(*j));
                size_t nj = 0;
                bool rel = false;
                for (size_t x = 0; x < qs[i].nj; x++)
                    if (readable(qs[i].j[x].doc_id, caller)) {
                        j[nj++] = qs[i].j[x];
                        rel |= qs[i].j[x].grade > 0;
                    }
                if (rel) {
                    size_t nt = query_terms(r, s, &m, qs[i].text, terms, 512, forms);
                    size_t nr = ranked_docs(&m, terms, nt, caller, perm, NULL, buf, ranked);
                    retrieval_metrics mt;
                    if (!retrieval_eval_ranking(ranked, nr, j, nj, &mt, err)) {
                        ndcg += mt.ndcg10;
                        map += mt.map100;
                        counted++;
                    }
                }
                free(j);
            }
            printf("| %s | %s | %s | %.4f | %.4f | %zu |\n", name, CALLERS[caller],
                   caller == 0 ? "whole index = permitted set"
                   : perm      ? "permitted set"
                               : "whole index",
                   ndcg / (double)counted, map / (double)counted, counted);
        }
    }
    /* the experiment: a document group:half may read, scored for one of its own words while
     * documents only another caller may read, holding that word, are added (simulated: chunks
     * marked readable by nobody but counted as index rows holding the word) */
    size_t target = SIZE_MAX;
    for (size_t c = 0; c < m.nchunks && target == SIZE_MAX; c++)
        if (readable(m.doc_ids[c], 1) && !readable(m.doc_ids[c], 2))
            target = c;
    if (target != SIZE_MAX) {
        /* its rarest word that two to ten chunks hold */
        const term_list *best = NULL;
        for (size_t i = 0; i < m.cap; i++) {
            const term_list *t = &m.t[i];
            if (!t->term || t->n < 2 || t->n > 10)
                continue;
            for (size_t j = 0; j < t->n; j++)
                if (t->p[j].chunk == target && (!best || t->n < best->n))
                    best = t;
        }
        if (best) {
            printf(
                "\nThe score of chunk %lld (readable by group:half) for \"%s\" as hidden chunks holding the "
                "word are added (whole-index statistics / permitted set's):\n\n| hidden chunks added | "
                "whole index | permitted set |\n|---|---|---|\n",
                (long long)m.ids[target], best->term);
            term_list *t = term_get(&m, best->term, strlen(best->term), false);
            size_t base = t->n;
            static const size_t adds[] = {0, 1, 5, 50};
            for (size_t a = 0; a < 4; a++) {
                /* hidden chunks: copies of a group:tenth-only chunk's length holding the word */
                while (t->n < base + adds[a]) {
                    if (t->n == t->cap)
                        t->p = realloc(t->p, (t->cap *= 2) * sizeof(posting));
                    if (m.nchunks == m.cap_chunks) {
                        m.cap_chunks *= 2;
                        m.ids = realloc(m.ids, m.cap_chunks * sizeof(*m.ids));
                        m.doc_ids = realloc(m.doc_ids, m.cap_chunks * sizeof(*m.doc_ids));
                        m.len = realloc(m.len, m.cap_chunks * sizeof(*m.len));
                        buf = realloc(buf, m.cap_chunks * sizeof(scored));
                    }
                    m.ids[m.nchunks] = -1;
                    m.doc_ids[m.nchunks] = strdup("hidden-only");
                    m.len[m.nchunks] = m.len[target];
                    t->p[t->n++] = (posting){(uint32_t)m.nchunks++, {0, 0, 1}};
                }
                qterm q = {best->term, t};
                double sc[2] = {0, 0};
                for (int perm = 0; perm < 2; perm++) {
                    size_t n = rank(&m, &q, 1, 1, perm, NULL, buf);
                    for (size_t i = 0; i < n; i++)
                        if (buf[i].chunk == target)
                            sc[perm] = buf[i].score;
                }
                printf("| %zu | %.4f | %.4f |\n", adds[a], sc[0], sc[1]);
            }
        }
    }
    free(buf);
    free(forms);
    bench_free_queries(qs, nq);
    rc = 0;
out:
    retrieval_close(r);
    ingest_session_close(is);
    return rc;
}

/* ---- the cost at scale -------------------------------------------------------------------- */

typedef struct {
    char (*words)[64];
    size_t n, cap;
    uint64_t seen;
} word_pick;

static qr_status pick_word(void *ctx, const char *form, size_t len, size_t start, size_t end, char *err)
{
    (void)start, (void)end, (void)err;
    word_pick *w = ctx;
    if (w->n < w->cap && ++w->seen % 97 == 0 && len < 64)
        snprintf(w->words[w->n++], 64, "%.*s", (int)len, form);
    return QR_OK;
}

typedef struct {
    store *s;
    word_pick *w;
    size_t chunks;
} text_pick;

static qr_status pick_text(void *ctx, const store_text *t, char *err)
{
    text_pick *p = ctx;
    if (++p->chunks % 101 != 0)
        return QR_OK;
    return store_tokenize(p->s, t->col[2], t->col_len[2], pick_word, p->w, err);
}

static int scale(const char *dir, qr_config *cfg)
{
    char err[QR_ERR_LEN];
    store *s = NULL;
    bm25_index *x = NULL;
    bm25_opts bo;
    bm25_opts_from_config(cfg, &bo);
    word_pick w = {malloc(4096 * 64), 0, 4096, 0};
    text_pick tp = {NULL, &w, 0};
    int64_t counter;
    if (store_open(dir, &s, err) || bm25_open(s, dir, &bo, false, &x, NULL, err) ||
        (tp.s = s, store_each_text(s, pick_text, &tp, &counter, err))) {
        fprintf(stderr, "bench_bm25_stats: %s\n", err);
        bm25_close(x);
        store_close(s);
        free(w.words);
        return 1;
    }
    const char *staff[] = {"user:ava", "group:staff", "public"};
    const double wts[3] = {2, 1, 1};
    store_hit hits[11];
    size_t nq = 200, n;
    double *search = malloc(nq * sizeof(double)), *walk = malloc(nq * sizeof(double));
    uint64_t rs = 0x5eed;
    for (size_t i = 0; i < nq && w.n; i++) {
        const char *terms[6];
        size_t nt = 2 + i % 5;
        for (size_t t = 0; t < nt; t++) {
            rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
            terms[t] = w.words[rs % w.n];
        }
        uint64_t t0 = qr_now_ns();
        bm25_search(x, s, terms, nt, wts, staff, 3, false, 0, 11, hits, &n, NULL, err);
        uint64_t t1 = qr_now_ns();
        for (size_t t = 0; t < nt; t++)
            bm25_search(x, s, &terms[t], 1, wts, staff, 3, false, 0, 1, hits, &n, NULL, err);
        uint64_t t2 = qr_now_ns();
        search[i] = (t1 - t0) / 1e6;
        walk[i] = (t2 - t1) / 1e6;
    }
    qsort(search, nq, sizeof(double), cmp_double);
    qsort(walk, nq, sizeof(double), cmp_double);
    bm25_info info;
    bm25_get_info(x, &info);
    printf("\n%s: %zu chunks, %zu queries of 2 to 6 of the store's words, caller group:staff, one thread\n\n"
           "| | p50 ms | p95 ms |\n|---|---|---|\n| pruned search (whole-index statistics) | %.3f | %.3f |\n"
           "| walk of every query word's postings (what permitted-set statistics add) | %.3f | %.3f |\n",
           dir, info.rows, nq, search[nq / 2], search[nq * 95 / 100], walk[nq / 2], walk[nq * 95 / 100]);
    free(search);
    free(walk);
    free(w.words);
    bm25_close(x);
    store_close(s);
    return 0;
}

int main(int argc, char **argv)
{
    const char *datasets = "../shared/datasets", *work = NULL, *scale_dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--datasets") == 0 && i + 1 < argc)
            datasets = argv[++i];
        else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc)
            scale_dir = argv[++i];
        else if (argv[i][0] != '-')
            work = argv[i];
        else
            work = NULL, i = argc;
    }
    if (!work) {
        fprintf(stderr, "usage: bench_bm25_stats [--datasets DIR] [--scale STOREDIR] WORKDIR\n");
        return 2;
    }
    char err[QR_ERR_LEN];
    qr_log_configure(QR_LOG_WARN, QR_LOG_TEXT, "", err);
    qr_config *cfg = qr_config_new();
    if (!cfg || qr_config_load_env(cfg, NULL, err)) {
        fprintf(stderr, "bench_bm25_stats: %s\n", err);
        return 1;
    }
    mkdir(work, 0700);
    int rc = 0;
    static const char *names[] = {"cranfield", "cisi"};
    for (int c = 0; c < 2; c++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s/corpus.jsonl", datasets, names[c]);
        if (access(path, R_OK) != 0)
            printf("(%s not found: skipped)\n", path);
        else
            rc |= quality(work, datasets, names[c], cfg);
    }
    if (scale_dir)
        rc |= scale(scale_dir, cfg);
    qr_config_free(cfg);
    return rc;
}
