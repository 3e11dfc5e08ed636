/*
 * Several quarry nodes on one PostgreSQL system of record (store.backend = postgres, issue #24),
 * in one process: each node is a data directory of its own whose store handles are routed
 * (store_set_primary) to a throwaway PostgreSQL 15 on loopback (tests/pg_fixture.c). Writes made
 * through one node are read back at once there and reach the others under the same chunk ids and
 * counters; a revocation or delete made through one node is never returned by a search on another
 * that began after it; a node cut from PostgreSQL fails its searches closed; the maintainer's
 * follower thread applies the feed in the background.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "core/core.h"
#include "index/feed.h"
#include "index/index.h"
#include "index/maintainer.h"
#include "retrieval/retrieval.h"
#include "tests/harness.h"
#include "tests/pg_routed.h"

#define DIM 8

/* A node: a data directory, a routed store handle on it and a retrieval handle (FTS5 ranks). */
typedef struct {
    char dir[64];
    store *s;
    retrieval *r;
} node;

static bool node_open(node *n, char *err)
{
    memset(n, 0, sizeof(*n));
    snprintf(n->dir, sizeof(n->dir), "/tmp/quarry-nodes-XXXXXX");
    if (!mkdtemp(n->dir))
        return false;
    retrieval_opts o;
    retrieval_opts_default(&o);
    o.mode = RETRIEVAL_BM25;
    o.bm25_pruned = false;
    return !store_open(n->dir, &n->s, err) && store_routed(n->s) &&
           !retrieval_open(n->s, NULL, &o, &n->r, err);
}

