/*
 * bench_oidc: what checking a bearer token costs a request, before the directory is asked.
 *
 *   build/release/bench_oidc [RUNS]
 *
 * Keys are made here (libcjose) and installed as a fetched JWKS would be; tokens are signed here.
 * For quarry's own token (qt1, HMAC-SHA256) and OIDC tokens signed RS256, PS256 and ES256 (2048-bit
 * RSA, P-256), prints the median over RUNS batches (default 21) of 500 checks, per check, and
 * checks per second on one thread. A refused token (bad signature) is timed too: what a flood of
 * forged tokens costs. It never fails on timing; it exits non-zero when a check fails.
 */
#include <cjose/cjose.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_int.h"

#define BATCH 500

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static char *sign(cjose_jwk_t *key, const char *alg, const char *kid)
{
    int64_t now = qr_wall_ms() / 1000;
    json_t *h = json_pack("{s:s,s:s,s:s}", "alg", alg, "kid", kid, "typ", "JWT");
    json_t *c = json_pack("{s:s,s:s,s:s,s:I,s:I,s:s}", "iss", "https://login.example.com/t/v2.0", "aud",
                          "api://quarry", "preferred_username", "alice", "iat", (json_int_t)now, "exp",
                          (json_int_t)(now + 3600), "scp", "quarry.search");
    char *payload = json_dumps(c, JSON_COMPACT);
    cjose_err cerr;
    cjose_jws_t *jws =
        cjose_jws_sign(key, (cjose_header_t *)h, (const uint8_t *)payload, strlen(payload), &cerr);
    const char *compact = NULL;
    char *out = jws && cjose_jws_export(jws, &compact, &cerr) ? strdup(compact) : NULL;
    cjose_jws_release(jws);
    json_decref(h);
    json_decref(c);
    free(payload);
    return out;
}

static json_t *public_jwk(cjose_jwk_t *k, const char *kid)
{
    cjose_err cerr;
    char *text = cjose_jwk_to_json(k, false, &cerr);
    json_t *o = json_loads(text, 0, NULL);
    free(text);
    json_object_set_new(o, "kid", json_string(kid));
    return o;
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 21;
    if (runs < 1) {
        fprintf(stderr, "usage: bench_oidc [RUNS]\n");
        return 2;
    }
    char err[QR_ERR_LEN];
    qr_log_configure(QR_LOG_ERROR, QR_LOG_TEXT, "", err);
    static const uint8_t e[] = {1, 0, 1};
    cjose_err cerr;
    cjose_jwk_t *rs = cjose_jwk_create_RSA_random(2048, e, sizeof(e), &cerr);
    cjose_jwk_t *es = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &cerr);
    cjose_jwk_t *rogue = cjose_jwk_create_RSA_random(2048, e, sizeof(e), &cerr);
    json_t *keys = json_array();
    json_array_append_new(keys, public_jwk(rs, "rs"));
    json_array_append_new(keys, public_jwk(es, "es"));
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *jwks = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);

    qr_config *cfg = qr_config_new();
    const char *settings[][2] = {{"ldap.uri", "ldap://127.0.0.1:1"},
                                 {"ldap.user_base", "dc=example,dc=org"},
                                 {"data.dir", "/tmp/quarry-bench-oidc"},
                                 {"auth.token_secret", "bench-secret-bench-secret-bench-secret-0123"},
                                 {"oidc.issuer", "https://login.example.com/t/v2.0"},
                                 {"oidc.audience", "api://quarry"},
                                 {"oidc.jwks_url", "http://127.0.0.1:1/jwks"},
                                 {"oidc.jwks_min_refresh_s", "86400"},
                                 {"oidc.required_scope", "quarry.search"}};
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
        if (qr_config_set(cfg, settings[i][0], settings[i][1], QR_CFG_SRC_CLI, err)) {
            fprintf(stderr, "bench_oidc: %s\n", err);
            return 1;
        }
    auth_ctx *ctx = NULL;
    if (auth_new(cfg, &ctx, err) || auth_oidc_load_jwks(ctx, 0, jwks, strlen(jwks), err)) {
        fprintf(stderr, "bench_oidc: %s\n", err);
        return 1;
    }
    char *qt = NULL;
    if (auth_token_issue(ctx, "alice", 0, &qt, NULL, err)) {
        fprintf(stderr, "bench_oidc: %s\n", err);
        return 1;
    }
    struct {
        const char *name;
        char *token;
        bool oidc, good;
    } cases[] = {
        {"quarry token (qt1, HMAC-SHA256)", qt, false, true},
        {"OIDC RS256 (RSA 2048)", sign(rs, "RS256", "rs"), true, true},
        {"OIDC PS256 (RSA 2048)", sign(rs, "PS256", "rs"), true, true},
        {"OIDC ES256 (P-256)", sign(es, "ES256", "es"), true, true},
        {"OIDC RS256, bad signature (refused)", sign(rogue, "RS256", "rs"), true, false},
    };
    printf("| token | per check (us) | checks/s, one thread |\n|---|---|---|\n");
    uint64_t *ns = calloc((size_t)runs, sizeof(uint64_t));
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        for (int r = 0; r < runs; r++) {
            uint64_t t0 = qr_now_ns();
            for (int i = 0; i < BATCH; i++) {
                qr_status st;
                if (cases[c].oidc) {
                    st = auth_oidc_verify(ctx, cases[c].token, NULL, err);
                } else {
                    char *uid = NULL;
                    st = auth_token_verify(ctx, cases[c].token, &uid, NULL, err);
                    free(uid);
                }
                if ((st == QR_OK) != cases[c].good) {
                    fprintf(stderr, "bench_oidc: %s: %s\n", cases[c].name, err);
                    return 1;
                }
            }
            ns[r] = (qr_now_ns() - t0) / BATCH;
        }
        qsort(ns, (size_t)runs, sizeof(uint64_t), cmp_u64);
        double us = (double)ns[runs / 2] / 1000.0;
        printf("| %s | %.1f | %.0f |\n", cases[c].name, us, 1e6 / us);
        free(cases[c].token);
    }
    printf("\nmedian of %d batches of %d checks; signature and claims only (the directory lookup that\n"
           "follows is the principal cache's, bench_auth)\n",
           runs, BATCH);
    free(ns);
    free(jwks);
    auth_free(ctx);
    qr_config_free(cfg);
    cjose_jwk_release(rs);
    cjose_jwk_release(es);
    cjose_jwk_release(rogue);
    return 0;
}
