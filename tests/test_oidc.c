/*
 * OpenID Connect sign-in end to end: a real OpenID provider (tests/oidc_provider: oidc-provider,
 * two tenants, tokens from the authorization code flow with PKCE) issues access tokens; quarry
 * discovers the issuers, fetches their keys, maps each token's user through the real slapd and
 * serves searches over real HTTP. Forged tokens come from the same provider's keys (and a rogue
 * one) through its test routes. Runs under the slapd, fake inference and OIDC fixtures.
 */
#define _GNU_SOURCE /* asprintf */
#include <sys/stat.h>

#include "tests/api_test_corpus.h"
#include "tests/api_test_util.h"
#include "tests/harness.h"

static const char *op_url(void)
{
    const char *u = getenv("QUARRY_TEST_OIDC_URL");
    return u ? u : "http://127.0.0.1:9";
}

/* POSTs body to one of the provider's test routes; the answer's field (a new string), "" when
 * field is NULL, or NULL when the route failed. */
static char *op_call(const char *route, const char *body, const char *field)
{
    api_resp r;
    long st = api_http(op_url(), "POST", route, H("Content-Type: application/json"), body, 0, &r);
    const char *v = field ? json_string_value(json_object_get(r.json, field)) : "";
    char *out = st == 200 && v ? strdup(v) : NULL;
    if (!out)
        fprintf(stderr, "%s %s: %ld %s\n", route, body, st, qr_buf_str(&r.body));
    api_resp_release(&r);
    return out;
}

/* An access token for user from the provider's real authorization code flow. */
static char *op_token(const char *tenant, const char *user, const char *alg)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"tenant\":\"%s\",\"user\":\"%s\",\"alg\":\"%s\"}", tenant, user, alg);
    return op_call("/__test/token", body, "access_token");
}

/* A token signed by the provider's test route: key as the route names it, claims and header as
 * JSON object texts (may be "{}"). */
static char *op_forge(const char *key, const char *claims, const char *header)
{
    char *body = NULL;
    if (asprintf(&body,
                 "{\"tenant\":\"tenant-a\",\"user\":\"alice\",\"key\":\"%s\",\"claims\":%s,\"header\":%s}",
                 key, claims, header) < 0)
        return NULL;
    char *t = op_call("/__test/sign", body, "token");
    free(body);
    return t;
}

static long long op_jwks_fetches(const char *tenant)
{
    char path[128];
    snprintf(path, sizeof(path), "/__test/stats?tenant=%s", tenant);
    api_resp r;
    api_http(op_url(), "GET", path, NULL, NULL, 0, &r);
    long long n = json_integer_value(json_object_get(r.json, "jwks_fetches"));
    api_resp_release(&r);
    return n;
}

static bool op_outage(bool down)
{
    char *ok =
        op_call("/__test/outage",
                down ? "{\"tenant\":\"tenant-a\",\"down\":true}" : "{\"tenant\":\"tenant-a\",\"down\":false}",
                "tenant");
    bool done = ok != NULL;
    free(ok);
    return done;
}

/* Starts quarry trusting both tenants; more "key", "value" pairs may follow (NULL-ended). */
static bool start(api_fixture *f, const char *k1, const char *v1)
{
    char issuers[512];
    snprintf(issuers, sizeof(issuers), "%s/tenant-a,%s/tenant-b", op_url(), op_url());
    return api_fx_start(f, "oidc.issuer", issuers, "oidc.audience", "api://quarry", "oidc.jwks_min_refresh_s",
                        "1", "oidc.required_scope", "quarry.search", k1, v1, NULL);
}

static void bearer(char *out, size_t len, const char *token)
{
    snprintf(out, len, "Authorization: Bearer %s", token ? token : "");
}

static char *me(api_fixture *f, const char *token, long *status)
{
    char h[16384];
    bearer(h, sizeof(h), token);
    api_resp r;
    *status = api_http(f->base, "GET", "/v1/me", H(h), NULL, 0, &r);
    const char *uid = json_string_value(json_object_get(r.json, "uid"));
    char *out = uid ? strdup(uid) : NULL;
    api_resp_release(&r);
    return out;
}

