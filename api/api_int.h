/*
 * api's private header: the server and request structures shared by the files of the module,
 * the route table, JSON I/O, streaming, authentication, metrics, audit and jobs. Nothing here
 * leaves api/; libmicrohttpd and jansson types stop at this module.
 *
 * Threads, once and for all (each function below repeats only what differs):
 *   - "MHD thread": one of libmicrohttpd's polling threads (server.threads of them). It runs the
 *     access handler, the content reader of streamed responses and the request-completed
 *     callback. It must never block: no LDAP, no store, no backend.
 *   - "worker": one of the qr_pool threads (server.workers). Route handlers run here, with the
 *     connection suspended, and may block.
 *   - "job runner": the single thread that runs background ingestion and rebuild jobs.
 */
#ifndef QUARRY_API_INT_H
#define QUARRY_API_INT_H

#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>

#include "api/api.h"
#include "auth/auth.h"
#include "inference/inference.h"
#include "ingest/ingest.h"
#include "retrieval/retrieval.h"

#define API_REQUEST_ID_MAX   64
#define API_STREAM_BUF_MAX   (1u << 20) /* bytes a stream may hold before its producer waits */
#define API_MAX_K            100        /* results one search may ask for */
#define API_QUERY_MAX        4096       /* bytes of a query or question */
#define API_MESSAGES_MAX     256        /* messages in one chat request */
#define API_MESSAGE_MAX      (64 << 10) /* bytes of one chat message */
#define API_SMALL_BODY_MAX   (32 << 10) /* bytes of a body that holds credentials or nothing */
#define API_GONE_PROBE_MS    20         /* how often a running search asks whether its client left */
#define API_UID_MAX          320        /* bytes of a uid in the per-user share (auth caps names at 256) */
#define API_MODELS_MAX       64         /* ids in inference.models */
#define API_MODEL_ID_MAX     128        /* bytes of one of them */
#define API_END_USER_MAX     256        /* bytes of a chat request's `user` */
#define API_STOP_MAX         4          /* stop sequences of one chat request */
#define API_STOP_LEN_MAX     256        /* bytes of one of them */
#define API_CITE_CONTENT_MAX 4096       /* bytes of a passage in message.context.citations[].content */
#define API_PARAM_MAX        64         /* bytes of an error's param ("data_sources[0].parameters.filter") */

#define API_PROBE_LDAP_NS 2000000000ull /* how long /readyz's answer from LDAP is reused */
#define API_RELOADS_KEPT  256           /* reloads that may replace the backend client or the CORS list */

typedef struct api_req api_req;
typedef struct api_metrics api_metrics;
typedef struct api_audit api_audit;
typedef struct api_jobs api_jobs;
typedef struct api_guard api_guard;
typedef struct api_conn api_conn;
typedef struct api_cors api_cors;

/* ---- routes --------------------------------------------------------------------------------- */

/* Who may call a route. */
enum {
    /* no credentials: /healthz, /openapi.json, and /v1/auth/token, which checks its own */
    API_ACCESS_PUBLIC = 0,
    API_ACCESS_USER,  /* any authenticated caller */
    API_ACCESS_ADMIN, /* administrators, and service keys with the admin scope */
};

/* What a route reads from a request body, which bounds its size (the smaller of the class's limit
 * and server.max_body_bytes). */
enum {
    API_BODY_SMALL = 0, /* nothing, or a login: API_SMALL_BODY_MAX */
    API_BODY_JSON,      /* a request object: server.max_json_bytes */
    API_BODY_UPLOAD,    /* documents: server.max_body_bytes */
};

/* A route handler. Runs on a worker (or on the MHD thread when the route is inline), after the
 * caller was authenticated as the route demands; it answers with api_reply_* or api_stream_*. */
typedef void (*api_handler_fn)(api_req *r);

typedef struct {
    const char *method;
    const char *pattern; /* "/v1/documents/{id}"; at most one {param}, which may span slashes */
    int access;
    unsigned scope; /* AUTH_SCOPE_* a service key needs (0: none) */
    int body;       /* API_BODY_* */
    bool inline_;   /* answered on the MHD thread: cheap and never blocking */
    api_handler_fn handler;
} api_route;

extern const api_route api_route_table[];
extern const size_t api_route_count;

/* Outcome of matching a request line against the table. */
typedef enum {
    API_MATCH_OK = 0,
    API_MATCH_NOT_FOUND,  /* no route has this path */
    API_MATCH_BAD_METHOD, /* the path exists with other methods */
    API_MATCH_BAD_ESCAPE, /* malformed %XX, an encoded NUL or control character, invalid UTF-8 */
} api_match;

