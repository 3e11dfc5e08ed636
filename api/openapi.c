/*
 * The OpenAPI 3.0.3 description served, without credentials, at /openapi.json: what client
 * generators, Microsoft 365 Copilot API plugins and Teams message extensions import (they take
 * 3.0.x). Paths come from the route table (api/routes.c), so a route cannot exist without
 * appearing here; each takes its operationId, summary, description, parameters and bodies from
 * the operation table below, which may describe routes this build lacks (unused) but must
 * describe every route it has: building the document fails otherwise, and the tests check it.
 * Descriptions are written for people and for the language model of a planner (Copilot reads
 * them to decide which operation to call): what it does, when to use it, what the result means.
 *
 * The document depends on the configuration only through server.public_url (the `servers`
 * entry) and the oidc.* keys (the OpenID Connect and OAuth 2.0 schemes); it is built once when
 * the server is created and holds nothing secret: no listen address, no directory, no key.
 * Schemas are written as JSON text: they are documentation, and JSON is the clearest way to
 * write them.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

typedef struct {
    const char *method, *pattern;
    const char *operation_id; /* lowerCamelCase, stable: clients and plugins name operations by it */
    const char *tag;
    const char *summary;     /* at most 32 characters: a Teams command's title is cut there */
    const char *description; /* the first 128 characters stand alone: a Teams command shows that many */
    const char *params;      /* names in components/parameters, comma-separated: "DocumentId,Refresh" */
    const char *request;     /* schema name in components, or NULL */
    const char *response;    /* schema name of the success body, or NULL (see success_content) */
    const char *success;     /* success statuses, the first the usual one: "201,200,202" */
    const char *errors;      /* error statuses the route itself answers: "400,404" (401, 403, 429 and
                              * 503 follow from the route's access and thread, 500 from any) */
} op_doc;

static const op_doc ops[] = {
    {"POST", "/v1/search", "searchKnowledgeBase", "knowledge", "Search the knowledge base",
     "Searches the organisation's documents that the signed-in user may read and returns the best "
     "passages. Use it to find documents, facts, policies, procedures or people's write-ups in company "
     "knowledge, or to gather sources before answering yourself; use askQuestion instead when the user "
     "wants one written answer. Each result is a passage with its document's title and uri (cite both), "
     "a snippet, and a score that orders results within this response only. An empty results list means "
     "nothing the user may read matched: say so rather than guess. For more results pass next_cursor "
     "back as cursor; to list distinct documents set max_per_doc to 1.",
     NULL, "SearchRequest", "SearchResponse", "200", "400,413,501,504"},
    {"POST", "/v1/ask", "askQuestion", "knowledge", "Ask a question",
     "Answers a question in a few sentences from the organisation's documents the signed-in user may "
     "read, with numbered citations. Use it when the user asks a question whose answer is in company "
     "knowledge (policies, procedures, how-tos) and wants the answer rather than a list of documents. "
     "The answer's [n] markers refer to citations[n-1]: show the cited titles and uris. mode extractive "
     "means the language model was unavailable and the answer quotes the best passages. An answer saying "
     "the documents do not cover the question is final: do not retry with the same words.",
     NULL, "AskRequest", "AskResponse", "200", "400,413,501,504"},
    {"POST", "/v1/chat/completions", "createChatCompletion", "chat", "Chat about company knowledge",
     "OpenAI-compatible chat completion grounded in the documents the caller may read: quarry searches "
     "for the last user message (with the turn before it for short follow-ups) and answers from what it "
     "finds, with citations. For OpenAI clients; a planner should prefer askQuestion. With stream=true, "
     "server-sent chat.completion.chunk events follow, the last before data: [DONE] carrying the "
     "citations.",
     NULL, "ChatRequest", "ChatCompletion", "200", "400,413,501,504"},
    {"GET", "/v1/models", "listModels", "chat", "List models",
     "Lists the model ids quarry answers chat completions as (inference.models; OpenAI's list shape).", NULL,
     NULL, "ModelList", "200", ""},
    {"GET", "/v1/models/{id}", "getModel", "chat", "Get a model",
     "One of the model ids quarry answers chat completions as (inference.models; OpenAI's model object); "
     "404 model_not_found for any other id.",
     "ModelId", NULL, "Model", "200", "404"},
    {"GET", "/v1/me", "getMe", "auth", "Who am I",
     "Returns the signed-in caller: user name, directory entry, groups, the ACL principals results are "
     "trimmed to, and whether the caller is an administrator. Use it to tell the user whose permissions "
     "apply or why a document is not found.",
     NULL, NULL, "Principal", "200", ""},
    {"POST", "/v1/auth/token", "createToken", "auth", "Get a bearer token",
     "Exchanges a user name and password (JSON, or HTTP Basic) for a bearer token valid for "
     "auth.token_ttl_s. Not for planners: Copilot and Teams sign in through OAuth.",
     NULL, "TokenRequest", "Token", "200", "400,401,429"},
    {"GET", "/v1/documents", "listDocuments", "documents", "List documents",
     "Lists stored documents in id order, a page at a time (administrators). Pass next_cursor back as "
     "cursor for the next page.",
     "Limit,Cursor", NULL, "DocumentList", "200", "400"},
    {"POST", "/v1/documents", "createDocuments", "documents", "Add or replace documents",
     "Creates or replaces documents (administrators): JSON with text, JSON with base64 bytes and a "
     "content type, a {documents:[...]} batch, or a multipart/form-data upload. Several documents, or "
     "more bytes than server.job_threshold_bytes, become a background job (202).",
     "Refresh", "DocumentInput", "DocumentWritten", "201,200,202", "400,413,415,507"},
    {"GET", "/v1/documents/{id}", "getDocument", "documents", "Get a document",
     "A stored document's fields, ACL and version (administrators); ?chunks=true adds its passages.",
     "DocumentId,Chunks", NULL, "Document", "200", "404"},
    {"PUT", "/v1/documents/{id}", "putDocument", "documents", "Create or replace a document",
     "Creates or replaces the document with this id (administrators); without acl the stored ACL is kept. "
     "A large body becomes a background job (202).",
     "DocumentId,Refresh", "DocumentFields", "DocumentWritten", "200,201,202", "400,413,415,507"},
    {"DELETE", "/v1/documents/{id}", "deleteDocument", "documents", "Delete a document",
     "Deletes a document and all its passages (administrators); searches stop returning it at once.",
     "DocumentId,Refresh", NULL, "Deleted", "200", "404,507"},
    {"PATCH", "/v1/documents/{id}/acl", "setDocumentAcl", "documents", "Set a document's ACL",
     "Replaces who may read a document (administrators); effective for the very next search.",
     "DocumentId,Refresh", "AclInput", "AclOutput", "200", "400,404,507"},
    {"POST", "/v1/index/rebuild", "rebuildIndex", "admin", "Rebuild the index",
     "Rebuilds the search indexes as new generations, as a background job (administrators); searches "
     "go on meanwhile.",
     NULL, NULL, "JobAccepted", "202", "507"},
    {"GET", "/v1/jobs", "listJobs", "admin", "List jobs",
     "Lists background jobs, newest first, a page at a time (administrators), optionally only those in "
     "one state. Pass next_cursor back as cursor for the next page; results per document are in getJob.",
     "JobState,JobLimit,Cursor", NULL, "JobList", "200", "400"},
    {"GET", "/v1/jobs/{id}", "getJob", "admin", "Get a job",
     "A background job's state (queued, running, interrupted, succeeded, failed), progress and results "
     "(administrators). Jobs survive restarts; finished ones are kept for server.job_retention_s.",
     "JobId", NULL, "Job", "200", "400,404"},
    {"GET", "/v1/keys", "listApiKeys", "admin", "List API keys",
     "Lists the service API keys, revoked ones included, oldest first (administrators): id, name, scopes "
     "and dates, never a secret (only a hash of each is stored).",
     NULL, NULL, "ApiKeyList", "200", ""},
    {"POST", "/v1/keys", "createApiKey", "admin", "Create an API key",
     "Creates a service API key with the given name and scopes and returns it, the only time its secret "
     "is shown. Only an administrator signed in as a person may (403 for any API key, so that no key "
     "can mint one with more scopes than it holds). 400 names a bad name or scope in param.",
     NULL, "ApiKeyInput", "ApiKeyCreated", "201", "400,507"},
    {"DELETE", "/v1/keys/{id}", "revokeApiKey", "admin", "Revoke an API key",
     "Revokes a service API key (administrators); it stops working at once. Revoking twice is fine; 404 "
     "for an unknown id.",
     "KeyId", NULL, "ApiKeyRevoked", "200", "404,507"},
    {"GET", "/v1/audit", "listAuditRecords", "admin", "Read the audit log",
     "The latest records of the audit log, newest first (administrators): searches, answers, document, "
     "index and key changes, refused credentials. Read from the last MiB of server.audit_log; 404 when "
     "the audit log is off.",
     "AuditLimit", NULL, "AuditList", "200", "400,404"},
    {"GET", "/healthz", "getHealth", "meta", "Liveness", "Answers while the process runs. No credentials.",
     NULL, NULL, "Health", "200", ""},
    {"GET", "/readyz", "getReadiness", "meta", "Readiness",
     "Whether the server can answer searches: the store opens, the vector index is loaded and not "
     "failing, and LDAP answers (503 otherwise). No credentials; only the status.",
     NULL, NULL, "Probe", "200", ""},
    {"GET", "/v1/status", "getStatus", "admin", "Readiness in detail",
     "The readiness checks one by one (administrators): store, index, LDAP, which indexes are warm "
     "or failing, document, chunk and vector counts; 503 when not ready.",
     NULL, NULL, "Ready", "200", ""},
    {"GET", "/metrics", "getMetrics", "meta", "Prometheus metrics",
     "Prometheus metrics, text exposition format 0.0.4 (administrators).", NULL, NULL, NULL, "200", ""},
    {"GET", "/openapi.json", "getOpenApiDocument", "meta", "This OpenAPI document",
     "This document (OpenAPI 3.0.3). No credentials.", NULL, NULL, NULL, "200", ""},
};