static void node_close(node *n)
{
    retrieval_close(n->r);
    store_close(n->s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", n->dir);
    if (n->dir[0] && system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", n->dir);
    memset(n, 0, sizeof(*n));
}

/* A document of one or two chunks ('|' splits them), readable by acl (comma-separated). */
static qr_status put(store *s, const char *id, const char *acl, const char *text, int version, char *err)
{
    char buf[512], aclbuf[256], hash[65];
    snprintf(buf, sizeof(buf), "%s", text);
    snprintf(aclbuf, sizeof(aclbuf), "%s", acl);
    const char *principals[8];
    size_t np = 0;
    for (char *p = strtok(aclbuf, ","); p && np < 8; p = strtok(NULL, ","))
        principals[np++] = p;
    store_chunk chunks[2];
    size_t nc = 0, len = strlen(buf);
    char *bar = strchr(buf, '|');
    if (bar) {
        *bar = ' ';
        chunks[nc++] = (store_chunk){0, (size_t)(bar - buf), ""};
        chunks[nc++] = (store_chunk){(size_t)(bar - buf) + 1, len, "Part > Two"};
    } else {
        chunks[nc++] = (store_chunk){0, len, ""};
    }
    float vecs[2 * DIM];
    for (size_t i = 0; i < nc * DIM; i++)
        vecs[i] = (float)((i * 7 + (size_t)version + strlen(id)) % 11) - 5.0f;
    snprintf(hash, sizeof(hash), "%064x", (unsigned)(version * 7919 + (int)strlen(text)));
    store_document d = {.doc_id = id,
                        .title = id,
                        .uri = "file:///x",
                        .content_type = "text/plain",
                        .acl = principals,
                        .nacl = np,
                        .content_hash = hash,
                        .text = buf,
                        .text_len = len};
    store_put_result res;
    return store_put(s, &d, chunks, nc, vecs, DIM, &res, err);
}

/* Whether a search on n as principal finds doc_id (BM25 over FTS5, words of its text). */
static qr_status finds(node *n, const char *principal, const char *query, const char *doc_id, bool *found,
                       char *err)
{
    const char *p[1] = {principal};
    retrieval_caller c = {p, 1, false};
    retrieval_request q = {.query = query, .mode = RETRIEVAL_BM25, .k = 10};
    retrieval_result *res = NULL;
    qr_status st = retrieval_search(n->r, &c, &q, &res, err);
    *found = false;
    for (size_t i = 0; !st && i < res->nhits; i++)
        *found |= strcmp(res->hits[i].doc_id, doc_id) == 0;
    retrieval_result_free(res);
    return st;
}

/* A node's live state as text: every live chunk (id, first vector value) in id order, then every
 * document (key, counter of its last change, ACL). The change logs themselves may differ: a node
 * that caught up in one go never saw the chunks replaced before it started, and stamps a document's
 * chunks with the change that last wrote the document. */
static qr_status chunk_list(void *ctx, const store_change *c, char *err)
{
    (void)err;
    if (!c->deleted)
        qr_buf_printf(ctx, "%lld:%.4f;", (long long)c->chunk_id, c->vector ? (double)c->vector[0] : 0.0);
    return QR_OK;
}

static qr_status doc_list(void *ctx, const store_doc_change *d, char *err)
{
    (void)err;
    qr_buf_printf(ctx, "\ndoc %lld@%lld", (long long)d->doc, (long long)d->counter);
    for (size_t i = 0; i < d->nacl; i++)
        qr_buf_printf(ctx, " %s", d->acl[i]);
    return QR_OK;
}

static qr_status state_of(store *s, qr_buf *b, int64_t *counter, char *err)
{
    int64_t c2 = 0;
    qr_status st = store_changes_since(s, 0, chunk_list, b, counter, err);
    if (!st)
        st = store_docs_changed_since(s, 0, doc_list, b, &c2, err);
    if (!st && c2 != *counter)
        st = qr_fail(err, QR_EINTERNAL, "the store moved between two reads (%lld, %lld)", (long long)*counter,
                     (long long)c2);
    return st;
}

static bool same_chunks(store *a, store *b, char *err)
{
    qr_buf x, y;
    qr_buf_init(&x, 1 << 22);
    qr_buf_init(&y, 1 << 22);
    int64_t ca = 0, cb = 0;
    err[0] = '\0';
    bool same = !state_of(a, &x, &ca, err) && !state_of(b, &y, &cb, err) && !qr_buf_failed(&x) &&
                !qr_buf_failed(&y) && ca == cb && qr_buf_len(&x) > 0 &&
                strcmp(qr_buf_str(&x), qr_buf_str(&y)) == 0;
    if (!same && !*err)
        snprintf(err, QR_ERR_LEN, "counters %lld / %lld, state %.200s / %.200s", (long long)ca, (long long)cb,
                 qr_buf_str(&x), qr_buf_str(&y));
    qr_buf_release(&x);
    qr_buf_release(&y);
    return same;
}

/* ---- cases ----------------------------------------------------------------------------------- */

static void run_writes_reach_every_node(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_check_embedding(a.s, "toy", DIM, err), err);
    char id[32], text[128];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof(id), "doc-%d", i);
        snprintf(text, sizeof(text), "turbine blade number%d|coolant channel %d", i, i);
        CHECK_OK(put(a.s, id, i % 2 ? "group:eng" : "public", text, 1, err), err);
        /* read back at once on the node that wrote it */
        char hash[65];
        bool found = false;
        CHECK_OK(store_get_hash(a.s, id, hash, &found, err), err);
        CHECK(found);
    }
    CHECK_OK(put(a.s, "doc-3", "group:eng", "turbine blade rewritten|second part", 2, err),
             err); /* new ids */
    CHECK_OK(store_delete(a.s, "doc-4", err), err);
    const char *acl[] = {"user:ann"};
    CHECK_OK(store_set_acl(a.s, "doc-5", acl, 1, err), err);
    /* node b has seen nothing yet: a search there fences first */
    bool found = false;
    CHECK_OK(finds(&b, "user:ann", "turbine", "doc-5", &found, err), err);
    CHECK(found);
    CHECK_OK(finds(&b, "group:eng", "number4", "doc-4", &found, err), err);
    CHECK(!found);
    CHECK_MSG(same_chunks(a.s, b.s, err), "the nodes differ: %s", err);
    /* a third node starting from nothing arrives at the same chunks and counters */
    node c;
    CHECK_OK(node_open(&c, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_fence(c.s, err), err);
    CHECK_MSG(same_chunks(a.s, c.s, err), "a new node differs: %s", err);
    CHECK_OK(store_verify(c.s, err), err);
    node_close(&a);
    node_close(&b);
    node_close(&c);
}
TEST(writes_reach_every_node)
{
    RUN_WITH_PG(writes_reach_every_node);
}

