/*
 * The pruned BM25 index ([bm25-topk]): quarry's own postings beside FTS5, searched by MaxScore
 * (Turtle and Flood 1995). index/index.h has the contract; this file has four parts:
 *
 *   the generation file   built from store_each_text with FTS5's own tokenizer, written under a
 *                         temporary name and renamed, mapped read-only at open;
 *   the delta             chunks added since the generation, tokenised the same way into
 *                         in-memory lists whose rows follow the generation's (chunk ids only grow,
 *                         so row order stays chunk id order), and tombstones for deleted rows;
 *   permissions           per-principal bitsets over document keys, kept up to date from
 *                         store_docs_changed_since;
 *   the search            MaxScore over (generation blocks, then delta) per term, the permission
 *                         and tombstone test before any scoring, a top-k heap with an optional
 *                         per-document limit.
 *
 * Scores are FTS5's bm25() computed as FTS5 computes it (fts5_bm25_function in SQLite 3.40):
 * IDF log((N - n + 0.5) / (n + 0.5)) floored at 1e-6, k1 1.2, b 0.75, a term's frequency the sum
 * of its column weights added once per occurrence in column order, the row length summed over all
 * columns, the per-term values added in query order. N, the total length and every n are those
 * of the live rows, which are FTS5's rows, so the results are bit for bit store_search_bm25's.
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

#include "index/feed.h"
#include "index/files_int.h"
#include "index/text.h"

#define LOG_COMPONENT "bm25"
#define NCOLS         3
#define BLOCK         128 /* postings per block */
#define BM25_K1       1.2
#define BM25_B        0.75
/* A bound is compared with a score only after this relative slack, so that rounding in the
 * bound's sum can never prune a chunk whose exact score would have entered the top k. */
#define BOUND_SLACK  1e-9
#define FILE_NAME    "current.bm25"
#define FILE_MAGIC   "QRYBM25\x01"
#define FILE_VERSION 1
#define DOC_KEY_MAX  (UINT32_MAX - 1) /* document keys are stored as 32 bits */
#define DFCACHE_MAX  65536            /* terms whose tombstoned-row counts are cached */
#define UNION_CACHE  64               /* callers whose unions of principal sets are kept */

/* ---- the file ---------------------------------------------------------------------------- */

typedef struct {
    char magic[8];
    uint32_t version, ncols;
    int64_t counter; /* the store change counter the generation was built from */
    uint64_t nrows, nterms, nblocks, total_len, data_len, strings_len;
    uint64_t off_ids, off_docs, off_lens, off_terms, off_strings, off_blocks, off_data, size;
    uint64_t checksum; /* of every byte after the header */
    int64_t store_uid; /* store_uid of the store it was built from */
    uint64_t npostings;
    uint64_t reserved[1];
} file_header;

typedef struct {
    uint64_t str_off;
    uint32_t str_len, df;
    uint64_t first_block;
    uint32_t nblocks, min_len;
    uint32_t max_tf[NCOLS];
    uint32_t pad;
} file_term;

typedef struct {
    uint32_t first_row, last_row;
    uint64_t data_off;
    uint32_t n, min_len;
    uint32_t max_tf[NCOLS];
    uint32_t pad;
} file_block;

static size_t put_varint(unsigned char *out, uint32_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (unsigned char)v;
    return n;
}

static const unsigned char *get_varint(const unsigned char *p, const unsigned char *end, uint32_t *v)
{
    uint32_t x = 0;
    for (int shift = 0; p < end && shift < 35; shift += 7) {
        unsigned char b = *p++;
        x |= (uint32_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return p;
        }
    }
    return NULL;
}

/* One posting: the row delta, then its frequencies: one byte for the usual case (the term only
 * in the body, fewer than 128 times), else 0x80 and three varints. */
static size_t encode_posting(unsigned char *out, uint32_t delta, const uint32_t tf[NCOLS])
{
    size_t n = put_varint(out, delta);
    if (!tf[0] && !tf[1] && tf[2] < 0x80) {
        out[n++] = (unsigned char)tf[2];
        return n;
    }
    out[n++] = 0x80;
    for (int c = 0; c < NCOLS; c++)
        n += put_varint(out + n, tf[c]);
    return n;
}

/* ---- a string-keyed map (open addressing; values are indices) ---------------------------- */

typedef struct {
    char **keys;
    uint32_t *hashes;
    size_t *vals;
    size_t cap, n; /* cap is 0 or a power of two */
} smap;

static uint32_t hash_str(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h ? h : 1;
}

static void smap_free(smap *m)
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

