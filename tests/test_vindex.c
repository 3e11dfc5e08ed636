/*
 * Tests of the vector index (index/vindex.c) with real FAISS: type selection, persistence, a
 * crash during publication (a child process killed at each step of it), the delta and
 * tombstones, rebuilds that fold them in and carry newer changes over, concurrent searches
 * while generations are published, detection of a stale or damaged index, the centroid seam of
 * the GPU build path, and every search path against a naive oracle on random data.
 *
 * The oracle normalises and scores exactly as the index promises (double sums over the float32
 * normalised rows, best first, equal scores by smaller id), so ids and scores must be identical,
 * not merely close.
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "index/files_int.h"
#include "index/index.h"
#include "index/vindex_int.h"
#include "tests/harness.h"

static int vindex_cmp_ids(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* FAISS builds run OpenMP teams (and OpenBLAS its threads) whose idle threads spin; on the shared
 * 2-core test machines the spinning took most of the run time. The test sets are small: one
 * thread builds and searches them. */
extern void omp_set_num_threads(int n);
__attribute__((constructor)) static void one_thread(void)
{
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
}

static uint64_t rng_next(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

static double rng_gauss(uint64_t *s)
{
    double u = rng_unit(s), v = rng_unit(s);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

/* Random vectors; with nclusters > 0 they gather around random centres (like embeddings). */
static float *random_vectors(size_t n, int dim, int nclusters, double noise, uint64_t seed)
{
    float *x = malloc(n * (size_t)dim * sizeof(float));
    float *c = nclusters ? malloc((size_t)nclusters * (size_t)dim * sizeof(float)) : NULL;
    uint64_t s = seed;
    for (int j = 0; j < nclusters * dim; j++)
        c[j] = (float)rng_gauss(&s);
    for (size_t i = 0; i < n; i++) {
        const float *centre = nclusters ? c + (rng_next(&s) % (uint64_t)nclusters) * (size_t)dim : NULL;
        for (int j = 0; j < dim; j++)
            x[i * (size_t)dim + j] = (float)((centre ? centre[j] : 0) + noise * rng_gauss(&s));
    }
    free(c);
    return x;
}

/* The index's normalisation, restated: double sum of squares, rows times 1/sqrt in double. */
static void normalize(const float *in, float *out, int dim)
{
    double sum = 0;
    for (int i = 0; i < dim; i++)
        sum += (double)in[i] * in[i];
    double inv = 1.0 / sqrt(sum);
    for (int i = 0; i < dim; i++)
        out[i] = (float)(in[i] * inv);
}

/* The index's exact score, restated: eight double sums by position mod 8, added pairwise. */
static float score_of(const float *a, const float *b, int dim)
{
    double acc[8] = {0};
    for (int i = 0; i < dim; i++)
        acc[i % 8] += (double)a[i] * b[i];
    return (float)(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}

/* A model of what the index should hold: ids, normalised rows, alive flags. */
typedef struct {
    int dim;
    size_t n, cap;
    int64_t *ids;
    float *rows; /* normalised */
    bool *alive;
} model;

static void model_add(model *m, int64_t id, const float *raw)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 1024;
        m->ids = realloc(m->ids, m->cap * sizeof(int64_t));
        m->rows = realloc(m->rows, m->cap * (size_t)m->dim * sizeof(float));
        m->alive = realloc(m->alive, m->cap * sizeof(bool));
    }
    m->ids[m->n] = id;
    normalize(raw, m->rows + m->n * (size_t)m->dim, m->dim);
    m->alive[m->n] = true;
    m->n++;
}

static void model_kill(model *m, int64_t id)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->ids[i] == id)
            m->alive[i] = false;
}

static void model_free(model *m)
{
    free(m->ids);
    free(m->rows);
    free(m->alive);
}

typedef struct {
    float score;
    int64_t id;
} ohit;

static int cmp_ohit(const void *a, const void *b)
{
    const ohit *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Naive top k over the model's alive rows that permit accepts (NULL: all). */
static size_t oracle(const model *m, const float *raw_query, size_t k, vindex_permit_fn permit, void *ctx,
                     int64_t *ids, float *scores)
{
    float *q = malloc((size_t)m->dim * sizeof(float));
    normalize(raw_query, q, m->dim);
    ohit *h = malloc((m->n + 1) * sizeof(ohit));
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (!m->alive[i] || (permit && !permit(ctx, m->ids[i])))
            continue;
        h[n].score = score_of(m->rows + i * (size_t)m->dim, q, m->dim);
        h[n].id = m->ids[i];
        n++;
    }
    qsort(h, n, sizeof(ohit), cmp_ohit);
    if (n > k)
        n = k;
    for (size_t i = 0; i < n; i++) {
        ids[i] = h[i].id;
        scores[i] = h[i].score;
    }
    free(h);
    free(q);
    return n;
}

/* A pull source over arrays (ids, raw vectors), for vindex_build. */
typedef struct {
    const int64_t *ids;
    const float *vecs;
    size_t n, pos;
    int dim;
    bool fail_midway;
} source;

static qr_status source_pull(void *ctx, int dim, int64_t *ids, float *vecs, size_t cap, size_t *n, char *err)
{
    source *s = ctx;
    if (dim != s->dim)
        return qr_fail(err, QR_EINVAL, "source has dimension %d", s->dim);
    if (s->fail_midway && s->pos > 0)
        return qr_fail(err, QR_EIO, "source failed on purpose");
    size_t take = s->n - s->pos < cap ? s->n - s->pos : cap;
    if (take > 1000)
        take = 1000; /* several batches */
    memcpy(ids, s->ids + s->pos, take * sizeof(int64_t));
    memcpy(vecs, s->vecs + s->pos * (size_t)dim, take * (size_t)dim * sizeof(float));
    s->pos += take;
    *n = take;
    return QR_OK;
}

static qr_status build_from(vindex *v, const int64_t *ids, const float *vecs, size_t n, int dim,
                            int64_t counter, char *err)
{
    source src = {ids, vecs, n, 0, dim, false};
    return vindex_build(v, source_pull, &src, counter, NULL, err);
}

static int64_t *sequential_ids(size_t n, int64_t first, int64_t step)
{
    int64_t *ids = malloc(n * sizeof(int64_t));
    for (size_t i = 0; i < n; i++)
        ids[i] = first + (int64_t)i * step;
    return ids;
}

static char *make_dir(void)
{
    char tmpl[] = "/tmp/quarry-vindex-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static void remove_dir(char *dir)
{
    if (!dir)
        return;
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
    free(dir);
}

/* The directory's file names, sorted and joined by spaces. */
static void list_dir(const char *dir, char *out, size_t len)
{
    char names[32][64];
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) && n < 32) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            snprintf(names[n++], 64, "%.63s", e->d_name);
    }
    if (d)
        closedir(d);
    qsort(names, (size_t)n, 64, (int (*)(const void *, const void *))strcmp);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        strncat(out, names[i], len - strlen(out) - 1);
        if (i + 1 < n)
            strncat(out, " ", len - strlen(out) - 1);
    }
}

static char *read_whole(const char *path, size_t *len)
{
    char *text = NULL;
    if (qr_read_file(path, 1u << 30, &text, len, NULL))
        return NULL;
    return text;
}

static void flip_byte(const char *path, long offset)
{
    int fd = open(path, O_RDWR);
    unsigned char c;
    if (offset < 0)
        offset += lseek(fd, 0, SEEK_END);
    if (pread(fd, &c, 1, offset) == 1) {
        c ^= 0x20;
        if (pwrite(fd, &c, 1, offset) != 1)
            abort();
    }
    close(fd);
}

/* The defaults with the search effort of a large index (nprobe 32 of ~150 lists, efSearch 128):
 * the default nprobe would visit nearly every list of these small test sets and hide the
 * approximate paths. */
static vindex_opts test_opts(const char *type)
{
    vindex_opts o;
    vindex_opts_default(&o);
    o.type = type;
    o.nprobe = 32;
    o.ef_search = 128;
    return o;
}

/* Every search path compared with the oracle for some queries; returns false on the first
 * difference (with a message). */
static bool matches_oracle(vindex *v, const model *m, const float *queries, size_t nq, size_t k,
                           vindex_permit_fn permit, void *ctx)
{
    int d = m->dim;
    int64_t *ids = malloc(k * sizeof(int64_t)), *oids = malloc(k * sizeof(int64_t));
    float *sc = malloc(k * sizeof(float)), *osc = malloc(k * sizeof(float));
    char err[QR_ERR_LEN];
    bool ok = true;
    for (size_t qi = 0; qi < nq && ok; qi++) {
        size_t found = 0;
        const float *q = queries + qi * (size_t)d;
        if (vindex_search(v, q, d, k, permit, ctx, ids, sc, &found, NULL, err) != QR_OK) {
            harness_fail(__FILE__, __LINE__, "search failed: %s", err);
            ok = false;
            break;
        }
        size_t ofound = oracle(m, q, k, permit, ctx, oids, osc);
        if (found != ofound) {
            harness_fail(__FILE__, __LINE__, "query %zu: found %zu, oracle %zu", qi, found, ofound);
            ok = false;
        }
        for (size_t i = 0; ok && i < found; i++) {
            if (ids[i] != oids[i] || sc[i] != osc[i]) {
                harness_fail(__FILE__, __LINE__, "query %zu rank %zu: got %lld (%.9g), oracle %lld (%.9g)",
                             qi, i, (long long)ids[i], sc[i], (long long)oids[i], osc[i]);
                ok = false;
            }
        }
    }
    free(ids);
    free(oids);
    free(sc);
    free(osc);
    return ok;
}

/* Permission predicates over ids. */
static bool permit_mod(void *ctx, int64_t id)
{
    int64_t mod = *(const int64_t *)ctx;
    return id % mod == 0;
}

static bool permit_hash(void *ctx, int64_t id)
{
    uint64_t s = (uint64_t)id * 0x9e3779b97f4a7c15ull;
    s ^= s >> 29;
    return s % 100 < *(const unsigned *)ctx;
}

/* ---- options, arguments, bad input ----------------------------------------------------------- */

TEST(arguments_are_checked)
{
    char err[QR_ERR_LEN];
    char *dir = make_dir();
    vindex *v = NULL;
    bool stale = true;
    vindex_opts o = test_opts("auto");
    const int d = 8;
    CHECK_INT(vindex_open(dir, 0, &o, 0, &v, &stale, err), QR_EINVAL);
    CHECK(v == NULL && strstr(err, "dimension"));
    o.type = "lsh";
    CHECK_INT(vindex_open(dir, d, &o, 0, &v, &stale, err), QR_EINVAL);
    CHECK(strstr(err, "lsh") != NULL);
    o = test_opts("auto");
    o.train_per_list = 10;
    CHECK_INT(vindex_open(dir, d, &o, 0, &v, &stale, err), QR_EINVAL);
    o = test_opts("flat");
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK(!stale);
    /* a second handle on the same directory is refused */
    vindex *v2 = NULL;
    CHECK_INT(vindex_open(dir, d, &o, 0, &v2, &stale, err), QR_EPERM);
    CHECK(v2 == NULL && strstr(err, "in use"));

    float *x = random_vectors(100, d, 0, 1.0, 1);
    int64_t *ids = sequential_ids(100, 1, 1);
    CHECK_OK(build_from(v, ids, x, 100, d, 5, err), err);

    float q[8] = {1, 0, 0, 0, 0, 0, 0, 0}, scores[4];
    int64_t out[4];
    size_t found = 99;
    CHECK_INT(vindex_search(v, q, d, 0, NULL, NULL, out, scores, &found, NULL, err), QR_EINVAL);
    CHECK(found == 0 && strstr(err, "k must be"));
    CHECK_INT(vindex_search(v, q, d, VINDEX_K_MAX + 1, NULL, NULL, out, scores, &found, NULL, err),
              QR_EINVAL);
    CHECK_INT(vindex_search(v, q, d + 1, 4, NULL, NULL, out, scores, &found, NULL, err), QR_EINVAL);
    CHECK(strstr(err, "dimension") != NULL);
    float bad[8] = {1, NAN, 0, 0, 0, 0, 0, 0}, zero[8] = {0};
    CHECK_INT(vindex_search(v, bad, d, 4, NULL, NULL, out, scores, &found, NULL, err), QR_EINVAL);
    CHECK(strstr(err, "not finite") != NULL);
    CHECK_INT(vindex_search(v, zero, d, 4, NULL, NULL, out, scores, &found, NULL, err), QR_EINVAL);
    CHECK_INT(vindex_search_subset(v, q, d, 0, ids, 10, out, scores, &found, NULL, err), QR_EINVAL);
    CHECK_INT(vindex_search_subset(v, bad, d, 4, ids, 10, out, scores, &found, NULL, err), QR_EINVAL);

    /* bad adds change nothing */
    int64_t new_ids[2] = {1000, 1001};
    float rows[16];
    memcpy(rows, x, sizeof(rows));
    rows[9] = INFINITY;
    CHECK_INT(vindex_add(v, new_ids, rows, 2, d, 6, err), QR_EINVAL);
    CHECK(strstr(err, "1001") != NULL);
    rows[9] = 0.5f;
    CHECK_INT(vindex_add(v, new_ids, rows, 2, d + 1, 6, err), QR_EINVAL);
    int64_t dup[2] = {1000, 1000};
    CHECK_INT(vindex_add(v, dup, rows, 2, d, 6, err), QR_EEXIST);
    int64_t neg[2] = {1000, -3};
    CHECK_INT(vindex_add(v, neg, rows, 2, d, 6, err), QR_EINVAL);
    int64_t existing[2] = {1000, 50};
    CHECK_INT(vindex_add(v, existing, rows, 2, d, 6, err), QR_EEXIST);
    CHECK(strstr(err, "50") != NULL);
    CHECK_INT(vindex_add(v, new_ids, rows, 2, d, -1, err), QR_EINVAL); /* a negative counter */
    CHECK_INT(vindex_remove(v, neg, 2, 6, err), QR_EINVAL);
    CHECK_INT(vindex_remove(v, new_ids, 2, -1, err), QR_EINVAL);
    vindex_info info;
    vindex_get_info(v, &info);
    CHECK_INT(info.delta, 0);
    CHECK_INT(info.tombstones, 0);
    CHECK_INT(info.store_counter, 5);
    CHECK_INT(info.count, 100);

    /* samples are spread evenly over the rows, the same each time; all rows when fewer */
    int64_t sample[128];
    CHECK_INT(vindex_sample_ids(v, 4, sample), 4);
    CHECK(sample[0] == 1 && sample[1] == 26 && sample[2] == 51 && sample[3] == 76);
    CHECK_INT(vindex_sample_ids(v, 128, sample), 100);
    CHECK(sample[0] == 1 && sample[99] == 100);
    CHECK_INT(vindex_sample_ids(v, 0, sample), 0);
    CHECK_INT(vindex_sample_ids(NULL, 4, sample), 0);

    /* build input errors: nothing published */
    vindex_builder *b = NULL;
    CHECK_OK(vindex_build_begin(v, NULL, &b, err), err);
    vindex_builder *b2 = NULL;
    CHECK_INT(vindex_build_begin(v, NULL, &b2, err), QR_EEXIST);
    CHECK(b2 == NULL);
    CHECK_INT(vindex_build_add(b, ids, x, 10, d + 1, err), QR_EINVAL);
    CHECK_INT(vindex_build_add(b, neg, rows, 2, d, err), QR_EINVAL);
    CHECK_OK(vindex_build_add(b, ids, x, 10, d, err), err);
    CHECK_OK(vindex_build_add(b, ids + 5, x, 1, d, err), err); /* id 6 again */
    CHECK_INT(vindex_build_commit(b, 7, err), QR_EINVAL);
    CHECK(strstr(err, "twice") != NULL);
    source failing = {ids, x, 100, 0, d, true};
    CHECK_INT(vindex_build(v, source_pull, &failing, 7, NULL, err), QR_EIO);
    CHECK(strstr(err, "on purpose") != NULL);
    vindex_centroids c = {x, 4, d + 1};
    CHECK_INT(vindex_build_begin(v, &c, &b, err), QR_EINVAL);
    float cbuf[4 * 8];
    CHECK_INT(vindex_get_centroids(v, cbuf, 4, err), QR_EINVAL); /* flat has no lists */
    vindex_get_info(v, &info);
    CHECK_INT(info.generation, 1);
    CHECK_INT(info.count, 100);
    char names[512];
    list_dir(dir, names, sizeof(names));
    CHECK_STR(names, "LOCK MANIFEST gen-1.faiss gen-1.vec");

    vindex_close(v);
    vindex_close(NULL);
    vindex_build_abort(NULL);
    free(x);
    free(ids);
    remove_dir(dir);
}

/* ---- type selection -------------------------------------------------------------------------- */

