/*
 * index/store_jobs_pg.c: background jobs on a routed store (store.backend = postgres, issue #24).
 * Every store_job_* call of a routed handle goes to PostgreSQL's quarry.jobs (pgstore_job_*), so
 * that a job one node accepted behind a load balancer is read, listed, updated and pruned through
 * any node. Its staged upload and its running stay on the node that accepted it: the job records
 * that node's name, "<hostname>:<data directory>" (the shape of the maintainer's feed
 * registration, with the directory made absolute, so that a node started again with another
 * spelling of its directory finds its jobs), and store_job_unfinished lists only this node's.
 *
 * The calls run on a connection of the process's own to the primary (store_link.c). A call on a
 * connection that had served before and turns out lost is tried once more on a new one, but for an
 * insertion: the other calls may run twice (an update writes absolute values, a result recorded
 * again replaces itself without moving the counts, a prune deletes what is left), while an
 * insertion whose commit happened would come back as a taken id.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/pgstore.h"
#include "index/store_int.h"

static store_link g_link = STORE_LINK_INIT("jobs");

typedef enum { JOB_INSERT, JOB_GET, JOB_UPDATE, JOB_RESULTS, JOB_LIST, JOB_UNFINISHED, JOB_PRUNE } job_op;

/* One call's arguments, whichever the operation. */
typedef struct {
    const store_job *job;
    const char *id, *staged_in, *node, *state, *after_id;
    store_job *out;
    char **staged, **results;
    const store_job_result *r;
    size_t nr, limit;
    int64_t ms;
    store_job **jobs;
    size_t *n, *pruned;
    bool *more;
} job_args;

typedef struct {
    job_op op;
    job_args *a;
} job_call_ctx;

static qr_status run_op(pgstore *pg, void *ctx, char *err)
{
    job_call_ctx *c = ctx;
    job_args *a = c->a;
    switch (c->op) {
    case JOB_INSERT: return pgstore_job_insert(pg, a->job, a->staged_in, a->node, err);
    case JOB_GET: return pgstore_job_get(pg, a->id, a->out, a->staged, a->results, err);
    case JOB_UPDATE: return pgstore_job_update(pg, a->job, err);
    case JOB_RESULTS: return pgstore_job_add_results(pg, a->id, a->r, a->nr, err);
    case JOB_LIST:
        return pgstore_job_list(pg, a->state, a->ms, a->after_id, a->limit, a->jobs, a->n, a->more, err);
    case JOB_UNFINISHED: return pgstore_job_unfinished(pg, a->node, a->jobs, a->n, err);
    case JOB_PRUNE: return pgstore_job_prune(pg, a->ms, a->pruned, err);
    }
    return qr_fail(err, QR_EINTERNAL, "jobs: unknown operation %d", (int)c->op);
}

static qr_status jobs_call(job_op op, job_args *a, char *err)
{
    job_call_ctx c = {op, a};
    return store_link_call(&g_link, run_op, &c, op != JOB_INSERT, err);
}

/* This node's name into *out (free it): "<hostname>:<absolute data directory>". */
static qr_status node_name(store *s, char **out, char *err)
{
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    char *abs = realpath(s->dir, NULL);
    const char *dir = abs ? abs : s->dir;
    size_t len = strlen(host) + 1 + strlen(dir) + 1;
    *out = malloc(len);
    if (*out)
        snprintf(*out, len, "%s:%s", host, dir);
    free(abs);
    return *out ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory");
}

qr_status store_jobs_pg_insert(store *s, const store_job *job, const char *staged, char *err)
{
    job_args a = {.job = job, .staged_in = staged};
    char *node = NULL;
    qr_status st = node_name(s, &node, err);
    if (!st) {
        a.node = node;
        st = jobs_call(JOB_INSERT, &a, err);
    }
    free(node);
    return st;
}

qr_status store_jobs_pg_get(const char *id, store_job *out, char **staged, char **results, char *err)
{
    job_args a = {.id = id, .out = out, .staged = staged, .results = results};
    return jobs_call(JOB_GET, &a, err);
}

qr_status store_jobs_pg_update(const store_job *job, char *err)
{
    job_args a = {.job = job};
    return jobs_call(JOB_UPDATE, &a, err);
}

qr_status store_jobs_pg_add_results(const char *id, const store_job_result *r, size_t n, char *err)
{
    job_args a = {.id = id, .r = r, .nr = n};
    return jobs_call(JOB_RESULTS, &a, err);
}

qr_status store_jobs_pg_list(const char *state, int64_t after_ms, const char *after_id, size_t limit,
                             store_job **out, size_t *n, bool *more, char *err)
{
    job_args a = {.state = state,
                  .ms = after_ms,
                  .after_id = after_id,
                  .limit = limit,
                  .jobs = out,
                  .n = n,
                  .more = more};
    return jobs_call(JOB_LIST, &a, err);
}

qr_status store_jobs_pg_unfinished(store *s, store_job **out, size_t *n, char *err)
{
    job_args a = {.jobs = out, .n = n};
    char *node = NULL;
    qr_status st = node_name(s, &node, err);
    if (!st) {
        a.node = node;
        st = jobs_call(JOB_UNFINISHED, &a, err);
    }
    free(node);
    return st;
}

qr_status store_jobs_pg_prune(int64_t before_ms, size_t *pruned, char *err)
{
    job_args a = {.ms = before_ms, .pruned = pruned};
    return jobs_call(JOB_PRUNE, &a, err);
}
