/*
 * auth against the real slapd fixture (tests/fixtures/slapd-fixture.sh --tls, one fresh slapd per
 * case): every fixture user's transitive groups, nesting three deep and its depth limit, the
 * membership cycle, a user in no group, bad, empty and unknown credentials, injection attempts,
 * connection reuse and threads, slapd stopped mid-test and a listener that never answers (fail
 * closed, within the timeout), ldaps:// and StartTLS with the fixture's test CA, the cache (TTL,
 * LRU bound, flush, stale_if_error), tokens and keys acting for users, rate limits, and the
 * quarry auth/keys commands.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth/auth_int.h"
#include "tests/auth_test_util.h"
#include "tests/harness.h"
#include "tests/test_util.h"

typedef struct {
    const char *uri, *ldaps_uri, *ca_file, *base, *bind_dn, *bind_pw, *admin_dn, *admin_pw;
    pid_t slapd;
} fixture;

static fixture fx;

static bool fixture_ready(void)
{
    fx.uri = getenv("QUARRY_TEST_LDAP_URI");
    fx.ldaps_uri = getenv("QUARRY_TEST_LDAPS_URI");
    fx.ca_file = getenv("QUARRY_TEST_LDAP_CA_FILE");
    fx.base = getenv("QUARRY_TEST_LDAP_BASE");
    fx.bind_dn = getenv("QUARRY_TEST_LDAP_BIND_DN");
    fx.bind_pw = getenv("QUARRY_TEST_LDAP_BIND_PW");
    fx.admin_dn = getenv("QUARRY_TEST_LDAP_ADMIN_DN");
    fx.admin_pw = getenv("QUARRY_TEST_LDAP_ADMIN_PW");
    const char *pid = getenv("QUARRY_TEST_SLAPD_PID");
    fx.slapd = pid ? (pid_t)atoi(pid) : 0;
    if (!fx.uri || !fx.ldaps_uri || !fx.ca_file || !fx.base || !fx.bind_dn || !fx.bind_pw || !fx.admin_dn ||
        !fx.admin_pw || fx.slapd <= 0) {
        fprintf(stderr, "run under tests/fixtures/slapd-fixture.sh --tls (QUARRY_TEST_LDAP_* missing)\n");
        return false;
    }
    return true;
}

/* The fixture's settings, then each "key", "value" override (NULL-ended). */
static qr_config *fixture_config(const char *dir, ...)
{
    char people[256], groups[256];
    snprintf(people, sizeof(people), "ou=people,%s", fx.base);
    snprintf(groups, sizeof(groups), "ou=groups,%s", fx.base);
    qr_config *cfg = test_config(dir, "ldap.uri", fx.uri, "ldap.bind_dn", fx.bind_dn, "ldap.bind_password",
                                 fx.bind_pw, "ldap.user_base", people, "ldap.group_base", groups, NULL);
    va_list ap;
    va_start(ap, dir);
    const char *key;
    char err[QR_ERR_LEN];
    while ((key = va_arg(ap, const char *))) {
        const char *value = va_arg(ap, const char *);
        if (qr_config_set(cfg, key, value, QR_CFG_SRC_CLI, err)) {
            fprintf(stderr, "fixture_config: %s\n", err);
            abort();
        }
    }
    va_end(ap);
    return cfg;
}

/* "a,b,c" for the principal's groups. */
static void groups_text(const auth_principal *p, char *out, size_t len)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < p->ngroups && o < len; i++)
        o += (size_t)snprintf(out + o, len - o, "%s%s", i ? "," : "", p->groups[i]);
}

static double elapsed_ms(uint64_t since)
{
    return (double)(qr_now_ns() - since) / 1e6;
}

/* SIGSTOPs slapd and waits until every one of its threads has stopped: kill() only queues the
 * signal, and a thread that is running may still answer a request sent right after it. */
static bool stop_slapd(void)
{
    if (kill(fx.slapd, SIGSTOP) != 0)
        return false;
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/task", (int)fx.slapd);
    for (int tries = 0; tries < 200; tries++) {
        char cmd[160];
        /* field 3 of each task's stat is its state; T means stopped */
        snprintf(cmd, sizeof(cmd), "cat %s/*/stat 2>/dev/null | sed 's/.*) //' | cut -d' ' -f1 | grep -qv T",
                 dir);
        if (system(cmd) != 0)
            return true;
        usleep(10 * 1000);
    }
    return false;
}

/* Adds (add true) or deletes attr=value on dn as the fixture's rootdn. */
static int admin_modify(const char *dn, bool add, const char *attr, const char *value)
{
    LDAP *ld = NULL;
    int version = LDAP_VERSION3;
    if (ldap_initialize(&ld, fx.uri) != LDAP_SUCCESS)
        return -1;
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version);
    struct berval cred = {strlen(fx.admin_pw), (char *)fx.admin_pw};
    int rc = ldap_sasl_bind_s(ld, fx.admin_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
    if (rc == LDAP_SUCCESS) {
        char *values[] = {(char *)value, NULL};
        LDAPMod mod = {add ? LDAP_MOD_ADD : LDAP_MOD_DELETE, (char *)attr, {values}};
        LDAPMod *mods[] = {&mod, NULL};
        rc = ldap_modify_ext_s(ld, dn, mods, NULL, NULL);
    }
    ldap_unbind_ext_s(ld, NULL, NULL);
    return rc;
}

