/*
 * multipart/form-data (RFC 7578) for document uploads: the whole body is in memory already
 * (bounded by server.max_body_bytes), so this is a parser over one buffer rather than a streaming
 * one. Parts point into the body (no copies of file contents); their names, file names and types
 * are copied out. Anything malformed -- no boundary, a part without headers, a boundary never
 * closed, headers over 8 KiB, more than API_PARTS_MAX parts -- is an error naming the problem.
 */
#define _GNU_SOURCE /* asprintf, memmem, strptime, timegm, explicit_bzero */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/multipart.h"

#define HEADERS_MAX (8 << 10)

void api_parts_free(api_part *parts, size_t n)
{
    for (size_t i = 0; parts && i < n; i++) {
        free(parts[i].name);
        free(parts[i].filename);
        free(parts[i].content_type);
    }
    free(parts);
}

/* Reads a parameter of a header value ("form-data; name=\"a\"; filename=x"), quoted or not, into
 * a new string (free() it); NULL when absent. Quoted values may escape '"' and '\' with '\'. */
char *api_header_param(const char *value, size_t len, const char *param)
{
    size_t plen = strlen(param);
    size_t i = 0;
    while (i < len) {
        /* skip to the next ';' separated item */
        while (i < len && value[i] != ';')
            i++;
        if (i >= len)
            break;
        i++;
        while (i < len && (value[i] == ' ' || value[i] == '\t'))
            i++;
        if (len - i > plen && strncasecmp(value + i, param, plen) == 0 && value[i + plen] == '=') {
            i += plen + 1;
            char *out = malloc(len - i + 1);
            if (!out)
                return NULL;
            size_t o = 0;
            if (i < len && value[i] == '"') {
                i++;
                while (i < len && value[i] != '"') {
                    if (value[i] == '\\' && i + 1 < len)
                        i++;
                    out[o++] = value[i++];
                }
            } else {
                while (i < len && value[i] != ';' && value[i] != ' ' && value[i] != '\t')
                    out[o++] = value[i++];
            }
            out[o] = '\0';
            return out;
        }
    }
    return NULL;
}

static const char *find(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    if (nlen == 0 || hlen < nlen)
        return NULL;
    return memmem(hay, hlen, needle, nlen);
}

/* Parses one part's header block [h, h+hlen). */
static qr_status part_headers(const char *h, size_t hlen, api_part *p, char *err)
{
    const char *end = h + hlen;
    bool disposition = false;
    while (h < end) {
        const char *eol = find(h, (size_t)(end - h), "\r\n", 2);
        size_t n = eol ? (size_t)(eol - h) : (size_t)(end - h);
        const char *colon = memchr(h, ':', n);
        if (!colon)
            return qr_fail(err, QR_EINVAL, "multipart: malformed part header");
        size_t name_len = (size_t)(colon - h);
        const char *v = colon + 1;
        size_t vlen = n - name_len - 1;
        while (vlen && (*v == ' ' || *v == '\t')) {
            v++;
            vlen--;
        }
        if (name_len == 19 && strncasecmp(h, "Content-Disposition", 19) == 0) {
            if (vlen < 9 || strncasecmp(v, "form-data", 9) != 0)
                return qr_fail(err, QR_EINVAL, "multipart: a part's Content-Disposition is not form-data");
            free(p->name);
            free(p->filename);
            p->name = api_header_param(v, vlen, "name");
            p->filename = api_header_param(v, vlen, "filename");
            disposition = true;
        } else if (name_len == 12 && strncasecmp(h, "Content-Type", 12) == 0) {
            free(p->content_type);
            if (!(p->content_type = strndup(v, vlen)))
                return qr_fail(err, QR_ENOMEM, "out of memory parsing multipart");
        }
        h += n + (eol ? 2 : 0);
    }
    if (!disposition || !p->name)
        return qr_fail(err, QR_EINVAL, "multipart: a part has no Content-Disposition name");
    return QR_OK;
}

qr_status api_multipart_parse(const char *body, size_t len, const char *content_type, api_part **out,
                              size_t *n, char *err)
{
    *out = NULL;
    *n = 0;
    char *boundary = api_header_param(content_type, strlen(content_type), "boundary");
    if (!boundary || !*boundary || strlen(boundary) > 70) {
        free(boundary);
        return qr_fail(err, QR_EINVAL, "multipart: Content-Type has no valid boundary (1 to 70 characters)");
    }
    qr_status st = QR_OK;
    api_part *parts = NULL;
    size_t count = 0;
    char delim[80];
    int dlen = snprintf(delim, sizeof(delim), "--%s", boundary);
    free(boundary);

    /* The first delimiter may follow a preamble; later ones are preceded by CRLF. */
    const char *end = body + len;
    const char *p = find(body, len, delim, (size_t)dlen);
    if (!p) {
        st = qr_fail(err, QR_EINVAL, "multipart: the boundary never appears in the body");
        goto out;
    }
    p += dlen;
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            break; /* the closing delimiter */
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
            st = qr_fail(err, QR_EINVAL, "multipart: a delimiter is not followed by CRLF");
            goto out;
        }
        p += 2;
        const char *hend = find(p, (size_t)(end - p), "\r\n\r\n", 4);
        const char *empty = (end - p >= 2 && p[0] == '\r' && p[1] == '\n') ? p : NULL;
        size_t hlen;
        const char *data;
        if (empty) {
            hlen = 0;
            data = p + 2;
        } else if (hend && hend - p <= HEADERS_MAX) {
            hlen = (size_t)(hend - p);
            data = hend + 4;
        } else {
            st = qr_fail(err, QR_EINVAL, "multipart: a part's headers do not end (or exceed 8 KiB)");
            goto out;
        }
        char close[84];
        int clen = snprintf(close, sizeof(close), "\r\n%s", delim);
        const char *next = find(data, (size_t)(end - data), close, (size_t)clen);
        if (!next) {
            st = qr_fail(err, QR_EINVAL, "multipart: a part is not closed by the boundary");
            goto out;
        }
        if (count == API_PARTS_MAX) {
            st = qr_fail(err, QR_ELIMIT, "multipart: more than %d parts", API_PARTS_MAX);
            goto out;
        }
        api_part *grown = realloc(parts, (count + 1) * sizeof(*parts));
        if (!grown) {
            st = qr_fail(err, QR_ENOMEM, "out of memory parsing multipart");
            goto out;
        }
        parts = grown;
        api_part *part = &parts[count++];
        memset(part, 0, sizeof(*part));
        if ((st = part_headers(p, hlen, part, err)))
            goto out;
        part->data = data;
        part->len = (size_t)(next - data);
        p = next + clen;
    }
out:
    if (st) {
        api_parts_free(parts, count);
        return st;
    }
    *out = parts;
    *n = count;
    return QR_OK;
}
