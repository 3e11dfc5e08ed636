/*
 * The reranking client: sends a query and the passages retrieval found (already trimmed to what
 * the caller may read) to a cross-encoder service and reads back one relevance score per passage.
 * Two wire shapes: Cohere's /rerank ({model, query, documents, top_n} -> {results:[{index,
 * relevance_score}]}, which Jina, vLLM and Infinity serve too) and Hugging Face
 * text-embeddings-inference's /rerank ({query, texts, raw_scores} -> [{index, score}]). The HTTP
 * side -- retries before any reply, jittered backoff, the deadline, the circuit breaker, the
 * concurrency cap -- is the chat client's (client.c), built from the rerank.* keys, so a dead
 * reranker costs each search one refused call, not a timeout. A reply is trusted for nothing:
 * every index must name a passage sent, once, with a finite score, or the whole reply is refused
 * and the caller keeps its first-stage order.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference/inference_int.h"

#define RERANK_REQUEST_MAX    (64u << 20)
#define RERANK_MAX_CONCURRENT 16

struct infer_reranker {
    infer_client *client;
    infer_rerank_shape shape;
    char *model;
    size_t candidates;
    size_t max_chars;
};

const char *infer_rerank_failure_name(infer_rerank_failure f)
{
    switch (f) {
    case INFER_RERANK_OK: return "";
    case INFER_RERANK_TIMEOUT: return "timeout";
    case INFER_RERANK_BREAKER_OPEN: return "breaker_open";
    case INFER_RERANK_MALFORMED: return "malformed_reply";
    case INFER_RERANK_ERROR: return "backend_error";
    }
    return "backend_error";
}

qr_status infer_reranker_new(const qr_config *cfg, infer_reranker **out, char *err)
{
    infer_reranker *rr = NULL;
    qr_status st = QR_OK;
    if (!out)
        return qr_fail(err, QR_EINVAL, "infer_reranker_new: no place for the reranker");
    *out = NULL;
    if (!cfg)
        return qr_fail(err, QR_EINVAL, "infer_reranker_new: no configuration");
    const qr_settings *set = qr_config_settings(cfg);
    infer_rerank_shape shape = INFER_RERANK_NONE;
    if (strcmp(set->rerank_backend, "cohere") == 0)
        shape = INFER_RERANK_COHERE;
    else if (strcmp(set->rerank_backend, "tei") == 0)
        shape = INFER_RERANK_TEI;
    if (shape == INFER_RERANK_NONE)
        return QR_OK;
    if (!*set->rerank_base_url)
        return qr_fail(err, QR_EINVAL, "rerank.backend is %s but rerank.base_url is empty",
                       set->rerank_backend);
    if (shape == INFER_RERANK_COHERE && !*set->rerank_model)
        return qr_fail(err, QR_EINVAL,
                       "rerank.backend is cohere but rerank.model is empty (the API requires it)");

    rr = calloc(1, sizeof(*rr));
    if (!rr)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    rr->shape = shape;
    rr->candidates = (size_t)set->rerank_candidates;
    rr->max_chars = (size_t)set->rerank_max_passage_chars;
    if (!(rr->model = strdup(set->rerank_model))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    /* no stream, so the first-token deadline plays no part; the backoff never outlasts the call */
    infer_client_params p = {
        .what = "reranker",
        .prefix = "rerank",
        .base_url = set->rerank_base_url,
        .model = set->rerank_model,
        .api_key = set->rerank_api_key,
        .connect_timeout_ms = (long)set->rerank_timeout_ms,
        .first_token_timeout_ms = (long)set->rerank_timeout_ms,
        .total_timeout_ms = (long)set->rerank_timeout_ms,
        .backoff_max_ms = (long)set->rerank_timeout_ms,
        .max_tokens = 1,
        .retries = (int)set->rerank_retries,
        .max_concurrent = RERANK_MAX_CONCURRENT,
        .breaker_failures = (int)set->rerank_breaker_failures,
        .breaker_cooldown_ms = (uint64_t)set->rerank_breaker_cooldown_ms,
        .context_tokens = 1024,
    };
    if ((st = infer_client_new_params(&p, &rr->client, err)))
        goto out;
    *out = rr;
    rr = NULL;
