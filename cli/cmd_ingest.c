/*
 * `quarry ingest`, `quarry delete` and `quarry stats`: the administrator's commands for loading a
 * collection and keeping it current. ingest walks folders (hidden entries skipped, symbolic links
 * that leave the tree refused) or reads a BEIR-style corpus.jsonl, hands each document to the
 * ingestion pipeline in store batches, shows progress (a bar on a terminal, plain lines
 * otherwise) and ends with a summary; any failed document makes the exit status non-zero.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "cli/cli.h"
#include "index/store.h"
#include "ingest/ingest.h"

/* A batch (one transaction, one fdatasync) ends at whichever comes first; every document in it is
 * still written whole or not at all. */
#define INGEST_BATCH_DOCS     2000
#define INGEST_BATCH_BYTES    ((uint64_t)32 << 20)
#define INGEST_BATCH_NS       1000000000u
#define INGEST_MAX_ACL        256
#define INGEST_FAILURES_SHOWN 20
#define INGEST_MAX_DEPTH      64

typedef struct {
    ingest_session *session;
    ingest_pool *pool;      /* prepares documents on ingest.threads threads; this thread writes them */
    const char *const *acl; /* from --acl */
    size_t nacl;
    size_t max_bytes; /* ingest.max_document_bytes */
    /* progress */
    bool tty;
    uint64_t started_ns, last_report_ns;
    uint64_t bytes_done, bytes_total; /* bytes_total 0 when unknown */
    size_t docs, chunks;
    /* outcomes */
    size_t added, updated, acl_updated, unchanged, failed;
    qr_buf failures; /* "doc: reason\n" lines, the first INGEST_FAILURES_SHOWN */
    size_t in_batch; /* documents in the open batch */
    uint64_t batch_started_ns, batch_bytes;
    uint64_t write_cpu_ns; /* this thread's CPU time in the store (and preparing, with one thread) */
    size_t batch_added, batch_updated, batch_acl, batch_unchanged; /* not yet committed */
    ingest_parser jsonl; /* parses JSON lines on the preparing threads */
} ingest_run;

/* CPU time of the calling thread. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void record_failure(ingest_run *run, const char *what, const char *reason)
{
    run->failed++;
    if (run->failed <= INGEST_FAILURES_SHOWN)
        qr_buf_printf(&run->failures, "  %s: %s\n", what, reason);
}

static void progress(ingest_run *run, bool final)
{
    uint64_t now = qr_now_ns();
    if (!final && now - run->last_report_ns < (run->tty ? 200000000u : 2000000000u))
        return;
    run->last_report_ns = now;
    double secs = (now - run->started_ns) / 1e9;
    double mbs = secs > 0 ? run->bytes_done / 1e6 / secs : 0;
    char eta[32] = "";
    if (!final && run->bytes_total && run->bytes_done && run->bytes_done < run->bytes_total && mbs > 0) {
        unsigned left = (unsigned)((run->bytes_total - run->bytes_done) / 1e6 / mbs);
        snprintf(eta, sizeof(eta), "  ETA %u:%02u", left / 60, left % 60);
    }
    if (run->tty) {
        char bar[21] = "                    ";
        if (run->bytes_total) {
            size_t filled = (size_t)(20.0 * run->bytes_done / run->bytes_total);
            for (size_t i = 0; i < filled && i < 20; i++)
                bar[i] = '#';
        }
        fprintf(stderr, "\r[%s] %zu documents, %zu chunks, %.1f MB, %.1f MB/s%s   ", bar, run->docs,
                run->chunks, run->bytes_done / 1e6, mbs, eta);
        if (final)
            fputc('\n', stderr);
    } else {
        fprintf(stderr, "ingest: %zu documents, %zu chunks, %.1f MB, %.1f MB/s%s\n", run->docs, run->chunks,
                run->bytes_done / 1e6, mbs, eta);
    }
}

/* Ends the open batch; when the commit fails its documents count as failed. */
static void batch_end(ingest_run *run)
{
    if (!run->in_batch)
        return;
    char err[QR_ERR_LEN];
    size_t n = run->batch_added + run->batch_updated + run->batch_acl + run->batch_unchanged;
    uint64_t cpu = thread_cpu_ns();
    qr_status st = ingest_session_batch_commit(run->session, err);
    run->write_cpu_ns += thread_cpu_ns() - cpu;
    if (st) {
        char what[64];
        snprintf(what, sizeof(what), "batch of %zu documents", n);
        record_failure(run, what, err);
        run->failed += n ? n - 1 : 0;
    } else {
        run->added += run->batch_added;
        run->updated += run->batch_updated;
        run->acl_updated += run->batch_acl;
        run->unchanged += run->batch_unchanged;
    }
    run->in_batch = 0;
    run->batch_added = run->batch_updated = run->batch_acl = run->batch_unchanged = 0;
}

