/*
 * Benchmark of permission-trimmed search (retrieval/): latency p50/p95/p99 of bm25, vector and
 * hybrid searches (k = 10, one thread) on a generated collection, for an administrator (no permission
 * test) and callers who may read 100%,
 * 10%, 1% and 0.1% of it, each with recall@10 against the exact answer; then the quality table of
 * both shared collections in every mode (nDCG@10 and the rest, as `quarry eval` computes them).
 *
 * The generated collection: documents of 10 chunks of 80 pseudo-words drawn from a 30,000-word
 * vocabulary with a Zipf-like skew, embedded by the local embedder (384 dimensions), written to a
 * real store and indexed by the vector index the configuration's defaults choose (exact up to
 * 50,000 vectors, IVF-SQ8 above). Every document carries group:all; one in 10 group:p10, one in
 * 100 group:p1, one in 1,000 group:p01, so a caller holding one of those groups may read that
 * share. Queries are 2 to 6 words of the same vocabulary. The exact answer is the same search
 * with the exact vector path forced (retrieval.exact_share = 1: every permitted chunk listed and
 * scanned), so recall@10 measures what the approximate index and its filtered search lose.
 *
 * With --rebuild, the same kind of searches (as the 10% caller, each mode) run once with the index
 * maintainer idle and then in a loop while it rebuilds both indexes from scratch (a forced rebuild,
 * as POST /v1/index/rebuild), in one run: p50/p99/max of each and their ratio.
 *
 * Usage: bench_search [--chunks N] [--queries Q] [--datasets DIR] [--no-scale] [--no-eval] [--rebuild]
 *        [--modes bm25,vector,hybrid] WORKDIR
 * (WORKDIR is created and reused: a collection already generated there at the same size is kept.)
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/bench_corpus.h"
#include "core/core.h"
#include "index/index.h"
#include "ingest/ingest.h"
#include "retrieval/retrieval.h"

#define K          10
#define CHUNKS_PER 10
#define WORDS_PER  80
#define VOCAB      30000
#define BATCH_DOCS 50

extern void omp_set_num_threads(int n);
extern void openblas_set_num_threads(int n);

static void text_of(char *buf, size_t cap, size_t nwords)
{
    size_t n = 0;
    char w[32];
    for (size_t i = 0; i < nwords && n + 40 < cap; i++) {
        bench_word(bench_zipf_word(VOCAB), w);
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? " " : "", w);
    }
    snprintf(buf + n, cap - n, ".");
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *v, size_t n, double p)
{
    size_t r = (size_t)(p / 100.0 * (double)n + 0.999999);
    return v[(r < 1 ? 1 : r > n ? n : r) - 1];
}

/* ---- the generated collection ----------------------------------------------------------------- */

static int generate(const char *dir, size_t nchunks, ingest_embedder *e, char *err)
{
    store *s = NULL;
    store_stats ss;
    if (store_open(dir, &s, err) || store_get_stats(s, &ss, err))
        goto fail;
    if ((size_t)ss.chunks == nchunks) {
        printf("reusing the %zu generated chunks in %s\n", nchunks, dir);
        store_close(s);
        return 0;
    }
    if (ss.chunks) {
        snprintf(err, QR_ERR_LEN, "%.300s holds %lld chunks, not %zu: use another directory", dir,
                 (long long)ss.chunks, nchunks);
        goto fail;
    }
    if (store_check_embedding(s, ingest_embedder_model(e), ingest_embedder_dim(e), err))
        goto fail;
    int dim = ingest_embedder_dim(e);
    size_t ndocs = nchunks / CHUNKS_PER;
    char *text = malloc(CHUNKS_PER * WORDS_PER * 16);
    float *vecs = malloc((size_t)CHUNKS_PER * (size_t)dim * sizeof(float));
    uint64_t t0 = qr_now_ns();
    for (size_t d = 0; d < ndocs; d++) {
        if (d % BATCH_DOCS == 0 && store_batch_begin(s, err))
            goto fail;
        store_chunk chunks[CHUNKS_PER];
        const char *texts[CHUNKS_PER];
        size_t lens[CHUNKS_PER], len = 0;
        for (size_t c = 0; c < CHUNKS_PER; c++) {
            size_t start = len;
            text_of(text + len, WORDS_PER * 16, WORDS_PER);
            len += strlen(text + len);
            chunks[c] = (store_chunk){start, len, ""};
            texts[c] = text + start;
            lens[c] = len - start;
            text[len++] = ' ';
        }
        if (ingest_embed(e, texts, lens, CHUNKS_PER, vecs, err))
            goto fail;
        const char *acl[4];
        size_t nacl = 0;
        acl[nacl++] = "group:all";
        if (d % 10 == 0)
            acl[nacl++] = "group:p10";
        if (d % 100 == 0)
            acl[nacl++] = "group:p1";
        if (d % 1000 == 0)
            acl[nacl++] = "group:p01";
        char id[32], title[64], hash[65];
        snprintf(id, sizeof(id), "doc%zu", d);
        text_of(title, sizeof(title), 3);
        snprintf(hash, sizeof(hash), "%064zx", d + 1);
        store_document doc = {.doc_id = id,
                              .title = title,
                              .content_type = "text/plain",
                              .acl = acl,
                              .nacl = nacl,
                              .content_hash = hash,
                              .text = text,
                              .text_len = len - 1};
        store_put_result res;
        if (store_put(s, &doc, chunks, CHUNKS_PER, vecs, dim, &res, err))
            goto fail;
        if ((d % BATCH_DOCS == BATCH_DOCS - 1 || d + 1 == ndocs) && store_batch_commit(s, err))
            goto fail;
    }
    printf("generated %zu chunks in %.1f s\n", ndocs * CHUNKS_PER, (qr_now_ns() - t0) / 1e9);
    free(text);
    free(vecs);
    store_close(s);
    return 0;
fail:
    store_close(s);
    return 1;
}

