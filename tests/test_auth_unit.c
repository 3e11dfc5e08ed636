/*
 * auth's parts that need no LDAP server: name checks, RFC 4515 filter escaping and template
 * filling, RFC 4514 DN handling, the LRU map, encodings, tokens (signature, tampering, expiry,
 * the secret file), API keys (hashing, scopes, revocation seen by another process) and the
 * checks authentication makes before anything is sent. The LDAP side is in test_auth.c.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth_int.h"
#include "tests/auth_test_util.h"
#include "tests/harness.h"

static char *escaped(const char *s, size_t n)
{
    qr_buf b;
    qr_buf_init(&b, 1 << 20);
    if (auth_filter_escape(&b, s, n))
        return NULL;
    return qr_buf_detach(&b);
}

TEST(filter_escape_rfc4515)
{
    static const struct {
        const char *in;
        size_t len;
        const char *want;
    } cases[] = {
        {"alice", 5, "alice"},
        {"*", 1, "\\2a"},
        {"*)(uid=*", 8, "\\2a\\29\\28uid=\\2a"},
        {"admin)(|(uid=*", 14, "admin\\29\\28|\\28uid=\\2a"},
        {"a\\b", 3, "a\\5cb"},
        {"x\0y", 3, "x\\00y"},
        {"r&d (lab)", 9, "r&d \\28lab\\29"},
        {"Zo\xc3\xab", 4, "Zo\\c3\\ab"},
        {"cn=sales\\2C emea", 16, "cn=sales\\5c2C emea"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = escaped(cases[i].in, cases[i].len);
        CHECK_STR(got, cases[i].want);
        free(got);
    }
    /* the cap holds: a 10,000-character name cannot grow a small buffer */
    char big[10000];
    memset(big, '*', sizeof(big));
    qr_buf b;
    qr_buf_init(&b, 1024);
    CHECK_INT(auth_filter_escape(&b, big, sizeof(big)), QR_ELIMIT);
    qr_buf_release(&b);
}

static char *expand(const char *tmpl, const char *s, const char *dn, const char *uid, qr_status *st)
{
    qr_buf b;
    qr_buf_init(&b, 1 << 20);
    *st = auth_filter_expand(&b, tmpl, s, s ? strlen(s) : 0, dn, uid);
    return qr_buf_detach(&b);
}

TEST(filter_expand_placeholders)
{
    qr_status st;
    char *f = expand("(uid=%s)", "*)(uid=*", NULL, NULL, &st);
    CHECK_INT(st, QR_OK);
    CHECK_STR(f, "(uid=\\2a\\29\\28uid=\\2a)");
    free(f);
    f = expand("(&(objectClass=person)(|(uid=%s)(mail=%s))(x=100%%))", "a(b", NULL, NULL, &st);
    CHECK_INT(st, QR_OK);
    CHECK_STR(f, "(&(objectClass=person)(|(uid=a\\28b)(mail=a\\28b))(x=100%))");
    free(f);
    f = expand("(|(member=%d)(uniqueMember=%d)(memberUid=%u))", NULL, "cn=r&d (lab),ou=groups", "alice", &st);
    CHECK_INT(st, QR_OK);
    CHECK_STR(f, "(|(member=cn=r&d \\28lab\\29,ou=groups)(uniqueMember=cn=r&d \\28lab\\29,ou=groups)"
                 "(memberUid=alice))");
    free(f);
    free(expand("(uid=%x)", "a", NULL, NULL, &st));
    CHECK_INT(st, QR_EINVAL);
    free(expand("(member=%d)", NULL, NULL, NULL, &st)); /* %d with no DN to put there */
    CHECK_INT(st, QR_EINVAL);
    free(expand("(uid=%", "a", NULL, NULL, &st));
    CHECK_INT(st, QR_EINVAL);
}

