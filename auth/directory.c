/*
 * Reading the directory: a user's entry by name (ldap.user_filter under ldap.user_base) and the
 * user's transitive groups, expanded breadth-first. Level one applies ldap.group_filter to the
 * user's DN and uid (or reads ldap.memberof_attr from the user's entry); every further level
 * applies it to the DNs of the groups found on the level before, batched into one OR filter per
 * search, until nothing new turns up or ldap.nested_depth levels have been followed. A set of
 * canonical DNs stops cycles. Active Directory can do the whole walk server-side: set
 * ldap.group_filter to (member:1.2.840.113556.1.4.1941:=%d) and ldap.nested_depth to 0.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth_int.h"

#define FILTER_CAP   (1u << 20)
#define BATCH_GROUPS 32

typedef struct {
    char **items;
    size_t len, cap;
} strvec;

static void strvec_release(strvec *v)
{
    for (size_t i = 0; i < v->len; i++)
        free(v->items[i]);
    free(v->items);
    memset(v, 0, sizeof(*v));
}

/* Takes ownership of s (freed on failure). */
static qr_status strvec_push(strvec *v, char *s)
{
    if (!s)
        return QR_ENOMEM;
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        char **items = realloc(v->items, cap * sizeof(*items));
        if (!items) {
            free(s);
            return QR_ENOMEM;
        }
        v->items = items;
        v->cap = cap;
    }
    v->items[v->len++] = s;
    return QR_OK;
}

void auth_user_release(auth_user *u)
{
    free(u->dn);
    free(u->uid_raw);
    free(u->uid);
    free(u->display_name);
    free(u->mail);
    for (size_t i = 0; i < u->nmember_of; i++)
        free(u->member_of[i]);
    free(u->member_of);
    memset(u, 0, sizeof(*u));
}

/* The first value of attr as a string; NULL when absent, binary (a NUL) or not UTF-8. */
static char *first_value(LDAP *ld, LDAPMessage *e, const char *attr)
{
    if (!attr || !*attr)
        return NULL;
    struct berval **vals = ldap_get_values_len(ld, e, attr);
    char *s = NULL;
    if (vals && vals[0] && !memchr(vals[0]->bv_val, '\0', vals[0]->bv_len) &&
        qr_utf8_valid(vals[0]->bv_val, vals[0]->bv_len))
        s = strndup(vals[0]->bv_val, vals[0]->bv_len);
    ldap_value_free_len(vals);
    return s;
}

qr_status auth_dir_find_user(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const char *name, size_t len,
                             auth_user *u, char *err)
{
    return auth_dir_find_user_by(ctx, c, deadline, ctx->s.user_filter, name, len, u, err);
}