/* Writes one prepared document into the open batch (beginning one when none is); input that did
 * not parse is reported here, in input order. */
static void write_one(ingest_run *run, ingest_prepared *p)
{
    const ingest_source *src = ingest_prepared_source(p);
    char err[QR_ERR_LEN];
    const char *where, *why;
    if (ingest_prepared_unparsed(p, &where, &why)) {
        record_failure(run, where, why);
        return;
    }
    run->docs++;
    if (!run->in_batch) {
        if (ingest_session_batch_begin(run->session, err)) {
            record_failure(run, src->doc_id, err);
            return;
        }
        run->batch_started_ns = qr_now_ns();
        run->batch_bytes = 0;
    }
    run->in_batch++;
    run->batch_bytes += src->len;
    store_put_result result;
    size_t nchunks = 0;
    qr_status st = ingest_put_prepared(run->session, p, &result, &nchunks, err);
    if (st) {
        record_failure(run, src->doc_id, err);
    } else {
        switch (result) {
        case STORE_ADDED: run->batch_added++; break;
        case STORE_UPDATED: run->batch_updated++; break;
        case STORE_ACL_UPDATED: run->batch_acl++; break;
        case STORE_UNCHANGED: run->batch_unchanged++; break;
        }
        run->chunks += nchunks;
    }
    if (run->in_batch >= INGEST_BATCH_DOCS || run->batch_bytes >= INGEST_BATCH_BYTES ||
        qr_now_ns() - run->batch_started_ns >= INGEST_BATCH_NS)
        batch_end(run);
}

/* Writes the documents the pool has ready, in input order; with wait, at least the oldest. The
 * CPU clock of a thread is a system call: read around the run of documents, not each one. */
static void write_ready(ingest_run *run, bool wait)
{
    ingest_prepared *p;
    uint64_t cpu = 0;
    while ((p = ingest_pool_next(run->pool, wait))) {
        if (!cpu)
            cpu = thread_cpu_ns();
        write_one(run, p);
        ingest_prepared_free(p);
        wait = false;
    }
    if (cpu)
        run->write_cpu_ns += thread_cpu_ns() - cpu;
    progress(run, false);
}

/* Writes every queued document. */
static void drain(ingest_run *run)
{
    ingest_prepared *p;
    uint64_t cpu = 0;
    while ((p = ingest_pool_next(run->pool, true))) {
        if (!cpu)
            cpu = thread_cpu_ns();
        write_one(run, p);
        ingest_prepared_free(p);
    }
    if (cpu)
        run->write_cpu_ns += thread_cpu_ns() - cpu;
}

/* A failure of the input itself (a line, a file, a folder): reported after the documents read
 * before it, so that the failures are listed in input order whatever the threads. */
static void record_input_failure(ingest_run *run, const char *what, const char *reason)
{
    drain(run);
    record_failure(run, what, reason);
}

