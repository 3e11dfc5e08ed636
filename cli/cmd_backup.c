/*
 * `quarry backup DEST` and `quarry restore SRC`: a data directory copied whole and consistently
 * (online or offline), and put back only after every byte of the copy was checked. index/ copies
 * the store and the published index generations (index/backup.h); this file adds the auth state
 * files (<data>/auth/: keys.json, token.key; mode 0600), writes the MANIFEST (JSON: versions,
 * the store's change counter, per file its path, size, mode and SHA-256) and MANIFEST.sha256 (the
 * manifest's own digest, in sha256sum's format), and on restore checks all of it before writing
 * anything, stages the files beside the target, verifies the staged directory (SQLite and FTS5
 * integrity checks, index checksums) and only then renames it into place. An existing target is
 * moved aside with --force, never deleted.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/core.h"
#include "index/index.h"

#define BACKUP_FORMAT   "quarry-backup"
#define BACKUP_VERSION  1
#define MANIFEST        "MANIFEST"
#define MANIFEST_SUM    "MANIFEST.sha256"
#define MANIFEST_MAX    (16u << 20)
#define AUTH_FILE_MAX   (64u << 20)
#define PATH_CAP        4096
#define MAX_FILES       100000
#define EXIT_REFUSED    3 /* the backup is damaged, incomplete or from a newer quarry */
#define EXIT_NOT_EMPTY  4 /* DEST (backup) or the data directory (restore without --force) is not empty */
#define EXIT_UNVERIFIED 5 /* the restored copy failed its checks; the data directory is untouched */

typedef struct {
    char path[256]; /* relative to the backup's root */
    uint64_t size;
    unsigned mode;
    char sha256[65];
} backup_file;

typedef struct {
    backup_file *v;
    size_t n, cap;
} file_list;

static qr_status list_add(file_list *l, const char *path, uint64_t size, unsigned mode, const char *sha,
                          char *err)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 32;
        backup_file *v = cap <= MAX_FILES ? realloc(l->v, cap * sizeof(*v)) : NULL;
        if (!v)
            return qr_fail(err, QR_ELIMIT, "too many files in the backup (or out of memory)");
        l->v = v;
        l->cap = cap;
    }
    backup_file *f = &l->v[l->n++];
    snprintf(f->path, sizeof(f->path), "%s", path);
    f->size = size;
    f->mode = mode;
    snprintf(f->sha256, sizeof(f->sha256), "%s", sha);
    return QR_OK;
}

