/*
 * Unit tests of retrieval: the query language and its tokenizer (checked against the SQLite that
 * quarry links), injection attempts, BM25 and vector search over a real store and vector index
 * with ACLs and filters, fusion, per-document limits, pagination, snippets, the JSON contract,
 * the vector index's sync layer, and the evaluation metrics against hand-computed values.
 */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "index/feed.h"
#include "index/index.h"
#include "retrieval/retrieval.h"
#include "retrieval/retrieval_int.h"
#include "tests/harness.h"

/* ---- a small corpus ------------------------------------------------------------------------ */

#define DIM 16

typedef struct {
    char dir[64];
    store *s;
    vindex *v;
    bm25_index *b; /* the pruned BM25 path, opened by fx_ready unless o.bm25_pruned is off */
    retrieval *r;
    retrieval_opts o;
    int docs;
} fx;

/* A toy embedding: words hashed into DIM signed buckets (never zero for a text with a word). */
static void embed(const char *text, float *v)
{
    memset(v, 0, DIM * sizeof(float));
    size_t pos = 0, s, e, n = strlen(text);
    while (rq_next_token(text, n, &pos, &s, &e)) {
        uint64_t h = 1469598103934665603ull;
        for (size_t i = s; i < e; i++) {
            h ^= (unsigned char)(text[i] | 0x20);
            h *= 1099511628211ull;
        }
        v[h % DIM] += (h >> 32) & 1 ? 1.0f : -1.0f;
    }
    v[0] += 0.01f; /* never a zero row */
}

static void fx_close(fx *f)
{
    retrieval_close(f->r);
    vindex_close(f->v);
    bm25_close(f->b);
    store_close(f->s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (f->dir[0] && system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", f->dir);
    memset(f, 0, sizeof(*f));
}

static bool fx_open(fx *f, char *err)
{
    memset(f, 0, sizeof(*f));
    qr_log_configure(QR_LOG_WARN, QR_LOG_TEXT, "index=error", err);
    snprintf(f->dir, sizeof(f->dir), "/tmp/quarry-retrieval-XXXXXX");
    if (!mkdtemp(f->dir))
        return false;
    retrieval_opts_default(&f->o);
    f->o.mode = RETRIEVAL_HYBRID; /* requests that name no mode search both lists here
                                   * (retrieval.mode=hybrid; auto would be bm25) */
    return store_open(f->dir, &f->s, err) == QR_OK && store_check_embedding(f->s, "toy", DIM, err) == QR_OK;
}

/* Adds a document whose chunks are the '|'-separated parts of text; acl is comma-separated. */
static bool put(fx *f, const char *id, const char *title, const char *uri, const char *type, const char *acl,
                const char *text, char *err)
{
    char buf[4096], aclbuf[512];
    snprintf(buf, sizeof(buf), "%s", text);
    snprintf(aclbuf, sizeof(aclbuf), "%s", acl);
    const char *principals[16];
    size_t np = 0;
    for (char *p = strtok(aclbuf, ","); p && np < 16; p = strtok(NULL, ","))
        principals[np++] = p;
    store_chunk chunks[16];
    float vecs[16 * DIM];
    size_t n = 0, start = 0, len = strlen(buf);
    for (size_t i = 0; i <= len; i++) {
        if (i == len || buf[i] == '|') {
            if (i < len)
                buf[i] = ' ';
            char part[4096];
            snprintf(part, sizeof(part), "%.*s", (int)(i - start), buf + start);
            embed(part, vecs + n * DIM);
            chunks[n] = (store_chunk){start, i, n % 2 ? "Guide > Details" : ""};
            n++;
            start = i + 1;
        }
    }
    char hash[65];
    snprintf(hash, sizeof(hash), "%064x", ++f->docs);
    store_document d = {.doc_id = id,
                        .title = title,
                        .uri = uri,
                        .content_type = type,
                        .acl = principals,
                        .nacl = np,
                        .content_hash = hash,
                        .text = buf,
                        .text_len = len};
    store_put_result res;
    return store_put(f->s, &d, chunks, n, vecs, DIM, &res, err) == QR_OK;
}

/* Opens (or brings up to date) the vector index and a retrieval handle with f->o. */
static bool fx_ready(fx *f, char *err)
{
    retrieval_close(f->r);
    f->r = NULL;
    if (!f->v) {
        vindex_opts vo;
        vindex_opts_default(&vo);
        if (index_sync_open(f->s, f->dir, &vo, false, &f->v, NULL, err))
            return false;
    }
    if (f->o.bm25_pruned && !f->b) {
        bm25_opts bo;
        bm25_opts_default(&bo);
        if (bm25_open(f->s, f->dir, &bo, false, &f->b, NULL, err))
            return false;
    }
    if (retrieval_open(f->s, f->v, &f->o, &f->r, err))
        return false;
    retrieval_set_bm25(f->r, f->b);
    return true;
}

/* The standard corpus of the search tests. */
static bool fx_corpus(fx *f, char *err)
{
    return fx_open(f, err) &&
           put(f, "wings", "Swept wings", "file:///docs/aero/wings.md", "text/markdown", "group:aero",
               "Lift of swept wings at high speed.|The wing stalls early at low speed.", err) &&
           put(f, "heat", "Heat transfer", "file:///docs/aero/heat.txt", "text/plain",
               "group:thermo,user:bob", "Heat transfer in boundary layers of a wing.", err) &&
           put(f, "budget", "Quarterly budget", "file:///docs/finance/budget.md", "text/markdown",
               "group:finance", "The budget for wing tunnel tests and travel.", err) &&
           put(f, "public", "Welcome", "https://intranet/welcome", "text/html", "public",
               "Welcome to the wind tunnel. Book the tunnel for wing tests.", err) &&
           put(f, "secret", "Board minutes", "file:///docs/board/minutes.txt", "text/plain", "",
               "The board discussed the wing programme and the budget.", err) &&
           fx_ready(f, err);
}

static retrieval_result *search(fx *f, const char *const *principals, size_t n, bool admin, const char *query,
                                retrieval_mode mode, size_t k, char *err)
{
    float vec[DIM];
    embed(query, vec);
    retrieval_caller c = {principals, n, admin};
    retrieval_request q = {.query = query, .vector = vec, .dim = DIM, .mode = mode, .k = k};
    retrieval_result *res = NULL;
    if (retrieval_search(f->r, &c, &q, &res, err))
        return NULL;
    return res;
}

static bool has_doc(const retrieval_result *r, const char *doc_id)
{
    for (size_t i = 0; i < r->nhits; i++)
        if (strcmp(r->hits[i].doc_id, doc_id) == 0)
            return true;
    return false;
}

/* ---- tokens and the query language --------------------------------------------------------- */

TEST(token_chars_match_fts5)
{
    /* ask the SQLite quarry links how unicode61 splits "q<cp>q" for every code point of the first
     * three planes, and compare with quarry's table */
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "CREATE VIRTUAL TABLE t USING fts5(x, tokenize = 'unicode61');"
                       "CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance');",
                       NULL, NULL, NULL) == SQLITE_OK);
    size_t mismatches = 0, checked = 0;
    uint32_t first_bad = 0;
    for (uint32_t base = 0x20; base < 0x30000; base += 0x4000) {
        sqlite3_exec(db, "BEGIN; DELETE FROM t;", NULL, NULL, NULL);
        sqlite3_stmt *ins = NULL, *q = NULL;
        sqlite3_prepare_v2(db, "INSERT INTO t(rowid, x) VALUES (?1, ?2)", -1, &ins, NULL);
        for (uint32_t cp = base; cp < base + 0x4000 && cp < 0x30000; cp++) {
            if (cp >= 0xd800 && cp <= 0xdfff)
                continue;
            char s[8] = "q";
            size_t n = 1;
            if (cp < 0x80) {
                s[n++] = (char)cp;
            } else if (cp < 0x800) {
                s[n++] = (char)(0xc0 | cp >> 6), s[n++] = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                s[n++] = (char)(0xe0 | cp >> 12), s[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                s[n++] = (char)(0x80 | (cp & 0x3f));
            } else {
                s[n++] = (char)(0xf0 | cp >> 18), s[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                s[n++] = (char)(0x80 | ((cp >> 6) & 0x3f)), s[n++] = (char)(0x80 | (cp & 0x3f));
            }
            s[n++] = 'q';
            sqlite3_bind_int64(ins, 1, cp);
            sqlite3_bind_text(ins, 2, s, (int)n, SQLITE_TRANSIENT);
            sqlite3_step(ins);
            sqlite3_reset(ins);
        }
        sqlite3_finalize(ins);
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        sqlite3_prepare_v2(db, "SELECT doc, count(*) FROM v GROUP BY doc", -1, &q, NULL);
        while (sqlite3_step(q) == SQLITE_ROW) {
            uint32_t cp = (uint32_t)sqlite3_column_int64(q, 0);
            bool fts_token = sqlite3_column_int(q, 1) == 1;
            checked++;
            if (fts_token != rq_token_char(cp) && !mismatches++)
                first_bad = cp;
        }
        sqlite3_finalize(q);
    }
    sqlite3_close(db);
    CHECK(checked > 190000);
    CHECK_MSG(mismatches == 0, "%zu code points disagree with FTS5 unicode61, first U+%04X", mismatches,
              (unsigned)first_bad);
}

static bool phrase_is(const rq_phrase *p, const char *a, const char *b)
{
    return p->ntokens == (b ? 2u : 1u) && strcmp(p->tokens[0], a) == 0 &&
           (!b || strcmp(p->tokens[1], b) == 0);
}

TEST(parse_words_phrases_exclusions)
{
    char err[QR_ERR_LEN];
    rq_stopwords *sw = NULL;
    CHECK_OK(rq_stopwords_new("default", &sw, err), err);
    qr_arena a;
    qr_arena_init(&a, 1 << 20);
    rq_query q;
    const char *t = "The Wings of WING-tip \"boundary layer\" -stall -\"low speed\" wings";
    CHECK_OK(rq_parse(t, strlen(t), sw, false, NULL, &a, &q, err), err);
    CHECK_INT(q.nterms, 4); /* the dropped; repeats kept: wings ... wings */
    CHECK_STR(q.terms[0], "wings");
    CHECK_STR(q.terms[1], "wing");
    CHECK_STR(q.terms[2], "tip");
    CHECK_STR(q.terms[3], "wings");
    CHECK_INT(q.nphrases, 1);
    CHECK(phrase_is(&q.phrases[0], "boundary", "layer"));
    CHECK_INT(q.nexcluded, 2);
    CHECK(phrase_is(&q.excluded[0], "stall", NULL));
    CHECK(phrase_is(&q.excluded[1], "low", "speed"));
    qr_buf b;
    qr_buf_init(&b, 1 << 16);
    CHECK_OK(rq_fts_rank(&q, &b), "rank");
    CHECK_STR(qr_buf_str(&b), "\"wings\" OR \"wing\" OR \"tip\" OR \"wings\" OR \"boundary layer\"");
    qr_buf_reset(&b);
    CHECK_OK(rq_fts_require(&q, &b), "require");
    CHECK_STR(qr_buf_str(&b), "\"boundary layer\"");
    qr_buf_reset(&b);
    CHECK_OK(rq_fts_exclude(&q, &b), "exclude");
    CHECK_STR(qr_buf_str(&b), "\"stall\" OR \"low speed\"");

    /* FTS5 operators, columns, prefixes and brackets are just text; an unclosed quote ends at the end */
    qr_arena_reset(&a);
    t = "title:wing* OR (NEAR(lift drag) AND ^stall) NOT {body} \"open phrase";
    CHECK_OK(rq_parse(t, strlen(t), sw, false, NULL, &a, &q, err), err);
    qr_buf_reset(&b);
    CHECK_OK(rq_fts_rank(&q, &b), "rank");
    CHECK_STR(qr_buf_str(&b),
              "\"title\" OR \"wing\" OR \"near\" OR \"lift\" OR \"drag\" OR \"stall\" OR \"body\" OR "
              "\"open phrase\"");
    /* a dash inside a word separates; at a word's start it excludes */
    qr_arena_reset(&a);
    t = "state-of-the-art -x";
    CHECK_OK(rq_parse(t, strlen(t), sw, false, NULL, &a, &q, err), err);
    CHECK_INT(q.nterms, 2); /* state, art ("of", "the" are stopwords) */
    CHECK_INT(q.nexcluded, 1);
    /* nothing but stopwords: they are searched after all */
    qr_arena_reset(&a);
    t = "to be or not to be";
    CHECK_OK(rq_parse(t, strlen(t), sw, false, NULL, &a, &q, err), err);
    CHECK_INT(q.nterms, 6);
    /* plain mode: quotes and dashes are punctuation */
    qr_arena_reset(&a);
    t = "the \"training\" phase -- not -excluded";
    CHECK_OK(rq_parse(t, strlen(t), sw, true, NULL, &a, &q, err), err);
    CHECK_INT(q.nphrases, 0);
    CHECK_INT(q.nexcluded, 0);
    CHECK_INT(q.nterms, 3); /* training phase excluded */
    /* nothing but punctuation: an empty query */
    qr_arena_reset(&a);
    t = "?!* \"\" -";
    CHECK_OK(rq_parse(t, strlen(t), sw, false, NULL, &a, &q, err), err);
    CHECK(q.nterms == 0 && q.nphrases == 0 && q.nexcluded == 0);
    /* non-ASCII words are tokens; typographic quotes are separators, as for FTS5 */
    qr_arena_reset(&a);
    t = "Grüße \xE2\x80\x9C"
        "déjà vu\xE2\x80\x9D 東京";
    CHECK_OK(rq_parse(t, strlen(t), sw, false, NULL, &a, &q, err), err);
    CHECK_INT(q.nterms, 4);
    CHECK_STR(q.terms[1], "déjà");
    qr_buf_release(&b);
    qr_arena_release(&a);
    rq_stopwords_free(sw);
}

TEST(parse_refuses_bad_input)
{
    char err[QR_ERR_LEN];
    qr_arena a;
    qr_arena_init(&a, 1 << 22);
    rq_query q;
    CHECK_INT(rq_parse("caf\xe9", 4, NULL, false, NULL, &a, &q, err), QR_EINVAL);
    CHECK(strstr(err, "UTF-8") != NULL);
    CHECK_INT(rq_parse("a\0b", 3, NULL, false, NULL, &a, &q, err), QR_EINVAL);
    char *big = malloc(RQ_TEXT_MAX + 2);
    memset(big, 'a', RQ_TEXT_MAX + 1);
    big[RQ_TEXT_MAX + 1] = '\0';
    CHECK_INT(rq_parse(big, RQ_TEXT_MAX + 1, NULL, false, NULL, &a, &q, err), QR_ELIMIT);
    CHECK_INT(rq_parse(big, RQ_TOKEN_MAX + 1, NULL, false, NULL, &a, &q, err), QR_ELIMIT); /* one long word */
    for (size_t i = 0; i < RQ_TEXT_MAX; i += 2)
        big[i] = 'a', big[i + 1] = ' ';
    CHECK_INT(rq_parse(big, RQ_TEXT_MAX, NULL, false, NULL, &a, &q, err), QR_ELIMIT); /* 4096 words */
    free(big);
    rq_stopwords *sw = NULL;
    CHECK_INT(rq_stopwords_new("default,two words", &sw, err), QR_EINVAL);
    CHECK(sw == NULL);
    CHECK_INT(rq_stopwords_new("a\"b", &sw, err), QR_EINVAL);
    CHECK_OK(rq_stopwords_new("none", &sw, err), err);
    CHECK(!rq_stopwords_has(sw, "the", 3));
    rq_stopwords_free(sw);
    CHECK_OK(rq_stopwords_new(" default , Quarry ", &sw, err), err);
    CHECK(rq_stopwords_has(sw, "the", 3) && rq_stopwords_has(sw, "quarry", 6) &&
          !rq_stopwords_has(sw, "wing", 4));
    rq_stopwords_free(sw);
    qr_arena_release(&a);
}

/* Whatever bytes a query holds, its expressions are quoted strings joined by operators of
 * quarry's own, and FTS5 accepts them. */
TEST(hostile_queries_never_reach_fts5_as_syntax)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_corpus(&f, err), "%s", err);
    static const char alphabet[] = "\"'()*:^-+{}[]NOTANDORNEAR \t\n;\\/,.%_wing";
    uint64_t state = 42;
    qr_buf rank, req, exc;
    qr_buf_init(&rank, 1 << 20);
    qr_buf_init(&req, 1 << 20);
    qr_buf_init(&exc, 1 << 20);
    for (int i = 0; i < 3000; i++) {
        char q[64];
        size_t n = 1 + (size_t)(i % 60);
        for (size_t j = 0; j < n; j++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            q[j] = alphabet[(state >> 33) % (sizeof(alphabet) - 1)];
        }
        q[n] = '\0';
        qr_buf_reset(&rank);
        qr_buf_reset(&req);
        qr_buf_reset(&exc);
        CHECK_OK(retrieval_query_expressions(f.r, q, false, &rank, &req, &exc, err), err);
        const qr_buf *all[] = {&rank, &req, &exc};
        for (int e = 0; e < 3; e++) {
            /* outside quotes only " OR " and " AND " may appear */
            const char *p = qr_buf_str(all[e]);
            bool inside = false;
            for (; *p; p++) {
                if (*p == '"') {
                    inside = !inside;
                } else if (!inside) {
                    bool op = strncmp(p, " OR ", 4) == 0 || strncmp(p, " AND ", 5) == 0;
                    CHECK_MSG(op, "query '%s' made expression '%s'", q, qr_buf_str(all[e]));
                    p += (strncmp(p, " OR ", 4) == 0 ? 4 : 5) - 1;
                }
            }
            CHECK(!inside);
        }
        const char *admin[] = {"public"};
        retrieval_result *res = search(&f, admin, 1, i % 2, q, RETRIEVAL_BM25, 5, err);
        CHECK_MSG(res != NULL, "query '%s': %s", q, err);
        retrieval_result_free(res);
    }
    qr_buf_release(&rank);
    qr_buf_release(&req);
    qr_buf_release(&exc);
    fx_close(&f);
}