static void ingest_one(ingest_run *run, const ingest_source *src)
{
    char err[QR_ERR_LEN];
    while (ingest_pool_full(run->pool))
        write_ready(run, true);
    if (ingest_pool_submit(run->pool, src, err)) {
        record_input_failure(run, src->doc_id, err);
        run->docs++; /* counted by write_one otherwise */
    }
    run->bytes_done += src->len;
    write_ready(run, false);
}

/* ---- folders and files ------------------------------------------------------------------- */

/* Ingests one regular file; rel is its path relative to the ingested root (the doc_id). */
static void ingest_file(ingest_run *run, const char *path, const char *rel)
{
    char err[QR_ERR_LEN];
    char *data = NULL;
    size_t len = 0;
    if (qr_read_file(path, run->max_bytes, &data, &len, err)) {
        record_input_failure(run, rel, err);
        run->docs++;
        return;
    }
    char abs[PATH_MAX], uri[PATH_MAX + 8];
    snprintf(uri, sizeof(uri), "file://%s", realpath(path, abs) ? abs : path);
    const char *base = strrchr(rel, '/');
    ingest_source src = {
        .doc_id = rel,
        .uri = uri,
        .filename = base ? base + 1 : rel,
        .acl = run->acl,
        .nacl = run->nacl,
        .bytes = data,
        .len = len,
    };
    ingest_one(run, &src);
    free(data);
}

/* Adds up the sizes of the regular files below path, for the ETA. */
static uint64_t tree_bytes(const char *path, int depth)
{
    struct stat sb;
    if (depth > INGEST_MAX_DEPTH || lstat(path, &sb) != 0)
        return 0;
    if (S_ISREG(sb.st_mode))
        return (uint64_t)sb.st_size;
    if (!S_ISDIR(sb.st_mode))
        return 0;
    DIR *dir = opendir(path);
    if (!dir)
        return 0;
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.')
            continue;
        char child[PATH_MAX];
        if ((size_t)snprintf(child, sizeof(child), "%s/%s", path, e->d_name) < sizeof(child))
            total += tree_bytes(child, depth + 1);
    }
    closedir(dir);
    return total;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walks path (rel relative to the root, "" at the root); root_real is the root's real path,
 * which symbolic links may not leave. Entries are visited in name order for stable runs. */
static void walk(ingest_run *run, const char *path, const char *rel, const char *root_real, int depth)
{
    struct stat sb;
    if (lstat(path, &sb) != 0) {
        record_input_failure(run, *rel ? rel : path, strerror(errno));
        return;
    }
    if (S_ISLNK(sb.st_mode)) {
        char target[PATH_MAX];
        size_t root_len = strlen(root_real);
        if (!realpath(path, target) || strncmp(target, root_real, root_len) != 0 ||
            (target[root_len] != '/' && target[root_len] != '\0')) {
            record_input_failure(run, *rel ? rel : path, "symbolic link leaves the ingested tree: refused");
            return;
        }
        if (stat(path, &sb) != 0 || S_ISDIR(sb.st_mode)) {
            /* links to folders inside the tree would visit them twice; only linked files count */
            if (S_ISDIR(sb.st_mode))
                return;
            record_input_failure(run, rel, strerror(errno));
            return;
        }
    }
    if (S_ISREG(sb.st_mode)) {
        ingest_file(run, path, *rel ? rel : path);
        return;
    }
    if (!S_ISDIR(sb.st_mode))
        return; /* sockets, devices, fifos: not documents */
    if (depth > INGEST_MAX_DEPTH) {
        record_input_failure(run, rel, "folder nesting deeper than 64: skipped");
        return;
    }
    DIR *dir = opendir(path);
    if (!dir) {
        record_input_failure(run, *rel ? rel : path, strerror(errno));
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.')
            continue; /* hidden files and folders, ".", ".." */
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **grown = realloc(names, cap * sizeof(*names));
            if (!grown)
                break;
            names = grown;
        }
        if (!(names[n] = strdup(e->d_name)))
            break;
        n++;
    }
    closedir(dir);
    qsort(names, n, sizeof(*names), compare_names);
    for (size_t i = 0; i < n; i++) {
        char child[PATH_MAX], child_rel[PATH_MAX];
        if ((size_t)snprintf(child, sizeof(child), "%s/%s", path, names[i]) >= sizeof(child) ||
            (size_t)snprintf(child_rel, sizeof(child_rel), "%s%s%s", rel, *rel ? "/" : "", names[i]) >=
                sizeof(child_rel))
            record_input_failure(run, names[i], "path too long");
        else
            walk(run, child, child_rel, root_real, depth + 1);
        free(names[i]);
    }
    free(names);
}

