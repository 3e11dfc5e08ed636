/*
 * The ingestion pipeline: one source document in, one store transaction out. It decides whether
 * the document changed (content hash over the source bytes and the settings that shape chunks),
 * and only then extracts, normalises, chunks and embeds it and hands everything to the store in
 * one write, so that a document is wholly present or wholly absent. ACL, title and metadata
 * changes of unchanged content go to the store without extraction or embedding. The work before
 * the store can run apart (ingest_prepare, on the pool's threads: pool.c) from the write
 * (ingest_put_prepared); ingest_put is the two in a row, with the same checks and errors. Raw
 * input (a JSON line) can be parsed there too, by its reader's parser, so that the writing thread
 * only writes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest.h"

struct ingest_session {
    store *store;
    ingest_embedder *embedder;
    ingest_limits limits;
    ingest_chunk_opts chunk_opts;
    size_t batch_docs; /* documents in the open batch; 0 without one */
};

qr_status ingest_session_open(const qr_config *cfg, ingest_session **out, char *err)
{
    *out = NULL;
    ingest_session *s = calloc(1, sizeof(*s));
    if (!s)
        return qr_fail(err, QR_ENOMEM, "out of memory opening the ingestion session");
    ingest_limits_from_config(cfg, &s->limits);
    ingest_chunk_opts_from_config(cfg, &s->chunk_opts);
    qr_status st = ingest_embedder_open(cfg, &s->embedder, err);
    if (!st)
        st = store_open(qr_config_settings(cfg)->data_dir, &s->store, err);
    if (!st)
        st = store_check_embedding(s->store, ingest_embedder_model(s->embedder),
                                   ingest_embedder_dim(s->embedder), err);
    if (st) {
        ingest_session_close(s);
        return st;
    }
    *out = s;
    return QR_OK;
}

void ingest_session_close(ingest_session *s)
{
    if (!s)
        return;
    store_close(s->store);
    ingest_embedder_free(s->embedder);
    free(s);
}

store *ingest_session_store(ingest_session *s)
{
    return s->store;
}

const char *ingest_session_model(const ingest_session *s)
{
    return ingest_embedder_model(s->embedder);
}

qr_status ingest_session_batch_begin(ingest_session *s, char *err)
{
    qr_status st = store_batch_begin(s->store, err);
    if (!st)
        s->batch_docs = 0;
    return st;
}

qr_status ingest_session_batch_commit(ingest_session *s, char *err)
{
    s->batch_docs = 0;
    return store_batch_commit(s->store, err);
}

void ingest_session_batch_rollback(ingest_session *s)
{
    s->batch_docs = 0;
    store_batch_rollback(s->store);
}

qr_status ingest_session_bulk_begin(ingest_session *s, char *err)
{
    return store_bulk_begin(s->store, err);
}

qr_status ingest_session_bulk_end(ingest_session *s, char *err)
{
    return store_bulk_end(s->store, err);
}

/* The stored hash covers the bytes and whatever else shapes the chunks and vectors, so that
 * changing the chunk budget, the overlap, the declared type, a given title or the embedding model
 * re-chunks and re-embeds a document instead of keeping chunks made under the old settings. */
static void source_hash(const ingest_session *s, const ingest_source *src, char out[65])
{
    char bytes_hash[65], title_hash[65];
    ingest_content_hash(src->bytes, src->len, bytes_hash);
    /* a given title is embedded with every chunk, so a new one means new vectors */
    ingest_content_hash(src->title ? src->title : "", src->title ? strlen(src->title) : 0, title_hash);
    char settings[640];
    int n = snprintf(settings, sizeof(settings),
                     "%s\nquarry-ingest-v1 tokens=%zu overlap=%.4f type=%s model=%s title=%s%s", bytes_hash,
                     s->chunk_opts.max_tokens, s->chunk_opts.overlap,
                     src->declared_type ? src->declared_type : "", ingest_embedder_model(s->embedder),
                     src->title ? "given:" : "extracted", title_hash);
    ingest_content_hash(settings, (size_t)n < sizeof(settings) ? (size_t)n : sizeof(settings) - 1, out);
}

/* Writes a document whose content is already stored: only its ACL, title, URI or metadata may
 * change. The title of a file comes from its content, so an absent title keeps the stored one. */
