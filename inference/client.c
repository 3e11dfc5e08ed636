/*
 * The backend client: HTTP to an OpenAI-compatible server through libcurl's multi interface, so
 * that quarry's own loop can enforce the first-token and between-token deadlines to the
 * millisecond (libcurl's own timeouts know only connect and total time). A call is one or more
 * attempts: transient failures (connection errors, 408, 429, 5xx, a stalled start) are retried
 * with jittered exponential backoff, honouring Retry-After within inference.backoff_max_ms, but
 * only while no text has been passed to the caller; once it has, an error ends the stream with an
 * error event instead, since the caller cannot take back text it has shown. Around the attempts
 * sit the circuit breaker and a counting semaphore that caps concurrent backend requests. libcurl
 * and jansson stop here: callers see qr_status codes and messages.
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "inference/inference_int.h"

#define BODY_MAX        (8u << 20) /* a non-streamed reply or an error body */
#define EVENT_MAX       (1u << 20) /* one server-sent event */
#define ANSWER_MAX      (4u << 20) /* the text of one answer */
#define REQUEST_MAX     (96u << 20)
#define BACKOFF_BASE_MS 250
#define POLL_MS         50   /* longest sleep of the transfer loop between deadline checks */
#define API_KEY_MAX     4096 /* real keys are far shorter; the header is built in a fixed buffer */
#define LOG             "inference"

struct infer_client {
    const char *what;   /* "inference backend", "reranker": how messages name the server */
    const char *prefix; /* "inference" or "rerank": the configuration keys' section */
    char *base_url;     /* without a trailing '/' */
    char *model;
    char *api_key;
    char *api_version;
    char **headers; /* extra "Name: value" lines */
    size_t nheaders;
    long connect_timeout_ms, first_token_timeout_ms, total_timeout_ms, backoff_max_ms;
    long max_tokens;
    double temperature;
    int retries;
    int max_concurrent;
    size_t context_tokens;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t slot_free;
    int in_flight, in_flight_peak;
    infer_breaker breaker;
    uint64_t rng;
    char *found_model; /* the backend's first model, when inference.model is empty */
    uint64_t calls, attempts, retried, failures, rejected;
};

typedef enum { KIND_CHAT = 0, KIND_MODELS, KIND_POST } call_kind;

/* One call's state; the per-attempt part is reset before each attempt. */
typedef struct {
    infer_client *c;
    call_kind kind;
    bool stream;
    infer_reply_fn on_reply; /* KIND_POST: reads the whole 2xx reply */
    void *reply_ctx;
    infer_event_fn on_event;
    void *user;
    bool passed_on; /* text reached on_event: no retries from here on */
    bool cancelled;

    CURL *easy;
    long http;
    bool head_checked;
    bool sse_mode;
    qr_buf body;
    infer_sse sse;
    qr_buf content;
    char *finish_reason;
    char *model;
    int64_t prompt_tokens, completion_tokens;
    bool saw_done; /* data: [DONE] */
    bool got_text; /* this attempt produced answer text */
    uint64_t last_byte_ns;
    qr_status cb_st; /* a failure raised inside a libcurl callback */
    char cb_err[QR_ERR_LEN];
} call_state;

/* ---- lifecycle --------------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static bool header_name_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') &&
            !strchr("!#$%&'*+-.^_`|~", c))
            return false;
    }
    return true;
}

/* Parses inference.headers: "Name: value" pairs separated by commas. */
static qr_status parse_headers(infer_client *c, const char *spec, char *err)
{
    const char *p = spec;
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *item = p, *end = p + len;
        p = *end ? end + 1 : end;
        while (item < end && (*item == ' ' || *item == '\t'))
            item++;
        while (end > item && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (item == end)
            continue;
        const char *colon = memchr(item, ':', (size_t)(end - item));
        size_t name_len = colon ? (size_t)(colon - item) : 0;
        while (name_len && (item[name_len - 1] == ' ' || item[name_len - 1] == '\t'))
            name_len--;
        if (!colon || !header_name_ok(item, name_len))
            return qr_fail(err, QR_EINVAL, "%s.headers: '%.*s' is not 'Name: value'", c->prefix,
                           (int)(end - item), item);
        const char *value = colon + 1;
        while (value < end && (*value == ' ' || *value == '\t'))
            value++;
        char **grown = realloc(c->headers, (c->nheaders + 1) * sizeof(char *));
        if (!grown)
            return qr_fail(err, QR_ENOMEM, "out of memory");
        c->headers = grown;
        size_t size = name_len + (size_t)(end - value) + 3;
        char *line = malloc(size);
        if (!line)
            return qr_fail(err, QR_ENOMEM, "out of memory");
        snprintf(line, size, "%.*s: %.*s", (int)name_len, item, (int)(end - value), value);
        c->headers[c->nheaders++] = line;
    }
    return QR_OK;
}

