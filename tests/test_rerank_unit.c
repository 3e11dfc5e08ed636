/*
 * The reranker's reply parser on its own, fed what a broken or hostile service could send: both
 * wire shapes (Cohere's {"results":[{index, relevance_score}]} and TEI's [{index, score}]), wrong
 * types, NaN and overflowing numbers, repeated, missing, negative and out-of-range indexes,
 * arrays far longer than the request, duplicate keys. Every refusal is QR_EIO naming the fault;
 * only a reply that scores each passage sent exactly once is read. Also the configuration checks
 * of infer_reranker_new.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference/inference_int.h"
#include "tests/harness.h"

static qr_status parse(infer_rerank_shape shape, const char *body, size_t n, double *scores, char *err)
{
    return infer_rerank_parse(shape, body, strlen(body), n, scores, err);
}

TEST(cohere_reply_is_read_by_index)
{
    double s[3] = {0};
    char err[QR_ERR_LEN];
    CHECK_INT(
        parse(INFER_RERANK_COHERE,
              "{\"id\":\"x\",\"results\":[{\"index\":2,\"relevance_score\":0.9},{\"index\":0,"
              "\"relevance_score\":0.5,\"document\":{\"text\":\"a\"}},{\"index\":1,\"relevance_score\":-3}],"
              "\"meta\":{}}",
              3, s, err),
        QR_OK);
    CHECK(s[0] == 0.5 && s[1] == -3 && s[2] == 0.9);
    /* integers are numbers too */
    CHECK_INT(parse(INFER_RERANK_COHERE, "{\"results\":[{\"index\":0,\"relevance_score\":1}]}", 1, s, err),
              QR_OK);
    CHECK(s[0] == 1);
}

TEST(tei_reply_is_read_by_index)
{
    double s[2] = {0};
    char err[QR_ERR_LEN];
    CHECK_INT(
        parse(INFER_RERANK_TEI, "[{\"index\":1,\"score\":0.25},{\"index\":0,\"score\":0.75}]", 2, s, err),
        QR_OK);
    CHECK(s[0] == 0.75 && s[1] == 0.25);
    /* the other shape's body is refused by each */
    CHECK_INT(parse(INFER_RERANK_TEI, "{\"results\":[{\"index\":0,\"score\":1}]}", 1, s, err), QR_EIO);
    CHECK_INT(parse(INFER_RERANK_COHERE, "[{\"index\":0,\"relevance_score\":1}]", 1, s, err), QR_EIO);
    CHECK_INT(parse(INFER_RERANK_TEI, "[{\"index\":0,\"relevance_score\":1}]", 1, s, err), QR_EIO);
}

TEST(hostile_replies_are_refused)
{
    static const struct {
        infer_rerank_shape shape;
        const char *body;
        const char *says; /* part of the message */
    } cases[] = {
        {INFER_RERANK_TEI, "", "malformed"},
        {INFER_RERANK_TEI, "[{\"index\":0,\"score\":0.5}", "malformed"}, /* cut short */
        {INFER_RERANK_TEI, "null", "malformed"},
        {INFER_RERANK_TEI, "{}", "not a list"},
        {INFER_RERANK_COHERE, "{\"results\":{}}", "results"},
        {INFER_RERANK_COHERE, "{\"results\":null}", "results"},
        {INFER_RERANK_TEI, "[[0,0.5],[1,0.2]]", "not an object"},
        {INFER_RERANK_TEI, "[{\"index\":\"0\",\"score\":0.5},{\"index\":1,\"score\":0.2}]", "integer index"},
        {INFER_RERANK_TEI, "[{\"index\":0.0,\"score\":0.5},{\"index\":1,\"score\":0.2}]", "integer index"},
        {INFER_RERANK_TEI, "[{\"score\":0.5},{\"index\":1,\"score\":0.2}]", "integer index"},
        {INFER_RERANK_TEI, "[{\"index\":0,\"score\":\"0.5\"},{\"index\":1,\"score\":0.2}]", "numeric score"},
        {INFER_RERANK_TEI, "[{\"index\":0,\"score\":null},{\"index\":1,\"score\":0.2}]", "numeric score"},
        {INFER_RERANK_TEI, "[{\"index\":0,\"score\":true},{\"index\":1,\"score\":0.2}]", "numeric score"},
        {INFER_RERANK_TEI, "[{\"index\":0,\"score\":NaN},{\"index\":1,\"score\":0.2}]", "malformed"},
        {INFER_RERANK_TEI, "[{\"index\":0,\"score\":Infinity},{\"index\":1,\"score\":0.2}]", "malformed"},
        {INFER_RERANK_TEI, "[{\"index\":0,\"score\":1e999},{\"index\":1,\"score\":0.2}]", "malformed"},
        {INFER_RERANK_TEI, "[{\"index\":2,\"score\":0.5},{\"index\":1,\"score\":0.2}]", "outside 0..1"},
        {INFER_RERANK_TEI, "[{\"index\":-1,\"score\":0.5},{\"index\":1,\"score\":0.2}]", "outside 0..1"},
        {INFER_RERANK_TEI, "[{\"index\":9223372036854775807,\"score\":0.5},{\"index\":1,\"score\":0.2}]",
         "outside 0..1"},
        {INFER_RERANK_TEI, "[{\"index\":1,\"score\":0.5},{\"index\":1,\"score\":0.2}]", "twice"},
        {INFER_RERANK_TEI, "[{\"index\":0,\"score\":0.5}]", "1 scores for 2 passages"},
        {INFER_RERANK_TEI, "[]", "0 scores for 2 passages"},
        {INFER_RERANK_TEI,
         "[{\"index\":0,\"score\":0.5},{\"index\":1,\"score\":0.2},{\"index\":1,\"score\":0.2}]",
         "3 scores for 2 passages"},
        {INFER_RERANK_TEI, "[{\"index\":0,\"score\":0.5,\"score\":0.9},{\"index\":1,\"score\":0.2}]",
         "malformed"}, /* a duplicate key: which score did it mean? */
        {INFER_RERANK_COHERE, "{\"results\":[{\"index\":0,\"relevance_score\":0.5},{\"index\":1}]}",
         "numeric relevance_score"},
    };
    char err[QR_ERR_LEN];
    double s[2];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        qr_status st = parse(cases[i].shape, cases[i].body, 2, s, err);
        CHECK_MSG(st == QR_EIO, "case %zu (%s): status %d", i, cases[i].body, (int)st);
        CHECK_MSG(strstr(err, cases[i].says), "case %zu: '%s' does not say '%s'", i, err, cases[i].says);
    }
}

