/*
 * The property test of permission-trimmed search, quarry's most important test. Random corpora
 * (documents with random ACLs over random users and nested groups, random metadata, chunks of
 * words from a small vocabulary, vectors with deliberate duplicates for ties) are written to a
 * real store and a real vector index; random callers then run random queries (every mode, k,
 * filters, per-document limits, phrases and exclusions, second pages) and every answer is
 * checked against oracles that know nothing of retrieval's internals:
 *   - every result is a chunk the caller may read and that passes the filters;
 *   - vectors: the k best permitted chunks by brute force (the index's documented score: both
 *     sides normalised to float32, a double dot product; ties by smaller chunk id), exactly,
 *     whether retrieval took the exact-subset path or the index's fixed-fetch path;
 *   - BM25: the unrestricted FTS5 query, run on a separate SQLite connection and filtered by
 *     permission afterwards, gives the same ids in the same order with the same scores, whether
 *     retrieval ranked with the pruned BM25 index (retrieval.bm25_path = pruned, the default: most
 *     rounds attach one) or with FTS5 (the other rounds); the query's words, phrases and
 *     exclusions come from the test's own reading of the query language, not retrieval's parser;
 *   - equal scores are ordered by smaller chunk id, exactly: a score within TIE_EPS of the
 *     oracle's passes only when the two scores differ (rounding); bitwise equal scores must be
 *     in chunk id order, in the answer and against the oracle;
 *   - hybrid: reciprocal rank fusion of the two oracle lists;
 *   - whenever k permitted chunks match, k come back.
 * Corpora served by an approximate index (HNSW, IVF) check the subset property and the count.
 *
 * QUARRY_PROPERTY_QUERIES sets the number of queries (default 10000, the CI floor); a long run:
 * QUARRY_PROPERTY_QUERIES=1000000. QUARRY_PROPERTY_SEED replays a run (the seed is printed).
 */
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "index/index.h"
#include "retrieval/retrieval.h"
#include "tests/harness.h"
#include "tests/store_raw.h"

#define DIM            8
#define VOCAB          24
#define MAX_USERS      12
#define MAX_GROUPS     8
#define MAX_DOCS       160
#define MAX_CHUNKS     4
#define MAX_PRINCIPALS (2 + MAX_GROUPS)
#define QUERIES_PER    400
#define TIE_EPS        1e-6

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static size_t rnd_n(size_t n)
{
    return n ? (size_t)(rnd() % n) : 0;
}

static bool chance(int percent)
{
    return (int)rnd_n(100) < percent;
}

/* Words porter leaves alone, so that the test's view of a word is the index's. */
static const char *word(size_t i)
{
    static char words[VOCAB][8];
    if (!words[i][0])
        snprintf(words[i], sizeof(words[i]), "zq%c%c", (char)('a' + i % 26), (char)('a' + (i * 7) % 26));
    return words[i];
}

typedef struct {
    char doc_id[24];
    char uri[48];
    const char *type;
    char *acl[MAX_USERS + MAX_GROUPS + 1];
    size_t nacl;
    int64_t chunk_ids[MAX_CHUNKS];
    size_t nchunks;
} doc;

typedef struct {
    int64_t id;
    size_t doc;
    float vec[DIM];
} chunk;

typedef struct {
    char dir[64];
    store *s;
    vindex *v;
    bm25_index *b; /* the pruned BM25 index, attached to r */
    retrieval *r;
    sqlite3 *db; /* the oracle's own connection */
    bool exact_index;
    retrieval_opts o;
    /* principals */
    size_t nusers, ngroups;
    bool member[MAX_USERS][MAX_GROUPS];  /* direct membership */
    bool nested[MAX_GROUPS][MAX_GROUPS]; /* group i is a member of group j */
    char *principals[MAX_USERS][MAX_PRINCIPALS];
    size_t nprincipals[MAX_USERS];
    doc docs[MAX_DOCS];
    size_t ndocs;
    chunk *chunks;
    size_t nchunks;
} corpus;

