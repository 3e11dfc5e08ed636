/*
 * The extraction sandbox: runs a complex-format extractor (libxml2, libzip, pdftotext) in a
 * forked child so that a hostile or broken file can neither hang nor crash the caller. The
 * child gets its own process group (so programs it starts die with it), an address-space
 * limit above its starting size, no core dumps and no inherited descriptors besides stdio and
 * its result pipe; the parent keeps the wall-clock deadline, watches the child's resident size
 * (which also bounds sanitizer builds, where an address-space limit cannot be used) and kills
 * the whole group when either limit is passed. The child sends the finished document back as
 * one length-prefixed message, which the parent checks field by field before trusting it.
 *
 * The children come from a zygote. fork() in a threaded process (quarry serve's workers, a
 * threaded ingest) copies whatever locks other threads hold at that instant -- libxml2's, the
 * dynamic loader's, the sanitizers' allocator's -- and a child that needs one waits for ever
 * (until the deadline kills it, failing a good document). exec'ing a fresh program per document
 * costs about 40 ms (fifty shared libraries and their initialisers). So the first sandboxed
 * extraction of a process starts one helper, the zygote: this same program (/proc/self/exe)
 * re-executed with QUARRY_SANDBOX_ZYGOTE set, which a constructor notices before main() runs.
 * The zygote is single-threaded: it forks each child for the parent on request (over a
 * SOCK_SEQPACKET socket, the input as a memory file, the result pipe and a reply socket passed
 * with SCM_RIGHTS), tells the parent the child's pid, reaps it and sends its wait status back.
 * The parent keeps every limit as before: it reads the result, watches the child's size and
 * kills its process group. The zygote ends when the parent does (its socket closes) and is
 * started again should it die. Where it cannot be used (no /proc, an extractor function
 * outside the main executable), the child is forked directly, as before.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libxml/xmlmemory.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ingest/ingest_int.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_ASAN 1
#endif
#endif
#ifndef SANDBOX_ASAN
#define SANDBOX_ASAN 0
#endif

#define SANDBOX_MAGIC   0x51525342u /* "QRSB" */
#define RESULT_FD       3
#define WATCH_PERIOD_MS 20
#define MIB             (1024u * 1024u)
#define ZYGOTE_ENV      "QUARRY_SANDBOX_ZYGOTE"
#define ZYGOTE_FD       3           /* the zygote's end of its control socket */
#define ZYGOTE_MAGIC    0x51525a47u /* "QRZG" */
#define ZYGOTE_START_MS 10000       /* for the zygote to say it is ready */
#define ZYGOTE_REAP_MS  2000        /* for a killed child's wait status */

extern char **environ;

/* ---- the child ----------------------------------------------------------------------------- */

static volatile sig_atomic_t child_alloc_failed;

/* libxml2's allocator in the child, so that a parse that failed because the memory limit made
 * malloc fail is reported as the limit and not as a malformed document. */
static void *counting_malloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        child_alloc_failed = 1;
    return p;
}

static void *counting_realloc(void *q, size_t n)
{
    void *p = realloc(q, n);
    if (!p && n)
        child_alloc_failed = 1;
    return p;
}

static char *counting_strdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        child_alloc_failed = 1;
    return p;
}

/* Size of this process's address space and resident set, in bytes (0 when unknown). */
static void proc_sizes(pid_t pid, size_t *vm, size_t *rss)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
    *vm = *rss = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    unsigned long long pages_vm = 0, pages_rss = 0;
    if (sscanf(buf, "%llu %llu", &pages_vm, &pages_rss) == 2) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        *vm = (size_t)pages_vm * page;
        *rss = (size_t)pages_rss * page;
    }
}

static bool write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

static bool put_u64(int fd, uint64_t v)
{
    return write_all(fd, &v, sizeof(v));
}

static bool put_bytes(int fd, const char *s, size_t n)
{
    return put_u64(fd, n) && write_all(fd, s, n);
}