/* Matches method and the raw (still percent-encoded) path. On API_MATCH_OK *index is the route
 * and *param (free() it) the decoded {param} or NULL. Pure function: any thread. */
api_match api_route_find(const char *method, const char *raw_path, size_t *index, char **param);
/* The methods some route serves for the raw path, as "GET, PUT, DELETE" (table order, each once)
 * into out. API_MATCH_OK; API_MATCH_NOT_FOUND when no route has this path (out ""),
 * API_MATCH_BAD_ESCAPE when its {param} is malformed. Pure function: any thread. */
api_match api_route_methods(const char *raw_path, char *out, size_t len);
/* Parses inference.models: comma-separated ids (spaces around them dropped), each 1 to
 * API_MODEL_ID_MAX bytes of letters, digits and "-_.:/@", at most API_MODELS_MAX, at least one, no
 * repeats. On error *n is 0 and err names the id. Pure function: any thread. */
qr_status api_models_parse(const char *list, char out[][API_MODEL_ID_MAX + 1], size_t *n, char *err);
/* True when id is one of the served models. */
bool api_model_served(const api_server *srv, const char *id);
/* True for the routes that speak OpenAI's dialect (chat completions and models): their errors use
 * OpenAI's codes (invalid_api_key, rate_limit_exceeded) where quarry's generic ones would go. */
bool api_route_openai(const api_route *route);
/* Percent-decodes s[0..n) into a new string (free() it). NULL for a malformed escape, a decoded
 * NUL or control byte, or invalid UTF-8. plus_space: '+' means ' ' (query strings). */
char *api_url_decode(const char *s, size_t n, bool plus_space);

/* Route handlers (routes.c, search.c, documents.c, jobs.c, keys.c, metrics.c, openapi.c). */
void api_h_healthz(api_req *r);
void api_h_readyz(api_req *r);
/* api_search_default_json as a jansson object (NULL when out of memory), for /readyz. */
json_t *api_search_default(const retrieval_opts *o);
void api_h_status(api_req *r);
/* Whether /readyz would answer 200; *ldap_ok: LDAP answered (or is not configured). Runs the
 * checks (LDAP's answer is cached, see API_PROBE_LDAP_NS). Any thread. */
bool api_ready(api_server *srv, bool *ldap_ok);
void api_h_me(api_req *r);
void api_h_token(api_req *r);
void api_h_models(api_req *r);
void api_h_model_get(api_req *r);
void api_h_openapi(api_req *r);
void api_h_metrics(api_req *r);
void api_h_search(api_req *r);
void api_h_ask(api_req *r);
void api_h_chat(api_req *r);
void api_h_doc_create(api_req *r);
void api_h_doc_put(api_req *r);
void api_h_doc_acl(api_req *r);
void api_h_doc_delete(api_req *r);
void api_h_doc_get(api_req *r);
void api_h_doc_list(api_req *r);
void api_h_rebuild(api_req *r);
void api_h_job_get(api_req *r);
void api_h_job_list(api_req *r);
void api_h_key_list(api_req *r);
void api_h_key_create(api_req *r);
void api_h_key_revoke(api_req *r);
void api_h_audit_list(api_req *r);

/* ---- the server ----------------------------------------------------------------------------- */

typedef struct {
    int threads, workers, queue_max, max_connections, per_ip_connections;
    int connection_timeout_s, json_max_depth, shutdown_grace_s, chat_k;
    int header_timeout_s, body_grace_s;
    int64_t min_body_rate; /* bytes/s, 0: none */
    int user_share;        /* server.user_share, 0 resolved to max(2, workers / 4) */
    size_t max_body_bytes, max_json_bytes, job_threshold_bytes;
    int64_t wait_for_ms; /* index.wait_for_ms */
} api_settings;

/* One user's requests on workers now (server.user_share): a slot per user with any, so at most
 * server.workers slots are ever in use. */
typedef struct {
    char uid[API_UID_MAX];
    int running; /* 0: the slot is free */
} api_share;

typedef struct api_ui api_ui;

struct api_server {
    const qr_config *cfg; /* borrowed: outlives the server */
    api_ui *ui;           /* the web console; NULL with ui.enabled off */
    api_settings set;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char *tls_cert, *tls_key; /* PEM text, NULL without TLS */
    char url[300];
    int port;
    char models[API_MODELS_MAX][API_MODEL_ID_MAX + 1]; /* inference.models: the ids served */
    size_t nmodels;                                    /* at least 1 */
    int64_t started_ms;