qr_status infer_client_new_params(const infer_client_params *p, infer_client **out, char *err)
{
    infer_client *c = NULL;
    qr_status st = QR_OK;
    if (!out)
        return qr_fail(err, QR_EINVAL, "infer_client_new: no place for the client");
    *out = NULL;
    if (!p)
        return qr_fail(err, QR_EINVAL, "infer_client_new: no settings");
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return qr_fail(err, QR_EINTERNAL, "cannot initialise libcurl: %s", curl_easy_strerror(curl_init_rc));

    c = calloc(1, sizeof(*c));
    if (!c)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    if (pthread_mutex_init(&c->mu, NULL)) {
        free(c);
        return qr_fail(err, QR_EINTERNAL, "cannot create a mutex");
    }
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int cond_rc = pthread_cond_init(&c->slot_free, &attr);
    pthread_condattr_destroy(&attr);
    if (cond_rc) {
        pthread_mutex_destroy(&c->mu);
        free(c);
        return qr_fail(err, QR_EINTERNAL, "cannot create a condition variable");
    }

    c->what = p->what ? p->what : "inference backend";
    c->prefix = p->prefix ? p->prefix : "inference";
    c->base_url = strdup(p->base_url ? p->base_url : "");
    c->model = strdup(p->model ? p->model : "");
    c->api_key = strdup(p->api_key ? p->api_key : "");
    c->api_version = strdup(p->api_version ? p->api_version : "");
    if (!c->base_url || !c->model || !c->api_key || !c->api_version) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    if (strlen(c->api_key) > API_KEY_MAX) {
        st = qr_fail(err, QR_EINVAL, "%s.api_key is longer than %d bytes", c->prefix, API_KEY_MAX);
        goto out;
    }
    size_t blen = strlen(c->base_url);
    while (blen > 0 && c->base_url[blen - 1] == '/')
        c->base_url[--blen] = '\0';
    st = parse_headers(c, p->headers ? p->headers : "", err);
    if (st)
        goto out;
    c->connect_timeout_ms = p->connect_timeout_ms;
    c->first_token_timeout_ms = p->first_token_timeout_ms;
    c->total_timeout_ms = p->total_timeout_ms;
    c->backoff_max_ms = p->backoff_max_ms;
    c->max_tokens = p->max_tokens;
    c->temperature = p->temperature;
    c->retries = p->retries;
    c->max_concurrent = p->max_concurrent > 0 ? p->max_concurrent : 1;
    c->context_tokens = p->context_tokens;
    if (c->context_tokens < (size_t)c->max_tokens + 256) {
        st = qr_fail(err, QR_EINVAL,
                     "inference.context_tokens (%zu) must exceed inference.max_tokens (%ld) by at least 256, "
                     "to leave room for the prompt",
                     c->context_tokens, c->max_tokens);
        goto out;
    }
    infer_breaker_init(&c->breaker, p->breaker_failures, p->breaker_cooldown_ms);
    if (getrandom(&c->rng, sizeof(c->rng), 0) != (ssize_t)sizeof(c->rng))
        c->rng = qr_now_ns() ^ (uint64_t)(uintptr_t)c;
    c->rng |= 1;
    *out = c;
    c = NULL;
out:
    infer_client_free(c);
    return st;
}

qr_status infer_client_new(const qr_config *cfg, infer_client **out, char *err)
{
    if (out)
        *out = NULL;
    if (!cfg)
        return qr_fail(err, QR_EINVAL, "infer_client_new: no configuration");
    const qr_settings *set = qr_config_settings(cfg);
    infer_client_params p = {
        .what = "inference backend",
        .prefix = "inference",
        .base_url = set->inference_base_url,
        .model = set->inference_model,
        .api_key = set->inference_api_key,
        .api_version = set->inference_api_version,
        .headers = set->inference_headers,
        .connect_timeout_ms = (long)set->inference_connect_timeout_ms,
        .first_token_timeout_ms = (long)set->inference_first_token_timeout_ms,
        .total_timeout_ms = (long)set->inference_total_timeout_ms,
        .backoff_max_ms = (long)set->inference_backoff_max_ms,
        .max_tokens = (long)set->inference_max_tokens,
        .temperature = set->inference_temperature,
        .retries = (int)set->inference_retries,
        .max_concurrent = (int)set->inference_max_concurrent,
        .breaker_failures = (int)set->inference_breaker_failures,
        .breaker_cooldown_ms = (uint64_t)set->inference_breaker_cooldown_ms,
        .context_tokens = (size_t)set->inference_context_tokens,
    };
    return infer_client_new_params(&p, out, err);
}

void infer_client_free(infer_client *c)
{
    if (!c)
        return;
    free(c->base_url);
    free(c->model);
    if (c->api_key) {
        /* keep the key out of freed heap memory */
        explicit_bzero(c->api_key, strlen(c->api_key));
        free(c->api_key);
    }
    free(c->api_version);
    for (size_t i = 0; i < c->nheaders; i++)
        free(c->headers[i]);
    free(c->headers);
    free(c->found_model);
    pthread_cond_destroy(&c->slot_free);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

bool infer_client_configured(const infer_client *c)
{
    return c && c->base_url && *c->base_url;
}

long infer_client_max_tokens(const infer_client *c)
{
    return c->max_tokens;
}

void infer_client_stats(infer_client *c, infer_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    out->calls = c->calls;
    out->attempts = c->attempts;
    out->retries = c->retried;
    out->failures = c->failures;
    out->rejected = c->rejected;
    out->in_flight = c->in_flight;
    out->in_flight_peak = c->in_flight_peak;
    out->breaker = infer_breaker_peek(&c->breaker, qr_now_ns() / 1000000);
    pthread_mutex_unlock(&c->mu);
}

size_t infer_client_budget(const infer_client *c)
{
    return c->context_tokens - (size_t)c->max_tokens;
}

void infer_completion_init(infer_completion *c)
{
    memset(c, 0, sizeof(*c));
    c->prompt_tokens = c->completion_tokens = -1;
}

void infer_completion_release(infer_completion *c)
{
    if (!c)
        return;
    free(c->content);
    free(c->finish_reason);
    free(c->model);
    infer_completion_init(c);
}

void infer_models_release(infer_models *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->count; i++)
        free(m->ids[i]);
    free(m->ids);
    m->ids = NULL;
    m->count = 0;
}

/* ---- small helpers ----------------------------------------------------------------------- */

