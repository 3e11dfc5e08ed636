/*
 * Background jobs: ingestion of large or many-document uploads, and vector index rebuilds. A
 * request that would take long answers 202 with a job id at once; one runner thread works the
 * queue in order (writes to the store are serialised anyway) and records progress that
 * GET /v1/jobs/{id} reports. Jobs live in memory: the last JOBS_KEPT are kept, oldest finished
 * first forgotten, and a restart forgets them (their documents are in the store or not, each
 * wholly). On shutdown the runner stops after the document in progress; what is left ends as
 * "cancelled".
 */
#define _GNU_SOURCE /* asprintf, memmem, strptime, timegm, explicit_bzero */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api_int.h"

#define JOBS_KEPT 1000

typedef enum { JOB_INGEST, JOB_REBUILD } job_kind;

typedef struct api_job {
    char id[33];
    job_kind kind;
    const char *state; /* "queued", "running", "succeeded", "failed", "cancelled" */
    char user[300];
    api_job_doc *docs;
    size_t ndocs, done, failed, chunks;
    json_t *results;
    int64_t created_ms, started_ms, finished_ms;
    char error[QR_ERR_LEN];
    struct api_job *next; /* in the queue */
} api_job;

struct api_jobs {
    api_server *srv;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool started, stop;
    api_job **all; /* oldest first */
    size_t nall;
    api_job *head, *tail;
};

void api_job_doc_release(api_job_doc *d)
{
    if (!d)
        return;
    free(d->doc_id);
    free(d->title);
    free(d->uri);
    free(d->content_type);
    free(d->filename);
    free(d->metadata_json);
    for (size_t i = 0; i < d->nacl; i++)
        free(d->acl[i]);
    free(d->acl);
    free(d->bytes);
    memset(d, 0, sizeof(*d));
}

static void job_free(api_job *job)
{
    for (size_t i = 0; i < job->ndocs; i++)
        api_job_doc_release(&job->docs[i]);
    free(job->docs);
    json_decref(job->results);
    free(job);
}

const char *api_put_result_name(store_put_result r)
{
    switch (r) {
    case STORE_ADDED: return "added";
    case STORE_UPDATED: return "updated";
    case STORE_ACL_UPDATED: return "acl_updated";
    case STORE_UNCHANGED: return "unchanged";
    }
    return "?";
}

qr_status api_ingest_one(api_server *srv, const api_job_doc *d, store_put_result *result, size_t *nchunks,
                         char *err)
{
    ingest_source src = {
        .doc_id = d->doc_id,
        .title = d->title,
        .uri = d->uri,
        .declared_type = d->content_type,
        .filename = d->filename,
        .metadata_json = d->metadata_json,
        .acl = (const char *const *)d->acl,
        .nacl = d->nacl,
        .bytes = d->bytes ? d->bytes : "",
        .len = d->len,
    };
    pthread_mutex_lock(&srv->ingest_lock);
    qr_status st = ingest_put(srv->ingest, &src, result, nchunks, err);
    pthread_mutex_unlock(&srv->ingest_lock);
    api_metrics_ingest(srv->metrics, st ? "failed" : api_put_result_name(*result), st ? 0 : *nchunks);
    return st;
}

/* ---- the runner ------------------------------------------------------------------------------ */

static void run_ingest(api_jobs *j, api_job *job)
{
    for (size_t i = 0; i < job->ndocs; i++) {
        pthread_mutex_lock(&j->lock);
        bool stop = j->stop;
        pthread_mutex_unlock(&j->lock);
        if (stop) {
            snprintf(job->error, sizeof(job->error), "the server shut down after %zu of %zu documents", i,
                     job->ndocs);
            return;
        }
        char err[QR_ERR_LEN];
        store_put_result result = STORE_UNCHANGED;
        size_t nchunks = 0;
        qr_status st = api_ingest_one(j->srv, &job->docs[i], &result, &nchunks, err);
        json_t *row =
            st ? json_pack("{s:s,s:s,s:s}", "doc_id", job->docs[i].doc_id, "status", "failed", "error", err)
               : json_pack("{s:s,s:s,s:s,s:I}", "doc_id", job->docs[i].doc_id, "status", "ok", "result",
                           api_put_result_name(result), "chunks", (json_int_t)nchunks);
        pthread_mutex_lock(&j->lock);
        json_array_append_new(job->results, row);
        job->done++;
        if (st)
            job->failed++;
        else
            job->chunks += nchunks;
        pthread_mutex_unlock(&j->lock);
        /* the bytes are written (or refused): free them now, not when the job is forgotten */
        free(job->docs[i].bytes);
        job->docs[i].bytes = NULL;
    }
}