static const char schemas[] =
    "{\"Rerank\":{\"type\":\"object\",\"description\":\"What the reranking stage did to this page; pr"
    "esent only when a reranker is configured (rerank.backend). When applied is false the page is in "
    "first-stage order.\",\"required\":[\"applied\",\"candidates\"],\"properties\":{\"applied\":{\"ty"
    "pe\":\"boolean\",\"description\":\"True when the results come from the reranker's order (their s"
    "core is then the reranker's relevance score).\"},\"reason\":{\"type\":\"string\",\"description\""
    ":\"Why not applied.\",\"enum\":[\"timeout\",\"breaker_open\",\"malformed_reply\",\"backend_error"
    "\",\"past_window\",\"no_candidates\",\"disabled\"]},\"model\":{\"type\":\"string\",\"description"
    "\":\"The configured reranking model (rerank.model).\"},\"candidates\":{\"type\":\"integer\",\"de"
    "scription\":\"Passages the reranker was given (0 when it was not called).\"}}},\"Error\":{\"type"
    "\":\"object\",\"description\":\"An error, in OpenAI's shape, so that one client-side handler rea"
    "ds every error quarry answers.\",\"required\":[\"error\"],\"properties\":{\"error\":{\"type\":\""
    "object\",\"required\":[\"message\",\"type\",\"param\",\"code\"],\"properties\":{\"message\":{\"t"
    "ype\":\"string\",\"description\":\"What went wrong, for people: names the field or the limit.\"}"
    ",\"type\":{\"type\":\"string\",\"description\":\"The class of error, from the HTTP status.\",\"e"
    "num\":[\"invalid_request_error\",\"authentication_error\",\"permission_error\",\"not_found_error"
    "\",\"rate_limit_error\",\"server_error\"]},\"param\":{\"type\":\"string\",\"description\":\"The "
    "offending field when there is one (e.g. scopes), else null; the message names it too.\",\"nullab"
    "le\":true},\"code\":{\"type\":\"string\",\"description\":\"A stable snake_case code for programs"
    ", e.g. invalid_argument, unauthenticated, permission_denied, not_found, payload_too_large, rate_"
    "limited, overloaded, unavailable, timeout.\",\"example\":\"invalid_argument\"}}}}},\"Health\":{"
    "\"type\":\"object\",\"properties\":{\"status\":{\"type\":\"string\",\"description\":\"Always ok."
    "\",\"enum\":[\"ok\"]}}},\"Ready\":{\"type\":\"object\",\"properties\":{\"status\":{\"type\":\"st"
    "ring\",\"description\":\"ready, or not_ready (then the answer is 503).\",\"enum\":[\"ready\",\"n"
    "ot_ready\"]},\"checks\":{\"type\":\"object\",\"description\":\"Each dependency's state: store, i"
    "ndex, ldap, indexes (warm, building, failing...); counts for administrators.\",\"properties\":{}"
    ",\"additionalProperties\":true}},\"description\":\"The detailed readiness checks (administrators"
    ").\"},\"TokenRequest\":{\"type\":\"object\",\"required\":[\"username\",\"password\"],\"propertie"
    "s\":{\"username\":{\"type\":\"string\",\"description\":\"The user's directory (LDAP) name.\"},\""
    "password\":{\"type\":\"string\",\"description\":\"The user's password.\",\"format\":\"password\""
    "}}},\"Token\":{\"type\":\"object\",\"properties\":{\"access_token\":{\"type\":\"string\",\"descr"
    "iption\":\"Send it as Authorization: Bearer <access_token>.\"},\"token_type\":{\"type\":\"string"
    "\",\"enum\":[\"Bearer\"]},\"expires_in\":{\"type\":\"integer\",\"description\":\"Seconds until i"
    "t expires.\"},\"expires_at\":{\"type\":\"integer\",\"description\":\"When it expires, in seconds"
    " since 1970.\"},\"uid\":{\"type\":\"string\",\"description\":\"The user it was issued to.\"}}},"
    "\"Principal\":{\"type\":\"object\",\"properties\":{\"uid\":{\"type\":\"string\",\"description\":"
    "\"The caller's user name.\"},\"dn\":{\"type\":\"string\",\"description\":\"The caller's director"
    "y entry.\"},\"display_name\":{\"type\":\"string\"},\"mail\":{\"type\":\"string\"},\"groups\":{\""
    "type\":\"array\",\"description\":\"Directory groups the caller is a member of (nested ones inclu"
    "ded).\",\"items\":{\"type\":\"string\"}},\"principals\":{\"type\":\"array\",\"description\":\"Wh"
    "at document ACLs are matched against: public, user:<uid>, group:<name>.\",\"items\":{\"type\":\""
    "string\"}},\"is_admin\":{\"type\":\"boolean\",\"description\":\"Administrators see every documen"
    "t and may call the document and index routes.\"},\"via\":{\"type\":\"string\",\"description\":\""
    "user: signed in as a person; api_key: a service key acting as itself.\",\"enum\":[\"user\",\"api"
    "_key\"]}}},\"Model\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"descript"
    "ion\":\"The model name quarry answers as.\"},\"object\":{\"type\":\"string\",\"enum\":[\"model\""
    "]},\"created\":{\"type\":\"integer\",\"description\":\"Seconds since 1970.\"},\"owned_by\":{\"ty"
    "pe\":\"string\"}}},\"ModelList\":{\"type\":\"object\",\"properties\":{\"object\":{\"type\":\"str"
    "ing\",\"enum\":[\"list\"]},\"data\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schem"
    "as/Model\"}}}},\"Filters\":{\"type\":\"object\",\"description\":\"Restrict the search; every fil"
    "ter given must hold. Unknown filters are refused (400).\",\"properties\":{\"doc_ids\":{\"type\":"
    "\"array\",\"description\":\"Only these documents (their doc_id values).\",\"items\":{\"type\":\""
    "string\"},\"maxItems\":1024},\"uri_prefix\":{\"type\":\"string\",\"description\":\"Only document"
    "s whose uri starts with this, e.g. a folder or site: \\\"policies/\\\".\"},\"content_type\":{\"t"
    "ype\":\"string\",\"description\":\"Only documents of this media type, e.g. text/markdown, applic"
    "ation/pdf.\"},\"updated_after\":{\"type\":\"string\",\"description\":\"Only documents changed af"
    "ter this date or time (\\\"2024-05-01\\\", \\\"2024-05-01T12:00:00Z\\\"); milliseconds since 197"
    "0 are accepted too.\",\"example\":\"2024-05-01\"}},\"additionalProperties\":false},\"SearchReque"
    "st\":{\"type\":\"object\",\"required\":[\"query\"],\"properties\":{\"rerank\":{\"type\":\"boolea"
    "n\",\"default\":true,\"description\":\"false: keep the first-stage order even when a reranker is"
    " configured (rerank.backend).\"},\"query\":{\"type\":\"string\",\"description\":\"What to look f"
    "or, in the user's words or as keywords. Supports \\\"exact phrases\\\" and -excluded words.\",\""
    "maxLength\":4096,\"example\":\"expense reimbursement deadline\"},\"k\":{\"type\":\"integer\",\"d"
    "escription\":\"How many passages to return (1 to 100).\",\"minimum\":1,\"maximum\":100,\"default"
    "\":10},\"mode\":{\"type\":\"string\",\"description\":\"hybrid (keywords and meaning), bm25 (exac"
    "t keywords, names, codes) or vector (meaning only). Left out: the server's default (retrieval.mo"
    "de; auto is bm25 with the built-in local embedder, hybrid with a real embedding model).\",\"enum"
    "\":[\"hybrid\",\"bm25\",\"vector\"]},\"filters\":{\"$ref\":\"#/components/schemas/Filters\"},\"m"
    "ax_per_doc\":{\"type\":\"integer\",\"description\":\"At most this many passages from one documen"
    "t (0: no limit); use 1 to list distinct documents.\",\"minimum\":0,\"maximum\":100,\"default\":0"
    "},\"cursor\":{\"type\":\"string\",\"description\":\"The next_cursor of the previous page, to get"
    " the next page of the same search.\",\"maxLength\":1024}}},\"SearchResult\":{\"type\":\"object\""
    ",\"description\":\"A passage of a document the caller may read.\",\"properties\":{\"chunk_id\":{"
    "\"type\":\"integer\",\"description\":\"The passage's id.\"},\"doc_id\":{\"type\":\"string\",\"de"
    "scription\":\"The document's id; pass it to filters.doc_ids to search within it.\"},\"title\":{"
    "\"type\":\"string\",\"description\":\"The document's title: show it when citing.\"},\"uri\":{\"t"
    "ype\":\"string\",\"description\":\"Where the document lives (a link or a path): show it when cit"
    "ing.\"},\"headings\":{\"type\":\"string\",\"description\":\"The section headings above the passa"
    "ge, outermost first.\"},\"score\":{\"type\":\"number\",\"description\":\"Relevance: higher is be"
    "tter; comparable only within one response.\"},\"snippet\":{\"type\":\"string\",\"description\":"
    "\"The passage's text around the words that matched.\"},\"start\":{\"type\":\"integer\",\"descrip"
    "tion\":\"Offset of the passage in the document's text (characters).\"},\"end\":{\"type\":\"integ"
    "er\",\"description\":\"End offset of the passage in the document's text (characters).\"}}},\"Sea"
    "rchResponse\":{\"type\":\"object\",\"properties\":{\"rerank\":{\"$ref\":\"#/components/schemas/R"
    "erank\"},\"results\":{\"type\":\"array\",\"description\":\"The passages, best first; empty when "
    "nothing the caller may read matched.\",\"items\":{\"$ref\":\"#/components/schemas/SearchResult\""
    "}},\"mode\":{\"type\":\"string\",\"description\":\"The mode that ranked the results.\"},\"next_c"
    "ursor\":{\"type\":\"string\",\"description\":\"Pass it as cursor for the next page; null on the "
    "last page.\",\"nullable\":true},\"took_ms\":{\"type\":\"number\",\"description\":\"Milliseconds "
    "the search took.\"}}},\"Citation\":{\"type\":\"object\",\"description\":\"A passage an answer is"
    " grounded in.\",\"properties\":{\"number\":{\"type\":\"integer\",\"description\":\"The [n] marke"
    "r the answer uses for this source.\"},\"chunk_id\":{\"type\":\"integer\"},\"doc_id\":{\"type\":"
    "\"string\"},\"title\":{\"type\":\"string\",\"description\":\"The document's title.\"},\"uri\":{"
    "\"type\":\"string\",\"description\":\"Where the document lives.\"},\"headings\":{\"type\":\"stri"
    "ng\"},\"snippet\":{\"type\":\"string\",\"description\":\"The cited passage.\"},\"start\":{\"type"
    "\":\"integer\"},\"end\":{\"type\":\"integer\"},\"score\":{\"type\":\"number\"}}},\"AskRequest\":"
    "{\"type\":\"object\",\"required\":[\"question\"],\"properties\":{\"rerank\":{\"type\":\"boolean"
    "\",\"default\":true,\"description\":\"false: keep the first-stage order even when a reranker is "
    "configured (rerank.backend).\"},\"question\":{\"type\":\"string\",\"description\":\"The user's q"
    "uestion, in their words.\",\"maxLength\":4096,\"example\":\"How are expense reimbursement claims"
    " filed?\"},\"k\":{\"type\":\"integer\",\"description\":\"Passages to read before answering (defa"
    "ult: server.chat_k).\",\"minimum\":1,\"maximum\":100},\"mode\":{\"type\":\"string\",\"descriptio"
    "n\":\"How to search for passages (left out: the server's default, retrieval.mode).\",\"enum\":["
    "\"hybrid\",\"bm25\",\"vector\"]},\"filters\":{\"$ref\":\"#/components/schemas/Filters\"}}},\"Ask"
    "Response\":{\"type\":\"object\",\"properties\":{\"rerank\":{\"$ref\":\"#/components/schemas/Rera"
    "nk\"},\"answer\":{\"type\":\"string\",\"description\":\"The answer, with [n] markers naming the "
    "citations it rests on.\"},\"citations\":{\"type\":\"array\",\"description\":\"The sources the an"
    "swer cites, by number.\",\"items\":{\"$ref\":\"#/components/schemas/Citation\"}},\"sources\":{\""
    "type\":\"array\",\"description\":\"Every passage that was read, cited or not.\",\"items\":{\"$re"
    "f\":\"#/components/schemas/Citation\"}},\"mode\":{\"type\":\"string\",\"description\":\"generati"
    "ve: written by the language model; extractive: the model could not be reached and the answer quo"
    "tes the best passages.\",\"enum\":[\"generative\",\"extractive\"]},\"reason\":{\"type\":\"string"
    "\",\"description\":\"Why the answer is extractive.\"}}},\"ChatContentPart\":{\"type\":\"object\""
    ",\"required\":[\"type\",\"text\"],\"properties\":{\"type\":{\"type\":\"string\",\"enum\":[\"text"
    "\"]},\"text\":{\"type\":\"string\"}}},\"ChatMessage\":{\"type\":\"object\",\"required\":[\"role"
    "\"],\"properties\":{\"role\":{\"type\":\"string\",\"description\":\"system and developer message"
    "s are ignored (quarry's own instructions govern).\",\"enum\":[\"system\",\"developer\",\"user\","
    "\"assistant\"]},\"content\":{\"description\":\"The message's text, or a list of text parts (null"
    " is read as empty).\",\"oneOf\":[{\"type\":\"string\"},{\"type\":\"array\",\"items\":{\"$ref\":"
    "\"#/components/schemas/ChatContentPart\"}}]}}},\"ChatRequest\":{\"type\":\"object\",\"required\""
    ":[\"messages\"],\"properties\":{\"model\":{\"type\":\"string\",\"description\":\"One of the ids "
    "GET /v1/models lists (inference.models); absent: the first. Another id is 404 model_not_found.\""
    "},\"messages\":{\"type\":\"array\",\"description\":\"The conversation; the last message must be "
    "the user's question. Earlier turns give context to short follow-ups.\",\"items\":{\"$ref\":\"#/c"
    "omponents/schemas/ChatMessage\"},\"minItems\":1,\"maxItems\":256},\"stream\":{\"type\":\"boolean"
    "\",\"description\":\"true: server-sent chat.completion.chunk events, then data: [DONE].\",\"defa"
    "ult\":false},\"stream_options\":{\"type\":\"object\",\"properties\":{\"include_usage\":{\"type\""
    ":\"boolean\",\"description\":\"Send a last chunk with usage.\"}}},\"max_tokens\":{\"type\":\"int"
    "eger\",\"description\":\"Most tokens of the answer, sent to the backend; at most inference.max_t"
    "okens (400 above).\",\"minimum\":1},\"max_completion_tokens\":{\"type\":\"integer\",\"descriptio"
    "n\":\"Same as max_tokens (both given must agree).\",\"minimum\":1},\"temperature\":{\"type\":\"n"
    "umber\",\"description\":\"Sent to the backend.\",\"minimum\":0,\"maximum\":2},\"n\":{\"type\":\""
    "integer\",\"description\":\"Only 1.\",\"enum\":[1]},\"k\":{\"type\":\"integer\",\"description\":"
    "\"Passages to retrieve for the answer (quarry's own; default server.chat_k).\",\"minimum\":1,\"m"
    "aximum\":100},\"top_p\":{\"type\":\"number\",\"description\":\"Sent to the backend.\",\"minimum"
    "\":0,\"maximum\":1},\"stop\":{\"description\":\"Up to 4 stop sequences, sent to the backend.\","
    "\"oneOf\":[{\"type\":\"string\"},{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems"
    "\":4}]},\"user\":{\"type\":\"string\",\"description\":\"The end user, sent to the backend and wr"
    "itten to the audit line (end_user).\",\"maxLength\":256},\"seed\":{\"type\":\"integer\",\"descri"
    "ption\":\"Passed to the backend, best effort.\"},\"presence_penalty\":{\"type\":\"number\",\"min"
    "imum\":-2,\"maximum\":2,\"description\":\"Passed to the backend.\"},\"frequency_penalty\":{\"typ"
    "e\":\"number\",\"minimum\":-2,\"maximum\":2,\"description\":\"Passed to the backend.\"},\"logpro"
    "bs\":{\"type\":\"boolean\",\"enum\":[false],\"description\":\"Only false.\"},\"response_format\""
    ":{\"type\":\"object\",\"description\":\"Only {\\\"type\\\":\\\"text\\\"}.\",\"properties\":{\"ty"
    "pe\":{\"type\":\"string\",\"enum\":[\"text\"]}}},\"modalities\":{\"type\":\"array\",\"items\":{"
    "\"type\":\"string\",\"enum\":[\"text\"]},\"description\":\"Only [\\\"text\\\"].\"},\"metadata\":"
    "{\"type\":\"object\",\"description\":\"Accepted and ignored.\"},\"store\":{\"type\":\"boolean\","
    "\"description\":\"Accepted and ignored.\"},\"data_sources\":{\"type\":\"array\",\"maxItems\":1,"
    "\"description\":\"Azure OpenAI On Your Data: one source of type quarry (parameters.filter takes "
    "the search filters) or azure_search (an OData filter string is refused); top_n_documents replace"
    "s k. Tools, functions and other unsupported parameters are refused with 400 naming them.\",\"ite"
    "ms\":{\"type\":\"object\",\"required\":[\"type\"],\"properties\":{\"type\":{\"type\":\"string\","
    "\"enum\":[\"quarry\",\"azure_search\"]},\"parameters\":{\"type\":\"object\",\"properties\":{\"fi"
    "lter\":{\"description\":\"type quarry: the search filters; azure_search: must be empty.\",\"oneO"
    "f\":[{\"$ref\":\"#/components/schemas/Filters\"},{\"type\":\"string\"}]},\"top_n_documents\":{\""
    "type\":\"integer\",\"minimum\":1,\"maximum\":100},\"in_scope\":{\"type\":\"boolean\",\"enum\":[t"
    "rue]}}}}}}}},\"ChatCompletion\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\""
    "},\"object\":{\"type\":\"string\",\"enum\":[\"chat.completion\"]},\"created\":{\"type\":\"intege"
    "r\",\"description\":\"Seconds since 1970.\"},\"model\":{\"type\":\"string\"},\"choices\":{\"type"
    "\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"index\":{\"type\":\"integer\"},\"m"
    "essage\":{\"type\":\"object\",\"properties\":{\"role\":{\"type\":\"string\",\"enum\":[\"assistan"
    "t\"]},\"content\":{\"type\":\"string\",\"description\":\"The answer, with [n] markers naming its"
    " citations.\"},\"context\":{\"type\":\"object\",\"description\":\"Azure On Your Data: the citati"
    "ons of this answer (streamed: in delta.context of the last chunk).\",\"properties\":{\"citations"
    "\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/OnYourDataCitation\"}},\"inten"
    "t\":{\"type\":\"string\"}}}}},\"finish_reason\":{\"type\":\"string\",\"description\":\"stop, or "
    "length when the answer was cut short.\"}}}},\"usage\":{\"type\":\"object\",\"description\":\"Est"
    "imated token counts.\",\"properties\":{\"prompt_tokens\":{\"type\":\"integer\"},\"completion_tok"
    "ens\":{\"type\":\"integer\"},\"total_tokens\":{\"type\":\"integer\"}}},\"citations\":{\"type\":"
    "\"array\",\"description\":\"The sources the answer cites (quarry's addition to OpenAI's shape)."
    "\",\"items\":{\"$ref\":\"#/components/schemas/Citation\"}},\"quarry\":{\"type\":\"object\",\"des"
    "cription\":\"How the answer was made: extractive when the model could not be reached.\",\"proper"
    "ties\":{\"rerank\":{\"$ref\":\"#/components/schemas/Rerank\"},\"mode\":{\"type\":\"string\",\"en"
    "um\":[\"generative\",\"extractive\"]},\"reason\":{\"type\":\"string\"}}}}},\"DocumentFields\":{"
    "\"type\":\"object\",\"properties\":{\"doc_id\":{\"type\":\"string\",\"description\":\"The docume"
    "nt's id (POST; PUT takes it from the path).\",\"maxLength\":512},\"text\":{\"type\":\"string\","
    "\"description\":\"The document's text (or content_base64 with content_type).\"},\"content_base64"
    "\":{\"type\":\"string\",\"description\":\"The document's bytes, base64 (PDF, Office, HTML...).\""
    ",\"format\":\"byte\"},\"content_type\":{\"type\":\"string\",\"description\":\"Media type of cont"
    "ent_base64.\"},\"filename\":{\"type\":\"string\",\"description\":\"Original file name; helps to "
    "tell the type.\"},\"title\":{\"type\":\"string\"},\"uri\":{\"type\":\"string\",\"description\":"
    "\"Where the document lives (a link shown with citations).\"},\"acl\":{\"type\":\"array\",\"descr"
    "iption\":\"Who may read it: public, user:<uid>, group:<name>. Without it, a new document is read"
    "able by administrators only and a replaced one keeps its ACL.\",\"items\":{\"type\":\"string\","
    "\"example\":\"group:finance\"}},\"metadata\":{\"type\":\"object\",\"description\":\"Free-form fi"
    "elds kept with the document.\",\"properties\":{},\"additionalProperties\":true}}},\"DocumentBatc"
    "h\":{\"type\":\"object\",\"required\":[\"documents\"],\"properties\":{\"documents\":{\"type\":\""
    "array\",\"items\":{\"$ref\":\"#/components/schemas/DocumentFields\"},\"maxItems\":10000}}},\"Doc"
    "umentInput\":{\"oneOf\":[{\"$ref\":\"#/components/schemas/DocumentFields\"},{\"$ref\":\"#/compon"
    "ents/schemas/DocumentBatch\"}]},\"DocumentUpload\":{\"type\":\"object\",\"properties\":{\"file\""
    ":{\"type\":\"string\",\"description\":\"A document's bytes; several file parts make a job.\",\"f"
    "ormat\":\"binary\"},\"doc_id\":{\"type\":\"string\"},\"title\":{\"type\":\"string\"},\"uri\":{\""
    "type\":\"string\"},\"acl\":{\"type\":\"array\",\"description\":\"acl fields, one principal each."
    "\",\"items\":{\"type\":\"string\"}},\"metadata\":{\"type\":\"string\",\"description\":\"A JSON o"
    "bject.\"}}},\"DocumentWritten\":{\"type\":\"object\",\"properties\":{\"doc_id\":{\"type\":\"stri"
    "ng\"},\"result\":{\"type\":\"string\",\"enum\":[\"added\",\"updated\",\"acl_updated\",\"unchange"
    "d\"]},\"chunks\":{\"type\":\"integer\",\"description\":\"Passages the document was split into.\""
    "},\"searchable\":{\"type\":\"boolean\",\"description\":\"With ?refresh=wait_for: whether the wri"
    "te became searchable in time.\"}}},\"JobAccepted\":{\"type\":\"object\",\"properties\":{\"job_id"
    "\":{\"type\":\"string\"},\"status_url\":{\"type\":\"string\",\"description\":\"GET it to follow "
    "the job.\"},\"state\":{\"type\":\"string\",\"enum\":[\"queued\"]}}},\"Job\":{\"type\":\"object\""
    ",\"properties\":{\"id\":{\"type\":\"string\"},\"kind\":{\"type\":\"string\",\"enum\":[\"ingest\""
    ",\"rebuild\"]},\"state\":{\"type\":\"string\",\"description\":\"queued, running, interrupted (st"
    "opped by a shutdown: it resumes at the next start), succeeded or failed (error says why).\",\"en"
    "um\":[\"queued\",\"running\",\"interrupted\",\"succeeded\",\"failed\"]},\"user\":{\"type\":\"str"
    "ing\",\"description\":\"Who submitted it.\"},\"progress\":{\"type\":\"object\",\"properties\":{"
    "\"done\":{\"type\":\"integer\"},\"total\":{\"type\":\"integer\"},\"failed\":{\"type\":\"integer"
    "\"},\"percent\":{\"type\":\"number\"},\"chunks\":{\"type\":\"integer\",\"description\":\"Passage"
    "s written so far.\"}}},\"results\":{\"type\":\"array\",\"description\":\"One result per document"
    " (ingest jobs).\",\"items\":{\"type\":\"object\",\"properties\":{},\"additionalProperties\":true"
    "}},\"error\":{\"type\":\"string\",\"description\":\"Why the job failed (a staged file missing or"
    " damaged names the file), else absent.\"},\"created\":{\"type\":\"string\",\"format\":\"date-tim"
    "e\"},\"started\":{\"type\":\"string\",\"format\":\"date-time\",\"nullable\":true},\"finished\":{"
    "\"type\":\"string\",\"format\":\"date-time\",\"nullable\":true}},\"description\":\"A background "
    "job (ingestion of an upload, or an index rebuild). Jobs are kept in the data directory: they sur"
    "vive a restart, and finished ones are kept for server.job_retention_s.\"},\"AclInput\":{\"type\""
    ":\"object\",\"required\":[\"acl\"],\"properties\":{\"acl\":{\"type\":\"array\",\"description\":"
    "\"The new ACL: public, user:<uid>, group:<name>.\",\"items\":{\"type\":\"string\"}}}},\"AclOutpu"
    "t\":{\"type\":\"object\",\"properties\":{\"doc_id\":{\"type\":\"string\"},\"acl\":{\"type\":\"ar"
    "ray\",\"items\":{\"type\":\"string\"}}}},\"Chunk\":{\"type\":\"object\",\"properties\":{\"chunk_"
    "id\":{\"type\":\"integer\"},\"text\":{\"type\":\"string\"},\"headings\":{\"type\":\"string\"},\""
    "start\":{\"type\":\"integer\"},\"end\":{\"type\":\"integer\"}},\"additionalProperties\":true},\""
    "Document\":{\"type\":\"object\",\"properties\":{\"doc_id\":{\"type\":\"string\"},\"title\":{\"ty"
    "pe\":\"string\"},\"uri\":{\"type\":\"string\"},\"content_type\":{\"type\":\"string\"},\"metadata"
    "\":{\"type\":\"object\",\"properties\":{},\"additionalProperties\":true},\"acl\":{\"type\":\"arr"
    "ay\",\"items\":{\"type\":\"string\"}},\"content_hash\":{\"type\":\"string\"},\"version\":{\"type"
    "\":\"integer\",\"description\":\"Raised by every change.\"},\"created\":{\"type\":\"string\",\"f"
    "ormat\":\"date-time\"},\"updated\":{\"type\":\"string\",\"format\":\"date-time\"},\"text_bytes\""
    ":{\"type\":\"integer\"},\"chunk_count\":{\"type\":\"integer\"},\"chunks\":{\"type\":\"array\",\""
    "description\":\"With ?chunks=true.\",\"items\":{\"$ref\":\"#/components/schemas/Chunk\"}}}},\"Do"
    "cumentList\":{\"type\":\"object\",\"properties\":{\"documents\":{\"type\":\"array\",\"items\":{"
    "\"$ref\":\"#/components/schemas/Document\"}},\"next_cursor\":{\"type\":\"string\",\"description"
    "\":\"Pass it as cursor for the next page; null on the last page.\",\"nullable\":true}}},\"Delete"
    "d\":{\"type\":\"object\",\"properties\":{\"doc_id\":{\"type\":\"string\"},\"deleted\":{\"type\":"
    "\"boolean\",\"enum\":[true]}}},\"OnYourDataCitation\":{\"type\":\"object\",\"description\":\"A c"
    "ited passage in Azure OpenAI On Your Data's shape.\",\"properties\":{\"content\":{\"type\":\"str"
    "ing\",\"description\":\"The passage (at most 4 KiB).\"},\"title\":{\"type\":\"string\"},\"url\":"
    "{\"type\":\"string\",\"description\":\"The source document's uri.\"},\"filepath\":{\"type\":\"st"
    "ring\",\"description\":\"The document's doc_id.\"},\"chunk_id\":{\"type\":\"string\"}}},\"ApiKey"
    "\":{\"type\":\"object\",\"description\":\"A service API key as administrators see it: never its "
    "secret (only its hash is stored).\",\"properties\":{\"id\":{\"type\":\"string\",\"description\":"
    "\"The key's id: the 16 hex digits after qk_ in the key.\"},\"name\":{\"type\":\"string\",\"descr"
    "iption\":\"What the key is for.\"},\"scopes\":{\"type\":\"array\",\"description\":\"What the key"
    " may do.\",\"items\":{\"$ref\":\"#/components/schemas/ApiKeyScope\"}},\"created_at\":{\"type\":"
    "\"string\",\"format\":\"date-time\"},\"revoked_at\":{\"type\":\"string\",\"format\":\"date-time"
    "\",\"description\":\"When it was revoked; null while it works.\",\"nullable\":true}}},\"ApiKeySc"
    "ope\":{\"type\":\"string\",\"description\":\"search: /v1/search; chat: chat, ask and models; adm"
    "in: the administrators' routes; on_behalf_of: act for the user named in X-Quarry-User.\",\"enum"
    "\":[\"search\",\"chat\",\"admin\",\"on_behalf_of\"]},\"ApiKeyList\":{\"type\":\"object\",\"prope"
    "rties\":{\"object\":{\"type\":\"string\",\"enum\":[\"list\"]},\"data\":{\"type\":\"array\",\"des"
    "cription\":\"Every key, revoked ones included, oldest first.\",\"items\":{\"$ref\":\"#/component"
    "s/schemas/ApiKey\"}}}},\"ApiKeyInput\":{\"type\":\"object\",\"required\":[\"name\",\"scopes\"],"
    "\"properties\":{\"name\":{\"type\":\"string\",\"description\":\"What the key is for (1 to 128 by"
    "tes, no control characters).\",\"minLength\":1,\"maxLength\":128,\"example\":\"intranet search w"
    "idget\"},\"scopes\":{\"type\":\"array\",\"description\":\"What the key may do; at least one.\","
    "\"minItems\":1,\"items\":{\"$ref\":\"#/components/schemas/ApiKeyScope\"}}},\"additionalPropertie"
    "s\":false},\"ApiKeyCreated\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},"
    "\"name\":{\"type\":\"string\"},\"scopes\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components"
    "/schemas/ApiKeyScope\"}},\"created_at\":{\"type\":\"string\",\"format\":\"date-time\"},\"key\":{"
    "\"type\":\"string\",\"description\":\"The key, qk_<id>_<secret>: shown this once and never again"
    " (only its hash is stored). Send it as X-API-Key or Authorization: Bearer.\",\"format\":\"passwo"
    "rd\"}}},\"ApiKeyRevoked\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"re"
    "voked\":{\"type\":\"boolean\",\"enum\":[true]}}},\"AuditRecord\":{\"type\":\"object\",\"descript"
    "ion\":\"One line of the audit log.\",\"properties\":{\"time\":{\"type\":\"string\",\"format\":\""
    "date-time\"},\"request_id\":{\"type\":\"string\"},\"user\":{\"type\":\"string\",\"description\":"
    "\"Who: a uid, or key:<id> for a key acting as itself.\"},\"via\":{\"type\":\"string\",\"enum\":["
    "\"user\",\"api_key\"]},\"auth\":{\"type\":\"string\",\"description\":\"basic, token, oidc or api"
    "_key.\"},\"key_id\":{\"type\":\"string\",\"description\":\"The service key used, if any.\"},\"cl"
    "ient\":{\"type\":\"string\",\"description\":\"The caller's address.\"},\"route\":{\"type\":\"str"
    "ing\",\"description\":\"Method and route pattern, e.g. POST /v1/search.\"},\"action\":{\"type\":"
    "\"string\",\"description\":\"search, answer, document_put, acl_set, document_delete, index_rebui"
    "ld, key_create, key_revoke, auth_refused...\"},\"query_hmac\":{\"type\":\"string\",\"description"
    "\":\"A keyed hash of the query (never the query).\",\"nullable\":true},\"doc_ids\":{\"type\":\"a"
    "rray\",\"description\":\"The documents returned or changed; for key_create and key_revoke the ke"
    "y's id.\",\"items\":{\"type\":\"string\"},\"nullable\":true}},\"additionalProperties\":true},\"A"
    "uditList\":{\"type\":\"object\",\"properties\":{\"object\":{\"type\":\"string\",\"enum\":[\"list"
    "\"]},\"data\":{\"type\":\"array\",\"description\":\"The latest records, newest first.\",\"items"
    "\":{\"$ref\":\"#/components/schemas/AuditRecord\"}}}},\"JobList\":{\"type\":\"object\",\"propert"
    "ies\":{\"jobs\":{\"type\":\"array\",\"description\":\"Jobs, newest first, without their per-docu"
    "ment results (GET /v1/jobs/{id} has them).\",\"items\":{\"$ref\":\"#/components/schemas/Job\"}},"
    "\"next_cursor\":{\"type\":\"string\",\"description\":\"Pass it as cursor for the next page; null"
    " on the last page.\",\"nullable\":true}}},\"Probe\":{\"type\":\"object\",\"required\":[\"status"
    "\"],\"properties\":{\"status\":{\"type\":\"string\",\"description\":\"ok (200) or unavailable (5"
    "03); nothing else is said without credentials.\",\"enum\":[\"ok\",\"unavailable\"]}}}}";

