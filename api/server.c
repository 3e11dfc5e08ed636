/*
 * The HTTP server: libmicrohttpd's daemon with its own polling threads, the worker pool that runs
 * route handlers, and the life of one request from its first header to the access log line. The
 * MHD threads only read, route and write; anything that may block (LDAP, the store, the inference
 * backend) runs on a worker while the connection is suspended, so that it never stalls other
 * connections. A request goes to a worker twice at most: once its headers are in, to be
 * authenticated (credentials are in the headers: nobody without them makes the server read, let
 * alone buffer, a byte of a body; they get their 401 and the body is discarded unread), and once
 * its body is in, to be handled; a request without a body is handled by the first worker at once.
 * Limits are enforced here before anything is parsed: unknown routes, the body size of the route
 * (413, from Content-Length at once, else while reading), the connection count, per address and
 * in all, the deadlines of guard.c (a whole header block within server.header_timeout_s, a body
 * at server.min_body_rate), MHD's idle timeout, and the worker queue (503 when full). OPTIONS
 * requests (CORS preflights, cors.c) are answered at their headers, on the MHD thread: browsers send
 * no credentials with them, so they cost no worker, no authentication and no share.
 *
 * Fairness and clients that leave. Authentication runs on the worker (it may ask LDAP), so who a
 * request belongs to is known only there: right after it, a user (or API key) with
 * server.user_share requests already on workers gets 429 with Retry-After at once, so that one
 * user's slow searches can hold at most that many workers and never the others' share. MHD does
 * not watch a suspended connection, so a client that hangs up while its request waits for a
 * worker or searches goes unnoticed by MHD until the answer is written: the worker polls the
 * socket instead (POLLRDHUP, no wait) when it takes the request -- a request whose client left
 * never runs -- and, through the request's cancellation token, every API_GONE_PROBE_MS while its
 * search runs, which then stops. The same token carries the search's deadline
 * (retrieval.timeout_ms from the hand-over to a worker, so time spent queued counts).
 *
 * Graceful shutdown: stop accepting (an accept policy that refuses every connection once stopping:
 * MHD_quiesce_daemon races with MHD's own epoll workers in libmicrohttpd 0.9.75 and can abort
 * the process), let requests in flight finish until the grace deadline,
 * then cancel the rest, drain the worker pool (every worker resumes what it suspended) and only
 * then stop the daemon, because stopping it with suspended connections is undefined behaviour.
 */
#define _GNU_SOURCE /* asprintf, memmem, strptime, timegm, explicit_bzero */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "api/api_int.h"

#define STORES_MAX   64
#define TLS_FILE_MAX (1u << 20)

void api_random_hex(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[64];
    if (n > sizeof(raw))
        n = sizeof(raw);
    size_t got = 0;
    while (got < n) {
        ssize_t k = getrandom(raw + got, n - got, 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            /* getrandom cannot fail on Linux >= 3.17 short of EINTR; fall back to the clock */
            uint64_t t = qr_now_ns();
            for (; got < n; got++)
                raw[got] = (unsigned char)(t >> (8 * (got % 8)));
            break;
        }
        got += (size_t)k;
    }
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * n] = '\0';
}

void api_sha256_hex(const char *text, size_t len, char out[65])
{
    ingest_content_hash(text, len, out);
}

/* ---- settings --------------------------------------------------------------------------------- */

static void read_settings(const qr_config *cfg, api_settings *s)
{
    const qr_settings *set = qr_config_settings(cfg);
    s->threads = (int)set->server_threads;
    s->workers = (int)set->server_workers;
    s->queue_max = (int)set->server_queue_max;
    s->max_connections = (int)set->server_max_connections;
    s->per_ip_connections = (int)set->server_per_ip_connections;
    s->connection_timeout_s = (int)set->server_connection_timeout_s;
    s->json_max_depth = (int)set->server_json_max_depth;
    s->shutdown_grace_s = (int)set->server_shutdown_grace_s;
    s->chat_k = (int)set->server_chat_k;
    s->header_timeout_s = (int)set->server_header_timeout_s;
    s->body_grace_s = (int)set->server_body_grace_s;
    s->min_body_rate = set->server_min_body_rate;
    s->user_share = (int)set->server_user_share;
    if (s->user_share == 0)
        s->user_share = s->workers / 4 > 2 ? s->workers / 4 : 2;
    s->max_body_bytes = (size_t)set->server_max_body_bytes;
    s->max_json_bytes = (size_t)set->server_max_json_bytes;
    s->job_threshold_bytes = (size_t)set->server_job_threshold_bytes;
    s->wait_for_ms = set->index_wait_for_ms;
}

/* Parses "host:port" or "[v6]:port" into srv->addr. */
static qr_status parse_listen(api_server *srv, const char *listen, char *err)
{
    char host[256];
    const char *port;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':' || (size_t)(close - listen - 1) >= sizeof(host))
            return qr_fail(err, QR_EINVAL, "server.listen: '%s' is not [address]:port", listen);
        memcpy(host, listen + 1, (size_t)(close - listen - 1));
        host[close - listen - 1] = '\0';
        port = close + 2;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof(host))
            return qr_fail(err, QR_EINVAL, "server.listen: '%s' is not host:port", listen);
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
        port = colon + 1;
    }
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (!*port || *end || errno || p < 0 || p > 65535)
        return qr_fail(err, QR_EINVAL, "server.listen: '%s' has no valid port (0-65535)", listen);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res)
        return qr_fail(err, QR_EINVAL, "server.listen: cannot resolve '%s': %s", host, gai_strerror(rc));
    memcpy(&srv->addr, res->ai_addr, res->ai_addrlen);
    srv->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return QR_OK;
}

/* ---- store handles ---------------------------------------------------------------------------- */

store *api_store_acquire(api_server *srv)
{
    return api_service_handle_store(api_service_acquire(srv->svc));
}

void api_store_release(api_server *srv, store *s)
{
    api_service_release_store(srv->svc, s);
}

/* ---- the indexes ------------------------------------------------------------------------------ */

qr_status api_index_sync(api_server *srv, bool force, index_sync_report *rep, char *err)
{
    if (force)
        return index_maintainer_rebuild(api_service_maintainer(srv->svc), rep, err);
    if (rep)
        memset(rep, 0, sizeof(*rep));
    int64_t counter = 0;
    store *s = api_store_acquire(srv);
    qr_status st = store_change_counter(s, &counter, err);
    api_store_release(srv, s);
    if (st)
        return st;
    return index_maintainer_wait(api_service_maintainer(srv->svc), counter, (uint64_t)srv->set.wait_for_ms,
                                 err);
}

