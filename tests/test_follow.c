/*
 * Tests of a follower's store (index/store_follow.c, index/follow.c): a store written from a feed
 * of document states under the keys, chunk ids and counters its system of record gave. The
 * source is a test double of store_follow_pull_fn over an in-memory list of records (quarry's own
 * struct, no model service). Where the system of record is itself a store (store A, written with
 * store_put), the follower (store B) must end with A's rows: documents, chunks, ACL rows,
 * tombstones, FTS5 index (MATCH and fts5vocab), vectors file, the feeds the indexes read, and the
 * BM25 and vector indexes built or caught up on it. Both stores are real SQLite databases in
 * temporary directories, read back through the test's own SQLite connection.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "index/feed.h"
#include "index/follow.h"
#include "index/index.h"
#include "tests/harness.h"
#include "tests/store_raw.h"

#define DIM        4
#define MAX_CHUNK  6
#define FOLLOW_UID 4242

/* ---- files and the test's own SQLite connection -------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_tree(const char *dir)
{
    if (dir && dir[0])
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory under $TMPDIR (or /tmp) into out. */
static bool temp_dir(char *out, size_t n)
{
    const char *base = getenv("TMPDIR");
    snprintf(out, n, "%s/quarry-follow-XXXXXX", base && base[0] ? base : "/tmp");
    return mkdtemp(out) != NULL;
}

static sqlite3 *raw_open(const char *dir)
{
    return store_raw_open(dir, SQLITE_OPEN_READWRITE);
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *q = NULL;
    int64_t v = -999;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int64(q, 0);
    else
        fprintf(stderr, "raw_int(%s): %s\n", sql, sqlite3_errmsg(db));
    sqlite3_finalize(q);
    return v;
}

/* Every row of sql as text, one line per row, columns separated by '|'; the caller frees it. */
static char *dump(sqlite3 *db, const char *sql)
{
    qr_buf b;
    qr_buf_init(&b, (size_t)64 << 20);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        qr_buf_printf(&b, "cannot prepare %s: %s", sql, sqlite3_errmsg(db));
    } else {
        while (sqlite3_step(q) == SQLITE_ROW) {
            for (int i = 0; i < sqlite3_column_count(q); i++) {
                const unsigned char *t = sqlite3_column_text(q, i);
                qr_buf_printf(&b, "%s%s", i ? "|" : "", t ? (const char *)t : "NULL");
            }
            qr_buf_putc(&b, '\n');
        }
    }
    sqlite3_finalize(q);
    char *out = strdup(qr_buf_str(&b));
    qr_buf_release(&b);
    return out;
}

/* ---- documents the tests write ---------------------------------------------------------- */

static const char *const words[] = {"travel",  "policy",   "hotel",   "budget", "receipts",  "flights",
                                    "meals",   "approval", "manager", "limits", "quarterly", "expenses",
                                    "bridges", "running",  "café",    "naïve",  "日本語",    "handbook"};
#define NWORDS (sizeof(words) / sizeof(words[0]))

/* A document as the tests hold it: the input of a store_put, and its current version. */
typedef struct {
    char doc_id[64], title[64], uri[64], meta[64], hash[65];
    const char *acl[3];
    size_t nacl;
    char text[1024];
    size_t text_len;
    store_chunk chunks[MAX_CHUNK];
    size_t nchunks;
    float vecs[MAX_CHUNK * DIM];
} doc;

/* Content number `version` of a document: nchunks chunks of words drawn from the version, with
 * vectors from it too (never zero). */
static void doc_content(doc *d, unsigned version, size_t nchunks)
{
    size_t at = 0;
    d->nchunks = nchunks;
    for (size_t c = 0; c < nchunks; c++) {
        d->chunks[c].start = at;
        for (unsigned w = 0; w < 4; w++)
            at += (size_t)snprintf(d->text + at, sizeof(d->text) - at, "%s ",
                                   words[(version * 7 + c * 3 + w * 5) % NWORDS]);
        d->chunks[c].end = at - 1; /* the space after the last word stays out */
        d->chunks[c].headings = c % 2 ? "Costs > Travel" : NULL;
        for (int k = 0; k < DIM; k++)
            d->vecs[c * DIM + k] =
                (float)(1 + (version * 13 + c * 5 + (unsigned)k * 3) % 11) * (k % 2 ? -1 : 1);
    }
    d->text_len = at;
    for (int i = 0; i < 64; i++)
        d->hash[i] = "0123456789abcdef"[(version * 31 + (unsigned)i * 7) % 16];
    d->hash[64] = '\0';
}

static void doc_init(doc *d, const char *doc_id, unsigned version, size_t nchunks)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->doc_id, sizeof(d->doc_id), "%s", doc_id);
    snprintf(d->title, sizeof(d->title), "Title of %s", doc_id);
    snprintf(d->uri, sizeof(d->uri), "file:///%s", doc_id);
    snprintf(d->meta, sizeof(d->meta), "{\"v\": %u}", version);
    d->acl[0] = "group:staff";
    d->nacl = 1;
    doc_content(d, version, nchunks);
}

static store_document doc_input(const doc *d)
{
    return (store_document){.doc_id = d->doc_id,
                            .title = d->title,
                            .uri = d->uri,
                            .content_type = "text/plain",
                            .metadata_json = d->meta,
                            .acl = d->acl,
                            .nacl = d->nacl,
                            .content_hash = d->hash,
                            .text = d->text,
                            .text_len = d->text_len};
}

/* ---- the source: records in counter order ------------------------------------------------- */

typedef struct {
    int64_t counter, doc_key;
    bool deleted;
    doc d;
    int64_t ids[MAX_CHUNK];
    int dim;
} rec;

typedef struct {
    rec *v;
    size_t n, cap;
    int64_t head; /* the source's counter, >= every record's */
    bool latest;  /* each document key's latest record only, as a feed of states sends them */
    int64_t cut;  /* the source as it was at this counter (records after it unwritten); 0: now */
    int sleep_ms; /* each pull sleeps this long first */
    size_t pulls;
    size_t fail_at; /* 1-based index of a record emitted with a NaN vector; 0: none */
} source;

static rec *src_add(source *src, int64_t counter, int64_t key, bool deleted, const doc *d, const int64_t *ids)
{
    if (src->n == src->cap) {
        src->cap = src->cap ? 2 * src->cap : 64;
        src->v = realloc(src->v, src->cap * sizeof(*src->v));
    }
    rec *r = &src->v[src->n++];
    memset(r, 0, sizeof(*r));
    r->counter = counter;
    r->doc_key = key;
    r->deleted = deleted;
    r->d = *d;
    r->dim = DIM;
    if (ids)
        memcpy(r->ids, ids, d->nchunks * sizeof(*ids));
    if (counter > src->head)
        src->head = counter;
    return r;
}

static store_follow_doc rec_doc(const rec *r)
{
    store_follow_doc f = {.counter = r->counter,
                          .doc_key = r->doc_key,
                          .deleted = r->deleted,
                          .doc = doc_input(&r->d),
                          .chunks = r->d.chunks,
                          .nchunks = r->deleted ? 0 : r->d.nchunks,
                          .chunk_ids = r->ids,
                          .vectors = r->d.vecs,
                          .dim = r->dim};
    return f;
}

static bool visible(const source *src, size_t i)
{
    return !src->cut || src->v[i].counter <= src->cut;
}