static uint64_t jitter_ms(infer_client *c, uint64_t max_ms)
{
    pthread_mutex_lock(&c->mu);
    /* xorshift64*: jitter needs spread, not secrecy */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    uint64_t r = c->rng * 0x2545F4914F6CDD1DULL;
    pthread_mutex_unlock(&c->mu);
    return max_ms ? r % (max_ms + 1) : 0;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Copies at most max bytes of backend text into a message: valid UTF-8, no control characters. */
static void clean_text(const char *s, size_t n, size_t max, char *out, size_t out_len)
{
    qr_buf b;
    qr_buf_init(&b, 4 * max + 16);
    if (n > max)
        n = max;
    char *tmp = malloc(n + 1);
    if (tmp) {
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        infer_fence_text(&b, tmp, NULL);
        free(tmp);
    }
    snprintf(out, out_len, "%s", qr_buf_str(&b));
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    qr_buf_release(&b);
}

/* The message of an error reply: OpenAI's {"error":{"message"}}, {"error":"..."}, vLLM's
 * {"message"}, FastAPI's {"detail"}, or the start of the body. */
static void error_message(const qr_buf *body, char *out, size_t out_len)
{
    const char *text = qr_buf_str(body);
    size_t len = qr_buf_len(body);
    json_t *root = json_loadb(text, len, 0, NULL);
    const char *msg = NULL;
    if (root && json_is_object(root)) {
        json_t *e = json_object_get(root, "error");
        if (json_is_object(e))
            msg = json_string_value(json_object_get(e, "message"));
        else if (json_is_string(e))
            msg = json_string_value(e);
        if (!msg)
            msg = json_string_value(json_object_get(root, "message"));
        json_t *detail = json_object_get(root, "detail");
        if (!msg)
            msg = json_is_array(detail) ? json_string_value(json_object_get(json_array_get(detail, 0), "msg"))
                                        : json_string_value(detail);
    }
    /* Some servers echo the request (documents included) in their validation errors: JSON bodies
     * are quoted only through the message fields above, never wholesale. Plain text (a proxy's
     * error page) is quoted from its start. */
    if (msg)
        clean_text(msg, strlen(msg), 200, out, out_len);
    else if (root)
        snprintf(out, out_len, "an error body without a message");
    else if (len)
        clean_text(text, len, 200, out, out_len);
    else
        snprintf(out, out_len, "no message");
    json_decref(root);
}

static char *dup_json_string(json_t *v)
{
    const char *s = json_string_value(v);
    return s ? strdup(s) : NULL;
}

/* ---- reply parsing ----------------------------------------------------------------------- */

static qr_status deliver(call_state *cs, const char *text, size_t len, char *err)
{
    if (len == 0)
        return QR_OK;
    if (qr_buf_append(&cs->content, text, len))
        return qr_fail(err, QR_ELIMIT, "the answer is longer than %u bytes", ANSWER_MAX);
    cs->got_text = true;
    if (!cs->on_event)
        return QR_OK;
    infer_event ev = {INFER_EVENT_DELTA, text, len, QR_OK};
    cs->passed_on = true;
    if (cs->on_event(&ev, cs->user)) {
        cs->cancelled = true;
        return qr_fail(err, QR_EIO, "cancelled by the caller");
    }
    return QR_OK;
}

static void take_usage(call_state *cs, json_t *usage)
{
    if (!json_is_object(usage))
        return;
    json_t *p = json_object_get(usage, "prompt_tokens"), *k = json_object_get(usage, "completion_tokens");
    if (json_is_integer(p))
        cs->prompt_tokens = json_integer_value(p);
    if (json_is_integer(k))
        cs->completion_tokens = json_integer_value(k);
}

static void take_model(call_state *cs, json_t *root)
{
    if (!cs->model)
        cs->model = dup_json_string(json_object_get(root, "model"));
}

static qr_status take_finish(call_state *cs, json_t *choice)
{
    const char *fr = json_string_value(json_object_get(choice, "finish_reason"));
    if (fr && !cs->finish_reason && !(cs->finish_reason = strdup(fr)))
        return QR_ENOMEM;
    return QR_OK;
}

/* One chat.completion.chunk event of a stream. */
static qr_status on_sse_event(void *user, const char *event, const char *data, size_t len, char *err)
{
    call_state *cs = user;
    (void)event;
    if (cs->saw_done)
        return QR_OK; /* nothing after [DONE] counts */
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        cs->saw_done = true;
        return QR_OK;
    }
    json_error_t jerr;
    json_t *root = json_loadb(data, len, 0, &jerr);
    qr_status st = QR_OK;
    if (!root || !json_is_object(root)) {
        st = qr_fail(err, QR_EIO, "malformed event in the backend's stream: %s",
                     root ? "not an object" : jerr.text);
        goto out;
    }
    json_t *e = json_object_get(root, "error");
    if (e) {
        char msg[256];
        qr_buf tmp;
        qr_buf_init(&tmp, BODY_MAX);
        qr_buf_append(&tmp, data, len);
        error_message(&tmp, msg, sizeof(msg));
        qr_buf_release(&tmp);
        st = qr_fail(err, QR_EIO, "the backend reported an error in its stream: %s", msg);
        goto out;
    }
    take_model(cs, root);
    take_usage(cs, json_object_get(root, "usage"));
    json_t *choices = json_object_get(root, "choices");
    json_t *choice = json_array_get(choices, 0);
    if (json_is_object(choice)) {
        json_t *content = json_object_get(json_object_get(choice, "delta"), "content");
        if (content && !json_is_string(content) && !json_is_null(content)) {
            st = qr_fail(err, QR_EIO,
                         "malformed event in the backend's stream: delta.content is not a string");
            goto out;
        }
        if (json_is_string(content))
            st = deliver(cs, json_string_value(content), json_string_length(content), err);
        if (!st && take_finish(cs, choice))
            st = qr_fail(err, QR_ENOMEM, "out of memory");
    } else if (choices && !json_is_array(choices)) {
        st = qr_fail(err, QR_EIO, "malformed event in the backend's stream: choices is not a list");
    }
out:
    json_decref(root);
    return st;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *user)
{
    call_state *cs = user;
    size_t n = size * nmemb;
    cs->last_byte_ns = qr_now_ns();
    if (!cs->head_checked) {
        long code = 0;
        char *type = NULL;
        curl_easy_getinfo(cs->easy, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_getinfo(cs->easy, CURLINFO_CONTENT_TYPE, &type);
        cs->http = code;
        /* a server that answers a stream request with plain JSON is read as JSON */
        cs->sse_mode = cs->stream && code >= 200 && code < 300 && type &&
                       strncasecmp(type, "text/event-stream", 17) == 0;
        cs->head_checked = true;
    }
    if (cs->sse_mode) {
        cs->cb_st = infer_sse_feed(&cs->sse, ptr, n, on_sse_event, cs, cs->cb_err);
        return cs->cb_st ? 0 : n;
    }
    if (qr_buf_append(&cs->body, ptr, n)) {
        cs->cb_st = qr_fail(cs->cb_err, QR_ELIMIT, "the backend's reply is larger than %u bytes", BODY_MAX);
        return 0;
    }
    return n;
}

/* A stream whose connection closed cleanly: without [DONE] or a finish reason the answer was cut
 * short (a retryable QR_EIO). */
static qr_status stream_end(const call_state *cs, char *err)
{
    if (!cs->saw_done && !cs->finish_reason)
        return qr_fail(err, QR_EIO, "the inference backend's stream ended before its last event");
    return QR_OK;
}

/* A whole, non-streamed reply: a chat.completion or a model list. */
static qr_status parse_body(call_state *cs, infer_models *models, char *err)
{
    if (cs->kind == KIND_POST)
        return cs->on_reply(cs->reply_ctx, qr_buf_str(&cs->body), qr_buf_len(&cs->body), err);
    json_error_t jerr;
    json_t *root = json_loadb(qr_buf_str(&cs->body), qr_buf_len(&cs->body), 0, &jerr);
    qr_status st = QR_OK;
    if (!root || !json_is_object(root)) {
        st = qr_fail(err, QR_EIO, "malformed reply from the backend: %s",
                     root ? "not a JSON object" : jerr.text);
        goto out;
    }
    if (cs->kind == KIND_MODELS) {
        json_t *data = json_object_get(root, "data"), *item;
        size_t i;
        if (!json_is_array(data)) {
            st = qr_fail(err, QR_EIO, "malformed model list from the backend: no 'data' list");
            goto out;
        }
        models->ids = calloc(json_array_size(data) + 1, sizeof(char *));
        if (!models->ids)
            goto nomem;
        json_array_foreach(data, i, item)
        {
            const char *id = json_string_value(json_object_get(item, "id"));
            if (!id)
                continue;
            if (!(models->ids[models->count] = strdup(id)))
                goto nomem;
            models->count++;
        }
        goto out;
    }
    json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
    json_t *message = json_object_get(choice, "message");
    json_t *content = json_object_get(message, "content");
    if (!json_is_object(message) || (content && !json_is_string(content) && !json_is_null(content))) {
        st = qr_fail(err, QR_EIO, "malformed reply from the backend: no choices[0].message.content");
        goto out;
    }
    take_model(cs, root);
    take_usage(cs, json_object_get(root, "usage"));
    if (take_finish(cs, choice))
        goto nomem;
    if (json_is_string(content))
        st = deliver(cs, json_string_value(content), json_string_length(content), err);
    goto out;
nomem:
    st = qr_fail(err, QR_ENOMEM, "out of memory reading the backend's reply");
out:
    json_decref(root);
    return st;
}

/* ---- one attempt ------------------------------------------------------------------------- */

typedef struct {
    bool retryable;
    uint64_t retry_after_ms; /* what the server asked for, 0 when nothing */
} attempt_info;

static void attempt_reset(call_state *cs)
{
    qr_buf_reset(&cs->body);
    qr_buf_reset(&cs->content);
    infer_sse_release(&cs->sse);
    infer_sse_init(&cs->sse, EVENT_MAX);
    free(cs->finish_reason);
    free(cs->model);
    cs->finish_reason = cs->model = NULL;
    cs->prompt_tokens = cs->completion_tokens = -1;
    cs->http = 0;
    cs->head_checked = cs->sse_mode = cs->saw_done = cs->got_text = false;
    cs->cb_st = QR_OK;
    cs->cb_err[0] = '\0';
}

static struct curl_slist *build_headers(const infer_client *c, bool stream, bool post)
{
    struct curl_slist *list = NULL, *next;
    char auth[64 + API_KEY_MAX];
#define ADD(line)                                    \
    do {                                             \
        if (!(next = curl_slist_append(list, line))) \
            goto fail;                               \
        list = next;                                 \
    } while (0)
    if (post)
        ADD("Content-Type: application/json");
    ADD(stream ? "Accept: text/event-stream" : "Accept: application/json");
    ADD("Expect:"); /* no 100-continue round trip before the body */
    if (*c->api_key) {
        if (*c->api_version)
            snprintf(auth, sizeof(auth), "api-key: %s", c->api_key);
        else
            snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->api_key);
        ADD(auth);
        explicit_bzero(auth, sizeof(auth));
    }
    for (size_t i = 0; i < c->nheaders; i++)
        ADD(c->headers[i]);
#undef ADD
    return list;
fail:
    explicit_bzero(auth, sizeof(auth));
    curl_slist_free_all(list);
    return NULL;
}

