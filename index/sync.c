/*
 * Keeping the vector index in step with the store. The store is the truth: every chunk's vector
 * is kept there and every change is in its change log. The vector index under <data.dir>/vindex
 * is a derived copy that may lag (a process ingested while no index was open), be missing, or
 * belong to another state of the store (a restored backup). Opening it through here always ends
 * with an index that reflects the store's latest change: small lags are replayed from the change
 * log into the index's in-memory delta (vindex_remove, vindex_add), anything else -- no
 * generation yet, another dimension, a store whose counter went backwards, more changes than
 * vindex.delta_max -- builds a new generation from every stored vector.
 *
 * After a build the store learns the published generation (store_set_index_generation, shown by
 * `quarry stats`) and forgets the tombstones the generation folded in (store_prune_tombstones).
 *
 * A chunk whose stored vector cannot be indexed (all zero: a text with no word the embedder
 * knows, such as "x" or "!"; NaN or infinite values; another dimension than the store's) is never
 * an error here: catch-up, rebuild and GPU training all leave it out (vindex_skip,
 * vindex_build_skip), so that one document can never stop the index from following the store.
 * It stays searchable by BM25.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/feed.h"
#include "index/store.h"
#include "index/vector.h"

#define LOG_COMPONENT "index"
#define SYNC_BATCH    4096 /* vectors per vindex_build_add */

/* ---- replaying the change log ------------------------------------------------------------ */

/* The changes since the index's counter, collected before any is applied so that a lag too
 * large for the delta is found before the index is touched. */
typedef struct {
    size_t max; /* more changes than this: give up and rebuild */
    bool too_many;
    int dim;
    int64_t *del_ids, *del_counters;
    size_t ndel, del_cap;
    int64_t *add_ids, *add_counters;
    float *add_vecs;
    size_t nadd, add_cap;
    int64_t *skip_ids, *skip_counters; /* chunks without a usable vector */
    size_t nskip, skip_cap;
} replay;

static void replay_release(replay *r)
{
    free(r->del_ids);
    free(r->del_counters);
    free(r->add_ids);
    free(r->add_counters);
    free(r->add_vecs);
    free(r->skip_ids);
    free(r->skip_counters);
}

/* Appends (id, counter) to a pair of growing arrays. */
static qr_status push_pair(int64_t **ids, int64_t **counters, size_t *n, size_t *cap, int64_t id,
                           int64_t counter, char *err)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        int64_t *a = realloc(*ids, c * sizeof(**ids));
        if (a)
            *ids = a;
        int64_t *b = a ? realloc(*counters, c * sizeof(**counters)) : NULL;
        if (!b)
            return qr_fail(err, QR_ENOMEM, "out of memory replaying the store's changes");
        *counters = b;
        *cap = c;
    }
    (*ids)[*n] = id;
    (*counters)[(*n)++] = counter;
    return QR_OK;
}

/* True when the change's vector can be indexed (the store's dimension, finite, not zero). */
static bool change_usable(const store_change *c, int dim)
{
    return c->vector && c->dim == dim && vindex_vector_usable(c->vector, dim);
}

static qr_status collect_change(void *ctx, const store_change *c, char *err)
{
    replay *r = ctx;
    if (r->ndel + r->nadd + r->nskip >= r->max) {
        r->too_many = true;
        return QR_ELIMIT; /* stops the walk; not an error for the caller */
    }
    if (c->deleted)
        return push_pair(&r->del_ids, &r->del_counters, &r->ndel, &r->del_cap, c->chunk_id, c->counter, err);
    if (!change_usable(c, r->dim))
        return push_pair(&r->skip_ids, &r->skip_counters, &r->nskip, &r->skip_cap, c->chunk_id, c->counter,
                         err);
    if (r->nadd == r->add_cap) {
        size_t cap = r->add_cap ? r->add_cap * 2 : 256;
        int64_t *ids = realloc(r->add_ids, cap * sizeof(*ids));
        if (ids)
            r->add_ids = ids;
        int64_t *cs = ids ? realloc(r->add_counters, cap * sizeof(*cs)) : NULL;
        if (cs)
            r->add_counters = cs;
        float *vs = cs ? realloc(r->add_vecs, cap * (size_t)r->dim * sizeof(*vs)) : NULL;
        if (!vs)
            return qr_fail(err, QR_ENOMEM, "out of memory replaying the store's changes");
        r->add_vecs = vs;
        r->add_cap = cap;
    }
    r->add_ids[r->nadd] = c->chunk_id;
    r->add_counters[r->nadd] = c->counter;
    memcpy(r->add_vecs + r->nadd * (size_t)r->dim, c->vector, (size_t)r->dim * sizeof(float));
    r->nadd++;
    return QR_OK;
}

