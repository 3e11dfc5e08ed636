/*
 * embed_eval: the measurement that chose the local embedder. For each collection (BEIR layout:
 * corpus.jsonl, queries.jsonl, qrels.tsv) it prints nDCG@10 and recall@100 of
 *   - BM25 (k1 1.2, b 0.75, FTS5's idf; Porter stems, query stopwords dropped), computed here so
 *     that the bench needs no store, next to the reference FTS5 figures in the datasets README;
 *   - vector-only search (brute-force cosine over the local embedder's vectors), and
 *   - RRF fusion (k = 60) of the BM25 and vector top-100 lists,
 * for a table of embedder variants (features and dimensions), and marks the default.
 *
 * usage: bench_embed_eval [DATASET_DIR...]   (default: ../shared/datasets/{cranfield,cisi})
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest_int.h"

#define TOPK   100
#define RRF_K  60.0
#define NSEEDS 5

typedef struct {
    char **ids;
    char **texts;     /* title and text, for embedding */
    char **fields[2]; /* title, text: BM25 scores them as FTS5 scores columns */
    size_t n;
} text_set;

typedef struct {
    size_t query, doc;
    int rel;
} qrel;

typedef struct {
    const char *name;
    text_set docs, queries;
    qrel *qrels;
    size_t nqrels;
} collection;

/* ---- loading ------------------------------------------------------------------------------- */

static void set_add(text_set *s, const char *id, const char *title, const char *text)
{
    s->ids = realloc(s->ids, (s->n + 1) * sizeof(char *));
    s->texts = realloc(s->texts, (s->n + 1) * sizeof(char *));
    s->fields[0] = realloc(s->fields[0], (s->n + 1) * sizeof(char *));
    s->fields[1] = realloc(s->fields[1], (s->n + 1) * sizeof(char *));
    s->ids[s->n] = strdup(id);
    if (asprintf(&s->texts[s->n], "%s\n%s", title, text) < 0)
        s->texts[s->n] = strdup(text);
    s->fields[0][s->n] = strdup(title);
    s->fields[1][s->n] = strdup(text);
    s->n++;
}

static bool load_jsonl(const char *path, text_set *s)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return false;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_t *j = json_loadb(line, (size_t)n, 0, NULL);
        if (!j)
            continue;
        const char *id = json_string_value(json_object_get(j, "_id"));
        const char *title = json_string_value(json_object_get(j, "title"));
        const char *text = json_string_value(json_object_get(j, "text"));
        if (id)
            set_add(s, id, title ? title : "", text ? text : "");
        json_decref(j);
    }
    free(line);
    fclose(f);
    return s->n > 0;
}

static long find_id(const text_set *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->ids[i], id) == 0)
            return (long)i;
    return -1;
}