TEST(oidc_token_maps_to_the_directory_user)
{
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(start(&f, NULL, NULL));
    const char *algs[] = {"RS256", "PS256", "ES256"};
    for (size_t i = 0; i < 3; i++) {
        char *t = op_token("tenant-a", "alice", algs[i]);
        CHECK(t);
        char h[8192];
        bearer(h, sizeof(h), t);
        api_resp r;
        CHECK_INT(api_http(f.base, "GET", "/v1/me", H(h), NULL, 0, &r), 200);
        CHECK_STR(json_string_value(json_object_get(r.json, "uid")), "alice");
        char *groups = json_dumps(json_object_get(r.json, "groups"), 0);
        CHECK_MSG(strstr(groups, "\"eng-backend\"") && strstr(groups, "\"staff\""), "%s", groups);
        free(groups);
        api_resp_release(&r);
        free(t);
    }
    /* the second tenant, and an administrator: is_admin comes from the directory's groups */
    char *t = op_token("tenant-b", "dave", "RS256");
    char h[8192];
    bearer(h, sizeof(h), t);
    free(t);
    api_resp r;
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(h), NULL, 0, &r), 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "uid")), "dave");
    CHECK(json_is_true(json_object_get(r.json, "is_admin")));
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/documents", H(h), NULL, 0, &r), 200); /* an admin route */
    api_resp_release(&r);
    api_fx_stop(&f);

    /* another claim: Entra's upn ("bob@example.com" here) is nobody's uid: refused, never public */
    CHECK(start(&f, "oidc.user_claim", "upn"));
    t = op_token("tenant-a", "bob", "ES256");
    long st;
    char *uid = me(&f, t, &st);
    free(t);
    CHECK_INT(st, 401);
    CHECK(uid == NULL);
    api_fx_stop(&f);
    /* another filter: the entry is found by its mail attribute, the uid is the entry's */
    CHECK(start(&f, "oidc.user_filter", "(mail=%s@quarry.test)"));
    t = op_token("tenant-a", "erin", "RS256");
    uid = me(&f, t, &st);
    free(t);
    CHECK_INT(st, 200);
    CHECK_STR(uid, "erin");
    free(uid);
    api_fx_stop(&f);
}

TEST(oidc_permissions_equal_password_and_quarry_token)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(start(&f, NULL, NULL));
    CHECK(seed_corpus(&f));
    struct {
        const char *user, *basic;
    } users[] = {{"alice", ALICE}, {"bob", BOB}, {"erin", ERIN}, {"dave", DAVE}, {"frank", FRANK}};
    const char *modes[] = {"bm25", "vector", "hybrid"};
    for (size_t u = 0; u < sizeof(users) / sizeof(users[0]); u++) {
        /* the quarry token of the same user */
        api_resp r;
        CHECK_INT(api_http(f.base, "POST", "/v1/auth/token", H(users[u].basic), NULL, 0, &r), 200);
        char qt[2048], oidc[8192];
        bearer(qt, sizeof(qt), json_string_value(json_object_get(r.json, "access_token")));
        api_resp_release(&r);
        char *t = op_token(u % 2 ? "tenant-b" : "tenant-a", users[u].user, "RS256");
        CHECK(t);
        bearer(oidc, sizeof(oidc), t);
        free(t);
        for (size_t m = 0; m < 3; m++) {
            char by_pw[2048], by_qt[2048], by_oidc[2048];
            long s1, s2, s3;
            search_ids(&f, users[u].basic, modes[m], by_pw, sizeof(by_pw), &s1);
            search_ids(&f, qt, modes[m], by_qt, sizeof(by_qt), &s2);
            search_ids(&f, oidc, modes[m], by_oidc, sizeof(by_oidc), &s3);
            CHECK_INT(s1, 200);
            CHECK_INT(s2, 200);
            CHECK_INT(s3, 200);
            CHECK_MSG(*by_pw, "%s %s: no results", users[u].user, modes[m]);
            CHECK_MSG(strcmp(by_pw, by_qt) == 0 && strcmp(by_pw, by_oidc) == 0,
                      "%s %s: password [%s] token [%s] oidc [%s]", users[u].user, modes[m], by_pw, by_qt,
                      by_oidc);
        }
    }
    api_fx_stop(&f);
}

