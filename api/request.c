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
#include <stdarg.h>
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
            int hi = qr_hex_digit((unsigned char)s[i + 1]), lo = qr_hex_digit((unsigned char)s[i + 2]);
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
static bool parse_time(json_t *v, const char *name, int64_t *ms, char *err)
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
            "'%s.updated_after' must be a date (\"2024-05-01\", \"2024-05-01T12:00:00Z\") "
            "or milliseconds since 1970",
            name);
    return false;
}

/* The search filters under name ("filters" of a search; "data_sources[0].parameters.filter" of a
 * chat request) into out's filter fields; messages name the field under name. */
static qr_status parse_filters(json_t *filters, const char *name, api_search_req *out, char *err)
{
    if (!filters || json_is_null(filters))
        return QR_OK;
    if (!json_is_object(filters))
        return qr_fail(err, QR_EINVAL, "'%s' must be an object", name);
    const char *known[] = {"doc_ids", "uri_prefix", "content_type", "updated_after"};
    const char *key;
    json_t *v;
    json_object_foreach(filters, key, v)
    {
        bool ok = false;
        for (size_t i = 0; i < 4; i++)
            ok = ok || strcmp(key, known[i]) == 0;
        if (!ok) /* a filter we silently ignored would widen the results the caller expects */
            return qr_fail(err, QR_EINVAL,
                           "unknown filter '%.64s' (known: doc_ids, uri_prefix, content_type, "
                           "updated_after)",
                           key);
    }
    json_t *ids = json_object_get(filters, "doc_ids");
    if (ids && !json_is_null(ids)) {
        if (!json_is_array(ids) || json_array_size(ids) > 1024)
            return qr_fail(err, QR_EINVAL, "'%s.doc_ids' must be a list of at most 1024 document ids", name);
        out->ndoc_ids = json_array_size(ids);
        if (out->ndoc_ids && !(out->doc_ids = calloc(out->ndoc_ids, sizeof(*out->doc_ids))))
            return qr_fail(err, QR_ENOMEM, "out of memory");
        for (size_t i = 0; i < out->ndoc_ids; i++) {
            json_t *e = json_array_get(ids, i);
            if (!json_is_string(e) || json_string_length(e) == 0 ||
                json_string_length(e) > STORE_DOC_ID_MAX ||
                strlen(json_string_value(e)) != json_string_length(e))
                return qr_fail(err, QR_EINVAL,
                               "'%s.doc_ids' must hold document ids (strings of 1 to %d bytes)", name,
                               STORE_DOC_ID_MAX);
            out->doc_ids[i] = json_string_value(e);
        }
    }
    if (!api_get_str(filters, "uri_prefix", &out->uri_prefix, STORE_FIELD_MAX, false, err) ||
        !api_get_str(filters, "content_type", &out->content_type, STORE_FIELD_MAX, false, err))
        return QR_EINVAL;
    json_t *after = json_object_get(filters, "updated_after");
    if (after && !json_is_null(after) && !parse_time(after, name, &out->updated_after_ms, err))
        return QR_EINVAL;
    return QR_OK;
}

qr_status api_parse_search(json_t *body, bool question_key, size_t default_k, api_search_req *out, char *err)
{
    memset(out, 0, sizeof(*out));
    const char *qkey = question_key ? "question" : "query";
    int64_t k, per_doc;
    bool rerank = true;
    if (!api_get_str(body, qkey, &out->query, API_QUERY_MAX, true, err) ||
        !api_get_int(body, "k", &k, (int64_t)default_k, 1, API_MAX_K, err) ||
        !api_get_str(body, "mode", &out->mode, 16, false, err) ||
        !api_get_int(body, "max_per_doc", &per_doc, 0, 0, API_MAX_K, err) ||
        !api_get_str(body, "cursor", &out->cursor, 1024, false, err) ||
        !api_get_bool(body, "rerank", &rerank, true, err))
        goto fail;
    out->no_rerank = !rerank;
    out->k = (size_t)k;
    out->max_per_doc = (size_t)per_doc;
    if (!*out->query) {
        qr_fail(err, QR_EINVAL, "'%s' must not be empty", qkey);
        goto fail;
    }
    /* no mode: the server's default (retrieval.mode) */
    if (out->mode && strcmp(out->mode, "hybrid") != 0 && strcmp(out->mode, "bm25") != 0 &&
        strcmp(out->mode, "vector") != 0) {
        qr_fail(err, QR_EINVAL, "'mode' must be \"hybrid\", \"bm25\" or \"vector\"");
        goto fail;
    }

    if (parse_filters(json_object_get(body, "filters"), "filters", out, err))
        goto fail;
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

/* Names the field to blame (and the code, when not the status's) and returns false. */
static bool blame(api_refusal *why, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool blame(api_refusal *why, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->param, sizeof(why->param), fmt, ap);
    va_end(ap);
    why->code = code;
    return false;
}

/* The top-level fields of a chat request. OpenAI answers a field it does not know with 400, and so
 * does quarry (a client relying on a parameter should learn that it is not applied), but for the
 * fields below: accepted ones are read by api_parse_chat; refused ones change what the answer
 * would be in ways quarry cannot honour (tools, structured output, several choices, logprobs,
 * audio), so any value but null is a 400 naming them; ignored ones are bookkeeping. */
static const char *const chat_accepted[] = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "user",
    "n",
    "k",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "response_format",
    "modalities",
    "data_sources",
    "metadata",
    "store",
};
static const char *const chat_refused[] = {
    "tools",        "tool_choice", "functions", "function_call", "parallel_tool_calls",
    "top_logprobs", "logit_bias",  "audio",     "prediction",    "web_search_options",
};

