/*
 * The routes that read the knowledge base for a caller: POST /v1/search (passages), POST /v1/ask
 * (an answer with citations) and POST /v1/chat/completions (the same answer in OpenAI's shape,
 * as one JSON object or as server-sent chat.completion.chunk events ending with [DONE]).
 *
 * Every search goes through the search service (api/service.c), the same one `quarry search` and
 * `quarry ask` use: it trims each page twice -- retrieval searches only the chunks the caller's
 * principals permit, then every hit is tested again against the store's current ACLs and
 * tombstones -- so a hit whose document was deleted or whose ACL changed since the search, or a
 * retrieval bug, is dropped before anything is returned, cited or sent to the inference backend.
 * The chunks' text is read once, with the page.
 *
 * The audit log gets one line per request: a hash of the query and the doc ids returned (search)
 * or cited (answers).
 */
#define _GNU_SOURCE /* asprintf, memmem, strptime, timegm, explicit_bzero */
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "retrieval/retrieval.h"

/* ---- the seam with the search service -------------------------------------------------------- */

/* Searches for the caller through the search service (which trims the page twice: see
 * api/service.c): the request's filters and page, plain for questions. *out: the page
 * (retrieval_result_free). */
static qr_status search_for(api_req *r, const api_search_req *q, bool plain, retrieval_result **out,
                            char *err)
{
    *out = NULL;
    retrieval_mode mode = RETRIEVAL_MODE_DEFAULT; /* none named: retrieval.mode, resolved by the service */
    qr_status st = q->mode ? retrieval_mode_parse(q->mode, &mode, err) : QR_OK;
    if (st)
        return st;
    const auth_principal *p = r->principal;
    retrieval_caller caller = {(const char *const *)p->principals, p->nprincipals, p->is_admin};
    retrieval_request req = {
        .query = q->query,
        .plain = plain,
        .mode = mode,
        .k = q->k,
        .doc_ids = q->doc_ids,
        .ndoc_ids = q->ndoc_ids,
        .source_prefix = q->uri_prefix,
        .content_type = q->content_type,
        .updated_after_ms = q->updated_after_ms,
        .max_per_doc = q->max_per_doc,
        .cursor = q->cursor,
        .no_rerank = q->no_rerank,
        .cancel = &r->cancel, /* the client leaving or the deadline stops the search */
    };
    if ((st = api_service_search(r->srv->svc, &caller, &req, out, err)))
        return st;
    if ((*out)->mode != RETRIEVAL_VECTOR)
        api_metrics_bm25(r->srv->metrics, (*out)->bm25_pruned);
    return QR_OK;
}

/* ---- JSON of results ------------------------------------------------------------------------ */

static json_t *hit_json(const retrieval_hit *x)
{
    return json_pack("{s:I,s:s,s:s,s:s,s:s,s:f,s:s,s:I,s:I}", "chunk_id", (json_int_t)x->chunk_id, "doc_id",
                     x->doc_id, "title", x->title, "uri", x->uri, "headings", x->headings, "score", x->score,
                     "snippet", x->snippet ? x->snippet : "", "start", (json_int_t)x->start, "end",
                     (json_int_t)x->end);
}

/* What the rerank stage did to the page, or NULL when no reranker is configured:
 * {"applied":true,"model":M,"candidates":N} or {"applied":false,"reason":R,...}. */
static json_t *rerank_json(const retrieval_result *page)
{
    if (!page || page->rerank == RETRIEVAL_RERANK_OFF)
        return NULL;
    json_t *o = json_pack("{s:b,s:I}", "applied", page->rerank == RETRIEVAL_RERANK_APPLIED, "candidates",
                          (json_int_t)page->rerank_candidates);
    if (o && page->rerank != RETRIEVAL_RERANK_APPLIED)
        json_object_set_new(o, "reason", json_string(page->rerank_reason ? page->rerank_reason : ""));
    if (o && page->rerank_model && *page->rerank_model)
        json_object_set_new(o, "model", json_string(page->rerank_model));
    return o;
}

