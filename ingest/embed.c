/*
 * The embedder interface: one handle, two backends behind a table of functions. The local
 * backend (embed_local.c) is the default; "openai" (embed_openai.c) talks to any
 * OpenAI-compatible /embeddings endpoint. The public entry points check their arguments here
 * once, so the backends can assume well-formed calls.
 */
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest_int.h"

#define LOCAL_MODEL "local-hash-v1"

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

qr_status ingest_embedder_open(const qr_config *cfg, ingest_embedder **out, char *err)
{
    if (!out)
        return qr_fail(err, QR_EINVAL, "ingest_embedder_open: NULL output");
    *out = NULL;
    if (!cfg)
        return qr_fail(err, QR_EINVAL, "ingest_embedder_open: NULL configuration");
    const char *backend = qr_config_settings(cfg)->embed_backend;
    int64_t dim = qr_config_settings(cfg)->embed_dim;
    if (dim < 1 || dim > 8192)
        return qr_fail(err, QR_EINVAL, "embed.dim %lld is outside [1, 8192]", (long long)dim);
    ingest_embedder *e = calloc(1, sizeof(*e));
    if (!e)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    e->dim = (int)dim;
    qr_status st = QR_OK;
    if (strcmp(backend, "local") == 0) {
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
        st = embed_openai_open(cfg, e, err);
    } else {
        st = qr_fail(err, QR_EINVAL, "embed.backend: unknown backend '%s' (local or openai)", backend);
    }
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

qr_status ingest_embed(ingest_embedder *e, const char *const *texts, const size_t *lens, size_t n, float *out,
                       char *err)
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
    qr_status st = e->backend->embed(e, texts, lens, n, out, err);
    if (st)
        memset(out, 0, n * (size_t)e->dim * sizeof(float));
    return st;
}

void ingest_embedder_free(ingest_embedder *e)
{
    if (!e)
        return;
    if (e->backend && e->backend->free_state)
        e->backend->free_state(e->state);
    free(e->model);
    free(e);
}
