/*
 * The embedder interface: one handle, backends behind a table of functions. The local backend
 * (embed_local.c) is the default; "openai", "azure", "ollama" and "tei" (embed_http.c) talk to an
 * embeddings server in its wire shape. Here, once for every backend: the arguments are checked,
 * embed.query_prefix goes before queries and embed.document_prefix before chunks (models such as
 * e5 and nomic are trained with such instructions), and the identity the store records is made:
 * the model name, plus a short hash of the prefixes when there are any, so that vectors made with
 * other prefixes are never mixed with or searched by these.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest_int.h"

#define LOCAL_MODEL "local-hash-v1"
#define PREFIX_MAX  1024

typedef struct {
    embed_local_opts opts;
    embed_cache *cache;
} local_state;

static qr_status local_embed(ingest_embedder *e, const char *const *texts, const size_t *lens, size_t n,
                             float *out, char *err)
{
    local_state *s = e->state;
    for (size_t i = 0; i < n; i++) {
        size_t len = lens ? lens[i] : strlen(texts[i]);
        if (embed_local_one(&s->opts, s->cache, texts[i], len, out + i * (size_t)e->dim))
            return qr_fail(err, QR_ENOMEM, "out of memory while embedding");
    }
    return QR_OK;
}

static void local_free(void *p)
{
    local_state *s = p;
    if (s)
        embed_cache_free(s->cache);
    free(s);
}

static const embed_backend local_backend = {local_embed, local_free};

/* Checks a prefix setting and copies it. */
static qr_status take_prefix(const char *key, const char *v, char **out, char *err)
{
    size_t n = strlen(v);
    /* the configuration has checked that it is text */
    if (n > PREFIX_MAX)
        return qr_fail(err, QR_EINVAL, "%s is %zu bytes, more than %d", key, n, PREFIX_MAX);
    *out = strdup(v);
    return *out ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory");
}

/* e->model becomes the recorded identity: the model alone without prefixes, else the model and
 * the first 12 hex digits of SHA-256 over both prefixes (each length-prefixed, so moving text
 * from one prefix to the other changes it too). */
static qr_status make_identity(ingest_embedder *e, char *err)
{
    if (!*e->query_prefix && !*e->document_prefix)
        return QR_OK;
    size_t q = strlen(e->query_prefix), d = strlen(e->document_prefix);
    char *both = malloc(q + d + 64);
    if (!both)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    int n = snprintf(both, q + d + 64, "query %zu:%s\ndocument %zu:%s", q, e->query_prefix, d,
                     e->document_prefix);
    char hash[65];
    ingest_content_hash(both, (size_t)n, hash);
    free(both);
    size_t len = strlen(e->model) + 32;
    char *id = malloc(len);
    if (!id)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    snprintf(id, len, "%s +prefixes:%.12s", e->model, hash);
    free(e->model);
    e->model = id;
    return QR_OK;
}

qr_status ingest_embedder_open(const qr_config *cfg, ingest_embedder **out, char *err)
{
    if (!out)
        return qr_fail(err, QR_EINVAL, "ingest_embedder_open: NULL output");
    *out = NULL;
    if (!cfg)
        return qr_fail(err, QR_EINVAL, "ingest_embedder_open: NULL configuration");
    const qr_settings *set = qr_config_settings(cfg);
    const char *backend = set->embed_backend;
    int64_t dim = set->embed_dim;
    if (dim < 1 || dim > 8192)
        return qr_fail(err, QR_EINVAL, "embed.dim %lld is outside [1, 8192]", (long long)dim);
    ingest_embedder *e = calloc(1, sizeof(*e));
    if (!e)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    e->dim = (int)dim;
    qr_status st = take_prefix("embed.query_prefix", set->embed_query_prefix, &e->query_prefix, err);
    if (!st)
        st = take_prefix("embed.document_prefix", set->embed_document_prefix, &e->document_prefix, err);
    if (st) {
        /* nothing to open */
    } else if (strcmp(backend, "local") == 0) {
        local_state *ls = calloc(1, sizeof(*ls));
        e->model = strdup(LOCAL_MODEL);
        if (ls)
            ls->cache = embed_cache_new();
        if (!ls || !ls->cache || !e->model) {
            local_free(ls);
            st = qr_fail(err, QR_ENOMEM, "out of memory");
        } else {
            embed_local_defaults(&ls->opts, e->dim);
            e->state = ls;
            e->backend = &local_backend;
        }
    } else if (strcmp(backend, "openai") == 0) {
        st = embed_http_open(cfg, EMBED_WIRE_OPENAI, e, err);
    } else if (strcmp(backend, "azure") == 0) {
        st = embed_http_open(cfg, EMBED_WIRE_AZURE, e, err);
    } else if (strcmp(backend, "ollama") == 0) {
        st = embed_http_open(cfg, EMBED_WIRE_OLLAMA, e, err);
    } else if (strcmp(backend, "tei") == 0) {
        st = embed_http_open(cfg, EMBED_WIRE_TEI, e, err);
    } else {
        st = qr_fail(err, QR_EINVAL,
                     "embed.backend: unknown backend '%s' (local, openai, azure, ollama or tei)", backend);
    }
    if (!st)
        st = make_identity(e, err);
    if (st) {
        ingest_embedder_free(e);
        return st;
    }
    *out = e;
    return QR_OK;
}