out:
    infer_reranker_free(rr);
    return st;
}

void infer_reranker_free(infer_reranker *rr)
{
    if (!rr)
        return;
    infer_client_free(rr->client);
    free(rr->model);
    free(rr);
}

const char *infer_reranker_model(const infer_reranker *rr)
{
    return rr && rr->model ? rr->model : "";
}

size_t infer_reranker_candidates(const infer_reranker *rr)
{
    return rr ? rr->candidates : 0;
}

const char *infer_reranker_backend(const infer_reranker *rr)
{
    if (!rr)
        return "none";
    return rr->shape == INFER_RERANK_TEI ? "tei" : "cohere";
}

void infer_reranker_stats(infer_reranker *rr, infer_stats *out)
{
    infer_client_stats(rr ? rr->client : NULL, out);
}

/* ---- replies ----------------------------------------------------------------------------- */

/* One {index, <score_key>} entry. */
static qr_status take_entry(json_t *e, size_t pos, const char *score_key, size_t n, double *scores,
                            unsigned char *seen, char *err)
{
    if (!json_is_object(e))
        return qr_fail(err, QR_EIO, "malformed rerank reply: entry %zu is not an object", pos);
    json_t *index = json_object_get(e, "index"), *score = json_object_get(e, score_key);
    if (!json_is_integer(index))
        return qr_fail(err, QR_EIO, "malformed rerank reply: entry %zu has no integer index", pos);
    json_int_t i = json_integer_value(index);
    if (i < 0 || (uint64_t)i >= n)
        return qr_fail(err, QR_EIO, "malformed rerank reply: index %lld is outside 0..%zu", (long long)i,
                       n - 1);
    if (seen[i])
        return qr_fail(err, QR_EIO, "malformed rerank reply: index %lld appears twice", (long long)i);
    if (!json_is_number(score))
        return qr_fail(err, QR_EIO, "malformed rerank reply: entry %zu has no numeric %s", pos, score_key);
    double v = json_number_value(score);
    if (!isfinite(v))
        return qr_fail(err, QR_EIO, "malformed rerank reply: entry %zu's %s is not finite", pos, score_key);
    seen[i] = 1;
    scores[i] = v;
    return QR_OK;
}

qr_status infer_rerank_parse(infer_rerank_shape shape, const char *body, size_t len, size_t n, double *scores,
                             char *err)
{
    json_error_t jerr;
    json_t *root = NULL, *list = NULL;
    unsigned char *seen = NULL;
    qr_status st = QR_OK;
    if (shape != INFER_RERANK_COHERE && shape != INFER_RERANK_TEI)
        return qr_fail(err, QR_EINVAL, "infer_rerank_parse: no rerank shape");
    if (!body || n == 0 || !scores)
        return qr_fail(err, QR_EINVAL, "infer_rerank_parse: nothing to read");
    /* jansson refuses NaN, Infinity and numbers that overflow a double: all malformed */
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        st = qr_fail(err, QR_EIO, "malformed rerank reply: %s", jerr.text);
        goto out;
    }
    const char *score_key = shape == INFER_RERANK_COHERE ? "relevance_score" : "score";
    list = shape == INFER_RERANK_COHERE ? json_object_get(root, "results") : root;
    if (!json_is_array(list)) {
        st = qr_fail(err, QR_EIO, "malformed rerank reply: %s",
                     shape == INFER_RERANK_COHERE ? "no \"results\" list" : "not a list");
        goto out;
    }
    size_t count = json_array_size(list);
    if (count != n) {
        st = qr_fail(err, QR_EIO, "malformed rerank reply: %zu scores for %zu passages", count, n);
        goto out;
    }
    if (!(seen = calloc(n, 1))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory reading a rerank reply");
        goto out;
    }
    for (size_t k = 0; k < count && !st; k++)
        st = take_entry(json_array_get(list, k), k, score_key, n, scores, seen, err);
