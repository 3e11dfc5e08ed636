/*
 * api: the HTTP front door (libmicrohttpd). An OpenAI-compatible chat endpoint for office-tool
 * plugins, a knowledge-base search API, administrators' document and index routes with
 * background jobs, health, readiness, Prometheus metrics, an OpenAPI 3.1 description and an
 * audit log. Every route but the probes (/healthz, /readyz) and /openapi.json authenticates the
 * caller (HTTP Basic through LDAP, bearer tokens, service API keys) and every result is trimmed to
 * what that caller may read.
 *
 * Threads: libmicrohttpd's own pool (server.threads) reads requests and writes responses and
 * never blocks; anything that may block (LDAP, the store, retrieval, the inference backend) runs
 * on a worker pool (server.workers) while the connection is suspended. One api_server serves all
 * of them; its functions below are called from one controlling thread.
 */
#ifndef QUARRY_API_H
#define QUARRY_API_H

#include "core/core.h"
#include "index/index.h"
#include "inference/inference.h"
#include "retrieval/retrieval.h"

/* "0.9.75": the libmicrohttpd in use at run time. */
const char *api_mhd_version(void);

typedef struct api_server api_server;

/* Builds a server from the configuration: opens the store under data.dir, the ingestion session,
 * the LDAP context, the inference client, the audit and access logs, and checks server.* (the
 * listen address, TLS files). Nothing listens yet. On error *out is NULL and err names what
 * failed (QR_EINVAL for bad settings, QR_EIO for files that cannot be opened). */
qr_status api_server_new(const qr_config *cfg, api_server **out, char *err);

/* Starts listening on server.listen (port 0 picks a free port) with TLS when server.tls_cert and
 * server.tls_key are set, and starts the worker pool and the job runner. QR_EIO when the address
 * cannot be bound. */
qr_status api_server_start(api_server *srv, char *err);

/* The port the server listens on (after api_server_start), 0 before. */
int api_server_port(const api_server *srv);
/* "http://127.0.0.1:8080" or "https://...": the base URL (after api_server_start). */
const char *api_server_url(const api_server *srv);

/* Graceful shutdown: stops accepting connections, lets requests in flight finish for up to
 * grace_s seconds (server.shutdown_grace_s when negative), then cancels the rest (streams end,
 * jobs stop after their current document), and stops every thread. Returns the number of
 * requests that had to be cancelled. Safe to call twice; a no-op before api_server_start. */
int api_server_stop(api_server *srv, int grace_s);

/* Stops the server if it runs and frees everything. NULL is a no-op. */
void api_server_free(api_server *srv);
/* SIGHUP's work: reopens the log, access-log and audit-log files (logrotate moved them), then
 * applies `loaded` (the configuration read again; NULL when reading it failed, which changes
 * nothing) to the keys marked QR_RELOAD in core/config_keys.h: log levels, failed-login limits,
 * CORS origins, the inference backend's settings. A changed key that needs a restart is logged
 * "<key> changed: needs restart" and keeps its value. All or nothing: a value the server
 * refuses (a bad CORS origin) changes nothing. Requests in flight finish with the settings they
 * started with. One line in the log says what changed. Call from one thread at a time. */
qr_status api_server_reload(api_server *srv, const qr_config *loaded, char *err);

/* ---- the search service (service.c) -------------------------------------------------------- */

/*
 * One composition of store handles, indexes, the query embedder and retrieval handles, used by
 * the server (every search, ask and chat route) and by the one-shot commands (`quarry search`,
 * `ask`, `eval`), so that the same caller and query give the same page through either door.
 * Pages are permission-trimmed twice: by retrieval, then once more against the store's current
 * ACLs and tombstones (one indexed lookup per hit) before they leave the service.
 *
 * Threads: api_service_search, _passages, _embed and _acquire may be called from any number of
 * threads at once (each takes one of the service's handles, waiting while all are busy); open
 * and close from one thread.
 */
typedef struct api_service api_service;
typedef struct api_service_handle api_service_handle;

