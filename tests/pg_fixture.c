/*
 * The throwaway PostgreSQL server of tests/pg_fixture.h. The test process forks a watchdog
 * (forked twice, so that it belongs neither to the test's process tree nor to its session and
 * outlives a test that ctest kills); the watchdog starts postgres as its own child, so it can
 * wait for it, and waits on a pipe whose only writer is the test: when that pipe closes -- the
 * test asked, or died -- it shuts postgres down (fast, then immediate, then SIGKILL) and removes
 * the directory, then exits, closing the second pipe the test waits on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/pg_fixture.h"

#define ERR_LEN          512
#define START_TIMEOUT_MS 60000
#define STOP_TIMEOUT_MS  60000

static void fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, ERR_LEN, fmt, ap);
    va_end(ap);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* In a forked child: stdin from /dev/null, stdout and stderr to log (or /dev/null). */
static void redirect(const char *log)
{
    int in = open("/dev/null", O_RDONLY);
    int out = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in < 0 || out < 0)
        _exit(126);
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    close(in);
    close(out);
}

/* In a forked child: execs argv (a PostgreSQL program) as the postgres user when we are root. */
static void exec_as_pg(char *const *argv)
{
    if (geteuid() == 0) {
        char *full[32] = {"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"};
        int n = 5;
        for (int i = 0; argv[i] && n < 31; i++)
            full[n++] = argv[i];
        full[n] = NULL;
        execvp("setpriv", full);
    } else {
        execv(argv[0], argv);
    }
    _exit(127);
}

