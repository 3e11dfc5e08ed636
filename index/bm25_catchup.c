/*
 * bm25_catchup: bringing the pruned BM25 index up to the store's latest change without a
 * rebuild. The changes after the index's counter (chunks deleted, chunks added with their text,
 * documents whose ACL or fields changed) are read and tokenised first, outside the index's lock,
 * then applied at once under the write lock, so that a catch-up is all or nothing: tombstones
 * for deleted rows, new rows and postings in the in-memory delta, refreshed permission sets. A
 * lag that needs a new generation goes to bm25_build.c (or is refused, see bm25_sync).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/bm25_int.h"
#include "index/feed.h"
#include "index/files_int.h"
#include "index/text.h"

#define LOG_COMPONENT "bm25"

/* ---- catching up ------------------------------------------------------------------------- */

/* Changes read from the store before any is applied, so that a catch-up is all or nothing. */
typedef struct {
    store *s;
    size_t max; /* more chunk changes than this: a rebuild is needed */
    bool too_many, needs_rebuild;
    int64_t *del;
    size_t ndel, cap_del;
    struct added {
        int64_t chunk_id;
        uint32_t doc, len;
        size_t first, n; /* terms[first..first+n) */
    } * add;
    size_t nadd, cap_add;
    char **terms;
    uint32_t (*tf)[NCOLS];
    size_t nterms, cap_terms;
    chunk_terms ct;
    /* documents changed */
    struct changed_doc {
        uint32_t doc;
        size_t first, n; /* principals[first..first+n) */
    } * docs;
    size_t ndocs, cap_docs;
    char **principals;
    size_t nprin, cap_prin;
} staged;

static void staged_free(staged *g)
{
    free(g->del);
    free(g->add);
    for (size_t i = 0; i < g->nterms; i++)
        free(g->terms[i]);
    free(g->terms);
    free(g->tf);
    bm25_chunk_terms_free(&g->ct);
    free(g->docs);
    for (size_t i = 0; i < g->nprin; i++)
        free(g->principals[i]);
    free(g->principals);
}

/* Makes room for one more element of arr (n used of cap): true, or false with arr and cap as they
 * were (so that what it holds is still freed). */
#define GROW(arr, n, cap, init)                                          \
    ((n) < (cap) || ({                                                   \
         size_t cap_ = (cap) ? (cap)*2 : (init);                         \
         __typeof__(arr) grown_ = realloc((arr), cap_ * sizeof(*(arr))); \
         if (grown_) {                                                   \
             (arr) = grown_;                                             \
             (cap) = cap_;                                               \
         }                                                               \
         grown_ != NULL;                                                 \
     }))

static qr_status stage_chunk(void *ctx, const store_text *t, char *err)
{
    staged *g = ctx;
    if (g->ndel + g->nadd >= g->max) {
        g->too_many = true;
        return QR_ELIMIT; /* stops the walk */
    }
    if (t->deleted) {
        if (!GROW(g->del, g->ndel, g->cap_del, 256))
            return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
        g->del[g->ndel++] = t->chunk_id;
        return QR_OK;
    }
    if (t->doc < 0 || t->doc > (int64_t)DOC_KEY_MAX) {
        g->needs_rebuild = true; /* the build refuses it with the reason */
        return QR_ELIMIT;
    }
    qr_status st = bm25_tokenize_chunk(g->s, t, &g->ct, err);
    if (st)
        return st;
    if (!GROW(g->add, g->nadd, g->cap_add, 256))
        return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
    g->add[g->nadd++] = (struct added){t->chunk_id, (uint32_t)t->doc, g->ct.len, g->nterms, g->ct.n};
    for (size_t i = 0; i < g->ct.n; i++) {
        if (g->nterms == g->cap_terms) {
            size_t cap = g->cap_terms ? g->cap_terms * 2 : 1024;
            char **terms = realloc(g->terms, cap * sizeof(*terms));
            if (terms)
                g->terms = terms;
            uint32_t(*tf)[NCOLS] = terms ? realloc(g->tf, cap * sizeof(*tf)) : NULL;
            if (!tf)
                return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
            g->tf = tf;
            g->cap_terms = cap;
        }
        if (!(g->terms[g->nterms] = strdup(g->ct.pool + g->ct.e[i].off)))
            return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
        memcpy(g->tf[g->nterms], g->ct.e[i].tf, sizeof(g->tf[0]));
        g->nterms++;
    }
    return QR_OK;
}

