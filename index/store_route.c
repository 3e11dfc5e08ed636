/*
 * index/store_route.c: a store whose system of record is PostgreSQL (store.backend = postgres,
 * issue #24). Once store_set_primary has named the primary, every store handle the process opens
 * is routed:
 *
 * - Writes (store_put, store_delete, store_set_acl, store_check_embedding) go to PostgreSQL
 *   (pgstore.c) in a transaction of their own, and the handle then applies the feed from the
 *   primary up to that write's counter before it returns (follow.c), so that whoever wrote reads
 *   the write back on this node at once. A batch (quarry ingest) is one transaction on the
 *   primary with a savepoint per call (pgstore_batch_begin), and the catch-up waits for
 *   store_batch_commit.
 * - Searches call store_fence first: the primary's counter F is read, and the feed applied until
 *   every change up to F is in the store (store_follow_exact) within store.fence_ms (from the
 *   standby, then from the primary); a primary counter below the store's fails too (diverged). Only then does
 * a search read the local store, so a delete or ACL change committed anywhere before the search began is in
 * the local rows its permission checks read; when neither PostgreSQL node can bring this one to F, the search
 * fails closed (QR_EUNAVAILABLE: 503).
 * - store_follow_poll is the background follower's step (maintainer.c): a batch from the standby.
 *
 * The local store is a follower (store_follow.c): it takes the primary's uid, document keys,
 * chunk ids and counters. PostgreSQL connections are opened on first use and dropped after a
 * connection failure, so that the next call reconnects (through HAProxy, to a new primary after
 * a failover).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "index/follow.h"
#include "index/pgstore.h"
#include "index/store_int.h"

struct store_route {
    pgstore *w;            /* the primary: writes and the fence's counter */
    pgstore *r;            /* the feed: store.postgres_read, or the primary */
    bool identified;       /* the local store follows the primary's uid */
    bool batch;            /* store_batch_begin: the catch-up waits for store_batch_commit */
    int64_t batch_counter; /* the last write of the open batch (0: none) */
    int64_t uid;           /* the system of record's uid, once the local store follows it */
    pgstore **m;           /* store.postgres_members, each asked directly when there is no primary */
    size_t nm;
    bool lost;        /* a primary lost a change this node applied: nothing more from it */
    bool via_members; /* the last fence found no primary: the next asks the members first */
    char lost_msg[QR_ERR_LEN];
};

/* Process-wide, set once before the handles are opened (as store_set_mmap). */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static char *g_primary, *g_feed;
static char **g_members;
static size_t g_nmembers;
static int64_t g_fence_ms = 1000;

