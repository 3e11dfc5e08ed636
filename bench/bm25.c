/*
 * Benchmark of BM25 top-k ([bm25-topk], issue 9): FTS5's ORDER BY rank (index/store.c,
 * store_search_bm25) beside the pruned index (index/bm25_search.c, bm25_search), on the same queries in
 * one run. It generates abstract-sized chunks (one chunk per document, about 200 words) from a
 * Zipfian vocabulary into a store, then times queries of 2, 5 and 10 terms built the way retrieval
 * builds them (an OR of quoted terms, weights title 2, headings 1, body 1), as an administrator and
 * as callers who may read 100%, 10% and 1% of the documents, and counts the queries whose top k is
 * identical on both paths (chunks, order, scores to 1e-9 relative). Prints Markdown tables of
 * p50/p95/p99 latency and throughput on one thread; never fails by timing (it exits 1 when the two
 * paths disagree, after printing the first query that differs).
 *
 * Besides the searches it reports what the index costs: the time bm25_open takes to build a
 * generation on a store without one and to load an existing one, the process RSS each open adds
 * (/proc/self/status) and bm25_get_info's memory_bytes, the size of <dir>/bm25/current.bm25 against
 * FTS5's own (the pages of the chunks_fts_* shadow tables, from SQLite's dbstat over a second,
 * read-only connection), each caller's first search (which reads the principals' document sets
 * from the store), and a catch-up (bm25_sync) after adding some documents and after deleting them
 * again, with the top k checked against FTS5 while the index carries that delta.
 *
 * Usage: bench_bm25 [--chunks N] [--queries Q] [--fts-queries F] [--words W] [--vocab V] [--k K]
 *                   [--add A] [--no-pruned] [--cpu] [--keep-index] [--dump FILE] (DIR | --reuse STORE)
 * Without --reuse a fresh store is created in a new directory inside DIR (left there: remove it
 * afterwards). With --reuse the store in STORE is used as it is when it holds chunks (--chunks,
 * --words and --vocab then only describe how it was made), or generated there first when it is
 * empty or missing: generate a large store once, then rerun against it. The index is built in
 * STORE/bm25 (its files there are removed first); the A documents added for the catch-up are
 * deleted again before the end, so the store keeps its documents. The pruned path runs Q queries
 * per row; FTS5 runs the first F of them (default Q; 0: none), and only those are compared.
 * Every document's ACL is one of 100 groups (group:g<doc mod 100>), so a caller holding 100, 10
 * or 1 of them may read 100%, 10% or 1% of the chunks.
 *
 * --cpu times each query by the thread's CPU clock (CLOCK_THREAD_CPUTIME_ID) instead of the wall
 * clock, so that A/B runs on a shared, loaded machine count only the search's own work.
 * --keep-index (with --reuse) opens STORE/bm25 as it is, building it only when there is none, so
 * that runs of two builds of the searching code can alternate on the same index; --dump writes
 * every pruned search's hits (chunk, score to 17 digits), a line per query, to FILE, so that two
 * builds' results can be compared with cmp(1) (the timings are not in it).
 */
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "index/index.h"

#define GROUPS     100
#define BATCH_DOCS 200
#define MAX_TERMS  16
#define WARMUPS    3

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static bool cpu_clock; /* --cpu */

