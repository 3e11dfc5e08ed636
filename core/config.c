/*
 * Configuration as one table: every key quarry reads, with its type, default, limits and help.
 * Values come from the defaults, then a JSON config file, then QUARRY_SECTION_KEY environment
 * variables, then command-line --set arguments, each overriding the one before. Every value is
 * validated where it enters; a load that fails leaves the configuration as it was.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core.h"

#define CONFIG_FILE_MAX (1u << 20)
#define NO_RANGE        1, 0

static const qr_cfg_key config_table[] = {
    /* data and logging */
    {"data.dir", QR_CFG_STRING, "./data", NO_RANGE, NULL, false,
     "Directory holding the store, the vector index generations and jobs (--data)."},
    {"log.level", QR_CFG_STRING, "info", NO_RANGE, "trace|debug|info|warn|error|off", false,
     "Default log level."},
    {"log.format", QR_CFG_STRING, "text", NO_RANGE, "text|json", false,
     "Log line format: text, or JSON lines for log collectors."},
    {"log.components", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "Per-component levels, e.g. \"auth=debug,index=warn\"."},
    /* HTTP server */
    {"server.listen", QR_CFG_STRING, "127.0.0.1:8080", NO_RANGE, NULL, false,
     "Address and port the HTTP API listens on (host:port)."},
    {"server.tls_cert", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "PEM certificate file; with server.tls_key, serves HTTPS."},
    {"server.tls_key", QR_CFG_STRING, "", NO_RANGE, NULL, true, "PEM private key file."},
    {"server.threads", QR_CFG_INT, "4", 1, 256, NULL, false,
     "libmicrohttpd I/O threads (they read and write; route handlers run on server.workers)."},
    {"server.workers", QR_CFG_INT, "16", 1, 1024, NULL, false,
     "Threads that run route handlers (LDAP, store, retrieval, inference); also the store handles opened."},
    {"server.queue_max", QR_CFG_INT, "256", 1, 100000, NULL, false,
     "Requests waiting for a worker; beyond it the server answers 503 overloaded."},
    {"server.max_connections", QR_CFG_INT, "1024", 1, 100000, NULL, false,
     "Open connections accepted at once."},
    {"server.per_ip_connections", QR_CFG_INT, "0", 0, 100000, NULL, false,
     "Open connections accepted from one client address (0: no limit of its own)."},
    {"server.connection_timeout_s", QR_CFG_INT, "30", 1, 3600, NULL, false,
     "A connection idle this long (a slow or stalled client) is closed."},
    {"server.max_body_bytes", QR_CFG_INT, "33554432", 1024, 4294967296.0, NULL, false,
     "Largest request body; larger ones get 413."},
    {"server.json_max_depth", QR_CFG_INT, "32", 2, 1000, NULL, false,
     "Deepest nesting of arrays and objects accepted in a JSON body."},
    {"server.shutdown_grace_s", QR_CFG_INT, "10", 0, 3600, NULL, false,
     "On SIGTERM, how long requests in flight may take to finish before they are cancelled."},
    {"server.job_threshold_bytes", QR_CFG_INT, "1048576", 0, 17179869184.0, NULL, false,
     "Document uploads larger than this (or of several documents) run as background jobs (202)."},
    {"server.chat_k", QR_CFG_INT, "8", 1, 100, NULL, false,
     "Passages retrieved for /v1/ask and chat answers."},
    {"server.audit_log", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "Audit log file (JSON lines); empty: <data.dir>/audit.log; \"off\": none."},
    {"server.access_log", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "Access log file (JSON lines); empty: one line per request through the logger (component access)."},
    {"server.user_share", QR_CFG_INT, "0", 0, 100000, NULL, false,
     "Most requests of one user (or API key) that workers run at once; more get 429 with Retry-After "
     "(0: max(2, server.workers / 4))."},
    /* LDAP */
    {"ldap.uri", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "One or more ldap:// or ldaps:// URIs, separated by spaces or commas."},
    {"ldap.starttls", QR_CFG_BOOL, "off", NO_RANGE, NULL, false,
     "Upgrade ldap:// connections with StartTLS."},
    {"ldap.ca_file", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "CA certificates (PEM) used to verify the LDAP server."},
    {"ldap.require_cert", QR_CFG_STRING, "demand", NO_RANGE, "never|allow|try|demand", false,
     "TLS certificate check for LDAP (demand verifies)."},
    {"ldap.bind_dn", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "Service account DN used to search users and groups (empty: anonymous)."},
    {"ldap.bind_password", QR_CFG_STRING, "", NO_RANGE, NULL, true, "Service account password."},
    {"ldap.user_base", QR_CFG_STRING, "", NO_RANGE, NULL, false, "Search base for users."},
    {"ldap.user_filter", QR_CFG_STRING, "(uid=%s)", NO_RANGE, NULL, false,
     "User search filter; %s is the escaped user name. AD: (sAMAccountName=%s)."},
    {"ldap.group_base", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "Search base for groups (empty: ldap.user_base)."},
    {"ldap.group_filter", QR_CFG_STRING, "(|(member=%d)(uniqueMember=%d)(memberUid=%u))", NO_RANGE, NULL,
     false, "Group membership filter; %d is the member's escaped DN, %u the user's escaped uid."},
    {"ldap.group_name_attr", QR_CFG_STRING, "cn", NO_RANGE, NULL, false,
     "Attribute naming a group in group:<name> principals."},
    {"ldap.memberof_attr", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "Optional memberOf-style attribute read from the user entry for the direct groups."},
    {"ldap.uid_attr", QR_CFG_STRING, "uid", NO_RANGE, NULL, false,
     "Attribute whose value becomes the principal's uid. AD: sAMAccountName."},
    {"ldap.nested_depth", QR_CFG_INT, "8", 0, 64, NULL, false,
     "Levels of nested groups followed beyond direct membership (0: direct groups only)."},
    {"ldap.timeout_ms", QR_CFG_INT, "5000", 1, 600000, NULL, false,
     "Deadline of each login or resolution as a whole: connecting, TLS, binds and searches together."},
    {"ldap.cache_ttl_s", QR_CFG_INT, "300", 0, 86400, NULL, false,
     "How long resolved principals are cached (0 disables the cache)."},
    {"ldap.cache_max_entries", QR_CFG_INT, "10000", 1, 10000000, NULL, false,
     "Most principals kept in the cache; the least recently used go first."},
    {"ldap.pool_size", QR_CFG_INT, "4", 1, 256, NULL, false,
     "LDAP connection slots (each a service and a user-bind connection) shared by all threads."},
    {"auth.admin_groups", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "Comma-separated groups whose members are administrators."},
    {"auth.stale_if_error", QR_CFG_BOOL, "off", NO_RANGE, NULL, false,
     "Serve an expired cached principal while LDAP is unreachable (default: fail closed)."},
    {"auth.token_ttl_s", QR_CFG_INT, "3600", 60, 2592000, NULL, false, "Lifetime of issued bearer tokens."},
    {"auth.token_secret", QR_CFG_STRING, "", NO_RANGE, NULL, true,
     "Token signing secret, at least 32 characters (empty: generated in <data.dir>/auth/token.key)."},
    {"auth.rate_limit_user", QR_CFG_INT, "5", 0, 100000, NULL, false,
     "Failed logins per user name within the window before further attempts are refused (0: no limit)."},
    {"auth.rate_limit_addr", QR_CFG_INT, "20", 0, 100000, NULL, false,
     "Failed logins per client address within the window before further attempts are refused (0: no limit)."},
    {"auth.rate_limit_window_s", QR_CFG_INT, "300", 1, 86400, NULL, false,
     "Window of the failed-login limits, from the first failure."},
    /* vector index */
    {"vindex.type", QR_CFG_STRING, "auto", NO_RANGE, "auto|flat|ivf_flat|ivf_sq8|ivf_pq|hnsw", false,
     "Vector index type; auto: exact (flat) up to vindex.exact_threshold vectors, ivf_sq8 above."},
    {"vindex.exact_threshold", QR_CFG_INT, "50000", 0, 1e12, NULL, false,
     "With vindex.type=auto, the largest collection served by exact search."},
    {"vindex.nlist", QR_CFG_INT, "0", 0, 1e9, NULL, false, "IVF lists (0: about 4*sqrt(N), at most N/39)."},
    {"vindex.train_per_list", QR_CFG_INT, "64", 39, 256, NULL, false,
     "IVF training sample size, in vectors per list."},
    {"vindex.nprobe", QR_CFG_INT, "128", 1, 1e6, NULL, false, "IVF lists visited per query."},
    {"vindex.ef_search", QR_CFG_INT, "256", 1, 1e6, NULL, false, "HNSW candidate list length per query."},
    {"vindex.delta_max", QR_CFG_INT, "20000", 1, 1e9, NULL, false,
     "Chunks added or deleted since the last build above which the index asks for a rebuild."},
    {"vindex.rebuild_on_mismatch", QR_CFG_BOOL, "on", NO_RANGE, NULL, false,
     "Open a stale or damaged vector index and rebuild it (off: refuse to start)."},
    /* inference backend */
    {"inference.base_url", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (empty: extractive answers "
     "only)."},
    {"inference.model", QR_CFG_STRING, "", NO_RANGE, NULL, false, "Model name sent to the backend."},
    {"inference.api_key", QR_CFG_STRING, "", NO_RANGE, NULL, true,
     "API key, sent as Authorization: Bearer (or api-key for Azure OpenAI)."},
    {"inference.api_version", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "Azure OpenAI api-version; when set, the key goes in the api-key header."},
    {"inference.headers", QR_CFG_STRING, "", NO_RANGE, NULL, true,
     "Extra request headers as comma-separated \"Name: value\" pairs (values without commas); secret, since "
     "gateways put credentials there."},
    {"inference.connect_timeout_ms", QR_CFG_INT, "5000", 1, 600000, NULL, false,
     "Deadline for connecting to the backend (TCP and TLS), per attempt."},
    {"inference.first_token_timeout_ms", QR_CFG_INT, "30000", 1, 600000, NULL, false,
     "Streamed replies: longest wait for the first answer text of an attempt, and between events after it."},
    {"inference.total_timeout_ms", QR_CFG_INT, "120000", 1, 3600000, NULL, false,
     "Deadline for a whole backend call, retries and waits included."},
    {"inference.max_tokens", QR_CFG_INT, "1024", 1, 1000000, NULL, false,
     "Most tokens the backend may generate for one answer."},
    {"inference.temperature", QR_CFG_DOUBLE, "0.2", 0, 2, NULL, false,
     "Sampling temperature sent to the backend."},
    {"inference.retries", QR_CFG_INT, "2", 0, 10, NULL, false,
     "Retries of a failed backend request (connection errors, 408, 429, 5xx, no first token)."},
    {"inference.backoff_max_ms", QR_CFG_INT, "10000", 0, 600000, NULL, false,
     "Cap on one wait between retries, Retry-After included."},
    {"inference.breaker_failures", QR_CFG_INT, "5", 1, 1000, NULL, false,
     "Consecutive failed backend calls that open the circuit breaker."},
    {"inference.breaker_cooldown_ms", QR_CFG_INT, "30000", 0, 3600000, NULL, false,
     "How long an open breaker refuses calls before one probe call is let through."},
    {"inference.max_concurrent", QR_CFG_INT, "16", 1, 4096, NULL, false,
     "Most backend requests in flight at once; further calls wait for a slot."},
    {"inference.context_tokens", QR_CFG_INT, "8192", 512, 10000000, NULL, false,
     "The model's context window; the prompt gets this minus inference.max_tokens (estimated tokens)."},
    /* ingestion: extraction limits, chunking, embeddings */
    {"ingest.max_document_bytes", QR_CFG_INT, "67108864", 1, 17179869184.0, NULL, false,
     "Largest document accepted, and largest text extracted from one (bytes)."},
    {"ingest.extract_timeout_ms", QR_CFG_INT, "30000", 10, 3600000, NULL, false,
     "Wall-clock limit of one sandboxed extraction (HTML, PDF, DOCX); the extractor is killed after it."},
    {"ingest.extract_memory_mb", QR_CFG_INT, "512", 16, 65536, NULL, false,
     "Memory one sandboxed extraction may use beyond its starting size."},
    {"ingest.zip_max_bytes", QR_CFG_INT, "268435456", 1024, 17179869184.0, NULL, false,
     "Largest total uncompressed size of a DOCX archive; larger ones are refused as zip bombs."},
    {"ingest.zip_max_ratio", QR_CFG_DOUBLE, "100", 2, 100000, NULL, false,
     "Largest uncompressed/compressed ratio of a DOCX archive or entry over 1 MiB; higher is refused."},
    {"ingest.invalid_utf8", QR_CFG_STRING, "repair", NO_RANGE, "repair|reject", false,
     "Invalid UTF-8 in a document: repair (U+FFFD) or reject the document."},
    {"chunk.max_tokens", QR_CFG_INT, "300", 8, 100000, NULL, false,
     "Token budget of one chunk, overlap included (approximate tokens, see README)."},
    {"chunk.overlap", QR_CFG_DOUBLE, "0.15", 0, 0.5, NULL, false,
     "Fraction of the budget a chunk repeats from the end of the previous one (0 for none)."},
    {"embed.backend", QR_CFG_STRING, "local", NO_RANGE, "local|openai", false,
     "Embeddings: local (offline feature hashing) or openai (an OpenAI-compatible /embeddings server)."},
    {"embed.base_url", QR_CFG_STRING, "", NO_RANGE, NULL, false,
     "Base URL of the embeddings server, e.g. http://127.0.0.1:8000/v1 (embed.backend=openai)."},
    {"embed.model", QR_CFG_STRING, "", NO_RANGE, NULL, false, "Embedding model name sent to the server."},
    {"embed.api_key", QR_CFG_STRING, "", NO_RANGE, NULL, true, "API key of the embeddings server (Bearer)."},
    {"embed.batch_size", QR_CFG_INT, "64", 1, 2048, NULL, false, "Texts per embeddings request."},
    {"embed.timeout_ms", QR_CFG_INT, "30000", 100, 600000, NULL, false,
     "Deadline of one embeddings request."},
    {"embed.retries", QR_CFG_INT, "3", 0, 10, NULL, false,
     "Retries of an embeddings request after 429, 5xx or a transport error (jittered backoff)."},
    {"embed.dim", QR_CFG_INT, "384", 1, 8192, NULL, false,
     "Vector dimension: of the local embedder, and the one required from (and requested of) the server."},
    {"embed.send_dimensions", QR_CFG_BOOL, "on", NO_RANGE, NULL, false,
     "Send embed.dim as `dimensions` (off for servers and models that refuse the parameter)."},
    /* retrieval */
    {"retrieval.mode", QR_CFG_STRING, "hybrid", NO_RANGE, "hybrid|bm25|vector", false,
     "Search mode when a request names none: hybrid (BM25 and vectors fused), bm25 or vector."},
    {"retrieval.fusion", QR_CFG_STRING, "weighted", NO_RANGE, "rrf|weighted", false,
     "How hybrid search fuses the lists: rrf (reciprocal rank) or weighted (scores over each list's best)."},
    {"retrieval.rrf_k", QR_CFG_DOUBLE, "60", 1, 10000, NULL, false,
     "RRF rank offset: a chunk at rank r of a list adds the list's weight / (rrf_k + r)."},
    {"retrieval.vector_weight", QR_CFG_DOUBLE, "0.2", 0, 100, NULL, false,
     "Weight of the vector list in hybrid fusion (BM25's is 1)."},
    {"retrieval.weight_title", QR_CFG_DOUBLE, "2", 0, 1000, NULL, false, "BM25 weight of the title column."},
    {"retrieval.weight_headings", QR_CFG_DOUBLE, "1", 0, 1000, NULL, false,
     "BM25 weight of the heading path column."},
    {"retrieval.weight_body", QR_CFG_DOUBLE, "1", 0, 1000, NULL, false,
     "BM25 weight of the chunk text column."},
    {"retrieval.stopwords", QR_CFG_STRING, "default", NO_RANGE, NULL, false,
     "Words dropped from queries: default (English function words), none, or a comma-separated list "
     "(\"default,foo\" extends the default)."},
    {"retrieval.exact_share", QR_CFG_DOUBLE, "0.02", 0, 1, NULL, false,
     "Permitted share of the vector index below which vectors are searched by an exact scan of the "
     "permitted chunks."},
    {"retrieval.exact_min", QR_CFG_INT, "20000", 0, 1000000, NULL, false,
     "Up to this many permitted chunks, vectors are always searched by an exact scan of them."},
    {"retrieval.max_per_doc", QR_CFG_INT, "0", 0, 10000, NULL, false,
     "Most chunks of one document in a result list (0: no limit)."},
    {"retrieval.candidates", QR_CFG_INT, "100", 1, 10000, NULL, false,
     "Depth of the BM25 and vector lists that hybrid search fuses."},
    {"retrieval.snippet_marker_open", QR_CFG_STRING, "<mark>", NO_RANGE, NULL, false,
     "Inserted before each query match in snippets."},
    {"retrieval.snippet_marker_close", QR_CFG_STRING, "</mark>", NO_RANGE, NULL, false,
     "Inserted after each query match in snippets."},
    {"retrieval.snippet_tokens", QR_CFG_INT, "32", 1, 1000, NULL, false, "Words in a snippet."},
    {"retrieval.bm25_path", QR_CFG_STRING, "pruned", NO_RANGE, "pruned|fts5", false,
     "How BM25 lists of word queries are ranked: pruned (quarry's index under <data.dir>/bm25, the same top "
     "k "
     "without scoring every match) or fts5 (FTS5 scores every match)."},
    {"retrieval.timeout_ms", QR_CFG_INT, "10000", 1, 3.6e6, NULL, false,
     "Deadline of one search, checked inside its loops (FTS5, BM25, vectors); past it the search stops "
     "with a timeout (HTTP 504). In the server it counts from the hand-over to a worker (time queued "
     "counts)."},
    {"retrieval.max_terms", QR_CFG_INT, "256", 1, 1024, NULL, false,
     "Most words a query searches (stopwords dropped first; a repeated word and the words of quoted "
     "phrases count); more is refused (HTTP 400)."},
    {"retrieval.max_phrase_terms", QR_CFG_INT, "32", 1, 1024, NULL, false,
     "Most words in one quoted or excluded phrase; longer is refused (HTTP 400)."},
    {"retrieval.max_exclusions", QR_CFG_INT, "32", 0, 1024, NULL, false,
     "Most excluded words and phrases (-word, -\"a phrase\") in a query; more is refused (HTTP 400)."},
    /* the index maintainer */
    {"index.refresh_ms", QR_CFG_INT, "1000", 1, 3.6e6, NULL, false,
     "Longest time before a change made outside the server (quarry ingest) is searchable; writes through "
     "the API wake the maintainer at once."},
    {"index.startup_wait_ms", QR_CFG_INT, "2000", 0, 3.6e6, NULL, false,
     "How long the server waits at start for its indexes to open before it serves anyway (FTS5 ranks "
     "while they build)."},
    {"index.wait_for_ms", QR_CFG_INT, "60000", 1, 3.6e6, NULL, false,
     "How long a write with ?refresh=wait_for waits for the indexes before it answers 504."},
    /* pruned BM25 index */
    {"bm25.delta_max", QR_CFG_INT, "50000", 1, 1e9, NULL, false,
     "Chunks added or deleted since the BM25 index's last build above which it is rebuilt."},
    {"bm25.principal_cache", QR_CFG_INT, "1024", 1, 1e6, NULL, false,
     "Principals whose readable-document sets the BM25 index keeps in memory."},
};

