/*
 * End-to-end tests of ingestion as an administrator runs it: `quarry ingest` over folders of real
 * files and over JSON lines, then `quarry stats` and `quarry delete`, against a real store in a
 * temporary data directory. Covers re-runs (unchanged), content and ACL changes, hidden files,
 * symbolic links leaving the tree, malformed lines and the exit status when anything failed, and
 * that several preparing threads (ingest.threads) leave exactly the store one thread leaves, and
 * that a threaded ingest killed mid-way leaves every document whole or absent.
 */
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core.h"
#include "index/index.h"
#include "tests/harness.h"
#include "tests/store_raw.h"
#include "tests/test_util.h"

static char tmp[64];

/* A fresh temporary folder for one case's documents and data. */
static bool make_tmp(void)
{
    snprintf(tmp, sizeof(tmp), "/tmp/quarry-pipeline-XXXXXX");
    return mkdtemp(tmp) != NULL;
}

static void cleanup(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmp);
}

static bool write_bytes(const char *rel, const char *text, size_t len)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmp, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", path);
    if (system(cmd) != 0)
        return false;
    *slash = '/';
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(text, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

static bool write_file(const char *rel, const char *text)
{
    return write_bytes(rel, text, strlen(text));
}

/* Runs quarry with --data <tmp>/data and the given arguments; output in out. */
static int quarry(qr_buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int quarry(qr_buf *out, const char *fmt, ...)
{
    char args[1024], cmd[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "cd '%s' && env -u QUARRY_CONFIG %s --data '%s/data' %s 2>&1", tmp, QUARRY_BIN,
             tmp, args);
    return test_capture(cmd, out);
}

static bool has(const qr_buf *out, const char *needle)
{
    return strstr(qr_buf_str(out), needle) != NULL;
}

/* Opens the case's store to look at a document directly. */
static store_doc_info *get_doc(const char *doc_id)
{
    char dir[128], err[QR_ERR_LEN];
    snprintf(dir, sizeof(dir), "%s/data", tmp);
    store *s = NULL;
    store_doc_info *info = NULL;
    if (store_open(dir, &s, err) == QR_OK)
        store_get_document(s, doc_id, true, &info, err);
    store_close(s);
    return info;
}

TEST(folder_ingest_rerun_update_and_delete)
{
    CHECK(make_tmp());
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK(write_file("docs/travel.md",
                     "# Travel policy\n\nBook trains.\n\n## Reimbursement\n\nKeep receipts."));
    CHECK(write_file("docs/notes.txt", "Plain notes about the quarterly budget."));
    CHECK(write_file("docs/site/index.html",
                     "<html><head><title>Intranet</title><script>evil()</script></head>"
                     "<body><nav>menu</nav><h1>Welcome</h1><p>Hello staff.</p></body></html>"));
    CHECK(write_file("docs/.hidden/secret.txt", "must not be ingested"));
    CHECK(write_file("docs/.dotfile", "must not be ingested either"));
    CHECK_INT(quarry(&out, "ingest --acl group:staff --acl user:alice docs"), 0);
    CHECK_MSG(has(&out, "3 added, 0 updated, 0 acl/metadata updated, 0 unchanged, 0 failed"), "%s",
              qr_buf_str(&out));
    CHECK_INT(quarry(&out, "stats --json"), 0);
    CHECK_MSG(has(&out, "\"documents\":3"), "%s", qr_buf_str(&out));
    CHECK(has(&out, "\"embedding_model\":\"local-hash-v1\""));

    /* doc ids are paths relative to the ingested root; headings and ACL are kept */
    store_doc_info *info = get_doc("travel.md");
    CHECK(info != NULL);
    CHECK_STR(info->content_type, "text/markdown");
    CHECK_INT(info->nacl, 2);
    bool reimbursement = false;
    for (size_t i = 0; i < info->nchunks; i++)
        if (strstr(info->chunks[i].headings, "Travel policy > Reimbursement"))
            reimbursement = true;
    CHECK(reimbursement);
    store_doc_info_free(info);
    info = get_doc("site/index.html");
    CHECK(info != NULL);
    CHECK_STR(info->title, "Intranet");
    for (size_t i = 0; i < info->nchunks; i++) {
        CHECK(strstr(info->chunks[i].text, "evil") == NULL);
        CHECK(strstr(info->chunks[i].text, "menu") == NULL);
    }
    store_doc_info_free(info);
    CHECK(get_doc(".hidden/secret.txt") == NULL);

    /* a second run changes nothing */
    CHECK_INT(quarry(&out, "ingest --acl group:staff --acl user:alice docs"), 0);
    CHECK_MSG(has(&out, "0 added, 0 updated, 0 acl/metadata updated, 3 unchanged"), "%s", qr_buf_str(&out));
    /* an ACL change touches only ACLs; a content change replaces the chunks */
    info = get_doc("notes.txt");
    CHECK(info && info->nchunks == 1);
    int64_t old_chunk = info->chunks[0].chunk_id;
    store_doc_info_free(info);
    CHECK_INT(quarry(&out, "ingest --acl group:finance docs"), 0);
    CHECK_MSG(has(&out, "3 acl/metadata updated"), "%s", qr_buf_str(&out));
    info = get_doc("notes.txt");
    CHECK(info && info->nacl == 1 && strcmp(info->acl[0], "group:finance") == 0);
    CHECK_INT(info->chunks[0].chunk_id, old_chunk);
    store_doc_info_free(info);
    CHECK(write_file("docs/notes.txt", "Revised notes about the annual budget."));
    CHECK_INT(quarry(&out, "ingest --acl group:finance docs"), 0);
    CHECK_MSG(has(&out, "1 updated") && has(&out, "2 unchanged"), "%s", qr_buf_str(&out));
    info = get_doc("notes.txt");
    CHECK(info && info->nchunks == 1 && info->chunks[0].chunk_id > old_chunk);
    CHECK(strstr(info->chunks[0].text, "annual") != NULL);
    store_doc_info_free(info);

    CHECK_INT(quarry(&out, "delete notes.txt"), 0);
    CHECK(get_doc("notes.txt") == NULL);
    CHECK_INT(quarry(&out, "delete notes.txt"), 1);
    CHECK(has(&out, "notes.txt"));
    CHECK_INT(quarry(&out, "stats"), 0);
    CHECK(has(&out, "documents         2"));
    qr_buf_release(&out);
    cleanup();
}

TEST(bad_input_is_reported_and_counted)
{
    CHECK(make_tmp());
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK(write_file("docs/good.txt", "A good document."));
    CHECK(write_bytes("docs/blob.bin", "\x01\x02\x03\x00\xff binary junk", 18));
    CHECK(write_file("docs/latin1.txt", "caf\xe9 cr\xe8me: not UTF-8 \xc3\xa9"));
    CHECK(write_file("outside.txt", "outside the tree"));
    char link[128];
    snprintf(link, sizeof(link), "%s/docs/escape.txt", tmp);
    CHECK(symlink("../outside.txt", link) == 0);
    CHECK_INT(quarry(&out, "ingest --acl public docs"), 1);
    CHECK_MSG(has(&out, "2 added") && has(&out, "2 failed"), "%s", qr_buf_str(&out));
    CHECK(has(&out, "escape.txt: symbolic link leaves the ingested tree"));
    CHECK(has(&out, "blob.bin:"));
    CHECK(get_doc("escape.txt") == NULL);
    CHECK(get_doc("blob.bin") == NULL);
    store_doc_info *info = get_doc("latin1.txt"); /* invalid UTF-8 repaired, never stored invalid */
    CHECK(info != NULL && info->nchunks == 1);
    CHECK(qr_utf8_valid(info->chunks[0].text, info->chunks[0].text_len));
    CHECK(strstr(info->chunks[0].text, "caf\xEF\xBF\xBD cr\xEF\xBF\xBDme") != NULL);
    store_doc_info_free(info);

    /* usage errors change nothing */
    CHECK_INT(quarry(&out, "ingest --acl 'admins' docs"), 2);
    CHECK(has(&out, "invalid principal 'admins'"));
    CHECK_INT(quarry(&out, "ingest --acl 'user: ava' docs"), 2);
    CHECK_MSG(has(&out, "invalid principal 'user: ava': the name starts or ends with a space"), "%s",
              qr_buf_str(&out));
    /* a name in capitals is stored as login spells it */
    CHECK_INT(quarry(&out, "ingest --acl group:Engineering --acl user:AVA docs/good.txt"), 0);
    info = get_doc("good.txt");
    CHECK(info && info->nacl == 2 && strcmp(info->acl[0], "group:engineering") == 0 &&
          strcmp(info->acl[1], "user:ava") == 0);
    store_doc_info_free(info);
    CHECK_INT(quarry(&out, "ingest"), 2);
    CHECK_INT(quarry(&out, "ingest --bogus docs"), 2);
    CHECK_INT(quarry(&out, "delete"), 2);
    CHECK(has(&out, "give at least one DOC_ID"));
    CHECK_INT(quarry(&out, "stats --bogus"), 2);
    CHECK(has(&out, "unknown argument '--bogus'"));
    CHECK_INT(quarry(&out, "ingest --acl public no-such-folder"), 1);
    CHECK(has(&out, "no-such-folder"));
    qr_buf_release(&out);
    cleanup();
}

TEST(jsonl_ingest_with_malformed_lines)
{
    CHECK(make_tmp());
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK(write_file("corpus.jsonl",
                     "{\"_id\":\"d1\",\"title\":\"Wings\",\"text\":\"Lift on swept wings at high speed.\"}\n"
                     "{\"_id\":\"d2\",\"title\":\"Heat\",\"text\":\"Heat transfer in boundary layers.\","
                     "\"acl\":[\"group:AERO\"],\"metadata\":{\"year\":1962}}\n"
                     "not json at all\n"
                     "{\"title\":\"no id\",\"text\":\"x\"}\n"
                     "{\"_id\":\"d3\",\"text\":\"bad acl\",\"acl\":[\"root\"]}\n"
                     "\n"
                     "{\"_id\":\"d4\",\"text\":\"caf\xc3\xa9 and broken \xff bytes\"}\n"));
    CHECK_INT(quarry(&out, "ingest --acl public --jsonl corpus.jsonl"), 1);
    CHECK_MSG(has(&out, "2 added") && has(&out, "4 failed"), "%s", qr_buf_str(&out));
    CHECK_MSG(has(&out, "corpus.jsonl:7: unable to decode byte"), "%s",
              qr_buf_str(&out)); /* JSON must be UTF-8 */
    CHECK(has(&out, "corpus.jsonl:3:"));
    CHECK(has(&out, "corpus.jsonl:4: expected an object"));
    CHECK(has(&out, "invalid principal 'root'"));
    store_doc_info *info = get_doc("d2");
    CHECK(info != NULL);
    CHECK_STR(info->title, "Heat");
    CHECK(info->nacl == 1 && strcmp(info->acl[0], "group:aero") == 0); /* as login spells the group */
    CHECK(strstr(info->metadata_json, "1962") != NULL);
    store_doc_info_free(info);
    CHECK(get_doc("d4") == NULL);
    CHECK_INT(quarry(&out, "ingest --jsonl missing.jsonl"), 1);
    CHECK(has(&out, "missing.jsonl"));
    qr_buf_release(&out);
    cleanup();
}

TEST(cranfield_loads_then_is_unchanged)
{
    const char *corpus = QUARRY_DATASETS "/cranfield/corpus.jsonl";
    if (access(corpus, R_OK) != 0) {
        printf("skipped: %s not found (set QUARRY_DATASETS when configuring)\n", corpus);
        exit(77);
    }
    CHECK(make_tmp());
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_INT(quarry(&out, "ingest --acl public --jsonl %s", corpus), 0);
    CHECK_MSG(has(&out, "1400 added"), "%s", qr_buf_str(&out));
    CHECK_INT(quarry(&out, "stats --json"), 0);
    CHECK(has(&out, "\"documents\":1400"));
    CHECK_INT(quarry(&out, "ingest --acl public --jsonl %s", corpus), 0);
    CHECK_MSG(has(&out, "1400 unchanged"), "%s", qr_buf_str(&out));
    qr_buf_release(&out);
    cleanup();
}

/* ---- several preparing threads write what one does ----------------------------------------- */

/* Every row of one query over the store under dir, as text (vectors by value, to a tolerance
 * checked apart), one line per row. */
static bool dump_query(sqlite3 *db, const char *sql, qr_buf *out)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
        return false;
    }
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(q); i++) {
            const unsigned char *v = sqlite3_column_text(q, i);
            qr_buf_printf(out, "%s%s", i ? "|" : "", v ? (const char *)v : "NULL");
        }
        qr_buf_printf(out, "\n");
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE;
}

