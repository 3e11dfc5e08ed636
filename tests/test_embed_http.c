/*
 * The embedding servers' wire shapes against the fake inference server (tests/fake_inference,
 * started by the fixture, which exports QUARRY_TEST_INFERENCE_URL). OpenAI's /embeddings:
 * batching as the server records it, retries after 429 (with Retry-After) and 500, giving up, a
 * stalled server, a garbled answer, a dimension mismatch, a server that is not there, and a zero
 * vector, which the vector index leaves out. Then the other shapes (Azure OpenAI, Ollama, TEI,
 * and the OpenAI-shaped answers of llama.cpp and vLLM): what each request looks like, each end to
 * end through `quarry ingest` and `quarry search --mode vector`, the query and document prefixes
 * as the server receives them, a store embedded with other settings refused, the failure switches
 * and hostile answers (nothing written after any of them).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ingest/ingest.h"
#include "tests/harness.h"
#include "tests/test_util.h"

static const char *server(void)
{
    const char *url = getenv("QUARRY_TEST_INFERENCE_URL");
    return url && *url ? url : NULL;
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    return qr_buf_append(arg, p, size * n) ? 0 : size * n;
}

/* A control request to the fake server; returns the parsed JSON answer (or NULL). */
static json_t *control(const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", server(), path);
    CURL *c = curl_easy_init();
    qr_buf out;
    qr_buf_init(&out, 64u << 20);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    CURLcode cc = curl_easy_perform(c);
    json_t *j = cc == CURLE_OK ? json_loadb(qr_buf_str(&out), qr_buf_len(&out), 0, NULL) : NULL;
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    qr_buf_release(&out);
    return j;
}

static void reset_server(void)
{
    json_decref(control("POST", "/_fake/reset", "{}"));
}

/* The recorded /v1/embeddings requests. */
static json_t *embedding_requests(void)
{
    json_t *all = control("GET", "/_fake/requests", NULL);
    json_t *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(all, i, r)
    {
        if (strcmp(json_string_value(json_object_get(r, "path")), "/v1/embeddings") == 0)
            json_array_append(out, r);
    }
    json_decref(all);
    return out;
}

/* A configuration for the fake server's embeddings. */
static qr_config *openai_config(const char *batch, const char *retries)
{
    char err[QR_ERR_LEN], url[512];
    qr_config *cfg = qr_config_new();
    snprintf(url, sizeof(url), "%s/v1", server());
    if (qr_config_set(cfg, "embed.backend", "openai", QR_CFG_SRC_CLI, err) ||
        qr_config_set(cfg, "embed.base_url", url, QR_CFG_SRC_CLI, err) ||
        qr_config_set(cfg, "embed.model", "fake-embedding-model", QR_CFG_SRC_CLI, err) ||
        qr_config_set(cfg, "embed.batch_size", batch, QR_CFG_SRC_CLI, err) ||
        qr_config_set(cfg, "embed.retries", retries, QR_CFG_SRC_CLI, err) ||
        qr_config_set(cfg, "embed.timeout_ms", "5000", QR_CFG_SRC_CLI, err)) {
        fprintf(stderr, "config: %s\n", err);
        qr_config_free(cfg);
        return NULL;
    }
    return cfg;
}

#define NEEDS_SERVER()                                                                 \
    do {                                                                               \
        CHECK_MSG(server() != NULL, "QUARRY_TEST_INFERENCE_URL is not set: run under " \
                                    "tests/fixtures/fake-inference-fixture.sh");       \
        reset_server();                                                                \
    } while (0)

TEST(openai_batches_and_normalises)
{
    NEEDS_SERVER();
    char err[QR_ERR_LEN];
    qr_config *cfg = openai_config("3", "0");
    CHECK(cfg != NULL);
    ingest_embedder *e;
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    CHECK_STR(ingest_embedder_model(e), "fake-embedding-model");
    int dim = ingest_embedder_dim(e);
    CHECK_INT(dim, 384);
    const char *texts[] = {
        "alpha travel", "beta \"quoted\" text", "", "gamma caf\xC3\xA9", "delta", "epsilon", "zeta", "eta"};
    float *v = calloc(8 * (size_t)dim, sizeof(float));
    CHECK_OK(ingest_embed(e, texts, NULL, 8, v, err), err);
    /* 7 non-empty texts in batches of 3: 3 + 3 + 1, in order; the empty one is not sent */
    json_t *reqs = embedding_requests();
    CHECK_INT(json_array_size(reqs), 3);
    const size_t sizes[] = {3, 3, 1};
    for (size_t i = 0; i < 3; i++) {
        json_t *body = json_object_get(json_array_get(reqs, i), "body");
        json_t *input = json_object_get(body, "input");
        CHECK_INT(json_array_size(input), sizes[i]);
        CHECK_INT(json_integer_value(json_object_get(body, "dimensions")), 384);
        CHECK_STR(json_string_value(json_object_get(body, "model")), "fake-embedding-model");
    }
    json_t *first = json_object_get(json_object_get(json_array_get(reqs, 0), "body"), "input");
    CHECK_STR(json_string_value(json_array_get(first, 2)), "gamma caf\xC3\xA9");
    json_decref(reqs);
    for (int i = 0; i < 8; i++) {
        double norm = 0;
        for (int d = 0; d < dim; d++)
            norm += (double)v[i * dim + d] * v[i * dim + d];
        CHECK_MSG(i == 2 ? norm == 0 : fabs(sqrt(norm) - 1) < 1e-5, "row %d norm %g", i, sqrt(norm));
    }
    /* deterministic, and independent of the batch a text was in */
    float *one = calloc((size_t)dim, sizeof(float));
    CHECK_OK(ingest_embed(e, texts + 3, NULL, 1, one, err), err);
    for (int d = 0; d < dim; d++)
        CHECK(fabsf(one[d] - v[3 * dim + d]) < 1e-6f);
    free(one);
    free(v);
    ingest_embedder_free(e);
    qr_config_free(cfg);
}

static void set_fault(const char *json)
{
    json_decref(control("POST", "/_fake/faults", json));
}

