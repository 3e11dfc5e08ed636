/*
 * Tests of the quarry command as a user runs it: help, version, configuration output and
 * errors, and that subcommands whose modules are not built yet refuse instead of pretending.
 */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core.h"
#include "tests/harness.h"
#include "tests/test_util.h"

/* Runs the quarry binary with a shell command line's arguments; captures stdout+stderr. */
static int run_quarry(const char *args, qr_buf *out)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "env -u QUARRY_CONFIG %s %s 2>&1", QUARRY_BIN, args);
    return test_capture(cmd, out);
}

TEST(help_lists_every_command)
{
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_INT(run_quarry("--help", &out), 0);
    const char *names[] = {"serve", "ingest", "delete", "search", "ask", "index", "eval", "stats", "config"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char word[32];
        snprintf(word, sizeof(word), "  %s ", names[i]);
        CHECK_MSG(strstr(qr_buf_str(&out), word) != NULL, "help lacks %s", names[i]);
    }
    CHECK(strstr(qr_buf_str(&out), "--data DIR") != NULL);
    CHECK_INT(run_quarry("", &out), 2); /* no command: usage on stderr, exit 2 */
    CHECK(strstr(qr_buf_str(&out), "Usage: quarry") != NULL);
    CHECK_INT(run_quarry("search --help", &out), 0);
    CHECK(strstr(qr_buf_str(&out),
                 "quarry search [--as UID] [--mode hybrid|bm25|vector] [-k N] [--json] QUERY") != NULL);
    qr_buf_release(&out);
}

TEST(version_prints_dependency_versions)
{
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_INT(run_quarry("--version", &out), 0);
    const char *s = qr_buf_str(&out);
    CHECK(strstr(s, "quarry " QUARRY_VERSION) != NULL);
    CHECK(strstr(s, "FAISS          1.7.3") != NULL);
    CHECK(strstr(s, "SQLite         3.") != NULL);
    CHECK(strstr(s, "libcurl        ") != NULL);
    CHECK(strstr(s, "OpenLDAP       OpenLDAP 2.") != NULL);
    CHECK(strstr(s, "jansson        2.") != NULL);
    CHECK(strstr(s, "libmicrohttpd  0.") != NULL || strstr(s, "libmicrohttpd  1.") != NULL);
    CHECK(strstr(s, "CUDA ") != NULL);
    qr_buf_release(&out);
}

TEST(every_command_is_built_and_unknown_ones_refused)
{
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_INT(run_quarry("--help", &out), 0);
    CHECK_MSG(strstr(qr_buf_str(&out), "not built yet") == NULL, "%s", qr_buf_str(&out));
    CHECK_INT(run_quarry("frobnicate", &out), 2);
    CHECK(strstr(qr_buf_str(&out), "unknown command 'frobnicate'") != NULL);
    qr_buf_release(&out);
}

TEST(config_command_shows_effective_values_masked)
{
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_INT(
        run_quarry("--data /srv/q config --set ldap.bind_password=hunter2 --set ldap.nested_depth=4", &out),
        0);
    const char *s = qr_buf_str(&out);
    CHECK(strstr(s, "hunter2") == NULL);
    CHECK(strstr(s, "/srv/q") != NULL);
    CHECK(strstr(s, "command line") != NULL);
    CHECK_INT(run_quarry("config --json", &out), 0);
    CHECK(strstr(qr_buf_str(&out), "\"data.dir\":\"./data\"") != NULL);
    CHECK_INT(run_quarry("config --keys", &out), 0);
    CHECK(strstr(qr_buf_str(&out), "ldap.group_filter") != NULL);
    CHECK(strstr(qr_buf_str(&out), "\"ldap.timeout_ms\":5000") == NULL); /* --keys is the table, not values */
    qr_buf_release(&out);
}

TEST(config_errors_exit_2_with_clear_message)
{
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_INT(run_quarry("config --set ldap.nested_depth=deep", &out), 2);
    CHECK(strstr(qr_buf_str(&out), "ldap.nested_depth: 'deep' is not an integer") != NULL);
    CHECK_INT(run_quarry("config --config /nonexistent.json", &out), 2);
    CHECK(strstr(qr_buf_str(&out), "/nonexistent.json") != NULL);
    CHECK_INT(run_quarry("config --set", &out), 2);
    CHECK(strstr(qr_buf_str(&out), "needs a value") != NULL);
    qr_buf_release(&out);
}

TEST(environment_and_command_line_precedence)
{
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    char cmd[1024];
    snprintf(
        cmd, sizeof(cmd),
        "QUARRY_LDAP_TIMEOUT_MS=1234 QUARRY_LDAP_URI=ldap://env %s config --set ldap.uri=ldap://cli 2>&1",
        QUARRY_BIN);
    CHECK_INT(test_capture(cmd, &out), 0);
    CHECK(strstr(qr_buf_str(&out), "1234") != NULL);
    CHECK(strstr(qr_buf_str(&out), "ldap://cli") != NULL);
    CHECK(strstr(qr_buf_str(&out), "ldap://env") == NULL);
    qr_buf_release(&out);
}

TEST(selfcheck_command)
{
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_INT(run_quarry("selfcheck", &out), 0);
    CHECK(strstr(qr_buf_str(&out), "FTS5 with porter unicode61: ok") != NULL);
    CHECK(strstr(qr_buf_str(&out), "inner-product search: ok") != NULL);
    qr_buf_release(&out);
}

/* The example configuration the Debian package installs as /etc/quarry/quarry.json (// comments
 * and all) passes `quarry config`'s validation; a copy with a bad value does not. */
TEST(config_example_passes_validation)
{
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_INT(run_quarry("config --config " QUARRY_SOURCE_DIR "/deploy/quarry.json", &out), 0);
    const char *s = qr_buf_str(&out);
    CHECK_MSG(strstr(s, "/var/lib/quarry") != NULL, "%s", s);
    CHECK(strstr(s, "/var/log/quarry/access.log") != NULL);
    char path[] = "/tmp/quarry-example-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "sed 's/\"dim\": 384/\"dim\": 0/' %s/deploy/quarry.json > %s",
             QUARRY_SOURCE_DIR, path);
    CHECK_INT(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "config --config %s", path);
    CHECK_INT(run_quarry(cmd, &out), 2);
    CHECK_MSG(strstr(qr_buf_str(&out), "embed.dim: 0 is out of range") != NULL, "%s", qr_buf_str(&out));
    unlink(path);
    qr_buf_release(&out);
}

/* The manual page the Debian package installs (deploy/quarry.1) names every command --help lists. */
TEST(man_page_lists_every_command)
{
    char err[QR_ERR_LEN];
    char *man = NULL;
    CHECK_OK(qr_read_file(QUARRY_SOURCE_DIR "/deploy/quarry.1", 1 << 20, &man, NULL, err), err);
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_INT(run_quarry("--help", &out), 0);
    const char *p = strstr(qr_buf_str(&out), "Commands:\n");
    CHECK(p != NULL);
    int commands = 0;
    for (p = strchr(p, '\n') + 1; strncmp(p, "  ", 2) == 0; p = strchr(p, '\n') + 1) {
        char name[32], line[48];
        CHECK(sscanf(p, "%31s", name) == 1);
        snprintf(line, sizeof(line), "\n.B %s\n", name);
        CHECK_MSG(strstr(man, line) != NULL, "deploy/quarry.1 does not describe '%s'", name);
        commands++;
    }
    CHECK(commands >= 10);
    qr_buf_release(&out);
    free(man);
}
