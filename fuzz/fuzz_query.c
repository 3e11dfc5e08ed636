/*
 * Fuzzes retrieval's query parser: any bytes either fail cleanly (invalid UTF-8, NUL, limits) or
 * parse into words made only of token characters, and the FTS5 expressions built from them are
 * quoted strings joined by quarry's own operators that a real FTS5 table accepts without a
 * syntax error -- user text never becomes FTS5 syntax. The first byte picks plain mode, the
 * stopword list and whether the retrieval.max_* limits (their defaults) apply; a query that
 * passes them stays within them.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "retrieval/retrieval_int.h"

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

static sqlite3 *db;
static sqlite3_stmt *match;
static rq_stopwords *stopwords[2];
static const rq_limits limits = {.max_terms = 256, .max_phrase_terms = 32, .max_exclusions = 32};

static void setup(void)
{
    if (db)
        return;
    CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CHECK(sqlite3_exec(
              db,
              "CREATE VIRTUAL TABLE t USING fts5(title, headings, body, tokenize = 'porter unicode61');"
              "INSERT INTO t VALUES ('wing', 'a > b', 'the quick brown fox');",
              NULL, NULL, NULL) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, "SELECT count(*) FROM t WHERE t MATCH ?1", -1, &match, NULL) == SQLITE_OK);
    CHECK(rq_stopwords_new("default", &stopwords[0], NULL) == QR_OK);
    CHECK(rq_stopwords_new("none", &stopwords[1], NULL) == QR_OK);
}

/* Only token characters, at least one. */
static void check_token(const char *t)
{
    size_t n = strlen(t), pos = 0, s, e;
    CHECK(n > 0 && n <= RQ_TOKEN_MAX);
    CHECK(rq_next_token(t, n, &pos, &s, &e) && s == 0 && e == n);
}

static void check_phrases(const rq_phrase *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        CHECK(p[i].ntokens > 0);
        for (size_t j = 0; j < p[i].ntokens; j++)
            check_token(p[i].tokens[j]);
    }
}

/* Outside quotes: only " OR " and " AND "; FTS5 parses it. */
static void check_expression(const qr_buf *b)
{
    const char *p = qr_buf_str(b);
    bool inside = false;
    for (; *p; p++) {
        if (*p == '"') {
            inside = !inside;
        } else if (!inside) {
            bool or = strncmp(p, " OR ", 4) == 0, and = strncmp(p, " AND ", 5) == 0;
            CHECK(or || and);
            p += (or ? 4 : 5) - 1;
        }
    }
    CHECK(!inside);
    if (!qr_buf_len(b))
        return;
    sqlite3_bind_text(match, 1, qr_buf_str(b), (int)qr_buf_len(b), SQLITE_STATIC);
    int rc = sqlite3_step(match);
    if (rc != SQLITE_ROW)
        fprintf(stderr, "FTS5 refused '%s': %s\n", qr_buf_str(b), sqlite3_errmsg(db));
    CHECK(rc == SQLITE_ROW);
    sqlite3_reset(match);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    setup();
    bool plain = data[0] & 1;
    const rq_stopwords *sw = stopwords[(data[0] >> 1) & 1];
    const rq_limits *lim = (data[0] >> 2) & 1 ? &limits : NULL;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    qr_arena a;
    qr_arena_init(&a, 64u << 20);
    rq_query q;
    char err[QR_ERR_LEN] = "";
    qr_status st = rq_parse(text, len, sw, plain, lim, &a, &q, err);
    if (st) {
        CHECK(st == QR_EINVAL || st == QR_ELIMIT);
        CHECK(err[0] != '\0');
        CHECK(q.nterms == 0 && q.nphrases == 0 && q.nexcluded == 0);
        if (st == QR_EINVAL)
            CHECK(!qr_utf8_valid(text, len) || memchr(text, '\0', len) ||
                  (lim && strstr(err, "retrieval.max_")));
    } else {
        if (lim) {
            size_t searched = q.nterms;
            for (size_t i = 0; i < q.nphrases; i++) {
                searched += q.phrases[i].ntokens;
                CHECK(q.phrases[i].ntokens <= lim->max_phrase_terms);
            }
            for (size_t i = 0; i < q.nexcluded; i++)
                CHECK(q.excluded[i].ntokens <= lim->max_phrase_terms);
            CHECK(searched <= lim->max_terms && q.nexcluded <= lim->max_exclusions);
        }
        CHECK(qr_utf8_valid(text, len));
        for (size_t i = 0; i < q.nterms; i++)
            check_token(q.terms[i]);
        check_phrases(q.phrases, q.nphrases);
        check_phrases(q.excluded, q.nexcluded);
        if (plain)
            CHECK(q.nphrases == 0 && q.nexcluded == 0);
        qr_buf b;
        qr_buf_init(&b, 1u << 22);
        CHECK(rq_fts_rank(&q, &b) == QR_OK);
        CHECK((qr_buf_len(&b) > 0) == (q.nterms + q.nphrases > 0));
        check_expression(&b);
        qr_buf_reset(&b);
        CHECK(rq_fts_require(&q, &b) == QR_OK);
        check_expression(&b);
        qr_buf_reset(&b);
        CHECK(rq_fts_exclude(&q, &b) == QR_OK);
        check_expression(&b);
        qr_buf_release(&b);
    }
    qr_arena_release(&a);
    return 0;
}