    struct MHD_Daemon *daemon;
    api_guard *guard; /* the connections' deadlines, while the daemon runs */
    qr_pool *pool;
    auth_ctx *auth;
    infer_client *_Atomic infer; /* swapped by a reload: read it once per request (api_infer) */
    api_metrics *metrics;
    api_audit *audit;
    api_jobs *jobs;
    api_cors *_Atomic cors; /* server.cors_origins (no origins: no CORS headers); swapped by a reload */
    char *openapi;          /* the document /openapi.json serves, built once from the configuration */
    FILE *access_log;       /* NULL: access lines go to the logger (component "access") */
    pthread_mutex_t access_lock;

    /* The writer: one ingestion session, one thread at a time (documents routes, jobs). */
    ingest_session *ingest;
    pthread_mutex_t ingest_lock;
    /* Searching: store and search handles, the query embedder and the index maintainer. */
    api_service *svc;

    /* Lifecycle of requests, for graceful shutdown. */
    pthread_mutex_t lock;
    pthread_cond_t idle;
    int in_flight; /* requests with a context (cleared by the completed callback) */
    int suspended; /* connections suspended by us; must be 0 before MHD_stop_daemon */
    bool running, stopping;
    atomic_bool cancel_all;
    api_req *active; /* doubly linked list of live requests */

    /* Reloads (SIGHUP, reload_lock): the configuration in force (cfg's values, the reloadable keys
     * as last reloaded), and what reloads replaced, kept until the server is freed so that a
     * request still holding a replaced client or CORS list never sees it freed. */
    /* /readyz's LDAP check, kept API_PROBE_LDAP_NS (probe_lock) */
    pthread_mutex_t probe_lock;
    uint64_t ldap_probe_ns; /* when LDAP was last asked (0: never) */
    bool ldap_probe_ok, ldap_probing;

    pthread_mutex_t reload_lock;
    qr_config *live;
    infer_client *retired_infer[API_RELOADS_KEPT];
    api_cors *retired_cors[API_RELOADS_KEPT];
    size_t nretired;
    uint64_t reloads, reload_failures;

    /* The per-user share of the workers (share_lock): one slot per user with requests running. */
    pthread_mutex_t share_lock;
    api_share *shares; /* server.workers slots */
};

/* Waits until the indexes reflect the store's latest change (at most index.wait_for_ms:
 * QR_ETIMEOUT); force asks the maintainer for new generations and waits for them. rep may be
 * NULL. Any thread but a search's; the maintainer does the work. */
qr_status api_index_sync(api_server *srv, bool force, index_sync_report *rep, char *err);
/* Reads ?refresh= of a write route: absent or "false" (the write is searchable within
 * index.refresh_ms), "wait_for" or "true" (reply once it is searchable). QR_EINVAL otherwise:
 * call it before writing, so that a bad value changes nothing. */
qr_status api_refresh_arg(api_req *r, bool *wait_for, char *err);
/* After a write: wakes the maintainer, and with wait_for waits as api_index_sync. */
qr_status api_index_written(api_server *srv, bool wait_for, char *err);

/* The inference client in force now. A request takes it once and keeps it to its end. */
static inline infer_client *api_infer(api_server *srv)
{
    return atomic_load(&srv->infer);
}

/* One of the search service's store handles for the calling thread, waiting while all are busy.
 * Never NULL. Give it back with api_store_release. */
store *api_store_acquire(api_server *srv);
void api_store_release(api_server *srv, store *s);

/* ---- requests ------------------------------------------------------------------------------- */

/* Where a request is. Credentials are in the headers, so a request is authenticated before a byte
 * of its body is read: a caller without them never makes the server buffer anything. */
typedef enum {
    API_STAGE_AUTH = 0, /* a worker authenticates it (connection suspended) */
    API_STAGE_ADMITTED, /* authenticated; the next call of the access handler starts the body */
    API_STAGE_BODY,     /* its body is being read (MHD thread) */
    API_STAGE_WORK,     /* its handler runs or ran */
} api_stage;

/* A streamed response body (server-sent events): bytes the producer (a worker) appends and the
 * content reader (MHD thread) drains, data[start, end) pending, at most API_STREAM_BUF_MAX of them;
 * guarded by the request's lock. */
