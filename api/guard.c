/*
 * Deadlines for connections, which libmicrohttpd's own timeout cannot give: that one is an idle
 * timeout, reset by every byte, so a client sending one header line every few seconds, or a body a
 * few bytes at a time, holds its connection for ever, and a few hundred such clients hold every
 * connection the server accepts. Each connection is registered when MHD accepts it
 * (MHD_OPTION_NOTIFY_CONNECTION) and is always in one of three phases:
 *   - headers: waiting for a request's whole header block, since the connection opened or since
 *     its previous answer was done; due within server.header_timeout_s;
 *   - body: its body is being read; after server.body_grace_s it must have averaged
 *     server.min_body_rate bytes a second (a body of B bytes may take grace + B / rate seconds);
 *   - busy: authenticated, handled, answered. No deadline here: the handlers bound their own work
 *     and MHD's idle timeout bounds a client that stops reading its answer.
 * A watchdog thread closes a connection past its deadline by shutting its socket down: MHD then
 * sees the stream end on its own thread and closes the connection as if the client had gone (MHD
 * 0.9.75 has no call that closes a connection from another thread). MHD calls the close
 * notification before it closes the descriptor and the notification takes the registry's lock,
 * which the watchdog holds while it shuts a socket down, so it never shuts down a descriptor
 * number that another connection has reused.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "api/api_int.h"

#define WATCH_MAX_SLEEP_NS 500000000ull /* the watchdog looks at least twice a second */
#define NS_PER_S           1000000000ull

enum { PHASE_HEADERS = 0, PHASE_BODY, PHASE_BUSY };

struct api_conn {
    int fd;
    int phase;              /* under the guard's lock */
    uint64_t since_ns;      /* start of the phase; under the guard's lock */
    _Atomic uint64_t bytes; /* body bytes read in the body phase (MHD thread writes, watchdog reads) */
    bool cut;               /* shut down by the watchdog */
    char client[INET6_ADDRSTRLEN];
    api_conn *prev, *next;
};

struct api_guard {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    api_conn *head;
    uint64_t header_ns, grace_ns;
    uint64_t min_rate; /* bytes/s, 0: none */
    api_metrics *metrics;
    bool stop;
    pthread_t thread;
};

/* When c must be closed (UINT64_MAX: never). Guard's lock held. */
static uint64_t deadline_of(const api_guard *g, const api_conn *c)
{
    if (c->phase == PHASE_HEADERS)
        return c->since_ns + g->header_ns;
    if (c->phase != PHASE_BODY || !g->min_rate)
        return UINT64_MAX;
    uint64_t bytes = atomic_load_explicit(&c->bytes, memory_order_relaxed);
    /* the time the bytes so far buy at the minimum rate, without overflowing for 4 GiB bodies */
    uint64_t earned = bytes / g->min_rate * NS_PER_S + bytes % g->min_rate * NS_PER_S / g->min_rate;
    return c->since_ns + g->grace_ns + earned;
}

