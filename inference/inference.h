/*
 * inference: the client of an OpenAI-compatible backend (vLLM, llama.cpp's server, Ollama, Azure
 * OpenAI) and the answer drafter on top of it. The client sends chat completions as one JSON reply
 * or as a server-sent-event stream, lists models, retries transient failures with jittered
 * backoff, stops calling a failing backend (circuit breaker) and caps concurrent requests. The
 * drafter packs the permitted passages that retrieval supplies into a prompt as fenced, numbered,
 * untrusted sources, maps the [n] citations of the reply back to those passages, and falls back to
 * an extractive answer, flagged as such, when no backend can answer. Only this module and ingest/
 * use libcurl; no libcurl or jansson type leaves it.
 */
#ifndef QUARRY_INFERENCE_H
#define QUARRY_INFERENCE_H

#include "core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "7.88.1 (OpenSSL/3.0.x)": the libcurl in use at run time and its TLS backend. */
const char *infer_curl_version(void);

/* ---- client ------------------------------------------------------------------------------ */

/* A backend client, built from the inference.* configuration keys. Thread-safe: one client is
 * meant to be shared by every request thread. */
typedef struct infer_client infer_client;

/* Reads inference.* from cfg and builds a client. An empty inference.base_url gives a valid
 * client that is not configured (infer_client_configured() is false; infer_answer() then answers
 * extractively). On error (bad inference.headers, inconsistent budgets, no memory) returns the
 * status, fills err, and *out stays NULL. Sends nothing over the network. */
qr_status infer_client_new(const qr_config *cfg, infer_client **out, char *err);
/* Frees the client. NULL is a no-op. No call on it may be running. */
void infer_client_free(infer_client *client);
/* True when a backend URL is set. */
bool infer_client_configured(const infer_client *client);
/* inference.max_tokens as this client was made with. */
long infer_client_max_tokens(const infer_client *client);

typedef enum {
    INFER_BREAKER_CLOSED = 0, /* calls go through */
    INFER_BREAKER_OPEN,       /* calls fail at once until the cool-down has passed */
    INFER_BREAKER_HALF_OPEN,  /* one probe call goes through; its outcome closes or reopens */
} infer_breaker_state;

/* "closed", "open", "half_open". */
const char *infer_breaker_state_name(infer_breaker_state state);

/* Counters since the client was created. */
typedef struct {
    uint64_t calls;    /* chat and model-list calls made */
    uint64_t attempts; /* HTTP requests sent (first tries and retries) */
    uint64_t retries;  /* requests that were retries */
    uint64_t failures; /* calls that ended in an error */
    uint64_t rejected; /* calls refused at once because the breaker was open */
    int in_flight;     /* backend requests running now */
    int in_flight_peak;
    infer_breaker_state breaker;
} infer_stats;

void infer_client_stats(infer_client *client, infer_stats *out);

/* ---- chat -------------------------------------------------------------------------------- */

typedef enum { INFER_ROLE_SYSTEM = 0, INFER_ROLE_USER, INFER_ROLE_ASSISTANT } infer_role;

typedef struct {
    infer_role role;
    const char *content; /* UTF-8; invalid sequences are sent as U+FFFD */
} infer_message;

/* A finished reply. Strings are owned (infer_completion_release frees them). */
typedef struct {
    char *content;                            /* the whole answer text, never NULL after success */
    char *finish_reason;                      /* "stop", "length", ... or NULL when the backend gave none */
    char *model;                              /* the model the backend says answered, or NULL */
    int64_t prompt_tokens, completion_tokens; /* as reported by the backend, -1 when not */
    int attempts;                             /* HTTP requests this call took (1 without retries) */
} infer_completion;

void infer_completion_init(infer_completion *c);
void infer_completion_release(infer_completion *c);

/* Per-request sampling options of a chat call, within what the configuration allows. Strings are
 * borrowed for the duration of the call. */
#define INFER_STOP_MAX 4 /* stop sequences, as OpenAI allows */
typedef struct {
    int64_t max_tokens;       /* 0: inference.max_tokens; more than it is refused (QR_EINVAL) */
    double temperature;       /* NAN: inference.temperature; else 0..2 */
    double top_p;             /* NAN: not sent (the backend's default); else 0..1 */
    double presence_penalty;  /* NAN: not sent; else -2..2 */
    double frequency_penalty; /* NAN: not sent; else -2..2 */
    bool has_seed;            /* send seed (best effort: backends may ignore it) */
    int64_t seed;
    const char *stop[INFER_STOP_MAX]; /* sent as "stop" when stop_count > 0; non-empty strings */
    size_t stop_count;
    const char *user; /* the end user's id, sent as "user"; NULL: not sent */
} infer_options;

/* Every option at its configured default or not sent. */
void infer_options_init(infer_options *o);

