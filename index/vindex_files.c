/*
 * vindex_files: the vector index's files under its directory. A generation is gen-N.faiss (the
 * FAISS index, written by FAISS) and gen-N.vec (the chunk ids and normalised rows, mapped into
 * memory for exact search; in rows mode the ids only, the rows being mapped from their owner
 * through vindex_rows), and gen-N.skip when some chunks have no usable vector (their ids);
 * MANIFEST names the served one with a checksum of each file. This
 * file formats and parses the manifest, writes and maps the vectors file, loads a generation
 * and checks it against its manifest, and removes what an interrupted build left behind. The
 * order of writes that makes a publication atomic is vindex_build.c's.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVFFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/IndexScalarQuantizer_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/index_io_c.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/files_int.h"
#include "index/vector.h"
#include "index/vindex_impl.h"
#include "index/vindex_int.h"

#define LOG_COMPONENT "index"
#define VEC_MAGIC     "QRVECS01"
#define VEC_IDS_MAGIC "QRVIDS01" /* rows mode: the ids only, rows_off 0 */
#define VEC_HEADER    64
#define SKIP_MAGIC    "QRSKIP01"
#define SKIP_HEADER   16 /* magic, then the count (uint64) */

/* ---- file helpers ---------------------------------------------------------------------------- */

char *vindex_path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Size and checksum of a whole file. */
qr_status vindex_hash_file(const char *path, uint64_t *size, uint64_t *hash, char *err)
{
    qr_status st = QR_OK;
    size_t bufsz = 1u << 20;
    char *buf = malloc(bufsz);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (!buf) {
        st = qr_fail(err, QR_ENOMEM, "out of memory reading '%s'", path);
        goto out;
    }
    if (fd < 0) {
        st = qr_fail(err, errno == ENOENT ? QR_ENOTFOUND : QR_EIO, "cannot open '%s': %s", path,
                     strerror(errno));
        goto out;
    }
    qhash h;
    qhash_init(&h);
    uint64_t total = 0;
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
        qhash_update(&h, buf, (size_t)r);
        total += (uint64_t)r;
    }
    *size = total;
    *hash = qhash_final(&h);
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return st;
}

qr_status vindex_mkdir_p(const char *dir, char *err)
{
    char *p = strdup(dir);
    if (!p)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    qr_status st = QR_OK;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            st = qr_fail(err, QR_EIO, "cannot create directory '%s': %s", p, strerror(errno));
            break;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    free(p);
    if (!st) {
        struct stat sb;
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            st = qr_fail(err, QR_EIO, "'%s' is not a directory", dir);
    }
    return st;
}

/* ---- manifest -------------------------------------------------------------------------------- */

void vindex_gen_name(char *out, size_t len, uint64_t gen, const char *ext)
{
    snprintf(out, len, "gen-%" PRIu64 ".%s", gen, ext);
}

qr_status vindex_manifest_format(const manifest *m, qr_buf *out)
{
    char idx[64], vec[64];
    vindex_gen_name(idx, sizeof(idx), m->generation, "faiss");
    vindex_gen_name(vec, sizeof(vec), m->generation, "vec");
    qr_status st =
        qr_buf_printf(out,
                      "quarry-vindex 1\n"
                      "generation %" PRIu64 "\n"
                      "type %s\n"
                      "dim %d\n"
                      "count %" PRIu64 "\n"
                      "nlist %" PRIu64 "\n"
                      "store_counter %" PRId64 "\n"
                      "index %s %" PRIu64 " %016" PRIx64 "\n"
                      "vectors %s %" PRIu64 " %016" PRIx64 "\n",
                      m->generation, vindex_type_names[m->type], m->dim, m->count, m->nlist, m->store_counter,
                      idx, m->index_size, m->index_hash, vec, m->vectors_size, m->vectors_hash);
    /* only a generation in rows mode has this line, and only one with skipped chunks the next,
     * so others read as before */
    if (!st && m->external)
        st = qr_buf_printf(out, "rows external %" PRId64 "\n", m->rows_uid);
    if (!st && m->skipped) {
        char skip[64];
        vindex_gen_name(skip, sizeof(skip), m->generation, "skip");
        st = qr_buf_printf(out, "skipped %s %" PRIu64 " %" PRIu64 " %016" PRIx64 "\n", skip, m->skipped,
                           m->skip_size, m->skip_hash);
    }
    if (!st)
        st = qr_buf_printf(out, "check %016" PRIx64 "\n", qhash_bytes(qr_buf_str(out), qr_buf_len(out)));
    return st;
}