static void run_revocations_are_effective_at_once(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_check_embedding(a.s, "toy", DIM, err), err);
    CHECK_OK(put(a.s, "secret", "user:ann", "quarterly forecast figures", 1, err), err);
    CHECK_OK(put(a.s, "other", "public", "quarterly newsletter", 1, err), err);
    const char *ann[] = {"user:ann"}, *nobody[] = {"group:board"};
    int stale = 0, missed = 0;
    for (int i = 0; i < 200; i++) {
        bool found = false;
        if (i % 10 == 9) { /* a delete and a re-add instead of an ACL change */
            CHECK_OK(store_delete(a.s, "secret", err), err);
            CHECK_OK(finds(&b, "user:ann", "forecast", "secret", &found, err), err);
            stale += found;
            CHECK_OK(put(a.s, "secret", "user:ann", "quarterly forecast figures", i, err), err);
        } else {
            CHECK_OK(store_set_acl(a.s, "secret", nobody, 1, err), err);
            CHECK_OK(finds(&b, "user:ann", "forecast", "secret", &found, err), err);
            stale += found;
            CHECK_OK(store_set_acl(a.s, "secret", ann, 1, err), err);
        }
        CHECK_OK(finds(&b, "user:ann", "forecast", "secret", &found, err), err);
        missed += !found;
    }
    CHECK_MSG(stale == 0, "a revoked or deleted document was returned %d times", stale);
    CHECK_MSG(missed == 0, "a granted document was missed %d times", missed);
    node_close(&a);
    node_close(&b);
}
TEST(revocations_are_effective_at_once)
{
    RUN_WITH_PG(revocations_are_effective_at_once);
}

static void run_cut_off_node_fails_closed(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_check_embedding(a.s, "toy", DIM, err), err);
    CHECK_OK(put(a.s, "d1", "public", "harbour crane manual", 1, err), err);
    bool found = false;
    CHECK_OK(finds(&b, "public", "crane", "d1", &found, err), err);
    CHECK(found);
    int64_t before = 0, after = 0;
    CHECK_OK(store_change_counter(b.s, &before, err), err);
    stop_pg();
    /* PostgreSQL is gone: searches fail closed, writes fail and change nothing */
    CHECK(finds(&b, "public", "crane", "d1", &found, err) == QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "failing closed") != NULL, "%s", err);
    CHECK(put(a.s, "d2", "public", "harbour crane spare parts", 1, err) == QR_EUNAVAILABLE);
    char hash[65];
    CHECK_OK(store_get_hash(a.s, "d2", hash, &found, err), err);
    CHECK(!found);
    CHECK_OK(store_change_counter(b.s, &after, err), err);
    CHECK_INT(after, before);
    node_close(&a);
    node_close(&b);
}
TEST(cut_off_node_fails_closed)
{
    RUN_WITH_PG(cut_off_node_fails_closed);
}

/* Opens n's data directory again: a new handle, routed as the process is now. */
static bool node_reopen(node *n, char *err)
{
    retrieval_close(n->r);
    store_close(n->s);
    n->r = NULL;
    n->s = NULL;
    retrieval_opts o;
    retrieval_opts_default(&o);
    o.mode = RETRIEVAL_BM25;
    o.bm25_pruned = false;
    return !store_open(n->dir, &n->s, err) && store_routed(n->s) &&
           !retrieval_open(n->s, NULL, &o, &n->r, err);
}