/* The clock the queries are timed by (ns). */
static uint64_t query_clock(void)
{
    struct timespec ts;
    if (!cpu_clock)
        return qr_now_ns();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

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

static double pct(const double *sorted, int n, double p)
{
    int i = (int)ceil(p / 100.0 * n) - 1;
    return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* A query of nterms distinct terms: Zipf-distributed, but the 100 most frequent words (the
 * corpus' stopwords) are skipped, as retrieval.stopwords would drop them. Written as retrieval
 * writes it: "t1" OR "t2" ...; forms gets the words themselves, which are their indexed forms
 * (checked once by check_forms). */
static void make_query(char *out, int nterms, char forms[][32])
{
    uint32_t picked[MAX_TERMS];
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
        memcpy(forms[t], out + len, wl);
        forms[t][wl] = '\0';
        len += wl;
        out[len++] = '"';
    }
    out[len] = '\0';
}

/* ---- the corpus ----------------------------------------------------------------------------- */

/* Writes count generated documents, numbered first.., in batches; doc ids are prefix + number and
 * the ACL of document d is group:g<d mod 100>. Adds the text bytes written to *text_bytes. */
static qr_status put_docs(store *s, const char *prefix, int first, int count, int nwords, double *text_bytes,
                          char *err)
{
    char *text = malloc((size_t)nwords * 9 + 1), title[128], id[96], hash[65], group[32];
    const float one = 1.0f;
    qr_status st = QR_OK;
    if (!text)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    for (int i = 0; i < count; i++) {
        int d = first + i;
        if (i % BATCH_DOCS == 0 && (st = store_batch_begin(s, err)))
            goto out;
        size_t len = words(text, nwords);
        words(title, 8);
        *text_bytes += (double)len;
        snprintf(id, sizeof(id), "%s%07d", prefix, d);
        snprintf(hash, sizeof(hash), "%032x%032x", (unsigned)getpid(), (unsigned)d);
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
        if ((st = store_put(s, &doc, &chunk, 1, &one, 1, &result, err)))
            goto out;
        if ((i % BATCH_DOCS == BATCH_DOCS - 1 || i == count - 1) && (st = store_batch_commit(s, err)))
            goto out;
    }
out:
    if (st)
        store_batch_rollback(s);
    free(text);
    return st;
}

static qr_status delete_docs(store *s, const char *prefix, int first, int count, char *err)
{
    char id[96];
    qr_status st = QR_OK;
    for (int i = 0; i < count && !st; i++) {
        if (i % BATCH_DOCS == 0 && (st = store_batch_begin(s, err)))
            break;
        snprintf(id, sizeof(id), "%s%07d", prefix, first + i);
        st = store_delete(s, id, err);
        if (!st && (i % BATCH_DOCS == BATCH_DOCS - 1 || i == count - 1))
            st = store_batch_commit(s, err);
    }
    if (st)
        store_batch_rollback(s);
    return st;
}

/* The generator's words must be their own indexed forms, or bm25_search would be handed terms
 * FTS5 never indexed: every word of the vocabulary goes through store_tokenize once. */
typedef struct {
    const char *text;
    size_t tokens, bad;
} forms_check;

static qr_status check_token(void *ctx, const char *form, size_t form_len, size_t start, size_t end,
                             char *err)
{
    forms_check *c = ctx;
    (void)err;
    c->tokens++;
    if (form_len != end - start || memcmp(form, c->text + start, form_len) != 0) {
        if (!c->bad++)
            fprintf(stderr, "bench_bm25: '%.*s' is indexed as '%.*s'\n", (int)(end - start), c->text + start,
                    (int)form_len, form);
    }
    return QR_OK;
}

static qr_status check_forms(store *s, char *err)
{
    char *text = malloc((size_t)vocab * 9 + 1);
    if (!text)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    size_t len = 0;
    for (uint32_t r = 0; r < vocab; r++) {
        if (r)
            text[len++] = ' ';
        len += word(text + len, word_of_rank(r));
    }
    forms_check c = {.text = text};
    qr_status st = store_tokenize(s, text, len, check_token, &c, err);
    if (!st && (c.tokens != vocab || c.bad))
        st = qr_fail(err, QR_EINTERNAL, "%zu of %u words are not their own indexed form (%zu tokens)", c.bad,
                     vocab, c.tokens);
    free(text);
    return st;
}

/* ---- sizes and memory ----------------------------------------------------------------------- */

typedef struct {
    long rss, anon, file, hwm; /* kB */
} rss_kb;

static rss_kb read_rss(void)
{
    rss_kb r = {0, 0, 0, 0};
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return r;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            r.rss = atol(line + 6);
        else if (strncmp(line, "RssAnon:", 8) == 0)
            r.anon = atol(line + 8);
        else if (strncmp(line, "RssFile:", 8) == 0)
            r.file = atol(line + 8);
        else if (strncmp(line, "VmHWM:", 6) == 0)
            r.hwm = atol(line + 6);
    }
    fclose(f);
    return r;
}

static double mib(double bytes)
{
    return bytes / 1048576.0;
}

/* FTS5's own size: the pages of its shadow tables (chunks_fts_data, _idx, _docsize, _config; the
 * content is the chunks table, through a view), summed by dbstat on a read-only connection of
 * its own. Where dbstat is missing, the bytes of the index blobs (chunks_fts_data) and row sizes
 * (chunks_fts_docsize), without page overhead. *how says which. */
static double fts_bytes(const char *dir, char *detail, size_t detail_len, const char **how)
{
    char path[4200];
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    double total = -1;
    size_t used = 0;
    detail[0] = '\0';
    snprintf(path, sizeof(path), "%s/quarry.db", dir);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        goto out;
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_prepare_v2(db,
                           "SELECT name, sum(pgsize) FROM dbstat WHERE name LIKE 'chunks\\_fts%' ESCAPE '\\'"
                           " GROUP BY name ORDER BY name",
                           -1, &q, NULL) == SQLITE_OK) {
        *how = "dbstat: pages of the chunks_fts_* shadow tables";
        total = 0;
        while (sqlite3_step(q) == SQLITE_ROW) {
            double b = sqlite3_column_double(q, 1);
            total += b;
            if (used < detail_len)
                used += (size_t)snprintf(detail + used, detail_len - used, "%s%s %.1f MiB", used ? ", " : "",
                                         (const char *)sqlite3_column_text(q, 0), mib(b));
        }
    } else if (sqlite3_prepare_v2(db,
                                  "SELECT (SELECT sum(length(block)) FROM chunks_fts_data) +"
                                  " (SELECT sum(length(sz)) FROM chunks_fts_docsize)",
                                  -1, &q, NULL) == SQLITE_OK) {
        *how = "no dbstat: bytes of the chunks_fts_data blocks and chunks_fts_docsize rows, no page overhead";
        if (sqlite3_step(q) == SQLITE_ROW)
            total = sqlite3_column_double(q, 0);
    }
out:
    if (total < 0)
        snprintf(detail, detail_len, "%s", db ? sqlite3_errmsg(db) : "cannot open");
    sqlite3_finalize(q);
    sqlite3_close(db);
    return total;
}

