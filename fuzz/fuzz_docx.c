/*
 * Fuzzes the DOCX extractor in-process: libzip's archive reading, the zip-bomb checks, and the
 * streaming WordprocessingML and styles readers.
 */
#include "fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_extractor(extract_docx, data, size, false);
    return 0;
}