static bool in_list(const char *key, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(key, list[i]) == 0)
            return true;
    return false;
}

static bool chat_fields_known(json_t *body, api_refusal *why, char *err)
{
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (in_list(key, chat_accepted, sizeof(chat_accepted) / sizeof(chat_accepted[0])))
            continue;
        if (strlen(key) >= API_PARAM_MAX) {
            qr_fail(err, QR_EINVAL, "unrecognized request argument supplied");
            return blame(why, "unknown_parameter", "%s", "");
        }
        if (in_list(key, chat_refused, sizeof(chat_refused) / sizeof(chat_refused[0]))) {
            if (json_is_null(v))
                continue;
            qr_fail(err, QR_EINVAL,
                    "'%s' is not supported: quarry answers from the documents only, with text", key);
            return blame(why, "unsupported_parameter", "%s", key);
        }
        qr_fail(err, QR_EINVAL, "unrecognized request argument supplied: %s", key);
        return blame(why, "unknown_parameter", "%s", key);
    }
    return true;
}

/* Fields accepted only at the value that changes nothing. */
static bool chat_values_supported(json_t *body, api_refusal *why, char *err)
{
    int64_t n;
    if (!api_get_int(body, "n", &n, 1, 1, 1, err)) {
        qr_fail(err, QR_EINVAL, "'n' must be 1: quarry drafts one answer per request");
        return blame(why, "unsupported_value", "n");
    }
    bool logprobs;
    if (!api_get_bool(body, "logprobs", &logprobs, false, err))
        return blame(why, NULL, "logprobs");
    if (logprobs) {
        qr_fail(err, QR_EINVAL, "'logprobs' is not supported (must be false)");
        return blame(why, "unsupported_value", "logprobs");
    }
    json_t *rf = json_object_get(body, "response_format");
    if (rf && !json_is_null(rf)) {
        json_t *type = json_object_get(rf, "type");
        if (!json_is_object(rf) || !json_is_string(type) || strcmp(json_string_value(type), "text") != 0 ||
            json_object_size(rf) != 1) {
            qr_fail(err, QR_EINVAL, "'response_format' must be {\"type\":\"text\"}: quarry answers in text");
            return blame(why, "unsupported_value", "response_format");
        }
    }
    json_t *mod = json_object_get(body, "modalities");
    if (mod && !json_is_null(mod)) {
        json_t *m0 = json_array_get(mod, 0);
        if (!json_is_array(mod) || json_array_size(mod) != 1 || !json_is_string(m0) ||
            strcmp(json_string_value(m0), "text") != 0) {
            qr_fail(err, QR_EINVAL, "'modalities' must be [\"text\"]: quarry answers in text");
            return blame(why, "unsupported_value", "modalities");
        }
    }
    json_t *md = json_object_get(body, "metadata"), *keep = json_object_get(body, "store");
    if (md && !json_is_null(md) && !json_is_object(md)) {
        qr_fail(err, QR_EINVAL, "'metadata' must be an object");
        return blame(why, NULL, "metadata");
    }
    if (keep && !json_is_null(keep) && !json_is_boolean(keep)) {
        qr_fail(err, QR_EINVAL, "'store' must be true or false");
        return blame(why, NULL, "store");
    }
    return true;
}

