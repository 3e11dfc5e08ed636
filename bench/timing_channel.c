/*
 * The timing channel of issue #16 item 3, reproduced: does the time of ava's search show whether
 * documents she may not read match her query?
 *
 * Each scenario is a store of R chunks ava may read (group:staff; documents of 10 chunks of 80
 * pseudo-words drawn from a 30,000-word vocabulary with a Zipf-like skew, as bench/search.c
 * makes them) and H chunks that only ben may read (user:ben), each holding the secret word
 * "kryptonite" among pseudo-words (documents of 10 chunks; fewer than 10 hidden chunks make one
 * document). Embedded by the local embedder (384 dimensions), indexed by the vector index the
 * defaults choose (exact flat up to 50,000 vectors, IVF-SQ8 above) and the pruned BM25 index.
 *
 * ava (user:ava, group:staff, public) searches for the secret word, for a word no chunk holds,
 * and for a common word of her own documents, k = 10, in each mode and on each path: BM25 from
 * the pruned index and from FTS5, vectors by the default choice (whatever path the sizes pick)
 * and by the exact scan of her permitted chunks forced, and hybrid. Each case runs the three
 * queries round-robin for --runs rounds (after one warm-up round) and prints the median of each,
 * so load from other processes hits all three alike. When ava's secret search costs the same as
 * her search for a word nobody has, the channel is closed for that case.
 *
 * Usage: bench_timing_channel [--readable R] [--hidden H[,H...]] [--runs N] WORKDIR
 * (defaults: R = 50000, H = 1,50000, N = 21; WORKDIR/tc-R-H is created and reused.)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
#define SECRET     "kryptonite"
#define NOWHERE    "zyzzogeton" /* no pseudo-word has a 'y' */

extern void omp_set_num_threads(int n);
extern void openblas_set_num_threads(int n);

/* nwords pseudo-words, the secret word at a random place when secret is set. */
static void text_of(char *buf, size_t cap, size_t nwords, bool secret)
{
    size_t n = 0, at = secret ? bench_rnd() % nwords : SIZE_MAX;
    char w[32];
    for (size_t i = 0; i < nwords && n + 40 < cap; i++) {
        if (i == at)
            snprintf(w, sizeof(w), "%s", SECRET);
        else
            bench_word(bench_zipf_word(VOCAB), w);
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? " " : "", w);
    }
    snprintf(buf + n, cap - n, ".");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- the scenario's store ------------------------------------------------------------------ */

/* Writes ndocs documents of per chunks each (secret ones readable by ben only). */
static qr_status put_docs(store *s, ingest_embedder *e, size_t first, size_t ndocs, size_t per, bool secret,
                          char *err)
{
    int dim = ingest_embedder_dim(e);
    char *text = malloc(CHUNKS_PER * WORDS_PER * 16);
    float *vecs = malloc((size_t)CHUNKS_PER * (size_t)dim * sizeof(float));
    qr_status st = text && vecs ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory");
    for (size_t d = 0; d < ndocs && !st; d++) {
        if (d % BATCH_DOCS == 0 && (st = store_batch_begin(s, err)))
            break;
        store_chunk chunks[CHUNKS_PER];
        const char *texts[CHUNKS_PER];
        size_t lens[CHUNKS_PER], len = 0;
        for (size_t c = 0; c < per; c++) {
            size_t start = len;
            text_of(text + len, WORDS_PER * 16, WORDS_PER, secret);
            len += strlen(text + len);
            chunks[c] = (store_chunk){start, len, ""};
            texts[c] = text + start;
            lens[c] = len - start;
            text[len++] = ' ';
        }
        if ((st = ingest_embed(e, texts, lens, per, vecs, err)))
            break;
        const char *acl_staff[] = {"group:staff"}, *acl_ben[] = {"user:ben"};
        char id[32], title[64], hash[65];
        snprintf(id, sizeof(id), "%s%zu", secret ? "ben" : "doc", first + d);
        text_of(title, sizeof(title), 3, false);
        snprintf(hash, sizeof(hash), "%s%063zx", secret ? "b" : "d", first + d);
        store_document doc = {.doc_id = id,
                              .title = title,
                              .content_type = "text/plain",
                              .acl = secret ? acl_ben : acl_staff,
                              .nacl = 1,
                              .content_hash = hash,
                              .text = text,
                              .text_len = len - 1};
        store_put_result res;
        if ((st = store_put(s, &doc, chunks, per, vecs, dim, &res, err)))
            break;
        if ((d % BATCH_DOCS == BATCH_DOCS - 1 || d + 1 == ndocs) && (st = store_batch_commit(s, err)))
            break;
    }
    free(text);
    free(vecs);
    return st;
}

