/*
 * Plain text and markdown. Both are parsed in the caller's process: the parsers are quarry's
 * own, linear in the input and allocate only the normalised text, so there is nothing a hostile
 * file could make them do that the size limit does not already bound.
 *
 * Plain text is UTF-8 (a UTF-16 file with a byte order mark is converted first). Markdown is
 * normalised as a whole first, then read line by line: ATX (#) and setext (=== / ---) headings
 * open sections, blank lines end paragraphs, fenced code is kept as text (so a "# comment"
 * inside a fence is not a heading), YAML front matter is dropped except for its title, and
 * thematic breaks are dropped. Inline markup is kept as written.
 */
#define _GNU_SOURCE /* memmem, strndup */
#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest_int.h"

/* Converts UTF-16 with a byte order mark to UTF-8 in out. */
static qr_status utf16_to_utf8(const char *bytes, size_t len, const ingest_limits *lim, qr_buf *out,
                               char *err)
{
    iconv_t cd = iconv_open("UTF-8", "UTF-16");
    if (cd == (iconv_t)-1)
        return qr_fail(err, QR_EINTERNAL, "cannot convert UTF-16: iconv has no UTF-16 converter");
    qr_status st = QR_OK;
    char chunk[4096];
    char *in = (char *)bytes;
    size_t left = len;
    while (left && !st) {
        char *o = chunk;
        size_t room = sizeof(chunk);
        size_t r = iconv(cd, &in, &left, &o, &room);
        int e = errno;
        if (o > chunk && qr_buf_append(out, chunk, (size_t)(o - chunk)))
            st =
                qr_fail(err, QR_ELIMIT, "the text exceeds the limit of %zu bytes (ingest.max_document_bytes)",
                        lim->max_document_bytes);
        if (r == (size_t)-1 && e != E2BIG && !st) {
            if (lim->reject_invalid_utf8 || e != EILSEQ) {
                st = qr_fail(err, QR_EINVAL, "invalid UTF-16 at byte %zu", len - left);
            } else {
                /* Repair: one U+FFFD for the bad code unit, then go on. */
                if (qr_buf_append(out, "\xEF\xBF\xBD", 3))
                    st = qr_fail(err, QR_ELIMIT, "the text exceeds the limit of %zu bytes",
                                 lim->max_document_bytes);
                size_t skip = left < 2 ? left : 2;
                in += skip;
                left -= skip;
            }
        }
    }
    iconv_close(cd);
    return st;
}

static bool has_utf16_bom(const char *p, size_t n)
{
    return n >= 2 && ((p[0] == '\xFF' && p[1] == '\xFE') || (p[0] == '\xFE' && p[1] == '\xFF'));
}

/* If the document is UTF-16, converts it into conv and points *p, *n at the result. */
static qr_status decode_input(const char **p, size_t *n, const ingest_limits *lim, qr_buf *conv, char *err)
{
    if (!has_utf16_bom(*p, *n))
        return QR_OK;
    qr_status st = utf16_to_utf8(*p, *n, lim, conv, err);
    if (!st) {
        *p = qr_buf_str(conv);
        *n = qr_buf_len(conv);
    }
    return st;
}

qr_status extract_plain(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b, char *err)
{
    qr_buf conv;
    qr_buf_init(&conv, lim->max_document_bytes);
    qr_status st = decode_input(&bytes, &len, lim, &conv, err);
    if (!st)
        st = builder_paragraph(b, bytes, len, 0, err);
    qr_buf_release(&conv);
    return st;
}

/* ---- markdown ------------------------------------------------------------------------------ */

typedef struct {
    const char *s; /* the normalised text */
    doc_builder *b;
    size_t para_start, para_end; /* current paragraph, when para_lines > 0 */
    int para_lines;
    int first_level; /* level of the first heading, for the fallback title */
    char *first_heading;
} md_parser;

static qr_status md_flush(md_parser *m, char *err)
{
    qr_status st = QR_OK;
    if (m->para_lines > 0 && m->para_end > m->para_start)
        st = builder_paragraph(m->b, m->s + m->para_start, m->para_end - m->para_start, 0, err);
    m->para_start = m->para_end = 0;
    m->para_lines = 0;
    return st;
}