/* Sends status, message and (on success) the document. */
static bool send_result(int fd, qr_status st, const char *err, const ingest_text *t)
{
    uint32_t head[2] = {SANDBOX_MAGIC, (uint32_t)st};
    if (!write_all(fd, head, sizeof(head)) || !put_bytes(fd, err, strlen(err)))
        return false;
    if (st)
        return true;
    if (!put_u64(fd, t->title ? 1 : 0) || (t->title && !put_bytes(fd, t->title, strlen(t->title))) ||
        !put_bytes(fd, t->text ? t->text : "", t->len) || !put_u64(fd, t->nsections))
        return false;
    for (size_t i = 0; i < t->nsections; i++) {
        const ingest_section *s = &t->sections[i];
        if (!put_u64(fd, (uint64_t)s->level) || !put_u64(fd, s->start) || !put_u64(fd, s->end) ||
            !put_bytes(fd, s->heading_path, strlen(s->heading_path)))
            return false;
    }
    return true;
}

static void limit_child(size_t memory_bytes)
{
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    if (!SANDBOX_ASAN && memory_bytes) {
        /* Relative to the size inherited from the parent, which may already map an index. */
        size_t vm, rss;
        proc_sizes(getpid(), &vm, &rss);
        struct rlimit as = {(rlim_t)(vm + memory_bytes), (rlim_t)(vm + memory_bytes)};
        setrlimit(RLIMIT_AS, &as);
    }
}

static void __attribute__((noreturn))
child_main(sandbox_fn fn, const char *bytes, size_t len, const ingest_limits *lim, pid_t parent)
{
    char err[QR_ERR_LEN] = "";
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(111);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    limit_child(lim->memory_bytes);
    xmlMemSetup(free, counting_malloc, counting_realloc, counting_strdup);

    doc_builder b;
    ingest_text t = {0};
    builder_init(&b, lim->max_document_bytes, lim->reject_invalid_utf8);
    qr_status st = fn(bytes, len, lim, &b, err);
    if (!st)
        st = builder_finish(&b, &t, err);
    if (st && (st == QR_ENOMEM || child_alloc_failed))
        st = qr_fail(err, QR_ENOMEM, "out of memory");
    bool sent = send_result(RESULT_FD, st, err, &t);
    /* No cleanup: the process ends here and the parent has what it needs. */
    _exit(sent ? 0 : 112);
}

/* ---- the zygote ---------------------------------------------------------------------------- */

/* One request: the extractor (its offset from ingest_sandbox_run in this executable), the limits
 * and the input's length. Sent with three descriptors: the input (a memory file), the write end
 * of the result pipe and the reply socket, on which the zygote sends the child's pid (int64, or
 * -errno when it could not fork) and later its wait status (int64). */
typedef struct {
    uint32_t magic;
    int64_t fn_offset;
    uint64_t len;
    ingest_limits lim;
} zygote_request;

static void zygote_reply(int fd, int64_t v)
{
    (void)!send(fd, &v, sizeof(v), MSG_NOSIGNAL);
}

/* The forked child of a request: maps its input and runs the extractor (never returns). */
static void __attribute__((noreturn))
zygote_child(int ctl, int sigfd, const zygote_request *q, int in, int result, pid_t zygote)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    close(ctl);
    close(sigfd);
    if (result != RESULT_FD) {
        if (dup2(result, RESULT_FD) < 0)
            _exit(113);
        close(result);
    }
    const char *bytes = "";
    if (q->len) {
        void *m = mmap(NULL, (size_t)q->len, PROT_READ, MAP_PRIVATE, in, 0);
        if (m == MAP_FAILED)
            _exit(114);
        bytes = m;
    }
    close(in);
    close_range(RESULT_FD + 1, ~0u, 0);
    sandbox_fn fn = (sandbox_fn)(void *)((uintptr_t)(void *)ingest_sandbox_run + (uintptr_t)q->fn_offset);
    child_main(fn, bytes, (size_t)q->len, &q->lim, zygote);
}

/* Receives one request and its three descriptors; false when the parent is gone. A malformed
 * request (not from quarry) is dropped with its descriptors. */
static bool zygote_receive(int ctl, zygote_request *q, int fds[3], bool *ok)
{
    union {
        char buf[CMSG_SPACE(3 * sizeof(int))];
        struct cmsghdr align;
    } c;
    struct iovec iov = {q, sizeof(*q)};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf, .msg_controllen = sizeof(c.buf)};
    ssize_t n;
    while ((n = recvmsg(ctl, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    if (n <= 0)
        return false;
    int got = 0;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
        if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
            size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
                if (got < 3)
                    fds[got++] = fd;
                else
                    close(fd);
            }
        }
    *ok = got == 3 && (size_t)n == sizeof(*q) && q->magic == ZYGOTE_MAGIC && !(m.msg_flags & MSG_CTRUNC);
    if (!*ok)
        for (int i = 0; i < got; i++)
            close(fds[i]);
    return true;
}

