/*
 * The maintainer: the one thread per process that keeps the pruned BM25 index and the vector
 * index caught up with the store (index/maintainer.h). It owns the policy of when they
 * catch up and when they are rebuilt, which used to run on request threads: a write signals it,
 * a timer (index.refresh_ms) wakes it for writers in other processes, and a forced rebuild asks
 * it. Each pass runs on the thread's own store handle, holds no lock a search takes while it
 * works, and publishes an index the first time it exists by an atomic pointer store; later
 * generations are swapped inside the indexes (bm25_*.c, vindex_build.c), whose searches hold snapshots.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "index/feed.h"
#include "index/maintainer.h"
#include "index/store.h"

#define LOG_COMPONENT "index"

struct index_maintainer {
    char *data_dir;
    vindex_opts vopts;
    bm25_opts bopts;
    bool want_bm25;
    uint64_t refresh_ns;
    int nice;
    store *s; /* the thread's own handle */

    _Atomic(vindex *) vindex;
    _Atomic(bm25_index *) bm25;

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t wake;        /* the thread waits here for work */
    pthread_cond_t done;        /* waiters wait here for passes to finish */
    pthread_cond_t follow_wake; /* the feed follower sleeps here between polls */
    /* under mu */
    bool stop, signalled;
    uint64_t force_asked, force_done; /* forced rebuilds asked for / finished (sequence numbers) */
    uint64_t started, finished;       /* passes */
    qr_status last_st;                /* the last pass's outcome */
    char last_err[QR_ERR_LEN];
    qr_status force_st; /* the last forced pass's outcome and vector report */
    char force_err[QR_ERR_LEN];
    index_sync_report force_rep;
    index_maintainer_status status;
    index_maintainer_hook hook;
    void *hook_ctx;

    /* the feed follower (store.backend = postgres): its thread and handle; its status fields are
     * in status, under mu */
    store *fs;
    pthread_t follow_thread;
    bool follow_started;
    uint64_t poll_ns;
    int64_t behind_target;    /* a primary counter the store had not reached when read (0: none) */
    uint64_t behind_since_ns; /* when it was read, or when polls started failing */
};

/* One pass: both indexes up to the store's counter as read at its start (force: new
 * generations). Runs on the maintainer's thread only, without holding mu. */
static qr_status pass(index_maintainer *m, bool force, int64_t *counter, bool *built, index_sync_report *rep,
                      qr_status *vst, qr_status *bm25st, char *err)
{
    memset(rep, 0, sizeof(*rep));
    *built = false;
    qr_status st = store_change_counter(m->s, counter, err);
    *vst = *bm25st = st;
    if (st)
        return st;
    qr_status bst = QR_OK;
    char berr[QR_ERR_LEN] = "";
    if (m->want_bm25) {
        bm25_report br;
        bm25_index *b = atomic_load_explicit(&m->bm25, memory_order_acquire);
        if (b) {
            bst = bm25_sync(b, m->s, true, force, &br, berr);
        } else if (!(bst = bm25_open(m->s, m->data_dir, &m->bopts, force, &b, &br, berr))) {
            atomic_store_explicit(&m->bm25, b, memory_order_release);
            qr_log(QR_LOG_INFO, LOG_COMPONENT, "BM25 index ready (%s)", br.rebuilt ? "built" : "opened");
        }
        if (!bst && br.rebuilt) {
            *built = true;
            qr_log(QR_LOG_INFO, LOG_COMPONENT, "BM25 index rebuilt in %.1f s", br.seconds);
        }
        if (bst)
            qr_log(QR_LOG_WARN, LOG_COMPONENT,
                   "cannot bring the BM25 index up to date (FTS5 ranks meanwhile): %s", berr);
    }
    vindex *v = atomic_load_explicit(&m->vindex, memory_order_acquire);
    if (v) {
        st = index_sync(m->s, v, &m->vopts, force, rep, err);
    } else if (force) {
        if (!(st = index_sync_open(m->s, m->data_dir, &m->vopts, true, &v, rep, err)) && v)
            atomic_store_explicit(&m->vindex, v, memory_order_release);
    } else if (!(st = index_open_serving(m->s, m->data_dir, &m->vopts, &v, rep, err)) && v) {
        /* served at once (exact over every vector when there was no generation), built after */
        atomic_store_explicit(&m->vindex, v, memory_order_release);
        if (rep->added)
            qr_log(QR_LOG_INFO, LOG_COMPONENT,
                   "vector index: no generation yet; %zu vectors searched exactly while one is built",
                   rep->added);
        st = index_sync(m->s, v, &m->vopts, false, rep, err);
    }
    if (!st && (rep->rebuilt || rep->added || rep->removed))
        qr_log(QR_LOG_INFO, LOG_COMPONENT,
               "vector index: generation %llu (%s, %zu vectors)%s, %zu added, %zu removed",
               (unsigned long long)rep->generation, rep->type, rep->count, rep->rebuilt ? " rebuilt" : "",
               rep->added, rep->removed);
    if (st)
        qr_log(QR_LOG_WARN, LOG_COMPONENT, "cannot bring the vector index up to date: %s", err);
    *built = *built || (!st && rep->rebuilt);
    *vst = st;
    *bm25st = bst;
    if (!st && bst)
        return qr_fail(err, bst, "%s", berr);
    return st;
}

