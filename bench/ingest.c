/*
 * bench_ingest: throughput of ingest's stages on one core: extraction (type detection,
 * normalisation, sections), chunking (default 300 tokens, 15% overlap) and local embedding, on
 * the shared collections (BEIR corpus.jsonl: title + text as plain text, as `quarry ingest
 * --jsonl` feeds them), on a generated markdown corpus (default 100 MB) and on a smaller
 * generated HTML corpus (which goes through the sandbox, one child process per document). The
 * FTS insert belongs to the store (index/) and is left as a column for the pipeline's bench.
 *
 * usage: bench_ingest [--mb N] [--html-mb N] [DATASET_DIR...]
 *        (default: 100 MB markdown, 20 MB HTML, ../shared/datasets/{cranfield,cisi})
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest.h"

typedef struct {
    char **docs;
    size_t *lens;
    size_t n;
    size_t bytes;
} corpus;

static void corpus_add(corpus *c, char *doc, size_t len)
{
    c->docs = realloc(c->docs, (c->n + 1) * sizeof(char *));
    c->lens = realloc(c->lens, (c->n + 1) * sizeof(size_t));
    c->docs[c->n] = doc;
    c->lens[c->n] = len;
    c->n++;
    c->bytes += len;
}

static void corpus_free(corpus *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->docs[i]);
    free(c->docs);
    free(c->lens);
}

static bool load_beir(const char *dir, corpus *c)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/corpus.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_t *j = json_loadb(line, (size_t)n, 0, NULL);
        if (!j)
            continue;
        const char *title = json_string_value(json_object_get(j, "title"));
        const char *text = json_string_value(json_object_get(j, "text"));
        char *doc = NULL;
        int len = asprintf(&doc, "%s\n\n%s", title ? title : "", text ? text : "");
        if (len >= 0)
            corpus_add(c, doc, (size_t)len);
        json_decref(j);
    }
    free(line);
    fclose(f);
    return c->n > 0;
}

/* ---- generated corpora --------------------------------------------------------------------- */

#define VOCAB 20000

static unsigned long long rng_state = 88172645463325252ull;

static unsigned long long rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static char *vocab[VOCAB];

/* Pseudo-words of 2 to 12 letters; drawn with a Zipf-like skew (rank ~ u^3). */
static void make_vocab(void)
{
    static const char letters[] = "etaoinshrdlcumwfgypbvkjxqz";
    for (int i = 0; i < VOCAB; i++) {
        int len = 2 + (int)(rng() % 11);
        vocab[i] = malloc((size_t)len + 1);
        for (int k = 0; k < len; k++)
            vocab[i][k] = letters[(rng() % 26) * (rng() % 26) / 26];
        vocab[i][len] = '\0';
    }
}

static const char *word(void)
{
    double u = (double)(rng() % 1000000) / 1000000.0;
    return vocab[(size_t)(u * u * u * (VOCAB - 1))];
}

static void sentence(FILE *f)
{
    int n = 6 + (int)(rng() % 20);
    for (int i = 0; i < n; i++) {
        const char *w = word();
        if (i == 0)
            fprintf(f, "%c%s", w[0] - 32, w + 1);
        else
            fprintf(f, " %s%s", w, rng() % 12 == 0 ? "," : "");
    }
    fputs(". ", f);
}

/* A document of about `size` bytes: headings, paragraphs, lists, as markdown or HTML. */
static char *make_doc(size_t size, bool html, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (html)
        fputs("<!DOCTYPE html><html><head><title>Generated</title><script>var x = 1;</script></head><body>"
              "<nav><a href=\"/\">Home</a></nav>",
              f);
    int section = 0;
    while ((size_t)ftell(f) < size) {
        if (rng() % 6 == 0) {
            int level = 1 + (int)(rng() % 3);
            if (html)
                fprintf(f, "<h%d>Section %d %s %s</h%d>\n", level, ++section, word(), word(), level);
            else
                fprintf(f, "%.*s Section %d %s %s\n\n", level, "###", ++section, word(), word());
        }
        if (html)
            fputs("<p>", f);
        int sentences = 2 + (int)(rng() % 8);
        for (int s = 0; s < sentences; s++)
            sentence(f);
        fputs(html ? "</p>\n" : "\n\n", f);
    }
    if (html)
        fputs("</body></html>\n", f);
    fclose(f);
    return buf;
}

static void generate(corpus *c, size_t total, bool html)
{
    while (c->bytes < total) {
        size_t len;
        char *doc = make_doc(4096 + rng() % 40000, html, &len);
        corpus_add(c, doc, len);
    }
}

/* ---- the measurement ----------------------------------------------------------------------- */

