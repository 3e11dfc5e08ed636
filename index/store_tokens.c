/*
 * Tokens made ahead for bulk mode's full-text follower (store.h says why). A preparing thread
 * tokenizes a text with FTS5's own porter unicode61 tokenizer on a private connection and keeps
 * the tokens, keyed by the text's bytes. The follower's connection registers, under the name
 * "porter", a tokenizer that wraps the real one: for a document's text that it finds in the cache
 * (same length, same bytes) it hands FTS5 the kept tokens, flags and offsets, exactly as the real
 * tokenizer made them; for anything else (queries, texts not kept, other arguments) it calls the
 * real one. FTS5 looks tokenizers up by name, newest registration first, so the table's schema
 * stays tokenize = 'porter unicode61' and every other connection uses the real one.
 *
 * Every add of a text expects one replay (a title is added once per chunk). Only the follower
 * removes entries (store_token_cache_advance, after each catch-up): those replayed as often as
 * added, and those left waiting for STALE_CATCH_UPS catch-ups. So an entry it
 * has found stays valid while it replays it without the lock; the preparing threads only add.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "index/store.h"
#include "index/store_int.h"

/* the arguments of the schema's tokenize = 'porter unicode61', to the porter tokenizer */
static const char *const porter_args[] = {"unicode61"};
#define PORTER_NARGS 1
/* catch-ups after which an entry never replayed goes */
#define STALE_CATCH_UPS 16

struct store_tokenizer {
    sqlite3 *db;
    fts5_tokenizer api;
    Fts5Tokenizer *tok;
    qr_buf tokens; /* the text being added's tokens, before they go into the cache */
};

/* One token as kept: then its bytes. */
typedef struct {
    int32_t flags, start, end, len;
} token_rec;

typedef struct token_entry {
    struct token_entry *next;
    uint64_t hash;
    uint64_t added;   /* the catch-up (gen) during which it was last added */
    uint64_t pending; /* adds not yet matched by a replay */
    size_t text_len, tokens_len;
    unsigned char data[]; /* the text, then its token_recs with their bytes */
} token_entry;

struct store_token_cache {
    pthread_mutex_t mu;
    token_entry **slots;
    size_t nslots, count, bytes;
    uint64_t gen; /* the follower's catch-up now, from 1 */
    store_token_stats stats;
};

/* The replaying tokenizer's module, freed by FTS5 with the connection. */
typedef struct {
    fts5_tokenizer real;
    void *real_user;
    store_token_cache *cache;
} replay_module;

typedef struct {
    Fts5Tokenizer *inner;
    const replay_module *m;
    bool replays; /* created with porter_args: the kept tokens are this tokenizer's */
} replay_tok;

/* 8 bytes at a time, multiplied and folded: the key of a text, compared in full afterwards */
static uint64_t text_hash(const char *p, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15u ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdu;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, n - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53u;
    return h ^ (h >> 29);
}

/* ---- a preparing thread's tokenizer ---------------------------------------------------------- */

