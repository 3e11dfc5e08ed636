/*
 * The pruned BM25 index ([bm25-topk]): quarry's own postings beside FTS5, searched by MaxScore
 * (Turtle and Flood 1995). index/text.h has the contract. The index is five files, one idea each:
 *
 *   bm25.c          the handle: options, open, close, info, and the state every part shares;
 *   bm25_file.c     the generation file, built from store_each_text with FTS5's own tokenizer,
 *                   written under a temporary name and renamed, mapped read-only at open;
 *   bm25_build.c    building a generation (and the string map the other parts key terms by);
 *   bm25_catchup.c  the delta: chunks added since the generation, tokenised the same way into
 *                   in-memory lists whose rows follow the generation's (chunk ids only grow, so
 *                   row order stays chunk id order), tombstones for deleted rows, and the
 *                   per-principal bitsets over document keys, kept up to date from
 *                   store_docs_changed_since;
 *   bm25_search.c   MaxScore over (generation blocks, then delta) per term, the permission and
 *                   tombstone test before any scoring, a top-k heap with an optional
 *                   per-document limit.
 *
 * bm25_int.h holds what they share.
 *
 * Scores are FTS5's bm25() computed as FTS5 computes it (fts5_bm25_function in SQLite 3.40):
 * IDF log((N - n + 0.5) / (n + 0.5)) floored at 1e-6, k1 1.2, b 0.75, a term's frequency the sum
 * of its column weights added once per occurrence in column order, the row length summed over all
 * columns, the per-term values added in query order. N, the total length and every n are those
 * of the live rows, which are FTS5's rows, so the results are bit for bit store_search_bm25's.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/bm25_int.h"
#include "index/feed.h"
#include "index/files_int.h"
#include "index/text.h"

#define LOG_COMPONENT "bm25"

void bm25_opts_default(bm25_opts *o)
{
    o->delta_max = 50000;
    o->principal_cache = 1024;
}

void bm25_opts_from_config(const qr_config *cfg, bm25_opts *o)
{
    bm25_opts_default(o);
    o->delta_max = (size_t)qr_config_settings(cfg)->bm25_delta_max;
    o->principal_cache = (size_t)qr_config_settings(cfg)->bm25_principal_cache;
}

void bm25_unions_clear(bm25_index *x)
{
    for (size_t i = 0; i < x->nunions; i++) {
        for (size_t j = 0; j < x->unions[i].np; j++)
            free(x->unions[i].principals[j]);
        free(x->unions[i].principals);
        free(x->unions[i].bits);
        free(x->unions[i].groups);
        free(x->unions[i].rows);
    }
    x->nunions = 0;
}

void bm25_psets_clear(bm25_index *x)
{
    bm25_unions_clear(x);
    for (size_t i = 0; i < x->nps; i++) {
        free(x->ps[i].name);
        free(x->ps[i].bits);
    }
    free(x->ps);
    x->ps = NULL;
    x->nps = 0;
}

void bm25_dfcache_clear(bm25_index *x)
{
    bm25_smap_free(&x->df_terms);
    free(x->dfc);
    x->dfc = NULL;
    x->ndfc = 0;
}

/* Drops the generation and the delta (not the principal sets). */
void bm25_drop_state(bm25_index *x)
{
    if (x->map)
        munmap(x->map, x->map_len);
    x->map = NULL;
    x->map_len = 0;
    x->h = NULL;
    x->gen_ids = NULL;
    x->gen_docs = x->gen_lens = NULL;
    x->terms = NULL;
    x->strings = NULL;
    x->blocks = NULL;
    x->data = NULL;
    x->gen_rows = 0;
    free(x->d_ids);
    free(x->d_docs);
    free(x->d_lens);
    x->d_ids = NULL;
    x->d_docs = x->d_lens = NULL;
    x->d_rows = x->d_cap = 0;
    for (size_t i = 0; i < x->ndl; i++) {
        free(x->dl[i].rows);
        free(x->dl[i].tfp);
    }
    free(x->d_over);
    x->d_over = NULL;
    x->n_over = x->cap_over = 0;
    free(x->dl);
    x->dl = NULL;
    x->ndl = x->cap_dl = 0;
    bm25_smap_free(&x->d_terms);
    free(x->dead);
    x->dead = NULL;
    x->dead_words = 0;
    free(x->dead_gen);
    x->dead_gen = NULL;
    x->ndead_gen = x->cap_dead_gen = 0;
    x->ndead = 0;
    x->live_rows = x->live_len = 0;
    x->max_doc = 0;
    x->changes = 0;
    bm25_dfcache_clear(x);
}

