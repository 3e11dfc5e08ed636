/*
 * The route table and the small routes: health, readiness, who am I, tokens and the model list.
 * The table is the single source of truth for what the server answers: the dispatcher matches
 * against it, the OpenAPI document is checked against it, and its pattern strings label the
 * metrics. Paths are matched still percent-encoded and decoded here, so that an id may contain
 * an encoded slash (or a plain one: {param} is greedy) but never an encoded NUL or control byte.
 */
#define _GNU_SOURCE /* asprintf, memmem, strptime, timegm, explicit_bzero */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"
#include "retrieval/retrieval.h"

const api_route api_route_table[] = {
    {"GET", "/healthz", API_ACCESS_PUBLIC, 0, API_BODY_SMALL, true, api_h_healthz},
    {"GET", "/readyz", API_ACCESS_PUBLIC, 0, API_BODY_SMALL, false, api_h_readyz},
    {"GET", "/metrics", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_SMALL, false, api_h_metrics},
    {"GET", "/openapi.json", API_ACCESS_PUBLIC, 0, API_BODY_SMALL, true, api_h_openapi},
    {"POST", "/v1/auth/token", API_ACCESS_PUBLIC, 0, API_BODY_SMALL, false, api_h_token},
    {"GET", "/v1/me", API_ACCESS_USER, 0, API_BODY_SMALL, false, api_h_me},
    {"GET", "/v1/models", API_ACCESS_USER, AUTH_SCOPE_CHAT, API_BODY_SMALL, false, api_h_models},
    {"GET", "/v1/models/{id}", API_ACCESS_USER, AUTH_SCOPE_CHAT, API_BODY_SMALL, false, api_h_model_get},
    {"POST", "/v1/chat/completions", API_ACCESS_USER, AUTH_SCOPE_CHAT, API_BODY_JSON, false, api_h_chat},
    {"POST", "/v1/search", API_ACCESS_USER, AUTH_SCOPE_SEARCH, API_BODY_JSON, false, api_h_search},
    {"POST", "/v1/ask", API_ACCESS_USER, AUTH_SCOPE_CHAT, API_BODY_JSON, false, api_h_ask},
    {"POST", "/v1/documents", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_UPLOAD, false, api_h_doc_create},
    {"GET", "/v1/documents", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_SMALL, false, api_h_doc_list},
    {"PATCH", "/v1/documents/{id}/acl", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_JSON, false,
     api_h_doc_acl},
    {"GET", "/v1/documents/{id}", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_SMALL, false, api_h_doc_get},
    {"PUT", "/v1/documents/{id}", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_UPLOAD, false, api_h_doc_put},
    {"DELETE", "/v1/documents/{id}", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_SMALL, false,
     api_h_doc_delete},
    {"POST", "/v1/index/rebuild", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_SMALL, false, api_h_rebuild},
    {"GET", "/v1/jobs", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_SMALL, false, api_h_job_list},
    {"GET", "/v1/jobs/{id}", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_SMALL, false, api_h_job_get},
    {"GET", "/v1/keys", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_SMALL, false, api_h_key_list},
    {"POST", "/v1/keys", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_JSON, false, api_h_key_create},
    {"DELETE", "/v1/keys/{id}", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_SMALL, false, api_h_key_revoke},
    {"GET", "/v1/audit", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_SMALL, false, api_h_audit_list},
    {"GET", "/v1/status", API_ACCESS_ADMIN, AUTH_SCOPE_ADMIN, API_BODY_SMALL, false, api_h_status},
};
const size_t api_route_count = sizeof(api_route_table) / sizeof(api_route_table[0]);

static api_route_info route_info[sizeof(api_route_table) / sizeof(api_route_table[0])];

static void fill_route_info(void)
{
    for (size_t i = 0; i < api_route_count; i++)
        route_info[i] = (api_route_info){api_route_table[i].method, api_route_table[i].pattern};
}

const api_route_info *api_routes(size_t *count)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fill_route_info);
    *count = api_route_count;
    return route_info;
}

