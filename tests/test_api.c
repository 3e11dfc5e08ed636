/*
 * Integration tests of the HTTP API: a server in this process on a free loopback port, a real
 * slapd (tests/fixtures/slapd-fixture.sh) for users and groups, the fake OpenAI-compatible server
 * (tests/fixtures/fake-inference-fixture.sh) as the only stand-in, and real HTTP through libcurl
 * (and, for one case, the official openai npm client through Node). Each case is its own ctest
 * test and process, with its own data directory.
 *
 * Directory (tests/fixtures/directory.ldif): alice in eng-backend (engineering, staff), bob in
 * eng-frontend (engineering, staff), erin in no group, dave and frank in the posix group ops,
 * which the server is told is the administrators' group.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <zlib.h>

#include "api/api_int.h"
#include "auth/auth.h"
#include "ingest/ingest.h"
#include "tests/api_test_corpus.h"
#include "tests/api_test_util.h"
#include "tests/harness.h"
#include "tests/test_util.h"

/* ---- server basics ------------------------------------------------------------------------------ */

TEST(healthz_routing_and_request_ids)
{
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    api_resp r;
    CHECK_INT(api_http(f.base, "GET", "/healthz", NULL, NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "status")), "ok");
    char id[128];
    CHECK(header_value(&r, "X-Request-Id", id, sizeof(id)) && strlen(id) == 32);
    api_resp_release(&r);

    /* a client's plain request id is kept; anything else is replaced */
    CHECK_INT(api_http(f.base, "GET", "/healthz", H("X-Request-Id: trace-abc.123"), NULL, 0, &r), 200);
    CHECK_STR(header_value(&r, "X-Request-Id", id, sizeof(id)), "trace-abc.123");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/healthz", H("X-Request-Id: bad id\"<>"), NULL, 0, &r), 200);
    CHECK(header_value(&r, "X-Request-Id", id, sizeof(id)) && strcmp(id, "bad id\"<>") != 0 &&
          strlen(id) == 32);
    api_resp_release(&r);

    CHECK_INT(api_http(f.base, "GET", "/nowhere", NULL, NULL, 0, &r), 404);
    CHECK(api_error_shape(&r));
    CHECK_STR(api_error_code(&r), "not_found");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "DELETE", "/healthz", NULL, NULL, 0, &r), 405);
    CHECK(api_error_shape(&r));
    CHECK_STR(api_error_code(&r), "method_not_allowed");
    api_resp_release(&r);
    /* an encoded NUL, a control byte or a broken escape in a path: refused before any route runs */
    const char *bad[] = {"/v1/documents/abc%00def", "/v1/documents/abc%0adef", "/v1/documents/abc%zz",
                         "/v1/documents/abc%e2%28%a1"};
    for (size_t i = 0; i < 4; i++) {
        CHECK_INT(api_http(f.base, "GET", bad[i], H(DAVE), NULL, 0, &r), 400);
        CHECK(api_error_shape(&r));
        api_resp_release(&r);
    }
    /* every route but the probes and /openapi.json needs credentials, /metrics and /v1/status included */
    const char *paths[] = {"/v1/status", "/metrics", "/v1/jobs/x", "/v1/me", "/v1/models", "/v1/documents"};
    for (size_t i = 0; i < 6; i++) {
        CHECK_INT(api_http(f.base, "GET", paths[i], NULL, NULL, 0, &r), 401);
        CHECK(api_error_shape(&r));
        /* the OpenAI-compatible routes say it in OpenAI's word */
        CHECK_STR(api_error_code(&r), strcmp(paths[i], "/v1/models") ? "unauthenticated" : "invalid_api_key");
        char www[256];
        CHECK(header_value(&r, "WWW-Authenticate", www, sizeof(www)) && strstr(www, "Basic"));
        api_resp_release(&r);
    }
    api_fx_stop(&f);
}

TEST(basic_token_and_me)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    api_resp r;
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(ALICE), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "uid")), "alice");
    json_t *groups = json_object_get(r.json, "groups");
    char all[1024];
    char *dumped = json_dumps(groups, 0);
    snprintf(all, sizeof(all), "%s", dumped);
    free(dumped);
    CHECK_MSG(strstr(all, "\"eng-backend\"") && strstr(all, "\"engineering\"") && strstr(all, "\"staff\""),
              "%s", all);
    CHECK(json_is_false(json_object_get(r.json, "is_admin")));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(DAVE), NULL, 0, &r), 200);
    CHECK(json_is_true(json_object_get(r.json, "is_admin")));
    api_resp_release(&r);

    char wrong[512];
    api_basic(wrong, sizeof(wrong), "alice", "not-her-password");
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(wrong), NULL, 0, &r), 401);
    CHECK(api_error_shape(&r));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H("Authorization: Basic !!!notbase64"), NULL, 0, &r), 401);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H("Authorization: Digest abc"), NULL, 0, &r), 401);
    api_resp_release(&r);

    /* a token from a JSON login, then used as a bearer token */
    CHECK_INT(api_http(f.base, "POST", "/v1/auth/token", NULL,
                       "{\"username\":\"bob\",\"password\":\"Bob-pw-2\"}", 0, &r),
              200);
    const char *tok = json_string_value(json_object_get(r.json, "access_token"));
    CHECK(tok && strncmp(tok, "qt1.", 4) == 0);
    CHECK_STR(json_string_value(json_object_get(r.json, "token_type")), "Bearer");
    CHECK(json_integer_value(json_object_get(r.json, "expires_in")) > 3000);
    char bearer[1024];
    snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s", tok);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(bearer), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "uid")), "bob");
    api_resp_release(&r);
    /* a token with one byte changed is refused */
    bearer[strlen(bearer) - 2] = bearer[strlen(bearer) - 2] == 'A' ? 'B' : 'A';
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(bearer), NULL, 0, &r), 401);
    api_resp_release(&r);
    /* the same login through Basic; bad passwords and malformed bodies */
    CHECK_INT(api_http(f.base, "POST", "/v1/auth/token", H(ERIN), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "uid")), "erin");
    api_resp_release(&r);
    CHECK_INT(
        api_http(f.base, "POST", "/v1/auth/token", NULL, "{\"username\":\"bob\",\"password\":\"x\"}", 0, &r),
        401);
    CHECK(api_error_shape(&r));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/auth/token", NULL, "{\"username\":\"bob\"}", 0, &r), 400);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/status", H(DAVE), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "status")), "ready");
    CHECK_STR(json_string_value(json_object_get(json_object_get(r.json, "checks"), "ldap")), "ok");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/models", H(ALICE), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "object")), "list");
    api_resp_release(&r);
    api_fx_stop(&f);
}

TEST(failed_logins_are_rate_limited)
{
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "auth.rate_limit_user", "2", "auth.rate_limit_window_s", "60", NULL));
    char wrong[512], right[512];
    api_basic(wrong, sizeof(wrong), "carol", "nope");
    api_basic(right, sizeof(right), "carol", "Carol-pw-3");
    api_resp r;
    for (int i = 0; i < 2; i++) {
        CHECK_INT(api_http(f.base, "GET", "/v1/me", H(wrong), NULL, 0, &r), 401);
        api_resp_release(&r);
    }
    /* past the limit even the right password is refused, without asking LDAP */
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(right), NULL, 0, &r), 429);
    CHECK(api_error_shape(&r));
    char retry[32];
    CHECK(header_value(&r, "Retry-After", retry, sizeof(retry)) && atoi(retry) > 0);
    api_resp_release(&r);
    /* and so is every other spelling LDAP takes for carol, by Basic and by the token route */
    static const char *const spellings[] = {"carol ", " carol",
                                            "\xef\xbd\x83\xef\xbd\x81\xef\xbd\x92\xef\xbd\x8f\xef\xbd\x8c",
                                            "c\xef\xbd\x81rol", "CAROL"};
    for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
        char basic[512], body[256];
        api_basic(basic, sizeof(basic), spellings[i], "Carol-pw-3");
        CHECK_MSG(api_http(f.base, "GET", "/v1/me", H(basic), NULL, 0, &r) == 429, "'%s': %ld", spellings[i],
                  r.status);
        api_resp_release(&r);
        snprintf(body, sizeof(body), "{\"username\":\"%s\",\"password\":\"Carol-pw-3\"}", spellings[i]);
        CHECK_MSG(api_http(f.base, "POST", "/v1/auth/token", NULL, body, 0, &r) == 429, "token '%s': %ld",
                  spellings[i], r.status);
        api_resp_release(&r);
    }
    /* a variant spelling that logs in is the directory's uid in the principal and the token */
    CHECK_INT(api_http(f.base, "POST", "/v1/auth/token", NULL,
                       "{\"username\":\"\xef\xbc\xa2ob \",\"password\":\"Bob-pw-2\"}", 0, &r),
              200);
    char bearer[1200];
    snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s",
             json_string_value(json_object_get(r.json, "access_token")));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(bearer), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "uid")), "bob");
    api_resp_release(&r);
    char basic[512];
    api_basic(basic, sizeof(basic), "BOB", "Bob-pw-2");
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(basic), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "uid")), "bob");
    api_resp_release(&r);
    api_fx_stop(&f);
}

TEST(api_keys_scopes_and_on_behalf_of)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    char *search_key = make_key(&f, "search");
    char *portal_key = make_key(&f, "search,chat,on_behalf_of");
    char *admin_key = make_key(&f, "admin");
    CHECK(search_key && portal_key && admin_key);
    char h1[256], h2[256], h3[256];
    snprintf(h1, sizeof(h1), "Authorization: Bearer %s", search_key);
    snprintf(h2, sizeof(h2), "X-API-Key: %s", portal_key);
    snprintf(h3, sizeof(h3), "X-API-Key: %s", admin_key);
    api_resp r;
    /* a key acting as itself */
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(h1), NULL, 0, &r), 200);
    CHECK(strncmp(json_string_value(json_object_get(r.json, "uid")), "key:", 4) == 0);
    CHECK_STR(json_string_value(json_object_get(r.json, "via")), "api_key");
    api_resp_release(&r);
    /* a scope it lacks */
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(h1),
                       "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 0, &r),
              403);
    CHECK_STR(api_error_code(&r), "permission_denied");
    api_resp_release(&r);
    /* on behalf of a user: that user's principal from LDAP */
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(h2, "X-Quarry-User: bob"), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "uid")), "bob");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(h1, "X-Quarry-User: bob"), NULL, 0, &r), 403);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(h2, "X-Quarry-User: nobody-such"), NULL, 0, &r), 401);
    /* the key learns that it cannot act for that name, not whether the directory has it */
    CHECK_MSG(!strstr(qr_buf_str(&r.body), "no such user") && !strstr(qr_buf_str(&r.body), "nobody-such"),
              "%s", qr_buf_str(&r.body));
    api_resp_release(&r);
    char *admin_obo_key = make_key(&f, "admin,on_behalf_of");
    CHECK(admin_obo_key);
    char h4[256];
    snprintf(h4, sizeof(h4), "X-API-Key: %s", admin_obo_key);
    free(admin_obo_key);
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(h4, "X-Quarry-User: nobody-such"), NULL, 0, &r), 401);
    CHECK_MSG(strstr(qr_buf_str(&r.body), "no such user 'nobody-such'"), "%s", qr_buf_str(&r.body));
    api_resp_release(&r);
    /* a user cannot claim to be someone else */
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(ALICE, "X-Quarry-User: bob"), NULL, 0, &r), 403);
    api_resp_release(&r);
    /* an admin-scoped key reaches admin routes; the portal key does not */
    CHECK_INT(api_http(f.base, "GET", "/v1/documents", H(h3), NULL, 0, &r), 200);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents", H(h2), NULL, 0, &r), 403);
    api_resp_release(&r);
    /* revoked: refused at once */
    char err[QR_ERR_LEN];
    auth_ctx *a = NULL;
    CHECK_OK(auth_new(f.cfg, &a, err), err);
    auth_key_info info;
    CHECK_OK(auth_key_verify(a, search_key, &info, err), err);
    CHECK_OK(auth_key_revoke(a, info.id, err), err);
    auth_key_info_release(&info);
    auth_free(a);
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(h1), NULL, 0, &r), 401);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H("X-API-Key: qk_0000000000000000_nope"), NULL, 0, &r), 401);
    api_resp_release(&r);
    free(search_key);
    free(portal_key);
    free(admin_key);
    api_fx_stop(&f);
}

TEST(on_behalf_of_acts_as_admin_only_with_admin_scope)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    char *portal_key = make_key(&f, "search,chat,on_behalf_of");
    char *admin_key = make_key(&f, "search,admin,on_behalf_of");
    CHECK(portal_key && admin_key);
    char portal[256], admin[256];
    snprintf(portal, sizeof(portal), "X-API-Key: %s", portal_key);
    snprintf(admin, sizeof(admin), "X-API-Key: %s", admin_key);
    free(portal_key);
    free(admin_key);
    const char *query = "{\"query\":\"expense reimbursement\",\"k\":10,\"mode\":\"bm25\"}";
    struct {
        const char *key, *user;
        bool admin; /* what the request may do: read everything, use admin routes */
    } cases[] = {
        {portal, "X-Quarry-User: dave", false}, /* dave is an administrator; the key is not */
        {admin, "X-Quarry-User: dave", true},
        {admin, "X-Quarry-User: alice", false}, /* the key is; alice is not */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        api_resp r;
        CHECK_INT(api_http(f.base, "GET", "/v1/me", H(cases[i].key, cases[i].user), NULL, 0, &r), 200);
        CHECK_MSG(json_is_true(json_object_get(r.json, "is_admin")) == cases[i].admin, "case %zu: /v1/me %s",
                  i, qr_buf_str(&r.body));
        api_resp_release(&r);
        /* the administrators' document (no ACL) */
        CHECK_INT(api_http(f.base, "POST", "/v1/search", H(cases[i].key, cases[i].user), query, 0, &r), 200);
        char ids[1024];
        result_ids(json_object_get(r.json, "results"), ids, sizeof(ids));
        api_resp_release(&r);
        CHECK_MSG((strstr(ids, "finance/board.md") != NULL) == cases[i].admin,
                  "case %zu: the search found %s", i, ids);
        /* the user's own documents, whatever the key */
        CHECK_MSG(strstr(ids, "policies/expenses.md") || strstr(cases[i].user, "dave"),
                  "case %zu: the search found %s", i, ids);
        long st = api_http(f.base, "GET", "/v1/documents/finance%2Fboard.md", H(cases[i].key, cases[i].user),
                           NULL, 0, &r);
        api_resp_release(&r);
        CHECK_MSG(st == (cases[i].admin ? 200 : 403), "case %zu: GET /v1/documents/{id} gave %ld", i, st);
    }
    api_fx_stop(&f);
}

TEST(admin_routes_refused_to_others)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK_INT(put_doc(&f, "a.md", "A", "alpha", "[\"public\"]"), 201);
    struct {
        const char *method, *path, *body;
    } routes[] = {
        {"POST", "/v1/documents", "{\"doc_id\":\"x\",\"text\":\"x\"}"},
        {"GET", "/v1/documents", NULL},
        {"GET", "/v1/documents/a.md", NULL},
        {"PUT", "/v1/documents/a.md", "{\"text\":\"changed\"}"},
        {"PATCH", "/v1/documents/a.md/acl", "{\"acl\":[\"user:alice\"]}"},
        {"DELETE", "/v1/documents/a.md", NULL},
        {"POST", "/v1/index/rebuild", "{}"},
        {"GET", "/v1/jobs/0123456789abcdef0123456789abcdef", NULL},
        {"GET", "/metrics", NULL},
        {"GET", "/v1/keys", NULL},
        {"POST", "/v1/keys", "{\"name\":\"mine\",\"scopes\":[\"admin\"]}"},
        {"DELETE", "/v1/keys/0123456789abcdef", NULL},
        {"GET", "/v1/audit", NULL},
    };
    api_resp r;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        CHECK_MSG(api_http(f.base, routes[i].method, routes[i].path, H(ALICE), routes[i].body, 0, &r) == 403,
                  "%s %s gave %ld", routes[i].method, routes[i].path, r.status);
        CHECK(api_error_shape(&r));
        CHECK_STR(api_error_code(&r), "permission_denied");
        api_resp_release(&r);
    }
    /* nothing changed */
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/a.md", H(DAVE), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_array_get(json_object_get(r.json, "acl"), 0)), "public");
    CHECK_INT(json_integer_value(json_object_get(r.json, "version")), 1);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/metrics", H(FRANK), NULL, 0, &r), 200);
    api_resp_release(&r);
    api_fx_stop(&f);
}

static const char *error_param(const api_resp *r)
{
    json_t *p = json_object_get(json_object_get(r->json, "error"), "param");
    return json_is_string(p) ? json_string_value(p) : "";
}

/* The key's entry in a GET /v1/keys answer, or NULL. */
static json_t *listed_key(const api_resp *r, const char *id)
{
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(r->json, "data"), i, k)
    {
        const char *kid = json_string_value(json_object_get(k, "id"));
        if (kid && strcmp(kid, id) == 0)
            return k;
    }
    return NULL;
}

TEST(api_keys_managed_over_http_and_audited)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK_INT(put_doc(&f, "a.md", "A", "alpha kumquat", "[\"public\"]"), 201);
    api_resp r;
    CHECK_INT(
        api_http(f.base, "POST", "/v1/keys", H(DAVE), "{\"name\":\"widget\",\"scopes\":[\"search\"]}", 0, &r),
        201);
    const char *key_text = json_string_value(json_object_get(r.json, "key"));
    const char *id_text = json_string_value(json_object_get(r.json, "id"));
    CHECK(key_text && id_text && strncmp(key_text, "qk_", 3) == 0);
    char *key = strdup(key_text), *id = strdup(id_text);
    CHECK_STR(json_string_value(json_object_get(r.json, "name")), "widget");
    CHECK_STR(json_string_value(json_array_get(json_object_get(r.json, "scopes"), 0)), "search");
    CHECK(json_is_string(json_object_get(r.json, "created_at")));
    api_resp_release(&r);
    const char *secret = strchr(key + 3, '_');
    CHECK(secret && strlen(secret + 1) >= 32);
    secret++;
    /* listed, without its secret */
    CHECK_INT(api_http(f.base, "GET", "/v1/keys", H(DAVE), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "object")), "list");
    json_t *k = listed_key(&r, id);
    CHECK_MSG(k, "%s", qr_buf_str(&r.body));
    CHECK(json_is_null(json_object_get(k, "revoked_at")));
    CHECK(!json_object_get(k, "key") && !strstr(qr_buf_str(&r.body), secret));
    api_resp_release(&r);
    /* the key works */
    char kh[256];
    snprintf(kh, sizeof(kh), "X-API-Key: %s", key);
    CHECK_INT(
        api_http(f.base, "POST", "/v1/search", H(kh), "{\"query\":\"kumquat\",\"mode\":\"bm25\"}", 0, &r),
        200);
    api_resp_release(&r);
    /* an API key mints no key, whatever its scopes */
    char *admin_key = make_key(&f, "search,chat,admin,on_behalf_of");
    CHECK(admin_key);
    char ah[256];
    snprintf(ah, sizeof(ah), "X-API-Key: %s", admin_key);
    free(admin_key);
    CHECK_INT(
        api_http(f.base, "POST", "/v1/keys", H(ah), "{\"name\":\"escalate\",\"scopes\":[\"admin\"]}", 0, &r),
        403);
    CHECK_STR(api_error_code(&r), "permission_denied");
    CHECK(strstr(qr_buf_str(&r.body), "signed in as a person"));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/keys", H(ah, "X-Quarry-User: dave"),
                       "{\"name\":\"escalate\",\"scopes\":[\"admin\"]}", 0, &r),
              403);
    api_resp_release(&r);
    /* bad bodies name the field */
    struct {
        const char *body, *param;
    } bad[] = {
        {"{\"name\":\"x\",\"scopes\":[\"search\",\"root\"]}", "scopes"},
        {"{\"name\":\"x\",\"scopes\":[]}", "scopes"},
        {"{\"name\":\"x\"}", "scopes"},
        {"{\"name\":\"x\",\"scopes\":[\"search,admin\"]}", "scopes"},
        {"{\"name\":\"x\",\"scopes\":[7]}", "scopes"},
        {"{\"name\":\"\",\"scopes\":[\"search\"]}", "name"},
        {"{\"name\":\"a\\nb\",\"scopes\":[\"search\"]}", "name"},
        {"{\"scopes\":[\"search\"]}", "name"},
        {"{\"name\":"
         "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\",\"scopes\":[\"search\"]}",
         "name"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_MSG(api_http(f.base, "POST", "/v1/keys", H(DAVE), bad[i].body, 0, &r) == 400,
                  "case %zu: %ld %s", i, r.status, qr_buf_str(&r.body));
        CHECK_STR(error_param(&r), bad[i].param);
        api_resp_release(&r);
    }
    CHECK_INT(api_http(f.base, "POST", "/v1/keys", H(DAVE), "{\"name\":\"x\",\"scopes\":[\"root\"]}", 0, &r),
              400);
    CHECK(strstr(qr_buf_str(&r.body), "root"));
    api_resp_release(&r);
    /* revoked: refused at once; twice is fine; unknown is 404 */
    char path[128];
    snprintf(path, sizeof(path), "/v1/keys/%s", id);
    CHECK_INT(api_http(f.base, "DELETE", path, H(DAVE), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "id")), id);
    CHECK(json_is_true(json_object_get(r.json, "revoked")));
    api_resp_release(&r);
    CHECK_INT(
        api_http(f.base, "POST", "/v1/search", H(kh), "{\"query\":\"kumquat\",\"mode\":\"bm25\"}", 0, &r),
        401);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "DELETE", path, H(DAVE), NULL, 0, &r), 200);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "DELETE", "/v1/keys/0123456789abcdef", H(DAVE), NULL, 0, &r), 404);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/keys", H(DAVE), NULL, 0, &r), 200);
    k = listed_key(&r, id);
    CHECK(k && json_is_string(json_object_get(k, "revoked_at")));
    api_resp_release(&r);
    /* the audit log, newest first: the revocations, the search, the creation; never the secret */
    CHECK_INT(api_http(f.base, "GET", "/v1/audit?limit=0", H(DAVE), NULL, 0, &r), 400);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/audit?limit=501", H(DAVE), NULL, 0, &r), 400);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/audit", H(DAVE), NULL, 0, &r), 200);
    CHECK_MSG(!strstr(qr_buf_str(&r.body), secret), "the audit route shows a key's secret");
    json_t *data = json_object_get(r.json, "data");
    CHECK(json_array_size(data) >= 4);
    long at_create = -1, at_search = -1, at_revoke = -1;
    size_t i;
    json_array_foreach(data, i, k)
    {
        const char *action = json_string_value(json_object_get(k, "action"));
        const char *first_id = json_string_value(json_array_get(json_object_get(k, "doc_ids"), 0));
        if (action && strcmp(action, "key_create") == 0 && first_id && strcmp(first_id, id) == 0) {
            at_create = (long)i;
            CHECK_STR(json_string_value(json_object_get(k, "user")), "dave");
        }
        if (action && strcmp(action, "search") == 0 && at_search < 0)
            at_search = (long)i;
        if (action && strcmp(action, "key_revoke") == 0 && at_revoke < 0)
            at_revoke = (long)i;
    }
    CHECK_MSG(at_revoke >= 0 && at_search > at_revoke && at_create > at_search,
              "revoke %ld search %ld create %ld", at_revoke, at_search, at_create);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/audit?limit=1", H(DAVE), NULL, 0, &r), 200);
    CHECK_INT(json_array_size(json_object_get(r.json, "data")), 1);
    CHECK_STR(
        json_string_value(json_object_get(json_array_get(json_object_get(r.json, "data"), 0), "action")),
        "key_revoke");
    api_resp_release(&r);
    /* the file itself holds no secret either */
    char logpath[PATH_MAX];
    snprintf(logpath, sizeof(logpath), "%s/data/audit.log", f.dir);
    char *log = NULL, err[QR_ERR_LEN];
    CHECK_OK(qr_read_file(logpath, 1 << 20, &log, NULL, err), err);
    CHECK(strstr(log, "\"key_create\"") && !strstr(log, secret));
    free(log);
    free(key);
    free(id);
    api_fx_stop(&f);
}