/* Removes the regular files of <dir>/bm25 (a --reuse store's earlier index), so that bm25_open
 * builds from scratch. */
static void remove_index_files(const char *dir)
{
    char path[4200], file[4500];
    snprintf(path, sizeof(path), "%s/bm25", dir);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat st;
        snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
        if (lstat(file, &st) == 0 && S_ISREG(st.st_mode) && unlink(file) != 0)
            fprintf(stderr, "bench_bm25: cannot remove '%s': %s\n", file, strerror(errno));
    }
    closedir(d);
}

/* ---- the searches --------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int groups; /* 0: administrator */
} caller;

static const caller callers[] = {{"administrator", 0}, {"100%", 100}, {"10%", 10}, {"1%", 1}};
static const double weights[3] = {2, 1, 1};

typedef struct {
    store *s;
    bm25_index *x; /* NULL: FTS5 only */
    const char *const *principals;
    int k;
    store_hit *hits, *phits;
    double *lat, *plat;
    int mismatches;
    FILE *dump; /* --dump: every pruned search's hits */
} bench;

static store_filter filter_of(const bench *b, const caller *c)
{
    store_filter f = {
        .principals = b->principals, .nprincipals = (size_t)c->groups, .all_documents = c->groups == 0};
    return f;
}

static qr_status fts_query(bench *b, const caller *c, const char *query, size_t *n, char *err)
{
    store_filter f = filter_of(b, c);
    return store_search_bm25(b->s, query, weights, &f, 0, (size_t)b->k, b->hits, n, err);
}

static qr_status pruned_query(bench *b, const caller *c, char forms[][32], int nterms, size_t *n, char *err)
{
    const char *terms[MAX_TERMS];
    for (int t = 0; t < nterms; t++)
        terms[t] = forms[t];
    return bm25_search(b->x, b->s, terms, (size_t)nterms, weights, b->principals, (size_t)c->groups,
                       c->groups == 0, 0, (size_t)b->k, b->phits, n, NULL, err);
}

