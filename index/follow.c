/*
 * follow: a follower's store caught up from its system of record's feed (index/follow.h). A
 * batch reads the store's counter and pulls the records after it inside the batch's transaction,
 * so that two followers of one data directory (two processes) can never apply the same records
 * twice: the second waits for the write lock and then starts from the counter the first
 * committed. Records are applied as the source emits them (their strings are the source's, valid
 * during the callback only), and the batch commits at the source's `through`.
 */
#include <time.h>

#include "index/feed.h"
#include "index/follow.h"

/* How long follow_until waits before asking a source behind its target again. */
#define FOLLOW_POLL_MS 5

static qr_status emit_record(void *ctx, const store_follow_doc *d, char *err)
{
    return store_follow_apply(ctx, d, err);
}

qr_status follow_step(store *s, store_follow_pull_fn pull, void *ctx, size_t limit, int64_t *counter,
                      int64_t *head, char *err)
{
    if (!s || !pull || !counter || !head)
        return qr_fail(err, QR_EINVAL, "follow_step: NULL argument");
    if (!limit)
        return qr_fail(err, QR_EINVAL, "follow_step: a batch of 0 records");
    int64_t since = 0, through = 0, at = 0;
    qr_status st = store_follow_begin(s, err);
    if (st)
        return st;
    if ((st = store_change_counter(s, &since, err)) ||
        (st = pull(ctx, since, limit, emit_record, s, &through, &at, err))) {
        store_follow_rollback(s);
        return st;
    }
    /* a source behind the store (a standby still replaying what another one served) sends nothing */
    if (through < since)
        through = since;
    if ((st = store_follow_mark(s, through, at, err))) {
        store_follow_rollback(s);
        return st;
    }
    if ((st = store_follow_commit(s, through, err)))
        return st;
    *counter = through;
    *head = at;
    return QR_OK;
}

qr_status follow_until(store *s, store_follow_pull_fn pull, void *ctx, int64_t target, int64_t budget_ms,
                       int64_t *counter, char *err)
{
    if (!s || !pull || !counter)
        return qr_fail(err, QR_EINVAL, "follow_until: NULL argument");
    uint64_t deadline = qr_now_ns() + (uint64_t)(budget_ms > 0 ? budget_ms : 0) * 1000000u;
    int64_t now = 0, head = 0;
    qr_status st = store_change_counter(s, &now, err);
    if (st)
        return st;
    *counter = now;
    while (now < target) {
        if (qr_now_ns() >= deadline)
            return qr_fail(err, QR_ETIMEOUT,
                           "the store reached change %lld of %lld within the budget of %lld ms",
                           (long long)now, (long long)target, (long long)budget_ms);
        int64_t before = now;
        if ((st = follow_step(s, pull, ctx, FOLLOW_BATCH, &now, &head, err)))
            return st;
        *counter = now;
        if (now == before && now < target) {
            /* the source has nothing after the store's counter yet: a standby still replaying */
            struct timespec pause = {0, FOLLOW_POLL_MS * 1000000L};
            nanosleep(&pause, NULL);
        }
    }
    return QR_OK;
}