static qr_status stage_doc(void *ctx, const store_doc_change *d, char *err)
{
    staged *g = ctx;
    if (d->fts_rewritten) {
        g->needs_rebuild = true;
        return QR_ELIMIT;
    }
    if (d->doc < 0 || d->doc > (int64_t)DOC_KEY_MAX)
        return QR_OK; /* no row of the index can belong to it */
    if (!GROW(g->docs, g->ndocs, g->cap_docs, 64))
        return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
    g->docs[g->ndocs++] = (struct changed_doc){(uint32_t)d->doc, g->nprin, d->nacl};
    for (size_t i = 0; i < d->nacl; i++) {
        if (!GROW(g->principals, g->nprin, g->cap_prin, 64) || !(g->principals[g->nprin] = strdup(d->acl[i])))
            return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
        g->nprin++;
    }
    return QR_OK;
}

bool bm25_set_bit(uint64_t **bits, size_t *nwords, size_t bit)
{
    if ((bit >> 6) >= *nwords) {
        size_t n = *nwords ? *nwords : 16;
        while ((bit >> 6) >= n)
            n *= 2;
        uint64_t *b = realloc(*bits, n * sizeof(*b));
        if (!b)
            return false;
        memset(b + *nwords, 0, (n - *nwords) * sizeof(*b));
        *bits = b;
        *nwords = n;
    }
    (*bits)[bit >> 6] |= 1ULL << (bit & 63);
    return true;
}

static void clear_bit(uint64_t *bits, size_t nwords, size_t bit)
{
    if ((bit >> 6) < nwords)
        bits[bit >> 6] &= ~(1ULL << (bit & 63));
}

uint32_t bm25_find_row(const bm25_index *x, int64_t chunk_id)
{
    const int64_t *ids = x->gen_ids;
    size_t n = x->gen_rows, base = 0;
    if (x->d_rows && chunk_id >= x->d_ids[0]) {
        ids = x->d_ids;
        n = x->d_rows;
        base = x->gen_rows;
    }
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ids[mid] < chunk_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && ids[lo] == chunk_id ? (uint32_t)(base + lo) : UINT32_MAX;
}

/* Applies staged changes. Fails only for memory, after which the index is marked broken. */
static qr_status apply(bm25_index *x, staged *g, char *err)
{
    for (size_t i = 0; i < g->ndel; i++) {
        uint32_t row = bm25_find_row(x, g->del[i]);
        if (row == UINT32_MAX || bm25_row_dead(x, row))
            continue; /* added and deleted while the index was not looking */
        if (!bm25_set_bit(&x->dead, &x->dead_words, row))
            return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
        if (row < x->gen_rows) {
            if (!GROW(x->dead_gen, x->ndead_gen, x->cap_dead_gen, 256))
                return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
            x->dead_gen[x->ndead_gen++] = row;
        }
        x->ndead++;
        x->live_rows--;
        x->live_len -= bm25_row_len(x, row);
        x->changes++;
    }
    for (size_t i = 0; i < g->nadd; i++) {
        const struct added *a = &g->add[i];
        if (x->d_rows && a->chunk_id <= x->d_ids[x->d_rows - 1])
            continue; /* already in the delta */
        if (x->gen_rows && a->chunk_id <= x->gen_ids[x->gen_rows - 1])
            continue;
        if (x->gen_rows + x->d_rows >= UINT32_MAX - 1)
            return qr_fail(err, QR_ELIMIT, "more chunks than the BM25 index holds");
        if (x->d_rows == x->d_cap) {
            size_t cap = x->d_cap ? x->d_cap * 2 : 256;
            int64_t *ids = realloc(x->d_ids, cap * sizeof(*ids));
            if (ids)
                x->d_ids = ids;
            uint32_t *docs = realloc(x->d_docs, cap * sizeof(*docs));
            if (docs)
                x->d_docs = docs;
            uint32_t *lens = realloc(x->d_lens, cap * sizeof(*lens));
            if (lens)
                x->d_lens = lens;
            if (!ids || !docs || !lens)
                return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
            x->d_cap = cap;
        }
        uint32_t row = (uint32_t)(x->gen_rows + x->d_rows);
        x->d_ids[x->d_rows] = a->chunk_id;
        x->d_docs[x->d_rows] = a->doc;
        x->d_lens[x->d_rows] = a->len;
        x->d_rows++;
        x->live_rows++;
        x->live_len += a->len;
        if (a->doc > x->max_doc)
            x->max_doc = a->doc;
        x->changes++;
        for (size_t j = a->first; j < a->first + a->n; j++) {
            size_t at = x->ndl;
            bool added;
            if (!bm25_smap_put(&x->d_terms, g->terms[j], strlen(g->terms[j]), &at, &added))
                return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
            if (added) {
                if (!GROW(x->dl, x->ndl, x->cap_dl, 256))
                    return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
                memset(&x->dl[at], 0, sizeof(x->dl[at]));
                x->dl[at].min_len = UINT32_MAX;
                x->ndl++;
            }
            delta_list *l = &x->dl[at];
            if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 2; /* most of a delta's terms are rare */
                uint32_t *rows = realloc(l->rows, cap * sizeof(*rows));
                if (rows)
                    l->rows = rows;
                uint32_t *tfp = rows ? realloc(l->tfp, cap * sizeof(*tfp)) : NULL;
                if (!tfp)
                    return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
                l->tfp = tfp;
                l->cap = cap;
            }
            const uint32_t *tf = g->tf[j];
            uint32_t packed = tf[0] << 24 | tf[1] << 16 | tf[2];
            if (tf[0] >= 0x80 || tf[1] >= 0x100 || tf[2] >= 0x10000) {
                if (x->n_over >= TF_OVER || !GROW(x->d_over, x->n_over, x->cap_over, 16))
                    return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
                memcpy(x->d_over[x->n_over], tf, sizeof(x->d_over[0]));
                packed = TF_OVER | (uint32_t)x->n_over++;
            }
            l->rows[l->n] = row;
            l->tfp[l->n] = packed;
            l->n++;
            for (int c = 0; c < NCOLS; c++)
                if (g->tf[j][c] > l->max_tf[c])
                    l->max_tf[c] = g->tf[j][c];
            if (a->len < l->min_len)
                l->min_len = a->len;
        }
    }
    /* documents whose ACL may have changed: each cached set learns the document's ACL now */
    pthread_mutex_lock(&x->cache_mu);
    qr_status st = QR_OK;
    if (g->ndocs)
        bm25_unions_clear(x);
    /* by name: a catch-up may bring tens of thousands of documents and the cache a thousand
     * principals */
    smap names = {0};
    for (size_t p = 0; p < x->nps && !st && g->ndocs; p++) {
        size_t at = p;
        bool added;
        if (!bm25_smap_put(&names, x->ps[p].name, strlen(x->ps[p].name), &at, &added))
            st = qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
    }
    for (size_t i = 0; i < g->ndocs && !st; i++) {
        const struct changed_doc *d = &g->docs[i];
        for (size_t p = 0; p < x->nps; p++)
            clear_bit(x->ps[p].bits, x->ps[p].nwords, d->doc);
        for (size_t j = d->first; j < d->first + d->n && !st; j++) {
            size_t p;
            if (bm25_smap_get(&names, g->principals[j], strlen(g->principals[j]), &p) &&
                !bm25_set_bit(&x->ps[p].bits, &x->ps[p].nwords, d->doc))
                st = qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
        }
    }
    bm25_smap_free(&names);
    pthread_mutex_unlock(&x->cache_mu);
    return st;
}