TEST(huge_arrays_are_refused_without_reading_them)
{
    /* 200,000 entries answering a request of 3 */
    size_t n = 200000;
    qr_buf b;
    qr_buf_init(&b, 64u << 20);
    CHECK_INT(qr_buf_putc(&b, '['), QR_OK);
    for (size_t i = 0; i < n; i++)
        CHECK_INT(qr_buf_printf(&b, "%s{\"index\":%zu,\"score\":0.1}", i ? "," : "", i % 3), QR_OK);
    CHECK_INT(qr_buf_putc(&b, ']'), QR_OK);
    double s[3];
    char err[QR_ERR_LEN];
    CHECK_INT(infer_rerank_parse(INFER_RERANK_TEI, qr_buf_str(&b), qr_buf_len(&b), 3, s, err), QR_EIO);
    CHECK_MSG(strstr(err, "200000 scores for 3 passages"), "%s", err);
    /* deep nesting is jansson's to refuse */
    qr_buf_reset(&b);
    for (int i = 0; i < 100000; i++)
        qr_buf_putc(&b, '[');
    CHECK_INT(infer_rerank_parse(INFER_RERANK_TEI, qr_buf_str(&b), qr_buf_len(&b), 3, s, err), QR_EIO);
    qr_buf_release(&b);
}

TEST(bad_arguments_are_einval)
{
    double s[1];
    char err[QR_ERR_LEN];
    CHECK_INT(infer_rerank_parse(INFER_RERANK_NONE, "[]", 2, 1, s, err), QR_EINVAL);
    CHECK_INT(infer_rerank_parse(INFER_RERANK_TEI, "[]", 2, 0, s, err), QR_EINVAL);
    CHECK_INT(infer_rerank_parse(INFER_RERANK_TEI, NULL, 0, 1, s, err), QR_EINVAL);
}

static qr_config *config_with(const char *const *kv)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    for (size_t i = 0; cfg && kv[i]; i += 2)
        if (qr_config_set(cfg, kv[i], kv[i + 1], QR_CFG_SRC_CLI, err)) {
            fprintf(stderr, "%s: %s\n", kv[i], err);
            qr_config_free(cfg);
            return NULL;
        }
    return cfg;
}

TEST(reranker_configuration)
{
    char err[QR_ERR_LEN];
    infer_reranker *rr = (infer_reranker *)1;
    qr_config *cfg = config_with((const char *const[]){NULL});
    CHECK(cfg);
    CHECK_INT(infer_reranker_new(cfg, &rr, err), QR_OK);
    CHECK(rr == NULL); /* none */
    qr_config_free(cfg);

    cfg = config_with((const char *const[]){"rerank.backend", "tei", NULL});
    CHECK_INT(infer_reranker_new(cfg, &rr, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "rerank.base_url"), "%s", err);
    qr_config_free(cfg);

    cfg = config_with(
        (const char *const[]){"rerank.backend", "cohere", "rerank.base_url", "http://127.0.0.1:9/v1", NULL});
    CHECK_INT(infer_reranker_new(cfg, &rr, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "rerank.model"), "%s", err);
    qr_config_free(cfg);

    cfg = config_with((const char *const[]){"rerank.backend", "cohere", "rerank.base_url",
                                            "http://127.0.0.1:9/v1", "rerank.model", "rerank-v3.5",
                                            "rerank.candidates", "20", NULL});
    CHECK_INT(infer_reranker_new(cfg, &rr, err), QR_OK);
    CHECK(rr);
    CHECK_STR(infer_reranker_model(rr), "rerank-v3.5");
    CHECK_STR(infer_reranker_backend(rr), "cohere");
    CHECK_INT(infer_reranker_candidates(rr), 20);
    infer_reranker_free(rr);
    qr_config_free(cfg);

    /* a value outside the key's choices never reaches the client */
    cfg = qr_config_new();
    CHECK(qr_config_set(cfg, "rerank.backend", "jina", QR_CFG_SRC_CLI, err) != QR_OK);
    qr_config_free(cfg);
    CHECK_STR(infer_rerank_failure_name(INFER_RERANK_TIMEOUT), "timeout");
    CHECK_STR(infer_rerank_failure_name(INFER_RERANK_BREAKER_OPEN), "breaker_open");
    CHECK_STR(infer_rerank_failure_name(INFER_RERANK_MALFORMED), "malformed_reply");
}
