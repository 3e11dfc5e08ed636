/*
 * Fuzzes the OpenID Connect token path (auth/oidc.c): the size and shape checks, base64url and JSON
 * decoding of the header and claims, the alg allow-list, the issuer and key choice, the signature
 * check and the claim checks. The first byte picks how the rest is used:
 *   < 0x80: the bytes are the token, as a client would send it;
 *   >= 0x80: "header JSON\nclaims bytes": the harness signs the claims with the issuer's test key
 *            (ES256, kid fz-1, fields of the fuzzed header merged in), so that the claim checks
 *            behind the signature are reached too.
 * Keys are installed from a fixed JWKS and never fetched (the JWKS URL is a closed loopback port
 * and the refresh interval a day). Invariants: a token that passes was issued by the configured
 * issuer for the configured audience, has not expired, names its user in a valid claim that
 * auth_oidc_info reports exactly, and verifies under the test key with the alg ES256.
 */
#include <cjose/cjose.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_int.h"

#define FUZZ_CHECK(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#define ISSUER   "https://issuer.example/tenant"
#define AUDIENCE "api://quarry"

/* A P-256 key made for this harness only (it signs nothing anywhere else). */
static const char test_key[] = "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"fz-1\","
                               "\"x\":\"-_4DzCtOjiQGYWXakjlbpJE2u0iChSmfPoNxdqfGZP8\","
                               "\"y\":\"QXfFOBi_HxIqMa6Vnz6nGWftjkbn84K20SrvCEMS3aQ\","
                               "\"d\":\"SC6sMPcu1BdntFr3XoN4iB_QnVlMdx2_Mvf0FwQpzYE\"}";
/* Its public half twice: for signatures, and published for encryption only (must be refused). */
static const char test_jwks[] =
    "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"fz-1\",\"use\":\"sig\","
    "\"alg\":\"ES256\",\"x\":\"-_4DzCtOjiQGYWXakjlbpJE2u0iChSmfPoNxdqfGZP8\","
    "\"y\":\"QXfFOBi_HxIqMa6Vnz6nGWftjkbn84K20SrvCEMS3aQ\"},"
    "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"fz-enc\",\"use\":\"enc\","
    "\"x\":\"-_4DzCtOjiQGYWXakjlbpJE2u0iChSmfPoNxdqfGZP8\","
    "\"y\":\"QXfFOBi_HxIqMa6Vnz6nGWftjkbn84K20SrvCEMS3aQ\"},"
    "{\"kty\":\"oct\",\"kid\":\"fz-oct\",\"k\":\"c2VjcmV0\"}]}";

static auth_ctx *ctx;
static cjose_jwk_t *signer;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[QR_ERR_LEN];
    qr_log_configure(QR_LOG_OFF, QR_LOG_TEXT, "", err);
    qr_config *cfg = qr_config_new();
    const char *settings[][2] = {
        {"ldap.uri", "ldap://127.0.0.1:1"},
        {"ldap.user_base", "dc=example,dc=org"},
        {"data.dir", "/nonexistent/quarry-fuzz"},
        {"oidc.issuer", ISSUER},
        {"oidc.audience", AUDIENCE ",api://other"},
        {"oidc.jwks_url", "http://127.0.0.1:1/jwks"},
        {"oidc.jwks_min_refresh_s", "86400"},
        {"oidc.jwks_max_age_s", "604800"},
        {"oidc.timeout_ms", "100"},
        {"oidc.max_token_bytes", "8192"},
    };
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
        FUZZ_CHECK(qr_config_set(cfg, settings[i][0], settings[i][1], QR_CFG_SRC_CLI, err) == QR_OK);
    FUZZ_CHECK(auth_new(cfg, &ctx, err) == QR_OK);
    qr_config_free(cfg);
    FUZZ_CHECK(auth_oidc_load_jwks(ctx, 0, test_jwks, strlen(test_jwks), err) == QR_OK);
    cjose_err cerr;
    signer = cjose_jwk_import(test_key, strlen(test_key), &cerr);
    FUZZ_CHECK(signer);
    return 0;
}