static bool superseded(const source *src, size_t i)
{
    for (size_t j = i + 1; j < src->n; j++)
        if (visible(src, j) && src->v[j].doc_key == src->v[i].doc_key)
            return true;
    return false;
}

/* store_follow_pull_fn over the list: never part of a counter's records. */
static qr_status src_pull(void *ctx, int64_t since, size_t limit, store_follow_emit_fn emit, void *emit_ctx,
                          int64_t *through, int64_t *head, char *err)
{
    source *src = ctx;
    src->pulls++;
    if (src->sleep_ms) {
        struct timespec ts = {0, src->sleep_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    size_t sent = 0;
    int64_t last = since;
    *head = src->cut ? src->cut : src->head;
    for (size_t i = 0; i < src->n; i++) {
        const rec *r = &src->v[i];
        if (r->counter <= since || !visible(src, i) || (src->latest && superseded(src, i)))
            continue;
        if (sent >= limit && r->counter != last) {
            *through = last;
            return QR_OK;
        }
        store_follow_doc f = rec_doc(r);
        float bad[MAX_CHUNK * DIM];
        if (src->fail_at == i + 1) {
            memcpy(bad, r->d.vecs, sizeof(bad));
            bad[0] = NAN;
            f.vectors = bad;
        }
        qr_status st = emit(emit_ctx, &f, err);
        if (st)
            return st;
        sent++;
        last = r->counter;
    }
    *through = *head;
    return QR_OK;
}

static void src_free(source *src)
{
    free(src->v);
    memset(src, 0, sizeof(*src));
}

/* ---- the system of record: store A, each write recorded --------------------------------- */

typedef struct {
    store *s;
    sqlite3 *raw;
    source *src;
} primary;

static int64_t key_of(primary *p, const char *doc_id)
{
    sqlite3_stmt *q = NULL;
    int64_t key = -1;
    if (sqlite3_prepare_v2(p->raw, "SELECT id FROM documents WHERE doc_id = ?1", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_bind_text(q, 1, doc_id, -1, SQLITE_STATIC) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        key = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return key;
}

static qr_status record_state(primary *p, const doc *d, char *err)
{
    int64_t counter = 0, key = key_of(p, d->doc_id), ids[MAX_CHUNK];
    qr_status st = store_change_counter(p->s, &counter, err);
    if (st)
        return st;
    sqlite3_stmt *q = NULL;
    size_t n = 0;
    if (sqlite3_prepare_v2(p->raw, "SELECT id FROM chunks WHERE doc = ?1 ORDER BY ordinal", -1, &q, NULL) ==
            SQLITE_OK &&
        sqlite3_bind_int64(q, 1, key) == SQLITE_OK)
        while (sqlite3_step(q) == SQLITE_ROW && n < MAX_CHUNK)
            ids[n++] = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    if (key < 0 || n != d->nchunks)
        return qr_fail(err, QR_EINTERNAL, "'%s': key %lld, %zu chunks", d->doc_id, (long long)key, n);
    src_add(p->src, counter, key, false, d, ids);
    return QR_OK;
}

static qr_status a_put(primary *p, const doc *d, store_put_result want, char *err)
{
    store_document in = doc_input(d);
    store_put_result res;
    qr_status st = store_put(p->s, &in, d->chunks, d->nchunks, d->vecs, DIM, &res, err);
    if (!st && res != want)
        return qr_fail(err, QR_EINTERNAL, "'%s': put result %d, expected %d", d->doc_id, (int)res, (int)want);
    return st ? st : record_state(p, d, err);
}

static qr_status a_set_acl(primary *p, doc *d, const char *const *acl, size_t nacl, char *err)
{
    d->nacl = nacl;
    for (size_t i = 0; i < nacl; i++)
        d->acl[i] = acl[i];
    qr_status st = store_set_acl(p->s, d->doc_id, acl, nacl, err);
    return st ? st : record_state(p, d, err);
}

static qr_status a_delete(primary *p, const doc *d, char *err)
{
    int64_t key = key_of(p, d->doc_id), counter = 0;
    qr_status st = store_delete(p->s, d->doc_id, err);
    if (!st)
        st = store_change_counter(p->s, &counter, err);
    if (!st)
        src_add(p->src, counter, key, true, d, NULL);
    return st;
}

/* The writes of the equivalence tests: adds, new content (new chunk ids, the old tombstoned),
 * ACL-only and title-only changes, metadata, deletes, a document deleted and added again. */
static qr_status history(primary *p, char *err)
{
    doc d[6];
    const char *names[] = {"handbook.md", "travel.txt", "hotels.html", "budget.md", "empty.txt", "notes.md"};
    const size_t nchunks[] = {3, 2, 4, 1, 0, 2};
    qr_status st = QR_OK;
    for (int i = 0; i < 6 && !st; i++) {
        doc_init(&d[i], names[i], (unsigned)i + 1, nchunks[i]);
        st = a_put(p, &d[i], STORE_ADDED, err);
    }
    static const char *const acl2[] = {"user:ava", "group:finance"};
    static const char *const acl1[] = {"public"};
    if (st || (st = a_set_acl(p, &d[1], acl2, 2, err)))
        return st;
    doc_content(&d[0], 11, 4); /* new content: new ids */
    if ((st = a_put(p, &d[0], STORE_UPDATED, err)))
        return st;
    snprintf(d[2].title, sizeof(d[2].title), "Hotels and budget limits");
    if ((st = a_put(p, &d[2], STORE_UPDATED, err))) /* title only: FTS rows rewritten, same ids */
        return st;
    snprintf(d[3].meta, sizeof(d[3].meta), "{\"v\": 99}");
    d[3].acl[0] = acl1[0];
    if ((st = a_put(p, &d[3], STORE_ACL_UPDATED, err)) || (st = a_delete(p, &d[1], err)) ||
        (st = a_delete(p, &d[5], err)))
        return st;
    doc_content(&d[1], 21, 3); /* travel.txt again, under a new key or the reused one */
    if ((st = a_put(p, &d[1], STORE_ADDED, err)))
        return st;
    doc_content(&d[4], 31, 2); /* the empty document gets text */
    if ((st = a_put(p, &d[4], STORE_UPDATED, err)))
        return st;
    doc_init(&d[5], "late.md", 41, 3);
    return a_put(p, &d[5], STORE_ADDED, err);
}

/* ---- follower stores and comparisons ----------------------------------------------------- */

static qr_status open_follower(const char *dir, store **out, char *err)
{
    qr_status st = store_open(dir, out, err);
    if (!st)
        st = store_check_embedding(*out, "test-model", DIM, err);
    if (!st)
        st = store_follow_identity(*out, FOLLOW_UID, err);
    return st;
}

static qr_status open_primary(const char *dir, store **out, char *err)
{
    qr_status st = store_open(dir, out, err);
    return st ? st : store_check_embedding(*out, "test-model", DIM, err);
}

/* Whether the rows sql reads are the same in both databases; prints both when not. */
static bool same_rows(sqlite3 *a, sqlite3 *b, const char *sql)
{
    char *x = dump(a, sql), *y = dump(b, sql);
    bool same = strcmp(x, y) == 0 && !strstr(x, "cannot prepare");
    if (!same)
        fprintf(stderr, "%s\n--- A:\n%s--- B:\n%s", sql, x, y);
    free(x);
    free(y);
    return same;
}

/* The FTS5 index of a store, term by term, for fts5vocab. */
static void vocab_table(sqlite3 *db)
{
    sqlite3_exec(db,
                 "CREATE VIRTUAL TABLE IF NOT EXISTS temp.vocab USING fts5vocab(fts, chunks_fts, instance)",
                 NULL, NULL, NULL);
}

/* The rows of the vectors files for chunk ids 1..max, compared byte for byte. */
static bool same_vectors(const char *da, const char *db, int64_t max_id, char *err)
{
    store_vectors *fa = NULL, *fb = NULL;
    const float *ra, *rb;
    bool same = !store_vectors_open(da, &fa, err) && !store_vectors_open(db, &fb, err) &&
                !store_vectors_map(fa, max_id, &ra, err) && !store_vectors_map(fb, max_id, &rb, err) &&
                store_vectors_dim(fa) == DIM && store_vectors_dim(fb) == DIM &&
                memcmp(ra + DIM, rb + DIM, (size_t)max_id * DIM * sizeof(float)) == 0;
    store_vectors_close(fa);
    store_vectors_close(fb);
    return same;
}

/* What a feed reports, as text. */
static qr_status on_change(void *ctx, const store_change *c, char *err)
{
    (void)err;
    qr_buf_printf(ctx, "%lld %lld %d", (long long)c->chunk_id, (long long)c->counter, c->deleted);
    for (int i = 0; c->vector && i < c->dim; i++)
        qr_buf_printf(ctx, " %.6f", c->vector[i]);
    return qr_buf_putc(ctx, '\n');
}

static qr_status on_text(void *ctx, const store_text *t, char *err)
{
    (void)err;
    qr_buf_printf(ctx, "%lld %lld %lld %d", (long long)t->chunk_id, (long long)t->doc, (long long)t->counter,
                  t->deleted);
    for (int i = 0; i < 3 && !t->deleted; i++)
        qr_buf_printf(ctx, " [%.*s]", (int)t->col_len[i], t->col[i]);
    return qr_buf_putc(ctx, '\n');
}

static qr_status on_doc(void *ctx, const store_doc_change *d, char *err)
{
    (void)err;
    qr_buf_printf(ctx, "%lld %lld %d", (long long)d->doc, (long long)d->counter, d->fts_rewritten);
    for (size_t i = 0; i < d->nacl; i++)
        qr_buf_printf(ctx, " %s", d->acl[i]);
    return qr_buf_putc(ctx, '\n');
}

/* The three feeds after `since`, as text with the counter they report. */
static qr_status feeds(store *s, int64_t since, qr_buf *out, char *err)
{
    int64_t c1 = 0, c2 = 0, c3 = 0;
    qr_status st;
    if ((st = store_changes_since(s, since, on_change, out, &c1, err)) ||
        (st = store_text_changes_since(s, since, on_text, out, &c2, err)) ||
        (st = store_docs_changed_since(s, since, on_doc, out, &c3, err)))
        return st;
    return qr_buf_printf(out, "counters %lld %lld %lld\n", (long long)c1, (long long)c2, (long long)c3);
}

static const char *const SQL_DOCS =
    "SELECT id, doc_id, title, uri, content_type, metadata, content_hash, text_len, chunk_count, version,"
    " changed, fts_changed FROM documents ORDER BY id";
static const char *const SQL_DOCS_STATE =
    "SELECT id, doc_id, title, uri, content_type, metadata, content_hash,"
    " text_len, chunk_count FROM documents ORDER BY id";
static const char *const SQL_CHUNKS =
    "SELECT id, doc, ordinal, start, \"end\", headings, body, added FROM chunks ORDER BY id";
static const char *const SQL_CHUNKS_STATE =
    "SELECT id, doc, ordinal, start, \"end\", headings, body FROM chunks ORDER BY id";
static const char *const SQL_ACL = "SELECT doc, principal FROM acl ORDER BY doc, principal";
static const char *const SQL_TOMBSTONES = "SELECT chunk_id, counter FROM deleted_chunks ORDER BY chunk_id";
static const char *const SQL_META = "SELECT key, value FROM meta WHERE key IN ('change_counter',"
                                    " 'embedding_dim', 'embedding_model') ORDER BY key";
static const char *const SQL_VOCAB = "SELECT term, doc, col, offset FROM temp.vocab ORDER BY 1, 2, 3, 4";
static const char *const SQL_MATCH[] = {
    "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH 'hotel OR budget' ORDER BY rowid",
    "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH 'title:limits' ORDER BY rowid",
    "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH 'headings:travel' ORDER BY rowid",
    "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH '日本語 OR naive' ORDER BY rowid",
};

/* Everything of B that must equal A's after the same history (history: the per-write columns
 * and the tombstones too, which a follower fed every state has exactly). */
static void check_same_store(const char *da, store *a, const char *db, store *b, bool history_too)
{
    char err[QR_ERR_LEN] = "";
    sqlite3 *ra = raw_open(da), *rb = raw_open(db);
    CHECK(ra && rb);
    vocab_table(ra);
    vocab_table(rb);
    bool same = same_rows(ra, rb, history_too ? SQL_DOCS : SQL_DOCS_STATE) &&
                same_rows(ra, rb, history_too ? SQL_CHUNKS : SQL_CHUNKS_STATE) &&
                same_rows(ra, rb, SQL_ACL) && same_rows(ra, rb, SQL_META) && same_rows(ra, rb, SQL_VOCAB) &&
                (!history_too || same_rows(ra, rb, SQL_TOMBSTONES));
    for (size_t i = 0; same && i < sizeof(SQL_MATCH) / sizeof(SQL_MATCH[0]); i++)
        same = same_rows(ra, rb, SQL_MATCH[i]);
    int64_t max_a = raw_int(ra, "SELECT max(id) FROM chunks"),
            max_b = raw_int(rb, "SELECT max(id) FROM chunks");
    int64_t live = raw_int(ra, "SELECT count(*) FROM chunks");
    sqlite3_close(ra);
    sqlite3_close(rb);
    CHECK_MSG(same, "B's rows differ from A's (above)");
    CHECK(live > 0);
    CHECK_INT(max_a, max_b);
    CHECK_MSG(same_vectors(da, db, max_a, err), "vectors differ: %s", err);
    CHECK_OK(store_verify(b, err), err);
    CHECK_OK(store_verify(a, err), err);
}

/* The feeds of A and B after every `since` up to A's counter. */
static void check_same_feeds(store *a, store *b)
{
    char err[QR_ERR_LEN] = "";
    int64_t top = 0;
    CHECK_OK(store_change_counter(a, &top, err), err);
    for (int64_t since = 0; since <= top; since++) {
        qr_buf x, y;
        qr_buf_init(&x, (size_t)16 << 20);
        qr_buf_init(&y, (size_t)16 << 20);
        qr_status sa = feeds(a, since, &x, err), sb = sa ? sa : feeds(b, since, &y, err);
        bool same = !sa && !sb && strcmp(qr_buf_str(&x), qr_buf_str(&y)) == 0;
        if (!same)
            fprintf(stderr, "since %lld:\n--- A:\n%s--- B:\n%s", (long long)since, qr_buf_str(&x),
                    qr_buf_str(&y));
        qr_buf_release(&x);
        qr_buf_release(&y);
        CHECK_MSG(same, "the feeds after %lld differ (%s)", (long long)since, err);
    }
}

/* ---- 1. equivalence ---------------------------------------------------------------------- */

/* A written with store_put, one write per transaction; B1 fed every record in one batch, B2 after
 * each write (a batch per record), both with A's keys, ids and counters. */
TEST(equivalence)
{
    char err[QR_ERR_LEN] = "", da[256], db1[256], db2[256];
    CHECK(temp_dir(da, sizeof(da)) && temp_dir(db1, sizeof(db1)) && temp_dir(db2, sizeof(db2)));
    source src = {0};
    store *a = NULL, *b1 = NULL, *b2 = NULL;
    CHECK_OK(open_primary(da, &a, err), err);
    CHECK_OK(open_follower(db1, &b1, err), err);
    CHECK_OK(open_follower(db2, &b2, err), err);
    primary p = {a, raw_open(da), &src};
    CHECK(p.raw);
    CHECK_OK(history(&p, err), err);
    /* B2 followed record by record: replay the source one counter at a time */
    int64_t counter = 0, head = 0;
    for (size_t steps = 0; counter < src.head; steps++) {
        CHECK_OK(follow_step(b2, src_pull, &src, 1, &counter, &head, err), err);
        CHECK_INT(head, src.head);
        CHECK(steps < src.n);
    }
    CHECK_OK(follow_step(b1, src_pull, &src, 1000, &counter, &head, err), err);
    CHECK_INT(counter, src.head);
    check_same_store(da, a, db1, b1, true);
    check_same_store(da, a, db2, b2, true);
    check_same_feeds(a, b1);
    check_same_feeds(a, b2);
    sqlite3_close(p.raw);
    store_close(a);
    store_close(b1);
    store_close(b2);
    src_free(&src);
    rm_tree(da);
    rm_tree(db1);
    rm_tree(db2);
}

/* The same history sent as a feed of latest states (each document key once, at its last change):
 * chunk ids arrive below ids the follower already holds. B ends with A's documents, chunks, ACL,
 * FTS rows and vectors. */
TEST(equivalence_latest_states)
{
    char err[QR_ERR_LEN] = "", da[256], db[256], db2[256];
    CHECK(temp_dir(da, sizeof(da)) && temp_dir(db, sizeof(db)) && temp_dir(db2, sizeof(db2)));
    source src = {0};
    store *a = NULL, *b = NULL, *b2 = NULL;
    CHECK_OK(open_primary(da, &a, err), err);
    CHECK_OK(open_follower(db, &b, err), err);
    primary p = {a, raw_open(da), &src};
    CHECK(p.raw);
    CHECK_OK(history(&p, err), err);
    src.latest = true;
    int64_t counter = 0, head = 0;
    while (counter < src.head)
        CHECK_OK(follow_step(b, src_pull, &src, 2, &counter, &head, err), err);
    check_same_store(da, a, db, b, false);
    /* B2 saw the six first documents, then the latest states after them: a deletion superseded by
     * a document added under the freed key (A reuses the largest key), an old key deleted */
    CHECK_OK(open_follower(db2, &b2, err), err);
    src.cut = 6;
    CHECK_OK(follow_step(b2, src_pull, &src, 100, &counter, &head, err), err);
    CHECK_INT(counter, 6);
    src.cut = 0;
    while (counter < src.head)
        CHECK_OK(follow_step(b2, src_pull, &src, 2, &counter, &head, err), err);
    check_same_store(da, a, db2, b2, false);
    sqlite3_close(p.raw);
    store_close(a);
    store_close(b);
    store_close(b2);
    src_free(&src);
    rm_tree(da);
    rm_tree(db);
    rm_tree(db2);
}

/* A feed that lost a deletion (its tombstone pruned at the source): a doc_id arrives under a new
 * key, and a key arrives with another doc_id. What the key or doc_id held before goes, its chunks
 * tombstoned at the record's counter. */
TEST(rekeyed_documents)
{
    char err[QR_ERR_LEN] = "", db[256];
    CHECK(temp_dir(db, sizeof(db)));
    source src = {0};
    doc x, y, z;
    doc_init(&x, "x.md", 1, 2);
    doc_init(&y, "y.md", 2, 1);
    doc_init(&z, "z.md", 3, 2);
    const int64_t xid[] = {1, 2}, yid[] = {3}, x2id[] = {10, 11}, zid[] = {12, 13};
    src_add(&src, 1, 1, false, &x, xid);
    src_add(&src, 2, 2, false, &y, yid);
    src_add(&src, 5, 7, false, &x, x2id); /* x.md again, under key 7 */
    src_add(&src, 6, 2, false, &z, zid);  /* key 2 is z.md's now */
    store *b = NULL;
    int64_t counter = 0, head = 0;
    CHECK_OK(open_follower(db, &b, err), err);
    CHECK_OK(follow_step(b, src_pull, &src, 2, &counter, &head, err), err);
    CHECK_OK(follow_step(b, src_pull, &src, 2, &counter, &head, err), err);
    CHECK_INT(counter, 6);
    CHECK_OK(store_verify(b, err), err);
    sqlite3 *raw = raw_open(db);
    char *docs = dump(raw, "SELECT id, doc_id FROM documents ORDER BY id"),
         *chunks = dump(raw, "SELECT id, doc, added FROM chunks ORDER BY id"),
         *gone = dump(raw, SQL_TOMBSTONES), *acl = dump(raw, SQL_ACL);
    sqlite3_close(raw);
    bool ok = strcmp(docs, "2|z.md\n7|x.md\n") == 0 &&
              strcmp(chunks, "10|7|5\n11|7|5\n12|2|6\n13|2|6\n") == 0 &&
              strcmp(gone, "1|5\n2|5\n3|6\n") == 0 && strcmp(acl, "2|group:staff\n7|group:staff\n") == 0;
    if (!ok)
        fprintf(stderr, "documents:\n%schunks:\n%stombstones:\n%sacl:\n%s", docs, chunks, gone, acl);
    free(docs);
    free(chunks);
    free(gone);
    free(acl);
    CHECK(ok);
    store_close(b);
    src_free(&src);
    rm_tree(db);
}

/* ---- 2. batches and limits --------------------------------------------------------------- */

/* 20 records of distinct documents, counters with gaps and runs of equal counters, chunk ids
 * with gaps; the source's head is past the last record (changes that touched no document). */
static void gappy_source(source *src)
{
    static const int64_t counters[20] = {3,  3,  3,  5,  8,  8,  9,  12, 12, 12,
                                         12, 15, 16, 16, 20, 21, 21, 30, 31, 31};
    int64_t next_id = 2;
    for (int i = 0; i < 20; i++) {
        doc d;
        char name[32];
        snprintf(name, sizeof(name), "doc-%02d.md", i);
        doc_init(&d, name, (unsigned)i + 100, 1 + (size_t)i % 3);
        int64_t ids[MAX_CHUNK];
        for (size_t c = 0; c < d.nchunks; c++)
            ids[c] = next_id++;
        next_id += 1 + i % 4; /* ids the system of record handed out to chunks deleted since */
        src_add(src, counters[i], 10 + 3 * i, false, &d, ids);
    }
    src->head = 33;
}

/* Records of the source with counter <= c, and whether B holds exactly their documents. */
static bool holds_through(const char *dir, const source *src, int64_t c)
{
    size_t want = 0;
    for (size_t i = 0; i < src->n; i++)
        want += src->v[i].counter <= c;
    sqlite3 *db = raw_open(dir);
    int64_t docs = raw_int(db, "SELECT count(*) FROM documents"),
            newest = raw_int(db, "SELECT coalesce(max(changed), 0) FROM documents");
    sqlite3_close(db);
    if ((size_t)docs != want || newest > c)
        fprintf(stderr, "through %lld: %lld documents (want %zu), newest change %lld\n", (long long)c,
                (long long)docs, want, (long long)newest);
    return (size_t)docs == want && newest <= c;
}

TEST(batches_never_split_a_counter)
{
    char err[QR_ERR_LEN] = "", db[256];
    CHECK(temp_dir(db, sizeof(db)));
    source src = {0};
    gappy_source(&src);
    store *b = NULL;
    CHECK_OK(open_follower(db, &b, err), err);
    int64_t counter = 0, head = 0, local = 0, prev = 0;
    size_t steps = 0;
    while (counter < src.head) {
        CHECK_OK(follow_step(b, src_pull, &src, 3, &counter, &head, err), err);
        CHECK_OK(store_change_counter(b, &local, err), err);
        CHECK_INT(local, counter);
        CHECK_INT(head, 33);
        CHECK(counter > prev);
        CHECK(holds_through(db, &src, counter));
        prev = counter;
        CHECK(++steps <= 20);
    }
    /* 3,3,3 | 5,8,8 | 9,12,12,12,12 (the limit is 3: the counter's 4 records go together) |
     * 15,16,16 | 20,21,21 | 30,31,31, and that last step reaches the head, 33 */
    CHECK_INT(counter, 33);
    CHECK_INT(steps, 6);
    CHECK_OK(store_verify(b, err), err);
    /* nothing left: a step changes nothing */
    CHECK_OK(follow_step(b, src_pull, &src, 3, &counter, &head, err), err);
    CHECK_INT(counter, 33);
    store_close(b);
    rm_tree(db);
    src_free(&src);
}

TEST(follow_until_target_and_budget)
{
    char err[QR_ERR_LEN] = "", d1[256], d2[256], d3[256];
    CHECK(temp_dir(d1, sizeof(d1)) && temp_dir(d2, sizeof(d2)) && temp_dir(d3, sizeof(d3)));
    source src = {0};
    gappy_source(&src);
    store *b1 = NULL, *b2 = NULL, *b3 = NULL;
    CHECK_OK(open_follower(d1, &b1, err), err);
    CHECK_OK(open_follower(d2, &b2, err), err);
    CHECK_OK(open_follower(d3, &b3, err), err);
    int64_t counter = -1;
    CHECK_OK(follow_until(b1, src_pull, &src, 12, 60000, &counter, err), err);
    CHECK(counter >= 12);
    CHECK(holds_through(d1, &src, counter));
    /* already there: no pull at all */
    size_t pulls = src.pulls;
    CHECK_OK(follow_until(b1, src_pull, &src, 12, 0, &counter, err), err);
    CHECK_INT(src.pulls, pulls);
    /* a budget of 0 with the store behind: nothing applied */
    CHECK_INT(follow_until(b2, src_pull, &src, 12, 0, &counter, err), QR_ETIMEOUT);
    CHECK_INT(counter, 0);
    CHECK(holds_through(d2, &src, 0));
    /* a target the source never reaches: what was applied before the budget ran out stays */
    CHECK_INT(follow_until(b2, src_pull, &src, 40, 30, &counter, err), QR_ETIMEOUT);
    CHECK_INT(counter, 33);
    CHECK(holds_through(d2, &src, 33));
    /* a source slower than the budget: its first batch is completed, then the budget is spent */
    src.sleep_ms = 20;
    CHECK_INT(follow_until(b3, src_pull, &src, 40, 1, &counter, err), QR_ETIMEOUT);
    CHECK_INT(counter, 33);
    CHECK(strstr(err, "33 of 40"));
    CHECK_OK(store_verify(b3, err), err);
    store_close(b1);
    store_close(b2);
    store_close(b3);
    rm_tree(d1);
    rm_tree(d2);
    rm_tree(d3);
    src_free(&src);
}

/* ---- 3. bad records ---------------------------------------------------------------------- */

static rec good_rec(int64_t counter, int64_t key, const char *name, int64_t first_id)
{
    rec r;
    memset(&r, 0, sizeof(r));
    r.counter = counter;
    r.doc_key = key;
    r.dim = DIM;
    doc_init(&r.d, name, (unsigned)key, 2);
    r.ids[0] = first_id;
    r.ids[1] = first_id + 3;
    return r;
}

static char *store_rows(const char *dir)
{
    sqlite3 *db = raw_open(dir);
    vocab_table(db);
    const char *const sql[] = {SQL_DOCS, SQL_CHUNKS, SQL_ACL, SQL_TOMBSTONES, SQL_META, SQL_VOCAB};
    qr_buf b;
    qr_buf_init(&b, (size_t)64 << 20);
    for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
        char *t = dump(db, sql[i]);
        qr_buf_puts(&b, t);
        free(t);
    }
    sqlite3_close(db);
    char *out = strdup(qr_buf_str(&b));
    qr_buf_release(&b);
    return out;
}

TEST(bad_records_change_nothing)
{
    char err[QR_ERR_LEN] = "", db[256];
    CHECK(temp_dir(db, sizeof(db)));
    store *b = NULL;
    CHECK_OK(open_follower(db, &b, err), err);
    rec first = good_rec(5, 1, "first.md", 1);
    store_follow_doc f = rec_doc(&first);
    CHECK_INT(store_follow_apply(b, &f, err), QR_EINVAL); /* no batch open */
    CHECK_OK(store_follow_begin(b, err), err);
    CHECK_OK(store_follow_apply(b, &f, err), err);
    CHECK_OK(store_follow_commit(b, 5, err), err);
    char *before = store_rows(db);

    CHECK_OK(store_follow_begin(b, err), err);
    static const float nan_vecs[2 * DIM] = {NAN, 1, 1, 1, 1, 1, 1, 1};
    static const char *const bad_acl[] = {"administrators"};
    for (int variant = 0; variant < 11; variant++) {
        rec r = good_rec(7, 2, "second.md", 10);
        f = rec_doc(&r);
        qr_status want = QR_EINVAL;
        const char *says = "";
        switch (variant) {
        case 0: f.counter = 5, says = "already at 5"; break;
        case 1: snprintf(r.d.title, sizeof(r.d.title), "bad \xff title"), says = "UTF-8"; break;
        case 2: r.ids[1] = 9, says = "increasing"; break;
        case 3: f.vectors = nan_vecs, says = "non-finite"; break;
        case 4: f.dim = 3, says = "dimension"; break;
        case 5: r.d.acl[0] = bad_acl[0], says = "principal"; break;
        case 6: r.ids[0] = 1, says = "already stored"; break; /* first.md's chunk */
        case 7: f.doc.text = NULL, f.doc.text_len = 0, says = "no text"; break;
        case 8: f.doc_key = 0, says = "document key"; break;
        case 9: f.doc.doc_id = "", says = "doc_id"; break;
        case 10: r.d.chunks[1].end = r.d.text_len + 5, says = "outside the text"; break;
        }
        err[0] = '\0';
        CHECK_MSG(store_follow_apply(b, &f, err) == want, "variant %d was not refused (%s)", variant, err);
        CHECK_MSG(strstr(err, says), "variant %d: '%s' does not say '%s'", variant, err, says);
        CHECK(store_in_batch(b));
    }
    /* the batch goes on: a good record, then one behind it */
    rec second = good_rec(7, 2, "second.md", 10), behind = good_rec(6, 3, "third.md", 20);
    f = rec_doc(&second);
    CHECK_OK(store_follow_apply(b, &f, err), err);
    f = rec_doc(&behind);
    CHECK_INT(store_follow_apply(b, &f, err), QR_EINVAL);
    CHECK(strstr(err, "counter order"));
    CHECK_OK(store_follow_commit(b, 7, err), err);
    sqlite3 *raw = raw_open(db);
    CHECK_INT(raw_int(raw, "SELECT count(*) FROM documents"), 2);
    CHECK_INT(raw_int(raw, "SELECT count(*) FROM chunks"), 4);
    CHECK_INT(raw_int(raw, "SELECT value FROM meta WHERE key = 'change_counter'"), 7);
    sqlite3_close(raw);
    CHECK_OK(store_verify(b, err), err);

    /* a chunk id deleted before never comes back */
    rec gone = second;
    gone.counter = 8;
    gone.deleted = true;
    f = rec_doc(&gone);
    CHECK_OK(store_follow_begin(b, err), err);
    CHECK_OK(store_follow_apply(b, &f, err), err);
    CHECK_OK(store_follow_commit(b, 8, err), err);
    rec again = good_rec(9, 4, "fourth.md", 10);
    f = rec_doc(&again);
    CHECK_OK(store_follow_begin(b, err), err);
    CHECK_INT(store_follow_apply(b, &f, err), QR_EINVAL);
    CHECK(strstr(err, "deleted before"));
    store_follow_rollback(b);
    CHECK(!store_in_batch(b));
    free(before);
    before = store_rows(db);

    /* a bad record from a source fails the whole step: nothing of the batch stays */
    source src = {0};
    rec r1 = good_rec(10, 5, "fifth.md", 30), r2 = good_rec(10, 6, "sixth.md", 40);
    src_add(&src, r1.counter, r1.doc_key, false, &r1.d, r1.ids);
    src_add(&src, r2.counter, r2.doc_key, false, &r2.d, r2.ids);
    src.fail_at = 2;
    int64_t counter = -1, head = -1;
    CHECK_INT(follow_step(b, src_pull, &src, 10, &counter, &head, err), QR_EINVAL);
    CHECK(strstr(err, "non-finite"));
    CHECK_INT(counter, -1);
    CHECK(!store_in_batch(b));
    char *after = store_rows(db);
    CHECK_STR(after, before);
    free(after);

    /* a commit behind what the batch applied is refused and rolls it back */
    f = rec_doc(&r1);
    CHECK_OK(store_follow_begin(b, err), err);
    CHECK_OK(store_follow_apply(b, &f, err), err);
    CHECK_INT(store_follow_commit(b, 9, err), QR_EINVAL);
    CHECK(!store_in_batch(b));
    after = store_rows(db);
    CHECK_STR(after, before);
    free(after);
    CHECK_INT(store_follow_commit(b, 10, err), QR_EINVAL); /* no batch */

    /* and the source, repaired, is applied */
    src.fail_at = 0;
    CHECK_OK(follow_step(b, src_pull, &src, 10, &counter, &head, err), err);
    CHECK_INT(counter, 10);
    CHECK_OK(store_verify(b, err), err);
    free(before);
    src_free(&src);
    store_close(b);
    rm_tree(db);
}

/* ---- 4. identity and refused writes ------------------------------------------------------ */

TEST(follower_identity_and_refused_writes)
{
    char err[QR_ERR_LEN] = "", da[256], db[256], dc[256];
    CHECK(temp_dir(da, sizeof(da)) && temp_dir(db, sizeof(db)) && temp_dir(dc, sizeof(dc)));
    store *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(open_primary(db, &b, err), err);
    int64_t uid = 0;
    CHECK_INT(store_follow_identity(b, 0, err), QR_EINVAL);
    CHECK_INT(store_follow_begin(b, err), QR_EINVAL);
    CHECK(strstr(err, "does not follow"));
    CHECK(!store_in_batch(b));
    CHECK_OK(store_follow_identity(b, 77, err), err);
    CHECK_OK(store_uid(b, &uid, err), err);
    CHECK_INT(uid, 77);
    CHECK_OK(store_follow_identity(b, 77, err), err);
    CHECK_INT(store_follow_identity(b, 78, err), QR_EINVAL);
    CHECK(strstr(err, "uid 77"));

    /* writes go to the system of record */
    doc d;
    doc_init(&d, "refused.md", 1, 2);
    store_document in = doc_input(&d);
    store_put_result res;
    CHECK_INT(store_put(b, &in, d.chunks, d.nchunks, d.vecs, DIM, &res, err), QR_EINVAL);
    CHECK(strstr(err, "follows a system of record"));
    CHECK_INT(store_delete(b, "refused.md", err), QR_EINVAL);
    CHECK(strstr(err, "follows a system of record"));
    CHECK_INT(store_set_acl(b, "refused.md", d.acl, d.nacl, err), QR_EINVAL);
    CHECK(strstr(err, "follows a system of record"));
    rec r = good_rec(3, 1, "refused.md", 1);
    store_follow_doc f = rec_doc(&r);
    CHECK_OK(store_follow_begin(b, err), err);
    CHECK_OK(store_follow_apply(b, &f, err), err);
    CHECK_INT(store_put(b, &in, d.chunks, d.nchunks, d.vecs, DIM, &res, err), QR_EINVAL); /* joins, refused */
    CHECK(store_in_batch(b));
    CHECK_OK(store_follow_commit(b, 3, err), err);
    CHECK_INT(store_set_acl(b, "refused.md", d.acl, d.nacl, err), QR_EINVAL);
    CHECK_INT(store_delete(b, "refused.md", err), QR_EINVAL);
    CHECK_OK(store_verify(b, err), err);
    sqlite3 *raw = raw_open(db);
    CHECK_INT(raw_int(raw, "SELECT count(*) FROM chunks"), 2);
    sqlite3_close(raw);

    /* a store with writes of its own cannot become a follower */
    CHECK_OK(open_primary(da, &a, err), err);
    CHECK_OK(store_put(a, &in, d.chunks, d.nchunks, d.vecs, DIM, &res, err), err);
    CHECK_INT(store_follow_identity(a, 77, err), QR_EINVAL);
    CHECK(strstr(err, "writes of its own"));
    CHECK_OK(store_put(a, &in, d.chunks, d.nchunks, d.vecs, DIM, &res, err), err);

    /* a write rolled back before the identity left a vectors file with the old uid behind */
    CHECK_OK(open_primary(dc, &c, err), err);
    CHECK_OK(store_batch_begin(c, err), err);
    CHECK_OK(store_put(c, &in, d.chunks, d.nchunks, d.vecs, DIM, &res, err), err);
    store_batch_rollback(c);
    CHECK_OK(store_follow_identity(c, 99, err), err);
    CHECK_OK(store_follow_begin(c, err), err);
    CHECK_OK(store_follow_apply(c, &f, err), err);
    CHECK_OK(store_follow_commit(c, 3, err), err);
    CHECK_OK(store_verify(c, err), err);
    store_vectors *vf = NULL;
    CHECK_OK(store_vectors_open(dc, &vf, err), err);
    CHECK_INT(store_vectors_uid(vf), 99);
    store_vectors_close(vf);
    store_close(a);
    store_close(b);
    store_close(c);
    rm_tree(da);
    rm_tree(db);
    rm_tree(dc);
}

/* A document whose chunk ids lie below ids the follower holds arrives in the batch that deletes
 * its neighbour: the delete's hole in the vectors file (widened to the live neighbours, up to the
 * largest id) covers the late ids, and their rows must survive the commit's punch. */
TEST(late_chunk_ids_keep_their_vectors)
{
    char err[QR_ERR_LEN] = "", db[256];
    CHECK(temp_dir(db, sizeof(db)));
    source src = {0};
    doc p, q, r;
    doc_init(&p, "p.md", 1, 2);
    doc_init(&q, "q.md", 2, 1);
    doc_init(&r, "r.md", 3, 2);
    const int64_t pid[] = {20, 21}, qid[] = {30}, rid[] = {25, 26};
    src_add(&src, 1, 1, false, &p, pid);
    src_add(&src, 2, 2, false, &q, qid);
    src_add(&src, 3, 2, true, &q, NULL);
    src_add(&src, 4, 3, false, &r, rid);
    store *b = NULL;
    int64_t counter = 0, head = 0;
    CHECK_OK(open_follower(db, &b, err), err);
    CHECK_OK(follow_step(b, src_pull, &src, 2, &counter, &head, err), err);
    CHECK_INT(counter, 2);
    CHECK_OK(follow_step(b, src_pull, &src, 2, &counter, &head, err), err);
    CHECK_INT(counter, 4);
    CHECK_OK(store_verify(b, err), err);
    store_vectors *f = NULL;
    const float *rows;
    CHECK_OK(store_vectors_open(db, &f, err), err);
    CHECK_OK(store_vectors_map(f, 30, &rows, err), err);
    for (int c = 0; c < 2; c++) {
        const float *row = rows + rid[c] * DIM, *in = r.vecs + c * DIM;
        double norm = 0, dot = 0;
        for (int k = 0; k < DIM; k++) {
            norm += (double)in[k] * in[k];
            dot += (double)row[k] * in[k];
        }
        /* the row is the input normalised: its dot product with the input is the input's length */
        CHECK_MSG(fabs(dot - sqrt(norm)) < 1e-4, "the row of chunk %lld is lost (dot %g, length %g)",
                  (long long)rid[c], dot, sqrt(norm));
    }
    for (int k = 0; k < DIM; k++)
        CHECK(rows[qid[0] * DIM + k] == 0); /* the deleted chunk's row is freed */
    store_vectors_close(f);
    store_close(b);
    src_free(&src);
    rm_tree(db);
}

/* ---- 5. a batch that never commits ------------------------------------------------------- */

/* Records 4..8 over the three of counters 1..3: a new version (chunks replaced), a delete, new
 * documents with ids far apart (their vector rows reach the file before the commit). */
static void crash_source(source *src)
{
    int64_t ids[MAX_CHUNK];
    for (int i = 0; i < 3; i++) {
        doc d;
        char name[32];
        snprintf(name, sizeof(name), "kept-%d.md", i);
        doc_init(&d, name, (unsigned)i + 200, 2);
        ids[0] = 10 * i + 1;
        ids[1] = 10 * i + 2;
        src_add(src, i + 1, i + 1, false, &d, ids);
    }
    doc d = src->v[0].d, gone = src->v[1].d; /* copies: src_add may move the records */
    doc_content(&d, 300, 3);
    ids[0] = 100, ids[1] = 101, ids[2] = 102;
    src_add(src, 4, 1, false, &d, ids);
    src_add(src, 5, 2, true, &gone, NULL);
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "new-%d.md", i);
        doc_init(&d, name, (unsigned)i + 400, 2);
        ids[0] = 1000 * (i + 1);
        ids[1] = 1000 * (i + 1) + 7;
        src_add(src, 6 + i, 10 + i, false, &d, ids);
    }
}

/* The writer of the crash case, in a child process: applies records 4..8 and dies before the
 * commit. */
static void crash_child(const char *dir, source *src)
{
    char err[QR_ERR_LEN];
    store *b = NULL;
    if (store_open(dir, &b, err) || store_follow_begin(b, err))
        _exit(1);
    for (size_t i = 3; i < src->n; i++) {
        store_follow_doc f = rec_doc(&src->v[i]);
        if (store_follow_apply(b, &f, err))
            _exit(2);
    }
    kill(getpid(), SIGKILL);
    _exit(3);
}

TEST(uncommitted_batch_leaves_the_previous_state)
{
    char err[QR_ERR_LEN] = "", db[256];
    CHECK(temp_dir(db, sizeof(db)));
    source src = {0};
    crash_source(&src);
    store *b = NULL;
    int64_t counter = 0, head = 0;
    CHECK_OK(open_follower(db, &b, err), err);
    CHECK_OK(follow_step(b, src_pull, &src, 3, &counter, &head, err), err);
    CHECK_INT(counter, 3);
    char *before = store_rows(db);
    store_close(b);

    /* killed mid-batch */
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        crash_child(db, &src);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the writer ended with status %d", status);
    CHECK_OK(store_open(db, &b, err), err);
    CHECK_OK(store_verify(b, err), err);
    CHECK_OK(store_change_counter(b, &counter, err), err);
    CHECK_INT(counter, 3);
    char *after = store_rows(db);
    CHECK_STR(after, before);
    free(after);

    /* rolled back */
    CHECK_OK(store_follow_begin(b, err), err);
    for (size_t i = 3; i < src.n; i++) {
        store_follow_doc f = rec_doc(&src.v[i]);
        CHECK_OK(store_follow_apply(b, &f, err), err);
    }
    store_follow_rollback(b);
    CHECK_OK(store_verify(b, err), err);
    after = store_rows(db);
    CHECK_STR(after, before);
    free(after);

    /* and applied for real */
    CHECK_OK(follow_step(b, src_pull, &src, 100, &counter, &head, err), err);
    CHECK_INT(counter, 8);
    CHECK_OK(store_verify(b, err), err);
    sqlite3 *raw = raw_open(db);
    CHECK_INT(raw_int(raw, "SELECT count(*) FROM documents"), 5);
    CHECK_INT(raw_int(raw, "SELECT count(*) FROM deleted_chunks WHERE counter IN (4, 5)"), 4);
    sqlite3_close(raw);
    free(before);
    store_close(b);
    src_free(&src);
    rm_tree(db);
}

/* ---- 6. the indexes built on a follower -------------------------------------------------- */

typedef struct {
    char *form;
    size_t cap;
    int count;
} form_out;

static qr_status on_form(void *ctx, const char *form, size_t form_len, size_t start, size_t end, char *err)
{
    (void)start, (void)end, (void)err;
    form_out *f = ctx;
    if (f->count++ == 0 && form_len < f->cap) {
        memcpy(f->form, form, form_len);
        f->form[form_len] = '\0';
    }
    return QR_OK;
}

/* The top hits of every word, and of a few query vectors, alike on both stores' indexes. */
static void check_same_answers(store *a, bm25_index *xa, vindex *va, store *b, bm25_index *xb, vindex *vb)
{
    char err[QR_ERR_LEN] = "";
    const double w[3] = {2, 1, 1};
    const char *const principals[] = {"group:staff"};
    for (size_t i = 0; i < NWORDS; i++) {
        char form[64];
        form_out fo = {form, sizeof(form), 0};
        CHECK_OK(store_tokenize(a, words[i], strlen(words[i]), on_form, &fo, err), err);
        const char *terms[] = {form};
        for (int all = 0; all < 2; all++) {
            store_hit ha[10], hb[10];
            size_t na = 0, nb = 0;
            CHECK_OK(bm25_search(xa, a, terms, 1, w, principals, 1, all, 0, 10, ha, &na, NULL, err), err);
            CHECK_OK(bm25_search(xb, b, terms, 1, w, principals, 1, all, 0, 10, hb, &nb, NULL, err), err);
            CHECK_MSG(na == nb, "'%s': %zu hits on A, %zu on B", words[i], na, nb);
            for (size_t k = 0; k < na; k++)
                CHECK_MSG(ha[k].chunk_id == hb[k].chunk_id && ha[k].doc == hb[k].doc &&
                              fabs(ha[k].score - hb[k].score) < 1e-9,
                          "'%s' hit %zu: chunk %lld (%g) on A, %lld (%g) on B", words[i], k,
                          (long long)ha[k].chunk_id, ha[k].score, (long long)hb[k].chunk_id, hb[k].score);
        }
    }
    for (int q = 0; q < 5; q++) {
        float query[DIM];
        for (int k = 0; k < DIM; k++)
            query[k] = (float)((q * 7 + k * 3) % 5) - 2.0f + 0.5f;
        int64_t ia[8], ib[8];
        float sa[8], sb[8];
        size_t na = 0, nb = 0;
        CHECK_OK(vindex_search(va, query, DIM, 8, NULL, NULL, ia, sa, &na, NULL, err), err);
        CHECK_OK(vindex_search(vb, query, DIM, 8, NULL, NULL, ib, sb, &nb, NULL, err), err);
        CHECK_INT(na, nb);
        for (size_t k = 0; k < na; k++)
            CHECK_MSG(ia[k] == ib[k] && fabsf(sa[k] - sb[k]) < 1e-6f,
                      "query %d hit %zu: %lld on A, %lld on B", q, k, (long long)ia[k], (long long)ib[k]);
    }
}

TEST(indexes_on_a_follower_answer_alike)
{
    char err[QR_ERR_LEN] = "", da[256], db[256];
    CHECK(temp_dir(da, sizeof(da)) && temp_dir(db, sizeof(db)));
    source src = {0};
    store *a = NULL, *b = NULL;
    CHECK_OK(open_primary(da, &a, err), err);
    CHECK_OK(open_follower(db, &b, err), err);
    primary p = {a, raw_open(da), &src};
    CHECK(p.raw);
    CHECK_OK(history(&p, err), err);
    /* B follows latest states two records at a time, its indexes catching up after each batch: a
     * later batch brings chunk ids below those an earlier one did */
    src.latest = true;
    bm25_opts bo;
    bm25_opts_default(&bo);
    vindex_opts vo;
    vindex_opts_default(&vo);
    bm25_index *xa = NULL, *xb = NULL;
    vindex *va = NULL, *vb = NULL;
    bm25_report br;
    index_sync_report vr;
    int64_t counter = 0, head = 0;
    while (counter < src.head) {
        CHECK_OK(follow_step(b, src_pull, &src, 2, &counter, &head, err), err);
        if (!xb)
            CHECK_OK(bm25_open(b, db, &bo, false, &xb, &br, err), err);
        else
            CHECK_OK(bm25_sync(xb, b, true, false, &br, err), err);
        CHECK_INT(br.counter, counter);
        if (!vb)
            CHECK_OK(index_sync_open(b, db, &vo, false, &vb, &vr, err), err);
        else
            CHECK_OK(index_sync(b, vb, &vo, false, &vr, err), err);
    }
    CHECK(xb && vb);
    CHECK_OK(bm25_open(a, da, &bo, false, &xa, &br, err), err);
    CHECK_OK(index_sync_open(a, da, &vo, false, &va, &vr, err), err);
    CHECK(va);
    check_same_answers(a, xa, va, b, xb, vb);
    bm25_close(xa);
    bm25_close(xb);
    vindex_close(va);
    vindex_close(vb);
    sqlite3_close(p.raw);
    store_close(a);
    store_close(b);
    src_free(&src);
    rm_tree(da);
    rm_tree(db);
}

/* A fence may trust the store only up to the last whole pull (store_follow_exact): a pull cut short
 * leaves out a document changed both before and after its `through`, and a whole pull from a
 * source behind what a cut pull saw does not bring it either. */
TEST(exact_only_after_a_whole_pull)
{
    char err[QR_ERR_LEN] = "", db[256];
    CHECK(temp_dir(db, sizeof(db)));
    source src = {.latest = true};
    doc a1, b, c, a2;
    doc_init(&a1, "a.md", 1, 1);
    doc_init(&b, "b.md", 2, 1);
    doc_init(&c, "c.md", 3, 1);
    doc_init(&a2, "a.md", 4, 1);
    int64_t ids_a1[] = {1}, ids_b[] = {2}, ids_c[] = {3}, ids_a2[] = {4};
    src_add(&src, 2, 10, false, &a1, ids_a1); /* a.md at 2, superseded by its change at 6 */
    src_add(&src, 3, 11, false, &b, ids_b);
    src_add(&src, 5, 12, false, &c, ids_c);
    src_add(&src, 6, 10, false, &a2, ids_a2);
    store *f = NULL;
    CHECK_OK(open_follower(db, &f, err), err);
    int64_t counter = 0, head = 0, exact = -1;
    /* cut after b.md: the store is at 3, but a.md's change at 2 is not in it */
    CHECK_OK(follow_step(f, src_pull, &src, 1, &counter, &head, err), err);
    CHECK_INT(counter, 3);
    CHECK_INT(head, 6);
    CHECK_OK(store_follow_exact(f, &exact, err), err);
    CHECK_INT(exact, 0);
    /* a source as it was at 5 (a lagging standby) sends c.md and nothing of a.md, whose change at
     * 2 it holds but at or below `since`: whole, yet a.md is still missing */
    src.cut = 5;
    CHECK_OK(follow_step(f, src_pull, &src, 100, &counter, &head, err), err);
    CHECK_INT(counter, 5);
    CHECK_INT(head, 5);
    CHECK_OK(store_follow_exact(f, &exact, err), err);
    CHECK_INT(exact, 0);
    /* the source as it is: a.md at 6, whole: every change up to 6 is in the store */
    src.cut = 0;
    CHECK_OK(follow_step(f, src_pull, &src, 100, &counter, &head, err), err);
    CHECK_INT(counter, 6);
    CHECK_OK(store_follow_exact(f, &exact, err), err);
    CHECK_INT(exact, 6);
    char hash[65];
    bool found = false;
    CHECK_OK(store_get_hash(f, "a.md", hash, &found, err), err);
    CHECK(found);
    store_close(f);
    rm_tree(db);
    src_free(&src);
}
