/*
 * store_jobs: the background jobs' table (schema migration 3). The API's job runner keeps each
 * job here, so that a restart finds what was queued or running and resumes it: one row per job
 * (kind, state, owner, times, counts, error and the manifest of its staged upload, which the
 * store keeps as opaque text) and one job_results row per document done. A document's result
 * and the job's counts move in one transaction (several documents' at once: the runner records
 * them in batches), so the counts always equal the results recorded and a resumed job starts at
 * the first document without a result.
 *
 * A routed store (store.backend = postgres) keeps its jobs in PostgreSQL instead, shared by every
 * node (store_jobs_pg.c): each call below checks its arguments and hands off there.
 *
 * Job calls are rare next to searches and writes (a few per document ingested), so their
 * statements are prepared per call rather than cached with store.c's.
 */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/store.h"
#include "index/store_int.h"

#define JOB_COLUMNS \
    "id, kind, state, user, created_ms, started_ms, finished_ms, docs, done, failed, chunks, error"

static qr_status prepare(store *s, const char *sql, sqlite3_stmt **q, char *err, const char *what)
{
    int rc = sqlite3_prepare_v2(store_db(s), sql, -1, q, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(*q);
        *q = NULL;
        return store_sql_fail(s, rc, err, what);
    }
    return QR_OK;
}

static qr_status check_id(const char *id, char *err)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 32)
        return qr_fail(err, QR_EINVAL, "a job id is 1 to 32 characters");
    return QR_OK;
}

/* Fills job from a row of JOB_COLUMNS starting at column 0. */
static void read_job(sqlite3_stmt *q, store_job *job)
{
    memset(job, 0, sizeof(*job));
    snprintf(job->id, sizeof(job->id), "%s", store_col_str(q, 0));
    snprintf(job->kind, sizeof(job->kind), "%s", store_col_str(q, 1));
    snprintf(job->state, sizeof(job->state), "%s", store_col_str(q, 2));
    snprintf(job->user, sizeof(job->user), "%s", store_col_str(q, 3));
    job->created_ms = sqlite3_column_int64(q, 4);
    job->started_ms = sqlite3_column_int64(q, 5);
    job->finished_ms = sqlite3_column_int64(q, 6);
    job->docs = sqlite3_column_int64(q, 7);
    job->done = sqlite3_column_int64(q, 8);
    job->failed = sqlite3_column_int64(q, 9);
    job->chunks = sqlite3_column_int64(q, 10);
    snprintf(job->error, sizeof(job->error), "%s", store_col_str(q, 11));
}

qr_status store_job_insert(store *s, const store_job *job, const char *staged, char *err)
{
    if (!s || !job)
        return qr_fail(err, QR_EINVAL, "store_job_insert: NULL argument");
    qr_status st = check_id(job->id, err);
    if (st)
        return st;
    if (s->route)
        return store_jobs_pg_insert(s, job, staged, err);
    sqlite3_stmt *q = NULL;
    if ((st = store_begin_write(s, err)) ||
        (st = prepare(s,
                      "INSERT INTO jobs(" JOB_COLUMNS
                      ", staged) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
                      " ?11, ?12, ?13) ON CONFLICT(id) DO NOTHING",
                      &q, err, "prepare a job's insertion")))
        goto out;
    if (store_bind_str(q, 1, job->id) || store_bind_str(q, 2, job->kind) ||
        store_bind_str(q, 3, job->state) || store_bind_str(q, 4, job->user) ||
        sqlite3_bind_int64(q, 5, job->created_ms) || sqlite3_bind_int64(q, 6, job->started_ms) ||
        sqlite3_bind_int64(q, 7, job->finished_ms) || sqlite3_bind_int64(q, 8, job->docs) ||
        sqlite3_bind_int64(q, 9, job->done) || sqlite3_bind_int64(q, 10, job->failed) ||
        sqlite3_bind_int64(q, 11, job->chunks) || store_bind_str(q, 12, job->error) ||
        store_bind_str(q, 13, staged ? staged : "")) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = store_run(s, q, err, "record a job")))
        goto out;
    if (sqlite3_changes(store_db(s)) == 0) {
        st = qr_fail(err, QR_EEXIST, "job '%s' already exists", job->id);
        goto out;
    }
    st = store_commit(s, err);
