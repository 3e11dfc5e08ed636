/*
 * The routes that read the knowledge base for a caller: POST /v1/search (passages), POST /v1/ask
 * (an answer with citations) and POST /v1/chat/completions (the same answer in OpenAI's shape,
 * as one JSON object or as server-sent chat.completion.chunk events ending with [DONE]).
 *
 * Permission trimming happens twice. Retrieval searches only the chunks the caller's principals
 * permit; then, before anything is returned, cited or sent to the inference backend, every hit
 * is read again from the store through the same permission filter (store_read_chunks), so a hit
 * whose document was deleted or whose ACL changed since the search -- or a retrieval bug -- is
 * dropped rather than shown. Only passages that passed that second check reach the drafter.
 *
 * The audit log gets one line per request: a hash of the query and the doc ids returned (search)
 * or cited (answers).
 */
#define _GNU_SOURCE /* asprintf, memmem, strptime, timegm, explicit_bzero */
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "retrieval/retrieval.h"

#define SNIPPET_OPEN  "<mark>"
#define SNIPPET_CLOSE "</mark>"

/* A hit after the second permission check, with everything the answer needs. Owned strings. */
typedef struct {
    int64_t chunk_id;
    double score;
    char *doc_id, *title, *uri, *headings, *snippet, *text;
    size_t start, end;             /* the snippet's byte offsets in the document's text */
    size_t chunk_start, chunk_end; /* the whole chunk's */
} api_hit;

typedef struct {
    api_hit *hits;
    size_t n;
    char *next_cursor; /* the next page's, NULL after the last */
    const char *mode;  /* the mode that ran */
} api_hits;

static void hits_release(api_hits *h)
{
    for (size_t i = 0; i < h->n; i++) {
        api_hit *x = &h->hits[i];
        free(x->doc_id);
        free(x->title);
        free(x->uri);
        free(x->headings);
        free(x->snippet);
        free(x->text);
    }
    free(h->hits);
    free(h->next_cursor);
    memset(h, 0, sizeof(*h));
}

/* A hit as retrieval hands it over, before the second check. */
typedef struct {
    int64_t chunk_id;
    double score;
    char *snippet;
    size_t start, end; /* the snippet's offsets */
} candidate;

/* ---- the seam with retrieval --------------------------------------------------------------- */

/* Embeds the query for vector and hybrid searches. NULL when it cannot: hybrid then runs BM25
 * alone (retrieval says so in the mode it reports), vector mode fails. */
static float *embed_query(api_server *srv, const char *text, int *dim)
{
    *dim = ingest_embedder_dim(srv->embedder);
    float *vec = malloc((size_t)*dim * sizeof(float));
    if (!vec)
        return NULL;
    char err[QR_ERR_LEN];
    pthread_mutex_lock(&srv->embed_lock);
    qr_status st = ingest_embed(srv->embedder, &text, NULL, 1, vec, err);
    pthread_mutex_unlock(&srv->embed_lock);
    if (st) {
        qr_log(QR_LOG_WARN, "api", "cannot embed a query (searching without vectors): %s", err);
        free(vec);
        return NULL;
    }
    return vec;
}

/* Runs the search for the caller and fills cands (best first) with up to q->k hits of the page
 * q->cursor names; *next_cursor (free() it) is the next page's, NULL after the last. The only
 * function that knows retrieval's API. */
