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
 * fork() in a threaded process: the child only runs the extractor and _exit()s. glibc keeps
 * malloc usable in the child, libxml2 is initialised before the fork, and anything the child
 * might still block on is covered by the deadline.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libxml/xmlmemory.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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
    size_t parent_vm, parent_rss;
    proc_sizes(getpid(), &parent_vm, &parent_rss);
    pid_t self = getpid();
    pid_t pid = fork();
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
        if (lim->memory_bytes && rss > parent_rss + lim->memory_bytes)
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
    for (;;) {
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