qr_status store_set_primary(const char *conninfo, const char *feed_conninfo, int64_t fence_ms, char *err)
{
    if (!conninfo || !*conninfo)
        return qr_fail(err, QR_EINVAL,
                       "store.postgres: a connection string is required with store.backend = postgres");
    if (fence_ms < 1)
        return qr_fail(err, QR_EINVAL, "store.fence_ms: must be at least 1");
    char *w = strdup(conninfo), *r = strdup(feed_conninfo && *feed_conninfo ? feed_conninfo : conninfo);
    if (!w || !r) {
        free(w);
        free(r);
        return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    pthread_mutex_lock(&g_mu);
    free(g_primary);
    free(g_feed);
    g_primary = w;
    g_feed = r;
    g_fence_ms = fence_ms;
    pthread_mutex_unlock(&g_mu);
    store_shared_drop();
    return QR_OK;
}

qr_status store_set_members(const char *conninfo, char *err)
{
    char **list = NULL;
    size_t n = 0;
    qr_status st = conninfo && *conninfo ? pgstore_members(conninfo, &list, &n, err) : QR_OK;
    if (st)
        return st;
    pthread_mutex_lock(&g_mu);
    pgstore_members_free(g_members, g_nmembers);
    g_members = list;
    g_nmembers = n;
    pthread_mutex_unlock(&g_mu);
    return QR_OK;
}

void store_clear_primary(void)
{
    pthread_mutex_lock(&g_mu);
    free(g_primary);
    free(g_feed);
    g_primary = g_feed = NULL;
    pgstore_members_free(g_members, g_nmembers);
    g_members = NULL;
    g_nmembers = 0;
    pthread_mutex_unlock(&g_mu);
    store_shared_drop();
}

bool store_shared_on(void)
{
    pthread_mutex_lock(&g_mu);
    bool on = g_primary != NULL;
    pthread_mutex_unlock(&g_mu);
    return on;
}

qr_status store_route_primary(char **conninfo, char *err)
{
    pthread_mutex_lock(&g_mu);
    *conninfo = g_primary ? strdup(g_primary) : NULL;
    bool lost = g_primary && !*conninfo;
    pthread_mutex_unlock(&g_mu);
    return lost ? qr_fail(err, QR_ENOMEM, "out of memory") : QR_OK;
}

qr_status store_route_members(char ***list, size_t *n, char *err)
{
    *list = NULL;
    *n = 0;
    pthread_mutex_lock(&g_mu);
    char **copy = g_nmembers ? calloc(g_nmembers, sizeof(*copy)) : NULL;
    bool ok = !g_nmembers || copy;
    for (size_t i = 0; ok && i < g_nmembers; i++)
        ok = (copy[i] = strdup(g_members[i])) != NULL;
    size_t count = g_nmembers;
    pthread_mutex_unlock(&g_mu);
    if (!ok) {
        pgstore_members_free(copy, count);
        return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    *list = copy;
    *n = count;
    return QR_OK;
}

bool store_routed(const store *s)
{
    return s && s->route;
}

qr_status store_route_attach(store *s, char *err)
{
    pthread_mutex_lock(&g_mu);
    bool on = g_primary != NULL;
    size_t nm = g_nmembers;
    pthread_mutex_unlock(&g_mu);
    if (!on)
        return QR_OK;
    s->route = calloc(1, sizeof(*s->route));
    if (s->route && nm && !(s->route->m = calloc(nm, sizeof(*s->route->m)))) {
        free(s->route);
        s->route = NULL;
    }
    if (!s->route)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    s->route->nm = nm;
    return QR_OK;
}

void store_route_detach(store *s)
{
    if (!s->route)
        return;
    pgstore_close(s->route->w);
    pgstore_close(s->route->r);
    for (size_t i = 0; i < s->route->nm; i++)
        pgstore_close(s->route->m[i]);
    free(s->route->m);
    free(s->route);
    s->route = NULL;
}

static int64_t fence_ms(void)
{
    pthread_mutex_lock(&g_mu);
    int64_t ms = g_fence_ms;
    pthread_mutex_unlock(&g_mu);
    return ms;
}

/* A connection failure drops the handle, so that the next call connects again. */
static qr_status pg_failed(pgstore **pg, qr_status st)
{
    if (st == QR_EUNAVAILABLE || st == QR_EIO) {
        pgstore_close(*pg);
        *pg = NULL;
    }
    return st;
}

/* The same for the primary's connection, except inside a batch, whose transaction lives on it: the
 * calls after a lost connection fail (pgstore_batch_commit too) instead of reconnecting. */
static qr_status w_failed(store *s, qr_status st)
{
    return s->route->batch ? st : pg_failed(&s->route->w, st);
}

static qr_status pg_open(pgstore **pg, bool feed, char *err)
{
    if (*pg)
        return QR_OK;
    pthread_mutex_lock(&g_mu);
    char *conninfo = strdup(feed ? g_feed : g_primary);
    pthread_mutex_unlock(&g_mu);
    if (!conninfo)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    char e2[QR_ERR_LEN] = "";
    qr_status st = pgstore_open(conninfo, pg, e2);
    free(conninfo);
    if (st)
        return qr_fail(err, st == QR_EINVAL ? QR_EINVAL : QR_EUNAVAILABLE, "the system of record (%s): %s",
                       feed ? "store.postgres_read" : "store.postgres", e2);
    return QR_OK;
}

/* Fails (and latches the handle failed) when the primary just connected to lost the last change this
 * node applied: after a failover to a standby that missed acknowledged writes (Patroni's
 * synchronous_mode is not strict: a leader left alone acknowledges writes), the new primary's
 * counter may have passed this node's again with other changes, which a comparison of counters
 * alone would not notice, and the node would never learn what the new writes under its counters
 * did. The document the node changed last must be on the primary as the node applied it (same
 * counter and digest), or changed or deleted there since (a higher counter). */
static qr_status check_last(store *s, char *err)
{
    struct store_route *rt = s->route;
    char *doc_id = NULL, *mine = NULL, *theirs = NULL;
    int64_t applied = 0, held = 0, deleted_at = 0;
    qr_status st = store_follow_last_doc(s, &doc_id, &applied, &mine, err);
    if (!st && doc_id)
        st = pg_failed(&rt->w, pgstore_doc_digest(rt->w, doc_id, &held, &theirs, &deleted_at, err));
    if (!st && doc_id &&
        !(theirs ? held > applied || (held == applied && strcmp(theirs, mine) == 0) : deleted_at > applied)) {
        rt->lost = true;
        snprintf(
            rt->lost_msg, sizeof(rt->lost_msg),
            "the system of record does not hold document '%.200s' as this node applied it at change %lld "
            "(%s): the primary lost writes this node had applied (a failover to a standby that missed "
            "them): failing closed; rebuild this node from an empty data directory",
            doc_id, (long long)applied,
            theirs ? "it holds another state at that change or an older one" : "it holds no such document");
        st = qr_fail(err, QR_EUNAVAILABLE, "%s", rt->lost_msg);
        qr_log(QR_LOG_ERROR, "store", "%s", rt->lost_msg);
    }
    free(doc_id);
    free(mine);
    free(theirs);
    return st;
}

/* The primary's connection, and the local store marked as following it; each new connection (the
 * first, and the one after a failover) is checked against the last change this node applied. */
static qr_status primary(store *s, char *err)
{
    struct store_route *rt = s->route;
    if (rt->lost)
        return qr_fail(err, QR_EUNAVAILABLE, "%s", rt->lost_msg);
    bool fresh = !rt->w;
    qr_status st = pg_open(&rt->w, false, err);
    if (st)
        return st;
    if (!rt->identified) {
        /* the local store takes the primary's identity, and its embedding model once recorded
         * there (a node that only searches never records one itself) */
        char model[STORE_MODEL_MAX + 1];
        int dim = 0;
        if ((st = store_follow_identity(s, pgstore_uid(rt->w), err)) ||
            (st = pg_failed(&rt->w, pgstore_embedding(rt->w, model, sizeof(model), &dim, err))))
            return st;
        rt->uid = pgstore_uid(rt->w);
        if (dim > 0 && (st = store_check_embedding_local(s, model, dim, err)))
            return st;
        rt->identified = dim > 0;
    }
    if (fresh && (st = check_last(s, err))) {
        /* unchecked, the connection is not used: the next call connects and checks again */
        pgstore_close(rt->w);
        rt->w = NULL;
    }
    return st;
}

/* Member i of store.postgres_members, connected, following the same system of record as the store. */
static qr_status member(store *s, size_t i, char *err)
{
    struct store_route *rt = s->route;
    if (rt->m[i])
        return QR_OK;
    pthread_mutex_lock(&g_mu);
    char *conninfo = i < g_nmembers ? strdup(g_members[i]) : NULL;
    pthread_mutex_unlock(&g_mu);
    if (!conninfo)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    qr_status st = pgstore_open(conninfo, &rt->m[i], err);
    free(conninfo);
    if (st)
        return st == QR_EINVAL ? QR_EINVAL : QR_EUNAVAILABLE;
    int64_t uid = pgstore_uid(rt->m[i]);
    if (!rt->uid && !(st = store_follow_identity(s, uid, err)))
        rt->uid = uid;
    else if (!st && uid != rt->uid)
        st = qr_fail(err, QR_EINVAL, "it holds another system of record (uid %lld, not %lld)", (long long)uid,
                     (long long)rt->uid);
    if (st) {
        pgstore_close(rt->m[i]);
        rt->m[i] = NULL;
    }
    return st;
}

/* The highest change counter among every member of the cluster (store.postgres_members) and
 * which member has it; QR_EUNAVAILABLE when one of them does not answer. *answered counts those
 * that did. */
static qr_status members_head(store *s, int64_t *head, size_t *best, size_t *answered, bool *primary_seen,
                              char *err)
{
    struct store_route *rt = s->route;
    qr_status first = QR_OK;
    *head = -1;
    *answered = 0;
    *primary_seen = false;
    for (size_t i = 0; i < rt->nm; i++) {
        int64_t c = 0;
        bool standby = true;
        char e2[QR_ERR_LEN] = "";
        qr_status st = member(s, i, e2);
        if (!st)
            st = pg_failed(&rt->m[i], pgstore_counter_role(rt->m[i], &c, &standby, e2));
        if (st == QR_EINVAL || st == QR_ENOMEM)
            return qr_fail(err, st, "member %zu of store.postgres_members: %s", i + 1, e2);
        if (st) {
            if (!first)
                first = qr_fail(err, QR_EUNAVAILABLE, "member %zu of store.postgres_members: %s", i + 1, e2);
            continue;
        }
        ++*answered;
        *primary_seen |= !standby;
        if (c > *head) {
            *head = c;
            *best = i;
        }
    }
    return first;
}

/*
 * The head F of the system of record, read after the caller read the local counter: the primary's
 * counter; *src is set to NULL then (catch_up reads from the primary). When no primary answers
 * (etcd down: Patroni demoted the leader, and HAProxy has none to offer) and store.postgres_members
 * is set, the highest counter among every member instead, and *src is the member that has it.
 * That holds every write acknowledged before the call: an acknowledged write stays in the data of
 * the primary that committed it (a demoted leader restarts as a standby with all of it; pg_rewind
 * only removes what a new primary lacks, and Patroni's synchronous_mode promotes only a standby
 * that had every acknowledged write, which replays it); this holds whatever the members' roles. So
 * every member must answer: one that does not might be a primary this node cannot see. While some
 * member answers, the members are asked again every 20 ms until the deadline: a leader Patroni
 * demotes is stopped and restarted as a standby (about 1.5 s on the loopback cluster), which a
 * search waits out when store.fence_ms allows. The primary is asked once, twice when its connection
 * was open (one it dropped is opened again: through HAProxy, to a new primary after a failover); a
 * node that reaches no member at all (cut off) fails after that. Once a fence went to the members, the next
 * ones ask them first, without a connection attempt through store.postgres (through HAProxy with no
 * primary behind it, one can wait out its whole connect_timeout), until a member is a primary again.
 */
static qr_status record_head(store *s, uint64_t deadline, int64_t *f, pgstore ***src, char *err)
{
    struct store_route *rt = s->route;
    char e2[QR_ERR_LEN] = "", e3[QR_ERR_LEN] = "";
    size_t best = 0, answered = 0;
    bool primary_seen = false;
    if (rt->lost)
        return qr_fail(err, QR_EUNAVAILABLE, "%s", rt->lost_msg);
    if (rt->via_members && rt->nm) {
        qr_status st = members_head(s, f, &best, &answered, &primary_seen, e3);
        if (!st) {
            rt->via_members = !primary_seen;
            *src = &rt->m[best];
            return QR_OK;
        }
        if (st != QR_EUNAVAILABLE)
            return qr_fail(err, st, "%s", e3);
    }
    /* once more only for a connection that was open: the primary may have dropped it */
    bool reopen = rt->w != NULL;
    for (int round = 0;; round++) {
        bool ask = round == 0 || (round == 1 && reopen);
        qr_status st = ask ? primary(s, e2) : QR_EUNAVAILABLE;
        if (rt->lost)
            return qr_fail(err, QR_EUNAVAILABLE, "%s", e2);
        if (ask && !st && !(st = pg_failed(&rt->w, pgstore_primary_counter(rt->w, f, e2)))) {
            rt->via_members = false;
            *src = NULL;
            return QR_OK;
        }
        if (st != QR_EUNAVAILABLE)
            return qr_fail(err, st, "%s", e2);
        answered = 0;
        if (rt->nm) {
            if (!(st = members_head(s, f, &best, &answered, &primary_seen, e3))) {
                rt->via_members = !primary_seen;
                *src = &rt->m[best];
                return QR_OK;
            }
            if (st != QR_EUNAVAILABLE)
                return qr_fail(err, st, "no primary answers (%s), and %s", e2, e3);
        }
        if (answered ? qr_now_ns() >= deadline : round > 0)
            return rt->nm ? qr_fail(err, QR_EUNAVAILABLE,
                                    "no primary answers (%s), and not every member of store.postgres_members "
                                    "does (%s)",
                                    e2, e3)
                          : qr_fail(err, QR_EUNAVAILABLE, "%s", e2);
        struct timespec pause = {0, 20000000L};
        nanosleep(&pause, NULL);
    }
}

/* Records a fence's batch asks for: what a node that keeps up has to apply is a few records, and a
 * whole pull is what makes the store exact. */
#define FENCE_BATCH 1024

/* Batches from src until every change up to target is in the store (store_follow_exact), or the
 * deadline. A source behind target is asked again every few milliseconds. */
static qr_status follow_exactly(store *s, pgstore *src, int64_t target, uint64_t deadline, int64_t *exact,
                                char *err)
{
    qr_status st = store_follow_exact(s, exact, err);
    while (!st && *exact < target) {
        if (qr_now_ns() >= deadline)
            return qr_fail(err, QR_ETIMEOUT, "the feed reached change %lld of %lld in time",
                           (long long)*exact, (long long)target);
        int64_t counter = 0, head = 0, before = *exact;
        if ((st = follow_step(s, pgstore_pull, src, FENCE_BATCH, &counter, &head, err)) ||
            (st = store_follow_exact(s, exact, err)))
            break;
        if (*exact == before && head < target) {
            struct timespec pause = {0, 2000000L};
            nanosleep(&pause, NULL);
        }
    }
    return st;
}

/* Applies the feed until every change up to target is in the local store: from the feed's
 * connection first (a standby may be behind), then from *src (NULL: the primary), which has
 * everything up to target; within store.fence_ms of start. */
static qr_status catch_up(store *s, int64_t target, pgstore **src, uint64_t start, char *err)
{
    struct store_route *rt = s->route;
    int64_t budget = fence_ms(), exact = 0;
    char e2[QR_ERR_LEN] = "";
    qr_status st = store_follow_exact(s, &exact, err);
    if (st || exact >= target)
        return st;
    if (!(st = pg_open(&rt->r, true, e2))) {
        st = pg_failed(&rt->r,
                       follow_exactly(s, rt->r, target, start + (uint64_t)budget * 500000u, &exact, e2));
        if (!st)
            return QR_OK;
    }
    /* a feed the store refuses, or one that cannot serve it any more (pruned deletions), is not a
     * matter of waiting: no second try; either way nothing is answered from this store */
    if (st == QR_ETIMEOUT || st == QR_EUNAVAILABLE || st == QR_EIO) {
        if (!src && !(st = primary(s, e2)))
            src = &rt->w;
        if (src && !(st = follow_exactly(s, *src, target, start + (uint64_t)budget * 1000000u, &exact, e2)))
            return QR_OK;
    }
    pg_failed(src ? src : &rt->w, st);
    return qr_fail(err, st == QR_ENOMEM ? QR_ENOMEM : QR_EUNAVAILABLE,
                   "this node could not apply the system of record's changes up to %lld within "
                   "store.fence_ms (%lld ms; it has every change up to %lld): failing closed: %s",
                   (long long)target, (long long)budget, (long long)exact, e2);
}

/* After a write of counter c: now, or at the batch's commit. */
static qr_status written(store *s, int64_t c, char *err)
{
    if (c <= 0)
        return QR_OK;
    if (s->route->batch) {
        s->route->batch_counter = c;
        return QR_OK;
    }
    return catch_up(s, c, NULL, qr_now_ns(), err);
}

qr_status store_route_put(store *s, const store_document *doc, const store_chunk *chunks, size_t nchunks,
                          const float *vectors, int dim, store_put_result *result, char *err)
{
    int64_t c = 0;
    qr_status st = primary(s, err);
    if (st ||
        (st = w_failed(s, pgstore_put(s->route->w, doc, chunks, nchunks, vectors, dim, result, &c, err))))
        return st;
    return written(s, c, err);
}

qr_status store_route_delete(store *s, const char *doc_id, char *err)
{
    int64_t c = 0;
    qr_status st = primary(s, err);
    if (st || (st = w_failed(s, pgstore_delete(s->route->w, doc_id, &c, err))))
        return st;
    return written(s, c, err);
}

qr_status store_route_set_acl(store *s, const char *doc_id, const char *const *acl, size_t nacl, char *err)
{
    int64_t c = 0;
    qr_status st = primary(s, err);
    if (st || (st = w_failed(s, pgstore_set_acl(s->route->w, doc_id, acl, nacl, &c, err))))
        return st;
    return written(s, c, err);
}

/* The primary records the model first (whichever node comes first), then the local store. */
qr_status store_route_check_embedding(store *s, const char *model, int dim, char *err)
{
    qr_status st = primary(s, err);
    if (st || (st = w_failed(s, pgstore_check_embedding(s->route->w, model, dim, err))))
        return st;
    return QR_OK;
}

/* A batch on a routed handle is a batch on the primary (pgstore_batch_begin: one transaction, each
 * document in a savepoint of its own); the local catch-up waits for its commit. */
qr_status store_route_batch_begin(store *s, char *err)
{
    if (s->route->batch || s->batch != BATCH_NONE)
        return qr_fail(err, QR_EINVAL, "a batch is already open on store '%s'", s->path);
    qr_status st = primary(s, err);
    if (st || (st = pg_failed(&s->route->w, pgstore_batch_begin(s->route->w, err))))
        return st;
    s->route->batch = true;
    s->route->batch_counter = 0;
    return QR_OK;
}

qr_status store_route_batch_end(store *s, char *err)
{
    if (!s->route->batch)
        return qr_fail(err, QR_EINVAL, "no batch is open on store '%s'", s->path);
    int64_t c = s->route->batch_counter;
    s->route->batch = false;
    s->route->batch_counter = 0;
    qr_status st = s->route->w ? pg_failed(&s->route->w, pgstore_batch_commit(s->route->w, err))
                               : qr_fail(err, QR_EUNAVAILABLE,
                                         "the batch was rolled back: its connection to "
                                         "PostgreSQL was lost");
    return st ? st : c > 0 ? catch_up(s, c, NULL, qr_now_ns(), err) : QR_OK;
}

void store_route_batch_rollback(store *s)
{
    s->route->batch = false;
    s->route->batch_counter = 0;
    pgstore_batch_rollback(s->route->w);
}

bool store_route_in_batch(const store *s)
{
    return s->route && s->route->batch;
}

/* The primary's counter is never below what this node applied from it, unless the primary lost
 * writes it had acknowledged and this node had applied: after a failover to a standby that
 * missed them (Patroni's synchronous_mode is not strict: a leader alone acknowledges writes).
 * Its next writes would then reuse those counters with other changes, which this node would never
 * apply: it must not serve, and must be rebuilt from an empty data directory. */
static qr_status diverged(store *s, int64_t local, int64_t primary_counter, char *err)
{
    return qr_fail(err, QR_EUNAVAILABLE,
                   "the system of record's change counter (%lld) is below the %lld this node's store '%s' "
                   "applied: the primary lost writes this node had applied (a failover to a standby that "
                   "missed them): failing closed; rebuild this node from an empty data directory",
                   (long long)primary_counter, (long long)local, s->path);
}

qr_status store_fence(store *s, char *err)
{
    if (!s)
        return qr_fail(err, QR_EINVAL, "store_fence: NULL store");
    if (!s->route)
        return QR_OK;
    int64_t f = 0, local = 0;
    uint64_t start = qr_now_ns();
    char e2[QR_ERR_LEN] = "";
    /* the local counter first: whatever the follower applies after this read is newer still */
    qr_status st = store_change_counter(s, &local, err);
    if (st)
        return st;
    pgstore **src = NULL;
    if ((st = record_head(s, start + (uint64_t)fence_ms() * 1000000u, &f, &src, e2)))
        return qr_fail(err, st == QR_EINVAL ? QR_EINVAL : QR_EUNAVAILABLE,
                       "the system of record's change counter cannot be read: failing closed: %s", e2);
    if (f < local)
        return diverged(s, local, f, err);
    return catch_up(s, f, src, start, err);
}

qr_status store_follow_poll(store *s, size_t limit, int64_t *counter, int64_t *head, int64_t *primary_head,
                            char *err)
{
    if (!s || !s->route)
        return qr_fail(err, QR_EINVAL, "store_follow_poll: the store has no system of record");
    struct store_route *rt = s->route;
    char e2[QR_ERR_LEN] = "";
    qr_status st = primary(s, e2);
    if (st == QR_EUNAVAILABLE && rt->nm) {
        /* no primary: the members' head, read after the local counter (as a fence does), and the
         * feed from the member that has it */
        int64_t local = 0;
        pgstore **src = NULL;
        if ((st = store_change_counter(s, &local, err)) ||
            (st = record_head(s, qr_now_ns() + (uint64_t)fence_ms() * 1000000u, primary_head, &src, err)))
            return st;
        if (*primary_head < local)
            return diverged(s, local, *primary_head, err);
        pgstore **from = src ? src : &rt->w;
        return pg_failed(from, follow_step(s, pgstore_pull, *from, limit, counter, head, err));
    }
    if (st)
        return qr_fail(err, st, "%s", e2);
    if ((st = pg_open(&rt->r, true, err)) ||
        (st = pg_failed(&rt->r, follow_step(s, pgstore_pull, rt->r, limit, counter, head, err))))
        return st;
    /* read after the pull, so that it is at least what the pull saw, unless the primary diverged */
    if ((st = pg_failed(&rt->w, pgstore_primary_counter(rt->w, primary_head, err))))
        return st;
    return *primary_head < *counter ? diverged(s, *counter, *primary_head, err) : QR_OK;
}

qr_status store_route_register(store *s, const char *node, int64_t watermark, bool prune, char *err)
{
    if (!s || !s->route)
        return qr_fail(err, QR_EINVAL, "store_route_register: the store has no system of record");
    qr_status st = primary(s, err);
    if (!st)
        st = pg_failed(&s->route->w, pgstore_register_node(s->route->w, node, watermark, err));
    if (!st && prune)
        st = pg_failed(&s->route->w, pgstore_prune(s->route->w, NULL, err));
    return st;
}
