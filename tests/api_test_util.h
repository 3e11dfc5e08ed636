/*
 * Helpers for the HTTP API's integration tests: a server started in the test process on a free
 * loopback port, with a private data directory, the fixture's slapd and fake inference server
 * (tests/fixtures), and a small libcurl client. Everything goes over real HTTP.
 */
#ifndef QUARRY_API_TEST_UTIL_H
#define QUARRY_API_TEST_UTIL_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "api/api.h"
#include "core/core.h"

typedef struct {
    char dir[256];
    qr_config *cfg;
    api_server *srv;
    char base[128]; /* http://127.0.0.1:PORT */
} api_fixture;

/* The one fixture of a test process (each ctest case is its own process); the destructor below
 * stops it and removes its directory even when a CHECK ended the case early, so fixtures must
 * be static, not on the stack. */
static api_fixture *g_fx;

static inline void api_fx_stop(api_fixture *f)
{
    if (!f)
        return;
    if (f == g_fx)
        g_fx = NULL;
    api_server_free(f->srv);
    f->srv = NULL;
    qr_config_free(f->cfg);
    f->cfg = NULL;
    if (f->dir[0]) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", f->dir);
        f->dir[0] = '\0';
    }
}

__attribute__((destructor)) static void api_fx_atexit(void)
{
    api_fx_stop(g_fx);
}

static inline bool api_fx_set(api_fixture *f, const char *key, const char *value)
{
    char err[QR_ERR_LEN];
    if (qr_config_set(f->cfg, key, value, QR_CFG_SRC_CLI, err)) {
        fprintf(stderr, "config %s: %s\n", key, err);
        return false;
    }
    return true;
}

/* Makes the configuration: the fixture's slapd and fake inference server, administrators in group
 * "ops" (dave, frank), a free port; then "key", "value" pairs (NULL-ended) override. Does not
 * start anything. */
static inline bool api_fx_config(api_fixture *f, va_list ap)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/quarry-api-test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir)) {
        f->dir[0] = '\0';
        return false;
    }
    f->cfg = qr_config_new();
    const char *uri = getenv("QUARRY_TEST_LDAP_URI"), *base = getenv("QUARRY_TEST_LDAP_BASE");
    const char *inf = getenv("QUARRY_TEST_INFERENCE_URL");
    char data[300], people[256], groups[256], infurl[256], access[300];
    snprintf(data, sizeof(data), "%s/data", f->dir);
    snprintf(people, sizeof(people), "ou=people,%s", base ? base : "dc=quarry,dc=test");
    snprintf(groups, sizeof(groups), "ou=groups,%s", base ? base : "dc=quarry,dc=test");
    snprintf(infurl, sizeof(infurl), "%s/v1", inf ? inf : "http://127.0.0.1:9");
    snprintf(access, sizeof(access), "%s/access.log", f->dir);
    bool ok = f->cfg && api_fx_set(f, "data.dir", data) && api_fx_set(f, "server.listen", "127.0.0.1:0") &&
              api_fx_set(f, "server.threads", "2") && api_fx_set(f, "server.workers", "8") &&
              api_fx_set(f, "server.access_log", access) && api_fx_set(f, "auth.admin_groups", "ops") &&
              api_fx_set(f, "inference.base_url", infurl) &&
              api_fx_set(f, "inference.model", "fake-chat-model") &&
              api_fx_set(f, "inference.retries", "0") &&
              api_fx_set(f, "inference.total_timeout_ms", "20000") && api_fx_set(f, "log.level", "warn");
    if (ok && uri)
        ok = api_fx_set(f, "ldap.uri", uri) &&
             api_fx_set(f, "ldap.bind_dn", getenv("QUARRY_TEST_LDAP_BIND_DN")) &&
             api_fx_set(f, "ldap.bind_password", getenv("QUARRY_TEST_LDAP_BIND_PW")) &&
             api_fx_set(f, "ldap.user_base", people) && api_fx_set(f, "ldap.group_base", groups);
    const char *key;
    while (ok && (key = va_arg(ap, const char *)))
        ok = api_fx_set(f, key, va_arg(ap, const char *));
    if (ok) {
        char err[QR_ERR_LEN];
        ok = qr_config_apply_logging(f->cfg, err) == QR_OK;
    }
    return ok;
}

