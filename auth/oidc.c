/*
 * OpenID Connect bearer tokens. A token is read in this order, and the first defect refuses it:
 * size, shape (three base64url parts), header (an allowed alg, no crit), claims parsed but not yet
 * trusted only to pick the issuer (iss exactly one of oidc.issuer), the issuer's key (by kid; kty,
 * curve, size, use and alg must fit), the signature (libcjose), then the claims (exp, nbf, iat,
 * aud, scope, the user claim). Only RS256, PS256 and ES256 are accepted: "none", HS* (the classic
 * confusion, where an RSA public key is used as an HMAC secret) and every other alg are refused
 * before any key is looked at, and JWKS "oct" keys are never loaded. Keys come only from the
 * configured issuer's JWKS (a header's jku, x5u or jwk is never followed).
 *
 * Each issuer keeps its keys in memory: fetched on first use, again when older than
 * oidc.jwks_max_age_s, and when a token names a kid the set lacks, but never more often than once
 * per oidc.jwks_min_refresh_s (so forged kids cannot make quarry hammer the issuer). A fetch that
 * fails keeps the keys already known; a key the last good fetch dropped is gone. Fetches run one
 * at a time per issuer, outside the lock that verifications take.
 */
#define _GNU_SOURCE
#include <cjose/cjose.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth_int.h"

#define OIDC_MAX_ISSUERS 16
#define OIDC_DOC_MAX     (1u << 20)  /* bytes of a discovery document or JWKS */
#define OIDC_PART_MAX    8192        /* decoded bytes of a token's header */
#define OIDC_MAX_KEYS    64          /* keys kept from one JWKS */
#define OIDC_MIN_RSA     2048        /* bits */
#define OIDC_CACHE_MARK  "\x01oidc:" /* principal cache keys for claim values (no uid has a control byte) */

typedef struct {
    char *kid; /* "" when the JWKS gave none */
    char kty[8];
    char use[16]; /* "" when absent */
    char alg[16]; /* "" when absent */
    cjose_jwk_t *jwk;
} oidc_key;

typedef struct {
    char *issuer;
    char *jwks_url;             /* configured or discovered; NULL until discovered */
    pthread_mutex_t lock;       /* keys, nkeys, fetched_ns, attempt_ns, jwks_url */
    pthread_mutex_t fetch_lock; /* one fetch at a time */
    oidc_key *keys;
    size_t nkeys;
    uint64_t fetched_ns; /* last good fetch; 0: never */
    uint64_t attempt_ns; /* last attempt; 0: never */
    uint64_t fetches;    /* attempts, for tests and messages */
} oidc_issuer;

struct auth_oidc {
    oidc_issuer *issuers;
    size_t nissuers;
    char **audiences;
    size_t naudiences;
    char **scopes;
    size_t nscopes;
    char *user_claim, *user_filter, *ca_file;
    int64_t skew_s;
    uint64_t min_refresh_ns, max_age_ns;
    long timeout_ms;
    size_t max_token;
};

/* ---- settings ------------------------------------------------------------------------------ */

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* True for a URL quarry may fetch keys from: https, or http to a loopback host (tests, a local
 * provider), since keys fetched in clear from elsewhere could be anyone's. */
static bool url_ok(const char *url)
{
    if (strncmp(url, "https://", 8) == 0)
        return url[8] != '\0';
    const char *loopback[] = {"http://127.0.0.1:", "http://127.0.0.1/", "http://localhost:",
                              "http://localhost/", "http://[::1]:",     "http://[::1]/"};
    for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++)
        if (strncmp(url, loopback[i], strlen(loopback[i])) == 0)
            return true;
    return false;
}

static void key_release(oidc_key *k)
{
    free(k->kid);
    if (k->jwk)
        cjose_jwk_release(k->jwk);
    memset(k, 0, sizeof(*k));
}

static void keys_release(oidc_key *keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        key_release(&keys[i]);
    free(keys);
}

