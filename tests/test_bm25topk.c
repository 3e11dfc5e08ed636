/*
 * The pruned BM25 top-k prototype (index/bm25topk.c) against FTS5's own ranking
 * (store_search_bm25): on small random corpora, with many ties, random column weights, random
 * permitted subsets and a few hundred random queries, both must return the same chunks in the
 * same order with the same scores (1e-9 relative).
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/index.h"
#include "tests/harness.h"

static uint64_t rng;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t pick(size_t n)
{
    return (size_t)(rnd() % n);
}

/* Words whose stems collide (runs, running, runner...) and one that no document holds. */
static const char *const vocab[] = {
    "running", "runs",   "run",    "apple",     "apples", "boundary", "layer",   "layers", "policy", "travel",
    "diem",    "budget", "report", "quarterly", "engine", "search",   "indexes", "token",  "alpha",  "beta",
    "gamma",   "delta",  "omega",  "river",     "stone",  "cloud",    "light",   "night"};
#define NVOCAB  (sizeof(vocab) / sizeof(vocab[0]))
#define MISSING "zebra"
#define NGROUPS 4
#define MAXHITS 64

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *dir)
{
    if (dir)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *temp_dir(void)
{
    static char path[512];
    const char *base = getenv("TMPDIR");
    snprintf(path, sizeof(path), "%s/quarry-bm25topk-XXXXXX", base && base[0] ? base : "/tmp");
    return mkdtemp(path);
}

static size_t append_words(char *out, size_t len, int nwords, size_t vocab_n)
{
    for (int w = 0; w < nwords; w++) {
        if (w)
            out[len++] = ' ';
        /* skewed: low words are frequent, so IDFs differ and some fall to the 1e-6 floor */
        size_t a = pick(vocab_n), b = pick(vocab_n);
        len += (size_t)sprintf(out + len, "%s", vocab[a < b ? a : b]);
    }
    out[len] = '\0';
    return len;
}

/* Writes ndocs documents of 1..5 chunks into s; each document's ACL is one or two groups. */
static qr_status fill(store *s, int ndocs, size_t vocab_n, char *err)
{
    static const char *const headings[] = {NULL, "Travel > Budget", "Search engine",
                                           "Alpha beta gamma river"};
    static const char *const groups[NGROUPS] = {"group:g0", "group:g1", "group:g2", "group:g3"};
    char text[8192], title[256], id[32], hash[65];
    store_chunk chunks[5];
    float vec[5] = {1, 1, 1, 1, 1};
    qr_status st = store_batch_begin(s, err);
    for (int d = 0; d < ndocs && !st; d++) {
        size_t nchunks = 1 + pick(5), len = 0;
        for (size_t c = 0; c < nchunks; c++) {
            if (c)
                text[len++] = ' ';
            chunks[c].start = len;
            len = append_words(text, len, 1 + (int)pick(40), vocab_n);
            chunks[c].end = len;
            chunks[c].headings = headings[pick(4)];
        }
        append_words(title, 0, (int)pick(4), vocab_n);
        snprintf(id, sizeof(id), "doc-%d", d);
        snprintf(hash, sizeof(hash), "%064x", (unsigned)d);
        const char *acl[2] = {groups[pick(NGROUPS)], groups[pick(NGROUPS)]};
        store_document doc = {.doc_id = id,
                              .title = title,
                              .acl = acl,
                              .nacl = 1 + pick(2),
                              .content_hash = hash,
                              .text = text,
                              .text_len = len};
        store_put_result result;
        st = store_put(s, &doc, chunks, nchunks, vec, 1, &result, err);
    }
    qr_status cst = store_batch_commit(s, err);
    return st ? st : cst;
}

typedef struct {
    char form[64];
} form_out;

static qr_status first_form(void *ctx, const char *form, size_t form_len, size_t start, size_t end, char *err)
{
    (void)start;
    (void)end;
    (void)err;
    form_out *f = ctx;
    if (!f->form[0] && form_len < sizeof(f->form)) {
        memcpy(f->form, form, form_len);
        f->form[form_len] = '\0';
    }
    return QR_OK;
}

/* Random queries on one corpus: returns the number of mismatches (0 expected), reporting the
 * first. */
static int run_queries(store *s, store_bm25_index *x, int nqueries, size_t vocab_n, int *nonempty)
{
    char err[QR_ERR_LEN] = "";
    static const char *const all_groups[NGROUPS] = {"group:g0", "group:g1", "group:g2", "group:g3"};
    static int64_t permitted[4096];
    int bad = 0;
    for (int qi = 0; qi < nqueries; qi++) {
        size_t nterms = 1 + pick(10);
        const char *words[10];
        form_out forms[10];
        const char *terms[10];
        char match[1024];
        size_t mlen = 0;
        for (size_t t = 0; t < nterms; t++) {
            words[t] = pick(20) == 0 ? MISSING : vocab[pick(vocab_n)];
            memset(&forms[t], 0, sizeof(forms[t]));
            if (store_tokenize(s, words[t], strlen(words[t]), first_form, &forms[t], err))
                return fprintf(stderr, "tokenize: %s\n", err), 1;
            terms[t] = forms[t].form;
            mlen +=
                (size_t)snprintf(match + mlen, sizeof(match) - mlen, "%s\"%s\"", t ? " OR " : "", words[t]);
        }
        double w[3];
        if (qi % 3 == 0) {
            w[0] = 2, w[1] = 1, w[2] = 1;
        } else {
            for (int c = 0; c < 3; c++)
                w[c] = pick(5) == 0 ? 0.0 : (double)(rnd() % 1000) / 250.0;
        }
        size_t ngroups = pick(NGROUPS + 1); /* 0: administrator */
        store_filter f = {.principals = all_groups + pick(NGROUPS - ngroups + 1),
                          .nprincipals = ngroups,
                          .all_documents = ngroups == 0};
        size_t npermitted = 0;
        bool more = false;
        if (ngroups) {
            if (store_filter_chunks(s, &f, 4096, permitted, &npermitted, &more, err) || more)
                return fprintf(stderr, "filter: %s\n", err), 1;
            /* ascending, as store_bm25_search wants them */
            for (size_t i = 1; i < npermitted; i++)
                for (size_t j = i; j > 0 && permitted[j - 1] > permitted[j]; j--) {
                    int64_t tmp = permitted[j];
                    permitted[j] = permitted[j - 1];
                    permitted[j - 1] = tmp;
                }
        }
        size_t limit = 1 + pick(pick(4) == 0 ? MAXHITS : 12);
        store_hit want[MAXHITS], got[MAXHITS];
        size_t nwant = 0, ngot = 0;
        if (store_search_bm25(s, match, w, &f, 0, limit, want, &nwant, err))
            return fprintf(stderr, "fts5: %s\n", err), 1;
        if (store_bm25_search(x, terms, nterms, w, permitted, npermitted, ngroups == 0, limit, got, &ngot,
                              err))
            return fprintf(stderr, "pruned: %s\n", err), 1;
        *nonempty += nwant > 0;
        bool same = nwant == ngot;
        for (size_t i = 0; same && i < nwant; i++)
            same = want[i].chunk_id == got[i].chunk_id && want[i].doc == got[i].doc &&
                   fabs(want[i].score - got[i].score) <= 1e-9 * fabs(want[i].score);
        if (!same) {
            if (!bad++) {
                fprintf(stderr,
                        "query %d '%s' weights %g/%g/%g groups %zu limit %zu: fts5 %zu hits, pruned %zu\n",
                        qi, match, w[0], w[1], w[2], ngroups, limit, nwant, ngot);
                for (size_t i = 0; i < nwant || i < ngot; i++)
                    fprintf(stderr, "  %zu: fts5 %lld %.17g | pruned %lld %.17g\n", i,
                            i < nwant ? (long long)want[i].chunk_id : -1LL, i < nwant ? want[i].score : 0.0,
                            i < ngot ? (long long)got[i].chunk_id : -1LL, i < ngot ? got[i].score : 0.0);
            }
        }
    }
    return bad;
}

static void corpus_case(uint64_t seed, int ndocs, size_t vocab_n, int nqueries)
{
    char err[QR_ERR_LEN] = "";
    rng = seed;
    const char *tmp = temp_dir();
    CHECK(tmp);
    char dir[600];
    snprintf(dir, sizeof(dir), "%s", tmp);
    store *s = NULL;
    store_bm25_index *x = NULL;
    qr_status st = store_open(dir, &s, err);
    if (!st)
        st = store_check_embedding(s, "test", 1, err);
    if (!st)
        st = fill(s, ndocs, vocab_n, err);
    if (!st)
        st = store_bm25_build(s, &x, err);
    int bad = -1, nonempty = 0;
    if (!st)
        bad = run_queries(s, x, nqueries, vocab_n, &nonempty);
    store_bm25_free(x);
    store_close(s);
    rm_tree(dir);
    CHECK_OK(st, err);
    CHECK_INT(bad, 0);
    CHECK(nonempty > nqueries / 2);
}

TEST(small_corpora_match_fts5)
{
    /* several corpora: tiny (IDFs at the 1e-6 floor), small vocabularies (many ties), larger */
    static const struct {
        int docs;
        size_t vocab;
    } corpora[] = {{3, 6}, {20, 8}, {60, 28}, {150, 12}, {300, 28}};
    for (size_t i = 0; i < sizeof(corpora) / sizeof(corpora[0]); i++) {
        corpus_case(0x1234567ULL + i * 7919, corpora[i].docs, corpora[i].vocab, 120);
        if (harness_failed())
            return;
    }
}

TEST(empty_and_unknown)
{
    char err[QR_ERR_LEN] = "";
    const char *tmp = temp_dir();
    CHECK(tmp);
    char dir[600];
    snprintf(dir, sizeof(dir), "%s", tmp);
    store *s = NULL;
    store_bm25_index *x = NULL;
    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_OK(store_bm25_build(s, &x, err), err);
    const char *terms[] = {"zebra"};
    const double w[3] = {2, 1, 1};
    store_hit hits[4];
    size_t n = 99;
    qr_status st = store_bm25_search(x, terms, 1, w, NULL, 0, true, 4, hits, &n, err);
    store_bm25_free(x);
    store_bm25_free(NULL);
    store_close(s);
    rm_tree(dir);
    CHECK_OK(st, err);
    CHECK_INT(n, 0);
}