/* ---- permissions and filters ------------------------------------------------------------------ */

TEST(every_mode_returns_only_permitted_chunks)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_corpus(&f, err), "%s", err);
    const char *aero[] = {"group:aero", "public", "user:alice"};
    const char *bob[] = {"public", "user:bob"};
    const char *nobody[] = {"user:nobody"};
    retrieval_mode modes[] = {RETRIEVAL_BM25, RETRIEVAL_VECTOR, RETRIEVAL_HYBRID};
    for (int m = 0; m < 3; m++) {
        retrieval_result *r = search(&f, aero, 3, false, "wing", modes[m], 50, err);
        CHECK_MSG(r != NULL, "%s", err);
        CHECK(has_doc(r, "wings") && has_doc(r, "public"));
        CHECK(!has_doc(r, "heat") && !has_doc(r, "budget") && !has_doc(r, "secret"));
        /* vectors rank every permitted chunk: k is reached when k are permitted */
        if (modes[m] != RETRIEVAL_BM25)
            CHECK_INT(r->nhits, 3); /* wings has 2 chunks, public 1 */
        retrieval_result_free(r);
        r = search(&f, bob, 2, false, "wing heat", modes[m], 50, err);
        CHECK(r && has_doc(r, "heat") && has_doc(r, "public") && !has_doc(r, "wings"));
        retrieval_result_free(r);
        r = search(&f, nobody, 1, false, "wing", modes[m], 50, err);
        CHECK(r && r->nhits == 0);
        retrieval_result_free(r);
        r = search(&f, NULL, 0, true, "wing", modes[m], 50, err); /* an administrator sees all */
        CHECK(r && has_doc(r, "secret") && has_doc(r, "budget"));
        retrieval_result_free(r);
    }
    /* principals compare byte for byte: "Group:aero" and "group:Aero" are other principals */
    const char *wrong_case[] = {"group:Aero"};
    retrieval_result *r = search(&f, wrong_case, 1, false, "wing", RETRIEVAL_HYBRID, 10, err);
    CHECK(r && r->nhits == 0);
    retrieval_result_free(r);
    const char *invalid[] = {"Group:aero"};
    CHECK(search(&f, invalid, 1, false, "wing", RETRIEVAL_BM25, 10, err) == NULL);
    CHECK(strstr(err, "invalid principal") != NULL);
    fx_close(&f);
}

