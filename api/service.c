/*
 * The search service: the one composition of store handles, indexes, query embedder and
 * retrieval handles that both `quarry serve` and the one-shot commands (`quarry search`, `ask`,
 * `eval`) search through, so that a search as a given caller gives the same page whichever door
 * it came in by. In the server the indexes are the maintainer's (index.h), published in the
 * background; in a one-shot command they are opened and caught up before the first search.
 *
 * Every page is checked twice: retrieval searches and reads only the chunks the caller's
 * principals and filters permit, and before a page leaves here each hit is tested again against
 * the store's current ACLs and tombstones (one indexed lookup per hit, store_permit_test), so a
 * hit whose document was deleted or whose ACL changed meanwhile -- or a retrieval bug -- is
 * dropped rather than shown, cited or sent to the inference backend. The chunks' text is read
 * once, by retrieval, and handed on with the page.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/api_int.h"
#include "ingest/ingest.h"

struct api_service_handle {
    store *store;
    retrieval *retrieval;
    bool busy;
};

struct api_service {
    retrieval_opts ropts;
    bool background;
    /* the indexes: the maintainer's (background) or opened here (one-shot) */
    index_maintainer *maint;
    vindex *v;
    bm25_index *b;
    /* query vectors: one caller at a time; NULL when the store holds no vectors (one-shot) */
    ingest_embedder *embedder;
    pthread_mutex_t embed_lock;
    /* the rerank stage's service (rerank.*); NULL when rerank.backend is none */
    infer_reranker *reranker;
    /* handles: one thread each */
    api_service_handle *handles;
    size_t nhandles;
    pthread_mutex_t lock;
    pthread_cond_t freed;
};

void api_service_opts_default(api_service_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->handles = 1;
    o->mode = RETRIEVAL_MODE_DEFAULT;
    o->who = "quarry";
}

/* The query must be embedded the way the chunks were: the same model, dimension and prefixes
 * (the recorded identity covers all three). A store without vectors yet takes any embedder. */
static qr_status check_embedder(const ingest_embedder *e, const store_stats *ss, char *err)
{
    if (ss->embedding_dim <= 0 || (strcmp(ingest_embedder_model(e), ss->embedding_model) == 0 &&
                                   ingest_embedder_dim(e) == ss->embedding_dim))
        return QR_OK;
    return qr_fail(err, QR_EINVAL,
                   "the store was embedded as '%s' (dimension %d) but the configured embedder is '%s' "
                   "(dimension %d): configure the same embed.* settings as for ingest (model, dim, "
                   "query_prefix and document_prefix; the part after +prefixes: is a hash of the two "
                   "prefixes), or ingest into a new data directory",
                   ss->embedding_model, ss->embedding_dim, ingest_embedder_model(e), ingest_embedder_dim(e));
}

/* One-shot: the indexes the mode needs, opened and caught up now. A vector index another process
 * holds (a running server) or a store without vectors leaves hybrid searches to BM25, with a
 * note on stderr; vector mode then fails. */
static qr_status open_inline(api_service *svc, const qr_config *cfg, const api_service_opts *o, store *s,
                             char *err)
{
    const char *dir = qr_config_settings(cfg)->data_dir;
    retrieval_mode mode = o->mode == RETRIEVAL_MODE_DEFAULT ? svc->ropts.mode : o->mode;
    store_stats ss;
    qr_status st = store_get_heads(s, &ss, err);
    if (st)
        return st;
    char e2[QR_ERR_LEN];
    if (svc->ropts.bm25_pruned && mode != RETRIEVAL_VECTOR) {
        /* before the vector index, whose rebuild prunes tombstones; without it FTS5 ranks, with
         * the same results */
        bm25_opts bo;
        bm25_report br;
        bm25_opts_from_config(cfg, &bo);
        if (bm25_open(s, dir, &bo, false, &svc->b, &br, e2))
            fprintf(stderr, "%s: %s; FTS5 ranks BM25 instead\n", o->who, e2);
        else if (br.rebuilt)
            fprintf(stderr, "%s: built the BM25 index (%.1f s)\n", o->who, br.seconds);
    }
    if (mode != RETRIEVAL_BM25 && ss.embedding_dim > 0) {
        if ((st = ingest_embedder_open(cfg, &svc->embedder, err)))
            return st;
        if ((st = check_embedder(svc->embedder, &ss, err)))
            return st;
        vindex_opts vo;
        vindex_opts_from_config(cfg, &vo);
        index_sync_report rep;
        st = index_sync_open(s, dir, &vo, false, &svc->v, &rep, e2);
        if (st == QR_EPERM && mode == RETRIEVAL_HYBRID)
            fprintf(stderr, "%s: %s; searching with BM25 only\n", o->who, e2);
        else if (st)
            return qr_fail(err, st, "%s", e2);
        else if (rep.rebuilt)
            fprintf(stderr, "%s: built vector index generation %llu (%s, %zu vectors)\n", o->who,
                    (unsigned long long)rep.generation, rep.type, rep.count);
    }
    if (mode == RETRIEVAL_VECTOR && !svc->v)
        return qr_fail(err, QR_EUNAVAILABLE,
                       "vector search needs vectors: the store holds none yet (ingest first)");
    return QR_OK;
}

