/*
 * Benchmark of the PostgreSQL system of record (index/pgstore.c) on loopback: puts of new
 * documents from one writer and from several at once (all through the one counter row), puts of
 * unchanged documents, and a follower's catch-up from counter 0 in batches; then the vectors
 * read back in libpq's text and binary result formats, the choice pgstore_pull made. Documents
 * as bench/store.c's: chunks of ~1.9 KB text, one vector each. Prints a Markdown table; never
 * fails by timing.
 *
 * Usage: bench_pgstore [--docs N] [--chunks K] [--dim D] [--writers W] [--batch L] [CONNINFO]
 * Without CONNINFO it starts a throwaway server (tests/pg_fixture.c: fsync off, so the numbers
 * are the protocol's and the server's CPU, not a disk's). With CONNINFO the database must be a
 * scratch one: the documents stay in its "quarry" schema.
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/pgstore.h"
#include "tests/pg_fixture.h"

static int ndocs = 2000, nchunks = 4, dim = 384, nwriters = 8, batch = 500;
static const char *conninfo;

typedef struct {
    char id[48], hash[65];
    char *text;
    size_t len;
    store_chunk *chunks;
    float *vecs;
} gen_doc;

static void generate(gen_doc *g, const char *prefix, int doc, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)doc + 1;
    size_t len = 0;
    snprintf(g->id, sizeof(g->id), "%s-%06d", prefix, doc);
    for (int c = 0; c < nchunks; c++) {
        g->chunks[c].start = len;
        for (int w = 0; w < 230; w++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            len += (size_t)sprintf(g->text + len, "w%llu ", (unsigned long long)(x % 4096));
        }
        g->chunks[c].end = len - 1;
        g->chunks[c].headings = "Section > Subsection";
        for (int d = 0; d < dim; d++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            g->vecs[(size_t)c * (size_t)dim + (size_t)d] = (float)(x % 2001) / 1000.0f - 1.0f;
        }
    }
    g->len = len;
    snprintf(g->hash, sizeof(g->hash), "%016llx%016llx%016llx%016llx", (unsigned long long)doc,
             (unsigned long long)seed, (unsigned long long)x, (unsigned long long)len);
}

static void gen_alloc(gen_doc *g)
{
    g->text = malloc((size_t)nchunks * 230 * 8 + 1);
    g->chunks = calloc((size_t)nchunks, sizeof(store_chunk));
    g->vecs = malloc((size_t)nchunks * (size_t)dim * sizeof(float));
    if (!g->text || !g->chunks || !g->vecs) {
        fprintf(stderr, "bench_pgstore: out of memory\n");
        exit(1);
    }
}

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_pgstore: %s: %s\n", what, err);
    exit(1);
}

/* Puts docs [0, n) of prefix through pg; want is the result every put must give. */
static void put_all(pgstore *pg, const char *prefix, int n, store_put_result want)
{
    static const char *const acl[] = {"group:engineering", "user:ava"};
    char err[QR_ERR_LEN];
    gen_doc g;
    gen_alloc(&g);
    for (int i = 0; i < n; i++) {
        generate(&g, prefix, i, 1);
        store_document d = {.doc_id = g.id,
                            .title = "Generated benchmark document",
                            .uri = "file:///bench",
                            .content_type = "text/plain",
                            .metadata_json = "{\"bench\":true}",
                            .acl = acl,
                            .nacl = 2,
                            .content_hash = g.hash,
                            .text = g.text,
                            .text_len = g.len};
        store_put_result r;
        if (pgstore_put(pg, &d, g.chunks, (size_t)nchunks, g.vecs, dim, &r, NULL, err))
            die("put", err);
        if (r != want)
            die("put", "unexpected result");
    }
    free(g.text);
    free(g.chunks);
    free(g.vecs);
}

typedef struct {
    char prefix[16];
    int n;
} writer_arg;

static void *writer(void *arg)
{
    writer_arg *w = arg;
    pgstore *pg;
    char err[QR_ERR_LEN];
    if (pgstore_open(conninfo, &pg, err))
        die("open", err);
    put_all(pg, w->prefix, w->n, STORE_ADDED);
    pgstore_close(pg);
    return NULL;
}

static qr_status count(void *ctx, const store_follow_doc *d, char *err)
{
    (void)err;
    int64_t *n = ctx;
    n[0]++;
    n[1] += (int64_t)d->nchunks;
    n[2] += (int64_t)(d->doc.text_len + d->nchunks * (size_t)d->dim * sizeof(float));
    return QR_OK;
}

static double now_s(void)
{
    return (double)qr_now_ns() / 1e9;
}

