/*
 * vindex_build: building a generation of the vector index. A builder collects (chunk id, vector)
 * pairs, sorts them by id, trains and fills the FAISS index the size calls for (vindex_plan.c
 * chooses the type and the number of IVF lists), writes the generation's files under temporary
 * names, syncs and renames them, and commits by renaming MANIFEST last, with core's atomic file
 * steps (core/file.c: the fsync policy every quarry file follows); then it swaps the new snapshot
 * in for searches, carrying over the delta rows and tombstones made after the build's store
 * counter. Searches never wait for a build: they read the snapshot they hold.
 *
 * Also here: the CPU k-means that is the reference for the GPU build path (vindex_int.h).
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <errno.h>
#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVFFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/IndexScalarQuantizer_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/files_int.h"
#include "index/vector.h"
#include "index/vindex_impl.h"
#include "index/vindex_int.h"

#define LOG_COMPONENT "index"
#define SOURCE_BATCH  4096 /* rows per source pull in vindex_build */
#define TRAIN_SEED    0x71756172727956ull

/* PQ sub-quantizers for ivf_pq: 2 dimensions per 4-bit code, 1 for odd dimensions. Coarser
 * codes lose more than the re-ranking wins back (100k vectors, nprobe 128, depth 10: recall@10
 * 0.58 with 4 dimensions per code, 0.81 with 2). */
static int pq_subquantizers(int dim)
{
    return dim % 2 == 0 ? dim / 2 : dim;
}

static vindex_test_hook_fn test_hook;
static void *test_hook_arg;

void vindex_test_set_hook(vindex_test_hook_fn fn, void *arg)
{
    test_hook = fn;
    test_hook_arg = arg;
}

void vindex_hook(const char *stage)
{
    if (test_hook)
        test_hook(stage, test_hook_arg);
}

struct vindex_builder {
    vindex *v;
    int64_t *ids;
    float *rows;
    size_t n, cap;
    int64_t *skip; /* chunks without a usable vector (vindex_build_skip) */
    size_t nskip, skip_cap;
    bool ascending;
    float *centroids;
    size_t nlist;
};

/* ---- building -------------------------------------------------------------------------------- */

qr_status vindex_build_begin(vindex *v, const vindex_centroids *c, vindex_builder **out, char *err)
{
    if (out)
        *out = NULL;
    if (!v || !out)
        return qr_fail(err, QR_EINVAL, "vindex_build_begin: missing argument");
    if (c) {
        if (c->dim != v->dim || !c->data || c->nlist == 0)
            return qr_fail(err, QR_EINVAL, "centroids must be 1 or more rows of %d floats (got %zu of %d)",
                           v->dim, c->nlist, c->dim);
        if (c->nlist > (SIZE_MAX / sizeof(float)) / (size_t)v->dim)
            return qr_fail(err, QR_ELIMIT, "too many centroids");
    }
    vindex_builder *b = calloc(1, sizeof(*b));
    if (!b)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    b->v = v;
    b->ascending = true;
    if (c) {
        b->centroids = malloc(c->nlist * (size_t)v->dim * sizeof(float));
        if (!b->centroids) {
            free(b);
            return qr_fail(err, QR_ENOMEM, "out of memory for %zu centroids", c->nlist);
        }
        for (size_t i = 0; i < c->nlist; i++) {
            if (!vindex_normalize_row(c->data + i * (size_t)v->dim, b->centroids + i * (size_t)v->dim,
                                      v->dim)) {
                free(b->centroids);
                free(b);
                return qr_fail(err, QR_EINVAL, "centroid %zu is zero or not finite", i);
            }
        }
        b->nlist = c->nlist;
    }
    if (pthread_mutex_trylock(&v->build_lock) != 0) {
        free(b->centroids);
        free(b);
        return qr_fail(err, QR_EEXIST, "a build of vector index '%s' is already running", v->dir);
    }
    *out = b;
    return QR_OK;
}

void vindex_build_abort(vindex_builder *b)
{
    if (!b)
        return;
    pthread_mutex_unlock(&b->v->build_lock);
    free(b->ids);
    free(b->rows);
    free(b->skip);
    free(b->centroids);
    free(b);
}

