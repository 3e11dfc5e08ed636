/*
 * Failed-login limits shared by every node through PostgreSQL (store.backend = postgres, issue
 * #24): the counters' API of index/ (quarry.login_failures) and auth's limits on top of it. Each
 * case runs under the slapd fixture (tests/fixtures/slapd-fixture.sh) and starts a throwaway
 * PostgreSQL 15 on loopback (tests/pg_fixture.c) named as the primary; two auth contexts on two
 * data directories stand for two nodes. Failures on one node count on the other, so the limit is
 * reached across both and a success on either clears it; the window restarts once it has passed;
 * with PostgreSQL unreachable (no primary, or the server stopped) logins go on, limited per node by
 * each process's own counters, with one warning per outage; the table keeps only what one window
 * holds however many names fail.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "auth/auth.h"
#include "core/core.h"
#include "index/store.h"
#include "tests/auth_test_util.h"
#include "tests/harness.h"
#include "tests/pg_routed.h"

/* The cases log in against the slapd fixture. */
static bool under_slapd(void)
{
    if (getenv("QUARRY_TEST_LDAP_URI"))
        return true;
    harness_fail(__FILE__, __LINE__, "run under tests/fixtures/slapd-fixture.sh (QUARRY_TEST_LDAP_URI)");
    return false;
}

#define RUN_LIMITS(name)       \
    do {                       \
        if (under_slapd())     \
            RUN_WITH_PG(name); \
    } while (0)

/* A node as auth sees it: a data directory of its own and a context on the fixture's slapd with
 * these limits. */
typedef struct {
    char dir[256];
    qr_config *cfg;
    auth_ctx *ctx;
} node;

