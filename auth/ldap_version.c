/*
 * The OpenLDAP client library's identity, read at run time from the library itself.
 */
#include <ldap.h>
#include <stdio.h>

#include "auth/auth.h"

const char *auth_ldap_version(void)
{
    static char version[64];
    if (version[0])
        return version;
    LDAPAPIInfo info = {.ldapai_info_version = LDAP_API_INFO_VERSION};
    if (ldap_get_option(NULL, LDAP_OPT_API_INFO, &info) != LDAP_OPT_SUCCESS) {
        snprintf(version, sizeof(version), "%s %d.%d.%d (headers)", LDAP_VENDOR_NAME,
                 LDAP_VENDOR_VERSION_MAJOR, LDAP_VENDOR_VERSION_MINOR, LDAP_VENDOR_VERSION_PATCH);
        return version;
    }
    int v = info.ldapai_vendor_version; /* 20513 for 2.5.13 */
    snprintf(version, sizeof(version), "%s %d.%d.%d",
             info.ldapai_vendor_name ? info.ldapai_vendor_name : "LDAP", v / 10000, v / 100 % 100, v % 100);
    ldap_memfree(info.ldapai_vendor_name);
    ldap_memvfree((void **)info.ldapai_extensions);
    return version;
}
