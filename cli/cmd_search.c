/*
 * `quarry search`, `quarry ask`, `quarry eval` and `quarry index build`: searching the store as a
 * user (or as an administrator), answering a question, measuring retrieval quality on a judged
 * collection, and building the indexes. Searches go through the search service the HTTP API uses
 * (api/service.c: the same indexes, query embedding, retrieval and second permission check), so a
 * caller gets the same page here as from POST /v1/search; auth resolves who is asking.
 */
#define _GNU_SOURCE /* timegm */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "auth/auth.h"
#include "cli/cli.h"
#include "index/index.h"
#include "inference/inference.h"
#include "ingest/ingest.h"
#include "retrieval/retrieval.h"

#define EVAL_K           100
#define EVAL_STAGES      7 /* the stages eval times, after the whole search (eval_stage_names) */
#define EVAL_LINE_MAX    (1 << 20)
#define EVAL_QUERIES_MAX 100000
#define SEARCH_DOCS_MAX  64 /* --doc options */

/* ---- what searching needs ------------------------------------------------------------------ */

/* The search service `quarry serve` uses, opened for one command: the store, the indexes the mode
 * needs (caught up with the store now, built when missing, with a note on stderr) and the query
 * embedder. Errors are printed. */
static int service_open(const cli_ctx *ctx, retrieval_mode mode, api_service **svc)
{
    char err[QR_ERR_LEN], who[64];
    snprintf(who, sizeof(who), "quarry %s", ctx->argv[0]);
    api_service_opts o;
    api_service_opts_default(&o);
    o.mode = mode;
    o.who = who;
    if (api_service_open(ctx->cfg, &o, svc, err)) {
        fprintf(stderr, "%s: %s\n", who, err);
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

/* ---- quarry search ------------------------------------------------------------------------- */

/* Parses --after: Unix milliseconds, or a UTC date "YYYY-MM-DD" or time "YYYY-MM-DDTHH:MM:SSZ". */
static bool parse_after(const char *s, int64_t *ms)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!errno && *s && !*end && v >= 0) {
        *ms = v;
        return true;
    }
    struct tm tm = {0};
    const char *rest = strptime(s, "%Y-%m-%d", &tm);
    if (rest && *rest == 'T')
        rest = strptime(rest, "T%H:%M:%SZ", &tm);
    if (!rest || *rest)
        return false;
    *ms = (int64_t)timegm(&tm) * 1000;
    return true;
}

/* One line on stderr when a reranker is configured and did not reorder this page. */
static void print_rerank(const retrieval_result *res)
{
    if (res->rerank == RETRIEVAL_RERANK_FALLBACK)
        fprintf(stderr, "quarry: reranking failed (%s): first-stage order\n",
                res->rerank_reason ? res->rerank_reason : "?");
    else if (res->rerank == RETRIEVAL_RERANK_SKIPPED)
        fprintf(stderr, "quarry: not reranked (%s)\n", res->rerank_reason ? res->rerank_reason : "?");
}

static void print_hits(const retrieval_result *res)
{
    if (!res->nhits)
        printf("no results\n");
    for (size_t i = 0; i < res->nhits; i++) {
        const retrieval_hit *h = &res->hits[i];
        printf("%zu. %s  [%s, chunk %lld]  score %.4g\n", i + 1, *h->title ? h->title : "(untitled)",
               h->doc_id, (long long)h->chunk_id, h->score);
        if (*h->headings)
            printf("   %s\n", h->headings);
        if (*h->uri)
            printf("   %s\n", h->uri);
        printf("   %s\n   (bytes %zu-%zu)\n", h->snippet, h->start, h->end);
    }
    if (res->next_cursor)
        printf("more: --cursor %s\n", res->next_cursor);
    print_rerank(res);
}

/* Resolves --as through LDAP into a caller, or makes the administrator caller. */
static int resolve_caller(const cli_ctx *ctx, const char *as, auth_ctx **auth, auth_principal **p,
                          retrieval_caller *caller)
{
    char err[QR_ERR_LEN];
    memset(caller, 0, sizeof(*caller));
    if (!as) {
        fprintf(stderr, "quarry %s: no --as given: searching as an administrator (every document)\n",
                ctx->argv[0]);
        caller->is_admin = true;
        return CLI_EXIT_OK;
    }
    qr_status st = auth_new(ctx->cfg, auth, err);
    if (!st)
        st = auth_resolve(*auth, as, p, err);
    if (st) {
        fprintf(stderr, "quarry %s: cannot resolve user '%s': %s\n", ctx->argv[0], as, err);
        return st == QR_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
    }
    caller->principals = (const char *const *)(*p)->principals;
    caller->nprincipals = (*p)->nprincipals;
    caller->is_admin = (*p)->is_admin;
    return CLI_EXIT_OK;
}