static void corpus_free(corpus *c)
{
    retrieval_close(c->r);
    bm25_close(c->b);
    vindex_close(c->v);
    store_close(c->s);
    if (c->db)
        sqlite3_close(c->db);
    for (size_t i = 0; i < c->ndocs; i++)
        for (size_t j = 0; j < c->docs[i].nacl; j++)
            free(c->docs[i].acl[j]);
    for (size_t u = 0; u < MAX_USERS; u++)
        for (size_t j = 0; j < c->nprincipals[u]; j++)
            free(c->principals[u][j]);
    free(c->chunks);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
    if (c->dir[0] && system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", c->dir);
    memset(c, 0, sizeof(*c));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Users' principals: public, user:uN and every group reachable through nesting (cycles too). */
static void resolve_principals(corpus *c)
{
    for (size_t u = 0; u < c->nusers; u++) {
        bool in[MAX_GROUPS] = {0};
        for (size_t g = 0; g < c->ngroups; g++)
            in[g] = c->member[u][g];
        for (bool grew = true; grew;) {
            grew = false;
            for (size_t g = 0; g < c->ngroups; g++)
                for (size_t h = 0; h < c->ngroups; h++)
                    if (in[g] && c->nested[g][h] && !in[h])
                        in[h] = grew = true;
        }
        char buf[64];
        size_t n = 0;
        c->principals[u][n++] = strdup("public");
        snprintf(buf, sizeof(buf), "user:u%zu", u);
        c->principals[u][n++] = strdup(buf);
        for (size_t g = 0; g < c->ngroups; g++) {
            if (in[g]) {
                snprintf(buf, sizeof(buf), "group:g%zu", g);
                c->principals[u][n++] = strdup(buf);
            }
        }
        qsort(c->principals[u], n, sizeof(char *), cmp_str);
        c->nprincipals[u] = n;
    }
}

/* A random vector with small integer entries, never zero (the index refuses zero rows). */
static void random_vec(float *v)
{
    for (bool nonzero = false; !nonzero;) {
        for (int i = 0; i < DIM; i++) {
            v[i] = (float)((int)rnd_n(5) - 2);
            nonzero |= v[i] != 0;
        }
    }
}

static bool build_corpus(corpus *c, int round, char *err)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->dir, sizeof(c->dir), "/tmp/quarry-prop-XXXXXX");
    if (!mkdtemp(c->dir))
        return false;
    c->nusers = 3 + rnd_n(MAX_USERS - 2);
    c->ngroups = 2 + rnd_n(MAX_GROUPS - 1);
    for (size_t u = 0; u < c->nusers; u++)
        for (size_t g = 0; g < c->ngroups; g++)
            c->member[u][g] = chance(25);
    for (size_t g = 0; g < c->ngroups; g++)
        for (size_t h = 0; h < c->ngroups; h++)
            c->nested[g][h] = g != h && chance(15);
    resolve_principals(c);

    if (store_open(c->dir, &c->s, err) || store_check_embedding(c->s, "test-model", DIM, err))
        return false;
    c->ndocs = 20 + rnd_n(MAX_DOCS - 20);
    c->chunks = calloc(c->ndocs * MAX_CHUNKS, sizeof(chunk));
    if (!c->chunks || store_batch_begin(c->s, err))
        return false;
    static const char *types[] = {"text/plain", "text/markdown", "text/html"};
    char last_text[512] = "";
    for (size_t d = 0; d < c->ndocs; d++) {
        doc *dc = &c->docs[d];
        snprintf(dc->doc_id, sizeof(dc->doc_id), "d%zu", d);
        snprintf(dc->uri, sizeof(dc->uri), "file:///%s/%zu", chance(50) ? "alpha" : "beta", d);
        dc->type = types[rnd_n(3)];
        if (!chance(8)) { /* else no ACL: administrators only */
            if (chance(10))
                dc->acl[dc->nacl++] = strdup("public");
            size_t extra = 1 + rnd_n(3);
            for (size_t i = 0; i < extra; i++) {
                char buf[64];
                if (chance(50))
                    snprintf(buf, sizeof(buf), "user:u%zu", rnd_n(c->nusers + 2)); /* +2: nobody's */
                else
                    snprintf(buf, sizeof(buf), "group:g%zu", rnd_n(c->ngroups));
                dc->acl[dc->nacl++] = strdup(buf);
            }
        }
        /* text: chunks of words; some repeat an earlier chunk's words exactly (BM25 ties) */
        size_t nch = 1 + rnd_n(MAX_CHUNKS);
        char text[4096] = "";
        size_t len = 0;
        store_chunk sc[MAX_CHUNKS];
        float vecs[MAX_CHUNKS * DIM];
        for (size_t k = 0; k < nch; k++) {
            size_t start = len;
            if (chance(15) && last_text[0]) {
                len += (size_t)snprintf(text + len, sizeof(text) - len, "%s", last_text);
            } else {
                size_t nw = 3 + rnd_n(12);
                for (size_t w = 0; w < nw; w++)
                    len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%s", w ? " " : "",
                                            word(rnd_n(VOCAB)));
                len += (size_t)snprintf(text + len, sizeof(text) - len, ".");
                snprintf(last_text, sizeof(last_text), "%.*s", (int)(len - start), text + start);
            }
            sc[k] = (store_chunk){start, len, chance(30) ? "Part > Section" : ""};
            len += (size_t)snprintf(text + len, sizeof(text) - len, " ");
            if (chance(20) && c->nchunks) /* an earlier chunk's vector exactly: vector ties */
                memcpy(vecs + k * DIM, c->chunks[rnd_n(c->nchunks)].vec, sizeof(float) * DIM);
            else
                random_vec(vecs + k * DIM);
        }
        char title[64];
        snprintf(title, sizeof(title), "%s %s", word(rnd_n(VOCAB)), chance(50) ? word(rnd_n(VOCAB)) : "");
        char hash[65];
        snprintf(hash, sizeof(hash), "%064zx", d + 1);
        store_document sd = {.doc_id = dc->doc_id,
                             .title = title,
                             .uri = dc->uri,
                             .content_type = dc->type,
                             .acl = (const char *const *)dc->acl,
                             .nacl = dc->nacl,
                             .content_hash = hash,
                             .text = text,
                             .text_len = len};
        store_put_result res;
        if (store_put(c->s, &sd, sc, nch, vecs, DIM, &res, err))
            return false;
        dc->nchunks = nch;
        for (size_t k = 0; k < nch; k++) {
            chunk *ch = &c->chunks[c->nchunks++];
            ch->doc = d;
            memcpy(ch->vec, vecs + k * DIM, sizeof(ch->vec));
        }
    }
    if (store_batch_commit(c->s, err))
        return false;
    /* the chunk ids the store gave */
    size_t at = 0;
    for (size_t d = 0; d < c->ndocs; d++) {
        store_doc_info *info = NULL;
        if (store_get_document(c->s, c->docs[d].doc_id, true, &info, err))
            return false;
        for (size_t k = 0; k < info->nchunks; k++) {
            c->docs[d].chunk_ids[k] = info->chunks[k].chunk_id;
            c->chunks[at++].id = info->chunks[k].chunk_id;
        }
        store_doc_info_free(info);
    }

    /* the vector index: exact (flat) for most rounds, approximate for some */
    vindex_opts vo;
    vindex_opts_default(&vo);
    c->exact_index = round % 5 != 4;
    vo.type = c->exact_index ? "flat" : (round % 10 == 4 ? "hnsw" : "ivf_flat");
    vo.nprobe = 1;
    vo.ef_search = 16;
    if (index_sync_open(c->s, c->dir, &vo, false, &c->v, NULL, err))
        return false;
    retrieval_opts_default(&c->o);
    /* both vector paths: exact over listed chunks, and the index's fixed fetch */
    c->o.exact_min = round % 3 == 0 ? 0 : round % 3 == 1 ? 100000 : 40;
    c->o.exact_share = round % 3 == 2 ? 0.25 : 0;
    c->o.fusion = round % 4 < 2 ? RETRIEVAL_FUSION_RRF : RETRIEVAL_FUSION_WEIGHTED;
    c->o.vector_weight = round % 2 ? 0.5 : 0.2;
    c->o.candidates = 10 + rnd_n(40);
    c->o.weight_title = (double)rnd_n(3);
    /* the BM25 path: the pruned index (the default) in most rounds, FTS5's ranking in the others */
    c->o.bm25_pruned = (round / 2) % 3 != 2;
    if (retrieval_open(c->s, c->v, &c->o, &c->r, err))
        return false;
    bm25_opts bo;
    bm25_opts_default(&bo);
    if (bm25_open(c->s, c->dir, &bo, false, &c->b, NULL, err))
        return false;
    retrieval_set_bm25(c->r, c->b);
    return (c->db = store_raw_open(c->dir, SQLITE_OPEN_READONLY)) != NULL;
}