TEST(filter_expand_nested_drops_uid_items)
{
    qr_status st;
    char *f = expand("(|(member=%d)(uniqueMember=%d)(memberUid=%u))", NULL, "cn=eng,ou=g", NULL, &st);
    CHECK_INT(st, QR_OK);
    CHECK_STR(f, "(|(member=cn=eng,ou=g)(uniqueMember=cn=eng,ou=g)(!(objectClass=*)))");
    free(f);
    f = expand("(&(objectClass=posixGroup)(memberUid=%u))", NULL, "cn=eng", NULL, &st);
    CHECK_INT(st, QR_OK);
    CHECK_STR(f, "(&(objectClass=posixGroup)(!(objectClass=*)))");
    free(f);
    /* Active Directory's matching rule in chain passes through untouched */
    f = expand("(member:1.2.840.113556.1.4.1941:=%d)", NULL, "CN=A\\2C B,DC=x", NULL, &st);
    CHECK_INT(st, QR_OK);
    CHECK_STR(f, "(member:1.2.840.113556.1.4.1941:=CN=A\\5c2C B,DC=x)");
    free(f);
}

TEST(dn_key_and_first_value)
{
    qr_buf a, b;
    qr_buf_init(&a, 4096);
    qr_buf_init(&b, 4096);
    CHECK_INT(auth_dn_key("CN=Sales\\2C EMEA, OU=Groups,dc=Quarry,dc=test", &a), QR_OK);
    CHECK_INT(auth_dn_key("cn=sales\\, emea,ou=groups,dc=quarry,dc=test", &b), QR_OK);
    CHECK_STR(qr_buf_str(&a), qr_buf_str(&b));
    qr_buf_reset(&a);
    CHECK_INT(auth_dn_key("not a dn", &a), QR_EINVAL);
    qr_buf_release(&a);
    qr_buf_release(&b);
    char type[64];
    char *v = auth_dn_first_value("cn=sales\\2C emea,ou=groups,dc=quarry,dc=test", type, sizeof(type));
    CHECK_STR(v, "sales, emea");
    CHECK_STR(type, "cn");
    free(v);
    v = auth_dn_first_value("cn=r&d (lab),ou=groups", NULL, 0);
    CHECK_STR(v, "r&d (lab)");
    free(v);
    CHECK(auth_dn_first_value("=broken", NULL, 0) == NULL);
}

TEST(name_checks)
{
    CHECK(auth_name_ok("alice", 5));
    CHECK(auth_name_ok("Zo\xc3\xab", 4));
    CHECK(auth_name_ok("*)(uid=*", 8)); /* allowed, and escaped where used */
    CHECK(!auth_name_ok("", 0));
    CHECK(!auth_name_ok("ali\0ce", 6));
    CHECK(!auth_name_ok("alice\n", 6));
    CHECK(!auth_name_ok("\xc3\x28", 2));
    char big[10001];
    memset(big, 'a', sizeof(big));
    CHECK(auth_name_ok(big, AUTH_NAME_MAX));
    CHECK(!auth_name_ok(big, AUTH_NAME_MAX + 1));
    CHECK(!auth_name_ok(big, 10000));
    char s[] = "MiXeD-Zo\xc3\x8b";
    auth_ascii_lower(s);
    CHECK_STR(s, "mixed-zo\xc3\x8b");
}