/* ---- failing closed ----------------------------------------------------------------------------- */

TEST(ldap_unreachable_is_503)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    /* port 1 on loopback: connections are refused at once */
    CHECK(api_fx_start(&f, "ldap.uri", "ldap://127.0.0.1:1/", "ldap.timeout_ms", "800", NULL));
    char *key = make_key(&f, "search,on_behalf_of");
    CHECK(key);
    char err[QR_ERR_LEN], *tok = NULL;
    auth_ctx *a = NULL;
    CHECK_OK(auth_new(f.cfg, &a, err), err);
    CHECK_OK(auth_token_issue(a, "alice", 0, &tok, NULL, err), err);
    auth_free(a);
    char bearer[1024], keyh[256];
    snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s", tok);
    snprintf(keyh, sizeof(keyh), "X-API-Key: %s", key);
    free(tok);
    api_resp r;
    const char *const *cases[] = {H(ALICE), H(bearer), H(keyh, "X-Quarry-User: alice")};
    for (size_t i = 0; i < 3; i++) {
        CHECK_MSG(api_http(f.base, "POST", "/v1/search", cases[i], "{\"query\":\"anything\"}", 0, &r) == 503,
                  "case %zu gave %ld %s", i, r.status, qr_buf_str(&r.body));
        CHECK(api_error_shape(&r));
        CHECK_STR(api_error_code(&r), "unavailable");
        /* whoever knocks learns that the directory is down, not where it lives */
        CHECK_MSG(!strstr(qr_buf_str(&r.body), "ldap://") && !strstr(qr_buf_str(&r.body), "127.0.0.1"),
                  "case %zu: %s", i, qr_buf_str(&r.body));
        api_resp_release(&r);
    }
    CHECK_INT(api_http(f.base, "POST", "/v1/auth/token", H(ALICE), NULL, 0, &r), 503);
    api_resp_release(&r);
    /* the public probe says so, and nothing more */
    CHECK_INT(api_http(f.base, "GET", "/readyz", NULL, NULL, 0, &r), 503);
    CHECK_STR(qr_buf_str(&r.body), "{\"status\":\"unavailable\"}");
    api_resp_release(&r);
    free(key);
    api_fx_stop(&f);
}

static pid_t stopped_slapd;

__attribute__((destructor)) static void resume_slapd(void)
{
    if (stopped_slapd > 0)
        kill(stopped_slapd, SIGCONT);
}

/* True once every thread of pid is in the stopped state ('T' in /proc/<pid>/task/<tid>/stat). */
static bool wait_stopped(pid_t pid)
{
    for (int tries = 0; tries < 500; tries++) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
        DIR *d = opendir(path);
        if (!d)
            return false;
        bool all = true;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char stat_path[600], buf[512];
            snprintf(stat_path, sizeof(stat_path), "%s/%s/stat", path, e->d_name);
            FILE *f = fopen(stat_path, "r");
            size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
            if (f)
                fclose(f);
            buf[n] = '\0';
            const char *rp = strrchr(buf, ')');
            if (!rp || rp[1] != ' ' || (rp[2] != 'T' && rp[2] != 't'))
                all = false;
        }
        closedir(d);
        if (all)
            return true;
        usleep(2000);
    }
    return false;
}

TEST(ldap_silent_is_503)
{
    creds();
    const char *pid = getenv("QUARRY_TEST_SLAPD_PID");
    CHECK_MSG(pid, "run under tests/fixtures/slapd-fixture.sh");
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "ldap.timeout_ms", "700", "ldap.cache_ttl_s", "0", NULL));
    api_resp r;
    CHECK_INT(api_http(f.base, "POST", "/v1/auth/token", H(ALICE), NULL, 0, &r), 200);
    char bearer[1024];
    snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s",
             json_string_value(json_object_get(r.json, "access_token")));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(bearer), NULL, 0, &r), 200);
    api_resp_release(&r);
    /* slapd stops answering: connections open, nothing comes back */
    stopped_slapd = (pid_t)atoi(pid);
    CHECK(kill(stopped_slapd, SIGSTOP) == 0);
    /* kill() only queues the stop: wait until every slapd thread is stopped */
    CHECK_MSG(wait_stopped(stopped_slapd), "slapd %d did not stop", (int)stopped_slapd);
    uint64_t t0 = qr_now_ns();
    long s1 = api_http(f.base, "GET", "/v1/me", H(bearer), NULL, 0, &r);
    api_resp_release(&r);
    long s2 = api_http(f.base, "GET", "/v1/me", H(ALICE), NULL, 0, &r);
    bool shaped = api_error_shape(&r);
    api_resp_release(&r);
    double secs = (double)(qr_now_ns() - t0) / 1e9;
    kill(stopped_slapd, SIGCONT);
    stopped_slapd = 0;
    CHECK_INT(s1, 503);
    CHECK_INT(s2, 503);
    CHECK(shaped);
    CHECK_MSG(secs < 5, "two requests against a silent LDAP took %.1f s", secs);
    /* and it recovers: slapd first works off what queued up while it was stopped, which on a
     * loaded machine can take longer than one 700 ms deadline, so allow a few tries */
    long recovered = 0;
    for (int i = 0; i < 20 && recovered != 200; i++) {
        if (i)
            usleep(250000);
        recovered = api_http(f.base, "GET", "/v1/me", H(ALICE), NULL, 0, &r);
        api_resp_release(&r);
    }
    CHECK_INT(recovered, 200);
    api_fx_stop(&f);
}

/* ---- bad input ------------------------------------------------------------------------------------ */

typedef struct {
    size_t left;
} chunk_src;

static size_t feed(char *buf, size_t size, size_t n, void *user)
{
    chunk_src *c = user;
    size_t k = size * n < c->left ? size * n : c->left;
    memset(buf, ' ', k);
    c->left -= k;
    return k;
}

TEST(body_and_json_limits)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "server.max_body_bytes", "4096", "server.json_max_depth", "8", NULL));
    api_resp r;
    /* Content-Length over the limit: refused before the body is read */
    char big[8192];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(ALICE), big, 0, &r), 413);
    CHECK(api_error_shape(&r));
    CHECK_STR(api_error_code(&r), "payload_too_large");
    api_resp_release(&r);
    /* a chunked body (no length) over the limit */
    {
        CURL *h = curl_easy_init();
        char url[256];
        snprintf(url, sizeof(url), "%s/v1/search", f.base);
        struct curl_slist *list = curl_slist_append(NULL, "Transfer-Encoding: chunked");
        list = curl_slist_append(list, "Content-Type: application/json");
        list = curl_slist_append(list, ALICE);
        chunk_src src = {64 * 1024};
        qr_buf body;
        qr_buf_init(&body, 1 << 20);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, feed);
        curl_easy_setopt(h, CURLOPT_READDATA, &src);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, api_sink);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
        CURLcode rc = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_slist_free_all(list);
        curl_easy_cleanup(h);
        bool shaped = strstr(qr_buf_str(&body), "payload_too_large") != NULL;
        qr_buf_release(&body);
        CHECK_MSG(rc == CURLE_OK && code == 413 && shaped, "chunked: rc %d, status %ld", rc, code);
    }
    struct {
        const char *body, *type;
        long status;
        const char *code;
    } cases[] = {
        {"{\"query\": \"unterminated", NULL, 400, "invalid_json"},
        {"[1,2,3]", NULL, 400, "invalid_json"},
        {"{\"query\":\"a\",\"query\":\"b\"}", NULL, 400, "invalid_json"},
        {"{\"a\":[[[[[[[[[[1]]]]]]]]]]}", NULL, 413, "limit_exceeded"},
        {"{\"query\":\"\xff\xfe\"}", NULL, 400, "invalid_json"},
        {"{\"query\":\"ok\"}", "Content-Type: text/plain", 415, "unsupported_media_type"},
        {"{\"query\":5}", NULL, 400, "invalid_argument"},
        {"{\"query\":\"\"}", NULL, 400, "invalid_argument"},
        {"{\"query\":\"ok\",\"k\":0}", NULL, 400, "invalid_argument"},
        {"{\"query\":\"ok\",\"k\":1000000}", NULL, 400, "invalid_argument"},
        {"{\"query\":\"ok\",\"mode\":\"magic\"}", NULL, 400, "invalid_argument"},
        {"{\"query\":\"ok\",\"filters\":{\"colour\":\"red\"}}", NULL, 400, "invalid_argument"},
        {"{\"query\":\"ok\",\"filters\":{\"updated_after\":\"yesterday\"}}", NULL, 400, "invalid_argument"},
        {"{\"query\":\"ok\",\"cursor\":\"not-a-cursor\"}", NULL, 400, "invalid_argument"},
        {"", NULL, 400, "invalid_argument"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long st = api_http(f.base, "POST", "/v1/search", cases[i].type ? H(ALICE, cases[i].type) : H(ALICE),
                           cases[i].body, strlen(cases[i].body) ? strlen(cases[i].body) : 0, &r);
        if (!*cases[i].body) {
            /* no body at all */
            api_resp_release(&r);
            st = api_http(f.base, "POST", "/v1/search", H(ALICE, "Content-Type: application/json"), NULL, 0,
                          &r);
        }
        CHECK_MSG(st == cases[i].status && strcmp(api_error_code(&r), cases[i].code) == 0 &&
                      api_error_shape(&r),
                  "case %zu (%s): %ld %s", i, cases[i].body, st, qr_buf_str(&r.body));
        api_resp_release(&r);
    }
    /* chat requests */
    const char *chats[] = {
        "{\"messages\":[]}",
        "{\"messages\":[{\"role\":\"assistant\",\"content\":\"hi\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"system\",\"content\":\"x\"}]}",
        "{\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}",
        "{\"messages\":[{\"role\":\"tool\",\"content\":\"hi\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":3}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":7}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":\"yes\"}",
    };
    for (size_t i = 0; i < sizeof(chats) / sizeof(chats[0]); i++) {
        /* OpenAI's error object, with the offending field named in param */
        CHECK_MSG(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE), chats[i], 0, &r) == 400 &&
                      strcmp(api_error_type_of(&r), "invalid_request_error") == 0 &&
                      json_is_string(json_object_get(json_object_get(r.json, "error"), "param")),
                  "chat case %zu: %ld %s", i, r.status, qr_buf_str(&r.body));
        api_resp_release(&r);
    }
    /* the server still answers */
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(ALICE), NULL, 0, &r), 200);
    api_resp_release(&r);
    api_fx_stop(&f);
}

TEST(slow_client_is_dropped)
{
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "server.connection_timeout_s", "1", NULL));
    int port = api_server_port(f.srv);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    /* half a request, then nothing */
    const char part[] = "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n";
    CHECK(write(fd, part, sizeof(part) - 1) == (ssize_t)(sizeof(part) - 1));
    uint64_t t0 = qr_now_ns();
    /* meanwhile other clients are served */
    api_resp r;
    CHECK_INT(api_http(f.base, "GET", "/healthz", NULL, NULL, 0, &r), 200);
    api_resp_release(&r);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int pr = poll(&p, 1, 6000);
    char buf[256];
    ssize_t n = pr > 0 ? read(fd, buf, sizeof(buf)) : -2;
    double secs = (double)(qr_now_ns() - t0) / 1e9;
    close(fd);
    CHECK_MSG(pr > 0 && n <= 0, "the server did not close a stalled connection (poll %d, read %zd)", pr, n);
    CHECK_MSG(secs >= 0.5 && secs < 4.5, "closed after %.2f s with a 1 s timeout", secs);
    api_fx_stop(&f);
}

/* ---- abusive connections ------------------------------------------------------------------------ */

/* A raw connection to the fixture's server from source address `from` (NULL: any; every 127/8
 * address is this host), non-blocking. -1 on failure. */
static int raw_connect(const api_fixture *f, const char *from)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (from) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        inet_pton(AF_INET, from, &src.sin_addr);
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
            close(fd);
            return -1;
        }
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)api_server_port(f->srv))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Writes all of s (waiting while the socket is full); false when the server closed it. */
static bool raw_send(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 1000);
            continue;
        }
        if (k <= 0)
            return false;
        s += k;
        n -= (size_t)k;
    }
    return true;
}

/* Reads what is there without waiting, appending to buf (NUL-terminated, cap bytes); true once the
 * server closed the connection (end of stream or reset). */
static bool raw_drain(int fd, char *buf, size_t cap, size_t *len)
{
    for (;;) {
        char tmp[4096];
        ssize_t k = recv(fd, tmp, sizeof(tmp), 0);
        if (k > 0) {
            size_t c = (size_t)k < cap - 1 - *len ? (size_t)k : cap - 1 - *len;
            memcpy(buf + *len, tmp, c);
            *len += c;
            buf[*len] = '\0';
            continue;
        }
        return k == 0 || (errno != EAGAIN && errno != EINTR);
    }
}

/* Waits up to timeout_ms for the server to answer (a whole header block) or close; returns the
 * answer's status, 0 without one. *closed tells whether the server closed the connection. */
static int raw_answer(int fd, int timeout_ms, bool *closed)
{
    char buf[8192] = "";
    size_t len = 0;
    uint64_t end = qr_now_ns() + (uint64_t)timeout_ms * 1000000u;
    *closed = false;
    for (;;) {
        *closed = raw_drain(fd, buf, sizeof(buf), &len);
        if (*closed || strstr(buf, "\r\n\r\n") || qr_now_ns() >= end)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, 50);
    }
    return strncmp(buf, "HTTP/1.1 ", 9) == 0 ? atoi(buf + 9) : 0;
}

/* VmRSS of this process, where the fixture's server runs, in bytes (-1: unknown). */
static long long self_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = atoll(line + 6);
    if (f)
        fclose(f);
    return kib < 0 ? -1 : kib * 1024;
}

/* Sends the same request twice through one libcurl handle; true when the second went over the
 * first's connection (the server kept it alive). *status gets the second answer's status. */
static bool kept_alive(const api_fixture *f, const char *method, const char *path, const char *auth,
                       const char *body, long *status)
{
    CURL *h = curl_easy_init();
    struct curl_slist *list = curl_slist_append(NULL, "Content-Type: application/json");
    list = curl_slist_append(list, "Expect:");
    if (auth)
        list = curl_slist_append(list, auth);
    char url[256];
    snprintf(url, sizeof(url), "%s%s", f->base, path);
    qr_buf sink;
    qr_buf_init(&sink, 1 << 20);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, api_sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (body)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    long connects = -1;
    *status = 0;
    bool ok = curl_easy_perform(h) == CURLE_OK;
    qr_buf_reset(&sink);
    ok = ok && curl_easy_perform(h) == CURLE_OK;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
    qr_buf_release(&sink);
    curl_slist_free_all(list);
    curl_easy_cleanup(h);
    return ok && connects == 0;
}

TEST(bodies_wait_for_credentials)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    /* Credentials and rights are in the headers: a client that waits for 100 Continue gets its
     * 401 or 403 instead, and its body is never asked for. */
    struct {
        const char *auth;
        int status;
    } early[] = {{"", 401}, {ALICE, 403}};
    for (size_t i = 0; i < 2; i++) {
        char head[1024];
        int n =
            snprintf(head, sizeof(head),
                     "POST /v1/documents HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                     "Content-Length: 33554432\r\nExpect: 100-continue\r\n%s%s\r\n",
                     early[i].auth, *early[i].auth ? "\r\n" : "");
        int fd = raw_connect(&f, NULL);
        CHECK(fd >= 0 && raw_send(fd, head, (size_t)n));
        bool closed;
        int status = raw_answer(fd, 10000, &closed);
        close(fd);
        CHECK_MSG(status == early[i].status, "case %zu: the first answer was %d, not %d", i, status,
                  early[i].status);
    }

    /* 20 clients without credentials each send all but the last byte of a 32 MiB upload and hold:
     * before, the server buffered every byte (about 640 MB); now each gets 401 at once and the
     * server reads no body at all (what the kernel's socket buffers take is not its memory). */
    enum { CONNS = 20 };
    const long long length = 33554432;
    static char chunk[1 << 16];
    memset(chunk, 'x', sizeof(chunk));
    int fd[CONNS];
    long long sent[CONNS];
    bool done[CONNS];
    long long before = self_rss();
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "POST /v1/documents HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                      "Content-Length: %lld\r\n\r\n",
                      length);
    for (int i = 0; i < CONNS; i++) {
        fd[i] = raw_connect(&f, NULL);
        CHECK(fd[i] >= 0 && raw_send(fd[i], head, (size_t)hn));
        sent[i] = 0;
        done[i] = false;
    }
    uint64_t t0 = qr_now_ns();
    for (bool busy = true; busy && qr_now_ns() - t0 < 60000000000ull;) {
        busy = false;
        for (int i = 0; i < CONNS; i++) {
            if (done[i])
                continue;
            long long want = length - 1 - sent[i];
            ssize_t k = send(fd[i], chunk, want < (long long)sizeof(chunk) ? (size_t)want : sizeof(chunk),
                             MSG_NOSIGNAL);
            if (k > 0)
                sent[i] += k;
            /* the server closed it, or stopped reading: this client is as far as it gets */
            done[i] = (k < 0 && errno != EAGAIN) || sent[i] == length - 1;
            busy = busy || !done[i];
        }
        struct pollfd p[CONNS];
        for (int i = 0; i < CONNS; i++)
            p[i] = (struct pollfd){.fd = done[i] ? -1 : fd[i], .events = POLLOUT};
        /* a client the server stopped reading from (and never answers) ends at the 60 s cap */
        poll(p, CONNS, 100);
    }
    usleep(500000);
    long long growth = self_rss() - before;
    int answered = 0;
    long long total = 0;
    uint64_t until = qr_now_ns() + 5000000000ull; /* for all of them: a server that never answers */
    for (int i = 0; i < CONNS; i++) {
        bool closed;
        uint64_t now = qr_now_ns();
        answered += raw_answer(fd[i], now < until ? (int)((until - now) / 1000000u) : 0, &closed) == 401;
        total += sent[i];
    }
    for (int i = 0; i < CONNS; i++)
        close(fd[i]);
    fprintf(stderr, "%d clients sent %lld MiB without credentials; the server grew by %lld MiB\n", CONNS,
            total >> 20, growth >> 20);
    CHECK(before > 0);
    CHECK_MSG(growth < 100ll << 20, "the server grew by %lld MiB while %d unauthenticated bodies were held",
              growth >> 20, CONNS);
    CHECK_INT(answered, CONNS);

    /* Authenticated callers: routes that take a small JSON object refuse big bodies with 413 long
     * before server.max_body_bytes, which is for uploads. */
    api_resp r;
    size_t big = 2u << 20;
    char *pad = malloc(big + 64);
    CHECK(pad);
    int pn = snprintf(pad, big + 64, "{\"query\":\"expense\",\"padding\":\"");
    memset(pad + pn, 'a', big);
    snprintf(pad + pn + big, 64, "\"}");
    long st = api_http(f.base, "POST", "/v1/search", H(ALICE), pad, 0, &r);
    free(pad);
    CHECK_MSG(st == 413 && strcmp(api_error_code(&r), "payload_too_large") == 0 &&
                  strstr(qr_buf_str(&r.body), "server.max_json_bytes"),
              "a 2 MiB search: %ld %s", st, qr_buf_str(&r.body));
    api_resp_release(&r);
    char login[40 << 10];
    memset(login, ' ', sizeof(login) - 1);
    login[sizeof(login) - 1] = '\0';
    memcpy(login, "{\"username\":\"alice\",\"password\":\"x\"}", 35);
    CHECK_INT(api_http(f.base, "POST", "/v1/auth/token", NULL, login, 0, &r), 413);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(ALICE), "{\"query\":\"expense\"}", 0, &r), 200);
    api_resp_release(&r);
    /* answers keep their connection alive, whether they come from the headers alone (a request
     * without a body is handled by the worker that authenticates it) or after a body */
    struct {
        const char *method, *path, *auth, *body;
        long status;
    } again[] = {
        {"GET", "/v1/me", ALICE, NULL, 200},
        {"GET", "/v1/me", NULL, NULL, 401},
        {"POST", "/v1/search", ALICE, "{\"query\":\"expense\"}", 200},
    };
    for (size_t i = 0; i < sizeof(again) / sizeof(again[0]); i++) {
        long status;
        bool reused = kept_alive(&f, again[i].method, again[i].path, again[i].auth, again[i].body, &status);
        CHECK_MSG(reused && status == again[i].status, "%s %s: status %ld, connection %s", again[i].method,
                  again[i].path, status, reused ? "reused" : "not reused");
    }
    /* an administrator's upload that waits for 100 Continue gets it once authenticated */
    const char doc[] = "{\"doc_id\":\"continue.md\",\"text\":\"Sent after 100 Continue.\"}";
    char up[1024];
    int un = snprintf(up, sizeof(up),
                      "POST /v1/documents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nExpect: 100-continue\r\n%s\r\n\r\n",
                      sizeof(doc) - 1, DAVE);
    int ufd = raw_connect(&f, NULL);
    CHECK(ufd >= 0 && raw_send(ufd, up, (size_t)un));
    bool closed;
    CHECK_INT(raw_answer(ufd, 10000, &closed), 100);
    CHECK(raw_send(ufd, doc, sizeof(doc) - 1));
    int created = raw_answer(ufd, 10000, &closed);
    close(ufd);
    CHECK_INT(created, 201);
    api_fx_stop(&f);
}