static int generate(const char *dir, size_t readable, size_t hidden, ingest_embedder *e, char *err)
{
    store *s = NULL;
    store_stats ss;
    if (store_open(dir, &s, err) || store_get_stats(s, &ss, err))
        goto fail;
    if ((size_t)ss.chunks == readable + hidden) {
        printf("reusing the %zu chunks in %s\n", readable + hidden, dir);
        store_close(s);
        return 0;
    }
    if (ss.chunks) {
        snprintf(err, QR_ERR_LEN, "%.300s holds %lld chunks, not %zu: use another directory", dir,
                 (long long)ss.chunks, readable + hidden);
        goto fail;
    }
    if (store_check_embedding(s, ingest_embedder_model(e), ingest_embedder_dim(e), err))
        goto fail;
    uint64_t t0 = qr_now_ns();
    bench_rng_state = 0x5eedbeefull; /* every scenario has the same readable documents */
    if (put_docs(s, e, 0, readable / CHUNKS_PER, CHUNKS_PER, false, err))
        goto fail;
    if (hidden >= CHUNKS_PER && put_docs(s, e, 0, hidden / CHUNKS_PER, CHUNKS_PER, true, err))
        goto fail;
    if (hidden % CHUNKS_PER && put_docs(s, e, hidden / CHUNKS_PER, 1, hidden % CHUNKS_PER, true, err))
        goto fail;
    printf("generated %zu chunks (%zu hidden) in %.1f s\n", readable + hidden, hidden,
           (qr_now_ns() - t0) / 1e9);
    store_close(s);
    return 0;
fail:
    store_close(s);
    return 1;
}

/* ---- the measurement ----------------------------------------------------------------------- */

typedef struct {
    const char *mode_name, *path;
    retrieval_mode mode;
    bool pruned;      /* BM25 from the pruned index (else FTS5) */
    bool force_exact; /* vectors: exact scan of every permitted chunk */
} bench_case;

