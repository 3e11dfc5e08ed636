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
 * generation's own float32 rows, so a chunk has the same score whichever path found it and
 * equal vectors tie exactly; BLAS and FAISS scores only choose candidates, with a margin that
 * covers their rounding.
 *
 * FAISS types and faiss_get_last_error() stay in this file.
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

#include "index/files_int.h"
#include "index/vector.h"
#include "index/vindex_int.h"

#define LOG_COMPONENT "index"

#define MANIFEST_NAME        "MANIFEST"
#define MANIFEST_TMP         "MANIFEST.tmp"
#define LOCK_NAME            "LOCK"
#define MANIFEST_MAX         (64u << 10)
#define VEC_MAGIC            "QRVECS01"
#define VEC_HEADER           64
#define SCAN_BLOCK           4096 /* most rows per BLAS call in exact scans, see scan_block */
#define SOURCE_BATCH         4096 /* rows per source pull in vindex_build */
#define EXACT_MARGIN         16   /* extra candidates kept by exact scans, see heap_finish */
#define OVERFETCH_MIN_GROWTH 2
#define OVERFETCH_MAX_GROWTH 64
#define OVERFETCH_MIN_MAX    4096
#define TRAIN_SEED           0x71756172727956ull

typedef enum { VT_NONE = 0, VT_FLAT, VT_IVF_FLAT, VT_IVF_SQ8, VT_IVF_PQ, VT_HNSW, VT_AUTO } vtype;

static const char *const type_names[] = {"none", "flat", "ivf_flat", "ivf_sq8", "ivf_pq", "hnsw", "auto"};

static bool is_ivf(vtype t)
{
    return t == VT_IVF_FLAT || t == VT_IVF_SQ8 || t == VT_IVF_PQ;
}

/* Candidates fetched per wanted result before exact re-scoring. 4-bit PQ codes rank coarsely,
 * so ivf_pq needs a much deeper list than the types whose scores are nearly exact (measured in
 * bench/README.md: depth 10 gave recall@10 0.81 at 100k where 50 gives 0.97). */
static size_t rerank_depth(vtype t)
{
    return t == VT_IVF_PQ ? 50 : 2;
}

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

static void hook(const char *stage)
{
    if (test_hook)
        test_hook(stage, test_hook_arg);
}

/* FAISS reports failures through a thread-local message; this is the one place it is read. */
static qr_status faiss_fail(char *err, const char *what)
{
    const char *msg = faiss_get_last_error();
    return qr_fail(err, QR_EINTERNAL, "%s: %s", what, msg && *msg ? msg : "unknown FAISS error");
}

static bool parse_type(const char *s, vtype *out)
{
    for (int t = VT_FLAT; t <= VT_AUTO; t++) {
        if (s && strcmp(s, type_names[t]) == 0) {
            *out = (vtype)t;
            return true;
        }
    }
    return false;
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
    o->delta_max = 20000;
    o->rebuild_on_mismatch = true;
}

void vindex_opts_from_config(const qr_config *cfg, vindex_opts *o)
{
    o->type = qr_config_str(cfg, "vindex.type");
    o->exact_threshold = (size_t)qr_config_int(cfg, "vindex.exact_threshold");
    o->nlist = (size_t)qr_config_int(cfg, "vindex.nlist");
    o->train_per_list = (size_t)qr_config_int(cfg, "vindex.train_per_list");
    o->nprobe = (size_t)qr_config_int(cfg, "vindex.nprobe");
    o->ef_search = (size_t)qr_config_int(cfg, "vindex.ef_search");
    o->delta_max = (size_t)qr_config_int(cfg, "vindex.delta_max");
    o->rebuild_on_mismatch = qr_config_bool(cfg, "vindex.rebuild_on_mismatch");
}

static qr_status check_opts(const vindex_opts *o, vtype *type, char *err)
{
    if (!o)
        return qr_fail(err, QR_EINVAL, "vector index options missing");
    if (!parse_type(o->type, type))
        return qr_fail(err, QR_EINVAL,
                       "unknown vector index type '%s' (auto, flat, ivf_flat, ivf_sq8, ivf_pq or hnsw)",
                       o->type ? o->type : "(null)");
    if (o->nprobe < 1 || o->ef_search < 1 || o->delta_max < 1)
        return qr_fail(err, QR_EINVAL, "vindex nprobe, ef_search and delta_max must be at least 1");
    if (o->train_per_list < 39 || o->train_per_list > 256)
        return qr_fail(err, QR_EINVAL, "vindex train_per_list must be 39..256 (got %zu)", o->train_per_list);
    return QR_OK;
}

/* ---- vector helpers ------------------------------------------------------------------------ */

/* Copies a row normalised to unit length. Zero, NaN and infinite rows cannot be normalised and
 * would poison every inner product, so they are refused. Shared with the GPU path (vindex_int.h),
 * so that both train on exactly the rows the index holds. */
bool vindex_normalize_row(const float *in, float *out, int dim)
{
    double sum = 0;
    for (int i = 0; i < dim; i++) {
        if (!isfinite(in[i]))
            return false;
        sum += (double)in[i] * in[i];
    }
    if (!(sum > 0) || !isfinite(sum))
        return false;
    double inv = 1.0 / sqrt(sum);
    for (int i = 0; i < dim; i++)
        out[i] = (float)(in[i] * inv);
    return true;
}

/* An AVX2 clone of dot_exact is picked at load time where the CPU has it. Products of two
 * floats are exact in double, so fused or vectorised code computes the same sums: every clone
 * gives the same bits. ThreadSanitizer instruments the clone resolver, which runs before its
 * runtime is up, so TSan builds use the plain function. */
#if defined(__SANITIZE_THREAD__)
#define DOT_CLONES
#else
#define DOT_CLONES __attribute__((target_clones("avx2", "default")))
#endif

/* The one exact score: a fixed-order double sum, so that equal rows score equally wherever they
 * sit (BLAS kernels round differently by position). */
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

/* How far a BLAS or FAISS float score of two unit vectors may be from dot_exact's: the float
 * rounding bound d*u (u = FLT_EPSILON/2) doubled for the two sides of a comparison, doubled
 * again for safety. */
static float score_slack(int dim)
{
    return 2.0f * (float)dim * FLT_EPSILON;
}

/* ---- id map: open addressing, int64 keys >= 0 ----------------------------------------------- */

typedef struct {
    int64_t *keys; /* -1: empty */
    int64_t *vals;
    size_t cap, n; /* cap is a power of two */
} idmap;

static size_t idmap_slot(int64_t key, size_t mask)
{
    uint64_t x = (uint64_t)key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x & mask;
}

static bool idmap_get(const idmap *m, int64_t key, int64_t *val)
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
static qr_status idmap_reserve(idmap *m, size_t more)
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

/* Inserts key unless present (an existing value is kept). Call idmap_reserve first. */
static void idmap_put(idmap *m, int64_t key, int64_t val)
{
    if (idmap_get(m, key, NULL))
        return;
    idmap_insert_raw(m->keys, m->vals, m->cap, key, val);
    m->n++;
}