TEST(limit_name_folds_common_spellings)
{
    /* the spellings LDAP's matching (RFC 4518, NFKC for width) takes for one name share a
     * failed-login count */
    static const char *const same[] = {
        "ava",
        "ava ",
        " ava",
        "  AVA  ",
        "\xef\xbd\x81\xef\xbd\x96\xef\xbd\x81", /* fullwidth ａｖａ */
        "a\xef\xbd\x96"
        "a",                                                /* aｖa */
        "\xe3\x80\x80\xef\xbc\xa1\xef\xbc\xb6\xef\xbc\xa1", /* ideographic space, ＡＶＡ */
        "a\xc2\xad"
        "va\xe2\x80\x8b", /* soft hyphen, zero-width space */
        "\xc2\xa0"
        "ava\xc2\xa0", /* no-break spaces */
    };
    char out[AUTH_NAME_MAX + 1];
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        auth_limit_name(same[i], strlen(same[i]), out, sizeof(out));
        CHECK_MSG(strcmp(out, "ava") == 0, "'%s' -> '%s'", same[i], out);
    }
    /* inner runs of spaces become one; other characters are kept, ASCII lower-cased */
    auth_limit_name("Mary  \xe2\x80\x83"
                    "Ann",
                    13, out, sizeof(out));
    CHECK_STR(out, "mary ann");
    auth_limit_name("Zo\xc3\xab", 4, out, sizeof(out));
    CHECK_STR(out, "zo\xc3\xab");
    auth_limit_name("\xf0\x9f\x99\x82x", 5, out, sizeof(out));
    CHECK_STR(out, "\xf0\x9f\x99\x82x");
    auth_limit_name("   ", 3, out, sizeof(out));
    CHECK_STR(out, "");
    /* a small buffer takes whole characters only */
    char small[4];
    auth_limit_name("ab\xc3\xab", 4, small, sizeof(small));
    CHECK_STR(small, "ab");
}

TEST(b64url_round_trip)
{
    unsigned char in[40], out[40];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 37 + 250);
    for (size_t n = 0; n <= sizeof(in); n++) {
        qr_buf b;
        qr_buf_init(&b, 256);
        CHECK_INT(auth_b64url_encode(&b, in, n), QR_OK);
        CHECK(strspn(qr_buf_str(&b), "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
              qr_buf_len(&b));
        size_t len = 99;
        CHECK_INT(auth_b64url_decode(qr_buf_str(&b), qr_buf_len(&b), out, sizeof(out), &len), QR_OK);
        CHECK_INT(len, n);
        CHECK(memcmp(in, out, n) == 0);
        qr_buf_release(&b);
    }
    size_t len;
    CHECK_INT(auth_b64url_decode("ab+c", 4, out, sizeof(out), &len), QR_EINVAL);
    CHECK_INT(auth_b64url_decode("abcde", 5, out, sizeof(out), &len), QR_EINVAL);
    CHECK_INT(auth_b64url_decode("QR", 2, out, sizeof(out), &len), QR_EINVAL); /* non-zero spare bits */
    CHECK_INT(auth_b64url_decode("QQ", 2, out, sizeof(out), &len), QR_OK);
}

static int freed_values;
static void count_free(void *v)
{
    freed_values++;
    free(v);
}

TEST(lru_evicts_least_recent)
{
    auth_lru *m = auth_lru_new(3, count_free);
    CHECK(m);
    char key[16];
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        CHECK_INT(auth_lru_put(m, key, strdup(key)), QR_OK);
    }
    CHECK_STR(auth_lru_get(m, "k0"), "k0"); /* k0 is now the most recent; k1 the least */
    CHECK_INT(auth_lru_put(m, "k3", strdup("k3")), QR_OK);
    CHECK(auth_lru_get(m, "k1") == NULL);
    CHECK_INT(freed_values, 1);
    CHECK_INT(auth_lru_len(m), 3);
    CHECK_INT(auth_lru_put(m, "k0", strdup("new")), QR_OK); /* replacing frees the old value */
    CHECK_INT(freed_values, 2);
    CHECK_STR(auth_lru_get(m, "k0"), "new");
    auth_lru_remove(m, "k2");
    CHECK(auth_lru_get(m, "k2") == NULL);
    CHECK_INT(auth_lru_len(m), 2);
    auth_lru_clear(m);
    CHECK_INT(auth_lru_len(m), 0);
    CHECK_INT(freed_values, 5);
    auth_lru_free(m);

    /* many keys: the table grows and every key stays reachable */
    m = auth_lru_new(5000, free);
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "user%d", i);
        CHECK_INT(auth_lru_put(m, key, strdup(key)), QR_OK);
    }
    CHECK_INT(auth_lru_len(m), 5000);
    CHECK(auth_lru_get(m, "user14999") == NULL);
    CHECK_STR(auth_lru_get(m, "user15000"), "user15000");
    CHECK_STR(auth_lru_get(m, "user19999"), "user19999");
    auth_lru_free(m);
}