#define SETUP(...)                                             \
    char dir[256], err[QR_ERR_LEN];                            \
    auth_ctx *ctx = NULL;                                      \
    CHECK(fixture_ready());                                    \
    test_tmpdir(dir, sizeof(dir));                             \
    qr_config *cfg = fixture_config(dir, ##__VA_ARGS__, NULL); \
    CHECK_OK(auth_new(cfg, &ctx, err), err)

#define TEARDOWN()           \
    do {                     \
        auth_free(ctx);      \
        qr_config_free(cfg); \
        test_rmdir(dir);     \
    } while (0)

/* ---- users and groups ------------------------------------------------------------------------- */

static const struct {
    const char *uid, *password, *dn_rdn, *display, *groups;
} users[] = {
    {"alice", "Alice-pw-1", "uid=alice", "Alice Anders", "auditors,developers,eng-backend,engineering,staff"},
    {"bob", "Bob-pw-2", "uid=bob", "Bob Baker", "developers,eng-frontend,engineering,staff"},
    {"carol", "Carol-pw-3", "uid=carol", "Carol Chen",
     "cycle-a,cycle-b,cycle-c,developers,engineering,r&d (lab),staff"},
    {"dave", "p@ss, w0rd (*)", "uid=dave", "Dave Davis (on call)", "oncall*,ops,staff"},
    {"erin", "Erin-pw-5", "uid=erin", "Erin Evans", ""},
    {"frank", "Frank-pw-6", "uid=frank", "Frank Fischer", "auditors,ops"},
    {"zoe", "Zoe-pw-7", "uid=zoe", "Zo\xc3\xab Zimmer", "sales, emea,staff"},
};
#define NUSERS (sizeof(users) / sizeof(users[0]))

TEST(every_user_and_transitive_groups)
{
    SETUP();
    for (size_t i = 0; i < NUSERS; i++) {
        auth_principal *p = NULL;
        CHECK_OK(auth_authenticate(ctx, users[i].uid, strlen(users[i].uid), users[i].password,
                                   strlen(users[i].password), "127.0.0.1", &p, err),
                 err);
        char text[512], want_dn[256], mail[64];
        groups_text(p, text, sizeof(text));
        CHECK_STR(text, users[i].groups);
        CHECK_STR(p->uid, users[i].uid);
        snprintf(want_dn, sizeof(want_dn), "%s,ou=people,%s", users[i].dn_rdn, fx.base);
        CHECK_STR(p->dn, want_dn);
        CHECK_STR(p->display_name, users[i].display);
        snprintf(mail, sizeof(mail), "%s@quarry.test", users[i].uid);
        CHECK_STR(p->mail, mail);
        CHECK_INT(p->nprincipals, p->ngroups + 2);
        CHECK(auth_principal_has(p, "public"));
        char user[64];
        snprintf(user, sizeof(user), "user:%s", users[i].uid);
        CHECK(auth_principal_has(p, user));
        CHECK(!p->is_admin);
        auth_principal_release(p);

        /* resolution without a password gives the same principal */
        CHECK_OK(auth_flush(ctx, err), err);
        CHECK_OK(auth_resolve(ctx, users[i].uid, &p, err), err);
        groups_text(p, text, sizeof(text));
        CHECK_STR(text, users[i].groups);
        auth_principal_release(p);
    }
    auth_principal *p = NULL;
    CHECK_OK(auth_resolve(ctx, "zoe", &p, err), err);
    CHECK(auth_principal_has(p, "group:sales, emea"));
    auth_principal_release(p);
    CHECK_OK(auth_resolve(ctx, "dave", &p, err), err);
    CHECK(auth_principal_has(p, "group:oncall*"));
    auth_principal_release(p);
    TEARDOWN();
}

TEST(nesting_three_deep_and_depth_limit)
{
    SETUP("ldap.nested_depth", "1");
    auth_principal *p = NULL;
    char text[512];
    CHECK_OK(auth_resolve(ctx, "alice", &p, err), err);
    groups_text(p, text, sizeof(text));
    CHECK_STR(text, "auditors,developers,eng-backend,engineering"); /* staff is one level further */
    auth_principal_release(p);
    auth_free(ctx);
    qr_config_free(cfg);

    cfg = fixture_config(dir, "ldap.nested_depth", "2", NULL);
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    CHECK_OK(auth_resolve(ctx, "alice", &p, err), err);
    groups_text(p, text, sizeof(text));
    CHECK_STR(text, "auditors,developers,eng-backend,engineering,staff");
    auth_principal_release(p);
    auth_free(ctx);
    qr_config_free(cfg);

    cfg = fixture_config(dir, "ldap.nested_depth", "0", NULL);
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    CHECK_OK(auth_resolve(ctx, "alice", &p, err), err);
    groups_text(p, text, sizeof(text));
    CHECK_STR(text, "auditors,developers,eng-backend");
    auth_principal_release(p);
    TEARDOWN();
}

TEST(membership_cycle_terminates)
{
    SETUP("ldap.nested_depth", "64");
    auth_principal *p = NULL;
    char text[512];
    CHECK_OK(auth_resolve(ctx, "carol", &p, err), err);
    groups_text(p, text, sizeof(text));
    CHECK_STR(text, "cycle-a,cycle-b,cycle-c,developers,engineering,r&d (lab),staff");
    auth_principal_release(p);
    auth_stats st;
    auth_get_stats(ctx, &st);
    /* the user, the direct groups, then one batched search per level until nothing new appears:
     * {r&d (lab), cycle-a, developers} -> {engineering, cycle-b} -> {staff, cycle-c} -> {} */
    CHECK_INT(st.searches, 5);
    TEARDOWN();
}

TEST(user_in_no_group)
{
    SETUP();
    auth_principal *p = NULL;
    CHECK_OK(auth_authenticate(ctx, "erin", 4, "Erin-pw-5", 9, NULL, &p, err), err);
    CHECK_INT(p->ngroups, 0);
    CHECK_INT(p->nprincipals, 2);
    CHECK_STR(p->principals[0], "public");
    CHECK_STR(p->principals[1], "user:erin");
    auth_principal_release(p);
    TEARDOWN();
}

TEST(admin_groups)
{
    SETUP("auth.admin_groups", " Engineering ,auditors");
    static const struct {
        const char *uid;
        bool admin;
    } want[] = {{"alice", true}, {"carol", true}, {"frank", true}, {"dave", false}, {"erin", false}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        auth_principal *p = NULL;
        CHECK_OK(auth_resolve(ctx, want[i].uid, &p, err), err);
        CHECK_MSG(p->is_admin == want[i].admin, "%s: is_admin %d", want[i].uid, p->is_admin);
        auth_principal_release(p);
    }
    TEARDOWN();
}

TEST(memberof_attribute)
{
    /* memberOf holds the direct groupOfNames groups only (see directory.ldif) */
    SETUP("ldap.memberof_attr", "memberOf");
    auth_principal *p = NULL;
    char text[512];
    CHECK_OK(auth_resolve(ctx, "alice", &p, err), err);
    groups_text(p, text, sizeof(text));
    CHECK_STR(text, "eng-backend,engineering,staff");
    auth_principal_release(p);
    CHECK_OK(auth_resolve(ctx, "zoe", &p, err), err);
    groups_text(p, text, sizeof(text));
    CHECK_STR(text, "sales, emea,staff");
    auth_principal_release(p);
    TEARDOWN();
}

/* ---- credentials ------------------------------------------------------------------------------ */

TEST(wrong_empty_and_unknown_credentials)
{
    SETUP("auth.rate_limit_user", "0", "auth.rate_limit_addr", "0");
    auth_principal *p = NULL;
    auth_stats before, after;
    static const struct {
        const char *user, *password;
    } bad[] = {
        {"alice", "alice-pw-1"}, /* case matters in passwords */
        {"alice", "Bob-pw-2"},   {"alice", "Alice-pw-1 "}, {"nobody", "Alice-pw-1"}, {"bob", "*"},
        {"dave", "p@ss, w0rd"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT(auth_authenticate(ctx, bad[i].user, strlen(bad[i].user), bad[i].password,
                                    strlen(bad[i].password), "127.0.0.1", &p, err),
                  QR_EAUTH);
        CHECK(p == NULL);
        /* one message whatever went wrong: no probing for user names */
        CHECK_STR(err, "invalid user name or password");
    }
    /* an empty password is refused before any bind, even for a real user */
    auth_get_stats(ctx, &before);
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "", 0, NULL, &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "alice", 5, NULL, 0, NULL, &p, err), QR_EAUTH);
    auth_get_stats(ctx, &after);
    CHECK_INT(after.binds, before.binds);
    CHECK_INT(after.searches, before.searches);
    /* the user name matches case-insensitively, the password is sent as given */
    CHECK_OK(auth_authenticate(ctx, "ALICE", 5, "Alice-pw-1", 10, NULL, &p, err), err);
    CHECK_STR(p->uid, "alice");
    auth_principal_release(p);
    CHECK_OK(auth_authenticate(ctx, "dave", 4, "p@ss, w0rd (*)", 14, NULL, &p, err), err);
    auth_principal_release(p);
    /* a NUL inside a password is part of it: this one is simply wrong */
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "Alice-pw-1\0x", 12, NULL, &p, err), QR_EAUTH);
    TEARDOWN();
}

