/*
 * Service API keys: "qk_<id>_<secret>", where id is 8 random bytes in hex (it names the key in
 * lists and logs) and secret 32 random bytes in base64url. <data.dir>/auth/keys.json keeps, per
 * key, its id, name, scopes, creation and revocation times and the SHA-256 of the whole key;
 * never the key. A plain hash suffices because the key is 256 random bits: nobody can guess one
 * from its hash, so the slow salted hashes that protect low-entropy passwords would only add
 * latency to every request. Presented keys are compared by hash in constant time.
 *
 * Writers (quarry keys create|revoke) take an exclusive lock on keys.lock, re-read the file,
 * and replace it atomically; readers (a running server) notice the new file by its signature
 * (inode, size, mtime) on the next verification, so a revocation takes effect at once.
 *
 * With store.backend = postgres every node shares one table: the same JSON text lives in the
 * shared state row "auth/keys.json" (index/store.h, store_shared_read) instead of the file. A
 * writer reads it with its version, changes it and writes it back only if the version has not
 * moved (compare and swap), else starts again from a fresh read, so a key another node created
 * meanwhile is never lost. Each verification asks for the row's version (one round trip) and
 * re-reads the table when it moved, so a revocation on one node fails the key on every node at
 * once; when PostgreSQL cannot be asked, verification fails (QR_EUNAVAILABLE) rather than trust
 * a table that may hold a revoked key.
 */
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "auth/auth_int.h"
#include "index/store.h"

#define KEYS_FILE_MAX (16u << 20)
#define KEYS_SHARED   "auth/keys.json"
/* Compare-and-swap rounds a change of the shared table gets. Each round lost is another writer's
 * change made, so every writer makes progress; the bound only stops a writer starved that long. */
#define KEYS_CAS_TRIES 1000
#define KEY_PREFIX     "qk_"
#define KEY_SECRET_B64 43 /* base64url characters of AUTH_SECRET_LEN bytes */
#define KEY_LEN        (3 + AUTH_KEY_ID_LEN + 1 + KEY_SECRET_B64)

static const char *const scope_names[] = {"search", "chat", "admin", "on_behalf_of"};
#define NSCOPES (sizeof(scope_names) / sizeof(scope_names[0]))

typedef struct {
    auth_key_info info;
    unsigned char hash[32];
} key_row;

typedef struct {
    key_row *rows;
    size_t n;
} key_table;

qr_status auth_scopes_parse(const char *text, unsigned *scopes, char *err)
{
    *scopes = 0;
    const char *p = text ? text : "";
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *a = p, *b = p + len;
        while (a < b && *a == ' ')
            a++;
        while (b > a && b[-1] == ' ')
            b--;
        size_t i;
        for (i = 0; i < NSCOPES; i++)
            if ((size_t)(b - a) == strlen(scope_names[i]) && strncmp(a, scope_names[i], (size_t)(b - a)) == 0)
                break;
        if (i == NSCOPES)
            return qr_fail(err, QR_EINVAL,
                           "unknown scope '%.*s' (expected search, chat, admin or on_behalf_of)",
                           (int)(b - a), a);
        *scopes |= 1u << i;
        p += len;
        if (*p == ',')
            p++;
    }
    if (!*scopes)
        return qr_fail(err, QR_EINVAL, "a key needs at least one scope (search, chat, admin, on_behalf_of)");
    return QR_OK;
}

void auth_scopes_format(unsigned scopes, char *out, size_t len)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < NSCOPES; i++)
        if (scopes & (1u << i))
            o += (size_t)snprintf(out + o, o < len ? len - o : 0, "%s%s", o ? "," : "", scope_names[i]);
}

static void table_release(key_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->rows[i].info.name);
    free(t->rows);
    t->rows = NULL;
    t->n = 0;
}

void auth_key_info_release(auth_key_info *info)
{
    if (info) {
        free(info->name);
        info->name = NULL;
    }
}

void auth_key_list_free(auth_key_info *keys, size_t count)
{
    for (size_t i = 0; keys && i < count; i++)
        free(keys[i].name);
    free(keys);
}