static bool node_open(node *n, const char *per_user, const char *per_addr, const char *window_s, char *err)
{
    char people[256], groups[256];
    const char *base = getenv("QUARRY_TEST_LDAP_BASE");
    snprintf(people, sizeof(people), "ou=people,%s", base ? base : "");
    snprintf(groups, sizeof(groups), "ou=groups,%s", base ? base : "");
    memset(n, 0, sizeof(*n));
    test_tmpdir(n->dir, sizeof(n->dir));
    n->cfg = test_config(n->dir, "ldap.uri", getenv("QUARRY_TEST_LDAP_URI"), "ldap.bind_dn",
                         getenv("QUARRY_TEST_LDAP_BIND_DN"), "ldap.bind_password",
                         getenv("QUARRY_TEST_LDAP_BIND_PW"), "ldap.user_base", people, "ldap.group_base",
                         groups, "auth.rate_limit_user", per_user, "auth.rate_limit_addr", per_addr,
                         "auth.rate_limit_window_s", window_s, NULL);
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

/* A login on n: QR_OK (the principal released), QR_EAUTH, QR_ELIMIT... */
static qr_status login(node *n, const char *user, const char *password, const char *client, char *err)
{
    auth_principal *p = NULL;
    qr_status st = auth_authenticate(n->ctx, user, strlen(user), password, strlen(password), client, &p, err);
    auth_principal_release(p);
    return st;
}

/* The integer an SQL query on a server answers; -1 when it fails. */
static long long pg_value_on(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    long long v =
        r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    PQfinish(c);
    return v;
}

/* The same on the fixture's server (the primary). */
static long long pg_value(const char *sql)
{
    return pg_value_on(fx.conninfo, sql);
}

/* The wait a QR_ELIMIT's message gives ("try again in N s"); -1 when it gives none. */
static long long wait_of(const char *err)
{
    const char *p = strstr(err, "try again in ");
    return p ? atoll(p + strlen("try again in ")) : -1;
}

/* ---- the counters' API -------------------------------------------------------------------------- */

static void run_counter_rules(void)
{
    char err[QR_ERR_LEN] = "";
    int64_t f[STORE_FAILURE_KEYS], left[STORE_FAILURE_KEYS];
    const char *ab[] = {"u:a", "u:b"};
    CHECK_OK(store_shared_failures_read(ab, 2, f, left, err), err);
    CHECK(f[0] == 0 && f[1] == 0 && left[0] == 0 && left[1] == 0);
    /* a key given twice in one call counts once; a NULL entry is no key */
    const char *twice[] = {"u:a", NULL, "u:a"};
    CHECK_OK(store_shared_failures_count(twice, 3, 60, err), err);
    CHECK_OK(store_shared_failures_count(ab, 2, 60, err), err);
    const char *bna[] = {"u:b", NULL, "u:a"};
    CHECK_OK(store_shared_failures_read(bna, 3, f, left, err), err);
    CHECK_INT(f[0], 1);
    CHECK_INT(f[1], 0);
    CHECK_INT(f[2], 2);
    CHECK_MSG(left[2] > 0 && left[2] <= 60000, "%lld ms left of a 60 s window", (long long)left[2]);
    CHECK_INT(left[1], 0);
    CHECK_INT(pg_value("SELECT count(*) FROM quarry.login_failures"), 2);
    /* a clear forgets its keys, and only them */
    const char *a[] = {"u:a"};
    CHECK_OK(store_shared_failures_clear(a, 1, err), err);
    CHECK_OK(store_shared_failures_read(ab, 2, f, left, err), err);
    CHECK(f[0] == 0 && f[1] == 1);

    /* bad keys and windows are refused before anything is counted */
    char long_key[STORE_FAILURE_KEY_MAX + 2];
    memset(long_key, 'k', sizeof(long_key) - 1);
    long_key[sizeof(long_key) - 1] = '\0';
    const char *bad[] = {"", long_key, "u:caf\xc3", "u:\xff\xfe"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *keys[] = {"u:b", bad[i]};
        CHECK_MSG(store_shared_failures_count(keys, 2, 60, err) == QR_EINVAL, "key %zu was counted", i);
        CHECK_MSG(store_shared_failures_read(keys, 2, f, left, err) == QR_EINVAL, "key %zu was read", i);
        CHECK_MSG(store_shared_failures_clear(keys, 2, err) == QR_EINVAL, "key %zu was cleared", i);
    }
    const char *four[] = {"u:1", "u:2", "u:3", "u:4"};
    CHECK_INT(store_shared_failures_count(four, 4, 60, err), QR_EINVAL);
    CHECK_INT(store_shared_failures_count(four, 0, 60, err), QR_EINVAL);
    CHECK_INT(store_shared_failures_count(NULL, 1, 60, err), QR_EINVAL);
    CHECK_INT(store_shared_failures_count(ab, 2, 0, err), QR_EINVAL);
    CHECK_INT(store_shared_failures_count(ab, 2, 86401, err), QR_EINVAL);
    CHECK_INT(store_shared_failures_read(ab, 2, NULL, left, err), QR_EINVAL);
    CHECK_OK(store_shared_failures_read(ab, 2, f, left, err), err);
    CHECK(f[0] == 0 && f[1] == 1);
    CHECK_INT(pg_value("SELECT count(*) FROM quarry.login_failures"), 1);
    long_key[STORE_FAILURE_KEY_MAX] = '\0'; /* the longest key allowed */
    const char *longest[] = {long_key, "u:caf\xc3\xa9"};
    CHECK_OK(store_shared_failures_count(longest, 2, 60, err), err);
    CHECK_OK(store_shared_failures_read(longest, 2, f, left, err), err);
    CHECK(f[0] == 1 && f[1] == 1);

    /* the window restarts once it has passed, by the server's clock; the counts of that key delete
     * no row whose own window goes on */
    const char *w[] = {"a:10.9.9.9"};
    CHECK_OK(store_shared_failures_count(w, 1, 2, err), err);
    CHECK_OK(store_shared_failures_count(w, 1, 2, err), err);
    CHECK_OK(store_shared_failures_read(w, 1, f, left, err), err);
    CHECK_INT(f[0], 2);
    sleep(3);
    CHECK_OK(store_shared_failures_read(w, 1, f, left, err), err);
    CHECK_INT(f[0], 0);
    CHECK_OK(store_shared_failures_count(w, 1, 2, err), err);
    CHECK_OK(store_shared_failures_read(w, 1, f, left, err), err);
    CHECK_INT(f[0], 1);

    /* without a primary there are no shared counters */
    store_clear_primary();
    CHECK_INT(store_shared_failures_count(ab, 2, 60, err), QR_EINVAL);
    CHECK_INT(store_shared_failures_read(ab, 2, f, left, err), QR_EINVAL);
    CHECK_OK(store_set_primary(fx.conninfo, NULL, 5000, err), err);
    CHECK_OK(store_shared_failures_read(ab, 2, f, left, err), err);
    CHECK(f[0] == 0 && f[1] == 1);
}
TEST(counter_rules)
{
    RUN_LIMITS(counter_rules);
}

/* A server in recovery named as the primary (a demoted leader HAProxy still sends connections to)
 * neither counts nor answers, though it holds the rows: its counts may be behind. A node's logins
 * go on there, limited by its own counters. */
static void run_standby_is_not_the_primary(void)
{
    char err[QR_ERR_LEN] = "";
    int64_t f[1], left[1];
    const char *keys[] = {"u:zoe"};
    CHECK_OK(store_shared_failures_count(keys, 1, 60, err), err);
    pg_fixture sb;
    char e2[512] = "";
    int rc = pg_fixture_start_standby(&sb, &fx, e2);
    CHECK_MSG(rc == 0, "cannot start the standby: %s", e2);
    if (rc)
        return;
    const char *sql = "SELECT count(*) FROM quarry.login_failures WHERE key = 'u:zoe'";
    for (int i = 0; i < 1000 && pg_value_on(sb.conninfo, sql) != 1; i++)
        usleep(10000);
    CHECK_MSG(pg_value_on(sb.conninfo, sql) == 1, "the standby did not replay the count");
    node a;
    CHECK_OK(node_open(&a, "2", "0", "60", err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(store_set_primary(sb.conninfo, NULL, 5000, err), err);
    CHECK_INT(store_shared_failures_read(keys, 1, f, left, err), QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "standby") != NULL, "a read from the standby: %s", err);
    CHECK_INT(store_shared_failures_count(keys, 1, 60, err), QR_EUNAVAILABLE);
    CHECK_INT(login(&a, "zoe", "wrong", NULL, err), QR_EAUTH);
    CHECK_OK(login(&a, "zoe", "Zoe-pw-7", NULL, err), err);
    CHECK_INT(login(&a, "zoe", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&a, "zoe", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&a, "zoe", "Zoe-pw-7", NULL, err), QR_ELIMIT);
    /* nothing of it reached the primary: zoe's one failure from before is all there is */
    CHECK_OK(store_set_primary(fx.conninfo, NULL, 5000, err), err);
    CHECK_OK(store_shared_failures_read(keys, 1, f, left, err), err);
    CHECK_INT(f[0], 1);
    node_close(&a);
    pg_fixture_stop(&sb);
}
TEST(standby_is_not_the_primary)
{
    RUN_LIMITS(standby_is_not_the_primary);
}

/* ---- limits across nodes ------------------------------------------------------------------------- */

/* Limit 3 per user: 2 failures on A and 1 on B reach it, and the next attempt on either node is
 * refused with the wait, even with the right password, without asking LDAP. A success on one node
 * clears the count for both. The address limit is shared the same way. */
static void run_failures_count_across_nodes(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, "3", "4", "60", err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(node_open(&b, "3", "4", "60", err) ? QR_OK : QR_EINVAL, err);
    CHECK_INT(login(&a, "alice", "wrong", "10.0.0.1", err), QR_EAUTH);
    CHECK_INT(login(&a, "alice", "wrong", "10.0.0.2", err), QR_EAUTH);
    CHECK_INT(login(&b, "alice", "wrong", "10.0.0.3", err), QR_EAUTH);
    auth_stats before, after;
    auth_get_stats(a.ctx, &before);
    CHECK_INT(login(&a, "alice", "Alice-pw-1", "10.0.0.4", err), QR_ELIMIT);
    long long wait = wait_of(err);
    CHECK_MSG(wait >= 1 && wait <= 61, "wait %lld s in a 60 s window: %s", wait, err);
    auth_get_stats(a.ctx, &after);
    CHECK_INT(after.binds, before.binds);
    CHECK_INT(after.rate_limited, before.rate_limited + 1);
    CHECK_INT(login(&b, "alice", "Alice-pw-1", "10.0.0.5", err), QR_ELIMIT);
    CHECK_MSG(wait_of(err) >= 1 && wait_of(err) <= 61, "%s", err);
    /* every spelling that finds alice's entry counts against the entry on either node */
    CHECK_INT(login(&b, "ALICE ", "Alice-pw-1", "10.0.0.5", err), QR_ELIMIT);
    /* other users are not affected */
    CHECK_OK(login(&a, "bob", "Bob-pw-2", "10.0.0.4", err), err);

    /* a success on B clears carol's count on A too: after it, two more failures are not the limit */
    CHECK_INT(login(&a, "carol", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&a, "carol", "wrong", NULL, err), QR_EAUTH);
    CHECK_OK(login(&b, "carol", "Carol-pw-3", NULL, err), err);
    CHECK_INT(login(&a, "carol", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&a, "carol", "wrong", NULL, err), QR_EAUTH);
    CHECK_OK(login(&a, "carol", "Carol-pw-3", NULL, err), err);

    /* names that find no entry, from one address: limit 4, two failures on each node */
    CHECK_INT(login(&a, "ghost1", "x", "10.7.7.7", err), QR_EAUTH);
    CHECK_INT(login(&b, "ghost2", "x", "10.7.7.7", err), QR_EAUTH);
    CHECK_INT(login(&a, "ghost3", "x", "10.7.7.7", err), QR_EAUTH);
    CHECK_INT(login(&b, "ghost4", "x", "10.7.7.7", err), QR_EAUTH);
    CHECK_INT(login(&a, "erin", "Erin-pw-5", "10.7.7.7", err), QR_ELIMIT);
    CHECK_INT(login(&b, "erin", "Erin-pw-5", "10.7.7.7", err), QR_ELIMIT);
    CHECK_OK(login(&b, "erin", "Erin-pw-5", "10.7.7.8", err), err);
    node_close(&a);
    node_close(&b);
}
TEST(failures_count_across_nodes)
{
    RUN_LIMITS(failures_count_across_nodes);
}

/* A 2 s window, limit 2: reached across the nodes, refused on both; once the window has passed a
 * login goes through, and the next failures count from 1 in a new window. */
static void run_window_restarts(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, "2", "0", "2", err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(node_open(&b, "2", "0", "2", err) ? QR_OK : QR_EINVAL, err);
    CHECK_INT(login(&a, "frank", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&b, "frank", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&a, "frank", "Frank-pw-6", NULL, err), QR_ELIMIT);
    CHECK_INT(login(&b, "frank", "Frank-pw-6", NULL, err), QR_ELIMIT);
    CHECK_MSG(wait_of(err) >= 1 && wait_of(err) <= 3, "%s", err);
    sleep(3);
    /* a failure now opens a new window: one is not the limit of two */
    CHECK_INT(login(&b, "frank", "wrong", NULL, err), QR_EAUTH);
    CHECK_OK(login(&a, "frank", "Frank-pw-6", NULL, err), err);
    /* and that window fills as the first did */
    CHECK_INT(login(&b, "frank", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&a, "frank", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&b, "frank", "Frank-pw-6", NULL, err), QR_ELIMIT);
    node_close(&a);
    node_close(&b);
}
TEST(window_restarts)
{
    RUN_LIMITS(window_restarts);
}

/* ---- PostgreSQL unreachable ---------------------------------------------------------------------- */

/* How many lines of the file hold text. */
static int lines_with(const char *path, const char *text)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof(line), f))
        n += strstr(line, text) != NULL;
    if (f)
        fclose(f);
    return n;
}