TEST(slow_headers_and_bodies_are_cut)
{
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "server.header_timeout_s", "2", "server.body_grace_s", "1", "server.min_body_rate",
                       "100", NULL));
    /* three slow clients, each well within MHD's 30 s idle timeout: one header line a second on a
     * new connection; the same on a kept-alive one after a first answer; a body a byte per 0.25 s */
    enum { HEADERS, KEPT_ALIVE, BODY, N };
    const char *what[N] = {"slow headers", "slow headers after an answer", "slow body"};
    int fd[N];
    for (int i = 0; i < N; i++)
        CHECK((fd[i] = raw_connect(&f, NULL)) >= 0);
    const char first[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(raw_send(fd[KEPT_ALIVE], first, sizeof(first) - 1));
    bool closed;
    CHECK_INT(raw_answer(fd[KEPT_ALIVE], 5000, &closed), 200);
    CHECK(!closed);
    const char line[] = "GET /healthz HTTP/1.1\r\n";
    const char post[] = "POST /v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        "Content-Length: 1000\r\n\r\n{";
    CHECK(raw_send(fd[HEADERS], line, sizeof(line) - 1));
    CHECK(raw_send(fd[KEPT_ALIVE], line, sizeof(line) - 1));
    CHECK(raw_send(fd[BODY], post, sizeof(post) - 1));
    uint64_t t0 = qr_now_ns();
    double cut[N] = {0, 0, 0};
    bool served = false;
    for (int tick = 0; qr_now_ns() - t0 < 12000000000ull && (!cut[0] || !cut[1] || !cut[2]); tick++) {
        usleep(250000);
        double secs = (double)(qr_now_ns() - t0) / 1e9;
        for (int i = 0; i < N; i++) {
            if (cut[i])
                continue;
            char buf[4096] = "";
            size_t len = 0;
            bool gone = raw_drain(fd[i], buf, sizeof(buf), &len);
            if (!gone && i == BODY)
                gone = !raw_send(fd[i], " ", 1);
            else if (!gone && tick % 4 == 3)
                gone = !raw_send(fd[i], "X-Slow: 1\r\n", 11);
            if (gone)
                cut[i] = secs;
        }
        if (!served && secs > 1) {
            /* meanwhile an ordinary client is served */
            api_resp r;
            served = api_http(f.base, "GET", "/healthz", NULL, NULL, 0, &r) == 200;
            api_resp_release(&r);
            CHECK(served);
        }
    }
    for (int i = 0; i < N; i++)
        close(fd[i]);
    fprintf(stderr, "closed after %.2f s (headers), %.2f s (kept alive), %.2f s (body)\n", cut[HEADERS],
            cut[KEPT_ALIVE], cut[BODY]);
    /* deadlines: 2 s for the header blocks, 1 s of grace plus 1 s per 100 bytes for the body */
    for (int i = 0; i < N; i++)
        CHECK_MSG(cut[i] >= 0.75 && cut[i] < 8, "%s: %s after %.2f s", what[i],
                  cut[i] ? "closed" : "still open", cut[i] ? cut[i] : 12.0);
    CHECK(served);
    api_fx_stop(&f);
}

TEST(connections_per_address_are_limited)
{
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    /* a long header deadline: the kept-alive connections must outlast a slow run of this test */
    CHECK(api_fx_start(&f, "server.header_timeout_s", "120", NULL));
    /* the default limit: 64 connections from one address, each kept alive after an answer (so the
     * server surely holds all of them) */
    enum { LIMIT = 64 };
    int fd[LIMIT];
    const char get[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < LIMIT; i++) {
        bool closed;
        CHECK((fd[i] = raw_connect(&f, "127.0.0.2")) >= 0);
        CHECK(raw_send(fd[i], get, sizeof(get) - 1));
        CHECK_MSG(raw_answer(fd[i], 5000, &closed) == 200 && !closed, "connection %d was not served", i);
    }
    /* one more from that address is closed at once, unanswered */
    int extra = raw_connect(&f, "127.0.0.2");
    CHECK(extra >= 0);
    raw_send(extra, get, sizeof(get) - 1);
    bool closed;
    int status = raw_answer(extra, 5000, &closed);
    close(extra);
    CHECK_MSG(closed && status == 0, "connection %d from one address: status %d, %s", LIMIT + 1, status,
              closed ? "closed" : "open");
    /* another address is served meanwhile */
    api_resp r;
    CHECK_INT(api_http(f.base, "GET", "/healthz", NULL, NULL, 0, &r), 200);
    api_resp_release(&r);
    /* and once one closes, the address may connect again */
    close(fd[0]);
    int again = 0;
    for (int i = 0; i < 40 && again != 200; i++) {
        usleep(50000);
        int g = raw_connect(&f, "127.0.0.2");
        if (g >= 0 && raw_send(g, get, sizeof(get) - 1))
            again = raw_answer(g, 2000, &closed);
        if (g >= 0)
            close(g);
    }
    for (int i = 1; i < LIMIT; i++)
        close(fd[i]);
    CHECK_INT(again, 200);
    api_fx_stop(&f);
}

TEST(tls_serving)
{
    char dir[256];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/quarry-api-tls.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    CHECK(mkdtemp(dir));
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext "
             "subjectAltName=IP:127.0.0.1 -keyout '%s/key.pem' -out '%s/cert.pem' >/dev/null 2>&1",
             dir, dir);
    CHECK(system(cmd) == 0);
    char cert[300], key[300];
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    bool started = api_fx_start(&f, "server.tls_cert", cert, "server.tls_key", key, NULL);
    CHECK(started);
    CHECK(strncmp(f.base, "https://", 8) == 0);
    CURL *h = curl_easy_init();
    char url[256];
    snprintf(url, sizeof(url), "%s/healthz", f.base);
    qr_buf body;
    qr_buf_init(&body, 1 << 16);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CAINFO, cert);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, api_sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    bool ok = rc == CURLE_OK && code == 200 && strstr(qr_buf_str(&body), "\"ok\"");
    qr_buf_release(&body);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    CHECK_MSG(ok, "https /healthz: curl %d, status %ld", rc, code);
    api_fx_stop(&f);
}

/* ---- documents ---------------------------------------------------------------------------------- */

TEST(documents_lifecycle)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    api_resp r;
    const char *doc =
        "{\"doc_id\":\"policies/travel.md\",\"title\":\"Travel\",\"text\":\"# Travel\\n\\nBook "
        "economy for flights under six hours.\",\"content_type\":\"text/markdown\",\"acl\":[\"group:"
        "staff\"],\"metadata\":{\"owner\":\"hr\"}}";
    CHECK_INT(api_http(f.base, "POST", "/v1/documents", H(DAVE), doc, 0, &r), 201);
    CHECK_STR(json_string_value(json_object_get(r.json, "result")), "added");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/documents", H(DAVE), doc, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "result")), "unchanged");
    api_resp_release(&r);
    /* the id is one path segment encoded, or several plain */
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/policies%2Ftravel.md?chunks=true", H(DAVE), NULL, 0, &r),
              200);
    CHECK_STR(json_string_value(json_object_get(r.json, "title")), "Travel");
    CHECK_STR(json_string_value(json_object_get(json_object_get(r.json, "metadata"), "owner")), "hr");
    CHECK(json_array_size(json_object_get(r.json, "chunks")) >= 1);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/policies/travel.md", H(DAVE), NULL, 0, &r), 200);
    CHECK(json_object_get(r.json, "chunks") == NULL);
    api_resp_release(&r);

    /* PUT replaces the text and keeps the ACL it was not given */
    CHECK_INT(api_http(f.base, "PUT", "/v1/documents/policies%2Ftravel.md", H(DAVE),
                       "{\"text\":\"# Travel\\n\\nBusiness class above eight hours.\"}", 0, &r),
              200);
    CHECK_STR(json_string_value(json_object_get(r.json, "result")), "updated");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/policies%2Ftravel.md", H(DAVE), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_array_get(json_object_get(r.json, "acl"), 0)), "group:staff");
    CHECK_INT(json_integer_value(json_object_get(r.json, "version")), 2);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "PUT", "/v1/documents/other", H(DAVE), "{\"doc_id\":\"else\",\"text\":\"x\"}",
                       0, &r),
              400);
    api_resp_release(&r);

    /* ACL changes */
    CHECK_INT(api_http(f.base, "PATCH", "/v1/documents/policies%2Ftravel.md/acl", H(DAVE),
                       "{\"acl\":[\"user:alice\",\"group:sales, emea\"]}", 0, &r),
              200);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/policies%2Ftravel.md", H(DAVE), NULL, 0, &r), 200);
    CHECK_INT(json_array_size(json_object_get(r.json, "acl")), 2);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "PATCH", "/v1/documents/policies%2Ftravel.md/acl", H(DAVE),
                       "{\"acl\":[\"everyone\"]}", 0, &r),
              400);
    CHECK(api_error_shape(&r));
    api_resp_release(&r);
    CHECK_INT(
        api_http(f.base, "PATCH", "/v1/documents/missing/acl", H(DAVE), "{\"acl\":[\"public\"]}", 0, &r),
        404);
    api_resp_release(&r);

    /* base64 bytes with a declared type: extracted as HTML */
    const char *html =
        "{\"doc_id\":\"kb/vpn.html\",\"content_base64\":\"PGh0bWw+PGJvZHk+PGgxPlZQTjwvaDE+PHA+Q29ubm"
        "VjdCB3aXRoIHRoZSBjbGllbnQuPC9wPjwvYm9keT48L2h0bWw+\",\"content_type\":\"text/html\","
        "\"acl\":[\"public\"]}";
    CHECK_INT(api_http(f.base, "POST", "/v1/documents", H(DAVE), html, 0, &r), 201);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/kb%2Fvpn.html?chunks=1", H(DAVE), NULL, 0, &r), 200);
    const char *text =
        json_string_value(json_object_get(json_array_get(json_object_get(r.json, "chunks"), 0), "text"));
    CHECK_MSG(text && strstr(text, "Connect with the client.") && !strstr(text, "<p>"), "%s",
              text ? text : "");
    CHECK_STR(json_string_value(json_object_get(r.json, "content_type")), "text/html");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/documents", H(DAVE),
                       "{\"doc_id\":\"x\",\"content_base64\":\"***\",\"content_type\":\"text/plain\"}", 0,
                       &r),
              400);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/documents", H(DAVE),
                       "{\"doc_id\":\"x\",\"text\":\"a\",\"acl\":\"public\"}", 0, &r),
              400);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/documents", H(DAVE), "{\"text\":\"no id\"}", 0, &r), 400);
    api_resp_release(&r);

    /* a multipart upload: the file name is the id, fields give the ACL and title */
    const char *mp =
        "--XyZ\r\nContent-Disposition: form-data; name=\"acl\"\r\n\r\ngroup:engineering\r\n"
        "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nOn-call guide\r\n"
        "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../oncall.md\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n# On call\n\nPage the secondary after 15 "
        "minutes.\r\n--XyZ--\r\n";
    CHECK_INT(api_http(f.base, "POST", "/v1/documents",
                       H(DAVE, "Content-Type: multipart/form-data; boundary=XyZ"), mp, 0, &r),
              201);
    CHECK_STR(json_string_value(json_object_get(r.json, "doc_id")), "oncall.md");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/oncall.md", H(DAVE), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "title")), "On-call guide");
    CHECK_STR(json_string_value(json_object_get(r.json, "content_type")), "text/markdown");
    CHECK_STR(json_string_value(json_array_get(json_object_get(r.json, "acl"), 0)), "group:engineering");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/documents",
                       H(DAVE, "Content-Type: multipart/form-data; boundary=XyZ"), "--XyZ\r\nno headers here",
                       0, &r),
              400);
    api_resp_release(&r);

    /* ids that look like paths reach no file: they are just documents that do not exist */
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/..%2F..%2F..%2Fetc%2Fpasswd", H(DAVE), NULL, 0, &r),
              404);
    CHECK_STR(api_error_code(&r), "not_found");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/../../etc/passwd", H(DAVE), NULL, 0, &r), 404);
    api_resp_release(&r);

    /* delete */
    CHECK_INT(api_http(f.base, "DELETE", "/v1/documents/policies%2Ftravel.md", H(DAVE), NULL, 0, &r), 200);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/policies%2Ftravel.md", H(DAVE), NULL, 0, &r), 404);
    CHECK(api_error_shape(&r));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "DELETE", "/v1/documents/policies%2Ftravel.md", H(DAVE), NULL, 0, &r), 404);
    api_resp_release(&r);
    api_fx_stop(&f);
}

/* The doc ids a BM25 search for `query` finds as `who`, comma-joined. */
static void bm25_ids(api_fixture *f, const char *who, const char *query, char *out, size_t len)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"query\":\"%s\",\"k\":5,\"mode\":\"bm25\"}", query);
    api_resp r;
    api_http(f->base, "POST", "/v1/search", H(who), body, 0, &r);
    result_ids(json_object_get(r.json, "results"), out, len);
    api_resp_release(&r);
}

/* A response's ACL ("acl" of its JSON body), comma-joined. */
static void acl_text(const api_resp *r, char *out, size_t len)
{
    size_t i, o = 0;
    json_t *e;
    out[0] = '\0';
    json_array_foreach(json_object_get(r->json, "acl"), i, e)
    {
        o += (size_t)snprintf(out + o, len > o ? len - o : 0, "%s%s", i ? "," : "", json_string_value(e));
    }
}

TEST(acl_principals_are_canonicalised)
{
    /* group:Engineering and user:ERIN could never match a caller: login lower-cases group and uid
     * names. Every entry point stores them lower-cased; one that cannot be made valid is refused
     * with a message that names it. */
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    api_resp r;
    char ids[512], acl[256];
    CHECK_INT(api_http(f.base, "PUT", "/v1/documents/notes%2Fcase.md?refresh=wait_for", H(DAVE),
                       "{\"title\":\"Case\",\"text\":\"Marker CASEFOLDDOC for the engineers and erin.\","
                       "\"acl\":[\"group:Engineering\",\"user:ERIN\"]}",
                       0, &r),
              201);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/notes%2Fcase.md", H(DAVE), NULL, 0, &r), 200);
    acl_text(&r, acl, sizeof(acl));
    api_resp_release(&r);
    CHECK_STR(acl, "group:engineering,user:erin");
    const char *readers[] = {BOB, ERIN};
    for (size_t i = 0; i < 2; i++) {
        bm25_ids(&f, readers[i], "CASEFOLDDOC", ids, sizeof(ids));
        CHECK_MSG(strcmp(ids, "notes/case.md") == 0, "%s: %s", i ? "erin" : "bob", ids);
    }
    /* the ACL route */
    CHECK_INT(api_http(f.base, "PATCH", "/v1/documents/notes%2Fcase.md/acl?refresh=wait_for", H(DAVE),
                       "{\"acl\":[\"group:STAFF\"]}", 0, &r),
              200);
    acl_text(&r, acl, sizeof(acl));
    api_resp_release(&r);
    CHECK_STR(acl, "group:staff");
    bm25_ids(&f, BOB, "CASEFOLDDOC", ids, sizeof(ids));
    CHECK_MSG(strcmp(ids, "notes/case.md") == 0, "bob, staff: %s", ids);
    bm25_ids(&f, ERIN, "CASEFOLDDOC", ids, sizeof(ids));
    CHECK_MSG(ids[0] == '\0', "erin, in no group: %s", ids);
    /* multipart acl fields */
    const char *mp = "--B\r\nContent-Disposition: form-data; name=\"acl\"\r\n\r\nuser:Erin\r\n"
                     "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"up.txt\"\r\n"
                     "Content-Type: text/plain\r\n\r\nMarker UPLOADCASE for erin.\r\n--B--\r\n";
    CHECK_INT(api_http(f.base, "POST", "/v1/documents?refresh=wait_for",
                       H(DAVE, "Content-Type: multipart/form-data; boundary=B"), mp, strlen(mp), &r),
              201);
    api_resp_release(&r);
    bm25_ids(&f, ERIN, "UPLOADCASE", ids, sizeof(ids));
    CHECK_MSG(strcmp(ids, "up.txt") == 0, "erin: %s", ids);
    /* refusals name the principal, and change nothing */
    CHECK_INT(api_http(f.base, "PATCH", "/v1/documents/notes%2Fcase.md/acl", H(DAVE),
                       "{\"acl\":[\"public\",\"user: erin\"]}", 0, &r),
              400);
    const char *msg = json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
    CHECK_MSG(msg && strstr(msg, "acl[1]") && strstr(msg, "'user: erin'") && strstr(msg, "space"), "%s",
              msg ? msg : qr_buf_str(&r.body));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/documents", H(DAVE),
                       "{\"doc_id\":\"notes/bad.md\",\"text\":\"never\",\"acl\":[\"Admins\"]}", 0, &r),
              400);
    msg = json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
    CHECK_MSG(msg && strstr(msg, "'Admins'") && strstr(msg, "group:<name>"), "%s", msg ? msg : "");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/notes%2Fbad.md", H(DAVE), NULL, 0, &r), 404);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/notes%2Fcase.md", H(DAVE), NULL, 0, &r), 200);
    acl_text(&r, acl, sizeof(acl));
    api_resp_release(&r);
    CHECK_STR(acl, "group:staff");
    api_fx_stop(&f);
}

TEST(documents_listing_pages)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    const char *ids[] = {"a", "b/1", "b/2", "c", "d\xc3\xa9", "e", "f"};
    for (size_t i = 0; i < 7; i++)
        CHECK_INT(put_doc(&f, ids[i], ids[i], "some text here", "[\"public\"]"), 201);
    char path[512] = "/v1/documents?limit=3";
    char seen[256] = "";
    int pages = 0;
    for (;;) {
        api_resp r;
        CHECK_INT(api_http(f.base, "GET", path, H(DAVE), NULL, 0, &r), 200);
        json_t *docs = json_object_get(r.json, "documents");
        CHECK(json_array_size(docs) <= 3);
        size_t i;
        json_t *e;
        json_array_foreach(docs, i, e)
        {
            strcat(seen, json_string_value(json_object_get(e, "doc_id")));
            strcat(seen, ";");
        }
        pages++;
        const char *next = json_string_value(json_object_get(r.json, "next_cursor"));
        if (!next) {
            api_resp_release(&r);
            break;
        }
        snprintf(path, sizeof(path), "/v1/documents?limit=3&cursor=%s", next);
        api_resp_release(&r);
        CHECK(pages < 10);
    }
    CHECK_INT(pages, 3);
    CHECK_STR(seen, "a;b/1;b/2;c;d\xc3\xa9;e;f;");
    api_resp r;
    CHECK_INT(api_http(f.base, "GET", "/v1/documents?limit=0", H(DAVE), NULL, 0, &r), 400);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents?cursor=%%%%", H(DAVE), NULL, 0, &r), 400);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents?cursor=bm90LW91cnM", H(DAVE), NULL, 0, &r), 400);
    api_resp_release(&r);
    api_fx_stop(&f);
}

static json_t *wait_job(api_fixture *f, const char *id)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/jobs/%s", id);
    for (int i = 0; i < 300; i++) {
        api_resp r;
        api_http(f->base, "GET", path, H(DAVE), NULL, 0, &r);
        const char *state = json_string_value(json_object_get(r.json, "state"));
        if (state && strcmp(state, "queued") != 0 && strcmp(state, "running") != 0) {
            json_t *j = json_incref(r.json);
            api_resp_release(&r);
            return j;
        }
        api_resp_release(&r);
        usleep(50000);
    }
    return NULL;
}

TEST(jobs_for_large_uploads_and_rebuilds)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "server.job_threshold_bytes", "200", NULL));
    api_resp r;
    /* three files in one upload: a job */
    qr_buf mp;
    qr_buf_init(&mp, 1 << 20);
    qr_buf_puts(&mp, "--B\r\nContent-Disposition: form-data; name=\"acl\"\r\n\r\npublic\r\n");
    for (int i = 0; i < 3; i++)
        qr_buf_printf(&mp,
                      "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"note%d.txt\"\r\n"
                      "Content-Type: text/plain\r\n\r\nNote %d about the quarterly budget forecast.\r\n",
                      i, i);
    qr_buf_puts(&mp, "--B--\r\n");
    CHECK_INT(api_http(f.base, "POST", "/v1/documents",
                       H(DAVE, "Content-Type: multipart/form-data; boundary=B"), qr_buf_str(&mp),
                       qr_buf_len(&mp), &r),
              202);
    qr_buf_release(&mp);
    char id[64];
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(r.json, "job_id")));
    char loc[128];
    CHECK(header_value(&r, "Location", loc, sizeof(loc)) && strstr(loc, id));
    api_resp_release(&r);
    json_t *job = wait_job(&f, id);
    CHECK(job);
    char *dump = json_dumps(job, 0);
    bool ok = strcmp(json_string_value(json_object_get(job, "state")), "succeeded") == 0 &&
              json_integer_value(json_object_get(json_object_get(job, "progress"), "done")) == 3 &&
              json_integer_value(json_object_get(json_object_get(job, "progress"), "total")) == 3 &&
              json_array_size(json_object_get(job, "results")) == 3;
    json_decref(job);
    CHECK_MSG(ok, "%s", dump);
    free(dump);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/note2.txt", H(DAVE), NULL, 0, &r), 200);
    api_resp_release(&r);
    /* one document over the threshold: a job too; a failing document is reported, others go on */
    CHECK_INT(api_http(f.base, "POST", "/v1/documents", H(DAVE),
                       "{\"documents\":[{\"doc_id\":\"ok1\",\"text\":\"fine\"},{\"doc_id\":\"bad\","
                       "\"content_base64\":\"AAEC\",\"content_type\":\"application/x-unknown\"}]}",
                       0, &r),
              202);
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(r.json, "job_id")));
    api_resp_release(&r);
    job = wait_job(&f, id);
    CHECK(job);
    ok = json_integer_value(json_object_get(json_object_get(job, "progress"), "failed")) == 1 &&
         json_integer_value(json_object_get(json_object_get(job, "progress"), "done")) == 2;
    json_decref(job);
    CHECK(ok);
    /* a rebuild publishes a new generation */
    CHECK_INT(api_http(f.base, "POST", "/v1/index/rebuild", H(DAVE), "{}", 0, &r), 202);
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(r.json, "job_id")));
    api_resp_release(&r);
    job = wait_job(&f, id);
    CHECK(job);
    json_t *res = json_array_get(json_object_get(job, "results"), 0);
    ok = strcmp(json_string_value(json_object_get(job, "state")), "succeeded") == 0 &&
         json_integer_value(json_object_get(res, "generation")) >= 2 &&
         json_integer_value(json_object_get(res, "vectors")) >= 4;
    dump = json_dumps(job, 0);
    json_decref(job);
    CHECK_MSG(ok, "%s", dump);
    free(dump);
    CHECK_INT(api_http(f.base, "GET", "/v1/jobs/nothex", H(DAVE), NULL, 0, &r), 400);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", H(DAVE), NULL, 0, &r), 400);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/jobs/0123456789abcdef0123456789abcdef", H(DAVE), NULL, 0, &r),
              404);
    api_resp_release(&r);
    api_fx_stop(&f);
}

/* ---- search and answers, trimmed to each caller ---------------------------------------------------- */

/* A maintainer slowed by a hook: each pass from `from` on sleeps `ms` first. */
typedef struct {
    atomic_uint_fast64_t from;
    unsigned ms;
} slow_maint;

static void slow_hook(void *ctx, uint64_t pass)
{
    slow_maint *sm = ctx;
    uint64_t from = atomic_load(&sm->from);
    if (from && pass >= from)
        usleep(sm->ms * 1000u);
}

static bool maint_busy(api_fixture *f)
{
    index_maintainer_status ms;
    index_maintainer_get_status(api_service_maintainer(f->srv->svc), &ms);
    return ms.busy;
}

/* Milliseconds one request took. */
static double timed_http(api_fixture *f, const char *method, const char *path, const char *who,
                         const char *body, api_resp *r, long *status)
{
    uint64_t t0 = qr_now_ns();
    *status = api_http(f->base, method, path, H(who), body, 0, r);
    return (double)(qr_now_ns() - t0) / 1e6;
}

