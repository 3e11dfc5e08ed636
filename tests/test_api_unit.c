/*
 * Unit tests of the API's pure parts, without a server: path matching and decoding, the JSON
 * depth check, request parsing for search and chat, multipart parsing, base64, the OpenAPI
 * document's shape, and access and audit log lines that stay one whole JSON record when capped.
 */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    CHECK(q.mode == NULL); /* the server's default */
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

/* The OpenAPI document for a configuration made of "key", "value" pairs (NULL-ended), parsed;
 * NULL (and the reason in err) when the document cannot be built. */
static json_t *openapi_for(char *err, ...)
{
    qr_config *cfg = qr_config_new();
    va_list ap;
    va_start(ap, err);
    const char *key;
    qr_status st = cfg ? QR_OK : QR_ENOMEM;
    while (!st && (key = va_arg(ap, const char *)))
        st = qr_config_set(cfg, key, va_arg(ap, const char *), QR_CFG_SRC_CLI, err);
    va_end(ap);
    char *text = NULL;
    if (!st)
        st = api_openapi_json(cfg, &text, err);
    qr_config_free(cfg);
    json_t *spec = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    return spec;
}

/* Every "$ref" under v points at a component that exists; no keyword of OpenAPI 3.1 (JSON Schema
 * 2020-12) that 3.0 importers reject. */
static void check_refs_and_keywords(json_t *spec, json_t *v, const char *where)
{
    const char *key;
    json_t *child;
    size_t i;
    if (json_is_array(v)) {
        json_array_foreach(v, i, child)
        {
            check_refs_and_keywords(spec, child, where);
        }
        return;
    }
    if (!json_is_object(v))
        return;
    json_object_foreach(v, key, child)
    {
        if (strcmp(key, "$ref") == 0) {
            const char *ref = json_string_value(child);
            CHECK_MSG(ref && strncmp(ref, "#/components/", 13) == 0, "%s: odd $ref", where);
            char kind[32], name[64];
            CHECK_MSG(sscanf(ref + 13, "%31[^/]/%63s", kind, name) == 2, "%s: odd $ref %s", where, ref);
            CHECK_MSG(json_object_get(json_object_get(json_object_get(spec, "components"), kind), name),
                      "%s: dangling $ref %s", where, ref);
        }
        const char *only31[] = {"const", "examples", "contentEncoding", "contentMediaType", "$defs"};
        for (size_t k = 0; k < sizeof(only31) / sizeof(only31[0]); k++)
            CHECK_MSG(strcmp(key, only31[k]) != 0, "%s: '%s' is OpenAPI 3.1 only", where, key);
        if (strcmp(key, "type") == 0)
            CHECK_MSG(json_is_string(child), "%s: a list of types is OpenAPI 3.1 only", where);
        if (strcmp(key, "properties") != 0)
            check_refs_and_keywords(spec, child, key);
        else {
            const char *prop;
            json_t *schema;
            json_object_foreach(child, prop, schema)
            {
                check_refs_and_keywords(spec, schema, prop);
            }
        }
    }
}

static bool lower_camel(const char *s)
{
    if (!s || !(*s >= 'a' && *s <= 'z'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

TEST(openapi_document_is_valid_json)
{
    char err[QR_ERR_LEN] = "";
    json_t *spec = openapi_for(err, NULL);
    CHECK_MSG(spec, "%s", err);
    CHECK_STR(json_string_value(json_object_get(spec, "openapi")), "3.0.3");
    json_t *schemas = json_object_get(json_object_get(spec, "components"), "schemas");
    CHECK(json_object_size(schemas) > 10);
    check_refs_and_keywords(spec, spec, "document");
    /* no server.public_url: a relative server, never an address of this machine */
    CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(spec, "servers"), 0), "url")),
              "/");
    /* the shared error object, in OpenAI's shape */
    json_t *error = json_object_get(json_object_get(schemas, "Error"), "properties");
    json_t *fields = json_object_get(json_object_get(error, "error"), "properties");
    const char *names[] = {"message", "type", "param", "code"};
    for (size_t i = 0; i < 4; i++)
        CHECK_MSG(json_object_get(fields, names[i]), "Error lacks %s", names[i]);
    CHECK_INT(json_array_size(json_object_get(json_object_get(fields, "type"), "enum")), 6);
    /* without oidc.issuer, no OpenID Connect or OAuth scheme */
    json_t *schemes = json_object_get(json_object_get(spec, "components"), "securitySchemes");
    CHECK_INT(json_object_size(schemes), 3);
    CHECK(json_object_get(schemes, "basicAuth") && json_object_get(schemes, "bearerAuth") &&
          json_object_get(schemes, "apiKey"));
    json_decref(spec);
}

