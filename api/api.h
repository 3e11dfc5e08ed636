/*
 * api: the HTTP front door (libmicrohttpd): routes, JSON I/O, SSE, limits, metrics, audit log.
 *
 * Built so far: libmicrohttpd's version. The server lands with the [api] issue.
 */
#ifndef QUARRY_API_H
#define QUARRY_API_H

#include "core/core.h"

/* "0.9.75": the libmicrohttpd in use at run time. */
const char *api_mhd_version(void);

#endif