qr_status api_refresh_arg(api_req *r, bool *wait_for, char *err)
{
    bool bad = false;
    char *v = api_query_arg(r, "refresh", &bad);
    *wait_for = false;
    qr_status st = QR_OK;
    if (bad)
        st = qr_fail(err, QR_EINVAL, "refresh: not valid UTF-8");
    else if (v && (strcmp(v, "wait_for") == 0 || strcmp(v, "true") == 0))
        *wait_for = true;
    else if (v && strcmp(v, "false") != 0)
        st = qr_fail(err, QR_EINVAL, "refresh must be wait_for, true or false");
    free(v);
    return st;
}

qr_status api_index_written(api_server *srv, bool wait_for, char *err)
{
    if (!wait_for) {
        index_maintainer_signal(api_service_maintainer(srv->svc));
        return QR_OK;
    }
    return api_index_sync(srv, false, NULL, err);
}

/* ---- lifecycle -------------------------------------------------------------------------------- */

qr_status api_server_new(const qr_config *cfg, api_server **out, char *err)
{
    *out = NULL;
    qr_status st = QR_OK;
    api_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return qr_fail(err, QR_ENOMEM, "out of memory creating the server");
    srv->cfg = cfg;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->idle, NULL);
    pthread_mutex_init(&srv->access_lock, NULL);
    pthread_mutex_init(&srv->ingest_lock, NULL);
    pthread_mutex_init(&srv->share_lock, NULL);
    pthread_mutex_init(&srv->reload_lock, NULL);
    pthread_mutex_init(&srv->probe_lock, NULL);
    atomic_init(&srv->cancel_all, false);
    atomic_init(&srv->infer, NULL);
    atomic_init(&srv->cors, NULL);
    if (!(srv->live = qr_config_clone(cfg))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory creating the server");
        goto out;
    }
    read_settings(cfg, &srv->set);
    if (!(srv->shares = calloc((size_t)srv->set.workers, sizeof(*srv->shares)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory creating the server");
        goto out;
    }
    if ((st = api_models_parse(qr_config_settings(cfg)->inference_models, srv->models, &srv->nmodels, err)))
        goto out;

    api_cors *cors = NULL;
    st = parse_listen(srv, qr_config_settings(cfg)->server_listen, err);
    if (!st)
        st = api_cors_new(qr_config_settings(cfg)->server_cors_origins, &cors, err);
    atomic_store(&srv->cors, cors);
    if (st || (st = api_ui_new(cfg, &srv->ui, err)))
        goto out;
    const char *cert = qr_config_settings(cfg)->server_tls_cert,
               *key = qr_config_settings(cfg)->server_tls_key;
    if (*cert || *key) {
        if (!*cert || !*key) {
            st = qr_fail(err, QR_EINVAL, "server.tls_cert and server.tls_key must be set together");
            goto out;
        }
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            st = qr_fail(err, QR_EINVAL, "server.tls_cert: this libmicrohttpd was built without TLS");
            goto out;
        }
        char e2[QR_ERR_LEN];
        if ((st = qr_read_file(cert, TLS_FILE_MAX, &srv->tls_cert, NULL, e2))) {
            st = qr_fail(err, st, "server.tls_cert: %s", e2);
            goto out;
        }
        if ((st = qr_read_file(key, TLS_FILE_MAX, &srv->tls_key, NULL, e2))) {
            st = qr_fail(err, st, "server.tls_key: %s", e2);
            goto out;
        }
    }

    /* after auth_new, which refuses issuers that are not https (or loopback http) */
    infer_client *infer = NULL;
    if ((st = auth_new(cfg, &srv->auth, err)) || (st = api_openapi_json(cfg, &srv->openapi, err)))
        goto out;
    st = infer_client_new(cfg, &infer, err);
    atomic_store(&srv->infer, infer);
    if (st || (st = ingest_session_open(cfg, &srv->ingest, err)) ||
        (st = api_audit_open(cfg, &srv->audit, err)))
        goto out;
    if (!(srv->metrics = api_metrics_new())) {
        st = qr_fail(err, QR_ENOMEM, "out of memory creating the metrics");
        goto out;
    }
    /* the search service: one store and search handle per worker and one for the job runner
     * (each worker holds at most one at a time), the query embedder, and the index maintainer,
     * which opens (or builds) the indexes in the background */
    store_set_memory_limit((int64_t)qr_config_settings(cfg)->data_cache_mib << 20);
    store_set_mmap((int64_t)qr_config_settings(cfg)->data_mmap_mib << 20);
    api_service_opts so;
    api_service_opts_default(&so);
    so.background = true;
    so.handles = (size_t)srv->set.workers + 1 < STORES_MAX ? (size_t)srv->set.workers + 1 : STORES_MAX;
    if ((st = api_service_open(cfg, &so, &srv->svc, err)))
        goto out;

    const char *access = qr_config_settings(cfg)->server_access_log;
    if (*access) {
        if (!(srv->access_log = fopen(access, "a"))) {
            st = qr_fail(err, QR_EIO, "server.access_log: cannot open '%s': %s", access, strerror(errno));
            goto out;
        }
        setvbuf(srv->access_log, NULL, _IOLBF, 0);
    }
    if ((st = api_jobs_new(srv, &srv->jobs, err)))
        goto out;
    /* a short wait lets a small store start with its indexes warm; a large one starts at once,
     * with FTS5 ranking until they are built */
    int64_t startup_wait = qr_config_settings(cfg)->index_startup_wait_ms;
    if (startup_wait > 0) {
        char e2[QR_ERR_LEN];
        int64_t counter = 0;
        store *s = api_store_acquire(srv);
        qr_status cst = store_change_counter(s, &counter, e2);
        api_store_release(srv, s);
        if (!cst && (cst = index_maintainer_wait(api_service_maintainer(srv->svc), counter,
                                                 (uint64_t)startup_wait, e2)))
            qr_log(QR_LOG_WARN, "index", "serving before the indexes are ready (FTS5 ranks meanwhile): %s",
                   e2);
    }
out:
    if (st) {
        api_server_free(srv);
        return st;
    }
    *out = srv;
    return QR_OK;
}