static void *runner(void *arg)
{
    api_jobs *j = arg;
    pthread_mutex_lock(&j->lock);
    for (;;) {
        while (!j->stop && !j->head)
            pthread_cond_wait(&j->cond, &j->lock);
        if (j->stop)
            break;
        api_job *job = j->head;
        j->head = job->next;
        if (!j->head)
            j->tail = NULL;
        job->state = "running";
        job->started_ms = qr_wall_ms();
        pthread_mutex_unlock(&j->lock);

        qr_log(QR_LOG_INFO, "jobs", "job %s started (%s, %zu documents, by %s)", job->id,
               job->kind == JOB_INGEST ? "ingest" : "rebuild", job->ndocs, job->user);
        char err[QR_ERR_LEN] = "";
        qr_status st = QR_OK;
        index_sync_report rep;
        memset(&rep, 0, sizeof(rep));
        if (job->kind == JOB_INGEST)
            run_ingest(j, job);
        /* after ingestion the vector index takes in the new chunks; a rebuild publishes a new
         * generation from every stored vector */
        st = api_index_sync(j->srv, job->kind == JOB_REBUILD, &rep, err);

        pthread_mutex_lock(&j->lock);
        job->finished_ms = qr_wall_ms();
        if (job->kind == JOB_INGEST && job->done < job->ndocs)
            job->state = "cancelled";
        else if (st) {
            job->state = "failed";
            snprintf(job->error, sizeof(job->error), "%s", err);
        } else if (job->kind == JOB_INGEST && job->failed)
            job->state = job->failed == job->ndocs ? "failed" : "succeeded";
        else
            job->state = "succeeded";
        if (job->kind == JOB_REBUILD && !st)
            json_array_append_new(job->results,
                                  json_pack("{s:I,s:s,s:I,s:I}", "generation", (json_int_t)rep.generation,
                                            "type", rep.type, "vectors", (json_int_t)rep.count, "skipped",
                                            (json_int_t)rep.skipped));
        qr_log(QR_LOG_INFO, "jobs", "job %s %s", job->id, job->state);
    }
    /* whatever is still queued will not run */
    for (api_job *q = j->head; q; q = q->next) {
        q->state = "cancelled";
        q->finished_ms = qr_wall_ms();
        snprintf(q->error, sizeof(q->error), "the server shut down before the job started");
    }
    j->head = j->tail = NULL;
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

qr_status api_jobs_new(api_server *srv, api_jobs **out, char *err)
{
    api_jobs *j = calloc(1, sizeof(*j));
    if (!j)
        return qr_fail(err, QR_ENOMEM, "out of memory creating the job runner");
    j->srv = srv;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->cond, NULL);
    *out = j;
    return QR_OK;
}

qr_status api_jobs_start(api_jobs *j, char *err)
{
    j->stop = false;
    if (pthread_create(&j->thread, NULL, runner, j) != 0)
        return qr_fail(err, QR_EINTERNAL, "cannot start the job runner thread");
    j->started = true;
    return QR_OK;
}

void api_jobs_stop(api_jobs *j)
{
    if (!j || !j->started)
        return;
    pthread_mutex_lock(&j->lock);
    j->stop = true;
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->lock);
    pthread_join(j->thread, NULL);
    j->started = false;
}

void api_jobs_free(api_jobs *j)
{
    if (!j)
        return;
    api_jobs_stop(j);
    for (size_t i = 0; i < j->nall; i++)
        job_free(j->all[i]);
    free(j->all);
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->cond);
    free(j);
}

static bool finished(const api_job *job)
{
    return job->finished_ms != 0;
}

/* Adds a job to the table and the queue; j->lock held. */
static qr_status enqueue(api_jobs *j, api_job *job, char *err)
{
    if (j->stop || !j->started)
        return qr_fail(err, QR_EUNAVAILABLE, "the job runner is not running (shutting down)");
    if (j->nall == JOBS_KEPT) {
        size_t i = 0;
        while (i < j->nall && !finished(j->all[i]))
            i++;
        if (i == j->nall)
            return qr_fail(err, QR_ELIMIT, "%d jobs are queued or running; retry later", JOBS_KEPT);
        job_free(j->all[i]);
        memmove(&j->all[i], &j->all[i + 1], (j->nall - i - 1) * sizeof(*j->all));
        j->nall--;
    }
    if (!j->all && !(j->all = calloc(JOBS_KEPT, sizeof(*j->all))))
        return qr_fail(err, QR_ENOMEM, "out of memory queueing a job");
    j->all[j->nall++] = job;
    if (j->tail)
        j->tail->next = job;
    else
        j->head = job;
    j->tail = job;
    pthread_cond_signal(&j->cond);
    return QR_OK;
}

