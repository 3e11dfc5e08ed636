/*
 * The common shape of a JSON-lines corpus line (BEIR's corpus.jsonl: an object of string fields,
 * perhaps an "acl" list of strings and an empty "metadata" object), read without building a
 * JSON tree. A general parser (jansson) builds an object with a hash table and a copy of every
 * string, which made parsing a tenth of a bulk load's CPU; this scanner decodes the strings once
 * into one block. It accepts only lines that json_loadb(JSON_REJECT_DUPLICATES) accepts too, and
 * gives the same values for them; everything else (another value type, an escaped or repeated
 * key, invalid UTF-8, a bad escape, \u0000, trailing bytes) it declines, and the caller parses the
 * line with the general parser, which also words the errors.
 */
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest.h"

#define MAX_KEYS 32 /* more keys: declined (duplicates are checked pairwise) */

typedef struct {
    const unsigned char *p, *end;
    char *out; /* where the next decoded string goes */
} scanner;

static void skip_ws(scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* The four hex digits after "\u" at p (end bounds the input); -1 when there are not four. */
static long hex4(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 4)
        return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = qr_hex_digit(p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static char *put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* Decodes the string whose opening quote is at s->p into s->out (NUL-terminated); on success
 * s->p is past the closing quote, *len is the decoded length and true is returned. */
static bool scan_string(scanner *s, size_t *len)
{
    const unsigned char *p = s->p + 1, *end = s->end;
    char *o = s->out;
    for (;;) {
        /* the plain run up to the next quote, backslash, control or non-ASCII byte */
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        memcpy(o, run, (size_t)(p - run));
        o += p - run;
        if (p == end || *p < 0x20)
            return false;
        if (*p == '"')
            break;
        if (*p >= 0x80) {
            size_t k = qr_utf8_seq_len(p, (size_t)(end - p));
            if (!k)
                return false;
            memcpy(o, p, k);
            o += k;
            p += k;
            continue;
        }
        /* a backslash */
        if (end - p < 2)
            return false;
        unsigned char e = p[1];
        p += 2;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            long cp = hex4(p, end);
            if (cp <= 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
                return false; /* \u0000, a bad escape or an unpaired low surrogate */
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - p < 2 || p[0] != '\\' || p[1] != 'u')
                    return false;
                long lo = hex4(p + 2, end);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return false;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            o = put_utf8(o, (unsigned long)cp);
            break;
        }
        default: return false;
        }
    }
    *o = '\0';
    *len = (size_t)(o - s->out);
    s->p = p + 1;
    return true;
}

static bool key_is(const unsigned char *k, size_t n, const char *name)
{
    return n == strlen(name) && memcmp(k, name, n) == 0;
}

bool ingest_jsonl_scan(const char *raw, size_t len, ingest_jsonl_line *out, char **buf)
{
    *buf = NULL;
    memset(out, 0, sizeof(*out));
    char *block = malloc(len + 1); /* a decoded string never outgrows its quoted form */
    if (!block)
        return false;
    scanner s = {(const unsigned char *)raw, (const unsigned char *)raw + len, block};
    const unsigned char *keys[MAX_KEYS];
    size_t key_len[MAX_KEYS], nkeys = 0;
    skip_ws(&s);
    if (s.p == s.end || *s.p != '{')
        goto decline;
    s.p++;
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}') {
        s.p++;
        goto done;
    }
    for (;;) {
        /* a key: plain characters only, so that raw bytes compare as decoded ones */
        if (s.p == s.end || *s.p != '"' || nkeys == MAX_KEYS)
            goto decline;
        const unsigned char *k = ++s.p;
        while (s.p < s.end && *s.p >= 0x20 && *s.p < 0x80 && *s.p != '"' && *s.p != '\\')
            s.p++;
        if (s.p == s.end || *s.p != '"')
            goto decline;
        size_t kn = (size_t)(s.p - k);
        for (size_t i = 0; i < nkeys; i++)
            if (key_len[i] == kn && memcmp(keys[i], k, kn) == 0)
                goto decline; /* a repeated key */
        keys[nkeys] = k;
        key_len[nkeys++] = kn;
        s.p++;
        skip_ws(&s);
        if (s.p == s.end || *s.p != ':')
            goto decline;
        s.p++;
        skip_ws(&s);
        if (s.p == s.end)
            goto decline;
        size_t n;
        if (key_is(k, kn, "acl")) {
            /* a list of strings, kept one after another */
            if (*s.p != '[')
                goto decline;
            s.p++;
            skip_ws(&s);
            out->has_acl = true;
            out->acl = s.out;
            if (s.p < s.end && *s.p == ']') {
                s.p++;
            } else {
                for (;;) {
                    if (s.p == s.end || *s.p != '"' || !scan_string(&s, &n))
                        goto decline;
                    s.out += n + 1;
                    out->nacl++;
                    skip_ws(&s);
                    if (s.p < s.end && *s.p == ',') {
                        s.p++;
                        skip_ws(&s);
                        continue;
                    }
                    if (s.p == s.end || *s.p != ']')
                        goto decline;
                    s.p++;
                    break;
                }
            }
        } else if (key_is(k, kn, "metadata")) {
            /* only the empty object; any other goes to the general parser */
            if (*s.p != '{')
                goto decline;
            s.p++;
            skip_ws(&s);
            if (s.p == s.end || *s.p != '}')
                goto decline;
            s.p++;
            out->metadata_empty = true;
        } else {
            if (*s.p != '"' || !scan_string(&s, &n))
                goto decline;
            const char **field = key_is(k, kn, "_id")     ? &out->id
                                 : key_is(k, kn, "text")  ? &out->text
                                 : key_is(k, kn, "title") ? &out->title
                                 : key_is(k, kn, "url")   ? &out->url
                                 : key_is(k, kn, "uri")   ? &out->uri
                                                          : NULL;
            if (field) {
                *field = s.out;
                if (field == &out->text)
                    out->text_len = n;
                s.out += n + 1;
            } /* other fields' strings are checked, then overwritten */
        }
        skip_ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            skip_ws(&s);
            continue;
        }
        if (s.p == s.end || *s.p != '}')
            goto decline;
        s.p++;
        break;
    }
done:
    skip_ws(&s);
    if (s.p != s.end)
        goto decline; /* bytes after the object */
    *buf = block;
    return true;
decline:
    free(block);
    memset(out, 0, sizeof(*out));
    return false;
}