TEST(type_follows_size_and_override)
{
    char err[QR_ERR_LEN];
    const int d = 16;
    const size_t n = 2000;
    float *x = random_vectors(n, d, 20, 0.3, 2);
    int64_t *ids = sequential_ids(n, 10, 3);
    static const struct {
        const char *type;
        size_t threshold, n;
        const char *want;
        size_t nlist;
    } cases[] = {
        {"auto", 1000, 1000, "flat", 0},
        {"auto", 1000, 1001, "ivf_sq8", 25}, /* 4*sqrt(1001) = 127, capped at 1001/39 = 25 */
        {"auto", 50000, 2000, "flat", 0},
        {"auto", 10, 0, "flat", 0}, /* an empty build is always flat */
        {"flat", 10, 2000, "flat", 0},
        {"ivf_flat", 50000, 2000, "ivf_flat", 51},
        {"ivf_sq8", 50000, 2000, "ivf_sq8", 51},
        {"ivf_pq", 50000, 2000, "ivf_pq", 51},
        {"hnsw", 50000, 2000, "hnsw", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *dir = make_dir();
        vindex_opts o = test_opts(cases[i].type);
        o.exact_threshold = cases[i].threshold;
        vindex *v = NULL;
        bool stale;
        CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
        CHECK_OK(build_from(v, ids, x, cases[i].n, d, 1, err), err);
        vindex_info info;
        vindex_get_info(v, &info);
        CHECK_MSG(strcmp(info.type, cases[i].want) == 0, "case %zu: type %s, want %s", i, info.type,
                  cases[i].want);
        CHECK_INT(info.count, cases[i].n);
        CHECK_INT(info.nlist, cases[i].nlist);
        if (cases[i].nlist)
            CHECK_INT(info.nprobe, o.nprobe < cases[i].nlist ? o.nprobe : cases[i].nlist);
        if (strcmp(cases[i].want, "hnsw") == 0)
            CHECK_INT(info.ef_search, o.ef_search);
        /* whatever the type, a stored vector finds itself first */
        if (cases[i].n) {
            int64_t out[3];
            float sc[3];
            size_t found;
            CHECK_OK(vindex_search(v, x + 7 * (size_t)d, d, 3, NULL, NULL, out, sc, &found, NULL, err), err);
            CHECK_INT(found, 3);
            CHECK_INT(out[0], ids[7]);
            CHECK(fabsf(sc[0] - 1.0f) < 1e-5f);
        }
        vindex_close(v);
        remove_dir(dir);
    }
    free(x);
    free(ids);
}

/* ---- exact paths against the oracle ---------------------------------------------------------- */

TEST(search_matches_oracle_with_predicate)
{
    char err[QR_ERR_LEN];
    const int d = 24;
    const size_t n = 3000, nq = 25;
    char *dir = make_dir();
    float *x = random_vectors(n, d, 0, 1.0, 3);
    float *queries = random_vectors(nq, d, 0, 1.0, 4);
    int64_t *ids = sequential_ids(n, 5, 7);
    model m = {.dim = d};
    for (size_t i = 0; i < n; i++)
        model_add(&m, ids[i], x + i * (size_t)d);
    vindex_opts o = test_opts("flat");
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
    unsigned pct;
    int64_t mod;
    for (size_t k = 1; k <= 64; k *= 4) {
        CHECK(matches_oracle(v, &m, queries, nq, k, NULL, NULL));
        pct = 30;
        CHECK(matches_oracle(v, &m, queries, nq, k, permit_hash, &pct));
        pct = 1; /* ~30 permitted of 3000: over-fetch runs out, the exact scan answers */
        CHECK(matches_oracle(v, &m, queries, nq, k, permit_hash, &pct));
        mod = 7 * 997; /* permits almost nothing */
        CHECK(matches_oracle(v, &m, queries, nq, k, permit_mod, &mod));
    }
    /* more than exist */
    CHECK(matches_oracle(v, &m, queries, 3, 5000, NULL, NULL));
    vindex_close(v);
    model_free(&m);
    free(x);
    free(queries);
    free(ids);
    remove_dir(dir);
}

/* Rows of four +-0.5 entries have norm 1 exactly and exact inner products in {-1, -0.75, ..., 1}:
 * thousands of exact ties, which must come out by smaller id on every path. */
static float *tie_vectors(size_t n, int dim, uint64_t seed)
{
    float *x = calloc(n * (size_t)dim, sizeof(float));
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        for (int j = 0; j < 4; j++) {
            int pos;
            do
                pos = (int)(rng_next(&s) % (uint64_t)dim);
            while (x[i * (size_t)dim + pos] != 0);
            x[i * (size_t)dim + pos] = rng_next(&s) & 1 ? 0.5f : -0.5f;
        }
    }
    return x;
}

TEST(ties_are_broken_by_smaller_id)
{
    char err[QR_ERR_LEN];
    const int d = 8;
    const size_t n = 2000, nq = 10;
    char *dir = make_dir();
    float *x = tie_vectors(n, d, 5);
    float *queries = tie_vectors(nq, d, 6);
    /* ids descend while rows are added, so index order and id order disagree */
    int64_t *ids = sequential_ids(n, 100000, -11);
    model m = {.dim = d};
    for (size_t i = 0; i < n; i++)
        model_add(&m, ids[i], x + i * (size_t)d);
    vindex_opts o = test_opts("flat");
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
    unsigned pct = 50;
    for (size_t k = 1; k <= 300; k = k * 3 + 1) {
        CHECK(matches_oracle(v, &m, queries, nq, k, NULL, NULL));
        CHECK(matches_oracle(v, &m, queries, nq, k, permit_hash, &pct));
    }
    /* the subset path over every other id, in reverse order with duplicates */
    size_t ns = n / 2 + 10;
    int64_t *subset = malloc(ns * sizeof(int64_t));
    for (size_t i = 0; i < n / 2; i++)
        subset[i] = ids[n - 1 - 2 * i];
    for (size_t i = 0; i < 10; i++)
        subset[n / 2 + i] = subset[i * 3];
    model ms = {.dim = d};
    for (size_t i = 0; i < n; i += 2)
        model_add(&ms, ids[i + 1], x + (i + 1) * (size_t)d);
    int64_t out[200], oout[200];
    float sc[200], osc[200];
    for (size_t qi = 0; qi < nq; qi++) {
        size_t found;
        CHECK_OK(
            vindex_search_subset(v, queries + qi * (size_t)d, d, 200, subset, ns, out, sc, &found, NULL, err),
            err);
        size_t ofound = oracle(&ms, queries + qi * (size_t)d, 200, NULL, NULL, oout, osc);
        CHECK_INT(found, ofound);
        for (size_t i = 0; i < found; i++) {
            CHECK_INT(out[i], oout[i]);
            CHECK(sc[i] == osc[i]);
        }
    }
    vindex_close(v);
    model_free(&m);
    model_free(&ms);
    free(subset);
    free(x);
    free(queries);
    free(ids);
    remove_dir(dir);
}

/* Hundreds of near-duplicates (rows equal up to the last bits, as re-ingested boilerplate gives)
 * whose exact scores differ by less than BLAS rounding: the exact paths must still rank them by
 * exact score, then id, as the oracle does. */
TEST(near_duplicates_rank_exactly)
{
    char err[QR_ERR_LEN];
    const int d = 24;
    const size_t ndup = 300, n = 1300, nq = 6;
    char *dir = make_dir();
    float *x = random_vectors(n, d, 0, 1.0, 101);
    uint64_t s = 102;
    for (size_t i = 1; i < ndup; i++)
        for (int j = 0; j < d; j++)
            x[i * d + j] = x[j] * (float)(1.0 + 2e-7 * rng_gauss(&s));
    /* ids in random order against the rows */
    int64_t *ids = sequential_ids(n, 1, 1);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(rng_next(&s) % (i + 1));
        int64_t t = ids[i];
        ids[i] = ids[j];
        ids[j] = t;
    }
    model m = {.dim = d};
    for (size_t i = 0; i < n; i++)
        model_add(&m, ids[i], x + i * (size_t)d);
    float *queries = malloc(nq * d * sizeof(float));
    for (size_t qi = 0; qi < nq; qi++)
        for (int j = 0; j < d; j++)
            queries[qi * d + j] = x[j] + (float)(0.3 * rng_gauss(&s));
    vindex_opts o = test_opts("flat");
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
    for (size_t k = 1; k <= 64; k *= 4) {
        CHECK(matches_oracle(v, &m, queries, nq, k, NULL, NULL));
        for (size_t qi = 0; qi < nq; qi++) {
            int64_t out[64], oout[64];
            float sc[64], osc[64];
            size_t found;
            CHECK_OK(vindex_search_subset(v, queries + qi * d, d, k, ids, n, out, sc, &found, NULL, err),
                     err);
            CHECK_INT(found, oracle(&m, queries + qi * d, k, NULL, NULL, oout, osc));
            for (size_t i = 0; i < found; i++)
                CHECK(out[i] == oout[i] && sc[i] == osc[i]);
        }
    }
    vindex_close(v);
    model_free(&m);
    free(queries);
    free(x);
    free(ids);
    remove_dir(dir);
}

TEST(subset_search_matches_oracle)
{
    char err[QR_ERR_LEN];
    const int d = 32;
    const size_t n = 5000, nq = 12;
    char *dir = make_dir();
    float *x = random_vectors(n + 300, d, 10, 0.5, 7);
    float *queries = random_vectors(nq, d, 10, 0.5, 8);
    int64_t *ids = sequential_ids(n + 300, 1, 2);
    vindex_opts o = test_opts("ivf_sq8"); /* the subset path never uses the ANN index */
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
    /* a delta of 300 and some tombstones in both */
    CHECK_OK(vindex_add(v, ids + n, x + n * (size_t)d, 300, d, 2, err), err);
    int64_t removed[4] = {ids[3], ids[100], ids[n + 5], ids[n + 299]};
    CHECK_OK(vindex_remove(v, removed, 4, 3, err), err);

    uint64_t s = 9;
    for (int round = 0; round < 6; round++) {
        /* a random subset: some ids twice, some unknown, unsorted */
        size_t ns = round == 0 ? 0 : (size_t)(rng_next(&s) % 3000) + 1;
        int64_t *subset = malloc((ns + 1) * sizeof(int64_t));
        model m = {.dim = d};
        for (size_t i = 0; i < ns; i++) {
            uint64_t r = rng_next(&s) % (n + 400);
            subset[i] = r < n + 300 ? ids[r] : (int64_t)(1000000 + r); /* unknown ids are skipped */
        }
        for (size_t i = 0; i < n + 300; i++) {
            bool in = false;
            for (size_t j = 0; j < ns && !in; j++)
                in = subset[j] == ids[i];
            if (in)
                model_add(&m, ids[i], x + i * (size_t)d);
        }
        for (size_t i = 0; i < 4; i++)
            model_kill(&m, removed[i]);
        for (size_t k = 1; k <= 100; k *= 10) {
            for (size_t qi = 0; qi < nq; qi++) {
                int64_t out[100], oout[100];
                float sc[100], osc[100];
                size_t found;
                CHECK_OK(vindex_search_subset(v, queries + qi * (size_t)d, d, k, subset, ns, out, sc, &found,
                                              NULL, err),
                         err);
                size_t ofound = oracle(&m, queries + qi * (size_t)d, k, NULL, NULL, oout, osc);
                CHECK_INT(found, ofound);
                for (size_t i = 0; i < found; i++) {
                    CHECK_MSG(out[i] == oout[i] && sc[i] == osc[i],
                              "round %d k %zu q %zu rank %zu: %lld vs %lld", round, k, qi, i,
                              (long long)out[i], (long long)oout[i]);
                }
            }
        }
        model_free(&m);
        free(subset);
    }
    vindex_close(v);
    free(x);
    free(queries);
    free(ids);
    remove_dir(dir);
}

/* ---- cancellation ------------------------------------------------------------------------------ */

typedef struct {
    int calls, stop;
} probe_count;

/* Cancels its token at its stop-th call (every check asks it: interval 0). */
static bool probe_at(void *ctx)
{
    probe_count *p = ctx;
    return ++p->calls >= p->stop;
}

static bool permit_none(void *ctx, int64_t id)
{
    (void)ctx, (void)id;
    return false;
}

TEST(searches_stop_when_their_token_fails)
{
    char err[QR_ERR_LEN];
    const int d = 384; /* 21 rows per BLAS block: 5,000 rows are some 240 blocks */
    const size_t n = 5000;
    char *dir = make_dir();
    float *x = random_vectors(n, d, 10, 0.5, 11);
    int64_t *ids = sequential_ids(n, 1, 1);
    vindex_opts o = test_opts("flat");
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
    int64_t out[10];
    float sc[10];
    size_t found = 99;

    qr_cancel late;
    qr_cancel_init(&late);
    qr_cancel_set_deadline(&late, qr_now_ns() - 2000000, 1);
    CHECK_INT(vindex_search(v, x, d, 10, NULL, NULL, out, sc, &found, &late, err), QR_ETIMEOUT);
    CHECK(found == 0 && strstr(err, "deadline"));
    CHECK_INT(vindex_search_subset(v, x, d, 10, ids, n, out, sc, &found, &late, err), QR_ETIMEOUT);
    CHECK_INT(found, 0);

    /* a predicate that passes nothing sends the search to an exact scan of every row: the token is
     * asked before anything (1), before the index's round (2), then every 16 blocks of the scan */
    probe_count pc = {0, 6};
    qr_cancel tok;
    qr_cancel_init(&tok);
    qr_cancel_set_probe(&tok, probe_at, &pc, 0);
    CHECK_INT(vindex_search(v, x, d, 10, permit_none, NULL, out, sc, &found, &tok, err), QR_ECANCELED);
    CHECK_INT(pc.calls, 6);
    CHECK_INT(found, 0);
    /* the subset scan: before anything, then every 16 blocks */
    pc = (probe_count){0, 4};
    qr_cancel_init(&tok);
    qr_cancel_set_probe(&tok, probe_at, &pc, 0);
    CHECK_INT(vindex_search_subset(v, x, d, 10, ids, n, out, sc, &found, &tok, err), QR_ECANCELED);
    CHECK_INT(pc.calls, 4);
    /* a token that never fails changes nothing */
    qr_cancel calm;
    qr_cancel_init(&calm);
    qr_cancel_set_deadline(&calm, qr_now_ns(), 600000);
    CHECK_OK(vindex_search(v, x, d, 10, NULL, NULL, out, sc, &found, &calm, err), err);
    CHECK(found == 10 && out[0] == ids[0]);
    CHECK_OK(vindex_search_subset(v, x, d, 10, ids, n, out, sc, &found, &calm, err), err);
    CHECK(found == 10 && out[0] == ids[0]);
    vindex_close(v);
    free(x);
    free(ids);
    remove_dir(dir);
}

/* ---- ANN types -------------------------------------------------------------------------------- */

TEST(ann_types_recall_and_never_leak)
{
    char err[QR_ERR_LEN];
    const int d = 32;
    const size_t n = 6000, nq = 40, k = 10;
    /* queries from the same clusters as the data, not indexed themselves */
    float *x = random_vectors(n + nq, d, 30, 0.35, 11);
    const float *queries = x + n * (size_t)d;
    int64_t *ids = sequential_ids(n, 3, 5);
    model m = {.dim = d};
    for (size_t i = 0; i < n; i++)
        model_add(&m, ids[i], x + i * (size_t)d);
    const char *types[] = {"ivf_flat", "ivf_sq8", "ivf_pq", "hnsw"};
    for (size_t t = 0; t < 4; t++) {
        char *dir = make_dir();
        vindex_opts o = test_opts(types[t]);
        vindex *v = NULL;
        bool stale;
        CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
        CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
        size_t hits = 0;
        for (size_t qi = 0; qi < nq; qi++) {
            int64_t out[10], oout[10];
            float sc[10], osc[10];
            size_t found;
            const float *q = queries + qi * (size_t)d;
            CHECK_OK(vindex_search(v, q, d, k, NULL, NULL, out, sc, &found, NULL, err), err);
            CHECK_INT(found, k);
            oracle(&m, q, k, NULL, NULL, oout, osc);
            for (size_t i = 0; i < k; i++) {
                for (size_t j = 0; j < k; j++)
                    hits += out[i] == oout[j];
                /* returned scores are exact, whatever FAISS computed */
                ssize_t pos = -1;
                for (size_t r = 0; r < n && pos < 0; r++)
                    if (ids[r] == out[i])
                        pos = (ssize_t)r;
                CHECK(pos >= 0);
                float qn[32];
                normalize(q, qn, d);
                CHECK(sc[i] == score_of(m.rows + (size_t)pos * d, qn, d));
                CHECK(i == 0 || sc[i - 1] > sc[i] || (sc[i - 1] == sc[i] && out[i - 1] < out[i]));
            }
        }
        double recall = (double)hits / (double)(nq * k);
        CHECK_MSG(recall >= 0.95, "%s recall@10 %.3f", types[t], recall);
        /* predicates of 40% and 2%: over-fetch still finds k, nothing unpermitted comes back, and
         * recall holds */
        unsigned pcts[2] = {40, 2};
        for (int p = 0; p < 2; p++) {
            size_t phits = 0;
            for (size_t qi = 0; qi < nq; qi++) {
                int64_t out[10], oout[10];
                float sc[10], osc[10];
                size_t found;
                const float *q = queries + qi * (size_t)d;
                CHECK_OK(vindex_search(v, q, d, k, permit_hash, &pcts[p], out, sc, &found, NULL, err), err);
                CHECK_INT(found, k);
                oracle(&m, q, k, permit_hash, &pcts[p], oout, osc);
                for (size_t i = 0; i < found; i++) {
                    CHECK(permit_hash(&pcts[p], out[i]));
                    for (size_t j = 0; j < k; j++)
                        phits += out[i] == oout[j];
                }
            }
            recall = (double)phits / (double)(nq * k);
            CHECK_MSG(recall >= 0.9, "%s recall@10 with a %u%% predicate: %.3f", types[t], pcts[p], recall);
        }
        /* about a dozen permitted chunks: the ANN index runs dry and the exact scan answers,
         * exactly as the oracle does */
        int64_t mod = 503;
        size_t went_exact = 0;
        for (size_t qi = 0; qi < nq; qi++) {
            int64_t out[10], oout[10];
            float sc[10], osc[10];
            size_t found;
            vindex_info a, b;
            const float *q = queries + qi * (size_t)d;
            vindex_get_info(v, &a);
            CHECK_OK(vindex_search(v, q, d, k, permit_mod, &mod, out, sc, &found, NULL, err), err);
            vindex_get_info(v, &b);
            CHECK_INT(b.searches, a.searches + 1);
            size_t ofound = oracle(&m, q, k, permit_mod, &mod, oout, osc);
            CHECK_INT(found, ofound);
            if (b.exact_scans == a.exact_scans)
                continue;
            went_exact++;
            for (size_t i = 0; i < found; i++)
                CHECK(out[i] == oout[i] && sc[i] == osc[i]);
        }
        CHECK_MSG(went_exact >= nq / 2, "%s: %zu of %zu searches went exact", types[t], went_exact, nq);
        vindex_close(v);
        remove_dir(dir);
    }
    model_free(&m);
    free(x);
    free(ids);
}

