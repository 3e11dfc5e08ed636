/*
 * bench_http_guard: what abusive clients cost a running `quarry serve`, for bench/README.md. It
 * speaks raw HTTP over sockets (no quarry code), so the same binary measures a server built from
 * any commit; bench/http/guard.sh starts the server and runs every scenario.
 *
 *   bench_http_guard PORT PID preauth [CONNS [CONTENT_LENGTH [PATH]]]
 *   bench_http_guard PORT PID slow-one [INTERVAL_S [MAX_S]]
 *   bench_http_guard PORT PID slow-many [CONNS [INTERVAL_S [HOLD_S]]]
 *
 * preauth    CONNS connections (default 20) without credentials each send the headers of a POST
 *            with CONTENT_LENGTH (default 33554432) and then all but the last byte of the body
 *            as fast as the server reads, and hold. Prints the server's VmRSS (from
 *            /proc/PID/status) before and while they hold, and the answers they got.
 * slow-one   one connection sends a request line and then one header line every INTERVAL_S
 *            seconds (default 1) without ever ending the header block; prints how long the
 *            server kept it open (at most MAX_S, default 60).
 * slow-many  CONNS connections (default 250) from 127.0.0.2 do what slow-one does with a line
 *            every INTERVAL_S seconds (default 10) for HOLD_S seconds (default 15); meanwhile a
 *            normal client asks GET /healthz from 127.0.0.1 and from 127.0.0.2. Prints how many
 *            slow connections the server held, and whether and how fast the normal client was
 *            served.
 *
 * Each scenario prints one Markdown table row. It never fails on timing.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int g_port;
static long g_pid;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The server's resident set in MiB (VmRSS), or -1. */
static double rss_mib(void)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/status", g_pid);
    FILE *f = fopen(path, "r");
    double kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = atof(line + 6);
    fclose(f);
    return kib < 0 ? -1 : kib / 1024.0;
}

/* A connected socket from source address `from` (NULL: any), non-blocking; -1 on failure. */
static int dial(const char *from)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (from) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        inet_pton(AF_INET, from, &src.sin_addr);
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
            close(fd);
            return -1;
        }
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static bool send_all(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 1000);
            continue;
        }
        if (k <= 0)
            return false;
        s += k;
        n -= (size_t)k;
    }
    return true;
}

/* True once the server closed fd (EOF or reset); bytes it sent are appended to buf. */
static bool server_closed(int fd, char *buf, size_t cap, size_t *len)
{
    char tmp[4096];
    for (;;) {
        ssize_t k = recv(fd, tmp, sizeof(tmp), 0);
        if (k > 0) {
            size_t room = cap - 1 - *len;
            size_t c = (size_t)k < room ? (size_t)k : room;
            memcpy(buf + *len, tmp, c);
            *len += c;
            buf[*len] = '\0';
            continue;
        }
        if (k == 0)
            return true;
        return errno != EAGAIN && errno != EINTR;
    }
}

/* GET /healthz from `from`: the status (0: no answer within timeout_s, -1: refused or closed), and
 * the seconds it took. */
static int healthz(const char *from, double timeout_s, double *secs)
{
    double t0 = now_s();
    int fd = dial(from), status = -1;
    char buf[4096] = "";
    size_t len = 0;
    if (fd >= 0 && send_all(fd, "GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")) {
        status = 0;
        while (now_s() - t0 < timeout_s) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            poll(&p, 1, 100);
            if (server_closed(fd, buf, sizeof(buf), &len) || strstr(buf, "\r\n\r\n"))
                break;
        }
        if (strncmp(buf, "HTTP/1.1 ", 9) == 0)
            status = atoi(buf + 9);
        else if (len == 0 && now_s() - t0 < timeout_s)
            status = -1;
    }
    if (fd >= 0)
        close(fd);
    *secs = now_s() - t0;
    return status;
}

