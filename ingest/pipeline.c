/*
 * The ingestion pipeline: one source document in, one store transaction out. It decides whether
 * the document changed (content hash over the source bytes and the settings that shape chunks),
 * and only then extracts, normalises, chunks and embeds it and hands everything to the store in
 * one write, so that a document is wholly present or wholly absent. ACL, title and metadata
 * changes of unchanged content go to the store without extraction or embedding.
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

qr_status ingest_put(ingest_session *s, const ingest_source *src, store_put_result *result, size_t *nchunks,
                     char *err)
{
    ingest_text text = {0};
    qr_arena arena;
    qr_arena_init(&arena, 0);
    ingest_chunk *chunks = NULL;
    store_chunk *rows = NULL;
    const char **texts = NULL;
    size_t *lens = NULL;
    float *vectors = NULL;
    size_t n = 0;
    qr_status st = QR_OK;
    if (nchunks)
        *nchunks = 0;
    if (!src->doc_id || !*src->doc_id)
        return qr_fail(err, QR_EINVAL, "a document needs a non-empty doc_id");
    if (!src->bytes && src->len)
        return qr_fail(err, QR_EINVAL, "document '%s': no bytes", src->doc_id);
    /* the store keeps each principal in its canonical spelling (group:Engineering as
     * group:engineering); one that cannot be made valid is refused here, by name */
    for (size_t i = 0; i < src->nacl; i++) {
        char why[QR_ERR_LEN];
        if (!store_principal_valid(src->acl[i])) {
            store_principal_canonical(src->acl[i], NULL, 0, why);
            return qr_fail(err, QR_EINVAL, "document '%s': %s", src->doc_id, why);
        }
    }

    char hash[65], stored[65];
    bool found = false;
    source_hash(s, src, hash);
    st = store_get_hash(s->store, src->doc_id, stored, &found, err);
    if (st)
        return st;
    if (found && strcmp(hash, stored) == 0)
        return put_unchanged(s, src, hash, result, nchunks, err);

    char inner[QR_ERR_LEN];
    st = ingest_extract(src->bytes, src->len, src->declared_type, src->filename, &s->limits, &text, inner);
    if (st) {
        qr_fail(err, st, "%s", inner);
        goto out;
    }
    st = ingest_chunk_text(&text, &s->chunk_opts, &chunks, &n, inner);
    if (st) {
        qr_fail(err, st, "chunking: %s", inner);
        goto out;
    }
    int dim = ingest_embedder_dim(s->embedder);
    if (n) {
        rows = calloc(n, sizeof(*rows));
        texts = calloc(n, sizeof(*texts));
        lens = calloc(n, sizeof(*lens));
        vectors = calloc(n * (size_t)dim, sizeof(float));
        if (!rows || !texts || !lens || !vectors) {
            st = qr_fail(err, QR_ENOMEM, "out of memory for %zu chunks", n);
            goto out;
        }
    }
    /* A chunk is embedded with its document title and heading path, as it is indexed for BM25:
     * a passage under "Travel policy > Reimbursement" is about travel even when it never says so. */
    const char *title = src->title ? src->title : text.title;
    qr_arena_init(&arena, (size_t)1 << 31);
    for (size_t i = 0; i < n; i++) {
        rows[i] = (store_chunk){chunks[i].start, chunks[i].end, chunks[i].headings};
        char *composite =
            qr_arena_printf(&arena, "%s\n%s\n%.*s", title ? title : "", chunks[i].headings,
                            (int)(chunks[i].end - chunks[i].start), text.text + chunks[i].start);
        if (!composite) {
            st = qr_fail(err, QR_ENOMEM, "out of memory for %zu chunks", n);
            goto out;
        }
        texts[i] = composite;
        lens[i] = strlen(composite);
    }
    if (n) {
        st = ingest_embed(s->embedder, texts, lens, n, vectors, inner);
        if (st) {
            qr_fail(err, st, "embedding: %s", inner);
            goto out;
        }
    }
    store_document doc = {
        .doc_id = src->doc_id,
        .title = title,
        .uri = src->uri,
        .content_type = text.content_type,
        .metadata_json = src->metadata_json,
        .acl = src->acl,
        .nacl = src->nacl,
        .content_hash = hash,
        .text = text.text ? text.text : "",
        .text_len = text.len,
    };
    st = store_put(s->store, &doc, rows, n, vectors, dim, result, err);
    if (!st && nchunks)
        *nchunks = n;
out:
    qr_arena_release(&arena);
    free(vectors);
    free(lens);
    free(texts);
    free(rows);
    ingest_chunks_free(chunks, n);
    ingest_text_release(&text);
    return st;
}

qr_status ingest_remove(ingest_session *s, const char *doc_id, char *err)
{
    if (!doc_id || !*doc_id)
        return qr_fail(err, QR_EINVAL, "a document id must not be empty");
    return store_delete(s->store, doc_id, err);
}