static bool id_ok(const char *id)
{
    if (strlen(id) != AUTH_KEY_ID_LEN)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

static qr_status parse_table(const char *path, const char *text, size_t len, key_table *t, char *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    qr_status st = QR_OK;
    if (!root)
        return qr_fail(err, QR_EINVAL, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_object(root) || json_integer_value(json_object_get(root, "version")) != 1 ||
        !json_is_array(keys)) {
        st = qr_fail(err, QR_EINVAL, "%s: expected {\"version\": 1, \"keys\": [...]}", path);
        goto out;
    }
    t->rows = calloc(json_array_size(keys) + 1, sizeof(key_row));
    if (!t->rows) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        key_row *r = &t->rows[t->n];
        const char *id = json_string_value(json_object_get(k, "id"));
        const char *name = json_string_value(json_object_get(k, "name"));
        const char *hash = json_string_value(json_object_get(k, "sha256"));
        json_t *scopes = json_object_get(k, "scopes");
        if (!id || !id_ok(id) || !name || !hash || strlen(hash) != 64 || !auth_unhex(hash, 64, r->hash) ||
            !json_is_array(scopes) || !json_is_integer(json_object_get(k, "created_ms"))) {
            st = qr_fail(err, QR_EINVAL, "%s: key #%zu is malformed", path, i + 1);
            goto out;
        }
        size_t j;
        json_t *sc;
        json_array_foreach(scopes, j, sc)
        {
            unsigned one;
            if (!json_is_string(sc) || auth_scopes_parse(json_string_value(sc), &one, NULL)) {
                st = qr_fail(err, QR_EINVAL, "%s: key %s has an unknown scope", path, id);
                goto out;
            }
            r->info.scopes |= one;
        }
        memcpy(r->info.id, id, AUTH_KEY_ID_LEN + 1);
        r->info.created_ms = json_integer_value(json_object_get(k, "created_ms"));
        r->info.revoked_ms = json_integer_value(json_object_get(k, "revoked_ms"));
        if (!(r->info.name = strdup(name))) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        t->n++;
    }
out:
    if (st)
        table_release(t);
    json_decref(root);
    return st;
}

static qr_status read_table(const char *path, key_table *t, char *err)
{
    char *text = NULL;
    size_t len = 0;
    memset(t, 0, sizeof(*t));
    qr_status st = qr_read_file(path, KEYS_FILE_MAX, &text, &len, err);
    if (st == QR_ENOTFOUND)
        return QR_OK;
    if (!st)
        st = parse_table(path, text, len, t, err);
    free(text);
    return st;
}

/* The table as JSON text (free it), ending in a newline. */
static qr_status dump_table(const key_table *t, char **out, size_t *out_len, char *err)
{
    json_t *root = json_pack("{s:i, s:[]}", "version", 1, "keys");
    json_t *keys = json_object_get(root, "keys");
    qr_status st = QR_OK;
    for (size_t i = 0; root && i < t->n && !st; i++) {
        const key_row *r = &t->rows[i];
        char hash[65];
        auth_hex(r->hash, sizeof(r->hash), hash);
        json_t *scopes = json_array();
        for (size_t s = 0; scopes && s < NSCOPES; s++)
            if (r->info.scopes & (1u << s))
                json_array_append_new(scopes, json_string(scope_names[s]));
        json_t *k = json_pack("{s:s, s:s, s:s, s:o, s:I, s:I}", "id", r->info.id, "name", r->info.name,
                              "sha256", hash, "scopes", scopes, "created_ms", (json_int_t)r->info.created_ms,
                              "revoked_ms", (json_int_t)r->info.revoked_ms);
        if (!k || json_array_append_new(keys, k))
            st = QR_ENOMEM;
    }
    char *text = root && !st ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    if (!text)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps leaves room only for the NUL: write the newline over it */
    *out = text;
    *out_len = len + 1;
    return QR_OK;
}

static qr_status write_table(const char *path, const key_table *t, char *err)
{
    char *text = NULL;
    size_t len = 0;
    qr_status st = dump_table(t, &text, &len, err);
    if (!st)
        st = auth_write_file(path, text, len, true, err);
    free(text);
    return st;
}

/* The shared table and its version (0 and an empty table when the row is absent). */
static qr_status read_shared(key_table *t, int64_t *version, char *err)
{
    void *text = NULL;
    size_t len = 0;
    memset(t, 0, sizeof(*t));
    qr_status st = store_shared_read(KEYS_SHARED, &text, &len, version, err);
    if (st == QR_ENOTFOUND) {
        *version = 0;
        return QR_OK;
    }
    if (!st)
        st = parse_table("the shared API keys (PostgreSQL quarry.shared '" KEYS_SHARED "')", text, len, t,
                         err);
    free(text);
    return st;
}