/* Parses MANIFEST strictly: the exact lines vindex_manifest_format writes, in order, with a checksum
 * of everything before the last line. */
qr_status vindex_manifest_parse(const char *path, const char *text, size_t len, manifest *m, char *err)
{
    /* the last line is "check <hex>" over every byte before it */
    const char *check = text + len;
    if (len >= 2 && text[len - 1] == '\n')
        for (check = text + len - 1; check > text && check[-1] != '\n'; check--)
            ;
    unsigned long long sum = 0;
    int used = 0;
    if (check == text + len || strncmp(check, "check ", 6) != 0 ||
        sscanf(check, "check %16llx\n%n", &sum, &used) != 1 || check + used != text + len ||
        sum != qhash_bytes(text, (size_t)(check - text)))
        return qr_fail(err, QR_EIO,
                       "vector index manifest '%s' is corrupted (checksum mismatch or truncated)", path);
    char type[32], idx[64], vec[64], want_idx[64], want_vec[64];
    unsigned long long gen, count, nlist, isize, ihash, vsize, vhash;
    long long counter;
    int dim, version;
    used = 0;
    int got = sscanf(text,
                     "quarry-vindex %d\ngeneration %llu\ntype %31s\ndim %d\ncount %llu\nnlist %llu\n"
                     "store_counter %lld\nindex %63s %llu %16llx\nvectors %63s %llu %16llx\n%n",
                     &version, &gen, type, &dim, &count, &nlist, &counter, idx, &isize, &ihash, vec, &vsize,
                     &vhash, &used);
    if (got != 13)
        return qr_fail(err, QR_EIO, "vector index manifest '%s' is malformed", path);
    /* the optional line of rows mode, then that of the chunks without a usable vector */
    long long rows_uid = 0;
    bool external = false;
    if (text + used != check && strncmp(text + used, "rows ", 5) == 0) {
        int more = 0;
        if (sscanf(text + used, "rows external %lld\n%n", &rows_uid, &more) != 1 || more == 0)
            return qr_fail(err, QR_EIO, "vector index manifest '%s' is malformed", path);
        external = true;
        used += more;
    }
    unsigned long long skipped = 0, ssize = 0, shash = 0;
    if (text + used != check) {
        char skip[64], want_skip[64];
        int more = 0;
        vindex_gen_name(want_skip, sizeof(want_skip), gen, "skip");
        if (sscanf(text + used, "skipped %63s %llu %llu %16llx\n%n", skip, &skipped, &ssize, &shash, &more) !=
                4 ||
            text + used + more != check || strcmp(skip, want_skip) != 0 || skipped == 0)
            return qr_fail(err, QR_EIO, "vector index manifest '%s' is malformed", path);
    }
    if (version != 1)
        return qr_fail(err, QR_EIO, "vector index manifest '%s' has version %d; this quarry reads version 1",
                       path, version);
    vindex_gen_name(want_idx, sizeof(want_idx), gen, "faiss");
    vindex_gen_name(want_vec, sizeof(want_vec), gen, "vec");
    /* the names are fixed by the generation, so a manifest cannot point outside the directory */
    if (!vindex_parse_type(type, &m->type) || m->type == VT_AUTO || dim < 1 || dim > VINDEX_DIM_MAX ||
        strcmp(idx, want_idx) != 0 || strcmp(vec, want_vec) != 0 || gen == 0)
        return qr_fail(err, QR_EIO, "vector index manifest '%s' has invalid fields", path);
    m->generation = gen;
    m->dim = dim;
    m->count = count;
    m->nlist = nlist;
    m->store_counter = counter;
    m->index_size = isize;
    m->index_hash = ihash;
    m->vectors_size = vsize;
    m->vectors_hash = vhash;
    m->skipped = skipped;
    m->skip_size = ssize;
    m->skip_hash = shash;
    m->external = external;
    m->rows_uid = rows_uid;
    return QR_OK;
}

