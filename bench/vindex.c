/*
 * Benchmark of the vector index (index/vindex.c): for generated 384-d collections clustered like
 * sentence embeddings, builds each index type through the public vindex API and prints, as
 * markdown tables, the build time, memory, recall@10 against exact search and single-thread
 * query latency (p50/p99) for a sweep of nprobe / efSearch; then the filtered paths (a
 * permission predicate of a given selectivity, an explicit subset of ids) on the served type.
 *
 * The data: a common direction shared by every vector (embeddings are anisotropic), topics
 * around it, clusters around topics with long-tailed (Zipf) sizes, and points around their
 * cluster centre at cosine 0.75..0.92, so that a query's nearest neighbour sits near cosine
 * 0.75 and random pairs near 0.15, as with real sentence embedders. Queries come from the same process
 * and are not indexed. Ground truth is exact top-10 by BLAS over all vectors.
 *
 * Builds use every core (OpenMP); queries run on one thread (OpenMP and OpenBLAS are set to one
 * thread before the timed part).
 *
 * Usage: bench_vindex [--n N] [--queries Q] [--types flat,ivf_flat,ivf_sq8,ivf_pq,hnsw]
 *                     [--nprobe 8,16,32,64] [--ef 32,64,128,256] [--dir DIR] [--filters]
 *                     [--share-training] [--collection DIR]... [--store DATA_DIR]
 *                     [--rows copy,external]
 * --share-training gives the second IVF type the first one's k-means centroids (through the
 * centroid seam of the GPU build path), halving the training time of large runs.
 * --collection runs every type on a shared collection (BEIR layout: corpus.jsonl,
 * queries.jsonl) embedded by ingest's local embedder instead of on generated vectors; the
 * queries are the collection's own.
 * --store runs every type on the vectors of a quarry data directory (at most --n of them, in chunk
 * id order: e.g. bench_search's generated collection, embedded by the local embedder) with
 * queries of 2 to 6 Zipf pseudo-words of the same vocabulary embedded by the local embedder.
 * --rows copy,external builds and searches every index (and the filtered section's) in each of
 * the vector index's row modes on the same vectors: copy (its own rows in gen-N.vec) and
 * external (vindex_open_rows: the rows read from a provider, here an array of the normalised
 * vectors laid out by chunk id as the store's vector file is, in memory and not counted in the
 * RSS delta; gen-N.vec then holds the ids only).
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_corpus.h"
#include "core/core.h"
#include "index/feed.h"
#include "index/index.h"
#include "index/vindex_int.h"
#include "ingest/ingest.h"

#define DIM      384
#define TOPK_MAX 1000

/* results per query (--k; the ground truth and recall are at the same depth) */
static size_t top_k = 10;

/* libgomp (linked by FAISS) and OpenBLAS thread controls: the timed queries run on one thread */
extern void omp_set_num_threads(int n);
extern int omp_get_max_threads(void);

static uint64_t rng_state = 0x5eed;

static uint64_t rng_next(void)
{
    rng_state += 0x9e3779b97f4a7c15ull;
    uint64_t z = rng_state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(void)
{
    return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0;
}

static double rng_gauss(void)
{
    return sqrt(-2.0 * log(rng_unit())) * cos(6.283185307179586 * rng_unit());
}

static void unit(float *v)
{
    double s = 0;
    for (int i = 0; i < DIM; i++)
        s += (double)v[i] * v[i];
    double inv = 1.0 / sqrt(s);
    for (int i = 0; i < DIM; i++)
        v[i] = (float)(v[i] * inv);
}

static void random_unit(float *v)
{
    for (int i = 0; i < DIM; i++)
        v[i] = (float)rng_gauss();
    unit(v);
}

/* A generated collection: the model behind it and a sampler of new points. */
typedef struct {
    size_t nclusters;
    float *centres; /* nclusters * DIM */
    float *sigma;   /* per cluster: noise per coordinate */
    double *cum;    /* cumulative Zipf weights */
} corpus;

static void corpus_init(corpus *c, size_t n)
{
    size_t ntopics = 64;
    c->nclusters = n / 100 > 100 ? n / 100 : 100;
    float *topics = malloc(ntopics * DIM * sizeof(float));
    float g[DIM], r[DIM];
    random_unit(g);
    for (size_t t = 0; t < ntopics; t++) {
        random_unit(r);
        for (int i = 0; i < DIM; i++)
            topics[t * DIM + i] = 0.55f * g[i] + 0.85f * r[i];
        unit(topics + t * DIM);
    }
    c->centres = malloc(c->nclusters * DIM * sizeof(float));
    c->sigma = malloc(c->nclusters * sizeof(float));
    c->cum = malloc(c->nclusters * sizeof(double));
    double total = 0;
    for (size_t j = 0; j < c->nclusters; j++) {
        const float *t = topics + (rng_next() % ntopics) * DIM;
        random_unit(r);
        for (int i = 0; i < DIM; i++)
            c->centres[j * DIM + i] = t[i] + 0.7f * r[i];
        unit(c->centres + j * DIM);
        /* cos(point, centre) = 1/sqrt(1 + DIM sigma^2): 0.75 .. 0.92 */
        double cosine = 0.75 + 0.17 * rng_unit();
        c->sigma[j] = (float)sqrt((1.0 / (cosine * cosine) - 1.0) / DIM);
        total += 1.0 / pow((double)(j + 1), 1.1); /* long-tailed sizes */
        c->cum[j] = total;
    }
    for (size_t j = 0; j < c->nclusters; j++)
        c->cum[j] /= total;
    free(topics);
}

static void corpus_sample(const corpus *c, float *out, size_t n)
{
    for (size_t p = 0; p < n; p++) {
        double u = rng_unit();
        size_t lo = 0, hi = c->nclusters - 1;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (c->cum[mid] < u)
                lo = mid + 1;
            else
                hi = mid;
        }
        const float *centre = c->centres + lo * DIM;
        float *v = out + p * DIM;
        for (int i = 0; i < DIM; i++)
            v[i] = centre[i] + c->sigma[lo] * (float)rng_gauss();
        unit(v);
    }
}

static void corpus_release(corpus *c)
{
    free(c->centres);
    free(c->sigma);
    free(c->cum);
}

