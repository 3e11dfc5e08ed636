/*
 * State every node shares through PostgreSQL (store.backend = postgres, issue #24): the shared
 * state API of index/ (quarry.shared, compare and swap) and what auth keeps there, the API keys
 * and the generated token secret. Each case starts a throwaway PostgreSQL 15 on loopback
 * (tests/pg_fixture.c) and names it as the primary (store_set_primary); two auth contexts on two
 * data directories stand for two nodes. A key created on one node works on the other and a
 * revocation on either fails it on both at once; concurrent creators lose no key; a token issued
 * by one node verifies on the other; PostgreSQL unreachable fails key checks closed and key
 * creation changes nothing. Without a primary, keys stay in each data directory as before.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "auth/auth.h"
#include "core/core.h"
#include "index/store.h"
#include "tests/auth_test_util.h"
#include "tests/harness.h"
#include "tests/pg_routed.h"

/* A node as auth sees it: a data directory of its own and a context on it (no LDAP, no
 * auth.token_secret). */
typedef struct {
    char dir[256];
    qr_config *cfg;
    auth_ctx *ctx;
} node;

static bool node_open(node *n, char *err)
{
    memset(n, 0, sizeof(*n));
    test_tmpdir(n->dir, sizeof(n->dir));
    n->cfg = test_config(n->dir, NULL);
    return auth_new(n->cfg, &n->ctx, err) == QR_OK;
}

static void node_close(node *n)
{
    auth_free(n->ctx);
    qr_config_free(n->cfg);
    if (n->dir[0])
        test_rmdir(n->dir);
    memset(n, 0, sizeof(*n));
}

/* Whether <dir>/auth/<file> exists: the shared state must not land in a data directory. */
static bool state_file(const node *n, const char *file)
{
    char path[512];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/auth/%s", n->dir, file);
    return stat(path, &sb) == 0;
}

/* Whether n's list holds a key with this id, and how many keys it holds. */
static qr_status listed(node *n, const char *id, bool *found, size_t *count, char *err)
{
    auth_key_info *keys = NULL;
    size_t nkeys = 0;
    qr_status st = auth_key_list(n->ctx, &keys, &nkeys, err);
    *found = false;
    for (size_t i = 0; !st && i < nkeys; i++)
        *found = *found || strcmp(keys[i].id, id) == 0;
    if (count)
        *count = nkeys;
    auth_key_list_free(keys, nkeys);
    return st;
}

/* ---- the shared state API -------------------------------------------------------------------- */