/* Applies the collected changes, one call per run of equal counters: each change reaches the
 * index with the counter of the store transaction that made it, which a later build relies on
 * to tell the changes it folded in from those it must carry over. */
static qr_status apply_replay(vindex *v, const replay *r, char *err)
{
    qr_status st = QR_OK;
    for (size_t i = 0; i < r->ndel && !st;) {
        size_t j = i;
        while (j < r->ndel && r->del_counters[j] == r->del_counters[i])
            j++;
        st = vindex_remove(v, r->del_ids + i, j - i, r->del_counters[i], err);
        i = j;
    }
    for (size_t i = 0; i < r->nadd && !st;) {
        size_t j = i;
        while (j < r->nadd && r->add_counters[j] == r->add_counters[i])
            j++;
        st = vindex_add(v, r->add_ids + i, r->add_vecs + i * (size_t)r->dim, j - i, r->dim,
                        r->add_counters[i], err);
        i = j;
    }
    for (size_t i = 0; i < r->nskip && !st;) {
        size_t j = i;
        while (j < r->nskip && r->skip_counters[j] == r->skip_counters[i])
            j++;
        st = vindex_skip(v, r->skip_ids + i, j - i, r->skip_counters[i], err);
        i = j;
    }
    return st;
}

/* ---- rebuilding -------------------------------------------------------------------------- */

typedef struct {
    vindex_builder *b;
    int dim;
    int64_t ids[SYNC_BATCH];
    float *vecs;
    size_t n;
    int64_t skip[SYNC_BATCH]; /* chunks without a usable vector */
    size_t nskip, skipped;
} rebuild;

static qr_status rebuild_flush(rebuild *r, char *err)
{
    qr_status st = r->n ? vindex_build_add(r->b, r->ids, r->vecs, r->n, r->dim, err) : QR_OK;
    if (!st && r->nskip)
        st = vindex_build_skip(r->b, r->skip, r->nskip, err);
    r->skipped += r->nskip;
    r->n = r->nskip = 0;
    return st;
}

static qr_status rebuild_row(void *ctx, const store_change *c, char *err)
{
    rebuild *r = ctx;
    if (!change_usable(c, r->dim)) {
        r->skip[r->nskip] = c->chunk_id;
        return ++r->nskip == SYNC_BATCH ? rebuild_flush(r, err) : QR_OK;
    }
    r->ids[r->n] = c->chunk_id;
    memcpy(r->vecs + r->n * (size_t)r->dim, c->vector, (size_t)r->dim * sizeof(float));
    return ++r->n == SYNC_BATCH ? rebuild_flush(r, err) : QR_OK;
}

/* Gathers every stored vector into one array, for GPU training. */
typedef struct {
    float *vecs;
    size_t n, cap;
    int dim;
} gather;

static qr_status gather_row(void *ctx, const store_change *c, char *err)
{
    gather *g = ctx;
    if (!change_usable(c, g->dim))
        return QR_OK; /* the build leaves it out, so training must not see it */
    if (g->n == g->cap)
        return qr_fail(err, QR_EIO, "the store gained vectors while they were read for GPU training");
    memcpy(g->vecs + g->n * (size_t)g->dim, c->vector, (size_t)g->dim * sizeof(float));
    g->n++;
    return QR_OK;
}