static bool same_hits(const store_hit *a, size_t na, const store_hit *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (a[i].chunk_id != b[i].chunk_id || !(fabs(a[i].score - b[i].score) <= 1e-9 * fabs(a[i].score)))
            return false;
    return true;
}

static void report_mismatch(bench *b, const caller *c, const char *query, const store_hit *fts, size_t nf,
                            const store_hit *pruned, size_t np)
{
    if (b->mismatches++)
        return;
    fprintf(stderr, "bench_bm25: first differing top-%d: caller %s, query %s\n  FTS5 (%zu):", b->k, c->name,
            query, nf);
    for (size_t i = 0; i < nf; i++)
        fprintf(stderr, " %lld:%.17g", (long long)fts[i].chunk_id, fts[i].score);
    fprintf(stderr, "\n  pruned (%zu):", np);
    for (size_t i = 0; i < np; i++)
        fprintf(stderr, " %lld:%.17g", (long long)pruned[i].chunk_id, pruned[i].score);
    fprintf(stderr, "\n");
}

static uint64_t query_seed(int nterms)
{
    return 0x2545f4914f6cdd1dULL + (uint64_t)nterms;
}

/* One table row: the same queries of nterms terms for caller c, FTS5 on the first nfts, the
 * pruned index on all nq, after WARMUPS untimed queries on each path. */
static qr_status run_row(bench *b, int nterms, const caller *c, int nq, int nfts, char *err)
{
    char query[MAX_TERMS * 16], forms[MAX_TERMS][32];
    size_t n = 0, pn = 0;
    double total = 0, ptotal = 0;
    int same = 0;
    qr_status st;
    rng = query_seed(nterms);
    for (int w = 0; w < WARMUPS; w++) {
        make_query(query, nterms, forms);
        if (nfts && (st = fts_query(b, c, query, &n, err)))
            return st;
        if (b->x && (st = pruned_query(b, c, forms, nterms, &pn, err)))
            return st;
    }
    rng = query_seed(nterms);
    for (int q = 0; q < nq; q++) {
        make_query(query, nterms, forms);
        uint64_t t0;
        if (q < nfts) {
            t0 = query_clock();
            if ((st = fts_query(b, c, query, &n, err)))
                return st;
            b->lat[q] = (double)(query_clock() - t0) / 1e6;
            total += b->lat[q];
        }
        if (!b->x)
            continue;
        t0 = query_clock();
        if ((st = pruned_query(b, c, forms, nterms, &pn, err)))
            return st;
        b->plat[q] = (double)(query_clock() - t0) / 1e6;
        ptotal += b->plat[q];
        if (b->dump) {
            fprintf(b->dump, "%d %s %d:", nterms, c->name, q);
            for (size_t i = 0; i < pn; i++)
                fprintf(b->dump, " %lld:%.17g", (long long)b->phits[i].chunk_id, b->phits[i].score);
            fprintf(b->dump, "\n");
        }
        if (q < nfts) {
            if (same_hits(b->hits, n, b->phits, pn))
                same++;
            else
                report_mismatch(b, c, query, b->hits, n, b->phits, pn);
        }
    }
    printf("| %d | %s |", nterms, c->name);
    if (nfts) {
        qsort(b->lat, (size_t)nfts, sizeof(double), cmp_double);
        printf(" %.1f | %.1f | %.1f | %.1f |", pct(b->lat, nfts, 50), pct(b->lat, nfts, 95),
               pct(b->lat, nfts, 99), 1000.0 * nfts / total);
    } else {
        printf(" | | | |");
    }
    if (b->x) {
        qsort(b->plat, (size_t)nq, sizeof(double), cmp_double);
        printf(" %.2f | %.2f | %.2f | %.0f |", pct(b->plat, nq, 50), pct(b->plat, nq, 95),
               pct(b->plat, nq, 99), 1000.0 * nq / ptotal);
        if (nfts)
            printf(" %d/%d |\n", same, nfts);
        else
            printf(" |\n");
    } else {
        printf(" | | | | |\n");
    }
    fflush(stdout);
    return QR_OK;
}

