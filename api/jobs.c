/*
 * Background jobs: ingestion of large or many-document uploads, and vector index rebuilds. A
 * request that would take long answers 202 with a job id at once; one runner thread works the
 * queue in order (writes to the store are serialised anyway) and records progress that
 * GET /v1/jobs/{id} and GET /v1/jobs report.
 *
 * Jobs are durable. Each lives in the store's jobs table (store_job_*), and an upload's documents
 * are staged as one file, <data.dir>/jobs/<job-id>/upload (each document's metadata, offset,
 * size and SHA-256 in the row's manifest), written and synced, directories included, and the row
 * committed before the 202 is sent: what was acknowledged survives a crash. The runner records
 * each document's result with the job's counts in one transaction, so after a crash or a
 * restart a job left queued, running or interrupted resumes at its first document without a
 * result (a document written just before a crash comes back "unchanged": documents are
 * idempotent by content hash). A job whose staged files are missing or damaged is marked failed
 * with the reason. A finished job's staged files are deleted when it finishes; at start, any
 * directory under jobs/ that no unfinished job owns is removed (crash leftovers), with a log
 * line. Finished jobs are kept for server.job_retention_s, then the runner prunes them.
 *
 * On shutdown the runner stops after the document in progress; the job becomes "interrupted"
 * and queued jobs stay "queued", both to resume at the next start.
 */
#define _GNU_SOURCE /* asprintf, memmem, strptime, timegm, explicit_bzero */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/api_int.h"

#define JOBS_QUEUED_MAX  1000
#define LIST_DEFAULT     50
#define LIST_MAX         1000
#define STAGED_FILE      "upload" /* in <data.dir>/jobs/<job-id>/ */
#define RESULTS_BATCH    64       /* documents' results recorded in one transaction, at most */
#define RESULTS_FLUSH_MS 250      /* and at least this often */

/* A job waiting in the runner's queue; everything else about it is in the store. */
typedef struct api_job {
    char id[33];
    struct api_job *next;
} api_job;

struct api_jobs {
    api_server *srv;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool started, stop;
    api_job *head, *tail;
    size_t queued;
    char dir[PATH_MAX]; /* <data.dir>/jobs */
    int64_t retention_ms;
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

static void release_docs(api_job_doc *docs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        api_job_doc_release(&docs[i]);
    free(docs);
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

/* ---- staged files ------------------------------------------------------------------------------ */

static bool is_job_id(const char *id)
{
    size_t n = strlen(id);
    bool ok = n == 32;
    for (size_t i = 0; ok && i < n; i++)
        ok = (id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f');
    return ok;
}

/* Removes a job's staging directory and the files in it (it holds nothing else). */
static qr_status remove_staged(const char *path, char *err)
{
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT ? QR_OK : qr_fail(err, QR_EIO, "cannot open '%s': %s", path, strerror(errno));
    qr_status st = QR_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) != 0 && !st)
            st = qr_fail(err, QR_EIO, "cannot remove '%s/%s': %s", path, e->d_name, strerror(errno));
    }
    closedir(d);
    if (!st && rmdir(path) != 0)
        st = qr_fail(err, QR_EIO, "cannot remove '%s': %s", path, strerror(errno));
    return st;
}

static void drop_staged(api_jobs *j, const char *id)
{
    char path[PATH_MAX + 40], err[QR_ERR_LEN];
    snprintf(path, sizeof(path), "%s/%s", j->dir, id);
    if (remove_staged(path, err))
        qr_log(QR_LOG_WARN, "jobs", "job %s: %s", id, err);
}

static json_t *manifest_entry(const api_job_doc *d, size_t offset, const char *sha)
{
    json_t *acl = json_array();
    for (size_t i = 0; acl && i < d->nacl; i++)
        json_array_append_new(acl, json_string(d->acl[i]));
    return json_pack("{s:s,s:s?,s:s?,s:s?,s:s?,s:s?,s:o*,s:I,s:I,s:s}", "doc_id", d->doc_id, "title",
                     d->title, "uri", d->uri, "content_type", d->content_type, "filename", d->filename,
                     "metadata", d->metadata_json, "acl", acl, "offset", (json_int_t)offset, "size",
                     (json_int_t)d->len, "sha256", sha);
}

