/*
 * Cross-origin requests (CORS), for the pages that call quarry from a browser: Outlook and Word
 * add-ins, a portal on another origin. server.cors_origins lists the origins whose pages may read
 * quarry's answers, exactly: no wildcard and no "null" (a sandboxed frame or a local file, which
 * any site can produce), because those pages send the user's bearer token, and a wildcard would
 * let any site spend it. Origins are compared after lower-casing their scheme and host and
 * dropping a default port, the form browsers send.
 *
 * Two parts. OPTIONS requests are answered here, on the MHD thread, before authentication and
 * before any worker or share is used (browsers never send credentials on a preflight): a
 * preflight (Origin and Access-Control-Request-Method) from a listed origin, for a method the path
 * accepts and only request headers quarry reads, gets 204 with the Access-Control-Allow-* headers;
 * any other preflight gets 403 without them; an OPTIONS that is no preflight gets 204 with Allow.
 * And every other answer, whatever produced it (a handler, authentication, a limit, a stream),
 * gets Access-Control-Allow-Origin when its request came from a listed origin, added where the
 * server queues every response (server.c, queue). No Access-Control-Allow-Credentials: quarry
 * reads bearer tokens from the Authorization header, never cookies, and a page sends that header
 * itself.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"

#define ORIGINS_MAX 256
#define ORIGIN_MAX  300 /* "https://" + a 253-byte host + ":65535", with room */

struct api_cors {
    size_t n;
    char origins[][ORIGIN_MAX]; /* normalised */
};

/* The request headers quarry reads; a preflight naming any other is refused. */
static const char *const allowed_headers[] = {"Authorization", "Content-Type", "X-Quarry-User", "X-API-Key",
                                              "X-Request-Id"};

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' || c == '.';
}

/* Parses s[0..n) as an origin, scheme://host[:port], into out (lower-case scheme and host, no
 * default port). Returns NULL, or why it is not one (a static string). */
static const char *origin_parse(const char *s, size_t n, char out[ORIGIN_MAX])
{
    if (n == 0)
        return "an empty entry";
    if (memchr(s, '*', n))
        return "list exact origins: a wildcard would let any site call quarry with the user's credentials";
    if (n == 4 && memcmp(s, "null", 4) == 0)
        return "list exact origins: 'null' is sent by sandboxed frames and local files, which any site can "
               "make, so it would let any site call quarry with the user's credentials";
    if (n >= ORIGIN_MAX - 8)
        return "too long for an origin";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == 0x7f)
            return "whitespace or a control character inside";
        if (c >= 0x80)
            return "not ASCII: write an international host name in its xn-- form";
    }
    if (memchr(s, '@', n))
        return "an origin has no user name (user@)";
    if (memchr(s, '?', n) || memchr(s, '#', n))
        return "an origin has no query or fragment";
    size_t i;
    const char *scheme;
    if (n > 8 && strncasecmp(s, "https://", 8) == 0) {
        scheme = "https";
        i = 8;
    } else if (n > 7 && strncasecmp(s, "http://", 7) == 0) {
        scheme = "http";
        i = 7;
    } else {
        return "expected scheme://host[:port] with scheme http or https, e.g. https://addin.example.com";
    }
    const char *slash = memchr(s + i, '/', n - i);
    if (slash)
        return slash == s + n - 1 ? "an origin has no trailing slash" : "an origin has no path";
    size_t host_start = i;
    if (s[i] == '[') {
        for (i++; i < n && s[i] != ']'; i++)
            if (!is_digit(s[i]) && !(lower(s[i]) >= 'a' && lower(s[i]) <= 'f') && s[i] != ':' && s[i] != '.')
                return "a malformed IPv6 address";
        if (i == n || i == host_start + 1)
            return "a malformed IPv6 address";
        i++;
    } else {
        char prev = '.';
        while (i < n && s[i] != ':') {
            if (!is_host_char(s[i]))
                return "a host name has only letters, digits, '-' and '.'";
            if (s[i] == '.' && prev == '.')
                return "an empty label in the host name";
            prev = s[i++];
        }
        if (i == host_start)
            return "no host";
        if (prev == '.')
            return "a host name that ends with '.'";
    }
    size_t host_end = i;
    long port = -1;
    if (i < n) {
        if (s[i] != ':')
            return "expected ':port' after the host";
        i++;
        if (i == n || n - i > 5)
            return "a port is 1 to 65535";
        port = 0;
        for (; i < n; i++) {
            if (!is_digit(s[i]))
                return "a port is 1 to 65535";
            port = port * 10 + (s[i] - '0');
        }
        if (port < 1 || port > 65535)
            return "a port is 1 to 65535";
        if (port == (strcmp(scheme, "https") == 0 ? 443 : 80))
            port = -1; /* browsers never send a default port */
    }
    size_t o = (size_t)snprintf(out, ORIGIN_MAX, "%s://", scheme);
    for (size_t k = host_start; k < host_end; k++)
        out[o++] = lower(s[k]);
    out[o] = '\0';
    if (port > 0)
        snprintf(out + o, ORIGIN_MAX - o, ":%ld", port);
    return NULL;
}

