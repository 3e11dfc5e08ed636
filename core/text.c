/*
 * UTF-8 validation and JSON string escaping. Everything quarry stores or sends is valid UTF-8;
 * these are the checks at the edges, written once.
 */
#include <stdint.h>
#include <string.h>

#include "core.h"

size_t qr_utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0; /* continuation byte or overlong 2-byte lead */
    if (c < 0xE0) {
        return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    }
    if (c < 0xF0) {
        if (n < 3 || (s[2] & 0xC0) != 0x80)
            return 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        if (c == 0xED)
            hi = 0x9F; /* surrogates */
        return (s[1] >= lo && s[1] <= hi) ? 3 : 0;
    }
    if (c < 0xF5) {
        if (n < 4 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
        return (s[1] >= lo && s[1] <= hi) ? 4 : 0;
    }
    return 0;
}

int qr_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool qr_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* ASCII eight bytes at a time: ingestion checks every document's text several times */
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if ((w & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        size_t k = qr_utf8_seq_len(p + i, n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

qr_status qr_json_escape(qr_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    qr_status st = qr_buf_putc(out, '"');
    size_t i = 0;
    while (!st && i < n) {
        unsigned char c = p[i];
        size_t k = qr_utf8_seq_len(p + i, n - i);
        if (k == 0) {
            st = qr_buf_puts(out, "\xEF\xBF\xBD"); /* U+FFFD */
            i++;
            continue;
        }
        if (k > 1) {
            st = qr_buf_append(out, p + i, k);
            i += k;
            continue;
        }
        switch (c) {
        case '"': st = qr_buf_puts(out, "\\\""); break;
        case '\\': st = qr_buf_puts(out, "\\\\"); break;
        case '\n': st = qr_buf_puts(out, "\\n"); break;
        case '\r': st = qr_buf_puts(out, "\\r"); break;
        case '\t': st = qr_buf_puts(out, "\\t"); break;
        default:
            if (c < 0x20 || c == 0x7F) {
                char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
                st = qr_buf_puts(out, esc);
            } else {
                st = qr_buf_putc(out, (char)c);
            }
        }
        i++;
    }
    if (!st)
        st = qr_buf_putc(out, '"');
    return st;
}
