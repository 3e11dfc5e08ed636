/*
 * inference: the OpenAI-compatible backend client (chat, streaming, embeddings), prompt assembly,
 * citations and the extractive fallback. Only this module and ingest/ use libcurl.
 *
 * Built so far: libcurl's version. The client lands with the [inference] issue.
 */
#ifndef QUARRY_INFERENCE_H
#define QUARRY_INFERENCE_H

#include "core/core.h"

/* "7.88.1 (OpenSSL/3.0.x)": the libcurl in use at run time and its TLS backend. */
const char *infer_curl_version(void);

#endif
