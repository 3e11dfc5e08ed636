/*
 * The auth context and its two main calls. auth_authenticate checks a password against LDAP
 * (behind the failed-login limits) and refreshes the cache; auth_resolve serves principals from
 * the cache while fresh and from LDAP otherwise. The cache is an LRU map of uid -> principal with
 * the time it was fetched; it never holds a failure, and an expired entry serves only when LDAP
 * is unreachable and auth.stale_if_error is on; it is keyed by the directory's uid, whatever
 * spelling of the name found the entry. Failed-login counters live in another bounded LRU map, so
 * a flood of names cannot grow it: per directory entry (its DN, which every spelling LDAP matches
 * to it shares), per user name (auth_limit_name's spelling, so that names matching no entry are
 * limited too) and per client address. With a system of record (store.backend = postgres,
 * store_shared_on) the limits are read from and counted in PostgreSQL's shared counters instead
 * (index/store.h, store_shared_failures_count), so that every node holds one limit; this
 * process's own counters are kept as well, and are what the limits use whenever PostgreSQL cannot
 * answer.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_int.h"
#include "index/store.h"

#define LIMIT_ENTRIES  65536
#define FLUSH_CHECK_NS 1000000000ull

typedef struct {
    auth_principal *p;
    uint64_t fetched_ns;
} cache_entry;

typedef struct {
    int failures;
    uint64_t window_start_ns;
} limit_entry;

static void cache_entry_free(void *v)
{
    cache_entry *e = v;
    if (e)
        auth_principal_release(e->p);
    free(e);
}

static void settings_release(auth_settings *s)
{
    char **strs[] = {&s->uris,          &s->ca_file,  &s->bind_dn,     &s->bind_password, &s->user_base,
                     &s->user_filter,   &s->uid_attr, &s->group_base,  &s->group_filter,  &s->group_name_attr,
                     &s->memberof_attr, &s->data_dir, &s->token_secret};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
    char **lists[] = {s->admin_groups, s->uri_list};
    size_t lens[] = {s->nadmin_groups, s->nuris};
    for (size_t l = 0; l < 2; l++) {
        for (size_t i = 0; i < lens[l]; i++)
            free(lists[l][i]);
        free(lists[l]);
    }
    s->admin_groups = s->uri_list = NULL;
    s->nadmin_groups = s->nuris = 0;
}

qr_status auth_split_list(const char *text, const char *seps, bool lower, bool keep_empty, char ***items,
                          size_t *n)
{
    if (!*text)
        return QR_OK;
    for (const char *p = text;;) {
        size_t len = strcspn(p, seps);
        const char *a = p, *b = p + len;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        if (b > a || keep_empty) {
            char **v = realloc(*items, (*n + 1) * sizeof(char *));
            if (!v)
                return QR_ENOMEM;
            *items = v;
            if (!(v[*n] = strndup(a, (size_t)(b - a))))
                return QR_ENOMEM;
            if (lower)
                auth_ascii_lower(v[*n]);
            ++*n;
        }
        if (!p[len])
            return QR_OK;
        p += len + 1;
    }
}

static qr_status load_settings(const qr_config *cfg, auth_settings *s, char *err)
{
    const qr_settings *conf = qr_config_settings(cfg);
    const char *req = conf->ldap_require_cert;
    s->require_cert = strcmp(req, "never") == 0   ? LDAP_OPT_X_TLS_NEVER
                      : strcmp(req, "allow") == 0 ? LDAP_OPT_X_TLS_ALLOW
                      : strcmp(req, "try") == 0   ? LDAP_OPT_X_TLS_TRY
                                                  : LDAP_OPT_X_TLS_DEMAND;
    s->uris = strdup(conf->ldap_uri);
    s->starttls = conf->ldap_starttls;
    s->ca_file = strdup(conf->ldap_ca_file);
    s->bind_dn = strdup(conf->ldap_bind_dn);
    s->bind_password = strdup(conf->ldap_bind_password);
    s->user_base = strdup(conf->ldap_user_base);
    s->user_filter = strdup(conf->ldap_user_filter);
    s->uid_attr = strdup(conf->ldap_uid_attr);
    const char *gbase = conf->ldap_group_base;
    s->group_base = strdup(*gbase ? gbase : conf->ldap_user_base);
    s->group_filter = strdup(conf->ldap_group_filter);
    s->group_name_attr = strdup(conf->ldap_group_name_attr);
    s->memberof_attr = strdup(conf->ldap_memberof_attr);
    s->data_dir = strdup(conf->data_dir);
    s->token_secret = strdup(conf->auth_token_secret);
    s->nested_depth = (int)conf->ldap_nested_depth;
    s->timeout_ms = (int)conf->ldap_timeout_ms;
    s->pool_size = (int)conf->ldap_pool_size;
    s->cache_ttl_s = conf->ldap_cache_ttl_s;
    s->cache_max = (size_t)conf->ldap_cache_max_entries;
    s->stale_if_error = conf->auth_stale_if_error;
    s->token_ttl_s = conf->auth_token_ttl_s;
    s->rate_limit_user = (int)conf->auth_rate_limit_user;
    s->rate_limit_addr = (int)conf->auth_rate_limit_addr;
    s->rate_limit_window_s = conf->auth_rate_limit_window_s;
    if (!s->uris || !s->ca_file || !s->bind_dn || !s->bind_password || !s->user_base || !s->user_filter ||
        !s->uid_attr || !s->group_base || !s->group_filter || !s->group_name_attr || !s->memberof_attr ||
        !s->data_dir || !s->token_secret ||
        auth_split_list(conf->auth_admin_groups, ",", true, false, &s->admin_groups, &s->nadmin_groups) ||
        auth_split_list(s->uris, ", \t", false, false, &s->uri_list, &s->nuris))
        return qr_fail(err, QR_ENOMEM, "out of memory");
    if (*s->uris && !*s->user_base)
        return qr_fail(err, QR_EINVAL, "ldap.user_base must be set when ldap.uri is");
    /* a dry run of each template catches a bad placeholder at start-up rather than at login */
    qr_buf probe;
    qr_buf_init(&probe, 1 << 16);
    qr_status st = auth_filter_expand(&probe, s->user_filter, "x", 1, NULL, NULL);
    if (st)
        st = qr_fail(err, QR_EINVAL, "ldap.user_filter '%s': only %%s and %%%% may appear", s->user_filter);
    qr_buf_reset(&probe);
    if (!st && auth_filter_expand(&probe, s->group_filter, NULL, 0, "cn=x", "x"))
        st = qr_fail(err, QR_EINVAL, "ldap.group_filter '%s': only %%d, %%u and %%%% may appear",
                     s->group_filter);
    qr_buf_release(&probe);
    return st;
}