qr_status vindex_build_add(vindex_builder *b, const int64_t *ids, const float *vecs, size_t n, int dim,
                           char *err)
{
    if (!b || (n && (!ids || !vecs)))
        return qr_fail(err, QR_EINVAL, "vindex_build_add: missing argument");
    int d = b->v->dim;
    if (dim != d)
        return qr_fail(err, QR_EINVAL, "vector dimension %d does not match the index's %d", dim, d);
    if (n == 0)
        return QR_OK;
    if (n > SIZE_MAX / 2 - b->n)
        return qr_fail(err, QR_ELIMIT, "too many vectors");
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        if (cap > (SIZE_MAX / sizeof(float)) / (size_t)d)
            return qr_fail(err, QR_ELIMIT, "too many vectors");
        int64_t *nids = realloc(b->ids, cap * sizeof(int64_t));
        if (nids)
            b->ids = nids;
        float *nrows = nids ? realloc(b->rows, cap * (size_t)d * sizeof(float)) : NULL;
        if (!nids || !nrows)
            return qr_fail(err, QR_ENOMEM, "out of memory for %zu vectors", cap);
        b->rows = nrows;
        b->cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0)
            return qr_fail(err, QR_EINVAL, "chunk id %" PRId64 " is negative", ids[i]);
        if (!vindex_normalize_row(vecs + i * (size_t)d, b->rows + (b->n + i) * (size_t)d, d))
            return qr_fail(err, QR_EINVAL, "vector of chunk %" PRId64 " is zero or not finite", ids[i]);
    }
    bool asc = b->ascending;
    int64_t prev = b->n ? b->ids[b->n - 1] : -1;
    for (size_t i = 0; i < n && asc; i++) {
        asc = prev < ids[i];
        prev = ids[i];
    }
    memcpy(b->ids + b->n, ids, n * sizeof(int64_t));
    b->n += n;
    b->ascending = asc;
    return QR_OK;
}

qr_status vindex_build_skip(vindex_builder *b, const int64_t *ids, size_t n, char *err)
{
    if (!b || (n && !ids))
        return qr_fail(err, QR_EINVAL, "vindex_build_skip: missing argument");
    if (n == 0)
        return QR_OK;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0)
            return qr_fail(err, QR_EINVAL, "chunk id %" PRId64 " is negative", ids[i]);
    if (n > SIZE_MAX / sizeof(int64_t) / 2 - b->nskip)
        return qr_fail(err, QR_ELIMIT, "too many chunks without a vector");
    if (b->nskip + n > b->skip_cap) {
        size_t cap = b->skip_cap ? b->skip_cap : 64;
        while (cap < b->nskip + n)
            cap *= 2;
        int64_t *grown = realloc(b->skip, cap * sizeof(int64_t));
        if (!grown)
            return qr_fail(err, QR_ENOMEM, "out of memory for %zu chunks without a vector", cap);
        b->skip = grown;
        b->skip_cap = cap;
    }
    memcpy(b->skip + b->nskip, ids, n * sizeof(int64_t));
    b->nskip += n;
    return QR_OK;
}

/* Sorts the skipped ids and checks that none is twice or also among the rows (sorted first). */
static qr_status check_skipped(vindex_builder *b, char *err)
{
    if (b->nskip == 0)
        return QR_OK;
    qsort(b->skip, b->nskip, sizeof(int64_t), vindex_cmp_i64);
    for (size_t i = 0; i < b->nskip; i++) {
        int64_t id = b->skip[i];
        if ((i && id == b->skip[i - 1]) ||
            (b->n && bsearch(&id, b->ids, b->n, sizeof(int64_t), vindex_cmp_i64)))
            return qr_fail(err, QR_EINVAL, "chunk id %" PRId64 " appears twice in the build input", id);
    }
    return QR_OK;
}