#define CONFIG_NKEYS (sizeof(config_table) / sizeof(config_table[0]))

typedef struct {
    char *str; /* text form, always set */
    int64_t i;
    double d;
    bool b;
    qr_cfg_source src;
} cfg_value;

struct qr_config {
    cfg_value v[CONFIG_NKEYS];
};

const qr_cfg_key *qr_config_keys(size_t *count)
{
    *count = CONFIG_NKEYS;
    return config_table;
}

static int key_index(const char *name)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (strcmp(config_table[i].name, name) == 0)
            return (int)i;
    return -1;
}

static const char *source_name(qr_cfg_source src)
{
    switch (src) {
    case QR_CFG_SRC_DEFAULT: return "default";
    case QR_CFG_SRC_FILE: return "file";
    case QR_CFG_SRC_ENV: return "env";
    case QR_CFG_SRC_CLI: return "command line";
    }
    return "?";
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "on", "yes"};
    static const char *const no[] = {"0", "false", "off", "no"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool choice_ok(const char *choices, const char *value)
{
    size_t vlen = strlen(value);
    const char *p = choices;
    while (*p) {
        size_t len = strcspn(p, "|");
        if (len == vlen && strncmp(p, value, len) == 0)
            return true;
        p += len;
        if (*p == '|')
            p++;
    }
    return false;
}

/* Checks that a value has no bytes that would corrupt a log line, a header or a filter. */
static bool text_ok(const char *value)
{
    size_t n = strlen(value);
    if (!qr_utf8_valid(value, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)value[i] < 0x20 || value[i] == 0x7F)
            return false;
    return true;
}

/* Rules for particular keys beyond type and range. */
static qr_status validate_special(const qr_cfg_key *key, const char *value, char *err)
{
    if (strcmp(key->name, "ldap.uri") == 0 && *value) {
        char *copy = strdup(value);
        if (!copy)
            return QR_ENOMEM;
        qr_status st = QR_OK;
        char *save = NULL;
        for (char *u = strtok_r(copy, " ,", &save); u; u = strtok_r(NULL, " ,", &save)) {
            if (strncasecmp(u, "ldap://", 7) != 0 && strncasecmp(u, "ldaps://", 8) != 0 &&
                strncasecmp(u, "ldapi://", 8) != 0) {
                st = qr_fail(err, QR_EINVAL, "ldap.uri: '%s' is not an ldap://, ldaps:// or ldapi:// URI", u);
                break;
            }
        }
        free(copy);
        return st;
    }
    if (strcmp(key->name, "inference.base_url") == 0 && *value && strncasecmp(value, "http://", 7) != 0 &&
        strncasecmp(value, "https://", 8) != 0)
        return qr_fail(err, QR_EINVAL, "inference.base_url: '%s' is not an http:// or https:// URL", value);
    if (strcmp(key->name, "server.listen") == 0) {
        const char *colon = strrchr(value, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || colon == value || !end || *end || colon[1] == '\0' || port < 0 || port > 65535)
            return qr_fail(err, QR_EINVAL, "server.listen: '%s' is not host:port", value);
    }
    if (strcmp(key->name, "log.components") == 0) {
        /* validated by the logger's own parser */
        qr_log_level level;
        const char *p = value;
        while (*p) {
            size_t len = strcspn(p, ",");
            const char *eq = memchr(p, '=', len);
            char lvl[16];
            size_t lvl_len = eq ? len - (size_t)(eq - p) - 1 : 0;
            if (!eq || eq == p || lvl_len >= sizeof(lvl))
                return qr_fail(err, QR_EINVAL, "log.components: bad entry '%.*s' (expected component=level)",
                               (int)len, p);
            memcpy(lvl, eq + 1, lvl_len);
            lvl[lvl_len] = '\0';
            if (qr_log_level_parse(lvl, &level, err))
                return QR_EINVAL;
            p += len;
            if (*p == ',')
                p++;
        }
    }
    if (strcmp(key->name, "auth.token_secret") == 0 && *value && strlen(value) < 32)
        return qr_fail(err, QR_EINVAL, "auth.token_secret: too short (%zu characters; at least 32)",
                       strlen(value));
    if ((strcmp(key->name, "ldap.user_filter") == 0 && !strstr(value, "%s")) ||
        (strcmp(key->name, "ldap.group_filter") == 0 && !strstr(value, "%d") && !strstr(value, "%u")))
        return qr_fail(err, QR_EINVAL, "%s: '%s' has no placeholder (%s)", key->name, value,
                       key->name[5] == 'u' ? "%s" : "%d or %u");
    return QR_OK;
}

/* Parses and validates text for key k into *out (out->str is allocated). */
static qr_status parse_value(const qr_cfg_key *key, const char *value, cfg_value *out, char *err)
{
    memset(out, 0, sizeof(*out));
    if (!text_ok(value))
        return qr_fail(err, QR_EINVAL, "%s: value is not valid UTF-8 text without control characters",
                       key->name);
    switch (key->type) {
    case QR_CFG_STRING:
        if (key->choices && !choice_ok(key->choices, value))
            return qr_fail(err, QR_EINVAL, "%s: '%s' is not one of %s", key->name, value, key->choices);
        break;
    case QR_CFG_INT: {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (!*value || errno || !end || *end)
            return qr_fail(err, QR_EINVAL, "%s: '%s' is not an integer", key->name, value);
        if (key->min <= key->max && ((double)v < key->min || (double)v > key->max))
            return qr_fail(err, QR_EINVAL, "%s: %lld is out of range [%.0f, %.0f]", key->name, v, key->min,
                           key->max);
        out->i = v;
        out->d = (double)v;
        break;
    }
    case QR_CFG_DOUBLE: {
        char *end = NULL;
        errno = 0;
        double v = strtod(value, &end);
        if (!*value || errno || !end || *end || !isfinite(v))
            return qr_fail(err, QR_EINVAL, "%s: '%s' is not a number", key->name, value);
        if (key->min <= key->max && (v < key->min || v > key->max))
            return qr_fail(err, QR_EINVAL, "%s: %g is out of range [%g, %g]", key->name, v, key->min,
                           key->max);
        out->d = v;
        break;
    }
    case QR_CFG_BOOL:
        if (!parse_bool(value, &out->b))
            return qr_fail(err, QR_EINVAL, "%s: '%s' is not a boolean (true/false, on/off, yes/no, 1/0)",
                           key->name, value);
        break;
    }
    qr_status st = validate_special(key, value, err);
    if (st)
        return st;
    out->str = strdup(value);
    return out->str ? QR_OK : QR_ENOMEM;
}

qr_config *qr_config_new(void)
{
    qr_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        char err[QR_ERR_LEN];
        if (parse_value(&config_table[i], config_table[i].default_str, &cfg->v[i], err)) {
            /* a default that fails its own validation is a bug in the table */
            fprintf(stderr, "quarry: bad default in config table: %s\n", err);
            abort();
        }
    }
    return cfg;
}

