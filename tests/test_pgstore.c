/*
 * Tests of the PostgreSQL system of record (index/pgstore.c) against a real PostgreSQL 15 on
 * loopback, one throwaway server per case (tests/pg_fixture.c): writes give the local store's
 * results and refuse what it refuses, changing nothing; a follower pulling in small batches while
 * eight writers race ends with exactly the primary's state and never sees a commit appear below a
 * counter it passed; tombstones are pruned only below every node's watermark; pulls respect their
 * limit without splitting a counter; a hot standby serves pulls and refuses writes.
 *
 * Where a test must see what the store holds, it reads it back through a full pull from counter
 * 0 (what a new node would receive), compared with a map the test applied records to itself.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <libpq-fe.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "index/feed.h"
#include "index/pgstore.h"
#include "index/store.h"
#include "tests/harness.h"
#include "tests/pg_fixture.h"

#define DIM 4

static pg_fixture fx;
static char local_dir[64]; /* a local store beside PostgreSQL, "" when the case has none */

/* Starts the case's server; a machine without PostgreSQL skips the case (exit 77). */
static bool start_pg(void)
{
    char err[512];
    int rc = pg_fixture_start(&fx, err);
    if (rc == PG_FIXTURE_SKIP) {
        printf("skipped: %s\n", err);
        exit(PG_FIXTURE_SKIP);
    }
    if (rc)
        harness_fail(__FILE__, __LINE__, "cannot start PostgreSQL: %s", err);
    return rc == 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* A local store's directory for the case, removed after it whatever happened. */
static const char *make_local_dir(void)
{
    snprintf(local_dir, sizeof(local_dir), "/tmp/quarry-pgstore-XXXXXX");
    return mkdtemp(local_dir);
}

static void remove_local_dir(void)
{
    if (local_dir[0])
        nftw(local_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    local_dir[0] = '\0';
}

/* Each case runs on a server of its own, stopped and removed even when a check fails. */
#define RUN_WITH_PG(name)         \
    do {                          \
        if (start_pg()) {         \
            run_##name();         \
            pg_fixture_stop(&fx); \
        }                         \
        remove_local_dir();       \
    } while (0)

/* ---- a follower's view: doc_id -> whole state, applied from records --------------------------- */

typedef struct {
    char *doc_id;
    int64_t key, counter;
    char *state; /* every field, ACL, chunk and vector, serialised */
} entry;

typedef struct {
    entry *v;
    size_t n, cap;
    int64_t since;        /* the pull's since: every record must be above it */
    int64_t last_counter; /* the last record's counter */
    bool strict;          /* records' counters must strictly increase (one record per counter) */
    size_t records;
    char problem[256]; /* the first broken rule, "" when none */
} doc_map;

static void map_free(doc_map *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].doc_id);
        free(m->v[i].state);
    }
    free(m->v);
    memset(m, 0, sizeof(*m));
}

static entry *map_find(doc_map *m, const char *doc_id)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->v[i].doc_id, doc_id) == 0)
            return &m->v[i];
    return NULL;
}

static char *serialise(const store_follow_doc *d)
{
    qr_buf b;
    qr_buf_init(&b, 1 << 24);
    const store_document *x = &d->doc;
    qr_buf_printf(&b, "title=%s|uri=%s|type=%s|meta=%s|hash=%s|text=", x->title, x->uri, x->content_type,
                  x->metadata_json, x->content_hash);
    qr_buf_append(&b, x->text, x->text_len);
    qr_buf_puts(&b, "|acl=");
    for (size_t i = 0; i < x->nacl; i++)
        qr_buf_printf(&b, "%s;", x->acl[i]);
    for (size_t i = 0; i < d->nchunks; i++) {
        qr_buf_printf(&b, "|chunk %lld [%zu,%zu) '%s'", (long long)d->chunk_ids[i], d->chunks[i].start,
                      d->chunks[i].end, d->chunks[i].headings);
        for (int j = 0; j < d->dim; j++)
            qr_buf_printf(&b, " %a", d->vectors[i * (size_t)d->dim + (size_t)j]);
    }
    return qr_buf_detach(&b);
}

static qr_status map_apply(void *ctx, const store_follow_doc *d, char *err)
{
    doc_map *m = ctx;
    (void)err;
    m->records++;
    if (!m->problem[0] && d->counter <= m->since)
        snprintf(m->problem, sizeof(m->problem), "record of counter %lld at or below the pull's since %lld",
                 (long long)d->counter, (long long)m->since);
    if (!m->problem[0] && (m->strict ? d->counter <= m->last_counter : d->counter < m->last_counter))
        snprintf(m->problem, sizeof(m->problem), "record of counter %lld after one of %lld",
                 (long long)d->counter, (long long)m->last_counter);
    m->last_counter = d->counter;
    entry *e = map_find(m, d->doc.doc_id);
    if (d->deleted) {
        /* a later document under the same doc_id has another key: it stays */
        if (e && e->key == d->doc_key) {
            free(e->doc_id);
            free(e->state);
            *e = m->v[--m->n];
        }
        return QR_OK;
    }
    if (!e) {
        if (m->n == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 64;
            m->v = realloc(m->v, m->cap * sizeof(entry));
        }
        e = &m->v[m->n++];
        e->doc_id = strdup(d->doc.doc_id);
        e->state = NULL;
    }
    free(e->state);
    e->key = d->doc_key;
    e->counter = d->counter;
    e->state = serialise(d);
    return QR_OK;
}

