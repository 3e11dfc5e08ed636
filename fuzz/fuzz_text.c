/*
 * Fuzzes the plain-text and markdown extractors (quarry's own parsers, run in-process) and type
 * detection. The first byte picks the extractor and the UTF-8 policy.
 */
#include "fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *type;
    char err[QR_ERR_LEN];
    ingest_detect_type(data + 1, size - 1, NULL, NULL, &type, err);
    fuzz_extractor(data[0] & 1 ? extract_markdown : extract_plain, data + 1, size - 1, data[0] & 2);
    return 0;
}
