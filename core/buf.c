/*
 * Growable, always NUL-terminated byte buffers with a hard cap on their content, for anything
 * whose size an outsider controls (request bodies, streamed answers, log lines). A failed append
 * is sticky, as in curl's dynbuf: a buffer that once failed refuses every later append until it
 * is reset, so code that checks only at the end can never emit a line with a hole in it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static const char empty_str[1] = "";

void qr_buf_init(qr_buf *b, size_t cap)
{
    b->data_ = NULL;
    b->len_ = 0;
    b->alloc_ = 0;
    b->cap_ = cap;
    b->failed_ = QR_OK;
}

void qr_buf_release(qr_buf *b)
{
    free(b->data_);
    b->data_ = NULL;
    b->len_ = 0;
    b->alloc_ = 0;
    b->failed_ = QR_OK;
}

void qr_buf_reset(qr_buf *b)
{
    b->len_ = 0;
    b->failed_ = QR_OK;
    if (b->data_)
        b->data_[0] = '\0';
}

/* Records the first failure; every later append returns it. */
static qr_status buf_fail(qr_buf *b, qr_status st)
{
    b->failed_ = st;
    return st;
}

/* Makes room for `extra` more bytes plus the terminator, within the cap. */
static qr_status buf_reserve(qr_buf *b, size_t extra)
{
    if (b->failed_)
        return b->failed_;
    if (extra > b->cap_ || b->len_ > b->cap_ - extra)
        return buf_fail(b, QR_ELIMIT);
    size_t need = b->len_ + extra + 1;
    if (need <= b->alloc_)
        return QR_OK;
    size_t alloc = b->alloc_ ? b->alloc_ : 64;
    while (alloc < need)
        alloc = alloc > SIZE_MAX / 2 ? need : alloc * 2;
    /* The cap bounds content; never allocate much beyond it. */
    if (alloc > b->cap_ + 1 && need <= b->cap_ + 1)
        alloc = b->cap_ + 1;
    char *p = realloc(b->data_, alloc);
    if (!p)
        return buf_fail(b, QR_ENOMEM);
    b->data_ = p;
    b->alloc_ = alloc;
    return QR_OK;
}

qr_status qr_buf_append(qr_buf *b, const void *p, size_t n)
{
    qr_status st = buf_reserve(b, n);
    if (st)
        return st;
    if (n)
        memcpy(b->data_ + b->len_, p, n);
    b->len_ += n;
    b->data_[b->len_] = '\0';
    return QR_OK;
}

qr_status qr_buf_puts(qr_buf *b, const char *s)
{
    return qr_buf_append(b, s, strlen(s));
}

qr_status qr_buf_putc(qr_buf *b, char c)
{
    return qr_buf_append(b, &c, 1);
}

qr_status qr_buf_vprintf(qr_buf *b, const char *fmt, va_list ap)
{
    if (b->failed_)
        return b->failed_;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return buf_fail(b, QR_EINVAL);
    qr_status st = buf_reserve(b, (size_t)n);
    if (st)
        return st;
    vsnprintf(b->data_ + b->len_, (size_t)n + 1, fmt, ap);
    b->len_ += (size_t)n;
    return QR_OK;
}

qr_status qr_buf_printf(qr_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qr_status st = qr_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return st;
}

qr_status qr_buf_failed(const qr_buf *b)
{
    return b->failed_;
}

const char *qr_buf_str(const qr_buf *b)
{
    return b->data_ ? b->data_ : empty_str;
}

size_t qr_buf_len(const qr_buf *b)
{
    return b->len_;
}

size_t qr_buf_cap(const qr_buf *b)
{
    return b->cap_;
}

void qr_buf_wipe(qr_buf *b)
{
    if (b->data_) {
        /* volatile: a plain memset before the buffer is dropped may be optimised away */
        volatile char *p = b->data_;
        for (size_t i = 0; i < b->alloc_; i++)
            p[i] = 0;
    }
    b->len_ = 0;
    b->failed_ = QR_OK;
}

char *qr_buf_detach(qr_buf *b)
{
    char *p = b->data_;
    if (!p)
        p = calloc(1, 1);
    b->data_ = NULL;
    b->len_ = 0;
    b->alloc_ = 0;
    b->failed_ = QR_OK;
    return p;
}
