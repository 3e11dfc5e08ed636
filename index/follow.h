/*
 * index/follow.h, private to index/ (and its tests): a follower's store brought up to date from
 * a source of document states (store_follow_pull_fn, index/feed.h; pgstore_pull for PostgreSQL),
 * one batch -- one local transaction -- at a time (follow.c).
 */
#ifndef QUARRY_INDEX_FOLLOW_H
#define QUARRY_INDEX_FOLLOW_H

#include <stddef.h>
#include <stdint.h>

#include "index/feed.h"

/* Records a follow_until batch asks the source for. */
#define FOLLOW_BATCH 64

/* One batch: pulls about `limit` records after the store's change counter from pull(ctx, ...),
 * applies them in one transaction (store_follow_begin .. store_follow_commit) and commits it at
 * the source's `through`. *counter gets the store's counter after it, *head the source's head (the
 * store is current when they are equal). The store's write lock is held while the source is read.
 * On error nothing of the batch stays (a record the store refuses fails the batch with its status
 * and message), *counter and *head are untouched. */
qr_status follow_step(store *s, store_follow_pull_fn pull, void *ctx, size_t limit, int64_t *counter,
                      int64_t *head, char *err);

/* Batches of FOLLOW_BATCH records until the store's change counter reaches target, or until
 * budget_ms have passed since the call: QR_ETIMEOUT then, with the batches applied so far kept (a
 * batch is never cut short; one begun before the budget ran out is completed). A source behind
 * target is asked again every few milliseconds while the budget lasts. *counter gets the store's
 * counter at the end, whatever the status (unchanged from the start on other errors). */
qr_status follow_until(store *s, store_follow_pull_fn pull, void *ctx, int64_t target, int64_t budget_ms,
                       int64_t *counter, char *err);

#endif