static void hex(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

/* SHA-256 and size of what fd reads from its start; with copy_to >= 0 the bytes are also written
 * there. */
static qr_status sha256_fd(int fd, const char *path, int copy_to, const char *dest, uint64_t *size,
                           char out[65], char *err)
{
    qr_status st = QR_OK;
    size_t bufsz = 1u << 20;
    unsigned char *buf = malloc(bufsz), md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint64_t total = 0;
    if (!buf || !ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory hashing '%s'", path);
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf, bufsz);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = qr_fail(err, QR_EIO, "cannot read '%s': %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)r);
        total += (uint64_t)r;
        if (copy_to >= 0 && (st = qr_write_all(copy_to, buf, (size_t)r, dest, err)))
            goto out;
    }
    if (!EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != 32) {
        st = qr_fail(err, QR_EINTERNAL, "cannot hash '%s'", path);
        goto out;
    }
    hex(md, 32, out);
    *size = total;
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    return st;
}

static qr_status sha256_file(const char *path, uint64_t *size, char out[65], char *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return qr_fail(err, errno == ENOENT ? QR_ENOTFOUND : QR_EIO, "cannot open '%s': %s", path,
                       strerror(errno));
    qr_status st = sha256_fd(fd, path, -1, NULL, size, out, err);
    close(fd);
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

/* Copies path without its trailing slashes ("bk/" and "bk" name one directory, and "bk/.tmp"
 * must not be made from the first). False when it does not fit. */
#define BASE_CAP (PATH_CAP - 64) /* a directory name, with room for the suffixes added to it */
static bool trim_path(char out[BASE_CAP], const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    if (n + 1 > BASE_CAP)
        return false;
    memcpy(out, path, n);
    out[n] = '\0';
    return true;
}

/* 1 when dir is missing, 0 when it is an empty directory, -1 otherwise (errno set, ENOTEMPTY
 * when it has entries). */
static int dir_state(const char *dir)
{
    struct stat sb;
    if (lstat(dir, &sb) != 0)
        return errno == ENOENT ? 1 : -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    int state = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            state = -1;
            errno = ENOTEMPTY;
            break;
        }
    closedir(d);
    return state;
}

/* Removes a tree this command wrote (staging and temporary directories only). */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[PATH_CAP];
            struct stat sb;
            join(p, dir, e->d_name);
            if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
                remove_tree(p);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* Every regular file under root/rel (recursively), hashed, in the list; directories synced. */
static qr_status walk(const char *root, const char *rel, file_list *l, char *err)
{
    char dir[PATH_CAP];
    if (rel[0])
        join(dir, root, rel);
    else
        snprintf(dir, sizeof(dir), "%s", root);
    DIR *d = opendir(dir);
    if (!d)
        return qr_fail(err, QR_EIO, "cannot read '%s': %s", dir, strerror(errno));
    qr_status st = QR_OK;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char r[PATH_CAP], p[PATH_CAP];
        if (rel[0])
            join(r, rel, e->d_name);
        else
            snprintf(r, sizeof(r), "%s", e->d_name);
        join(p, root, r);
        struct stat sb;
        if (lstat(p, &sb) != 0) {
            st = qr_fail(err, QR_EIO, "cannot stat '%s': %s", p, strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            st = walk(root, r, l, err);
        } else if (S_ISREG(sb.st_mode)) {
            char sha[65];
            uint64_t size = 0;
            if (strlen(r) >= sizeof(l->v[0].path))
                st = qr_fail(err, QR_ELIMIT, "file name too long: '%s'", p);
            if (!st)
                st = sha256_file(p, &size, sha, err);
            if (!st)
                st = list_add(l, r, size, (unsigned)(sb.st_mode & 0777), sha, err);
        }
    }
    closedir(d);
    if (!st)
        st = qr_fsync_path(dir, true, err);
    return st;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const backup_file *)a)->path, ((const backup_file *)b)->path);
}

/* Copies <data>/auth's state files (not its lock, not temporary files) with mode 0600. */
static qr_status copy_auth(const char *data_dir, const char *dest, char *err)
{
    char src[PATH_CAP], dst[PATH_CAP];
    join(src, data_dir, "auth");
    DIR *d = opendir(src);
    if (!d)
        return errno == ENOENT ? QR_OK : qr_fail(err, QR_EIO, "cannot read '%s': %s", src, strerror(errno));
    join(dst, dest, "auth");
    qr_status st = QR_OK;
    if (mkdir(dst, 0700) != 0)
        st = qr_fail(err, QR_EIO, "cannot create '%s': %s", dst, strerror(errno));
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || (n > 5 && strcmp(e->d_name + n - 5, ".lock") == 0))
            continue;
        char from[PATH_CAP], to[PATH_CAP];
        join(from, src, e->d_name);
        join(to, dst, e->d_name);
        struct stat sb;
        if (lstat(from, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        /* the files are replaced by rename: one read sees one version */
        char *data = NULL;
        size_t len = 0;
        st = qr_read_file(from, AUTH_FILE_MAX, &data, &len, err);
        if (st == QR_ENOTFOUND) {
            st = QR_OK;
            continue;
        }
        if (!st)
            st = qr_file_write(to, data, len, 0600, false, err);
        if (data)
            memset(data, 0, len);
        free(data);
    }
    closedir(d);
    return st;
}