/* ---- the vectors file ------------------------------------------------------------------------ */

static size_t vec_rows_offset(uint64_t count)
{
    size_t off = VEC_HEADER + (size_t)count * sizeof(int64_t);
    return (off + 63) & ~(size_t)63;
}

/* Writes ids (ascending) and rows to path (the ids only with ids_only: rows mode, rows_off 0 in
 * the header), syncs it, and returns its size and checksum. */
qr_status vindex_vec_write(const char *path, int dim, const int64_t *ids, const float *rows, size_t count,
                           bool ids_only, uint64_t *size, uint64_t *hash, char *err)
{
    qr_status st = QR_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return qr_fail(err, QR_EIO, "cannot create '%s': %s", path, strerror(errno));
    uint8_t header[VEC_HEADER] = {0};
    uint32_t d = (uint32_t)dim;
    uint64_t c = count, ids_off = VEC_HEADER, rows_off = ids_only ? 0 : vec_rows_offset(count);
    size_t rows_len = ids_only ? 0 : count * (size_t)dim * sizeof(float);
    memcpy(header, ids_only ? VEC_IDS_MAGIC : VEC_MAGIC, 8);
    memcpy(header + 8, &d, 4);
    memcpy(header + 16, &c, 8);
    memcpy(header + 24, &ids_off, 8);
    memcpy(header + 32, &rows_off, 8);
    static const uint8_t pad[64];
    size_t pad_n = ids_only ? 0 : rows_off - VEC_HEADER - count * sizeof(int64_t);
    qhash h;
    qhash_init(&h);
    qhash_update(&h, header, sizeof(header));
    qhash_update(&h, ids, count * sizeof(int64_t));
    qhash_update(&h, pad, pad_n);
    qhash_update(&h, rows, rows_len);
    if ((st = qr_write_all(fd, header, sizeof(header), path, err)) ||
        (st = qr_write_all(fd, ids, count * sizeof(int64_t), path, err)) ||
        (st = qr_write_all(fd, pad, pad_n, path, err)) || (st = qr_write_all(fd, rows, rows_len, path, err)))
        goto out;
    st = qr_file_sync_close(fd, path, err);
    fd = -1;
    if (st)
        goto out;
    *size = VEC_HEADER + count * sizeof(int64_t) + pad_n + rows_len;
    *hash = qhash_final(&h);
out:
    if (fd >= 0)
        close(fd);
    return st;
}

qr_status vindex_skip_write(const char *path, const int64_t *ids, size_t count, uint64_t *size,
                            uint64_t *hash, char *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return qr_fail(err, QR_EIO, "cannot create '%s': %s", path, strerror(errno));
    uint8_t header[SKIP_HEADER];
    uint64_t c = count;
    memcpy(header, SKIP_MAGIC, 8);
    memcpy(header + 8, &c, 8);
    qhash h;
    qhash_init(&h);
    qhash_update(&h, header, sizeof(header));
    qhash_update(&h, ids, count * sizeof(int64_t));
    qr_status st;
    if ((st = qr_write_all(fd, header, sizeof(header), path, err)) ||
        (st = qr_write_all(fd, ids, count * sizeof(int64_t), path, err))) {
        close(fd);
        return st;
    }
    if ((st = qr_file_sync_close(fd, path, err)))
        return st;
    *size = SKIP_HEADER + count * sizeof(int64_t);
    *hash = qhash_final(&h);
    return QR_OK;
}

/* Reads gen-N.skip, checked against the manifest, into s->skip (each id with the generation's
 * counter). */