/* Counts the lines of the fixture's audit log holding every needle, and checks that none holds
 * the text `never`. */
static int audit_lines(api_fixture *f, const char *needle, const char *needle2, const char *never, bool *leak)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/data/audit.log", f->dir);
    FILE *fp = fopen(path, "r");
    char line[8192];
    int n = 0;
    while (fp && fgets(line, sizeof(line), fp)) {
        if (strstr(line, needle) && (!needle2 || strstr(line, needle2)))
            n++;
        if (never && strstr(line, never))
            *leak = true;
    }
    if (fp)
        fclose(fp);
    return n;
}

TEST(oidc_refused_tokens_answer_401_and_leave_an_audit_line)
{
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(start(&f, NULL, NULL));
    long long now = qr_wall_ms() / 1000;
    struct {
        const char *what, *key, *header;
        char claims[512];
        const char *reason;
    } cases[] = {
        {"expired", "rs256", "{}", "", "expired"},
        {"not yet valid", "rs256", "{}", "", "not valid yet"},
        {"wrong issuer", "rs256", "{}", "", "issuer"},
        {"wrong audience", "rs256", "{}", "", "audience"},
        {"no required scope", "rs256", "{}", "", "scope"},
        {"bad signature", "rogue", "{}", "{}", "signature"},
        {"alg none", "none", "{}", "{}", "'none'"},
        {"HS256 keyed with the RSA public key", "hs256-public", "{}", "{}", "'HS256'"},
        {"a key published for encryption", "enc", "{}", "{}", "use 'enc'"},
        {"unknown kid after refresh", "rs256", "{\"kid\":\"tenant-a-rs-99\"}", "{}", "not one of"},
        {"alg the key is not for", "ps256", "{\"kid\":\"tenant-a-rs-1\"}", "{}", "published for RS256"},
    };
    snprintf(cases[0].claims, sizeof(cases[0].claims), "{\"exp\":%lld,\"iat\":%lld}", now - 3600, now - 3900);
    snprintf(cases[1].claims, sizeof(cases[1].claims), "{\"nbf\":%lld}", now + 3600);
    snprintf(cases[2].claims, sizeof(cases[2].claims), "{\"iss\":\"%s/tenant-c\"}", op_url());
    snprintf(cases[3].claims, sizeof(cases[3].claims), "{\"aud\":\"api://graph\"}");
    snprintf(cases[4].claims, sizeof(cases[4].claims), "{\"scp\":\"quarry.chat\"}");
    size_t ncases = sizeof(cases) / sizeof(cases[0]);
    char *good = op_forge("rs256", "{}", "{}");
    CHECK(good);
    long st;
    char *uid = me(&f, good, &st);
    CHECK_INT(st, 200);
    CHECK_STR(uid, "alice");
    free(uid);
    for (size_t i = 0; i < ncases; i++) {
        char *t = op_forge(cases[i].key, cases[i].claims, cases[i].header);
        CHECK_MSG(t, "%s: no token", cases[i].what);
        char h[8192];
        bearer(h, sizeof(h), t);
        api_resp r;
        CHECK_INT(api_http(f.base, "POST", "/v1/search", H(h), "{\"query\":\"expense\"}", 0, &r), 401);
        CHECK(api_error_shape(&r));
        CHECK_STR(json_string_value(json_object_get(json_object_get(r.json, "error"), "type")),
                  "authentication_error");
        const char *msg = json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
        CHECK_MSG(msg && strstr(msg, cases[i].reason), "%s: %s", cases[i].what, msg ? msg : "(none)");
        CHECK_MSG(strstr(qr_buf_str(&r.headers), "error=\"invalid_token\""), "%s: no Bearer challenge",
                  cases[i].what);
        /* and no Basic challenge, which would open a browser's password dialog over a page */
        CHECK_MSG(!strstr(qr_buf_str(&r.headers), "Basic realm"), "%s: a Basic challenge", cases[i].what);
        api_resp_release(&r);
        bool leak = false;
        CHECK_MSG(audit_lines(&f, "\"auth_refused\"", cases[i].reason, t, &leak) >= 1, "%s: no audit line",
                  cases[i].what);
        CHECK_MSG(!leak, "%s: the token is in the audit log", cases[i].what);
        free(t);
    }
    /* a user the directory does not have: 401, not a public principal */
    char *t = op_token("tenant-a", "mallory", "RS256");
    uid = me(&f, t, &st);
    CHECK_INT(st, 401);
    CHECK(uid == NULL);
    free(t);
    bool leak = false;
    CHECK(audit_lines(&f, "\"auth_refused\"", "not in the directory", NULL, &leak) == 1);
    CHECK(audit_lines(&f, "\"subject\":\"mallory\"", NULL, NULL, &leak) == 1);
    /* oversized: past oidc.max_token_bytes (16 KiB) is refused unread; 100 KB does not even pass the
     * server's header limit (libmicrohttpd answers 431 itself) */
    size_t sizes[] = {40 * 1024, 100 * 1024};
    for (size_t i = 0; i < 2; i++) {
        char *big = malloc(sizes[i] + 64);
        size_t glen = strlen(good);
        memcpy(big, "Authorization: Bearer ", 22);
        memcpy(big + 22, good, glen);
        memset(big + 22 + glen, 'A', sizes[i] - glen);
        big[22 + sizes[i]] = '\0';
        api_resp r;
        long code = api_http(f.base, "GET", "/v1/me", H(big), NULL, 0, &r);
        CHECK_MSG(i == 0 ? code == 401 : code == 431, "%zu bytes: %ld", sizes[i], code);
        if (i == 0)
            CHECK(strstr(json_string_value(json_object_get(json_object_get(r.json, "error"), "message")),
                         "oidc.max_token_bytes"));
        api_resp_release(&r);
        free(big);
    }
    /* a token of alice's naming another user: no impersonation without a key with on_behalf_of */
    char h[8192];
    bearer(h, sizeof(h), good);
    api_resp r;
    CHECK_INT(api_http(f.base, "GET", "/v1/me", H(h, "X-Quarry-User: bob"), NULL, 0, &r), 403);
    CHECK(api_error_shape(&r));
    api_resp_release(&r);
    CHECK(audit_lines(&f, "\"auth_refused\"", "X-Quarry-User", NULL, &leak) == 1);
    /* the good token still works and its use is audited with the scheme */
    CHECK_INT(api_http(f.base, "POST", "/v1/search", H(h), "{\"query\":\"expense\"}", 0, &r), 200);
    api_resp_release(&r);
    CHECK(audit_lines(&f, "\"auth\":\"oidc\"", "\"action\":\"search\"", NULL, &leak) == 1);
    CHECK(!leak);
    free(good);
    api_fx_stop(&f);
}