TEST(openai_retries_429_with_retry_after)
{
    NEEDS_SERVER();
    char err[QR_ERR_LEN];
    qr_config *cfg = openai_config("16", "3");
    ingest_embedder *e;
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    set_fault("{\"mode\":\"429\",\"times\":1,\"retry_after\":1}");
    const char *texts[] = {"rate limited once"};
    float v[384];
    uint64_t t0 = qr_now_ns();
    CHECK_OK(ingest_embed(e, texts, NULL, 1, v, err), err);
    uint64_t ms = (qr_now_ns() - t0) / 1000000;
    CHECK_MSG(ms >= 1000, "retried after %llu ms, before Retry-After: 1", (unsigned long long)ms);
    json_t *reqs = embedding_requests();
    CHECK_INT(json_array_size(reqs), 2);
    CHECK_STR(json_string_value(json_object_get(json_array_get(reqs, 0), "fault")), "429");
    CHECK(json_is_null(json_object_get(json_array_get(reqs, 1), "fault")));
    json_decref(reqs);
    ingest_embedder_free(e);
    qr_config_free(cfg);
}

TEST(openai_retries_500_and_bad_answers)
{
    NEEDS_SERVER();
    char err[QR_ERR_LEN];
    qr_config *cfg = openai_config("16", "3");
    ingest_embedder *e;
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    const char *texts[] = {"server trouble", "second text"};
    float v[2 * 384];
    set_fault("{\"mode\":\"500\",\"times\":2}");
    CHECK_OK(ingest_embed(e, texts, NULL, 2, v, err), err);
    json_t *reqs = embedding_requests();
    CHECK_INT(json_array_size(reqs), 3);
    json_decref(reqs);
    /* a truncated JSON body and a connection reset are retried too */
    reset_server();
    set_fault("{\"mode\":\"malformed_json\",\"times\":1}");
    CHECK_OK(ingest_embed(e, texts, NULL, 2, v, err), err);
    reset_server();
    set_fault("{\"mode\":\"reset_mid_stream\",\"times\":1}");
    CHECK_OK(ingest_embed(e, texts, NULL, 2, v, err), err);
    /* an answer delivered in 1-21 byte pieces is read whole */
    reset_server();
    set_fault("{\"mode\":\"split_events\",\"times\":1}");
    float w[2 * 384];
    CHECK_OK(ingest_embed(e, texts, NULL, 2, w, err), err);
    CHECK(memcmp(v, w, sizeof(v)) == 0);
    reqs = embedding_requests();
    CHECK_INT(json_array_size(reqs), 1);
    json_decref(reqs);
    ingest_embedder_free(e);
    qr_config_free(cfg);
}

TEST(openai_gives_up_after_retries)
{
    NEEDS_SERVER();
    char err[QR_ERR_LEN] = "";
    qr_config *cfg = openai_config("16", "1");
    ingest_embedder *e;
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    set_fault("{\"mode\":\"500\",\"times\":-1}");
    const char *texts[] = {"never works"};
    float v[384];
    v[0] = 42;
    CHECK_INT(ingest_embed(e, texts, NULL, 1, v, err), QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "HTTP 500") != NULL && strstr(err, "after 2 attempts") != NULL, "%s", err);
    CHECK(v[0] == 0); /* no half-filled output */
    json_t *reqs = embedding_requests();
    CHECK_INT(json_array_size(reqs), 2);
    json_decref(reqs);
    reset_server();
    ingest_embedder_free(e);
    qr_config_free(cfg);
}

TEST(openai_timeout)
{
    NEEDS_SERVER();
    char err[QR_ERR_LEN] = "";
    qr_config *cfg = openai_config("16", "0");
    CHECK_OK(qr_config_set(cfg, "embed.timeout_ms", "300", QR_CFG_SRC_CLI, err), err);
    ingest_embedder *e;
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    set_fault("{\"mode\":\"stall_first_byte\",\"times\":1,\"stall_ms\":5000}");
    const char *texts[] = {"slow"};
    float v[384];
    uint64_t t0 = qr_now_ns();
    CHECK_INT(ingest_embed(e, texts, NULL, 1, v, err), QR_ETIMEOUT);
    uint64_t ms = (qr_now_ns() - t0) / 1000000;
    CHECK_MSG(ms < 2000, "took %llu ms", (unsigned long long)ms);
    CHECK_MSG(strstr(err, "300 ms") != NULL, "%s", err);
    reset_server();
    ingest_embedder_free(e);
    qr_config_free(cfg);
}