static bool smap_get(const smap *m, const char *key, size_t n, size_t *val)
{
    if (!m->cap)
        return false;
    size_t i = smap_slot(m, key, n, hash_str(key, n));
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

static bool smap_put(smap *m, const char *key, size_t n, size_t *val, bool *added)
{
    return smap_put_hashed(m, key, n, hash_str(key, n), val, added);
}

/* ---- tokenising a chunk ------------------------------------------------------------------- */

/* The distinct terms of one chunk with their occurrences per column: a table over a byte pool,
 * reset (not freed) between chunks, since a build tokenises millions of them. */
typedef struct {
    uint32_t hash, off, len; /* the term is pool[off, off + len), NUL-terminated */
    uint32_t tf[NCOLS];
} chunk_term;

typedef struct {
    char *pool;
    size_t pool_len, pool_cap;
    uint32_t *slots; /* 0: empty, else an index into e plus one */
    size_t nslots;
    chunk_term *e;
    size_t n, cap;
    int col;
    uint32_t len; /* tokens over all columns */
} chunk_terms;

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

static void chunk_terms_free(chunk_terms *c)
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

static qr_status on_chunk_token(void *ctx, const char *form, size_t form_len, size_t start, size_t end,
                                char *err)
{
    (void)start;
    (void)end;
    chunk_terms *c = ctx;
    if (((c->n + 1) * 2 > c->nslots && !chunk_terms_grow(c)) || form_len > UINT32_MAX / 2)
        return qr_fail(err, QR_ENOMEM, "out of memory tokenising for the BM25 index");
    uint32_t h = hash_str(form, form_len);
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

static qr_status tokenize_chunk(store *s, const store_text *t, chunk_terms *c, char *err)
{
    chunk_terms_reset(c);
    for (int col = 0; col < NCOLS; col++) {
        c->col = col;
        qr_status st =
            store_tokenize(s, t->col[col] ? t->col[col] : "", t->col_len[col], on_chunk_token, c, err);
        if (st)
            return st;
    }
    return QR_OK;
}

/* ---- building a generation --------------------------------------------------------------- */

typedef struct {
    unsigned char *data;
    size_t len, cap;
    file_block *blocks;
    size_t nblocks, cap_blocks;
    file_block cur; /* the open block (cur.n postings) */
    uint32_t prev_row, df;
    uint32_t max_tf[NCOLS], min_len;
} term_builder;

typedef struct {
    store *s;
    smap terms; /* term -> index into tb */
    term_builder *tb;
    size_t ntb, cap_tb;
    int64_t *ids;
    uint32_t *docs, *lens;
    size_t nrows, cap_rows;
    uint64_t total_len;
    chunk_terms ct;
} builder;

static bool close_block(term_builder *b)
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
    if (b->cur.n == BLOCK && !close_block(b))
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
    b->len += encode_posting(b->data + b->len, row - b->prev_row, tf);
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
    qr_status st = tokenize_chunk(b->s, t, &b->ct, err);
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
    smap_free(&b->terms);
    free(b->ids);
    free(b->docs);
    free(b->lens);
    chunk_terms_free(&b->ct);
}

/* A term of the build and its builder, sorted by bytes for the file's vocabulary. */
typedef struct {
    const char *key;
    term_builder *tb;
} sorted_term;

static int cmp_sorted_term(const void *a, const void *b)
{
    return strcmp(((const sorted_term *)a)->key, ((const sorted_term *)b)->key);
}

/* The file being written: every byte after the header goes through the checksum. */
typedef struct {
    int fd;
    qhash c;
    uint64_t at;
    const char *path;
} writer;

static qr_status writer_put(writer *w, const void *p, size_t n, char *err)
{
    qhash_update(&w->c, p, n);
    w->at += n;
    return index_write_all(w->fd, p, n, w->path, err);
}

static qr_status writer_pad(writer *w, char *err)
{
    static const unsigned char zero[8];
    size_t pad = (size_t)((8 - (w->at & 7)) & 7);
    return pad ? writer_put(w, zero, pad, err) : QR_OK;
}

static qr_status write_generation(builder *b, const char *dir, int64_t counter, int64_t uid, char *err)
{
    char tmp[4096], path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, FILE_NAME);
    /* the writer's pid (leftovers of dead writers are removed at open) and a sequence number
     * (two indexes of one process may build at once) */
    static unsigned long seq;
    snprintf(tmp, sizeof(tmp), "%s/.%s.%ld.%lu.tmp", dir, FILE_NAME, (long)getpid(),
             __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
    sorted_term *order = malloc((b->terms.n ? b->terms.n : 1) * sizeof(*order));
    if (!order)
        return qr_fail(err, QR_ENOMEM, "out of memory writing the BM25 index");
    size_t nt = 0;
    for (size_t i = 0; i < b->terms.cap; i++)
        if (b->terms.keys[i])
            order[nt++] = (sorted_term){b->terms.keys[i], &b->tb[b->terms.vals[i]]};
    qsort(order, nt, sizeof(*order), cmp_sorted_term);

    file_header h = {0};
    memcpy(h.magic, FILE_MAGIC, 8);
    h.version = FILE_VERSION;
    h.ncols = NCOLS;
    h.counter = counter;
    h.store_uid = uid;
    h.nrows = b->nrows;
    h.nterms = nt;
    h.total_len = b->total_len;
    uint64_t at = sizeof(h);
#define ALIGN8(x) (((x) + 7) & ~(uint64_t)7)
    h.off_ids = at;
    at = ALIGN8(at + b->nrows * sizeof(int64_t));
    h.off_docs = at;
    at = ALIGN8(at + b->nrows * sizeof(uint32_t));
    h.off_lens = at;
    at = ALIGN8(at + b->nrows * sizeof(uint32_t));
    h.off_terms = at;
    at += nt * sizeof(file_term);
    h.off_strings = at;
    for (size_t i = 0; i < nt; i++) {
        h.strings_len += strlen(order[i].key);
        term_builder *tb = order[i].tb;
        if (!close_block(tb)) {
            free(order);
            return qr_fail(err, QR_ENOMEM, "out of memory writing the BM25 index");
        }
        h.nblocks += tb->nblocks;
        h.data_len += tb->len;
        h.npostings += tb->df;
    }
    at = ALIGN8(at + h.strings_len);
    h.off_blocks = at;
    at += h.nblocks * sizeof(file_block);
    h.off_data = at;
    at = ALIGN8(at + h.data_len);
    h.size = at;

    qr_status st = QR_OK;
    writer w = {.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), .path = tmp};
    if (w.fd < 0) {
        free(order);
        return qr_fail(err, QR_EIO, "cannot create '%s': %s", tmp, strerror(errno));
    }
    if (ftruncate(w.fd, (off_t)h.size) != 0 || lseek(w.fd, (off_t)sizeof(h), SEEK_SET) < 0) {
        st = qr_fail(err, QR_EIO, "cannot size '%s': %s", tmp, strerror(errno));
        goto out;
    }
    w.at = sizeof(h);
    qhash_init(&w.c);
    if ((st = writer_put(&w, b->ids, b->nrows * sizeof(int64_t), err)) || (st = writer_pad(&w, err)) ||
        (st = writer_put(&w, b->docs, b->nrows * sizeof(uint32_t), err)) || (st = writer_pad(&w, err)) ||
        (st = writer_put(&w, b->lens, b->nrows * sizeof(uint32_t), err)) || (st = writer_pad(&w, err)))
        goto out;
    uint64_t str_off = 0, first_block = 0;
    for (size_t i = 0; i < nt && !st; i++) {
        const char *key = order[i].key;
        term_builder *tb = order[i].tb;
        file_term ft = {.str_off = str_off,
                        .str_len = (uint32_t)strlen(key),
                        .df = tb->df,
                        .first_block = first_block,
                        .nblocks = (uint32_t)tb->nblocks,
                        .min_len = tb->min_len};
        memcpy(ft.max_tf, tb->max_tf, sizeof(ft.max_tf));
        str_off += ft.str_len;
        first_block += tb->nblocks;
        st = writer_put(&w, &ft, sizeof(ft), err);
    }
    for (size_t i = 0; i < nt && !st; i++) {
        st = writer_put(&w, order[i].key, strlen(order[i].key), err);
    }
    if (st || (st = writer_pad(&w, err)))
        goto out;
    uint64_t data_off = 0;
    for (size_t i = 0; i < nt && !st; i++) {
        term_builder *tb = order[i].tb;
        for (size_t j = 0; j < tb->nblocks && !st; j++) {
            file_block fb = tb->blocks[j];
            fb.data_off += data_off;
            st = writer_put(&w, &fb, sizeof(fb), err);
        }
        data_off += tb->len;
    }
    for (size_t i = 0; i < nt && !st; i++) {
        st = writer_put(&w, order[i].tb->data, order[i].tb->len, err);
    }
    if (st || (st = writer_pad(&w, err)))
        goto out;
    h.checksum = qhash_final(&w.c);
    if (w.at != h.size) {
        st = qr_fail(err, QR_EINTERNAL, "BM25 index file '%s': wrote %llu bytes, planned %llu", tmp,
                     (unsigned long long)w.at, (unsigned long long)h.size);
        goto out;
    }
    if (pwrite(w.fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || fsync(w.fd) != 0) {
        st = qr_fail(err, QR_EIO, "cannot write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    if (close(w.fd) != 0) {
        w.fd = -1;
        st = qr_fail(err, QR_EIO, "cannot write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    w.fd = -1;
    if (rename(tmp, path) != 0) {
        st = qr_fail(err, QR_EIO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        goto out;
    }
    st = index_fsync_path(dir, true, err);
out:
    if (w.fd >= 0)
        close(w.fd);
    if (st)
        unlink(tmp);
    free(order);
    return st;
#undef ALIGN8
}

/* ---- the index --------------------------------------------------------------------------- */

/* A term's postings among the rows added since the generation. Frequencies are packed in 32
 * bits: title (7 bits) << 24 | headings (8) << 16 | body (16); larger ones have the top bit set
 * and the index of their three counts in the index's d_over. */
typedef struct {
    uint32_t *rows;
    uint32_t *tfp;
    size_t n, cap;
    uint32_t max_tf[NCOLS], min_len;
} delta_list;

#define TF_OVER 0x80000000u

typedef struct {
    char *name;
    uint64_t *bits;
    size_t nwords;
    uint64_t used; /* tick of the last search that used it */
} pset;

typedef struct {
    size_t dead; /* generation rows of the term among dead_gen[0..upto) */
    size_t upto;
} df_entry;

struct bm25_index {
    char *dir;
    bm25_opts o;
    pthread_rwlock_t lock;    /* searches read; catch-up and swaps write */
    pthread_mutex_t sync_mu;  /* one catch-up or build at a time */
    pthread_mutex_t cache_mu; /* principal sets, the df cache, the tick */
    bool broken;              /* a catch-up failed halfway: rebuild before searching */
    int building;             /* a generation is being built (atomic) */

    /* the generation, mapped */
    void *map;
    size_t map_len;
    const file_header *h;
    const int64_t *gen_ids;
    const uint32_t *gen_docs, *gen_lens;
    const file_term *terms;
    const char *strings;
    const file_block *blocks;
    const unsigned char *data;
    size_t gen_rows;

    /* rows after the generation's */
    int64_t *d_ids;
    uint32_t *d_docs, *d_lens;
    size_t d_rows, d_cap;
    smap d_terms; /* term -> index into dl */
    delta_list *dl;
    size_t ndl, cap_dl;
    uint32_t (*d_over)[NCOLS]; /* frequencies too large to pack */
    size_t n_over, cap_over;

    /* tombstones */
    uint64_t *dead; /* bitset over all rows */
    size_t dead_words;
    uint32_t *dead_gen; /* generation rows deleted, in the order they were */
    size_t ndead_gen, cap_dead_gen;
    size_t ndead;

    uint64_t live_rows, live_len;
    uint32_t max_doc; /* largest document key of any row */
    int64_t counter;
    size_t changes; /* chunk changes since the generation */

    /* permissions and caches (cache_mu) */
    pset *ps;
    size_t nps;
    /* callers' unions of sets, by principal list; emptied (under the write lock) whenever a
     * document's ACL may have changed, so a search may use one while it holds the read lock */
    struct caller_union {
        uint64_t key;
        char **principals; /* sorted copies */
        size_t np;
        uint64_t *bits;
        size_t nwords;
        uint64_t used; /* tick of the last search that took it */
        int refs;      /* searches using it now: it is not evicted while > 0 */
    } unions[UNION_CACHE];
    size_t nunions;
    uint64_t tick;
    smap df_terms; /* term -> index into dfc */
    df_entry *dfc;
    size_t ndfc;
};

void bm25_opts_default(bm25_opts *o)
{
    o->delta_max = 50000;
    o->principal_cache = 1024;
}

void bm25_opts_from_config(const qr_config *cfg, bm25_opts *o)
{
    bm25_opts_default(o);
    o->delta_max = (size_t)qr_config_int(cfg, "bm25.delta_max");
    o->principal_cache = (size_t)qr_config_int(cfg, "bm25.principal_cache");
}

static uint32_t row_doc(const bm25_index *x, uint32_t row)
{
    return row < x->gen_rows ? x->gen_docs[row] : x->d_docs[row - x->gen_rows];
}

static uint32_t row_len(const bm25_index *x, uint32_t row)
{
    return row < x->gen_rows ? x->gen_lens[row] : x->d_lens[row - x->gen_rows];
}

static bool row_dead(const bm25_index *x, uint32_t row)
{
    return (size_t)(row >> 6) < x->dead_words && (x->dead[row >> 6] >> (row & 63) & 1);
}

static void unions_clear(bm25_index *x)
{
    for (size_t i = 0; i < x->nunions; i++) {
        for (size_t j = 0; j < x->unions[i].np; j++)
            free(x->unions[i].principals[j]);
        free(x->unions[i].principals);
        free(x->unions[i].bits);
    }
    x->nunions = 0;
}

static void psets_clear(bm25_index *x)
{
    unions_clear(x);
    for (size_t i = 0; i < x->nps; i++) {
        free(x->ps[i].name);
        free(x->ps[i].bits);
    }
    free(x->ps);
    x->ps = NULL;
    x->nps = 0;
}

static void dfcache_clear(bm25_index *x)
{
    smap_free(&x->df_terms);
    free(x->dfc);
    x->dfc = NULL;
    x->ndfc = 0;
}

/* Drops the generation and the delta (not the principal sets). */
static void drop_state(bm25_index *x)
{
    if (x->map)
        munmap(x->map, x->map_len);
    x->map = NULL;
    x->map_len = 0;
    x->h = NULL;
    x->gen_ids = NULL;
    x->gen_docs = x->gen_lens = NULL;
    x->terms = NULL;
    x->strings = NULL;
    x->blocks = NULL;
    x->data = NULL;
    x->gen_rows = 0;
    free(x->d_ids);
    free(x->d_docs);
    free(x->d_lens);
    x->d_ids = NULL;
    x->d_docs = x->d_lens = NULL;
    x->d_rows = x->d_cap = 0;
    for (size_t i = 0; i < x->ndl; i++) {
        free(x->dl[i].rows);
        free(x->dl[i].tfp);
    }
    free(x->d_over);
    x->d_over = NULL;
    x->n_over = x->cap_over = 0;
    free(x->dl);
    x->dl = NULL;
    x->ndl = x->cap_dl = 0;
    smap_free(&x->d_terms);
    free(x->dead);
    x->dead = NULL;
    x->dead_words = 0;
    free(x->dead_gen);
    x->dead_gen = NULL;
    x->ndead_gen = x->cap_dead_gen = 0;
    x->ndead = 0;
    x->live_rows = x->live_len = 0;
    x->max_doc = 0;
    x->changes = 0;
    dfcache_clear(x);
}

void bm25_close(bm25_index *x)
{
    if (!x)
        return;
    drop_state(x);
    psets_clear(x);
    pthread_rwlock_destroy(&x->lock);
    pthread_mutex_destroy(&x->sync_mu);
    pthread_mutex_destroy(&x->cache_mu);
    free(x->dir);
    free(x);
}

/* Removes temporary files that writers which no longer run left behind (a build killed midway). */
static void remove_leftovers(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    char prefix[64];
    snprintf(prefix, sizeof(prefix), ".%s.", FILE_NAME);
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid = 0;
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || n < 4 ||
            strcmp(e->d_name + n - 4, ".tmp") != 0 || sscanf(e->d_name + strlen(prefix), "%ld.", &pid) != 1 ||
            pid <= 0)
            continue;
        if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

/* Maps <dir>/current.bm25 and checks it whole. QR_ENOTFOUND when absent; QR_EIO when damaged. */
static qr_status load_generation(bm25_index *x, char *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", x->dir, FILE_NAME);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? qr_fail(err, QR_ENOTFOUND, "no BM25 index at '%s'", path)
                               : qr_fail(err, QR_EIO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size < (off_t)sizeof(file_header)) {
        close(fd);
        return qr_fail(err, QR_EIO, "BM25 index '%s' is truncated", path);
    }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return qr_fail(err, QR_EIO, "cannot map '%s': %s", path, strerror(errno));
    const file_header *h = map;
    const unsigned char *base = map;
    qr_status st = QR_OK;
#define BAD(why)                                                                                     \
    do {                                                                                             \
        st = qr_fail(err, QR_EIO, "BM25 index '%s' is damaged (%s): it will be rebuilt", path, why); \
        goto out;                                                                                    \
    } while (0)
    if (memcmp(h->magic, FILE_MAGIC, 8) != 0 || h->version != FILE_VERSION || h->ncols != NCOLS)
        BAD("not a quarry BM25 index of this version");
    if (h->size != len)
        BAD("its size is not the recorded one");
    if (h->nrows >= UINT32_MAX || h->off_ids != sizeof(*h) || h->off_docs < h->off_ids + h->nrows * 8 ||
        h->off_lens < h->off_docs + h->nrows * 4 || h->off_terms < h->off_lens + h->nrows * 4 ||
        h->nterms > len / sizeof(file_term) ||
        h->off_strings != h->off_terms + h->nterms * sizeof(file_term) || h->strings_len > len ||
        h->off_blocks < h->off_strings + h->strings_len || h->nblocks > len / sizeof(file_block) ||
        h->off_data != h->off_blocks + h->nblocks * sizeof(file_block) || h->data_len > len ||
        h->off_data + h->data_len > len || (h->off_blocks & 7) || (h->off_terms & 7))
        BAD("its sections do not fit");
    if (qhash_bytes(base + sizeof(*h), len - sizeof(*h)) != h->checksum)
        BAD("checksum mismatch");
    const file_term *terms = (const file_term *)(base + h->off_terms);
    const file_block *blocks = (const file_block *)(base + h->off_blocks);
    for (uint64_t i = 0; i < h->nterms; i++) {
        const file_term *t = &terms[i];
        if (t->str_off + t->str_len > h->strings_len || t->first_block + t->nblocks > h->nblocks ||
            !t->nblocks)
            BAD("a term's entry is out of range");
    }
    for (uint64_t i = 0; i < h->nblocks; i++) {
        const file_block *b = &blocks[i];
        if (!b->n || b->n > BLOCK || b->data_off >= h->data_len || b->last_row >= h->nrows ||
            b->first_row > b->last_row)
            BAD("a block is out of range");
    }
    x->map = map;
    x->map_len = len;
    x->h = h;
    x->gen_ids = (const int64_t *)(base + h->off_ids);
    x->gen_docs = (const uint32_t *)(base + h->off_docs);
    x->gen_lens = (const uint32_t *)(base + h->off_lens);
    x->terms = terms;
    x->strings = (const char *)(base + h->off_strings);
    x->blocks = blocks;
    x->data = base + h->off_data;
    x->gen_rows = (size_t)h->nrows;
    x->live_rows = h->nrows;
    x->live_len = h->total_len;
    x->counter = h->counter;
    for (size_t r = 0; r < x->gen_rows; r++)
        if (x->gen_docs[r] > x->max_doc)
            x->max_doc = x->gen_docs[r];
    return QR_OK;
#undef BAD
out:
    munmap(map, len);
    return st;
}

/* Builds a generation from every chunk of s, writes it and serves it; the principal sets are
 * dropped (they may predate ACL changes the new generation's counter has passed). */
static qr_status rebuild(bm25_index *x, store *s, bm25_report *rep, char *err)
{
    uint64_t t0 = qr_now_ns();
    builder b = {.s = s};
    int64_t counter = 0, uid = 0;
    /* the tokenizer is made on first use, which reads the schema: not inside the walk */
    qr_status st = store_uid(s, &uid, err);
    if (!st)
        st = store_tokenize(s, "", 0, on_chunk_token, &b.ct, err);
    if (!st)
        st = store_each_text(s, build_chunk, &b, &counter, err);
    if (!st)
        st = write_generation(&b, x->dir, counter, uid, err);
    builder_free(&b);
    if (st)
        return st;
    pthread_rwlock_wrlock(&x->lock);
    drop_state(x);
    pthread_mutex_lock(&x->cache_mu);
    psets_clear(x);
    pthread_mutex_unlock(&x->cache_mu);
    st = load_generation(x, err);
    x->broken = st != QR_OK;
    pthread_rwlock_unlock(&x->lock);
    if (st)
        return st;
    if (rep)
        rep->rebuilt = true;
    qr_log(QR_LOG_INFO, LOG_COMPONENT, "built the BM25 index: %zu chunks, %llu terms, %.1f s", x->gen_rows,
           (unsigned long long)x->h->nterms, (qr_now_ns() - t0) / 1e9);
    return QR_OK;
}

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
    chunk_terms_free(&g->ct);
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
    qr_status st = tokenize_chunk(g->s, t, &g->ct, err);
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

static bool set_bit(uint64_t **bits, size_t *nwords, size_t bit)
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

/* The row of chunk_id, or UINT32_MAX. */
static uint32_t find_row(const bm25_index *x, int64_t chunk_id)
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
        uint32_t row = find_row(x, g->del[i]);
        if (row == UINT32_MAX || row_dead(x, row))
            continue; /* added and deleted while the index was not looking */
        if (!set_bit(&x->dead, &x->dead_words, row))
            return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
        if (row < x->gen_rows) {
            if (!GROW(x->dead_gen, x->ndead_gen, x->cap_dead_gen, 256))
                return qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
            x->dead_gen[x->ndead_gen++] = row;
        }
        x->ndead++;
        x->live_rows--;
        x->live_len -= row_len(x, row);
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
            if (!smap_put(&x->d_terms, g->terms[j], strlen(g->terms[j]), &at, &added))
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
        unions_clear(x);
    /* by name: a catch-up may bring tens of thousands of documents and the cache a thousand
     * principals */
    smap names = {0};
    for (size_t p = 0; p < x->nps && !st && g->ndocs; p++) {
        size_t at = p;
        bool added;
        if (!smap_put(&names, x->ps[p].name, strlen(x->ps[p].name), &at, &added))
            st = qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
    }
    for (size_t i = 0; i < g->ndocs && !st; i++) {
        const struct changed_doc *d = &g->docs[i];
        for (size_t p = 0; p < x->nps; p++)
            clear_bit(x->ps[p].bits, x->ps[p].nwords, d->doc);
        for (size_t j = d->first; j < d->first + d->n && !st; j++) {
            size_t p;
            if (smap_get(&names, g->principals[j], strlen(g->principals[j]), &p) &&
                !set_bit(&x->ps[p].bits, &x->ps[p].nwords, d->doc))
                st = qr_fail(err, QR_ENOMEM, "out of memory catching up the BM25 index");
        }
    }
    smap_free(&names);
    pthread_mutex_unlock(&x->cache_mu);
    return st;
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
    size_t changes = x->changes;
    pthread_rwlock_unlock(&x->lock);
    if (have && !broken && !force && now == seen) {
        if (rep)
            rep->counter = now;
        return QR_OK;
    }
    const char *why = force           ? "asked to"
                      : !have         ? "no generation yet"
                      : broken        ? "a catch-up failed"
                      : now < seen    ? "the store's counter went back"
                      : pruned > seen ? "the store forgot tombstones the index needs"
                                      : NULL;
    staged g = {.s = s, .max = x->o.delta_max > changes ? x->o.delta_max - changes : 0};
    int64_t c1 = 0, c2 = 0;
    if (!why) {
        st = store_tokenize(s, "", 0, on_chunk_token, &g.ct, err);
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
            why = "more changes than bm25.delta_max";
        else if (g.needs_rebuild)
            why = "a title was rewritten under the same chunk ids";
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
        __atomic_store_n(&x->building, 1, __ATOMIC_RELEASE);
        st = rebuild(x, s, rep, err);
        __atomic_store_n(&x->building, 0, __ATOMIC_RELEASE);
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
    if (!rebuild_ok && !force && pthread_mutex_trylock(&x->sync_mu) != 0) {
        /* a catch-up is short: wait for it; a build is not: let FTS5 rank meanwhile */
        if (__atomic_load_n(&x->building, __ATOMIC_ACQUIRE))
            return qr_fail(err, QR_EUNAVAILABLE, "the BM25 index is being rebuilt");
        pthread_mutex_lock(&x->sync_mu);
    } else if (rebuild_ok || force) {
        pthread_mutex_lock(&x->sync_mu);
    }
    qr_status st = catch_up(x, s, rebuild_ok || force, force, rep, err);
    pthread_mutex_unlock(&x->sync_mu);
    if (rep)
        rep->seconds = (qr_now_ns() - t0) / 1e9;
    return st;
}

qr_status bm25_open(store *s, const char *data_dir, const bm25_opts *o, bool force, bm25_index **out,
                    bm25_report *rep, char *err)
{
    if (!s || !data_dir || !o || !out)
        return qr_fail(err, QR_EINVAL, "bm25_open: NULL argument");
    *out = NULL;
    if (rep)
        memset(rep, 0, sizeof(*rep));
    bm25_index *x = calloc(1, sizeof(*x));
    if (!x)
        return qr_fail(err, QR_ENOMEM, "out of memory opening the BM25 index");
    x->o = *o;
    if (!x->o.principal_cache)
        x->o.principal_cache = 1;
    pthread_rwlock_init(&x->lock, NULL);
    pthread_mutex_init(&x->sync_mu, NULL);
    pthread_mutex_init(&x->cache_mu, NULL);
    size_t n = strlen(data_dir) + sizeof("/bm25");
    qr_status st = QR_OK;
    if (!(x->dir = malloc(n))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory opening the BM25 index");
        goto out;
    }
    snprintf(x->dir, n, "%s/bm25", data_dir);
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        st = qr_fail(err, QR_EIO, "cannot create '%s': %s", data_dir, strerror(errno));
        goto out;
    }
    if (mkdir(x->dir, 0700) != 0 && errno != EEXIST) {
        st = qr_fail(err, QR_EIO, "cannot create '%s': %s", x->dir, strerror(errno));
        goto out;
    }
    remove_leftovers(x->dir);
    if (!force) {
        char why[QR_ERR_LEN];
        int64_t uid = 0;
        qr_status ls = load_generation(x, why);
        if (ls && ls != QR_ENOTFOUND)
            qr_log(QR_LOG_WARN, LOG_COMPONENT, "%s", why);
        if (!ls && (st = store_uid(s, &uid, err)))
            goto out;
        if (!ls && x->h->store_uid != uid) {
            qr_log(QR_LOG_WARN, LOG_COMPONENT,
                   "the BM25 index under '%s' was built from another store: it will be rebuilt", x->dir);
            drop_state(x);
        }
    }
    char tmp[QR_ERR_LEN];
    st = bm25_sync(x, s, true, force, rep, err ? err : tmp);
out:
    if (st) {
        bm25_close(x);
        return st;
    }
    *out = x;
    return QR_OK;
}

qr_status bm25_peek(const char *data_dir, bm25_info *out, char *err)
{
    if (!data_dir || !out)
        return qr_fail(err, QR_EINVAL, "bm25_peek: NULL argument");
    memset(out, 0, sizeof(*out));
    char path[4096];
    snprintf(path, sizeof(path), "%s/bm25/%s", data_dir, FILE_NAME);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? qr_fail(err, QR_ENOTFOUND, "no BM25 index at '%s'", path)
                               : qr_fail(err, QR_EIO, "cannot open '%s': %s", path, strerror(errno));
    file_header h;
    struct stat sb;
    bool ok = fstat(fd, &sb) == 0 && pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h);
    close(fd);
    if (!ok || memcmp(h.magic, FILE_MAGIC, 8) != 0 || h.version != FILE_VERSION ||
        h.size != (uint64_t)sb.st_size)
        return qr_fail(err, QR_EIO, "'%s' is not a BM25 index of this version (it will be rebuilt)", path);
    out->counter = out->generation_counter = h.counter;
    out->rows = (size_t)h.nrows;
    out->terms = (size_t)h.nterms;
    out->file_bytes = (uint64_t)sb.st_size;
    return QR_OK;
}

void bm25_get_info(bm25_index *x, bm25_info *out)
{
    memset(out, 0, sizeof(*out));
    if (!x)
        return;
    pthread_rwlock_rdlock(&x->lock);
    out->counter = x->counter;
    out->generation_counter = x->h ? x->h->counter : 0;
    out->rows = (size_t)x->live_rows;
    out->terms = x->h ? (size_t)x->h->nterms : 0;
    out->postings = x->h ? x->h->npostings : 0;
    out->delta_rows = x->d_rows;
    out->tombstones = x->ndead;
    out->file_bytes = x->map_len;
    uint64_t mem = x->d_cap * (8 + 4 + 4) + x->dead_words * 8 + x->cap_dead_gen * 4 +
                   x->cap_dl * sizeof(delta_list) + x->d_terms.cap * (sizeof(char *) + 4 + sizeof(size_t));
    for (size_t i = 0; i < x->ndl; i++)
        mem += x->dl[i].cap * 8;
    mem += x->cap_over * sizeof(x->d_over[0]);
    pthread_mutex_lock(&x->cache_mu);
    for (size_t i = 0; i < x->nps; i++)
        mem += x->ps[i].nwords * 8;
    out->principals_cached = x->nps;
    pthread_mutex_unlock(&x->cache_mu);
    out->memory_bytes = mem;
    pthread_rwlock_unlock(&x->lock);
}

/* ---- searching --------------------------------------------------------------------------- */

/* A term's postings: generation blocks first, then the delta's (whose rows are all larger). */
typedef struct {
    const file_term *gt;  /* NULL: not in the generation */
    const delta_list *dl; /* NULL: not in the delta */
    uint64_t gb, gb_end;  /* next generation block to load, and the end */
    size_t dpos;          /* next delta posting to load */
    uint32_t rows[BLOCK];
    uint32_t tf[BLOCK][NCOLS];
    uint32_t bn, bi; /* postings in the buffer, the current one */
    double idf, bound;
    size_t mult; /* how many times the query names the term */
    double f;    /* weighted frequency at the current candidate */
} cursor;

static void decode_block(const bm25_index *x, cursor *c, uint64_t b)
{
    const file_block *fb = &x->blocks[b];
    const unsigned char *p = x->data + fb->data_off, *end = x->data + x->h->data_len;
    uint32_t row = fb->first_row, n = 0;
    for (; n < fb->n && p; n++) {
        uint32_t delta = 0;
        if (!(p = get_varint(p, end, &delta)) || p >= end)
            break;
        row += delta;
        c->rows[n] = row;
        if (*p < 0x80) {
            c->tf[n][0] = c->tf[n][1] = 0;
            c->tf[n][2] = *p++;
        } else {
            p++;
            for (int k = 0; k < NCOLS && p; k++)
                p = get_varint(p, end, &c->tf[n][k]);
        }
    }
    /* a block the checksum passed decodes whole; stop short rather than read past it */
    c->bn = n;
    c->bi = 0;
}

/* Fills the buffer with the next postings; false when the term has no more. */
static bool refill(const bm25_index *x, cursor *c)
{
    if (c->gb < c->gb_end) {
        decode_block(x, c, c->gb++);
        if (c->bn)
            return true;
        c->gb = c->gb_end;
    }
    if (c->dl && c->dpos < c->dl->n) {
        size_t n = c->dl->n - c->dpos < BLOCK ? c->dl->n - c->dpos : BLOCK;
        memcpy(c->rows, c->dl->rows + c->dpos, n * sizeof(uint32_t));
        for (size_t i = 0; i < n; i++) {
            uint32_t p = c->dl->tfp[c->dpos + i];
            if (p & TF_OVER) {
                memcpy(c->tf[i], x->d_over[p & ~TF_OVER], sizeof(c->tf[i]));
            } else {
                c->tf[i][0] = p >> 24;
                c->tf[i][1] = (p >> 16) & 0xff;
                c->tf[i][2] = p & 0xffff;
            }
        }
        c->dpos += n;
        c->bn = (uint32_t)n;
        c->bi = 0;
        return true;
    }
    c->bn = c->bi = 0;
    return false;
}

static uint32_t cur_row(const bm25_index *x, cursor *c)
{
    if (c->bi >= c->bn && !refill(x, c))
        return UINT32_MAX;
    return c->rows[c->bi];
}

/* Moves to the first posting at or after row: whole blocks are skipped by their last row. */
static uint32_t seek(const bm25_index *x, cursor *c, uint32_t row)
{
    if (c->bi < c->bn && c->rows[c->bn - 1] >= row) {
        uint32_t lo = c->bi, hi = c->bn - 1;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (c->rows[mid] < row)
                lo = mid + 1;
            else
                hi = mid;
        }
        c->bi = lo;
        return c->rows[lo];
    }
    if (c->gb < c->gb_end && x->blocks[c->gb_end - 1].last_row >= row) {
        uint64_t lo = c->gb, hi = c->gb_end - 1;
        while (lo < hi) {
            uint64_t mid = lo + (hi - lo) / 2;
            if (x->blocks[mid].last_row < row)
                lo = mid + 1;
            else
                hi = mid;
        }
        c->gb = lo;
        c->bn = c->bi = 0;
    } else if (c->gb < c->gb_end) {
        c->gb = c->gb_end;
        c->bn = c->bi = 0;
    }
    if (c->gb >= c->gb_end && c->dl && c->dpos < c->dl->n && (c->bi >= c->bn || c->rows[c->bn - 1] < row)) {
        size_t lo = c->dpos, hi = c->dl->n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (c->dl->rows[mid] < row)
                lo = mid + 1;
            else
                hi = mid;
        }
        c->dpos = lo;
        c->bn = c->bi = 0;
    }
    uint32_t r;
    while ((r = cur_row(x, c)) < row)
        c->bi++;
    return r;
}

static double term_score(double idf, double f, double len, double avgdl)
{
    return idf * ((f * (BM25_K1 + 1.0)) / (f + BM25_K1 * (1 - BM25_B + BM25_B * len / avgdl)));
}

/* One occurrence adds its column's weight, in column order, as FTS5 walks instances. */
static double weighted_tf(const uint32_t tf[NCOLS], const double w[NCOLS])
{
    double f = 0.0;
    for (int c = 0; c < NCOLS; c++)
        for (uint32_t i = 0; i < tf[c]; i++)
            f += w[c];
    return f;
}

/* The top k, worst at the root (lower score, then larger row), with per-document counts when
 * a per-document limit applies: a new chunk of a document that has its share replaces that
 * document's worst if better (the exchange that keeps the best k under a partition limit). */
typedef struct {
    double score;
    uint32_t row, doc;
} heap_item;

static bool worse(heap_item a, heap_item b)
{
    return a.score < b.score || (a.score == b.score && a.row > b.row);
}

typedef struct {
    heap_item *h;
    size_t n, k, cap_doc;
} topk;

static void sift_down(heap_item *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(h[l], h[m]))
            m = l;
        if (r < n && worse(h[r], h[m]))
            m = r;
        if (m == i)
            return;
        heap_item t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void sift_up(heap_item *h, size_t i)
{
    while (i > 0 && worse(h[i], h[(i - 1) / 2])) {
        heap_item t = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static void topk_push(topk *t, heap_item it)
{
    if (t->n == t->k && !worse(t->h[0], it))
        return; /* not better than the k-th: not better than its document's worst either */
    if (t->cap_doc) {
        size_t count = 0, w = SIZE_MAX;
        for (size_t i = 0; i < t->n; i++)
            if (t->h[i].doc == it.doc) {
                count++;
                if (w == SIZE_MAX || worse(t->h[i], t->h[w]))
                    w = i;
            }
        if (count >= t->cap_doc) {
            /* the document has its share: the new chunk replaces its worst, if better */
            if (!worse(t->h[w], it))
                return;
            t->h[w] = it;
            sift_down(t->h, t->n, w); /* better than before: it can only move down */
            return;
        }
    }
    if (t->n < t->k) {
        t->h[t->n] = it;
        sift_up(t->h, t->n++);
    } else {
        t->h[0] = it;
        sift_down(t->h, t->n, 0);
    }
}

static int cmp_hit(const void *a, const void *b)
{
    const heap_item *x = a, *y = b;
    return worse(*y, *x) ? -1 : worse(*x, *y) ? 1 : 0;
}

static const file_term *find_gen_term(const bm25_index *x, const char *term, size_t n)
{
    size_t lo = 0, hi = x->h ? (size_t)x->h->nterms : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const file_term *t = &x->terms[mid];
        size_t m = t->str_len < n ? t->str_len : n;
        int c = memcmp(x->strings + t->str_off, term, m);
        if (!c)
            c = t->str_len < n ? -1 : t->str_len > n ? 1 : 0;
        if (c < 0)
            lo = mid + 1;
        else if (c > 0)
            hi = mid;
        else
            return t;
    }
    return NULL;
}

/* Whether generation row `row` holds the term t (a probe into its blocks). */
static bool gen_has(const bm25_index *x, const file_term *t, uint32_t row)
{
    cursor c = {.gt = t, .gb = t->first_block, .gb_end = t->first_block + t->nblocks};
    return seek(x, &c, row) == row;
}

/* Rows holding the term among the live ones: the generation's count less its tombstoned rows
 * (counted once per term and tombstone, cached), plus the live delta postings. Caller holds
 * x->lock (read) and not cache_mu. */
static qr_status live_df(bm25_index *x, const char *term, const file_term *gt, const delta_list *dl,
                         uint64_t *df, char *err)
{
    uint64_t n = 0;
    if (gt) {
        n = gt->df;
        if (x->ndead_gen) {
            size_t n_term = strlen(term);
            pthread_mutex_lock(&x->cache_mu);
            bool added = false;
            if (x->df_terms.n >= DFCACHE_MAX)
                dfcache_clear(x);
            size_t at = x->ndfc;
            if (!x->dfc && !(x->dfc = malloc(DFCACHE_MAX * sizeof(*x->dfc)))) {
                pthread_mutex_unlock(&x->cache_mu);
                return qr_fail(err, QR_ENOMEM, "out of memory for a search");
            }
            if (!smap_put(&x->df_terms, term, n_term, &at, &added)) {
                pthread_mutex_unlock(&x->cache_mu);
                return qr_fail(err, QR_ENOMEM, "out of memory for a search");
            }
            if (added)
                x->dfc[x->ndfc++] = (df_entry){0, 0};
            df_entry *e = &x->dfc[at];
            for (; e->upto < x->ndead_gen; e->upto++)
                if (gen_has(x, gt, x->dead_gen[e->upto]))
                    e->dead++;
            n -= e->dead;
            pthread_mutex_unlock(&x->cache_mu);
        }
    }
    if (dl)
        for (size_t i = 0; i < dl->n; i++)
            if (!row_dead(x, dl->rows[i]))
                n++;
    *df = n;
    return QR_OK;
}

static qr_status set_doc_bit(void *ctx, int64_t doc, char *err)
{
    pset *p = ctx;
    if (doc < 0 || doc > (int64_t)DOC_KEY_MAX)
        return QR_OK; /* no row of the index can belong to it */
    if (!set_bit(&p->bits, &p->nwords, (size_t)doc))
        return qr_fail(err, QR_ENOMEM, "out of memory for a search");
    return QR_OK;
}

/* The cached set of principal, read from the store on first use (the least recently used set
 * makes room). Caller holds cache_mu. */
static qr_status principal_set(bm25_index *x, store *s, const char *principal, pset **out, char *err)
{
    for (size_t j = 0; j < x->nps; j++)
        if (strcmp(x->ps[j].name, principal) == 0) {
            *out = &x->ps[j];
            return QR_OK;
        }
    pset fresh = {0};
    int64_t counter = 0;
    if (!(fresh.name = strdup(principal)))
        return qr_fail(err, QR_ENOMEM, "out of memory for a search");
    qr_status st = store_principal_docs(s, principal, set_doc_bit, &fresh, &counter, err);
    if (st) {
        free(fresh.name);
        free(fresh.bits);
        return st;
    }
    size_t at = x->nps;
    if (x->nps >= x->o.principal_cache) {
        at = 0;
        for (size_t j = 1; j < x->nps; j++)
            if (x->ps[j].used < x->ps[at].used)
                at = j;
        free(x->ps[at].name);
        free(x->ps[at].bits);
    } else {
        pset *ps = realloc(x->ps, (x->nps + 1) * sizeof(*ps));
        if (!ps) {
            free(fresh.name);
            free(fresh.bits);
            return qr_fail(err, QR_ENOMEM, "out of memory for a search");
        }
        x->ps = ps;
        x->nps++;
    }
    x->ps[at] = fresh;
    *out = &x->ps[at];
    return QR_OK;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The caller's readable documents: the union of its principals' sets, kept per principal list
 * (the least recently used list no search is using makes room). Caller holds x->lock (read);
 * *bits has *nwords words covering every document key of a row; *held is the cache entry to give
 * back with caller_docs_done, or NULL when *bits is the caller's to free. */
static qr_status caller_docs(bm25_index *x, store *s, const char *const *principals, size_t np,
                             uint64_t **bits, size_t *nwords, struct caller_union **held, char *err)
{
    size_t nw = ((size_t)x->max_doc >> 6) + 1;
    const char **sorted = malloc((np ? np : 1) * sizeof(*sorted));
    if (!sorted)
        return qr_fail(err, QR_ENOMEM, "out of memory for a search");
    memcpy(sorted, principals, np * sizeof(*sorted));
    qsort(sorted, np, sizeof(*sorted), cmp_str_ptr);
    uint64_t key = 1469598103934665603ULL;
    for (size_t i = 0; i < np; i++)
        key = (key ^ hash_str(sorted[i], strlen(sorted[i]))) * 1099511628211ULL;
    qr_status st = QR_OK;
    pthread_mutex_lock(&x->cache_mu);
    for (size_t i = 0; i < x->nunions; i++) {
        struct caller_union *c = &x->unions[i];
        bool same = c->key == key && c->np == np && c->nwords == nw;
        for (size_t j = 0; same && j < np; j++)
            same = strcmp(c->principals[j], sorted[j]) == 0;
        if (same) {
            c->refs++;
            c->used = ++x->tick;
            pthread_mutex_unlock(&x->cache_mu);
            free(sorted);
            *bits = c->bits;
            *nwords = nw;
            *held = c;
            return QR_OK;
        }
    }
    uint64_t *u = calloc(nw, sizeof(*u));
    if (!u)
        st = qr_fail(err, QR_ENOMEM, "out of memory for a search");
    uint64_t tick = ++x->tick;
    for (size_t i = 0; i < np && !st; i++) {
        pset *p = NULL;
        if ((st = principal_set(x, s, sorted[i], &p, err)))
            break;
        p->used = tick;
        size_t n = p->nwords < nw ? p->nwords : nw;
        for (size_t w = 0; w < n; w++)
            u[w] |= p->bits[w];
    }
    *held = NULL;
    size_t slot = x->nunions;
    if (!st && slot == UNION_CACHE) {
        for (size_t i = 0; i < x->nunions; i++)
            if (!x->unions[i].refs && (slot == UNION_CACHE || x->unions[i].used < x->unions[slot].used))
                slot = i;
        if (slot < UNION_CACHE) {
            struct caller_union *c = &x->unions[slot];
            for (size_t j = 0; j < c->np; j++)
                free(c->principals[j]);
            free(c->principals);
            free(c->bits);
            x->unions[slot] = x->unions[--x->nunions];
            slot = x->nunions;
        }
    }
    if (!st && slot < UNION_CACHE) {
        struct caller_union *c = &x->unions[slot];
        c->principals = calloc(np ? np : 1, sizeof(char *));
        bool ok = c->principals != NULL;
        for (size_t j = 0; ok && j < np; j++)
            ok = (c->principals[j] = strdup(sorted[j])) != NULL;
        if (ok) {
            c->key = key;
            c->np = np;
            c->bits = u;
            c->nwords = nw;
            c->used = tick;
            c->refs = 1;
            x->nunions++;
            *held = c;
        } else if (c->principals) {
            for (size_t j = 0; j < np; j++)
                free(c->principals[j]);
            free(c->principals);
        }
    }
    pthread_mutex_unlock(&x->cache_mu);
    free(sorted);
    if (st) {
        free(u);
        return st;
    }
    *bits = u;
    *nwords = nw;
    return QR_OK;
}

static void caller_docs_done(bm25_index *x, struct caller_union *held, uint64_t *bits)
{
    if (!held) {
        free(bits);
        return;
    }
    pthread_mutex_lock(&x->cache_mu);
    held->refs--;
    pthread_mutex_unlock(&x->cache_mu);
}

static bool delta_find(const bm25_index *x, const char *term, size_t n, const delta_list **out)
{
    size_t at;
    if (!smap_get(&x->d_terms, term, n, &at))
        return false;
    *out = &x->dl[at];
    return true;
}

/* The search proper; caller holds x->lock (read). */
static qr_status search_locked(bm25_index *x, store *s, const char *const *terms, size_t nterms,
                               const double w[3], const char *const *principals, size_t np, bool all,
                               size_t max_per_doc, size_t limit, store_hit *out, size_t *nout, char *err)
{
    if (!x->live_rows)
        return QR_OK;
    qr_status st = QR_OK;
    cursor *tc = calloc(nterms, sizeof(*tc));
    size_t *qmap = calloc(nterms, sizeof(*qmap)); /* query term -> cursor */
    size_t *order = calloc(nterms, sizeof(*order));
    double *cum = calloc(nterms, sizeof(*cum));
    uint64_t *allowed = NULL;
    size_t nallowed = 0;
    struct caller_union *held = NULL;
    size_t k = limit < x->live_rows ? limit : (size_t)x->live_rows;
    topk top = {.h = calloc(k, sizeof(heap_item)), .k = k, .cap_doc = max_per_doc};
    if (!tc || !qmap || !order || !cum || !top.h) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for a search");
        goto out;
    }
    if (!all && (st = caller_docs(x, s, principals, np, &allowed, &nallowed, &held, err)))
        goto out;

    /* one cursor per distinct term */
    double N = (double)x->live_rows, avgdl = (double)x->live_len / N;
    size_t nc = 0;
    for (size_t i = 0; i < nterms; i++) {
        size_t j = 0;
        while (j < i && strcmp(terms[j], terms[i]) != 0)
            j++;
        if (j < i) {
            qmap[i] = qmap[j];
            tc[qmap[i]].mult++;
            continue;
        }
        cursor *c = &tc[nc];
        qmap[i] = nc++;
        c->mult = 1;
        size_t len = strlen(terms[i]);
        c->gt = find_gen_term(x, terms[i], len);
        const delta_list *dl = NULL;
        if (delta_find(x, terms[i], len, &dl))
            c->dl = dl;
        if (c->gt) {
            c->gb = c->gt->first_block;
            c->gb_end = c->gt->first_block + c->gt->nblocks;
        }
        uint64_t df = 0;
        if ((c->gt || c->dl) && (st = live_df(x, terms[i], c->gt, c->dl, &df, err)))
            goto out;
        double idf = log((N - (double)df + 0.5) / ((double)df + 0.5));
        c->idf = idf <= 0.0 ? 1e-6 : idf;
        uint32_t max_tf[NCOLS] = {0}, min_len = UINT32_MAX;
        for (int col = 0; col < NCOLS; col++) {
            if (c->gt && c->gt->max_tf[col] > max_tf[col])
                max_tf[col] = c->gt->max_tf[col];
            if (c->dl && c->dl->max_tf[col] > max_tf[col])
                max_tf[col] = c->dl->max_tf[col];
        }
        if (c->gt && c->gt->min_len < min_len)
            min_len = c->gt->min_len;
        if (c->dl && c->dl->n && c->dl->min_len < min_len)
            min_len = c->dl->min_len;
        double fmax = weighted_tf(max_tf, w);
        c->bound = df && fmax > 0 ? term_score(c->idf, fmax, min_len, avgdl) : 0.0;
    }
    /* MaxScore's order: lists by ascending bound; cum[j] bounds what lists order[0..j] add */
    for (size_t i = 0; i < nc; i++)
        order[i] = i;
    for (size_t i = 1; i < nc; i++)
        for (size_t j = i;
             j > 0 && tc[order[j - 1]].bound * tc[order[j - 1]].mult > tc[order[j]].bound * tc[order[j]].mult;
             j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (size_t j = 0; j < nc; j++)
        cum[j] = (j ? cum[j - 1] : 0.0) + tc[order[j]].bound * (double)tc[order[j]].mult;

    size_t essential = 0; /* lists order[essential..] are walked; the others only probed */
    for (;;) {
        bool full = top.n == top.k;
        double threshold = full ? top.h[0].score : 0.0;
        if (full)
            while (essential < nc && cum[essential] * (1 + BOUND_SLACK) < threshold)
                essential++;
        if (essential == nc)
            break;
        uint32_t row = UINT32_MAX;
        for (size_t j = essential; j < nc; j++) {
            uint32_t r = cur_row(x, &tc[order[j]]);
            if (r < row)
                row = r;
        }
        if (row == UINT32_MAX)
            break;
        uint32_t doc = row_doc(x, row);
        bool ok = !row_dead(x, row) &&
                  (all || ((size_t)(doc >> 6) < nallowed && (allowed[doc >> 6] >> (doc & 63) & 1)));
        double len = (double)row_len(x, row), partial = 0.0;
        for (size_t j = 0; j < nc; j++)
            tc[j].f = 0.0;
        for (size_t j = essential; j < nc; j++) {
            cursor *c = &tc[order[j]];
            if (cur_row(x, c) == row) {
                if (ok) {
                    c->f = weighted_tf(c->tf[c->bi], w);
                    partial += term_score(c->idf, c->f, len, avgdl) * (double)c->mult;
                }
                c->bi++;
            }
        }
        if (!ok)
            continue;
        /* probe the non-essential lists, largest bound first, while the chunk can still enter */
        for (size_t j = essential; j-- > 0;) {
            if (full && (partial + cum[j]) * (1 + BOUND_SLACK) < threshold) {
                ok = false;
                break;
            }
            cursor *c = &tc[order[j]];
            if (!c->gt && !c->dl)
                continue;
            if (seek(x, c, row) == row) {
                c->f = weighted_tf(c->tf[c->bi], w);
                partial += term_score(c->idf, c->f, len, avgdl) * (double)c->mult;
            }
        }
        if (!ok)
            continue;
        /* the exact score, added up in query order as FTS5 does */
        double score = 0.0;
        for (size_t i = 0; i < nterms; i++) {
            const cursor *c = &tc[qmap[i]];
            score +=
                c->idf * ((c->f * (BM25_K1 + 1.0)) / (c->f + BM25_K1 * (1 - BM25_B + BM25_B * len / avgdl)));
        }
        topk_push(&top, (heap_item){score, row, doc});
    }
    qsort(top.h, top.n, sizeof(*top.h), cmp_hit);
    for (size_t i = 0; i < top.n; i++) {
        uint32_t row = top.h[i].row;
        out[i] = (store_hit){.chunk_id = row < x->gen_rows ? x->gen_ids[row] : x->d_ids[row - x->gen_rows],
                             .doc = top.h[i].doc,
                             .score = top.h[i].score};
    }
    *nout = top.n;
out:
    free(tc);
    free(qmap);
    free(order);
    free(cum);
    if (allowed)
        caller_docs_done(x, held, allowed);
    free(top.h);
    return st;
}

qr_status bm25_search(bm25_index *x, store *s, const char *const *terms, size_t nterms,
                      const double weights[3], const char *const *principals, size_t nprincipals,
                      bool all_documents, size_t max_per_doc, size_t limit, store_hit *out, size_t *n,
                      char *err)
{
    if (!x || !s || (nterms && !terms) || !weights || !n || (limit && !out) || (nprincipals && !principals))
        return qr_fail(err, QR_EINVAL, "bm25_search: NULL argument");
    *n = 0;
    if (nterms > BM25_TERMS_MAX)
        return qr_fail(err, QR_ELIMIT, "search: %zu words, at most %d", nterms, BM25_TERMS_MAX);
    if (nprincipals > STORE_FILTER_PRINCIPALS_MAX)
        return qr_fail(err, QR_ELIMIT, "search: %zu principals, at most %d", nprincipals,
                       STORE_FILTER_PRINCIPALS_MAX);
    for (int i = 0; i < NCOLS; i++)
        if (!isfinite(weights[i]) || weights[i] < 0)
            return qr_fail(err, QR_EINVAL, "search: column weights must be finite and not negative");
    for (size_t i = 0; i < nterms; i++)
        if (!terms[i] || !terms[i][0])
            return qr_fail(err, QR_EINVAL, "search: an empty word");
    for (size_t i = 0; !all_documents && i < nprincipals; i++)
        if (!store_principal_valid(principals[i]))
            return qr_fail(err, QR_EINVAL, "search: invalid principal '%.100s'",
                           principals[i] ? principals[i] : "");
    qr_status st = bm25_sync(x, s, false, false, NULL, err);
    if (st || !limit || !nterms || (!all_documents && !nprincipals))
        return st;
    pthread_rwlock_rdlock(&x->lock);
    if (x->broken || !x->map)
        st = qr_fail(err, QR_EUNAVAILABLE, "the BM25 index needs a rebuild");
    else
        st = search_locked(x, s, terms, nterms, weights, principals, nprincipals, all_documents, max_per_doc,
                           limit, out, n, err);
    pthread_rwlock_unlock(&x->lock);
    return st;
}