static void run_cas_rules(void)
{
    char err[QR_ERR_LEN] = "";
    void *data = NULL;
    size_t len = 0;
    int64_t v = 0, nv = 0;
    CHECK(store_shared_on());
    CHECK_INT(store_shared_read("test/blob", &data, &len, &v, err), QR_ENOTFOUND);
    CHECK(data == NULL);
    CHECK_INT(store_shared_version("test/blob", &v, err), QR_ENOTFOUND);
    /* create only if absent, twice: the second is refused and changes nothing */
    const char first[] = "one\0two", second[] = "other";
    int64_t v1 = 0, v2 = 0;
    CHECK_OK(store_shared_write("test/blob", first, sizeof(first), 0, &v1, err), err);
    CHECK(v1 > 0);
    CHECK_INT(store_shared_write("test/blob", second, sizeof(second), 0, &nv, err), QR_EEXIST);
    CHECK_OK(store_shared_read("test/blob", &data, &len, &v, err), err);
    CHECK_INT(v, v1);
    CHECK_INT(len, sizeof(first));
    CHECK(memcmp(data, first, sizeof(first)) == 0); /* bytes, the NUL inside included */
    free(data);
    /* a write at the current version moves it; one at a stale version is refused */
    CHECK_OK(store_shared_write("test/blob", second, sizeof(second), v1, &v2, err), err);
    CHECK(v2 > v1);
    CHECK_INT(store_shared_write("test/blob", first, sizeof(first), v1, &nv, err), QR_EEXIST);
    CHECK_INT(store_shared_write("test/blob", first, sizeof(first), v2 + 1, &nv, err), QR_EEXIST);
    CHECK_INT(store_shared_write("test/absent", first, sizeof(first), 1, &nv, err), QR_EEXIST);
    CHECK_INT(store_shared_version("test/absent", &v, err), QR_ENOTFOUND);
    CHECK_OK(store_shared_version("test/blob", &v, err), err);
    CHECK_INT(v, v2);
    CHECK_OK(store_shared_read("test/blob", &data, &len, &v, err), err);
    CHECK_INT(len, sizeof(second));
    CHECK_STR((const char *)data, second);
    free(data);
    /* an empty blob is a value */
    CHECK_OK(store_shared_write("test/empty", "", 0, 0, NULL, err), err);
    CHECK_OK(store_shared_read("test/empty", &data, &len, &v, err), err);
    CHECK_INT(len, 0);
    CHECK(v > 0);
    free(data);
    /* a name deleted by hand and created again never gets a version a cached copy could hold */
    PGconn *c = PQconnectdb(fx.conninfo);
    PGresult *r = PQstatus(c) == CONNECTION_OK
                      ? PQexec(c, "DELETE FROM quarry.shared WHERE name = 'test/empty'")
                      : NULL;
    CHECK(r && PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
    int64_t again = 0;
    CHECK_OK(store_shared_write("test/empty", "", 0, 0, &again, err), err);
    CHECK_MSG(again > v, "version %lld came back after a delete (was %lld)", (long long)again, (long long)v);

    /* bad names and sizes are refused before anything is written */
    char long_name[STORE_SHARED_NAME_MAX + 2];
    memset(long_name, 'n', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    const char *bad[] = {"", long_name, "line\nbreak", "tab\there", "caf\xc3\xa9", "del\x7f"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_MSG(store_shared_write(bad[i], "x", 1, 0, NULL, err) == QR_EINVAL, "name %zu was accepted", i);
        CHECK_MSG(store_shared_read(bad[i], &data, &len, &v, err) == QR_EINVAL, "name %zu was read", i);
        CHECK_MSG(store_shared_version(bad[i], &v, err) == QR_EINVAL, "name %zu was asked", i);
    }
    CHECK_INT(store_shared_write(NULL, "x", 1, 0, NULL, err), QR_EINVAL);
    long_name[STORE_SHARED_NAME_MAX] = '\0'; /* the longest name allowed */
    CHECK_OK(store_shared_write(long_name, "x", 1, 0, NULL, err), err);
    CHECK_INT(store_shared_write("test/blob", first, sizeof(first), -1, NULL, err), QR_EINVAL);
    char *huge = calloc(1, (size_t)STORE_SHARED_MAX + 1);
    CHECK(huge != NULL);
    CHECK_INT(store_shared_write("test/huge", huge, (size_t)STORE_SHARED_MAX + 1, 0, NULL, err), QR_ELIMIT);
    free(huge);
    CHECK_INT(store_shared_version("test/huge", &v, err), QR_ENOTFOUND);
    CHECK_OK(store_shared_version("test/blob", &v, err), err);
    CHECK_INT(v, v2);

    /* without a primary there is no shared state */
    store_clear_primary();
    CHECK(!store_shared_on());
    CHECK_INT(store_shared_read("test/blob", &data, &len, &v, err), QR_EINVAL);
    CHECK_INT(store_shared_write("test/blob", "x", 1, v2, NULL, err), QR_EINVAL);
    CHECK_OK(store_set_primary(fx.conninfo, NULL, 5000, err), err);
    CHECK_OK(store_shared_version("test/blob", &v, err), err);
    CHECK_INT(v, v2);
}
TEST(cas_rules)
{
    RUN_WITH_PG(cas_rules);
}

/* ---- API keys ---------------------------------------------------------------------------------- */

static void run_keys_shared_between_nodes(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EINVAL, err);
    char *key = NULL, *other = NULL;
    auth_key_info info, got;
    bool found = false;
    /* B reads the empty table first, so its cache must notice the creation */
    CHECK_OK(listed(&b, "0000000000000000", &found, NULL, err), err);
    CHECK_OK(auth_key_create(a.ctx, "portal", AUTH_SCOPE_SEARCH, &key, &info, err), err);
    CHECK_OK(auth_key_verify(b.ctx, key, &got, err), err);
    CHECK_STR(got.id, info.id);
    CHECK_STR(got.name, "portal");
    CHECK_INT(got.scopes, AUTH_SCOPE_SEARCH);
    auth_key_info_release(&got);
    CHECK_OK(listed(&b, info.id, &found, NULL, err), err);
    CHECK(found);
    CHECK_OK(auth_key_create(b.ctx, "bot", AUTH_SCOPE_CHAT, &other, NULL, err), err);
    CHECK_OK(auth_key_verify(a.ctx, other, NULL, err), err);
    CHECK_OK(auth_key_verify(a.ctx, key, NULL, err), err);
    /* revoked on B: A, which just verified it, refuses it at once */
    CHECK_OK(auth_key_revoke(b.ctx, info.id, err), err);
    CHECK_INT(auth_key_verify(a.ctx, key, NULL, err), QR_EAUTH);
    CHECK_INT(auth_key_verify(b.ctx, key, NULL, err), QR_EAUTH);
    CHECK_OK(auth_key_verify(a.ctx, other, NULL, err), err);
    CHECK_INT(auth_key_revoke(a.ctx, "0123456789abcdef", err), QR_ENOTFOUND);
    /* a third node started later sees both, one revoked */
    node c;
    CHECK_OK(node_open(&c, err) ? QR_OK : QR_EINVAL, err);
    auth_key_info *keys = NULL;
    size_t n = 0;
    CHECK_OK(auth_key_list(c.ctx, &keys, &n, err), err);
    CHECK_INT(n, 2);
    CHECK_STR(keys[0].id, info.id);
    CHECK(keys[0].revoked_ms > 0);
    CHECK(keys[1].revoked_ms == 0);
    auth_key_list_free(keys, n);
    /* nothing of it is in the data directories */
    CHECK(!state_file(&a, "keys.json") && !state_file(&b, "keys.json") && !state_file(&c, "keys.json"));
    auth_key_info_release(&info);
    free(key);
    free(other);
    node_close(&a);
    node_close(&b);
    node_close(&c);
}
TEST(keys_shared_between_nodes)
{
    RUN_WITH_PG(keys_shared_between_nodes);
}

#define CREATORS     4
#define KEYS_PER_ONE 12
typedef struct {
    auth_ctx *ctx;
    int id;
    char *keys[KEYS_PER_ONE];
    qr_status st;
    char err[QR_ERR_LEN];
} creator;

static void *create_keys(void *arg)
{
    creator *c = arg;
    for (int i = 0; i < KEYS_PER_ONE && !c->st; i++) {
        char name[32];
        snprintf(name, sizeof(name), "creator %d key %d", c->id, i);
        c->st = auth_key_create(c->ctx, name, AUTH_SCOPE_SEARCH, &c->keys[i], NULL, c->err);
    }
    return NULL;
}

/* Creators on two nodes at once, two threads each: every key each was handed is in the table. */
static void run_concurrent_creates_lose_none(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EINVAL, err);
    creator cr[CREATORS];
    pthread_t th[CREATORS];
    memset(cr, 0, sizeof(cr));
    for (int i = 0; i < CREATORS; i++) {
        cr[i].ctx = i % 2 ? b.ctx : a.ctx;
        cr[i].id = i;
        CHECK(pthread_create(&th[i], NULL, create_keys, &cr[i]) == 0);
    }
    for (int i = 0; i < CREATORS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < CREATORS; i++)
        CHECK_OK(cr[i].st, cr[i].err);
    auth_key_info *keys = NULL;
    size_t n = 0;
    CHECK_OK(auth_key_list(a.ctx, &keys, &n, err), err);
    auth_key_list_free(keys, n);
    CHECK_INT(n, CREATORS * KEYS_PER_ONE);
    for (int i = 0; i < CREATORS; i++) {
        for (int k = 0; k < KEYS_PER_ONE; k++) {
            auth_key_info info;
            node *other = i % 2 ? &a : &b;
            CHECK_OK(auth_key_verify(other->ctx, cr[i].keys[k], &info, err), err);
            char name[32];
            snprintf(name, sizeof(name), "creator %d key %d", i, k);
            CHECK_STR(info.name, name);
            auth_key_info_release(&info);
            free(cr[i].keys[k]);
        }
    }
    node_close(&a);
    node_close(&b);
}
TEST(concurrent_creates_lose_none)
{
    RUN_WITH_PG(concurrent_creates_lose_none);
}