/* The parameters the operations above name. */
static const char parameters[] =
    "{"
    "\"DocumentId\":{\"name\":\"id\",\"in\":\"path\",\"required\":true,\"description\":\"The document's id "
    "(doc_id), percent-encoded; an encoded or plain '/' is part of it.\",\"schema\":{\"type\":\"string\","
    "\"maxLength\":512}},"
    "\"JobId\":{\"name\":\"id\",\"in\":\"path\",\"required\":true,\"description\":\"The job's id (job_id "
    "of a 202 answer).\",\"schema\":{\"type\":\"string\"}},"
    "\"JobState\":{\"name\":\"state\",\"in\":\"query\",\"description\":\"Only jobs in this state.\",\""
    "schema\":{\"type\":\"string\",\"enum\":[\"queued\",\"running\",\"interrupted\",\"succeeded\",\"f"
    "ailed\"]}},\"JobLimit\":{\"name\":\"limit\",\"in\":\"query\",\"description\":\"Jobs per page.\","
    "\"schema\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000,\"default\":50}},"
    "\"KeyId\":{\"name\":\"id\",\"in\":\"path\",\"required\":true,\"description\":\"The API key's id "
    "(the 16 hex digits after qk_).\",\"schema\":{\"type\":\"string\"}},"
    "\"AuditLimit\":{\"name\":\"limit\",\"in\":\"query\",\"description\":\"How many records, newest "
    "first.\",\"schema\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":500,\"default\":100}},"
    "\"ModelId\":{\"name\":\"id\",\"in\":\"path\",\"required\":true,\"description\":\"A model id, as "
    "listModels names it.\",\"schema\":{\"type\":\"string\"}},"
    "\"Limit\":{\"name\":\"limit\",\"in\":\"query\",\"description\":\"Documents per page.\",\"schema\":{"
    "\"type\":\"integer\",\"minimum\":1,\"maximum\":1000,\"default\":50}},"
    "\"Cursor\":{\"name\":\"cursor\",\"in\":\"query\",\"description\":\"The next_cursor of the previous "
    "page.\",\"schema\":{\"type\":\"string\"}},"
    "\"Chunks\":{\"name\":\"chunks\",\"in\":\"query\",\"description\":\"true: add the document's passages."
    "\",\"schema\":{\"type\":\"boolean\",\"default\":false}},"
    "\"Refresh\":{\"name\":\"refresh\",\"in\":\"query\",\"description\":\"wait_for (or true): answer once "
    "the change is searchable (at most index.wait_for_ms); false: within index.refresh_ms.\",\"schema\":{"
    "\"type\":\"string\",\"enum\":[\"false\",\"true\",\"wait_for\"],\"default\":\"false\"}}"
    "}";