/* Runs a PostgreSQL program to its end, its output appended to log; true when it exited 0. */
static int run_pg(char *const *argv, const char *log)
{
    pid_t pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0) {
        redirect(log);
        exec_as_pg(argv);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* The last lines of a log file, for a failure message. */
static void log_tail(const char *path, char *out, size_t n)
{
    out[0] = '\0';
    FILE *fp = fopen(path, "r");
    if (!fp)
        return;
    char buf[4096];
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
    size_t got = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[got] = '\0';
    size_t keep = got < n - 1 ? got : n - 1;
    memcpy(out, buf + got - keep, keep + 1);
    for (char *p = out; *p; p++)
        if (*p == '\n')
            *p = ' ';
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* A TCP port on 127.0.0.1 nobody listens on, from 20000-32767 (below Linux's ephemeral range). */
static int free_port(void)
{
    for (int tries = 0; tries < 200; tries++) {
        int port =
            20000 +
            (int)(((unsigned)getpid() * 7919u + (unsigned)now_ms() + (unsigned)tries * 104729u) % 12768u);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0)
            return -1;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = bind(s, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(s);
        if (ok)
            return port;
    }
    return -1;
}

/* Waits up to ms for child pid (of the watchdog) to exit; true when it did. */
static int wait_exit(pid_t pid, int ms)
{
    long long until = now_ms() + ms;
    do {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return 1;
        sleep_ms(20);
    } while (now_ms() < until);
    return 0;
}

/* The watchdog's life: postgres as its child, then, once ctl closes (or postgres ends), the
 * shutdown and the removal of dir. Never returns. */
static void watchdog(int ctl, int done, const char *dir, char *const *argv)
{
    /* keep only our pipe ends: another fixture's pipes must not be held open by this process */
    for (int fd = 3; fd < 1024; fd++)
        if (fd != ctl && fd != done)
            close(fd);
    redirect(NULL);
    char log[256];
    snprintf(log, sizeof(log), "%s/postgres.log", dir);
    pid_t pm = fork();
    if (pm == 0) {
        close(ctl);
        close(done);
        redirect(log);
        exec_as_pg(argv);
    }
    int ended = pm < 0;
    while (!ended) {
        struct pollfd p = {.fd = ctl, .events = POLLIN};
        if (poll(&p, 1, 100) > 0)
            break; /* EOF: the test is done or gone */
        ended = waitpid(pm, NULL, WNOHANG) == pm;
    }
    if (!ended) {
        kill(pm, SIGINT); /* fast shutdown */
        if (!wait_exit(pm, 20000)) {
            kill(pm, SIGQUIT); /* immediate shutdown */
            if (!wait_exit(pm, 5000)) {
                kill(pm, SIGKILL);
                waitpid(pm, NULL, 0);
            }
        }
    }
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    _exit(0);
}

/* Makes the temporary directory, owned by the postgres user when we are root. */
static int make_dir(pg_fixture *f, char *err)
{
    memset(f, 0, sizeof(*f));
    f->ctl_fd = f->done_fd = -1;
    if (access(PG_FIXTURE_BIN "/postgres", X_OK) != 0 || access(PG_FIXTURE_BIN "/initdb", X_OK) != 0) {
        fail(err, "PostgreSQL 15 is not installed (%s/postgres): run scripts/bootstrap", PG_FIXTURE_BIN);
        return PG_FIXTURE_SKIP;
    }
    struct passwd *pw = NULL;
    if (geteuid() == 0 && !(pw = getpwnam("postgres"))) {
        fail(err, "running as root and there is no postgres user to run PostgreSQL as");
        return PG_FIXTURE_SKIP;
    }
    snprintf(f->dir, sizeof(f->dir), "/tmp/quarry-pg-XXXXXX");
    if (!mkdtemp(f->dir)) {
        fail(err, "cannot make a temporary directory: %s", strerror(errno));
        return 1;
    }
    if (pw && chown(f->dir, pw->pw_uid, pw->pw_gid) != 0) {
        fail(err, "cannot give %s to the postgres user: %s", f->dir, strerror(errno));
        rmdir(f->dir);
        return 1;
    }
    return 0;
}

/* Starts postgres on f's data directory under a watchdog and waits until it answers. */
static int launch(pg_fixture *f, char *err)
{
    char data[160], port[16], sockdir[160], logpath[160];
    int ctl[2] = {-1, -1}, done[2] = {-1, -1};
    snprintf(data, sizeof(data), "%s/data", f->dir);
    snprintf(sockdir, sizeof(sockdir), "unix_socket_directories=%s", f->dir);
    snprintf(logpath, sizeof(logpath), "%s/postgres.log", f->dir);
    if ((f->port = free_port()) < 0) {
        fail(err, "no free port on 127.0.0.1");
        goto fail;
    }
    snprintf(port, sizeof(port), "%d", f->port);
    snprintf(f->conninfo, sizeof(f->conninfo),
             "host=127.0.0.1 port=%d user=quarry dbname=postgres connect_timeout=10", f->port);
    char *argv[] = {PG_FIXTURE_BIN "/postgres",
                    "-D",
                    data,
                    "-p",
                    port,
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    sockdir,
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=40",
                    "-c",
                    "shared_buffers=32MB",
                    NULL};
    if (pipe2(ctl, O_CLOEXEC) != 0 || pipe2(done, O_CLOEXEC) != 0) {
        fail(err, "pipe: %s", strerror(errno));
        goto fail;
    }
    pid_t first = fork();
    if (first < 0) {
        fail(err, "fork: %s", strerror(errno));
        goto fail;
    }
    if (first == 0) {
        setsid();
        if (fork() == 0) {
            close(ctl[1]);
            close(done[0]);
            watchdog(ctl[0], done[1], f->dir, argv);
        }
        _exit(0);
    }
    waitpid(first, NULL, 0);
    close(ctl[0]);
    close(done[1]);
    f->ctl_fd = ctl[1];
    f->done_fd = done[0];
    for (long long until = now_ms() + START_TIMEOUT_MS;;) {
        if (PQping(f->conninfo) == PQPING_OK)
            return 0;
        struct pollfd p = {.fd = f->done_fd, .events = POLLIN};
        char tail[300];
        if (poll(&p, 1, 0) > 0) {
            log_tail(logpath, tail, sizeof(tail));
            fail(err, "postgres in %s exited at start: %s", f->dir, tail);
            break;
        }
        if (now_ms() > until) {
            log_tail(logpath, tail, sizeof(tail));
            fail(err, "postgres in %s did not answer within %d s: %s", f->dir, START_TIMEOUT_MS / 1000, tail);
            break;
        }
        sleep_ms(50);
    }
    pg_fixture_stop(f);
    return 1;
fail:
    for (int i = 0; i < 2; i++) {
        if (ctl[i] >= 0)
            close(ctl[i]);
        if (done[i] >= 0)
            close(done[i]);
    }
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 1;
}

int pg_fixture_start(pg_fixture *f, char *err)
{
    int rc = make_dir(f, err);
    if (rc)
        return rc;
    char data[160], log[160];
    snprintf(data, sizeof(data), "%s/data", f->dir);
    snprintf(log, sizeof(log), "%s/initdb.log", f->dir);
    char *argv[] = {PG_FIXTURE_BIN "/initdb", "-D", data,   "-U",         "quarry",
                    "--auth=trust",           "-E", "UTF8", "--locale=C", "--no-sync",
                    "--no-instructions",      NULL};
    if (!run_pg(argv, log)) {
        char tail[300];
        log_tail(log, tail, sizeof(tail));
        fail(err, "initdb failed in %s: %s", f->dir, tail);
        nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        return 1;
    }
    return launch(f, err);
}

int pg_fixture_start_standby(pg_fixture *f, const pg_fixture *primary, char *err)
{
    int rc = make_dir(f, err);
    if (rc)
        return rc;
    char data[160], log[160], port[16];
    snprintf(data, sizeof(data), "%s/data", f->dir);
    snprintf(log, sizeof(log), "%s/basebackup.log", f->dir);
    snprintf(port, sizeof(port), "%d", primary->port);
    /* -R: standby.signal and primary_conninfo, so the copy starts as a streaming hot standby;
     * a fast checkpoint, not one spread over minutes, to begin the copy */
    char *argv[] = {PG_FIXTURE_BIN "/pg_basebackup",
                    "-D",
                    data,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    port,
                    "-U",
                    "quarry",
                    "-R",
                    "-X",
                    "stream",
                    "--no-sync",
                    "--checkpoint=fast",
                    NULL};
    if (!run_pg(argv, log)) {
        char tail[300];
        log_tail(log, tail, sizeof(tail));
        fail(err, "pg_basebackup failed in %s: %s", f->dir, tail);
        nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        return 1;
    }
    return launch(f, err);
}

void pg_fixture_stop(pg_fixture *f)
{
    if (f->ctl_fd < 0)
        return;
    close(f->ctl_fd);
    f->ctl_fd = -1;
    /* the watchdog closes its end when postgres is down and the directory removed */
    struct pollfd p = {.fd = f->done_fd, .events = POLLIN};
    char c;
    long long until = now_ms() + STOP_TIMEOUT_MS;
    while (now_ms() < until && poll(&p, 1, 100) >= 0) {
        if (p.revents && read(f->done_fd, &c, 1) <= 0)
            break;
    }
    close(f->done_fd);
    f->done_fd = -1;
}