/* ---- the permission test inside the IVF scan (vindex_search_permitted) ----------------------- */

/* ctx: an ascending id list; the oracle's predicate for it. */
typedef struct {
    const int64_t *ids;
    size_t n;
} idset;

static bool permit_set(void *ctx, int64_t id)
{
    const idset *p = ctx;
    size_t a = 0, b = p->n;
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (p->ids[mid] < id)
            a = mid + 1;
        else
            b = mid;
    }
    return a < p->n && p->ids[a] == id;
}

/* The ids of the index (main and delta) that permit_hash(pct) passes, plus one id the index does
 * not hold after every third of them, ascending. */
static int64_t *permitted_ids(const int64_t *ids, size_t n, unsigned pct, size_t *out_n)
{
    int64_t *p = malloc((2 * n + 1) * sizeof(int64_t));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!permit_hash(&pct, ids[i]))
            continue;
        p[m++] = ids[i];
        if (m % 3 == 0)
            p[m++] = ids[i] + 1; /* ids are odd: even ones are unknown */
    }
    *out_n = m;
    return p;
}

/* Searches q with the permitted scan and checks every hit: permitted, alive, its exact score,
 * in order. Returns the number found (or SIZE_MAX after a failure). */
static size_t check_permitted_hits(vindex *v, const model *m, const float *q, size_t k, const idset *set,
                                   int64_t *out, float *sc, vindex_scan_report *rep)
{
    char err[QR_ERR_LEN];
    size_t found = 0;
    int d = m->dim;
    if (vindex_search_permitted(v, q, d, k, set->ids, set->n, out, sc, &found, NULL, rep, err) != QR_OK) {
        harness_fail(__FILE__, __LINE__, "permitted search failed: %s", err);
        return SIZE_MAX;
    }
    float qn[64];
    normalize(q, qn, d);
    for (size_t i = 0; i < found; i++) {
        ssize_t pos = -1;
        for (size_t r = 0; r < m->n && pos < 0; r++)
            if (m->ids[r] == out[i])
                pos = (ssize_t)r;
        if (pos < 0 || !m->alive[pos] || !permit_set((void *)set, out[i]) ||
            sc[i] != score_of(m->rows + (size_t)pos * d, qn, d) ||
            (i && !(sc[i - 1] > sc[i] || (sc[i - 1] == sc[i] && out[i - 1] < out[i])))) {
            harness_fail(__FILE__, __LINE__, "rank %zu: id %lld is not a permitted, alive chunk in order", i,
                         (long long)out[i]);
            return SIZE_MAX;
        }
    }
    return found;
}

TEST(permitted_scan_tests_permission_inside_ivf)
{
    char err[QR_ERR_LEN];
    const int d = 32;
    const size_t n = 4000, nd = 300, nq = 30, k = 10;
    float *x = random_vectors(n + nd + nq, d, 20, 0.4, 21);
    const float *queries = x + (n + nd) * (size_t)d;
    int64_t *ids = sequential_ids(n + nd, 1, 2); /* odd ids: even ones are never in the index */
    model m = {.dim = d};
    for (size_t i = 0; i < n + nd; i++)
        model_add(&m, ids[i], x + i * (size_t)d);
    /* nprobe 3 of 40 lists: the scan path; nprobe 40 of 40: every list, so the exact answer */
    size_t probes[2] = {3, 40};
    for (int pi = 0; pi < 2; pi++) {
        char *dir = make_dir();
        vindex_opts o = test_opts("ivf_flat");
        o.nlist = 40;
        o.nprobe = probes[pi];
        vindex *v = NULL;
        bool stale;
        CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
        CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
        CHECK_OK(vindex_add(v, ids + n, x + n * (size_t)d, nd, d, 2, err), err);
        int64_t removed[3] = {ids[10], ids[500], ids[n + 7]};
        CHECK_OK(vindex_remove(v, removed, 3, 3, err), err);
        model alive = m;
        alive.alive = malloc((n + nd) * sizeof(bool));
        memcpy(alive.alive, m.alive, (n + nd) * sizeof(bool));
        for (int i = 0; i < 3; i++)
            model_kill(&alive, removed[i]);

        unsigned pcts[2] = {30, 60};
        for (int p = 0; p < 2; p++) {
            size_t np = 0;
            int64_t *perm = permitted_ids(ids, n + nd, pcts[p], &np);
            idset set = {perm, np};
            size_t delta_hits = 0, hits = 0;
            for (size_t qi = 0; qi < nq; qi++) {
                int64_t out[10], oout[10];
                float sc[10], osc[10];
                vindex_scan_report rep;
                const float *q = queries + qi * (size_t)d;
                size_t found = check_permitted_hits(v, &alive, q, k, &set, out, sc, &rep);
                CHECK(found != SIZE_MAX);
                CHECK_INT(found, k);
                CHECK_MSG(!rep.subset, "%u%%, nprobe %zu: answered by the subset path", pcts[p], probes[pi]);
                CHECK(rep.probes >= probes[pi] && rep.walked > 0 && rep.scored >= k);
                size_t ofound = oracle(&alive, q, k, permit_set, &set, oout, osc);
                CHECK_INT(ofound, k);
                for (size_t i = 0; i < found; i++) {
                    delta_hits += out[i] > ids[n - 1];
                    for (size_t j = 0; j < ofound; j++)
                        hits += out[i] == oout[j];
                    if (probes[pi] == 40)
                        CHECK_MSG(out[i] == oout[i] && sc[i] == osc[i], "%u%% q %zu rank %zu: %lld vs %lld",
                                  pcts[p], qi, i, (long long)out[i], (long long)oout[i]);
                }
            }
            CHECK_MSG(delta_hits > 0, "%u%%: no delta row was ever returned", pcts[p]);
            /* the lists probed grow as the share shrinks: recall holds near the index's own */
            double recall = (double)hits / (double)(nq * k);
            CHECK_MSG(recall >= 0.8, "%u%%, nprobe %zu: recall@10 %.3f", pcts[p], probes[pi], recall);

            /* a tombstone takes a chunk out at once: remove the best hit of a query, search again */
            if (p == 0) {
                int64_t out[10], out2[10];
                float sc[10], sc2[10];
                const float *q = queries;
                CHECK_INT(check_permitted_hits(v, &alive, q, k, &set, out, sc, NULL), k);
                CHECK_OK(vindex_remove(v, out, 1, 4, err), err);
                model_kill(&alive, out[0]);
                CHECK_INT(check_permitted_hits(v, &alive, q, k, &set, out2, sc2, NULL), k);
                for (size_t i = 0; i < k; i++)
                    CHECK(out2[i] != out[0]);
                CHECK(out2[0] == out[1]);
            }
            /* k above the permitted members of the probed lists: the exact answer over the set */
            {
                const size_t kb = 1000;
                int64_t *out = malloc(kb * sizeof(int64_t)), *oout = malloc(kb * sizeof(int64_t));
                float *sc = malloc(kb * sizeof(float)), *osc = malloc(kb * sizeof(float));
                vindex_scan_report rep;
                size_t found = check_permitted_hits(v, &alive, queries + d, kb, &set, out, sc, &rep);
                size_t ofound = oracle(&alive, queries + d, kb, permit_set, &set, oout, osc);
                CHECK_INT(found, ofound);
                for (size_t i = 0; i < found && i < ofound; i++)
                    CHECK(out[i] == oout[i] && sc[i] == osc[i]);
                free(out);
                free(oout);
                free(sc);
                free(osc);
            }
            free(perm);
        }

        /* no permitted chunk, or none the index holds: nothing, and no error */
        int64_t out[100], oout[100];
        float sc[100], osc[100];
        size_t found = 99;
        CHECK_OK(vindex_search_permitted(v, queries, d, k, NULL, 0, out, sc, &found, NULL, NULL, err), err);
        CHECK_INT(found, 0);
        int64_t unknown[4] = {0, 2, 4, 1000000};
        CHECK_OK(vindex_search_permitted(v, queries, d, k, unknown, 4, out, sc, &found, NULL, NULL, err),
                 err);
        CHECK_INT(found, 0);
        /* k above the permitted set: every permitted, alive chunk, in the exact order */
        int64_t few[60];
        for (size_t i = 0; i < 60; i++)
            few[i] = ids[i * 70];
        idset fset = {few, 60};
        found = check_permitted_hits(v, &alive, queries + 2 * d, 100, &fset, out, sc, NULL);
        size_t ofound = oracle(&alive, queries + 2 * d, 100, permit_set, &fset, oout, osc);
        CHECK_INT(found, ofound);
        CHECK(found <= 60 && found >= 59); /* one may be the best hit removed above */
        for (size_t i = 0; i < found; i++)
            CHECK(out[i] == oout[i] && sc[i] == osc[i]);
        /* bad input: unsorted or repeated ids */
        int64_t unsorted[3] = {5, 3, 7}, twice[3] = {3, 3, 7};
        CHECK_INT(vindex_search_permitted(v, queries, d, k, unsorted, 3, out, sc, &found, NULL, NULL, err),
                  QR_EINVAL);
        CHECK_INT(vindex_search_permitted(v, queries, d, k, twice, 3, out, sc, &found, NULL, NULL, err),
                  QR_EINVAL);
        CHECK_INT(vindex_search_permitted(v, queries, d + 1, k, few, 60, out, sc, &found, NULL, NULL, err),
                  QR_EINVAL);
        free(alive.alive);
        vindex_close(v);
        remove_dir(dir);
    }
    model_free(&m);
    free(x);
    free(ids);
}

TEST(permitted_scan_work_does_not_depend_on_hidden_chunks)
{
    /* issue #16 kept: the same permitted chunks, the same IVF lists (the same centroids), and 500
     * chunks the caller may not read either crowding the first query or far from every query.
     * The lists probed, the chunks scored and the answers must be the same either way. */
    char err[QR_ERR_LEN];
    const int d = 16;
    const size_t np = 1500, nh = 500, nq = 8, k = 10, nlist = 16;
    float *x = random_vectors(np + nq, d, 12, 0.4, 41);
    const float *queries = x + np * (size_t)d;
    int64_t *ids = sequential_ids(np + nh, 1, 1); /* permitted 1..1500, hidden 1501..2000 */
    model m = {.dim = d};
    for (size_t i = 0; i < np; i++)
        model_add(&m, ids[i], x + i * (size_t)d);
    float *cent = malloc(nlist * d * sizeof(float));
    CHECK_OK(vindex_kmeans(m.rows, np, d, nlist, 10, 3, cent, err), err);
    uint64_t s = 43;
    float *rows = malloc((np + nh) * (size_t)d * sizeof(float));
    vindex_scan_report reps[2][8];
    int64_t got[2][8][10];
    float gsc[2][8][10];
    size_t found[2][8];
    for (int near = 0; near < 2; near++) {
        memcpy(rows, x, np * (size_t)d * sizeof(float));
        for (size_t h = 0; h < nh; h++)
            for (int j = 0; j < d; j++)
                rows[(np + h) * (size_t)d + j] =
                    (near ? 1.0f : -1.0f) * queries[j] + 0.01f * (float)rng_gauss(&s);
        char *dir = make_dir();
        vindex_opts o = test_opts("ivf_flat");
        o.nprobe = 3;
        vindex *v = NULL;
        bool stale;
        CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
        vindex_centroids vc = {cent, nlist, d};
        source src = {ids, rows, np + nh, 0, d, false};
        CHECK_OK(vindex_build(v, source_pull, &src, 1, &vc, err), err);
        for (size_t qi = 0; qi < nq; qi++) {
            CHECK_OK(vindex_search_permitted(v, queries + qi * d, d, k, ids, np, got[near][qi], gsc[near][qi],
                                             &found[near][qi], NULL, &reps[near][qi], err),
                     err);
            CHECK(!reps[near][qi].subset);
            CHECK_INT(found[near][qi], k);
        }
        if (near) {
            /* the hidden chunks do crowd the first query: an unfiltered search sees only them */
            int64_t out[10];
            float sc[10];
            size_t n = 0;
            CHECK_OK(vindex_search(v, queries, d, k, NULL, NULL, out, sc, &n, NULL, err), err);
            for (size_t i = 0; i < n; i++)
                CHECK(out[i] > (int64_t)np);
        }
        vindex_close(v);
        remove_dir(dir);
    }
    for (size_t qi = 0; qi < nq; qi++) {
        CHECK_INT(reps[0][qi].probes, reps[1][qi].probes);
        CHECK_INT(reps[0][qi].scored, reps[1][qi].scored);
        CHECK_INT(found[0][qi], found[1][qi]);
        for (size_t i = 0; i < found[0][qi]; i++)
            CHECK(got[0][qi][i] == got[1][qi][i] && gsc[0][qi][i] == gsc[1][qi][i]);
    }
    free(rows);
    free(cent);
    model_free(&m);
    free(x);
    free(ids);
}

TEST(permitted_scan_on_flat_and_hnsw_is_exact)
{
    char err[QR_ERR_LEN];
    const int d = 16;
    const size_t n = 2000, nq = 10, k = 10;
    float *x = random_vectors(n + nq, d, 10, 0.5, 31);
    int64_t *ids = sequential_ids(n, 1, 2);
    model m = {.dim = d};
    for (size_t i = 0; i < n; i++)
        model_add(&m, ids[i], x + i * (size_t)d);
    size_t np = 0;
    int64_t *perm = permitted_ids(ids, n, 40, &np);
    idset set = {perm, np};
    const char *types[2] = {"flat", "hnsw"};
    for (int t = 0; t < 2; t++) {
        char *dir = make_dir();
        vindex_opts o = test_opts(types[t]);
        vindex *v = NULL;
        bool stale;
        CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
        CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
        for (size_t qi = 0; qi < nq; qi++) {
            int64_t out[10], oout[10];
            float sc[10], osc[10];
            vindex_scan_report rep;
            const float *q = x + (n + qi) * (size_t)d;
            size_t found = check_permitted_hits(v, &m, q, k, &set, out, sc, &rep);
            CHECK(rep.subset);
            size_t ofound = oracle(&m, q, k, permit_set, &set, oout, osc);
            CHECK_INT(found, ofound);
            for (size_t i = 0; i < found && i < ofound; i++)
                CHECK(out[i] == oout[i] && sc[i] == osc[i]);
        }
        vindex_close(v);
        remove_dir(dir);
    }
    free(perm);
    model_free(&m);
    free(x);
    free(ids);
}

/* ---- persistence ------------------------------------------------------------------------------ */

/* ---- the int8 scan (vindex_i8.c, vindex_scan.c) --------------------------------------------- */