int cli_cmd_search(cli_ctx *ctx)
{
    const char *as = NULL, *cursor = NULL, *source = NULL, *type = NULL;
    const char *docs[SEARCH_DOCS_MAX];
    size_t ndocs = 0, k = 10, max_per_doc = 0;
    int64_t after = 0;
    bool json = false, plain = false, explain = false;
    retrieval_mode mode = RETRIEVAL_MODE_DEFAULT;
    char err[QR_ERR_LEN];
    qr_buf query;
    qr_buf_init(&query, RETRIEVAL_QUERY_MAX);
    for (int i = 1; i < ctx->argc; i++) {
        const char *a = ctx->argv[i];
        bool has_value = i + 1 < ctx->argc;
        if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--plain") == 0) {
            plain = true;
        } else if (strcmp(a, "--explain") == 0) {
            explain = true;
        } else if (strcmp(a, "--as") == 0 || strcmp(a, "--mode") == 0 || strcmp(a, "-k") == 0 ||
                   strcmp(a, "--cursor") == 0 || strcmp(a, "--doc") == 0 || strcmp(a, "--source") == 0 ||
                   strcmp(a, "--type") == 0 || strcmp(a, "--after") == 0 || strcmp(a, "--max-per-doc") == 0) {
            if (!has_value) {
                qr_buf_release(&query);
                return cli_usage_error(ctx, "%s needs a value", a);
            }
            const char *v = ctx->argv[++i];
            char *end;
            if (strcmp(a, "--as") == 0) {
                as = v;
            } else if (strcmp(a, "--mode") == 0) {
                if (retrieval_mode_parse(v, &mode, err)) {
                    qr_buf_release(&query);
                    return cli_usage_error(ctx, "%s", err);
                }
            } else if (strcmp(a, "-k") == 0 || strcmp(a, "--max-per-doc") == 0) {
                errno = 0;
                unsigned long long n = strtoull(v, &end, 10);
                bool is_k = a[1] == 'k';
                if (errno || *end || !*v || n < 1 || n > (is_k ? RETRIEVAL_K_MAX : 10000)) {
                    qr_buf_release(&query);
                    return cli_usage_error(ctx, "%s must be 1..%d", a, is_k ? RETRIEVAL_K_MAX : 10000);
                }
                *(is_k ? &k : &max_per_doc) = (size_t)n;
            } else if (strcmp(a, "--cursor") == 0) {
                cursor = v;
            } else if (strcmp(a, "--doc") == 0) {
                if (ndocs == SEARCH_DOCS_MAX) {
                    qr_buf_release(&query);
                    return cli_usage_error(ctx, "too many --doc (at most %d)", SEARCH_DOCS_MAX);
                }
                docs[ndocs++] = v;
            } else if (strcmp(a, "--source") == 0) {
                source = v;
            } else if (strcmp(a, "--type") == 0) {
                type = v;
            } else if (!parse_after(v, &after)) {
                qr_buf_release(&query);
                return cli_usage_error(ctx, "--after takes Unix milliseconds or a UTC date YYYY-MM-DD");
            }
        } else if (a[0] == '-' && a[1] == '-' && a[2]) {
            qr_buf_release(&query);
            return cli_usage_error(ctx, "unknown option '%s' (put the query after --, or quote it)", a);
        } else if (strcmp(a, "--") == 0) {
            for (i++; i < ctx->argc; i++)
                if ((qr_buf_len(&query) && qr_buf_putc(&query, ' ')) || qr_buf_puts(&query, ctx->argv[i]))
                    break;
        } else if ((qr_buf_len(&query) && qr_buf_putc(&query, ' ')) || qr_buf_puts(&query, a)) {
            qr_buf_release(&query);
            return cli_usage_error(ctx, "the query is longer than %d bytes", RETRIEVAL_QUERY_MAX);
        }
    }
    if (!qr_buf_len(&query)) {
        qr_buf_release(&query);
        return cli_usage_error(ctx, "give a QUERY");
    }

    auth_ctx *auth = NULL;
    auth_principal *p = NULL;
    api_service *svc = NULL;
    retrieval_result *res = NULL;
    retrieval_caller caller;
    int rc = resolve_caller(ctx, as, &auth, &p, &caller);
    if (rc)
        goto out;
    if ((rc = service_open(ctx, mode, &svc)))
        goto out;
    const retrieval_opts *ro = api_service_retrieval_opts(svc);
    retrieval_mode effective = mode == RETRIEVAL_MODE_DEFAULT ? ro->mode : mode;
    if (explain) {
        /* what the query became: the expressions FTS5 is given, on stderr (they hold query text) */
        qr_buf rank, require, exclude;
        qr_buf_init(&rank, 1 << 20);
        qr_buf_init(&require, 1 << 20);
        qr_buf_init(&exclude, 1 << 20);
        api_service_handle *h = api_service_acquire(svc);
        qr_status est = retrieval_query_expressions(api_service_handle_retrieval(h), qr_buf_str(&query),
                                                    plain, &rank, &require, &exclude, err);
        api_service_release(svc, h);
        if (!est)
            fprintf(stderr, "rank:    %s\nrequire: %s\nexclude: %s\n", qr_buf_str(&rank),
                    qr_buf_str(&require), qr_buf_str(&exclude));
        qr_buf_release(&rank);
        qr_buf_release(&require);
        qr_buf_release(&exclude);
    }
    retrieval_request req = {
        .query = qr_buf_str(&query),
        .plain = plain,
        .mode = mode,
        .k = k,
        .doc_ids = docs,
        .ndoc_ids = ndocs,
        .source_prefix = source,
        .content_type = type,
        .updated_after_ms = after,
        .max_per_doc = max_per_doc,
        .cursor = cursor,
    };
    qr_status st = api_service_search(svc, &caller, &req, &res, err);
    if (st) {
        fprintf(stderr, "quarry search: %s\n", err);
        rc = st == QR_EINVAL || st == QR_ELIMIT ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
    } else if (json) {
        qr_buf out;
        qr_buf_init(&out, (size_t)1 << 30);
        if (retrieval_result_json(res, &out) || qr_buf_putc(&out, '\n')) {
            fprintf(stderr, "quarry search: out of memory\n");
            rc = CLI_EXIT_FAILURE;
        } else {
            fputs(qr_buf_str(&out), stdout);
        }
        qr_buf_release(&out);
    } else {
        if (effective != res->mode)
            fprintf(stderr, "quarry search: ran as %s (%s)\n", retrieval_mode_name(res->mode),
                    res->mode == RETRIEVAL_BM25 ? "no query vector or vector index"
                                                : "the query has no words to match");
        print_hits(res);
    }
    retrieval_result_free(res);
out:
    api_service_close(svc);
    auth_principal_release(p);
    auth_free(auth);
    qr_buf_release(&query);
    return rc;
}

/* ---- quarry eval ----------------------------------------------------------------------------- */

typedef struct {
    char *id, *text;
    retrieval_judgment *judged;
    size_t njudged, cap;
} eval_query;