/* Stages docs as <jobs>/<id>/upload, their bytes back to back: the file synced, then its
 * directory and the jobs directory (one file, so that an upload of thousands of documents costs
 * three syncs, not thousands). *manifest receives the job's manifest (JSON text, free() it): per
 * document its fields, offset, size and SHA-256. On error nothing is left. */
static qr_status stage(api_jobs *j, const char *id, const api_job_doc *docs, size_t n, char **manifest,
                       char *err)
{
    char dir[PATH_MAX + 40], path[PATH_MAX + 80];
    snprintf(dir, sizeof(dir), "%s/%s", j->dir, id);
    snprintf(path, sizeof(path), "%s/" STAGED_FILE, dir);
    json_t *man = json_array();
    qr_status st = QR_OK;
    int fd = -1;
    *manifest = NULL;
    if (!man)
        return qr_fail(err, QR_ENOMEM, "out of memory staging a job");
    if (mkdir(dir, 0700) != 0) {
        json_decref(man);
        return qr_fail(err, qr_errno_status(errno), "cannot create the job's staging directory '%s': %s", dir,
                       strerror(errno));
    }
    if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
        st = qr_fail(err, qr_errno_status(errno), "cannot create '%s': %s", path, strerror(errno));
    size_t offset = 0;
    for (size_t i = 0; i < n && !st; i++) {
        char sha[65];
        const char *bytes = docs[i].bytes ? docs[i].bytes : "";
        if ((st = qr_write_all(fd, bytes, docs[i].len, path, err)))
            break;
        api_sha256_hex(bytes, docs[i].len, sha);
        if (json_array_append_new(man, manifest_entry(&docs[i], offset, sha)) != 0)
            st = qr_fail(err, QR_ENOMEM, "out of memory staging a job");
        offset += docs[i].len;
    }
    if (fd >= 0) {
        qr_status cst = st ? (close(fd), QR_OK) : qr_file_sync_close(fd, path, err);
        st = st ? st : cst;
    }
    if (!st && !(st = qr_fsync_path(dir, true, err)) && !(st = qr_fsync_path(j->dir, true, err)) &&
        !(*manifest = json_dumps(man, JSON_COMPACT)))
        st = qr_fail(err, QR_ENOMEM, "out of memory staging a job");
    json_decref(man);
    if (st) {
        char e2[QR_ERR_LEN];
        if (remove_staged(dir, e2))
            qr_log(QR_LOG_WARN, "jobs", "%s", e2);
    }
    return st;
}

static char *dup_field(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? strdup(v) : NULL;
}

/* Opens a job's staged upload and checks its size against the manifest (cheap: before a job
 * resumes, so that a job whose file is lost fails before writing half of what is left). */