static bool exec_sql(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    bool ok = r && (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
    return ok;
}

/* Whether sql returns a row there. */
static bool exec_rows(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    bool rows = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
    PQclear(r);
    PQfinish(c);
    return rows;
}

/* With no primary to ask, a node that names every member (store.postgres_members) applies the feed
 * up to the highest counter among them: a standby whose replay is paused comes first in the list,
 * and the revocation and delete made before still hold on the node. Writes fail and change
 * nothing; one member that does not answer fails the search closed, as a primary that is a standby
 * does. */
static void run_no_primary_searches_go_on(void)
{
    char err[QR_ERR_LEN] = "";
    pg_fixture sb;
    int rc = pg_fixture_start_standby(&sb, &fx, err);
    CHECK_MSG(rc == 0, "cannot start the standby: %s", err);
    if (rc)
        return;
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_check_embedding(a.s, "toy", DIM, err), err);
    CHECK_OK(put(a.s, "d1", "public", "harbour crane manual", 1, err), err);
    CHECK_OK(put(a.s, "d2", "public", "harbour crane spare parts", 1, err), err);
    bool found = false;
    CHECK_OK(finds(&b, "public", "crane", "d1", &found, err), err);
    CHECK(found);
    int64_t head = 0, counter = 0;
    CHECK_OK(store_change_counter(a.s, &head, err), err);
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT 1 FROM quarry.counter WHERE value >= %lld", (long long)head);
    for (int i = 0; i < 1000 && !exec_rows(sb.conninfo, sql); i++)
        usleep(10000);
    CHECK_MSG(exec_rows(sb.conninfo, sql), "the standby did not replay change %lld", (long long)head);
    CHECK(exec_sql(sb.conninfo, "SELECT pg_wal_replay_pause()"));
    const char *ops[] = {"group:ops"};
    CHECK_OK(store_set_acl(a.s, "d1", ops, 1, err), err);
    CHECK_OK(store_delete(a.s, "d2", err), err);
    CHECK_OK(store_change_counter(a.s, &head, err), err);

    char members[256];
    snprintf(members, sizeof(members), "host=127.0.0.1,127.0.0.1 port=%d,%d user=quarry dbname=postgres",
             sb.port, fx.port);
    CHECK_OK(store_set_primary(NO_PRIMARY, NULL, 1000, err), err);
    CHECK_OK(store_set_members(members, err), err);
    CHECK_OK(node_reopen(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(finds(&b, "public", "crane", "d1", &found, err), err);
    CHECK_MSG(!found, "a revoked document was returned with no primary");
    CHECK_OK(finds(&b, "public", "crane", "d2", &found, err), err);
    CHECK_MSG(!found, "a deleted document was returned with no primary");
    CHECK_OK(finds(&b, "group:ops", "crane", "d1", &found, err), err);
    CHECK(found);
    CHECK_OK(store_change_counter(b.s, &counter, err), err);
    CHECK_INT(counter, head);
    /* writes have nowhere to go */
    CHECK(put(b.s, "d3", "public", "harbour crane rails", 1, err) == QR_EUNAVAILABLE);
    CHECK_OK(store_change_counter(b.s, &counter, err), err);
    CHECK_INT(counter, head);
    /* the background follower goes on from the members too */
    int64_t through = 0, at = 0, primary_head = 0;
    CHECK_OK(store_follow_poll(b.s, 16, &through, &at, &primary_head, err), err);
    CHECK_INT(primary_head, head);

    /* a member that does not answer might be a primary this node cannot see */
    snprintf(members, sizeof(members), "host=127.0.0.1,127.0.0.1 port=%d,1 user=quarry dbname=postgres",
             sb.port);
    CHECK_OK(store_set_members(members, err), err);
    CHECK_OK(node_reopen(&b, err) ? QR_OK : QR_EIO, err);
    CHECK(finds(&b, "public", "crane", "d1", &found, err) == QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "store.postgres_members") && strstr(err, "failing closed"), "%s", err);

    /* store.postgres reaching a standby: not a primary, whose counter could be behind */
    CHECK_OK(store_set_members(NULL, err), err);
    CHECK_OK(store_set_primary(sb.conninfo, NULL, 5000, err), err);
    CHECK_OK(node_reopen(&b, err) ? QR_OK : QR_EIO, err);
    CHECK(finds(&b, "public", "crane", "d1", &found, err) == QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "not the primary") != NULL, "%s", err);

    /* member lists that name no server, or lists of different lengths */
    CHECK(store_set_members("port=5432,5433 user=quarry", err) == QR_EINVAL);
    CHECK(store_set_members("host=a,b port=1,2,3", err) == QR_EINVAL);
    CHECK(store_set_members("host=a,,b", err) == QR_EINVAL);
    CHECK(store_set_members("host='a", err) == QR_EINVAL);
    CHECK_OK(store_set_members("postgresql://127.0.0.1:6001,127.0.0.1:6002/postgres?user=quarry", err), err);
    node_close(&a);
    node_close(&b);
    pg_fixture_stop(&sb);
}
TEST(no_primary_searches_go_on)
{
    RUN_WITH_PG(no_primary_searches_go_on);
}

