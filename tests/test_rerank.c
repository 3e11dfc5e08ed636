/*
 * The rerank stage end to end: a server in the test process, the fixture's slapd for users and
 * the fake inference server as the reranker, over real HTTP. The fake scores a passage by the
 * share of the query's words it holds and records every request, so a case can predict the
 * reranked order from the texts it was sent, and read back exactly what the reranker saw: only
 * passages the caller may read, in first-stage order (which is therefore also the order a
 * fallback must keep). Covered: Cohere's and TEI's wire shapes, the permission rule, each failure
 * switch (HTTP 500 and 429, a reset, truncated JSON, a stall past rerank.timeout_ms, and replies
 * with bad indexes or scores) falling back with the reason flagged, the breaker, paging through
 * and past the window, and the flag in /v1/ask and chat completions.
 */
#define _GNU_SOURCE /* strcasestr */
#include <ctype.h>
#include <math.h>

#include "tests/api_test_corpus.h"
#include "tests/harness.h"
#include "tests/test_util.h"

/* ---- the fake reranker's record ------------------------------------------------------------ */

/* The bodies of the rerank requests the fake received (either path), oldest first. */
static json_t *rerank_requests(void)
{
    api_resp r;
    api_http(fake_url(), "GET", "/_fake/requests", NULL, NULL, 0, &r);
    json_t *out = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(r.json, i, e)
    {
        const char *path = json_string_value(json_object_get(e, "path"));
        if (path && (strcmp(path, "/v1/rerank") == 0 || strcmp(path, "/rerank") == 0))
            json_array_append(out, e);
    }
    api_resp_release(&r);
    return out;
}

static bool fake_post(const char *path, const char *body)
{
    api_resp r;
    bool ok = api_http(fake_url(), "POST", path, NULL, body, 0, &r) == 200;
    if (!ok)
        fprintf(stderr, "fake %s: %s\n", path, qr_buf_str(&r.body));
    api_resp_release(&r);
    return ok;
}

/* ---- a corpus whose BM25 order and word-overlap order differ ----------------------------- */

/* Each text has a marker (never a query word) that names its document in what the fake saw. */
static const struct {
    const char *id, *marker, *text;
} DOCS[] = {
    {"a.md", "zqa", "alpha alpha alpha alpha alpha. Marker zqa."},
    {"b.md", "zqb",
     "alpha gamma delta appear here together with a long tail of other words that make this passage much "
     "longer than the others, so that its one alpha counts for little in BM25. Marker zqb."},
    {"c.md", "zqc", "gamma delta filler one. Marker zqc."},
    {"d.md", "zqd", "gamma filler two. Marker zqd."},
    {"e.md", "zqe", "delta filler three. Marker zqe."},
};
#define NDOCS (sizeof(DOCS) / sizeof(DOCS[0]))
#define QUERY "alpha gamma delta"

static bool seed_docs(api_fixture *f)
{
    for (size_t i = 0; i < NDOCS; i++) {
        char title[32];
        snprintf(title, sizeof(title), "Doc %zu", i);
        if (put_doc(f, DOCS[i].id, title, DOCS[i].text, "[\"public\"]") != 201)
            return false;
    }
    return true;
}

/* The document a recorded passage is, by its marker; -1 when none. */
static int doc_of_text(const char *text)
{
    for (size_t i = 0; i < NDOCS; i++)
        if (strstr(text, DOCS[i].marker))
            return (int)i;
    return -1;
}

static int doc_of_id(const char *id)
{
    for (size_t i = 0; id && i < NDOCS; i++)
        if (strcmp(id, DOCS[i].id) == 0)
            return (int)i;
    return -1;
}

/* The fake's score: distinct query words found in the text / distinct query words (ASCII). */
static bool has_word(const char *text, const char *w)
{
    size_t n = strlen(w);
    for (const char *p = text; (p = strcasestr(p, w)); p++) {
        bool start = p == text || !isalnum((unsigned char)p[-1]);
        bool end = !isalnum((unsigned char)p[n]);
        if (start && end)
            return true;
    }
    return false;
}

