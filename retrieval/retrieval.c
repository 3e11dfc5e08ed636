/*
 * The search engine: one request in, one page of permitted results out. It parses the query
 * (query.c), turns the caller and the request's filters into a store_filter, gets a BM25 list
 * from the store and a vector list from the index -- both restricted to the permitted chunks
 * before any ranking -- fuses them in hybrid mode, applies the per-document limit, cuts the
 * page, and reads the page's chunks back with their highlighted matches to make snippets.
 *
 * Two rules shape the code. Permissions are applied inside each list, never to a finished
 * ranking (trimming afterwards would return fewer than k, or need guesses at how much to
 * over-fetch): BM25 in SQL or the pruned index's permission sets, vectors either by an exact
 * scan over the listed permitted chunks or by one fixed fetch from the vector index whose every
 * candidate is tested (see "the vector list": the work depends on the size of the permitted set,
 * never on where hidden chunks rank). And the page's chunks are read back through the same
 * filter, so a document deleted or re-permissioned while the search ran drops out instead of
 * leaking.
 *
 * Pages are cut from one deterministic ranking (ties by chunk id) computed to the page's end,
 * and the cursor carries the offset with a fingerprint of the request, so a cursor cannot be
 * replayed against another query. Fusion scores do not depend on how deep the lists go (RRF
 * uses ranks; weighted fusion divides by each list's best score), so later pages continue the
 * first page's order.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "retrieval/retrieval.h"
#include "retrieval/retrieval_int.h"

#define LOG_COMPONENT "retrieval"

static uint64_t fnv(uint64_t h, const void *p, size_t n);
static uint64_t fnv_str(uint64_t h, const char *s);

#define RESULT_ARENA_CAP ((size_t)1 << 30)
#define QUERY_ARENA_CAP  ((size_t)64 << 20)
#define EXPR_CAP         ((size_t)RQ_TEXT_MAX * 8 + 4096)

bool retrieval_available(void)
{
    return true;
}

/* ---- modes and options ------------------------------------------------------------------- */

const char *retrieval_mode_name(retrieval_mode m)
{
    switch (m) {
    case RETRIEVAL_MODE_DEFAULT: return "default";
    case RETRIEVAL_HYBRID: return "hybrid";
    case RETRIEVAL_BM25: return "bm25";
    case RETRIEVAL_VECTOR: return "vector";
    }
    return "?";
}

qr_status retrieval_mode_parse(const char *s, retrieval_mode *out, char *err)
{
    static const retrieval_mode modes[] = {RETRIEVAL_HYBRID, RETRIEVAL_BM25, RETRIEVAL_VECTOR};
    for (size_t i = 0; s && i < 3; i++) {
        if (strcmp(s, retrieval_mode_name(modes[i])) == 0) {
            *out = modes[i];
            return QR_OK;
        }
    }
    return qr_fail(err, QR_EINVAL, "unknown search mode '%.64s': expected hybrid, bm25 or vector",
                   s ? s : "");
}

const char *retrieval_fusion_name(retrieval_fusion f)
{
    return f == RETRIEVAL_FUSION_RRF ? "rrf" : "weighted";
}

#define REASON_LOCAL \
    "embed.backend=local: the local hash embedder does not improve on BM25 (see README Search quality)"

void retrieval_opts_default(retrieval_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->mode = RETRIEVAL_BM25;
    o->fusion = RETRIEVAL_FUSION_WEIGHTED;
    o->mode_auto = o->fusion_auto = true;
    snprintf(o->default_reason, sizeof(o->default_reason), "%s", REASON_LOCAL);
    o->rrf_k = 60;
    o->vector_weight = 0.2;
    o->weight_title = 2;
    o->weight_headings = 1;
    o->weight_body = 1;
    o->stopwords = "default";
    o->exact_share = 0.02;
    o->exact_min = 20000;
    o->max_per_doc = 0;
    o->candidates = 100;
    o->snippet_open = "<mark>";
    o->snippet_close = "</mark>";
    o->snippet_tokens = 32;
    o->bm25_pruned = true;
    o->parallel = false;
    o->timeout_ms = 10000;
    o->max_terms = 256;
    o->max_phrase_terms = 32;
    o->max_exclusions = 32;
}

/* How a key's value came to be, in words. */
static const char *source_words(const qr_config *cfg, const char *key)
{
    switch (qr_config_source(cfg, key)) {
    case QR_CFG_SRC_FILE: return "in the configuration file";
    case QR_CFG_SRC_ENV: return "in the environment";
    case QR_CFG_SRC_CLI: return "on the command line";
    case QR_CFG_SRC_DEFAULT: break;
    }
    return "as the default";
}

void retrieval_opts_with_fusion(const qr_config *cfg, retrieval_fusion f, retrieval_opts *o)
{
    o->fusion = f;
    o->vector_weight = qr_config_settings(cfg)->retrieval_vector_weight;
    if (f == RETRIEVAL_FUSION_RRF && qr_config_source(cfg, "retrieval.vector_weight") == QR_CFG_SRC_DEFAULT)
        o->vector_weight = 1;
}

/* retrieval.mode and retrieval.fusion: auto follows embed.backend (see retrieval.h); the reason
 * is kept for `quarry stats` and /readyz. */
static void resolve_defaults(const qr_config *cfg, retrieval_opts *o)
{
    const qr_settings *set = qr_config_settings(cfg);
    bool local = strcmp(set->embed_backend, "local") == 0;
    o->mode_auto = strcmp(set->retrieval_mode, "auto") == 0;
    o->fusion_auto = strcmp(set->retrieval_fusion, "auto") == 0;
    if (o->mode_auto)
        o->mode = local ? RETRIEVAL_BM25 : RETRIEVAL_HYBRID;
    else
        retrieval_mode_parse(set->retrieval_mode, &o->mode, NULL);
    if (o->fusion_auto)
        retrieval_opts_with_fusion(cfg, local ? RETRIEVAL_FUSION_WEIGHTED : RETRIEVAL_FUSION_RRF, o);
    else
        retrieval_opts_with_fusion(cfg,
                                   strcmp(set->retrieval_fusion, "weighted") == 0 ? RETRIEVAL_FUSION_WEIGHTED
                                                                                  : RETRIEVAL_FUSION_RRF,
                                   o);
    if (o->mode_auto && local)
        snprintf(o->default_reason, sizeof(o->default_reason), "%s", REASON_LOCAL);
    else if (o->mode_auto && o->fusion == RETRIEVAL_FUSION_RRF)
        snprintf(o->default_reason, sizeof(o->default_reason),
                 "embed.backend=%.32s: a real embedding model, so hybrid with rrf fusion, k=%g, vector "
                 "weight %g (the common default: no model could be run to measure a better fusion)",
                 set->embed_backend, o->rrf_k, o->vector_weight);
    else if (o->mode_auto)
        snprintf(o->default_reason, sizeof(o->default_reason),
                 "embed.backend=%.32s: a real embedding model, so hybrid (retrieval.fusion=weighted set %s)",
                 set->embed_backend, source_words(cfg, "retrieval.fusion"));
    else
        snprintf(o->default_reason, sizeof(o->default_reason), "retrieval.mode=%s set %s",
                 retrieval_mode_name(o->mode), source_words(cfg, "retrieval.mode"));
}

void retrieval_opts_from_config(const qr_config *cfg, retrieval_opts *o)
{
    const qr_settings *set = qr_config_settings(cfg);
    retrieval_opts_default(o);
    o->rrf_k = set->retrieval_rrf_k;
    resolve_defaults(cfg, o);
    o->weight_title = set->retrieval_weight_title;
    o->weight_headings = set->retrieval_weight_headings;
    o->weight_body = set->retrieval_weight_body;
    o->stopwords = set->retrieval_stopwords;
    o->exact_share = set->retrieval_exact_share;
    o->exact_min = (size_t)set->retrieval_exact_min;
    o->max_per_doc = (size_t)set->retrieval_max_per_doc;
    o->candidates = (size_t)set->retrieval_candidates;
    o->snippet_open = set->retrieval_snippet_marker_open;
    o->snippet_close = set->retrieval_snippet_marker_close;
    o->snippet_tokens = (size_t)set->retrieval_snippet_tokens;
    o->bm25_pruned = strcmp(set->retrieval_bm25_path, "pruned") == 0;
    o->parallel = set->retrieval_parallel;
    o->timeout_ms = (uint64_t)set->retrieval_timeout_ms;
    o->max_terms = (size_t)set->retrieval_max_terms;
    o->max_phrase_terms = (size_t)set->retrieval_max_phrase_terms;
    o->max_exclusions = (size_t)set->retrieval_max_exclusions;
}

/* Permitted chunk lists kept for the exact vector scans (see "the vector list"). */
#define PLIST_ENTRIES 4
#define PLIST_IDS     ((size_t)1 << 19) /* ids kept by one handle, all entries together (4 MiB) */

typedef struct {
    uint64_t key;    /* fingerprint of the filter; 0: empty */
    int64_t counter; /* the store change it was listed at */
    int64_t *ids;    /* ascending */
    size_t n;
    uint64_t used;
} plist;

/* A permitted_estimate kept for a filter (key as plist's) and a store change. */
typedef struct {
    uint64_t key;
    int64_t counter;
    size_t estimate;
} pestimate;

struct retrieval {
    store *s;
    vindex *v;
    bm25_index *b; /* the pruned BM25 path, or NULL: FTS5 ranks */
    retrieval_opts o;
    rq_limits limits; /* from o */
    rq_stopwords *sw;
    plist lists[PLIST_ENTRIES];
    pestimate estimates[PLIST_ENTRIES]; /* by the filter's key modulo PLIST_ENTRIES */
    uint64_t list_updates;              /* permitted lists brought up to date (not listed again) */
    store *vs;   /* the store handle the vector list reads: s, or twin while the lists run at once */
    store *twin; /* a second handle on s's store for the vector list's thread (opened on first use) */
    uint64_t tick;
    retrieval_reranker rr; /* fn NULL: none */
};

uint64_t retrieval_list_updates(const retrieval *r)
{
    return r ? r->list_updates : 0;
}

void retrieval_set_reranker(retrieval *r, const retrieval_reranker *rr)
{
    if (!r)
        return;
    memset(&r->rr, 0, sizeof(r->rr));
    if (rr && rr->fn) {
        r->rr = *rr;
        if (r->rr.candidates < 1)
            r->rr.candidates = 1;
    }
}