static qr_status write_manifest(const char *dir, const char *data_dir, const index_backup_info *info,
                                const file_list *l, char *err)
{
    json_t *files = json_array();
    json_t *m =
        json_pack("{s:s, s:i, s:s, s:I, s:s, s:i, s:I, s:I, s:I}", "format", BACKUP_FORMAT, "format_version",
                  BACKUP_VERSION, "quarry_version", QUARRY_VERSION, "created_ms", (json_int_t)qr_wall_ms(),
                  "source", data_dir, "schema_version", info->schema_version, "store_change_counter",
                  (json_int_t)info->change_counter, "tombstones_pruned", (json_int_t)info->tombstones_pruned,
                  "store_uid", (json_int_t)info->store_uid);
    char *text = NULL;
    qr_status st = QR_OK;
    if (!files || !m) {
        st = qr_fail(err, QR_ENOMEM, "out of memory writing the manifest");
        goto out;
    }
    json_t *vec = info->has_vector
                      ? json_pack("{s:I, s:I}", "generation", (json_int_t)info->vector_generation,
                                  "store_counter", (json_int_t)info->vector_counter)
                      : json_null();
    json_t *bm =
        info->has_bm25 ? json_pack("{s:I}", "store_counter", (json_int_t)info->bm25_counter) : json_null();
    bool behind = (info->has_vector && info->vector_counter < info->change_counter) ||
                  (info->has_bm25 && info->bm25_counter < info->change_counter);
    json_object_set_new(m, "indexes",
                        json_pack("{s:o, s:o, s:b, s:s}", "vector", vec, "bm25", bm, "behind_store", behind,
                                  "note",
                                  info->note[0] ? info->note
                                  : behind      ? "the index generations are older than the store: the "
                                                  "maintainer catches them up after a restore"
                                                : ""));
    for (size_t i = 0; i < l->n; i++) {
        char mode[8];
        snprintf(mode, sizeof(mode), "%04o", l->v[i].mode);
        json_array_append_new(files,
                              json_pack("{s:s, s:I, s:s, s:s}", "path", l->v[i].path, "size",
                                        (json_int_t)l->v[i].size, "mode", mode, "sha256", l->v[i].sha256));
    }
    json_object_set(m, "files", files);
    text = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text) {
        st = qr_fail(err, QR_ENOMEM, "out of memory writing the manifest");
        goto out;
    }
    size_t len = strlen(text);
    text[len++] = '\n'; /* json_dumps left room for the NUL, which is now the newline */
    char path[PATH_CAP], sum[PATH_CAP], line[128];
    join(path, dir, MANIFEST);
    join(sum, dir, MANIFEST_SUM);
    if ((st = qr_file_write(path, text, len, 0600, false, err)))
        goto out;
    unsigned char md[32];
    char digest[65];
    unsigned n = 0;
    EVP_Digest(text, len, md, &n, EVP_sha256(), NULL);
    hex(md, 32, digest);
    snprintf(line, sizeof(line), "%s  %s\n", digest, MANIFEST);
    st = qr_file_write(sum, line, strlen(line), 0600, false, err);
out:
    free(text);
    json_decref(files);
    json_decref(m);
    return st;
}

int cli_cmd_backup(cli_ctx *ctx)
{
    if (ctx->argc != 2 || ctx->argv[1][0] == '-')
        return cli_usage_error(ctx, "give one DEST directory");
    const char *data_dir = qr_config_settings(ctx->cfg)->data_dir;
    char dest[BASE_CAP], tmp[PATH_CAP], err[QR_ERR_LEN] = "";
    if (!trim_path(dest, ctx->argv[1]))
        return cli_usage_error(ctx, "DEST is too long");
    file_list l = {0};
    index_backup_info info;
    int rc = CLI_EXIT_FAILURE;
    bool made_tmp = false;
    qr_status st = QR_OK;
    int state = dir_state(dest);
    if (state < 0) {
        fprintf(stderr, "quarry backup: '%s' %s: a backup goes into a new or empty directory\n", dest,
                errno == ENOTEMPTY ? "is not empty" : strerror(errno));
        return EXIT_NOT_EMPTY;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", dest);
    if (mkdir(tmp, 0700) != 0) {
        fprintf(stderr, "quarry backup: cannot create '%s': %s%s\n", tmp, strerror(errno),
                errno == EEXIST ? " (left by an interrupted backup? remove it)" : "");
        return CLI_EXIT_FAILURE;
    }
    made_tmp = true;
    if ((st = index_backup(data_dir, tmp, &info, err)) || (st = copy_auth(data_dir, tmp, err)) ||
        (st = walk(tmp, "", &l, err)))
        goto out;
    qsort(l.v, l.n, sizeof(*l.v), cmp_file);
    if ((st = write_manifest(tmp, data_dir, &info, &l, err)) || (st = qr_fsync_path(tmp, true, err)))
        goto out;
    if (state == 0 && rmdir(dest) != 0) {
        st = qr_fail(err, QR_EIO, "cannot replace the empty directory '%s': %s", dest, strerror(errno));
        goto out;
    }
    if (rename(tmp, dest) != 0) {
        st = qr_fail(err, QR_EIO, "cannot rename '%s' to '%s': %s", tmp, dest, strerror(errno));
        goto out;
    }
    made_tmp = false;
    if ((st = qr_fsync_dir_of(dest, err)))
        goto out;
    printf(
        "backup of '%s' in '%s': %zu files, schema %d, store change %lld, vector index %s, BM25 index %s\n",
        data_dir, dest, l.n + 2, info.schema_version, (long long)info.change_counter,
        info.has_vector ? "copied" : "none", info.has_bm25 ? "copied" : "none");
    if (info.note[0])
        printf("note: %s\n", info.note);
    rc = CLI_EXIT_OK;
out:
    if (st)
        fprintf(stderr, "quarry backup: %s\n", err);
    if (made_tmp)
        remove_tree(tmp);
    free(l.v);
    return rc;
}

/* ---- restore ----------------------------------------------------------------------------- */

/* A manifest path: one or two plain components under the names a data directory holds. */
static bool path_allowed(const char *p)
{
    static const char *const tops[] = {"quarry.db", "quarry.vec", "vindex/", "bm25/", "auth/"};
    bool top = false;
    for (size_t i = 0; i < sizeof(tops) / sizeof(tops[0]); i++) {
        size_t n = strlen(tops[i]);
        if (strcmp(p, tops[i]) == 0 || (tops[i][n - 1] == '/' && strncmp(p, tops[i], n) == 0 && p[n]))
            top = true;
    }
    if (!top || strlen(p) >= 256)
        return false;
    const char *name = strchr(p, '/');
    name = name ? name + 1 : p;
    if (name[0] == '.' || strchr(name, '/'))
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
              *c == '-' || *c == '_'))
            return false;
    return true;
}

