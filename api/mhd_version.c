/*
 * libmicrohttpd's identity, read at run time.
 */
#include <microhttpd.h>

#include "api/api.h"

const char *api_mhd_version(void)
{
    return MHD_get_version();
}