TEST(acl_changes_and_deletes_take_effect_at_once)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_corpus(&f, err), "%s", err);
    const char *aero[] = {"group:aero"};
    /* the vector index is not told (it still holds the chunks): search must still trim */
    const char *none[] = {"group:finance"};
    CHECK_OK(store_set_acl(f.s, "wings", none, 1, err), err);
    CHECK_OK(store_delete(f.s, "public", err), err);
    const char *pub[] = {"public", "group:aero"};
    retrieval_mode modes[] = {RETRIEVAL_BM25, RETRIEVAL_VECTOR, RETRIEVAL_HYBRID};
    for (int m = 0; m < 3; m++) {
        retrieval_result *r = search(&f, aero, 1, false, "swept wings", modes[m], 10, err);
        CHECK_MSG(r && r->nhits == 0, "mode %d: %s", m, r ? "results" : err);
        retrieval_result_free(r);
        r = search(&f, pub, 2, false, "welcome tunnel", modes[m], 10, err);
        CHECK(r && !has_doc(r, "public"));
        retrieval_result_free(r);
        r = search(&f, NULL, 0, true, "welcome tunnel", modes[m], 10, err); /* admin: deleted is gone */
        CHECK(r && !has_doc(r, "public"));
        retrieval_result_free(r);
    }
    fx_close(&f);
}

/* ava may read 20 documents of 10 chunks (group:staff); ben alone 10 more of 10 chunks, of which
 * `secret` chunks say "kryptonite" three times (their vectors are the query's) and the others
 * hold ordinary words. Opens the fixture with the vector index asked for a fixed fetch (exact
 * scans only up to 8 permitted chunks). */
static bool hidden_corpus_with(fx *f, int secret, bool pruned, char *err)
{
    if (!fx_open(f, err))
        return false;
    f->o.bm25_pruned = pruned;
    f->o.exact_min = 8;
    f->o.exact_share = 0;
    f->o.candidates = 10; /* hybrid lists 10 deep: a fetch smaller than the index */
    for (int d = 0; d < 30; d++) {
        char id[16], text[2048] = "";
        bool ben = d >= 20;
        for (int c = 0; c < 10; c++) {
            int n = (d - 20) * 10 + c;
            if (ben && n < secret)
                snprintf(text + strlen(text), sizeof(text) - strlen(text),
                         "%skryptonite kryptonite kryptonite", c ? "|" : "");
            else
                snprintf(text + strlen(text), sizeof(text) - strlen(text),
                         "%s%s note %d of part %d about item %d", c ? "|" : "", ben ? "private" : "staff", d,
                         c, d * 10 + c);
        }
        snprintf(id, sizeof(id), "%s%d", ben ? "ben" : "doc", d);
        if (!put(f, id, "Notes", "", "text/plain", ben ? "user:ben" : "group:staff", text, err))
            return false;
    }
    return fx_ready(f, err);
}

static bool hidden_corpus(fx *f, int secret, char *err)
{
    return hidden_corpus_with(f, secret, true, err);
}

TEST(vector_work_does_not_depend_on_hidden_matches)
{
    /* issue #16: the vector index used to fetch more candidates until k permitted ones turned up,
     * so the work of ava's search grew with the chunks near her query that only ben may read */
    char err[QR_ERR_LEN];
    const char *ava[] = {"user:ava", "group:staff", "public"};
    int secrets[] = {0, 1, 3, 10, 100};
    for (int i = 0; i < 5; i++) {
        fx f;
        CHECK_MSG(hidden_corpus(&f, secrets[i], err), "%s", err);
        retrieval_mode modes[] = {RETRIEVAL_VECTOR, RETRIEVAL_HYBRID};
        for (int m = 0; m < 2; m++) {
            retrieval_result *r = search(&f, ava, 3, false, "kryptonite", modes[m], 5, err);
            CHECK_MSG(r != NULL, "%s", err);
            CHECK_INT(r->nhits, 5);
            for (size_t h = 0; h < r->nhits; h++)
                CHECK(strncmp(r->hits[h].doc_id, "doc", 3) == 0);
            CHECK_INT(r->permitted_chunks, 200);
            /* the index is asked once, for as many candidates as the permitted share (2/3) says,
             * whatever ben's chunks hold: the least n with n*p - 4*sqrt(n*p*(1-p)) >= depth
             * (depth k + 1 = 6: 23; the 10 hybrid candidates: 31), above 1.5 * depth / p */
            CHECK_INT(r->vector_fetched, modes[m] == RETRIEVAL_VECTOR ? 23 : 31);
            if (secrets[i] <= 10) {
                CHECK_MSG(!r->vector_exact && !r->vector_fallback, "%d secret chunks: exact %d fallback %d",
                          secrets[i], r->vector_exact, r->vector_fallback);
            } else {
                /* ben's chunks fill every fetched place: ava's own chunks are ranked exactly, and
                 * nothing else is scanned */
                CHECK(r->vector_exact && r->vector_fallback);
                CHECK_INT(r->permitted_listed, 200);
            }
            retrieval_result_free(r);
        }
        fx_close(&f);
    }
}

/* The same page, chunk for chunk and score for score, from a and b (the message names the case). */
static bool same_page(const retrieval_result *a, const retrieval_result *b, const char *what)
{
    bool same = a && b && a->nhits == b->nhits && a->vector_fetched == b->vector_fetched;
    for (size_t i = 0; same && i < a->nhits; i++)
        same = a->hits[i].chunk_id == b->hits[i].chunk_id && a->hits[i].score == b->hits[i].score;
    if (!same)
        printf("%s: %zu hits against %zu\n", what, a ? a->nhits : 0, b ? b->nhits : 0);
    return same;
}

TEST(vector_candidates_tested_by_the_bm25_index_as_by_the_store)
{
    /* the vector list tests its candidates (the fixed fetch's, and every list's liveness) through
     * the pruned BM25 index's rows and permission sets when it is attached, and in SQL when not:
     * the same pages, also after ACL changes and deletes the vector index has not been told of */
    char err[QR_ERR_LEN];
    fx a, b;
    CHECK_MSG(hidden_corpus_with(&a, 3, true, err), "%s", err);
    CHECK_MSG(hidden_corpus_with(&b, 3, false, err), "%s", err);
    CHECK(a.b != NULL && b.b == NULL);
    const char *ava[] = {"user:ava", "group:staff", "public"}, *ben[] = {"user:ben"};
    const char *queries[] = {"kryptonite", "staff note item", "private note part"};
    retrieval_mode modes[] = {RETRIEVAL_VECTOR, RETRIEVAL_HYBRID};
    size_t pages = 0;
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            /* ava loses doc3, doc4 goes, ben's ben21 becomes staff's: the vector index still
             * holds every chunk as it was */
            const char *none[] = {"group:nobody"}, *staff[] = {"group:staff"};
            fx *both[] = {&a, &b};
            for (int i = 0; i < 2; i++) {
                CHECK_OK(store_set_acl(both[i]->s, "doc3", none, 1, err), err);
                CHECK_OK(store_delete(both[i]->s, "doc4", err), err);
                CHECK_OK(store_set_acl(both[i]->s, "ben21", staff, 1, err), err);
            }
        }
        for (size_t qi = 0; qi < 3; qi++)
            for (int m = 0; m < 2; m++)
                for (int who = 0; who < 3; who++) {
                    const char *const *p = who == 0 ? ava : ben;
                    size_t np = who == 0 ? 3 : who == 1 ? 1 : 0;
                    retrieval_result *x = search(&a, p, np, who == 2, queries[qi], modes[m], 8, err);
                    retrieval_result *y = search(&b, p, np, who == 2, queries[qi], modes[m], 8, err);
                    char what[128];
                    snprintf(what, sizeof(what), "round %d query '%s' mode %d caller %d", round, queries[qi],
                             m, who);
                    CHECK_MSG(x && y, "%s: %s", what, err);
                    CHECK(same_page(x, y, what));
                    for (size_t h = 0; round == 1 && h < x->nhits; h++)
                        CHECK(strcmp(x->hits[h].doc_id, "doc4") != 0 &&
                              (who != 0 || strcmp(x->hits[h].doc_id, "doc3") != 0));
                    pages += x->nhits > 0;
                    retrieval_result_free(x);
                    retrieval_result_free(y);
                }
    }
    CHECK_MSG(pages >= 30, "test setup: only %zu pages had hits", pages);
    fx_close(&a);
    fx_close(&b);
}

TEST(mid_share_caller_is_served_by_the_ivf_scan_without_forbidden_chunks)
{
    /* 160 documents of 10 chunks; one in five readable by group:fifth (20%), the rest by
     * group:rest. An IVF index of 20 lists, 2 probed: a 20% caller is searched with the
     * permission test inside the scan, and must never see a group:rest chunk */
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_open(&f, err), "%s", err);
    uint64_t seed = 5;
    for (int d = 0; d < 160; d++) {
        char id[16], text[2048] = "";
        for (int c = 0; c < 10; c++) {
            snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s", c ? "|" : "");
            for (int w = 0; w < 8; w++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                snprintf(text + strlen(text), sizeof(text) - strlen(text), "%sw%u", w ? " " : "",
                         (unsigned)((seed >> 33) % 300));
            }
        }
        bool fifth = d % 5 == 0;
        snprintf(id, sizeof(id), "%s%d", fifth ? "fifth" : "rest", d);
        CHECK_MSG(put(&f, id, "Notes", "", "text/plain", fifth ? "group:fifth" : "group:rest", text, err),
                  "%s", err);
    }
    vindex_opts vo;
    vindex_opts_default(&vo);
    vo.type = "ivf_flat";
    vo.nlist = 20;
    vo.nprobe = 2;
    CHECK_OK(index_sync_open(f.s, f.dir, &vo, false, &f.v, NULL, err), err);
    f.o.exact_min = 0;
    f.o.exact_share = 0.01; /* 16 chunks: the 320 permitted ones are not scanned exactly */
    f.o.candidates = 20;
    CHECK_MSG(fx_ready(&f, err), "%s", err);
    const char *caller[] = {"group:fifth"};
    retrieval_mode modes[] = {RETRIEVAL_VECTOR, RETRIEVAL_HYBRID};
    size_t served = 0;
    for (int qi = 0; qi < 20; qi++) {
        char query[64];
        snprintf(query, sizeof(query), "w%d w%d w%d", qi * 7 % 300, qi * 13 % 300, qi * 29 % 300);
        for (int m = 0; m < 2; m++) {
            retrieval_result *r = search(&f, caller, 1, false, query, modes[m], 10, err);
            CHECK_MSG(r != NULL, "%s", err);
            CHECK_INT(r->nhits, 10);
            CHECK_MSG(r->vector_scanned && !r->vector_exact && r->vector_fetched == 0,
                      "query %d mode %d: scanned %d exact %d fetched %zu", qi, m, r->vector_scanned,
                      r->vector_exact, r->vector_fetched);
            CHECK_INT(r->permitted_listed, 320);
            for (size_t h = 0; h < r->nhits; h++)
                CHECK_MSG(strncmp(r->hits[h].doc_id, "fifth", 5) == 0, "query %d: %s returned", qi,
                          r->hits[h].doc_id);
            served += r->vector_scanned;
            retrieval_result_free(r);
        }
    }
    CHECK_INT(served, 40);
    fx_close(&f);
}