/* Does path match pattern? On a match with a {param}, *param_start/len locate it in path. */
static bool path_matches(const char *pattern, const char *path, size_t *pstart, size_t *plen)
{
    const char *open = strchr(pattern, '{');
    *plen = 0;
    if (!open)
        return strcmp(pattern, path) == 0;
    const char *close = strchr(open, '}');
    size_t prefix = (size_t)(open - pattern);
    const char *suffix = close + 1;
    size_t slen = strlen(suffix), n = strlen(path);
    if (n < prefix + slen + 1 || strncmp(path, pattern, prefix) != 0 || strcmp(path + n - slen, suffix) != 0)
        return false;
    *pstart = prefix;
    *plen = n - prefix - slen;
    return true;
}

api_match api_route_find(const char *method, const char *raw_path, size_t *index, char **param)
{
    *param = NULL;
    bool path_known = false;
    for (size_t i = 0; i < api_route_count; i++) {
        size_t start = 0, len = 0;
        if (!path_matches(api_route_table[i].pattern, raw_path, &start, &len))
            continue;
        path_known = true;
        if (strcmp(api_route_table[i].method, method) != 0)
            continue;
        if (len) {
            if (!(*param = api_url_decode(raw_path + start, len, false)))
                return API_MATCH_BAD_ESCAPE;
        }
        *index = i;
        return API_MATCH_OK;
    }
    return path_known ? API_MATCH_BAD_METHOD : API_MATCH_NOT_FOUND;
}

api_match api_route_methods(const char *raw_path, char *out, size_t len)
{
    size_t o = 0;
    if (len)
        out[0] = '\0';
    for (size_t i = 0; i < api_route_count; i++) {
        size_t start = 0, plen = 0;
        if (!path_matches(api_route_table[i].pattern, raw_path, &start, &plen))
            continue;
        if (plen) {
            char *param = api_url_decode(raw_path + start, plen, false);
            if (!param)
                return API_MATCH_BAD_ESCAPE;
            free(param);
        }
        const char *m = api_route_table[i].method;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            size_t s2 = 0, l2 = 0;
            seen = strcmp(api_route_table[j].method, m) == 0 &&
                   path_matches(api_route_table[j].pattern, raw_path, &s2, &l2);
        }
        if (!seen && o < len)
            o += (size_t)snprintf(out + o, len - o, "%s%s", o ? ", " : "", m);
    }
    return o ? API_MATCH_OK : API_MATCH_NOT_FOUND;
}

/* ---- small routes ----------------------------------------------------------------------------- */