out:
    sqlite3_finalize(q);
    return store_end_call(s, st, err);
}

qr_status store_job_get(store *s, const char *id, store_job *out, char **staged, char **results, char *err)
{
    if (!s || !out)
        return qr_fail(err, QR_EINVAL, "store_job_get: NULL argument");
    if (staged)
        *staged = NULL;
    if (results)
        *results = NULL;
    qr_status st = check_id(id, err);
    if (st)
        return st;
    if (s->route)
        return store_jobs_pg_get(id, out, staged, results, err);
    sqlite3_stmt *q = NULL, *r = NULL;
    char *man = NULL, *res = NULL;
    bool row = false;
    if ((st = store_begin_read(s, err)) ||
        (st = prepare(s, "SELECT " JOB_COLUMNS ", staged FROM jobs WHERE id = ?1", &q, err,
                      "prepare a job's read")))
        goto out;
    if (store_bind_str(q, 1, id)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = store_step_row(s, q, &row, err, "read a job")))
        goto out;
    if (!row) {
        st = qr_fail(err, QR_ENOTFOUND, "no job '%s'", id);
        goto out;
    }
    read_job(q, out);
    if (staged && !(man = strdup(store_col_str(q, 12)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory reading job '%s'", id);
        goto out;
    }
    if (results) {
        if ((st = prepare(s,
                          "SELECT coalesce(json_group_array(json(result)), '[]') FROM"
                          " (SELECT result FROM job_results WHERE job = ?1 ORDER BY ordinal)",
                          &r, err, "prepare a job's results")))
            goto out;
        if (store_bind_str(r, 1, id)) {
            st = store_bind_fail(s, err);
            goto out;
        }
        if ((st = store_step_row(s, r, &row, err, "read a job's results")))
            goto out;
        if (!(res = strdup(row ? store_col_str(r, 0) : "[]"))) {
            st = qr_fail(err, QR_ENOMEM, "out of memory reading job '%s'", id);
            goto out;
        }
    }
out:
    sqlite3_finalize(q);
    sqlite3_finalize(r);
    if (st) {
        free(man);
        free(res);
    } else {
        if (staged)
            *staged = man;
        if (results)
            *results = res;
    }
    return store_end_call(s, st, err);
}

qr_status store_job_update(store *s, const store_job *job, char *err)
{
    if (!s || !job)
        return qr_fail(err, QR_EINVAL, "store_job_update: NULL argument");
    qr_status st = check_id(job->id, err);
    if (st)
        return st;
    if (s->route)
        return store_jobs_pg_update(job, err);
    sqlite3_stmt *q = NULL;
    if ((st = store_begin_write(s, err)) ||
        (st = prepare(s,
                      "UPDATE jobs SET state = ?2, started_ms = ?3, finished_ms = ?4, docs = ?5, done = ?6,"
                      " failed = ?7, chunks = ?8, error = ?9 WHERE id = ?1",
                      &q, err, "prepare a job's update")))
        goto out;
    if (store_bind_str(q, 1, job->id) || store_bind_str(q, 2, job->state) ||
        sqlite3_bind_int64(q, 3, job->started_ms) || sqlite3_bind_int64(q, 4, job->finished_ms) ||
        sqlite3_bind_int64(q, 5, job->docs) || sqlite3_bind_int64(q, 6, job->done) ||
        sqlite3_bind_int64(q, 7, job->failed) || sqlite3_bind_int64(q, 8, job->chunks) ||
        store_bind_str(q, 9, job->error)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = store_run(s, q, err, "update a job")))
        goto out;
    if (sqlite3_changes(store_db(s)) == 0) {
        st = qr_fail(err, QR_ENOTFOUND, "no job '%s'", job->id);
        goto out;
    }
    st = store_commit(s, err);
out:
    sqlite3_finalize(q);
    return store_end_call(s, st, err);
}