static double overlap(const char *text)
{
    const char *words[] = {"alpha", "gamma", "delta"};
    int shared = 0;
    for (size_t i = 0; i < 3; i++)
        shared += has_word(text, words[i]);
    return shared / 3.0;
}

/* The documents of the last recorded rerank request, in the order sent (first-stage order), as
 * indexes into DOCS; returns how many (-1: no request). */
static int sent_order(int *order, size_t cap, json_t **body_out)
{
    json_t *reqs = rerank_requests();
    size_t n = json_array_size(reqs);
    if (!n) {
        json_decref(reqs);
        return -1;
    }
    json_t *body = json_object_get(json_array_get(reqs, n - 1), "body");
    json_t *docs = json_object_get(body, "documents");
    if (!docs)
        docs = json_object_get(body, "texts");
    size_t k = 0, i;
    json_t *d;
    json_array_foreach(docs, i, d)
    {
        if (k < cap)
            order[k++] = doc_of_text(json_string_value(d));
    }
    if (body_out)
        *body_out = json_incref(body);
    json_decref(reqs);
    return (int)k;
}

/* The results' documents as indexes into DOCS. */
static size_t result_order(json_t *results, int *order, size_t cap)
{
    size_t k = 0, i;
    json_t *e;
    json_array_foreach(results, i, e)
    {
        if (k < cap)
            order[k++] = doc_of_id(json_string_value(json_object_get(e, "doc_id")));
    }
    return k;
}

/* The order the fake's scores give the sent documents (stable: ties keep the order sent). */
static void predicted(const int *sent, int n, int *out)
{
    memcpy(out, sent, (size_t)n * sizeof(*out));
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && overlap(DOCS[out[j]].text) > overlap(DOCS[out[j - 1]].text); j--) {
            int t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
}

static bool same(const int *a, const int *b, size_t n)
{
    return memcmp(a, b, n * sizeof(*a)) == 0;
}

static long search(api_fixture *f, const char *who, const char *body, api_resp *r)
{
    return api_http(f->base, "POST", "/v1/search", H(who), body, 0, r);
}

static const char *rerank_reason(const api_resp *r)
{
    return json_string_value(json_object_get(json_object_get(r->json, "rerank"), "reason"));
}

static bool rerank_applied(const api_resp *r)
{
    return json_is_true(json_object_get(json_object_get(r->json, "rerank"), "applied"));
}

static bool start_cohere(api_fixture *f, const char *const *extra)
{
    char base[300];
    snprintf(base, sizeof(base), "%s/v1", fake_url());
    const char *k[16] = {"rerank.backend",
                         "cohere",
                         "rerank.base_url",
                         base,
                         "rerank.model",
                         "fake-rerank-model",
                         "rerank.api_key",
                         "rk-test-secret",
                         "rerank.retries",
                         "0",
                         NULL};
    size_t n = 10;
    for (size_t i = 0; extra && extra[i] && n < 14; i++)
        k[n++] = extra[i];
    k[n] = NULL;
    return api_fx_start(f, k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8], k[9], k[10], k[11], k[12],
                        k[13], NULL);
}

/* ---- cases --------------------------------------------------------------------------------- */