/* Adds "rerank" to obj when the page has a rerank object. */
static void add_rerank(json_t *obj, const retrieval_result *page)
{
    json_t *x = rerank_json(page);
    if (obj && x)
        json_object_set_new(obj, "rerank", x);
    else
        json_decref(x);
}

static json_t *source_json(const infer_source *s)
{
    return json_pack("{s:i,s:I,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:f}", "number", s->number, "chunk_id",
                     (json_int_t)s->chunk_id, "doc_id", s->doc_id, "title", s->title, "uri", s->uri,
                     "headings", s->headings, "snippet", s->snippet, "start", (json_int_t)s->start, "end",
                     (json_int_t)s->end, "score", s->score);
}

static json_t *citations_json(const infer_result *res)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < res->cited_count; i++)
        json_array_append_new(a, source_json(&res->sources[res->cited[i]]));
    return a;
}

/* The citations again in Azure OpenAI's "On Your Data" shape (message.context), the same list in the
 * same order as citations_json: content is the passage as retrieved (what quarry put in the prompt,
 * cut at API_CITE_CONTENT_MAX bytes), filepath the doc id. passages are the ones the answer was
 * drafted from (res->sources[i] is passages[i]); nothing is looked up again. intent, as Azure's, is
 * a JSON list of the searches made, as a string. */
static json_t *context_json(const infer_result *res, const infer_passage *passages, const char *search_query)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < res->cited_count; i++) {
        const infer_source *s = &res->sources[res->cited[i]];
        const char *text = passages[res->cited[i]].text;
        size_t n = strlen(text);
        if (n > API_CITE_CONTENT_MAX) {
            n = API_CITE_CONTENT_MAX;
            while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
                n--;
        }
        char chunk_id[24];
        snprintf(chunk_id, sizeof(chunk_id), "%lld", (long long)s->chunk_id);
        json_array_append_new(a, json_pack("{s:s%,s:s,s:s,s:s,s:s}", "content", text, n, "title", s->title,
                                           "url", s->uri, "filepath", s->doc_id, "chunk_id", chunk_id));
    }
    json_t *q = json_pack("[s]", search_query);
    char *intent = q ? json_dumps(q, JSON_COMPACT) : NULL;
    json_decref(q);
    json_t *ctx = json_pack("{s:o,s:s?}", "citations", a, "intent", intent);
    free(intent);
    return ctx;
}

/* ---- POST /v1/search ------------------------------------------------------------------------- */

void api_h_search(api_req *r)
{
    char err[QR_ERR_LEN];
    json_t *body = api_json_body(r);
    if (!body)
        return;
    api_search_req q;
    qr_status st = api_parse_search(body, false, 10, &q, err);
    if (st) {
        api_reply_status(r, st, err);
        json_decref(body);
        return;
    }
    uint64_t t0 = qr_now_ns();
    retrieval_result *page = NULL;
    if ((st = search_for(r, &q, false, &page, err))) {
        api_reply_status(r, st, err);
        goto out;
    }
    uint64_t tj = qr_now_ns();
    json_t *results = json_array();
    const char **ids = calloc(page->nhits ? page->nhits : 1, sizeof(*ids));
    for (size_t i = 0; i < page->nhits; i++) {
        json_array_append_new(results, hit_json(&page->hits[i]));
        if (ids)
            ids[i] = page->hits[i].doc_id;
    }
    json_t *answer =
        json_pack("{s:o,s:s,s:s?,s:f}", "results", results, "mode", retrieval_mode_name(page->mode),
                  "next_cursor", page->next_cursor, "took_ms", (double)(qr_now_ns() - t0) / 1e6);
    add_rerank(answer, page);
    api_audit_record(r->srv->audit, r, q.query, ids, ids ? page->nhits : 0, "search");
    api_reply_json(r, 200, answer);
    /* the audit record is counted with the JSON answer: both are the answer's writing */
    uint64_t stages[API_SEARCH_STAGES] = {r->auth_ns,       page->embed_ns,  page->parse_ns,
                                          page->bm25_ns,    page->vector_ns, page->fusion_ns,
                                          page->hydrate_ns, page->rerank_ns, page->snippet_ns,
                                          page->permit_ns,  qr_now_ns() - tj};
    api_metrics_search_stages(r->srv->metrics, stages);
    free(ids);
    retrieval_result_free(page);
out:
    api_search_req_release(&q);
    json_decref(body);
}