typedef struct {
    const char *dir;
    int thread;
    qr_status st;
    char err[QR_ERR_LEN];
} writer_arg;

/* 40 writes through a handle of its own: shared and own documents, updates, deletes. */
static void *writer(void *p)
{
    writer_arg *w = p;
    store *s = NULL;
    if ((w->st = store_open(w->dir, &s, w->err)))
        return NULL;
    char id[32], text[96];
    for (int i = 0; i < 40 && !w->st; i++) {
        snprintf(id, sizeof(id), i % 3 ? "own-%d-%d" : "shared-%d", i % 3 ? w->thread : i % 7, i);
        snprintf(text, sizeof(text), "valve %d pressure %d|written by %d", i, w->thread, w->thread);
        w->st = put(s, id, w->thread % 2 ? "group:ops" : "public", text, w->thread * 100 + i, w->err);
        if (!w->st && i % 5 == 4) {
            w->st = store_delete(s, id, w->err);
            if (w->st == QR_ENOTFOUND) /* another writer deleted the shared one first */
                w->st = QR_OK;
        }
    }
    store_close(s);
    return NULL;
}

static void run_concurrent_writers_converge(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b, c;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_check_embedding(a.s, "toy", DIM, err), err);
    CHECK_OK(store_check_embedding(b.s, "toy", DIM, err), err);
    pthread_t t[4];
    writer_arg w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (writer_arg){.dir = i % 2 ? b.dir : a.dir, .thread = i};
        CHECK(pthread_create(&t[i], NULL, writer, &w[i]) == 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++)
        CHECK_MSG(w[i].st == QR_OK, "writer %d: %s", i, w[i].err);
    CHECK_OK(store_fence(a.s, err), err);
    CHECK_OK(store_fence(b.s, err), err);
    CHECK_MSG(same_chunks(a.s, b.s, err), "the writers' nodes differ: %s", err);
    CHECK_OK(node_open(&c, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_fence(c.s, err), err);
    CHECK_MSG(same_chunks(a.s, c.s, err), "a new node differs: %s", err);
    CHECK_OK(store_verify(a.s, err), err);
    CHECK_OK(store_verify(b.s, err), err);
    node_close(&a);
    node_close(&b);
    node_close(&c);
}
TEST(concurrent_writers_converge)
{
    RUN_WITH_PG(concurrent_writers_converge);
}