static void idmap_release(idmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* ---- file helpers ---------------------------------------------------------------------------- */

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Size and checksum of a whole file. */
static qr_status hash_file(const char *path, uint64_t *size, uint64_t *hash, char *err)
{
    qr_status st = QR_OK;
    size_t bufsz = 1u << 20;
    char *buf = malloc(bufsz);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (!buf) {
        st = qr_fail(err, QR_ENOMEM, "out of memory reading '%s'", path);
        goto out;
    }
    if (fd < 0) {
        st = qr_fail(err, errno == ENOENT ? QR_ENOTFOUND : QR_EIO, "cannot open '%s': %s", path,
                     strerror(errno));
        goto out;
    }
    qhash h;
    qhash_init(&h);
    uint64_t total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, bufsz);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = qr_fail(err, QR_EIO, "cannot read '%s': %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        qhash_update(&h, buf, (size_t)r);
        total += (uint64_t)r;
    }
    *size = total;
    *hash = qhash_final(&h);
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return st;
}

static qr_status mkdir_p(const char *dir, char *err)
{
    char *p = strdup(dir);
    if (!p)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    qr_status st = QR_OK;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            st = qr_fail(err, QR_EIO, "cannot create directory '%s': %s", p, strerror(errno));
            break;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    free(p);
    if (!st) {
        struct stat sb;
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            st = qr_fail(err, QR_EIO, "'%s' is not a directory", dir);
    }
    return st;
}

/* ---- manifest -------------------------------------------------------------------------------- */

typedef struct {
    uint64_t generation;
    vtype type;
    int dim;
    uint64_t count;
    uint64_t nlist;
    int64_t store_counter;
    uint64_t index_size, index_hash;
    uint64_t vectors_size, vectors_hash;
} manifest;

static void gen_name(char *out, size_t len, uint64_t gen, const char *ext)
{
    snprintf(out, len, "gen-%" PRIu64 ".%s", gen, ext);
}

static qr_status manifest_format(const manifest *m, qr_buf *out)
{
    char idx[64], vec[64];
    gen_name(idx, sizeof(idx), m->generation, "faiss");
    gen_name(vec, sizeof(vec), m->generation, "vec");
    qr_status st =
        qr_buf_printf(out,
                      "quarry-vindex 1\n"
                      "generation %" PRIu64 "\n"
                      "type %s\n"
                      "dim %d\n"
                      "count %" PRIu64 "\n"
                      "nlist %" PRIu64 "\n"
                      "store_counter %" PRId64 "\n"
                      "index %s %" PRIu64 " %016" PRIx64 "\n"
                      "vectors %s %" PRIu64 " %016" PRIx64 "\n",
                      m->generation, type_names[m->type], m->dim, m->count, m->nlist, m->store_counter, idx,
                      m->index_size, m->index_hash, vec, m->vectors_size, m->vectors_hash);
    if (!st)
        st = qr_buf_printf(out, "check %016" PRIx64 "\n", qhash_bytes(qr_buf_str(out), qr_buf_len(out)));
    return st;
}

/* Parses MANIFEST strictly: the exact lines manifest_format writes, in order, with a checksum
 * of everything before the last line. */
static qr_status manifest_parse(const char *path, const char *text, size_t len, manifest *m, char *err)
{
    /* the last line is "check <hex>" over every byte before it */
    const char *check = text + len;
    if (len >= 2 && text[len - 1] == '\n')
        for (check = text + len - 1; check > text && check[-1] != '\n'; check--)
            ;
    unsigned long long sum = 0;
    int used = 0;
    if (check == text + len || strncmp(check, "check ", 6) != 0 ||
        sscanf(check, "check %16llx\n%n", &sum, &used) != 1 || check + used != text + len ||
        sum != qhash_bytes(text, (size_t)(check - text)))
        return qr_fail(err, QR_EIO,
                       "vector index manifest '%s' is corrupted (checksum mismatch or truncated)", path);
    char type[32], idx[64], vec[64], want_idx[64], want_vec[64];
    unsigned long long gen, count, nlist, isize, ihash, vsize, vhash;
    long long counter;
    int dim, version;
    used = 0;
    int got = sscanf(text,
                     "quarry-vindex %d\ngeneration %llu\ntype %31s\ndim %d\ncount %llu\nnlist %llu\n"
                     "store_counter %lld\nindex %63s %llu %16llx\nvectors %63s %llu %16llx\n%n",
                     &version, &gen, type, &dim, &count, &nlist, &counter, idx, &isize, &ihash, vec, &vsize,
                     &vhash, &used);
    if (got != 13 || text + used != check)
        return qr_fail(err, QR_EIO, "vector index manifest '%s' is malformed", path);
    if (version != 1)
        return qr_fail(err, QR_EIO, "vector index manifest '%s' has version %d; this quarry reads version 1",
                       path, version);
    gen_name(want_idx, sizeof(want_idx), gen, "faiss");
    gen_name(want_vec, sizeof(want_vec), gen, "vec");
    /* the names are fixed by the generation, so a manifest cannot point outside the directory */
    if (!parse_type(type, &m->type) || m->type == VT_AUTO || dim < 1 || dim > VINDEX_DIM_MAX ||
        strcmp(idx, want_idx) != 0 || strcmp(vec, want_vec) != 0 || gen == 0)
        return qr_fail(err, QR_EIO, "vector index manifest '%s' has invalid fields", path);
    m->generation = gen;
    m->dim = dim;
    m->count = count;
    m->nlist = nlist;
    m->store_counter = counter;
    m->index_size = isize;
    m->index_hash = ihash;
    m->vectors_size = vsize;
    m->vectors_hash = vhash;
    return QR_OK;
}

/* ---- snapshots ------------------------------------------------------------------------------- */

/* What a search sees. The main part (index, mapped vectors) never changes; the delta and the
 * tombstones grow under `lock`. */
typedef struct vsnap {
    int refs; /* guarded by vindex.snap_lock */
    uint64_t generation;
    vtype type;
    int dim;
    size_t nlist;
    int64_t built_counter;
    FaissIndex *index;
    void *map;
    size_t map_len;
    const int64_t *ids; /* count ascending chunk ids */
    const float *rows;  /* count * dim */
    size_t count;

    pthread_rwlock_t lock;
    int64_t *d_ids;
    float *d_rows;
    int64_t *d_counter;
    size_t d_n, d_cap;
    idmap d_pos; /* id -> position in the delta */
    idmap tomb;  /* id -> counter of the removal */
    int64_t store_counter;
} vsnap;

struct vindex {
    char *dir;
    int dim;
    vindex_opts opts;
    char type_str[16];
    vtype type;
    int lock_fd;
    uint64_t next_gen;

    pthread_mutex_t snap_lock; /* guards cur and every snapshot's refs */
    vsnap *cur;
    pthread_mutex_t write_lock;     /* serialises add, remove and the commit of a build */
    pthread_mutex_t build_lock;     /* one build at a time */
    uint64_t searches, exact_scans; /* atomic counters, for metrics */
};