void qr_config_free(qr_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        free(cfg->v[i].str);
    free(cfg);
}

/* A staged change: values replaced in a load, applied only when the whole load succeeds. */
typedef struct {
    cfg_value v[CONFIG_NKEYS];
    bool set[CONFIG_NKEYS];
} cfg_stage;

static void stage_release(cfg_stage *s)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (s->set[i])
            free(s->v[i].str);
}

static void stage_commit(qr_config *cfg, cfg_stage *s)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        if (!s->set[i])
            continue;
        free(cfg->v[i].str);
        cfg->v[i] = s->v[i];
        s->set[i] = false;
    }
}

static qr_status stage_set(cfg_stage *s, const char *name, const char *value, qr_cfg_source src, char *err)
{
    int k = key_index(name);
    if (k < 0)
        return qr_fail(err, QR_EINVAL, "unknown configuration key '%s'", name);
    cfg_value v;
    qr_status st = parse_value(&config_table[k], value, &v, err);
    if (st)
        return st;
    v.src = src;
    if (s->set[k])
        free(s->v[k].str);
    s->v[k] = v;
    s->set[k] = true;
    return QR_OK;
}

qr_status qr_config_set(qr_config *cfg, const char *name, const char *value, qr_cfg_source src, char *err)
{
    cfg_stage stage = {0};
    qr_status st = stage_set(&stage, name, value, src, err);
    if (!st)
        stage_commit(cfg, &stage);
    stage_release(&stage);
    return st;
}