void auth_oidc_release(auth_ctx *ctx)
{
    struct auth_oidc *o = ctx->oidc;
    if (!o)
        return;
    for (size_t i = 0; i < o->nissuers; i++) {
        oidc_issuer *is = &o->issuers[i];
        free(is->issuer);
        free(is->jwks_url);
        keys_release(is->keys, is->nkeys);
        pthread_mutex_destroy(&is->lock);
        pthread_mutex_destroy(&is->fetch_lock);
    }
    free(o->issuers);
    free_list(o->audiences, o->naudiences);
    free_list(o->scopes, o->nscopes);
    free(o->user_claim);
    free(o->user_filter);
    free(o->ca_file);
    free(o);
    ctx->oidc = NULL;
}

qr_status auth_oidc_setup(auth_ctx *ctx, const qr_config *cfg, char *err)
{
    const qr_settings *c = qr_config_settings(cfg);
    char **iss = NULL, **urls = NULL;
    size_t niss = 0, nurls = 0;
    qr_status st = QR_OK;
    if (auth_split_list(c->oidc_issuer, ",", false, false, &iss, &niss) ||
        auth_split_list(c->oidc_jwks_url, ",", false, true, &urls, &nurls)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    if (niss == 0) {
        if (nurls || *c->oidc_audience)
            st = qr_fail(err, QR_EINVAL, "oidc.audience and oidc.jwks_url need oidc.issuer");
        goto out;
    }
    if (niss > OIDC_MAX_ISSUERS) {
        st = qr_fail(err, QR_EINVAL, "oidc.issuer: at most %d issuers", OIDC_MAX_ISSUERS);
        goto out;
    }
    if (nurls && nurls != niss) {
        st = qr_fail(err, QR_EINVAL,
                     "oidc.jwks_url: %zu URLs for %zu issuers (give one per issuer, in order, or none for "
                     "discovery)",
                     nurls, niss);
        goto out;
    }
    if (!*ctx->s.uris) {
        st = qr_fail(err, QR_EINVAL,
                     "oidc.issuer needs ldap.uri: the directory maps a token's user to groups");
        goto out;
    }
    for (size_t i = 0; i < niss; i++) {
        if (!url_ok(iss[i]) || (nurls && *urls[i] && !url_ok(urls[i]))) {
            st = qr_fail(err, QR_EINVAL,
                         "oidc: '%s' must be an https:// URL (http:// only to a loopback address)",
                         !url_ok(iss[i]) ? iss[i] : urls[i]);
            goto out;
        }
    }
    struct auth_oidc *o = calloc(1, sizeof(*o));
    if (!o || !(o->issuers = calloc(niss, sizeof(oidc_issuer)))) {
        free(o);
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    ctx->oidc = o;
    o->nissuers = niss;
    /* before any thread fetches keys (libcurl would otherwise do it on first use) */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    for (size_t i = 0; i < niss; i++) {
        oidc_issuer *is = &o->issuers[i];
        pthread_mutex_init(&is->lock, NULL);
        pthread_mutex_init(&is->fetch_lock, NULL);
        is->issuer = iss[i];
        iss[i] = NULL;
        if (nurls && *urls[i]) {
            is->jwks_url = urls[i];
            urls[i] = NULL;
        }
    }
    o->user_claim = strdup(c->oidc_user_claim);
    o->user_filter = strdup(c->oidc_user_filter);
    o->ca_file = strdup(c->oidc_ca_file);
    o->skew_s = c->oidc_clock_skew_s;
    o->min_refresh_ns = (uint64_t)c->oidc_jwks_min_refresh_s * 1000000000ull;
    o->max_age_ns = (uint64_t)c->oidc_jwks_max_age_s * 1000000000ull;
    o->timeout_ms = (long)c->oidc_timeout_ms;
    o->max_token = (size_t)c->oidc_max_token_bytes;
    if (!o->user_claim || !o->user_filter || !o->ca_file ||
        auth_split_list(c->oidc_audience, ",", false, false, &o->audiences, &o->naudiences) ||
        auth_split_list(c->oidc_required_scope, ", ", false, false, &o->scopes, &o->nscopes)) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    if (o->naudiences == 0) {
        st = qr_fail(err, QR_EINVAL,
                     "oidc.audience must name the audience tokens are issued for (a token for another API "
                     "must not open quarry)");
        goto out;
    }
    if (!*o->user_claim || strlen(o->user_claim) >= sizeof(((auth_oidc_info *)0)->claim)) {
        st = qr_fail(err, QR_EINVAL, "oidc.user_claim must name a claim (1 to 63 bytes)");
        goto out;
    }
    qr_buf probe;
    qr_buf_init(&probe, 1 << 16);
    st = auth_filter_expand(&probe, o->user_filter, "x", 1, NULL, NULL);
    qr_buf_release(&probe);
    if (st)
        st = qr_fail(err, QR_EINVAL, "oidc.user_filter '%s': only %%s and %%%% may appear", o->user_filter);
out:
    free_list(iss, niss);
    free_list(urls, nurls);
    return st;
}

bool auth_oidc_enabled(const auth_ctx *ctx)
{
    return ctx->oidc != NULL;
}

bool auth_oidc_looks_like(const char *cred)
{
    return strncmp(cred, "eyJ", 3) == 0 && strchr(cred, '.') != NULL;
}

/* ---- fetching keys ------------------------------------------------------------------------- */

typedef struct {
    qr_buf body;
    bool too_big;
} fetch_buf;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    fetch_buf *b = arg;
    if (qr_buf_append(&b->body, p, size * n)) {
        b->too_big = true;
        return 0;
    }
    return size * n;
}

/* GETs url and parses its JSON object body. QR_EUNAVAILABLE for any failure (err says which). */
static qr_status fetch_json(const struct auth_oidc *o, const char *url, json_t **out, char *err)
{
    *out = NULL;
    CURL *h = curl_easy_init();
    if (!h)
        return qr_fail(err, QR_EUNAVAILABLE, "cannot start an HTTP request");
    fetch_buf b = {.too_big = false};
    qr_buf_init(&b.body, OIDC_DOC_MAX);
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, o->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, o->timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "quarry-oidc");
    if (*o->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, o->ca_file);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    qr_status st = QR_OK;
    if (b.too_big)
        st = qr_fail(err, QR_EUNAVAILABLE, "GET %s: the answer is larger than %u bytes", url, OIDC_DOC_MAX);
    else if (rc != CURLE_OK)
        st = qr_fail(err, QR_EUNAVAILABLE, "GET %s: %s", url, *cerr ? cerr : curl_easy_strerror(rc));
    else if (status != 200)
        st = qr_fail(err, QR_EUNAVAILABLE, "GET %s: HTTP %ld", url, status);
    else {
        json_error_t jerr;
        *out = json_loadb(qr_buf_str(&b.body), qr_buf_len(&b.body), JSON_REJECT_DUPLICATES, &jerr);
        if (!*out || !json_is_object(*out)) {
            json_decref(*out);
            *out = NULL;
            st = qr_fail(err, QR_EUNAVAILABLE, "GET %s: not a JSON object", url);
        }
    }
    qr_buf_release(&b.body);
    return st;
}