static qr_status md_heading(md_parser *m, int level, const char *text, size_t n, char *err)
{
    qr_status st = md_flush(m, err);
    if (st)
        return st;
    if (level == 1)
        st = builder_title(m->b, text, n, err);
    if (!st && !m->first_heading && n) {
        m->first_heading = strndup(text, n);
        if (!m->first_heading)
            return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    return st ? st : builder_heading_add(m->b, level, text, n, err);
}

/* A line made of one repeated character c (at least min of them, spaces allowed between). */
static bool rule_line(const char *l, size_t n, char c, int min)
{
    int count = 0;
    for (size_t i = 0; i < n; i++) {
        if (l[i] == c)
            count++;
        else if (l[i] != ' ')
            return false;
    }
    return count >= min;
}

/* An ATX heading: 1-6 '#' then a space or the end of the line. Points text and tn at its text
 * without the closing #s. */
static int atx_level(const char *l, size_t n, const char **text, size_t *tn)
{
    size_t h = 0;
    while (h < n && l[h] == '#')
        h++;
    if (h < 1 || h > 6 || (h < n && l[h] != ' '))
        return 0;
    const char *t = l + h;
    size_t k = n - h;
    while (k && *t == ' ') {
        t++;
        k--;
    }
    /* A closing sequence of #s counts only after a space (or when it is all there is). */
    size_t e = k;
    while (e && t[e - 1] == '#')
        e--;
    if (e == 0 || t[e - 1] == ' ')
        k = e;
    while (k && t[k - 1] == ' ')
        k--;
    *text = t;
    *tn = k;
    return (int)h;
}

static bool fence_line(const char *l, size_t n, char *ch, size_t *flen)
{
    if (n < 3 || (l[0] != '`' && l[0] != '~'))
        return false;
    size_t k = 0;
    while (k < n && l[k] == l[0])
        k++;
    if (k < 3)
        return false;
    *ch = l[0];
    *flen = k;
    return true;
}

/* Front matter: "---" on the first line, up to a line "---" or "...". Returns the offset after
 * it (0 when there is none) and sets the title from a "title:" line. */
static size_t md_front_matter(md_parser *m, size_t len, char *err, qr_status *st)
{
    const char *s = m->s;
    if (len < 4 || strncmp(s, "---\n", 4) != 0)
        return 0;
    size_t pos = 4;
    while (pos < len) {
        const char *nl = memchr(s + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - s) : len;
        size_t n = end - pos;
        const char *l = s + pos;
        if ((n == 3 && (strncmp(l, "---", 3) == 0 || strncmp(l, "...", 3) == 0)))
            return nl ? end + 1 : end;
        if (n > 6 && strncmp(l, "title:", 6) == 0) {
            const char *t = l + 6;
            size_t k = n - 6;
            while (k && *t == ' ') {
                t++;
                k--;
            }
            if (k >= 2 && (t[0] == '"' || t[0] == '\'') && t[k - 1] == t[0]) {
                t++;
                k -= 2;
            }
            *st = builder_title(m->b, t, k, err);
            if (*st)
                return 0;
        }
        pos = nl ? end + 1 : end;
    }
    /* No closing line: it was not front matter after all (the title may stay). */
    return 0;
}

qr_status extract_markdown(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b, char *err)
{
    qr_buf conv, norm;
    qr_buf_init(&conv, lim->max_document_bytes);
    qr_buf_init(&norm, lim->max_document_bytes);
    md_parser m = {.b = b};
    qr_status st = decode_input(&bytes, &len, lim, &conv, err);
    if (!st)
        st = ingest_normalize(bytes, len, lim->reject_invalid_utf8, &norm, err);
    if (st)
        goto out;
    m.s = qr_buf_str(&norm);
    size_t n = qr_buf_len(&norm);
    size_t pos = md_front_matter(&m, n, err, &st);
    if (st)
        goto out;
    bool in_fence = false;
    char fence_ch = 0;
    size_t fence_len = 0;
    while (pos < n && !st) {
        const char *nl = memchr(m.s + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - m.s) : n;
        const char *l = m.s + pos;
        size_t ln = end - pos;
        size_t next = nl ? end + 1 : n;
        char ch;
        size_t flen;
        const char *text;
        size_t tn;
        int level;
        if (in_fence) {
            if (fence_line(l, ln, &ch, &flen) && ch == fence_ch && flen >= fence_len &&
                rule_line(l, ln, ch, 3)) {
                in_fence = false;
                st = md_flush(&m, err);
            } else {
                if (m.para_lines == 0)
                    m.para_start = pos;
                m.para_end = end;
                m.para_lines++;
            }
        } else if (ln == 0) {
            st = md_flush(&m, err);
        } else if (fence_line(l, ln, &fence_ch, &fence_len)) {
            st = md_flush(&m, err);
            in_fence = true;
        } else if ((level = atx_level(l, ln, &text, &tn)) > 0) {
            st = md_heading(&m, level, text, tn, err);
        } else if (m.para_lines == 1 &&
                   (rule_line(l, ln, '=', 1) || (l[0] == '-' && rule_line(l, ln, '-', 2)))) {
            /* Setext heading: the one-line paragraph above is its text. */
            size_t ps = m.para_start, pe = m.para_end;
            m.para_start = m.para_end = 0;
            m.para_lines = 0;
            st = md_heading(&m, l[0] == '=' ? 1 : 2, m.s + ps, pe - ps, err);
        } else if (rule_line(l, ln, '-', 3) || rule_line(l, ln, '*', 3) || rule_line(l, ln, '_', 3)) {
            st = md_flush(&m, err);
        } else {
            if (m.para_lines == 0)
                m.para_start = pos;
            m.para_end = end;
            m.para_lines++;
        }
        pos = next;
    }
    if (!st)
        st = md_flush(&m, err);
    if (!st && m.first_heading)
        st = builder_title(b, m.first_heading, strlen(m.first_heading), err);
out:
    free(m.first_heading);
    qr_buf_release(&norm);
    qr_buf_release(&conv);
    return st;
}