static qr_status skip_load(vsnap *s, const char *path, const manifest *m, char *err)
{
    char *data = NULL;
    size_t len = 0;
    qr_status st = QR_OK;
    if (m->skipped > (SIZE_MAX - SKIP_HEADER) / sizeof(int64_t) ||
        m->skip_size != SKIP_HEADER + m->skipped * sizeof(int64_t))
        return qr_fail(err, QR_EIO, "vector index manifest gives '%s' an impossible size", path);
    if ((st = qr_read_file(path, (size_t)m->skip_size, &data, &len, err)))
        return st;
    uint64_t c = 0;
    if (len >= SKIP_HEADER)
        memcpy(&c, data + 8, 8);
    if (len != m->skip_size || qhash_bytes(data, len) != m->skip_hash || memcmp(data, SKIP_MAGIC, 8) != 0 ||
        c != m->skipped) {
        st = qr_fail(err, QR_EIO, "skipped-chunks file '%s' is corrupted (size, checksum or header)", path);
        goto out;
    }
    if (vindex_idmap_reserve(&s->skip, (size_t)c)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory reading '%s'", path);
        goto out;
    }
    int64_t prev = -1;
    for (size_t i = 0; i < (size_t)c; i++) {
        int64_t id;
        memcpy(&id, data + SKIP_HEADER + i * sizeof(int64_t), sizeof(id));
        if (id <= prev) {
            st = qr_fail(err, QR_EIO, "skipped-chunks file '%s' has unsorted ids", path);
            goto out;
        }
        prev = id;
        vindex_idmap_put(&s->skip, id, m->store_counter);
    }
out:
    free(data);
    return st;
}

/* Maps a vectors file into s. When want_hash is set the whole file is checked against it. */
qr_status vindex_vec_map(vsnap *s, const char *path, const manifest *m, bool check_hash, char *err)
{
    qr_status st = QR_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qr_fail(err, errno == ENOENT ? QR_ENOTFOUND : QR_EIO, "cannot open vectors file '%s': %s",
                       path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = qr_fail(err, QR_EIO, "cannot stat '%s': %s", path, strerror(errno));
        goto out;
    }
    if ((uint64_t)sb.st_size != m->vectors_size || m->vectors_size < VEC_HEADER) {
        st = qr_fail(err, QR_EIO, "vectors file '%s' has %lld bytes, the manifest says %" PRIu64, path,
                     (long long)sb.st_size, m->vectors_size);
        goto out;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        st = qr_fail(err, QR_EIO, "cannot map '%s': %s", path, strerror(errno));
        goto out;
    }
    s->map = map;
    s->map_len = (size_t)sb.st_size;
    if (check_hash && qhash_bytes(map, s->map_len) != m->vectors_hash) {
        st = qr_fail(err, QR_EIO, "vectors file '%s' is corrupted (checksum mismatch)", path);
        goto out;
    }
    const uint8_t *h = map;
    uint32_t d;
    uint64_t c, ids_off, rows_off;
    memcpy(&d, h + 8, 4);
    memcpy(&c, h + 16, 8);
    memcpy(&ids_off, h + 24, 8);
    memcpy(&rows_off, h + 32, 8);
    bool header_ok = memcmp(h, m->external ? VEC_IDS_MAGIC : VEC_MAGIC, 8) == 0 && (int)d == m->dim &&
                     c == m->count && ids_off == VEC_HEADER && c <= (SIZE_MAX - VEC_HEADER) / sizeof(int64_t);
    if (header_ok && m->external)
        header_ok = rows_off == 0 && VEC_HEADER + c * sizeof(int64_t) == s->map_len;
    else if (header_ok)
        header_ok = rows_off == vec_rows_offset(c) && rows_off + c * d * sizeof(float) == s->map_len;
    if (!header_ok) {
        st = qr_fail(err, QR_EIO, "vectors file '%s' has an invalid header", path);
        goto out;
    }
    s->ids = (const int64_t *)(h + ids_off);
    s->rows = m->external ? NULL : (const float *)(h + rows_off);
    s->count = (size_t)c;
    for (size_t i = 1; i < s->count; i++) {
        if (s->ids[i] <= s->ids[i - 1]) {
            st = qr_fail(err, QR_EIO, "vectors file '%s' has unsorted ids", path);
            goto out;
        }
    }
    /* the exact paths jump around the rows: tell the kernel not to read ahead */
    madvise(map, s->map_len, MADV_RANDOM);
out:
    close(fd);
    return st;
}