/* Every route of the table has its entry in the operation table (else the document, and so the
 * server, cannot be built): a stable lowerCamelCase operationId, unique, a summary short enough
 * for a Teams command title, a description, and every error answer an Error. */
TEST(openapi_operations_are_described)
{
    char err[QR_ERR_LEN] = "";
    json_t *spec = openapi_for(err, NULL);
    CHECK_MSG(spec, "%s", err);
    json_t *paths = json_object_get(spec, "paths");
    size_t nroutes;
    const api_route_info *routes = api_routes(&nroutes);
    char seen[64][48];
    for (size_t i = 0; i < nroutes && i < 64; i++) {
        char lower[16];
        size_t k = 0;
        for (; routes[i].method[k] && k < 15; k++)
            lower[k] = (char)(routes[i].method[k] | 0x20);
        lower[k] = '\0';
        json_t *op = json_object_get(json_object_get(paths, routes[i].pattern), lower);
        CHECK_MSG(op, "%s %s is not in the document", routes[i].method, routes[i].pattern);
        const char *id = json_string_value(json_object_get(op, "operationId"));
        CHECK_MSG(lower_camel(id), "%s %s: operationId '%s' is not lowerCamelCase", routes[i].method,
                  routes[i].pattern, id ? id : "");
        snprintf(seen[i], sizeof(seen[i]), "%s", id);
        for (size_t j = 0; j < i; j++)
            CHECK_MSG(strcmp(seen[j], id) != 0, "operationId %s twice", id);
        const char *summary = json_string_value(json_object_get(op, "summary"));
        const char *description = json_string_value(json_object_get(op, "description"));
        CHECK_MSG(summary && *summary && strlen(summary) <= 32, "%s: summary '%s' (1 to 32 characters)", id,
                  summary ? summary : "");
        CHECK_MSG(description && strlen(description) >= 40, "%s: no real description", id);
        CHECK_MSG(json_is_array(json_object_get(op, "security")), "%s: no security", id);
        const char *code;
        json_t *resp;
        size_t errors = 0;
        json_object_foreach(json_object_get(op, "responses"), code, resp)
        {
            if (code[0] < '4')
                continue;
            errors++;
            const char *ref = json_string_value(json_object_get(resp, "$ref"));
            CHECK_MSG(ref && strncmp(ref, "#/components/responses/", 23) == 0, "%s: %s is no shared error",
                      id, code);
            json_t *shared =
                json_object_get(json_object_get(json_object_get(spec, "components"), "responses"), ref + 23);
            json_t *schema = json_object_get(
                json_object_get(json_object_get(shared, "content"), "application/json"), "schema");
            CHECK_STR(json_string_value(json_object_get(schema, "$ref")), "#/components/schemas/Error");
        }
        CHECK_MSG(json_object_get(json_object_get(op, "responses"), "500"), "%s: no 500", id);
        /* the probes and this document need no credentials and take no input */
        if (strcmp(routes[i].pattern, "/healthz") != 0 && strcmp(routes[i].pattern, "/readyz") != 0 &&
            strcmp(routes[i].pattern, "/openapi.json") != 0)
            CHECK_MSG(errors >= 3, "%s: only %zu error answers", id, errors);
    }
    /* the names clients and plugins call them by: renaming one breaks them */
    const char *expected[][3] = {
        {"POST", "/v1/search", "searchKnowledgeBase"},
        {"POST", "/v1/ask", "askQuestion"},
        {"POST", "/v1/chat/completions", "createChatCompletion"},
        {"GET", "/v1/models", "listModels"},
        {"GET", "/v1/me", "getMe"},
        {"POST", "/v1/auth/token", "createToken"},
        {"GET", "/v1/documents", "listDocuments"},
        {"GET", "/v1/documents/{id}", "getDocument"},
        {"PUT", "/v1/documents/{id}", "putDocument"},
        {"DELETE", "/v1/documents/{id}", "deleteDocument"},
        {"PATCH", "/v1/documents/{id}/acl", "setDocumentAcl"},
        {"GET", "/v1/jobs/{id}", "getJob"},
        {"GET", "/v1/jobs", "listJobs"},
        {"POST", "/v1/index/rebuild", "rebuildIndex"},
        {"GET", "/healthz", "getHealth"},
        {"GET", "/readyz", "getReadiness"},
        {"GET", "/v1/status", "getStatus"},
        {"GET", "/metrics", "getMetrics"},
    };
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        char lower[16];
        size_t k = 0;
        for (; expected[i][0][k]; k++)
            lower[k] = (char)(expected[i][0][k] | 0x20);
        lower[k] = '\0';
        json_t *op = json_object_get(json_object_get(paths, expected[i][1]), lower);
        CHECK_STR(json_string_value(json_object_get(op, "operationId")), expected[i][2]);
    }
    /* health and this document need no credentials; the rest need them */
    CHECK_INT(json_array_size(
                  json_object_get(json_object_get(json_object_get(paths, "/healthz"), "get"), "security")),
              0);
    CHECK_INT(json_array_size(json_object_get(json_object_get(json_object_get(paths, "/openapi.json"), "get"),
                                              "security")),
              0);
    CHECK_INT(json_array_size(
                  json_object_get(json_object_get(json_object_get(paths, "/v1/search"), "post"), "security")),
              3);
    json_decref(spec);
}