static qr_status open_staged(api_jobs *j, const char *id, json_t *man, int *fd, char *err)
{
    char path[PATH_MAX + 80];
    snprintf(path, sizeof(path), "%s/%s/" STAGED_FILE, j->dir, id);
    json_int_t want = 0;
    for (size_t i = 0; i < json_array_size(man); i++) {
        json_t *e = json_array_get(man, i);
        json_int_t off = json_integer_value(json_object_get(e, "offset"));
        json_int_t size = json_integer_value(json_object_get(e, "size"));
        if (!json_string_value(json_object_get(e, "doc_id")) || off != want || size < 0)
            return qr_fail(err, QR_EIO, "the manifest of job %s is damaged", id);
        want += size;
    }
    struct stat sb = {0};
    if ((*fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return qr_fail(err, QR_EIO, "staged file '%s' is missing: %s", path, strerror(errno));
    if (fstat(*fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (json_int_t)sb.st_size != want) {
        close(*fd);
        *fd = -1;
        return qr_fail(err, QR_EIO, "staged file '%s' is damaged: %lld bytes, %lld expected", path,
                       (long long)sb.st_size, (long long)want);
    }
    return QR_OK;
}

/* Reads a staged document back into d (released by the caller), checking its hash. */
static qr_status load_staged(api_jobs *j, const char *id, int fd, json_t *entry, api_job_doc *d, char *err)
{
    const char *doc = json_string_value(json_object_get(entry, "doc_id"));
    size_t off = (size_t)json_integer_value(json_object_get(entry, "offset"));
    size_t size = (size_t)json_integer_value(json_object_get(entry, "size"));
    if (!(d->bytes = malloc(size + 1)))
        return qr_fail(err, QR_ENOMEM, "out of memory loading staged document '%s'", doc);
    size_t got = 0;
    while (got < size) {
        ssize_t k = pread(fd, d->bytes + got, size - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return qr_fail(err, QR_EIO, "cannot read staged document '%s' of job %s: %s", doc, id,
                           k < 0 ? strerror(errno) : "the file is shorter than its manifest");
        got += (size_t)k;
    }
    d->bytes[size] = '\0';
    d->len = size;
    char sha[65];
    api_sha256_hex(d->bytes, d->len, sha);
    const char *want = json_string_value(json_object_get(entry, "sha256"));
    if (!want || strcmp(sha, want) != 0)
        return qr_fail(err, QR_EIO,
                       "staged file '%s/%s/" STAGED_FILE "' is damaged: document '%s' (bytes %zu to %zu) "
                       "differs from its SHA-256",
                       j->dir, id, doc, off, off + size);
    d->doc_id = dup_field(entry, "doc_id");
    d->title = dup_field(entry, "title");
    d->uri = dup_field(entry, "uri");
    d->content_type = dup_field(entry, "content_type");
    d->filename = dup_field(entry, "filename");
    d->metadata_json = dup_field(entry, "metadata");
    json_t *acl = json_object_get(entry, "acl");
    size_t nacl = json_array_size(acl);
    if (nacl && !(d->acl = calloc(nacl, sizeof(*d->acl))))
        return qr_fail(err, QR_ENOMEM, "out of memory loading a staged document");
    for (size_t i = 0; i < nacl; i++) {
        const char *p = json_string_value(json_array_get(acl, i));
        if (!p || !(d->acl[d->nacl] = strdup(p)))
            return qr_fail(err, QR_ENOMEM, "out of memory loading a staged document");
        d->nacl++;
    }
    if (!d->doc_id)
        return qr_fail(err, QR_ENOMEM, "out of memory loading a staged document");
    return QR_OK;
}

/* ---- the runner ------------------------------------------------------------------------------ */

/* A store handle for a write to the jobs tables, under the server's writer lock: the job runner
 * writes documents back to back, and a job's row written through another connection beside it
 * would only get SQLite's busy retries, which can starve for as long as a job runs. */
static store *writer_acquire(api_jobs *j)
{
    pthread_mutex_lock(&j->srv->ingest_lock);
    return api_store_acquire(j->srv);
}

static void writer_release(api_jobs *j, store *s)
{
    api_store_release(j->srv, s);
    pthread_mutex_unlock(&j->srv->ingest_lock);
}

static qr_status save(api_jobs *j, const store_job *row, char *err)
{
    store *s = writer_acquire(j);
    qr_status st = store_job_update(s, row, err);
    writer_release(j, s);
    return st;
}

static bool stopping(api_jobs *j)
{
    pthread_mutex_lock(&j->lock);
    bool stop = j->stop;
    pthread_mutex_unlock(&j->lock);
    return stop;
}

/* Results written to the store but not yet recorded with the job (run_ingest). */
typedef struct {
    store_job_result r[RESULTS_BATCH];
    char *text[RESULTS_BATCH];
    size_t n;
    int64_t since_ms; /* when the first of them was written */
} pending_results;

/* Records the pending results and moves row's counts; on failure *reason says why. */
static qr_status flush_results(api_jobs *j, store_job *row, pending_results *p, char *reason)
{
    char err[QR_ERR_LEN];
    qr_status st = QR_OK;
    if (p->n) {
        store *s = writer_acquire(j);
        st = store_job_add_results(s, row->id, p->r, p->n, err);
        writer_release(j, s);
    }
    if (st)
        snprintf(reason, QR_ERR_LEN, "cannot record the job's progress: %.400s", err);
    for (size_t i = 0; i < p->n; i++) {
        if (!st) {
            row->done++;
            row->failed += p->r[i].failed;
            row->chunks += p->r[i].chunks;
        }
        free(p->text[i]);
    }
    p->n = 0;
    return st;
}

/* Ingests the job's documents from row->done on. Returns true when it was interrupted by a
 * shutdown; *reason is set when the job cannot go on (staged files, the store). Results are
 * recorded in batches (RESULTS_BATCH documents or RESULTS_FLUSH_MS, whichever comes first): a
 * crash loses at most a batch of results, whose documents are written again after the restart
 * and come back "unchanged" (the same bytes), at a fraction of the cost of a commit each. */
static bool run_ingest(api_jobs *j, store_job *row, const char *staged, char *reason)
{
    json_t *man = json_loads(staged, 0, NULL);
    bool interrupted = false;
    int fd = -1;
    pending_results *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(reason, QR_ERR_LEN, "out of memory running job %s", row->id);
        goto out;
    }
    if (!json_is_array(man) || (int64_t)json_array_size(man) != row->docs) {
        snprintf(reason, QR_ERR_LEN, "the manifest of job %s is damaged", row->id);
        goto out;
    }
    if (row->done < row->docs && open_staged(j, row->id, man, &fd, reason))
        goto out;
    for (size_t i = (size_t)row->done; i < json_array_size(man); i++) {
        if (stopping(j)) {
            interrupted = true;
            break;
        }
        char err[QR_ERR_LEN];
        api_job_doc d = {0};
        if (load_staged(j, row->id, fd, json_array_get(man, i), &d, reason)) {
            api_job_doc_release(&d);
            break;
        }
        store_put_result result = STORE_UNCHANGED;
        size_t nchunks = 0;
        qr_status st = api_ingest_one(j->srv, &d, &result, &nchunks, err);
        json_t *res = st ? json_pack("{s:s,s:s,s:s}", "doc_id", d.doc_id, "status", "failed", "error", err)
                         : json_pack("{s:s,s:s,s:s,s:I}", "doc_id", d.doc_id, "status", "ok", "result",
                                     api_put_result_name(result), "chunks", (json_int_t)nchunks);
        char *text = res ? json_dumps(res, JSON_COMPACT) : NULL;
        json_decref(res);
        api_job_doc_release(&d);
        if (!text) {
            snprintf(reason, QR_ERR_LEN, "out of memory recording a result of job %s", row->id);
            break;
        }
        if (!p->n)
            p->since_ms = qr_wall_ms();
        p->text[p->n] = text;
        p->r[p->n++] = (store_job_result){(int64_t)i, st != QR_OK, st ? 0 : (int64_t)nchunks, text};
        if ((p->n == RESULTS_BATCH || qr_wall_ms() - p->since_ms >= RESULTS_FLUSH_MS) &&
            flush_results(j, row, p, reason))
            break;
    }
out:
    if (p && p->n) {
        char why[QR_ERR_LEN];
        if (flush_results(j, row, p, why) && !*reason)
            snprintf(reason, QR_ERR_LEN, "%s", why);
    }
    free(p);
    if (fd >= 0)
        close(fd);
    json_decref(man);
    return interrupted;
}

static void run_job(api_jobs *j, const char *id)
{
    char err[QR_ERR_LEN], reason[QR_ERR_LEN] = "";
    char *staged = NULL;
    store_job row;
    store *s = api_store_acquire(j->srv);
    qr_status st = store_job_get(s, id, &row, &staged, NULL, err);
    api_store_release(j->srv, s);
    if (st) {
        qr_log(QR_LOG_ERROR, "jobs", "job %s cannot start: %s", id, err);
        return;
    }
    if (row.finished_ms)
        goto out;
    bool ingest = strcmp(row.kind, "ingest") == 0;
    bool resumed = strcmp(row.state, "queued") != 0 || row.done > 0;
    snprintf(row.state, sizeof(row.state), "running");
    row.error[0] = '\0';
    if (!row.started_ms)
        row.started_ms = qr_wall_ms();
    if ((st = save(j, &row, err)))
        qr_log(QR_LOG_WARN, "jobs", "job %s: %s", id, err);
    if (resumed)
        qr_log(QR_LOG_INFO, "jobs", "job %s resumed (%s, %lld of %lld documents done, by %s)", id, row.kind,
               (long long)row.done, (long long)row.docs, row.user);
    else
        qr_log(QR_LOG_INFO, "jobs", "job %s started (%s, %lld documents, by %s)", id, row.kind,
               (long long)row.docs, row.user);

    index_sync_report rep;
    memset(&rep, 0, sizeof(rep));
    if (ingest && run_ingest(j, &row, staged, reason)) {
        snprintf(row.state, sizeof(row.state), "interrupted");
        if ((st = save(j, &row, err)))
            qr_log(QR_LOG_WARN, "jobs", "job %s: %s", id, err);
        qr_log(QR_LOG_INFO, "jobs",
               "job %s interrupted by the shutdown after %lld of %lld documents; it resumes "
               "at the next start",
               id, (long long)row.done, (long long)row.docs);
        goto out;
    }
    /* after ingestion the vector index takes in the new chunks; a rebuild publishes a new
     * generation from every stored vector */
    if (!*reason && (st = api_index_sync(j->srv, !ingest, &rep, err)))
        snprintf(reason, sizeof(reason), "%s", err);
    if (*reason)
        snprintf(row.state, sizeof(row.state), "failed");
    else if (ingest && row.docs && row.failed == row.docs)
        snprintf(row.state, sizeof(row.state), "failed");
    else
        snprintf(row.state, sizeof(row.state), "succeeded");
    snprintf(row.error, sizeof(row.error), "%s", reason);
    if (!ingest && !*reason) {
        json_t *res =
            json_pack("{s:I,s:s,s:I,s:I}", "generation", (json_int_t)rep.generation, "type", rep.type,
                      "vectors", (json_int_t)rep.count, "skipped", (json_int_t)rep.skipped);
        char *text = res ? json_dumps(res, JSON_COMPACT) : NULL;
        json_decref(res);
        s = writer_acquire(j);
        store_job_result one = {0, false, 0, text};
        if (text && (st = store_job_add_results(s, id, &one, 1, err)))
            qr_log(QR_LOG_WARN, "jobs", "job %s: %s", id, err);
        writer_release(j, s);
        free(text);
        row.done = 1;
    }
    row.finished_ms = qr_wall_ms();
    if ((st = save(j, &row, err)))
        qr_log(QR_LOG_ERROR, "jobs", "job %s: %s", id, err);
    if (ingest)
        drop_staged(j, id);
    if (*reason)
        qr_log(QR_LOG_WARN, "jobs", "job %s failed: %s", id, reason);
    else
        qr_log(QR_LOG_INFO, "jobs", "job %s %s", id, row.state);
out:
    free(staged);
}

/* Deletes the jobs finished more than server.job_retention_s ago. Runner thread only. */
static void prune(api_jobs *j)
{
    char err[QR_ERR_LEN];
    size_t n = 0;
    store *s = writer_acquire(j);
    qr_status st = store_job_prune(s, qr_wall_ms() - j->retention_ms, &n, err);
    writer_release(j, s);
    if (st)
        qr_log(QR_LOG_WARN, "jobs", "cannot prune finished jobs: %s", err);
    else if (n)
        qr_log(QR_LOG_INFO, "jobs", "pruned %zu jobs finished more than %lld s ago", n,
               (long long)(j->retention_ms / 1000));
}

static void *runner(void *arg)
{
    api_jobs *j = arg;
    /* pruning runs a few times per retention period, at least once a minute */
    int64_t every = j->retention_ms / 4;
    every = every < 1000 ? 1000 : every > 60000 ? 60000 : every;
    int64_t next_prune = 0;
    pthread_mutex_lock(&j->lock);
    for (;;) {
        if (!j->stop && qr_wall_ms() >= next_prune) {
            pthread_mutex_unlock(&j->lock);
            prune(j);
            pthread_mutex_lock(&j->lock);
            next_prune = qr_wall_ms() + every;
            continue;
        }
        if (!j->stop && !j->head) {
            struct timespec until = {.tv_sec = (time_t)(next_prune / 1000),
                                     .tv_nsec = (long)(next_prune % 1000) * 1000000L};
            pthread_cond_timedwait(&j->cond, &j->lock, &until);
            continue;
        }
        if (j->stop)
            break;
        api_job *job = j->head;
        j->head = job->next;
        if (!j->head)
            j->tail = NULL;
        j->queued--;
        pthread_mutex_unlock(&j->lock);
        run_job(j, job->id);
        free(job);
        pthread_mutex_lock(&j->lock);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

qr_status api_jobs_new(api_server *srv, api_jobs **out, char *err)
{
    api_jobs *j = calloc(1, sizeof(*j));
    if (!j)
        return qr_fail(err, QR_ENOMEM, "out of memory creating the job runner");
    j->srv = srv;
    const qr_settings *set = qr_config_settings(srv->cfg);
    snprintf(j->dir, sizeof(j->dir), "%s/jobs", set->data_dir);
    j->retention_ms = set->server_job_retention_s * 1000;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->cond, NULL);
    *out = j;
    return QR_OK;
}

/* Adds a job to the queue; j->lock held. */
static qr_status enqueue(api_jobs *j, const char *id, char *err)
{
    api_job *job = calloc(1, sizeof(*job));
    if (!job)
        return qr_fail(err, QR_ENOMEM, "out of memory queueing a job");
    snprintf(job->id, sizeof(job->id), "%s", id);
    if (j->tail)
        j->tail->next = job;
    else
        j->head = job;
    j->tail = job;
    j->queued++;
    pthread_cond_signal(&j->cond);
    return QR_OK;
}

/* Whether id is among the n jobs. */
static bool owned(const store_job *jobs, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(jobs[i].id, id) == 0)
            return true;
    return false;
}

/* Queues the jobs a previous run left unfinished and removes staging directories no unfinished
 * job owns. Before the server listens, so no request stages anything meanwhile. */
static qr_status recover(api_jobs *j, char *err)
{
    if (mkdir(j->dir, 0700) == 0) {
        qr_status dst = qr_fsync_dir_of(j->dir, err);
        if (dst)
            return dst;
    } else if (errno != EEXIST)
        return qr_fail(err, QR_EIO, "cannot create the jobs directory '%s': %s", j->dir, strerror(errno));
    store_job *jobs = NULL;
    size_t n = 0;
    store *s = api_store_acquire(j->srv);
    qr_status st = store_job_unfinished(s, &jobs, &n, err);
    /* with store.backend = postgres the jobs listed are this node's in PostgreSQL: a staging
     * directory none of them owns may still be a job's of the local store, from before the switch,
     * which PostgreSQL never saw; such directories are left alone rather than removed */
    bool routed = store_routed(s);
    api_store_release(j->srv, s);
    if (st)
        return st;
    for (size_t i = 0; i < n && !st; i++) {
        qr_log(QR_LOG_INFO, "jobs", "job %s (%s, %s, %lld of %lld documents done) resumes", jobs[i].id,
               jobs[i].kind, jobs[i].state, (long long)jobs[i].done, (long long)jobs[i].docs);
        st = enqueue(j, jobs[i].id, err);
    }
    DIR *d = st ? NULL : opendir(j->dir);
    if (!st && !d)
        st = qr_fail(err, QR_EIO, "cannot open the jobs directory '%s': %s", j->dir, strerror(errno));
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || owned(jobs, n, e->d_name))
            continue;
        char path[PATH_MAX + 300], e2[QR_ERR_LEN];
        snprintf(path, sizeof(path), "%s/%s", j->dir, e->d_name);
        struct stat sb;
        if (lstat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            qr_log(QR_LOG_WARN, "jobs", "'%s' is not a job's staging directory; left alone", path);
            continue;
        }
        if (routed) {
            qr_log(QR_LOG_WARN, "jobs",
                   "the staging directory '%s' belongs to no unfinished job of this node in PostgreSQL "
                   "(a job of the local store from before store.backend = postgres?); left alone",
                   path);
            continue;
        }
        if (remove_staged(path, e2))
            qr_log(QR_LOG_WARN, "jobs", "cannot remove the orphan staging directory: %s", e2);
        else
            qr_log(QR_LOG_INFO, "jobs", "removed the staging directory '%s': no unfinished job owns it",
                   path);
    }
    if (d)
        closedir(d);
    free(jobs);
    return st;
}

static void clear_queue(api_jobs *j)
{
    while (j->head) {
        api_job *next = j->head->next;
        free(j->head);
        j->head = next;
    }
    j->tail = NULL;
    j->queued = 0;
}

qr_status api_jobs_start(api_jobs *j, char *err)
{
    j->stop = false;
    qr_status st = recover(j, err);
    if (st) {
        clear_queue(j);
        return st;
    }
    if (pthread_create(&j->thread, NULL, runner, j) != 0) {
        clear_queue(j);
        return qr_fail(err, QR_EINTERNAL, "cannot start the job runner thread");
    }
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
    /* what is still queued stays "queued" in the store and runs at the next start */
    pthread_mutex_lock(&j->lock);
    if (j->queued)
        qr_log(QR_LOG_INFO, "jobs", "%zu queued jobs wait for the next start", j->queued);
    clear_queue(j);
    pthread_mutex_unlock(&j->lock);
    j->started = false;
}

void api_jobs_free(api_jobs *j)
{
    if (!j)
        return;
    api_jobs_stop(j);
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->cond);
    free(j);
}