TEST(permitted_list_follows_writes_without_listing_again)
{
    /* a restricted caller's permitted list is kept by the handle; after writes it is brought up
     * to date through the store's changes (store_filter_changes) and must equal a new listing */
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_open(&f, err), "%s", err);
    uint64_t seed = 11;
    for (int d = 0; d < 40; d++) {
        char id[16], text[512] = "";
        for (int w = 0; w < 8; w++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            snprintf(text + strlen(text), sizeof(text) - strlen(text), "%sw%u", w ? " " : "",
                     (unsigned)((seed >> 33) % 200));
        }
        bool team = d % 4 == 0;
        snprintf(id, sizeof(id), "%s%d", team ? "team" : "other", d);
        CHECK_MSG(put(&f, id, "Notes", "", "text/plain", team ? "group:team" : "group:other", text, err),
                  "%s", err);
    }
    f.o.exact_min = 1000; /* every restricted caller's chunks are listed and scanned exactly */
    CHECK_MSG(fx_ready(&f, err), "%s", err);
    const char *caller[] = {"group:team"};
    const char *query = "kumquat lychee durian";
    retrieval_result *r = search(&f, caller, 1, false, query, RETRIEVAL_VECTOR, 20, err);
    CHECK_MSG(r != NULL, "%s", err);
    CHECK(r->vector_exact);
    CHECK_INT(r->permitted_listed, 10);
    CHECK_INT(retrieval_list_updates(f.r), 0);
    retrieval_result_free(r);

    /* a new team document that is the query itself, one revoked, one deleted, one rewritten
     * (new chunk ids), and an outsider's document that also matches the query */
    const char *other[] = {"group:other"};
    CHECK_MSG(put(&f, "team-new", "Notes", "", "text/plain", "group:team", query, err), "%s", err);
    CHECK_OK(store_set_acl(f.s, "team0", other, 1, err), err);
    CHECK_OK(store_delete(f.s, "team4", err), err);
    CHECK_MSG(put(&f, "team8", "Notes", "", "text/plain", "group:team", "w1 w2 w3|w4 w5", err), "%s", err);
    CHECK_MSG(put(&f, "other-new", "Notes", "", "text/plain", "group:other", query, err), "%s", err);
    vindex_opts vo;
    vindex_opts_default(&vo);
    CHECK_OK(index_sync(f.s, f.v, &vo, false, NULL, err), err);

    r = search(&f, caller, 1, false, query, RETRIEVAL_VECTOR, 20, err);
    CHECK_MSG(r != NULL, "%s", err);
    CHECK_INT(retrieval_list_updates(f.r), 1);
    CHECK_INT(r->permitted_listed, 10); /* 10 - team0 - team4 + team-new + one more chunk of team8 */
    CHECK_INT(r->nhits, 10);            /* every permitted chunk: k is 20 */
    CHECK(r->nhits && strcmp(r->hits[0].doc_id, "team-new") == 0);
    for (size_t h = 0; h < r->nhits; h++)
        CHECK_MSG(strncmp(r->hits[h].doc_id, "team", 4) == 0 && strcmp(r->hits[h].doc_id, "team0") != 0 &&
                      strcmp(r->hits[h].doc_id, "team4") != 0,
                  "%s returned", r->hits[h].doc_id);
    /* the same page as a handle that lists the permitted chunks anew */
    CHECK_MSG(fx_ready(&f, err), "%s", err);
    retrieval_result *fresh = search(&f, caller, 1, false, query, RETRIEVAL_VECTOR, 20, err);
    CHECK_MSG(fresh != NULL, "%s", err);
    CHECK_INT(retrieval_list_updates(f.r), 0);
    CHECK_INT(fresh->permitted_listed, r->permitted_listed);
    CHECK_INT(fresh->nhits, r->nhits);
    for (size_t h = 0; h < r->nhits && h < fresh->nhits; h++)
        CHECK_INT(fresh->hits[h].chunk_id, r->hits[h].chunk_id);
    retrieval_result_free(fresh);
    retrieval_result_free(r);

    /* once the tombstones it would need are pruned, the list is made again */
    int64_t now = 0;
    CHECK_OK(store_change_counter(f.s, &now, err), err);
    CHECK_OK(store_delete(f.s, "team12", err), err);
    CHECK_OK(index_sync(f.s, f.v, &vo, false, NULL, err), err);
    CHECK_OK(store_prune_tombstones(f.s, now + 1, err), err);
    r = search(&f, caller, 1, false, query, RETRIEVAL_VECTOR, 20, err);
    CHECK_MSG(r != NULL, "%s", err);
    CHECK_INT(retrieval_list_updates(f.r), 0);
    CHECK_INT(r->permitted_listed, 9);
    for (size_t h = 0; h < r->nhits; h++)
        CHECK(strcmp(r->hits[h].doc_id, "team12") != 0);
    retrieval_result_free(r);
    fx_close(&f);
}

TEST(hybrid_lists_at_once_give_the_same_page)
{
    /* retrieval.parallel: the vector list on a second thread and store handle, beside BM25; the
     * pages must equal those of the lists run one after the other, for every kind of caller */
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_open(&f, err), "%s", err);
    uint64_t seed = 23;
    for (int d = 0; d < 60; d++) {
        char id[16], text[1024] = "";
        for (int c = 0; c < 3; c++) {
            snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s", c ? "|" : "");
            for (int w = 0; w < 8; w++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                snprintf(text + strlen(text), sizeof(text) - strlen(text), "%sw%u", w ? " " : "",
                         (unsigned)((seed >> 33) % 120));
            }
        }
        snprintf(id, sizeof(id), "doc%d", d);
        CHECK_MSG(put(&f, id, "Notes", "", "text/plain", d % 10 == 0 ? "group:few" : "group:many", text, err),
                  "%s", err);
    }
    f.o.exact_min = 10; /* group:few (18 chunks) is listed; group:many (162) takes the fixed fetch */
    f.o.exact_share = 0;
    f.o.candidates = 20;
    const char *few[] = {"group:few"}, *many[] = {"group:many"}, *both[] = {"group:few", "group:many"};
    struct {
        const char *const *p;
        size_t n;
        bool admin;
    } callers[] = {{NULL, 0, true}, {few, 1, false}, {many, 1, false}, {both, 2, false}};
    retrieval_result *pages[2][4][6] = {{{0}}};
    for (int par = 0; par < 2; par++) {
        f.o.parallel = par == 1;
        CHECK_MSG(fx_ready(&f, err), "%s", err);
        for (int c = 0; c < 4; c++)
            for (int q = 0; q < 6; q++) {
                char query[64];
                snprintf(query, sizeof(query), "w%d w%d w%d", q * 7 % 120, q * 13 % 120, q * 29 % 120);
                pages[par][c][q] = search(&f, callers[c].p, callers[c].n, callers[c].admin, query,
                                          RETRIEVAL_HYBRID, 10, err);
                CHECK_MSG(pages[par][c][q] != NULL, "%s", err);
            }
    }
    for (int c = 0; c < 4; c++)
        for (int q = 0; q < 6; q++) {
            retrieval_result *a = pages[0][c][q], *b = pages[1][c][q];
            if (!a || !b)
                continue;
            CHECK_INT(a->mode, RETRIEVAL_HYBRID);
            CHECK_INT(b->nhits, a->nhits);
            CHECK(a->nhits > 0);
            for (size_t h = 0; h < a->nhits && h < b->nhits; h++) {
                CHECK_MSG(a->hits[h].chunk_id == b->hits[h].chunk_id, "caller %d query %d hit %zu", c, q, h);
                CHECK(a->hits[h].score == b->hits[h].score);
                CHECK_INT(b->hits[h].vector_rank, a->hits[h].vector_rank);
            }
            CHECK_INT(b->vector_exact, a->vector_exact);
            CHECK_INT(b->vector_fetched, a->vector_fetched);
            CHECK(b->vector_ns > 0 && b->bm25_ns > 0);
            retrieval_result_free(a);
            retrieval_result_free(b);
        }
    fx_close(&f);
}

static retrieval_result *filtered(fx *f, retrieval_mode mode, const char *query, const char *const *docs,
                                  size_t ndocs, const char *prefix, const char *type, int64_t after,
                                  char *err)
{
    float vec[DIM];
    embed(query, vec);
    retrieval_caller c = {NULL, 0, true};
    retrieval_request q = {.query = query,
                           .vector = vec,
                           .dim = DIM,
                           .mode = mode,
                           .k = 20,
                           .doc_ids = docs,
                           .ndoc_ids = ndocs,
                           .source_prefix = prefix,
                           .content_type = type,
                           .updated_after_ms = after};
    retrieval_result *res = NULL;
    return retrieval_search(f->r, &c, &q, &res, err) ? NULL : res;
}

TEST(metadata_filters_apply_on_every_path)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_corpus(&f, err), "%s", err);
    retrieval_mode modes[] = {RETRIEVAL_BM25, RETRIEVAL_VECTOR, RETRIEVAL_HYBRID};
    for (int m = 0; m < 3; m++) {
        const char *docs[] = {"heat", "budget"};
        retrieval_result *r = filtered(&f, modes[m], "wing", docs, 2, NULL, NULL, 0, err);
        CHECK_MSG(r, "%s", err);
        CHECK(r->nhits == 2 && has_doc(r, "heat") && has_doc(r, "budget"));
        retrieval_result_free(r);
        r = filtered(&f, modes[m], "wing", NULL, 0, "file:///docs/aero/", NULL, 0, err);
        CHECK(r && r->nhits == 3 && has_doc(r, "wings") && has_doc(r, "heat"));
        retrieval_result_free(r);
        r = filtered(&f, modes[m], "wing", NULL, 0, NULL, "text/markdown", 0, err);
        CHECK(r && r->nhits == 3 && has_doc(r, "wings") && has_doc(r, "budget"));
        retrieval_result_free(r);
        r = filtered(&f, modes[m], "wing", NULL, 0, "file:///docs/", "text/plain", 0, err);
        CHECK(r && r->nhits == 2 && has_doc(r, "heat") && has_doc(r, "secret"));
        retrieval_result_free(r);
    }
    /* updated after: only documents changed since */
    int64_t before = qr_wall_ms();
    usleep(5000);
    const char *acl[] = {"group:thermo"};
    CHECK_OK(store_set_acl(f.s, "budget", acl, 1, err), err);
    for (int m = 0; m < 3; m++) {
        retrieval_result *r = filtered(&f, modes[m], "wing", NULL, 0, NULL, NULL, before, err);
        CHECK(r && r->nhits == 1 && has_doc(r, "budget"));
        retrieval_result_free(r);
    }
    fx_close(&f);
}