static int cmp_perm_ids(const void *a, const void *b, void *ctx)
{
    const int64_t *ids = ctx;
    int64_t x = ids[*(const size_t *)a], y = ids[*(const size_t *)b];
    return x < y ? -1 : x > y;
}

/* Sorts the builder's rows by chunk id in place (cycle-following with one spare row), so the
 * vectors file can be written without a second copy of a million rows. */
static qr_status builder_sort(vindex_builder *b, char *err)
{
    if (b->ascending)
        return QR_OK;
    int d = b->v->dim;
    size_t *perm = malloc(b->n * sizeof(size_t));
    float *spare = malloc((size_t)d * sizeof(float));
    if (!perm || !spare) {
        free(perm);
        free(spare);
        return qr_fail(err, QR_ENOMEM, "out of memory sorting %zu vectors", b->n);
    }
    for (size_t i = 0; i < b->n; i++)
        perm[i] = i;
    qsort_r(perm, b->n, sizeof(size_t), cmp_perm_ids, b->ids);
    /* position i receives the row at perm[i]; SIZE_MAX marks a finished position */
    for (size_t i = 0; i < b->n; i++) {
        if (perm[i] == SIZE_MAX || perm[i] == i) {
            perm[i] = SIZE_MAX;
            continue;
        }
        int64_t id0 = b->ids[i];
        memcpy(spare, b->rows + i * (size_t)d, (size_t)d * sizeof(float));
        size_t j = i;
        while (perm[j] != i) {
            size_t from = perm[j];
            b->ids[j] = b->ids[from];
            memcpy(b->rows + j * (size_t)d, b->rows + from * (size_t)d, (size_t)d * sizeof(float));
            perm[j] = SIZE_MAX;
            j = from;
        }
        b->ids[j] = id0;
        memcpy(b->rows + j * (size_t)d, spare, (size_t)d * sizeof(float));
        perm[j] = SIZE_MAX;
    }
    free(perm);
    free(spare);
    b->ascending = true;
    return QR_OK;
}

static vtype choose_type(const vindex *v, size_t n)
{
    return vindex_choose_type(v->type, &v->opts, n);
}

/* A deterministic training sample: ntrain distinct rows chosen by a seeded partial shuffle. */
static float *training_sample(const vindex_builder *b, size_t ntrain)
{
    int d = b->v->dim;
    float *x = malloc(ntrain * (size_t)d * sizeof(float));
    size_t *idx = malloc(b->n * sizeof(size_t));
    if (!x || !idx) {
        free(x);
        free(idx);
        return NULL;
    }
    for (size_t i = 0; i < b->n; i++)
        idx[i] = i;
    uint64_t state = TRAIN_SEED;
    for (size_t i = 0; i < ntrain; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        size_t j = i + (size_t)((state >> 33) % (b->n - i));
        size_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        memcpy(x + i * (size_t)d, b->rows + idx[i] * (size_t)d, (size_t)d * sizeof(float));
    }
    free(idx);
    return x;
}