TEST(injection_attempts)
{
    SETUP("auth.rate_limit_user", "0", "auth.rate_limit_addr", "0");
    static const char *const names[] = {
        "*",       "*)(uid=*", "admin)(|(uid=*",         "alice)(uid=*", "alice*",
        "*alice*", "al*",      "alice)(|(objectClass=*", "\\2a",         "uid=alice",
        "(uid=*)", "alice)"};
    /* every real password, so that a filter matching anyone would let someone in */
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        for (size_t u = 0; u < NUSERS; u++) {
            auth_principal *p = NULL;
            qr_status st = auth_authenticate(ctx, names[i], strlen(names[i]), users[u].password,
                                             strlen(users[u].password), NULL, &p, err);
            CHECK_MSG(st == QR_EAUTH && !p, "'%s' with %s's password: %s", names[i], users[u].uid,
                      qr_status_name(st));
        }
        auth_principal *p = NULL;
        CHECK_INT(auth_resolve(ctx, names[i], &p, err), QR_ENOTFOUND);
    }
    /* NUL bytes and absurd lengths never reach the server */
    auth_stats before, after;
    auth_get_stats(ctx, &before);
    auth_principal *p = NULL;
    CHECK_INT(auth_authenticate(ctx, "alice\0", 6, "Alice-pw-1", 10, NULL, &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "al\0ice", 6, "Alice-pw-1", 10, NULL, &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "\0", 1, "Alice-pw-1", 10, NULL, &p, err), QR_EAUTH);
    char *big = malloc(10001);
    memset(big, 'a', 10000);
    big[10000] = '\0';
    CHECK_INT(auth_authenticate(ctx, big, 10000, "Alice-pw-1", 10, NULL, &p, err), QR_EAUTH);
    memcpy(big, "alice)(uid=*", 12);
    CHECK_INT(auth_authenticate(ctx, big, 10000, "Alice-pw-1", 10, NULL, &p, err), QR_EAUTH);
    CHECK_INT(auth_resolve(ctx, big, &p, err), QR_EINVAL);
    char *pw = malloc(10001);
    memset(pw, 'p', 10000);
    CHECK_INT(auth_authenticate(ctx, "alice", 5, pw, 10000, NULL, &p, err), QR_EAUTH);
    free(pw);
    free(big);
    auth_get_stats(ctx, &after);
    CHECK_INT(after.searches, before.searches);
    CHECK_INT(after.binds, before.binds);
    TEARDOWN();
}

TEST(service_account_refused_fails_closed)
{
    SETUP("ldap.bind_password", "not-the-password");
    auth_principal *p = NULL;
    CHECK_INT(auth_resolve(ctx, "alice", &p, err), QR_EUNAVAILABLE);
    CHECK(strstr(err, "service account") != NULL);
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "Alice-pw-1", 10, NULL, &p, err), QR_EUNAVAILABLE);
    CHECK(p == NULL);
    TEARDOWN();
}

TEST(rate_limits_failed_logins)
{
    SETUP("auth.rate_limit_user", "3", "auth.rate_limit_addr", "6", "auth.rate_limit_window_s", "2");
    auth_principal *p = NULL;
    auth_stats before, after;
    /* two failures, then a success resets the user's count */
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "wrong", 5, "10.1.1.1", &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "wrong", 5, "10.1.1.1", &p, err), QR_EAUTH);
    CHECK_OK(auth_authenticate(ctx, "alice", 5, "Alice-pw-1", 10, "10.1.1.1", &p, err), err);
    auth_principal_release(p);
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "wrong", 5, "10.1.1.2", &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "wrong", 5, "10.1.1.2", &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "wrong", 5, "10.1.1.2", &p, err), QR_EAUTH);
    /* limit reached: even the right password is refused, and LDAP is not asked */
    auth_get_stats(ctx, &before);
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "Alice-pw-1", 10, "10.1.1.3", &p, err), QR_ELIMIT);
    auth_get_stats(ctx, &after);
    CHECK_INT(after.binds, before.binds);
    CHECK_INT(after.searches, before.searches);
    /* other users are not affected */
    CHECK_OK(auth_authenticate(ctx, "bob", 3, "Bob-pw-2", 8, "10.1.1.3", &p, err), err);
    auth_principal_release(p);
    /* unknown users count per address too: 10.1.1.2 has 3 failures, limit 6 */
    CHECK_INT(auth_authenticate(ctx, "ghost1", 6, "x", 1, "10.1.1.2", &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "ghost2", 6, "x", 1, "10.1.1.2", &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "ghost3", 6, "x", 1, "10.1.1.2", &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "bob", 3, "Bob-pw-2", 8, "10.1.1.2", &p, err), QR_ELIMIT);
    /* the window passes */
    sleep(2);
    CHECK_OK(auth_authenticate(ctx, "alice", 5, "Alice-pw-1", 10, "10.1.1.2", &p, err), err);
    auth_principal_release(p);
    TEARDOWN();
}