/* max_tokens, temperature, top_p, penalties, seed, stop and user, within their ranges and caps. */
static bool chat_options(json_t *body, const api_chat_limits *lim, api_chat_req *out, api_refusal *why,
                         char *err)
{
    infer_options *o = &out->options;
    int64_t max_tokens = 0, max_completion = 0;
    const char *mt[] = {"max_tokens", "max_completion_tokens"};
    int64_t *mv[] = {&max_tokens, &max_completion};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(body, mt[i]);
        if (!api_get_int(body, mt[i], mv[i], 0, INT64_MIN, INT64_MAX, err))
            return blame(why, NULL, "%s", mt[i]);
        if (v && !json_is_null(v) && *mv[i] < 1) {
            qr_fail(err, QR_EINVAL, "'%s' must be at least 1", mt[i]);
            return blame(why, NULL, "%s", mt[i]);
        }
        if (*mv[i] > lim->max_tokens) {
            qr_fail(err, QR_EINVAL,
                    "'%s' is %lld, more than this server allows: at most %lld (inference.max_tokens)", mt[i],
                    (long long)*mv[i], (long long)lim->max_tokens);
            return blame(why, NULL, "%s", mt[i]);
        }
    }
    if (max_tokens && max_completion && max_tokens != max_completion) {
        qr_fail(err, QR_EINVAL, "'max_tokens' and 'max_completion_tokens' disagree: send one of them");
        return blame(why, NULL, "max_completion_tokens");
    }
    o->max_tokens = max_completion ? max_completion : max_tokens;
    double d;
    if (!api_get_num(body, "temperature", &d, NAN, 0, 2, err))
        return blame(why, NULL, "temperature");
    o->temperature = d;
    if (!api_get_num(body, "top_p", &d, NAN, 0, 1, err))
        return blame(why, NULL, "top_p");
    o->top_p = d;
    if (!api_get_num(body, "presence_penalty", &d, NAN, -2, 2, err))
        return blame(why, NULL, "presence_penalty");
    o->presence_penalty = d;
    if (!api_get_num(body, "frequency_penalty", &d, NAN, -2, 2, err))
        return blame(why, NULL, "frequency_penalty");
    o->frequency_penalty = d;
    json_t *seed = json_object_get(body, "seed");
    if (seed && !json_is_null(seed)) {
        if (!api_get_int(body, "seed", &o->seed, 0, INT64_MIN, INT64_MAX, err))
            return blame(why, NULL, "seed");
        o->has_seed = true;
    }
    json_t *stop = json_object_get(body, "stop");
    if (stop && !json_is_null(stop)) {
        json_t *one[1] = {stop};
        json_t **list = json_is_array(stop) ? NULL : one;
        size_t n = json_is_array(stop) ? json_array_size(stop) : 1;
        if (n > INFER_STOP_MAX) {
            qr_fail(err, QR_EINVAL, "'stop' holds %zu sequences, more than %d", n, INFER_STOP_MAX);
            return blame(why, NULL, "stop");
        }
        for (size_t i = 0; i < n; i++) {
            json_t *e = list ? list[i] : json_array_get(stop, i);
            if (!json_is_string(e) || json_string_length(e) == 0 ||
                json_string_length(e) > API_STOP_LEN_MAX ||
                strlen(json_string_value(e)) != json_string_length(e)) {
                qr_fail(err, QR_EINVAL,
                        "'stop' must be a string or a list of up to %d strings of 1 to %d bytes",
                        INFER_STOP_MAX, API_STOP_LEN_MAX);
                return blame(why, NULL, "stop");
            }
            o->stop[o->stop_count++] = json_string_value(e);
        }
    }
    if (!api_get_str(body, "user", &out->end_user, API_END_USER_MAX, false, err))
        return blame(why, NULL, "user");
    o->user = out->end_user;
    return true;
}

/* data_sources: one source, of type "quarry" (quarry's own search filters) or Azure OpenAI's
 * "azure_search" (its connection settings ignored: quarry searches its own store, for the caller). */
