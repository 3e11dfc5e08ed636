/*
 * Cancellation tokens: a deadline and a flag for one piece of work, checked from inside the
 * work's loops so that a search can stop where it is instead of running to its end for nobody.
 * The flag is raised from other threads (the HTTP server when a client leaves or the server
 * stops) or by the token's probe, which the checking thread runs on its own schedule: polling a
 * socket from inside a search loop on every check would cost more than the check itself.
 */
#include <stdio.h>
#include <string.h>

#include "core.h"

void qr_cancel_init(qr_cancel *c)
{
    memset(c, 0, sizeof(*c));
}

void qr_cancel_set_deadline(qr_cancel *c, uint64_t start_ns, uint64_t timeout_ms)
{
    c->timeout_ms_ = timeout_ms;
    c->deadline_ns_ = timeout_ms ? start_ns + timeout_ms * 1000000u : 0;
    if (timeout_ms && !c->deadline_ns_)
        c->deadline_ns_ = 1; /* 0 means none: a deadline at the clock's origin has passed anyway */
}

void qr_cancel_set_probe(qr_cancel *c, qr_cancel_probe_fn fn, void *ctx, uint64_t every_ms)
{
    c->probe_ = fn;
    c->probe_ctx_ = ctx;
    c->probe_every_ns_ = every_ms * 1000000u;
    c->next_probe_ns_ = 0; /* the first check asks */
}

void qr_cancel_cancel(qr_cancel *c)
{
    if (c)
        __atomic_store_n(&c->cancelled_, 1, __ATOMIC_RELEASE);
}

bool qr_cancel_cancelled(const qr_cancel *c)
{
    return c && __atomic_load_n(&c->cancelled_, __ATOMIC_ACQUIRE);
}

qr_status qr_cancel_check(qr_cancel *c, char *err)
{
    if (!c)
        return QR_OK;
    uint64_t now = 0;
    if (!qr_cancel_cancelled(c) && c->probe_) {
        now = qr_now_ns();
        if (now >= c->next_probe_ns_) {
            c->next_probe_ns_ = now + c->probe_every_ns_;
            if (c->probe_(c->probe_ctx_))
                qr_cancel_cancel(c);
        }
    }
    if (qr_cancel_cancelled(c))
        return qr_fail(err, QR_ECANCELED, "cancelled: the client went away or the server is stopping");
    if (c->deadline_ns_) {
        if (!now)
            now = qr_now_ns();
        if (now >= c->deadline_ns_)
            return qr_fail(err, QR_ETIMEOUT, "the deadline of %llu ms passed",
                           (unsigned long long)c->timeout_ms_);
    }
    return QR_OK;
}
