/*
 * Unit tests of the configuration table: defaults, file, environment and command line in their
 * order of precedence, validation with clear messages, atomic loads and secret masking.
 */
#include <stdlib.h>
#include <unistd.h>

#include "core/core.h"
#include "tests/harness.h"

/* Writes text to a fresh temporary file; returns its path (static buffer). */
static const char *write_temp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/quarry-config-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? path : NULL;
}

TEST(config_defaults)
{
    qr_config *cfg = qr_config_new();
    CHECK(cfg != NULL);
    CHECK_STR(qr_config_settings(cfg)->data_dir, "./data");
    CHECK_STR(qr_config_settings(cfg)->server_listen, "127.0.0.1:8080");
    CHECK_STR(qr_config_settings(cfg)->ldap_user_filter, "(uid=%s)");
    CHECK_STR(qr_config_settings(cfg)->ldap_group_filter, "(|(member=%d)(uniqueMember=%d)(memberUid=%u))");
    CHECK_INT(qr_config_settings(cfg)->ldap_nested_depth, 8);
    CHECK_INT(qr_config_settings(cfg)->ldap_cache_ttl_s, 300);
    CHECK(!qr_config_settings(cfg)->auth_stale_if_error);
    CHECK_INT(qr_config_source(cfg, "data.dir"), QR_CFG_SRC_DEFAULT);
    size_t n;
    const qr_cfg_key *keys = qr_config_keys(&n);
    CHECK(n >= 20);
    for (size_t i = 0; i < n; i++) {
        CHECK(strchr(keys[i].name, '.') != NULL);
        CHECK(keys[i].help && *keys[i].help);
        for (size_t j = i + 1; j < n; j++)
            CHECK(strcmp(keys[i].name, keys[j].name) != 0);
    }
    qr_config_free(cfg);
    qr_config_free(NULL);
}

TEST(config_precedence_file_env_cli)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    const char *path = write_temp("{\"ldap\": {\"uri\": \"ldap://file:389\", \"nested_depth\": 3,"
                                  " \"starttls\": true}, \"log.level\": \"warn\","
                                  " \"auth\": {\"admin_groups\": [\"admins\", \"ops\"]}}");
    CHECK(path != NULL);
    CHECK_OK(qr_config_load_file(cfg, path, err), err);
    unlink(path);
    CHECK_STR(qr_config_settings(cfg)->ldap_uri, "ldap://file:389");
    CHECK_INT(qr_config_settings(cfg)->ldap_nested_depth, 3);
    CHECK(qr_config_settings(cfg)->ldap_starttls);
    CHECK_STR(qr_config_settings(cfg)->log_level, "warn");
    CHECK_STR(qr_config_settings(cfg)->auth_admin_groups, "admins,ops");
    CHECK_INT(qr_config_source(cfg, "ldap.uri"), QR_CFG_SRC_FILE);

    char *env[] = {"PATH=/bin", "QUARRY_LDAP_URI=ldaps://env:636", "QUARRY_LDAP_NESTED_DEPTH=5",
                   "QUARRY_TEST_SOMETHING=ignored", NULL};
    CHECK_OK(qr_config_load_env(cfg, env, err), err);
    CHECK_STR(qr_config_settings(cfg)->ldap_uri, "ldaps://env:636");
    CHECK_INT(qr_config_settings(cfg)->ldap_nested_depth, 5);
    CHECK_INT(qr_config_source(cfg, "ldap.uri"), QR_CFG_SRC_ENV);
    CHECK_INT(qr_config_source(cfg, "ldap.starttls"), QR_CFG_SRC_FILE);

    CHECK_OK(qr_config_set_arg(cfg, "ldap.uri=ldap://cli:389", err), err);
    CHECK_STR(qr_config_settings(cfg)->ldap_uri, "ldap://cli:389");
    CHECK_INT(qr_config_source(cfg, "ldap.uri"), QR_CFG_SRC_CLI);
    qr_config_free(cfg);
}

