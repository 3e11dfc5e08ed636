/*
 * Benchmark of BM25 top-k over the full-text index (index/store.c, store_search_bm25): the
 * baseline that a pruned top-k path ([bm25-topk], issue 9) is measured against. It generates
 * abstract-sized chunks (one chunk per document, about 200 words) from a Zipfian vocabulary,
 * writes them into a fresh store, then times queries of 2, 5 and 10 terms built the way
 * retrieval builds them (an OR of quoted terms, weights title 2, headings 1, body 1), as an
 * administrator and as callers who may read 100%, 10% and 1% of the documents. Prints a Markdown
 * table of p50/p95/p99 latency and throughput on one thread; never fails by timing. Beside each
 * FTS5 row it times the pruned top-k prototype (index/bm25topk.c, MaxScore over postings read
 * into memory) on the same queries and counts the queries whose top k is identical (chunks, order,
 * scores to 1e-9). The prototype's time includes turning the permitted chunk list into a bitmap;
 * making the list (store_filter_chunks, once per caller) is outside both timings.
 *
 * Usage: bench_bm25 [--chunks N] [--queries Q] [--words W] [--vocab V] [--k K] [--no-pruned] DIR
 * A fresh store is created in a new directory inside DIR (left there: remove it afterwards).
 * Every document's ACL is one of 100 groups (group:g<doc mod 100>), so a caller holding 100, 10
 * or 1 of them may read 100%, 10% or 1% of the chunks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/index.h"

#define GROUPS 100

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double uniform(void)
{
    return (double)(rnd() >> 11) / 9007199254740992.0;
}

/* Word number id as four syllables that the Porter stemmer leaves alone (no final e, s, y or
 * suffix it strips), so that distinct ids stay distinct terms in the index. */
static size_t word(char *out, uint32_t id)
{
    static const char *const syl[] = {"ka", "ro", "mi", "tu", "po", "zu", "li", "na",
                                      "bo", "di", "fu", "go", "hi", "ju", "la", "mo"};
    size_t n = 0;
    for (int i = 0; i < 4; i++, id >>= 4) {
        memcpy(out + n, syl[id & 15], 2);
        n += 2;
    }
    return n;
}

/* Zipf (s = 1) over ranks 0..V-1: a cumulative table searched by bisection. */
static double *zipf_cdf;
static uint32_t vocab = 50000;

static void zipf_init(void)
{
    zipf_cdf = malloc(vocab * sizeof(double));
    if (!zipf_cdf)
        exit(1);
    double sum = 0;
    for (uint32_t r = 0; r < vocab; r++)
        zipf_cdf[r] = (sum += 1.0 / (r + 1));
    for (uint32_t r = 0; r < vocab; r++)
        zipf_cdf[r] /= sum;
}