TEST(phrases_are_required_and_exclusions_excluded)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_corpus(&f, err), "%s", err);
    retrieval_mode modes[] = {RETRIEVAL_BM25, RETRIEVAL_VECTOR, RETRIEVAL_HYBRID};
    for (int m = 0; m < 3; m++) {
        retrieval_result *r = search(&f, NULL, 0, true, "\"wind tunnel\" wing", modes[m], 10, err);
        CHECK_MSG(r && r->nhits == 1 && has_doc(r, "public"), "mode %d", m);
        retrieval_result_free(r);
        r = search(&f, NULL, 0, true, "wing -budget", modes[m], 10, err);
        CHECK(r && !has_doc(r, "budget") && !has_doc(r, "secret") && has_doc(r, "wings"));
        retrieval_result_free(r);
        /* an exclusion matches stems: -wings excludes "wing" too */
        r = search(&f, NULL, 0, true, "tunnel -wings", modes[m], 10, err);
        for (size_t i = 0; r && i < r->nhits; i++)
            CHECK(strstr(r->hits[i].snippet, "wing") == NULL);
        retrieval_result_free(r);
    }
    /* plain mode: the same text has no syntax */
    float vec[DIM];
    embed("wing -budget", vec);
    retrieval_caller c = {NULL, 0, true};
    retrieval_request q = {.query = "wing -budget", .plain = true, .mode = RETRIEVAL_BM25, .k = 10};
    retrieval_result *r = NULL;
    CHECK_OK(retrieval_search(f.r, &c, &q, &r, err), err);
    CHECK(has_doc(r, "budget"));
    retrieval_result_free(r);
    fx_close(&f);
}

/* ---- ranking, pages, snippets ---------------------------------------------------------------- */

TEST(per_document_limit_and_pages)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_open(&f, err), "%s", err);
    /* a document with many matching chunks and others with one */
    char text[4096] = "";
    for (int i = 0; i < 12; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "%sstall stall stall number %d",
                 i ? "|" : "", i);
    CHECK_MSG(put(&f, "many", "Stall", "", "text/plain", "public", text, err), "%s", err);
    for (int i = 0; i < 9; i++) {
        char id[16], body[64];
        snprintf(id, sizeof(id), "one%d", i);
        snprintf(body, sizeof(body), "a stall at angle %d and more words here", i);
        CHECK_MSG(put(&f, id, "", "", "text/plain", "public", body, err), "%s", err);
    }
    CHECK_MSG(fx_ready(&f, err), "%s", err);
    const char *pub[] = {"public"};
    retrieval_mode modes[] = {RETRIEVAL_BM25, RETRIEVAL_VECTOR, RETRIEVAL_HYBRID};
    for (int m = 0; m < 3; m++) {
        float vec[DIM];
        embed("stall", vec);
        retrieval_caller c = {pub, 1, false};
        retrieval_request q = {
            .query = "stall", .vector = vec, .dim = DIM, .mode = modes[m], .k = 5, .max_per_doc = 2};
        retrieval_result *r = NULL;
        CHECK_OK(retrieval_search(f.r, &c, &q, &r, err), err);
        CHECK_INT(r->nhits, 5);
        size_t from_many = 0;
        for (size_t i = 0; i < r->nhits; i++)
            from_many += strcmp(r->hits[i].doc_id, "many") == 0;
        CHECK(from_many <= 2);
        retrieval_result_free(r);

        /* pages of 4 concatenate to the one-page ranking of 21 (no limit per document) */
        q.max_per_doc = SIZE_MAX;
        q.k = 21;
        retrieval_result *all = NULL;
        CHECK_OK(retrieval_search(f.r, &c, &q, &all, err), err);
        CHECK(all->next_cursor == NULL);
        q.k = 4;
        size_t seen = 0;
        char cursor[64] = "";
        for (int page = 0; page < 10; page++) {
            q.cursor = page ? cursor : NULL;
            CHECK_OK(retrieval_search(f.r, &c, &q, &r, err), err);
            for (size_t i = 0; i < r->nhits; i++, seen++)
                CHECK_INT(r->hits[i].chunk_id, all->hits[seen].chunk_id);
            bool last = r->next_cursor == NULL;
            if (!last)
                snprintf(cursor, sizeof(cursor), "%s", r->next_cursor);
            retrieval_result_free(r);
            if (last)
                break;
        }
        CHECK_INT(seen, all->nhits);
        retrieval_result_free(all);
        /* a cursor belongs to its query */
        q.query = "angle";
        q.cursor = cursor;
        CHECK_INT(retrieval_search(f.r, &c, &q, &r, err), QR_EINVAL);
        CHECK(strstr(err, "another query") != NULL);
        q.cursor = "c1.4.zzzz";
        CHECK_INT(retrieval_search(f.r, &c, &q, &r, err), QR_EINVAL);
    }
    fx_close(&f);
}

TEST(snippets_highlight_what_fts5_matched)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_open(&f, err), "%s", err);
    const char *text =
        "Preface words here. Swept wings stall early; the winged aircraft and a wing tip vortex "
        "were measured in the tunnel with care and patience over many long days.";
    CHECK_MSG(put(&f, "d", "T", "", "text/plain", "public", text, err), "%s", err);
    f.o.snippet_tokens = 8;
    f.o.snippet_open = "[";
    f.o.snippet_close = "]";
    CHECK_MSG(fx_ready(&f, err), "%s", err);
    retrieval_result *r = search(&f, NULL, 0, true, "wing \"tip vortex\"", RETRIEVAL_BM25, 1, err);
    CHECK_MSG(r && r->nhits == 1, "%s", err);
    const retrieval_hit *h = &r->hits[0];
    /* the 8 words with the most matches; stems: winged and wing match "wing"; adjacent matches
     * share one pair of markers */
    CHECK_STR(h->snippet, "the [winged] aircraft and a [wing tip vortex]");
    /* the offsets point at the snippet's text in the document */
    CHECK_INT(h->end - h->start, strlen("the winged aircraft and a wing tip vortex"));
    CHECK(strncmp(text + h->start, "the winged", 10) == 0);
    CHECK_INT(h->chunk_start, 0);
    CHECK_INT(h->chunk_end, strlen(text));
    retrieval_result_free(r);
    /* a vector hit without a matching word: the chunk's first words, nothing marked */
    r = search(&f, NULL, 0, true, "zzz", RETRIEVAL_VECTOR, 1, err);
    CHECK(r && r->nhits == 1);
    CHECK_STR(r->hits[0].snippet, "Preface words here. Swept wings stall early; the");
    retrieval_result_free(r);
    fx_close(&f);
}

TEST(result_json_is_the_design_contract)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_corpus(&f, err), "%s", err);
    retrieval_result *r = search(&f, NULL, 0, true, "wing \"swept wings\"", RETRIEVAL_HYBRID, 1, err);
    CHECK_MSG(r && r->nhits == 1, "%s", err);
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_OK(retrieval_result_json(r, &out), "json");
    json_error_t jerr;
    json_t *j = json_loads(qr_buf_str(&out), 0, &jerr);
    CHECK_MSG(j != NULL, "%s: %s", jerr.text, qr_buf_str(&out));
    CHECK_STR(json_string_value(json_object_get(j, "mode")), "hybrid");
    CHECK(json_is_string(json_object_get(j, "next_cursor")));
    json_t *results = json_object_get(j, "results");
    CHECK(json_is_array(results) && json_array_size(results) == 1);
    json_t *o = json_array_get(results, 0);
    static const char *keys[] = {"chunk_id", "doc_id",  "title", "uri", "headings",
                                 "score",    "snippet", "start", "end"};
    CHECK_INT(json_object_size(o), 9);
    for (size_t i = 0; i < 9; i++)
        CHECK_MSG(json_object_get(o, keys[i]) != NULL, "missing %s", keys[i]);
    CHECK_STR(json_string_value(json_object_get(o, "doc_id")), "wings");
    CHECK(json_is_integer(json_object_get(o, "chunk_id")) && json_is_real(json_object_get(o, "score")));
    CHECK(strstr(json_string_value(json_object_get(o, "snippet")), "<mark>swept wings</mark>") != NULL);
    json_decref(j);
    qr_buf_release(&out);
    retrieval_result_free(r);
    fx_close(&f);
}

TEST(fusion_follows_its_formulas)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_corpus(&f, err), "%s", err);
    for (int weighted = 0; weighted < 2; weighted++) {
        f.o.fusion = weighted ? RETRIEVAL_FUSION_WEIGHTED : RETRIEVAL_FUSION_RRF;
        f.o.vector_weight = 0.3;
        CHECK_MSG(fx_ready(&f, err), "%s", err);
        retrieval_result *b = search(&f, NULL, 0, true, "wing speed", RETRIEVAL_BM25, 20, err);
        retrieval_result *v = search(&f, NULL, 0, true, "wing speed", RETRIEVAL_VECTOR, 20, err);
        retrieval_result *h = search(&f, NULL, 0, true, "wing speed", RETRIEVAL_HYBRID, 20, err);
        CHECK_MSG(b && v && h, "%s", err);
        CHECK(h->nhits >= b->nhits && h->nhits >= 2);
        for (size_t i = 0; i < h->nhits; i++) {
            const retrieval_hit *x = &h->hits[i];
            double expect = 0;
            if (x->bm25_rank) {
                CHECK_INT(b->hits[x->bm25_rank - 1].chunk_id, x->chunk_id);
                expect +=
                    weighted ? b->hits[x->bm25_rank - 1].score / b->hits[0].score : 1.0 / (60 + x->bm25_rank);
            }
            if (x->vector_rank) {
                CHECK_INT(v->hits[x->vector_rank - 1].chunk_id, x->chunk_id);
                expect += 0.3 * (weighted ? v->hits[x->vector_rank - 1].score / v->hits[0].score
                                          : 1.0 / (60 + x->vector_rank));
            }
            CHECK_MSG(fabs(x->score - expect) < 1e-12, "hit %zu: %.17g != %.17g", i, x->score, expect);
            if (i)
                CHECK(h->hits[i - 1].score > x->score ||
                      (h->hits[i - 1].score == x->score && h->hits[i - 1].chunk_id < x->chunk_id));
        }
        retrieval_result_free(b);
        retrieval_result_free(v);
        retrieval_result_free(h);
    }
    fx_close(&f);
}

