/*
 * vindex: the vector index's lifecycle. It builds FAISS indexes (exact, IVF or HNSW, by size)
 * over L2-normalised chunk vectors, persists them as generations that are committed by an atomic
 * MANIFEST rename, serves searches from reference-counted snapshots that a publication swaps
 * while searches run, keeps chunks added since the last build in an exact delta and deleted ones
 * in a tombstone set, and answers permission-filtered top-k queries: ANN with adaptive
 * over-fetch, falling back to an exact BLAS scan, and an exact path over an explicit set of
 * chunk ids (FAISS 1.7.3's C API has no id selector, so filtering is ours).
 *
 * Every candidate is re-scored with one deterministic double-precision dot product over the
 * generation's float32 rows (its own copy, or in rows mode the store's, vindex_open_rows), so a
 * chunk has the same score whichever path found it and equal vectors tie exactly; BLAS and FAISS
 * scores only choose candidates, with a margin that covers their rounding.
 *
 * The module is six files, one idea each: this one has the options, the handle (open, close,
 * info), its snapshots, the exact score and the incremental changes (vindex_add, vindex_skip,
 * vindex_remove);
 * vindex_files.c the generation's files and manifest; vindex_build.c building and publishing a
 * generation; vindex_search.c the searches; vindex_scan.c the search with the permission test
 * inside the IVF scan; vindex_plan.c (in quarry_gpu, shared with the GPU
 * path) the choice of type and list count. vindex_impl.h holds what they share. FAISS types and
 * faiss_get_last_error() stay in these files.
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <dirent.h>
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
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/vector.h"
#include "index/vindex_impl.h"
#include "index/vindex_int.h"

#define LOG_COMPONENT "index"

#define LOCK_NAME "LOCK"

bool vindex_is_ivf(vtype t)
{
    return t == VT_IVF_FLAT || t == VT_IVF_SQ8 || t == VT_IVF_PQ;
}

/* FAISS reports failures through a thread-local message; this is the one place it is read. */
qr_status vindex_faiss_fail(char *err, const char *what)
{
    const char *msg = faiss_get_last_error();
    return qr_fail(err, QR_EINTERNAL, "%s: %s", what, msg && *msg ? msg : "unknown FAISS error");
}

/* ---- options ------------------------------------------------------------------------------- */

void vindex_opts_default(vindex_opts *o)
{
    o->type = "auto";
    o->exact_threshold = 50000;
    o->nlist = 0;
    o->train_per_list = 64;
    o->nprobe = 128;    /* recall@10 >= 0.95 at 100k and 1M vectors (bench/README.md) */
    o->ef_search = 256; /* recall@10 0.97 at 100k */
    o->scan = "int8";
    o->rerank = 64;
    o->delta_max = 20000;
    o->rebuild_on_mismatch = true;
}

void vindex_opts_from_config(const qr_config *cfg, vindex_opts *o)
{
    const qr_settings *set = qr_config_settings(cfg);
    o->type = set->vindex_type;
    o->exact_threshold = (size_t)set->vindex_exact_threshold;
    o->nlist = (size_t)set->vindex_nlist;
    o->train_per_list = (size_t)set->vindex_train_per_list;
    o->nprobe = (size_t)set->vindex_nprobe;
    o->ef_search = (size_t)set->vindex_ef_search;
    o->scan = set->vindex_scan;
    o->rerank = (size_t)set->vindex_rerank;
    o->delta_max = (size_t)set->vindex_delta_max;
    o->rebuild_on_mismatch = set->vindex_rebuild_on_mismatch;
}