TEST(rate_limit_counts_every_spelling_of_a_user)
{
    /* LDAP finds alice's entry for "alice ", " alice", fullwidth "ａｌｉｃｅ", "aｌice" and "ⓐlice"
     * (NFKC) too: failures count against the entry, whatever spelling made them, and past the limit
     * every spelling is refused, even with the right password, before a bind is sent. */
    SETUP("auth.rate_limit_user", "5", "auth.rate_limit_addr", "0", "auth.rate_limit_window_s", "60");
    static const char *const spellings[] = {
        "alice",
        "alice ",
        " alice",
        "\xef\xbd\x81\xef\xbd\x8c\xef\xbd\x89\xef\xbd\x83\xef\xbd\x85", /* ａｌｉｃｅ */
        "a\xef\xbd\x8c"
        "ice", /* aｌice */
        "ALICE",
        "\xe2\x93\x90"
        "lice", /* ⓐlice: only the entry's count catches this one */
    };
    const size_t n = sizeof(spellings) / sizeof(spellings[0]);
    auth_principal *p = NULL;
    auth_stats before, after;
    /* the five failures spread over five spellings */
    for (size_t i = 2; i < n; i++)
        CHECK_INT(auth_authenticate(ctx, spellings[i], strlen(spellings[i]), "wrong", 5, "10.2.0.1", &p, err),
                  QR_EAUTH);
    auth_get_stats(ctx, &before);
    for (size_t i = 0; i < n; i++) {
        qr_status st =
            auth_authenticate(ctx, spellings[i], strlen(spellings[i]), "Alice-pw-1", 10, "10.2.0.2", &p, err);
        CHECK_MSG(st == QR_ELIMIT && !p, "'%s' with the right password: %s", spellings[i],
                  qr_status_name(st));
    }
    auth_get_stats(ctx, &after);
    CHECK_INT(after.binds, before.binds);
    CHECK_INT(after.rate_limited, before.rate_limited + n);
    /* other users are not affected; a name that finds no entry is limited however it is spelt */
    CHECK_OK(auth_authenticate(ctx, "bob", 3, "Bob-pw-2", 8, "10.2.0.2", &p, err), err);
    auth_principal_release(p);
    for (int i = 0; i < 5; i++)
        CHECK_INT(auth_authenticate(ctx, "ghost", 5, "x", 1, "10.2.0.3", &p, err), QR_EAUTH);
    const char *ghosts[] = {"ghost ", "GHOST", "\xef\xbd\x87host"};
    for (size_t i = 0; i < 3; i++)
        CHECK_INT(auth_authenticate(ctx, ghosts[i], strlen(ghosts[i]), "x", 1, "10.2.0.3", &p, err),
                  QR_ELIMIT);
    TEARDOWN();
}

TEST(variant_spellings_log_in_as_the_directory_uid)
{
    /* the uid, the cache key, a token and a resolution all carry the directory's uid, never the
     * spelling that found the entry; a success clears the entry's count whatever the spelling */
    SETUP("auth.rate_limit_user", "3", "auth.rate_limit_addr", "0", "auth.rate_limit_window_s", "60");
    auth_principal *p = NULL;
    const char *full = "\xef\xbd\x82\xef\xbd\x8f\xef\xbd\x82"; /* ｂｏｂ */
    CHECK_INT(auth_authenticate(ctx, "bob ", 4, "wrong", 5, NULL, &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "BOB", 3, "wrong", 5, NULL, &p, err), QR_EAUTH);
    CHECK_OK(auth_authenticate(ctx, full, strlen(full), "Bob-pw-2", 8, NULL, &p, err), err);
    CHECK_STR(p->uid, "bob");
    CHECK(auth_principal_has(p, "user:bob") && auth_principal_has(p, "group:engineering"));
    char *token = NULL, *uid = NULL;
    CHECK_OK(auth_token_issue(ctx, p->uid, 0, &token, NULL, err), err);
    auth_principal_release(p);
    CHECK_OK(auth_token_verify(ctx, token, &uid, NULL, err), err);
    CHECK_STR(uid, "bob");
    free(uid);
    free(token);
    /* the count started again: two more failures do not reach the limit of three */
    CHECK_INT(auth_authenticate(ctx, " bob", 4, "wrong", 5, NULL, &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "bob", 3, "wrong", 5, NULL, &p, err), QR_EAUTH);
    CHECK_OK(auth_authenticate(ctx, "bob", 3, "Bob-pw-2", 8, NULL, &p, err), err);
    auth_principal_release(p);
    /* resolving a variant gives the same principal, cached under the directory's uid only */
    auth_stats before, after;
    CHECK_OK(auth_resolve(ctx, " bob ", &p, err), err);
    CHECK_STR(p->uid, "bob");
    auth_principal_release(p);
    auth_get_stats(ctx, &before);
    CHECK_OK(auth_resolve(ctx, "bob", &p, err), err);
    CHECK_STR(p->uid, "bob");
    auth_principal_release(p);
    auth_get_stats(ctx, &after);
    CHECK_INT(after.searches, before.searches); /* the login cached it */
    CHECK_INT(after.cache_hits, before.cache_hits + 1);
    TEARDOWN();
}

/* ---- connections, threads, failures ------------------------------------------------------------- */

TEST(connections_are_reused)
{
    SETUP("ldap.cache_ttl_s", "0", "ldap.pool_size", "2");
    for (int i = 0; i < 20; i++) {
        auth_principal *p = NULL;
        CHECK_OK(auth_resolve(ctx, users[i % NUSERS].uid, &p, err), err);
        auth_principal_release(p);
    }
    for (int i = 0; i < 10; i++) {
        auth_principal *p = NULL;
        size_t u = (size_t)i % NUSERS;
        CHECK_OK(auth_authenticate(ctx, users[u].uid, strlen(users[u].uid), users[u].password,
                                   strlen(users[u].password), NULL, &p, err),
                 err);
        auth_principal_release(p);
    }
    auth_stats st;
    auth_get_stats(ctx, &st);
    /* one thread uses one slot: its service connection and its user-bind connection */
    CHECK_INT(st.connects, 2);
    CHECK_INT(st.binds, 1 + 10);
    CHECK_INT(st.cache_hits, 0);
    TEARDOWN();
}

