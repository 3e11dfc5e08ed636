/*
 * Tests of the quarry command as a user runs it: help, version, configuration output and
 * errors, that subcommands whose modules are not built yet refuse instead of pretending, and
 * the environment quarry starts again with (OpenBLAS and libgomp settings).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
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

/* Whether /proc/<pid>/environ holds the assignment var (e.g. "A=1"), or with prefix one that starts
 * with it: the environment the process was executed with, so after quarry's start-again the one it
 * set. */
static bool environ_match(pid_t pid, const char *var, bool prefix)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    qr_buf b;
    qr_buf_init(&b, 1 << 24);
    char chunk[65536];
    ssize_t r;
    while ((r = read(fd, chunk, sizeof(chunk))) > 0)
        if (qr_buf_append(&b, chunk, (size_t)r))
            break;
    close(fd);
    const char *buf = qr_buf_str(&b);
    size_t n = qr_buf_len(&b);
    bool found = false;
    for (size_t i = 0; i < n && !found; i += strlen(buf + i) + 1)
        found = prefix ? strncmp(buf + i, var, strlen(var)) == 0 : strcmp(buf + i, var) == 0;
    qr_buf_release(&b);
    return found;
}

static bool environ_has(pid_t pid, const char *var)
{
    return environ_match(pid, var, false);
}

/* `quarry ingest` calls no BLAS: it starts again with one OpenBLAS thread (no idle thread spinning
 * beside the workers) and glibc's malloc on huge pages, besides the settings every command gets.
 * The ingest waits on a FIFO as its --jsonl input while its environment is read. */
/* `quarry ingest` (bin: the launcher, or the program itself) with extra variables in its
 * environment: started by the launcher, it runs with its settings from the first; started alone,
 * it starts again before the libraries' constructors, and with more variables than that start
 * holds (cli/main.c, PREINIT_ENV_MAX) main starts it again. */
static void check_ingest_environment(const char *bin, int extra)
{
    char dir[] = "/tmp/quarry-cli-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char fifo[64], data[64], cmd[256];
    snprintf(fifo, sizeof(fifo), "%s/in.jsonl", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    CHECK(mkfifo(fifo, 0600) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        unsetenv("OPENBLAS_NUM_THREADS");
        unsetenv("OMP_WAIT_POLICY");
        unsetenv("GLIBC_TUNABLES");
        unsetenv("QUARRY_CONFIG");
        for (int i = 0; i < extra; i++) {
            char name[32];
            snprintf(name, sizeof(name), "QUARRY_TEST_PAD_%d", i);
            setenv(name, "x", 1);
        }
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(bin, "quarry", "--log-level", "error", "--data", data, "ingest", "--acl", "public", "--jsonl",
              fifo, (char *)NULL);
        _exit(127);
    }
    bool blas_one = false, passive = false, huge = false;
    for (int i = 0; i < 200 && !(blas_one && passive && huge); i++) {
        usleep(50000);
        blas_one = environ_has(pid, "OPENBLAS_NUM_THREADS=1");
        passive = environ_has(pid, "OMP_WAIT_POLICY=passive");
        huge = environ_match(pid, "GLIBC_TUNABLES=glibc.malloc.hugetlb=1", true);
    }
    /* the ingest's one line of input, once it has opened the FIFO (unless it ended before) */
    int fd = -1, status = 0;
    bool ended = false;
    for (int i = 0; i < 400 && fd < 0 && !ended; i++) {
        fd = open(fifo, O_WRONLY | O_NONBLOCK);
        if (fd < 0) {
            ended = waitpid(pid, &status, WNOHANG) == pid;
            usleep(25000);
        }
    }
    if (fd >= 0) {
        const char line[] = "{\"_id\": \"d1\", \"text\": \"hello\"}\n";
        CHECK(write(fd, line, sizeof(line) - 1) == (ssize_t)(sizeof(line) - 1));
        close(fd);
    }
    if (fd < 0 && !ended)
        kill(pid, SIGKILL); /* it never read its input */
    if (!ended)
        CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "quarry ingest ended with status %d", status);
    CHECK(blas_one);
    CHECK(passive);
    CHECK(huge);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

TEST(ingest_starts_with_one_openblas_thread_and_huge_pages)
{
    check_ingest_environment(QUARRY_BIN, 0);
    check_ingest_environment(QUARRY_BIN, 5000);
    check_ingest_environment(QUARRY_CORE_BIN, 0);
    check_ingest_environment(QUARRY_CORE_BIN, 5000);
}

/* The launcher starts the program once, with its settings: the process that runs is quarry-core,
 * started by no other quarry-core; and it says so, and exits 127, when the program is not where
 * it looks for it. */
TEST(launcher_starts_the_program_once)
{
    qr_buf version;
    qr_buf_init(&version, 1 << 16);
    CHECK_INT(run_quarry("--version", &version), 0);
    CHECK(strstr(qr_buf_str(&version), "quarry ") != NULL);
    qr_buf_release(&version);
    char out[4096];
    int status;
    char dir[] = "/tmp/quarry-launch-XXXXXX", copy[64], cmd[4096 + 256];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(copy, sizeof(copy), "%s/quarry", dir);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", QUARRY_BIN, copy);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof(cmd), "'%s' --version 2>&1", copy);
    FILE *p = popen(cmd, "r");
    CHECK(p);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    status = pclose(p);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 127, "status %d: %s", status, out);
    CHECK_MSG(strstr(out, "cannot start the program") && strstr(out, "quarry-core"), "%s", out);
    /* one execve of quarry-core, none of the launcher after it: strace counts them when it is
     * there (Debian's strace; bootstrap installs it) */
    if (system("command -v strace >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof(cmd),
                 "env -u OMP_WAIT_POLICY -u OPENBLAS_CORETYPE strace -f -qq -e trace=execve -e signal=none"
                 " '%s' --version 2>&1 >/dev/null | grep -c 'execve(' ",
                 QUARRY_BIN);
        p = popen(cmd, "r");
        CHECK(p);
        n = fread(out, 1, sizeof(out) - 1, p);
        out[n] = '\0';
        pclose(p);
        CHECK_MSG(atoi(out) == 2, "execve calls: %s (the launcher's and quarry-core's)", out);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}
