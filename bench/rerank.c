/*
 * bench/rerank.c: what the rerank stage adds to a search, for bench/README.md ("Reranking").
 *
 *   bench_rerank DATA_DIR QUERIES.jsonl RERANK_BASE_URL [N]
 *
 * Opens the search service over DATA_DIR (a store already ingested, e.g. by bench/rerank.sh) as
 * the one-shot commands do, and runs the first N queries (default 100) of a BEIR queries.jsonl
 * in BM25 mode, k = 10, as an administrator: once with the first stage only (the request opts out
 * of reranking), then through a reranker at RERANK_BASE_URL (Cohere shape) with windows of 10, 50
 * and 200 passages. Prints, per window, the median and 95th percentile of a search's wall time and
 * the passages sent per search. The reranker's own time is part of it: against the fake
 * server it is mostly JSON and loopback HTTP; a real cross-encoder adds its inference time.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static size_t read_queries(const char *path, char ***out, size_t max)
{
    FILE *fp = fopen(path, "r");
    char line[8192];
    size_t n = 0;
    *out = calloc(max, sizeof(char *));
    while (fp && n < max && fgets(line, sizeof(line), fp)) {
        json_t *j = json_loads(line, 0, NULL);
        const char *t = json_string_value(json_object_get(j, "text"));
        if (t && *t)
            (*out)[n++] = strdup(t);
        json_decref(j);
    }
    if (fp)
        fclose(fp);
    return n;
}

/* Runs the queries; fills ms[] per query, the mean passages the reranker got and how many
 * searches fell back to the first stage. */
static int run(api_service *svc, char **queries, size_t n, bool rerank, double *ms, double *passages,
               int *fell)
{
    retrieval_caller caller = {NULL, 0, true};
    char err[QR_ERR_LEN];
    double total = 0;
    *fell = 0;
    for (size_t i = 0; i < n; i++) {
        retrieval_request req = {
            .query = queries[i], .plain = true, .mode = RETRIEVAL_BM25, .k = 10, .no_rerank = !rerank};
        retrieval_result *res = NULL;
        uint64_t t0 = qr_now_ns();
        if (api_service_search(svc, &caller, &req, &res, err)) {
            fprintf(stderr, "search: %s\n", err);
            return 1;
        }
        ms[i] = (double)(qr_now_ns() - t0) / 1e6;
        if (rerank && res->rerank != RETRIEVAL_RERANK_APPLIED && res->rerank_candidates)
            (*fell)++;
        total += rerank ? (double)res->rerank_candidates : 0;
        retrieval_result_free(res);
    }
    *passages = total / (double)n;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s DATA_DIR QUERIES.jsonl RERANK_BASE_URL [N]\n", argv[0]);
        return 2;
    }
    size_t max = argc > 4 ? (size_t)atoi(argv[4]) : 100;
    char **queries = NULL;
    size_t n = read_queries(argv[2], &queries, max);
    if (!n) {
        fprintf(stderr, "no queries in %s\n", argv[2]);
        return 1;
    }
    const char *windows[] = {"0", "10", "50", "200"};
    double *ms = calloc(n, sizeof(double));
    printf("| window | searches | p50 ms | p95 ms | passages sent per search | fell back |\n");
    printf("|---|---|---|---|---|---|\n");
    for (size_t w = 0; w < 4; w++) {
        char err[QR_ERR_LEN];
        qr_config *cfg = qr_config_new();
        bool on = strcmp(windows[w], "0") != 0;
        if (qr_config_set(cfg, "data.dir", argv[1], QR_CFG_SRC_CLI, err) ||
            qr_config_set(cfg, "log.level", "error", QR_CFG_SRC_CLI, err) ||
            (on && (qr_config_set(cfg, "rerank.backend", "cohere", QR_CFG_SRC_CLI, err) ||
                    qr_config_set(cfg, "rerank.base_url", argv[3], QR_CFG_SRC_CLI, err) ||
                    qr_config_set(cfg, "rerank.model", "bench", QR_CFG_SRC_CLI, err) ||
                    qr_config_set(cfg, "rerank.candidates", windows[w], QR_CFG_SRC_CLI, err))) ||
            qr_config_apply_logging(cfg, err)) {
            fprintf(stderr, "config: %s\n", err);
            return 1;
        }
        api_service_opts o;
        api_service_opts_default(&o);
        o.mode = RETRIEVAL_BM25;
        o.who = "bench_rerank";
        api_service *svc = NULL;
        if (api_service_open(cfg, &o, &svc, err)) {
            fprintf(stderr, "open: %s\n", err);
            return 1;
        }
        double sent = 0;
        int fell = 0;
        /* one warm-up pass (page cache, connections), then the measured one */
        if (run(svc, queries, n, on, ms, &sent, &fell) || run(svc, queries, n, on, ms, &sent, &fell))
            return 1;
        qsort(ms, n, sizeof(double), cmp_double);
        printf("| %s | %zu | %.2f | %.2f | %.1f | %d |\n", on ? windows[w] : "none (first stage)", n,
               ms[n / 2], ms[(size_t)(0.95 * (double)(n - 1))], sent, fell);
        api_service_close(svc);
        qr_config_free(cfg);
    }
    for (size_t i = 0; i < n; i++)
        free(queries[i]);
    free(queries);
    free(ms);
    return 0;
}