/* The error answers, one shared response each, all with the Error body. */
static const struct {
    int status;
    const char *name, *description;
} errors[] = {
    {400, "BadRequest",
     "The request is malformed or a field is invalid; the message names it (invalid_argument, "
     "invalid_json). Fix the request; retrying it unchanged fails again."},
    {401, "Unauthorized", "No credentials, or wrong or expired ones (unauthenticated): sign in again."},
    {403, "Forbidden",
     "The caller may not do this (permission_denied): not an administrator, a service key "
     "without the route's scope, or X-Quarry-User from a key without on_behalf_of."},
    {404, "NotFound", "No such document, job, model or API key (not_found)."},
    {413, "PayloadTooLarge",
     "The body is over the route's limit (payload_too_large) or nested too deep "
     "(limit_exceeded)."},
    {415, "UnsupportedMediaType", "A content type quarry cannot read (unsupported_media_type)."},
    {429, "TooManyRequests",
     "Too many failed logins, or too many of this user's requests at once "
     "(rate_limited): retry after Retry-After seconds."},
    {500, "InternalError", "An error in quarry; the X-Request-Id header finds it in the log."},
    {501, "NotImplemented",
     "The search mode needs what this server lacks (vector search without an "
     "embedder)."},
    {503, "Unavailable",
     "A dependency (LDAP, the store) cannot be reached, or every worker is busy "
     "(unavailable, overloaded): retry later."},
    {504, "Timeout", "The search took longer than retrieval.timeout_ms (timeout)."},
    {507, "InsufficientStorage",
     "The data directory's file system is full (no_space): nothing was written; searches go on."},
};