/* retrieval's rerank hook, wired to inference's reranking client (retrieval does not know it). */
static qr_status service_rerank(void *ctx, const char *query, const char *const *texts, const size_t *lens,
                                size_t n, double *scores, const char **reason, char *err)
{
    infer_rerank_failure why = INFER_RERANK_OK;
    qr_status st = infer_rerank(ctx, query, texts, lens, n, scores, &why, err);
    *reason = st ? infer_rerank_failure_name(why) : NULL;
    return st;
}

qr_status api_service_open(const qr_config *cfg, const api_service_opts *o, api_service **out, char *err)
{
    if (!out)
        return qr_fail(err, QR_EINVAL, "api_service_open: NULL argument");
    *out = NULL;
    api_service_opts defaults;
    if (!o) {
        api_service_opts_default(&defaults);
        o = &defaults;
    }
    if (!cfg || o->handles < 1)
        return qr_fail(err, QR_EINVAL, "the search service needs a configuration and at least one handle");
    api_service *svc = calloc(1, sizeof(*svc));
    if (!svc)
        return qr_fail(err, QR_ENOMEM, "out of memory opening the search service");
    pthread_mutex_init(&svc->embed_lock, NULL);
    pthread_mutex_init(&svc->lock, NULL);
    pthread_cond_init(&svc->freed, NULL);
    svc->background = o->background;
    if (o->retrieval)
        svc->ropts = *o->retrieval;
    else
        retrieval_opts_from_config(cfg, &svc->ropts);
    const char *dir = qr_config_settings(cfg)->data_dir;
    qr_status st = QR_OK;
    if (!(svc->handles = calloc(o->handles, sizeof(*svc->handles)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory opening the search service");
        goto out;
    }
    for (; svc->nhandles < o->handles; svc->nhandles++)
        if ((st = store_open(dir, &svc->handles[svc->nhandles].store, err)))
            goto out;
    /* a one-shot command on a node that follows PostgreSQL (store.backend = postgres) opens its
     * indexes on a store brought up to the primary first; a server's follower thread does that in
     * the background instead, and /readyz says when it has */
    if (!o->background && (st = store_fence(svc->handles[0].store, err)))
        goto out;
    if (o->background) {
        store_stats ss;
        if ((st = ingest_embedder_open(cfg, &svc->embedder, err)) ||
            (st = store_get_heads(svc->handles[0].store, &ss, err)) ||
            (st = check_embedder(svc->embedder, &ss, err)))
            goto out;
        index_maintainer_opts mo = {.data_dir = dir,
                                    .bm25 = svc->ropts.bm25_pruned,
                                    .refresh_ms = (uint64_t)qr_config_settings(cfg)->index_refresh_ms,
                                    .nice = (int)qr_config_settings(cfg)->index_maintainer_nice,
                                    .poll_ms = (uint64_t)qr_config_settings(cfg)->store_poll_ms};
        vindex_opts_from_config(cfg, &mo.vopts);
        bm25_opts_from_config(cfg, &mo.bopts);
        if ((st = index_maintainer_start(&mo, &svc->maint, err)))
            goto out;
    } else if ((st = open_inline(svc, cfg, o, svc->handles[0].store, err))) {
        goto out;
    }
    if ((st = infer_reranker_new(cfg, &svc->reranker, err)))
        goto out;
    retrieval_reranker rr = {.fn = svc->reranker ? service_rerank : NULL,
                             .ctx = svc->reranker,
                             .candidates = infer_reranker_candidates(svc->reranker),
                             .model = infer_reranker_model(svc->reranker)};
    for (size_t i = 0; i < svc->nhandles; i++) {
        if ((st =
                 retrieval_open(svc->handles[i].store, svc->v, &svc->ropts, &svc->handles[i].retrieval, err)))
            goto out;
        retrieval_set_bm25(svc->handles[i].retrieval, svc->b);
        retrieval_set_reranker(svc->handles[i].retrieval, &rr);
    }
out:
    if (st) {
        api_service_close(svc);
        return st;
    }
    *out = svc;
    return QR_OK;
}

void api_service_close(api_service *svc)
{
    if (!svc)
        return;
    for (size_t i = 0; i < svc->nhandles; i++)
        retrieval_close(svc->handles[i].retrieval);
    index_maintainer_stop(svc->maint);
    vindex_close(svc->v);
    bm25_close(svc->b);
    for (size_t i = 0; i < svc->nhandles; i++)
        store_close(svc->handles[i].store);
    free(svc->handles);
    ingest_embedder_free(svc->embedder);
    infer_reranker_free(svc->reranker);
    pthread_cond_destroy(&svc->freed);
    pthread_mutex_destroy(&svc->lock);
    pthread_mutex_destroy(&svc->embed_lock);
    free(svc);
}

api_service_handle *api_service_acquire(api_service *svc)
{
    pthread_mutex_lock(&svc->lock);
    for (;;) {
        for (size_t i = 0; i < svc->nhandles; i++) {
            api_service_handle *h = &svc->handles[i];
            if (!h->busy) {
                h->busy = true;
                pthread_mutex_unlock(&svc->lock);
                if (svc->maint) {
                    /* whatever the maintainer has published by now (two atomic loads) */
                    retrieval_set_vindex(h->retrieval, index_maintainer_vindex(svc->maint));
                    retrieval_set_bm25(h->retrieval,
                                       svc->ropts.bm25_pruned ? index_maintainer_bm25(svc->maint) : NULL);
                }
                return h;
            }
        }
        pthread_cond_wait(&svc->freed, &svc->lock);
    }
}

void api_service_release(api_service *svc, api_service_handle *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&svc->lock);
    h->busy = false;
    pthread_cond_signal(&svc->freed);
    pthread_mutex_unlock(&svc->lock);
}

void api_service_release_store(api_service *svc, store *s)
{
    for (size_t i = 0; s && i < svc->nhandles; i++)
        if (svc->handles[i].store == s)
            api_service_release(svc, &svc->handles[i]);
}

store *api_service_handle_store(api_service_handle *h)
{
    return h->store;
}

retrieval *api_service_handle_retrieval(api_service_handle *h)
{
    return h->retrieval;
}

index_maintainer *api_service_maintainer(api_service *svc)
{
    return svc ? svc->maint : NULL;
}

infer_reranker *api_service_reranker(api_service *svc)
{
    return svc ? svc->reranker : NULL;
}

const retrieval_opts *api_service_retrieval_opts(const api_service *svc)
{
    return &svc->ropts;
}

json_t *api_search_default(const retrieval_opts *o)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:f,s:f}", "mode", retrieval_mode_name(o->mode), "source",
                     o->mode_auto ? "auto" : "config", "reason", o->default_reason, "fusion",
                     retrieval_fusion_name(o->fusion), "fusion_source", o->fusion_auto ? "auto" : "config",
                     "vector_weight", o->vector_weight, "rrf_k", o->rrf_k);
}

