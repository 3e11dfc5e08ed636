/*
 * bm25_file: the pruned BM25 index's generation file, current.bm25: its format (a header, then
 * the rows' chunk ids, document keys and lengths, the sorted vocabulary, and the postings in
 * blocks of BLOCK with per-block maxima, delta- and varint-coded), writing it under a temporary
 * name that is synced and renamed (core's atomic file steps, core/file.c), mapping and checking it at open,
 * and reading its header alone for `quarry stats`. The checksum and the write helpers are
 * index/files_int.h's.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/bm25_int.h"
#include "index/feed.h"
#include "index/files_int.h"
#include "index/text.h"

#define LOG_COMPONENT "bm25"
#define FILE_NAME     "current.bm25"
#define FILE_MAGIC    "QRYBM25\x01"
#define FILE_VERSION  1

/* ---- the file ---------------------------------------------------------------------------- */

static size_t put_varint(unsigned char *out, uint32_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (unsigned char)v;
    return n;
}

const unsigned char *bm25_get_varint(const unsigned char *p, const unsigned char *end, uint32_t *v)
{
    uint32_t x = 0;
    for (int shift = 0; p < end && shift < 35; shift += 7) {
        unsigned char b = *p++;
        x |= (uint32_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return p;
        }
    }
    return NULL;
}

/* One posting: the row delta, then its frequencies: one byte for the usual case (the term only
 * in the body, fewer than 128 times), else 0x80 and three varints. */
size_t bm25_encode_posting(unsigned char *out, uint32_t delta, const uint32_t tf[NCOLS])
{
    size_t n = put_varint(out, delta);
    if (!tf[0] && !tf[1] && tf[2] < 0x80) {
        out[n++] = (unsigned char)tf[2];
        return n;
    }
    out[n++] = 0x80;
    for (int c = 0; c < NCOLS; c++)
        n += put_varint(out + n, tf[c]);
    return n;
}

/* A term of the build and its builder, sorted by bytes for the file's vocabulary. */
typedef struct {
    const char *key;
    term_builder *tb;
} sorted_term;

static int cmp_sorted_term(const void *a, const void *b)
{
    return strcmp(((const sorted_term *)a)->key, ((const sorted_term *)b)->key);
}

/* The file being written: every byte after the header goes through the checksum. */
typedef struct {
    int fd;
    qhash c;
    uint64_t at;
    const char *path;
} writer;

static qr_status writer_put(writer *w, const void *p, size_t n, char *err)
{
    qhash_update(&w->c, p, n);
    w->at += n;
    return qr_write_all(w->fd, p, n, w->path, err);
}

static qr_status writer_pad(writer *w, char *err)
{
    static const unsigned char zero[8];
    size_t pad = (size_t)((8 - (w->at & 7)) & 7);
    return pad ? writer_put(w, zero, pad, err) : QR_OK;
}