qr_status qr_config_set_arg(qr_config *cfg, const char *assignment, char *err)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return qr_fail(err, QR_EINVAL, "bad setting '%s' (expected section.key=value)", assignment);
    char name[128];
    size_t len = (size_t)(eq - assignment);
    if (len >= sizeof(name))
        return qr_fail(err, QR_EINVAL, "unknown configuration key '%.*s'", (int)len, assignment);
    memcpy(name, assignment, len);
    name[len] = '\0';
    return qr_config_set(cfg, name, eq + 1, QR_CFG_SRC_CLI, err);
}

/* Text form of a JSON value for key `name`; arrays of strings join with commas. */
static qr_status json_to_text(const char *path, const char *name, json_t *val, qr_buf *out, char *err)
{
    char num[64];
    switch (json_typeof(val)) {
    case JSON_STRING:
        return qr_buf_append(out, json_string_value(val), json_string_length(val)) ? QR_ENOMEM : QR_OK;
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(val));
        return qr_buf_puts(out, num);
    case JSON_REAL: snprintf(num, sizeof(num), "%.17g", json_real_value(val)); return qr_buf_puts(out, num);
    case JSON_TRUE: return qr_buf_puts(out, "true");
    case JSON_FALSE: return qr_buf_puts(out, "false");
    case JSON_ARRAY: {
        size_t i;
        json_t *item;
        json_array_foreach(val, i, item)
        {
            if (!json_is_string(item))
                return qr_fail(err, QR_EINVAL, "%s: %s: a list may hold only strings", path, name);
            if ((i && qr_buf_putc(out, ',')) || qr_buf_puts(out, json_string_value(item)))
                return QR_ENOMEM;
        }
        return QR_OK;
    }
    default: return qr_fail(err, QR_EINVAL, "%s: %s: expected a string, number, boolean or list", path, name);
    }
}