static qr_status check_opts(const vindex_opts *o, vtype *type, char *err)
{
    if (!o)
        return qr_fail(err, QR_EINVAL, "vector index options missing");
    if (!vindex_parse_type(o->type, type))
        return qr_fail(err, QR_EINVAL,
                       "unknown vector index type '%s' (auto, flat, ivf_flat, ivf_sq8, ivf_pq or hnsw)",
                       o->type ? o->type : "(null)");
    if (o->nprobe < 1 || o->ef_search < 1 || o->delta_max < 1)
        return qr_fail(err, QR_EINVAL, "vindex nprobe, ef_search and delta_max must be at least 1");
    if (o->scan && strcmp(o->scan, "int8") != 0 && strcmp(o->scan, "faiss") != 0)
        return qr_fail(err, QR_EINVAL, "unknown vector index scan '%s' (int8 or faiss)", o->scan);
    if (o->train_per_list < 39 || o->train_per_list > 256)
        return qr_fail(err, QR_EINVAL, "vindex train_per_list must be 39..256 (got %zu)", o->train_per_list);
    return QR_OK;
}

/* An AVX2 clone of vindex_dot_exact is picked at load time where the CPU has it. Products of two
 * floats are exact in double, so fused or vectorised code computes the same sums: every clone
 * gives the same bits. ThreadSanitizer instruments the clone resolver, which runs before its
 * runtime is up, so TSan builds use the plain function. */
#if defined(__SANITIZE_THREAD__)
#define DOT_CLONES
#else
#define DOT_CLONES __attribute__((target_clones("avx2", "default")))
#endif

/* The one exact score: a fixed-order double sum, so that equal rows score equally wherever they
 * sit (BLAS kernels round differently by position). Static with its clones, behind an ordinary
 * function: clang resolves target_clones only where every declaration carries the attribute, so
 * a multiversioned function called from other files fails to link there. */
DOT_CLONES static float dot_exact(const float *a, const float *b, int dim)
{
    /* eight independent double sums (i mod 8), added pairwise at the end: the order is fixed, so
     * the result is too, and the chains overlap instead of waiting on one another */
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= dim; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += (double)a[i + j] * b[i + j];
    for (int j = 0; i < dim; i++, j++)
        acc[j] += (double)a[i] * b[i];
    return (float)(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}

float vindex_dot_exact(const float *a, const float *b, int dim)
{
    return dot_exact(a, b, dim);
}

/* ---- id map: open addressing, int64 keys >= 0 ----------------------------------------------- */

static size_t idmap_slot(int64_t key, size_t mask)
{
    uint64_t x = (uint64_t)key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x & mask;
}

bool vindex_idmap_get(const idmap *m, int64_t key, int64_t *val)
{
    if (m->n == 0)
        return false;
    size_t mask = m->cap - 1;
    for (size_t i = idmap_slot(key, mask);; i = (i + 1) & mask) {
        if (m->keys[i] == key) {
            if (val)
                *val = m->vals[i];
            return true;
        }
        if (m->keys[i] == -1)
            return false;
    }
}

static void idmap_insert_raw(int64_t *keys, int64_t *vals, size_t cap, int64_t key, int64_t val)
{
    size_t mask = cap - 1;
    size_t i = idmap_slot(key, mask);
    while (keys[i] != -1)
        i = (i + 1) & mask;
    keys[i] = key;
    vals[i] = val;
}

/* Makes room for `more` insertions so that the puts that follow cannot fail. */
qr_status vindex_idmap_reserve(idmap *m, size_t more)
{
    size_t need = m->n + more;
    if (need <= m->cap / 2)
        return QR_OK;
    size_t cap = m->cap ? m->cap : 64;
    while (need > cap / 2)
        cap *= 2;
    int64_t *keys = malloc(cap * sizeof(*keys));
    int64_t *vals = malloc(cap * sizeof(*vals));
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return QR_ENOMEM;
    }
    memset(keys, 0xff, cap * sizeof(*keys));
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i] != -1)
            idmap_insert_raw(keys, vals, cap, m->keys[i], m->vals[i]);
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return QR_OK;
}

/* Inserts key unless present (an existing value is kept). Call vindex_idmap_reserve first. */
void vindex_idmap_put(idmap *m, int64_t key, int64_t val)
{
    if (vindex_idmap_get(m, key, NULL))
        return;
    idmap_insert_raw(m->keys, m->vals, m->cap, key, val);
    m->n++;
}

