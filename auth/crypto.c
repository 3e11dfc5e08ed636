/*
 * The small pieces tokens and keys share: base64url and hex, random bytes and SHA-256 from
 * OpenSSL's libcrypto, and auth's state files under <data.dir>/auth/, which hold secrets and are
 * therefore written atomically (core's qr_file_write) with mode 0600 in a directory of mode 0700.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth_int.h"

const char *auth_crypto_version(void)
{
    return OpenSSL_version(OPENSSL_VERSION_STRING);
}

static const char b64url_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

qr_status auth_b64url_encode(qr_buf *out, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char quad[4] = {b64url_chars[v >> 18 & 63], b64url_chars[v >> 12 & 63], b64url_chars[v >> 6 & 63],
                        b64url_chars[v & 63]};
        size_t emit = n - i >= 3 ? 4 : n - i + 1;
        qr_status st = qr_buf_append(out, quad, emit);
        if (st)
            return st;
    }
    return QR_OK;
}

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

qr_status auth_b64url_decode(const char *s, size_t n, unsigned char *out, size_t cap, size_t *len)
{
    if (n % 4 == 1)
        return QR_EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        size_t chunk = n - i < 4 ? n - i : 4;
        uint32_t v = 0;
        for (size_t j = 0; j < 4; j++) {
            int d = j < chunk ? b64url_value(s[i + j]) : 0;
            if (d < 0)
                return QR_EINVAL;
            v = v << 6 | (uint32_t)d;
        }
        unsigned char bytes[3] = {(unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
        size_t nbytes = chunk - 1;
        /* the bits below the last byte must be zero: one spelling per value */
        if ((chunk == 2 && (v & 0xffff)) || (chunk == 3 && (v & 0xff)))
            return QR_EINVAL;
        if (o + nbytes > cap)
            return QR_ELIMIT;
        memcpy(out + o, bytes, nbytes);
        o += nbytes;
    }
    *len = o;
    return QR_OK;
}

void auth_hex(const unsigned char *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = '\0';
}

bool auth_unhex(const char *s, size_t n, unsigned char *out)
{
    if (n % 2)
        return false;
    for (size_t i = 0; i < n; i += 2) {
        int hi = qr_hex_digit((unsigned char)s[i]), lo = qr_hex_digit((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

qr_status auth_random(unsigned char *out, size_t n, char *err)
{
    if (RAND_bytes(out, (int)n) != 1)
        return qr_fail(err, QR_EINTERNAL, "the random number generator failed");
    return QR_OK;
}

void auth_sha256(const void *p, size_t n, unsigned char out[32])
{
    SHA256(p, n, out);
}

static qr_status make_dir(const char *path, mode_t mode, char *err)
{
    if (mkdir(path, mode) == 0 || errno == EEXIST)
        return QR_OK;
    return qr_fail(err, QR_EIO, "cannot create directory '%s': %s", path, strerror(errno));
}

qr_status auth_state_path(const auth_ctx *ctx, const char *name, bool create, char **out, char *err)
{
    *out = NULL;
    const char *dir = ctx->s.data_dir;
    size_t len = strlen(dir) + strlen(name) + 8;
    char *path = malloc(len);
    if (!path)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    if (create) {
        qr_status st = make_dir(dir, 0755, err);
        snprintf(path, len, "%s/auth", dir);
        if (!st)
            st = make_dir(path, 0700, err);
        if (st) {
            free(path);
            return st;
        }
    }
    snprintf(path, len, "%s/auth/%s", dir, name);
    *out = path;
    return QR_OK;
}

/* core's one atomic writer (core/file.c): temporary file, fsync, rename or link, directory fsync,
 * every failure reported. */
qr_status auth_write_file(const char *path, const void *data, size_t len, bool replace, char *err)
{
    return qr_file_write(path, data, len, 0600, replace, err);
}

void auth_file_sig_get(const char *path, auth_file_sig *sig)
{
    struct stat sb;
    memset(sig, 0, sizeof(*sig));
    if (!path || stat(path, &sb) != 0)
        return;
    sig->exists = true;
    sig->dev = sb.st_dev;
    sig->ino = sb.st_ino;
    sig->size = sb.st_size;
    sig->mtime = sb.st_mtim;
}

bool auth_file_sig_same(const auth_file_sig *a, const auth_file_sig *b)
{
    if (a->exists != b->exists)
        return false;
    return !a->exists || (a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
                          a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec);
}
