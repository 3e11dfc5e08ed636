/*
 * Tests of the document store (index/store.c) on real SQLite databases in temporary
 * directories: schema and reopening, puts (added, unchanged, updated, ACL-only), deletes, ACL
 * changes, the embedding model check, the feeds of the pruned BM25 index (chunk texts, changed
 * documents, principals' documents) and the schema migration they need, bad input that must
 * change nothing, FTS5 matching, the change log, readers during writes, damage detection, and the
 * crash test (a writer killed with SIGKILL 50 times).
 *
 * Where a test must see what the store wrote, it opens the database file with its own SQLite
 * connection and reads the tables directly, so that it does not trust the code under test to
 * report on itself.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "index/feed.h"
#include "index/index.h"
#include "tests/harness.h"
#include "tests/store_raw.h"

extern char **environ;

#define DIM 4

/* ---- helpers ----------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* A fresh directory under $TMPDIR (or /tmp); the path is static until the next call. */
static const char *temp_dir(void)
{
    static char path[512];
    const char *base = getenv("TMPDIR");
    snprintf(path, sizeof(path), "%s/quarry-store-XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(path))
        return NULL;
    return path;
}

static void rm_tree(const char *dir)
{
    if (dir)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The test's own connection to the store's file. */
static sqlite3 *raw_open(const char *dir)
{
    return store_raw_open(dir, SQLITE_OPEN_READWRITE);
}

/* First column of the first row as an integer; -999 on error (no test expects that value). */
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

/* First column of the first row as text, copied into out. */
static const char *raw_str(sqlite3 *db, const char *sql, char *out, size_t n)
{
    sqlite3_stmt *q = NULL;
    snprintf(out, n, "(error)");
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        snprintf(out, n, "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    return out;
}

/* Same with one text parameter. */
static int64_t raw_int_s(sqlite3 *db, const char *sql, const char *arg)
{
    sqlite3_stmt *q = NULL;
    int64_t v = -999;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK &&
        sqlite3_bind_text(q, 1, arg, -1, SQLITE_TRANSIENT) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int64(q, 0);
    else
        fprintf(stderr, "raw_int_s(%s): %s\n", sql, sqlite3_errmsg(db));
    sqlite3_finalize(q);
    return v;
}

/* What is wrong with the vectors file under dir, read by the test itself, or NULL: every live
 * chunk (ids from db) must have its row in the file, finite and of length 1 (the store keeps
 * vectors normalised; the tests' vectors are never zero). *rows gets the number of rows checked. */
static const char *vec_file_problem(const char *dir, sqlite3 *db, int dim, int64_t *rows)
{
    static char why[256];
    char path[600];
    snprintf(path, sizeof(path), "%s/quarry.vec", dir);
    *rows = 0;
    int fd = open(path, O_RDONLY);
    sqlite3_stmt *q = NULL;
    why[0] = '\0';
    if (fd < 0) {
        snprintf(why, sizeof(why), "no vectors file: %s", strerror(errno));
        return why;
    }
    float row[64];
    if (dim > 64 || sqlite3_prepare_v2(db, "SELECT id FROM chunks ORDER BY id", -1, &q, NULL) != SQLITE_OK)
        snprintf(why, sizeof(why), "cannot list chunks");
    while (!why[0] && sqlite3_step(q) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(q, 0);
        size_t rb = (size_t)dim * sizeof(float);
        if (pread(fd, row, rb, (off_t)(4096 + (size_t)id * rb)) != (ssize_t)rb) {
            snprintf(why, sizeof(why), "chunk %lld has no row in the vectors file", (long long)id);
            break;
        }
        double n2 = 0;
        for (int d = 0; d < dim; d++)
            n2 += isfinite(row[d]) ? (double)row[d] * row[d] : NAN;
        if (!(fabs(n2 - 1.0) < 1e-4))
            snprintf(why, sizeof(why), "chunk %lld's row has squared length %g", (long long)id, n2);
        (*rows)++;
    }
    sqlite3_finalize(q);
    close(fd);
    return why[0] ? why : NULL;
}

/* Live chunks whose rows are sound (-1 when one is not). */
static int64_t vec_rows(const char *dir, sqlite3 *db, int dim)
{
    int64_t n;
    const char *why = vec_file_problem(dir, db, dim, &n);
    if (why)
        fprintf(stderr, "vectors file: %s\n", why);
    return why ? -1 : n;
}

/* The vector the store keeps for v: normalised. */
static void normalised(const float *v, float *out, int dim)
{
    double n2 = 0;
    for (int d = 0; d < dim; d++)
        n2 += (double)v[d] * v[d];
    double inv = 1.0 / sqrt(n2);
    for (int d = 0; d < dim; d++)
        out[d] = (float)(v[d] * inv);
}

static bool raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fprintf(stderr, "raw_exec(%s): %s\n", sql, msg ? msg : "?");
    sqlite3_free(msg);
    return rc == SQLITE_OK;
}

/* Number of chunks whose FTS row matches an FTS5 query. */
static int64_t fts_count(sqlite3 *db, const char *match)
{
    return raw_int_s(db, "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?1", match);
}

/* The same through a connection of its own to the store in dir. */
static int64_t fts_count_dir(const char *dir, const char *match)
{
    sqlite3 *db = store_raw_open(dir, SQLITE_OPEN_READWRITE);
    int64_t n = db ? fts_count(db, match) : -999;
    sqlite3_close(db);
    return n;
}

static void fake_hash(const char *seed, char out[65])
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = seed; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    for (int i = 0; i < 4; i++, h = h * 6364136223846793005ULL + 1)
        snprintf(out + 16 * i, 17, "%016llx", (unsigned long long)h);
}

/* A document whose chunks are the lines of its text. */
typedef struct {
    store_document doc;
    store_chunk chunks[16];
    size_t nchunks;
    float vectors[16 * DIM];
    char hash[65];
    char text[4096];
} fixture;

static void make_doc(fixture *f, const char *doc_id, const char *title, const char *text,
                     const char *const *acl, size_t nacl)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->text, sizeof(f->text), "%s", text);
    fake_hash(text, f->hash);
    size_t len = strlen(f->text), start = 0;
    for (size_t i = 0; i <= len; i++) {
        if ((i == len || f->text[i] == '\n') && i > start) {
            store_chunk *c = &f->chunks[f->nchunks];
            c->start = start;
            c->end = i;
            c->headings = f->nchunks % 2 ? "Travel policy > Reimbursement" : "";
            for (int d = 0; d < DIM; d++)
                f->vectors[f->nchunks * DIM + d] =
                    (float)(f->nchunks + 1) * (d + 1) + (float)(f->hash[d] % 7);
            f->nchunks++;
        }
        if (i < len && f->text[i] == '\n')
            start = i + 1;
    }
    f->doc = (store_document){.doc_id = doc_id,
                              .title = title,
                              .uri = "file:///docs/x.txt",
                              .content_type = "text/plain",
                              .metadata_json = "{\"dept\": \"finance\", \"year\": 2026}",
                              .acl = acl,
                              .nacl = nacl,
                              .content_hash = f->hash,
                              .text = f->text,
                              .text_len = len};
}

static qr_status put(store *s, fixture *f, store_put_result *r, char *err)
{
    return store_put(s, &f->doc, f->chunks, f->nchunks, f->vectors, DIM, r, err);
}

static store *open_fresh(const char **dir, char *err)
{
    store *s = NULL;
    *dir = temp_dir();
    if (!*dir || store_open(*dir, &s, err) || store_check_embedding(s, "test-model", DIM, err)) {
        store_close(s);
        return NULL;
    }
    return s;
}

static int64_t counter_of(store *s)
{
    store_stats st;
    char err[QR_ERR_LEN];
    return store_get_stats(s, &st, err) ? -1 : st.change_counter;
}

static const char *const ACL_AB[] = {"user:bob", "group:finance", "user:bob"};
static const char *const TEXT1 = "Employees running errands are reimbursed within thirty days\n"
                                 "Hotels above the nightly limit need manager approval\n"
                                 "Receipts must be kept for audits";

/* ---- schema, opening --------------------------------------------------------------------- */

TEST(open_creates_private_dir_and_schema)
{
    char err[QR_ERR_LEN] = "", dir[600];
    const char *base = temp_dir();
    CHECK(base);
    snprintf(dir, sizeof(dir), "%s/a/b/data", base);
    store *s = NULL;
    CHECK_OK(store_open(dir, &s, err), err);
    store_close(s);
    struct stat sb;
    CHECK(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode));
    CHECK_INT(sb.st_mode & 0777, 0700);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    CHECK_INT(raw_int(db, "SELECT max(version) FROM schema_version"), 5);
    char mode[32];
    CHECK_STR(raw_str(db, "PRAGMA journal_mode", mode, sizeof(mode)), "wal");
    CHECK_STR(raw_str(db, "PRAGMA fts.journal_mode", mode, sizeof(mode)), "wal");
    CHECK_INT(raw_int(db, "SELECT count(*) FROM main.sqlite_schema WHERE name IN ('documents', 'chunks',"
                          " 'acl', 'fts_gone', 'deleted_chunks', 'meta', 'jobs', 'job_results')"),
              8);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM main.sqlite_schema WHERE name IN ('vectors', 'chunks_fts',"
                          " 'chunks_fts_source')"),
              0);
    /* the full-text index is quarry.fts's, and knows its store */
    CHECK_INT(raw_int(db, "SELECT count(*) FROM fts.sqlite_schema WHERE name IN ('chunks_fts', 'fts_meta')"),
              2);
    CHECK_INT(raw_int(db, "SELECT (SELECT value FROM fts.fts_meta WHERE key = 'store_uid') ="
                          " (SELECT value FROM main.meta WHERE key = 'store_uid')"),
              1);
    /* reopening does not migrate again and keeps the data */
    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_OK(store_check_embedding(s, "m", DIM, err), err);
    fixture f;
    store_put_result r;
    make_doc(&f, "d1", "Travel", TEXT1, NULL, 0);
    CHECK_OK(put(s, &f, &r, err), err);
    store_close(s);
    CHECK_OK(store_open(dir, &s, err), err);
    store_stats stats;
    CHECK_OK(store_get_stats(s, &stats, err), err);
    CHECK_INT(stats.documents, 1);
    CHECK_INT(stats.chunks, 3);
    CHECK_STR(stats.embedding_model, "m");
    store_close(s);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM schema_version"), 5);
    /* a store written by a newer quarry is refused, not damaged */
    CHECK(raw_exec(db, "INSERT INTO schema_version VALUES (99, 0)"));
    sqlite3_close(db);
    CHECK_INT(store_open(dir, &s, err), QR_EINVAL);
    CHECK(s == NULL);
    CHECK_MSG(strstr(err, "data directory has schema 99, this quarry knows up to") &&
                  strstr(err, "upgrade quarry"),
              "%s", err);
    rm_tree(base);
}

TEST(open_refuses_what_is_not_a_store)
{
    char err[QR_ERR_LEN] = "", path[600];
    const char *dir = temp_dir();
    CHECK(dir);
    snprintf(path, sizeof(path), "%s/quarry.db", dir);
    FILE *fp = fopen(path, "w");
    CHECK(fp);
    for (int i = 0; i < 200; i++)
        fputs("this is not a database, just text\n", fp);
    fclose(fp);
    store *s = NULL;
    CHECK_INT(store_open(dir, &s, err), QR_EIO);
    CHECK(s == NULL);
    CHECK_MSG(strstr(err, path) && strstr(err, "not a database"), "%s", err);
    /* a data directory that is a file */
    snprintf(path, sizeof(path), "%s/quarry.db", dir);
    CHECK_INT(store_open(path, &s, err), QR_EIO);
    CHECK_MSG(strstr(err, "quarry.db"), "%s", err);
    CHECK_INT(store_open("", &s, err), QR_EINVAL);
    rm_tree(dir);
}

/* ---- puts -------------------------------------------------------------------------------- */

TEST(put_then_get_document)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture f;
    store_put_result r;
    make_doc(&f, "policies/travel.md", "Travel policy", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &f, &r, err), err);
    CHECK_INT(r, STORE_ADDED);

    store_doc_info *d = NULL;
    CHECK_OK(store_get_document(s, "policies/travel.md", true, &d, err), err);
    CHECK_STR(d->doc_id, "policies/travel.md");
    CHECK_STR(d->title, "Travel policy");
    CHECK_STR(d->uri, "file:///docs/x.txt");
    CHECK_STR(d->content_type, "text/plain");
    CHECK_STR(d->metadata_json, "{\"dept\":\"finance\",\"year\":2026}");
    CHECK_STR(d->content_hash, f.hash);
    CHECK_INT(d->version, 1);
    CHECK(d->created_ms > 0 && d->updated_ms == d->created_ms);
    CHECK_INT(d->text_len, strlen(TEXT1));
    CHECK_INT(d->nacl, 2); /* duplicates folded, sorted */
    CHECK_STR(d->acl[0], "group:finance");
    CHECK_STR(d->acl[1], "user:bob");
    CHECK_INT(d->chunk_count, 3);
    CHECK_INT(d->nchunks, 3);
    for (size_t i = 0; i < 3; i++) {
        const store_chunk_row *c = &d->chunks[i];
        CHECK_INT(c->start, f.chunks[i].start);
        CHECK_INT(c->end, f.chunks[i].end);
        CHECK_INT(c->text_len, c->end - c->start);
        CHECK(memcmp(c->text, TEXT1 + c->start, c->text_len) == 0 && c->text[c->text_len] == '\0');
        CHECK_STR(c->headings, f.chunks[i].headings);
        float v[DIM], want[DIM];
        CHECK_OK(store_get_vector(s, c->chunk_id, v, DIM, err), err);
        normalised(&f.vectors[i * DIM], want, DIM);
        for (int k = 0; k < DIM; k++)
            CHECK(fabsf(v[k] - want[k]) < 1e-6f);
        if (i)
            CHECK(c->chunk_id > d->chunks[i - 1].chunk_id);
    }
    store_doc_info_free(d);

    char hash[65];
    bool found;
    CHECK_OK(store_get_hash(s, "policies/travel.md", hash, &found, err), err);
    CHECK(found);
    CHECK_STR(hash, f.hash);
    CHECK_OK(store_get_hash(s, "absent", hash, &found, err), err);
    CHECK(!found && hash[0] == '\0');
    CHECK_INT(store_get_document(s, "absent", false, &d, err), QR_ENOTFOUND);
    CHECK(d == NULL && strstr(err, "absent"));

    store_stats stats;
    CHECK_OK(store_get_stats(s, &stats, err), err);
    CHECK_INT(stats.documents, 1);
    CHECK_INT(stats.chunks, 3);
    CHECK_INT(stats.text_bytes, strlen(TEXT1));
    CHECK_INT(stats.embedding_dim, DIM);
    CHECK_INT(stats.change_counter, 1);
    /* the heads: the same embedding and counters, no counts */
    store_stats heads;
    CHECK_OK(store_get_heads(s, &heads, err), err);
    CHECK_INT(heads.documents + heads.chunks + heads.text_bytes, 0);
    CHECK_INT(heads.embedding_dim, DIM);
    CHECK_STR(heads.embedding_model, stats.embedding_model);
    CHECK_INT(heads.change_counter, stats.change_counter);
    CHECK_INT(heads.index_generation, stats.index_generation);
    CHECK_INT(store_get_heads(NULL, &heads, err), QR_EINVAL);
    CHECK_OK(store_verify(s, err), err);
    store_close(s);
    rm_tree(dir);
}

/* True when /proc/self/maps shows a mapping of path. */
static bool file_is_mapped(const char *path)
{
    FILE *m = fopen("/proc/self/maps", "r");
    char line[1024];
    bool found = false;
    while (m && !found && fgets(line, sizeof(line), m)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n')
            line[--n] = '\0';
        found = n >= strlen(path) && strcmp(line + n - strlen(path), path) == 0;
    }
    if (m)
        fclose(m);
    return found;
}

/* data.mmap_mib: handles opened after store_set_mmap read the file through a map (a map smaller
 * than the store will be) and read what another handle writes meanwhile; 0 maps nothing. */
TEST(mapped_store_reads_what_is_written)
{
    char err[QR_ERR_LEN] = "", path[600], real[PATH_MAX];
    const char *dir;
    store *w = open_fresh(&dir, err), *r = NULL, *plain = NULL;
    CHECK_MSG(w, "%s", err);
    snprintf(path, sizeof(path), "%s/quarry.db", dir);
    CHECK(realpath(path, real));
    fixture f;
    store_put_result res;
    make_doc(&f, "a", "First", TEXT1, ACL_AB, 3);
    CHECK_OK(put(w, &f, &res, err), err);
    store_close(w); /* the last handle: its pages go from the WAL into the file */
    store_set_mmap(256 << 10);
    qr_status st = store_open(dir, &r, err);
    store_set_mmap(0);
    CHECK_OK(st, err);
    CHECK_OK(store_open(dir, &w, err), err);
    store_doc_info *d = NULL;
    CHECK_OK(store_get_document(r, "a", true, &d, err), err);
    CHECK_INT(d->nchunks, 3);
    store_doc_info_free(d);
    CHECK_MSG(file_is_mapped(real), "%s is not mapped", real);
    for (int i = 0; i < 40; i++) {
        char id[16];
        snprintf(id, sizeof(id), "more-%d", i);
        make_doc(&f, id, "More", TEXT1, ACL_AB, 3);
        CHECK_OK(put(w, &f, &res, err), err);
    }
    store_stats stats;
    CHECK_OK(store_get_stats(r, &stats, err), err);
    CHECK_INT(stats.documents, 41);
    CHECK_INT(stats.chunks, 123);
    CHECK_OK(store_get_document(r, "more-39", true, &d, err), err);
    CHECK_INT(d->nchunks, 3);
    store_doc_info_free(d);
    CHECK_OK(store_verify(r, err), err);
    store_close(r);
    /* with 0 (the default) a new handle maps nothing */
    CHECK(!file_is_mapped(real));
    CHECK_OK(store_open(dir, &plain, err), err);
    CHECK_OK(store_get_stats(plain, &stats, err), err);
    CHECK_INT(stats.documents, 41);
    CHECK(!file_is_mapped(real));
    store_close(plain);
    store_close(w);
    rm_tree(dir);
}