/* ---- the token secret -------------------------------------------------------------------------- */

typedef struct {
    auth_ctx *ctx;
    char *token;
    qr_status st;
    char err[QR_ERR_LEN];
} issuer;

static void *issue_token(void *arg)
{
    issuer *is = arg;
    is->st = auth_token_issue(is->ctx, "alice", 60, &is->token, NULL, is->err);
    return NULL;
}

/* Two nodes that both need the secret first at the same moment end up with one: each verifies the
 * other's token. */
static void run_token_secret_shared(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EINVAL, err);
    issuer is[2] = {{.ctx = a.ctx}, {.ctx = b.ctx}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&th[i], NULL, issue_token, &is[i]) == 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK_OK(is[0].st, is[0].err);
    CHECK_OK(is[1].st, is[1].err);
    char *uid = NULL;
    CHECK_OK(auth_token_verify(b.ctx, is[0].token, &uid, NULL, err), err);
    CHECK_STR(uid, "alice");
    free(uid);
    CHECK_OK(auth_token_verify(a.ctx, is[1].token, &uid, NULL, err), err);
    free(uid);
    /* a node started later signs with the same secret */
    node c;
    char *token = NULL;
    CHECK_OK(node_open(&c, err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(auth_token_issue(c.ctx, "bob", 60, &token, NULL, err), err);
    CHECK_OK(auth_token_verify(a.ctx, token, &uid, NULL, err), err);
    CHECK_STR(uid, "bob");
    free(uid);
    free(token);
    CHECK(!state_file(&a, "token.key") && !state_file(&b, "token.key") && !state_file(&c, "token.key"));
    /* auth.token_secret, when set, is still the secret: the shared one does not verify its tokens */
    node d;
    memset(&d, 0, sizeof(d));
    test_tmpdir(d.dir, sizeof(d.dir));
    d.cfg = test_config(d.dir, "auth.token_secret", "an operator's secret of forty characters", NULL);
    CHECK_OK(auth_new(d.cfg, &d.ctx, err), err);
    CHECK_OK(auth_token_issue(d.ctx, "carol", 60, &token, NULL, err), err);
    CHECK_INT(auth_token_verify(a.ctx, token, &uid, NULL, err), QR_EAUTH);
    free(token);
    free(is[0].token);
    free(is[1].token);
    node_close(&a);
    node_close(&b);
    node_close(&c);
    node_close(&d);
}
TEST(token_secret_shared)
{
    RUN_WITH_PG(token_secret_shared);
}

/* ---- PostgreSQL unreachable -------------------------------------------------------------------- */

/* Cut from PostgreSQL (first an unreachable primary, then the server stopped), a node refuses every
 * key, even one it verified a moment before, and a key creation fails and leaves no trace: once
 * PostgreSQL is back the table is what it was, and no node fell back to a file of its own. */
/* Whether sql returns a row on the server of conninfo. */
static bool has_row(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    bool rows = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
    PQclear(r);
    PQfinish(c);
    return rows;
}

/* With no primary (etcd down) and every member named (store.postgres_members), keys are checked
 * against the highest version among the members: a standby whose replay is paused before a
 * revocation comes first in the list, and the revoked key still fails; changes fail; one member
 * that does not answer fails the check closed. */
static void run_keys_checked_without_a_primary(void)
{
    char err[QR_ERR_LEN] = "";
    pg_fixture sb;
    int rc = pg_fixture_start_standby(&sb, &fx, err);
    CHECK_MSG(rc == 0, "cannot start the standby: %s", err);
    if (rc)
        return;
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EINVAL, err);
    char *kept = NULL, *revoked = NULL, *lost = NULL;
    auth_key_info info;
    CHECK_OK(auth_key_create(a.ctx, "kept", AUTH_SCOPE_SEARCH, &kept, NULL, err), err);
    CHECK_OK(auth_key_create(a.ctx, "revoked", AUTH_SCOPE_SEARCH, &revoked, &info, err), err);
    int64_t v = 0;
    CHECK_OK(store_shared_version("auth/keys.json", &v, err), err);
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT 1 FROM quarry.shared WHERE name = 'auth/keys.json' AND version = %lld",
             (long long)v);
    for (int i = 0; i < 1000 && !has_row(sb.conninfo, sql); i++)
        usleep(10000);
    CHECK_MSG(has_row(sb.conninfo, sql), "the standby did not replay version %lld", (long long)v);
    PGconn *c = PQconnectdb(sb.conninfo);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, "SELECT pg_wal_replay_pause()") : NULL;
    CHECK(r && PQresultStatus(r) == PGRES_TUPLES_OK);
    PQclear(r);
    PQfinish(c);
    CHECK_OK(auth_key_revoke(a.ctx, info.id, err), err);

    char members[256];
    snprintf(members, sizeof(members), "host=127.0.0.1,127.0.0.1 port=%d,%d user=quarry dbname=postgres",
             sb.port, fx.port);
    CHECK_OK(store_set_primary(NO_PRIMARY, NULL, 5000, err), err);
    CHECK_OK(store_set_members(members, err), err);
    CHECK_OK(auth_key_verify(b.ctx, kept, NULL, err), err);
    CHECK_INT(auth_key_verify(b.ctx, revoked, NULL, err), QR_EAUTH);
    CHECK_INT(auth_key_create(b.ctx, "while down", AUTH_SCOPE_SEARCH, &lost, NULL, err), QR_EUNAVAILABLE);
    CHECK(lost == NULL);
    /* a member that does not answer might be a primary this node cannot see */
    snprintf(members, sizeof(members), "host=127.0.0.1,127.0.0.1 port=%d,1 user=quarry dbname=postgres",
             sb.port);
    CHECK_OK(store_set_members(members, err), err);
    CHECK_INT(auth_key_verify(b.ctx, kept, NULL, err), QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "store.postgres_members") != NULL, "%s", err);
    CHECK_OK(store_set_members(NULL, err), err);
    CHECK_INT(auth_key_verify(b.ctx, kept, NULL, err), QR_EUNAVAILABLE);
    auth_key_info_release(&info);
    free(kept);
    free(revoked);
    node_close(&a);
    node_close(&b);
    pg_fixture_stop(&sb);
}
TEST(keys_checked_without_a_primary)
{
    RUN_WITH_PG(keys_checked_without_a_primary);
}