static const op_doc *find_op(const char *method, const char *pattern)
{
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (strcmp(ops[i].method, method) == 0 && strcmp(ops[i].pattern, pattern) == 0)
            return &ops[i];
    return NULL;
}

static json_t *ref_to(const char *kind, const char *name)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "#/components/%s/%s", kind, name);
    return json_pack("{s:s}", "$ref", buf);
}

static const char *error_name(int status)
{
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
        if (errors[i].status == status)
            return errors[i].name;
    return NULL;
}

/* Adds the error responses named in list ("400,404") to responses; false for a status the error
 * table lacks (a bug in the operation table). */
static bool add_errors(json_t *responses, const char *list)
{
    while (*list) {
        int status = atoi(list);
        const char *name = error_name(status);
        char code[8];
        if (!name)
            return false;
        snprintf(code, sizeof(code), "%d", status);
        if (!json_object_get(responses, code))
            json_object_set_new(responses, code, ref_to("responses", name));
        list += strcspn(list, ",");
        list += *list == ',';
    }
    return true;
}

static json_t *success_response(const op_doc *d, int status)
{
    const char *what = status == 201   ? "Created."
                       : status == 202 ? "Accepted: the work runs as a background job; follow status_url."
                       : status == 503 ? "Not ready: see checks."
                                       : "OK.";
    json_t *resp = json_pack("{s:s}", "description", what);
    json_t *content = NULL;
    if (status == 202)
        content = json_pack("{s:{s:o}}", "application/json", "schema", ref_to("schemas", "JobAccepted"));
    else if (d->response)
        content = json_pack("{s:{s:o}}", "application/json", "schema", ref_to("schemas", d->response));
    else if (strcmp(d->pattern, "/metrics") == 0)
        content = json_pack("{s:{s:{s:s}}}", "text/plain", "schema", "type", "string");
    else if (strcmp(d->pattern, "/openapi.json") == 0)
        content = json_pack("{s:{s:{s:s,s:s,s:b}}}", "application/json", "schema", "type", "object",
                            "description", "An OpenAPI 3.0.3 document.", "additionalProperties", 1);
    if (content && strcmp(d->operation_id, "createChatCompletion") == 0)
        json_object_set_new(content, "text/event-stream",
                            json_pack("{s:{s:s,s:s}}", "schema", "type", "string", "description",
                                      "With stream=true: data: {chat.completion.chunk} events, then "
                                      "data: [DONE]."));
    if (content)
        json_object_set_new(resp, "content", content);
    return resp;
}