static void copy_field(char *dst, size_t cap, json_t *obj, const char *name)
{
    const char *v = json_string_value(json_object_get(obj, name));
    snprintf(dst, cap, "%s", v ? v : "");
}

/* Parses a JWKS into keys quarry may verify with: RSA and EC public keys; "oct" (a shared
 * secret), private keys and keys cjose cannot read are left out (logged). QR_EINVAL when the
 * document has no "keys" array. */
static qr_status parse_jwks(json_t *doc, const char *issuer, oidc_key **out, size_t *nout, char *err)
{
    *out = NULL;
    *nout = 0;
    json_t *arr = json_object_get(doc, "keys");
    if (!json_is_array(arr))
        return qr_fail(err, QR_EINVAL, "the JWKS of '%s' has no \"keys\" array", issuer);
    oidc_key *keys = calloc(OIDC_MAX_KEYS, sizeof(*keys));
    if (!keys)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    size_t n = 0, i;
    json_t *k;
    json_array_foreach(arr, i, k)
    {
        if (n == OIDC_MAX_KEYS)
            break;
        const char *kty = json_string_value(json_object_get(k, "kty"));
        const char *kid = json_string_value(json_object_get(k, "kid"));
        if (!kty || (strcmp(kty, "RSA") != 0 && strcmp(kty, "EC") != 0))
            continue; /* "oct" above all: a JWKS never holds a secret quarry would verify with */
        if (json_object_get(k, "d")) {
            qr_log(QR_LOG_WARN, "auth", "the JWKS of '%s' publishes a private key (kid '%s'): left out",
                   issuer, kid ? kid : "");
            continue;
        }
        cjose_err cerr;
        char *text = json_dumps(k, JSON_COMPACT);
        cjose_jwk_t *jwk = text ? cjose_jwk_import(text, strlen(text), &cerr) : NULL;
        free(text);
        if (!jwk) {
            qr_log(QR_LOG_WARN, "auth", "the JWKS of '%s': key '%s' cannot be read: left out", issuer,
                   kid ? kid : "");
            continue;
        }
        oidc_key *key = &keys[n];
        key->jwk = jwk;
        key->kid = strdup(kid ? kid : "");
        snprintf(key->kty, sizeof(key->kty), "%s", kty);
        copy_field(key->use, sizeof(key->use), k, "use");
        copy_field(key->alg, sizeof(key->alg), k, "alg");
        if (!key->kid) {
            keys_release(keys, n + 1);
            return qr_fail(err, QR_ENOMEM, "out of memory");
        }
        n++;
    }
    *out = keys;
    *nout = n;
    return QR_OK;
}