static qr_status stage_json(cfg_stage *stage, const char *path, const char *name, json_t *val, char *err)
{
    int k = key_index(name);
    if (k < 0)
        return qr_fail(err, QR_EINVAL, "%s: unknown configuration key '%s'", path, name);
    const qr_cfg_key *key = &config_table[k];
    bool type_ok = json_is_string(val) || (key->type == QR_CFG_INT && json_is_integer(val)) ||
                   (key->type == QR_CFG_DOUBLE && json_is_number(val)) ||
                   (key->type == QR_CFG_BOOL && json_is_boolean(val)) ||
                   (key->type == QR_CFG_STRING && json_is_array(val));
    if (!type_ok)
        return qr_fail(err, QR_EINVAL, "%s: %s: wrong type for a %s value", path, name,
                       key->type == QR_CFG_INT      ? "integer"
                       : key->type == QR_CFG_DOUBLE ? "number"
                       : key->type == QR_CFG_BOOL   ? "boolean"
                                                    : "string");
    qr_buf text;
    qr_buf_init(&text, CONFIG_FILE_MAX);
    qr_status st = json_to_text(path, name, val, &text, err);
    if (!st) {
        char inner[QR_ERR_LEN];
        st = stage_set(stage, name, qr_buf_str(&text), QR_CFG_SRC_FILE, inner);
        if (st)
            qr_fail(err, st, "%s: %s", path, inner);
    }
    qr_buf_release(&text);
    return st;
}

