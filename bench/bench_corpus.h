/*
 * bench/bench_corpus.h: what several benchmarks generate or load the same way, so that their
 * numbers compare: a seeded xorshift generator, Zipf-distributed pseudo-words (rank r weighs
 * about 1/r), and the shared collections' judged queries (queries.jsonl, qrels.tsv). Each
 * benchmark is one translation unit: everything here is static (inline: a benchmark uses what it needs).
 */
#ifndef QUARRY_BENCH_CORPUS_H
#define QUARRY_BENCH_CORPUS_H

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "retrieval/retrieval.h"

static uint64_t bench_rng_state = 0x5eedbeefull;

static inline uint64_t bench_rnd(void)
{
    bench_rng_state ^= bench_rng_state << 13;
    bench_rng_state ^= bench_rng_state >> 7;
    bench_rng_state ^= bench_rng_state << 17;
    return bench_rng_state;
}

/* A Zipf-like word rank below vocab: small ranks are much more frequent. */
static inline size_t bench_zipf_word(size_t vocab)
{
    double u = ((double)(bench_rnd() >> 11) + 0.5) / 9007199254740992.0;
    return (size_t)(pow((double)vocab, u)) - 1;
}

/* The pseudo-word of rank i (syllables, then 'x' so that no word is a stopword); out holds 64. */
static inline void bench_word(size_t i, char *out)
{
    static const char *syll[] = {"ka", "lo", "mi", "ne", "ru", "sa", "ti",
                                 "vo", "ze", "pa", "do", "fi", "gu", "ha"};
    size_t n = 0;
    do {
        n += (size_t)sprintf(out + n, "%s", syll[i % 14]);
        i /= 14;
    } while (i);
    out[n++] = 'x';
    out[n] = '\0';
}

typedef struct {
    char *id, *text;
    retrieval_judgment *j;
    size_t nj;
} bench_query;

/* The judged queries of a shared collection directory; 0 when it has none. */
static inline size_t bench_load_queries(const char *dir, bench_query **out)
{
    char path[1100], line[1 << 16];
    snprintf(path, sizeof(path), "%.1000s/queries.jsonl", dir);
    FILE *f = fopen(path, "r");
    size_t n = 0, cap = 0;
    *out = NULL;
    while (f && fgets(line, sizeof(line), f)) {
        json_t *o = json_loads(line, 0, NULL);
        const char *id = json_string_value(json_object_get(o, "_id")),
                   *t = json_string_value(json_object_get(o, "text"));
        if (id && t) {
            if (n == cap)
                *out = realloc(*out, (cap = cap ? cap * 2 : 256) * sizeof(bench_query));
            (*out)[n++] = (bench_query){strdup(id), strdup(t), NULL, 0};
        }
        json_decref(o);
    }
    if (f)
        fclose(f);
    snprintf(path, sizeof(path), "%.1000s/qrels.tsv", dir);
    f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f)) {
        char q[64], d[64];
        int g;
        if (sscanf(line, "%63[^\t]\t%63[^\t]\t%d", q, d, &g) != 3)
            continue;
        for (size_t i = 0; i < n; i++)
            if (strcmp((*out)[i].id, q) == 0) {
                bench_query *x = &(*out)[i];
                x->j = realloc(x->j, (x->nj + 1) * sizeof(*x->j));
                x->j[x->nj++] = (retrieval_judgment){strdup(d), g};
            }
    }
    if (f)
        fclose(f);
    return n;
}

static inline void bench_free_queries(bench_query *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(q[i].id);
        free(q[i].text);
        for (size_t j = 0; j < q[i].nj; j++)
            free((char *)q[i].j[j].doc_id);
        free(q[i].j);
    }
    free(q);
}

#endif
