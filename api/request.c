/*
 * Request bodies, from bytes to checked structures, with no HTTP in sight: the fuzzer
 * (fuzz/fuzz_request.c) drives these functions directly. A body is checked before jansson sees
 * it (valid UTF-8, nesting depth: jansson's own limit is 2048 levels, far more than any request
 * needs), parsed with duplicate keys refused, and then every field is read with its type and
 * range checked; anything else is QR_EINVAL with a message naming the field. Unknown fields are
 * ignored, as OpenAI clients send many.
 */
#define _GNU_SOURCE /* asprintf, memmem, strptime, timegm, explicit_bzero */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api_int.h"

bool api_json_depth_ok(const char *text, size_t len, int max_depth)
{
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped character cannot end the string */
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth)
                return false;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return true;
}

json_t *api_json_parse(const char *text, size_t len, int max_depth, char *err)
{
    if (!qr_utf8_valid(text, len)) {
        qr_fail(err, QR_EINVAL, "request body is not valid UTF-8");
        return NULL;
    }
    if (!api_json_depth_ok(text, len, max_depth)) {
        qr_fail(err, QR_ELIMIT, "JSON nested deeper than %d levels (server.json_max_depth)", max_depth);
        return NULL;
    }
    json_error_t jerr;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v) {
        qr_fail(err, QR_EINVAL, "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column,
                jerr.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        qr_fail(err, QR_EINVAL, "the request body must be a JSON object");
        return NULL;
    }
    return v;
}

/* ---- URLs ------------------------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *api_url_decode(const char *s, size_t n, bool plus_space)
{
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n)
                goto bad;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                goto bad;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        }
        if (c < 0x20 || c == 0x7f)
            goto bad;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    if (!qr_utf8_valid(out, o))
        goto bad;
    return out;
bad:
    free(out);
    return NULL;
}

/* ---- typed fields ----------------------------------------------------------------------------- */

bool api_get_str(json_t *obj, const char *key, const char **out, size_t max_len, bool required, char *err)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required) {
            qr_fail(err, QR_EINVAL, "'%s' is required", key);
            return false;
        }
        return true;
    }
    if (!json_is_string(v)) {
        qr_fail(err, QR_EINVAL, "'%s' must be a string", key);
        return false;
    }
    if (json_string_length(v) > max_len) {
        qr_fail(err, QR_ELIMIT, "'%s' is longer than %zu bytes", key, max_len);
        return false;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        qr_fail(err, QR_EINVAL, "'%s' must not contain NUL characters", key);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

bool api_get_int(json_t *obj, const char *key, int64_t *out, int64_t def, int64_t min, int64_t max, char *err)
{
    json_t *v = json_object_get(obj, key);
    *out = def;
    if (!v || json_is_null(v))
        return true;
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
        fabs(json_real_value(v)) < 9e15) {
        *out = (int64_t)json_real_value(v);
    } else if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else {
        qr_fail(err, QR_EINVAL, "'%s' must be an integer", key);
        return false;
    }
    if (*out < min || *out > max) {
        qr_fail(err, QR_EINVAL, "'%s' must be between %lld and %lld", key, (long long)min, (long long)max);
        return false;
    }
    return true;
}

bool api_get_num(json_t *obj, const char *key, double *out, double def, double min, double max, char *err)
{
    json_t *v = json_object_get(obj, key);
    *out = def;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_number(v)) {
        qr_fail(err, QR_EINVAL, "'%s' must be a number", key);
        return false;
    }
    *out = json_number_value(v);
    if (!(*out >= min && *out <= max)) {
        qr_fail(err, QR_EINVAL, "'%s' must be between %g and %g", key, min, max);
        return false;
    }
    return true;
}

bool api_get_bool(json_t *obj, const char *key, bool *out, bool def, char *err)
{
    json_t *v = json_object_get(obj, key);
    *out = def;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_boolean(v)) {
        qr_fail(err, QR_EINVAL, "'%s' must be true or false", key);
        return false;
    }
    *out = json_is_true(v);
    return true;
}

/* ---- searches --------------------------------------------------------------------------------- */

