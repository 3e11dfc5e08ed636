/*
 * Fuzzes the HTML extractor in-process (libxml2's HTML parser and quarry's tree walk, charset
 * handling and builder), without the sandbox that guards it in production.
 */
#include "fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_extractor(extract_html, data, size, size && (data[0] & 1));
    return 0;
}