typedef struct {
    eval_query *q;
    size_t n, cap;
} eval_set;

static void eval_set_release(eval_set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->q[i].id);
        free(s->q[i].text);
        for (size_t j = 0; j < s->q[i].njudged; j++)
            free((char *)s->q[i].judged[j].doc_id);
        free(s->q[i].judged);
    }
    free(s->q);
}

static eval_query *find_query(eval_set *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->q[i].id, id) == 0)
            return &s->q[i];
    return NULL;
}

/* Reads a BEIR queries.jsonl: {"_id": "...", "text": "..."} per line. */
static int read_queries(const char *path, eval_set *s)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "quarry eval: cannot open '%s': %s\n", path, strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    char *line = malloc(EVAL_LINE_MAX);
    size_t lineno = 0;
    int rc = line ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
    while (!rc && fgets(line, EVAL_LINE_MAX, f)) {
        lineno++;
        if (line[strspn(line, " \t\r\n")] == '\0')
            continue;
        json_error_t jerr;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
        json_t *id = json_object_get(o, "_id"), *text = json_object_get(o, "text");
        if (!o || !json_is_string(id) || !json_is_string(text)) {
            fprintf(stderr, "quarry eval: %s:%zu: expected {\"_id\": \"...\", \"text\": \"...\"}%s%s\n", path,
                    lineno, o ? "" : ": ", o ? "" : jerr.text);
            rc = CLI_EXIT_FAILURE;
        } else if (find_query(s, json_string_value(id))) {
            fprintf(stderr, "quarry eval: %s:%zu: query '%s' appears twice\n", path, lineno,
                    json_string_value(id));
            rc = CLI_EXIT_FAILURE;
        } else if (s->n == EVAL_QUERIES_MAX) {
            fprintf(stderr, "quarry eval: %s: more than %d queries\n", path, EVAL_QUERIES_MAX);
            rc = CLI_EXIT_FAILURE;
        } else {
            if (s->n == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 256;
                eval_query *q = realloc(s->q, cap * sizeof(*q));
                if (!q) {
                    rc = CLI_EXIT_FAILURE;
                    json_decref(o);
                    break;
                }
                s->q = q;
                s->cap = cap;
            }
            eval_query *q = &s->q[s->n];
            memset(q, 0, sizeof(*q));
            q->id = strdup(json_string_value(id));
            q->text = strdup(json_string_value(text));
            s->n++;
            if (!q->id || !q->text)
                rc = CLI_EXIT_FAILURE;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return rc;
}

/* Reads qrels: "query-id<TAB>corpus-id<TAB>score" lines after a header line. Judgments of unknown
 * queries are counted and skipped. */
static int read_qrels(const char *path, eval_set *s, size_t *unknown)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "quarry eval: cannot open '%s': %s\n", path, strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    char line[4096];
    size_t lineno = 0;
    int rc = CLI_EXIT_OK;
    *unknown = 0;
    while (!rc && fgets(line, sizeof(line), f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0])
            continue;
        char *qid = strtok(line, "\t"), *doc = strtok(NULL, "\t"), *grade = strtok(NULL, "\t");
        char *end = NULL;
        long g = grade ? strtol(grade, &end, 10) : 0;
        if (!qid || !doc || !grade || *end || g < INT_MIN || g > INT_MAX) {
            if (lineno == 1)
                continue; /* the header */
            fprintf(stderr, "quarry eval: %s:%zu: expected query-id, corpus-id and an integer score\n", path,
                    lineno);
            rc = CLI_EXIT_FAILURE;
            break;
        }
        eval_query *q = find_query(s, qid);
        if (!q) {
            (*unknown)++;
            continue;
        }
        if (q->njudged == q->cap) {
            size_t cap = q->cap ? q->cap * 2 : 16;
            retrieval_judgment *j = realloc(q->judged, cap * sizeof(*j));
            if (!j) {
                rc = CLI_EXIT_FAILURE;
                break;
            }
            q->judged = j;
            q->cap = cap;
        }
        q->judged[q->njudged].doc_id = strdup(doc);
        q->judged[q->njudged].grade = (int)g;
        if (!q->judged[q->njudged++].doc_id)
            rc = CLI_EXIT_FAILURE;
    }
    fclose(f);
    return rc;
}

/* parse..permit: retrieval_result's timings; json: retrieval_result_json; other: the rest (the
 * query's embedding, taking a handle, the result's allocation and release) */
static const char *const eval_stage_names[EVAL_STAGES] = {"parse",  "rank", "hydrate", "snippets",
                                                          "permit", "json", "other"};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The p-th percentile (0..100) of sorted values, nearest rank. */
static double percentile(const double *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    return v[(rank > n ? n : rank) - 1];
}

/* What one mode scored over the judged queries. */
typedef struct {
    retrieval_metrics mean;
    double p50_ms, p95_ms;                                 /* the whole search, medians over the passes */
    double stage_p50[EVAL_STAGES], stage_p95[EVAL_STAGES]; /* eval_stage_names, medians over the passes */
    size_t evaluated, degraded, pruned;
    size_t rerank_fallbacks; /* queries whose rerank failed (first-stage order kept) */
} eval_score;

/* How eval_run runs: k results per query (metrics at 10 and 100 need EVAL_K), repeat timed passes
 * (metrics from the first), and where each query's top 10 is written (NULL: nowhere). */
typedef struct {
    size_t k, repeat;
    FILE *run;
} eval_opts;

/* Runs every judged query of set through svc in mode and averages the metrics; no_rerank keeps the
 * first-stage order when the service has a reranker. Errors are printed. */