/* ---- the IVF scan against the fixed fetch, by permitted share (BENCH_CROSSOVER) ---------------- */

/* For permitted sets of several shares (a hash of the chunk id), per query at the vector index
 * alone (no store): the permission test inside the IVF scan (vindex_search_permitted), and the
 * fixed fetch restricted callers get otherwise (vindex_search for 4 * K / share candidates, then
 * the permitted ones kept; its per-candidate SQL test is not counted here), each with recall@10
 * against the exact top 10 of the set (vindex_search_subset). */
static void crossover(vindex *v, const float *qvec, size_t nq, int dim)
{
    char err[QR_ERR_LEN];
    static const double shares[] = {1, 0.5, 0.25, 0.1, 0.01};
    vindex_info vi;
    vindex_get_info(v, &vi);
    size_t total = vi.count + vi.delta;
    int64_t *all = malloc((total + 1) * sizeof(int64_t)), *set = malloc((total + 1) * sizeof(int64_t));
    double *ls = malloc(nq * sizeof(double)), *lf = malloc(nq * sizeof(double));
    size_t n = vindex_sample_ids(v, total, all);
    qsort(all, n, sizeof(int64_t), cmp_i64);
    printf("\n| share | IVF scan p50 ms | p95 ms | recall@10 | lists probed | rows scored | fixed fetch p50 "
           "ms | p95 ms "
           "| recall@10 | candidates |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (size_t si = 0; si < sizeof(shares) / sizeof(shares[0]); si++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t h = (uint64_t)all[i] * 0x9e3779b97f4a7c15ull;
            if ((double)((h >> 11) % 1000000) < shares[si] * 1e6)
                set[m++] = all[i];
        }
        size_t want = (size_t)ceil(4.0 * K / shares[si]);
        int64_t *fids = malloc(want * sizeof(int64_t));
        float *fsc = malloc(want * sizeof(float));
        double rs = 0, rf = 0, probes = 0, scored = 0;
        for (size_t qi = 0; qi < nq; qi++) {
            const float *q = qvec + qi * (size_t)dim;
            int64_t ref[K], got[K];
            float rsc[K], gsc[K];
            size_t nref = 0, ngot = 0, nf = 0;
            vindex_scan_report rep;
            if (vindex_search_subset(v, q, dim, K, set, m, ref, rsc, &nref, NULL, err))
                goto fail;
            uint64_t t0 = qr_now_ns();
            if (vindex_search_permitted(v, q, dim, K, set, m, got, gsc, &ngot, NULL, &rep, err))
                goto fail;
            ls[qi] = (qr_now_ns() - t0) / 1e6;
            probes += (double)rep.probes;
            scored += (double)rep.scored;
            for (size_t a = 0; a < nref; a++)
                for (size_t b = 0; b < ngot; b++)
                    rs += ref[a] == got[b] ? 1.0 / (double)nref : 0;
            t0 = qr_now_ns();
            if (vindex_search(v, q, dim, want, NULL, NULL, fids, fsc, &nf, NULL, err))
                goto fail;
            size_t kept = 0;
            for (size_t i = 0; i < nf && kept < K; i++)
                if (bsearch(&fids[i], set, m, sizeof(int64_t), cmp_i64))
                    got[kept++] = fids[i];
            lf[qi] = (qr_now_ns() - t0) / 1e6;
            for (size_t a = 0; a < nref; a++)
                for (size_t b = 0; b < kept; b++)
                    rf += ref[a] == got[b] ? 1.0 / (double)nref : 0;
        }
        qsort(ls, nq, sizeof(double), cmp_double);
        qsort(lf, nq, sizeof(double), cmp_double);
        printf("| %g%% | %.2f | %.2f | %.3f | %.0f | %.0f | %.2f | %.2f | %.3f | %zu |\n", shares[si] * 100,
               pct(ls, nq, 50), pct(ls, nq, 95), rs / (double)nq, probes / (double)nq, scored / (double)nq,
               pct(lf, nq, 50), pct(lf, nq, 95), rf / (double)nq, want);
        fflush(stdout);
        free(fids);
        free(fsc);
        continue;
    fail:
        fprintf(stderr, "bench_search: %s\n", err);
        free(fids);
        free(fsc);
        break;
    }
    free(all);
    free(set);
    free(ls);
    free(lf);
}