TEST(int8_kernels_agree)
{
    /* the AVX2 kernel, the portable one and a plain loop give the same integer sums, at the
     * extremes of the codes and for dimensions around the kernel's 32- and 64-byte steps */
    uint64_t s = 7;
    const int dims[] = {1, 16, 31, 32, 33, 63, 64, 65, 100, 384};
    const size_t n = 40;
    if (!vindex_i8_has_avx2())
        fprintf(stderr, "int8_kernels_agree: this CPU has no AVX2; both calls take the portable kernel\n");
    for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
        int d = dims[di];
        int8_t *codes = malloc(n * (size_t)d), *q = malloc((size_t)d);
        for (size_t i = 0; i < n * (size_t)d; i++) {
            int r = (int)(rng_next(&s) % 255) - 127;
            codes[i] = (int8_t)(i < (size_t)d ? 127 : i < 2 * (size_t)d ? -127 : r); /* rows 0, 1: extremes */
        }
        for (int i = 0; i < d; i++)
            q[i] = (int8_t)(i % 2 ? -127 : 127);
        int32_t fast[40], slow[40];
        for (int round = 0; round < 2; round++) {
            if (round)
                for (int i = 0; i < d; i++)
                    q[i] = (int8_t)((int)(rng_next(&s) % 255) - 127);
            vindex_i8_use_portable(false);
            vindex_i8_dots(codes, n, d, q, fast);
            vindex_i8_use_portable(true);
            vindex_i8_dots(codes, n, d, q, slow);
            vindex_i8_use_portable(false);
            for (size_t r = 0; r < n; r++) {
                int32_t want = 0;
                for (int i = 0; i < d; i++)
                    want += (int32_t)codes[r * (size_t)d + i] * q[i];
                CHECK_MSG(fast[r] == want && slow[r] == want, "dim %d row %zu: %d / %d, want %d", d, r,
                          fast[r], slow[r], want);
            }
        }
        free(codes);
        free(q);
    }
    /* the quantizers: the same codes and scale, |x - scale * code| at most half a step */
    for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
        int d = dims[di];
        float *x = malloc((size_t)d * sizeof(float));
        int8_t *c1 = malloc((size_t)d), *c2 = malloc((size_t)d);
        for (int round = 0; round < 20; round++) {
            for (int i = 0; i < d; i++)
                x[i] =
                    round == 0 ? (float)(i % 255 - 127) / 2.0f : (float)rng_gauss(&s); /* round 0: halves */
            float s1, s2;
            vindex_i8_use_portable(false);
            vindex_i8_quantize(x, d, c1, &s1);
            vindex_i8_use_portable(true);
            vindex_i8_quantize(x, d, c2, &s2);
            vindex_i8_use_portable(false);
            CHECK(s1 == s2 && memcmp(c1, c2, (size_t)d) == 0);
            for (int i = 0; i < d; i++)
                CHECK_MSG(fabsf(x[i] - s1 * (float)c1[i]) <= 0.5001f * s1 && c1[i] >= -127,
                          "dim %d elem %d: %g vs %d * %g", d, i, x[i], c1[i], s1);
        }
        free(x);
        free(c1);
        free(c2);
    }
}

TEST(int8_scan_matches_oracle_when_every_list_is_probed)
{
    /* every list probed: the int8 scan's candidates, re-scored exactly, are the exact top k,
     * with the delta and the tombstones; dimension 48 takes the kernel's tail too */
    char err[QR_ERR_LEN];
    const int d = 48;
    const size_t n = 3000, nd = 200, nq = 20;
    float *x = random_vectors(n + nd + nq, d, 30, 0.5, 91);
    const float *queries = x + (n + nd) * (size_t)d;
    int64_t *ids = sequential_ids(n + nd, 10, 3);
    const char *types[2] = {"ivf_flat", "ivf_sq8"};
    for (int t = 0; t < 2; t++) {
        model m = {.dim = d};
        for (size_t i = 0; i < n + nd; i++)
            model_add(&m, ids[i], x + i * (size_t)d);
        char *dir = make_dir();
        vindex_opts o = test_opts(types[t]);
        o.nlist = 20;
        o.nprobe = 20;
        vindex *v = NULL;
        bool stale;
        CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
        CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
        CHECK_OK(vindex_add(v, ids + n, x + n * (size_t)d, nd, d, 2, err), err);
        CHECK(matches_oracle(v, &m, queries, nq, 1, NULL, NULL));
        CHECK(matches_oracle(v, &m, queries, nq, 10, NULL, NULL));
        CHECK(matches_oracle(v, &m, queries, nq, 30, NULL, NULL));
        /* remove each query's best main hit and one delta row: gone at once, the rest exact */
        int64_t gone[21];
        for (size_t qi = 0; qi < nq; qi++) {
            int64_t out[1];
            float sc[1];
            size_t found = 0;
            CHECK_OK(vindex_search(v, queries + qi * (size_t)d, d, 1, NULL, NULL, out, sc, &found, NULL, err),
                     err);
            CHECK_INT(found, 1);
            gone[qi] = out[0];
        }
        gone[nq] = ids[n + 5];
        qsort(gone, nq + 1, sizeof(int64_t), vindex_cmp_ids);
        size_t ng = 0;
        for (size_t i = 0; i <= nq; i++)
            if (!ng || gone[ng - 1] != gone[i])
                gone[ng++] = gone[i];
        CHECK_OK(vindex_remove(v, gone, ng, 3, err), err);
        for (size_t i = 0; i < ng; i++)
            model_kill(&m, gone[i]);
        CHECK(matches_oracle(v, &m, queries, nq, 10, NULL, NULL));
        /* the portable kernel gives the same answers */
        vindex_i8_use_portable(true);
        CHECK(matches_oracle(v, &m, queries, nq, 10, NULL, NULL));
        vindex_i8_use_portable(false);
        vindex_close(v);
        remove_dir(dir);
        model_free(&m);
    }
    free(x);
    free(ids);
}

TEST(int8_scan_same_answers_with_either_kernel_and_as_faiss)
{
    /* a few lists of many probed, on well separated random vectors: the AVX2 and portable
     * kernels give the same top k, and so does FAISS's own scan of the same lists (the float
     * scores of these vectors are far apart next to the int8 rounding) */
    char err[QR_ERR_LEN];
    const int d = 64;
    const size_t n = 4000, nq = 25, k = 10;
    float *x = random_vectors(n + nq, d, 0, 1.0, 5);
    const float *queries = x + n * (size_t)d;
    int64_t *ids = sequential_ids(n, 1, 1);
    char *dir = make_dir();
    vindex_opts o = test_opts("ivf_flat");
    o.nlist = 40;
    o.nprobe = 6;
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
    int64_t got[3][25][10];
    float sc[3][25][10];
    size_t found[3][25];
    for (int run = 0; run < 3; run++) {
        if (run == 2) {
            vindex_close(v);
            o.scan = "faiss";
            CHECK_OK(vindex_open(dir, d, &o, 1, &v, &stale, err), err);
        }
        vindex_i8_use_portable(run == 1);
        for (size_t qi = 0; qi < nq; qi++)
            CHECK_OK(vindex_search(v, queries + qi * (size_t)d, d, k, NULL, NULL, got[run][qi], sc[run][qi],
                                   &found[run][qi], NULL, err),
                     err);
        vindex_i8_use_portable(false);
    }
    size_t same_as_faiss = 0;
    for (size_t qi = 0; qi < nq; qi++) {
        CHECK_INT(found[0][qi], k);
        CHECK_INT(found[1][qi], k);
        bool faiss_same = found[2][qi] == k;
        for (size_t i = 0; i < k; i++) {
            CHECK(got[0][qi][i] == got[1][qi][i] && sc[0][qi][i] == sc[1][qi][i]);
            faiss_same = faiss_same && got[0][qi][i] == got[2][qi][i] && sc[0][qi][i] == sc[2][qi][i];
        }
        same_as_faiss += faiss_same;
    }
    /* the lists each scan probes are ranked by FAISS's float quantizer or by int8 codes then
     * exactly: a list at the probe boundary may differ, rarely */
    CHECK_MSG(same_as_faiss >= nq - 2, "%zu of %zu queries answered as FAISS's scan answers them",
              same_as_faiss, nq);
    vindex_close(v);
    remove_dir(dir);
    free(x);
    free(ids);
}

TEST(int8_subset_is_exact_among_near_duplicates)
{
    /* vindex_search_subset on an IVF index ranks the listed chunks by their int8 codes and
     * scores exactly every chunk whose error bound reaches the k-th: among 300 rows closer to
     * one another than an int8 step the codes cannot order them, the answer must still be the
     * exact one */
    char err[QR_ERR_LEN];
    const int d = 96;
    const size_t n = 3000, ndup = 300, nq = 6;
    float *x = random_vectors(n, d, 0, 1.0, 123);
    uint64_t s = 124;
    float centre[96];
    for (int j = 0; j < d; j++)
        centre[j] = (float)rng_gauss(&s);
    for (size_t i = 0; i < ndup; i++)
        for (int j = 0; j < d; j++)
            x[i * 7 * (size_t)d + j] = centre[j] + 0.002f * (float)rng_gauss(&s); /* every 7th row */
    int64_t *ids = sequential_ids(n, 5, 1);
    char *dir = make_dir();
    vindex_opts o = test_opts("ivf_flat");
    o.nlist = 30;
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
    /* the subset: every near-duplicate and every 3rd other row, ascending */
    int64_t *subset = malloc(n * sizeof(int64_t));
    size_t ns = 0;
    model m = {.dim = d};
    for (size_t i = 0; i < n; i++)
        if ((i % 7 == 0 && i / 7 < ndup) || i % 3 == 0) {
            subset[ns++] = ids[i];
            model_add(&m, ids[i], x + i * (size_t)d);
        }
    float q[96];
    for (size_t qi = 0; qi < nq; qi++) {
        for (int j = 0; j < d; j++)
            q[j] = centre[j] + (qi ? 0.3f * (float)rng_gauss(&s) : 0);
        const size_t ks[3] = {1, 10, 50};
        for (int ki = 0; ki < 3; ki++) {
            int64_t out[50], oout[50];
            float sc[50], osc[50];
            size_t found = 0;
            CHECK_OK(vindex_search_subset(v, q, d, ks[ki], subset, ns, out, sc, &found, NULL, err), err);
            size_t ofound = oracle(&m, q, ks[ki], NULL, NULL, oout, osc);
            CHECK_INT(found, ofound);
            for (size_t i = 0; i < found; i++)
                CHECK_MSG(out[i] == oout[i] && sc[i] == osc[i], "q %zu k %zu rank %zu: %lld vs %lld", qi,
                          ks[ki], i, (long long)out[i], (long long)oout[i]);
        }
    }
    model_free(&m);
    free(subset);
    vindex_close(v);
    remove_dir(dir);
    free(x);
    free(ids);
}

TEST(int8_scan_options_are_checked)
{
    char err[QR_ERR_LEN];
    char *dir = make_dir();
    vindex_opts o = test_opts("ivf_sq8");
    o.scan = "int4";
    vindex *v = NULL;
    bool stale;
    CHECK_INT(vindex_open(dir, 8, &o, 0, &v, &stale, err), QR_EINVAL);
    CHECK(v == NULL && strstr(err, "scan") && strstr(err, "int4"));
    /* a small rerank is raised to 2k: the scan still finds k */
    o = test_opts("ivf_flat");
    o.rerank = 1;
    o.nlist = 8;
    o.nprobe = 8;
    const int d = 8;
    const size_t n = 400;
    float *x = random_vectors(n + 1, d, 0, 1.0, 77);
    int64_t *ids = sequential_ids(n, 1, 1);
    model m = {.dim = d};
    for (size_t i = 0; i < n; i++)
        model_add(&m, ids[i], x + i * (size_t)d);
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
    CHECK(matches_oracle(v, &m, x + n * (size_t)d, 1, 5, NULL, NULL));
    /* a zero query is refused, not scanned */
    float zero[8] = {0};
    int64_t out[5];
    float sc[5];
    size_t found = 9;
    CHECK_INT(vindex_search(v, zero, d, 5, NULL, NULL, out, sc, &found, NULL, err), QR_EINVAL);
    CHECK_INT(found, 0);
    int64_t all[400];
    memcpy(all, ids, sizeof(all));
    CHECK_INT(vindex_search_permitted(v, zero, d, 5, all, n, out, sc, &found, NULL, NULL, err), QR_EINVAL);
    vindex_close(v);
    remove_dir(dir);
    model_free(&m);
    free(x);
    free(ids);
}

TEST(persistence_round_trip)
{
    char err[QR_ERR_LEN];
    const int d = 32;
    const size_t n = 3000, nq = 10, k = 8;
    float *x = random_vectors(n, d, 12, 0.4, 21);
    float *queries = random_vectors(nq, d, 12, 0.4, 22);
    int64_t *ids = sequential_ids(n, 1, 1);
    const char *types[] = {"flat", "ivf_flat", "ivf_sq8", "ivf_pq", "hnsw"};
    for (size_t t = 0; t < 5; t++) {
        char *dir = make_dir();
        vindex_opts o = test_opts(types[t]);
        vindex *v = NULL;
        bool stale = true;
        CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
        CHECK(!stale);
        CHECK_OK(build_from(v, ids, x, n, d, 42, err), err);
        int64_t before[10 * 8], after[10 * 8];
        float sb[10 * 8], sa[10 * 8];
        size_t found;
        for (size_t qi = 0; qi < nq; qi++) {
            CHECK_OK(vindex_search(v, queries + qi * d, d, k, NULL, NULL, before + qi * k, sb + qi * k,
                                   &found, NULL, err),
                     err);
            CHECK_INT(found, k);
        }
        vindex_info i1, i2;
        vindex_get_info(v, &i1);
        vindex_close(v);

        v = NULL;
        stale = true;
        CHECK_OK(vindex_open(dir, d, &o, 42, &v, &stale, err), err);
        CHECK(!stale);
        vindex_get_info(v, &i2);
        CHECK_INT(i2.generation, i1.generation);
        CHECK_STR(i2.type, i1.type);
        CHECK_INT(i2.count, n);
        CHECK_INT(i2.nlist, i1.nlist);
        CHECK_INT(i2.nprobe, i1.nprobe);
        CHECK_INT(i2.built_counter, 42);
        CHECK_INT(i2.store_counter, 42);
        for (size_t qi = 0; qi < nq; qi++) {
            CHECK_OK(vindex_search(v, queries + qi * d, d, k, NULL, NULL, after + qi * k, sa + qi * k, &found,
                                   NULL, err),
                     err);
            CHECK_INT(found, k);
        }
        CHECK(memcmp(before, after, sizeof(before)) == 0);
        CHECK(memcmp(sb, sa, sizeof(sb)) == 0);
        /* a second build replaces the generation and removes the first one's files */
        CHECK_OK(build_from(v, ids, x, n / 2, d, 43, err), err);
        char names[512], want[512];
        list_dir(dir, names, sizeof(names));
        snprintf(want, sizeof(want), "LOCK MANIFEST gen-%llu.faiss gen-%llu.vec",
                 (unsigned long long)i1.generation + 1, (unsigned long long)i1.generation + 1);
        CHECK_STR(names, want);
        vindex_close(v);
        remove_dir(dir);
    }
    free(x);
    free(queries);
    free(ids);
}

/* ---- crash during publish ---------------------------------------------------------------------- */

static void kill_self(const char *stage, void *arg)
{
    if (strcmp(stage, (const char *)arg) == 0)
        kill(getpid(), SIGKILL);
}

#define CRASH_D 16
#define CRASH_N 1500

/* The child's part (a fresh process started by exec, so that FAISS's OpenMP starts clean):
 * build generation 2 from other data and die at the named stage. */
static void crash_child(const char *dir, const char *stage)
{
    char err[QR_ERR_LEN];
    vindex_opts o = test_opts("ivf_flat");
    vindex *v = NULL;
    bool stale;
    if (vindex_open(dir, CRASH_D, &o, 1, &v, &stale, err)) {
        fprintf(stderr, "child: %s\n", err);
        _exit(3);
    }
    float *x = random_vectors(CRASH_N, CRASH_D, 8, 0.3, 32);
    int64_t *ids = sequential_ids(CRASH_N, 50000, 1);
    vindex_test_set_hook(kill_self, (void *)stage);
    build_from(v, ids, x, CRASH_N, CRASH_D, 2, err);
    _exit(4); /* the hook should have killed us */
}