TEST(config_rejects_bad_values_with_named_key)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    struct {
        const char *assignment, *expect;
    } bad[] = {
        {"ldap.nested_depth=deep", "not an integer"},
        {"ldap.nested_depth=65", "out of range"},
        {"ldap.nested_depth=3x", "not an integer"},
        {"ldap.starttls=maybe", "not a boolean"},
        {"ldap.require_cert=sometimes", "not one of"},
        {"log.level=loud", "not one of"},
        {"ldap.uri=http://example", "not an ldap"},
        {"inference.base_url=ftp://x", "not an http"},
        {"server.listen=8080", "not host:port"},
        {"server.listen=host:99999", "not host:port"},
        {"ldap.user_filter=(uid=bob)", "placeholder"},
        {"no.such_key=1", "unknown configuration key 'no.such_key'"},
        {"nokey", "expected section.key=value"},
        {"log.components=auth", "component=level"},
        {"data.dir=a\x01"
         "b",
         "control characters"},
        {"data.dir=\xff\xfe", "UTF-8"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CHECK_MSG(qr_config_set_arg(cfg, bad[i].assignment, err) == QR_EINVAL, "accepted %s",
                  bad[i].assignment);
        CHECK_MSG(strstr(err, bad[i].expect) != NULL, "'%s' -> '%s'", bad[i].assignment, err);
    }
    /* nothing changed */
    CHECK_INT(qr_config_settings(cfg)->ldap_nested_depth, 8);
    CHECK_STR(qr_config_settings(cfg)->ldap_uri, "");
    qr_config_free(cfg);
}

TEST(config_file_errors_change_nothing)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    struct {
        const char *text, *expect;
    } bad[] = {
        {"{\"ldap\": {\"uri\": \"ldap://a\", \"nested_depth\": \"x\"}}", "ldap.nested_depth"},
        {"{\"ldap\": {\"uri\": \"ldap://a\", \"bogus\": 1}}", "unknown configuration key 'ldap.bogus'"},
        {"{\"ldap\": {\"uri\": \"ldap://a\"}", "1:"}, /* truncated JSON: line and column */
        {"[1, 2]", "JSON object"},
        {"{\"ldap\": 5}", "object of keys"},
        {"{\"ldap\": {\"uri\": \"ldap://a\", \"uri\": \"ldap://b\"}}", "duplicate"},
        {"{\"ldap\": {\"starttls\": 1.5}}", "wrong type"},
        {"{\"ldap\": {\"uri\": {\"nested\": true}}}", "wrong type"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *path = write_temp(bad[i].text);
        CHECK(path != NULL);
        err[0] = '\0';
        qr_status st = qr_config_load_file(cfg, path, err);
        unlink(path);
        CHECK_MSG(st == QR_EINVAL, "accepted %s", bad[i].text);
        CHECK_MSG(strstr(err, bad[i].expect) != NULL, "'%s' -> '%s'", bad[i].text, err);
        CHECK_MSG(strstr(err, path) != NULL, "message does not name the file: %s", err);
        CHECK_STR(qr_config_settings(cfg)->ldap_uri, ""); /* the good key before the bad one is not applied */
    }
    CHECK_INT(qr_config_load_file(cfg, "/nonexistent/quarry.json", err), QR_ENOTFOUND);
    CHECK(strstr(err, "/nonexistent/quarry.json") != NULL);
    char *env[] = {"QUARRY_LDAP_URI=ldap://ok", "QUARRY_LDAP_TIMEOUT_MS=0", NULL};
    CHECK_INT(qr_config_load_env(cfg, env, err), QR_EINVAL);
    CHECK(strstr(err, "QUARRY_LDAP_TIMEOUT_MS") != NULL);
    CHECK_STR(qr_config_settings(cfg)->ldap_uri, "");
    qr_config_free(cfg);
}

TEST(config_dump_masks_secrets)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    CHECK_OK(qr_config_set(cfg, "ldap.bind_password", "hunter2", QR_CFG_SRC_ENV, err), err);
    CHECK_OK(qr_config_set(cfg, "inference.api_key", "sk-abc", QR_CFG_SRC_CLI, err), err);
    CHECK_STR(qr_config_settings(cfg)->ldap_bind_password, "hunter2"); /* the program sees it */
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_OK(qr_config_dump(cfg, false, &out), "dump");
    CHECK(strstr(qr_buf_str(&out), "hunter2") == NULL);
    CHECK(strstr(qr_buf_str(&out), "sk-abc") == NULL);
    CHECK(strstr(qr_buf_str(&out), "ldap.bind_password") != NULL);
    CHECK(strstr(qr_buf_str(&out), "********") != NULL);
    CHECK(strstr(qr_buf_str(&out), "# env") != NULL);
    qr_buf_reset(&out);
    CHECK_OK(qr_config_dump(cfg, true, &out), "dump");
    CHECK(strstr(qr_buf_str(&out), "hunter2") == NULL);
    CHECK(strstr(qr_buf_str(&out), "\"ldap.nested_depth\":8") != NULL);
    CHECK(strstr(qr_buf_str(&out), "\"ldap.starttls\":false") != NULL);
    CHECK(strstr(qr_buf_str(&out), "\"inference.api_key\":\"********\"") != NULL);
    qr_buf_release(&out);
    qr_config_free(cfg);
}