/* The median of 5 listings of the chunks principal may read (store_filter_chunks, as retrieval
 * lists them) into listed (cap ids), in ms; *n gets how many there are. */
static double listing_ms(store *s, const char *principal, int64_t *listed, size_t cap, size_t *n)
{
    char err[QR_ERR_LEN];
    store_filter f = {.principals = &principal, .nprincipals = 1};
    double t[5];
    bool more = false;
    *n = 0;
    for (int i = 0; i < 5; i++) {
        uint64_t l0 = qr_now_ns();
        if (store_filter_chunks(s, &f, cap, listed, n, &more, err))
            fprintf(stderr, "bench_search: %s\n", err);
        t[i] = (qr_now_ns() - l0) / 1e6;
    }
    qsort(t, 5, sizeof(double), cmp_double);
    return t[2];
}

/* ---- searches after writes ---------------------------------------------------------------------- */

/* BENCH_WRITES: what a write costs the next vector search of a 10% and a 1% caller on the same
 * handle. Rounds of the queries: without writes, then with a write before each search (doc0's
 * ACL toggled between group:all and group:all + the caller's group: one change, one document),
 * where the handle brings its permitted list up to date through the change; beside them the cost
 * of listing the permitted chunks again (store_filter_chunks), what every search after a write
 * paid before. Leaves doc0's ACL as generate() wrote it. */
static int writes_between(store *s, vindex *v, retrieval *r, char (*queries)[256], const float *qvec,
                          size_t nq, int dim, double *lat)
{
    static const char *const groups[] = {"group:p10", "group:p1"};
    char err[QR_ERR_LEN];
    vindex_info vi;
    vindex_get_info(v, &vi);
    int64_t *listed = malloc((vi.count + vi.delta + 1) * sizeof(int64_t));
    printf("\n| caller | vector p50 ms, no writes | p95 | p50 ms, a write before each | p95 | list updates | "
           "listing again ms (median of 5) |\n|---|---|---|---|---|---|---|\n");
    for (size_t g = 0; g < 2; g++) {
        const char *principals[] = {groups[g]};
        const char *with[] = {"group:all", groups[g]}, *without[] = {"group:all"};
        retrieval_caller caller = {principals, 1, false};
        double p[4];
        uint64_t updates0 = retrieval_list_updates(r);
        for (int round = 0; round < 2; round++) {
            for (size_t i = 0; i < nq; i++) {
                if (round && store_set_acl(s, "doc0", i % 2 ? with : without, i % 2 ? 2 : 1, err)) {
                    fprintf(stderr, "bench_search: %s\n", err);
                    free(listed);
                    return 1;
                }
                retrieval_request q = {.query = queries[i],
                                       .vector = qvec + i * (size_t)dim,
                                       .dim = dim,
                                       .mode = RETRIEVAL_VECTOR,
                                       .k = K};
                retrieval_result *res = NULL;
                uint64_t q0 = qr_now_ns();
                if (retrieval_search(r, &caller, &q, &res, err)) {
                    fprintf(stderr, "bench_search: %s\n", err);
                    free(listed);
                    return 1;
                }
                lat[i] = (qr_now_ns() - q0) / 1e6;
                retrieval_result_free(res);
            }
            qsort(lat, nq, sizeof(double), cmp_double);
            p[2 * round] = pct(lat, nq, 50);
            p[2 * round + 1] = pct(lat, nq, 95);
        }
        static const char *const doc0[] = {"group:all", "group:p10", "group:p1", "group:p01"};
        if (store_set_acl(s, "doc0", doc0, 4, err))
            fprintf(stderr, "bench_search: doc0's ACL not restored: %s\n", err);
        size_t n = 0;
        double ms = listing_ms(s, groups[g], listed, vi.count + vi.delta + 1, &n);
        printf("| %s (%zu chunks) | %.2f | %.2f | %.2f | %.2f | %llu | %.1f |\n", groups[g], n, p[0], p[1],
               p[2], p[3], (unsigned long long)(retrieval_list_updates(r) - updates0), ms);
        fflush(stdout);
    }
    free(listed);
    return 0;
}

