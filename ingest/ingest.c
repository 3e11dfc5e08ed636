/*
 * The ingestion pipeline's entry points. Empty until the [ingest] issue.
 */
#include "ingest/ingest.h"

bool ingest_available(void)
{
    return false;
}