struct vindex_builder {
    vindex *v;
    int64_t *ids;
    float *rows;
    size_t n, cap;
    bool ascending;
    float *centroids;
    size_t nlist;
};

static vsnap *snap_new(int dim)
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
    s->refs = 1;
    s->dim = dim;
    return s;
}

static void snap_free(vsnap *s)
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
    idmap_release(&s->d_pos);
    idmap_release(&s->tomb);
    pthread_rwlock_destroy(&s->lock);
    free(s);
}

static vsnap *snap_acquire(vindex *v)
{
    pthread_mutex_lock(&v->snap_lock);
    vsnap *s = v->cur;
    s->refs++;
    pthread_mutex_unlock(&v->snap_lock);
    return s;
}

static void snap_release(vindex *v, vsnap *s)
{
    pthread_mutex_lock(&v->snap_lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&v->snap_lock);
    if (last)
        snap_free(s);
}

/* Position of id among the generation's rows, or -1. */
static ssize_t main_find(const vsnap *s, int64_t id)
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

static bool tombstoned(const vsnap *s, int64_t id)
{
    return idmap_get(&s->tomb, id, NULL);
}

/* Applies the configured search-time parameters to a FAISS index. */
static qr_status apply_search_params(FaissIndex *index, vtype type, const vindex_opts *o, char *err)
{
    if (is_ivf(type)) {
        FaissIndexIVF *ivf = faiss_IndexIVF_cast(index);
        if (!ivf)
            return qr_fail(err, QR_EINTERNAL, "vector index is not an IVF index");
        size_t nlist = faiss_IndexIVF_nlist(ivf);
        faiss_IndexIVF_set_nprobe(ivf, o->nprobe < nlist ? o->nprobe : nlist);
    } else if (type == VT_HNSW) {
        FaissParameterSpace *ps = NULL;
        if (faiss_ParameterSpace_new(&ps) != 0)
            return faiss_fail(err, "cannot set HNSW efSearch");
        int rc = faiss_ParameterSpace_set_index_parameter(ps, index, "efSearch", (double)o->ef_search);
        faiss_ParameterSpace_free(ps);
        if (rc != 0)
            return faiss_fail(err, "cannot set HNSW efSearch");
    }
    return QR_OK;
}

/* ---- the vectors file ------------------------------------------------------------------------ */

static size_t vec_rows_offset(uint64_t count)
{
    size_t off = VEC_HEADER + (size_t)count * sizeof(int64_t);
    return (off + 63) & ~(size_t)63;
}

/* Writes ids (ascending) and rows to path, syncs it, and returns its size and checksum. */
static qr_status vec_write(const char *path, int dim, const int64_t *ids, const float *rows, size_t count,
                           uint64_t *size, uint64_t *hash, char *err)
{
    qr_status st = QR_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return qr_fail(err, QR_EIO, "cannot create '%s': %s", path, strerror(errno));
    uint8_t header[VEC_HEADER] = {0};
    uint32_t d = (uint32_t)dim;
    uint64_t c = count, ids_off = VEC_HEADER, rows_off = vec_rows_offset(count);
    memcpy(header, VEC_MAGIC, 8);
    memcpy(header + 8, &d, 4);
    memcpy(header + 16, &c, 8);
    memcpy(header + 24, &ids_off, 8);
    memcpy(header + 32, &rows_off, 8);
    static const uint8_t pad[64];
    size_t pad_n = rows_off - VEC_HEADER - count * sizeof(int64_t);
    qhash h;
    qhash_init(&h);
    qhash_update(&h, header, sizeof(header));
    qhash_update(&h, ids, count * sizeof(int64_t));
    qhash_update(&h, pad, pad_n);
    qhash_update(&h, rows, count * (size_t)dim * sizeof(float));
    if ((st = index_write_all(fd, header, sizeof(header), path, err)) ||
        (st = index_write_all(fd, ids, count * sizeof(int64_t), path, err)) ||
        (st = index_write_all(fd, pad, pad_n, path, err)) ||
        (st = index_write_all(fd, rows, count * (size_t)dim * sizeof(float), path, err)))
        goto out;
    if (fsync(fd) != 0) {
        st = qr_fail(err, QR_EIO, "cannot sync '%s': %s", path, strerror(errno));
        goto out;
    }
    *size = rows_off + count * (size_t)dim * sizeof(float);
    *hash = qhash_final(&h);
out:
    close(fd);
    return st;
}

/* Maps a vectors file into s. When want_hash is set the whole file is checked against it. */
static qr_status vec_map(vsnap *s, const char *path, const manifest *m, bool check_hash, char *err)
{
    qr_status st = QR_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qr_fail(err, errno == ENOENT ? QR_ENOTFOUND : QR_EIO, "cannot open vectors file '%s': %s",
                       path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = qr_fail(err, QR_EIO, "cannot stat '%s': %s", path, strerror(errno));
        goto out;
    }
    if ((uint64_t)sb.st_size != m->vectors_size || m->vectors_size < VEC_HEADER) {
        st = qr_fail(err, QR_EIO, "vectors file '%s' has %lld bytes, the manifest says %" PRIu64, path,
                     (long long)sb.st_size, m->vectors_size);
        goto out;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        st = qr_fail(err, QR_EIO, "cannot map '%s': %s", path, strerror(errno));
        goto out;
    }
    s->map = map;
    s->map_len = (size_t)sb.st_size;
    if (check_hash && qhash_bytes(map, s->map_len) != m->vectors_hash) {
        st = qr_fail(err, QR_EIO, "vectors file '%s' is corrupted (checksum mismatch)", path);
        goto out;
    }
    const uint8_t *h = map;
    uint32_t d;
    uint64_t c, ids_off, rows_off;
    memcpy(&d, h + 8, 4);
    memcpy(&c, h + 16, 8);
    memcpy(&ids_off, h + 24, 8);
    memcpy(&rows_off, h + 32, 8);
    if (memcmp(h, VEC_MAGIC, 8) != 0 || (int)d != m->dim || c != m->count || ids_off != VEC_HEADER ||
        c > (SIZE_MAX - VEC_HEADER) / sizeof(int64_t) || rows_off != vec_rows_offset(c) ||
        rows_off + c * d * sizeof(float) != s->map_len) {
        st = qr_fail(err, QR_EIO, "vectors file '%s' has an invalid header", path);
        goto out;
    }
    s->ids = (const int64_t *)(h + ids_off);
    s->rows = (const float *)(h + rows_off);
    s->count = (size_t)c;
    for (size_t i = 1; i < s->count; i++) {
        if (s->ids[i] <= s->ids[i - 1]) {
            st = qr_fail(err, QR_EIO, "vectors file '%s' has unsorted ids", path);
            goto out;
        }
    }
    /* the exact paths jump around the rows: tell the kernel not to read ahead */
    madvise(map, s->map_len, MADV_RANDOM);
out:
    close(fd);
    return st;
}

