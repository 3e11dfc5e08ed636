/*
 * LDAP connections: a fixed pool of slots, each used by one thread at a time, so that no LDAP
 * handle is ever shared unlocked and connections are reused across requests. Every operation
 * runs against a deadline: the connect (LDAP_OPT_NETWORK_TIMEOUT, which also bounds the TLS
 * handshake), every synchronous request (LDAP_OPT_TIMEOUT) and every search (its own timeout)
 * get the time left, so a server that accepts and never answers costs at most ldap.timeout_ms.
 * A connection that failed is closed and reopened on next use. Results are mapped here, once: unreachable,
 * silent or overloaded servers are QR_EUNAVAILABLE, refused credentials QR_EAUTH.
 *
 * libldap writes to sockets whose peer may be gone (even its unbind does), which raises SIGPIPE.
 * A thread holding a slot has SIGPIPE blocked, and one raised meanwhile is consumed before it is
 * unblocked, so the process survives a vanished server whatever its signal settings.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "auth/auth_int.h"

uint64_t auth_deadline(const auth_ctx *ctx)
{
    return qr_now_ns() + (uint64_t)ctx->s.timeout_ms * 1000000ull;
}

/* Time left until deadline, at least 1 ms so that a zero never means "no limit" to libldap;
 * false when the deadline has passed. */
static bool time_left(uint64_t deadline, struct timeval *tv)
{
    uint64_t now = qr_now_ns();
    if (now >= deadline)
        return false;
    uint64_t left_us = (deadline - now) / 1000;
    if (left_us < 1000)
        left_us = 1000;
    tv->tv_sec = (time_t)(left_us / 1000000);
    tv->tv_usec = (suseconds_t)(left_us % 1000000);
    return true;
}

/* Arms both of libldap's client-side timeouts with the time left. */
static bool arm(LDAP *ld, uint64_t deadline, struct timeval *tv)
{
    if (!time_left(deadline, tv))
        return false;
    return ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, tv) == LDAP_OPT_SUCCESS &&
           ldap_set_option(ld, LDAP_OPT_TIMEOUT, tv) == LDAP_OPT_SUCCESS;
}

/* Results that say the server could not be used, as opposed to an answer about the request. */
static bool server_trouble(int rc)
{
    return rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR || rc == LDAP_TIMEOUT ||
           rc == LDAP_TIMELIMIT_EXCEEDED || rc == LDAP_BUSY || rc == LDAP_UNAVAILABLE || rc == LDAP_OTHER ||
           rc == LDAP_LOCAL_ERROR || rc == LDAP_ENCODING_ERROR || rc == LDAP_DECODING_ERROR ||
           rc == LDAP_PROTOCOL_ERROR || rc == LDAP_UNWILLING_TO_PERFORM || rc == LDAP_ADMINLIMIT_EXCEEDED;
}

static void describe(LDAP *ld, int rc, char *out, size_t len)
{
    char *diag = NULL;
    if (ld)
        ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
    snprintf(out, len, "%s%s%s", ldap_err2string(rc), diag && *diag ? " (" : "", diag && *diag ? diag : "");
    if (diag && *diag)
        strcat(out, ")");
    ldap_memfree(diag);
}

static void destroy(LDAP **ld)
{
    if (*ld)
        ldap_unbind_ext_s(*ld, NULL, NULL);
    *ld = NULL;
}

static qr_status unavailable(auth_ctx *ctx, LDAP *ld, int rc, const char *what, char *err)
{
    char why[256];
    describe(ld, rc, why, sizeof(why));
    if (rc == LDAP_TIMEOUT)
        snprintf(why, sizeof(why), "no answer in time (ldap.timeout_ms is %d ms)", ctx->s.timeout_ms);
    qr_log(QR_LOG_WARN, "auth", "LDAP unavailable: %s: %s", what, why);
    return qr_fail(err, QR_EUNAVAILABLE, "LDAP server unavailable: %s: %s", what, why);
}

/* Waits until the TCP connect libldap started asynchronously has finished; false if it failed
 * or did not finish by deadline. */