TEST(cohere_shape_reorders_the_permitted_window)
{
    creds();
    static api_fixture f;
    CHECK(fake_reset());
    CHECK(start_cohere(&f, NULL));
    CHECK(seed_docs(&f));
    api_resp r;
    CHECK_INT(search(&f, DAVE, "{\"query\":\"" QUERY "\",\"k\":10,\"mode\":\"bm25\"}", &r), 200);
    json_t *body = NULL;
    int sent[16], want[16], got[16];
    int n = sent_order(sent, 16, &body);
    CHECK_MSG(n == (int)NDOCS, "the reranker got %d passages: %s", n, qr_buf_str(&r.body));
    /* the wire shape: model, query, documents, top_n; the key as a bearer token */
    CHECK_STR(json_string_value(json_object_get(body, "model")), "fake-rerank-model");
    CHECK_STR(json_string_value(json_object_get(body, "query")), QUERY);
    CHECK_INT(json_integer_value(json_object_get(body, "top_n")), NDOCS);
    CHECK(!json_object_get(body, "texts"));
    json_decref(body);
    json_t *reqs = rerank_requests();
    CHECK_STR(json_string_value(
                  json_object_get(json_object_get(json_array_get(reqs, 0), "headers"), "authorization")),
              "Bearer rk-test-secret");
    json_decref(reqs);
    /* the page is the fake's order, and it is not the first stage's: reranking did something */
    predicted(sent, n, want);
    CHECK_INT(result_order(json_object_get(r.json, "results"), got, 16), (size_t)n);
    CHECK_MSG(same(got, want, (size_t)n), "results %d,%d,%d,%d,%d; predicted %d,%d,%d,%d,%d", got[0], got[1],
              got[2], got[3], got[4], want[0], want[1], want[2], want[3], want[4]);
    CHECK_MSG(!same(sent, want, (size_t)n), "first stage and reranked orders are the same: a weak test");
    /* flagged, and the score is the reranker's */
    CHECK(rerank_applied(&r));
    json_t *rr = json_object_get(r.json, "rerank");
    CHECK_STR(json_string_value(json_object_get(rr, "model")), "fake-rerank-model");
    CHECK_INT(json_integer_value(json_object_get(rr, "candidates")), NDOCS);
    json_t *top = json_array_get(json_object_get(r.json, "results"), 0);
    CHECK(fabs(json_number_value(json_object_get(top, "score")) - overlap(DOCS[want[0]].text)) < 1e-9);
    api_resp_release(&r);
    api_fx_stop(&f);
}

TEST(tei_shape_reorders_too)
{
    creds();
    static api_fixture f;
    CHECK(fake_reset());
    CHECK(api_fx_start(&f, "rerank.backend", "tei", "rerank.base_url", fake_url(), "rerank.retries", "0",
                       NULL));
    CHECK(seed_docs(&f));
    api_resp r;
    CHECK_INT(search(&f, DAVE, "{\"query\":\"" QUERY "\",\"k\":3,\"mode\":\"bm25\"}", &r), 200);
    json_t *reqs = rerank_requests();
    CHECK_INT(json_array_size(reqs), 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(reqs, 0), "path")), "/rerank");
    json_decref(reqs);
    json_t *body = NULL;
    int sent[16], want[16], got[16];
    int n = sent_order(sent, 16, &body);
    /* the whole window goes, whatever k is */
    CHECK_INT(n, NDOCS);
    CHECK(json_is_false(json_object_get(body, "raw_scores")));
    CHECK_STR(json_string_value(json_object_get(body, "query")), QUERY);
    CHECK(!json_object_get(body, "model") && !json_object_get(body, "documents"));
    json_decref(body);
    predicted(sent, n, want);
    CHECK_INT(result_order(json_object_get(r.json, "results"), got, 16), 3);
    CHECK(same(got, want, 3));
    CHECK(rerank_applied(&r));
    CHECK(!json_object_get(json_object_get(r.json, "rerank"), "model")); /* none configured */
    api_resp_release(&r);
    api_fx_stop(&f);
}

