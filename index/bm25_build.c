/*
 * bm25_build: building a generation of the pruned BM25 index from the store (store_each_text):
 * every chunk tokenised with FTS5's own tokenizer into its distinct terms per column, postings
 * appended per term in row order and cut into blocks with their maxima, then written by
 * bm25_file.c and served. Also the string map the build, the delta and the caches key terms by.
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

/* ---- a string-keyed map (open addressing; values are indices) ---------------------------- */

uint32_t bm25_hash_str(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h ? h : 1;
}

void bm25_smap_free(smap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->hashes);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* The slot of key (n bytes, hash h): its own when present, else the empty one to fill. */
static size_t smap_slot(const smap *m, const char *key, size_t n, uint32_t h)
{
    size_t i = h & (m->cap - 1);
    while (m->keys[i] && !(m->hashes[i] == h && strlen(m->keys[i]) == n && memcmp(m->keys[i], key, n) == 0))
        i = (i + 1) & (m->cap - 1);
    return i;
}

bool bm25_smap_get(const smap *m, const char *key, size_t n, size_t *val)
{
    if (!m->cap)
        return false;
    size_t i = smap_slot(m, key, n, bm25_hash_str(key, n));
    if (!m->keys[i])
        return false;
    *val = m->vals[i];
    return true;
}

static bool smap_grow(smap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    smap g = {calloc(cap, sizeof(char *)), calloc(cap, sizeof(uint32_t)), calloc(cap, sizeof(size_t)), cap,
              0};
    if (!g.keys || !g.hashes || !g.vals) {
        free(g.keys);
        free(g.hashes);
        free(g.vals);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = m->hashes[i] & (cap - 1);
        while (g.keys[j])
            j = (j + 1) & (cap - 1);
        g.keys[j] = m->keys[i];
        g.hashes[j] = m->hashes[i];
        g.vals[j] = m->vals[i];
        g.n++;
    }
    free(m->keys);
    free(m->hashes);
    free(m->vals);
    *m = g;
    return true;
}

/* Finds key (whose hash_str is h) or inserts it with value *val; *added says which. false: out
 * of memory. */
static bool smap_put_hashed(smap *m, const char *key, size_t n, uint32_t h, size_t *val, bool *added)
{
    if ((m->n + 1) * 2 > m->cap && !smap_grow(m))
        return false;
    size_t i = smap_slot(m, key, n, h);
    *added = !m->keys[i];
    if (!*added) {
        *val = m->vals[i];
        return true;
    }
    char *k = malloc(n + 1);
    if (!k)
        return false;
    memcpy(k, key, n);
    k[n] = '\0';
    m->keys[i] = k;
    m->hashes[i] = h;
    m->vals[i] = *val;
    m->n++;
    return true;
}

bool bm25_smap_put(smap *m, const char *key, size_t n, size_t *val, bool *added)
{
    return smap_put_hashed(m, key, n, bm25_hash_str(key, n), val, added);
}

/* ---- tokenising a chunk ------------------------------------------------------------------- */

static void chunk_terms_reset(chunk_terms *c)
{
    for (size_t i = 0; i < c->n; i++) {
        size_t j = c->e[i].hash & (c->nslots - 1);
        while (c->slots[j])
            c->slots[j] = 0, j = (j + 1) & (c->nslots - 1);
    }
    c->n = 0;
    c->pool_len = 0;
    c->len = 0;
}

void bm25_chunk_terms_free(chunk_terms *c)
{
    free(c->pool);
    free(c->slots);
    free(c->e);
}

static bool chunk_terms_grow(chunk_terms *c)
{
    size_t ns = c->nslots ? c->nslots * 2 : 512;
    uint32_t *slots = calloc(ns, sizeof(*slots));
    if (!slots)
        return false;
    for (size_t i = 0; i < c->n; i++) {
        size_t j = c->e[i].hash & (ns - 1);
        while (slots[j])
            j = (j + 1) & (ns - 1);
        slots[j] = (uint32_t)i + 1;
    }
    free(c->slots);
    c->slots = slots;
    c->nslots = ns;
    return true;
}

