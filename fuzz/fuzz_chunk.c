/*
 * Fuzzes the chunker: the input (after two bytes that pick the budget and the overlap) is read
 * as markdown, so it has sections, and every chunker guarantee is checked: chunks in order,
 * every byte covered, character boundaries, one section each with its heading path, and no
 * chunk over the budget.
 */
#include "fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    ingest_limits lim = fuzz_limits();
    ingest_chunk_opts o = {8 + data[0] % 120, (double)(data[1] % 6) / 10.0};
    doc_builder b;
    char err[QR_ERR_LEN];
    builder_init(&b, lim.max_document_bytes, false);
    ingest_text t = {0};
    qr_status st = extract_markdown((const char *)data + 2, size - 2, &lim, &b, err);
    if (!st)
        st = builder_finish(&b, &t, err);
    builder_release(&b);
    if (st)
        return 0;
    ingest_chunk *c;
    size_t n;
    FUZZ_CHECK(ingest_chunk_text(&t, &o, &c, &n, err) == QR_OK);
    FUZZ_CHECK(t.len ? n > 0 : n == 0);
    size_t covered = 0, sec = 0;
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(c[i].start < c[i].end && c[i].start <= covered && c[i].end >= covered);
        FUZZ_CHECK(i == 0 || c[i].start > c[i - 1].start);
        FUZZ_CHECK(((unsigned char)t.text[c[i].start] & 0xC0) != 0x80);
        FUZZ_CHECK(c[i].end == t.len || ((unsigned char)t.text[c[i].end] & 0xC0) != 0x80);
        FUZZ_CHECK(ingest_count_tokens(t.text + c[i].start, c[i].end - c[i].start) <= o.max_tokens);
        while (sec < t.nsections && t.sections[sec].end <= c[i].start)
            sec++;
        FUZZ_CHECK(sec < t.nsections && c[i].end <= t.sections[sec].end);
        FUZZ_CHECK(strcmp(c[i].headings, t.sections[sec].heading_path) == 0);
        if (o.overlap == 0 && i)
            FUZZ_CHECK(c[i].start == c[i - 1].end);
        covered = c[i].end;
    }
    FUZZ_CHECK(covered == t.len);
    ingest_chunks_free(c, n);
    ingest_text_release(&t);
    return 0;
}
