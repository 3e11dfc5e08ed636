/*
 * The OpenAI-compatible embeddings backend against the fake inference server
 * (tests/fake_inference, started by the fixture, which exports QUARRY_TEST_INFERENCE_URL):
 * batching as the server records it, retries after 429 (with Retry-After) and 500, giving up,
 * a stalled server, a garbled answer, a dimension mismatch, a server that is not there, and a
 * zero vector, which the vector index leaves out.
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
