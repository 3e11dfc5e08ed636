/*
 * The answer drafter: from a question and the passages retrieval permits, a cited answer. It
 * builds the fenced prompt, streams the backend's reply through to the caller with citations
 * that point at no sent passage taken out on the way (so the streamed text is the answer's
 * text), maps the reply's citations to the passages that were actually sent, and, when no
 * backend can answer before any text has reached the caller, answers extractively and says why. The result
 * owns copies of everything it reports, so it outlives the passages it was built from.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference/inference_int.h"

#define SNIPPET_MAX 240 /* bytes of a derived snippet */

const char *infer_mode_name(infer_mode mode)
{
    return mode == INFER_MODE_EXTRACTIVE ? "extractive" : "generative";
}

void infer_result_init(infer_result *r)
{
    memset(r, 0, sizeof(*r));
}

void infer_result_release(infer_result *r)
{
    if (!r)
        return;
    free(r->text);
    free(r->detail);
    free(r->finish_reason);
    for (size_t i = 0; i < r->source_count; i++) {
        infer_source *s = &r->sources[i];
        free(s->doc_id);
        free(s->title);
        free(s->uri);
        free(s->headings);
        free(s->snippet);
    }
    free(r->sources);
    free(r->cited);
    infer_result_init(r);
}

/* A one-line excerpt: the given snippet, or the start of the text cut at a word. */
static char *make_snippet(const infer_passage *p)
{
    const char *src = p->snippet ? p->snippet : p->text;
    size_t n = strlen(src);
    bool cut = false;
    if (!p->snippet && n > SNIPPET_MAX) {
        size_t k = SNIPPET_MAX;
        while (k > 0 && ((unsigned char)src[k] & 0xC0) == 0x80)
            k--;
        size_t space = k;
        while (space > SNIPPET_MAX / 2 && src[space] != ' ' && src[space] != '\n')
            space--;
        n = src[space] == ' ' || src[space] == '\n' ? space : k;
        cut = true;
    }
    char *raw = strndup(src, n);
    if (!raw)
        return NULL;
    qr_buf b;
    qr_buf_init(&b, 4 * n + 16);
    qr_status st = infer_fence_text(&b, raw, NULL);
    if (!st && cut)
        st = qr_buf_puts(&b, "…");
    free(raw);
    char *s = st ? NULL : qr_buf_detach(&b);
    qr_buf_release(&b);
    if (s)
        for (char *q = s; *q; q++)
            if (*q == '\n' || *q == '\t')
                *q = ' ';
    return s;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static qr_status copy_sources(const infer_request *req, infer_result *out, char *err)
{
    if (req->passage_count == 0)
        return QR_OK;
    out->sources = calloc(req->passage_count, sizeof(infer_source));
    if (!out->sources)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    for (size_t i = 0; i < req->passage_count; i++) {
        const infer_passage *p = &req->passages[i];
        infer_source *s = &out->sources[i];
        out->source_count++;
        s->number = (int)i + 1;
        s->chunk_id = p->chunk_id;
        s->start = p->start;
        s->end = p->end;
        s->score = p->score;
        s->doc_id = dup_or_empty(p->doc_id);
        s->title = dup_or_empty(p->title);
        s->uri = dup_or_empty(p->uri);
        s->headings = dup_or_empty(p->headings);
        s->snippet = make_snippet(p);
        if (!s->doc_id || !s->title || !s->uri || !s->headings || !s->snippet)
            return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    return QR_OK;
}

/* Forwards text, cleaned of citations that point nowhere, and errors to the caller, and notes
 * that text went out; the drafter sends the rest of the text and the final INFER_EVENT_DONE
 * itself, after it knows which answer it returns. */
typedef struct {
    const infer_request *req;
    bool delivered;
    infer_cite_stream cites;
    qr_status st; /* the first failure of the cleaning (out of memory) */
} relay;

/* Passes on what the cleaning lets through of text (final: everything held back too). Returns
 * the caller's answer (non-zero: stop). */
static int relay_text(relay *r, const char *text, size_t len, bool final)
{
    qr_buf out;
    qr_buf_init(&out, SIZE_MAX / 8);
    char err[QR_ERR_LEN];
    int rc = 0;
    qr_status st = infer_cite_stream_feed(&r->cites, text, len, final, &out, err);
    if (st && !r->st)
        r->st = st;
    if (qr_buf_len(&out)) {
        infer_event ev = {INFER_EVENT_DELTA, qr_buf_str(&out), qr_buf_len(&out), QR_OK};
        r->delivered = true;
        rc = r->req->on_event(&ev, r->req->user);
    }
    qr_buf_release(&out);
    return st ? 1 : rc;
}

static int relay_event(const infer_event *ev, void *user)
{
    relay *r = user;
    if (ev->type == INFER_EVENT_DONE)
        return 0;
    if (ev->type == INFER_EVENT_DELTA)
        return relay_text(r, ev->text, ev->len, false);
    /* an error ends the stream. Nothing shown yet (all of it held back): the caller has seen no
     * text, so the drafter answers extractively instead; else what was held back goes out first */
    if (!r->delivered)
        return 0;
    relay_text(r, NULL, 0, true);
    return r->req->on_event(ev, r->req->user);
}

static void send_done(const infer_request *req, const char *finish)
{
    if (!req->on_event)
        return;
    infer_event ev = {INFER_EVENT_DONE, finish ? finish : "", 0, QR_OK};
    ev.len = strlen(ev.text);
    req->on_event(&ev, req->user);
}

static qr_status answer_extractively(const infer_request *req, const char *reason, const char *detail,
                                     infer_result *out, char *err)
{
    size_t cited[INFER_EXTRACT_PASSAGES], ncited = 0;
    qr_status st =
        infer_extract(req->question, req->passages, req->passage_count, &out->text, cited, &ncited, err);
    if (st)
        return st;
    out->mode = INFER_MODE_EXTRACTIVE;
    out->reason = reason;
    out->detail = strdup(detail);
    out->cited = ncited ? malloc(ncited * sizeof(size_t)) : NULL;
    if (!out->detail || (ncited && !out->cited))
        return qr_fail(err, QR_ENOMEM, "out of memory");
    for (size_t i = 0; i < ncited; i++) {
        out->cited[i] = cited[i];
        out->sources[cited[i]].cited = true;
    }
    out->cited_count = ncited;
    /* without a backend every answer is extractive by design: not worth a warning each time */
    qr_log(strcmp(reason, "no_backend") == 0 ? QR_LOG_DEBUG : QR_LOG_WARN, "inference",
           "answering extractively (%s): %s", reason, detail);
    if (req->on_event) {
        infer_event ev = {INFER_EVENT_DELTA, out->text, strlen(out->text), QR_OK};
        req->on_event(&ev, req->user); /* a cancel here changes nothing: the answer is complete */
        send_done(req, NULL);
    }
    return QR_OK;
}

qr_status infer_answer(infer_client *client, const infer_request *req, infer_result *out, char *err)
{
    char own_err[QR_ERR_LEN];
    if (!err)
        err = own_err;
    if (!out)
        return qr_fail(err, QR_EINVAL, "infer_answer: no place for the result");
    infer_result_init(out);
    infer_prompt prompt = {0};
    infer_completion comp;
    infer_completion_init(&comp);
    char *clean = NULL;
    int *cited = NULL;
    size_t ncited = 0;
    relay r = {req, false, {0}, QR_OK};
    infer_cite_stream_init(&r.cites, 0);
    qr_status st = infer_request_check(req, err);
    if (st)
        goto out;
    st = copy_sources(req, out, err);
    if (st)
        goto out;
    if (!infer_client_configured(client)) {
        st = answer_extractively(
            req, "no_backend", "no inference backend is configured (inference.base_url is empty)", out, err);
        goto out;
    }

    /* a bad option is the asker's mistake, not the backend's: refused, never answered extractively */
    if ((st = infer_options_check(client, req->options, err)))
        goto out;
    char nonce[INFER_NONCE_LEN + 1];
    st = infer_nonce(nonce, err);
    if (!st)
        st = infer_prompt_build(req, infer_client_budget(client), nonce, &prompt, err);
    if (st)
        goto out;
    for (size_t i = 0; i < prompt.sent; i++)
        out->sources[i].sent = true;
    qr_log(QR_LOG_DEBUG, "inference", "prompt: %zu of %zu passages, %zu history turns, about %zu tokens",
           prompt.sent, req->passage_count, prompt.history_used, prompt.tokens);

    infer_cite_stream_init(&r.cites, (int)prompt.sent);
    bool rejected = false;
    st = infer_chat_call(client, prompt.messages, prompt.count, true, req->options,
                         req->on_event ? relay_event : NULL, &r, &comp, &rejected, err);
    if (!st && r.st)
        st = qr_fail(err, r.st, "out of memory cleaning the answer's citations");
    if (!st && comp.content[strspn(comp.content, " \t\r\n")] == '\0') {
        st = qr_fail(err, QR_EIO, "the inference backend returned an empty answer");
        rejected = false;
    }
    if (st) {
        if (r.delivered)
            goto out; /* the caller has shown text and got INFER_EVENT_ERROR: no second answer */
        char detail[QR_ERR_LEN];
        snprintf(detail, sizeof(detail), "%s", err);
        const char *reason = rejected            ? "breaker_open"
                             : st == QR_ETIMEOUT ? "backend_timeout"
                                                 : "backend_error";
        if (rejected) /* nothing left quarry; otherwise the prompt did go out and stays recorded */
            for (size_t i = 0; i < out->source_count; i++)
                out->sources[i].sent = false;
        st = answer_extractively(req, reason, detail, out, err);
        goto out;
    }

    st = infer_cite_process(comp.content, (int)prompt.sent, &clean, &cited, &ncited, err);
    if (st)
        goto out;
    /* the text held back while streaming (a marker at the very end, a trailing space) */
    if (req->on_event)
        relay_text(&r, NULL, 0, true);
    if (r.st) {
        st = qr_fail(err, r.st, "out of memory cleaning the answer's citations");
        goto out;
    }
    out->mode = INFER_MODE_GENERATIVE;
    out->text = clean;
    clean = NULL;
    out->finish_reason = comp.finish_reason;
    comp.finish_reason = NULL;
    if (ncited && !(out->cited = malloc(ncited * sizeof(size_t)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < ncited; i++) {
        out->cited[i] = (size_t)cited[i] - 1;
        out->sources[cited[i] - 1].cited = true;
    }
    out->cited_count = ncited;
    send_done(req, out->finish_reason);
out:
    if (st)
        infer_result_release(out);
    free(clean);
    free(cited);
    infer_completion_release(&comp);
    infer_prompt_release(&prompt);
    infer_cite_stream_release(&r.cites);
    return st;
}