qr_status bm25_on_chunk_token(void *ctx, const char *form, size_t form_len, size_t start, size_t end,
                              char *err)
{
    (void)start;
    (void)end;
    chunk_terms *c = ctx;
    if (((c->n + 1) * 2 > c->nslots && !chunk_terms_grow(c)) || form_len > UINT32_MAX / 2)
        return qr_fail(err, QR_ENOMEM, "out of memory tokenising for the BM25 index");
    uint32_t h = bm25_hash_str(form, form_len);
    size_t j = h & (c->nslots - 1);
    for (; c->slots[j]; j = (j + 1) & (c->nslots - 1)) {
        chunk_term *t = &c->e[c->slots[j] - 1];
        if (t->hash == h && t->len == form_len && memcmp(c->pool + t->off, form, form_len) == 0) {
            t->tf[c->col]++;
            c->len++;
            return QR_OK;
        }
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        chunk_term *e = realloc(c->e, cap * sizeof(*e));
        if (!e)
            return qr_fail(err, QR_ENOMEM, "out of memory tokenising for the BM25 index");
        c->e = e;
        c->cap = cap;
    }
    if (c->pool_len + form_len + 1 > c->pool_cap) {
        size_t cap = c->pool_cap ? c->pool_cap * 2 : 4096;
        while (c->pool_len + form_len + 1 > cap)
            cap *= 2;
        char *pool = realloc(c->pool, cap);
        if (!pool || cap > UINT32_MAX)
            return qr_fail(err, QR_ENOMEM, "out of memory tokenising for the BM25 index");
        c->pool = pool;
        c->pool_cap = cap;
    }
    chunk_term *t = &c->e[c->n];
    *t = (chunk_term){.hash = h, .off = (uint32_t)c->pool_len, .len = (uint32_t)form_len};
    memcpy(c->pool + c->pool_len, form, form_len);
    c->pool[c->pool_len + form_len] = '\0';
    c->pool_len += form_len + 1;
    t->tf[c->col] = 1;
    c->slots[j] = (uint32_t)++c->n;
    c->len++;
    return QR_OK;
}

qr_status bm25_tokenize_chunk(store *s, const store_text *t, chunk_terms *c, char *err)
{
    chunk_terms_reset(c);
    for (int col = 0; col < NCOLS; col++) {
        c->col = col;
        qr_status st =
            store_tokenize(s, t->col[col] ? t->col[col] : "", t->col_len[col], bm25_on_chunk_token, c, err);
        if (st)
            return st;
    }
    return QR_OK;
}

/* ---- building a generation --------------------------------------------------------------- */

bool bm25_close_block(term_builder *b)
{
    if (!b->cur.n)
        return true;
    if (b->nblocks == b->cap_blocks) {
        size_t cap = b->cap_blocks ? b->cap_blocks * 2 : 1;
        file_block *bl = realloc(b->blocks, cap * sizeof(*bl));
        if (!bl)
            return false;
        b->blocks = bl;
        b->cap_blocks = cap;
    }
    b->blocks[b->nblocks++] = b->cur;
    memset(&b->cur, 0, sizeof(b->cur));
    return true;
}

static bool builder_posting(term_builder *b, uint32_t row, uint32_t len, const uint32_t tf[NCOLS])
{
    if (b->cur.n == BLOCK && !bm25_close_block(b))
        return false;
    if (b->len + 32 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 32;
        while (b->len + 32 > cap)
            cap *= 2;
        unsigned char *d = realloc(b->data, cap);
        if (!d)
            return false;
        b->data = d;
        b->cap = cap;
    }
    if (!b->cur.n) {
        b->cur.first_row = row;
        b->cur.data_off = b->len;
        b->cur.min_len = UINT32_MAX;
        b->prev_row = row;
    }
    b->len += bm25_encode_posting(b->data + b->len, row - b->prev_row, tf);
    b->prev_row = row;
    b->cur.last_row = row;
    b->cur.n++;
    if (len < b->cur.min_len)
        b->cur.min_len = len;
    if (!b->df)
        b->min_len = UINT32_MAX;
    if (len < b->min_len)
        b->min_len = len;
    for (int c = 0; c < NCOLS; c++) {
        if (tf[c] > b->cur.max_tf[c])
            b->cur.max_tf[c] = tf[c];
        if (tf[c] > b->max_tf[c])
            b->max_tf[c] = tf[c];
    }
    b->df++;
    return true;
}