void vindex_idmap_release(idmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* ---- snapshots ------------------------------------------------------------------------------- */

vsnap *vindex_snap_new(int dim)
{
    vsnap *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* searches hold the read lock for milliseconds, all the time: prefer the writer so that an
     * add cannot starve */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&s->lay_lock, NULL);
    s->refs = 1;
    s->dim = dim;
    return s;
}

void vindex_snap_free(vsnap *s)
{
    if (!s)
        return;
    if (s->index)
        faiss_Index_free(s->index);
    if (s->map)
        munmap(s->map, s->map_len);
    free(s->d_ids);
    free(s->d_rows);
    free(s->d_counter);
    vindex_idmap_release(&s->d_pos);
    vindex_idmap_release(&s->tomb);
    vindex_idmap_release(&s->skip);
    free(s->lay_off);
    free(s->lay_ids);
    free(s->lay_pos);
    free(s->i8_codes);
    free(s->i8_scale);
    free(s->i8_at);
    free(s->cent);
    free(s->i8_cent);
    free(s->i8_cscale);
    pthread_mutex_destroy(&s->lay_lock);
    pthread_rwlock_destroy(&s->lock);
    free(s);
}

vsnap *vindex_snap_acquire(vindex *v)
{
    pthread_mutex_lock(&v->snap_lock);
    vsnap *s = v->cur;
    s->refs++;
    pthread_mutex_unlock(&v->snap_lock);
    return s;
}

void vindex_snap_release(vindex *v, vsnap *s)
{
    pthread_mutex_lock(&v->snap_lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&v->snap_lock);
    if (last)
        vindex_snap_free(s);
}