/* Checks that a FAISS index read from disk is what the manifest describes. */
static qr_status check_loaded_index(FaissIndex *index, const manifest *m, const char *path, char *err)
{
    if (faiss_Index_d(index) != m->dim || (uint64_t)faiss_Index_ntotal(index) != m->count ||
        faiss_Index_metric_type(index) != METRIC_INNER_PRODUCT)
        return qr_fail(err, QR_EIO,
                       "index file '%s' does not match its manifest (dimension, count or metric)", path);
    bool ok = true;
    switch (m->type) {
    case VT_FLAT: {
        FaissIndexIDMap *map = faiss_IndexIDMap_cast(index);
        ok = map && faiss_IndexFlat_cast(faiss_IndexIDMap_sub_index(map));
        break;
    }
    case VT_IVF_FLAT: ok = faiss_IndexIVFFlat_cast(index) != NULL; break;
    case VT_IVF_SQ8: ok = faiss_IndexIVFScalarQuantizer_cast(index) != NULL; break;
    case VT_IVF_PQ:
        /* the C API has no cast for the fast-scan PQ index: IVF, and neither of the others */
        ok = faiss_IndexIVF_cast(index) && !faiss_IndexIVFFlat_cast(index) &&
             !faiss_IndexIVFScalarQuantizer_cast(index);
        break;
    case VT_HNSW: {
        FaissIndexIDMap *map = faiss_IndexIDMap_cast(index);
        ok = map && !faiss_IndexFlat_cast(faiss_IndexIDMap_sub_index(map));
        break;
    }
    default: ok = false;
    }
    if (ok && is_ivf(m->type))
        ok = faiss_IndexIVF_nlist(faiss_IndexIVF_cast(index)) == m->nlist;
    if (!ok)
        return qr_fail(err, QR_EIO, "index file '%s' is not of type %s", path, type_names[m->type]);
    return QR_OK;
}

/* Loads the generation a manifest names, checking every file against it. */
static qr_status load_generation(const vindex *v, const manifest *m, vsnap **out, char *err)
{
    qr_status st = QR_OK;
    char name[64];
    char *ipath = NULL, *vpath = NULL;
    vsnap *s = snap_new(m->dim);
    if (!s)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    gen_name(name, sizeof(name), m->generation, "faiss");
    ipath = path_join(v->dir, name);
    gen_name(name, sizeof(name), m->generation, "vec");
    vpath = path_join(v->dir, name);
    if (!ipath || !vpath) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    uint64_t size = 0, hash = 0;
    if ((st = hash_file(ipath, &size, &hash, err))) {
        if (st == QR_ENOTFOUND)
            qr_fail(err, QR_EIO, "vector index manifest names '%s', which is missing", ipath);
        st = QR_EIO;
        goto out;
    }
    if (size != m->index_size || hash != m->index_hash) {
        st = qr_fail(err, QR_EIO, "index file '%s' is corrupted (%s mismatch)", ipath,
                     size != m->index_size ? "size" : "checksum");
        goto out;
    }
    /* FAISS only reads a file whose checksum we verified: it trusts what it reads */
    if (faiss_read_index_fname(ipath, 0, &s->index) != 0) {
        st = faiss_fail(err, "cannot read the FAISS index");
        st = QR_EIO;
        goto out;
    }
    if ((st = check_loaded_index(s->index, m, ipath, err)))
        goto out;
    if ((st = vec_map(s, vpath, m, true, err))) {
        if (st == QR_ENOTFOUND)
            qr_fail(err, QR_EIO, "vector index manifest names '%s', which is missing", vpath);
        st = QR_EIO;
        goto out;
    }
    if ((st = apply_search_params(s->index, m->type, &v->opts, err)))
        goto out;
    s->generation = m->generation;
    s->type = m->type;
    s->nlist = (size_t)m->nlist;
    s->built_counter = m->store_counter;
    s->store_counter = m->store_counter;
out:
    free(ipath);
    free(vpath);
    if (st) {
        snap_free(s);
        s = NULL;
    }
    *out = s;
    return st;
}

/* Largest generation number among the files in dir, so that a new one never reuses a name. */
static uint64_t max_generation_on_disk(const char *dir)
{
    uint64_t max = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned long long g;
        if (sscanf(e->d_name, "gen-%llu.", &g) == 1 && g > max)
            max = g;
    }
    closedir(d);
    return max;
}

/* Removes every file an interrupted or superseded build left: temporary files and generation
 * files other than `keep` (0 keeps none). */
static void remove_leftovers(const char *dir, uint64_t keep)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned long long g;
        size_t len = strlen(e->d_name);
        bool tmp = len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0;
        bool gen = sscanf(e->d_name, "gen-%llu.", &g) == 1;
        if (!tmp && (!gen || g == keep))
            continue;
        char *p = path_join(dir, e->d_name);
        if (p && unlink(p) == 0)
            qr_log(QR_LOG_INFO, LOG_COMPONENT, "removed leftover vector index file '%s'", p);
        free(p);
    }
    closedir(d);
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
        snap_free(v->cur);
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
    v->opts = *o;
    v->type = type;
    snprintf(v->type_str, sizeof(v->type_str), "%s", type_names[type]);
    v->opts.type = v->type_str;
    pthread_mutex_init(&v->snap_lock, NULL);
    pthread_mutex_init(&v->write_lock, NULL);
    pthread_mutex_init(&v->build_lock, NULL);

    static pthread_once_t blas_check = PTHREAD_ONCE_INIT;
    pthread_once(&blas_check, warn_slow_blas);
    if ((st = mkdir_p(dir, err)))
        goto out;
    mpath = path_join(dir, MANIFEST_NAME);
    lpath = path_join(dir, LOCK_NAME);
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
    } else if ((problem_st = manifest_parse(mpath, text, len, &m, problem)) == QR_OK) {
        manifest_ok = true;
        if (m.dim != dim) {
            problem_st = QR_EINVAL;
            snprintf(problem, sizeof(problem),
                     "vector index '%s' holds %d-dimensional vectors, the embeddings have %d dimensions", dir,
                     m.dim, dim);
        } else if ((problem_st = load_generation(v, &m, &v->cur, problem)) != QR_OK) {
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
        v->cur = snap_new(dim);
        if (!v->cur) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
    }
    v->next_gen = max_generation_on_disk(dir) + 1;
    if (v->next_gen <= m.generation)
        v->next_gen = m.generation + 1;
    /* only with a trustworthy manifest do we know which files are leftovers */
    if (manifest_ok) {
        remove_leftovers(dir, m.generation);
        char *tmp = path_join(dir, MANIFEST_TMP);
        if (tmp)
            unlink(tmp);
        free(tmp);
    }
out:
    free(text);
    free(mpath);
    free(lpath);
    if (st) {
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
    vsnap *s = snap_acquire(v);
    out->generation = s->generation;
    snprintf(out->type, sizeof(out->type), "%s", type_names[s->type]);
    out->dim = s->dim;
    out->count = s->count;
    out->nlist = s->nlist;
    if (is_ivf(s->type))
        out->nprobe = faiss_IndexIVF_nprobe(faiss_IndexIVF_cast(s->index));
    if (s->type == VT_HNSW)
        out->ef_search = v->opts.ef_search;
    out->built_counter = s->built_counter;
    pthread_rwlock_rdlock(&s->lock);
    out->delta = s->d_n;
    out->tombstones = s->tomb.n;
    out->store_counter = s->store_counter;
    pthread_rwlock_unlock(&s->lock);
    snap_release(v, s);
    out->searches = __atomic_load_n(&v->searches, __ATOMIC_RELAXED);
    out->exact_scans = __atomic_load_n(&v->exact_scans, __ATOMIC_RELAXED);
}

qr_status vindex_get_centroids(vindex *v, float *out, size_t nlist, char *err)
{
    qr_status st = QR_OK;
    vsnap *s = snap_acquire(v);
    if (!is_ivf(s->type)) {
        st = qr_fail(err, QR_EINVAL, "the served vector index is %s, not IVF", type_names[s->type]);
        goto out;
    }
    FaissIndex *q = faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(s->index));
    if (nlist != s->nlist || (size_t)faiss_Index_ntotal(q) != nlist) {
        st = qr_fail(err, QR_EINVAL, "the served IVF index has %zu lists, not %zu", s->nlist, nlist);
        goto out;
    }
    if (faiss_Index_reconstruct_n(q, 0, (idx_t)nlist, out) != 0)
        st = faiss_fail(err, "cannot read the IVF centroids");
out:
    snap_release(v, s);
    return st;
}

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

