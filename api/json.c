/*
 * JSON in and out over HTTP: the request body as one JSON object (its Content-Type checked, then
 * parsed within the limits by request.c), and the answers: JSON bodies, and errors in the one
 * shape every route uses, OpenAI's error object {"error":{"message","type","param","code"}}, so
 * that one client-side handler reads them all: the code a stable snake_case word (qr_status_name
 * where a status fits), the type OpenAI's word for the HTTP status that goes with it, and param
 * the offending field where the route knows one (the OpenAI-compatible routes always say; other
 * routes leave it null and name the field in the message). On the OpenAI-compatible routes the
 * codes with an OpenAI equivalent use it (invalid_api_key, rate_limit_exceeded).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"

json_t *api_json_body(api_req *r)
{
    const char *ct = api_header(r, "Content-Type");
    if (ct) {
        size_t n = strcspn(ct, ";");
        while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
            n--;
        bool json = (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
                    (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
        if (!json) {
            api_reply_error(r, 415, "unsupported_media_type",
                            "expected Content-Type: application/json, got '%.*s'", (int)(n > 100 ? 100 : n),
                            ct);
            return NULL;
        }
    }
    if (qr_buf_len(&r->body) == 0) {
        api_reply_error(r, 400, "invalid_argument", "the request needs a JSON object body");
        return NULL;
    }
    char err[QR_ERR_LEN];
    json_t *v = api_json_parse(qr_buf_str(&r->body), qr_buf_len(&r->body), r->srv->set.json_max_depth, err);
    if (!v) {
        bool deep = strstr(err, "nested deeper") != NULL;
        api_reply_error(r, deep ? 413 : 400, deep ? "limit_exceeded" : "invalid_json", "%s", err);
    }
    return v;
}

int api_http_status(qr_status st)
{
    switch (st) {
    case QR_OK: return 200;
    case QR_EINVAL: return 400;
    case QR_EAUTH: return 401;
    case QR_EPERM: return 403;
    case QR_ENOTFOUND: return 404;
    case QR_EEXIST: return 409;
    case QR_ELIMIT: return 413;
    case QR_ENOTIMPL: return 501;
    case QR_EUNAVAILABLE:
    case QR_ECANCELED: return 503;
    case QR_ETIMEOUT: return 504;
    case QR_ENOSPC: return 507;
    case QR_ENOMEM:
    case QR_EIO:
    case QR_EINTERNAL: return 500;
    }
    return 500;
}

const char *api_error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    default: return status >= 400 && status < 500 ? "invalid_request_error" : "server_error";
    }
}

/* Sets the answer (any thread that owns the request's answer: the MHD thread before dispatch, the
 * worker after). */
static void set_response(api_req *r, int status, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    pthread_mutex_lock(&r->lock);
    struct MHD_Response *old = r->response;
    r->response = resp;
    r->status = status;
    r->bytes_out = 0;
    pthread_mutex_unlock(&r->lock);
    if (old)
        MHD_destroy_response(old);
}

void api_reply_raw(api_req *r, int status, const char *content_type, const char *data, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return; /* the caller's guard answers 500 */
    if (content_type)
        MHD_add_response_header(resp, "Content-Type", content_type);
    set_response(r, status, resp);
    r->bytes_out = len;
}

void api_reply_static(api_req *r, int status, const char *content_type, const char *data, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return; /* the caller's guard answers 500 */
    if (content_type)
        MHD_add_response_header(resp, "Content-Type", content_type);
    set_response(r, status, resp);
    r->bytes_out = len;
}

void api_reply_json(api_req *r, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] =
            "{\"error\":{\"message\":\"cannot encode the answer\",\"type\":\"server_error\","
            "\"param\":null,\"code\":\"out_of_memory\"}}";
        api_reply_raw(r, 500, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    size_t len = strlen(text);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    set_response(r, status, resp);
    r->bytes_out = len;
}