typedef struct {
    auth_ctx *ctx;
    int index;
    int failures;
} worker_arg;

static void *worker(void *arg)
{
    worker_arg *w = arg;
    char err[QR_ERR_LEN], text[512];
    for (int i = 0; i < 25; i++) {
        size_t u = (size_t)(w->index + i) % NUSERS;
        auth_principal *p = NULL;
        qr_status st = i % 2 ? auth_resolve(w->ctx, users[u].uid, &p, err)
                             : auth_authenticate(w->ctx, users[u].uid, strlen(users[u].uid),
                                                 users[u].password, strlen(users[u].password), NULL, &p, err);
        if (st) {
            fprintf(stderr, "worker %d: %s: %s\n", w->index, users[u].uid, err);
            w->failures++;
            continue;
        }
        groups_text(p, text, sizeof(text));
        if (strcmp(text, users[u].groups) != 0 || strcmp(p->uid, users[u].uid) != 0)
            w->failures++;
        auth_principal_release(p);
    }
    return NULL;
}

TEST(threads_share_a_small_pool)
{
    SETUP("ldap.pool_size", "2", "ldap.cache_ttl_s", "1", "auth.rate_limit_user", "0");
    pthread_t threads[8];
    worker_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (worker_arg){ctx, i, 0};
        CHECK(pthread_create(&threads[i], NULL, worker, &args[i]) == 0);
    }
    int failures = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(threads[i], NULL);
        failures += args[i].failures;
    }
    CHECK_INT(failures, 0);
    auth_stats st;
    auth_get_stats(ctx, &st);
    CHECK_MSG(st.connects <= 4, "%llu connections for a pool of 2", (unsigned long long)st.connects);
    TEARDOWN();
}

TEST(slapd_stopped_fails_closed)
{
    SETUP("ldap.cache_ttl_s", "0", "ldap.timeout_ms", "800");
    auth_principal *p = NULL;
    CHECK_OK(auth_resolve(ctx, "alice", &p, err), err);
    auth_principal_release(p);
    p = NULL;

    /* stopped: connections stay open, nothing answers */
    CHECK(stop_slapd());
    uint64_t t0 = qr_now_ns();
    qr_status login = auth_authenticate(ctx, "alice", 5, "Alice-pw-1", 10, NULL, &p, err);
    double login_ms = elapsed_ms(t0);
    auth_principal *q = NULL;
    t0 = qr_now_ns();
    qr_status resolve = auth_resolve(ctx, "bob", &q, err);
    double resolve_ms = elapsed_ms(t0);
    kill(fx.slapd, SIGCONT);
    CHECK_INT(login, QR_EUNAVAILABLE);
    CHECK(p == NULL);
    CHECK_MSG(login_ms < 800 + 700, "login took %.0f ms", login_ms);
    CHECK_INT(resolve, QR_EUNAVAILABLE);
    CHECK(q == NULL);
    CHECK_MSG(resolve_ms < 800 + 700, "resolve took %.0f ms", resolve_ms);

    /* running again: the broken connections were dropped and new ones work */
    CHECK_OK(auth_resolve(ctx, "bob", &q, err), err);
    auth_principal_release(q);
    q = NULL;

    /* gone for good: refused at once, still closed */
    CHECK(kill(fx.slapd, SIGKILL) == 0);
    usleep(200 * 1000);
    t0 = qr_now_ns();
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "Alice-pw-1", 10, NULL, &p, err), QR_EUNAVAILABLE);
    CHECK_INT(auth_resolve(ctx, "alice", &q, err), QR_EUNAVAILABLE);
    CHECK(p == NULL && q == NULL);
    CHECK_MSG(elapsed_ms(t0) < 800, "took %.0f ms against a dead server", elapsed_ms(t0));
    TEARDOWN();
}

/* A TCP listener that accepts connections and never says a word, or (starttls) that answers the
 * first request with a StartTLS success and then says nothing, in the middle of the handshake. */
typedef struct {
    int fd;
    int port;
    bool starttls;
    int clients[16];
    int nclients;
    pthread_t thread;
} silent_server;

static void *silent_accept(void *arg)
{
    silent_server *s = arg;
    for (;;) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            return NULL;
        unsigned char req[512];
        ssize_t n = s->starttls ? read(c, req, sizeof(req)) : 0;
        /* LDAPMessage {messageID, extendedResp {success, "", ""}}, with the request's short id */
        if (n >= 5 && req[0] == 0x30 && req[1] < 0x80 && req[2] == 0x02 && req[3] == 0x01) {
            unsigned char resp[] = {0x30, 0x0c, 0x02, 0x01, req[4], 0x78, 0x07,
                                    0x0a, 0x01, 0x00, 0x04, 0x00,   0x04, 0x00};
            if (write(c, resp, sizeof(resp)) != (ssize_t)sizeof(resp))
                fprintf(stderr, "silent server: short write\n");
        }
        if (s->nclients < 16)
            s->clients[s->nclients++] = c; /* held open, never read or written again */
        else
            close(c);
    }
}

static bool silent_start(silent_server *s, bool starttls)
{
    memset(s, 0, sizeof(*s));
    s->starttls = starttls;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s->fd, 16) != 0 ||
        getsockname(s->fd, (struct sockaddr *)&a, &len) != 0)
        return false;
    s->port = ntohs(a.sin_port);
    return pthread_create(&s->thread, NULL, silent_accept, s) == 0;
}

static void silent_stop(silent_server *s)
{
    shutdown(s->fd, SHUT_RDWR);
    close(s->fd);
    pthread_join(s->thread, NULL);
    for (int i = 0; i < s->nclients; i++)
        close(s->clients[i]);
}

