/*
 * A small worker pool: a fixed set of threads taking tasks from a bounded FIFO queue. Used for
 * background jobs (ingestion, index builds) where the submitter must not block on the work.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

typedef struct {
    qr_task_fn fn;
    void *arg;
} pool_task;

struct qr_pool {
    pthread_mutex_t lock;
    pthread_cond_t has_work; /* signalled when a task is queued or shutdown begins */
    pthread_cond_t idle;     /* signalled when the queue empties and no task runs */
    pool_task *queue;        /* ring buffer of queue_cap entries */
    size_t queue_cap;
    size_t head;
    size_t count;
    int running;
    bool stopping;
    int nthreads;
    pthread_t *threads;
};

static void *pool_worker(void *arg)
{
    qr_pool *pool = arg;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (pool->count == 0 && !pool->stopping)
            pthread_cond_wait(&pool->has_work, &pool->lock);
        if (pool->count == 0 && pool->stopping)
            break;
        pool_task task = pool->queue[pool->head];
        pool->head = (pool->head + 1) % pool->queue_cap;
        pool->count--;
        pool->running++;
        pthread_mutex_unlock(&pool->lock);
        task.fn(task.arg);
        pthread_mutex_lock(&pool->lock);
        pool->running--;
        if (pool->count == 0 && pool->running == 0)
            pthread_cond_broadcast(&pool->idle);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

qr_pool *qr_pool_new(int threads, size_t queue_cap, char *err)
{
    if (threads < 1 || threads > 1024 || queue_cap < 1) {
        qr_fail(err, QR_EINVAL, "worker pool needs 1..1024 threads and a queue of at least 1 (got %d, %zu)",
                threads, queue_cap);
        return NULL;
    }
    qr_pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        goto nomem;
    pool->queue = calloc(queue_cap, sizeof(pool_task));
    pool->threads = calloc((size_t)threads, sizeof(pthread_t));
    if (!pool->queue || !pool->threads)
        goto nomem;
    pool->queue_cap = queue_cap;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->has_work, NULL);
    pthread_cond_init(&pool->idle, NULL);
    for (int i = 0; i < threads; i++) {
        int rc = pthread_create(&pool->threads[i], NULL, pool_worker, pool);
        if (rc) {
            qr_fail(err, QR_EINTERNAL, "cannot start worker thread: %s", strerror(rc));
            qr_pool_free(pool);
            return NULL;
        }
        pool->nthreads++;
    }
    return pool;
nomem:
    if (pool) {
        free(pool->queue);
        free(pool->threads);
        free(pool);
    }
    qr_fail(err, QR_ENOMEM, "out of memory creating the worker pool");
    return NULL;
}

qr_status qr_pool_submit(qr_pool *pool, qr_task_fn fn, void *arg)
{
    if (!pool || !fn)
        return QR_EINVAL;
    qr_status st = QR_OK;
    pthread_mutex_lock(&pool->lock);
    if (pool->stopping) {
        st = QR_EINVAL;
    } else if (pool->count == pool->queue_cap) {
        st = QR_ELIMIT;
    } else {
        pool->queue[(pool->head + pool->count) % pool->queue_cap] = (pool_task){fn, arg};
        pool->count++;
        pthread_cond_signal(&pool->has_work);
    }
    pthread_mutex_unlock(&pool->lock);
    return st;
}

void qr_pool_wait(qr_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    while (pool->count > 0 || pool->running > 0)
        pthread_cond_wait(&pool->idle, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
}

void qr_pool_free(qr_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->has_work);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->idle);
    pthread_cond_destroy(&pool->has_work);
    pthread_mutex_destroy(&pool->lock);
    free(pool->queue);
    free(pool->threads);
    free(pool);
}