static qr_status run_retrieval(api_req *r, api_slot *slot, const api_search_req *q, candidate **cands,
                               size_t *n, char **next_cursor, const char **mode_ran, char *err)
{
    *cands = NULL;
    *n = 0;
    *next_cursor = NULL;
    retrieval_mode mode;
    qr_status st = retrieval_mode_parse(q->mode, &mode, err);
    if (st)
        return st;
    int dim = 0;
    float *vec = mode == RETRIEVAL_BM25 ? NULL : embed_query(r->srv, q->query, &dim);
    if (mode == RETRIEVAL_VECTOR && !vec)
        return qr_fail(err, QR_EUNAVAILABLE, "vector search needs the query's embedding, which failed");
    const auth_principal *p = r->principal;
    retrieval_caller caller = {(const char *const *)p->principals, p->nprincipals, p->is_admin};
    retrieval_request req = {
        .query = q->query,
        .vector = vec,
        .dim = dim,
        .mode = mode,
        .k = q->k,
        .doc_ids = q->doc_ids,
        .ndoc_ids = q->ndoc_ids,
        .source_prefix = q->uri_prefix,
        .content_type = q->content_type,
        .updated_after_ms = q->updated_after_ms,
        .max_per_doc = q->max_per_doc,
        .cursor = q->cursor,
    };
    retrieval_result *res = NULL;
    st = retrieval_search(slot->retrieval, &caller, &req, &res, err);
    free(vec);
    if (st)
        return st;
    *mode_ran = retrieval_mode_name(res->mode);
    if (res->mode != RETRIEVAL_VECTOR)
        api_metrics_bm25(r->srv->metrics, res->bm25_pruned);
    if (res->nhits && !(*cands = calloc(res->nhits, sizeof(**cands)))) {
        retrieval_result_free(res);
        return qr_fail(err, QR_ENOMEM, "out of memory reading search results");
    }
    for (size_t i = 0; i < res->nhits; i++) {
        const retrieval_hit *h = &res->hits[i];
        candidate *c = &(*cands)[(*n)++];
        c->chunk_id = h->chunk_id;
        c->score = h->score;
        c->start = h->start;
        c->end = h->end;
        if (!(c->snippet = strdup(h->snippet ? h->snippet : "")))
            st = qr_fail(err, QR_ENOMEM, "out of memory reading search results");
    }
    if (!st && res->next_cursor && !(*next_cursor = strdup(res->next_cursor)))
        st = qr_fail(err, QR_ENOMEM, "out of memory reading search results");
    retrieval_result_free(res);
    return st;
}

/* ---- the second permission check ----------------------------------------------------------- */

typedef struct {
    const candidate *cands;
    size_t ncands;
    api_hit *hits; /* indexed like cands; doc_id NULL = not (or no longer) permitted */
} hydrate_ctx;

static char *dup_n(const char *s, size_t n)
{
    return strndup(s ? s : "", s ? n : 0);
}