static void table_head(int k)
{
    printf(
        "| terms | permitted | FTS5 p50 ms | p95 ms | p99 ms | queries/s | pruned p50 ms | p95 ms | p99 ms | "
        "queries/s | same top-%d |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        k);
}

/* Each caller's first search, which reads the document sets of the principals not cached yet
 * from the store, then the same query again. Callers go from the fewest principals to the most,
 * so each reads only the sets the previous ones did not (the 10% caller holds the 1% caller's
 * group, the 100% caller both's). */
static qr_status first_queries(bench *b, char *err)
{
    static const int order[] = {3, 2, 1, 0};
    char query[MAX_TERMS * 16], forms[MAX_TERMS][32];
    size_t pn;
    qr_status st;
    printf("| caller | principals read | first search ms | same search again ms |\n|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        const caller *c = &callers[order[i]];
        bm25_info before, after;
        bm25_get_info(b->x, &before);
        rng = 0x5eedULL + i;
        make_query(query, 5, forms);
        uint64_t t0 = qr_now_ns();
        if ((st = pruned_query(b, c, forms, 5, &pn, err)))
            return st;
        double first = (double)(qr_now_ns() - t0) / 1e6;
        bm25_get_info(b->x, &after);
        t0 = qr_now_ns();
        if ((st = pruned_query(b, c, forms, 5, &pn, err)))
            return st;
        double again = (double)(qr_now_ns() - t0) / 1e6;
        printf("| %s | %zu | %.2f | %.2f |\n", c->name, after.principals_cached - before.principals_cached,
               first, again);
    }
    printf("\n");
    return QR_OK;
}

static void print_info(const char *when, bm25_index *x)
{
    bm25_info in;
    bm25_get_info(x, &in);
    printf(
        "%s: %zu rows, %zu terms, %llu postings, %zu delta rows, %zu tombstones, file %.1f MiB, memory_bytes "
        "%.1f MiB, %zu principals cached, counter %lld (generation %lld)\n",
        when, in.rows, in.terms, (unsigned long long)in.postings, in.delta_rows, in.tombstones,
        mib((double)in.file_bytes), mib((double)in.memory_bytes), in.principals_cached, (long long)in.counter,
        (long long)in.generation_counter);
}

static void print_rss(const char *what, rss_kb a, rss_kb b)
{
    printf("%s: RSS %+.1f MiB (anonymous %+.1f, file-backed %+.1f), now %.1f MiB\n", what,
           (double)(b.rss - a.rss) / 1024, (double)(b.anon - a.anon) / 1024, (double)(b.file - a.file) / 1024,
           (double)b.rss / 1024);
}

/* The catch-up: nadd documents written, bm25_sync timed; the 10-term rows again with that delta;
 * the documents deleted, bm25_sync timed again. */
static qr_status catch_up(bench *b, int first, int nadd, int nwords, int nq, int nfts, char *err)
{
    char prefix[64];
    double text_bytes = 0;
    bm25_report rep;
    qr_status st;
    snprintf(prefix, sizeof(prefix), "bench/add-%d-", (int)getpid());

    double noop[5];
    for (int i = 0; i < 5; i++) {
        uint64_t t0 = qr_now_ns();
        if ((st = bm25_sync(b->x, b->s, false, false, &rep, err)))
            return st;
        noop[i] = (double)(qr_now_ns() - t0) / 1e6;
    }
    qsort(noop, 5, sizeof(double), cmp_double);
    printf("bm25_sync with nothing to do: median %.3f ms of 5\n", noop[2]);

    rng = 0x0ddba11ULL;
    uint64_t t0 = qr_now_ns();
    if ((st = put_docs(b->s, prefix, first, nadd, nwords, &text_bytes, err)))
        return st;
    double put_s = (double)(qr_now_ns() - t0) / 1e9;
    t0 = qr_now_ns();
    st = bm25_sync(b->x, b->s, false, false, &rep, err);
    double sync_ms = (double)(qr_now_ns() - t0) / 1e6;
    if (st == QR_EUNAVAILABLE) {
        printf("bm25_sync after adding %d documents: needs a rebuild (%s, %.1f ms); rebuilding\n", nadd, err,
               sync_ms);
        t0 = qr_now_ns();
        st = bm25_sync(b->x, b->s, true, false, &rep, err);
        sync_ms = (double)(qr_now_ns() - t0) / 1e6;
    }
    if (st)
        return st;
    printf("bm25_sync after adding %d documents (written in %.1f s): %.1f ms (report: %.1f ms, rebuilt %s, "
           "%zu added, %zu removed, %zu documents' ACL sets refreshed)\n",
           nadd, put_s, sync_ms, rep.seconds * 1e3, rep.rebuilt ? "yes" : "no", rep.added, rep.removed,
           rep.docs_changed);
    print_info("index after the catch-up", b->x);
    printf("\nThe 10-term rows again, with the %d added chunks in the index's delta:\n\n", nadd);
    table_head(b->k);
    for (size_t ci = 0; ci < sizeof(callers) / sizeof(callers[0]); ci++)
        if ((st = run_row(b, 10, &callers[ci], nq, nfts, err)))
            return st;
    printf("\n");

    t0 = qr_now_ns();
    if ((st = delete_docs(b->s, prefix, first, nadd, err)))
        return st;
    double del_s = (double)(qr_now_ns() - t0) / 1e9;
    t0 = qr_now_ns();
    st = bm25_sync(b->x, b->s, false, false, &rep, err);
    sync_ms = (double)(qr_now_ns() - t0) / 1e6;
    if (st == QR_EUNAVAILABLE) {
        printf("bm25_sync after deleting them: needs a rebuild (%s); rebuilding\n", err);
        t0 = qr_now_ns();
        st = bm25_sync(b->x, b->s, true, false, &rep, err);
        sync_ms = (double)(qr_now_ns() - t0) / 1e6;
    }
    if (st)
        return st;
    printf("bm25_sync after deleting them again (deleted in %.1f s): %.1f ms (rebuilt %s, %zu added, %zu "
           "removed)\n",
           del_s, sync_ms, rep.rebuilt ? "yes" : "no", rep.added, rep.removed);
    print_info("index after the deletions", b->x);
    return QR_OK;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_bm25 [--chunks N] [--queries Q] [--fts-queries F] [--words W] [--vocab V] "
            "[--k K] [--add A] [--no-pruned] [--cpu] [--keep-index] [--dump FILE] (DIR | --reuse STORE)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int nchunks = 100000, nqueries = 200, nfts = -1, nwords = 200, k = 10, nadd = 1000;
    bool pruned = true, keep = false;
    const char *base = NULL, *reuse = NULL, *dump = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--chunks") == 0 && i + 1 < argc)
            nchunks = atoi(argv[++i]);
        else if (strcmp(argv[i], "--queries") == 0 && i + 1 < argc)
            nqueries = atoi(argv[++i]);
        else if (strcmp(argv[i], "--fts-queries") == 0 && i + 1 < argc)
            nfts = atoi(argv[++i]);
        else if (strcmp(argv[i], "--words") == 0 && i + 1 < argc)
            nwords = atoi(argv[++i]);
        else if (strcmp(argv[i], "--vocab") == 0 && i + 1 < argc)
            vocab = (uint32_t)atoi(argv[++i]);
        else if (strcmp(argv[i], "--add") == 0 && i + 1 < argc)
            nadd = atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-pruned") == 0)
            pruned = false;
        else if (strcmp(argv[i], "--k") == 0 && i + 1 < argc)
            k = atoi(argv[++i]);
        else if (strcmp(argv[i], "--cpu") == 0)
            cpu_clock = true;
        else if (strcmp(argv[i], "--keep-index") == 0)
            keep = true;
        else if (strcmp(argv[i], "--dump") == 0 && i + 1 < argc)
            dump = argv[++i];
        else if (strcmp(argv[i], "--reuse") == 0 && i + 1 < argc)
            reuse = argv[++i];
        else if (argv[i][0] != '-' && !base)
            base = argv[i];
        else
            usage();
    }
    if (nfts < 0 || nfts > nqueries)
        nfts = nqueries;
    if (!pruned && nfts == 0)
        nfts = nqueries;
    if (!!base == !!reuse || (keep && !reuse) || nchunks <= 0 || nqueries <= 0 || nwords <= 0 || k <= 0 ||
        nadd < 0 || vocab < 200 || vocab > 65536)
        usage();
    zipf_init();

    char dir[4096], err[QR_ERR_LEN] = "", fts_detail[512];
    if (reuse)
        snprintf(dir, sizeof(dir), "%s", reuse);
    else
        snprintf(dir, sizeof(dir), "%s/bench-bm25-%d", base, (int)getpid());
    store *s = NULL;
    bm25_index *x = NULL;
    bench b = {.k = k};
    char *principals[GROUPS] = {0};
    qr_status st;
    int rc = 1;
    if ((st = store_open(dir, &s, err)) || (st = store_check_embedding(s, "bench-none", 1, err)))
        goto out;
    b.s = s;
    b.hits = malloc((size_t)k * sizeof(store_hit));
    b.phits = malloc((size_t)k * sizeof(store_hit));
    b.lat = malloc((size_t)nqueries * sizeof(double));
    b.plat = malloc((size_t)nqueries * sizeof(double));
    for (int g = 0; g < GROUPS; g++) {
        principals[g] = malloc(16);
        if (principals[g])
            snprintf(principals[g], 16, "group:g%d", g);
    }
    if (!b.hits || !b.phits || !b.lat || !b.plat || !principals[GROUPS - 1]) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    if (dump && !(b.dump = fopen(dump, "w"))) {
        st = qr_fail(err, QR_EIO, "cannot write '%s': %s", dump, strerror(errno));
        goto out;
    }
    b.principals = (const char *const *)principals;

    store_stats stats;
    if ((st = store_get_stats(s, &stats, err)))
        goto out;
    double load_s = -1, text_bytes = 0;
    if (stats.chunks == 0) {
        uint64_t t0 = qr_now_ns();
        if ((st = put_docs(s, "bench/abs-", 0, nchunks, nwords, &text_bytes, err)))
            goto out;
        load_s = (double)(qr_now_ns() - t0) / 1e9;
        if ((st = store_get_stats(s, &stats, err)))
            goto out;
    }
    if ((st = check_forms(s, err)))
        goto out;

    printf("BM25 top-%d, FTS5 (store_search_bm25: bm25(), ORDER BY score, id) beside the pruned index "
           "(bm25_search): store %s, %lld documents, %lld chunks (%.0f bytes of text on average), ",
           k, dir, (long long)stats.documents, (long long)stats.chunks,
           stats.chunks ? (double)stats.text_bytes / (double)stats.chunks : 0.0);
    if (load_s >= 0)
        printf("written now in %.1f s (%d words a chunk, 8-word titles, Zipf s=1 vocabulary of %u words)",
               load_s, nwords, vocab);
    else
        printf("reused as it was (made with --words and --vocab as given: %d, %u)", nwords, vocab);
    printf("; %d queries a row on the pruned path, the first %d of them on FTS5; one thread; all %u words of "
           "the vocabulary are their own indexed forms (store_tokenize); queries timed by the %s clock\n\n",
           nqueries, nfts, vocab, cpu_clock ? "thread's CPU" : "wall");

    const char *how = "";
    double fts = fts_bytes(dir, fts_detail, sizeof(fts_detail), &how);
    if (fts >= 0)
        printf("FTS5 index: %.1f MiB (%s: %s)\n", mib(fts), how, fts_detail);
    else
        printf("FTS5 index size: unavailable (%s)\n", fts_detail);

    if (pruned) {
        bm25_opts o;
        bm25_opts_default(&o);
        if (o.principal_cache < GROUPS)
            o.principal_cache = GROUPS;
        char path[4200];
        struct stat fst;
        snprintf(path, sizeof(path), "%s/bm25/current.bm25", dir);
        bool have = keep && stat(path, &fst) == 0;
        if (reuse && !keep)
            remove_index_files(dir);
        bm25_report rep;
        rss_kb r0 = read_rss();
        uint64_t t0 = qr_now_ns();
        if (have)
            goto load; /* --keep-index: the index there is opened as it is */
        if ((st = bm25_open(s, dir, &o, false, &x, &rep, err)))
            goto out;
        double build_s = (double)(qr_now_ns() - t0) / 1e9;
        rss_kb r1 = read_rss();
        printf("bm25.delta_max %zu, bm25.principal_cache %zu\n", o.delta_max, o.principal_cache);
        printf("bm25_open without an index: %.2f s (rebuilt %s, report %.2f s)\n", build_s,
               rep.rebuilt ? "yes" : "NO", rep.seconds);
        print_rss("  RSS added by the build-open", r0, r1);
        printf("  peak RSS (VmHWM) %.1f MiB, %.1f MiB before the build-open\n", (double)r1.hwm / 1024,
               (double)r0.hwm / 1024);
        print_info("  index after the build", x);
        bm25_close(x);
        x = NULL;
        /* what the build freed but the allocator kept: the load-open below starts from here */
        r0 = read_rss();
        malloc_trim(0);
        r1 = read_rss();
        printf("  after bm25_close: RSS %.1f MiB (anonymous %.1f); after malloc_trim(0): %.1f MiB (anonymous "
               "%.1f)\n",
               (double)r0.rss / 1024, (double)r0.anon / 1024, (double)r1.rss / 1024, (double)r1.anon / 1024);

        if (stat(path, &fst) == 0)
            printf("%s: %.1f MiB (%.2fx FTS5's)\n", path, mib((double)fst.st_size),
                   fts > 0 ? (double)fst.st_size / fts : 0.0);
        else
            printf("%s: cannot stat: %s\n", path, strerror(errno));

    load:
        r0 = read_rss();
        t0 = qr_now_ns();
        if ((st = bm25_open(s, dir, &o, false, &x, &rep, err)))
            goto out;
        double open_s = (double)(qr_now_ns() - t0) / 1e9;
        r1 = read_rss();
        printf("bm25_open of the existing index: %.3f s (rebuilt %s)\n", open_s, rep.rebuilt ? "YES" : "no");
        print_rss("  RSS added by the load-open", r0, r1);
        print_info("  index after the load", x);
        printf("\n");
        b.x = x;
        if ((st = first_queries(&b, err)))
            goto out;
    }

    rss_kb q0 = read_rss();
    table_head(k);
    static const int lengths[] = {2, 5, 10};
    for (size_t li = 0; li < sizeof(lengths) / sizeof(lengths[0]); li++)
        for (size_t ci = 0; ci < sizeof(callers) / sizeof(callers[0]); ci++)
            if ((st = run_row(&b, lengths[li], &callers[ci], nqueries, nfts, err)))
                goto out;
    printf("\n");
    if (x) {
        print_rss("RSS added by the searches", q0, read_rss());
        print_info("index after the searches", x);
        if (nadd &&
            (st = catch_up(&b, (int)stats.documents, nadd, nwords, nqueries, nfts < 20 ? nfts : 20, err)))
            goto out;
    }
    rc = 0;
    if (b.mismatches) {
        fprintf(stderr, "bench_bm25: %d queries had a different top-%d on the two paths (first above)\n",
                b.mismatches, k);
        rc = 1;
    }
out:
    if (st)
        fprintf(stderr, "bench_bm25: %s\n", err);
    if (b.dump && fclose(b.dump) != 0) {
        fprintf(stderr, "bench_bm25: cannot write '%s': %s\n", dump, strerror(errno));
        rc = 1;
    }
    bm25_close(x);
    store_close(s);
    for (int g = 0; g < GROUPS; g++)
        free(principals[g]);
    free(b.hits);
    free(b.phits);
    free(b.lat);
    free(b.plat);
    free(zipf_cdf);
    return rc;
}