TEST(openai_dimension_mismatch)
{
    NEEDS_SERVER();
    char err[QR_ERR_LEN] = "";
    qr_config *cfg = openai_config("16", "2");
    /* the server's default is 384; without `dimensions` a 256-dimensional index cannot be fed */
    CHECK_OK(qr_config_set(cfg, "embed.dim", "256", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(qr_config_set(cfg, "embed.send_dimensions", "off", QR_CFG_SRC_CLI, err), err);
    ingest_embedder *e;
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    const char *texts[] = {"mismatch"};
    float v[256];
    CHECK_INT(ingest_embed(e, texts, NULL, 1, v, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "384-dimensional") != NULL && strstr(err, "expected 256") != NULL, "%s", err);
    json_t *reqs = embedding_requests();
    CHECK_INT(json_array_size(reqs), 1); /* not retried: retrying cannot help */
    CHECK(json_object_get(json_object_get(json_array_get(reqs, 0), "body"), "dimensions") == NULL);
    json_decref(reqs);
    ingest_embedder_free(e);
    /* with `dimensions` sent, the same server answers in 256 */
    CHECK_OK(qr_config_set(cfg, "embed.send_dimensions", "on", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    CHECK_OK(ingest_embed(e, texts, NULL, 1, v, err), err);
    ingest_embedder_free(e);
    qr_config_free(cfg);
}

TEST(openai_server_down)
{
    char err[QR_ERR_LEN] = "";
    /* a loopback port that was free a moment ago: nothing listens there */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    CHECK(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof(a)) == 0 &&
          getsockname(s, (struct sockaddr *)&a, &alen) == 0);
    close(s);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", ntohs(a.sin_port));
    qr_config *cfg = qr_config_new();
    CHECK_OK(qr_config_set(cfg, "embed.backend", "openai", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(qr_config_set(cfg, "embed.base_url", url, QR_CFG_SRC_CLI, err), err);
    CHECK_OK(qr_config_set(cfg, "embed.model", "m", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(qr_config_set(cfg, "embed.retries", "1", QR_CFG_SRC_CLI, err), err);
    ingest_embedder *e;
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    const char *texts[] = {"anyone there"};
    float v[384];
    CHECK_INT(ingest_embed(e, texts, NULL, 1, v, err), QR_EUNAVAILABLE);
    CHECK_MSG(strstr(err, "cannot reach the embedding server") != NULL && strstr(err, url) != NULL, "%s",
              err);
    ingest_embedder_free(e);
    qr_config_free(cfg);
}

TEST(openai_refused_request_is_not_retried)
{
    NEEDS_SERVER();
    char err[QR_ERR_LEN] = "";
    qr_config *cfg = openai_config("16", "3");
    /* a wrong base URL gives a 404, which no retry can fix */
    char url[512];
    snprintf(url, sizeof(url), "%s/v2", server());
    CHECK_OK(qr_config_set(cfg, "embed.base_url", url, QR_CFG_SRC_CLI, err), err);
    ingest_embedder *e;
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    const char *texts[] = {"x"};
    float v[384];
    CHECK_INT(ingest_embed(e, texts, NULL, 1, v, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "HTTP 404") != NULL, "%s", err);
    json_t *all = control("GET", "/_fake/requests", NULL);
    CHECK_INT(json_array_size(all), 1);
    json_decref(all);
    ingest_embedder_free(e);
    qr_config_free(cfg);
}

/* Ingests one text through the pipeline (the session's embedder is the fake server's). */
static qr_status put_text(ingest_session *s, const char *doc_id, const char *text, char *err)
{
    const char *acl[] = {"public"};
    ingest_source src = {.doc_id = doc_id,
                         .declared_type = "text/plain",
                         .acl = acl,
                         .nacl = 1,
                         .bytes = text,
                         .len = strlen(text)};
    store_put_result r;
    return ingest_put(s, &src, &r, NULL, err);
}

TEST(openai_zero_vector_is_left_out_of_the_vector_index)
{
    /* An embedding server that answers some text with all zeros (here "x"): the document is
     * stored, the vector index leaves its chunk out and goes on to the next document. */
    NEEDS_SERVER();
    char err[QR_ERR_LEN] = "", tmpl[] = "/tmp/quarry-embed-test-XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    json_decref(control("POST", "/_fake/embeddings", "{\"zero\":[\"x\"]}"));
    qr_config *cfg = openai_config("16", "0");
    CHECK_OK(qr_config_set(cfg, "data.dir", dir, QR_CFG_SRC_CLI, err), err);
    ingest_session *s = NULL;
    CHECK_OK(ingest_session_open(cfg, &s, err), err);
    CHECK_OK(put_text(s, "first", "Wombat burrow surveys", err), err);
    vindex_opts vo;
    vindex_opts_default(&vo);
    vindex *v = NULL;
    index_sync_report rep;
    CHECK_OK(index_sync_open(ingest_session_store(s), dir, &vo, false, &v, &rep, err), err);
    CHECK(v && rep.rebuilt && rep.count == 1 && rep.skipped == 0);
    CHECK_OK(put_text(s, "rt-z", "x", err), err);
    CHECK_OK(put_text(s, "after", "Quokka migration patterns", err), err);
    CHECK_OK(index_sync(ingest_session_store(s), v, &vo, false, &rep, err), err);
    CHECK_MSG(!rep.rebuilt && rep.added == 1 && rep.skipped == 1, "added %zu, skipped %zu", rep.added,
              rep.skipped);
    CHECK_OK(index_sync(ingest_session_store(s), v, &vo, true, &rep, err), err);
    CHECK(rep.rebuilt && rep.count == 2 && rep.skipped == 1);
    vindex_close(v);
    ingest_session_close(s);
    qr_config_free(cfg);
    reset_server();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* ---- the other wire shapes ----------------------------------------------------------------- */

/* The recorded requests whose path is path. */
static json_t *requests_to(const char *path)
{
    json_t *all = control("GET", "/_fake/requests", NULL);
    json_t *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(all, i, r)
    {
        if (strcmp(json_string_value(json_object_get(r, "path")), path) == 0)
            json_array_append(out, r);
    }
    json_decref(all);
    return out;
}

static void set_shape(const char *json)
{
    json_decref(control("POST", "/_fake/embed_shape", json));
}

/* One wire shape as a deployment configures it: the embed.* settings and where requests go. */
typedef struct {
    const char *name;    /* the test's name for it */
    const char *backend; /* embed.backend */
    const char *base;    /* appended to the server's URL */
    const char *model;   /* embed.model, or NULL */
    const char *extra;   /* further --set arguments for the command line */
    const char *flavor;  /* the fake's /v1/embeddings flavour, or NULL */
    const char *path;    /* the path the requests must reach */
} shape;

static const shape shapes[] = {
    {"openai", "openai", "/v1", "fake-embedding-model", "", NULL, "/v1/embeddings"},
    {"llamacpp", "openai", "/v1", "nomic-embed-text-v1.5.Q8_0.gguf", "", "llamacpp", "/v1/embeddings"},
    {"vllm", "openai", "/v1", "intfloat/e5-small-v2", "", "vllm", "/v1/embeddings"},
    {"azure", "azure", "/openai/deployments/embed-small", NULL,
     "--set embed.api_version=2024-10-21 --set embed.api_key=azure-test-key", NULL,
     "/openai/deployments/embed-small/embeddings"},
    {"ollama", "ollama", "", "fake-embedding-model", "", NULL, "/api/embed"},
    {"tei", "tei", "", "BAAI/bge-small-en-v1.5", "", NULL, "/embed"},
};
#define NSHAPES (sizeof(shapes) / sizeof(shapes[0]))

static const shape *shape_named(const char *name)
{
    for (size_t i = 0; i < NSHAPES; i++)
        if (strcmp(shapes[i].name, name) == 0)
            return &shapes[i];
    return NULL;
}

/* A library configuration for a shape. */
static qr_config *shape_config(const shape *sh, const char *retries)
{
    char err[QR_ERR_LEN], url[512];
    qr_config *cfg = qr_config_new();
    snprintf(url, sizeof(url), "%s%s", server(), sh->base);
    qr_status st = qr_config_set(cfg, "embed.backend", sh->backend, QR_CFG_SRC_CLI, err);
    if (!st)
        st = qr_config_set(cfg, "embed.base_url", url, QR_CFG_SRC_CLI, err);
    if (!st && sh->model)
        st = qr_config_set(cfg, "embed.model", sh->model, QR_CFG_SRC_CLI, err);
    if (!st && strcmp(sh->backend, "azure") == 0)
        st = qr_config_set(cfg, "embed.api_version", "2024-10-21", QR_CFG_SRC_CLI, err);
    if (!st && strcmp(sh->backend, "azure") == 0)
        st = qr_config_set(cfg, "embed.api_key", "azure-test-key", QR_CFG_SRC_CLI, err);
    if (!st)
        st = qr_config_set(cfg, "embed.retries", retries, QR_CFG_SRC_CLI, err);
    if (!st)
        st = qr_config_set(cfg, "embed.timeout_ms", "5000", QR_CFG_SRC_CLI, err);
    if (st) {
        fprintf(stderr, "config: %s\n", err);
        qr_config_free(cfg);
        return NULL;
    }
    return cfg;
}

TEST(azure_sends_api_key_header_and_api_version)
{
    NEEDS_SERVER();
    char err[QR_ERR_LEN];
    qr_config *cfg = shape_config(shape_named("azure"), "0");
    CHECK(cfg != NULL);
    ingest_embedder *e;
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    /* no embed.model: the deployment names the model, in the store too */
    CHECK_STR(ingest_embedder_model(e), "embed-small");
    const char *texts[] = {"azure one", "azure two"};
    float v[2 * 384];
    CHECK_OK(ingest_embed(e, texts, NULL, 2, v, err), err);
    json_t *reqs = requests_to("/openai/deployments/embed-small/embeddings");
    CHECK_INT(json_array_size(reqs), 1);
    json_t *r = json_array_get(reqs, 0);
    CHECK_STR(json_string_value(json_object_get(r, "query")), "api-version=2024-10-21");
    json_t *headers = json_object_get(r, "headers");
    CHECK_STR(json_string_value(json_object_get(headers, "api-key")), "azure-test-key");
    CHECK(json_object_get(headers, "authorization") == NULL);
    json_t *body = json_object_get(r, "body");
    CHECK(json_object_get(body, "model") == NULL);
    CHECK_INT(json_array_size(json_object_get(body, "input")), 2);
    json_decref(reqs);
    ingest_embedder_free(e);
    /* with embed.model the model is sent and recorded */
    CHECK_OK(qr_config_set(cfg, "embed.model", "text-embedding-3-small", QR_CFG_SRC_CLI, err), err);
    reset_server();
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    CHECK_STR(ingest_embedder_model(e), "text-embedding-3-small");
    CHECK_OK(ingest_embed(e, texts, NULL, 1, v, err), err);
    reqs = requests_to("/openai/deployments/embed-small/embeddings");
    CHECK_STR(json_string_value(json_object_get(json_object_get(json_array_get(reqs, 0), "body"), "model")),
              "text-embedding-3-small");
    json_decref(reqs);
    ingest_embedder_free(e);
    /* a wrong key: the server's 401 message, not retried */
    CHECK_OK(qr_config_set(cfg, "embed.api_key", "", QR_CFG_SRC_CLI, err), err);
    reset_server();
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    CHECK_INT(ingest_embed(e, texts, NULL, 1, v, err), QR_EAUTH);
    CHECK_MSG(strstr(err, "HTTP 401") && strstr(err, "Access denied"), "%s", err);
    ingest_embedder_free(e);
    qr_config_free(cfg);
}

TEST(ollama_and_tei_request_shapes)
{
    NEEDS_SERVER();
    char err[QR_ERR_LEN];
    const char *texts[] = {"first text", "", "third text"};
    float v[3 * 384];
    /* Ollama: model and input, no dimensions or encoding_format (it knows neither) */
    qr_config *cfg = shape_config(shape_named("ollama"), "0");
    ingest_embedder *e;
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    CHECK_OK(ingest_embed(e, texts, NULL, 3, v, err), err);
    json_t *reqs = requests_to("/api/embed");
    CHECK_INT(json_array_size(reqs), 1);
    json_t *body = json_object_get(json_array_get(reqs, 0), "body");
    CHECK_STR(json_string_value(json_object_get(body, "model")), "fake-embedding-model");
    CHECK_INT(json_array_size(json_object_get(body, "input")), 2); /* the empty text is not sent */
    CHECK(json_object_get(body, "dimensions") == NULL && json_object_get(body, "encoding_format") == NULL);
    json_decref(reqs);
    float w[384];
    CHECK_OK(ingest_embed(e, texts + 2, NULL, 1, w, err), err);
    CHECK(memcmp(w, v + 2 * 384, sizeof(w)) == 0);
    for (int d = 0; d < 384; d++)
        CHECK(v[384 + d] == 0);
    ingest_embedder_free(e);
    qr_config_free(cfg);
    /* an unknown model: Ollama's own message */
    reset_server();
    cfg = shape_config(shape_named("ollama"), "0");
    CHECK_OK(qr_config_set(cfg, "embed.model", "mxbai-embed-large", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    CHECK_INT(ingest_embed(e, texts, NULL, 1, v, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "HTTP 404") && strstr(err, "try pulling it first"), "%s", err);
    ingest_embedder_free(e);
    qr_config_free(cfg);
    /* TEI: inputs, normalize and truncate; no model (the server runs one), Bearer key */
    reset_server();
    cfg = shape_config(shape_named("tei"), "0");
    CHECK_OK(qr_config_set(cfg, "embed.api_key", "tei-key", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    CHECK_STR(ingest_embedder_model(e), "BAAI/bge-small-en-v1.5");
    CHECK_OK(ingest_embed(e, texts, NULL, 3, v, err), err);
    reqs = requests_to("/embed");
    CHECK_INT(json_array_size(reqs), 1);
    json_t *r = json_array_get(reqs, 0);
    body = json_object_get(r, "body");
    CHECK(json_object_get(body, "model") == NULL);
    CHECK_INT(json_array_size(json_object_get(body, "inputs")), 2);
    CHECK(json_is_true(json_object_get(body, "normalize")) &&
          json_is_true(json_object_get(body, "truncate")));
    CHECK_STR(json_string_value(json_object_get(json_object_get(r, "headers"), "authorization")),
              "Bearer tei-key");
    json_decref(reqs);
    double norm = 0;
    for (int d = 0; d < 384; d++)
        norm += (double)v[d] * v[d];
    CHECK_MSG(fabs(sqrt(norm) - 1) < 1e-5, "norm %g", sqrt(norm));
    ingest_embedder_free(e);
    /* TEI refuses batches over its --max-client-batch-size (32 by default): its message says so */
    reset_server();
    CHECK_OK(qr_config_set(cfg, "embed.batch_size", "40", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    const char *many[40];
    for (int i = 0; i < 40; i++)
        many[i] = "batch text";
    float *mv = calloc(40 * 384, sizeof(float));
    CHECK_INT(ingest_embed(e, many, NULL, 40, mv, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "HTTP 422") && strstr(err, "maximum allowed batch size 32"), "%s", err);
    free(mv);
    ingest_embedder_free(e);
    qr_config_free(cfg);
}

TEST(backend_settings_are_checked_at_open)
{
    char err[QR_ERR_LEN] = "";
    ingest_embedder *e = NULL;
    struct {
        const char *backend, *base, *model, *api_version, *expect;
    } cases[] = {
        {"azure", "https://res.openai.azure.com/openai/deployments/d", "", "",
         "embed.api_version is not set"},
        {"openai", "http://127.0.0.1:1/v1", "m", "2024-10-21",
         "embed.api_version is set but embed.backend is openai"},
        {"tei", "http://127.0.0.1:1", "", "", "embed.backend is tei but embed.model is not set"},
        {"ollama", "http://127.0.0.1:1", "", "", "embed.backend is ollama but embed.model is not set"},
        {"ollama", "", "m", "", "embed.backend is ollama but embed.base_url is not set"},
        {"tei", "ftp://h", "m", "", "is not an http:// or https:// URL"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        qr_config *cfg = qr_config_new();
        CHECK_OK(qr_config_set(cfg, "embed.backend", cases[i].backend, QR_CFG_SRC_CLI, err), err);
        CHECK_OK(qr_config_set(cfg, "embed.base_url", cases[i].base, QR_CFG_SRC_CLI, err), err);
        CHECK_OK(qr_config_set(cfg, "embed.model", cases[i].model, QR_CFG_SRC_CLI, err), err);
        CHECK_OK(qr_config_set(cfg, "embed.api_version", cases[i].api_version, QR_CFG_SRC_CLI, err), err);
        CHECK_INT(ingest_embedder_open(cfg, &e, err), QR_EINVAL);
        CHECK(e == NULL);
        CHECK_MSG(strstr(err, cases[i].expect) != NULL, "case %zu: %s", i, err);
        qr_config_free(cfg);
    }
    /* an unknown backend is refused by the configuration's list of choices */
    qr_config *cfg = qr_config_new();
    CHECK(qr_config_set(cfg, "embed.backend", "cohere", QR_CFG_SRC_CLI, err) != QR_OK);
    /* a prefix that is not text, or too long to be an instruction */
    CHECK(qr_config_set(cfg, "embed.query_prefix", "q\xff: ", QR_CFG_SRC_CLI, err) != QR_OK);
    char long_prefix[1100];
    memset(long_prefix, 'p', 1025);
    long_prefix[1025] = '\0';
    CHECK_OK(qr_config_set(cfg, "embed.document_prefix", long_prefix, QR_CFG_SRC_CLI, err), err);
    CHECK_INT(ingest_embedder_open(cfg, &e, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "embed.document_prefix is 1025 bytes, more than 1024") != NULL, "%s", err);
    qr_config_free(cfg);
}

TEST(prefixes_make_their_own_identity)
{
    char err[QR_ERR_LEN] = "";
    qr_config *cfg = qr_config_new();
    ingest_embedder *plain, *e5, *swapped, *nomic;
    CHECK_OK(ingest_embedder_open(cfg, &plain, err), err);
    CHECK_STR(ingest_embedder_model(plain), "local-hash-v1");
    CHECK_OK(qr_config_set(cfg, "embed.query_prefix", "query: ", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(qr_config_set(cfg, "embed.document_prefix", "passage: ", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(ingest_embedder_open(cfg, &e5, err), err);
    CHECK_OK(qr_config_set(cfg, "embed.query_prefix", "passage: ", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(qr_config_set(cfg, "embed.document_prefix", "query: ", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(ingest_embedder_open(cfg, &swapped, err), err);
    CHECK_OK(qr_config_set(cfg, "embed.query_prefix", "search_query: ", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(qr_config_set(cfg, "embed.document_prefix", "search_document: ", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(ingest_embedder_open(cfg, &nomic, err), err);
    const char *a = ingest_embedder_model(e5), *b = ingest_embedder_model(swapped),
               *c = ingest_embedder_model(nomic);
    CHECK_MSG(strncmp(a, "local-hash-v1 +prefixes:", 24) == 0 && strlen(a) == 24 + 12, "%s", a);
    CHECK_MSG(strcmp(a, b) != 0 && strcmp(a, c) != 0 && strcmp(b, c) != 0, "%s %s %s", a, b, c);
    /* the prefix is embedded with the text: a query and a document of the same words differ */
    float q[384], d[384], p[384];
    const char *text = "wombat burrows";
    CHECK_OK(ingest_embed_query(e5, text, q, err), err);
    CHECK_OK(ingest_embed(e5, &text, NULL, 1, d, err), err);
    CHECK_OK(ingest_embed(plain, &text, NULL, 1, p, err), err);
    CHECK(memcmp(q, d, sizeof(q)) != 0 && memcmp(d, p, sizeof(d)) != 0);
    const char *joined = "passage: wombat burrows";
    CHECK_OK(ingest_embed(plain, &joined, NULL, 1, p, err), err);
    CHECK(memcmp(d, p, sizeof(d)) == 0);
    /* an empty text stays empty (a zero vector), prefix or not */
    const char *two[] = {"", "wombat burrows"};
    float z[2 * 384];
    CHECK_OK(ingest_embed(e5, two, NULL, 2, z, err), err);
    for (int k = 0; k < 384; k++)
        CHECK(z[k] == 0);
    CHECK(memcmp(z + 384, d, sizeof(d)) == 0);
    ingest_embedder_free(plain);
    ingest_embedder_free(e5);
    ingest_embedder_free(swapped);
    ingest_embedder_free(nomic);
    qr_config_free(cfg);
}

/* ---- end to end through the quarry binary -------------------------------------------------- */

static const char corpus[] =
    "{\"_id\":\"wombat\",\"title\":\"Wombats\",\"text\":\"Wombat burrow ecology in southern Australia: "
    "wombats dig long burrows under eucalyptus roots.\"}\n"
    "{\"_id\":\"compiler\",\"title\":\"Compilers\",\"text\":\"Compiler optimisation: loop unrolling, "
    "register allocation and instruction scheduling.\"}\n"
    "{\"_id\":\"bread\",\"title\":\"Bread\",\"text\":\"Sourdough bread fermentation with wild yeast, "
    "rye flour and a long proof.\"}\n";

/* A fresh data directory holding corpus.jsonl. */
static char *make_dir(void)
{
    char tmpl[] = "/tmp/quarry-embed-e2e-XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir)
        return NULL;
    char path[256];
    snprintf(path, sizeof(path), "%s/corpus.jsonl", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    fputs(corpus, f);
    fclose(f);
    return strdup(dir);
}

static void remove_dir(char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    free(dir);
}

/* Runs `quarry COMMAND` (a subcommand and its arguments) on dir with a shape's settings and more
 * (sets); stdout and stderr go to out. Returns the exit status. */
static int quarry(const char *dir, const shape *sh, const char *sets, const char *command, qr_buf *out)
{
    const char *rest = strchr(command, ' ');
    int verb = rest ? (int)(rest - command) : (int)strlen(command);
    char model[256] = "";
    if (sh->model)
        snprintf(model, sizeof(model), "--set 'embed.model=%s'", sh->model);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "'%s' %.*s --data '%s/data' --set embed.backend=%s --set 'embed.base_url=%s%s' %s %s %s "
             "--set embed.timeout_ms=5000 --set embed.retries=0 %s 2>&1",
             QUARRY_BIN, verb, command, dir, sh->backend, server(), sh->base, model, sh->extra, sets,
             rest ? rest : "");
    return test_capture(cmd, out);
}

/* The doc_id of the first hit in `quarry search --json` output, or "". */
static void first_hit(const qr_buf *out, char *doc, size_t len)
{
    doc[0] = '\0';
    const char *json = strstr(qr_buf_str(out), "{\"results\"");
    json_t *root = json ? json_loads(json, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    const char *id =
        json_string_value(json_object_get(json_array_get(json_object_get(root, "results"), 0), "doc_id"));
    snprintf(doc, len, "%s", id ? id : "");
    json_decref(root);
}

TEST(each_shape_end_to_end)
{
    NEEDS_SERVER();
    qr_buf out;
    qr_buf_init(&out, 16u << 20);
    for (size_t i = 0; i < NSHAPES && !harness_failed(); i++) {
        const shape *sh = &shapes[i];
        reset_server();
        if (sh->flavor) {
            char js[64];
            snprintf(js, sizeof(js), "{\"flavor\":\"%s\"}", sh->flavor);
            set_shape(js);
        }
        char *dir = make_dir();
        CHECK(dir != NULL);
        char args[512];
        snprintf(args, sizeof(args), "ingest --acl public --jsonl '%s/corpus.jsonl'", dir);
        int rc = quarry(dir, sh, "", args, &out);
        CHECK_MSG(rc == 0 && strstr(qr_buf_str(&out), "3 added"), "%s: ingest: %s", sh->name,
                  qr_buf_str(&out));
        const char *queries[][2] = {{"wombats dig burrows", "wombat"},
                                    {"loop unrolling in a compiler", "compiler"},
                                    {"sourdough yeast fermentation", "bread"}};
        for (int q = 0; q < 3; q++) {
            snprintf(args, sizeof(args), "search --mode vector --json -k 1 '%s'", queries[q][0]);
            rc = quarry(dir, sh, "", args, &out);
            char doc[128];
            first_hit(&out, doc, sizeof(doc));
            CHECK_MSG(rc == 0 && strcmp(doc, queries[q][1]) == 0, "%s: '%s' found '%s': %s", sh->name,
                      queries[q][0], doc, qr_buf_str(&out));
        }
        /* every request went to the shape's path: three documents, three queries */
        json_t *all = control("GET", "/_fake/requests", NULL);
        json_t *reqs = requests_to(sh->path);
        CHECK_MSG(json_array_size(reqs) == 6 && json_array_size(all) == 6, "%s: %zu of %zu requests to %s",
                  sh->name, json_array_size(reqs), json_array_size(all), sh->path);
        json_decref(reqs);
        json_decref(all);
        /* the store records the model (for azure without embed.model: the deployment) */
        quarry(dir, sh, "", "stats", &out);
        CHECK_MSG(strstr(qr_buf_str(&out), sh->model ? sh->model : "embed-small") != NULL, "%s: %s", sh->name,
                  qr_buf_str(&out));
        remove_dir(dir);
    }
    qr_buf_release(&out);
}

TEST(vllm_refuses_dimensions_it_cannot_give)
{
    NEEDS_SERVER();
    char err[QR_ERR_LEN] = "";
    set_shape("{\"flavor\":\"vllm\"}");
    qr_config *cfg = shape_config(shape_named("vllm"), "2");
    CHECK_OK(qr_config_set(cfg, "embed.dim", "256", QR_CFG_SRC_CLI, err), err);
    ingest_embedder *e;
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    const char *texts[] = {"matryoshka"};
    float v[384];
    CHECK_INT(ingest_embed(e, texts, NULL, 1, v, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "HTTP 400") && strstr(err, "does not support matryoshka representation"), "%s",
              err);
    ingest_embedder_free(e);
    /* without `dimensions` the model's own size comes back: refused as not embed.dim */
    CHECK_OK(qr_config_set(cfg, "embed.send_dimensions", "off", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    CHECK_INT(ingest_embed(e, texts, NULL, 1, v, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "384-dimensional") && strstr(err, "expected 256"), "%s", err);
    json_t *reqs = requests_to("/v1/embeddings");
    CHECK_INT(json_array_size(reqs), 2); /* neither retried */
    json_decref(reqs);
    ingest_embedder_free(e);
    qr_config_free(cfg);
}

/* The input texts of the recorded requests to path, in order, one string per text. */
static json_t *recorded_inputs(const char *path, const char *field)
{
    json_t *reqs = requests_to(path), *out = json_array();
    size_t i, j;
    json_t *r, *t;
    json_array_foreach(reqs, i, r)
    {
        json_array_foreach(json_object_get(json_object_get(r, "body"), field), j, t)
            json_array_append(out, t);
    }
    json_decref(reqs);
    return out;
}

#define E5_PREFIXES "--set 'embed.query_prefix=query: ' --set 'embed.document_prefix=passage: '"

TEST(prefixes_reach_the_server_for_documents_and_queries)
{
    NEEDS_SERVER();
    const shape *sh = shape_named("ollama");
    qr_buf out;
    qr_buf_init(&out, 16u << 20);
    char *dir = make_dir();
    CHECK(dir != NULL);
    char args[512];
    snprintf(args, sizeof(args), "ingest --acl public --jsonl '%s/corpus.jsonl'", dir);
    CHECK_MSG(quarry(dir, sh, E5_PREFIXES, args, &out) == 0, "%s", qr_buf_str(&out));
    json_t *docs = recorded_inputs("/api/embed", "input");
    CHECK_INT(json_array_size(docs), 3);
    size_t i;
    json_t *t;
    json_array_foreach(docs, i, t) CHECK_MSG(strncmp(json_string_value(t), "passage: ", 9) == 0 &&
                                                 strncmp(json_string_value(t), "passage: passage: ", 18) != 0,
                                             "%s", json_string_value(t));
    json_decref(docs);
    reset_server();
    CHECK_MSG(quarry(dir, sh, E5_PREFIXES, "search --mode vector --json -k 1 'wombat burrows'", &out) == 0,
              "%s", qr_buf_str(&out));
    char doc[64];
    first_hit(&out, doc, sizeof(doc));
    CHECK_STR(doc, "wombat");
    json_t *queries = recorded_inputs("/api/embed", "input");
    CHECK_INT(json_array_size(queries), 1);
    CHECK_STR(json_string_value(json_array_get(queries, 0)), "query: wombat burrows");
    json_decref(queries);
    /* hybrid search embeds the query the same way */
    reset_server();
    CHECK_MSG(quarry(dir, sh, E5_PREFIXES, "search --mode hybrid --json -k 1 'wombat burrows'", &out) == 0,
              "%s", qr_buf_str(&out));
    queries = recorded_inputs("/api/embed", "input");
    CHECK_STR(json_string_value(json_array_get(queries, 0)), "query: wombat burrows");
    json_decref(queries);
    quarry(dir, sh, E5_PREFIXES, "stats", &out);
    CHECK_MSG(strstr(qr_buf_str(&out), "fake-embedding-model +prefixes:") != NULL, "%s", qr_buf_str(&out));
    remove_dir(dir);
    qr_buf_release(&out);
}

TEST(other_prefixes_or_model_are_refused_and_nothing_is_written)
{
    NEEDS_SERVER();
    const shape *sh = shape_named("tei");
    qr_buf out;
    qr_buf_init(&out, 16u << 20);
    char *dir = make_dir();
    CHECK(dir != NULL);
    char ingest[512];
    snprintf(ingest, sizeof(ingest), "ingest --acl public --jsonl '%s/corpus.jsonl'", dir);
    CHECK_MSG(quarry(dir, sh, E5_PREFIXES, ingest, &out) == 0, "%s", qr_buf_str(&out));
    /* the same settings again: unchanged documents are neither re-extracted nor re-embedded */
    reset_server();
    CHECK_MSG(quarry(dir, sh, E5_PREFIXES, ingest, &out) == 0 && strstr(qr_buf_str(&out), "3 unchanged"),
              "%s", qr_buf_str(&out));
    json_t *all = control("GET", "/_fake/requests", NULL);
    CHECK_INT(json_array_size(all), 0);
    json_decref(all);
    const char *others[] = {
        "--set 'embed.query_prefix=search_query: ' --set 'embed.document_prefix=passage: '",
        "--set 'embed.query_prefix=query: ' --set 'embed.document_prefix=search_document: '",
        "",
        E5_PREFIXES " --set embed.model=BAAI/bge-base-en-v1.5",
    };
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        reset_server();
        /* a search with other settings would compare vectors of two embeddings: refused */
        int rc = quarry(dir, sh, others[i], "search --mode vector --json 'wombat burrows'", &out);
        CHECK_MSG(
            rc != 0 &&
                strstr(qr_buf_str(&out), "the store was embedded as 'BAAI/bge-small-en-v1.5 +prefixes:") &&
                strstr(qr_buf_str(&out), "configure the same embed.* settings"),
            "case %zu: %s", i, qr_buf_str(&out));
        /* an ingest with them too, before anything is embedded or written */
        rc = quarry(dir, sh, others[i], ingest, &out);
        CHECK_MSG(rc != 0 && strstr(qr_buf_str(&out), "holds vectors of embedding model"), "case %zu: %s", i,
                  qr_buf_str(&out));
        /* and a server (which ingests uploads and embeds queries) does not start */
        rc = quarry(dir, sh, others[i], "serve --set server.listen=127.0.0.1:0", &out);
        CHECK_MSG(rc != 0 && strstr(qr_buf_str(&out), "BAAI/bge-small-en-v1.5 +prefixes:"), "case %zu: %s", i,
                  qr_buf_str(&out));
        all = control("GET", "/_fake/requests", NULL);
        CHECK_MSG(json_array_size(all) == 0, "case %zu: %zu requests", i, json_array_size(all));
        json_decref(all);
    }
    /* the store still serves its own settings */
    CHECK_MSG(quarry(dir, sh, E5_PREFIXES, "stats", &out) == 0 &&
                  strstr(qr_buf_str(&out), "documents         3"),
              "%s", qr_buf_str(&out));
    CHECK(quarry(dir, sh, E5_PREFIXES, "search --mode vector --json -k 1 'wombat burrows'", &out) == 0);
    remove_dir(dir);
    qr_buf_release(&out);
}

/* Ingests one document through a session on dir with cfg; returns its status. */
static qr_status ingest_one(qr_config *cfg, const char *dir, int64_t *documents, char *err)
{
    qr_status st = qr_config_set(cfg, "data.dir", dir, QR_CFG_SRC_CLI, err);
    ingest_session *s = NULL;
    if (!st)
        st = ingest_session_open(cfg, &s, err);
    if (!st)
        st = put_text(s, "doc", "Numbat termite diet and habitat in Western Australia", err);
    char e2[QR_ERR_LEN];
    store_stats ss;
    *documents = s && store_get_stats(ingest_session_store(s), &ss, e2) == QR_OK ? ss.documents : -1;
    ingest_session_close(s);
    return st;
}

TEST(native_shapes_failure_switches)
{
    NEEDS_SERVER();
    const char *names[] = {"azure", "ollama", "tei"};
    for (size_t k = 0; k < 3 && !harness_failed(); k++) {
        const shape *sh = shape_named(names[k]);
        char err[QR_ERR_LEN] = "";
        qr_config *cfg = shape_config(sh, "3");
        ingest_embedder *e;
        CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
        const char *texts[] = {"switch one", "switch two"};
        float v[2 * 384], w[2 * 384];
        reset_server();
        CHECK_OK(ingest_embed(e, texts, NULL, 2, v, err), err);
        /* retried until an answer comes, which is the same answer */
        const char *recovered[] = {"{\"mode\":\"500\",\"times\":2}", "{\"mode\":\"429\",\"retry_after\":0}",
                                   "{\"mode\":\"malformed_json\"}", "{\"mode\":\"reset_mid_stream\"}",
                                   "{\"mode\":\"split_events\"}"};
        for (size_t f = 0; f < sizeof(recovered) / sizeof(recovered[0]); f++) {
            reset_server();
            set_fault(recovered[f]);
            memset(w, 0, sizeof(w));
            CHECK_MSG(ingest_embed(e, texts, NULL, 2, w, err) == QR_OK, "%s %s: %s", sh->name, recovered[f],
                      err);
            CHECK_MSG(memcmp(v, w, sizeof(v)) == 0, "%s %s", sh->name, recovered[f]);
        }
        ingest_embedder_free(e);
        /* a stall past embed.timeout_ms */
        CHECK_OK(qr_config_set(cfg, "embed.timeout_ms", "300", QR_CFG_SRC_CLI, err), err);
        CHECK_OK(qr_config_set(cfg, "embed.retries", "0", QR_CFG_SRC_CLI, err), err);
        CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
        reset_server();
        set_fault("{\"mode\":\"stall_first_byte\",\"stall_ms\":5000}");
        CHECK_INT(ingest_embed(e, texts, NULL, 2, w, err), QR_ETIMEOUT);
        CHECK_MSG(strstr(err, "did not answer within 300 ms"), "%s: %s", sh->name, err);
        ingest_embedder_free(e);
        /* a server that keeps failing: a clear error, nothing written */
        CHECK_OK(qr_config_set(cfg, "embed.timeout_ms", "5000", QR_CFG_SRC_CLI, err), err);
        CHECK_OK(qr_config_set(cfg, "embed.retries", "1", QR_CFG_SRC_CLI, err), err);
        char tmpl[] = "/tmp/quarry-embed-fail-XXXXXX";
        char *dir = mkdtemp(tmpl);
        CHECK(dir != NULL);
        reset_server();
        set_fault("{\"mode\":\"500\",\"times\":-1}");
        int64_t docs = -2;
        CHECK_INT(ingest_one(cfg, dir, &docs, err), QR_EUNAVAILABLE);
        CHECK_MSG(strstr(err, "embedding") && strstr(err, "HTTP 500") && strstr(err, "after 2 attempts") &&
                      strstr(err, sh->path),
                  "%s: %s", sh->name, err);
        CHECK_INT(docs, 0);
        remove_dir(strdup(dir));
        qr_config_free(cfg);
    }
    reset_server();
}

TEST(hostile_answers_are_refused_and_nothing_is_written)
{
    NEEDS_SERVER();
    const char *names[] = {"openai", "azure", "ollama", "tei"};
    struct {
        const char *mode;
        qr_status st;
        const char *expect;
    } modes[] = {
        {"wrong_count", QR_EINVAL, "returned 1 vectors for 2 inputs"},
        {"ragged", QR_EINVAL, "returned 383-dimensional vectors, expected 384"},
        {"nan", QR_EUNAVAILABLE, "malformed response"},
        {"overflow", QR_EINVAL, "not finite as a float"},
        {"huge", QR_ELIMIT, "more than 2 vectors of 384 numbers can take"},
    };
    for (size_t k = 0; k < 4 && !harness_failed(); k++) {
        const shape *sh = shape_named(names[k]);
        char err[QR_ERR_LEN] = "";
        qr_config *cfg = shape_config(sh, "1");
        ingest_embedder *e;
        CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
        const char *texts[] = {"hostile one", "hostile two"};
        float v[2 * 384];
        for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
            reset_server();
            char js[64];
            snprintf(js, sizeof(js), "{\"hostile\":\"%s\"}", modes[m].mode);
            set_shape(js);
            for (int d = 0; d < 2 * 384; d++)
                v[d] = 42;
            qr_status st = ingest_embed(e, texts, NULL, 2, v, err);
            CHECK_MSG(st == modes[m].st && strstr(err, modes[m].expect), "%s %s: %d %s", sh->name,
                      modes[m].mode, (int)st, err);
            for (int d = 0; d < 2 * 384; d++)
                CHECK_MSG(v[d] == 0, "%s %s: output left filled", sh->name, modes[m].mode);
            /* only what retrying may mend is retried: a garbled body */
            json_t *reqs = requests_to(sh->path);
            CHECK_MSG(json_array_size(reqs) == (modes[m].st == QR_EUNAVAILABLE ? 2u : 1u),
                      "%s %s: %zu requests", sh->name, modes[m].mode, json_array_size(reqs));
            json_decref(reqs);
        }
        ingest_embedder_free(e);
        /* through the pipeline: the document is not stored */
        char tmpl[] = "/tmp/quarry-embed-hostile-XXXXXX";
        char *dir = mkdtemp(tmpl);
        CHECK(dir != NULL);
        reset_server();
        set_shape("{\"hostile\":\"overflow\"}");
        int64_t docs = -2;
        CHECK_INT(ingest_one(cfg, dir, &docs, err), QR_EINVAL);
        CHECK_INT(docs, 0);
        remove_dir(strdup(dir));
        qr_config_free(cfg);
    }
    reset_server();
}