/* The operation for route, with security (the same alternatives for every route that needs
 * credentials, from the document's schemes), or NULL when the operation table lacks it. */
static json_t *operation(const api_route *route, const op_doc *d, json_t *security)
{
    json_t *op = json_pack("{s:s,s:[s],s:s,s:s}", "operationId", d->operation_id, "tags", d->tag, "summary",
                           d->summary, "description", d->description);
    if (!op)
        return NULL;
    json_object_set_new(op, "security",
                        route->access == API_ACCESS_PUBLIC ? json_array() : json_copy(security));
    if (d->params) {
        json_t *params = json_array();
        for (const char *p = d->params; *p;) {
            size_t n = strcspn(p, ",");
            char name[48];
            snprintf(name, sizeof(name), "%.*s", (int)n, p);
            json_array_append_new(params, ref_to("parameters", name));
            p += n + (p[n] == ',');
        }
        json_object_set_new(op, "parameters", params);
    }
    if (d->request) {
        json_t *content = json_pack("{s:{s:o}}", "application/json", "schema", ref_to("schemas", d->request));
        if (strcmp(d->request, "DocumentInput") == 0 || strcmp(d->request, "DocumentFields") == 0)
            json_object_set_new(content, "multipart/form-data",
                                json_pack("{s:o}", "schema", ref_to("schemas", "DocumentUpload")));
        json_object_set_new(op, "requestBody", json_pack("{s:b,s:o}", "required", 1, "content", content));
    }
    json_t *responses = json_object();
    for (const char *p = d->success; *p;) {
        int status = atoi(p);
        char code[8];
        snprintf(code, sizeof(code), "%d", status);
        json_object_set_new(responses, code, success_response(d, status));
        p += strcspn(p, ",");
        p += *p == ',';
    }
    bool ok = add_errors(responses, d->errors);
    if (route->access != API_ACCESS_PUBLIC)
        ok = ok && add_errors(responses, "401,403,429");
    if (!route->inline_) /* a worker runs it: the queue can be full */
        ok = ok && add_errors(responses, "503");
    ok = ok && add_errors(responses, "500");
    json_object_set_new(op, "responses", responses);
    if (!ok) {
        json_decref(op);
        return NULL;
    }
    return op;
}

