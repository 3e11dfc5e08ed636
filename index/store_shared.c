/*
 * index/store_shared.c: shared state (index/store.h, store_shared_read): small named blobs every
 * node of a system of record agrees on, in PostgreSQL's quarry.shared (pgstore.c), for auth's API
 * keys and generated token secret. The calls run on a connection of the process's own to the
 * primary (store_link.c), closed when the primary is named again or cleared. A read or version
 * check on a connection that had served before and turns out lost (a restarted server, a failover)
 * is tried once more on a new one; a write is not, since its commit may have happened. A read that
 * finds no primary asks every member of store.postgres_members (members_call).
 * (store_shared_on is store_route.c's: it asks whether a primary is set.)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/pgstore.h"
#include "index/store_int.h"

static store_link g_link = STORE_LINK_INIT("shared state");
/* store.postgres_members, asked directly for reads when no primary answers: their conninfos as
 * last named (store_route_members) and a connection to each, opened on first use; under g_members_mu */
static pthread_mutex_t g_members_mu = PTHREAD_MUTEX_INITIALIZER;
static char **g_members;
static pgstore **g_mpg;
static size_t g_nmembers;

typedef enum { SHARED_READ, SHARED_VERSION, SHARED_WRITE } shared_op;

/* One call's arguments, whichever the operation. */
typedef struct {
    const char *name;
    void **data;
    size_t *len;
    const void *in;
    size_t in_len;
    int64_t expect;
    int64_t *version;
} shared_args;

static void drop_members_locked(void)
{
    for (size_t i = 0; i < g_nmembers; i++)
        pgstore_close(g_mpg[i]);
    free(g_mpg);
    pgstore_members_free(g_members, g_nmembers);
    g_mpg = NULL;
    g_members = NULL;
    g_nmembers = 0;
}

void store_shared_drop(void)
{
    store_link_drop(&g_link);
    pthread_mutex_lock(&g_members_mu);
    drop_members_locked();
    pthread_mutex_unlock(&g_members_mu);
}

static qr_status check_name(const char *name, char *err)
{
    if (!name)
        return qr_fail(err, QR_EINVAL, "shared state: NULL name");
    size_t n = strnlen(name, STORE_SHARED_NAME_MAX + 1);
    if (n == 0 || n > STORE_SHARED_NAME_MAX)
        return qr_fail(err, QR_EINVAL, "shared state: a name must be 1 to %d bytes", STORE_SHARED_NAME_MAX);
    for (size_t i = 0; i < n; i++)
        if (name[i] < 0x20 || name[i] > 0x7e)
            return qr_fail(err, QR_EINVAL, "shared state: a name must be printable ASCII (byte %zu is not)",
                           i + 1);
    return QR_OK;
}

typedef struct {
    shared_op op;
    shared_args *a;
} shared_call_ctx;

static qr_status run_op(pgstore *pg, void *ctx, char *err)
{
    shared_call_ctx *c = ctx;
    shared_args *a = c->a;
    switch (c->op) {
    case SHARED_READ: return pgstore_shared_read(pg, a->name, false, a->data, a->len, a->version, err);
    case SHARED_VERSION: return pgstore_shared_version(pg, a->name, false, a->version, err);
    case SHARED_WRITE: return pgstore_shared_write(pg, a->name, a->in, a->in_len, a->expect, a->version, err);
    }
    return qr_fail(err, QR_EINTERNAL, "shared state: unknown operation %d", (int)c->op);
}

/* Whether the members' list is the one named now (same conninfos in the same order). */
static bool same_members(char **list, size_t n)
{
    if (n != g_nmembers)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], g_members[i]) != 0)
            return false;
    return true;
}

/*
 * A read (op READ or VERSION) when no primary answers (etcd down: Patroni demoted the leader), from
 * every member of store.postgres_members asked directly: the highest version wins, and every member
 * must answer. The argument is a fence's (store_route.c, record_head): a write acknowledged before
 * (a key's revocation) stays in the data of the primary that committed it, and versions only grow;
 * a member that does not answer might be a primary this node cannot see. QR_ENOTIMPL when no
 * members are named (the caller keeps the primary's error). Called with g_members_mu held.
 */
