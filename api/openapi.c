/*
 * The OpenAPI 3.1 description served at /openapi.json. Paths are generated from the route table
 * (so a route cannot exist without appearing here), each with its documentation from the table
 * below; a route the table below does not describe still appears, with a summary saying so, and
 * the tests check both directions against the running server. Schemas are written as JSON text:
 * they are documentation, read by people and client generators, and JSON is the clearest way to
 * write them.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

typedef struct {
    const char *method, *pattern;
    const char *summary;
    const char *request;  /* schema name in components, or NULL */
    const char *response; /* schema name of the success body, or NULL */
    int status;           /* success status */
    const char *extra;    /* more statuses: "202,401,403" */
} route_doc;

static const route_doc docs[] = {
    {"GET", "/healthz", "Liveness: the process answers. No authentication.", NULL, "Health", 200, ""},
    {"GET", "/readyz",
     "Readiness: the store opens, the vector index is loaded and not failing, and LDAP answers.", NULL,
     "Ready", 200, "503"},
    {"GET", "/metrics", "Prometheus metrics (text exposition format 0.0.4). Administrators.", NULL, NULL, 200,
     "403"},
    {"GET", "/openapi.json", "This document.", NULL, NULL, 200, ""},
    {"POST", "/v1/auth/token",
     "Exchange a user name and password (JSON body or HTTP Basic) for a bearer token. No other "
     "authentication.",
     "TokenRequest", "Token", 200, "400,429,503"},
    {"GET", "/v1/me", "The caller's principal: uid, DN, groups and ACL principals.", NULL, "Principal", 200,
     ""},
    {"GET", "/v1/models", "The model this server answers as (OpenAI-compatible list).", NULL, "ModelList",
     200, ""},
    {"GET", "/v1/models/{id}",
     "One model this server answers as (OpenAI-compatible); 404 model_not_found for others.", NULL, NULL, 200,
     "404"},
    {"POST", "/v1/chat/completions",
     "OpenAI-compatible chat completion grounded in the documents the caller may read, with citations. With "
     "stream=true, server-sent chat.completion.chunk events ending with data: [DONE]; the last chunk before "
     "it "
     "carries the citations.",
     "ChatRequest", "ChatCompletion", 200, "400,413,503"},
    {"POST", "/v1/search", "Knowledge-base search: passages with snippets, scores and citation data.",
     "SearchRequest", "SearchResponse", 200, "400,413,501"},
    {"POST", "/v1/ask", "A grounded answer with citations.", "AskRequest", "AskResponse", 200, "400,501"},
    {"POST", "/v1/documents",
     "Create or replace documents (administrators): JSON with text, JSON with base64 bytes and a content "
     "type, a "
     "{documents:[...]} batch, or a multipart/form-data upload. Several documents, or more bytes than "
     "server.job_threshold_bytes, become a job (202).",
     "DocumentInput", "DocumentWritten", 201, "200,202,400,413,415"},
    {"GET", "/v1/documents", "List documents in id order with cursor pagination (administrators).", NULL,
     "DocumentList", 200, "400"},
    {"PATCH", "/v1/documents/{id}/acl", "Replace a document's ACL (administrators); effective at once.",
     "AclInput", "AclOutput", 200, "400,404"},
    {"GET", "/v1/documents/{id}", "A stored document; ?chunks=true adds its chunks (administrators).", NULL,
     "Document", 200, "404"},
    {"PUT", "/v1/documents/{id}",
     "Create or replace the document with this id (administrators); without 'acl' the stored ACL is kept.",
     "DocumentInput", "DocumentWritten", 200, "201,202,400,413,415"},
    {"DELETE", "/v1/documents/{id}", "Delete a document and all its chunks (administrators).", NULL,
     "Deleted", 200, "404"},
    {"POST", "/v1/index/rebuild", "Rebuild the vector index as a new generation, as a job (administrators).",
     NULL, "JobAccepted", 202, ""},
    {"GET", "/v1/jobs/{id}", "A background job's state and progress (administrators).", NULL, "Job", 200,
     "400,404"},
};