/* ---- the test's own reading of its queries ------------------------------------------------- */

/* The query language as retrieval_int.h documents it, for the ASCII queries this test writes,
 * read here without retrieval's parser so that the oracle cannot share its mistakes: words are
 * runs of letters and digits, lower-cased; "..." is a phrase every result must hold (an unclosed
 * quote ends at the end); a '-' that starts a word excludes that word or "phrase"; words are
 * searched with OR, each occurrence counting, stopwords dropped unless nothing else is searched,
 * an excluded word not searched. */
#define QPARTS 64
#define QWORD  128

typedef struct {
    char terms[QPARTS][QWORD], stopped[QPARTS][QWORD];
    char phrases[QPARTS][QWORD], excluded[QPARTS][QWORD]; /* words joined by one space */
    size_t nterms, nstopped, nphrases, nexcluded;
} query_parts;

/* The default stopwords that these queries hold ("the", and "AND" of the FTS5-looking tail). */
static bool test_stopword(const char *w)
{
    return strcmp(w, "the") == 0 || strcmp(w, "and") == 0;
}

static bool word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* The words of s[0, n), lower-cased and joined by one space, into out. */
static void words_of(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (!word_char(s[i])) {
            i++;
            continue;
        }
        if (o && o + 1 < outlen)
            out[o++] = ' ';
        for (; i < n && word_char(s[i]); i++)
            if (o + 1 < outlen)
                out[o++] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
    }
    out[o] = '\0';
}

