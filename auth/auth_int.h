/*
 * auth's private header: the context, the LDAP connection pool, filter and DN helpers, the LRU
 * map, encodings and the secret files. Only auth's sources and tests include it; LDAP types stop
 * here.
 */
#ifndef QUARRY_AUTH_INT_H
#define QUARRY_AUTH_INT_H

#include <ldap.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "auth/auth.h"

#define AUTH_NAME_MAX     256  /* bytes in a user name or uid */
#define AUTH_PASSWORD_MAX 4096 /* bytes in a password */
#define AUTH_MAX_GROUPS   4096 /* transitive groups of one user */
#define AUTH_TOKEN_MAX    1024 /* bytes in a bearer token */
#define AUTH_SECRET_LEN   32   /* bytes of a generated token secret or API key secret */
#define AUTH_KID_LEN      8    /* hex characters of a token key id */

/* ---- names, filters and DNs (filter.c) ---------------------------------------------------- */

/* True when s[0..n) can be a user name: 1..AUTH_NAME_MAX bytes of valid UTF-8 without NUL or
 * other control characters. */
bool auth_name_ok(const char *s, size_t n);
/* Appends the items of text split at any of seps, trimmed of white space, to *items (*n of them;
 * free each and the array): empty items are left out unless keep_empty (for lists whose positions
 * count: "a,,b" is three items). lower lower-cases their ASCII letters. QR_ENOMEM on failure. */
qr_status auth_split_list(const char *text, const char *seps, bool lower, bool keep_empty, char ***items,
                          size_t *n);
/* Lower-cases ASCII letters in place; other bytes are left alone. */
void auth_ascii_lower(char *s);
/* The key under which failed logins of a user name that matches no entry are counted: the name
 * (valid UTF-8, auth_name_ok) as LDAP's string matching would see it for the common variants:
 * fullwidth ASCII as ASCII, space-like characters as spaces and invisible ones dropped (RFC 4518's
 * mapping), ASCII letters lower-cased, spaces trimmed and runs of them made one. So "ava ",
 * " AVA" and "ａｖａ" share one count, and a name can only be probed that many times, however
 * it is spelt. (A name that finds an entry is also counted by the entry's DN, which no spelling
 * escapes.) Writes at most cap - 1 bytes and a NUL into out. */
void auth_limit_name(const char *name, size_t len, char *out, size_t cap);
/* Appends s[0..n) escaped as an RFC 4515 assertion value: '*', '(', ')', '\\', NUL and every
 * byte outside printable ASCII become \XX. QR_ELIMIT past the buffer's cap. */
qr_status auth_filter_escape(qr_buf *out, const char *s, size_t n);
/* Appends the filter template tmpl with its placeholders filled in, every value escaped: %s the
 * name s[0..s_len), %d the DN dn, %u the uid uid, %% a percent sign. With uid NULL (a group being
 * expanded: a group is never a memberUid) each innermost "(...)" item that holds %u becomes the
 * always-false "(!(objectClass=*))". QR_EINVAL for an unknown placeholder or unbalanced item. */
qr_status auth_filter_expand(qr_buf *out, const char *tmpl, const char *s, size_t s_len, const char *dn,
                             const char *uid);
/* Appends dn in one canonical spelling (parsed and re-serialised per RFC 4514, ASCII lower-cased)
 * for comparing DNs. QR_EINVAL when dn does not parse. */
qr_status auth_dn_key(const char *dn, qr_buf *out);
/* The first RDN's value, unescaped ("cn=sales\2C emea,ou=groups" gives "sales, emea"); its
 * attribute type goes into type (may be NULL, at least 64 bytes). NULL when dn does not parse. */
char *auth_dn_first_value(const char *dn, char *type, size_t type_len);

/* ---- LRU map (lru.c); callers lock -------------------------------------------------------- */

typedef struct auth_lru auth_lru;
/* A map from strings to values, holding at most max entries (the least recently used goes
 * first); free_value (may be NULL) frees values that are replaced, evicted or removed. */
auth_lru *auth_lru_new(size_t max, void (*free_value)(void *));
void auth_lru_free(auth_lru *m);
/* The value for key, marked most recently used; NULL when absent. */
void *auth_lru_get(auth_lru *m, const char *key);
/* Sets key to value (the map owns value from here on, even on error). QR_ENOMEM on failure. */
qr_status auth_lru_put(auth_lru *m, const char *key, void *value);
void auth_lru_remove(auth_lru *m, const char *key);
void auth_lru_clear(auth_lru *m);
size_t auth_lru_len(const auth_lru *m);

/* ---- encodings, hashing and files (crypto.c) ---------------------------------------------- */