static void ingest_path(ingest_run *run, const char *path)
{
    char root_real[PATH_MAX];
    struct stat sb;
    if (!realpath(path, root_real) || stat(path, &sb) != 0) {
        record_input_failure(run, path, strerror(errno));
        return;
    }
    if (S_ISDIR(sb.st_mode)) {
        walk(run, path, "", root_real, 0);
    } else {
        /* a single file: its doc_id is its name, as if its folder had been ingested */
        const char *base = strrchr(path, '/');
        char *dir = strdup(root_real);
        if (dir && strrchr(dir, '/'))
            *strrchr(dir, '/') = '\0';
        walk(run, path, base ? base + 1 : path, dir ? dir : "/", 0);
        free(dir);
    }
}

/* ---- JSON lines (BEIR corpus.jsonl) ------------------------------------------------------ */

#define INPUT_BUFFER ((size_t)1 << 20)

/* Reads one line of at most cap bytes into line (without the newline). Returns 1 for a line, 0 at
 * the end, -1 for a line over the cap (skipped to its end). */
static int read_line(FILE *f, qr_buf *line)
{
    qr_buf_reset(line);
    char chunk[65536];
    bool any = false, over = false;
    while (fgets(chunk, sizeof(chunk), f)) {
        any = true;
        size_t n = strlen(chunk);
        bool end = n && chunk[n - 1] == '\n';
        if (end)
            n--;
        if (!over && qr_buf_append(line, chunk, n))
            over = true;
        if (end)
            break;
    }
    if (!any)
        return 0;
    return over ? -1 : 1;
}

static const char *json_str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* What a parsed line's source borrows from: the parsed object (or the scanner's block of
 * strings), the metadata as text and the ACL. */
typedef struct {
    json_t *obj;
    char *block;
    char *metadata;
    const char *acl[];
} jsonl_hold;

/* The --acl list, given to documents whose line has no "acl". */
typedef struct {
    const char *const *acl;
    size_t nacl;
} jsonl_defaults;

static void jsonl_release(void *hold)
{
    jsonl_hold *h = hold;
    free(h->metadata);
    json_decref(h->obj);
    free(h->block);
    free(h);
}

/* A line ingest_jsonl_scan read: the same source as from json_loadb below. False when the line
 * needs the general parser after all (no "_id" or "text", too many principals: its messages). */
static bool jsonl_fast(const jsonl_defaults *d, const ingest_jsonl_line *l, char *block, ingest_source *src,
                       void **hold)
{
    size_t nacl = l->has_acl ? l->nacl : d->nacl;
    if (!l->id || !*l->id || !l->text || nacl > INGEST_MAX_ACL)
        return false;
    jsonl_hold *h = calloc(1, sizeof(*h) + (nacl ? nacl : 1) * sizeof(h->acl[0]));
    if (!h)
        return false;
    const char *p = l->acl;
    for (size_t i = 0; i < nacl; i++) {
        if (l->has_acl) {
            h->acl[i] = p;
            p += strlen(p) + 1;
        } else {
            h->acl[i] = d->acl[i];
        }
    }
    h->block = block;
    *src = (ingest_source){
        .doc_id = l->id,
        .title = l->title,
        .uri = l->url ? l->url : l->uri,
        .declared_type = "text/plain",
        .metadata_json = l->metadata_empty ? "{}" : NULL, /* json_dumps of an empty object */
        .acl = h->acl,
        .nacl = nacl,
        .bytes = l->text,
        .len = l->text_len,
    };
    *hold = h;
    return true;
}