static bool listed(const file_list *l, const char *path)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].path, path) == 0)
            return true;
    return false;
}

/* Files under src that the manifest does not list (other than the manifest's two). */
static qr_status find_unlisted(const char *src, const char *rel, const file_list *l, char *err)
{
    char dir[PATH_CAP];
    if (rel[0])
        join(dir, src, rel);
    else
        snprintf(dir, sizeof(dir), "%s", src);
    DIR *d = opendir(dir);
    if (!d)
        return qr_fail(err, QR_EIO, "cannot read '%s': %s", dir, strerror(errno));
    qr_status st = QR_OK;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char r[PATH_CAP], p[PATH_CAP];
        if (rel[0])
            join(r, rel, e->d_name);
        else
            snprintf(r, sizeof(r), "%s", e->d_name);
        join(p, src, r);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            st = find_unlisted(src, r, l, err);
        else if (!(strcmp(r, MANIFEST) == 0 || strcmp(r, MANIFEST_SUM) == 0 || listed(l, r)))
            st = qr_fail(err, QR_EINVAL, "backup '%s' holds '%s', which its manifest does not list", src, r);
    }
    closedir(d);
    return st;
}

/* Reads and checks SRC's manifest and every file it lists; nothing is written. */
static qr_status verify_backup(const char *src, file_list *l, json_t **manifest, char *err)
{
    char path[PATH_CAP], *text = NULL, *sum = NULL;
    size_t len = 0, sum_len = 0;
    json_t *m = NULL;
    qr_status st;
    join(path, src, MANIFEST_SUM);
    if ((st = qr_read_file(path, 4096, &sum, &sum_len, err)))
        goto out;
    join(path, src, MANIFEST);
    if ((st = qr_read_file(path, MANIFEST_MAX, &text, &len, err)))
        goto out;
    unsigned char md[32];
    unsigned n = 0;
    char digest[65];
    EVP_Digest(text, len, md, &n, EVP_sha256(), NULL);
    hex(md, 32, digest);
    if (sum_len < 64 || strncmp(sum, digest, 64) != 0) {
        st = qr_fail(err, QR_EINVAL, "'%s' is damaged: its SHA-256 differs from the one in %s", path,
                     MANIFEST_SUM);
        goto out;
    }
    json_error_t jerr;
    m = json_loadb(text, len, 0, &jerr);
    const char *format = json_string_value(json_object_get(m, "format"));
    json_t *files = json_object_get(m, "files");
    if (!m || !format || strcmp(format, BACKUP_FORMAT) != 0 || !json_is_array(files)) {
        st = qr_fail(err, QR_EINVAL, "'%s' is not a quarry backup manifest", path);
        goto out;
    }
    json_int_t fv = json_integer_value(json_object_get(m, "format_version"));
    if (fv != BACKUP_VERSION) {
        st = qr_fail(err, QR_EINVAL, "'%s' has backup format %lld, this quarry reads format %d", path,
                     (long long)fv, BACKUP_VERSION);
        goto out;
    }
    json_int_t schema = json_integer_value(json_object_get(m, "schema_version"));
    if (schema > index_store_schema_version()) {
        st = qr_fail(err, QR_EINVAL, "backup has schema %lld, this quarry knows up to %d: upgrade quarry",
                     (long long)schema, index_store_schema_version());
        goto out;
    }
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f)
    {
        const char *p = json_string_value(json_object_get(f, "path"));
        const char *sha = json_string_value(json_object_get(f, "sha256"));
        const char *mode = json_string_value(json_object_get(f, "mode"));
        json_t *size = json_object_get(f, "size");
        if (!p || !path_allowed(p) || !sha || strlen(sha) != 64 || !json_is_integer(size) ||
            json_integer_value(size) < 0 || !mode || strcmp(mode, "0600") != 0 || listed(l, p)) {
            st = qr_fail(err, QR_EINVAL, "'%s' is damaged: file entry %zu is invalid", path, i);
            goto out;
        }
        if ((st = list_add(l, p, (uint64_t)json_integer_value(size), 0600, sha, err)))
            goto out;
    }
    if (!listed(l, "quarry.db")) {
        st = qr_fail(err, QR_EINVAL, "'%s' lists no quarry.db: not a complete backup", path);
        goto out;
    }
    for (i = 0; i < l->n; i++) {
        char fpath[PATH_CAP], got[65];
        uint64_t size = 0;
        join(fpath, src, l->v[i].path);
        if ((st = sha256_file(fpath, &size, got, err))) {
            if (st == QR_ENOTFOUND)
                qr_fail(err, QR_EINVAL, "backup file '%s' is missing", fpath);
            st = QR_EINVAL;
            goto out;
        }
        if (size != l->v[i].size) {
            st = qr_fail(err, QR_EINVAL, "backup file '%s' is damaged: %llu bytes, the manifest says %llu",
                         fpath, (unsigned long long)size, (unsigned long long)l->v[i].size);
            goto out;
        }
        if (strcmp(got, l->v[i].sha256) != 0) {
            st = qr_fail(err, QR_EINVAL,
                         "backup file '%s' is damaged: its SHA-256 differs from the manifest's", fpath);
            goto out;
        }
    }
    st = find_unlisted(src, "", l, err);
