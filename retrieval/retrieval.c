/*
 * Retrieval's entry points. Empty until the [retrieval] issue.
 */
#include "retrieval/retrieval.h"

bool retrieval_available(void)
{
    return false;
}