void retrieval_set_bm25(retrieval *r, bm25_index *b)
{
    if (r)
        r->b = b;
}

void retrieval_set_vindex(retrieval *r, vindex *v)
{
    if (r)
        r->v = v;
}

static bool weight_ok(double w)
{
    return isfinite(w) && w >= 0;
}

qr_status retrieval_open(store *s, vindex *v, const retrieval_opts *o, retrieval **out, char *err)
{
    if (!s || !o || !out)
        return qr_fail(err, QR_EINVAL, "retrieval_open: NULL argument");
    *out = NULL;
    if (o->mode == RETRIEVAL_MODE_DEFAULT || o->mode > RETRIEVAL_VECTOR)
        return qr_fail(err, QR_EINVAL, "retrieval: the default mode must be hybrid, bm25 or vector");
    if (!weight_ok(o->weight_title) || !weight_ok(o->weight_headings) || !weight_ok(o->weight_body) ||
        !weight_ok(o->vector_weight) || !(o->rrf_k > 0) || !isfinite(o->rrf_k))
        return qr_fail(err, QR_EINVAL, "retrieval: weights must be finite and not negative, rrf_k positive");
    if (!(o->exact_share >= 0 && o->exact_share <= 1))
        return qr_fail(err, QR_EINVAL, "retrieval: exact_share must be 0..1");
    if (o->candidates < 1 || o->candidates > RETRIEVAL_DEPTH_MAX || o->snippet_tokens < 1)
        return qr_fail(err, QR_EINVAL, "retrieval: candidates must be 1..%d and snippet_tokens positive",
                       RETRIEVAL_DEPTH_MAX);
    if (!o->snippet_open || !o->snippet_close)
        return qr_fail(err, QR_EINVAL, "retrieval: snippet markers missing");
    if (!o->timeout_ms || !o->max_terms || !o->max_phrase_terms)
        return qr_fail(err, QR_EINVAL,
                       "retrieval: timeout_ms, max_terms and max_phrase_terms must be positive");
    retrieval *r = calloc(1, sizeof(*r));
    if (!r)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    qr_status st = rq_stopwords_new(o->stopwords, &r->sw, err);
    if (st) {
        free(r);
        return st;
    }
    r->s = s;
    r->vs = s;
    r->v = v;
    r->o = *o;
    r->limits = (rq_limits){o->max_terms, o->max_phrase_terms, o->max_exclusions};
    *out = r;
    return QR_OK;
}

void retrieval_close(retrieval *r)
{
    if (!r)
        return;
    rq_stopwords_free(r->sw);
    for (int i = 0; i < PLIST_ENTRIES; i++)
        free(r->lists[i].ids);
    store_close(r->twin);
    free(r);
}

/* ---- ranked lists ------------------------------------------------------------------------ */

typedef struct {
    int64_t id, doc;
    double score; /* the list's own score (fused in the fused list) */
    int rank_b, rank_v;
} item;

typedef struct {
    item *v;
    size_t n, cap;
} list;

static void list_release(list *l)
{
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static qr_status list_push(list *l, int64_t id, int64_t doc, double score, char *err)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        item *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return qr_fail(err, QR_ENOMEM, "out of memory for search results");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (item){.id = id, .doc = doc, .score = score};
    return QR_OK;
}

/* Counts chunks per document while walking a ranking: an open-addressing table of doc keys. */
typedef struct {
    int64_t *keys;
    size_t *counts;
    size_t mask;
} doc_counter;

static qr_status counter_init(doc_counter *c, size_t n, char *err)
{
    size_t cap = 16;
    while (cap < 2 * n + 2)
        cap *= 2;
    c->keys = malloc(cap * sizeof(int64_t));
    c->counts = calloc(cap, sizeof(size_t));
    c->mask = cap - 1;
    if (!c->keys || !c->counts) {
        free(c->keys);
        free(c->counts);
        return qr_fail(err, QR_ENOMEM, "out of memory for search results");
    }
    memset(c->keys, 0xff, cap * sizeof(int64_t)); /* -1: empty (doc keys are positive) */
    return QR_OK;
}

/* Returns how many chunks of doc were seen before, and counts this one. */
static size_t counter_bump(doc_counter *c, int64_t doc)
{
    size_t i = (size_t)((uint64_t)doc * 0x9e3779b97f4a7c15ull >> 17) & c->mask;
    while (c->keys[i] != -1 && c->keys[i] != doc)
        i = (i + 1) & c->mask;
    c->keys[i] = doc;
    return c->counts[i]++;
}

static void counter_release(doc_counter *c)
{
    free(c->keys);
    free(c->counts);
}

/* Keeps at most cap items per document, in order (cap 0: all). */
static qr_status apply_cap(list *l, size_t cap, char *err)
{
    if (!cap || !l->n)
        return QR_OK;
    doc_counter c;
    qr_status st = counter_init(&c, l->n, err);
    if (st)
        return st;
    size_t kept = 0;
    for (size_t i = 0; i < l->n; i++)
        if (counter_bump(&c, l->v[i].doc) < cap)
            l->v[kept++] = l->v[i];
    l->n = kept;
    counter_release(&c);
    return QR_OK;
}

/* ---- the vector list --------------------------------------------------------------------- */

/*
 * How a restricted caller's vectors are searched is decided before any vector is looked at, from
 * the size of the permitted set alone, so that the work a search does never depends on where
 * chunks the caller may not read rank (issue #16: a caller could time how many hidden chunks lay
 * near a query when the search fetched more candidates until k permitted ones turned up).
 *
 * The permitted share of the index is estimated from VECTOR_SAMPLE chunk ids spread evenly over
 * it (vindex_sample_ids), each tested against the filter: a fixed cost, the same ids for every
 * query, paid once per filter and store change (the handle keeps the answer). Then:
 *   - few permitted chunks (up to exact_min, or less than exact_share of the index), or so small
 *     a share that the index would have to be asked for more than VECTOR_FETCH_MAX candidates:
 *     they are listed and scanned exactly (an estimate up to twice the threshold is settled by
 *     listing them, so a caller under exact_min always gets the exact answer);
 *   - an IVF index, a share up to VECTOR_SCAN_SHARE and a permitted set the handle can keep
 *     listed (up to PLIST_IDS chunks): the permitted chunks are listed (once per filter and store
 *     change) and the permission test runs inside the IVF scan (vindex_search_permitted): the
 *     query's nearest lists, more of them the smaller the share, are walked and only their
 *     permitted members scored exactly, so the work depends on the permitted set and never on
 *     chunks the caller may not read. Above that share the scan scores more rows than the fixed
 *     fetch below costs, for little recall (bench/README.md, "The permission test inside the
 *     IVF scan");
 *   - otherwise (flat and HNSW indexes, and large shares) the index is asked
 *     once, without any permission test, for a fixed number of candidates (vector_fetch_count):
 *     enough that, were the permitted chunks spread like the rest, the depth would pass with a
 *     margin of VECTOR_FETCH_SIGMAS standard deviations of the binomial count, and never fewer
 *     than VECTOR_FETCH_SLACK times the depth divided by the permitted share (margin for chunks
 *     the caller may not read gathering near some queries, and for the estimate's own error).
 *     Every candidate is then tested (one indexed lookup each, permitted or not) and the
 *     permitted ones kept. Only when chunks the caller may not read crowd the query's
 *     neighbourhood do fewer than the depth pass, and then the permitted chunks are listed and
 *     scanned exactly: recall is never traded for it, the cost stays bounded by the permitted
 *     set, and that case is the one residual timing difference (bench/README.md, "Timing and
 *     hidden chunks"). At large shares the per-candidate lookups were the vector list's main cost
 *     (a flat 4x slack asked an 89% caller for 450 candidates to find 100; now 169).
 */
#define VECTOR_SAMPLE       512
#define VECTOR_FETCH_SLACK  1.5
#define VECTOR_FETCH_SIGMAS 4.0
#define VECTOR_FETCH_MAX    8192
#define VECTOR_SCAN_SHARE   0.25

typedef struct {
    bool exact;       /* the permitted chunks were listed and scanned exactly */
    bool scanned;     /* ... listed and tested inside the IVF scan (vindex_search_permitted) */
    bool fallback;    /* ... because the index's fixed fetch held too few permitted ones */
    size_t listed;    /* how many were listed */
    size_t permitted; /* restricted callers: the permitted chunks, as estimated from the sample */
    size_t fetched;   /* candidates the vector index was asked for (0: not asked) */
} vector_path;

/* True when f restricts by the ACL alone (or by nothing, for an administrator): the test the
 * BM25 index's permission sets can answer. */
static bool filter_is_acl_only(const store_filter *f)
{
    return !f->ndoc_ids && !(f->uri_prefix && *f->uri_prefix) && !(f->content_type && *f->content_type) &&
           f->updated_after_ms <= 0 && !(f->require_match && *f->require_match) &&
           !(f->exclude_match && *f->exclude_match);
}

/*
 * The document of each of the chunks ids[0..n) that passes f, or -1 (gone, or not permitted):
 * store_filter_ids' answer, and with f NULL store_chunk_docs' (every live chunk passes). The
 * vector list tests every candidate it is given, permitted or not (the fixed fetch: 169 for an
 * 89% caller's hybrid list), and a store lookup per chunk reads a page of the chunks table and
 * one of the ACL's each time: a third of that list's time at 1M chunks. Where the BM25 index is
 * warm and f restricts by the ACL alone, its rows (chunk -> document, tombstones) and cached
 * permission sets answer instead, after the same catch-up with the store a BM25 search makes:
 * the same answers, as of the store's latest change, at a binary search and a bit test per
 * chunk. Chunks the index does not hold, and every chunk when it cannot answer (not warm, or
 * needing a rebuild), are asked of the store.
 */