TEST(crash_during_publish)
{
    const char *child_dir = getenv("QUARRY_VINDEX_CRASH_DIR");
    if (child_dir)
        crash_child(child_dir, getenv("QUARRY_VINDEX_CRASH_STAGE"));

    char err[QR_ERR_LEN];
    const int d = CRASH_D;
    float *x = random_vectors(CRASH_N, d, 8, 0.3, 31);
    int64_t *ids = sequential_ids(CRASH_N, 1, 1);
    float *q = random_vectors(1, d, 8, 0.3, 33);
    const char *stages[] = {"files_written", "before_commit", "manifest_written", "published"};
    for (size_t si = 0; si < 4; si++) {
        char *dir = make_dir();
        vindex_opts o = test_opts("flat");
        vindex *v = NULL;
        bool stale;
        CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
        CHECK_OK(build_from(v, ids, x, CRASH_N, d, 1, err), err);
        int64_t before[5], after[5];
        float sb[5], sa[5];
        size_t found;
        CHECK_OK(vindex_search(v, q, d, 5, NULL, NULL, before, sb, &found, NULL, err), err);
        vindex_close(v);

        pid_t pid = fork();
        if (pid == 0) {
            setenv("QUARRY_VINDEX_CRASH_DIR", dir, 1);
            setenv("QUARRY_VINDEX_CRASH_STAGE", stages[si], 1);
            execl("/proc/self/exe", "test_vindex", "crash_during_publish", (char *)NULL);
            _exit(5);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "stage %s: child status %d", stages[si],
                  status);
        char names[512];
        list_dir(dir, names, sizeof(names));
        bool committed = strcmp(stages[si], "published") == 0;
        /* what the crash left: the new generation's files, maybe a manifest in flight */
        CHECK_MSG(strstr(names, "gen-2.faiss") && strstr(names, "gen-2.vec"), "stage %s left: %s", stages[si],
                  names);
        if (strcmp(stages[si], "manifest_written") == 0)
            CHECK(strstr(names, "MANIFEST.tmp") != NULL);
        /* an interrupted manifest write of another attempt, too */
        char path[512];
        snprintf(path, sizeof(path), "%s/MANIFEST.tmp", dir);
        if (!strstr(names, "MANIFEST.tmp")) {
            FILE *f = fopen(path, "w");
            fputs("quarry-vindex 1\ngenera", f);
            fclose(f);
        }

        CHECK_OK(vindex_open(dir, d, &o, committed ? 2 : 1, &v, &stale, err), err);
        CHECK(!stale);
        vindex_info info;
        vindex_get_info(v, &info);
        CHECK_INT(info.generation, committed ? 2 : 1);
        CHECK_STR(info.type, committed ? "ivf_flat" : "flat");
        CHECK_OK(vindex_search(v, q, d, 5, NULL, NULL, after, sa, &found, NULL, err), err);
        CHECK_INT(found, 5);
        if (!committed) {
            CHECK(memcmp(before, after, sizeof(before)) == 0);
        } else {
            for (int i = 0; i < 5; i++)
                CHECK(after[i] >= 50000);
        }
        list_dir(dir, names, sizeof(names));
        CHECK_STR(names,
                  committed ? "LOCK MANIFEST gen-2.faiss gen-2.vec" : "LOCK MANIFEST gen-1.faiss gen-1.vec");
        /* and the next build takes a fresh generation number */
        CHECK_OK(build_from(v, ids, x, 100, d, 3, err), err);
        vindex_get_info(v, &info);
        CHECK_INT(info.generation, 3);
        vindex_close(v);
        remove_dir(dir);
    }
    free(x);
    free(ids);
    free(q);
}

/* ---- delta, tombstones, rebuilds ---------------------------------------------------------------- */

TEST(small_index_rebuilds_before_delta_max)
{
    /* a quarter of the generation, at least 1,000, never above delta_max */
    CHECK_INT(vindex_delta_limit(1000000, 20000), 20000);
    CHECK_INT(vindex_delta_limit(40000, 20000), 10000);
    CHECK_INT(vindex_delta_limit(200, 20000), 1000);
    CHECK_INT(vindex_delta_limit(0, 20000), 1000);
    CHECK_INT(vindex_delta_limit(200, 50), 50);

    char err[QR_ERR_LEN];
    const int d = 8;
    const size_t n = 200, nd = 1001;
    char *dir = make_dir();
    float *x = random_vectors(n + nd, d, 0, 1.0, 51);
    int64_t *ids = sequential_ids(n + nd, 1, 1);
    vindex_opts o = test_opts("flat");
    o.delta_max = 20000;
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 1, err), err);
    /* 1,000 delta rows on a 200-row generation: at the limit, not past it */
    CHECK_OK(vindex_add(v, ids + n, x + n * (size_t)d, nd - 1, d, 2, err), err);
    CHECK(!vindex_needs_rebuild(v));
    /* one more: a rebuild is due, far below delta_max */
    CHECK_OK(vindex_add(v, ids + n + nd - 1, x + (n + nd - 1) * (size_t)d, 1, d, 3, err), err);
    CHECK(vindex_needs_rebuild(v));
    vindex_close(v);
    free(x);
    free(ids);
    remove_dir(dir);
}

TEST(delta_and_tombstones)
{
    char err[QR_ERR_LEN];
    const int d = 16;
    const size_t n = 2000, nd = 400, nq = 20;
    char *dir = make_dir();
    float *x = random_vectors(n + nd, d, 0, 1.0, 41);
    float *queries = random_vectors(nq, d, 0, 1.0, 42);
    int64_t *ids = sequential_ids(n + nd, 10, 10);
    model m = {.dim = d};
    vindex_opts o = test_opts("flat");
    o.delta_max = 500;
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 100, err), err);
    for (size_t i = 0; i < n; i++)
        model_add(&m, ids[i], x + i * (size_t)d);
    CHECK(!vindex_needs_rebuild(v));

    /* the delta, in several adds, each a store change */
    for (size_t i = 0; i < nd; i += 100) {
        CHECK_OK(vindex_add(v, ids + n + i, x + (n + i) * (size_t)d, 100, d, 101 + (int64_t)i / 100, err),
                 err);
        for (size_t j = i; j < i + 100; j++)
            model_add(&m, ids[n + j], x + (n + j) * (size_t)d);
    }
    CHECK(matches_oracle(v, &m, queries, nq, 10, NULL, NULL));
    /* each query's best chunks, removed: from the main index and from the delta */
    int64_t top[5];
    float sc[5];
    size_t found;
    int64_t counter = 110;
    for (size_t qi = 0; qi < 5; qi++) {
        CHECK_OK(vindex_search(v, queries + qi * d, d, 5, NULL, NULL, top, sc, &found, NULL, err), err);
        CHECK_OK(vindex_remove(v, top, 3, counter++, err), err);
        for (int i = 0; i < 3; i++)
            model_kill(&m, top[i]);
    }
    int64_t some_delta[3] = {ids[n + 1], ids[n + 2], 999999999 /* unknown: accepted */};
    CHECK_OK(vindex_remove(v, some_delta, 3, counter++, err), err);
    CHECK_OK(vindex_remove(v, some_delta, 2, counter++, err), err); /* twice: fine */
    model_kill(&m, some_delta[0]);
    model_kill(&m, some_delta[1]);
    vindex_info info;
    vindex_get_info(v, &info);
    CHECK_INT(info.delta, nd);
    CHECK(info.tombstones >= 3 && info.tombstones <= 18);
    CHECK_INT(info.store_counter, counter - 1);
    CHECK_INT(info.built_counter, 100);
    CHECK(!vindex_needs_rebuild(v));
    CHECK(matches_oracle(v, &m, queries, nq, 10, NULL, NULL));
    unsigned pct = 25;
    CHECK(matches_oracle(v, &m, queries, nq, 10, permit_hash, &pct));
    /* removed ids are never reused */
    CHECK_INT(vindex_add(v, some_delta, x, 1, d, counter, err), QR_EEXIST);
    CHECK_INT(vindex_add(v, top, x, 1, d, counter, err), QR_EEXIST);

    /* past delta_max the index asks for a rebuild */
    float *more = random_vectors(100, d, 0, 1.0, 43);
    int64_t *more_ids = sequential_ids(100, 500000, 1);
    CHECK_OK(vindex_add(v, more_ids, more, 100, d, counter, err), err);
    for (size_t i = 0; i < 100; i++)
        model_add(&m, more_ids[i], more + i * (size_t)d);
    CHECK(vindex_needs_rebuild(v));
    CHECK(matches_oracle(v, &m, queries, nq, 10, NULL, NULL));

    /* a rebuild from the store's state at `counter` folds everything in */
    size_t alive = 0;
    int64_t *aids = malloc(m.n * sizeof(int64_t));
    float *avec = malloc(m.n * (size_t)d * sizeof(float));
    for (size_t i = 0; i < m.n; i++) {
        if (!m.alive[i])
            continue;
        aids[alive] = m.ids[i];
        memcpy(avec + alive * (size_t)d, m.rows + i * (size_t)d, (size_t)d * sizeof(float));
        alive++;
    }
    CHECK_OK(build_from(v, aids, avec, alive, d, counter, err), err);
    vindex_get_info(v, &info);
    CHECK_INT(info.delta, 0);
    CHECK_INT(info.tombstones, 0);
    CHECK_INT(info.count, alive);
    CHECK(!vindex_needs_rebuild(v));
    CHECK(matches_oracle(v, &m, queries, nq, 10, NULL, NULL));
    CHECK(matches_oracle(v, &m, queries, nq, 10, permit_hash, &pct));

    vindex_close(v);
    model_free(&m);
    free(aids);
    free(avec);
    free(more);
    free(more_ids);
    free(x);
    free(queries);
    free(ids);
    remove_dir(dir);
}

/* After a restart the index is brought up to date from the store's change log, which reports
 * every deletion after a counter first and then every addition: counters arrive out of order. */
TEST(catch_up_in_change_log_order)
{
    char err[QR_ERR_LEN];
    const int d = 16;
    const size_t n = 1500, nq = 10;
    char *dir = make_dir();
    float *x = random_vectors(n + 40, d, 0, 1.0, 111);
    float *queries = random_vectors(nq, d, 0, 1.0, 112);
    int64_t *ids = sequential_ids(n + 40, 1, 1);
    vindex_opts o = test_opts("flat");
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 10, err), err);
    vindex_close(v);
    /* the store moved on to change 14 while the process was down */
    CHECK_OK(vindex_open(dir, d, &o, 14, &v, &stale, err), err);
    CHECK(stale);
    vindex_info info;
    vindex_get_info(v, &info);
    CHECK_INT(info.store_counter, 10);
    model m = {.dim = d};
    for (size_t i = 0; i < n; i++)
        model_add(&m, ids[i], x + i * (size_t)d);
    /* deletions (changes 12 and 14; one of a chunk added at 13 and gone again), then additions
     * (changes 11 and 13) */
    int64_t del12[3] = {ids[0], ids[1], ids[2]}, del14[2] = {ids[3], ids[n + 39]};
    CHECK_OK(vindex_remove(v, del12, 3, 12, err), err);
    CHECK_OK(vindex_remove(v, del14, 2, 14, err), err);
    CHECK_OK(vindex_add(v, ids + n, x + n * (size_t)d, 20, d, 11, err), err);
    CHECK_OK(vindex_add(v, ids + n + 20, x + (n + 20) * (size_t)d, 19, d, 13, err), err);
    for (size_t i = n; i < n + 39; i++)
        model_add(&m, ids[i], x + i * (size_t)d);
    for (int i = 0; i < 3; i++)
        model_kill(&m, del12[i]);
    model_kill(&m, del14[0]);
    vindex_get_info(v, &info);
    CHECK_INT(info.store_counter, 14);
    CHECK_INT(info.delta, 39);
    CHECK(matches_oracle(v, &m, queries, nq, 10, NULL, NULL));
    unsigned pct = 30;
    CHECK(matches_oracle(v, &m, queries, nq, 10, permit_hash, &pct));
    vindex_close(v);
    model_free(&m);
    free(x);
    free(queries);
    free(ids);
    remove_dir(dir);
}

/* Changes that arrive while a build runs: the hook adds and removes between the build's store
 * snapshot and its commit. */
typedef struct {
    vindex *v;
    const int64_t *add_ids;
    const float *add_vecs;
    int dim;
    int64_t remove_id;
    qr_status st;
} during_build;

static void change_during_build(const char *stage, void *arg)
{
    during_build *c = arg;
    if (strcmp(stage, "before_commit") != 0)
        return;
    char err[QR_ERR_LEN];
    c->st = vindex_add(c->v, c->add_ids, c->add_vecs, 2, c->dim, 13, err);
    if (!c->st)
        c->st = vindex_remove(c->v, &c->remove_id, 1, 14, err);
}

TEST(rebuild_carries_newer_changes_over)
{
    char err[QR_ERR_LEN];
    const int d = 16;
    const size_t n = 1000;
    char *dir = make_dir();
    float *x = random_vectors(n + 10, d, 0, 1.0, 51);
    int64_t *ids = sequential_ids(n + 10, 1, 1);
    vindex_opts o = test_opts("auto");
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 10, err), err);
    /* changes 11 and 12 reach the delta; the store snapshot at 12 has them too */
    CHECK_OK(vindex_add(v, ids + n, x + n * (size_t)d, 1, d, 11, err), err);
    CHECK_OK(vindex_remove(v, &ids[0], 1, 12, err), err);
    during_build c = {v, ids + n + 1, x + (n + 1) * (size_t)d, d, ids[n], QR_OK};
    vindex_test_set_hook(change_during_build, &c);
    /* the store at 12: ids 2..n+1 */
    qr_status st = build_from(v, ids + 1, x + d, n, d, 12, err);
    vindex_test_set_hook(NULL, NULL);
    CHECK_OK(st, err);
    CHECK_OK(c.st, "change during build failed");
    vindex_info info;
    vindex_get_info(v, &info);
    CHECK_INT(info.built_counter, 12);
    CHECK_INT(info.store_counter, 14);
    CHECK_INT(info.count, n);
    CHECK_INT(info.delta, 2);      /* ids n+2, n+3 (change 13) */
    CHECK_INT(info.tombstones, 1); /* id n+1 (change 14), now in the main index */
    int64_t out[3];
    float sc[3];
    size_t found;
    for (size_t i = 0; i < 4; i++) {
        const int64_t id = ids[i == 0 ? 0 : n + i - 1];
        CHECK_OK(vindex_search(v, x + (size_t)(id - 1) * d, d, 1, NULL, NULL, out, sc, &found, NULL, err),
                 err);
        CHECK_INT(found, 1);
        bool gone = id == ids[0] || id == ids[n];
        CHECK_MSG(gone ? out[0] != id : out[0] == id, "id %lld: got %lld", (long long)id, (long long)out[0]);
    }
    vindex_close(v);
    free(x);
    free(ids);
    remove_dir(dir);
}

/* ---- concurrency ------------------------------------------------------------------------------ */

#define CONC_D       16
#define CONC_N       1500
#define CONC_Q       12
#define CONC_K       5
#define CONC_READERS 6
#define CONC_GENS    6

typedef struct {
    vindex *v;
    const float *queries;
    int64_t expect[2][CONC_Q][CONC_K]; /* per data set */
    volatile int stop;
    int failures, seen[2];
    long searches;
    pthread_mutex_t lock;
} conc;

static void *reader(void *arg)
{
    conc *c = arg;
    char err[QR_ERR_LEN];
    unsigned pct = 50;
    int failures = 0, seen[2] = {0, 0};
    long searches = 0;
    while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
        for (int qi = 0; qi < CONC_Q; qi++) {
            int64_t out[CONC_K];
            float sc[CONC_K];
            size_t found;
            if (vindex_search(c->v, c->queries + qi * CONC_D, CONC_D, CONC_K, NULL, NULL, out, sc, &found,
                              NULL, err)) {
                if (failures++ < 3)
                    fprintf(stderr, "search failed: %s\n", err);
                continue;
            }
            int which = -1;
            for (int s = 0; s < 2; s++)
                if (found == CONC_K && memcmp(out, c->expect[s][qi], sizeof(out)) == 0)
                    which = s;
            if (which < 0 && failures++ < 3)
                fprintf(stderr, "query %d: found %zu, %lld %lld %lld %lld %lld\n", qi, found,
                        (long long)out[0], (long long)out[1], (long long)out[2], (long long)out[3],
                        (long long)out[4]);
            else
                seen[which]++;
            /* the predicate path and the subset path run concurrently too */
            if (vindex_search(c->v, c->queries + qi * CONC_D, CONC_D, CONC_K, permit_hash, &pct, out, sc,
                              &found, NULL, err))
                failures++;
            int64_t subset[4] = {1, 2, 3, 4};
            if (vindex_search_subset(c->v, c->queries + qi * CONC_D, CONC_D, 2, subset, 4, out, sc, &found,
                                     NULL, err))
                failures++;
            searches += 3;
        }
    }
    pthread_mutex_lock(&c->lock);
    c->failures += failures;
    c->seen[0] += seen[0];
    c->seen[1] += seen[1];
    c->searches += searches;
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