qr_status auth_dir_find_user_by(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const char *tmpl,
                                const char *name, size_t len, auth_user *u, char *err)
{
    const auth_settings *s = &ctx->s;
    LDAPMessage *res = NULL;
    qr_buf filter;
    qr_buf_init(&filter, FILTER_CAP);
    memset(u, 0, sizeof(*u));
    qr_status st = auth_filter_expand(&filter, tmpl, name, len, NULL, NULL);
    if (st) {
        st = qr_fail(err, st, "the user filter '%s' cannot be filled in", tmpl);
        goto out;
    }
    char *attrs[] = {s->uid_attr, "displayName", "cn", "mail", *s->memberof_attr ? s->memberof_attr : NULL,
                     NULL};
    int rc;
    /* two entries are enough to tell "exactly one" from "ambiguous" */
    st = auth_conn_search(ctx, c, deadline, s->user_base, LDAP_SCOPE_SUBTREE, qr_buf_str(&filter), attrs, 2,
                          &res, &rc, err);
    if (st)
        goto out;
    if (rc == LDAP_NO_SUCH_OBJECT) {
        st = qr_fail(err, QR_EUNAVAILABLE, "ldap.user_base '%s' does not exist on the LDAP server",
                     s->user_base);
        goto out;
    }
    int count = ldap_count_entries(c->svc, res);
    if (count == 0 || rc == LDAP_SIZELIMIT_EXCEEDED || count > 1) {
        st =
            qr_fail(err, QR_ENOTFOUND, count == 0 ? "no such user" : "the user name matches several entries");
        goto out;
    }
    LDAPMessage *e = ldap_first_entry(c->svc, res);
    char *dn = ldap_get_dn(c->svc, e);
    u->dn = dn ? strdup(dn) : NULL;
    ldap_memfree(dn);
    if (!u->dn) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    /* the uid is the directory's, never the name as typed: "ava ", " ava" and fullwidth "ａｖａ"
     * all find ava's entry, and must all become the same principal, token and audit name */
    u->uid_raw = first_value(c->svc, e, s->uid_attr);
    if (!u->uid_raw || !auth_name_ok(u->uid_raw, strlen(u->uid_raw))) {
        qr_log(
            QR_LOG_WARN, "auth",
            "the entry '%s' has no usable '%s' value (ldap.uid_attr names the attribute that gives a user's "
            "uid): refused",
            u->dn, s->uid_attr);
        st = qr_fail(err, QR_ENOTFOUND, "the user's entry has no usable %s", s->uid_attr);
        goto out;
    }
    u->uid = qr_strdup(u->uid_raw);
    u->display_name = first_value(c->svc, e, "displayName");
    if (!u->display_name)
        u->display_name = first_value(c->svc, e, "cn");
    u->mail = first_value(c->svc, e, "mail");
    if (!u->uid) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    auth_ascii_lower(u->uid);
    if (*s->memberof_attr) {
        struct berval **vals = ldap_get_values_len(c->svc, e, s->memberof_attr);
        size_t n = vals ? (size_t)ldap_count_values_len(vals) : 0;
        u->member_of = calloc(n ? n : 1, sizeof(char *));
        for (size_t i = 0; u->member_of && i < n; i++)
            if (!memchr(vals[i]->bv_val, '\0', vals[i]->bv_len) &&
                (u->member_of[u->nmember_of] = strndup(vals[i]->bv_val, vals[i]->bv_len)))
                u->nmember_of++;
        ldap_value_free_len(vals);
        if (!u->member_of)
            st = qr_fail(err, QR_ENOMEM, "out of memory");
    }
out:
    if (st)
        auth_user_release(u);
    ldap_msgfree(res);
    qr_buf_release(&filter);
    return st;
}

/* Group expansion state: names found, canonical DNs seen, the current frontier of DNs. */
typedef struct {
    strvec names;
    strvec frontier, next;
    auth_lru *seen;
} expansion;

/* Records a group found by its DN and (possibly NULL) name; new groups join the next level. */
static qr_status found_group(expansion *x, const char *dn, char *name, char *err)
{
    qr_buf key;
    qr_buf_init(&key, FILTER_CAP);
    qr_status st = auth_dn_key(dn, &key);
    if (st) {
        free(name);
        qr_buf_release(&key);
        /* a DN the server sent that does not parse: skip it rather than fail the user */
        qr_log(QR_LOG_WARN, "auth", "ignoring a group with an unparsable DN");
        return QR_OK;
    }
    if (auth_lru_get(x->seen, qr_buf_str(&key))) {
        free(name);
        qr_buf_release(&key);
        return QR_OK;
    }
    if (auth_lru_len(x->seen) >= AUTH_MAX_GROUPS) {
        free(name);
        qr_buf_release(&key);
        return qr_fail(err, QR_ELIMIT, "the user is in more than %d groups", AUTH_MAX_GROUPS);
    }
    if (!name) {
        char type[64];
        name = auth_dn_first_value(dn, type, sizeof(type));
    }
    st = auth_lru_put(x->seen, qr_buf_str(&key), (void *)1);
    qr_buf_release(&key);
    if (!st && name) {
        auth_ascii_lower(name);
        st = strvec_push(&x->names, name);
        name = NULL;
    }
    free(name);
    if (!st)
        st = strvec_push(&x->next, strdup(dn));
    return st ? qr_fail(err, st, "out of memory") : QR_OK;
}

/* Runs one group search and records every group it returns. */
static qr_status search_groups(auth_ctx *ctx, auth_conn *c, uint64_t deadline, expansion *x,
                               const char *filter, char *err)
{
    const auth_settings *s = &ctx->s;
    char *attrs[] = {s->group_name_attr, NULL};
    LDAPMessage *res = NULL;
    int rc;
    qr_status st = auth_conn_search(ctx, c, deadline, s->group_base, LDAP_SCOPE_SUBTREE, filter, attrs, 0,
                                    &res, &rc, err);
    if (st)
        return st;
    if (rc == LDAP_NO_SUCH_OBJECT)
        st = qr_fail(err, QR_EUNAVAILABLE, "ldap.group_base '%s' does not exist on the LDAP server",
                     s->group_base);
    else if (rc == LDAP_SIZELIMIT_EXCEEDED)
        st = qr_fail(err, QR_ELIMIT, "the LDAP server's size limit cut a group search short");
    for (LDAPMessage *e = st ? NULL : ldap_first_entry(c->svc, res); e && !st;
         e = ldap_next_entry(c->svc, e)) {
        char *dn = ldap_get_dn(c->svc, e);
        if (dn)
            st = found_group(x, dn, first_value(c->svc, e, s->group_name_attr), err);
        ldap_memfree(dn);
    }
    ldap_msgfree(res);
    return st;
}