TEST(bad_requests_are_refused)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_corpus(&f, err), "%s", err);
    float vec[DIM];
    embed("wing", vec);
    retrieval_caller c = {NULL, 0, true};
    retrieval_result *r = NULL;
    retrieval_request q = {.query = "wing", .vector = vec, .dim = DIM, .k = 0};
    CHECK_INT(retrieval_search(f.r, &c, &q, &r, err), QR_EINVAL);
    q.k = RETRIEVAL_K_MAX + 1;
    CHECK_INT(retrieval_search(f.r, &c, &q, &r, err), QR_EINVAL);
    q.k = 5;
    q.dim = DIM - 1;
    CHECK_INT(retrieval_search(f.r, &c, &q, &r, err), QR_EINVAL);
    CHECK(strstr(err, "dimension") != NULL);
    q.dim = DIM;
    q.mode = RETRIEVAL_VECTOR;
    q.vector = NULL;
    CHECK_INT(retrieval_search(f.r, &c, &q, &r, err), QR_EINVAL);
    q.vector = vec;
    q.cursor = "c1.99999.0123456789abcdef";
    CHECK(retrieval_search(f.r, &c, &q, &r, err) != QR_OK);
    q.cursor = NULL;
    q.query = "caf\xe9";
    CHECK_INT(retrieval_search(f.r, &c, &q, &r, err), QR_EINVAL);
    CHECK(r == NULL);
    /* a hybrid search without a vector runs BM25 and says so; a query of punctuation runs vectors */
    q.query = "wing";
    q.mode = RETRIEVAL_HYBRID;
    q.vector = NULL;
    CHECK_OK(retrieval_search(f.r, &c, &q, &r, err), err);
    CHECK_INT(r->mode, RETRIEVAL_BM25);
    retrieval_result_free(r);
    q.vector = vec;
    q.query = "?!";
    CHECK_OK(retrieval_search(f.r, &c, &q, &r, err), err);
    CHECK_INT(r->mode, RETRIEVAL_VECTOR);
    CHECK_INT(r->nhits, 5);
    retrieval_result_free(r);
    fx_close(&f);
}

/* ---- what a query may cost ------------------------------------------------------------------- */

/* "w0 w1 ... w(n-1)" with a prefix before each word ("" or "-"), optionally quoted as one phrase. */
static char *words(size_t n, const char *prefix, bool quoted)
{
    char *q = malloc(n * 16 + 8);
    size_t len = 0;
    if (quoted)
        q[len++] = '"';
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(q + len, "%s%sw%zu", i ? " " : "", prefix, i);
    if (quoted)
        q[len++] = '"';
    q[len] = '\0';
    return q;
}

TEST(query_limits_are_refused_naming_their_key)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_corpus(&f, err), "%s", err);
    retrieval_caller c = {NULL, 0, true};
    retrieval_result *r = NULL;
    struct {
        size_t n;
        const char *prefix;
        bool quoted, plain;
        const char *key; /* NULL: within the limits */
    } cases[] = {
        {255, "", false, false, NULL}, /* and "wing": 256 */
        {256, "", false, false, "retrieval.max_terms"},
        {256, "", false, true, "retrieval.max_terms"}, /* a pasted question too */
        {32, "", true, false, NULL},
        {33, "", true, false, "retrieval.max_phrase_terms"},
        {32, "-", false, false, NULL},
        {33, "-", false, false, "retrieval.max_exclusions"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text = words(cases[i].n, cases[i].prefix, cases[i].quoted);
        char *query = malloc(strlen(text) + 8);
        sprintf(query, "wing %s", text); /* one word that matches, so that a search has results */
        retrieval_request q = {.query = query, .plain = cases[i].plain, .mode = RETRIEVAL_BM25, .k = 5};
        err[0] = '\0';
        qr_status st = retrieval_search(f.r, &c, &q, &r, err);
        bool refused = cases[i].key != NULL;
        free(text);
        free(query);
        if (!refused) {
            CHECK_MSG(st == QR_OK, "case %zu: %s", i, err);
            retrieval_result_free(r);
            continue;
        }
        CHECK_MSG(st == QR_EINVAL && r == NULL, "case %zu: status %d", i, (int)st);
        CHECK_MSG(strstr(err, cases[i].key) != NULL, "case %zu: %s", i, err);
    }
    /* an excluded phrase is a phrase too; the limits come from the options */
    retrieval_request q = {.query = "wing -\"a b c d\"", .mode = RETRIEVAL_BM25, .k = 5};
    CHECK_OK(retrieval_search(f.r, &c, &q, &r, err), err);
    retrieval_result_free(r);
    f.o.max_phrase_terms = 3;
    f.o.max_terms = 2;
    CHECK_MSG(fx_ready(&f, err), "%s", err);
    CHECK_INT(retrieval_search(f.r, &c, &q, &r, err), QR_EINVAL);
    CHECK(strstr(err, "excluded phrase") && strstr(err, "retrieval.max_phrase_terms (3)"));
    q.query = "wing tunnel budget";
    CHECK_INT(retrieval_search(f.r, &c, &q, &r, err), QR_EINVAL);
    CHECK(strstr(err, "searches 3 words") && strstr(err, "retrieval.max_terms (2)"));
    /* stopwords are dropped before counting */
    q.query = "the wing of the tunnel";
    CHECK_OK(retrieval_search(f.r, &c, &q, &r, err), err);
    retrieval_result_free(r);
    fx_close(&f);
}

/* A test hook that holds a search until its token fails (deadline or cancellation), at most 10 s,
 * or cancels it itself; counts the searches it saw. */
typedef struct {
    bool cancel; /* cancel the token instead of waiting */
    int seen;
    qr_status after; /* the token's status when the hook returned */
} hold;

static void hold_hook(void *ctx, const retrieval_request *req, qr_cancel *cancel)
{
    (void)req;
    hold *h = ctx;
    h->seen++;
    if (h->cancel)
        qr_cancel_cancel(cancel);
    for (int i = 0; i < 1000 && qr_cancel_check(cancel, NULL) == QR_OK; i++)
        usleep(10000);
    h->after = qr_cancel_check(cancel, NULL);
}

TEST(searches_stop_at_their_deadline_or_when_cancelled)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_corpus(&f, err), "%s", err);
    f.o.timeout_ms = 300; /* long enough for the last, unhooked search on a loaded machine under ASan */
    CHECK_MSG(fx_ready(&f, err), "%s", err);
    const char *aero[] = {"group:aero", "public"};
    retrieval_caller c = {aero, 2, false};
    float vec[DIM];
    embed("wing", vec);
    retrieval_result *r = NULL;
    hold h = {0};
    retrieval_test_set_hook(hold_hook, &h);
    for (retrieval_mode m = RETRIEVAL_HYBRID; m <= RETRIEVAL_VECTOR; m++) {
        /* no token of the caller's: retrieval.timeout_ms from the start of the search */
        retrieval_request q = {.query = "wing \"swept wings\"", .vector = vec, .dim = DIM, .mode = m, .k = 5};
        h.seen = 0;
        CHECK_INT(retrieval_search(f.r, &c, &q, &r, err), QR_ETIMEOUT);
        CHECK(r == NULL && h.seen == 1 && h.after == QR_ETIMEOUT);
        CHECK_MSG(strstr(err, "deadline of 300 ms") && strstr(err, "retrieval.timeout_ms"), "%s", err);
        /* the caller's token: its flag */
        qr_cancel tok;
        qr_cancel_init(&tok);
        q.cancel = &tok;
        h.cancel = true;
        CHECK_INT(retrieval_search(f.r, &c, &q, &r, err), QR_ECANCELED);
        CHECK(r == NULL && h.after == QR_ECANCELED && strstr(err, "cancelled"));
        h.cancel = false;
    }
    /* the handle stays usable: no hook, the default deadline */
    retrieval_test_set_hook(NULL, NULL);
    retrieval_request q = {.query = "wing", .vector = vec, .dim = DIM, .k = 5};
    CHECK_OK(retrieval_search(f.r, &c, &q, &r, err), err);
    CHECK(r->nhits > 0);
    retrieval_result_free(r);
    fx_close(&f);
}

/* A probe that cancels its token at its stop-th call (every check asks it: interval 0). */
typedef struct {
    int calls, stop;
} probe_count;

static bool probe_at(void *ctx)
{
    probe_count *p = ctx;
    return ++p->calls >= p->stop;
}