out:
    if (st)
        json_decref(m);
    else
        *manifest = m;
    free(text);
    free(sum);
    return st;
}

/* Copies the listed files into the new directory stage, checking each digest again while copying
 * (the backup may have changed since it was verified). */
static qr_status stage_files(const char *src, const char *stage, const file_list *l, char *err)
{
    qr_status st = QR_OK;
    if (mkdir(stage, 0700) != 0)
        return qr_fail(err, QR_EIO, "cannot create '%s': %s", stage, strerror(errno));
    static const char *const dirs[] = {"vindex", "bm25", "auth"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && !st; i++) {
        char d[PATH_CAP];
        join(d, stage, dirs[i]);
        if (mkdir(d, 0700) != 0)
            st = qr_fail(err, QR_EIO, "cannot create '%s': %s", d, strerror(errno));
    }
    for (size_t i = 0; i < l->n && !st; i++) {
        char from[PATH_CAP], to[PATH_CAP], got[65];
        uint64_t size = 0;
        join(from, src, l->v[i].path);
        join(to, stage, l->v[i].path);
        int in = open(from, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        int out = in < 0 ? -1 : open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, l->v[i].mode);
        if (in < 0 || out < 0) {
            st = qr_fail(err, QR_EIO, "cannot copy '%s' to '%s': %s", from, to, strerror(errno));
        } else if (!(st = sha256_fd(in, from, out, to, &size, got, err))) {
            if (size != l->v[i].size || strcmp(got, l->v[i].sha256) != 0)
                st = qr_fail(err, QR_EINVAL, "backup file '%s' changed while it was restored", from);
            else if (fchmod(out, l->v[i].mode) != 0)
                st = qr_fail(err, QR_EIO, "cannot set the mode of '%s': %s", to, strerror(errno));
        }
        if (in >= 0)
            close(in);
        if (out >= 0) {
            qr_status cs = qr_file_sync_close(out, to, err);
            if (!st)
                st = cs;
        }
    }
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && !st; i++) {
        char d[PATH_CAP];
        join(d, stage, dirs[i]);
        st = qr_fsync_path(d, true, err);
    }
    return st ? st : qr_fsync_path(stage, true, err);
}