/* modify_table on the shared table: read, change, then write back unless another writer came
 * first (the version moved), in which case everything is done again from a fresh read. */
static qr_status modify_shared(qr_status (*fn)(key_table *, void *, char *), void *arg, char *err)
{
    for (int round = 0; round < KEYS_CAS_TRIES; round++) {
        key_table t = {0};
        int64_t version = 0;
        char *text = NULL;
        size_t len = 0;
        qr_status st = read_shared(&t, &version, err);
        if (!st)
            st = fn(&t, arg, err);
        if (!st)
            st = dump_table(&t, &text, &len, err);
        bool lost = false;
        if (!st) {
            st = store_shared_write(KEYS_SHARED, text, len, version, NULL, err);
            lost = st == QR_EEXIST;
        }
        free(text);
        table_release(&t);
        if (!lost)
            return st;
    }
    return qr_fail(err, QR_ETIMEOUT,
                   "the shared API keys changed under this writer %d times in a row: try again",
                   KEYS_CAS_TRIES);
}

/* Runs fn on the table under the writers' lock, then writes it back (the shared table when
 * there is one). */
static qr_status modify_table(auth_ctx *ctx, qr_status (*fn)(key_table *, void *, char *), void *arg,
                              char *err)
{
    if (store_shared_on())
        return modify_shared(fn, arg, err);
    char *path = NULL, *lock_path = NULL;
    key_table t = {0};
    int fd = -1;
    qr_status st = auth_state_path(ctx, "keys.json", true, &path, err);
    if (!st)
        st = auth_state_path(ctx, "keys.lock", false, &lock_path, err);
    if (st)
        goto out;
    fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        st = qr_fail(err, QR_EIO, "cannot lock '%s'", lock_path);
        goto out;
    }
    st = read_table(path, &t, err);
    if (!st)
        st = fn(&t, arg, err);
    if (!st)
        st = write_table(path, &t, err);
out:
    if (fd >= 0)
        close(fd); /* releases the lock */
    table_release(&t);
    free(path);
    free(lock_path);
    return st;
}

struct create_args {
    key_row row;
};

static qr_status add_row(key_table *t, void *arg, char *err)
{
    struct create_args *a = arg;
    key_row *rows = realloc(t->rows, (t->n + 1) * sizeof(*rows));
    if (!rows)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    t->rows = rows;
    rows[t->n] = a->row;
    if (!(rows[t->n].info.name = strdup(a->row.info.name)))
        return qr_fail(err, QR_ENOMEM, "out of memory");
    t->n++;
    return QR_OK;
}

qr_status auth_key_create(auth_ctx *ctx, const char *name, unsigned scopes, char **key, auth_key_info *info,
                          char *err)
{
    *key = NULL;
    if (info)
        memset(info, 0, sizeof(*info));
    if (!name || !auth_name_ok(name, strlen(name)))
        return qr_fail(err, QR_EINVAL, "a key's name must be 1 to %d bytes of text", AUTH_NAME_MAX);
    if (!scopes || (scopes & ~(unsigned)AUTH_SCOPE_ALL))
        return qr_fail(err, QR_EINVAL, "a key needs at least one known scope");
    unsigned char raw[8 + AUTH_SECRET_LEN];
    qr_status st = auth_random(raw, sizeof(raw), err);
    if (st)
        return st;
    struct create_args a;
    memset(&a, 0, sizeof(a));
    auth_hex(raw, 8, a.row.info.id);
    qr_buf b;
    qr_buf_init(&b, 256);
    st = qr_buf_printf(&b, KEY_PREFIX "%s_", a.row.info.id);
    if (!st)
        st = auth_b64url_encode(&b, raw + 8, AUTH_SECRET_LEN);
    memset(raw, 0, sizeof(raw));
    if (st) {
        qr_buf_release(&b);
        return qr_fail(err, st, "out of memory");
    }
    auth_sha256(qr_buf_str(&b), qr_buf_len(&b), a.row.hash);
    a.row.info.name = (char *)name;
    a.row.info.scopes = scopes;
    a.row.info.created_ms = qr_wall_ms();
    st = modify_table(ctx, add_row, &a, err);
    if (st) {
        qr_buf_release(&b);
        return st;
    }
    *key = qr_buf_detach(&b);
    if (info) {
        *info = a.row.info;
        info->name = strdup(name);
    }
    qr_log(QR_LOG_INFO, "auth", "created API key %s", a.row.info.id);
    return *key ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory");
}