/* "2024-05-01", "2024-05-01T12:00:00Z" or milliseconds since the epoch. */
static bool parse_time(json_t *v, int64_t *ms, char *err)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *ms = json_integer_value(v);
        return true;
    }
    if (json_is_string(v)) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *s = json_string_value(v);
        const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!end) {
            memset(&tm, 0, sizeof(tm));
            end = strptime(s, "%Y-%m-%d", &tm);
        }
        if (end && (*end == '\0' || strcmp(end, "Z") == 0)) {
            *ms = (int64_t)timegm(&tm) * 1000;
            return true;
        }
    }
    qr_fail(err, QR_EINVAL,
            "'filters.updated_after' must be a date (\"2024-05-01\", \"2024-05-01T12:00:00Z\") "
            "or milliseconds since 1970");
    return false;
}

qr_status api_parse_search(json_t *body, bool question_key, size_t default_k, api_search_req *out, char *err)
{
    memset(out, 0, sizeof(*out));
    const char *qkey = question_key ? "question" : "query";
    int64_t k, per_doc;
    if (!api_get_str(body, qkey, &out->query, API_QUERY_MAX, true, err) ||
        !api_get_int(body, "k", &k, (int64_t)default_k, 1, API_MAX_K, err) ||
        !api_get_str(body, "mode", &out->mode, 16, false, err) ||
        !api_get_int(body, "max_per_doc", &per_doc, 0, 0, API_MAX_K, err) ||
        !api_get_str(body, "cursor", &out->cursor, 1024, false, err))
        goto fail;
    out->k = (size_t)k;
    out->max_per_doc = (size_t)per_doc;
    if (!*out->query) {
        qr_fail(err, QR_EINVAL, "'%s' must not be empty", qkey);
        goto fail;
    }
    if (!out->mode)
        out->mode = "hybrid";
    if (strcmp(out->mode, "hybrid") != 0 && strcmp(out->mode, "bm25") != 0 &&
        strcmp(out->mode, "vector") != 0) {
        qr_fail(err, QR_EINVAL, "'mode' must be \"hybrid\", \"bm25\" or \"vector\"");
        goto fail;
    }

    json_t *filters = json_object_get(body, "filters");
    if (filters && !json_is_null(filters)) {
        if (!json_is_object(filters)) {
            qr_fail(err, QR_EINVAL, "'filters' must be an object");
            goto fail;
        }
        const char *known[] = {"doc_ids", "uri_prefix", "content_type", "updated_after"};
        const char *key;
        json_t *v;
        json_object_foreach(filters, key, v)
        {
            bool ok = false;
            for (size_t i = 0; i < 4; i++)
                ok = ok || strcmp(key, known[i]) == 0;
            if (!ok) {
                /* a filter we silently ignored would widen the results the caller expects */
                qr_fail(err, QR_EINVAL,
                        "unknown filter '%.64s' (known: doc_ids, uri_prefix, content_type, "
                        "updated_after)",
                        key);
                goto fail;
            }
        }
        json_t *ids = json_object_get(filters, "doc_ids");
        if (ids && !json_is_null(ids)) {
            if (!json_is_array(ids) || json_array_size(ids) > 1024) {
                qr_fail(err, QR_EINVAL, "'filters.doc_ids' must be a list of at most 1024 document ids");
                goto fail;
            }
            out->ndoc_ids = json_array_size(ids);
            if (out->ndoc_ids && !(out->doc_ids = calloc(out->ndoc_ids, sizeof(*out->doc_ids)))) {
                qr_fail(err, QR_ENOMEM, "out of memory");
                goto fail;
            }
            for (size_t i = 0; i < out->ndoc_ids; i++) {
                json_t *e = json_array_get(ids, i);
                if (!json_is_string(e) || json_string_length(e) == 0 ||
                    json_string_length(e) > STORE_DOC_ID_MAX ||
                    strlen(json_string_value(e)) != json_string_length(e)) {
                    qr_fail(err, QR_EINVAL,
                            "'filters.doc_ids' must hold document ids (strings of 1 to %d bytes)",
                            STORE_DOC_ID_MAX);
                    goto fail;
                }
                out->doc_ids[i] = json_string_value(e);
            }
        }
        if (!api_get_str(filters, "uri_prefix", &out->uri_prefix, STORE_FIELD_MAX, false, err) ||
            !api_get_str(filters, "content_type", &out->content_type, STORE_FIELD_MAX, false, err))
            goto fail;
        json_t *after = json_object_get(filters, "updated_after");
        if (after && !json_is_null(after) && !parse_time(after, &out->updated_after_ms, err))
            goto fail;
    }
    return QR_OK;
fail:
    api_search_req_release(out);
    return QR_EINVAL;
}

