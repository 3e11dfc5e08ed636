/*
 * bench_auth: principal resolution latency against the real slapd fixture, cold and cached.
 *
 *   tests/fixtures/slapd-fixture.sh -- build/release/bench_auth [RUNS]
 *
 * For users with three levels of nesting (alice), a membership cycle (carol) and no group
 * (erin), prints the median of RUNS runs (default 51) of:
 *   new context   a fresh auth context: connect, service bind, user search, group searches
 *   cold          a cache miss (ldap.cache_ttl_s=0) on a reused connection: the searches only
 *   cached        a cache hit (median over batches of 1000 calls, per call)
 *   login         auth_authenticate: user search, user bind, group searches (never cached)
 * It never fails on timing; it exits non-zero only when a call fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

#define CACHED_BATCH 1000

static const char *env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "bench_auth: %s is not set; run under tests/fixtures/slapd-fixture.sh\n", name);
        exit(2);
    }
    return v;
}

static qr_config *make_config(const char *cache_ttl_s)
{
    char err[QR_ERR_LEN], base[512];
    qr_config *cfg = qr_config_new();
    const char *b = env("QUARRY_TEST_LDAP_BASE");
    if (!cfg)
        exit(1);
    qr_config_set(cfg, "ldap.uri", env("QUARRY_TEST_LDAP_URI"), QR_CFG_SRC_CLI, err);
    qr_config_set(cfg, "ldap.bind_dn", env("QUARRY_TEST_LDAP_BIND_DN"), QR_CFG_SRC_CLI, err);
    qr_config_set(cfg, "ldap.bind_password", env("QUARRY_TEST_LDAP_BIND_PW"), QR_CFG_SRC_CLI, err);
    snprintf(base, sizeof(base), "ou=people,%s", b);
    qr_config_set(cfg, "ldap.user_base", base, QR_CFG_SRC_CLI, err);
    snprintf(base, sizeof(base), "ou=groups,%s", b);
    qr_config_set(cfg, "ldap.group_base", base, QR_CFG_SRC_CLI, err);
    /* nothing is written there: the bench uses no token, key or flush marker */
    qr_config_set(cfg, "data.dir", "/nonexistent/quarry-bench", QR_CFG_SRC_CLI, err);
    qr_config_set(cfg, "auth.rate_limit_user", "0", QR_CFG_SRC_CLI, err);
    qr_config_set(cfg, "ldap.cache_ttl_s", cache_ttl_s, QR_CFG_SRC_CLI, err);
    return cfg;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double median_us(uint64_t *ns, int n)
{
    qsort(ns, (size_t)n, sizeof(*ns), cmp_u64);
    return (double)ns[n / 2] / 1000.0;
}

static void check(qr_status st, const char *what, const char *err)
{
    if (st) {
        fprintf(stderr, "bench_auth: %s: %s\n", what, err);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    static const struct {
        const char *uid, *password, *what;
    } users[] = {
        {"alice", "Alice-pw-1", "3 levels of nesting"},
        {"carol", "Carol-pw-3", "a membership cycle"},
        {"erin", "Erin-pw-5", "no group"},
    };
    int runs = argc > 1 ? atoi(argv[1]) : 51;
    if (runs < 1 || runs > 100000) {
        fprintf(stderr, "usage: bench_auth [RUNS]\n");
        return 2;
    }
    qr_log_configure(QR_LOG_ERROR, QR_LOG_TEXT, NULL, NULL);
    qr_config *cfg = make_config("300"), *uncached = make_config("0");
    uint64_t *ns = calloc((size_t)runs, sizeof(*ns));
    char err[QR_ERR_LEN];
    printf("| user | new context (us) | cold: cache miss (us) | cached (us) | login (us) |\n");
    printf("|---|---|---|---|---|\n");
    for (size_t u = 0; u < sizeof(users) / sizeof(users[0]); u++) {
        double t_new, t_cold, t_cached, t_login;
        auth_principal *p = NULL;
        for (int r = 0; r < runs; r++) {
            auth_ctx *ctx = NULL;
            uint64_t t0 = qr_now_ns();
            check(auth_new(cfg, &ctx, err), "auth_new", err);
            check(auth_resolve(ctx, users[u].uid, &p, err), "resolve", err);
            ns[r] = qr_now_ns() - t0;
            auth_principal_release(p);
            auth_free(ctx);
        }
        t_new = median_us(ns, runs);

        auth_ctx *ctx = NULL;
        check(auth_new(uncached, &ctx, err), "auth_new", err);
        check(auth_resolve(ctx, users[u].uid, &p, err), "resolve", err); /* opens the connection */
        size_t ngroups = p->ngroups;
        auth_principal_release(p);
        for (int r = 0; r < runs; r++) {
            uint64_t t0 = qr_now_ns();
            check(auth_resolve(ctx, users[u].uid, &p, err), "resolve", err);
            ns[r] = qr_now_ns() - t0;
            auth_principal_release(p);
        }
        t_cold = median_us(ns, runs);
        auth_free(ctx);

        check(auth_new(cfg, &ctx, err), "auth_new", err);
        for (int r = 0; r < runs; r++) {
            uint64_t t0 = qr_now_ns();
            for (int i = 0; i < CACHED_BATCH; i++) {
                check(auth_resolve(ctx, users[u].uid, &p, err), "resolve", err);
                auth_principal_release(p);
            }
            ns[r] = (qr_now_ns() - t0) / CACHED_BATCH;
        }
        t_cached = median_us(ns, runs);

        for (int r = 0; r < runs; r++) {
            uint64_t t0 = qr_now_ns();
            check(auth_authenticate(ctx, users[u].uid, strlen(users[u].uid), users[u].password,
                                    strlen(users[u].password), NULL, &p, err),
                  "authenticate", err);
            ns[r] = qr_now_ns() - t0;
            auth_principal_release(p);
        }
        t_login = median_us(ns, runs);
        auth_free(ctx);
        printf("| %s (%s, %zu groups) | %.0f | %.0f | %.2f | %.0f |\n", users[u].uid, users[u].what, ngroups,
               t_new, t_cold, t_cached, t_login);
    }
    printf("\nmedian of %d runs; cached: median of %d batches of %d calls\n", runs, runs, CACHED_BATCH);
    free(ns);
    qr_config_free(cfg);
    qr_config_free(uncached);
    return 0;
}