/* ---- latency and recall ------------------------------------------------------------------------ */

static int scale(const char *dir, size_t nchunks, size_t nqueries, const qr_config *cfg, ingest_embedder *e,
                 const char *only)
{
    char err[QR_ERR_LEN];
    store *s = NULL;
    vindex *v = NULL;
    retrieval *r = NULL, *exact = NULL;
    int rc = 1;
    if (generate(dir, nchunks, e, err) || store_open(dir, &s, err)) {
        fprintf(stderr, "bench_search: %s\n", err);
        goto out;
    }
    vindex_opts vo;
    vindex_opts_from_config(cfg, &vo);
    index_sync_report rep;
    uint64_t t0 = qr_now_ns();
    if (index_sync_open(s, dir, &vo, false, &v, &rep, err)) {
        fprintf(stderr, "bench_search: %s\n", err);
        goto out;
    }
    printf("vector index: generation %llu, %s, %zu vectors (%s %.1f s)\n", (unsigned long long)rep.generation,
           rep.type, rep.count, rep.rebuilt ? "built in" : "opened in", (qr_now_ns() - t0) / 1e9);
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    retrieval_opts o, ox;
    retrieval_opts_from_config(cfg, &o);
    ox = o;
    ox.exact_share = 1; /* the exact answer: every permitted chunk listed and scanned */
    if (retrieval_open(s, v, &o, &r, err) || retrieval_open(s, v, &ox, &exact, err)) {
        fprintf(stderr, "bench_search: %s\n", err);
        goto out;
    }
    int dim = ingest_embedder_dim(e);
    char(*queries)[256] = malloc(nqueries * sizeof(*queries));
    float *qvec = malloc(nqueries * (size_t)dim * sizeof(float));
    double *lat = malloc(nqueries * sizeof(double));
    {
        /* what the first IVF-scan search of a generation pays: reading its inverted lists */
        vindex_info vi;
        vindex_get_info(v, &vi);
        int64_t *all = malloc((vi.count + vi.delta + 1) * sizeof(int64_t)), found_ids[K];
        float *q = calloc((size_t)dim, sizeof(float)), found_sc[K];
        size_t n = vindex_sample_ids(v, vi.count + vi.delta, all), found = 0;
        vindex_scan_report srep;
        q[0] = 1;
        uint64_t l0 = qr_now_ns();
        if (vi.nlist &&
            !vindex_search_permitted(v, q, dim, K, all, n, found_ids, found_sc, &found, NULL, &srep, err))
            printf("IVF layout: read in %.1f ms (first vindex_search_permitted %.1f ms, %zu lists probed)\n",
                   srep.layout_ms, (qr_now_ns() - l0) / 1e6, srep.probes);
        free(all);
        free(q);
    }
    for (size_t i = 0; i < nqueries; i++) {
        text_of(queries[i], sizeof(queries[i]), 2 + bench_rnd() % 5);
        const char *t = queries[i];
        ingest_embed(e, &t, NULL, 1, qvec + i * (size_t)dim, err);
    }
    if (getenv("BENCH_CROSSOVER")) {
        /* what a restricted caller's first IVF-scan search after a store change adds: the listing
         * of its permitted chunks (store_filter_chunks, as retrieval lists them), median of 5 */
        static const char *const groups[] = {"group:p10", "group:p1"};
        vindex_info vi;
        vindex_get_info(v, &vi);
        int64_t *listed = malloc((vi.count + vi.delta + 1) * sizeof(int64_t));
        for (size_t g = 0; g < 2; g++) {
            size_t n = 0;
            double ms = listing_ms(s, groups[g], listed, vi.count + vi.delta + 1, &n);
            printf("listing the chunks %s may read: %zu in %.1f ms (median of 5)\n", groups[g], n, ms);
        }
        free(listed);
        crossover(v, qvec, nqueries, dim);
        free(queries);
        free(qvec);
        free(lat);
        rc = 0;
        goto out;
    }
    if (getenv("BENCH_WRITES")) {
        rc = writes_between(s, v, r, queries, qvec, nqueries, dim, lat);
        free(queries);
        free(qvec);
        free(lat);
        goto out;
    }
    static const struct {
        const char *name, *group;
        double share;
    } shares[] = {{"admin", NULL, 1},
                  {"100%", "group:all", 1},
                  {"10%", "group:p10", 0.1},
                  {"1%", "group:p1", 0.01},
                  {"0.1%", "group:p01", 0.001}};
    static const retrieval_mode modes[] = {RETRIEVAL_BM25, RETRIEVAL_VECTOR, RETRIEVAL_HYBRID};
    printf("\n| mode | permitted | p50 ms | p95 ms | p99 ms | recall@10 vs exact | vector path (exact scan / "
           "IVF scan / filtered index) |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (size_t m = 0; m < 3; m++) {
        if (only && !strstr(only, retrieval_mode_name(modes[m])))
            continue;
        for (size_t sh = 0; sh < sizeof(shares) / sizeof(shares[0]); sh++) {
            if (getenv("BENCH_SHARES") && !strstr(getenv("BENCH_SHARES"), shares[sh].name))
                continue;
            const char *principals[] = {shares[sh].group};
            retrieval_caller caller = {principals, shares[sh].group ? 1 : 0, !shares[sh].group};
            double recall = 0;
            size_t counted = 0, exact_paths = 0, scan_paths = 0;
            for (size_t i = 0; i < nqueries; i++) {
                retrieval_request q = {.query = queries[i],
                                       .vector = qvec + i * (size_t)dim,
                                       .dim = dim,
                                       .mode = modes[m],
                                       .k = K};
                retrieval_result *res = NULL, *ref = NULL;
                uint64_t q0 = qr_now_ns();
                if (retrieval_search(r, &caller, &q, &res, err)) {
                    fprintf(stderr, "bench_search: %s\n", err);
                    goto out;
                }
                lat[i] = (qr_now_ns() - q0) / 1e6;
                exact_paths += res->vector_exact;
                scan_paths += res->vector_scanned;
                if (getenv("BENCH_NO_RECALL")) { /* latency only (profiling) */
                    retrieval_result_free(res);
                    continue;
                }
                if (retrieval_search(exact, &caller, &q, &ref, err)) {
                    fprintf(stderr, "bench_search: %s\n", err);
                    goto out;
                }
                if (ref->nhits) {
                    size_t hit = 0;
                    for (size_t a = 0; a < ref->nhits; a++)
                        for (size_t b = 0; b < res->nhits; b++)
                            hit += ref->hits[a].chunk_id == res->hits[b].chunk_id;
                    recall += (double)hit / (double)ref->nhits;
                    counted++;
                }
                retrieval_result_free(res);
                retrieval_result_free(ref);
            }
            qsort(lat, nqueries, sizeof(double), cmp_double);
            char path[64] = "";
            if (modes[m] != RETRIEVAL_BM25)
                snprintf(path, sizeof(path), "%zu / %zu / %zu", exact_paths, scan_paths,
                         nqueries - exact_paths - scan_paths);
            printf("| %s | %s | %.2f | %.2f | %.2f | %.3f | %s |\n", retrieval_mode_name(modes[m]),
                   shares[sh].name, pct(lat, nqueries, 50), pct(lat, nqueries, 95), pct(lat, nqueries, 99),
                   counted ? recall / (double)counted : 1.0, path);
            fflush(stdout);
        }
    }
    free(queries);
    free(qvec);
    free(lat);
    rc = 0;
out:
    retrieval_close(r);
    retrieval_close(exact);
    vindex_close(v);
    store_close(s);
    return rc;
}