static void row(const char *op, int64_t items, const char *unit, double s, double bytes)
{
    printf("| %s | %lld %s | %.2f | %.0f | ", op, (long long)items, unit, s, (double)items / s);
    if (bytes > 0)
        printf("%.1f |\n", bytes / s / 1e6);
    else
        printf("|\n");
}

/* The vectors read back whole in one result format: seconds, and the bytes libpq received. */
static double read_vectors(int binary, double *bytes)
{
    PGconn *c = PQconnectdb(conninfo);
    double t = now_s();
    PGresult *r = PQexecParams(c, "SELECT vec FROM quarry.vectors", 0, NULL, NULL, NULL, NULL, binary);
    t = now_s() - t;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("read vectors", PQerrorMessage(c));
    *bytes = 0;
    for (int i = 0; i < PQntuples(r); i++)
        *bytes += PQgetlength(r, i, 0);
    PQclear(r);
    PQfinish(c);
    return t;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        int *opt = strcmp(argv[i], "--docs") == 0      ? &ndocs
                   : strcmp(argv[i], "--chunks") == 0  ? &nchunks
                   : strcmp(argv[i], "--dim") == 0     ? &dim
                   : strcmp(argv[i], "--writers") == 0 ? &nwriters
                   : strcmp(argv[i], "--batch") == 0   ? &batch
                                                       : NULL;
        if (opt && i + 1 < argc)
            *opt = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !conninfo)
            conninfo = argv[i];
        else {
            fprintf(stderr,
                    "usage: bench_pgstore [--docs N] [--chunks K] [--dim D] [--writers W] [--batch L] "
                    "[CONNINFO]\n");
            return 2;
        }
    }
    if (ndocs < 1 || nchunks < 1 || dim < 1 || dim > STORE_DIM_MAX || nwriters < 1 || batch < 1)
        die("options", "every number must be positive");
    pg_fixture fx = {.ctl_fd = -1};
    char err[QR_ERR_LEN];
    if (!conninfo) {
        if (pg_fixture_start(&fx, err))
            die("start PostgreSQL", err);
        conninfo = fx.conninfo;
    }
    pgstore *pg;
    if (pgstore_open(conninfo, &pg, err) || pgstore_check_embedding(pg, "bench", dim, err))
        die("open", err);

    printf("%d documents of %d chunks (%d-dimension vectors), %d writers, pulls of %d\n\n", ndocs, nchunks,
           dim, nwriters, batch);
    printf("| operation | items | seconds | items/s | MB/s |\n|---|---|---|---|---|\n");
    double t = now_s();
    put_all(pg, "one", ndocs, STORE_ADDED);
    row("put, new documents, 1 writer", ndocs, "docs", now_s() - t, 0);
    t = now_s();
    put_all(pg, "one", ndocs, STORE_UNCHANGED);
    row("put, unchanged documents, 1 writer", ndocs, "docs", now_s() - t, 0);

    pthread_t *th = calloc((size_t)nwriters, sizeof(pthread_t));
    writer_arg *wa = calloc((size_t)nwriters, sizeof(writer_arg));
    t = now_s();
    for (int i = 0; i < nwriters; i++) {
        snprintf(wa[i].prefix, sizeof(wa[i].prefix), "w%d", i);
        wa[i].n = ndocs / nwriters;
        pthread_create(&th[i], NULL, writer, &wa[i]);
    }
    for (int i = 0; i < nwriters; i++)
        pthread_join(th[i], NULL);
    char what[64];
    snprintf(what, sizeof(what), "put, new documents, %d writers", nwriters);
    row(what, (int64_t)(ndocs / nwriters) * nwriters, "docs", now_s() - t, 0);

    int64_t n[3] = {0}, since = 0, through = 0, head = 1;
    t = now_s();
    while (through < head) {
        if (pgstore_pull(pg, since, (size_t)batch, count, n, &through, &head, err))
            die("pull", err);
        since = through;
    }
    double s = now_s() - t;
    row("pull from 0, documents", n[0], "docs", s, (double)n[2]);
    row("pull from 0, chunks", n[1], "chunks", s, 0);
    double bytes;
    s = read_vectors(0, &bytes);
    row("SELECT vec, text format (hex)", n[1], "vectors", s, bytes);
    s = read_vectors(1, &bytes);
    row("SELECT vec, binary format", n[1], "vectors", s, bytes);

    pgstore_close(pg);
    if (fx.ctl_fd >= 0)
        pg_fixture_stop(&fx);
    free(th);
    free(wa);
    return 0;
}