/* Level one from the user's memberOf values: the name from the RDN when it is the naming
 * attribute, else from the group entry. */
static qr_status groups_from_member_of(auth_ctx *ctx, auth_conn *c, uint64_t deadline, expansion *x,
                                       const auth_user *u, char *err)
{
    qr_status st = QR_OK;
    for (size_t i = 0; i < u->nmember_of && !st; i++) {
        char type[64];
        char *name = auth_dn_first_value(u->member_of[i], type, sizeof(type));
        if (name && strcasecmp(type, ctx->s.group_name_attr) == 0) {
            st = found_group(x, u->member_of[i], name, err);
            continue;
        }
        free(name);
        char *attrs[] = {ctx->s.group_name_attr, NULL};
        LDAPMessage *res = NULL;
        int rc;
        st = auth_conn_search(ctx, c, deadline, u->member_of[i], LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 1,
                              &res, &rc, err);
        LDAPMessage *e = st || rc != LDAP_SUCCESS ? NULL : ldap_first_entry(c->svc, res);
        if (e)
            st = found_group(x, u->member_of[i], first_value(c->svc, e, ctx->s.group_name_attr), err);
        ldap_msgfree(res);
    }
    return st;
}

static qr_status expand_groups(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const auth_user *u,
                               expansion *x, char *err)
{
    const auth_settings *s = &ctx->s;
    qr_buf filter;
    qr_buf_init(&filter, FILTER_CAP);
    qr_status st;
    if (*s->memberof_attr) {
        st = groups_from_member_of(ctx, c, deadline, x, u, err);
    } else {
        st = auth_filter_expand(&filter, s->group_filter, NULL, 0, u->dn, u->uid_raw);
        if (st)
            st = qr_fail(err, st, "ldap.group_filter '%s' cannot be filled in", s->group_filter);
        else
            st = search_groups(ctx, c, deadline, x, qr_buf_str(&filter), err);
    }
    for (int level = 0; level < s->nested_depth && !st && x->next.len > 0; level++) {
        strvec_release(&x->frontier);
        x->frontier = x->next;
        memset(&x->next, 0, sizeof(x->next));
        for (size_t i = 0; i < x->frontier.len && !st; i += BATCH_GROUPS) {
            size_t end = i + BATCH_GROUPS < x->frontier.len ? i + BATCH_GROUPS : x->frontier.len;
            qr_buf_reset(&filter);
            st = end - i > 1 ? qr_buf_puts(&filter, "(|") : QR_OK;
            for (size_t j = i; j < end && !st; j++)
                st = auth_filter_expand(&filter, s->group_filter, NULL, 0, x->frontier.items[j], NULL);
            if (!st && end - i > 1)
                st = qr_buf_putc(&filter, ')');
            if (st)
                st = qr_fail(err, st, "ldap.group_filter '%s' cannot be filled in", s->group_filter);
            else
                st = search_groups(ctx, c, deadline, x, qr_buf_str(&filter), err);
        }
    }
    qr_buf_release(&filter);
    return st;
}

static bool is_admin(const auth_ctx *ctx, char **groups, size_t n)
{
    for (size_t a = 0; a < ctx->s.nadmin_groups; a++)
        for (size_t g = 0; g < n; g++)
            if (strcmp(ctx->s.admin_groups[a], groups[g]) == 0)
                return true;
    return false;
}

qr_status auth_dir_user_principal(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const auth_user *u,
                                  const char *password, size_t password_len, auth_principal **out, char *err)
{
    expansion x = {0};
    *out = NULL;
    qr_status st = QR_OK;
    /* groups are worth resolving only for the right password */
    if (password) {
        st = auth_conn_bind_user(ctx, c, deadline, u->dn, password, password_len, err);
        if (st)
            goto out;
    }
    x.seen = auth_lru_new(AUTH_MAX_GROUPS + 1, NULL);
    if (!x.seen) {
        st = qr_fail(err, QR_ENOMEM, "out of memory");
        goto out;
    }
    st = expand_groups(ctx, c, deadline, u, &x, err);
    if (st)
        goto out;
    st = auth_principal_new(u->uid, u->dn, u->display_name, u->mail, x.names.items, x.names.len,
                            is_admin(ctx, x.names.items, x.names.len), out);
    if (st) {
        st = qr_fail(err, st, "out of memory");
        goto out;
    }
out:
    strvec_release(&x.names);
    strvec_release(&x.frontier);
    strvec_release(&x.next);
    auth_lru_free(x.seen);
    return st;
}

