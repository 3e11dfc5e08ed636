/*
 * store_vec: the store's chunk vectors, in a file of their own beside the database
 * (<dir>/quarry.vec), laid out by chunk id: a 4 KiB header (magic, version, dimension, the store's
 * uid), then the row of chunk id i, dim float32 values L2-normalised (zeros for a vector of no
 * length), at HEADER + i * dim * 4. SQLite keeps no copy: the rows are the system of record,
 * and the vector index reads its exact scores from this same file (store_vectors, index/feed.h)
 * instead of keeping rows of its own.
 *
 * Why the rows stay consistent with the database without being in it:
 * - Chunk ids are never reused (AUTOINCREMENT), so a row, once its chunk is committed, never
 *   changes. A transaction writes its rows (pwrite, under the database's write lock, so one
 *   writer at a time) before it commits, and every commit that follows row writes first syncs
 *   the file (store_vec_sync): no commit can reach the disk, by a sync or by the kernel's own
 *   write-back, before the rows it refers to. Rows written by a transaction that rolls back, or
 *   that a crash undoes, belong to ids the next chunks get again: they are simply overwritten.
 * - A deleted chunk's row is freed by punching a hole in the file (the blocks then read as
 *   zeros; the bytes in blocks shared with live rows are overwritten with zeros), only after the
 *   delete is durable: at once after a synced commit, at the end of a bulk
 *   load otherwise (store_vec_committed). A hole covers the deleted range widened to its live
 *   neighbours, only whole blocks inside it, and never past the largest id handed out when the
 *   range was computed, so a writer in another process appending rows is never touched. A
 *   backup holds a shared lock on the file while it copies it; a punch that cannot take the
 *   lock at once is tried again after the next commit.
 * Readers map the file: a mapping is made long (twice the file, at least 64 MiB) so that it
 * covers the rows the file grows by for a while; a request past it makes a new one, and older
 * mappings stay until the handle closes, so a pointer handed out stays valid.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/feed.h"
#include "index/store_int.h"
#include "index/vindex_int.h"

#define VEC_MAGIC    "QRVROWS1"
#define VEC_VERSION  1u
#define VEC_HEADER   4096
#define VEC_MAP_MIN  ((size_t)64 << 20)
#define VEC_BLOCK    4096 /* holes are punched in whole blocks of this size (st_blksize's usual) */
#define VEC_COPY_BUF ((size_t)1 << 20)
#define VEC_PENDING  ((size_t)8 << 20) /* bytes of rows held back before a write */

_Static_assert(sizeof(float) == 4, "rows are float32");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the vectors file is little-endian float32");

typedef struct vec_map {
    void *addr;
    size_t len;
    struct vec_map *older;
} vec_map;

struct store_vectors {
    pthread_mutex_t mu;
    int fd;
    int dim;
    int64_t uid;
    char *path;
    vec_map *maps;  /* newest first */
    size_t covered; /* ids below this are in the newest mapping and in the file */
};

/* ---- the header ---------------------------------------------------------------------------- */

static void header_make(unsigned char *h, int dim, int64_t uid)
{
    memset(h, 0, VEC_HEADER);
    memcpy(h, VEC_MAGIC, 8);
    uint32_t v = VEC_VERSION, d = (uint32_t)dim;
    memcpy(h + 8, &v, 4);
    memcpy(h + 12, &d, 4);
    memcpy(h + 16, &uid, 8);
}

/* Reads and checks the header of fd (path for messages): the dimension and uid it records. */
static qr_status header_read(int fd, const char *path, int *dim, int64_t *uid, char *err)
{
    unsigned char h[32];
    ssize_t r;
    do
        r = pread(fd, h, sizeof(h), 0);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return qr_fail(err, QR_EIO, "cannot read vectors file '%s': %s", path, strerror(errno));
    uint32_t v, d;
    memcpy(&v, h + 8, 4);
    memcpy(&d, h + 12, 4);
    if (r != (ssize_t)sizeof(h) || memcmp(h, VEC_MAGIC, 8) != 0 || v != VEC_VERSION || d < 1 ||
        d > STORE_DIM_MAX)
        return qr_fail(err, QR_EIO, "vectors file '%s' has an invalid header", path);
    *dim = (int)d;
    memcpy(uid, h + 16, 8);
    return QR_OK;
}

