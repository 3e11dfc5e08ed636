/*
 * Fuzzes the JSON-lines scanner against jansson: whatever line the scanner reads, jansson
 * (json_loadb with JSON_REJECT_DUPLICATES) must read too, with the same "_id", "text", "title",
 * "url", "uri" strings, the same "acl" list and an empty "metadata" object where the scanner saw
 * one. The scanner may decline any line; it must never read past the input or its block.
 */
#include <jansson.h>

#include "fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly size bytes, so that AddressSanitizer sees any read past the end */
    char *raw = malloc(size ? size : 1);
    if (!raw)
        return 0;
    memcpy(raw, data, size);
    ingest_jsonl_line l;
    char *block = NULL;
    if (!ingest_jsonl_scan(raw, size, &l, &block)) {
        FUZZ_CHECK(block == NULL);
        free(raw);
        return 0;
    }
    json_error_t jerr;
    json_t *obj = json_loadb(raw, size, JSON_REJECT_DUPLICATES, &jerr);
    FUZZ_CHECK(json_is_object(obj));
    const char *names[] = {"_id", "text", "title", "url", "uri"};
    const char *mine[] = {l.id, l.text, l.title, l.url, l.uri};
    for (size_t i = 0; i < 5; i++) {
        json_t *v = json_object_get(obj, names[i]);
        FUZZ_CHECK(!v == !mine[i]);
        FUZZ_CHECK(!v || (json_is_string(v) && strcmp(json_string_value(v), mine[i]) == 0));
    }
    FUZZ_CHECK(!l.text || json_string_length(json_object_get(obj, "text")) == l.text_len);
    json_t *acl = json_object_get(obj, "acl");
    FUZZ_CHECK(!acl == !l.has_acl);
    FUZZ_CHECK(!acl || json_array_size(acl) == l.nacl);
    const char *p = l.acl;
    for (size_t i = 0; acl && i < l.nacl; i++, p += strlen(p) + 1)
        FUZZ_CHECK(strcmp(json_string_value(json_array_get(acl, i)), p) == 0);
    json_t *meta = json_object_get(obj, "metadata");
    FUZZ_CHECK(!meta == !l.metadata_empty);
    FUZZ_CHECK(!meta || (json_is_object(meta) && json_object_size(meta) == 0));
    json_decref(obj);
    free(block);
    free(raw);
    return 0;
}
