/*
 * OpenID Connect token checks without a provider or a directory (auth/oidc.c): keys made here
 * with libcjose, installed as a fetched JWKS would be (the JWKS URL is a closed port and the
 * refresh interval a day, so nothing is fetched), and tokens signed here, good and bad. The
 * real provider, discovery, rotation and the mapping through slapd are in test_oidc.c.
 */
#define _GNU_SOURCE /* asprintf */
#include <cjose/cjose.h>
#include <jansson.h>

#include "auth/auth_int.h"
#include "tests/auth_test_util.h"
#include "tests/harness.h"

#define ISSUER   "https://login.example.com/tenant-1/v2.0"
#define AUDIENCE "api://quarry"

typedef struct {
    cjose_jwk_t *rs, *ps, *es, *weak, *enc, *rogue;
} test_keys;

/* The key's public JWK object, with kid, use and alg (NULL: left out). */
static json_t *public_jwk(cjose_jwk_t *k, const char *kid, const char *use, const char *alg)
{
    cjose_err cerr;
    char *text = cjose_jwk_to_json(k, false, &cerr);
    json_t *o = json_loads(text, 0, NULL);
    free(text);
    json_object_set_new(o, "kid", json_string(kid));
    if (use)
        json_object_set_new(o, "use", json_string(use));
    if (alg)
        json_object_set_new(o, "alg", json_string(alg));
    return o;
}

static test_keys make_keys(void)
{
    static const uint8_t e[] = {1, 0, 1};
    cjose_err cerr;
    test_keys k;
    k.rs = cjose_jwk_create_RSA_random(2048, e, sizeof(e), &cerr);
    k.ps = cjose_jwk_create_RSA_random(2048, e, sizeof(e), &cerr);
    k.es = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &cerr);
    k.weak = cjose_jwk_create_RSA_random(1024, e, sizeof(e), &cerr);
    k.enc = cjose_jwk_create_RSA_random(2048, e, sizeof(e), &cerr);
    k.rogue = cjose_jwk_create_RSA_random(2048, e, sizeof(e), &cerr);
    return k;
}

static void free_keys(test_keys *k)
{
    cjose_jwk_t *all[] = {k->rs, k->ps, k->es, k->weak, k->enc, k->rogue};
    for (size_t i = 0; i < 6; i++)
        cjose_jwk_release(all[i]);
}

static char *jwks_text(const test_keys *k)
{
    json_t *keys = json_array();
    json_array_append_new(keys, public_jwk(k->rs, "rs-1", "sig", "RS256"));
    json_array_append_new(keys, public_jwk(k->ps, "ps-1", "sig", "PS256"));
    json_array_append_new(keys, public_jwk(k->es, "es-1", NULL, NULL));
    json_array_append_new(keys, public_jwk(k->weak, "weak-1", "sig", "RS256"));
    json_array_append_new(keys, public_jwk(k->enc, "enc-1", "enc", NULL));
    /* a shared secret published in a JWKS is never a verification key */
    json_array_append_new(keys, json_pack("{s:s,s:s,s:s}", "kty", "oct", "kid", "oct-1", "k", "c2VjcmV0"));
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return text;
}

/* Default claims of a good token for alice. */
static json_t *claims_for(const char *user)
{
    int64_t now = qr_wall_ms() / 1000;
    return json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:s}", "iss", ISSUER, "aud", AUDIENCE, "sub", "sub-x",
                     "preferred_username", user, "iat", (json_int_t)now, "nbf", (json_int_t)now, "exp",
                     (json_int_t)(now + 300), "scp", "quarry.search quarry.chat");
}

/* A compact JWS of claims (consumed) under header {alg, kid} signed with key. */
static char *sign(cjose_jwk_t *key, const char *alg, const char *kid, json_t *claims)
{
    json_t *h = json_pack("{s:s,s:s}", "alg", alg, "typ", "JWT");
    if (kid)
        json_object_set_new(h, "kid", json_string(kid));
    char *payload = json_dumps(claims, JSON_COMPACT);
    json_decref(claims);
    cjose_err cerr;
    cjose_jws_t *jws =
        cjose_jws_sign(key, (cjose_header_t *)h, (const uint8_t *)payload, strlen(payload), &cerr);
    json_decref(h);
    free(payload);
    const char *compact = NULL;
    char *out = NULL;
    if (jws && cjose_jws_export(jws, &compact, &cerr))
        out = strdup(compact);
    cjose_jws_release(jws);
    return out;
}