static int preauth(int conns, long long length, const char *path)
{
    static char chunk[1 << 16];
    memset(chunk, 'x', sizeof(chunk));
    int *fd = calloc((size_t)conns, sizeof(int));
    long long *sent = calloc((size_t)conns, sizeof(long long));
    char(*answer)[256] = calloc((size_t)conns, sizeof(*answer));
    size_t *alen = calloc((size_t)conns, sizeof(size_t));
    bool *closed = calloc((size_t)conns, sizeof(bool));
    if (!fd || !sent || !answer || !alen || !closed)
        return 1;
    double before = rss_mib();
    char head[512];
    snprintf(head, sizeof(head),
             "POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
             "Content-Length: %lld\r\n\r\n",
             path, length);
    for (int i = 0; i < conns; i++)
        if ((fd[i] = dial(NULL)) < 0 || !send_all(fd[i], head))
            closed[i] = true;
    double t0 = now_s();
    /* send until every body is one byte short or the server stopped reading it */
    while (now_s() - t0 < 60) {
        bool busy = false;
        struct pollfd *p = calloc((size_t)conns, sizeof(*p));
        for (int i = 0; i < conns; i++) {
            p[i].fd = closed[i] ? -1 : fd[i];
            p[i].events = POLLIN | (sent[i] < length - 1 ? POLLOUT : 0);
            busy = busy || (!closed[i] && sent[i] < length - 1 && !alen[i]);
        }
        if (!busy) {
            free(p);
            break;
        }
        poll(p, (nfds_t)conns, 200);
        for (int i = 0; i < conns; i++) {
            if (closed[i])
                continue;
            if (p[i].revents & (POLLIN | POLLHUP | POLLERR))
                closed[i] = server_closed(fd[i], answer[i], sizeof(answer[i]), &alen[i]);
            if (!closed[i] && (p[i].revents & POLLOUT) && sent[i] < length - 1) {
                long long want = length - 1 - sent[i];
                ssize_t k = send(fd[i], chunk, want < (long long)sizeof(chunk) ? (size_t)want : sizeof(chunk),
                                 MSG_NOSIGNAL);
                if (k > 0)
                    sent[i] += k;
                else if (errno != EAGAIN)
                    closed[i] = true;
            }
        }
        free(p);
    }
    double fill = now_s() - t0;
    sleep(2); /* let the server settle while the clients hold */
    double during = rss_mib();
    int got401 = 0, got413 = 0, other = 0, silent = 0, nclosed = 0;
    long long total = 0;
    for (int i = 0; i < conns; i++) {
        /* a send the server refused stopped the sending, not the reading: its answer may be there */
        closed[i] = server_closed(fd[i], answer[i], sizeof(answer[i]), &alen[i]) || closed[i];
        int st = strncmp(answer[i], "HTTP/1.1 ", 9) == 0 ? atoi(answer[i] + 9) : 0;
        got401 += st == 401;
        got413 += st == 413;
        other += st && st != 401 && st != 413;
        silent += !st;
        nclosed += closed[i];
        total += sent[i];
    }
    printf(
        "| preauth %s | %d | %lld | %.0f | %.0f | %+.0f | %.1f | %d x 401, %d x 413, %d other, %d none; %d "
        "closed by the server |\n",
        path, conns, total >> 20, before, during, during - before, fill, got401, got413, other, silent,
        nclosed);
    for (int i = 0; i < conns; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    free(fd);
    free(sent);
    free(answer);
    free(alen);
    free(closed);
    return 0;
}

/* Sends one more header line to each open connection; marks those the server closed. */
static int trickle(int *fd, bool *closed, int n, int line)
{
    char h[64], buf[256];
    int open = 0;
    snprintf(h, sizeof(h), "X-Slow-%d: 1\r\n", line);
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        if (!closed[i] && (server_closed(fd[i], buf, sizeof(buf), &len) || !send_all(fd[i], h)))
            closed[i] = true;
        open += !closed[i];
    }
    return open;
}

