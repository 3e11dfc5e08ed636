/*
 * auth: who the caller is and which principals they hold. LDAP authentication and group
 * resolution, the principal cache, bearer tokens, service API keys and failed-login rate limits
 * live here; only this module sees LDAP handles.
 *
 * A principal is what the rest of quarry knows about a caller: uid, DN, display name, mail, the
 * transitive groups and the ACL principals they grant ("public", "user:<uid>", "group:<name>").
 * Case rules: LDAP compares uid and cn case-insensitively, so the uid and group names in a
 * principal are lower-cased (ASCII letters only; other bytes are kept as the directory spells
 * them) and ACL principals are matched exactly against those lower-cased spellings.
 *
 * Every function here is thread-safe: one auth_ctx serves all of a server's threads. LDAP
 * handles sit in a small pool and are used by one thread at a time; every call that talks to
 * LDAP finishes within ldap.timeout_ms. Failures are closed: an LDAP server that cannot be
 * reached gives QR_EUNAVAILABLE (the API answers 503), never a principal, unless
 * auth.stale_if_error is on and an expired cached principal exists (resolution only: a password
 * is always checked by LDAP). SIGPIPE from a write to an LDAP server that went away is blocked
 * and discarded inside auth's calls, whatever the process's signal settings.
 */
#ifndef QUARRY_AUTH_H
#define QUARRY_AUTH_H

#include "core/core.h"

/* "OpenLDAP 2.5.13": the client library in use at run time. */
const char *auth_ldap_version(void);
/* "3.0.19": the OpenSSL libcrypto in use at run time. */
const char *auth_crypto_version(void);

/* ---- context ------------------------------------------------------------------------------ */

typedef struct auth_ctx auth_ctx;

/* Creates a context from the ldap.*, auth.* and data.dir keys. Nothing is connected or written
 * yet: LDAP connections open on first use, the token secret is read or generated on the first
 * token call. An empty ldap.uri is allowed (tokens and keys work; LDAP calls then fail with
 * QR_EUNAVAILABLE); a set ldap.uri without ldap.user_base is QR_EINVAL. On error *out is NULL. */
qr_status auth_new(const qr_config *cfg, auth_ctx **out, char *err);
/* Closes the connections and frees everything. NULL is a no-op. */
void auth_free(auth_ctx *ctx);

/* ---- principals --------------------------------------------------------------------------- */

/* Immutable and reference-counted: the cache and any number of callers share one. Fields are
 * read-only; release with auth_principal_release. */
typedef struct {
    char *uid;          /* lower-cased; "key:<id>" for a service key acting as itself */
    char *dn;           /* as the directory returned it; "" for a service key */
    char *display_name; /* displayName, else cn, else the uid */
    char *mail;         /* "" when absent */
    char **groups;      /* transitive group names, lower-cased, sorted, unique */
    size_t ngroups;
    char **principals; /* "public", "user:<uid>", "group:<name>"..., sorted */
    size_t nprincipals;
    bool is_admin; /* a member of auth.admin_groups, or a key with the admin scope */
    int refs_;     /* private */
} auth_principal;

/* Takes another reference. */
auth_principal *auth_principal_ref(auth_principal *p);
/* Drops a reference; frees on the last. NULL is a no-op. */
void auth_principal_release(auth_principal *p);
/* True when p holds the ACL principal (e.g. "group:staff"). */
bool auth_principal_has(const auth_principal *p, const char *principal);

/* ---- LDAP ----------------------------------------------------------------------------------- */

/* Checks user/password against LDAP: finds the user's DN with the service account, binds as that
 * DN with the password on a separate connection, then resolves the groups. Lengths are explicit:
 * a name with a NUL byte, invalid UTF-8 or control characters, or longer than 256 bytes, and an
 * empty password are refused before anything is sent (an empty-password simple bind would
 * succeed as an unauthenticated bind). client is the caller's address for the rate limit (NULL:
 * per-user limits only). Failures count against the directory entry the name finds (every
 * spelling LDAP matches to it: "ava ", "AVA", fullwidth "ａｖａ"), against the name as LDAP would
 * compare it (auth_int.h: auth_limit_name), and against the address. The principal's uid is the
 * entry's ldap.uid_attr value, whatever the spelling.
 * Returns QR_OK with *out (release it); QR_EAUTH for any bad credential (unknown user, wrong or
 * empty password: callers cannot tell which); QR_ELIMIT when the name, its entry or the address
 * has too many recent failures (no password is sent then; a name over its limit is refused
 * without asking LDAP, another spelling of a limited entry after the search that finds it);
 * QR_EUNAVAILABLE when LDAP cannot be reached or answered nothing in time. A success refreshes
 * the cache; a failure is never cached. */
qr_status auth_authenticate(auth_ctx *ctx, const char *user, size_t user_len, const char *password,
                            size_t password_len, const char *client, auth_principal **out, char *err);