qr_status store_tokenizer_open(store_tokenizer **out, char *err)
{
    *out = NULL;
    store_tokenizer *t = calloc(1, sizeof(*t));
    if (!t)
        return qr_fail(err, QR_ENOMEM, "out of memory for a tokenizer");
    qr_buf_init(&t->tokens, (size_t)1 << 31);
    void *user = NULL;
    fts5_api *api = NULL;
    if (sqlite3_open_v2(":memory:", &t->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_MEMORY | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK ||
        !(api = store_fts5_api(t->db)) || api->xFindTokenizer(api, "porter", &user, &t->api) != SQLITE_OK ||
        t->api.xCreate(user, (const char **)porter_args, PORTER_NARGS, &t->tok) != SQLITE_OK) {
        t->tok = NULL;
        store_tokenizer_close(t);
        return qr_fail(err, QR_EINTERNAL, "cannot load FTS5's porter tokenizer");
    }
    *out = t;
    return QR_OK;
}

void store_tokenizer_close(store_tokenizer *t)
{
    if (!t)
        return;
    if (t->tok)
        t->api.xDelete(t->tok);
    sqlite3_close(t->db);
    qr_buf_release(&t->tokens);
    free(t);
}

static int keep_token(void *ctx, int flags, const char *token, int ntoken, int start, int end)
{
    qr_buf *b = ctx;
    token_rec r = {flags, start, end, ntoken};
    if (qr_buf_append(b, &r, sizeof(r)) || qr_buf_append(b, token, (size_t)ntoken))
        return SQLITE_NOMEM;
    return SQLITE_OK;
}

/* ---- the cache ------------------------------------------------------------------------------- */

store_token_cache *store_token_cache_new(void)
{
    store_token_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->nslots = 4096;
    c->gen = 1;
    c->slots = calloc(c->nslots, sizeof(*c->slots));
    if (!c->slots) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void store_token_cache_free(store_token_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nslots; i++) {
        for (token_entry *e = c->slots[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(c->slots);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The entry holding exactly this text; under the lock. */
static token_entry *find(const store_token_cache *c, uint64_t h, const char *text, size_t len)
{
    for (token_entry *e = c->slots[h & (c->nslots - 1)]; e; e = e->next)
        if (e->hash == h && e->text_len == len && memcmp(e->data, text, len) == 0)
            return e;
    return NULL;
}

/* Doubles the table when it holds more entries than slots; under the lock. Best effort. */
static void grow(store_token_cache *c)
{
    size_t n = c->nslots * 2;
    token_entry **slots = calloc(n, sizeof(*slots));
    if (!slots)
        return;
    for (size_t i = 0; i < c->nslots; i++) {
        for (token_entry *e = c->slots[i], *next; e; e = next) {
            next = e->next;
            e->next = slots[e->hash & (n - 1)];
            slots[e->hash & (n - 1)] = e;
        }
    }
    free(c->slots);
    c->slots = slots;
    c->nslots = n;
}

void store_token_cache_add(store_token_cache *c, store_tokenizer *t, const char *text, size_t len)
{
    if (!c || !t || !text || !len || len > INT32_MAX)
        return;
    uint64_t h = text_hash(text, len);
    pthread_mutex_lock(&c->mu);
    token_entry *e = find(c, h, text, len);
    if (e) {
        e->added = c->gen; /* needed again: another chunk's, or another document's */
        e->pending++;
    }
    bool full = c->bytes + len > STORE_TOKEN_CACHE_BYTES;
    pthread_mutex_unlock(&c->mu);
    if (e || full)
        return;
    qr_buf_reset(&t->tokens);
    if (t->api.xTokenize(t->tok, &t->tokens, FTS5_TOKENIZE_DOCUMENT, text, (int)len, keep_token) != SQLITE_OK ||
        qr_buf_failed(&t->tokens))
        return;
    size_t tn = qr_buf_len(&t->tokens), size = sizeof(token_entry) + len + tn;
    e = malloc(size);
    if (!e)
        return;
    e->hash = h;
    e->text_len = len;
    e->tokens_len = tn;
    memcpy(e->data, text, len);
    memcpy(e->data + len, qr_buf_str(&t->tokens), tn);
    pthread_mutex_lock(&c->mu);
    token_entry *kept = find(c, h, text, len); /* by another thread meanwhile */
    if (kept) {
        kept->added = c->gen;
        kept->pending++;
    }
    if (kept || c->bytes + size > STORE_TOKEN_CACHE_BYTES) {
        pthread_mutex_unlock(&c->mu);
        free(e);
        return;
    }
    e->added = c->gen;
    e->pending = 1;
    e->next = c->slots[h & (c->nslots - 1)];
    c->slots[h & (c->nslots - 1)] = e;
    c->bytes += size;
    c->stats.added++;
    if (++c->count > c->nslots)
        grow(c);
    pthread_mutex_unlock(&c->mu);
}

void store_token_cache_advance(store_token_cache *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->gen++;
    for (size_t i = 0; i < c->nslots; i++) {
        for (token_entry **at = &c->slots[i]; *at;) {
            token_entry *e = *at;
            /* replayed as often as it was added, or left waiting for many catch-ups (a document
             * whose write failed or found it unchanged, or whose text was written otherwise than
             * prepared) */
            if (!e->pending || e->added + STALE_CATCH_UPS <= c->gen) {
                *at = e->next;
                c->bytes -= sizeof(token_entry) + e->text_len + e->tokens_len;
                c->count--;
                free(e);
            } else {
                at = &e->next;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
}

void store_token_cache_stats(store_token_cache *c, store_token_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    out->bytes = c->bytes;
    pthread_mutex_unlock(&c->mu);
}

/* ---- the follower's replaying tokenizer ------------------------------------------------------ */

static int replay_create(void *user, const char **args, int nargs, Fts5Tokenizer **out)
{
    const replay_module *m = user;
    replay_tok *t = calloc(1, sizeof(*t));
    if (!t)
        return SQLITE_NOMEM;
    t->m = m;
    int rc = m->real.xCreate(m->real_user, args, nargs, &t->inner);
    if (rc != SQLITE_OK) {
        free(t);
        return rc;
    }
    t->replays = nargs == PORTER_NARGS;
    for (int i = 0; t->replays && i < nargs; i++)
        t->replays = strcmp(args[i], porter_args[i]) == 0;
    *out = (Fts5Tokenizer *)t;
    return SQLITE_OK;
}

static void replay_delete(Fts5Tokenizer *tok)
{
    replay_tok *t = (replay_tok *)tok;
    t->m->real.xDelete(t->inner);
    free(t);
}

static int replay_tokenize(Fts5Tokenizer *tok, void *ctx, int flags, const char *text, int len,
                           int (*token)(void *, int, const char *, int, int, int))
{
    replay_tok *t = (replay_tok *)tok;
    store_token_cache *c = t->m->cache;
    if (t->replays && flags == FTS5_TOKENIZE_DOCUMENT && len > 0) {
        uint64_t h = text_hash(text, (size_t)len);
        pthread_mutex_lock(&c->mu);
        token_entry *e = find(c, h, text, (size_t)len);
        if (e) {
            if (e->pending)
                e->pending--;
            c->stats.replayed++;
        }
        else
            c->stats.missed++;
        pthread_mutex_unlock(&c->mu);
        if (e) {
            /* only this thread removes entries: e stays valid without the lock */
            const unsigned char *p = e->data + e->text_len, *end = p + e->tokens_len;
            while (p < end) {
                token_rec r;
                memcpy(&r, p, sizeof(r));
                p += sizeof(r);
                int rc = token(ctx, r.flags, (const char *)p, r.len, r.start, r.end);
                if (rc != SQLITE_OK)
                    return rc;
                p += r.len;
            }
            return SQLITE_OK;
        }
    }
    return t->m->real.xTokenize(t->inner, ctx, flags, text, len, token);
}

qr_status store_token_replay_register(sqlite3 *db, store_token_cache *c, char *err)
{
    fts5_api *api = store_fts5_api(db);
    replay_module *m = calloc(1, sizeof(*m));
    if (!m)
        return qr_fail(err, QR_ENOMEM, "out of memory for the full-text follower's tokenizer");
    m->cache = c;
    fts5_tokenizer replay = {replay_create, replay_delete, replay_tokenize};
    if (!api || api->xFindTokenizer(api, "porter", &m->real_user, &m->real) != SQLITE_OK ||
        api->xCreateTokenizer(api, "porter", m, &replay, free) != SQLITE_OK) {
        free(m);
        return qr_fail(err, QR_EINTERNAL, "cannot register the full-text follower's tokenizer");
    }
    return QR_OK;
}