/* Checks that a FAISS index read from disk is what the manifest describes. */
static qr_status check_loaded_index(FaissIndex *index, const manifest *m, const char *path, char *err)
{
    if (faiss_Index_d(index) != m->dim || (uint64_t)faiss_Index_ntotal(index) != m->count ||
        faiss_Index_metric_type(index) != METRIC_INNER_PRODUCT)
        return qr_fail(err, QR_EIO,
                       "index file '%s' does not match its manifest (dimension, count or metric)", path);
    bool ok = true;
    switch (m->type) {
    case VT_FLAT: {
        FaissIndexIDMap *map = faiss_IndexIDMap_cast(index);
        ok = map && faiss_IndexFlat_cast(faiss_IndexIDMap_sub_index(map));
        break;
    }
    case VT_IVF_FLAT: ok = faiss_IndexIVFFlat_cast(index) != NULL; break;
    case VT_IVF_SQ8: ok = faiss_IndexIVFScalarQuantizer_cast(index) != NULL; break;
    case VT_IVF_PQ:
        /* the C API has no cast for the fast-scan PQ index: IVF, and neither of the others */
        ok = faiss_IndexIVF_cast(index) && !faiss_IndexIVFFlat_cast(index) &&
             !faiss_IndexIVFScalarQuantizer_cast(index);
        break;
    case VT_HNSW: {
        FaissIndexIDMap *map = faiss_IndexIDMap_cast(index);
        ok = map && !faiss_IndexFlat_cast(faiss_IndexIDMap_sub_index(map));
        break;
    }
    default: ok = false;
    }
    if (ok && vindex_is_ivf(m->type))
        ok = faiss_IndexIVF_nlist(faiss_IndexIVF_cast(index)) == m->nlist;
    if (!ok)
        return qr_fail(err, QR_EIO, "index file '%s' is not of type %s", path, vindex_type_names[m->type]);
    return QR_OK;
}

/* Loads the generation a manifest names, checking every file against it. */
qr_status vindex_load_generation(const vindex *v, const manifest *m, vsnap **out, char *err)
{
    qr_status st = QR_OK;
    char name[64];
    char *ipath = NULL, *vpath = NULL;
    vsnap *s = vindex_snap_new(m->dim);
    if (!s)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    vindex_gen_name(name, sizeof(name), m->generation, "faiss");
    ipath = vindex_path_join(v->dir, name);
    vindex_gen_name(name, sizeof(name), m->generation, "vec");
    vpath = vindex_path_join(v->dir, name);
    if (!ipath || !vpath) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    uint64_t size = 0, hash = 0;
    if ((st = vindex_hash_file(ipath, &size, &hash, err))) {
        if (st == QR_ENOTFOUND)
            qr_fail(err, QR_EIO, "vector index manifest names '%s', which is missing", ipath);
        st = QR_EIO;
        goto out;
    }
    if (size != m->index_size || hash != m->index_hash) {
        st = qr_fail(err, QR_EIO, "index file '%s' is corrupted (%s mismatch)", ipath,
                     size != m->index_size ? "size" : "checksum");
        goto out;
    }
    /* FAISS only reads a file whose checksum we verified: it trusts what it reads */
    if (faiss_read_index_fname(ipath, 0, &s->index) != 0) {
        st = vindex_faiss_fail(err, "cannot read the FAISS index");
        st = QR_EIO;
        goto out;
    }
    if ((st = check_loaded_index(s->index, m, ipath, err)))
        goto out;
    if ((st = vindex_vec_map(s, vpath, m, true, err))) {
        if (st == QR_ENOTFOUND)
            qr_fail(err, QR_EIO, "vector index manifest names '%s', which is missing", vpath);
        st = QR_EIO;
        goto out;
    }
    if (m->skipped) {
        vindex_gen_name(name, sizeof(name), m->generation, "skip");
        char *spath = vindex_path_join(v->dir, name);
        st = spath ? skip_load(s, spath, m, err) : qr_fail(err, QR_ENOMEM, "out of memory");
        if (st == QR_ENOTFOUND)
            qr_fail(err, QR_EIO, "vector index manifest names '%s', which is missing", spath);
        free(spath);
        if (st) {
            st = st == QR_ENOMEM ? st : QR_EIO;
            goto out;
        }
    }
    if ((st = vindex_apply_search_params(s->index, m->type, &v->opts, err)))
        goto out;
    /* the provider's status as it is: its message says what failed */
    if ((st = vindex_rows_attach(v, s, err)))
        goto out;
    s->generation = m->generation;
    s->type = m->type;
    s->nlist = (size_t)m->nlist;
    s->built_counter = m->store_counter;
    s->store_counter = m->store_counter;
    vindex_layout_warm(&v->opts, s);
out:
    free(ipath);
    free(vpath);
    if (st) {
        vindex_snap_free(s);
        s = NULL;
    }
    *out = s;
    return st;
}