static bool chat_data_sources(json_t *body, api_chat_req *out, api_refusal *why, char *err)
{
    json_t *ds = json_object_get(body, "data_sources");
    if (!ds || json_is_null(ds))
        return true;
    if (!json_is_array(ds)) {
        qr_fail(err, QR_EINVAL, "'data_sources' must be a list of one data source");
        return blame(why, NULL, "data_sources");
    }
    if (json_array_size(ds) == 0)
        return true;
    if (json_array_size(ds) > 1) {
        qr_fail(err, QR_EINVAL, "'data_sources' holds %zu data sources: quarry searches one",
                json_array_size(ds));
        return blame(why, "unsupported_value", "data_sources");
    }
    json_t *src = json_array_get(ds, 0);
    const char *type = NULL;
    if (!json_is_object(src)) {
        qr_fail(err, QR_EINVAL, "'data_sources[0]' must be an object with a type");
        return blame(why, NULL, "data_sources[0]");
    }
    if (!api_get_str(src, "type", &type, 64, true, err))
        return blame(why, NULL, "data_sources[0].type");
    bool azure = strcmp(type, "azure_search") == 0;
    if (!azure && strcmp(type, "quarry") != 0) {
        qr_fail(err, QR_EINVAL,
                "'data_sources[0].type' '%.64s' is not supported (\"quarry\" or \"azure_search\")", type);
        return blame(why, "unsupported_value", "data_sources[0].type");
    }
    json_t *params = json_object_get(src, "parameters");
    if (!params || json_is_null(params))
        return true;
    if (!json_is_object(params)) {
        qr_fail(err, QR_EINVAL, "'data_sources[0].parameters' must be an object");
        return blame(why, NULL, "data_sources[0].parameters");
    }
    if (!azure) {
        /* quarry's own shape: every parameter is read, so an unknown one is a mistake */
        const char *key;
        json_t *v;
        json_object_foreach(params, key, v)
        {
            if (strcmp(key, "filter") && strcmp(key, "top_n_documents") && strcmp(key, "in_scope")) {
                qr_fail(
                    err, QR_EINVAL,
                    "unknown parameter '%.32s' of a quarry data source (filter, top_n_documents, in_scope)",
                    key);
                return blame(why, "unknown_parameter", "data_sources[0].parameters.%.20s", key);
            }
        }
        if (parse_filters(json_object_get(params, "filter"), "data_sources[0].parameters.filter",
                          &out->filters, err))
            return blame(why, NULL, "data_sources[0].parameters.filter");
    } else {
        /* Azure AI Search's OData filters are not mapped: refusing one beats widening the search */
        json_t *f = json_object_get(params, "filter");
        if (f && !json_is_null(f) && (!json_is_string(f) || json_string_length(f) > 0)) {
            qr_fail(
                err, QR_EINVAL,
                "'data_sources[0].parameters.filter': OData filters are not supported; use a data source of "
                "type \"quarry\" with quarry's filters");
            return blame(why, "unsupported_value", "data_sources[0].parameters.filter");
        }
    }
    int64_t top_n;
    if (!api_get_int(params, "top_n_documents", &top_n, 0, 1, API_MAX_K, err)) {
        qr_fail(err, QR_EINVAL,
                "'data_sources[0].parameters.top_n_documents' must be an integer from 1 to %d", API_MAX_K);
        return blame(why, NULL, "data_sources[0].parameters.top_n_documents");
    }
    if (top_n)
        out->k = (size_t)top_n;
    bool in_scope;
    if (!api_get_bool(params, "in_scope", &in_scope, true, err))
        return blame(why, NULL, "data_sources[0].parameters.in_scope");
    if (!in_scope) {
        qr_fail(err, QR_EINVAL,
                "'data_sources[0].parameters.in_scope' false is not supported: quarry answers only from the "
                "documents");
        return blame(why, "unsupported_value", "data_sources[0].parameters.in_scope");
    }
    return true;
}

qr_status api_parse_chat(json_t *body, const api_chat_limits *lim, api_chat_req *out, api_refusal *why,
                         char *err)
{
    memset(out, 0, sizeof(*out));
    infer_options_init(&out->options);
    api_refusal own;
    if (!why)
        why = &own;
    why->param[0] = '\0';
    why->code = NULL;
    qr_status st = QR_EINVAL;
    int64_t k;
    json_t *opts = json_object_get(body, "stream_options");
    if (!chat_fields_known(body, why, err) || !chat_values_supported(body, why, err))
        goto fail;
    if (!api_get_str(body, "model", &out->model, 256, false, err)) {
        blame(why, NULL, "model");
        goto fail;
    }
    if (!api_get_bool(body, "stream", &out->stream, false, err)) {
        blame(why, NULL, "stream");
        goto fail;
    }
    if (!api_get_int(body, "k", &k, (int64_t)lim->default_k, 1, API_MAX_K, err)) {
        blame(why, NULL, "k");
        goto fail;
    }
    out->k = (size_t)k;
    if (!chat_options(body, lim, out, why, err) || !chat_data_sources(body, out, why, err))
        goto fail;
    if (opts && !json_is_null(opts)) {
        if (!json_is_object(opts) || !api_get_bool(opts, "include_usage", &out->include_usage, false, err)) {
            qr_fail(err, QR_EINVAL, "'stream_options' must be an object like {\"include_usage\": true}");
            blame(why, NULL, "stream_options");
            goto fail;
        }
    }
    /* from here on every refusal is about the messages */
    blame(why, NULL, "messages");

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
    why->param[0] = '\0';
    return QR_OK;
fail:
    api_chat_req_release(out);
    return st ? st : QR_EINVAL;
}

void api_chat_req_release(api_chat_req *c)
{
    api_search_req_release(&c->filters);
    free(c->history);
    for (size_t i = 0; i < c->nowned; i++)
        free(c->owned[i]);
    free(c->owned);
    free(c->question);
    free(c->search_query);
    memset(c, 0, sizeof(*c));
}