typedef struct {
    size_t handles;      /* store + retrieval handles, one per concurrent caller (>= 1) */
    bool background;     /* true (quarry serve): an index maintainer keeps the indexes in the
                          * background; false (one command): they are opened and caught up now */
    retrieval_mode mode; /* one command: the mode it will run (the indexes it needs); DEFAULT: the
                          * configured one */
    const char *who;     /* one command: the prefix of its notes on stderr ("quarry search") */
    /* the retrieval settings (copied); NULL: the configuration's (`quarry eval --compare` runs
     * each fusion through its own) */
    const retrieval_opts *retrieval;
} api_service_opts;

void api_service_opts_default(api_service_opts *o);
/* Opens data.dir's store handles and the indexes as o says (NULL: defaults, one-shot). The
 * one-shot open may build indexes (printing a note) and fails with QR_EINVAL when the configured
 * embedder is not the one the store was embedded with (and the mode needs vectors), or
 * QR_EUNAVAILABLE for vector mode without vectors. On error *out is NULL. */
qr_status api_service_open(const qr_config *cfg, const api_service_opts *o, api_service **out, char *err);
/* Stops the maintainer (background), closes everything. NULL is a no-op. */
void api_service_close(api_service *svc);

/* Searches as caller. With req->vector NULL the service embeds req->query when the mode needs
 * it (hybrid goes on with BM25 when it cannot; vector mode fails with QR_EUNAVAILABLE). The page
 * (retrieval_result_free) holds the chunks' text, read once, and only hits that passed the
 * second check. Errors as retrieval_search. Costs one search plus one lookup per hit. */
qr_status api_service_search(api_service *svc, const retrieval_caller *caller, const retrieval_request *req,
                             retrieval_result **out, char *err);
/* The passages for an answer to question: a plain-text search (quotes are prose) of k hits in the
 * configured mode, as passages pointing into *page. Free *out (free()) before *page
 * (retrieval_result_free). Errors as api_service_search. */
qr_status api_service_passages(api_service *svc, const retrieval_caller *caller, const char *question,
                               size_t k, retrieval_result **page, infer_passage **out, char *err);
/* The page's hits as passages for the drafter, borrowing the page's strings (free() the array
 * before the page); NULL when out of memory. */
infer_passage *api_page_passages(const retrieval_result *res);
/* The query embedding of text (*vec: free() it, *dim floats). QR_EUNAVAILABLE without an
 * embedder (one-shot on a store without vectors), the embedder's errors. */
qr_status api_service_embed(api_service *svc, const char *text, float **vec, int *dim, char *err);

/* A store + retrieval handle for the calling thread, waiting while all are busy; never NULL.
 * The retrieval handle sees the indexes published by now. Give it back with _release. */
api_service_handle *api_service_acquire(api_service *svc);
void api_service_release(api_service *svc, api_service_handle *h);
/* Gives back the handle whose store s is (from api_service_handle_store). */
void api_service_release_store(api_service *svc, store *s);
store *api_service_handle_store(api_service_handle *h);
retrieval *api_service_handle_retrieval(api_service_handle *h);
/* The maintainer (background), NULL for a one-shot service. */
index_maintainer *api_service_maintainer(api_service *svc);
/* The retrieval.* settings the service searches with. */
const retrieval_opts *api_service_retrieval_opts(const api_service *svc);
/* The reranking client the service's searches use (rerank.*), or NULL when rerank.backend is none. */
infer_reranker *api_service_reranker(api_service *svc);
/* Which default search mode is in force and why, as one JSON object appended to out, the same
 * for `quarry stats --json` and /readyz: {"mode":"bm25","source":"auto"|"config","reason":"...",
 * "fusion":"weighted","fusion_source":"auto"|"config","vector_weight":0.2,"rrf_k":60}. QR_ENOMEM
 * or the buffer's cap. */
qr_status api_search_default_json(const retrieval_opts *o, qr_buf *out);

/* ---- the route table (for the OpenAPI document and its tests) ----------------------------- */

typedef struct {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/v1/documents/{id}" */
} api_route_info;

/* The routes the server answers, in table order. The array is static. */
const api_route_info *api_routes(size_t *count);

/* The OpenAPI 3.0.3 document the server serves at /openapi.json for configuration cfg
 * (server.public_url, oidc.*), as compact JSON in *out (free() it). QR_EINVAL when a route has no
 * entry in the document's operation table (a bug the tests catch) or the oidc.* keys the
 * document reads contradict each other; QR_ENOMEM. On error *out is NULL. */
qr_status api_openapi_json(const qr_config *cfg, char **out, char *err);

#endif