static bool wait_connected(LDAP *ld, uint64_t deadline)
{
    int fd = -1;
    if (ldap_get_option(ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS || fd < 0)
        return false;
    for (;;) {
        uint64_t now = qr_now_ns();
        if (now >= deadline)
            return false;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int ms = (int)((deadline - now + 999999) / 1000000);
        int n = poll(&p, 1, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        return getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0;
    }
}

/* Connects to one URI by deadline: TCP, then TLS (ldaps:// or StartTLS when configured). */
static qr_status open_one(auth_ctx *ctx, const char *uri, uint64_t deadline, LDAP **out, char *err)
{
    const auth_settings *s = &ctx->s;
    LDAP *ld = NULL;
    struct timeval tv;
    *out = NULL;
    int rc = ldap_initialize(&ld, uri);
    if (rc != LDAP_SUCCESS)
        return qr_fail(err, QR_EUNAVAILABLE, "cannot use ldap.uri '%s': %s", uri, ldap_err2string(rc));
    int version = LDAP_VERSION3;
    int require = s->require_cert;
    int zero = 0;
    bool ok =
        ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version) == LDAP_OPT_SUCCESS &&
        /* referrals would be chased with our credentials to servers we did not choose */
        ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) == LDAP_OPT_SUCCESS &&
        ldap_set_option(ld, LDAP_OPT_RESTART, LDAP_OPT_ON) == LDAP_OPT_SUCCESS &&
        /* libldap bounds a TLS handshake (ldaps:// or StartTLS) by LDAP_OPT_NETWORK_TIMEOUT only on
         * an asynchronous connection; otherwise 2.5's ldap_int_tls_start spins on a silent peer */
        ldap_set_option(ld, LDAP_OPT_CONNECT_ASYNC, LDAP_OPT_ON) == LDAP_OPT_SUCCESS &&
        ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &require) == LDAP_OPT_SUCCESS &&
        (!*s->ca_file || ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, s->ca_file) == LDAP_OPT_SUCCESS) &&
        /* a context of this handle's own, so that the options above apply to it */
        ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero) == LDAP_OPT_SUCCESS;
    if (!ok) {
        ldap_unbind_ext_s(ld, NULL, NULL);
        return qr_fail(err, QR_EUNAVAILABLE,
                       "cannot set the LDAP connection's options (TLS: ldap.ca_file '%s')", s->ca_file);
    }
    AUTH_COUNT(ctx, connects);
    const char *what = "connect";
    if (!arm(ld, deadline, &tv))
        rc = LDAP_TIMEOUT;
    else if ((rc = ldap_connect(ld)) == LDAP_SUCCESS && !wait_connected(ld, deadline))
        rc = qr_now_ns() >= deadline ? LDAP_TIMEOUT : LDAP_CONNECT_ERROR;
    else if (rc != LDAP_SUCCESS && qr_now_ns() >= deadline)
        rc = LDAP_TIMEOUT; /* a TLS handshake that ran out of time reports a connect error */
    if (rc == LDAP_SUCCESS && s->starttls && !ldap_tls_inplace(ld)) {
        what = "StartTLS";
        rc = arm(ld, deadline, &tv) ? ldap_start_tls_s(ld, NULL, NULL) : LDAP_TIMEOUT;
    }
    if (rc != LDAP_SUCCESS) {
        char where[300];
        snprintf(where, sizeof(where), "%s to %s", what, uri);
        qr_status st = unavailable(ctx, ld, rc, where, err);
        ldap_unbind_ext_s(ld, NULL, NULL);
        return st;
    }
    *out = ld;
    return QR_OK;
}

static int simple_bind(auth_ctx *ctx, LDAP *ld, uint64_t deadline, const char *dn, const char *pw, size_t len)
{
    struct timeval tv;
    if (!arm(ld, deadline, &tv))
        return LDAP_TIMEOUT;
    struct berval cred = {(ber_len_t)len, (char *)pw};
    AUTH_COUNT(ctx, binds);
    return ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
}