/* Sends the messages and waits for the whole reply (POST {base_url}/chat/completions, not
 * streamed). Connection errors, 408, 429 and 5xx are retried (inference.retries) with jittered
 * exponential backoff, honouring Retry-After up to inference.backoff_max_ms; the whole call,
 * waits included, ends by inference.total_timeout_ms. While the breaker is open it fails at once
 * with QR_EUNAVAILABLE. Errors: QR_EINVAL (bad arguments, or the backend refused the request),
 * QR_EAUTH (401/403), QR_ENOTFOUND (404), QR_EUNAVAILABLE, QR_ETIMEOUT, QR_EIO (malformed reply).
 * On error *out is left initialised and empty. */
qr_status infer_chat(infer_client *client, const infer_message *messages, size_t count, infer_completion *out,
                     char *err);

typedef enum {
    INFER_EVENT_DELTA = 0, /* text: the next piece of the answer (whole UTF-8 characters) */
    INFER_EVENT_DONE,      /* the answer is complete; text: the finish reason ("" when unknown) */
    INFER_EVENT_ERROR,     /* the stream broke after some text was passed on; text: the reason */
} infer_event_type;

typedef struct {
    infer_event_type type;
    const char *text; /* valid during the callback only */
    size_t len;
    qr_status status; /* INFER_EVENT_ERROR: the status the call returns */
} infer_event;

/* Receives stream events. It runs on the thread that made the call, from inside that call, never
 * after the call has returned. Return 0 to go on, non-zero to stop the stream (the call then
 * returns QR_EIO with "cancelled" and fires no further event). */
typedef int (*infer_event_fn)(const infer_event *event, void *user);

/* Like infer_chat, but the reply is streamed (server-sent events) and every piece of text is
 * passed to on_event as it arrives. The callback contract:
 *   - a call that fails before the first piece of text was passed on never fires the callback;
 *     such failures are retried like infer_chat's (and a stalled attempt, one that sends no text
 *     within inference.first_token_timeout_ms, is abandoned and retried);
 *   - once text has been passed on, nothing is retried: an error (a reset, a stall longer than
 *     inference.first_token_timeout_ms between events, a malformed event) fires exactly one
 *     INFER_EVENT_ERROR and the call returns its status;
 *   - a call that succeeds ends with exactly one INFER_EVENT_DONE.
 * out receives the whole text as well. */
qr_status infer_chat_stream(infer_client *client, const infer_message *messages, size_t count,
                            infer_event_fn on_event, void *user, infer_completion *out, char *err);

/* Model ids the backend serves (GET {base_url}/models). */
typedef struct {
    char **ids;
    size_t count;
} infer_models;

/* Fills *out (release it with infer_models_release). Same retries and errors as infer_chat. */
qr_status infer_list_models(infer_client *client, infer_models *out, char *err);
void infer_models_release(infer_models *models);

/* ---- rerank ------------------------------------------------------------------------------ */

/* The wire shape of a reranking service. */
typedef enum {
    INFER_RERANK_NONE = 0, /* rerank.backend = none */
    INFER_RERANK_COHERE,   /* POST {base_url}/rerank {model, query, documents, top_n} ->
                            * {results:[{index, relevance_score}]} (Cohere, Jina, vLLM, Infinity) */
    INFER_RERANK_TEI,      /* POST {base_url}/rerank {query, texts, raw_scores:false} -> [{index, score}]
                            * (text-embeddings-inference) */
} infer_rerank_shape;

/* A reranking client built from the rerank.* keys: its own libcurl client (retries within
 * rerank.timeout_ms, its own circuit breaker and counters), thread-safe like infer_client. */
typedef struct infer_reranker infer_reranker;

/* Builds the reranker. rerank.backend = none gives *out NULL and QR_OK (nothing to call). A
 * backend without rerank.base_url, or cohere without rerank.model, is QR_EINVAL naming the key.
 * Sends nothing over the network. */
qr_status infer_reranker_new(const qr_config *cfg, infer_reranker **out, char *err);
/* NULL is a no-op. No call on it may be running. */
void infer_reranker_free(infer_reranker *rr);
/* rerank.model ("" when unset), rerank.candidates, "cohere"/"tei". */
const char *infer_reranker_model(const infer_reranker *rr);
size_t infer_reranker_candidates(const infer_reranker *rr);
const char *infer_reranker_backend(const infer_reranker *rr);

/* Why a rerank call gave no order; "" after success. */
typedef enum {
    INFER_RERANK_OK = 0,
    INFER_RERANK_TIMEOUT,      /* "timeout": rerank.timeout_ms passed */
    INFER_RERANK_BREAKER_OPEN, /* "breaker_open": refused without a call after repeated failures */
    INFER_RERANK_MALFORMED,    /* "malformed_reply": not JSON, wrong types, bad or missing indexes */
    INFER_RERANK_ERROR,        /* "backend_error": HTTP errors, connection failures, refused requests */
} infer_rerank_failure;

const char *infer_rerank_failure_name(infer_rerank_failure f);