void api_search_req_release(api_search_req *s)
{
    free(s->doc_ids);
    s->doc_ids = NULL;
    s->ndoc_ids = 0;
}

/* ---- chat ------------------------------------------------------------------------------------- */

/* The text of a message's content: a string, or the text parts of a list of parts. */
static qr_status message_text(api_chat_req *c, json_t *content, size_t index, const char **out, char *err)
{
    if (!content || json_is_null(content)) {
        *out = "";
        return QR_OK;
    }
    if (json_is_string(content)) {
        if (json_string_length(content) > API_MESSAGE_MAX)
            return qr_fail(err, QR_ELIMIT, "messages[%zu].content is longer than %d bytes", index,
                           API_MESSAGE_MAX);
        if (strlen(json_string_value(content)) != json_string_length(content))
            return qr_fail(err, QR_EINVAL, "messages[%zu].content must not contain NUL characters", index);
        *out = json_string_value(content);
        return QR_OK;
    }
    if (!json_is_array(content))
        return qr_fail(err, QR_EINVAL, "messages[%zu].content must be a string or a list of parts", index);
    qr_buf b;
    qr_buf_init(&b, API_MESSAGE_MAX);
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 || !json_is_string(text)) {
            qr_buf_release(&b);
            return qr_fail(err, QR_EINVAL,
                           "messages[%zu].content[%zu]: only {\"type\":\"text\",\"text\":...} parts "
                           "are supported",
                           index, i);
        }
        if ((qr_buf_len(&b) && qr_buf_putc(&b, '\n')) ||
            qr_buf_append(&b, json_string_value(text), json_string_length(text))) {
            qr_buf_release(&b);
            return qr_fail(err, QR_ELIMIT, "messages[%zu].content is longer than %d bytes", index,
                           API_MESSAGE_MAX);
        }
    }
    if (strlen(qr_buf_str(&b)) != qr_buf_len(&b)) {
        qr_buf_release(&b);
        return qr_fail(err, QR_EINVAL, "messages[%zu].content must not contain NUL characters", index);
    }
    char *s = qr_buf_detach(&b);
    qr_buf_release(&b);
    char **grown = s ? realloc(c->owned, (c->nowned + 1) * sizeof(*grown)) : NULL;
    if (!grown) {
        free(s);
        return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    c->owned = grown;
    c->owned[c->nowned++] = s;
    *out = s;
    return QR_OK;
}

