/*
 * Bearer tokens: "qt1.<uid, base64url>.<expiry, Unix seconds>.<key id>.<HMAC-SHA256, base64url>",
 * the MAC taken over everything before its own dot with a server secret. The key id (the first
 * hex digits of a hash of the secret) tells a token signed with a replaced secret from a forged
 * one in the logs; both fail. A token carries the user only: groups are resolved again each time
 * it is used, so a change in LDAP reaches token holders within the cache TTL.
 *
 * The secret is auth.token_secret when set, else 32 random bytes kept in
 * <data.dir>/auth/token.key (hex, mode 0600), created on first use by whichever process gets
 * there first (an exclusive link, so two processes never end up with different secrets). With
 * store.backend = postgres the generated secret is the shared state row "auth/token.key"
 * (index/store.h) instead, created the same way by whichever node gets there first (a create
 * that only succeeds when the row is absent), so a token issued by one node works on every node.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_int.h"
#include "index/store.h"

#define TOKEN_PREFIX "qt1."
#define TOKEN_SHARED "auth/token.key"

static void set_kid(auth_ctx *ctx)
{
    unsigned char h[32];
    qr_buf b;
    qr_buf_init(&b, sizeof(ctx->secret) + 32);
    qr_buf_puts(&b, "quarry token key id:");
    qr_buf_append(&b, ctx->secret, ctx->secret_len);
    auth_sha256(qr_buf_str(&b), qr_buf_len(&b), h);
    qr_buf_release(&b);
    char hex[65];
    auth_hex(h, sizeof(h), hex);
    memcpy(ctx->kid, hex, AUTH_KID_LEN);
    ctx->kid[AUTH_KID_LEN] = '\0';
}

/* Reads <data.dir>/auth/token.key, creating it when absent. */
static qr_status load_secret_file(auth_ctx *ctx, char *err)
{
    char *path = NULL, *text = NULL;
    size_t len = 0;
    qr_status st = auth_state_path(ctx, "token.key", true, &path, err);
    if (st)
        return st;
    for (int attempt = 0; attempt < 2; attempt++) {
        st = qr_read_file(path, 1024, &text, &len, err);
        if (st != QR_ENOTFOUND)
            break;
        unsigned char raw[AUTH_SECRET_LEN];
        char hex[2 * AUTH_SECRET_LEN + 2];
        st = auth_random(raw, sizeof(raw), err);
        if (st)
            break;
        auth_hex(raw, sizeof(raw), hex);
        strcat(hex, "\n");
        st = auth_write_file(path, hex, strlen(hex), false, err);
        memset(raw, 0, sizeof(raw));
        memset(hex, 0, sizeof(hex));
        if (!st)
            qr_log(QR_LOG_INFO, "auth", "generated the signing key file %s", path);
        else if (st != QR_EEXIST) /* EEXIST: another process was first; read its secret */
            break;
    }
    if (st)
        goto out;
    struct stat sb;
    if (stat(path, &sb) == 0 && (sb.st_mode & 077)) {
        st = qr_fail(err, QR_EPERM, "'%s' is readable by others (mode %03o): run chmod 600 on it", path,
                     (unsigned)(sb.st_mode & 0777));
        goto out;
    }
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    if (len != 2 * AUTH_SECRET_LEN || !auth_unhex(text, len, ctx->secret)) {
        st = qr_fail(err, QR_EINVAL, "'%s' does not hold %d hex digits", path, 2 * AUTH_SECRET_LEN);
        goto out;
    }
    ctx->secret_len = AUTH_SECRET_LEN;
out:
    if (text)
        memset(text, 0, len);
    free(text);
    free(path);
    return st;
}