static bool load_collection(const char *dir, collection *c)
{
    char path[1024];
    memset(c, 0, sizeof(*c));
    c->name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    snprintf(path, sizeof(path), "%s/corpus.jsonl", dir);
    if (!load_jsonl(path, &c->docs))
        return false;
    snprintf(path, sizeof(path), "%s/queries.jsonl", dir);
    if (!load_jsonl(path, &c->queries))
        return false;
    snprintf(path, sizeof(path), "%s/qrels.tsv", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char q[128], d[128];
    int rel;
    char header[256];
    if (!fgets(header, sizeof(header), f)) {
        fclose(f);
        return false;
    }
    while (fscanf(f, "%127s %127s %d", q, d, &rel) == 3) {
        long qi = find_id(&c->queries, q), di = find_id(&c->docs, d);
        if (qi < 0 || di < 0 || rel <= 0)
            continue;
        c->qrels = realloc(c->qrels, (c->nqrels + 1) * sizeof(qrel));
        c->qrels[c->nqrels++] = (qrel){(size_t)qi, (size_t)di, rel};
    }
    fclose(f);
    return true;
}

/* ---- metrics ------------------------------------------------------------------------------- */

static int relevance(const collection *c, size_t q, size_t d)
{
    for (size_t i = 0; i < c->nqrels; i++)
        if (c->qrels[i].query == q && c->qrels[i].doc == d)
            return c->qrels[i].rel;
    return 0;
}

static int cmp_int_desc(const void *a, const void *b)
{
    return *(const int *)b - *(const int *)a;
}

/* nDCG@10 (linear gain, as trec_eval) and recall@100 of one ranking. Returns false when the query
 * has no judgments. */
static bool score_query(const collection *c, size_t q, const size_t *ranked, size_t n, double *ndcg,
                        double *recall)
{
    int rels[4096];
    size_t nrel = 0;
    for (size_t i = 0; i < c->nqrels && nrel < 4096; i++)
        if (c->qrels[i].query == q)
            rels[nrel++] = c->qrels[i].rel;
    if (!nrel)
        return false;
    qsort(rels, nrel, sizeof(int), cmp_int_desc);
    double dcg = 0, idcg = 0;
    size_t found = 0;
    for (size_t i = 0; i < n && i < TOPK; i++) {
        int r = relevance(c, q, ranked[i]);
        if (i < 10)
            dcg += r / log2((double)i + 2);
        found += r > 0;
    }
    for (size_t i = 0; i < nrel && i < 10; i++)
        idcg += rels[i] / log2((double)i + 2);
    *ndcg = dcg / idcg;
    *recall = (double)found / (double)nrel;
    return true;
}

/* ---- BM25 ---------------------------------------------------------------------------------- */

typedef struct {
    char *term;
    size_t *docs;
    int *tfs;
    size_t n, alloc;
} posting;

typedef struct {
    posting *slots;
    size_t mask, used;
    double *doclen;
    double avgdl;
    size_t ndocs;
} eval_bm25_index;

static uint64_t hash_str(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static posting *term_slot(eval_bm25_index *ix, const char *t, size_t n, bool create)
{
    size_t s = hash_str(t, n) & ix->mask;
    while (ix->slots[s].term) {
        if (strlen(ix->slots[s].term) == n && memcmp(ix->slots[s].term, t, n) == 0)
            return &ix->slots[s];
        s = (s + 1) & ix->mask;
    }
    if (!create)
        return NULL;
    ix->slots[s].term = strndup(t, n);
    ix->used++;
    return &ix->slots[s];
}

typedef struct {
    char **terms;
    size_t n;
    bool drop_stopwords;
} term_list;

static void collect_term(const char *w, size_t n, void *arg)
{
    term_list *l = arg;
    if (l->drop_stopwords && embed_is_stopword(w, n))
        return;
    char buf[80];
    if (n >= sizeof(buf))
        n = sizeof(buf) - 1;
    memcpy(buf, w, n);
    n = embed_porter_stem(buf, n);
    l->terms = realloc(l->terms, (l->n + 1) * sizeof(char *));
    l->terms[l->n++] = strndup(buf, n);
}

static void free_terms(term_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->terms[i]);
    free(l->terms);
}

static void eval_bm25_build(eval_bm25_index *ix, char *const *texts, size_t ndocs)
{
    ix->mask = (1u << 17) - 1;
    ix->slots = calloc(ix->mask + 1, sizeof(posting));
    ix->ndocs = ndocs;
    ix->doclen = calloc(ndocs, sizeof(double));
    double total = 0;
    for (size_t d = 0; d < ndocs; d++) {
        term_list l = {0};
        embed_words(texts[d], strlen(texts[d]), collect_term, &l);
        ix->doclen[d] = (double)l.n;
        total += (double)l.n;
        for (size_t i = 0; i < l.n; i++) {
            posting *p = term_slot(ix, l.terms[i], strlen(l.terms[i]), true);
            if (p->n && p->docs[p->n - 1] == d) {
                p->tfs[p->n - 1]++;
                continue;
            }
            if (p->n == p->alloc) {
                p->alloc = p->alloc ? p->alloc * 2 : 4;
                p->docs = realloc(p->docs, p->alloc * sizeof(size_t));
                p->tfs = realloc(p->tfs, p->alloc * sizeof(int));
            }
            p->docs[p->n] = d;
            p->tfs[p->n++] = 1;
        }
        free_terms(&l);
    }
    ix->avgdl = total / (double)ndocs;
}

/* FTS5's bm25() over a table (title, text): idf from the rows that hold a term in any column,
 * term frequency and length normalisation per column, columns summed with weight 1. */
typedef struct {
    eval_bm25_index all, field[2];
} bm25_model;

static void eval_bm25_free(eval_bm25_index *ix)
{
    for (size_t i = 0; i <= ix->mask; i++) {
        free(ix->slots[i].term);
        free(ix->slots[i].docs);
        free(ix->slots[i].tfs);
    }
    free(ix->slots);
    free(ix->doclen);
}

typedef struct {
    size_t doc;
    double score;
} scored;

static int cmp_scored(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return x->doc < y->doc ? -1 : x->doc > y->doc;
}

/* Top-k of scores[0..n) into out (doc ids); returns how many. */
static size_t top_k(const double *scores, size_t n, size_t k, size_t *out, bool skip_zero)
{
    scored *s = malloc(n * sizeof(*s));
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!skip_zero || scores[i] > 0)
            s[m++] = (scored){i, scores[i]};
    qsort(s, m, sizeof(*s), cmp_scored);
    size_t r = m < k ? m : k;
    for (size_t i = 0; i < r; i++)
        out[i] = s[i].doc;
    free(s);
    return r;
}