/* ---- searches while the maintainer rebuilds ------------------------------------------------------- */

typedef struct {
    index_maintainer *m;
    atomic_bool done;
    qr_status st;
    double seconds;
    char err[QR_ERR_LEN];
} rebuild_job;

static void *rebuild_thread(void *arg)
{
    rebuild_job *j = arg;
    uint64_t t0 = qr_now_ns();
    j->st = index_maintainer_rebuild(j->m, NULL, j->err);
    j->seconds = (qr_now_ns() - t0) / 1e9;
    atomic_store(&j->done, true);
    return NULL;
}

/* One search as the 10% caller; its latency in ms, or -1 on error (printed). */
static double timed_search(retrieval *r, index_maintainer *m, const char *query, const float *vec, int dim,
                           retrieval_mode mode)
{
    char err[QR_ERR_LEN];
    const char *principals[] = {"group:p10"};
    retrieval_caller caller = {principals, 1, false};
    retrieval_request q = {.query = query, .vector = vec, .dim = dim, .mode = mode, .k = K};
    retrieval_result *res = NULL;
    uint64_t q0 = qr_now_ns();
    /* what the server does on each request: take whatever the maintainer has published */
    retrieval_set_vindex(r, index_maintainer_vindex(m));
    retrieval_set_bm25(r, index_maintainer_bm25(m));
    if (retrieval_search(r, &caller, &q, &res, err)) {
        fprintf(stderr, "bench_search: %s\n", err);
        return -1;
    }
    retrieval_result_free(res);
    return (qr_now_ns() - q0) / 1e6;
}