TEST(reranker_never_sees_a_forbidden_passage)
{
    creds();
    static api_fixture f;
    CHECK(fake_reset());
    CHECK(start_cohere(&f, NULL));
    CHECK(seed_corpus(&f));
    /* bob reads frontend + staff; erin her review; none of them the board's notes */
    const struct {
        const char *who, *name;
        const char *seen[2];
        const char *hidden[3];
    } users[] = {
        {BOB, "bob", {"MANGOFRONTEND", "KIWISTAFF"}, {"PINEAPPLEBACKEND", "PAPAYAERIN", "GUAVAADMIN"}},
        {ERIN, "erin", {"PAPAYAERIN", NULL}, {"PINEAPPLEBACKEND", "MANGOFRONTEND", "GUAVAADMIN"}},
    };
    const char *modes[] = {"bm25", "vector", "hybrid"};
    for (size_t u = 0; u < 2; u++)
        for (size_t m = 0; m < 3; m++) {
            CHECK(fake_post("/_fake/reset", "{}"));
            char body[256];
            snprintf(body, sizeof(body),
                     "{\"query\":\"expense reimbursement marker\",\"k\":10,\"mode\":\"%s\"}", modes[m]);
            api_resp r;
            CHECK_INT(search(&f, users[u].who, body, &r), 200);
            json_t *reqs = rerank_requests();
            CHECK_MSG(json_array_size(reqs) == 1, "%s %s: %zu rerank requests", users[u].name, modes[m],
                      json_array_size(reqs));
            char *sent = json_dumps(json_object_get(json_array_get(reqs, 0), "body"), 0);
            for (size_t i = 0; i < 2; i++)
                CHECK_MSG(!users[u].seen[i] || strstr(sent, users[u].seen[i]), "%s %s: %s not sent: %s",
                          users[u].name, modes[m], users[u].seen[i], sent);
            for (size_t i = 0; i < 3; i++) {
                CHECK_MSG(!strstr(sent, users[u].hidden[i]), "%s %s: the reranker saw %s", users[u].name,
                          modes[m], users[u].hidden[i]);
                CHECK_MSG(!strstr(qr_buf_str(&r.body), users[u].hidden[i]), "%s %s: %s in the results",
                          users[u].name, modes[m], users[u].hidden[i]);
            }
            char ids[1024];
            result_ids(json_object_get(r.json, "results"), ids, sizeof(ids));
            CHECK_MSG(!strstr(ids, "finance/board.md") && !strstr(ids, "runbooks/backend.md"), "%s %s: %s",
                      users[u].name, modes[m], ids);
            CHECK(rerank_applied(&r));
            free(sent);
            json_decref(reqs);
            api_resp_release(&r);
        }
    api_fx_stop(&f);
}

/* One failure: the page is the first stage's (the order the reranker was sent), flagged. */
static void expect_fallback(api_fixture *f, const char *what, const char *reason)
{
    api_resp r;
    CHECK_INT(search(f, DAVE, "{\"query\":\"" QUERY "\",\"k\":10,\"mode\":\"bm25\"}", &r), 200);
    int sent[16], got[16];
    int n = sent_order(sent, 16, NULL);
    CHECK_MSG(n == (int)NDOCS, "%s: %d passages sent", what, n);
    CHECK_INT(result_order(json_object_get(r.json, "results"), got, 16), (size_t)n);
    CHECK_MSG(same(got, sent, (size_t)n), "%s: the page is not in first-stage order: %s", what,
              qr_buf_str(&r.body));
    CHECK_MSG(!rerank_applied(&r), "%s: flagged as applied: %s", what, qr_buf_str(&r.body));
    CHECK_MSG(rerank_reason(&r) && strcmp(rerank_reason(&r), reason) == 0, "%s: reason %s, expected %s", what,
              rerank_reason(&r) ? rerank_reason(&r) : "(none)", reason);
    api_resp_release(&r);
}