/* Position of id among the generation's rows, or -1. */
ssize_t vindex_main_find(const vsnap *s, int64_t id)
{
    size_t n = s->count;
    if (n == 0 || id < s->ids[0] || id > s->ids[n - 1])
        return -1;
    /* chunk ids are nearly dense (SQLite rowids with the gaps deletions leave): guess the
     * position by interpolation and bracket it, so a lookup touches a few cache lines instead of
     * twenty */
    size_t lo = 0, hi = n;
    double span = (double)(s->ids[n - 1] - s->ids[0]);
    size_t guess = span > 0 ? (size_t)((double)(id - s->ids[0]) / span * (double)(n - 1)) : 0;
    if (guess >= n)
        guess = n - 1;
    if (s->ids[guess] < id) {
        size_t step = 8;
        lo = guess + 1;
        while (lo + step < n && s->ids[lo + step] < id)
            step *= 2;
        hi = lo + step < n ? lo + step + 1 : n;
    } else {
        size_t step = 8;
        hi = guess + 1;
        while (hi > step && s->ids[hi - 1 - step] >= id)
            step *= 2;
        lo = hi > step ? hi - 1 - step : 0;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->count && s->ids[lo] == id ? (ssize_t)lo : -1;
}

/* Applies the configured search-time parameters to a FAISS index. */
qr_status vindex_apply_search_params(FaissIndex *index, vtype type, const vindex_opts *o, char *err)
{
    if (vindex_is_ivf(type)) {
        FaissIndexIVF *ivf = faiss_IndexIVF_cast(index);
        if (!ivf)
            return qr_fail(err, QR_EINTERNAL, "vector index is not an IVF index");
        size_t nlist = faiss_IndexIVF_nlist(ivf);
        faiss_IndexIVF_set_nprobe(ivf, o->nprobe < nlist ? o->nprobe : nlist);
    } else if (type == VT_HNSW) {
        FaissParameterSpace *ps = NULL;
        if (faiss_ParameterSpace_new(&ps) != 0)
            return vindex_faiss_fail(err, "cannot set HNSW efSearch");
        int rc = faiss_ParameterSpace_set_index_parameter(ps, index, "efSearch", (double)o->ef_search);
        faiss_ParameterSpace_free(ps);
        if (rc != 0)
            return vindex_faiss_fail(err, "cannot set HNSW efSearch");
    }
    return QR_OK;
}

/* ---- open and close -------------------------------------------------------------------------- */

/* OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not recognise some virtual CPUs and falls back to its SSE3
 * "Prescott" kernels: the exact scans and FAISS's k-means then run 3-5 times slower. The kernel
 * set is chosen when the library loads, so all we can do is say how to fix it. */
static void warn_slow_blas(void)
{
    const char *core = openblas_get_corename();
    __builtin_cpu_init();
    if (!core || strcasecmp(core, "prescott") != 0 || !__builtin_cpu_supports("avx2"))
        return;
    qr_log(QR_LOG_WARN, LOG_COMPONENT,
           "OpenBLAS uses its %s kernels on a CPU with AVX2: set OPENBLAS_CORETYPE=%s in the environment "
           "for 3-5x faster exact vector search and IVF training",
           core, __builtin_cpu_supports("avx512f") ? "SkylakeX" : "Haswell");
}

static void vindex_free(vindex *v)
{
    if (!v)
        return;
    if (v->cur)
        vindex_snap_free(v->cur);
    if (v->rows.release) /* no snapshot reads the provider's memory any more */
        v->rows.release(v->rows.ctx);
    if (v->lock_fd >= 0)
        close(v->lock_fd);
    pthread_mutex_destroy(&v->snap_lock);
    pthread_mutex_destroy(&v->write_lock);
    pthread_mutex_destroy(&v->build_lock);
    free(v->dir);
    free(v);
}

qr_status vindex_open(const char *dir, int dim, const vindex_opts *o, int64_t store_counter, vindex **out,
                      bool *stale, char *err)
{
    return vindex_open_rows(dir, dim, o, NULL, store_counter, out, stale, err);
}

qr_status vindex_open_rows(const char *dir, int dim, const vindex_opts *o, const vindex_rows *rows,
                           int64_t store_counter, vindex **out, bool *stale, char *err)
{
    qr_status st = QR_OK;
    vindex *v = NULL;
    char *mpath = NULL, *lpath = NULL, *text = NULL;
    char problem[QR_ERR_LEN] = "";
    qr_status problem_st = QR_OK;
    bool manifest_ok = false;
    vtype type = VT_AUTO;
    if (out)
        *out = NULL;
    if (!dir || !*dir || !out || !stale)
        return qr_fail(err, QR_EINVAL, "vindex_open: missing argument");
    if (dim < 1 || dim > VINDEX_DIM_MAX)
        return qr_fail(err, QR_EINVAL, "vector dimension %d is outside 1..%d", dim, VINDEX_DIM_MAX);
    if (rows && !rows->map)
        return qr_fail(err, QR_EINVAL, "vindex_open_rows: the rows' provider has no map function");
    if ((st = check_opts(o, &type, err)))
        return st;
    *stale = false;

    v = calloc(1, sizeof(*v));
    if (!v || !(v->dir = strdup(dir))) {
        free(v);
        return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    v->lock_fd = -1;
    v->dim = dim;
    v->external = rows != NULL;
    if (rows)
        v->rows = *rows;
    v->opts = *o;
    v->type = type;
    snprintf(v->type_str, sizeof(v->type_str), "%s", vindex_type_names[type]);
    v->opts.type = v->type_str;
    v->opts.scan = vindex_scan_int8(o) ? "int8" : "faiss"; /* o's string may not outlive the handle */
    pthread_mutex_init(&v->snap_lock, NULL);
    pthread_mutex_init(&v->write_lock, NULL);
    pthread_mutex_init(&v->build_lock, NULL);

    static pthread_once_t blas_check = PTHREAD_ONCE_INIT;
    pthread_once(&blas_check, warn_slow_blas);
    if ((st = vindex_mkdir_p(dir, err)))
        goto out;
    mpath = vindex_path_join(dir, MANIFEST_NAME);
    lpath = vindex_path_join(dir, LOCK_NAME);
    if (!mpath || !lpath) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    v->lock_fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (v->lock_fd < 0) {
        st = qr_fail(err, QR_EIO, "cannot open '%s': %s", lpath, strerror(errno));
        goto out;
    }
    if (flock(v->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        st = qr_fail(err, errno == EWOULDBLOCK ? QR_EPERM : QR_EIO,
                     "vector index '%s' is in use by another %s", dir,
                     errno == EWOULDBLOCK ? "handle or process" : "process (flock failed)");
        goto out;
    }

    size_t len = 0;
    manifest m = {0};
    qr_status rst = qr_read_file(mpath, MANIFEST_MAX, &text, &len, problem);
    if (rst && access(mpath, F_OK) != 0 && errno == ENOENT) {
        /* nothing built yet: an empty index that reflects an empty store */
        manifest_ok = true;
        problem[0] = '\0';
        if (store_counter != 0) {
            problem_st = QR_EINVAL;
            snprintf(problem, sizeof(problem),
                     "vector index '%s' has not been built yet and the store is at change %" PRId64, dir,
                     store_counter);
        }
    } else if (rst) {
        problem_st = QR_EIO;
    } else if ((problem_st = vindex_manifest_parse(mpath, text, len, &m, problem)) == QR_OK) {
        manifest_ok = true;
        if (m.dim != dim) {
            problem_st = QR_EINVAL;
            snprintf(problem, sizeof(problem),
                     "vector index '%s' holds %d-dimensional vectors, the embeddings have %d dimensions", dir,
                     m.dim, dim);
        } else if (m.external != v->external) {
            problem_st = QR_EINVAL;
            snprintf(problem, sizeof(problem),
                     m.external
                         ? "vector index '%s' reads its vectors from a store (%" PRId64
                           "), this one is opened with its own copy"
                         : "vector index '%s' holds its own copy of the vectors, this one is opened to "
                           "read them from the store (%" PRId64 ")",
                     dir, m.external ? m.rows_uid : v->rows.uid);
        } else if (m.external && m.rows_uid != v->rows.uid) {
            problem_st = QR_EINVAL;
            snprintf(problem, sizeof(problem),
                     "vector index '%s' was built over the vectors of store %" PRId64
                     ", this store is %" PRId64,
                     dir, m.rows_uid, v->rows.uid);
        } else if ((problem_st = vindex_load_generation(v, &m, &v->cur, problem)) != QR_OK) {
            manifest_ok = false; /* its files are damaged: keep them for inspection */
        } else if (m.store_counter != store_counter) {
            problem_st = QR_EINVAL;
            snprintf(problem, sizeof(problem),
                     "vector index '%s' is stale: generation %" PRIu64 " was built at store change %" PRId64
                     ", the store is at change %" PRId64,
                     dir, m.generation, m.store_counter, store_counter);
        }
    }
    if (problem_st && !o->rebuild_on_mismatch) {
        st = qr_fail(err, problem_st, "%s (run `quarry index build`, or set vindex.rebuild_on_mismatch=on)",
                     problem);
        goto out;
    }
    if (problem_st) {
        *stale = true;
        qr_log(QR_LOG_WARN, LOG_COMPONENT, "%s: it must catch up from the store or be rebuilt", problem);
    }
    if (!v->cur) {
        v->cur = vindex_snap_new(dim);
        if (!v->cur) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
    }
    v->next_gen = vindex_max_generation_on_disk(dir) + 1;
    if (v->next_gen <= m.generation)
        v->next_gen = m.generation + 1;
    /* only with a trustworthy manifest do we know which files are leftovers */
    if (manifest_ok) {
        vindex_remove_leftovers(dir, m.generation);
        char *tmp = vindex_path_join(dir, MANIFEST_TMP);
        if (tmp)
            unlink(tmp);
        free(tmp);
    }
out:
    free(text);
    free(mpath);
    free(lpath);
    if (st) {
        if (v)
            v->rows.release = NULL; /* a failed open leaves the provider to the caller */
        vindex_free(v);
        v = NULL;
    }
    *out = v;
    return st;
}

void vindex_close(vindex *v)
{
    vindex_free(v);
}

void vindex_get_info(vindex *v, vindex_info *out)
{
    memset(out, 0, sizeof(*out));
    vsnap *s = vindex_snap_acquire(v);
    out->generation = s->generation;
    snprintf(out->type, sizeof(out->type), "%s", vindex_type_names[s->type]);
    out->dim = s->dim;
    out->count = s->count;
    out->nlist = s->nlist;
    if (vindex_is_ivf(s->type))
        out->nprobe = faiss_IndexIVF_nprobe(faiss_IndexIVF_cast(s->index));
    if (s->type == VT_HNSW)
        out->ef_search = v->opts.ef_search;
    out->built_counter = s->built_counter;
    pthread_rwlock_rdlock(&s->lock);
    out->delta = s->d_n;
    out->tombstones = s->tomb.n;
    out->skipped = s->skip.n - s->skip_removed;
    out->store_counter = s->store_counter;
    pthread_rwlock_unlock(&s->lock);
    vindex_snap_release(v, s);
    out->searches = __atomic_load_n(&v->searches, __ATOMIC_RELAXED);
    out->exact_scans = __atomic_load_n(&v->exact_scans, __ATOMIC_RELAXED);
}

qr_status vindex_get_centroids(vindex *v, float *out, size_t nlist, char *err)
{
    qr_status st = QR_OK;
    vsnap *s = vindex_snap_acquire(v);
    if (!vindex_is_ivf(s->type)) {
        st = qr_fail(err, QR_EINVAL, "the served vector index is %s, not IVF", vindex_type_names[s->type]);
        goto out;
    }
    FaissIndex *q = faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(s->index));
    if (nlist != s->nlist || (size_t)faiss_Index_ntotal(q) != nlist) {
        st = qr_fail(err, QR_EINVAL, "the served IVF index has %zu lists, not %zu", s->nlist, nlist);
        goto out;
    }
    if (faiss_Index_reconstruct_n(q, 0, (idx_t)nlist, out) != 0)
        st = vindex_faiss_fail(err, "cannot read the IVF centroids");
out:
    vindex_snap_release(v, s);
    return st;
}

/* ---- incremental changes --------------------------------------------------------------------- */

int vindex_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

qr_status vindex_add(vindex *v, const int64_t *ids, const float *vecs, size_t n, int dim,
                     int64_t store_counter, char *err)
{
    qr_status st = QR_OK;
    float *rows = NULL;
    int64_t *sorted = NULL;
    if (!v || (n && (!ids || !vecs)))
        return qr_fail(err, QR_EINVAL, "vindex_add: missing argument");
    if (store_counter < 0)
        return qr_fail(err, QR_EINVAL, "store change counter %" PRId64 " is negative", store_counter);
    int d = v->dim;
    if (dim != d)
        return qr_fail(err, QR_EINVAL, "vector dimension %d does not match the index's %d", dim, d);
    if (n == 0)
        return QR_OK;
    if (n > (SIZE_MAX / sizeof(float)) / (size_t)d / 2)
        return qr_fail(err, QR_ELIMIT, "too many vectors in one add");
    rows = malloc(n * (size_t)d * sizeof(float));
    sorted = malloc(n * sizeof(int64_t));
    if (!rows || !sorted) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0) {
            st = qr_fail(err, QR_EINVAL, "chunk id %" PRId64 " is negative", ids[i]);
            goto out;
        }
        if (!vindex_normalize_row(vecs + i * (size_t)d, rows + i * (size_t)d, d)) {
            st = qr_fail(err, QR_EINVAL, "vector of chunk %" PRId64 " is zero or not finite", ids[i]);
            goto out;
        }
    }
    memcpy(sorted, ids, n * sizeof(int64_t));
    qsort(sorted, n, sizeof(int64_t), vindex_cmp_i64);
    for (size_t i = 1; i < n; i++) {
        if (sorted[i] == sorted[i - 1]) {
            st = qr_fail(err, QR_EEXIST, "chunk id %" PRId64 " appears twice in one add", sorted[i]);
            goto out;
        }
    }

    pthread_mutex_lock(&v->write_lock);
    vsnap *s = v->cur; /* publication needs the write lock: s stays current */
    if (s->dim != d) {
        st = qr_fail(err, QR_EINVAL, "the served vector index has dimension %d: build it first", s->dim);
        goto unlock;
    }
    for (size_t i = 0; i < n; i++) {
        /* only this thread (holding the write lock) changes the delta: reading it unlocked is safe */
        if (vindex_main_find(s, ids[i]) >= 0 || vindex_idmap_get(&s->d_pos, ids[i], NULL) ||
            vindex_idmap_get(&s->skip, ids[i], NULL)) {
            st = qr_fail(err, QR_EEXIST, "chunk id %" PRId64 " is already in the vector index", ids[i]);
            goto unlock;
        }
    }
    pthread_rwlock_wrlock(&s->lock);
    if (s->d_n + n > s->d_cap) {
        size_t cap = s->d_cap ? s->d_cap : 256;
        while (cap < s->d_n + n)
            cap *= 2;
        int64_t *nids = realloc(s->d_ids, cap * sizeof(int64_t));
        if (nids)
            s->d_ids = nids;
        int64_t *ncnt = nids ? realloc(s->d_counter, cap * sizeof(int64_t)) : NULL;
        if (ncnt)
            s->d_counter = ncnt;
        float *nrows = ncnt ? realloc(s->d_rows, cap * (size_t)d * sizeof(float)) : NULL;
        if (!nrows) {
            pthread_rwlock_unlock(&s->lock);
            st = qr_fail(err, QR_ENOMEM, "out of memory growing the delta");
            goto unlock;
        }
        s->d_rows = nrows;
        s->d_cap = cap;
    }
    if (vindex_idmap_reserve(&s->d_pos, n)) {
        pthread_rwlock_unlock(&s->lock);
        st = qr_fail(err, QR_ENOMEM, "out of memory growing the delta");
        goto unlock;
    }
    memcpy(s->d_rows + s->d_n * (size_t)d, rows, n * (size_t)d * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        s->d_ids[s->d_n + i] = ids[i];
        s->d_counter[s->d_n + i] = store_counter;
        vindex_idmap_put(&s->d_pos, ids[i], (int64_t)(s->d_n + i));
    }
    s->d_n += n;
    if (store_counter > s->store_counter)
        s->store_counter = store_counter;
    pthread_rwlock_unlock(&s->lock);
unlock:
    pthread_mutex_unlock(&v->write_lock);
out:
    free(rows);
    free(sorted);
    return st;
}

