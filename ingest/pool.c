/*
 * The ingestion pool: worker threads that prepare documents (check, hash, extract in the sandbox
 * where the format needs it, normalise, chunk, embed: ingest_prepare) while the thread that
 * submitted them takes them back in submission order and writes them (ingest_put_prepared), so
 * that a bulk load uses every core and one thread owns the store's transaction. Each worker has
 * its own embedder (the local one keeps a cache, an HTTP one a connection) and its own read-only
 * use of a store connection, to skip the work for documents whose committed hash is unchanged
 * (not opened when the store held no document at the start: a first load has none to skip).
 * The queue is bounded by documents and bytes; its order makes the result independent of the
 * number of threads. Raw input (ingest_pool_submit_raw) is parsed on the workers too.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ingest/ingest.h"

#define POOL_MAX_THREADS 64
/* Queued documents per worker. A deep queue lets the writer take many prepared documents per
 * wake-up and the workers run ahead through its commits: on the shared collections x8 (23 MB,
 * bench/README.md "End-to-end ingestion") 128 took quarry ingest's wall time to 0.72-0.87 of 4's
 * in five alternating rounds (12 and 32 in between), with less writer and system CPU. The bytes
 * queued stay bounded by POOL_MAX_BYTES. */
#define POOL_SLOTS_PER 128
#define POOL_MAX_BYTES ((size_t)64 << 20) /* source bytes queued, beyond the first document */
#define SLOT_QUEUED    0
#define SLOT_TAKEN     1
#define SLOT_DONE      2

typedef struct {
    ingest_prepared *doc;
    size_t bytes; /* counted in queued_bytes */
    int state;
} pool_slot;

typedef struct {
    struct ingest_pool *pool;
    ingest_embedder *embedder;
    store *ro;
    pthread_t thread;
    bool started;
} pool_worker;

struct ingest_pool {
    ingest_session *session;
    int nworkers;
    pool_worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    pool_slot *slots;
    size_t cap;
    size_t head, take, tail; /* head <= take <= tail, positions modulo cap */
    size_t queued_bytes;
    bool stop;
};

static void *worker_main(void *arg)
{
    pool_worker *w = arg;
    struct ingest_pool *p = w->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->take == p->tail)
            pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->stop)
            break;
        pool_slot *slot = &p->slots[p->take % p->cap];
        p->take++;
        slot->state = SLOT_TAKEN;
        pthread_mutex_unlock(&p->mu);
        ingest_prepare(p->session, w->embedder, w->ro, slot->doc);
        pthread_mutex_lock(&p->mu);
        slot->state = SLOT_DONE;
        pthread_cond_signal(&p->done_cv); /* only the writer waits on it */
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static qr_status count_one(void *ctx, const store_doc_summary *d, char *err)
{
    (void)d;
    (void)err;
    (*(size_t *)ctx)++;
    return QR_OK;
}

qr_status ingest_pool_open(ingest_session *s, const qr_config *cfg, int threads, ingest_pool **out, char *err)
{
    *out = NULL;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    if (threads > POOL_MAX_THREADS)
        threads = POOL_MAX_THREADS;
    struct ingest_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return qr_fail(err, QR_ENOMEM, "out of memory opening the ingestion pool");
    qr_status st = QR_OK;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->session = s;
    p->nworkers = threads > 1 ? threads : 0;
    p->cap = p->nworkers ? (size_t)p->nworkers * POOL_SLOTS_PER : 1;
    p->slots = calloc(p->cap, sizeof(*p->slots));
    if (p->nworkers)
        p->workers = calloc((size_t)p->nworkers, sizeof(*p->workers));
    if (!p->slots || (p->nworkers && !p->workers)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory opening the ingestion pool");
        goto out;
    }
    /* Looking a document's committed hash up is a read transaction per document on the
     * workers (4% of a 23 MB first load's samples, bench/README.md); in a store that held no
     * document at the start it can find nothing, but for a document twice in the input, which
     * store_put then finds unchanged itself (the same chunks stay). Documents another process adds
     * meanwhile are compared by store_put as well: skipping the lookup changes no result. */
    size_t stored = 0;
    bool more = false;
    if (p->nworkers &&
        (st = store_list_documents(ingest_session_store(s), NULL, 1, count_one, &stored, &more, err)))
        goto out;
    for (int i = 0; i < p->nworkers; i++) {
        pool_worker *w = &p->workers[i];
        w->pool = p;
        if ((st = ingest_embedder_open(cfg, &w->embedder, err)) ||
            (stored && (st = store_open(qr_config_settings(cfg)->data_dir, &w->ro, err))))
            goto out;
    }
    for (int i = 0; i < p->nworkers; i++) {
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
            st = qr_fail(err, QR_EINTERNAL, "cannot start ingestion thread %d of %d", i + 1, p->nworkers);
            goto out;
        }
        p->workers[i].started = true;
    }