/* Parses one line into a source, on a preparing thread (ingest_parser): the same checks, in the
 * same order, with the same messages as when the reading thread parsed. */
static qr_status jsonl_parse(void *ctx, const char *raw, size_t len, ingest_source *src, void **hold,
                             char *err)
{
    const jsonl_defaults *d = ctx;
    ingest_jsonl_line line;
    char *block = NULL;
    if (ingest_jsonl_scan(raw, len, &line, &block)) {
        if (jsonl_fast(d, &line, block, src, hold))
            return QR_OK;
        free(block);
    }
    json_error_t jerr;
    json_t *obj = json_loadb(raw, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj)
        return qr_fail(err, QR_EINVAL, "%s", jerr.text);
    const char *id = json_str(obj, "_id");
    const char *text = json_str(obj, "text");
    json_t *acl_json = json_object_get(obj, "acl");
    json_t *meta_json = json_object_get(obj, "metadata");
    jsonl_hold *h = NULL;
    qr_status st = QR_OK;
    if (!json_is_object(obj) || !id || !*id || !text) {
        st = qr_fail(err, QR_EINVAL, "expected an object with string fields \"_id\" and \"text\"");
        goto out;
    }
    if (acl_json && !json_is_array(acl_json)) {
        st = qr_fail(err, QR_EINVAL, "\"acl\" must be a list of principals");
        goto out;
    }
    if (meta_json && !json_is_object(meta_json)) {
        st = qr_fail(err, QR_EINVAL, "\"metadata\" must be an object");
        goto out;
    }
    size_t nacl = acl_json ? json_array_size(acl_json) : d->nacl;
    if (nacl > INGEST_MAX_ACL) {
        st = qr_fail(err, QR_EINVAL, "\"acl\" must be a list of at most 256 principal strings");
        goto out;
    }
    if (!(h = calloc(1, sizeof(*h) + (nacl ? nacl : 1) * sizeof(h->acl[0])))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory parsing a line");
        goto out;
    }
    for (size_t i = 0; i < nacl; i++) {
        json_t *p = acl_json ? json_array_get(acl_json, i) : NULL;
        if (acl_json && !json_is_string(p)) {
            st = qr_fail(err, QR_EINVAL, "\"acl\" must be a list of at most 256 principal strings");
            goto out;
        }
        h->acl[i] = acl_json ? json_string_value(p) : d->acl[i];
    }
    if (meta_json && !(h->metadata = json_dumps(meta_json, JSON_COMPACT | JSON_SORT_KEYS))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory for the metadata of a line");
        goto out;
    }
    const char *uri = json_str(obj, "url");
    *src = (ingest_source){
        .doc_id = id,
        .title = json_str(obj, "title"),
        .uri = uri ? uri : json_str(obj, "uri"),
        .declared_type = "text/plain",
        .metadata_json = h->metadata,
        .acl = h->acl,
        .nacl = nacl,
        .bytes = text,
        .len = strlen(text),
    };
    h->obj = obj;
    *hold = h;
    return QR_OK;
out:
    if (h)
        free(h->metadata);
    free(h);
    json_decref(obj);
    return st;
}