qr_status api_search_default_json(const retrieval_opts *o, qr_buf *out)
{
    json_t *j = api_search_default(o);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!text)
        return QR_ENOMEM;
    qr_status st = qr_buf_append(out, text, strlen(text));
    free(text);
    return st;
}

int api_service_embedding_dim(api_service *svc)
{
    return svc->embedder ? ingest_embedder_dim(svc->embedder) : 0;
}

qr_status api_service_embed(api_service *svc, const char *text, float **vec, int *dim, char *err)
{
    *vec = NULL;
    *dim = 0;
    if (!svc->embedder)
        return qr_fail(err, QR_EUNAVAILABLE, "no query embedder: the store holds no vectors");
    int d = ingest_embedder_dim(svc->embedder);
    float *v = malloc((size_t)d * sizeof(float));
    if (!v)
        return qr_fail(err, QR_ENOMEM, "out of memory embedding the query");
    pthread_mutex_lock(&svc->embed_lock);
    qr_status st = ingest_embed_query(svc->embedder, text, v, err);
    pthread_mutex_unlock(&svc->embed_lock);
    if (st) {
        free(v);
        return st;
    }
    *vec = v;
    *dim = d;
    return QR_OK;
}

static bool still_readable(void *ctx, const retrieval_hit *h)
{
    return store_permit_test(ctx, h->chunk_id);
}