TEST(reput_same_hash_writes_nothing)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture f;
    store_put_result r;
    make_doc(&f, "d1", "Travel policy", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &f, &r, err), err);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    int64_t data_version = raw_int(db, "PRAGMA data_version");
    int64_t counter = counter_of(s);

    /* the same document again, with the ACL in another order and the metadata spaced differently */
    const char *acl[] = {"group:finance", "user:bob"};
    f.doc.acl = acl;
    f.doc.nacl = 2;
    f.doc.metadata_json = "{ \"dept\" : \"finance\",\n \"year\" : 2026 }";
    CHECK_OK(put(s, &f, &r, err), err);
    CHECK_INT(r, STORE_UNCHANGED);
    /* and once more without text, chunks or vectors, as ingest does after store_get_hash */
    store_document bare = f.doc;
    bare.text = NULL;
    bare.text_len = 0;
    CHECK_OK(store_put(s, &bare, NULL, 0, NULL, 0, &r, err), err);
    CHECK_INT(r, STORE_UNCHANGED);
    CHECK_INT(counter_of(s), counter);
    /* data_version moves when another connection commits anything */
    CHECK_INT(raw_int(db, "PRAGMA data_version"), data_version);
    store_doc_info *d = NULL;
    CHECK_OK(store_get_document(s, "d1", false, &d, err), err);
    CHECK_INT(d->version, 1);
    store_doc_info_free(d);
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

/* Collects the change log. */
typedef struct {
    int64_t added[64], deleted[64];
    size_t nadded, ndeleted;
    int stop_after; /* 0: never */
    float first_component[64];
} changes;

static qr_status collect(void *ctx, const store_change *c, char *err)
{
    changes *ch = ctx;
    if (ch->stop_after && ch->nadded + ch->ndeleted == (size_t)ch->stop_after)
        return qr_fail(err, QR_ELIMIT, "stopped by the callback");
    if (c->deleted) {
        if (c->vector || ch->ndeleted == 64)
            return qr_fail(err, QR_EINTERNAL, "deleted change with a vector");
        ch->deleted[ch->ndeleted++] = c->chunk_id;
    } else {
        if (!c->vector || c->dim != DIM || ch->nadded == 64)
            return qr_fail(err, QR_EINTERNAL, "added change without its vector");
        ch->first_component[ch->nadded] = c->vector[0];
        ch->added[ch->nadded++] = c->chunk_id;
    }
    return QR_OK;
}

static int64_t chunk_ids(store *s, const char *doc_id, int64_t *ids, size_t *n)
{
    char err[QR_ERR_LEN];
    store_doc_info *d = NULL;
    *n = 0;
    if (store_get_document(s, doc_id, true, &d, err))
        return -1;
    for (size_t i = 0; i < d->nchunks; i++)
        ids[(*n)++] = d->chunks[i].chunk_id;
    store_doc_info_free(d);
    return 0;
}

TEST(new_content_replaces_chunks)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture f1, f2, other;
    store_put_result r;
    make_doc(&other, "other", "Other", "Unrelated zebra paragraph", NULL, 0);
    CHECK_OK(put(s, &other, &r, err), err);
    make_doc(&f1, "d1", "Travel policy", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &f1, &r, err), err);
    int64_t old_ids[16], new_ids[16];
    size_t nold, nnew;
    CHECK_INT(chunk_ids(s, "d1", old_ids, &nold), 0);
    CHECK_INT(nold, 3);
    int64_t counter_v1 = counter_of(s);

    sqlite3 *db = raw_open(dir);
    CHECK(db);
    CHECK_INT(fts_count(db, "audits"), 1);
    make_doc(&f2, "d1", "Travel policy",
             "Flights are booked in economy class\nTrains are preferred below 500 km", ACL_AB, 3);
    CHECK_OK(put(s, &f2, &r, err), err);
    CHECK_INT(r, STORE_UPDATED);
    CHECK_INT(chunk_ids(s, "d1", new_ids, &nnew), 0);
    CHECK_INT(nnew, 2);
    for (size_t i = 0; i < nnew; i++)
        CHECK(new_ids[i] > old_ids[nold - 1]);
    for (size_t i = 0; i < nold; i++) {
        char sql[160];
        float v[DIM];
        CHECK_INT(store_get_vector(s, old_ids[i], v, DIM, err), QR_ENOTFOUND);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM chunks_fts_docsize WHERE id = %lld",
                 (long long)old_ids[i]);
        CHECK_INT(raw_int(db, sql), 0);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM chunks WHERE id = %lld", (long long)old_ids[i]);
        CHECK_INT(raw_int(db, sql), 0);
    }
    CHECK_INT(fts_count(db, "audits"), 0);
    CHECK_INT(fts_count(db, "economy"), 1);
    CHECK_INT(fts_count(db, "zebra"), 1); /* the other document is untouched */
    CHECK_INT(vec_rows(dir, db, DIM), 3);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM acl"), 2);

    /* the change log tells the vector index exactly what happened since v1 */
    changes ch = {0};
    int64_t now = 0;
    CHECK_OK(store_changes_since(s, counter_v1, collect, &ch, &now, err), err);
    CHECK_INT(now, counter_of(s));
    CHECK_INT(ch.ndeleted, 3);
    CHECK_INT(ch.nadded, 2);
    for (size_t i = 0; i < 3; i++)
        CHECK_INT(ch.deleted[i], old_ids[i]);
    for (size_t i = 0; i < 2; i++) {
        CHECK_INT(ch.added[i], new_ids[i]);
        float want[DIM];
        normalised(&f2.vectors[i * DIM], want, DIM);
        CHECK(fabsf(ch.first_component[i] - want[0]) < 1e-6f);
    }
    /* from the beginning: only live chunks are added, the replaced ones are deleted */
    memset(&ch, 0, sizeof(ch));
    CHECK_OK(store_changes_since(s, 0, collect, &ch, &now, err), err);
    CHECK_INT(ch.nadded, 3);
    CHECK_INT(ch.ndeleted, 3);
    /* nothing new since now */
    memset(&ch, 0, sizeof(ch));
    CHECK_OK(store_changes_since(s, now, collect, &ch, &now, err), err);
    CHECK_INT(ch.nadded + ch.ndeleted, 0);
    /* a callback's failure stops the walk and comes back */
    memset(&ch, 0, sizeof(ch));
    ch.stop_after = 2;
    CHECK_INT(store_changes_since(s, 0, collect, &ch, &now, err), QR_ELIMIT);
    CHECK_STR(err, "stopped by the callback");
    /* tombstones go once the vector index has folded them in */
    CHECK_OK(store_prune_tombstones(s, now, err), err);
    memset(&ch, 0, sizeof(ch));
    CHECK_OK(store_changes_since(s, 0, collect, &ch, &now, err), err);
    CHECK_INT(ch.ndeleted, 0);
    CHECK_INT(ch.nadded, 3);
    /* every vector, in id order, for a rebuild */
    memset(&ch, 0, sizeof(ch));
    CHECK_OK(store_each_vector(s, collect, &ch, &now, err), err);
    CHECK_INT(ch.nadded, 3);
    CHECK(ch.added[0] < ch.added[1] && ch.added[1] < ch.added[2]);
    CHECK_OK(store_verify(s, err), err);
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

TEST(same_hash_acl_or_title_change_keeps_chunks)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture f;
    store_put_result r;
    make_doc(&f, "d1", "Travel policy", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &f, &r, err), err);
    int64_t ids[16], ids2[16];
    size_t n, n2;
    CHECK_INT(chunk_ids(s, "d1", ids, &n), 0);
    int64_t counter = counter_of(s);

    const char *acl[] = {"public"};
    f.doc.acl = acl;
    f.doc.nacl = 1;
    CHECK_OK(put(s, &f, &r, err), err);
    CHECK_INT(r, STORE_ACL_UPDATED);
    CHECK_INT(counter_of(s), counter + 1);
    CHECK_INT(chunk_ids(s, "d1", ids2, &n2), 0);
    CHECK(n2 == n && memcmp(ids, ids2, n * sizeof(ids[0])) == 0);

    sqlite3 *db = raw_open(dir);
    CHECK(db);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM acl WHERE principal = 'public'"), 1);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM acl"), 1);
    CHECK_INT(fts_count(db, "title:travel"), 3);
    /* a metadata-only change is the same kind */
    f.doc.metadata_json = "{\"dept\":\"hr\"}";
    CHECK_OK(put(s, &f, &r, err), err);
    CHECK_INT(r, STORE_ACL_UPDATED);

    /* a new title is re-indexed under the same chunk ids; no change is logged for the vectors */
    int64_t before = counter_of(s);
    f.doc.title = "Expense handbook";
    CHECK_OK(put(s, &f, &r, err), err);
    CHECK_INT(r, STORE_UPDATED);
    CHECK_INT(chunk_ids(s, "d1", ids2, &n2), 0);
    CHECK(n2 == n && memcmp(ids, ids2, n * sizeof(ids[0])) == 0);
    CHECK_INT(fts_count(db, "title:travel"), 0);
    CHECK_INT(fts_count(db, "title:handbook"), 3);
    changes ch = {0};
    int64_t now;
    CHECK_OK(store_changes_since(s, before, collect, &ch, &now, err), err);
    CHECK_INT(ch.nadded + ch.ndeleted, 0);
    store_doc_info *d = NULL;
    CHECK_OK(store_get_document(s, "d1", false, &d, err), err);
    CHECK_INT(d->version, 4);
    CHECK_STR(d->title, "Expense handbook");
    CHECK_STR(d->metadata_json, "{\"dept\":\"hr\"}");
    store_doc_info_free(d);
    CHECK_OK(store_verify(s, err), err);
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

/* A fingerprint of everything but the ACL: chunk rows, the vectors file's bytes and indexed FTS
 * rows. */
static int64_t content_fingerprint(const char *dir, sqlite3 *db)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/quarry.vec", dir);
    uint64_t h = 1469598103934665603ull;
    FILE *f = fopen(path, "rb");
    for (int c; f && (c = fgetc(f)) != EOF;)
        h = (h ^ (uint64_t)c) * 1099511628211ull;
    if (f)
        fclose(f);
    return (int64_t)(h >> 2) +
           raw_int(db,
                   "SELECT (SELECT total(id * 31 + start * 7 + \"end\" + length(body) + added) FROM chunks)"
                   " + (SELECT total(id * 13) FROM chunks_fts_docsize)"
                   " + (SELECT count(*) FROM chunks_fts_data)");
}

TEST(acl_is_stored_as_auth_spells_principals)
{
    /* group:Finance and user:BOB could never match: login lower-cases group and uid names. The
     * store keeps them lower-cased, folds the duplicates that makes, and a re-put in another case
     * changes nothing. */
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture f;
    store_put_result r;
    static const char *const mixed[] = {"group:Finance", "user:BOB", "group:finance"};
    make_doc(&f, "d1", "Travel policy", TEXT1, mixed, 3);
    CHECK_OK(put(s, &f, &r, err), err);
    store_doc_info *info = NULL;
    CHECK_OK(store_get_document(s, "d1", false, &info, err), err);
    CHECK(info->nacl == 2 && strcmp(info->acl[0], "group:finance") == 0 &&
          strcmp(info->acl[1], "user:bob") == 0);
    store_doc_info_free(info);
    static const char *const upper[] = {"user:Bob", "group:FINANCE"};
    make_doc(&f, "d1", "Travel policy", TEXT1, upper, 2);
    CHECK_OK(put(s, &f, &r, err), err);
    CHECK_INT(r, STORE_UNCHANGED);
    static const char *const changed[] = {"group:Sales"};
    CHECK_OK(store_set_acl(s, "d1", changed, 1, err), err);
    CHECK_OK(store_get_document(s, "d1", false, &info, err), err);
    CHECK(info->nacl == 1 && strcmp(info->acl[0], "group:sales") == 0);
    store_doc_info_free(info);
    static const char *const bad[] = {"group:sales", "user: bob"};
    make_doc(&f, "d2", "Other", TEXT1, bad, 2);
    CHECK_INT(put(s, &f, &r, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "'user: bob'") && strstr(err, "space"), "%s", err);
    store_close(s);
    rm_tree(dir);
}

TEST(set_acl_rewrites_only_acl_rows)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture f;
    store_put_result r;
    make_doc(&f, "d1", "Travel policy", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &f, &r, err), err);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    int64_t fp = content_fingerprint(dir, db);
    CHECK(fp > 0);
    int64_t counter = counter_of(s);

    const char *acl[] = {"group:Domain Users", "public"};
    CHECK_OK(store_set_acl(s, "d1", acl, 2, err), err);
    CHECK_INT(content_fingerprint(dir, db), fp);
    CHECK_INT(counter_of(s), counter + 1);
    /* stored as auth spells the group at login (store_principal_canonical) */
    CHECK_INT(raw_int(db, "SELECT count(*) FROM acl WHERE principal IN ('group:domain users', 'public')"), 2);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM acl"), 2);

    /* the same ACL again writes nothing */
    int64_t data_version = raw_int(db, "PRAGMA data_version");
    CHECK_OK(store_set_acl(s, "d1", acl, 2, err), err);
    CHECK_INT(raw_int(db, "PRAGMA data_version"), data_version);

    /* an empty ACL: administrators only */
    CHECK_OK(store_set_acl(s, "d1", NULL, 0, err), err);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM acl"), 0);

    const char *bad[] = {"public", "user:"};
    CHECK_INT(store_set_acl(s, "d1", bad, 2, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "principal #1") && strstr(err, "'user:'"), "%s", err);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM acl"), 0);
    CHECK_INT(store_set_acl(s, "nope", acl, 2, err), QR_ENOTFOUND);
    CHECK_MSG(strstr(err, "'nope'"), "%s", err);
    CHECK_INT(content_fingerprint(dir, db), fp);
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

TEST(delete_removes_everything)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture f, other;
    store_put_result r;
    make_doc(&f, "d1", "Travel policy", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &f, &r, err), err);
    make_doc(&other, "d2", "Other", "Unrelated zebra paragraph\nSecond zebra line", ACL_AB, 2);
    CHECK_OK(put(s, &other, &r, err), err);
    int64_t ids[16];
    size_t n;
    CHECK_INT(chunk_ids(s, "d1", ids, &n), 0);

    CHECK_OK(store_delete(s, "d1", err), err);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM documents"), 1);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM chunks"), 2);
    CHECK_INT(vec_rows(dir, db, DIM), 2);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM chunks_fts_docsize"), 2);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM acl"), 2);
    CHECK_INT(fts_count(db, "body:reimburse"), 0);
    CHECK_INT(fts_count(db, "title:travel"), 0);
    CHECK_INT(fts_count(db, "zebra"), 2);
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM deleted_chunks WHERE chunk_id BETWEEN %lld AND %lld",
             (long long)ids[0], (long long)ids[n - 1]);
    CHECK_INT(raw_int(db, sql), 3);

    CHECK_INT(store_delete(s, "d1", err), QR_ENOTFOUND);
    CHECK_MSG(strstr(err, "'d1'"), "%s", err);
    /* ids are never handed out again, even after the highest one was deleted */
    CHECK_OK(store_delete(s, "d2", err), err);
    CHECK_OK(put(s, &f, &r, err), err);
    CHECK_INT(r, STORE_ADDED);
    int64_t ids2[16];
    size_t n2;
    CHECK_INT(chunk_ids(s, "d1", ids2, &n2), 0);
    CHECK(ids2[0] > ids[n - 1] + 2);
    CHECK_OK(store_verify(s, err), err);
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

TEST(embedding_model_mismatch_is_refused)
{
    char err[QR_ERR_LEN] = "";
    const char *dir = temp_dir();
    store *s = NULL;
    CHECK(dir);
    CHECK_OK(store_open(dir, &s, err), err);
    fixture f;
    store_put_result r;
    make_doc(&f, "d1", "T", TEXT1, NULL, 0);
    /* vectors before any model is recorded */
    CHECK_INT(put(s, &f, &r, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "store_check_embedding"), "%s", err);
    CHECK_OK(store_check_embedding(s, "local-lsa-v1", DIM, err), err);
    CHECK_OK(store_check_embedding(s, "local-lsa-v1", DIM, err), err);
    CHECK_INT(store_check_embedding(s, "text-embedding-3-small", 1536, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "'local-lsa-v1'") && strstr(err, "'text-embedding-3-small'") &&
                  strstr(err, "1536") && strstr(err, "dimension 4"),
              "%s", err);
    CHECK_INT(store_check_embedding(s, "local-lsa-v1", 8, err), QR_EINVAL);
    CHECK_INT(store_check_embedding(s, "", DIM, err), QR_EINVAL);
    CHECK_INT(store_check_embedding(s, "m", 0, err), QR_EINVAL);
    CHECK_INT(store_check_embedding(s, "bad\nname", DIM, err), QR_EINVAL);
    store_close(s);
    /* it is recorded in the file, not in the handle */
    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_INT(store_check_embedding(s, "other", DIM, err), QR_EINVAL);
    store_stats stats;
    CHECK_OK(store_get_stats(s, &stats, err), err);
    CHECK_STR(stats.embedding_model, "local-lsa-v1");
    CHECK_INT(stats.embedding_dim, DIM);
    CHECK_INT(stats.change_counter, 0);
    /* vectors of another dimension are refused by put as well */
    float v8[3 * 8] = {0};
    CHECK_INT(store_put(s, &f.doc, f.chunks, f.nchunks, v8, 8, &r, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "dimension 8") && strstr(err, "are 4"), "%s", err);
    store_close(s);
    rm_tree(dir);
}