void api_h_healthz(api_req *r)
{
    api_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

/* LDAP answers when a lookup of a user nobody has comes back "not found" rather than
 * "unavailable". Not-found results are never cached by auth, so this really asks the server; the
 * answer is kept API_PROBE_LDAP_NS here, and while one probe asks, the others take the last
 * answer: /readyz needs no credentials, and probes must not be a way to hammer the directory. */
static const char *ldap_state(api_server *srv)
{
    if (!*qr_config_settings(srv->cfg)->ldap_uri)
        return "not_configured";
    uint64_t now = qr_now_ns();
    pthread_mutex_lock(&srv->probe_lock);
    bool fresh = srv->ldap_probe_ns && now - srv->ldap_probe_ns < API_PROBE_LDAP_NS;
    bool ask = !fresh && !srv->ldap_probing;
    /* none known yet (the first probe still asking): not ready */
    const char *known = srv->ldap_probe_ns && srv->ldap_probe_ok ? "ok" : "unreachable";
    if (ask)
        srv->ldap_probing = true;
    pthread_mutex_unlock(&srv->probe_lock);
    if (!ask)
        return known;
    auth_principal *p = NULL;
    char err[QR_ERR_LEN];
    qr_status st = auth_resolve(srv->auth, "quarry-readiness-probe", &p, err);
    auth_principal_release(p);
    pthread_mutex_lock(&srv->probe_lock);
    srv->ldap_probing = false;
    srv->ldap_probe_ok = st != QR_EUNAVAILABLE;
    srv->ldap_probe_ns = qr_now_ns();
    pthread_mutex_unlock(&srv->probe_lock);
    return st == QR_EUNAVAILABLE ? "unreachable" : "ok";
}

/* The readiness checks: the body /v1/status answers (counts with `counts`), and whether the
 * server is ready; *ldap_ok says whether LDAP answered (or is not configured). */
static json_t *readiness(api_server *srv, bool counts, bool *ready_out, bool *ldap_ok)
{
    char err[QR_ERR_LEN];
    store_stats stats;
    memset(&stats, 0, sizeof(stats));
    /* the public probe only asks whether the store answers (one indexed read); the counts, a scan
     * of every document, are for the administrators' view: an anonymous caller must not be able
     * to make a probe expensive */
    store *s = api_store_acquire(srv);
    qr_status st =
        counts ? store_get_stats(s, &stats, err) : store_change_counter(s, &stats.change_counter, err);
    api_store_release(srv, s);
    const char *ldap = ldap_state(srv);
    *ldap_ok = strcmp(ldap, "unreachable") != 0;
    /* the maintainer opens the indexes in the background: until then searches rank with FTS5
     * (ready), unless its first pass failed or the store has no vectors yet (not ready). A vector
     * index the maintainer keeps failing to update serves stale results: not ready either. BM25
     * failing is shown but not fatal: FTS5 ranks correctly meanwhile. */
    vindex *v = index_maintainer_vindex(api_service_maintainer(srv->svc));
    index_maintainer_status ms;
    index_maintainer_get_status(api_service_maintainer(srv->svc), &ms);
    vindex_info vi;
    memset(&vi, 0, sizeof(vi));
    if (v)
        vindex_get_info(v, &vi);
    bool vector_failing = ms.vector_failures >= INDEX_MAINTAINER_FAILING_PASSES;
    bool bm25_failing = ms.bm25_failures >= INDEX_MAINTAINER_FAILING_PASSES;
    const char *index = !retrieval_available() ? "not_loaded"
                        : v && vector_failing  ? "failing"
                        : v                    ? "ok"
                        : !ms.first_pass_done  ? "warming"
                                               : "not_loaded";
    /* store.backend = postgres: a node cut from its system of record, or behind it longer than
     * store.max_lag_ms, is not ready (its searches would wait for the fence or fail closed) */
    const char *feed = !ms.following ? "off"
                       : ms.feed_behind_ms > (uint64_t)qr_config_settings(srv->cfg)->store_max_lag_ms
                           ? (ms.feed_ok ? "behind" : "unreachable")
                           : "ok";
    bool ready = *ready_out = !st && strcmp(index, "not_loaded") != 0 && strcmp(index, "failing") != 0 &&
                              strcmp(ldap, "ok") == 0 &&
                              (strcmp(feed, "off") == 0 || strcmp(feed, "ok") == 0);
    json_t *body = json_pack("{s:s,s:{s:s,s:s,s:s,s:s}}", "status", ready ? "ready" : "not_ready", "checks",
                             "store", st ? "error" : "ok", "index", index, "ldap", ldap, "feed", feed);
    if (body) {
        json_t *checks = json_object_get(body, "checks");
        bool bm25_open = index_maintainer_bm25(api_service_maintainer(srv->svc)) != NULL;
        const char *bm25 = !api_service_retrieval_opts(srv->svc)->bm25_pruned ? "off"
                           : bm25_failing                                     ? "failing"
                           : bm25_open                                        ? "warm"
                           : !ms.first_pass_done || ms.busy                   ? "building"
                                                                              : "unavailable";
        const char *vector = v && vector_failing  ? "failing"
                             : v && vi.generation ? "warm"
                             : v                  ? "exact" /* every vector scanned until the first build */
                             : !ms.first_pass_done || ms.busy ? "building"
                                                              : "none";
        json_object_set_new(checks, "indexes",
                            json_pack("{s:s,s:s,s:b,s:I,s:I,s:I,s:I}", "bm25", bm25, "vector", vector,
                                      "maintainer_busy", ms.busy, "visible_change", (json_int_t)ms.visible,
                                      "vector_failed_passes", (json_int_t)ms.vector_failures,
                                      "bm25_failed_passes", (json_int_t)ms.bm25_failures, "vectors_skipped",
                                      (json_int_t)vi.skipped));
    }
    if (body && counts && !st && stats.fts_applied >= 0)
        /* the administrators' view: how many changes the full-text index has yet to apply (0 but
         * for a moment after each write, or after its update failed: the log says why) */
        json_object_set_new(json_object_get(json_object_get(body, "checks"), "indexes"), "fulltext_behind",
                            json_integer((json_int_t)(stats.change_counter - stats.fts_applied)));
    if (body && counts && ms.following) {
        json_t *checks = json_object_get(body, "checks");
        json_object_set_new(checks, "feed_detail",
                            json_pack("{s:I,s:I,s:I,s:I,s:s}", "counter", (json_int_t)ms.feed_counter,
                                      "primary", (json_int_t)ms.feed_primary, "behind_ms",
                                      (json_int_t)ms.feed_behind_ms, "last_lag_ms",
                                      (json_int_t)ms.feed_lag_last_ms, "error", ms.feed_error));
    }
    /* how much is stored is the administrators' business, not every employee's */
    if (body && !st && counts) {
        json_t *checks = json_object_get(body, "checks");
        json_object_set_new(checks, "documents", json_integer(stats.documents));
        json_object_set_new(checks, "chunks", json_integer(stats.chunks));
        json_object_set_new(checks, "index_generation", json_integer((json_int_t)vi.generation));
        json_object_set_new(checks, "index_vectors", json_integer((json_int_t)(vi.count + vi.delta)));
        json_object_set_new(checks, "search_default",
                            api_search_default(api_service_retrieval_opts(srv->svc)));
    }
    return body;
}

bool api_ready(api_server *srv, bool *ldap_ok)
{
    bool ready = false;
    json_decref(readiness(srv, false, &ready, ldap_ok));
    return ready;
}

void api_h_readyz(api_req *r)
{
    bool ready = false, ldap_ok = false;
    json_decref(readiness(r->srv, false, &ready, &ldap_ok));
    api_reply_json(r, ready ? 200 : 503, json_pack("{s:s}", "status", ready ? "ok" : "unavailable"));
}

void api_h_status(api_req *r)
{
    bool ready = false, ldap_ok = false;
    json_t *body = readiness(r->srv, r->principal && r->principal->is_admin, &ready, &ldap_ok);
    api_reply_json(r, ready ? 200 : 503, body);
}

static json_t *string_array(char **items, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(items[i]));
    return a;
}