static qr_status put_unchanged(ingest_session *s, const ingest_source *src, const char *hash,
                               store_put_result *result, size_t *nchunks, char *err)
{
    store_doc_info *info = NULL;
    qr_status st = store_get_document(s->store, src->doc_id, false, &info, err);
    if (st)
        return st;
    store_document doc = {
        .doc_id = src->doc_id,
        .title = src->title ? src->title : info->title,
        .uri = src->uri,
        .content_type = info->content_type,
        .metadata_json = src->metadata_json,
        .acl = src->acl,
        .nacl = src->nacl,
        .content_hash = hash,
    };
    st = store_put(s->store, &doc, NULL, 0, NULL, ingest_embedder_dim(s->embedder), result, err);
    if (!st && nchunks)
        *nchunks = info->chunk_count;
    store_doc_info_free(info);
    return st;
}

/* ---- prepared documents ------------------------------------------------------------------ */

/* A document carried from the work that needs no store (checks, content hash, extraction,
 * chunking, embedding: ingest_prepare, on any thread) to the write (ingest_put_prepared, on the
 * session's thread). Each stage's failure is kept, status and message, and reported by the write
 * in the order ingest_put always checked them, so that both paths fail alike. */
struct ingest_prepared {
    ingest_source src;
    bool owned; /* src's strings, ACL and bytes are copies owned here */
    /* raw input (ingest_prepared_new_raw): parsed into src by the first ingest_prepare */
    const ingest_parser *parser;
    char *raw;
    size_t raw_len;
    char *where;
    void *hold; /* what src borrows from, for parser->release */
    bool unparsed;
    char parse_err[QR_ERR_LEN];
    qr_status early_st; /* a bad source: reported before the store is asked anything */
    char early_err[QR_ERR_LEN];
    char hash[65];
    bool worked; /* extraction, chunking and embedding ran (work_st says how) */
    qr_status work_st;
    char work_err[QR_ERR_LEN];
    ingest_text text;
    ingest_chunk *chunks;
    size_t n;
    store_chunk *rows;
    float *vectors;
    int dim;
};

/* The checks of a source and its content hash. */
static void prepare_check(const ingest_session *s, ingest_prepared *p)
{
    const ingest_source *src = &p->src;
    if (!src->doc_id || !*src->doc_id) {
        p->early_st = qr_fail(p->early_err, QR_EINVAL, "a document needs a non-empty doc_id");
        return;
    }
    if (!src->bytes && src->len) {
        p->early_st = qr_fail(p->early_err, QR_EINVAL, "document '%s': no bytes", src->doc_id);
        return;
    }
    /* the store keeps each principal in its canonical spelling (group:Engineering as
     * group:engineering); one that cannot be made valid is refused here, by name */
    for (size_t i = 0; i < src->nacl; i++) {
        char why[QR_ERR_LEN];
        if (!store_principal_valid(src->acl[i])) {
            store_principal_canonical(src->acl[i], NULL, 0, why);
            p->early_st = qr_fail(p->early_err, QR_EINVAL, "document '%s': %s", src->doc_id, why);
            return;
        }
    }
    source_hash(s, src, p->hash);
}

