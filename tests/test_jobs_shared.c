/*
 * Background jobs shared by every node through PostgreSQL (store.backend = postgres, issue #24):
 * a client that started a job on node A and polls node B behind a load balancer must find it. Each
 * case starts a throwaway PostgreSQL 15 on loopback (tests/pg_fixture.c) and names it as the
 * primary (store_set_primary); two data directories with a routed store handle on each stand for
 * two nodes. A job inserted through one node is read, listed, updated and pruned through the
 * other, its results in order and its counts moved once per document; each node's unfinished list
 * holds only the jobs it accepted (their staged uploads are on it); bad ids, limits and results
 * are refused changing nothing; PostgreSQL stopped fails every call with QR_EUNAVAILABLE and
 * nothing is written to a node's own store instead; a connection lost in between is made again.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "core/core.h"
#include "index/store.h"
#include "tests/harness.h"
#include "tests/pg_routed.h"

/* A node: a data directory and a store handle on it, routed while a primary is set. */
typedef struct {
    char dir[64];
    store *s;
} node;

static bool node_open(node *n, char *err)
{
    memset(n, 0, sizeof(*n));
    snprintf(n->dir, sizeof(n->dir), "/tmp/quarry-jobs-shared-XXXXXX");
    if (!mkdtemp(n->dir))
        return false;
    return !store_open(n->dir, &n->s, err) && store_routed(n->s);
}

