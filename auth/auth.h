/*
 * auth: who the caller is and which principals they hold. LDAP authentication and group
 * resolution, the principal cache, tokens and service API keys live here; only this module sees
 * LDAP handles.
 *
 * Built so far: the OpenLDAP client library's version. Authentication lands with the [auth] issue.
 */
#ifndef QUARRY_AUTH_H
#define QUARRY_AUTH_H

#include "core/core.h"

/* "OpenLDAP 2.5.13": the client library in use at run time. */
const char *auth_ldap_version(void);

#endif