/* The code on the wire: on the OpenAI-compatible routes, OpenAI's own word where quarry's generic one
 * has an OpenAI equivalent (the `openai` SDKs and LangChain branch on these). */
static const char *wire_code(const api_req *r, const char *code)
{
    if (!api_route_openai(r->route))
        return code;
    if (strcmp(code, "unauthenticated") == 0)
        return "invalid_api_key";
    if (strcmp(code, "rate_limited") == 0)
        return "rate_limit_exceeded";
    return code;
}

static void reply_error(api_req *r, int status, const char *code, const char *param, const char *fmt,
                        va_list ap)
{
    char msg[QR_ERR_LEN];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    /* OpenAI answers an unknown model 404 with the type of a bad request, not of a missing route */
    const char *type =
        strcmp(code, "model_not_found") == 0 ? "invalid_request_error" : api_error_type(status);
    const char *wire = wire_code(r, code);
    /* messages may quote client input: make sure the JSON stays valid */
    json_t *body = json_pack("{s:{s:s%,s:s,s:s?,s:s}}", "error", "message", msg, strlen(msg), "type", type,
                             "param", param, "code", wire);
    if (!body) {
        /* jansson refused the message (invalid UTF-8) or ran out of memory: escape it here, with
         * room for the worst case (six bytes a character), and without it should even that fail */
        qr_buf b;
        qr_buf_init(&b, 6 * sizeof(msg) + 256);
        qr_buf_puts(&b, "{\"error\":{\"message\":");
        qr_json_escape(&b, msg, strlen(msg));
        if (qr_buf_printf(&b, ",\"type\":\"%s\",\"param\":", type) ||
            (param ? qr_json_escape(&b, param, strlen(param)) : qr_buf_puts(&b, "null")) ||
            qr_buf_printf(&b, ",\"code\":\"%s\"}}", wire)) {
            qr_buf_reset(&b);
            qr_buf_printf(&b, "{\"error\":{\"message\":\"\",\"type\":\"%s\",\"param\":null,\"code\":\"%s\"}}",
                          type, wire);
        }
        api_reply_raw(r, status, "application/json", qr_buf_str(&b), qr_buf_len(&b));
        qr_buf_release(&b);
    } else {
        api_reply_json(r, status, body);
    }
    /* the access log and metrics keep quarry's code, whatever the route's dialect */
    snprintf(r->error_code, sizeof(r->error_code), "%s", code);
    if (status == 401) {
        /* the challenge of the scheme the client tried: a Basic challenge to a page's fetch with a
         * bearer token would make the browser open its own password dialog */
        const char *authz = api_header(r, "Authorization");
        bool bearer = authz && strncasecmp(authz, "Bearer ", 7) == 0;
        api_reply_header(r, "WWW-Authenticate",
                         *r->challenge ? r->challenge
                         : bearer      ? "Bearer realm=\"quarry\""
                                       : "Basic realm=\"quarry\", charset=\"UTF-8\"");
    }
    api_metrics_error(r->srv->metrics, code);
    if (status >= 500)
        qr_log(QR_LOG_WARN, "http", "%s %s -> %d %s: %s (id=%s)", r->method,
               r->route ? r->route->pattern : "-", status, code, msg, r->request_id);
}

void api_reply_error(api_req *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error(r, status, code, NULL, fmt, ap);
    va_end(ap);
}

void api_reply_error_param(api_req *r, int status, const char *code, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error(r, status, code, param && *param ? param : NULL, fmt, ap);
    va_end(ap);
}

void api_reply_status(api_req *r, qr_status st, const char *err)
{
    api_reply_error(r, api_http_status(st), qr_status_name(st), "%s", err && *err ? err : qr_status_name(st));
}

void api_reply_header(api_req *r, const char *name, const char *value)
{
    pthread_mutex_lock(&r->lock);
    if (r->response)
        MHD_add_response_header(r->response, name, value);
    pthread_mutex_unlock(&r->lock);
}