static qr_status revoke_row(key_table *t, void *arg, char *err)
{
    const char *id = arg;
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->rows[i].info.id, id) == 0) {
            if (!t->rows[i].info.revoked_ms)
                t->rows[i].info.revoked_ms = qr_wall_ms();
            return QR_OK;
        }
    }
    return qr_fail(err, QR_ENOTFOUND, "no key with id '%s'", id);
}

qr_status auth_key_revoke(auth_ctx *ctx, const char *id, char *err)
{
    if (!id || !id_ok(id))
        return qr_fail(err, QR_ENOTFOUND, "no key with id '%s' (ids are %d hex digits)", id ? id : "",
                       AUTH_KEY_ID_LEN);
    qr_status st = modify_table(ctx, revoke_row, (void *)id, err);
    if (!st)
        qr_log(QR_LOG_INFO, "auth", "revoked API key %s", id);
    return st;
}

/* Re-reads the shared table when its version moved. Called with keys_lock held. */
static qr_status refresh_shared(auth_ctx *ctx, char *err)
{
    int64_t version = 0;
    char e2[QR_ERR_LEN] = "";
    qr_status st = store_shared_version(KEYS_SHARED, &version, e2);
    if (st == QR_ENOTFOUND)
        st = QR_OK; /* no key was ever created: version 0, the empty table */
    if (!st && ctx->keys_loaded && ctx->keys_shared && version == ctx->keys_version)
        return QR_OK;
    key_table *t = NULL;
    if (!st && !(t = calloc(1, sizeof(*t))))
        st = qr_fail(e2, QR_ENOMEM, "out of memory");
    if (!st)
        st = read_shared(t, &version, e2);
    if (st) {
        free(t);
        return qr_fail(err, st, "API keys cannot be checked: %s", e2);
    }
    auth_keys_release(ctx);
    ctx->keys = t;
    ctx->keys_shared = true;
    ctx->keys_version = version;
    ctx->keys_loaded = true;
    return QR_OK;
}

/* Re-reads keys.json when its signature changed (the shared table instead when there is one).
 * Called with keys_lock held. */
static qr_status refresh(auth_ctx *ctx, char *err)
{
    if (store_shared_on())
        return refresh_shared(ctx, err);
    char *path = NULL;
    qr_status st = auth_state_path(ctx, "keys.json", false, &path, err);
    if (st)
        return st;
    auth_file_sig sig;
    auth_file_sig_get(path, &sig);
    if (!ctx->keys_loaded || ctx->keys_shared || !auth_file_sig_same(&sig, &ctx->keys_sig)) {
        key_table *t = calloc(1, sizeof(*t));
        st = t ? read_table(path, t, err) : qr_fail(err, QR_ENOMEM, "out of memory");
        if (!st) {
            auth_keys_release(ctx);
            ctx->keys = t;
            ctx->keys_sig = sig;
            ctx->keys_shared = false;
            ctx->keys_loaded = true;
        } else {
            free(t);
        }
    }
    free(path);
    return st;
}

void auth_keys_release(auth_ctx *ctx)
{
    if (ctx->keys) {
        table_release(ctx->keys);
        free(ctx->keys);
        ctx->keys = NULL;
    }
    ctx->keys_loaded = false;
}

qr_status auth_key_list(auth_ctx *ctx, auth_key_info **keys, size_t *count, char *err)
{
    *keys = NULL;
    *count = 0;
    pthread_mutex_lock(&ctx->keys_lock);
    qr_status st = refresh(ctx, err);
    const key_table *t = ctx->keys;
    if (!st) {
        *keys = calloc(t->n + 1, sizeof(auth_key_info));
        for (size_t i = 0; *keys && i < t->n; i++) {
            (*keys)[i] = t->rows[i].info;
            if (!((*keys)[i].name = strdup(t->rows[i].info.name)))
                st = QR_ENOMEM;
            *count = i + 1;
        }
        if (!*keys || st) {
            auth_key_list_free(*keys, *count);
            *keys = NULL;
            *count = 0;
            st = qr_fail(err, QR_ENOMEM, "out of memory");
        }
    }
    pthread_mutex_unlock(&ctx->keys_lock);
    return st;
}