TEST(principal_validation)
{
    const char *good[] = {"public",    "user:alice", "group:finance", "group:Domain Users",
                          "user:josé", "group:a"};
    const char *bad[] = {NULL,        "",          "Public",      "public ",     "user:",
                         "group:",    "alice",     "user: alice", "user:alice ", "user:al\nice",
                         "user:\x7f", "user:\xff", "group:a\tb",  "role:admin",  "user:\xc2\x85x",
                         "USER:alice"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECK_MSG(store_principal_valid(good[i]), "'%s' should be valid", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_MSG(!store_principal_valid(bad[i]), "bad principal #%zu accepted", i);
    /* canonical spellings: the name's ASCII letters in lower case, as auth spells them */
    static const char *const canon[][2] = {
        {"public", "public"},
        {"user:AVA", "user:ava"},
        {"group:Engineering", "group:engineering"},
        {"group:Domain Users", "group:domain users"},
        {"user:Jos\xc3\xa9", "user:jos\xc3\xa9"},
        {"group:\xc3\x84rzte", "group:\xc3\x84rzte"}, /* other bytes as given, as auth keeps them */
    };
    char out[64], err[QR_ERR_LEN];
    for (size_t i = 0; i < sizeof(canon) / sizeof(canon[0]); i++) {
        CHECK_OK(store_principal_canonical(canon[i][0], out, sizeof(out), err), err);
        CHECK_STR(out, canon[i][1]);
    }
    CHECK_INT(store_principal_canonical("user:AVA", out, 8, err), QR_EINVAL); /* no room */
    /* refusals name the principal and what is wrong, unless it would not print safely */
    static const char *const why[][2] = {
        {"user: ava", "invalid principal 'user: ava': the name starts or ends with a space"},
        {"group:", "invalid principal 'group:': the name is empty"},
        {"admins", "invalid principal 'admins': expected \"public\", \"user:<uid>\" or \"group:<name>\""},
        {"Public", "invalid principal 'Public': expected"},
        {"user:al\nice", "invalid principal: the name holds a control character"},
        {"user:\xff", "invalid principal: the name is not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof(why) / sizeof(why[0]); i++) {
        CHECK_INT(store_principal_canonical(why[i][0], out, sizeof(out), err), QR_EINVAL);
        CHECK_MSG(strncmp(err, why[i][1], strlen(why[i][1])) == 0, "'%s': %s", why[i][0], err);
    }
    char longname[STORE_PRINCIPAL_MAX + 16];
    memcpy(longname, "user:", 5);
    memset(longname + 5, 'a', STORE_PRINCIPAL_MAX);
    longname[5 + STORE_PRINCIPAL_MAX] = '\0';
    CHECK(store_principal_valid(longname));
    longname[5 + STORE_PRINCIPAL_MAX] = 'a';
    longname[6 + STORE_PRINCIPAL_MAX] = '\0';
    CHECK(!store_principal_valid(longname));
}

/* ---- feeds for the pruned BM25 index ----------------------------------------------------- */

/* True when no connection holds a read snapshot: a TRUNCATE checkpoint then empties the WAL. */
static bool no_reader(const char *dir)
{
    sqlite3 *db = raw_open(dir);
    bool ok = db && raw_int(db, "PRAGMA wal_checkpoint(TRUNCATE)") == 0;
    sqlite3_close(db);
    return ok;
}

static int64_t doc_key(sqlite3 *db, const char *doc_id)
{
    return raw_int_s(db, "SELECT id FROM documents WHERE doc_id = ?1", doc_id);
}

/* Collects store_text callbacks, copying the strings. */
typedef struct {
    struct {
        int64_t chunk_id, doc, counter;
        bool deleted;
        char col[3][256];
    } row[64];
    size_t n;
    size_t stop_after; /* 0: never */
} texts;

static qr_status collect_text(void *ctx, const store_text *t, char *err)
{
    texts *x = ctx;
    if (x->stop_after && x->n == x->stop_after)
        return qr_fail(err, QR_ELIMIT, "stopped by the callback");
    if (x->n == 64)
        return qr_fail(err, QR_EINTERNAL, "too many texts");
    for (int i = 0; i < 3; i++) {
        if (t->deleted && (t->col[i] || t->col_len[i] || t->doc != -1))
            return qr_fail(err, QR_EINTERNAL, "deleted chunk %lld with text or document",
                           (long long)t->chunk_id);
        if (!t->deleted && (!t->col[i] || strlen(t->col[i]) != t->col_len[i] || t->col_len[i] >= 256))
            return qr_fail(err, QR_EINTERNAL, "chunk %lld: column %d missing or of the wrong length",
                           (long long)t->chunk_id, i);
    }
    x->row[x->n].chunk_id = t->chunk_id;
    x->row[x->n].doc = t->doc;
    x->row[x->n].counter = t->counter;
    x->row[x->n].deleted = t->deleted;
    for (int i = 0; i < 3; i++)
        snprintf(x->row[x->n].col[i], 256, "%s", t->deleted ? "" : t->col[i]);
    x->n++;
    return QR_OK;
}

TEST(change_counter_and_pruned_through)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    int64_t c = -1;
    CHECK_OK(store_change_counter(s, &c, err), err);
    CHECK_INT(c, 0);
    CHECK_OK(store_pruned_through(s, &c, err), err);
    CHECK_INT(c, 0);
    fixture f;
    store_put_result r;
    make_doc(&f, "d1", "Travel policy", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &f, &r, err), err);
    CHECK_OK(store_delete(s, "d1", err), err);
    CHECK_OK(put(s, &f, &r, err), err);
    CHECK_OK(store_change_counter(s, &c, err), err);
    CHECK_INT(c, 3);
    CHECK_INT(c, counter_of(s));

    /* the largest counter pruned through is kept, a smaller one later does not lower it */
    CHECK_OK(store_prune_tombstones(s, 2, err), err);
    CHECK_OK(store_pruned_through(s, &c, err), err);
    CHECK_INT(c, 2);
    CHECK_OK(store_prune_tombstones(s, 1, err), err);
    CHECK_OK(store_pruned_through(s, &c, err), err);
    CHECK_INT(c, 2);
    CHECK_OK(store_prune_tombstones(s, 3, err), err);
    CHECK_OK(store_pruned_through(s, &c, err), err);
    CHECK_INT(c, 3);
    /* pruning does not count as a change */
    CHECK_OK(store_change_counter(s, &c, err), err);
    CHECK_INT(c, 3);

    /* inside a batch, reads see the batch's writes */
    CHECK_OK(store_batch_begin(s, err), err);
    CHECK_OK(store_delete(s, "d1", err), err);
    CHECK_OK(store_change_counter(s, &c, err), err);
    CHECK_INT(c, 4);
    CHECK_OK(store_batch_commit(s, err), err);
    CHECK(no_reader(dir));

    CHECK_INT(store_change_counter(s, NULL, err), QR_EINVAL);
    CHECK_INT(store_pruned_through(NULL, &c, err), QR_EINVAL);
    store_close(s);
    rm_tree(dir);
}

TEST(text_changes_since_reports_deleted_then_added)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    fixture a, a2, b, c;
    store_put_result r;
    make_doc(&a, "a", "Travel policy", TEXT1, ACL_AB, 3);
    make_doc(&b, "b", "Other", "Unrelated zebra paragraph", NULL, 0);
    CHECK_OK(put(s, &a, &r, err), err);
    CHECK_OK(put(s, &b, &r, err), err);
    int64_t ka = doc_key(db, "a"), kb = doc_key(db, "b");
    int64_t a_ids[16], b_ids[16], a2_ids[16], c_ids[16];
    size_t na, nb, na2, nc;
    CHECK_INT(chunk_ids(s, "a", a_ids, &na), 0);
    CHECK_INT(chunk_ids(s, "b", b_ids, &nb), 0);

    /* from the beginning: every chunk with its title, headings, body and document */
    texts x = {0};
    int64_t now = -1;
    CHECK_OK(store_text_changes_since(s, 0, collect_text, &x, &now, err), err);
    CHECK_INT(now, 2);
    CHECK_INT(x.n, 4);
    for (size_t i = 0; i < 3; i++) {
        CHECK_INT(x.row[i].chunk_id, a_ids[i]);
        CHECK(!x.row[i].deleted);
        CHECK_INT(x.row[i].doc, ka);
        CHECK_INT(x.row[i].counter, 1);
        CHECK_STR(x.row[i].col[0], "Travel policy");
        CHECK_STR(x.row[i].col[1], a.chunks[i].headings);
        char body[256];
        snprintf(body, sizeof(body), "%.*s", (int)(a.chunks[i].end - a.chunks[i].start),
                 TEXT1 + a.chunks[i].start);
        CHECK_STR(x.row[i].col[2], body);
    }
    CHECK_INT(x.row[3].chunk_id, b_ids[0]);
    CHECK_INT(x.row[3].doc, kb);
    CHECK_INT(x.row[3].counter, 2);
    CHECK_STR(x.row[3].col[0], "Other");
    CHECK_STR(x.row[3].col[1], "");
    CHECK_STR(x.row[3].col[2], "Unrelated zebra paragraph");

    /* new content for a (3), c added (4) and deleted (5), b deleted (6) */
    int64_t since = now;
    make_doc(&a2, "a", "Travel policy", "Flights are booked in economy class\nTrains below 500 km", ACL_AB,
             3);
    CHECK_OK(put(s, &a2, &r, err), err);
    CHECK_INT(r, STORE_UPDATED);
    CHECK_INT(chunk_ids(s, "a", a2_ids, &na2), 0);
    make_doc(&c, "c", "Short-lived", "Here and gone", NULL, 0);
    CHECK_OK(put(s, &c, &r, err), err);
    CHECK_INT(chunk_ids(s, "c", c_ids, &nc), 0);
    CHECK_OK(store_delete(s, "c", err), err);
    CHECK_OK(store_delete(s, "b", err), err);
    /* a title change keeps the chunk ids: no chunk changes (store_docs_changed_since says it) */
    a2.doc.title = "Expense handbook";
    CHECK_OK(put(s, &a2, &r, err), err);
    CHECK_INT(r, STORE_UPDATED);

    memset(&x, 0, sizeof(x));
    CHECK_OK(store_text_changes_since(s, since, collect_text, &x, &now, err), err);
    CHECK_INT(now, 7);
    CHECK_INT(x.n, 3 + 1 + 1 + 2); /* c is reported once, as deleted */
    int64_t want_deleted[] = {a_ids[0], a_ids[1], a_ids[2], b_ids[0], c_ids[0]};
    int64_t want_counter[] = {3, 3, 3, 6, 5};
    for (size_t i = 0; i < 5; i++) {
        CHECK_INT(x.row[i].chunk_id, want_deleted[i]);
        CHECK(x.row[i].deleted);
        CHECK_INT(x.row[i].doc, -1);
        CHECK_INT(x.row[i].counter, want_counter[i]);
    }
    CHECK_INT(na2, 2);
    for (size_t i = 0; i < 2; i++) {
        CHECK_INT(x.row[5 + i].chunk_id, a2_ids[i]);
        CHECK(!x.row[5 + i].deleted);
        CHECK_INT(x.row[5 + i].doc, ka);
        CHECK_INT(x.row[5 + i].counter, 3);
        CHECK_STR(x.row[5 + i].col[0], "Expense handbook"); /* the title as the snapshot has it */
    }
    CHECK_STR(x.row[5].col[2], "Flights are booked in economy class");
    CHECK_STR(x.row[6].col[1], "Travel policy > Reimbursement");
    CHECK_STR(x.row[6].col[2], "Trains below 500 km");

    /* nothing since now */
    memset(&x, 0, sizeof(x));
    CHECK_OK(store_text_changes_since(s, now, collect_text, &x, &now, err), err);
    CHECK_INT(x.n, 0);
    CHECK_INT(now, 7);
    /* the callback's failure stops the walk, comes back, and leaves no snapshot open */
    memset(&x, 0, sizeof(x));
    x.stop_after = 2;
    now = -1;
    CHECK_INT(store_text_changes_since(s, since, collect_text, &x, &now, err), QR_ELIMIT);
    CHECK_STR(err, "stopped by the callback");
    CHECK_INT(x.n, 2);
    CHECK_INT(now, -1);
    CHECK(no_reader(dir));
    CHECK_INT(store_text_changes_since(s, 0, NULL, &x, &now, err), QR_EINVAL);
    CHECK_INT(store_text_changes_since(s, 0, collect_text, &x, NULL, err), QR_EINVAL);
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

TEST(each_text_walks_every_live_chunk)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    fixture a, b, c;
    store_put_result r;
    make_doc(&a, "a", "Travel policy", TEXT1, ACL_AB, 3);
    make_doc(&b, "b", "Other", "Unrelated zebra paragraph\nSecond zebra line", NULL, 0);
    make_doc(&c, "c", "Third", "Third document\nwith\nfour\nlines", NULL, 0);
    CHECK_OK(put(s, &a, &r, err), err);
    CHECK_OK(put(s, &b, &r, err), err);
    CHECK_OK(put(s, &c, &r, err), err);
    CHECK_OK(store_delete(s, "b", err), err);

    texts x = {0};
    int64_t now = -1;
    CHECK_OK(store_each_text(s, collect_text, &x, &now, err), err);
    CHECK_INT(now, 4);
    CHECK_INT(x.n, 7);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM chunks"), 7);
    for (size_t i = 0; i < x.n; i++) {
        char sql[256], want[256];
        CHECK(!x.row[i].deleted);
        if (i)
            CHECK(x.row[i].chunk_id > x.row[i - 1].chunk_id);
        snprintf(sql, sizeof(sql),
                 "SELECT d.title || '|' || c.headings || '|' || c.body || '|' || c.doc || '|' || c.added"
                 " FROM chunks c JOIN documents d ON d.id = c.doc WHERE c.id = %lld",
                 (long long)x.row[i].chunk_id);
        char got[1024];
        snprintf(got, sizeof(got), "%s|%s|%s|%lld|%lld", x.row[i].col[0], x.row[i].col[1], x.row[i].col[2],
                 (long long)x.row[i].doc, (long long)x.row[i].counter);
        CHECK_STR(got, raw_str(db, sql, want, sizeof(want)));
    }
    CHECK_INT(x.row[0].doc, doc_key(db, "a"));
    CHECK_INT(x.row[6].doc, doc_key(db, "c"));
    CHECK_INT(x.row[6].counter, 3);
    /* stops on the callback's status */
    memset(&x, 0, sizeof(x));
    x.stop_after = 1;
    CHECK_INT(store_each_text(s, collect_text, &x, &now, err), QR_ELIMIT);
    CHECK(no_reader(dir));
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

/* Collects store_doc_change callbacks. */
typedef struct {
    struct {
        int64_t doc, counter;
        bool fts_rewritten;
        char acl[8][64];
        size_t nacl;
    } row[16];
    size_t n;
} doc_changes;

static qr_status collect_doc(void *ctx, const store_doc_change *d, char *err)
{
    doc_changes *x = ctx;
    if (x->n == 16 || d->nacl > 8 || (d->nacl && !d->acl))
        return qr_fail(err, QR_EINTERNAL, "unexpected document change");
    x->row[x->n].doc = d->doc;
    x->row[x->n].counter = d->counter;
    x->row[x->n].fts_rewritten = d->fts_rewritten;
    x->row[x->n].nacl = d->nacl;
    for (size_t i = 0; i < d->nacl; i++)
        snprintf(x->row[x->n].acl[i], 64, "%s", d->acl[i]);
    x->n++;
    return QR_OK;
}

static qr_status docs_since(store *s, int64_t since, doc_changes *x, char *err)
{
    int64_t now = -1;
    memset(x, 0, sizeof(*x));
    qr_status st = store_docs_changed_since(s, since, collect_doc, x, &now, err);
    if (!st && now != counter_of(s))
        st = qr_fail(err, QR_EINTERNAL, "counter %lld, the store's is %lld", (long long)now,
                     (long long)counter_of(s));
    return st;
}

TEST(docs_changed_since_reports_rows_and_acls)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    fixture a, b;
    store_put_result r;
    make_doc(&a, "a", "Travel policy", TEXT1, ACL_AB, 3);             /* 1 */
    make_doc(&b, "b", "Other", "Unrelated zebra paragraph", NULL, 0); /* 2 */
    CHECK_OK(put(s, &a, &r, err), err);
    CHECK_OK(put(s, &b, &r, err), err);
    int64_t ka = doc_key(db, "a"), kb = doc_key(db, "b");
    CHECK(ka < kb);

    doc_changes x;
    CHECK_OK(docs_since(s, 0, &x, err), err);
    CHECK_INT(x.n, 2);
    CHECK_INT(x.row[0].doc, ka);
    CHECK_INT(x.row[0].counter, 1);
    CHECK(!x.row[0].fts_rewritten);
    CHECK_INT(x.row[0].nacl, 2);
    CHECK_STR(x.row[0].acl[0], "group:finance");
    CHECK_STR(x.row[0].acl[1], "user:bob");
    CHECK_INT(x.row[1].doc, kb);
    CHECK_INT(x.row[1].counter, 2);
    CHECK_INT(x.row[1].nacl, 0);
    CHECK_OK(docs_since(s, 2, &x, err), err);
    CHECK_INT(x.n, 0);

    /* an ACL-only put (3): principals canonical ("group:Zeta" is "group:zeta") in byte order ("É"
     * after ASCII) */
    const char *acl[] = {"user:zed", "group:alpha", "public", "user:\xc3\x89mile", "group:Zeta"};
    a.doc.acl = acl;
    a.doc.nacl = 5;
    CHECK_OK(put(s, &a, &r, err), err);
    CHECK_INT(r, STORE_ACL_UPDATED);
    CHECK_OK(docs_since(s, 2, &x, err), err);
    CHECK_INT(x.n, 1);
    CHECK_INT(x.row[0].doc, ka);
    CHECK_INT(x.row[0].counter, 3);
    CHECK(!x.row[0].fts_rewritten);
    CHECK_INT(x.row[0].nacl, 5);
    const char *sorted[] = {"group:alpha", "group:zeta", "public", "user:zed", "user:\xc3\x89mile"};
    for (size_t i = 0; i < 5; i++)
        CHECK_STR(x.row[0].acl[i], sorted[i]);

    /* store_set_acl (4); an equal ACL writes nothing */
    const char *pub[] = {"public"};
    CHECK_OK(store_set_acl(s, "b", pub, 1, err), err);
    CHECK_OK(store_set_acl(s, "b", pub, 1, err), err);
    CHECK_OK(docs_since(s, 3, &x, err), err);
    CHECK_INT(x.n, 1);
    CHECK_INT(x.row[0].doc, kb);
    CHECK_INT(x.row[0].counter, 4);
    CHECK(!x.row[0].fts_rewritten);
    CHECK_INT(x.row[0].nacl, 1);
    CHECK_STR(x.row[0].acl[0], "public");

    /* fields only (5), then a new title under the same chunk ids (6) */
    a.doc.metadata_json = "{\"dept\":\"hr\"}";
    CHECK_OK(put(s, &a, &r, err), err);
    CHECK_INT(r, STORE_ACL_UPDATED);
    CHECK_OK(docs_since(s, 4, &x, err), err);
    CHECK_INT(x.n, 1);
    CHECK(x.row[0].doc == ka && x.row[0].counter == 5 && !x.row[0].fts_rewritten);
    a.doc.title = "Expense handbook";
    CHECK_OK(put(s, &a, &r, err), err);
    CHECK_INT(r, STORE_UPDATED);
    CHECK_OK(docs_since(s, 5, &x, err), err);
    CHECK_INT(x.n, 1);
    CHECK(x.row[0].doc == ka && x.row[0].counter == 6 && x.row[0].fts_rewritten);
    CHECK_INT(x.row[0].nacl, 5);
    CHECK_OK(docs_since(s, 0, &x, err), err);
    CHECK_INT(x.n, 2);
    CHECK(x.row[0].fts_rewritten && !x.row[1].fts_rewritten);

    /* a later ACL change (7): the rewrite is reported to readers that had not seen it only */
    CHECK_OK(store_set_acl(s, "a", pub, 1, err), err);
    CHECK_OK(docs_since(s, 6, &x, err), err);
    CHECK_INT(x.n, 1);
    CHECK(x.row[0].counter == 7 && !x.row[0].fts_rewritten);
    CHECK_OK(docs_since(s, 5, &x, err), err);
    CHECK(x.n == 1 && x.row[0].counter == 7 && x.row[0].fts_rewritten);

    /* new content (8) is new chunk ids, not a rewrite */
    fixture b2;
    make_doc(&b2, "b", "Other", "Replaced zebra paragraph", pub, 1);
    CHECK_OK(put(s, &b2, &r, err), err);
    CHECK_INT(r, STORE_UPDATED);
    CHECK_OK(docs_since(s, 7, &x, err), err);
    CHECK(x.n == 1 && x.row[0].doc == kb && x.row[0].counter == 8 && !x.row[0].fts_rewritten);

    /* a deleted document is not reported (its chunks are, as deleted) */
    CHECK_OK(store_delete(s, "a", err), err);
    CHECK_OK(docs_since(s, 8, &x, err), err);
    CHECK_INT(x.n, 0);
    CHECK_OK(docs_since(s, 0, &x, err), err);
    CHECK(x.n == 1 && x.row[0].doc == kb);
    CHECK(no_reader(dir));
    int64_t now;
    CHECK_INT(store_docs_changed_since(s, 0, NULL, NULL, &now, err), QR_EINVAL);
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

static qr_status collect_key(void *ctx, int64_t doc, char *err)
{
    doc_changes *x = ctx;
    if (x->n == 16)
        return qr_fail(err, QR_EINTERNAL, "too many keys");
    x->row[x->n++].doc = doc;
    return QR_OK;
}

TEST(principal_docs_lists_keys_ascending)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    const char *fin[] = {"group:finance"}, *both[] = {"user:bob", "group:finance"}, *bob[] = {"user:bob"};
    const char *ids[] = {"d1", "d2", "d3", "d4"};
    const char *const *acls[] = {fin, bob, both, fin};
    size_t nacls[] = {1, 1, 2, 1};
    fixture f;
    store_put_result r;
    for (int i = 3; i >= 0; i--) { /* keys in the opposite order of doc ids */
        char text[64];
        snprintf(text, sizeof(text), "Document number %d", i);
        make_doc(&f, ids[i], "Doc", text, acls[i], nacls[i]);
        CHECK_OK(put(s, &f, &r, err), err);
    }
    doc_changes x = {0};
    int64_t now = -1;
    CHECK_OK(store_principal_docs(s, "group:finance", collect_key, &x, &now, err), err);
    CHECK_INT(now, 4);
    CHECK_INT(x.n, 3);
    int64_t want[] = {doc_key(db, "d4"), doc_key(db, "d3"), doc_key(db, "d1")};
    for (size_t i = 0; i < 3; i++)
        CHECK_INT(x.row[i].doc, want[i]);
    CHECK(want[0] < want[1] && want[1] < want[2]);

    CHECK_OK(store_delete(s, "d3", err), err);
    memset(&x, 0, sizeof(x));
    CHECK_OK(store_principal_docs(s, "group:finance", collect_key, &x, &now, err), err);
    CHECK_INT(now, 5);
    CHECK(x.n == 2 && x.row[0].doc == want[0] && x.row[1].doc == want[2]);
    memset(&x, 0, sizeof(x));
    CHECK_OK(store_principal_docs(s, "user:nobody", collect_key, &x, &now, err), err);
    CHECK_INT(x.n, 0);
    /* group:Finance is another principal: compared byte for byte */
    CHECK_OK(store_principal_docs(s, "group:Finance", collect_key, &x, &now, err), err);
    CHECK_INT(x.n, 0);

    CHECK_INT(store_principal_docs(s, "finance", collect_key, &x, &now, err), QR_EINVAL);
    CHECK_INT(store_principal_docs(s, "user: bob", collect_key, &x, &now, err), QR_EINVAL);
    CHECK_INT(store_principal_docs(s, NULL, collect_key, &x, &now, err), QR_EINVAL);
    CHECK_INT(store_principal_docs(s, "public", NULL, &x, &now, err), QR_EINVAL);
    CHECK(no_reader(dir));
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

TEST(schema_1_store_migrates)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture a, b;
    store_put_result r;
    make_doc(&a, "a", "Travel policy", TEXT1, ACL_AB, 3);
    make_doc(&b, "b", "Other", "Unrelated zebra paragraph", NULL, 0);
    CHECK_OK(put(s, &a, &r, err), err);
    CHECK_OK(put(s, &b, &r, err), err);
    store_close(s);

    /* take the file back to schema 1: the full-text index in the database (external content, read
     * from a view), without quarry.fts ... */
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    CHECK(raw_exec(db, "DETACH DATABASE fts"));
    char fpath[600];
    snprintf(fpath, sizeof(fpath), "%s/quarry.fts", dir);
    CHECK(unlink(fpath) == 0);
    CHECK(raw_exec(db, "DROP TABLE fts_gone; DELETE FROM schema_version WHERE version = 5;"
                       "CREATE VIEW chunks_fts_source AS SELECT c.id AS id, d.title AS title,"
                       " c.headings AS headings, c.body AS body, c.doc AS doc"
                       " FROM chunks c JOIN documents d ON d.id = c.doc;"
                       "CREATE VIRTUAL TABLE chunks_fts USING fts5(title, headings, body,"
                       " content = 'chunks_fts_source', content_rowid = 'id', tokenize = 'porter unicode61');"
                       "INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')"));
    CHECK_INT(raw_int(db, "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'zebra'"), 1);
    /* ... and the vectors in a table of the database, as they were given */
    CHECK(raw_exec(db, "CREATE TABLE vectors(chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE"
                       " CASCADE, vec BLOB NOT NULL); DELETE FROM schema_version WHERE version = 4"));
    const fixture *both[] = {&a, &b};
    for (int d = 0; d < 2; d++) {
        sqlite3_stmt *q = NULL;
        CHECK(
            sqlite3_prepare_v2(db,
                               "INSERT INTO vectors SELECT c.id, ?2 FROM chunks c JOIN documents d ON d.id ="
                               " c.doc WHERE d.doc_id = ?1 AND c.ordinal = ?3",
                               -1, &q, NULL) == SQLITE_OK);
        for (size_t i = 0; i < both[d]->nchunks; i++) {
            sqlite3_bind_text(q, 1, both[d]->doc.doc_id, -1, SQLITE_STATIC);
            sqlite3_bind_blob(q, 2, &both[d]->vectors[i * DIM], DIM * sizeof(float), SQLITE_STATIC);
            sqlite3_bind_int64(q, 3, (int64_t)i);
            CHECK(sqlite3_step(q) == SQLITE_DONE && sqlite3_changes(db) == 1);
            sqlite3_reset(q);
        }
        sqlite3_finalize(q);
    }
    char vpath[600];
    snprintf(vpath, sizeof(vpath), "%s/quarry.vec", dir);
    CHECK(unlink(vpath) == 0);
    CHECK(raw_exec(db, "DROP TABLE job_results; DROP TABLE jobs;"
                       "DELETE FROM schema_version WHERE version = 3;"
                       "DROP INDEX documents_changed;"
                       "DELETE FROM meta WHERE key = 'store_uid';"
                       "ALTER TABLE documents DROP COLUMN fts_changed;"
                       "ALTER TABLE documents DROP COLUMN changed;"
                       "DELETE FROM schema_version WHERE version = 2"));
    CHECK_INT(raw_int(db, "SELECT max(version) FROM schema_version"), 1);

    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_INT(raw_int(db, "SELECT max(version) FROM schema_version"), 5);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name IN ('jobs', 'job_results')"), 2);
    /* the full-text index moved into quarry.fts, every chunk indexed there again */
    CHECK_INT(
        raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name IN ('chunks_fts', 'chunks_fts_source')"),
        0);
    CHECK_INT(fts_count_dir(dir, "zebra"), 1);
    CHECK_INT(fts_count_dir(dir, "title:travel"), (int64_t)a.nchunks);
    /* the vectors moved into their file, normalised */
    CHECK_INT(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'vectors'"), 0);
    CHECK_INT(vec_rows(dir, db, DIM), (int64_t)(a.nchunks + b.nchunks));
    for (int d = 0; d < 2; d++) {
        int64_t ids[16];
        size_t n;
        CHECK_INT(chunk_ids(s, both[d]->doc.doc_id, ids, &n), 0);
        for (size_t i = 0; i < n; i++) {
            float v[DIM], want[DIM];
            CHECK_OK(store_get_vector(s, ids[i], v, DIM, err), err);
            normalised(&both[d]->vectors[i * DIM], want, DIM);
            for (int k = 0; k < DIM; k++)
                CHECK(fabsf(v[k] - want[k]) < 1e-6f);
        }
    }
    CHECK_INT(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'documents_changed'"), 1);
    /* documents of unknown history count as changed at the counter of the migration */
    doc_changes x;
    CHECK_OK(docs_since(s, 1, &x, err), err);
    CHECK_INT(x.n, 2);
    CHECK(x.row[0].counter == 2 && x.row[0].fts_rewritten && x.row[0].nacl == 2);
    CHECK(x.row[1].counter == 2 && x.row[1].fts_rewritten && x.row[1].nacl == 0);
    CHECK_OK(docs_since(s, 2, &x, err), err);
    CHECK_INT(x.n, 0);
    /* and from there on every write stamps its documents */
    const char *pub[] = {"public"};
    CHECK_OK(store_set_acl(s, "b", pub, 1, err), err);
    CHECK_OK(docs_since(s, 2, &x, err), err);
    CHECK(x.n == 1 && x.row[0].doc == doc_key(db, "b") && x.row[0].counter == 3 && !x.row[0].fts_rewritten);
    CHECK_OK(store_verify(s, err), err);
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

/* ---- bad input --------------------------------------------------------------------------- */

typedef void (*mutate_fn)(fixture *f);

static void m_empty_id(fixture *f)
{
    f->doc.doc_id = "";
}
static void m_null_id(fixture *f)
{
    f->doc.doc_id = NULL;
}
static void m_control_id(fixture *f)
{
    f->doc.doc_id = "docs/a\nb";
}
static void m_tab_id(fixture *f)
{
    f->doc.doc_id = "a\tb";
}
static void m_c1_id(fixture *f)
{
    f->doc.doc_id = "a\xc2\x9b[31m";
}
static void m_invalid_utf8_id(fixture *f)
{
    f->doc.doc_id = "caf\xe9";
}
static void m_long_id(fixture *f)
{
    static char id[STORE_DOC_ID_MAX + 2];
    memset(id, 'x', sizeof(id) - 1);
    f->doc.doc_id = id;
}
static void m_invalid_utf8_text(fixture *f)
{
    f->text[3] = (char)0xff;
}
static void m_overlong_text(fixture *f)
{
    f->text[3] = (char)0xc0; /* overlong encoding of '/' */
    f->text[4] = (char)0xaf;
}
static void m_nul_text(fixture *f)
{
    f->text[5] = '\0';
}
static void m_offsets_outside(fixture *f)
{
    f->chunks[2].end = f->doc.text_len + 1;
}
static void m_empty_chunk(fixture *f)
{
    f->chunks[1].end = f->chunks[1].start;
}
static void m_reversed_chunk(fixture *f)
{
    f->chunks[1].start = f->chunks[1].end + 1;
}
static void m_split_char(fixture *f)
{
    /* "café" at the start: the é is bytes 3..4 */
    memcpy(f->text, "café", 5);
    f->text[5] = ' ';
    f->chunks[0].end = 4;
}
static void m_bad_headings(fixture *f)
{
    f->chunks[1].headings = "A > \x1b[2JB";
}
static void m_none(fixture *f)
{
    (void)f; /* the case differs in its vectors or dimension */
}
static void m_nan_vector(fixture *f)
{
    f->vectors[5] = NAN;
}
static void m_inf_vector(fixture *f)
{
    f->vectors[0] = INFINITY;
}
static void m_bad_principal(fixture *f)
{
    static const char *acl[] = {"user:alice", "admins"};
    f->doc.acl = acl;
    f->doc.nacl = 2;
}
static void m_null_acl(fixture *f)
{
    f->doc.acl = NULL;
    f->doc.nacl = 2;
}
static void m_metadata_array(fixture *f)
{
    f->doc.metadata_json = "[1, 2]";
}
static void m_metadata_invalid(fixture *f)
{
    f->doc.metadata_json = "{\"a\": 1";
}
static void m_metadata_injection(fixture *f)
{
    f->doc.metadata_json = "{}'); DROP TABLE documents; --";
}
static void m_short_hash(fixture *f)
{
    f->hash[63] = '\0';
}
static void m_nonhex_hash(fixture *f)
{
    f->hash[10] = 'g';
}
static void m_null_hash(fixture *f)
{
    f->doc.content_hash = NULL;
}
static void m_control_title(fixture *f)
{
    f->doc.title = "Title\r\nInjected: header";
}
static void m_null_text_new_doc(fixture *f)
{
    f->doc.text = NULL;
    f->doc.text_len = 0;
    f->nchunks = 0;
}

TEST(bad_input_changes_nothing)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture base;
    store_put_result r;
    make_doc(&base, "kept", "Travel policy", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &base, &r, err), err);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    int64_t data_version = raw_int(db, "PRAGMA data_version"), counter = counter_of(s);

    static const struct {
        const char *name;
        mutate_fn fn;
        int dim; /* 0: DIM */
        bool no_vectors;
        qr_status want;
        const char *in_message;
    } cases[] = {
        {"empty doc id", m_empty_id, 0, false, QR_EINVAL, "doc_id: empty"},
        {"NULL doc id", m_null_id, 0, false, QR_EINVAL, "doc_id"},
        {"newline in doc id", m_control_id, 0, false, QR_EINVAL, "control character"},
        {"tab in doc id", m_tab_id, 0, false, QR_EINVAL, "control character"},
        {"C1 control in doc id", m_c1_id, 0, false, QR_EINVAL, "control character"},
        {"invalid UTF-8 doc id", m_invalid_utf8_id, 0, false, QR_EINVAL, "UTF-8"},
        {"over-long doc id", m_long_id, 0, false, QR_ELIMIT, "doc_id"},
        {"invalid UTF-8 text", m_invalid_utf8_text, 0, false, QR_EINVAL, "not valid UTF-8"},
        {"overlong UTF-8 text", m_overlong_text, 0, false, QR_EINVAL, "not valid UTF-8"},
        {"NUL in text", m_nul_text, 0, false, QR_EINVAL, "NUL"},
        {"chunk past the text", m_offsets_outside, 0, false, QR_EINVAL, "chunk 2"},
        {"empty chunk", m_empty_chunk, 0, false, QR_EINVAL, "chunk 1"},
        {"reversed chunk", m_reversed_chunk, 0, false, QR_EINVAL, "chunk 1"},
        {"chunk splits a character", m_split_char, 0, false, QR_EINVAL, "splits a UTF-8 character"},
        {"escape sequence in headings", m_bad_headings, 0, false, QR_EINVAL, "headings of chunk 1"},
        {"NULL vectors", m_none, 0, true, QR_EINVAL, "no vectors"},
        {"zero dimension", m_none, -1, false, QR_EINVAL, "dimension 0"},
        {"wrong dimension", m_none, 3, false, QR_EINVAL, "dimension 3"},
        {"NaN in a vector", m_nan_vector, 0, false, QR_EINVAL, "chunk 1 has a non-finite"},
        {"infinity in a vector", m_inf_vector, 0, false, QR_EINVAL, "chunk 0 has a non-finite"},
        {"invalid principal", m_bad_principal, 0, false, QR_EINVAL, "'admins'"},
        {"NULL ACL with a count", m_null_acl, 0, false, QR_EINVAL, "ACL"},
        {"metadata array", m_metadata_array, 0, false, QR_EINVAL, "JSON object, not array"},
        {"metadata not JSON", m_metadata_invalid, 0, false, QR_EINVAL, "not valid JSON"},
        {"metadata with SQL", m_metadata_injection, 0, false, QR_EINVAL, "not valid JSON"},
        {"short hash", m_short_hash, 0, false, QR_EINVAL, "content_hash"},
        {"non-hex hash", m_nonhex_hash, 0, false, QR_EINVAL, "content_hash"},
        {"NULL hash", m_null_hash, 0, false, QR_EINVAL, "content_hash"},
        {"control characters in title", m_control_title, 0, false, QR_EINVAL, "title"},
        {"no text for new content", m_null_text_new_doc, 0, false, QR_EINVAL, "text is required"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fixture f;
        /* another text than "kept": another hash, so the stored document is not "the same content" */
        make_doc(&f, "new-doc", "Some title", "A first line\nA second line with caf\xc3\xa9\nA third line",
                 ACL_AB, 3);
        cases[i].fn(&f);
        int dim = cases[i].dim == 0 ? DIM : cases[i].dim < 0 ? 0 : cases[i].dim;
        err[0] = '\0';
        qr_status st =
            store_put(s, &f.doc, f.chunks, f.nchunks, cases[i].no_vectors ? NULL : f.vectors, dim, &r, err);
        CHECK_MSG(st == cases[i].want, "%s: status %d (%s), want %d", cases[i].name, st, err, cases[i].want);
        CHECK_MSG(strstr(err, cases[i].in_message), "%s: message '%s' lacks '%s'", cases[i].name, err,
                  cases[i].in_message);
        /* the same bad input against the stored document's id must not touch it either */
        if (f.doc.doc_id && strcmp(f.doc.doc_id, "new-doc") == 0) {
            f.doc.doc_id = "kept";
            st = store_put(s, &f.doc, f.chunks, f.nchunks, cases[i].no_vectors ? NULL : f.vectors, dim, &r,
                           err);
            CHECK_MSG(st != QR_OK, "%s: accepted for the stored document", cases[i].name);
        }
        CHECK_MSG(raw_int(db, "PRAGMA data_version") == data_version, "%s: the database changed",
                  cases[i].name);
    }
    CHECK_INT(counter_of(s), counter);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM documents"), 1);

    /* the other entry points refuse bad ids the same way */
    char hash[65];
    bool found;
    CHECK_INT(store_get_hash(s, "", hash, &found, err), QR_EINVAL);
    CHECK_INT(store_get_hash(s, "a\x01", hash, &found, err), QR_EINVAL);
    CHECK_INT(store_delete(s, "a\nb", err), QR_EINVAL);
    CHECK_INT(store_delete(s, NULL, err), QR_EINVAL);
    CHECK_INT(store_set_acl(s, "", NULL, 0, err), QR_EINVAL);
    store_doc_info *d = NULL;
    CHECK_INT(store_get_document(s, "\xff", false, &d, err), QR_EINVAL);
    CHECK_INT(store_set_index_generation(s, 5, err), QR_OK);
    CHECK_INT(store_set_index_generation(s, 4, err), QR_EINVAL);
    CHECK_INT(counter_of(s), counter); /* generations are not content changes */
    CHECK_INT(raw_int(db, "SELECT count(*) FROM documents"), 1);
    CHECK_OK(store_verify(s, err), err);
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

TEST(sql_injection_is_stored_as_data)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    const char *id = "x'); DROP TABLE documents; --";
    const char *title = "Robert'); DELETE FROM chunks WHERE ('1'='1";
    const char *meta = "{\"q\": \"'; DROP TABLE acl; --\", \"n\": \"\\\"\"}";
    /* lower case: ACL names are stored lower-cased (SQL reads the statement the same either way) */
    const char *acl[] = {"group:'; drop table acl; --"};
    fixture f;
    store_put_result r;
    make_doc(&f, id, title, TEXT1, acl, 1);
    f.doc.metadata_json = meta;
    CHECK_OK(put(s, &f, &r, err), err);
    CHECK_INT(r, STORE_ADDED);
    store_doc_info *d = NULL;
    CHECK_OK(store_get_document(s, id, true, &d, err), err);
    CHECK_STR(d->doc_id, id);
    CHECK_STR(d->title, title);
    CHECK_STR(d->acl[0], acl[0]);
    CHECK_STR(d->metadata_json, "{\"q\":\"'; DROP TABLE acl; --\",\"n\":\"\\\"\"}");
    CHECK_INT(d->nchunks, 3);
    store_doc_info_free(d);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name IN ('documents', 'chunks', 'acl')"),
              3);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM chunks"), 3);
    CHECK_OK(store_delete(s, id, err), err);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM documents"), 0);
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

/* ---- failures while writing, and batches ------------------------------------------------ */

static bool doc_exists(store *s, const char *doc_id)
{
    char err[QR_ERR_LEN], hash[65];
    bool found = false;
    return !store_get_hash(s, doc_id, hash, &found, err) && found;
}

TEST(failure_mid_write_leaves_nothing)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture f, poisoned;
    store_put_result r;
    make_doc(&f, "d1", "Travel policy", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &f, &r, err), err);
    int64_t ids[16], ids2[16];
    size_t n, n2;
    CHECK_INT(chunk_ids(s, "d1", ids, &n), 0);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    /* SQLite refuses the second chunk of a document, after the document row and the first chunk
     * were written: the stand-in for an I/O error or a full disk in the middle of a put */
    CHECK(raw_exec(db, "CREATE TRIGGER poison BEFORE INSERT ON chunks WHEN NEW.body LIKE '%POISON%'"
                       " BEGIN SELECT RAISE(ABORT, 'poisoned chunk'); END"));
    int64_t counter = counter_of(s), data_version = raw_int(db, "PRAGMA data_version");
    make_doc(&poisoned, "d2", "New", "A fine first chunk\nA POISON second chunk", NULL, 0);
    CHECK(put(s, &poisoned, &r, err) != QR_OK);
    CHECK_MSG(strstr(err, "poisoned chunk") && strstr(err, "quarry.db"), "%s", err);
    CHECK(!doc_exists(s, "d2"));
    /* new content for a stored document fails the same way: the old version stays whole */
    poisoned.doc.doc_id = "d1";
    CHECK(put(s, &poisoned, &r, err) != QR_OK);
    CHECK_INT(chunk_ids(s, "d1", ids2, &n2), 0);
    CHECK(n2 == n && memcmp(ids, ids2, n * sizeof(ids[0])) == 0);
    CHECK_INT(counter_of(s), counter);
    CHECK_INT(raw_int(db, "PRAGMA data_version"), data_version);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM chunks"), 3);
    CHECK_OK(store_verify(s, err), err);
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

/* A full disk, as a file size limit of one byte stands in for it (no file may grow; SIGXFSZ
 * ignored, as quarry serve does): the write is refused as QR_ENOSPC, naming the cause, nothing of
 * it is stored, and once the limit is lifted writes go on and the store is whole. */
TEST(full_disk_refuses_writes_with_no_space)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture f1, f2;
    store_put_result r;
    make_doc(&f1, "d1", "Travel policy", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &f1, &r, err), err);
    int64_t counter = counter_of(s);
    struct rlimit old;
    CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit tiny = {1, old.rlim_max};
    CHECK(setrlimit(RLIMIT_FSIZE, &tiny) == 0);
    make_doc(&f2, "d2", "New", "A second document\nwith two chunks of its own text", NULL, 0);
    qr_status st = put(s, &f2, &r, err);
    qr_status st_acl = store_set_acl(s, "d1", (const char *[]){"public"}, 1, NULL);
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    signal(SIGXFSZ, old_handler);
    CHECK_INT(st, QR_ENOSPC);
    CHECK_MSG(strstr(err, "file system is full") && strstr(err, "quarry.db"), "%s", err);
    CHECK_INT(st_acl, QR_ENOSPC);
    CHECK(!doc_exists(s, "d2"));
    CHECK_INT(counter_of(s), counter);
    CHECK_OK(put(s, &f2, &r, err), err);
    CHECK_INT(r, STORE_ADDED);
    CHECK_OK(store_verify(s, err), err);
    store_close(s);
    rm_tree(dir);
}