TEST(every_failure_keeps_the_first_stage_order)
{
    creds();
    static api_fixture f;
    CHECK(fake_reset());
    CHECK(start_cohere(&f, (const char *const[]){"rerank.breaker_failures", "1000", NULL}));
    CHECK(seed_docs(&f));
    static const struct {
        const char *control, *body, *reason;
    } faults[] = {
        {"/_fake/faults", "{\"mode\":\"500\",\"times\":-1}", "backend_error"},
        {"/_fake/faults", "{\"mode\":\"429\",\"times\":-1,\"retry_after\":0}", "backend_error"},
        {"/_fake/faults", "{\"mode\":\"reset_mid_stream\",\"times\":-1}", "backend_error"},
        {"/_fake/faults", "{\"mode\":\"malformed_json\",\"times\":-1}", "malformed_reply"},
        {"/_fake/rerank", "{\"reply\":\"out_of_range_index\",\"times\":-1}", "malformed_reply"},
        {"/_fake/rerank", "{\"reply\":\"negative_index\",\"times\":-1}", "malformed_reply"},
        {"/_fake/rerank", "{\"reply\":\"duplicate_index\",\"times\":-1}", "malformed_reply"},
        {"/_fake/rerank", "{\"reply\":\"missing_index\",\"times\":-1}", "malformed_reply"},
        {"/_fake/rerank", "{\"reply\":\"string_score\",\"times\":-1}", "malformed_reply"},
        {"/_fake/rerank", "{\"reply\":\"nan_score\",\"times\":-1}", "malformed_reply"},
        {"/_fake/rerank", "{\"reply\":\"huge_array\",\"times\":-1}", "malformed_reply"},
    };
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
        CHECK(fake_post("/_fake/reset", "{}"));
        CHECK(fake_post(faults[i].control, faults[i].body));
        expect_fallback(&f, faults[i].body, faults[i].reason);
    }
    /* and once the reranker behaves again, it reranks again */
    CHECK(fake_post("/_fake/reset", "{}"));
    api_resp r;
    CHECK_INT(search(&f, DAVE, "{\"query\":\"" QUERY "\",\"k\":10,\"mode\":\"bm25\"}", &r), 200);
    CHECK(rerank_applied(&r));
    api_resp_release(&r);
    api_fx_stop(&f);
}

TEST(a_stalled_reranker_times_out_to_the_first_stage_order)
{
    creds();
    static api_fixture f;
    CHECK(fake_reset());
    CHECK(start_cohere(&f, (const char *const[]){"rerank.timeout_ms", "300", NULL}));
    CHECK(seed_docs(&f));
    CHECK(fake_post("/_fake/faults", "{\"mode\":\"stall_first_byte\",\"times\":-1,\"stall_ms\":20000}"));
    expect_fallback(&f, "stall_first_byte", "timeout");
    /* half a body, then nothing */
    CHECK(fake_post("/_fake/reset", "{}"));
    CHECK(fake_post("/_fake/faults", "{\"mode\":\"stall_mid_stream\",\"times\":-1,\"stall_ms\":20000}"));
    expect_fallback(&f, "stall_mid_stream", "timeout");
    fake_reset();
    api_fx_stop(&f);
}

TEST(the_breaker_opens_after_repeated_failures)
{
    creds();
    static api_fixture f;
    CHECK(fake_reset());
    CHECK(start_cohere(&f, (const char *const[]){"rerank.breaker_failures", "2", "rerank.breaker_cooldown_ms",
                                                 "600000", NULL}));
    CHECK(seed_docs(&f));
    CHECK(fake_post("/_fake/faults", "{\"mode\":\"500\",\"times\":-1}"));
    expect_fallback(&f, "first failure", "backend_error");
    expect_fallback(&f, "second failure", "backend_error");
    json_t *reqs = rerank_requests();
    CHECK_INT(json_array_size(reqs), 2);
    json_decref(reqs);
    /* open: nothing is sent, the first stage answers at once */
    api_resp r;
    CHECK_INT(search(&f, DAVE, "{\"query\":\"" QUERY "\",\"k\":10,\"mode\":\"bm25\"}", &r), 200);
    CHECK_MSG(rerank_reason(&r) && strcmp(rerank_reason(&r), "breaker_open") == 0, "%s", qr_buf_str(&r.body));
    CHECK_INT(json_array_size(json_object_get(r.json, "results")), NDOCS);
    api_resp_release(&r);
    reqs = rerank_requests();
    CHECK_INT(json_array_size(reqs), 2);
    json_decref(reqs);
    /* /metrics says so */
    CHECK_INT(api_http(f.base, "GET", "/metrics", H(DAVE), NULL, 0, &r), 200);
    const char *m = qr_buf_str(&r.body);
    CHECK_MSG(strstr(m, "\nquarry_rerank_calls_total 3\n") &&
                  strstr(m, "\nquarry_rerank_failures_total 2\n") &&
                  strstr(m, "\nquarry_rerank_rejected_total 1\n") &&
                  strstr(m, "\nquarry_rerank_breaker_state{state=\"open\"} 1\n"),
              "%s", m);
    api_resp_release(&r);
    api_fx_stop(&f);
}

