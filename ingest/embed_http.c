/*
 * The HTTP embedding backends: one client for the wire shapes deployments run (embed_wire):
 * OpenAI's POST {base}/embeddings (also what llama.cpp's server and vLLM serve), Azure OpenAI's
 * deployment URL with ?api-version= and an api-key header, Ollama's POST {base}/api/embed and
 * Hugging Face text-embeddings-inference's POST {base}/embed. Texts go in batches of
 * embed.batch_size. Rate limits (429, honouring a Retry-After in seconds), server errors (5xx),
 * transport failures and cut or malformed responses are retried up to embed.retries times with
 * jittered exponential backoff; other 4xx answers fail at once with the server's own message.
 * Every answer is checked whole before any of it is used: one vector per input, each of exactly
 * embed.dim finite numbers (the store fixes one dimension per index; a server or model that
 * returns another size is an error, never silently accepted), and a body no larger than such an
 * answer can be. Vectors are L2-normalised, as the local embedder's are. Empty texts are not sent
 * (the APIs reject them) and get a zero vector. The API key goes in a header only and is never
 * logged.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "ingest/ingest_int.h"

#define RESPONSE_CAP    (256u * 1024u * 1024u)
#define BACKOFF_BASE_MS 250
#define BACKOFF_MAX_MS  8000
#define RETRY_AFTER_MAX 60
#define CONNECT_TIMEOUT 10000
/* An answer's size bound: a fixed allowance for the envelope (usage, model, an error message)
 * plus a generous width per number ("-0.0123456789012345678," is 23 bytes). */
#define RESPONSE_SLACK      (1u << 20)
#define RESPONSE_PER_NUMBER 48u

typedef struct {
    CURL *curl;
    struct curl_slist *headers;
    embed_wire wire;
    char *url;
    char *model; /* sent to the server; "" when not sent (azure without embed.model, tei) */
    size_t batch;
    long timeout_ms;
    int retries;
    bool send_dimensions;
    unsigned int seed;
    long retry_after_s; /* from the last response, -1 when absent */
} http_state;

static const char *const wire_names[] = {"openai", "azure", "ollama", "tei"};

static void http_free(void *p)
{
    http_state *s = p;
    if (!s)
        return;
    if (s->curl)
        curl_easy_cleanup(s->curl);
    curl_slist_free_all(s->headers);
    free(s->url);
    free(s->model);
    free(s);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    qr_buf *b = arg;
    return qr_buf_append(b, p, size * n) ? 0 : size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    http_state *s = arg;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len > sizeof(name) - 1 && strncasecmp(p, name, sizeof(name) - 1) == 0) {
        char v[32];
        size_t k = len - (sizeof(name) - 1);
        if (k >= sizeof(v))
            k = sizeof(v) - 1;
        memcpy(v, p + sizeof(name) - 1, k);
        v[k] = '\0';
        char *end;
        long secs = strtol(v, &end, 10);
        /* Seconds only; an HTTP date falls back to the backoff. */
        if (end != v && secs >= 0)
            s->retry_after_s = secs > RETRY_AFTER_MAX ? RETRY_AFTER_MAX : secs;
    }
    return len;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Equal jitter: half the exponential delay, plus a random part of the other half. */
static long backoff_ms(http_state *s, int attempt)
{
    long d = BACKOFF_BASE_MS;
    for (int i = 0; i < attempt && d < BACKOFF_MAX_MS; i++)
        d *= 2;
    if (d > BACKOFF_MAX_MS)
        d = BACKOFF_MAX_MS;
    return d / 2 + (long)(rand_r(&s->seed) % (unsigned)(d / 2 + 1));
}

/* The server's error message: OpenAI's and Azure's {"error":{"message"}}, Ollama's and TEI's
 * {"error":"..."}, or a cut of the raw body. */
static void server_message(const qr_buf *body, char *out, size_t outlen)
{
    json_t *root = json_loadb(qr_buf_str(body), qr_buf_len(body), 0, NULL);
    const char *msg = NULL;
    if (root) {
        json_t *e = json_object_get(root, "error");
        msg = json_string_value(json_is_object(e) ? json_object_get(e, "message") : e);
    }
    if (msg)
        snprintf(out, outlen, "%s", msg);
    else
        snprintf(out, outlen, "%.200s", qr_buf_str(body));
    json_decref(root);
}