qr_status auth_new(const qr_config *cfg, auth_ctx **out, char *err)
{
    *out = NULL;
    auth_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    pthread_mutex_init(&ctx->pool_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ctx->pool_cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&ctx->cache_lock, NULL);
    pthread_mutex_init(&ctx->limit_lock, NULL);
    pthread_mutex_init(&ctx->secret_lock, NULL);
    pthread_mutex_init(&ctx->keys_lock, NULL);
    qr_status st = load_settings(cfg, &ctx->s, err);
    if (!st)
        st = auth_oidc_setup(ctx, cfg, err);
    if (st) {
        auth_free(ctx);
        return st;
    }
    ctx->pool = calloc((size_t)ctx->s.pool_size, sizeof(auth_conn));
    ctx->cache = auth_lru_new(ctx->s.cache_max, cache_entry_free);
    ctx->limits = auth_lru_new(LIMIT_ENTRIES, free);
    if (!ctx->pool || !ctx->cache || !ctx->limits ||
        auth_state_path(ctx, "flush", false, &ctx->flush_path, err)) {
        auth_free(ctx);
        return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    /* a flush written before this context existed concerns caches that are gone */
    auth_file_sig_get(ctx->flush_path, &ctx->flush_sig);
    ctx->flush_checked_ns = qr_now_ns();
    *out = ctx;
    return QR_OK;
}

void auth_free(auth_ctx *ctx)
{
    if (!ctx)
        return;
    auth_conn_close_all(ctx);
    free(ctx->pool);
    auth_lru_free(ctx->cache);
    auth_lru_free(ctx->limits);
    auth_keys_release(ctx);
    auth_oidc_release(ctx);
    free(ctx->flush_path);
    settings_release(&ctx->s);
    memset(ctx->secret, 0, sizeof(ctx->secret));
    pthread_mutex_destroy(&ctx->pool_lock);
    pthread_cond_destroy(&ctx->pool_cond);
    pthread_mutex_destroy(&ctx->cache_lock);
    pthread_mutex_destroy(&ctx->limit_lock);
    pthread_mutex_destroy(&ctx->secret_lock);
    pthread_mutex_destroy(&ctx->keys_lock);
    free(ctx);
}

void auth_get_stats(auth_ctx *ctx, auth_stats *out)
{
    uint64_t *dst = (uint64_t *)out;
    const uint64_t *src = (const uint64_t *)&ctx->stats;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

/* ---- the principal cache -------------------------------------------------------------------- */

/* Called with cache_lock held: empties the cache when another process rewrote the flush
 * marker, looking at most once a second. */
static void check_flush_marker(auth_ctx *ctx)
{
    uint64_t now = qr_now_ns();
    if (now - ctx->flush_checked_ns < FLUSH_CHECK_NS)
        return;
    ctx->flush_checked_ns = now;
    auth_file_sig sig;
    auth_file_sig_get(ctx->flush_path, &sig);
    if (!auth_file_sig_same(&sig, &ctx->flush_sig)) {
        ctx->flush_sig = sig;
        auth_lru_clear(ctx->cache);
        qr_log(QR_LOG_INFO, "auth", "principal cache flushed (quarry auth flush)");
    }
}

/* The cached principal for key: fresh only, or (stale true) whatever its age. */
auth_principal *auth_cache_get(auth_ctx *ctx, const char *key, bool stale)
{
    if (ctx->s.cache_ttl_s <= 0)
        return NULL;
    auth_principal *p = NULL;
    pthread_mutex_lock(&ctx->cache_lock);
    check_flush_marker(ctx);
    cache_entry *e = auth_lru_get(ctx->cache, key);
    if (e && (stale || qr_now_ns() - e->fetched_ns < (uint64_t)ctx->s.cache_ttl_s * 1000000000ull))
        p = auth_principal_ref(e->p);
    pthread_mutex_unlock(&ctx->cache_lock);
    return p;
}

void auth_cache_put(auth_ctx *ctx, const char *key, auth_principal *p)
{
    if (ctx->s.cache_ttl_s <= 0)
        return;
    cache_entry *e = malloc(sizeof(*e));
    if (!e)
        return; /* not cached: the next call asks LDAP again */
    e->p = auth_principal_ref(p);
    e->fetched_ns = qr_now_ns();
    pthread_mutex_lock(&ctx->cache_lock);
    auth_lru_put(ctx->cache, key, e);
    pthread_mutex_unlock(&ctx->cache_lock);
}

qr_status auth_flush(auth_ctx *ctx, char *err)
{
    pthread_mutex_lock(&ctx->cache_lock);
    auth_lru_clear(ctx->cache);
    pthread_mutex_unlock(&ctx->cache_lock);
    char *path = NULL;
    qr_status st = auth_state_path(ctx, "flush", true, &path, err);
    if (!st) {
        char stamp[32];
        int n = snprintf(stamp, sizeof(stamp), "%lld\n", (long long)qr_wall_ms());
        st = auth_write_file(path, stamp, (size_t)n, true, err);
    }
    if (!st) {
        /* our own cache is empty already: do not flush it again on seeing our marker */
        pthread_mutex_lock(&ctx->cache_lock);
        auth_file_sig_get(path, &ctx->flush_sig);
        pthread_mutex_unlock(&ctx->cache_lock);
    }
    free(path);
    return st;
}

/* ---- failed-login limits ------------------------------------------------------------------ */

static uint64_t window_ns(const auth_ctx *ctx)
{
    return (uint64_t)ctx->s.rate_limit_window_s * 1000000000ull;
}

/* Seconds until key may try again (0: it may now). Called with limit_lock held. */
static int64_t limit_wait(auth_ctx *ctx, const char *key, int limit, uint64_t now)
{
    if (limit <= 0)
        return 0;
    limit_entry *e = auth_lru_get(ctx->limits, key);
    if (!e || now - e->window_start_ns >= window_ns(ctx) || e->failures < limit)
        return 0;
    return (int64_t)((e->window_start_ns + window_ns(ctx) - now) / 1000000000ull) + 1;
}

static void limit_count(auth_ctx *ctx, const char *key, int limit, uint64_t now)
{
    if (limit <= 0)
        return;
    limit_entry *e = auth_lru_get(ctx->limits, key);
    if (e && now - e->window_start_ns < window_ns(ctx)) {
        e->failures++;
        return;
    }
    if (!e) {
        e = malloc(sizeof(*e));
        if (!e || auth_lru_put(ctx->limits, key, e))
            return;
    }
    e->failures = 1;
    e->window_start_ns = now;
}

/* "u:<name>" (auth_limit_name's spelling) and "a:<client>" keys; client may be NULL. */
static void limit_keys(const char *name, size_t len, const char *client, char *ukey, char *akey,
                       size_t keylen)
{
    ukey[0] = 'u';
    ukey[1] = ':';
    auth_limit_name(name, len, ukey + 2, keylen - 2);
    snprintf(akey, keylen, "a:%s", client ? client : "");
}

/* "d:<DN>" in its canonical spelling (auth_dn_key): the key of a directory entry's failures.
 * Free it; NULL when out of memory. */
static char *dn_limit_key(const char *dn)
{
    qr_buf key;
    qr_buf_init(&key, 1 << 16);
    if (qr_buf_puts(&key, "d:") || auth_dn_key(dn, &key)) {
        /* a DN the directory sent that does not parse: its own spelling, case-folded */
        qr_buf_reset(&key);
        if (qr_buf_puts(&key, "d:") || qr_buf_puts(&key, dn)) {
            qr_buf_release(&key);
            return NULL;
        }
    }
    char *s = qr_buf_detach(&key);
    qr_buf_release(&key);
    if (s)
        auth_ascii_lower(s);
    return s;
}

/* The limits and window in force now, read together. */
typedef struct {
    int user, addr;
    int64_t window_s;
} limit_conf;

static limit_conf limits_now(auth_ctx *ctx)
{
    pthread_mutex_lock(&ctx->limit_lock);
    limit_conf lc = {ctx->s.rate_limit_user, ctx->s.rate_limit_addr, ctx->s.rate_limit_window_s};
    pthread_mutex_unlock(&ctx->limit_lock);
    return lc;
}

/*
 * The shared counters (store.backend = postgres). They take keys of at most STORE_FAILURE_KEY_MAX
 * bytes of valid UTF-8: a longer key (a DN can be) goes as its prefix and SHA-256. Any failure to
 * reach them (QR_EUNAVAILABLE above all: PostgreSQL stopped, or no primary while etcd is down)
 * leaves the limits to this process's counters, which count every failure in any case: logins go
 * on, and the limits still hold, per node, until PostgreSQL answers again. A success clears both.
 */
typedef struct {
    const char *keys[STORE_FAILURE_KEYS];
    int limits[STORE_FAILURE_KEYS];
    char hashed[STORE_FAILURE_KEYS][80];
    size_t n;
} shared_keys;

/* Adds key (NULL, or "u:"/"a:" with nothing after the prefix: none) when its limit is on. */
static void shared_key_add(shared_keys *k, const char *key, int limit)
{
    if (!key || !key[2] || limit <= 0)
        return;
    size_t len = strlen(key);
    const char *use = key;
    if (len > STORE_FAILURE_KEY_MAX || !qr_utf8_valid(key, len)) {
        unsigned char digest[32];
        char hex[65];
        auth_sha256(key, len, digest);
        auth_hex(digest, sizeof(digest), hex);
        snprintf(k->hashed[k->n], sizeof(k->hashed[0]), "%.2ssha256:%s", key, hex);
        use = k->hashed[k->n];
    }
    k->limits[k->n] = limit;
    k->keys[k->n++] = use;
}

static void shared_keys_of(shared_keys *k, const limit_conf *lc, const char *ukey, const char *dkey,
                           const char *akey)
{
    k->n = 0;
    shared_key_add(k, ukey, lc->user);
    shared_key_add(k, dkey, lc->user);
    shared_key_add(k, akey, lc->addr);
}

/* Says once when the shared counters stop answering (not at every login while they do not) and
 * once when they are back. */
static void shared_outcome(auth_ctx *ctx, qr_status st, const char *why)
{
    pthread_mutex_lock(&ctx->limit_lock);
    bool was_down = ctx->limits_shared_down;
    ctx->limits_shared_down = st != QR_OK;
    pthread_mutex_unlock(&ctx->limit_lock);
    if (st && !was_down)
        qr_log(QR_LOG_WARN, "auth",
               "failed-login counters shared through PostgreSQL are unavailable (%s): this node limits "
               "logins with its own counters until they are back",
               why);
    else if (!st && was_down)
        qr_log(QR_LOG_INFO, "auth", "failed-login counters shared through PostgreSQL are available again");
}

/* Seconds to wait for the first of the keys (each may be NULL or empty) that is over its limit;
 * 0 when none is. */
static int64_t limits_wait(auth_ctx *ctx, const char *ukey, const char *dkey, const char *akey)
{
    if (store_shared_on()) {
        limit_conf lc = limits_now(ctx);
        shared_keys k;
        shared_keys_of(&k, &lc, ukey, dkey, akey);
        if (!k.n)
            return 0;
        int64_t failures[STORE_FAILURE_KEYS], left_ms[STORE_FAILURE_KEYS];
        char err[QR_ERR_LEN] = "";
        qr_status st = store_shared_failures_read(k.keys, k.n, failures, left_ms, err);
        shared_outcome(ctx, st, err);
        for (size_t i = 0; !st && i < k.n; i++)
            if (failures[i] >= k.limits[i])
                return left_ms[i] / 1000 + 1;
        if (!st)
            return 0;
    }
    uint64_t now = qr_now_ns();
    int64_t wait = 0;
    pthread_mutex_lock(&ctx->limit_lock);
    if (ukey)
        wait = limit_wait(ctx, ukey, ctx->s.rate_limit_user, now);
    if (!wait && dkey)
        wait = limit_wait(ctx, dkey, ctx->s.rate_limit_user, now);
    if (!wait && akey[2])
        wait = limit_wait(ctx, akey, ctx->s.rate_limit_addr, now);
    pthread_mutex_unlock(&ctx->limit_lock);
    return wait;
}

/* Counts a failure for each key, in this process and, with a system of record, in the shared
 * counters. */
static void limits_count(auth_ctx *ctx, const char *ukey, const char *dkey, const char *akey)
{
    uint64_t now = qr_now_ns();
    pthread_mutex_lock(&ctx->limit_lock);
    if (ukey)
        limit_count(ctx, ukey, ctx->s.rate_limit_user, now);
    if (dkey)
        limit_count(ctx, dkey, ctx->s.rate_limit_user, now);
    if (akey[2])
        limit_count(ctx, akey, ctx->s.rate_limit_addr, now);
    pthread_mutex_unlock(&ctx->limit_lock);
    if (!store_shared_on())
        return;
    limit_conf lc = limits_now(ctx);
    shared_keys k;
    shared_keys_of(&k, &lc, ukey, dkey, akey);
    if (!k.n)
        return;
    char err[QR_ERR_LEN] = "";
    shared_outcome(ctx, store_shared_failures_count(k.keys, k.n, lc.window_s, err), err);
}

/* After a success: the name's and the entry's counts start again, here and shared. */
static void limits_clear(auth_ctx *ctx, const char *ukey, const char *dkey)
{
    pthread_mutex_lock(&ctx->limit_lock);
    auth_lru_remove(ctx->limits, ukey);
    auth_lru_remove(ctx->limits, dkey);
    pthread_mutex_unlock(&ctx->limit_lock);
    if (!store_shared_on())
        return;
    limit_conf lc = limits_now(ctx);
    shared_keys k;
    shared_keys_of(&k, &lc, ukey, dkey, NULL);
    if (!k.n)
        return;
    char err[QR_ERR_LEN] = "";
    shared_outcome(ctx, store_shared_failures_clear(k.keys, k.n, err), err);
}

void auth_set_rate_limits(auth_ctx *ctx, int per_user, int per_addr, int64_t window_s)
{
    pthread_mutex_lock(&ctx->limit_lock);
    ctx->s.rate_limit_user = per_user;
    ctx->s.rate_limit_addr = per_addr;
    ctx->s.rate_limit_window_s = window_s;
    pthread_mutex_unlock(&ctx->limit_lock);
}

int64_t auth_rate_limit_window_s(auth_ctx *ctx)
{
    pthread_mutex_lock(&ctx->limit_lock);
    int64_t w = ctx->s.rate_limit_window_s;
    pthread_mutex_unlock(&ctx->limit_lock);
    return w;
}

/* ---- authentication and resolution ----------------------------------------------------------- */

/* Counts a failed login for the name (ukey), the entry it found (dkey, NULL when none) and the
 * client address (akey). who is the name as typed, for the log. */
static qr_status login_failed(auth_ctx *ctx, const char *who, const char *ukey, const char *dkey,
                              const char *akey, const char *why, char *err)
{
    limits_count(ctx, ukey, dkey, akey);
    AUTH_COUNT(ctx, login_failures);
    qr_log(QR_LOG_INFO, "auth", "login failed for '%s' from %s: %s", who ? who : "(malformed name)",
           akey[2] ? akey + 2 : "(unknown address)", why);
    /* one answer for every bad credential, so that callers cannot probe for user names */
    return qr_fail(err, QR_EAUTH, "invalid user name or password");
}

static qr_status login_limited(auth_ctx *ctx, const char *who, const char *akey, int64_t wait, char *err)
{
    AUTH_COUNT(ctx, rate_limited);
    qr_log(QR_LOG_WARN, "auth", "login for '%s' from %s refused: too many failed logins", who,
           akey[2] ? akey + 2 : "(unknown address)");
    return qr_fail(err, QR_ELIMIT, "too many failed logins; try again in %lld s", (long long)wait);
}

qr_status auth_authenticate(auth_ctx *ctx, const char *user, size_t user_len, const char *password,
                            size_t password_len, const char *client, auth_principal **out, char *err)
{
    char ukey[AUTH_NAME_MAX + 8], akey[AUTH_NAME_MAX + 8], name[AUTH_NAME_MAX + 1];
    *out = NULL;
    if (client && strlen(client) > AUTH_NAME_MAX)
        client = NULL;
    if (!user || !auth_name_ok(user, user_len)) {
        limit_keys("", 0, client, ukey, akey, sizeof(ukey));
        return login_failed(ctx, NULL, NULL, NULL, akey, "malformed user name", err);
    }
    memcpy(name, user, user_len);
    name[user_len] = '\0';
    limit_keys(name, user_len, client, ukey, akey, sizeof(ukey));

    /* the name, in any of its common spellings, and the address: refused without asking LDAP */
    int64_t wait = limits_wait(ctx, ukey, NULL, akey);
    if (wait)
        return login_limited(ctx, name, akey, wait, err);
    /* an empty password would make the bind an unauthenticated one, which succeeds */
    if (!password || password_len == 0)
        return login_failed(ctx, name, ukey, NULL, akey, "empty password", err);
    if (password_len > AUTH_PASSWORD_MAX)
        return login_failed(ctx, name, ukey, NULL, akey, "password too long", err);

    uint64_t deadline = auth_deadline(ctx);
    auth_conn *c = NULL;
    auth_user u;
    memset(&u, 0, sizeof(u));
    char why[QR_ERR_LEN] = "", *dkey = NULL;
    qr_status st = auth_pool_acquire(ctx, deadline, &c, err);
    if (!st)
        st = auth_dir_find_user(ctx, c, deadline, name, user_len, &u, why);
    /* every spelling LDAP matches to one entry counts against that entry: past its limit even the
     * right password is refused, before it is sent */
    if (!st && !(dkey = dn_limit_key(u.dn)))
        st = qr_fail(why, QR_ENOMEM, "out of memory");
    if (!st && (wait = limits_wait(ctx, NULL, dkey, akey))) {
        auth_pool_release(ctx, c);
        st = login_limited(ctx, name, akey, wait, err);
        goto out;
    }
    if (!st)
        st = auth_dir_user_principal(ctx, c, deadline, &u, password, password_len, out, why);
    auth_pool_release(ctx, c);
    if (st == QR_ENOTFOUND || st == QR_EAUTH) {
        st = login_failed(ctx, name, ukey, dkey, akey, why, err);
        goto out;
    }
    if (st) {
        if (c)
            qr_fail(err, st, "%s", why);
        goto out;
    }
    limits_clear(ctx, ukey, dkey);
    auth_cache_put(ctx, (*out)->uid, *out);
    bool spelt_so = strcmp(name, (*out)->uid) == 0;
    qr_log(QR_LOG_INFO, "auth", "login ok for '%s'%s%s%s from %s", (*out)->uid, spelt_so ? "" : " (as '",
           spelt_so ? "" : name, spelt_so ? "" : "')", akey[2] ? akey + 2 : "(unknown address)");
out:
    auth_user_release(&u);
    free(dkey);
    return st;
}

qr_status auth_resolve(auth_ctx *ctx, const char *uid, auth_principal **out, char *err)
{
    *out = NULL;
    size_t len = uid ? strlen(uid) : 0;
    if (!uid || !auth_name_ok(uid, len))
        return qr_fail(err, QR_EINVAL, "malformed user name");
    char key[AUTH_NAME_MAX + 1];
    memcpy(key, uid, len + 1);
    auth_ascii_lower(key);
    if ((*out = auth_cache_get(ctx, key, false))) {
        AUTH_COUNT(ctx, cache_hits);
        return QR_OK;
    }
    AUTH_COUNT(ctx, cache_misses);
    uint64_t deadline = auth_deadline(ctx);
    auth_conn *c = NULL;
    qr_status st = auth_pool_acquire(ctx, deadline, &c, err);
    if (!st)
        st = auth_dir_principal(ctx, c, deadline, uid, len, NULL, 0, out, err);
    auth_pool_release(ctx, c);
    if (!st) {
        /* under the directory's uid only: another spelling of it ("ａｖａ", "ava ") asks LDAP again
         * rather than leave a second copy of the principal, refreshed apart from the first */
        auth_cache_put(ctx, (*out)->uid, *out);
        return QR_OK;
    }
    if (st == QR_EUNAVAILABLE && ctx->s.stale_if_error && (*out = auth_cache_get(ctx, key, true))) {
        AUTH_COUNT(ctx, stale_served);
        qr_log(QR_LOG_WARN, "auth", "LDAP unavailable: serving the expired cached principal of '%s'", key);
        return QR_OK;
    }
    if (st == QR_ENOTFOUND)
        return qr_fail(err, QR_ENOTFOUND, "no such user '%s'", uid);
    return st;
}