/* ---- answers ------------------------------------------------------------------------------- */

/* Estimated tokens, as the inference module counts them: one per 4 ASCII bytes, one per other
 * character. The backend's own counts are not passed up; clients get an estimate. */
static int64_t estimate_tokens(const char *s)
{
    size_t ascii = 0, other = 0;
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x80)
            ascii++;
        else if ((c & 0xC0) != 0x80)
            other++;
    }
    return (int64_t)((ascii + 3) / 4 + other);
}

static void audit_answer(api_req *r, const char *question, const infer_result *res)
{
    const char **ids = calloc(res->cited_count ? res->cited_count : 1, sizeof(*ids));
    for (size_t i = 0; ids && i < res->cited_count; i++)
        ids[i] = res->sources[res->cited[i]].doc_id;
    api_audit_record(r->srv->audit, r, question, ids, ids ? res->cited_count : 0, "answer");
    free(ids);
}

void api_h_ask(api_req *r)
{
    char err[QR_ERR_LEN];
    json_t *body = api_json_body(r);
    if (!body)
        return;
    api_search_req q;
    qr_status st = api_parse_search(body, true, (size_t)r->srv->set.chat_k, &q, err);
    if (st) {
        api_reply_status(r, st, err);
        json_decref(body);
        return;
    }
    retrieval_result *page = NULL;
    infer_result res;
    infer_result_init(&res);
    infer_passage *passages = NULL;
    /* a question is prose: its quotes and dashes are not query syntax */
    if ((st = search_for(r, &q, true, &page, err))) {
        api_reply_status(r, st, err);
        goto out;
    }
    if (!(passages = api_page_passages(page))) {
        api_reply_status(r, QR_ENOMEM, "out of memory");
        goto out;
    }
    infer_request req = {.question = q.query, .passages = passages, .passage_count = page->nhits};
    uint64_t t0 = qr_now_ns();
    st = infer_answer(api_infer(r->srv), &req, &res, err);
    api_metrics_answer(r->srv->metrics, (double)(qr_now_ns() - t0) / 1e9, res.mode == INFER_MODE_EXTRACTIVE,
                       st != 0);
    if (st) {
        api_reply_status(r, st, err);
        goto out;
    }
    json_t *sources = json_array();
    for (size_t i = 0; i < res.source_count; i++)
        json_array_append_new(sources, source_json(&res.sources[i]));
    /* the detail names the backend and its errors: for administrators (and the log), not for
     * everyone who chats */
    if (res.detail && !r->principal->is_admin)
        qr_log(QR_LOG_WARN, "ask", "request %s answered without the model (%s): %s", r->request_id,
               res.reason ? res.reason : "?", res.detail);
    json_t *answer = json_pack("{s:s,s:o,s:o,s:s,s:s?,s:s?}", "answer", res.text, "citations",
                               citations_json(&res), "sources", sources, "mode", infer_mode_name(res.mode),
                               "reason", res.reason, "detail", r->principal->is_admin ? res.detail : NULL);
    add_rerank(answer, page);
    audit_answer(r, q.query, &res);
    api_reply_json(r, 200, answer);
out:
    free(passages);
    infer_result_release(&res);
    retrieval_result_free(page);
    api_search_req_release(&q);
    json_decref(body);
}

/* ---- POST /v1/chat/completions --------------------------------------------------------------- */