static const char schemas[] =
    "{"
    "\"Error\":{\"type\":\"object\",\"required\":[\"error\"],\"properties\":{\"error\":{\"type\":\"object\","
    "\"required\":[\"message\",\"type\",\"param\",\"code\"],\"properties\":{\"message\":{\"type\":"
    "\"string\"},\"type\":{\"enum\":[\"invalid_request_error\",\"authentication_error\",\"permission_error\","
    "\"not_found_error\",\"rate_limit_error\",\"server_error\"]},\"param\":{\"type\":[\"string\",\"null\"]},"
    "\"code\":{\"type\":\"string\",\"examples\":[\"invalid_argument\",\"unauthenticated\","
    "\"permission_denied\",\"not_found\",\"payload_too_large\",\"unavailable\"]}}}}},"
    "\"Health\":{\"type\":\"object\",\"properties\":{\"status\":{\"const\":\"ok\"}}},"
    "\"Ready\":{\"type\":\"object\",\"properties\":{\"status\":{\"enum\":[\"ready\",\"not_ready\"]},"
    "\"checks\":{\"type\":\"object\",\"additionalProperties\":true}}},"
    "\"TokenRequest\":{\"type\":\"object\",\"required\":[\"username\",\"password\"],\"properties\":{"
    "\"username\":{\"type\":\"string\"},\"password\":{\"type\":\"string\",\"format\":\"password\"}}},"
    "\"Token\":{\"type\":\"object\",\"properties\":{\"access_token\":{\"type\":\"string\"},"
    "\"token_type\":{\"const\":\"Bearer\"},\"expires_in\":{\"type\":\"integer\"},\"expires_at\":"
    "{\"type\":\"integer\"},\"uid\":{\"type\":\"string\"}}},"
    "\"Principal\":{\"type\":\"object\",\"properties\":{\"uid\":{\"type\":\"string\"},\"dn\":{\"type\":"
    "\"string\"},\"display_name\":{\"type\":\"string\"},\"mail\":{\"type\":\"string\"},\"groups\":{\"type\":"
    "\"array\",\"items\":{\"type\":\"string\"}},\"principals\":{\"type\":\"array\",\"items\":{\"type\":"
    "\"string\"}},\"is_admin\":{\"type\":\"boolean\"},\"via\":{\"enum\":[\"user\",\"api_key\"]}}},"
    "\"ModelList\":{\"type\":\"object\",\"properties\":{\"object\":{\"const\":\"list\"},\"data\":{\"type\":"
    "\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"object\":"
    "{\"const\":\"model\"}}}}}},"
    "\"Filters\":{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"doc_ids\":{\"type\":"
    "\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":1024},\"uri_prefix\":{\"type\":\"string\"},"
    "\"content_type\":{\"type\":\"string\"},\"updated_after\":{\"oneOf\":[{\"type\":\"string\",\"format\":"
    "\"date-time\"},{\"type\":\"string\",\"format\":\"date\"},{\"type\":\"integer\",\"description\":"
    "\"milliseconds since 1970\"}]}}},"
    "\"SearchRequest\":{\"type\":\"object\",\"required\":[\"query\"],\"properties\":{\"query\":{\"type\":"
    "\"string\",\"maxLength\":4096},\"k\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":100,\"default\":10}"
    ","
    "\"mode\":{\"enum\":[\"hybrid\",\"bm25\",\"vector\"],\"default\":\"hybrid\"},\"filters\":{\"$ref\":"
    "\"#/components/schemas/Filters\"},\"max_per_doc\":{\"type\":\"integer\",\"minimum\":0},\"cursor\":"
    "{\"type\":\"string\",\"description\":\"next_cursor of the previous page\"}}},"
    "\"Result\":{\"type\":\"object\",\"properties\":{\"chunk_id\":{\"type\":\"integer\"},\"doc_id\":{"
    "\"type\":"
    "\"string\"},\"title\":{\"type\":\"string\"},\"uri\":{\"type\":\"string\"},\"headings\":{\"type\":"
    "\"string\"},\"score\":{\"type\":\"number\"},\"snippet\":{\"type\":\"string\"},\"start\":{\"type\":"
    "\"integer\"},\"end\":{\"type\":\"integer\"}}},"
    "\"SearchResponse\":{\"type\":\"object\",\"properties\":{\"results\":{\"type\":\"array\",\"items\":{"
    "\"$ref\":\"#/components/schemas/Result\"}},\"mode\":{\"type\":\"string\"},\"next_cursor\":{\"type\":"
    "[\"string\",\"null\"]},\"took_ms\":{\"type\":\"number\"}}},"
    "\"Citation\":{\"type\":\"object\",\"properties\":{\"number\":{\"type\":\"integer\"},\"chunk_id\":{"
    "\"type\":"
    "\"integer\"},\"doc_id\":{\"type\":\"string\"},\"title\":{\"type\":\"string\"},\"uri\":{\"type\":"
    "\"string\"},"
    "\"headings\":{\"type\":\"string\"},\"snippet\":{\"type\":\"string\"},\"start\":{\"type\":\"integer\"},"
    "\"end\":{\"type\":\"integer\"},\"score\":{\"type\":\"number\"}}},"
    "\"AskRequest\":{\"type\":\"object\",\"required\":[\"question\"],\"properties\":{\"question\":{\"type\":"
    "\"string\",\"maxLength\":4096},\"k\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":100},\"mode\":{"
    "\"enum\":"
    "[\"hybrid\",\"bm25\",\"vector\"]},\"filters\":{\"$ref\":\"#/components/schemas/Filters\"}}},"
    "\"AskResponse\":{\"type\":\"object\",\"properties\":{\"answer\":{\"type\":\"string\"},\"citations\":{"
    "\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/"
    "Citation\"}},\"sources\":{\"type\":\"array\","
    "\"items\":{\"$ref\":\"#/components/schemas/"
    "Citation\"}},\"mode\":{\"enum\":[\"generative\",\"extractive\"]},"
    "\"reason\":{\"type\":\"string\"}}},"
    "\"ChatMessage\":{\"type\":\"object\",\"required\":[\"role\"],\"properties\":{\"role\":{\"enum\":["
    "\"system\","
    "\"developer\",\"user\",\"assistant\"]},\"content\":{\"oneOf\":[{\"type\":\"string\"},{\"type\":"
    "\"array\","
    "\"items\":{\"type\":\"object\",\"properties\":{\"type\":{\"const\":\"text\"},\"text\":{\"type\":"
    "\"string\"}}}},{\"type\":\"null\"}]}}},"
    "\"ChatRequest\":{\"type\":\"object\",\"required\":[\"messages\"],\"properties\":{\"model\":{\"type\":"
    "\"string\"},\"messages\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":256,\"items\":{\"$ref\":"
    "\"#/components/schemas/ChatMessage\"}},\"stream\":{\"type\":\"boolean\"},\"stream_options\":{\"type\":"
    "\"object\",\"properties\":{\"include_usage\":{\"type\":\"boolean\"}}},\"max_tokens\":{\"type\":"
    "\"integer\","
    "\"minimum\":1},\"temperature\":{\"type\":\"number\",\"minimum\":0,\"maximum\":2},\"n\":{\"const\":1},"
    "\"k\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":100,\"description\":\"passages to retrieve "
    "(quarry)\"}}},"
    "\"ChatCompletion\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"object\":{"
    "\"const\":"
    "\"chat.completion\"},\"created\":{\"type\":\"integer\"},\"model\":{\"type\":\"string\"},\"choices\":{"
    "\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"index\":{\"type\":\"integer\"},"
    "\"message\":{\"type\":\"object\",\"properties\":{\"role\":{\"const\":\"assistant\"},\"content\":{"
    "\"type\":"
    "\"string\"}}},\"finish_reason\":{\"type\":\"string\"}}}},\"usage\":{\"type\":\"object\",\"description\":"
    "\"estimated token counts\"},\"citations\":{\"type\":\"array\",\"items\":{\"$ref\":"
    "\"#/components/schemas/Citation\"}}}},"
    "\"DocumentInput\":{\"oneOf\":[{\"type\":\"object\",\"required\":[\"doc_id\"],\"properties\":{\"doc_id\":"
    "{\"type\":\"string\",\"maxLength\":512},\"text\":{\"type\":\"string\"},\"content_base64\":{\"type\":"
    "\"string\",\"contentEncoding\":\"base64\"},\"content_type\":{\"type\":\"string\"},\"filename\":{"
    "\"type\":"
    "\"string\"},\"title\":{\"type\":\"string\"},\"uri\":{\"type\":\"string\"},\"acl\":{\"type\":\"array\","
    "\"items\":{\"type\":\"string\",\"examples\":[\"public\",\"user:alice\",\"group:finance\"]}},"
    "\"metadata\":"
    "{\"type\":\"object\"}}},{\"type\":\"object\",\"required\":[\"documents\"],\"properties\":{\"documents\":"
    "{\"type\":\"array\",\"items\":{\"type\":\"object\"}}}}]},"
    "\"DocumentWritten\":{\"type\":\"object\",\"properties\":{\"doc_id\":{\"type\":\"string\"},\"result\":{"
    "\"enum\":[\"added\",\"updated\",\"acl_updated\",\"unchanged\"]},\"chunks\":{\"type\":\"integer\"}}},"
    "\"JobAccepted\":{\"type\":\"object\",\"properties\":{\"job_id\":{\"type\":\"string\"},\"status_url\":{"
    "\"type\":\"string\"},\"state\":{\"const\":\"queued\"}}},"
    "\"Job\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"kind\":{\"enum\":["
    "\"ingest\","
    "\"rebuild\"]},\"state\":{\"enum\":[\"queued\",\"running\",\"succeeded\",\"failed\",\"cancelled\"]},"
    "\"progress\":{\"type\":\"object\",\"properties\":{\"done\":{\"type\":\"integer\"},\"total\":{\"type\":"
    "\"integer\"},\"failed\":{\"type\":\"integer\"},\"percent\":{\"type\":\"number\"}}},\"results\":{"
    "\"type\":"
    "\"array\"},\"error\":{\"type\":\"string\"}}},"
    "\"AclInput\":{\"type\":\"object\",\"required\":[\"acl\"],\"properties\":{\"acl\":{\"type\":\"array\","
    "\"items\":{\"type\":\"string\"}}}},"
    "\"AclOutput\":{\"type\":\"object\",\"properties\":{\"doc_id\":{\"type\":\"string\"},\"acl\":{\"type\":"
    "\"array\",\"items\":{\"type\":\"string\"}}}},"
    "\"Document\":{\"type\":\"object\",\"properties\":{\"doc_id\":{\"type\":\"string\"},\"title\":{\"type\":"
    "\"string\"},\"uri\":{\"type\":\"string\"},\"content_type\":{\"type\":\"string\"},\"metadata\":{\"type\":"
    "\"object\"},\"acl\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"version\":{\"type\":"
    "\"integer\"},"
    "\"chunk_count\":{\"type\":\"integer\"},\"chunks\":{\"type\":\"array\"}}},"
    "\"DocumentList\":{\"type\":\"object\",\"properties\":{\"documents\":{\"type\":\"array\",\"items\":{\"$"
    "ref\":"
    "\"#/components/schemas/Document\"}},\"next_cursor\":{\"type\":[\"string\",\"null\"]}}},"
    "\"Deleted\":{\"type\":\"object\",\"properties\":{\"doc_id\":{\"type\":\"string\"},\"deleted\":{"
    "\"const\":"
    "true}}}"
    "}";