/* Builds the FAISS index of a sorted builder. */
static qr_status build_faiss(vindex_builder *b, vtype type, FaissIndex **out, size_t *nlist_out, char *err)
{
    qr_status st = QR_OK;
    int d = b->v->dim;
    FaissIndex *index = NULL;
    FaissIndexFlatIP *quantizer = NULL;
    float *sample = NULL;
    size_t nlist = 0;
    *out = NULL;
    if (type == VT_FLAT || type == VT_HNSW) {
        if (faiss_index_factory(&index, d, type == VT_FLAT ? "IDMap,Flat" : "IDMap,HNSW32",
                                METRIC_INNER_PRODUCT) != 0) {
            st = vindex_faiss_fail(err, "cannot create the FAISS index");
            goto out;
        }
    } else {
        nlist = b->centroids ? b->nlist : vindex_choose_nlist(&b->v->opts, b->n);
        int rc;
        if (type == VT_IVF_PQ) {
            /* the fast-scan PQ index has no C constructor: the factory makes it with its own
             * quantizer, which takes the centroids instead */
            char desc[64];
            snprintf(desc, sizeof(desc), "IVF%zu,PQ%dx4fs", nlist, pq_subquantizers(d));
            rc = faiss_index_factory(&index, d, desc, METRIC_INNER_PRODUCT);
            if (rc == 0 && b->centroids)
                rc = faiss_Index_add(faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(index)), (idx_t)nlist,
                                     b->centroids);
        } else {
            /* centroids from elsewhere fill the quantizer; FAISS then counts the IVF as trained
             * (nlist vectors in a trained quantizer) and skips its own k-means */
            rc = faiss_IndexFlatIP_new_with(&quantizer, d);
            if (rc == 0 && b->centroids)
                rc = faiss_Index_add(quantizer, (idx_t)nlist, b->centroids);
            if (rc == 0 && type == VT_IVF_FLAT)
                rc = faiss_IndexIVFFlat_new_with_metric((FaissIndexIVFFlat **)&index, quantizer, (size_t)d,
                                                        nlist, METRIC_INNER_PRODUCT);
            else if (rc == 0)
                rc = faiss_IndexIVFScalarQuantizer_new_with_metric((FaissIndexIVFScalarQuantizer **)&index,
                                                                   quantizer, (size_t)d, nlist, QT_8bit,
                                                                   METRIC_INNER_PRODUCT, 1);
            if (rc == 0) {
                faiss_IndexIVF_set_own_fields(faiss_IndexIVF_cast(index), 1);
                quantizer = NULL;
            }
        }
        if (rc != 0) {
            st = vindex_faiss_fail(err, "cannot create the IVF index");
            goto out;
        }
        /* SQ8 and PQ train their codes even when the centroids came from elsewhere; with a full
         * quantizer the training skips k-means (IndexIVF::train checks ntotal == nlist) */
        if (!faiss_Index_is_trained(index) || type != VT_IVF_FLAT) {
            size_t ntrain = b->v->opts.train_per_list * nlist;
            if (ntrain > b->n)
                ntrain = b->n;
            sample = training_sample(b, ntrain);
            if (!sample) {
                st = qr_fail(err, QR_ENOMEM, "out of memory for the training sample");
                goto out;
            }
            if (faiss_Index_train(index, (idx_t)ntrain, sample) != 0) {
                st = vindex_faiss_fail(err, "cannot train the IVF index");
                goto out;
            }
        }
    }
    if (b->n && faiss_Index_add_with_ids(index, (idx_t)b->n, b->rows, b->ids) != 0) {
        st = vindex_faiss_fail(err, "cannot add vectors to the FAISS index");
        goto out;
    }
    if ((st = vindex_apply_search_params(index, type, &b->v->opts, err)))
        goto out;
    *out = index;
    *nlist_out = nlist;
    index = NULL;
out:
    if (quantizer)
        faiss_Index_free(quantizer);
    if (index)
        faiss_Index_free(index);
    free(sample);
    return st;
}

/* Moves the changes made after `counter` from the old snapshot into the new one (under the write
 * lock, so no change can slip between). Delta rows the new main index already holds are dropped:
 * the store snapshot had them. */