/* Checks the runner takes jobs and has room for one more. */
static qr_status accepting(api_jobs *j, char *err)
{
    pthread_mutex_lock(&j->lock);
    qr_status st = QR_OK;
    if (j->stop || !j->started)
        st = qr_fail(err, QR_EUNAVAILABLE, "the job runner is not running (shutting down)");
    else if (j->queued >= JOBS_QUEUED_MAX)
        st = qr_fail(err, QR_ELIMIT, "%d jobs are queued; retry later", JOBS_QUEUED_MAX);
    pthread_mutex_unlock(&j->lock);
    return st;
}

/* Records the job (durable) and queues it. A shutdown between the two leaves it queued in the
 * store: it was accepted and runs at the next start. */
static qr_status submit(api_jobs *j, const store_job *row, const char *manifest, char *err)
{
    store *s = writer_acquire(j);
    qr_status st = store_job_insert(s, row, manifest, err);
    writer_release(j, s);
    if (st)
        return st;
    pthread_mutex_lock(&j->lock);
    if (!j->stop && j->started)
        st = enqueue(j, row->id, err);
    pthread_mutex_unlock(&j->lock);
    return st;
}

static void row_init(store_job *row, const char *kind, const char *user)
{
    memset(row, 0, sizeof(*row));
    api_random_hex(row->id, 16);
    snprintf(row->kind, sizeof(row->kind), "%s", kind);
    snprintf(row->state, sizeof(row->state), "queued");
    snprintf(row->user, sizeof(row->user), "%s", user);
    row->created_ms = qr_wall_ms();
}