/* Searches served while the index maintainer rebuilds both indexes (a forced rebuild, as
 * POST /v1/index/rebuild asks), beside the same searches with the maintainer idle, in one run. */
static int during_rebuild(const char *dir, size_t nchunks, size_t nqueries, const qr_config *cfg,
                          ingest_embedder *e)
{
    char err[QR_ERR_LEN];
    store *s = NULL;
    retrieval *r = NULL;
    index_maintainer *m = NULL;
    int rc = 1;
    int dim = ingest_embedder_dim(e);
    char(*queries)[256] = malloc(nqueries * sizeof(*queries));
    float *qvec = malloc(nqueries * (size_t)dim * sizeof(float));
    size_t cap = 1 << 20, nlat = 0;
    double *idle = malloc(nqueries * sizeof(double)), *busy = malloc(cap * sizeof(double));
    for (size_t i = 0; i < nqueries; i++) {
        text_of(queries[i], sizeof(queries[i]), 2 + bench_rnd() % 5);
        const char *t = queries[i];
        ingest_embed(e, &t, NULL, 1, qvec + i * (size_t)dim, err);
    }
    /* the maintainer as quarry serve runs it: index.* from the configuration (QUARRY_INDEX_* too) */
    index_maintainer_opts mo = {.data_dir = dir,
                                .bm25 = true,
                                .refresh_ms = 1000,
                                .nice = (int)qr_config_settings(cfg)->index_maintainer_nice};
    vindex_opts_from_config(cfg, &mo.vopts);
    bm25_opts_from_config(cfg, &mo.bopts);
    retrieval_opts o;
    retrieval_opts_from_config(cfg, &o);
    int64_t counter = 0;
    if (generate(dir, nchunks, e, err) || store_open(dir, &s, err) ||
        store_change_counter(s, &counter, err) || index_maintainer_start(&mo, &m, err) ||
        index_maintainer_wait(m, counter, 3600000, err) || retrieval_open(s, NULL, &o, &r, err)) {
        fprintf(stderr, "bench_search: %s\n", err);
        goto out;
    }
    printf("\n| mode (10%% caller) | idle p50 ms | idle p99 ms | during rebuild p50 ms | p99 ms | max ms | "
           "searches during | p99 ratio | rebuild s |\n|---|---|---|---|---|---|---|---|---|\n");
    static const retrieval_mode modes[] = {RETRIEVAL_BM25, RETRIEVAL_VECTOR, RETRIEVAL_HYBRID};
    for (size_t mi = 0; mi < 3; mi++) {
        for (size_t i = 0; i < nqueries; i++)
            if ((idle[i] = timed_search(r, m, queries[i], qvec + i * (size_t)dim, dim, modes[mi])) < 0)
                goto out;
        rebuild_job job = {.m = m};
        atomic_init(&job.done, false);
        pthread_t t;
        if (pthread_create(&t, NULL, rebuild_thread, &job) != 0)
            goto out;
        nlat = 0;
        for (size_t i = 0; !atomic_load(&job.done) && nlat < cap; i = (i + 1) % nqueries) {
            double ms = timed_search(r, m, queries[i], qvec + i * (size_t)dim, dim, modes[mi]);
            if (ms < 0)
                break;
            busy[nlat++] = ms;
        }
        pthread_join(t, NULL);
        if (job.st) {
            fprintf(stderr, "bench_search: rebuild: %s\n", job.err);
            goto out;
        }
        qsort(idle, nqueries, sizeof(double), cmp_double);
        qsort(busy, nlat, sizeof(double), cmp_double);
        double p99i = pct(idle, nqueries, 99), p99b = nlat ? pct(busy, nlat, 99) : 0;
        printf("| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %zu | %.2f | %.1f |\n",
               retrieval_mode_name(modes[mi]), pct(idle, nqueries, 50), p99i, nlat ? pct(busy, nlat, 50) : 0,
               p99b, nlat ? busy[nlat - 1] : 0, nlat, p99i > 0 ? p99b / p99i : 0, job.seconds);
        fflush(stdout);
    }
    rc = 0;
out:
    retrieval_close(r);
    index_maintainer_stop(m);
    store_close(s);
    free(queries);
    free(qvec);
    free(idle);
    free(busy);
    return rc;
}

/* ---- quality on the shared collections ----------------------------------------------------------- */