static char *b64url(const char *s)
{
    qr_buf b;
    qr_buf_init(&b, 1 << 20);
    auth_b64url_encode(&b, (const unsigned char *)s, strlen(s));
    char *out = strdup(qr_buf_str(&b));
    qr_buf_release(&b);
    return out;
}

/* header.claims.signature from JSON texts, signature as given (unsigned tokens). */
static char *assemble(const char *header, json_t *claims, const char *sig)
{
    char *c = json_dumps(claims, JSON_COMPACT);
    json_decref(claims);
    char *h64 = b64url(header), *c64 = b64url(c), *out = NULL;
    if (asprintf(&out, "%s.%s.%s", h64, c64, sig) < 0)
        out = NULL;
    free(c);
    free(h64);
    free(c64);
    return out;
}

static auth_ctx *oidc_ctx(const char *dir, const char *jwks, const char *extra_key, const char *extra_value)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = test_config(dir, "ldap.uri", "ldap://127.0.0.1:1/", "ldap.user_base",
                                 "dc=example,dc=org", "oidc.issuer", ISSUER ",https://other.example.com/",
                                 "oidc.audience", AUDIENCE ",api://second", "oidc.jwks_url",
                                 "http://127.0.0.1:1/jwks,http://127.0.0.1:1/jwks2",
                                 "oidc.jwks_min_refresh_s", "86400", extra_key, extra_value, NULL);
    auth_ctx *ctx = NULL;
    qr_status st = auth_new(cfg, &ctx, err);
    qr_config_free(cfg);
    if (st) {
        fprintf(stderr, "auth_new: %s\n", err);
        return NULL;
    }
    if (auth_oidc_load_jwks(ctx, 0, jwks, strlen(jwks), err)) {
        fprintf(stderr, "load_jwks: %s\n", err);
        auth_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Verifies token (freed) and checks the status and that err holds want (NULL: anything). */
static bool expect(auth_ctx *ctx, char *token, qr_status want, const char *want_err, const char *what)
{
    char err[QR_ERR_LEN] = "";
    auth_oidc_info info;
    qr_status st = token ? auth_oidc_verify(ctx, token, &info, err) : QR_EINTERNAL;
    bool ok = st == want && (!want_err || strstr(err, want_err));
    if (!ok)
        fprintf(stderr, "%s: got %s \"%s\", wanted %s \"%s\"\n", what, qr_status_name(st), err,
                qr_status_name(want), want_err ? want_err : "");
    free(token);
    return ok;
}

TEST(oidc_config_errors_are_clear)
{
    char dir[256], err[QR_ERR_LEN];
    test_tmpdir(dir, sizeof(dir));
    struct {
        const char *k1, *v1, *k2, *v2, *want;
    } cases[] = {
        {"oidc.issuer", ISSUER, "oidc.audience", "", "oidc.audience"},
        {"oidc.issuer", "http://login.example.com/", "oidc.audience", AUDIENCE, "https://"},
        {"oidc.issuer", ISSUER, "oidc.audience", AUDIENCE, NULL},
        {"oidc.audience", AUDIENCE, NULL, NULL, "need oidc.issuer"},
        {"oidc.issuer", ISSUER, "oidc.jwks_url", "https://a/,https://b/", "2 URLs for 1 issuers"},
        {"oidc.issuer", ISSUER, "oidc.user_filter", "(uid=%d)", "oidc.user_filter"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool with_ldap = i != 2;
        qr_config *cfg = test_config(dir, "ldap.uri", with_ldap ? "ldap://127.0.0.1:1/" : "",
                                     "ldap.user_base", "dc=x", "oidc.audience", i == 3 ? "" : AUDIENCE,
                                     cases[i].k1, cases[i].v1, cases[i].k2, cases[i].v2, NULL);
        auth_ctx *ctx = NULL;
        qr_status st = auth_new(cfg, &ctx, err);
        qr_config_free(cfg);
        CHECK_INT(st, QR_EINVAL);
        CHECK_MSG(strstr(err, cases[i].want ? cases[i].want : "ldap.uri"), "case %zu: %s", i, err);
        CHECK(ctx == NULL);
    }
    test_rmdir(dir);
}

TEST(oidc_accepts_tokens_of_each_allowed_alg)
{
    char dir[256];
    test_tmpdir(dir, sizeof(dir));
    test_keys k = make_keys();
    char *jwks = jwks_text(&k);
    auth_ctx *ctx = oidc_ctx(dir, jwks, NULL, NULL);
    CHECK(ctx);
    char err[QR_ERR_LEN];
    auth_oidc_info info;
    char *t = sign(k.rs, "RS256", "rs-1", claims_for("alice"));
    CHECK_OK(auth_oidc_verify(ctx, t, &info, err), err);
    CHECK_STR(info.issuer, ISSUER);
    CHECK_STR(info.subject, "alice");
    CHECK_STR(info.claim, "preferred_username");
    CHECK_STR(info.kid, "rs-1");
    CHECK(info.expires_at > qr_wall_ms() / 1000);
    free(t);
    CHECK(expect(ctx, sign(k.ps, "PS256", "ps-1", claims_for("bob")), QR_OK, NULL, "PS256"));
    CHECK(expect(ctx, sign(k.es, "ES256", "es-1", claims_for("carol")), QR_OK, NULL, "ES256"));
    /* aud may be a list; exp a little in the past is within the skew */
    json_t *c = claims_for("alice");
    json_object_set_new(c, "aud", json_pack("[s,s]", "api://graph", "api://second"));
    json_object_set_new(c, "exp", json_integer(qr_wall_ms() / 1000 - 30));
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_OK, NULL, "aud list, exp within skew"));
    /* a token without kid: the one key of its type (EC) is used */
    CHECK(expect(ctx, sign(k.es, "ES256", NULL, claims_for("alice")), QR_OK, NULL, "no kid, one EC key"));
    auth_free(ctx);
    free(jwks);
    free_keys(&k);
    test_rmdir(dir);
}

