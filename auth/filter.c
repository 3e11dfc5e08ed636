/*
 * What auth puts into LDAP requests: user names checked before use, search filters built from
 * the configured templates with every value escaped per RFC 4515, and DNs parsed per RFC 4514
 * (by libldap) to compare them and to read a group's name from its first RDN.
 */
#include <stdlib.h>
#include <string.h>

#include "auth/auth_int.h"

bool auth_name_ok(const char *s, size_t n)
{
    if (!s || n == 0 || n > AUTH_NAME_MAX || !qr_utf8_valid(s, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

void auth_ascii_lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

qr_status auth_filter_escape(qr_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = c >= 0x20 && c < 0x7f && c != '*' && c != '(' && c != ')' && c != '\\';
        qr_status st;
        if (plain) {
            st = qr_buf_putc(out, (char)c);
        } else {
            char esc[3] = {'\\', hex[c >> 4], hex[c & 0x0f]};
            st = qr_buf_append(out, esc, 3);
        }
        if (st)
            return st;
    }
    return QR_OK;
}

/* The innermost "(...)" around tmpl[at]: [*start, *end) including the parentheses. */
static bool item_around(const char *tmpl, size_t at, size_t *start, size_t *end)
{
    size_t i = at;
    while (i > 0 && tmpl[i - 1] != '(' && tmpl[i - 1] != ')')
        i--;
    if (i == 0 || tmpl[i - 1] != '(')
        return false;
    size_t j = at;
    while (tmpl[j] && tmpl[j] != ')' && tmpl[j] != '(')
        j++;
    if (tmpl[j] != ')')
        return false;
    *start = i - 1;
    *end = j + 1;
    return true;
}

qr_status auth_filter_expand(qr_buf *out, const char *tmpl, const char *s, size_t s_len, const char *dn,
                             const char *uid)
{
    size_t n = strlen(tmpl);
    size_t i = 0;
    while (i < n) {
        qr_status st = QR_OK;
        if (tmpl[i] != '%') {
            /* With no uid, an item holding %u is replaced whole: look ahead from its '('. */
            size_t start, end;
            if (!uid && tmpl[i] == '(') {
                const char *pu = strstr(tmpl + i, "%u");
                if (pu && item_around(tmpl, (size_t)(pu - tmpl), &start, &end) && start == i) {
                    st = qr_buf_puts(out, "(!(objectClass=*))");
                    if (st)
                        return st;
                    i = end;
                    continue;
                }
            }
            st = qr_buf_putc(out, tmpl[i]);
            i++;
        } else {
            char p = tmpl[i + 1];
            if (p == 's' && s)
                st = auth_filter_escape(out, s, s_len);
            else if (p == 'd' && dn)
                st = auth_filter_escape(out, dn, strlen(dn));
            else if (p == 'u' && uid)
                st = auth_filter_escape(out, uid, strlen(uid));
            else if (p == '%')
                st = qr_buf_putc(out, '%');
            else
                return QR_EINVAL;
            i += 2;
        }
        if (st)
            return st;
    }
    return QR_OK;
}

qr_status auth_dn_key(const char *dn, qr_buf *out)
{
    LDAPDN parsed = NULL;
    char *text = NULL;
    qr_status st = QR_EINVAL;
    if (ldap_str2dn(dn, &parsed, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
        return QR_EINVAL;
    if (ldap_dn2str(parsed, &text, LDAP_DN_FORMAT_LDAPV3) == LDAP_SUCCESS && text) {
        auth_ascii_lower(text);
        st = qr_buf_puts(out, text);
    }
    ldap_memfree(text);
    ldap_dnfree(parsed);
    return st;
}

char *auth_dn_first_value(const char *dn, char *type, size_t type_len)
{
    LDAPDN parsed = NULL;
    char *value = NULL;
    if (ldap_str2dn(dn, &parsed, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
        return NULL;
    if (parsed && parsed[0] && parsed[0][0]) {
        const LDAPAVA *ava = parsed[0][0];
        if (!memchr(ava->la_value.bv_val, '\0', ava->la_value.bv_len))
            value = strndup(ava->la_value.bv_val, ava->la_value.bv_len);
        if (type && type_len) {
            size_t n = ava->la_attr.bv_len < type_len - 1 ? ava->la_attr.bv_len : type_len - 1;
            memcpy(type, ava->la_attr.bv_val, n);
            type[n] = '\0';
        }
    }
    ldap_dnfree(parsed);
    return value;
}