TEST(unresponsive_server_times_out)
{
    silent_server s, half;
    CHECK(fixture_ready());
    CHECK(silent_start(&s, false));
    CHECK(silent_start(&half, true));
    char dir[256], err[QR_ERR_LEN], uri[64], ldaps[64], half_uri[64];
    test_tmpdir(dir, sizeof(dir));
    snprintf(uri, sizeof(uri), "ldap://127.0.0.1:%d/", s.port);
    snprintf(ldaps, sizeof(ldaps), "ldaps://127.0.0.1:%d/", s.port);
    snprintf(half_uri, sizeof(half_uri), "ldap://127.0.0.1:%d/", half.port);
    const char *variants[][4] = {
        {uri, "off", "", "plain"},
        {uri, "on", fx.ca_file, "StartTLS"},
        {ldaps, "off", fx.ca_file, "ldaps"},
        {half_uri, "on", fx.ca_file, "StartTLS accepted, then a silent handshake"},
    };
    bool ok = true;
    for (size_t v = 0; v < 4 && ok; v++) {
        qr_config *cfg = fixture_config(dir, "ldap.uri", variants[v][0], "ldap.starttls", variants[v][1],
                                        "ldap.ca_file", variants[v][2], "ldap.timeout_ms", "600", NULL);
        auth_ctx *ctx = NULL;
        if (auth_new(cfg, &ctx, err) != QR_OK) {
            harness_fail(__FILE__, __LINE__, "auth_new: %s", err);
            ok = false;
        }
        auth_principal *p = NULL;
        uint64_t t0 = qr_now_ns();
        qr_status login = ok ? auth_authenticate(ctx, "alice", 5, "Alice-pw-1", 10, NULL, &p, err) : QR_OK;
        double login_ms = elapsed_ms(t0);
        t0 = qr_now_ns();
        qr_status resolve = ok ? auth_resolve(ctx, "alice", &p, err) : QR_OK;
        double resolve_ms = elapsed_ms(t0);
        if (ok && (login != QR_EUNAVAILABLE || resolve != QR_EUNAVAILABLE || p || login_ms > 600 + 600 ||
                   resolve_ms > 600 + 600)) {
            harness_fail(__FILE__, __LINE__, "%s: login %s in %.0f ms, resolve %s in %.0f ms", variants[v][3],
                         qr_status_name(login), login_ms, qr_status_name(resolve), resolve_ms);
            ok = false;
        }
        auth_free(ctx);
        qr_config_free(cfg);
    }
    silent_stop(&s);
    silent_stop(&half);

    /* nobody listening at all: refused at once */
    qr_config *cfg = fixture_config(dir, "ldap.uri", uri, "ldap.timeout_ms", "600", NULL);
    auth_ctx *ctx = NULL;
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    auth_principal *p = NULL;
    CHECK_INT(auth_resolve(ctx, "alice", &p, err), QR_EUNAVAILABLE);
    TEARDOWN();
}

TEST(uri_list_fails_over)
{
    silent_server s;
    CHECK(fixture_ready());
    CHECK(silent_start(&s, false));
    char dir[256], err[QR_ERR_LEN], uris[256];
    test_tmpdir(dir, sizeof(dir));
    /* a refused first server costs nothing; a silent one costs its share of the deadline */
    snprintf(uris, sizeof(uris), "ldap://127.0.0.1:1/, ldap://127.0.0.1:%d/ %s", s.port, fx.uri);
    qr_config *cfg = fixture_config(dir, "ldap.uri", uris, "ldap.timeout_ms", "3000", NULL);
    auth_ctx *ctx = NULL;
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    auth_principal *p = NULL;
    uint64_t t0 = qr_now_ns();
    qr_status st = auth_authenticate(ctx, "alice", 5, "Alice-pw-1", 10, NULL, &p, err);
    double ms = elapsed_ms(t0);
    silent_stop(&s);
    CHECK_OK(st, err);
    auth_principal_release(p);
    /* three URIs: the silent second one gets half of what is left after the first */
    CHECK_MSG(ms > 1000 && ms < 2500, "login through the third URI took %.0f ms", ms);
    TEARDOWN();
}

/* ---- TLS ----------------------------------------------------------------------------------------- */

TEST(ldaps_with_the_test_ca)
{
    SETUP("ldap.uri", fx.ldaps_uri, "ldap.ca_file", fx.ca_file);
    auth_principal *p = NULL;
    CHECK_OK(auth_authenticate(ctx, "carol", 5, "Carol-pw-3", 10, NULL, &p, err), err);
    CHECK_INT(p->ngroups, 7);
    auth_principal_release(p);
    TEARDOWN();
}

TEST(starttls_with_the_test_ca)
{
    SETUP("ldap.starttls", "on", "ldap.ca_file", fx.ca_file);
    auth_principal *p = NULL;
    CHECK_OK(auth_authenticate(ctx, "zoe", 3, "Zoe-pw-7", 8, NULL, &p, err), err);
    CHECK(auth_principal_has(p, "group:sales, emea"));
    auth_principal_release(p);
    TEARDOWN();
}

TEST(tls_without_the_ca_fails_closed)
{
    /* the system's CAs do not know the test CA: no connection, and no fallback to plain text */
    char dir[256], err[QR_ERR_LEN];
    CHECK(fixture_ready());
    test_tmpdir(dir, sizeof(dir));
    const char *variants[][2] = {{fx.ldaps_uri, "off"}, {fx.uri, "on"}};
    for (size_t v = 0; v < 2; v++) {
        qr_config *cfg =
            fixture_config(dir, "ldap.uri", variants[v][0], "ldap.starttls", variants[v][1], NULL);
        auth_ctx *ctx = NULL;
        CHECK_OK(auth_new(cfg, &ctx, err), err);
        auth_principal *p = NULL;
        qr_status st = auth_authenticate(ctx, "alice", 5, "Alice-pw-1", 10, NULL, &p, err);
        auth_stats stats;
        auth_get_stats(ctx, &stats);
        auth_free(ctx);
        qr_config_free(cfg);
        CHECK_INT(st, QR_EUNAVAILABLE);
        CHECK(p == NULL);
        CHECK_INT(stats.binds, 0); /* the password never left */
    }
    /* the same CA file with ldap.require_cert=never would connect: demand is what checks */
    qr_config *cfg = fixture_config(dir, "ldap.uri", fx.ldaps_uri, "ldap.require_cert", "never", NULL);
    auth_ctx *ctx = NULL;
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    auth_principal *p = NULL;
    CHECK_OK(auth_resolve(ctx, "alice", &p, err), err);
    auth_principal_release(p);
    TEARDOWN();
}

/* ---- the cache ----------------------------------------------------------------------------------- */