/* Reads the lines of a corpus.jsonl and queues each, unparsed, for the preparing threads. */
static void ingest_jsonl(ingest_run *run, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        record_input_failure(run, path, strerror(errno));
        return;
    }
    /* stdio's 4 KiB buffer made a read(2) per 4 KiB on the writing thread (5,770 for 23 MB; system
     * calls are dear on a VM): 1 MiB reads, when the buffer can be had (glibc ignores the size
     * without one) */
    char *inbuf = malloc(INPUT_BUFFER);
    if (inbuf)
        setvbuf(f, inbuf, _IOFBF, INPUT_BUFFER);
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0)
        run->bytes_total += (uint64_t)sb.st_size;
    qr_buf line;
    qr_buf_init(&line, run->max_bytes * 2 + 4096); /* JSON escaping can double the text */
    size_t lineno = 0;
    int r;
    while ((r = read_line(f, &line)) != 0) {
        lineno++;
        char where[PATH_MAX + 32], err[QR_ERR_LEN];
        snprintf(where, sizeof(where), "%s:%zu", path, lineno);
        if (r < 0) {
            record_input_failure(run, where,
                                 "line longer than the document limit (ingest.max_document_bytes)");
            continue;
        }
        size_t len = qr_buf_len(&line);
        if (len == 0)
            continue;
        char *raw = malloc(len);
        if (!raw) {
            record_input_failure(run, where, "out of memory reading a line");
            continue;
        }
        memcpy(raw, qr_buf_str(&line), len);
        while (ingest_pool_full(run->pool))
            write_ready(run, true);
        if (ingest_pool_submit_raw(run->pool, &run->jsonl, raw, len, where, err))
            record_input_failure(run, where, err);
        run->bytes_done += len;
        write_ready(run, false);
    }
    if (ferror(f))
        record_input_failure(run, path, "read error");
    qr_buf_release(&line);
    fclose(f);
    free(inbuf);
}