static qr_status carry_over(vsnap *old, vsnap *s, int64_t counter, char *err)
{
    qr_status st = QR_OK;
    int d = s->dim;
    pthread_rwlock_rdlock(&old->lock);
    size_t keep = 0;
    for (size_t i = 0; i < old->d_n; i++)
        if (old->d_counter[i] > counter && vindex_main_find(s, old->d_ids[i]) < 0)
            keep++;
    size_t keep_skip = 0;
    for (size_t i = 0; i < old->skip.cap; i++)
        if (old->skip.keys[i] != -1 && old->skip.vals[i] > counter &&
            vindex_main_find(s, old->skip.keys[i]) < 0)
            keep_skip++;
    if (old->dim != d && (keep || keep_skip || old->tomb.n)) {
        st =
            qr_fail(err, QR_EINVAL, "changes of another dimension cannot be carried into the new generation");
        goto out;
    }
    if (keep) {
        s->d_ids = malloc(keep * sizeof(int64_t));
        s->d_counter = malloc(keep * sizeof(int64_t));
        s->d_rows = malloc(keep * (size_t)d * sizeof(float));
        if (!s->d_ids || !s->d_counter || !s->d_rows || vindex_idmap_reserve(&s->d_pos, keep)) {
            st = qr_fail(err, QR_ENOMEM, "out of memory carrying the delta over");
            goto out;
        }
        s->d_cap = keep;
        for (size_t i = 0; i < old->d_n; i++) {
            if (old->d_counter[i] <= counter || vindex_main_find(s, old->d_ids[i]) >= 0)
                continue;
            s->d_ids[s->d_n] = old->d_ids[i];
            s->d_counter[s->d_n] = old->d_counter[i];
            memcpy(s->d_rows + s->d_n * (size_t)d, old->d_rows + i * (size_t)d, (size_t)d * sizeof(float));
            vindex_idmap_put(&s->d_pos, old->d_ids[i], (int64_t)s->d_n);
            s->d_n++;
        }
    }
    if (keep_skip) {
        if (vindex_idmap_reserve(&s->skip, keep_skip)) {
            st = qr_fail(err, QR_ENOMEM, "out of memory carrying the skipped chunks over");
            goto out;
        }
        for (size_t i = 0; i < old->skip.cap; i++) {
            int64_t id = old->skip.keys[i];
            if (id != -1 && old->skip.vals[i] > counter && vindex_main_find(s, id) < 0)
                vindex_idmap_put(&s->skip, id, old->skip.vals[i]);
        }
    }
    if (old->tomb.n) {
        if (vindex_idmap_reserve(&s->tomb, old->tomb.n)) {
            st = qr_fail(err, QR_ENOMEM, "out of memory carrying the tombstones over");
            goto out;
        }
        for (size_t i = 0; i < old->tomb.cap; i++) {
            int64_t id = old->tomb.keys[i];
            if (id == -1 || old->tomb.vals[i] <= counter)
                continue;
            bool skipped = vindex_idmap_get(&s->skip, id, NULL);
            if ((vindex_main_find(s, id) >= 0 || vindex_idmap_get(&s->d_pos, id, NULL) || skipped) &&
                !vindex_idmap_get(&s->tomb, id, NULL)) {
                vindex_idmap_put(&s->tomb, id, old->tomb.vals[i]);
                s->skip_removed += skipped;
            }
        }
    }
    s->store_counter = old->store_counter > counter ? old->store_counter : counter;
out:
    pthread_rwlock_unlock(&old->lock);
    return st;
}