/* Builds the request body for texts[idx[0..m)] in the server's shape. */
static qr_status build_body(const http_state *s, int dim, const char *const *texts, const size_t *lens,
                            const size_t *idx, size_t m, qr_buf *body)
{
    qr_status st = qr_buf_putc(body, '{');
    if (!st && *s->model) {
        st = qr_buf_puts(body, "\"model\":");
        if (!st)
            st = qr_json_escape(body, s->model, strlen(s->model));
        if (!st)
            st = qr_buf_putc(body, ',');
    }
    if (!st && (s->wire == EMBED_WIRE_OPENAI || s->wire == EMBED_WIRE_AZURE)) {
        if (s->send_dimensions)
            st = qr_buf_printf(body, "\"dimensions\":%d,", dim);
        if (!st)
            st = qr_buf_puts(body, "\"encoding_format\":\"float\",");
    }
    if (!st)
        st = qr_buf_puts(body, s->wire == EMBED_WIRE_TEI ? "\"inputs\":[" : "\"input\":[");
    for (size_t i = 0; i < m && !st; i++) {
        size_t k = idx[i];
        if (i)
            st = qr_buf_putc(body, ',');
        if (!st)
            st = qr_json_escape(body, texts[k], lens ? lens[k] : strlen(texts[k]));
    }
    if (!st)
        st = qr_buf_putc(body, ']');
    /* TEI: unit vectors, and a text over the model's window cut rather than refused (the
     * OpenAI-shaped servers and Ollama truncate by default or refuse with a message). */
    if (!st && s->wire == EMBED_WIRE_TEI)
        st = qr_buf_puts(body, ",\"normalize\":true,\"truncate\":true");
    if (!st)
        st = qr_buf_putc(body, '}');
    return st;
}

/* Checks one vector and writes it, L2-normalised, to row. item names it in errors. */
static qr_status take_vector(const json_t *vec, int dim, size_t item, float *row, char *err)
{
    if (!json_is_array(vec))
        return qr_fail(err, QR_EUNAVAILABLE, "the embedding server sent a malformed response (item %zu)",
                       item);
    if (json_array_size(vec) != (size_t)dim)
        return qr_fail(err, QR_EINVAL,
                       "the embedding server returned %zu-dimensional vectors, expected %d (embed.dim); "
                       "set embed.dim to the model's dimension",
                       json_array_size(vec), dim);
    double norm = 0;
    for (int d = 0; d < dim; d++) {
        json_t *v = json_array_get(vec, (size_t)d);
        if (!json_is_number(v))
            return qr_fail(err, QR_EUNAVAILABLE, "the embedding server sent a non-number in vector %zu",
                           item);
        row[d] = (float)json_number_value(v);
        /* a value past float's range becomes infinite here: refused, as NaN would be */
        if (!isfinite(row[d]))
            return qr_fail(err, QR_EINVAL,
                           "the embedding server sent a number that is not finite as a float in vector %zu",
                           item);
        norm += (double)row[d] * row[d];
    }
    if (!isfinite(norm))
        return qr_fail(err, QR_EINVAL, "the embedding server sent a vector too large to normalise (item %zu)",
                       item);
    if (norm > 0) {
        double inv = 1.0 / sqrt(norm);
        for (int d = 0; d < dim; d++)
            row[d] = (float)(row[d] * inv);
    }
    return QR_OK;
}

/* The list of vectors in a 200 answer: data[] (openai, azure), embeddings (ollama) or the body
 * itself (tei). NULL when the body has no such list. */
static json_t *vector_list(embed_wire wire, json_t *root)
{
    json_t *list = NULL;
    if (wire == EMBED_WIRE_TEI)
        list = root;
    else if (wire == EMBED_WIRE_OLLAMA)
        list = json_object_get(root, "embeddings");
    else
        list = json_object_get(root, "data");
    return json_is_array(list) ? list : NULL;
}