/* libmicrohttpd's own messages (MHD thread or the caller of MHD_start_daemon). */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    qr_log(QR_LOG_DEBUG, "http", "libmicrohttpd: %s", line);
}

/* Keeps the URL as the client sent it (MHD thread): the router decodes path segments itself, so
 * that an encoded slash stays inside an id and an encoded NUL is refused instead of cutting the
 * string short. */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *uri)
{
    (void)cls;
    (void)c;
    return strlen(uri);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls);
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe);

/* MHD's accept policy: every connection is refused (closed at once) once shutdown began. */
static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addr;
    (void)addrlen;
    api_server *srv = cls;
    pthread_mutex_lock(&srv->lock);
    bool stopping = srv->stopping;
    pthread_mutex_unlock(&srv->lock);
    return stopping ? MHD_NO : MHD_YES;
}

qr_status api_server_start(api_server *srv, char *err)
{
    if (srv->running)
        return qr_fail(err, QR_EINVAL, "the server is already running");
    qr_status st = QR_OK;
    char perr[QR_ERR_LEN];
    if (!(srv->pool = qr_pool_new(srv->set.workers, (size_t)srv->set.queue_max, perr)))
        return qr_fail(err, QR_ENOMEM, "cannot start the worker pool: %s", perr);
    if ((st = api_jobs_start(srv->jobs, err)) ||
        (st = api_guard_new(&srv->set, srv->metrics, &srv->guard, err)))
        goto fail;

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES)
        flags |= MHD_USE_EPOLL;
    if (srv->addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (srv->tls_cert)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem opts[16];
    size_t n = 0;
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &srv->addr};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, srv->set.max_connections, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, srv->set.connection_timeout_s, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, srv};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)api_guard_notify, srv->guard};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)keep_escaped, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL};
    /* Headers and the read buffer of one connection: 64 KiB holds any sane request line and
     * header block; larger ones get 431 from MHD. */
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, 64 * 1024, NULL};
    if (srv->set.threads > 1)
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, srv->set.threads, NULL};
    if (srv->set.per_ip_connections > 0)
        opts[n++] =
            (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT, srv->set.per_ip_connections, NULL};
    if (srv->tls_cert) {
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, srv->tls_cert};
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, srv->tls_key};
    }
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

    srv->daemon = MHD_start_daemon(flags, 0, accept_policy, srv, on_request, srv, MHD_OPTION_ARRAY, opts,
                                   MHD_OPTION_END);
    if (!srv->daemon) {
        char host[INET6_ADDRSTRLEN] = "?";
        const void *a = srv->addr.ss_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)&srv->addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)&srv->addr)->sin_addr;
        inet_ntop(srv->addr.ss_family, a, host, sizeof(host));
        st = qr_fail(err, QR_EIO,
                     "cannot listen on '%s' (%s): address in use, not local, or TLS files invalid",
                     qr_config_settings(srv->cfg)->server_listen, host);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : 0;
    char host[INET6_ADDRSTRLEN] = "127.0.0.1";
    if (srv->addr.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&srv->addr)->sin6_addr, host, sizeof(host));
        snprintf(srv->url, sizeof(srv->url), "%s://[%s]:%d", srv->tls_cert ? "https" : "http", host,
                 srv->port);
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&srv->addr)->sin_addr, host, sizeof(host));
        snprintf(srv->url, sizeof(srv->url), "%s://%s:%d", srv->tls_cert ? "https" : "http", host, srv->port);
    }
    srv->started_ms = qr_wall_ms();
    srv->running = true;
    qr_log(QR_LOG_INFO, "http", "listening on %s (%d I/O threads, %d workers, body limit %zu bytes)",
           srv->url, srv->set.threads, srv->set.workers, srv->set.max_body_bytes);
    return QR_OK;
fail:
    api_jobs_stop(srv->jobs);
    api_guard_free(srv->guard);
    srv->guard = NULL;
    qr_pool_free(srv->pool);
    srv->pool = NULL;
    return st;
}

int api_server_port(const api_server *srv)
{
    return srv ? srv->port : 0;
}

const char *api_server_url(const api_server *srv)
{
    return srv ? srv->url : "";
}

static void wait_until(api_server *srv, bool (*done)(api_server *), uint64_t deadline_ns)
{
    pthread_mutex_lock(&srv->lock);
    while (!done(srv)) {
        uint64_t now = qr_now_ns();
        if (now >= deadline_ns)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t wait = deadline_ns - now;
        if (wait > 100000000u)
            wait = 100000000u; /* re-check at least every 100 ms */
        ts.tv_nsec += (long)(wait % 1000000000u);
        ts.tv_sec += (time_t)(wait / 1000000000u) + ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&srv->idle, &srv->lock, &ts);
    }
    pthread_mutex_unlock(&srv->lock);
}

static bool no_requests(api_server *srv)
{
    return srv->in_flight == 0;
}

static bool none_suspended(api_server *srv)
{
    /* may dip below zero for a moment: a resume can be counted before its suspension */
    return srv->suspended <= 0;
}

int api_server_stop(api_server *srv, int grace_s)
{
    if (!srv || !srv->running)
        return 0;
    if (grace_s < 0)
        grace_s = srv->set.shutdown_grace_s;
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    int waiting = srv->in_flight;
    pthread_mutex_unlock(&srv->lock);
    qr_log(QR_LOG_INFO, "http", "shutting down: %d requests in flight, up to %d s to finish", waiting,
           grace_s);

    /* No new connections (accept_policy refuses them now); the ones open finish what they
     * started. */
    wait_until(srv, no_requests, qr_now_ns() + (uint64_t)grace_s * 1000000000u);

    int cancelled = 0;
    pthread_mutex_lock(&srv->lock);
    atomic_store(&srv->cancel_all, true);
    for (api_req *r = srv->active; r; r = r->next) {
        pthread_mutex_lock(&r->lock);
        if (!r->queued || r->is_stream) {
            qr_cancel_cancel(&r->cancel);
            pthread_cond_broadcast(&r->stream.space);
            cancelled++;
        }
        pthread_mutex_unlock(&r->lock);
    }
    pthread_mutex_unlock(&srv->lock);
    if (cancelled)
        qr_log(QR_LOG_WARN, "http", "shutdown: cancelled %d requests still running after %d s", cancelled,
               grace_s);

    api_jobs_stop(srv->jobs);
    /* Every task runs to its end and resumes the connection it suspended. */
    qr_pool_free(srv->pool);
    srv->pool = NULL;
    wait_until(srv, none_suspended, qr_now_ns() + 5000000000u);
    /* Give the MHD threads a moment to write the answers of the requests just finished. */
    wait_until(srv, no_requests, qr_now_ns() + 1000000000u);
    MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    /* after the daemon: MHD_stop_daemon notifies the guard of every connection it closes */
    api_guard_free(srv->guard);
    srv->guard = NULL;
    srv->running = false;
    qr_log(QR_LOG_INFO, "http", "stopped");
    return cancelled;
}