/* A one-line excerpt of up to ~240 bytes, cut at a character boundary. */
static char *make_snippet(const char *text, size_t len)
{
    size_t n = len < 240 ? len : 240;
    while (n < len && n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
        n--;
    char *s = malloc(n + 4);
    if (!s)
        return NULL;
    memcpy(s, text, n);
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\n' || s[i] == '\t')
            s[i] = ' ';
    if (n < len)
        memcpy(s + n, "…", 4);
    else
        s[n] = '\0';
    return s;
}

static qr_status hydrate_one(void *ctx, const store_chunk_view *c, char *err)
{
    hydrate_ctx *h = ctx;
    for (size_t i = 0; i < h->ncands; i++) {
        if (h->cands[i].chunk_id != c->chunk_id || h->hits[i].doc_id)
            continue;
        api_hit *x = &h->hits[i];
        x->chunk_id = c->chunk_id;
        x->score = h->cands[i].score;
        x->chunk_start = c->start;
        x->chunk_end = c->end;
        x->start = h->cands[i].snippet ? h->cands[i].start : c->start;
        x->end = h->cands[i].snippet ? h->cands[i].end : c->end;
        x->doc_id = strdup(c->doc_id);
        x->title = strdup(c->title);
        x->uri = strdup(c->uri);
        x->headings = strdup(c->headings);
        x->text = dup_n(c->text, c->text_len);
        x->snippet = h->cands[i].snippet ? strdup(h->cands[i].snippet) : make_snippet(c->text, c->text_len);
        if (!x->doc_id || !x->title || !x->uri || !x->headings || !x->text || !x->snippet)
            return qr_fail(err, QR_ENOMEM, "out of memory reading search results");
    }
    return QR_OK;
}

/* The caller's permission filter plus the request's metadata filters. */
static void make_filter(const api_req *r, const api_search_req *q, store_filter *f)
{
    const auth_principal *p = r->principal;
    memset(f, 0, sizeof(*f));
    f->principals = (const char *const *)p->principals;
    f->nprincipals = p->nprincipals;
    f->all_documents = p->is_admin;
    f->doc_ids = q->doc_ids;
    f->ndoc_ids = q->ndoc_ids;
    f->uri_prefix = q->uri_prefix;
    f->content_type = q->content_type;
    f->updated_after_ms = q->updated_after_ms;
}

/* Searches, then keeps the hits the caller may still read, in rank order. */
static qr_status search_for(api_req *r, const api_search_req *q, api_hits *out, char *err)
{
    memset(out, 0, sizeof(*out));
    candidate *cands = NULL;
    size_t n = 0;
    const char *mode = q->mode;
    api_slot *slot = api_slot_acquire(r->srv);
    qr_status st = run_retrieval(r, slot, q, &cands, &n, &out->next_cursor, &mode, err);
    hydrate_ctx h = {cands, n, NULL};
    int64_t *ids = NULL;
    if (st || n == 0)
        goto out;
    h.hits = calloc(n, sizeof(*h.hits));
    ids = malloc(n * sizeof(*ids));
    if (!h.hits || !ids) {
        st = qr_fail(err, QR_ENOMEM, "out of memory reading search results");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = cands[i].chunk_id;
    store_filter f;
    make_filter(r, q, &f);
    if ((st = store_read_chunks(slot->store, ids, n, &f, hydrate_one, &h, err)))
        goto out;
    out->hits = calloc(n, sizeof(*out->hits));
    if (!out->hits) {
        st = qr_fail(err, QR_ENOMEM, "out of memory reading search results");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (h.hits[i].doc_id) {
            out->hits[out->n++] = h.hits[i];
            memset(&h.hits[i], 0, sizeof(h.hits[i]));
        } else {
            qr_log(QR_LOG_WARN, "api", "chunk %lld dropped by the second permission check (request %s)",
                   (long long)cands[i].chunk_id, r->request_id);
        }
    }
out:
    api_slot_release(r->srv, slot);
    if (h.hits) {
        api_hits tmp = {h.hits, n, NULL, NULL};
        hits_release(&tmp);
    }
    for (size_t i = 0; i < n; i++)
        free(cands[i].snippet);
    free(cands);
    free(ids);
    if (st)
        hits_release(out);
    else
        out->mode = mode;
    return st;
}

/* ---- JSON of results ------------------------------------------------------------------------ */

static json_t *hit_json(const api_hit *x)
{
    return json_pack("{s:I,s:s,s:s,s:s,s:s,s:f,s:s,s:I,s:I}", "chunk_id", (json_int_t)x->chunk_id, "doc_id",
                     x->doc_id, "title", x->title, "uri", x->uri, "headings", x->headings, "score", x->score,
                     "snippet", x->snippet, "start", (json_int_t)x->start, "end", (json_int_t)x->end);
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
    api_hits hits;
    if ((st = search_for(r, &q, &hits, err))) {
        api_reply_status(r, st, err);
        goto out;
    }
    json_t *results = json_array();
    const char **ids = calloc(hits.n ? hits.n : 1, sizeof(*ids));
    for (size_t i = 0; i < hits.n; i++) {
        json_array_append_new(results, hit_json(&hits.hits[i]));
        if (ids)
            ids[i] = hits.hits[i].doc_id;
    }
    json_t *answer = json_pack("{s:o,s:s,s:s?,s:f}", "results", results, "mode", hits.mode, "next_cursor",
                               hits.next_cursor, "took_ms", (double)(qr_now_ns() - t0) / 1e6);
    api_audit_record(r->srv->audit, r, q.query, ids, ids ? hits.n : 0, "search");
    api_reply_json(r, 200, answer);
    free(ids);
    hits_release(&hits);
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

/* Passages for the drafter: borrowed from the hits. */
static infer_passage *passages_of(const api_hits *h)
{
    infer_passage *p = calloc(h->n ? h->n : 1, sizeof(*p));
    for (size_t i = 0; p && i < h->n; i++) {
        const api_hit *x = &h->hits[i];
        p[i] = (infer_passage){.chunk_id = x->chunk_id,
                               .doc_id = x->doc_id,
                               .title = x->title,
                               .uri = x->uri,
                               .headings = x->headings,
                               .text = x->text,
                               .snippet = x->snippet,
                               .start = x->chunk_start,
                               .end = x->chunk_end,
                               .score = x->score};
    }
    return p;
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
    api_hits hits = {0};
    infer_result res;
    infer_result_init(&res);
    infer_passage *passages = NULL;
    if ((st = search_for(r, &q, &hits, err))) {
        api_reply_status(r, st, err);
        goto out;
    }
    if (!(passages = passages_of(&hits))) {
        api_reply_status(r, QR_ENOMEM, "out of memory");
        goto out;
    }
    infer_request req = {.question = q.query, .passages = passages, .passage_count = hits.n};
    uint64_t t0 = qr_now_ns();
    st = infer_answer(r->srv->infer, &req, &res, err);
    api_metrics_answer(r->srv->metrics, (double)(qr_now_ns() - t0) / 1e9, res.mode == INFER_MODE_EXTRACTIVE,
                       st != 0);
    if (st) {
        api_reply_status(r, st, err);
        goto out;
    }
    json_t *sources = json_array();
    for (size_t i = 0; i < res.source_count; i++)
        json_array_append_new(sources, source_json(&res.sources[i]));
    json_t *answer = json_pack("{s:s,s:o,s:o,s:s,s:s?,s:s?}", "answer", res.text, "citations",
                               citations_json(&res), "sources", sources, "mode", infer_mode_name(res.mode),
                               "reason", res.reason, "detail", res.detail);
    audit_answer(r, q.query, &res);
    api_reply_json(r, 200, answer);
out:
    free(passages);
    infer_result_release(&res);
    hits_release(&hits);
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

void api_h_chat(api_req *r)
{
    api_server *srv = r->srv;
    char err[QR_ERR_LEN];
    json_t *body = api_json_body(r);
    if (!body)
        return;
    api_chat_req c;
    qr_status st = api_parse_chat(body, (size_t)srv->set.chat_k, &c, err);
    if (st) {
        api_reply_status(r, st, err);
        json_decref(body);
        return;
    }
    api_search_req q = {.query = c.search_query, .k = c.k, .mode = "hybrid"};
    api_hits hits = {0};
    infer_result res;
    infer_result_init(&res);
    infer_passage *passages = NULL;
    chat_stream cs = {
        .r = r, .created = qr_wall_ms() / 1000, .model = srv->model, .include_usage = c.include_usage};
    snprintf(cs.id, sizeof(cs.id), "chatcmpl-%s", r->request_id);
    if ((st = search_for(r, &q, &hits, err))) {
        api_reply_status(r, st, err);
        goto out;
    }
    if (!(passages = passages_of(&hits))) {
        api_reply_status(r, QR_ENOMEM, "out of memory");
        goto out;
    }
    infer_request req = {.question = c.question,
                         .history = c.history,
                         .history_count = c.nhistory,
                         .passages = passages,
                         .passage_count = hits.n};
    if (c.stream) {
        if (!api_stream_begin(r, 200, "text/event-stream; charset=utf-8"))
            goto out;
        send_chunk(&cs, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL, NULL);
        req.on_event = on_answer_event;
        req.user = &cs;
    }
    uint64_t t0 = qr_now_ns();
    st = infer_answer(srv->infer, &req, &res, err);
    api_metrics_answer(srv->metrics, (double)(qr_now_ns() - t0) / 1e9, res.mode == INFER_MODE_EXTRACTIVE,
                       st != 0);
    if (!st)
        audit_answer(r, c.question, &res);
    if (c.stream) {
        if (cs.failed || api_req_cancelled(r))
            goto out; /* nobody is listening */
        if (st) {
            /* the status line went out long ago: the error travels as an event, as OpenAI's do */
            json_t *e = json_pack("{s:{s:s,s:s}}", "error", "code", qr_status_name(st), "message", err);
            char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
            if (text)
                api_stream_printf(r, "data: %s\n\n", text);
            free(text);
            json_decref(e);
        } else {
            json_t *extra = json_pack("{s:o,s:{s:s,s:s?}}", "citations", citations_json(&res), "quarry",
                                      "mode", infer_mode_name(res.mode), "reason", res.reason);
            send_chunk(&cs, json_object(), res.finish_reason ? res.finish_reason : "stop", extra);
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
    if (st) {
        api_reply_status(r, st, err);
        goto out;
    }
    json_t *answer = json_pack(
        "{s:s,s:s,s:I,s:s,s:[{s:i,s:{s:s,s:s},s:n,s:s}],s:o,s:o,s:{s:s,s:s?}}", "id", cs.id, "object",
        "chat.completion", "created", (json_int_t)cs.created, "model", srv->model, "choices", "index", 0,
        "message", "role", "assistant", "content", res.text, "logprobs", "finish_reason",
        res.finish_reason ? res.finish_reason : "stop", "usage", usage_json(&c, &res), "citations",
        citations_json(&res), "quarry", "mode", infer_mode_name(res.mode), "reason", res.reason);
    api_reply_json(r, 200, answer);
out:
    free(passages);
    infer_result_release(&res);
    hits_release(&hits);
    api_chat_req_release(&c);
    json_decref(body);
}