qr_status vindex_skip(vindex *v, const int64_t *ids, size_t n, int64_t store_counter, char *err)
{
    qr_status st = QR_OK;
    int64_t *sorted = NULL;
    if (!v || (n && !ids))
        return qr_fail(err, QR_EINVAL, "vindex_skip: missing argument");
    if (store_counter < 0)
        return qr_fail(err, QR_EINVAL, "store change counter %" PRId64 " is negative", store_counter);
    if (n == 0)
        return QR_OK;
    if (!(sorted = malloc(n * sizeof(int64_t))))
        return qr_fail(err, QR_ENOMEM, "out of memory");
    memcpy(sorted, ids, n * sizeof(int64_t));
    qsort(sorted, n, sizeof(int64_t), vindex_cmp_i64);
    for (size_t i = 0; i < n; i++) {
        if (sorted[i] < 0) {
            st = qr_fail(err, QR_EINVAL, "chunk id %" PRId64 " is negative", sorted[i]);
            goto out;
        }
        if (i && sorted[i] == sorted[i - 1]) {
            st = qr_fail(err, QR_EEXIST, "chunk id %" PRId64 " appears twice in one skip", sorted[i]);
            goto out;
        }
    }
    pthread_mutex_lock(&v->write_lock);
    vsnap *s = v->cur;
    for (size_t i = 0; i < n; i++) {
        if (vindex_main_find(s, ids[i]) >= 0 || vindex_idmap_get(&s->d_pos, ids[i], NULL) ||
            vindex_idmap_get(&s->skip, ids[i], NULL)) {
            st = qr_fail(err, QR_EEXIST, "chunk id %" PRId64 " is already in the vector index", ids[i]);
            goto unlock;
        }
    }
    pthread_rwlock_wrlock(&s->lock);
    if (vindex_idmap_reserve(&s->skip, n)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory recording chunks without a vector");
    } else {
        for (size_t i = 0; i < n; i++)
            vindex_idmap_put(&s->skip, ids[i], store_counter);
        if (store_counter > s->store_counter)
            s->store_counter = store_counter;
    }
    pthread_rwlock_unlock(&s->lock);
unlock:
    pthread_mutex_unlock(&v->write_lock);
out:
    free(sorted);
    return st;
}