/* Adds w to a list of phrases unless it is there already (a repeated phrase is one constraint). */
static void add_phrase(char (*list)[QWORD], size_t *n, const char *w)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(list[i], w) == 0)
            return;
    if (*n < QPARTS)
        snprintf(list[(*n)++], QWORD, "%s", w);
}

static void parse_query(const char *text, query_parts *q)
{
    memset(q, 0, sizeof(*q));
    size_t len = strlen(text), i = 0;
    char w[QWORD];
    while (i < len) {
        bool word_start = i == 0 || text[i - 1] == ' ';
        bool minus = text[i] == '-' && word_start && i + 1 < len;
        if (text[i] == '"' || (minus && text[i + 1] == '"')) {
            size_t open = minus ? i + 1 : i, close = open + 1;
            while (close < len && text[close] != '"')
                close++;
            words_of(text + open + 1, close - open - 1, w, sizeof(w));
            if (w[0] && minus)
                add_phrase(q->excluded, &q->nexcluded, w);
            else if (w[0])
                add_phrase(q->phrases, &q->nphrases, w);
            i = close < len ? close + 1 : len;
            continue;
        }
        if (!word_char(text[i]) && !(minus && word_char(text[i + 1]))) {
            i++;
            continue;
        }
        size_t s = minus ? i + 1 : i, e = s;
        while (e < len && word_char(text[e]))
            e++;
        words_of(text + s, e - s, w, sizeof(w));
        if (minus)
            add_phrase(q->excluded, &q->nexcluded, w);
        else if (test_stopword(w) && q->nstopped < QPARTS)
            snprintf(q->stopped[q->nstopped++], QWORD, "%s", w);
        else if (q->nterms < QPARTS)
            snprintf(q->terms[q->nterms++], QWORD, "%s", w);
        i = e;
    }
    if (!q->nterms && !q->nphrases) { /* nothing but stopwords: they are searched after all */
        memcpy(q->terms, q->stopped, sizeof(q->terms));
        q->nterms = q->nstopped;
    }
    size_t kept = 0;
    for (size_t t = 0; t < q->nterms; t++) {
        bool excluded = false;
        for (size_t x = 0; x < q->nexcluded && !excluded; x++)
            excluded = strcmp(q->excluded[x], q->terms[t]) == 0; /* a one-word exclusion */
        if (!excluded)
            memmove(q->terms[kept++], q->terms[t], QWORD);
    }
    q->nterms = kept;
}

/* FTS5 expressions of the query's parts: rank (every word and phrase, OR), require (every
 * phrase, AND) and exclude (every exclusion, OR); each word or phrase is one quoted string. */
static void query_expressions(const char *text, qr_buf *rank, qr_buf *require, qr_buf *exclude)
{
    query_parts q;
    parse_query(text, &q);
    for (size_t i = 0; i < q.nterms; i++)
        qr_buf_printf(rank, "%s\"%s\"", i ? " OR " : "", q.terms[i]);
    for (size_t i = 0; i < q.nphrases; i++) {
        qr_buf_printf(rank, "%s\"%s\"", qr_buf_len(rank) ? " OR " : "", q.phrases[i]);
        qr_buf_printf(require, "%s\"%s\"", i ? " AND " : "", q.phrases[i]);
    }
    for (size_t i = 0; i < q.nexcluded; i++)
        qr_buf_printf(exclude, "%s\"%s\"", i ? " OR " : "", q.excluded[i]);
}

/* ---- oracles ------------------------------------------------------------------------------- */

typedef struct {
    bool admin;
    const char *const *principals;
    size_t nprincipals;
    const char **doc_ids;
    size_t ndoc_ids;
    const char *prefix, *type;
} who;

