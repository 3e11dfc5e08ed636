/*
 * Durable background jobs, against real `quarry serve` processes (killed with SIGKILL, stopped
 * with SIGTERM, restarted on the same data directory) and in-process servers, over real HTTP,
 * with the fixture's slapd and fake inference server: a 500-document upload survives kill -9
 * and finishes after the restart with every document whole and no staged file left; a staged
 * file lost while the server was down fails the job with a reason naming it; SIGTERM leaves the
 * job interrupted and it resumes; finished jobs are pruned after server.job_retention_s; and
 * GET /v1/jobs lists jobs for administrators only.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "index/index.h"
#include "tests/api_test_corpus.h"
#include "tests/api_test_util.h"
#include "tests/harness.h"

#define NDOCS 500

/* ---- a `quarry serve` process on a data directory ------------------------------------------------ */

typedef struct {
    char dir[256];  /* the test's directory: data/ and serve.log in it */
    char data[300]; /* <dir>/data */
    char log[300];  /* the server's stderr, appended across restarts */
    pid_t pid;
    char base[128];
} serve_proc;

static serve_proc *g_proc;

static void proc_kill(serve_proc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
}

__attribute__((destructor)) static void proc_atexit(void)
{
    if (!g_proc)
        return;
    proc_kill(g_proc);
    if (g_proc->dir[0]) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_proc->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", g_proc->dir);
    }
}

static bool proc_init(serve_proc *p)
{
    memset(p, 0, sizeof(*p));
    g_proc = p;
    const char *tmp = getenv("TMPDIR");
    snprintf(p->dir, sizeof(p->dir), "%s/quarry-jobs-test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(p->dir)) {
        p->dir[0] = '\0';
        return false;
    }
    snprintf(p->data, sizeof(p->data), "%s/data", p->dir);
    snprintf(p->log, sizeof(p->log), "%s/serve.log", p->dir);
    return true;
}