static qr_status map_curl_error(const infer_client *c, CURLcode rc, const char *detail, const char *url,
                                attempt_info *ai, char *err)
{
    const char *why = *detail ? detail : curl_easy_strerror(rc);
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        ai->retryable = true;
        return qr_fail(err, QR_ETIMEOUT, "the %s at %s timed out: %s", c->what, url, why);
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        ai->retryable = true;
        return qr_fail(err, QR_EUNAVAILABLE, "cannot reach the %s at %s: %s", c->what, url, why);
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL: return qr_fail(err, QR_EINVAL, "bad %s URL %s: %s", c->what, url, why);
    default: return qr_fail(err, QR_EUNAVAILABLE, "%s request to %s failed: %s", c->what, url, why);
    }
}

static qr_status map_http_error(call_state *cs, const char *url, attempt_info *ai, char *err)
{
    char msg[256];
    error_message(&cs->body, msg, sizeof(msg));
    long code = cs->http;
    if (code == 429 || code == 503) {
        curl_off_t after = 0;
        if (curl_easy_getinfo(cs->easy, CURLINFO_RETRY_AFTER, &after) == CURLE_OK && after > 0)
            ai->retry_after_ms = (uint64_t)after * 1000;
    }
    if (code == 408 || code == 429 || code >= 500) {
        ai->retryable = true;
        return qr_fail(err, QR_EUNAVAILABLE, "the %s answered HTTP %ld: %s", cs->c->what, code, msg);
    }
    if (code == 401 || code == 403)
        return qr_fail(err, QR_EAUTH, "the %s refused the credentials (HTTP %ld): %s", cs->c->what, code,
                       msg);
    if (code == 404)
        return qr_fail(err, QR_ENOTFOUND, "the %s has no %s (HTTP 404): %s", cs->c->what, url, msg);
    return qr_fail(err, QR_EINVAL, "the %s rejected the request (HTTP %ld): %s", cs->c->what, code, msg);
}