/* Empty when a and b hold the same documents with the same keys, counters and states. */
static void map_diff(doc_map *a, doc_map *b, char *out, size_t n)
{
    out[0] = '\0';
    if (a->n != b->n) {
        snprintf(out, n, "%zu documents against %zu", a->n, b->n);
        return;
    }
    for (size_t i = 0; i < a->n; i++) {
        entry *e = map_find(b, a->v[i].doc_id);
        if (!e || e->key != a->v[i].key || e->counter != a->v[i].counter ||
            strcmp(e->state, a->v[i].state) != 0) {
            snprintf(out, n, "document '%s' differs (counter %lld against %lld)", a->v[i].doc_id,
                     (long long)a->v[i].counter, e ? (long long)e->counter : -1LL);
            return;
        }
    }
}

/* Pulls everything after since in one batch into m. */
static qr_status pull_all(pgstore *pg, int64_t since, doc_map *m, int64_t *through, int64_t *head, char *err)
{
    m->since = since;
    return pgstore_pull(pg, since, 1 << 20, map_apply, m, through, head, err);
}

/* ---- documents ------------------------------------------------------------------------------ */

static const char HASH_A[] = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789";
static const char HASH_B[] = "1111111111111111111111111111111111111111111111111111111111111111";
static const char HASH_C[] = "2222222222222222222222222222222222222222222222222222222222222222";

/* A document of three chunks over multi-byte text; headings that would break a naive array
 * literal or SQL string. */
typedef struct {
    store_document doc;
    store_chunk chunks[3];
    float vecs[3 * DIM];
    const char *acl[4];
} test_doc;

static const char TEXT_A[] = "Alpha section. B\xc3\xa9ta \xe2\x9c\x93 section. Gamma \"end\".";