typedef struct {
    pid_t pid;
    int reply;
} zygote_kid;

/* The zygote's loop: a child per request, its status back when it ends. Ends (killing what it
 * started) when its socket says the parent is gone: the parent's end is close-on-exec and no
 * child of the parent keeps it, so it closes when the parent process ends, however it ends.
 * (Not PR_SET_PDEATHSIG: that fires when the parent's *thread* that started it ends, and any
 * thread may be the first to extract.) */
static void __attribute__((noreturn)) zygote_main(pid_t parent)
{
    if (getppid() != parent)
        _exit(0);
    close_range(ZYGOTE_FD + 1, ~0u, 0);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sigfd = signalfd(-1, &chld, SFD_CLOEXEC), ctl = ZYGOTE_FD;
    fcntl(ctl, F_SETFD, FD_CLOEXEC);
    if (sigfd < 0)
        _exit(1);
    zygote_kid *kids = NULL;
    size_t nkids = 0, cap = 0;
    char ready = 1;
    if (send(ctl, &ready, 1, MSG_NOSIGNAL) != 1)
        _exit(0);
    for (;;) {
        struct pollfd p[2] = {{ctl, POLLIN, 0}, {sigfd, POLLIN, 0}};
        if (poll(p, 2, -1) < 0)
            continue;
        if (p[1].revents) {
            struct signalfd_siginfo si;
            (void)!read(sigfd, &si, sizeof(si));
            int wstatus;
            pid_t w;
            while ((w = waitpid(-1, &wstatus, WNOHANG)) > 0)
                for (size_t i = 0; i < nkids; i++)
                    if (kids[i].pid == w) {
                        zygote_reply(kids[i].reply, wstatus);
                        close(kids[i].reply);
                        kids[i] = kids[--nkids];
                        break;
                    }
        }
        if (!p[0].revents)
            continue;
        zygote_request q;
        int fds[3];
        bool ok;
        if (!zygote_receive(ctl, &q, fds, &ok)) {
            for (size_t i = 0; i < nkids; i++) {
                kill(-kids[i].pid, SIGKILL);
                kill(kids[i].pid, SIGKILL);
            }
            _exit(0);
        }
        if (!ok)
            continue;
        if (nkids == cap) {
            size_t nc = cap ? 2 * cap : 16;
            zygote_kid *nk = realloc(kids, nc * sizeof(*nk));
            if (!nk) {
                zygote_reply(fds[2], -ENOMEM);
                for (int i = 0; i < 3; i++)
                    close(fds[i]);
                continue;
            }
            kids = nk;
            cap = nc;
        }
        pid_t self = getpid(), pid = fork();
        if (pid == 0)
            zygote_child(ctl, sigfd, &q, fds[0], fds[1], self);
        if (pid > 0)
            setpgid(pid, pid); /* also done by the child: whichever runs first */
        zygote_reply(fds[2], pid > 0 ? pid : -errno);
        close(fds[0]);
        close(fds[1]);
        if (pid > 0)
            kids[nkids++] = (zygote_kid){pid, fds[2]};
        else
            close(fds[2]);
    }
}

/* In every process of this program, before main(): a zygote serves and never returns. */
__attribute__((constructor)) static void sandbox_zygote_entry(void)
{
    const char *v = getenv(ZYGOTE_ENV);
    if (!v)
        return;
    pid_t parent = (pid_t)strtol(v, NULL, 10);
    unsetenv(ZYGOTE_ENV); /* not for the extractors' own programs */
    zygote_main(parent);
}

/* The parent's handle on its zygote (one per process, started on first use). */
static struct {
    pthread_mutex_t mu;
    int ctl; /* -1: none */
    pid_t pid;
    size_t rss;  /* its resident size when ready: what each child starts from */
    bool failed; /* it could not be started: fork directly */
} zyg = {PTHREAD_MUTEX_INITIALIZER, -1, 0, 0, false};