qr_status vindex_build_commit(vindex_builder *b, int64_t store_counter, char *err)
{
    qr_status st = QR_OK;
    if (!b)
        return qr_fail(err, QR_EINVAL, "vindex_build_commit: missing builder");
    vindex *v = b->v;
    int d = v->dim;
    FaissIndex *index = NULL;
    vsnap *s = NULL, *old = NULL;
    char iname[64], vname[64], sname[64];
    char *ipath = NULL, *vpath = NULL, *itmp = NULL, *vtmp = NULL, *mpath = NULL, *mtmp = NULL;
    char *spath = NULL, *stmp = NULL;
    bool write_locked = false, files_made = false;
    qr_buf mtext;
    qr_buf_init(&mtext, MANIFEST_MAX);
    uint64_t t0 = qr_now_ns();

    if ((st = builder_sort(b, err)))
        goto out;
    for (size_t i = 1; i < b->n; i++) {
        if (b->ids[i] == b->ids[i - 1]) {
            st = qr_fail(err, QR_EINVAL, "chunk id %" PRId64 " appears twice in the build input", b->ids[i]);
            goto out;
        }
    }
    if ((st = check_skipped(b, err)))
        goto out;
    vtype type = choose_type(v, b->n);
    size_t nlist = 0;
    if ((st = build_faiss(b, type, &index, &nlist, err)))
        goto out;

    uint64_t gen = __atomic_fetch_add(&v->next_gen, 1, __ATOMIC_RELAXED);
    vindex_gen_name(iname, sizeof(iname), gen, "faiss");
    vindex_gen_name(vname, sizeof(vname), gen, "vec");
    vindex_gen_name(sname, sizeof(sname), gen, "skip");
    ipath = vindex_path_join(v->dir, iname);
    vpath = vindex_path_join(v->dir, vname);
    if (b->nskip) {
        spath = vindex_path_join(v->dir, sname);
        stmp = spath ? malloc(strlen(spath) + 5) : NULL;
        if (!stmp) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        sprintf(stmp, "%s.tmp", spath);
    }
    mpath = vindex_path_join(v->dir, MANIFEST_NAME);
    mtmp = vindex_path_join(v->dir, MANIFEST_TMP);
    if (ipath && vpath) {
        itmp = malloc(strlen(ipath) + 5);
        vtmp = malloc(strlen(vpath) + 5);
    }
    if (!itmp || !vtmp || !mpath || !mtmp) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    sprintf(itmp, "%s.tmp", ipath);
    sprintf(vtmp, "%s.tmp", vpath);

    manifest m = {.generation = gen,
                  .type = type,
                  .dim = d,
                  .count = b->n,
                  .nlist = nlist,
                  .store_counter = store_counter,
                  .skipped = b->nskip,
                  .external = v->external,
                  .rows_uid = v->external ? v->rows.uid : 0};
    files_made = true;
    if (faiss_write_index_fname(index, itmp) != 0) {
        st = vindex_faiss_fail(err, "cannot write the FAISS index");
        st = QR_EIO;
        goto out;
    }
    if ((st = qr_fsync_path(itmp, false, err)) ||
        (st = vindex_hash_file(itmp, &m.index_size, &m.index_hash, err)))
        goto out;
    /* in rows mode the file holds the ids only: the provider has the rows */
    if ((st = vindex_vec_write(vtmp, d, b->ids, b->rows, b->n, v->external, &m.vectors_size, &m.vectors_hash,
                               err)))
        goto out;
    if (b->nskip && (st = vindex_skip_write(stmp, b->skip, b->nskip, &m.skip_size, &m.skip_hash, err)))
        goto out;
    /* the files synced, renamed, then one sync of the directory: core's sequence (core/file.c) */
    if ((st = qr_file_rename(itmp, ipath, true, err)) || (st = qr_file_rename(vtmp, vpath, true, err)) ||
        (b->nskip && (st = qr_file_rename(stmp, spath, true, err))) || (st = qr_fsync_dir_of(ipath, err)))
        goto out;
    vindex_hook("files_written");

    s = vindex_snap_new(d);
    if (!s) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    if ((st = vindex_vec_map(s, vpath, &m, false, err)) || (st = vindex_rows_attach(v, s, err)))
        goto out;
    s->index = index;
    index = NULL;
    s->generation = gen;
    s->type = type;
    s->nlist = nlist;
    s->built_counter = store_counter;
    s->store_counter = store_counter;
    if (b->nskip && vindex_idmap_reserve(&s->skip, b->nskip)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < b->nskip; i++)
        vindex_idmap_put(&s->skip, b->skip[i], store_counter);
    /* the builder's copy of the rows is no longer needed: the mapped file (or the provider) has
     * them */
    free(b->rows);
    b->rows = NULL;

    /* the int8 codes read now, before the snapshot is served (no lock is held) */
    vindex_layout_warm(&v->opts, s);

    vindex_hook("before_commit");
    pthread_mutex_lock(&v->write_lock);
    write_locked = true;
    old = v->cur;
    if ((st = carry_over(old, s, store_counter, err)))
        goto out;
    if ((st = vindex_manifest_format(&m, &mtext))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory formatting the manifest");
        goto out;
    }
    int fd = open(mtmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        st = qr_fail(err, QR_EIO, "cannot create '%s': %s", mtmp, strerror(errno));
        goto out;
    }
    /* qr_file_finish's steps one by one (a test stops between the sync and the rename), under
     * the fixed name MANIFEST.tmp that open and build clean up */
    if ((st = qr_write_all(fd, qr_buf_str(&mtext), qr_buf_len(&mtext), mtmp, err))) {
        close(fd);
        goto out;
    }
    if ((st = qr_file_sync_close(fd, mtmp, err)))
        goto out;
    vindex_hook("manifest_written");
    /* the commit point: before this rename the old generation is the one on disk */
    if ((st = qr_file_rename(mtmp, mpath, true, err)))
        goto out;
    files_made = false;
    /* committed: a failed directory sync cannot be undone, only reported */
    if (qr_fsync_dir_of(mpath, NULL) != QR_OK)
        qr_log(QR_LOG_WARN, LOG_COMPONENT, "cannot sync directory '%s' after publishing generation %" PRIu64,
               v->dir, gen);
    vindex_hook("published");
    pthread_mutex_lock(&v->snap_lock);
    v->cur = s;
    pthread_mutex_unlock(&v->snap_lock);
    s = NULL;
    pthread_mutex_unlock(&v->write_lock);
    write_locked = false;
    vindex_snap_release(v, old); /* searches still holding it keep its index and mapping alive */
    vindex_remove_leftovers(v->dir, gen);
    qr_log(QR_LOG_INFO, LOG_COMPONENT,
           "published vector index generation %" PRIu64 ": %s, %zu vectors, %zu chunks without a usable "
           "vector left out, %.1f s",
           gen, vindex_type_names[type], b->n, b->nskip, (double)(qr_now_ns() - t0) / 1e9);
out:
    if (write_locked)
        pthread_mutex_unlock(&v->write_lock);
    if (files_made) {
        /* nothing was committed: the old generation stays; remove what this build wrote */
        const char *paths[] = {itmp, vtmp, stmp, ipath, vpath, spath, mtmp};
        for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
            if (paths[i])
                unlink(paths[i]);
    }
    if (index)
        faiss_Index_free(index);
    vindex_snap_free(s);
    qr_buf_release(&mtext);
    free(ipath);
    free(vpath);
    free(itmp);
    free(vtmp);
    free(mpath);
    free(mtmp);
    free(spath);
    free(stmp);
    vindex_build_abort(b);
    return st;
}