TEST(maintainer_never_blocks_requests)
{
    /* The maintainer is made to take 5 s over a pass. Meanwhile searches, a delete and an ACL
     * change answer at once (a request that waited for it would take seconds: the bound is 1 s
     * so that a loaded or sanitized build does not fail by noise), the deleted document is gone
     * from the very next search and the revoked reader sees nothing of it, on every mode. */
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    static slow_maint sm = {.ms = 5000};
    index_maintainer_set_hook(api_service_maintainer(f.srv->svc), slow_hook, &sm);
    index_maintainer_status before;
    index_maintainer_get_status(api_service_maintainer(f.srv->svc), &before);
    atomic_store(&sm.from, before.passes + 1);
    /* a write without wait_for wakes the maintainer, which now sleeps in its pass */
    api_resp r;
    long st;
    double ms = timed_http(&f, "POST", "/v1/documents", DAVE,
                           "{\"doc_id\":\"notes/new.md\",\"title\":\"New\",\"text\":\"Expense reimbursement "
                           "for new hires. Marker LYCHEENEW.\",\"acl\":[\"group:staff\"]}",
                           &r, &st);
    api_resp_release(&r);
    CHECK_MSG(st == 201 && ms < 1000, "PUT: status %ld in %.0f ms", st, ms);
    for (int i = 0; i < 100 && !maint_busy(&f); i++)
        usleep(10000);
    CHECK_MSG(maint_busy(&f), "the maintainer never started its slowed pass");
    const char *modes[] = {"bm25", "vector", "hybrid"};
    char ids[1024], body[256];
    for (size_t m = 0; m < 3; m++) {
        snprintf(body, sizeof(body), "{\"query\":\"expense reimbursement\",\"k\":10,\"mode\":\"%s\"}",
                 modes[m]);
        ms = timed_http(&f, "POST", "/v1/search", ALICE, body, &r, &st);
        result_ids(json_object_get(r.json, "results"), ids, sizeof(ids));
        api_resp_release(&r);
        CHECK_MSG(st == 200 && ms < 1000, "%s search during a pass: status %ld in %.0f ms", modes[m], st, ms);
        CHECK_MSG(strstr(ids, "policies/expenses.md"), "%s: %s", modes[m], ids);
    }
    /* a delete: answered at once, and gone from the next search on every path */
    ms = timed_http(&f, "DELETE", "/v1/documents/policies%2Fexpenses.md", DAVE, NULL, &r, &st);
    api_resp_release(&r);
    CHECK_MSG(st == 200 && ms < 1000, "DELETE during a pass: status %ld in %.0f ms", st, ms);
    /* an ACL change: alice loses the backend runbook */
    ms = timed_http(&f, "PATCH", "/v1/documents/runbooks%2Fbackend.md/acl", DAVE, "{\"acl\":[\"user:erin\"]}",
                    &r, &st);
    api_resp_release(&r);
    CHECK_MSG(st == 200 && ms < 1000, "ACL change during a pass: status %ld in %.0f ms", st, ms);
    CHECK(maint_busy(&f));
    for (size_t m = 0; m < 3; m++) {
        snprintf(body, sizeof(body), "{\"query\":\"expense reimbursement\",\"k\":10,\"mode\":\"%s\"}",
                 modes[m]);
        ms = timed_http(&f, "POST", "/v1/search", ALICE, body, &r, &st);
        result_ids(json_object_get(r.json, "results"), ids, sizeof(ids));
        api_resp_release(&r);
        CHECK_MSG(st == 200 && ms < 1000, "%s search: status %ld in %.0f ms", modes[m], st, ms);
        CHECK_MSG(!strstr(ids, "expenses") && !strstr(ids, "backend"), "%s after delete and revoke: %s",
                  modes[m], ids);
        ms = timed_http(&f, "POST", "/v1/search", DAVE, body, &r, &st);
        result_ids(json_object_get(r.json, "results"), ids, sizeof(ids));
        api_resp_release(&r);
        CHECK_MSG(st == 200 && !strstr(ids, "expenses"), "%s as an administrator after delete: %s", modes[m],
                  ids);
    }
    CHECK_MSG(maint_busy(&f), "the pass ended before the checks: they proved nothing");
    /* a bad refresh value is refused before anything is written */
    CHECK_INT(api_http(f.base, "POST", "/v1/documents?refresh=soon", H(DAVE),
                       "{\"doc_id\":\"notes/bad.md\",\"title\":\"Bad\",\"text\":\"never written\"}", 0, &r),
              400);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/notes%2Fbad.md", H(DAVE), NULL, 0, &r), 404);
    api_resp_release(&r);
    /* wait_for waits for the slowed pass, then the document is on every path */
    atomic_store(&sm.from, 0);
    CHECK_INT(api_http(f.base, "POST", "/v1/documents?refresh=wait_for", H(DAVE),
                       "{\"doc_id\":\"notes/later.md\",\"title\":\"Later\",\"text\":\"Durian reimbursement "
                       "rules. Marker DURIANLATER.\",\"acl\":[\"group:staff\"]}",
                       0, &r),
              201);
    CHECK(json_is_true(json_object_get(r.json, "searchable")));
    api_resp_release(&r);
    for (size_t m = 0; m < 3; m++) {
        snprintf(body, sizeof(body), "{\"query\":\"durian reimbursement rules\",\"k\":3,\"mode\":\"%s\"}",
                 modes[m]);
        CHECK_INT(api_http(f.base, "POST", "/v1/search", H(ALICE), body, 0, &r), 200);
        result_ids(json_object_get(r.json, "results"), ids, sizeof(ids));
        api_resp_release(&r);
        CHECK_MSG(strncmp(ids, "notes/later.md", 14) == 0, "%s after wait_for: %s", modes[m], ids);
    }
    /* readiness says what the indexes are doing */
    CHECK_INT(api_http(f.base, "GET", "/v1/status", H(DAVE), NULL, 0, &r), 200);
    json_t *ix = json_object_get(json_object_get(r.json, "checks"), "indexes");
    CHECK_STR(json_string_value(json_object_get(ix, "bm25")), "warm");
    CHECK_STR(json_string_value(json_object_get(ix, "vector")), "warm");
    api_resp_release(&r);
    api_fx_stop(&f);
}

/* The doc ids a vector search for `query` finds as `who`, comma-joined; the status goes to *status. */
static void vector_ids(api_fixture *f, const char *who, const char *query, char *out, size_t len,
                       long *status)
{
    char body[512];
    snprintf(body, sizeof(body), "{\"query\":\"%s\",\"k\":5,\"mode\":\"vector\"}", query);
    api_resp r;
    *status = api_http(f->base, "POST", "/v1/search", H(who), body, 0, &r);
    result_ids(json_object_get(r.json, "results"), out, len);
    api_resp_release(&r);
}

/* An integer of /v1/status's checks.indexes, or -1. */
static long long readyz_index_int(api_fixture *f, const char *field, long *status)
{
    api_resp r;
    *status = api_http(f->base, "GET", "/v1/status", H(DAVE), NULL, 0, &r);
    json_t *v = json_object_get(json_object_get(json_object_get(r.json, "checks"), "indexes"), field);
    long long n = json_is_integer(v) ? (long long)json_integer_value(v) : -1;
    api_resp_release(&r);
    return n;
}

/* The value of a metric line ("name value" or "name{labels} value"), or -1. */
static double metric_value(api_fixture *f, const char *series)
{
    api_resp r;
    double v = -1;
    if (api_http(f->base, "GET", "/metrics", H(DAVE), NULL, 0, &r) == 200) {
        const char *text = qr_buf_str(&r.body);
        size_t n = strlen(series);
        for (const char *line = text; line && *line;
             line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
            if (strncmp(line, series, n) == 0 && line[n] == ' ')
                v = atof(line + n + 1);
    }
    api_resp_release(&r);
    return v;
}

TEST(poison_document_never_stops_the_vector_index)
{
    /* Texts with no word the local embedder knows ("x", "!", "the") embed to a zero vector, which
     * cannot be normalised. Such a chunk is left out of vector search and counted; the catch-up
     * goes on past it, so the next document is found by vector search, and so is it after a
     * forced rebuild. */
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    /* a first document builds the vector index, so that what follows goes through catch-up */
    CHECK_INT(
        put_doc(&f, "notes/first.md", "First", "Wombat burrow surveys. Marker WOMBATFIRST.", "[\"public\"]"),
        201);
    api_resp r;
    const char *poison[] = {"x", "!", "the"};
    for (size_t i = 0; i < 3; i++) {
        char body[128], id[16];
        snprintf(id, sizeof(id), "rt-z%zu", i);
        snprintf(body, sizeof(body), "{\"doc_id\":\"%s\",\"text\":\"%s\",\"acl\":[\"public\"]}", id,
                 poison[i]);
        CHECK_INT(api_http(f.base, "POST", "/v1/documents?refresh=wait_for", H(DAVE), body, 0, &r), 201);
        CHECK_MSG(json_is_true(json_object_get(r.json, "searchable")), "%s: %s", id, qr_buf_str(&r.body));
        api_resp_release(&r);
    }
    CHECK_INT(put_doc(&f, "notes/after.md", "After",
                      "Quokka migration patterns on the western islands. Marker QUOKKAAFTER.",
                      "[\"public\"]"),
              201);
    char ids[1024];
    long st;
    const char *who[] = {ALICE, DAVE}; /* exact scan of the permitted chunks; the index itself */
    for (size_t w = 0; w < 2; w++) {
        vector_ids(&f, who[w], "quokka migration patterns", ids, sizeof(ids), &st);
        CHECK_MSG(st == 200 && strncmp(ids, "notes/after.md", 14) == 0, "caught up, %s: %ld %s",
                  w ? "dave" : "alice", st, ids);
    }
    CHECK_INT(readyz_index_int(&f, "vectors_skipped", &st), 3);
    CHECK_INT(st, 200);
    CHECK_INT(readyz_index_int(&f, "vector_failed_passes", &st), 0);
    CHECK(metric_value(&f, "quarry_index_vectors_skipped") == 3);
    CHECK(metric_value(&f, "quarry_index_failed_passes{index=\"vector\"}") == 0);

    /* a forced rebuild builds past them too */
    CHECK_INT(api_http(f.base, "POST", "/v1/index/rebuild", H(DAVE), "{}", 0, &r), 202);
    char job_id[64];
    snprintf(job_id, sizeof(job_id), "%s", json_string_value(json_object_get(r.json, "job_id")));
    api_resp_release(&r);
    json_t *job = wait_job(&f, job_id);
    CHECK(job);
    json_t *res = json_array_get(json_object_get(job, "results"), 0);
    bool ok = strcmp(json_string_value(json_object_get(job, "state")), "succeeded") == 0 &&
              json_integer_value(json_object_get(res, "vectors")) == 2 &&
              json_integer_value(json_object_get(res, "skipped")) == 3;
    char *dump = json_dumps(job, 0);
    json_decref(job);
    CHECK_MSG(ok, "%s", dump);
    free(dump);
    CHECK_INT(put_doc(&f, "notes/later.md", "Later", "Platypus river counts. Marker PLATYPUSLATER.",
                      "[\"public\"]"),
              201);
    for (size_t w = 0; w < 2; w++) {
        vector_ids(&f, who[w], "quokka migration patterns", ids, sizeof(ids), &st);
        CHECK_MSG(st == 200 && strncmp(ids, "notes/after.md", 14) == 0, "rebuilt, %s: %ld %s",
                  w ? "dave" : "alice", st, ids);
        vector_ids(&f, who[w], "platypus river counts", ids, sizeof(ids), &st);
        CHECK_MSG(st == 200 && strncmp(ids, "notes/later.md", 14) == 0, "after the rebuild, %s: %ld %s",
                  w ? "dave" : "alice", st, ids);
    }
    /* the count follows deletions */
    CHECK_INT(api_http(f.base, "DELETE", "/v1/documents/rt-z1?refresh=wait_for", H(DAVE), NULL, 0, &r), 200);
    api_resp_release(&r);
    CHECK_INT(readyz_index_int(&f, "vectors_skipped", &st), 2);
    CHECK_INT(st, 200);
    CHECK(metric_value(&f, "quarry_index_vectors_skipped") == 2);
    api_fx_stop(&f);
}

TEST(readyz_says_when_the_vector_index_keeps_failing)
{
    /* With vindex.delta_max=1 every catch-up of two chunks is a build; with the index's directory
     * replaced by a file every build fails, so the vector index stops following the store. Within
     * a few passes /v1/status says so (503, "failing"); once the directory is back it recovers. */
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "vindex.delta_max", "1", "index.refresh_ms", "50", NULL));
    CHECK_INT(put_doc(&f, "notes/one.md", "One", "Echidna habitats. Marker ECHIDNAONE.", "[\"public\"]"),
              201);
    long st;
    CHECK_INT(readyz_index_int(&f, "vector_failed_passes", &st), 0);
    CHECK_INT(st, 200);
    char vdir[400], away[400];
    snprintf(vdir, sizeof(vdir), "%s/data/vindex", f.dir);
    snprintf(away, sizeof(away), "%s/data/vindex.away", f.dir);
    CHECK(rename(vdir, away) == 0);
    FILE *blocker = fopen(vdir, "w");
    CHECK(blocker != NULL);
    fclose(blocker);
    api_resp r;
    CHECK_INT(
        api_http(
            f.base, "POST", "/v1/documents", H(DAVE),
            "{\"documents\":[{\"doc_id\":\"notes/two.md\",\"text\":\"Bilby tracks.\",\"acl\":[\"public\"]},"
            "{\"doc_id\":\"notes/three.md\",\"text\":\"Numbat nests.\",\"acl\":[\"public\"]}]}",
            0, &r),
        202);
    api_resp_release(&r);
    /* passes every 50 ms: well within 20 s on any machine */
    long long failed = 0;
    for (int i = 0; i < 400 && failed < INDEX_MAINTAINER_FAILING_PASSES; i++) {
        failed = readyz_index_int(&f, "vector_failed_passes", &st);
        usleep(50000);
    }
    CHECK_MSG(failed >= INDEX_MAINTAINER_FAILING_PASSES, "failed passes: %lld", failed);
    CHECK_INT(api_http(f.base, "GET", "/v1/status", H(DAVE), NULL, 0, &r), 503);
    CHECK_STR(json_string_value(json_object_get(r.json, "status")), "not_ready");
    json_t *checks = json_object_get(r.json, "checks");
    CHECK_STR(json_string_value(json_object_get(checks, "index")), "failing");
    CHECK_STR(json_string_value(json_object_get(json_object_get(checks, "indexes"), "vector")), "failing");
    api_resp_release(&r);
    CHECK(metric_value(&f, "quarry_index_failed_passes{index=\"vector\"}") >=
          INDEX_MAINTAINER_FAILING_PASSES);
    /* the directory comes back: the next pass builds, and readiness follows */
    CHECK(unlink(vdir) == 0 && rename(away, vdir) == 0);
    failed = -1;
    for (int i = 0; i < 400 && failed != 0; i++) {
        failed = readyz_index_int(&f, "vector_failed_passes", &st);
        if (failed != 0)
            usleep(50000);
    }
    CHECK_INT(failed, 0);
    CHECK_INT(st, 200);
    char ids[1024];
    vector_ids(&f, DAVE, "numbat nests", ids, sizeof(ids), &st);
    CHECK_MSG(st == 200 && strncmp(ids, "notes/three.md", 14) == 0, "%ld %s", st, ids);
    api_fx_stop(&f);
}

/* The quarry command line for the fixture's data directory and directory server. */
static void cli_prefix(api_fixture *f, char *out, size_t len)
{
    const char *base = getenv("QUARRY_TEST_LDAP_BASE");
    snprintf(out, len,
             "%s --data '%s/data' --set log.level=warn --set auth.admin_groups=ops --set ldap.uri='%s' --set "
             "ldap.bind_dn='%s' --set ldap.bind_password='%s' --set ldap.user_base='ou=people,%s' --set "
             "ldap.group_base='ou=groups,%s'",
             QUARRY_BIN, f->dir, getenv("QUARRY_TEST_LDAP_URI"), getenv("QUARRY_TEST_LDAP_BIND_DN"),
             getenv("QUARRY_TEST_LDAP_BIND_PW"), base ? base : "dc=quarry,dc=test",
             base ? base : "dc=quarry,dc=test");
}

/* The first n queries' texts of a collection's queries.jsonl. */
static size_t read_queries(const char *path, char queries[][512], size_t n)
{
    FILE *fp = fopen(path, "r");
    char line[4096];
    size_t got = 0;
    while (fp && got < n && fgets(line, sizeof(line), fp)) {
        json_t *j = json_loads(line, 0, NULL);
        const char *t = json_string_value(json_object_get(j, "text"));
        if (t && *t)
            snprintf(queries[got++], 512, "%s", t);
        json_decref(j);
    }
    if (fp)
        fclose(fp);
    return got;
}

/* Whether two result lists are the same: every field equal, scores to 1e-9 (JSON rounds them). */
static bool same_results(json_t *a, json_t *b, char *why, size_t len)
{
    if (json_array_size(a) != json_array_size(b)) {
        snprintf(why, len, "%zu vs %zu results", json_array_size(a), json_array_size(b));
        return false;
    }
    static const char *strs[] = {"doc_id", "title", "uri", "headings", "snippet"};
    static const char *ints[] = {"chunk_id", "start", "end"};
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *x = json_array_get(a, i), *y = json_array_get(b, i);
        for (size_t k = 0; k < 3; k++)
            if (json_integer_value(json_object_get(x, ints[k])) !=
                json_integer_value(json_object_get(y, ints[k]))) {
                snprintf(why, len, "result %zu: %s differs", i, ints[k]);
                return false;
            }
        for (size_t k = 0; k < 5; k++) {
            const char *u = json_string_value(json_object_get(x, strs[k]));
            const char *v = json_string_value(json_object_get(y, strs[k]));
            if (!u || !v || strcmp(u, v) != 0) {
                snprintf(why, len, "result %zu: %s \"%s\" vs \"%s\"", i, strs[k], u ? u : "(none)",
                         v ? v : "(none)");
                return false;
            }
        }
        double p = json_number_value(json_object_get(x, "score")),
               q = json_number_value(json_object_get(y, "score"));
        if (fabs(p - q) > 1e-9 * fmax(1, fabs(p))) {
            snprintf(why, len, "result %zu: score %.17g vs %.17g", i, p, q);
            return false;
        }
    }
    return true;
}

TEST(cli_and_http_search_agree)
{
    /* The same caller and query give the same page -- results, order, snippets, offsets -- from
     * `quarry search --json` as from POST /v1/search, on a shared collection in every mode. */
    char corpus[512], qpath[512];
    snprintf(corpus, sizeof(corpus), "%s/cranfield/corpus.jsonl", QUARRY_DATASETS);
    snprintf(qpath, sizeof(qpath), "%s/cranfield/queries.jsonl", QUARRY_DATASETS);
    if (access(corpus, R_OK) != 0) {
        printf("skipped: %s not found (set QUARRY_DATASETS when configuring)\n", corpus);
        exit(77);
    }
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    static char queries[6][512];
    size_t nq = read_queries(qpath, queries, 6);
    CHECK(nq == 6);
    CHECK(api_fx_start(&f, NULL));
    /* the collection, readable by staff (alice); dave is an administrator */
    api_server_free(f.srv);
    f.srv = NULL;
    char cli[2048], cmd[4096], err[QR_ERR_LEN];
    cli_prefix(&f, cli, sizeof(cli));
    qr_buf out;
    qr_buf_init(&out, 1 << 24);
    snprintf(cmd, sizeof(cmd), "%s ingest --acl group:staff --jsonl '%s' >/dev/null", cli, corpus);
    CHECK_INT(test_capture(cmd, NULL), 0);
    CHECK_MSG(!api_server_new(f.cfg, &f.srv, err) && !api_server_start(f.srv, err), "%s", err);
    snprintf(f.base, sizeof(f.base), "%s", api_server_url(f.srv));
    const char *modes[] = {"bm25", "vector", "hybrid"};
    const char *users[] = {"alice", "dave"};
    const char *auths[] = {ALICE, DAVE};
    static json_t *http[2][3][6];
    for (size_t u = 0; u < 2; u++)
        for (size_t m = 0; m < 3; m++)
            for (size_t i = 0; i < nq; i++) {
                json_t *req = json_pack("{s:s,s:i,s:s}", "query", queries[i], "k", 10, "mode", modes[m]);
                char *body = json_dumps(req, 0);
                api_resp r;
                CHECK_INT(api_http(f.base, "POST", "/v1/search", H(auths[u]), body, 0, &r), 200);
                http[u][m][i] = json_incref(json_object_get(r.json, "results"));
                CHECK_MSG(json_array_size(http[u][m][i]) > 0, "%s %s query %zu: no results", users[u],
                          modes[m], i);
                api_resp_release(&r);
                free(body);
                json_decref(req);
            }
    /* the server holds the vector index: the command runs once it is gone */
    api_server_free(f.srv);
    f.srv = NULL;
    size_t compared = 0;
    for (size_t u = 0; u < 2; u++)
        for (size_t m = 0; m < 3; m++)
            for (size_t i = 0; i < nq; i++) {
                /* the query as one shell word: single quotes, with any of its own closed and reopened */
                char quoted[1200];
                size_t o = 0;
                quoted[o++] = '\'';
                for (const char *c = queries[i]; *c && o < sizeof(quoted) - 6; c++) {
                    if (*c == '\'') {
                        memcpy(quoted + o, "'\\''", 4);
                        o += 4;
                    } else {
                        quoted[o++] = *c;
                    }
                }
                quoted[o++] = '\'';
                quoted[o] = '\0';
                snprintf(cmd, sizeof(cmd), "%s search --json --as %s --mode %s -k 10 -- %s", cli, users[u],
                         modes[m], quoted);
                CHECK_INT(test_capture(cmd, &out), 0);
                json_t *j = json_loads(qr_buf_str(&out), 0, NULL);
                char why[512] = "";
                CHECK_MSG(j && same_results(http[u][m][i], json_object_get(j, "results"), why, sizeof(why)),
                          "%s %s query %zu: %s", users[u], modes[m], i, j ? why : "not JSON");
                compared += json_array_size(http[u][m][i]);
                json_decref(j);
                json_decref(http[u][m][i]);
            }
    printf("%zu results compared\n", compared);
    qr_buf_release(&out);
    api_fx_stop(&f);
}

TEST(search_is_trimmed_per_user)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    const char *modes[] = {"bm25", "vector", "hybrid"};
    for (size_t m = 0; m < 3; m++) {
        char a[1024], b[1024], e[1024], d[1024];
        long sa, sb, se, sd;
        search_ids(&f, ALICE, modes[m], a, sizeof(a), &sa);
        search_ids(&f, BOB, modes[m], b, sizeof(b), &sb);
        search_ids(&f, ERIN, modes[m], e, sizeof(e), &se);
        search_ids(&f, DAVE, modes[m], d, sizeof(d), &sd);
        CHECK_MSG(sa == 200 && sb == 200 && se == 200 && sd == 200, "%s: %ld %ld %ld %ld", modes[m], sa, sb,
                  se, sd);
        /* alice: backend + staff; bob: frontend + staff; erin: her review; dave (admin): all five */
        CHECK_MSG(strstr(a, "runbooks/backend.md") && strstr(a, "policies/expenses.md") &&
                      !strstr(a, "frontend") && !strstr(a, "erin") && !strstr(a, "board"),
                  "%s alice: %s", modes[m], a);
        CHECK_MSG(strstr(b, "runbooks/frontend.md") && strstr(b, "policies/expenses.md") &&
                      !strstr(b, "backend") && !strstr(b, "erin") && !strstr(b, "board"),
                  "%s bob: %s", modes[m], b);
        CHECK_MSG(strcmp(e, "hr/erin-review.md") == 0, "%s erin: %s", modes[m], e);
        CHECK_MSG(strstr(d, "backend") && strstr(d, "frontend") && strstr(d, "erin") && strstr(d, "board") &&
                      strstr(d, "expenses"),
                  "%s dave: %s", modes[m], d);
    }
    /* result objects carry the contract's fields */
    api_resp r;
    CHECK_INT(
        api_http(f.base, "POST", "/v1/search", H(ALICE), "{\"query\":\"blue-green deploys\",\"k\":1}", 0, &r),
        200);
    json_t *hit = json_array_get(json_object_get(r.json, "results"), 0);
    const char *fields[] = {"chunk_id", "doc_id",  "title", "uri", "headings",
                            "score",    "snippet", "start", "end"};
    for (size_t i = 0; i < 9; i++)
        CHECK_MSG(json_object_get(hit, fields[i]), "no %s in %s", fields[i], qr_buf_str(&r.body));
    CHECK_STR(json_string_value(json_object_get(hit, "doc_id")), "runbooks/backend.md");
    /* no mode named: the default, which with the local embedder is bm25 (retrieval.mode=auto) */
    CHECK_STR(json_string_value(json_object_get(r.json, "mode")), "bm25");
    api_resp_release(&r);
    /* hybrid stays there to choose */
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(ALICE),
                       "{\"query\":\"blue-green deploys\",\"k\":1,\"mode\":\"hybrid\"}", 0, &r),
              200);
    CHECK_STR(json_string_value(json_object_get(r.json, "mode")), "hybrid");
    api_resp_release(&r);
    /* filters and pages */
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(DAVE),
                       "{\"query\":\"expense reimbursement\",\"k\":2,\"mode\":\"bm25\"}", 0, &r),
              200);
    CHECK_INT(json_array_size(json_object_get(r.json, "results")), 2);
    const char *cursor = json_string_value(json_object_get(r.json, "next_cursor"));
    CHECK(cursor);
    char first[256], body[1024];
    result_ids(json_object_get(r.json, "results"), first, sizeof(first));
    snprintf(body, sizeof(body),
             "{\"query\":\"expense reimbursement\",\"k\":2,\"mode\":\"bm25\",\"cursor\":\"%s\"}", cursor);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(DAVE), body, 0, &r), 200);
    char second[256];
    result_ids(json_object_get(r.json, "results"), second, sizeof(second));
    CHECK_INT(json_array_size(json_object_get(r.json, "results")), 2);
    CHECK_MSG(!strstr(second, strtok(first, ",")), "page 2 (%s) repeats page 1", second);
    api_resp_release(&r);
    CHECK_INT(
        api_http(f.base, "POST", "/v1/search", H(DAVE),
                 "{\"query\":\"expense reimbursement\",\"filters\":{\"doc_ids\":[\"finance/board.md\"]}}", 0,
                 &r),
        200);
    char only[256];
    result_ids(json_object_get(r.json, "results"), only, sizeof(only));
    CHECK_STR(only, "finance/board.md");
    api_resp_release(&r);
    /* a filter cannot widen what a user sees */
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(ALICE),
                       "{\"query\":\"expense reimbursement\",\"filters\":{\"doc_ids\":[\"finance/board.md\","
                       "\"hr/erin-review.md\"]}}",
                       0, &r),
              200);
    CHECK_INT(json_array_size(json_object_get(r.json, "results")), 0);
    api_resp_release(&r);

    /* an ACL change takes effect at once */
    CHECK_INT(api_http(f.base, "PATCH", "/v1/documents/finance%2Fboard.md/acl", H(DAVE),
                       "{\"acl\":[\"user:alice\"]}", 0, &r),
              200);
    api_resp_release(&r);
    char a[1024];
    long sa;
    search_ids(&f, ALICE, "hybrid", a, sizeof(a), &sa);
    CHECK_MSG(strstr(a, "finance/board.md"), "after the ACL change alice sees: %s", a);
    CHECK_INT(api_http(f.base, "DELETE", "/v1/documents/finance%2Fboard.md", H(DAVE), NULL, 0, &r), 200);
    api_resp_release(&r);
    search_ids(&f, ALICE, "vector", a, sizeof(a), &sa);
    CHECK_MSG(!strstr(a, "finance/board.md"), "after the delete alice sees: %s", a);
    api_fx_stop(&f);
}

