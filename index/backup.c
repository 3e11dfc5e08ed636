/*
 * backup: consistent copies of a data directory's store and index generations, and the checks a
 * restored one must pass (index/backup.h). The store is copied with SQLite's online backup API
 * in a single step, so the copy is the snapshot of one read transaction (WAL lets writers commit
 * meanwhile and never restarts the copy), taken after the index generations are copied: an index
 * copy then never reflects a change the store copy lacks. The index files' own formats and
 * checks are vindex_files.c's and bm25_file.c's (files_int.h); this file orders the steps.
 */
#include <dirent.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/backup.h"
#include "index/feed.h"
#include "index/files_int.h"
#include "index/store.h"

#define STORE_FILE "quarry.db"
/* Copies of the indexes and the store tried before an index that does not follow the store copy
 * is left out: each try after the first waits TRY_WAIT_MS times its number first, so that a
 * maintainer publishing generation after generation (each pruning tombstones the last copy
 * needed) is likely between two builds. */
#define BACKUP_TRIES 8
#define TRY_WAIT_MS  50
#define BUSY_WAIT_MS 5000
#define PATH_CAP     4096

static qr_status sql_fail(sqlite3 *db, char *err, const char *what, const char *path)
{
    return qr_fail(err, QR_EIO, "cannot %s '%s': %s", what, path, db ? sqlite3_errmsg(db) : "out of memory");
}

/* One integer from a query on db (0 when it returns no row). */
static qr_status query_int(sqlite3 *db, const char *sql, const char *path, int64_t *out, char *err)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_finalize(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? QR_OK
                                                 : sql_fail(db, err, "read the copy of the store", path);
}

/* Copies the store at src to the new file dst and reads the copy's schema version, counters and
 * the largest chunk id it ever handed out (an index generation copied before it may hold chunks
 * deleted since, whose rows it reads as well: the vectors file is copied up to there). */
static qr_status backup_store(const char *src, const char *dst, index_backup_info *info, int64_t *max_chunk,
                              char *err)
{
    sqlite3 *from = NULL, *to = NULL;
    sqlite3_backup *b = NULL;
    qr_status st = QR_OK;
    struct stat sb;
    if (stat(src, &sb) != 0)
        return qr_fail(err, errno == ENOENT ? QR_ENOTFOUND : QR_EIO, "cannot back up store '%s': %s", src,
                       strerror(errno));
    /* read-write without create: a read-only connection to a WAL database cannot always open its
     * shared-memory index; nothing is written through it */
    if (sqlite3_open_v2(src, &from, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL) != SQLITE_OK) {
        st = sql_fail(from, err, "open the store", src);
        goto out;
    }
    sqlite3_busy_timeout(from, BUSY_WAIT_MS);
    if (sqlite3_open_v2(dst, &to, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW, NULL) !=
        SQLITE_OK) {
        st = sql_fail(to, err, "create the copy of the store", dst);
        goto out;
    }
    sqlite3_busy_timeout(to, BUSY_WAIT_MS);
    if (!(b = sqlite3_backup_init(to, "main", from, "main"))) {
        st = sql_fail(to, err, "start the backup of the store into", dst);
        goto out;
    }
    /* -1: every page in one step, under one read transaction of the source */
    int rc;
    for (int waited = 0; (rc = sqlite3_backup_step(b, -1)) == SQLITE_BUSY || rc == SQLITE_LOCKED;
         waited += 50) {
        if (waited >= BUSY_WAIT_MS)
            break;
        sqlite3_sleep(50);
    }
    if (rc != SQLITE_DONE) {
        st = qr_fail(err, QR_EIO, "cannot copy store '%s': %s", src, sqlite3_errstr(rc));
        goto out;
    }
    rc = sqlite3_backup_finish(b);
    b = NULL;
    if (rc != SQLITE_OK) {
        st = sql_fail(to, err, "finish the copy of the store into", dst);
        goto out;
    }
    /* the copy is a single file: rollback-journal mode, so no -wal beside it; opening it again
     * (store_open) switches it back to WAL */
    if (sqlite3_exec(to, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL) != SQLITE_OK) {
        st = sql_fail(to, err, "finish the copy of the store", dst);
        goto out;
    }
    int64_t v = 0;
    if ((st = query_int(to,
                        "SELECT CASE WHEN EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'schema_version')"
                        " THEN (SELECT coalesce(max(version), 0) FROM schema_version) ELSE 0 END",
                        dst, &v, err)))
        goto out;
    info->schema_version = (int)v;
    if ((st = query_int(to, "SELECT value FROM meta WHERE key = 'change_counter'", dst, &info->change_counter,
                        err)) ||
        (st = query_int(to, "SELECT value FROM meta WHERE key = 'tombstones_pruned'", dst,
                        &info->tombstones_pruned, err)) ||
        (st = query_int(to, "SELECT value FROM meta WHERE key = 'store_uid'", dst, &info->store_uid, err)) ||
        (st = query_int(to, "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'chunks'), 0)",
                        dst, max_chunk, err)))
        goto out;
out:
    if (b)
        sqlite3_backup_finish(b);
    if (to && sqlite3_close(to) != SQLITE_OK && !st)
        st = qr_fail(err, QR_EIO, "cannot close the copy of the store '%s'", dst);
    sqlite3_close(from);
    /* the copy holds what users may not read, whatever the umask */
    if (!st && chmod(dst, 0600) != 0)
        st = qr_fail(err, QR_EIO, "cannot set the mode of '%s': %s", dst, strerror(errno));
    if (!st)
        st = qr_fsync_path(dst, false, err);
    return st;
}

