/*
 * Fuzzes quarry's side of PDF extraction: the parser of pdftotext's -htmlmeta output (title
 * entities, the <pre> text). pdftotext itself is poppler's, runs as a separate sandboxed
 * process and is fuzzed upstream; it is not run here.
 */
#include "fuzz/fuzz_common.h"

static qr_status parse_output(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b,
                              char *err)
{
    (void)lim;
    return extract_pdftotext_output(bytes, len, b, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_extractor(parse_output, data, size, false);
    return 0;
}