TEST(batch_commits_and_fails_as_a_whole)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err), *reader = NULL;
    CHECK_MSG(s, "%s", err);
    CHECK_OK(store_open(dir, &reader, err), err);
    fixture f1, f2, bad, poisoned;
    store_put_result r;
    make_doc(&f1, "d1", "Travel policy", TEXT1, ACL_AB, 3);
    make_doc(&f2, "d2", "Other", "Unrelated zebra paragraph", NULL, 0);
    CHECK_INT(store_batch_commit(s, err), QR_EINVAL);

    CHECK_OK(store_batch_begin(s, err), err);
    CHECK_INT(store_batch_begin(s, err), QR_EINVAL);
    CHECK_OK(put(s, &f1, &r, err), err);
    CHECK_INT(r, STORE_ADDED);
    CHECK_OK(put(s, &f2, &r, err), err);
    const char *acl[] = {"public"};
    CHECK_OK(store_set_acl(s, "d2", acl, 1, err), err);
    /* failures before writing leave the batch open */
    CHECK_INT(store_delete(s, "absent", err), QR_ENOTFOUND);
    make_doc(&bad, "d3", "Bad", TEXT1, NULL, 0);
    bad.doc.doc_id = "bad\nid";
    CHECK_INT(put(s, &bad, &r, err), QR_EINVAL);
    /* the writer sees its batch, other handles see nothing until it commits */
    CHECK(doc_exists(s, "d1"));
    CHECK(!doc_exists(reader, "d1"));
    CHECK_INT(counter_of(reader), 0);
    CHECK_OK(store_batch_commit(s, err), err);
    CHECK(doc_exists(reader, "d1") && doc_exists(reader, "d2"));
    CHECK_INT(counter_of(reader), 3);
    CHECK_OK(store_verify(reader, err), err);

    /* a failure while writing rolls the whole batch back */
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    CHECK(raw_exec(db, "CREATE TRIGGER poison BEFORE INSERT ON chunks WHEN NEW.body LIKE '%POISON%'"
                       " BEGIN SELECT RAISE(ABORT, 'poisoned chunk'); END"));
    sqlite3_close(db);
    fixture f4, f6;
    make_doc(&f4, "d4", "Four", "Fourth document text", NULL, 0);
    make_doc(&f6, "d6", "Six", "Sixth document text", NULL, 0);
    make_doc(&poisoned, "d5", "Five", "A fine first chunk\nA POISON second chunk", NULL, 0);
    CHECK_OK(store_batch_begin(s, err), err);
    CHECK_OK(put(s, &f4, &r, err), err);
    CHECK_OK(store_delete(s, "d2", err), err);
    CHECK(put(s, &poisoned, &r, err) != QR_OK);
    CHECK_MSG(strstr(err, "poisoned chunk") && strstr(err, "batch was rolled back"), "%s", err);
    qr_status st = put(s, &f6, &r, err);
    CHECK(st != QR_OK);
    CHECK_MSG(strstr(err, "rolled back by an earlier failure") && strstr(err, "poisoned chunk"), "%s", err);
    CHECK_INT(store_batch_commit(s, err), st);
    CHECK_MSG(strstr(err, "batch was rolled back") && strstr(err, "poisoned chunk"), "%s", err);
    CHECK(!doc_exists(s, "d4") && !doc_exists(s, "d5") && !doc_exists(s, "d6"));
    CHECK(doc_exists(s, "d2"));
    CHECK_INT(counter_of(s), 3);
    /* the handle works normally again */
    CHECK_OK(put(s, &f4, &r, err), err);
    CHECK_INT(counter_of(s), 4);

    /* explicit rollback, and close with an open batch */
    CHECK_OK(store_batch_begin(s, err), err);
    CHECK_OK(put(s, &f6, &r, err), err);
    store_batch_rollback(s);
    store_batch_rollback(s); /* no batch: a no-op */
    CHECK(!doc_exists(s, "d6"));
    CHECK_OK(store_batch_begin(s, err), err);
    CHECK_OK(put(s, &f6, &r, err), err);
    store_close(s);
    CHECK(!doc_exists(reader, "d6"));
    CHECK_INT(counter_of(reader), 4);
    CHECK_OK(store_verify(reader, err), err);
    store_close(reader);
    rm_tree(dir);
}