typedef struct {
    char *data;
    size_t start, end;
    bool finished;
    pthread_cond_t space; /* signalled when the reader drained bytes or the request was cancelled */
} api_stream;

struct api_req {
    api_server *srv;
    struct MHD_Connection *conn;
    size_t route_index; /* SIZE_MAX when no route matched */
    const api_route *route;
    char method[16];
    char *path;  /* raw path, owned */
    char *param; /* decoded {param}, owned, or NULL */
    char request_id[API_REQUEST_ID_MAX + 1];
    char client[64];
    uint64_t start_ns;
    uint64_t auth_ns;  /* time api_authenticate took (quarry_search_stage_seconds_total) */
    api_conn *guarded; /* the connection's deadlines (NULL: none); MHD thread only */
    api_stage stage;   /* set on the MHD thread, or by the worker while suspended; under lock */
    bool at_headers;   /* suspended at its headers: the access handler's next call is still at
                        * them, where an answer queued makes libmicrohttpd 0.9.75 close the
                        * connection after it (MHD thread) */

    /* body, filled on the MHD thread */
    qr_buf body;
    size_t body_seen, body_max;
    bool expects_body; /* Content-Length > 0 or Transfer-Encoding: the worker that authenticates
                        * a request without a body runs its handler at once */
    bool too_large;

    /* caller, set by api_authenticate on the worker */
    auth_principal *principal;
    bool by_key;
    const char *auth_scheme;          /* "basic", "token", "oidc" or "api_key"; NULL before authentication */
    char key_id[AUTH_KEY_ID_LEN + 1]; /* the service key's id (acting for a user or itself), else "" */
    char user[300];                   /* uid for logs, "-" before authentication */
    char challenge[512]; /* WWW-Authenticate of a 401 when set (a refused bearer token's reason) */
    char end_user[API_END_USER_MAX + 1]; /* a chat request's `user` (the client's end user), else "" */

    /* response, published under lock */
    int status;
    char error_code[48];
    struct MHD_Response *response;
    bool ready, queued, is_stream;
    bool cors_done; /* the answer (to a preflight) carries its CORS headers already; MHD thread */
    api_stream stream;
    size_t bytes_out;

    pthread_mutex_t lock;
    int refs;       /* MHD's (until the completed callback), the worker's, the stream response's */
    bool suspended; /* by us: the handler waiting for a worker, or the reader waiting for bytes */
    /* Cancelled when the client goes away (the completed callback, or the worker's probe of the
     * socket while the connection is suspended, when MHD cannot see it close) or the server stops
     * past its grace; its deadline, retrieval.timeout_ms from the hand-over to a worker, bounds
     * the request's search. */
    qr_cancel cancel;
    int fd;               /* the connection's socket, polled by the probe; -1: unknown */
    api_req *prev, *next; /* in srv->active */
};

void api_req_ref(api_req *r);
void api_req_unref(api_req *r);
/* True once the client went away or the server is shutting down past its grace period (the
 * deadline is not consulted). */
bool api_req_cancelled(const api_req *r);
/* A request header, or NULL. Any thread while the request lives. */
const char *api_header(api_req *r, const char *name);
/* A query-string argument, percent-decoded (free() it), or NULL when absent. *bad is set for a
 * malformed escape. */
char *api_query_arg(api_req *r, const char *name, bool *bad);

/* The most bytes of one access-log line, and the bytes of the path kept in a line that would
 * have been longer (escaped, the cut path and a 300-byte user fit well within the line). */
#define API_ACCESS_LINE_MAX 8192
#define API_ACCESS_PATH_CUT 512
/* Formats r's access record into line (emptied first; its cap bounds the record): one whole
 * JSON object and a newline, never a part of one. A record over the cap is formatted again with
 * the path cut to API_ACCESS_PATH_CUT bytes and "truncated":true. Returns QR_OK, or the line's
 * failure when nothing whole could be formatted (write nothing then). `when` is the record's
 * ISO 8601 time. */
qr_status api_access_format(qr_buf *line, const api_req *r, int status, double ms, const char *when);

/* ---- connection deadlines (guard.c) ------------------------------------------------------- */

/* Starts the watchdog thread that closes connections past their deadlines (server.header_timeout_s,
 * server.min_body_rate after server.body_grace_s). m (may be NULL) counts the closed ones as
 * errors "header_timeout" and "body_too_slow". On error *out is NULL. */
qr_status api_guard_new(const api_settings *set, api_metrics *m, api_guard **out, char *err);
/* Stops the watchdog and frees the guard. Call after MHD_stop_daemon (every connection closed).
 * NULL is a no-op. */
