/*
 * index/maintainer.h: the thread that keeps both indexes caught up and rebuilt (maintainer.c).
 */
#ifndef QUARRY_INDEX_MAINTAINER_H
#define QUARRY_INDEX_MAINTAINER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"
#include "index/text.h"
#include "index/vector.h"

/*
 * One thread per process that keeps the pruned BM25 index and the vector index in step with the
 * store, so that no search and no write request ever does index upkeep. Writers (ingestion, PUT,
 * DELETE, ACL changes) move the store's change counter and call index_maintainer_signal; the
 * thread then catches both indexes up at once (a replay of the change log into their in-memory
 * deltas) or, past their delta limits, builds new generations on its own store handle and
 * publishes them atomically. It also looks every index.refresh_ms on its own, so that a `quarry
 * ingest` run beside the server shows up. Searches read whatever is published (bm25_search still
 * replays the few changes after its generation itself, which never waits for a build); deletes
 * and ACL changes do not wait for the maintainer: the store's permission checks see them at once.
 *
 * Cold start: index_maintainer_start returns at once; the first pass opens (and if needed builds)
 * both indexes in the background. Until an index is published its accessor returns NULL and
 * searches rank with FTS5 alone.
 *
 * Threads: every function may be called from any thread. Published indexes stay valid until
 * index_maintainer_stop.
 *
 * Costs: index_maintainer_signal, the accessors and index_maintainer_get_status are an atomic
 * load or a short mutex that the thread never holds across a pass, so they never wait for a pass
 * or a build; index_maintainer_wait blocks its caller until a pass reaches the counter (one
 * catch-up pass when the lag is small, a build when one is needed) or the timeout;
 * index_maintainer_rebuild blocks its caller for a whole build of both indexes (tens of seconds
 * per million chunks); index_maintainer_stop waits for a pass in progress.
 * The passes themselves cost what index_sync and bm25_sync cost, on the maintainer's thread.
 */
typedef struct index_maintainer index_maintainer;

typedef struct {
    const char *data_dir; /* data.dir (copied) */
    vindex_opts vopts;    /* the vector index's settings (type strings must outlive the maintainer) */
    bm25_opts bopts;      /* the pruned BM25 index's settings */
    bool bm25;            /* keep the pruned BM25 index (retrieval.bm25_path = pruned) */
    uint64_t refresh_ms;  /* index.refresh_ms: the longest an external change waits (>= 1) */
    int nice;             /* index.maintainer_nice: the thread's priority below the searches' (0..19) */
    uint64_t poll_ms;     /* store.poll_ms: how often the feed follower polls, when the store is routed
                           * to a system of record (store_set_primary); 0: 20 ms */
} index_maintainer_opts;

/* Called by the thread before each pass that may build, with the pass's number (from 1); for
 * tests that slow the maintainer down. Runs on the maintainer's thread. */
typedef void (*index_maintainer_hook)(void *ctx, uint64_t pass);

/* Consecutive failed passes after which an index counts as failing (index_maintainer_status):
 * one failure can be a passing hiccup, this many in a row is not. */
#define INDEX_MAINTAINER_FAILING_PASSES 3

typedef struct {
    bool first_pass_done;        /* the cold start is over (whatever its outcome) */
    bool bm25_warm;              /* a pruned BM25 index is published */
    bool vector_warm;            /* a vector index is published */
    bool busy;                   /* a pass is running now */
    int64_t visible;             /* store change counter both indexes reflect (-1: none yet) */
    uint64_t passes;             /* passes run */
    uint64_t builds;             /* passes that built a new generation of either index */
    double last_pass_s;          /* duration of the last pass */
    char last_error[QR_ERR_LEN]; /* the last pass's error, "" when it succeeded */
    /* Consecutive passes that could not bring each index up to date (0: the last one did). At
     * INDEX_MAINTAINER_FAILING_PASSES or more the index is failing: it serves what it last had, and
     * changes since then do not reach it. */
    uint64_t vector_failures, bm25_failures;
    /* With a system of record (store.backend = postgres) a second thread follows its feed into
     * the local store every poll_ms and wakes the pass above when it applied something. */
    bool following;       /* that thread runs */
    bool feed_ok;         /* its last poll read the primary's counter and applied the feed */
    int64_t feed_counter; /* the local store's counter after its last poll */
    int64_t feed_primary; /* the primary's counter as its last poll read it */
    /* How long this node has been behind a counter the primary had (from when a poll first read
     * a counter the store had not reached until a poll reaches it), or unable to poll; 0: caught
     * up. /readyz compares it with store.max_lag_ms. */
    uint64_t feed_behind_ms;
    uint64_t feed_lag_last_ms;   /* the last counter's wait: read on the primary to applied here */
    char feed_error[QR_ERR_LEN]; /* the last poll's error, "" when it succeeded */
} index_maintainer_status;

/* Opens a store handle on data_dir for the thread and starts it; the first pass begins at once.
 * QR_EINVAL for bad options, the store's errors, QR_ENOMEM. On error *out is NULL. */
qr_status index_maintainer_start(const index_maintainer_opts *o, index_maintainer **out, char *err);
/* Stops the thread (a build in progress finishes first), then closes the published indexes and
 * its store handle. NULL is a no-op. No other call may be in progress or follow. */
void index_maintainer_stop(index_maintainer *m);

/* A write happened: catch up now. Never waits. */
void index_maintainer_signal(index_maintainer *m);
/* Signals, then waits until both indexes reflect the store's change counter `counter` (e.g. the
 * one a write left: store_change_counter after it), or timeout_ms passes: QR_ETIMEOUT. A pass
 * that fails to catch up is reported with its error (QR_EIO, ...) rather than waited out. For
 * `?refresh=wait_for`; never call it from a thread a search needs. */
qr_status index_maintainer_wait(index_maintainer *m, int64_t counter, uint64_t timeout_ms, char *err);
/* Asks for a pass that builds new generations of both indexes whatever their lag, and waits for
 * it (rep may be NULL: the vector index's report). The pass's errors. */
qr_status index_maintainer_rebuild(index_maintainer *m, index_sync_report *rep, char *err);

/* The published indexes (NULL until the first is published, or with the option off). Never
 * waits. */
vindex *index_maintainer_vindex(index_maintainer *m);
bm25_index *index_maintainer_bm25(index_maintainer *m);
void index_maintainer_get_status(index_maintainer *m, index_maintainer_status *out);
/* For tests: called before each pass (NULL: none). Set it before the passes it should slow. */
void index_maintainer_set_hook(index_maintainer *m, index_maintainer_hook fn, void *ctx);

#endif