/* Bad input refused right after a write of the same batch (whose call had set the handle's
 * "wrote" flag) still leaves the batch open, as store_batch_begin says. */
TEST(batch_bad_input_right_after_a_write)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture f1, bad;
    store_put_result r;
    make_doc(&f1, "d1", "Travel policy", TEXT1, ACL_AB, 3);
    make_doc(&bad, "d2", "Bad", TEXT1, NULL, 0);
    bad.doc.doc_id = "bad\nid";
    CHECK_OK(store_batch_begin(s, err), err);
    CHECK_OK(put(s, &f1, &r, err), err);
    CHECK_INT(put(s, &bad, &r, err), QR_EINVAL);
    CHECK_MSG(!strstr(err, "rolled back"), "%s", err);
    CHECK(store_in_batch(s));
    CHECK_OK(store_batch_commit(s, err), err);
    CHECK(doc_exists(s, "d1"));
    CHECK_INT(counter_of(s), 1);
    store_close(s);
    rm_tree(dir);
}

/* ---- bulk loads: a VFS that counts what reaches the disk -------------------------------- */

/* A shim over the default VFS that forwards every call and counts, per kind of file, the syncs
 * and the writes since the last sync: what store_bulk_end promises is visible only there. */
typedef struct {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file, right after this struct */
    bool wal;
    bool fts; /* a file of the full-text index (quarry.fts, its WAL) */
} count_file;

static sqlite3_vfs *count_real;
static sqlite3_vfs count_vfs;
static pthread_t count_thread; /* the test's own thread: the store's writer */
/* syncs of the store's WAL by the writer's thread and by others (bulk mode's checkpointing
 * thread), WAL writes since its last sync by anyone, syncs of the database file; the same for the
 * full-text index's WAL (quarry.fts-wal), by any thread */
static _Atomic int wal_syncs, other_wal_syncs, wal_writes_unsynced, db_syncs;
/* of wal_syncs, those of a WAL header just written (offset 0): SQLite syncs the header of a WAL
 * that starts over even under synchronous=NORMAL, whenever a checkpoint has copied it all */
static _Atomic int wal_header_syncs;
static _Atomic bool wal_header_written;
static _Atomic int fts_wal_syncs, fts_wal_writes_unsynced;
/* the threads that wrote the full-text index's WAL, and the syncs of quarry.fts itself (a
 * checkpoint's) by a thread that never did */
#define COUNT_WRITERS 16
static pthread_t fts_wal_writers[COUNT_WRITERS];
static int n_fts_wal_writers;
static pthread_mutex_t fts_writers_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int fts_db_syncs_apart;

static bool fts_wal_writer_is(pthread_t t)
{
    for (int i = 0; i < n_fts_wal_writers; i++)
        if (pthread_equal(fts_wal_writers[i], t))
            return true;
    return false;
}

#define REAL(f) (((count_file *)(f))->real)
static int cf_close(sqlite3_file *f)
{
    int rc = REAL(f)->pMethods->xClose(REAL(f));
    f->pMethods = NULL;
    return rc;
}
static int cf_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o)
{
    return REAL(f)->pMethods->xRead(REAL(f), b, n, o);
}
static int cf_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
    if (((count_file *)f)->wal && ((count_file *)f)->fts) {
        fts_wal_writes_unsynced++;
        pthread_mutex_lock(&fts_writers_mu);
        if (!fts_wal_writer_is(pthread_self()) && n_fts_wal_writers < COUNT_WRITERS)
            fts_wal_writers[n_fts_wal_writers++] = pthread_self();
        pthread_mutex_unlock(&fts_writers_mu);
    } else if (((count_file *)f)->wal) {
        wal_writes_unsynced++;
        wal_header_written = o == 0;
    }
    return REAL(f)->pMethods->xWrite(REAL(f), b, n, o);
}
static int cf_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int cf_sync(sqlite3_file *f, int flags)
{
    if (((count_file *)f)->fts) {
        if (((count_file *)f)->wal) {
            fts_wal_syncs++;
            fts_wal_writes_unsynced = 0;
        } else {
            pthread_mutex_lock(&fts_writers_mu);
            if (!fts_wal_writer_is(pthread_self()))
                fts_db_syncs_apart++;
            pthread_mutex_unlock(&fts_writers_mu);
        }
    } else if (((count_file *)f)->wal) {
        if (pthread_equal(pthread_self(), count_thread)) {
            wal_syncs++;
            if (wal_header_written)
                wal_header_syncs++;
        } else {
            other_wal_syncs++;
        }
        wal_writes_unsynced = 0;
    } else {
        db_syncs++;
    }
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int cf_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int cf_lock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int cf_unlock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int cf_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int cf_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int cf_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int cf_device(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int cf_shm_map(sqlite3_file *f, int i, int size, int extend, void volatile **p)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), i, size, extend, p);
}
static int cf_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void cf_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int cf_shm_unmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int cf_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **p)
{
    return REAL(f)->pMethods->xFetch(REAL(f), o, n, p);
}
static int cf_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), o, p);
}
static const sqlite3_io_methods count_io = {
    3,           cf_close,       cf_read,      cf_write,   cf_truncate, cf_sync,   cf_size,
    cf_lock,     cf_unlock,      cf_reserved,  cf_control, cf_sector,   cf_device, cf_shm_map,
    cf_shm_lock, cf_shm_barrier, cf_shm_unmap, cf_fetch,   cf_unfetch,
};

static int cf_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    (void)vfs;
    count_file *c = (count_file *)f;
    c->real = (sqlite3_file *)(c + 1);
    c->wal = (flags & SQLITE_OPEN_WAL) != 0;
    c->fts = name && strstr(name, "quarry.fts") != NULL;
    int rc = count_real->xOpen(count_real, name, c->real, flags, out_flags);
    f->pMethods = c->real->pMethods ? &count_io : NULL;
    return rc;
}

/* Makes the counting VFS the default (the store opens its files through it). */
static void count_vfs_install(void)
{
    count_thread = pthread_self();
    /* a thread that has ended may lend its id to a new one: only this test's writers count */
    n_fts_wal_writers = 0;
    count_real = sqlite3_vfs_find(NULL);
    count_vfs = *count_real;
    count_vfs.zName = "quarry-test-count";
    count_vfs.szOsFile = (int)sizeof(count_file) + count_real->szOsFile;
    count_vfs.xOpen = cf_open;
    sqlite3_vfs_register(&count_vfs, 1);
}

static void count_vfs_remove(void)
{
    sqlite3_vfs_register(count_real, 1);
    sqlite3_vfs_unregister(&count_vfs);
}

TEST(bulk_load_ends_with_a_synced_commit)
{
    count_vfs_install();
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err), *reader = NULL;
    CHECK_MSG(s, "%s", err);
    fixture f[4];
    store_put_result r;
    make_doc(&f[0], "d1", "Travel policy", TEXT1, ACL_AB, 3);
    make_doc(&f[1], "d2", "Other", "Unrelated zebra paragraph", NULL, 0);
    make_doc(&f[2], "d3", "Third", "A third text\nwith two chunks", NULL, 0);
    make_doc(&f[3], "d4", "Fourth", "The fourth text", NULL, 0);

    /* the counter works: outside bulk mode each commit syncs the WAL, and nothing stays unsynced;
     * the full-text follower's commit after it syncs the index's */
    int before = wal_syncs, fts_before = fts_wal_syncs;
    CHECK_OK(store_batch_begin(s, err), err);
    CHECK_OK(put(s, &f[0], &r, err), err);
    CHECK_OK(store_batch_commit(s, err), err);
    CHECK_INT(wal_syncs, before + 1);
    CHECK_INT(wal_writes_unsynced, 0);
    CHECK_INT(fts_wal_syncs, fts_before + 1);
    CHECK_INT(fts_wal_writes_unsynced, 0);

    /* bulk mode: batches commit without a sync of their frames on the writer's thread (the
     * checkpointing thread's syncs come when they come, and so does the header's of a WAL that
     * starts over after one), yet a reader sees them */
    CHECK_OK(store_bulk_begin(s, err), err);
    CHECK_OK(store_bulk_begin(s, err), err); /* already on: a no-op */
    before = wal_syncs;
    int headers_before = wal_header_syncs;
    int db_before = db_syncs;
    for (int b = 1; b < 4; b++) {
        CHECK_OK(store_batch_begin(s, err), err);
        CHECK_INT(store_bulk_end(s, err), QR_EINVAL); /* not inside a batch */
        CHECK_OK(put(s, &f[b], &r, err), err);
        CHECK_INT(r, STORE_ADDED);
        CHECK_OK(store_batch_commit(s, err), err);
    }
    CHECK_INT(wal_syncs - wal_header_syncs, before - headers_before);
    CHECK_OK(store_open(dir, &reader, err), err);
    CHECK(doc_exists(reader, "d4"));
    CHECK_INT(counter_of(reader), 4);
    /* which the full-text index follows (bulk mode's thread, or the reader's opening) */
    CHECK_INT(fts_count_dir(dir, "fourth"), 1);

    /* the end is one synced commit after the last frame: the whole load is on disk, and the
     * checkpointing thread has copied it into the database file and synced that */
    CHECK_OK(store_bulk_end(s, err), err);
    CHECK(wal_syncs > before); /* two when the WAL started over: its header is synced too */
    CHECK_INT(wal_writes_unsynced, 0);
    CHECK_INT(fts_wal_writes_unsynced, 0); /* and the index's last catch-up */
    before = wal_syncs;
    CHECK_MSG(other_wal_syncs > 0 && db_syncs > db_before, "checkpoints: %d WAL syncs, %d database syncs",
              (int)other_wal_syncs, db_syncs - db_before);
    CHECK_INT(counter_of(reader), 4);      /* it changed nothing anyone reads */
    CHECK_OK(store_bulk_end(s, err), err); /* a second end is a no-op */
    CHECK_INT(wal_syncs, before);
    /* and the handle is back to a synced commit each */
    make_doc(&f[0], "d1", "Travel policy, new title", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &f[0], &r, err), err);
    CHECK_INT(r, STORE_UPDATED);
    CHECK(wal_syncs > before);
    CHECK_INT(wal_writes_unsynced, 0);
    CHECK_INT(fts_wal_writes_unsynced, 0);
    CHECK_INT(fts_count_dir(dir, "title:new"), (int64_t)f[0].nchunks);
    CHECK_INT(store_batch_begin(s, err), QR_OK);
    CHECK_INT(store_bulk_begin(s, err), QR_EINVAL); /* not inside a batch */
    store_batch_rollback(s);
    CHECK_OK(store_verify(reader, err), err);
    store_close(reader);
    store_close(s);
    count_vfs_remove();
    rm_tree(dir);
}

