/*
 * Unit tests of the API's pure parts, without a server: path matching and decoding, the JSON
 * depth check, request parsing for search and chat, multipart parsing, base64, and the OpenAPI
 * document's shape.
 */
#include <jansson.h>
#include <stdlib.h>

#include "api/api_int.h"
#include "api/multipart.h"
#include "tests/harness.h"

TEST(route_matching)
{
    size_t i;
    char *param = NULL;
    CHECK_INT(api_route_find("GET", "/healthz", &i, &param), API_MATCH_OK);
    CHECK_STR(api_route_table[i].pattern, "/healthz");
    CHECK(param == NULL);
    CHECK_INT(api_route_find("POST", "/healthz", &i, &param), API_MATCH_BAD_METHOD);
    CHECK_INT(api_route_find("GET", "/healthz/", &i, &param), API_MATCH_NOT_FOUND);
    CHECK_INT(api_route_find("GET", "/v1/documents/a%2Fb%20c", &i, &param), API_MATCH_OK);
    CHECK_STR(api_route_table[i].pattern, "/v1/documents/{id}");
    CHECK_STR(param, "a/b c");
    free(param);
    CHECK_INT(api_route_find("GET", "/v1/documents/dir/file.md", &i, &param), API_MATCH_OK);
    CHECK_STR(param, "dir/file.md");
    free(param);
    CHECK_INT(api_route_find("PATCH", "/v1/documents/dir/file.md/acl", &i, &param), API_MATCH_OK);
    CHECK_STR(api_route_table[i].pattern, "/v1/documents/{id}/acl");
    CHECK_STR(param, "dir/file.md");
    free(param);
    CHECK_INT(api_route_find("GET", "/v1/documents/", &i, &param), API_MATCH_NOT_FOUND);
    CHECK_INT(api_route_find("GET", "/v1/documents/%00", &i, &param), API_MATCH_BAD_ESCAPE);
    CHECK_INT(api_route_find("GET", "/v1/documents/%1", &i, &param), API_MATCH_BAD_ESCAPE);
    CHECK_INT(api_route_find("GET", "/v1/documents/%c3%28", &i, &param), API_MATCH_BAD_ESCAPE);
    CHECK_INT(api_route_find("GET", "/v1/documents/caf%C3%A9", &i, &param), API_MATCH_OK);
    CHECK_STR(param, "caf\xc3\xa9");
    free(param);
}

TEST(url_decode)
{
    char *s = api_url_decode("a+b%20c", 7, true);
    CHECK_STR(s, "a b c");
    free(s);
    s = api_url_decode("a+b", 3, false);
    CHECK_STR(s, "a+b");
    free(s);
    CHECK(api_url_decode("%", 1, false) == NULL);
    CHECK(api_url_decode("%4", 2, false) == NULL);
    CHECK(api_url_decode("%7f", 3, false) == NULL);
    s = api_url_decode("%41", 3, false);
    CHECK_STR(s, "A");
    free(s);
}

TEST(json_depth_and_parse)
{
    CHECK(api_json_depth_ok("{\"a\":[1,{\"b\":2}]}", 17, 3));
    CHECK(!api_json_depth_ok("{\"a\":[1,{\"b\":2}]}", 17, 2));
    /* brackets inside strings (escaped quotes too) do not count */
    const char *s = "{\"a\":\"[[[[\\\"[[[[\"}";
    CHECK(api_json_depth_ok(s, strlen(s), 1));
    char err[QR_ERR_LEN];
    json_t *v = api_json_parse("{\"a\":1}", 7, 4, err);
    CHECK(v);
    json_decref(v);
    CHECK(!api_json_parse("[]", 2, 4, err));
    CHECK(!api_json_parse("{\"a\":1,\"a\":2}", 13, 4, err));
    CHECK(strstr(err, "duplicate") || strstr(err, "malformed"));
    CHECK(!api_json_parse("{\"a\":\"\xc0\xaf\"}", 10, 4, err));
}

TEST(search_request_parsing)
{
    char err[QR_ERR_LEN];
    api_search_req q;
    json_t *b = json_loads(
        "{\"query\":\"vpn setup\",\"k\":5,\"mode\":\"bm25\",\"filters\":{\"doc_ids\":[\"a\",\"b\"],"
        "\"uri_prefix\":\"file:///kb\",\"content_type\":\"text/markdown\",\"updated_after\":"
        "\"2024-05-01\"},\"max_per_doc\":2,\"cursor\":\"abc\"}",
        0, NULL);
    CHECK_OK(api_parse_search(b, false, 10, &q, err), err);
    CHECK_STR(q.query, "vpn setup");
    CHECK_INT(q.k, 5);
    CHECK_STR(q.mode, "bm25");
    CHECK_INT(q.ndoc_ids, 2);
    CHECK_STR(q.doc_ids[1], "b");
    CHECK_STR(q.uri_prefix, "file:///kb");
    CHECK_INT(q.updated_after_ms, 1714521600000LL);
    CHECK_INT(q.max_per_doc, 2);
    CHECK_STR(q.cursor, "abc");
    api_search_req_release(&q);
    json_decref(b);

    b = json_loads("{\"question\":\"why?\"}", 0, NULL);
    CHECK_OK(api_parse_search(b, true, 8, &q, err), err);
    CHECK_INT(q.k, 8);
    CHECK_STR(q.mode, "hybrid");
    api_search_req_release(&q);
    json_decref(b);

    const char *bad[] = {
        "{}",
        "{\"query\":\"\"}",
        "{\"query\":\"x\",\"k\":101}",
        "{\"query\":\"x\",\"k\":1.5}",
        "{\"query\":\"x\",\"filters\":[]}",
        "{\"query\":\"x\",\"filters\":{\"doc_ids\":[1]}}",
        "{\"query\":\"x\",\"filters\":{\"doc_ids\":[\"\"]}}",
        "{\"query\":\"x\",\"filters\":{\"nope\":1}}",
        "{\"query\":\"x\",\"filters\":{\"updated_after\":\"2024-13-99\"}}",
        "{\"query\":\"x\",\"mode\":\"fuzzy\"}",
        "{\"query\":\"a\\u0000b\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b = json_loads(bad[i], JSON_ALLOW_NUL, NULL);
        CHECK_MSG(b, "test input %zu", i);
        CHECK_MSG(api_parse_search(b, false, 10, &q, err) != QR_OK, "accepted %s", bad[i]);
        json_decref(b);
    }
}