static int eval_run(api_service *svc, const eval_set *set, retrieval_mode mode, bool no_rerank,
                    const eval_opts *eo, eval_score *out)
{
    char err[QR_ERR_LEN];
    const retrieval_opts *ro = api_service_retrieval_opts(svc);
    retrieval_mode effective = mode == RETRIEVAL_MODE_DEFAULT ? ro->mode : mode;
    size_t repeat = eo->repeat ? eo->repeat : 1;
    /* per query of a pass: the whole search, then its stages (see eval_stage_names) */
    double *lat = calloc((set->n ? set->n : 1) * (1 + EVAL_STAGES), sizeof(double));
    double *p50 = calloc(repeat * (1 + EVAL_STAGES), sizeof(double));
    double *p95 = calloc(repeat * (1 + EVAL_STAGES), sizeof(double));
    double *col = calloc(set->n ? set->n : 1, sizeof(double));
    const char **ranked = calloc(EVAL_K, sizeof(char *));
    retrieval_metrics sum = {0};
    retrieval_caller admin = {.is_admin = true};
    qr_buf json;
    qr_buf_init(&json, 64u << 20);
    int rc = CLI_EXIT_OK;
    memset(out, 0, sizeof(*out));
    if (!lat || !p50 || !p95 || !col || !ranked) {
        fprintf(stderr, "quarry eval: out of memory\n");
        rc = CLI_EXIT_FAILURE;
        goto out;
    }
    for (size_t pass = 0; pass < repeat; pass++) {
        size_t timed = 0;
        for (size_t i = 0; i < set->n; i++) {
            eval_query *q = &set->q[i];
            bool relevant = false;
            for (size_t j = 0; j < q->njudged; j++)
                relevant |= q->judged[j].grade > 0;
            if (!relevant)
                continue; /* trec_eval's convention: queries without relevant documents are not scored */
            uint64_t t0 = qr_now_ns();
            /* documents are judged, not chunks: each document counts once, at its best chunk; the
             * collections' queries are prose, so their quotes and dashes are not query syntax */
            retrieval_request req = {.query = q->text,
                                     .plain = true,
                                     .mode = mode,
                                     .k = eo->k,
                                     .max_per_doc = 1,
                                     .no_rerank = no_rerank};
            retrieval_result *res = NULL;
            if (api_service_search(svc, &admin, &req, &res, err)) {
                fprintf(stderr, "quarry eval: query '%s': %s\n", q->id, err);
                rc = CLI_EXIT_FAILURE;
                goto out;
            }
            uint64_t t1 = qr_now_ns();
            /* the page as the server would send it (the time only; eval prints metrics) */
            qr_buf_reset(&json);
            if (retrieval_result_json(res, &json)) {
                retrieval_result_free(res);
                fprintf(stderr, "quarry eval: out of memory\n");
                rc = CLI_EXIT_FAILURE;
                goto out;
            }
            uint64_t t2 = qr_now_ns();
            double *row = lat + timed * (1 + EVAL_STAGES);
            row[0] = (t2 - t0) / 1e6;
            row[1] = res->parse_ns / 1e6;
            row[2] = res->rank_ns / 1e6;
            row[3] = res->hydrate_ns / 1e6;
            row[4] = res->snippet_ns / 1e6;
            row[5] = res->permit_ns / 1e6;
            row[6] = (t2 - t1) / 1e6;
            row[7] = row[0] - row[1] - row[2] - row[3] - row[4] - row[5] - row[6];
            timed++;
            if (pass) {
                retrieval_result_free(res);
                continue;
            }
            out->degraded += res->mode != effective;
            out->pruned += res->bm25_pruned;
            out->rerank_fallbacks += res->rerank == RETRIEVAL_RERANK_FALLBACK;
            for (size_t j = 0; j < res->nhits; j++) {
                ranked[j] = res->hits[j].doc_id;
                if (eo->run && j < 10)
                    fprintf(eo->run, "%s\t%zu\t%s\n", q->id, j + 1, res->hits[j].doc_id);
            }
            retrieval_metrics m;
            qr_status st = retrieval_eval_ranking(ranked, res->nhits, q->judged, q->njudged, &m, err);
            retrieval_result_free(res);
            if (st) {
                fprintf(stderr, "quarry eval: %s\n", err);
                rc = CLI_EXIT_FAILURE;
                goto out;
            }
            sum.ndcg10 += m.ndcg10;
            sum.recall100 += m.recall100;
            sum.map100 += m.map100;
            sum.mrr10 += m.mrr10;
            out->evaluated++;
        }
        /* each column's percentiles over this pass */
        for (size_t c = 0; c <= EVAL_STAGES; c++) {
            for (size_t i = 0; i < timed; i++)
                col[i] = lat[i * (1 + EVAL_STAGES) + c];
            qsort(col, timed, sizeof(double), cmp_double);
            p50[c * repeat + pass] = percentile(col, timed, 50);
            p95[c * repeat + pass] = percentile(col, timed, 95);
        }
    }
    if (out->evaluated) {
        double n = (double)out->evaluated;
        out->mean = (retrieval_metrics){sum.ndcg10 / n, sum.recall100 / n, sum.map100 / n, sum.mrr10 / n};
        for (size_t c = 0; c <= EVAL_STAGES; c++) {
            qsort(p50 + c * repeat, repeat, sizeof(double), cmp_double);
            qsort(p95 + c * repeat, repeat, sizeof(double), cmp_double);
        }
        out->p50_ms = percentile(p50, repeat, 50);
        out->p95_ms = percentile(p95, repeat, 50);
        for (size_t c = 1; c <= EVAL_STAGES; c++) {
            out->stage_p50[c - 1] = percentile(p50 + c * repeat, repeat, 50);
            out->stage_p95[c - 1] = percentile(p95 + c * repeat, repeat, 50);
        }
    }
out:
    qr_buf_release(&json);
    free(lat);
    free(p50);
    free(p95);
    free(col);
    free(ranked);
    return rc;
}

/* One row of `quarry eval --compare`: a mode, and for hybrid the fusion it runs with. */
typedef struct {
    char label[64];
    retrieval_mode mode;     /* RETRIEVAL_MODE_DEFAULT: the default row, as configured */
    retrieval_fusion fusion; /* hybrid rows */
    bool rerank;             /* the rerank stage on (rerank.backend is not none) */
} compare_row;

