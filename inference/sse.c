/*
 * The server-sent-event parser. A streamed chat completion arrives in TCP pieces that may cut an
 * event anywhere: inside "data:", between a CR and its LF, inside a multi-byte UTF-8 character.
 * The parser keeps the unfinished line and event between calls and hands out only complete
 * events, following the WHATWG event-stream rules that OpenAI-compatible servers rely on.
 */
#include <string.h>

#include "inference/inference_int.h"

#define SSE_EVENT_NAME_MAX 256

static const unsigned char utf8_bom[3] = {0xEF, 0xBB, 0xBF};

void infer_sse_init(infer_sse *p, size_t max_event)
{
    memset(p, 0, sizeof(*p));
    qr_buf_init(&p->line, max_event);
    qr_buf_init(&p->data, max_event);
    qr_buf_init(&p->event, SSE_EVENT_NAME_MAX);
    p->max_event = max_event;
}

void infer_sse_release(infer_sse *p)
{
    qr_buf_release(&p->line);
    qr_buf_release(&p->data);
    qr_buf_release(&p->event);
}

/* A failed append: over the cap (hostile or broken stream) or out of memory. */
static qr_status append_failed(qr_status st, char *err, size_t cap)
{
    if (st == QR_ELIMIT)
        return qr_fail(err, QR_ELIMIT, "server-sent event line or field longer than %zu bytes", cap);
    return qr_fail(err, st, "out of memory reading server-sent events");
}

static qr_status dispatch(infer_sse *p, infer_sse_fn fn, void *user, char *err)
{
    qr_status st = QR_OK;
    if (p->have_data) {
        const char *type = qr_buf_len(&p->event) ? qr_buf_str(&p->event) : "message";
        st = fn(user, type, qr_buf_str(&p->data), qr_buf_len(&p->data), err);
    }
    qr_buf_reset(&p->data);
    qr_buf_reset(&p->event);
    p->have_data = false;
    return st;
}

/* Interprets one complete line (without its terminator). */
static qr_status end_line(infer_sse *p, infer_sse_fn fn, void *user, char *err)
{
    const char *line = qr_buf_str(&p->line);
    size_t len = qr_buf_len(&p->line);
    qr_status st = QR_OK;
    if (len == 0) {
        st = dispatch(p, fn, user, err);
    } else if (line[0] != ':') {
        const char *colon = memchr(line, ':', len);
        size_t name_len = colon ? (size_t)(colon - line) : len;
        const char *value = colon ? colon + 1 : line + len;
        size_t value_len = len - (size_t)(value - line);
        if (value_len && *value == ' ') {
            value++;
            value_len--;
        }
        if (name_len == 4 && memcmp(line, "data", 4) == 0) {
            /* lines of one event's data are joined with newlines */
            st = p->have_data ? qr_buf_putc(&p->data, '\n') : QR_OK;
            if (!st)
                st = qr_buf_append(&p->data, value, value_len);
            if (st)
                st = append_failed(st, err, p->max_event);
            p->have_data = true;
        } else if (name_len == 5 && memcmp(line, "event", 5) == 0) {
            qr_buf_reset(&p->event);
            st = qr_buf_append(&p->event, value, value_len);
            if (st)
                st = append_failed(st, err, SSE_EVENT_NAME_MAX);
        }
        /* id and retry matter to browsers reconnecting, not to a one-shot completion */
    }
    qr_buf_reset(&p->line);
    return st;
}

static qr_status feed_lines(infer_sse *p, const char *buf, size_t n, infer_sse_fn fn, void *user, char *err)
{
    size_t i = 0;
    while (i < n) {
        if (p->after_cr) {
            p->after_cr = false;
            if (buf[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < n && buf[j] != '\r' && buf[j] != '\n')
            j++;
        qr_status st = j > i ? qr_buf_append(&p->line, buf + i, j - i) : QR_OK;
        if (st)
            return append_failed(st, err, p->max_event);
        if (j == n)
            break;
        p->after_cr = buf[j] == '\r';
        st = end_line(p, fn, user, err);
        if (st)
            return st;
        i = j + 1;
    }
    return QR_OK;
}

qr_status infer_sse_feed(infer_sse *p, const char *buf, size_t n, infer_sse_fn fn, void *user, char *err)
{
    /* The byte-order mark may itself arrive split; bytes that turn out not to be one are fed as
     * ordinary text. */
    while (!p->bom_done && n > 0) {
        if ((unsigned char)buf[0] == utf8_bom[p->bom_seen]) {
            buf++;
            n--;
            if (++p->bom_seen == sizeof(utf8_bom))
                p->bom_done = true;
            continue;
        }
        p->bom_done = true;
        if (p->bom_seen) {
            qr_status st = feed_lines(p, (const char *)utf8_bom, p->bom_seen, fn, user, err);
            if (st)
                return st;
        }
    }
    return feed_lines(p, buf, n, fn, user, err);
}