/* Ingests a collection as `quarry ingest --acl public --jsonl` does and evaluates every mode. */
static int quality(const char *work, const char *datasets, const char *name, qr_config *cfg,
                   ingest_embedder *e)
{
    char err[QR_ERR_LEN], dir[1024], src[1024];
    snprintf(dir, sizeof(dir), "%s/%s", work, name);
    snprintf(src, sizeof(src), "%s/%s", datasets, name);
    if (qr_config_set(cfg, "data.dir", dir, QR_CFG_SRC_CLI, err))
        return 1;
    ingest_session *is = NULL;
    if (ingest_session_open(cfg, &is, err)) {
        fprintf(stderr, "bench_search: %s\n", err);
        return 1;
    }
    char path[1100], *line = malloc(1 << 20);
    snprintf(path, sizeof(path), "%s/corpus.jsonl", src);
    FILE *f = fopen(path, "r");
    const char *acl[] = {"public"};
    size_t docs = 0;
    ingest_session_batch_begin(is, err);
    while (f && fgets(line, 1 << 20, f)) {
        json_t *o = json_loads(line, 0, NULL);
        const char *id = json_string_value(json_object_get(o, "_id")),
                   *t = json_string_value(json_object_get(o, "text"));
        if (id && t) {
            ingest_source s = {.doc_id = id,
                               .title = json_string_value(json_object_get(o, "title")),
                               .declared_type = "text/plain",
                               .acl = acl,
                               .nacl = 1,
                               .bytes = t,
                               .len = strlen(t)};
            store_put_result res;
            size_t nch;
            if (!ingest_put(is, &s, &res, &nch, err))
                docs++;
            if (docs % 50 == 0) {
                ingest_session_batch_commit(is, err);
                ingest_session_batch_begin(is, err);
            }
        }
        json_decref(o);
    }
    ingest_session_batch_commit(is, err);
    if (f)
        fclose(f);
    free(line);
    store *s = ingest_session_store(is);
    vindex *v = NULL;
    vindex_opts vo;
    vindex_opts_from_config(cfg, &vo);
    if (index_sync_open(s, dir, &vo, false, &v, NULL, err)) {
        fprintf(stderr, "bench_search: %s\n", err);
        ingest_session_close(is);
        return 1;
    }
    bench_query *qs = NULL;
    size_t nq = bench_load_queries(src, &qs);
    int dim = ingest_embedder_dim(e);
    float *vec = malloc((size_t)dim * sizeof(float));
    struct {
        const char *label;
        retrieval_mode mode;
        retrieval_fusion fusion;
        double w;
    } runs[] = {
        {"bm25", RETRIEVAL_BM25, RETRIEVAL_FUSION_WEIGHTED, 0},
        {"vector", RETRIEVAL_VECTOR, RETRIEVAL_FUSION_WEIGHTED, 0},
        {"hybrid, weighted, w 0.2 (default)", RETRIEVAL_HYBRID, RETRIEVAL_FUSION_WEIGHTED, 0.2},
        {"hybrid, weighted, w 0.1", RETRIEVAL_HYBRID, RETRIEVAL_FUSION_WEIGHTED, 0.1},
        {"hybrid, weighted, w 0.3", RETRIEVAL_HYBRID, RETRIEVAL_FUSION_WEIGHTED, 0.3},
        {"hybrid, weighted, w 0.5", RETRIEVAL_HYBRID, RETRIEVAL_FUSION_WEIGHTED, 0.5},
        {"hybrid, weighted, w 1", RETRIEVAL_HYBRID, RETRIEVAL_FUSION_WEIGHTED, 1},
        {"hybrid, RRF, w 0.1", RETRIEVAL_HYBRID, RETRIEVAL_FUSION_RRF, 0.1},
        {"hybrid, RRF, w 0.2", RETRIEVAL_HYBRID, RETRIEVAL_FUSION_RRF, 0.2},
        {"hybrid, RRF, w 0.5", RETRIEVAL_HYBRID, RETRIEVAL_FUSION_RRF, 0.5},
        {"hybrid, RRF, w 1", RETRIEVAL_HYBRID, RETRIEVAL_FUSION_RRF, 1},
    };
    for (size_t ri = 0; ri < sizeof(runs) / sizeof(runs[0]); ri++) {
        retrieval_opts o;
        retrieval_opts_from_config(cfg, &o);
        o.fusion = runs[ri].fusion;
        o.vector_weight = runs[ri].w;
        retrieval *r = NULL;
        if (retrieval_open(s, v, &o, &r, err)) {
            fprintf(stderr, "bench_search: %s\n", err);
            break;
        }
        retrieval_metrics sum = {0};
        size_t n = 0;
        retrieval_caller admin = {.is_admin = true};
        for (size_t i = 0; i < nq; i++) {
            bool rel = false;
            for (size_t j = 0; j < qs[i].nj; j++)
                rel |= qs[i].j[j].grade > 0;
            if (!rel)
                continue;
            const char *t = qs[i].text;
            ingest_embed(e, &t, NULL, 1, vec, err);
            retrieval_request q = {.query = t,
                                   .plain = true,
                                   .vector = vec,
                                   .dim = dim,
                                   .mode = runs[ri].mode,
                                   .k = 100,
                                   .max_per_doc = 1};
            retrieval_result *res = NULL;
            if (retrieval_search(r, &admin, &q, &res, err)) {
                fprintf(stderr, "bench_search: %s\n", err);
                continue;
            }
            const char *ranked[100];
            for (size_t h = 0; h < res->nhits; h++)
                ranked[h] = res->hits[h].doc_id;
            retrieval_metrics m;
            retrieval_eval_ranking(ranked, res->nhits, qs[i].j, qs[i].nj, &m, err);
            sum.ndcg10 += m.ndcg10, sum.recall100 += m.recall100, sum.map100 += m.map100,
                sum.mrr10 += m.mrr10;
            n++;
            retrieval_result_free(res);
        }
        retrieval_close(r);
        printf("| %s | %s | %.4f | %.4f | %.4f | %.4f | %zu |\n", name, runs[ri].label, sum.ndcg10 / n,
               sum.recall100 / n, sum.map100 / n, sum.mrr10 / n, n);
        fflush(stdout);
    }
    free(vec);
    bench_free_queries(qs, nq);
    vindex_close(v);
    ingest_session_close(is);
    return 0;
}