/* Swaps in a new key set (takes it). Caller holds is->lock. */
static void install_keys(oidc_issuer *is, oidc_key *keys, size_t n, uint64_t now)
{
    keys_release(is->keys, is->nkeys);
    is->keys = keys;
    is->nkeys = n;
    is->fetched_ns = now;
}

qr_status auth_oidc_load_jwks(auth_ctx *ctx, size_t i, const char *jwks, size_t len, char *err)
{
    if (!ctx->oidc || i >= ctx->oidc->nissuers)
        return qr_fail(err, QR_EINVAL, "no such issuer");
    json_t *doc = json_loadb(jwks, len, 0, NULL);
    if (!doc)
        return qr_fail(err, QR_EINVAL, "the JWKS is not JSON");
    oidc_issuer *is = &ctx->oidc->issuers[i];
    oidc_key *keys;
    size_t n;
    qr_status st = parse_jwks(doc, is->issuer, &keys, &n, err);
    json_decref(doc);
    if (!st) {
        pthread_mutex_lock(&is->lock);
        uint64_t now = qr_now_ns();
        install_keys(is, keys, n, now);
        is->attempt_ns = now;
        pthread_mutex_unlock(&is->lock);
    }
    return st;
}

/* Fetches the issuer's keys (discovering the JWKS URL first when needed) and installs them.
 * Caller holds is->fetch_lock, not is->lock. */
static qr_status refresh_keys(const struct auth_oidc *o, oidc_issuer *is, char *err)
{
    pthread_mutex_lock(&is->lock);
    is->attempt_ns = qr_now_ns();
    is->fetches++;
    char *url = is->jwks_url ? strdup(is->jwks_url) : NULL;
    pthread_mutex_unlock(&is->lock);
    json_t *doc = NULL;
    qr_status st = QR_OK;
    if (!url) {
        char *disc = NULL;
        size_t ilen = strlen(is->issuer);
        if (asprintf(&disc, "%.*s/.well-known/openid-configuration",
                     (int)ilen - (is->issuer[ilen - 1] == '/'), is->issuer) < 0)
            return qr_fail(err, QR_ENOMEM, "out of memory");
        st = fetch_json(o, disc, &doc, err);
        free(disc);
        if (st)
            return st;
        /* OpenID Connect Discovery: the document must name the very issuer it was fetched for */
        const char *named = json_string_value(json_object_get(doc, "issuer"));
        const char *jwks_uri = json_string_value(json_object_get(doc, "jwks_uri"));
        if (!named || strcmp(named, is->issuer) != 0)
            st = qr_fail(err, QR_EUNAVAILABLE, "the discovery document of '%s' names the issuer '%s'",
                         is->issuer, named ? named : "(none)");
        else if (!jwks_uri || !url_ok(jwks_uri))
            st = qr_fail(err, QR_EUNAVAILABLE, "the discovery document of '%s' has no usable jwks_uri",
                         is->issuer);
        else if (!(url = strdup(jwks_uri)))
            st = qr_fail(err, QR_ENOMEM, "out of memory");
        json_decref(doc);
        doc = NULL;
        if (st)
            return st;
    }
    st = fetch_json(o, url, &doc, err);
    oidc_key *keys = NULL;
    size_t n = 0;
    if (!st && (st = parse_jwks(doc, is->issuer, &keys, &n, err)))
        st = qr_fail(err, QR_EUNAVAILABLE, "GET %s: not a JWKS", url);
    json_decref(doc);
    if (!st) {
        pthread_mutex_lock(&is->lock);
        install_keys(is, keys, n, qr_now_ns());
        if (!is->jwks_url) {
            is->jwks_url = url; /* discovered once: rotation changes keys, not where they live */
            url = NULL;
        }
        pthread_mutex_unlock(&is->lock);
        qr_log(QR_LOG_INFO, "auth", "oidc: %zu signing keys of '%s' loaded", n, is->issuer);
    }
    free(url);
    return st;
}

