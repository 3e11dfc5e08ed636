/*
 * inference's private pieces, shared between its files and its unit tests: the incremental
 * server-sent-event parser, the circuit breaker's state machine (driven by a caller-supplied
 * clock so that tests need not sleep), citation parsing, prompt assembly with fenced sources,
 * the token estimate and the extractive answer. Nothing here is part of quarry's public API.
 */
#ifndef QUARRY_INFERENCE_INT_H
#define QUARRY_INFERENCE_INT_H

#include "inference/inference.h"

/* ---- server-sent events ------------------------------------------------------------------ */

/* Called once per complete event: event is its type ("message" unless an event: field named
 * another), data its data lines joined with "\n" (NUL-terminated, len bytes). A non-OK return
 * stops the parser, which returns that status. */
typedef qr_status (*infer_sse_fn)(void *user, const char *event, const char *data, size_t len, char *err);

/* An incremental parser of a text/event-stream body, fed bytes as they arrive in pieces of any
 * size: lines may end in LF, CR or CRLF (even with the CR and LF in different pieces), a leading
 * UTF-8 byte-order mark is skipped, ":" lines are comments, and data: lines accumulate until a
 * blank line ends the event. Fields are private. */
typedef struct {
    qr_buf line;
    qr_buf data;
    qr_buf event;
    bool after_cr;     /* the last byte ended a line with CR: a following LF is part of it */
    bool have_data;    /* a data: field was seen in the current event */
    unsigned bom_seen; /* bytes of a leading byte-order mark matched so far */
    bool bom_done;
    size_t max_event;
} infer_sse;

/* max_event caps a line and an event's data (hostile streams cannot grow memory unbounded). */
void infer_sse_init(infer_sse *p, size_t max_event);
void infer_sse_release(infer_sse *p);
/* Feeds n bytes. Returns QR_ELIMIT when a line or event exceeds the cap, or fn's error. An
 * unfinished event at the end of the stream is never delivered. */
qr_status infer_sse_feed(infer_sse *p, const char *buf, size_t n, infer_sse_fn fn, void *user, char *err);

/* ---- circuit breaker --------------------------------------------------------------------- */

typedef enum { INFER_OUTCOME_SUCCESS = 0, INFER_OUTCOME_FAILURE, INFER_OUTCOME_NEUTRAL } infer_outcome;

/* Not thread-safe by itself: the client holds its mutex around every call. */
typedef struct {
    infer_breaker_state state;
    int failures;  /* consecutive failed calls while closed */
    int threshold; /* failures that open it */
    uint64_t cooldown_ms;
    uint64_t opened_at_ms;
    bool probe_in_flight;
} infer_breaker;

void infer_breaker_init(infer_breaker *b, int threshold, uint64_t cooldown_ms);
/* May a call start now? Moves open to half-open once the cool-down has passed and lets exactly
 * one probe through (*is_probe true) until that probe is recorded. */
bool infer_breaker_allow(infer_breaker *b, uint64_t now_ms, bool *is_probe);
/* Records how an allowed call ended. Neutral outcomes (the caller cancelled, the request was
 * refused as bad) neither close nor open the breaker but end a probe. */
void infer_breaker_record(infer_breaker *b, uint64_t now_ms, infer_outcome outcome, bool was_probe);
/* The state as a caller would see it now (open reads as half-open once the cool-down is over). */
infer_breaker_state infer_breaker_peek(const infer_breaker *b, uint64_t now_ms);
/* Milliseconds until an open breaker lets a probe through (0 when it would now). */
uint64_t infer_breaker_wait_ms(const infer_breaker *b, uint64_t now_ms);

/* ---- citations --------------------------------------------------------------------------- */

/* Largest number a source can have. Larger ones ("[1000]") and signed ones ("[-1]") in a citation
 * group point at no source; a lone bracketed four-digit year ("[2023]", 1800..2199) is text. */
#define INFER_CITE_MAX 999