int main(int argc, char **argv)
{
    size_t nchunks = 100000, nqueries = 200;
    const char *datasets = "../shared/datasets", *work = NULL, *modes = NULL;
    bool do_scale = true, do_eval = true, do_rebuild = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--chunks") == 0 && i + 1 < argc)
            nchunks = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--queries") == 0 && i + 1 < argc)
            nqueries = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--datasets") == 0 && i + 1 < argc)
            datasets = argv[++i];
        else if (strcmp(argv[i], "--modes") == 0 && i + 1 < argc)
            modes = argv[++i];
        else if (strcmp(argv[i], "--no-scale") == 0)
            do_scale = false;
        else if (strcmp(argv[i], "--no-eval") == 0)
            do_eval = false;
        else if (strcmp(argv[i], "--rebuild") == 0)
            do_rebuild = true;
        else if (argv[i][0] != '-')
            work = argv[i];
        else
            work = NULL, i = argc;
    }
    if (!work || nchunks < CHUNKS_PER || !nqueries) {
        fprintf(stderr, "usage: bench_search [--chunks N] [--queries Q] [--datasets DIR] [--no-scale] "
                        "[--no-eval] [--rebuild] [--modes bm25,vector,hybrid] WORKDIR\n");
        return 2;
    }
    char err[QR_ERR_LEN];
    qr_log_configure(QR_LOG_WARN, QR_LOG_TEXT, "", err);
    qr_config *cfg = qr_config_new();
    ingest_embedder *e = NULL;
    if (!cfg || qr_config_load_env(cfg, NULL, err) || ingest_embedder_open(cfg, &e, err)) {
        fprintf(stderr, "bench_search: %s\n", err);
        return 1;
    }
    mkdir(work, 0700);
    int rc = 0;
    if (do_scale) {
        char dir[1024];
        snprintf(dir, sizeof(dir), "%s/generated-%zu", work, nchunks);
        printf("## latency and recall: %zu generated chunks, %zu queries, k = %d, one thread\n\n", nchunks,
               nqueries, K);
        rc |= scale(dir, nchunks, nqueries, cfg, e, modes);
    }
    if (do_rebuild && !rc) {
        char dir[1024];
        snprintf(dir, sizeof(dir), "%s/generated-%zu", work, nchunks);
        printf("\n## searches while the index maintainer rebuilds both indexes (%zu chunks, one search "
               "thread)\n",
               nchunks);
        rc |= during_rebuild(dir, nchunks, nqueries, cfg, e);
    }
    if (do_eval) {
        printf("\n## quality (as quarry eval: queries as plain text, documents at their best chunk)\n\n");
        printf("| collection | mode | nDCG@10 | recall@100 | MAP@100 | MRR@10 | queries "
               "|\n|---|---|---|---|---|---|---|\n");
        static const char *names[] = {"cranfield", "cisi"};
        for (int c = 0; c < 2; c++) {
            char path[1024];
            snprintf(path, sizeof(path), "%s/%s/corpus.jsonl", datasets, names[c]);
            if (access(path, R_OK) != 0) {
                printf("(%s not found: skipped)\n", path);
                continue;
            }
            rc |= quality(work, datasets, names[c], cfg, e);
        }
    }
    ingest_embedder_free(e);
    qr_config_free(cfg);
    return rc;
}