/* Base64url without padding; decode refuses any other character. */
qr_status auth_b64url_encode(qr_buf *out, const unsigned char *p, size_t n);
qr_status auth_b64url_decode(const char *s, size_t n, unsigned char *out, size_t cap, size_t *len);
void auth_hex(const unsigned char *p, size_t n, char *out);   /* out holds 2n+1 bytes */
bool auth_unhex(const char *s, size_t n, unsigned char *out); /* n even, out n/2 bytes */
qr_status auth_random(unsigned char *out, size_t n, char *err);
void auth_sha256(const void *p, size_t n, unsigned char out[32]);
/* "<data.dir>/auth/<name>" in a new string (free it); with create, makes the directories (auth/
 * with mode 0700). */
qr_status auth_state_path(const auth_ctx *ctx, const char *name, bool create, char **out, char *err);
/* Writes data to path atomically with mode 0600 (qr_file_write): a temporary file in the same
 * directory, fsync, then rename (replace true) or link (replace false: QR_EEXIST when path
 * exists), then fsync of the directory, whose failure is reported too. */
qr_status auth_write_file(const char *path, const void *data, size_t len, bool replace, char *err);

/* ---- connections (conn.c) ------------------------------------------------------------------ */

/* SIGPIPE blocked in this thread, and one raised meanwhile consumed before it is unblocked. */
typedef struct {
    sigset_t old_mask;
    bool was_pending;
} auth_sigpipe;
void auth_sigpipe_block(auth_sigpipe *g);
void auth_sigpipe_unblock(auth_sigpipe *g);

/* One pool slot: a service-account connection for searches and a connection used only for user
 * binds. A thread holds a slot exclusively between acquire and release, with SIGPIPE blocked. */
typedef struct {
    LDAP *svc;
    LDAP *user;
    bool busy;
    auth_sigpipe sigpipe;
} auth_conn;

/* Deadline helpers: monotonic nanoseconds. */
uint64_t auth_deadline(const auth_ctx *ctx);

qr_status auth_pool_acquire(auth_ctx *ctx, uint64_t deadline, auth_conn **out, char *err);
void auth_pool_release(auth_ctx *ctx, auth_conn *c);
/* Searches with the service connection (opened and bound on demand; a reused connection that
 * turns out to be closed is reopened once). *res (ldap_msgfree it) and *ldap_rc are set on QR_OK,
 * which also covers LDAP_SIZELIMIT_EXCEEDED and LDAP_NO_SUCH_OBJECT (the caller decides).
 * QR_EUNAVAILABLE when the server cannot be reached, answers nothing in time or refuses. */
qr_status auth_conn_search(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const char *base, int scope,
                           const char *filter, char **attrs, int sizelimit, LDAPMessage **res, int *ldap_rc,
                           char *err);
/* Simple bind as dn with the password on the slot's user connection. QR_OK, QR_EAUTH (the
 * directory refused the credentials) or QR_EUNAVAILABLE. */
qr_status auth_conn_bind_user(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const char *dn,
                              const char *password, size_t password_len, char *err);
void auth_conn_close_all(auth_ctx *ctx);

/* ---- directory (directory.c) ---------------------------------------------------------------- */

/* A user's directory entry, as a login or resolution found it. */
typedef struct {
    char *dn;      /* as the directory returned it */
    char *uid_raw; /* ldap.uid_attr's value as the directory spells it, for memberUid */
    char *uid;     /* the same, lower-cased: the principal's uid whatever spelling found the entry */
    char *display_name;
    char *mail;
    char **member_of;
    size_t nmember_of;
} auth_user;
void auth_user_release(auth_user *u);

/* Finds the one entry ldap.user_filter matches for name through the service account. The uid is
 * always the entry's ldap.uid_attr value, never the name as typed: LDAP matches "ava ", "AVA" and
 * fullwidth "ａｖａ" to ava's entry, and all of them become uid "ava". QR_ENOTFOUND when no single
 * entry matches or the entry has no usable uid value (logged: a configuration to fix),
 * QR_EUNAVAILABLE when LDAP cannot answer. On error *u is empty. */
qr_status auth_dir_find_user(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const char *name, size_t len,
                             auth_user *u, char *err);
/* auth_dir_find_user with another filter template than ldap.user_filter (%s is the name). */
qr_status auth_dir_find_user_by(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const char *tmpl,
                                const char *name, size_t len, auth_user *u, char *err);
/* The principal of a found user, groups included. With a password (not NULL) the user's DN is
 * bound with it first, on the slot's user connection: QR_EAUTH when the bind is refused. */
qr_status auth_dir_user_principal(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const auth_user *u,
                                  const char *password, size_t password_len, auth_principal **out, char *err);