typedef enum { FIND_FOUND, FIND_UNKNOWN, FIND_AMBIGUOUS } find_result;

/* The key for kid (any kid when the token has none and the set holds exactly one key of kty).
 * Caller holds is->lock. */
static find_result find_key(oidc_issuer *is, const char *kid, const char *kty, oidc_key **out)
{
    *out = NULL;
    size_t matches = 0;
    for (size_t i = 0; i < is->nkeys; i++) {
        oidc_key *k = &is->keys[i];
        if (*kid ? strcmp(k->kid, kid) == 0 : strcmp(k->kty, kty) == 0) {
            *out = k;
            matches++;
        }
    }
    return matches == 1 ? FIND_FOUND : matches == 0 ? FIND_UNKNOWN : FIND_AMBIGUOUS;
}

/* A retained copy of the key to verify with (release with cjose_jwk_release under is->lock),
 * fetching the issuer's keys when none are known, they are old or kid is unknown, as the
 * refresh limits allow. */
static qr_status issuer_key(const struct auth_oidc *o, oidc_issuer *is, const char *kid, const char *kty,
                            oidc_key *copy, char *err)
{
    memset(copy, 0, sizeof(*copy));
    for (int round = 0;; round++) {
        pthread_mutex_lock(&is->lock);
        uint64_t now = qr_now_ns();
        oidc_key *k = NULL;
        find_result fr = find_key(is, kid, kty, &k);
        bool old = is->fetched_ns == 0 || now - is->fetched_ns >= o->max_age_ns;
        bool may_fetch = is->attempt_ns == 0 || now - is->attempt_ns >= o->min_refresh_ns;
        bool have_keys = is->fetched_ns != 0;
        if (fr == FIND_FOUND && (!old || !may_fetch || round > 0)) {
            *copy = *k;
            copy->kid = NULL;
            cjose_err cerr;
            cjose_jwk_retain(copy->jwk, &cerr);
            pthread_mutex_unlock(&is->lock);
            return QR_OK;
        }
        uint64_t attempt_seen = is->attempt_ns;
        pthread_mutex_unlock(&is->lock);
        if (round > 0 || !may_fetch) {
            if (fr == FIND_AMBIGUOUS)
                return qr_fail(err, QR_EAUTH, "the token names no kid and the issuer has several keys");
            if (!have_keys)
                return qr_fail(err, QR_EUNAVAILABLE, "the keys of '%s' are not available", is->issuer);
            return qr_fail(err, QR_EAUTH,
                           "the token's signing key (kid '%s') is not one of the issuer's keys", kid);
        }
        pthread_mutex_lock(&is->fetch_lock);
        /* another thread may have fetched while this one waited: use its result */
        pthread_mutex_lock(&is->lock);
        bool fetched_meanwhile = is->attempt_ns != attempt_seen;
        pthread_mutex_unlock(&is->lock);
        qr_status st = QR_OK;
        char why[QR_ERR_LEN] = "";
        if (!fetched_meanwhile)
            st = refresh_keys(o, is, why);
        pthread_mutex_unlock(&is->fetch_lock);
        if (st) {
            qr_log(QR_LOG_WARN, "auth", "oidc: cannot fetch the keys of '%s'%s: %s", is->issuer,
                   have_keys ? " (the known keys serve)" : "", why);
            if (!have_keys)
                return qr_fail(err, QR_EUNAVAILABLE, "the identity provider's keys are not available");
        }
    }
}