/* Finds the citation groups in text: [n], [n, m] (commas or semicolons), ranges [n-m] and runs
 * like [n][m]; numbers of up to 9 digits, optionally signed. Writes to *clean (malloc'd, caller
 * frees) the text with every number outside 1..max_valid removed from its group, and groups left
 * empty removed with the space before them. Writes the distinct valid numbers, in order of first
 * appearance, to *cited (malloc'd, may be NULL when *ncited is 0). On error nothing is
 * allocated. */
qr_status infer_cite_process(const char *text, int max_valid, char **clean, int **cited, size_t *ncited,
                             char *err);

/* The same cleaning, piece by piece, for a streamed answer: each piece fed appends to out the text
 * that no later piece can change, and keeps back the rest (an unfinished "[1", the space before
 * it: a few bytes, at most one group's). Fed with final true (a last piece, possibly empty) it
 * flushes everything. The concatenation of what it appends equals infer_cite_process's *clean
 * for the concatenated pieces, however the text was cut. */
typedef struct {
    int max_valid;
    qr_buf pending; /* fed, not yet decided */
} infer_cite_stream;

void infer_cite_stream_init(infer_cite_stream *cs, int max_valid);
void infer_cite_stream_release(infer_cite_stream *cs);
/* QR_ENOMEM (out may then hold part of this piece's text). */
qr_status infer_cite_stream_feed(infer_cite_stream *cs, const char *text, size_t len, bool final, qr_buf *out,
                                 char *err);

/* ---- prompt ------------------------------------------------------------------------------ */

#define INFER_NONCE_LEN 16

/* Fills out with INFER_NONCE_LEN random lowercase hex digits and a NUL. */
qr_status infer_nonce(char out[INFER_NONCE_LEN + 1], char *err);

/* Estimated tokens of s[0..n): ceil(ASCII bytes / 4) + one per non-ASCII character. */
size_t infer_tokens_estimate(const char *s, size_t n);
/* Per-message overhead added by the estimate. */
#define INFER_TOKENS_PER_MESSAGE 4

/* Appends untrusted text so that it cannot forge a fence line: invalid UTF-8 becomes U+FFFD,
 * control characters other than newline and tab become spaces (CR and CRLF become newlines),
 * every run of '<' or '>' is broken up with spaces, and the nonce (any case) is replaced. */
qr_status infer_fence_text(qr_buf *out, const char *s, const char *nonce);

/* A built prompt: messages owned by it. */
typedef struct {
    infer_message *messages;
    size_t count;
    size_t sent;         /* passages packed, as sources 1..sent */
    size_t history_used; /* newest history messages kept */
    size_t tokens;       /* estimated prompt tokens */
} infer_prompt;

/* Builds system prompt + kept history + one user message with the fenced sources and the
 * question, within budget_tokens. Returns QR_ELIMIT when the system prompt and question alone do
 * not fit. On error out is empty. */
qr_status infer_prompt_build(const infer_request *req, size_t budget_tokens, const char *nonce,
                             infer_prompt *out, char *err);
void infer_prompt_release(infer_prompt *p);

/* ---- extractive answers ------------------------------------------------------------------ */

/* Passages the extractive answer draws from, and sentences it keeps. */
#define INFER_EXTRACT_PASSAGES  3
#define INFER_EXTRACT_SENTENCES 3

/* The best sentences of the top passages for the question, each followed by its source's [n]
 * (n = rank), in rank and reading order. *text is malloc'd; cited[] gets the 0-based passage
 * indices used, in order of first use (at most INFER_EXTRACT_PASSAGES). With no passages the text
 * says that no source was found. */
qr_status infer_extract(const char *question, const infer_passage *passages, size_t count, char **text,
                        size_t cited[INFER_EXTRACT_PASSAGES], size_t *ncited, char *err);

/* ---- client internals used by the drafter ------------------------------------------------ */