/* Starts `quarry serve` on p->data (extra: one more --set, or NULL) and reads its URL. */
static bool proc_start(serve_proc *p, const char *extra)
{
    char people[256], groups[256], inf[256], uri[256], bind[256], pw[256];
    const char *base = getenv("QUARRY_TEST_LDAP_BASE");
    snprintf(people, sizeof(people), "ldap.user_base=ou=people,%s", base);
    snprintf(groups, sizeof(groups), "ldap.group_base=ou=groups,%s", base);
    snprintf(inf, sizeof(inf), "inference.base_url=%s/v1", fake_url());
    snprintf(uri, sizeof(uri), "ldap.uri=%s", getenv("QUARRY_TEST_LDAP_URI"));
    snprintf(bind, sizeof(bind), "ldap.bind_dn=%s", getenv("QUARRY_TEST_LDAP_BIND_DN"));
    snprintf(pw, sizeof(pw), "ldap.bind_password=%s", getenv("QUARRY_TEST_LDAP_BIND_PW"));
    int out[2];
    if (pipe(out) != 0)
        return false;
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        FILE *log = fopen(p->log, "a");
        dup2(out[1], STDOUT_FILENO);
        if (log)
            dup2(fileno(log), STDERR_FILENO);
        close(out[0]);
        close(out[1]);
        execl(QUARRY_BIN, "quarry", "--data", p->data, "--set", "server.listen=127.0.0.1:0", "--set", uri,
              "--set", bind, "--set", pw, "--set", people, "--set", groups, "--set", "auth.admin_groups=ops",
              "--set", inf, "--set", "inference.model=fake-chat-model", "--set",
              extra ? extra : "server.workers=8", "--log-level", "info", "serve", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    p->pid = pid;
    FILE *o = fdopen(out[0], "r");
    char line[512] = "";
    bool got = o && fgets(line, sizeof(line), o) != NULL;
    if (o)
        fclose(o);
    char *url = got ? strstr(line, "http://") : NULL;
    if (!url) {
        fprintf(stderr, "quarry serve printed: %s\n", line);
        proc_kill(p);
        return false;
    }
    snprintf(p->base, sizeof(p->base), "%.*s", (int)strcspn(url, " \n"), url);
    return true;
}

/* SIGTERM and wait: true when it exited 0. */
static bool proc_stop(serve_proc *p)
{
    int status = 0;
    if (p->pid <= 0 || kill(p->pid, SIGTERM) != 0 || waitpid(p->pid, &status, 0) != p->pid)
        return false;
    p->pid = 0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ---- helpers ----------------------------------------------------------------------------------- */

/* Posts NDOCS small documents (ids <prefix>000, <prefix>001...) as one request: a job. id
 * receives its id. */
static bool upload(const char *base, const char *prefix, char id[64])
{
    qr_buf b;
    qr_buf_init(&b, 1 << 22);
    qr_buf_puts(&b, "{\"documents\":[");
    for (int i = 0; i < NDOCS; i++)
        qr_buf_printf(
            &b,
            "%s{\"doc_id\":\"%s%03d\",\"title\":\"Note %d\",\"acl\":[\"public\"],\"text\":\"Note %03d "
            "records the quarry survey of marker%s%03d. Field crews logged the bench heights and the "
            "haul roads.\\n\\nA second paragraph about drainage and the pit wall.\"}",
            i ? "," : "", prefix, i, i, i, prefix, i);
    qr_buf_puts(&b, "]}");
    api_resp r;
    long st = api_http(base, "POST", "/v1/documents", H(DAVE), qr_buf_str(&b), qr_buf_len(&b), &r);
    const char *jid = json_string_value(json_object_get(r.json, "job_id"));
    snprintf(id, 64, "%s", jid ? jid : "");
    if (st != 202)
        fprintf(stderr, "upload: %ld %s\n", st, qr_buf_str(&r.body));
    api_resp_release(&r);
    qr_buf_release(&b);
    return st == 202 && *id;
}

/* GET /v1/jobs/{id} (a new reference, or NULL). */
static json_t *job_get(const char *base, const char *id)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/jobs/%s", id);
    api_resp r;
    long st = api_http(base, "GET", path, H(DAVE), NULL, 0, &r);
    json_t *j = st == 200 ? json_incref(r.json) : NULL;
    api_resp_release(&r);
    return j;
}

static const char *state_of(json_t *job)
{
    const char *s = json_string_value(json_object_get(job, "state"));
    return s ? s : "";
}

static json_int_t progress(json_t *job, const char *what)
{
    return json_integer_value(json_object_get(json_object_get(job, "progress"), what));
}

/* Polls the job until at least `done` documents are done (or it finished): its done count, -1
 * when it could not be read for 60 s. */
static json_int_t wait_done(const char *base, const char *id, json_int_t done)
{
    for (int i = 0; i < 6000; i++) {
        json_t *job = job_get(base, id);
        json_int_t n = job ? progress(job, "done") : -1;
        bool over =
            job && json_object_get(job, "finished") && !json_is_null(json_object_get(job, "finished"));
        json_decref(job);
        if (n >= done || over)
            return n;
        usleep(10000);
    }
    return -1;
}

/* Polls until the job finished (a new reference, or NULL after 120 s). */
static json_t *wait_finished(const char *base, const char *id)
{
    for (int i = 0; i < 2400; i++) {
        json_t *job = job_get(base, id);
        const char *s = state_of(job);
        if (strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0)
            return job;
        json_decref(job);
        usleep(50000);
    }
    return NULL;
}

/* Entries of a directory, "." and ".." aside; -1 when it cannot be opened. */
static int entries(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static qr_status count_doc(void *ctx, const store_doc_summary *d, char *err)
{
    size_t *c = ctx;
    if (d->chunk_count == 0)
        return qr_fail(err, QR_EIO, "document '%s' has no chunks", d->doc_id);
    c[0]++;
    c[1] += d->chunk_count;
    return QR_OK;
}

/* Opens the store of a stopped server: verifies it whole (SQLite, FTS5, chunk counts) and counts
 * its documents, none without chunks. */
static bool store_whole(const char *data, size_t *docs, size_t *chunks, char *err)
{
    store *s = NULL;
    size_t c[2] = {0, 0};
    bool more = false;
    qr_status st = store_open(data, &s, err);
    if (!st)
        st = store_verify(s, err);
    if (!st)
        st = store_list_documents(s, NULL, 10000, count_doc, c, &more, err);
    store_close(s);
    *docs = c[0];
    *chunks = c[1];
    return st == QR_OK;
}

/* ---- kill -9 in the middle of a 500-document job ---------------------------------------------------- */

TEST(job_resumes_after_kill_9)
{
    creds();
    static serve_proc p;
    CHECK(proc_init(&p));
    CHECK(proc_start(&p, NULL));
    char id[64], staged[400];
    CHECK(upload(p.base, "n", id));
    snprintf(staged, sizeof(staged), "%s/jobs/%s", p.data, id);
    /* the upload is staged on disk before the 202 */
    CHECK_INT(entries(staged), 1);
    json_int_t before = wait_done(p.base, id, 25);
    proc_kill(&p);
    CHECK_MSG(before >= 25 && before < NDOCS, "the job had %lld documents done when killed (want it mid-way)",
              (long long)before);

    /* what the killed server wrote is whole: documents done are there, none half */
    size_t docs = 0, chunks = 0;
    char err[QR_ERR_LEN];
    CHECK_MSG(store_whole(p.data, &docs, &chunks, err), "%s", err);
    CHECK_MSG(docs >= (size_t)before && docs < NDOCS, "%zu documents after the kill, %lld done", docs,
              (long long)before);
    CHECK_INT(entries(staged), 1);

    CHECK(proc_start(&p, NULL));
    json_t *job = wait_finished(p.base, id);
    CHECK(job);
    char *dump = json_dumps(job, 0);
    json_t *results = json_object_get(job, "results");
    bool all_ok = json_array_size(results) == NDOCS;
    for (size_t i = 0; all_ok && i < NDOCS; i++) {
        json_t *res = json_array_get(results, i);
        char want[16];
        snprintf(want, sizeof(want), "n%03zu", i);
        all_ok = strcmp(json_string_value(json_object_get(res, "status")), "ok") == 0 &&
                 strcmp(json_string_value(json_object_get(res, "doc_id")), want) == 0;
    }
    bool ok = strcmp(state_of(job), "succeeded") == 0 && progress(job, "done") == NDOCS &&
              progress(job, "total") == NDOCS && progress(job, "failed") == 0 && all_ok;
    json_decref(job);
    CHECK_MSG(ok, "%.2000s", dump);
    free(dump);
    /* the last document is searchable */
    api_resp r;
    CHECK_INT(api_http(p.base, "POST", "/v1/search", H(ALICE), "{\"query\":\"markern499\",\"mode\":\"bm25\"}",
                       0, &r),
              200);
    json_t *first = json_array_get(json_object_get(r.json, "results"), 0);
    CHECK_STR(json_string_value(json_object_get(first, "doc_id")), "n499");
    api_resp_release(&r);
    CHECK(proc_stop(&p));

    CHECK_MSG(store_whole(p.data, &docs, &chunks, err), "%s", err);
    CHECK_INT(docs, NDOCS);
    CHECK_MSG(chunks >= NDOCS, "%zu chunks", chunks);
    /* no staged file is left */
    char jobs[400];
    snprintf(jobs, sizeof(jobs), "%s/jobs", p.data);
    CHECK_INT(entries(jobs), 0);
}

/* ---- a staged file lost while the server was down ---------------------------------------------------- */

TEST(jobs_with_lost_or_damaged_staged_files_fail_naming_them)
{
    creds();
    static serve_proc p;
    CHECK(proc_init(&p));
    CHECK(proc_start(&p, NULL));
    char a[64], b[64];
    CHECK(upload(p.base, "n", a));
    CHECK(upload(p.base, "m", b)); /* queued behind the first */
    json_int_t before = wait_done(p.base, a, 10);
    proc_kill(&p);
    CHECK_MSG(before >= 10 && before < NDOCS, "%lld documents done when killed", (long long)before);
    store *s = NULL;
    store_job row;
    char err[QR_ERR_LEN];
    CHECK_OK(store_open(p.data, &s, err), err);
    qr_status st = store_job_get(s, a, &row, NULL, NULL, err);
    store_close(s);
    CHECK_OK(st, err);

    /* the first job's upload is lost; one byte of the second's document m300 changes */
    char path[1024];
    snprintf(path, sizeof(path), "%s/jobs/%s/upload", p.data, a);
    CHECK(unlink(path) == 0);
    snprintf(path, sizeof(path), "%s/jobs/%s/upload", p.data, b);
    FILE *f = fopen(path, "r+b");
    CHECK(f);
    char doc[4096];
    size_t n = fread(doc, 1, sizeof(doc), f);
    CHECK(n > 100);
    char *second = memmem(doc, n, "Note 001 ", 9); /* every document is the same length */
    CHECK(second);
    long len = second - doc;
    CHECK(fseek(f, 300 * len + 10, SEEK_SET) == 0 && fputc('#', f) != EOF);
    fclose(f);
    /* a directory no job owns (a crash between staging and recording a job) */
    char orphan[600];
    snprintf(orphan, sizeof(orphan), "%s/jobs/0123456789abcdef0123456789abcdef", p.data);
    CHECK(mkdir(orphan, 0700) == 0);
    snprintf(path, sizeof(path), "%s/upload", orphan);
    f = fopen(path, "w");
    CHECK(f);
    fputs("left behind", f);
    fclose(f);

    CHECK(proc_start(&p, NULL));
    json_t *job = wait_finished(p.base, a);
    CHECK(job);
    char *dump = json_dumps(job, 0);
    const char *error = json_string_value(json_object_get(job, "error"));
    /* nothing more was written: the job stopped before writing what was left */
    bool ok = strcmp(state_of(job), "failed") == 0 && error && strstr(error, a) && strstr(error, "/upload") &&
              strstr(error, "missing") && progress(job, "done") == row.done;
    json_decref(job);
    CHECK_MSG(ok, "%.1500s", dump);
    free(dump);
    api_resp r;
    CHECK_INT(api_http(p.base, "GET", "/v1/documents/n499", H(DAVE), NULL, 0, &r), 404);
    api_resp_release(&r);

    /* the second job writes its first 300 documents, then stops at the damaged one */
    job = wait_finished(p.base, b);
    CHECK(job);
    dump = json_dumps(job, 0);
    error = json_string_value(json_object_get(job, "error"));
    ok = strcmp(state_of(job), "failed") == 0 && error && strstr(error, "'m300'") &&
         strstr(error, "SHA-256") && strstr(error, b) && progress(job, "done") == 300 &&
         progress(job, "failed") == 0;
    json_decref(job);
    CHECK_MSG(ok, "%.600s", dump);
    free(dump);
    CHECK_INT(api_http(p.base, "GET", "/v1/documents/m299", H(DAVE), NULL, 0, &r), 200);
    api_resp_release(&r);
    CHECK_INT(api_http(p.base, "GET", "/v1/documents/m300", H(DAVE), NULL, 0, &r), 404);
    api_resp_release(&r);

    /* both show in the listing of failed jobs, newest first, without their results */
    CHECK_INT(api_http(p.base, "GET", "/v1/jobs?state=failed", H(DAVE), NULL, 0, &r), 200);
    json_t *jobs = json_object_get(r.json, "jobs");
    CHECK_INT(json_array_size(jobs), 2);
    CHECK_STR(json_string_value(json_object_get(json_array_get(jobs, 0), "id")), b);
    CHECK_STR(json_string_value(json_object_get(json_array_get(jobs, 1), "id")), a);
    CHECK(!json_object_get(json_array_get(jobs, 0), "results"));
    api_resp_release(&r);
    CHECK(proc_stop(&p));
    size_t docs = 0, chunks = 0;
    CHECK_MSG(store_whole(p.data, &docs, &chunks, err), "%s", err);
    /* the killed server may have written documents whose results it had not recorded yet (they
     * are recorded in batches of at most 64) */
    CHECK_MSG(docs >= (size_t)row.done + 300 && docs <= (size_t)row.done + 300 + 64,
              "%zu documents, %lld + 300 done", docs, (long long)row.done);
    /* no staged file is left, the orphan's included, and its removal was logged */
    snprintf(path, sizeof(path), "%s/jobs", p.data);
    CHECK_INT(entries(path), 0);
    char *log = NULL;
    size_t len2 = 0;
    CHECK_OK(qr_read_file(p.log, 1 << 24, &log, &len2, err), err);
    bool logged = strstr(log, "0123456789abcdef0123456789abcdef") && strstr(log, "no unfinished job owns it");
    free(log);
    CHECK_MSG(logged, "no log line for the orphan directory in %s", p.log);
}

/* ---- SIGTERM: the job is interrupted and resumes at the next start ------------------------------------- */

TEST(sigterm_interrupts_a_job_that_resumes)
{
    creds();
    static serve_proc p;
    CHECK(proc_init(&p));
    CHECK(proc_start(&p, NULL));
    char id[64];
    CHECK(upload(p.base, "n", id));
    json_int_t before = wait_done(p.base, id, 10);
    CHECK(before >= 10);
    CHECK(proc_stop(&p));

    store *s = NULL;
    store_job row;
    char err[QR_ERR_LEN];
    CHECK_OK(store_open(p.data, &s, err), err);
    qr_status st = store_job_get(s, id, &row, NULL, NULL, err);
    store_close(s);
    CHECK_OK(st, err);
    CHECK_MSG(strcmp(row.state, "interrupted") == 0 && row.done < NDOCS && row.finished_ms == 0,
              "state %s, %lld done", row.state, (long long)row.done);
    char staged[400];
    snprintf(staged, sizeof(staged), "%s/jobs/%s", p.data, id);
    CHECK_INT(entries(staged), 1);

    CHECK(proc_start(&p, NULL));
    json_t *job = wait_finished(p.base, id);
    CHECK(job);
    bool ok = strcmp(state_of(job), "succeeded") == 0 && progress(job, "done") == NDOCS &&
              progress(job, "failed") == 0;
    char *dump = json_dumps(job, 0);
    json_decref(job);
    CHECK_MSG(ok, "%.1500s", dump);
    free(dump);
    CHECK(proc_stop(&p));
    CHECK_INT(entries(staged), -1);
}

/* ---- retention and listing (in-process servers) ---------------------------------------------------- */

static bool small_job(api_fixture *f, int n, char id[64])
{
    char body[256];
    snprintf(
        body, sizeof(body),
        "{\"documents\":[{\"doc_id\":\"a%d\",\"text\":\"first %d\"},{\"doc_id\":\"b%d\",\"text\":\"second "
        "%d\"}]}",
        n, n, n, n);
    api_resp r;
    long st = api_http(f->base, "POST", "/v1/documents", H(DAVE), body, 0, &r);
    snprintf(id, 64, "%s", st == 202 ? json_string_value(json_object_get(r.json, "job_id")) : "");
    api_resp_release(&r);
    json_t *job = st == 202 ? wait_finished(f->base, id) : NULL;
    bool ok = job && strcmp(state_of(job), "succeeded") == 0;
    json_decref(job);
    return ok;
}

TEST(finished_jobs_are_pruned_after_retention)
{
    creds();
    static api_fixture f; /* static: the exit handler may stop it after a failed CHECK */
    CHECK(api_fx_start(&f, "server.job_retention_s", "1", NULL));
    char id[64], path[128];
    CHECK(small_job(&f, 1, id));
    snprintf(path, sizeof(path), "/v1/jobs/%s", id);
    long st = 200;
    for (int i = 0; i < 200 && st == 200; i++) {
        api_resp r;
        st = api_http(f.base, "GET", path, H(DAVE), NULL, 0, &r);
        api_resp_release(&r);
        if (st == 200)
            usleep(50000);
    }
    CHECK_INT(st, 404);
    api_resp r;
    CHECK_INT(api_http(f.base, "GET", "/v1/jobs", H(DAVE), NULL, 0, &r), 200);
    CHECK_INT(json_array_size(json_object_get(r.json, "jobs")), 0);
    api_resp_release(&r);
    /* the documents stay: only the job's record goes */
    CHECK_INT(api_http(f.base, "GET", "/v1/documents/a1", H(DAVE), NULL, 0, &r), 200);
    api_resp_release(&r);
    api_fx_stop(&f);

    /* with the default retention a finished job stays */
    CHECK(api_fx_start(&f, NULL));
    CHECK(small_job(&f, 2, id));
    usleep(1500000);
    snprintf(path, sizeof(path), "/v1/jobs/%s", id);
    CHECK_INT(api_http(f.base, "GET", path, H(DAVE), NULL, 0, &r), 200);
    api_resp_release(&r);
    api_fx_stop(&f);
}

TEST(job_listing_is_for_administrators)
{
    creds();
    static api_fixture f;
    CHECK(api_fx_start(&f, NULL));
    char ids[3][64];
    for (int i = 0; i < 3; i++) {
        CHECK(small_job(&f, i, ids[i]));
        usleep(5000); /* distinct creation times, so that the order is the submission order */
    }
    api_resp r;
    CHECK_INT(api_http(f.base, "GET", "/v1/jobs", H(DAVE), NULL, 0, &r), 200);
    json_t *jobs = json_object_get(r.json, "jobs");
    CHECK_INT(json_array_size(jobs), 3);
    for (int i = 0; i < 3; i++) /* newest first */
        CHECK_STR(json_string_value(json_object_get(json_array_get(jobs, (size_t)i), "id")), ids[2 - i]);
    CHECK(json_is_null(json_object_get(r.json, "next_cursor")));
    CHECK_STR(json_string_value(json_object_get(json_array_get(jobs, 0), "user")), "dave");
    api_resp_release(&r);

    /* pages of two */
    CHECK_INT(api_http(f.base, "GET", "/v1/jobs?limit=2", H(DAVE), NULL, 0, &r), 200);
    CHECK_INT(json_array_size(json_object_get(r.json, "jobs")), 2);
    const char *cursor = json_string_value(json_object_get(r.json, "next_cursor"));
    CHECK(cursor);
    char path[256];
    snprintf(path, sizeof(path), "/v1/jobs?limit=2&cursor=%s", cursor);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", path, H(DAVE), NULL, 0, &r), 200);
    jobs = json_object_get(r.json, "jobs");
    CHECK_INT(json_array_size(jobs), 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(jobs, 0), "id")), ids[0]);
    CHECK(json_is_null(json_object_get(r.json, "next_cursor")));
    api_resp_release(&r);

    /* by state */
    CHECK_INT(api_http(f.base, "GET", "/v1/jobs?state=succeeded", H(DAVE), NULL, 0, &r), 200);
    CHECK_INT(json_array_size(json_object_get(r.json, "jobs")), 3);
    api_resp_release(&r);
    CHECK_INT(api_http(f.base, "GET", "/v1/jobs?state=queued", H(DAVE), NULL, 0, &r), 200);
    CHECK_INT(json_array_size(json_object_get(r.json, "jobs")), 0);
    api_resp_release(&r);

    /* bad arguments: 400 naming them */
    const char *bad[] = {"/v1/jobs?state=done", "/v1/jobs?limit=0", "/v1/jobs?limit=1001",
                         "/v1/jobs?cursor=x", "/v1/jobs?cursor=12.nothex"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_MSG(api_http(f.base, "GET", bad[i], H(DAVE), NULL, 0, &r) == 400, "%s", bad[i]);
        CHECK_STR(api_error_code(&r), "invalid_argument");
        api_resp_release(&r);
    }

    /* a user who is not an administrator: 403, for the list and for a job */
    CHECK_INT(api_http(f.base, "GET", "/v1/jobs", H(ALICE), NULL, 0, &r), 403);
    CHECK(api_error_shape(&r));
    api_resp_release(&r);
    snprintf(path, sizeof(path), "/v1/jobs/%s", ids[0]);
    CHECK_INT(api_http(f.base, "GET", path, H(ALICE), NULL, 0, &r), 403);
    api_resp_release(&r);
    /* no credentials: 401 */
    CHECK_INT(api_http(f.base, "GET", "/v1/jobs", NULL, NULL, 0, &r), 401);
    api_resp_release(&r);
    api_fx_stop(&f);
}