/* The principal of uid without a password (for tokens and keys acting for a user): from the
 * cache while fresh (ldap.cache_ttl_s), else from LDAP through the service account. The cache is
 * keyed by the directory's uid: another spelling of it ("Bob ", "ｂｏｂ") asks LDAP and gets the
 * same principal, uid included.
 * Returns QR_ENOTFOUND when no such user exists, QR_EUNAVAILABLE as above (or the expired
 * cached principal when auth.stale_if_error is on), QR_EINVAL for a malformed uid. */
qr_status auth_resolve(auth_ctx *ctx, const char *uid, auth_principal **out, char *err);

/* Empties this process's principal cache and tells other quarry processes sharing data.dir (a
 * running server) to empty theirs: it rewrites <data.dir>/auth/flush, which every context
 * checks at most once a second. Returns QR_EIO when the marker cannot be written (this
 * process's cache is emptied anyway). */
qr_status auth_flush(auth_ctx *ctx, char *err);
/* Applies new failed-login limits (auth.rate_limit_user, _addr, _window_s; a reloaded
 * configuration's): the counts so far are kept and judged by the new limits. Any thread. */
void auth_set_rate_limits(auth_ctx *ctx, int per_user, int per_addr, int64_t window_s);
/* The failed-login window in force (auth.rate_limit_window_s, as last set), for Retry-After. */
int64_t auth_rate_limit_window_s(auth_ctx *ctx);

/* ---- bearer tokens -------------------------------------------------------------------------- */

/* A keyed hash of text for one purpose ("audit-query"): 64 hex digits of HMAC-SHA256 under a key
 * derived from the token secret and purpose. Someone without the secret cannot test guesses
 * against it (a plain SHA-256 of a common query is recovered by hashing candidates); whoever
 * holds the secret can (`quarry auth audit-hash`). Same secret and errors as auth_token_issue; any
 * thread. */
#define AUTH_PURPOSE_AUDIT_QUERY "audit-query" /* the audit log's query_hmac */
qr_status auth_keyed_hash(auth_ctx *ctx, const char *purpose, const char *text, size_t len, char out[65],
                          char *err);

/* Issues "qt1.<uid>.<expiry>.<key id>.<HMAC-SHA256>" for uid, valid ttl_s seconds (0:
 * auth.token_ttl_s). The token names the user only: groups are resolved again (through the
 * cache) each time it is used. *token is the caller's to free; *expires_at (may be NULL) gets
 * the expiry in Unix seconds. Fails with QR_EIO/QR_EPERM when the secret cannot be loaded
 * (QR_EUNAVAILABLE when it is generated and PostgreSQL, which then shares it, cannot be reached). */
qr_status auth_token_issue(auth_ctx *ctx, const char *uid, int64_t ttl_s, char **token, int64_t *expires_at,
                           char *err);
/* Checks a token's signature (in constant time), key id and expiry. On QR_OK *uid (free it) is
 * its user and *expires_at (may be NULL) its expiry. Any defect is QR_EAUTH. */
qr_status auth_token_verify(auth_ctx *ctx, const char *token, char **uid, int64_t *expires_at, char *err);
/* auth_token_verify, then auth_resolve of its user. */
qr_status auth_token_principal(auth_ctx *ctx, const char *token, auth_principal **out, char *err);

/* ---- OpenID Connect bearer tokens (oidc.c) ------------------------------------------------- */

/* An access or ID token from an OpenID provider (Entra ID, Keycloak, Okta, ADFS...): a compact
 * JWS signed with RS256, PS256 or ES256 by a key in the issuer's JWKS. The token names the user
 * through oidc.user_claim; the directory finds the entry (oidc.user_filter) and gives the groups,
 * so permissions come from LDAP exactly as for a password. */

/* What a token said, as far as it was read (for `quarry auth whoami`, the audit log and
 * messages); empty strings where it did not get that far. Never holds the token itself. */
typedef struct {
    char issuer[512];
    char alg[16];
    char kid[128];
    char claim[64];     /* oidc.user_claim */
    char subject[257];  /* the claim's value */
    int64_t expires_at; /* exp, Unix seconds; 0 when unknown */
} auth_oidc_info;

/* True when oidc.issuer is set. */
bool auth_oidc_enabled(const auth_ctx *ctx);
/* True when cred has the shape of a compact JWS/JWE ("eyJ...", dots): the bearer credential
 * then goes to auth_oidc_principal rather than quarry's own token check. */
bool auth_oidc_looks_like(const char *cred);
/* Checks a token without asking the directory: size (oidc.max_token_bytes), shape, header (alg
 * RS256/PS256/ES256 only; no crit), issuer (exactly one of oidc.issuer), signature with the
 * issuer's key (kid; its kty, curve, size, use and alg must fit the token's alg), exp/nbf/iat
 * within oidc.clock_skew_s, aud, oidc.required_scope and the user claim. The issuer's keys are
 * fetched on first use (discovery unless oidc.jwks_url), again when older than
 * oidc.jwks_max_age_s and when a token names an unknown kid, at most once per
 * oidc.jwks_min_refresh_s; while the issuer cannot be reached the keys already known serve.
 * QR_EAUTH for any defect (err says which, without the token); QR_EUNAVAILABLE when no key could
 * be fetched for the issuer; QR_EINVAL when OIDC is not configured. info (may be NULL) is filled
 * as far as the token was read. Any thread. */