/* Reads the shared secret, creating it when absent. */
static qr_status load_secret_shared(auth_ctx *ctx, char *err)
{
    void *data = NULL;
    size_t len = 0;
    int64_t version = 0;
    unsigned char raw[AUTH_SECRET_LEN];
    qr_status st = store_shared_read(TOKEN_SHARED, &data, &len, &version, err);
    if (st == QR_ENOTFOUND && !(st = auth_random(raw, sizeof(raw), err))) {
        st = store_shared_write(TOKEN_SHARED, raw, sizeof(raw), 0, NULL, err);
        OPENSSL_cleanse(raw, sizeof(raw));
        if (!st)
            qr_log(QR_LOG_INFO, "auth", "generated the token signing secret, shared through PostgreSQL");
        /* written, or another node was first (QR_EEXIST): either way the row holds the secret now */
        if (!st || st == QR_EEXIST)
            st = store_shared_read(TOKEN_SHARED, &data, &len, &version, err);
    }
    if (!st && len != AUTH_SECRET_LEN)
        st = qr_fail(err, QR_EINVAL,
                     "the shared token secret (PostgreSQL quarry.shared '" TOKEN_SHARED
                     "') holds %zu bytes, not %d",
                     len, AUTH_SECRET_LEN);
    if (!st) {
        memcpy(ctx->secret, data, len);
        ctx->secret_len = len;
    }
    if (data)
        OPENSSL_cleanse(data, len);
    free(data);
    return st;
}

static qr_status load_secret(auth_ctx *ctx, char *err)
{
    qr_status st = QR_OK;
    pthread_mutex_lock(&ctx->secret_lock);
    if (!ctx->secret_loaded) {
        size_t n = strlen(ctx->s.token_secret);
        if (n > 0) {
            /* the configuration insists on at least 32 characters */
            if (n > sizeof(ctx->secret))
                n = sizeof(ctx->secret);
            memcpy(ctx->secret, ctx->s.token_secret, n);
            ctx->secret_len = n;
        } else if (store_shared_on()) {
            st = load_secret_shared(ctx, err);
        } else {
            st = load_secret_file(ctx, err);
        }
        if (!st) {
            set_kid(ctx);
            ctx->secret_loaded = true;
        }
    }
    pthread_mutex_unlock(&ctx->secret_lock);
    return st;
}

static void mac(const auth_ctx *ctx, const char *data, size_t len, unsigned char out[32])
{
    unsigned int n = 32;
    HMAC(EVP_sha256(), ctx->secret, (int)ctx->secret_len, (const unsigned char *)data, len, out, &n);
}

qr_status auth_keyed_hash(auth_ctx *ctx, const char *purpose, const char *text, size_t len, char out[65],
                          char *err)
{
    if (!ctx || !purpose || (len && !text) || !out)
        return qr_fail(err, QR_EINVAL, "auth_keyed_hash: NULL argument");
    qr_status st = load_secret(ctx, err);
    if (st)
        return st;
    /* a key of its own per purpose, so that no hash here can stand in for a token's MAC */
    unsigned char key[32], digest[32];
    unsigned int n = 32;
    HMAC(EVP_sha256(), ctx->secret, (int)ctx->secret_len, (const unsigned char *)purpose, strlen(purpose),
         key, &n);
    n = 32;
    HMAC(EVP_sha256(), key, 32, (const unsigned char *)(text ? text : ""), len, digest, &n);
    OPENSSL_cleanse(key, sizeof(key));
    auth_hex(digest, sizeof(digest), out);
    return QR_OK;
}

qr_status auth_token_make(auth_ctx *ctx, const char *uid, int64_t expires_at, char **token, char *err)
{
    *token = NULL;
    if (!uid || !auth_name_ok(uid, strlen(uid)))
        return qr_fail(err, QR_EINVAL, "malformed user name");
    qr_status st = load_secret(ctx, err);
    if (st)
        return st;
    char lower[AUTH_NAME_MAX + 1];
    snprintf(lower, sizeof(lower), "%s", uid);
    auth_ascii_lower(lower);
    qr_buf b;
    qr_buf_init(&b, AUTH_TOKEN_MAX);
    unsigned char m[32];
    st = qr_buf_puts(&b, TOKEN_PREFIX);
    if (!st)
        st = auth_b64url_encode(&b, (const unsigned char *)lower, strlen(lower));
    if (!st)
        st = qr_buf_printf(&b, ".%lld.%s", (long long)expires_at, ctx->kid);
    if (!st) {
        mac(ctx, qr_buf_str(&b), qr_buf_len(&b), m);
        st = qr_buf_putc(&b, '.');
    }
    if (!st)
        st = auth_b64url_encode(&b, m, sizeof(m));
    if (st) {
        qr_buf_release(&b);
        return qr_fail(err, st, "cannot build the token");
    }
    *token = qr_buf_detach(&b);
    return *token ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory");
}