qr_status api_service_search(api_service *svc, const retrieval_caller *caller, const retrieval_request *req,
                             retrieval_result **out, char *err)
{
    *out = NULL;
    if (!svc || !caller || !req)
        return qr_fail(err, QR_EINVAL, "api_service_search: NULL argument");
    retrieval_request q = *req;
    retrieval_mode mode = q.mode == RETRIEVAL_MODE_DEFAULT ? svc->ropts.mode : q.mode;
    float *vec = NULL;
    /* a request that spent its time waiting for a worker, or whose client left, is not embedded */
    char why[QR_ERR_LEN];
    qr_status st = qr_cancel_check(q.cancel, why);
    if (st)
        return qr_fail(err, st, "search stopped: %s%s", why,
                       st == QR_ETIMEOUT ? " (retrieval.timeout_ms)" : "");
    bool have_index = svc->maint ? index_maintainer_vindex(svc->maint) != NULL : svc->v != NULL;
    uint64_t te = qr_now_ns();
    if (!q.vector && mode != RETRIEVAL_BM25 && (have_index || mode == RETRIEVAL_VECTOR)) {
        /* without the query's vector hybrid runs BM25 alone (and says so); vector mode fails */
        char e2[QR_ERR_LEN];
        int dim = 0;
        if (api_service_embed(svc, q.query ? q.query : "", &vec, &dim, e2) == QR_OK) {
            q.vector = vec;
            q.dim = dim;
        } else if (mode == RETRIEVAL_VECTOR) {
            return qr_fail(err, QR_EUNAVAILABLE, "vector search needs the query's embedding: %s", e2);
        } else if (svc->embedder) {
            qr_log(QR_LOG_WARN, "search", "cannot embed a query (searching without vectors): %s", e2);
        }
    }
    uint64_t embed_ns = qr_now_ns() - te;
    api_service_handle *h = api_service_acquire(svc);
    retrieval_result *res = NULL;
    st = retrieval_search(h->retrieval, caller, &q, &res, err);
    free(vec);
    if (!st)
        res->embed_ns = embed_ns;
    if (!st && res->nhits) {
        /* the second check: the store's permissions as they are now, one lookup per hit */
        store_filter f = {.principals = caller->principals,
                          .nprincipals = caller->nprincipals,
                          .all_documents = caller->is_admin,
                          .doc_ids = q.doc_ids,
                          .ndoc_ids = q.ndoc_ids,
                          .uri_prefix = q.source_prefix,
                          .content_type = q.content_type,
                          .updated_after_ms = q.updated_after_ms};
        store_permit *p = NULL;
        uint64_t t0 = qr_now_ns();
        if (!(st = store_permit_open(h->store, &f, &p, err))) {
            size_t dropped = retrieval_result_filter(res, still_readable, p);
            st = store_permit_close(p, err);
            res->permit_ns = qr_now_ns() - t0;
            if (dropped)
                qr_log(QR_LOG_WARN, "search", "%zu hits dropped by the second permission check", dropped);
        }
    }
    api_service_release(svc, h);
    if (st) {
        retrieval_result_free(res);
        return st;
    }
    *out = res;
    return QR_OK;
}

infer_passage *api_page_passages(const retrieval_result *res)
{
    infer_passage *p = calloc(res && res->nhits ? res->nhits : 1, sizeof(*p));
    for (size_t i = 0; p && res && i < res->nhits; i++) {
        const retrieval_hit *x = &res->hits[i];
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

qr_status api_service_passages(api_service *svc, const retrieval_caller *caller, const char *question,
                               size_t k, retrieval_result **page, infer_passage **out, char *err)
{
    *page = NULL;
    *out = NULL;
    retrieval_request req = {.query = question, .plain = true, .k = k}; /* a question is prose */
    retrieval_result *res = NULL;
    qr_status st = api_service_search(svc, caller, &req, &res, err);
    if (st)
        return st;
    if (!(*out = api_page_passages(res))) {
        retrieval_result_free(res);
        return qr_fail(err, QR_ENOMEM, "out of memory reading passages");
    }
    *page = res;
    return QR_OK;
}