qr_status vindex_rows_attach(const vindex *v, vsnap *s, char *err)
{
    if (!v->external || !s->count)
        return QR_OK;
    const float *base = NULL;
    char perr[QR_ERR_LEN] = "";
    qr_status st = v->rows.map(v->rows.ctx, s->ids[s->count - 1], &base, perr);
    if (st)
        return qr_fail(err, st, "cannot map the vector rows of chunks up to %" PRId64 ": %s",
                       s->ids[s->count - 1], perr[0] ? perr : "the provider gave no reason");
    if (!base)
        return qr_fail(err, QR_EINTERNAL, "the vector rows' provider mapped chunks up to %" PRId64 " at NULL",
                       s->ids[s->count - 1]);
    s->base = base;
    return QR_OK;
}

/* Largest generation number among the files in dir, so that a new one never reuses a name. */
uint64_t vindex_max_generation_on_disk(const char *dir)
{
    uint64_t max = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned long long g;
        if (sscanf(e->d_name, "gen-%llu.", &g) == 1 && g > max)
            max = g;
    }
    closedir(d);
    return max;
}

/* Removes every file an interrupted or superseded build left: temporary files and generation
 * files other than `keep` (0 keeps none). */
void vindex_remove_leftovers(const char *dir, uint64_t keep)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned long long g;
        size_t len = strlen(e->d_name);
        bool tmp = len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0;
        bool gen = sscanf(e->d_name, "gen-%llu.", &g) == 1;
        if (!tmp && (!gen || g == keep))
            continue;
        char *p = vindex_path_join(dir, e->d_name);
        if (p && unlink(p) == 0)
            qr_log(QR_LOG_INFO, LOG_COMPONENT, "removed leftover vector index file '%s'", p);
        free(p);
    }
    closedir(d);
}

/* ---- backups --------------------------------------------------------------------------------- */

/* The names of the files a manifest's generation consists of: 2 or 3. */
static size_t generation_files(const manifest *m, char names[3][64])
{
    vindex_gen_name(names[0], 64, m->generation, "faiss");
    vindex_gen_name(names[1], 64, m->generation, "vec");
    if (!m->skipped)
        return 2;
    vindex_gen_name(names[2], 64, m->generation, "skip");
    return 3;
}