/* Pages of k through the whole ranking; their documents in order into out. */
static size_t all_pages(api_fixture *f, int k, int *out, size_t cap, char reasons[][32], size_t *npages)
{
    size_t n = 0;
    char cursor[128] = "";
    *npages = 0;
    for (int guard = 0; guard < 20; guard++) {
        char body[512];
        if (*cursor)
            snprintf(body, sizeof(body),
                     "{\"query\":\"" QUERY "\",\"k\":%d,\"mode\":\"bm25\",\"cursor\":\"%s\"}", k, cursor);
        else
            snprintf(body, sizeof(body), "{\"query\":\"" QUERY "\",\"k\":%d,\"mode\":\"bm25\"}", k);
        api_resp r;
        if (search(f, DAVE, body, &r) != 200) {
            fprintf(stderr, "page: %s\n", qr_buf_str(&r.body));
            api_resp_release(&r);
            return 0;
        }
        n += result_order(json_object_get(r.json, "results"), out + n, cap - n);
        const char *why = rerank_applied(&r) ? "applied" : rerank_reason(&r);
        snprintf(reasons[(*npages)++], 32, "%s", why ? why : "?");
        const char *next = json_string_value(json_object_get(r.json, "next_cursor"));
        snprintf(cursor, sizeof(cursor), "%s", next ? next : "");
        api_resp_release(&r);
        if (!*cursor)
            break;
    }
    return n;
}

TEST(pages_follow_the_reranked_window)
{
    creds();
    static api_fixture f;
    CHECK(fake_reset());
    /* a window of 3: pages inside it come from the reranked window, the rest in first-stage order */
    CHECK(start_cohere(&f, (const char *const[]){"rerank.candidates", "3", NULL}));
    CHECK(seed_docs(&f));
    api_resp r;
    CHECK_INT(search(&f, DAVE, "{\"query\":\"" QUERY "\",\"k\":10,\"mode\":\"bm25\"}", &r), 200);
    int whole[16];
    size_t n = result_order(json_object_get(r.json, "results"), whole, 16);
    CHECK_INT(n, NDOCS);
    api_resp_release(&r);
    int sent[16], want[16];
    CHECK_INT(sent_order(sent, 16, NULL), 3);
    predicted(sent, 3, want);
    CHECK(same(whole, want, 3)); /* the window reranked, the rest after it */

    int paged[16];
    char reasons[20][32];
    size_t npages = 0;
    CHECK_INT(all_pages(&f, 2, paged, 16, reasons, &npages), NDOCS);
    CHECK_MSG(same(paged, whole, NDOCS), "pages of 2 disagree with one page of 10");
    CHECK_INT(npages, 3);
    CHECK_STR(reasons[0], "applied");
    CHECK_STR(reasons[1], "applied"); /* starts inside the window */
    CHECK_STR(reasons[2], "past_window");
    api_fx_stop(&f);
}