/* Configures and starts a server; NULL-ended "key", "value" pairs override the defaults. */
static inline bool api_fx_start(api_fixture *f, ...)
{
    memset(f, 0, sizeof(*f));
    g_fx = f;
    va_list ap;
    va_start(ap, f);
    bool ok = api_fx_config(f, ap);
    va_end(ap);
    char err[QR_ERR_LEN];
    if (ok && (api_server_new(f->cfg, &f->srv, err) || api_server_start(f->srv, err))) {
        fprintf(stderr, "server: %s\n", err);
        ok = false;
    }
    if (ok)
        snprintf(f->base, sizeof(f->base), "%s", api_server_url(f->srv));
    return ok;
}

/* ---- HTTP client ------------------------------------------------------------------------------ */

typedef struct {
    long status;
    qr_buf body;
    qr_buf headers;
    json_t *json; /* the body parsed, when it is JSON */
} api_resp;

static inline void api_resp_release(api_resp *r)
{
    qr_buf_release(&r->body);
    qr_buf_release(&r->headers);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

static inline size_t api_sink(char *p, size_t size, size_t n, void *user)
{
    return qr_buf_append(user, p, size * n) ? 0 : size * n;
}

/* One request that gives up after timeout_ms. hdrs: NULL-terminated header lines (may be NULL). body
 * may be NULL; its Content-Type is application/json unless a header line gives one. Returns the
 * status (-1: transport error or timeout). */
static inline long api_http_within(const char *base, const char *method, const char *path,
                                   const char *const *hdrs, const char *body, size_t len, long timeout_ms,
                                   api_resp *out)
{
    memset(out, 0, sizeof(*out));
    qr_buf_init(&out->body, 64u << 20);
    qr_buf_init(&out->headers, 1u << 20);
    char url[2048];
    snprintf(url, sizeof(url), "%s%s", base, path);
    CURL *h = curl_easy_init();
    struct curl_slist *list = NULL;
    bool has_type = false;
    for (size_t i = 0; hdrs && hdrs[i]; i++) {
        list = curl_slist_append(list, hdrs[i]);
        has_type = has_type || strncasecmp(hdrs[i], "Content-Type:", 13) == 0;
    }
    if (body && !has_type)
        list = curl_slist_append(list, "Content-Type: application/json");
    list = curl_slist_append(list, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, api_sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &out->body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, api_sink);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &out->headers);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(len ? len : strlen(body)));
    }
    out->status = -1;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(list);
    curl_easy_cleanup(h);
    out->json = json_loadb(qr_buf_str(&out->body), qr_buf_len(&out->body), 0, NULL);
    return out->status;
}

/* api_http_within with a minute. */
static inline long api_http(const char *base, const char *method, const char *path, const char *const *hdrs,
                            const char *body, size_t len, api_resp *out)
{
    return api_http_within(base, method, path, hdrs, body, len, 60000L, out);
}

/* "Authorization: Basic base64(user:password)" into out (at least 512 bytes). */
static inline void api_basic(char *out, size_t len, const char *user, const char *password)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char raw[512];
    int n = snprintf(raw, sizeof(raw), "%s:%s", user, password);
    size_t o = (size_t)snprintf(out, len, "Authorization: Basic ");
    for (int i = 0; i < n && o + 5 < len; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)raw[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)raw[i + 1] << 8;
        if (i + 2 < n)
            v |= (uint32_t)(unsigned char)raw[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

/* The error code of an error body, or "". */
static inline const char *api_error_code(const api_resp *r)
{
    json_t *e = json_object_get(r->json, "error");
    json_t *c = json_object_get(e, "code");
    return json_is_string(c) ? json_string_value(c) : "";
}

/* True when the body is exactly OpenAI's error object,
 * {"error":{"message":string,"type":string,"param":null,"code":string}}. */
static inline bool api_error_shape(const api_resp *r)
{
    json_t *e = json_object_get(r->json, "error");
    return json_is_object(r->json) && json_object_size(r->json) == 1 && json_is_object(e) &&
           json_object_size(e) == 4 && json_is_string(json_object_get(e, "code")) &&
           json_is_string(json_object_get(e, "message")) && json_is_string(json_object_get(e, "type")) &&
           json_is_null(json_object_get(e, "param"));
}

/* The error type of an error body, or "". */
static inline const char *api_error_type_of(const api_resp *r)
{
    json_t *t = json_object_get(json_object_get(r->json, "error"), "type");
    return json_is_string(t) ? json_string_value(t) : "";
}

#endif