qr_status vindex_remove(vindex *v, const int64_t *ids, size_t n, int64_t store_counter, char *err)
{
    qr_status st = QR_OK;
    if (!v || (n && !ids))
        return qr_fail(err, QR_EINVAL, "vindex_remove: missing argument");
    if (store_counter < 0)
        return qr_fail(err, QR_EINVAL, "store change counter %" PRId64 " is negative", store_counter);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0)
            return qr_fail(err, QR_EINVAL, "chunk id %" PRId64 " is negative", ids[i]);
    pthread_mutex_lock(&v->write_lock);
    vsnap *s = v->cur;
    pthread_rwlock_wrlock(&s->lock);
    if (vindex_idmap_reserve(&s->tomb, n)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory growing the tombstones");
    } else {
        for (size_t i = 0; i < n; i++) {
            if (!vindex_idmap_get(&s->tomb, ids[i], NULL) && vindex_idmap_get(&s->skip, ids[i], NULL))
                s->skip_removed++;
            vindex_idmap_put(&s->tomb, ids[i], store_counter);
        }
        if (store_counter > s->store_counter)
            s->store_counter = store_counter;
    }
    pthread_rwlock_unlock(&s->lock);
    pthread_mutex_unlock(&v->write_lock);
    return st;
}

/* Delta rows plus tombstones a generation of `count` rows carries before a rebuild: delta_max,
 * or a quarter of the generation when that is less (at least DELTA_FLOOR). The delta lives in
 * memory (a vector's 4 bytes per dimension, for ever until the rebuild) and every search scans it
 * exactly, so a small index is rebuilt, cheaply, long before its delta outgrows it: the soak's
 * index of 250 chunks under steady writes carried thousands of delta rows (towards 20,000, 30 MB
 * at 384 dimensions), the server's memory growing all the while (bench/README.md, "Where the RSS
 * growth went"). */
#define DELTA_FLOOR 1000

size_t vindex_delta_limit(size_t count, size_t delta_max)
{
    size_t limit = count / 4 > DELTA_FLOOR ? count / 4 : DELTA_FLOOR;
    return limit < delta_max ? limit : delta_max;
}

bool vindex_needs_rebuild(vindex *v)
{
    vsnap *s = vindex_snap_acquire(v);
    pthread_rwlock_rdlock(&s->lock);
    bool r = s->d_n + s->tomb.n > vindex_delta_limit(s->count, v->opts.delta_max);
    pthread_rwlock_unlock(&s->lock);
    vindex_snap_release(v, s);
    return r;
}