/* Bulk mode checkpoints the full-text index on a thread that never writes it (the full-text
 * thread goes on indexing meanwhile), and ends with the store's WAL copied and emptied (its file
 * is not left to be freed at close); a reader in another connection holding a snapshot is waited
 * for 0.1 s at most: the WAL then stays as it is. */
TEST(bulk_load_checkpoints_apart_and_empties_the_wal)
{
    count_vfs_install();
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    char wal[PATH_MAX];
    snprintf(wal, sizeof(wal), "%s/quarry.db-wal", dir);
    fixture f;
    store_put_result r;
    int apart = fts_db_syncs_apart;
    CHECK_OK(store_bulk_begin(s, err), err);
    for (int b = 0; b < 3; b++) {
        CHECK_OK(store_batch_begin(s, err), err);
        for (int i = 0; i < 20; i++) {
            char id[32];
            snprintf(id, sizeof(id), "b%d-%d", b, i);
            make_doc(&f, id, "Bulk", TEXT1, ACL_AB, 3);
            CHECK_OK(put(s, &f, &r, err), err);
        }
        CHECK_OK(store_batch_commit(s, err), err);
    }
    CHECK_OK(store_bulk_end(s, err), err);
    CHECK_MSG(fts_db_syncs_apart > apart, "%d syncs of quarry.fts by a thread that never wrote its WAL",
              fts_db_syncs_apart - apart);
    CHECK_INT(fts_count_dir(dir, "bulk"), 60 * (int64_t)f.nchunks);
    struct stat st;
    CHECK(stat(wal, &st) == 0);
    CHECK_INT(st.st_size, 0);

    /* again, with a reader's snapshot open in another connection: the end waits 0.1 s at most */
    sqlite3 *db = NULL;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/quarry.db", dir);
    CHECK_INT(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, "BEGIN; SELECT count(*) FROM documents", NULL, NULL, NULL), SQLITE_OK);
    CHECK_OK(store_bulk_begin(s, err), err);
    CHECK_OK(store_batch_begin(s, err), err);
    make_doc(&f, "late", "Late", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &f, &r, err), err);
    CHECK_OK(store_batch_commit(s, err), err);
    CHECK_OK(store_bulk_end(s, err), err);
    CHECK(stat(wal, &st) == 0 && st.st_size > 0);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK_OK(store_verify(s, err), err);
    store_close(s);
    count_vfs_remove();
    rm_tree(dir);
}

/* ---- FTS --------------------------------------------------------------------------------- */

TEST(fts_matches_stems_title_and_headings)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture f, g;
    store_put_result r;
    make_doc(&f, "d1", "Travel policy", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &f, &r, err), err);
    make_doc(&g, "d2", "Kantine", "Die Mitarbeiter essen gemeinsam\nDas Café öffnet früh", NULL, 0);
    CHECK_OK(put(s, &g, &r, err), err);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    /* porter: "run" finds "running", "reimburse" finds "reimbursed" */
    CHECK_INT(fts_count(db, "run"), 1);
    CHECK_INT(fts_count(db, "body:reimburse"), 1);
    CHECK_INT(fts_count(db, "approve"), 1); /* approval */
    /* the title is indexed with every chunk of its document, the heading path with its chunk */
    CHECK_INT(fts_count(db, "title:travel"), 3);
    CHECK_INT(fts_count(db, "title:travel AND hotels"), 1);
    CHECK_INT(fts_count(db, "headings:reimbursement"), 2); /* one chunk of each document */
    CHECK_INT(fts_count(db, "headings:reimbursement AND title:travel"), 1);
    CHECK_INT(fts_count(db, "body:travel"), 0);
    /* unicode61 folds case and diacritics */
    CHECK_INT(fts_count(db, "cafe"), 1);
    CHECK_INT(fts_count(db, "FRUH"), 1);
    /* rowids are chunk ids; the index keeps no copy of the text (contentless: the chunk table
     * holds it once) */
    CHECK_INT(raw_int(db, "SELECT count(*) FROM chunks_fts f JOIN chunks c ON c.id = f.rowid"
                          " WHERE chunks_fts MATCH 'audits' AND f.body IS NULL AND c.body LIKE 'Receipts%'"),
              1);
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

/* Copies the file src to dst (the store closed). */
static bool copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    char buf[65536];
    size_t n;
    bool ok = in && out;
    while (ok && (n = fread(buf, 1, sizeof(buf), in)) > 0)
        ok = fwrite(buf, 1, n, out) == n;
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        ok = false;
    return ok;
}

/* <dir>/<name> into out (size 600). */
static const char *in_dir(char *out, const char *dir, const char *name)
{
    if (snprintf(out, 600, "%s/%s", dir, name) >= 600)
        out[0] = '\0';
    return out;
}

/* One integer read raw from the store in dir (quarry.fts attached); -999 on error. */
static int64_t raw_int_in(const char *dir, const char *sql)
{
    sqlite3 *db = store_raw_open(dir, SQLITE_OPEN_READWRITE);
    int64_t v = db ? raw_int(db, sql) : -999;
    sqlite3_close(db);
    return v;
}

/* The full-text index's applied counter and the store's tombstones pruned through. */
static int64_t fts_applied_raw(const char *dir)
{
    return raw_int_in(dir, "SELECT value FROM fts.fts_meta WHERE key = 'applied'");
}

static int64_t fts_pruned_raw(const char *dir)
{
    return raw_int_in(dir, "SELECT coalesce((SELECT value FROM meta WHERE key = 'fts_pruned_through'), 0)");
}

/* Every kind of write is searchable as soon as it returns, and the index stays what indexing the
 * chunks again gives (store_verify compares them term by term). */
TEST(fts_follows_every_kind_of_write)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture a, b;
    store_put_result r;
    make_doc(&a, "a", "Travel policy", TEXT1, ACL_AB, 3);
    make_doc(&b, "b", "Canteen", "Lunch is served at noon\nThe zebra menu changes weekly", NULL, 0);
    CHECK_OK(put(s, &a, &r, err), err);
    CHECK_OK(put(s, &b, &r, err), err);
    CHECK_INT(fts_count_dir(dir, "audits"), 1);
    CHECK_INT(fts_count_dir(dir, "title:canteen"), 2);
    /* a new title, the same content: the rows are indexed again under the same chunk ids */
    make_doc(&b, "b", "Cafeteria", "Lunch is served at noon\nThe zebra menu changes weekly", NULL, 0);
    CHECK_OK(put(s, &b, &r, err), err);
    CHECK_INT(r, STORE_UPDATED);
    CHECK_INT(fts_count_dir(dir, "title:canteen"), 0);
    CHECK_INT(fts_count_dir(dir, "title:cafeteria"), 2);
    CHECK_OK(store_verify(s, err), err);
    /* new content: old chunks out, new ones in */
    make_doc(&a, "a", "Travel policy", "Economy class for flights under six hours", ACL_AB, 3);
    CHECK_OK(put(s, &a, &r, err), err);
    CHECK_INT(fts_count_dir(dir, "audits"), 0);
    CHECK_INT(fts_count_dir(dir, "economy"), 1);
    /* an ACL change touches no indexed text */
    const char *pub[] = {"public"};
    CHECK_OK(store_set_acl(s, "b", pub, 1, err), err);
    CHECK_INT(fts_count_dir(dir, "zebra"), 1);
    /* in one batch: retitled twice, then new content, and a document added then deleted */
    fixture c;
    make_doc(&c, "c", "Short lived", "A transient quokka note", NULL, 0);
    CHECK_OK(store_batch_begin(s, err), err);
    make_doc(&b, "b", "Dining hall", "Lunch is served at noon\nThe zebra menu changes weekly", NULL, 0);
    CHECK_OK(put(s, &b, &r, err), err);
    make_doc(&b, "b", "Mess", "Lunch is served at noon\nThe zebra menu changes weekly", NULL, 0);
    CHECK_OK(put(s, &b, &r, err), err);
    CHECK_OK(put(s, &c, &r, err), err);
    CHECK_OK(store_delete(s, "c", err), err);
    make_doc(&b, "b", "Mess", "Breakfast starts at seven\nThe zebra menu changes weekly\nNo quokka", NULL, 0);
    CHECK_OK(put(s, &b, &r, err), err);
    CHECK_OK(store_batch_commit(s, err), err);
    CHECK_INT(fts_count_dir(dir, "title:cafeteria OR title:dining"), 0);
    CHECK_INT(fts_count_dir(dir, "title:mess"), 3);
    CHECK_INT(fts_count_dir(dir, "quokka"), 1);
    CHECK_INT(fts_count_dir(dir, "lunch"), 0);
    CHECK_OK(store_verify(s, err), err);
    /* deleted: nothing of it is left, and the tombstones the index applied are pruned by the next
     * catch-up that has them applied */
    CHECK_OK(store_delete(s, "a", err), err);
    CHECK_INT(fts_count_dir(dir, "economy"), 0);
    CHECK_OK(store_delete(s, "b", err), err);
    CHECK_INT(fts_count_dir(dir, "zebra"), 0);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM fts.chunks_fts_docsize"), 0);
    CHECK_INT(
        raw_int(db, "SELECT count(*) FROM fts_gone WHERE counter < (SELECT max(counter) FROM fts_gone)"), 0);
    sqlite3_close(db);
    CHECK_INT(fts_applied_raw(dir), counter_of(s));
    CHECK_OK(store_verify(s, err), err);
    store_close(s);
    rm_tree(dir);
}

/* An index that is missing, another store's, behind (a copy of quarry.fts from before), behind
 * tombstones already pruned, or ahead of its store (an older quarry.db) is caught up or built
 * again when the store opens, and then answers as indexing the chunks again would. */
TEST(fts_index_out_of_step_is_caught_up_or_rebuilt)
{
    char err[QR_ERR_LEN] = "", path[600], saved[600], other_path[600], dir[512];
    const char *tmp, *other;
    store *s = open_fresh(&tmp, err);
    CHECK_MSG(s, "%s", err);
    snprintf(dir, sizeof(dir), "%s", tmp); /* temp_dir's buffer is reused by the next one */
    fixture a, b;
    store_put_result r;
    make_doc(&a, "a", "Travel policy", TEXT1, ACL_AB, 3);
    make_doc(&b, "b", "Canteen", "Lunch is served at noon\nThe zebra menu changes weekly", NULL, 0);
    CHECK_OK(put(s, &a, &r, err), err);
    CHECK_OK(put(s, &b, &r, err), err);
    store_close(s);
    snprintf(saved, sizeof(saved), "%s/fts.saved", dir);
    CHECK(copy_file(in_dir(path, dir, "quarry.fts"), saved)); /* closed: no -wal left */
    int64_t saved_at = fts_applied_raw(dir);

    /* missing: built from every chunk */
    CHECK(unlink(in_dir(path, dir, "quarry.fts")) == 0);
    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_INT(fts_count_dir(dir, "audits"), 1);
    CHECK_OK(store_verify(s, err), err);

    /* behind with its tombstones still there (one catch-up since, which pruned nothing): the
     * removals and the new title are applied */
    CHECK_OK(store_batch_begin(s, err), err);
    make_doc(&b, "b", "Cafeteria", "Lunch is served at noon\nThe zebra menu changes weekly", NULL, 0);
    CHECK_OK(put(s, &b, &r, err), err);
    make_doc(&a, "a", "Travel policy", "Economy class for flights under six hours", ACL_AB, 3);
    CHECK_OK(put(s, &a, &r, err), err);
    CHECK_OK(store_batch_commit(s, err), err);
    store_close(s);
    CHECK(fts_pruned_raw(dir) <= saved_at);
    CHECK(copy_file(saved, in_dir(path, dir, "quarry.fts")));
    CHECK_INT(fts_applied_raw(dir), saved_at);
    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_INT(fts_count_dir(dir, "audits"), 0);
    CHECK_INT(fts_count_dir(dir, "title:canteen"), 0);
    CHECK_INT(fts_count_dir(dir, "title:cafeteria"), 2);
    CHECK_OK(store_verify(s, err), err);

    /* behind tombstones that are pruned: built again */
    CHECK_OK(store_delete(s, "b", err), err);
    CHECK_OK(store_delete(s, "a", err), err); /* its catch-up prunes b's tombstones */
    make_doc(&a, "a", "Travel policy", TEXT1, ACL_AB, 3);
    CHECK_OK(put(s, &a, &r, err), err);
    store_close(s);
    CHECK(fts_pruned_raw(dir) > saved_at);
    CHECK(copy_file(saved, in_dir(path, dir, "quarry.fts")));
    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_INT(fts_count_dir(dir, "zebra"), 0);
    CHECK_INT(fts_count_dir(dir, "audits"), 1);
    CHECK_INT(fts_applied_raw(dir), counter_of(s));
    CHECK_OK(store_verify(s, err), err);
    store_close(s);

    /* another store's index: emptied and built for this one */
    store *o = open_fresh(&other, err);
    CHECK_MSG(o, "%s", err);
    fixture z;
    make_doc(&z, "z", "Zoo", "Only the other store has this okapi", NULL, 0);
    CHECK_OK(put(o, &z, &r, err), err);
    store_close(o);
    CHECK(copy_file(in_dir(other_path, other, "quarry.fts"), in_dir(path, dir, "quarry.fts")));
    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_INT(fts_count_dir(dir, "okapi"), 0);
    CHECK_INT(fts_count_dir(dir, "audits"), 1);
    CHECK_OK(store_verify(s, err), err);
    store_close(s);

    /* ahead of its store (the store put back to an older copy): built again */
    CHECK(copy_file(in_dir(path, dir, "quarry.db"), saved));
    CHECK_OK(store_open(dir, &s, err), err);
    make_doc(&b, "b", "Canteen", "The walrus buffet opens on Fridays", NULL, 0);
    CHECK_OK(put(s, &b, &r, err), err);
    CHECK_INT(fts_count_dir(dir, "walrus"), 1);
    store_close(s);
    CHECK(copy_file(saved, in_dir(path, dir, "quarry.db")));
    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_INT(fts_count_dir(dir, "walrus"), 0);
    CHECK_INT(fts_applied_raw(dir), counter_of(s));
    CHECK_OK(store_verify(s, err), err);
    store_close(s);
    rm_tree(other);
    rm_tree(dir);
}

/* A bulk load's thread indexes batches of new, replaced, retitled and deleted documents; the
 * load's end leaves the index at the store's counter. */
TEST(fts_bulk_thread_follows_batches)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    CHECK_OK(store_bulk_begin(s, err), err);
    fixture f;
    store_put_result r;
    char id[32], title[64], text[256];
    for (int batch = 0; batch < 6; batch++) {
        CHECK_OK(store_batch_begin(s, err), err);
        for (int i = 0; i < 20; i++) {
            int n = batch * 20 + i;
            snprintf(id, sizeof(id), "d%d", n % 50); /* later batches replace earlier documents */
            snprintf(title, sizeof(title), "Title %d %s", n % 50, batch % 2 ? "odd" : "even");
            snprintf(text, sizeof(text), "word%d appears here\nand batch%d there\nshared line", n, batch);
            make_doc(&f, id, title, text, NULL, 0);
            CHECK_OK(put(s, &f, &r, err), err);
        }
        if (batch == 4)
            CHECK_OK(store_delete(s, "d7", err), err);
        CHECK_OK(store_batch_commit(s, err), err);
    }
    CHECK_OK(store_bulk_end(s, err), err);
    CHECK_INT(fts_applied_raw(dir), counter_of(s));
    /* the end pruned what the load's replacements left for the index to remove */
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM fts_gone"), 0);
    sqlite3_close(db);
    CHECK_INT(fts_count_dir(dir, "word119"), 1);
    CHECK_INT(fts_count_dir(dir, "word19"), 0); /* replaced by word69 and word119 */
    CHECK_INT(fts_count_dir(dir, "batch5"), 20);
    CHECK_INT(fts_count_dir(dir, "word7 OR word57"), 0); /* d7: deleted in batch 4 ... */
    CHECK_INT(fts_count_dir(dir, "word107"), 1);         /* ... and added again in batch 5 */
    CHECK_OK(store_verify(s, err), err);
    store_close(s);
    rm_tree(dir);
}

/* Reads the bulk thread's summary line from a log captured in f: transactions indexed as the
 * writer wrote them, and those read back from the store after their commit. */