static void key_copy_release(oidc_issuer *is, oidc_key *copy)
{
    if (!copy->jwk)
        return;
    pthread_mutex_lock(&is->lock);
    cjose_jwk_release(copy->jwk);
    pthread_mutex_unlock(&is->lock);
    copy->jwk = NULL;
}

/* ---- checking a token ---------------------------------------------------------------------- */

/* True when p[0..n) is base64url without padding that decodes whole: only A-Z a-z 0-9 - _, and a
 * length that does not leave a single sextet over. An empty part passes (alg "none" has an empty
 * signature; it is refused by its alg). */
static bool b64url_ok(const char *p, size_t n)
{
    if (n % 4 == 1)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_'))
            return false;
    }
    return true;
}

/* Decodes one base64url part into JSON (an object). */
static json_t *decode_part(const char *p, size_t n, size_t cap)
{
    if (n == 0 || n > cap / 3 * 4 + 4)
        return NULL;
    unsigned char *raw = malloc(n);
    size_t len = 0;
    json_t *v = NULL;
    if (raw && auth_b64url_decode(p, n, raw, n, &len) == QR_OK && qr_utf8_valid((const char *)raw, len))
        v = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

/* The key type an allowed alg needs; NULL for any other alg. */
static const char *alg_kty(const char *alg)
{
    if (strcmp(alg, "RS256") == 0 || strcmp(alg, "PS256") == 0)
        return "RSA";
    if (strcmp(alg, "ES256") == 0)
        return "EC";
    return NULL;
}

/* Checks that key may sign with alg: use "sig" or absent, alg equal or absent, RSA of 2048 bits
 * or more, EC on P-256. */
static qr_status key_fits(const oidc_key *k, const char *alg, char *err)
{
    cjose_err cerr;
    if (*k->use && strcmp(k->use, "sig") != 0)
        return qr_fail(err, QR_EAUTH, "the token's key is published for use '%s', not for signatures",
                       k->use);
    if (*k->alg && strcmp(k->alg, alg) != 0)
        return qr_fail(err, QR_EAUTH, "the token's key is published for %s, the token says %s", k->alg, alg);
    if (strcmp(k->kty, alg_kty(alg)) != 0)
        return qr_fail(err, QR_EAUTH, "the token's key is an %s key, %s needs %s", k->kty, alg, alg_kty(alg));
    if (strcmp(k->kty, "RSA") == 0 && cjose_jwk_get_keysize(k->jwk, &cerr) < OIDC_MIN_RSA)
        return qr_fail(err, QR_EAUTH, "the token's RSA key is shorter than %d bits", OIDC_MIN_RSA);
    if (strcmp(k->kty, "EC") == 0 && cjose_jwk_EC_get_curve(k->jwk, &cerr) != CJOSE_JWK_EC_P_256)
        return qr_fail(err, QR_EAUTH, "the token's EC key is not on P-256");
    return QR_OK;
}

static bool number_claim(json_t *claims, const char *name, int64_t *out)
{
    json_t *v = json_object_get(claims, name);
    if (!json_is_number(v))
        return false;
    double d = json_number_value(v);
    if (!(d > -1e15 && d < 1e15))
        return false;
    *out = (int64_t)d;
    return true;
}

/* True when the token grants scope, in "scp" (Entra: space-separated; or a list) or "scope". */
static bool has_scope(json_t *claims, const char *scope)
{
    const char *names[] = {"scp", "scope"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(claims, names[i]);
        if (json_is_array(v)) {
            size_t j;
            json_t *item;
            json_array_foreach(v, j, item)
            {
                if (json_is_string(item) && strcmp(json_string_value(item), scope) == 0)
                    return true;
            }
        } else if (json_is_string(v)) {
            size_t n = strlen(scope);
            for (const char *p = json_string_value(v); *p;) {
                size_t len = strcspn(p, " ");
                if (len == n && memcmp(p, scope, n) == 0)
                    return true;
                p += len;
                p += strspn(p, " ");
            }
        }
    }
    return false;
}

static bool audience_ok(const struct auth_oidc *o, json_t *aud)
{
    for (size_t i = 0; i < o->naudiences; i++) {
        if (json_is_string(aud) && strcmp(json_string_value(aud), o->audiences[i]) == 0)
            return true;
        size_t j;
        json_t *item;
        json_array_foreach(aud, j, item)
        {
            if (json_is_string(item) && strcmp(json_string_value(item), o->audiences[i]) == 0)
                return true;
        }
    }
    return false;
}

/* The time claims, the audience, the scopes and the user claim of a verified token. */
static qr_status check_claims(const struct auth_oidc *o, json_t *claims, auth_oidc_info *info, char *err)
{
    int64_t now = qr_wall_ms() / 1000, exp, t;
    if (!number_claim(claims, "exp", &exp))
        return qr_fail(err, QR_EAUTH, "the token has no expiry (exp)");
    info->expires_at = exp;
    if (exp + o->skew_s <= now)
        return qr_fail(err, QR_EAUTH, "the token expired %lld s ago", (long long)(now - exp));
    if (json_object_get(claims, "nbf") && (!number_claim(claims, "nbf", &t) || t - o->skew_s > now))
        return qr_fail(err, QR_EAUTH, "the token is not valid yet (nbf)");
    if (json_object_get(claims, "iat") && (!number_claim(claims, "iat", &t) || t - o->skew_s > now))
        return qr_fail(err, QR_EAUTH, "the token was issued in the future (iat)");
    if (!audience_ok(o, json_object_get(claims, "aud")))
        return qr_fail(err, QR_EAUTH, "the token is for another audience (aud is not one of oidc.audience)");
    for (size_t i = 0; i < o->nscopes; i++)
        if (!has_scope(claims, o->scopes[i]))
            return qr_fail(err, QR_EAUTH, "the token does not grant the scope '%s'", o->scopes[i]);
    json_t *who = json_object_get(claims, o->user_claim);
    const char *name = json_string_value(who);
    size_t len = json_string_length(who);
    if (!name || !auth_name_ok(name, len))
        return qr_fail(err, QR_EAUTH, "the token has no usable '%s' claim naming its user", o->user_claim);
    snprintf(info->subject, sizeof(info->subject), "%s", name);
    return QR_OK;
}

qr_status auth_oidc_verify(auth_ctx *ctx, const char *token, auth_oidc_info *info, char *err)
{
    auth_oidc_info scratch;
    if (!info)
        info = &scratch;
    memset(info, 0, sizeof(*info));
    struct auth_oidc *o = ctx->oidc;
    if (!o)
        return qr_fail(err, QR_EINVAL, "OpenID Connect sign-in is not configured (oidc.issuer)");
    snprintf(info->claim, sizeof(info->claim), "%s", o->user_claim);
    size_t len = strnlen(token, o->max_token + 1);
    if (len > o->max_token)
        return qr_fail(err, QR_EAUTH, "the token is longer than oidc.max_token_bytes (%zu)", o->max_token);
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return qr_fail(err, QR_EAUTH,
                       "not a signed token (a JWS has three parts; encrypted tokens are refused)");
    /* libcjose 0.6.2 aborts on some malformed base64url (a length that leaves one sextet, '='
     * inside a part): no part reaches it unless it is well-formed base64url without padding */
    if (!b64url_ok(token, (size_t)(dot1 - token)) || !b64url_ok(dot1 + 1, (size_t)(dot2 - dot1 - 1)) ||
        !b64url_ok(dot2 + 1, len - (size_t)(dot2 + 1 - token)))
        return qr_fail(err, QR_EAUTH, "the token is not three parts of base64url");
    json_t *header = decode_part(token, (size_t)(dot1 - token), OIDC_PART_MAX);
    json_t *claims = NULL;
    qr_status st = QR_OK;
    oidc_issuer *is = NULL;
    oidc_key key = {0};
    if (!header) {
        st = qr_fail(err, QR_EAUTH, "the token's header is not base64url JSON");
        goto out;
    }
    const char *alg = json_string_value(json_object_get(header, "alg"));
    const char *kid = json_string_value(json_object_get(header, "kid"));
    snprintf(info->alg, sizeof(info->alg), "%s", alg ? alg : "");
    snprintf(info->kid, sizeof(info->kid), "%s", kid ? kid : "");
    if (!alg || !alg_kty(alg)) {
        bool shown =
            alg && strlen(alg) < 16 &&
            strspn(alg, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-_") == strlen(alg);
        st = qr_fail(err, QR_EAUTH, "the token's algorithm %s%s%s is not accepted (RS256, PS256, ES256 only)",
                     shown ? "'" : "", shown ? alg : "(unreadable)", shown ? "'" : "");
        goto out;
    }
    if (json_object_get(header, "crit")) {
        st = qr_fail(err, QR_EAUTH, "the token has critical header parameters quarry does not know");
        goto out;
    }
    if ((kid && strlen(kid) >= sizeof(info->kid)) || (json_object_get(header, "kid") && !kid)) {
        st = qr_fail(err, QR_EAUTH, "the token's kid is not a short string");
        goto out;
    }
    /* the claims pick the issuer (and so the keys) before the signature is checked; nothing else
     * in them is believed until it is */
    claims = decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1), o->max_token);
    if (!claims) {
        st = qr_fail(err, QR_EAUTH, "the token's claims are not base64url JSON");
        goto out;
    }
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    for (size_t i = 0; iss && i < o->nissuers && !is; i++)
        if (strcmp(o->issuers[i].issuer, iss) == 0)
            is = &o->issuers[i];
    if (!is) {
        st = qr_fail(err, QR_EAUTH, "the token's issuer is not one of oidc.issuer");
        goto out;
    }
    snprintf(info->issuer, sizeof(info->issuer), "%s", iss);
    if ((st = issuer_key(o, is, kid ? kid : "", alg_kty(alg), &key, err)) || (st = key_fits(&key, alg, err)))
        goto out;
    cjose_err cerr;
    cjose_jws_t *jws = cjose_jws_import(token, len, &cerr);
    if (!jws) {
        st = qr_fail(err, QR_EAUTH, "the token cannot be read as a JWS");
        goto out;
    }
    /* libcjose reads the header again: it must see the alg that was checked above */
    const char *jalg = cjose_header_get(cjose_jws_get_protected(jws), CJOSE_HDR_ALG, &cerr);
    bool good = jalg && strcmp(jalg, alg) == 0 && cjose_jws_verify(jws, key.jwk, &cerr);
    cjose_jws_release(jws);
    if (!good) {
        st = qr_fail(err, QR_EAUTH, "the token's signature does not verify");
        goto out;
    }
    st = check_claims(o, claims, info, err);
out:
    if (is)
        key_copy_release(is, &key);
    json_decref(header);
    json_decref(claims);
    return st;
}