qr_status vindex_build(vindex *v, vindex_source_fn src, void *ctx, int64_t store_counter,
                       const vindex_centroids *centroids, char *err)
{
    if (!v || !src)
        return qr_fail(err, QR_EINVAL, "vindex_build: missing argument");
    vindex_builder *b = NULL;
    qr_status st = vindex_build_begin(v, centroids, &b, err);
    if (st)
        return st;
    int64_t *ids = malloc(SOURCE_BATCH * sizeof(int64_t));
    float *vecs = malloc(SOURCE_BATCH * (size_t)v->dim * sizeof(float));
    if (!ids || !vecs) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    for (;;) {
        size_t n = 0;
        if ((st = src(ctx, v->dim, ids, vecs, SOURCE_BATCH, &n, err)))
            goto out;
        if (n > SOURCE_BATCH) {
            st = qr_fail(err, QR_EINTERNAL, "vector source returned %zu rows for a batch of %d", n,
                         SOURCE_BATCH);
            goto out;
        }
        if (n == 0)
            break;
        /* rows without a usable vector are skipped, the others moved up in place */
        size_t kept = 0, nskip = 0;
        int64_t skipped[SOURCE_BATCH];
        for (size_t i = 0; i < n; i++) {
            const float *row = vecs + i * (size_t)v->dim;
            if (!vindex_vector_usable(row, v->dim)) {
                skipped[nskip++] = ids[i];
                continue;
            }
            if (kept != i) {
                ids[kept] = ids[i];
                memmove(vecs + kept * (size_t)v->dim, row, (size_t)v->dim * sizeof(float));
            }
            kept++;
        }
        if ((st = vindex_build_add(b, ids, vecs, kept, v->dim, err)) ||
            (st = vindex_build_skip(b, skipped, nskip, err)))
            goto out;
    }
    free(ids);
    free(vecs);
    return vindex_build_commit(b, store_counter, err);
out:
    free(ids);
    free(vecs);
    vindex_build_abort(b);
    return st;
}