qr_status store_job_add_results(store *s, const char *id, const store_job_result *r, size_t n, char *err)
{
    if (!s || (!r && n))
        return qr_fail(err, QR_EINVAL, "store_job_add_results: NULL argument");
    qr_status st = check_id(id, err);
    if (st)
        return st;
    if (s->route)
        return store_jobs_pg_add_results(id, r, n, err);
    sqlite3_stmt *look = NULL, *ins = NULL, *up = NULL;
    if ((st = store_begin_write(s, err)) ||
        (st = prepare(s, "SELECT 1 FROM jobs WHERE id = ?1", &look, err, "prepare a job's lookup")))
        goto out;
    bool known = false;
    if (store_bind_str(look, 1, id)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = store_step_row(s, look, &known, err, "look up a job")))
        goto out;
    if (!known) {
        st = qr_fail(err, QR_ENOTFOUND, "no job '%s'", id);
        goto out;
    }
    sqlite3_finalize(look);
    look = NULL;
    if ((st = prepare(s, "SELECT 1 FROM job_results WHERE job = ?1 AND ordinal = ?2", &look, err,
                      "prepare a job result's lookup")) ||
        (st = prepare(s, "INSERT OR REPLACE INTO job_results(job, ordinal, result) VALUES (?1, ?2, ?3)", &ins,
                      err, "prepare a job result's insertion")) ||
        (st = prepare(
             s, "UPDATE jobs SET done = done + 1, failed = failed + ?2, chunks = chunks + ?3 WHERE id = ?1",
             &up, err, "prepare a job's progress")))
        goto out;
    for (size_t i = 0; i < n; i++) {
        bool again = false;
        if (!r[i].result) {
            st = qr_fail(err, QR_EINVAL, "store_job_add_results: NULL result");
            goto out;
        }
        if (store_bind_str(look, 1, id) || sqlite3_bind_int64(look, 2, r[i].ordinal) ||
            store_bind_str(ins, 1, id) || sqlite3_bind_int64(ins, 2, r[i].ordinal) ||
            store_bind_str(ins, 3, r[i].result) || store_bind_str(up, 1, id) ||
            sqlite3_bind_int64(up, 2, r[i].failed ? 1 : 0) || sqlite3_bind_int64(up, 3, r[i].chunks)) {
            st = store_bind_fail(s, err);
            goto out;
        }
        if ((st = store_step_row(s, look, &again, err, "look up a job result")))
            goto out;
        sqlite3_reset(look);
        if ((st = store_run(s, ins, err, "record a job result")))
            goto out;
        if (again)
            continue;
        if ((st = store_run(s, up, err, "record a job's progress")))
            goto out;
        if (sqlite3_changes(store_db(s)) == 0) {
            st = qr_fail(err, QR_ENOTFOUND, "no job '%s'", id);
            goto out;
        }
    }
    st = store_commit(s, err);
out:
    sqlite3_finalize(look);
    sqlite3_finalize(ins);
    sqlite3_finalize(up);
    return store_end_call(s, st, err);
}

/* Runs q (bound) and collects its JOB_COLUMNS rows; at most limit of them, *more when another
 * row follows. */
static qr_status collect(store *s, sqlite3_stmt *q, size_t limit, store_job **out, size_t *n, bool *more,
                         char *err)
{
    size_t cap = 16, k = 0;
    store_job *jobs = malloc(cap * sizeof(*jobs));
    qr_status st = jobs ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory listing jobs");
    bool row = true;
    while (!st && row) {
        if ((st = store_step_row(s, q, &row, err, "list jobs")) || !row)
            break;
        if (k == limit) {
            if (more)
                *more = true;
            break;
        }
        if (k == cap) {
            store_job *bigger = realloc(jobs, 2 * cap * sizeof(*jobs));
            if (!bigger) {
                st = qr_fail(err, QR_ENOMEM, "out of memory listing jobs");
                break;
            }
            jobs = bigger;
            cap *= 2;
        }
        read_job(q, &jobs[k++]);
    }
    if (st) {
        free(jobs);
        return st;
    }
    *out = jobs;
    *n = k;
    return QR_OK;
}