static char *vec_path(const char *data_dir)
{
    size_t n = strlen(data_dir) + sizeof("/" STORE_VEC_FILE);
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", data_dir, STORE_VEC_FILE);
    return p;
}

/* ---- reading: store_vectors ------------------------------------------------------------------ */

qr_status store_vectors_open(const char *data_dir, store_vectors **out, char *err)
{
    if (!data_dir || !out)
        return qr_fail(err, QR_EINVAL, "store_vectors_open: NULL argument");
    *out = NULL;
    store_vectors *f = calloc(1, sizeof(*f));
    qr_status st = QR_OK;
    if (!f || !(f->path = vec_path(data_dir))) {
        free(f);
        return qr_fail(err, QR_ENOMEM, "out of memory opening the vectors file");
    }
    pthread_mutex_init(&f->mu, NULL);
    f->fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (f->fd < 0) {
        st = qr_fail(err, errno == ENOENT ? QR_ENOTFOUND : QR_EIO, "cannot open vectors file '%s': %s",
                     f->path, strerror(errno));
        goto out;
    }
    st = header_read(f->fd, f->path, &f->dim, &f->uid, err);
out:
    if (st) {
        store_vectors_close(f);
        return st;
    }
    *out = f;
    return QR_OK;
}

int store_vectors_dim(const store_vectors *f)
{
    return f ? f->dim : 0;
}

int64_t store_vectors_uid(const store_vectors *f)
{
    return f ? f->uid : 0;
}

qr_status store_vectors_map(store_vectors *f, int64_t max_id, const float **base, char *err)
{
    if (!f || !base || max_id < 0)
        return qr_fail(err, QR_EINVAL, "store_vectors_map: bad argument");
    size_t rowb = (size_t)f->dim * sizeof(float);
    qr_status st = QR_OK;
    pthread_mutex_lock(&f->mu);
    if ((uint64_t)max_id < f->covered) {
        *base = (const float *)((const char *)f->maps->addr + VEC_HEADER);
        goto out;
    }
    struct stat sb;
    if (fstat(f->fd, &sb) != 0) {
        st = qr_fail(err, QR_EIO, "cannot stat vectors file '%s': %s", f->path, strerror(errno));
        goto out;
    }
    if ((uint64_t)max_id >= ((uint64_t)SIZE_MAX - VEC_HEADER) / rowb - 1) {
        st = qr_fail(err, QR_ELIMIT, "chunk id %lld is too large for the vectors file", (long long)max_id);
        goto out;
    }
    size_t need = VEC_HEADER + ((size_t)max_id + 1) * rowb;
    if ((uint64_t)sb.st_size < need) {
        st = qr_fail(err, QR_EIO, "vectors file '%s' has %lld bytes: too short for chunk id %lld (damaged)",
                     f->path, (long long)sb.st_size, (long long)max_id);
        goto out;
    }
    if (!f->maps || f->maps->len < need) {
        size_t len = (size_t)sb.st_size * 2;
        len = len < VEC_MAP_MIN ? VEC_MAP_MIN : len;
        len = (len + VEC_BLOCK - 1) / VEC_BLOCK * VEC_BLOCK;
        vec_map *m = malloc(sizeof(*m));
        void *a = m ? mmap(NULL, len, PROT_READ, MAP_SHARED, f->fd, 0) : MAP_FAILED;
        if (a == MAP_FAILED) {
            st = qr_fail(err, m ? QR_EIO : QR_ENOMEM, "cannot map vectors file '%s': %s", f->path,
                         m ? strerror(errno) : "out of memory");
            free(m);
            goto out;
        }
        /* the kernel's default read-ahead: a generation's int8 codes are made from every row in
         * id order when it opens (advised random, that pass faulted in each page on its own);
         * exact scores of a warm server read rows the page cache holds */
        *m = (vec_map){a, len, f->maps};
        f->maps = m;
    }
    /* ids whose rows are both in the file now and inside the newest mapping */
    size_t in_file = ((size_t)sb.st_size - VEC_HEADER) / rowb;
    size_t in_map = (f->maps->len - VEC_HEADER) / rowb;
    f->covered = in_file < in_map ? in_file : in_map;
    *base = (const float *)((const char *)f->maps->addr + VEC_HEADER);
out:
    pthread_mutex_unlock(&f->mu);
    return st;
}