TEST(scopes_parse_and_format)
{
    char err[QR_ERR_LEN], text[64];
    unsigned s;
    CHECK_OK(auth_scopes_parse("search, chat", &s, err), err);
    CHECK_INT(s, AUTH_SCOPE_SEARCH | AUTH_SCOPE_CHAT);
    CHECK_OK(auth_scopes_parse("on_behalf_of,admin,search,chat", &s, err), err);
    CHECK_INT(s, AUTH_SCOPE_ALL);
    auth_scopes_format(s, text, sizeof(text));
    CHECK_STR(text, "search,chat,admin,on_behalf_of");
    CHECK_INT(auth_scopes_parse("search,root", &s, err), QR_EINVAL);
    CHECK(strstr(err, "'root'") != NULL);
    CHECK_INT(auth_scopes_parse("", &s, err), QR_EINVAL);
}

TEST(principal_sorted_unique_lower_case)
{
    char *groups[] = {"Staff", "eng-backend", "staff", "R&D (lab)"};
    auth_principal *p = NULL;
    CHECK_INT(auth_principal_new("alice", "uid=alice", "", NULL, groups, 4, false, &p), QR_OK);
    CHECK_INT(p->ngroups, 3);
    CHECK_STR(p->groups[0], "eng-backend");
    CHECK_STR(p->groups[1], "r&d (lab)");
    CHECK_STR(p->groups[2], "staff");
    CHECK_STR(p->display_name, "alice");
    CHECK_INT(p->nprincipals, 5);
    CHECK(auth_principal_has(p, "public"));
    CHECK(auth_principal_has(p, "user:alice"));
    CHECK(auth_principal_has(p, "group:r&d (lab)"));
    CHECK(!auth_principal_has(p, "group:Staff"));
    auth_principal *q = auth_principal_ref(p);
    auth_principal_release(p);
    CHECK_STR(q->uid, "alice"); /* still alive through the second reference */
    auth_principal_release(q);
}

TEST(config_errors_are_clear)
{
    char dir[256], err[QR_ERR_LEN];
    test_tmpdir(dir, sizeof(dir));
    auth_ctx *ctx = NULL;
    qr_config *cfg = test_config(dir, "ldap.uri", "ldap://127.0.0.1:1/", NULL);
    CHECK_INT(auth_new(cfg, &ctx, err), QR_EINVAL);
    CHECK(strstr(err, "ldap.user_base") != NULL);
    CHECK(ctx == NULL);
    qr_config_free(cfg);
    cfg = test_config(dir, "ldap.uri", "ldap://127.0.0.1:1/", "ldap.user_base", "dc=x", "ldap.group_filter",
                      "(member=%d)(x=%s)", NULL);
    CHECK_INT(auth_new(cfg, &ctx, err), QR_EINVAL);
    CHECK(strstr(err, "ldap.group_filter") != NULL);
    qr_config_free(cfg);
    cfg = qr_config_new();
    CHECK_INT(qr_config_set(cfg, "auth.token_secret", "tiny-value", QR_CFG_SRC_CLI, err), QR_EINVAL);
    CHECK(strstr(err, "at least 32") != NULL && strstr(err, "tiny") == NULL);
    qr_config_free(cfg);
    test_rmdir(dir);
}

/* ---- tokens ------------------------------------------------------------------------------------ */