TEST(chat_request_parsing)
{
    char err[QR_ERR_LEN];
    api_chat_req c;
    json_t *b = json_loads(
        "{\"model\":\"gpt-x\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":50,"
        "\"temperature\":0.5,\"messages\":[{\"role\":\"system\",\"content\":\"ignore "
        "me\"},{\"role\":\"user\","
        "\"content\":\"What is the travel policy for long "
        "flights?\"},{\"role\":\"assistant\",\"content\":null},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"and\"},{\"type\":\"text\",\"text\":"
        "\"contractors?\"}]}]}",
        0, NULL);
    CHECK_OK(api_parse_chat(b, 8, &c, err), err);
    CHECK(c.stream && c.include_usage);
    CHECK_STR(c.model, "gpt-x");
    CHECK_INT(c.max_tokens, 50);
    CHECK(c.temperature == 0.5);
    CHECK_STR(c.question, "and\ncontractors?");
    CHECK_INT(c.nhistory, 2);
    CHECK_INT(c.history[0].role, INFER_ROLE_USER);
    CHECK_INT(c.history[1].role, INFER_ROLE_ASSISTANT);
    /* a short follow-up is searched together with the turn before it */
    CHECK(strstr(c.search_query, "travel policy") && strstr(c.search_query, "contractors"));
    api_chat_req_release(&c);
    json_decref(b);

    b = json_loads(
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Explain the expense reimbursement policy in "
        "detail please\"}]}",
        0, NULL);
    CHECK_OK(api_parse_chat(b, 8, &c, err), err);
    CHECK(!c.stream && c.temperature < 0 && c.max_tokens == 0 && c.k == 8);
    CHECK_STR(c.search_query, c.question);
    api_chat_req_release(&c);
    json_decref(b);
}

TEST(multipart_parsing)
{
    const char *body =
        "preamble\r\n--b0\r\nContent-Disposition: form-data; name=\"acl\"\r\n\r\ngroup:a\r\n"
        "--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x \\\"y\\\".md\"\r\n"
        "Content-Type: text/markdown\r\n\r\n# T\r\n\r\nbody--b0 not a boundary\r\n--b0--\r\n";
    api_part *parts = NULL;
    size_t n = 0;
    char err[QR_ERR_LEN];
    CHECK_OK(api_multipart_parse(body, strlen(body), "multipart/form-data; boundary=\"b0\"", &parts, &n, err),
             err);
    CHECK_INT(n, 2);
    CHECK_STR(parts[0].name, "acl");
    CHECK(parts[0].filename == NULL);
    CHECK_INT(parts[0].len, 7);
    CHECK_STR(parts[1].filename, "x \"y\".md");
    CHECK_STR(parts[1].content_type, "text/markdown");
    CHECK_INT(parts[1].len, strlen("# T\r\n\r\nbody--b0 not a boundary"));
    api_parts_free(parts, n);
    const char *bad[][2] = {
        {"--b0\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end",
         "multipart/form-data; boundary=b0"},
        {"--b0\r\n\r\nno name\r\n--b0--", "multipart/form-data; boundary=b0"},
        {"--b0\r\nX: y\r\n\r\nx\r\n--b0--", "multipart/form-data; boundary=b0"},
        {"nothing", "multipart/form-data"},
        {"nothing", "multipart/form-data; boundary=b0"},
    };
    for (size_t i = 0; i < 5; i++)
        CHECK_MSG(api_multipart_parse(bad[i][0], strlen(bad[i][0]), bad[i][1], &parts, &n, err) != QR_OK,
                  "accepted case %zu", i);
}

TEST(base64)
{
    size_t n;
    unsigned char *s = api_base64_decode("YWxpY2U6cEBzcywgdzByZA==", 24, &n);
    CHECK(s);
    CHECK_INT(n, 16);
    CHECK(memcmp(s, "alice:p@ss, w0rd", 16) == 0);
    free(s);
    CHECK(api_base64_decode("a", 1, &n) == NULL);
    CHECK(api_base64_decode("ab$d", 4, &n) == NULL);
}

TEST(openapi_document_is_valid_json)
{
    char *text = api_openapi_json();
    CHECK(text);
    json_t *spec = json_loads(text, 0, NULL);
    free(text);
    CHECK(spec);
    CHECK_STR(json_string_value(json_object_get(spec, "openapi")), "3.1.0");
    json_t *schemas = json_object_get(json_object_get(spec, "components"), "schemas");
    CHECK(json_object_size(schemas) > 10);
    /* every $ref points at a schema that exists */
    char *dump = json_dumps(spec, 0);
    for (const char *p = dump; (p = strstr(p, "#/components/schemas/"));) {
        p += strlen("#/components/schemas/");
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(p, "\""), p);
        CHECK_MSG(json_object_get(schemas, name), "dangling $ref %s", name);
    }
    free(dump);
    json_decref(spec);
}