void api_h_me(api_req *r)
{
    const auth_principal *p = r->principal;
    json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:b,s:s}", "uid", p->uid, "dn", p->dn, "display_name",
                             p->display_name, "mail", p->mail, "groups", string_array(p->groups, p->ngroups),
                             "principals", string_array(p->principals, p->nprincipals), "is_admin",
                             p->is_admin, "via", r->by_key ? "api_key" : "user");
    api_reply_json(r, 200, body);
}

void api_h_token(api_req *r)
{
    api_server *srv = r->srv;
    char err[QR_ERR_LEN] = "";
    const char *authz = api_header(r, "Authorization");
    auth_principal *p = NULL;
    json_t *req = NULL;
    qr_status st;
    if (authz && strncasecmp(authz, "Basic ", 6) == 0) {
        const char *b64 = authz + 6;
        while (*b64 == ' ')
            b64++;
        size_t len = 0;
        unsigned char *raw = strlen(b64) <= 8192 ? api_base64_decode(b64, strcspn(b64, " \t"), &len) : NULL;
        char *colon = raw ? memchr(raw, ':', len) : NULL;
        if (!colon) {
            st = qr_fail(err, QR_EAUTH, "malformed Basic credentials");
        } else {
            size_t ulen = (size_t)(colon - (char *)raw);
            st = auth_authenticate(srv->auth, (char *)raw, ulen, colon + 1, len - ulen - 1, r->client, &p,
                                   err);
        }
        if (raw)
            explicit_bzero(raw, len);
        free(raw);
    } else {
        if (!(req = api_json_body(r)))
            return;
        const char *user, *password;
        if (!api_get_str(req, "username", &user, 256, true, err) ||
            !api_get_str(req, "password", &password, 4096, true, err)) {
            api_reply_error(r, 400, "invalid_argument", "%s (or send HTTP Basic credentials)", err);
            json_decref(req);
            return;
        }
        st = auth_authenticate(srv->auth, user, strlen(user), password, strlen(password), r->client, &p, err);
        /* the password is done with: do not leave it in freed memory */
        explicit_bzero((char *)password, strlen(password));
        explicit_bzero((char *)qr_buf_str(&r->body), qr_buf_len(&r->body));
    }
    json_decref(req);
    if (st) {
        if (st == QR_ELIMIT) {
            char secs[32];
            snprintf(secs, sizeof(secs), "%lld", (long long)auth_rate_limit_window_s(srv->auth));
            api_reply_error(r, 429, "rate_limited", "%s", err);
            api_reply_header(r, "Retry-After", secs);
        } else if (st == QR_EUNAVAILABLE) {
            api_reply_error(r, 503, "unavailable", "cannot check credentials: %s", err);
        } else if (st == QR_EAUTH || st == QR_EINVAL) {
            api_reply_error(r, 401, "unauthenticated", "%s", err);
        } else {
            api_reply_status(r, st, err);
        }
        return;
    }
    snprintf(r->user, sizeof(r->user), "%s", p->uid);
    char *token = NULL;
    int64_t expires = 0;
    st = auth_token_issue(srv->auth, p->uid, 0, &token, &expires, err);
    if (st) {
        auth_principal_release(p);
        api_reply_status(r, st, err);
        return;
    }
    int64_t ttl = expires - qr_wall_ms() / 1000;
    api_reply_json(r, 200,
                   json_pack("{s:s,s:s,s:I,s:I,s:s}", "access_token", token, "token_type", "Bearer",
                             "expires_in", (json_int_t)(ttl > 0 ? ttl : 0), "expires_at", (json_int_t)expires,
                             "uid", p->uid));
    explicit_bzero(token, strlen(token));
    free(token);
    auth_principal_release(p);
}