qr_status store_vectors_hold(store_vectors *f, char *err)
{
    if (!f)
        return qr_fail(err, QR_EINVAL, "store_vectors_hold: NULL handle");
    int r;
    do
        r = flock(f->fd, LOCK_SH);
    while (r != 0 && errno == EINTR);
    return r == 0 ? QR_OK : qr_fail(err, QR_EIO, "cannot lock '%s': %s", f->path, strerror(errno));
}

qr_status store_vectors_copy(store_vectors *f, int64_t max_id, const char *dest, char *err)
{
    if (!f || !dest)
        return qr_fail(err, QR_EINVAL, "store_vectors_copy: NULL argument");
    size_t rowb = (size_t)f->dim * sizeof(float);
    const float *base;
    qr_status st = max_id > 0 ? store_vectors_map(f, max_id, &base, err) : QR_OK;
    if (st)
        return st;
    size_t len = VEC_HEADER + (max_id > 0 ? ((size_t)max_id + 1) * rowb : 0);
    int fd = open(dest, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return qr_fail(err, QR_EIO, "cannot create '%s': %s", dest, strerror(errno));
    /* the data ranges only: holes stay holes in the copy */
    char *buf = malloc(VEC_COPY_BUF);
    if (!buf)
        st = qr_fail(err, QR_ENOMEM, "out of memory copying '%s'", f->path);
    off_t at = 0;
    while (!st && (size_t)at < len) {
        off_t data = lseek(f->fd, at, SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            break;
        off_t hole = data < 0 ? -1 : lseek(f->fd, data, SEEK_HOLE);
        if (data < 0 || hole < 0) {
            st = qr_fail(err, QR_EIO, "cannot read '%s': %s", f->path, strerror(errno));
            break;
        }
        if ((size_t)data >= len)
            break;
        size_t end = (size_t)hole < len ? (size_t)hole : len;
        for (size_t o = (size_t)data; !st && o < end;) {
            size_t want = end - o < VEC_COPY_BUF ? end - o : VEC_COPY_BUF;
            ssize_t r = pread(f->fd, buf, want, (off_t)o);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                st = qr_fail(err, QR_EIO, "cannot read '%s': %s", f->path,
                             r < 0 ? strerror(errno) : "short file");
                break;
            }
            for (size_t done = 0; !st && done < (size_t)r;) {
                ssize_t w = pwrite(fd, buf + done, (size_t)r - done, (off_t)(o + done));
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    st = qr_fail(err, QR_EIO, "cannot write '%s': %s", dest,
                                 w < 0 ? strerror(errno) : "short write");
                else
                    done += (size_t)w;
            }
            o += (size_t)r;
        }
        at = (off_t)end;
    }
    free(buf);
    if (!st && ftruncate(fd, (off_t)len) != 0)
        st = qr_fail(err, QR_EIO, "cannot size '%s': %s", dest, strerror(errno));
    if (!st && fsync(fd) != 0)
        st = qr_fail(err, QR_EIO, "cannot sync '%s': %s", dest, strerror(errno));
    close(fd);
    return st;
}

void store_vectors_close(store_vectors *f)
{
    if (!f)
        return;
    for (vec_map *m = f->maps, *o; m; m = o) {
        o = m->older;
        munmap(m->addr, m->len);
        free(m);
    }
    if (f->fd >= 0)
        close(f->fd);
    pthread_mutex_destroy(&f->mu);
    free(f->path);
    free(f);
}

static qr_status query_int(store *s, const char *sql, int64_t *out, char *err);

/* ---- the store's own reads ------------------------------------------------------------------- */

/* The handle's reader, opened on first use. QR_EIO when the store has chunks but no file. */
static qr_status reader(store *s, store_vectors **out, char *err)
{
    if (!s->vec_read) {
        qr_status st = store_vectors_open(s->dir, &s->vec_read, err);
        if (st == QR_ENOTFOUND)
            return qr_fail(err, QR_EIO, "store '%s' is damaged: its vectors file is missing", s->path);
        if (st)
            return st;
    }
    *out = s->vec_read;
    return QR_OK;
}

qr_status store_vec_read(store *s, int64_t chunk_id, float *out, int dim, char *err)
{
    store_vectors *f = NULL;
    const float *base;
    if (s->vec_pend_n && dim == s->vec_dim && chunk_id >= s->vec_pend_first &&
        chunk_id < s->vec_pend_first + (int64_t)s->vec_pend_n) {
        /* written by this handle's open transaction, not yet in the file */
        memcpy(out, s->vec_buf + (size_t)(chunk_id - s->vec_pend_first) * (size_t)dim,
               (size_t)dim * sizeof(float));
        return QR_OK;
    }
    qr_status st = reader(s, &f, err);
    if (st)
        return st;
    if (f->dim != dim)
        return qr_fail(err, QR_EIO, "vectors file of store '%s' has dimension %d, the store records %d",
                       s->path, f->dim, dim);
    if (chunk_id < 1 || (st = store_vectors_map(f, chunk_id, &base, err)))
        return st ? st : qr_fail(err, QR_EIO, "invalid chunk id %lld", (long long)chunk_id);
    memcpy(out, base + (size_t)chunk_id * (size_t)dim, (size_t)dim * sizeof(float));
    return QR_OK;
}

qr_status store_vec_verify(store *s, char *err)
{
    int64_t max_id = 0, dim = 0, uid = 0;
    qr_status st;
    if ((st = query_int(s, "SELECT coalesce(max(id), 0) FROM chunks", &max_id, err)) ||
        (st = query_int(s, "SELECT value FROM meta WHERE key = 'embedding_dim'", &dim, err)) ||
        (st = query_int(s, "SELECT value FROM meta WHERE key = 'store_uid'", &uid, err)))
        return st;
    if (max_id == 0)
        return QR_OK;
    store_vectors *f = NULL;
    const float *base;
    if ((st = reader(s, &f, err)))
        return st;
    if (f->dim != dim || f->uid != uid)
        return qr_fail(
            err, QR_EIO,
            "store '%s' is inconsistent: its vectors file is another store's (dimension %d, uid %lld; "
            "the store's: %lld, %lld)",
            s->path, f->dim, (long long)f->uid, (long long)dim, (long long)uid);
    pthread_mutex_lock(&f->mu);
    f->covered = 0; /* look at the file's length again */
    pthread_mutex_unlock(&f->mu);
    if ((st = store_vectors_map(f, max_id, &base, err))) {
        char why[QR_ERR_LEN];
        snprintf(why, sizeof(why), "%s", err);
        return qr_fail(err, QR_EIO, "store '%s' is inconsistent: %s", s->path, why);
    }
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT id FROM chunks ORDER BY id", -1, &q, NULL);
    while (!st && rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(q, 0);
        const float *row = base + (size_t)id * (size_t)dim;
        double n2 = 0;
        for (int64_t d = 0; d < dim; d++)
            n2 += isfinite(row[d]) ? (double)row[d] * row[d] : NAN;
        /* a zero vector was given as such; anything else was normalised */
        if (!(n2 == 0 || fabs(n2 - 1) < 1e-3))
            st = qr_fail(err, QR_EIO, "store '%s' is inconsistent: the vector of chunk %lld is damaged",
                         s->path, (long long)id);
        rc = SQLITE_OK;
    }
    if (!st && rc != SQLITE_DONE)
        st = store_sql_fail(s, rc, err, "check the vectors");
    sqlite3_finalize(q);
    return st;
}

/* ---- writing ------------------------------------------------------------------------------- */

/* One integer from a query of the store's connection (0 without a row). Not a prepared
 * statement of the handle: the migration opens the file before those are made. */
static qr_status query_int(store *s, const char *sql, int64_t *out, char *err)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    qr_status st =
        rc == SQLITE_ROW || rc == SQLITE_DONE ? QR_OK : store_sql_fail(s, rc, err, "read the store");
    sqlite3_finalize(q);
    return st;
}

