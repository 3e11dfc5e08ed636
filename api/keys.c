/*
 * Administrators' routes for service API keys and the audit log: list, create and revoke keys
 * (auth/keys.c keeps them; only a key's SHA-256 is stored, so the secret is shown once, in the
 * answer that creates it) and read the audit log's latest records. Keys are created only by an
 * administrator signed in as a person: a key, even one with the admin scope, could otherwise mint
 * keys with scopes it lacks, and a leaked key could make itself permanent. Listing and revoking
 * are open to admin-scoped keys too, so that a leaked key can be revoked by automation.
 */
#define _GNU_SOURCE /* asprintf, memmem, strptime, timegm, explicit_bzero */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api_int.h"

#define KEY_NAME_MAX  128
#define AUDIT_DEFAULT 100
#define AUDIT_MAX     500

static json_t *iso_ms(int64_t ms)
{
    char buf[96];
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return json_string(buf);
}

static json_t *scope_list(unsigned scopes)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{AUTH_SCOPE_SEARCH, "search"},
                 {AUTH_SCOPE_CHAT, "chat"},
                 {AUTH_SCOPE_ADMIN, "admin"},
                 {AUTH_SCOPE_ON_BEHALF_OF, "on_behalf_of"}};
    json_t *a = json_array();
    for (size_t i = 0; a && i < sizeof(names) / sizeof(names[0]); i++)
        if (scopes & names[i].bit)
            json_array_append_new(a, json_string(names[i].name));
    return a;
}

/* A key as the routes show it: never its secret or hash (auth_key_info holds neither). */
static json_t *key_json(const auth_key_info *k)
{
    return json_pack("{s:s,s:s,s:o,s:o,s:o}", "id", k->id, "name", k->name, "scopes", scope_list(k->scopes),
                     "created_at", iso_ms(k->created_ms), "revoked_at",
                     k->revoked_ms ? iso_ms(k->revoked_ms) : json_null());
}

void api_h_key_list(api_req *r)
{
    char err[QR_ERR_LEN];
    auth_key_info *keys = NULL;
    size_t n = 0;
    qr_status st = auth_key_list(r->srv->auth, &keys, &n, err);
    if (st) {
        api_reply_status(r, st, err);
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; data && i < n; i++)
        json_array_append_new(data, key_json(&keys[i]));
    auth_key_list_free(keys, n);
    api_reply_json(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

/* The name: 1 to KEY_NAME_MAX bytes of UTF-8 without control characters. */
static bool key_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > KEY_NAME_MAX || !qr_utf8_valid(name, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return false;
    return true;
}

/* The scopes: a non-empty list of known scope names. On failure err names the bad one. */
static qr_status scopes_from_json(json_t *list, unsigned *scopes, char *err)
{
    *scopes = 0;
    if (!json_is_array(list) || json_array_size(list) == 0)
        return qr_fail(err, QR_EINVAL,
                       "'scopes' must be a non-empty list of scopes (search, chat, admin, on_behalf_of)");
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *s = json_array_get(list, i);
        unsigned one = 0;
        const char *text = json_is_string(s) ? json_string_value(s) : NULL;
        /* one name per item: "search,chat" would otherwise pass the comma-separated parser */
        if (!text || strlen(text) != json_string_length(s) || strchr(text, ',') ||
            auth_scopes_parse(text, &one, NULL))
            return qr_fail(err, QR_EINVAL,
                           "scopes[%zu] %s%.64s%s is not a scope (search, chat, admin, on_behalf_of)", i,
                           text ? "'" : "", text ? text : "(not a string)", text ? "'" : "");
        *scopes |= one;
    }
    return QR_OK;
}

void api_h_key_create(api_req *r)
{
    char err[QR_ERR_LEN];
    if (r->by_key || *r->key_id) {
        api_reply_error(r, 403, "permission_denied",
                        "keys are created by an administrator signed in as a person");
        return;
    }
    json_t *req = api_json_body(r);
    if (!req)
        return;
    char *key = NULL;
    auth_key_info info;
    memset(&info, 0, sizeof(info));
    const char *name;
    unsigned scopes = 0;
    if (!api_get_str(req, "name", &name, KEY_NAME_MAX, true, err)) {
        api_reply_error_param(r, 400, "invalid_argument", "name", "%s", err);
        goto out;
    }
    if (!key_name_ok(name)) {
        api_reply_error_param(r, 400, "invalid_argument", "name",
                              "'name' must be 1 to %d bytes of text without control characters",
                              KEY_NAME_MAX);
        goto out;
    }
    if (scopes_from_json(json_object_get(req, "scopes"), &scopes, err)) {
        api_reply_error_param(r, 400, "invalid_argument", "scopes", "%s", err);
        goto out;
    }
    qr_status st = auth_key_create(r->srv->auth, name, scopes, &key, &info, err);
    if (st) {
        api_reply_status(r, st, err);
        goto out;
    }
    const char *ids[] = {info.id};
    api_audit_record(r->srv->audit, r, NULL, ids, 1, "key_create");
    json_t *body = key_json(&info);
    json_object_del(body, "revoked_at");
    json_object_set_new(body, "key", json_string(key));
    api_reply_json(r, 201, body);
out:
    if (key) {
        explicit_bzero(key, strlen(key));
        free(key);
    }
    auth_key_info_release(&info);
    json_decref(req);
}

void api_h_key_revoke(api_req *r)
{
    char err[QR_ERR_LEN];
    qr_status st = auth_key_revoke(r->srv->auth, r->param, err);
    if (st) {
        api_reply_status(r, st, err);
        return;
    }
    const char *ids[] = {r->param};
    api_audit_record(r->srv->audit, r, NULL, ids, 1, "key_revoke");
    api_reply_json(r, 200, json_pack("{s:s,s:b}", "id", r->param, "revoked", 1));
}

void api_h_audit_list(api_req *r)
{
    char err[QR_ERR_LEN];
    bool bad = false;
    char *limit_arg = api_query_arg(r, "limit", &bad);
    long limit = AUDIT_DEFAULT;
    if (bad) {
        api_reply_error(r, 400, "invalid_argument", "malformed query string");
        goto out;
    }
    if (limit_arg) {
        char *end;
        limit = strtol(limit_arg, &end, 10);
        if (!*limit_arg || *end || limit < 1 || limit > AUDIT_MAX) {
            api_reply_error_param(r, 400, "invalid_argument", "limit",
                                  "'limit' must be an integer from 1 to %d", AUDIT_MAX);
            goto out;
        }
    }
    if (!r->srv->audit) {
        api_reply_error(r, 404, "not_found", "the audit log is off (server.audit_log=off)");
        goto out;
    }
    json_t *data = NULL;
    qr_status st = api_audit_tail(r->srv->audit, (size_t)limit, &data, err);
    if (st) {
        api_reply_status(r, st, err);
        goto out;
    }
    api_reply_json(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
out:
    free(limit_arg);
}