/* Trains IVF centroids on the GPU when the mode asks for it and the build will be an IVF (see
 * the GPU section of index/vector.h for what off, auto and on mean). *centroids stays NULL when the
 * build goes to FAISS's CPU k-means; with auto every GPU failure is a warning, with on an error. */
static qr_status gpu_centroids(store *s, const vindex_opts *o, index_gpu_mode mode, int dim,
                               float **centroids, size_t *nlist, index_sync_report *rep, char *err)
{
    *centroids = NULL;
    if (mode == INDEX_GPU_OFF)
        return QR_OK;
    char gerr[QR_ERR_LEN];
    store_stats ss;
    gather g = {.dim = dim};
    qr_status st = QR_OK;
    if (index_gpu_check(gerr)) {
        if (mode == INDEX_GPU_ON)
            return qr_fail(err, QR_EUNAVAILABLE, "--gpu on: %s", gerr);
        snprintf(rep->gpu_note, sizeof(rep->gpu_note), "built on the CPU: %.150s", gerr);
        return QR_OK;
    }
    if ((st = store_get_stats(s, &ss, err)))
        return st;
    if (!index_gpu_wants_centroids(o, (size_t)ss.chunks, nlist)) {
        snprintf(rep->gpu_note, sizeof(rep->gpu_note),
                 "a flat or HNSW index trains no centroids: GPU not used");
        return QR_OK;
    }
    g.cap = (size_t)ss.chunks;
    g.vecs = malloc(g.cap * (size_t)dim * sizeof(float));
    float *cent = malloc(*nlist * (size_t)dim * sizeof(float));
    if (!g.vecs || !cent) {
        st = qr_fail(err, QR_ENOMEM, "out of memory reading %zu vectors for GPU training", g.cap);
        goto out;
    }
    int64_t counter = 0;
    if ((st = store_each_vector(s, gather_row, &g, &counter, err)))
        goto out;
    /* chunks without a usable vector are not built: plan for the rows that are */
    if (!index_gpu_wants_centroids(o, g.n, nlist)) {
        snprintf(rep->gpu_note, sizeof(rep->gpu_note),
                 "a flat or HNSW index trains no centroids: GPU not used");
        goto out;
    }
    index_gpu_report report;
    st = index_gpu_train_centroids(g.vecs, g.n, dim, *nlist, 10, 1234, cent, &report, gerr);
    if (st && mode == INDEX_GPU_ON) {
        qr_fail(err, st, "GPU training failed: %s", gerr);
        goto out;
    }
    if (st) {
        qr_log(QR_LOG_WARN, LOG_COMPONENT, "GPU training failed, building on the CPU: %s", gerr);
        snprintf(rep->gpu_note, sizeof(rep->gpu_note), "GPU training failed, built on the CPU: %.120s", gerr);
        st = QR_OK;
        goto out;
    }
    snprintf(rep->gpu_note, sizeof(rep->gpu_note), "%zu centroids trained on %s in %.2f s (peak %zu MiB)",
             *nlist, report.device, report.seconds, report.peak_device_bytes >> 20);
    rep->gpu_trained = true;
    *centroids = cent;
    cent = NULL;
out:
    free(cent);
    free(g.vecs);
    return st;
}