static int scenario(const char *work, size_t readable, size_t hidden, size_t runs, const qr_config *cfg,
                    ingest_embedder *e)
{
    char err[QR_ERR_LEN], dir[1024];
    snprintf(dir, sizeof(dir), "%s/tc-%zu-%zu", work, readable, hidden);
    mkdir(dir, 0700);
    store *s = NULL;
    vindex *v = NULL;
    bm25_index *b = NULL;
    retrieval *r = NULL;
    int rc = 1;
    double *lat = malloc(3 * runs * sizeof(double));
    if (!lat || generate(dir, readable, hidden, e, err) || store_open(dir, &s, err)) {
        fprintf(stderr, "bench_timing_channel: %s\n", lat ? err : "out of memory");
        goto out;
    }
    vindex_opts vo;
    vindex_opts_from_config(cfg, &vo);
    bm25_opts bo;
    bm25_opts_from_config(cfg, &bo);
    index_sync_report rep;
    if (index_sync_open(s, dir, &vo, false, &v, &rep, err) || bm25_open(s, dir, &bo, false, &b, NULL, err)) {
        fprintf(stderr, "bench_timing_channel: %s\n", err);
        goto out;
    }
    printf("\n### %zu readable chunks, %zu hidden (vector index: %s, %zu vectors)\n\n", readable, hidden,
           rep.type, rep.count);
    printf("| mode | path | secret ms | nowhere ms | common ms | secret - nowhere ms | hits secret / nowhere "
           "/ common | vector path (secret / nowhere) |\n|---|---|---|---|---|---|---|---|\n");
    int dim = ingest_embedder_dim(e);
    char common[32];
    bench_word(0, common);
    const char *queries[3] = {SECRET, NOWHERE, common};
    float *qvec = malloc(3 * (size_t)dim * sizeof(float));
    if (!qvec)
        goto out;
    for (int i = 0; i < 3; i++)
        if (ingest_embed(e, &queries[i], NULL, 1, qvec + i * dim, err)) {
            fprintf(stderr, "bench_timing_channel: %s\n", err);
            free(qvec);
            goto out;
        }
    static const bench_case cases[] = {
        {"bm25", "pruned", RETRIEVAL_BM25, true, false},
        {"bm25", "fts5", RETRIEVAL_BM25, false, false},
        {"vector", "default", RETRIEVAL_VECTOR, true, false},
        {"vector", "exact forced", RETRIEVAL_VECTOR, true, true},
        {"hybrid", "pruned + default", RETRIEVAL_HYBRID, true, false},
        {"hybrid", "fts5 + default", RETRIEVAL_HYBRID, false, false},
    };
    const char *ava[] = {"user:ava", "group:staff", "public"};
    retrieval_caller caller = {ava, 3, false};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        retrieval_opts o;
        retrieval_opts_from_config(cfg, &o);
        o.bm25_pruned = cases[c].pruned;
        if (cases[c].force_exact)
            o.exact_min = 1000000;
        retrieval_close(r);
        r = NULL;
        if (retrieval_open(s, v, &o, &r, err)) {
            fprintf(stderr, "bench_timing_channel: %s\n", err);
            free(qvec);
            goto out;
        }
        retrieval_set_bm25(r, cases[c].pruned ? b : NULL);
        size_t hits[3] = {0};
        char vpath[3][48] = {"", "", ""};
        for (size_t round = 0; round <= runs; round++) {
            for (size_t j = 0; j < 3; j++) {
                size_t qi = (round + j) % 3; /* rotate so that no query always runs first */
                retrieval_request q = {.query = queries[qi],
                                       .vector = qvec + qi * (size_t)dim,
                                       .dim = dim,
                                       .mode = cases[c].mode,
                                       .k = K};
                retrieval_result *res = NULL;
                uint64_t t0 = qr_now_ns();
                if (retrieval_search(r, &caller, &q, &res, err)) {
                    fprintf(stderr, "bench_timing_channel: %s\n", err);
                    free(qvec);
                    goto out;
                }
                double ms = (qr_now_ns() - t0) / 1e6;
                if (round) /* round 0 warms caches */
                    lat[qi * runs + round - 1] = ms;
                hits[qi] = res->nhits;
                if (!res->vector_exact)
                    snprintf(vpath[qi], sizeof(vpath[qi]), "index, %zu fetched", res->vector_fetched);
                else if (res->vector_fallback)
                    snprintf(vpath[qi], sizeof(vpath[qi]), "%zu fetched, then exact", res->vector_fetched);
                else
                    snprintf(vpath[qi], sizeof(vpath[qi]), "exact, %zu listed", res->permitted_listed);
                retrieval_result_free(res);
            }
        }
        double m[3];
        for (int i = 0; i < 3; i++)
            m[i] = median(lat + (size_t)i * runs, runs);
        char path[128] = "";
        if (cases[c].mode != RETRIEVAL_BM25)
            snprintf(path, sizeof(path), "%s / %s", vpath[0], vpath[1]);
        printf("| %s | %s | %.2f | %.2f | %.2f | %+.2f | %zu / %zu / %zu | %s |\n", cases[c].mode_name,
               cases[c].path, m[0], m[1], m[2], m[0] - m[1], hits[0], hits[1], hits[2], path);
        fflush(stdout);
    }
    free(qvec);
    rc = 0;
out:
    retrieval_close(r);
    bm25_close(b);
    vindex_close(v);
    store_close(s);
    free(lat);
    return rc;
}

int main(int argc, char **argv)
{
    size_t readable = 50000, runs = 21, hidden[16] = {1, 50000}, nhidden = 2;
    const char *work = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--readable") == 0 && i + 1 < argc) {
            readable = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--hidden") == 0 && i + 1 < argc) {
            nhidden = 0;
            for (char *p = argv[++i]; *p && nhidden < 16;) {
                char *end;
                hidden[nhidden++] = strtoull(p, &end, 10);
                p = *end == ',' ? end + 1 : end;
                if (end == p && *p)
                    break;
            }
        } else if (argv[i][0] != '-') {
            work = argv[i];
        } else {
            work = NULL;
            break;
        }
    }
    if (!work || readable < CHUNKS_PER || !runs || !nhidden) {
        fprintf(stderr,
                "usage: bench_timing_channel [--readable R] [--hidden H[,H...]] [--runs N] WORKDIR\n");
        return 2;
    }
    char err[QR_ERR_LEN];
    qr_log_configure(QR_LOG_WARN, QR_LOG_TEXT, "", err);
    qr_config *cfg = qr_config_new();
    ingest_embedder *e = NULL;
    if (!cfg || qr_config_load_env(cfg, NULL, err) || ingest_embedder_open(cfg, &e, err)) {
        fprintf(stderr, "bench_timing_channel: %s\n", err);
        return 1;
    }
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    mkdir(work, 0700);
    printf("## ava's searches, k = %d, one thread, medians of %zu runs\n", K, runs);
    int rc = 0;
    for (size_t i = 0; i < nhidden && !rc; i++)
        rc = scenario(work, readable, hidden[i], runs, cfg, e);
    ingest_embedder_free(e);
    qr_config_free(cfg);
    return rc;
}