qr_status auth_key_verify(auth_ctx *ctx, const char *key, auth_key_info *info, char *err)
{
    if (info)
        memset(info, 0, sizeof(*info));
    size_t len = key ? strnlen(key, KEY_LEN + 1) : 0;
    if (len != KEY_LEN || strncmp(key, KEY_PREFIX, 3) != 0 || key[3 + AUTH_KEY_ID_LEN] != '_')
        return qr_fail(err, QR_EAUTH, "invalid API key");
    char id[AUTH_KEY_ID_LEN + 1];
    memcpy(id, key + 3, AUTH_KEY_ID_LEN);
    id[AUTH_KEY_ID_LEN] = '\0';
    unsigned char hash[32];
    auth_sha256(key, len, hash);
    pthread_mutex_lock(&ctx->keys_lock);
    qr_status st = refresh(ctx, err);
    if (!st) {
        const key_table *t = ctx->keys;
        const key_row *found = NULL;
        for (size_t i = 0; i < t->n && !found; i++)
            if (strcmp(t->rows[i].info.id, id) == 0 &&
                CRYPTO_memcmp(t->rows[i].hash, hash, sizeof(hash)) == 0)
                found = &t->rows[i];
        if (!found || found->info.revoked_ms) {
            qr_log(QR_LOG_INFO, "auth", "API key %s refused: %s", id_ok(id) ? id : "(malformed)",
                   found ? "revoked" : "unknown");
            st = qr_fail(err, QR_EAUTH, "invalid API key");
        } else if (info) {
            *info = found->info;
            if (!(info->name = strdup(found->info.name)))
                st = qr_fail(err, QR_ENOMEM, "out of memory");
        }
    }
    pthread_mutex_unlock(&ctx->keys_lock);
    return st;
}

/* Replaces *p (released) by a copy that is not an administrator: same uid, groups and ACL
 * principals. On error *p is NULL. */
static qr_status without_admin(auth_principal **p, char *err)
{
    const auth_principal *a = *p;
    auth_principal *copy = NULL;
    qr_status st =
        auth_principal_new(a->uid, a->dn, a->display_name, a->mail, a->groups, a->ngroups, false, &copy);
    auth_principal_release(*p);
    *p = copy;
    if (st)
        return qr_fail(err, st, "out of memory");
    return QR_OK;
}

qr_status auth_key_principal(auth_ctx *ctx, const char *key, const char *on_behalf_of, unsigned required,
                             auth_principal **out, char *err)
{
    auth_key_info info;
    *out = NULL;
    qr_status st = auth_key_verify(ctx, key, &info, err);
    if (st)
        return st;
    char need[64];
    if ((info.scopes & required) != required) {
        auth_scopes_format(required & ~info.scopes, need, sizeof(need));
        st = qr_fail(err, QR_EPERM, "API key %s lacks the scope %s", info.id, need);
    } else if (on_behalf_of && !(info.scopes & AUTH_SCOPE_ON_BEHALF_OF)) {
        st = qr_fail(err, QR_EPERM, "API key %s may not act on behalf of users (no on_behalf_of scope)",
                     info.id);
    } else if (on_behalf_of) {
        st = auth_resolve(ctx, on_behalf_of, out, err);
        /* Acting as an administrator takes the key's own admin scope: a portal key that may
         * search for users must not read every document, or reach admin routes, by naming one. */
        if (!st && (*out)->is_admin && !(info.scopes & AUTH_SCOPE_ADMIN))
            st = without_admin(out, err);
        /* which names exist in the directory is for administrators to learn, not for every key */
        if (st == QR_ENOTFOUND && !(info.scopes & AUTH_SCOPE_ADMIN))
            qr_fail(err, QR_ENOTFOUND, "X-Quarry-User: not a user this key can act for");
    } else {
        char uid[8 + AUTH_KEY_ID_LEN];
        snprintf(uid, sizeof(uid), "key:%s", info.id);
        st = auth_principal_new(uid, "", info.name, "", NULL, 0, (info.scopes & AUTH_SCOPE_ADMIN) != 0, out);
        if (st)
            st = qr_fail(err, st, "out of memory");
    }
    auth_key_info_release(&info);
    return st;
}