typedef struct {
    api_req *r;
    char id[80];
    int64_t created;
    const char *model;
    bool include_usage;
    bool failed; /* the client went away */
} chat_stream;

/* One chat.completion.chunk event; extra (may be NULL) is merged into the top-level object. */
static bool send_chunk(chat_stream *cs, json_t *delta, const char *finish, json_t *extra)
{
    json_t *chunk = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:n,s:s?}]}", "id", cs->id, "object",
                              "chat.completion.chunk", "created", (json_int_t)cs->created, "model", cs->model,
                              "choices", "index", 0, "delta", delta, "logprobs", "finish_reason", finish);
    if (!chunk) {
        json_decref(extra);
        return false;
    }
    if (cs->include_usage)
        json_object_set_new(chunk, "usage", json_null());
    if (extra)
        json_object_update(chunk, extra);
    json_decref(extra);
    char *text = json_dumps(chunk, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(chunk);
    bool ok = text && api_stream_printf(cs->r, "data: %s\n\n", text);
    free(text);
    if (!ok)
        cs->failed = true;
    return ok;
}

static int on_answer_event(const infer_event *ev, void *user)
{
    chat_stream *cs = user;
    if (cs->failed || api_req_cancelled(cs->r))
        return 1;
    if (ev->type == INFER_EVENT_DELTA && ev->len) {
        json_t *delta = json_pack("{s:s%}", "content", ev->text, ev->len);
        if (!send_chunk(cs, delta, NULL, NULL))
            return 1;
    }
    return 0;
}

static json_t *usage_json(const api_chat_req *c, const infer_result *res)
{
    int64_t prompt = estimate_tokens(c->question) + 4;
    for (size_t i = 0; i < c->nhistory; i++)
        prompt += estimate_tokens(c->history[i].content) + 4;
    int64_t completion = estimate_tokens(res->text);
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                     (json_int_t)completion, "total_tokens", (json_int_t)(prompt + completion));
}

/* Answers a refused chat request in OpenAI's terms: the field in param, OpenAI's code where one
 * fits. */
static void reply_refusal(api_req *r, qr_status st, const api_refusal *why, const char *err)
{
    api_reply_error_param(r, api_http_status(st), why->code ? why->code : qr_status_name(st), why->param,
                          "%s", err);
}

