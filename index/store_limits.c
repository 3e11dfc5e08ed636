/*
 * index/store_limits.c: failed-login counters every node shares (index/store.h,
 * store_shared_failures_count), in PostgreSQL's quarry.login_failures (pgstore.c), so that several
 * nodes behind a load balancer hold one limit rather than one each. As store_shared.c does for the
 * shared state, one connection to the primary (store_set_primary's conninfo) serves the whole
 * process behind a mutex: each call is one short statement. It is a connection of its own, so
 * that logins never wait behind an API key check, opened on first use, dropped after a connection
 * failure so that the next call connects again (through HAProxy, to a new primary after a
 * failover), and when the primary named has changed since it was opened. A read or clear on a
 * connection that had served before and turns out lost (a restarted server, a failover) is tried
 * once more on a new one; a count is not, since its commit may have happened, and the caller
 * counts that failure in its own counters instead.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "index/pgstore.h"
#include "index/store_int.h"

_Static_assert(STORE_FAILURE_KEYS == PGSTORE_FAILURE_KEYS, "one call's keys fit pgstore's statements");

static pthread_mutex_t g_limits_mu = PTHREAD_MUTEX_INITIALIZER;
static pgstore *g_pg;       /* NULL until first use and after a connection failure */
static char *g_pg_conninfo; /* the conninfo g_pg was opened with */

typedef enum { FAILURES_COUNT, FAILURES_READ, FAILURES_CLEAR } failures_op;

/* One call's arguments, whichever the operation. */
typedef struct {
    const char *const *keys;
    size_t n;
    int64_t window_s;
    int64_t *failures;
    int64_t *left_ms;
} failures_args;

static void drop_locked(void)
{
    pgstore_close(g_pg);
    g_pg = NULL;
    free(g_pg_conninfo);
    g_pg_conninfo = NULL;
}

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

static qr_status run_op(failures_op op, const failures_args *a, char *err)
{
    switch (op) {
    case FAILURES_COUNT: return pgstore_failures_count(g_pg, a->keys, a->n, a->window_s, err);
    case FAILURES_READ: return pgstore_failures_read(g_pg, a->keys, a->n, a->failures, a->left_ms, err);
    case FAILURES_CLEAR: return pgstore_failures_clear(g_pg, a->keys, a->n, err);
    }
    return qr_fail(err, QR_EINTERNAL, "failed-login counters: unknown operation %d", (int)op);
}

/* Runs op on the process's connection to the primary named now, connecting first when needed. */
static qr_status failures_call(failures_op op, const failures_args *a, char *err)
{
    char *conninfo = NULL;
    qr_status st = store_route_primary(&conninfo, err);
    if (st)
        return st;
    if (!conninfo)
        return qr_fail(err, QR_EINVAL,
                       "failed-login counters: no system of record is set (store.backend = postgres)");
    pthread_mutex_lock(&g_limits_mu);
    /* store_set_primary named another primary since g_pg was opened */
    if (g_pg && strcmp(g_pg_conninfo, conninfo) != 0)
        drop_locked();
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = g_pg != NULL;
        if (!g_pg) {
            char e2[QR_ERR_LEN] = "";
            if (!(g_pg_conninfo = strdup(conninfo))) {
                st = qr_fail(err, QR_ENOMEM, "out of memory");
                break;
            }
            if ((st = pgstore_open(conninfo, &g_pg, e2))) {
                drop_locked();
                st = qr_fail(err, st == QR_EINVAL || st == QR_ENOMEM ? st : QR_EUNAVAILABLE,
                             "the system of record (store.postgres): %s", e2);
                break;
            }
        }
        st = run_op(op, a, err);
        if (st == QR_EUNAVAILABLE || st == QR_EIO)
            drop_locked();
        if (st != QR_EUNAVAILABLE || !reused || op == FAILURES_COUNT)
            break;
    }
    pthread_mutex_unlock(&g_limits_mu);
    free(conninfo);
    return st;
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
