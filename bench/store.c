/*
 * Benchmark of the document store (index/store.c): how fast documents go in, are found
 * unchanged, are replaced, have their ACL changed, are walked by the vector index and are
 * deleted, on generated documents of chunks of about 300 tokens (230 words, ~1.9 KB) with one
 * 384-dimension vector each. Prints a Markdown table; never fails by timing.
 *
 * Usage: bench_store [--docs N] [--chunks K] [--dim D] [--batch B] DIR
 * A fresh store is created in a new directory inside DIR. Without --batch every write is its own
 * transaction with a synced commit; with --batch B the writes go in batches of B documents
 * (store_batch_begin/commit). The numbers depend on the disk's fsync: run it on the disk the
 * store will live on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/feed.h"
#include "index/index.h"

static uint64_t rng = 88172645463325252ULL;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A pseudo-word from a vocabulary of 4096, so that FTS postings look like text's. */
static size_t word(char *out, uint64_t id)
{
    static const char *const syl[] = {"ka", "ro", "mi", "ten", "sul", "dra", "vo",  "pel",
                                      "an", "is", "ur", "que", "bri", "mon", "les", "tav"};
    size_t n = 0;
    for (int i = 0; i < 3; i++, id >>= 4)
        n += (size_t)sprintf(out + n, "%s", syl[id & 15]);
    return n;
}

typedef struct {
    char *text;
    size_t len;
    store_chunk *chunks;
    float *vectors;
    char hash[65];
    char id[32];
} gen_doc;

static void generate(gen_doc *g, int doc, int version, int nchunks, int dim)
{
    size_t len = 0;
    snprintf(g->id, sizeof(g->id), "bench/doc-%06d", doc);
    for (int c = 0; c < nchunks; c++) {
        g->chunks[c].start = len;
        for (int w = 0; w < 230; w++) {
            /* Zipf-like: small ids are frequent */
            uint64_t r = rnd();
            uint64_t id = (r % 4096) * ((r >> 20) % 4096) / 4096;
            len += word(g->text + len, id);
            g->text[len++] = ' ';
        }
        g->chunks[c].end = len - 1;
        g->chunks[c].headings = "Section > Subsection";
        for (int d = 0; d < dim; d++)
            g->vectors[(size_t)c * dim + d] = (float)(rnd() % 2001) / 1000.0f - 1.0f;
    }
    g->len = len;
    g->text[len] = '\0';
    snprintf(g->hash, sizeof(g->hash), "%016llx%016llx%016llx%016llx", (unsigned long long)doc,
             (unsigned long long)version, (unsigned long long)rnd(), (unsigned long long)rnd());
}

static store_document as_doc(const gen_doc *g, const char *const *acl, size_t nacl)
{
    return (store_document){.doc_id = g->id,
                            .title = "Generated benchmark document",
                            .uri = "file:///bench",
                            .content_type = "text/plain",
                            .metadata_json = "{\"bench\":true}",
                            .acl = acl,
                            .nacl = nacl,
                            .content_hash = g->hash,
                            .text = g->text,
                            .text_len = g->len};
}

static qr_status count_change(void *ctx, const store_change *c, char *err)
{
    (void)err;
    int64_t *n = ctx;
    *n += c->vector ? 1 : 0;
    return QR_OK;
}

static int batch = 1, in_batch;

/* With --batch: opens a batch before every batch-th write ... */
static void batch_open(store *s)
{
    char err[QR_ERR_LEN] = "";
    if (batch > 1 && in_batch == 0 && store_batch_begin(s, err)) {
        fprintf(stderr, "bench_store: batch_begin: %s\n", err);
        exit(1);
    }
}

/* ... and commits it after the batch-th or the last (i == n - 1). */
static void batch_step(store *s, int i, int n)
{
    char err[QR_ERR_LEN] = "";
    if (batch <= 1)
        return;
    if (++in_batch == batch || i == n - 1) {
        in_batch = 0;
        if (store_batch_commit(s, err)) {
            fprintf(stderr, "bench_store: batch_commit: %s\n", err);
            exit(1);
        }
    }
}