/* Starts the zygote; with zyg.mu held. */
static qr_status zygote_start(char *err)
{
    if (zyg.ctl >= 0) {
        close(zyg.ctl);
        zyg.ctl = -1;
    }
    if (zyg.pid > 0) { /* the one before: gone or going, reap it */
        kill(zyg.pid, SIGKILL);
        waitpid(zyg.pid, NULL, 0);
        zyg.pid = 0;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return qr_fail(err, QR_EIO, "cannot create the extraction zygote's socket: %s", strerror(errno));
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = calloc(n + 2, sizeof(*env)), var[64];
    if (!env) {
        close(sv[0]);
        close(sv[1]);
        return qr_fail(err, QR_ENOMEM, "out of memory starting the extraction zygote");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], ZYGOTE_ENV "=", sizeof(ZYGOTE_ENV)) != 0)
            env[k++] = environ[i];
    snprintf(var, sizeof(var), ZYGOTE_ENV "=%d", (int)getpid());
    env[k++] = var;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], ZYGOTE_FD);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    char *argv[] = {"quarry-extract-zygote", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/proc/self/exe", &fa, &at, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    free(env);
    close(sv[1]);
    if (rc != 0) {
        close(sv[0]);
        return qr_fail(err, QR_EIO, "cannot start the extraction zygote: %s", strerror(rc));
    }
    struct pollfd p = {sv[0], POLLIN, 0};
    char ready = 0;
    if (poll(&p, 1, ZYGOTE_START_MS) != 1 || recv(sv[0], &ready, 1, 0) != 1 || ready != 1) {
        close(sv[0]);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return qr_fail(err, QR_EIO, "the extraction zygote did not start");
    }
    size_t vm;
    proc_sizes(pid, &vm, &zyg.rss);
    zyg.ctl = sv[0];
    zyg.pid = pid;
    return QR_OK;
}

pid_t ingest_sandbox_zygote(void)
{
    pthread_mutex_lock(&zyg.mu);
    pid_t pid = zyg.ctl >= 0 ? zyg.pid : 0;
    pthread_mutex_unlock(&zyg.mu);
    return pid;
}

/* Whether fn lies in the same object as this file (its offset then means the same in the
 * zygote, which runs the same executable). */
static bool same_object(sandbox_fn fn)
{
    Dl_info a, b;
    return dladdr((void *)fn, &a) && dladdr((void *)ingest_sandbox_run, &b) && a.dli_fbase == b.dli_fbase;
}

/* Asks the zygote for a child running fn on bytes with lim, its result on result_w. On success
 * *pid is the child, *reply the socket its wait status arrives on, *base_rss what it started
 * from. QR_ENOTIMPL when no zygote can serve (then the caller forks directly). */