/* Extraction, chunking and embedding with embedder e (one thread at a time per embedder). */
static void prepare_work(const ingest_session *s, ingest_embedder *e, ingest_prepared *p)
{
    const ingest_source *src = &p->src;
    char *err = p->work_err, inner[QR_ERR_LEN];
    const char **texts = NULL;
    size_t *lens = NULL;
    qr_arena arena;
    qr_arena_init(&arena, 0);
    qr_status st = QR_OK;
    p->worked = true;
    p->dim = ingest_embedder_dim(e);
    st = ingest_extract(src->bytes, src->len, src->declared_type, src->filename, &s->limits, &p->text, inner);
    if (st) {
        qr_fail(err, st, "%s", inner);
        goto out;
    }
    st = ingest_chunk_text(&p->text, &s->chunk_opts, &p->chunks, &p->n, inner);
    if (st) {
        qr_fail(err, st, "chunking: %s", inner);
        goto out;
    }
    size_t n = p->n;
    if (n) {
        p->rows = calloc(n, sizeof(*p->rows));
        texts = calloc(n, sizeof(*texts));
        lens = calloc(n, sizeof(*lens));
        p->vectors = calloc(n * (size_t)p->dim, sizeof(float));
        if (!p->rows || !texts || !lens || !p->vectors) {
            st = qr_fail(err, QR_ENOMEM, "out of memory for %zu chunks", n);
            goto out;
        }
    }
    /* A chunk is embedded with its document title and heading path, as it is indexed for BM25:
     * a passage under "Travel policy > Reimbursement" is about travel even when it never says so. */
    const char *title = src->title ? src->title : p->text.title;
    qr_arena_init(&arena, (size_t)1 << 31);
    for (size_t i = 0; i < n; i++) {
        p->rows[i] = (store_chunk){p->chunks[i].start, p->chunks[i].end, p->chunks[i].headings};
        /* "title\nheadings\nbody", put together with memcpy (printf's %.*s was 2% of a bulk load) */
        const char *t = title ? title : "", *h = p->chunks[i].headings ? p->chunks[i].headings : "";
        size_t tn = strlen(t), hn = strlen(h), bn = p->chunks[i].end - p->chunks[i].start;
        char *composite = qr_arena_alloc(&arena, tn + hn + bn + 3);
        if (!composite) {
            st = qr_fail(err, QR_ENOMEM, "out of memory for %zu chunks", n);
            goto out;
        }
        memcpy(composite, t, tn);
        composite[tn] = '\n';
        memcpy(composite + tn + 1, h, hn);
        composite[tn + 1 + hn] = '\n';
        memcpy(composite + tn + hn + 2, p->text.text + p->chunks[i].start, bn);
        composite[tn + hn + 2 + bn] = '\0';
        texts[i] = composite;
        lens[i] = tn + hn + 2 + bn;
    }
    if (n) {
        st = ingest_embed(e, texts, lens, n, p->vectors, inner);
        if (st)
            qr_fail(err, st, "embedding: %s", inner);
    }
out:
    p->work_st = st;
    qr_arena_release(&arena);
    free(lens);
    free(texts);
}

static void prepared_release(ingest_prepared *p)
{
    if (p->hold)
        p->parser->release(p->hold);
    free(p->raw);
    free(p->where);
    free(p->vectors);
    free(p->rows);
    ingest_chunks_free(p->chunks, p->n);
    ingest_text_release(&p->text);
    if (p->owned) {
        for (size_t i = 0; i < p->src.nacl; i++)
            free((char *)p->src.acl[i]);
        free((void *)p->src.acl);
        free((char *)p->src.doc_id);
        free((char *)p->src.title);
        free((char *)p->src.uri);
        free((char *)p->src.declared_type);
        free((char *)p->src.filename);
        free((char *)p->src.metadata_json);
        free((void *)p->src.bytes);
    }
}

void ingest_prepared_free(ingest_prepared *p)
{
    if (!p)
        return;
    prepared_release(p);
    free(p);
}

const ingest_source *ingest_prepared_source(const ingest_prepared *p)
{
    return &p->src;
}

/* A copy of s that is NULL only when s is (ok false when out of memory). */
static char *copy_str(const char *s, bool *ok)
{
    char *c = s ? strdup(s) : NULL;
    if (s && !c)
        *ok = false;
    return c;
}

qr_status ingest_prepared_new(const ingest_source *src, ingest_prepared **out, char *err)
{
    *out = NULL;
    ingest_prepared *p = calloc(1, sizeof(*p));
    if (!p)
        return qr_fail(err, QR_ENOMEM, "out of memory queueing a document");
    p->owned = true;
    bool ok = true;
    p->src.doc_id = copy_str(src->doc_id, &ok);
    p->src.title = copy_str(src->title, &ok);
    p->src.uri = copy_str(src->uri, &ok);
    p->src.declared_type = copy_str(src->declared_type, &ok);
    p->src.filename = copy_str(src->filename, &ok);
    p->src.metadata_json = copy_str(src->metadata_json, &ok);
    if (src->nacl && src->acl) {
        const char **acl = calloc(src->nacl, sizeof(*acl));
        if (acl) {
            p->src.acl = acl;
            p->src.nacl = src->nacl;
            for (size_t i = 0; i < src->nacl; i++)
                acl[i] = copy_str(src->acl[i] ? src->acl[i] : "", &ok);
        } else {
            ok = false;
        }
    } else {
        p->src.nacl = src->nacl; /* a NULL list of principals is refused by the checks, as before */
    }
    if (src->bytes) {
        void *b = malloc(src->len ? src->len : 1);
        if (b)
            memcpy(b, src->bytes, src->len);
        else
            ok = false;
        p->src.bytes = b;
    }
    p->src.len = src->len;
    if (!ok) {
        ingest_prepared_free(p);
        return qr_fail(err, QR_ENOMEM, "out of memory queueing document '%.200s'",
                       src->doc_id ? src->doc_id : "");
    }
    *out = p;
    return QR_OK;
}