static bool bulk_summary(FILE *f, unsigned long long *whole, unsigned long long *read_back)
{
    static char text[1 << 16];
    rewind(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    const char *at = strstr(text, "s CPU, ");
    return at &&
           sscanf(at, "s CPU, %llu transactions indexed as written, %llu read back", whole, read_back) == 2;
}

/* Text of about 3 KB in lines (chunks), with words that say which batch and document it is. */
static void bulk_text(char *out, size_t cap, int batch, int doc)
{
    size_t n = 0;
    for (int line = 0; line < 12 && n < cap; line++)
        n += (size_t)snprintf(out + n, cap - n,
                              "%sbatch%d doc%d line%d: the quarterly travel report lists expenses, flights,"
                              " hotels, meals and the approvals each one needed before it was paid back",
                              line ? "\n" : "", batch, doc, line);
}

/* Opens a batch on s and puts per documents of bulk_text into it, ids prefix<batch * per + i>,
 * titled title; the caller commits or rolls it back. f holds the last one (its chunk count). */
static qr_status bulk_batch(store *s, fixture *f, const char *prefix, const char *title, int batch, int per,
                            char *err)
{
    qr_status st = store_batch_begin(s, err);
    char id[32], text[4096];
    store_put_result r;
    for (int i = 0; i < per && !st; i++) {
        snprintf(id, sizeof(id), "%s%d", prefix, batch * per + i);
        bulk_text(text, sizeof(text), batch, i);
        make_doc(f, id, title, text, NULL, 0);
        st = put(s, f, &r, err);
    }
    return st;
}

/* The store's debug log into a temporary file (bulk_log_end reads the thread's summary line). */
static FILE *bulk_log_begin(char *err)
{
    FILE *log = tmpfile();
    if (log && qr_log_configure(QR_LOG_WARN, QR_LOG_TEXT, "store=debug", err) == QR_OK)
        qr_log_set_stream(log);
    return log;
}

static bool bulk_log_end(FILE *log, unsigned long long *whole, unsigned long long *read_back)
{
    char err[QR_ERR_LEN];
    qr_log_set_stream(NULL);
    qr_log_configure(QR_LOG_INFO, QR_LOG_TEXT, NULL, err);
    bool found = bulk_summary(log, whole, read_back);
    fclose(log);
    return found;
}

/* Bulk mode's thread indexes a transaction's chunks as the writer hands them over, in pieces,
 * and commits once the writer has: a rolled-back batch whose pieces were already indexed leaves
 * nothing, though the next batch reuses its chunk ids. */
TEST(fts_bulk_thread_indexes_rows_as_written)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    FILE *log = bulk_log_begin(err);
    CHECK(log);
    CHECK_OK(store_bulk_begin(s, err), err);
    static fixture f;
    for (int batch = 0; batch < 3; batch++) { /* about 170 KB each: a piece of 128 KB goes first */
        bool gone = batch == 1;
        CHECK_OK(bulk_batch(s, &f, gone ? "gone" : "kept", gone ? "Rolled back" : "Kept", batch, 80, err),
                 err);
        if (gone)
            store_batch_rollback(s);
        else
            CHECK_OK(store_batch_commit(s, err), err);
    }
    size_t chunks = f.nchunks;
    CHECK_OK(store_bulk_end(s, err), err);
    unsigned long long whole = 0, read_back = 0;
    CHECK(bulk_log_end(log, &whole, &read_back));
    CHECK_INT((int64_t)whole, 2);
    CHECK_INT((int64_t)read_back, 0);
    CHECK_INT(fts_count_dir(dir, "batch1 OR rolled"), 0);
    CHECK_INT(fts_count_dir(dir, "batch2"), 80 * (int64_t)chunks);
    CHECK_INT(fts_count_dir(dir, "doc79 AND line11"), 2);
    CHECK_INT(fts_applied_raw(dir), counter_of(s));
    CHECK_OK(store_verify(s, err), err);
    store_close(s);
    rm_tree(dir);
}

/* Another handle's writes between the load's batches: the load's next transaction no longer
 * begins where the index stands (the other writer caught it up, or its index was caught up by
 * the thread), and every state is caught up exactly, whichever way each transaction is taken;
 * neither writer waits on the other's index for longer than a batch. */
typedef struct {
    const char *dir;
    int done;
    char err[QR_ERR_LEN];
} side_writer;

static void *side_writes(void *arg)
{
    side_writer *w = arg;
    store *t = NULL;
    if (store_open(w->dir, &t, w->err))
        return NULL;
    static fixture g;
    store_put_result r;
    char id[32], text[4096];
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof(id), "side%d", i);
        bulk_text(text, sizeof(text), 9, i);
        make_doc(&g, id, "Side", text, NULL, 0);
        if (put(t, &g, &r, w->err))
            break;
        snprintf(id, sizeof(id), "side%d", i - 1);
        if (i % 10 == 9 && store_delete(t, id, w->err)) /* removals, too */
            break;
        w->done++;
        usleep(3000);
    }
    store_close(t);
    return NULL;
}

TEST(fts_bulk_thread_beside_another_writer)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    FILE *log = bulk_log_begin(err);
    CHECK(log);
    CHECK_OK(store_bulk_begin(s, err), err);
    side_writer w = {.dir = dir};
    pthread_t side;
    CHECK(pthread_create(&side, NULL, side_writes, &w) == 0);
    static fixture f;
    for (int batch = 0; batch < 20; batch++) {
        CHECK_OK(bulk_batch(s, &f, "bulk", "Bulk", batch, 20, err), err);
        CHECK_OK(store_batch_commit(s, err), err);
    }
    pthread_join(side, NULL);
    CHECK_OK(store_bulk_end(s, err), err);
    unsigned long long whole = 0, read_back = 0;
    CHECK(bulk_log_end(log, &whole, &read_back));
    CHECK_MSG(w.done == 40, "the other writer: %d writes, %s", w.done, w.err);
    CHECK_INT((int64_t)(whole + read_back), 20);
    CHECK_INT(fts_count_dir(dir, "bulk"), 400 * (int64_t)f.nchunks);
    CHECK_INT(fts_count_dir(dir, "side"), 36 * (int64_t)f.nchunks);
    CHECK_INT(fts_applied_raw(dir), counter_of(s));
    CHECK_OK(store_verify(s, err), err);
    store_close(s);
    rm_tree(dir);
}

/* A new full-text index has 32 KiB pages (the store 16); an existing one keeps the size it has,
 * and a bulk load into it works the same. */
TEST(fts_index_pages_new_and_kept)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    CHECK_INT(raw_int_in(dir, "PRAGMA fts.page_size"), 32768);
    CHECK_INT(raw_int_in(dir, "PRAGMA main.page_size"), 16384);
    store_close(s);
    /* an index file made with 16 KiB pages, as quarry made them before */
    char path[PATH_MAX];
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/quarry.fts%s", dir, suffixes[i]);
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/quarry.fts", dir);
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, "PRAGMA page_size = 16384; CREATE TABLE older(x)", NULL, NULL, NULL),
              SQLITE_OK);
    sqlite3_close(db);
    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_INT(raw_int_in(dir, "PRAGMA fts.page_size"), 16384);
    CHECK_OK(store_bulk_begin(s, err), err);
    static fixture f;
    for (int batch = 0; batch < 3; batch++) {
        CHECK_OK(bulk_batch(s, &f, "kept", "Kept", batch, 30, err), err);
        CHECK_OK(store_batch_commit(s, err), err);
    }
    CHECK_OK(store_bulk_end(s, err), err);
    CHECK_INT(fts_count_dir(dir, "kept"), 90 * (int64_t)f.nchunks);
    CHECK_INT(raw_int_in(dir, "PRAGMA fts.page_size"), 16384);
    CHECK_OK(store_verify(s, err), err);
    store_close(s);
    rm_tree(dir);
}

/* ---- verification ------------------------------------------------------------------------ */

/* The crash test's independent view of consistency: NULL when consistent, else what is wrong. */
static const char *raw_inconsistency(const char *dir, sqlite3 *db, int dim)
{
    static char why[256];
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL) != SQLITE_OK ||
        sqlite3_step(q) != SQLITE_ROW || strcmp((const char *)sqlite3_column_text(q, 0), "ok") != 0) {
        snprintf(why, sizeof(why), "integrity_check: %s",
                 q && sqlite3_column_text(q, 0) ? (const char *)sqlite3_column_text(q, 0)
                                                : sqlite3_errmsg(db));
        sqlite3_finalize(q);
        return why;
    }
    sqlite3_finalize(q);
    if (sqlite3_exec(db, "INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')", NULL, NULL, NULL) !=
        SQLITE_OK) {
        snprintf(why, sizeof(why), "FTS5 integrity-check: %s", sqlite3_errmsg(db));
        return why;
    }
    /* the index holds exactly what indexing every chunk again gives, token by token (the index is
     * contentless: FTS5's own check cannot compare it with the text) */
    int64_t diff = -1;
    if (sqlite3_exec(
            db,
            "CREATE VIRTUAL TABLE temp.again USING fts5(title, headings, body, content = '',"
            "  tokenize = 'porter unicode61');"
            "INSERT INTO temp.again(rowid, title, headings, body)"
            "  SELECT c.id, d.title, c.headings, c.body FROM chunks c JOIN documents d ON d.id = c.doc;"
            "CREATE VIRTUAL TABLE temp.again_v USING fts5vocab(temp, again, instance);"
            "CREATE VIRTUAL TABLE temp.live_v USING fts5vocab(fts, chunks_fts, instance);",
            NULL, NULL, NULL) == SQLITE_OK)
        diff = raw_int(db, "SELECT (SELECT count(*) FROM (SELECT * FROM temp.again_v EXCEPT SELECT * FROM"
                           " temp.live_v)) + (SELECT count(*) FROM (SELECT * FROM temp.live_v EXCEPT SELECT *"
                           " FROM temp.again_v))");
    sqlite3_exec(db,
                 "DROP TABLE IF EXISTS temp.live_v; DROP TABLE IF EXISTS temp.again_v;"
                 " DROP TABLE IF EXISTS temp.again",
                 NULL, NULL, NULL);
    if (diff != 0) {
        snprintf(why, sizeof(why), "FTS5 index differs from the chunks: %lld token instances",
                 (long long)diff);
        return why;
    }
    int64_t rows;
    const char *vwhy = vec_file_problem(dir, db, dim, &rows);
    if (vwhy) {
        snprintf(why, sizeof(why), "%s", vwhy);
        return why;
    }
    const struct {
        const char *sql, *what;
    } zero[] = {
        {"SELECT count(*) FROM chunks c LEFT JOIN documents d ON d.id = c.doc WHERE d.id IS NULL",
         "orphan chunks"},
        {"SELECT count(*) FROM chunks WHERE id NOT IN (SELECT id FROM chunks_fts_docsize)",
         "chunks without FTS rows"},
        {"SELECT count(*) FROM chunks_fts_docsize WHERE id NOT IN (SELECT id FROM chunks)",
         "orphan FTS rows"},
        {"SELECT count(*) FROM documents d WHERE chunk_count != (SELECT count(*) FROM chunks WHERE doc = "
         "d.id)",
         "documents with a wrong chunk count"},
        {"SELECT count(*) FROM documents d WHERE chunk_count = 0", "documents without chunks"},
        {"SELECT count(*) FROM acl a LEFT JOIN documents d ON d.id = a.doc WHERE d.id IS NULL",
         "orphan ACL rows"},
        /* one transaction per version: all chunks of a document come from the same one ... */
        {"SELECT count(*) FROM (SELECT doc FROM chunks GROUP BY doc HAVING count(DISTINCT added) > 1)",
         "documents mixing chunks of two writes"},
        /* ... and belong to the version the document row names (the writer starts each chunk
         * with the hash) */
        {"SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.doc WHERE substr(c.body, 1, 12) !="
         " substr(d.content_hash, 1, 12)",
         "chunks of another version"},
        {"SELECT count(*) FROM documents d WHERE (SELECT count(DISTINCT ordinal) = d.chunk_count AND "
         "min(ordinal) = 0"
         " AND max(ordinal) = d.chunk_count - 1 FROM chunks WHERE doc = d.id) IS NOT 1",
         "documents with gaps in their chunks"},
        {"SELECT count(*) FROM deleted_chunks WHERE chunk_id IN (SELECT id FROM chunks)",
         "live chunks tombstoned"},
    };
    for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++) {
        int64_t n = raw_int(db, zero[i].sql);
        if (n != 0) {
            snprintf(why, sizeof(why), "%s: %lld", zero[i].what, (long long)n);
            return why;
        }
    }
    return NULL;
}

/* ---- the vectors file's rows of deleted chunks ------------------------------------------- */

#define WIDE 1000 /* 4,000-byte rows: most straddle two 4 KiB blocks */

/* Puts document id with n one-line chunks and WIDE-dimensional vectors. */
static qr_status put_wide(store *s, const char *id, size_t n, char *err)
{
    static fixture f;
    static float v[16 * WIDE];
    char text[1024] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s line %zu of %s", i ? "\n" : "", i, id);
    make_doc(&f, id, "Wide", text, NULL, 0);
    for (size_t i = 0; i < n * WIDE; i++)
        v[i] = (float)((i * 7919 + strlen(id)) % 97) + 1.0f;
    store_put_result r;
    return store_put(s, &f.doc, f.chunks, f.nchunks, v, WIDE, &r, err);
}

/* Whether chunk id's row in the file under dir reads as zeros (1), as a unit vector (0), or
 * neither (-1). */
static int wide_row_state(const char *dir, int64_t id)
{
    char path[600];
    static float row[WIDE];
    snprintf(path, sizeof(path), "%s/quarry.vec", dir);
    int fd = open(path, O_RDONLY);
    ssize_t got = fd < 0 ? -1 : pread(fd, row, sizeof(row), (off_t)(4096 + (size_t)id * sizeof(row)));
    if (fd >= 0)
        close(fd);
    if (got != (ssize_t)sizeof(row))
        return -1;
    double n2 = 0;
    for (int d = 0; d < WIDE; d++)
        n2 += (double)row[d] * row[d];
    return n2 == 0 ? 1 : fabs(n2 - 1) < 1e-4 ? 0 : -1;
}

/* Bytes the file system allocates for the vectors file under dir. */
static long long vec_allocated(const char *dir)
{
    char path[600];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/quarry.vec", dir);
    return stat(path, &sb) == 0 ? (long long)sb.st_blocks * 512 : -1;
}

/* Whether the file system under dir frees punched ranges (tmpfs and ext4 do). */
static bool punch_supported(const char *dir)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/punch-probe", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    char block[8192];
    memset(block, 1, sizeof(block));
    bool ok = fd >= 0 && pwrite(fd, block, sizeof(block), 0) == (ssize_t)sizeof(block) &&
              fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0;
    if (fd >= 0)
        close(fd);
    unlink(path);
    return ok;
}

/* The rows of deleted chunks are freed once the delete is durable, and only then: at once
 * outside bulk mode, at the end of a bulk load, never for a batch that rolled back, not while a
 * backup holds the file (then after the next commit); the rows of live chunks are never touched,
 * and deleting documents in any order frees the blocks they shared. */
TEST(deleted_chunks_rows_are_freed_when_durable)
{
    char err[QR_ERR_LEN] = "";
    const char *dir = temp_dir();
    CHECK(dir);
    store *s = NULL;
    CHECK_OK(store_open(dir, &s, err), err);
    CHECK_OK(store_check_embedding(s, "wide", WIDE, err), err);
    bool holes = punch_supported(dir);
    const char *names[] = {"a", "b", "c", "d", "e", "f"};
    int64_t ids[6][16];
    size_t n[6];
    for (int d = 0; d < 6; d++) {
        CHECK_OK(put_wide(s, names[d], 5, err), err);
        CHECK_INT(chunk_ids(s, names[d], ids[d], &n[d]), 0);
        CHECK_INT(n[d], 5);
    }
    long long full = vec_allocated(dir), before;
    CHECK(full >= 4096 + 30 * 4000);
    /* five rows are 20,000 bytes: at least three whole blocks of 4 KiB lie inside them */
#define FREED(b) (!holes || vec_allocated(dir) <= (b)-3 * 4096)
#define KEPT(b)  (vec_allocated(dir) == (b))
    /* freed at once; the rows of the neighbours, which share a block with b's, stay whole */
    CHECK_OK(store_delete(s, "b", err), err);
    CHECK(FREED(full));
    for (size_t i = 0; i < 5; i++) {
        CHECK_INT(wide_row_state(dir, ids[1][i]), 1); /* no byte of a deleted vector is left */
        CHECK_INT(wide_row_state(dir, ids[0][i]), 0);
        CHECK_INT(wide_row_state(dir, ids[2][i]), 0);
    }
    /* not while a backup holds the file; after the next commit once it is let go */
    store_vectors *held = NULL;
    CHECK_OK(store_vectors_open(dir, &held, err), err);
    CHECK_OK(store_vectors_hold(held, err), err);
    before = vec_allocated(dir);
    CHECK_OK(store_delete(s, "d", err), err);
    CHECK(KEPT(before));
    for (size_t i = 0; i < 5; i++)
        CHECK_INT(wide_row_state(dir, ids[3][i]), 0);
    store_vectors_close(held);
    CHECK_OK(store_set_acl(s, "a", (const char *[]){"public"}, 1, err), err);
    CHECK(FREED(before));
    for (size_t i = 0; i < 5; i++) {
        CHECK_INT(wide_row_state(dir, ids[3][i]), 1);
        CHECK_INT(wide_row_state(dir, ids[2][i]), 0);
        CHECK_INT(wide_row_state(dir, ids[4][i]), 0);
    }
    /* a batch that rolls back frees nothing */
    before = vec_allocated(dir);
    CHECK_OK(store_batch_begin(s, err), err);
    CHECK_OK(store_delete(s, "e", err), err);
    store_batch_rollback(s);
    CHECK(KEPT(before));
    CHECK_OK(store_set_acl(s, "e", (const char *[]){"public"}, 1, err), err); /* a commit after it */
    CHECK(KEPT(before));
    float v[WIDE];
    CHECK_OK(store_get_vector(s, ids[4][0], v, WIDE, err), err);
    for (size_t i = 0; i < 5; i++)
        CHECK_INT(wide_row_state(dir, ids[4][i]), 0);
    /* bulk mode: only once the load is synced */
    CHECK_OK(store_bulk_begin(s, err), err);
    CHECK_OK(store_delete(s, "e", err), err);
    CHECK(KEPT(before));
    CHECK_OK(store_bulk_end(s, err), err);
    CHECK(FREED(before));
    for (size_t i = 0; i < 5; i++)
        CHECK_INT(wide_row_state(dir, ids[4][i]), 1);
    /* new content: the old chunks' rows go, the new ones are whole */
    before = vec_allocated(dir);
    CHECK_OK(put_wide(s, "a", 3, err), err);
    int64_t now[16];
    size_t nn;
    CHECK_INT(chunk_ids(s, "a", now, &nn), 0);
    CHECK(!holes || vec_allocated(dir) < before); /* 20,000 bytes freed, 12,000 written */
    for (size_t i = 0; i < nn; i++)
        CHECK_INT(wide_row_state(dir, now[i]), 0);
    for (size_t i = 0; i < 5; i++)
        CHECK_INT(wide_row_state(dir, ids[2][i]), 0);
#undef FREED
#undef KEPT
    CHECK_OK(store_verify(s, err), err);
    /* everything deleted, in no particular order: the blocks rows shared are freed as well */
    CHECK_OK(store_delete(s, "f", err), err);
    CHECK_OK(store_delete(s, "c", err), err);
    CHECK_OK(store_delete(s, "a", err), err);
    if (holes)
        CHECK_MSG(vec_allocated(dir) <= 4 * 4096, "%lld bytes still allocated of %lld", vec_allocated(dir),
                  full);
    CHECK_OK(store_verify(s, err), err);
    store_close(s);
    rm_tree(dir);
}