/* The length of the longest prefix of s of at most max bytes that ends on a character boundary. */
static size_t utf8_prefix(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* Words in s, roughly: runs of non-space bytes. */
static size_t count_words(const char *s)
{
    size_t n = 0;
    bool in = false;
    for (; *s; s++) {
        bool space = *s == ' ' || *s == '\n' || *s == '\t' || *s == '\r';
        if (!space && !in)
            n++;
        in = !space;
    }
    return n;
}

qr_status api_parse_chat(json_t *body, size_t default_k, api_chat_req *out, char *err)
{
    memset(out, 0, sizeof(*out));
    qr_status st = QR_EINVAL;
    int64_t max_tokens, n, k;
    json_t *opts = json_object_get(body, "stream_options");
    if (!api_get_str(body, "model", &out->model, 256, false, err) ||
        !api_get_bool(body, "stream", &out->stream, false, err) ||
        !api_get_int(body, "max_tokens", &max_tokens, 0, 1, 1000000, err) ||
        !api_get_num(body, "temperature", &out->temperature, -1, 0, 2, err) ||
        !api_get_int(body, "n", &n, 1, 1, 1, err) ||
        !api_get_int(body, "k", &k, (int64_t)default_k, 1, API_MAX_K, err))
        goto fail;
    if (max_tokens == 0 && !api_get_int(body, "max_completion_tokens", &max_tokens, 0, 1, 1000000, err))
        goto fail;
    out->max_tokens = max_tokens;
    out->k = (size_t)k;
    if (opts && !json_is_null(opts)) {
        if (!json_is_object(opts) || !api_get_bool(opts, "include_usage", &out->include_usage, false, err)) {
            qr_fail(err, QR_EINVAL, "'stream_options' must be an object like {\"include_usage\": true}");
            goto fail;
        }
    }

    json_t *msgs = json_object_get(body, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        qr_fail(err, QR_EINVAL, "'messages' must be a non-empty list of messages");
        goto fail;
    }
    size_t count = json_array_size(msgs);
    if (count > API_MESSAGES_MAX) {
        st = qr_fail(err, QR_ELIMIT, "'messages' holds %zu messages, more than %d", count, API_MESSAGES_MAX);
        goto fail;
    }
    if (!(out->history = calloc(count, sizeof(*out->history)))) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto fail;
    }
    const char *last_user = NULL;
    for (size_t i = 0; i < count; i++) {
        json_t *m = json_array_get(msgs, i);
        const char *role, *text = "";
        if (!json_is_object(m)) {
            qr_fail(err, QR_EINVAL, "messages[%zu] must be an object", i);
            goto fail;
        }
        if (!api_get_str(m, "role", &role, 32, true, err)) {
            qr_fail(err, QR_EINVAL, "messages[%zu].role must be a string", i);
            goto fail;
        }
        if ((st = message_text(out, json_object_get(m, "content"), i, &text, err)))
            goto fail;
        st = QR_EINVAL;
        bool last = i + 1 == count;
        if (last && strcmp(role, "user") != 0) {
            qr_fail(err, QR_EINVAL, "the last message must come from the user");
            goto fail;
        }
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            /* quarry's own system prompt governs the answer: a client's cannot loosen it */
            continue;
        } else if (strcmp(role, "user") == 0) {
            if (!last)
                out->history[out->nhistory++] = (infer_message){INFER_ROLE_USER, text};
            last_user = text;
        } else if (strcmp(role, "assistant") == 0) {
            if (last) {
                qr_fail(err, QR_EINVAL, "the last message must come from the user");
                goto fail;
            }
            out->history[out->nhistory++] = (infer_message){INFER_ROLE_ASSISTANT, text};
        } else if (strcmp(role, "tool") == 0 || strcmp(role, "function") == 0) {
            qr_fail(err, QR_EINVAL, "messages[%zu]: tool messages are not supported (quarry calls no tools)",
                    i);
            goto fail;
        } else {
            qr_fail(err, QR_EINVAL,
                    "messages[%zu].role '%.32s' is not one of system, developer, user, assistant", i, role);
            goto fail;
        }
    }
    if (!last_user) {
        qr_fail(err, QR_EINVAL, "the last message must come from the user");
        goto fail;
    }
    if (!*last_user) {
        qr_fail(err, QR_EINVAL, "the last user message is empty");
        goto fail;
    }
    if (strlen(last_user) > API_QUERY_MAX * 4) {
        st = qr_fail(err, QR_ELIMIT, "the last user message is longer than %d bytes", API_QUERY_MAX * 4);
        goto fail;
    }
    /* A short follow-up ("and for contractors?") means little alone: retrieval also gets the user
     * turn before it. */
    const char *prev = NULL;
    for (size_t i = out->nhistory; i-- > 0;)
        if (out->history[i].role == INFER_ROLE_USER) {
            prev = out->history[i].content;
            break;
        }
    out->question = strdup(last_user);
    size_t qlen = utf8_prefix(last_user, API_QUERY_MAX);
    if (prev && count_words(last_user) < 6 && qlen < API_QUERY_MAX / 2) {
        size_t plen = utf8_prefix(prev, API_QUERY_MAX / 2);
        if (asprintf(&out->search_query, "%.*s %.*s", (int)plen, prev, (int)qlen, last_user) < 0)
            out->search_query = NULL;
    } else {
        out->search_query = strndup(last_user, qlen);
    }
    if (!out->question || !out->search_query) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto fail;
    }
    return QR_OK;
fail:
    api_chat_req_release(out);
    return st ? st : QR_EINVAL;
}

void api_chat_req_release(api_chat_req *c)
{
    free(c->history);
    for (size_t i = 0; i < c->nowned; i++)
        free(c->owned[i]);
    free(c->owned);
    free(c->question);
    free(c->search_query);
    memset(c, 0, sizeof(*c));
}