/* Checks an answer's citations and sources against what the user may read. */
static bool citations_only_from(json_t *citations, const char *const *allowed, size_t n, char *why,
                                size_t len)
{
    size_t i;
    json_t *c;
    json_array_foreach(citations, i, c)
    {
        const char *d = json_string_value(json_object_get(c, "doc_id"));
        bool ok = false;
        for (size_t k = 0; k < n && d; k++)
            ok = ok || strcmp(d, allowed[k]) == 0;
        if (!ok) {
            snprintf(why, len, "cited %s", d ? d : "(none)");
            return false;
        }
    }
    return true;
}

TEST(answers_never_use_forbidden_chunks)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    struct {
        const char *who;
        const char *allowed[2];
        const char *markers_ok[2];
        const char *markers_forbidden[3];
    } users[] = {
        {ALICE,
         {"runbooks/backend.md", "policies/expenses.md"},
         {"PINEAPPLEBACKEND", "KIWISTAFF"},
         {"MANGOFRONTEND", "PAPAYAERIN", "GUAVAADMIN"}},
        {BOB,
         {"runbooks/frontend.md", "policies/expenses.md"},
         {"MANGOFRONTEND", "KIWISTAFF"},
         {"PINEAPPLEBACKEND", "PAPAYAERIN", "GUAVAADMIN"}},
    };
    char first_sources[2][1024];
    for (size_t u = 0; u < 2; u++) {
        const char *routes[] = {"/v1/ask", "/v1/chat/completions"};
        for (size_t k = 0; k < 2; k++) {
            CHECK(fake_reset());
            api_resp r;
            const char *body =
                k == 0 ? "{\"question\":\"How does expense reimbursement work?\"}"
                       : "{\"model\":\"quarry\",\"messages\":[{\"role\":\"system\",\"content\":\"Be "
                         "brief.\"},{\"role\":\"user\",\"content\":\"How does expense reimbursement "
                         "work?\"}]}";
            CHECK_INT(api_http(f.base, "POST", routes[k], H(users[u].who), body, 0, &r), 200);
            json_t *cit = json_object_get(r.json, "citations");
            CHECK_MSG(json_array_size(cit) >= 1, "%s: no citations: %s", routes[k], qr_buf_str(&r.body));
            char why[256];
            CHECK_MSG(citations_only_from(cit, users[u].allowed, 2, why, sizeof(why)), "%s user %zu: %s",
                      routes[k], u, why);
            if (k == 0) {
                CHECK_STR(json_string_value(json_object_get(r.json, "mode")), "generative");
                CHECK(citations_only_from(json_object_get(r.json, "sources"), users[u].allowed, 2, why,
                                          sizeof(why)));
                result_ids(json_object_get(r.json, "sources"), first_sources[u], sizeof(first_sources[u]));
            } else {
                CHECK_STR(json_string_value(json_object_get(r.json, "object")), "chat.completion");
                json_t *msg =
                    json_object_get(json_array_get(json_object_get(r.json, "choices"), 0), "message");
                CHECK_STR(json_string_value(json_object_get(msg, "role")), "assistant");
                CHECK(strstr(json_string_value(json_object_get(msg, "content")), "fake inference server"));
                CHECK(json_integer_value(json_object_get(json_object_get(r.json, "usage"), "total_tokens")) >
                      0);
            }
            api_resp_release(&r);
            /* what the backend received: the permitted passages, never another's */
            char *got = fake_received();
            CHECK(got);
            bool one_ok = strstr(got, users[u].markers_ok[0]) || strstr(got, users[u].markers_ok[1]);
            const char *leak = NULL;
            for (size_t m = 0; m < 3; m++)
                if (strstr(got, users[u].markers_forbidden[m]))
                    leak = users[u].markers_forbidden[m];
            bool client_system = strstr(got, "Be brief.") != NULL;
            free(got);
            CHECK_MSG(one_ok, "%s: the backend got none of the user's passages", routes[k]);
            CHECK_MSG(!leak, "%s: the backend received %s", routes[k], leak);
            CHECK_MSG(!client_system, "a client's system message reached the backend");
        }
    }
    /* two users, same question, different sources */
    CHECK_MSG(strcmp(first_sources[0], first_sources[1]) != 0, "alice and bob got the same sources: %s",
              first_sources[0]);
    /* a user who may read nothing relevant: an answer without sources, nothing sent of others' */
    CHECK(fake_reset());
    api_resp r;
    CHECK(put_doc(&f, "ops/only.md", "Ops", "Nothing about money here.", "[\"group:nobody\"]") == 201);
    char noone[512];
    api_basic(noone, sizeof(noone), "erin", "Erin-pw-5");
    CHECK_INT(
        api_http(f.base, "POST", "/v1/ask", H(noone), "{\"question\":\"quarterly board totals?\"}", 0, &r),
        200);
    char why[256];
    const char *erin_allowed[] = {"hr/erin-review.md"};
    CHECK_MSG(citations_only_from(json_object_get(r.json, "citations"), erin_allowed, 1, why, sizeof(why)),
              "%s", why);
    api_resp_release(&r);
    char *got = fake_received();
    CHECK(got && !strstr(got, "GUAVAADMIN") && !strstr(got, "KIWISTAFF"));
    free(got);
    api_fx_stop(&f);
}

/* Reads an SSE body into events (the data: payloads, in order). */
static size_t sse_events(const char *body, char ***out)
{
    size_t n = 0;
    char **ev = NULL;
    const char *p = body;
    while ((p = strstr(p, "data: "))) {
        p += 6;
        size_t k = strcspn(p, "\n");
        ev = realloc(ev, (n + 1) * sizeof(*ev));
        ev[n++] = strndup(p, k);
        p += k;
    }
    *out = ev;
    return n;
}

TEST(chat_stream_sse)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    CHECK(fake_reset());
    api_resp plain, r;
    const char *msgs =
        "\"messages\":[{\"role\":\"user\",\"content\":\"Who approves expense reimbursement?\"}]";
    char body[512];
    snprintf(body, sizeof(body), "{%s}", msgs);
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(BOB), body, 0, &plain), 200);
    snprintf(body, sizeof(body), "{%s,\"stream\":true,\"stream_options\":{\"include_usage\":true}}", msgs);
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(BOB), body, 0, &r), 200);
    char ct[128];
    CHECK(header_value(&r, "Content-Type", ct, sizeof(ct)) && strncmp(ct, "text/event-stream", 17) == 0);
    char **ev = NULL;
    size_t n = sse_events(qr_buf_str(&r.body), &ev);
    CHECK_MSG(n >= 5, "%zu events: %s", n, qr_buf_str(&r.body));
    CHECK_STR(ev[n - 1], "[DONE]");
    qr_buf text;
    qr_buf_init(&text, 1 << 20);
    json_t *citations = NULL;
    const char *finish = NULL;
    bool role_first = false, usage_seen = false, ids_same = true;
    char first_id[128] = "";
    for (size_t i = 0; i + 1 < n; i++) {
        json_t *c = json_loads(ev[i], 0, NULL);
        CHECK_MSG(c, "event %zu is not JSON: %s", i, ev[i]);
        CHECK_STR(json_string_value(json_object_get(c, "object")), "chat.completion.chunk");
        const char *id = json_string_value(json_object_get(c, "id"));
        if (!*first_id)
            snprintf(first_id, sizeof(first_id), "%s", id);
        ids_same = ids_same && id && strcmp(id, first_id) == 0;
        json_t *choice = json_array_get(json_object_get(c, "choices"), 0);
        json_t *delta = json_object_get(choice, "delta");
        if (i == 0)
            role_first = json_is_string(json_object_get(delta, "role"));
        json_t *content = json_object_get(delta, "content");
        if (json_is_string(content))
            qr_buf_puts(&text, json_string_value(content));
        if (json_is_string(json_object_get(choice, "finish_reason")))
            finish = "set";
        if (json_object_get(c, "citations"))
            citations = json_incref(json_object_get(c, "citations"));
        if (json_is_object(json_object_get(c, "usage")))
            usage_seen = true;
        json_decref(c);
    }
    for (size_t i = 0; i < n; i++)
        free(ev[i]);
    free(ev);
    CHECK(role_first && finish && usage_seen && ids_same);
    CHECK_MSG(json_array_size(citations) >= 1, "no citations in the stream");
    const char *allowed[] = {"runbooks/frontend.md", "policies/expenses.md"};
    char why[256];
    CHECK_MSG(citations_only_from(citations, allowed, 2, why, sizeof(why)), "%s", why);
    json_decref(citations);
    const char *whole = json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(plain.json, "choices"), 0), "message"), "content"));
    CHECK_MSG(whole && strcmp(qr_buf_str(&text), whole) == 0, "stream \"%s\" != plain \"%s\"",
              qr_buf_str(&text), whole ? whole : "");
    qr_buf_release(&text);
    api_resp_release(&plain);
    api_resp_release(&r);
    CHECK_INT(fake_chat_requests(), 2);
    api_fx_stop(&f);
}

/* ---- OpenAI conventions on the OpenAI-compatible routes ---------------------------------------- */

/* The param of an error body, or "" when null or absent. */
/* The body of the last chat completion request the fake backend received (new reference), or NULL. */
static json_t *last_upstream_chat(void)
{
    api_resp r;
    api_http(fake_url(), "GET", "/_fake/requests", NULL, NULL, 0, &r);
    json_t *body = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(r.json, i, e)
    {
        const char *path = json_string_value(json_object_get(e, "path"));
        if (path && strstr(path, "/chat/completions")) {
            json_decref(body);
            body = json_incref(json_object_get(e, "body"));
        }
    }
    api_resp_release(&r);
    return body;
}

/* Installs a test client's pinned packages from its lock file when they are missing (a fresh
 * clone), if the registry answers; without it the case cannot run here, which is a skip (exit 77),
 * not a failure. */
static void npm_client_ready(const char *dir, const char *installed)
{
    char cmd[2048], path[1024];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/node_modules/%s", dir, installed);
    if (stat(path, &sb) == 0)
        return;
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && npm ping --fetch-retries=0 --fetch-timeout=10000 --loglevel=silent >/dev/null 2>&1",
             dir);
    if (system(cmd) != 0) {
        printf("skipped: no npm registry (the client is not installed in %s)\n", dir);
        exit(77);
    }
    snprintf(cmd, sizeof(cmd), "cd '%s' && npm ci --no-audit --no-fund --loglevel=error >&2", dir);
    CHECK_MSG(system(cmd) == 0, "npm ci failed in %s although the registry answers", dir);
}

/* Runs `node run.mjs QUESTION` in dir against the fixture as alice (through a key acting for her)
 * and parses the one JSON object it prints. */
static void run_npm_client(api_fixture *f, const char *dir, json_t **res)
{
    char *key = make_key(f, "chat,on_behalf_of");
    CHECK(key);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && QUARRY_URL='%s' QUARRY_KEY='%s' QUARRY_USER=alice node run.mjs "
             "'How are expense reimbursement claims filed?'",
             dir, f->base, key);
    free(key);
    FILE *p = popen(cmd, "r");
    CHECK(p);
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
        qr_buf_append(&out, chunk, n);
    int status = pclose(p);
    *res = json_loads(qr_buf_str(&out), 0, NULL);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0 && *res, "node: status %d, output %s", status,
              qr_buf_str(&out));
    qr_buf_release(&out);
}

/* context is Azure's {"citations":[{content, title, url, filepath, chunk_id}], "intent"} and lists the
 * documents of citations, in order. */
static bool context_of(json_t *context, json_t *citations)
{
    json_t *list = json_object_get(context, "citations");
    if (!json_is_array(list) || json_array_size(list) == 0 ||
        json_array_size(list) != json_array_size(citations))
        return false;
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        const char *fp = json_string_value(json_object_get(c, "filepath"));
        const char *doc = json_string_value(json_object_get(json_array_get(citations, i), "doc_id"));
        if (!fp || !doc || strcmp(fp, doc) != 0 || !json_is_string(json_object_get(c, "content")) ||
            !json_is_string(json_object_get(c, "chunk_id")))
            return false;
    }
    return true;
}

TEST(openai_npm_client)
{
    const char *dir = QUARRY_SOURCE_DIR "/tests/openai_client";
    npm_client_ready(dir, "openai/package.json");
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    json_t *res = NULL;
    run_npm_client(&f, dir, &res);
    json_t *plain = json_object_get(res, "plain"), *stream = json_object_get(res, "stream");
    CHECK_STR(json_string_value(json_object_get(plain, "object")), "chat.completion");
    CHECK_STR(json_string_value(json_object_get(plain, "model")), "quarry");
    CHECK_STR(json_string_value(json_object_get(plain, "finish_reason")), "stop");
    CHECK_STR(json_string_value(json_object_get(stream, "finish_reason")), "stop");
    const char *a = json_string_value(json_object_get(plain, "content"));
    const char *b = json_string_value(json_object_get(stream, "content"));
    CHECK_MSG(a && b && *a && strcmp(a, b) == 0, "plain \"%s\", streamed \"%s\"", a ? a : "", b ? b : "");
    CHECK(json_integer_value(json_object_get(stream, "chunks")) >= 4);
    CHECK_STR(json_string_value(json_array_get(json_object_get(stream, "roles"), 0)), "assistant");
    CHECK(json_is_object(json_object_get(stream, "usage")));
    const char *allowed[] = {"runbooks/backend.md", "policies/expenses.md"};
    char why[256];
    CHECK(json_array_size(json_object_get(plain, "citations")) >= 1);
    CHECK(json_array_size(json_object_get(stream, "citations")) >= 1);
    CHECK_MSG(citations_only_from(json_object_get(plain, "citations"), allowed, 2, why, sizeof(why)), "%s",
              why);
    CHECK_MSG(citations_only_from(json_object_get(stream, "citations"), allowed, 2, why, sizeof(why)), "%s",
              why);
    /* Azure's shape, through the SDK: choices[0].message.context and one delta.context */
    CHECK(context_of(json_object_get(plain, "context"), json_object_get(plain, "citations")));
    CHECK(context_of(json_object_get(stream, "context"), json_object_get(stream, "citations")));
    CHECK_INT(json_integer_value(json_object_get(stream, "contexts")), 1);
    /* models: the list, one retrieved, one missing as the SDK's NotFoundError */
    json_t *models = json_object_get(res, "models");
    CHECK_STR(json_string_value(json_array_get(json_object_get(models, "list"), 0)), "quarry");
    CHECK_STR(json_string_value(json_object_get(json_object_get(models, "retrieved"), "id")), "quarry");
    json_t *missing = json_object_get(models, "missing");
    CHECK(json_is_true(json_object_get(missing, "notFound")));
    CHECK_STR(json_string_value(json_object_get(missing, "class")), "NotFoundError");
    CHECK_STR(json_string_value(json_object_get(missing, "code")), "model_not_found");
    CHECK_STR(json_string_value(json_object_get(missing, "param")), "model");
    /* a bad key: the SDK's AuthenticationError, err.type authentication_error */
    json_t *bad = json_object_get(res, "bad_key");
    CHECK(json_is_true(json_object_get(bad, "authentication")));
    CHECK_STR(json_string_value(json_object_get(bad, "class")), "AuthenticationError");
    CHECK_STR(json_string_value(json_object_get(bad, "type")), "authentication_error");
    CHECK_STR(json_string_value(json_object_get(bad, "code")), "invalid_api_key");
    json_decref(res);
    api_fx_stop(&f);
}

/* LangChain JS (tests/langchain_client): ChatOpenAI pointed at quarry works, and quarry's citations
 * reach a LangChain user. A default ChatOpenAI keeps only the fields it maps (content, tool calls,
 * audio, reasoning in additional_kwargs; model, usage, finish reason in response_metadata), so
 * message.context and citations are dropped there; with __includeRawResponse: true the whole
 * completion (and each streamed chunk) rides along in additional_kwargs.__raw_response. */
TEST(langchain_client)
{
    const char *dir = QUARRY_SOURCE_DIR "/tests/langchain_client";
    npm_client_ready(dir, "@langchain/openai/package.json");
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    CHECK(fake_reset());
    json_t *res = NULL;
    run_npm_client(&f, dir, &res);
    json_t *plain = json_object_get(res, "plain"), *raw = json_object_get(res, "raw"),
           *stream = json_object_get(res, "stream");
    const char *a = json_string_value(json_object_get(plain, "content"));
    CHECK_MSG(a && strstr(a, "fake inference server"), "%s", a ? a : "(no content)");
    /* where the citations are not: a default ChatOpenAI drops them (if this starts failing, a newer
     * LangChain maps them: tell integrators where) */
    CHECK(json_is_false(json_object_get(plain, "context_in_additional_kwargs")));
    CHECK(json_is_false(json_object_get(plain, "context_in_response_metadata")));
    CHECK(json_is_false(json_object_get(plain, "citations_anywhere")));
    /* where they are: the raw response */
    CHECK_STR(json_string_value(json_object_get(raw, "content")), a);
    CHECK(json_array_size(json_object_get(raw, "citations")) >= 1);
    CHECK(context_of(json_object_get(raw, "context"), json_object_get(raw, "citations")));
    const char *allowed[] = {"runbooks/backend.md", "policies/expenses.md"};
    char why[256];
    CHECK_MSG(citations_only_from(json_object_get(raw, "citations"), allowed, 2, why, sizeof(why)), "%s",
              why);
    CHECK_STR(json_string_value(json_object_get(stream, "content")), a);
    CHECK_INT(json_integer_value(json_object_get(stream, "contexts")), 1);
    CHECK(json_array_size(json_object_get(json_object_get(stream, "context"), "citations")) >= 1);
    json_decref(res);
    /* ChatOpenAI's options reached the backend through quarry */
    json_t *up = last_upstream_chat();
    CHECK(up);
    CHECK(fabs(json_number_value(json_object_get(up, "temperature")) - 0.1) < 1e-9);
    CHECK_INT(json_integer_value(json_object_get(up, "max_tokens")), 200);
    json_decref(up);
    api_fx_stop(&f);
}

static json_t *chat_message(const api_resp *r)
{
    return json_object_get(json_array_get(json_object_get(r->json, "choices"), 0), "message");
}

TEST(openai_models_list_retrieve_and_not_found)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "inference.models", "quarry, quarry-large", NULL));
    CHECK(seed_corpus(&f));
    api_resp r;
    CHECK_INT(api_http(f.base, "GET", "/v1/models", H(ALICE), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "object")), "list");
    json_t *data = json_object_get(r.json, "data");
    CHECK_INT(json_array_size(data), 2);
    CHECK_STR(json_string_value(json_object_get(json_array_get(data, 0), "id")), "quarry");
    CHECK_STR(json_string_value(json_object_get(json_array_get(data, 1), "id")), "quarry-large");
    for (size_t i = 0; i < 2; i++) {
        json_t *m = json_array_get(data, i);
        CHECK_STR(json_string_value(json_object_get(m, "object")), "model");
        CHECK_STR(json_string_value(json_object_get(m, "owned_by")), "quarry");
        CHECK(json_is_integer(json_object_get(m, "created")));
    }
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/models/quarry-large", H(ALICE), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "id")), "quarry-large");
    CHECK_STR(json_string_value(json_object_get(r.json, "object")), "model");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/models/nope", H(ALICE), NULL, 0, &r), 404);
    CHECK_STR(api_error_type_of(&r), "invalid_request_error");
    CHECK_STR(api_error_code(&r), "model_not_found");
    CHECK_STR(error_param(&r), "model");
    api_resp_release(&r);

    /* chat: an unknown model is 404 before anything is searched or sent */
    CHECK(fake_reset());
    const char *msgs =
        "\"messages\":[{\"role\":\"user\",\"content\":\"How does expense reimbursement work?\"}]";
    char body[512];
    snprintf(body, sizeof(body), "{\"model\":\"nope\",%s}", msgs);
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE), body, 0, &r), 404);
    CHECK_STR(api_error_type_of(&r), "invalid_request_error");
    CHECK_STR(api_error_code(&r), "model_not_found");
    CHECK_STR(error_param(&r), "model");
    api_resp_release(&r);
    CHECK_INT(fake_chat_requests(), 0);
    /* a listed model is echoed; the backend still gets inference.model */
    snprintf(body, sizeof(body), "{\"model\":\"quarry-large\",%s}", msgs);
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE), body, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "model")), "quarry-large");
    api_resp_release(&r);
    json_t *up = last_upstream_chat();
    CHECK_STR(json_string_value(json_object_get(up, "model")), "fake-chat-model");
    json_decref(up);
    /* no model: the first listed */
    snprintf(body, sizeof(body), "{%s}", msgs);
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE), body, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "model")), "quarry");
    api_resp_release(&r);

    /* bad credentials: OpenAI's invalid_api_key on these routes, quarry's code elsewhere */
    char bad[512];
    api_basic(bad, sizeof(bad), "alice", "wrong-password");
    const char *openai_paths[] = {"/v1/models", "/v1/models/quarry"};
    for (size_t i = 0; i < 2; i++) {
        CHECK_INT(
            api_http(f.base, "GET", openai_paths[i], H("Authorization: Bearer qk_not_a_key"), NULL, 0, &r),
            401);
        CHECK_STR(api_error_type_of(&r), "authentication_error");
        CHECK_STR(api_error_code(&r), "invalid_api_key");
        api_resp_release(&r);
    }
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", NULL, body, 0, &r), 401);
    CHECK_STR(api_error_code(&r), "invalid_api_key");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H("Authorization: Bearer qk_not_a_key"), NULL, 0, &r), 401);
    CHECK_STR(api_error_code(&r), "unauthenticated");
    api_resp_release(&r);
    /* too many failed logins: 429 rate_limit_exceeded (auth.rate_limit_user is 5) */
    long st = 0;
    for (int i = 0; i < 8 && st != 429; i++) {
        st = api_http(f.base, "GET", "/v1/models", H(bad), NULL, 0, &r);
        if (st == 429) {
            CHECK_STR(api_error_type_of(&r), "rate_limit_error");
            CHECK_STR(api_error_code(&r), "rate_limit_exceeded");
        } else {
            CHECK_INT(st, 401);
            CHECK_STR(api_error_code(&r), "invalid_api_key");
        }
        api_resp_release(&r);
    }
    CHECK_INT(st, 429);
    api_fx_stop(&f);
}

TEST(chat_refuses_what_it_cannot_honour_naming_the_param)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "inference.max_tokens", "300", NULL));
    CHECK(fake_reset());
