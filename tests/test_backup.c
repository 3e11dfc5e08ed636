/*
 * Backups, restores and upgrades as an operator runs them: `quarry backup` while a writer thread
 * keeps committing documents and `quarry index build` keeps publishing generations, `quarry
 * restore` of that backup (SQLite, FTS5 and index checks; every document acknowledged before the
 * backup started is there), the same searches answered by a restored directory as by the
 * original (users of the slapd fixture, three modes), damaged backups refused without a byte
 * written, a non-empty target refused without --force and moved aside with it, the committed
 * data directory of the previous release (tests/fixtures/upgrade/v2) migrated and answering as
 * recorded, and a directory of a newer schema refused.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core.h"
#include "index/index.h"
#include "tests/harness.h"
#include "tests/test_util.h"

static char tmp[64];

static bool make_tmp(void)
{
    snprintf(tmp, sizeof(tmp), "/tmp/quarry-backup-XXXXXX");
    return mkdtemp(tmp) != NULL;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void cleanup(void)
{
    if (tmp[0] && sh("rm -rf '%s'", tmp) != 0)
        fprintf(stderr, "cannot remove %s\n", tmp);
}

/* Runs quarry with the fixture's LDAP settings on data directory <tmp>/<data>; its exit status,
 * stdout in out (may be NULL) and stderr in <tmp>/stderr. */
static int quarry(qr_buf *out, const char *data, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int quarry(qr_buf *out, const char *data, const char *fmt, ...)
{
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    const char *uri = getenv("QUARRY_TEST_LDAP_URI"), *base = getenv("QUARRY_TEST_LDAP_BASE");
    const char *dn = getenv("QUARRY_TEST_LDAP_BIND_DN"), *pw = getenv("QUARRY_TEST_LDAP_BIND_PW");
    snprintf(
        cmd, sizeof(cmd),
        "cd '%s' && env -u QUARRY_CONFIG QUARRY_LOG_LEVEL=warn QUARRY_LDAP_URI='%s' QUARRY_LDAP_BIND_DN='%s' "
        "QUARRY_LDAP_BIND_PASSWORD='%s' QUARRY_LDAP_USER_BASE='ou=people,%s' "
        "QUARRY_LDAP_GROUP_BASE='ou=groups,%s' %s --data '%s/%s' %s 2>'%s/stderr'%s",
        tmp, uri ? uri : "", dn ? dn : "", pw ? pw : "", base ? base : "", base ? base : "", QUARRY_BIN, tmp,
        data, args, tmp, out ? "" : " >/dev/null");
    if (out)
        return test_capture(cmd, out);
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* quarry's last stderr contains s. */
static bool stderr_has(const char *s)
{
    char path[128], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/stderr", tmp);
    bool has = qr_read_file(path, 1 << 20, &text, &len, NULL) == QR_OK && strstr(text, s) != NULL;
    if (!has)
        fprintf(stderr, "stderr was: %s\n", text ? text : "(none)");
    free(text);
    return has;
}

static bool need_ldap(void)
{
    if (getenv("QUARRY_TEST_LDAP_URI"))
        return true;
    printf("skipped: run under tests/fixtures/slapd-fixture.sh\n");
    exit(77);
}

/* A copy of the previous release's data directory at <tmp>/<name>. */
static bool copy_fixture(const char *name)
{
    return sh("cp -r '%s/tests/fixtures/upgrade/v2/data' '%s/%s'", QUARRY_SOURCE_DIR, tmp, name) == 0;
}

/* A listing of a tree with every file's checksum, to tell whether anything changed. */
static bool tree_digest(const char *dir, qr_buf *out)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "cd '%s' 2>/dev/null && find . -type f -o -type d | sort | while read f; do "
             "if [ -f \"$f\" ]; then echo \"$f $(sha256sum < \"$f\")\"; else echo \"$f/\"; fi; done",
             dir);
    return test_capture(cmd, out) == 0;
}

static bool exists(const char *rel)
{
    char p[256];
    struct stat sb;
    snprintf(p, sizeof(p), "%s/%s", tmp, rel);
    return lstat(p, &sb) == 0;
}

/* ---- search answers ------------------------------------------------------------------------ */

static const char *const users[] = {"alice", "bob", "frank", "erin"};
static const char *const modes[] = {"bm25", "vector", "hybrid"};
static const char *const queries[] = {"quarry gravel", "crusher"};

