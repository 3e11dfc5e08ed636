/*
 * ingest: turns documents into chunks. Extraction (txt, md, html, pdf, docx), normalisation to
 * valid UTF-8, structure-aware chunking, embedding and the write into the store.
 *
 * Built so far: nothing but the module's place in the build; the pipeline lands with the
 * [ingest] issue.
 */
#ifndef QUARRY_INGEST_H
#define QUARRY_INGEST_H

#include <stdbool.h>

#include "core/core.h"

/* False until the ingestion pipeline exists; the CLI uses it to refuse `quarry ingest`. */
bool ingest_available(void);

#endif