TEST(concurrent_readers_during_publish)
{
    char err[QR_ERR_LEN];
    const int d = CONC_D;
    char *dir = make_dir();
    float *xs[2] = {random_vectors(CONC_N, d, 6, 0.4, 61), random_vectors(CONC_N, d, 6, 0.4, 62)};
    int64_t *set_ids[2] = {sequential_ids(CONC_N, 1, 1), sequential_ids(CONC_N, 100000, 1)};
    float *queries = random_vectors(CONC_Q, d, 6, 0.4, 63);
    /* added rows are drawn until they score below every query's k-th result in both data sets,
     * so the expected answers stay valid whatever adds a search sees */
    float far[CONC_D], floor_score = 2;
    uint64_t far_seed = 64;
    conc *c = calloc(1, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    c->queries = queries;
    for (int s = 0; s < 2; s++) {
        model m = {.dim = d};
        for (size_t i = 0; i < CONC_N; i++)
            model_add(&m, set_ids[s][i], xs[s] + i * (size_t)d);
        for (int qi = 0; qi < CONC_Q; qi++) {
            float sc[CONC_K];
            oracle(&m, queries + qi * d, CONC_K, NULL, NULL, c->expect[s][qi], sc);
            if (sc[CONC_K - 1] < floor_score)
                floor_score = sc[CONC_K - 1];
        }
        model_free(&m);
    }
    vindex_opts o = test_opts("flat");
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, set_ids[0], xs[0], CONC_N, d, 1, err), err);
    c->v = v;
    pthread_t threads[CONC_READERS];
    for (int i = 0; i < CONC_READERS; i++)
        pthread_create(&threads[i], NULL, reader, c);
    int64_t counter = 2;
    int adds = 0;
    for (int g = 1; g <= CONC_GENS; g++) {
        /* adds race with the searches and with the publication (they are carried over) */
        for (int a = 0; a < 5; a++, adds++) {
            for (bool ok = false; !ok;) {
                float fn[CONC_D], qn[CONC_D];
                for (int j = 0; j < d; j++)
                    far[j] = (float)rng_gauss(&far_seed);
                normalize(far, fn, d);
                ok = true;
                for (int qi = 0; qi < CONC_Q && ok; qi++) {
                    normalize(queries + qi * d, qn, d);
                    ok = score_of(fn, qn, d) < floor_score - 0.01f;
                }
            }
            int64_t id = 900000 + adds;
            CHECK_OK(vindex_add(v, &id, far, 1, d, counter++, err), err);
        }
        CHECK_OK(build_from(v, set_ids[g % 2], xs[g % 2], CONC_N, d, 1, err), err);
    }
    __atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < CONC_READERS; i++)
        pthread_join(threads[i], NULL);
    CHECK_MSG(c->failures == 0, "%d of %ld searches failed or saw a torn snapshot", c->failures, c->searches);
    CHECK(c->seen[0] > 0 && c->seen[1] > 0);
    vindex_info info;
    vindex_get_info(v, &info);
    CHECK_INT(info.generation, CONC_GENS + 1);
    CHECK_INT(info.delta, adds); /* built at counter 1: every add is newer and carried over */
    char names[512], want[512];
    list_dir(dir, names, sizeof(names));
    snprintf(want, sizeof(want), "LOCK MANIFEST gen-%d.faiss gen-%d.vec", CONC_GENS + 1, CONC_GENS + 1);
    CHECK_STR(names, want);
    vindex_close(v);
    pthread_mutex_destroy(&c->lock);
    free(c);
    for (int s = 0; s < 2; s++) {
        free(xs[s]);
        free(set_ids[s]);
    }
    free(queries);
    remove_dir(dir);
}

/* ---- mismatch and damage ---------------------------------------------------------------------- */

TEST(mismatch_and_damage_are_detected)
{
    char err[QR_ERR_LEN];
    const int d = 16;
    const size_t n = 800;
    char *dir = make_dir();
    float *x = random_vectors(n, d, 0, 1.0, 71);
    int64_t *ids = sequential_ids(n, 1, 1);
    vindex_opts on = test_opts("flat"), off = test_opts("flat");
    off.rebuild_on_mismatch = false;
    vindex *v = NULL;
    bool stale = false;
    char names[512], names2[512];
    size_t len2;

    /* nothing built while the store has changes */
    CHECK_INT(vindex_open(dir, d, &off, 3, &v, &stale, err), QR_EINVAL);
    CHECK(v == NULL && strstr(err, "not been built"));
    CHECK_OK(vindex_open(dir, d, &on, 3, &v, &stale, err), err);
    CHECK(stale);
    CHECK_OK(build_from(v, ids, x, n, d, 7, err), err);
    vindex_close(v);

    /* store counter */
    CHECK_INT(vindex_open(dir, d, &off, 8, &v, &stale, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "stale") && strstr(err, "7") && strstr(err, "8"), "%s", err);
    CHECK_OK(vindex_open(dir, d, &on, 8, &v, &stale, err), err);
    CHECK(stale);
    vindex_info info;
    vindex_get_info(v, &info);
    CHECK_INT(info.count, n); /* still served while it catches up */
    CHECK_INT(info.store_counter, 7);
    vindex_close(v);

    /* dimension */
    CHECK_INT(vindex_open(dir, d * 2, &off, 7, &v, &stale, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "16") && strstr(err, "32"), "%s", err);
    list_dir(dir, names, sizeof(names));
    CHECK_STR(names, "LOCK MANIFEST gen-1.faiss gen-1.vec");

    /* a corrupted manifest, index file or vectors file; a missing file */
    struct {
        const char *file;
        long offset; /* negative: from the end; 0: delete the file */
        const char *msg;
    } damage[] = {
        {"MANIFEST", 20, "corrupted"},     {"MANIFEST", -20, "corrupted"},   {"MANIFEST", -1, "corrupted"},
        {"gen-1.faiss", 200, "corrupted"}, {"gen-1.vec", -100, "corrupted"}, {"gen-1.vec", 0, "missing"},
        {"gen-1.faiss", 0, "missing"},
    };
    for (size_t i = 0; i < sizeof(damage) / sizeof(damage[0]); i++) {
        char victim[512];
        snprintf(victim, sizeof(victim), "%s/%s", dir, damage[i].file);
        char *orig = read_whole(victim, &len2);
        CHECK(orig != NULL);
        if (damage[i].offset)
            flip_byte(victim, damage[i].offset);
        else
            unlink(victim);
        list_dir(dir, names, sizeof(names));
        qr_status dst = vindex_open(dir, d, &off, 7, &v, &stale, err);
        CHECK_MSG(dst == QR_EIO, "damage %zu: status %d (%s)", i, dst, dst ? err : "opened");
        CHECK_MSG(strstr(err, damage[i].file) != NULL, "damage %zu: %s", i, err);
        list_dir(dir, names2, sizeof(names2));
        CHECK_STR(names2, names); /* nothing changed */
        /* with rebuilds allowed it opens empty and a build recovers */
        CHECK_OK(vindex_open(dir, d, &on, 7, &v, &stale, err), err);
        CHECK(stale);
        vindex_get_info(v, &info);
        CHECK_INT(info.count, 0);
        list_dir(dir, names2, sizeof(names2));
        CHECK_STR(names2, names); /* damaged files are kept until a build replaces them */
        vindex_close(v);
        /* restore for the next case */
        FILE *f = fopen(victim, "w");
        CHECK(f != NULL);
        CHECK(fwrite(orig, 1, len2, f) == len2);
        fclose(f);
        free(orig);
        CHECK_OK(vindex_open(dir, d, &off, 7, &v, &stale, err), err);
        vindex_close(v);
    }

    /* the dimension changed and rebuilds are on: served empty in the new dimension, then built */
    CHECK_OK(vindex_open(dir, d * 2, &on, 7, &v, &stale, err), err);
    CHECK(stale);
    vindex_get_info(v, &info);
    CHECK_INT(info.dim, d * 2);
    CHECK_INT(info.count, 0);
    float *x2 = random_vectors(100, d * 2, 0, 1.0, 72);
    CHECK_OK(build_from(v, ids, x2, 100, d * 2, 7, err), err);
    vindex_get_info(v, &info);
    CHECK_INT(info.generation, 2);
    vindex_close(v);
    CHECK_OK(vindex_open(dir, d * 2, &off, 7, &v, &stale, err), err);
    CHECK(!stale);
    list_dir(dir, names, sizeof(names));
    CHECK_STR(names, "LOCK MANIFEST gen-2.faiss gen-2.vec");
    vindex_close(v);
    free(x);
    free(x2);
    free(ids);
    remove_dir(dir);
}

/* ---- the centroid seam (GPU build path) -------------------------------------------------------- */

/* Mean over the rows of their best inner product with a centroid (the spherical k-means
 * objective), and optionally the normalised means of the rows each centroid wins. */
/* The spherical k-means objective (mean best inner product) of centroids c; means gets each
 * cluster's normalised mean (one more Lloyd step) and *gap the smallest difference between a
 * row's best and second-best score, both when not NULL. Scores are double sums. */
static double kmeans_objective(const float *x, size_t n, int d, const float *c, size_t k, float *means,
                               double *gap)
{
    double total = 0, min_gap = INFINITY;
    double *sum = calloc(k * (size_t)d, sizeof(double));
    for (size_t i = 0; i < n; i++) {
        size_t best = 0;
        double bs = -INFINITY, second = -INFINITY;
        for (size_t j = 0; j < k; j++) {
            double s = 0;
            for (int t = 0; t < d; t++)
                s += (double)x[i * d + t] * c[j * d + t];
            if (s > bs) {
                second = bs;
                bs = s;
                best = j;
            } else if (s > second) {
                second = s;
            }
        }
        total += bs;
        min_gap = bs - second < min_gap ? bs - second : min_gap;
        for (int t = 0; t < d; t++)
            sum[best * d + t] += x[i * d + t];
    }
    for (size_t j = 0; means && j < k; j++) {
        double norm = 0;
        for (int t = 0; t < d; t++)
            norm += sum[j * d + t] * sum[j * d + t];
        for (int t = 0; t < d; t++)
            means[j * d + t] = norm > 0 ? (float)(sum[j * d + t] / sqrt(norm)) : c[j * d + t];
    }
    free(sum);
    if (gap)
        *gap = min_gap;
    return total / (double)n;
}

TEST(kmeans_matches_faiss_quality)
{
    char err[QR_ERR_LEN];
    const int d = 16;
    const size_t n = 4000, k = 20;
    float *raw = random_vectors(n, d, 30, 0.35, 81);
    float *x = malloc(n * d * sizeof(float));
    for (size_t i = 0; i < n; i++)
        normalize(raw + i * d, x + i * d, d);
    float *c = malloc(k * d * sizeof(float)), *c2 = malloc(k * d * sizeof(float));
    float *means = malloc(k * d * sizeof(float)), *fc = malloc(k * d * sizeof(float));
    CHECK_INT(vindex_kmeans(x, n, d, 0, 5, 1, c, err), QR_EINVAL);
    CHECK_INT(vindex_kmeans(x, 3, d, 8, 5, 1, c, err), QR_EINVAL);
    float bad[32] = {NAN};
    CHECK_INT(vindex_kmeans(bad, 2, d, 1, 5, 1, c, err), QR_EINVAL);

    /* converged: one more Lloyd step (assign, normalised mean) leaves the centroids in place.
     * vindex_kmeans assigns through BLAS, whose rounding differs by CPU kernel; the check holds
     * on any of them only if no row is within rounding of two centroids, which the data ensures */
    CHECK_OK(vindex_kmeans(x, n, d, k, 100, 3, c, err), err);
    double gap = 0;
    double converged = kmeans_objective(x, n, d, c, k, means, &gap);
    CHECK_MSG(gap > 1e-5, "the test data has a near-tie at convergence (gap %g)", gap);
    for (size_t i = 0; i < k * d; i++)
        CHECK_MSG(fabsf(means[i] - c[i]) < 1e-4f, "centroid value %zu moved: %g -> %g", i, c[i], means[i]);
    for (size_t j = 0; j < k; j++) {
        double norm = 0;
        for (int t = 0; t < d; t++)
            norm += (double)c[j * d + t] * c[j * d + t];
        CHECK(fabs(norm - 1.0) < 1e-5);
    }
    /* iterations improve on the random initial centroids */
    CHECK_OK(vindex_kmeans(x, n, d, k, 1, 3, c2, err), err);
    CHECK(converged > kmeans_objective(x, n, d, c2, k, NULL, NULL));
    /* deterministic for a seed */
    CHECK_OK(vindex_kmeans(x, n, d, k, 100, 3, c2, err), err);
    CHECK(memcmp(c, c2, k * d * sizeof(float)) == 0);

    /* as good as FAISS's own k-means, taken from an IVF build (10 iterations, spherical) */
    char *dir = make_dir();
    vindex_opts o = test_opts("ivf_flat");
    o.nlist = k;
    vindex *v = NULL;
    bool stale;
    int64_t *ids = sequential_ids(n, 1, 1);
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, raw, n, d, 1, err), err);
    CHECK_OK(vindex_get_centroids(v, fc, k, err), err);
    double faiss = kmeans_objective(x, n, d, fc, k, NULL, NULL);
    CHECK_OK(vindex_kmeans(x, n, d, k, 10, 5, c2, err), err);
    double ours = kmeans_objective(x, n, d, c2, k, NULL, NULL);
    CHECK_MSG(ours >= 0.98 * faiss, "objective: ours %.4f, FAISS %.4f", ours, faiss);
    vindex_close(v);
    remove_dir(dir);
    free(ids);
    free(raw);
    free(x);
    free(c);
    free(c2);
    free(means);
    free(fc);
}

TEST(ivf_takes_external_centroids)
{
    char err[QR_ERR_LEN];
    const int d = 32;
    const size_t n = 5000, nlist = 40, nq = 30, k = 10;
    /* queries from the same clusters as the data, not indexed themselves */
    float *x = random_vectors(n + nq, d, 25, 0.35, 91);
    const float *queries = x + n * (size_t)d;
    int64_t *ids = sequential_ids(n, 7, 3);
    model m = {.dim = d};
    for (size_t i = 0; i < n; i++)
        model_add(&m, ids[i], x + i * (size_t)d);
    /* k-means on a sample of the normalised rows, as the GPU path will do */
    size_t ns = 2000;
    float *cent = malloc(nlist * d * sizeof(float));
    CHECK_OK(vindex_kmeans(m.rows, ns, d, nlist, 10, 7, cent, err), err);
    const char *types[] = {"ivf_flat", "ivf_sq8", "ivf_pq"};
    for (int t = 0; t < 3; t++) {
        char *dir = make_dir();
        vindex_opts o = test_opts(types[t]);
        o.nprobe = 8;
        vindex *v = NULL;
        bool stale;
        CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
        vindex_centroids vc = {cent, nlist, d};
        source src = {ids, x, n, 0, d, false};
        CHECK_OK(vindex_build(v, source_pull, &src, 1, &vc, err), err);
        vindex_info info;
        vindex_get_info(v, &info);
        CHECK_STR(info.type, types[t]);
        CHECK_INT(info.nlist, nlist);
        float *got = malloc(nlist * d * sizeof(float));
        CHECK_INT(vindex_get_centroids(v, got, nlist + 1, err), QR_EINVAL);
        CHECK_OK(vindex_get_centroids(v, got, nlist, err), err);
        for (size_t i = 0; i < nlist * d; i++)
            CHECK_MSG(fabsf(got[i] - cent[i]) < 1e-6f, "centroid value %zu: %g vs %g", i, got[i], cent[i]);
        free(got);
        size_t hits = 0;
        for (size_t qi = 0; qi < nq; qi++) {
            int64_t out[10], oout[10];
            float sc[10], osc[10];
            size_t found;
            CHECK_OK(vindex_search(v, queries + qi * d, d, k, NULL, NULL, out, sc, &found, NULL, err), err);
            oracle(&m, queries + qi * d, k, NULL, NULL, oout, osc);
            for (size_t i = 0; i < k; i++)
                for (size_t j = 0; j < k; j++)
                    hits += out[i] == oout[j];
        }
        double recall = (double)hits / (double)(nq * k);
        CHECK_MSG(recall >= 0.9, "%s with external centroids: recall@10 %.3f", types[t], recall);
        vindex_close(v);
        /* and the generation reloads with its lists */
        CHECK_OK(vindex_open(dir, d, &o, 1, &v, &stale, err), err);
        vindex_get_info(v, &info);
        CHECK_INT(info.nlist, nlist);
        vindex_close(v);
        remove_dir(dir);
    }
    model_free(&m);
    free(cent);
    free(x);
    free(ids);
}

/* ---- chunks without a usable vector ----------------------------------------------------------- */