static api_job *job_new(job_kind kind, const char *user)
{
    api_job *job = calloc(1, sizeof(*job));
    if (!job || !(job->results = json_array())) {
        free(job);
        return NULL;
    }
    api_random_hex(job->id, 16);
    job->kind = kind;
    job->state = "queued";
    job->created_ms = qr_wall_ms();
    snprintf(job->user, sizeof(job->user), "%s", user);
    return job;
}

qr_status api_jobs_submit_ingest(api_jobs *j, api_job_doc *docs, size_t ndocs, const char *user, char id[33],
                                 char *err)
{
    api_job *job = job_new(JOB_INGEST, user);
    if (!job) {
        for (size_t i = 0; i < ndocs; i++)
            api_job_doc_release(&docs[i]);
        free(docs);
        return qr_fail(err, QR_ENOMEM, "out of memory queueing a job");
    }
    job->docs = docs;
    job->ndocs = ndocs;
    pthread_mutex_lock(&j->lock);
    qr_status st = enqueue(j, job, err);
    if (!st)
        memcpy(id, job->id, 33);
    pthread_mutex_unlock(&j->lock);
    if (st)
        job_free(job);
    return st;
}

qr_status api_jobs_submit_rebuild(api_jobs *j, const char *user, char id[33], char *err)
{
    api_job *job = job_new(JOB_REBUILD, user);
    if (!job)
        return qr_fail(err, QR_ENOMEM, "out of memory queueing a job");
    pthread_mutex_lock(&j->lock);
    qr_status st = enqueue(j, job, err);
    if (!st)
        memcpy(id, job->id, 33);
    pthread_mutex_unlock(&j->lock);
    if (st)
        job_free(job);
    return st;
}

static json_t *iso_time(int64_t ms)
{
    if (!ms)
        return json_null();
    char buf[96];
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return json_string(buf);
}

json_t *api_jobs_describe(api_jobs *j, const char *id)
{
    json_t *out = NULL;
    pthread_mutex_lock(&j->lock);
    for (size_t i = 0; i < j->nall && !out; i++) {
        api_job *job = j->all[i];
        if (strcmp(job->id, id) != 0)
            continue;
        size_t total = job->kind == JOB_INGEST ? job->ndocs : 1;
        size_t done = job->kind == JOB_INGEST ? job->done : finished(job) ? 1 : 0;
        out = json_pack("{s:s,s:s,s:s,s:s,s:{s:I,s:I,s:I,s:I,s:f},s:o,s:o,s:o,s:o,s:s?}", "id", job->id,
                        "kind", job->kind == JOB_INGEST ? "ingest" : "rebuild", "state", job->state, "user",
                        job->user, "progress", "done", (json_int_t)done, "total", (json_int_t)total, "failed",
                        (json_int_t)job->failed, "chunks", (json_int_t)job->chunks, "percent",
                        total ? 100.0 * (double)done / (double)total : 100.0, "created",
                        iso_time(job->created_ms), "started", iso_time(job->started_ms), "finished",
                        iso_time(job->finished_ms), "results", json_deep_copy(job->results), "error",
                        *job->error ? job->error : NULL);
    }
    pthread_mutex_unlock(&j->lock);
    return out;
}

/* ---- GET /v1/jobs/{id} and POST /v1/index/rebuild ---------------------------------------------- */

void api_h_job_get(api_req *r)
{
    const char *id = r->param;
    size_t n = strlen(id);
    bool ok = n == 32;
    for (size_t i = 0; ok && i < n; i++)
        ok = (id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f');
    if (!ok) {
        api_reply_error(r, 400, "invalid_argument", "a job id is 32 lowercase hex digits");
        return;
    }
    json_t *job = api_jobs_describe(r->srv->jobs, id);
    if (!job) {
        api_reply_error(r, 404, "not_found", "no job '%s' (jobs are kept in memory until a restart)", id);
        return;
    }
    api_reply_json(r, 200, job);
}

void api_h_rebuild(api_req *r)
{
    char id[33], err[QR_ERR_LEN];
    qr_status st = api_jobs_submit_rebuild(r->srv->jobs, r->user, id, err);
    if (st) {
        api_reply_status(r, st, err);
        return;
    }
    char url[64];
    snprintf(url, sizeof(url), "/v1/jobs/%s", id);
    api_audit_record(r->srv->audit, r, NULL, NULL, 0, "index_rebuild");
    api_reply_json(r, 202, json_pack("{s:s,s:s,s:s}", "job_id", id, "status_url", url, "state", "queued"));
    api_reply_header(r, "Location", url);
}