int cli_cmd_ingest(cli_ctx *ctx)
{
    const char *acl[INGEST_MAX_ACL];
    const char *jsonl[64];
    const char *paths[1024];
    size_t nacl = 0, njsonl = 0, npaths = 0;
    for (int i = 1; i < ctx->argc; i++) {
        const char *a = ctx->argv[i];
        if (strcmp(a, "--acl") == 0 || strcmp(a, "--jsonl") == 0) {
            if (i + 1 >= ctx->argc)
                return cli_usage_error(ctx, "%s needs a value", a);
            const char *v = ctx->argv[++i];
            if (a[2] == 'a') {
                char why[QR_ERR_LEN];
                if (!store_principal_valid(v)) {
                    store_principal_canonical(v, NULL, 0, why);
                    return cli_usage_error(ctx, "--acl: %s", why);
                }
                if (nacl == INGEST_MAX_ACL)
                    return cli_usage_error(ctx, "too many --acl (at most %d)", INGEST_MAX_ACL);
                acl[nacl++] = v;
            } else {
                if (njsonl == sizeof(jsonl) / sizeof(jsonl[0]))
                    return cli_usage_error(ctx, "too many --jsonl files");
                jsonl[njsonl++] = v;
            }
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error(ctx, "unknown option '%s'", a);
        } else {
            if (npaths == sizeof(paths) / sizeof(paths[0]))
                return cli_usage_error(ctx, "too many paths (at most 1024; ingest their folder instead)");
            paths[npaths++] = a;
        }
    }
    if (!npaths && !njsonl)
        return cli_usage_error(ctx, "nothing to ingest: give PATH... or --jsonl FILE");
    if (!nacl)
        fprintf(stderr,
                "quarry ingest: no --acl given: the documents will be visible to administrators only\n");

    char err[QR_ERR_LEN];
    ingest_run run = {
        .acl = acl,
        .nacl = nacl,
        .max_bytes = (size_t)qr_config_settings(ctx->cfg)->ingest_max_document_bytes,
        .tty = isatty(STDERR_FILENO),
    };
    /* the preparing threads parse lines: jansson's hash seed is set here, before they start */
    json_object_seed(0);
    jsonl_defaults defaults = {.acl = acl, .nacl = nacl};
    run.jsonl = (ingest_parser){.parse = jsonl_parse, .release = jsonl_release, .ctx = &defaults};
    qr_buf_init(&run.failures, 1 << 20);
    if (store_skip_memory_stats(err) || ingest_session_open(ctx->cfg, &run.session, err)) {
        fprintf(stderr, "quarry ingest: %s\n", err);
        qr_buf_release(&run.failures);
        return CLI_EXIT_FAILURE;
    }
    if (ingest_pool_open(run.session, ctx->cfg, (int)qr_config_settings(ctx->cfg)->ingest_threads, &run.pool,
                         err)) {
        fprintf(stderr, "quarry ingest: %s\n", err);
        ingest_session_close(run.session);
        qr_buf_release(&run.failures);
        return CLI_EXIT_FAILURE;
    }
    /* batches commit without an fdatasync each; the synced commit at the end makes them durable */
    if (ingest_session_bulk_begin(run.session, err)) {
        fprintf(stderr, "quarry ingest: %s\n", err);
        ingest_pool_close(run.pool);
        ingest_session_close(run.session);
        qr_buf_release(&run.failures);
        return CLI_EXIT_FAILURE;
    }
    run.started_ns = run.last_report_ns = qr_now_ns();
    for (size_t i = 0; i < npaths; i++)
        run.bytes_total += tree_bytes(paths[i], 0);
    for (size_t i = 0; i < npaths; i++)
        ingest_path(&run, paths[i]);
    for (size_t i = 0; i < njsonl; i++)
        ingest_jsonl(&run, jsonl[i]);
    drain(&run);
    batch_end(&run);
    if (ingest_session_bulk_end(run.session, err)) {
        /* what the batches committed may not survive a power cut: say so, and count them failed */
        record_failure(&run, "the final sync", err);
        run.failed += run.added + run.updated + run.acl_updated;
        run.added = run.updated = run.acl_updated = 0;
    }
    progress(&run, true);
    int threads = ingest_pool_threads(run.pool);
    ingest_pool_close(run.pool);
    ingest_session_close(run.session);

    double secs = (qr_now_ns() - run.started_ns) / 1e9;
    printf("ingested %zu documents in %.1f s (%d preparing thread%s, %.2f s CPU writing): %zu added, %zu "
           "updated, "
           "%zu acl/metadata updated, %zu unchanged, %zu failed\n",
           run.docs, secs, threads ? threads : 1, threads > 1 ? "s" : "", run.write_cpu_ns / 1e9, run.added,
           run.updated, run.acl_updated, run.unchanged, run.failed);
    if (run.failed) {
        printf("failed:\n%s", qr_buf_str(&run.failures));
        if (run.failed > INGEST_FAILURES_SHOWN)
            printf("  ... and %zu more\n", run.failed - INGEST_FAILURES_SHOWN);
    }
    qr_buf_release(&run.failures);
    return run.failed ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

int cli_cmd_delete(cli_ctx *ctx)
{
    if (ctx->argc < 2)
        return cli_usage_error(ctx, "give at least one DOC_ID");
    char err[QR_ERR_LEN];
    store *s = NULL;
    if (store_open(qr_config_settings(ctx->cfg)->data_dir, &s, err)) {
        fprintf(stderr, "quarry delete: %s\n", err);
        return CLI_EXIT_FAILURE;
    }
    int rc = CLI_EXIT_OK;
    for (int i = 1; i < ctx->argc; i++) {
        qr_status st = store_delete(s, ctx->argv[i], err);
        if (st) {
            fprintf(stderr, "quarry delete: %s: %s\n", ctx->argv[i], err);
            rc = CLI_EXIT_FAILURE;
        } else {
            printf("deleted %s\n", ctx->argv[i]);
        }
    }
    store_close(s);
    return rc;
}

int cli_cmd_stats(cli_ctx *ctx)
{
    bool json = false;
    for (int i = 1; i < ctx->argc; i++) {
        if (strcmp(ctx->argv[i], "--json") == 0)
            json = true;
        else
            return cli_usage_error(ctx, "unknown argument '%s'", ctx->argv[i]);
    }
    char err[QR_ERR_LEN];
    store *s = NULL;
    store_stats st;
    if (store_open(qr_config_settings(ctx->cfg)->data_dir, &s, err) || store_get_stats(s, &st, err)) {
        fprintf(stderr, "quarry stats: %s\n", err);
        store_close(s);
        return CLI_EXIT_FAILURE;
    }
    store_close(s);
    /* the BM25 index as its file says: built at which change, and how far behind */
    bm25_info bi;
    char berr[QR_ERR_LEN];
    qr_status bst = bm25_peek(qr_config_settings(ctx->cfg)->data_dir, &bi, berr);
    /* the search mode a request that names none gets, and why */
    retrieval_opts ro;
    retrieval_opts_from_config(ctx->cfg, &ro);
    if (json) {
        qr_buf out;
        qr_buf_init(&out, 4096);
        qr_buf_printf(&out, "{\"documents\":%lld,\"chunks\":%lld,\"text_bytes\":%lld,\"embedding_model\":",
                      (long long)st.documents, (long long)st.chunks, (long long)st.text_bytes);
        qr_json_escape(&out, st.embedding_model, strlen(st.embedding_model));
        qr_buf_printf(&out, ",\"embedding_dim\":%d,\"index_generation\":%lld,\"change_counter\":%lld",
                      st.embedding_dim, (long long)st.index_generation, (long long)st.change_counter);
        if (bst)
            qr_buf_printf(&out, ",\"bm25_index\":null");
        else
            qr_buf_printf(&out,
                          ",\"bm25_index\":{\"change_counter\":%lld,\"chunks\":%zu,\"terms\":%zu,\"file_"
                          "bytes\":%llu}",
                          (long long)bi.generation_counter, bi.rows, bi.terms,
                          (unsigned long long)bi.file_bytes);
        qr_buf_printf(&out, ",\"search_default\":");
        if (api_search_default_json(&ro, &out))
            qr_buf_printf(&out, "null");
        qr_buf_printf(&out, "}\n");
        qr_status failed = qr_buf_failed(&out);
        if (!failed)
            fputs(qr_buf_str(&out), stdout);
        qr_buf_release(&out);
        if (failed) {
            fprintf(stderr, "quarry stats: the statistics are too large to print (%s)\n",
                    qr_status_name(failed));
            return CLI_EXIT_FAILURE;
        }
    } else {
        printf("documents         %lld\n", (long long)st.documents);
        printf("chunks            %lld\n", (long long)st.chunks);
        printf("text bytes        %lld\n", (long long)st.text_bytes);
        printf("embedding model   %s (dim %d)\n", *st.embedding_model ? st.embedding_model : "(none yet)",
               st.embedding_dim);
        printf("index generation  %lld\n", (long long)st.index_generation);
        printf("change counter    %lld\n", (long long)st.change_counter);
        if (bst == QR_ENOTFOUND)
            printf("bm25 index        not built yet (the first search builds it)\n");
        else if (bst)
            printf("bm25 index        %s\n", berr);
        else
            printf("bm25 index        built at change %lld: %zu chunks, %zu terms, %.1f MB%s\n",
                   (long long)bi.generation_counter, bi.rows, bi.terms, bi.file_bytes / 1e6,
                   bi.generation_counter == st.change_counter
                       ? ""
                       : " (later changes are caught up at each search)");
        printf("search default    %s (%s: %s)\n", retrieval_mode_name(ro.mode), ro.mode_auto ? "auto" : "set",
               ro.default_reason);
        printf("hybrid fusion     %s (%s), vector weight %g, rrf k %g\n", retrieval_fusion_name(ro.fusion),
               ro.fusion_auto ? "auto" : "set", ro.vector_weight, ro.rrf_k);
    }
    return CLI_EXIT_OK;
}