TEST(openapi_servers_and_schemes_follow_the_configuration)
{
    char err[QR_ERR_LEN] = "";
    json_t *spec = openapi_for(
        err, "server.public_url", "https://quarry.example.com/api/", "server.listen", "10.1.2.3:8080",
        "ldap.uri", "ldap://ldap.internal.example:389", "ldap.bind_password", "bind-secret-1234",
        "oidc.issuer", " https://login.example.com/tenant-1/v2.0/, https://login.example.com/tenant-2",
        "oidc.required_scope", "access_as_user", "oidc.authorization_url",
        "https://login.example.com/tenant-1/oauth2/v2.0/authorize", "oidc.token_url",
        "https://login.example.com/tenant-1/oauth2/v2.0/token", NULL);
    CHECK_MSG(spec, "%s", err);
    CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(spec, "servers"), 0), "url")),
              "https://quarry.example.com/api");
    json_t *schemes = json_object_get(json_object_get(spec, "components"), "securitySchemes");
    CHECK_STR(
        json_string_value(json_object_get(json_object_get(schemes, "openIdConnect"), "openIdConnectUrl")),
        "https://login.example.com/tenant-1/v2.0/.well-known/openid-configuration");
    json_t *code =
        json_object_get(json_object_get(json_object_get(schemes, "oauth2"), "flows"), "authorizationCode");
    CHECK_STR(json_string_value(json_object_get(code, "authorizationUrl")),
              "https://login.example.com/tenant-1/oauth2/v2.0/authorize");
    CHECK_STR(json_string_value(json_object_get(code, "tokenUrl")),
              "https://login.example.com/tenant-1/oauth2/v2.0/token");
    CHECK(json_object_get(json_object_get(code, "scopes"), "access_as_user"));
    json_t *security = json_object_get(
        json_object_get(json_object_get(json_object_get(spec, "paths"), "/v1/search"), "post"), "security");
    CHECK_INT(json_array_size(security), 5);
    CHECK_STR(json_string_value(json_array_get(json_object_get(json_array_get(security, 4), "oauth2"), 0)),
              "access_as_user");
    /* public: nothing of the listen address, the directory or a secret */
    char *text = json_dumps(spec, 0);
    CHECK(text && !strstr(text, "10.1.2.3") && !strstr(text, "ldap.internal") &&
          !strstr(text, "bind-secret"));
    free(text);
    json_decref(spec);

    /* the full scope names an OAuth client asks for, when they differ from the token's */
    spec = openapi_for(err, "oidc.issuer", "https://login.example.com/t", "oidc.required_scope",
                       "access_as_user", "oidc.oauth_scopes", "api://quarry/access_as_user offline_access",
                       NULL);
    CHECK_MSG(spec, "%s", err);
    schemes = json_object_get(json_object_get(spec, "components"), "securitySchemes");
    CHECK(json_object_get(schemes, "openIdConnect") && !json_object_get(schemes, "oauth2"));
    security = json_object_get(
        json_object_get(json_object_get(json_object_get(spec, "paths"), "/v1/ask"), "post"), "security");
    json_t *scopes = json_object_get(json_array_get(security, 3), "openIdConnect");
    CHECK_INT(json_array_size(scopes), 2);
    CHECK_STR(json_string_value(json_array_get(scopes, 0)), "api://quarry/access_as_user");
    json_decref(spec);

    /* half an OAuth configuration, or one without an issuer, is refused */
    CHECK(!openapi_for(err, "oidc.issuer", "https://login.example.com/t", "oidc.authorization_url",
                       "https://login.example.com/t/authorize", NULL));
    CHECK_MSG(strstr(err, "oidc.token_url"), "%s", err);
    CHECK(!openapi_for(err, "oidc.authorization_url", "https://login.example.com/t/authorize",
                       "oidc.token_url", "https://login.example.com/t/token", NULL));
    /* URLs that the public document must not carry are refused where they are set */
    const char *bad[] = {
        "ftp://quarry.example.com",        "https://user:pw@quarry.example.com", "https://",
        "https://quarry.example.com/?x=1", "https://quarry.example.com/#top",    "quarry.example.com"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_MSG(!openapi_for(err, "server.public_url", bad[i], NULL), "accepted %s", bad[i]);
        CHECK_MSG(strstr(err, "server.public_url"), "%s", err);
    }
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