static void run_maintainer_follows_in_the_background(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_check_embedding(a.s, "toy", DIM, err), err);
    index_maintainer_opts mo = {.data_dir = b.dir, .refresh_ms = 1000, .poll_ms = 10};
    vindex_opts_default(&mo.vopts);
    bm25_opts_default(&mo.bopts);
    index_maintainer *m = NULL;
    CHECK_OK(index_maintainer_start(&mo, &m, err), err);
    CHECK_OK(put(a.s, "bg", "public", "background follower test", 1, err), err);
    int64_t target = 0;
    CHECK_OK(store_change_counter(a.s, &target, err), err);
    index_maintainer_status ms;
    for (int i = 0; i < 1000; i++) { /* up to 10 s: the follower polls every 10 ms */
        index_maintainer_get_status(m, &ms);
        if (ms.feed_counter >= target && ms.visible >= target)
            break;
        usleep(10000);
    }
    CHECK(ms.following);
    CHECK_MSG(ms.feed_ok, "%s", ms.feed_error);
    CHECK_INT(ms.feed_counter, target);
    /* applied without a fence: a plain read of node b's store finds it */
    char hash[65];
    bool found = false;
    CHECK_OK(store_get_hash(b.s, "bg", hash, &found, err), err);
    CHECK(found);
    index_maintainer_stop(m);
    node_close(&a);
    node_close(&b);
}
TEST(maintainer_follows_in_the_background)
{
    RUN_WITH_PG(maintainer_follows_in_the_background);
}

/* A batch on a routed handle is one transaction on the primary: nothing of it is seen before
 * its commit, everything after; a refused document leaves the rest; a rolled-back batch leaves
 * nothing. */
static void run_batches_commit_on_the_primary_at_once(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_check_embedding(a.s, "toy", DIM, err), err);
    CHECK_OK(put(a.s, "before", "public", "gearbox before the batch", 1, err), err);
    int64_t start = 0, end = 0;
    CHECK_OK(store_change_counter(a.s, &start, err), err);
    CHECK_OK(store_batch_begin(a.s, err), err);
    CHECK(store_in_batch(a.s));
    char id[32], text[96];
    for (int i = 0; i < 30; i++) {
        snprintf(id, sizeof(id), "batch-%d", i);
        snprintf(text, sizeof(text), "gearbox oil %d|bearing %d", i, i);
        CHECK_OK(put(a.s, id, "public", text, 1, err), err);
    }
    CHECK_OK(put(a.s, "before", "public", "gearbox before the batch", 1, err), err);     /* unchanged */
    CHECK(put(a.s, "bad", "no-such-kind:x", "gearbox", 1, err) == QR_EINVAL);            /* refused */
    CHECK_OK(put(a.s, "batch-0", "public", "gearbox oil replaced|flange", 2, err), err); /* new content */
    CHECK_OK(put(a.s, "batch-1", "group:ops", "gearbox oil 1|bearing 1", 1, err), err);  /* a new ACL */
    CHECK_OK(put(a.s, "batch-1", "group:ops", "gearbox oil 1|bearing 1", 1, err), err);  /* unchanged */
    /* not committed: another node sees none of it */
    bool found = false;
    CHECK_OK(finds(&b, "public", "bearing", "batch-3", &found, err), err);
    CHECK(!found);
    CHECK_OK(store_batch_commit(a.s, err), err);
    CHECK(!store_in_batch(a.s));
    CHECK_OK(finds(&b, "public", "bearing", "batch-3", &found, err), err);
    CHECK(found);
    CHECK_OK(finds(&b, "public", "flange", "batch-0", &found, err), err);
    CHECK(found);
    CHECK_OK(finds(&b, "public", "bearing", "batch-1", &found, err), err);
    CHECK(!found);
    CHECK_OK(finds(&b, "group:ops", "bearing", "batch-1", &found, err), err);
    CHECK(found);
    /* one counter per change made, none for what was unchanged or refused: gap-free */
    CHECK_OK(store_change_counter(b.s, &end, err), err);
    CHECK_INT(end - start, 32);
    CHECK_MSG(same_chunks(a.s, b.s, err), "the nodes differ: %s", err);
    /* a rolled-back batch leaves nothing on the primary */
    CHECK_OK(store_batch_begin(a.s, err), err);
    CHECK_OK(put(a.s, "gone", "public", "gearbox rolled back", 1, err), err);
    store_batch_rollback(a.s);
    CHECK_OK(finds(&b, "public", "rolled", "gone", &found, err), err);
    CHECK(!found);
    char hash[65];
    CHECK_OK(store_fence(a.s, err), err);
    CHECK_OK(store_get_hash(a.s, "gone", hash, &found, err), err);
    CHECK(!found);
    CHECK_MSG(same_chunks(a.s, b.s, err), "the nodes differ: %s", err);
    node_close(&a);
    node_close(&b);
}
TEST(batches_commit_on_the_primary_at_once)
{
    RUN_WITH_PG(batches_commit_on_the_primary_at_once);
}