/* Exact top_k of every query by BLAS, blockwise. */
static void ground_truth(const float *base, size_t n, const float *q, size_t nq, int64_t *gt)
{
    size_t blk = 8192;
    float *scores = malloc(nq * blk * sizeof(float));
    float *best = malloc(nq * top_k * sizeof(float));
    for (size_t i = 0; i < nq * top_k; i++) {
        best[i] = -INFINITY;
        gt[i] = -1;
    }
    for (size_t b0 = 0; b0 < n; b0 += blk) {
        size_t nb = n - b0 < blk ? n - b0 : blk;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nb, DIM, 1.0f, q, DIM,
                    base + b0 * DIM, DIM, 0.0f, scores, (int)nb);
        for (size_t qi = 0; qi < nq; qi++) {
            float *bs = best + qi * top_k;
            int64_t *bi = gt + qi * top_k;
            for (size_t j = 0; j < nb; j++) {
                float s = scores[qi * nb + j];
                if (s <= bs[top_k - 1])
                    continue;
                int p = (int)top_k - 1;
                while (p > 0 && bs[p - 1] < s) {
                    bs[p] = bs[p - 1];
                    bi[p] = bi[p - 1];
                    p--;
                }
                bs[p] = s;
                bi[p] = (int64_t)(b0 + j);
            }
        }
    }
    free(scores);
    free(best);
}

static double rss_anon_mb(void)
{
    malloc_trim(0); /* freed build buffers would otherwise count */
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "RssAnon:", 8) == 0)
            kb = atof(line + 8);
    if (f)
        fclose(f);
    return kb / 1024.0;
}

static double dir_mb(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    double bytes = 0;
    char path[1024];
    while (d && (e = readdir(d))) {
        struct stat sb;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (strncmp(e->d_name, "gen-", 4) == 0 && stat(path, &sb) == 0)
            bytes += (double)sb.st_size;
    }
    if (d)
        closedir(d);
    return bytes / 1048576.0;
}

/* --scan: the IVF scans compared (vindex.scan values); --rerank: vindex.rerank */
static const char *scans[4] = {"int8"};
static size_t nscans = 1, rerank_opt;
/* --keep DIR: built indexes are kept under DIR/<type>-<n> and reused by later runs (the generated
 * data is the same for the same --n); their build time is then not measured */
static const char *keep_dir;

/* --rows: the row modes run, "copy" and/or "external" (vindex_open_rows); an external index lives
 * in its directory's sibling "<dir>-rows" */
static const char *row_modes[2] = {"copy"};
static size_t nrow_modes = 1;

/* The provider of external rows: the normalised vectors by chunk id (rows of ids without a
 * vector are zero), as the store's vector file lays them out. */
static float *ext_rows;
static int64_t ext_max = -1;

static qr_status ext_map(void *ctx, int64_t max_id, const float **base, char *err)
{
    (void)ctx;
    if (max_id > ext_max)
        return qr_fail(err, QR_EINVAL, "the bench's rows end at chunk %lld, not %lld", (long long)ext_max,
                       (long long)max_id);
    *base = ext_rows;
    return QR_OK;
}

static void die(const char *what, const char *err);

/* Lays out (ids, vecs) for ext_map, replacing what was there. */
static void ext_fill(const int64_t *ids, const float *vecs, size_t n)
{
    int64_t max = -1;
    for (size_t i = 0; i < n; i++)
        max = ids[i] > max ? ids[i] : max;
    free(ext_rows);
    ext_rows = calloc((size_t)(max + 1) * DIM, sizeof(float));
    if (!ext_rows)
        die("allocation", "out of memory for the external rows");
    for (size_t i = 0; i < n; i++)
        if (!vindex_normalize_row(vecs + i * DIM, ext_rows + (size_t)ids[i] * DIM, DIM))
            die("external rows", "a vector is zero or not finite");
    ext_max = max;
}

static bool row_mode_external(size_t rm)
{
    return strcmp(row_modes[rm], "external") == 0;
}

/* The directory of row mode rm for an index directory (created when missing). */
static const char *mode_dir(const char *dir, size_t rm, char *buf, size_t len)
{
    if (!row_mode_external(rm))
        return dir;
    snprintf(buf, len, "%s-rows", dir);
    mkdir(buf, 0700);
    return buf;
}

/* vindex_open, or vindex_open_rows over the bench's provider for the external mode. */
static qr_status open_mode(const char *dir, size_t rm, const vindex_opts *o, int64_t counter, vindex **v,
                           bool *stale, char *err)
{
    vindex_rows rows = {.map = ext_map, .ctx = NULL, .uid = 1};
    return row_mode_external(rm) ? vindex_open_rows(dir, DIM, o, &rows, counter, v, stale, err)
                                 : vindex_open(dir, DIM, o, counter, v, stale, err);
}

/* --dump DIR: the generated vectors, queries and exact top 10 as raw little-endian files
 * (base.f32: n x 384 float32, normalised as the index holds them; queries.f32; gt.i64: queries x
 * 10 row numbers), for bench/vindex_hnswlib.py to run hnswlib on the same data */

static void dump_raw(const char *dir, const char *name, const void *data, size_t bytes)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    mkdir(dir, 0700);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, bytes, f) != bytes || fclose(f) != 0)
        die(path, "cannot write");
}

static void clear_dir(const char *dir);

/* The directory an index of this type and size is built in: cfg's, or a kept one under --keep. */
static const char *index_dir(const char *dir, const char *type, size_t n, char *buf, size_t len)
{
    if (!keep_dir)
        return dir;
    mkdir(keep_dir, 0700);
    snprintf(buf, len, "%s/%s-%zu", keep_dir, type, n);
    mkdir(buf, 0700);
    return buf;
}

/* Opens a kept index of n vectors in dir as it was built (store counter 1); false (and the
 * directory emptied) when there is none. */
static bool open_kept(const char *dir, size_t rm, const vindex_opts *o, size_t n, vindex **v)
{
    char err[QR_ERR_LEN];
    bool stale = true;
    vindex_opts ko = *o;
    ko.rebuild_on_mismatch = true;
    if (keep_dir && open_mode(dir, rm, &ko, 1, v, &stale, err) == QR_OK) {
        vindex_info info;
        vindex_get_info(*v, &info);
        if (!stale && info.count == n)
            return true;
        vindex_close(*v);
    }
    *v = NULL;
    clear_dir(dir);
    return false;
}