int cli_cmd_restore(cli_ctx *ctx)
{
    const char *src = NULL;
    bool force = false;
    for (int i = 1; i < ctx->argc; i++) {
        if (strcmp(ctx->argv[i], "--force") == 0)
            force = true;
        else if (ctx->argv[i][0] == '-')
            return cli_usage_error(ctx, "unknown option '%s'", ctx->argv[i]);
        else if (src)
            return cli_usage_error(ctx, "give one SRC directory");
        else
            src = ctx->argv[i];
    }
    if (!src)
        return cli_usage_error(ctx, "give the SRC directory of a backup");
    char target[BASE_CAP], err[QR_ERR_LEN] = "", stage[PATH_CAP], aside[PATH_CAP] = "";
    if (!trim_path(target, qr_config_settings(ctx->cfg)->data_dir))
        return cli_usage_error(ctx, "the data directory's path is too long");
    file_list l = {0};
    json_t *m = NULL;
    bool staged = false;
    int rc = CLI_EXIT_FAILURE;
    index_backup_info info;

    if (verify_backup(src, &l, &m, err)) {
        fprintf(stderr, "quarry restore: refused: %s; nothing was written\n", err);
        rc = EXIT_REFUSED;
        goto out;
    }
    int state = dir_state(target);
    if (state < 0 && !(errno == ENOTEMPTY && force)) {
        fprintf(stderr, "quarry restore: data directory '%s' %s; nothing was written\n", target,
                errno == ENOTEMPTY ? "is not empty (--force moves it aside)" : strerror(errno));
        rc = errno == ENOTEMPTY ? EXIT_NOT_EMPTY : CLI_EXIT_FAILURE;
        goto out;
    }
    snprintf(stage, sizeof(stage), "%s.restore.tmp", target);
    if (dir_state(stage) != 1) {
        fprintf(
            stderr,
            "quarry restore: '%s' exists (left by an interrupted restore? remove it); nothing was written\n",
            stage);
        goto out;
    }
    staged = true;
    if (stage_files(src, stage, &l, err)) {
        fprintf(stderr, "quarry restore: %s; the data directory is untouched\n", err);
        goto out;
    }
    if (index_backup_verify(stage, &info, err)) {
        fprintf(stderr,
                "quarry restore: the restored copy failed its checks: %s; the data directory is untouched\n",
                err);
        rc = EXIT_UNVERIFIED;
        goto out;
    }
    if (state < 0) {
        snprintf(aside, sizeof(aside), "%s.before-restore-%lld", target, (long long)qr_wall_ms());
        if (rename(target, aside) != 0) {
            fprintf(stderr,
                    "quarry restore: cannot move '%s' aside to '%s': %s; the data directory is untouched\n",
                    target, aside, strerror(errno));
            goto out;
        }
    } else if (state == 0 && rmdir(target) != 0) {
        fprintf(stderr, "quarry restore: cannot replace the empty directory '%s': %s\n", target,
                strerror(errno));
        goto out;
    }
    if (rename(stage, target) != 0) {
        fprintf(stderr, "quarry restore: cannot rename '%s' to '%s': %s%s%s\n", stage, target,
                strerror(errno), aside[0] ? "; the old data directory is in " : "", aside);
        goto out;
    }
    staged = false;
    if (qr_fsync_dir_of(target, err))
        fprintf(stderr, "quarry restore: warning: %s\n", err);
    printf(
        "restored '%s' into '%s': %zu files, schema %d, store change %lld, vector index %s, BM25 index %s\n",
        src, target, l.n, info.schema_version, (long long)info.change_counter,
        info.has_vector ? "verified" : "none", info.has_bm25 ? "verified" : "none");
    if (aside[0])
        printf("the previous data directory was moved to '%s'\n", aside);
    rc = CLI_EXIT_OK;
out:
    if (staged)
        remove_tree(stage);
    json_decref(m);
    free(l.v);
    return rc;
}