static void *run(void *arg)
{
    index_maintainer *m = arg;
    /* Linux keeps a nice value per thread, and threads inherit it from the one that starts them
     * (FAISS's OpenMP team for a build is started from here): on a busy machine a build then takes
     * the CPU that searches leave, instead of doubling their latency (bench/README.md). Lowering
     * one's own priority needs no privilege. */
    if (m->nice > 0 && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), m->nice) != 0)
        qr_log(QR_LOG_WARN, LOG_COMPONENT,
               "cannot lower the maintainer's priority (index.maintainer_nice): %s", strerror(errno));
    pthread_mutex_lock(&m->mu);
    bool first = true;
    while (!m->stop) {
        if (!first && !m->signalled && m->force_asked == m->force_done) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            uint64_t ns = (uint64_t)until.tv_nsec + m->refresh_ns;
            until.tv_sec += (time_t)(ns / 1000000000u);
            until.tv_nsec = (long)(ns % 1000000000u);
            pthread_cond_timedwait(&m->wake, &m->mu, &until);
            if (m->stop)
                break;
        }
        first = false;
        uint64_t force_seq = m->force_asked;
        bool force = force_seq != m->force_done;
        m->signalled = false;
        uint64_t number = ++m->started;
        m->status.busy = true;
        index_maintainer_hook hook = m->hook;
        void *hook_ctx = m->hook_ctx;
        pthread_mutex_unlock(&m->mu);

        if (hook)
            hook(hook_ctx, number);
        uint64_t t0 = qr_now_ns();
        int64_t counter = -1;
        bool built = false;
        index_sync_report rep;
        char err[QR_ERR_LEN] = "";
        qr_status vst, bm25st;
        qr_status st = pass(m, force, &counter, &built, &rep, &vst, &bm25st, err);
        double seconds = (double)(qr_now_ns() - t0) / 1e9;

        pthread_mutex_lock(&m->mu);
        m->finished = number;
        m->last_st = st;
        snprintf(m->last_err, sizeof(m->last_err), "%s", st ? err : "");
        if (force) {
            m->force_done = force_seq;
            m->force_st = st;
            snprintf(m->force_err, sizeof(m->force_err), "%s", m->last_err);
            m->force_rep = rep;
        }
        index_maintainer_status *ss = &m->status;
        ss->first_pass_done = true;
        ss->busy = false;
        ss->passes++;
        ss->builds += built;
        ss->last_pass_s = seconds;
        ss->vector_failures = vst ? ss->vector_failures + 1 : 0;
        ss->bm25_failures = bm25st ? ss->bm25_failures + 1 : 0;
        snprintf(ss->last_error, sizeof(ss->last_error), "%s", m->last_err);
        if (!st && counter > ss->visible)
            ss->visible = counter;
        ss->bm25_warm = atomic_load(&m->bm25) != NULL;
        ss->vector_warm = atomic_load(&m->vindex) != NULL;
        pthread_cond_broadcast(&m->done);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* How long a poll's failure or a counter not yet applied has lasted, under mu. */
static uint64_t behind_ms(const index_maintainer *m, uint64_t now)
{
    return m->behind_since_ns ? (now - m->behind_since_ns) / 1000000u : 0;
}

/* The feed follower's thread: every poll_ns, one batch of the system of record's feed into the
 * local store (store_follow_poll), the maintainer signalled when it applied something, and this
 * node's applied counter registered with the primary every few seconds (tombstones are pruned
 * below every node's). Runs only on a routed store. */