qr_status qr_config_load_file(qr_config *cfg, const char *path, char *err)
{
    char *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    cfg_stage stage = {0};
    qr_status st = qr_read_file(path, CONFIG_FILE_MAX, &text, &len, err);
    if (st)
        goto out;
    json_error_t jerr;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        st = qr_fail(err, QR_EINVAL, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        st = qr_fail(err, QR_EINVAL, "%s: the configuration must be a JSON object of sections", path);
        goto out;
    }
    const char *section;
    json_t *sval;
    json_object_foreach(root, section, sval)
    {
        if (strchr(section, '.')) {
            st = stage_json(&stage, path, section, sval, err);
        } else if (json_is_object(sval)) {
            const char *key;
            json_t *kval;
            json_object_foreach(sval, key, kval)
            {
                char name[160];
                if ((size_t)snprintf(name, sizeof(name), "%s.%s", section, key) >= sizeof(name)) {
                    st = qr_fail(err, QR_EINVAL, "%s: unknown configuration key '%s.%s'", path, section, key);
                    break;
                }
                st = stage_json(&stage, path, name, kval, err);
                if (st)
                    break;
            }
        } else {
            st = qr_fail(err, QR_EINVAL, "%s: '%s' must be an object of keys (or a dotted key)", path,
                         section);
        }
        if (st)
            goto out;
    }
    stage_commit(cfg, &stage);
out:
    stage_release(&stage);
    json_decref(root);
    free(text);
    return st;
}