TEST(store_and_bm25_loops_check_the_token)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_open(&f, err), "%s", err);
    CHECK_OK(store_batch_begin(f.s, err), err);
    for (int i = 0; i < 600; i++) {
        char id[16], body[96];
        snprintf(id, sizeof(id), "d%d", i);
        snprintf(body, sizeof(body), "wing number %d of the tunnel %s", i, i % 2 ? "tests" : "travel");
        CHECK_MSG(put(&f, id, "Wings", "", "text/plain", "public", body, err), "%s", err);
    }
    CHECK_OK(store_batch_commit(f.s, err), err);
    CHECK_MSG(fx_ready(&f, err), "%s", err);
    double w[3] = {2, 1, 1};
    store_filter filt = {.all_documents = true};
    store_hit hits[10];
    size_t n = 99;

    /* an expired deadline stops a statement before it returns a row */
    qr_cancel late;
    qr_cancel_init(&late);
    qr_cancel_set_deadline(&late, qr_now_ns() - 2000000, 1);
    store_set_cancel(f.s, &late);
    CHECK_INT(store_search_bm25(f.s, "\"wing\"", w, &filt, 0, 10, hits, &n, err), QR_ETIMEOUT);
    CHECK(n == 0 && strstr(err, "deadline of 1 ms"));
    /* a cancellation while FTS5 walks its 600 matches: the progress handler saw it mid-statement */
    probe_count pc = {0, 3};
    qr_cancel tok;
    qr_cancel_init(&tok);
    qr_cancel_set_probe(&tok, probe_at, &pc, 0);
    store_set_cancel(f.s, &tok);
    CHECK_INT(store_search_bm25(f.s, "\"wing\" OR \"tunnel\"", w, &filt, 0, 10, hits, &n, err), QR_ECANCELED);
    CHECK_INT(pc.calls, 3);
    /* without a token the handle works as before */
    store_set_cancel(f.s, NULL);
    CHECK_OK(store_search_bm25(f.s, "\"wing\"", w, &filt, 0, 10, hits, &n, err), err);
    CHECK_INT(n, 10);

    /* the pruned index: checked before anything, then every few hundred candidates */
    const char *terms[] = {"wing"};
    CHECK_INT(bm25_search(f.b, f.s, terms, 1, w, NULL, 0, true, 0, 10, hits, &n, &late, err), QR_ETIMEOUT);
    CHECK_INT(n, 0);
    pc = (probe_count){0, 3};
    qr_cancel_init(&tok);
    qr_cancel_set_probe(&tok, probe_at, &pc, 0);
    CHECK_INT(bm25_search(f.b, f.s, terms, 1, w, NULL, 0, true, 0, 10, hits, &n, &tok, err), QR_ECANCELED);
    CHECK_INT(pc.calls, 3); /* the check at the start, then after 256 and 512 candidates */
    CHECK_OK(bm25_search(f.b, f.s, terms, 1, w, NULL, 0, true, 0, 10, hits, &n, NULL, err), err);
    CHECK_INT(n, 10);
    fx_close(&f);
}

/* ---- the vector index's sync layer ------------------------------------------------------------- */

TEST(sync_replays_small_lags_and_rebuilds_large_ones)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_open(&f, err), "%s", err);
    vindex_opts vo;
    vindex_opts_default(&vo);
    vo.delta_max = 5;
    index_sync_report rep;
    /* no vectors yet: nothing to open */
    store *empty = NULL;
    char dir2[80];
    snprintf(dir2, sizeof(dir2), "%s/empty", f.dir);
    CHECK_OK(store_open(dir2, &empty, err), err);
    vindex *none = NULL;
    CHECK_OK(index_sync_open(empty, dir2, &vo, false, &none, &rep, err), err);
    CHECK(none == NULL);
    store_close(empty);

    CHECK_MSG(put(&f, "a", "", "", "", "public", "alpha one|alpha two", err), "%s", err);
    CHECK_OK(index_sync_open(f.s, f.dir, &vo, false, &f.v, &rep, err), err);
    CHECK(rep.rebuilt && rep.generation == 1 && rep.count == 2);
    store_stats ss;
    CHECK_OK(store_get_stats(f.s, &ss, err), err);
    CHECK_INT(ss.index_generation, 1);
    vindex_close(f.v);
    f.v = NULL;
    /* a small lag: replayed into the delta */
    CHECK_MSG(put(&f, "b", "", "", "", "public", "beta one", err), "%s", err);
    CHECK_OK(store_delete(f.s, "a", err), err);
    const char *acl[] = {"group:x"};
    CHECK_OK(store_set_acl(f.s, "b", acl, 1, err), err); /* changes no chunk, still moves the counter */
    CHECK_OK(index_sync_open(f.s, f.dir, &vo, false, &f.v, &rep, err), err);
    CHECK(!rep.rebuilt && rep.added == 1 && rep.removed == 2 && rep.generation == 1);
    vindex_info info;
    vindex_get_info(f.v, &info);
    CHECK_OK(store_get_stats(f.s, &ss, err), err);
    CHECK_INT(info.store_counter, ss.change_counter);
    CHECK_MSG(fx_ready(&f, err), "%s", err);
    retrieval_result *r = search(&f, NULL, 0, true, "alpha beta", RETRIEVAL_VECTOR, 10, err);
    CHECK(r && r->nhits == 1 && has_doc(r, "b"));
    retrieval_result_free(r);
    vindex_close(f.v);
    f.v = NULL;
    /* a large lag: rebuilt, and the store learns the generation */
    for (int i = 0; i < 4; i++) {
        char id[8];
        snprintf(id, sizeof(id), "c%d", i);
        CHECK_MSG(put(&f, id, "", "", "", "public", "gamma one|gamma two", err), "%s", err);
    }
    CHECK_OK(index_sync_open(f.s, f.dir, &vo, false, &f.v, &rep, err), err);
    CHECK(rep.rebuilt && rep.generation == 2 && rep.count == 9);
    CHECK_OK(store_get_stats(f.s, &ss, err), err);
    CHECK_INT(ss.index_generation, 2);
    /* forced */
    CHECK_OK(index_sync(f.s, f.v, &vo, true, &rep, err), err);
    CHECK(rep.rebuilt && rep.generation == 3);
    /* a second process cannot hold the index at the same time */
    vindex *other = NULL;
    CHECK_INT(index_sync_open(f.s, f.dir, &vo, false, &other, &rep, err), QR_EPERM);
    fx_close(&f);
}

/* The vector index keeps no float copy of its own: a generation's gen-N.vec holds the chunk ids
 * only, its MANIFEST names the store whose rows it reads, and it answers from those rows, also
 * once a deleted document's rows are gone from the store's file and after a reopen. */
TEST(vector_index_reads_the_stores_rows)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_open(&f, err), "%s", err);
    vindex_opts vo;
    vindex_opts_default(&vo);
    vo.type = "ivf_sq8";
    vo.nlist = 2;
    vo.train_per_list = 39;
    const char *words[] = {"wing", "tunnel",  "budget", "stall", "lift",
                           "drag", "flutter", "gust",   "shock", "boundary"};
    for (int d = 0; d < 12; d++) {
        char id[8], text[1024] = "";
        snprintf(id, sizeof(id), "d%d", d);
        for (int c = 0; c < 8; c++)
            snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s%s %s %s number %d", c ? "|" : "",
                     words[(d + c) % 10], words[(d * 3 + c) % 10], words[(c * 7) % 10], d * 8 + c);
        CHECK_MSG(put(&f, id, "", "", "", "public", text, err), "%s", err);
    }
    index_sync_report rep;
    CHECK_OK(index_sync_open(f.s, f.dir, &vo, false, &f.v, &rep, err), err);
    CHECK(rep.rebuilt && rep.count == 96);
    CHECK_STR(rep.type, "ivf_sq8");
    char path[256];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/vindex/gen-%llu.vec", f.dir, (unsigned long long)rep.generation);
    CHECK(stat(path, &sb) == 0);
    CHECK_INT(sb.st_size, 64 + 8 * 96); /* the ids only, no float rows */
    int64_t uid = 0;
    CHECK_OK(store_uid(f.s, &uid, err), err);
    snprintf(path, sizeof(path), "%s/vindex/MANIFEST", f.dir);
    FILE *m = fopen(path, "r");
    CHECK(m);
    char line[256], want[64];
    bool named = false;
    snprintf(want, sizeof(want), "rows external %lld\n", (long long)uid);
    while (m && fgets(line, sizeof(line), m))
        named = named || strcmp(line, want) == 0;
    if (m)
        fclose(m);
    CHECK(named);
    CHECK_MSG(fx_ready(&f, err), "%s", err);
    retrieval_result *r = search(&f, NULL, 0, true, "lift drag flutter number 42", RETRIEVAL_VECTOR, 5, err);
    CHECK_MSG(r && r->nhits == 5, "%s", err);
    char top[64];
    snprintf(top, sizeof(top), "%s", r ? r->hits[0].doc_id : "");
    retrieval_result_free(r);
    /* the best document deleted: its rows leave the file; the index answers without it, now
     * and after a reopen that replays the delete */
    CHECK_OK(store_delete(f.s, top, err), err);
    for (int round = 0; round < 2; round++) {
        if (round) {
            vindex_close(f.v);
            f.v = NULL;
            CHECK_OK(index_sync_open(f.s, f.dir, &vo, false, &f.v, &rep, err), err);
            CHECK(!rep.rebuilt && rep.removed == 8);
        } else {
            CHECK_OK(index_sync(f.s, f.v, &vo, false, &rep, err), err);
        }
        CHECK_MSG(fx_ready(&f, err), "%s", err);
        r = search(&f, NULL, 0, true, "lift drag flutter number 42", RETRIEVAL_VECTOR, 5, err);
        CHECK_MSG(r && r->nhits == 5 && !has_doc(r, top), "%s", err);
        for (size_t i = 0; r && i < r->nhits; i++)
            CHECK(isfinite(r->hits[i].score));
        retrieval_result_free(r);
    }
    fx_close(&f);
}

/* A cold start (no vector generation, or a damaged one) is served at once, exactly, from the
 * stored vectors; the first build then answers the same (a flat index here: exact too). */