qr_status auth_oidc_verify(auth_ctx *ctx, const char *token, auth_oidc_info *info, char *err);
/* auth_oidc_verify, then the directory entry oidc.user_filter finds for the claim and its groups
 * (cached like auth_resolve). QR_ENOTFOUND when the directory has no such single entry (never a
 * public principal), QR_EUNAVAILABLE when LDAP cannot answer (or, with auth.stale_if_error, the
 * expired cached principal). */
qr_status auth_oidc_principal(auth_ctx *ctx, const char *token, auth_oidc_info *info, auth_principal **out,
                              char *err);

/* ---- service API keys ----------------------------------------------------------------------- */

enum {
    AUTH_SCOPE_SEARCH = 1u << 0,
    AUTH_SCOPE_CHAT = 1u << 1,
    AUTH_SCOPE_ADMIN = 1u << 2,
    AUTH_SCOPE_ON_BEHALF_OF = 1u << 3,
    AUTH_SCOPE_ALL = (1u << 4) - 1,
};

/* Parses "search,chat,admin,on_behalf_of" (any subset, comma-separated) into a scope mask. */
qr_status auth_scopes_parse(const char *text, unsigned *scopes, char *err);
/* Writes the scope names, comma-separated, into out (at least 64 bytes). */
void auth_scopes_format(unsigned scopes, char *out, size_t len);

#define AUTH_KEY_ID_LEN 16 /* hex characters */

typedef struct {
    char id[AUTH_KEY_ID_LEN + 1];
    char *name;
    unsigned scopes;
    int64_t created_ms;
    int64_t revoked_ms; /* 0 while active */
} auth_key_info;

/* Creates a key with a 256-bit random secret and stores only its SHA-256 in
 * <data.dir>/auth/keys.json (mode 0600, replaced atomically), or, with store.backend = postgres,
 * in PostgreSQL, shared by every node (QR_EUNAVAILABLE, nothing created, when it cannot be
 * reached). *key (free it) is the only copy of the key: "qk_<id>_<secret>". info (may be NULL)
 * gets the new entry (auth_key_info_release). */
qr_status auth_key_create(auth_ctx *ctx, const char *name, unsigned scopes, char **key, auth_key_info *info,
                          char *err);
/* Every key, revoked ones included, oldest first. Free with auth_key_list_free. */
qr_status auth_key_list(auth_ctx *ctx, auth_key_info **keys, size_t *count, char *err);
void auth_key_list_free(auth_key_info *keys, size_t count);
void auth_key_info_release(auth_key_info *info);
/* Marks the key revoked; it stops working at once in every process (keys.json is re-read when
 * it changes) and, with store.backend = postgres, on every node. QR_ENOTFOUND for an unknown id;
 * revoking twice is QR_OK. */
qr_status auth_key_revoke(auth_ctx *ctx, const char *id, char *err);
/* Checks a presented key. QR_EAUTH for a malformed, unknown or revoked key; QR_EUNAVAILABLE with
 * store.backend = postgres when PostgreSQL cannot be asked whether the keys changed. On QR_OK,
 * info (may be NULL) describes it (auth_key_info_release). */
qr_status auth_key_verify(auth_ctx *ctx, const char *key, auth_key_info *info, char *err);
/* The principal a request with this key acts as. The key must hold every scope in `required`
 * (QR_EPERM otherwise). With on_behalf_of (a uid) the key needs the on_behalf_of scope and the
 * result is that user's principal (auth_resolve), an administrator only when the key has the
 * admin scope too (else a copy with is_admin false: the user's groups and ACL principals, not
 * the right to read everything). Without it the key acts as itself: uid "key:<id>", ACL
 * principals {"public"}, is_admin when it has the admin scope. */
qr_status auth_key_principal(auth_ctx *ctx, const char *key, const char *on_behalf_of, unsigned required,
                             auth_principal **out, char *err);

/* ---- counters ------------------------------------------------------------------------------- */

typedef struct {
    uint64_t connects;       /* LDAP connections opened */
    uint64_t binds;          /* simple binds sent (service account and users) */
    uint64_t searches;       /* searches sent */
    uint64_t cache_hits;     /* resolutions served fresh from the cache */
    uint64_t cache_misses;   /* resolutions that went to LDAP */
    uint64_t stale_served;   /* expired principals served under auth.stale_if_error */
    uint64_t login_failures; /* rejected credentials (bad, empty or unknown) */
    uint64_t rate_limited;   /* logins refused by the failed-login limit */
} auth_stats;

void auth_get_stats(auth_ctx *ctx, auth_stats *out);

#endif