/* Chunk changes a generation of gen_rows rows takes in memory before a rebuild: bm25.delta_max,
 * or a quarter of the generation when that is less (at least 1,000), so that a small index is
 * rebuilt, cheaply, instead of carrying a delta that grows the server's memory for hours. */
static size_t delta_limit(size_t gen_rows, size_t delta_max)
{
    size_t limit = gen_rows / 4 > 1000 ? gen_rows / 4 : 1000;
    return limit < delta_max ? limit : delta_max;
}

/* Whether a staged chunk has an id below the last row the index holds without being one of its
 * rows. The index keeps its rows in id order and appends what a catch-up adds; a store's new chunk
 * ids are larger than every earlier one, except in a follower's store (store_follow.c), which may
 * learn of a document after others that changed later and so add ids below those it has: only a
 * rebuild places them. */
static bool added_below_rows(bm25_index *x, const staged *g)
{
    bool below = false;
    pthread_rwlock_rdlock(&x->lock);
    int64_t last = x->d_rows ? x->d_ids[x->d_rows - 1] : x->gen_rows ? x->gen_ids[x->gen_rows - 1] : 0;
    for (size_t i = 0; i < g->nadd && !below; i++)
        below = g->add[i].chunk_id <= last && bm25_find_row(x, g->add[i].chunk_id) == UINT32_MAX;
    pthread_rwlock_unlock(&x->lock);
    return below;
}

