/*
 * Unit tests of the API's pure parts, without a server: path matching and decoding, the JSON
 * depth check, request parsing for search and chat, multipart parsing, base64, the OpenAPI
 * document's shape, and access and audit log lines that stay one whole JSON record when capped.
 */
#include <jansson.h>
#include <math.h>
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

TEST(route_methods)
{
    char m[128];
    CHECK_INT(api_route_methods("/v1/chat/completions", m, sizeof(m)), API_MATCH_OK);
    CHECK_STR(m, "POST");
    CHECK_INT(api_route_methods("/v1/documents", m, sizeof(m)), API_MATCH_OK);
    CHECK_STR(m, "POST, GET");
    CHECK_INT(api_route_methods("/v1/documents/a%2Fb", m, sizeof(m)), API_MATCH_OK);
    CHECK_STR(m, "GET, PUT, DELETE");
    /* {param} is greedy: the ACL path is also a document id, as the router matches it */
    CHECK_INT(api_route_methods("/v1/documents/a/acl", m, sizeof(m)), API_MATCH_OK);
    CHECK_STR(m, "PATCH, GET, PUT, DELETE");
    CHECK_INT(api_route_methods("/nowhere", m, sizeof(m)), API_MATCH_NOT_FOUND);
    CHECK_STR(m, "");
    CHECK_INT(api_route_methods("/v1/documents/%00", m, sizeof(m)), API_MATCH_BAD_ESCAPE);
}