static size_t isqrt_round(double x)
{
    return (size_t)llround(sqrt(x));
}

/* nlist for n vectors: about 4*sqrt(n), but never fewer than 39 training points per list
 * (FAISS's k-means warns below that and the lists turn to noise). */
static size_t choose_nlist(const vindex_opts *o, size_t n)
{
    size_t nlist = o->nlist ? o->nlist : 4 * isqrt_round((double)n);
    if (!o->nlist && nlist > n / 39)
        nlist = n / 39;
    if (nlist > n)
        nlist = n;
    return nlist ? nlist : 1;
}

static vtype choose_type_for(vtype configured, const vindex_opts *o, size_t n)
{
    if (n == 0)
        return VT_FLAT;
    if (configured == VT_AUTO)
        return n <= o->exact_threshold ? VT_FLAT : VT_IVF_SQ8;
    return configured;
}

static vtype choose_type(const vindex *v, size_t n)
{
    return choose_type_for(v->type, &v->opts, n);
}

bool vindex_plan_ivf(const vindex_opts *o, size_t n, size_t *nlist)
{
    vtype configured, type;
    if (nlist)
        *nlist = 0;
    if (!o || !o->type || !parse_type(o->type, &configured))
        return false;
    type = choose_type_for(configured, o, n);
    if (type != VT_IVF_FLAT && type != VT_IVF_SQ8 && type != VT_IVF_PQ)
        return false;
    if (nlist)
        *nlist = choose_nlist(o, n);
    return true;
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
            st = faiss_fail(err, "cannot create the FAISS index");
            goto out;
        }
    } else {
        nlist = b->centroids ? b->nlist : choose_nlist(&b->v->opts, b->n);
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
            st = faiss_fail(err, "cannot create the IVF index");
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
                st = faiss_fail(err, "cannot train the IVF index");
                goto out;
            }
        }
    }
    if (b->n && faiss_Index_add_with_ids(index, (idx_t)b->n, b->rows, b->ids) != 0) {
        st = faiss_fail(err, "cannot add vectors to the FAISS index");
        goto out;
    }
    if ((st = apply_search_params(index, type, &b->v->opts, err)))
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
        if (old->d_counter[i] > counter && main_find(s, old->d_ids[i]) < 0)
            keep++;
    if (old->dim != d && (keep || old->tomb.n)) {
        st =
            qr_fail(err, QR_EINVAL, "changes of another dimension cannot be carried into the new generation");
        goto out;
    }
    if (keep) {
        s->d_ids = malloc(keep * sizeof(int64_t));
        s->d_counter = malloc(keep * sizeof(int64_t));
        s->d_rows = malloc(keep * (size_t)d * sizeof(float));
        if (!s->d_ids || !s->d_counter || !s->d_rows || idmap_reserve(&s->d_pos, keep)) {
            st = qr_fail(err, QR_ENOMEM, "out of memory carrying the delta over");
            goto out;
        }
        s->d_cap = keep;
        for (size_t i = 0; i < old->d_n; i++) {
            if (old->d_counter[i] <= counter || main_find(s, old->d_ids[i]) >= 0)
                continue;
            s->d_ids[s->d_n] = old->d_ids[i];
            s->d_counter[s->d_n] = old->d_counter[i];
            memcpy(s->d_rows + s->d_n * (size_t)d, old->d_rows + i * (size_t)d, (size_t)d * sizeof(float));
            idmap_put(&s->d_pos, old->d_ids[i], (int64_t)s->d_n);
            s->d_n++;
        }
    }
    if (old->tomb.n) {
        if (idmap_reserve(&s->tomb, old->tomb.n)) {
            st = qr_fail(err, QR_ENOMEM, "out of memory carrying the tombstones over");
            goto out;
        }
        for (size_t i = 0; i < old->tomb.cap; i++) {
            int64_t id = old->tomb.keys[i];
            if (id == -1 || old->tomb.vals[i] <= counter)
                continue;
            if (main_find(s, id) >= 0 || idmap_get(&s->d_pos, id, NULL))
                idmap_put(&s->tomb, id, old->tomb.vals[i]);
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
    char iname[64], vname[64];
    char *ipath = NULL, *vpath = NULL, *itmp = NULL, *vtmp = NULL, *mpath = NULL, *mtmp = NULL;
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
    vtype type = choose_type(v, b->n);
    size_t nlist = 0;
    if ((st = build_faiss(b, type, &index, &nlist, err)))
        goto out;

    uint64_t gen = __atomic_fetch_add(&v->next_gen, 1, __ATOMIC_RELAXED);
    gen_name(iname, sizeof(iname), gen, "faiss");
    gen_name(vname, sizeof(vname), gen, "vec");
    ipath = path_join(v->dir, iname);
    vpath = path_join(v->dir, vname);
    mpath = path_join(v->dir, MANIFEST_NAME);
    mtmp = path_join(v->dir, MANIFEST_TMP);
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
                  .store_counter = store_counter};
    files_made = true;
    if (faiss_write_index_fname(index, itmp) != 0) {
        st = faiss_fail(err, "cannot write the FAISS index");
        st = QR_EIO;
        goto out;
    }
    if ((st = index_fsync_path(itmp, false, err)) ||
        (st = hash_file(itmp, &m.index_size, &m.index_hash, err)))
        goto out;
    if ((st = vec_write(vtmp, d, b->ids, b->rows, b->n, &m.vectors_size, &m.vectors_hash, err)))
        goto out;
    if (rename(itmp, ipath) != 0 || rename(vtmp, vpath) != 0) {
        st = qr_fail(err, QR_EIO, "cannot rename the generation files in '%s': %s", v->dir, strerror(errno));
        goto out;
    }
    if ((st = index_fsync_path(v->dir, true, err)))
        goto out;
    hook("files_written");

    s = snap_new(d);
    if (!s) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    if ((st = vec_map(s, vpath, &m, false, err)))
        goto out;
    s->index = index;
    index = NULL;
    s->generation = gen;
    s->type = type;
    s->nlist = nlist;
    s->built_counter = store_counter;
    s->store_counter = store_counter;
    /* the builder's copy of the rows is no longer needed: the mapped file has them */
    free(b->rows);
    b->rows = NULL;

    hook("before_commit");
    pthread_mutex_lock(&v->write_lock);
    write_locked = true;
    old = v->cur;
    if ((st = carry_over(old, s, store_counter, err)))
        goto out;
    if ((st = manifest_format(&m, &mtext))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory formatting the manifest");
        goto out;
    }
    int fd = open(mtmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        st = qr_fail(err, QR_EIO, "cannot create '%s': %s", mtmp, strerror(errno));
        goto out;
    }
    st = index_write_all(fd, qr_buf_str(&mtext), qr_buf_len(&mtext), mtmp, err);
    if (!st && fsync(fd) != 0)
        st = qr_fail(err, QR_EIO, "cannot sync '%s': %s", mtmp, strerror(errno));
    close(fd);
    if (st)
        goto out;
    hook("manifest_written");
    /* the commit point: before this rename the old generation is the one on disk */
    if (rename(mtmp, mpath) != 0) {
        st = qr_fail(err, QR_EIO, "cannot rename '%s': %s", mtmp, strerror(errno));
        goto out;
    }
    files_made = false;
    if (index_fsync_path(v->dir, true, NULL) != QR_OK)
        qr_log(QR_LOG_WARN, LOG_COMPONENT, "cannot sync directory '%s' after publishing generation %" PRIu64,
               v->dir, gen);
    hook("published");
    pthread_mutex_lock(&v->snap_lock);
    v->cur = s;
    pthread_mutex_unlock(&v->snap_lock);
    s = NULL;
    pthread_mutex_unlock(&v->write_lock);
    write_locked = false;
    snap_release(v, old); /* searches still holding it keep its index and mapping alive */
    remove_leftovers(v->dir, gen);
    qr_log(QR_LOG_INFO, LOG_COMPONENT,
           "published vector index generation %" PRIu64 ": %s, %zu vectors, %.1f s", gen, type_names[type],
           b->n, (double)(qr_now_ns() - t0) / 1e9);
out:
    if (write_locked)
        pthread_mutex_unlock(&v->write_lock);
    if (files_made) {
        /* nothing was committed: the old generation stays; remove what this build wrote */
        const char *paths[] = {itmp, vtmp, ipath, vpath, mtmp};
        for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
            if (paths[i])
                unlink(paths[i]);
    }
    if (index)
        faiss_Index_free(index);
    snap_free(s);
    qr_buf_release(&mtext);
    free(ipath);
    free(vpath);
    free(itmp);
    free(vtmp);
    free(mpath);
    free(mtmp);
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
        if ((st = vindex_build_add(b, ids, vecs, n, v->dim, err)))
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

/* ---- incremental changes --------------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
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
    qsort(sorted, n, sizeof(int64_t), cmp_i64);
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
        if (main_find(s, ids[i]) >= 0 || idmap_get(&s->d_pos, ids[i], NULL)) {
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
    if (idmap_reserve(&s->d_pos, n)) {
        pthread_rwlock_unlock(&s->lock);
        st = qr_fail(err, QR_ENOMEM, "out of memory growing the delta");
        goto unlock;
    }
    memcpy(s->d_rows + s->d_n * (size_t)d, rows, n * (size_t)d * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        s->d_ids[s->d_n + i] = ids[i];
        s->d_counter[s->d_n + i] = store_counter;
        idmap_put(&s->d_pos, ids[i], (int64_t)(s->d_n + i));
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
    if (idmap_reserve(&s->tomb, n)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory growing the tombstones");
    } else {
        for (size_t i = 0; i < n; i++)
            idmap_put(&s->tomb, ids[i], store_counter);
        if (store_counter > s->store_counter)
            s->store_counter = store_counter;
    }
    pthread_rwlock_unlock(&s->lock);
    pthread_mutex_unlock(&v->write_lock);
    return st;
}

bool vindex_needs_rebuild(vindex *v)
{
    vsnap *s = snap_acquire(v);
    pthread_rwlock_rdlock(&s->lock);
    bool r = s->d_n + s->tomb.n > v->opts.delta_max;
    pthread_rwlock_unlock(&s->lock);
    snap_release(v, s);
    return r;
}

/* ---- search ---------------------------------------------------------------------------------- */

typedef struct {
    float score;
    int64_t id;
} hit;

typedef struct {
    hit *v;
    size_t n, cap;
} hits;

static qr_status hits_push(hits *h, float score, int64_t id)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        hit *nv = realloc(h->v, cap * sizeof(hit));
        if (!nv)
            return QR_ENOMEM;
        h->v = nv;
        h->cap = cap;
    }
    h->v[h->n].score = score;
    h->v[h->n].id = id;
    h->n++;
    return QR_OK;
}