/* "id:score,..." of a search, scores rounded to 6 significant digits (the contract of --json). */
static bool search_answer(const char *data, const char *user, const char *mode, const char *query, char *ids,
                          size_t idlen, char *scored, size_t len)
{
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    int rc = quarry(&out, data, "search --as %s --mode %s -k 10 --json '%s'", user, mode, query);
    json_t *j = rc == 0 ? json_loads(qr_buf_str(&out), 0, NULL) : NULL;
    qr_buf_release(&out);
    if (!j)
        return false;
    json_t *results = json_object_get(j, "results");
    ids[0] = scored[0] = '\0';
    for (size_t i = 0; i < json_array_size(results); i++) {
        json_t *r = json_array_get(results, i);
        const char *id = json_string_value(json_object_get(r, "doc_id"));
        snprintf(ids + strlen(ids), idlen - strlen(ids), "%s%s", i ? "," : "", id ? id : "?");
        snprintf(scored + strlen(scored), len - strlen(scored), "%s%s:%lld:%.6g", i ? "," : "", id ? id : "?",
                 (long long)json_integer_value(json_object_get(r, "chunk_id")),
                 json_real_value(json_object_get(r, "score")));
    }
    json_decref(j);
    return true;
}

/* ---- a writer that acknowledges documents ---------------------------------------------------- */

typedef struct {
    char dir[128];
    int dim;
    char model[128];
    atomic_long acked; /* documents w-0 .. w-(acked-1) are committed */
    atomic_bool stop;
    atomic_bool failed; /* then err says why */
    char err[QR_ERR_LEN];
} writer;

static void *write_docs(void *arg)
{
    writer *w = arg;
    store *s = NULL;
    float *vec = calloc((size_t)w->dim, sizeof(float));
    if (!vec || store_open(w->dir, &s, w->err) || store_check_embedding(s, w->model, w->dim, w->err)) {
        atomic_store(&w->failed, true);
        goto out;
    }
    static const char *const acl[] = {"public"};
    for (long i = 0; !atomic_load(&w->stop) && i < 100000; i++) {
        char id[32], text[160], hash[65];
        snprintf(id, sizeof(id), "w-%ld", i);
        snprintf(text, sizeof(text), "Shift report %ld: the crusher moved %ld tonnes of gravel.", i,
                 i * 7 % 1000);
        snprintf(hash, sizeof(hash), "%064lx", (unsigned long)(i + 1));
        for (int d = 0; d < w->dim; d++)
            vec[d] = (float)((d * 31 + i) % 17) + 1.0f;
        store_chunk c = {.start = 0, .end = strlen(text), .headings = ""};
        store_document doc = {.doc_id = id,
                              .title = "Shift report",
                              .acl = acl,
                              .nacl = 1,
                              .content_hash = hash,
                              .text = text,
                              .text_len = strlen(text)};
        store_put_result r;
        if (store_put(s, &doc, &c, 1, vec, w->dim, &r, w->err)) {
            atomic_store(&w->failed, true);
            break;
        }
        atomic_store(&w->acked, i + 1); /* store_put returned: committed and synced */
    }
out:
    store_close(s);
    free(vec);
    return NULL;
}

typedef struct {
    atomic_bool stop;
    int builds;
} publisher;

/* Publishes new index generations (vector and BM25) over and over, as the maintainer would. */
static void *publish(void *arg)
{
    publisher *p = arg;
    while (!atomic_load(&p->stop)) {
        if (quarry(NULL, "data", "index build --gpu off") == 0)
            p->builds++;
    }
    return NULL;
}

/* `quarry serve` on <tmp>/data in the background; its pid, or -1. */
static pid_t start_server(void)
{
    char pidfile[128], *text = NULL;
    snprintf(pidfile, sizeof(pidfile), "%s/serve.pid", tmp);
    int port = 20000 + (int)(getpid() % 20000);
    /* quarry() sends the last command's output to files: here `true`, after serve went into the
     * background with its own */
    if (quarry(NULL, "data",
               "serve --set server.listen=127.0.0.1:%d --set index.refresh_ms=20 >'%s/serve.log' 2>&1 "
               "</dev/null & "
               "echo $! > '%s'; true",
               port, tmp, pidfile) != 0)
        return -1;
    pid_t pid = -1;
    if (qr_read_file(pidfile, 64, &text, NULL, NULL) == QR_OK)
        pid = (pid_t)atol(text);
    free(text);
    return pid;
}

static void stop_server(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 500 && kill(pid, 0) == 0; i++)
        usleep(20000);
}

/* A writer thread commits documents while `quarry backup` runs, and either `quarry serve` runs on
 * the same directory (its maintainer catching up) or `quarry index build` publishes generation
 * after generation. */