out:
    if (st) {
        ingest_pool_close(p);
        return st;
    }
    *out = p;
    return QR_OK;
}

int ingest_pool_threads(const ingest_pool *p)
{
    return p->nworkers;
}

/* With mu held. */
static bool full_locked(const ingest_pool *p)
{
    size_t queued = p->tail - p->head;
    return queued == p->cap || (queued && p->queued_bytes >= POOL_MAX_BYTES);
}

bool ingest_pool_full(const ingest_pool *p)
{
    struct ingest_pool *m = (struct ingest_pool *)p;
    pthread_mutex_lock(&m->mu);
    bool full = full_locked(p);
    pthread_mutex_unlock(&m->mu);
    return full;
}

/* Queues doc (bytes of input), or frees it when the queue is full. One lock per document: the
 * writer's thread is the bottleneck of a bulk load, and each contended lock is a system call. */
static qr_status enqueue(ingest_pool *p, ingest_prepared *doc, size_t bytes, char *err)
{
    pthread_mutex_lock(&p->mu);
    if (full_locked(p)) {
        pthread_mutex_unlock(&p->mu);
        ingest_prepared_free(doc);
        return qr_fail(err, QR_EINVAL, "the ingestion queue is full: take a document first");
    }
    pool_slot *slot = &p->slots[p->tail % p->cap];
    slot->doc = doc;
    slot->bytes = bytes;
    slot->state = SLOT_QUEUED;
    p->tail++;
    p->queued_bytes += bytes;
    /* Waking a worker is a system call on this thread, which is the bottleneck: wake one only
     * once half the queue waits untaken, so that it takes several documents per wake-up (a
     * full queue still has the other half prepared for the writer); ingest_pool_next wakes them
     * when the writer is about to wait for an untaken document. */
    if (p->nworkers && p->tail - p->take >= (p->cap + 1) / 2)
        pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    return QR_OK;
}

qr_status ingest_pool_submit(ingest_pool *p, const ingest_source *src, char *err)
{
    if (ingest_pool_full(p))
        return qr_fail(err, QR_EINVAL, "the ingestion queue is full: take a document first");
    ingest_prepared *doc = NULL;
    qr_status st = ingest_prepared_new(src, &doc, err);
    if (st)
        return st;
    return enqueue(p, doc, src->len, err);
}

qr_status ingest_pool_submit_raw(ingest_pool *p, const ingest_parser *parser, char *raw, size_t len,
                                 const char *where, char *err)
{
    ingest_prepared *doc = NULL;
    qr_status st = ingest_prepared_new_raw(parser, raw, len, where, &doc, err);
    if (st)
        return st;
    return enqueue(p, doc, len, err);
}

ingest_prepared *ingest_pool_next(ingest_pool *p, bool wait)
{
    ingest_prepared *doc = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->head == p->tail)
        goto out;
    pool_slot *slot = &p->slots[p->head % p->cap];
    if (!p->nworkers) {
        /* no threads: prepared here, on the writer's thread, without the committed-hash shortcut
         * (the write looks at the hash itself) */
        pthread_mutex_unlock(&p->mu);
        ingest_prepare(p->session, NULL, NULL, slot->doc);
        pthread_mutex_lock(&p->mu);
        slot->state = SLOT_DONE;
    }
    if (wait && slot->state == SLOT_QUEUED)
        pthread_cond_broadcast(&p->work_cv); /* enqueue may not have woken anyone yet */
    while (wait && slot->state != SLOT_DONE)
        pthread_cond_wait(&p->done_cv, &p->mu);
    if (slot->state != SLOT_DONE)
        goto out;
    doc = slot->doc;
    slot->doc = NULL;
    p->head++;
    p->queued_bytes -= slot->bytes;
out:
    pthread_mutex_unlock(&p->mu);
    return doc;
}

void ingest_pool_close(ingest_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; p->workers && i < p->nworkers; i++) {
        if (p->workers[i].started)
            pthread_join(p->workers[i].thread, NULL);
        ingest_embedder_free(p->workers[i].embedder);
        store_close(p->workers[i].ro);
    }
    for (size_t i = p->head; p->slots && i < p->tail; i++)
        ingest_prepared_free(p->slots[i % p->cap].doc);
    free(p->slots);
    free(p->workers);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