static bool doc_permitted(const corpus *c, size_t d, const who *w)
{
    const doc *dc = &c->docs[d];
    bool ok = w->admin;
    for (size_t i = 0; i < dc->nacl && !ok; i++)
        for (size_t j = 0; j < w->nprincipals && !ok; j++)
            ok = strcmp(dc->acl[i], w->principals[j]) == 0;
    if (!ok)
        return false;
    if (w->ndoc_ids) {
        bool listed = false;
        for (size_t i = 0; i < w->ndoc_ids && !listed; i++)
            listed = strcmp(w->doc_ids[i], dc->doc_id) == 0;
        if (!listed)
            return false;
    }
    if (w->prefix && strncmp(dc->uri, w->prefix, strlen(w->prefix)) != 0)
        return false;
    return !w->type || strcmp(dc->type, w->type) == 0;
}

/* c->chunks is in chunk id order (the store hands out ascending ids). */
static size_t chunk_index(const corpus *c, int64_t id)
{
    size_t lo = 0, hi = c->nchunks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->chunks[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->nchunks && c->chunks[lo].id == id ? lo : SIZE_MAX;
}

/* Chunk ids matching an FTS5 expression, via the oracle's own connection (a set as a bitmap by
 * position in c->chunks). */
static bool fts_set(const corpus *c, const char *expr, bool *in)
{
    memset(in, 0, c->nchunks);
    if (!*expr)
        return true;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(c->db, "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?1", -1, &q, NULL))
        return false;
    sqlite3_bind_text(q, 1, expr, -1, SQLITE_STATIC);
    while (sqlite3_step(q) == SQLITE_ROW) {
        size_t i = chunk_index(c, sqlite3_column_int64(q, 0));
        if (i != SIZE_MAX)
            in[i] = true;
    }
    sqlite3_finalize(q);
    return true;
}

typedef struct {
    int64_t id;
    size_t doc;
    double score;
    int rb, rv;
} oitem;