void api_guard_free(api_guard *g);
/* MHD_OPTION_NOTIFY_CONNECTION's callback (cls: the guard; MHD thread): registers a new
 * connection (its header deadline starts now) and forgets a closed one, before MHD closes its
 * socket. */
void api_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode code);
/* The guarded connection of conn (its socket context), or NULL. */
api_conn *api_guard_conn(struct MHD_Connection *conn);
/* Phase changes, from the MHD thread serving the connection while it is open (never from a worker:
 * the connection may be gone). NULL is a no-op. busy: a request's header block arrived; no deadline
 * while it is authenticated, handled and answered. body: its body is being read; bytes: n more of
 * it arrived. idle: its answer is done; the next header block is due within server.header_timeout_s. */
void api_guard_busy(api_guard *g, api_conn *c);
void api_guard_body(api_guard *g, api_conn *c);
void api_guard_body_bytes(api_conn *c, size_t n);
void api_guard_idle(api_guard *g, api_conn *c);

/* ---- responses (json.c) --------------------------------------------------------------------- */

/* Answers with a JSON body (steals the reference to body). */
void api_reply_json(api_req *r, int status, json_t *body);
/* Answers OpenAI's error object, {"error":{"message","type","param":null,"code"}}, with the given
 * HTTP status; type follows from the status (api_error_type). On the OpenAI-compatible routes
 * (api_route_openai) unauthenticated goes out as invalid_api_key and rate_limited as
 * rate_limit_exceeded; r->error_code, the access log and metrics keep quarry's code. */