/* a/b into out (PATH_CAP bytes); false when it does not fit (then out is "", a name no file
 * has) */
static bool join(char *out, const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na + nb + 2 > PATH_CAP) {
        out[0] = '\0';
        return false;
    }
    memcpy(out, a, na);
    out[na] = '/';
    memcpy(out + na + 1, b, nb + 1);
    return true;
}

/* Creates dir, or empties it of the files an earlier attempt of this backup copied there. */
static qr_status fresh_dir(const char *dir, char *err)
{
    if (mkdir(dir, 0700) == 0)
        return QR_OK;
    if (errno != EEXIST)
        return qr_fail(err, QR_EIO, "cannot create '%s': %s", dir, strerror(errno));
    DIR *d = opendir(dir);
    if (!d)
        return qr_fail(err, QR_EIO, "cannot read '%s': %s", dir, strerror(errno));
    qr_status st = QR_OK;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[PATH_CAP];
        join(p, dir, e->d_name);
        if (unlink(p) != 0)
            st = qr_fail(err, QR_EIO, "cannot remove '%s': %s", p, strerror(errno));
    }
    closedir(d);
    return st;
}

/* Whether an index copy can be caught up from the store copy by replaying its change log. */
static bool index_follows(bool present, int64_t counter, const index_backup_info *info)
{
    return !present || (counter >= info->tombstones_pruned && counter <= info->change_counter);
}