#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"How does expense reimbursement work?\"}]"
    struct {
        const char *extra; /* fields after the messages */
        const char *param, *code;
    } cases[] = {
        {"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]", "tools",
         "unsupported_parameter"},
        {"\"tool_choice\":\"auto\"", "tool_choice", "unsupported_parameter"},
        {"\"functions\":[{\"name\":\"f\"}]", "functions", "unsupported_parameter"},
        {"\"function_call\":\"auto\"", "function_call", "unsupported_parameter"},
        {"\"parallel_tool_calls\":true", "parallel_tool_calls", "unsupported_parameter"},
        {"\"top_logprobs\":2", "top_logprobs", "unsupported_parameter"},
        {"\"logit_bias\":{\"50256\":-100}", "logit_bias", "unsupported_parameter"},
        {"\"audio\":{\"voice\":\"alloy\",\"format\":\"wav\"}", "audio", "unsupported_parameter"},
        {"\"response_format\":{\"type\":\"json_object\"}", "response_format", "unsupported_value"},
        {"\"n\":2", "n", "unsupported_value"},
        {"\"logprobs\":true", "logprobs", "unsupported_value"},
        {"\"modalities\":[\"text\",\"audio\"]", "modalities", "unsupported_value"},
        {"\"frobnicate\":1", "frobnicate", "unknown_parameter"},
        {"\"max_tokens\":301", "max_tokens", "invalid_argument"},
        {"\"max_completion_tokens\":100000", "max_completion_tokens", "invalid_argument"},
        {"\"max_tokens\":0", "max_tokens", "invalid_argument"},
        {"\"max_tokens\":10,\"max_completion_tokens\":20", "max_completion_tokens", "invalid_argument"},
        {"\"temperature\":2.5", "temperature", "invalid_argument"},
        {"\"temperature\":\"hot\"", "temperature", "invalid_argument"},
        {"\"top_p\":1.5", "top_p", "invalid_argument"},
        {"\"presence_penalty\":3", "presence_penalty", "invalid_argument"},
        {"\"frequency_penalty\":-2.5", "frequency_penalty", "invalid_argument"},
        {"\"seed\":\"x\"", "seed", "invalid_argument"},
        {"\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]", "stop", "invalid_argument"},
        {"\"stop\":[\"\"]", "stop", "invalid_argument"},
        {"\"stop\":7", "stop", "invalid_argument"},
        {"\"user\":5", "user", "invalid_argument"},
        {"\"stream\":\"yes\"", "stream", "invalid_argument"},
        {"\"stream_options\":5", "stream_options", "invalid_argument"},
        {"\"model\":7", "model", "invalid_argument"},
        {"\"metadata\":\"x\"", "metadata", "invalid_argument"},
    };
    api_resp r;
    char body[1024];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body), "{" MSGS ",%s}", cases[i].extra);
        CHECK_MSG(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE), body, 0, &r) == 400, "%s: %s",
                  cases[i].extra, qr_buf_str(&r.body));
        CHECK_STR(api_error_type_of(&r), "invalid_request_error");
        CHECK_MSG(strcmp(error_param(&r), cases[i].param) == 0 &&
                      strcmp(api_error_code(&r), cases[i].code) == 0,
                  "%s: %s", cases[i].extra, qr_buf_str(&r.body));
        api_resp_release(&r);
    }
    /* the cap is in the message */
    CHECK_INT(
        api_http(f.base, "POST", "/v1/chat/completions", H(ALICE), "{" MSGS ",\"max_tokens\":301}", 0, &r),
        400);
    const char *msg = json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
    CHECK_MSG(msg && strstr(msg, "300") && strstr(msg, "inference.max_tokens"), "%s", msg ? msg : "");
    api_resp_release(&r);
    /* the messages themselves */
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE), "{\"messages\":[]}", 0, &r), 400);
    CHECK_STR(error_param(&r), "messages");
    api_resp_release(&r);
    CHECK_INT(
        api_http(
            f.base, "POST", "/v1/chat/completions", H(ALICE),
            "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"},{\"role\":\"user\",\"content\":\"y\"}]}", 0,
            &r),
        400);
    CHECK_STR(error_param(&r), "messages");
    api_resp_release(&r);
    /* nothing refused reached the backend */
    CHECK_INT(fake_chat_requests(), 0);
    /* accepted at the value that changes nothing, or ignored: bookkeeping */
    const char *fine[] = {
        "\"n\":1,\"logprobs\":false,\"response_format\":{\"type\":\"text\"},\"modalities\":[\"text\"]",
        "\"metadata\":{\"team\":\"x\"},\"store\":false,\"stream_options\":null,\"tools\":null",
        "\"max_tokens\":300,\"max_completion_tokens\":300",
    };
    for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
        snprintf(body, sizeof(body), "{" MSGS ",%s}", fine[i]);
        CHECK_MSG(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE), body, 0, &r) == 200, "%s: %s",
                  fine[i], qr_buf_str(&r.body));
        api_resp_release(&r);
    }
    /* other routes keep quarry's conventions: param null */
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(ALICE), "{\"query\":\"a\",\"k\":0}", 0, &r), 400);
    CHECK(api_error_shape(&r));
    api_resp_release(&r);
    api_fx_stop(&f);
}

TEST(chat_parameters_reach_the_backend)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    CHECK(fake_reset());
    api_resp r;
    CHECK_INT(
        api_http(f.base, "POST", "/v1/chat/completions", H(ALICE),
                 "{" MSGS ",\"max_tokens\":5,\"temperature\":0.7,\"top_p\":0.5,\"stop\":[\"END\",\"STOP\"],"
                 "\"user\":\"end-user-42\",\"seed\":11,\"presence_penalty\":0.5,\"frequency_penalty\":-0.5}",
                 0, &r),
        200);
    /* the fake cuts its answer at max_tokens words */
    CHECK_STR(json_string_value(
                  json_object_get(json_array_get(json_object_get(r.json, "choices"), 0), "finish_reason")),
              "length");
    api_resp_release(&r);
    json_t *up = last_upstream_chat();
    CHECK_MSG(up, "the backend got no chat request");
    CHECK_INT(json_integer_value(json_object_get(up, "max_tokens")), 5);
    CHECK(fabs(json_number_value(json_object_get(up, "temperature")) - 0.7) < 1e-9);
    CHECK(fabs(json_number_value(json_object_get(up, "top_p")) - 0.5) < 1e-9);
    CHECK(fabs(json_number_value(json_object_get(up, "presence_penalty")) - 0.5) < 1e-9);
    CHECK(fabs(json_number_value(json_object_get(up, "frequency_penalty")) + 0.5) < 1e-9);
    CHECK_INT(json_integer_value(json_object_get(up, "seed")), 11);
    CHECK_STR(json_string_value(json_object_get(up, "user")), "end-user-42");
    json_t *stop = json_object_get(up, "stop");
    CHECK(json_array_size(stop) == 2);
    CHECK_STR(json_string_value(json_array_get(stop, 0)), "END");
    CHECK_STR(json_string_value(json_array_get(stop, 1)), "STOP");
    json_decref(up);
    /* max_completion_tokens and a single stop string, streamed */
    CHECK(fake_reset());
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE),
                       "{" MSGS ",\"stream\":true,\"max_completion_tokens\":9,\"stop\":\"END\"}", 0, &r),
              200);
    api_resp_release(&r);
    up = last_upstream_chat();
    CHECK_INT(json_integer_value(json_object_get(up, "max_tokens")), 9);
    CHECK_INT(json_array_size(json_object_get(up, "stop")), 1);
    CHECK(!json_object_get(up, "user") && !json_object_get(up, "top_p") && !json_object_get(up, "seed"));
    json_decref(up);
    /* nothing asked: the configured values, nothing else */
    CHECK(fake_reset());
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE), "{" MSGS "}", 0, &r), 200);
    api_resp_release(&r);
    up = last_upstream_chat();
    CHECK_INT(json_integer_value(json_object_get(up, "max_tokens")), 1024);
    CHECK(fabs(json_number_value(json_object_get(up, "temperature")) - 0.2) < 1e-9);
    CHECK(!json_object_get(up, "stop") && !json_object_get(up, "presence_penalty"));
    json_decref(up);
    /* the end user is on the audit line, next to the signed-in user */
    char path[400], *log = NULL, err[QR_ERR_LEN];
    snprintf(path, sizeof(path), "%s/data/audit.log", f.dir);
    CHECK_OK(qr_read_file(path, 1 << 20, &log, NULL, err), err);
    CHECK_MSG(strstr(log, "\"end_user\":\"end-user-42\""), "%s", log);
    free(log);
    api_fx_stop(&f);
}

/* Checks that context (message.context or delta.context) lists the same chunks as citations, in the
 * same order, in Azure's shape. */
static bool context_matches(json_t *context, json_t *citations, char *why, size_t len)
{
    json_t *list = json_object_get(context, "citations");
    if (!json_is_array(list) || json_array_size(list) != json_array_size(citations) ||
        !json_array_size(list)) {
        snprintf(why, len, "%zu context citations, %zu citations", json_array_size(list),
                 json_array_size(citations));
        return false;
    }
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        json_t *q = json_array_get(citations, i);
        char id[32];
        snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(json_object_get(q, "chunk_id")));
        const char *content = json_string_value(json_object_get(c, "content"));
        if (strcmp(json_string_value(json_object_get(c, "filepath")),
                   json_string_value(json_object_get(q, "doc_id"))) ||
            strcmp(json_string_value(json_object_get(c, "chunk_id")), id) ||
            strcmp(json_string_value(json_object_get(c, "title")),
                   json_string_value(json_object_get(q, "title"))) ||
            strcmp(json_string_value(json_object_get(c, "url")),
                   json_string_value(json_object_get(q, "uri"))) ||
            !content || !strstr(content, "Marker")) {
            char *a = json_dumps(c, 0);
            snprintf(why, len, "context citation %zu: %s", i, a ? a : "?");
            free(a);
            return false;
        }
    }
    if (!json_is_string(json_object_get(context, "intent"))) {
        snprintf(why, len, "no intent");
        return false;
    }
    return true;
}

TEST(chat_context_citations_in_azure_shape)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    struct {
        const char *who;
        const char *allowed[2];
    } users[] = {
        {ALICE, {"runbooks/backend.md", "policies/expenses.md"}},
        {BOB, {"runbooks/frontend.md", "policies/expenses.md"}},
    };
    char why[512];
    for (size_t u = 0; u < 2; u++) {
        api_resp r;
        CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(users[u].who), "{" MSGS "}", 0, &r),
                  200);
        json_t *cit = json_object_get(r.json, "citations");
        json_t *ctx = json_object_get(chat_message(&r), "context");
        CHECK_MSG(json_array_size(cit) >= 1, "no citations: %s", qr_buf_str(&r.body));
        CHECK_MSG(context_matches(ctx, cit, why, sizeof(why)), "user %zu: %s", u, why);
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(ctx, "citations"), i, c)
        {
            const char *fp = json_string_value(json_object_get(c, "filepath"));
            CHECK_MSG(strcmp(fp, users[u].allowed[0]) == 0 || strcmp(fp, users[u].allowed[1]) == 0,
                      "user %zu: context cites %s", u, fp);
        }
        api_resp_release(&r);

        /* streamed: delta.context once, in the chunk with the finish reason and the citations */
        CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(users[u].who),
                           "{" MSGS ",\"stream\":true}", 0, &r),
                  200);
        char **ev = NULL;
        size_t n = sse_events(qr_buf_str(&r.body), &ev), contexts = 0;
        json_t *sctx = NULL, *scit = NULL;
        for (size_t i2 = 0; i2 + 1 < n; i2++) {
            json_t *chunk = json_loads(ev[i2], 0, NULL);
            json_t *delta = json_object_get(json_array_get(json_object_get(chunk, "choices"), 0), "delta");
            if (json_object_get(delta, "context")) {
                contexts++;
                json_decref(sctx);
                sctx = json_incref(json_object_get(delta, "context"));
            }
            if (json_object_get(chunk, "citations")) {
                json_decref(scit);
                scit = json_incref(json_object_get(chunk, "citations"));
            }
            json_decref(chunk);
        }
        for (size_t i2 = 0; i2 < n; i2++)
            free(ev[i2]);
        free(ev);
        api_resp_release(&r);
        CHECK_INT(contexts, 1);
        CHECK_MSG(context_matches(sctx, scit, why, sizeof(why)), "user %zu streamed: %s", u, why);
        CHECK_MSG(citations_only_from(scit, users[u].allowed, 2, why, sizeof(why)), "%s", why);
        json_decref(sctx);
        json_decref(scit);
    }
    api_fx_stop(&f);
}

TEST(chat_data_sources_narrow_the_search)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    api_resp r;
    char why[256];
    /* alice, unfiltered: her backend runbook is among the sources */
    CHECK(fake_reset());
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE), "{" MSGS "}", 0, &r), 200);
    api_resp_release(&r);
    char *got = fake_received();
    CHECK(got && strstr(got, "PINEAPPLEBACKEND"));
    free(got);
    /* quarry's own filters: only the expense policy is searched, so only it is sent and cited */
    const char *only[] = {"policies/expenses.md"};
    const char *narrowed[] = {
        "\"data_sources\":[{\"type\":\"quarry\",\"parameters\":{\"filter\":{\"doc_ids\":[\"policies/"
        "expenses.md\"]}}}]",
        /* bob's frontend runbook named too: a filter never widens what alice may read */
        "\"data_sources\":[{\"type\":\"quarry\",\"parameters\":{\"filter\":{\"doc_ids\":[\"runbooks/"
        "frontend.md\",\"policies/expenses.md\"]},\"in_scope\":true}}]",
    };
    for (size_t i = 0; i < 2; i++) {
        CHECK(fake_reset());
        char body[1024];
        snprintf(body, sizeof(body), "{" MSGS ",%s}", narrowed[i]);
        CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE), body, 0, &r), 200);
        json_t *cit = json_object_get(r.json, "citations");
        CHECK_MSG(json_array_size(cit) >= 1 && citations_only_from(cit, only, 1, why, sizeof(why)),
                  "%zu: %s %s", i, why, qr_buf_str(&r.body));
        CHECK(context_matches(json_object_get(chat_message(&r), "context"), cit, why, sizeof(why)));
        api_resp_release(&r);
        got = fake_received();
        CHECK_MSG(got && strstr(got, "KIWISTAFF") && !strstr(got, "PINEAPPLEBACKEND") &&
                      !strstr(got, "MANGOFRONTEND"),
                  "%zu: the backend got %s", i, got ? got : "");
        free(got);
    }
    /* top_n_documents: one passage (Azure's shape, with its connection settings ignored) */
    CHECK(fake_reset());
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE),
                       "{" MSGS ",\"data_sources\":[{\"type\":\"azure_search\",\"parameters\":{\"endpoint\":"
                       "\"https://x.search.windows.net\",\"index_name\":\"i\",\"authentication\":{\"type\":"
                       "\"api_key\",\"key\":\"k\"},\"filter\":\"\",\"top_n_documents\":1}}]}",
                       0, &r),
              200);
    CHECK_INT(json_array_size(json_object_get(r.json, "citations")), 1);
    api_resp_release(&r);
    got = fake_received();
    CHECK(got && !(strstr(got, "PINEAPPLEBACKEND") && strstr(got, "KIWISTAFF")));
    free(got);
    /* shapes quarry refuses, each naming the field */
    struct {
        const char *ds, *param;
    } bad[] = {
        {"[{\"type\":\"azure_search\",\"parameters\":{\"filter\":\"category eq 'policy'\"}}]",
         "data_sources[0].parameters.filter"},
        {"[{\"type\":\"elasticsearch\",\"parameters\":{}}]", "data_sources[0].type"},
        {"[{\"parameters\":{}}]", "data_sources[0].type"},
        {"[{\"type\":\"quarry\"},{\"type\":\"quarry\"}]", "data_sources"},
        {"{\"type\":\"quarry\"}", "data_sources"},
        {"[{\"type\":\"quarry\",\"parameters\":{\"in_scope\":false}}]",
         "data_sources[0].parameters.in_scope"},
        {"[{\"type\":\"quarry\",\"parameters\":{\"strictness\":3}}]",
         "data_sources[0].parameters.strictness"},
        {"[{\"type\":\"quarry\",\"parameters\":{\"filter\":{\"colour\":\"red\"}}}]",
         "data_sources[0].parameters.filter"},
        {"[{\"type\":\"quarry\",\"parameters\":{\"top_n_documents\":0}}]",
         "data_sources[0].parameters.top_n_documents"},
    };
    CHECK(fake_reset());
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char body[1024];
        snprintf(body, sizeof(body), "{" MSGS ",\"data_sources\":%s}", bad[i].ds);
        CHECK_MSG(api_http(f.base, "POST", "/v1/chat/completions", H(ALICE), body, 0, &r) == 400, "%s: %s",
                  bad[i].ds, qr_buf_str(&r.body));
        CHECK_MSG(strcmp(error_param(&r), bad[i].param) == 0, "%s: %s", bad[i].ds, qr_buf_str(&r.body));
        api_resp_release(&r);
    }
    CHECK_INT(fake_chat_requests(), 0);
    api_fx_stop(&f);
}
#undef MSGS

/* ---- concurrency -------------------------------------------------------------------------------- */

typedef struct {
    const char *base;
    const char *auth;
    char ids[1024];
    long status;
} search_job;

static void *search_thread(void *arg)
{
    search_job *j = arg;
    api_resp r;
    j->status = api_http(j->base, "POST", "/v1/search", (const char *const[]){j->auth, NULL},
                         "{\"query\":\"expense reimbursement\",\"k\":5}", 0, &r);
    result_ids(json_object_get(r.json, "results"), j->ids, sizeof(j->ids));
    api_resp_release(&r);
    return NULL;
}

TEST(fifty_concurrent_searches)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    /* 25 searches of each user at once: more than the default share, which would answer 429 */
    CHECK(api_fx_start(&f, "server.user_share", "64", NULL));
    CHECK(seed_corpus(&f));
    api_resp r;
    CHECK_INT(api_http(f.base, "POST", "/v1/auth/token", H(ALICE), NULL, 0, &r), 200);
    char alice_tok[1024], bob_tok[1024];
    snprintf(alice_tok, sizeof(alice_tok), "Authorization: Bearer %s",
             json_string_value(json_object_get(r.json, "access_token")));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/auth/token", H(BOB), NULL, 0, &r), 200);
    snprintf(bob_tok, sizeof(bob_tok), "Authorization: Bearer %s",
             json_string_value(json_object_get(r.json, "access_token")));
    api_resp_release(&r);
    search_job ref_a = {f.base, alice_tok, "", 0}, ref_b = {f.base, bob_tok, "", 0};
    search_thread(&ref_a);
    search_thread(&ref_b);
    CHECK(ref_a.status == 200 && ref_b.status == 200 && strcmp(ref_a.ids, ref_b.ids) != 0);
    enum { N = 50 };
    search_job jobs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (search_job){f.base, i % 2 ? bob_tok : alice_tok, "", 0};
        CHECK(pthread_create(&th[i], NULL, search_thread, &jobs[i]) == 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        CHECK_MSG(jobs[i].status == 200, "search %d: %ld", i, jobs[i].status);
        CHECK_MSG(strcmp(jobs[i].ids, i % 2 ? ref_b.ids : ref_a.ids) == 0, "search %d: %s", i, jobs[i].ids);
    }
    api_fx_stop(&f);
}

/* ---- what a search may cost -------------------------------------------------------------------- */

/* A test hook on every search: searches whose query starts with "slow" are held until the gate
 * opens or their token fails (at most 20 s); the others are counted. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int held;      /* held now */
    int others;    /* searches of other queries seen */
    int cancelled; /* held searches whose token was cancelled (client gone) */
    int timed_out; /* held searches whose deadline passed */
    bool open;
} gate;

static gate g_gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, false};

static void gate_hook(void *ctx, const retrieval_request *req, qr_cancel *cancel)
{
    gate *g = ctx;
    bool slow = req->query && strncmp(req->query, "slow", 4) == 0;
    pthread_mutex_lock(&g->mu);
    if (!slow) {
        g->others++;
        pthread_mutex_unlock(&g->mu);
        return;
    }
    g->held++;
    pthread_cond_broadcast(&g->cv);
    qr_status st = QR_OK;
    for (int i = 0; i < 2000 && !g->open && !(st = qr_cancel_check(cancel, NULL)); i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10000000;
        ts.tv_sec += ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    }
    g->cancelled += st == QR_ECANCELED;
    g->timed_out += st == QR_ETIMEOUT;
    g->held--;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Waits up to secs for *field (under the gate's lock) to reach at least want. */
static bool gate_wait(int *field, int want, int secs)
{
    bool ok = false;
    for (int i = 0; i < secs * 100 && !ok; i++) {
        pthread_mutex_lock(&g_gate.mu);
        ok = *field >= want;
        pthread_mutex_unlock(&g_gate.mu);
        if (!ok)
            usleep(10000);
    }
    return ok;
}

static void gate_open(void)
{
    pthread_mutex_lock(&g_gate.mu);
    g_gate.open = true;
    pthread_cond_broadcast(&g_gate.cv);
    pthread_mutex_unlock(&g_gate.mu);
}

/* Sends a whole search request on a new connection and returns the socket, without reading. */
static int send_search(api_fixture *f, const char *auth, const char *query)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)api_server_port(f->srv))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char body[256], req[2048];
    int blen = snprintf(body, sizeof(body), "{\"query\":\"%s\",\"mode\":\"bm25\"}", query);
    int n = snprintf(req, sizeof(req),
                     "POST /v1/search HTTP/1.1\r\nHost: x\r\n%s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     auth, blen, body);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Waits up to secs until the server has no request left (every answer written or dropped). */
static bool server_idle(api_fixture *f, int secs)
{
    bool idle = false;
    for (int i = 0; i < secs * 100 && !idle; i++) {
        pthread_mutex_lock(&f->srv->lock);
        idle = f->srv->in_flight == 0;
        pthread_mutex_unlock(&f->srv->lock);
        if (!idle)
            usleep(10000);
    }
    return idle;
}

static int words_body(char *out, size_t len, size_t n, const char *prefix, bool quoted)
{
    size_t o = (size_t)snprintf(out, len, "{\"query\":\"wing %s", quoted ? "\\\"" : "");
    for (size_t i = 0; i < n && o < len; i++)
        o += (size_t)snprintf(out + o, len - o, "%s%sw%zu", i ? " " : "", prefix, i);
    return snprintf(out + o, len > o ? len - o : 0, "%s\"}", quoted ? "\\\"" : "");
}

TEST(query_limits_are_400_naming_the_key)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    struct {
        size_t n;
        const char *prefix;
        bool quoted;
        const char *key;
    } cases[] = {
        {256, "", false, "retrieval.max_terms"},      /* "wing" and 256 words */
        {33, "", true, "retrieval.max_phrase_terms"}, /* a phrase of 33 words */
        {33, "-", false, "retrieval.max_exclusions"}, /* 33 exclusions */
        {255, "", false, NULL},                       /* 256 words: the limit */
        {32, "", true, NULL},
        {32, "-", false, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[4096];
        words_body(body, sizeof(body), cases[i].n, cases[i].prefix, cases[i].quoted);
        api_resp r;
        long status = api_http(f.base, "POST", "/v1/search", H(ALICE), body, 0, &r);
        if (!cases[i].key) {
            CHECK_MSG(status == 200, "case %zu: %ld %s", i, status, qr_buf_str(&r.body));
        } else {
            json_t *e = json_object_get(r.json, "error");
            const char *msg = json_string_value(json_object_get(e, "message"));
            CHECK_MSG(status == 400 && msg && strstr(msg, cases[i].key), "case %zu: %ld %s", i, status,
                      qr_buf_str(&r.body));
            CHECK_STR(json_string_value(json_object_get(e, "code")), "invalid_argument");
        }
        api_resp_release(&r);
    }
    api_fx_stop(&f);
}

TEST(search_past_its_deadline_is_504)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "retrieval.timeout_ms", "200", NULL));
    retrieval_test_set_hook(gate_hook, &g_gate);
    api_resp r;
    long status = api_http(f.base, "POST", "/v1/search", H(ALICE), "{\"query\":\"slow search\"}", 0, &r);
    json_t *e = json_object_get(r.json, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    CHECK_MSG(status == 504 && msg && strstr(msg, "retrieval.timeout_ms"), "%ld %s", status,
              qr_buf_str(&r.body));
    CHECK_STR(json_string_value(json_object_get(e, "code")), "timeout");
    CHECK_INT(g_gate.timed_out, 1);
    api_resp_release(&r);
    /* the same for a question: its retrieval has the same deadline */
    status = api_http(f.base, "POST", "/v1/ask", H(ALICE), "{\"question\":\"slow question\"}", 0, &r);
    CHECK_MSG(status == 504, "%ld %s", status, qr_buf_str(&r.body));
    api_resp_release(&r);
    /* other searches are answered */
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(ALICE), "{\"query\":\"quick search\"}", 0, &r), 200);
    api_resp_release(&r);
    retrieval_test_set_hook(NULL, NULL);
    api_fx_stop(&f);
}