static const char *const same_store_queries[] = {
    "SELECT id, doc_id, title, uri, content_type, metadata, content_hash, text_len, chunk_count, version,"
    " changed, fts_changed FROM documents ORDER BY id",
    "SELECT id, doc, ordinal, start, \"end\", headings, body, added FROM chunks ORDER BY id",
    "SELECT doc, principal FROM acl ORDER BY doc, principal",
    "SELECT chunk_id, counter FROM deleted_chunks ORDER BY chunk_id",
    "SELECT key, value FROM meta WHERE key IN ('change_counter', 'embedding_model', 'embedding_dim')"
    " ORDER BY key",
    "SELECT term, doc, col, offset FROM temp.fts_instances ORDER BY term, doc, col, offset",
};

/* Opens data dir's store file for the comparison (with a view of the FTS index's instances). */
static sqlite3 *open_store_db(const char *dir)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmp, dir);
    sqlite3 *db = store_raw_open(path, SQLITE_OPEN_READWRITE);
    if (!db ||
        sqlite3_exec(db, "CREATE VIRTUAL TABLE temp.fts_instances USING fts5vocab(fts, chunks_fts, instance)",
                     NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", path, db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

/* The number of rows one query over the store file under dir answers with (its first column). */
static long long count_of(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *q = NULL;
    long long n = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        n = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return n;
}

/* The two stores' vectors files (under tmp/da and tmp/db), row by row, within float tolerance;
 * *compared gets the number of rows of live chunks compared (ids from the store a). */
static bool same_vectors(const char *da, const char *db, sqlite3 *a, size_t *compared)
{
    char pa[256], pb[256];
    snprintf(pa, sizeof(pa), "%s/%s/quarry.vec", tmp, da);
    snprintf(pb, sizeof(pb), "%s/%s/quarry.vec", tmp, db);
    int fa = open(pa, O_RDONLY), fb = open(pb, O_RDONLY);
    long long dim = count_of(a, "SELECT value FROM meta WHERE key = 'embedding_dim'");
    sqlite3_stmt *q = NULL;
    bool same = fa >= 0 && fb >= 0 && dim > 0 && dim <= 4096 &&
                sqlite3_prepare_v2(a, "SELECT id FROM chunks ORDER BY id", -1, &q, NULL) == SQLITE_OK;
    float *va = malloc(4096 * sizeof(float)), *vb = malloc(4096 * sizeof(float));
    size_t rb = (size_t)dim * sizeof(float);
    *compared = 0;
    while (same && va && vb && sqlite3_step(q) == SQLITE_ROW) {
        off_t at = (off_t)(4096 + (size_t)sqlite3_column_int64(q, 0) * rb);
        same = pread(fa, va, rb, at) == (ssize_t)rb && pread(fb, vb, rb, at) == (ssize_t)rb;
        for (long long i = 0; same && i < dim; i++)
            same = fabsf(va[i] - vb[i]) <= 1e-6f;
        (*compared)++;
    }
    sqlite3_finalize(q);
    free(va);
    free(vb);
    if (fa >= 0)
        close(fa);
    if (fb >= 0)
        close(fb);
    return same && va && vb;
}

/* A corpus of documents of one to many chunks, with headings, ACLs and metadata, a document
 * given twice (its second text wins), one line repeated unchanged, bad lines among them. */
static bool write_threads_corpus(void)
{
    qr_buf c;
    qr_buf_init(&c, 16 << 20);
    static const char *const words[] = {"wing",  "lift",     "shock",   "boundary", "layer",     "heat",
                                        "flow",  "pressure", "nozzle",  "vortex",   "drag",      "mach",
                                        "plate", "cylinder", "laminar", "surface",  "caf\\u00e9"};
    unsigned r = 12345;
    for (int d = 0; d < 240; d++) {
        int paragraphs = 1 + d % 7, per = 20 + (d * 37) % 180;
        qr_buf_printf(&c, "{\"_id\":\"doc-%03d\",\"title\":\"Report %d on %s\",\"text\":\"", d, d,
                      words[d % 17]);
        for (int p = 0; p < paragraphs; p++) {
            if (p && d % 3 == 0)
                qr_buf_printf(&c, "\\n\\n# Part %d\\n\\n", p);
            else if (p)
                qr_buf_printf(&c, "\\n\\n");
            for (int w = 0; w < per; w++) {
                r = r * 1103515245u + 12345u;
                qr_buf_printf(&c, "%s%s%s", w ? " " : "", words[(r >> 16) % 17],
                              (r >> 8) % 11 == 0 ? "." : "");
            }
        }
        qr_buf_printf(&c, "\"");
        if (d % 4 == 1)
            qr_buf_printf(&c, ",\"acl\":[\"group:Aero\",\"user:alice\"]");
        if (d % 5 == 2)
            qr_buf_printf(&c, ",\"metadata\":{\"year\":%d}", 1950 + d % 30);
        qr_buf_printf(&c, "}\n");
        if (d == 50)
            qr_buf_printf(&c,
                          "{\"_id\":\"doc-010\",\"title\":\"Again\",\"text\":\"The second text of ten.\"}\n");
        if (d == 60)
            qr_buf_printf(&c, "{\"_id\":\"doc-020\",\"text\":\"bad acl\",\"acl\":[\"root\"]}\nnot json\n");
        if (d == 70)
            qr_buf_printf(&c,
                          "{\"_id\":\"doc-010\",\"title\":\"Again\",\"text\":\"The second text of ten.\"}\n");
    }
    bool ok = !qr_buf_failed(&c) && write_bytes("threads.jsonl", qr_buf_str(&c), qr_buf_len(&c));
    qr_buf_release(&c);
    return ok;
}

TEST(threads_write_the_same_store_as_one)
{
    CHECK(make_tmp());
    CHECK(write_threads_corpus());
    CHECK(write_file("docs/a.md",
                     "# Alpha\n\nText of alpha under its heading.\n\n## Beta\n\nMore text here.\n"));
    CHECK(write_file("docs/b.html", "<html><head><title>Bee</title></head><body><h1>Bee</h1><p>Sandboxed "
                                    "HTML text.</p></body></html>"));
    CHECK(write_file("docs/c.txt", "plain text document"));
    qr_buf one, many;
    qr_buf_init(&one, 1 << 20);
    qr_buf_init(&many, 1 << 20);
    const char *dirs[] = {"data1", "data4"};
    const char *threads[] = {"1", "4"};
    qr_buf *outs[] = {&one, &many};
    for (int i = 0; i < 2; i++) {
        /* the run's summary lines, without the time it took */
        CHECK_INT(quarry(outs[i], "--set ingest.threads=%s ingest --acl public docs --jsonl threads.jsonl",
                         threads[i]),
                  1);
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "mv '%s/data' '%s/%s'", tmp, tmp, dirs[i]);
        CHECK(system(cmd) == 0);
    }
    CHECK_MSG(has(&one, "(1 preparing thread, "), "%s", qr_buf_str(&one));
    CHECK_MSG(has(&many, "(4 preparing threads, "), "%s", qr_buf_str(&many));
    const char *o = strstr(qr_buf_str(&one), " writing): "), *m = strstr(qr_buf_str(&many), " writing): ");
    CHECK(o && m);
    CHECK_STR(o, m); /* counts and the failures listed */
    CHECK_MSG(has(&many, "243 added, 1 updated, 0 acl/metadata updated, 1 unchanged, 2 failed"), "%s",
              qr_buf_str(&many));
    sqlite3 *a = open_store_db("data1"), *b = open_store_db("data4");
    CHECK(a && b);
    for (size_t i = 0; i < sizeof(same_store_queries) / sizeof(same_store_queries[0]); i++) {
        qr_buf da, db;
        qr_buf_init(&da, 256 << 20);
        qr_buf_init(&db, 256 << 20);
        CHECK(dump_query(a, same_store_queries[i], &da));
        CHECK(dump_query(b, same_store_queries[i], &db));
        CHECK_MSG(qr_buf_len(&da) > 2, "%s: no rows", same_store_queries[i]);
        CHECK_MSG(strcmp(qr_buf_str(&da), qr_buf_str(&db)) == 0, "differs: %s", same_store_queries[i]);
        qr_buf_release(&da);
        qr_buf_release(&db);
    }
    size_t compared = 0;
    CHECK(same_vectors("data1", "data4", a, &compared));
    CHECK(compared > 240);
    sqlite3_close(a);
    sqlite3_close(b);
    qr_buf_release(&one);
    qr_buf_release(&many);
    cleanup();
}

/* quarry ingest runs in the store's bulk mode (batches under synchronous=NORMAL, checkpoints on a
 * thread of their own, one synced commit at the end): a kill mid-load, during a checkpoint or
 * not, must still leave whole documents and a consistent full-text index. */
TEST(killed_threaded_ingest_leaves_whole_documents)
{
    CHECK(make_tmp());
    /* enough documents for several batches: the kill lands between or inside commits */
    qr_buf c;
    qr_buf_init(&c, 64 << 20);
    for (int d = 0; d < 30000; d++) {
        qr_buf_printf(&c, "{\"_id\":\"k%05d\",\"title\":\"Note %d\",\"text\":\"", d, d);
        for (int w = 0; w < 60 + d % 200; w++)
            qr_buf_printf(&c, "%sword%d", w ? " " : "", (d * 7 + w * 13) % 997);
        qr_buf_printf(&c, "\",\"acl\":[\"user:u%d\"]}\n", d % 50);
    }
    CHECK(!qr_buf_failed(&c) && write_bytes("kill.jsonl", qr_buf_str(&c), qr_buf_len(&c)));
    qr_buf_release(&c);
    char data[128], db_path[160];
    snprintf(data, sizeof(data), "%s/data", tmp);
    snprintf(db_path, sizeof(db_path), "%s/quarry.db", data);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char kill_jsonl[128];
        snprintf(kill_jsonl, sizeof(kill_jsonl), "%s/kill.jsonl", tmp);
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr))
            _exit(126);
        execl(QUARRY_BIN, QUARRY_BIN, "--data", data, "--set", "ingest.threads=3", "ingest", "--acl",
              "public", "--jsonl", kill_jsonl, (char *)NULL);
        _exit(127);
    }
    /* killed once its first batch is visible to a reader */
    long long seen = 0;
    for (int i = 0; i < 6000 && seen <= 0; i++) {
        usleep(10000);
        sqlite3 *db = NULL;
        if (access(db_path, R_OK) == 0 &&
            sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK)
            seen = count_of(db, "SELECT count(*) FROM documents");
        sqlite3_close(db);
    }
    kill(pid, SIGKILL);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(seen > 0, "no batch was committed before the kill");
    sqlite3 *db = open_store_db("data");
    CHECK(db);
    long long docs = count_of(db, "SELECT count(*) FROM documents");
    printf("killed with %lld of 30000 documents stored\n", docs);
    CHECK(docs >= seen);
    /* each stored document has all its chunks, each chunk its vector and FTS row, each document its ACL */
    CHECK_INT(count_of(db, "SELECT count(*) FROM documents d"
                           " WHERE chunk_count != (SELECT count(*) FROM chunks c WHERE c.doc = d.id)"),
              0);
    /* the vectors file holds every chunk's row (and the rest of the store's rules hold) */
    char vdir[256];
    snprintf(vdir, sizeof(vdir), "%s/data", tmp);
    store *vs = NULL;
    char err[QR_ERR_LEN] = "";
    CHECK_OK(store_open(vdir, &vs, err), err);
    CHECK_OK(store_verify(vs, err), err);
    store_close(vs);
    CHECK_INT(
        count_of(
            db, "SELECT count(*) FROM documents d WHERE NOT EXISTS (SELECT 1 FROM acl a WHERE a.doc = d.id)"),
        0);
    CHECK_INT(count_of(db, "SELECT count(DISTINCT doc) FROM temp.fts_instances"),
              count_of(db, "SELECT count(*) FROM chunks"));
    CHECK(sqlite3_exec(db, "INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)", NULL,
                       NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    /* the same command again completes the load, the stored documents unchanged */
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    CHECK_INT(quarry(&out, "--set ingest.threads=3 ingest --acl public --jsonl kill.jsonl"), 0);
    char want[64];
    snprintf(want, sizeof(want), "%lld added", 30000 - docs);
    CHECK_MSG(docs == 30000 || has(&out, want), "%s", qr_buf_str(&out));
    qr_buf_release(&out);
    cleanup();
}