static const route_doc *find_doc(const char *method, const char *pattern)
{
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
        if (strcmp(docs[i].method, method) == 0 && strcmp(docs[i].pattern, pattern) == 0)
            return &docs[i];
    return NULL;
}

static json_t *ref(const char *name)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "#/components/schemas/%s", name);
    return json_pack("{s:s}", "$ref", buf);
}

static json_t *error_response(const char *why)
{
    return json_pack("{s:s,s:{s:{s:o}}}", "description", why, "content", "application/json", "schema",
                     ref("Error"));
}

static json_t *operation(const api_route *route)
{
    const route_doc *d = find_doc(route->method, route->pattern);
    json_t *op = json_object();
    json_object_set_new(op, "summary", json_string(d ? d->summary : "Undocumented route."));
    char opid[128], *o = opid;
    for (const char *p = route->method; *p && o < opid + 20; p++)
        *o++ = (char)(*p | 0x20);
    for (const char *p = route->pattern; *p && o < opid + sizeof(opid) - 1; p++)
        *o++ = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ? *p : '_';
    *o = '\0';
    json_object_set_new(op, "operationId", json_string(opid));
    if (route->access == API_ACCESS_PUBLIC)
        json_object_set_new(op, "security", json_array());
    if (strchr(route->pattern, '{'))
        json_object_set_new(op, "parameters",
                            json_pack("[{s:s,s:s,s:b,s:s,s:{s:s}}]", "name", "id", "in", "path", "required",
                                      1, "description",
                                      "the id, percent-encoded (an encoded or plain '/' is part of it)",
                                      "schema", "type", "string"));
    if (strcmp(route->pattern, "/v1/documents") == 0 && strcmp(route->method, "GET") == 0)
        json_object_set_new(op, "parameters",
                            json_pack("[{s:s,s:s,s:{s:s,s:i,s:i}},{s:s,s:s,s:{s:s}}]", "name", "limit", "in",
                                      "query", "schema", "type", "integer", "minimum", 1, "maximum", 1000,
                                      "name", "cursor", "in", "query", "schema", "type", "string"));
    if (d && d->request) {
        json_t *content = json_pack("{s:{s:o}}", "application/json", "schema", ref(d->request));
        if (strcmp(d->request, "DocumentInput") == 0)
            json_object_set_new(
                content, "multipart/form-data",
                json_pack("{s:{s:s,s:{s:{s:s,s:s},s:{s:s},s:{s:s},s:{s:s},s:{s:s,s:{s:s}},s:{s:s}}}}",
                          "schema", "type", "object", "properties", "file", "type", "string",
                          "contentMediaType", "application/octet-stream", "doc_id", "type", "string", "title",
                          "type", "string", "uri", "type", "string", "acl", "type", "array", "items", "type",
                          "string", "metadata", "type", "string"));
        json_object_set_new(op, "requestBody", json_pack("{s:b,s:o}", "required", 1, "content", content));
    }
    json_t *responses = json_object();
    char status[8];
    snprintf(status, sizeof(status), "%d", d ? d->status : 200);
    json_t *ok = json_pack("{s:s}", "description", "success");
    if (strcmp(route->pattern, "/metrics") == 0)
        json_object_set_new(ok, "content",
                            json_pack("{s:{s:{s:s}}}", "text/plain", "schema", "type", "string"));
    else if (strcmp(route->pattern, "/openapi.json") == 0)
        json_object_set_new(ok, "content",
                            json_pack("{s:{s:{s:s}}}", "application/json", "schema", "type", "object"));
    else if (d && d->response) {
        json_t *content = json_pack("{s:{s:o}}", "application/json", "schema", ref(d->response));
        if (strcmp(route->pattern, "/v1/chat/completions") == 0)
            json_object_set_new(content, "text/event-stream",
                                json_pack("{s:{s:s,s:s}}", "schema", "type", "string", "description",
                                          "data: {chat.completion.chunk} events, then data: [DONE]"));
        json_object_set_new(ok, "content", content);
    }
    json_object_set_new(responses, status, ok);
    const char *extra = d ? d->extra : "";
    while (*extra) {
        char code[8];
        size_t n = strcspn(extra, ",");
        snprintf(code, sizeof(code), "%.*s", (int)n, extra);
        json_object_set_new(responses, code, error_response("see the error code and message"));
        extra += n + (extra[n] == ',');
    }
    if (route->access != API_ACCESS_PUBLIC) {
        json_object_set_new(responses, "401", error_response("no or bad credentials"));
        json_object_set_new(responses, "503",
                            error_response("LDAP (or another dependency) cannot be reached"));
    }
    if (route->access == API_ACCESS_ADMIN)
        json_object_set_new(responses, "403", error_response("administrators only"));
    json_object_set_new(responses, "default", error_response("an error"));
    json_object_set_new(op, "responses", responses);
    return op;
}