static void *watch(void *arg)
{
    api_guard *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->stop) {
        uint64_t now = qr_now_ns(), next = now + WATCH_MAX_SLEEP_NS;
        for (api_conn *c = g->head; c; c = c->next) {
            if (c->cut)
                continue;
            uint64_t due = deadline_of(g, c);
            if (due > now) {
                if (due < next)
                    next = due;
                continue;
            }
            /* MHD reads the end of the stream and closes the connection on its own thread */
            shutdown(c->fd, SHUT_RDWR);
            c->cut = true;
            bool headers = c->phase == PHASE_HEADERS;
            qr_log(QR_LOG_DEBUG, "http", "closed a connection from %s: %s", c->client,
                   headers ? "no whole request header within server.header_timeout_s"
                           : "request body slower than server.min_body_rate");
            api_metrics_error(g->metrics, headers ? "header_timeout" : "body_too_slow");
        }
        struct timespec ts = {.tv_sec = (time_t)(next / NS_PER_S), .tv_nsec = (long)(next % NS_PER_S)};
        pthread_cond_timedwait(&g->wake, &g->lock, &ts);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

qr_status api_guard_new(const api_settings *set, api_metrics *m, api_guard **out, char *err)
{
    *out = NULL;
    api_guard *g = calloc(1, sizeof(*g));
    if (!g)
        return qr_fail(err, QR_ENOMEM, "out of memory creating the connection guard");
    g->header_ns = (uint64_t)set->header_timeout_s * NS_PER_S;
    g->grace_ns = (uint64_t)set->body_grace_s * NS_PER_S;
    g->min_rate = set->min_body_rate > 0 ? (uint64_t)set->min_body_rate : 0;
    g->metrics = m;
    pthread_mutex_init(&g->lock, NULL);
    /* deadlines are on qr_now_ns's monotonic clock: so is the watchdog's wait */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->wake, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&g->thread, NULL, watch, g);
    if (rc) {
        pthread_cond_destroy(&g->wake);
        pthread_mutex_destroy(&g->lock);
        free(g);
        return qr_fail(err, QR_ENOMEM, "cannot start the connection watchdog: %s", strerror(rc));
    }
    *out = g;
    return QR_OK;
}

void api_guard_free(api_guard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->lock);
    g->stop = true;
    pthread_cond_signal(&g->wake);
    pthread_mutex_unlock(&g->lock);
    pthread_join(g->thread, NULL);
    /* MHD_stop_daemon notified every close; anything left was never MHD's to close */
    while (g->head) {
        api_conn *c = g->head;
        g->head = c->next;
        free(c);
    }
    pthread_cond_destroy(&g->wake);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

void api_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode code)
{
    api_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        api_conn *c = *socket_context;
        if (!c)
            return;
        pthread_mutex_lock(&g->lock);
        if (c->prev)
            c->prev->next = c->next;
        else
            g->head = c->next;
        if (c->next)
            c->next->prev = c->prev;
        pthread_mutex_unlock(&g->lock);
        free(c);
        *socket_context = NULL;
        return;
    }
    if (code != MHD_CONNECTION_NOTIFY_STARTED)
        return;
    const union MHD_ConnectionInfo *fdi = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!fdi)
        return;
    api_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        /* a connection nobody watches could be held for ever: refuse it instead */
        shutdown(fdi->connect_fd, SHUT_RDWR);
        return;
    }
    c->fd = fdi->connect_fd;
    c->phase = PHASE_HEADERS;
    snprintf(c->client, sizeof(c->client), "-");
    const union MHD_ConnectionInfo *ai = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ai ? ai->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->client, sizeof(c->client));
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->client, sizeof(c->client));
    pthread_mutex_lock(&g->lock);
    c->since_ns = qr_now_ns();
    c->next = g->head;
    if (g->head)
        g->head->prev = c;
    g->head = c;
    pthread_mutex_unlock(&g->lock);
    *socket_context = c;
}

api_conn *api_guard_conn(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void set_phase(api_guard *g, api_conn *c, int phase)
{
    if (!g || !c)
        return;
    pthread_mutex_lock(&g->lock);
    c->phase = phase;
    c->since_ns = qr_now_ns();
    atomic_store_explicit(&c->bytes, 0, memory_order_relaxed);
    pthread_mutex_unlock(&g->lock);
}

void api_guard_busy(api_guard *g, api_conn *c)
{
    set_phase(g, c, PHASE_BUSY);
}

void api_guard_body(api_guard *g, api_conn *c)
{
    set_phase(g, c, PHASE_BODY);
}

void api_guard_body_bytes(api_conn *c, size_t n)
{
    if (c)
        atomic_fetch_add_explicit(&c->bytes, n, memory_order_relaxed);
}

void api_guard_idle(api_guard *g, api_conn *c)
{
    set_phase(g, c, PHASE_HEADERS);
}