void bm25_close(bm25_index *x)
{
    if (!x)
        return;
    bm25_drop_state(x);
    bm25_psets_clear(x);
    pthread_rwlock_destroy(&x->lock);
    pthread_mutex_destroy(&x->sync_mu);
    pthread_mutex_destroy(&x->build_mu);
    pthread_mutex_destroy(&x->cache_mu);
    free(x->dir);
    free(x);
}

qr_status bm25_open(store *s, const char *data_dir, const bm25_opts *o, bool force, bm25_index **out,
                    bm25_report *rep, char *err)
{
    if (!s || !data_dir || !o || !out)
        return qr_fail(err, QR_EINVAL, "bm25_open: NULL argument");
    *out = NULL;
    if (rep)
        memset(rep, 0, sizeof(*rep));
    bm25_index *x = calloc(1, sizeof(*x));
    if (!x)
        return qr_fail(err, QR_ENOMEM, "out of memory opening the BM25 index");
    x->o = *o;
    if (!x->o.principal_cache)
        x->o.principal_cache = 1;
    pthread_rwlock_init(&x->lock, NULL);
    pthread_mutex_init(&x->sync_mu, NULL);
    pthread_mutex_init(&x->build_mu, NULL);
    pthread_mutex_init(&x->cache_mu, NULL);
    size_t n = strlen(data_dir) + sizeof("/bm25");
    qr_status st = QR_OK;
    if (!(x->dir = malloc(n))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory opening the BM25 index");
        goto out;
    }
    snprintf(x->dir, n, "%s/bm25", data_dir);
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        st = qr_fail(err, QR_EIO, "cannot create '%s': %s", data_dir, strerror(errno));
        goto out;
    }
    if (mkdir(x->dir, 0700) != 0 && errno != EEXIST) {
        st = qr_fail(err, QR_EIO, "cannot create '%s': %s", x->dir, strerror(errno));
        goto out;
    }
    bm25_remove_leftovers(x->dir);
    if (!force) {
        char why[QR_ERR_LEN];
        int64_t uid = 0;
        qr_status ls = bm25_load_generation(x, why);
        if (ls && ls != QR_ENOTFOUND)
            qr_log(QR_LOG_WARN, LOG_COMPONENT, "%s", why);
        if (!ls && (st = store_uid(s, &uid, err)))
            goto out;
        if (!ls && x->h->store_uid != uid) {
            qr_log(QR_LOG_WARN, LOG_COMPONENT,
                   "the BM25 index under '%s' was built from another store: it will be rebuilt", x->dir);
            bm25_drop_state(x);
        }
    }
    char tmp[QR_ERR_LEN];
    st = bm25_sync(x, s, true, force, rep, err ? err : tmp);
out:
    if (st) {
        bm25_close(x);
        return st;
    }
    *out = x;
    return QR_OK;
}

void bm25_set_build_hook(bm25_index *x, void (*fn)(void *arg), void *arg)
{
    x->build_hook = fn;
    x->build_hook_arg = arg;
}

void bm25_get_info(bm25_index *x, bm25_info *out)
{
    memset(out, 0, sizeof(*out));
    if (!x)
        return;
    pthread_rwlock_rdlock(&x->lock);
    out->counter = x->counter;
    out->generation_counter = x->h ? x->h->counter : 0;
    out->rows = (size_t)x->live_rows;
    out->terms = x->h ? (size_t)x->h->nterms : 0;
    out->postings = x->h ? x->h->npostings : 0;
    out->delta_rows = x->d_rows;
    out->tombstones = x->ndead;
    out->file_bytes = x->map_len;
    out->blocks_decoded = __atomic_load_n(&x->blocks_decoded, __ATOMIC_RELAXED);
    out->blocks_skipped = __atomic_load_n(&x->blocks_skipped, __ATOMIC_RELAXED);
    uint64_t mem = x->d_cap * (8 + 4 + 4) + x->dead_words * 8 + x->cap_dead_gen * 4 +
                   x->cap_dl * sizeof(delta_list) + x->d_terms.cap * (sizeof(char *) + 4 + sizeof(size_t));
    for (size_t i = 0; i < x->ndl; i++)
        mem += x->dl[i].cap * 8;
    mem += x->cap_over * sizeof(x->d_over[0]);
    pthread_mutex_lock(&x->cache_mu);
    for (size_t i = 0; i < x->nps; i++)
        mem += x->ps[i].nwords * 8;
    for (size_t i = 0; i < x->nunions; i++) /* callers' unions: documents, row groups, rows */
        mem +=
            x->unions[i].nwords * 8 + (x->unions[i].ngroups + 1) * 4 + ((x->unions[i].nrows + 63) >> 6) * 8;
    out->principals_cached = x->nps;
    pthread_mutex_unlock(&x->cache_mu);
    out->memory_bytes = mem;
    pthread_rwlock_unlock(&x->lock);
}