qr_status store_job_list(store *s, const char *state, int64_t after_ms, const char *after_id, size_t limit,
                         store_job **out, size_t *n, bool *more, char *err)
{
    if (!s || !out || !n || !more)
        return qr_fail(err, QR_EINVAL, "store_job_list: NULL argument");
    *out = NULL;
    *n = 0;
    *more = false;
    if (limit < 1 || limit > 10000)
        return qr_fail(err, QR_EINVAL, "store_job_list: limit %zu outside 1..10000", limit);
    if (s->route)
        return store_jobs_pg_list(state, after_ms, after_id, limit, out, n, more, err);
    sqlite3_stmt *q = NULL;
    qr_status st = QR_OK;
    if ((st = store_begin_read(s, err)) ||
        (st = prepare(s,
                      "SELECT " JOB_COLUMNS " FROM jobs WHERE (?1 = '' OR state = ?1)"
                      " AND (?2 IS NULL OR created_ms < ?3 OR (created_ms = ?3 AND id < ?2))"
                      " ORDER BY created_ms DESC, id DESC LIMIT ?4",
                      &q, err, "prepare the job listing")))
        goto out;
    if (store_bind_str(q, 1, state ? state : "") || (after_id && store_bind_str(q, 2, after_id)) ||
        sqlite3_bind_int64(q, 3, after_ms) || sqlite3_bind_int64(q, 4, (sqlite3_int64)limit + 1)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    st = collect(s, q, limit, out, n, more, err);
out:
    sqlite3_finalize(q);
    return store_end_call(s, st, err);
}

qr_status store_job_unfinished(store *s, store_job **out, size_t *n, char *err)
{
    if (!s || !out || !n)
        return qr_fail(err, QR_EINVAL, "store_job_unfinished: NULL argument");
    *out = NULL;
    *n = 0;
    if (s->route)
        return store_jobs_pg_unfinished(s, out, n, err);
    sqlite3_stmt *q = NULL;
    qr_status st = QR_OK;
    if ((st = store_begin_read(s, err)) ||
        (st = prepare(s,
                      "SELECT " JOB_COLUMNS " FROM jobs WHERE state IN ('queued', 'running', 'interrupted')"
                      " ORDER BY created_ms, id",
                      &q, err, "prepare the unfinished jobs' listing")))
        goto out;
    st = collect(s, q, SIZE_MAX, out, n, NULL, err);
out:
    sqlite3_finalize(q);
    return store_end_call(s, st, err);
}

qr_status store_job_prune(store *s, int64_t before_ms, size_t *pruned, char *err)
{
    if (!s || !pruned)
        return qr_fail(err, QR_EINVAL, "store_job_prune: NULL argument");
    *pruned = 0;
    if (s->route)
        return store_jobs_pg_prune(before_ms, pruned, err);
    sqlite3_stmt *q = NULL;
    qr_status st = QR_OK;
    /* job_results go with their job (ON DELETE CASCADE) */
    if ((st = store_begin_write(s, err)) ||
        (st = prepare(s, "DELETE FROM jobs WHERE finished_ms > 0 AND finished_ms < ?1", &q, err,
                      "prepare the jobs' pruning")))
        goto out;
    if (sqlite3_bind_int64(q, 1, before_ms)) {
        st = store_bind_fail(s, err);
        goto out;
    }
    if ((st = store_run(s, q, err, "prune finished jobs")))
        goto out;
    *pruned = (size_t)sqlite3_changes(store_db(s));
    st = store_commit(s, err);
out:
    sqlite3_finalize(q);
    return store_end_call(s, st, err);
}