/* Prompt budget: inference.context_tokens minus inference.max_tokens. */
size_t infer_client_budget(const infer_client *client);
/* Checks per-request options against the configured caps (inference.max_tokens) and OpenAI's
 * ranges: QR_EINVAL naming the option. NULL options are fine. */
qr_status infer_options_check(const infer_client *client, const infer_options *options, char *err);
/* Chat with the reply streamed or not, with options (NULL: the configured defaults; checked
 * against the configured caps, QR_EINVAL). on_event may be NULL (the text is only collected, and
 * failures stay retryable until the end since nothing was passed on). *rejected is set when the
 * breaker refused the call without sending anything. */
qr_status infer_chat_call(infer_client *client, const infer_message *messages, size_t count, bool stream,
                          const infer_options *options, infer_event_fn on_event, void *user,
                          infer_completion *out, bool *rejected, char *err);

/* Reads a streamed chat reply (a text/event-stream body) from pieces as libcurl's write callback
 * would receive them, with no transfer: the same event parsing, [DONE] and end-of-stream rules as
 * a streamed infer_chat_call, for tests and fuzzing. on_event (may be NULL) gets each
 * INFER_EVENT_DELTA, never DONE or ERROR. The first failure stops the reading, as it stops a
 * transfer: QR_EIO (a malformed event, the backend's error event, a stream ended before [DONE] or
 * a finish reason), QR_ELIMIT (an event or the answer too long), the callback's refusal as QR_EIO.
 * On success *out holds the reply (release it); on error it is empty. */
qr_status infer_stream_read(const char *const *pieces, const size_t *lens, size_t count,
                            infer_event_fn on_event, void *user, infer_completion *out, char *err);

/* What a client is built from: infer_client_new reads it from inference.*, the reranker from
 * rerank.*. Strings are copied. */
typedef struct {
    const char *what;   /* how messages name the server: "inference backend", "reranker" */
    const char *prefix; /* the keys' section, named in messages: "inference", "rerank" */
    const char *base_url, *model, *api_key, *api_version, *headers;
    long connect_timeout_ms, first_token_timeout_ms, total_timeout_ms, backoff_max_ms;
    long max_tokens;
    double temperature;
    int retries, max_concurrent, breaker_failures;
    uint64_t breaker_cooldown_ms;
    size_t context_tokens; /* must exceed max_tokens by 256 */
} infer_client_params;

qr_status infer_client_new_params(const infer_client_params *p, infer_client **out, char *err);

/* Reads a whole 2xx reply body (len bytes, NUL-terminated). A non-OK return ends the call with
 * it; QR_EIO (a malformed reply) counts as a backend failure for the breaker, and is not retried. */
typedef qr_status (*infer_reply_fn)(void *ctx, const char *body, size_t len, char *err);

/* POSTs a JSON body to {base_url}{path} with the client's retries, backoff, deadline
 * (total_timeout_ms), breaker and concurrency cap, and hands the 2xx reply to on_reply (on the
 * calling thread, at most once per attempt, never after the call returned). Errors as infer_chat's;
 * *rejected is set when the breaker refused the call without sending anything. */
qr_status infer_client_post(infer_client *c, const char *path, const char *body, infer_reply_fn on_reply,
                            void *ctx, bool *rejected, char *err);

/* ---- rerank replies (rerank.c) ------------------------------------------------------------ */

/* Reads a reranker's reply to a request of n documents into scores[0..n): Cohere's shape
 * {"results":[{"index":i,"relevance_score":s},...]} or TEI's [{"index":i,"score":s},...]. Every
 * index 0..n-1 must appear exactly once with a finite number as its score; anything else (wrong
 * types, an index out of range or repeated, a missing one, more entries than documents, extra
 * nesting) is QR_EIO naming what was wrong, and scores are then unspecified. */
qr_status infer_rerank_parse(infer_rerank_shape shape, const char *body, size_t len, size_t n, double *scores,
                             char *err);

/* Validates a request's shape (see infer_answer). */
qr_status infer_request_check(const infer_request *req, char *err);

#endif