static void row(const char *op, int64_t items, const char *unit, double seconds, double bytes)
{
    printf("| %s | %lld %s | %.2f | %.0f |", op, (long long)items, unit, seconds, items / seconds);
    if (bytes > 0)
        printf(" %.1f |\n", bytes / seconds / 1e6);
    else
        printf(" |\n");
}

int main(int argc, char **argv)
{
    int ndocs = 1000, nchunks = 10, dim = 384;
    const char *base = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--docs") == 0 && i + 1 < argc)
            ndocs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--chunks") == 0 && i + 1 < argc)
            nchunks = atoi(argv[++i]);
        else if (strcmp(argv[i], "--dim") == 0 && i + 1 < argc)
            dim = atoi(argv[++i]);
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !base)
            base = argv[i];
        else {
            fprintf(stderr, "usage: bench_store [--docs N] [--chunks K] [--dim D] [--batch B] DIR\n");
            return 2;
        }
    }
    if (!base || ndocs <= 0 || nchunks <= 0 || dim <= 0) {
        fprintf(stderr, "usage: bench_store [--docs N] [--chunks K] [--dim D] [--batch B] DIR\n");
        return 2;
    }
    char dir[4096], err[QR_ERR_LEN] = "";
    snprintf(dir, sizeof(dir), "%s/bench-store-%d", base, (int)getpid());
    store *s = NULL;
    if (store_open(dir, &s, err) || store_check_embedding(s, "bench-random", dim, err)) {
        fprintf(stderr, "bench_store: %s\n", err);
        return 1;
    }
    gen_doc g = {.text = malloc((size_t)nchunks * 230 * 10 + 1),
                 .chunks = malloc((size_t)nchunks * sizeof(store_chunk)),
                 .vectors = malloc((size_t)nchunks * dim * sizeof(float))};
    if (!g.text || !g.chunks || !g.vectors)
        return 1;
    const char *acl[] = {"group:staff", "user:alice"};
    const char *acl2[] = {"public"};
    int64_t total_chunks = (int64_t)ndocs * nchunks;
    double text_bytes = 0, gen_s = 0;
    store_put_result result;

    printf("store_put and friends: %d documents x %d chunks (230 words each), %d-d float32 vectors, %s, dir "
           "%s\n\n",
           ndocs, nchunks, dim, batch > 1 ? "in batches" : "one transaction per write", base);
    if (batch > 1)
        printf("batch size: %d documents\n\n", batch);
    printf("| operation | items | seconds | items/s | text MB/s |\n|---|---|---|---|---|\n");

    uint64_t t0 = qr_now_ns();
    for (int d = 0; d < ndocs; d++) {
        uint64_t g0 = qr_now_ns();
        generate(&g, d, 1, nchunks, dim);
        gen_s += (double)(qr_now_ns() - g0) / 1e9;
        text_bytes += (double)g.len;
        store_document doc = as_doc(&g, acl, 2);
        batch_open(s);
        if (store_put(s, &doc, g.chunks, (size_t)nchunks, g.vectors, dim, &result, err) ||
            result != STORE_ADDED) {
            fprintf(stderr, "bench_store: put: %s\n", err);
            return 1;
        }
        batch_step(s, d, ndocs);
    }
    double put_s = (double)(qr_now_ns() - t0) / 1e9 - gen_s;
    row("put, new documents (chunks)", total_chunks, "chunks", put_s, text_bytes);

    char path[4200];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/quarry.db", dir);
    off_t db_bytes = stat(path, &sb) == 0 ? sb.st_size : 0;
    snprintf(path, sizeof(path), "%s/quarry.db-wal", dir);
    off_t wal_bytes = stat(path, &sb) == 0 ? sb.st_size : 0;

    t0 = qr_now_ns();
    for (int d = 0; d < ndocs; d++) {
        char hash[65];
        bool found;
        snprintf(g.id, sizeof(g.id), "bench/doc-%06d", d);
        if (store_get_hash(s, g.id, hash, &found, err) || !found) {
            fprintf(stderr, "bench_store: get_hash: %s\n", err);
            return 1;
        }
    }
    row("get_hash", ndocs, "docs", (double)(qr_now_ns() - t0) / 1e9, 0);

    /* unchanged: the last generated document, put again (ingest's re-run of the same files) */
    t0 = qr_now_ns();
    for (int d = 0; d < ndocs; d++) {
        store_document doc = as_doc(&g, acl, 2);
        if (store_put(s, &doc, NULL, 0, NULL, 0, &result, err) || result != STORE_UNCHANGED) {
            fprintf(stderr, "bench_store: unchanged put: %s (%d)\n", err, (int)result);
            return 1;
        }
    }
    row("put, same hash (unchanged)", ndocs, "docs", (double)(qr_now_ns() - t0) / 1e9, 0);

    t0 = qr_now_ns();
    for (int d = 0; d < ndocs; d++) {
        snprintf(g.id, sizeof(g.id), "bench/doc-%06d", d);
        batch_open(s);
        if (store_set_acl(s, g.id, acl2, 1, err)) {
            fprintf(stderr, "bench_store: set_acl: %s\n", err);
            return 1;
        }
        batch_step(s, d, ndocs);
    }
    row("set_acl", ndocs, "docs", (double)(qr_now_ns() - t0) / 1e9, 0);

    store_stats before;
    store_get_stats(s, &before, err);
    int nupdate = ndocs / 4 > 0 ? ndocs / 4 : 1;
    gen_s = 0;
    text_bytes = 0;
    t0 = qr_now_ns();
    for (int d = 0; d < nupdate; d++) {
        uint64_t g0 = qr_now_ns();
        generate(&g, d, 2, nchunks, dim);
        gen_s += (double)(qr_now_ns() - g0) / 1e9;
        text_bytes += (double)g.len;
        store_document doc = as_doc(&g, acl, 2);
        batch_open(s);
        if (store_put(s, &doc, g.chunks, (size_t)nchunks, g.vectors, dim, &result, err) ||
            result != STORE_UPDATED) {
            fprintf(stderr, "bench_store: update: %s\n", err);
            return 1;
        }
        batch_step(s, d, nupdate);
    }
    row("put, new content (replaces chunks)", (int64_t)nupdate * nchunks, "chunks",
        (double)(qr_now_ns() - t0) / 1e9 - gen_s, text_bytes);

    int64_t n = 0, counter = 0;
    t0 = qr_now_ns();
    if (store_changes_since(s, before.change_counter, count_change, &n, &counter, err)) {
        fprintf(stderr, "bench_store: changes_since: %s\n", err);
        return 1;
    }
    row("changes_since (after the updates)", n, "vectors", (double)(qr_now_ns() - t0) / 1e9, 0);
    n = 0;
    t0 = qr_now_ns();
    if (store_each_vector(s, count_change, &n, &counter, err)) {
        fprintf(stderr, "bench_store: each_vector: %s\n", err);
        return 1;
    }
    row("each_vector (rebuild)", n, "vectors", (double)(qr_now_ns() - t0) / 1e9, 0);
    t0 = qr_now_ns();
    if (store_verify(s, err)) {
        fprintf(stderr, "bench_store: verify: %s\n", err);
        return 1;
    }
    row("verify", total_chunks, "chunks", (double)(qr_now_ns() - t0) / 1e9, 0);

    t0 = qr_now_ns();
    for (int d = 0; d < ndocs; d++) {
        snprintf(g.id, sizeof(g.id), "bench/doc-%06d", d);
        batch_open(s);
        if (store_delete(s, g.id, err)) {
            fprintf(stderr, "bench_store: delete: %s\n", err);
            return 1;
        }
        batch_step(s, d, ndocs);
    }
    row("delete", ndocs, "docs", (double)(qr_now_ns() - t0) / 1e9, 0);
    printf("\nstore after the first puts: %.1f MB database + %.1f MB WAL, %.0f bytes per chunk\n",
           (double)db_bytes / 1e6, (double)wal_bytes / 1e6,
           (double)(db_bytes + wal_bytes) / (double)total_chunks);
    store_close(s);
    free(g.text);
    free(g.chunks);
    free(g.vectors);
    return 0;
}