static void backup_during_writes(bool serving)
{
    CHECK(make_tmp());
    CHECK(copy_fixture("data"));
    char err[QR_ERR_LEN];
    store *s = NULL;
    store_stats st;
    writer w = {0};
    snprintf(w.dir, sizeof(w.dir), "%s/data", tmp);
    CHECK_MSG(store_open(w.dir, &s, err) == QR_OK && store_get_stats(s, &st, err) == QR_OK, "%s", err);
    w.dim = st.embedding_dim;
    snprintf(w.model, sizeof(w.model), "%s", st.embedding_model);
    store_close(s);
    publisher p = {0};
    pthread_t wt, pt;
    pid_t server = -1;
    if (serving)
        CHECK((server = start_server()) > 0);
    CHECK(pthread_create(&wt, NULL, write_docs, &w) == 0);
    if (!serving)
        CHECK(pthread_create(&pt, NULL, publish, &p) == 0);
    while (atomic_load(&w.acked) < 200 && !atomic_load(&w.failed))
        usleep(10000);
    long before = atomic_load(&w.acked);
    int rc = quarry(NULL, "data", "backup '%s/bk'", tmp);
    long after = atomic_load(&w.acked);
    atomic_store(&w.stop, true);
    atomic_store(&p.stop, true);
    pthread_join(wt, NULL);
    if (!serving)
        pthread_join(pt, NULL);
    stop_server(server);
    CHECK_MSG(!atomic_load(&w.failed), "writer: %s", w.err);
    CHECK_MSG(rc == 0, "backup exited %d", rc);
    printf("%s: acknowledged before the backup: %ld, after it: %ld, index builds meanwhile: %d\n",
           serving ? "serving" : "building", before, after, p.builds);

    CHECK_INT(quarry(NULL, "restored", "restore '%s/bk'", tmp), 0);
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/restored", tmp);
    index_backup_info info;
    CHECK_MSG(index_backup_verify(dir, &info, err) == QR_OK, "%s", err); /* SQLite, FTS5, index checksums */
    CHECK(info.has_vector && info.has_bm25);
    CHECK(info.vector_counter <= info.change_counter && info.bm25_counter <= info.change_counter);
    CHECK_MSG(store_open(dir, &s, err) == QR_OK, "%s", err);
    long missing = -1, present = 0;
    for (long i = 0; i < after + 1000; i++) {
        char id[32], hash[65];
        bool found = false;
        snprintf(id, sizeof(id), "w-%ld", i);
        if (store_get_hash(s, id, hash, &found, err)) {
            missing = i;
            break;
        }
        if (found)
            present++;
        else if (i < before && missing < 0)
            missing = i;
    }
    store_close(s);
    CHECK_MSG(missing < 0, "document w-%ld, acknowledged before the backup, is not in it", missing);
    CHECK(present >= before);
    /* the restored directory serves: the catch-up of the older index generations included */
    char ids[1024], scored[4096];
    CHECK(search_answer("restored", "bob", "bm25", "crusher", ids, sizeof(ids), scored, sizeof(scored)));
    CHECK(strstr(ids, "w-") != NULL);
    cleanup();
}

TEST(backup_during_ingest_restores_every_acknowledged_document)
{
    need_ldap();
    backup_during_writes(false);
}

TEST(backup_while_serving_restores_every_acknowledged_document)
{
    need_ldap();
    backup_during_writes(true);
}