qr_status auth_dir_principal(auth_ctx *ctx, auth_conn *c, uint64_t deadline, const char *name, size_t len,
                             const char *password, size_t password_len, auth_principal **out, char *err)
{
    auth_user u;
    *out = NULL;
    qr_status st = auth_dir_find_user(ctx, c, deadline, name, len, &u, err);
    if (st)
        return st;
    st = auth_dir_user_principal(ctx, c, deadline, &u, password, password_len, out, err);
    auth_user_release(&u);
    return st;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts v and drops duplicates (freeing them). */
static void sort_unique(char **v, size_t *n)
{
    if (*n == 0)
        return;
    qsort(v, *n, sizeof(char *), cmp_str);
    size_t w = 1;
    for (size_t i = 1; i < *n; i++) {
        if (strcmp(v[i], v[w - 1]) == 0)
            free(v[i]);
        else
            v[w++] = v[i];
    }
    *n = w;
}

qr_status auth_principal_new(const char *uid, const char *dn, const char *display_name, const char *mail,
                             char **groups, size_t ngroups, bool admin, auth_principal **out)
{
    *out = NULL;
    auth_principal *p = calloc(1, sizeof(*p));
    if (!p)
        return QR_ENOMEM;
    p->refs_ = 1;
    p->uid = strdup(uid);
    p->dn = strdup(dn ? dn : "");
    p->display_name = strdup(display_name && *display_name ? display_name : uid);
    p->mail = strdup(mail ? mail : "");
    p->groups = calloc(ngroups + 1, sizeof(char *));
    p->principals = calloc(ngroups + 2, sizeof(char *));
    bool ok = p->uid && p->dn && p->display_name && p->mail && p->groups && p->principals;
    for (size_t i = 0; ok && i < ngroups; i++) {
        p->groups[i] = strdup(groups[i]);
        ok = p->groups[i] != NULL;
        if (ok) {
            auth_ascii_lower(p->groups[i]);
            p->ngroups++;
        }
    }
    if (ok) {
        sort_unique(p->groups, &p->ngroups);
        p->principals[p->nprincipals++] = strdup("public");
        /* a service key acting as itself holds "public" only */
        if (strncmp(uid, "key:", 4) != 0) {
            size_t n = strlen(uid) + 6;
            char *s = malloc(n);
            if (s)
                snprintf(s, n, "user:%s", uid);
            p->principals[p->nprincipals++] = s;
        }
        for (size_t i = 0; i < p->ngroups; i++) {
            size_t n = strlen(p->groups[i]) + 7;
            char *s = malloc(n);
            if (s)
                snprintf(s, n, "group:%s", p->groups[i]);
            p->principals[p->nprincipals++] = s;
        }
        for (size_t i = 0; i < p->nprincipals; i++)
            ok = ok && p->principals[i];
        if (ok)
            sort_unique(p->principals, &p->nprincipals);
    }
    p->is_admin = admin;
    if (!ok) {
        auth_principal_release(p);
        return QR_ENOMEM;
    }
    *out = p;
    return QR_OK;
}

auth_principal *auth_principal_ref(auth_principal *p)
{
    if (p)
        __atomic_add_fetch(&p->refs_, 1, __ATOMIC_RELAXED);
    return p;
}

void auth_principal_release(auth_principal *p)
{
    if (!p || __atomic_sub_fetch(&p->refs_, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; p->groups && i < p->ngroups; i++)
        free(p->groups[i]);
    for (size_t i = 0; p->principals && i < p->nprincipals; i++)
        free(p->principals[i]);
    free(p->groups);
    free(p->principals);
    free(p->uid);
    free(p->dn);
    free(p->display_name);
    free(p->mail);
    free(p);
}

bool auth_principal_has(const auth_principal *p, const char *principal)
{
    if (!p || !principal)
        return false;
    for (size_t i = 0; i < p->nprincipals; i++)
        if (strcmp(p->principals[i], principal) == 0)
            return true;
    return false;
}
