/*
 * What auth puts into LDAP requests: user names checked before use, search filters built from
 * the configured templates with every value escaped per RFC 4515, and DNs parsed per RFC 4514
 * (by libldap) to compare them and to read a group's name from its first RDN; and the spelling
 * under which failed logins of a name are counted.
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

/* The code point at s[*i] (valid UTF-8), advancing *i. */
static uint32_t utf8_next(const unsigned char *s, size_t len, size_t *i)
{
    uint32_t c = s[(*i)++];
    int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
    c &= more == 3 ? 0x07 : more == 2 ? 0x0f : more == 1 ? 0x1f : 0x7f;
    while (more-- > 0 && *i < len)
        c = (c << 6) | (s[(*i)++] & 0x3f);
    return c;
}

/* RFC 4518's mapping (section 2.2), the parts user names meet: invisible characters go ... */
static bool maps_to_nothing(uint32_t c)
{
    return (c >= 0x80 && c <= 0x9f && c != 0x85) || c == 0xad || c == 0x34f || c == 0x6dd || c == 0x70f ||
           c == 0x1806 || (c >= 0x180b && c <= 0x180e) || (c >= 0x200b && c <= 0x200f) ||
           (c >= 0x202a && c <= 0x202e) || (c >= 0x2060 && c <= 0x2063) || (c >= 0x206a && c <= 0x206f) ||
           (c >= 0xfe00 && c <= 0xfe0f) || c == 0xfeff || (c >= 0xfff9 && c <= 0xfffc);
}

/* ... and separators become a space */
static bool maps_to_space(uint32_t c)
{
    return c == ' ' || c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
           c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

void auth_limit_name(const char *name, size_t len, char *out, size_t cap)
{
    const unsigned char *s = (const unsigned char *)name;
    size_t o = 0, i = 0;
    bool space = false;
    if (cap == 0)
        return;
    while (i < len) {
        uint32_t c = utf8_next(s, len, &i);
        if (maps_to_nothing(c))
            continue;
        if (maps_to_space(c)) {
            space = o > 0; /* leading spaces go; inner runs become one; trailing ones never land */
            continue;
        }
        if (c >= 0xff01 && c <= 0xff5e) /* fullwidth ASCII, as NFKC has it */
            c -= 0xfee0;
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        unsigned char enc[6];
        size_t n = 0;
        if (space)
            enc[n++] = ' ';
        if (c < 0x80) {
            enc[n++] = (unsigned char)c;
        } else if (c < 0x800) {
            enc[n++] = (unsigned char)(0xc0 | c >> 6);
            enc[n++] = (unsigned char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            enc[n++] = (unsigned char)(0xe0 | c >> 12);
            enc[n++] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
            enc[n++] = (unsigned char)(0x80 | (c & 0x3f));
        } else {
            enc[n++] = (unsigned char)(0xf0 | c >> 18);
            enc[n++] = (unsigned char)(0x80 | ((c >> 12) & 0x3f));
            enc[n++] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
            enc[n++] = (unsigned char)(0x80 | (c & 0x3f));
        }
        if (o + n >= cap)
            break;
        memcpy(out + o, enc, n);
        o += n;
        space = false;
    }
    out[o] = '\0';
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