/* Builds a generation from every stored vector and records it in the store. */
static qr_status rebuild_all(store *s, vindex *v, int dim, const vindex_opts *o, index_gpu_mode gpu,
                             index_sync_report *rep, char *err)
{
    rebuild r = {.dim = dim};
    int64_t counter = 0;
    float *centroids = NULL;
    size_t nlist = 0;
    qr_status st;
    if (!(r.vecs = malloc((size_t)SYNC_BATCH * (size_t)dim * sizeof(float))))
        return qr_fail(err, QR_ENOMEM, "out of memory rebuilding the vector index");
    if ((st = gpu_centroids(s, o, gpu, dim, &centroids, &nlist, rep, err)))
        goto out;
    vindex_centroids cent = {centroids, nlist, dim};
    if ((st = vindex_build_begin(v, centroids ? &cent : NULL, &r.b, err)))
        goto out;
    if ((st = store_each_vector(s, rebuild_row, &r, &counter, err)) || (st = rebuild_flush(&r, err))) {
        vindex_build_abort(r.b);
        goto out;
    }
    /* commit frees the builder, also on error */
    if ((st = vindex_build_commit(r.b, counter, err)))
        goto out;
    rep->skipped = r.skipped;
    if (r.skipped)
        qr_log(QR_LOG_WARN, LOG_COMPONENT,
               "%zu chunks have no usable vector (all zero, not finite or of another dimension): left out of "
               "vector search, BM25 still finds them",
               r.skipped);
    vindex_info info;
    vindex_get_info(v, &info);
    rep->rebuilt = true;
    rep->generation = info.generation;
    rep->count = info.count;
    snprintf(rep->type, sizeof(rep->type), "%s", info.type);
    if ((st = store_prune_tombstones(s, info.built_counter, err)))
        goto out;
    char gerr[QR_ERR_LEN];
    if (store_set_index_generation(s, (int64_t)info.generation, gerr))
        /* a vector index directory that was removed restarts its numbering: the index still
         * serves, only the number `quarry stats` shows is behind */
        qr_log(QR_LOG_WARN, LOG_COMPONENT, "cannot record vector index generation %llu in the store: %s",
               (unsigned long long)info.generation, gerr);
out:
    free(centroids);
    free(r.vecs);
    return st;
}

/* ---- serving before the first build ---------------------------------------------------------- */

typedef struct {
    vindex *v;
    int dim;
    int64_t ids[SYNC_BATCH];
    float *vecs;
    size_t n;
    int64_t skip[SYNC_BATCH]; /* chunks without a usable vector */
    size_t nskip;
    int64_t counter; /* the batch's latest change */
} exact_fill;

static qr_status exact_flush(exact_fill *f, char *err)
{
    qr_status st = f->n ? vindex_add(f->v, f->ids, f->vecs, f->n, f->dim, f->counter, err) : QR_OK;
    if (!st && f->nskip)
        st = vindex_skip(f->v, f->skip, f->nskip, f->counter, err);
    f->n = f->nskip = 0;
    f->counter = 0;
    return st;
}

static qr_status exact_row(void *ctx, const store_change *c, char *err)
{
    exact_fill *f = ctx;
    if (c->counter > f->counter)
        f->counter = c->counter;
    if (!change_usable(c, f->dim)) { /* left out and counted, as catch-up and builds do */
        f->skip[f->nskip] = c->chunk_id;
        return ++f->nskip == SYNC_BATCH ? exact_flush(f, err) : QR_OK;
    }
    f->ids[f->n] = c->chunk_id;
    memcpy(f->vecs + f->n * (size_t)f->dim, c->vector, (size_t)f->dim * sizeof(float));
    return ++f->n == SYNC_BATCH ? exact_flush(f, err) : QR_OK;
}

/* Puts every stored vector into v's exact delta (v has no generation): searches scan them all
 * exactly, slower than a built index but right, until index_sync builds one. The rows carry
 * counters no later than the walk's snapshot, which v's counter is then set to: a build folds
 * them all in, and the next catch-up starts after the snapshot. */
static qr_status fill_exact(store *s, vindex *v, int dim, index_sync_report *rep, char *err)
{
    exact_fill f = {.v = v, .dim = dim};
    int64_t counter = 0;
    if (!(f.vecs = malloc((size_t)SYNC_BATCH * (size_t)dim * sizeof(float))))
        return qr_fail(err, QR_ENOMEM, "out of memory reading the stored vectors");
    qr_status st = store_each_vector(s, exact_row, &f, &counter, err);
    if (!st)
        st = exact_flush(&f, err);
    if (!st)
        st = vindex_remove(v, NULL, 0, counter, err);
    free(f.vecs);
    if (!st) {
        vindex_info info;
        vindex_get_info(v, &info);
        rep->added = info.delta;
        rep->count = info.delta;
        rep->skipped = info.skipped;
        snprintf(rep->type, sizeof(rep->type), "exact delta");
    }
    return st;
}

/* ---- public ------------------------------------------------------------------------------ */