static void doc_a(test_doc *t)
{
    memset(t, 0, sizeof(*t));
    t->acl[0] = "group:Eng";
    t->acl[1] = "user:AVA";
    t->acl[2] = "group:eng";
    t->acl[3] = "public";
    t->doc = (store_document){.doc_id = "docs/a.md",
                              .title = "Document A",
                              .uri = "file:///docs/a.md",
                              .content_type = "text/markdown",
                              .metadata_json = "{ \"lang\" : \"en\", \"n\": 1 }",
                              .acl = t->acl,
                              .nacl = 4,
                              .content_hash = HASH_A,
                              .text = TEXT_A,
                              .text_len = strlen(TEXT_A)};
    size_t b = (size_t)(strstr(TEXT_A, "B\xc3\xa9ta") - TEXT_A),
           g = (size_t)(strstr(TEXT_A, "Gamma") - TEXT_A);
    t->chunks[0] = (store_chunk){0, b - 1, "Intro"};
    t->chunks[1] = (store_chunk){b, g - 1, "A \"quoted\" > back\\slash, {brace},NULL"};
    t->chunks[2] = (store_chunk){g, strlen(TEXT_A), NULL};
    const float v[3 * DIM] = {3, 4, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
    memcpy(t->vecs, v, sizeof(v));
}

/* store_put and pgstore_put of the same document must both succeed with want. */
#define PUT_BOTH(s, pg, t, n, want, counter)                                                                \
    do {                                                                                                    \
        store_put_result r1_ = -1, r2_ = -1;                                                                \
        CHECK_OK(store_put(s, &(t)->doc, (t)->chunks, n, n ? (t)->vecs : NULL, DIM, &r1_, err), err);       \
        CHECK_OK(pgstore_put(pg, &(t)->doc, (t)->chunks, n, n ? (t)->vecs : NULL, DIM, &r2_, counter, err), \
                 err);                                                                                      \
        CHECK_INT(r1_, want);                                                                               \
        CHECK_INT(r2_, want);                                                                               \
    } while (0)

static void *open_thread(void *arg)
{
    pgstore **out = arg;
    char err[QR_ERR_LEN];
    if (pgstore_open(fx.conninfo, out, err))
        fprintf(stderr, "pgstore_open: %s\n", err);
    return NULL;
}

/* ---- 1. writes and reading them back ------------------------------------------------------------ */

static void run_put_pull(void)
{
    char err[QR_ERR_LEN];
    const char *dir = make_local_dir();
    store *s = NULL;
    pgstore *pg = NULL, *other = NULL;
    doc_map m = {0};
    int64_t c = -1, c1, c5, c6, now, through, head;
    test_doc t;
    CHECK(dir);
    /* two nodes starting together on a fresh database: one creates the schema, both use it */
    pthread_t th[2];
    pthread_create(&th[0], NULL, open_thread, &pg);
    pthread_create(&th[1], NULL, open_thread, &other);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    CHECK(pg && other);
    CHECK(pgstore_uid(pg) > 0);
    CHECK_INT(pgstore_uid(other), pgstore_uid(pg));
    pgstore_close(other);
    CHECK_OK(pgstore_open(fx.conninfo, &other, err), err);
    CHECK_INT(pgstore_uid(other), pgstore_uid(pg));
    pgstore_close(other);

    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_OK(store_check_embedding(s, "test-model", DIM, err), err);
    CHECK_OK(pgstore_check_embedding(pg, "test-model", DIM, err), err);
    CHECK_OK(pgstore_check_embedding(pg, "test-model", DIM, err), err);

    /* added: everything comes back canonical, chunk ids consecutive, vectors normalised */
    doc_a(&t);
    PUT_BOTH(s, pg, &t, 3, STORE_ADDED, &c1);
    CHECK_INT(c1, 1);
    m.strict = true;
    CHECK_OK(pull_all(pg, 0, &m, &through, &head, err), err);
    CHECK_STR(m.problem, "");
    CHECK_INT(through, 1);
    CHECK_INT(head, 1);
    CHECK_INT(m.n, 1);
    CHECK_INT(m.v[0].counter, 1);
    CHECK(m.v[0].key > 0);
    char want[2048];
    const char *h1 = "A \"quoted\" > back\\slash, {brace},NULL";
    size_t b = (size_t)(strstr(TEXT_A, "B\xc3\xa9ta") - TEXT_A),
           g = (size_t)(strstr(TEXT_A, "Gamma") - TEXT_A);
    snprintf(want, sizeof(want),
             "title=Document A|uri=file:///docs/a.md|type=text/markdown|meta={\"lang\":\"en\",\"n\":1}"
             "|hash=abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789|text=%s"
             "|acl=group:eng;public;user:ava;"
             "|chunk 1 [0,%zu) 'Intro' %a %a 0x0p+0 0x0p+0"
             "|chunk 2 [%zu,%zu) '%s' 0x0p+0 0x0p+0 0x0p+0 0x0p+0"
             "|chunk 3 [%zu,%zu) '' 0x1p-1 0x1p-1 0x1p-1 0x1p-1",
             TEXT_A, b - 1, (double)0.6f, (double)0.8f, b, g - 1, h1, g, strlen(TEXT_A));
    CHECK_STR(m.v[0].state, want);

    /* the same document, and the same metadata spaced otherwise, without text: unchanged */
    PUT_BOTH(s, pg, &t, 3, STORE_UNCHANGED, &c);
    CHECK_INT(c, 0);
    t.doc.metadata_json = "{\"lang\":\"en\",   \"n\":1}";
    t.doc.text = NULL;
    t.doc.text_len = 0;
    PUT_BOTH(s, pg, &t, 0, STORE_UNCHANGED, &c);
    CHECK_OK(pgstore_counter(pg, &now, err), err);
    CHECK_INT(now, 1);
    /* a new ACL; then a new title (chunk ids stay) */
    const char *bob[] = {"user:Bob"};
    t.doc.acl = bob;
    t.doc.nacl = 1;
    PUT_BOTH(s, pg, &t, 0, STORE_ACL_UPDATED, &c);
    CHECK_INT(c, 2);
    t.doc.title = "Document A, renamed";
    PUT_BOTH(s, pg, &t, 0, STORE_UPDATED, &c5);
    CHECK_INT(c5, 3);
    map_free(&m);
    m.since = c1;
    m.strict = true;
    CHECK_OK(pgstore_pull(pg, c1, 100, map_apply, &m, &through, &head, err), err);
    CHECK_STR(m.problem, "");
    CHECK_INT(m.records, 1);
    CHECK_INT(through, c5);
    CHECK_INT(m.v[0].counter, c5);
    CHECK(strstr(m.v[0].state, "title=Document A, renamed|") &&
          strstr(m.v[0].state, "|acl=user:bob;|chunk 1 ["));
    /* new content: new chunk ids, above every id handed out */
    static const char text2[] = "Only one chunk now.";
    t.doc.content_hash = HASH_B;
    t.doc.text = text2;
    t.doc.text_len = strlen(text2);
    t.chunks[0] = (store_chunk){0, strlen(text2), "New"};
    PUT_BOTH(s, pg, &t, 1, STORE_UPDATED, &c6);
    map_free(&m);
    CHECK_OK(pull_all(pg, c5, &m, &through, &head, err), err);
    CHECK_INT(m.n, 1);
    snprintf(want, sizeof(want), "|chunk 4 [0,19) 'New' %a %a 0x0p+0 0x0p+0", (double)0.6f, (double)0.8f);
    CHECK(strstr(m.v[0].state, want) != NULL);
    int64_t key_a = m.v[0].key;

    /* B, an equal ACL (nothing written), a new one; then A deleted */
    test_doc tb;
    doc_a(&tb);
    tb.doc.doc_id = "docs/b.md";
    tb.doc.content_hash = HASH_C;
    PUT_BOTH(s, pg, &tb, 3, STORE_ADDED, &c);
    const char *same[] = {"public", "user:ava", "group:eng"};
    CHECK_OK(store_set_acl(s, "docs/b.md", same, 3, err), err);
    CHECK_OK(pgstore_set_acl(pg, "docs/b.md", same, 3, &c, err), err);
    CHECK_INT(c, 0);
    CHECK_OK(store_set_acl(s, "docs/b.md", bob, 1, err), err);
    CHECK_OK(pgstore_set_acl(pg, "docs/b.md", bob, 1, &c, err), err);
    int64_t c_acl = c;
    CHECK_OK(store_delete(s, "docs/a.md", err), err);
    CHECK_OK(pgstore_delete(pg, "docs/a.md", &c, err), err);
    CHECK_INT(c, c_acl + 1);
    map_free(&m);
    m.strict = true;
    CHECK_OK(pull_all(pg, c6, &m, &through, &head, err), err);
    CHECK_STR(m.problem, "");
    CHECK_INT(m.records, 2); /* B at its ACL change, then A's deletion */
    CHECK_INT(m.last_counter, c);
    CHECK_INT(through, c);
    CHECK_INT(m.n, 1);
    CHECK_STR(m.v[0].doc_id, "docs/b.md");
    CHECK_INT(m.v[0].counter, c_acl);
    CHECK(m.v[0].key != key_a);
    CHECK(strstr(m.v[0].state, "|acl=user:bob;|chunk 5 [") != NULL);

    map_free(&m);
    pgstore_close(pg);
    store_close(s);
}

/* ---- 2. bad input --------------------------------------------------------------------------- */

typedef void (*spoil_fn)(test_doc *t, size_t *n, int *dim);

static void bad_doc_id(test_doc *t, size_t *n, int *dim)
{
    (void)n, (void)dim;
    t->doc.doc_id = "";
}
static void control_doc_id(test_doc *t, size_t *n, int *dim)
{
    (void)n, (void)dim;
    t->doc.doc_id = "a\x01z";
}
static void long_doc_id(test_doc *t, size_t *n, int *dim)
{
    static char id[STORE_DOC_ID_MAX + 2];
    (void)n, (void)dim;
    memset(id, 'x', sizeof(id) - 1);
    t->doc.doc_id = id;
}
static void bad_utf8(test_doc *t, size_t *n, int *dim)
{
    (void)dim;
    t->doc.text = "ok \xff\xfe bad";
    t->doc.text_len = strlen(t->doc.text);
    t->doc.content_hash = HASH_B;
    *n = 0;
}
static void split_char(test_doc *t, size_t *n, int *dim)
{
    (void)n, (void)dim;
    size_t b = (size_t)(strstr(TEXT_A, "\xc3\xa9") - TEXT_A);
    t->chunks[1].start = b + 1; /* inside the two bytes of U+00E9 */
    t->doc.content_hash = HASH_B;
}
static void past_end(test_doc *t, size_t *n, int *dim)
{
    (void)n, (void)dim;
    t->chunks[2].end = strlen(TEXT_A) + 1;
    t->doc.content_hash = HASH_B;
}
static void nan_vector(test_doc *t, size_t *n, int *dim)
{
    (void)n, (void)dim;
    t->vecs[5] = NAN;
    t->doc.content_hash = HASH_B;
}
static void inf_vector(test_doc *t, size_t *n, int *dim)
{
    (void)n, (void)dim;
    t->vecs[0] = INFINITY;
    t->doc.content_hash = HASH_B;
}
static void bad_principal(test_doc *t, size_t *n, int *dim)
{
    (void)n, (void)dim;
    t->acl[1] = "admin";
}
static void empty_principal(test_doc *t, size_t *n, int *dim)
{
    (void)n, (void)dim;
    t->acl[0] = "user:";
}
static void array_metadata(test_doc *t, size_t *n, int *dim)
{
    (void)n, (void)dim;
    t->doc.metadata_json = "[1, 2]";
}
static void broken_metadata(test_doc *t, size_t *n, int *dim)
{
    (void)n, (void)dim;
    t->doc.metadata_json = "{\"a\": ";
}
static void bad_hash(test_doc *t, size_t *n, int *dim)
{
    (void)n, (void)dim;
    t->doc.content_hash = "xyz'; DROP TABLE quarry.documents; --";
}
static void new_hash_no_text(test_doc *t, size_t *n, int *dim)
{
    (void)dim;
    t->doc.content_hash = HASH_C;
    t->doc.text = NULL;
    t->doc.text_len = 0;
    *n = 0;
}
static void other_dim(test_doc *t, size_t *n, int *dim)
{
    (void)n;
    t->doc.content_hash = HASH_B;
    *dim = 2;
}
static void headings_control(test_doc *t, size_t *n, int *dim)
{
    (void)n, (void)dim;
    t->chunks[0].headings = "bad\nheading";
    t->doc.content_hash = HASH_B;
}

static void run_bad_input_changes_nothing(void)
{
    char err[QR_ERR_LEN], err2[QR_ERR_LEN];
    const char *dir = make_local_dir();
    store *s = NULL;
    pgstore *pg = NULL;
    doc_map m = {0};
    int64_t c, before, after, through, head;
    test_doc t;
    CHECK(dir);
    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_OK(pgstore_open(fx.conninfo, &pg, err), err);
    CHECK_OK(store_check_embedding(s, "test-model", DIM, err), err);
    CHECK_OK(pgstore_check_embedding(pg, "test-model", DIM, err), err);
    doc_a(&t);
    PUT_BOTH(s, pg, &t, 3, STORE_ADDED, &c);
    CHECK_OK(pgstore_counter(pg, &before, err), err);

    static const struct {
        const char *name;
        spoil_fn spoil;
        qr_status want;
    } cases[] = {
        {"empty doc_id", bad_doc_id, QR_EINVAL},
        {"control character in doc_id", control_doc_id, QR_EINVAL},
        {"doc_id over the limit", long_doc_id, QR_ELIMIT},
        {"text not UTF-8", bad_utf8, QR_EINVAL},
        {"chunk splitting a character", split_char, QR_EINVAL},
        {"chunk past the text", past_end, QR_EINVAL},
        {"NaN in a vector", nan_vector, QR_EINVAL},
        {"infinity in a vector", inf_vector, QR_EINVAL},
        {"invalid principal", bad_principal, QR_EINVAL},
        {"empty principal name", empty_principal, QR_EINVAL},
        {"metadata not an object", array_metadata, QR_EINVAL},
        {"metadata not JSON", broken_metadata, QR_EINVAL},
        {"bad content hash", bad_hash, QR_EINVAL},
        {"new content without text", new_hash_no_text, QR_EINVAL},
        {"vectors of another dimension", other_dim, QR_EINVAL},
        {"control character in headings", headings_control, QR_EINVAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = 3;
        int dim = DIM;
        store_put_result r;
        doc_a(&t);
        cases[i].spoil(&t, &n, &dim);
        qr_status st1 = store_put(s, &t.doc, t.chunks, n, n ? t.vecs : NULL, dim, &r, err);
        qr_status st2 = pgstore_put(pg, &t.doc, t.chunks, n, n ? t.vecs : NULL, dim, &r, &c, err2);
        CHECK_MSG(st1 == cases[i].want && st2 == cases[i].want,
                  "%s: local %d (%s), PostgreSQL %d (%s), want %d", cases[i].name, st1, err, st2, err2,
                  cases[i].want);
        CHECK_MSG(c == 0, "%s: counter %lld", cases[i].name, (long long)c);
    }
    /* deletes and ACL changes */
    const char *bad_acl[] = {"group:"}, *good_acl[] = {"public"};
    CHECK_INT(store_delete(s, "missing", err), QR_ENOTFOUND);
    CHECK_INT(pgstore_delete(pg, "missing", &c, err), QR_ENOTFOUND);
    CHECK_INT(store_delete(s, "", err), QR_EINVAL);
    CHECK_INT(pgstore_delete(pg, "", &c, err), QR_EINVAL);
    CHECK_INT(store_set_acl(s, "missing", good_acl, 1, err), QR_ENOTFOUND);
    CHECK_INT(pgstore_set_acl(pg, "missing", good_acl, 1, &c, err), QR_ENOTFOUND);
    CHECK_INT(store_set_acl(s, "docs/a.md", bad_acl, 1, err), QR_EINVAL);
    CHECK_INT(pgstore_set_acl(pg, "docs/a.md", bad_acl, 1, &c, err), QR_EINVAL);
    CHECK_INT(pgstore_check_embedding(pg, "other-model", DIM, err), QR_EINVAL);
    CHECK(strstr(err, "test-model") != NULL);
    CHECK_INT(pgstore_check_embedding(pg, "test-model", DIM + 1, err), QR_EINVAL);
    CHECK_INT(pgstore_check_embedding(pg, "test-model", 0, err), QR_EINVAL);
    CHECK_INT(pgstore_register_node(pg, "", 1, err), QR_EINVAL);
    CHECK_INT(pgstore_register_node(pg, "node-1", -1, err), QR_EINVAL);
    /* a maintainer's name is "<host>:<data dir>", up to 241 bytes: 256 are taken, 257 refused */
    char longname[258];
    memset(longname, 'n', 257);
    longname[257] = '\0';
    CHECK_INT(pgstore_register_node(pg, longname, 1, err), QR_ELIMIT);
    longname[256] = '\0';
    CHECK_OK(pgstore_register_node(pg, longname, 1, err), err);
    CHECK_INT(pgstore_pull(pg, 0, 0, map_apply, &m, &through, &head, err), QR_EINVAL);

    CHECK_OK(pgstore_counter(pg, &after, err), err);
    CHECK_INT(after, before);
    m.since = before;
    CHECK_OK(pgstore_pull(pg, before, 100, map_apply, &m, &through, &head, err), err);
    CHECK_INT(m.records, 0);
    CHECK_INT(through, before);

    /* connection strings: malformed, nothing listening; a connection the server ended fails the
     * call that finds it gone, and the next call connects again */
    pgstore *bad = NULL;
    CHECK_INT(pgstore_open("host=127.0.0.1 dbname='unterminated", &bad, err), QR_EINVAL);
    CHECK(bad == NULL);
    CHECK_INT(pgstore_open("host=127.0.0.1 port=1 user=quarry connect_timeout=5", &bad, err),
              QR_EUNAVAILABLE);
    PGconn *raw = PQconnectdb(fx.conninfo);
    PGresult *res = PQexec(raw, "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity"
                                " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'");
    bool killed = PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "1") == 0;
    PQclear(res);
    PQfinish(raw);
    CHECK(killed);
    CHECK_INT(pgstore_counter(pg, &c, err), QR_EUNAVAILABLE);
    CHECK_OK(pgstore_counter(pg, &c, err), err);
    CHECK_INT(c, before);

    /* text that looks like SQL or like an array literal is data: stored and read back as sent */
    static const char *sql_id = "x'); DROP TABLE documents;--";
    const char *sql_acl[] = {"group:x'); DROP TABLE quarry.acl;--", "user:\"},{\"public"};
    doc_a(&t);
    t.doc.doc_id = sql_id;
    t.doc.title = "'; DELETE FROM quarry.counter; --";
    t.doc.acl = sql_acl;
    t.doc.nacl = 2;
    t.chunks[0].headings = "\"},{\"x\\\"";
    PUT_BOTH(s, pg, &t, 3, STORE_ADDED, &c);
    CHECK_INT(c, before + 1);
    map_free(&m);
    CHECK_OK(pull_all(pg, 0, &m, &through, &head, err), err);
    CHECK_INT(m.n, 2);
    entry *e = map_find(&m, sql_id);
    CHECK(e != NULL);
    CHECK(strstr(e->state, "title='; DELETE FROM quarry.counter; --|") != NULL);
    CHECK(strstr(e->state, "|acl=group:x'); drop table quarry.acl;--;user:\"},{\"public;|") != NULL);
    CHECK(strstr(e->state, " '\"},{\"x\\\"' ") != NULL);
    CHECK_INT(through, c);

    /* a write the server refuses half-way (here a constraint the test adds) leaves nothing, and
     * the handle goes on */
    raw = PQconnectdb(fx.conninfo);
    res =
        PQexec(raw, "ALTER TABLE quarry.acl ADD CONSTRAINT test_refuses CHECK (principal <> 'user:refused')");
    bool altered = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    PQfinish(raw);
    CHECK(altered);
    const char *refused[] = {"user:refused"};
    doc_a(&t);
    t.doc.doc_id = "refused half-way";
    t.doc.acl = refused;
    t.doc.nacl = 1;
    store_put_result r;
    CHECK_INT(pgstore_put(pg, &t.doc, t.chunks, 3, t.vecs, DIM, &r, &c, err), QR_EIO);
    CHECK(strstr(err, "test_refuses") != NULL);
    CHECK_INT(c, 0);
    CHECK_INT(pgstore_set_acl(pg, sql_id, refused, 1, &c, err), QR_EIO);
    int64_t now;
    CHECK_OK(pgstore_counter(pg, &now, err), err);
    CHECK_INT(now, through);
    map_free(&m);
    CHECK_OK(pull_all(pg, 0, &m, &through, &head, err), err);
    CHECK_INT(m.n, 2);
    CHECK(!map_find(&m, "refused half-way"));
    t.doc.acl = good_acl;
    CHECK_OK(pgstore_put(pg, &t.doc, t.chunks, 3, t.vecs, DIM, &r, &c, err), err);
    CHECK_INT(r, STORE_ADDED);
    CHECK_INT(c, now + 1);

    /* a schema newer than this quarry is refused, never migrated down or used */
    raw = PQconnectdb(fx.conninfo);
    res = PQexec(raw, "INSERT INTO quarry.schema_version(version, applied_ms) VALUES (99, 0)");
    bool newer = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    PQfinish(raw);
    CHECK(newer);
    CHECK_INT(pgstore_open(fx.conninfo, &bad, err), QR_EINVAL);
    CHECK(strstr(err, "schema 99") != NULL);

    map_free(&m);
    pgstore_close(pg);
    store_close(s);
}

/* ---- 3. concurrent writers and a follower ------------------------------------------------------- */

#define WRITERS        8
#define OPS_PER_WRITER 120
#define SHARED_DOCS    10
#define OWN_DOCS       15

typedef struct {
    int id;
    qr_status st;
    char err[QR_ERR_LEN];
} writer_arg;

static atomic_bool writers_done;

static uint64_t next_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *writer(void *arg)
{
    writer_arg *w = arg;
    pgstore *pg = NULL;
    uint64_t rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(w->id + 1);
    static const char *acls[3][2] = {{"public", NULL}, {"group:eng", "user:ava"}, {"user:bob", NULL}};
    static const size_t nacls[3] = {1, 2, 1};
    if ((w->st = pgstore_open(fx.conninfo, &pg, w->err)))
        return NULL;
    for (int i = 0; i < OPS_PER_WRITER && !w->st; i++) {
        char doc_id[64], text[160], hash[65], title[32];
        uint64_t r = next_rand(&rng);
        if (r % 5 < 2)
            snprintf(doc_id, sizeof(doc_id), "shared/%d", (int)(r / 5 % SHARED_DOCS));
        else
            snprintf(doc_id, sizeof(doc_id), "writer-%d/%d", w->id, (int)(r / 5 % OWN_DOCS));
        int op = (int)(next_rand(&rng) % 10), version = (int)(next_rand(&rng) % 3),
            acl = (int)(next_rand(&rng) % 3);
        int64_t c;
        qr_status st;
        if (op < 6) {
            snprintf(text, sizeof(text), "%s, version %d, by writer %d: some words to chunk.", doc_id,
                     version, w->id);
            /* the hash depends on the text, so equal hashes mean equal content */
            uint64_t h = 1469598103934665603ULL;
            for (const char *p = text; *p; p++)
                h = (h ^ (unsigned char)*p) * 1099511628211ULL;
            for (int k = 0; k < 4; k++)
                snprintf(hash + 16 * k, 17, "%016llx", (unsigned long long)(h + (uint64_t)k));
            snprintf(title, sizeof(title), "title %d", version % 2);
            size_t len = strlen(text), mid = len / 2;
            store_chunk chunks[2] = {{0, mid, "first"}, {mid, len, "second"}};
            float vecs[2 * DIM];
            for (int k = 0; k < 2 * DIM; k++)
                vecs[k] = (float)(next_rand(&rng) % 1000) / 100.0f - 5.0f;
            store_document d = {.doc_id = doc_id,
                                .title = title,
                                .acl = acls[acl],
                                .nacl = nacls[acl],
                                .content_hash = hash,
                                .text = text,
                                .text_len = len};
            store_put_result res;
            st = pgstore_put(pg, &d, chunks, 2, vecs, DIM, &res, &c, w->err);
        } else if (op < 8) {
            st = pgstore_delete(pg, doc_id, &c, w->err);
        } else {
            st = pgstore_set_acl(pg, doc_id, acls[acl], nacls[acl], &c, w->err);
        }
        if (st && st != QR_ENOTFOUND)
            w->st = st;
    }
    pgstore_close(pg);
    return NULL;
}

typedef struct {
    doc_map map;
    qr_status st;
    char err[QR_ERR_LEN];
    int64_t through, head;
    size_t pulls;
} follower_arg;

static void *follower(void *arg)
{
    follower_arg *f = arg;
    pgstore *pg = NULL;
    f->map.strict = true;
    if ((f->st = pgstore_open(fx.conninfo, &pg, f->err)))
        return NULL;
    for (;;) {
        bool last = atomic_load(&writers_done);
        int64_t through, head;
        f->map.since = f->through;
        if ((f->st = pgstore_pull(pg, f->through, 7, map_apply, &f->map, &through, &head, f->err)))
            break;
        f->pulls++;
        if (through < f->through) {
            f->st = qr_fail(f->err, QR_EINTERNAL, "through went back from %lld to %lld",
                            (long long)f->through, (long long)through);
            break;
        }
        f->through = through;
        f->head = head;
        /* done once a pull that began after the writers ended brought everything */
        if (last && through == head)
            break;
    }
    pgstore_close(pg);
    return NULL;
}

static void run_concurrent_writers_follower(void)
{
    char err[QR_ERR_LEN], diff[256];
    pgstore *pg = NULL;
    doc_map truth = {0};
    int64_t through, head, now;
    CHECK_OK(pgstore_open(fx.conninfo, &pg, err), err);
    CHECK_OK(pgstore_check_embedding(pg, "test-model", DIM, err), err);
    static writer_arg w[WRITERS];
    static follower_arg f;
    pthread_t wt[WRITERS], ft;
    atomic_store(&writers_done, false);
    pthread_create(&ft, NULL, follower, &f);
    for (int i = 0; i < WRITERS; i++) {
        w[i].id = i;
        pthread_create(&wt[i], NULL, writer, &w[i]);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(wt[i], NULL);
    atomic_store(&writers_done, true);
    pthread_join(ft, NULL);
    for (int i = 0; i < WRITERS; i++)
        CHECK_MSG(w[i].st == QR_OK, "writer %d: %s", i, w[i].err);
    CHECK_MSG(f.st == QR_OK, "follower: %s", f.err);
    CHECK_MSG(!f.map.problem[0], "follower: %s", f.map.problem);
    CHECK_OK(pgstore_counter(pg, &now, err), err);
    CHECK_INT(f.through, now);
    CHECK(f.pulls > 10); /* small batches, many of them */
    /* what a new node would receive now: the follower must hold exactly that, every document at
     * the counter of its last change (a commit it had passed without seeing would be missing) */
    truth.strict = true;
    CHECK_OK(pull_all(pg, 0, &truth, &through, &head, err), err);
    CHECK_STR(truth.problem, "");
    CHECK_INT(through, now);
    CHECK(truth.n > 20);
    map_diff(&truth, &f.map, diff, sizeof(diff));
    CHECK_MSG(!diff[0], "the follower differs from the primary: %s", diff);
    printf("# %lld changes, %zu documents, %zu pulls, %zu records\n", (long long)now, truth.n, f.pulls,
           f.map.records);
    map_free(&truth);
    map_free(&f.map);
    pgstore_close(pg);
}

/* ---- 4. tombstones and pruning ------------------------------------------------------------------- */

static void run_prune_tombstones(void)
{
    char err[QR_ERR_LEN];
    pgstore *pg = NULL;
    doc_map m = {0};
    int64_t c, ca, cb, through, head, pruned = -1;
    test_doc t;
    CHECK_OK(pgstore_open(fx.conninfo, &pg, err), err);
    CHECK_OK(pgstore_check_embedding(pg, "test-model", DIM, err), err);
    const char *ids[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        store_put_result r;
        doc_a(&t);
        t.doc.doc_id = ids[i];
        CHECK_OK(pgstore_put(pg, &t.doc, t.chunks, 3, t.vecs, DIM, &r, &c, err), err);
    }
    CHECK_OK(pgstore_delete(pg, "a", &ca, err), err);
    CHECK_OK(pgstore_delete(pg, "b", &cb, err), err);
    /* no node registered: nothing may go */
    CHECK_OK(pgstore_prune(pg, &pruned, err), err);
    CHECK_INT(pruned, 0);
    /* node-1 applied everything, node-2 lags at 0: still nothing */
    CHECK_OK(pgstore_register_node(pg, "node-1", cb, err), err);
    CHECK_OK(pgstore_register_node(pg, "node-2", 0, err), err);
    CHECK_OK(pgstore_prune(pg, &pruned, err), err);
    CHECK_INT(pruned, 0);
    m.since = 1;
    CHECK_OK(pgstore_pull(pg, 1, 100, map_apply, &m, &through, &head, err), err);
    CHECK_INT(m.records, 3); /* c, then both deletions */
    /* node-2 reaches a's deletion: a's tombstone goes, b's stays for node-2 */
    CHECK_OK(pgstore_register_node(pg, "node-2", ca, err), err);
    CHECK_OK(pgstore_prune(pg, &pruned, err), err);
    CHECK_INT(pruned, ca);
    map_free(&m);
    m.since = ca;
    CHECK_OK(pgstore_pull(pg, ca, 100, map_apply, &m, &through, &head, err), err);
    CHECK_INT(m.records, 1);
    CHECK_INT(m.last_counter, cb);
    CHECK_INT(through, cb);
    /* a node behind the pruned point must rebuild; a node with nothing yet needs no deletions */
    CHECK_INT(pgstore_pull(pg, ca - 1, 100, map_apply, &m, &through, &head, err), QR_ELIMIT);
    CHECK(strstr(err, "rebuilt") != NULL);
    map_free(&m);
    CHECK_OK(pull_all(pg, 0, &m, &through, &head, err), err);
    CHECK_INT(m.n, 1);
    CHECK_STR(m.v[0].doc_id, "c");
    /* both at the head: everything goes; a watermark may go back, the pruned point does not */
    CHECK_OK(pgstore_register_node(pg, "node-2", cb, err), err);
    CHECK_OK(pgstore_prune(pg, &pruned, err), err);
    CHECK_INT(pruned, cb);
    CHECK_OK(pgstore_register_node(pg, "node-2", 1, err), err);
    CHECK_OK(pgstore_prune(pg, &pruned, err), err);
    CHECK_INT(pruned, cb);
    CHECK_INT(pgstore_pull(pg, 1, 100, map_apply, &m, &through, &head, err), QR_ELIMIT);
    map_free(&m);
    pgstore_close(pg);
}

/* ---- 5. batches --------------------------------------------------------------------------------- */

static void run_pull_limit_never_splits_a_counter(void)
{
    char err[QR_ERR_LEN];
    pgstore *pg = NULL;
    doc_map m = {0};
    int64_t c, through, head;
    test_doc t;
    PGconn *raw = NULL;
    CHECK_OK(pgstore_open(fx.conninfo, &pg, err), err);
    CHECK_OK(pgstore_check_embedding(pg, "test-model", DIM, err), err);
    for (int i = 0; i < 20; i++) {
        char id[16];
        store_put_result r;
        snprintf(id, sizeof(id), "doc-%02d", i + 1);
        doc_a(&t);
        t.doc.doc_id = id;
        CHECK_OK(pgstore_put(pg, &t.doc, t.chunks, 3, t.vecs, DIM, &r, &c, err), err);
        CHECK_INT(c, i + 1);
    }
    /* one counter with three documents, as a transaction writing several would leave it */
    raw = PQconnectdb(fx.conninfo);
    PGresult *res = PQexec(raw, "UPDATE quarry.documents SET counter = 5 WHERE counter IN (3, 4)");
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    PQfinish(raw);
    CHECK(ok);

    /* a pull from 0 is never cut: a node with nothing takes a whole snapshot */
    doc_map whole = {0};
    CHECK_OK(pgstore_pull(pg, 0, 4, map_apply, &whole, &through, &head, err), err);
    CHECK_STR(whole.problem, "");
    CHECK_INT(whole.records, 20);
    CHECK_INT(through, 20);
    map_free(&whole);
    /* from 1, limit 2 ends inside counter 5: the whole of it comes */
    m.since = 1;
    CHECK_OK(pgstore_pull(pg, 1, 2, map_apply, &m, &through, &head, err), err);
    CHECK_STR(m.problem, "");
    CHECK_INT(m.records, 4);
    CHECK_INT(m.last_counter, 5);
    CHECK_INT(through, 5);
    CHECK_INT(head, 20);
    size_t n = m.records;
    int64_t want[][2] = {{7, 12}, {7, 19}, {1, 20}, {0, 20}};
    for (int i = 0; i < 4; i++) {
        m.since = through;
        m.strict = true;
        CHECK_OK(pgstore_pull(pg, through, 7, map_apply, &m, &through, &head, err), err);
        CHECK_STR(m.problem, "");
        CHECK_MSG(m.records - n == (size_t)want[i][0] && through == want[i][1],
                  "pull %d: %zu records through %lld", i, m.records - n, (long long)through);
        n = m.records;
    }
    CHECK_INT(m.n, 19); /* every document but the one at counter 1 */
    /* a source behind the follower: nothing, and the follower stays where it is */
    CHECK_OK(pgstore_pull(pg, 25, 7, map_apply, &m, &through, &head, err), err);
    CHECK_INT(m.records, n);
    CHECK_INT(through, 25);
    CHECK_INT(head, 20);
    map_free(&m);
    pgstore_close(pg);
}

/* ---- 6. a hot standby ---------------------------------------------------------------------------- */

static void run_pull_from_hot_standby(void)
{
    char err[512], info[512];
    pgstore *pg = NULL, *sb = NULL;
    pg_fixture standby;
    doc_map m1 = {0}, m2 = {0};
    int64_t c, through, head, seen = -1;
    test_doc t;
    CHECK_OK(pgstore_open(fx.conninfo, &pg, err), err);
    CHECK_OK(pgstore_check_embedding(pg, "test-model", DIM, err), err);
    doc_a(&t);
    store_put_result r;
    CHECK_OK(pgstore_put(pg, &t.doc, t.chunks, 3, t.vecs, DIM, &r, &c, err), err);
    int rc = pg_fixture_start_standby(&standby, &fx, err);
    CHECK_MSG(rc == 0, "cannot start the standby: %s", err);
    t.doc.doc_id = "after-the-copy";
    CHECK_OK(pgstore_put(pg, &t.doc, t.chunks, 3, t.vecs, DIM, &r, &c, err), err);
    /* the primary first in the list: prefer-standby must still choose the standby */
    snprintf(
        info, sizeof(info),
        "host=127.0.0.1,127.0.0.1 port=%d,%d user=quarry dbname=postgres target_session_attrs=prefer-standby",
        fx.port, standby.port);
    /* no check may return before the standby is stopped: results first, checks after */
    qr_status st = pgstore_open(info, &sb, err), pulled = QR_EINTERNAL, wrote = QR_OK;
    int64_t uid = sb ? pgstore_uid(sb) : 0, sb_through = -1;
    for (int i = 0; !st && i < 600 && seen != c; i++) {
        if ((st = pgstore_counter(sb, &seen, err)) == QR_OK && seen != c)
            usleep(10000);
    }
    if (!st && seen == c) {
        pulled = pull_all(sb, 0, &m2, &sb_through, &head, err);
        t.doc.title = "a change the standby cannot take";
        wrote = pgstore_put(sb, &t.doc, t.chunks, 3, t.vecs, DIM, &r, NULL, info);
    }
    pgstore_close(sb);
    pg_fixture_stop(&standby);
    CHECK_MSG(seen == c, "the standby did not reach counter %lld (at %lld): %s", (long long)c,
              (long long)seen, err);
    CHECK_OK(pulled, err);
    CHECK_INT(sb_through, c);
    CHECK_INT(uid, pgstore_uid(pg));
    /* the write went to the standby, which refuses it */
    CHECK_MSG(wrote == QR_EUNAVAILABLE, "a write on the standby: %d (%s)", wrote, info);
    CHECK_OK(pull_all(pg, 0, &m1, &through, &head, err), err);
    char diff[256];
    map_diff(&m1, &m2, diff, sizeof(diff));
    CHECK_MSG(!diff[0], "the standby's pull differs from the primary's: %s", diff);
    CHECK_INT(m2.n, 2);
    map_free(&m1);
    map_free(&m2);
    pgstore_close(pg);
}

/* ---- the cases --------------------------------------------------------------------------------- */

TEST(put_pull)
{
    RUN_WITH_PG(put_pull);
}

TEST(bad_input_changes_nothing)
{
    RUN_WITH_PG(bad_input_changes_nothing);
}

TEST(concurrent_writers_follower)
{
    RUN_WITH_PG(concurrent_writers_follower);
}

TEST(prune_tombstones)
{
    RUN_WITH_PG(prune_tombstones);
}

TEST(pull_limit_never_splits_a_counter)
{
    RUN_WITH_PG(pull_limit_never_splits_a_counter);
}

TEST(pull_from_hot_standby)
{
    RUN_WITH_PG(pull_from_hot_standby);
}
