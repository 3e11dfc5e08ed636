/*
 * Normalisation: every extractor's text passes through here before it is stored, so that the
 * store only ever holds valid UTF-8 without control characters and with predictable whitespace
 * (the chunker relies on "\n\n" between paragraphs and "\n" between lines). The normaliser is
 * incremental: whitespace is held back until visible text follows, so feeding a document in
 * pieces (paragraph by paragraph, as the HTML and DOCX extractors do) gives the same result as
 * feeding it whole, and the output never starts or ends with whitespace.
 */
#include <stdint.h>
#include <string.h>

#include "ingest/ingest_int.h"

#define CP_INVALID UINT32_MAX

void norm_init(norm_state *s, bool reject_invalid)
{
    memset(s, 0, sizeof(*s));
    s->reject_invalid = reject_invalid;
}

void norm_break(norm_state *s, int breaks)
{
    if (breaks > s->pending_breaks)
        s->pending_breaks = breaks > 2 ? 2 : breaks;
}

static qr_status limit_error(const qr_buf *out, char *err)
{
    return qr_fail(err, QR_ELIMIT, "the text exceeds the limit of %zu bytes (ingest.max_document_bytes)",
                   qr_buf_cap(out));
}

qr_status norm_flush(norm_state *s, qr_buf *out)
{
    qr_status st = QR_OK;
    if (s->started) {
        if (s->pending_breaks >= 2)
            st = qr_buf_append(out, "\n\n", 2);
        else if (s->pending_breaks == 1)
            st = qr_buf_putc(out, '\n');
        else if (s->pending_space)
            st = qr_buf_putc(out, ' ');
    }
    if (!st) {
        s->pending_breaks = 0;
        s->pending_space = false;
    }
    return st;
}

/* Decodes one UTF-8 sequence at p (n > 0 bytes available). Returns the bytes consumed; for an
 * invalid sequence *cp is CP_INVALID and the length is the maximal subpart (Unicode's
 * recommended practice: one U+FFFD per maximal invalid subsequence). */
static size_t decode(const unsigned char *p, size_t n, uint32_t *cp)
{
    unsigned char b = p[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    uint32_t v;
    if (b < 0x80) {
        *cp = b;
        return 1;
    } else if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
        v = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        v = b & 0x0F;
        if (b == 0xE0)
            lo = 0xA0;
        else if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        v = b & 0x07;
        if (b == 0xF0)
            lo = 0x90;
        else if (b == 0xF4)
            hi = 0x8F;
    } else {
        *cp = CP_INVALID;
        return 1;
    }
    size_t i = 1;
    for (; i <= need; i++) {
        if (i >= n || p[i] < lo || p[i] > hi) {
            *cp = CP_INVALID;
            return i;
        }
        v = (v << 6) | (p[i] & 0x3F);
        lo = 0x80;
        hi = 0xBF;
    }
    *cp = v;
    return i;
}

static bool is_space_cp(uint32_t c)
{
    return c == ' ' || c == '\t' || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Characters that carry no text: C0 and C1 controls (line breaks and tabs are handled before),
 * DEL, the BOM / zero-width no-break space, and noncharacters. */
static bool is_dropped_cp(uint32_t c)
{
    return c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0xFEFF || (c >= 0xFDD0 && c <= 0xFDEF) ||
           (c & 0xFFFE) == 0xFFFE;
}

/* Appends visible bytes, writing the held-back separator first. */
static qr_status emit(norm_state *s, qr_buf *out, const void *p, size_t n)
{
    qr_status st = norm_flush(s, out);
    if (!st)
        st = qr_buf_append(out, p, n);
    if (!st)
        s->started = true;
    return st;
}

static bool ascii_visible(unsigned char c)
{
    return c > 0x20 && c < 0x7F;
}

qr_status norm_feed(norm_state *s, qr_buf *out, const char *in, size_t len, unsigned flags, char *err)
{
    const unsigned char *p = (const unsigned char *)in;
    const bool flow = flags & NORM_FLOW;
    size_t i = 0;
    qr_status st = QR_OK;
    while (i < len && !st) {
        unsigned char c = p[i];
        if (ascii_visible(c)) {
            /* Fast path: a run of printable ASCII with single spaces between words. */
            size_t j = i + 1;
            while (j < len &&
                   (ascii_visible(p[j]) || (p[j] == ' ' && j + 1 < len && ascii_visible(p[j + 1]))))
                j++;
            st = emit(s, out, p + i, j - i);
            i = j;
            continue;
        }
        uint32_t cp;
        size_t k = decode(p + i, len - i, &cp);
        if (cp == CP_INVALID) {
            if (s->reject_invalid) {
                return qr_fail(err, QR_EINVAL, "invalid UTF-8 at byte %zu (ingest.invalid_utf8 is reject)",
                               s->consumed + i);
            }
            st = emit(s, out, "\xEF\xBF\xBD", 3);
        } else if (cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x85 || cp == 0x2028) {
            if (cp == '\r' && i + 1 < len && p[i + 1] == '\n')
                k = 2;
            /* one line end is a line break, two or more (a blank line) a paragraph break */
            if (flow)
                s->pending_space = true;
            else if (s->pending_breaks < 2)
                s->pending_breaks++;
        } else if (cp == 0x0C || cp == 0x2029) {
            if (flow)
                s->pending_space = true;
            else
                norm_break(s, 2);
        } else if (is_space_cp(cp)) {
            s->pending_space = true;
        } else if (!is_dropped_cp(cp)) {
            st = emit(s, out, p + i, k);
        }
        i += k;
    }
    s->consumed += i;
    if (st == QR_ELIMIT)
        return limit_error(out, err);
    if (st)
        return qr_fail(err, st, "out of memory while normalising text");
    return QR_OK;
}

qr_status ingest_normalize(const char *in, size_t len, bool reject_invalid, qr_buf *out, char *err)
{
    if (!out || (!in && len))
        return qr_fail(err, QR_EINVAL, "ingest_normalize: NULL argument");
    norm_state s;
    norm_init(&s, reject_invalid);
    return norm_feed(&s, out, in, len, 0, err);
}

qr_status norm_utf8_repair(const char *in, size_t len, bool reject, qr_buf *buf, const char **res,
                           size_t *rlen, char *err)
{
    if (qr_utf8_valid(in, len)) {
        *res = in;
        *rlen = len;
        return QR_OK;
    }
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0, run = 0;
    while (i < len) {
        uint32_t cp;
        size_t k = decode(p + i, len - i, &cp);
        if (cp != CP_INVALID) {
            i += k;
            continue;
        }
        if (reject)
            return qr_fail(err, QR_EINVAL, "invalid UTF-8 at byte %zu (ingest.invalid_utf8 is reject)", i);
        if (qr_buf_append(buf, in + run, i - run) || qr_buf_append(buf, "\xEF\xBF\xBD", 3))
            return qr_fail(err, QR_ELIMIT,
                           "the text exceeds the limit of %zu bytes (ingest.max_document_bytes)",
                           qr_buf_cap(buf));
        i += k;
        run = i;
    }
    if (qr_buf_append(buf, in + run, len - run))
        return qr_fail(err, QR_ELIMIT, "the text exceeds the limit of %zu bytes (ingest.max_document_bytes)",
                       qr_buf_cap(buf));
    *res = qr_buf_str(buf);
    *rlen = qr_buf_len(buf);
    return QR_OK;
}