char *api_openapi_json(void)
{
    json_t *comp = json_loads(schemas, 0, NULL);
    if (!comp)
        return NULL;
    json_t *paths = json_object();
    for (size_t i = 0; i < api_route_count; i++) {
        const api_route *route = &api_route_table[i];
        json_t *item = json_object_get(paths, route->pattern);
        if (!item) {
            item = json_object();
            json_object_set_new(paths, route->pattern, item);
        }
        char lower[16];
        size_t k = 0;
        for (; route->method[k] && k < sizeof(lower) - 1; k++)
            lower[k] = (char)(route->method[k] | 0x20);
        lower[k] = '\0';
        json_object_set_new(item, lower, operation(route));
    }
    json_t *spec = json_pack(
        "{s:s,s:{s:s,s:s,s:s,s:{s:s}},s:o,s:{s:o,s:{s:{s:s,s:s},s:{s:s,s:s,s:s},s:{s:s,s:s,s:s}}},s:[{s:[]},{"
        "s:[]},"
        "{s:[]}]}",
        "openapi", "3.1.0", "info", "title", "quarry", "version", QUARRY_VERSION, "description",
        "Retrieval-augmented answers over enterprise documents, trimmed to each caller's LDAP permissions.",
        "license", "name", "MIT", "paths", paths, "components", "schemas", comp, "securitySchemes", "basic",
        "type", "http", "scheme", "basic", "bearer", "type", "http", "scheme", "bearer", "description",
        "a token from POST /v1/auth/token, or a service API key (qk_...)", "apiKey", "type", "apiKey", "in",
        "header", "name", "X-API-Key", "security", "basic", "bearer", "apiKey");
    char *text = spec ? json_dumps(spec, JSON_COMPACT) : NULL;
    json_decref(spec);
    return text;
}

void api_h_openapi(api_req *r)
{
    char *text = api_openapi_json();
    if (!text) {
        api_reply_status(r, QR_ENOMEM, "cannot build the OpenAPI document");
        return;
    }
    api_reply_raw(r, 200, "application/json", text, strlen(text));
    free(text);
}
