/*
 * index/store_link.c: a process-wide connection to the primary (store_set_primary's conninfo) for
 * one kind of call that is not a store handle's (store_int.h, store_link): the shared state
 * (store_shared.c), the failed-login counters (store_limits.c) and the background jobs
 * (store_jobs_pg.c) each have one, so that none waits behind another. Each call is one or a few
 * short statements, so a mutex around one connection costs less than a connection per thread
 * would cost PostgreSQL. The connection is opened on first use, dropped after a connection failure
 * so that the next call connects again (through HAProxy, to a new primary after a failover), and
 * when the primary named has changed since it was opened.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "index/pgstore.h"
#include "index/store_int.h"

static void drop_locked(store_link *l)
{
    pgstore_close(l->pg);
    l->pg = NULL;
    free(l->conninfo);
    l->conninfo = NULL;
}

void store_link_drop(store_link *l)
{
    pthread_mutex_lock(&l->mu);
    drop_locked(l);
    pthread_mutex_unlock(&l->mu);
}

qr_status store_link_call(store_link *l, store_link_fn fn, void *ctx, bool retry, char *err)
{
    char *conninfo = NULL;
    qr_status st = store_route_primary(&conninfo, err);
    if (st)
        return st;
    if (!conninfo) {
        store_link_drop(l); /* the primary was cleared (store_clear_primary) */
        return qr_fail(err, QR_EINVAL, "%s: no system of record is set (store.backend = postgres)", l->what);
    }
    pthread_mutex_lock(&l->mu);
    if (l->pg && strcmp(l->conninfo, conninfo) != 0)
        drop_locked(l);
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = l->pg != NULL;
        if (!l->pg) {
            char e2[QR_ERR_LEN] = "";
            if (!(l->conninfo = strdup(conninfo))) {
                st = qr_fail(err, QR_ENOMEM, "out of memory");
                break;
            }
            if ((st = pgstore_open(conninfo, &l->pg, e2))) {
                drop_locked(l);
                st = qr_fail(err, st == QR_EINVAL || st == QR_ENOMEM ? st : QR_EUNAVAILABLE,
                             "%s: the system of record (store.postgres): %s", l->what, e2);
                break;
            }
        }
        st = fn(l->pg, ctx, err);
        if (st == QR_EUNAVAILABLE || st == QR_EIO)
            drop_locked(l);
        /* a connection that had served and turns out lost (a restarted server, a failover): once
         * more on a new one, for calls that may run twice */
        if (st != QR_EUNAVAILABLE || !reused || !retry)
            break;
    }
    pthread_mutex_unlock(&l->mu);
    free(conninfo);
    return st;
}