static void node_close(node *n)
{
    store_close(n->s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", n->dir);
    if (n->dir[0] && system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", n->dir);
    memset(n, 0, sizeof(*n));
}

static store_job job_of(const char *id, const char *user, int64_t created_ms, int64_t docs)
{
    store_job j = {.created_ms = created_ms, .docs = docs};
    snprintf(j.id, sizeof(j.id), "%s", id);
    snprintf(j.kind, sizeof(j.kind), "ingest");
    snprintf(j.state, sizeof(j.state), "queued");
    snprintf(j.user, sizeof(j.user), "%s", user);
    return j;
}

/* The ids of a job array, comma-separated, into out. */
static const char *ids_of(const store_job *jobs, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%s", i ? "," : "", jobs[i].id);
    return out;
}

/* The ids store_job_unfinished lists on s, comma-separated, into out. */
static qr_status unfinished_ids(store *s, char *out, size_t cap, char *err)
{
    store_job *jobs = NULL;
    size_t n = 0;
    qr_status st = store_job_unfinished(s, &jobs, &n, err);
    if (!st)
        ids_of(jobs, n, out, cap);
    free(jobs);
    return st;
}

/* Every job s lists (state NULL: any), page by page of `page`, ids comma-separated into out. */
static qr_status walk(store *s, const char *state, size_t page, char *out, size_t cap, size_t *pages,
                      char *err)
{
    int64_t after_ms = 0;
    char after_id[33] = "";
    size_t k = 0;
    bool more = true;
    qr_status st = QR_OK;
    out[0] = '\0';
    *pages = 0;
    while (!st && more) {
        store_job *jobs = NULL;
        size_t n = 0;
        st = store_job_list(s, state, after_ms, *after_id ? after_id : NULL, page, &jobs, &n, &more, err);
        for (size_t i = 0; !st && i < n && k < cap; i++)
            k += (size_t)snprintf(out + k, cap - k, "%s%s", k ? "," : "", jobs[i].id);
        if (!st && n) {
            after_ms = jobs[n - 1].created_ms;
            snprintf(after_id, sizeof(after_id), "%s", jobs[n - 1].id);
        }
        if (!st && !n && more)
            st = qr_fail(err, QR_EINTERNAL, "an empty page that says more follow");
        free(jobs);
        (*pages)++;
    }
    return st;
}

/* The first value of the first row of sql on the fixture's server, into out ("" when none). */
static bool pg_value(const char *sql, char *out, size_t cap)
{
    PGconn *c = PQconnectdb(fx.conninfo);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    bool ok = r && PQresultStatus(r) == PGRES_TUPLES_OK;
    snprintf(out, cap, "%s", ok && PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    PQfinish(c);
    return ok;
}

/* Runs sql (no rows) on the fixture's server; whether it succeeded. */
static bool pg_run(const char *sql)
{
    PGconn *c = PQconnectdb(fx.conninfo);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    PQfinish(c);
    return ok;
}

/* ---- one job, two nodes ------------------------------------------------------------------------ */

static void run_job_seen_from_another_node(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    store_job j = job_of("0123456789abcdef0123456789abcdef", "dave", 1000, 3);
    CHECK_OK(store_job_insert(a.s, &j, "[{\"doc_id\":\"x\",\"file\":\"0001\"}]", err), err);
    store_job_result r[2] = {{0, false, 4, "{\"doc_id\":\"x\", \"n\": 1}"},
                             {1, true, 0, "{\"doc_id\":\"y\"}"}};
    CHECK_OK(store_job_add_results(a.s, j.id, r, 2, err), err);

    store_job got;
    char *staged = NULL, *results = NULL;
    CHECK_OK(store_job_get(b.s, j.id, &got, &staged, &results, err), err);
    CHECK_STR(got.id, j.id);
    CHECK_STR(got.kind, "ingest");
    CHECK_STR(got.state, "queued");
    CHECK_STR(got.user, "dave");
    CHECK_INT(got.created_ms, 1000);
    CHECK_INT(got.docs, 3);
    CHECK_INT(got.done, 2);
    CHECK_INT(got.failed, 1);
    CHECK_INT(got.chunks, 4);
    CHECK_STR(staged, "[{\"doc_id\":\"x\",\"file\":\"0001\"}]");
    /* the array the local store gives: each result minified, in ordinal order */
    CHECK_STR(results, "[{\"doc_id\":\"x\",\"n\":1},{\"doc_id\":\"y\"}]");
    free(staged);
    free(results);

    store_job *jobs = NULL;
    size_t n = 0;
    bool more = true;
    CHECK_OK(store_job_list(b.s, NULL, 0, NULL, 10, &jobs, &n, &more, err), err);
    CHECK(n == 1 && !more);
    CHECK_STR(jobs[0].id, j.id);
    CHECK_INT(jobs[0].done, 2);
    free(jobs);

    /* B finishes it; A sees it finished, with its error */
    got.finished_ms = 9000;
    got.started_ms = 2000;
    snprintf(got.state, sizeof(got.state), "failed");
    snprintf(got.error, sizeof(got.error), "document 'z' could not be read");
    CHECK_OK(store_job_update(b.s, &got, err), err);
    CHECK_OK(store_job_get(a.s, j.id, &got, NULL, &results, err), err);
    CHECK_STR(got.state, "failed");
    CHECK_INT(got.started_ms, 2000);
    CHECK_INT(got.finished_ms, 9000);
    CHECK_STR(got.error, "document 'z' could not be read");
    CHECK_STR(results, "[{\"doc_id\":\"x\",\"n\":1},{\"doc_id\":\"y\"}]");
    free(results);
    CHECK_OK(store_job_list(a.s, "failed", 0, NULL, 10, &jobs, &n, &more, err), err);
    CHECK_INT(n, 1);
    free(jobs);
    CHECK_OK(store_job_list(a.s, "queued", 0, NULL, 10, &jobs, &n, &more, err), err);
    CHECK_INT(n, 0);
    free(jobs);
    node_close(&a);
    node_close(&b);
}
TEST(job_seen_from_another_node)
{
    RUN_WITH_PG(job_seen_from_another_node);
}

/* ---- unfinished jobs stay with their node ----------------------------------------------------------- */

static void run_unfinished_are_this_nodes(void)
{
    char err[QR_ERR_LEN] = "", ids[256], dir[128];
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    store_job a1 = job_of("a1", "dave", 1000, 1), a2 = job_of("a2", "dave", 3000, 1);
    store_job b1 = job_of("b1", "erin", 2000, 1), a3 = job_of("a3", "dave", 4000, 1);
    snprintf(a2.state, sizeof(a2.state), "interrupted");
    snprintf(a3.state, sizeof(a3.state), "succeeded");
    a3.finished_ms = 5000;
    CHECK_OK(store_job_insert(a.s, &a2, "", err), err);
    CHECK_OK(store_job_insert(a.s, &a1, "", err), err);
    CHECK_OK(store_job_insert(b.s, &b1, "", err), err);
    CHECK_OK(store_job_insert(a.s, &a3, "", err), err);

    /* oldest first, finished ones left out, and only the node's own */
    CHECK_OK(unfinished_ids(a.s, ids, sizeof(ids), err), err);
    CHECK_STR(ids, "a1,a2");
    CHECK_OK(unfinished_ids(b.s, ids, sizeof(ids), err), err);
    CHECK_STR(ids, "b1");
    /* the job records the node as "<hostname>:<data directory>" */
    char host[256] = "", want[400], node_name[400], *abs = realpath(a.dir, NULL);
    CHECK(abs && gethostname(host, sizeof(host) - 1) == 0);
    snprintf(want, sizeof(want), "%s:%s", host, abs);
    free(abs);
    CHECK(pg_value("SELECT node FROM quarry.jobs WHERE id = 'a1'", node_name, sizeof(node_name)));
    CHECK_STR(node_name, want);

    /* the same node through another handle, its directory spelled otherwise: the same jobs */
    snprintf(dir, sizeof(dir), "%s/.", a.dir);
    store *again = NULL;
    CHECK_OK(store_open(dir, &again, err), err);
    CHECK_OK(unfinished_ids(again, ids, sizeof(ids), err), err);
    store_close(again);
    CHECK_STR(ids, "a1,a2");

    /* a job finished through B leaves A's list; a job A's runner starts again stays on it */
    store_job got;
    CHECK_OK(store_job_get(b.s, "a1", &got, NULL, NULL, err), err);
    snprintf(got.state, sizeof(got.state), "succeeded");
    got.finished_ms = 6000;
    CHECK_OK(store_job_update(b.s, &got, err), err);
    CHECK_OK(store_job_get(a.s, "a2", &got, NULL, NULL, err), err);
    snprintf(got.state, sizeof(got.state), "running");
    CHECK_OK(store_job_update(a.s, &got, err), err);
    CHECK_OK(unfinished_ids(a.s, ids, sizeof(ids), err), err);
    CHECK_STR(ids, "a2");
    CHECK_OK(unfinished_ids(b.s, ids, sizeof(ids), err), err);
    CHECK_STR(ids, "b1");
    node_close(&a);
    node_close(&b);
}
TEST(unfinished_are_this_nodes)
{
    RUN_WITH_PG(unfinished_are_this_nodes);
}

/* ---- results and counts ------------------------------------------------------------------------------ */

static void run_results_replace_without_moving_counts(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    store_job j = job_of("feed", "dave", 1000, 4);
    CHECK_OK(store_job_insert(a.s, &j, "", err), err);
    store_job got;
    char *results = NULL;
    CHECK_OK(store_job_get(b.s, "feed", &got, NULL, &results, err), err);
    CHECK_STR(results, "[]");
    free(results);

    /* out of order, and ordinal 2 twice in one call: the second replaces the first */
    store_job_result r[3] = {{2, true, 0, "{\"o\":2,\"try\":1}"},
                             {0, false, 5, "{\"o\":0}"},
                             {2, false, 3, "{\"o\":2,\"try\":2}"}};
    CHECK_OK(store_job_add_results(a.s, "feed", r, 3, err), err);
    CHECK_OK(store_job_get(b.s, "feed", &got, NULL, &results, err), err);
    CHECK_INT(got.done, 2);
    CHECK_INT(got.failed, 1);
    CHECK_INT(got.chunks, 5);
    CHECK_STR(results, "[{\"o\":0},{\"o\":2,\"try\":2}]");
    free(results);

    /* redone after a crash, through the other node, with a new one: only the new one counts */
    store_job_result redo[2] = {{0, true, 9, "{\"o\":0,\"redone\":true}"}, {1, false, 2, "{\"o\":1}"}};
    CHECK_OK(store_job_add_results(b.s, "feed", redo, 2, err), err);
    CHECK_OK(store_job_get(a.s, "feed", &got, NULL, &results, err), err);
    CHECK_INT(got.done, 3);
    CHECK_INT(got.failed, 1);
    CHECK_INT(got.chunks, 7);
    CHECK_STR(results, "[{\"o\":0,\"redone\":true},{\"o\":1},{\"o\":2,\"try\":2}]");
    free(results);

    /* a result that is not JSON (or not UTF-8) fails the whole call: the good one with it is not
     * recorded and the counts stay */
    store_job_result bad[2] = {{3, false, 1, "{\"o\":3}"}, {4, false, 1, "{\"o\":"}};
    CHECK_INT(store_job_add_results(b.s, "feed", bad, 2, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "not valid JSON") != NULL, "%s", err);
    store_job_result latin1 = {3, false, 1, "{\"name\":\"caf\xe9\"}"};
    CHECK_INT(store_job_add_results(b.s, "feed", &latin1, 1, err), QR_EINVAL);
    store_job_result null_result = {3, false, 1, NULL};
    CHECK_INT(store_job_add_results(b.s, "feed", &null_result, 1, err), QR_EINVAL);
    CHECK_INT(store_job_add_results(b.s, "none", redo, 2, err), QR_ENOTFOUND);
    /* no results at all: the job must still exist */
    CHECK_OK(store_job_add_results(b.s, "feed", NULL, 0, err), err);
    CHECK_INT(store_job_add_results(b.s, "none", NULL, 0, err), QR_ENOTFOUND);
    CHECK_OK(store_job_get(a.s, "feed", &got, NULL, &results, err), err);
    CHECK_INT(got.done, 3);
    CHECK_INT(got.chunks, 7);
    CHECK_STR(results, "[{\"o\":0,\"redone\":true},{\"o\":1},{\"o\":2,\"try\":2}]");
    free(results);
    char count[32];
    CHECK(pg_value("SELECT count(*) FROM quarry.job_results", count, sizeof(count)));
    CHECK_STR(count, "3");

    /* an error message cut inside a character is recorded, its broken bytes as '?' */
    snprintf(got.state, sizeof(got.state), "failed");
    snprintf(got.error, sizeof(got.error), "document 'caf\xc3' failed");
    CHECK_OK(store_job_update(a.s, &got, err), err);
    CHECK_OK(store_job_get(b.s, "feed", &got, NULL, NULL, err), err);
    CHECK_STR(got.error, "document 'caf?' failed");
    CHECK_STR(got.state, "failed");
    node_close(&a);
    node_close(&b);
}
TEST(results_replace_without_moving_counts)
{
    RUN_WITH_PG(results_replace_without_moving_counts);
}

/* ---- listing ----------------------------------------------------------------------------------------------
 */

static void run_listing_pages_across_nodes(void)
{
    char err[QR_ERR_LEN] = "", ids[512], conninfo[320];
    /* a database whose text sorts by a language's rules (the fixture's sorts by bytes), as most
     * production databases do: the listing's order must not depend on it */
    CHECK(pg_run("CREATE DATABASE jobs_icu TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu"
                 " ICU_LOCALE 'en-US' LOCALE 'C'"));
    snprintf(conninfo, sizeof(conninfo), "%s dbname=jobs_icu", fx.conninfo);
    CHECK_OK(store_set_primary(conninfo, NULL, 5000, err), err);
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    /* ties on created_ms are broken by id, byte by byte ('Z' < 'a' < 'b'), whichever node took them */
    struct {
        const char *id;
        int64_t created_ms;
        bool on_a;
        const char *state;
    } js[] = {{"a7", 7000, true, "queued"},     {"b7", 7000, false, "succeeded"},
              {"Z7", 7000, true, "failed"},     {"b5", 5000, false, "queued"},
              {"a9", 9000, true, "succeeded"},  {"a1", 1000, true, "running"},
              {"b3", 3000, false, "succeeded"}, {"A3", 3000, false, "queued"}};
    for (size_t i = 0; i < sizeof(js) / sizeof(js[0]); i++) {
        store_job j = job_of(js[i].id, "dave", js[i].created_ms, 1);
        snprintf(j.state, sizeof(j.state), "%s", js[i].state);
        CHECK_OK(store_job_insert(js[i].on_a ? a.s : b.s, &j, "", err), err);
    }
    const char *newest_first = "a9,b7,a7,Z7,b5,b3,A3,a1";
    size_t pages = 0;
    for (size_t page = 1; page <= 9; page++) {
        CHECK_OK(walk(b.s, NULL, page, ids, sizeof(ids), &pages, err), err);
        CHECK_MSG(strcmp(ids, newest_first) == 0, "pages of %zu: %s", page, ids);
        CHECK_OK(walk(a.s, "", page, ids, sizeof(ids), &pages, err), err);
        CHECK_MSG(strcmp(ids, newest_first) == 0, "pages of %zu on A: %s", page, ids);
        CHECK_INT(pages, (8 + page - 1) / page);
    }
    CHECK_OK(walk(a.s, "succeeded", 2, ids, sizeof(ids), &pages, err), err);
    CHECK_STR(ids, "a9,b7,b3");
    CHECK_INT(pages, 2);
    CHECK_OK(walk(b.s, "queued", 1, ids, sizeof(ids), &pages, err), err);
    CHECK_STR(ids, "a7,b5,A3");
    CHECK_OK(walk(b.s, "cancelled", 3, ids, sizeof(ids), &pages, err), err);
    CHECK_STR(ids, "");

    /* after a job, from the middle of a tie */
    store_job *jobs = NULL;
    size_t n = 0;
    bool more = false;
    CHECK_OK(store_job_list(a.s, NULL, 7000, "b7", 2, &jobs, &n, &more, err), err);
    CHECK_STR(ids_of(jobs, n, ids, sizeof(ids)), "a7,Z7");
    CHECK(more);
    free(jobs);
    CHECK_OK(store_job_list(a.s, NULL, 3000, "A3", 10, &jobs, &n, &more, err), err);
    CHECK_STR(ids_of(jobs, n, ids, sizeof(ids)), "a1");
    CHECK(!more);
    free(jobs);
    node_close(&a);
    node_close(&b);
}
TEST(listing_pages_across_nodes)
{
    RUN_WITH_PG(listing_pages_across_nodes);
}

/* ---- pruning
 * ------------------------------------------------------------------------------------------------ */

static void run_prune_every_nodes_finished_jobs(void)
{
    char err[QR_ERR_LEN] = "", ids[256];
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    store_job a1 = job_of("a1", "dave", 1000, 1), b1 = job_of("b1", "erin", 1100, 1);
    store_job a2 = job_of("a2", "dave", 1200, 1);
    snprintf(a1.state, sizeof(a1.state), "succeeded");
    a1.finished_ms = 5000;
    snprintf(b1.state, sizeof(b1.state), "failed");
    b1.finished_ms = 6000;
    CHECK_OK(store_job_insert(a.s, &a1, "", err), err);
    CHECK_OK(store_job_insert(b.s, &b1, "", err), err);
    CHECK_OK(store_job_insert(a.s, &a2, "", err), err); /* unfinished: never pruned */
    store_job_result r = {0, false, 1, "{\"o\":0}"};
    CHECK_OK(store_job_add_results(a.s, "a1", &r, 1, err), err);
    CHECK_OK(store_job_add_results(b.s, "b1", &r, 1, err), err);

    size_t pruned = 99;
    CHECK_OK(store_job_prune(b.s, 5000, &pruned, err), err);
    CHECK_INT(pruned, 0);
    /* B prunes A's job */
    CHECK_OK(store_job_prune(b.s, 5001, &pruned, err), err);
    CHECK_INT(pruned, 1);
    store_job got;
    CHECK_INT(store_job_get(a.s, "a1", &got, NULL, NULL, err), QR_ENOTFOUND);
    char count[32];
    CHECK(pg_value("SELECT count(*) FROM quarry.job_results WHERE job = 'a1'", count, sizeof(count)));
    CHECK_STR(count, "0");
    CHECK_OK(store_job_prune(a.s, 1000000, &pruned, err), err);
    CHECK_INT(pruned, 1);
    CHECK(pg_value("SELECT count(*) FROM quarry.job_results", count, sizeof(count)));
    CHECK_STR(count, "0");
    size_t pages = 0;
    CHECK_OK(walk(b.s, NULL, 10, ids, sizeof(ids), &pages, err), err);
    CHECK_STR(ids, "a2");
    CHECK_OK(unfinished_ids(a.s, ids, sizeof(ids), err), err);
    CHECK_STR(ids, "a2");
    node_close(&a);
    node_close(&b);
}
TEST(prune_every_nodes_finished_jobs)
{
    RUN_WITH_PG(prune_every_nodes_finished_jobs);
}

/* ---- bad input
 * ---------------------------------------------------------------------------------------------- */

static void run_bad_input_changes_nothing(void)
{
    char err[QR_ERR_LEN] = "", ids[256];
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    store_job j = job_of("keep", "dave", 1000, 2);
    CHECK_OK(store_job_insert(a.s, &j, "[\"a\"]", err), err);

    /* a taken id, from the other node: refused, and the job is still A's as it was */
    store_job other = job_of("keep", "mallory", 2000, 9);
    CHECK_INT(store_job_insert(b.s, &other, "[\"b\"]", err), QR_EEXIST);
    CHECK_MSG(strstr(err, "keep") != NULL, "%s", err);
    /* ids empty or longer than 32 bytes, or not UTF-8 */
    store_job empty = job_of("", "dave", 1000, 1), latin1 = job_of("caf\xe9", "dave", 1000, 1);
    store_job longer = job_of("x", "dave", 1000, 1);
    memset(longer.id, 'x', 32);
    CHECK_OK(store_job_insert(a.s, &longer, "", err), err); /* 32: the longest */
    const char id33[] = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    CHECK_INT(store_job_insert(a.s, &empty, "", err), QR_EINVAL);
    CHECK_INT(store_job_insert(b.s, &latin1, "", err), QR_EINVAL);
    CHECK_INT(store_job_update(b.s, &empty, err), QR_EINVAL);
    store_job got;
    CHECK_INT(store_job_get(b.s, "", &got, NULL, NULL, err), QR_EINVAL);
    CHECK_INT(store_job_get(b.s, id33, &got, NULL, NULL, err), QR_EINVAL);
    CHECK_INT(store_job_get(b.s, NULL, &got, NULL, NULL, err), QR_EINVAL);
    store_job_result r = {0, false, 1, "{}"};
    CHECK_INT(store_job_add_results(b.s, id33, &r, 1, err), QR_EINVAL);
    CHECK_INT(store_job_add_results(b.s, "", &r, 1, err), QR_EINVAL);
    /* a user or manifest that is not UTF-8 */
    store_job bad_user = job_of("bad-user", "caf\xe9", 1000, 1);
    CHECK_INT(store_job_insert(b.s, &bad_user, "", err), QR_EINVAL);
    store_job bad_manifest = job_of("bad-manifest", "dave", 1000, 1);
    CHECK_INT(store_job_insert(b.s, &bad_manifest, "[\"caf\xe9\"]", err), QR_EINVAL);
    /* an update of a job nobody has */
    store_job ghost = job_of("ghost", "dave", 1000, 1);
    CHECK_INT(store_job_update(b.s, &ghost, err), QR_ENOTFOUND);

    /* limits outside 1..10000 */
    store_job *jobs = (store_job *)&got;
    size_t n = 7;
    bool more = true;
    CHECK_INT(store_job_list(b.s, NULL, 0, NULL, 0, &jobs, &n, &more, err), QR_EINVAL);
    CHECK(jobs == NULL && n == 0 && !more);
    CHECK_INT(store_job_list(b.s, NULL, 0, NULL, 10001, &jobs, &n, &more, err), QR_EINVAL);
    CHECK_OK(store_job_list(b.s, NULL, 0, NULL, 10000, &jobs, &n, &more, err), err);
    CHECK_INT(n, 2);
    free(jobs);

    /* nothing changed: the two jobs, A's as inserted, no results */
    size_t pages = 0;
    CHECK_OK(walk(b.s, NULL, 10, ids, sizeof(ids), &pages, err), err);
    CHECK_STR(ids, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx,keep");
    char *staged = NULL, *results = NULL;
    CHECK_OK(store_job_get(b.s, "keep", &got, &staged, &results, err), err);
    CHECK_STR(got.user, "dave");
    CHECK_INT(got.created_ms, 1000);
    CHECK_INT(got.docs, 2);
    CHECK_INT(got.done, 0);
    CHECK_STR(staged, "[\"a\"]");
    CHECK_STR(results, "[]");
    free(staged);
    free(results);
    CHECK_OK(unfinished_ids(a.s, ids, sizeof(ids), err), err);
    CHECK_STR(ids, "keep,xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    CHECK_OK(unfinished_ids(b.s, ids, sizeof(ids), err), err);
    CHECK_STR(ids, "");
    node_close(&a);
    node_close(&b);
}
TEST(bad_input_changes_nothing)
{
    RUN_WITH_PG(bad_input_changes_nothing);
}

/* ---- a lost connection
 * ------------------------------------------------------------------------------------- */

/* Ends every other client's connection to the fixture's server (what a restart or a failover does
 * to the nodes' connections). */
static bool cut_connections(void)
{
    char n[32];
    return pg_value("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
                    n, sizeof(n)) &&
           atoi(n) > 0;
}

/* The process's connection, found lost, is made again: a call that may run twice is tried once
 * more and succeeds; an insertion is not (its commit may have happened), fails, and can be sent
 * again. */
static void run_lost_connection_is_made_again(void)
{
    char err[QR_ERR_LEN] = "", ids[256];
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    store_job j = job_of("first", "dave", 1000, 2), got;
    CHECK_OK(store_job_insert(a.s, &j, "", err), err);
    CHECK(cut_connections());
    CHECK_OK(store_job_get(b.s, "first", &got, NULL, NULL, err), err);
    CHECK(cut_connections());
    store_job_result r = {0, false, 3, "{\"o\":0}"};
    CHECK_OK(store_job_add_results(a.s, "first", &r, 1, err), err);
    CHECK(cut_connections());
    snprintf(j.state, sizeof(j.state), "running");
    j.done = 1;
    CHECK_OK(store_job_update(b.s, &j, err), err);
    CHECK(cut_connections());
    CHECK_OK(unfinished_ids(a.s, ids, sizeof(ids), err), err);
    CHECK_STR(ids, "first");

    CHECK(cut_connections());
    store_job second = job_of("second", "dave", 2000, 1);
    CHECK_INT(store_job_insert(a.s, &second, "", err), QR_EUNAVAILABLE);
    CHECK_INT(store_job_get(a.s, "second", &got, NULL, NULL, err), QR_ENOTFOUND);
    CHECK_OK(store_job_insert(a.s, &second, "", err), err);
    char *results = NULL;
    CHECK_OK(store_job_get(b.s, "first", &got, NULL, &results, err), err);
    CHECK_STR(got.state, "running");
    CHECK_INT(got.done, 1);
    CHECK_STR(results, "[{\"o\":0}]");
    free(results);
    node_close(&a);
    node_close(&b);
}
TEST(lost_connection_is_made_again)
{
    RUN_WITH_PG(lost_connection_is_made_again);
}

/* ---- PostgreSQL stopped
 * ------------------------------------------------------------------------------------- */

static void run_stopped_fails_closed(void)
{
    char err[QR_ERR_LEN] = "", ids[256];
    node a;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    store_job j = job_of("before", "dave", 1000, 2);
    CHECK_OK(store_job_insert(a.s, &j, "", err), err);
    CHECK_OK(unfinished_ids(a.s, ids, sizeof(ids), err), err);
    CHECK_STR(ids, "before");

    stop_pg();
    store_job later = job_of("later", "dave", 2000, 1), got;
    CHECK_INT(store_job_insert(a.s, &later, "", err), QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "PostgreSQL") != NULL || strstr(err, "store.postgres") != NULL, "%s", err);
    CHECK_INT(store_job_get(a.s, "before", &got, NULL, NULL, err), QR_EUNAVAILABLE);
    CHECK_INT(store_job_update(a.s, &j, err), QR_EUNAVAILABLE);
    store_job_result r = {0, false, 1, "{}"};
    CHECK_INT(store_job_add_results(a.s, "before", &r, 1, err), QR_EUNAVAILABLE);
    store_job *jobs = NULL;
    size_t n = 0, pruned = 0;
    bool more = false;
    CHECK_INT(store_job_list(a.s, NULL, 0, NULL, 10, &jobs, &n, &more, err), QR_EUNAVAILABLE);
    CHECK(jobs == NULL && n == 0);
    CHECK_INT(store_job_unfinished(a.s, &jobs, &n, err), QR_EUNAVAILABLE);
    CHECK(jobs == NULL && n == 0);
    CHECK_INT(store_job_prune(a.s, 1000000, &pruned, err), QR_EUNAVAILABLE);

    /* the node's own store holds no job: neither the one PostgreSQL took nor the refused ones */
    store_close(a.s);
    a.s = NULL;
    store_clear_primary();
    CHECK_OK(store_open(a.dir, &a.s, err), err);
    CHECK(!store_routed(a.s));
    CHECK_OK(store_job_list(a.s, NULL, 0, NULL, 10, &jobs, &n, &more, err), err);
    CHECK_INT(n, 0);
    free(jobs);
    CHECK_INT(store_job_get(a.s, "later", &got, NULL, NULL, err), QR_ENOTFOUND);
    node_close(&a);
}
TEST(stopped_fails_closed)
{
    RUN_WITH_PG(stopped_fails_closed);
}