/* Reads the changes after x->counter; caller holds sync_mu. */
static qr_status catch_up(bm25_index *x, store *s, bool rebuild_ok, bool force, bm25_report *rep, char *err)
{
    int64_t now = 0, pruned = 0;
    qr_status st = store_change_counter(s, &now, err);
    if (!st)
        st = store_pruned_through(s, &pruned, err);
    if (st)
        return st;
    pthread_rwlock_rdlock(&x->lock);
    int64_t seen = x->counter;
    bool have = x->map != NULL, broken = x->broken;
    /* the maintainer (rebuild_ok) rebuilds a small index early; a search catches up to delta_max */
    size_t changes = x->changes,
           limit = rebuild_ok ? delta_limit(x->gen_rows, x->o.delta_max) : x->o.delta_max;
    pthread_rwlock_unlock(&x->lock);
    if (have && !broken && !force && now == seen) {
        if (rep)
            rep->counter = now;
        return QR_OK;
    }
    if (!rebuild_ok && x->lagging)
        return qr_fail(err, QR_EUNAVAILABLE, "the BM25 index needs a rebuild (%s)",
                       __atomic_load_n(&x->building, __ATOMIC_ACQUIRE) ? "one is running" : "too far behind");
    const char *why = force           ? "asked to"
                      : !have         ? "no generation yet"
                      : broken        ? "a catch-up failed"
                      : now < seen    ? "the store's counter went back"
                      : pruned > seen ? "the store forgot tombstones the index needs"
                                      : NULL;
    staged g = {.s = s, .max = limit > changes ? limit - changes : 0};
    int64_t c1 = 0, c2 = 0;
    if (!why) {
        st = store_tokenize(s, "", 0, bm25_on_chunk_token, &g.ct, err);
        if (!st)
            st = store_text_changes_since(s, seen, stage_chunk, &g, &c1, err);
        if (st == QR_ELIMIT && (g.too_many || g.needs_rebuild))
            st = QR_OK;
        if (!st && !g.too_many && !g.needs_rebuild) {
            st = store_docs_changed_since(s, seen, stage_doc, &g, &c2, err);
            if (st == QR_ELIMIT && g.needs_rebuild)
                st = QR_OK;
        }
        if (g.too_many)
            why = "more changes than bm25.delta_max (or a quarter of the index)";
        else if (g.needs_rebuild)
            why = "a title was rewritten under the same chunk ids";
        else if (added_below_rows(x, &g))
            why = "chunks were added under ids below the index's rows";
        /* staging up to delta_max changes is not cheap: no search repeats it until a swap */
        x->lagging = why != NULL;
    }
    if (st) {
        staged_free(&g);
        return st;
    }
    if (why) {
        staged_free(&g);
        if (!rebuild_ok)
            return qr_fail(err, QR_EUNAVAILABLE, "the BM25 index needs a rebuild (%s)", why);
        qr_log(QR_LOG_INFO, LOG_COMPONENT, "rebuilding the BM25 index: %s", why);
        st = bm25_rebuild(x, s, rep, err);
        if (st)
            return st;
        return catch_up(x, s, false, false, rep, err); /* the changes made during the build */
    }
    pthread_rwlock_wrlock(&x->lock);
    st = apply(x, &g, err);
    if (st)
        x->broken = true;
    else
        x->counter = c1; /* doc changes up to c2 >= c1 were applied too: re-applying them is harmless */
    pthread_rwlock_unlock(&x->lock);
    if (rep) {
        rep->added += g.nadd;
        rep->removed += g.ndel;
        rep->docs_changed += g.ndocs;
        rep->counter = c1;
    }
    (void)c2;
    staged_free(&g);
    return st;
}

qr_status bm25_sync(bm25_index *x, store *s, bool rebuild_ok, bool force, bm25_report *rep, char *err)
{
    if (!x || !s)
        return qr_fail(err, QR_EINVAL, "bm25_sync: NULL argument");
    if (rep)
        memset(rep, 0, sizeof(*rep));
    uint64_t t0 = qr_now_ns();
    /* a handle inside a batch reads writes that may be rolled back: the shared index must not
     * learn them (nor write a generation from them); it may serve only if it is at the same
     * counter, which the batch has not moved */
    bool in_batch = store_in_batch(s);
    if (in_batch && force)
        return qr_fail(err, QR_EINVAL, "bm25_sync: a batch is open on the store handle");
    if (!force) {
        /* the common case, without waiting for anyone: nothing changed */
        int64_t now = 0;
        qr_status st = store_change_counter(s, &now, err);
        if (st)
            return st;
        pthread_rwlock_rdlock(&x->lock);
        bool current = x->map && !x->broken && x->counter == now;
        pthread_rwlock_unlock(&x->lock);
        if (current) {
            if (rep)
                rep->counter = now;
            return QR_OK;
        }
    }
    if (in_batch)
        return qr_fail(err, QR_EUNAVAILABLE, "the BM25 index does not follow a batch in progress");
    /* held for catch-ups and a build's swap, both short; a build itself lets go of it */
    pthread_mutex_lock(&x->sync_mu);
    qr_status st = catch_up(x, s, rebuild_ok || force, force, rep, err);
    pthread_mutex_unlock(&x->sync_mu);
    if (rep)
        rep->seconds = (qr_now_ns() - t0) / 1e9;
    return st;
}