/* QUARRY_ variables that are not configuration keys. */
static bool env_ignored(const char *name)
{
    return strncmp(name, "QUARRY_TEST_", 12) == 0 || strncmp(name, "QUARRY_FAISS_", 13) == 0 ||
           strncmp(name, "QUARRY_BOOTSTRAP_", 17) == 0 || strcmp(name, "QUARRY_CONFIG") == 0;
}

static void env_name(const char *key, char *out, size_t len)
{
    size_t j = (size_t)snprintf(out, len, "QUARRY_");
    for (size_t i = 0; key[i] && j + 1 < len; i++)
        out[j++] = key[i] == '.' ? '_' : (char)toupper((unsigned char)key[i]);
    out[j] = '\0';
}

extern char **environ;

qr_status qr_config_load_env(qr_config *cfg, char *const *envp, char *err)
{
    cfg_stage stage = {0};
    qr_status st = QR_OK;
    if (!envp)
        envp = environ;
    for (size_t e = 0; envp[e]; e++) {
        const char *var = envp[e];
        if (strncmp(var, "QUARRY_", 7) != 0)
            continue;
        const char *eq = strchr(var, '=');
        if (!eq)
            continue;
        size_t nlen = (size_t)(eq - var);
        bool matched = false;
        for (size_t k = 0; k < CONFIG_NKEYS; k++) {
            char name[160];
            env_name(config_table[k].name, name, sizeof(name));
            if (strlen(name) != nlen || strncmp(name, var, nlen) != 0)
                continue;
            matched = true;
            char inner[QR_ERR_LEN];
            st = stage_set(&stage, config_table[k].name, eq + 1, QR_CFG_SRC_ENV, inner);
            if (st) {
                qr_fail(err, st, "environment variable %s: %s", name, inner);
                goto out;
            }
        }
        if (!matched) {
            char name[160];
            snprintf(name, sizeof(name), "%.*s", (int)nlen, var);
            if (!env_ignored(name))
                qr_log(QR_LOG_WARN, "config", "ignoring environment variable %s: no such configuration key",
                       name);
        }
    }
    stage_commit(cfg, &stage);
out:
    stage_release(&stage);
    return st;
}