static int cmp_oitem(const void *a, const void *b)
{
    const oitem *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static size_t cap_list(oitem *v, size_t n, size_t cap, size_t ndocs)
{
    if (!cap)
        return n;
    size_t *count = calloc(ndocs, sizeof(size_t)), kept = 0;
    for (size_t i = 0; i < n; i++)
        if (count[v[i].doc]++ < cap)
            v[kept++] = v[i];
    free(count);
    return kept;
}

/* The index's exact score, recomputed from the documented definition. */
static double exact_score(const float *q, const float *x)
{
    float nq[DIM], nx[DIM];
    double sq = 0, sx = 0;
    for (int i = 0; i < DIM; i++) {
        sq += (double)q[i] * q[i];
        sx += (double)x[i] * x[i];
    }
    double iq = 1.0 / sqrt(sq), ix = 1.0 / sqrt(sx);
    for (int i = 0; i < DIM; i++) {
        nq[i] = (float)(q[i] * iq);
        nx[i] = (float)(x[i] * ix);
    }
    double dot = 0;
    for (int i = 0; i < DIM; i++)
        dot += (double)nx[i] * nq[i];
    return (float)dot;
}

/* ---- one query ----------------------------------------------------------------------------- */

typedef struct {
    size_t queries, exact_vector, predicate_vector, bm25_nonempty, near_ties, pages;
    size_t bm25_pruned, bm25_fts5; /* answers whose BM25 list the pruned index, or FTS5, ranked */
} tally;

static bool check_query(corpus *c, tally *t, char *why, size_t whylen)
{
    char err[QR_ERR_LEN];
    who w = {0};
    size_t user = rnd_n(c->nusers + 1);
    const char *public_only[] = {"public"};
    if (chance(8)) {
        w.admin = true;
    } else if (user == c->nusers) {
        w.principals = public_only; /* someone in no group */
        w.nprincipals = 1;
    } else {
        w.principals = (const char *const *)c->principals[user];
        w.nprincipals = c->nprincipals[user];
    }
    const char *ids[4];
    if (chance(12)) {
        w.ndoc_ids = 1 + rnd_n(4);
        for (size_t i = 0; i < w.ndoc_ids; i++)
            ids[i] = c->docs[rnd_n(c->ndocs)].doc_id;
        w.doc_ids = ids;
    }
    if (chance(12))
        w.prefix = chance(50) ? "file:///alpha/" : "file:///beta/1";
    if (chance(12))
        w.type = chance(50) ? "text/plain" : "text/markdown";

    /* the query text: words, sometimes a stopword, punctuation, a phrase, an exclusion */
    char text[256];
    size_t len = 0, nw = 1 + rnd_n(4);
    for (size_t i = 0; i < nw; i++)
        len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%s", i ? " " : "",
                                chance(10) ? "the" : word(rnd_n(VOCAB)));
    if (chance(10))
        len += (size_t)snprintf(text + len, sizeof(text) - len, " \"%s %s\"", word(rnd_n(VOCAB)),
                                word(rnd_n(VOCAB)));
    if (chance(10))
        len += (size_t)snprintf(text + len, sizeof(text) - len, " -%s", word(rnd_n(VOCAB)));
    if (chance(5))
        len += (size_t)snprintf(text + len, sizeof(text) - len, " AND (NEAR*:^)");
    float vec[DIM];
    if (chance(15))
        memcpy(vec, c->chunks[rnd_n(c->nchunks)].vec, sizeof(vec)); /* ties with that chunk's copies */
    else
        random_vec(vec);
    static const retrieval_mode modes[] = {RETRIEVAL_BM25, RETRIEVAL_VECTOR, RETRIEVAL_HYBRID};
    retrieval_mode mode = modes[rnd_n(3)];
    size_t k = 1 + rnd_n(chance(20) ? 60 : 12);
    size_t cap = chance(20) ? 1 + rnd_n(2) : 0;
    retrieval_caller caller = {w.principals, w.nprincipals, w.admin};
    retrieval_request req = {.query = text,
                             .vector = vec,
                             .dim = DIM,
                             .mode = mode,
                             .k = k,
                             .doc_ids = w.doc_ids,
                             .ndoc_ids = w.ndoc_ids,
                             .source_prefix = w.prefix,
                             .content_type = w.type,
                             .max_per_doc = cap ? cap : SIZE_MAX};
    bool second_page = chance(10);
    retrieval_result *res = NULL, *first = NULL;
    qr_status st = retrieval_search(c->r, &caller, &req, &first, err);
    if (!st && second_page) {
        if (first->next_cursor) {
            req.cursor = first->next_cursor;
            st = retrieval_search(c->r, &caller, &req, &res, err);
            t->pages++;
        } else {
            second_page = false;
        }
    }
    if (!res) {
        res = first;
        first = NULL;
    }
    if (st) {
        snprintf(why, whylen, "search failed: %s (query '%s')", err, text);
        retrieval_result_free(first);
        return false;
    }
    size_t offset = second_page ? k : 0;

    /* the expressions, for the BM25 oracle */
    qr_buf rank, require, exclude;
    qr_buf_init(&rank, 1 << 16);
    qr_buf_init(&require, 1 << 16);
    qr_buf_init(&exclude, 1 << 16);
    bool ok = true;
    bool *req_in = calloc(c->nchunks, 1), *exc_in = calloc(c->nchunks, 1), *allowed = calloc(c->nchunks, 1);
    oitem *ov = calloc(c->nchunks, sizeof(oitem)), *ob = calloc(c->nchunks, sizeof(oitem));
    oitem *of = calloc(2 * c->nchunks, sizeof(oitem));
    size_t nov = 0, nob = 0, nof = 0, nexp = 0;
    oitem *expect = NULL;
    query_expressions(text, &rank, &require, &exclude);
    if (qr_buf_failed(&rank) || qr_buf_failed(&require) || qr_buf_failed(&exclude) ||
        !fts_set(c, qr_buf_str(&require), req_in) || !fts_set(c, qr_buf_str(&exclude), exc_in)) {
        snprintf(why, whylen, "oracle setup failed: %s (require '%s', exclude '%s')", sqlite3_errmsg(c->db),
                 qr_buf_str(&require), qr_buf_str(&exclude));
        ok = false;
        goto out;
    }
    for (size_t i = 0; i < c->nchunks; i++)
        allowed[i] =
            doc_permitted(c, c->chunks[i].doc, &w) && (!qr_buf_len(&require) || req_in[i]) && !exc_in[i];

    /* every result is allowed, whatever the mode */
    for (size_t i = 0; i < res->nhits; i++) {
        size_t ci = chunk_index(c, res->hits[i].chunk_id);
        if (ci == SIZE_MAX || !allowed[ci]) {
            snprintf(why, whylen, "chunk %lld returned but not permitted (query '%s', mode %s)",
                     (long long)res->hits[i].chunk_id, text, retrieval_mode_name(mode));
            ok = false;
            goto out;
        }
    }
    /* best first, and equal scores by smaller chunk id, exactly */
    for (size_t i = 1; i < res->nhits; i++) {
        const retrieval_hit *a = &res->hits[i - 1], *b = &res->hits[i];
        if (a->score < b->score || (a->score == b->score && a->chunk_id > b->chunk_id)) {
            snprintf(why, whylen,
                     "ranks %zu and %zu out of order: chunk %lld score %.17g before chunk %lld score %.17g "
                     "(query '%s', mode %s)",
                     offset + i, offset + i + 1, (long long)a->chunk_id, a->score, (long long)b->chunk_id,
                     b->score, text, retrieval_mode_name(mode));
            ok = false;
            goto out;
        }
    }
    if (mode != RETRIEVAL_VECTOR && qr_buf_len(&rank)) {
        if (res->bm25_pruned)
            t->bm25_pruned++;
        else
            t->bm25_fts5++;
    }

    size_t need = offset + k + 1;
    size_t depth = mode == RETRIEVAL_HYBRID && c->o.candidates > need ? c->o.candidates : need;
    /* vector oracle */
    for (size_t i = 0; i < c->nchunks; i++)
        if (allowed[i])
            ov[nov++] = (oitem){c->chunks[i].id, c->chunks[i].doc, exact_score(vec, c->chunks[i].vec), 0, 0};
    qsort(ov, nov, sizeof(oitem), cmp_oitem);
    nov = cap_list(ov, nov, cap, c->ndocs);
    if (nov > depth)
        nov = depth;
    /* BM25 oracle: the unrestricted FTS5 query, filtered afterwards */
    if (qr_buf_len(&rank)) {
        sqlite3_stmt *q = NULL;
        char sql[256];
        snprintf(
            sql, sizeof(sql),
            "SELECT rowid, bm25(chunks_fts, %.17g, %.17g, %.17g) FROM chunks_fts WHERE chunks_fts MATCH ?1"
            " ORDER BY 2, rowid",
            c->o.weight_title, c->o.weight_headings, c->o.weight_body);
        if (sqlite3_prepare_v2(c->db, sql, -1, &q, NULL)) {
            snprintf(why, whylen, "oracle query failed: %s", sqlite3_errmsg(c->db));
            ok = false;
            goto out;
        }
        sqlite3_bind_text(q, 1, qr_buf_str(&rank), -1, SQLITE_STATIC);
        while (sqlite3_step(q) == SQLITE_ROW) {
            size_t ci = chunk_index(c, sqlite3_column_int64(q, 0));
            if (ci != SIZE_MAX && allowed[ci])
                ob[nob++] = (oitem){c->chunks[ci].id, c->chunks[ci].doc, -sqlite3_column_double(q, 1), 0, 0};
        }
        sqlite3_finalize(q);
        t->bm25_nonempty += nob > 0;
    }
    nob = cap_list(ob, nob, cap, c->ndocs);
    if (nob > depth)
        nob = depth;

    bool vec_exact = c->exact_index || res->vector_exact;
    bool run_b = qr_buf_len(&rank) > 0 && mode != RETRIEVAL_VECTOR, run_v = mode != RETRIEVAL_BM25;
    if (mode == RETRIEVAL_HYBRID && run_b && run_v) {
        /* fusion of the oracle lists: RRF, or scores over each list's best; BM25 weight 1 and the
         * corpus's vector weight */
        bool rrf = c->o.fusion == RETRIEVAL_FUSION_RRF;
        double best_b = nob ? ob[0].score : 0, best_v = nov ? ov[0].score : 0;
        for (size_t i = 0; i < nob; i++)
            of[nof++] =
                (oitem){ob[i].id, ob[i].doc,
                        rrf ? 1.0 / (c->o.rrf_k + (double)(i + 1)) : (best_b > 0 ? ob[i].score / best_b : 0),
                        (int)i + 1, 0};
        for (size_t i = 0; i < nov; i++) {
            double s = c->o.vector_weight *
                       (rrf ? 1.0 / (c->o.rrf_k + (double)(i + 1)) : (best_v > 0 ? ov[i].score / best_v : 0));
            size_t j = 0;
            while (j < nof && of[j].id != ov[i].id)
                j++;
            if (j < nof) {
                of[j].score += s;
                of[j].rv = (int)i + 1;
            } else {
                of[nof++] = (oitem){ov[i].id, ov[i].doc, s, 0, (int)i + 1};
            }
        }
        qsort(of, nof, sizeof(oitem), cmp_oitem);
        nof = cap_list(of, nof, cap, c->ndocs);
        expect = of, nexp = nof;
    } else if (run_b || mode == RETRIEVAL_BM25) {
        expect = ob, nexp = nob;
    } else {
        expect = ov, nexp = nov;
    }
    size_t want = nexp > offset ? (nexp - offset < k ? nexp - offset : k) : 0;
    if (res->nhits != want && (vec_exact || mode == RETRIEVAL_BM25 || mode == RETRIEVAL_VECTOR)) {
        snprintf(why, whylen, "%zu results, expected %zu (query '%s', mode %s, k %zu, offset %zu, cap %zu)",
                 res->nhits, want, text, retrieval_mode_name(mode), k, offset, cap);
        ok = false;
        goto out;
    }
    if (!vec_exact && mode != RETRIEVAL_BM25)
        goto out; /* approximate index: subset and count (vector mode) checked */
    if (run_v) {
        if (res->vector_exact)
            t->exact_vector++;
        else
            t->predicate_vector++;
    }
    for (size_t i = 0; i < want; i++) {
        const oitem *e = &expect[offset + i];
        const retrieval_hit *h = &res->hits[i];
        double diff = fabs(h->score - e->score);
        if (h->chunk_id == e->id && diff <= 1e-9 * fmax(1, fabs(e->score)))
            continue;
        /* The oracle's and retrieval's arithmetic may round apart: the same chunk within TIE_EPS
         * passes, and so does another chunk whose score differs from the oracle's by no more
         * (a near tie may order either way). Scores that are bitwise equal -- in the oracle's
         * list, or in both lists when the oracle's list does not reach the chunk -- are an exact
         * tie, which the smaller chunk id must win. */
        bool exact_tie = false;
        if (h->chunk_id != e->id) {
            double oh = h->score;
            bool listed = false;
            for (size_t j = 0; j < nexp && !listed; j++)
                if (expect[j].id == h->chunk_id) {
                    oh = expect[j].score;
                    listed = true;
                }
            exact_tie = listed ? oh == e->score : h->score == e->score;
            diff = fmax(diff, fabs(oh - e->score));
        }
        if (!exact_tie && diff <= TIE_EPS) {
            t->near_ties++;
            continue;
        }
        snprintf(
            why, whylen,
            "rank %zu: chunk %lld score %.17g, oracle chunk %lld score %.17g%s (query '%s', mode %s, k %zu, "
            "offset %zu, cap %zu, path %s, bm25 %s)",
            offset + i + 1, (long long)h->chunk_id, h->score, (long long)e->id, e->score,
            exact_tie ? ": an exact tie not won by the smaller chunk id" : "", text,
            retrieval_mode_name(mode), k, offset, cap, res->vector_exact ? "exact" : "index fetch",
            res->bm25_pruned ? "pruned" : "fts5");
        ok = false;
        goto out;
    }
out:
    t->queries++;
    retrieval_result_free(res);
    retrieval_result_free(first);
    qr_buf_release(&rank);
    qr_buf_release(&require);
    qr_buf_release(&exclude);
    free(req_in);
    free(exc_in);
    free(allowed);
    free(ov);
    free(ob);
    free(of);
    return ok;
}

