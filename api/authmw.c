/*
 * Authentication of every request but /healthz, before any route code runs. Three kinds of
 * credentials are accepted: HTTP Basic (the password is checked by LDAP on every request; it is
 * never compared with a cache), a bearer token from POST /v1/auth/token ("qt1...."), and a
 * service API key ("qk_...", as a bearer token or in X-API-Key) whose scopes must cover the
 * route. A key with the on_behalf_of scope may name a user in X-Quarry-User and then acts as
 * that user, whose principal comes from LDAP through auth's cache. Every failure is closed:
 * LDAP that cannot be reached is 503, never a principal. Credentials are never logged.
 */
#define _GNU_SOURCE /* asprintf, memmem, strptime, timegm, explicit_bzero */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"

unsigned char *api_base64_decode(const char *in, size_t in_len, size_t *len)
{
    while (in_len && in[in_len - 1] == '=')
        in_len--;
    if (in_len % 4 == 1)
        return NULL;
    unsigned char *out = malloc(in_len / 4 * 3 + 3);
    if (!out)
        return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < in_len; i++) {
        char c = in[i];
        int v;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+')
            v = 62;
        else if (c == '/')
            v = 63;
        else {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    out[o] = '\0';
    *len = o;
    return out;
}

bool api_acl_permits(const auth_principal *p, const char *const *acl, size_t nacl)
{
    if (!p)
        return false;
    if (p->is_admin)
        return true;
    for (size_t i = 0; i < nacl; i++)
        if (auth_principal_has(p, acl[i]))
            return true;
    return false;
}

/* Sets RFC 6750's challenge for a refused bearer token (sent by api_reply_error's 401): error code and a
 * description with the characters a quoted-string cannot hold replaced. */
static void api_bearer_challenge(api_req *r, const char *error, const char *why)
{
    char desc[256];
    size_t n = 0;
    for (const char *p = why; *p && n + 1 < sizeof(desc); p++)
        desc[n++] =
            (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) ? '\'' : *p;
    desc[n] = '\0';
    snprintf(r->challenge, sizeof(r->challenge),
             "Bearer realm=\"quarry\", error=\"%s\", error_description=\"%s\"", error, desc);
}

/* Answers an authentication failure with the status that fits it, and writes its audit line. */
static void auth_failed(api_req *r, qr_status st, const char *scheme, const auth_oidc_info *oidc,
                        const char *err)
{
    switch (st) {
    case QR_ELIMIT: {
        char secs[32];
        snprintf(secs, sizeof(secs), "%lld", (long long)auth_rate_limit_window_s(r->srv->auth));
        api_reply_error(r, 429, "rate_limited", "%s", err);
        api_reply_header(r, "Retry-After", secs);
        break;
    }
    case QR_EUNAVAILABLE:
        /* the reason names the directory's (or PostgreSQL's, for API keys) address: for the log, not for
         * whoever knocks */
        qr_log(QR_LOG_WARN, "auth", "request %s: cannot check credentials: %s", r->request_id, err);
        api_reply_error(r, 503, "unavailable",
                        "cannot check credentials: the directory or the system of record is unavailable");
        api_reply_header(r, "Retry-After", "5");
        break;
    case QR_EPERM: api_reply_error(r, 403, "permission_denied", "%s", err); break;
    case QR_EAUTH:
    case QR_ENOTFOUND:
    case QR_EINVAL:
        if (strcmp(scheme, "oidc") == 0) /* RFC 6750: say which bearer token failed and why */
            api_bearer_challenge(r, "invalid_token", err);
        api_reply_error(r, 401, "unauthenticated", "%s", err);
        break;
    default: api_reply_status(r, st, err); break;
    }
    api_audit_refused(r->srv->audit, r, scheme, r->status, st == QR_EUNAVAILABLE ? "unavailable" : err, oidc);
}

/* Skips the scheme word and spaces: "Bearer   abc" -> "abc" when the scheme matches. */
static const char *after_scheme(const char *header, const char *scheme)
{
    size_t n = strlen(scheme);
    if (strncasecmp(header, scheme, n) != 0 || (header[n] != ' ' && header[n] != '\t'))
        return NULL;
    header += n;
    while (*header == ' ' || *header == '\t')
        header++;
    return header;
}

/* Checks "user:password" from a Basic header against LDAP. */
static qr_status basic_login(api_req *r, const char *b64, auth_principal **out, char *err)
{
    size_t len = 0;
    size_t b64_len = strcspn(b64, " \t");
    unsigned char *raw = b64_len <= 8192 ? api_base64_decode(b64, b64_len, &len) : NULL;
    if (!raw)
        return qr_fail(err, QR_EAUTH, "malformed Basic credentials");
    char *colon = memchr(raw, ':', len);
    qr_status st;
    if (!colon) {
        st = qr_fail(err, QR_EAUTH, "malformed Basic credentials (no ':')");
    } else {
        size_t ulen = (size_t)(colon - (char *)raw);
        st = auth_authenticate(r->srv->auth, (const char *)raw, ulen, colon + 1, len - ulen - 1, r->client,
                               out, err);
    }
    explicit_bzero(raw, len);
    free(raw);
    return st;
}

static bool authenticate(api_req *r);

bool api_authenticate(api_req *r)
{
    uint64_t t0 = qr_now_ns();
    bool ok = authenticate(r);
    r->auth_ns = qr_now_ns() - t0;
    return ok;
}

/* Authenticates r's caller by the route's rules (api_authenticate). */
static bool authenticate(api_req *r)
{
    char err[QR_ERR_LEN] = "";
    const api_route *route = r->route;
    const char *authz = api_header(r, "Authorization");
    const char *xkey = api_header(r, "X-API-Key");
    const char *obo = api_header(r, "X-Quarry-User");
    const char *cred;
    const char *scheme;
    auth_principal *p = NULL;
    auth_oidc_info oidc;
    memset(&oidc, 0, sizeof(oidc));
    qr_status st;

    if (xkey || (authz && (cred = after_scheme(authz, "Bearer")) && strncmp(cred, "qk_", 3) == 0)) {
        const char *key = xkey ? xkey : cred;
        scheme = "api_key";
        if (obo && (!*obo || strlen(obo) > 256)) {
            api_reply_error(r, 400, "invalid_argument", "X-Quarry-User must be a user id of 1 to 256 bytes");
            return false;
        }
        st = auth_key_principal(r->srv->auth, key, obo, route->scope, &p, err);
        r->by_key = true;
        /* "qk_<id>_<secret>": the id names the key in the audit log (verified by now on success) */
        if (!st && strlen(key) > 3 + AUTH_KEY_ID_LEN)
            snprintf(r->key_id, sizeof(r->key_id), "%.*s", AUTH_KEY_ID_LEN, key + 3);
    } else if (obo) {
        api_reply_error(
            r, 403, "permission_denied",
            "X-Quarry-User is accepted only with a service API key holding the on_behalf_of scope");
        api_audit_refused(r->srv->audit, r, authz ? "bearer_or_basic" : "none", 403,
                          "X-Quarry-User without a service API key", NULL);
        return false;
    } else if (authz && (cred = after_scheme(authz, "Bearer")) && auth_oidc_looks_like(cred)) {
        scheme = "oidc";
        st = auth_oidc_principal(r->srv->auth, cred, &oidc, &p, err);
    } else if (authz && (cred = after_scheme(authz, "Bearer"))) {
        scheme = "token";
        st = auth_token_principal(r->srv->auth, cred, &p, err);
    } else if (authz && (cred = after_scheme(authz, "Basic"))) {
        scheme = "basic";
        st = basic_login(r, cred, &p, err);
    } else {
        api_reply_error(
            r, 401, "unauthenticated",
            authz ? "unsupported Authorization scheme (use Basic, or Bearer with a token or API key)"
                  : "credentials required: HTTP Basic, a bearer token or an API key");
        if (authz)
            api_audit_refused(r->srv->audit, r, "unsupported", 401, "unsupported Authorization scheme", NULL);
        return false;
    }
    if (st) {
        auth_failed(r, st, scheme, &oidc, err);
        return false;
    }
    r->principal = p;
    r->auth_scheme = scheme;
    snprintf(r->user, sizeof(r->user), "%s", p->uid);
    if (route->access == API_ACCESS_ADMIN && !p->is_admin) {
        api_reply_error(r, 403, "permission_denied", "this route is for administrators (auth.admin_groups)");
        return false;
    }
    return true;
}