static void *follow(void *arg)
{
    index_maintainer *m = arg;
    char node[300], host[256] = "";
    gethostname(host, sizeof(host) - 1);
    snprintf(node, sizeof(node), "%.120s:%.120s", host, m->data_dir);
    uint64_t registered_ns = 0, pruned_ns = 0;
    int64_t registered = -1;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        int64_t before = m->status.feed_counter;
        pthread_mutex_unlock(&m->mu);
        char err[QR_ERR_LEN] = "";
        int64_t counter = 0, head = 0, primary = 0;
        qr_status st = store_follow_poll(m->fs, 512, &counter, &head, &primary, err);
        uint64_t now = qr_now_ns();
        if (!st && counter != registered && now - registered_ns > 5000000000u) {
            /* and once a minute, the tombstones every node has passed go */
            bool prune = now - pruned_ns > 60000000000u;
            char e2[QR_ERR_LEN];
            if (store_route_register(m->fs, node, counter, prune, e2))
                qr_log(QR_LOG_WARN, LOG_COMPONENT, "cannot register this node's feed position: %s", e2);
            else {
                registered = counter;
                registered_ns = now;
                pruned_ns = prune ? now : pruned_ns;
            }
        }
        pthread_mutex_lock(&m->mu);
        index_maintainer_status *ss = &m->status;
        ss->feed_ok = !st;
        snprintf(ss->feed_error, sizeof(ss->feed_error), "%s", st ? err : "");
        if (st) {
            if (!m->behind_since_ns)
                m->behind_since_ns = now;
        } else {
            ss->feed_counter = counter;
            ss->feed_primary = primary;
            if (m->behind_target && counter >= m->behind_target) {
                ss->feed_lag_last_ms = behind_ms(m, now);
                m->behind_target = 0;
                m->behind_since_ns = 0;
            }
            if (!m->behind_target && counter < primary) {
                m->behind_target = primary;
                m->behind_since_ns = now;
            } else if (!m->behind_target) {
                m->behind_since_ns = 0;
            }
        }
        ss->feed_behind_ms = behind_ms(m, now);
        if (!st && counter != before) {
            m->signalled = true;
            pthread_cond_signal(&m->wake);
        }
        /* a batch cut short (more to apply) goes on at once */
        if (st || counter >= head) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            uint64_t ns = (uint64_t)until.tv_nsec + m->poll_ns;
            until.tv_sec += (time_t)(ns / 1000000000u);
            until.tv_nsec = (long)(ns % 1000000000u);
            if (!m->stop)
                pthread_cond_timedwait(&m->follow_wake, &m->mu, &until);
        }
        if (st)
            qr_log(QR_LOG_WARN, LOG_COMPONENT, "the feed follower: %s", err);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

qr_status index_maintainer_start(const index_maintainer_opts *o, index_maintainer **out, char *err)
{
    if (!out)
        return qr_fail(err, QR_EINVAL, "index_maintainer_start: NULL argument");
    *out = NULL;
    if (!o || !o->data_dir || !*o->data_dir || o->refresh_ms < 1)
        return qr_fail(err, QR_EINVAL, "the maintainer needs a data directory and index.refresh_ms >= 1");
    index_maintainer *m = calloc(1, sizeof(*m));
    if (!m || !(m->data_dir = strdup(o->data_dir))) {
        free(m);
        return qr_fail(err, QR_ENOMEM, "out of memory starting the index maintainer");
    }
    m->vopts = o->vopts;
    m->bopts = o->bopts;
    m->want_bm25 = o->bm25;
    m->refresh_ns = o->refresh_ms * 1000000u;
    m->nice = o->nice;
    m->status.visible = -1;
    atomic_init(&m->vindex, NULL);
    atomic_init(&m->bm25, NULL);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->wake, NULL);
    pthread_cond_init(&m->done, NULL);
    pthread_cond_init(&m->follow_wake, NULL);
    m->poll_ns = (o->poll_ms ? o->poll_ms : 20) * 1000000u;
    qr_status st = store_open(m->data_dir, &m->s, err);
    if (!st && store_routed(m->s) && !(st = store_open_another(m->s, &m->fs, err))) {
        m->status.following = true;
        if (pthread_create(&m->follow_thread, NULL, follow, m) != 0)
            st = qr_fail(err, QR_EINTERNAL, "cannot start the feed follower's thread");
        else
            m->follow_started = true;
    }
    if (!st && pthread_create(&m->thread, NULL, run, m) != 0)
        st = qr_fail(err, QR_EINTERNAL, "cannot start the index maintainer's thread");
    if (st) {
        index_maintainer_stop(m);
        return st;
    }
    m->thread_started = true;
    *out = m;
    return QR_OK;
}

