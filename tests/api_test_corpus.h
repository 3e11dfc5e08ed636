/*
 * What the HTTP API's integration tests share (test_api.c, test_oidc.c): the fixture directory's
 * passwords, the fake inference server's control routes, service keys, the five-document corpus
 * readable by different people and small readers of results and headers.
 */
#ifndef QUARRY_API_TEST_CORPUS_H
#define QUARRY_API_TEST_CORPUS_H

#include "auth/auth.h"
#include "tests/api_test_util.h"

static char ALICE[512], BOB[512], DAVE[512], ERIN[512], FRANK[512];

static inline void creds(void)
{
    api_basic(ALICE, sizeof(ALICE), "alice", "Alice-pw-1");
    api_basic(BOB, sizeof(BOB), "bob", "Bob-pw-2");
    api_basic(DAVE, sizeof(DAVE), "dave", "p@ss, w0rd (*)"); /* ',', ' ' and '@' in a Basic password */
    api_basic(ERIN, sizeof(ERIN), "erin", "Erin-pw-5");
    api_basic(FRANK, sizeof(FRANK), "frank", "Frank-pw-6");
}

#define H(...) ((const char *const[]){__VA_ARGS__, NULL})

static inline const char *fake_url(void)
{
    const char *u = getenv("QUARRY_TEST_INFERENCE_URL");
    return u ? u : "http://127.0.0.1:9";
}

static inline bool fake_reset(void)
{
    api_resp r;
    bool ok = api_http(fake_url(), "POST", "/_fake/reset", NULL, "{}", 0, &r) == 200;
    api_resp_release(&r);
    return ok;
}

/* Everything the fake backend received (its recorded requests' bodies), as one string. */
static inline char *fake_received(void)
{
    api_resp r;
    api_http(fake_url(), "GET", "/_fake/requests", NULL, NULL, 0, &r);
    char *s = strdup(qr_buf_str(&r.body));
    api_resp_release(&r);
    return s;
}

static inline size_t fake_chat_requests(void)
{
    api_resp r;
    api_http(fake_url(), "GET", "/_fake/requests", NULL, NULL, 0, &r);
    size_t n = 0, i;
    json_t *e;
    json_array_foreach(r.json, i, e)
    {
        const char *path = json_string_value(json_object_get(e, "path"));
        if (path && strstr(path, "/chat/completions"))
            n++;
    }
    api_resp_release(&r);
    return n;
}

/* Creates a service API key in the fixture's data directory (the server re-reads keys.json). */
static inline char *make_key(api_fixture *f, const char *scopes)
{
    char err[QR_ERR_LEN];
    auth_ctx *a = NULL;
    unsigned mask = 0;
    char *key = NULL;
    if (auth_new(f->cfg, &a, err) || auth_scopes_parse(scopes, &mask, err) ||
        auth_key_create(a, "test", mask, &key, NULL, err))
        fprintf(stderr, "make_key: %s\n", err);
    auth_free(a);
    return key;
}

/* POST /v1/documents as dave (an administrator); returns the status. */
static inline long put_doc(api_fixture *f, const char *doc_id, const char *title, const char *text,
                           const char *acl_json)
{
    json_t *acl = acl_json ? json_loads(acl_json, 0, NULL) : NULL;
    json_t *doc = json_pack("{s:s,s:s,s:s,s:s}", "doc_id", doc_id, "title", title, "text", text,
                            "content_type", "text/markdown");
    if (acl)
        json_object_set_new(doc, "acl", acl);
    char *body = json_dumps(doc, 0);
    json_decref(doc);
    api_resp r;
    /* searchable when the reply comes, so that the next search sees it on every path */
    long st = api_http(f->base, "POST", "/v1/documents?refresh=wait_for", H(DAVE), body, 0, &r);
    if (st != 201 && st != 200)
        fprintf(stderr, "put_doc %s: %ld %s\n", doc_id, st, qr_buf_str(&r.body));
    api_resp_release(&r);
    free(body);
    return st;
}

/* Five documents about expense reimbursement, each readable by other people, each with a marker
 * word that appears nowhere else. */
static inline bool seed_corpus(api_fixture *f)
{
    return put_doc(f, "runbooks/backend.md", "Backend runbook",
                   "# Backend deploys\n\nThe expense reimbursement service deploys blue-green on Tuesdays. "
                   "Rollback with the release tool. Marker PINEAPPLEBACKEND.",
                   "[\"group:eng-backend\"]") == 201 &&
           put_doc(f, "runbooks/frontend.md", "Frontend runbook",
                   "# Frontend releases\n\nThe expense reimbursement web app ships behind a feature flag. "
                   "Marker MANGOFRONTEND.",
                   "[\"group:eng-frontend\"]") == 201 &&
           put_doc(f, "policies/expenses.md", "Expense policy",
                   "# Expense reimbursement policy\n\nEvery employee files expense reimbursement claims "
                   "within 30 "
                   "days, with receipts. Marker KIWISTAFF.",
                   "[\"group:staff\"]") == 201 &&
           put_doc(
               f, "hr/erin-review.md", "Erin's review",
               "# Performance review\n\nErin's expense reimbursement for the conference was approved. Marker "
               "PAPAYAERIN.",
               "[\"user:erin\"]") == 201 &&
           put_doc(f, "finance/board.md", "Board notes",
                   "# Board notes\n\nExpense reimbursement totals for the quarter. Marker GUAVAADMIN.",
                   NULL) == 201;
}

/* The doc ids of a search's results, comma-joined, in rank order. */
static inline void result_ids(json_t *results, char *out, size_t len)
{
    size_t i, o = 0;
    json_t *e;
    out[0] = '\0';
    json_array_foreach(results, i, e)
    {
        o += (size_t)snprintf(out + o, len > o ? len - o : 0, "%s%s", i ? "," : "",
                              json_string_value(json_object_get(e, "doc_id")));
    }
}

static inline const char *header_value(const api_resp *r, const char *name, char *out, size_t len)
{
    const char *h = qr_buf_str(&r->headers);
    size_t n = strlen(name);
    out[0] = '\0';
    for (const char *line = h; line && *line;) {
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            size_t k = strcspn(v, "\r\n");
            snprintf(out, len, "%.*s", (int)k, v);
            return out;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return NULL;
}

static inline void search_ids(api_fixture *f, const char *who, const char *mode, char *out, size_t len,
                              long *status)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"query\":\"expense reimbursement\",\"k\":10,\"mode\":\"%s\"}", mode);
    api_resp r;
    *status = api_http(f->base, "POST", "/v1/search", H(who), body, 0, &r);
    result_ids(json_object_get(r.json, "results"), out, len);
    api_resp_release(&r);
}

#endif