qr_status bm25_write_generation(builder *b, const char *dir, int64_t counter, int64_t uid, char *err)
{
    char path[4096], *tmp = NULL;
    snprintf(path, sizeof(path), "%s/%s", dir, FILE_NAME);
    sorted_term *order = malloc((b->terms.n ? b->terms.n : 1) * sizeof(*order));
    if (!order)
        return qr_fail(err, QR_ENOMEM, "out of memory writing the BM25 index");
    size_t nt = 0;
    for (size_t i = 0; i < b->terms.cap; i++)
        if (b->terms.keys[i])
            order[nt++] = (sorted_term){b->terms.keys[i], &b->tb[b->terms.vals[i]]};
    qsort(order, nt, sizeof(*order), cmp_sorted_term);

    file_header h = {0};
    memcpy(h.magic, FILE_MAGIC, 8);
    h.version = FILE_VERSION;
    h.ncols = NCOLS;
    h.counter = counter;
    h.store_uid = uid;
    h.nrows = b->nrows;
    h.nterms = nt;
    h.total_len = b->total_len;
    uint64_t at = sizeof(h);
#define ALIGN8(x) (((x) + 7) & ~(uint64_t)7)
    h.off_ids = at;
    at = ALIGN8(at + b->nrows * sizeof(int64_t));
    h.off_docs = at;
    at = ALIGN8(at + b->nrows * sizeof(uint32_t));
    h.off_lens = at;
    at = ALIGN8(at + b->nrows * sizeof(uint32_t));
    h.off_terms = at;
    at += nt * sizeof(file_term);
    h.off_strings = at;
    for (size_t i = 0; i < nt; i++) {
        h.strings_len += strlen(order[i].key);
        term_builder *tb = order[i].tb;
        if (!bm25_close_block(tb)) {
            free(order);
            return qr_fail(err, QR_ENOMEM, "out of memory writing the BM25 index");
        }
        h.nblocks += tb->nblocks;
        h.data_len += tb->len;
        h.npostings += tb->df;
    }
    at = ALIGN8(at + h.strings_len);
    h.off_blocks = at;
    at += h.nblocks * sizeof(file_block);
    h.off_data = at;
    at = ALIGN8(at + h.data_len);
    h.size = at;

    /* "<dir>/.current.bm25.<pid>.<n>.tmp": the writer's pid, so that leftovers of dead writers are
     * removed at open (bm25_remove_leftovers), and a number unique in the process (two indexes of
     * one process may build at once) */
    writer w = {.fd = -1};
    qr_status st = qr_file_temp(path, 0600, &w.fd, &tmp, err);
    if (st) {
        free(order);
        return st;
    }
    w.path = tmp;
    if (ftruncate(w.fd, (off_t)h.size) != 0 || lseek(w.fd, (off_t)sizeof(h), SEEK_SET) < 0) {
        st = qr_fail(err, QR_EIO, "cannot size '%s': %s", tmp, strerror(errno));
        goto out;
    }
    w.at = sizeof(h);
    qhash_init(&w.c);
    if ((st = writer_put(&w, b->ids, b->nrows * sizeof(int64_t), err)) || (st = writer_pad(&w, err)) ||
        (st = writer_put(&w, b->docs, b->nrows * sizeof(uint32_t), err)) || (st = writer_pad(&w, err)) ||
        (st = writer_put(&w, b->lens, b->nrows * sizeof(uint32_t), err)) || (st = writer_pad(&w, err)))
        goto out;
    uint64_t str_off = 0, first_block = 0;
    for (size_t i = 0; i < nt && !st; i++) {
        const char *key = order[i].key;
        term_builder *tb = order[i].tb;
        file_term ft = {.str_off = str_off,
                        .str_len = (uint32_t)strlen(key),
                        .df = tb->df,
                        .first_block = first_block,
                        .nblocks = (uint32_t)tb->nblocks,
                        .min_len = tb->min_len};
        memcpy(ft.max_tf, tb->max_tf, sizeof(ft.max_tf));
        str_off += ft.str_len;
        first_block += tb->nblocks;
        st = writer_put(&w, &ft, sizeof(ft), err);
    }
    for (size_t i = 0; i < nt && !st; i++) {
        st = writer_put(&w, order[i].key, strlen(order[i].key), err);
    }
    if (st || (st = writer_pad(&w, err)))
        goto out;
    uint64_t data_off = 0;
    for (size_t i = 0; i < nt && !st; i++) {
        term_builder *tb = order[i].tb;
        for (size_t j = 0; j < tb->nblocks && !st; j++) {
            file_block fb = tb->blocks[j];
            fb.data_off += data_off;
            st = writer_put(&w, &fb, sizeof(fb), err);
        }
        data_off += tb->len;
    }
    for (size_t i = 0; i < nt && !st; i++) {
        st = writer_put(&w, order[i].tb->data, order[i].tb->len, err);
    }
    if (st || (st = writer_pad(&w, err)))
        goto out;
    h.checksum = qhash_final(&w.c);
    if (w.at != h.size) {
        st = qr_fail(err, QR_EINTERNAL, "BM25 index file '%s': wrote %llu bytes, planned %llu", tmp,
                     (unsigned long long)w.at, (unsigned long long)h.size);
        goto out;
    }
    if (pwrite(w.fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        st = qr_fail(err, QR_EIO, "cannot write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    /* sync, close, rename over current.bm25, sync the directory: core's one sequence */
    st = qr_file_finish(w.fd, tmp, path, true, err);
    w.fd = -1;
out:
    if (w.fd >= 0)
        close(w.fd);
    if (st)
        unlink(tmp);
    free(tmp);
    free(order);
    return st;
#undef ALIGN8
}

/* Removes temporary files that writers which no longer run left behind (a build killed midway). */
void bm25_remove_leftovers(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    char prefix[64];
    snprintf(prefix, sizeof(prefix), ".%s.", FILE_NAME);
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid = 0;
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || n < 4 ||
            strcmp(e->d_name + n - 4, ".tmp") != 0 || sscanf(e->d_name + strlen(prefix), "%ld.", &pid) != 1 ||
            pid <= 0)
            continue;
        if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

/* Maps <dir>/current.bm25 and checks it whole. QR_ENOTFOUND when absent; QR_EIO when damaged. */
qr_status bm25_load_generation(bm25_index *x, char *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", x->dir, FILE_NAME);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? qr_fail(err, QR_ENOTFOUND, "no BM25 index at '%s'", path)
                               : qr_fail(err, QR_EIO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size < (off_t)sizeof(file_header)) {
        close(fd);
        return qr_fail(err, QR_EIO, "BM25 index '%s' is truncated", path);
    }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return qr_fail(err, QR_EIO, "cannot map '%s': %s", path, strerror(errno));
    const file_header *h = map;
    const unsigned char *base = map;
    qr_status st = QR_OK;
#define BAD(why)                                                                                     \
    do {                                                                                             \
        st = qr_fail(err, QR_EIO, "BM25 index '%s' is damaged (%s): it will be rebuilt", path, why); \
        goto out;                                                                                    \
    } while (0)
    if (memcmp(h->magic, FILE_MAGIC, 8) != 0 || h->version != FILE_VERSION || h->ncols != NCOLS)
        BAD("not a quarry BM25 index of this version");
    if (h->size != len)
        BAD("its size is not the recorded one");
    if (h->nrows >= UINT32_MAX || h->off_ids != sizeof(*h) || h->off_docs < h->off_ids + h->nrows * 8 ||
        h->off_lens < h->off_docs + h->nrows * 4 || h->off_terms < h->off_lens + h->nrows * 4 ||
        h->nterms > len / sizeof(file_term) ||
        h->off_strings != h->off_terms + h->nterms * sizeof(file_term) || h->strings_len > len ||
        h->off_blocks < h->off_strings + h->strings_len || h->nblocks > len / sizeof(file_block) ||
        h->off_data != h->off_blocks + h->nblocks * sizeof(file_block) || h->data_len > len ||
        h->off_data + h->data_len > len || (h->off_blocks & 7) || (h->off_terms & 7))
        BAD("its sections do not fit");
    if (qhash_bytes(base + sizeof(*h), len - sizeof(*h)) != h->checksum)
        BAD("checksum mismatch");
    const file_term *terms = (const file_term *)(base + h->off_terms);
    const file_block *blocks = (const file_block *)(base + h->off_blocks);
    for (uint64_t i = 0; i < h->nterms; i++) {
        const file_term *t = &terms[i];
        if (t->str_off + t->str_len > h->strings_len || t->first_block + t->nblocks > h->nblocks ||
            !t->nblocks)
            BAD("a term's entry is out of range");
    }
    for (uint64_t i = 0; i < h->nblocks; i++) {
        const file_block *b = &blocks[i];
        if (!b->n || b->n > BLOCK || b->data_off >= h->data_len || b->last_row >= h->nrows ||
            b->first_row > b->last_row)
            BAD("a block is out of range");
    }
    x->map = map;
    x->map_len = len;
    x->h = h;
    x->gen_ids = (const int64_t *)(base + h->off_ids);
    x->gen_docs = (const uint32_t *)(base + h->off_docs);
    x->gen_lens = (const uint32_t *)(base + h->off_lens);
    x->terms = terms;
    x->strings = (const char *)(base + h->off_strings);
    x->blocks = blocks;
    x->data = base + h->off_data;
    x->gen_rows = (size_t)h->nrows;
    x->live_rows = h->nrows;
    x->live_len = h->total_len;
    x->counter = h->counter;
    for (size_t r = 0; r < x->gen_rows; r++)
        if (x->gen_docs[r] > x->max_doc)
            x->max_doc = x->gen_docs[r];
    return QR_OK;
#undef BAD
out:
    munmap(map, len);
    return st;
}

qr_status bm25_peek(const char *data_dir, bm25_info *out, char *err)
{
    if (!data_dir || !out)
        return qr_fail(err, QR_EINVAL, "bm25_peek: NULL argument");
    memset(out, 0, sizeof(*out));
    char path[4096];
    snprintf(path, sizeof(path), "%s/bm25/%s", data_dir, FILE_NAME);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? qr_fail(err, QR_ENOTFOUND, "no BM25 index at '%s'", path)
                               : qr_fail(err, QR_EIO, "cannot open '%s': %s", path, strerror(errno));
    file_header h;
    struct stat sb;
    bool ok = fstat(fd, &sb) == 0 && pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h);
    close(fd);
    if (!ok || memcmp(h.magic, FILE_MAGIC, 8) != 0 || h.version != FILE_VERSION ||
        h.size != (uint64_t)sb.st_size)
        return qr_fail(err, QR_EIO, "'%s' is not a BM25 index of this version (it will be rebuilt)", path);
    out->counter = out->generation_counter = h.counter;
    out->rows = (size_t)h.nrows;
    out->terms = (size_t)h.nterms;
    out->file_bytes = (uint64_t)sb.st_size;
    return QR_OK;
}

/* ---- backups ----------------------------------------------------------------------------- */

qr_status bm25_check_file(const char *dir, index_gen_copy *out, char *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, FILE_NAME);
    memset(out, 0, sizeof(*out));
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? QR_OK : qr_fail(err, QR_EIO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size < (off_t)sizeof(file_header)) {
        close(fd);
        return qr_fail(err, QR_EIO, "BM25 index '%s' is truncated", path);
    }
    size_t len = (size_t)sb.st_size;
    const unsigned char *data = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (data == MAP_FAILED)
        return qr_fail(err, QR_EIO, "cannot map '%s': %s", path, strerror(errno));
    qr_status st = QR_OK;
    file_header h;
    memcpy(&h, data, sizeof(h));
    if (memcmp(h.magic, FILE_MAGIC, 8) != 0 || h.version != FILE_VERSION || h.ncols != NCOLS)
        st = qr_fail(err, QR_EIO, "'%s' is not a quarry BM25 index of version %d", path, FILE_VERSION);
    else if (h.size != len)
        st = qr_fail(err, QR_EIO, "BM25 index '%s' has %zu bytes, its header says %llu", path, len,
                     (unsigned long long)h.size);
    else if (qhash_bytes(data + sizeof(h), len - sizeof(h)) != h.checksum)
        st = qr_fail(err, QR_EIO, "BM25 index '%s' is damaged (checksum mismatch)", path);
    if (!st) {
        out->present = true;
        out->counter = h.counter;
        out->store_uid = h.store_uid;
    }
    munmap((void *)data, len);
    return st;
}

qr_status bm25_backup_file(const char *src_dir, const char *dest_dir, index_gen_copy *out, char *err)
{
    char src[4096], dest[4096];
    snprintf(src, sizeof(src), "%s/%s", src_dir, FILE_NAME);
    snprintf(dest, sizeof(dest), "%s/%s", dest_dir, FILE_NAME);
    memset(out, 0, sizeof(*out));
    /* a new generation is renamed over the name: the open file stays the one published now */
    int fd = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? QR_OK : qr_fail(err, QR_EIO, "cannot open '%s': %s", src, strerror(errno));
    qr_status st = index_copy_fd(fd, src, dest, err);
    close(fd);
    return st ? st : bm25_check_file(dest_dir, out, err);
}