qr_status index_backup(const char *data_dir, const char *dest_dir, index_backup_info *info, char *err)
{
    if (!data_dir || !dest_dir || !info)
        return qr_fail(err, QR_EINVAL, "index_backup: NULL argument");
    memset(info, 0, sizeof(*info));
    char src_store[PATH_CAP], dst_store[PATH_CAP], src_v[PATH_CAP], dst_v[PATH_CAP], src_b[PATH_CAP],
        dst_b[PATH_CAP], dst_vec[PATH_CAP];
    join(src_store, data_dir, STORE_FILE);
    join(dst_store, dest_dir, STORE_FILE);
    join(dst_vec, dest_dir, STORE_VEC_FILE);
    join(src_v, data_dir, "vindex");
    join(dst_v, dest_dir, "vindex");
    join(src_b, data_dir, "bm25");
    join(dst_b, dest_dir, "bm25");
    qr_status st = QR_OK;
    index_gen_copy v = {0}, b = {0};
    int64_t max_chunk = 0;
    /* the vectors file: held from before the store's snapshot until its copy is done, so that no
     * row of a chunk the snapshot holds is freed meanwhile (a store without one has no chunks) */
    store_vectors *vecs = NULL;
    st = store_vectors_open(data_dir, &vecs, err);
    if (st == QR_ENOTFOUND)
        st = QR_OK;
    else if (!st)
        st = store_vectors_hold(vecs, err);
    if (st)
        goto out;
    for (int attempt = 1;; attempt++) {
        if (attempt > 1)
            usleep((useconds_t)(TRY_WAIT_MS * attempt) * 1000u);
        if ((st = fresh_dir(dst_v, err)) || (st = fresh_dir(dst_b, err)))
            goto out;
        if (unlink(dst_store) != 0 && errno != ENOENT) {
            st = qr_fail(err, QR_EIO, "cannot remove '%s': %s", dst_store, strerror(errno));
            goto out;
        }
        if ((st = vindex_backup_files(src_v, dst_v, &v, err)) ||
            (st = bm25_backup_file(src_b, dst_b, &b, err)) ||
            (st = backup_store(src_store, dst_store, info, &max_chunk, err)))
            goto out;
        if ((index_follows(v.present, v.counter, info) && index_follows(b.present, b.counter, info)) ||
            attempt == BACKUP_TRIES)
            break;
    }
    if (vecs && (st = store_vectors_copy(vecs, max_chunk, dst_vec, err)))
        goto out;
    store_vectors_close(vecs); /* the lock goes with it */
    vecs = NULL;
    /* an index that still cannot follow the store copy is left out: the maintainer rebuilds it */
    if (!index_follows(v.present, v.counter, info)) {
        snprintf(info->note, sizeof(info->note),
                 "vector index generation %llu (store change %lld) left out: it does not follow the store "
                 "copy; it is rebuilt after a restore",
                 (unsigned long long)v.generation, (long long)v.counter);
        v.present = false;
        if ((st = fresh_dir(dst_v, err)))
            goto out;
    }
    if (!index_follows(b.present, b.counter, info) || (b.present && b.store_uid != info->store_uid)) {
        size_t n = strlen(info->note);
        snprintf(info->note + n, sizeof(info->note) - n,
                 "%sBM25 generation (store change %lld) left out: it does not follow the store copy; it is "
                 "rebuilt after a restore",
                 n ? "; " : "", (long long)b.counter);
        b.present = false;
        if ((st = fresh_dir(dst_b, err)))
            goto out;
    }
    info->has_vector = v.present;
    info->vector_generation = v.generation;
    info->vector_counter = v.counter;
    info->has_bm25 = b.present;
    info->bm25_counter = b.counter;
    if ((st = qr_fsync_path(dst_v, true, err)) || (st = qr_fsync_path(dst_b, true, err)))
        goto out;
    st = qr_fsync_path(dest_dir, true, err);
out:
    store_vectors_close(vecs);
    return st;
}

qr_status index_backup_verify(const char *data_dir, index_backup_info *info, char *err)
{
    if (!data_dir || !info)
        return qr_fail(err, QR_EINVAL, "index_backup_verify: NULL argument");
    memset(info, 0, sizeof(*info));
    store *s = NULL;
    index_gen_copy v = {0}, b = {0};
    char dir[PATH_CAP];
    qr_status st = store_open(data_dir, &s, err);
    if (st)
        goto out;
    if ((st = store_verify(s, err)) || (st = store_change_counter(s, &info->change_counter, err)) ||
        (st = store_uid(s, &info->store_uid, err)) ||
        (st = store_pruned_through(s, &info->tombstones_pruned, err)))
        goto out;
    info->schema_version = index_store_schema_version(); /* store_open migrated it */
    join(dir, data_dir, "vindex");
    if ((st = vindex_check_files(dir, &v, err)))
        goto out;
    join(dir, data_dir, "bm25");
    if ((st = bm25_check_file(dir, &b, err)))
        goto out;
    if (b.present && b.store_uid != info->store_uid) {
        st = qr_fail(err, QR_EIO, "the BM25 index under '%s' was built from another store", dir);
        goto out;
    }
    info->has_vector = v.present;
    info->vector_generation = v.generation;
    info->vector_counter = v.counter;
    info->has_bm25 = b.present;
    info->bm25_counter = b.counter;
out:
    store_close(s);
    return st;
}