TEST(oidc_refuses_every_defect)
{
    char dir[256];
    test_tmpdir(dir, sizeof(dir));
    test_keys k = make_keys();
    char *jwks = jwks_text(&k);
    auth_ctx *ctx = oidc_ctx(dir, jwks, "oidc.required_scope", "quarry.search");
    CHECK(ctx);
    int64_t now = qr_wall_ms() / 1000;
    json_t *c;

    c = claims_for("alice");
    json_object_set_new(c, "exp", json_integer(now - 61));
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_EAUTH, "expired", "expired"));
    c = claims_for("alice");
    json_object_del(c, "exp");
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_EAUTH, "no expiry", "no exp"));
    c = claims_for("alice");
    json_object_set_new(c, "nbf", json_integer(now + 120));
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_EAUTH, "not valid yet", "nbf"));
    c = claims_for("alice");
    json_object_set_new(c, "iat", json_integer(now + 120));
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_EAUTH, "future", "iat"));
    c = claims_for("alice");
    json_object_set_new(c, "iss", json_string(ISSUER "/"));
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_EAUTH, "issuer", "issuer differs by a slash"));
    c = claims_for("alice");
    json_object_set_new(c, "aud", json_string("api://graph"));
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_EAUTH, "audience", "wrong aud"));
    c = claims_for("alice");
    json_object_del(c, "aud");
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_EAUTH, "audience", "no aud"));
    c = claims_for("alice");
    json_object_set_new(c, "scp", json_string("quarry.chat quarry.searchx"));
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_EAUTH, "scope 'quarry.search'", "scope missing"));
    c = claims_for("alice");
    json_object_del(c, "scp");
    json_object_set_new(c, "scope", json_string("openid quarry.search"));
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_OK, NULL, "scope claim"));
    c = claims_for("alice");
    json_object_set_new(c, "scp", json_pack("[s]", "quarry.search"));
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_OK, NULL, "scp list"));
    c = claims_for("alice");
    json_object_del(c, "preferred_username");
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_EAUTH, "preferred_username", "no user claim"));
    c = claims_for("al\x01ice");
    CHECK(
        expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_EAUTH, "preferred_username", "control byte in name"));

    /* keys and algorithms */
    CHECK(expect(ctx, sign(k.rogue, "RS256", "rs-1", claims_for("alice")), QR_EAUTH, "signature",
                 "signed by another key under a known kid"));
    CHECK(expect(ctx, sign(k.rogue, "RS256", "rogue-1", claims_for("alice")), QR_EAUTH, "not one of",
                 "unknown kid (no refresh allowed yet)"));
    CHECK(expect(ctx, sign(k.enc, "RS256", "enc-1", claims_for("alice")), QR_EAUTH, "use 'enc'",
                 "encryption key"));
    CHECK(expect(ctx, sign(k.rs, "PS256", "rs-1", claims_for("alice")), QR_EAUTH, "published for RS256",
                 "alg differs from the key's alg"));
    CHECK(expect(ctx, sign(k.weak, "RS256", "weak-1", claims_for("alice")), QR_EAUTH, "shorter than 2048",
                 "1024-bit RSA"));
    CHECK(expect(ctx, sign(k.rs, "RS256", NULL, claims_for("alice")), QR_EAUTH, "several keys",
                 "no kid, several RSA keys"));
    CHECK(
        expect(ctx, assemble("{\"alg\":\"none\"}", claims_for("alice"), ""), QR_EAUTH, "'none'", "alg none"));
    CHECK(expect(
        ctx, assemble("{\"alg\":\"ES256\",\"kid\":\"es-1\",\"crit\":[\"exp\"]}", claims_for("alice"), "AAAA"),
        QR_EAUTH, "critical", "crit"));
    /* HS256 keyed with the RSA public key's published form: the key-confusion attack */
    cjose_err cerr;
    char *pub = cjose_jwk_to_json(k.rs, false, &cerr);
    cjose_jwk_t *hmac = cjose_jwk_create_oct_spec((const uint8_t *)pub, strlen(pub), &cerr);
    free(pub);
    CHECK(hmac);
    CHECK(expect(ctx, sign(hmac, "HS256", "rs-1", claims_for("alice")), QR_EAUTH, "'HS256' is not accepted",
                 "HS256 with the public key as secret"));
    CHECK(expect(ctx, sign(hmac, "HS256", "oct-1", claims_for("alice")), QR_EAUTH, "'HS256' is not accepted",
                 "HS256 naming the JWKS's oct key"));
    cjose_jwk_release(hmac);

    /* shape */
    char *good = sign(k.rs, "RS256", "rs-1", claims_for("alice"));
    CHECK(good);
    size_t big = 100 * 1024;
    char *huge = malloc(big + 1);
    memset(huge, 'A', big);
    memcpy(huge, good, strlen(good));
    huge[big] = '\0';
    CHECK(expect(ctx, huge, QR_EAUTH, "longer than oidc.max_token_bytes", "100 KB token"));
    char *five = NULL;
    CHECK(asprintf(&five, "%s.AAAA.AAAA", good) > 0);
    CHECK(expect(ctx, five, QR_EAUTH, "three parts", "JWE shape"));
    char *padded = NULL;
    CHECK(asprintf(&padded, "%s=", good) > 0);
    CHECK(expect(ctx, padded, QR_EAUTH, "base64url", "padding"));
    char *tampered = strdup(good);
    char *claims_part = strchr(tampered, '.') + 1;
    claims_part[3] = claims_part[3] == 'A' ? 'B' : 'A';
    CHECK(expect(ctx, tampered, QR_EAUTH, NULL, "claims changed after signing"));
    CHECK(expect(ctx, good, QR_OK, NULL, "the untouched token"));
    auth_free(ctx);
    free(jwks);
    free_keys(&k);
    test_rmdir(dir);
}

TEST(oidc_issuer_without_keys_is_unavailable)
{
    /* the second issuer's JWKS URL is a closed port and nothing was installed: fail closed (503),
     * not open, and not as a bad credential */
    char dir[256];
    test_tmpdir(dir, sizeof(dir));
    test_keys k = make_keys();
    char *jwks = jwks_text(&k);
    auth_ctx *ctx = oidc_ctx(dir, jwks, NULL, NULL);
    CHECK(ctx);
    json_t *c = claims_for("alice");
    json_object_set_new(c, "iss", json_string("https://other.example.com/"));
    CHECK(expect(ctx, sign(k.rs, "RS256", "rs-1", c), QR_EUNAVAILABLE, "not available", "no keys"));
    auth_free(ctx);
    free(jwks);
    free_keys(&k);
    test_rmdir(dir);
}