TEST(cors_origin_list)
{
    char err[QR_ERR_LEN];
    api_cors *c = NULL;
    CHECK_OK(api_cors_new("", &c, err), err);
    CHECK_INT(api_cors_count(c), 0);
    CHECK(!api_cors_allows(c, "https://a.example"));
    api_cors_free(c);
    /* a JSON list in the file arrives comma-joined; spaces around entries are fine */
    CHECK_OK(api_cors_new(" https://Addin.Example.com ,http://localhost:3000,https://b.example:443,"
                          "http://[::1]:8080",
                          &c, err),
             err);
    CHECK_INT(api_cors_count(c), 4);
    CHECK(api_cors_allows(c, "https://addin.example.com"));
    CHECK(api_cors_allows(c, "HTTPS://ADDIN.EXAMPLE.COM"));
    CHECK(api_cors_allows(c, "http://localhost:3000"));
    CHECK(api_cors_allows(c, "https://b.example")); /* the default port is never sent */
    CHECK(api_cors_allows(c, "http://[::1]:8080"));
    CHECK(!api_cors_allows(c, "http://addin.example.com"));       /* another scheme */
    CHECK(!api_cors_allows(c, "https://addin.example.com:8443")); /* another port */
    CHECK(!api_cors_allows(c, "http://localhost:3001"));
    CHECK(!api_cors_allows(c, "https://evil-addin.example.com"));
    CHECK(!api_cors_allows(c, "https://addin.example.com.evil.example"));
    CHECK(!api_cors_allows(c, "https://addin.example.com/"));
    CHECK(!api_cors_allows(c, "null"));
    CHECK(!api_cors_allows(c, ""));
    CHECK(!api_cors_allows(c, NULL));
    api_cors_free(c);

    struct {
        const char *list, *why;
    } bad[] = {
        {"*", "wildcard"},
        {"https://a.example,*", "wildcard"},
        {"https://*.example.com", "wildcard"},
        {"null", "'null'"},
        {"https://a.example/path", "no path"},
        {"https://a.example/", "trailing slash"},
        {"https://user@a.example", "user name"},
        {"https://a.example?x=1", "query"},
        {"https://a.example#top", "fragment"},
        {"https://a .example", "whitespace"},
        {"ftp://a.example", "http or https"},
        {"a.example", "http or https"},
        {"https://", "http or https"},
        {"https://a.example:0", "port"},
        {"https://a.example:65536", "port"},
        {"https://a.example:x", "port"},
        {"https://a..example", "empty label"},
        {"https://a.example.", "ends with"},
        {"https://a.example,,https://b.example", "empty entry"},
        {"https://a.example,", "empty entry"},
        {"https://caf\xc3\xa9.example", "xn--"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = (api_cors *)1;
        err[0] = '\0';
        CHECK_MSG(api_cors_new(bad[i].list, &c, err) == QR_EINVAL, "'%s' accepted", bad[i].list);
        CHECK(c == NULL);
        CHECK_MSG(strstr(err, "server.cors_origins") && strstr(err, bad[i].why), "'%s': %s", bad[i].list,
                  err);
    }
}

TEST(cors_request_headers)
{
    char bad[80];
    CHECK(api_cors_headers_ok("authorization, content-type", bad, sizeof(bad)));
    CHECK(api_cors_headers_ok("Authorization,X-Quarry-User,x-api-key,X-REQUEST-ID", bad, sizeof(bad)));
    CHECK(api_cors_headers_ok("", bad, sizeof(bad)));
    CHECK(api_cors_headers_ok(" , authorization", bad, sizeof(bad)));
    CHECK(!api_cors_headers_ok("authorization, x-evil", bad, sizeof(bad)));
    CHECK_STR(bad, "x-evil");
    CHECK(!api_cors_headers_ok("authorizationx", bad, sizeof(bad)));
    CHECK(!api_cors_headers_ok("cookie", bad, sizeof(bad)));
}

TEST(error_types_follow_the_status)
{
    CHECK_STR(api_error_type(400), "invalid_request_error");
    CHECK_STR(api_error_type(405), "invalid_request_error");
    CHECK_STR(api_error_type(409), "invalid_request_error");
    CHECK_STR(api_error_type(413), "invalid_request_error");
    CHECK_STR(api_error_type(415), "invalid_request_error");
    CHECK_STR(api_error_type(401), "authentication_error");
    CHECK_STR(api_error_type(403), "permission_error");
    CHECK_STR(api_error_type(404), "not_found_error");
    CHECK_STR(api_error_type(429), "rate_limit_error");
    CHECK_STR(api_error_type(500), "server_error");
    CHECK_STR(api_error_type(503), "server_error");
    CHECK_STR(api_error_type(504), "server_error");
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
    api_chat_limits lim = {8, 1024};
    json_t *b = json_loads(
        "{\"model\":\"gpt-x\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":50,"
        "\"temperature\":0.5,\"messages\":[{\"role\":\"system\",\"content\":\"ignore "
        "me\"},{\"role\":\"user\","
        "\"content\":\"What is the travel policy for long "
        "flights?\"},{\"role\":\"assistant\",\"content\":null},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"and\"},{\"type\":\"text\",\"text\":"
        "\"contractors?\"}]}]}",
        0, NULL);
    CHECK_OK(api_parse_chat(b, &lim, &c, NULL, err), err);
    CHECK(c.stream && c.include_usage);
    CHECK_STR(c.model, "gpt-x");
    CHECK_INT(c.options.max_tokens, 50);
    CHECK(c.options.temperature == 0.5);
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
    CHECK_OK(api_parse_chat(b, &lim, &c, NULL, err), err);
    CHECK(!c.stream && isnan(c.options.temperature) && c.options.max_tokens == 0 && c.k == 8);
    CHECK_STR(c.search_query, c.question);
    api_chat_req_release(&c);
    json_decref(b);
}

TEST(models_list_parsing)
{
    char err[QR_ERR_LEN];
    static char ids[API_MODELS_MAX][API_MODEL_ID_MAX + 1];
    size_t n = 0;
    CHECK_OK(api_models_parse("quarry", ids, &n, err), err);
    CHECK_INT(n, 1);
    CHECK_STR(ids[0], "quarry");
    CHECK_OK(api_models_parse(" quarry , gpt-4o-mini,org/model:7b@v1,", ids, &n, err), err);
    CHECK_INT(n, 3);
    CHECK_STR(ids[1], "gpt-4o-mini");
    CHECK_STR(ids[2], "org/model:7b@v1");
    const char *bad[] = {"", " ", ",", "a,,b", "a b", "a,a", "caf\xc3\xa9", "a\"b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_MSG(api_models_parse(bad[i], ids, &n, err) == QR_EINVAL && n == 0, "accepted '%s'", bad[i]);
        CHECK(strstr(err, "inference.models"));
    }
}

TEST(chat_request_options_and_data_sources)
{
    char err[QR_ERR_LEN];
    api_chat_req c;
    api_refusal why;
    api_chat_limits lim = {8, 500};
    json_t *b = json_loads(
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Explain the expense reimbursement policy in "
        "detail\"}],"
        "\"max_completion_tokens\":40,\"top_p\":0.9,\"stop\":\"END\",\"user\":\"u1\",\"seed\":-3,"
        "\"data_sources\":[{\"type\":\"quarry\",\"parameters\":{\"filter\":{\"doc_ids\":[\"a\",\"b\"],"
        "\"uri_prefix\":\"https://wiki/\"},\"top_n_documents\":3}}]}",
        0, NULL);
    CHECK_OK(api_parse_chat(b, &lim, &c, &why, err), err);
    CHECK_INT(c.options.max_tokens, 40);
    CHECK(c.options.top_p == 0.9 && isnan(c.options.temperature) && isnan(c.options.presence_penalty));
    CHECK_INT(c.options.stop_count, 1);
    CHECK_STR(c.options.stop[0], "END");
    CHECK_STR(c.options.user, "u1");
    CHECK(c.options.has_seed && c.options.seed == -3);
    CHECK_INT(c.k, 3);
    CHECK_INT(c.filters.ndoc_ids, 2);
    CHECK_STR(c.filters.uri_prefix, "https://wiki/");
    CHECK_STR(why.param, "");
    api_chat_req_release(&c);
    json_decref(b);
    /* a refusal names its field and OpenAI's code */
    b = json_loads("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[]}", 0, NULL);
    CHECK_INT(api_parse_chat(b, &lim, &c, &why, err), QR_EINVAL);
    CHECK_STR(why.param, "tools");
    CHECK_STR(why.code, "unsupported_parameter");
    json_decref(b);
    b = json_loads("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":501}", 0, NULL);
    CHECK_INT(api_parse_chat(b, &lim, &c, &why, err), QR_EINVAL);
    CHECK_STR(why.param, "max_tokens");
    CHECK(why.code == NULL && strstr(err, "500"));
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

/* A request as the log formatters see it, without a server. */
static api_req *log_req(const char *path, const char *user)
{
    api_req *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    size_t i;
    char *param = NULL;
    if (api_route_find("GET", "/v1/documents/x", &i, &param) == API_MATCH_OK)
        r->route = &api_route_table[i];
    free(param);
    snprintf(r->method, sizeof(r->method), "GET");
    snprintf(r->request_id, sizeof(r->request_id), "req-1");
    snprintf(r->client, sizeof(r->client), "127.0.0.1");
    snprintf(r->user, sizeof(r->user), "%s", user);
    r->path = strdup(path);
    r->bytes_out = 42;
    return r;
}

static void log_req_free(api_req *r)
{
    if (r)
        free(r->path);
    free(r);
}

/* One line, ending in a newline, that parses as one JSON object (jansson also checks UTF-8). */
static json_t *one_record(const qr_buf *line)
{
    const char *s = qr_buf_str(line);
    size_t n = qr_buf_len(line);
    if (n < 2 || s[n - 1] != '\n' || memchr(s, '\n', n - 1))
        return NULL;
    json_t *j = json_loadb(s, n - 1, 0, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

TEST(access_line_is_whole_json_even_when_capped)
{
    qr_buf line;
    qr_buf_init(&line, API_ACCESS_LINE_MAX);
    api_req *r = log_req("/v1/documents/a%20b", "al\"ice");
    CHECK(r && r->route);
    CHECK_INT(api_access_format(&line, r, 200, 1.5, "2026-01-01T00:00:00.000Z"), QR_OK);
    json_t *j = one_record(&line);
    CHECK_MSG(j, "not one JSON record: %s", qr_buf_str(&line));
    CHECK_STR(json_string_value(json_object_get(j, "path")), "/v1/documents/a%20b");
    CHECK_STR(json_string_value(json_object_get(j, "user")), "al\"ice");
    CHECK_INT(json_integer_value(json_object_get(j, "status")), 200);
    CHECK(json_object_get(j, "truncated") == NULL);
    json_decref(j);
    log_req_free(r);

    /* A path far over the line's cap, of escapes and two-byte characters, the cut falling
     * inside one of them: the line is whole, says it was cut, and keeps the path's start. */
    char *path = malloc(40001);
    CHECK(path);
    path[0] = '/';
    for (size_t i = 1; i < 40000; i += 2)
        memcpy(path + i, i % 7 == 0 ? "\"\x01" : "\xC3\xA9", 2);
    path[40000] = '\0';
    r = log_req(path, "bob");
    CHECK(r);
    CHECK_INT(api_access_format(&line, r, 404, 2.0, "2026-01-01T00:00:00.000Z"), QR_OK);
    CHECK(qr_buf_len(&line) <= API_ACCESS_LINE_MAX);
    j = one_record(&line);
    CHECK_MSG(j, "not one JSON record: %.300s", qr_buf_str(&line));
    CHECK(json_is_true(json_object_get(j, "truncated")));
    CHECK_STR(json_string_value(json_object_get(j, "user")), "bob");
    CHECK_INT(json_integer_value(json_object_get(j, "status")), 404);
    const char *kept = json_string_value(json_object_get(j, "path"));
    CHECK(kept && strncmp(kept, path, 64) == 0);
    json_decref(j);

    /* The cap reached at every point of the path's end, where an escape that does not fit
     * leaves room for a shorter field after it: every line is still one whole record. */
    for (size_t pad = API_ACCESS_LINE_MAX - 200; pad < API_ACCESS_LINE_MAX; pad++) {
        memset(path, 'a', pad);
        memset(path + pad, '\x01', 16);
        path[pad + 16] = '\0';
        log_req_free(r);
        r = log_req(path, "-");
        CHECK(r);
        CHECK_INT(api_access_format(&line, r, 200, 0.5, "2026-01-01T00:00:00.000Z"), QR_OK);
        j = one_record(&line);
        CHECK_MSG(j, "not one JSON record at pad %zu: ...%s", pad,
                  qr_buf_str(&line) + qr_buf_len(&line) - 40);
        json_decref(j);
    }

    /* a line too small for even the fixed fields: an error, never a part of a record */
    qr_buf small;
    qr_buf_init(&small, 64);
    CHECK(api_access_format(&small, r, 404, 2.0, "2026-01-01T00:00:00.000Z") != QR_OK);
    CHECK(qr_buf_failed(&small) != QR_OK);
    qr_buf_release(&small);
    log_req_free(r);
    free(path);
    qr_buf_release(&line);
}

TEST(audit_line_is_whole_json_even_when_capped)
{
    enum { N = 400 };
    char *ids[N];
    for (size_t i = 0; i < N; i++) {
        ids[i] = malloc(64);
        CHECK(ids[i]);
        /* quotes and control characters grow when escaped; every id is listed twice */
        snprintf(ids[i], 64, "doc-%zu-\"\x02-%s", i / 2, "padding-padding-padding");
    }
    api_req *r = log_req("/v1/search", "carol");
    CHECK(r);
    qr_buf line;
    qr_buf_init(&line, API_AUDIT_LINE_MAX);
    CHECK_INT(api_audit_format(&line, r, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                               (const char *const *)ids, N, "search", "2026-01-01T00:00:00Z"),
              QR_OK);
    json_t *j = one_record(&line);
    CHECK_MSG(j, "not one JSON record: %.300s", qr_buf_str(&line));
    CHECK_INT(json_array_size(json_object_get(j, "doc_ids")), N / 2);
    CHECK(json_object_get(j, "truncated") == NULL);
    CHECK_INT(strlen(json_string_value(json_object_get(j, "query_hmac"))), 64);
    json_decref(j);
    qr_buf_release(&line);

    /* a cap that holds a few ids: the record keeps those that fit, whole, and says so */
    qr_buf_init(&line, 1024);
    CHECK_INT(api_audit_format(&line, r, NULL, (const char *const *)ids, N, "search", "2026-01-01T00:00:00Z"),
              QR_OK);
    CHECK(qr_buf_len(&line) <= 1024);
    j = one_record(&line);
    CHECK_MSG(j, "not one JSON record: %.300s", qr_buf_str(&line));
    CHECK(json_is_true(json_object_get(j, "truncated")));
    CHECK(json_is_null(json_object_get(j, "query_hmac")));
    json_t *kept = json_object_get(j, "doc_ids");
    CHECK(json_array_size(kept) > 0 && json_array_size(kept) < N / 2);
    for (size_t i = 0; i < json_array_size(kept); i++)
        CHECK_STR(json_string_value(json_array_get(kept, i)), ids[2 * i]);
    json_decref(j);
    qr_buf_release(&line);

    /* too small for the fixed fields: an error, never a part of a record */
    qr_buf_init(&line, 80);
    CHECK(api_audit_format(&line, r, NULL, (const char *const *)ids, N, "search", "2026-01-01T00:00:00Z") !=
          QR_OK);
    qr_buf_release(&line);
    log_req_free(r);
    for (size_t i = 0; i < N; i++)
        free(ids[i]);
}

TEST(put_result_names)
{
    CHECK_STR(api_put_result_name(STORE_ADDED), "added");
    CHECK_STR(api_put_result_name(STORE_UPDATED), "updated");
    CHECK_STR(api_put_result_name(STORE_ACL_UPDATED), "acl_updated");
    CHECK_STR(api_put_result_name(STORE_UNCHANGED), "unchanged");
}