/* Best first; equal scores by smaller id. */
static int cmp_hit(const void *a, const void *b)
{
    const hit *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Candidates of an exact scan: a bounded heap on approximate (BLAS) scores whose root is the
 * worst kept candidate. */
typedef struct {
    float approx;
    int64_t id;
    const float *row;
} cand;

typedef struct {
    cand *v;
    size_t n, cap;
} cheap;

static bool cand_worse(const cand *a, const cand *b)
{
    return a->approx < b->approx || (a->approx == b->approx && a->id > b->id);
}

static void cheap_sift_down(cheap *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < h->n && cand_worse(&h->v[l], &h->v[w]))
            w = l;
        if (r < h->n && cand_worse(&h->v[r], &h->v[w]))
            w = r;
        if (w == i)
            return;
        cand t = h->v[i];
        h->v[i] = h->v[w];
        h->v[w] = t;
        i = w;
    }
}

static bool cheap_wants(const cheap *h, float approx)
{
    return h->n < h->cap || approx >= h->v[0].approx;
}

static void cheap_offer(cheap *h, float approx, int64_t id, const float *row)
{
    cand c = {approx, id, row};
    if (h->n < h->cap) {
        size_t i = h->n++;
        h->v[i] = c;
        while (i && cand_worse(&h->v[i], &h->v[(i - 1) / 2])) {
            cand t = h->v[i];
            h->v[i] = h->v[(i - 1) / 2];
            h->v[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
        return;
    }
    if (!cand_worse(&h->v[0], &c))
        return;
    h->v[0] = c;
    cheap_sift_down(h, 0);
}

static int cmp_cand_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (cand_worse(x, y))
        return 1;
    if (cand_worse(y, x))
        return -1;
    return 0;
}

/* Turns an exact scan's candidates into exact hits. Every chunk of the true top k has an
 * approximate score within the slack of the k-th approximate one, so those candidates are
 * re-scored exactly; when the heap is full down to that band, chunks beyond it may belong too
 * and *retry asks for a larger heap. */
static qr_status cheap_finish(cheap *h, size_t k, const float *q, int dim, hits *out, bool *retry)
{
    *retry = false;
    if (h->n == 0)
        return QR_OK;
    qsort(h->v, h->n, sizeof(cand), cmp_cand_desc);
    float slack = score_slack(dim);
    float floor = h->n >= k ? h->v[k - 1].approx - slack : -INFINITY;
    if (h->n == h->cap && h->v[h->n - 1].approx >= floor) {
        *retry = true;
        return QR_OK;
    }
    for (size_t i = 0; i < h->n && h->v[i].approx >= floor; i++)
        if (hits_push(out, dot_exact(h->v[i].row, q, dim), h->v[i].id))
            return QR_ENOMEM;
    return QR_OK;
}

typedef struct {
    const vsnap *s;
    vindex_permit_fn permit;
    void *ctx;
} filter;

static bool filter_pass(const filter *f, int64_t id)
{
    return !tombstoned(f->s, id) && (!f->permit || f->permit(f->ctx, id));
}

/* Rows per BLAS call in the exact scans. OpenBLAS hands a gemv of 2304*4 elements or more to its
 * worker threads, which then spin between calls; searches already run on many request threads,
 * so each call stays below that size and runs on the calling thread. */
static size_t scan_block(int dim)
{
    size_t rows = 8192 / (size_t)dim;
    return rows < 1 ? 1 : rows > SCAN_BLOCK ? SCAN_BLOCK : rows;
}

/* Offers rows[0..n) (ids[i], contiguous) scored by BLAS to the heap. */
static void scan_rows(cheap *h, const float *rows, const int64_t *ids, size_t n, const float *q, int dim,
                      const filter *f, float *scores)
{
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)n, dim, 1.0f, rows, dim, q, 1, 0.0f, scores, 1);
    for (size_t i = 0; i < n; i++) {
        if (!cheap_wants(h, scores[i]) || !filter_pass(f, ids[i]))
            continue;
        cheap_offer(h, scores[i], ids[i], rows + i * (size_t)dim);
    }
}

