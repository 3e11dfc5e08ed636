/*
 * Every configuration key quarry reads, as one list: type, section, key, default (as text), range
 * (min, max; NO_RANGE for none), choices ("a|b|c" or NULL), secret, reload (QR_RELOAD: SIGHUP applies a
 * new value in a running server; QR_RESTART: it needs a restart), help. core.h expands it into
 * the typed struct qr_settings (one field per key, named section_key) and config.c into the table
 * that parses, validates and documents the keys, so a key read under a wrong name or type is a
 * compile error, not an abort at run time. Add a key here and nowhere else.
 */
#ifndef QUARRY_CONFIG_KEYS_H
#define QUARRY_CONFIG_KEYS_H

#define NO_RANGE 1, 0

#define QR_CONFIG_KEYS(X)                                                                                    \
    /* data and logging */                                                                                   \
    X(STRING, data, dir, "./data", NO_RANGE, NULL, false, QR_RESTART,                                        \
      "Directory holding the store, the vector index generations and jobs (--data).")                        \
    X(INT, data, cache_mib, "16", 0, 1048576, NULL, false, QR_RESTART,                                       \
      "Most heap memory SQLite holds in the process, all store connections together (MiB; 0: no limit): "    \
      "near it the page caches reuse their oldest pages instead of growing, and the file system cache "      \
      "serves the rest.")                                                                                    \
    X(INT, data, mmap_mib, "0", 0, 1048576, NULL, false, QR_RESTART,                                         \
      "Leading part of the store file each connection of quarry serve reads through a memory map (MiB; "     \
      "0: none, reads go through read calls; SQLite caps it, 2 GiB in Debian's build). Saves a system "      \
      "call and a copy per page read; an I/O error on a mapped page stops the process (SIGBUS) instead "     \
      "of failing one request, and mapped pages count in the process's RSS.")                                \
    /* the system of record: this node's own SQLite store, or PostgreSQL followed by every node */           \
    X(STRING, store, backend, "sqlite", NO_RANGE, "sqlite|postgres", false, QR_RESTART,                      \
      "System of record: sqlite (this node's own store, the default) or postgres (PostgreSQL, shared by "    \
      "several nodes: writes go there and this node's store follows its change feed).")                      \
    X(STRING, store, postgres, "", NO_RANGE, NULL, true, QR_RESTART,                                         \
      "libpq connection string or URI of the PostgreSQL primary (writes and fences; behind HAProxy: its "    \
      "write port), with store.backend = postgres.")                                                         \
    X(STRING, store, postgres_read, "", NO_RANGE, NULL, true, QR_RESTART,                                    \
      "Connection string the change feed is read from (a standby: HAProxy's read port, or "                  \
      "target_session_attrs=prefer-standby); empty: store.postgres.")                                        \
    X(STRING, store, postgres_members, "", NO_RANGE, NULL, true, QR_RESTART,                                 \
      "Every PostgreSQL member of the cluster, directly (host=a,b port=p1,p2 ...): with no primary to "      \
      "ask (etcd down), searches take the highest change counter among them and go on; empty: they fail "    \
      "closed.")                                                                                             \
    X(INT, store, poll_ms, "20", 1, 60000, NULL, false, QR_RESTART,                                          \
      "How often the feed follower asks PostgreSQL for changes (ms), with store.backend = postgres.")        \
    X(INT, store, fence_ms, "1000", 1, 60000, NULL, false, QR_RESTART,                                       \
      "Longest a search or a write waits for this node to apply the changes PostgreSQL's primary had when "  \
      "it began (ms); past it the request fails closed with 503.")                                           \
    X(INT, store, max_lag_ms, "5000", 1, 3.6e6, NULL, false, QR_RESTART,                                     \
      "GET /readyz fails once this node has been behind PostgreSQL's primary (or unable to reach it) "       \
      "this long (ms), so that a load balancer stops sending it searches.")                                  \
    X(STRING, log, level, "info", NO_RANGE, "trace|debug|info|warn|error|off", false, QR_RELOAD,             \
      "Default log level.")                                                                                  \
    X(STRING, log, format, "text", NO_RANGE, "text|json", false, QR_RESTART,                                 \
      "Log line format: text, or JSON lines for log collectors.")                                            \
    X(STRING, log, components, "", NO_RANGE, NULL, false, QR_RELOAD,                                         \
      "Per-component levels, e.g. \"auth=debug,index=warn\".")                                               \
    X(STRING, log, file, "", NO_RANGE, NULL, false, QR_RESTART,                                              \
      "Log file, appended to and reopened on SIGHUP (after logrotate moved it); empty: standard error.")     \
    /* HTTP server */                                                                                        \
    X(STRING, server, listen, "127.0.0.1:8080", NO_RANGE, NULL, false, QR_RESTART,                           \
      "Address and port the HTTP API listens on (host:port).")                                               \
    X(STRING, server, tls_cert, "", NO_RANGE, NULL, false, QR_RESTART,                                       \
      "PEM certificate file; with server.tls_key, serves HTTPS.")                                            \
    X(STRING, server, tls_key, "", NO_RANGE, NULL, true, QR_RESTART, "PEM private key file.")                \
    X(INT, server, threads, "4", 1, 256, NULL, false, QR_RESTART,                                            \
      "libmicrohttpd I/O threads (they read and write; route handlers run on server.workers).")              \
    X(INT, server, workers, "16", 1, 1024, NULL, false, QR_RESTART,                                          \
      "Threads that run route handlers (LDAP, store, retrieval, inference); also the store handles opened.") \
    X(INT, server, queue_max, "256", 1, 100000, NULL, false, QR_RESTART,                                     \
      "Requests waiting for a worker; beyond it the server answers 503 overloaded.")                         \
    X(INT, server, max_connections, "1024", 1, 100000, NULL, false, QR_RESTART,                              \
      "Open connections accepted at once.")                                                                  \
    X(INT, server, per_ip_connections, "64", 0, 100000, NULL, false, QR_RESTART,                             \
      "Open connections accepted from one client address (0: no limit of its own; raise it behind a "        \
      "reverse proxy, whose connections all come from its address).")                                        \
    X(INT, server, connection_timeout_s, "30", 1, 3600, NULL, false, QR_RESTART,                             \
      "A connection idle this long (a slow or stalled client) is closed.")                                   \
    X(INT, server, header_timeout_s, "10", 1, 3600, NULL, false, QR_RESTART,                                 \
      "A connection must send a whole request header block within this many seconds of opening, or "         \
      "of its previous answer (this also bounds an idle kept-alive connection); else it is closed.")         \
    X(INT, server, min_body_rate, "1024", 0, 1073741824, NULL, false, QR_RESTART,                            \
      "Bytes per second a request body must average once server.body_grace_s has passed; a slower "          \
      "one is closed (0: no minimum).")                                                                      \
    X(INT, server, body_grace_s, "10", 1, 3600, NULL, false, QR_RESTART,                                     \
      "Seconds a request body may take before server.min_body_rate applies.")                                \
    X(INT, server, max_body_bytes, "33554432", 1024, 4294967296.0, NULL, false, QR_RESTART,                  \
      "Largest request body (document uploads); larger ones get 413.")                                       \
    X(INT, server, max_json_bytes, "1048576", 1024, 4294967296.0, NULL, false, QR_RESTART,                   \
      "Largest body of the routes that take a JSON request object (search, ask, chat, ACL changes); "        \
      "larger ones get 413. Never more than server.max_body_bytes.")                                         \
    X(INT, server, json_max_depth, "32", 2, 1000, NULL, false, QR_RESTART,                                   \
      "Deepest nesting of arrays and objects accepted in a JSON body.")                                      \
    X(INT, server, shutdown_grace_s, "10", 0, 3600, NULL, false, QR_RESTART,                                 \
      "On SIGTERM, how long requests in flight may take to finish before they are cancelled.")               \
    X(INT, server, job_threshold_bytes, "1048576", 0, 17179869184.0, NULL, false, QR_RESTART,                \
      "Document uploads larger than this (or of several documents) run as background jobs (202).")           \
    X(INT, server, job_retention_s, "604800", 1, 315360000, NULL, false, QR_RESTART,                         \
      "Seconds a finished background job (and GET /v1/jobs/{id}) is kept before the job runner prunes it.")  \
    X(INT, server, chat_k, "8", 1, 100, NULL, false, QR_RESTART,                                             \
      "Passages retrieved for /v1/ask and chat answers.")                                                    \
    X(STRING, server, audit_log, "", NO_RANGE, NULL, false, QR_RESTART,                                      \
      "Audit log file (JSON lines); empty: <data.dir>/audit.log; \"off\": none.")                            \
    X(STRING, server, access_log, "", NO_RANGE, NULL, false, QR_RESTART,                                     \
      "Access log file (JSON lines); empty: one line per request through the logger (component access).")    \
    X(INT, server, user_share, "0", 0, 100000, NULL, false, QR_RESTART,                                      \
      "Most requests of one user (or API key) that workers run at once; more get 429 with Retry-After "      \
      "(0: max(2, server.workers / 4)).")                                                                    \
    X(STRING, server, cors_origins, "", NO_RANGE, NULL, false, QR_RELOAD,                                    \
      "Origins (scheme://host[:port], exactly; no '*') whose pages may call the API from a browser, "        \
      "e.g. an Outlook or Word add-in: comma-separated or a JSON list. Empty: no CORS headers.")             \
    X(STRING, server, public_url, "", NO_RANGE, NULL, false, QR_RESTART,                                     \
      "Absolute http(s) URL clients reach the API at (e.g. behind a reverse proxy), the `servers` entry of " \
      "/openapi.json; empty: a relative \"/\" (Copilot and Teams need an absolute https URL).")              \
    /* LDAP */                                                                                               \
    X(STRING, ldap, uri, "", NO_RANGE, NULL, false, QR_RESTART,                                              \
      "One or more ldap:// or ldaps:// URIs, separated by spaces or commas.")                                \
    X(BOOL, ldap, starttls, "off", NO_RANGE, NULL, false, QR_RESTART,                                        \
      "Upgrade ldap:// connections with StartTLS.")                                                          \
    X(STRING, ldap, ca_file, "", NO_RANGE, NULL, false, QR_RESTART,                                          \
      "CA certificates (PEM) used to verify the LDAP server.")                                               \
    X(STRING, ldap, require_cert, "demand", NO_RANGE, "never|allow|try|demand", false, QR_RESTART,           \
      "TLS certificate check for LDAP (demand verifies).")                                                   \
    X(STRING, ldap, bind_dn, "", NO_RANGE, NULL, false, QR_RESTART,                                          \
      "Service account DN used to search users and groups (empty: anonymous).")                              \
    X(STRING, ldap, bind_password, "", NO_RANGE, NULL, true, QR_RESTART, "Service account password.")        \
    X(STRING, ldap, user_base, "", NO_RANGE, NULL, false, QR_RESTART, "Search base for users.")              \
    X(STRING, ldap, user_filter, "(uid=%s)", NO_RANGE, NULL, false, QR_RESTART,                              \
      "User search filter; %s is the escaped user name. AD: (sAMAccountName=%s).")                           \
    X(STRING, ldap, group_base, "", NO_RANGE, NULL, false, QR_RESTART,                                       \
      "Search base for groups (empty: ldap.user_base).")                                                     \
    X(STRING, ldap, group_filter, "(|(member=%d)(uniqueMember=%d)(memberUid=%u))", NO_RANGE, NULL, false,    \
      QR_RESTART, "Group membership filter; %d is the member's escaped DN, %u the user's escaped uid.")      \
    X(STRING, ldap, group_name_attr, "cn", NO_RANGE, NULL, false, QR_RESTART,                                \
      "Attribute naming a group in group:<name> principals.")                                                \
    X(STRING, ldap, memberof_attr, "", NO_RANGE, NULL, false, QR_RESTART,                                    \
      "Optional memberOf-style attribute read from the user entry for the direct groups.")                   \
    X(STRING, ldap, uid_attr, "uid", NO_RANGE, NULL, false, QR_RESTART,                                      \
      "Attribute whose value becomes the principal's uid. AD: sAMAccountName.")                              \
    X(INT, ldap, nested_depth, "8", 0, 64, NULL, false, QR_RESTART,                                          \
      "Levels of nested groups followed beyond direct membership (0: direct groups only).")                  \
    X(INT, ldap, timeout_ms, "5000", 1, 600000, NULL, false, QR_RESTART,                                     \
      "Deadline of each login or resolution as a whole: connecting, TLS, binds and searches together.")      \
    X(INT, ldap, cache_ttl_s, "300", 0, 86400, NULL, false, QR_RESTART,                                      \
      "How long resolved principals are cached (0 disables the cache).")                                     \
    X(INT, ldap, cache_max_entries, "10000", 1, 10000000, NULL, false, QR_RESTART,                           \
      "Most principals kept in the cache; the least recently used go first.")                                \
    X(INT, ldap, pool_size, "4", 1, 256, NULL, false, QR_RESTART,                                            \
      "LDAP connection slots (each a service and a user-bind connection) shared by all threads.")            \
    X(STRING, auth, admin_groups, "", NO_RANGE, NULL, false, QR_RESTART,                                     \
      "Comma-separated groups whose members are administrators.")                                            \
    X(BOOL, auth, stale_if_error, "off", NO_RANGE, NULL, false, QR_RESTART,                                  \
      "Serve an expired cached principal while LDAP is unreachable (default: fail closed).")                 \
    X(INT, auth, token_ttl_s, "3600", 60, 2592000, NULL, false, QR_RESTART,                                  \
      "Lifetime of issued bearer tokens.")                                                                   \
    X(STRING, auth, token_secret, "", NO_RANGE, NULL, true, QR_RESTART,                                      \
      "Token signing secret, at least 32 characters (empty: generated in <data.dir>/auth/token.key).")       \
    X(INT, auth, rate_limit_user, "5", 0, 100000, NULL, false, QR_RELOAD,                                    \
      "Failed logins per user (the directory entry, whatever spelling of the name; per name for names that " \
      "find none) within the window before further attempts are refused (0: no limit).")                     \
    X(INT, auth, rate_limit_addr, "20", 0, 100000, NULL, false, QR_RELOAD,                                   \
      "Failed logins per client address within the window before further attempts are refused (0: no "       \
      "limit).")                                                                                             \
    X(INT, auth, rate_limit_window_s, "300", 1, 86400, NULL, false, QR_RELOAD,                               \
      "Window of the failed-login limits, from the first failure.")                                          \
    /* web console */                                                                                        \
    X(BOOL, ui, enabled, "on", NO_RANGE, NULL, false, QR_RESTART,                                            \
      "Serve the web console at / and /ui/ (off: those paths answer 404).")                                  \
    X(STRING, ui, frame_ancestors, "'self'", NO_RANGE, NULL, false, QR_RESTART,                              \
      "Who may frame the console (CSP frame-ancestors, space-separated sources), e.g. the Office add-in "    \
      "hosts.")                                                                                              \
    X(STRING, ui, oidc_client_id, "", NO_RANGE, NULL, false, QR_RESTART,                                     \
      "Client id of the console at the first oidc.issuer; set, the sign-in page offers the provider "        \
      "(authorization code + PKCE).")                                                                        \
    X(STRING, ui, oidc_scope, "openid profile", NO_RANGE, NULL, false, QR_RESTART,                           \
      "Scopes the console asks the provider for (add the API scope oidc.required_scope names).")             \
    /* OpenID Connect bearer tokens */                                                                       \
    X(STRING, oidc, issuer, "", NO_RANGE, NULL, false, QR_RESTART,                                           \
      "OpenID Connect issuers whose bearer tokens are accepted, each the exact `iss` value "                 \
      "(comma-separated or a JSON list; empty: OIDC sign-in off).")                                          \
    X(STRING, oidc, audience, "", NO_RANGE, NULL, false, QR_RESTART,                                         \
      "Accepted `aud` values (one or more; required with oidc.issuer), e.g. the API's application ID URI.")  \
    X(STRING, oidc, jwks_url, "", NO_RANGE, NULL, false, QR_RESTART,                                         \
      "JWKS URL of each issuer, in the order of oidc.issuer (empty: from the issuer's "                      \
      "/.well-known/openid-configuration).")                                                                 \
    X(STRING, oidc, user_claim, "preferred_username", NO_RANGE, NULL, false, QR_RESTART,                     \
      "Token claim naming the user, looked up in LDAP with oidc.user_filter (Entra ID: upn or "              \
      "preferred_username).")                                                                                \
    X(STRING, oidc, user_filter, "(uid=%s)", NO_RANGE, NULL, false, QR_RESTART,                              \
      "LDAP filter finding the user's entry under ldap.user_base; %s is the claim's value, escaped. AD: "    \
      "(userPrincipalName=%s).")                                                                             \
    X(STRING, oidc, required_scope, "", NO_RANGE, NULL, false, QR_RESTART,                                   \
      "Scopes a token must grant (in `scp` or `scope`; space- or comma-separated, all required; empty: "     \
      "none).")                                                                                              \
    X(INT, oidc, clock_skew_s, "60", 0, 3600, NULL, false, QR_RESTART,                                       \
      "Clock difference tolerated when checking exp, nbf and iat.")                                          \
    X(INT, oidc, jwks_min_refresh_s, "60", 0, 86400, NULL, false, QR_RESTART,                                \
      "Least time between two fetches of an issuer's keys (a token with an unknown kid asks for one).")      \
    X(INT, oidc, jwks_max_age_s, "3600", 60, 604800, NULL, false, QR_RESTART,                                \
      "Keys older than this are fetched again on use; while the issuer is unreachable the known keys are "   \
      "kept.")                                                                                               \
    X(INT, oidc, timeout_ms, "5000", 100, 60000, NULL, false, QR_RESTART,                                    \
      "Timeout of a discovery or JWKS request to an issuer.")                                                \
    X(INT, oidc, max_token_bytes, "16384", 1024, 1048576, NULL, false, QR_RESTART,                           \
      "Longest OIDC token accepted; longer ones are refused unread.")                                        \
    X(STRING, oidc, ca_file, "", NO_RANGE, NULL, false, QR_RESTART,                                          \
      "PEM CA bundle for the issuers' HTTPS (empty: the system's).")                                         \
    X(STRING, oidc, authorization_url, "", NO_RANGE, NULL, false, QR_RESTART,                                \
      "The first issuer's OAuth 2.0 authorization endpoint; with oidc.token_url, /openapi.json gets an "     \
      "oauth2 authorization-code scheme (Copilot API plugins and Teams register OAuth from it).")            \
    X(STRING, oidc, token_url, "", NO_RANGE, NULL, false, QR_RESTART,                                        \
      "The first issuer's OAuth 2.0 token endpoint (with oidc.authorization_url).")                          \
    X(STRING, oidc, oauth_scopes, "", NO_RANGE, NULL, false, QR_RESTART,                                     \
      "Scopes an OAuth client asks for, as its authorization request names them (Entra ID: "                 \
      "api://<client id>/access_as_user), listed in /openapi.json; empty: oidc.required_scope's.")           \
    /* vector index */                                                                                       \
    X(STRING, vindex, type, "auto", NO_RANGE, "auto|flat|ivf_flat|ivf_sq8|ivf_pq|hnsw", false, QR_RESTART,   \
      "Vector index type; auto: exact (flat) up to vindex.exact_threshold vectors, ivf_sq8 above.")          \
    X(INT, vindex, exact_threshold, "50000", 0, 1e12, NULL, false, QR_RESTART,                               \
      "With vindex.type=auto, the largest collection served by exact search.")                               \
    X(INT, vindex, nlist, "0", 0, 1e9, NULL, false, QR_RESTART,                                              \
      "IVF lists (0: about 4*sqrt(N), at most N/39).")                                                       \
    X(INT, vindex, train_per_list, "64", 39, 256, NULL, false, QR_RESTART,                                   \
      "IVF training sample size, in vectors per list.")                                                      \
    X(INT, vindex, nprobe, "128", 1, 1e6, NULL, false, QR_RESTART, "IVF lists visited per query.")           \
    X(INT, vindex, ef_search, "256", 1, 1e6, NULL, false, QR_RESTART,                                        \
      "HNSW candidate list length per query.")                                                               \
    X(STRING, vindex, scan, "int8", NO_RANGE, "int8|faiss", false, QR_RESTART,                               \
      "How ivf_flat and ivf_sq8 lists are scanned (ivf_pq: FAISS's fast scan): int8 (quarry's scanner of "   \
      "int8 codes, then exact re-scoring of vindex.rerank candidates) or faiss (FAISS's own codes).")        \
    X(INT, vindex, rerank, "64", 1, 1e5, NULL, false, QR_RESTART,                                            \
      "With vindex.scan=int8, candidates per query re-scored exactly (at least twice k).")                   \
    X(INT, vindex, delta_max, "20000", 1, 1e9, NULL, false, QR_RESTART,                                      \
      "Chunks added or deleted since the last build above which the index asks for a rebuild (a smaller "    \
      "index sooner: past a quarter of its chunks, at least 1,000).")                                        \
    X(BOOL, vindex, rebuild_on_mismatch, "on", NO_RANGE, NULL, false, QR_RESTART,                            \
      "Open a stale or damaged vector index and rebuild it (off: refuse to start).")                         \
    /* inference backend */                                                                                  \
    X(STRING, inference, base_url, "", NO_RANGE, NULL, false, QR_RELOAD,                                     \
      "Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (empty: extractive answers "   \
      "only).")                                                                                              \
    X(STRING, inference, model, "", NO_RANGE, NULL, false, QR_RELOAD, "Model name sent to the backend.")     \
    X(STRING, inference, models, "quarry", NO_RANGE, NULL, false, QR_RESTART,                                \
      "Model ids the OpenAI-compatible routes serve, comma-separated (GET /v1/models lists them; a chat "    \
      "request naming another is 404 model_not_found, one naming none gets the first).")                     \
    X(STRING, inference, api_key, "", NO_RANGE, NULL, true, QR_RELOAD,                                       \
      "API key, sent as Authorization: Bearer (or api-key for Azure OpenAI).")                               \
    X(STRING, inference, api_version, "", NO_RANGE, NULL, false, QR_RELOAD,                                  \
      "Azure OpenAI api-version; when set, the key goes in the api-key header.")                             \
    X(STRING, inference, headers, "", NO_RANGE, NULL, true, QR_RELOAD,                                       \
      "Extra request headers as comma-separated \"Name: value\" pairs (values without commas); secret, "     \
      "since "                                                                                               \
      "gateways put credentials there.")                                                                     \
    X(INT, inference, connect_timeout_ms, "5000", 1, 600000, NULL, false, QR_RELOAD,                         \
      "Deadline for connecting to the backend (TCP and TLS), per attempt.")                                  \
    X(INT, inference, first_token_timeout_ms, "30000", 1, 600000, NULL, false, QR_RELOAD,                    \
      "Streamed replies: longest wait for the first answer text of an attempt, and between events after "    \
      "it.")                                                                                                 \
    X(INT, inference, total_timeout_ms, "120000", 1, 3600000, NULL, false, QR_RELOAD,                        \
      "Deadline for a whole backend call, retries and waits included.")                                      \
    X(INT, inference, max_tokens, "1024", 1, 1000000, NULL, false, QR_RELOAD,                                \
      "Most tokens the backend may generate for one answer.")                                                \
    X(DOUBLE, inference, temperature, "0.2", 0, 2, NULL, false, QR_RELOAD,                                   \
      "Sampling temperature sent to the backend.")                                                           \
    X(INT, inference, retries, "2", 0, 10, NULL, false, QR_RELOAD,                                           \
      "Retries of a failed backend request (connection errors, 408, 429, 5xx, no first token).")             \
    X(INT, inference, backoff_max_ms, "10000", 0, 600000, NULL, false, QR_RELOAD,                            \
      "Cap on one wait between retries, Retry-After included.")                                              \
    X(INT, inference, breaker_failures, "5", 1, 1000, NULL, false, QR_RELOAD,                                \
      "Consecutive failed backend calls that open the circuit breaker.")                                     \
    X(INT, inference, breaker_cooldown_ms, "30000", 0, 3600000, NULL, false, QR_RELOAD,                      \
      "How long an open breaker refuses calls before one probe call is let through.")                        \
    X(INT, inference, max_concurrent, "16", 1, 4096, NULL, false, QR_RELOAD,                                 \
      "Most backend requests in flight at once; further calls wait for a slot.")                             \
    X(INT, inference, context_tokens, "8192", 512, 10000000, NULL, false, QR_RELOAD,                         \
      "The model's context window; the prompt gets this minus inference.max_tokens (estimated tokens).")     \
    /* reranking: a cross-encoder service reorders the top permitted passages */                             \
    X(STRING, rerank, backend, "none", NO_RANGE, "none|cohere|tei", false, QR_RESTART,                       \
      "Reranker: none, cohere (POST {base_url}/rerank as Cohere, Jina, vLLM, Infinity serve it) or tei "     \
      "(Hugging Face text-embeddings-inference, POST {base_url}/rerank).")                                   \
    X(STRING, rerank, base_url, "", NO_RANGE, NULL, false, QR_RESTART,                                       \
      "Base URL of the reranker, e.g. http://127.0.0.1:8000/v1 (vLLM, cohere) or http://127.0.0.1:8080 "     \
      "(tei); "                                                                                              \
      "quarry appends /rerank.")                                                                             \
    X(STRING, rerank, model, "", NO_RANGE, NULL, false, QR_RESTART,                                          \
      "Reranking model sent as `model` (cohere; required there) and reported in results.")                   \
    X(STRING, rerank, api_key, "", NO_RANGE, NULL, true, QR_RESTART,                                         \
      "API key of the reranker, sent as Authorization: Bearer.")                                             \
    X(INT, rerank, candidates, "50", 1, 1000, NULL, false, QR_RESTART,                                       \
      "First-stage results (after permission trimming and fusion) the reranker reorders.")                   \
    X(INT, rerank, timeout_ms, "5000", 1, 600000, NULL, false, QR_RESTART,                                   \
      "Deadline of one rerank call, retries included; past it the first-stage order is kept.")               \
    X(INT, rerank, retries, "1", 0, 10, NULL, false, QR_RESTART,                                             \
      "Retries of a failed rerank request (connection errors, 408, 429, 5xx) within rerank.timeout_ms.")     \
    X(INT, rerank, max_passage_chars, "4000", 16, 1000000, NULL, false, QR_RESTART,                          \
      "Longest passage sent to the reranker (characters; longer ones are cut at a character boundary).")     \
    X(INT, rerank, breaker_failures, "5", 1, 1000, NULL, false, QR_RESTART,                                  \
      "Consecutive failed rerank calls that open the reranker's circuit breaker.")                           \
    X(INT, rerank, breaker_cooldown_ms, "30000", 0, 3600000, NULL, false, QR_RESTART,                        \
      "How long an open reranker breaker keeps the first-stage order before one probe call.")                \
    /* ingestion: extraction limits, chunking, embeddings */                                                 \
    X(INT, ingest, max_document_bytes, "67108864", 1, 17179869184.0, NULL, false, QR_RESTART,                \
      "Largest document accepted, and largest text extracted from one (bytes).")                             \
    X(INT, ingest, extract_timeout_ms, "30000", 10, 3600000, NULL, false, QR_RESTART,                        \
      "Wall-clock limit of one sandboxed extraction (HTML, PDF, DOCX); the extractor is killed after it.")   \
    X(INT, ingest, extract_memory_mb, "512", 16, 65536, NULL, false, QR_RESTART,                             \
      "Memory one sandboxed extraction may use beyond its starting size.")                                   \
    X(INT, ingest, zip_max_bytes, "268435456", 1024, 17179869184.0, NULL, false, QR_RESTART,                 \
      "Largest total uncompressed size of a DOCX archive; larger ones are refused as zip bombs.")            \
    X(DOUBLE, ingest, zip_max_ratio, "100", 2, 100000, NULL, false, QR_RESTART,                              \
      "Largest uncompressed/compressed ratio of a DOCX archive or entry over 1 MiB; higher is refused.")     \
    X(STRING, ingest, invalid_utf8, "repair", NO_RANGE, "repair|reject", false, QR_RESTART,                  \
      "Invalid UTF-8 in a document: repair (U+FFFD) or reject the document.")                                \
    X(INT, ingest, threads, "0", 0, 64, NULL, false, QR_RESTART,                                             \
      "Threads preparing documents (extract, chunk, embed) for `quarry ingest`; 0: one per core.")           \
    X(INT, chunk, max_tokens, "300", 8, 100000, NULL, false, QR_RESTART,                                     \
      "Token budget of one chunk, overlap included (approximate tokens, see README).")                       \
    X(DOUBLE, chunk, overlap, "0.15", 0, 0.5, NULL, false, QR_RESTART,                                       \
      "Fraction of the budget a chunk repeats from the end of the previous one (0 for none).")               \
    X(STRING, embed, backend, "local", NO_RANGE, "local|openai|azure|ollama|tei", false, QR_RESTART,         \
      "Embeddings: local (offline feature hashing), openai (OpenAI-compatible /embeddings: OpenAI, "         \
      "llama.cpp, vLLM), azure (Azure OpenAI deployment), ollama (/api/embed) or tei (Hugging Face "         \
      "text-embeddings-inference /embed).")                                                                  \
    X(STRING, embed, base_url, "", NO_RANGE, NULL, false, QR_RESTART,                                        \
      "Base URL of the embeddings server, e.g. http://127.0.0.1:8000/v1 (openai), "                          \
      "https://RES.openai.azure.com/openai/deployments/DEPLOYMENT (azure), http://127.0.0.1:11434 "          \
      "(ollama), http://127.0.0.1:8080 (tei).")                                                              \
    X(STRING, embed, model, "", NO_RANGE, NULL, false, QR_RESTART,                                           \
      "Embedding model name sent to the server and recorded in the store (optional for azure and tei).")     \
    X(STRING, embed, api_key, "", NO_RANGE, NULL, true, QR_RESTART,                                          \
      "API key of the embeddings server (Authorization: Bearer; the api-key header for azure).")             \
    X(STRING, embed, api_version, "", NO_RANGE, NULL, false, QR_RESTART,                                     \
      "Azure OpenAI api-version sent as ?api-version= (required with embed.backend=azure).")                 \
    X(STRING, embed, query_prefix, "", NO_RANGE, NULL, false, QR_RESTART,                                    \
      "Text put before every query before it is embedded (e5: \"query: \", nomic: \"search_query: \").")     \
    X(STRING, embed, document_prefix, "", NO_RANGE, NULL, false, QR_RESTART,                                 \
      "Text put before every chunk before it is embedded (e5: \"passage: \", nomic: "                        \
      "\"search_document: \").")                                                                             \
    X(INT, embed, batch_size, "64", 1, 2048, NULL, false, QR_RESTART, "Texts per embeddings request.")       \
    X(INT, embed, timeout_ms, "30000", 100, 600000, NULL, false, QR_RESTART,                                 \
      "Deadline of one embeddings request.")                                                                 \
    X(INT, embed, retries, "3", 0, 10, NULL, false, QR_RESTART,                                              \
      "Retries of an embeddings request after 429, 5xx or a transport error (jittered backoff).")            \
    X(INT, embed, dim, "384", 1, 8192, NULL, false, QR_RESTART,                                              \
      "Vector dimension: of the local embedder, and the one required from (and requested of) the server.")   \
    X(BOOL, embed, send_dimensions, "on", NO_RANGE, NULL, false, QR_RESTART,                                 \
      "Send embed.dim as `dimensions` (off for servers and models that refuse the parameter).")              \
    /* retrieval */                                                                                          \
    X(STRING, retrieval, mode, "auto", NO_RANGE, "auto|hybrid|bm25|vector", false, QR_RESTART,               \
      "Search mode when a request names none: auto (bm25 with embed.backend=local, hybrid with a real "      \
      "embeddings backend), hybrid (BM25 and vectors fused), bm25 or vector.")                               \
    X(STRING, retrieval, fusion, "auto", NO_RANGE, "auto|rrf|weighted", false, QR_RESTART,                   \
      "How hybrid search fuses the lists: rrf (reciprocal rank) or weighted (scores over each list's "       \
      "best); auto: weighted with embed.backend=local, rrf with a real embeddings backend.")                 \
    X(DOUBLE, retrieval, rrf_k, "60", 1, 10000, NULL, false, QR_RESTART,                                     \
      "RRF rank offset: a chunk at rank r of a list adds the list's weight / (rrf_k + r).")                  \
    X(DOUBLE, retrieval, vector_weight, "0.2", 0, 100, NULL, false, QR_RESTART,                              \
      "Weight of the vector list in hybrid fusion (BM25's is 1); unset, rrf fusion weighs both lists 1.")    \
    X(DOUBLE, retrieval, weight_title, "2", 0, 1000, NULL, false, QR_RESTART,                                \
      "BM25 weight of the title column.")                                                                    \
    X(DOUBLE, retrieval, weight_headings, "1", 0, 1000, NULL, false, QR_RESTART,                             \
      "BM25 weight of the heading path column.")                                                             \
    X(DOUBLE, retrieval, weight_body, "1", 0, 1000, NULL, false, QR_RESTART,                                 \
      "BM25 weight of the chunk text column.")                                                               \
    X(STRING, retrieval, stopwords, "default", NO_RANGE, NULL, false, QR_RESTART,                            \
      "Words dropped from queries: default (English function words), none, or a comma-separated list "       \
      "(\"default,foo\" extends the default).")                                                              \
    X(DOUBLE, retrieval, exact_share, "0.02", 0, 1, NULL, false, QR_RESTART,                                 \
      "Permitted share of the vector index below which vectors are searched by an exact scan of the "        \
      "permitted chunks.")                                                                                   \
    X(INT, retrieval, exact_min, "20000", 0, 1000000, NULL, false, QR_RESTART,                               \
      "Up to this many permitted chunks, vectors are always searched by an exact scan of them.")             \
    X(INT, retrieval, max_per_doc, "0", 0, 10000, NULL, false, QR_RESTART,                                   \
      "Most chunks of one document in a result list (0: no limit).")                                         \
    X(INT, retrieval, candidates, "100", 1, 10000, NULL, false, QR_RESTART,                                  \
      "Depth of the BM25 and vector lists that hybrid search fuses.")                                        \
    X(BOOL, retrieval, parallel, "off", NO_RANGE, NULL, false, QR_RESTART,                                   \
      "Hybrid search ranks its BM25 and vector lists at once, on two threads, while the process has a "      \
      "core to spare (each search handle opens a second store connection for it).")                          \
    X(STRING, retrieval, snippet_marker_open, "<mark>", NO_RANGE, NULL, false, QR_RESTART,                   \
      "Inserted before each query match in snippets.")                                                       \
    X(STRING, retrieval, snippet_marker_close, "</mark>", NO_RANGE, NULL, false, QR_RESTART,                 \
      "Inserted after each query match in snippets.")                                                        \
    X(INT, retrieval, snippet_tokens, "32", 1, 1000, NULL, false, QR_RESTART, "Words in a snippet.")         \
    X(STRING, retrieval, bm25_path, "pruned", NO_RANGE, "pruned|fts5", false, QR_RESTART,                    \
      "How BM25 lists of word queries are ranked: pruned (quarry's index under <data.dir>/bm25, the same "   \
      "top "                                                                                                 \
      "k "                                                                                                   \
      "without scoring every match) or fts5 (FTS5 scores every match).")                                     \
    X(INT, retrieval, timeout_ms, "10000", 1, 3.6e6, NULL, false, QR_RESTART,                                \
      "Deadline of one search, checked inside its loops (FTS5, BM25, vectors); past it the search stops "    \
      "with a timeout (HTTP 504). In the server it counts from the hand-over to a worker (time queued "      \
      "counts).")                                                                                            \
    X(INT, retrieval, max_terms, "256", 1, 1024, NULL, false, QR_RESTART,                                    \
      "Most words a query searches (stopwords dropped first; a repeated word and the words of quoted "       \
      "phrases count); more is refused (HTTP 400).")                                                         \
    X(INT, retrieval, max_phrase_terms, "32", 1, 1024, NULL, false, QR_RESTART,                              \
      "Most words in one quoted or excluded phrase; longer is refused (HTTP 400).")                          \
    X(INT, retrieval, max_exclusions, "32", 0, 1024, NULL, false, QR_RESTART,                                \
      "Most excluded words and phrases (-word, -\"a phrase\") in a query; more is refused (HTTP 400).")      \
    /* the index maintainer */                                                                               \
    X(INT, index, refresh_ms, "1000", 1, 3.6e6, NULL, false, QR_RESTART,                                     \
      "Longest time before a change made outside the server (quarry ingest) is searchable; writes through "  \
      "the API wake the maintainer at once.")                                                                \
    X(INT, index, maintainer_nice, "10", 0, 19, NULL, false, QR_RESTART,                                     \
      "Priority of the index maintainer's thread (and the FAISS threads a build starts from it) below the "  \
      "request threads, as nice(1) counts: a build takes the CPU searches leave (0: the same priority).")    \
    X(INT, index, startup_wait_ms, "2000", 0, 3.6e6, NULL, false, QR_RESTART,                                \
      "How long the server waits at start for its indexes to open before it serves anyway (FTS5 ranks "      \
      "while they build).")                                                                                  \
    X(INT, index, wait_for_ms, "60000", 1, 3.6e6, NULL, false, QR_RESTART,                                   \
      "How long a write with ?refresh=wait_for waits for the indexes before it answers 504.")                \
    /* pruned BM25 index */                                                                                  \
    X(INT, bm25, delta_max, "50000", 1, 1e9, NULL, false, QR_RESTART,                                        \
      "Chunks added or deleted since the BM25 index's last build above which it is rebuilt (a smaller "      \
      "index sooner: past a quarter of its chunks, at least 1,000).")                                        \
    X(INT, bm25, principal_cache, "1024", 1, 1e6, NULL, false, QR_RESTART,                                   \
      "Principals whose readable-document sets the BM25 index keeps in memory.")                             \
    /* end of the list */

#endif
