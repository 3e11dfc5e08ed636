/*
 * multipart/form-data parsing over a body held in memory (api/multipart.c). A header of its own,
 * free of libmicrohttpd, so that the request fuzzer can build it alone.
 */
#ifndef QUARRY_API_MULTIPART_H
#define QUARRY_API_MULTIPART_H

#include "core/core.h"

#define API_PARTS_MAX 1000

/* One part. data points into the body given to the parser; the strings are owned. */
typedef struct {
    char *name;         /* the form field name, never NULL */
    char *filename;     /* NULL for a plain field */
    char *content_type; /* the part's Content-Type, NULL when absent */
    const char *data;
    size_t len;
} api_part;

/* Splits body[0..len) by the boundary named in content_type ("multipart/form-data;
 * boundary=..."). On success *parts (api_parts_free) holds *n parts; on error nothing. */
qr_status api_multipart_parse(const char *body, size_t len, const char *content_type, api_part **parts,
                              size_t *n, char *err);
void api_parts_free(api_part *parts, size_t n);
/* A header parameter (e.g. "boundary", "filename") of value[0..len), unquoted (free() it), or
 * NULL when absent or out of memory. */
char *api_header_param(const char *value, size_t len, const char *param);

#endif