TEST(ask_and_chat_report_the_rerank)
{
    creds();
    static api_fixture f;
    CHECK(fake_reset());
    CHECK(start_cohere(&f, NULL));
    CHECK(seed_docs(&f));
    api_resp r;
    CHECK_INT(api_http(f.base, "POST", "/v1/ask", H(DAVE), "{\"question\":\"" QUERY "\"}", 0, &r), 200);
    CHECK_MSG(rerank_applied(&r), "%s", qr_buf_str(&r.body));
    /* the answer's sources are in the reranked order */
    int sent[16], want[16], got[16];
    int n = sent_order(sent, 16, NULL);
    CHECK_INT(n, NDOCS);
    predicted(sent, n, want);
    CHECK_INT(result_order(json_object_get(r.json, "sources"), got, 16), (size_t)n);
    CHECK(same(got, want, (size_t)n));
    api_resp_release(&r);

    CHECK(fake_post("/_fake/rerank", "{\"reply\":\"duplicate_index\",\"times\":1}"));
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(DAVE),
                       "{\"messages\":[{\"role\":\"user\",\"content\":\"" QUERY "\"}]}", 0, &r),
              200);
    json_t *rr = json_object_get(json_object_get(r.json, "quarry"), "rerank");
    CHECK_MSG(json_is_false(json_object_get(rr, "applied")), "%s", qr_buf_str(&r.body));
    CHECK_STR(json_string_value(json_object_get(rr, "reason")), "malformed_reply");
    api_resp_release(&r);

    /* streamed: in the last chunk's quarry object */
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(DAVE),
                       "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"" QUERY "\"}]}", 0,
                       &r),
              200);
    CHECK_MSG(strstr(qr_buf_str(&r.body), "\"rerank\":{\"applied\":true"), "%s", qr_buf_str(&r.body));
    api_resp_release(&r);
    api_fx_stop(&f);
}

/* `quarry search --json` and `quarry ask --json` (the one-shot commands, their own search service)
 * carry the same flag; the text output says on stderr when the order is the first stage's. */
TEST(cli_search_and_ask_report_the_rerank)
{
    creds();
    static api_fixture f;
    CHECK(fake_reset());
    CHECK(start_cohere(&f, NULL));
    CHECK(seed_docs(&f));
    const char *base = getenv("QUARRY_TEST_LDAP_BASE");
    char cli[2048], cmd[4096];
    snprintf(
        cli, sizeof(cli),
        "%s --data '%s/data' --set log.level=error --set auth.admin_groups=ops --set ldap.uri='%s' --set "
        "ldap.bind_dn='%s' --set ldap.bind_password='%s' --set ldap.user_base='ou=people,%s' --set "
        "ldap.group_base='ou=groups,%s' --set rerank.backend=cohere --set rerank.base_url='%s/v1' --set "
        "rerank.model=cli-rerank-model --set rerank.retries=0 --set inference.base_url='%s/v1' --set "
        "inference.model=fake-chat-model",
        QUARRY_BIN, f.dir, getenv("QUARRY_TEST_LDAP_URI"), getenv("QUARRY_TEST_LDAP_BIND_DN"),
        getenv("QUARRY_TEST_LDAP_BIND_PW"), base ? base : "dc=quarry,dc=test",
        base ? base : "dc=quarry,dc=test", fake_url(), fake_url());
    qr_buf out;
    qr_buf_init(&out, 1 << 22);
    snprintf(cmd, sizeof(cmd), "%s search --mode bm25 -k 10 --json '" QUERY "' 2>/dev/null", cli);
    CHECK_INT(test_capture(cmd, &out), 0);
    json_t *j = json_loads(qr_buf_str(&out), 0, NULL);
    json_t *rr = json_object_get(j, "rerank");
    CHECK_MSG(json_is_true(json_object_get(rr, "applied")), "%s", qr_buf_str(&out));
    CHECK_STR(json_string_value(json_object_get(rr, "model")), "cli-rerank-model");
    int sent[16], want[16], got[16];
    int n = sent_order(sent, 16, NULL);
    CHECK_INT(n, NDOCS);
    predicted(sent, n, want);
    CHECK_INT(result_order(json_object_get(j, "results"), got, 16), (size_t)n);
    CHECK(same(got, want, (size_t)n));
    json_decref(j);

    /* a failing reranker: the first stage's order, said on stderr (2>&1 into the capture) */
    CHECK(fake_post("/_fake/faults", "{\"mode\":\"500\",\"times\":-1}"));
    snprintf(cmd, sizeof(cmd), "%s search --mode bm25 -k 10 '" QUERY "' 2>&1", cli);
    CHECK_INT(test_capture(cmd, &out), 0);
    CHECK_MSG(strstr(qr_buf_str(&out), "reranking failed (backend_error): first-stage order"), "%s",
              qr_buf_str(&out));
    CHECK(fake_post("/_fake/reset", "{}"));
    CHECK(fake_post("/_fake/rerank", "{\"reply\":\"nan_score\",\"times\":-1}"));
    snprintf(cmd, sizeof(cmd), "%s ask --json '" QUERY "' 2>/dev/null", cli);
    CHECK_INT(test_capture(cmd, &out), 0);
    j = json_loads(qr_buf_str(&out), 0, NULL);
    rr = json_object_get(j, "rerank");
    CHECK_MSG(json_is_false(json_object_get(rr, "applied")), "%s", qr_buf_str(&out));
    CHECK_STR(json_string_value(json_object_get(rr, "reason")), "malformed_reply");
    json_decref(j);
    qr_buf_release(&out);
    fake_reset();
    api_fx_stop(&f);
}