#define COMPARE_ROWS_MAX 16

/* The rows, in the order printed: each mode on its own, both fusions, then the default; with a
 * reranker configured (rerank.backend), each of them again with the rerank stage. */
static size_t compare_rows(const qr_config *cfg, const retrieval_opts *ro, compare_row *rows)
{
    size_t n = 0;
    retrieval_opts w = *ro;
    rows[n++] = (compare_row){"bm25", RETRIEVAL_BM25, ro->fusion, false};
    rows[n++] = (compare_row){"vector", RETRIEVAL_VECTOR, ro->fusion, false};
    rows[n] = (compare_row){"", RETRIEVAL_HYBRID, RETRIEVAL_FUSION_WEIGHTED, false};
    retrieval_opts_with_fusion(cfg, RETRIEVAL_FUSION_WEIGHTED, &w);
    snprintf(rows[n++].label, sizeof(rows[0].label), "hybrid weighted (w=%g)", w.vector_weight);
    rows[n] = (compare_row){"", RETRIEVAL_HYBRID, RETRIEVAL_FUSION_RRF, false};
    retrieval_opts_with_fusion(cfg, RETRIEVAL_FUSION_RRF, &w);
    snprintf(rows[n++].label, sizeof(rows[0].label), "hybrid rrf (k=%g, w=%g)", ro->rrf_k, w.vector_weight);
    rows[n] = (compare_row){"", RETRIEVAL_MODE_DEFAULT, ro->fusion, false};
    snprintf(rows[n++].label, sizeof(rows[0].label), "default: %s (%s)", retrieval_mode_name(ro->mode),
             ro->mode_auto ? "auto" : "set");
    if (strcmp(qr_config_settings(cfg)->rerank_backend, "none") != 0) {
        for (size_t i = 0, first = n; i < first && n < COMPARE_ROWS_MAX; i++) {
            compare_row r = rows[i];
            r.rerank = true;
            snprintf(r.label, sizeof(r.label), "%.48s + rerank", rows[i].label);
            rows[n++] = r;
        }
    }
    return n;
}

static void print_score_json(qr_buf *out, const char *label, retrieval_mode mode, const eval_score *s)
{
    qr_buf_printf(out, "{\"row\":");
    qr_json_escape(out, label, strlen(label));
    qr_buf_printf(
        out,
        ",\"mode\":\"%s\",\"ndcg@10\":%.4f,\"recall@100\":%.4f,\"mrr@10\":%.4f,\"map@100\":%.4f,"
        "\"latency_p50_ms\":%.2f,\"latency_p95_ms\":%.2f,\"queries\":%zu,\"other_mode_queries\":%zu,"
        "\"rerank_fallbacks\":%zu}",
        retrieval_mode_name(mode), s->mean.ndcg10, s->mean.recall100, s->mean.mrr10, s->mean.map100,
        s->p50_ms, s->p95_ms, s->evaluated, s->degraded, s->rerank_fallbacks);
}

/* `quarry eval --compare`: every row's service opened in turn (the same store and indexes; each
 * with the fusion its row names), one table. */
static int eval_compare(cli_ctx *ctx, const eval_set *set, size_t unknown, const char *queries, bool json,
                        const eval_opts *eo)
{
    retrieval_opts configured;
    retrieval_opts_from_config(ctx->cfg, &configured);
    compare_row rows[COMPARE_ROWS_MAX];
    size_t nrows = compare_rows(ctx->cfg, &configured, rows);
    eval_score scores[COMPARE_ROWS_MAX];
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; i < nrows && !rc; i++) {
        retrieval_opts ro = configured;
        if (rows[i].mode == RETRIEVAL_HYBRID)
            retrieval_opts_with_fusion(ctx->cfg, rows[i].fusion, &ro);
        char err[QR_ERR_LEN];
        api_service_opts o;
        api_service_opts_default(&o);
        o.mode = rows[i].mode;
        o.who = "quarry eval";
        o.retrieval = &ro;
        api_service *svc = NULL;
        if (api_service_open(ctx->cfg, &o, &svc, err)) {
            fprintf(stderr, "quarry eval: %s: %s\n", rows[i].label, err);
            return CLI_EXIT_FAILURE;
        }
        rc = eval_run(svc, set, rows[i].mode, !rows[i].rerank, eo, &scores[i]);
        api_service_close(svc);
    }
    if (rc)
        return rc;
    if (!scores[0].evaluated) {
        fprintf(stderr, "quarry eval: no query has a relevant judgment\n");
        return CLI_EXIT_FAILURE;
    }
    if (json) {
        qr_buf out;
        qr_buf_init(&out, 1 << 20);
        qr_buf_printf(&out, "{\"queries\":%zu,\"judged_queries\":%zu,\"rows\":[", set->n,
                      scores[0].evaluated);
        for (size_t i = 0; i < nrows; i++) {
            if (i)
                qr_buf_putc(&out, ',');
            print_score_json(&out, rows[i].label,
                             rows[i].mode == RETRIEVAL_MODE_DEFAULT ? configured.mode : rows[i].mode,
                             &scores[i]);
        }
        qr_buf_printf(&out, "],\"search_default\":");
        if (api_search_default_json(&configured, &out))
            qr_buf_printf(&out, "null");
        qr_buf_printf(&out, "}\n");
        qr_status failed = qr_buf_failed(&out);
        if (!failed)
            fputs(qr_buf_str(&out), stdout);
        qr_buf_release(&out);
        if (failed) {
            fprintf(stderr, "quarry eval: out of memory printing the table (%s)\n", qr_status_name(failed));
            return CLI_EXIT_FAILURE;
        }
        return CLI_EXIT_OK;
    }
    printf(
        "quarry eval --compare: %zu of %zu queries have relevant judgments; queries as plain text, documents "
        "at their best chunk; BM25 title weight %g\n",
        scores[0].evaluated, set->n, configured.weight_title);
    if (unknown)
        printf("note: %zu judgments name queries that are not in '%s'\n", unknown, queries);
    printf("%-34s %8s %11s %7s %8s %8s %8s\n", "mode", "nDCG@10", "recall@100", "MRR@10", "MAP@100", "p50 ms",
           "p95 ms");
    for (size_t i = 0; i < nrows; i++) {
        const eval_score *s = &scores[i];
        printf("%-34s %8.4f %11.4f %7.4f %8.4f %8.2f %8.2f\n", rows[i].label, s->mean.ndcg10,
               s->mean.recall100, s->mean.mrr10, s->mean.map100, s->p50_ms, s->p95_ms);
    }
    for (size_t i = 0; i < nrows; i++)
        if (scores[i].degraded)
            printf("note: %s: %zu queries ran in another mode (no words to match, or no query vector)\n",
                   rows[i].label, scores[i].degraded);
    for (size_t i = 0; i < nrows; i++)
        if (scores[i].rerank_fallbacks)
            printf("note: %s: the reranker failed on %zu queries (first-stage order kept)\n", rows[i].label,
                   scores[i].rerank_fallbacks);
    printf("default: %s (%s): %s\n", retrieval_mode_name(configured.mode),
           configured.mode_auto ? "auto" : "set", configured.default_reason);
    printf("latency: embedding, search and the page's JSON, one query at a time\n");
    return CLI_EXIT_OK;
}