/* A primary whose counter went below what a node applied (a failover to a standby that missed
 * acknowledged writes, simulated by setting the counter row back) makes that node fail closed,
 * its searches and its follower's polls, with a message that says to rebuild it. */
static void run_diverged_primary_fails_closed(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_check_embedding(a.s, "toy", DIM, err), err);
    char id[16];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "d%d", i);
        CHECK_OK(put(a.s, id, "public", "turbine housing", i + 1, err), err);
    }
    bool found = false;
    CHECK_OK(finds(&b, "public", "turbine", "d4", &found, err), err);
    CHECK(found);
    PGconn *c = PQconnectdb(fx.conninfo);
    CHECK(PQstatus(c) == CONNECTION_OK);
    PGresult *r = PQexec(c, "UPDATE quarry.counter SET value = 2");
    bool updated = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    PQfinish(c);
    CHECK(updated);
    CHECK(finds(&b, "public", "turbine", "d4", &found, err) == QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "rebuild this node") != NULL, "%s", err);
    int64_t counter = 0, head = 0, primary = 0;
    CHECK(store_follow_poll(b.s, 16, &counter, &head, &primary, err) == QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "rebuild this node") != NULL, "%s", err);
    /* a node that starts from nothing follows the primary as it is now */
    node c2;
    CHECK_OK(node_open(&c2, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_fence(c2.s, err), err);
    node_close(&a);
    node_close(&b);
    node_close(&c2);
}
TEST(diverged_primary_fails_closed)
{
    RUN_WITH_PG(diverged_primary_fails_closed);
}

/* A failover to a standby that missed writes a node had applied, after which the new primary's
 * counter passed the node's again with other changes: counters alone do not tell, the node's last
 * change does (store_route.c, check_last). Before it, a document changed again or deleted on the
 * primary after the node applied it is no divergence. */