void api_server_free(api_server *srv)
{
    if (!srv)
        return;
    if (srv->running)
        api_server_stop(srv, 0);
    api_jobs_free(srv->jobs);
    api_service_close(srv->svc);
    ingest_session_close(srv->ingest);
    infer_client_free(atomic_load(&srv->infer));
    for (size_t i = 0; i < srv->nretired; i++) {
        infer_client_free(srv->retired_infer[i]);
        api_cors_free(srv->retired_cors[i]);
    }
    qr_config_free(srv->live);
    auth_free(srv->auth);
    api_audit_close(srv->audit);
    api_metrics_free(srv->metrics);
    if (srv->access_log)
        fclose(srv->access_log);
    free(srv->tls_cert);
    free(srv->tls_key);
    api_cors_free(atomic_load(&srv->cors));
    api_ui_free(srv->ui);
    free(srv->openapi);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->idle);
    pthread_mutex_destroy(&srv->access_lock);
    pthread_mutex_destroy(&srv->ingest_lock);
    pthread_mutex_destroy(&srv->share_lock);
    pthread_mutex_destroy(&srv->reload_lock);
    pthread_mutex_destroy(&srv->probe_lock);
    free(srv->shares);
    free(srv);
}

/* ---- reload (SIGHUP) -------------------------------------------------------------------------- */

/* Reopens the three logs; each failure is logged and the others still reopen. */
static void reopen_logs(api_server *srv)
{
    char e2[QR_ERR_LEN];
    if (qr_log_reopen(e2))
        qr_log(QR_LOG_ERROR, "reload", "log.file: %s", e2);
    if (srv->access_log) {
        pthread_mutex_lock(&srv->access_lock);
        fflush(srv->access_log);
        qr_status st =
            qr_reopen_append(fileno(srv->access_log), qr_config_settings(srv->cfg)->server_access_log, e2);
        pthread_mutex_unlock(&srv->access_lock);
        if (st)
            qr_log(QR_LOG_ERROR, "reload", "server.access_log: %s", e2);
    }
    if (api_audit_reopen(srv->audit, e2))
        qr_log(QR_LOG_ERROR, "reload", "server.audit_log: %s", e2);
}

qr_status api_server_reload(api_server *srv, const qr_config *loaded, char *err)
{
    qr_status st = QR_OK;
    qr_config *next = NULL;
    infer_client *infer = NULL;
    api_cors *cors = NULL;
    qr_buf changed, restart;
    qr_buf_init(&changed, 64 << 10);
    qr_buf_init(&restart, 64 << 10);
    pthread_mutex_lock(&srv->reload_lock);
    reopen_logs(srv);
    if (!loaded) {
        st = qr_fail(err, QR_EINVAL, "no configuration to apply");
        goto out;
    }
    if (!(next = qr_config_clone(srv->live)) || qr_config_reload(next, loaded, &changed, &restart)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory reloading the configuration");
        goto out;
    }
    /* everything that can refuse a value is built before anything changes */
    const qr_settings *now = qr_config_settings(srv->live), *set = qr_config_settings(next);
    bool cors_changed = strcmp(now->server_cors_origins, set->server_cors_origins) != 0;
    /* `changed` names reloadable keys only, and every reloadable inference.* key is the client's */
    bool infer_changed = strstr(qr_buf_str(&changed), "inference.") != NULL;
    if ((cors_changed || infer_changed) && srv->nretired == API_RELOADS_KEPT) {
        st = qr_fail(err, QR_ELIMIT,
                     "%d reloads replaced the backend client or CORS origins; restart to apply more",
                     API_RELOADS_KEPT);
        goto out;
    }
    char e2[QR_ERR_LEN];
    qr_log_level level;
    if ((st = qr_log_level_parse(set->log_level, &level, e2))) {
        st = qr_fail(err, st, "log.level: %s", e2);
        goto out;
    }
    if (cors_changed && (st = api_cors_new(set->server_cors_origins, &cors, err)))
        goto out;
    if (infer_changed && (st = infer_client_new(next, &infer, err)))
        goto out;
    /* the last check, and the first change: the logger takes all of it or nothing */
    if ((st = qr_log_configure(level, strcmp(set->log_format, "json") == 0 ? QR_LOG_JSON : QR_LOG_TEXT,
                               set->log_components, e2))) {
        st = qr_fail(err, st, "log.components: %s", e2);
        goto out;
    }

    /* apply: nothing below fails */
    auth_set_rate_limits(srv->auth, (int)set->auth_rate_limit_user, (int)set->auth_rate_limit_addr,
                         set->auth_rate_limit_window_s);
    if (cors || infer) {
        srv->retired_cors[srv->nretired] = cors ? atomic_exchange(&srv->cors, cors) : NULL;
        srv->retired_infer[srv->nretired] = infer ? atomic_exchange(&srv->infer, infer) : NULL;
        srv->nretired++;
        cors = NULL;
        infer = NULL;
    }
    qr_config_free(srv->live);
    srv->live = next;
    next = NULL;
    srv->reloads++;
out:
    if (st)
        srv->reload_failures++;
    pthread_mutex_unlock(&srv->reload_lock);
    if (!st) {
        const char *restart_list = qr_buf_len(&restart) ? qr_buf_str(&restart) : NULL;
        if (restart_list) {
            /* one line per key, the form operators grep for */
            char *list = strdup(restart_list);
            for (char *save = NULL, *k = list ? strtok_r(list, ", ", &save) : NULL; k;
                 k = strtok_r(NULL, ", ", &save))
                qr_log(QR_LOG_WARN, "reload", "%s changed: needs restart (the old value stays in force)", k);
            free(list);
        }
        qr_log(QR_LOG_INFO, "reload", "configuration reloaded: %s%s%s",
               qr_buf_len(&changed) ? "applied " : "nothing to apply",
               qr_buf_len(&changed) ? qr_buf_str(&changed) : "",
               restart_list ? "; keys that need a restart changed (see above)" : "");
    }
    infer_client_free(infer);
    api_cors_free(cors);
    qr_config_free(next);
    qr_buf_release(&changed);
    qr_buf_release(&restart);
    return st;
}