qr_status api_cors_new(const char *list, api_cors **out, char *err)
{
    *out = NULL;
    size_t entries = 0;
    const char *p = list ? list : "";
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p)
        for (const char *q = p; q; q = strchr(q + 1, ','))
            entries++;
    if (entries > ORIGINS_MAX)
        return qr_fail(err, QR_EINVAL, "server.cors_origins: %zu origins, at most %d", entries, ORIGINS_MAX);
    api_cors *c = calloc(1, sizeof(*c) + entries * ORIGIN_MAX);
    if (!c)
        return qr_fail(err, QR_ENOMEM, "out of memory reading server.cors_origins");
    while (entries && c->n < entries) {
        size_t n = strcspn(p, ",");
        const char *next = p[n] ? p + n + 1 : p + n;
        while (n && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        const char *why = origin_parse(p, n, c->origins[c->n]);
        if (why) {
            qr_status st =
                qr_fail(err, QR_EINVAL, "server.cors_origins: '%.*s': %s", (int)(n > 200 ? 200 : n), p, why);
            free(c);
            return st;
        }
        c->n++;
        p = next;
    }
    *out = c;
    return QR_OK;
}

void api_cors_free(api_cors *c)
{
    free(c);
}

size_t api_cors_count(const api_cors *c)
{
    return c ? c->n : 0;
}

bool api_cors_allows(const api_cors *c, const char *origin)
{
    if (!c || !c->n || !origin)
        return false;
    char norm[ORIGIN_MAX];
    if (origin_parse(origin, strlen(origin), norm))
        return false;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->origins[i], norm) == 0)
            return true;
    return false;
}

bool api_cors_headers_ok(const char *list, char *bad, size_t bad_len)
{
    if (bad_len)
        bad[0] = '\0';
    for (const char *p = list ? list : ""; *p;) {
        size_t n = strcspn(p, ",");
        const char *next = p[n] ? p + n + 1 : p + n;
        while (n && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        bool known = n == 0; /* "a, , b": nothing named */
        for (size_t i = 0; !known && i < sizeof(allowed_headers) / sizeof(allowed_headers[0]); i++)
            known = strlen(allowed_headers[i]) == n && strncasecmp(allowed_headers[i], p, n) == 0;
        if (!known) {
            if (bad_len)
                snprintf(bad, bad_len, "%.*s", (int)(n > 64 ? 64 : n), p);
            return false;
        }
        p = next;
    }
    return true;
}

void api_cors_actual(api_req *r, struct MHD_Response *resp)
{
    const api_cors *c = r->srv->cors;
    if (!api_cors_count(c))
        return;
    /* the answer differs by Origin, listed or not: a cache must not hand one origin's to another */
    MHD_add_response_header(resp, "Vary", "Origin");
    const char *origin = api_header(r, "Origin");
    if (!api_cors_allows(c, origin))
        return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", API_CORS_EXPOSE_HEADERS);
}

void api_cors_options(api_req *r, const char *url)
{
    const api_cors *c = r->srv->cors;
    char methods[128];
    switch (api_route_methods(url, methods, sizeof(methods))) {
    case API_MATCH_OK: break;
    case API_MATCH_BAD_ESCAPE:
        api_reply_error(r, 400, "invalid_argument", "%s",
                        "malformed path: bad percent-escape, control character or invalid UTF-8");
        return;
    default: api_reply_error(r, 404, "not_found", "no route for path '%s'", url); return;
    }
    const char *origin = api_header(r, "Origin"), *want = api_header(r, "Access-Control-Request-Method");
    if (!origin || !want) {
        /* not a preflight: what the path accepts (with Access-Control-Allow-Origin from queue when
         * a listed origin asked) */
        char allow[160];
        snprintf(allow, sizeof(allow), "%s, OPTIONS", methods);
        api_reply_raw(r, 204, NULL, "", 0);
        api_reply_header(r, "Allow", allow);
        return;
    }
    r->cors_done = true;
    char bad[80];
    size_t index;
    char *param = NULL;
    const char *headers = api_header(r, "Access-Control-Request-Headers");
    /* a refused preflight: 403, and no Access-Control-* header, so the browser stops there */
    if (!api_cors_allows(c, origin)) {
        api_reply_error(r, 403, "cors_refused",
                        "origin '%.200s' is not allowed to call quarry from a browser%s", origin,
                        api_cors_count(c) ? " (server.cors_origins)" : " (server.cors_origins is empty)");
    } else if (api_route_find(want, url, &index, &param) != API_MATCH_OK) {
        api_reply_error(r, 403, "cors_refused", "this path does not accept %.20s (it accepts %s)", want,
                        methods);
    } else if (headers && !api_cors_headers_ok(headers, bad, sizeof(bad))) {
        api_reply_error(r, 403, "cors_refused", "request header '%s' is not allowed (quarry reads %s)", bad,
                        API_CORS_ALLOW_HEADERS);
    } else {
        api_reply_raw(r, 204, NULL, "", 0);
        api_reply_header(r, "Access-Control-Allow-Origin", origin);
        api_reply_header(r, "Access-Control-Allow-Methods", methods);
        api_reply_header(r, "Access-Control-Allow-Headers", API_CORS_ALLOW_HEADERS);
        api_reply_header(r, "Access-Control-Max-Age", API_CORS_MAX_AGE);
    }
    free(param);
    if (api_cors_count(c))
        api_reply_header(r, "Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
}