TEST(cold_start_serves_exact_vectors_before_the_first_build)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_open(&f, err), "%s", err);
    CHECK_MSG(put(&f, "a", "", "", "", "public", "alpha one|alpha two|wing lift", err), "%s", err);
    CHECK_MSG(put(&f, "b", "", "", "", "group:x", "beta one|wing stall", err), "%s", err);
    CHECK_MSG(put(&f, "c", "", "", "", "public", "gamma tunnel|budget wing", err), "%s", err);
    CHECK_OK(store_delete(f.s, "c", err), err); /* its chunks are tombstones, not vectors */
    CHECK_MSG(put(&f, "d", "", "", "", "public", "delta wing|alpha beta", err), "%s", err);
    {
        /* a chunk without a usable vector (all zero): left out and counted, never fatal */
        const char *acl[] = {"public"}, *text = "poison";
        float zero[DIM] = {0};
        store_chunk chunk = {0, 6, ""};
        store_document d = {.doc_id = "z",
                            .title = "",
                            .acl = acl,
                            .nacl = 1,
                            .content_hash =
                                "00000000000000000000000000000000000000000000000000000000000000ff",
                            .text = text,
                            .text_len = 6};
        store_put_result res;
        CHECK_OK(store_put(f.s, &d, &chunk, 1, zero, DIM, &res, err), err);
    }
    vindex_opts vo;
    vindex_opts_default(&vo);
    index_sync_report rep;
    store_stats ss;
    vindex_info info;
    const char *queries[] = {"alpha wing", "beta stall", "budget tunnel", "delta"};
    enum { NQ = 4, K = 10 };
    int64_t cold_ids[NQ][K], warm_ids[NQ][K];
    double cold_scores[NQ][K], warm_scores[NQ][K];
    size_t cold_n[NQ], warm_n[NQ];
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            /* a damaged generation file is served the same way */
            vindex_close(f.v);
            f.v = NULL;
            CHECK_OK(index_sync_open(f.s, f.dir, &vo, false, &f.v, &rep, err), err);
            vindex_close(f.v);
            f.v = NULL;
            char path[600];
            snprintf(path, sizeof(path), "%s/vindex", f.dir);
            DIR *d = opendir(path);
            CHECK(d);
            struct dirent *e;
            int damaged = 0;
            while ((e = readdir(d))) {
                if (e->d_name[0] == '.' || !strstr(e->d_name, ".faiss"))
                    continue;
                snprintf(path, sizeof(path), "%s/vindex/%s", f.dir, e->d_name);
                FILE *fp = fopen(path, "r+");
                CHECK(fp);
                fputs("not an index", fp);
                fclose(fp);
                damaged++;
            }
            closedir(d);
            CHECK_MSG(damaged > 0, "no index file found to damage");
        }
        CHECK_OK(index_open_serving(f.s, f.dir, &vo, &f.v, &rep, err), err);
        CHECK(f.v != NULL);
        vindex_get_info(f.v, &info);
        CHECK_OK(store_get_stats(f.s, &ss, err), err);
        CHECK_MSG(info.generation == 0 && info.count == 0, "pass %d: generation %llu with %zu vectors", pass,
                  (unsigned long long)info.generation, info.count);
        CHECK_MSG(info.delta + 1 == (size_t)ss.chunks && rep.added == info.delta && info.skipped == 1,
                  "pass %d: %zu vectors in the delta (%zu reported, %zu skipped), %lld chunks stored", pass,
                  info.delta, rep.added, info.skipped, (long long)ss.chunks);
        CHECK_INT(info.store_counter, ss.change_counter);
        CHECK_MSG(fx_ready(&f, err), "%s", err);
        for (int q = 0; q < NQ; q++) {
            retrieval_result *r = search(&f, NULL, 0, true, queries[q], RETRIEVAL_VECTOR, K, err);
            CHECK_MSG(r, "%s", err);
            cold_n[q] = r->nhits;
            for (size_t i = 0; i < r->nhits; i++)
                cold_ids[q][i] = r->hits[i].chunk_id, cold_scores[q][i] = r->hits[i].score;
            CHECK_MSG(!has_doc(r, "c"), "a deleted document was searched");
            retrieval_result_free(r);
        }
        /* the first build: the same answers */
        CHECK_OK(index_sync(f.s, f.v, &vo, false, &rep, err), err);
        CHECK(rep.rebuilt);
        vindex_get_info(f.v, &info);
        CHECK(info.generation >= 1 && info.count + 1 == (size_t)ss.chunks && info.delta == 0 &&
              info.skipped == 1);
        for (int q = 0; q < NQ; q++) {
            retrieval_result *r = search(&f, NULL, 0, true, queries[q], RETRIEVAL_VECTOR, K, err);
            CHECK_MSG(r, "%s", err);
            warm_n[q] = r->nhits;
            for (size_t i = 0; i < r->nhits; i++)
                warm_ids[q][i] = r->hits[i].chunk_id, warm_scores[q][i] = r->hits[i].score;
            retrieval_result_free(r);
            CHECK_MSG(cold_n[q] == warm_n[q] && cold_n[q] > 0, "'%s': %zu hits cold, %zu warm", queries[q],
                      cold_n[q], warm_n[q]);
            /* both exact: the same chunks with the same cosine up to float rounding (the order
             * of near-equal scores may differ between the two summations) */
            for (size_t i = 0; i < cold_n[q]; i++) {
                size_t j = 0;
                while (j < warm_n[q] && warm_ids[q][j] != cold_ids[q][i])
                    j++;
                CHECK_MSG(j < warm_n[q] && fabs(cold_scores[q][i] - warm_scores[q][j]) < 1e-5,
                          "'%s': chunk %lld (%.6f) found cold, not warm (or scored apart)", queries[q],
                          (long long)cold_ids[q][i], cold_scores[q][i]);
            }
        }
    }
    fx_close(&f);
}

/* ---- evaluation metrics ------------------------------------------------------------------------ */

/* The pruned BM25 path (the default, which every case above runs) against FTS5's ranking: the
 * same hits, scores and order for word queries whoever asks, with and without a per-document
 * limit; queries with phrases, exclusions or metadata filters are left to FTS5. */
TEST(pruned_bm25_path_equals_fts5)
{
    char err[QR_ERR_LEN];
    fx f;
    CHECK_MSG(fx_corpus(&f, err), "%s", err);
    for (int i = 0; i < 40; i++) {
        char id[16], body[128];
        snprintf(id, sizeof(id), "extra%d", i);
        snprintf(body, sizeof(body), "%s wing tunnel %s|budget %d of the wing|stall speed %s",
                 i % 3 ? "swept" : "heat", i % 2 ? "tests" : "travel", i, i % 5 ? "low" : "high");
        CHECK_MSG(put(&f, id, i % 4 ? "Wing notes" : "Budget", "", "text/plain",
                      i % 3 == 0   ? "group:aero"
                      : i % 3 == 1 ? "public"
                                   : "user:bob",
                      body, err),
                  "%s", err);
    }
    CHECK_MSG(fx_ready(&f, err), "%s", err);
    retrieval *fts = NULL;
    retrieval_opts o = f.o;
    o.bm25_pruned = false;
    CHECK_OK(retrieval_open(f.s, f.v, &o, &fts, err), err);
    const char *queries[] = {"wing",
                             "swept wing tunnel tests",
                             "budget budget wing",
                             "heat transfer",
                             "stall speed low",
                             "nothing matches this",
                             "wing \"swept wings\"",
                             "wing -budget"};
    const char *aero[] = {"group:aero", "public"}, *bob[] = {"user:bob"};
    struct {
        const char *const *p;
        size_t n;
        bool admin;
    } callers[] = {{NULL, 0, true}, {aero, 2, false}, {bob, 1, false}};
    size_t compared = 0;
    for (size_t qi = 0; qi < sizeof(queries) / sizeof(queries[0]); qi++)
        for (size_t ci = 0; ci < 3; ci++)
            for (size_t cap = 0; cap < 3; cap++)
                for (int filt = 0; filt < 2; filt++) {
                    retrieval_caller c = {callers[ci].p, callers[ci].n, callers[ci].admin};
                    retrieval_request q = {.query = queries[qi],
                                           .mode = RETRIEVAL_BM25,
                                           .k = 7,
                                           .max_per_doc = cap == 0 ? SIZE_MAX : cap,
                                           .content_type = filt ? "text/plain" : NULL};
                    retrieval_result *a = NULL, *b = NULL;
                    CHECK_OK(retrieval_search(f.r, &c, &q, &a, err), err);
                    CHECK_OK(retrieval_search(fts, &c, &q, &b, err), err);
                    bool words_only = qi < 6 && !filt;
                    CHECK_MSG(a->bm25_pruned == words_only, "query '%s' filter %d: pruned %d", queries[qi],
                              filt, a->bm25_pruned);
                    CHECK(!b->bm25_pruned);
                    CHECK_MSG(a->nhits == b->nhits, "query '%s' caller %zu cap %zu: %zu vs %zu hits",
                              queries[qi], ci, cap, a->nhits, b->nhits);
                    for (size_t i = 0; i < a->nhits && i < b->nhits; i++) {
                        CHECK_INT(a->hits[i].chunk_id, b->hits[i].chunk_id);
                        CHECK(fabs(a->hits[i].score - b->hits[i].score) <= 1e-9 * fabs(b->hits[i].score));
                    }
                    CHECK((a->next_cursor == NULL) == (b->next_cursor == NULL));
                    compared += a->nhits;
                    retrieval_result_free(a);
                    retrieval_result_free(b);
                }
    CHECK(compared > 100);
    retrieval_close(fts);
    fx_close(&f);
}

TEST(eval_metrics_match_hand_computed_values)
{
    char err[QR_ERR_LEN];
    retrieval_judgment j[] = {{"a", 3}, {"b", 2}, {"c", 1}, {"z", 0}};
    const char *ranked[] = {"x", "b", "z", "a", "y"};
    retrieval_metrics m;
    CHECK_OK(retrieval_eval_ranking(ranked, 5, j, 4, &m, err), err);
    /* DCG = 2/log2(3) + 3/log2(5); IDCG = 3 + 2/log2(3) + 1/2 */
    double dcg = 2 / log2(3) + 3 / log2(5), idcg = 3 + 2 / log2(3) + 0.5;
    CHECK(fabs(m.ndcg10 - dcg / idcg) < 1e-12);
    CHECK(fabs(m.recall100 - 2.0 / 3) < 1e-12);
    CHECK(fabs(m.map100 - (1.0 / 2 + 2.0 / 4) / 3) < 1e-12); /* relevant at ranks 2 and 4, of 3 */
    CHECK(fabs(m.mrr10 - 0.5) < 1e-12);
    /* a relevant document past rank 10 counts for recall and MAP only */
    const char *late[12] = {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "c", "11"};
    CHECK_OK(retrieval_eval_ranking(late, 12, j, 4, &m, err), err);
    CHECK(m.ndcg10 == 0 && m.mrr10 == 0);
    CHECK(fabs(m.recall100 - 1.0 / 3) < 1e-12 && fabs(m.map100 - (1.0 / 11) / 3) < 1e-12);
    /* perfect ranking */
    const char *perfect[] = {"a", "b", "c"};
    CHECK_OK(retrieval_eval_ranking(perfect, 3, j, 4, &m, err), err);
    CHECK(fabs(m.ndcg10 - 1) < 1e-12 && m.recall100 == 1 && m.map100 == 1 && m.mrr10 == 1);
    /* no relevant judgment: zeros */
    retrieval_judgment none[] = {{"a", 0}};
    CHECK_OK(retrieval_eval_ranking(perfect, 3, none, 1, &m, err), err);
    CHECK(m.ndcg10 == 0 && m.recall100 == 0);
    CHECK_INT(retrieval_eval_ranking(NULL, 2, j, 4, &m, err), QR_EINVAL);
}