/* ---- requests --------------------------------------------------------------------------------- */

void api_req_ref(api_req *r)
{
    pthread_mutex_lock(&r->lock);
    r->refs++;
    pthread_mutex_unlock(&r->lock);
}

void api_req_unref(api_req *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    int left = --r->refs;
    pthread_mutex_unlock(&r->lock);
    if (left > 0)
        return;
    if (r->response)
        MHD_destroy_response(r->response);
    auth_principal_release(r->principal);
    qr_buf_release(&r->body);
    free(r->stream.data);
    pthread_cond_destroy(&r->stream.space);
    pthread_mutex_destroy(&r->lock);
    free(r->path);
    free(r->param);
    free(r);
}

bool api_req_cancelled(const api_req *r)
{
    return qr_cancel_cancelled(&r->cancel) || atomic_load(&r->srv->cancel_all);
}

/* Whether the client closed its connection (worker). Only while the connection is suspended: MHD
 * then neither reads nor closes the socket, so the descriptor is the request's own, and MHD, which
 * would see the close itself, is not looking. A client that shuts down only its sending side
 * counts as gone, as it does for nginx: HTTP clients do not half-close while they wait for an
 * answer. */
static bool client_gone(void *ctx)
{
    api_req *r = ctx;
    pthread_mutex_lock(&r->lock);
    bool parked = r->suspended && !r->ready;
    pthread_mutex_unlock(&r->lock);
    if (!parked || r->fd < 0)
        return false;
    struct pollfd p = {.fd = r->fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

const char *api_header(api_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

char *api_query_arg(api_req *r, const char *name, bool *bad)
{
    const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
    if (!v)
        return NULL;
    char *d = api_url_decode(v, strlen(v), true);
    if (!d)
        *bad = true;
    return d;
}

/* A client's X-Request-Id is kept when it is short and plain, so that it can go into logs and
 * headers as it is; anything else is replaced by a random id. */
static void set_request_id(api_req *r)
{
    const char *given = api_header(r, "X-Request-Id");
    if (given) {
        size_t n = strlen(given);
        bool ok = n > 0 && n <= API_REQUEST_ID_MAX;
        for (size_t i = 0; ok && i < n; i++) {
            char c = given[i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                 c == '_' || c == '.' || c == ':';
        }
        if (ok) {
            memcpy(r->request_id, given, n + 1);
            return;
        }
    }
    api_random_hex(r->request_id, 16);
}

static void set_client(api_req *r)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(r->client, sizeof(r->client), "-");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->client, sizeof(r->client));
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->client, sizeof(r->client));
}

static api_req *req_new(api_server *srv, struct MHD_Connection *conn, const char *url, const char *method)
{
    api_req *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->srv = srv;
    r->conn = conn;
    r->refs = 1;
    r->start_ns = qr_now_ns();
    r->route_index = SIZE_MAX;
    r->guarded = api_guard_conn(conn);
    snprintf(r->method, sizeof(r->method), "%s", method);
    snprintf(r->user, sizeof(r->user), "-");
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->stream.space, NULL);
    qr_cancel_init(&r->cancel);
    qr_cancel_set_probe(&r->cancel, client_gone, r, API_GONE_PROBE_MS);
    const union MHD_ConnectionInfo *fdi = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = fdi ? fdi->connect_fd : -1;
    /* until the route is known; nothing is read before */
    r->body_max = API_SMALL_BODY_MAX;
    qr_buf_init(&r->body, r->body_max);
    if (!(r->path = strdup(url))) {
        api_req_unref(r);
        return NULL;
    }
    set_request_id(r);
    set_client(r);
    pthread_mutex_lock(&srv->lock);
    r->next = srv->active;
    if (srv->active)
        srv->active->prev = r;
    srv->active = r;
    srv->in_flight++;
    pthread_mutex_unlock(&srv->lock);
    return r;
}

/* Queues the response that is ready (MHD thread). */
static enum MHD_Result queue(api_req *r)
{
    pthread_mutex_lock(&r->lock);
    struct MHD_Response *resp = r->response;
    int status = r->status;
    r->response = NULL;
    r->queued = true;
    pthread_mutex_unlock(&r->lock);
    if (!resp)
        return MHD_NO;
    /* every answer passes here, whatever produced it: the one place for its CORS headers */
    if (!r->cors_done)
        api_cors_actual(r, resp);
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)status, resp);
    /* MHD holds its own reference until the answer is sent; a stream's free callback runs then. */
    MHD_destroy_response(resp);
    return ok;
}

/* Gives the suspended connection back to the MHD thread (worker): with its answer (answered), or
 * authenticated and admitted to send its body. */
static void hand_back(api_req *r, bool answered)
{
    api_server *srv = r->srv;
    pthread_mutex_lock(&r->lock);
    if (answered)
        r->ready = true;
    else
        r->stage = API_STAGE_ADMITTED;
    bool resume = r->suspended;
    r->suspended = false;
    if (resume)
        MHD_resume_connection(r->conn);
    pthread_mutex_unlock(&r->lock);
    if (resume) {
        pthread_mutex_lock(&srv->lock);
        srv->suspended--;
        pthread_cond_broadcast(&srv->idle);
        pthread_mutex_unlock(&srv->lock);
    }
}

/* Counts a request of r's caller in the per-user share (worker, after authentication). False,
 * counting nothing, when the caller has server.user_share requests on workers already. A slot is
 * always free: each request counted holds a worker, so no more users than workers hold slots. */