/* ---- CPU k-means (reference for the GPU build path) ------------------------------------------ */

qr_status vindex_kmeans(const float *x, size_t n, int dim, size_t k, int niter, uint64_t seed,
                        float *centroids, char *err)
{
    if (!x || !centroids || dim < 1 || k == 0 || n < k || niter < 1)
        return qr_fail(err, QR_EINVAL, "k-means needs n >= k >= 1 rows of dim >= 1 and niter >= 1");
    for (size_t i = 0; i < n * (size_t)dim; i++)
        if (!isfinite(x[i]))
            return qr_fail(err, QR_EINVAL, "k-means input row %zu is not finite", i / (size_t)dim);
    qr_status st = QR_OK;
    size_t d = (size_t)dim;
    size_t blk = 1024;
    float *c = malloc(k * d * sizeof(float));
    double *sum = malloc(k * d * sizeof(double));
    size_t *cnt = malloc(k * sizeof(size_t));
    size_t *perm = malloc(n * sizeof(size_t));
    float *scores = malloc(blk * k * sizeof(float));
    if (!c || !sum || !cnt || !perm || !scores) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for k-means");
        goto out;
    }
    /* initial centroids: the first k of a seeded shuffle, as FAISS takes k random points */
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    uint64_t state = seed ? seed : 1;
    for (size_t i = 0; i < k; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        size_t j = i + (size_t)(state % (n - i));
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        memcpy(c + i * d, x + perm[i] * d, d * sizeof(float));
    }
    for (int it = 0; it < niter; it++) {
        memset(sum, 0, k * d * sizeof(double));
        memset(cnt, 0, k * sizeof(size_t));
        for (size_t i0 = 0; i0 < n; i0 += blk) {
            size_t nb = n - i0 < blk ? n - i0 : blk;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nb, (blasint)k, dim, 1.0f,
                        x + i0 * d, dim, c, dim, 0.0f, scores, (blasint)k);
            for (size_t r = 0; r < nb; r++) {
                const float *sr = scores + r * k;
                size_t best = 0;
                for (size_t j = 1; j < k; j++)
                    if (sr[j] > sr[best])
                        best = j;
                cnt[best]++;
                const float *xr = x + (i0 + r) * d;
                double *sb = sum + best * d;
                for (size_t t = 0; t < d; t++)
                    sb[t] += xr[t];
            }
        }
        for (size_t j = 0; j < k; j++)
            if (cnt[j])
                for (size_t t = 0; t < d; t++)
                    c[j * d + t] = (float)(sum[j * d + t] / (double)cnt[j]);
        /* an empty cluster takes half of the largest one: its centroid, nudged apart by a
         * symmetric +-1/1024 perturbation (deterministic where FAISS draws the donor at random) */
        for (size_t j = 0; j < k; j++) {
            if (cnt[j])
                continue;
            size_t big = 0;
            for (size_t t = 1; t < k; t++)
                if (cnt[t] > cnt[big])
                    big = t;
            for (size_t t = 0; t < d; t++) {
                float base = c[big * d + t];
                float up = base * (1.0f + 1.0f / 1024), down = base * (1.0f - 1.0f / 1024);
                c[j * d + t] = t % 2 == 0 ? up : down;
                c[big * d + t] = t % 2 == 0 ? down : up;
            }
            cnt[j] = cnt[big] / 2;
            cnt[big] -= cnt[j];
        }
        /* spherical: inner-product clustering keeps unit centroids */
        for (size_t j = 0; j < k; j++) {
            double norm = 0;
            for (size_t t = 0; t < d; t++)
                norm += (double)c[j * d + t] * c[j * d + t];
            if (norm > 0) {
                double inv = 1.0 / sqrt(norm);
                for (size_t t = 0; t < d; t++)
                    c[j * d + t] = (float)(c[j * d + t] * inv);
            }
        }
    }
    memcpy(centroids, c, k * d * sizeof(float));
out:
    free(c);
    free(sum);
    free(cnt);
    free(perm);
    free(scores);
    return st;
}
