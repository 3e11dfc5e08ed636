/*
 * api: the HTTP front door (libmicrohttpd). An OpenAI-compatible chat endpoint for office-tool
 * plugins, a knowledge-base search API, administrators' document and index routes with
 * background jobs, health, readiness, Prometheus metrics, an OpenAPI 3.1 description and an
 * audit log. Every route but /healthz authenticates the caller (HTTP Basic through LDAP, bearer
 * tokens, service API keys) and every result is trimmed to what that caller may read.
 *
 * Threads: libmicrohttpd's own pool (server.threads) reads requests and writes responses and
 * never blocks; anything that may block (LDAP, the store, retrieval, the inference backend) runs
 * on a worker pool (server.workers) while the connection is suspended. One api_server serves all
 * of them; its functions below are called from one controlling thread.
 */
#ifndef QUARRY_API_H
#define QUARRY_API_H

#include "core/core.h"

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

/* ---- the route table (for the OpenAPI document and its tests) ----------------------------- */

typedef struct {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/v1/documents/{id}" */
} api_route_info;

/* The routes the server answers, in table order. The array is static. */
const api_route_info *api_routes(size_t *count);

/* The OpenAPI 3.1 document the server serves at /openapi.json, as compact JSON (free() it), or
 * NULL when out of memory. */
char *api_openapi_json(void);

#endif