static bool share_enter(api_req *r, int *running)
{
    api_server *srv = r->srv;
    const char *uid = r->principal->uid;
    api_share *mine = NULL, *free_slot = NULL;
    pthread_mutex_lock(&srv->share_lock);
    for (int i = 0; i < srv->set.workers && !mine; i++) {
        api_share *sh = &srv->shares[i];
        if (!sh->running)
            free_slot = free_slot ? free_slot : sh;
        else if (strncmp(sh->uid, uid, sizeof(sh->uid)) == 0)
            mine = sh;
    }
    if (!mine && (mine = free_slot))
        snprintf(mine->uid, sizeof(mine->uid), "%s", uid);
    bool ok = mine && mine->running < srv->set.user_share;
    if (ok)
        mine->running++;
    *running = mine ? mine->running : 0;
    pthread_mutex_unlock(&srv->share_lock);
    return ok;
}

static void share_leave(api_req *r)
{
    api_server *srv = r->srv;
    pthread_mutex_lock(&srv->share_lock);
    for (int i = 0; i < srv->set.workers; i++) {
        api_share *sh = &srv->shares[i];
        if (sh->running && strncmp(sh->uid, r->principal->uid, sizeof(sh->uid)) == 0) {
            sh->running--;
            break;
        }
    }
    pthread_mutex_unlock(&srv->share_lock);
}

/* Hands the finished answer to the MHD thread (worker). */
static void publish(api_req *r)
{
    hand_back(r, true);
}

static void set_stage(api_req *r, api_stage stage)
{
    pthread_mutex_lock(&r->lock);
    r->stage = stage;
    pthread_mutex_unlock(&r->lock);
}

/* Runs on a worker. At the authentication stage: authenticates the caller, then admits the body,
 * or, when there is none, runs the handler at once; at the work stage (the body is in): runs the
 * handler, counted in the caller's share (server.user_share). Then the answer goes back. A request
 * whose client left while it waited is answered 499 (written to nobody: the status is for the
 * access log) without running. */
static void work(void *arg)
{
    api_req *r = arg;
    pthread_mutex_lock(&r->lock);
    api_stage stage = r->stage;
    pthread_mutex_unlock(&r->lock);
    int running = 0;
    bool shared = false;
    if (atomic_load(&r->srv->cancel_all)) {
        api_reply_error(r, 503, "unavailable", "the server is shutting down");
    } else if (api_req_cancelled(r) || client_gone(r)) {
        qr_cancel_cancel(&r->cancel);
        api_reply_error(r, 499, "cancelled", "the client closed the connection before a worker was free");
    } else if (stage == API_STAGE_AUTH && !api_authenticate(r)) {
        /* answered (401, 403, 429, 503); MHD discards the body unread */
    } else if (stage == API_STAGE_AUTH && r->expects_body) {
        hand_back(r, false);
        api_req_unref(r);
        return;
    } else if (r->principal && !(shared = share_enter(r, &running))) {
        api_reply_error(r, 429, "rate_limited",
                        "you have %d requests running, the most one user may have at once "
                        "(server.user_share); retry when one has finished",
                        running);
        api_reply_header(r, "Retry-After", "1");
    } else {
        set_stage(r, API_STAGE_WORK);
        r->route->handler(r);
    }
    if (shared)
        share_leave(r);
    if (r->is_stream) {
        api_stream_end(r);
    } else {
        if (!r->response)
            api_reply_error(r, 500, "internal_error", "the handler gave no answer");
        publish(r);
    }
    api_req_unref(r);
}

/* Suspends the connection and hands the request to a worker at the given stage (MHD thread). */
static enum MHD_Result dispatch(api_req *r, api_stage stage)
{
    api_server *srv = r->srv;
    /* Suspend first, then hand over: the worker may resume before submit even returns. The
     * search's deadline runs from here: time waiting for a worker counts. */
    qr_cancel_set_deadline(&r->cancel, qr_now_ns(), api_service_retrieval_opts(srv->svc)->timeout_ms);
    api_req_ref(r);
    pthread_mutex_lock(&r->lock);
    r->stage = stage;
    r->suspended = true;
    MHD_suspend_connection(r->conn);
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_lock(&srv->lock);
    srv->suspended++;
    pthread_mutex_unlock(&srv->lock);
    if (qr_pool_submit(srv->pool, work, r) != QR_OK) {
        api_reply_error(r, 503, "overloaded", "every worker is busy and the queue is full; retry later");
        api_reply_header(r, "Retry-After", "1");
        publish(r);
        api_req_unref(r);
    }
    return MHD_YES;
}

/* Sends an error at once from the MHD thread (routing and size errors). */
static enum MHD_Result fail_now(api_req *r, int status, const char *code, const char *fmt, const char *arg)
{
    api_reply_error(r, status, code, fmt, arg);
    r->ready = true;
    return queue(r);
}

/* The most body bytes route reads, and *key the setting that says so (NULL: a fixed limit). */
static size_t body_limit(const api_server *srv, const api_route *route, const char **key)
{
    size_t limit = srv->set.max_body_bytes;
    *key = "server.max_body_bytes";
    if (route->body == API_BODY_JSON && srv->set.max_json_bytes < limit) {
        limit = srv->set.max_json_bytes;
        *key = "server.max_json_bytes";
    } else if (route->body == API_BODY_SMALL && API_SMALL_BODY_MAX < limit) {
        limit = API_SMALL_BODY_MAX;
        *key = NULL;
    }
    return limit;
}

static enum MHD_Result refuse_too_large(api_req *r)
{
    const char *key;
    size_t limit = body_limit(r->srv, r->route, &key);
    char msg[160];
    snprintf(msg, sizeof(msg), "request body over the limit of %zu bytes for this route%s%s%s", limit,
             key ? " (" : "", key ? key : "", key ? ")" : "");
    return fail_now(r, 413, "payload_too_large", "%s", msg);
}

/* The body may come now (MHD thread): its bytes go through the access handler, under the
 * connection's body-rate deadline. */
static void start_body(api_req *r)
{
    set_stage(r, API_STAGE_BODY);
    api_guard_body(r->srv->guard, r->guarded);
}

/* The first call of the access handler, with the headers (MHD thread): routes, checks the declared
 * body size, and sends the request to be authenticated before any of its body is read. */