static void clear_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[1024];
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The calling thread's CPU time in ns: what a query cost the core it ran on, whatever else the
 * shared machine was running (wall-clock latencies grow with the load average). */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* p50 of the CPU time of the last run_queries or run_permitted */
static double cpu_p50;

static double percentile(double *v, size_t n, double p)
{
    qsort(v, n, sizeof(double), cmp_double);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_vindex: %s: %s\n", what, err);
    exit(1);
}

typedef struct {
    unsigned pct;
} permit_ctx;

static bool permit_pct(void *ctx, int64_t id)
{
    uint64_t s = (uint64_t)id * 0x9e3779b97f4a7c15ull;
    s ^= s >> 29;
    return s % 1000 < ((permit_ctx *)ctx)->pct;
}

/* Times queries; fills recall against gt (or -1 without gt) and p50/p99 in ms. */
static void run_queries(vindex *v, const float *q, size_t nq, const int64_t *gt, vindex_permit_fn permit,
                        void *ctx, const int64_t *subset, size_t nsubset, double *recall, double *p50,
                        double *p99)
{
    char err[QR_ERR_LEN];
    double *lat = malloc(nq * sizeof(double)), *cpu = malloc(nq * sizeof(double));
    int64_t ids[TOPK_MAX];
    float scores[TOPK_MAX];
    size_t found, hits = 0, want = 0;
    for (size_t qi = 0; qi < nq && qi < 20; qi++) /* warm the caches */
        if (vindex_search(v, q + qi * DIM, DIM, top_k, permit, ctx, ids, scores, &found, NULL, err))
            die("search", err);
    for (size_t qi = 0; qi < nq; qi++) {
        uint64_t t0 = qr_now_ns(), c0 = cpu_ns();
        qr_status st =
            subset ? vindex_search_subset(v, q + qi * DIM, DIM, top_k, subset, nsubset, ids, scores, &found,
                                          NULL, err)
                   : vindex_search(v, q + qi * DIM, DIM, top_k, permit, ctx, ids, scores, &found, NULL, err);
        lat[qi] = (double)(qr_now_ns() - t0) / 1e6;
        cpu[qi] = (double)(cpu_ns() - c0) / 1e6;
        if (st)
            die("search", err);
        for (size_t j = 0; gt && j < top_k; j++) {
            want += gt[qi * top_k + j] >= 0; /* fewer than top_k exist under a narrow filter */
            for (size_t i = 0; i < found; i++)
                hits += gt[qi * top_k + j] >= 0 && ids[i] == gt[qi * top_k + j];
        }
    }
    *recall = gt && want ? (double)hits / (double)want : -1;
    *p50 = percentile(lat, nq, 0.50);
    *p99 = percentile(lat, nq, 0.99);
    cpu_p50 = percentile(cpu, nq, 0.50);
    free(cpu);
    free(lat);
}

/* Times vindex_search_permitted over an ascending permitted list; recall against gt (the exact
 * filtered top k), mean lists probed, answers by the exact subset, and the first call's layout
 * time. */
static void run_permitted(vindex *v, const float *q, size_t nq, const int64_t *gt, const int64_t *permitted,
                          size_t np, double *recall, double *p50, double *p99, double *probes,
                          size_t *subsets, double *layout_ms)
{
    char err[QR_ERR_LEN];
    double *lat = malloc(nq * sizeof(double)), *cpu = malloc(nq * sizeof(double));
    int64_t ids[TOPK_MAX];
    float scores[TOPK_MAX];
    size_t found, hits = 0, want = 0, nsub = 0;
    double pr = 0;
    vindex_scan_report rep;
    *layout_ms = 0;
    for (size_t qi = 0; qi < nq && qi < 20; qi++) { /* warm the caches; the first reads the layout */
        if (vindex_search_permitted(v, q + qi * DIM, DIM, top_k, permitted, np, ids, scores, &found, NULL,
                                    &rep, err))
            die("permitted search", err);
        *layout_ms += rep.layout_ms;
    }
    for (size_t qi = 0; qi < nq; qi++) {
        uint64_t t0 = qr_now_ns(), c0 = cpu_ns();
        qr_status st = vindex_search_permitted(v, q + qi * DIM, DIM, top_k, permitted, np, ids, scores,
                                               &found, NULL, &rep, err);
        lat[qi] = (double)(qr_now_ns() - t0) / 1e6;
        cpu[qi] = (double)(cpu_ns() - c0) / 1e6;
        if (st)
            die("permitted search", err);
        nsub += rep.subset;
        pr += (double)rep.probes;
        for (size_t j = 0; j < top_k; j++) {
            want += gt[qi * top_k + j] >= 0;
            for (size_t i = 0; i < found; i++)
                hits += gt[qi * top_k + j] >= 0 && ids[i] == gt[qi * top_k + j];
        }
    }
    *recall = want ? (double)hits / (double)want : -1;
    *p50 = percentile(lat, nq, 0.50);
    *p99 = percentile(lat, nq, 0.99);
    cpu_p50 = percentile(cpu, nq, 0.50);
    free(cpu);
    *probes = pr / (double)nq;
    *subsets = nsub;
    free(lat);
}

typedef struct {
    const char *types, *dir;
    size_t nprobes[16], n_nprobe, efs[16], n_ef;
    bool share_training;
    int build_threads;
} bench_cfg;

/* Builds each type of cfg over (ids, base) and prints a table row per search setting, labelled
 * label. The first IVF build's lists are kept in *shared_out (reused by the next IVF types with
 * --share-training, and by the filter section). */