TEST(unusable_vectors_are_skipped_and_counted)
{
    char err[QR_ERR_LEN];
    const int d = 8;
    const size_t n = 300, nq = 8;
    float zero[8] = {0}, nan_row[8] = {1, NAN, 0, 0, 0, 0, 0, 0},
          inf_row[8] = {0, 0, INFINITY, 0, 0, 0, 0, 0};
    float tiny[8] = {1e-30f, 0, 0, 0, 0, 0, 0, 0};
    CHECK(!vindex_vector_usable(zero, d) && !vindex_vector_usable(nan_row, d) &&
          !vindex_vector_usable(inf_row, d) && !vindex_vector_usable(NULL, d));
    CHECK(vindex_vector_usable(tiny, d) && !vindex_vector_usable(tiny, 0));

    /* a source with every fourth row unusable: the build leaves those out */
    float *x = random_vectors(n, d, 0, 1.0, 201);
    float *queries = random_vectors(nq, d, 0, 1.0, 202);
    int64_t *ids = sequential_ids(n, 10, 2);
    model m = {.dim = d};
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        float *row = x + i * (size_t)d;
        if (i % 4 == 1) {
            memcpy(row, i % 3 == 0 ? zero : i % 3 == 1 ? nan_row : inf_row, sizeof(zero));
            bad++;
        } else {
            model_add(&m, ids[i], row);
        }
    }
    const char *types[] = {"flat", "ivf_flat", "ivf_sq8", "hnsw"};
    for (size_t t = 0; t < 4; t++) {
        char *dir = make_dir();
        vindex_opts o = test_opts(types[t]);
        vindex *v = NULL;
        bool stale;
        CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
        CHECK_OK(build_from(v, ids, x, n, d, 5, err), err);
        vindex_info info;
        vindex_get_info(v, &info);
        CHECK_STR(info.type, types[t]);
        CHECK_INT(info.count, n - bad);
        CHECK_INT(info.skipped, bad);
        /* the exact paths equal the oracle of the usable rows; no path returns a skipped chunk */
        if (strcmp(types[t], "flat") == 0)
            CHECK(matches_oracle(v, &m, queries, nq, 10, NULL, NULL));
        for (size_t qi = 0; qi < nq; qi++) {
            int64_t out[50];
            float sc[50];
            size_t found = 0;
            CHECK_OK(
                vindex_search(v, queries + qi * (size_t)d, d, 50, NULL, NULL, out, sc, &found, NULL, err),
                err);
            CHECK_INT(found, 50);
            for (size_t i = 0; i < found; i++)
                CHECK_MSG((out[i] - 10) / 2 % 4 != 1, "%s returned skipped chunk %lld", types[t],
                          (long long)out[i]);
            CHECK_OK(
                vindex_search_subset(v, queries + qi * (size_t)d, d, 8, ids, 8, out, sc, &found, NULL, err),
                err);
            CHECK_INT(found, 6); /* ids[1] and ids[5] have no vector */
        }
        vindex_close(v);
        /* the count is part of the generation: it survives a reopen */
        char names[512];
        list_dir(dir, names, sizeof(names));
        CHECK_MSG(strstr(names, "gen-1.skip") != NULL, "%s", names);
        CHECK_OK(vindex_open(dir, d, &o, 5, &v, &stale, err), err);
        CHECK(!stale);
        vindex_get_info(v, &info);
        CHECK_INT(info.skipped, bad);
        vindex_close(v);
        remove_dir(dir);
    }

    /* catch-up: vindex_skip counts, refuses ids the index holds, and removals uncount */
    char *dir = make_dir();
    vindex_opts o = test_opts("flat");
    o.rebuild_on_mismatch = false;
    vindex *v = NULL;
    bool stale;
    CHECK_OK(vindex_open(dir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, 100, d, 5, err), err); /* ids 10..208, 25 of them skipped */
    int64_t s1[3] = {1001, 1003, 1005};
    CHECK_OK(vindex_skip(v, s1, 3, 6, err), err);
    vindex_info info;
    vindex_get_info(v, &info);
    CHECK_INT(info.skipped, 28);
    CHECK_INT(info.store_counter, 6);
    int64_t held[2] = {1007, 10}, dup[2] = {1009, 1009}, neg[1] = {-4};
    CHECK_INT(vindex_skip(v, held, 2, 7, err), QR_EEXIST); /* 10 is in the main index */
    CHECK_INT(vindex_skip(v, dup, 2, 7, err), QR_EEXIST);
    CHECK_INT(vindex_skip(v, neg, 1, 7, err), QR_EINVAL);
    CHECK_INT(vindex_skip(v, s1, 1, -1, err), QR_EINVAL);
    CHECK_INT(vindex_add(v, s1, x, 1, d, 7, err), QR_EEXIST); /* 1001 is known, without a vector */
    int64_t gone[3] = {1003, 1003, 12};                       /* 12 (ids[1]) was skipped by the build */
    CHECK_OK(vindex_remove(v, gone, 3, 8, err), err);
    CHECK_OK(vindex_remove(v, gone, 1, 9, err), err); /* removing twice counts once */
    vindex_get_info(v, &info);
    CHECK_INT(info.skipped, 26);
    /* a rebuild from a snapshot at 7 keeps the later changes: the removals at 8 and 9 */
    vindex_builder *b = NULL;
    CHECK_OK(vindex_build_begin(v, NULL, &b, err), err);
    int64_t s2[4] = {1001, 1003, 12, 20};
    CHECK_OK(vindex_build_add(b, ids + 2, x + 2 * (size_t)d, 2, d, err), err);
    CHECK_OK(vindex_build_skip(b, s2, 4, err), err);
    CHECK_OK(vindex_build_commit(b, 7, err), err);
    vindex_get_info(v, &info);
    CHECK_INT(info.count, 2);
    CHECK_INT(info.skipped, 2); /* 1001 and 20; 1003 and 12 were removed after 7 */
    /* an id both added and skipped is a duplicate */
    CHECK_OK(vindex_build_begin(v, NULL, &b, err), err);
    CHECK_OK(vindex_build_add(b, ids + 2, x + 2 * (size_t)d, 1, d, err), err);
    CHECK_OK(vindex_build_skip(b, ids + 2, 1, err), err);
    CHECK_INT(vindex_build_commit(b, 9, err), QR_EINVAL);
    CHECK_OK(vindex_build_begin(v, NULL, &b, err), err);
    CHECK_INT(vindex_build_skip(b, neg, 1, err), QR_EINVAL);
    vindex_build_abort(b);
    vindex_close(v);
    /* a damaged list of skipped chunks is a damaged generation */
    char path[512];
    snprintf(path, sizeof(path), "%s/gen-2.skip", dir);
    flip_byte(path, -1);
    CHECK_INT(vindex_open(dir, d, &o, 9, &v, &stale, err), QR_EIO);
    CHECK_MSG(strstr(err, "gen-2.skip") != NULL, "%s", err);
    unlink(path);
    CHECK_INT(vindex_open(dir, d, &o, 9, &v, &stale, err), QR_EIO);
    CHECK_MSG(strstr(err, "missing") != NULL, "%s", err);
    remove_dir(dir);
    model_free(&m);
    free(x);
    free(queries);
    free(ids);
}

/* A store with one vector per chunk as given; the text is one line per chunk. */
static qr_status store_doc(store *s, const char *doc_id, const float *vecs, size_t nchunks, int dim,
                           char *err)
{
    char text[1024] = "", hash[65];
    store_chunk chunks[16];
    size_t len = 0;
    for (size_t i = 0; i < nchunks && i < 16; i++) {
        chunks[i].start = len;
        len += (size_t)snprintf(text + len, sizeof(text) - len, "%s chunk %zu words\n", doc_id, i);
        chunks[i].end = len - 1;
        chunks[i].headings = NULL;
    }
    /* any 64 hex digits do: the documents differ by id */
    size_t h = 0;
    for (const char *c = doc_id; *c; c++)
        h = h * 131 + (unsigned char)*c;
    snprintf(hash, sizeof(hash), "%064zx", h);
    const char *acl[] = {"public"};
    store_document doc = {
        .doc_id = doc_id, .acl = acl, .nacl = 1, .content_hash = hash, .text = text, .text_len = len};
    store_put_result r;
    return store_put(s, &doc, chunks, nchunks, vecs, dim, &r, err);
}

TEST(sync_leaves_out_chunks_without_a_vector)
{
    /* One chunk whose stored vector is zero (a text the embedder has no word for) must never stop
     * the index from following the store: not on the first build, not on catch-up, not on a
     * forced rebuild, for the exact and the approximate index types. */
    char err[QR_ERR_LEN];
    const int d = 8;
    const char *types[] = {"flat", "ivf_flat", "hnsw"};
    for (size_t t = 0; t < 3; t++) {
        char *dir = make_dir();
        store *s = NULL;
        CHECK_OK(store_open(dir, &s, err), err);
        CHECK_OK(store_check_embedding(s, "test-model", d, err), err);
        float *x = random_vectors(16 * 8, d, 0, 1.0, 300 + t);
        float zero[8] = {0};
        memcpy(x + 3 * (size_t)d, zero, sizeof(zero)); /* doc-0's fourth chunk */
        for (int i = 0; i < 6; i++) {
            char id[16];
            snprintf(id, sizeof(id), "doc-%d", i);
            CHECK_OK(store_doc(s, id, x + (size_t)i * 16 * d, 16, d, err), err);
        }
        vindex_opts o = test_opts(types[t]);
        o.delta_max = 50;
        vindex *v = NULL;
        index_sync_report rep;
        CHECK_OK(index_sync_open(s, dir, &o, false, &v, &rep, err), err);
        CHECK(v && rep.rebuilt && rep.count == 95 && rep.skipped == 1);
        /* catch-up past a document whose only chunk has no vector, then a normal one */
        CHECK_OK(store_doc(s, "rt-z", zero, 1, d, err), err);
        float *q = x + 16 * 6 * (size_t)d;
        CHECK_OK(store_doc(s, "after", q, 1, d, err), err);
        CHECK_OK(index_sync(s, v, &o, false, &rep, err), err);
        CHECK(!rep.rebuilt && rep.added == 1 && rep.skipped == 1);
        vindex_info info;
        vindex_get_info(v, &info);
        CHECK_INT(info.skipped, 2);
        store_stats ss;
        CHECK_OK(store_get_stats(s, &ss, err), err);
        CHECK_INT(info.store_counter, ss.change_counter);
        int64_t out[3];
        float sc[3];
        size_t found;
        CHECK_OK(vindex_search(v, q, d, 3, NULL, NULL, out, sc, &found, NULL, err), err);
        CHECK(found == 3 && sc[0] > 0.999f);
        int64_t after_id = out[0];
        /* forced rebuild */
        CHECK_OK(index_sync(s, v, &o, true, &rep, err), err);
        CHECK(rep.rebuilt && rep.count == 96 && rep.skipped == 2);
        CHECK_OK(vindex_search(v, q, d, 3, NULL, NULL, out, sc, &found, NULL, err), err);
        CHECK(found == 3 && out[0] == after_id);
        /* deleting the poison document uncounts it */
        CHECK_OK(store_delete(s, "rt-z", err), err);
        CHECK_OK(index_sync(s, v, &o, false, &rep, err), err);
        vindex_get_info(v, &info);
        CHECK_INT(info.skipped, 1);
        vindex_close(v);
        /* a build with the GPU path asked for: off and auto build on the CPU past the zero row
         * (a device, where there is one, trains on the usable rows only) */
        CHECK_OK(index_build_open(s, dir, &o, INDEX_GPU_AUTO, &v, &rep, err), err);
        CHECK(rep.rebuilt && rep.count == 96 && rep.skipped == 1);
        vindex_close(v);
        store_close(s);
        free(x);
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        CHECK(system(cmd) == 0);
        free(dir);
    }
}

/* ---- rows mode: the main rows read from their owner (vindex_open_rows) ------------------------ */

/* A provider of rows by chunk id, as the store's vector file lays them out: row i at rows + i *
 * dim, vindex_normalize_row of the chunk's vector, for ids up to max. Rows of ids that hold no
 * chunk are filled with large finite values, so that a score read at the wrong row shows. */
typedef struct {
    int dim;
    size_t cap; /* rows allocated: ids 0 .. cap - 1 */
    float *rows;
    int64_t max; /* largest id stored */
    int64_t uid;
    int maps;      /* map calls */
    bool fail;     /* map fails */
    int64_t asked; /* max_id of the last map */
} rowstore;

static void rowstore_init(rowstore *r, int dim, size_t cap, int64_t uid, uint64_t seed)
{
    memset(r, 0, sizeof(*r));
    r->dim = dim;
    r->cap = cap;
    r->uid = uid;
    r->max = -1;
    r->rows = malloc(cap * (size_t)dim * sizeof(float));
    uint64_t s = seed;
    for (size_t i = 0; i < cap * (size_t)dim; i++)
        r->rows[i] = (float)(40.0 * rng_gauss(&s));
}

static void rowstore_put(rowstore *r, const int64_t *ids, const float *vecs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!vindex_normalize_row(vecs + i * (size_t)r->dim, r->rows + (size_t)ids[i] * (size_t)r->dim,
                                  r->dim))
            abort();
        if (ids[i] > r->max)
            r->max = ids[i];
    }
}

/* What the store does with a deleted chunk's row: frees it, and it reads as zeros. */
static void rowstore_zero(rowstore *r, const int64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        memset(r->rows + (size_t)ids[i] * (size_t)r->dim, 0, (size_t)r->dim * sizeof(float));
}

static qr_status rowstore_map(void *ctx, int64_t max_id, const float **base, char *err)
{
    rowstore *r = ctx;
    r->maps++;
    r->asked = max_id;
    if (r->fail)
        return qr_fail(err, QR_EIO, "row store is unavailable on purpose");
    if (max_id < 0 || max_id > r->max)
        return qr_fail(err, QR_EINVAL, "row store holds chunks up to %lld, not %lld", (long long)r->max,
                       (long long)max_id);
    *base = r->rows;
    return QR_OK;
}

static vindex_rows rowstore_rows(rowstore *r)
{
    vindex_rows rows = {.map = rowstore_map, .ctx = r, .uid = r->uid};
    return rows;
}

/* Compares two result lists exactly (ids and the bits of the scores); every score finite. */
static bool same_hits(const char *what, size_t qi, const int64_t *a, const float *as, size_t na,
                      const int64_t *b, const float *bs, size_t nb)
{
    if (na != nb) {
        harness_fail(__FILE__, __LINE__, "%s, query %zu: copy mode found %zu, rows mode %zu", what, qi, na,
                     nb);
        return false;
    }
    for (size_t i = 0; i < na; i++) {
        if (a[i] != b[i] || memcmp(&as[i], &bs[i], sizeof(float)) != 0 || !isfinite(bs[i])) {
            harness_fail(__FILE__, __LINE__,
                         "%s, query %zu rank %zu: copy mode %lld (%.9g), rows mode %lld (%.9g)", what, qi, i,
                         (long long)a[i], as[i], (long long)b[i], bs[i]);
            return false;
        }
    }
    return true;
}

/* Every search entry point, with and without filters, on the copy-mode index a and the rows-mode
 * index b: the same ids and scores. ids_all: every id that ever was in the index (ascending),
 * from which the permitted sets are drawn, with ids the index does not hold beside them.
 * *results counts the hits compared. */
static bool rows_same_answers(vindex *a, vindex *b, int d, const float *queries, size_t nq,
                              const int64_t *ids_all, size_t nall, size_t *results)
{
    enum { K_MAX = 50 };
    char err[QR_ERR_LEN];
    int64_t ia[K_MAX], ib[K_MAX];
    float sa[K_MAX], sb[K_MAX];
    size_t na = 0, nb = 0;
    unsigned pcts[3] = {30, 3, 1};
    /* permitted lists: a share of every id ever held, and an id next to some of them (not held) */
    int64_t *lists[3];
    size_t nlists[3];
    for (int p = 0; p < 3; p++) {
        lists[p] = malloc((2 * nall + 1) * sizeof(int64_t));
        nlists[p] = 0;
        for (size_t i = 0; i < nall; i++) {
            if (!permit_hash(&pcts[p], ids_all[i]))
                continue;
            lists[p][nlists[p]++] = ids_all[i];
            if (i % 5 == 0 && (i + 1 == nall || ids_all[i + 1] != ids_all[i] + 1))
                lists[p][nlists[p]++] = ids_all[i] + 1;
        }
    }
    /* the subset path also takes unsorted lists with duplicates */
    int64_t *shuffled = malloc((nlists[1] * 2 + 1) * sizeof(int64_t));
    size_t nshuf = 0;
    for (size_t i = nlists[1]; i-- > 0;) {
        shuffled[nshuf++] = lists[1][i];
        if (i % 4 == 0)
            shuffled[nshuf++] = lists[1][i];
    }
    bool ok = true;
    for (size_t qi = 0; qi < nq && ok; qi++) {
        const float *q = queries + qi * (size_t)d;
        size_t ks[3] = {1, 10, K_MAX};
        for (int ki = 0; ki < 3 && ok; ki++) {
            size_t k = ks[ki];
            ok = vindex_search(a, q, d, k, NULL, NULL, ia, sa, &na, NULL, err) == QR_OK &&
                 vindex_search(b, q, d, k, NULL, NULL, ib, sb, &nb, NULL, err) == QR_OK &&
                 same_hits("search", qi, ia, sa, na, ib, sb, nb);
            *results += nb;
        }
        for (int p = 0; p < 3 && ok; p++) {
            const size_t k = 10;
            ok = vindex_search(a, q, d, k, permit_hash, &pcts[p], ia, sa, &na, NULL, err) == QR_OK &&
                 vindex_search(b, q, d, k, permit_hash, &pcts[p], ib, sb, &nb, NULL, err) == QR_OK &&
                 same_hits("search with a predicate", qi, ia, sa, na, ib, sb, nb);
            *results += nb;
            ok = ok &&
                 vindex_search_subset(a, q, d, k, lists[p], nlists[p], ia, sa, &na, NULL, err) == QR_OK &&
                 vindex_search_subset(b, q, d, k, lists[p], nlists[p], ib, sb, &nb, NULL, err) == QR_OK &&
                 same_hits("subset", qi, ia, sa, na, ib, sb, nb);
            *results += nb;
            vindex_scan_report ra, rb;
            ok = ok &&
                 vindex_search_permitted(a, q, d, k, lists[p], nlists[p], ia, sa, &na, NULL, &ra, err) ==
                     QR_OK &&
                 vindex_search_permitted(b, q, d, k, lists[p], nlists[p], ib, sb, &nb, NULL, &rb, err) ==
                     QR_OK &&
                 same_hits("permitted", qi, ia, sa, na, ib, sb, nb);
            *results += nb;
            if (ok && ra.subset != rb.subset) {
                harness_fail(__FILE__, __LINE__, "permitted, query %zu: the modes took different paths", qi);
                ok = false;
            }
        }
        ok = ok && vindex_search_subset(a, q, d, 10, shuffled, nshuf, ia, sa, &na, NULL, err) == QR_OK &&
             vindex_search_subset(b, q, d, 10, shuffled, nshuf, ib, sb, &nb, NULL, err) == QR_OK &&
             same_hits("subset, unsorted", qi, ia, sa, na, ib, sb, nb);
        *results += nb;
    }
    if (!ok && !harness_failed())
        harness_fail(__FILE__, __LINE__, "a search failed: %s", err);
    for (int p = 0; p < 3; p++)
        free(lists[p]);
    free(shuffled);
    return ok;
}