/* Opens a connection to the first server of ldap.uri that works, starting with the one that
 * worked last. A service connection (service true) must also accept the service account's bind,
 * so that a server which accepts connections and then never answers is passed over too. Each
 * server gets an equal share of the time left (the last one all of it). */
static qr_status open_conn(auth_ctx *ctx, uint64_t deadline, bool service, LDAP **out, char *err)
{
    const auth_settings *s = &ctx->s;
    *out = NULL;
    if (!s->nuris)
        return qr_fail(err, QR_EUNAVAILABLE, "LDAP is not configured (ldap.uri is empty)");
    size_t first = __atomic_load_n(&ctx->preferred_uri, __ATOMIC_RELAXED);
    qr_status st = QR_EUNAVAILABLE;
    for (size_t i = 0; i < s->nuris; i++) {
        size_t u = (first + i) % s->nuris;
        uint64_t now = qr_now_ns();
        if (now >= deadline)
            return unavailable(ctx, NULL, LDAP_TIMEOUT, "connect", err);
        uint64_t share_end = now + (deadline - now) / (s->nuris - i);
        LDAP *ld = NULL;
        st = open_one(ctx, s->uri_list[u], share_end, &ld, err);
        if (!st && service && *s->bind_dn) {
            int rc = simple_bind(ctx, ld, share_end, s->bind_dn, s->bind_password, strlen(s->bind_password));
            if (rc != LDAP_SUCCESS) {
                /* wrong service credentials are a configuration error, but still: fail closed */
                char what[300];
                snprintf(what, sizeof(what), "service account bind at %s", s->uri_list[u]);
                st = unavailable(ctx, ld, rc, what, err);
                ldap_unbind_ext_s(ld, NULL, NULL);
                if (!server_trouble(rc) && rc > 0)
                    return st; /* the directory's answer: another replica would say the same */
                continue;
            }
        }
        if (!st) {
            __atomic_store_n(&ctx->preferred_uri, u, __ATOMIC_RELAXED);
            *out = ld;
            return QR_OK;
        }
    }
    return st;
}

void auth_sigpipe_block(auth_sigpipe *g)
{
    sigset_t pipe, pending;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe, &g->old_mask);
}

void auth_sigpipe_unblock(auth_sigpipe *g)
{
    sigset_t pipe, pending;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    sigpending(&pending);
    if (!g->was_pending && sigismember(&pending, SIGPIPE) == 1) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old_mask, NULL);
}

qr_status auth_pool_acquire(auth_ctx *ctx, uint64_t deadline, auth_conn **out, char *err)
{
    *out = NULL;
    pthread_mutex_lock(&ctx->pool_lock);
    for (;;) {
        for (int i = 0; i < ctx->s.pool_size; i++) {
            if (!ctx->pool[i].busy) {
                ctx->pool[i].busy = true;
                *out = &ctx->pool[i];
                pthread_mutex_unlock(&ctx->pool_lock);
                auth_sigpipe_block(&ctx->pool[i].sigpipe);
                return QR_OK;
            }
        }
        struct timespec ts;
        ts.tv_sec = (time_t)(deadline / 1000000000ull);
        ts.tv_nsec = (long)(deadline % 1000000000ull);
        int rc = pthread_cond_timedwait(&ctx->pool_cond, &ctx->pool_lock, &ts);
        if (rc == ETIMEDOUT) {
            pthread_mutex_unlock(&ctx->pool_lock);
            return qr_fail(
                err, QR_EUNAVAILABLE,
                "LDAP server unavailable: all %d connections stayed busy for ldap.timeout_ms (%d ms)",
                ctx->s.pool_size, ctx->s.timeout_ms);
        }
    }
}

void auth_pool_release(auth_ctx *ctx, auth_conn *c)
{
    if (!c)
        return;
    auth_sigpipe_unblock(&c->sigpipe);
    pthread_mutex_lock(&ctx->pool_lock);
    c->busy = false;
    pthread_cond_signal(&ctx->pool_cond);
    pthread_mutex_unlock(&ctx->pool_lock);
}