/* Parses a 200 answer into out rows idx[0..m). */
static qr_status parse_vectors(embed_wire wire, const qr_buf *resp, int dim, const size_t *idx, size_t m,
                               float *out, char *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(qr_buf_str(resp), qr_buf_len(resp), 0, &jerr);
    qr_status st = QR_OK;
    bool *seen = NULL;
    json_t *list = root ? vector_list(wire, root) : NULL;
    if (!list) {
        st = qr_fail(err, QR_EUNAVAILABLE, "the embedding server sent a malformed response (%s)",
                     !root                       ? jerr.text
                     : wire == EMBED_WIRE_TEI    ? "not an array of vectors"
                     : wire == EMBED_WIRE_OLLAMA ? "no embeddings array"
                                                 : "no data array");
        goto out;
    }
    if (json_array_size(list) != m) {
        st = qr_fail(err, QR_EINVAL, "the embedding server returned %zu vectors for %zu inputs",
                     json_array_size(list), m);
        goto out;
    }
    seen = calloc(m ? m : 1, sizeof(*seen));
    if (!seen) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        /* OpenAI-shaped items carry their input's index (llama.cpp and vLLM too); the native
         * shapes answer in input order */
        size_t pos = i;
        json_t *vec = item;
        if (wire == EMBED_WIRE_OPENAI || wire == EMBED_WIRE_AZURE) {
            json_t *jidx = json_object_get(item, "index");
            if (json_is_integer(jidx))
                pos = json_integer_value(jidx) < 0 ? m : (size_t)json_integer_value(jidx);
            vec = json_object_get(item, "embedding");
        }
        if (pos >= m || seen[pos]) {
            st =
                qr_fail(err, QR_EUNAVAILABLE, "the embedding server sent a malformed response (item %zu)", i);
            goto out;
        }
        seen[pos] = true;
        if ((st = take_vector(vec, dim, i, out + idx[pos] * (size_t)dim, err)))
            goto out;
    }
out:
    free(seen);
    json_decref(root);
    return st;
}

/* Sends one batch, with retries. */
static qr_status send_batch(ingest_embedder *e, const char *const *texts, const size_t *lens,
                            const size_t *idx, size_t m, float *out, char *err)
{
    http_state *s = e->state;
    qr_buf body, resp;
    qr_buf_init(&body, SIZE_MAX / 2);
    /* no bigger than m vectors of e->dim numbers can be: a hostile or broken server cannot make
     * one batch hold hundreds of megabytes */
    size_t cap = RESPONSE_SLACK + m * (size_t)e->dim * RESPONSE_PER_NUMBER;
    if (cap > RESPONSE_CAP)
        cap = RESPONSE_CAP;
    qr_buf_init(&resp, cap);
    qr_status st = build_body(s, e->dim, texts, lens, idx, m, &body);
    if (st) {
        qr_buf_release(&body);
        return qr_fail(err, st, "out of memory");
    }
    char curl_err[CURL_ERROR_SIZE];
    for (int attempt = 0;; attempt++) {
        qr_buf_reset(&resp);
        curl_err[0] = '\0';
        s->retry_after_s = -1;
        curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, qr_buf_str(&body));
        curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)qr_buf_len(&body));
        curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, &resp);
        curl_easy_setopt(s->curl, CURLOPT_HEADERDATA, s);
        curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, curl_err);
        CURLcode cc = curl_easy_perform(s->curl);
        long code = 0;
        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &code);
        bool retry = false;
        if (cc != CURLE_OK) {
            const char *why = curl_err[0] ? curl_err : curl_easy_strerror(cc);
            if (cc == CURLE_OPERATION_TIMEDOUT)
                st = qr_fail(err, QR_ETIMEOUT,
                             "the embedding server at %s did not answer within %ld ms "
                             "(embed.timeout_ms): %s",
                             s->url, s->timeout_ms, why);
            else if (cc == CURLE_WRITE_ERROR)
                st = qr_fail(err, QR_ELIMIT,
                             "the embedding server's answer exceeds %zu bytes, more than %zu vectors of %d "
                             "numbers can take",
                             cap, m, e->dim);
            else
                st =
                    qr_fail(err, QR_EUNAVAILABLE, "cannot reach the embedding server at %s: %s", s->url, why);
            retry = cc != CURLE_WRITE_ERROR;
        } else if (code == 200) {
            st = parse_vectors(s->wire, &resp, e->dim, idx, m, out, err);
            retry = st == QR_EUNAVAILABLE; /* a cut or garbled body */
        } else {
            char msg[256];
            server_message(&resp, msg, sizeof(msg));
            if (code == 429 || code >= 500) {
                st = qr_fail(err, QR_EUNAVAILABLE, "the embedding server at %s answered HTTP %ld: %s", s->url,
                             code, msg);
                retry = true;
            } else {
                st = qr_fail(err, code == 401 || code == 403 ? QR_EAUTH : QR_EINVAL,
                             "the embedding server at %s refused the request (HTTP %ld): %s", s->url, code,
                             msg);
            }
        }
        if (!retry || attempt >= s->retries)
            break;
        long wait = s->retry_after_s >= 0 && code == 429 ? s->retry_after_s * 1000 + backoff_ms(s, 0) / 4
                                                         : backoff_ms(s, attempt);
        qr_log(QR_LOG_WARN, "ingest", "embedding request failed (attempt %d of %d), retrying in %ld ms",
               attempt + 1, s->retries + 1, wait);
        sleep_ms(wait);
    }
    if (st && s->retries > 0 && st != QR_EINVAL && st != QR_EAUTH && st != QR_ELIMIT) {
        char inner[QR_ERR_LEN];
        snprintf(inner, sizeof(inner), "%s", err ? err : "");
        qr_fail(err, st, "%s (after %d attempts)", inner, s->retries + 1);
    }
    qr_buf_release(&body);
    qr_buf_release(&resp);
    return st;
}