TEST(config_applies_logging)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    CHECK_OK(qr_config_set_arg(cfg, "log.level=error", err), err);
    CHECK_OK(qr_config_set_arg(cfg, "log.components=auth=trace", err), err);
    CHECK_OK(qr_config_apply_logging(cfg, err), err);
    CHECK(!qr_log_enabled("index", QR_LOG_WARN));
    CHECK(qr_log_enabled("auth", QR_LOG_TRACE));
    qr_config_free(cfg);
    CHECK_OK(qr_log_configure(QR_LOG_INFO, QR_LOG_TEXT, NULL, err), err);
}

TEST(config_readme_documents_every_key)
{
    char err[QR_ERR_LEN];
    char *readme = NULL;
    CHECK_OK(qr_read_file(QUARRY_SOURCE_DIR "/README.md", 1 << 20, &readme, NULL, err), err);
    size_t n;
    const qr_cfg_key *keys = qr_config_keys(&n);
    for (size_t i = 0; i < n; i++) {
        char row[96];
        snprintf(row, sizeof(row), "| `%s` |", keys[i].name);
        const char *at = strstr(readme, row);
        CHECK_MSG(at != NULL, "README.md has no row for %s", keys[i].name);
        /* the row says whether SIGHUP applies the key, as the table's reload column does */
        const char *eol = strchr(at, '\n');
        const char *mark = strstr(at, "*(reloads on SIGHUP)*");
        bool marked = mark && (!eol || mark < eol);
        CHECK_MSG(marked == keys[i].reload, "README.md's row for %s %s", keys[i].name,
                  keys[i].reload ? "does not say it reloads on SIGHUP"
                                 : "says it reloads on SIGHUP, it does not");
    }
    free(readme);
}

TEST(config_file_line_comments)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    const char *path =
        write_temp("// quarry's configuration\n"
                   "{\n"
                   "  // the directory\n"
                   "  \"ldap\": {\"uri\": \"ldap://a:389\", // trailing comment, \"quoted\"\n"
                   "           \"bind_dn\": \"cn=x\\\\\", // a backslash ends this value\n"
                   "           \"user_base\": \"ou=a\\\"//b\"},// an escaped quote stays inside\n"
                   "  \"inference\": {\"base_url\": \"http://127.0.0.1:8000/v1\"}\n"
                   "}\n"
                   "// last line, no newline at the end");
    CHECK(path != NULL);
    CHECK_OK(qr_config_load_file(cfg, path, err), err);
    unlink(path);
    CHECK_STR(qr_config_settings(cfg)->ldap_uri, "ldap://a:389");
    CHECK_STR(qr_config_settings(cfg)->ldap_bind_dn, "cn=x\\");
    CHECK_STR(qr_config_settings(cfg)->ldap_user_base, "ou=a\"//b"); /* a // inside a string stays */
    CHECK_STR(qr_config_settings(cfg)->inference_base_url, "http://127.0.0.1:8000/v1");
    qr_config_free(cfg);
}

TEST(config_file_comment_errors_name_the_line)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    struct {
        const char *text, *expect;
    } bad[] = {
        /* a C-style comment: refused with its line and column */
        {"{\n  \"ldap\": {\"uri\": \"ldap://a\"}, /* no */\n  \"log\": {}\n}", ":2:32: unexpected '/'"},
        {"{\"ldap\": {\"uri\": \"ldap://a\"}} /", ":1:31: unexpected '/'"},
        /* jansson's errors keep the line numbers of the file as written */
        {"// one\n// two\n{\"ldap\": {\"uri\": \"ldap://a\"} // three\n \"log\": {}}", ":4:"},
        /* an unterminated string swallows what looks like a comment and still fails */
        {"{\"ldap\": {\"uri\": \"ldap://a // not a comment}}\n", ":1:"},
        {"{\"ldap\": {\"uri\": \"ldap://a\\\n\"}}", "invalid escape"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *path = write_temp(bad[i].text);
        CHECK(path != NULL);
        err[0] = '\0';
        qr_status st = qr_config_load_file(cfg, path, err);
        unlink(path);
        CHECK_MSG(st == QR_EINVAL, "accepted %s", bad[i].text);
        CHECK_MSG(strstr(err, bad[i].expect) != NULL, "'%s' -> '%s'", bad[i].text, err);
        CHECK_MSG(strncmp(err, path, strlen(path)) == 0, "message does not start with the file: %s", err);
        CHECK_STR(qr_config_settings(cfg)->ldap_uri, "");
    }
    qr_config_free(cfg);
}