/* Exact top k over contiguous rows (the main vectors or the delta) with the filter, into out. */
static qr_status exact_scan(const float *rows, const int64_t *ids, size_t count, const float *q, int dim,
                            size_t k, const filter *f, hits *out, char *err)
{
    qr_status st = QR_OK;
    size_t margin = EXACT_MARGIN;
    float *scores = malloc(SCAN_BLOCK * sizeof(float));
    cheap h = {0};
    if (!scores) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    for (;;) {
        h.cap = k + margin;
        free(h.v);
        h.n = 0;
        h.v = malloc(h.cap * sizeof(cand));
        if (!h.v) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        size_t blk = scan_block(dim);
        for (size_t i = 0; i < count; i += blk) {
            size_t n = count - i < blk ? count - i : blk;
            scan_rows(&h, rows + i * (size_t)dim, ids + i, n, q, dim, f, scores);
        }
        bool retry;
        if (cheap_finish(&h, k, q, dim, out, &retry)) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        if (!retry)
            break;
        margin *= 4;
    }
out:
    free(h.v);
    free(scores);
    return st;
}

/* ANN over the main index with adaptive over-fetch; falls back to exact_scan. Appends to out. */
static qr_status search_main(vindex *v, const vsnap *s, const float *q, size_t k, const filter *f, hits *out,
                             char *err)
{
    qr_status st = QR_OK;
    int dim = s->dim;
    size_t base = out->n; /* the delta's hits stay; main hits are redone each round */
    size_t kf = rerank_depth(s->type) * k, kf_max = 32 * k > OVERFETCH_MIN_MAX ? 32 * k : OVERFETCH_MIN_MAX;
    float *dist = NULL;
    idx_t *labels = NULL;
    bool exact = false;
    hits sorted = {0};
    if (kf > s->count)
        kf = s->count;
    for (;;) {
        float *nd = realloc(dist, kf * sizeof(float));
        if (nd)
            dist = nd;
        idx_t *nl = nd ? realloc(labels, kf * sizeof(idx_t)) : NULL;
        if (!nl) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        labels = nl;
        if (faiss_Index_search(s->index, 1, q, (idx_t)kf, dist, labels) != 0) {
            st = faiss_fail(err, "vector search failed");
            goto out;
        }
        out->n = base;
        size_t nret = 0;
        for (; nret < kf && labels[nret] >= 0; nret++) {
            int64_t id = labels[nret];
            if (!filter_pass(f, id))
                continue;
            ssize_t pos = main_find(s, id);
            if (pos < 0)
                continue; /* cannot happen with a verified generation */
            if (hits_push(out, dot_exact(s->rows + (size_t)pos * (size_t)dim, q, dim), id)) {
                st = qr_fail(err, QR_ENOMEM, "out of memory");
                goto out;
            }
        }
        bool all = nret == s->count;
        bool enough = out->n >= k;
        if (nret == 0 && !enough) {
            exact = true;
            break;
        }
        if (enough && s->type == VT_FLAT && !all && nret) {
            /* exact index: done only when no unfetched chunk can reach the k-th score or tie it */
            sorted.n = 0;
            for (size_t i = 0; i < out->n; i++)
                if (hits_push(&sorted, out->v[i].score, out->v[i].id)) {
                    st = qr_fail(err, QR_ENOMEM, "out of memory");
                    goto out;
                }
            qsort(sorted.v, sorted.n, sizeof(hit), cmp_hit);
            enough = sorted.v[k - 1].score > dist[nret - 1] + score_slack(dim);
        }
        if (enough || all)
            break;
        /* a flat index costs a full scan per round: one exact scan with the filter is cheaper
         * than fetching more */
        if (nret < kf || kf >= kf_max || s->type == VT_FLAT) {
            /* the ANN index has nothing more to give (IVF lists visited, HNSW frontier), or the
             * predicate rejects nearly everything: only an exact scan can find k */
            exact = true;
            break;
        }
        /* each IVF round costs a full nprobe scan whatever kf is: jump by the pass rate seen so
         * far (half again for luck) rather than in fixed steps */
        size_t passed = out->n - base, grow = OVERFETCH_MAX_GROWTH;
        if (passed)
            grow = (3 * k * nret) / (2 * passed * kf) + 1;
        grow = grow < OVERFETCH_MIN_GROWTH   ? OVERFETCH_MIN_GROWTH
               : grow > OVERFETCH_MAX_GROWTH ? OVERFETCH_MAX_GROWTH
                                             : grow;
        kf = kf * grow < s->count ? kf * grow : s->count;
        if (kf > kf_max)
            kf = kf_max;
    }
    if (exact) {
        __atomic_fetch_add(&v->exact_scans, 1, __ATOMIC_RELAXED);
        out->n = base;
        st = exact_scan(s->rows, s->ids, s->count, q, dim, k, f, out, err);
    }
out:
    free(dist);
    free(labels);
    free(sorted.v);
    return st;
}