static qr_status chunk_docs(retrieval *r, const store_filter *f, const int64_t *ids, size_t n, int64_t *docs,
                            char *err)
{
    qr_status st = QR_EUNAVAILABLE;
    if (r->b && n && (!f || filter_is_acl_only(f))) {
        st = f ? bm25_filter_chunks(r->b, r->vs, f->principals, f->nprincipals, f->all_documents, ids, n,
                                    docs, err)
               : bm25_filter_chunks(r->b, r->vs, NULL, 0, true, ids, n, docs, err);
        if (st && st != QR_EUNAVAILABLE)
            return st;
    }
    if (st) /* the store answers for every chunk */
        return f ? store_filter_ids(r->vs, f, ids, n, docs, err) : store_chunk_docs(r->vs, ids, n, docs, err);
    size_t unknown = 0;
    for (size_t i = 0; i < n; i++)
        unknown += docs[i] == -2;
    if (!unknown)
        return QR_OK;
    int64_t *some = malloc(unknown * 2 * sizeof(*some));
    if (!some)
        return qr_fail(err, QR_ENOMEM, "out of memory for vector results");
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (docs[i] == -2)
            some[m++] = ids[i];
    st = f ? store_filter_ids(r->vs, f, some, m, some + m, err)
           : store_chunk_docs(r->vs, some, m, some + m, err);
    m = 0;
    for (size_t i = 0; i < n; i++)
        if (docs[i] == -2) {
            docs[i] = st ? -1 : some[unknown + m];
            m++;
        }
    free(some);
    return st;
}

/* Makes room for n ids, scores and document keys. */
static qr_status vector_room(size_t n, int64_t **ids, float **scores, int64_t **docs, char *err)
{
    int64_t *ni = realloc(*ids, (n ? n : 1) * sizeof(*ni));
    if (ni)
        *ids = ni;
    float *ns = ni ? realloc(*scores, (n ? n : 1) * sizeof(*ns)) : NULL;
    if (ns)
        *scores = ns;
    int64_t *nd = ns ? realloc(*docs, (n ? n : 1) * sizeof(*nd)) : NULL;
    if (!nd)
        return qr_fail(err, QR_ENOMEM, "out of memory for vector results");
    *docs = nd;
    return QR_OK;
}

/* The best `depth` of the listed chunks (exact scan, or with scan the permission test inside the
 * IVF scan), or with permitted NULL of the whole index (administrators), into out; at most cap
 * per document. Asks for more while a per-document limit or chunks the store no longer has leave
 * fewer than depth and the search had more to give. */