/* Signs payload with the test key under header (made an ES256 header); NULL when the harness
 * cannot (a header that is not an object, or one libcjose will not sign with). */
static char *sign(const char *header_text, size_t header_len, const uint8_t *payload, size_t payload_len)
{
    json_t *h = json_loadb(header_text, header_len, 0, NULL);
    if (!json_is_object(h)) {
        json_decref(h);
        h = json_object();
    }
    json_object_set_new(h, "alg", json_string("ES256"));
    if (!json_object_get(h, "kid"))
        json_object_set_new(h, "kid", json_string("fz-1"));
    cjose_err cerr;
    cjose_jws_t *jws = cjose_jws_sign(signer, (cjose_header_t *)h, payload, payload_len, &cerr);
    json_decref(h);
    const char *compact = NULL;
    char *out = NULL;
    if (jws && cjose_jws_export(jws, &compact, &cerr))
        out = strdup(compact);
    cjose_jws_release(jws);
    return out;
}

/* What every accepted token must be. */
static void check_accepted(const char *token, const auth_oidc_info *info)
{
    const char *dot1 = strchr(token, '.');
    const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    FUZZ_CHECK(dot2 && !strchr(dot2 + 1, '.'));
    unsigned char claims_raw[8192];
    size_t n = 0;
    FUZZ_CHECK(auth_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), claims_raw, sizeof(claims_raw), &n) ==
               QR_OK);
    json_t *claims = json_loadb((const char *)claims_raw, n, 0, NULL);
    FUZZ_CHECK(json_is_object(claims));
    FUZZ_CHECK(strcmp(json_string_value(json_object_get(claims, "iss")), ISSUER) == 0);
    FUZZ_CHECK(strcmp(info->issuer, ISSUER) == 0 && strcmp(info->alg, "ES256") == 0);
    json_t *aud = json_object_get(claims, "aud");
    bool aud_ok = json_is_string(aud) && (strcmp(json_string_value(aud), AUDIENCE) == 0 ||
                                          strcmp(json_string_value(aud), "api://other") == 0);
    size_t i;
    json_t *a;
    json_array_foreach(aud, i, a)
    {
        aud_ok |= json_is_string(a) && (strcmp(json_string_value(a), AUDIENCE) == 0 ||
                                        strcmp(json_string_value(a), "api://other") == 0);
    }
    FUZZ_CHECK(aud_ok);
    json_t *exp = json_object_get(claims, "exp");
    FUZZ_CHECK(json_is_number(exp) && json_number_value(exp) + 60 > (double)(qr_wall_ms() / 1000));
    FUZZ_CHECK(info->expires_at == (int64_t)json_number_value(exp));
    const char *who = json_string_value(json_object_get(claims, "preferred_username"));
    FUZZ_CHECK(who && strcmp(who, info->subject) == 0 && auth_name_ok(who, strlen(who)));
    json_decref(claims);
    cjose_err cerr;
    cjose_jws_t *jws = cjose_jws_import(token, strlen(token), &cerr);
    FUZZ_CHECK(jws && cjose_jws_verify(jws, signer, &cerr));
    cjose_jws_release(jws);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *token = NULL;
    if (data[0] < 0x80) {
        token = malloc(size);
        if (!token)
            return 0;
        memcpy(token, data + 1, size - 1);
        token[size - 1] = '\0';
    } else {
        const uint8_t *nl = memchr(data + 1, '\n', size - 1);
        size_t hlen = nl ? (size_t)(nl - data - 1) : 0;
        const uint8_t *payload = nl ? nl + 1 : data + 1;
        token = sign((const char *)data + 1, hlen, payload, size - (size_t)(payload - data));
        if (!token)
            return 0;
    }
    char err[QR_ERR_LEN];
    auth_oidc_info info;
    qr_status st = auth_oidc_verify(ctx, token, &info, err);
    FUZZ_CHECK(st == QR_OK || st == QR_EAUTH);
    FUZZ_CHECK(qr_utf8_valid(err, strlen(err)) || st == QR_OK);
    if (st == QR_OK)
        check_accepted(token, &info);
    free(token);
    return 0;
}