static enum MHD_Result on_headers(api_server *srv, struct MHD_Connection *conn, const char *url,
                                  const char *method, void **con_cls)
{
    api_req *r = req_new(srv, conn, url, method);
    if (!r)
        return MHD_NO;
    *con_cls = r;
    api_guard_busy(srv->guard, r->guarded);
    if (srv->stopping)
        return fail_now(r, 503, "unavailable", "%s", "the server is shutting down");
    bool console = api_ui_path(srv->ui, method, url);
    if (strcmp(method, "OPTIONS") == 0 || console) {
        /* preflights come without credentials, and the console's files need none: answered
         * here, before authentication and before any worker or share is spent on them */
        if (console)
            api_ui_serve(r, url);
        else
            api_cors_options(r, url);
        r->ready = true;
        /* Without a body the answer goes with the final call, which comes right after this one:
         * queued here, at the headers, it would make libmicrohttpd close the connection after it,
         * and a browser sends the actual request right after its preflight. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        r->expects_body = (cl && strcmp(cl, "0") != 0) ||
                          MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding");
        return r->expects_body ? queue(r) : MHD_YES;
    }
    size_t index = SIZE_MAX;
    char allow[160];
    switch (api_route_find(method, url, &index, &r->param)) {
    case API_MATCH_OK: break;
    case API_MATCH_NOT_FOUND: return fail_now(r, 404, "not_found", "no route for path '%s'", url);
    case API_MATCH_BAD_METHOD:
        api_reply_error(r, 405, "method_not_allowed", "this path does not accept %s", method);
        if (api_route_methods(url, allow, sizeof(allow)) == API_MATCH_OK) {
            size_t n = strlen(allow);
            snprintf(allow + n, sizeof(allow) - n, ", OPTIONS");
            api_reply_header(r, "Allow", allow);
        }
        r->ready = true;
        return queue(r);
    case API_MATCH_BAD_ESCAPE:
        return fail_now(r, 400, "invalid_argument", "%s",
                        "malformed path: bad percent-escape, control character or invalid UTF-8");
    }
    r->route_index = index;
    r->route = &api_route_table[index];
    const char *key;
    r->body_max = body_limit(srv, r->route, &key);
    qr_buf_init(&r->body, r->body_max);
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    unsigned long long len = 0;
    if (cl) {
        char *end;
        errno = 0;
        len = strtoull(cl, &end, 10);
        if (errno || *end || len > r->body_max)
            return refuse_too_large(r);
    }
    r->expects_body = len > 0 || MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding");
    if (r->route->access == API_ACCESS_PUBLIC) {
        start_body(r);
        return MHD_YES;
    }
    r->at_headers = true;
    return dispatch(r, API_STAGE_AUTH);
}

/* The access handler (MHD thread): called once with the headers, once more after the worker that
 * authenticated the request resumed it, once per piece of body, once at the end of the body, and
 * once more after a worker resumed the connection with the answer. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    api_server *srv = cls;
    api_req *r = *con_cls;
    if (!r)
        return on_headers(srv, conn, url, method, con_cls);

    if (*upload_data_size) {
        size_t n = *upload_data_size;
        if (!r->too_large && qr_buf_append(&r->body, upload_data, n))
            r->too_large = true;
        r->body_seen += n;
        *upload_data_size = 0;
        api_guard_body_bytes(r->guarded, n);
        /* A chunked body past the limit is read and dropped so that the client gets its 413, but
         * not forever. */
        if (r->too_large && r->body_seen > 2 * r->body_max + (1u << 20))
            return MHD_NO;
        return MHD_YES;
    }

    pthread_mutex_lock(&r->lock);
    bool ready = r->ready, queued = r->queued;
    api_stage stage = r->stage;
    pthread_mutex_unlock(&r->lock);
    /* the call after the authenticating worker resumed the connection is the last one at the
     * headers: MHD goes on to the body, or to the final call, once it returns */
    bool at_headers = r->at_headers;
    r->at_headers = false;
    if (queued)
        return MHD_YES;
    if (ready) {
        /* Answered at the headers, MHD discards the body unread and closes the connection after the
         * answer: right for a refused body, a waste of a kept-alive connection for a request without
         * one, whose answer waits for the final call that comes right after this one. */
        if (at_headers && !r->expects_body)
            return MHD_YES;
        return queue(r);
    }
    if (stage == API_STAGE_ADMITTED) {
        /* the call right after the worker admitted the request: MHD reads the body (and sends
         * 100 Continue first when the client waits for it) once this returns */
        start_body(r);
        return MHD_YES;
    }
    if (stage != API_STAGE_BODY)
        return MHD_YES; /* a worker has it */

    /* the whole body is in */
    api_guard_busy(srv->guard, r->guarded);
    if (r->too_large)
        return refuse_too_large(r);
    if (r->route->inline_) {
        set_stage(r, API_STAGE_WORK);
        r->route->handler(r);
        r->ready = true;
        return queue(r);
    }
    return dispatch(r, API_STAGE_WORK);
}

/* One access record with the path cut to path_max bytes ("truncated":true when it was). The
 * buffer's failure is sticky, so the last append reports whether the whole record fit. */
static qr_status access_fields(qr_buf *line, const api_req *r, int status, double ms, const char *when,
                               size_t path_max)
{
    size_t path_len = r->path ? strlen(r->path) : 0;
    bool cut = path_len > path_max;
    qr_buf_reset(line);
    qr_buf_printf(line, "{\"time\":\"%s\",\"request_id\":\"%s\",\"client\":\"%s\",\"method\":", when,
                  r->request_id, r->client);
    qr_json_escape(line, r->method, strlen(r->method));
    qr_buf_puts(line, ",\"path\":");
    /* a cut inside a UTF-8 sequence is safe: the escape turns the stray bytes into U+FFFD */
    qr_json_escape(line, r->path ? r->path : "", cut ? path_max : path_len);
    qr_buf_printf(line, ",\"route\":\"%s\",\"status\":%d,\"bytes\":%zu,\"ms\":%.3f,\"user\":",
                  r->route ? r->route->pattern : "-", status, r->bytes_out, ms);
    qr_json_escape(line, r->user, strlen(r->user));
    if (cut)
        qr_buf_puts(line, ",\"truncated\":true");
    return qr_buf_puts(line, "}\n");
}

qr_status api_access_format(qr_buf *line, const api_req *r, int status, double ms, const char *when)
{
    if (access_fields(line, r, status, ms, when, SIZE_MAX) == QR_OK)
        return QR_OK;
    return access_fields(line, r, status, ms, when, API_ACCESS_PATH_CUT);
}