qr_status auth_oidc_principal(auth_ctx *ctx, const char *token, auth_oidc_info *info, auth_principal **out,
                              char *err)
{
    *out = NULL;
    auth_oidc_info scratch;
    if (!info)
        info = &scratch;
    qr_status st = auth_oidc_verify(ctx, token, info, err);
    if (st)
        return st;
    char key[sizeof(OIDC_CACHE_MARK) + sizeof(info->subject)];
    snprintf(key, sizeof(key), "%s%s", OIDC_CACHE_MARK, info->subject);
    if ((*out = auth_cache_get(ctx, key, false))) {
        AUTH_COUNT(ctx, cache_hits);
        return QR_OK;
    }
    AUTH_COUNT(ctx, cache_misses);
    uint64_t deadline = auth_deadline(ctx);
    auth_conn *c = NULL;
    auth_user u;
    memset(&u, 0, sizeof(u));
    st = auth_pool_acquire(ctx, deadline, &c, err);
    if (!st)
        st = auth_dir_find_user_by(ctx, c, deadline, ctx->oidc->user_filter, info->subject,
                                   strlen(info->subject), &u, err);
    if (!st)
        st = auth_dir_user_principal(ctx, c, deadline, &u, NULL, 0, out, err);
    auth_pool_release(ctx, c);
    auth_user_release(&u);
    if (!st) {
        auth_cache_put(ctx, key, *out);
        return QR_OK;
    }
    if (st == QR_EUNAVAILABLE && ctx->s.stale_if_error && (*out = auth_cache_get(ctx, key, true))) {
        AUTH_COUNT(ctx, stale_served);
        qr_log(QR_LOG_WARN, "auth", "LDAP unavailable: serving the expired cached principal of '%s'",
               (*out)->uid);
        return QR_OK;
    }
    if (st == QR_ENOTFOUND)
        return qr_fail(err, QR_ENOTFOUND, "the token's user ('%s' %s) is not in the directory", info->claim,
                       info->subject);
    return st;
}