/* auth_dir_find_user, then auth_dir_user_principal. */
qr_status auth_dir_principal(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const char *name, size_t len,
                             const char *password, size_t password_len, auth_principal **out, char *err);
/* A principal from parts (copied); groups are lower-cased, sorted and made unique. */
qr_status auth_principal_new(const char *uid, const char *dn, const char *display_name, const char *mail,
                             char **groups, size_t ngroups, bool is_admin, auth_principal **out);

/* ---- the principal cache (auth.c) ------------------------------------------------------------ */

/* The cached principal under key (a new reference), NULL when absent or, unless stale, expired
 * (ldap.cache_ttl_s). Keys are uids; other lookups that end in a principal (an OIDC claim value)
 * use keys that start with a control byte, which no uid holds. */
auth_principal *auth_cache_get(auth_ctx *ctx, const char *key, bool stale);
/* Caches p under key (takes its own reference). A no-op with ldap.cache_ttl_s 0. */
void auth_cache_put(auth_ctx *ctx, const char *key, auth_principal *p);

/* ---- tokens (token.c) and keys (keys.c) --------------------------------------------------- */

/* Signs a token for uid that expires at expires_at (Unix seconds), whatever the clock says:
 * auth_token_issue's core, and the way tests make expired tokens. */
qr_status auth_token_make(auth_ctx *ctx, const char *uid, int64_t expires_at, char **token, char *err);

/* ---- the context ---------------------------------------------------------------------------- */

typedef struct {
    char *uris; /* ldap.uri as configured, for messages */
    char **uri_list;
    size_t nuris;
    bool starttls;
    char *ca_file;
    int require_cert; /* LDAP_OPT_X_TLS_* */
    char *bind_dn, *bind_password;
    char *user_base, *user_filter, *uid_attr;
    char *group_base, *group_filter, *group_name_attr, *memberof_attr;
    int nested_depth;
    int timeout_ms;
    int pool_size;
    int64_t cache_ttl_s;
    size_t cache_max;
    char **admin_groups; /* lower-cased */
    size_t nadmin_groups;
    bool stale_if_error;
    char *data_dir;
    char *token_secret; /* "" when the secret lives in <data.dir>/auth/token.key */
    int64_t token_ttl_s;
    int rate_limit_user, rate_limit_addr;
    int64_t rate_limit_window_s;
} auth_settings;

/* The file signature used to notice that another process changed a file. */
typedef struct {
    bool exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} auth_file_sig;

void auth_file_sig_get(const char *path, auth_file_sig *sig);
bool auth_file_sig_same(const auth_file_sig *a, const auth_file_sig *b);

struct auth_ctx {
    auth_settings s;
    auth_stats stats; /* updated with __atomic builtins */

    size_t preferred_uri; /* index into uri_list of the server that worked last */
    pthread_mutex_t pool_lock;
    pthread_cond_t pool_cond;
    auth_conn *pool;

    pthread_mutex_t cache_lock;
    auth_lru *cache;
    char *flush_path;
    auth_file_sig flush_sig;
    uint64_t flush_checked_ns;

    pthread_mutex_t limit_lock;
    auth_lru *limits;
    bool limits_shared_down; /* the shared failed-login counters failed last time (auth.c) */

    pthread_mutex_t secret_lock;
    bool secret_loaded;
    unsigned char secret[256];
    size_t secret_len;
    char kid[AUTH_KID_LEN + 1];

    pthread_mutex_t keys_lock;
    auth_file_sig keys_sig;
    bool keys_loaded;
    bool keys_shared;     /* the table was read from the shared state (store.backend = postgres) */
    int64_t keys_version; /* its version there (0: the row was absent) */
    void *keys;           /* keys.c's parsed table */

    struct auth_oidc *oidc; /* oidc.c's issuers and keys; NULL when oidc.issuer is empty */
};

#define AUTH_COUNT(ctx, field) __atomic_add_fetch(&(ctx)->stats.field, 1, __ATOMIC_RELAXED)

void auth_keys_release(auth_ctx *ctx);

/* oidc.c: reads the oidc.* keys into ctx->oidc (left NULL when oidc.issuer is empty). */
qr_status auth_oidc_setup(auth_ctx *ctx, const qr_config *cfg, char *err);
void auth_oidc_release(auth_ctx *ctx);
/* Installs keys for issuer number i (in oidc.issuer's order) from a JWKS document, as a fetch
 * would: for tests and the fuzz target, which have no issuer to ask. */
qr_status auth_oidc_load_jwks(auth_ctx *ctx, size_t i, const char *jwks, size_t len, char *err);

#endif