qr_status ingest_prepared_new_raw(const ingest_parser *parser, char *raw, size_t len, const char *where,
                                  ingest_prepared **out, char *err)
{
    *out = NULL;
    ingest_prepared *p = calloc(1, sizeof(*p));
    char *w = strdup(where ? where : "");
    if (!p || !w) {
        free(p);
        free(w);
        free(raw);
        return qr_fail(err, QR_ENOMEM, "out of memory queueing input '%.200s'", where ? where : "");
    }
    p->parser = parser;
    p->raw = raw;
    p->raw_len = len;
    p->where = w;
    *out = p;
    return QR_OK;
}

bool ingest_prepared_unparsed(const ingest_prepared *p, const char **where, const char **why)
{
    if (!p->unparsed)
        return false;
    *where = p->where;
    *why = p->parse_err;
    return true;
}

/* Turns raw input into the source, once; the raw bytes are not needed after. */
static void prepare_parse(ingest_prepared *p)
{
    if (!p->raw)
        return;
    /* src borrows from hold, never from the raw bytes */
    p->unparsed =
        p->parser->parse(p->parser->ctx, p->raw, p->raw_len, &p->src, &p->hold, p->parse_err) != QR_OK;
    free(p->raw);
    p->raw = NULL;
}

void ingest_prepare(const ingest_session *s, ingest_embedder *e, store *ro, ingest_prepared *p)
{
    prepare_parse(p);
    if (p->unparsed)
        return;
    prepare_check(s, p);
    if (p->early_st || !e)
        return;
    /* a document whose committed content hash is already this one will most likely be found
     * unchanged by the write: skip the work (the write does it after all when it is not) */
    if (ro) {
        char stored[65], ignored[QR_ERR_LEN];
        bool found = false;
        if (!store_get_hash(ro, p->src.doc_id, stored, &found, ignored) && found &&
            strcmp(stored, p->hash) == 0)
            return;
    }
    prepare_work(s, e, p);
}

qr_status ingest_put_prepared(ingest_session *s, ingest_prepared *p, store_put_result *result,
                              size_t *nchunks, char *err)
{
    if (nchunks)
        *nchunks = 0;
    if (p->unparsed)
        return qr_fail(err, QR_EINVAL, "%s: %s", p->where, p->parse_err);
    if (p->early_st)
        return qr_fail(err, p->early_st, "%s", p->early_err);
    const ingest_source *src = &p->src;
    qr_status st;
    /* Prepared in full (a pool thread found no committed copy of this content): store_put looks
     * the document up once and compares the hash itself, keeping the stored chunks when it is the
     * same (a document twice in one batch), as put_unchanged would. Otherwise the hash decides
     * first, so that an unchanged document is never extracted nor its failure reported. */
    if (!p->worked || p->work_st) {
        char stored[65];
        bool found = false;
        if ((st = store_get_hash(s->store, src->doc_id, stored, &found, err)))
            return st;
        if (found && strcmp(p->hash, stored) == 0)
            return put_unchanged(s, src, p->hash, result, nchunks, err);
        if (!p->worked)
            prepare_work(s, s->embedder, p);
        if (p->work_st)
            return qr_fail(err, p->work_st, "%s", p->work_err);
    }
    store_document doc = {
        .doc_id = src->doc_id,
        .title = src->title ? src->title : p->text.title,
        .uri = src->uri,
        .content_type = p->text.content_type,
        .metadata_json = src->metadata_json,
        .acl = src->acl,
        .nacl = src->nacl,
        .content_hash = p->hash,
        .text = p->text.text ? p->text.text : "",
        .text_len = p->text.len,
    };
    st = store_put(s->store, &doc, p->rows, p->n, p->vectors, p->dim, result, err);
    if (!st && nchunks)
        *nchunks = p->n;
    return st;
}

qr_status ingest_put(ingest_session *s, const ingest_source *src, store_put_result *result, size_t *nchunks,
                     char *err)
{
    ingest_prepared p = {.src = *src};
    prepare_check(s, &p);
    qr_status st = ingest_put_prepared(s, &p, result, nchunks, err);
    prepared_release(&p);
    return st;
}

qr_status ingest_remove(ingest_session *s, const char *doc_id, char *err)
{
    if (!doc_id || !*doc_id)
        return qr_fail(err, QR_EINVAL, "a document id must not be empty");
    return store_delete(s->store, doc_id, err);
}