static qr_status http_embed(ingest_embedder *e, const char *const *texts, const size_t *lens, size_t n,
                            float *out, char *err)
{
    http_state *s = e->state;
    size_t *idx = malloc(s->batch * sizeof(*idx));
    if (!idx)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    memset(out, 0, n * (size_t)e->dim * sizeof(float));
    qr_status st = QR_OK;
    size_t m = 0;
    for (size_t i = 0; i <= n && !st; i++) {
        if (i < n && (lens ? lens[i] : strlen(texts[i])) > 0)
            idx[m++] = i;
        if (m == s->batch || (i == n && m > 0)) {
            st = send_batch(e, texts, lens, idx, m, out, err);
            m = 0;
        }
    }
    free(idx);
    return st;
}

static const embed_backend http_backend = {http_embed, http_free};

/* The request URL: the shape's path under the base URL, and Azure's api-version. */
static qr_status make_url(const http_state *s, const char *base, const char *api_version, char *err)
{
    static const char *const paths[] = {"/embeddings", "/embeddings", "/api/embed", "/embed"};
    size_t blen = strlen(base);
    while (blen && base[blen - 1] == '/')
        blen--;
    qr_buf url;
    qr_buf_init(&url, 8192);
    qr_status st = qr_buf_append(&url, base, blen);
    if (!st)
        st = qr_buf_puts(&url, paths[s->wire]);
    if (!st && s->wire == EMBED_WIRE_AZURE) {
        char *v = curl_easy_escape(NULL, api_version, 0);
        st = v ? qr_buf_printf(&url, "?api-version=%s", v) : QR_ENOMEM;
        curl_free(v);
    }
    if (st) {
        qr_buf_release(&url);
        return qr_fail(err, st, st == QR_ENOMEM ? "out of memory" : "embed.base_url is too long");
    }
    ((http_state *)s)->url = qr_buf_detach(&url);
    return s->url ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory");
}

/* Azure names the model by its deployment: the last path segment of the base URL. */
static char *deployment_name(const char *base)
{
    size_t end = strlen(base);
    while (end && base[end - 1] == '/')
        end--;
    size_t start = end;
    while (start && base[start - 1] != '/')
        start--;
    return strndup(base + start, end - start);
}