static int run(const char *name, const corpus *c, const char *type, const ingest_limits *lim,
               const ingest_chunk_opts *co, ingest_embedder *e)
{
    char err[QR_ERR_LEN];
    uint64_t t_extract = 0, t_chunk = 0, t_embed = 0;
    size_t chunks = 0, failed = 0, text_bytes = 0;
    int dim = ingest_embedder_dim(e);
    for (size_t i = 0; i < c->n; i++) {
        ingest_text t;
        uint64_t t0 = qr_now_ns();
        if (ingest_extract(c->docs[i], c->lens[i], type, NULL, lim, &t, err)) {
            failed++;
            continue;
        }
        uint64_t t1 = qr_now_ns();
        ingest_chunk *ch;
        size_t n;
        if (ingest_chunk_text(&t, co, &ch, &n, err)) {
            failed++;
            ingest_text_release(&t);
            continue;
        }
        uint64_t t2 = qr_now_ns();
        const char **texts = malloc((n ? n : 1) * sizeof(char *));
        size_t *lens = malloc((n ? n : 1) * sizeof(size_t));
        float *vec = malloc((n ? n : 1) * (size_t)dim * sizeof(float));
        for (size_t k = 0; k < n; k++) {
            texts[k] = t.text + ch[k].start;
            lens[k] = ch[k].end - ch[k].start;
        }
        if (ingest_embed(e, texts, lens, n, vec, err))
            failed++;
        uint64_t t3 = qr_now_ns();
        t_extract += t1 - t0;
        t_chunk += t2 - t1;
        t_embed += t3 - t2;
        chunks += n;
        text_bytes += t.len;
        free(texts);
        free(lens);
        free(vec);
        ingest_chunks_free(ch, n);
        ingest_text_release(&t);
    }
    double mb = (double)c->bytes / 1e6;
    double se = (double)t_extract / 1e9, sc = (double)t_chunk / 1e9, sm = (double)t_embed / 1e9;
    double total = se + sc + sm;
    printf("| %s | %zu | %.1f | %zu | %.1f | %.1f (%.0f/s) | %.1f (%.0f/s) | (store) | %.1f (%.0f chunks/s) "
           "| %.0f%% / "
           "%.0f%% / %.0f%% |\n",
           name, c->n, mb, chunks, mb / se, mb / sc, (double)chunks / sc, mb / sm, (double)chunks / sm,
           mb / total, (double)chunks / total, 100 * se / total, 100 * sc / total, 100 * sm / total);
    fflush(stdout);
    if (failed)
        fprintf(stderr, "%s: %zu documents failed (last: %s)\n", name, failed, err);
    (void)text_bytes;
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    size_t md_mb = 100, html_mb = 20;
    const char *dirs[16];
    size_t ndirs = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mb") == 0 && i + 1 < argc)
            md_mb = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--html-mb") == 0 && i + 1 < argc)
            html_mb = (size_t)atol(argv[++i]);
        else if (ndirs < 16)
            dirs[ndirs++] = argv[i];
    }
    if (!ndirs) {
        dirs[ndirs++] = "../shared/datasets/cranfield";
        dirs[ndirs++] = "../shared/datasets/cisi";
    }
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    ingest_embedder *e;
    if (!cfg || ingest_embedder_open(cfg, &e, err)) {
        fprintf(stderr, "cannot open the embedder: %s\n", err);
        return 1;
    }
    ingest_limits lim;
    ingest_limits_from_config(cfg, &lim);
    ingest_chunk_opts co;
    ingest_chunk_opts_from_config(cfg, &co);

    printf("| corpus | docs | MB | chunks | extract MB/s | chunk MB/s (chunks/s) | embed MB/s (chunks/s) | "
           "FTS insert | "
           "total MB/s (chunks/s) | time extract / chunk / embed |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    int rc = 0;
    for (size_t d = 0; d < ndirs; d++) {
        corpus c = {0};
        if (!load_beir(dirs[d], &c)) {
            fprintf(stderr, "cannot read %s/corpus.jsonl\n", dirs[d]);
            return 1;
        }
        const char *name = strrchr(dirs[d], '/') ? strrchr(dirs[d], '/') + 1 : dirs[d];
        rc |= run(name, &c, "text/plain", &lim, &co, e);
        corpus_free(&c);
    }
    make_vocab();
    if (md_mb) {
        corpus c = {0};
        generate(&c, md_mb * 1000000, false);
        char name[64];
        snprintf(name, sizeof(name), "generated markdown, %zu MB", md_mb);
        rc |= run(name, &c, "text/markdown", &lim, &co, e);
        corpus_free(&c);
    }
    if (html_mb) {
        corpus c = {0};
        generate(&c, html_mb * 1000000, true);
        char name[64];
        snprintf(name, sizeof(name), "generated HTML (sandboxed), %zu MB", html_mb);
        rc |= run(name, &c, "text/html", &lim, &co, e);
        corpus_free(&c);
    }
    for (int i = 0; i < VOCAB; i++)
        free(vocab[i]);
    ingest_embedder_free(e);
    qr_config_free(cfg);
    return rc;
}