/* The packaged example (/etc/quarry/quarry.json in the Debian package) loads and validates. */
TEST(config_example_file_loads)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    CHECK_OK(qr_config_load_file(cfg, QUARRY_SOURCE_DIR "/deploy/quarry.json", err), err);
    CHECK_STR(qr_config_settings(cfg)->data_dir, "/var/lib/quarry");
    CHECK_INT(qr_config_source(cfg, "data.dir"), QR_CFG_SRC_FILE);
    CHECK_INT(qr_config_source(cfg, "ldap.uri"), QR_CFG_SRC_FILE);
    CHECK_INT(qr_config_source(cfg, "oidc.issuer"), QR_CFG_SRC_FILE);
    CHECK_INT(qr_config_source(cfg, "inference.base_url"), QR_CFG_SRC_FILE);
    CHECK_INT(qr_config_source(cfg, "embed.backend"), QR_CFG_SRC_FILE);
    CHECK_INT(qr_config_source(cfg, "server.cors_origins"), QR_CFG_SRC_FILE);
    CHECK_INT(qr_config_source(cfg, "server.public_url"), QR_CFG_SRC_FILE);
    CHECK(strncmp(qr_config_settings(cfg)->server_access_log, "/var/log/quarry/", 16) == 0);
    CHECK(strncmp(qr_config_settings(cfg)->server_audit_log, "/var/log/quarry/", 16) == 0);
    qr_config_free(cfg);
}

/* A reload takes the reloadable keys' new values, keeps the others and names both; numbers
 * compare as numbers. */
TEST(config_reload_takes_only_reloadable_keys)
{
    char err[QR_ERR_LEN];
    qr_config *live = qr_config_new(), *loaded = qr_config_new();
    CHECK(live && loaded);
    CHECK_OK(qr_config_set(live, "inference.max_tokens", "512", QR_CFG_SRC_FILE, err), err);
    CHECK_OK(qr_config_set(loaded, "inference.max_tokens", "0512", QR_CFG_SRC_FILE, err), err);
    CHECK_OK(qr_config_set(loaded, "log.level", "debug", QR_CFG_SRC_FILE, err), err);
    CHECK_OK(qr_config_set(loaded, "server.cors_origins", "https://a.example", QR_CFG_SRC_FILE, err), err);
    CHECK_OK(qr_config_set(loaded, "server.listen", "127.0.0.1:9999", QR_CFG_SRC_FILE, err), err);
    CHECK_OK(qr_config_set(loaded, "data.dir", "/elsewhere", QR_CFG_SRC_ENV, err), err);
    qr_config *copy = qr_config_clone(live);
    CHECK(copy);
    qr_buf changed, restart;
    qr_buf_init(&changed, 4096);
    qr_buf_init(&restart, 4096);
    CHECK_OK(qr_config_reload(copy, loaded, &changed, &restart), "reload");
    CHECK_STR(qr_buf_str(&changed), "log.level, server.cors_origins");
    CHECK_STR(qr_buf_str(&restart), "data.dir, server.listen");
    CHECK_STR(qr_config_settings(copy)->log_level, "debug");
    CHECK_STR(qr_config_settings(copy)->server_cors_origins, "https://a.example");
    CHECK_STR(qr_config_settings(copy)->server_listen, "127.0.0.1:8080");
    CHECK_STR(qr_config_settings(copy)->data_dir, "./data");
    CHECK_INT(qr_config_settings(copy)->inference_max_tokens, 512);
    CHECK_INT(qr_config_source(copy, "log.level"), QR_CFG_SRC_FILE);
    /* the clone is a copy: live is as it was */
    CHECK_STR(qr_config_settings(live)->log_level, "info");
    /* the same file again: nothing to apply, the restart keys still named */
    qr_buf_reset(&changed);
    qr_buf_reset(&restart);
    CHECK_OK(qr_config_reload(copy, loaded, &changed, &restart), "reload");
    CHECK_STR(qr_buf_str(&changed), "");
    CHECK_STR(qr_buf_str(&restart), "data.dir, server.listen");
    qr_buf_release(&changed);
    qr_buf_release(&restart);
    qr_config_free(copy);
    qr_config_free(live);
    qr_config_free(loaded);
}
