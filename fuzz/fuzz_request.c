/*
 * Fuzzes the HTTP API's request handling that sees client bytes before any route code: the JSON
 * body checks (UTF-8, nesting depth, duplicates), the search, ask and chat request parsers, the
 * multipart/form-data parser and URL decoding (api/request.c, api/multipart.c). The first byte
 * picks the parser. Invariants: a parse that succeeds yields checked values (k in range, a
 * non-empty query, valid UTF-8 text for retrieval, only user and assistant turns in the history),
 * multipart parts lie inside the body, and decoded URLs hold no control bytes.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "api/multipart.h"

#define FUZZ_CHECK(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

static void fuzz_json(const char *text, size_t len, int which)
{
    char err[QR_ERR_LEN];
    json_t *body = api_json_parse(text, len, 16, err);
    if (!body)
        return;
    FUZZ_CHECK(json_is_object(body));
    if (which == 0 || which == 1) {
        api_search_req q;
        if (api_parse_search(body, which == 1, 8, &q, err) == QR_OK) {
            FUZZ_CHECK(q.query && *q.query && strlen(q.query) <= API_QUERY_MAX);
            FUZZ_CHECK(q.k >= 1 && q.k <= API_MAX_K);
            FUZZ_CHECK(!q.mode || !strcmp(q.mode, "hybrid") || !strcmp(q.mode, "bm25") ||
                       !strcmp(q.mode, "vector")); /* NULL: the server's default */
            for (size_t i = 0; i < q.ndoc_ids; i++)
                FUZZ_CHECK(q.doc_ids[i] && *q.doc_ids[i]);
            api_search_req_release(&q);
        }
    } else {
        api_chat_req c;
        api_chat_limits lim = {8, 1024};
        if (api_parse_chat(body, &lim, &c, NULL, err) == QR_OK) {
            FUZZ_CHECK(c.question && *c.question);
            FUZZ_CHECK(c.search_query && *c.search_query && strlen(c.search_query) <= API_QUERY_MAX + 1);
            FUZZ_CHECK(qr_utf8_valid(c.search_query, strlen(c.search_query)));
            FUZZ_CHECK(c.k >= 1 && c.k <= API_MAX_K);
            for (size_t i = 0; i < c.nhistory; i++)
                FUZZ_CHECK(c.history[i].content && (c.history[i].role == INFER_ROLE_USER ||
                                                    c.history[i].role == INFER_ROLE_ASSISTANT));
            api_chat_req_release(&c);
        }
    }
    json_decref(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    char err[QR_ERR_LEN];
    switch (data[0] % 5) {
    case 0:
    case 1:
    case 2: fuzz_json(text, len, data[0] % 5); break;
    case 3: {
        /* the first line is the Content-Type header, the rest the body */
        const char *nl = memchr(text, '\n', len);
        if (!nl)
            return 0;
        char *ct = strndup(text, (size_t)(nl - text));
        api_part *parts = NULL;
        size_t n = 0;
        const char *body = nl + 1;
        size_t blen = len - (size_t)(nl - text) - 1;
        if (ct && api_multipart_parse(body, blen, ct, &parts, &n, err) == QR_OK) {
            FUZZ_CHECK(n <= API_PARTS_MAX);
            for (size_t i = 0; i < n; i++) {
                FUZZ_CHECK(parts[i].name);
                FUZZ_CHECK(parts[i].data >= body && parts[i].data + parts[i].len <= body + blen);
            }
            api_parts_free(parts, n);
        }
        free(ct);
        break;
    }
    case 4: {
        char *d = api_url_decode(text, len, data[0] & 8);
        if (d) {
            size_t n = strlen(d);
            FUZZ_CHECK(n <= len && qr_utf8_valid(d, n));
            for (size_t i = 0; i < n; i++)
                FUZZ_CHECK((unsigned char)d[i] >= 0x20 && d[i] != 0x7f);
            free(d);
        }
        break;
    }
    }
    return 0;
}