/* "rerank": false keeps the first stage (nothing is sent), and a cursor of one ranking is refused
 * by the other. */
TEST(a_request_can_opt_out)
{
    creds();
    static api_fixture f;
    CHECK(fake_reset());
    CHECK(start_cohere(&f, NULL));
    CHECK(seed_docs(&f));
    api_resp on, off;
    CHECK_INT(search(&f, DAVE, "{\"query\":\"" QUERY "\",\"k\":2,\"mode\":\"bm25\"}", &on), 200);
    int sent[16], want[16], got[16];
    int n = sent_order(sent, 16, NULL);
    CHECK_INT(n, NDOCS);
    CHECK(fake_post("/_fake/reset", "{}"));
    CHECK_INT(search(&f, DAVE, "{\"query\":\"" QUERY "\",\"k\":10,\"mode\":\"bm25\",\"rerank\":false}", &off),
              200);
    json_t *reqs = rerank_requests();
    CHECK_INT(json_array_size(reqs), 0);
    json_decref(reqs);
    CHECK_MSG(!rerank_applied(&off) && rerank_reason(&off) && strcmp(rerank_reason(&off), "disabled") == 0,
              "%s", qr_buf_str(&off.body));
    /* the first stage's order is the order the reranker had been sent */
    CHECK_INT(result_order(json_object_get(off.json, "results"), got, 16), (size_t)n);
    CHECK(same(got, sent, (size_t)n));
    predicted(sent, n, want);
    CHECK(!same(got, want, (size_t)n));
    /* the reranked page's cursor does not continue the first stage's ranking */
    const char *cursor = json_string_value(json_object_get(on.json, "next_cursor"));
    CHECK(cursor);
    char body[512];
    snprintf(body, sizeof(body),
             "{\"query\":\"" QUERY "\",\"k\":2,\"mode\":\"bm25\",\"rerank\":false,\"cursor\":\"%s\"}",
             cursor);
    api_resp r;
    CHECK_INT(search(&f, DAVE, body, &r), 400);
    api_resp_release(&r);
    CHECK_INT(search(&f, DAVE, "{\"query\":\"" QUERY "\",\"rerank\":\"no\"}", &r), 400);
    api_resp_release(&r);
    api_resp_release(&on);
    api_resp_release(&off);
    api_fx_stop(&f);
}