void api_reply_error(api_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same with param, the offending field ("messages", "data_sources[0].type"; NULL or "": null).
 * The code model_not_found answers with type invalid_request_error, as OpenAI does. */
void api_reply_error_param(api_req *r, int status, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The OpenAI error type of an HTTP status: "invalid_request_error" (4xx but the ones below),
 * "authentication_error" (401), "permission_error" (403), "not_found_error" (404),
 * "rate_limit_error" (429), "server_error" (5xx and anything else). A static string. */
const char *api_error_type(int status);
/* Maps a qr_status to its HTTP status and code (qr_status_name) and answers with err. */
void api_reply_status(api_req *r, qr_status st, const char *err);
/* The HTTP status a qr_status maps to. */
int api_http_status(qr_status st);
/* Answers with raw bytes of the given content type (copied; NULL: no Content-Type, for 204). */
void api_reply_raw(api_req *r, int status, const char *content_type, const char *data, size_t len);
/* ---- the web console (ui.c) ---- */
/* Prepares the console's files (ETags, gzip copies), its Content-Security-Policy and config.json
 * from ui.* and oidc.*; *out stays NULL with ui.enabled off. QR_EINVAL for a bad
 * ui.frame_ancestors. */
qr_status api_ui_new(const qr_config *cfg, api_ui **out, char *err);
void api_ui_free(api_ui *ui);
/* True for a request the console answers: GET or HEAD of / or /ui/... while it is on. */
bool api_ui_path(const api_ui *ui, const char *method, const char *url);
/* Answers a console request (a file, 304, config.json or 404) from the MHD thread. */
void api_ui_serve(api_req *r, const char *url);
/* api_reply_raw for bytes that outlive the server (the console's files): not copied. */
void api_reply_static(api_req *r, int status, const char *content_type, const char *data, size_t len);
/* Adds a header to the response already set (e.g. Retry-After, Location). */
void api_reply_header(api_req *r, const char *name, const char *value);

/* True when the JSON text nests arrays and objects at most max_depth deep (strings skipped). */
bool api_json_depth_ok(const char *text, size_t len, int max_depth);
/* Parses a request body as one JSON object within the server's limits. On failure answers the
 * request (400 or 415) and returns NULL. */
json_t *api_json_body(api_req *r);
/* Parses text as a JSON object with the depth limit; NULL and err on failure (fuzzed). */
json_t *api_json_parse(const char *text, size_t len, int max_depth, char *err);

/* Typed field readers for request objects. They fill err ("'k' must be an integer") and return
 * false when the field has the wrong type or range; an absent field gives the default. */
bool api_get_str(json_t *obj, const char *key, const char **out, size_t max_len, bool required, char *err);
bool api_get_int(json_t *obj, const char *key, int64_t *out, int64_t def, int64_t min, int64_t max,
                 char *err);
bool api_get_num(json_t *obj, const char *key, double *out, double def, double min, double max, char *err);
bool api_get_bool(json_t *obj, const char *key, bool *out, bool def, char *err);

/* ---- parsed requests (request.c: pure functions, fuzzed by fuzz/fuzz_request.c) ------------- */

/* A search (POST /v1/search) or the retrieval part of an answer (POST /v1/ask). Strings point into
 * the JSON object it was parsed from; release frees the arrays. */
typedef struct {
    const char *query;
    size_t k;
    const char *mode; /* "hybrid", "bm25" or "vector"; NULL: the configured default (retrieval.mode) */
    const char **doc_ids;
    size_t ndoc_ids;
    const char *uri_prefix, *content_type;
    int64_t updated_after_ms; /* 0: any */
    size_t max_per_doc;       /* 0: the configured limit */
    const char *cursor;       /* next_cursor of the previous page, or NULL */
    bool no_rerank;           /* "rerank": false: the first stage's order even with a reranker */
} api_search_req;

/* Parses {query (or question when question_key), k, mode, filters{doc_ids, uri_prefix,
 * content_type, updated_after}, max_per_doc, cursor, rerank (boolean, default true)}. default_k applies when
 * k is absent. */
qr_status api_parse_search(json_t *body, bool question_key, size_t default_k, api_search_req *out, char *err);
void api_search_req_release(api_search_req *s);

/* An OpenAI chat completion request. */
typedef struct {
    infer_message *history; /* user and assistant turns before the question, oldest first */
    size_t nhistory;
    char *question;     /* the last user message's text (owned) */
    char *search_query; /* what retrieval searches for (owned) */
    char **owned;       /* texts assembled from content parts */
    size_t nowned;
    bool stream, include_usage;
    const char *model;      /* as requested (echoed back), or NULL */
    const char *end_user;   /* `user`: the end user's id, or NULL */
    infer_options options;  /* max_tokens, temperature, top_p, stop, seed, penalties, user (its stop
                             * strings point into the JSON object) */
    api_search_req filters; /* data_sources[0]'s filters (only the filter fields are set) */
    size_t k;               /* passages to retrieve: k, or data_sources[0].parameters.top_n_documents */
} api_chat_req;

/* What bounds a chat request. */
typedef struct {
    size_t default_k;   /* server.chat_k */
    int64_t max_tokens; /* inference.max_tokens: the most max_tokens may ask for */
} api_chat_limits;

/* Why a request was refused, in OpenAI's terms: the field (the error's param) and the code when it
 * is not the status's own (unknown_parameter, unsupported_parameter, unsupported_value). */
typedef struct {
    char param[API_PARAM_MAX]; /* "" when no one field is to blame */
    const char *code;          /* a static string, or NULL: qr_status_name of the status */
} api_refusal;

/* Parses an OpenAI chat completion request, refusing (QR_EINVAL, with why filled) parameters quarry
 * cannot honour and unknown top-level fields. why may be NULL. */
qr_status api_parse_chat(json_t *body, const api_chat_limits *lim, api_chat_req *out, api_refusal *why,
                         char *err);
void api_chat_req_release(api_chat_req *c);

/* ---- streaming (sse.c) ---------------------------------------------------------------------- */

/* Starts a streamed response (chunked, text/event-stream) and hands the connection back to the
 * MHD thread; the worker then appends with api_stream_write and ends with api_stream_end. On
 * failure answers 500 and returns false. Worker only. */
bool api_stream_begin(api_req *r, int status, const char *content_type);
/* Appends bytes, waiting while the client is API_STREAM_BUF_MAX behind. Returns false when the
 * request was cancelled (client gone, shutdown): stop producing. */
bool api_stream_write(api_req *r, const char *data, size_t len);
bool api_stream_printf(api_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends the stream; the reader finishes the body. Idempotent. */
void api_stream_end(api_req *r);
/* The content reader and its free callback (MHD thread). */
ssize_t api_stream_reader(void *cls, uint64_t pos, char *buf, size_t max);
void api_stream_free(void *cls);

/* ---- CORS (cors.c) ------------------------------------------------------------------------- */

/* The request headers quarry reads, which a page may send (Access-Control-Allow-Headers), and the
 * response headers a page may read beyond the safelisted ones (Access-Control-Expose-Headers). */
#define API_CORS_ALLOW_HEADERS  "Authorization, Content-Type, X-Quarry-User, X-API-Key, X-Request-Id"
#define API_CORS_EXPOSE_HEADERS "X-Request-Id, Retry-After, WWW-Authenticate, Location"
#define API_CORS_MAX_AGE        "600" /* seconds a browser may reuse a preflight's answer */

/* Parses server.cors_origins: comma-separated exact origins, scheme://host[:port] with scheme http
 * or https; "" is no origin at all (CORS off). '*', "null", a path, a trailing slash, user info, a
 * query or fragment and whitespace inside an entry are refused. On error *out is NULL and err names
 * the entry and why. Pure function: any thread. */
qr_status api_cors_new(const char *list, api_cors **out, char *err);
/* NULL is a no-op. */
void api_cors_free(api_cors *c);
/* How many origins (0 for NULL). */
size_t api_cors_count(const api_cors *c);
/* True when origin (a request's Origin header; NULL: false) is one of c's, compared with scheme
 * and host lower-cased and a default port dropped on both sides. */
bool api_cors_allows(const api_cors *c, const char *origin);
/* True when every name in an Access-Control-Request-Headers value is one of
 * API_CORS_ALLOW_HEADERS (any case); else false, with the first other name in bad. */
bool api_cors_headers_ok(const char *list, char *bad, size_t bad_len);
/* Answers an OPTIONS request at its headers (MHD thread; no credentials, no worker): 404/400 for
 * a path no route has, a preflight with 204 and the Access-Control-Allow-* headers or 403 without
 * them, any other OPTIONS with 204 and Allow. */
void api_cors_options(api_req *r, const char *url);
/* Adds the CORS headers of an actual answer to resp (MHD thread, as it is queued): Vary: Origin
 * when origins are configured, and Access-Control-Allow-Origin and -Expose-Headers when the
 * request's Origin is one of them. */
void api_cors_actual(api_req *r, struct MHD_Response *resp);

/* ---- authentication (authmw.c) ------------------------------------------------------------- */

/* Authenticates the request as the route demands (Basic, bearer token, API key, X-Quarry-User)
 * and checks admin access. Returns true with r->principal set; on failure answers (401, 403,
 * 429, 503) and returns false. Worker only: may talk to LDAP. */
bool api_authenticate(api_req *r);
/* Decodes standard base64 (padding optional); NULL for bad input. *len gets the length. */
unsigned char *api_base64_decode(const char *in, size_t in_len, size_t *len);
/* True when the caller may read a document with this ACL: administrators read everything, others
 * need one principal in common. */
bool api_acl_permits(const auth_principal *p, const char *const *acl, size_t nacl);

/* ---- metrics (metrics.c) -------------------------------------------------------------------- */

api_metrics *api_metrics_new(void);
void api_metrics_free(api_metrics *m);
/* One finished request (MHD thread). route_index SIZE_MAX for unmatched paths. */
void api_metrics_request(api_metrics *m, size_t route_index, int status, double seconds);
/* One answer drafted (worker): its latency and mode. */
void api_metrics_answer(api_metrics *m, double seconds, bool extractive, bool failed);
/* Ingestion outcomes: kind is "added", "updated", "acl_updated", "unchanged", "deleted", "failed". */
void api_metrics_ingest(api_metrics *m, const char *kind, size_t chunks);
/* One search's BM25 list: ranked by the pruned index, or by FTS5. */
void api_metrics_bm25(api_metrics *m, bool pruned);
/* Where an answered POST /v1/search spent its time, in nanoseconds per stage, in the order of
 * api_metrics_stage_names (API_SEARCH_STAGES of them). */
#define API_SEARCH_STAGES 11
extern const char *const api_metrics_stage_names[API_SEARCH_STAGES];
void api_metrics_search_stages(api_metrics *m, const uint64_t ns[API_SEARCH_STAGES]);
void api_metrics_error(api_metrics *m, const char *code);
/* Renders the Prometheus text exposition of everything, store and auth included. QR_ELIMIT when
 * it would exceed out's cap, QR_ENOMEM: never a cut exposition. */
qr_status api_metrics_render(api_server *srv, qr_buf *out, char *err);

/* ---- audit log (audit.c) -------------------------------------------------------------------- */

/* Opens (appends to) the audit log; path "" means <data.dir>/audit.log, "off" disables it. */
qr_status api_audit_open(const qr_config *cfg, api_audit **out, char *err);
void api_audit_close(api_audit *a);
/* Reopens the audit log at its path (logrotate moved it). Nothing with the audit log off. */
qr_status api_audit_reopen(api_audit *a, char *err);
/* Appends one JSON line: time, request id, user, route, the keyed hash of the query
 * (query_hmac: auth_keyed_hash, AUTH_PURPOSE_AUDIT_QUERY; never the query), and the doc ids
 * returned or cited. Any thread. */
void api_audit_record(api_audit *a, const api_req *r, const char *query, const char *const *doc_ids,
                      size_t ndoc_ids, const char *action);
/* The most bytes of one audit line. */
#define API_AUDIT_LINE_MAX (4u << 20)
/* Formats the audit record into line (emptied first; its cap bounds the record): one whole JSON
 * object and a newline, never a part of one. Doc ids past the cap are left out and the record
 * says "truncated":true; when memory runs out partway, a record with "doc_ids":null and
 * "truncated":true is tried instead. Returns QR_OK, or the line's failure when nothing whole
 * could be formatted (a cap too small for the fixed fields, no memory): write nothing then.
 * `when` is the record's ISO 8601 time; query_hmac the query's hash (64 hex digits) or NULL. */
/* The bytes at the end of the audit log api_audit_tail reads. */
#define API_AUDIT_TAIL_MAX (1u << 20)
/* The last n complete records of the audit log, newest first, as a JSON array of objects (*out:
 * the caller's reference), read from at most the last API_AUDIT_TAIL_MAX bytes of the file; a line
 * that does not parse as an object is skipped, so fewer than n may come back. QR_EIO when the file
 * cannot be read, QR_ENOMEM. Any thread. */
qr_status api_audit_tail(api_audit *a, size_t n, json_t **out, char *err);
/* One line for credentials refused (401, 403 or 429 from authentication): the scheme, the status,
 * the reason (never the credential) and, for an OIDC token, its issuer and user claim as far as
 * they were verified. */
void api_audit_refused(api_audit *a, const api_req *r, const char *scheme, int status, const char *reason,
                       const auth_oidc_info *oidc);
qr_status api_audit_format(qr_buf *line, const api_req *r, const char *query_hmac, const char *const *doc_ids,
                           size_t ndoc_ids, const char *action, const char *when);

/* ---- jobs (jobs.c) -------------------------------------------------------------------------- */

/* One document of an ingestion job. Owned by the job once submitted. */
typedef struct {
    char *doc_id, *title, *uri, *content_type, *filename, *metadata_json;
    char **acl;
    size_t nacl;
    char *bytes;
    size_t len;
} api_job_doc;

void api_job_doc_release(api_job_doc *d);

qr_status api_jobs_new(api_server *srv, api_jobs **out, char *err);
/* Queues the jobs the store holds unfinished (a previous run's), removes staging directories no
 * unfinished job owns, and starts the runner. Before the server listens. */
qr_status api_jobs_start(api_jobs *j, char *err);
/* Stops the runner after the document in progress; that job becomes "interrupted" and queued
 * ones stay "queued" in the store, both to resume at the next start. */
void api_jobs_stop(api_jobs *j);
void api_jobs_free(api_jobs *j);
/* Stages docs under <data.dir>/jobs/<id>/ (files and directory synced), records the job in the
 * store and queues it: when this returns QR_OK the job survives a crash. docs are taken over,
 * also on error (then nothing is left staged); id receives the job id. */
qr_status api_jobs_submit_ingest(api_jobs *j, api_job_doc *docs, size_t ndocs, const char *user, char id[33],
                                 char *err);
/* Queues a rebuild of the vector index. */
qr_status api_jobs_submit_rebuild(api_jobs *j, const char *user, char id[33], char *err);
/* The job as JSON (*out, a new reference). QR_ENOTFOUND when unknown; QR_EUNAVAILABLE when the
 * store cannot be read (PostgreSQL, with store.backend = postgres). Reads the store. */
qr_status api_jobs_describe(api_jobs *j, const char *id, json_t **out, char *err);

/* Ingests one document through the server's ingestion session (serialised). Any thread. */
qr_status api_ingest_one(api_server *srv, const api_job_doc *d, store_put_result *result, size_t *nchunks,
                         char *err);
/* The name a write's outcome has in replies, job results and metrics: "added", "updated",
 * "acl_updated" or "unchanged" (a static string; "?" for a value the store does not define). */
const char *api_put_result_name(store_put_result r);

/* ---- misc ----------------------------------------------------------------------------------- */

/* Fills out with n random bytes as 2n hex digits (out has 2n+1 bytes). */
void api_random_hex(char *out, size_t n);
/* Hex SHA-256 of text. */
void api_sha256_hex(const char *text, size_t len, char out[65]);

#endif