static void run_unreachable_fails_closed(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EINVAL, err);
    char *key = NULL, *lost = NULL, *token = NULL;
    auth_key_info info;
    CHECK_OK(auth_key_create(a.ctx, "portal", AUTH_SCOPE_SEARCH, &key, &info, err), err);
    CHECK_OK(auth_key_verify(b.ctx, key, NULL, err), err);

    CHECK_OK(store_set_primary(NO_PRIMARY, NULL, 5000, err), err);
    CHECK_INT(auth_key_verify(b.ctx, key, NULL, err), QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "API keys cannot be checked") != NULL, "%s", err);
    CHECK_INT(auth_key_create(a.ctx, "while down", AUTH_SCOPE_SEARCH, &lost, NULL, err), QR_EUNAVAILABLE);
    CHECK(lost == NULL);
    CHECK_INT(auth_key_revoke(a.ctx, info.id, err), QR_EUNAVAILABLE);
    auth_key_info *keys = NULL;
    size_t n = 0;
    CHECK_INT(auth_key_list(b.ctx, &keys, &n, err), QR_EUNAVAILABLE);
    CHECK(keys == NULL && n == 0);
    /* no secret yet, and none to be had: no token either */
    CHECK_INT(auth_token_issue(a.ctx, "alice", 60, &token, NULL, err), QR_EUNAVAILABLE);
    CHECK(token == NULL);

    CHECK_OK(store_set_primary(fx.conninfo, NULL, 5000, err), err);
    CHECK_OK(auth_key_list(b.ctx, &keys, &n, err), err);
    CHECK_INT(n, 1);
    CHECK_STR(keys[0].id, info.id);
    CHECK(keys[0].revoked_ms == 0);
    auth_key_list_free(keys, n);
    CHECK_OK(auth_key_verify(b.ctx, key, NULL, err), err);

    /* the server itself stops */
    stop_pg();
    CHECK_INT(auth_key_verify(b.ctx, key, NULL, err), QR_EUNAVAILABLE);
    CHECK_INT(auth_key_verify(a.ctx, key, NULL, err), QR_EUNAVAILABLE);
    CHECK_INT(auth_key_create(b.ctx, "while stopped", AUTH_SCOPE_SEARCH, &lost, NULL, err), QR_EUNAVAILABLE);
    CHECK(lost == NULL);
    CHECK(!state_file(&a, "keys.json") && !state_file(&b, "keys.json"));
    CHECK(!state_file(&a, "token.key") && !state_file(&b, "token.key"));
    auth_key_info_release(&info);
    free(key);
    node_close(&a);
    node_close(&b);
}
TEST(unreachable_fails_closed)
{
    RUN_WITH_PG(unreachable_fails_closed);
}

/* ---- without a primary ------------------------------------------------------------------------- */

/* No system of record: keys and the token secret stay in each data directory, as before. */
TEST(without_primary_files_as_before)
{
    char err[QR_ERR_LEN] = "";
    store_clear_primary();
    CHECK(!store_shared_on());
    node a, b;
    CHECK_OK(node_open(&a, err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(node_open(&b, err) ? QR_OK : QR_EINVAL, err);
    char *key = NULL, *token = NULL, *uid = NULL;
    CHECK_OK(auth_key_create(a.ctx, "local", AUTH_SCOPE_SEARCH, &key, NULL, err), err);
    CHECK_OK(auth_key_verify(a.ctx, key, NULL, err), err);
    CHECK_INT(auth_key_verify(b.ctx, key, NULL, err), QR_EAUTH);
    CHECK(state_file(&a, "keys.json") && !state_file(&b, "keys.json"));
    CHECK_OK(auth_token_issue(a.ctx, "alice", 60, &token, NULL, err), err);
    CHECK(state_file(&a, "token.key"));
    CHECK_INT(auth_token_verify(b.ctx, token, &uid, NULL, err), QR_EAUTH);
    free(token);
    free(key);
    node_close(&a);
    node_close(&b);
}
