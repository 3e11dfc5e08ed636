/*
 * retrieval: query parsing, permission-trimmed BM25 and vector search, fusion, snippets and the
 * evaluation metrics.
 *
 * Built so far: nothing but the module's place in the build; search lands with the [retrieval]
 * issue.
 */
#ifndef QUARRY_RETRIEVAL_H
#define QUARRY_RETRIEVAL_H

#include <stdbool.h>

#include "core/core.h"

/* False until search exists; the CLI uses it to refuse `quarry search` and `quarry eval`. */
bool retrieval_available(void);

#endif