TEST(permission_trimmed_search_matches_oracles)
{
    char err[QR_ERR_LEN] = "";
    qr_log_configure(QR_LOG_WARN, QR_LOG_TEXT, "index=error", err);
    const char *env = getenv("QUARRY_PROPERTY_QUERIES");
    size_t target = env ? strtoull(env, NULL, 10) : 10000;
    const char *seed_env = getenv("QUARRY_PROPERTY_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : 0x5eed5eed1234ull;
    rng_state = seed ? seed : 1;
    printf("seed 0x%llx, %zu queries\n", (unsigned long long)seed, target);
    tally t = {0};
    uint64_t t0 = qr_now_ns();
    for (int round = 0; t.queries < target; round++) {
        corpus c;
        bool built = build_corpus(&c, round, err);
        CHECK_MSG(built, "round %d: building the corpus failed: %s", round, err);
        char why[1024] = "";
        bool ok = true;
        for (size_t q = 0; q < QUERIES_PER && t.queries < target && ok; q++)
            ok = check_query(&c, &t, why, sizeof(why));
        int nusers = (int)c.nusers, ndocs = (int)c.ndocs;
        corpus_free(&c);
        CHECK_MSG(ok, "round %d (%d users, %d documents, seed 0x%llx): %s", round, nusers, ndocs,
                  (unsigned long long)seed, why);
    }
    printf("%zu queries in %.1f s: %zu vector answers by exact subset scan, %zu by the index's fixed fetch, "
           "%zu BM25 queries with matches, %zu BM25 lists by the pruned index and %zu by FTS5, %zu second "
           "pages, %zu near ties\n",
           t.queries, (qr_now_ns() - t0) / 1e9, t.exact_vector, t.predicate_vector, t.bm25_nonempty,
           t.bm25_pruned, t.bm25_fts5, t.pages, t.near_ties);
    CHECK(t.exact_vector > 0 && t.predicate_vector > 0 && t.bm25_nonempty > 0);
    CHECK(t.bm25_pruned > 0 && t.bm25_fts5 > 0);
}