static qr_status build_chunk(void *ctx, const store_text *t, char *err)
{
    builder *b = ctx;
    if (t->doc < 0 || t->doc > (int64_t)DOC_KEY_MAX)
        return qr_fail(err, QR_ELIMIT, "document key %lld does not fit the BM25 index", (long long)t->doc);
    if (b->nrows >= UINT32_MAX - 1)
        return qr_fail(err, QR_ELIMIT, "more chunks than the BM25 index holds");
    qr_status st = bm25_tokenize_chunk(b->s, t, &b->ct, err);
    if (st)
        return st;
    if (b->nrows == b->cap_rows) {
        size_t cap = b->cap_rows ? b->cap_rows * 2 : 4096;
        int64_t *ids = realloc(b->ids, cap * sizeof(*ids));
        if (ids)
            b->ids = ids;
        uint32_t *docs = realloc(b->docs, cap * sizeof(*docs));
        if (docs)
            b->docs = docs;
        uint32_t *lens = realloc(b->lens, cap * sizeof(*lens));
        if (lens)
            b->lens = lens;
        if (!ids || !docs || !lens)
            return qr_fail(err, QR_ENOMEM, "out of memory building the BM25 index");
        b->cap_rows = cap;
    }
    uint32_t row = (uint32_t)b->nrows;
    b->ids[row] = t->chunk_id;
    b->docs[row] = (uint32_t)t->doc;
    b->lens[row] = b->ct.len;
    b->total_len += b->ct.len;
    b->nrows++;
    for (size_t i = 0; i < b->ct.n; i++) {
        const chunk_term *ct = &b->ct.e[i];
        size_t at = b->ntb;
        bool added;
        if (!smap_put_hashed(&b->terms, b->ct.pool + ct->off, ct->len, ct->hash, &at, &added))
            return qr_fail(err, QR_ENOMEM, "out of memory building the BM25 index");
        if (added) {
            if (b->ntb == b->cap_tb) {
                size_t cap = b->cap_tb ? b->cap_tb * 2 : 4096;
                term_builder *tb = realloc(b->tb, cap * sizeof(*tb));
                if (!tb)
                    return qr_fail(err, QR_ENOMEM, "out of memory building the BM25 index");
                b->tb = tb;
                b->cap_tb = cap;
            }
            memset(&b->tb[at], 0, sizeof(b->tb[at]));
            b->ntb++;
        }
        if (!builder_posting(&b->tb[at], row, b->ct.len, ct->tf))
            return qr_fail(err, QR_ENOMEM, "out of memory building the BM25 index");
    }
    return QR_OK;
}

static void builder_free(builder *b)
{
    for (size_t i = 0; i < b->ntb; i++) {
        free(b->tb[i].data);
        free(b->tb[i].blocks);
    }
    free(b->tb);
    bm25_smap_free(&b->terms);
    free(b->ids);
    free(b->docs);
    free(b->lens);
    bm25_chunk_terms_free(&b->ct);
}

/* Builds a generation from every chunk of s, writes it and serves it; the principal sets are
 * dropped (they may predate ACL changes the new generation's counter has passed). The caller
 * holds sync_mu; it is let go while the generation is built and written (seconds to a minute),
 * which touches nothing a search reads, so that searches keep catching the published generation
 * up meanwhile, and taken again to swap. build_mu keeps builds one at a time. */
qr_status bm25_rebuild(bm25_index *x, store *s, bm25_report *rep, char *err)
{
    uint64_t t0 = qr_now_ns();
    builder b = {.s = s};
    int64_t counter = 0, uid = 0;
    __atomic_store_n(&x->building, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&x->sync_mu);
    pthread_mutex_lock(&x->build_mu);
    /* the tokenizer is made on first use, which reads the schema: not inside the walk */
    qr_status st = store_uid(s, &uid, err);
    if (!st)
        st = store_tokenize(s, "", 0, bm25_on_chunk_token, &b.ct, err);
    if (!st)
        st = store_each_text(s, build_chunk, &b, &counter, err);
    if (!st)
        st = bm25_write_generation(&b, x->dir, counter, uid, err);
    builder_free(&b);
    if (x->build_hook)
        x->build_hook(x->build_hook_arg);
    pthread_mutex_lock(&x->sync_mu);
    pthread_mutex_unlock(&x->build_mu);
    __atomic_store_n(&x->building, 0, __ATOMIC_RELEASE);
    if (st)
        return st;
    pthread_rwlock_wrlock(&x->lock);
    bm25_drop_state(x);
    pthread_mutex_lock(&x->cache_mu);
    bm25_psets_clear(x);
    pthread_mutex_unlock(&x->cache_mu);
    st = bm25_load_generation(x, err);
    x->broken = st != QR_OK;
    x->lagging = false;
    pthread_rwlock_unlock(&x->lock);
    if (st)
        return st;
    if (rep)
        rep->rebuilt = true;
    qr_log(QR_LOG_INFO, LOG_COMPONENT, "built the BM25 index: %zu chunks, %llu terms, %.1f s", x->gen_rows,
           (unsigned long long)x->h->nterms, (qr_now_ns() - t0) / 1e9);
    return QR_OK;
}