/* Runs one HTTP request to completion or to one of the deadlines. */
static qr_status attempt(call_state *cs, const char *url, const char *body, uint64_t deadline_ns,
                         infer_models *models, attempt_info *ai, char *err)
{
    infer_client *c = cs->c;
    char curl_err[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = NULL;
    CURLM *multi = NULL;
    qr_status st = QR_OK;
    uint64_t start = qr_now_ns();
    uint64_t first_token_ns = (uint64_t)c->first_token_timeout_ms * 1000000ULL;
    long remaining_ms = deadline_ns > start ? (long)((deadline_ns - start) / 1000000ULL) : 0;
    enum { STALL_NONE, STALL_FIRST, STALL_MID } stall = STALL_NONE;

    attempt_reset(cs);
    if (remaining_ms < 1)
        return qr_fail(err, QR_ETIMEOUT, "inference.total_timeout_ms (%ld ms) passed", c->total_timeout_ms);
    cs->easy = curl_easy_init();
    multi = curl_multi_init();
    headers = build_headers(c, cs->stream, body != NULL);
    if (!cs->easy || !multi || !headers) {
        st = qr_fail(err, QR_ENOMEM, "cannot set up an HTTP request");
        goto out;
    }
    curl_easy_setopt(cs->easy, CURLOPT_URL, url);
    curl_easy_setopt(cs->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(cs->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(cs->easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(cs->easy, CURLOPT_USERAGENT, "quarry/" QUARRY_VERSION);
    curl_easy_setopt(cs->easy, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(cs->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(cs->easy, CURLOPT_WRITEDATA, cs);
    curl_easy_setopt(cs->easy, CURLOPT_CONNECTTIMEOUT_MS,
                     c->connect_timeout_ms < remaining_ms ? c->connect_timeout_ms : remaining_ms);
    curl_easy_setopt(cs->easy, CURLOPT_TIMEOUT_MS, remaining_ms);
    curl_easy_setopt(cs->easy, CURLOPT_TCP_KEEPALIVE, 1L);
    if (body) {
        curl_easy_setopt(cs->easy, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(cs->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    } else {
        curl_easy_setopt(cs->easy, CURLOPT_HTTPGET, 1L);
    }
    if (curl_multi_add_handle(multi, cs->easy) != CURLM_OK) {
        st = qr_fail(err, QR_EINTERNAL, "cannot start an HTTP request");
        goto out;
    }

    int running = 1;
    CURLcode rc = CURLE_OK;
    for (;;) {
        if (curl_multi_perform(multi, &running) != CURLM_OK) {
            st = qr_fail(err, QR_EINTERNAL, "libcurl's transfer loop failed");
            goto out_remove;
        }
        if (!running)
            break;
        uint64_t now = qr_now_ns(), due;
        if (cs->stream && !cs->got_text) {
            due = start + first_token_ns;
            if (now >= due) {
                stall = STALL_FIRST;
                break;
            }
        } else if (cs->stream) {
            due = cs->last_byte_ns + first_token_ns;
            if (now >= due) {
                stall = STALL_MID;
                break;
            }
        } else {
            due = now + POLL_MS * 1000000ULL;
        }
        uint64_t wait = (due - now) / 1000000ULL + 1;
        curl_multi_poll(multi, NULL, 0, (int)(wait < POLL_MS ? wait : POLL_MS), NULL);
    }
    if (!running) {
        int left;
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(multi, &left)))
            if (msg->msg == CURLMSG_DONE)
                rc = msg->data.result;
    }

    if (cs->cb_st) {
        /* malformed events, oversized replies and cancellation are not cured by asking again */
        st = qr_fail(err, cs->cb_st, "%s", cs->cb_err);
    } else if (stall == STALL_FIRST) {
        ai->retryable = true;
        st = qr_fail(err, QR_ETIMEOUT, "the inference backend sent no answer text within %ld ms",
                     c->first_token_timeout_ms);
    } else if (stall == STALL_MID) {
        ai->retryable = true;
        st = qr_fail(err, QR_ETIMEOUT, "the inference backend stalled for %ld ms in the middle of its answer",
                     c->first_token_timeout_ms);
    } else if (rc != CURLE_OK) {
        st = map_curl_error(c, rc, curl_err, url, ai, err);
    } else {
        if (!cs->head_checked)
            curl_easy_getinfo(cs->easy, CURLINFO_RESPONSE_CODE, &cs->http);
        if (cs->http < 200 || cs->http >= 300) {
            st = map_http_error(cs, url, ai, err);
        } else if (cs->sse_mode) {
            st = stream_end(cs, err);
            ai->retryable = st != QR_OK;
        } else {
            st = parse_body(cs, models, err);
        }
    }
out_remove:
    curl_multi_remove_handle(multi, cs->easy);
out:
    curl_multi_cleanup(multi);
    curl_easy_cleanup(cs->easy);
    cs->easy = NULL;
    curl_slist_free_all(headers);
    return st;
}

/* ---- a call: breaker, slots, retries ----------------------------------------------------- */

static qr_status take_slot(infer_client *c, uint64_t deadline_ns, char *err)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* convert the qr_now_ns() deadline to this clock's absolute time */
    uint64_t now = qr_now_ns();
    uint64_t wait = deadline_ns > now ? deadline_ns - now : 0;
    uint64_t abs_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec + wait;
    struct timespec until = {(time_t)(abs_ns / 1000000000ULL), (long)(abs_ns % 1000000000ULL)};
    qr_status st = QR_OK;
    pthread_mutex_lock(&c->mu);
    while (c->in_flight >= c->max_concurrent) {
        if (pthread_cond_timedwait(&c->slot_free, &c->mu, &until) == ETIMEDOUT &&
            c->in_flight >= c->max_concurrent) {
            st = qr_fail(err, QR_ETIMEOUT, "all %d %s slots stayed busy (%s.max_concurrent)",
                         c->max_concurrent, c->what, c->prefix);
            break;
        }
    }
    if (!st) {
        c->in_flight++;
        if (c->in_flight > c->in_flight_peak)
            c->in_flight_peak = c->in_flight;
        c->attempts++;
    }
    pthread_mutex_unlock(&c->mu);
    return st;
}

static void give_slot(infer_client *c)
{
    pthread_mutex_lock(&c->mu);
    c->in_flight--;
    pthread_cond_signal(&c->slot_free);
    pthread_mutex_unlock(&c->mu);
}

static char *make_url(const infer_client *c, const char *path)
{
    qr_buf b;
    qr_buf_init(&b, 64 * 1024);
    qr_status st = qr_buf_printf(&b, "%s%s", c->base_url, path);
    if (!st && *c->api_version) {
        char *v = curl_easy_escape(NULL, c->api_version, 0);
        st = v ? qr_buf_printf(&b, "?api-version=%s", v) : QR_ENOMEM;
        curl_free(v);
    }
    char *url = st ? NULL : qr_buf_detach(&b);
    qr_buf_release(&b);
    return url;
}

/* Moves a successful chat's reply into *out. On error *out is empty. */
static qr_status take_completion(call_state *cs, infer_completion *out, char *err)
{
    out->content = qr_buf_detach(&cs->content);
    if (!out->content)
        out->content = strdup("");
    out->finish_reason = cs->finish_reason;
    out->model = cs->model;
    out->prompt_tokens = cs->prompt_tokens;
    out->completion_tokens = cs->completion_tokens;
    cs->finish_reason = cs->model = NULL;
    if (!out->content) {
        infer_completion_release(out);
        return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    return QR_OK;
}

typedef struct {
    infer_reply_fn fn;
    void *ctx;
} post_reader;

/* The shared engine of chat, model listing and other JSON posts. *rejected tells that the breaker
 * refused it. */
static qr_status call(infer_client *c, call_kind kind, const char *path, const char *body, bool stream,
                      infer_event_fn on_event, void *user, infer_completion *out, infer_models *models,
                      bool *rejected, char *err)
{
    char own_err[QR_ERR_LEN];
    if (!err)
        err = own_err; /* the message is needed for logs and the error event */
    call_state cs;
    memset(&cs, 0, sizeof(cs));
    cs.c = c;
    cs.kind = kind;
    cs.stream = stream;
    cs.on_event = on_event;
    cs.user = user;
    if (kind == KIND_POST) {
        /* the reply reader travels in the slot that chat's event callback uses */
        cs.on_reply = ((const post_reader *)user)->fn;
        cs.reply_ctx = ((const post_reader *)user)->ctx;
        cs.user = NULL;
    }
    qr_buf_init(&cs.body, BODY_MAX);
    qr_buf_init(&cs.content, ANSWER_MAX);
    infer_sse_init(&cs.sse, EVENT_MAX);
    qr_status st = QR_OK;
    bool probe = false;
    int attempts = 0;
    *rejected = false;
    char *url = make_url(c, path ? path : kind == KIND_MODELS ? "/models" : "/chat/completions");
    if (!url) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }

    uint64_t start = qr_now_ns();
    uint64_t deadline = start + (uint64_t)c->total_timeout_ms * 1000000ULL;
    pthread_mutex_lock(&c->mu);
    c->calls++;
    bool allowed = infer_breaker_allow(&c->breaker, start / 1000000, &probe);
    uint64_t wait_ms = infer_breaker_wait_ms(&c->breaker, start / 1000000);
    if (!allowed)
        c->rejected++;
    pthread_mutex_unlock(&c->mu);
    if (!allowed) {
        *rejected = true;
        st = qr_fail(err, QR_EUNAVAILABLE,
                     "the %s's circuit breaker is open after repeated failures; next try in %llu ms", c->what,
                     (unsigned long long)wait_ms);
        goto out;
    }

    for (;;) {
        attempt_info ai = {false, 0};
        attempts++;
        qr_log(QR_LOG_DEBUG, LOG, "%s %s (attempt %d)", body ? "POST" : "GET", url, attempts);
        st = take_slot(c, deadline, err);
        if (st)
            break;
        st = attempt(&cs, url, body, deadline, models, &ai, err);
        give_slot(c);
        if (!st || !ai.retryable || cs.passed_on || cs.cancelled || attempts > c->retries)
            break;
        /* full jitter over an exponentially growing window, never shorter than Retry-After */
        uint64_t window = (uint64_t)BACKOFF_BASE_MS << (attempts - 1 < 10 ? attempts - 1 : 10);
        uint64_t wait = window / 2 + jitter_ms(c, window / 2);
        if (ai.retry_after_ms > wait)
            wait = ai.retry_after_ms;
        if (wait > (uint64_t)c->backoff_max_ms)
            wait = (uint64_t)c->backoff_max_ms;
        uint64_t now = qr_now_ns();
        if (now + wait * 1000000ULL >= deadline) {
            qr_log(QR_LOG_WARN, LOG, "not retrying: the %llu ms wait would pass %s's deadline",
                   (unsigned long long)wait, c->prefix);
            break;
        }
        qr_log(QR_LOG_WARN, LOG, "%s attempt %d failed (%s); retrying in %llu ms", c->what, attempts, err,
               (unsigned long long)wait);
        sleep_ms(wait);
        pthread_mutex_lock(&c->mu);
        c->retried++;
        pthread_mutex_unlock(&c->mu);
        if (models)
            infer_models_release(models);
    }

    /* the breaker judges the backend's health, not the caller's or the request's faults */
    infer_outcome outcome = !st ? INFER_OUTCOME_SUCCESS
                            : (!cs.cancelled && (st == QR_EUNAVAILABLE || st == QR_ETIMEOUT || st == QR_EIO))
                                ? INFER_OUTCOME_FAILURE
                                : INFER_OUTCOME_NEUTRAL;
    pthread_mutex_lock(&c->mu);
    infer_breaker_state before = c->breaker.state;
    infer_breaker_record(&c->breaker, qr_now_ns() / 1000000, outcome, probe);
    infer_breaker_state after = c->breaker.state;
    if (st)
        c->failures++;
    pthread_mutex_unlock(&c->mu);
    if (before != INFER_BREAKER_OPEN && after == INFER_BREAKER_OPEN)
        qr_log(QR_LOG_WARN, LOG, "%s circuit breaker opened: %s", c->what, err);
    else if (before != INFER_BREAKER_CLOSED && after == INFER_BREAKER_CLOSED)
        qr_log(QR_LOG_INFO, LOG, "%s circuit breaker closed", c->what);

    if (st && cs.passed_on && !cs.cancelled && on_event) {
        infer_event ev = {INFER_EVENT_ERROR, err, 0, st};
        ev.len = strlen(ev.text);
        on_event(&ev, user);
    }
    if (st && models)
        infer_models_release(models);
    if (!st && kind == KIND_CHAT)
        st = take_completion(&cs, out, err);
    if (kind == KIND_CHAT)
        out->attempts = attempts;
    if (!st && on_event) {
        infer_event ev = {INFER_EVENT_DONE, out->finish_reason ? out->finish_reason : "", 0, QR_OK};
        ev.len = strlen(ev.text);
        on_event(&ev, user);
    }
out:
    free(url);
    qr_buf_release(&cs.body);
    qr_buf_release(&cs.content);
    infer_sse_release(&cs.sse);
    free(cs.finish_reason);
    free(cs.model);
    return st;
}

/* ---- public entry points ----------------------------------------------------------------- */

static const char *role_name(infer_role role)
{
    switch (role) {
    case INFER_ROLE_SYSTEM: return "system";
    case INFER_ROLE_USER: return "user";
    case INFER_ROLE_ASSISTANT: return "assistant";
    }
    return NULL;
}

static qr_status check_messages(const infer_message *messages, size_t count, char *err)
{
    if (!messages || count == 0)
        return qr_fail(err, QR_EINVAL, "no messages to send");
    for (size_t i = 0; i < count; i++) {
        if (!role_name(messages[i].role))
            return qr_fail(err, QR_EINVAL, "message %zu has an unknown role", i + 1);
        if (!messages[i].content)
            return qr_fail(err, QR_EINVAL, "message %zu has no content", i + 1);
    }
    return QR_OK;
}

static qr_status list_models(infer_client *c, infer_models *out, bool *rejected, char *err)
{
    *rejected = false;
    if (!out)
        return qr_fail(err, QR_EINVAL, "infer_list_models: no place for the result");
    out->ids = NULL;
    out->count = 0;
    if (!infer_client_configured(c))
        return qr_fail(err, QR_EINVAL, "no inference backend is configured (inference.base_url is empty)");
    return call(c, KIND_MODELS, NULL, NULL, false, NULL, NULL, NULL, out, rejected, err);
}

qr_status infer_list_models(infer_client *c, infer_models *out, char *err)
{
    bool rejected;
    return list_models(c, out, &rejected, err);
}

/* The model to name in requests: inference.model, or else the first one the backend lists
 * (llama.cpp's server and single-model vLLM deployments serve exactly one). */
static qr_status resolve_model(infer_client *c, char **model, bool *rejected, char *err)
{
    if (*c->model) {
        *model = strdup(c->model);
        return *model ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory");
    }
    pthread_mutex_lock(&c->mu);
    *model = c->found_model ? strdup(c->found_model) : NULL;
    pthread_mutex_unlock(&c->mu);
    if (*model)
        return QR_OK;
    infer_models models = {NULL, 0};
    qr_status st = list_models(c, &models, rejected, err);
    if (!st && models.count == 0)
        st = qr_fail(err, QR_ENOTFOUND, "inference.model is empty and the backend lists no model");
    if (!st) {
        pthread_mutex_lock(&c->mu);
        if (!c->found_model)
            c->found_model = strdup(models.ids[0]);
        *model = c->found_model ? strdup(c->found_model) : NULL;
        pthread_mutex_unlock(&c->mu);
        if (!*model)
            st = qr_fail(err, QR_ENOMEM, "out of memory");
        else
            qr_log(QR_LOG_INFO, LOG, "inference.model is empty; using the backend's model '%s'", *model);
    }
    infer_models_release(&models);
    return st;
}

void infer_options_init(infer_options *o)
{
    memset(o, 0, sizeof(*o));
    o->temperature = o->top_p = o->presence_penalty = o->frequency_penalty = NAN;
}

qr_status infer_options_check(const infer_client *c, const infer_options *o, char *err)
{
    if (!o)
        return QR_OK;
    if (o->max_tokens < 0 || o->max_tokens > c->max_tokens)
        return qr_fail(err, QR_EINVAL, "max_tokens %lld is outside 1..%ld (inference.max_tokens)",
                       (long long)o->max_tokens, c->max_tokens);
    if (!isnan(o->temperature) && !(o->temperature >= 0 && o->temperature <= 2))
        return qr_fail(err, QR_EINVAL, "temperature must be between 0 and 2");
    if (!isnan(o->top_p) && !(o->top_p >= 0 && o->top_p <= 1))
        return qr_fail(err, QR_EINVAL, "top_p must be between 0 and 1");
    if ((!isnan(o->presence_penalty) && !(o->presence_penalty >= -2 && o->presence_penalty <= 2)) ||
        (!isnan(o->frequency_penalty) && !(o->frequency_penalty >= -2 && o->frequency_penalty <= 2)))
        return qr_fail(err, QR_EINVAL, "presence_penalty and frequency_penalty must be between -2 and 2");
    if (o->stop_count > INFER_STOP_MAX)
        return qr_fail(err, QR_EINVAL, "at most %d stop sequences", INFER_STOP_MAX);
    for (size_t i = 0; i < o->stop_count; i++)
        if (!o->stop[i] || !*o->stop[i])
            return qr_fail(err, QR_EINVAL, "stop sequence %zu is empty", i + 1);
    return QR_OK;
}

static qr_status chat_body(const infer_client *c, const char *model, const infer_message *messages,
                           size_t count, bool stream, const infer_options *o, qr_buf *b)
{
    infer_options defaults;
    if (!o) {
        infer_options_init(&defaults);
        o = &defaults;
    }
    qr_status st = qr_buf_puts(b, "{\"model\":");
    if (!st)
        st = qr_json_escape(b, model, strlen(model));
    if (!st)
        st = qr_buf_puts(b, ",\"messages\":[");
    for (size_t i = 0; i < count && !st; i++) {
        st = qr_buf_printf(b, "%s{\"role\":\"%s\",\"content\":", i ? "," : "", role_name(messages[i].role));
        if (!st)
            st = qr_json_escape(b, messages[i].content, strlen(messages[i].content));
        if (!st)
            st = qr_buf_putc(b, '}');
    }
    if (!st)
        st = qr_buf_printf(b, "],\"max_tokens\":%lld,\"temperature\":%.4g",
                           (long long)(o->max_tokens ? o->max_tokens : c->max_tokens),
                           isnan(o->temperature) ? c->temperature : o->temperature);
    if (!st && !isnan(o->top_p))
        st = qr_buf_printf(b, ",\"top_p\":%.4g", o->top_p);
    if (!st && !isnan(o->presence_penalty))
        st = qr_buf_printf(b, ",\"presence_penalty\":%.4g", o->presence_penalty);
    if (!st && !isnan(o->frequency_penalty))
        st = qr_buf_printf(b, ",\"frequency_penalty\":%.4g", o->frequency_penalty);
    if (!st && o->has_seed)
        st = qr_buf_printf(b, ",\"seed\":%lld", (long long)o->seed);
    if (!st && o->stop_count) {
        st = qr_buf_puts(b, ",\"stop\":[");
        for (size_t i = 0; i < o->stop_count && !st; i++) {
            if (i)
                st = qr_buf_putc(b, ',');
            if (!st)
                st = qr_json_escape(b, o->stop[i], strlen(o->stop[i]));
        }
        if (!st)
            st = qr_buf_putc(b, ']');
    }
    if (!st && o->user) {
        st = qr_buf_puts(b, ",\"user\":");
        if (!st)
            st = qr_json_escape(b, o->user, strlen(o->user));
    }
    if (!st)
        st = qr_buf_printf(b, ",\"stream\":%s}", stream ? "true" : "false");
    return st;
}

/* Chat with either reply style; used by infer_chat, infer_chat_stream and infer_answer. */
qr_status infer_chat_call(infer_client *c, const infer_message *messages, size_t count, bool stream,
                          const infer_options *options, infer_event_fn on_event, void *user,
                          infer_completion *out, bool *rejected, char *err)
{
    char *model = NULL;
    qr_buf body;
    qr_buf_init(&body, REQUEST_MAX);
    *rejected = false;
    if (!out)
        return qr_fail(err, QR_EINVAL, "no place for the completion");
    infer_completion_init(out);
    qr_status st = check_messages(messages, count, err);
    if (st)
        goto out;
    if (!infer_client_configured(c)) {
        st = qr_fail(err, QR_EINVAL, "no inference backend is configured (inference.base_url is empty)");
        goto out;
    }
    if ((st = infer_options_check(c, options, err)))
        goto out;
    st = resolve_model(c, &model, rejected, err);
    if (st)
        goto out;
    if (chat_body(c, model, messages, count, stream, options, &body)) {
        st = qr_fail(err, QR_ELIMIT, "the request is larger than %u bytes", REQUEST_MAX);
        goto out;
    }
    st = call(c, KIND_CHAT, NULL, qr_buf_str(&body), stream, on_event, user, out, NULL, rejected, err);
out:
    free(model);
    qr_buf_release(&body);
    return st;
}

qr_status infer_chat(infer_client *c, const infer_message *messages, size_t count, infer_completion *out,
                     char *err)
{
    bool rejected;
    return infer_chat_call(c, messages, count, false, NULL, NULL, NULL, out, &rejected, err);
}

qr_status infer_chat_stream(infer_client *c, const infer_message *messages, size_t count,
                            infer_event_fn on_event, void *user, infer_completion *out, char *err)
{
    bool rejected;
    if (!on_event) {
        if (out)
            infer_completion_init(out);
        return qr_fail(err, QR_EINVAL, "infer_chat_stream needs an event callback");
    }
    return infer_chat_call(c, messages, count, true, NULL, on_event, user, out, &rejected, err);
}

qr_status infer_client_post(infer_client *c, const char *path, const char *body, infer_reply_fn on_reply,
                            void *ctx, bool *rejected, char *err)
{
    *rejected = false;
    if (!infer_client_configured(c))
        return qr_fail(err, QR_EINVAL, "no %s is configured (%s.base_url is empty)", c ? c->what : "server",
                       c ? c->prefix : "inference");
    if (!path || !body || !on_reply)
        return qr_fail(err, QR_EINVAL, "infer_client_post: NULL argument");
    post_reader reader = {on_reply, ctx};
    return call(c, KIND_POST, path, body, false, NULL, &reader, NULL, NULL, rejected, err);
}

/* ---- the stream reader without a transfer ------------------------------------------------ */

qr_status infer_stream_read(const char *const *pieces, const size_t *lens, size_t count,
                            infer_event_fn on_event, void *user, infer_completion *out, char *err)
{
    call_state cs;
    memset(&cs, 0, sizeof(cs));
    cs.stream = true;
    cs.on_event = on_event;
    cs.user = user;
    qr_buf_init(&cs.body, BODY_MAX);
    qr_buf_init(&cs.content, ANSWER_MAX);
    infer_sse_init(&cs.sse, EVENT_MAX);
    attempt_reset(&cs);
    cs.head_checked = cs.sse_mode = true;
    infer_completion_init(out);
    qr_status st = QR_OK;
    /* as on_body: the first failure stops the transfer */
    for (size_t i = 0; i < count && !st; i++)
        st = infer_sse_feed(&cs.sse, pieces[i], lens[i], on_sse_event, &cs, err);
    if (!st)
        st = stream_end(&cs, err);
    if (!st)
        st = take_completion(&cs, out, err);
    qr_buf_release(&cs.body);
    qr_buf_release(&cs.content);
    infer_sse_release(&cs.sse);
    free(cs.finish_reason);
    free(cs.model);
    return st;
}