TEST(verify_detects_damage)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    fixture f;
    store_put_result r;
    /* every chunk starts with the hash's first 12 digits, as the crash writer's do, so that
     * raw_inconsistency holds on a healthy store */
    make_doc(&f, "d1", "Travel policy", "0123456789ab one\n0123456789ab two\n0123456789ab three", ACL_AB, 3);
    memcpy(f.hash, "0123456789ab", 12);
    CHECK_OK(put(s, &f, &r, err), err);
    sqlite3 *db = raw_open(dir);
    CHECK(db);
    CHECK_OK(store_verify(s, err), err);
    const char *why = raw_inconsistency(dir, db, DIM);
    CHECK_MSG(why == NULL, "%s", why);

    /* a lost vector: the file cut short of the last chunk's row */
    char vpath[600];
    snprintf(vpath, sizeof(vpath), "%s/quarry.vec", dir);
    struct stat vsb;
    CHECK(stat(vpath, &vsb) == 0);
    CHECK(truncate(vpath, vsb.st_size - 4) == 0);
    CHECK_INT(store_verify(s, err), QR_EIO);
    CHECK_MSG(strstr(err, "too short"), "%s", err);
    CHECK(raw_inconsistency(dir, db, DIM) != NULL);
    CHECK(truncate(vpath, vsb.st_size) == 0); /* the last value reads 0 now: still not normalised */
    CHECK_INT(store_verify(s, err), QR_EIO);
    CHECK_MSG(strstr(err, "is damaged"), "%s", err);
    /* a row overwritten with a value that is not a number */
    int vfd = open(vpath, O_WRONLY);
    CHECK(vfd >= 0);
    float nan_row[DIM] = {NAN, 0, 0, 0};
    CHECK(pwrite(vfd, nan_row, sizeof(nan_row), vsb.st_size - (off_t)sizeof(nan_row)) ==
          (ssize_t)sizeof(nan_row));
    CHECK_INT(store_verify(s, err), QR_EIO);
    CHECK(raw_inconsistency(dir, db, DIM) != NULL);
    float unit_row[DIM] = {1, 0, 0, 0};
    CHECK(pwrite(vfd, unit_row, sizeof(unit_row), vsb.st_size - (off_t)sizeof(unit_row)) ==
          (ssize_t)sizeof(unit_row));
    close(vfd);
    CHECK_OK(store_verify(s, err), err);

    /* a chunk changed behind the full-text index's back */
    CHECK(raw_exec(
        db, "UPDATE chunks SET body = substr(body, 1, 12) || ' tampered' WHERE id = (SELECT min(id) FROM "
            "chunks)"));
    CHECK_INT(store_verify(s, err), QR_EIO);
    CHECK_MSG(strstr(err, "full-text index"), "%s", err);
    why = raw_inconsistency(dir, db, DIM);
    CHECK(why && strstr(why, "FTS5"));
    sqlite3_close(db);
    store_close(s);
    rm_tree(dir);
}

/* ---- concurrency ------------------------------------------------------------------------- */

typedef struct {
    const char *dir;
    volatile int writing; /* 1 while the writer runs */
    int writes, reads;
    char err[QR_ERR_LEN];
} shared_state;

static void *writer_thread(void *arg)
{
    shared_state *sh = arg;
    store *s = NULL;
    if (store_open(sh->dir, &s, sh->err))
        goto out;
    for (int i = 0; i < 120; i++) {
        fixture f;
        char id[32], text[512];
        store_put_result r;
        snprintf(id, sizeof(id), "doc-%d", i % 40);
        snprintf(text, sizeof(text), "version %d line one\nline two of %d\nline three\nline four %d", i, i,
                 i);
        make_doc(&f, id, "Concurrent", text, NULL, 0);
        f.nchunks = 1 + (size_t)(i % 4);
        if (store_put(s, &f.doc, f.chunks, f.nchunks, f.vectors, DIM, &r, sh->err))
            goto out;
        sh->writes++;
    }
out:
    __atomic_store_n(&sh->writing, 0, __ATOMIC_SEQ_CST);
    store_close(s);
    return NULL;
}

TEST(readers_run_while_a_writer_writes)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    shared_state sh = {.dir = dir, .writing = 1};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, writer_thread, &sh) == 0);
    int64_t last_counter = 0;
    bool failed = false;
    while (__atomic_load_n(&sh.writing, __ATOMIC_SEQ_CST) && !failed) {
        for (int i = 0; i < 40 && !failed; i++) {
            char id[32];
            snprintf(id, sizeof(id), "doc-%d", i);
            store_doc_info *d = NULL;
            qr_status st = store_get_document(s, id, true, &d, err);
            if (st == QR_ENOTFOUND)
                continue;
            if (st) {
                failed = true;
                break;
            }
            /* a document is seen whole: its chunk rows and the count in its row agree, and all
             * chunks carry the text of one version */
            if (d->nchunks != d->chunk_count || d->nchunks == 0 ||
                strncmp(d->chunks[0].text, "version ", 8) != 0) {
                snprintf(err, sizeof(err), "torn read of %s: %zu of %zu chunks", id, d->nchunks,
                         d->chunk_count);
                failed = true;
            }
            store_doc_info_free(d);
            sh.reads++;
        }
        int64_t c = counter_of(s);
        if (c < last_counter) {
            snprintf(err, sizeof(err), "change counter went back from %lld to %lld", (long long)last_counter,
                     (long long)c);
            failed = true;
        }
        last_counter = c;
    }
    pthread_join(t, NULL);
    CHECK_MSG(!failed, "reader: %s", err);
    int reads_while_writing = sh.reads;
    /* one pass after the writer finished, in case the scheduler let it run alone */
    for (int i = 0; i < 40; i++) {
        char id[32];
        snprintf(id, sizeof(id), "doc-%d", i);
        store_doc_info *d = NULL;
        CHECK_OK(store_get_document(s, id, true, &d, err), err);
        CHECK_INT(d->nchunks, d->chunk_count);
        store_doc_info_free(d);
        sh.reads++;
    }
    if (reads_while_writing == 0)
        fprintf(stderr, "note: no read overlapped the writer in this run\n");
    CHECK_MSG(sh.writes == 120, "writer: %s", sh.err);
    CHECK(sh.reads > 0);
    CHECK_INT(counter_of(s), 120);
    store_stats stats;
    CHECK_OK(store_get_stats(s, &stats, err), err);
    CHECK_INT(stats.documents, 40);
    CHECK_OK(store_verify(s, err), err);
    store_close(s);
    rm_tree(dir);
}

/* ---- crash test -------------------------------------------------------------------------- */

/* Reads what the writer printed: the change counter after each write that returned. */
static int64_t last_reported(int fd, int64_t *lines)
{
    static char buf[1 << 20];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    int64_t last = -1;
    *lines = 0;
    /* a line cut by the kill has no newline: ignore it */
    for (char *p = buf, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        last = strtoll(p, NULL, 10);
        (*lines)++;
    }
    return last;
}

TEST(crash_kill_50)
{
    char err[QR_ERR_LEN] = "", stderr_path[600];
    const char *dir = temp_dir();
    CHECK(dir);
    char store_dir[600];
    snprintf(store_dir, sizeof(store_dir), "%s/data", dir);
    snprintf(stderr_path, sizeof(stderr_path), "%s/writer.stderr", dir);
    srand((unsigned)time(NULL));
    unsigned seed0 = (unsigned)rand();
    int64_t prev_counter = 0, total_writes = 0;
    int kills_mid_write = 0, rounds_with_writes = 0;
    for (int round = 0; round < 50; round++) {
        int fds[2];
        CHECK(pipe(fds) == 0);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
        posix_spawn_file_actions_addclose(&fa, fds[0]);
        posix_spawn_file_actions_addopen(&fa, 2, stderr_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        char seed[32];
        snprintf(seed, sizeof(seed), "%u", seed0 + (unsigned)round);
        char *argv[] = {(char *)STORE_CRASH_BIN, store_dir, seed, NULL};
        pid_t pid;
        int rc = posix_spawn(&pid, STORE_CRASH_BIN, &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(fds[1]);
        CHECK_MSG(rc == 0, "cannot start %s: %s", STORE_CRASH_BIN, strerror(rc));
        /* most rounds wait for the writer's first write to return (however slow the machine:
         * a sanitizer build under load), so that every round of those kills it mid-work; every
         * fourth may also kill it while it opens */
        if (round % 4 != 3) {
            struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
            poll(&pfd, 1, 5000);
        }
        int delay_ms = 5 + rand() % 56;
        struct timespec ts = {0, delay_ms * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        int64_t lines = 0, reported = last_reported(fds[0], &lines);
        close(fds[0]);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
            char msg[512] = "";
            FILE *fp = fopen(stderr_path, "r");
            if (fp) {
                size_t n = fread(msg, 1, sizeof(msg) - 1, fp);
                msg[n] = '\0';
                fclose(fp);
            }
            CHECK_MSG(false, "round %d (seed %s): the writer ended by itself (status %d): %s", round, seed,
                      status, msg);
        }
        total_writes += lines;

        struct stat sb;
        if (stat(store_dir, &sb) != 0)
            continue; /* killed before it created anything */
        store *s = NULL;
        CHECK_MSG(!store_open(store_dir, &s, err), "round %d (seed %s): reopen: %s", round, seed, err);
        store_stats stats;
        CHECK_OK(store_get_stats(s, &stats, err), err);
        /* nothing committed by a call that returned is lost, and the counter never goes back */
        CHECK_MSG(stats.change_counter >= reported, "round %d: counter %lld < last reported %lld", round,
                  (long long)stats.change_counter, (long long)reported);
        CHECK_MSG(stats.change_counter >= prev_counter, "round %d: counter went back", round);
        if (stats.change_counter > reported && reported >= 0)
            kills_mid_write++; /* the kill hit a write that committed but had not returned */
        rounds_with_writes += stats.change_counter > prev_counter;
        prev_counter = stats.change_counter;
        qr_status st = store_verify(s, err);
        CHECK_MSG(st == QR_OK, "round %d (seed %s): %s", round, seed, err);
        store_close(s);
        sqlite3 *db = raw_open(store_dir);
        CHECK(db);
        const char *why = raw_inconsistency(store_dir, db, 8);
        sqlite3_close(db);
        CHECK_MSG(why == NULL, "round %d (seed %s): %s", round, seed, why);
    }
    /* the test means something only if the writer got work done between kills: in most rounds
     * (counted, not timed, so that a slow machine passes as a fast one) */
    CHECK_MSG(rounds_with_writes >= 25, "writes committed in only %d of 50 rounds (counter %lld)",
              rounds_with_writes, (long long)prev_counter);
    fprintf(stderr,
            "crash test: %lld writes or batches returned, final counter %lld; %d kills landed after a commit "
            "reached the WAL but before it returned\n",
            (long long)total_writes, (long long)prev_counter, kills_mid_write);
    rm_tree(dir);
}

/* ---- the jobs table ------------------------------------------------------------------------ */

TEST(jobs_table_records_progress_once_per_document)
{
    char err[QR_ERR_LEN] = "";
    const char *base = temp_dir();
    CHECK(base);
    store *s = NULL;
    CHECK_OK(store_open(base, &s, err), err);
    store_job a = {
        .id = "aaaa", .kind = "ingest", .state = "queued", .user = "dave", .created_ms = 1000, .docs = 3};
    store_job b = {.id = "bbbb", .kind = "rebuild", .state = "queued", .user = "frank", .created_ms = 2000};
    CHECK_OK(store_job_insert(s, &a, "[{\"doc_id\":\"x\"}]", err), err);
    CHECK_OK(store_job_insert(s, &b, "", err), err);
    CHECK_INT(store_job_insert(s, &a, "", err), QR_EEXIST);

    /* two results in one call, then the second again (a document redone after a crash) */
    store_job_result r[2] = {{0, false, 4, "{\"doc_id\":\"x\",\"n\":1}"}, {1, true, 0, "{\"doc_id\":\"y\"}"}};
    CHECK_OK(store_job_add_results(s, "aaaa", r, 2, err), err);
    store_job_result again = {1, false, 2, "{\"doc_id\":\"y\",\"again\":true}"};
    CHECK_OK(store_job_add_results(s, "aaaa", &again, 1, err), err);
    store_job got;
    char *staged = NULL, *results = NULL;
    CHECK_OK(store_job_get(s, "aaaa", &got, &staged, &results, err), err);
    CHECK_INT(got.done, 2);
    CHECK_INT(got.failed, 1);
    CHECK_INT(got.chunks, 4);
    CHECK_STR(staged, "[{\"doc_id\":\"x\"}]");
    CHECK_STR(results, "[{\"doc_id\":\"x\",\"n\":1},{\"doc_id\":\"y\",\"again\":true}]");
    free(staged);
    free(results);
    CHECK_INT(store_job_add_results(s, "nope", r, 1, err), QR_ENOTFOUND);
    CHECK_INT(store_job_get(s, "nope", &got, NULL, NULL, err), QR_ENOTFOUND);

    /* unfinished oldest first; the listing newest first, by state, in pages */
    store_job *jobs = NULL;
    size_t n = 0;
    bool more = false;
    CHECK_OK(store_job_unfinished(s, &jobs, &n, err), err);
    CHECK_INT(n, 2);
    CHECK_STR(jobs[0].id, "aaaa");
    free(jobs);
    CHECK_OK(store_job_list(s, NULL, 0, NULL, 1, &jobs, &n, &more, err), err);
    CHECK(n == 1 && more);
    CHECK_STR(jobs[0].id, "bbbb");
    free(jobs);
    CHECK_OK(store_job_list(s, NULL, 2000, "bbbb", 1, &jobs, &n, &more, err), err);
    CHECK(n == 1 && !more);
    CHECK_STR(jobs[0].id, "aaaa");
    free(jobs);

    /* finished jobs go once older than the cut, with their results; unfinished ones stay */
    snprintf(a.state, sizeof(a.state), "succeeded");
    a.finished_ms = 5000;
    a.done = 2;
    CHECK_OK(store_job_update(s, &a, err), err);
    CHECK_OK(store_job_list(s, "succeeded", 0, NULL, 10, &jobs, &n, &more, err), err);
    CHECK_INT(n, 1);
    free(jobs);
    size_t pruned = 0;
    CHECK_OK(store_job_prune(s, 5000, &pruned, err), err);
    CHECK_INT(pruned, 0);
    CHECK_OK(store_job_prune(s, 5001, &pruned, err), err);
    CHECK_INT(pruned, 1);
    CHECK_INT(store_job_get(s, "aaaa", &got, NULL, NULL, err), QR_ENOTFOUND);
    CHECK_OK(store_job_get(s, "bbbb", &got, NULL, NULL, err), err);
    store_close(s);
    sqlite3 *db = raw_open(base);
    CHECK(db);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM job_results"), 0);
    sqlite3_close(db);
    rm_tree(base);
}

/* Applies store_filter_changes' reports to a sorted id list (test side: a plain array). */
typedef struct {
    int64_t ids[64];
    size_t n;
    int64_t rm[64], add[64];
    size_t nrm, nadd;
} change_acc;

static qr_status change_collect(void *ctx, int64_t chunk_id, bool passes, char *err)
{
    change_acc *a = ctx;
    if (a->nrm == 64 || a->nadd == 64)
        return qr_fail(err, QR_ELIMIT, "test accumulator full");
    if (passes)
        a->add[a->nadd++] = chunk_id;
    else
        a->rm[a->nrm++] = chunk_id;
    return QR_OK;
}

static int cmp_id(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

static void list_filter(store *s, const store_filter *f, int64_t *ids, size_t *n, char *err)
{
    bool more = false;
    CHECK_OK(store_filter_chunks(s, f, 64, ids, n, &more, err), err);
    CHECK(!more);
    qsort(ids, *n, sizeof(int64_t), cmp_id);
}

TEST(filter_changes_bring_a_permitted_list_up_to_date)
{
    char err[QR_ERR_LEN] = "";
    const char *dir;
    store *s = open_fresh(&dir, err);
    CHECK_MSG(s, "%s", err);
    const char *const team[] = {"group:team"}, *const other[] = {"group:other"};
    fixture fx;
    store_put_result r;
    const char *names[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        make_doc(&fx, names[i], "Doc", i % 2 ? "one line\ntwo lines" : "a single line", i < 3 ? team : other,
                 1);
        CHECK_OK(put(s, &fx, &r, err), err);
    }
    const char *mine[] = {"group:team"};
    store_filter f = {.principals = mine, .nprincipals = 1};
    change_acc acc = {0};
    list_filter(s, &f, acc.ids, &acc.n, err);
    CHECK_INT(acc.n, 4); /* a (1 chunk), b (2), c (1) */
    int64_t since = counter_of(s), now = 0;

    /* b revoked, c rewritten with two new chunks, d granted, e added for another group */
    CHECK_OK(store_set_acl(s, "b", other, 1, err), err);
    make_doc(&fx, "c", "Doc", "new text\nmore new text", team, 1);
    CHECK_OK(put(s, &fx, &r, err), err);
    CHECK_OK(store_set_acl(s, "d", team, 1, err), err);
    make_doc(&fx, "e", "Doc", "elsewhere", other, 1);
    CHECK_OK(put(s, &fx, &r, err), err);
    CHECK_INT(store_filter_changes(s, &f, since, 2, change_collect, &acc, &now, err), QR_ELIMIT);
    CHECK(acc.nrm == 0 && acc.nadd == 0 && strstr(err, "more than 2"));
    CHECK_OK(store_filter_changes(s, &f, since, 100, change_collect, &acc, &now, err), err);
    CHECK_INT(now, counter_of(s));
    /* the list minus every reported chunk, plus those that pass: a fresh listing */
    int64_t next[64], want[64];
    size_t n = 0, nwant = 0;
    for (size_t i = 0; i < acc.n; i++) {
        bool gone = false;
        for (size_t j = 0; j < acc.nrm; j++)
            gone |= acc.rm[j] == acc.ids[i];
        if (!gone)
            next[n++] = acc.ids[i];
    }
    for (size_t j = 0; j < acc.nadd; j++) {
        bool reported = false;
        for (size_t i = 0; i < acc.nrm; i++)
            reported |= acc.rm[i] == acc.add[j];
        CHECK(reported); /* every passing chunk was first reported as removed */
        next[n++] = acc.add[j];
    }
    qsort(next, n, sizeof(int64_t), cmp_id);
    list_filter(s, &f, want, &nwant, err);
    CHECK_INT(n, nwant);
    CHECK_INT(nwant, 5); /* a (1), c (2 new), d (2) */
    for (size_t i = 0; i < n && i < nwant; i++)
        CHECK_INT(next[i], want[i]);

    /* nothing changed since now: nothing reported */
    acc.nrm = acc.nadd = 0;
    CHECK_OK(store_filter_changes(s, &f, now, 100, change_collect, &acc, &now, err), err);
    CHECK(acc.nrm == 0 && acc.nadd == 0);
    /* tombstones pruned past `since`: the changes can no longer be known */
    CHECK_OK(store_prune_tombstones(s, now, err), err);
    CHECK_INT(store_filter_changes(s, &f, since, 100, change_collect, &acc, &now, err), QR_ELIMIT);
    CHECK(strstr(err, "pruned"));
    CHECK_INT(store_filter_changes(NULL, &f, since, 100, change_collect, &acc, &now, err), QR_EINVAL);
    store_close(s);
    rm_tree(dir);
}
