/*
 * libcurl's identity, read at run time.
 */
#include <curl/curl.h>
#include <stdio.h>

#include "inference/inference.h"

const char *infer_curl_version(void)
{
    static char version[96];
    if (!version[0]) {
        const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
        snprintf(version, sizeof(version), "%s (%s)", info->version,
                 info->ssl_version ? info->ssl_version : "no TLS");
    }
    return version;
}