static json_t *tag_list(void)
{
    return json_pack("[{s:s,s:s},{s:s,s:s},{s:s,s:s},{s:s,s:s},{s:s,s:s},{s:s,s:s}]", "name", "knowledge",
                     "description", "Search and answers over the documents the caller may read.", "name",
                     "chat", "description", "OpenAI-compatible chat completions.", "name", "auth",
                     "description", "Sign-in and the caller's identity.", "name", "documents", "description",
                     "Adding, reading and removing documents (administrators).", "name", "admin",
                     "description", "The search indexes and background jobs (administrators).", "name",
                     "meta", "description", "Health, readiness, metrics and this document.");
}

/* Splits a comma- or space-separated list into a JSON array of strings. */
static json_t *word_list(const char *text)
{
    json_t *a = json_array();
    for (const char *p = text; a && *p;) {
        p += strspn(p, ", ");
        size_t n = strcspn(p, ", ");
        if (n)
            json_array_append_new(a, json_stringn(p, n));
        p += n;
    }
    return a;
}

/* The security schemes, and the alternatives every operation with credentials lists. */
static qr_status security(const qr_settings *c, json_t *schemes, json_t *alternatives, char *err)
{
    json_object_set_new(schemes, "bearerAuth",
                        json_pack("{s:s,s:s,s:s}", "type", "http", "scheme", "bearer", "description",
                                  "A token from createToken, a service API key (qk_...), or an access token "
                                  "from the organisation's OpenID Connect provider (oidc.issuer)."));
    json_object_set_new(
        schemes, "basicAuth",
        json_pack("{s:s,s:s,s:s}", "type", "http", "scheme", "basic", "description",
                  "The user's directory (LDAP) name and password, checked on every request."));
    json_object_set_new(schemes, "apiKey",
                        json_pack("{s:s,s:s,s:s,s:s}", "type", "apiKey", "in", "header", "name", "X-API-Key",
                                  "description",
                                  "A service API key (qk_...); with the on_behalf_of scope it may act for "
                                  "the user named in X-Quarry-User."));
    json_array_append_new(alternatives, json_pack("{s:[]}", "bearerAuth"));
    json_array_append_new(alternatives, json_pack("{s:[]}", "basicAuth"));
    json_array_append_new(alternatives, json_pack("{s:[]}", "apiKey"));
    const char *issuer = c->oidc_issuer + strspn(c->oidc_issuer, " ");
    size_t n = strcspn(issuer, ",");
    while (n && (issuer[n - 1] == ' ' || issuer[n - 1] == '/'))
        n--; /* OpenID Connect Discovery: a trailing '/' of the issuer goes before the well-known path */
    bool oauth = *c->oidc_authorization_url || *c->oidc_token_url;
    if (oauth && (!*c->oidc_authorization_url || !*c->oidc_token_url || !n))
        return qr_fail(err, QR_EINVAL,
                       "oidc.authorization_url and oidc.token_url go together, and with "
                       "oidc.issuer");
    if (!n)
        return QR_OK;
    json_t *scopes = word_list(*c->oidc_oauth_scopes ? c->oidc_oauth_scopes : c->oidc_required_scope);
    char url[1200];
    snprintf(url, sizeof(url), "%.*s/.well-known/openid-configuration", (int)(n < 1000 ? n : 1000), issuer);
    json_object_set_new(
        schemes, "openIdConnect",
        json_pack("{s:s,s:s,s:s}", "type", "openIdConnect", "openIdConnectUrl", url, "description",
                  "The organisation's identity provider (the first of oidc.issuer): its access "
                  "tokens, sent as Authorization: Bearer, sign the user in."));
    json_array_append_new(alternatives, json_pack("{s:O}", "openIdConnect", scopes));
    if (oauth) {
        json_t *scope_map = json_object();
        size_t i;
        json_t *s;
        json_array_foreach(scopes, i, s)
        {
            json_object_set_new(scope_map, json_string_value(s),
                                json_string("Search and read as the signed-in user."));
        }
        json_object_set_new(
            schemes, "oauth2",
            json_pack("{s:s,s:s,s:{s:{s:s,s:s,s:s,s:o}}}", "type", "oauth2", "description",
                      "Sign the user in with the organisation's identity provider (authorization code flow; "
                      "Copilot API plugins and Teams message extensions register this as their OAuth "
                      "connection).",
                      "flows", "authorizationCode", "authorizationUrl", c->oidc_authorization_url, "tokenUrl",
                      c->oidc_token_url, "refreshUrl", c->oidc_token_url, "scopes", scope_map));
        json_array_append_new(alternatives, json_pack("{s:O}", "oauth2", scopes));
    }
    json_decref(scopes);
    return QR_OK;
}