static void run_lost_write_is_noticed(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b, c;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_check_embedding(a.s, "toy", DIM, err), err);
    char id[16];
    for (int i = 1; i <= 4; i++) {
        snprintf(id, sizeof(id), "d%d", i);
        CHECK_OK(put(a.s, id, "public", "turbine housing", i, err), err);
    }
    bool found = false;
    CHECK_OK(finds(&b, "public", "turbine", "d4", &found, err), err);
    CHECK(found);
    /* changed again, then deleted, on the primary after b applied it: b reconnects each time */
    CHECK_OK(put(a.s, "d4", "public", "turbine housing, revised", 9, err), err);
    CHECK_OK(node_reopen(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(finds(&b, "public", "revised", "d4", &found, err), err);
    CHECK(found);
    CHECK_OK(store_delete(a.s, "d4", err), err);
    CHECK_OK(node_reopen(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(finds(&b, "public", "turbine", "d3", &found, err), err);
    CHECK(found);
    CHECK_OK(put(a.s, "d5", "public", "turbine blade", 1, err), err);
    CHECK_OK(finds(&b, "public", "blade", "d5", &found, err), err);
    CHECK(found);
    int64_t applied = 0;
    CHECK_OK(store_change_counter(b.s, &applied, err), err);

    /* the failover: the new primary never had d5's write, and hands its counter out again to other
     * writes (through a node that starts now), past b's */
    CHECK(exec_sql(fx.conninfo, "DELETE FROM quarry.documents WHERE doc_id = 'd5'"));
    CHECK(exec_sql(fx.conninfo, "UPDATE quarry.counter SET value = value - 1"));
    CHECK_OK(node_open(&c, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(put(c.s, "n1", "public", "pump seal", 1, err), err);
    CHECK_OK(put(c.s, "n2", "group:ops", "pump seal", 1, err), err);
    int64_t head = 0;
    CHECK_OK(store_change_counter(c.s, &head, err), err);
    CHECK_MSG(head > applied, "the new primary's counter %lld has not passed the node's %lld",
              (long long)head, (long long)applied);
    CHECK_OK(node_reopen(&b, err) ? QR_OK : QR_EIO, err);
    CHECK(finds(&b, "public", "pump", "n1", &found, err) == QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "'d5'") && strstr(err, "rebuild this node"), "%s", err);
    /* and it stays so on that handle, for its follower's polls too */
    CHECK(finds(&b, "public", "turbine", "d3", &found, err) == QR_EUNAVAILABLE);
    int64_t counter = 0, at = 0, primary_head = 0;
    CHECK(store_follow_poll(b.s, 16, &counter, &at, &primary_head, err) == QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "rebuild this node") != NULL, "%s", err);
    /* a node that starts from nothing follows the primary as it is now */
    CHECK_OK(finds(&c, "public", "pump", "n1", &found, err), err);
    CHECK(found);
    node_close(&a);
    node_close(&b);
    node_close(&c);
}
TEST(lost_write_is_noticed)
{
    RUN_WITH_PG(lost_write_is_noticed);
}

/* A new node may start from a peer's snapshot (quarry backup of a follower's data directory, with
 * its index generations) instead of the feed from 0: the copy keeps the identity, keys, chunk ids
 * and counters, so the new node then follows the feed from where the copy was. */
static void run_peer_snapshot_starts_a_node(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b, c;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EIO, err);
    CHECK_OK(store_check_embedding(a.s, "toy", DIM, err), err);
    char id[16], text[64];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof(id), "s%d", i);
        snprintf(text, sizeof(text), "pump station %d|valve %d", i, i);
        CHECK_OK(put(a.s, id, i % 3 ? "public" : "group:ops", text, 1, err), err);
    }
    CHECK_OK(store_delete(a.s, "s4", err), err);
    CHECK_OK(store_fence(b.s, err), err);
    memset(&c, 0, sizeof(c));
    snprintf(c.dir, sizeof(c.dir), "/tmp/quarry-nodes-XXXXXX");
    CHECK(mkdtemp(c.dir) != NULL);
    index_backup_info info;
    CHECK_OK(index_backup(b.dir, c.dir, &info, err), err);
    /* writes after the snapshot reach the new node through the feed */
    CHECK_OK(put(a.s, "after", "public", "pump station after the copy", 1, err), err);
    const char *acl[] = {"group:ops"};
    CHECK_OK(store_set_acl(a.s, "s1", acl, 1, err), err);
    retrieval_opts o;
    retrieval_opts_default(&o);
    o.mode = RETRIEVAL_BM25;
    o.bm25_pruned = false;
    CHECK_OK(store_open(c.dir, &c.s, err), err);
    CHECK_OK(retrieval_open(c.s, NULL, &o, &c.r, err), err);
    bool found = false;
    CHECK_OK(finds(&c, "public", "after", "after", &found, err), err);
    CHECK(found);
    CHECK_OK(finds(&c, "public", "pump", "s1", &found, err), err);
    CHECK(!found);
    CHECK_MSG(same_chunks(a.s, c.s, err), "the node started from a snapshot differs: %s", err);
    CHECK_OK(store_verify(c.s, err), err);
    node_close(&a);
    node_close(&b);
    node_close(&c);
}
TEST(peer_snapshot_starts_a_node)
{
    RUN_WITH_PG(peer_snapshot_starts_a_node);
}
