/*
 * Bulk mode's checkpointing threads: one for the writer's quarry.db (store.c) and one for the
 * full-text follower's quarry.fts (store_fts.c). Each has a connection of its own to its database
 * file, so that copying the WAL into the database and syncing both overlap the load instead of
 * stopping the connection that writes (measured with strace: for quarry.db the last WAL sync,
 * the copy and the database sync took 0.45 s, all at the end of a 23 MB load and on the writer's
 * path; for quarry.fts each checkpoint held the full-text thread 60 ms, with the load's other
 * threads waiting on it at the end). After each commit the writing connection's WAL hook asks for
 * a PASSIVE checkpoint, which never blocks the writer. The WAL file starts over from its beginning
 * only when a write transaction begins with every frame copied: when the WAL has grown past
 * max_frames (STORE_BULK_CHECKPOINT_PAGES for quarry.db, the same bytes for quarry.fts), the hook waits for
 * the checkpoint in progress, so that the next transaction restarts it and the file stays bounded. A small
 * WAL was also faster (quarry.db, 23 MB of input, 3 runs each: 1,000 pages 3.0-3.1 s and 1.42-1.48 s CPU
 * writing, 16,384 pages 3.2-3.6 s and 1.63-2.28 s): writing over the file's pages costs the kernel less than
 * growing it. A failed checkpoint is left to the next one (and to the last, at the end or at close).
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>

#include "index/store.h"
#include "index/store_int.h"

struct store_ckpt {
    sqlite3 *db;     /* the checkpointing connection */
    sqlite3 *writer; /* whose WAL hook asks for checkpoints */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t asked, done; /* checkpoints asked for by the writer, and finished */
    int max_frames;       /* a longer WAL is started over before the writer goes on */
    bool stop;
};

static void *ckpt_main(void *arg)
{
    store_ckpt *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stop && c->done == c->asked)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->done == c->asked) /* stopped with nothing asked: one asked is still done, the
                                  * copy would otherwise fall to the writer at the end */
            break;
        uint64_t asked = c->asked;
        pthread_mutex_unlock(&c->mu);
        sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&c->mu);
        c->done = asked;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* The writer's WAL hook: after every commit, with frames the WAL's length. */
static int ckpt_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    store_ckpt *c = arg;
    pthread_mutex_lock(&c->mu);
    uint64_t want = ++c->asked;
    pthread_cond_broadcast(&c->cv);
    while (frames > c->max_frames && c->done < want && !c->stop)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    return SQLITE_OK;
}

store_ckpt *store_ckpt_start(sqlite3 *writer, const char *path, int max_frames)
{
    store_ckpt *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK ||
        sqlite3_exec(c->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_close(c->db);
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&c->thread, NULL, ckpt_main, c) != 0) {
        sqlite3_close(c->db);
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return NULL;
    }
    c->writer = writer;
    c->max_frames = max_frames;
    sqlite3_wal_hook(writer, ckpt_hook, c); /* replaces the writer's autocheckpoint */
    return c;
}

void store_ckpt_stop(store_ckpt *c)
{
    if (!c)
        return;
    sqlite3_wal_hook(c->writer, NULL, NULL);
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    sqlite3_close(c->db);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
