/* The checksum of the vector index's and the BM25 index's files (files_int.h), and the plain copy
 * a backup makes of them. Their writes go through core's atomic file steps (core/file.c), so both
 * follow one fsync policy. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/files_int.h"

/* ---- checksums ------------------------------------------------------------------------------ */

#define QH_P1 0x9e3779b185ebca87ull
#define QH_P2 0xc2b2ae3d27d4eb4full

static uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t qh_round(uint64_t lane, uint64_t w)
{
    lane += w * QH_P2;
    lane = rotl64(lane, 31);
    return lane * QH_P1;
}

void qhash_init(qhash *h)
{
    h->lane[0] = QH_P1 + QH_P2;
    h->lane[1] = QH_P2;
    h->lane[2] = 0;
    h->lane[3] = (uint64_t)0 - QH_P1;
    h->tail_n = 0;
    h->total = 0;
}

static void qhash_stripe(qhash *h, const uint8_t *p)
{
    for (int i = 0; i < 4; i++) {
        uint64_t w;
        memcpy(&w, p + 8 * i, 8);
        h->lane[i] = qh_round(h->lane[i], w);
    }
}

void qhash_update(qhash *h, const void *data, size_t n)
{
    if (n == 0)
        return; /* data may be NULL then */
    const uint8_t *p = data;
    h->total += n;
    if (h->tail_n) {
        size_t take = 32 - h->tail_n < n ? 32 - h->tail_n : n;
        memcpy(h->tail + h->tail_n, p, take);
        h->tail_n += take;
        p += take;
        n -= take;
        if (h->tail_n < 32)
            return;
        qhash_stripe(h, h->tail);
        h->tail_n = 0;
    }
    for (; n >= 32; p += 32, n -= 32)
        qhash_stripe(h, p);
    memcpy(h->tail, p, n);
    h->tail_n = n;
}

uint64_t qhash_final(const qhash *h)
{
    uint64_t x =
        rotl64(h->lane[0], 1) + rotl64(h->lane[1], 7) + rotl64(h->lane[2], 12) + rotl64(h->lane[3], 18);
    x ^= h->total * QH_P1;
    for (size_t i = 0; i < h->tail_n; i++)
        x = rotl64(x ^ (h->tail[i] * QH_P2), 11) * QH_P1;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

uint64_t qhash_bytes(const void *p, size_t n)
{
    qhash h;
    qhash_init(&h);
    qhash_update(&h, p, n);
    return qhash_final(&h);
}

/* ---- copies for backups --------------------------------------------------------------------- */

qr_status index_copy_fd(int fd, const char *src, const char *dest, char *err)
{
    qr_status st = QR_OK;
    size_t bufsz = 1u << 20;
    char *buf = malloc(bufsz);
    int out = -1;
    if (!buf) {
        st = qr_fail(err, QR_ENOMEM, "out of memory copying '%s'", src);
        goto out;
    }
    out = open(dest, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (out < 0) {
        st = qr_fail(err, QR_EIO, "cannot create '%s': %s", dest, strerror(errno));
        goto out;
    }
    if (lseek(fd, 0, SEEK_SET) < 0) {
        st = qr_fail(err, QR_EIO, "cannot read '%s': %s", src, strerror(errno));
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf, bufsz);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = qr_fail(err, QR_EIO, "cannot read '%s': %s", src, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        if ((st = qr_write_all(out, buf, (size_t)r, dest, err)))
            goto out;
    }
    st = qr_file_sync_close(out, dest, err);
    out = -1;
out:
    if (out >= 0)
        close(out);
    free(buf);
    return st;
}