static qr_status sync_impl(store *s, vindex *v, const vindex_opts *o, bool force, index_gpu_mode gpu,
                           index_sync_report *rep, char *err)
{
    if (!s || !v || !o)
        return qr_fail(err, QR_EINVAL, "index_sync: NULL argument");
    index_sync_report scratch;
    if (!rep)
        rep = &scratch;
    memset(rep, 0, sizeof(*rep));
    store_stats ss;
    vindex_info info;
    replay r = {0};
    qr_status st = store_get_heads(s, &ss, err);
    if (st)
        return st;
    if (ss.embedding_dim <= 0)
        return qr_fail(err, QR_EINVAL, "the store holds no vectors yet: ingest documents first");
    vindex_get_info(v, &info);
    bool build = force || info.generation == 0 || info.dim != ss.embedding_dim ||
                 info.store_counter > ss.change_counter;
    if (!build && info.store_counter < ss.change_counter) {
        r.max = o->delta_max;
        r.dim = ss.embedding_dim;
        int64_t now = 0;
        st = store_changes_since(s, info.store_counter, collect_change, &r, &now, err);
        if (st == QR_ELIMIT && r.too_many) {
            build = true;
            st = QR_OK;
        } else if (!st) {
            if ((st = apply_replay(v, &r, err)))
                goto out;
            /* changes that touched no chunk (ACLs, titles) still move the index's counter */
            if ((st = vindex_remove(v, NULL, 0, now, err)))
                goto out;
            rep->added = r.nadd;
            rep->removed = r.ndel;
            rep->skipped = r.nskip;
            if (r.nskip)
                qr_log(
                    QR_LOG_WARN, LOG_COMPONENT,
                    "%zu new chunks (chunk %lld%s) have no usable vector (all zero, not finite or of another "
                    "dimension): left out of vector search, BM25 still finds them",
                    r.nskip, (long long)r.skip_ids[0], r.nskip > 1 ? " and others" : "");
            build = vindex_needs_rebuild(v);
        }
        if (st)
            goto out;
    }
    if (build) {
        if ((st = rebuild_all(s, v, ss.embedding_dim, o, gpu, rep, err)))
            goto out;
        qr_log(QR_LOG_INFO, LOG_COMPONENT,
               "vector index rebuilt from the store: generation %llu, %s, %zu vectors",
               (unsigned long long)rep->generation, rep->type, rep->count);
    } else {
        vindex_get_info(v, &info);
        rep->generation = info.generation;
        rep->count = info.count;
        snprintf(rep->type, sizeof(rep->type), "%s", info.type);
        if (rep->added || rep->removed || rep->skipped)
            qr_log(
                QR_LOG_INFO, LOG_COMPONENT,
                "vector index caught up with the store: %zu added, %zu removed, %zu without a usable vector",
                rep->added, rep->removed, rep->skipped);
    }
out:
    replay_release(&r);
    return st;
}

qr_status index_sync(store *s, vindex *v, const vindex_opts *o, bool force, index_sync_report *rep, char *err)
{
    return sync_impl(s, v, o, force, INDEX_GPU_OFF, rep, err);
}

/* ---- the rows the index reads: the store's vectors file ---------------------------------- */

/* The vector index reads its exact scores from the store's own rows (vindex_open_rows), so
 * the data directory keeps one float copy. The file is opened when first needed: a store with
 * no chunk yet has none. The index owns this and releases it when it closes. */
typedef struct {
    pthread_mutex_t mu;
    char *data_dir;
    int dim;
    int64_t uid;
    store_vectors *file;
} store_rows;

static qr_status store_rows_map(void *ctx, int64_t max_id, const float **base, char *err)
{
    store_rows *r = ctx;
    qr_status st = QR_OK;
    pthread_mutex_lock(&r->mu);
    if (!r->file && (st = store_vectors_open(r->data_dir, &r->file, err)) == QR_ENOTFOUND)
        st = qr_fail(err, QR_EIO,
                     "the vector index needs chunk vectors, and the store under '%s' has no vectors file",
                     r->data_dir);
    if (!st && (store_vectors_dim(r->file) != r->dim || store_vectors_uid(r->file) != r->uid))
        st = qr_fail(
            err, QR_EIO,
            "the vectors file under '%s' is not the store's (dimension %d, uid %lld; the store's: %d, "
            "%lld)",
            r->data_dir, store_vectors_dim(r->file), (long long)store_vectors_uid(r->file), r->dim,
            (long long)r->uid);
    pthread_mutex_unlock(&r->mu);
    return st ? st : store_vectors_map(r->file, max_id, base, err);
}