static size_t eval_bm25_search(const bm25_model *m, const char *query, size_t *out)
{
    term_list l = {.drop_stopwords = true};
    embed_words(query, strlen(query), collect_term, &l);
    size_t ndocs = m->all.ndocs;
    double *scores = calloc(ndocs, sizeof(double));
    for (size_t i = 0; i < l.n; i++) {
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = strcmp(l.terms[i], l.terms[j]) == 0;
        posting *p =
            dup ? NULL : term_slot((eval_bm25_index *)&m->all, l.terms[i], strlen(l.terms[i]), false);
        if (!p)
            continue;
        double idf = log(((double)ndocs - (double)p->n + 0.5) / ((double)p->n + 0.5));
        if (idf <= 0)
            idf = 1e-6; /* FTS5's floor */
        for (int f = 0; f < 2; f++) {
            const eval_bm25_index *ix = &m->field[f];
            posting *pf = term_slot((eval_bm25_index *)ix, l.terms[i], strlen(l.terms[i]), false);
            for (size_t k = 0; pf && k < pf->n; k++) {
                double tf = pf->tfs[k], dl = ix->doclen[pf->docs[k]];
                scores[pf->docs[k]] += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / ix->avgdl));
            }
        }
    }
    size_t r = top_k(scores, ndocs, TOPK, out, true);
    free(scores);
    free_terms(&l);
    return r;
}

/* ---- vectors and fusion -------------------------------------------------------------------- */

static float *embed_all(const embed_local_opts *o, const text_set *s)
{
    float *v = calloc(s->n * (size_t)o->dim, sizeof(float));
    embed_cache *cache = embed_cache_new();
    for (size_t i = 0; i < s->n; i++)
        embed_local_one(o, cache, s->texts[i], strlen(s->texts[i]), v + i * (size_t)o->dim);
    embed_cache_free(cache);
    return v;
}

static size_t vector_search(const float *docs, size_t ndocs, const float *q, int dim, size_t *out)
{
    double *scores = malloc(ndocs * sizeof(double));
    for (size_t d = 0; d < ndocs; d++) {
        double s = 0;
        for (int i = 0; i < dim; i++)
            s += (double)docs[d * (size_t)dim + (size_t)i] * q[i];
        scores[d] = s;
    }
    size_t r = top_k(scores, ndocs, TOPK, out, false);
    free(scores);
    return r;
}

/* RRF of a (BM25) and b (vectors), b's terms weighted wb. */
static size_t rrf(const size_t *a, size_t na, const size_t *b, size_t nb, double wb, size_t ndocs,
                  size_t *out)
{
    double *scores = calloc(ndocs, sizeof(double));
    for (size_t i = 0; i < na; i++)
        scores[a[i]] += 1.0 / (RRF_K + (double)i + 1);
    for (size_t i = 0; i < nb; i++)
        scores[b[i]] += wb / (RRF_K + (double)i + 1);
    size_t r = top_k(scores, ndocs, TOPK, out, true);
    free(scores);
    return r;
}