out:
    free(seen);
    json_decref(root);
    return st;
}

/* ---- the call ---------------------------------------------------------------------------- */

/* The bytes of s[0..len) that hold its first max characters (a character: a byte that does not
 * continue a UTF-8 sequence; invalid bytes count as one each and are replaced when escaped). */
static size_t cut_chars(const char *s, size_t len, size_t max)
{
    size_t chars = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80 && chars++ == max)
            return i;
    }
    return len;
}

static qr_status request_body(const infer_reranker *rr, const char *query, const char *const *texts,
                              const size_t *lens, size_t n, qr_buf *b)
{
    qr_status st = QR_OK;
    if (rr->shape == INFER_RERANK_COHERE) {
        st = qr_buf_puts(b, "{\"model\":");
        if (!st)
            st = qr_json_escape(b, rr->model, strlen(rr->model));
        if (!st)
            st = qr_buf_puts(b, ",\"query\":");
    } else {
        st = qr_buf_puts(b, "{\"query\":");
    }
    if (!st)
        st = qr_json_escape(b, query, strlen(query));
    if (!st)
        st = qr_buf_puts(b, rr->shape == INFER_RERANK_COHERE ? ",\"documents\":[" : ",\"texts\":[");
    for (size_t i = 0; i < n && !st; i++) {
        const char *t = texts[i] ? texts[i] : "";
        size_t len = lens ? lens[i] : strlen(t);
        if (i)
            st = qr_buf_putc(b, ',');
        if (!st)
            st = qr_json_escape(b, t, cut_chars(t, len, rr->max_chars));
    }
    if (!st)
        st = rr->shape == INFER_RERANK_COHERE ? qr_buf_printf(b, "],\"top_n\":%zu}", n)
                                              : qr_buf_puts(b, "],\"raw_scores\":false,\"truncate\":true}");
    return st;
}

typedef struct {
    const infer_reranker *rr;
    size_t n;
    double *scores;
    bool malformed;
} reply_ctx;

static qr_status on_reply(void *ctx, const char *body, size_t len, char *err)
{
    reply_ctx *rc = ctx;
    qr_status st = infer_rerank_parse(rc->rr->shape, body, len, rc->n, rc->scores, err);
    if (st == QR_EIO)
        rc->malformed = true;
    return st;
}

qr_status infer_rerank(infer_reranker *rr, const char *query, const char *const *texts, const size_t *lens,
                       size_t n, double *scores, infer_rerank_failure *why, char *err)
{
    infer_rerank_failure own;
    if (!why)
        why = &own;
    *why = INFER_RERANK_ERROR;
    if (!rr)
        return qr_fail(err, QR_EINVAL, "no reranker is configured (rerank.backend is none)");
    if (!query || !scores || (n && !texts))
        return qr_fail(err, QR_EINVAL, "infer_rerank: NULL argument");
    if (n == 0) {
        *why = INFER_RERANK_OK;
        return QR_OK;
    }
    qr_buf body;
    qr_buf_init(&body, RERANK_REQUEST_MAX);
    qr_status st = request_body(rr, query, texts, lens, n, &body);
    if (st) {
        st = qr_fail(err, QR_ELIMIT, "the rerank request is larger than %u bytes", RERANK_REQUEST_MAX);
        goto out;
    }
    reply_ctx rc = {rr, n, scores, false};
    bool rejected = false;
    st = infer_client_post(rr->client, "/rerank", qr_buf_str(&body), on_reply, &rc, &rejected, err);
    if (!st)
        *why = INFER_RERANK_OK;
    else if (rejected)
        *why = INFER_RERANK_BREAKER_OPEN;
    else if (rc.malformed)
        *why = INFER_RERANK_MALFORMED;
    else if (st == QR_ETIMEOUT)
        *why = INFER_RERANK_TIMEOUT;
    else
        *why = INFER_RERANK_ERROR;
out:
    qr_buf_release(&body);
    return st;
}