TEST(a_search_stops_when_its_client_leaves)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    retrieval_test_set_hook(gate_hook, &g_gate);
    int fd = send_search(&f, ALICE, "slow search");
    CHECK(fd >= 0);
    CHECK_MSG(gate_wait(&g_gate.held, 1, 20), "the search never started");
    close(fd);
    /* the worker's probe sees the socket closed and the search ends as cancelled, long before the
     * hook's own 20 s */
    CHECK_MSG(gate_wait(&g_gate.cancelled, 1, 10), "the search went on after its client left");
    CHECK(server_idle(&f, 10));
    retrieval_test_set_hook(NULL, NULL);
    api_fx_stop(&f);
}

TEST(a_queued_request_whose_client_left_never_runs)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "server.workers", "1", NULL));
    retrieval_test_set_hook(gate_hook, &g_gate);
    int busy = send_search(&f, ALICE, "slow search");
    CHECK(busy >= 0);
    CHECK_MSG(gate_wait(&g_gate.held, 1, 20), "the first search never started");
    /* the only worker is held: the next request waits in the queue, and its client gives up */
    int queued = send_search(&f, BOB, "second search");
    CHECK(queued >= 0);
    bool waiting = false;
    for (int i = 0; i < 2000 && !waiting; i++) {
        pthread_mutex_lock(&f.srv->lock);
        waiting = f.srv->suspended >= 2; /* both handed to the pool */
        pthread_mutex_unlock(&f.srv->lock);
        if (!waiting)
            usleep(10000);
    }
    CHECK_MSG(waiting, "the second request never reached the queue");
    close(queued);
    usleep(100000);
    gate_open();
    /* the first is answered; the second is dropped without searching */
    char buf[512];
    struct pollfd p = {.fd = busy, .events = POLLIN};
    CHECK(poll(&p, 1, 20000) == 1);
    ssize_t n = read(busy, buf, sizeof(buf) - 1);
    CHECK(n > 12);
    buf[n] = '\0';
    CHECK_MSG(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%s", buf);
    close(busy);
    CHECK(server_idle(&f, 10));
    CHECK_MSG(g_gate.others == 0, "the departed client's search ran");
    retrieval_test_set_hook(NULL, NULL);
    api_fx_stop(&f);
}

typedef struct {
    const char *base, *auth, *body;
    long status;
    char retry_after[16];
} share_req;

static void *share_thread(void *arg)
{
    share_req *q = arg;
    api_resp r;
    long status =
        api_http(q->base, "POST", "/v1/search", (const char *const[]){q->auth, NULL}, q->body, 0, &r);
    header_value(&r, "Retry-After", q->retry_after, sizeof(q->retry_after));
    api_resp_release(&r);
    __atomic_store_n(&q->status, status, __ATOMIC_RELEASE);
    return NULL;
}

TEST(one_user_cannot_take_every_worker)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "server.workers", "4", "server.user_share", "2", NULL));
    retrieval_test_set_hook(gate_hook, &g_gate);
    /* alice sends four slow searches at once: two hold workers, two are refused at once */
    enum { N = 4 };
    share_req q[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        q[i] = (share_req){f.base, ALICE, "{\"query\":\"slow search\"}", 0, ""};
        CHECK(pthread_create(&th[i], NULL, share_thread, &q[i]) == 0);
    }
    CHECK_MSG(gate_wait(&g_gate.held, 2, 20), "alice's searches never started");
    int refused = 0;
    for (int i = 0; i < 1500 && refused < 2; i++) {
        refused = 0;
        for (int j = 0; j < N; j++)
            refused += __atomic_load_n(&q[j].status, __ATOMIC_ACQUIRE) == 429;
        if (refused < 2)
            usleep(10000);
    }
    CHECK_MSG(refused == 2, "%d of alice's searches beyond her share were refused", refused);
    /* bob is answered while alice's two still hold their workers */
    api_resp r;
    long bob = api_http_within(f.base, "POST", "/v1/search", H(BOB), "{\"query\":\"expense\"}", 0, 15000, &r);
    api_resp_release(&r);
    pthread_mutex_lock(&g_gate.mu);
    int held = g_gate.held;
    pthread_mutex_unlock(&g_gate.mu);
    gate_open();
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    CHECK_MSG(bob == 200, "bob's search: %ld", bob);
    CHECK_INT(held, 2);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        ok += q[i].status == 200;
        if (q[i].status == 429)
            CHECK_STR(q[i].retry_after, "1");
    }
    CHECK_INT(ok, 2);
    /* the share is given back: alice may search again */
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(ALICE), "{\"query\":\"expense\"}", 0, &r), 200);
    api_resp_release(&r);
    retrieval_test_set_hook(NULL, NULL);
    api_fx_stop(&f);
}

/* ---- the description, metrics and audit ------------------------------------------------------------- */

TEST(openapi_and_routes_agree_both_ways)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    api_resp r;
    /* public: no credentials */
    CHECK_INT(api_http(f.base, "GET", "/openapi.json", NULL, NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "openapi")), "3.0.3");
    json_t *paths = json_object_get(r.json, "paths");
    size_t nroutes;
    const api_route_info *routes = api_routes(&nroutes);
    /* every route is described */
    for (size_t i = 0; i < nroutes; i++) {
        char lower[16];
        size_t k = 0;
        for (; routes[i].method[k]; k++)
            lower[k] = (char)(routes[i].method[k] | 0x20);
        lower[k] = '\0';
        json_t *op = json_object_get(json_object_get(paths, routes[i].pattern), lower);
        CHECK_MSG(op, "%s %s is not in the OpenAPI document", routes[i].method, routes[i].pattern);
        CHECK_MSG(json_object_get(op, "responses") && json_object_get(op, "summary"), "%s %s lacks responses",
                  routes[i].method, routes[i].pattern);
        CHECK_MSG(!strstr(json_string_value(json_object_get(op, "summary")), "Undocumented"),
                  "%s %s undocumented", routes[i].method, routes[i].pattern);
    }
    /* every described operation is a route the server answers (never 404/405 from the router) */
    const char *path;
    json_t *item;
    size_t ops = 0;
    json_object_foreach(paths, path, item)
    {
        const char *method;
        json_t *op;
        json_object_foreach(item, method, op)
        {
            char upper[16], concrete[256];
            size_t k = 0;
            for (; method[k] && k < 15; k++)
                upper[k] = (char)(method[k] & ~0x20);
            upper[k] = '\0';
            bool in_table = false;
            for (size_t i = 0; i < nroutes; i++)
                in_table = in_table ||
                           (strcmp(routes[i].method, upper) == 0 && strcmp(routes[i].pattern, path) == 0);
            CHECK_MSG(in_table, "the OpenAPI document has %s %s, the route table does not", upper, path);
            const char *brace = strchr(path, '{');
            if (brace)
                snprintf(concrete, sizeof(concrete), "%.*sprobe-id%s", (int)(brace - path), path,
                         strchr(brace, '}') + 1);
            else
                snprintf(concrete, sizeof(concrete), "%s", path);
            api_resp probe;
            long st = api_http(f.base, upper, concrete, H(DAVE),
                               strcmp(upper, "GET") && strcmp(upper, "DELETE") ? "{}" : NULL, 0, &probe);
            bool routed =
                st > 0 && !(st == 405) && !(st == 404 && strstr(qr_buf_str(&probe.body), "no route"));
            api_resp_release(&probe);
            CHECK_MSG(routed, "%s %s: the server does not route it (%ld)", upper, concrete, st);
            ops++;
        }
    }
    CHECK_INT(ops, nroutes);
    api_resp_release(&r);
    api_fx_stop(&f);
}

/* The document as Copilot, Teams and client generators get it -- fetched without credentials,
 * from a server with an OpenID Connect issuer, OAuth endpoints and a public URL -- passes
 * swagger-parser, Redocly's recommended rules and m365-spec-parser (tests/openapi_lint, pinned
 * versions; skipped without them and without a registry to install them from). */
TEST(openapi_validators)
{
    const char *dir = QUARRY_SOURCE_DIR "/tests/openapi_lint";
    char cmd[2048];
    npm_client_ready(dir, "@microsoft/m365-spec-parser/package.json");
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "server.public_url", "https://quarry.contoso.com/", "oidc.issuer",
                       "https://login.example.com/tenant-a/v2.0", "oidc.audience", "api://quarry",
                       "oidc.required_scope", "access_as_user", "oidc.oauth_scopes",
                       "api://quarry/access_as_user", "oidc.authorization_url",
                       "https://login.example.com/tenant-a/oauth2/v2.0/authorize", "oidc.token_url",
                       "https://login.example.com/tenant-a/oauth2/v2.0/token", NULL));
    api_resp r;
    CHECK_INT(api_http(f.base, "GET", "/openapi.json", NULL, NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "openapi")), "3.0.3");
    CHECK_STR(
        json_string_value(json_object_get(json_array_get(json_object_get(r.json, "servers"), 0), "url")),
        "https://quarry.contoso.com");
    /* nothing of where the server listens */
    CHECK(!strstr(qr_buf_str(&r.body), "127.0.0.1"));
    json_t *schemes = json_object_get(json_object_get(r.json, "components"), "securitySchemes");
    CHECK_STR(
        json_string_value(json_object_get(json_object_get(schemes, "openIdConnect"), "openIdConnectUrl")),
        "https://login.example.com/tenant-a/v2.0/.well-known/openid-configuration");
    CHECK(json_object_get(schemes, "oauth2"));
    api_resp_release(&r);
    snprintf(cmd, sizeof(cmd), "cd '%s' && node validate.mjs '%s/openapi.json' 2>&1", dir, f.base);
    FILE *p = popen(cmd, "r");
    CHECK(p);
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
        qr_buf_append(&out, chunk, n);
    int status = pclose(p);
    printf("%s", qr_buf_str(&out)); /* the warnings, for whoever reads the test's log */
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the validators found errors:\n%s",
              qr_buf_str(&out));
    qr_buf_release(&out);
    api_fx_stop(&f);
}

/* ---- CORS and error objects ------------------------------------------------------------------- */

#define ADDIN "https://addin.example.com"

/* True when any response header's name starts with Access-Control- (any case). */
static bool any_cors_header(const api_resp *r)
{
    const char *h = qr_buf_str(&r->headers);
    for (const char *line = h; line && *line;) {
        if (strncasecmp(line, "Access-Control-", 15) == 0)
            return true;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return false;
}

/* Preflights are answered before authentication: a listed origin, a method the path takes and
 * headers quarry reads get 204 and the Allow-* headers; anything else 403 and none of them. */
/* gunzips p[0..n) into out (cap bytes); the length, or -1. */
static long gunzip(const char *p, size_t n, char *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        return -1;
    z.next_in = (unsigned char *)p;
    z.avail_in = (uInt)n;
    z.next_out = (unsigned char *)out;
    z.avail_out = (uInt)cap;
    int rc = inflate(&z, Z_FINISH);
    long len = rc == Z_STREAM_END ? (long)z.total_out : -1;
    inflateEnd(&z);
    return len;
}

TEST(console_files_are_served_with_etag_gzip_and_csp)
{
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "ui.frame_ancestors", "'self' https://outlook.office.com", "oidc.issuer",
                       "https://login.example.com/tenant/v2.0", "oidc.audience", "api://quarry",
                       "ui.oidc_client_id", "console-client", "ldap.uri", "ldap://127.0.0.1:1",
                       "ldap.user_base", "dc=x", NULL));
    char *index = NULL, err[QR_ERR_LEN];
    size_t index_len = 0;
    CHECK_OK(qr_read_file(QUARRY_SOURCE_DIR "/ui/index.html", 1 << 24, &index, &index_len, err), err);
    /* no credentials needed; the bytes are ui/index.html's */
    api_resp r;
    CHECK_INT(api_http(f.base, "GET", "/", NULL, NULL, 0, &r), 200);
    CHECK(qr_buf_len(&r.body) == index_len && memcmp(qr_buf_str(&r.body), index, index_len) == 0);
    char v[1024], etag[64];
    CHECK(header_value(&r, "Content-Type", v, sizeof(v)) && strncmp(v, "text/html", 9) == 0);
    CHECK(header_value(&r, "Content-Security-Policy", v, sizeof(v)));
    CHECK_MSG(strstr(v, "default-src 'self'") && strstr(v, "script-src 'self';") &&
                  strstr(v, "frame-ancestors 'self' https://outlook.office.com;") &&
                  strstr(v, "connect-src 'self' https://login.example.com;") &&
                  strstr(v, "object-src 'none'") && !strstr(v, "unsafe"),
              "%s", v);
    CHECK(header_value(&r, "X-Content-Type-Options", v, sizeof(v)) && strcmp(v, "nosniff") == 0);
    CHECK(header_value(&r, "ETag", etag, sizeof(etag)) && etag[0] == '"' && strlen(etag) == 18);
    api_resp_release(&r);
    /* revalidation */
    char inm[128];
    snprintf(inm, sizeof(inm), "If-None-Match: %s", etag);
    CHECK_INT(api_http(f.base, "GET", "/", H(inm), NULL, 0, &r), 304);
    CHECK(qr_buf_len(&r.body) == 0);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/", H("If-None-Match: \"0000000000000000\""), NULL, 0, &r), 200);
    api_resp_release(&r);
    /* gzip when asked, and only then; the same bytes once inflated */
    CHECK_INT(api_http(f.base, "GET", "/ui/index.html", H("Accept-Encoding: gzip, br"), NULL, 0, &r), 200);
    bool gz = header_value(&r, "Content-Encoding", v, sizeof(v)) && strcmp(v, "gzip") == 0;
    if (gz) {
        char *plain = malloc(index_len + 1);
        CHECK(gunzip(qr_buf_str(&r.body), qr_buf_len(&r.body), plain, index_len + 1) == (long)index_len &&
              memcmp(plain, index, index_len) == 0);
        free(plain);
        CHECK(header_value(&r, "Vary", v, sizeof(v)) && strstr(v, "Accept-Encoding"));
    } else {
        CHECK_MSG(index_len < 200, "a %zu-byte page was not gzipped", index_len);
    }
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/ui/index.html", H("Accept-Encoding: gzip;q=0"), NULL, 0, &r), 200);
    CHECK(!header_value(&r, "Content-Encoding", v, sizeof(v)));
    api_resp_release(&r);
    /* what the page needs to offer the provider's sign-in */
    CHECK_INT(api_http(f.base, "GET", "/ui/config.json", NULL, NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(json_object_get(r.json, "oidc"), "issuer")),
              "https://login.example.com/tenant/v2.0");
    CHECK_STR(json_string_value(json_object_get(json_object_get(r.json, "oidc"), "client_id")),
              "console-client");
    api_resp_release(&r);
    /* only the table's paths: no traversal, nothing else from the filesystem */
    const char *missing[] = {"/ui/",        "/ui/../CMakeLists.txt", "/ui/%2e%2e/README.md",
                             "/ui/nope.js", "/ui/index.html/",       "/ui//index.html"};
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        long st = api_http(f.base, "GET", missing[i], NULL, NULL, 0, &r);
        CHECK_MSG(st == 404 || st == 400, "%s: %ld", missing[i], st);
        api_resp_release(&r);
    }
    CHECK_INT(api_http(f.base, "POST", "/", NULL, "x", 0, &r), 404);
    api_resp_release(&r);
    api_fx_stop(&f);
    /* off: nothing served */
    CHECK(api_fx_start(&f, "ui.enabled", "false", NULL));
    CHECK_INT(api_http(f.base, "GET", "/", NULL, NULL, 0, &r), 404);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/ui/config.json", NULL, NULL, 0, &r), 404);
    api_resp_release(&r);
    api_fx_stop(&f);
    /* a frame-ancestors value that would end the directive is refused at start */
    CHECK(!api_fx_start(&f, "ui.frame_ancestors", "'self'; script-src *", NULL));
    api_fx_stop(&f);
    free(index);
}

TEST(cors_preflight)
{
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "server.cors_origins", ADDIN ", http://localhost:3000", NULL));
    api_resp r;
    char v[512];
    CHECK_INT(api_http(f.base, "OPTIONS", "/v1/chat/completions",
                       H("Origin: " ADDIN, "Access-Control-Request-Method: POST",
                         "Access-Control-Request-Headers: authorization, content-type, x-quarry-user"),
                       NULL, 0, &r),
              204);
    CHECK_STR(header_value(&r, "Access-Control-Allow-Origin", v, sizeof(v)), ADDIN);
    CHECK_STR(header_value(&r, "Access-Control-Allow-Methods", v, sizeof(v)), "POST");
    CHECK_STR(header_value(&r, "Access-Control-Allow-Headers", v, sizeof(v)),
              "Authorization, Content-Type, X-Quarry-User, X-API-Key, X-Request-Id");
    CHECK_STR(header_value(&r, "Access-Control-Max-Age", v, sizeof(v)), "600");
    CHECK_STR(header_value(&r, "Vary", v, sizeof(v)),
              "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
    CHECK(!header_value(&r, "Access-Control-Allow-Credentials", v, sizeof(v)));
    CHECK(!header_value(&r, "Access-Control-Expose-Headers", v, sizeof(v)));
    CHECK_INT(qr_buf_len(&r.body), 0);
    api_resp_release(&r);
    /* a path with an id: every method it takes */
    CHECK_INT(api_http(f.base, "OPTIONS", "/v1/documents/a%2Fb.md",
                       H("Origin: http://localhost:3000", "Access-Control-Request-Method: DELETE"), NULL, 0,
                       &r),
              204);
    CHECK_STR(header_value(&r, "Access-Control-Allow-Origin", v, sizeof(v)), "http://localhost:3000");
    CHECK_STR(header_value(&r, "Access-Control-Allow-Methods", v, sizeof(v)), "GET, PUT, DELETE");
    api_resp_release(&r);

    /* refused: an origin not listed, a method the path does not take, a header quarry does not read */
    const char *const *refused[] = {
        H("Origin: https://evil.example", "Access-Control-Request-Method: POST"),
        H("Origin: " ADDIN "/", "Access-Control-Request-Method: POST"),
        H("Origin: null", "Access-Control-Request-Method: POST"),
        H("Origin: " ADDIN, "Access-Control-Request-Method: DELETE"),
        H("Origin: " ADDIN, "Access-Control-Request-Method: post"),
        H("Origin: " ADDIN, "Access-Control-Request-Method: POST",
          "Access-Control-Request-Headers: content-type, x-evil"),
        H("Origin: " ADDIN, "Access-Control-Request-Method: POST", "Access-Control-Request-Headers: cookie"),
    };
    const char *why[] = {"not allowed",          "not allowed", "not allowed", "does not accept DELETE",
                         "does not accept post", "'x-evil'",    "'cookie'"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        CHECK_INT(api_http(f.base, "OPTIONS", "/v1/chat/completions", refused[i], NULL, 0, &r), 403);
        CHECK(api_error_shape(&r));
        CHECK_STR(api_error_code(&r), "cors_refused");
        CHECK_STR(api_error_type_of(&r), "permission_error");
        const char *msg = json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
        CHECK_MSG(msg && strstr(msg, why[i]), "case %zu: %s", i, msg ? msg : "(none)");
        CHECK_MSG(!any_cors_header(&r), "case %zu: %s", i, qr_buf_str(&r.headers));
        api_resp_release(&r);
    }

    /* the connection stays open for the request the browser sends next */
    long st = 0;
    CHECK(kept_alive(&f, "OPTIONS", "/v1/chat/completions", "Origin: " ADDIN, NULL, &st));
    CHECK_INT(st, 204);

    /* an OPTIONS that is no preflight: what the path takes */
    CHECK_INT(api_http(f.base, "OPTIONS", "/v1/chat/completions", NULL, NULL, 0, &r), 204);
    CHECK_STR(header_value(&r, "Allow", v, sizeof(v)), "POST, OPTIONS");
    CHECK(!any_cors_header(&r));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "OPTIONS", "/v1/documents", NULL, NULL, 0, &r), 204);
    CHECK_STR(header_value(&r, "Allow", v, sizeof(v)), "POST, GET, OPTIONS");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "OPTIONS", "/nowhere",
                       H("Origin: " ADDIN, "Access-Control-Request-Method: GET"), NULL, 0, &r),
              404);
    CHECK(api_error_shape(&r));
    api_resp_release(&r);
    /* and a method a path does not take says which it does */
    CHECK_INT(api_http(f.base, "DELETE", "/healthz", NULL, NULL, 0, &r), 405);
    CHECK_STR(header_value(&r, "Allow", v, sizeof(v)), "GET, OPTIONS");
    api_resp_release(&r);

    api_fx_stop(&f);
}

/* Every answer to a listed origin carries Access-Control-Allow-Origin, whatever produced it; an
 * origin not listed is served without it. */
TEST(cors_actual_responses)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "server.cors_origins", ADDIN, "server.max_json_bytes", "2048", NULL));
    api_resp r;
    char v[512];
    /* authenticated GET and POST */
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(ALICE, "Origin: " ADDIN), NULL, 0, &r), 200);
    CHECK_STR(header_value(&r, "Access-Control-Allow-Origin", v, sizeof(v)), ADDIN);
    CHECK_STR(header_value(&r, "Vary", v, sizeof(v)), "Origin");
    CHECK(header_value(&r, "Access-Control-Expose-Headers", v, sizeof(v)) && strstr(v, "X-Request-Id") &&
          strstr(v, "Retry-After") && strstr(v, "WWW-Authenticate"));
    CHECK(!header_value(&r, "Access-Control-Allow-Credentials", v, sizeof(v)));
    api_resp_release(&r);
    CHECK_INT(
        api_http(f.base, "POST", "/v1/search", H(ALICE, "Origin: " ADDIN), "{\"query\":\"expenses\"}", 0, &r),
        200);
    CHECK_STR(header_value(&r, "Access-Control-Allow-Origin", v, sizeof(v)), ADDIN);
    api_resp_release(&r);
    /* an origin not listed: served, but the browser may not read it */
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(ALICE, "Origin: https://evil.example"), NULL, 0, &r), 200);
    CHECK(!any_cors_header(&r));
    CHECK_STR(header_value(&r, "Vary", v, sizeof(v)), "Origin");
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(ALICE, "Origin: https://evil.example"),
                       "{\"query\":\"expenses\"}", 0, &r),
              200);
    CHECK(!any_cors_header(&r));
    api_resp_release(&r);
    /* no Origin: no CORS headers */
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(ALICE), NULL, 0, &r), 200);
    CHECK(!any_cors_header(&r));
    api_resp_release(&r);

    /* answers that never reach a handler: authentication's 401, the router's 404, a 413 from the
     * declared length, the public /healthz */
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H("Origin: " ADDIN), NULL, 0, &r), 401);
    CHECK_STR(header_value(&r, "Access-Control-Allow-Origin", v, sizeof(v)), ADDIN);
    CHECK(header_value(&r, "WWW-Authenticate", v, sizeof(v)));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/nowhere", H("Origin: " ADDIN), NULL, 0, &r), 404);
    CHECK_STR(header_value(&r, "Access-Control-Allow-Origin", v, sizeof(v)), ADDIN);
    api_resp_release(&r);
    char big[4096];
    memset(big, ' ', sizeof(big) - 1);
    big[0] = '{';
    big[sizeof(big) - 2] = '}';
    big[sizeof(big) - 1] = '\0';
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(ALICE, "Origin: " ADDIN), big, 0, &r), 413);
    CHECK_STR(header_value(&r, "Access-Control-Allow-Origin", v, sizeof(v)), ADDIN);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/healthz", H("Origin: " ADDIN), NULL, 0, &r), 200);
    CHECK_STR(header_value(&r, "Access-Control-Allow-Origin", v, sizeof(v)), ADDIN);
    api_resp_release(&r);
    /* an OPTIONS from a listed page that is no preflight is an actual request */
    CHECK_INT(api_http(f.base, "OPTIONS", "/v1/search", H("Origin: " ADDIN), NULL, 0, &r), 204);
    CHECK_STR(header_value(&r, "Access-Control-Allow-Origin", v, sizeof(v)), ADDIN);
    CHECK_STR(header_value(&r, "Allow", v, sizeof(v)), "POST, OPTIONS");
    api_resp_release(&r);

    /* a streamed chat completion */
    CHECK_INT(api_http(f.base, "POST", "/v1/chat/completions", H(BOB, "Origin: " ADDIN),
                       "{\"messages\":[{\"role\":\"user\",\"content\":\"Who approves expenses?\"}],"
                       "\"stream\":true}",
                       0, &r),
              200);
    CHECK(header_value(&r, "Content-Type", v, sizeof(v)) && strncmp(v, "text/event-stream", 17) == 0);
    CHECK_STR(header_value(&r, "Access-Control-Allow-Origin", v, sizeof(v)), ADDIN);
    CHECK_STR(header_value(&r, "Vary", v, sizeof(v)), "Origin");
    CHECK_MSG(strstr(qr_buf_str(&r.body), "data: [DONE]"), "%s", qr_buf_str(&r.body));
    api_resp_release(&r);
    api_fx_stop(&f);
}