qr_status api_jobs_submit_ingest(api_jobs *j, api_job_doc *docs, size_t ndocs, const char *user, char id[33],
                                 char *err)
{
    char *manifest = NULL;
    store_job row;
    row_init(&row, "ingest", user);
    row.docs = (int64_t)ndocs;
    qr_status st = accepting(j, err);
    if (!st && !(st = stage(j, row.id, docs, ndocs, &manifest, err)) && (st = submit(j, &row, manifest, err)))
        drop_staged(j, row.id);
    if (!st)
        memcpy(id, row.id, 33);
    free(manifest);
    release_docs(docs, ndocs);
    return st;
}

qr_status api_jobs_submit_rebuild(api_jobs *j, const char *user, char id[33], char *err)
{
    store_job row;
    row_init(&row, "rebuild", user);
    qr_status st = accepting(j, err);
    if (!st)
        st = submit(j, &row, "", err);
    if (!st)
        memcpy(id, row.id, 33);
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

/* A job as the API shows it; results (a reference taken over) is added when not NULL. */
static json_t *job_json(const store_job *job, json_t *results)
{
    bool ingest = strcmp(job->kind, "ingest") == 0;
    int64_t total = ingest ? job->docs : 1;
    int64_t done = ingest ? job->done : job->finished_ms ? 1 : 0;
    json_t *out =
        json_pack("{s:s,s:s,s:s,s:s,s:{s:I,s:I,s:I,s:I,s:f},s:o,s:o,s:o,s:s?}", "id", job->id, "kind",
                  job->kind, "state", job->state, "user", job->user, "progress", "done", (json_int_t)done,
                  "total", (json_int_t)total, "failed", (json_int_t)job->failed, "chunks",
                  (json_int_t)job->chunks, "percent", total ? 100.0 * (double)done / (double)total : 100.0,
                  "created", iso_time(job->created_ms), "started", iso_time(job->started_ms), "finished",
                  iso_time(job->finished_ms), "error", *job->error ? job->error : NULL);
    if (out && results)
        json_object_set(out, "results", results);
    json_decref(results);
    return out;
}

qr_status api_jobs_describe(api_jobs *j, const char *id, json_t **out, char *err)
{
    char *results = NULL;
    store_job row;
    *out = NULL;
    store *s = api_store_acquire(j->srv);
    qr_status st = store_job_get(s, id, &row, NULL, &results, err);
    api_store_release(j->srv, s);
    if (st) {
        if (st != QR_ENOTFOUND)
            qr_log(QR_LOG_WARN, "jobs", "cannot read job %s: %s", id, err);
        return st;
    }
    json_t *res = json_loads(results, 0, NULL);
    free(results);
    *out = job_json(&row, res ? res : json_array());
    return *out ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory");
}

/* ---- GET /v1/jobs, GET /v1/jobs/{id} and POST /v1/index/rebuild --------------------------------- */

void api_h_job_get(api_req *r)
{
    const char *id = r->param;
    if (!is_job_id(id)) {
        api_reply_error(r, 400, "invalid_argument", "a job id is 32 lowercase hex digits");
        return;
    }
    json_t *job = NULL;
    char err[QR_ERR_LEN];
    qr_status st = api_jobs_describe(r->srv->jobs, id, &job, err);
    if (st == QR_ENOTFOUND) {
        api_reply_error(r, 404, "not_found",
                        "no job '%s' (finished jobs are kept for server.job_retention_s, then pruned)", id);
        return;
    }
    if (st) {
        /* with store.backend = postgres the jobs are there: unreachable is a 503, not a 404 */
        api_reply_status(r, st, err);
        return;
    }
    api_reply_json(r, 200, job);
}

static const char *const job_states[] = {"queued", "running", "interrupted", "succeeded", "failed"};

/* A listing cursor: "<created_ms>.<id>" of the last job of the page. */
static bool cursor_decode(const char *c, int64_t *ms, char id[33])
{
    char *end;
    errno = 0;
    long long v = strtoll(c, &end, 10);
    if (errno || end == c || *end != '.' || v < 0 || !is_job_id(end + 1))
        return false;
    *ms = v;
    snprintf(id, 33, "%s", end + 1);
    return true;
}

void api_h_job_list(api_req *r)
{
    char err[QR_ERR_LEN];
    bool bad = false;
    char *limit_arg = api_query_arg(r, "limit", &bad);
    char *cursor_arg = api_query_arg(r, "cursor", &bad);
    char *state_arg = api_query_arg(r, "state", &bad);
    store_job *jobs = NULL;
    size_t n = 0;
    long limit = LIST_DEFAULT;
    int64_t after_ms = 0;
    char after_id[33] = "";
    if (bad) {
        api_reply_error(r, 400, "invalid_argument", "malformed query string");
        goto out;
    }
    if (limit_arg) {
        char *end;
        limit = strtol(limit_arg, &end, 10);
        if (!*limit_arg || *end || limit < 1 || limit > LIST_MAX) {
            api_reply_error(r, 400, "invalid_argument", "'limit' must be an integer from 1 to %d", LIST_MAX);
            goto out;
        }
    }
    if (cursor_arg && !cursor_decode(cursor_arg, &after_ms, after_id)) {
        api_reply_error(r, 400, "invalid_argument", "'cursor' is not a cursor this server issued");
        goto out;
    }
    if (state_arg) {
        bool known = false;
        for (size_t i = 0; i < sizeof(job_states) / sizeof(job_states[0]); i++)
            known = known || strcmp(state_arg, job_states[i]) == 0;
        if (!known) {
            api_reply_error(r, 400, "invalid_argument",
                            "'state' must be one of queued, running, interrupted, succeeded, failed");
            goto out;
        }
    }
    bool more = false;
    store *s = api_store_acquire(r->srv);
    qr_status st = store_job_list(s, state_arg, after_ms, *after_id ? after_id : NULL, (size_t)limit, &jobs,
                                  &n, &more, err);
    api_store_release(r->srv, s);
    if (st) {
        api_reply_status(r, st, err);
        goto out;
    }
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++)
        json_array_append_new(list, job_json(&jobs[i], NULL));
    char next[64] = "";
    if (more && n)
        snprintf(next, sizeof(next), "%lld.%s", (long long)jobs[n - 1].created_ms, jobs[n - 1].id);
    api_reply_json(r, 200, json_pack("{s:o,s:s?}", "jobs", list, "next_cursor", *next ? next : NULL));
out:
    free(jobs);
    free(limit_arg);
    free(cursor_arg);
    free(state_arg);
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