static qr_status open_state(const qr_config *cfg, http_state *s, char *err)
{
    const qr_settings *set = qr_config_settings(cfg);
    const char *base = set->embed_base_url;
    const char *model = set->embed_model;
    const char *key = set->embed_api_key;
    const char *api_version = set->embed_api_version;
    const char *name = wire_names[s->wire];
    if (!*base)
        return qr_fail(err, QR_EINVAL, "embed.backend is %s but embed.base_url is not set", name);
    if (strncasecmp(base, "http://", 7) != 0 && strncasecmp(base, "https://", 8) != 0)
        return qr_fail(err, QR_EINVAL, "embed.base_url: '%s' is not an http:// or https:// URL", base);
    /* the model is what the store records: only Azure can name it another way (its deployment) */
    if (!*model && s->wire != EMBED_WIRE_AZURE)
        return qr_fail(err, QR_EINVAL, "embed.backend is %s but embed.model is not set%s", name,
                       s->wire == EMBED_WIRE_TEI ? " (the model the server runs; recorded in the store)"
                                                 : "");
    if (s->wire == EMBED_WIRE_AZURE && !*api_version)
        return qr_fail(err, QR_EINVAL,
                       "embed.backend is azure but embed.api_version is not set (e.g. 2024-10-21)");
    if (s->wire != EMBED_WIRE_AZURE && *api_version)
        return qr_fail(err, QR_EINVAL, "embed.api_version is set but embed.backend is %s, not azure", name);
    qr_status st = make_url(s, base, api_version, err);
    if (st)
        return st;
    /* TEI serves one model and takes no model field */
    s->model = strdup(s->wire == EMBED_WIRE_TEI ? "" : model);
    s->batch = (size_t)set->embed_batch_size;
    s->timeout_ms = (long)set->embed_timeout_ms;
    s->retries = (int)set->embed_retries;
    s->send_dimensions = set->embed_send_dimensions;
    s->seed = (unsigned)(qr_now_ns() ^ (uint64_t)getpid());
    if (!s->model)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return qr_fail(err, QR_EINTERNAL, "cannot initialise libcurl");
    s->curl = curl_easy_init();
    if (!s->curl)
        return qr_fail(err, QR_ENOMEM, "cannot create a libcurl handle");
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (h)
        s->headers = h;
    if (h && *key) {
        qr_buf auth;
        qr_buf_init(&auth, 8192);
        if (qr_buf_printf(&auth, s->wire == EMBED_WIRE_AZURE ? "api-key: %s" : "Authorization: Bearer %s",
                          key) == QR_OK)
            h = curl_slist_append(s->headers, qr_buf_str(&auth));
        else
            h = NULL;
        /* The key should not linger in freed memory longer than needed. */
        qr_buf_wipe(&auth);
        qr_buf_release(&auth);
        if (h)
            s->headers = h;
    }
    if (!h)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    long connect_ms = s->timeout_ms < CONNECT_TIMEOUT ? s->timeout_ms : CONNECT_TIMEOUT;
    curl_easy_setopt(s->curl, CURLOPT_URL, s->url);
    curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(s->curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(s->curl, CURLOPT_TIMEOUT_MS, s->timeout_ms);
    curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(s->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(s->curl, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(s->curl, CURLOPT_USERAGENT, "quarry/" QUARRY_VERSION);
    return QR_OK;
}

qr_status embed_http_open(const qr_config *cfg, embed_wire wire, ingest_embedder *e, char *err)
{
    http_state *s = calloc(1, sizeof(*s));
    if (!s)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    s->wire = wire;
    qr_status st = open_state(cfg, s, err);
    char *model = NULL;
    if (!st) {
        const char *configured = qr_config_settings(cfg)->embed_model;
        model = *configured ? strdup(configured) : deployment_name(qr_config_settings(cfg)->embed_base_url);
        if (!model)
            st = qr_fail(err, QR_ENOMEM, "out of memory");
        else if (!*model)
            st = qr_fail(err, QR_EINVAL, "embed.base_url '%s' names no deployment: set embed.model",
                         qr_config_settings(cfg)->embed_base_url);
    }
    if (st) {
        free(model);
        http_free(s);
        return st;
    }
    e->model = model;
    e->backend = &http_backend;
    e->state = s;
    return QR_OK;
}