static void run_types(const bench_cfg *cfg, const char *label, const int64_t *ids, const float *base,
                      size_t n, const float *queries, size_t nq, const int64_t *gt, float **shared_out,
                      size_t *shared_nlist_out)
{
    char err[QR_ERR_LEN];
    float *shared_centroids = *shared_out;
    size_t shared_nlist = *shared_nlist_out;
    char typebuf[128];
    snprintf(typebuf, sizeof(typebuf), "%s", cfg->types);
    char *save = NULL;
    for (size_t rm = 0; rm < nrow_modes; rm++)
        if (row_mode_external(rm))
            ext_fill(ids, base, n);
    for (char *type = strtok_r(typebuf, ",", &save); type; type = strtok_r(NULL, ",", &save))
        for (size_t rm = 0; rm < nrow_modes; rm++) {
            char kbuf[512], mbuf[600];
            const char *tdir =
                mode_dir(index_dir(cfg->dir, type, n, kbuf, sizeof(kbuf)), rm, mbuf, sizeof(mbuf));
            if (!keep_dir)
                clear_dir(tdir);
            bool ivf = strncmp(type, "ivf", 3) == 0, hnsw = strcmp(type, "hnsw") == 0;
            vindex_opts o;
            vindex_opts_default(&o);
            o.type = type;
            if (rerank_opt)
                o.rerank = rerank_opt;
            if (ivf)
                o.nprobe = cfg->nprobes[0];
            if (hnsw)
                o.ef_search = cfg->efs[0];
            omp_set_num_threads(cfg->build_threads);
            openblas_set_num_threads(cfg->build_threads);
            double rss0 = rss_anon_mb();
            vindex *v = NULL;
            bool stale;
            uint64_t b0 = qr_now_ns();
            bool kept = open_kept(tdir, rm, &o, n, &v);
            vindex_centroids shared = {shared_centroids, shared_nlist, DIM};
            bool reused = ivf && shared_centroids && cfg->share_training;
            if (!kept) {
                if (open_mode(tdir, rm, &o, 0, &v, &stale, err))
                    die("open", err);
                vindex_builder *b = NULL;
                if (vindex_build_begin(v, reused ? &shared : NULL, &b, err) ||
                    vindex_build_add(b, ids, base, n, DIM, err) || vindex_build_commit(b, 1, err))
                    die("build", err);
            }
            double build_s = (double)(qr_now_ns() - b0) / 1e9;
            double heap = rss_anon_mb() - rss0, scan_mb = 0;
            double files = dir_mb(tdir);
            fprintf(stderr, "# %s, rows %s: generation files %.1f MB\n", type, row_modes[rm], files);
            vindex_info info;
            vindex_get_info(v, &info);
            if (ivf && !shared_centroids) {
                shared_nlist = info.nlist;
                shared_centroids = malloc(shared_nlist * DIM * sizeof(float));
                if (vindex_get_centroids(v, shared_centroids, shared_nlist, err))
                    die("centroids", err);
            }
            omp_set_num_threads(1);
            openblas_set_num_threads(1);
            size_t nparams = ivf ? cfg->n_nprobe : hnsw ? cfg->n_ef : 1;
            for (size_t pp = 0; pp < nparams * (ivf ? nscans : 1); pp++) {
                size_t p = ivf ? pp / nscans : pp;
                if (pp > 0 || (ivf && strcmp(scans[0], o.scan) != 0)) {
                    vindex_close(v);
                    if (ivf) {
                        o.nprobe = cfg->nprobes[p];
                        o.scan = scans[pp % nscans];
                    } else {
                        o.ef_search = cfg->efs[p];
                    }
                    if (open_mode(tdir, rm, &o, 1, &v, &stale, err))
                        die("reopen", err);
                }
                if (ivf) {
                    /* the first search of a generation reads its IVF layout (and the int8 codes) */
                    int64_t fids[TOPK_MAX];
                    float fsc[TOPK_MAX];
                    size_t ffound;
                    uint64_t f0 = qr_now_ns();
                    if (vindex_search(v, queries, DIM, top_k, NULL, NULL, fids, fsc, &ffound, NULL, err))
                        die("search", err);
                    fprintf(stderr, "# %s scan, nprobe %zu: first search %.0f ms\n", o.scan, o.nprobe,
                            (double)(qr_now_ns() - f0) / 1e6);
                }
                double recall, p50, p99;
                run_queries(v, queries, nq, gt, NULL, NULL, NULL, 0, &recall, &p50, &p99);
                char param[32] = "-";
                if (ivf)
                    snprintf(param, sizeof(param), "%zu", cfg->nprobes[p]);
                if (hnsw)
                    snprintf(param, sizeof(param), "%zu", cfg->efs[p]);
                char nlist[32] = "-";
                if (ivf)
                    snprintf(nlist, sizeof(nlist), "%zu", info.nlist);
                char tname[80];
                snprintf(tname, sizeof(tname), "%s%s%s%s%s", info.type, ivf ? " (" : "", ivf ? o.scan : "",
                         ivf ? " scan)" : "",
                         nrow_modes > 1 ? (row_mode_external(rm) ? ", rows external" : ", rows copy") : "");
                if (p == 0 && pp == 0 && ivf)
                    scan_mb = rss_anon_mb() - rss0 - heap; /* what the first searches added (the codes) */
                printf("| %s | %s | %s | %s | %.1f%s | %.0f + %.0f | %.0f | %.3f | %.3f | %.3f | %.3f |\n",
                       label, tname, nlist, param, kept ? 0.0 : build_s,
                       kept     ? " (kept, not built)"
                       : reused ? " (k-means reused)"
                                : "",
                       heap, scan_mb, files, recall, p50, p99, cpu_p50);
                fflush(stdout);
            }
            vindex_close(v);
        }

    *shared_out = shared_centroids;
    *shared_nlist_out = shared_nlist;
}

/* The texts of a BEIR jsonl file: "title" and "text" joined by a newline (with_title), or "text". */
static size_t read_texts(const char *path, bool with_title, char ***out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die(path, strerror(errno));
    size_t n = 0, cap = 0, len = 0;
    char **texts = NULL, *line = NULL;
    while (getline(&line, &len, f) > 0) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!o)
            die(path, je.text);
        const char *title = with_title ? json_string_value(json_object_get(o, "title")) : NULL;
        const char *text = json_string_value(json_object_get(o, "text"));
        size_t need = (title ? strlen(title) + 1 : 0) + (text ? strlen(text) : 0) + 1;
        char *t = malloc(need);
        snprintf(t, need, "%s%s%s", title ? title : "", title && *title ? "\n" : "", text ? text : "");
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            texts = realloc(texts, cap * sizeof(*texts));
        }
        texts[n++] = t;
        json_decref(o);
    }
    free(line);
    fclose(f);
    *out = texts;
    return n;
}

/* Keeps the rows that are not zero (empty texts embed to zero, which the index refuses). */
static size_t drop_zero_rows(float *rows, size_t n)
{
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (cblas_snrm2(DIM, rows + i * DIM, 1) == 0)
            continue;
        memmove(rows + kept * DIM, rows + i * DIM, DIM * sizeof(float));
        kept++;
    }
    return kept;
}