void api_h_chat(api_req *r)
{
    api_server *srv = r->srv;
    char err[QR_ERR_LEN];
    json_t *body = api_json_body(r);
    if (!body)
        return;
    api_chat_req c;
    api_refusal why;
    /* one backend client for the whole request, whatever a SIGHUP swaps in meanwhile */
    infer_client *infer = api_infer(srv);
    api_chat_limits lim = {(size_t)srv->set.chat_k, infer_client_max_tokens(infer)};
    qr_status st = api_parse_chat(body, &lim, &c, &why, err);
    if (st) {
        reply_refusal(r, st, &why, err);
        json_decref(body);
        return;
    }
    /* the reply names the model asked for; none asked for is the first served */
    const char *model = c.model ? c.model : srv->models[0];
    retrieval_result *page = NULL;
    infer_result res;
    infer_result_init(&res);
    infer_passage *passages = NULL;
    if (!api_model_served(srv, model)) {
        api_reply_error_param(r, 404, "model_not_found", "model",
                              "the model '%.128s' does not exist (GET /v1/models lists the models served)",
                              model);
        goto out;
    }
    if (c.end_user)
        snprintf(r->end_user, sizeof(r->end_user), "%s", c.end_user);
    api_search_req q = c.filters;
    q.query = c.search_query;
    q.k = c.k;
    q.mode = NULL; /* the configured default */
    chat_stream cs = {
        .r = r, .created = qr_wall_ms() / 1000, .model = model, .include_usage = c.include_usage};
    snprintf(cs.id, sizeof(cs.id), "chatcmpl-%s", r->request_id);
    if ((st = search_for(r, &q, true, &page, err))) {
        api_reply_status(r, st, err);
        goto out;
    }
    if (!(passages = api_page_passages(page))) {
        api_reply_status(r, QR_ENOMEM, "out of memory");
        goto out;
    }
    infer_request req = {.question = c.question,
                         .history = c.history,
                         .history_count = c.nhistory,
                         .passages = passages,
                         .passage_count = page->nhits,
                         .options = &c.options};
    if (c.stream) {
        if (!api_stream_begin(r, 200, "text/event-stream; charset=utf-8"))
            goto out;
        send_chunk(&cs, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL, NULL);
        req.on_event = on_answer_event;
        req.user = &cs;
    }
    uint64_t t0 = qr_now_ns();
    st = infer_answer(infer, &req, &res, err);
    api_metrics_answer(srv->metrics, (double)(qr_now_ns() - t0) / 1e9, res.mode == INFER_MODE_EXTRACTIVE,
                       st != 0);
    if (!st)
        audit_answer(r, c.question, &res);
    /* the question and quarry's prompt alone do not fit the model's window: OpenAI's word for it */
    bool too_long = st == QR_ELIMIT;
    if (c.stream) {
        if (cs.failed || api_req_cancelled(r))
            goto out; /* nobody is listening */
        if (st) {
            /* the status line went out long ago: the error travels as an event, as OpenAI's do */
            json_t *e = json_pack("{s:{s:s,s:s,s:s?}}", "error", "code",
                                  too_long ? "context_length_exceeded" : qr_status_name(st), "message", err,
                                  "param", too_long ? "messages" : NULL);
            char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
            if (text)
                api_stream_printf(r, "data: %s\n\n", text);
            free(text);
            json_decref(e);
        } else {
            /* the citations are known once the answer is: they come with its last chunk, on top
             * (quarry's shape) and as delta.context (Azure OpenAI's) */
            json_t *extra = json_pack("{s:o,s:{s:s,s:s?}}", "citations", citations_json(&res), "quarry",
                                      "mode", infer_mode_name(res.mode), "reason", res.reason);
            add_rerank(json_object_get(extra, "quarry"), page);
            send_chunk(&cs, json_pack("{s:o}", "context", context_json(&res, passages, c.search_query)),
                       res.finish_reason ? res.finish_reason : "stop", extra);
            if (c.include_usage) {
                json_t *u = json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", cs.id, "object",
                                      "chat.completion.chunk", "created", (json_int_t)cs.created, "model",
                                      cs.model, "choices", "usage", usage_json(&c, &res));
                char *text = u ? json_dumps(u, JSON_COMPACT) : NULL;
                if (text)
                    api_stream_printf(r, "data: %s\n\n", text);
                free(text);
                json_decref(u);
            }
        }
        api_stream_write(r, "data: [DONE]\n\n", 14);
        goto out;
    }
    if (too_long) {
        api_reply_error_param(r, 400, "context_length_exceeded", "messages", "%s", err);
        goto out;
    }
    if (st) {
        api_reply_status(r, st, err);
        goto out;
    }
    json_t *answer =
        json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:{s:s,s:s,s:o},s:n,s:s}],s:o,s:o,s:{s:s,s:s?}}", "id", cs.id,
                  "object", "chat.completion", "created", (json_int_t)cs.created, "model", model, "choices",
                  "index", 0, "message", "role", "assistant", "content", res.text, "context",
                  context_json(&res, passages, c.search_query), "logprobs", "finish_reason",
                  res.finish_reason ? res.finish_reason : "stop", "usage", usage_json(&c, &res), "citations",
                  citations_json(&res), "quarry", "mode", infer_mode_name(res.mode), "reason", res.reason);
    add_rerank(json_object_get(answer, "quarry"), page);
    api_reply_json(r, 200, answer);
out:
    free(passages);
    infer_result_release(&res);
    retrieval_result_free(page);
    api_chat_req_release(&c);
    json_decref(body);
}