static uint32_t zipf(void)
{
    double u = uniform();
    uint32_t lo = 0, hi = vocab - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (zipf_cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Ranks are mapped to word ids by a fixed permutation so that frequent words are not also the
 * lexicographically first ones. */
static uint32_t word_of_rank(uint32_t rank)
{
    return (uint32_t)(((uint64_t)rank * 40503u + 12345u) % 65536u);
}

static size_t words(char *out, int n)
{
    size_t len = 0;
    for (int w = 0; w < n; w++) {
        if (w)
            out[len++] = ' ';
        len += word(out + len, word_of_rank(zipf()));
    }
    out[len] = '\0';
    return len;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct(const double *sorted, int n, double p)
{
    int i = (int)ceil(p / 100.0 * n) - 1;
    return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* A query of nterms distinct terms: Zipf-distributed, but the 100 most frequent words (the
 * corpus' stopwords) are skipped, as retrieval.stopwords would drop them. Written as retrieval
 * writes it: "t1" OR "t2" ... */
static void make_query(char *out, int nterms, char forms[][32])
{
    uint32_t picked[16];
    size_t len = 0;
    for (int t = 0; t < nterms; t++) {
        uint32_t r;
        bool dup;
        do {
            r = zipf();
            dup = r < 100;
            for (int j = 0; j < t && !dup; j++)
                dup = picked[j] == r;
        } while (dup);
        picked[t] = r;
        if (t)
            len += (size_t)sprintf(out + len, " OR ");
        out[len++] = '"';
        size_t wl = word(out + len, word_of_rank(r));
        memcpy(forms[t], out + len, wl); /* the stemmer leaves these words alone (see word()) */
        forms[t][wl] = '\0';
        len += wl;
        out[len++] = '"';
    }
    out[len] = '\0';
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: bench_bm25 [--chunks N] [--queries Q] [--words W] [--vocab V] [--k K] [--no-pruned] DIR\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int nchunks = 100000, nqueries = 200, nwords = 200, k = 10;
    bool pruned = true;
    const char *base = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--chunks") == 0 && i + 1 < argc)
            nchunks = atoi(argv[++i]);
        else if (strcmp(argv[i], "--queries") == 0 && i + 1 < argc)
            nqueries = atoi(argv[++i]);
        else if (strcmp(argv[i], "--words") == 0 && i + 1 < argc)
            nwords = atoi(argv[++i]);
        else if (strcmp(argv[i], "--vocab") == 0 && i + 1 < argc)
            vocab = (uint32_t)atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-pruned") == 0)
            pruned = false;
        else if (strcmp(argv[i], "--k") == 0 && i + 1 < argc)
            k = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !base)
            base = argv[i];
        else
            usage();
    }
    if (!base || nchunks <= 0 || nqueries <= 0 || nwords <= 0 || k <= 0 || vocab < 200 || vocab > 65536)
        usage();
    zipf_init();

    char dir[4096], err[QR_ERR_LEN] = "";
    snprintf(dir, sizeof(dir), "%s/bench-bm25-%d", base, (int)getpid());
    store *s = NULL;
    if (store_open(dir, &s, err) || store_check_embedding(s, "bench-none", 1, err)) {
        fprintf(stderr, "bench_bm25: %s\n", err);
        return 1;
    }
    char *text = malloc((size_t)nwords * 9 + 1), title[128], id[32], hash[65], group[32];
    store_hit *hits = malloc((size_t)k * sizeof(*hits));
    double *lat = malloc((size_t)nqueries * sizeof(double));
    if (!text || !hits || !lat)
        return 1;
    const float one = 1.0f;
    double text_bytes = 0;

    uint64_t t0 = qr_now_ns();
    for (int d = 0; d < nchunks; d++) {
        if (d % 200 == 0 && store_batch_begin(s, err))
            goto fail;
        size_t len = words(text, nwords);
        words(title, 8);
        text_bytes += (double)len;
        snprintf(id, sizeof(id), "bench/abs-%07d", d);
        snprintf(hash, sizeof(hash), "%064x", (unsigned)d);
        snprintf(group, sizeof(group), "group:g%d", d % GROUPS);
        const char *acl[] = {group};
        store_document doc = {.doc_id = id,
                              .title = title,
                              .uri = "file:///bench",
                              .content_type = "text/plain",
                              .acl = acl,
                              .nacl = 1,
                              .content_hash = hash,
                              .text = text,
                              .text_len = len};
        store_chunk chunk = {.start = 0, .end = len, .headings = NULL};
        store_put_result result;
        if (store_put(s, &doc, &chunk, 1, &one, 1, &result, err))
            goto fail;
        if ((d % 200 == 199 || d == nchunks - 1) && store_batch_commit(s, err))
            goto fail;
    }
    double load_s = (double)(qr_now_ns() - t0) / 1e9;

    char *principals[GROUPS];
    for (int g = 0; g < GROUPS; g++) {
        principals[g] = malloc(16);
        if (!principals[g])
            return 1;
        snprintf(principals[g], 16, "group:g%d", g);
    }
    static const struct {
        const char *name;
        int groups; /* 0: administrator */
    } callers[] = {{"administrator", 0}, {"100%", 100}, {"10%", 10}, {"1%", 1}};
    static const int lengths[] = {2, 5, 10};
    const double weights[3] = {2, 1, 1};

    printf("BM25 top-%d through store_search_bm25 (FTS5 bm25(), ORDER BY score, id): %d chunks of %d words "
           "(%.0f bytes of text on average), 8-word titles, Zipf s=1 vocabulary of %u words, %d queries per "
           "row, one thread; %.1f s to write the store\n\n",
           k, nchunks, nwords, text_bytes / nchunks, vocab, nqueries, load_s);
    /* the pruned prototype (index/bm25topk.c) over the same store, unless --no-pruned */
    store_bm25_index *bx = NULL;
    double build_s = 0;
    if (pruned) {
        uint64_t b0 = qr_now_ns();
        if (store_bm25_build(s, &bx, err))
            goto fail;
        build_s = (double)(qr_now_ns() - b0) / 1e9;
        printf("pruned prototype: %.1f s to read the postings into memory (%zu rows)\n\n", build_s,
               store_bm25_rows(bx));
    }
    int64_t *permitted = malloc((size_t)nchunks * sizeof(int64_t));
    store_hit *phits = malloc((size_t)k * sizeof(*phits));
    double *plat = malloc((size_t)nqueries * sizeof(double));
    if (!permitted || !phits || !plat)
        return 1;
    printf(
        "| terms | permitted | FTS5 p50 ms | p95 ms | p99 ms | queries/s | pruned p50 ms | p95 ms | p99 ms | "
        "queries/s | same top-%d |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        k);
    char query[16 * 16], forms[16][32];
    const char *terms[16];
    for (size_t li = 0; li < sizeof(lengths) / sizeof(lengths[0]); li++) {
        for (size_t ci = 0; ci < sizeof(callers) / sizeof(callers[0]); ci++) {
            store_filter f = {.principals = (const char *const *)principals,
                              .nprincipals = (size_t)callers[ci].groups,
                              .all_documents = callers[ci].groups == 0};
            size_t npermitted = 0;
            bool more = false;
            /* listed once per caller, outside the timings: the prototype takes the list */
            if (pruned && callers[ci].groups) {
                if (store_filter_chunks(s, &f, (size_t)nchunks, permitted, &npermitted, &more, err))
                    goto fail;
                qsort(permitted, npermitted, sizeof(int64_t), cmp_int64);
            }
            /* the same queries for every caller of one length */
            rng = 0x2545f4914f6cdd1dULL + (uint64_t)lengths[li];
            size_t n = 0, pn = 0;
            double total = 0, ptotal = 0;
            int same = 0;
            for (int w = 0; w < 3; w++) { /* warm the page cache and the statement */
                make_query(query, lengths[li], forms);
                if (store_search_bm25(s, query, weights, &f, 0, (size_t)k, hits, &n, err))
                    goto fail;
            }
            rng = 0x2545f4914f6cdd1dULL + (uint64_t)lengths[li];
            for (int q = 0; q < nqueries; q++) {
                make_query(query, lengths[li], forms);
                uint64_t q0 = qr_now_ns();
                if (store_search_bm25(s, query, weights, &f, 0, (size_t)k, hits, &n, err))
                    goto fail;
                lat[q] = (double)(qr_now_ns() - q0) / 1e6;
                total += lat[q];
                if (!pruned)
                    continue;
                for (int t = 0; t < lengths[li]; t++)
                    terms[t] = forms[t];
                q0 = qr_now_ns();
                if (store_bm25_search(bx, terms, (size_t)lengths[li], weights, permitted, npermitted,
                                      callers[ci].groups == 0, (size_t)k, phits, &pn, err))
                    goto fail;
                plat[q] = (double)(qr_now_ns() - q0) / 1e6;
                ptotal += plat[q];
                bool eq = pn == n;
                for (size_t i = 0; eq && i < n; i++)
                    eq = hits[i].chunk_id == phits[i].chunk_id &&
                         fabs(hits[i].score - phits[i].score) <= 1e-9 * fabs(hits[i].score);
                same += eq;
            }
            qsort(lat, (size_t)nqueries, sizeof(double), cmp_double);
            printf("| %d | %s | %.1f | %.1f | %.1f | %.1f |", lengths[li], callers[ci].name,
                   pct(lat, nqueries, 50), pct(lat, nqueries, 95), pct(lat, nqueries, 99),
                   1000.0 * nqueries / total);
            if (pruned) {
                qsort(plat, (size_t)nqueries, sizeof(double), cmp_double);
                printf(" %.2f | %.2f | %.2f | %.0f | %d/%d |\n", pct(plat, nqueries, 50),
                       pct(plat, nqueries, 95), pct(plat, nqueries, 99), 1000.0 * nqueries / ptotal, same,
                       nqueries);
            } else {
                printf(" | | | | |\n");
            }
            fflush(stdout);
        }
    }
    store_bm25_free(bx);
    store_close(s);
    return 0;
fail:
    fprintf(stderr, "bench_bm25: %s\n", err);
    store_close(s);
    return 1;
}