/* Opens the file for writing, inside the caller's write transaction. fresh (the migration that
 * fills it from the old table): whatever is there is replaced. Otherwise a missing or empty file
 * is made, and one of another store (other dimension or uid) replaced, only while no chunk id
 * was ever handed out: after that the file holds this store's rows, and either is damage. */
static qr_status writer(store *s, int dim, bool fresh, char *err)
{
    if (s->vec_fd >= 0 && !fresh)
        return QR_OK;
    char *path = vec_path(s->dir);
    int64_t uid = 0, seq = 0;
    qr_status st = QR_OK;
    int fd = -1;
    bool make = fresh;
    if (!path)
        return qr_fail(err, QR_ENOMEM, "out of memory opening the vectors file");
    if ((st = query_int(s, "SELECT value FROM meta WHERE key = 'store_uid'", &uid, err)) ||
        (st = query_int(s, "SELECT seq FROM sqlite_sequence WHERE name = 'chunks'", &seq, err)))
        goto out;
    /* a store that handed out chunk ids has its file: never made anew here */
    fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (fresh || seq == 0 ? O_CREAT : 0), 0600);
    struct stat sb;
    if (fd < 0 && errno == ENOENT) {
        st = qr_fail(err, QR_EIO, "store '%s' is damaged: its vectors file is missing", s->path);
        goto out;
    }
    if (fd < 0 || fstat(fd, &sb) != 0) {
        st = qr_fail(err, QR_EIO, "cannot open vectors file '%s': %s", path, strerror(errno));
        goto out;
    }
    if (!make) {
        int fdim = 0;
        int64_t fuid = 0;
        qr_status hs = sb.st_size ? header_read(fd, path, &fdim, &fuid, err) : QR_ENOTFOUND;
        make = hs || fdim != dim || fuid != uid;
        if (make && seq > 0) {
            st = hs == QR_ENOTFOUND
                     ? qr_fail(err, QR_EIO, "store '%s' is damaged: its vectors file is missing", s->path)
                 : hs ? hs
                      : qr_fail(err, QR_EIO,
                                "vectors file '%s' belongs to another store (dimension %d, uid "
                                "%lld; the store's: %d, %lld)",
                                path, fdim, (long long)fuid, dim, (long long)uid);
            goto out;
        }
    }
    if (make) {
        unsigned char h[VEC_HEADER];
        header_make(h, dim, uid);
        if (ftruncate(fd, 0) != 0 || pwrite(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) || fsync(fd) != 0) {
            st = qr_fail(err, QR_EIO, "cannot write vectors file '%s': %s", path, strerror(errno));
            goto out;
        }
        if ((st = qr_fsync_path(s->dir, true, err)))
            goto out;
    }
    if (s->vec_fd >= 0)
        close(s->vec_fd);
    s->vec_fd = fd;
    s->vec_dim = dim;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    free(path);
    return st;
}