TEST(cache_expires_after_ttl)
{
    SETUP("ldap.cache_ttl_s", "1");
    char erin_dn[256], group_dn[256], text[512];
    snprintf(erin_dn, sizeof(erin_dn), "uid=erin,ou=people,%s", fx.base);
    snprintf(group_dn, sizeof(group_dn), "cn=eng-frontend,ou=groups,%s", fx.base);
    auth_principal *p = NULL;
    CHECK_OK(auth_resolve(ctx, "erin", &p, err), err);
    CHECK_INT(p->ngroups, 0);
    auth_principal_release(p);
    CHECK_INT(admin_modify(group_dn, true, "member", erin_dn), LDAP_SUCCESS);
    CHECK_OK(auth_resolve(ctx, "erin", &p, err), err);
    CHECK_INT(p->ngroups, 0); /* still the cached principal */
    auth_principal_release(p);
    usleep(1100 * 1000);
    CHECK_OK(auth_resolve(ctx, "erin", &p, err), err);
    groups_text(p, text, sizeof(text));
    CHECK_STR(text, "eng-frontend,engineering,staff");
    auth_principal_release(p);
    auth_stats st;
    auth_get_stats(ctx, &st);
    CHECK_INT(st.cache_hits, 1);
    CHECK_INT(st.cache_misses, 2);
    TEARDOWN();
}

TEST(cache_is_bounded_lru)
{
    SETUP("ldap.cache_max_entries", "2");
    const char *order[] = {"alice", "bob", "alice", "carol", "alice", "bob"};
    const int hit[] = {0, 0, 1, 0, 1, 0};
    for (size_t i = 0; i < 6; i++) {
        auth_stats before, after;
        auth_get_stats(ctx, &before);
        auth_principal *p = NULL;
        CHECK_OK(auth_resolve(ctx, order[i], &p, err), err);
        auth_principal_release(p);
        auth_get_stats(ctx, &after);
        CHECK_MSG((int)(after.cache_hits - before.cache_hits) == hit[i], "step %zu (%s)", i, order[i]);
    }
    TEARDOWN();
}

TEST(failed_login_is_never_cached)
{
    SETUP("auth.rate_limit_user", "0");
    auth_principal *p = NULL;
    CHECK_OK(auth_authenticate(ctx, "alice", 5, "Alice-pw-1", 10, NULL, &p, err), err);
    auth_principal_release(p);
    p = NULL;
    /* alice is cached now; a wrong password is still checked by LDAP and refused */
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "wrong", 5, NULL, &p, err), QR_EAUTH);
    CHECK(p == NULL);
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "wrong", 5, NULL, &p, err), QR_EAUTH);
    CHECK_OK(auth_authenticate(ctx, "alice", 5, "Alice-pw-1", 10, NULL, &p, err), err);
    auth_principal_release(p);
    /* an unknown user stays unknown */
    CHECK_INT(auth_authenticate(ctx, "nobody", 6, "x", 1, NULL, &p, err), QR_EAUTH);
    CHECK_INT(auth_resolve(ctx, "nobody", &p, err), QR_ENOTFOUND);
    CHECK_INT(auth_resolve(ctx, "nobody", &p, err), QR_ENOTFOUND);
    auth_stats st;
    auth_get_stats(ctx, &st);
    CHECK_INT(st.cache_hits, 0);
    TEARDOWN();
}

TEST(flush_reaches_other_processes)
{
    SETUP();
    auth_ctx *server = NULL;
    CHECK_OK(auth_new(cfg, &server, err), err);
    auth_principal *p = NULL;
    auth_stats st;
    CHECK_OK(auth_resolve(ctx, "alice", &p, err), err);
    auth_principal_release(p);
    CHECK_OK(auth_flush(ctx, err), err);
    CHECK_OK(auth_resolve(ctx, "alice", &p, err), err);
    auth_principal_release(p);
    auth_get_stats(ctx, &st);
    CHECK_INT(st.cache_misses, 2);

    CHECK_OK(auth_resolve(server, "bob", &p, err), err);
    auth_principal_release(p);
    CHECK_OK(auth_resolve(server, "bob", &p, err), err);
    auth_principal_release(p);
    CHECK_OK(auth_flush(ctx, err), err); /* quarry auth flush, in another process */
    usleep(1100 * 1000);
    CHECK_OK(auth_resolve(server, "bob", &p, err), err);
    auth_principal_release(p);
    auth_get_stats(server, &st);
    CHECK_INT(st.cache_hits, 1);
    CHECK_INT(st.cache_misses, 2);
    auth_free(server);
    TEARDOWN();
}

/* Resolves alice while slapd is stopped, after her cached principal expired. */
static qr_status resolve_expired_while_stopped(bool stale, auth_stats *st, bool *login_refused)
{
    char dir[256], err[QR_ERR_LEN];
    test_tmpdir(dir, sizeof(dir));
    qr_config *cfg = fixture_config(dir, "ldap.cache_ttl_s", "1", "ldap.timeout_ms", "500",
                                    "auth.stale_if_error", stale ? "on" : "off", NULL);
    auth_ctx *ctx = NULL;
    auth_principal *p = NULL;
    qr_status result = auth_new(cfg, &ctx, err);
    if (!result)
        result = auth_resolve(ctx, "alice", &p, err);
    auth_principal_release(p);
    p = NULL;
    if (!result) {
        usleep(1100 * 1000);
        result = stop_slapd() ? auth_resolve(ctx, "alice", &p, err) : QR_EINTERNAL;
        if (!result && (!auth_principal_has(p, "group:staff") || strcmp(p->uid, "alice") != 0))
            result = QR_EINTERNAL;
        auth_principal_release(p);
        p = NULL;
        /* a password is never checked against the cache */
        *login_refused =
            auth_authenticate(ctx, "alice", 5, "Alice-pw-1", 10, NULL, &p, err) == QR_EUNAVAILABLE;
        kill(fx.slapd, SIGCONT);
        auth_get_stats(ctx, st);
    }
    auth_free(ctx);
    qr_config_free(cfg);
    test_rmdir(dir);
    return result;
}

TEST(stale_if_error)
{
    CHECK(fixture_ready());
    auth_stats st;
    bool login_refused = false;
    CHECK_INT(resolve_expired_while_stopped(false, &st, &login_refused), QR_EUNAVAILABLE);
    CHECK(login_refused);
    CHECK_INT(st.stale_served, 0);
    login_refused = false;
    CHECK_INT(resolve_expired_while_stopped(true, &st, &login_refused), QR_OK);
    CHECK(login_refused);
    CHECK_INT(st.stale_served, 1);
}

/* ---- tokens and keys ----------------------------------------------------------------------------- */