qr_status api_openapi_json(const qr_config *cfg, char **out, char *err)
{
    *out = NULL;
    const qr_settings *c = qr_config_settings(cfg);
    qr_status st = QR_OK;
    json_t *spec = NULL, *paths = json_object(), *schemes = json_object(), *alternatives = json_array();
    json_t *schema_map = json_loads(schemas, 0, NULL), *param_map = json_loads(parameters, 0, NULL);
    json_t *responses = json_object();
    if (!paths || !schemes || !alternatives || !schema_map || !param_map || !responses) {
        st = qr_fail(err, QR_ENOMEM, "out of memory building the OpenAPI document");
        goto out;
    }
    if ((st = security(c, schemes, alternatives, err)))
        goto out;
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
        json_object_set_new(responses, errors[i].name,
                            json_pack("{s:s,s:{s:{s:o}}}", "description", errors[i].description, "content",
                                      "application/json", "schema", ref_to("schemas", "Error")));
    json_object_set_new(json_object_get(responses, "TooManyRequests"), "headers",
                        json_pack("{s:{s:s,s:{s:s}}}", "Retry-After", "description",
                                  "Seconds to wait before retrying.", "schema", "type", "integer"));
    for (size_t i = 0; i < api_route_count; i++) {
        const api_route *route = &api_route_table[i];
        const op_doc *d = find_op(route->method, route->pattern);
        if (!d) {
            st = qr_fail(err, QR_EINVAL, "the OpenAPI operation table has no entry for %s %s (api/openapi.c)",
                         route->method, route->pattern);
            goto out;
        }
        json_t *op = operation(route, d, alternatives);
        if (!op) {
            st = qr_fail(err, QR_EINVAL, "cannot describe %s %s (an error status api/openapi.c lacks?)",
                         route->method, route->pattern);
            goto out;
        }
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
        json_object_set_new(item, lower, op);
    }
    /* parameters only the operations of routes this build lacks use (the model id) would be
     * unused components, which linters warn about */
    char *text = json_dumps(paths, JSON_COMPACT);
    const char *name;
    json_t *param, *unused = json_array();
    if (!text || !unused) {
        free(text);
        json_decref(unused);
        st = qr_fail(err, QR_ENOMEM, "out of memory building the OpenAPI document");
        goto out;
    }
    json_object_foreach(param_map, name, param)
    {
        char needle[96];
        snprintf(needle, sizeof(needle), "\"#/components/parameters/%s\"", name);
        if (!strstr(text, needle))
            json_array_append_new(unused, json_string(name));
    }
    size_t u;
    json_t *unused_name;
    json_array_foreach(unused, u, unused_name)
    {
        json_object_del(param_map, json_string_value(unused_name));
    }
    json_decref(unused);
    free(text);
    /* no trailing '/' (a server URL with one doubles the paths' slash); empty: relative to where the
     * document was fetched from, never a Host header a client sent */
    const char *public_url = c->server_public_url;
    size_t n = strlen(public_url);
    while (n > 0 && public_url[n - 1] == '/')
        n--;
    json_t *server =
        n ? json_pack("{s:s%,s:s}", "url", public_url, n, "description", "quarry (server.public_url)")
          : json_pack("{s:s,s:s}", "url", "/", "description",
                      "This server, relative to where the document was fetched from. Set server.public_url: "
                      "Microsoft 365 Copilot and Teams need an absolute https URL.");
    spec = json_pack(
        "{s:s,s:{s:s,s:s,s:s,s:{s:s,s:s}},s:[o],s:o,s:O,s:o,s:{s:o,s:o,s:o,s:o}}", "openapi", "3.0.3", "info",
        "title", "quarry", "version", QUARRY_VERSION, "description",
        "Search and answers over the organisation's documents, trimmed to what the signed-in user may read "
        "(document ACLs against LDAP groups). searchKnowledgeBase finds passages; askQuestion answers a "
        "question with citations.",
        "license", "name", "MIT", "url", "https://opensource.org/licenses/MIT", "servers", server, "paths",
        paths, "security", alternatives, "tags", tag_list(), "components", "schemas", schema_map,
        "parameters", param_map, "responses", responses, "securitySchemes", schemes);
    paths = schemes = schema_map = param_map = responses = NULL;
    if (!spec || !(*out = json_dumps(spec, JSON_COMPACT)))
        st = qr_fail(err, QR_ENOMEM, "out of memory building the OpenAPI document");
out:
    json_decref(spec);
    json_decref(paths);
    json_decref(schemes);
    json_decref(alternatives);
    json_decref(schema_map);
    json_decref(param_map);
    json_decref(responses);
    return st;
}

void api_h_openapi(api_req *r)
{
    api_reply_raw(r, 200, "application/json", r->srv->openapi, strlen(r->srv->openapi));
}
