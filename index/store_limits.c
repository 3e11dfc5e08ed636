/*
 * index/store_limits.c: failed-login counters every node shares (index/store.h,
 * store_shared_failures_count), in PostgreSQL's quarry.login_failures (pgstore.c), so that several
 * nodes behind a load balancer hold one limit rather than one each. The calls run on a connection
 * of the process's own to the primary (store_link.c), so that logins never wait behind an API key
 * check. A read or clear on a connection that had served before and turns out lost (a restarted
 * server, a failover) is tried once more on a new one; a count is not, since its commit may have
 * happened, and the caller counts that failure in its own counters instead.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "index/pgstore.h"
#include "index/store_int.h"

_Static_assert(STORE_FAILURE_KEYS == PGSTORE_FAILURE_KEYS, "one call's keys fit pgstore's statements");

static store_link g_link = STORE_LINK_INIT("failed-login counters");

typedef enum { FAILURES_COUNT, FAILURES_READ, FAILURES_CLEAR } failures_op;

/* One call's arguments, whichever the operation. */
typedef struct {
    const char *const *keys;
    size_t n;
    int64_t window_s;
    int64_t *failures;
    int64_t *left_ms;
} failures_args;

static qr_status check_keys(const char *const keys[], size_t n, char *err)
{
    if (!keys || n < 1 || n > STORE_FAILURE_KEYS)
        return qr_fail(err, QR_EINVAL, "failed-login counters: 1 to %d keys per call, not %zu",
                       STORE_FAILURE_KEYS, keys ? n : 0);
    for (size_t i = 0; i < n; i++) {
        if (!keys[i])
            continue;
        size_t len = strnlen(keys[i], STORE_FAILURE_KEY_MAX + 1);
        if (len == 0 || len > STORE_FAILURE_KEY_MAX)
            return qr_fail(err, QR_EINVAL, "failed-login counters: key %zu is not 1 to %d bytes", i + 1,
                           STORE_FAILURE_KEY_MAX);
        if (!qr_utf8_valid(keys[i], len))
            return qr_fail(err, QR_EINVAL, "failed-login counters: key %zu is not valid UTF-8", i + 1);
    }
    return QR_OK;
}

typedef struct {
    failures_op op;
    const failures_args *a;
} failures_call_ctx;

static qr_status run_op(pgstore *pg, void *ctx, char *err)
{
    const failures_call_ctx *c = ctx;
    const failures_args *a = c->a;
    switch (c->op) {
    case FAILURES_COUNT: return pgstore_failures_count(pg, a->keys, a->n, a->window_s, err);
    case FAILURES_READ: return pgstore_failures_read(pg, a->keys, a->n, a->failures, a->left_ms, err);
    case FAILURES_CLEAR: return pgstore_failures_clear(pg, a->keys, a->n, err);
    }
    return qr_fail(err, QR_EINTERNAL, "failed-login counters: unknown operation %d", (int)c->op);
}

static qr_status failures_call(failures_op op, const failures_args *a, char *err)
{
    failures_call_ctx c = {op, a};
    return store_link_call(&g_link, run_op, &c, op != FAILURES_COUNT, err);
}

qr_status store_shared_failures_count(const char *const keys[], size_t n, int64_t window_s, char *err)
{
    qr_status st = check_keys(keys, n, err);
    if (st)
        return st;
    /* auth.rate_limit_window_s's range: up to a day */
    if (window_s < 1 || window_s > 86400)
        return qr_fail(err, QR_EINVAL, "failed-login counters: a window of %lld s (1 to 86400)",
                       (long long)window_s);
    failures_args a = {.keys = keys, .n = n, .window_s = window_s};
    return failures_call(FAILURES_COUNT, &a, err);
}

qr_status store_shared_failures_read(const char *const keys[], size_t n, int64_t *failures, int64_t *left_ms,
                                     char *err)
{
    if (!failures || !left_ms)
        return qr_fail(err, QR_EINVAL, "store_shared_failures_read: NULL argument");
    qr_status st = check_keys(keys, n, err);
    if (st)
        return st;
    for (size_t i = 0; i < n; i++)
        failures[i] = left_ms[i] = 0;
    failures_args a = {.keys = keys, .n = n, .failures = failures, .left_ms = left_ms};
    return failures_call(FAILURES_READ, &a, err);
}

qr_status store_shared_failures_clear(const char *const keys[], size_t n, char *err)
{
    qr_status st = check_keys(keys, n, err);
    if (st)
        return st;
    failures_args a = {.keys = keys, .n = n};
    return failures_call(FAILURES_CLEAR, &a, err);
}