TEST(oidc_keys_rotate_and_known_keys_survive_an_outage)
{
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(start(&f, NULL, NULL));
    long long fetches0 = op_jwks_fetches("tenant-a");
    char *t1 = op_token("tenant-a", "alice", "RS256");
    long st;
    char *uid = me(&f, t1, &st);
    CHECK_INT(st, 200);
    free(uid);
    CHECK_INT(op_jwks_fetches("tenant-a") - fetches0, 1);
    /* cached: more requests fetch nothing */
    for (int i = 0; i < 5; i++) {
        free(me(&f, t1, &st));
        CHECK_INT(st, 200);
    }
    CHECK_INT(op_jwks_fetches("tenant-a") - fetches0, 1);

    /* forged kids cannot make quarry hammer the issuer: at most one fetch per second */
    char *forged = op_forge("rs256", "{}", "{\"kid\":\"tenant-a-nope\"}");
    uint64_t t0 = qr_now_ns();
    for (int i = 0; i < 30; i++) {
        free(me(&f, forged, &st));
        CHECK_INT(st, 401);
    }
    double secs = (double)(qr_now_ns() - t0) / 1e9;
    long long forged_fetches = op_jwks_fetches("tenant-a") - fetches0 - 1;
    CHECK_MSG(forged_fetches <= (long long)secs + 1, "%lld fetches in %.1f s", forged_fetches, secs);
    free(forged);

    /* rotation: the new kid is fetched on first sight, the old one is gone after that */
    char *rotated = op_call("/__test/rotate", "{\"tenant\":\"tenant-a\"}", NULL);
    CHECK(rotated);
    free(rotated);
    usleep(1100 * 1000); /* past oidc.jwks_min_refresh_s since the last fetch */
    char *t2 = op_token("tenant-a", "alice", "RS256");
    uid = me(&f, t2, &st);
    CHECK_INT(st, 200);
    CHECK_STR(uid, "alice");
    free(uid);
    uid = me(&f, t1, &st);
    CHECK_INT(st, 401); /* signed by a key the issuer no longer publishes */
    CHECK(uid == NULL);

    /* the issuer goes down: the known key still serves; an unknown one cannot */
    CHECK(op_outage(true));
    usleep(1100 * 1000);
    uid = me(&f, t2, &st);
    CHECK_INT(st, 200);
    free(uid);
    char *t3 = op_token("tenant-a", "bob", "ES256"); /* es-2: known since the last fetch */
    uid = me(&f, t3, &st);
    CHECK_INT(st, 200);
    CHECK_STR(uid, "bob");
    free(uid);
    CHECK(op_outage(false));
    api_fx_stop(&f);

    /* a server that never reached the issuer fails closed with 503, not open and not 401 */
    CHECK(op_outage(true));
    CHECK(start(&f, NULL, NULL));
    uid = me(&f, t2, &st);
    CHECK_INT(st, 503);
    CHECK(uid == NULL);
    CHECK(op_outage(false));
    usleep(1100 * 1000);
    uid = me(&f, t2, &st); /* and recovers once it answers */
    CHECK_INT(st, 200);
    free(uid);
    free(t1);
    free(t2);
    free(t3);
    api_fx_stop(&f);
}