qr_status store_vec_create(store *s, int dim, char *err)
{
    return writer(s, dim, true, err);
}

qr_status store_vec_open_write(store *s, int dim, char *err)
{
    return writer(s, dim, false, err);
}

/* Writes the pending run of rows (vec_buf) to the file. */
static qr_status flush(store *s, char *err)
{
    size_t rowb = (size_t)s->vec_dim * sizeof(float);
    const char *p = (const char *)s->vec_buf;
    size_t left = s->vec_pend_n * rowb;
    off_t at = (off_t)(VEC_HEADER + (size_t)s->vec_pend_first * rowb);
    while (left) {
        ssize_t w = pwrite(s->vec_fd, p, left, at);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == ENOSPC || errno == EFBIG || errno == EDQUOT))
            return qr_fail(err, QR_ENOSPC,
                           "cannot write the vectors of store '%s': the file system is full (%s)", s->path,
                           strerror(errno));
        if (w <= 0)
            return qr_fail(err, QR_EIO, "cannot write the vectors of store '%s': %s", s->path,
                           w < 0 ? strerror(errno) : "nothing written");
        p += w;
        at += w;
        left -= (size_t)w;
    }
    s->vec_pend_n = 0;
    s->vec_dirty = true;
    return QR_OK;
}

/* The rows of consecutive ids a transaction writes wait in memory and go to the file in one
 * write (before the commit, or when the run breaks or grows past VEC_PENDING): a system call per
 * document was a quarter of a bulk load's writer time on a virtual machine. */