#define OUTAGE_WARNING "failed-login counters shared through PostgreSQL are unavailable"

/* Cut from PostgreSQL (no primary, then the server stopped), logins neither fail nor go
 * unlimited: each node limits them with its own counters, which hold the failures it saw before
 * too, and says so once per outage. */
static void run_unreachable_limits_per_node(void)
{
    char err[QR_ERR_LEN] = "", log_path[300];
    node a, b;
    CHECK_OK(node_open(&a, "3", "0", "60", err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(node_open(&b, "3", "0", "60", err) ? QR_OK : QR_EINVAL, err);
    snprintf(log_path, sizeof(log_path), "%s/warnings.log", a.dir);
    FILE *log = fopen(log_path, "w");
    CHECK(log != NULL);
    setvbuf(log, NULL, _IOLBF, 0);
    qr_log_set_stream(log);
    CHECK_OK(qr_log_configure(QR_LOG_WARN, QR_LOG_TEXT, NULL, err), err);

    /* one failure of dave's while PostgreSQL answers: shared, and in A's own counters */
    CHECK_INT(login(&a, "dave", "wrong", NULL, err), QR_EAUTH);

    CHECK_OK(store_set_primary(NO_PRIMARY, NULL, 5000, err), err);
    CHECK_OK(login(&a, "bob", "Bob-pw-2", NULL, err), err);
    CHECK_OK(login(&b, "bob", "Bob-pw-2", NULL, err), err);
    /* two more on A reach A's limit of 3 */
    CHECK_INT(login(&a, "dave", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&a, "dave", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&a, "dave", "p@ss, w0rd (*)", NULL, err), QR_ELIMIT);
    CHECK_MSG(wait_of(err) >= 1 && wait_of(err) <= 61, "%s", err);
    /* B counts on its own: two failures are below the limit, a third reaches it */
    CHECK_INT(login(&b, "dave", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&b, "dave", "wrong", NULL, err), QR_EAUTH);
    CHECK_OK(login(&b, "dave", "p@ss, w0rd (*)", NULL, err), err);
    for (int i = 0; i < 3; i++)
        CHECK_INT(login(&b, "zoe", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&b, "zoe", "Zoe-pw-7", NULL, err), QR_ELIMIT);
    /* one warning per node for the whole outage, however many logins it saw */
    CHECK_INT(lines_with(log_path, OUTAGE_WARNING), 2);

    /* PostgreSQL back: the shared counters are what counts again (dave: 1 failure there) */
    CHECK_OK(store_set_primary(fx.conninfo, NULL, 5000, err), err);
    CHECK_OK(login(&a, "dave", "p@ss, w0rd (*)", NULL, err), err);
    CHECK_OK(login(&b, "bob", "Bob-pw-2", NULL, err), err);
    CHECK_INT(lines_with(log_path, OUTAGE_WARNING), 2);

    /* the server itself stops: a new outage, a new warning from each node that meets it */
    stop_pg();
    CHECK_OK(login(&a, "alice", "Alice-pw-1", NULL, err), err);
    for (int i = 0; i < 3; i++)
        CHECK_INT(login(&a, "alice", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&a, "alice", "Alice-pw-1", NULL, err), QR_ELIMIT);
    CHECK_OK(login(&b, "alice", "Alice-pw-1", NULL, err), err);
    CHECK_INT(lines_with(log_path, OUTAGE_WARNING), 4);

    qr_log_set_stream(stderr);
    qr_log_configure(QR_LOG_ERROR, QR_LOG_TEXT, NULL, err);
    fclose(log);
    node_close(&a);
    node_close(&b);
}
TEST(unreachable_limits_per_node)
{
    RUN_LIMITS(unreachable_limits_per_node);
}

/* ---- a bounded table ------------------------------------------------------------------------------ */

#define NAMES 40

/* Many names that find no entry fail in one window, then as many others in a later one: the rows
 * of the first window's names are gone, so the table holds no more than one window's names. (The
 * first rows are made an hour older rather than waited for: the same rows, expired.) */
static void run_table_stays_bounded(void)
{
    char err[QR_ERR_LEN] = "";
    node a, b;
    CHECK_OK(node_open(&a, "3", "0", "600", err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(node_open(&b, "3", "0", "600", err) ? QR_OK : QR_EINVAL, err);
    char name[64];
    for (int i = 0; i < NAMES; i++) {
        snprintf(name, sizeof(name), "first-%d", i);
        CHECK_INT(login(i % 2 ? &b : &a, name, "x", NULL, err), QR_EAUTH);
    }
    CHECK_INT(pg_value("SELECT count(*) FROM quarry.login_failures"), NAMES);
    CHECK_INT(pg_value("WITH aged AS (UPDATE quarry.login_failures"
                       " SET window_start = window_start - interval '1 hour',"
                       "     window_end = window_end - interval '1 hour' RETURNING 1)"
                       " SELECT count(*) FROM aged"),
              NAMES);
    for (int i = 0; i < NAMES; i++) {
        snprintf(name, sizeof(name), "second-%d", i);
        CHECK_INT(login(i % 2 ? &a : &b, name, "x", NULL, err), QR_EAUTH);
    }
    CHECK_INT(pg_value("SELECT count(*) FROM quarry.login_failures WHERE key LIKE 'u:first-%'"), 0);
    CHECK_INT(pg_value("SELECT count(*) FROM quarry.login_failures"), NAMES);
    /* the second window's names still count */
    CHECK_INT(login(&a, "second-0", "x", NULL, err), QR_EAUTH);
    CHECK_INT(login(&b, "second-0", "x", NULL, err), QR_EAUTH);
    CHECK_INT(login(&a, "second-0", "x", NULL, err), QR_ELIMIT);
    node_close(&a);
    node_close(&b);
}
TEST(table_stays_bounded)
{
    RUN_LIMITS(table_stays_bounded);
}

/* ---- without a primary ---------------------------------------------------------------------------- */

/* No system of record: each node counts alone, as before (limit 2: one failure on each is not it). */
TEST(without_primary_per_node)
{
    char err[QR_ERR_LEN] = "";
    if (!getenv("QUARRY_TEST_LDAP_URI")) {
        harness_fail(__FILE__, __LINE__, "run under tests/fixtures/slapd-fixture.sh");
        return;
    }
    store_clear_primary();
    CHECK(!store_shared_on());
    node a, b;
    CHECK_OK(node_open(&a, "2", "0", "60", err) ? QR_OK : QR_EINVAL, err);
    CHECK_OK(node_open(&b, "2", "0", "60", err) ? QR_OK : QR_EINVAL, err);
    CHECK_INT(login(&a, "erin", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&b, "erin", "wrong", NULL, err), QR_EAUTH);
    CHECK_OK(login(&a, "erin", "Erin-pw-5", NULL, err), err);
    CHECK_INT(login(&b, "erin", "wrong", NULL, err), QR_EAUTH);
    CHECK_INT(login(&b, "erin", "Erin-pw-5", NULL, err), QR_ELIMIT);
    node_close(&a);
    node_close(&b);
}