static int slow_one(double interval, double max_s)
{
    int fd = dial(NULL);
    bool closed = fd < 0 || !send_all(fd, "GET /healthz HTTP/1.1\r\nHost: bench\r\n");
    double t0 = now_s(), next = t0 + interval;
    int line = 0;
    while (!closed && now_s() - t0 < max_s) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        double wait = next - now_s();
        poll(&p, 1, wait > 0 ? (int)(wait * 1000) : 0);
        char buf[256];
        size_t len = 0;
        if (p.revents && server_closed(fd, buf, sizeof(buf), &len))
            closed = true;
        else if (now_s() >= next) {
            closed = trickle(&fd, &closed, 1, line++) == 0;
            next += interval;
        }
    }
    double lived = now_s() - t0;
    if (closed)
        printf("| slow-one, a header line every %.0f s | closed by the server after %.1f s (%d lines) |\n",
               interval, lived, line);
    else
        printf("| slow-one, a header line every %.0f s | still open after %.0f s (%d lines) |\n", interval,
               lived, line);
    if (fd >= 0)
        close(fd);
    return 0;
}

static int slow_many(int conns, double interval, double hold)
{
    int *fd = calloc((size_t)conns, sizeof(int));
    bool *closed = calloc((size_t)conns, sizeof(bool));
    if (!fd || !closed)
        return 1;
    for (int i = 0; i < conns; i++)
        if ((fd[i] = dial("127.0.0.2")) < 0 || !send_all(fd[i], "GET /healthz HTTP/1.1\r\nHost: bench\r\n"))
            closed[i] = true;
    double t0 = now_s();
    sleep(1);
    int line = 0, held = trickle(fd, closed, conns, line++);
    double other_s, same_s;
    int other = healthz("127.0.0.1", 5, &other_s);
    int same = healthz("127.0.0.2", 5, &same_s);
    double next = now_s() + interval;
    while (now_s() - t0 < hold) {
        double wait = next - now_s();
        if (wait > 0.2)
            wait = 0.2;
        if (wait > 0)
            usleep((useconds_t)(wait * 1e6));
        if (now_s() >= next) {
            trickle(fd, closed, conns, line++);
            next += interval;
        }
    }
    int left = trickle(fd, closed, conns, line++);
    double late_s;
    int late = healthz("127.0.0.1", 5, &late_s);
    printf("| slow-many: %d from 127.0.0.2, a line every %.0f s | %d | GET /healthz from 127.0.0.1: %d in "
           "%.2f s; "
           "from 127.0.0.2: %d in %.2f s | %d after %.0f s; /healthz from 127.0.0.1 then: %d in %.2f s |\n",
           conns, interval, held, other, other_s, same, same_s, left, now_s() - t0, late, late_s);
    for (int i = 0; i < conns; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    free(fd);
    free(closed);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_http_guard PORT PID preauth|slow-one|slow-many [ARGS...]\n");
        return 2;
    }
    g_port = atoi(argv[1]);
    g_pid = atol(argv[2]);
    const char *what = argv[3];
    if (strcmp(what, "preauth") == 0)
        return preauth(argc > 4 ? atoi(argv[4]) : 20, argc > 5 ? atoll(argv[5]) : 33554432LL,
                       argc > 6 ? argv[6] : "/v1/documents");
    if (strcmp(what, "slow-one") == 0)
        return slow_one(argc > 4 ? atof(argv[4]) : 1, argc > 5 ? atof(argv[5]) : 60);
    if (strcmp(what, "slow-many") == 0)
        return slow_many(argc > 4 ? atoi(argv[4]) : 250, argc > 5 ? atof(argv[5]) : 10,
                         argc > 6 ? atof(argv[6]) : 15);
    fprintf(stderr, "bench_http_guard: unknown scenario '%s'\n", what);
    return 2;
}
