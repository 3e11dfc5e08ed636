/*
 * Growable, always NUL-terminated byte buffers with a hard cap on their content, for anything
 * whose size an outsider controls (request bodies, streamed answers, log lines).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static const char empty_str[1] = "";

void qr_buf_init(qr_buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->cap = cap;
}

void qr_buf_release(qr_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
}

void qr_buf_reset(qr_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

/* Makes room for `extra` more bytes plus the terminator, within the cap. */
static qr_status buf_reserve(qr_buf *b, size_t extra)
{
    if (extra > b->cap || b->len > b->cap - extra)
        return QR_ELIMIT;
    size_t need = b->len + extra + 1;
    if (need <= b->alloc)
        return QR_OK;
    size_t alloc = b->alloc ? b->alloc : 64;
    while (alloc < need)
        alloc = alloc > SIZE_MAX / 2 ? need : alloc * 2;
    /* The cap bounds content; never allocate much beyond it. */
    if (alloc > b->cap + 1 && need <= b->cap + 1)
        alloc = b->cap + 1;
    char *p = realloc(b->data, alloc);
    if (!p)
        return QR_ENOMEM;
    b->data = p;
    b->alloc = alloc;
    return QR_OK;
}

qr_status qr_buf_append(qr_buf *b, const void *p, size_t n)
{
    qr_status st = buf_reserve(b, n);
    if (st)
        return st;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
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
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return QR_EINVAL;
    qr_status st = buf_reserve(b, (size_t)n);
    if (st)
        return st;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
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

const char *qr_buf_str(const qr_buf *b)
{
    return b->data ? b->data : empty_str;
}

size_t qr_buf_len(const qr_buf *b)
{
    return b->len;
}

char *qr_buf_detach(qr_buf *b)
{
    char *p = b->data;
    if (!p)
        p = calloc(1, 1);
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    return p;
}