void index_maintainer_stop(index_maintainer *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_broadcast(&m->wake);
    pthread_cond_broadcast(&m->follow_wake);
    pthread_mutex_unlock(&m->mu);
    if (m->thread_started)
        pthread_join(m->thread, NULL);
    if (m->follow_started)
        pthread_join(m->follow_thread, NULL);
    store_close(m->fs);
    vindex_close(atomic_load(&m->vindex));
    bm25_close(atomic_load(&m->bm25));
    store_close(m->s);
    pthread_cond_destroy(&m->wake);
    pthread_cond_destroy(&m->done);
    pthread_cond_destroy(&m->follow_wake);
    pthread_mutex_destroy(&m->mu);
    free(m->data_dir);
    free(m);
}

void index_maintainer_signal(index_maintainer *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->signalled = true;
    pthread_cond_signal(&m->wake);
    pthread_mutex_unlock(&m->mu);
}

/* Absolute CLOCK_REALTIME deadline timeout_ms from now, for pthread_cond_timedwait. */
static struct timespec deadline_in(uint64_t timeout_ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    uint64_t ns = (uint64_t)t.tv_nsec + (timeout_ms % 1000u) * 1000000u;
    t.tv_sec += (time_t)(timeout_ms / 1000u + ns / 1000000000u);
    t.tv_nsec = (long)(ns % 1000000000u);
    return t;
}

qr_status index_maintainer_wait(index_maintainer *m, int64_t counter, uint64_t timeout_ms, char *err)
{
    if (!m)
        return qr_fail(err, QR_EINVAL, "index_maintainer_wait: NULL maintainer");
    struct timespec until = deadline_in(timeout_ms);
    qr_status st = QR_OK;
    pthread_mutex_lock(&m->mu);
    /* the write happened before this call: the next pass to start sees it */
    uint64_t need = m->started + 1;
    m->signalled = true;
    pthread_cond_signal(&m->wake);
    while (m->status.visible < counter) {
        if (m->finished >= need && m->last_st) {
            st = qr_fail(err, m->last_st, "the indexes could not catch up: %s", m->last_err);
            break;
        }
        if (m->stop) {
            st = qr_fail(err, QR_EUNAVAILABLE, "the index maintainer is stopping");
            break;
        }
        if (pthread_cond_timedwait(&m->done, &m->mu, &until) != 0 && m->status.visible < counter) {
            st = qr_fail(err, QR_ETIMEOUT, "the indexes did not reach change %lld within %llu ms",
                         (long long)counter, (unsigned long long)timeout_ms);
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return st;
}

qr_status index_maintainer_rebuild(index_maintainer *m, index_sync_report *rep, char *err)
{
    if (!m)
        return qr_fail(err, QR_EINVAL, "index_maintainer_rebuild: NULL maintainer");
    qr_status st = QR_OK;
    pthread_mutex_lock(&m->mu);
    uint64_t seq = ++m->force_asked;
    pthread_cond_signal(&m->wake);
    while (m->force_done < seq && !m->stop)
        pthread_cond_wait(&m->done, &m->mu);
    if (m->force_done < seq)
        st = qr_fail(err, QR_EUNAVAILABLE, "the index maintainer stopped before the rebuild");
    else if (m->force_st)
        st = qr_fail(err, m->force_st, "%s", m->force_err);
    if (!st && rep)
        *rep = m->force_rep; /* of this rebuild, or of a later one that took it in */
    pthread_mutex_unlock(&m->mu);
    return st;
}

vindex *index_maintainer_vindex(index_maintainer *m)
{
    return m ? atomic_load_explicit(&m->vindex, memory_order_acquire) : NULL;
}

bm25_index *index_maintainer_bm25(index_maintainer *m)
{
    return m ? atomic_load_explicit(&m->bm25, memory_order_acquire) : NULL;
}

void index_maintainer_get_status(index_maintainer *m, index_maintainer_status *out)
{
    memset(out, 0, sizeof(*out));
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    *out = m->status;
    if (out->following) /* a poll that hangs still counts */
        out->feed_behind_ms = behind_ms(m, qr_now_ns());
    pthread_mutex_unlock(&m->mu);
}

void index_maintainer_set_hook(index_maintainer *m, index_maintainer_hook fn, void *ctx)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->hook = fn;
    m->hook_ctx = ctx;
    pthread_mutex_unlock(&m->mu);
}