qr_status auth_conn_search(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const char *base, int scope,
                           const char *filter, char **attrs, int sizelimit, LDAPMessage **res, int *ldap_rc,
                           char *err)
{
    *res = NULL;
    for (int attempt = 0;; attempt++) {
        bool fresh = c->svc == NULL;
        if (fresh) {
            qr_status st = open_conn(ctx, deadline, true, &c->svc, err);
            if (st)
                return st;
        }
        struct timeval tv;
        int rc = LDAP_TIMEOUT;
        if (arm(c->svc, deadline, &tv)) {
            AUTH_COUNT(ctx, searches);
            rc = ldap_search_ext_s(c->svc, base, scope, filter, attrs, 0, NULL, NULL, &tv, sizelimit, res);
        }
        if (rc == LDAP_SUCCESS || rc == LDAP_SIZELIMIT_EXCEEDED || rc == LDAP_NO_SUCH_OBJECT) {
            *ldap_rc = rc;
            return QR_OK;
        }
        ldap_msgfree(*res);
        *res = NULL;
        if (rc == LDAP_FILTER_ERROR)
            return qr_fail(err, QR_EINVAL, "bad LDAP filter '%s'", filter);
        qr_status st = rc == LDAP_INSUFFICIENT_ACCESS || server_trouble(rc) || rc < 0
                           ? unavailable(ctx, c->svc, rc, "search", err)
                           : qr_fail(err, QR_EUNAVAILABLE, "LDAP search under '%s' failed: %s", base,
                                     ldap_err2string(rc));
        destroy(&c->svc);
        /* a reused connection the server has since closed: one more try on a new one */
        if (rc != LDAP_SERVER_DOWN || fresh || attempt > 0 || qr_now_ns() >= deadline)
            return st;
    }
}

qr_status auth_conn_bind_user(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const char *dn,
                              const char *password, size_t password_len, char *err)
{
    for (int attempt = 0;; attempt++) {
        bool fresh = c->user == NULL;
        if (fresh) {
            qr_status st = open_conn(ctx, deadline, false, &c->user, err);
            if (st)
                return st;
        }
        int rc = simple_bind(ctx, c->user, deadline, dn, password, password_len);
        if (rc == LDAP_SUCCESS)
            return QR_OK;
        /* the directory's answer about these credentials (AD and password policies use 19, 48,
         * 50 and 53 for locked, expired or disabled accounts) */
        if (rc == LDAP_INVALID_CREDENTIALS || rc == LDAP_INAPPROPRIATE_AUTH ||
            rc == LDAP_CONSTRAINT_VIOLATION || rc == LDAP_INSUFFICIENT_ACCESS ||
            rc == LDAP_UNWILLING_TO_PERFORM || rc == LDAP_INVALID_DN_SYNTAX) {
            char why[256];
            describe(c->user, rc, why, sizeof(why));
            return qr_fail(err, QR_EAUTH, "bind refused: %s", why);
        }
        qr_status st = unavailable(ctx, c->user, rc, "user bind", err);
        destroy(&c->user);
        if (rc != LDAP_SERVER_DOWN || fresh || attempt > 0 || qr_now_ns() >= deadline)
            return st;
    }
}

void auth_conn_close_all(auth_ctx *ctx)
{
    if (!ctx->pool)
        return;
    auth_sigpipe guard;
    auth_sigpipe_block(&guard);
    for (int i = 0; i < ctx->s.pool_size; i++) {
        /* a polite unbind, but never a wait on a server that stopped answering */
        LDAP **handles[2] = {&ctx->pool[i].svc, &ctx->pool[i].user};
        for (int h = 0; h < 2; h++) {
            if (*handles[h]) {
                struct timeval tv = {0, 100000};
                ldap_set_option(*handles[h], LDAP_OPT_NETWORK_TIMEOUT, &tv);
                ldap_unbind_ext_s(*handles[h], NULL, NULL);
                *handles[h] = NULL;
            }
        }
    }
    auth_sigpipe_unblock(&guard);
}