TEST(restored_directory_answers_the_same_searches)
{
    need_ldap();
    CHECK(make_tmp());
    CHECK(copy_fixture("data"));
    CHECK_INT(quarry(NULL, "data", "keys create --name backup-test --scopes search"), 0);
    CHECK_INT(quarry(NULL, "data", "index build --gpu off"), 0); /* the current schema and generations */
    CHECK_INT(quarry(NULL, "data", "backup '%s/bk'", tmp), 0);
    CHECK(!exists("bk.tmp"));
    CHECK_INT(quarry(NULL, "restored", "restore '%s/bk'", tmp), 0);
    int compared = 0, nonempty = 0;
    for (size_t u = 0; u < sizeof(users) / sizeof(users[0]); u++)
        for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++)
            for (size_t q = 0; q < sizeof(queries) / sizeof(queries[0]); q++) {
                char ids1[1024], ids2[1024], s1[4096], s2[4096];
                CHECK(search_answer("data", users[u], modes[m], queries[q], ids1, sizeof(ids1), s1,
                                    sizeof(s1)));
                CHECK(search_answer("restored", users[u], modes[m], queries[q], ids2, sizeof(ids2), s2,
                                    sizeof(s2)));
                CHECK_MSG(strcmp(s1, s2) == 0, "%s %s '%s': original %s, restored %s", users[u], modes[m],
                          queries[q], s1, s2);
                compared++;
                nonempty += ids1[0] != '\0';
            }
    CHECK_INT(compared, 24);
    CHECK(nonempty >= 20);
    /* the auth state came along, private */
    char a[128], b[128];
    struct stat sb;
    snprintf(a, sizeof(a), "%s/data/auth/keys.json", tmp);
    snprintf(b, sizeof(b), "%s/restored/auth/keys.json", tmp);
    CHECK(sh("cmp -s '%s' '%s'", a, b) == 0);
    CHECK(stat(b, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    snprintf(b, sizeof(b), "%s/bk/quarry.db", tmp);
    CHECK(stat(b, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    /* a backup never goes into a non-empty directory */
    CHECK_INT(quarry(NULL, "data", "backup '%s/data'", tmp), 4);
    CHECK(stderr_has("is not empty"));
    cleanup();
}

typedef struct {
    const char *name;
    const char *damage; /* shell run in the damaged copy */
    const char *names;  /* what the refusal must name */
} damage_case;

TEST(damaged_backups_are_refused_and_change_nothing)
{
    need_ldap();
    CHECK(make_tmp());
    CHECK(copy_fixture("data"));
    CHECK_INT(quarry(NULL, "data", "backup '%s/bk'", tmp), 0);
    static const damage_case cases[] = {
        {"flipped byte", "printf '\\377' | dd of=quarry.db bs=1 seek=5000 conv=notrunc 2>/dev/null",
         "quarry.db"},
        {"truncated", "truncate -s 1000 vindex/gen-1.vec", "gen-1.vec"},
        {"removed file", "rm bm25/current.bm25", "current.bm25"},
        {"edited manifest", "sed -i 's/\"store_change_counter\": 5/\"store_change_counter\": 9/' MANIFEST",
         "MANIFEST"},
        {"manifest and its digest edited",
         "sed -i 's/\"size\": 182/\"size\": 181/' MANIFEST && sha256sum MANIFEST > MANIFEST.sha256",
         "vindex/MANIFEST"},
        {"extra file", "echo x > vindex/gen-9.faiss", "gen-9.faiss"},
        {"newer schema",
         "sed -i 's/\"schema_version\": 2/\"schema_version\": 999/' MANIFEST && sha256sum MANIFEST > "
         "MANIFEST.sha256",
         "this quarry knows up to"},
    };
    /* a non-empty target with --force: still refused, still untouched */
    CHECK(sh("mkdir -p '%s/target' && echo keep > '%s/target/file'", tmp, tmp) == 0);
    qr_buf before, after;
    qr_buf_init(&before, 1 << 20);
    qr_buf_init(&after, 1 << 20);
    char target[128];
    snprintf(target, sizeof(target), "%s/target", tmp);
    CHECK(tree_digest(target, &before));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK(sh("rm -rf '%s/bad' && cp -a '%s/bk' '%s/bad' && cd '%s/bad' && %s", tmp, tmp, tmp, tmp,
                 cases[i].damage) == 0);
        CHECK_MSG(quarry(NULL, "fresh", "restore '%s/bad'", tmp) == 3, "%s: not refused", cases[i].name);
        CHECK_MSG(stderr_has(cases[i].names), "%s: the message does not name %s", cases[i].name,
                  cases[i].names);
        CHECK_MSG(!exists("fresh") && !exists("fresh.restore.tmp"), "%s: something was written",
                  cases[i].name);
        CHECK_MSG(quarry(NULL, "target", "restore --force '%s/bad'", tmp) == 3, "%s: not refused",
                  cases[i].name);
        CHECK(tree_digest(target, &after));
        CHECK_MSG(strcmp(qr_buf_str(&before), qr_buf_str(&after)) == 0, "%s: the target changed",
                  cases[i].name);
    }
    qr_buf_release(&before);
    qr_buf_release(&after);
    /* the undamaged backup still restores */
    CHECK_INT(quarry(NULL, "fresh", "restore '%s/bk'", tmp), 0);
    cleanup();
}

TEST(restore_into_non_empty_directory_needs_force)
{
    need_ldap();
    CHECK(make_tmp());
    CHECK(copy_fixture("data"));
    CHECK_INT(quarry(NULL, "data", "backup '%s/bk'", tmp), 0);
    CHECK(sh("mkdir -p '%s/target' && echo keep > '%s/target/file'", tmp, tmp) == 0);
    CHECK_INT(quarry(NULL, "target", "restore '%s/bk'", tmp), 4);
    CHECK(stderr_has("is not empty"));
    CHECK(exists("target/file") && !exists("target/quarry.db"));
    /* an empty directory is fine */
    CHECK(sh("mkdir '%s/empty'", tmp) == 0);
    CHECK_INT(quarry(NULL, "empty", "restore '%s/bk'", tmp), 0);
    CHECK(exists("empty/quarry.db"));
    /* --force moves the old one aside, never deletes it */
    qr_buf out;
    qr_buf_init(&out, 4096);
    CHECK_INT(quarry(&out, "target", "restore --force '%s/bk'", tmp), 0);
    CHECK(exists("target/quarry.db") && !exists("target/file"));
    const char *aside = strstr(qr_buf_str(&out), "moved to '");
    CHECK(aside != NULL);
    char path[256];
    snprintf(path, sizeof(path), "%s", aside + strlen("moved to '"));
    *strchr(path, '\'') = '\0';
    char keep[300];
    snprintf(keep, sizeof(keep), "%s/file", path);
    CHECK(access(keep, F_OK) == 0);
    qr_buf_release(&out);
    cleanup();
}

/* ---- upgrades -------------------------------------------------------------------------------- */

static int schema_of(const char *dir)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s/quarry.db", tmp, dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT max(version) FROM schema_version", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

TEST(previous_data_directory_migrates_and_answers_the_same)
{
    need_ldap();
    CHECK(make_tmp());
    CHECK(copy_fixture("data"));
    CHECK_INT(schema_of("data"), 2); /* what the previous release wrote */
    char path[256], *expected = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/tests/fixtures/upgrade/v2/expected.tsv", QUARRY_SOURCE_DIR);
    CHECK(qr_read_file(path, 1 << 20, &expected, &len, NULL) == QR_OK);
    int lines = 0;
    for (char *line = strtok(expected, "\n"); line; line = strtok(NULL, "\n")) {
        char user[32], mode[32], query[64], want[1024] = "", ids[1024], scored[4096];
        if (sscanf(line, "%31[^\t]\t%31[^\t]\t%63[^\t]\t%1023[^\n]", user, mode, query, want) < 3)
            continue;
        CHECK(search_answer("data", user, mode, query, ids, sizeof(ids), scored, sizeof(scored)));
        CHECK_MSG(strcmp(ids, want) == 0, "%s %s '%s': recorded %s, now %s", user, mode, query, want, ids);
        lines++;
    }
    free(expected);
    CHECK_INT(lines, 24);
    CHECK_INT(schema_of("data"), index_store_schema_version()); /* migrated on first open */
    char dir[128], err[QR_ERR_LEN];
    index_backup_info info;
    snprintf(dir, sizeof(dir), "%s/data", tmp);
    CHECK_MSG(index_backup_verify(dir, &info, err) == QR_OK, "%s", err);
    cleanup();
}

TEST(newer_data_directory_is_refused)
{
    need_ldap();
    CHECK(make_tmp());
    CHECK(copy_fixture("data"));
    int newer = index_store_schema_version() + 1;
    char path[256], sql[128];
    snprintf(path, sizeof(path), "%s/data/quarry.db", tmp);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    snprintf(sql, sizeof(sql), "INSERT INTO schema_version(version, applied_ms) VALUES (%d, 0)", newer);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    qr_buf before, after;
    qr_buf_init(&before, 1 << 16);
    qr_buf_init(&after, 1 << 16);
    snprintf(path, sizeof(path), "%s/data", tmp);
    CHECK(tree_digest(path, &before));
    char want[128];
    snprintf(want, sizeof(want), "data directory has schema %d, this quarry knows up to %d: upgrade quarry",
             newer, index_store_schema_version());
    CHECK_INT(quarry(NULL, "data", "stats"), 1);
    CHECK(stderr_has(want));
    CHECK(quarry(NULL, "data", "search --as alice quarry") != 0);
    CHECK(stderr_has(want));
    CHECK(tree_digest(path, &after));
    CHECK_MSG(strcmp(qr_buf_str(&before), qr_buf_str(&after)) == 0,
              "the newer directory was changed: %s\n-- now --\n%s", qr_buf_str(&before), qr_buf_str(&after));
    qr_buf_release(&before);
    qr_buf_release(&after);
    CHECK_INT(schema_of("data"), newer); /* nothing migrated back or forth */
    cleanup();
}