qr_status auth_token_issue(auth_ctx *ctx, const char *uid, int64_t ttl_s, char **token, int64_t *expires_at,
                           char *err)
{
    if (ttl_s <= 0)
        ttl_s = ctx->s.token_ttl_s;
    int64_t exp = qr_wall_ms() / 1000 + ttl_s;
    qr_status st = auth_token_make(ctx, uid, exp, token, err);
    if (!st && expires_at)
        *expires_at = exp;
    return st;
}

static qr_status bad_token(const char *why, char *err)
{
    qr_log(QR_LOG_DEBUG, "auth", "token refused: %s", why);
    return qr_fail(err, QR_EAUTH, "invalid or expired token");
}

qr_status auth_token_verify(auth_ctx *ctx, const char *token, char **uid, int64_t *expires_at, char *err)
{
    *uid = NULL;
    size_t len = token ? strnlen(token, AUTH_TOKEN_MAX + 1) : 0;
    if (len == 0 || len > AUTH_TOKEN_MAX || strncmp(token, TOKEN_PREFIX, strlen(TOKEN_PREFIX)) != 0)
        return bad_token("malformed", err);
    qr_status st = load_secret(ctx, err);
    if (st)
        return st;
    /* fields: prefix . uid . expiry . kid . mac */
    const char *dots[4];
    int ndots = 0;
    for (const char *p = token; *p; p++) {
        if (*p == '.') {
            if (ndots == 4)
                return bad_token("malformed", err);
            dots[ndots++] = p;
        }
    }
    if (ndots != 4)
        return bad_token("malformed", err);
    unsigned char want[32], got[32];
    size_t got_len = 0;
    mac(ctx, token, (size_t)(dots[3] - token), want);
    const char *m = dots[3] + 1;
    if (auth_b64url_decode(m, strlen(m), got, sizeof(got), &got_len) || got_len != sizeof(got) ||
        CRYPTO_memcmp(want, got, sizeof(got)) != 0)
        return bad_token("bad signature", err);
    /* signed by us from here on; the fields are still checked, never trusted to be sane */
    const char *kid = dots[2] + 1;
    if ((size_t)(dots[3] - kid) != AUTH_KID_LEN || memcmp(kid, ctx->kid, AUTH_KID_LEN) != 0)
        return bad_token("signed with another key", err);
    const char *e = dots[1] + 1;
    int64_t exp = 0;
    if (e == dots[2] || dots[2] - e > 18)
        return bad_token("malformed expiry", err);
    for (const char *p = e; p < dots[2]; p++) {
        if (*p < '0' || *p > '9')
            return bad_token("malformed expiry", err);
        exp = exp * 10 + (*p - '0');
    }
    if (qr_wall_ms() / 1000 >= exp)
        return bad_token("expired", err);
    unsigned char name[AUTH_NAME_MAX + 1];
    size_t name_len = 0;
    const char *u = dots[0] + 1;
    if (auth_b64url_decode(u, (size_t)(dots[1] - u), name, AUTH_NAME_MAX, &name_len) ||
        !auth_name_ok((const char *)name, name_len))
        return bad_token("malformed user", err);
    *uid = strndup((const char *)name, name_len);
    if (!*uid)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    if (expires_at)
        *expires_at = exp;
    return QR_OK;
}

qr_status auth_token_principal(auth_ctx *ctx, const char *token, auth_principal **out, char *err)
{
    char *uid = NULL;
    *out = NULL;
    qr_status st = auth_token_verify(ctx, token, &uid, NULL, err);
    if (!st) {
        st = auth_resolve(ctx, uid, out, err);
        /* a token for a user who has since left the directory is no longer valid */
        if (st == QR_ENOTFOUND)
            st = qr_fail(err, QR_EAUTH, "the token's user no longer exists");
    }
    free(uid);
    return st;
}