/* The ids of a rows-mode test set: a run with small gaps, a long gap, a sparse stretch (every
 * ninth id), a dense run; n of them, ascending. */
static int64_t *rows_test_ids(size_t n, uint64_t seed)
{
    int64_t *ids = malloc(n * sizeof(int64_t));
    uint64_t s = seed;
    int64_t id = 3;
    for (size_t i = 0; i < n; i++) {
        if (i < n * 4 / 10)
            id += 1 + (rng_next(&s) % 10 == 0 ? (int64_t)(rng_next(&s) % 4) : 0);
        else if (i == n * 4 / 10)
            id += 2000;
        else if (i < n * 6 / 10)
            id += 9;
        else
            id += 1;
        ids[i] = id;
    }
    return ids;
}

static void merge_ids(int64_t *all, size_t *nall, const int64_t *ids, size_t n)
{
    memcpy(all + *nall, ids, n * sizeof(int64_t));
    *nall += n;
    qsort(all, *nall, sizeof(int64_t), vindex_cmp_ids);
}

TEST(rows_mode_answers_as_copy_mode)
{
    /* The same vectors in an index with its own copy of the rows and in one reading them from a
     * provider (whose rows of removed chunks are zeroed, as the store frees them): every search
     * entry point gives the same ids and scores, with a delta and tombstones, after a reopen and
     * after a rebuild, for the exact and the IVF types under either scan. */
    char err[QR_ERR_LEN];
    const int d = 32;
    const size_t n = 3000, nd = 150, nd2 = 100, nq = 10, nrm = 120;
    const size_t total = n + nd + nd2 + nq;
    float *x = random_vectors(total, d, 16, 0.5, 501);
    int64_t *ids = rows_test_ids(n, 502);
    int64_t next = ids[n - 1] + 1;
    int64_t *dids = sequential_ids(nd, next, 1), *dids2 = sequential_ids(nd2, next + (int64_t)nd + 5, 1);
    float *queries = malloc(nq * (size_t)d * sizeof(float));
    memcpy(queries, x + (n + nd + nd2) * (size_t)d, (nq - 3) * (size_t)d * sizeof(float));
    /* removed ids: spread over the main rows (the sparse stretch too) and the delta */
    int64_t removed[120 + 10], removed2[50];
    for (size_t i = 0; i < nrm; i++)
        removed[i] = ids[(i * 7919) % n];
    for (size_t i = 0; i < 10; i++)
        removed[nrm + i] = dids[i * 13];
    /* three queries are removed chunks' own vectors: their nearest rows are the zeroed ones */
    for (size_t i = 0; i < 3; i++) {
        size_t pos = (i * 7919) % n;
        memcpy(queries + (nq - 3 + i) * (size_t)d, x + pos * (size_t)d, (size_t)d * sizeof(float));
    }
    const char *types[] = {"flat", "ivf_flat", "ivf_sq8"};
    const char *scans[] = {"int8", "faiss"};
    for (size_t t = 0; t < 3; t++) {
        for (size_t sc = 0; sc < 2; sc++) {
            char *dir_a = make_dir(), *dir_b = make_dir();
            vindex_opts o = test_opts(types[t]);
            o.scan = scans[sc];
            rowstore r;
            rowstore_init(&r, d, (size_t)(next + (int64_t)(nd + nd2) + 10), 77, 503);
            rowstore_put(&r, ids, x, n);
            vindex_rows rows = rowstore_rows(&r);
            vindex *a = NULL, *b = NULL;
            bool stale = true;
            CHECK_OK(vindex_open(dir_a, d, &o, 0, &a, &stale, err), err);
            CHECK_OK(vindex_open_rows(dir_b, d, &o, &rows, 0, &b, &stale, err), err);
            CHECK(!stale);
            CHECK_OK(build_from(a, ids, x, n, d, 1, err), err);
            CHECK_OK(build_from(b, ids, x, n, d, 1, err), err);
            CHECK_MSG(r.maps == 1 && r.asked == ids[n - 1], "map called %d times, last for %lld", r.maps,
                      (long long)r.asked);
            vindex_info ia, ib;
            vindex_get_info(b, &ib);
            CHECK_STR(ib.type, types[t]);

            int64_t *all = malloc((n + nd + nd2) * sizeof(int64_t));
            size_t nall = 0, results = 0;
            merge_ids(all, &nall, ids, n);
            merge_ids(all, &nall, dids, nd);
            /* phase 1: the generation with a delta and tombstones; the removed rows zeroed */
            for (int side = 0; side < 2; side++) {
                vindex *v = side ? b : a;
                CHECK_OK(vindex_add(v, dids, x + n * (size_t)d, nd, d, 2, err), err);
                CHECK_OK(vindex_remove(v, removed, nrm + 10, 3, err), err);
            }
            rowstore_zero(&r, removed, nrm);
            CHECK(rows_same_answers(a, b, d, queries, nq, all, nall, &results));

            /* phase 2: reopened (the delta and tombstones replayed, as sync does from the log) */
            vindex_close(a);
            vindex_close(b);
            a = b = NULL;
            CHECK_OK(vindex_open(dir_a, d, &o, 1, &a, &stale, err), err);
            CHECK(!stale);
            CHECK_OK(vindex_open_rows(dir_b, d, &o, &rows, 1, &b, &stale, err), err);
            CHECK(!stale);
            CHECK_INT(r.maps, 2);
            for (int side = 0; side < 2; side++) {
                vindex *v = side ? b : a;
                CHECK_OK(vindex_add(v, dids, x + n * (size_t)d, nd, d, 2, err), err);
                CHECK_OK(vindex_remove(v, removed, nrm + 10, 3, err), err);
            }
            CHECK(rows_same_answers(a, b, d, queries, nq, all, nall, &results));

            /* phase 3: rebuilt from the live chunks (the store now holds the delta's rows), then a
             * new delta and tombstones */
            int64_t *live = malloc((n + nd) * sizeof(int64_t));
            float *lvec = malloc((n + nd) * (size_t)d * sizeof(float));
            size_t nlive = 0;
            for (size_t i = 0; i < n + nd; i++) {
                int64_t id = i < n ? ids[i] : dids[i - n];
                bool gone = false;
                for (size_t j = 0; j < nrm + 10 && !gone; j++)
                    gone = removed[j] == id;
                if (gone)
                    continue;
                live[nlive] = id;
                memcpy(lvec + nlive * (size_t)d, x + i * (size_t)d, (size_t)d * sizeof(float));
                nlive++;
            }
            rowstore_put(&r, dids, x + n * (size_t)d, nd);
            rowstore_zero(&r, removed, nrm + 10);
            CHECK_OK(build_from(a, live, lvec, nlive, d, 3, err), err);
            CHECK_OK(build_from(b, live, lvec, nlive, d, 3, err), err);
            CHECK_MSG(r.maps == 3 && r.asked == live[nlive - 1], "map called %d times, last for %lld", r.maps,
                      (long long)r.asked);
            vindex_get_info(a, &ia);
            vindex_get_info(b, &ib);
            CHECK_INT(ib.count, nlive);
            CHECK_INT(ib.delta + ib.tombstones, 0);
            CHECK_STR(ia.type, ib.type);
            merge_ids(all, &nall, dids2, nd2);
            for (size_t i = 0; i < 50; i++)
                removed2[i] = live[(i * 104729) % nlive];
            for (int side = 0; side < 2; side++) {
                vindex *v = side ? b : a;
                CHECK_OK(vindex_add(v, dids2, x + (n + nd) * (size_t)d, nd2, d, 4, err), err);
                CHECK_OK(vindex_remove(v, removed2, 50, 5, err), err);
            }
            rowstore_zero(&r, removed2, 50);
            CHECK(rows_same_answers(a, b, d, queries, nq, all, nall, &results));
            CHECK_MSG(results > nq * 20, "only %zu hits compared", results);

            free(live);
            free(lvec);
            free(all);
            vindex_close(a);
            vindex_close(b);
            free(r.rows);
            remove_dir(dir_a);
            remove_dir(dir_b);
        }
    }
    free(x);
    free(ids);
    free(dids);
    free(dids2);
    free(queries);
}

TEST(rows_mode_files_staleness_and_provider_failures)
{
    /* In rows mode gen-N.vec holds the ids only; MANIFEST records the mode and the owner, and a
     * backup copies and checks the generation like any other. Another owner or the other mode is
     * stale; a provider that cannot map fails the open (or leaves it stale) and the commit, with
     * its message. */
    char err[QR_ERR_LEN];
    const int d = 24;
    const size_t n = 2500;
    float *x = random_vectors(n + 1, d, 10, 0.5, 601);
    const float *q = x + n * (size_t)d;
    int64_t *ids = rows_test_ids(n, 602);
    rowstore r;
    rowstore_init(&r, d, (size_t)ids[n - 1] + 1, 1234, 603);
    rowstore_put(&r, ids, x, n);
    vindex_rows rows = rowstore_rows(&r);
    char *dir = make_dir(), *copy = make_dir();
    vindex_opts o = test_opts("ivf_sq8");
    vindex *v = NULL;
    bool stale = true;
    CHECK_OK(vindex_open_rows(dir, d, &o, &rows, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 9, err), err);
    int64_t top[5], top2[5];
    float sc[5], sc2[5];
    size_t found = 0, found2 = 0;
    CHECK_OK(vindex_search(v, q, d, 5, NULL, NULL, top, sc, &found, NULL, err), err);
    CHECK_INT(found, 5);

    /* the files: ids only, a fraction of the rows' bytes */
    char path[600], names[512];
    list_dir(dir, names, sizeof(names));
    CHECK_STR(names, "LOCK MANIFEST gen-1.faiss gen-1.vec");
    snprintf(path, sizeof(path), "%s/gen-1.vec", dir);
    struct stat sb;
    CHECK(stat(path, &sb) == 0);
    CHECK_MSG((size_t)sb.st_size == 64 + n * sizeof(int64_t), "gen-1.vec has %lld bytes",
              (long long)sb.st_size);
    CHECK((size_t)sb.st_size < n * (size_t)d * sizeof(float) / 2);
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    size_t len = 0;
    char *text = read_whole(path, &len);
    CHECK(text && strstr(text, "\nrows external 1234\n"));
    free(text);

    /* a backup copies the ids-only file and checks it against the manifest */
    index_gen_copy gc;
    CHECK_OK(vindex_backup_files(dir, copy, &gc, err), err);
    CHECK(gc.present && gc.generation == 1 && gc.counter == 9);
    CHECK_OK(vindex_check_files(copy, &gc, err), err);
    snprintf(path, sizeof(path), "%s/gen-1.vec", copy);
    flip_byte(path, 64 + 8 * 3);
    CHECK_INT(vindex_check_files(copy, &gc, err), QR_EIO);
    vindex_close(v);
    v = NULL;

    /* the copy's damaged ids are found when it is opened */
    vindex_opts strict = o;
    strict.rebuild_on_mismatch = false;
    CHECK_INT(vindex_open_rows(copy, d, &strict, &rows, 9, &v, &stale, err), QR_EIO);
    CHECK(strstr(err, "gen-1.vec"));

    /* reopened by the same owner: the same answers */
    CHECK_OK(vindex_open_rows(dir, d, &strict, &rows, 9, &v, &stale, err), err);
    CHECK(!stale);
    CHECK_OK(vindex_search(v, q, d, 5, NULL, NULL, top2, sc2, &found2, NULL, err), err);
    CHECK_INT(found2, 5);
    CHECK(memcmp(top, top2, sizeof(top)) == 0 && memcmp(sc, sc2, sizeof(sc)) == 0);
    vindex_close(v);
    v = NULL;

    /* another owner: stale, serving nothing; an error when strict */
    rowstore other = r;
    other.uid = 99;
    vindex_rows orows = rowstore_rows(&other);
    CHECK_INT(vindex_open_rows(dir, d, &strict, &orows, 9, &v, &stale, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "store 1234") && strstr(err, "99"), "%s", err);
    CHECK_OK(vindex_open_rows(dir, d, &o, &orows, 9, &v, &stale, err), err);
    CHECK(stale);
    vindex_info info;
    vindex_get_info(v, &info);
    CHECK_INT(info.generation, 0);
    CHECK_INT(info.count, 0);
    vindex_close(v);
    v = NULL;

    /* the other mode, either way round */
    CHECK_INT(vindex_open(dir, d, &strict, 9, &v, &stale, err), QR_EINVAL);
    CHECK_OK(vindex_open(dir, d, &o, 9, &v, &stale, err), err);
    CHECK(stale);
    vindex_get_info(v, &info);
    CHECK_INT(info.generation, 0);
    vindex_close(v);
    v = NULL;
    char *copydir = make_dir();
    CHECK_OK(vindex_open(copydir, d, &o, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, n, d, 9, err), err);
    vindex_close(v);
    v = NULL;
    CHECK_INT(vindex_open_rows(copydir, d, &strict, &rows, 9, &v, &stale, err), QR_EINVAL);
    CHECK_OK(vindex_open_rows(copydir, d, &o, &rows, 9, &v, &stale, err), err);
    CHECK(stale);
    vindex_get_info(v, &info);
    CHECK_INT(info.generation, 0);
    vindex_close(v);
    v = NULL;

    /* a provider that cannot map: the open fails with its message, or is stale */
    r.fail = true;
    CHECK_INT(vindex_open_rows(dir, d, &strict, &rows, 9, &v, &stale, err), QR_EIO);
    CHECK_MSG(strstr(err, "row store is unavailable on purpose"), "%s", err);
    CHECK_OK(vindex_open_rows(dir, d, &o, &rows, 9, &v, &stale, err), err);
    CHECK(stale);
    vindex_get_info(v, &info);
    CHECK_INT(info.generation, 0);
    vindex_close(v);
    v = NULL;

    /* nor can a build commit without its rows: the served generation stays */
    r.fail = false;
    CHECK_OK(vindex_open_rows(dir, d, &strict, &rows, 9, &v, &stale, err), err);
    r.fail = true;
    CHECK_INT(build_from(v, ids, x, n, d, 10, err), QR_EIO);
    CHECK_MSG(strstr(err, "row store is unavailable on purpose"), "%s", err);
    vindex_get_info(v, &info);
    CHECK_INT(info.generation, 1);
    CHECK_OK(vindex_search(v, q, d, 5, NULL, NULL, top2, sc2, &found2, NULL, err), err);
    CHECK(found2 == 5 && memcmp(top, top2, sizeof(top)) == 0);
    list_dir(dir, names, sizeof(names));
    CHECK_STR(names, "LOCK MANIFEST gen-1.faiss gen-1.vec");
    vindex_close(v);
    v = NULL;

    /* a generation with no rows asks the provider for none */
    char *empty = make_dir();
    int maps = r.maps;
    CHECK_OK(vindex_open_rows(empty, d, &strict, &rows, 0, &v, &stale, err), err);
    CHECK_OK(build_from(v, ids, x, 0, d, 0, err), err);
    vindex_close(v);
    v = NULL;
    CHECK_OK(vindex_open_rows(empty, d, &strict, &rows, 0, &v, &stale, err), err);
    CHECK(!stale);
    CHECK_OK(vindex_search(v, q, d, 5, NULL, NULL, top2, sc2, &found2, NULL, err), err);
    CHECK_INT(found2, 0);
    CHECK_INT(r.maps, maps);
    vindex_close(v);
    remove_dir(empty);

    free(r.rows);
    free(x);
    free(ids);
    remove_dir(dir);
    remove_dir(copy);
    remove_dir(copydir);
}