static void access_line(api_req *r, int status, double ms)
{
    api_server *srv = r->srv;
    char when[40];
    qr_wall_iso8601(when, sizeof(when));
    if (srv->access_log) {
        qr_buf line;
        qr_buf_init(&line, API_ACCESS_LINE_MAX);
        if (api_access_format(&line, r, status, ms, when) == QR_OK) {
            pthread_mutex_lock(&srv->access_lock);
            fwrite(qr_buf_str(&line), 1, qr_buf_len(&line), srv->access_log);
            pthread_mutex_unlock(&srv->access_lock);
        } else {
            qr_log(QR_LOG_ERROR, "access", "cannot format the access line for request %s (%s); not written",
                   r->request_id, qr_status_name(qr_buf_failed(&line)));
        }
        qr_buf_release(&line);
    } else {
        qr_log(QR_LOG_INFO, "access", "%s %s %s %d %zu bytes %.1f ms user=%s id=%s", r->client, r->method,
               r->route ? r->route->pattern : "-", status, r->bytes_out, ms, r->user, r->request_id);
    }
}

/* The request is over (MHD thread): answered, or the client went away. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    api_server *srv = cls;
    api_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    pthread_mutex_lock(&r->lock);
    qr_cancel_cancel(&r->cancel);
    pthread_cond_broadcast(&r->stream.space);
    /* 499: the client closed the connection before its answer was (wholly) sent. */
    int status = r->queued ? r->status : 499;
    if (r->is_stream && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        status = 499;
    /* An answer never queued (the connection died first) would keep a stream's request alive
     * through its free callback: drop it here. */
    struct MHD_Response *unsent = r->queued ? NULL : r->response;
    r->response = NULL;
    pthread_mutex_unlock(&r->lock);
    if (unsent)
        MHD_destroy_response(unsent);
    /* a kept-alive connection owes the next request's header block from now on */
    api_guard_idle(srv->guard, r->guarded);
    double secs = (double)(qr_now_ns() - r->start_ns) / 1e9;
    api_metrics_request(srv->metrics, r->route_index, status, secs);
    access_line(r, status, secs * 1000.0);

    pthread_mutex_lock(&srv->lock);
    if (r->prev)
        r->prev->next = r->next;
    else
        srv->active = r->next;
    if (r->next)
        r->next->prev = r->prev;
    srv->in_flight--;
    pthread_cond_broadcast(&srv->idle);
    pthread_mutex_unlock(&srv->lock);
    api_req_unref(r);
}

/* ---- streams ---------------------------------------------------------------------------------- */

bool api_stream_begin(api_req *r, int status, const char *content_type)
{
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, api_stream_reader, r, api_stream_free);
    if (!resp) {
        api_reply_error(r, 500, "internal_error", "cannot create a streamed response");
        return false;
    }
    api_req_ref(r); /* the response's, dropped by api_stream_free */
    MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    pthread_mutex_lock(&r->lock);
    r->response = resp;
    r->status = status;
    r->is_stream = true;
    pthread_mutex_unlock(&r->lock);
    publish(r);
    return true;
}

/* Wakes the reader if it is parked (worker; r->lock held). */
static void wake_reader(api_req *r, int *resumed)
{
    if (r->suspended) {
        r->suspended = false;
        MHD_resume_connection(r->conn);
        (*resumed)++;
    }
}

/* Counts resumes once r->lock is released (lock order: a request's lock, then the server's). */
static void count_resumes(api_server *srv, int n)
{
    if (n <= 0)
        return;
    pthread_mutex_lock(&srv->lock);
    srv->suspended -= n;
    pthread_cond_broadcast(&srv->idle);
    pthread_mutex_unlock(&srv->lock);
}

bool api_stream_write(api_req *r, const char *data, size_t len)
{
    bool ok = true;
    int resumed = 0;
    pthread_mutex_lock(&r->lock);
    api_stream *s = &r->stream;
    if (!s->data && !(s->data = malloc(API_STREAM_BUF_MAX)))
        ok = false;
    while (ok && len) {
        if (api_req_cancelled(r) || s->finished) {
            ok = false;
            break;
        }
        size_t pending = s->end - s->start;
        if (pending == API_STREAM_BUF_MAX) {
            /* the client reads slower than the answer comes: wait for it (or for its departure) */
            wake_reader(r, &resumed);
            pthread_cond_wait(&s->space, &r->lock);
            continue;
        }
        if (s->start) {
            memmove(s->data, s->data + s->start, pending);
            s->start = 0;
            s->end = pending;
        }
        size_t n = len < API_STREAM_BUF_MAX - pending ? len : API_STREAM_BUF_MAX - pending;
        memcpy(s->data + s->end, data, n);
        s->end += n;
        data += n;
        len -= n;
        wake_reader(r, &resumed);
    }
    pthread_mutex_unlock(&r->lock);
    count_resumes(r->srv, resumed);
    return ok;
}

bool api_stream_printf(api_req *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        return false;
    bool ok = api_stream_write(r, s, (size_t)n);
    free(s);
    return ok;
}

void api_stream_end(api_req *r)
{
    int resumed = 0;
    pthread_mutex_lock(&r->lock);
    r->stream.finished = true;
    wake_reader(r, &resumed);
    pthread_mutex_unlock(&r->lock);
    count_resumes(r->srv, resumed);
}

ssize_t api_stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    api_req *r = cls;
    ssize_t n;
    bool parked = false;
    pthread_mutex_lock(&r->lock);
    api_stream *s = &r->stream;
    size_t pending = s->end - s->start;
    if (pending) {
        size_t k = pending < max ? pending : max;
        memcpy(buf, s->data + s->start, k);
        s->start += k;
        r->bytes_out += k;
        pthread_cond_broadcast(&r->stream.space);
        n = (ssize_t)k;
    } else if (s->finished) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing yet: park the connection until the producer wakes it (the pattern microhttpd.h
         * prescribes instead of returning 0 in a busy loop). */
        r->suspended = true;
        MHD_suspend_connection(r->conn);
        parked = true;
        n = 0;
    }
    pthread_mutex_unlock(&r->lock);
    if (parked) {
        pthread_mutex_lock(&r->srv->lock);
        r->srv->suspended++;
        pthread_mutex_unlock(&r->srv->lock);
    }
    return n;
}

void api_stream_free(void *cls)
{
    api_req_unref(cls);
}