const char *ingest_embedder_model(const ingest_embedder *e)
{
    return e ? e->model : NULL;
}

int ingest_embedder_dim(const ingest_embedder *e)
{
    return e ? e->dim : 0;
}

/* Embeds texts with prefix put before each non-empty one (an empty text stays empty: the
 * backends give it a zero vector). */
static qr_status embed_with(ingest_embedder *e, const char *prefix, const char *const *texts,
                            const size_t *lens, size_t n, float *out, char *err)
{
    if (!e || (n && (!texts || !out)))
        return qr_fail(err, QR_EINVAL, "ingest_embed: NULL argument");
    for (size_t i = 0; i < n; i++)
        if (!texts[i] && (!lens || lens[i]))
            return qr_fail(err, QR_EINVAL, "ingest_embed: text %zu is NULL", i);
    if (n == 0)
        return QR_OK;
    /* Texts reach backends that parse them (JSON bodies): make sure they are text. */
    for (size_t i = 0; i < n; i++) {
        size_t len = lens ? lens[i] : strlen(texts[i]);
        if (len && !qr_utf8_valid(texts[i], len))
            return qr_fail(err, QR_EINVAL, "ingest_embed: text %zu is not valid UTF-8", i);
    }
    size_t plen = strlen(prefix);
    char **joined = NULL; /* owned copies; NULL for empty texts */
    const char **view = NULL;
    size_t *jlens = NULL;
    qr_status st = QR_OK;
    if (plen) {
        joined = calloc(n, sizeof(*joined));
        view = calloc(n, sizeof(*view));
        jlens = calloc(n, sizeof(*jlens));
        if (!joined || !view || !jlens) {
            st = qr_fail(err, QR_ENOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            size_t len = lens ? lens[i] : strlen(texts[i]);
            view[i] = "";
            if (!len)
                continue;
            if (!(joined[i] = malloc(plen + len + 1))) {
                st = qr_fail(err, QR_ENOMEM, "out of memory");
                goto out;
            }
            memcpy(joined[i], prefix, plen);
            memcpy(joined[i] + plen, texts[i], len);
            joined[i][plen + len] = '\0';
            view[i] = joined[i];
            jlens[i] = plen + len;
        }
        st = e->backend->embed(e, view, jlens, n, out, err);
    } else {
        st = e->backend->embed(e, texts, lens, n, out, err);
    }
out:
    if (st)
        memset(out, 0, n * (size_t)e->dim * sizeof(float));
    if (joined)
        for (size_t i = 0; i < n; i++)
            free(joined[i]);
    free(joined);
    free(view);
    free(jlens);
    return st;
}

qr_status ingest_embed(ingest_embedder *e, const char *const *texts, const size_t *lens, size_t n, float *out,
                       char *err)
{
    return embed_with(e, e ? e->document_prefix : "", texts, lens, n, out, err);
}

qr_status ingest_embed_query(ingest_embedder *e, const char *text, float *out, char *err)
{
    if (!text)
        return qr_fail(err, QR_EINVAL, "ingest_embed_query: NULL query");
    return embed_with(e, e ? e->query_prefix : "", &text, NULL, 1, out, err);
}

void ingest_embedder_free(ingest_embedder *e)
{
    if (!e)
        return;
    if (e->backend && e->backend->free_state)
        e->backend->free_state(e->state);
    free(e->model);
    free(e->query_prefix);
    free(e->document_prefix);
    free(e);
}