qr_status api_models_parse(const char *list, char out[][API_MODEL_ID_MAX + 1], size_t *n, char *err)
{
    *n = 0;
    const char *p = list ? list : "";
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t len = strcspn(p, ",");
        size_t end = len;
        while (end && (p[end - 1] == ' ' || p[end - 1] == '\t'))
            end--;
        if (end == 0 && !p[len] && *n > 0)
            break; /* a trailing comma */
        if (end == 0 || end > API_MODEL_ID_MAX ||
            strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789-_.:/@") < end) {
            *n = 0;
            return qr_fail(err, QR_EINVAL,
                           "inference.models: '%.*s' is not a model id (1 to %d bytes of letters, digits and "
                           "-_.:/@, comma-separated)",
                           (int)(end > 64 ? 64 : end), p, API_MODEL_ID_MAX);
        }
        for (size_t i = 0; i < *n; i++)
            if (strlen(out[i]) == end && strncmp(out[i], p, end) == 0) {
                *n = 0;
                return qr_fail(err, QR_EINVAL, "inference.models: '%.*s' is listed twice", (int)end, p);
            }
        if (*n == API_MODELS_MAX) {
            *n = 0;
            return qr_fail(err, QR_EINVAL, "inference.models: more than %d ids", API_MODELS_MAX);
        }
        memcpy(out[*n], p, end);
        out[(*n)++][end] = '\0';
        if (!p[len])
            break;
        p += len + 1;
    }
    return QR_OK;
}

bool api_model_served(const api_server *srv, const char *id)
{
    for (size_t i = 0; id && i < srv->nmodels; i++)
        if (strcmp(srv->models[i], id) == 0)
            return true;
    return false;
}

bool api_route_openai(const api_route *route)
{
    return route && (route->handler == api_h_chat || route->handler == api_h_models ||
                     route->handler == api_h_model_get);
}

static json_t *model_json(const api_server *srv, const char *id)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", id, "object", "model", "created",
                     (json_int_t)(srv->started_ms / 1000), "owned_by", "quarry");
}

void api_h_models(api_req *r)
{
    api_server *srv = r->srv;
    json_t *data = json_array();
    for (size_t i = 0; data && i < srv->nmodels; i++)
        json_array_append_new(data, model_json(srv, srv->models[i]));
    api_reply_json(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

void api_h_model_get(api_req *r)
{
    if (!api_model_served(r->srv, r->param)) {
        /* OpenAI's answer for a model it does not have: 404, but an invalid request, not a route */
        api_reply_error_param(r, 404, "model_not_found", "model",
                              "the model '%.128s' does not exist (GET /v1/models lists the models served)",
                              r->param ? r->param : "");
        return;
    }
    api_reply_json(r, 200, model_json(r->srv, r->param));
}