static qr_status zygote_launch(sandbox_fn fn, const char *bytes, size_t len, const ingest_limits *lim,
                               int result_w, pid_t *pid, int *reply, size_t *base_rss, char *err)
{
    if (!same_object(fn))
        return QR_ENOTIMPL;
    int in = memfd_create("quarry-extract-input", MFD_CLOEXEC), rp[2] = {-1, -1};
    if (in < 0)
        return qr_fail(err, QR_EIO, "cannot create a memory file for the extractor: %s", strerror(errno));
    qr_status st = len ? qr_write_all(in, bytes, len, "the extractor's input", err) : QR_OK;
    if (!st && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, rp) != 0)
        st = qr_fail(err, QR_EIO, "cannot create the extractor's socket: %s", strerror(errno));
    if (st) {
        close(in);
        return st;
    }
    zygote_request q;
    memset(&q, 0, sizeof(q));
    q.magic = ZYGOTE_MAGIC;
    q.fn_offset = (int64_t)((uintptr_t)(void *)fn - (uintptr_t)(void *)ingest_sandbox_run);
    q.len = len;
    q.lim = *lim;
    int fds[3] = {in, result_w, rp[1]};
    union {
        char buf[CMSG_SPACE(sizeof(fds))];
        struct cmsghdr align;
    } c;
    memset(&c, 0, sizeof(c));
    struct iovec iov = {&q, sizeof(q)};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf, .msg_controllen = sizeof(c.buf)};
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(fds));
    memcpy(CMSG_DATA(h), fds, sizeof(fds));

    pthread_mutex_lock(&zyg.mu);
    bool sent = false;
    for (int attempt = 0; attempt < 2 && !sent && !st; attempt++) {
        if (zyg.ctl < 0 && !zyg.failed && zygote_start(err)) {
            zyg.failed = true; /* no /proc, no exec: fork directly from now on */
            qr_log(QR_LOG_WARN, "ingest", "extractions are forked from this process directly: %s", err);
        }
        if (zyg.failed)
            break;
        ssize_t w;
        while ((w = sendmsg(zyg.ctl, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR)
            ;
        if (w == (ssize_t)sizeof(q)) {
            sent = true;
        } else if (w < 0 && (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)) {
            close(zyg.ctl); /* it died (killed?): start another */
            zyg.ctl = -1;
        } else {
            st = qr_fail(err, QR_EIO, "cannot reach the extraction zygote: %s",
                         w < 0 ? strerror(errno) : "short send");
        }
    }
    size_t rss = zyg.rss;
    bool failed = zyg.failed;
    pthread_mutex_unlock(&zyg.mu);
    close(in);
    close(rp[1]);
    if (!sent) {
        close(rp[0]);
        return st ? st : failed ? QR_ENOTIMPL : qr_fail(err, QR_EIO, "cannot reach the extraction zygote");
    }
    int64_t got = 0;
    struct pollfd p = {rp[0], POLLIN, 0};
    if (poll(&p, 1, ZYGOTE_START_MS) != 1 || recv(rp[0], &got, sizeof(got), 0) != sizeof(got) || got == 0) {
        close(rp[0]);
        return qr_fail(err, QR_EIO, "the extraction zygote did not start the extractor");
    }
    if (got < 0) {
        close(rp[0]);
        return qr_fail(err, QR_EIO, "cannot start the extractor process: %s", strerror((int)-got));
    }
    *pid = (pid_t)got;
    *reply = rp[0];
    *base_rss = rss;
    return QR_OK;
}

/* The wait status of a zygote's child from its reply socket, waiting up to ms (-1: for ever);
 * false when none came. */
static bool zygote_status(int reply, int ms, int *wstatus)
{
    struct pollfd p = {reply, POLLIN, 0};
    int64_t v;
    if (poll(&p, 1, ms) != 1 || recv(reply, &v, sizeof(v), 0) != sizeof(v))
        return false;
    *wstatus = (int)v;
    return true;
}

/* ---- the parent ---------------------------------------------------------------------------- */

typedef struct {
    const char *p;
    size_t len, pos;
} reader;

static bool get_u64(reader *r, uint64_t *v)
{
    if (r->len - r->pos < sizeof(*v))
        return false;
    memcpy(v, r->p + r->pos, sizeof(*v));
    r->pos += sizeof(*v);
    return true;
}

/* Returns a newly allocated copy of the next length-prefixed string (NULL when malformed). */
static char *get_str(reader *r, size_t *n_out)
{
    uint64_t n;
    if (!get_u64(r, &n) || n > r->len - r->pos)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    memcpy(s, r->p + r->pos, (size_t)n);
    s[n] = '\0';
    r->pos += (size_t)n;
    if (n_out)
        *n_out = (size_t)n;
    return s;
}

/* Decodes the child's message into *out, checking every length and offset. */
static qr_status parse_result(const char *msg, size_t len, ingest_text *out, char *err)
{
    reader r = {msg, len, 0};
    uint32_t head[2];
    if (len < sizeof(head))
        return qr_fail(err, QR_EINTERNAL, "the extractor ended without a result");
    memcpy(head, msg, sizeof(head));
    r.pos = sizeof(head);
    if (head[0] != SANDBOX_MAGIC)
        return qr_fail(err, QR_EINTERNAL, "the extractor sent a malformed result");
    char *msg_err = get_str(&r, NULL);
    if (!msg_err)
        return qr_fail(err, QR_EINTERNAL, "the extractor sent a malformed result");
    qr_status st = (qr_status)head[1];
    if (st) {
        qr_fail(err, st, "%s", msg_err);
        free(msg_err);
        return st;
    }
    free(msg_err);
    uint64_t has_title, nsec;
    memset(out, 0, sizeof(*out));
    if (!get_u64(&r, &has_title) || (has_title && !(out->title = get_str(&r, NULL))) ||
        !(out->text = get_str(&r, &out->len)) || !get_u64(&r, &nsec) || nsec > (r.len - r.pos) / 32)
        goto bad;
    out->sections = calloc(nsec ? nsec : 1, sizeof(*out->sections));
    if (!out->sections)
        goto bad;
    size_t prev_end = 0;
    for (size_t i = 0; i < nsec; i++) {
        uint64_t level, start, end;
        if (!get_u64(&r, &level) || !get_u64(&r, &start) || !get_u64(&r, &end) || level > 6 ||
            start != prev_end || end < start || end > out->len)
            goto bad;
        ingest_section *s = &out->sections[i];
        s->level = (int)level;
        s->start = (size_t)start;
        s->end = (size_t)end;
        if (!(s->heading_path = get_str(&r, NULL)))
            goto bad;
        out->nsections = i + 1;
        prev_end = (size_t)end;
    }
    if (r.pos != r.len || (nsec && prev_end != out->len) || !qr_utf8_valid(out->text, out->len))
        goto bad;
    return QR_OK;
bad:
    ingest_text_release(out);
    return qr_fail(err, QR_EINTERNAL, "the extractor sent a malformed result");
}

static uint64_t ms_since(uint64_t t0)
{
    return (qr_now_ns() - t0) / 1000000u;
}

qr_status ingest_sandbox_run(sandbox_fn fn, const char *bytes, size_t len, const ingest_limits *lim,
                             ingest_text *out, char *err)
{
    if (!out)
        return qr_fail(err, QR_EINVAL, "ingest_sandbox_run: NULL output");
    memset(out, 0, sizeof(*out));
    if (!fn || !lim || (!bytes && len))
        return qr_fail(err, QR_EINVAL, "ingest_sandbox_run: NULL argument");
    ingest_xml_init();
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return qr_fail(err, QR_EIO, "cannot create the extractor's pipe: %s", strerror(errno));
    pid_t pid = -1;
    int reply = -1; /* a zygote's child: its wait status arrives here */
    size_t base_rss = 0;
    qr_status launched = zygote_launch(fn, bytes, len, lim, fds[1], &pid, &reply, &base_rss, err);
    if (launched && launched != QR_ENOTIMPL) {
        close(fds[0]);
        close(fds[1]);
        return launched;
    }
    if (launched == QR_ENOTIMPL) { /* no zygote here: a direct fork */
        size_t parent_vm;
        proc_sizes(getpid(), &parent_vm, &base_rss);
        pid_t self = getpid();
        pid = fork();
        if (pid < 0) {
            int e = errno;
            close(fds[0]);
            close(fds[1]);
            return qr_fail(err, QR_EIO, "cannot start the extractor process: %s", strerror(e));
        }
        if (pid == 0) {
            close(fds[0]);
            if (fds[1] != RESULT_FD) {
                if (dup2(fds[1], RESULT_FD) < 0)
                    _exit(113);
                close(fds[1]);
            } else {
                fcntl(RESULT_FD, F_SETFD, 0);
            }
            close_range(RESULT_FD + 1, ~0u, 0);
            child_main(fn, bytes, len, lim, self);
        }
        setpgid(pid, pid); /* also done by the child; whichever runs first wins the race */
    }
    close(fds[1]);

    qr_buf msg;
    /* The text, the title and sections: at most the text cap twice over, plus headroom. */
    size_t msg_cap =
        lim->max_document_bytes > (SIZE_MAX - MIB) / 2 ? SIZE_MAX : 2 * lim->max_document_bytes + MIB;
    qr_buf_init(&msg, msg_cap);
    enum { RUNNING, DONE, TIMED_OUT, MEMORY, TOO_BIG, FAILED } state = RUNNING;
    uint64_t t0 = qr_now_ns();
    char buf[65536];
    int read_errno = 0;
    while (state == RUNNING) {
        uint64_t elapsed = ms_since(t0);
        if (elapsed >= lim->timeout_ms) {
            state = TIMED_OUT;
            break;
        }
        uint64_t wait = lim->timeout_ms - elapsed;
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int pr = poll(&pfd, 1, (int)(wait < WATCH_PERIOD_MS ? wait : WATCH_PERIOD_MS));
        if (pr < 0 && errno != EINTR) {
            read_errno = errno;
            state = FAILED;
            break;
        }
        if (pr > 0) {
            ssize_t n = read(fds[0], buf, sizeof(buf));
            if (n == 0) {
                state = DONE;
                break;
            }
            if (n < 0 && errno != EINTR && errno != EAGAIN) {
                read_errno = errno;
                state = FAILED;
                break;
            }
            if (n > 0 && qr_buf_append(&msg, buf, (size_t)n)) {
                state = TOO_BIG;
                break;
            }
        }
        size_t vm, rss;
        proc_sizes(pid, &vm, &rss);
        if (lim->memory_bytes && rss > base_rss + lim->memory_bytes)
            state = MEMORY;
    }
    close(fds[0]);
    if (state != DONE) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
    }

    /* Reap the child; after EOF it is exiting, but a child that closed its pipe and then hung
     * still meets the deadline. */
    int wstatus = 0;
    bool reaped = false;
    long pause_ns = 20000; /* the child is usually gone within microseconds of its EOF */
    if (reply >= 0) {
        uint64_t elapsed = ms_since(t0);
        int left = elapsed < lim->timeout_ms ? (int)(lim->timeout_ms - elapsed) : 0;
        reaped = zygote_status(reply, state == DONE ? left : ZYGOTE_REAP_MS, &wstatus);
        if (!reaped && state == DONE) {
            state = TIMED_OUT;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            reaped = zygote_status(reply, ZYGOTE_REAP_MS, &wstatus);
        }
        close(reply);
    }
    for (; reply < 0;) {
        pid_t w = waitpid(pid, &wstatus, state == DONE ? WNOHANG : 0);
        if (w == pid) {
            reaped = true;
            break;
        }
        if (w < 0 && errno != EINTR)
            break;
        if (w == 0) {
            if (ms_since(t0) >= lim->timeout_ms) {
                state = TIMED_OUT;
                kill(-pid, SIGKILL);
                kill(pid, SIGKILL);
                waitpid(pid, &wstatus, 0);
                reaped = true;
                break;
            }
            struct timespec ts = {0, pause_ns};
            nanosleep(&ts, NULL);
            if (pause_ns < 1000000)
                pause_ns *= 2;
        }
    }
    kill(-pid, SIGKILL); /* anything the child started and left behind */

    qr_status st;
    switch (state) {
    case TIMED_OUT:
        st = qr_fail(err, QR_ETIMEOUT,
                     "extraction took longer than %u ms (ingest.extract_timeout_ms) and was stopped",
                     lim->timeout_ms);
        break;
    case MEMORY:
        st = qr_fail(err, QR_ELIMIT,
                     "extraction used more than %zu MiB (ingest.extract_memory_mb) and was stopped",
                     lim->memory_bytes / MIB);
        break;
    case TOO_BIG:
        st = qr_fail(err, QR_ELIMIT, "the extracted document exceeds %zu bytes (ingest.max_document_bytes)",
                     lim->max_document_bytes);
        break;
    case FAILED: st = qr_fail(err, QR_EIO, "cannot read from the extractor: %s", strerror(read_errno)); break;
    default:
        if (reaped && WIFSIGNALED(wstatus)) {
            int sig = WTERMSIG(wstatus);
            st = qr_fail(err, QR_EINVAL, "the extractor crashed on this document (signal %d, %s)", sig,
                         strsignal(sig));
        } else if (reaped && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 0 && qr_buf_len(&msg) == 0) {
            /* a crash handler (a sanitizer's, say) ended the child before it could answer */
            st = qr_fail(err, QR_EINVAL, "the extractor crashed on this document (exit status %d)",
                         WEXITSTATUS(wstatus));
        } else {
            st = parse_result(qr_buf_str(&msg), qr_buf_len(&msg), out, err);
            if (st == QR_ENOMEM)
                st = qr_fail(err, QR_ELIMIT, "extraction needed more than %zu MiB (ingest.extract_memory_mb)",
                             lim->memory_bytes / MIB);
        }
        break;
    }
    qr_buf_release(&msg);
    return st;
}