/* A server with a wildcard, "null" or anything but exact origins does not start. */
TEST(cors_origins_are_validated)
{
    struct {
        const char *list, *why;
    } bad[] = {
        {"*", "a wildcard would let any site call quarry with the user's credentials"},
        {"null", "list exact origins"},
        {"https://a.example/path", "no path"},
        {ADDIN ", https://a.example/", "trailing slash"},
        {"https://user:pw@a.example", "user name"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        qr_config *cfg = qr_config_new();
        char err[QR_ERR_LEN] = "";
        api_server *srv = NULL;
        CHECK(cfg);
        CHECK_OK(qr_config_set(cfg, "server.listen", "127.0.0.1:0", QR_CFG_SRC_CLI, err), err);
        CHECK_OK(qr_config_set(cfg, "server.cors_origins", bad[i].list, QR_CFG_SRC_CLI, err), err);
        qr_status st = api_server_new(cfg, &srv, err);
        CHECK_MSG(st == QR_EINVAL && !srv, "'%s' accepted", bad[i].list);
        CHECK_MSG(strstr(err, "server.cors_origins") && strstr(err, bad[i].why), "'%s': %s", bad[i].list,
                  err);
        qr_config_free(cfg);
    }
    /* a JSON list in the configuration file arrives comma-joined */
    const char *tmp = getenv("TMPDIR");
    char path[300], err[QR_ERR_LEN];
    snprintf(path, sizeof(path), "%s/quarry-cors-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    static const char text[] = "{\"server\":{\"cors_origins\":[\"" ADDIN "\",\"http://localhost:3000\"]}}";
    bool written = write(fd, text, sizeof(text) - 1) == (ssize_t)(sizeof(text) - 1);
    close(fd);
    qr_config *cfg = qr_config_new();
    qr_status st = written ? qr_config_load_file(cfg, path, err) : QR_EIO;
    unlink(path);
    CHECK_OK(st, err);
    CHECK_STR(qr_config_settings(cfg)->server_cors_origins, ADDIN ",http://localhost:3000");
    api_cors *c = NULL;
    CHECK_OK(api_cors_new(qr_config_settings(cfg)->server_cors_origins, &c, err), err);
    CHECK_INT(api_cors_count(c), 2);
    api_cors_free(c);
    qr_config_free(cfg);
}

/* Every error is OpenAI's error object: message, type (from the status), param, code. */
TEST(errors_are_openai_error_objects)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    api_resp r;
    struct {
        const char *method, *path;
        const char *auth, *body;
        long status;
        const char *type, *code;
    } cases[] = {
        {"GET", "/v1/me", NULL, NULL, 401, "authentication_error", "unauthenticated"},
        {"GET", "/nowhere", NULL, NULL, 404, "not_found_error", "not_found"},
        {"POST", "/v1/search", ALICE, "{not json", 400, "invalid_request_error", "invalid_json"},
        {"POST", "/v1/search", ALICE, "{\"k\":5}", 400, "invalid_request_error", "invalid_argument"},
        {"GET", "/v1/documents", ALICE, NULL, 403, "permission_error", "permission_denied"},
        {"DELETE", "/healthz", NULL, NULL, 405, "invalid_request_error", "method_not_allowed"},
        {"POST", "/v1/search", ALICE, "{\"query\":\"a\",\"k\":\"x\"}", 400, "invalid_request_error",
         "invalid_argument"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK_INT(api_http(f.base, cases[i].method, cases[i].path, cases[i].auth ? H(cases[i].auth) : NULL,
                           cases[i].body, 0, &r),
                  cases[i].status);
        CHECK_MSG(api_error_shape(&r), "%s %s: %s", cases[i].method, cases[i].path, qr_buf_str(&r.body));
        CHECK_STR(api_error_type_of(&r), cases[i].type);
        CHECK_STR(api_error_code(&r), cases[i].code);
        CHECK(json_is_null(json_object_get(json_object_get(r.json, "error"), "param")));
        api_resp_release(&r);
    }
    /* without server.cors_origins: no CORS headers at all, and every preflight refused */
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(ALICE, "Origin: " ADDIN), NULL, 0, &r), 200);
    CHECK(!any_cors_header(&r));
    char v[256];
    CHECK(!header_value(&r, "Vary", v, sizeof(v)));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "OPTIONS", "/v1/me", H("Origin: " ADDIN, "Access-Control-Request-Method: GET"),
                       NULL, 0, &r),
              403);
    CHECK(!any_cors_header(&r));
    const char *msg = json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
    CHECK(msg && strstr(msg, "server.cors_origins is empty"));
    api_resp_release(&r);
    /* a message quoting bytes that are not UTF-8 takes the escaping path, same shape */
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(ALICE, "Content-Type: text/\xff\xfe"), "{}", 0, &r),
              415);
    CHECK_MSG(api_error_shape(&r), "%s", qr_buf_str(&r.body));
    CHECK_STR(api_error_type_of(&r), "invalid_request_error");
    CHECK_STR(api_error_code(&r), "unsupported_media_type");
    api_resp_release(&r);
    api_fx_stop(&f);
}

/* What a caller learns beyond their own results: store sizes and the backend's address and errors
 * are for administrators. */
TEST(small_disclosures_are_for_administrators)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    api_resp r;
    const char *sizes[] = {"documents", "chunks", "index_generation", "index_vectors", "search_default"};
    /* the readiness details are the administrators': alice gets 403, anyone the bare status */
    CHECK_INT(api_http(f.base, "GET", "/v1/status", H(ALICE), NULL, 0, &r), 403);
    CHECK(api_error_shape(&r));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/readyz", H(ALICE), NULL, 0, &r), 200);
    CHECK_STR(qr_buf_str(&r.body), "{\"status\":\"ok\"}");
    for (size_t i = 0; i < 5; i++)
        CHECK_MSG(!strstr(qr_buf_str(&r.body), sizes[i]), "/readyz tells %s: %s", sizes[i],
                  qr_buf_str(&r.body));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/status", H(DAVE), NULL, 0, &r), 200);
    for (size_t i = 0; i < 5; i++)
        CHECK_MSG(json_object_get(json_object_get(r.json, "checks"), sizes[i]), "dave does not see %s: %s",
                  sizes[i], qr_buf_str(&r.body));
    /* and which search default is in force, and why */
    json_t *def = json_object_get(json_object_get(r.json, "checks"), "search_default");
    CHECK_MSG(def, "no search_default: %s", qr_buf_str(&r.body));
    CHECK_STR(json_string_value(json_object_get(def, "mode")), "bm25");
    CHECK_STR(json_string_value(json_object_get(def, "source")), "auto");
    CHECK_STR(json_string_value(json_object_get(def, "fusion")), "weighted");
    CHECK(strncmp(json_string_value(json_object_get(def, "reason")), "embed.backend=local:", 20) == 0);
    api_resp_release(&r);

    /* the backend fails every request: the answer falls back, and says why only to dave */
    CHECK(fake_reset());
    CHECK_INT(api_http(fake_url(), "POST", "/_fake/faults", NULL, "{\"mode\":\"500\",\"times\":1000}", 0, &r),
              200);
    api_resp_release(&r);
    const char *ask = "{\"question\":\"How are expenses reimbursed?\"}";
    CHECK_INT(api_http(f.base, "POST", "/v1/ask", H(ALICE), ask, 0, &r), 200);
    CHECK_MSG(json_is_string(json_object_get(r.json, "reason")), "no reason: %s", qr_buf_str(&r.body));
    CHECK_MSG(!json_is_string(json_object_get(r.json, "detail")) && !strstr(qr_buf_str(&r.body), "127.0.0.1"),
              "alice sees the backend: %s", qr_buf_str(&r.body));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/ask", H(DAVE), ask, 0, &r), 200);
    CHECK_MSG(json_is_string(json_object_get(r.json, "detail")), "dave sees no detail: %s",
              qr_buf_str(&r.body));
    api_resp_release(&r);
    CHECK(fake_reset());
    api_fx_stop(&f);
}

TEST(metrics_exposition)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    api_resp r;
    for (int i = 0; i < 3; i++) {
        CHECK_INT(api_http(f.base, "GET", "/v1/me", H(ALICE), NULL, 0, &r), 200);
        api_resp_release(&r);
    }
    CHECK_INT(
        api_http(f.base, "POST", "/v1/ask", H(ALICE), "{\"question\":\"expense reimbursement?\"}", 0, &r),
        200);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/nowhere", NULL, NULL, 0, &r), 404);
    api_resp_release(&r);
    CHECK_INT(
        api_http(f.base, "POST", "/v1/search", H(ALICE), "{\"query\":\"expense\",\"mode\":\"bm25\"}", 0, &r),
        200);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/metrics", H(DAVE), NULL, 0, &r), 200);
    char ct[128];
    CHECK(header_value(&r, "Content-Type", ct, sizeof(ct)) && strstr(ct, "text/plain"));
    const char *m = qr_buf_str(&r.body);
    CHECK(strstr(m, "quarry_http_requests_total{route=\"/v1/me\",method=\"GET\",status=\"200\"} 3\n"));
    CHECK(strstr(m, "quarry_http_requests_total{route=\"unmatched\",method=\"-\",status=\"404\"} 1\n"));
    CHECK(strstr(m,
                 "quarry_http_request_duration_seconds_bucket{route=\"/v1/me\",method=\"GET\",status=\"200\","
                 "le=\"+Inf\"} 3\n"));
    CHECK(strstr(
        m, "quarry_http_request_duration_seconds_count{route=\"/v1/me\",method=\"GET\",status=\"200\"} 3\n"));
    CHECK(strstr(m, "quarry_ingest_documents_total{outcome=\"added\"} 5\n"));
    CHECK(strstr(m, "quarry_index_documents 5\n"));
    /* the full-text index is at the store's counter: every write's call brought it there */
    CHECK(metric_value(&f, "quarry_fulltext_applied_change") == metric_value(&f, "quarry_store_changes"));
    CHECK(metric_value(&f, "quarry_store_changes") >= 5);
    long status;
    CHECK_INT(readyz_index_int(&f, "fulltext_behind", &status), 0);
    CHECK_INT(status, 200);
    CHECK(strstr(m, "quarry_index_generation "));
    CHECK(strstr(m, "quarry_ldap_cache_hits_total "));
    CHECK(strstr(m, "quarry_ldap_cache_misses_total "));
    CHECK(strstr(m, "quarry_answer_duration_seconds_count{mode=\"generative\"} 1\n"));
    CHECK(strstr(m, "quarry_inference_breaker_state{state=\"closed\"} 1\n"));
    CHECK(strstr(m, "quarry_errors_total{code=\"not_found\"} 1\n"));
    /* the answer's and the search's BM25 lists were ranked by the pruned index (the seeded corpus) */
    CHECK(strstr(m, "quarry_search_bm25_total{path=\"pruned\"} 2\n"));
    CHECK(strstr(m, "quarry_search_bm25_total{path=\"fts5\"} 0\n"));
    CHECK(strstr(m, "quarry_bm25_index_open 1\n"));
    /* the stage split counts POST /v1/search only (the ask searched too); a bm25 search spent
     * time authenticating and ranking, none in the vector list */
    CHECK(strstr(m, "quarry_search_staged_total 1\n"));
    CHECK(strstr(m, "quarry_search_stage_seconds_total{stage=\"vector\"} 0.000000000\n"));
    const char *auth_line = strstr(m, "quarry_search_stage_seconds_total{stage=\"auth\"} ");
    const char *bm25_line = strstr(m, "quarry_search_stage_seconds_total{stage=\"bm25\"} ");
    CHECK(auth_line && strtod(strchr(auth_line, '}') + 2, NULL) > 0);
    CHECK(bm25_line && strtod(strchr(bm25_line, '}') + 2, NULL) > 0);
    CHECK(strstr(m, "quarry_bm25_index_chunks ") && !strstr(m, "quarry_bm25_index_chunks 0\n"));
    /* every line is a comment or "name{labels} value"; bucket counts never decrease */
    char *copy = strdup(m), *save = NULL;
    double last_bucket = -1;
    char last_series[512] = "";
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            CHECK_MSG(strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0, "%s", line);
            continue;
        }
        char *sp = strrchr(line, ' ');
        CHECK_MSG(sp && sp > line, "%s", line);
        char *end;
        double v = strtod(sp + 1, &end);
        CHECK_MSG(*end == '\0', "bad value: %s", line);
        for (char *c = line; c < sp && *c != '{'; c++)
            CHECK_MSG((*c >= 'a' && *c <= 'z') || *c == '_' || (*c >= '0' && *c <= '9'), "bad name: %s",
                      line);
        char *le = strstr(line, ",le=\"");
        if (strstr(line, "_bucket{") && le) {
            char series[512];
            snprintf(series, sizeof(series), "%.*s", (int)(le - line), line);
            if (strcmp(series, last_series) == 0)
                CHECK_MSG(v >= last_bucket, "bucket decreases: %s", line);
            snprintf(last_series, sizeof(last_series), "%s", series);
            last_bucket = v;
        }
    }
    free(copy);
    api_resp_release(&r);
    api_fx_stop(&f);
}

TEST(audit_log_records_queries_by_hash)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    api_resp r;
    const char *query = "expense reimbursement deploys";
    char body[256];
    snprintf(body, sizeof(body), "{\"query\":\"%s\",\"k\":3}", query);
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(ALICE, "X-Request-Id: audit-check-1"), body, 0, &r),
              200);
    char first_result[256];
    result_ids(json_object_get(r.json, "results"), first_result, sizeof(first_result));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "POST", "/v1/ask", H(BOB, "X-Request-Id: audit-check-2"),
                       "{\"question\":\"How are frontend releases shipped?\"}", 0, &r),
              200);
    api_resp_release(&r);
    /* a key acting for a user: both identities on the line */
    char *key = make_key(&f, "search,on_behalf_of");
    CHECK(key);
    char key_id[17], keyh[256];
    snprintf(key_id, sizeof(key_id), "%.16s", key + 3);
    snprintf(keyh, sizeof(keyh), "X-API-Key: %s", key);
    free(key);
    CHECK_INT(api_http(f.base, "POST", "/v1/search",
                       H(keyh, "X-Quarry-User: erin", "X-Request-Id: audit-check-3"), body, 0, &r),
              200);
    api_resp_release(&r);
    char path[400], *log = NULL;
    snprintf(path, sizeof(path), "%s/data/audit.log", f.dir);
    char err[QR_ERR_LEN];
    CHECK_OK(qr_read_file(path, 1 << 20, &log, NULL, err), err);
    /* keyed: not the plain SHA-256 anyone could compute from a guess, but what the data
     * directory's secret gives (quarry auth audit-hash) */
    char hash[65], plain[65];
    ingest_content_hash(query, strlen(query), plain);
    auth_ctx *keyed = NULL;
    CHECK_OK(auth_new(f.cfg, &keyed, err), err);
    qr_status hst = auth_keyed_hash(keyed, AUTH_PURPOSE_AUDIT_QUERY, query, strlen(query), hash, err);
    auth_free(keyed);
    CHECK_OK(hst, err);
    CHECK(strcmp(hash, plain) != 0 && strstr(log, plain) == NULL);
    bool found_search = false, found_answer = false, found_obo = false,
         query_leaked = strstr(log, query) != NULL;
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *j = json_loads(line, 0, NULL);
        CHECK_MSG(j, "audit line is not JSON: %s", line);
        const char *rid = json_string_value(json_object_get(j, "request_id"));
        if (rid && strcmp(rid, "audit-check-1") == 0) {
            found_search = strcmp(json_string_value(json_object_get(j, "user")), "alice") == 0 &&
                           strcmp(json_string_value(json_object_get(j, "query_hmac")), hash) == 0 &&
                           strcmp(json_string_value(json_object_get(j, "route")), "POST /v1/search") == 0 &&
                           json_array_size(json_object_get(j, "doc_ids")) >= 1 &&
                           json_is_string(json_object_get(j, "time")) &&
                           strcmp(json_string_value(json_object_get(j, "auth")), "basic") == 0 &&
                           !json_object_get(j, "key_id");
        }
        if (rid && strcmp(rid, "audit-check-3") == 0)
            found_obo = strcmp(json_string_value(json_object_get(j, "user")), "erin") == 0 &&
                        strcmp(json_string_value(json_object_get(j, "auth")), "api_key") == 0 &&
                        strcmp(json_string_value(json_object_get(j, "key_id")), key_id) == 0;
        if (rid && strcmp(rid, "audit-check-2") == 0) {
            json_t *ids = json_object_get(j, "doc_ids");
            found_answer = strcmp(json_string_value(json_object_get(j, "user")), "bob") == 0 &&
                           json_array_size(ids) >= 1;
            size_t i;
            json_t *e;
            json_array_foreach(ids, i, e) found_answer =
                found_answer && (strcmp(json_string_value(e), "runbooks/frontend.md") == 0 ||
                                 strcmp(json_string_value(e), "policies/expenses.md") == 0);
        }
        /* document writes are audited too */
        json_decref(j);
    }
    free(log);
    CHECK(found_search);
    CHECK(found_answer);
    CHECK(found_obo);
    CHECK_MSG(!query_leaked, "the audit log holds the query text");
    /* the access log has a line per request, without credentials */
    snprintf(path, sizeof(path), "%s/access.log", f.dir);
    CHECK_OK(qr_read_file(path, 1 << 20, &log, NULL, err), err);
    CHECK(strstr(log, "\"request_id\":\"audit-check-1\""));
    CHECK(!strstr(log, "Alice-pw-1") && !strstr(log, "Basic "));
    free(log);
    api_fx_stop(&f);
}

/* ---- `quarry serve` and graceful shutdown ------------------------------------------------------------ */

typedef struct {
    char base[128];
    long status;
    char answer[512];
} slow_req;

static void *slow_ask(void *arg)
{
    slow_req *s = arg;
    char dave[512];
    api_basic(dave, sizeof(dave), "dave", "p@ss, w0rd (*)");
    api_resp r;
    s->status = api_http(s->base, "POST", "/v1/ask", (const char *const[]){dave, NULL},
                         "{\"question\":\"expense reimbursement?\"}", 0, &r);
    const char *a = json_string_value(json_object_get(r.json, "answer"));
    snprintf(s->answer, sizeof(s->answer), "%s", a ? a : qr_buf_str(&r.body));
    api_resp_release(&r);
    return NULL;
}

TEST(serve_shuts_down_gracefully)
{
    creds();
    /* a store with documents, written by an in-process server that is then stopped */
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, NULL));
    CHECK(seed_corpus(&f));
    api_server_free(f.srv);
    f.srv = NULL;

    char data[300];
    snprintf(data, sizeof(data), "%s/data", f.dir);
    char people[256], groups[256], inf[256];
    snprintf(people, sizeof(people), "ldap.user_base=ou=people,%s", getenv("QUARRY_TEST_LDAP_BASE"));
    snprintf(groups, sizeof(groups), "ldap.group_base=ou=groups,%s", getenv("QUARRY_TEST_LDAP_BASE"));
    snprintf(inf, sizeof(inf), "inference.base_url=%s/v1", fake_url());
    char uri[256], bind[256], pw[256];
    snprintf(uri, sizeof(uri), "ldap.uri=%s", getenv("QUARRY_TEST_LDAP_URI"));
    snprintf(bind, sizeof(bind), "ldap.bind_dn=%s", getenv("QUARRY_TEST_LDAP_BIND_DN"));
    snprintf(pw, sizeof(pw), "ldap.bind_password=%s", getenv("QUARRY_TEST_LDAP_BIND_PW"));
    int out[2];
    CHECK(pipe(out) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        close(out[0]);
        close(out[1]);
        execl(QUARRY_BIN, "quarry", "--data", data, "--set", "server.listen=127.0.0.1:0", "--set", uri,
              "--set", bind, "--set", pw, "--set", people, "--set", groups, "--set", "auth.admin_groups=ops",
              "--set", inf, "--set", "inference.model=fake-chat-model", "--set", "server.shutdown_grace_s=10",
              "--log-level", "warn", "serve", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    FILE *o = fdopen(out[0], "r");
    char line[512] = "";
    bool got_line = fgets(line, sizeof(line), o) != NULL;
    char *url = strstr(line, "http://");
    if (!got_line || !url) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fclose(o);
        CHECK_MSG(false, "quarry serve printed: %s", line);
    }
    slow_req s = {"", 0, ""};
    snprintf(s.base, sizeof(s.base), "%.*s", (int)strcspn(url, " \n"), url);

    /* the backend will sit on the next answer for 1.5 s */
    CHECK(fake_reset());
    api_resp r;
    CHECK_INT(api_http(fake_url(), "POST", "/_fake/faults", NULL,
                       "{\"mode\":\"stall_first_byte\",\"times\":1,\"stall_ms\":1500}", 0, &r),
              200);
    api_resp_release(&r);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, slow_ask, &s) == 0);
    /* wait until the backend has the request, then ask the server to stop */
    for (int i = 0; i < 100 && fake_chat_requests() == 0; i++)
        usleep(20000);
    uint64_t t0 = qr_now_ns();
    CHECK(kill(pid, SIGTERM) == 0);
    usleep(300000);
    /* no new connections once shutdown began */
    long refused = api_http(s.base, "GET", "/healthz", NULL, NULL, 0, &r);
    api_resp_release(&r);
    pthread_join(th, NULL);
    int status = 0;
    waitpid(pid, &status, 0);
    double secs = (double)(qr_now_ns() - t0) / 1e9;
    char rest[512] = "";
    size_t k = fread(rest, 1, sizeof(rest) - 1, o);
    rest[k] = '\0';
    fclose(o);
    CHECK_MSG(s.status == 200 && strstr(s.answer, "fake inference server"), "in-flight request: %ld %s",
              s.status, s.answer);
    CHECK_MSG(refused == -1, "a new connection during shutdown got %ld", refused);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "quarry serve exit status %d", status);
    CHECK_MSG(secs < 8, "shutdown took %.1f s", secs);
    CHECK_MSG(strstr(rest, "stopped"), "%s", rest);
    api_fx_stop(&f);
}