TEST(tokens_resolve_groups_each_time)
{
    SETUP();
    char erin_dn[256], group_dn[256];
    snprintf(erin_dn, sizeof(erin_dn), "uid=erin,ou=people,%s", fx.base);
    snprintf(group_dn, sizeof(group_dn), "cn=oncall*,ou=groups,%s", fx.base);
    char *token = NULL;
    auth_principal *p = NULL;
    CHECK_OK(auth_token_issue(ctx, "erin", 0, &token, NULL, err), err);
    CHECK_OK(auth_token_principal(ctx, token, &p, err), err);
    CHECK_INT(p->ngroups, 0);
    auth_principal_release(p);
    CHECK_INT(admin_modify(group_dn, true, "member", erin_dn), LDAP_SUCCESS);
    CHECK_OK(auth_flush(ctx, err), err);
    CHECK_OK(auth_token_principal(ctx, token, &p, err), err);
    CHECK(auth_principal_has(p, "group:oncall*") && auth_principal_has(p, "group:staff"));
    auth_principal_release(p);
    free(token);
    /* a token for a user who is not in the directory is worthless */
    CHECK_OK(auth_token_issue(ctx, "ghost", 0, &token, NULL, err), err);
    CHECK_INT(auth_token_principal(ctx, token, &p, err), QR_EAUTH);
    free(token);
    TEARDOWN();
}

TEST(keys_act_on_behalf_of_users)
{
    SETUP();
    char *key = NULL;
    auth_key_info info;
    auth_principal *p = NULL;
    CHECK_OK(auth_key_create(ctx, "chat plugin", AUTH_SCOPE_CHAT | AUTH_SCOPE_ON_BEHALF_OF, &key, &info, err),
             err);
    CHECK_OK(auth_key_principal(ctx, key, "carol", AUTH_SCOPE_CHAT, &p, err), err);
    CHECK_STR(p->uid, "carol");
    CHECK(auth_principal_has(p, "group:cycle-c"));
    auth_principal_release(p);
    CHECK_INT(auth_key_principal(ctx, key, "nobody", AUTH_SCOPE_CHAT, &p, err), QR_ENOTFOUND);
    CHECK_INT(auth_key_principal(ctx, key, "*", AUTH_SCOPE_CHAT, &p, err), QR_ENOTFOUND);
    CHECK_OK(auth_key_revoke(ctx, info.id, err), err);
    CHECK_INT(auth_key_principal(ctx, key, "carol", AUTH_SCOPE_CHAT, &p, err), QR_EAUTH);
    CHECK(p == NULL);
    auth_key_info_release(&info);
    free(key);
    TEARDOWN();
}

/* ---- the quarry command ---------------------------------------------------------------------------- */

/* Runs quarry with the fixture's LDAP settings in the environment; stdin from `input`. */
static int run_quarry(const char *dir, const char *input, const char *args, qr_buf *out)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "printf '%%b' '%s' | env -u QUARRY_CONFIG QUARRY_LDAP_URI='%s' QUARRY_LDAP_BIND_DN='%s' "
             "QUARRY_LDAP_BIND_PASSWORD='%s' QUARRY_LDAP_USER_BASE='ou=people,%s' "
             "QUARRY_LDAP_GROUP_BASE='ou=groups,%s' %s --data '%s' %s 2>&1",
             input, fx.uri, fx.bind_dn, fx.bind_pw, fx.base, fx.base, QUARRY_BIN, dir, args);
    return test_capture(cmd, out);
}

/* Copies the line of text that starts with prefix into out. */
static bool line_starting(const char *text, const char *prefix, char *out, size_t len)
{
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, prefix, strlen(prefix)) == 0) {
            snprintf(out, len, "%.*s", (int)strcspn(line, "\n"), line);
            return true;
        }
    }
    return false;
}

TEST(cli_login_whoami_keys)
{
    SETUP();
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_INT(run_quarry(dir, "Alice-pw-1\\n", "auth login alice --json", &out), 0);
    CHECK(strstr(qr_buf_str(&out), "\"uid\":\"alice\"") != NULL);
    CHECK(strstr(qr_buf_str(&out), "\"group:staff\"") != NULL);
    CHECK(strstr(qr_buf_str(&out), "Alice-pw-1") == NULL);
    CHECK_INT(run_quarry(dir, "nope\\n", "auth login alice", &out), 1);
    CHECK(strstr(qr_buf_str(&out), "invalid user name or password") != NULL);
    CHECK_INT(run_quarry(dir, "", "auth whoami --as carol", &out), 0);
    CHECK(strstr(qr_buf_str(&out), "cycle-c") != NULL && strstr(qr_buf_str(&out), "Carol Chen") != NULL);
    CHECK_INT(run_quarry(dir, "", "auth whoami --as nobody", &out), 1);
    CHECK_INT(run_quarry(dir, "", "auth whoami", &out), 2);

    /* a token from the command line works in another process sharing the data directory */
    CHECK_INT(run_quarry(dir, "p@ss, w0rd (*)\\n", "auth login dave --token", &out), 0);
    char token[1100];
    CHECK(line_starting(qr_buf_str(&out), "qt1.", token, sizeof(token)));
    auth_principal *p = NULL;
    CHECK_OK(auth_token_principal(ctx, token, &p, err), err);
    CHECK_STR(p->uid, "dave");
    auth_principal_release(p);

    CHECK_INT(run_quarry(dir, "", "keys create --name portal --scopes search,on_behalf_of", &out), 0);
    char key[128];
    CHECK(line_starting(qr_buf_str(&out), "qk_", key, sizeof(key)));
    CHECK_OK(auth_key_principal(ctx, key, "zoe", AUTH_SCOPE_SEARCH, &p, err), err);
    CHECK(auth_principal_has(p, "group:sales, emea"));
    auth_principal_release(p);
    CHECK_INT(run_quarry(dir, "", "keys list", &out), 0);
    CHECK(strstr(qr_buf_str(&out), "portal") != NULL && strstr(qr_buf_str(&out), "active") != NULL);
    CHECK(strstr(qr_buf_str(&out), key + 20) == NULL);
    char id[17];
    memcpy(id, key + 3, 16);
    id[16] = '\0';
    char args[64];
    snprintf(args, sizeof(args), "keys revoke %s", id);
    CHECK_INT(run_quarry(dir, "", args, &out), 0);
    CHECK_INT(auth_key_principal(ctx, key, "zoe", AUTH_SCOPE_SEARCH, &p, err), QR_EAUTH);
    CHECK_INT(run_quarry(dir, "", "keys list --json", &out), 0);
    CHECK(strstr(qr_buf_str(&out), "\"revoked\":\"") != NULL);
    CHECK_INT(run_quarry(dir, "", "keys create --name x --scopes root", &out), 2);
    CHECK_INT(run_quarry(dir, "", "auth flush", &out), 0);
    qr_buf_release(&out);
    TEARDOWN();
}