typedef struct {
    double ndcg, recall;
    size_t n;
} metric;

static void add_metric(metric *m, const collection *c, size_t q, const size_t *ranked, size_t n)
{
    double nd, rc;
    if (score_query(c, q, ranked, n, &nd, &rc)) {
        m->ndcg += nd;
        m->recall += rc;
        m->n++;
    }
}

/* ---- variants ------------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    embed_local_opts o;
} variant;

int main(int argc, char **argv)
{
    const char *defaults[] = {"../shared/datasets/cranfield", "../shared/datasets/cisi"};
    const char *const *dirs = argc > 1 ? (const char *const *)argv + 1 : defaults;
    size_t ndirs = argc > 1 ? (size_t)argc - 1 : 2;

    variant vs[32];
    size_t nv = 0;
    embed_local_opts base;
    embed_local_defaults(&base, 384);
#define V(label, ...)                    \
    do {                                 \
        embed_local_opts o_ = base;      \
        __VA_ARGS__;                     \
        vs[nv++] = (variant){label, o_}; \
    } while (0)
    V("words, raw tf (no stopwords, no stemming)", o_.stopwords = false, o_.stem = 0, o_.char_ngram = 0);
    V("+ stopwords", o_.stem = 0, o_.char_ngram = 0);
    V("+ stopwords + plural s", o_.stem = 1, o_.char_ngram = 0);
    V("+ stopwords + Porter", o_.char_ngram = 0);
    V("+ stopwords + Porter, log tf", o_.char_ngram = 0, o_.tf = EMBED_TF_LOG);
    V("+ stopwords + Porter, sqrt tf", o_.char_ngram = 0, o_.tf = EMBED_TF_SQRT);
    V("+ stopwords + Porter + bigrams 0.5", o_.char_ngram = 0, o_.bigrams = true, o_.bigram_weight = 0.5);
    V("+ stopwords + Porter + char 3-grams 0.3", o_.char_ngram = 3);
    V("+ stopwords + Porter + char 4-grams 0.3 (default)", (void)0);
    V("+ stopwords + Porter + char 4-grams 0.15", o_.ngram_weight = 0.15);
    V("+ stopwords + Porter + char 5-grams 0.3", o_.char_ngram = 5);
    V("+ stopwords + Porter + char 4-grams 0.3 + bigrams 0.5", o_.bigrams = true, o_.bigram_weight = 0.5);
    V("default at 128", o_.dim = 128);
    V("default at 256", o_.dim = 256);
    V("default at 512", o_.dim = 512);
    V("default at 768", o_.dim = 768);
    V("default at 1024", o_.dim = 1024);
    V("default at 2048", o_.dim = 2048);
    V("+ stopwords + Porter (no n-grams) at 768", o_.char_ngram = 0, o_.dim = 768);
    V("+ stopwords + Porter (no n-grams) at 2048", o_.char_ngram = 0, o_.dim = 2048);
#undef V

    printf("| variant |");
    for (size_t c = 0; c < ndirs; c++) {
        const char *n = strrchr(dirs[c], '/') ? strrchr(dirs[c], '/') + 1 : dirs[c];
        printf(" %s vector | %s RRF | %s RRF R@100 | %s RRF w0.5 |", n, n, n, n);
    }
    printf("\n|---|");
    for (size_t c = 0; c < ndirs; c++)
        printf("---|---|---|---|");
    printf("\n");

    collection *cols = calloc(ndirs, sizeof(*cols));
    size_t **bm25_runs = calloc(ndirs, sizeof(*bm25_runs));
    size_t **bm25_lens = calloc(ndirs, sizeof(*bm25_lens));
    metric *bm25_m = calloc(ndirs, sizeof(*bm25_m));
    for (size_t c = 0; c < ndirs; c++) {
        if (!load_collection(dirs[c], &cols[c])) {
            fprintf(stderr, "cannot load the collection in %s\n", dirs[c]);
            return 1;
        }
        bm25_model ix = {0};
        eval_bm25_build(&ix.all, cols[c].docs.texts, cols[c].docs.n);
        eval_bm25_build(&ix.field[0], cols[c].docs.fields[0], cols[c].docs.n);
        eval_bm25_build(&ix.field[1], cols[c].docs.fields[1], cols[c].docs.n);
        bm25_runs[c] = calloc(cols[c].queries.n * TOPK, sizeof(size_t));
        bm25_lens[c] = calloc(cols[c].queries.n, sizeof(size_t));
        for (size_t q = 0; q < cols[c].queries.n; q++) {
            bm25_lens[c][q] = eval_bm25_search(&ix, cols[c].queries.texts[q], bm25_runs[c] + q * TOPK);
            add_metric(&bm25_m[c], &cols[c], q, bm25_runs[c] + q * TOPK, bm25_lens[c][q]);
        }
        eval_bm25_free(&ix.all);
        eval_bm25_free(&ix.field[0]);
        eval_bm25_free(&ix.field[1]);
    }
    printf("| BM25 alone (this bench's, in the RRF columns) |");
    for (size_t c = 0; c < ndirs; c++)
        printf(" | %.3f | %.3f | %.3f |", bm25_m[c].ndcg / (double)bm25_m[c].n,
               bm25_m[c].recall / (double)bm25_m[c].n, bm25_m[c].ndcg / (double)bm25_m[c].n);
    printf("\n");

    /* Hash collisions move the figures by about 0.01: each variant runs with NSEEDS hash seeds and
     * the table shows the means, and half the spread (max - min) of the equal-weight RRF. */
    for (size_t v = 0; v < nv; v++) {
        printf("| %s |", vs[v].name);
        for (size_t c = 0; c < ndirs; c++) {
            collection *col = &cols[c];
            int dim = vs[v].o.dim;
            double sum_vec = 0, sum_rrf = 0, sum_rec = 0, sum_half = 0, lo = 1, hi = 0;
            for (int seed = 0; seed < NSEEDS; seed++) {
                embed_local_opts o = vs[v].o;
                o.seed = 0x9E3779B97F4A7C15ull * (uint64_t)seed;
                float *dv = embed_all(&o, &col->docs);
                float *qv = embed_all(&o, &col->queries);
                metric vec = {0}, fused = {0}, half = {0};
                size_t ranked[TOPK], fusedr[TOPK];
                for (size_t q = 0; q < col->queries.n; q++) {
                    size_t n = vector_search(dv, col->docs.n, qv + q * (size_t)dim, dim, ranked);
                    add_metric(&vec, col, q, ranked, n);
                    size_t nf =
                        rrf(bm25_runs[c] + q * TOPK, bm25_lens[c][q], ranked, n, 1.0, col->docs.n, fusedr);
                    add_metric(&fused, col, q, fusedr, nf);
                    nf = rrf(bm25_runs[c] + q * TOPK, bm25_lens[c][q], ranked, n, 0.5, col->docs.n, fusedr);
                    add_metric(&half, col, q, fusedr, nf);
                }
                double r = fused.ndcg / (double)fused.n;
                sum_vec += vec.ndcg / (double)vec.n;
                sum_rrf += r;
                sum_rec += fused.recall / (double)fused.n;
                sum_half += half.ndcg / (double)half.n;
                lo = r < lo ? r : lo;
                hi = r > hi ? r : hi;
                free(dv);
                free(qv);
            }
            printf(" %.3f | %.3f ±%.3f | %.3f | %.3f |", sum_vec / NSEEDS, sum_rrf / NSEEDS, (hi - lo) / 2,
                   sum_rec / NSEEDS, sum_half / NSEEDS);
        }
        printf("\n");
        fflush(stdout);
    }
    printf("\nqueries with judgments:");
    for (size_t c = 0; c < ndirs; c++)
        printf(" %s %zu", cols[c].name, bm25_m[c].n);
    printf("\n");
    return 0;
}
