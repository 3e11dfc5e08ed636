/*
 * bench_ingest_fts: the anchor for `quarry ingest --jsonl`: a bare FTS5 insert of the very chunk
 * texts quarry would index (title, heading path and body of each chunk, made by ingest's own
 * extraction and chunking with the default settings, which are not timed), into a fresh SQLite
 * database in WAL mode with synchronous=FULL, one transaction, the store's tokenizer (porter
 * unicode61). Only the open, the inserts and the commit are timed. Options set FTS5's automerge,
 * crisismerge, pgsz and hashsize, or run 'optimize' after the load (timed), to measure their effect, and
 * --normal runs it under synchronous=NORMAL (what `quarry ingest`'s batches use in bulk mode), to
 * be reported beside the FULL anchor, never instead of it.
 * bench/ingest_e2e.sh runs it beside `quarry ingest` on the same input and prints the ratio.
 *
 * usage: bench_ingest_fts [--automerge N] [--crisismerge N] [--pgsz N] [--hashsize N] [--optimize] [--normal]
 * CORPUS.jsonl DB prints: seconds chunks input_bytes cpu_seconds
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ingest/ingest.h"

typedef struct {
    char *title, *headings, *body;
} row;

static int exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "bench_ingest_fts: %s: %s\n", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int automerge = -1, crisismerge = -1, pgsz = -1, hashsize = -1;
    bool optimize = false, normal = false;
    const char *in = NULL, *dbpath = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--automerge") == 0 && i + 1 < argc)
            automerge = atoi(argv[++i]);
        else if (strcmp(argv[i], "--crisismerge") == 0 && i + 1 < argc)
            crisismerge = atoi(argv[++i]);
        else if (strcmp(argv[i], "--pgsz") == 0 && i + 1 < argc)
            pgsz = atoi(argv[++i]);
        else if (strcmp(argv[i], "--hashsize") == 0 && i + 1 < argc)
            hashsize = atoi(argv[++i]);
        else if (strcmp(argv[i], "--optimize") == 0)
            optimize = true;
        else if (strcmp(argv[i], "--normal") == 0)
            normal = true;
        else if (!in)
            in = argv[i];
        else
            dbpath = argv[i];
    }
    if (!in || !dbpath) {
        fprintf(stderr, "usage: bench_ingest_fts [--automerge N] [--crisismerge N] [--pgsz N] [--hashsize N] "
                        "[--optimize] "
                        "[--normal] CORPUS.jsonl DB\n");
        return 2;
    }
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    if (!cfg)
        return 1;
    ingest_limits lim;
    ingest_limits_from_config(cfg, &lim);
    ingest_chunk_opts co;
    ingest_chunk_opts_from_config(cfg, &co);

    /* the chunks quarry would index, made before the clock starts */
    FILE *f = fopen(in, "r");
    if (!f) {
        perror(in);
        return 1;
    }
    row *rows = NULL;
    size_t nrows = 0, cap = 0, bytes = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    while ((n = getline(&line, &lcap, f)) > 0) {
        bytes += (size_t)n;
        json_t *j = json_loadb(line, (size_t)n, 0, NULL);
        const char *title = j ? json_string_value(json_object_get(j, "title")) : NULL;
        const char *text = j ? json_string_value(json_object_get(j, "text")) : NULL;
        ingest_text t = {0};
        ingest_chunk *chunks = NULL;
        size_t nch = 0;
        if (text && !ingest_extract(text, strlen(text), "text/plain", NULL, &lim, &t, err) &&
            !ingest_chunk_text(&t, &co, &chunks, &nch, err)) {
            for (size_t i = 0; i < nch; i++) {
                if (nrows == cap) {
                    cap = cap ? cap * 2 : 4096;
                    rows = realloc(rows, cap * sizeof(*rows));
                    if (!rows)
                        return 1;
                }
                rows[nrows].title = strdup(title ? title : (t.title ? t.title : ""));
                rows[nrows].headings = strdup(chunks[i].headings ? chunks[i].headings : "");
                rows[nrows].body = strndup(t.text + chunks[i].start, chunks[i].end - chunks[i].start);
                nrows++;
            }
        }
        ingest_chunks_free(chunks, nch);
        ingest_text_release(&t);
        json_decref(j);
    }
    free(line);
    fclose(f);

    const char *suffixes[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s%s", dbpath, suffixes[i]);
        unlink(path);
    }
    uint64_t t0 = qr_now_ns();
    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    sqlite3 *db = NULL;
    if (sqlite3_open(dbpath, &db) != SQLITE_OK || exec(db, "PRAGMA journal_mode = WAL") ||
        exec(db, normal ? "PRAGMA synchronous = NORMAL" : "PRAGMA synchronous = FULL") ||
        exec(db, "CREATE VIRTUAL TABLE fts USING fts5(title, headings, body, tokenize = 'porter unicode61')"))
        return 1;
    char sql[256];
    if (automerge >= 0) {
        snprintf(sql, sizeof(sql), "INSERT INTO fts(fts, rank) VALUES ('automerge', %d)", automerge);
        if (exec(db, sql))
            return 1;
    }
    if (crisismerge >= 0) {
        snprintf(sql, sizeof(sql), "INSERT INTO fts(fts, rank) VALUES ('crisismerge', %d)", crisismerge);
        if (exec(db, sql))
            return 1;
    }
    if (pgsz >= 0) {
        snprintf(sql, sizeof(sql), "INSERT INTO fts(fts, rank) VALUES ('pgsz', %d)", pgsz);
        if (exec(db, sql))
            return 1;
    }
    if (hashsize >= 0) {
        snprintf(sql, sizeof(sql), "INSERT INTO fts(fts, rank) VALUES ('hashsize', %d)", hashsize);
        if (exec(db, sql))
            return 1;
    }
    sqlite3_stmt *q = NULL;
    if (exec(db, "BEGIN") ||
        sqlite3_prepare_v2(db, "INSERT INTO fts(rowid, title, headings, body) VALUES (?1, ?2, ?3, ?4)", -1,
                           &q, NULL) != SQLITE_OK)
        return 1;
    for (size_t i = 0; i < nrows; i++) {
        sqlite3_bind_int64(q, 1, (sqlite3_int64)i + 1);
        sqlite3_bind_text(q, 2, rows[i].title, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 3, rows[i].headings, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 4, rows[i].body, -1, SQLITE_STATIC);
        if (sqlite3_step(q) != SQLITE_DONE) {
            fprintf(stderr, "bench_ingest_fts: insert: %s\n", sqlite3_errmsg(db));
            return 1;
        }
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    if (exec(db, "COMMIT") || (optimize && exec(db, "INSERT INTO fts(fts) VALUES ('optimize')")))
        return 1;
    sqlite3_close(db);
    double secs = (qr_now_ns() - t0) / 1e9;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    double cpu = (double)(c1.tv_sec - c0.tv_sec) + (c1.tv_nsec - c0.tv_nsec) / 1e9;
    printf("%.4f %zu %zu %.4f\n", secs, nrows, bytes, cpu);
    for (size_t i = 0; i < nrows; i++) {
        free(rows[i].title);
        free(rows[i].headings);
        free(rows[i].body);
    }
    free(rows);
    qr_config_free(cfg);
    return 0;
}