/* A shared collection (BEIR layout) embedded by ingest's local embedder, then every type. */
static void run_collection(const bench_cfg *cfg, const char *cdir)
{
    char path[1024], err[QR_ERR_LEN];
    char **docs = NULL, **qs = NULL;
    snprintf(path, sizeof(path), "%s/corpus.jsonl", cdir);
    size_t nd = read_texts(path, true, &docs);
    snprintf(path, sizeof(path), "%s/queries.jsonl", cdir);
    size_t nq = read_texts(path, false, &qs);
    qr_config *qc = qr_config_new();
    ingest_embedder *e = NULL;
    if (!qc || ingest_embedder_open(qc, &e, err))
        die("embedder", err);
    if (ingest_embedder_dim(e) != DIM)
        die("embedder", "its dimension (embed.dim) is not 384");
    float *base = malloc(nd * DIM * sizeof(float)), *queries = malloc(nq * DIM * sizeof(float));
    uint64_t t0 = qr_now_ns();
    if (ingest_embed(e, (const char *const *)docs, NULL, nd, base, err) ||
        ingest_embed(e, (const char *const *)qs, NULL, nq, queries, err))
        die("embed", err);
    double embed_s = (double)(qr_now_ns() - t0) / 1e9;
    size_t n = drop_zero_rows(base, nd), nqk = drop_zero_rows(queries, nq);
    int64_t *ids = malloc(n * sizeof(int64_t)), *gt = malloc(nqk * top_k * sizeof(int64_t));
    for (size_t i = 0; i < n; i++)
        ids[i] = (int64_t)i;
    ground_truth(base, n, queries, nqk, gt);
    double nn = 0;
    for (size_t qi = 0; qi < nqk; qi++)
        nn += cblas_sdot(DIM, queries + qi * DIM, 1, base + (size_t)gt[qi * top_k] * DIM, 1);
    const char *name = strrchr(cdir, '/') ? strrchr(cdir, '/') + 1 : cdir;
    printf(
        "# collection %s: %zu documents (%zu empty dropped) and %zu queries embedded by %s (%d-d) in %.1f s; "
        "mean cosine query to nearest %.3f\n\n",
        name, n, nd - n, nqk, ingest_embedder_model(e), DIM, embed_s, nn / (double)(nqk ? nqk : 1));
    printf("| collection | type | nlist | nprobe / efSearch | build s | RSS delta MB (index + scan) | files "
           "MB | "
           "recall@10 | p50 ms | p99 ms | p50 CPU ms |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    float *shared = NULL;
    size_t shared_nlist = 0;
    run_types(cfg, name, ids, base, n, queries, nqk, gt, &shared, &shared_nlist);
    printf("\n");
    free(shared);
    for (size_t i = 0; i < nd; i++)
        free(docs[i]);
    for (size_t i = 0; i < nq; i++)
        free(qs[i]);
    free(docs);
    free(qs);
    free(base);
    free(queries);
    free(ids);
    free(gt);
    ingest_embedder_free(e);
    qr_config_free(qc);
}

typedef struct {
    float *rows;
    int64_t *ids;
    size_t n, cap;
} store_rows;

static qr_status take_vector(void *ctx, const store_change *c, char *err)
{
    store_rows *r = ctx;
    if (r->n == r->cap || !c->vector)
        return QR_OK; /* enough, or a chunk without a vector */
    if (c->dim != DIM)
        return qr_fail(err, QR_EINVAL, "the store's vectors have %d dimensions, not %d", c->dim, DIM);
    memcpy(r->rows + r->n * DIM, c->vector, DIM * sizeof(float));
    r->ids[r->n++] = c->chunk_id;
    return QR_OK;
}

/* The vectors of a quarry data directory (the first n by chunk id) and generated queries, then
 * every type. */
static void run_store(const bench_cfg *cfg, const char *data, size_t n, size_t nq)
{
    char err[QR_ERR_LEN];
    store *s = NULL;
    store_rows r = {malloc(n * DIM * sizeof(float)), malloc(n * sizeof(int64_t)), 0, n};
    int64_t counter = 0;
    uint64_t t0 = qr_now_ns();
    if (!r.rows || !r.ids)
        die("allocation", "out of memory");
    if (store_open(data, &s, err) || store_each_vector(s, take_vector, &r, &counter, err))
        die(data, err);
    store_close(s);
    double read_s = (double)(qr_now_ns() - t0) / 1e9;
    qr_config *qc = qr_config_new();
    ingest_embedder *e = NULL;
    if (!qc || ingest_embedder_open(qc, &e, err))
        die("embedder", err);
    float *queries = malloc(nq * DIM * sizeof(float));
    int64_t *gt = malloc(nq * top_k * sizeof(int64_t));
    for (size_t qi = 0; qi < nq; qi++) {
        char text[256], w[64];
        size_t len = 0, words = 2 + bench_rnd() % 5;
        for (size_t j = 0; j < words; j++) {
            bench_word(bench_zipf_word(30000), w);
            len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%s", j ? " " : "", w);
        }
        const char *t = text;
        if (ingest_embed(e, &t, NULL, 1, queries + qi * DIM, err))
            die("embed", err);
    }
    size_t nqk = drop_zero_rows(queries, nq);
    t0 = qr_now_ns();
    ground_truth(r.rows, r.n, queries, nqk, gt);
    double gt_s = (double)(qr_now_ns() - t0) / 1e9;
    double nn = 0;
    for (size_t qi = 0; qi < nqk; qi++)
        nn += cblas_sdot(DIM, queries + qi * DIM, 1, r.rows + (size_t)gt[qi * top_k] * DIM, 1);
    for (size_t j = 0; j < nqk * top_k; j++) /* rows to chunk ids, as the index knows them */
        gt[j] = gt[j] >= 0 ? r.ids[gt[j]] : -1;
    printf("# store %s: %zu vectors read in %.1f s; %zu queries of 2 to 6 words embedded by %s; exact ground "
           "truth in %.1f s; mean cosine query to nearest %.3f\n\n",
           data, r.n, read_s, nqk, ingest_embedder_model(e), gt_s, nn / (double)(nqk ? nqk : 1));
    printf(
        "| vectors | type | nlist | nprobe / efSearch | build s | RSS delta MB (index + scan) | files MB | "
        "recall@10 | p50 ms | p99 ms | p50 CPU ms |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    fflush(stdout);
    float *shared = NULL;
    size_t shared_nlist = 0;
    char label[48];
    snprintf(label, sizeof(label), "%zu (store)", r.n);
    run_types(cfg, label, r.ids, r.rows, r.n, queries, nqk, gt, &shared, &shared_nlist);
    free(shared);
    free(queries);
    free(gt);
    free(r.rows);
    free(r.ids);
    ingest_embedder_free(e);
    qr_config_free(qc);
}

/* Removes the bench's index directories (the external mode's sibling too) and the provider's rows. */
static void remove_dirs(const char *dir)
{
    clear_dir(dir);
    rmdir(dir);
    if (!keep_dir) {
        char rbuf[600];
        snprintf(rbuf, sizeof(rbuf), "%s-rows", dir);
        clear_dir(rbuf);
        rmdir(rbuf);
    }
    free(ext_rows);
    ext_rows = NULL;
}

static size_t parse_list(const char *s, size_t *out, size_t max)
{
    size_t n = 0;
    while (*s && n < max) {
        out[n++] = strtoul(s, (char **)&s, 10);
        if (*s == ',')
            s++;
    }
    return n;
}

int main(int argc, char **argv)
{
    size_t n = 100000, nq = 1000;
    const char *types = "flat,ivf_flat,ivf_sq8,ivf_pq,hnsw";
    const char *dir = "/tmp/quarry-bench-vindex";
    size_t nprobes[16] = {8, 16, 32, 64}, efs[16] = {32, 64, 128, 256};
    size_t n_nprobe = 4, n_ef = 4;
    bool filters = false, share_training = false;
    size_t served_nprobe = 0;
    const char *dump_dir = NULL, *widen = NULL;
    const char *collections[8], *store_dir = NULL;
    size_t ncollections = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--n") == 0 && i + 1 < argc)
            n = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--queries") == 0 && i + 1 < argc)
            nq = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--types") == 0 && i + 1 < argc)
            types = argv[++i];
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--nprobe") == 0 && i + 1 < argc)
            n_nprobe = parse_list(argv[++i], nprobes, 16);
        else if (strcmp(argv[i], "--ef") == 0 && i + 1 < argc)
            n_ef = parse_list(argv[++i], efs, 16);
        else if (strcmp(argv[i], "--k") == 0 && i + 1 < argc) {
            top_k = strtoul(argv[++i], NULL, 10);
            if (top_k < 1 || top_k > TOPK_MAX)
                die("--k", "must be 1..1000");
        } else if (strcmp(argv[i], "--filters") == 0)
            filters = true;
        else if (strcmp(argv[i], "--scan") == 0 && i + 1 < argc) {
            static char scanbuf[64];
            snprintf(scanbuf, sizeof(scanbuf), "%s", argv[++i]);
            nscans = 0;
            for (char *t = strtok(scanbuf, ","); t && nscans < 4; t = strtok(NULL, ","))
                scans[nscans++] = t;
        } else if (strcmp(argv[i], "--keep") == 0 && i + 1 < argc)
            keep_dir = argv[++i];
        else if (strcmp(argv[i], "--widen") == 0 && i + 1 < argc)
            widen = argv[++i];
        else if (strcmp(argv[i], "--dump") == 0 && i + 1 < argc)
            dump_dir = argv[++i];
        else if (strcmp(argv[i], "--rerank") == 0 && i + 1 < argc)
            rerank_opt = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--served-nprobe") == 0 && i + 1 < argc)
            served_nprobe = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--share-training") == 0)
            share_training = true;
        else if (strcmp(argv[i], "--collection") == 0 && i + 1 < argc && ncollections < 8)
            collections[ncollections++] = argv[++i];
        else if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
            store_dir = argv[++i];
        else if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc) {
            static char rowbuf[64];
            snprintf(rowbuf, sizeof(rowbuf), "%s", argv[++i]);
            nrow_modes = 0;
            for (char *t = strtok(rowbuf, ","); t && nrow_modes < 2; t = strtok(NULL, ","))
                row_modes[nrow_modes++] = t;
            for (size_t rm = 0; rm < nrow_modes; rm++)
                if (strcmp(row_modes[rm], "copy") != 0 && strcmp(row_modes[rm], "external") != 0)
                    die("--rows", "modes are copy and external");
            if (!nrow_modes)
                die("--rows", "give copy, external or both");
        } else {
            fprintf(
                stderr,
                "usage: bench_vindex [--n N] [--queries Q] [--types flat,ivf_flat,ivf_sq8,ivf_pq,hnsw] "
                "[--nprobe 8,16,32] [--ef 32,64,128] [--dir DIR] [--filters] [--share-training] "
                "[--collection DIR]... [--store DATA_DIR] [--scan int8,faiss] [--rerank R] [--k K] "
                "[--served-nprobe N] [--keep DIR] [--dump DIR] [--widen 0.5,0.25] [--rows copy,external]\n");
            return 2;
        }
    }
    qr_log_configure(QR_LOG_WARN, QR_LOG_TEXT, "", NULL);
    char err[QR_ERR_LEN];
    if (mkdir(dir, 0700) != 0 && access(dir, W_OK) != 0)
        die(dir, "cannot create");
    int build_threads = omp_get_max_threads();
    if (store_dir) {
        bench_cfg sc = {types, dir, {0}, n_nprobe, {0}, n_ef, share_training, build_threads};
        memcpy(sc.nprobes, nprobes, sizeof(nprobes));
        memcpy(sc.efs, efs, sizeof(efs));
        printf(
            "# vindex bench on a store's vectors; builds on %d threads, queries on 1; OpenBLAS kernels: %s\n",
            build_threads, openblas_get_corename());
        run_store(&sc, store_dir, n, nq);
        remove_dirs(dir);
        return 0;
    }
    if (ncollections) {
        bench_cfg cc = {types, dir, {0}, n_nprobe, {0}, n_ef, share_training, build_threads};
        memcpy(cc.nprobes, nprobes, sizeof(nprobes));
        memcpy(cc.efs, efs, sizeof(efs));
        printf("# vindex bench on the shared collections; builds on %d threads, queries on 1; OpenBLAS "
               "kernels: %s\n\n",
               build_threads, openblas_get_corename());
        for (size_t i = 0; i < ncollections; i++)
            run_collection(&cc, collections[i]);
        remove_dirs(dir);
        return 0;
    }

    uint64_t t0 = qr_now_ns();
    corpus c;
    corpus_init(&c, n);
    float *base = malloc(n * DIM * sizeof(float));
    float *queries = malloc(nq * DIM * sizeof(float));
    int64_t *ids = malloc(n * sizeof(int64_t));
    int64_t *gt = malloc(nq * top_k * sizeof(int64_t));
    if (!base || !queries || !ids || !gt)
        die("allocation", "out of memory");
    corpus_sample(&c, base, n);
    corpus_sample(&c, queries, nq);
    for (size_t i = 0; i < n; i++)
        ids[i] = (int64_t)i;
    double gen_s = (double)(qr_now_ns() - t0) / 1e9;
    t0 = qr_now_ns();
    ground_truth(base, n, queries, nq, gt);
    double gt_s = (double)(qr_now_ns() - t0) / 1e9;
    if (dump_dir) {
        float *row = malloc(DIM * sizeof(float));
        char path[512];
        snprintf(path, sizeof(path), "%s/base.f32", dump_dir);
        mkdir(dump_dir, 0700);
        FILE *f = fopen(path, "wb");
        for (size_t i = 0; f && i < n; i++) {
            vindex_normalize_row(base + i * DIM, row, DIM);
            if (fwrite(row, sizeof(float), DIM, f) != DIM)
                die(path, "cannot write");
        }
        if (!f || fclose(f) != 0)
            die(path, "cannot write");
        free(row);
        dump_raw(dump_dir, "queries.f32", queries, nq * DIM * sizeof(float));
        dump_raw(dump_dir, "gt.i64", gt, nq * top_k * sizeof(int64_t));
        printf("# dumped to %s\n", dump_dir);
        return 0;
    }
    /* nearest-neighbour and random-pair cosines, to show the data looks like embeddings */
    double nn = 0, rnd = 0;
    for (size_t qi = 0; qi < nq; qi++) {
        nn += cblas_sdot(DIM, queries + qi * DIM, 1, base + (size_t)gt[qi * top_k] * DIM, 1);
        rnd += cblas_sdot(DIM, queries + qi * DIM, 1, base + (rng_next() % n) * DIM, 1);
    }
    printf("# vindex bench: %zu vectors, %d-d, %zu clusters (Zipf sizes), %zu queries; generated in %.1f s, "
           "exact "
           "ground truth in %.1f s\n",
           n, DIM, c.nclusters, nq, gen_s, gt_s);
    printf("# mean cosine: query to nearest %.3f, query to random %.3f; builds on %d threads, queries on 1; "
           "OpenBLAS kernels: %s\n\n",
           nn / (double)nq, rnd / (double)nq, build_threads, openblas_get_corename());
    printf(
        "| vectors | type | nlist | nprobe / efSearch | build s | RSS delta MB (index + scan) | files MB | "
        "recall@10 | p50 ms | p99 ms | p50 CPU ms |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    fflush(stdout);

    bench_cfg cfg = {types, dir, {0}, n_nprobe, {0}, n_ef, share_training, build_threads};
    memcpy(cfg.nprobes, nprobes, sizeof(nprobes));
    memcpy(cfg.efs, efs, sizeof(efs));
    float *shared_centroids = NULL; /* the first IVF build's lists, reused by the next IVF type */
    size_t shared_nlist = 0;
    char label[32];
    snprintf(label, sizeof(label), "%zu", n);
    run_types(&cfg, label, ids, base, n, queries, nq, gt, &shared_centroids, &shared_nlist);

    if (filters) {
        /* the served configuration (auto type, default parameters) under permission filtering, in
         * each row mode (vm[rm]); the exact filtered ground truth comes from the first */
        clear_dir(dir);
        vindex_opts om[2];
        vindex *vm[2] = {NULL, NULL};
        const char *sdirs[2];
        char kbuf[512], mbufs[2][600];
        omp_set_num_threads(build_threads);
        openblas_set_num_threads(build_threads);
        for (size_t rm = 0; rm < nrow_modes; rm++) {
            vindex_opts *o = &om[rm];
            vindex_opts_default(o);
            if (served_nprobe)
                o->nprobe = served_nprobe;
            if (rerank_opt)
                o->rerank = rerank_opt;
            o->scan = scans[0];
            bool stale;
            vindex_builder *b = NULL;
            /* the lists of an earlier IVF build are reused: only the search paths are measured here */
            vindex_centroids shared = {shared_centroids, shared_nlist, DIM};
            bool reuse = shared_centroids && n > o->exact_threshold;
            sdirs[rm] =
                mode_dir(index_dir(dir, "served", n, kbuf, sizeof(kbuf)), rm, mbufs[rm], sizeof(mbufs[rm]));
            if (!keep_dir)
                clear_dir(sdirs[rm]);
            if (!open_kept(sdirs[rm], rm, o, n, &vm[rm]) &&
                (open_mode(sdirs[rm], rm, o, 0, &vm[rm], &stale, err) ||
                 vindex_build_begin(vm[rm], reuse ? &shared : NULL, &b, err) ||
                 vindex_build_add(b, ids, base, n, DIM, err) || vindex_build_commit(b, 1, err)))
                die("build", err);
            fprintf(stderr, "# served index, rows %s: generation files %.1f MB\n", row_modes[rm],
                    dir_mb(sdirs[rm]));
        }
        /* exact filtered ground truth costs a subset search per query: fewer queries here */
        size_t nqf = nq < 300 ? nq : 300;
        omp_set_num_threads(1);
        openblas_set_num_threads(1);
        vindex_info info;
        vindex_get_info(vm[0], &info);
        printf(
            "\nFiltered search on the served default (%s, nprobe %zu, rerank %zu), %zu vectors, k=%zu, %zu "
            "queries, one thread:\n\n",
            info.type, info.nprobe, om[0].rerank, n, top_k, nqf);
        printf("| filter | permitted | exact-scan fallbacks | recall@10 vs exact filtered | p50 ms | p99 ms "
               "| p50 "
               "CPU ms |\n|---|---|---|---|---|---|---|\n");
        unsigned pcts[] = {1000, 100, 10, 1};
        for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++) {
            permit_ctx pc = {pcts[i]};
            /* exact filtered ground truth: the subset path over the permitted ids */
            size_t np = 0;
            int64_t *permitted = malloc(n * sizeof(int64_t));
            for (size_t j = 0; j < n; j++)
                if (permit_pct(&pc, (int64_t)j))
                    permitted[np++] = (int64_t)j;
            int64_t *fgt = malloc(nqf * top_k * sizeof(int64_t));
            for (size_t qi = 0; qi < nqf; qi++) {
                float sc[TOPK_MAX];
                if (pcts[i] == 1000) { /* unfiltered: the global ground truth */
                    memcpy(fgt + qi * top_k, gt + qi * top_k, top_k * sizeof(int64_t));
                    continue;
                }
                size_t found;
                for (size_t j = 0; j < top_k; j++)
                    fgt[qi * top_k + j] = -1;
                if (vindex_search_subset(vm[0], queries + qi * DIM, DIM, top_k, permitted, np,
                                         fgt + qi * top_k, sc, &found, NULL, err))
                    die("subset", err);
            }
            for (size_t rm = 0; rm < nrow_modes; rm++) {
                vindex_opts *o = &om[rm];
                char mode[32] = "";
                if (nrow_modes > 1)
                    snprintf(mode, sizeof(mode), ", rows %s", row_modes[rm]);
                bool stale;
                vindex_info before, after;
                vindex_get_info(vm[rm], &before);
                double recall, p50, p99;
                run_queries(vm[rm], queries, nqf, fgt, pcts[i] == 1000 ? NULL : permit_pct, &pc, NULL, 0,
                            &recall, &p50, &p99);
                vindex_get_info(vm[rm], &after);
                printf("| predicate, %.1f%%%s | %zu | %llu of %zu | %.3f | %.3f | %.3f | %.3f |\n",
                       pcts[i] / 10.0, mode, np, (unsigned long long)(after.exact_scans - before.exact_scans),
                       nqf + (nqf < 20 ? nqf : 20), recall, p50, p99, cpu_p50);
                fflush(stdout);
                /* the permitted list through vindex_search_permitted (what retrieval passes for
                 * restricted callers), with each scan */
                for (size_t si = 0; si < nscans; si++) {
                    if (strcmp(o->scan, scans[si]) != 0) {
                        vindex_close(vm[rm]);
                        o->scan = scans[si];
                        if (open_mode(sdirs[rm], rm, o, 1, &vm[rm], &stale, err))
                            die("reopen", err);
                    }
                    size_t widens[8];
                    double wv[8] = {0.25};
                    size_t nw = 1;
                    if (widen && strcmp(o->scan, "int8") == 0) {
                        nw = parse_list(widen, widens, 8); /* hundredths */
                        for (size_t w = 0; w < nw; w++)
                            wv[w] = (double)widens[w] / 100.0;
                    }
                    for (size_t w = 0; w < nw; w++) {
                        double pr, lay;
                        size_t subs;
                        vindex_test_set_widen(wv[w]);
                        run_permitted(vm[rm], queries, nqf, fgt, permitted, np, &recall, &p50, &p99, &pr,
                                      &subs, &lay);
                        printf("| permitted list, %.1f%% (%s scan, widen 1/share^%.2f: %.0f lists, %zu "
                               "exact-subset answers; layout %.0f ms%s) | %zu | - | %.3f | %.3f | %.3f | "
                               "%.3f |\n",
                               pcts[i] / 10.0, o->scan, strcmp(o->scan, "int8") == 0 ? wv[w] : 0.5, pr, subs,
                               lay, mode, np, recall, p50, p99, cpu_p50);
                        fflush(stdout);
                    }
                    vindex_test_set_widen(0.25);
                    if (np <= 100000 && pcts[i] < 1000) {
                        /* the same list through vindex_search_subset: retrieval's path under its exact
                         * threshold (retrieval.exact_min, exact_share) */
                        run_queries(vm[rm], queries, nqf, fgt, NULL, NULL, permitted, np, &recall, &p50,
                                    &p99);
                        printf("| permitted list, %.1f%%, exact subset (%s scan%s) | %zu | - | %.3f | %.3f | "
                               "%.3f | %.3f |\n",
                               pcts[i] / 10.0, o->scan, mode, np, recall, p50, p99, cpu_p50);
                        fflush(stdout);
                    }
                }
            }
            free(permitted);
            free(fgt);
        }
        size_t sizes[] = {1000, 10000, 100000};
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]) && sizes[i] <= n; i++) {
            int64_t *subset = malloc(sizes[i] * sizeof(int64_t));
            for (size_t j = 0; j < sizes[i]; j++)
                subset[j] = (int64_t)(rng_next() % n);
            for (size_t rm = 0; rm < nrow_modes; rm++) {
                vindex_opts *o = &om[rm];
                for (size_t si = 0; si < nscans; si++) {
                    if (strcmp(o->scan, scans[si]) != 0) {
                        bool stale;
                        vindex_close(vm[rm]);
                        o->scan = scans[si];
                        if (open_mode(sdirs[rm], rm, o, 1, &vm[rm], &stale, err))
                            die("reopen", err);
                    }
                    double recall, p50, p99;
                    run_queries(vm[rm], queries, nqf, NULL, NULL, NULL, subset, sizes[i], &recall, &p50,
                                &p99);
                    printf(
                        "| explicit subset (random ids, unsorted; %s scan%s%s) | %zu | - (always exact) | 1 "
                        "(exact) | "
                        "%.3f | %.3f | %.3f |\n",
                        o->scan, nrow_modes > 1 ? ", rows " : "", nrow_modes > 1 ? row_modes[rm] : "",
                        sizes[i], p50, p99, cpu_p50);
                    fflush(stdout);
                }
            }
            free(subset);
        }
        for (size_t rm = 0; rm < nrow_modes; rm++)
            vindex_close(vm[rm]);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\n# peak RSS of the whole run %.0f MB (includes the generated vectors: %.0f MB)\n",
           ru.ru_maxrss / 1024.0, (double)n * DIM * 4 / 1048576.0);
    remove_dirs(dir);
    free(shared_centroids);
    corpus_release(&c);
    free(base);
    free(queries);
    free(ids);
    free(gt);
    return 0;
}