int cli_cmd_eval(cli_ctx *ctx)
{
    const char *queries = NULL, *qrels = NULL, *run_path = NULL;
    retrieval_mode mode = RETRIEVAL_MODE_DEFAULT;
    bool compare = false, json = false;
    size_t k = EVAL_K, repeat = 1;
    char err[QR_ERR_LEN];
    for (int i = 1; i < ctx->argc; i++) {
        const char *a = ctx->argv[i];
        if (strcmp(a, "--compare") == 0) {
            compare = true;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if ((strcmp(a, "--queries") == 0 || strcmp(a, "--qrels") == 0 || strcmp(a, "--mode") == 0 ||
                    strcmp(a, "--k") == 0 || strcmp(a, "--repeat") == 0 || strcmp(a, "--run") == 0) &&
                   i + 1 < ctx->argc) {
            const char *v = ctx->argv[++i];
            if (strcmp(a, "--mode") == 0) {
                if (retrieval_mode_parse(v, &mode, err))
                    return cli_usage_error(ctx, "%s", err);
            } else if (strcmp(a, "--k") == 0 || strcmp(a, "--repeat") == 0) {
                char *end = NULL;
                errno = 0;
                unsigned long n = strtoul(v, &end, 10);
                unsigned long max = strcmp(a, "--k") == 0 ? EVAL_K : 100;
                if (errno || !end || *end || *v == '-' || n < 1 || n > max)
                    return cli_usage_error(ctx, "%s takes a whole number from 1 to %lu, not '%s'", a, max, v);
                *(strcmp(a, "--k") == 0 ? &k : &repeat) = n;
            } else if (strcmp(a, "--run") == 0) {
                run_path = v;
            } else if (strcmp(a, "--queries") == 0) {
                queries = v;
            } else {
                qrels = v;
            }
        } else {
            return cli_usage_error(ctx, "unknown or incomplete argument '%s'", a);
        }
    }
    if (!queries || !qrels)
        return cli_usage_error(ctx, "give --queries FILE and --qrels FILE");
    if (compare && mode != RETRIEVAL_MODE_DEFAULT)
        return cli_usage_error(ctx, "--compare runs every mode: leave out --mode");

    eval_set set = {0};
    size_t unknown = 0;
    int rc = read_queries(queries, &set);
    if (!rc)
        rc = read_qrels(qrels, &set, &unknown);
    eval_opts eo = {.k = k, .repeat = repeat, .run = NULL};
    if (!rc && run_path && !(eo.run = fopen(run_path, "w"))) {
        fprintf(stderr, "quarry eval: cannot create '%s': %s\n", run_path, strerror(errno));
        rc = CLI_EXIT_FAILURE;
    }
    api_service *svc = NULL;
    if (rc || compare) {
        if (!rc)
            rc = eval_compare(ctx, &set, unknown, queries, json, &eo);
        goto out;
    }
    if ((rc = service_open(ctx, mode, &svc)))
        goto out;
    const retrieval_opts *ro = api_service_retrieval_opts(svc);
    retrieval_mode effective = mode == RETRIEVAL_MODE_DEFAULT ? ro->mode : mode;
    eval_score s;
    if ((rc = eval_run(svc, &set, mode, false, &eo, &s)))
        goto out;
    if (!s.evaluated) {
        fprintf(stderr, "quarry eval: no query has a relevant judgment in '%s'\n", qrels);
        rc = CLI_EXIT_FAILURE;
        goto out;
    }
    if (json) {
        qr_buf out;
        qr_buf_init(&out, 1 << 16);
        qr_buf_printf(&out, "{\"queries\":%zu,\"judged_queries\":%zu,\"rows\":[", set.n, s.evaluated);
        print_score_json(&out, mode == RETRIEVAL_MODE_DEFAULT ? "default" : retrieval_mode_name(mode),
                         effective, &s);
        qr_buf_printf(&out, "]}\n");
        qr_status failed = qr_buf_failed(&out);
        if (!failed) {
            fputs(qr_buf_str(&out), stdout);
        } else {
            fprintf(stderr, "quarry eval: out of memory printing the result (%s)\n", qr_status_name(failed));
            rc = CLI_EXIT_FAILURE;
        }
        qr_buf_release(&out);
        goto out;
    }
    printf("quarry eval: %zu of %zu queries have relevant judgments; mode %s", s.evaluated, set.n,
           retrieval_mode_name(effective));
    if (mode == RETRIEVAL_MODE_DEFAULT)
        printf(" (the default, %s)", ro->mode_auto ? "auto" : "set");
    if (effective != RETRIEVAL_VECTOR)
        printf(", BM25 title weight %g", ro->weight_title);
    if (effective == RETRIEVAL_HYBRID)
        printf(" (%s fusion, vector weight %g)", retrieval_fusion_name(ro->fusion), ro->vector_weight);
    printf("; queries as plain text, documents at their best chunk\n");
    if (effective != RETRIEVAL_VECTOR)
        printf("BM25 lists: %zu of %zu from the pruned index (retrieval.bm25_path=%s), the rest ranked by "
               "FTS5\n",
               s.pruned, s.evaluated, ro->bm25_pruned ? "pruned" : "fts5");
    if (s.degraded)
        printf("note: %zu queries ran in another mode (no words to match, or no query vector)\n", s.degraded);
    if (unknown)
        printf("note: %zu judgments name queries that are not in '%s'\n", unknown, queries);
    printf("nDCG@10      %.4f\n", s.mean.ndcg10);
    printf("recall@100   %.4f\n", s.mean.recall100);
    printf("MAP@100      %.4f\n", s.mean.map100);
    printf("MRR@10       %.4f\n", s.mean.mrr10);
    printf("latency      p50 %.2f ms, p95 %.2f ms (embedding, search and the page's JSON, one query at a "
           "time, %zu results",
           s.p50_ms, s.p95_ms, k);
    if (repeat > 1)
        printf("; medians of %zu passes", repeat);
    printf(")\n");
    for (size_t c = 0; c < EVAL_STAGES; c++)
        printf("stage %-9s p50 %.3f ms, p95 %.3f ms\n", eval_stage_names[c], s.stage_p50[c], s.stage_p95[c]);
    printf("ndcg@10=%.4f recall@100=%.4f map@100=%.4f mrr@10=%.4f queries=%zu\n", s.mean.ndcg10,
           s.mean.recall100, s.mean.map100, s.mean.mrr10, s.evaluated);
out:
    if (eo.run && fclose(eo.run) && !rc) {
        fprintf(stderr, "quarry eval: cannot write '%s': %s\n", run_path, strerror(errno));
        rc = CLI_EXIT_FAILURE;
    }
    api_service_close(svc);
    eval_set_release(&set);
    return rc;
}

/* ---- quarry index build ---------------------------------------------------------------------- */

int cli_cmd_index(cli_ctx *ctx)
{
    const char *gpu = "auto";
    if (ctx->argc < 2 || strcmp(ctx->argv[1], "build") != 0)
        return cli_usage_error(ctx, "expected 'build'");
    for (int i = 2; i < ctx->argc; i++) {
        const char *a = ctx->argv[i];
        if (strcmp(a, "--gpu") == 0 && i + 1 < ctx->argc)
            gpu = ctx->argv[++i];
        else if (strncmp(a, "--gpu=", 6) == 0)
            gpu = a + 6;
        else
            return cli_usage_error(ctx, "unknown argument '%s'", a);
    }
    if (strcmp(gpu, "auto") != 0 && strcmp(gpu, "on") != 0 && strcmp(gpu, "off") != 0)
        return cli_usage_error(ctx, "--gpu takes auto, on or off");
    index_gpu_mode mode = strcmp(gpu, "on") == 0    ? INDEX_GPU_ON
                          : strcmp(gpu, "off") == 0 ? INDEX_GPU_OFF
                                                    : INDEX_GPU_AUTO;

    char err[QR_ERR_LEN];
    const char *dir = qr_config_settings(ctx->cfg)->data_dir;
    store *s = NULL;
    vindex *v = NULL;
    store_stats ss;
    vindex_opts vo;
    index_sync_report rep;
    int rc = CLI_EXIT_OK;
    vindex_opts_from_config(ctx->cfg, &vo);
    uint64_t t0 = qr_now_ns();
    if (store_open(dir, &s, err) || store_fence(s, err) || store_get_stats(s, &ss, err) ||
        index_build_open(s, dir, &vo, mode, &v, &rep, err)) {
        fprintf(stderr, "quarry index: %s\n", err);
        rc = CLI_EXIT_FAILURE;
    } else if (!v) {
        fprintf(stderr, "quarry index: nothing to index: the store holds no vectors yet (ingest first)\n");
        rc = CLI_EXIT_FAILURE;
    } else {
        if (mode != INDEX_GPU_OFF && rep.gpu_note[0])
            fprintf(stderr, "quarry index: --gpu %s: %s\n", gpu, rep.gpu_note);
        printf("built vector index generation %llu: %s, %zu vectors, store change %lld, %.1f s\n",
               (unsigned long long)rep.generation, rep.type, rep.count, (long long)ss.change_counter,
               (qr_now_ns() - t0) / 1e9);
        if (rep.skipped)
            printf(
                "left out of vector search: %zu chunks without a usable vector (all zero, not finite or of "
                "another dimension; BM25 still finds them)\n",
                rep.skipped);
    }
    if (rc == CLI_EXIT_OK) {
        bm25_opts bo;
        bm25_report br;
        bm25_index *b = NULL;
        bm25_info bi;
        bm25_opts_from_config(ctx->cfg, &bo);
        if (bm25_open(s, dir, &bo, true, &b, &br, err)) {
            fprintf(stderr, "quarry index: %s\n", err);
            rc = CLI_EXIT_FAILURE;
        } else {
            bm25_get_info(b, &bi);
            printf("built BM25 index: %zu chunks, %zu terms, %llu postings, %.1f MB, %.1f s\n", bi.rows,
                   bi.terms, (unsigned long long)bi.postings, bi.file_bytes / 1e6, br.seconds);
        }
        bm25_close(b);
    }
    vindex_close(v);
    store_close(s);
    return rc;
}

/* ---- quarry ask ------------------------------------------------------------------------------ */

/* Streams the answer to a terminal as it is drafted. */
static int ask_print_delta(const infer_event *ev, void *user)
{
    (void)user;
    if (ev->type == INFER_EVENT_DELTA) {
        fwrite(ev->text, 1, ev->len, stdout);
        fflush(stdout);
    }
    return 0;
}

int cli_cmd_ask(cli_ctx *ctx)
{
    const char *as = NULL;
    bool json = false;
    char err[QR_ERR_LEN];
    qr_buf question;
    qr_buf_init(&question, RETRIEVAL_QUERY_MAX);
    for (int i = 1; i < ctx->argc; i++) {
        const char *a = ctx->argv[i];
        if (strcmp(a, "--as") == 0) {
            if (i + 1 >= ctx->argc) {
                qr_buf_release(&question);
                return cli_usage_error(ctx, "--as needs a value");
            }
            as = ctx->argv[++i];
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (a[0] == '-' && a[1] == '-' && a[2]) {
            qr_buf_release(&question);
            return cli_usage_error(ctx, "unknown option '%s'", a);
        } else if ((qr_buf_len(&question) && qr_buf_putc(&question, ' ')) || qr_buf_puts(&question, a)) {
            qr_buf_release(&question);
            return cli_usage_error(ctx, "the question is longer than %d bytes", RETRIEVAL_QUERY_MAX);
        }
    }
    if (!qr_buf_len(&question)) {
        qr_buf_release(&question);
        return cli_usage_error(ctx, "give a QUESTION");
    }

    auth_ctx *auth = NULL;
    auth_principal *pr = NULL;
    api_service *svc = NULL;
    retrieval_result *page = NULL;
    retrieval_caller caller;
    infer_client *client = NULL;
    infer_result answer;
    infer_result_init(&answer);
    infer_passage *passages = NULL;
    int rc = resolve_caller(ctx, as, &auth, &pr, &caller);
    if (rc)
        goto out;
    if ((rc = service_open(ctx, RETRIEVAL_MODE_DEFAULT, &svc)))
        goto out;
    /* the passages POST /v1/ask drafts from for the same caller and question: the same service,
     * the same count (server.chat_k), trimmed twice */
    rc = CLI_EXIT_FAILURE;
    if (api_service_passages(svc, &caller, qr_buf_str(&question),
                             (size_t)qr_config_settings(ctx->cfg)->server_chat_k, &page, &passages, err)) {
        fprintf(stderr, "quarry ask: %s\n", err);
        goto out;
    }
    if (infer_client_new(ctx->cfg, &client, err)) {
        fprintf(stderr, "quarry ask: %s\n", err);
        goto out;
    }
    bool stream = !json && isatty(STDOUT_FILENO);
    infer_request ireq = {
        .question = qr_buf_str(&question),
        .passages = passages,
        .passage_count = page->nhits,
        .on_event = stream ? ask_print_delta : NULL,
    };
    if (infer_answer(client, &ireq, &answer, err)) {
        fprintf(stderr, "quarry ask: %s\n", err);
        goto out;
    }
    if (json) {
        qr_buf out;
        qr_buf_init(&out, (size_t)1 << 26);
        qr_buf_puts(&out, "{\"answer\":");
        qr_json_escape(&out, answer.text, strlen(answer.text));
        qr_buf_printf(&out, ",\"mode\":\"%s\"", infer_mode_name(answer.mode));
        if (answer.reason)
            qr_buf_printf(&out, ",\"reason\":\"%s\"", answer.reason);
        if (page->rerank != RETRIEVAL_RERANK_OFF && !qr_buf_puts(&out, ",\"rerank\":"))
            retrieval_rerank_json(page, &out);
        qr_buf_puts(&out, ",\"citations\":[");
        for (size_t i = 0; i < answer.cited_count; i++) {
            const infer_source *s = &answer.sources[answer.cited[i]];
            qr_buf_printf(&out, "%s{\"number\":%d,\"chunk_id\":%lld,\"doc_id\":", i ? "," : "", s->number,
                          (long long)s->chunk_id);
            qr_json_escape(&out, s->doc_id, strlen(s->doc_id));
            qr_buf_puts(&out, ",\"title\":");
            qr_json_escape(&out, s->title, strlen(s->title));
            qr_buf_puts(&out, ",\"uri\":");
            qr_json_escape(&out, s->uri, strlen(s->uri));
            qr_buf_printf(&out, ",\"start\":%zu,\"end\":%zu}", s->start, s->end);
        }
        if (qr_buf_puts(&out, "]}\n")) {
            fprintf(stderr, "quarry ask: the answer is too large to print as JSON\n");
        } else {
            fputs(qr_buf_str(&out), stdout);
            rc = CLI_EXIT_OK;
        }
        qr_buf_release(&out);
        goto out;
    }
    if (!stream || answer.mode == INFER_MODE_EXTRACTIVE)
        fputs(answer.text, stdout);
    fputc('\n', stdout);
    print_rerank(page);
    if (answer.mode == INFER_MODE_EXTRACTIVE)
        fprintf(stderr, "quarry ask: extractive answer (%s%s%s)\n", answer.reason,
                answer.detail && *answer.detail ? ": " : "", answer.detail ? answer.detail : "");
    printf("\nSources:\n");
    for (size_t i = 0; i < answer.cited_count; i++) {
        const infer_source *s = &answer.sources[answer.cited[i]];
        printf("  [%d] %s%s%s (%s)\n", s->number, *s->title ? s->title : s->doc_id, *s->headings ? " > " : "",
               s->headings, *s->uri ? s->uri : s->doc_id);
    }
    if (!answer.cited_count)
        printf("  (none cited; %zu passages retrieved)\n", answer.source_count);
    rc = CLI_EXIT_OK;
out:
    infer_result_release(&answer);
    infer_client_free(client);
    free(passages);
    retrieval_result_free(page);
    api_service_close(svc);
    auth_principal_release(pr);
    auth_free(auth);
    qr_buf_release(&question);
    return rc;
}
