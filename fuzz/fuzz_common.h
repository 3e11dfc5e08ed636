/*
 * Shared pieces of quarry's libFuzzer targets: default limits small enough that a run stays
 * fast, and the checks every extracted document must pass (valid UTF-8, sections in order and
 * covering the text). A failed check aborts, which libFuzzer reports as a crash with the input.
 */
#ifndef QUARRY_FUZZ_COMMON_H
#define QUARRY_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest_int.h"

#define FUZZ_CHECK(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

static inline ingest_limits fuzz_limits(void)
{
    ingest_limits lim;
    ingest_limits_default(&lim);
    lim.max_document_bytes = 1u << 20;
    lim.zip_max_bytes = 4u << 20;
    return lim;
}

/* Runs an in-process extractor on data and checks what the builder produced. */
static inline void fuzz_extractor(qr_status (*fn)(const char *, size_t, const ingest_limits *, doc_builder *,
                                                  char *),
                                  const uint8_t *data, size_t size, bool reject)
{
    ingest_limits lim = fuzz_limits();
    lim.reject_invalid_utf8 = reject;
    doc_builder b;
    char err[QR_ERR_LEN] = "";
    builder_init(&b, lim.max_document_bytes, reject);
    qr_status st = fn((const char *)data, size, &lim, &b, err);
    ingest_text t = {0};
    if (!st)
        st = builder_finish(&b, &t, err);
    builder_release(&b);
    if (st) {
        FUZZ_CHECK(err[0] != '\0'); /* every failure explains itself */
        return;
    }
    FUZZ_CHECK(t.len == strlen(t.text));
    FUZZ_CHECK(qr_utf8_valid(t.text, t.len));
    FUZZ_CHECK(!t.title || qr_utf8_valid(t.title, strlen(t.title)));
    size_t pos = 0;
    for (size_t i = 0; i < t.nsections; i++) {
        FUZZ_CHECK(t.sections[i].start == pos && t.sections[i].end >= pos && t.sections[i].end <= t.len);
        FUZZ_CHECK(t.sections[i].level >= 0 && t.sections[i].level <= 6);
        pos = t.sections[i].end;
    }
    FUZZ_CHECK(pos == t.len);
    for (size_t i = 0; i < t.len; i++)
        FUZZ_CHECK((unsigned char)t.text[i] >= 0x20 || t.text[i] == '\n');
    ingest_text_release(&t);
}

#endif