qr_status vindex_check_files(const char *dir, index_gen_copy *out, char *err)
{
    char *mpath = vindex_path_join(dir, MANIFEST_NAME), *text = NULL;
    size_t len = 0;
    manifest m = {0};
    qr_status st = QR_OK;
    memset(out, 0, sizeof(*out));
    if (!mpath)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    if ((st = qr_read_file(mpath, MANIFEST_MAX, &text, &len, err))) {
        if (st == QR_ENOTFOUND)
            st = QR_OK; /* nothing built */
        goto out;
    }
    if ((st = vindex_manifest_parse(mpath, text, len, &m, err)))
        goto out;
    char names[3][64];
    size_t n = generation_files(&m, names);
    const uint64_t sizes[3] = {m.index_size, m.vectors_size, m.skip_size};
    const uint64_t hashes[3] = {m.index_hash, m.vectors_hash, m.skip_hash};
    for (size_t i = 0; i < n && !st; i++) {
        char *p = vindex_path_join(dir, names[i]);
        uint64_t size = 0, hash = 0;
        if (!p) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            break;
        }
        st = vindex_hash_file(p, &size, &hash, err);
        if (st == QR_ENOTFOUND)
            st = qr_fail(err, QR_EIO, "vector index manifest '%s' names '%s', which is missing", mpath, p);
        else if (!st && (size != sizes[i] || hash != hashes[i]))
            st = qr_fail(err, QR_EIO, "vector index file '%s' does not match its manifest (%s)", p,
                         size != sizes[i] ? "size" : "checksum");
        free(p);
    }
    if (!st) {
        out->present = true;
        out->generation = m.generation;
        out->counter = m.store_counter;
    }
out:
    free(text);
    free(mpath);
    return st;
}

qr_status vindex_backup_files(const char *src_dir, const char *dest_dir, index_gen_copy *out, char *err)
{
    enum { ATTEMPTS = 20 };
    char *mpath = vindex_path_join(src_dir, MANIFEST_NAME), *text = NULL, *dpath = NULL;
    int fds[3] = {-1, -1, -1};
    size_t len = 0, n = 0;
    char names[3][64];
    qr_status st = QR_OK;
    memset(out, 0, sizeof(*out));
    if (!mpath)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    for (int attempt = 0;; attempt++) {
        manifest m = {0};
        free(text);
        text = NULL;
        if ((st = qr_read_file(mpath, MANIFEST_MAX, &text, &len, err))) {
            if (st == QR_ENOTFOUND)
                st = QR_OK; /* nothing built: nothing to copy */
            goto out;
        }
        if ((st = vindex_manifest_parse(mpath, text, len, &m, err)))
            goto out;
        n = generation_files(&m, names);
        bool vanished = false;
        for (size_t i = 0; i < n && !st; i++) {
            char *p = vindex_path_join(src_dir, names[i]);
            if (!p) {
                st = qr_fail(err, QR_ENOMEM, "out of memory");
                break;
            }
            fds[i] = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (fds[i] < 0 && errno == ENOENT)
                vanished = true; /* a newer generation was published: read its manifest */
            else if (fds[i] < 0)
                st = qr_fail(err, QR_EIO, "cannot open '%s': %s", p, strerror(errno));
            free(p);
            if (vanished)
                break;
        }
        if (st)
            goto out;
        if (!vanished)
            break;
        for (size_t i = 0; i < 3; i++) {
            if (fds[i] >= 0)
                close(fds[i]);
            fds[i] = -1;
        }
        if (attempt + 1 == ATTEMPTS) {
            st = qr_fail(err, QR_ETIMEOUT,
                         "vector index '%s' kept publishing new generations during the copy", src_dir);
            goto out;
        }
    }
    /* the files stay readable through fds even if the generation is replaced now */
    for (size_t i = 0; i < n && !st; i++) {
        char *from = vindex_path_join(src_dir, names[i]);
        dpath = vindex_path_join(dest_dir, names[i]);
        st = from && dpath ? index_copy_fd(fds[i], from, dpath, err)
                           : qr_fail(err, QR_ENOMEM, "out of memory");
        free(from);
        free(dpath);
        dpath = NULL;
    }
    if (st)
        goto out;
    dpath = vindex_path_join(dest_dir, MANIFEST_NAME);
    if (!dpath) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    if ((st = qr_file_write(dpath, text, len, 0600, false, err)))
        goto out;
    st = vindex_check_files(dest_dir, out, err);
out:
    for (size_t i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(dpath);
    free(text);
    free(mpath);
    return st;
}