TEST(oidc_whoami_shows_the_mapping_or_the_reason)
{
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(start(&f, NULL, NULL));
    const char *base = getenv("QUARRY_TEST_LDAP_BASE");
    char *t = op_token("tenant-b", "alice", "PS256");
    CHECK(t);
    char *expired = op_forge("rs256", "{\"exp\":1000000000}", "{}");
    CHECK(expired);
    const char *tokens[] = {t, expired};
    for (size_t i = 0; i < 2; i++) {
        char *cmd = NULL;
        CHECK(asprintf(&cmd,
                       "echo '%s' | %s --data '%s/data' --set log.level=error --set ldap.uri='%s' --set "
                       "ldap.bind_dn='%s' --set ldap.bind_password='%s' --set ldap.user_base='ou=people,%s' "
                       "--set ldap.group_base='ou=groups,%s' --set oidc.issuer='%s/tenant-a,%s/tenant-b' "
                       "--set oidc.audience=api://quarry auth whoami --token - 2>&1",
                       tokens[i], QUARRY_BIN, f.dir, getenv("QUARRY_TEST_LDAP_URI"),
                       getenv("QUARRY_TEST_LDAP_BIND_DN"), getenv("QUARRY_TEST_LDAP_BIND_PW"),
                       base ? base : "dc=quarry,dc=test", base ? base : "dc=quarry,dc=test", op_url(),
                       op_url()) > 0);
        FILE *p = popen(cmd, "r");
        free(cmd);
        char out[8192];
        size_t n = p ? fread(out, 1, sizeof(out) - 1, p) : 0;
        out[n] = '\0';
        int status = p ? pclose(p) : -1;
        if (i == 0) {
            CHECK_MSG(status == 0, "%s", out);
            CHECK_MSG(strstr(out, "tenant-b") && strstr(out, "PS256") && strstr(out, "preferred_username") &&
                          strstr(out, "uid:          alice") && strstr(out, "eng-backend"),
                      "%s", out);
        } else {
            CHECK_MSG(status != 0 && strstr(out, "expired") && strstr(out, "tenant-a"), "%s", out);
        }
    }
    free(t);
    free(expired);
    api_fx_stop(&f);
}