static qr_status check_query(const vindex *v, const float *query, int dim, size_t k, int64_t *ids,
                             float *scores, size_t *found, float **q, char *err)
{
    *q = NULL;
    if (!query || !ids || !scores || !found)
        return qr_fail(err, QR_EINVAL, "vector search: missing argument");
    *found = 0;
    if (dim != v->dim)
        return qr_fail(err, QR_EINVAL, "query dimension %d does not match the index's %d", dim, v->dim);
    if (k < 1 || k > VINDEX_K_MAX)
        return qr_fail(err, QR_EINVAL, "k must be 1..%d (got %zu)", VINDEX_K_MAX, k);
    *q = malloc((size_t)dim * sizeof(float));
    if (!*q)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    if (!vindex_normalize_row(query, *q, dim)) {
        free(*q);
        *q = NULL;
        return qr_fail(err, QR_EINVAL, "query vector is zero or not finite");
    }
    return QR_OK;
}

static void emit(hits *h, size_t k, int64_t *ids, float *scores, size_t *found)
{
    if (h->n)
        qsort(h->v, h->n, sizeof(hit), cmp_hit);
    size_t n = h->n < k ? h->n : k;
    for (size_t i = 0; i < n; i++) {
        ids[i] = h->v[i].id;
        scores[i] = h->v[i].score;
    }
    *found = n;
}

qr_status vindex_search(vindex *v, const float *query, int dim, size_t k, vindex_permit_fn permit, void *ctx,
                        int64_t *ids, float *scores, size_t *found, char *err)
{
    float *q = NULL;
    if (!v)
        return qr_fail(err, QR_EINVAL, "vector search: missing index");
    qr_status st = check_query(v, query, dim, k, ids, scores, found, &q, err);
    if (st)
        return st;
    hits h = {0};
    vsnap *s = snap_acquire(v);
    if (s->dim != dim) {
        st = qr_fail(err, QR_EINVAL, "the served vector index has dimension %d: build it first", s->dim);
        goto release;
    }
    filter f = {s, permit, ctx};
    pthread_rwlock_rdlock(&s->lock);
    if (s->d_n && (st = exact_scan(s->d_rows, s->d_ids, s->d_n, q, dim, k, &f, &h, err)))
        goto unlock;
    if (s->count && (st = search_main(v, s, q, k, &f, &h, err)))
        goto unlock;
    __atomic_fetch_add(&v->searches, 1, __ATOMIC_RELAXED);
    emit(&h, k, ids, scores, found);
unlock:
    pthread_rwlock_unlock(&s->lock);
release:
    snap_release(v, s);
    free(h.v);
    free(q);
    return st;
}

qr_status vindex_search_subset(vindex *v, const float *query, int dim, size_t k, const int64_t *permitted,
                               size_t n, int64_t *ids, float *scores, size_t *found, char *err)
{
    float *q = NULL;
    if (!v || (n && !permitted))
        return qr_fail(err, QR_EINVAL, "vector search: missing argument");
    qr_status st = check_query(v, query, dim, k, ids, scores, found, &q, err);
    if (st)
        return st;
    hits h = {0};
    cheap c = {0};
    int64_t *sorted = NULL, *bids = NULL;
    float *block = NULL, *bscores = NULL;
    const float **brows = NULL;
    const int64_t *list = permitted;
    vsnap *s = NULL;

    /* ascending ids walk the mapped rows forwards and make duplicates adjacent */
    bool asc = true;
    for (size_t i = 1; i < n && asc; i++)
        asc = permitted[i - 1] < permitted[i];
    if (!asc) {
        sorted = malloc(n * sizeof(int64_t));
        if (!sorted) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(sorted, permitted, n * sizeof(int64_t));
        qsort(sorted, n, sizeof(int64_t), cmp_i64);
        list = sorted;
    }
    block = malloc((size_t)SCAN_BLOCK * (size_t)dim * sizeof(float));
    bscores = malloc(SCAN_BLOCK * sizeof(float));
    bids = malloc(SCAN_BLOCK * sizeof(int64_t));
    brows = malloc(SCAN_BLOCK * sizeof(*brows));
    if (!block || !bscores || !bids || !brows) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    s = snap_acquire(v);
    if (s->dim != dim) {
        st = qr_fail(err, QR_EINVAL, "the served vector index has dimension %d: build it first", s->dim);
        goto out;
    }
    pthread_rwlock_rdlock(&s->lock);
    size_t margin = EXACT_MARGIN, blk = scan_block(dim);
    for (;;) {
        c.cap = k + margin;
        free(c.v);
        c.n = 0;
        c.v = malloc(c.cap * sizeof(cand));
        if (!c.v) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            break;
        }
        size_t lo = 0, nb = 0;
        for (size_t i = 0; i <= n; i++) {
            if (i < n) {
                int64_t id = list[i];
                if (id < 0 || (i && list[i - 1] == id) || tombstoned(s, id))
                    continue;
                const float *row = NULL;
                /* the list is ascending: search the main ids only from the last match on */
                size_t a = lo, b = s->count;
                while (a < b) {
                    size_t mid = a + (b - a) / 2;
                    if (s->ids[mid] < id)
                        a = mid + 1;
                    else
                        b = mid;
                }
                lo = a;
                int64_t dpos;
                if (a < s->count && s->ids[a] == id)
                    row = s->rows + a * (size_t)dim;
                else if (idmap_get(&s->d_pos, id, &dpos))
                    row = s->d_rows + (size_t)dpos * (size_t)dim;
                if (!row)
                    continue;
                memcpy(block + nb * (size_t)dim, row, (size_t)dim * sizeof(float));
                bids[nb] = id;
                brows[nb] = row;
                nb++;
            }
            if (nb == blk || (i == n && nb)) {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)nb, dim, 1.0f, block, dim, q, 1, 0.0f,
                            bscores, 1);
                for (size_t j = 0; j < nb; j++)
                    if (cheap_wants(&c, bscores[j]))
                        cheap_offer(&c, bscores[j], bids[j], brows[j]);
                nb = 0;
            }
        }
        bool retry;
        h.n = 0;
        if (cheap_finish(&c, k, q, dim, &h, &retry)) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            break;
        }
        if (!retry)
            break;
        margin *= 4;
    }
    if (!st)
        emit(&h, k, ids, scores, found);
    pthread_rwlock_unlock(&s->lock);
out:
    if (s)
        snap_release(v, s);
    free(c.v);
    free(h.v);
    free(sorted);
    free(block);
    free(bscores);
    free(bids);
    free(brows);
    free(q);
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