qr_status store_vec_write(store *s, int64_t first_id, const float *vectors, size_t n, int dim, char *err)
{
    if (!n)
        return QR_OK;
    qr_status st = writer(s, dim, false, err);
    if (st)
        return st;
    size_t rowb = (size_t)dim * sizeof(float);
    if (s->vec_pend_n &&
        (first_id != s->vec_pend_first + (int64_t)s->vec_pend_n ||
         (s->vec_pend_n + n) * rowb > VEC_PENDING) &&
        (st = flush(s, err)))
        return st;
    if (!s->vec_pend_n)
        s->vec_pend_first = first_id;
    size_t need = (s->vec_pend_n + n) * (size_t)dim;
    if (s->vec_cap < need) {
        size_t cap = s->vec_cap ? 2 * s->vec_cap : need;
        cap = cap < need ? need : cap;
        float *b = realloc(s->vec_buf, cap * sizeof(float));
        if (!b)
            return qr_fail(err, QR_ENOMEM, "out of memory for %zu vectors", s->vec_pend_n + n);
        s->vec_buf = b;
        s->vec_cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        float *row = s->vec_buf + (s->vec_pend_n + i) * (size_t)dim;
        if (!vindex_normalize_row(vectors + i * (size_t)dim, row, dim))
            memset(row, 0, rowb); /* a zero vector stays zeros: the vector index skips it */
    }
    s->vec_pend_n += n;
    return QR_OK;
}

qr_status store_vec_sync(store *s, char *err)
{
    qr_status st = s->vec_pend_n ? flush(s, err) : QR_OK;
    if (st || !s->vec_dirty)
        return st;
    if (fdatasync(s->vec_fd) != 0)
        return qr_fail(err, QR_EIO, "cannot sync the vectors file of store '%s': %s", s->path,
                       strerror(errno));
    s->vec_dirty = false;
    return QR_OK;
}

/* ---- freeing the rows of deleted chunks ------------------------------------------------------ */

qr_status store_vec_free(store *s, int64_t lo, int64_t hi, char *err)
{
    if (lo >= hi)
        return QR_OK;
    if (s->vec_nholes == s->vec_capholes) {
        size_t cap = s->vec_capholes ? 2 * s->vec_capholes : 16;
        store_vec_hole *h = realloc(s->vec_holes, cap * sizeof(*h));
        if (!h)
            return qr_fail(err, QR_ENOMEM, "out of memory");
        s->vec_holes = h;
        s->vec_capholes = cap;
    }
    s->vec_holes[s->vec_nholes++] = (store_vec_hole){lo, hi};
    return QR_OK;
}

void store_vec_rolled_back(store *s)
{
    s->vec_nholes = s->vec_ready;
    s->vec_pend_n = 0; /* rows of ids the next chunks get again */
}

/* Overwrites bytes [from, to) of fd with zeros. */
static void zero_range(int fd, uint64_t from, uint64_t to)
{
    static const char zeros[VEC_BLOCK];
    while (from < to) {
        size_t n = to - from < sizeof(zeros) ? (size_t)(to - from) : sizeof(zeros);
        ssize_t w = pwrite(fd, zeros, n, (off_t)from);
        if (w <= 0 && errno != EINTR)
            return; /* space, not correctness: the chunks are gone from the store */
        from += w > 0 ? (uint64_t)w : 0;
    }
}