static qr_status members_call(shared_op op, shared_args *a, char *err)
{
    char **list = NULL;
    size_t n = 0;
    qr_status st = store_route_members(&list, &n, err);
    if (st)
        return st;
    if (!n)
        return QR_ENOTIMPL;
    if (!same_members(list, n)) {
        drop_members_locked();
        if (!(g_mpg = calloc(n, sizeof(*g_mpg)))) {
            pgstore_members_free(list, n);
            return qr_fail(err, QR_ENOMEM, "out of memory");
        }
        g_members = list;
        g_nmembers = n;
    } else {
        pgstore_members_free(list, n);
    }
    int64_t best_v = 0, uid = 0;
    size_t best = 0;
    for (size_t i = 0; i < g_nmembers; i++) {
        char e2[QR_ERR_LEN] = "";
        int64_t v = 0;
        if (!g_mpg[i] && (st = pgstore_open(g_members[i], &g_mpg[i], e2)))
            st = st == QR_EINVAL || st == QR_ENOMEM ? st : QR_EUNAVAILABLE;
        if (!st && uid && pgstore_uid(g_mpg[i]) != uid)
            st = qr_fail(e2, QR_EINVAL, "it holds another system of record (uid %lld, not %lld)",
                         (long long)pgstore_uid(g_mpg[i]), (long long)uid);
        if (!st) {
            uid = pgstore_uid(g_mpg[i]);
            st = pgstore_shared_version(g_mpg[i], a->name, true, &v, e2);
        }
        if (st == QR_ENOTFOUND)
            st = QR_OK;
        if (st) {
            pgstore_close(g_mpg[i]);
            g_mpg[i] = NULL;
            return qr_fail(err, st, "member %zu of store.postgres_members: %s", i + 1, e2);
        }
        if (v > best_v) {
            best_v = v;
            best = i;
        }
    }
    if (!best_v)
        return qr_fail(err, QR_ENOTFOUND, "no shared state '%s'", a->name);
    if (op == SHARED_VERSION) {
        *a->version = best_v;
        return QR_OK;
    }
    st = pgstore_shared_read(g_mpg[best], a->name, true, a->data, a->len, a->version, err);
    if (st == QR_EUNAVAILABLE || st == QR_EIO) {
        pgstore_close(g_mpg[best]);
        g_mpg[best] = NULL;
    }
    return st;
}

/* Runs op on the shared connection to the primary named now; a read that finds no primary asks the
 * members (members_call). */
static qr_status shared_call(shared_op op, shared_args *a, char *err)
{
    shared_call_ctx c = {op, a};
    qr_status st = store_link_call(&g_link, run_op, &c, op != SHARED_WRITE, err);
    if (st == QR_EUNAVAILABLE && op != SHARED_WRITE) {
        char e2[QR_ERR_LEN] = "", e3[QR_ERR_LEN] = "";
        snprintf(e2, sizeof(e2), "%s", err ? err : "");
        pthread_mutex_lock(&g_members_mu);
        qr_status mst = members_call(op, a, e3);
        pthread_mutex_unlock(&g_members_mu);
        if (mst != QR_ENOTIMPL)
            st = mst ? qr_fail(err, mst, "no primary answers (%s), and %s", e2, e3) : QR_OK;
    }
    return st;
}

qr_status store_shared_read(const char *name, void **data, size_t *len, int64_t *version, char *err)
{
    if (!data || !len || !version)
        return qr_fail(err, QR_EINVAL, "store_shared_read: NULL argument");
    *data = NULL;
    *len = 0;
    *version = 0;
    qr_status st = check_name(name, err);
    if (st)
        return st;
    shared_args a = {.name = name, .data = data, .len = len, .version = version};
    return shared_call(SHARED_READ, &a, err);
}

qr_status store_shared_version(const char *name, int64_t *version, char *err)
{
    if (!version)
        return qr_fail(err, QR_EINVAL, "store_shared_version: NULL argument");
    *version = 0;
    qr_status st = check_name(name, err);
    if (st)
        return st;
    shared_args a = {.name = name, .version = version};
    return shared_call(SHARED_VERSION, &a, err);
}

qr_status store_shared_write(const char *name, const void *data, size_t len, int64_t expect_version,
                             int64_t *new_version, char *err)
{
    qr_status st = check_name(name, err);
    if (st)
        return st;
    if (len && !data)
        return qr_fail(err, QR_EINVAL, "store_shared_write: NULL data");
    if (len > STORE_SHARED_MAX)
        return qr_fail(err, QR_ELIMIT, "shared state '%s': %zu bytes, more than the %d allowed", name, len,
                       STORE_SHARED_MAX);
    if (expect_version < 0)
        return qr_fail(err, QR_EINVAL, "shared state '%s': version %lld is negative", name,
                       (long long)expect_version);
    int64_t v = 0;
    shared_args a = {.name = name, .in = data, .in_len = len, .expect = expect_version, .version = &v};
    st = shared_call(SHARED_WRITE, &a, err);
    if (!st && new_version)
        *new_version = v;
    return st;
}