static void store_rows_release(void *ctx)
{
    store_rows *r = ctx;
    if (!r)
        return;
    store_vectors_close(r->file);
    pthread_mutex_destroy(&r->mu);
    free(r->data_dir);
    free(r);
}

static qr_status store_rows_new(store *s, const char *data_dir, int dim, vindex_rows *out, char *err)
{
    int64_t uid = 0;
    qr_status st = store_uid(s, &uid, err);
    if (st)
        return st;
    store_rows *r = calloc(1, sizeof(*r));
    if (!r || !(r->data_dir = strdup(data_dir))) {
        free(r);
        return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&r->mu, NULL);
    r->dim = dim;
    r->uid = uid;
    *out = (vindex_rows){.map = store_rows_map, .release = store_rows_release, .ctx = r, .uid = uid};
    return QR_OK;
}

/* serve: open for serving at once (index_open_serving) instead of syncing first */
static qr_status open_impl(store *s, const char *data_dir, const vindex_opts *o, bool force, bool serve,
                           index_gpu_mode gpu, vindex **out, index_sync_report *rep, char *err)
{
    if (!s || !data_dir || !o || !out)
        return qr_fail(err, QR_EINVAL, "index_sync_open: NULL argument");
    *out = NULL;
    index_sync_report scratch;
    if (!rep)
        rep = &scratch;
    memset(rep, 0, sizeof(*rep));
    store_stats ss;
    qr_status st = store_get_heads(s, &ss, err);
    if (st || ss.embedding_dim <= 0)
        return st; /* nothing embedded yet: no index to open */
    size_t n = strlen(data_dir) + sizeof("/vindex");
    char *dir = malloc(n);
    if (!dir)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    snprintf(dir, n, "%s/vindex", data_dir);
    /* a forced build replaces whatever is there, stale or damaged */
    vindex_opts opts = *o;
    if (force)
        opts.rebuild_on_mismatch = true;
    vindex *v = NULL;
    bool stale = false;
    vindex_rows rows;
    if ((st = store_rows_new(s, data_dir, ss.embedding_dim, &rows, err))) {
        free(dir);
        return st;
    }
    st = vindex_open_rows(dir, ss.embedding_dim, &opts, &rows, ss.change_counter, &v, &stale, err);
    if (st)
        store_rows_release(rows.ctx); /* a failed open leaves it to us */
    else {
        vindex_info info;
        vindex_get_info(v, &info);
        if (!serve)
            st = sync_impl(s, v, &opts, force, gpu, rep, err);
        else if (info.generation == 0 && info.delta == 0)
            st = fill_exact(s, v, ss.embedding_dim, rep, err);
    }
    free(dir);
    if (st) {
        vindex_close(v);
        return st;
    }
    *out = v;
    return QR_OK;
}

qr_status index_sync_open(store *s, const char *data_dir, const vindex_opts *o, bool force, vindex **out,
                          index_sync_report *rep, char *err)
{
    return open_impl(s, data_dir, o, force, false, INDEX_GPU_OFF, out, rep, err);
}

qr_status index_open_serving(store *s, const char *data_dir, const vindex_opts *o, vindex **out,
                             index_sync_report *rep, char *err)
{
    return open_impl(s, data_dir, o, false, true, INDEX_GPU_OFF, out, rep, err);
}

qr_status index_build_open(store *s, const char *data_dir, const vindex_opts *o, index_gpu_mode gpu,
                           vindex **out, index_sync_report *rep, char *err)
{
    return open_impl(s, data_dir, o, true, false, gpu, out, rep, err);
}