static const cfg_value *lookup(const qr_config *cfg, const char *name, qr_cfg_type type)
{
    int k = key_index(name);
    if (k < 0 || config_table[k].type != type) {
        fprintf(stderr, "quarry: bug: configuration key '%s' %s\n", name,
                k < 0 ? "does not exist" : "read with the wrong type");
        abort();
    }
    return &cfg->v[k];
}

const char *qr_config_str(const qr_config *cfg, const char *name)
{
    return lookup(cfg, name, QR_CFG_STRING)->str;
}

int64_t qr_config_int(const qr_config *cfg, const char *name)
{
    return lookup(cfg, name, QR_CFG_INT)->i;
}

double qr_config_double(const qr_config *cfg, const char *name)
{
    return lookup(cfg, name, QR_CFG_DOUBLE)->d;
}

bool qr_config_bool(const qr_config *cfg, const char *name)
{
    return lookup(cfg, name, QR_CFG_BOOL)->b;
}

qr_cfg_source qr_config_source(const qr_config *cfg, const char *name)
{
    int k = key_index(name);
    return k < 0 ? QR_CFG_SRC_DEFAULT : cfg->v[k].src;
}

qr_status qr_config_dump(const qr_config *cfg, bool json, qr_buf *out)
{
    qr_status st = json ? qr_buf_putc(out, '{') : QR_OK;
    for (size_t k = 0; k < CONFIG_NKEYS && !st; k++) {
        const qr_cfg_key *key = &config_table[k];
        const cfg_value *v = &cfg->v[k];
        const char *shown = key->secret && *v->str ? "********" : v->str;
        if (json) {
            if (k)
                st = qr_buf_putc(out, ',');
            if (!st)
                st = qr_json_escape(out, key->name, strlen(key->name));
            if (!st)
                st = qr_buf_putc(out, ':');
            if (st)
                break;
            if (key->type == QR_CFG_STRING || (key->secret && *v->str))
                st = qr_json_escape(out, shown, strlen(shown));
            else if (key->type == QR_CFG_BOOL)
                st = qr_buf_puts(out, v->b ? "true" : "false");
            else if (key->type == QR_CFG_INT)
                st = qr_buf_printf(out, "%lld", (long long)v->i);
            else
                st = qr_buf_printf(out, "%.17g", v->d);
        } else {
            st = qr_buf_printf(out, "%-24s = %-40s # %s\n", key->name,
                               key->type == QR_CFG_BOOL ? (v->b ? "on" : "off") : shown, source_name(v->src));
        }
    }
    if (json && !st)
        st = qr_buf_puts(out, "}\n");
    return st;
}

qr_status qr_config_apply_logging(const qr_config *cfg, char *err)
{
    qr_log_level level;
    qr_status st = qr_log_level_parse(qr_config_str(cfg, "log.level"), &level, err);
    if (st)
        return st;
    qr_log_format format = strcmp(qr_config_str(cfg, "log.format"), "json") == 0 ? QR_LOG_JSON : QR_LOG_TEXT;
    return qr_log_configure(level, format, qr_config_str(cfg, "log.components"), err);
}