static qr_status vector_ranked(retrieval *r, const int64_t *permitted, size_t npermitted, bool scan,
                               const float *vec, int dim, size_t depth, size_t cap, list *out,
                               qr_cancel *cancel, char *err)
{
    qr_status st = QR_OK;
    int64_t *ids = NULL, *docs = NULL;
    float *scores = NULL;
    size_t want = depth;
    for (;;) {
        if (want > VINDEX_K_MAX)
            want = VINDEX_K_MAX;
        size_t found = 0;
        if ((st = vector_room(want, &ids, &scores, &docs, err)))
            break;
        if (!permitted)
            st = vindex_search(r->v, vec, dim, want, NULL, NULL, ids, scores, &found, cancel, err);
        else if (scan)
            st = vindex_search_permitted(r->v, vec, dim, want, permitted, npermitted, ids, scores, &found,
                                         cancel, NULL, err);
        else
            st = vindex_search_subset(r->v, vec, dim, want, permitted, npermitted, ids, scores, &found,
                                      cancel, err);
        if (st || (st = chunk_docs(r, NULL, ids, found, docs, err)))
            break;
        out->n = 0;
        for (size_t i = 0; i < found && !st; i++)
            if (docs[i] >= 0)
                st = list_push(out, ids[i], docs[i], scores[i], err);
        if (st || (st = apply_cap(out, cap, err)))
            break;
        if (out->n >= depth || found < want || want >= VINDEX_K_MAX)
            break;
        want *= 4;
    }
    if (!st && out->n > depth)
        out->n = depth;
    free(ids);
    free(scores);
    free(docs);
    return st;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* A fingerprint of everything in f that decides which chunks pass. */
static uint64_t filter_key(const store_filter *f)
{
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv(h, &f->all_documents, sizeof(f->all_documents));
    for (size_t i = 0; i < f->nprincipals; i++)
        h = fnv_str(h, f->principals[i]);
    h = fnv(h, "|", 1);
    for (size_t i = 0; i < f->ndoc_ids; i++)
        h = fnv_str(h, f->doc_ids[i]);
    h = fnv_str(h, f->uri_prefix);
    h = fnv_str(h, f->content_type);
    h = fnv(h, &f->updated_after_ms, sizeof(f->updated_after_ms));
    h = fnv_str(h, f->require_match);
    h = fnv_str(h, f->exclude_match);
    return h ? h : 1;
}

/* The chunks store_filter_changes reported: every one (rm), and those that pass now (add). */
typedef struct {
    int64_t *rm, *add;
    size_t nrm, nadd, cap_rm, cap_add;
} plist_delta;

static qr_status delta_push(int64_t **v, size_t *n, size_t *cap, int64_t id, char *err)
{
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 256;
        int64_t *p = realloc(*v, c * sizeof(*p));
        if (!p)
            return qr_fail(err, QR_ENOMEM, "out of memory for the permitted chunks' changes");
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = id;
    return QR_OK;
}

static qr_status delta_collect(void *ctx, int64_t chunk_id, bool passes, char *err)
{
    plist_delta *d = ctx;
    return passes ? delta_push(&d->add, &d->nadd, &d->cap_add, chunk_id, err)
                  : delta_push(&d->rm, &d->nrm, &d->cap_rm, chunk_id, err);
}

/* e's list (as of its counter) brought to the store's present through the changes since then:
 * into *out (n_out ids, ascending, malloc'd), *counter the change it reflects. QR_ELIMIT when the
 * changes are too many to be worth it (more than an eighth of the list, at least 1,024) or can no
 * longer be known (pruned tombstones): the caller lists the chunks again. */
static qr_status permitted_update(retrieval *r, const store_filter *f, const plist *e, int64_t **out,
                                  size_t *n_out, int64_t *counter, char *err)
{
    plist_delta d = {0};
    size_t limit = e->n / 8 > 1024 ? e->n / 8 : 1024;
    int64_t *got = NULL;
    qr_status st = store_filter_changes(r->vs, f, e->counter, limit, delta_collect, &d, counter, err);
    if (st)
        goto out;
    if (d.nrm > 1)
        qsort(d.rm, d.nrm, sizeof(int64_t), cmp_i64);
    if (d.nadd > 1)
        qsort(d.add, d.nadd, sizeof(int64_t), cmp_i64);
    if (!(got = malloc((e->n + d.nadd + 1) * sizeof(*got)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for the permitted chunks");
        goto out;
    }
    /* (list minus every chunk reported) merged with those that pass: the added are among the
     * reported, so no id comes from both sides */
    size_t i = 0, j = 0, a = 0, n = 0;
    while (i < e->n || a < d.nadd) {
        if (a >= d.nadd || (i < e->n && e->ids[i] < d.add[a])) {
            int64_t id = e->ids[i++];
            while (j < d.nrm && d.rm[j] < id)
                j++;
            if (j < d.nrm && d.rm[j] == id)
                continue;
            got[n++] = id;
        } else {
            if (n == 0 || got[n - 1] != d.add[a]) /* a chunk reported twice */
                got[n++] = d.add[a];
            a++;
        }
    }
    *out = got;
    *n_out = n;
    got = NULL;
out:
    free(got);
    free(d.rm);
    free(d.add);
    return st;
}

/*
 * Every chunk that passes f, ascending, into *ids (*n of them; the handle's, valid until the next
 * search), as of the store's latest change: a list the handle kept for the same filter and the
 * same change is reused, so that the exact scan of a large permitted set costs its scan, not its
 * listing, again, and one kept for an earlier change is brought up to date through the changes
 * since (permitted_update), so that writes cost their own size, not the list's. hint is the
 * expected size. The list depends on the filter and the store only.
 */
static qr_status permitted_list(retrieval *r, const store_filter *f, size_t hint, const int64_t **ids,
                                size_t *n, char *err)
{
    int64_t counter = 0;
    qr_status st = store_change_counter(r->vs, &counter, err);
    if (st)
        return st;
    uint64_t key = filter_key(f);
    plist *slot = &r->lists[0], *older = NULL;
    for (int i = 0; i < PLIST_ENTRIES; i++) {
        plist *e = &r->lists[i];
        if (e->key == key && e->counter == counter) {
            e->used = ++r->tick;
            *ids = e->ids;
            *n = e->n;
            return QR_OK;
        }
        if (e->key == key && e->counter < counter)
            older = e;
        if (e->used < slot->used)
            slot = e;
    }
    size_t room = hint + hint / 8 + 64, listed = 0;
    bool more = !older, updated = false;
    int64_t *got = NULL;
    if (older) {
        slot = older;
        st = permitted_update(r, f, older, &got, &listed, &counter, err);
        if (st == QR_ELIMIT) {
            more = true;
            st = QR_OK;
        } else if (!st) {
            updated = true;
            r->list_updates++;
        }
    }
    while (!st && more) {
        int64_t *p = realloc(got, room * sizeof(int64_t));
        if (!p) {
            st = qr_fail(err, QR_ENOMEM, "out of memory for the permitted chunks");
            break;
        }
        got = p;
        st = store_filter_chunks(r->vs, f, room, got, &listed, &more, err);
        room *= 2; /* the estimate was short, or documents were added meanwhile */
    }
    if (st) {
        free(got);
        return st;
    }
    if (!updated)
        if (listed > 1)
            qsort(got, listed, sizeof(int64_t), cmp_i64);
    free(slot->ids);
    if (listed > PLIST_IDS) {
        /* too large to keep: this search uses it, and it is the first to go */
        *slot = (plist){0, 0, got, listed, 0};
        *ids = got;
        *n = listed;
        return QR_OK;
    }
    /* the least recently used list makes room, and more go while the handle holds too many ids */
    *slot = (plist){key, counter, got, listed, ++r->tick};
    for (;;) {
        size_t total = 0;
        plist *old = NULL;
        for (int i = 0; i < PLIST_ENTRIES; i++) {
            total += r->lists[i].n;
            if (r->lists[i].key && &r->lists[i] != slot && (!old || r->lists[i].used < old->used))
                old = &r->lists[i];
        }
        if (total <= PLIST_IDS || !old)
            break;
        free(old->ids);
        *old = (plist){0};
    }
    *ids = slot->ids;
    *n = slot->n;
    return QR_OK;
}

/* Ranks every permitted chunk (about n of them) exactly. */
static qr_status vector_exact(retrieval *r, const store_filter *f, size_t n, const float *vec, int dim,
                              size_t depth, size_t cap, list *out, vector_path *path, qr_cancel *cancel,
                              char *err)
{
    const int64_t *permitted = NULL;
    size_t listed = 0;
    qr_status st = permitted_list(r, f, n, &permitted, &listed, err);
    if (st)
        return st;
    path->exact = true;
    path->listed = listed;
    return listed ? vector_ranked(r, permitted, listed, false, vec, dim, depth, cap, out, cancel, err)
                  : QR_OK;
}

/* The estimated number of chunks of the index that pass f (see above); kept by the handle for
 * the same filter while the store has changed by fewer than ESTIMATE_DRIFT changes per index
 * chunk since it was made (at least 16): a few writes barely move a share, and sampling again
 * after each write cost more than the search (512 lookups, about 13 ms at 1M chunks). */
#define ESTIMATE_DRIFT (1.0 / 256)
static qr_status permitted_estimate(retrieval *r, const store_filter *f, size_t size, size_t *out, char *err)
{
    int64_t ids[VECTOR_SAMPLE], docs[VECTOR_SAMPLE], counter = 0;
    uint64_t key = filter_key(f);
    qr_status st = store_change_counter(r->vs, &counter, err);
    if (st)
        return st;
    pestimate *e = &r->estimates[key % PLIST_ENTRIES];
    if (e->key == key && counter >= e->counter &&
        (double)(counter - e->counter) <= 16.0 + ESTIMATE_DRIFT * (double)size) {
        *out = e->estimate;
        return QR_OK;
    }
    size_t n = vindex_sample_ids(r->v, VECTOR_SAMPLE, ids), pass = 0;
    if ((st = chunk_docs(r, f, ids, n, docs, err)))
        return st;
    for (size_t i = 0; i < n; i++)
        pass += docs[i] >= 0;
    *out = n ? (size_t)ceil((double)pass * (double)size / (double)n) : 0;
    e->key = key;
    e->counter = counter;
    e->estimate = *out;
    return QR_OK;
}

/* How many candidates the fixed fetch asks for to keep `depth` at a permitted share p (0 < p <= 1):
 * the least n whose binomial mean n*p stands VECTOR_FETCH_SIGMAS deviations above the depth, and
 * at least VECTOR_FETCH_SLACK * depth / p. Depends on the depth and the estimated share alone. */
static double vector_fetch_count(size_t depth, double p)
{
    double d = (double)depth, z = VECTOR_FETCH_SIGMAS * sqrt(p * (1.0 - p));
    double root = (z + sqrt(z * z + 4.0 * p * d)) / (2.0 * p); /* p*x^2 - z*x - d = 0, n = x^2 */
    double floor_n = VECTOR_FETCH_SLACK * d / p;
    return root * root > floor_n ? root * root : floor_n;
}

/* The best `depth` permitted chunks by cosine into out (docs attached, chunks the store no longer
 * has dropped), at most cap per document; fewer only when no further permitted chunk exists. */
static qr_status vector_list(retrieval *r, const store_filter *f, bool unrestricted, const float *vec,
                             int dim, size_t depth, size_t cap, list *out, vector_path *path,
                             qr_cancel *cancel, char *err)
{
    out->n = 0;
    if (unrestricted)
        return vector_ranked(r, NULL, 0, false, vec, dim, depth, cap, out, cancel, err);
    vindex_info info;
    vindex_get_info(r->v, &info);
    size_t size = info.count + info.delta, estimate = 0;
    size_t threshold = (size_t)(r->o.exact_share * (double)size);
    if (threshold < r->o.exact_min)
        threshold = r->o.exact_min;
    qr_status st = permitted_estimate(r, f, size, &estimate, err);
    if (st)
        return st;
    const int64_t *permitted = NULL;
    size_t listed = 0;
    bool known = false;
    if (estimate <= 2 * threshold) {
        /* near or under the threshold: list them to know */
        if ((st = permitted_list(r, f, estimate, &permitted, &listed, err)))
            return st;
        path->permitted = estimate = listed;
        known = true;
        if (listed <= threshold) {
            path->exact = true;
            path->listed = listed;
            return listed ? vector_ranked(r, permitted, listed, false, vec, dim, depth, cap, out, cancel, err)
                          : QR_OK;
        }
    }
    path->permitted = estimate;
    if (info.nlist && estimate <= PLIST_IDS && (double)estimate <= VECTOR_SCAN_SHARE * (double)size) {
        /* IVF: the permission test inside the scan, over the listed set (kept by the handle) */
        if (!known && (st = permitted_list(r, f, estimate, &permitted, &listed, err)))
            return st;
        path->scanned = true;
        path->listed = listed;
        return listed ? vector_ranked(r, permitted, listed, true, vec, dim, depth, cap, out, cancel, err)
                      : QR_OK;
    }
    /* the fixed fetch */
    double fetch = vector_fetch_count(depth, (double)estimate / (double)size);
    if (fetch > VECTOR_FETCH_MAX)
        return vector_exact(r, f, estimate, vec, dim, depth, cap, out, path, cancel, err);

    size_t want = (size_t)ceil(fetch), found = 0;
    if (want < depth)
        want = depth;
    int64_t *ids = NULL, *docs = NULL;
    float *scores = NULL;
    path->fetched = want;
    if ((st = vector_room(want, &ids, &scores, &docs, err)) ||
        (st = vindex_search(r->v, vec, dim, want, NULL, NULL, ids, scores, &found, cancel, err)) ||
        (st = chunk_docs(r, f, ids, found, docs, err)))
        goto out;
    for (size_t i = 0; i < found && !st; i++)
        if (docs[i] >= 0)
            st = list_push(out, ids[i], docs[i], scores[i], err);
    if (st || (st = apply_cap(out, cap, err)))
        goto out;
    if (out->n >= depth || found < want) { /* enough, or the index held no more */
        if (out->n > depth)
            out->n = depth;
        goto out;
    }
    /* chunks the caller may not read took the places: rank the permitted set itself */
    path->fallback = true;
    out->n = 0;
    st = vector_exact(r, f, estimate, vec, dim, depth, cap, out, path, cancel, err);
out:
    free(ids);
    free(scores);
    free(docs);
    return st;
}

/* The vector list of a hybrid search, run on a thread of its own beside the BM25 list (both
 * cores: at 1M chunks each list costs a few milliseconds). It reads the store through r->twin,
 * a second handle, since a handle serves one thread at a time; the lists and estimates the
 * handle keeps are the vector list's alone. */
typedef struct {
    retrieval *r;
    const store_filter *f;
    bool unrestricted;
    const float *vec;
    int dim;
    size_t depth, cap;
    list *out;
    vector_path path;
    qr_cancel *cancel;
    qr_status st;
    uint64_t ns;
    char err[QR_ERR_LEN];
} vector_job;

static void *vector_job_run(void *arg)
{
    vector_job *j = arg;
    uint64_t t0 = qr_now_ns();
    j->st = vector_list(j->r, j->f, j->unrestricted, j->vec, j->dim, j->depth, j->cap, j->out, &j->path,
                        j->cancel, j->err);
    j->ns = qr_now_ns() - t0;
    return NULL;
}

/* Searches running in this process (retrieval_search), and the cores it may use: a second
 * thread per search helps only while there are cores to spare for it. Measured at 1M chunks on
 * two cores (bench/README.md): at one connection hybrid p50 5 to 12% lower; with the cores
 * saturated 7% fewer searches a second when every search took two threads, and still 7 to 29%
 * fewer with this gate (noisy runs), hence retrieval.parallel is off by default. */
static atomic_int searches_running;
static int cores_online(void)
{
    static atomic_int cores;
    int n = atomic_load_explicit(&cores, memory_order_relaxed);
    if (!n) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 && c < 4096 ? (int)c : 1;
        atomic_store_explicit(&cores, n, memory_order_relaxed);
    }
    return n;
}

/* Starts j on a thread when the handle may (retrieval.parallel), the process has a core to spare
 * (two threads per running search fit in the cores online) and can (a second store handle, a
 * thread): true when started, false when the caller runs it itself. */
static bool vector_job_start(vector_job *j, pthread_t *thread)
{
    retrieval *r = j->r;
    if (!r->o.parallel || 2 * atomic_load_explicit(&searches_running, memory_order_relaxed) > cores_online())
        return false;
    char err[QR_ERR_LEN];
    if (!r->twin && store_open_another(r->s, &r->twin, err)) {
        qr_log(QR_LOG_WARN, LOG_COMPONENT, "hybrid lists run one after the other: %s", err);
        r->o.parallel = false;
        return false;
    }
    r->vs = r->twin;
    store_set_cancel(r->twin, j->cancel);
    if (pthread_create(thread, NULL, vector_job_run, j) != 0) {
        store_set_cancel(r->twin, NULL);
        r->vs = r->s;
        return false;
    }
    return true;
}

/* ---- fusion ------------------------------------------------------------------------------ */

static int cmp_by_id(const void *a, const void *b)
{
    const item *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int cmp_by_score(const void *a, const void *b)
{
    const item *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Fuses the BM25 and vector lists into out, best first. RRF adds w / (rrf_k + rank); weighted
 * fusion adds w * score / best score of the list (vector weight w, BM25 weight 1), so neither
 * depends on how deep the lists were fetched. */
static qr_status fuse(const retrieval_opts *o, const list *bm, const list *vec, list *out, char *err)
{
    out->n = 0;
    qr_status st;
    double best_b = bm->n ? bm->v[0].score : 0, best_v = vec->n ? vec->v[0].score : 0;
    for (size_t i = 0; i < bm->n; i++) {
        double s = o->fusion == RETRIEVAL_FUSION_RRF ? 1.0 / (o->rrf_k + (double)(i + 1))
                                                     : (best_b > 0 ? bm->v[i].score / best_b : 0);
        if ((st = list_push(out, bm->v[i].id, bm->v[i].doc, s, err)))
            return st;
        out->v[out->n - 1].rank_b = (int)i + 1;
    }
    for (size_t i = 0; i < vec->n; i++) {
        double s = o->fusion == RETRIEVAL_FUSION_RRF ? 1.0 / (o->rrf_k + (double)(i + 1))
                                                     : (best_v > 0 ? vec->v[i].score / best_v : 0);
        if ((st = list_push(out, vec->v[i].id, vec->v[i].doc, o->vector_weight * s, err)))
            return st;
        out->v[out->n - 1].rank_v = (int)i + 1;
    }
    if (!out->n)
        return QR_OK;
    /* merge the two entries of a chunk found by both */
    qsort(out->v, out->n, sizeof(item), cmp_by_id);
    size_t u = 0;
    for (size_t i = 0; i < out->n; i++) {
        if (u && out->v[u - 1].id == out->v[i].id) {
            item *m = &out->v[u - 1];
            m->score += out->v[i].score;
            if (out->v[i].rank_b)
                m->rank_b = out->v[i].rank_b;
            if (out->v[i].rank_v)
                m->rank_v = out->v[i].rank_v;
        } else {
            out->v[u++] = out->v[i];
        }
    }
    out->n = u;
    qsort(out->v, out->n, sizeof(item), cmp_by_score);
    return QR_OK;
}

/* ---- cursors ----------------------------------------------------------------------------- */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s)
{
    h = fnv(h, s ? s : "", s ? strlen(s) + 1 : 1);
    return h;
}

/* A fingerprint of everything that decides the ranking, so that a cursor only continues the
 * query that made it. */
static uint64_t request_fingerprint(const retrieval_caller *c, const retrieval_request *q,
                                    retrieval_mode mode, size_t cap, size_t window)
{
    uint64_t h = 0xcbf29ce484222325ull;
    if (window) /* a reranked ranking is another ranking; none leaves old cursors valid */
        h = fnv(h, &window, sizeof(window));
    h = fnv_str(h, retrieval_mode_name(mode));
    h = fnv_str(h, q->query);
    h = fnv(h, &q->plain, sizeof(q->plain));
    for (size_t i = 0; i < q->ndoc_ids; i++)
        h = fnv_str(h, q->doc_ids[i]);
    h = fnv_str(h, q->source_prefix);
    h = fnv_str(h, q->content_type);
    h = fnv(h, &q->updated_after_ms, sizeof(q->updated_after_ms));
    h = fnv(h, &cap, sizeof(cap));
    h = fnv(h, &c->is_admin, sizeof(c->is_admin));
    for (size_t i = 0; i < c->nprincipals; i++)
        h = fnv_str(h, c->principals[i]);
    return h;
}

/* Cursors read "c1.<offset>.<fingerprint in 16 hex digits>". */
static qr_status parse_cursor(const char *cursor, uint64_t fp, size_t *offset, char *err)
{
    *offset = 0;
    if (!cursor || !*cursor)
        return QR_OK;
    unsigned long long off = 0, got = 0;
    int used = 0;
    if (strlen(cursor) > 64 || sscanf(cursor, "c1.%llu.%16llx%n", &off, &got, &used) != 2 ||
        cursor[used] != '\0' || strlen(strrchr(cursor, '.') + 1) != 16)
        return qr_fail(err, QR_EINVAL, "invalid cursor: pass the next_cursor of the previous page unchanged");
    if (got != fp)
        return qr_fail(err, QR_EINVAL,
                       "the cursor belongs to another query (text, mode, filters or caller changed)");
    if (off >= RETRIEVAL_DEPTH_MAX)
        return qr_fail(err, QR_ELIMIT, "invalid cursor: offset past %d results", RETRIEVAL_DEPTH_MAX);
    *offset = (size_t)off;
    return QR_OK;
}

/* ---- query words as the index holds them ------------------------------------------------ */

/*
 * FTS5 matches stems ("wings" finds "wing"), so query words are run through the index's own
 * tokenizer (store_tokenize): an excluded word removes the searched words of the same stem, and
 * snippets highlight exactly the tokens FTS5 matched, found by tokenizing the chunk the same way.
 */
typedef struct {
    const char **forms; /* distinct indexed forms of the query's words */
    size_t *form_len;   /* strlen(forms[i]), for the snippets' comparisons of every token */
    bool *is_term;      /* forms[i] is searched on its own (highlighted wherever it occurs) */
    size_t nforms, cap;
    int **phrases; /* phrases of two or more words, as form ids */
    size_t *phrase_len, nphrases;
} vocab;

typedef struct {
    qr_arena *a;
    const char *form;
    size_t len;
} first_form;

static qr_status take_first(void *ctx, const char *form, size_t len, size_t start, size_t end, char *err)
{
    (void)start, (void)end;
    first_form *f = ctx;
    if (f->form)
        return QR_OK;
    if (!(f->form = qr_arena_strndup(f->a, form, len)))
        return qr_fail(err, QR_ENOMEM, "out of memory parsing the query");
    f->len = len;
    return QR_OK;
}

/* The indexed form of one query word (the word itself should the tokenizer drop it). */
static qr_status stem(retrieval *r, qr_arena *a, const char *word, const char **out, char *err)
{
    first_form f = {a, NULL, 0};
    qr_status st = store_tokenize(r->s, word, strlen(word), take_first, &f, err);
    if (st)
        return st;
    *out = f.form ? f.form : word;
    return QR_OK;
}

static int vocab_find(const vocab *v, const char *form)
{
    for (size_t i = 0; i < v->nforms; i++)
        if (strcmp(v->forms[i], form) == 0)
            return (int)i;
    return -1;
}

static qr_status vocab_add(vocab *v, qr_arena *a, const char *form, bool term, int *id, char *err)
{
    int i = vocab_find(v, form);
    if (i < 0) {
        if (v->nforms == v->cap) {
            size_t cap = v->cap ? v->cap * 2 : 32;
            const char **f = qr_arena_alloc(a, cap * sizeof(*f));
            size_t *fl = qr_arena_alloc(a, cap * sizeof(*fl));
            bool *t = qr_arena_calloc(a, cap, sizeof(*t));
            if (!f || !fl || !t)
                return qr_fail(err, QR_ENOMEM, "out of memory parsing the query");
            if (v->nforms) {
                memcpy(f, v->forms, v->nforms * sizeof(*f));
                memcpy(fl, v->form_len, v->nforms * sizeof(*fl));
                memcpy(t, v->is_term, v->nforms * sizeof(*t));
            }
            v->forms = f;
            v->form_len = fl;
            v->is_term = t;
            v->cap = cap;
        }
        i = (int)v->nforms++;
        v->forms[i] = form;
        v->form_len[i] = strlen(form);
    }
    if (term)
        v->is_term[i] = true;
    if (id)
        *id = i;
    return QR_OK;
}

/* Stems the parsed query: drops OR terms whose stem is excluded (a word cannot be both wanted and
 * excluded), and fills the highlighting vocabulary. Repeated words stay: each occurrence is an
 * OR alternative, which is how FTS5's bm25 weighs query term frequency. */
static qr_status stem_query(retrieval *r, qr_arena *a, rq_query *q, vocab *v, char *err)
{
    qr_status st;
    memset(v, 0, sizeof(*v));
    vocab excluded = {0};
    for (size_t i = 0; i < q->nexcluded; i++) {
        const char *f;
        if (q->excluded[i].ntokens == 1 && ((st = stem(r, a, q->excluded[i].tokens[0], &f, err)) ||
                                            (st = vocab_add(&excluded, a, f, true, NULL, err))))
            return st;
    }
    if (q->nphrases) {
        v->phrases = qr_arena_calloc(a, q->nphrases, sizeof(*v->phrases));
        v->phrase_len = qr_arena_calloc(a, q->nphrases, sizeof(*v->phrase_len));
        if (!v->phrases || !v->phrase_len)
            return qr_fail(err, QR_ENOMEM, "out of memory parsing the query");
    }
    for (size_t i = 0; i < q->nphrases; i++) {
        const rq_phrase *p = &q->phrases[i];
        int *ids = qr_arena_alloc(a, p->ntokens * sizeof(int));
        if (!ids)
            return qr_fail(err, QR_ENOMEM, "out of memory parsing the query");
        for (size_t j = 0; j < p->ntokens; j++) {
            const char *f;
            if ((st = stem(r, a, p->tokens[j], &f, err)) ||
                (st = vocab_add(v, a, f, p->ntokens == 1, &ids[j], err)))
                return st;
        }
        if (p->ntokens > 1) {
            v->phrases[v->nphrases] = ids;
            v->phrase_len[v->nphrases++] = p->ntokens;
        }
    }
    size_t kept = 0;
    for (size_t i = 0; i < q->nterms; i++) {
        const char *f;
        if ((st = stem(r, a, q->terms[i], &f, err)))
            return st;
        if (vocab_find(&excluded, f) >= 0)
            continue;
        if ((st = vocab_add(v, a, f, true, NULL, err)))
            return st;
        q->terms[kept++] = q->terms[i];
    }
    q->nterms = kept;
    return QR_OK;
}

/* The query's OR terms as indexed forms, in query order with repeats, for the pruned BM25 path;
 * only_terms is false when the query also has phrases or exclusions (FTS5 ranks those). */
typedef struct {
    const char **forms;
    size_t n;
    bool only_terms;
} term_forms;

/* Parses, stems and turns a query into its three FTS5 expressions (and, when tf is not NULL,
 * its terms' indexed forms). */
static qr_status prepare_query(retrieval *r, const char *text, bool plain, qr_arena *a, vocab *voc,
                               qr_buf *rank, qr_buf *require, qr_buf *exclude, term_forms *tf, char *err)
{
    rq_query q;
    qr_status st = rq_parse(text, strlen(text), r->sw, plain, &r->limits, a, &q, err);
    if (st || (st = stem_query(r, a, &q, voc, err)))
        return st;
    if (rq_fts_rank(&q, rank) || rq_fts_require(&q, require) || rq_fts_exclude(&q, exclude))
        return qr_fail(err, QR_ENOMEM, "out of memory building the full-text query");
    if (tf) {
        tf->n = 0;
        tf->only_terms = !q.nphrases && !q.nexcluded;
        if (q.nterms && !(tf->forms = qr_arena_calloc(a, q.nterms, sizeof(*tf->forms))))
            return qr_fail(err, QR_ENOMEM, "out of memory parsing the query");
        for (size_t i = 0; i < q.nterms; i++)
            if ((st = stem(r, a, q.terms[i], &tf->forms[tf->n++], err)))
                return st;
    }
    return QR_OK;
}

qr_status retrieval_query_expressions(retrieval *r, const char *query, bool plain, qr_buf *rank,
                                      qr_buf *require, qr_buf *exclude, char *err)
{
    if (!r || !rank || !require || !exclude)
        return qr_fail(err, QR_EINVAL, "retrieval_query_expressions: NULL argument");
    qr_arena a;
    vocab voc;
    qr_arena_init(&a, QUERY_ARENA_CAP);
    qr_status st = prepare_query(r, query ? query : "", plain, &a, &voc, rank, require, exclude, NULL, err);
    qr_arena_release(&a);
    return st;
}

/* ---- snippets ---------------------------------------------------------------------------- */

typedef struct {
    size_t start, end;
    int form; /* id in the query vocabulary, or -1 */
} token;

typedef struct {
    const vocab *v;
    token *t;
    size_t n, cap;
} token_list;

static qr_status collect_token(void *ctx, const char *form, size_t len, size_t start, size_t end, char *err)
{
    token_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        token *t = realloc(l->t, cap * sizeof(*t));
        if (!t)
            return qr_fail(err, QR_ENOMEM, "out of memory for a snippet");
        l->t = t;
        l->cap = cap;
    }
    int id = -1;
    for (size_t i = 0; i < l->v->nforms && id < 0; i++)
        if (l->v->form_len[i] == len && memcmp(l->v->forms[i], form, len) == 0)
            id = (int)i;
    l->t[l->n++] = (token){start, end, id};
    return QR_OK;
}

/* Marks the tokens FTS5 matched: words searched alone, and whole occurrences of phrases. */
static void mark_matches(const vocab *v, const token *t, size_t n, unsigned char *hit)
{
    for (size_t i = 0; i < n; i++)
        hit[i] = t[i].form >= 0 && v->is_term[t[i].form];
    for (size_t p = 0; p < v->nphrases; p++) {
        size_t len = v->phrase_len[p];
        for (size_t i = 0; i + len <= n; i++) {
            size_t j = 0;
            while (j < len && t[i + j].form == v->phrases[p][j])
                j++;
            if (j == len)
                memset(hit + i, 1, len);
        }
    }
}

static bool is_space_byte(char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

/* Makes a snippet of text: the window of at most `want` tokens holding the most matched tokens
 * (the first such), with the markers around each run of matched tokens; [*start, *end) is the
 * window's byte range in text. */
static qr_status make_snippet(retrieval *r, const vocab *v, const char *text, size_t len, qr_arena *a,
                              const char **snippet, size_t *start, size_t *end, char *err)
{
    token_list l = {.v = v};
    unsigned char *hit = NULL;
    qr_buf out;
    qr_buf_init(&out, RESULT_ARENA_CAP);
    size_t want = r->o.snippet_tokens, best = 0;
    qr_status st = store_tokenize(r->s, text, len, collect_token, &l, err);
    if (st)
        goto out;
    if (!(hit = calloc(l.n ? l.n : 1, 1))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for a snippet");
        goto out;
    }
    mark_matches(v, l.t, l.n, hit);
    if (l.n > want) {
        /* sliding window: sum is the matched tokens of the window ending at token i */
        size_t sum = 0, top = 0;
        for (size_t i = 0; i < l.n; i++) {
            sum += hit[i];
            if (i >= want)
                sum -= hit[i - want];
            if (i + 1 >= want && sum > top) {
                top = sum;
                best = i + 1 - want;
            }
        }
    }
    size_t s = 0, e = len, first = 0, last = l.n;
    if (l.n > want) {
        first = best;
        last = best + want;
        s = best ? l.t[best].start : 0;
        if (last < l.n) {
            e = l.t[last - 1].end;
            /* keep the punctuation that closes the last word ("wing." not "wing") */
            while (e < len && !is_space_byte(text[e]) && e < l.t[last].start)
                e++;
        }
    }
    size_t at = s;
    for (size_t i = first; i < last && !st; i++) {
        if (!hit[i])
            continue;
        size_t j = i;
        while (j + 1 < last && hit[j + 1])
            j++;
        if (qr_buf_append(&out, text + at, l.t[i].start - at) || qr_buf_puts(&out, r->o.snippet_open) ||
            qr_buf_append(&out, text + l.t[i].start, l.t[j].end - l.t[i].start) ||
            qr_buf_puts(&out, r->o.snippet_close))
            st = qr_fail(err, QR_ENOMEM, "out of memory for a snippet");
        at = l.t[j].end;
        i = j;
    }
    if (!st && qr_buf_append(&out, text + at, e - at))
        st = qr_fail(err, QR_ENOMEM, "out of memory for a snippet");
    if (!st && !(*snippet = qr_arena_strndup(a, qr_buf_str(&out), qr_buf_len(&out))))
        st = qr_fail(err, QR_ENOMEM, "out of memory for a snippet");
    *start = s;
    *end = e;
out:
    free(l.t);
    free(hit);
    qr_buf_release(&out);
    return st;
}

/* ---- reading the page back ----------------------------------------------------------------- */

typedef struct {
    retrieval_result *res;
    const char **texts; /* the chunks' texts (in the result: callers read them once, from here) */
    size_t *text_lens;
    const item *page; /* the page's items in order, for scores and ranks */
    size_t npage;
    size_t next; /* where the next looked-up item may be (the store returns them in order) */
    size_t *pos; /* per hit read: its item's index in page[] */
} reader;

static qr_status read_hit(void *ctx, const store_chunk_view *c, char *err)
{
    reader *rd = ctx;
    retrieval_result *res = rd->res;
    qr_arena *a = &res->arena_;
    while (rd->next < rd->npage && rd->page[rd->next].id != c->chunk_id)
        rd->next++;
    if (rd->next == rd->npage)
        return qr_fail(err, QR_EINTERNAL, "search: the store returned chunk %lld out of order",
                       (long long)c->chunk_id);
    rd->pos[res->nhits] = rd->next;
    const item *it = &rd->page[rd->next++];
    retrieval_hit *h = &res->hits[res->nhits];
    memset(h, 0, sizeof(*h));
    h->chunk_id = c->chunk_id;
    h->score = it->score;
    h->bm25_rank = it->rank_b;
    h->vector_rank = it->rank_v;
    h->chunk_start = c->start;
    h->chunk_end = c->end;
    if (!(h->doc_id = qr_arena_strdup(a, c->doc_id)) || !(h->title = qr_arena_strdup(a, c->title)) ||
        !(h->uri = qr_arena_strdup(a, c->uri)) || !(h->headings = qr_arena_strdup(a, c->headings)) ||
        !(h->text = rd->texts[res->nhits] = qr_arena_strndup(a, c->text, c->text_len)))
        return qr_fail(err, QR_ENOMEM, "out of memory for search results");
    h->text_len = rd->text_lens[res->nhits] = c->text_len;
    res->nhits++;
    return QR_OK;
}

/* ---- reranking --------------------------------------------------------------------------- */

/* The rerank stage. A reranker sees the first rerank.candidates hits of the permission-trimmed,
 * fused ranking (read back through the permission filter, like any page), and its scores reorder
 * that window; the whole ranking is then the reordered window followed by the first-stage hits
 * past it, and pages are cut from it, so paging stays one consistent order as long as the
 * reranker answers the same way. When it fails (or gives a non-finite score) the window keeps its
 * first-stage order and the page says why. */

typedef struct {
    double score;
    size_t at; /* position in the first-stage order: ties keep it */
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* Reorders hits[0..m) (and their texts) by the reranker's scores. Only running out of memory is
 * an error: a failing reranker leaves the order as it was and marks the result. */
static qr_status rerank_window(retrieval *r, const char *query, retrieval_result *res, const char **texts,
                               size_t *lens, size_t m, char *err)
{
    qr_status st = QR_OK;
    double *scores = calloc(m, sizeof(*scores));
    ranked *order = calloc(m, sizeof(*order));
    retrieval_hit *hits = calloc(m, sizeof(*hits));
    const char **t2 = calloc(m, sizeof(*t2));
    size_t *l2 = calloc(m, sizeof(*l2));
    if (!scores || !order || !hits || !t2 || !l2) {
        st = qr_fail(err, QR_ENOMEM, "out of memory reranking");
        goto out;
    }
    const char *reason = NULL;
    char why[QR_ERR_LEN] = "";
    res->rerank_candidates = m;
    uint64_t t0 = qr_now_ns();
    qr_status hst = r->rr.fn(r->rr.ctx, query, texts, lens, m, scores, &reason, why);
    for (size_t i = 0; i < m && !hst; i++)
        if (!isfinite(scores[i])) {
            hst = qr_fail(why, QR_EIO, "the reranker gave passage %zu a score that is not finite", i);
            reason = "malformed_reply";
        }
    if (hst) {
        res->rerank = RETRIEVAL_RERANK_FALLBACK;
        res->rerank_reason = qr_arena_strdup(&res->arena_, reason && *reason ? reason : "backend_error");
        if (!res->rerank_reason)
            st = qr_fail(err, QR_ENOMEM, "out of memory reranking");
        /* an open breaker refuses every search's call: its opening was logged once, not each */
        bool open = reason && strcmp(reason, "breaker_open") == 0;
        qr_log(open ? QR_LOG_DEBUG : QR_LOG_WARN, LOG_COMPONENT,
               "reranking failed, first-stage order kept (%s): %s",
               res->rerank_reason ? res->rerank_reason : "", why);
        goto out;
    }
    for (size_t i = 0; i < m; i++)
        order[i] = (ranked){scores[i], i};
    qsort(order, m, sizeof(*order), cmp_ranked);
    for (size_t i = 0; i < m; i++) {
        hits[i] = res->hits[order[i].at];
        hits[i].score = order[i].score;
        t2[i] = texts[order[i].at];
        l2[i] = lens[order[i].at];
    }
    memcpy(res->hits, hits, m * sizeof(*hits));
    memcpy(texts, t2, m * sizeof(*t2));
    memcpy(lens, l2, m * sizeof(*l2));
    res->rerank = RETRIEVAL_RERANK_APPLIED;
    qr_log(QR_LOG_DEBUG, LOG_COMPONENT, "reranked %zu passages in %.2f ms", m, (qr_now_ns() - t0) / 1e6);
out:
    free(scores);
    free(order);
    free(hits);
    free(t2);
    free(l2);
    return st;
}

qr_status retrieval_rerank_json(const retrieval_result *res, qr_buf *out)
{
    if (!res || !out)
        return QR_EINVAL;
    if (res->rerank == RETRIEVAL_RERANK_OFF)
        return QR_OK;
    qr_status st;
    if (res->rerank == RETRIEVAL_RERANK_APPLIED)
        st = qr_buf_puts(out, "{\"applied\":true");
    else if ((st = qr_buf_puts(out, "{\"applied\":false,\"reason\":")) == QR_OK)
        st = qr_json_escape(out, res->rerank_reason ? res->rerank_reason : "",
                            strlen(res->rerank_reason ? res->rerank_reason : ""));
    if (!st && res->rerank_model && *res->rerank_model) {
        st = qr_buf_puts(out, ",\"model\":");
        if (!st)
            st = qr_json_escape(out, res->rerank_model, strlen(res->rerank_model));
    }
    if (!st)
        st = qr_buf_printf(out, ",\"candidates\":%zu}", res->rerank_candidates);
    return st;
}

/* ---- search ------------------------------------------------------------------------------ */

static retrieval_test_hook_fn test_hook;
static void *test_hook_ctx;

void retrieval_test_set_hook(retrieval_test_hook_fn fn, void *ctx)
{
    test_hook = fn;
    test_hook_ctx = ctx;
}

size_t retrieval_result_filter(retrieval_result *res, bool (*keep)(void *ctx, const retrieval_hit *h),
                               void *ctx)
{
    size_t kept = 0, n = res ? res->nhits : 0;
    for (size_t i = 0; i < n; i++)
        if (keep(ctx, &res->hits[i]))
            res->hits[kept++] = res->hits[i];
    if (res)
        res->nhits = kept;
    return n - kept;
}

void retrieval_result_free(retrieval_result *res)
{
    if (!res)
        return;
    qr_arena_release(&res->arena_);
    free(res);
}

static bool zero_vector(const float *v, int dim)
{
    for (int i = 0; i < dim; i++)
        if (v[i] != 0)
            return false;
    return true;
}

/* Checks the request; fills the effective mode and per-document limit. */
static qr_status check_request(retrieval *r, const retrieval_caller *c, const retrieval_request *q,
                               retrieval_mode *mode, size_t *cap, char *err)
{
    if (q->k < 1 || q->k > RETRIEVAL_K_MAX)
        return qr_fail(err, QR_EINVAL, "k must be 1..%d (got %zu)", RETRIEVAL_K_MAX, q->k);
    if (q->query && strlen(q->query) > RETRIEVAL_QUERY_MAX)
        return qr_fail(err, QR_ELIMIT, "the query is longer than %d bytes", RETRIEVAL_QUERY_MAX);
    if (c->nprincipals && !c->principals)
        return qr_fail(err, QR_EINVAL, "search: NULL principal list");
    if (c->nprincipals > STORE_FILTER_PRINCIPALS_MAX)
        return qr_fail(err, QR_ELIMIT, "the caller has %zu principals, more than %d", c->nprincipals,
                       STORE_FILTER_PRINCIPALS_MAX);
    for (size_t i = 0; i < c->nprincipals; i++)
        if (!store_principal_valid(c->principals[i]))
            return qr_fail(
                err, QR_EINVAL,
                "invalid principal #%zu of the caller: expected public, user:<uid> or group:<name>", i);
    if (q->ndoc_ids > STORE_FILTER_DOC_IDS_MAX)
        return qr_fail(err, QR_ELIMIT, "at most %d document ids may be given (got %zu)",
                       STORE_FILTER_DOC_IDS_MAX, q->ndoc_ids);
    if (q->ndoc_ids && !q->doc_ids)
        return qr_fail(err, QR_EINVAL, "search: NULL document id list");
    if (q->vector && (q->dim <= 0 || q->dim > VINDEX_DIM_MAX))
        return qr_fail(err, QR_EINVAL, "invalid query vector dimension %d", q->dim);
    *mode = q->mode == RETRIEVAL_MODE_DEFAULT ? r->o.mode : q->mode;
    if (*mode > RETRIEVAL_VECTOR)
        return qr_fail(err, QR_EINVAL, "unknown search mode %d", (int)q->mode);
    if (*mode == RETRIEVAL_VECTOR && !r->v)
        return qr_fail(err, QR_EINVAL, "vector search needs the vector index (run `quarry index build`)");
    if (*mode == RETRIEVAL_VECTOR && !q->vector)
        return qr_fail(err, QR_EINVAL, "vector search needs the query's embedding");
    if (q->vector && r->v && *mode != RETRIEVAL_BM25) {
        vindex_info info;
        vindex_get_info(r->v, &info);
        if (info.dim && q->dim != info.dim)
            return qr_fail(err, QR_EINVAL, "the query vector has dimension %d, the index's is %d", q->dim,
                           info.dim);
        for (int i = 0; i < q->dim; i++)
            if (!isfinite(q->vector[i]))
                return qr_fail(err, QR_EINVAL, "the query vector is not finite");
    }
    *cap = q->max_per_doc == 0 ? r->o.max_per_doc : q->max_per_doc == SIZE_MAX ? 0 : q->max_per_doc;
    return QR_OK;
}

qr_status retrieval_search(retrieval *r, const retrieval_caller *caller, const retrieval_request *req,
                           retrieval_result **out, char *err)
{
    if (!r || !caller || !req || !out)
        return qr_fail(err, QR_EINVAL, "retrieval_search: NULL argument");
    *out = NULL;
    uint64_t t0 = qr_now_ns();
    retrieval_mode mode = RETRIEVAL_MODE_DEFAULT;
    size_t cap = 0, offset = 0;
    bool parallel = false, parallel_joined = false; /* the vector list on its own thread */
    pthread_t vthread;
    qr_status st = check_request(r, caller, req, &mode, &cap, err);
    if (st)
        return st;
    /* the rerank window: the first this-many results of the ranking are reranked */
    size_t window = r->rr.fn && !req->no_rerank ? r->rr.candidates : 0;
    uint64_t fp = request_fingerprint(caller, req, mode, cap, window);
    if ((st = parse_cursor(req->cursor, fp, &offset, err)))
        return st;
    if (offset + req->k > RETRIEVAL_DEPTH_MAX)
        return qr_fail(err, QR_ELIMIT, "pages go at most %d results deep", RETRIEVAL_DEPTH_MAX);
    /* a node that follows a system of record (store.backend = postgres) first applies every
     * change committed there before now, so that the permission checks below see every delete
     * and revocation; when it cannot, the search fails closed (QR_EUNAVAILABLE) */
    if ((st = store_fence(r->s, err)))
        return st;

    retrieval_result *res = calloc(1, sizeof(*res));
    if (!res)
        return qr_fail(err, QR_ENOMEM, "out of memory for search results");
    atomic_fetch_add_explicit(&searches_running, 1, memory_order_relaxed); /* until out: below */
    qr_arena_init(&res->arena_, RESULT_ARENA_CAP);
    res->rerank_model = r->rr.fn ? r->rr.model : NULL;
    res->rerank_window = window;
    if (r->rr.fn && req->no_rerank) {
        res->rerank = RETRIEVAL_RERANK_SKIPPED;
        res->rerank_reason = "disabled";
    }
    qr_arena qa;
    qr_arena_init(&qa, QUERY_ARENA_CAP);
    qr_buf rank, require, exclude;
    qr_buf_init(&rank, EXPR_CAP);
    qr_buf_init(&require, EXPR_CAP);
    qr_buf_init(&exclude, EXPR_CAP);
    list bm = {0}, vec = {0}, fused = {0};
    const list *ranking = &fused;
    const char *text = req->query ? req->query : "";
    vocab voc;
    term_forms forms = {0};
    /* the search's deadline: the caller's token, or retrieval.timeout_ms from now; the store's
     * statements check it too, for as long as this search holds the handle */
    qr_cancel own;
    qr_cancel_init(&own);
    qr_cancel_set_deadline(&own, t0, r->o.timeout_ms);
    qr_cancel *cancel = req->cancel ? req->cancel : &own;
    store_set_cancel(r->s, cancel);
    if ((st = prepare_query(r, text, req->plain, &qa, &voc, &rank, &require, &exclude, &forms, err)))
        goto out;
    uint64_t t1 = qr_now_ns();
    res->parse_ns = t1 - t0;
    if (test_hook)
        test_hook(test_hook_ctx, req, cancel);
    if ((st = qr_cancel_check(cancel, err)))
        goto out;

    /* what can run: BM25 needs a word, vectors an index and a usable embedding */
    bool words = qr_buf_len(&rank) > 0;
    bool vectors = r->v && req->vector && !zero_vector(req->vector, req->dim);
    bool run_bm25 = words && mode != RETRIEVAL_VECTOR;
    bool run_vec = vectors && mode != RETRIEVAL_BM25;
    res->mode = mode;
    if (mode == RETRIEVAL_HYBRID && run_bm25 != run_vec)
        res->mode = run_bm25 ? RETRIEVAL_BM25 : RETRIEVAL_VECTOR;

    store_filter f = {
        .principals = caller->principals,
        .nprincipals = caller->nprincipals,
        .all_documents = caller->is_admin,
        .doc_ids = req->doc_ids,
        .ndoc_ids = req->ndoc_ids,
        .uri_prefix = req->source_prefix,
        .content_type = req->content_type,
        .updated_after_ms = req->updated_after_ms,
        .require_match = qr_buf_str(&require),
        .exclude_match = qr_buf_str(&exclude),
    };
    bool unrestricted = caller->is_admin && !req->ndoc_ids && !(req->source_prefix && *req->source_prefix) &&
                        !(req->content_type && *req->content_type) && req->updated_after_ms <= 0 &&
                        !qr_buf_len(&require) && !qr_buf_len(&exclude);
    /* one more than the page's end tells whether a next page exists */
    size_t need = offset + req->k + 1;
    if (window > need)
        need = window;
    size_t depth = res->mode == RETRIEVAL_HYBRID && r->o.candidates > need ? r->o.candidates : need;

    /* both lists: the vector list on a second thread while this one ranks BM25 */
    vector_job vj = {r, &f, unrestricted, req->vector, req->dim, depth, cap, &vec, {0}, cancel, QR_OK, 0, ""};
    parallel = run_bm25 && run_vec && vector_job_start(&vj, &vthread);
    uint64_t tb = qr_now_ns();
    if (run_bm25) {
        store_hit *hits = malloc(depth * sizeof(*hits));
        size_t n = 0;
        double w[3] = {r->o.weight_title, r->o.weight_headings, r->o.weight_body};
        if (!hits) {
            st = qr_fail(err, QR_ENOMEM, "out of memory for search results");
            goto out;
        }
        /* the pruned path answers word queries with no filter but permissions; FTS5 the rest,
         * and any query while the pruned index waits for a rebuild */
        bool pruned = r->b && r->o.bm25_pruned && forms.only_terms && forms.n && !req->ndoc_ids &&
                      !(req->source_prefix && *req->source_prefix) &&
                      !(req->content_type && *req->content_type) && req->updated_after_ms <= 0;
        if (pruned) {
            st = bm25_search(r->b, r->s, forms.forms, forms.n, w, caller->principals, caller->nprincipals,
                             caller->is_admin, cap, depth, hits, &n, cancel, err);
            if (st == QR_EUNAVAILABLE) {
                qr_log(QR_LOG_DEBUG, LOG_COMPONENT, "pruned BM25 path unavailable, FTS5 ranks: %s",
                       err ? err : "");
                pruned = false;
                st = QR_OK;
            }
        }
        res->bm25_pruned = pruned;
        if (!st && !pruned)
            st = store_search_bm25(r->s, qr_buf_str(&rank), w, &f, cap, depth, hits, &n, err);
        for (size_t i = 0; i < n && !st; i++)
            st = list_push(&bm, hits[i].chunk_id, hits[i].doc, hits[i].score, err);
        free(hits);
    }
    uint64_t tv = qr_now_ns();
    res->bm25_ns = run_bm25 ? tv - tb : 0;
    if (parallel) {
        /* the vector thread stops early when the search's token is cancelled or its deadline
         * passes; a BM25 failure waits for it all the same (it uses this handle's state) */
        pthread_join(vthread, NULL);
        parallel_joined = true;
        store_set_cancel(r->twin, NULL);
        r->vs = r->s;
        if (!st && vj.st)
            st = qr_fail(err, vj.st, "%s", vj.err);
    }
    if (st)
        goto out;
    for (size_t i = 0; i < bm.n; i++)
        bm.v[i].rank_b = (int)i + 1;
    if (run_vec) {
        vector_path path = vj.path;
        if (!parallel && (st = vector_list(r, &f, unrestricted, req->vector, req->dim, depth, cap, &vec,
                                           &path, cancel, err)))
            goto out;
        res->vector_exact = path.exact;
        res->vector_scanned = path.scanned;
        res->vector_fallback = path.fallback;
        res->permitted_listed = path.listed;
        res->permitted_chunks = path.permitted;
        res->vector_fetched = path.fetched;
        for (size_t i = 0; i < vec.n; i++)
            vec.v[i].rank_v = (int)i + 1;
    }
    uint64_t tf = qr_now_ns();
    res->vector_ns = !run_vec ? 0 : parallel ? vj.ns : tf - tv;
    if (res->mode == RETRIEVAL_HYBRID) {
        if ((st = fuse(&r->o, &bm, &vec, &fused, err)) || (st = apply_cap(&fused, cap, err)))
            goto out;
    } else {
        ranking = run_bm25 ? &bm : &vec;
    }

    /* the page: not read for a search already past its deadline */
    if ((st = qr_cancel_check(cancel, err)))
        goto out;
    uint64_t t2 = qr_now_ns();
    res->rank_ns = t2 - t1;
    res->fusion_ns = t2 - tf;
    size_t end = ranking->n < offset + req->k ? ranking->n : offset + req->k;
    size_t npage = end > offset ? end - offset : 0;
    /* a page that starts inside the rerank window is cut from the reranked window (read whole)
     * followed by the first-stage hits past it; a page past the window is first-stage order */
    size_t wn = window < ranking->n ? window : ranking->n;
    bool reranking = window && offset < wn;
    if (window && !reranking) {
        res->rerank = RETRIEVAL_RERANK_SKIPPED;
        res->rerank_reason = wn ? "past_window" : "no_candidates";
    }
    size_t from = reranking ? 0 : offset;
    size_t nread = reranking ? (wn > end ? wn : end) : npage;
    const item *page = ranking->v + from;
    int64_t *ids = NULL;
    if (nread) {
        res->hits = qr_arena_calloc(&res->arena_, nread, sizeof(*res->hits));
        ids = malloc(nread * sizeof(*ids));
        const char **texts = qr_arena_calloc(&qa, nread, sizeof(*texts));
        size_t *lens = qr_arena_calloc(&qa, nread, sizeof(*lens));
        size_t *pos = qr_arena_calloc(&qa, nread, sizeof(*pos));
        if (!res->hits || !ids || !texts || !lens || !pos) {
            free(ids);
            st = qr_fail(err, QR_ENOMEM, "out of memory for search results");
            goto out;
        }
        for (size_t i = 0; i < nread; i++)
            ids[i] = page[i].id;
        reader rd = {res, texts, lens, page, nread, 0, pos};
        st = store_read_chunks(r->s, ids, nread, &f, read_hit, &rd, err);
        free(ids);
        uint64_t t3 = qr_now_ns();
        res->hydrate_ns = t3 - t2;
        if (!st && reranking) {
            size_t m = 0;
            while (m < res->nhits && pos[m] < wn)
                m++;
            if (m) {
                st = rerank_window(r, text, res, texts, lens, m, err);
                res->rerank_ns = qr_now_ns() - t3;
            } else {
                res->rerank = RETRIEVAL_RERANK_SKIPPED;
                res->rerank_reason = "no_candidates";
            }
            size_t lo = offset < res->nhits ? offset : res->nhits;
            size_t hi = offset + req->k < res->nhits ? offset + req->k : res->nhits;
            memmove(res->hits, res->hits + lo, (hi - lo) * sizeof(*res->hits));
            memmove(texts, texts + lo, (hi - lo) * sizeof(*texts));
            memmove(lens, lens + lo, (hi - lo) * sizeof(*lens));
            res->nhits = hi - lo;
        }
        for (size_t i = 0; i < res->nhits && !st; i++) {
            retrieval_hit *h = &res->hits[i];
            size_t s0 = 0, e0 = 0;
            st = make_snippet(r, &voc, texts[i], lens[i], &res->arena_, &h->snippet, &s0, &e0, err);
            h->start = h->chunk_start + s0;
            h->end = h->chunk_start + e0;
        }
        res->snippet_ns = qr_now_ns() - t3 - res->rerank_ns;
        if (st)
            goto out;
    }
    if (ranking->n > offset + req->k) {
        char cursor[64];
        snprintf(cursor, sizeof(cursor), "c1.%zu.%016llx", offset + req->k, (unsigned long long)fp);
        if (!(res->next_cursor = qr_arena_strdup(&res->arena_, cursor))) {
            st = qr_fail(err, QR_ENOMEM, "out of memory for search results");
            goto out;
        }
    }
    qr_log(QR_LOG_DEBUG, LOG_COMPONENT,
           "search %s: %zu bm25 and %zu vector candidates%s, %zu results, %.2f ms",
           retrieval_mode_name(res->mode), bm.n, vec.n, res->vector_exact ? " (exact vector scan)" : "",
           res->nhits, (qr_now_ns() - t0) / 1e6);
out:
    if (parallel && !parallel_joined) { /* a BM25 step failed before the join */
        pthread_join(vthread, NULL);
        store_set_cancel(r->twin, NULL);
        r->vs = r->s;
    }
    atomic_fetch_sub_explicit(&searches_running, 1, memory_order_relaxed);
    store_set_cancel(r->s, NULL);
    if (st == QR_ETIMEOUT || st == QR_ECANCELED) {
        /* say why in the caller's words, unless the store timed out on a lock instead */
        char why[QR_ERR_LEN];
        if (qr_cancel_check(cancel, why) == st)
            qr_fail(err, st, "search stopped: %s%s", why,
                    st == QR_ETIMEOUT ? " (retrieval.timeout_ms); ask for less: fewer words, phrases or "
                                        "exclusions, or narrower filters"
                                      : "");
    }
    list_release(&bm);
    list_release(&vec);
    list_release(&fused);
    qr_buf_release(&rank);
    qr_buf_release(&require);
    qr_buf_release(&exclude);
    qr_arena_release(&qa);
    if (st) {
        retrieval_result_free(res);
        return st;
    }
    *out = res;
    return QR_OK;
}

/* ---- JSON -------------------------------------------------------------------------------- */

qr_status retrieval_result_json(const retrieval_result *res, qr_buf *out)
{
    if (!res || !out)
        return QR_EINVAL;
    qr_status st = qr_buf_puts(out, "{\"results\":[");
    for (size_t i = 0; i < res->nhits && !st; i++) {
        const retrieval_hit *h = &res->hits[i];
        if ((i && (st = qr_buf_putc(out, ','))) ||
            (st = qr_buf_printf(out, "{\"chunk_id\":%lld,\"doc_id\":", (long long)h->chunk_id)) ||
            (st = qr_json_escape(out, h->doc_id, strlen(h->doc_id))) ||
            (st = qr_buf_puts(out, ",\"title\":")) ||
            (st = qr_json_escape(out, h->title, strlen(h->title))) || (st = qr_buf_puts(out, ",\"uri\":")) ||
            (st = qr_json_escape(out, h->uri, strlen(h->uri))) || (st = qr_buf_puts(out, ",\"headings\":")) ||
            (st = qr_json_escape(out, h->headings, strlen(h->headings))) ||
            (st = qr_buf_printf(out, ",\"score\":%.9g,\"snippet\":", h->score)) ||
            (st = qr_json_escape(out, h->snippet, strlen(h->snippet))) ||
            (st = qr_buf_printf(out, ",\"start\":%zu,\"end\":%zu}", h->start, h->end)))
            break;
    }
    if (!st)
        st = qr_buf_printf(out, "],\"mode\":\"%s\",\"next_cursor\":", retrieval_mode_name(res->mode));
    if (!st)
        st = res->next_cursor ? qr_json_escape(out, res->next_cursor, strlen(res->next_cursor))
                              : qr_buf_puts(out, "null");
    if (!st && res->rerank != RETRIEVAL_RERANK_OFF && !(st = qr_buf_puts(out, ",\"rerank\":")))
        st = retrieval_rerank_json(res, out);
    return st ? st : qr_buf_putc(out, '}');
}