/* Frees the rows of every durable delete: the whole blocks inside a range are punched out of the
 * file, the bytes at its ends (blocks shared with live rows) overwritten with zeros, so that no
 * byte of a deleted chunk's vector stays in the file. Kept for later while a backup holds it. */
static void punch(store *s)
{
    if (!s->vec_ready || s->vec_fd < 0)
        return;
    if (flock(s->vec_fd, LOCK_EX | LOCK_NB) != 0)
        return; /* a backup copies the file: after the next commit */
    size_t rowb = (size_t)s->vec_dim * sizeof(float);
    for (size_t i = 0; i < s->vec_ready; i++) {
        uint64_t start = VEC_HEADER + (uint64_t)s->vec_holes[i].lo * rowb;
        uint64_t end = VEC_HEADER + (uint64_t)s->vec_holes[i].hi * rowb;
        uint64_t from = (start + VEC_BLOCK - 1) / VEC_BLOCK * VEC_BLOCK, to = end / VEC_BLOCK * VEC_BLOCK;
        if (to <= from) {
            zero_range(s->vec_fd, start, end);
            continue;
        }
        /* a file system without holes gets zeros instead */
        if (fallocate(s->vec_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)from,
                      (off_t)(to - from)) != 0)
            zero_range(s->vec_fd, from, to);
        zero_range(s->vec_fd, start, from);
        zero_range(s->vec_fd, to, end);
    }
    flock(s->vec_fd, LOCK_UN);
    memmove(s->vec_holes, s->vec_holes + s->vec_ready,
            (s->vec_nholes - s->vec_ready) * sizeof(*s->vec_holes));
    s->vec_nholes -= s->vec_ready;
    s->vec_ready = 0;
}

void store_vec_committed(store *s, bool durable)
{
    s->vec_ready = s->vec_nholes;
    if (durable)
        punch(s);
}

void store_vec_close(store *s)
{
    if (s->vec_fd >= 0)
        close(s->vec_fd);
    s->vec_fd = -1;
    store_vectors_close(s->vec_read);
    s->vec_read = NULL;
    free(s->vec_buf);
    free(s->vec_holes);
}

/* ---- ids that come back -------------------------------------------------------------------- */

/* A hole is only ever recorded over ids no live chunk holds, widened up to the largest id handed
 * out; a follower's store may afterwards receive a chunk whose id lies in it (its system of record
 * handed the id out earlier, and the follower learns of the chunk later), and the punch after the
 * commit would then zero the row just written. The recorded holes give those ids up; a hole split
 * in two stays on the same side of vec_ready (committed or the open transaction's). */
qr_status store_vec_unfree(store *s, int64_t lo, int64_t hi, char *err)
{
    for (size_t i = 0; i < s->vec_nholes && lo < hi; i++) {
        store_vec_hole h = s->vec_holes[i];
        if (h.hi <= lo || hi <= h.lo)
            continue;
        if (h.lo < lo && hi < h.hi) {
            if (s->vec_nholes == s->vec_capholes) {
                size_t cap = 2 * s->vec_capholes;
                store_vec_hole *bigger = realloc(s->vec_holes, cap * sizeof(*bigger));
                if (!bigger)
                    return qr_fail(err, QR_ENOMEM, "out of memory");
                s->vec_holes = bigger;
                s->vec_capholes = cap;
            }
            memmove(&s->vec_holes[i + 2], &s->vec_holes[i + 1], (s->vec_nholes - i - 1) * sizeof(h));
            s->vec_holes[i] = (store_vec_hole){h.lo, lo};
            s->vec_holes[i + 1] = (store_vec_hole){hi, h.hi};
            s->vec_nholes++;
            if (i < s->vec_ready)
                s->vec_ready++;
            i++;
        } else if (h.lo < lo) {
            s->vec_holes[i].hi = lo;
        } else if (hi < h.hi) {
            s->vec_holes[i].lo = hi;
        } else {
            s->vec_holes[i].hi = h.lo; /* wholly given up: an empty hole punches nothing */
        }
    }
    return QR_OK;
}