TEST(token_round_trip_and_tampering)
{
    char dir[256], err[QR_ERR_LEN];
    test_tmpdir(dir, sizeof(dir));
    qr_config *cfg = test_config(dir, NULL);
    auth_ctx *ctx = NULL;
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    char *token = NULL, *uid = NULL;
    int64_t exp = 0, exp2 = 0;
    CHECK_OK(auth_token_issue(ctx, "Alice", 0, &token, &exp, err), err);
    CHECK(strncmp(token, "qt1.", 4) == 0);
    CHECK(exp >= qr_wall_ms() / 1000 + 3600 - 5 && exp <= qr_wall_ms() / 1000 + 3600);
    CHECK_OK(auth_token_verify(ctx, token, &uid, &exp2, err), err);
    CHECK_STR(uid, "alice");
    CHECK_INT(exp2, exp);
    free(uid);

    /* every single-character change is refused */
    size_t len = strlen(token);
    for (size_t i = 0; i < len; i++) {
        char saved = token[i];
        token[i] = saved == 'A' ? 'B' : saved == '.' ? 'x' : 'A';
        qr_status st = auth_token_verify(ctx, token, &uid, NULL, err);
        token[i] = saved;
        CHECK_MSG(st == QR_EAUTH && uid == NULL, "a token changed at %zu was accepted", i);
    }
    /* a longer expiry with the old signature */
    char *dot1 = strchr(token + 4, '.');
    char forged[1100];
    snprintf(forged, sizeof(forged), "%.*s.9999999999%s", (int)(dot1 - token), token, strchr(dot1 + 1, '.'));
    CHECK_INT(auth_token_verify(ctx, forged, &uid, NULL, err), QR_EAUTH);
    /* truncated, extended, empty, huge */
    token[len - 1] = '\0';
    CHECK_INT(auth_token_verify(ctx, token, &uid, NULL, err), QR_EAUTH);
    CHECK_INT(auth_token_verify(ctx, "", &uid, NULL, err), QR_EAUTH);
    CHECK_INT(auth_token_verify(ctx, NULL, &uid, NULL, err), QR_EAUTH);
    char huge[5000];
    memset(huge, 'A', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    memcpy(huge, "qt1.", 4);
    CHECK_INT(auth_token_verify(ctx, huge, &uid, NULL, err), QR_EAUTH);
    CHECK(strstr(err, "invalid or expired token") != NULL);
    free(token);

    /* another secret (another server) refuses our tokens */
    char dir2[256];
    test_tmpdir(dir2, sizeof(dir2));
    qr_config *cfg2 = test_config(dir2, NULL);
    auth_ctx *other = NULL;
    CHECK_OK(auth_new(cfg2, &other, err), err);
    CHECK_OK(auth_token_issue(ctx, "alice", 60, &token, NULL, err), err);
    CHECK_INT(auth_token_verify(other, token, &uid, NULL, err), QR_EAUTH);
    free(token);
    auth_free(other);
    qr_config_free(cfg2);
    test_rmdir(dir2);

    CHECK_INT(auth_token_issue(ctx, "bad\nname", 0, &token, NULL, err), QR_EINVAL);
    auth_free(ctx);
    qr_config_free(cfg);
    test_rmdir(dir);
}

TEST(token_expiry)
{
    char dir[256], err[QR_ERR_LEN];
    test_tmpdir(dir, sizeof(dir));
    qr_config *cfg = test_config(dir, NULL);
    auth_ctx *ctx = NULL;
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    char *token = NULL, *uid = NULL;
    int64_t now = qr_wall_ms() / 1000;
    CHECK_OK(auth_token_make(ctx, "alice", now - 1, &token, err), err);
    CHECK_INT(auth_token_verify(ctx, token, &uid, NULL, err), QR_EAUTH);
    CHECK(uid == NULL);
    free(token);
    CHECK_OK(auth_token_make(ctx, "alice", now + 2, &token, err), err);
    CHECK_OK(auth_token_verify(ctx, token, &uid, NULL, err), err);
    free(uid);
    uid = NULL;
    sleep(3);
    CHECK_INT(auth_token_verify(ctx, token, &uid, NULL, err), QR_EAUTH);
    free(token);
    auth_free(ctx);
    qr_config_free(cfg);
    test_rmdir(dir);
}

TEST(token_secret_file)
{
    char dir[256], path[512], err[QR_ERR_LEN];
    test_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/auth/token.key", dir);
    qr_config *cfg = test_config(dir, NULL);
    auth_ctx *ctx = NULL;
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    struct stat sb;
    CHECK(stat(path, &sb) != 0); /* nothing written before the first token */
    char *token = NULL, *uid = NULL;
    CHECK_OK(auth_token_issue(ctx, "alice", 0, &token, NULL, err), err);
    CHECK(stat(path, &sb) == 0);
    CHECK_INT(sb.st_mode & 0777, 0600);
    char auth_dir[300];
    snprintf(auth_dir, sizeof(auth_dir), "%s/auth", dir);
    CHECK(stat(auth_dir, &sb) == 0);
    CHECK_INT(sb.st_mode & 0777, 0700);
    auth_free(ctx);

    /* a second process reads the same secret: tokens survive restarts */
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    CHECK_OK(auth_token_verify(ctx, token, &uid, NULL, err), err);
    free(uid);
    auth_free(ctx);

    /* a secret readable by others is refused, not used */
    CHECK(chmod(path, 0644) == 0);
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    CHECK_INT(auth_token_verify(ctx, token, &uid, NULL, err), QR_EPERM);
    CHECK(strstr(err, "chmod 600") != NULL);
    auth_free(ctx);
    free(token);
    qr_config_free(cfg);

    /* auth.token_secret replaces the file, and its tokens differ */
    cfg = test_config(dir, "auth.token_secret", "0123456789abcdef0123456789abcdef-configured", NULL);
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    CHECK_OK(auth_token_issue(ctx, "bob", 120, &token, NULL, err), err);
    CHECK_OK(auth_token_verify(ctx, token, &uid, NULL, err), err);
    CHECK_STR(uid, "bob");
    free(uid);
    free(token);
    auth_free(ctx);
    qr_config_free(cfg);
    test_rmdir(dir);
}

/* ---- API keys ---------------------------------------------------------------------------------- */

TEST(keys_create_verify_revoke)
{
    char dir[256], path[512], err[QR_ERR_LEN];
    test_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/auth/keys.json", dir);
    qr_config *cfg = test_config(dir, NULL);
    auth_ctx *ctx = NULL, *server = NULL;
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    CHECK_OK(auth_new(cfg, &server, err), err); /* another process: a running server */
    char *key = NULL, *key2 = NULL;
    auth_key_info info, got;
    CHECK_OK(auth_key_create(ctx, "portal", AUTH_SCOPE_SEARCH | AUTH_SCOPE_CHAT, &key, &info, err), err);
    CHECK(strncmp(key, "qk_", 3) == 0 && strlen(key) == 3 + 16 + 1 + 43);
    CHECK(strncmp(key + 3, info.id, 16) == 0);
    CHECK_OK(auth_key_create(ctx, "ops bot", AUTH_SCOPE_ADMIN, &key2, NULL, err), err);

    CHECK_OK(auth_key_verify(server, key, &got, err), err);
    CHECK_STR(got.id, info.id);
    CHECK_STR(got.name, "portal");
    CHECK_INT(got.scopes, AUTH_SCOPE_SEARCH | AUTH_SCOPE_CHAT);
    auth_key_info_release(&got);

    /* the file holds hashes, never keys, and only its owner may read it */
    char *text = NULL;
    CHECK_OK(qr_read_file(path, 1 << 20, &text, NULL, err), err);
    CHECK(strstr(text, key + 20) == NULL && strstr(text, key2 + 20) == NULL);
    CHECK(strstr(text, info.id) != NULL && strstr(text, "sha256") != NULL);
    free(text);
    struct stat sb;
    CHECK(stat(path, &sb) == 0);
    CHECK_INT(sb.st_mode & 0777, 0600);

    /* a wrong secret with a real id, a malformed key */
    char wrong[128];
    snprintf(wrong, sizeof(wrong), "%s", key);
    wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == 'A' ? 'B' : 'A';
    CHECK_INT(auth_key_verify(server, wrong, NULL, err), QR_EAUTH);
    CHECK_INT(auth_key_verify(server, "qk_nothing", NULL, err), QR_EAUTH);
    CHECK_INT(auth_key_verify(server, "", NULL, err), QR_EAUTH);

    /* revocation in one process is seen at once by the other */
    CHECK_OK(auth_key_revoke(ctx, info.id, err), err);
    CHECK_INT(auth_key_verify(server, key, NULL, err), QR_EAUTH);
    CHECK_OK(auth_key_verify(server, key2, NULL, err), err);
    CHECK_OK(auth_key_revoke(ctx, info.id, err), err); /* twice is fine */
    CHECK_INT(auth_key_revoke(ctx, "0123456789abcdef", err), QR_ENOTFOUND);
    CHECK_INT(auth_key_revoke(ctx, "../../etc", err), QR_ENOTFOUND);

    auth_key_info *list = NULL;
    size_t n = 0;
    CHECK_OK(auth_key_list(server, &list, &n, err), err);
    CHECK_INT(n, 2);
    CHECK_STR(list[0].id, info.id);
    CHECK(list[0].revoked_ms > 0);
    CHECK_STR(list[1].name, "ops bot");
    CHECK_INT(list[1].revoked_ms, 0);
    auth_key_list_free(list, n);

    free(key2);
    CHECK_INT(auth_key_create(ctx, "", AUTH_SCOPE_SEARCH, &key2, NULL, err), QR_EINVAL);
    CHECK_INT(auth_key_create(ctx, "x", 0, &key2, NULL, err), QR_EINVAL);
    free(key);
    auth_key_info_release(&info);
    auth_free(ctx);
    auth_free(server);
    qr_config_free(cfg);
    test_rmdir(dir);
}

TEST(keys_scopes_enforced)
{
    char dir[256], err[QR_ERR_LEN];
    test_tmpdir(dir, sizeof(dir));
    qr_config *cfg = test_config(dir, NULL); /* no LDAP: acting for a user must fail closed */
    auth_ctx *ctx = NULL;
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    char *search = NULL, *admin = NULL, *obo = NULL;
    CHECK_OK(auth_key_create(ctx, "search", AUTH_SCOPE_SEARCH, &search, NULL, err), err);
    CHECK_OK(auth_key_create(ctx, "admin", AUTH_SCOPE_ADMIN | AUTH_SCOPE_SEARCH, &admin, NULL, err), err);
    CHECK_OK(auth_key_create(ctx, "plugin", AUTH_SCOPE_CHAT | AUTH_SCOPE_ON_BEHALF_OF, &obo, NULL, err), err);
    auth_principal *p = NULL;
    CHECK_OK(auth_key_principal(ctx, search, NULL, AUTH_SCOPE_SEARCH, &p, err), err);
    CHECK(strncmp(p->uid, "key:", 4) == 0);
    CHECK_INT(p->nprincipals, 1);
    CHECK(auth_principal_has(p, "public"));
    CHECK(!p->is_admin);
    auth_principal_release(p);
    CHECK_INT(auth_key_principal(ctx, search, NULL, AUTH_SCOPE_CHAT, &p, err), QR_EPERM);
    CHECK(strstr(err, "chat") != NULL);
    CHECK_INT(auth_key_principal(ctx, search, "alice", AUTH_SCOPE_SEARCH, &p, err), QR_EPERM);
    CHECK_OK(auth_key_principal(ctx, admin, NULL, AUTH_SCOPE_ADMIN, &p, err), err);
    CHECK(p->is_admin);
    auth_principal_release(p);
    CHECK_INT(auth_key_principal(ctx, obo, "alice", AUTH_SCOPE_CHAT, &p, err), QR_EUNAVAILABLE);
    CHECK(p == NULL);
    free(search);
    free(admin);
    free(obo);
    auth_free(ctx);
    qr_config_free(cfg);
    test_rmdir(dir);
}

/* ---- checks before LDAP ---------------------------------------------------------------------- */

TEST(authenticate_refuses_before_ldap)
{
    char dir[256], err[QR_ERR_LEN];
    test_tmpdir(dir, sizeof(dir));
    qr_config *cfg = test_config(dir, "auth.rate_limit_user", "3", "auth.rate_limit_addr", "5", NULL);
    auth_ctx *ctx = NULL;
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    auth_principal *p = NULL;
    auth_stats st;
    /* no LDAP configured: a password cannot be checked, so it is unavailable, not a success */
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "x", 1, "10.0.0.1", &p, err), QR_EUNAVAILABLE);
    CHECK(p == NULL);
    /* empty password, malformed names: refused as bad credentials, with one message */
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "", 0, "10.0.0.1", &p, err), QR_EAUTH);
    CHECK_STR(err, "invalid user name or password");
    CHECK_INT(auth_authenticate(ctx, "ali\0ce", 6, "x", 1, "10.0.0.2", &p, err), QR_EAUTH);
    CHECK_STR(err, "invalid user name or password");
    char big[10000];
    memset(big, 'a', sizeof(big));
    CHECK_INT(auth_authenticate(ctx, big, sizeof(big), "x", 1, "10.0.0.2", &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, NULL, 0, "x", 1, NULL, &p, err), QR_EAUTH);
    auth_get_stats(ctx, &st);
    CHECK_INT(st.binds, 0);
    CHECK_INT(st.connects, 0);
    CHECK_INT(st.login_failures, 4);
    /* per user: two more failures reach the limit of 3, then even a good password waits */
    CHECK_INT(auth_authenticate(ctx, "ALICE", 5, "", 0, "10.0.0.3", &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "", 0, "10.0.0.4", &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "alice", 5, "right", 5, "10.0.0.5", &p, err), QR_ELIMIT);
    CHECK(strstr(err, "too many failed logins") != NULL);
    /* per address: 10.0.0.2 has 2 failures; three other names reach its limit of 5 */
    CHECK_INT(auth_authenticate(ctx, "u1", 2, "", 0, "10.0.0.2", &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "u2", 2, "", 0, "10.0.0.2", &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "u3", 2, "", 0, "10.0.0.2", &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "u4", 2, "pw", 2, "10.0.0.2", &p, err), QR_ELIMIT);
    CHECK_INT(auth_authenticate(ctx, "u4", 2, "pw", 2, "10.0.0.9", &p, err), QR_EUNAVAILABLE);
    auth_get_stats(ctx, &st);
    CHECK_INT(st.rate_limited, 2);
    CHECK_INT(st.binds, 0);
    auth_free(ctx);
    qr_config_free(cfg);

    /* the window ends */
    cfg = test_config(dir, "auth.rate_limit_user", "1", "auth.rate_limit_window_s", "1", NULL);
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    CHECK_INT(auth_authenticate(ctx, "bob", 3, "", 0, NULL, &p, err), QR_EAUTH);
    CHECK_INT(auth_authenticate(ctx, "bob", 3, "pw", 2, NULL, &p, err), QR_ELIMIT);
    usleep(1100 * 1000);
    CHECK_INT(auth_authenticate(ctx, "bob", 3, "pw", 2, NULL, &p, err), QR_EUNAVAILABLE);
    auth_free(ctx);
    qr_config_free(cfg);
    test_rmdir(dir);
}

TEST(resolve_rejects_malformed_names)
{
    char dir[256], err[QR_ERR_LEN];
    test_tmpdir(dir, sizeof(dir));
    qr_config *cfg = test_config(dir, NULL);
    auth_ctx *ctx = NULL;
    CHECK_OK(auth_new(cfg, &ctx, err), err);
    auth_principal *p = NULL;
    CHECK_INT(auth_resolve(ctx, "", &p, err), QR_EINVAL);
    CHECK_INT(auth_resolve(ctx, "a\tb", &p, err), QR_EINVAL);
    CHECK_INT(auth_resolve(ctx, NULL, &p, err), QR_EINVAL);
    CHECK_INT(auth_resolve(ctx, "alice", &p, err), QR_EUNAVAILABLE);
    CHECK(strstr(err, "ldap.uri") != NULL);
    auth_free(ctx);
    qr_config_free(cfg);
    test_rmdir(dir);
}