/* Scores n passages against query: scores[i] is the service's relevance of texts[i] (higher is
 * better). Each text is cut to rerank.max_passage_chars characters (at a UTF-8 boundary; invalid
 * UTF-8 becomes U+FFFD) before it is sent; nothing but the query and these texts leaves quarry.
 * On error *why says which kind of failure it was, err says more, and scores are unspecified. */
qr_status infer_rerank(infer_reranker *rr, const char *query, const char *const *texts, const size_t *lens,
                       size_t n, double *scores, infer_rerank_failure *why, char *err);
/* Counters of the reranker's client (calls, retries, failures, breaker). */
void infer_reranker_stats(infer_reranker *rr, infer_stats *out);

/* ---- answers with citations -------------------------------------------------------------- */

/* One passage that retrieval has already trimmed to what the asker may read. The drafter sends
 * nothing else to the backend. Strings are borrowed for the duration of the call. */
typedef struct {
    int64_t chunk_id;
    const char *doc_id;   /* required */
    const char *title;    /* may be NULL */
    const char *uri;      /* may be NULL */
    const char *headings; /* heading path, may be NULL */
    const char *text;     /* required: the passage text sent to the backend */
    const char *snippet;  /* short display excerpt; NULL: the start of text */
    size_t start, end;    /* character offsets of the chunk in its document */
    double score;
} infer_passage;

typedef struct {
    const char *question;         /* required, non-empty */
    const infer_message *history; /* earlier turns, oldest first; user and assistant roles only */
    size_t history_count;
    const infer_passage *passages; /* permitted passages in rank order (may be none) */
    size_t passage_count;
    infer_event_fn on_event; /* optional: receives the answer as it is drafted */
    void *user;
    const infer_options *options; /* NULL: the configured defaults */
} infer_request;

typedef enum { INFER_MODE_GENERATIVE = 0, INFER_MODE_EXTRACTIVE } infer_mode;

/* "generative" or "extractive". */
const char *infer_mode_name(infer_mode mode);

/* A retrieved passage as the result reports it (owned copies). */
typedef struct {
    int number; /* its [n]: the passage's 1-based rank */
    bool sent;  /* went to the backend in the prompt (false: beyond the token budget, no backend, or
                 * the breaker refused the call) */
    bool cited; /* the answer cites it */
    int64_t chunk_id;
    char *doc_id, *title, *uri, *headings, *snippet; /* "" when the passage had none */
    size_t start, end;
    double score;
} infer_source;

typedef struct {
    char *text; /* the answer; citations that point nowhere are removed */
    infer_mode mode;
    /* Extractive mode only (NULL otherwise): why no generated answer. reason is one of
     * "no_backend", "breaker_open", "backend_timeout", "backend_error"; detail says more. */
    const char *reason;
    char *detail;
    char *finish_reason;   /* generative: the backend's finish reason, or NULL */
    infer_source *sources; /* every passage given, in rank order */
    size_t source_count;
    size_t *cited; /* indices into sources, in order of first citation */
    size_t cited_count;
} infer_result;

void infer_result_init(infer_result *r);
void infer_result_release(infer_result *r);

/* Drafts an answer to req->question from req->passages.
 *
 * Generative: a system prompt tells the model to answer only from the numbered sources and cite
 * them as [n]; the passages are packed in rank order within the prompt budget
 * (inference.context_tokens minus inference.max_tokens), each between fence lines that carry a
 * random per-call code, with any fence-like text inside them neutralised; the newest history
 * turns are kept within a quarter of the budget. Tokens are estimated, not counted: one per four
 * ASCII bytes (rounded up) plus one per non-ASCII character, plus four per message. The reply is
 * streamed from the backend; its [n], [n, m], [n-m] and [n][m] citations are mapped to the sources
 * sent, and markers pointing at no sent source ([7] of three, [0], [-1], [1000]) are dropped from
 * the text and the cited list.
 *
 * Extractive: with client NULL or not configured, when the backend fails before any text was
 * passed to on_event (after retries), or while the breaker is open, the answer is the best
 * sentences of the top passages with [n] citations, mode INFER_MODE_EXTRACTIVE and the reason set;
 * never silently. on_event, when given, receives that text as one INFER_EVENT_DELTA and then
 * INFER_EVENT_DONE, so a streaming consumer always gets an answer. The streamed text is the model's
 * text cleaned as it comes (a few bytes, such as an unfinished "[1", wait for the next piece), and
 * equals out->text.
 *
 * Errors: QR_EINVAL for a bad request (missing question, passage without doc_id or text, history
 * with a system message); QR_ELIMIT when the question and system prompt alone exceed the budget;
 * after text was streamed to on_event, the stream's error (on_event got INFER_EVENT_ERROR). On
 * error *out is left initialised and empty. */
qr_status infer_answer(infer_client *client, const infer_request *req, infer_result *out, char *err);

#ifdef __cplusplus
}
#endif

#endif
