/*
 * test_ldap_fixture: checks that the directory served by
 * tests/fixtures/slapd-fixture.sh looks the way quarry's LDAP tests expect,
 * using the operations quarry's auth module needs: service-account
 * bind, user lookup by uid through an escaped filter, a user bind on a
 * separate connection, and group resolution (direct groupOfNames and
 * groupOfUniqueNames membership, posixGroup memberUid, nested groups by
 * breadth-first expansion with cycle detection, and the memberOf overlay).
 *
 * Run it under the fixture, which exports QUARRY_TEST_LDAP_*:
 *   tests/fixtures/slapd-fixture.sh -- ./test_ldap_fixture
 * Prints one "ok - ..." or "not ok - ..." line per check and exits 1 if any
 * check failed, 2 if the environment is missing.
 *
 * Self-contained on purpose (libldap and liblber only), so that it can tell
 * fixture problems apart from bugs in quarry's own LDAP code.
 */
#include <ctype.h>
#include <lber.h>
#include <ldap.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#define TIMEOUT_SECONDS 5
#define FILTER_MAX      1024
#define NAME_MAX_LEN    256
/* Bounds the breadth-first expansion even if the cycle check were broken. */
#define MAX_GROUPS 256

struct env {
    const char *uri;
    const char *base;
    const char *bind_dn;
    const char *bind_pw;
    const char *admin_dn;
    const char *admin_pw;
};

/* A growable list of owned strings, capped at MAX_GROUPS entries. */
struct strlist {
    char **items;
    size_t len;
    size_t cap;
};

enum auth_result {
    AUTH_OK,
    AUTH_EMPTY_PASSWORD,
    AUTH_NO_SUCH_USER,
    AUTH_AMBIGUOUS_USER,
    AUTH_INVALID_CREDENTIALS,
    AUTH_ERROR,
};

static int checks_failed;
/* Counts simple binds sent to the server, to prove that some were not. */
static int binds_sent;

__attribute__((format(printf, 2, 3))) static void check(int ok, const char *fmt, ...)
{
    va_list ap;

    printf("%s - ", ok ? "ok" : "not ok");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    if (!ok)
        checks_failed++;
}

static void strlist_init(struct strlist *l)
{
    l->items = NULL;
    l->len = 0;
    l->cap = 0;
}

static void strlist_release(struct strlist *l)
{
    for (size_t i = 0; i < l->len; i++)
        free(l->items[i]);
    free(l->items);
    strlist_init(l);
}

/* Returns 0, or -1 when out of memory or the list is full. */
static int strlist_push(struct strlist *l, const char *s, size_t n)
{
    char *copy;

    if (l->len == MAX_GROUPS)
        return -1;
    if (l->len == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        char **items = realloc(l->items, cap * sizeof(*items));

        if (!items)
            return -1;
        l->items = items;
        l->cap = cap;
    }
    copy = malloc(n + 1);
    if (!copy)
        return -1;
    memcpy(copy, s, n);
    copy[n] = '\0';
    l->items[l->len++] = copy;
    return 0;
}

static int strlist_has(const struct strlist *l, const char *s)
{
    for (size_t i = 0; i < l->len; i++)
        if (strcmp(l->items[i], s) == 0)
            return 1;
    return 0;
}

/*
 * Escapes IN (IN_LEN bytes, may contain NUL) as an RFC 4515 assertion value
 * into OUT. The five characters the RFC requires ('*', '(', ')', '\\', NUL)
 * become \XX; so does every byte outside printable ASCII, which keeps
 * invalid UTF-8 from reaching the server raw and is always allowed.
 * Returns 0, or -1 (OUT untouched beyond OUT_SIZE) if OUT is too small.
 */
static int filter_escape(const char *in, size_t in_len, char *out, size_t out_size)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < in_len; i++) {
        unsigned char c = (unsigned char)in[i];
        int plain = c >= 0x20 && c < 0x7f && c != '*' && c != '(' && c != ')' && c != '\\';

        if (plain) {
            if (o + 1 >= out_size)
                return -1;
            out[o++] = (char)c;
        } else {
            if (o + 3 >= out_size)
                return -1;
            out[o++] = '\\';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0x0f];
        }
    }
    if (o >= out_size)
        return -1;
    out[o] = '\0';
    return 0;
}

/* Builds FORMAT with each %s replaced by VALUE escaped; -1 if too long. */
static int build_filter(char *out, size_t out_size, const char *format, const char *value)
{
    char escaped[FILTER_MAX];
    size_t o = 0;

    if (filter_escape(value, strlen(value), escaped, sizeof(escaped)))
        return -1;
    for (const char *p = format; *p; p++) {
        const char *piece = p;
        size_t n = 1;

        if (p[0] == '%' && p[1] == 's') {
            piece = escaped;
            n = strlen(escaped);
            p++;
        }
        if (o + n >= out_size)
            return -1;
        memcpy(out + o, piece, n);
        o += n;
    }
    out[o] = '\0';
    return 0;
}

/*
 * Copies the value of DN's first RDN, unescaped, into OUT ("cn=sales\2C
 * emea,ou=groups,..." gives "sales, emea"). Returns 0, or -1 if DN does not
 * parse or the value does not fit.
 */
static int dn_first_value(const char *dn, char *out, size_t out_size)
{
    LDAPDN parsed = NULL;
    int rc = -1;

    if (ldap_str2dn(dn, &parsed, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
        return -1;
    if (parsed && parsed[0] && parsed[0][0] && parsed[0][0]->la_value.bv_len < out_size) {
        struct berval *v = &parsed[0][0]->la_value;

        memcpy(out, v->bv_val, v->bv_len);
        out[v->bv_len] = '\0';
        rc = 0;
    }
    ldap_dnfree(parsed);
    return rc;
}

/*
 * Writes DN in one canonical spelling (re-escaped by libldap, ASCII
 * lowercased) for use as a visited-set key. Returns 0, or -1.
 */
static int dn_key(const char *dn, char *out, size_t out_size)
{
    LDAPDN parsed = NULL;
    char *text = NULL;
    int rc = -1;

    if (ldap_str2dn(dn, &parsed, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
        return -1;
    if (ldap_dn2str(parsed, &text, LDAP_DN_FORMAT_LDAPV3) == LDAP_SUCCESS && strlen(text) < out_size) {
        size_t i;

        for (i = 0; text[i]; i++)
            out[i] = (char)tolower((unsigned char)text[i]);
        out[i] = '\0';
        rc = 0;
    }
    ldap_memfree(text);
    ldap_dnfree(parsed);
    return rc;
}

/* Returns a connection with timeouts set, or NULL with ERR filled in. */
static LDAP *open_connection(const char *uri, char *err, size_t err_size)
{
    struct timeval timeout = {TIMEOUT_SECONDS, 0};
    int version = LDAP_VERSION3;
    LDAP *ld = NULL;
    int rc;

    rc = ldap_initialize(&ld, uri);
    if (rc != LDAP_SUCCESS) {
        snprintf(err, err_size, "cannot initialise '%s': %s", uri, ldap_err2string(rc));
        return NULL;
    }
    if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version) ||
        ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) ||
        ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &timeout) ||
        ldap_set_option(ld, LDAP_OPT_TIMEOUT, &timeout)) {
        snprintf(err, err_size, "cannot set options on '%s'", uri);
        ldap_unbind_ext_s(ld, NULL, NULL);
        return NULL;
    }
    return ld;
}

/* A plain simple bind; the caller decides whether PW may be empty. */
static int simple_bind(LDAP *ld, const char *dn, const char *pw)
{
    struct berval cred;

    cred.bv_val = (char *)pw;
    cred.bv_len = strlen(pw);
    binds_sent++;
    return ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
}

/* Opens a connection bound as DN; NULL with ERR filled in on failure. */
static LDAP *open_bound(const char *uri, const char *dn, const char *pw, char *err, size_t err_size)
{
    LDAP *ld = open_connection(uri, err, err_size);
    int rc;

    if (!ld)
        return NULL;
    rc = simple_bind(ld, dn, pw);
    if (rc != LDAP_SUCCESS) {
        snprintf(err, err_size, "cannot bind as '%s': %s", dn, ldap_err2string(rc));
        ldap_unbind_ext_s(ld, NULL, NULL);
        return NULL;
    }
    return ld;
}

/*
 * Searches BASE (subtree) with FILTER and appends to OUT, for each entry,
 * its DN (ATTR NULL) or every value of ATTR. SIZE_LIMIT 0 means the
 * server's. Returns the LDAP result code.
 */
static int search_collect(LDAP *ld, const char *base, const char *filter, const char *attr, int size_limit,
                          struct strlist *out)
{
    struct timeval timeout = {TIMEOUT_SECONDS, 0};
    char *attrs[2] = {(char *)(attr ? attr : LDAP_NO_ATTRS), NULL};
    LDAPMessage *res = NULL;
    int rc;

    rc = ldap_search_ext_s(ld, base, LDAP_SCOPE_SUBTREE, filter, attrs, 0, NULL, NULL, &timeout, size_limit,
                           &res);
    /* A size-limited search still returns the entries it found. */
    if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED)
        goto out;
    for (LDAPMessage *e = ldap_first_entry(ld, res); e; e = ldap_next_entry(ld, e)) {
        if (!attr) {
            char *dn = ldap_get_dn(ld, e);

            if (!dn || strlist_push(out, dn, strlen(dn))) {
                ldap_memfree(dn);
                rc = LDAP_NO_MEMORY;
                goto out;
            }
            ldap_memfree(dn);
            continue;
        }
        struct berval **vals = ldap_get_values_len(ld, e, attr);

        for (size_t i = 0; vals && vals[i]; i++) {
            if (strlist_push(out, vals[i]->bv_val, vals[i]->bv_len)) {
                ldap_value_free_len(vals);
                rc = LDAP_NO_MEMORY;
                goto out;
            }
        }
        ldap_value_free_len(vals);
    }
out:
    ldap_msgfree(res);
    return rc;
}

/*
 * Looks up the inetOrgPerson with uid UID. On AUTH_OK, *DN_OUT is a
 * malloc'd DN the caller frees; otherwise it is NULL.
 */
static enum auth_result find_user_dn(LDAP *ld, const char *base, const char *uid, char **dn_out)
{
    char filter[FILTER_MAX];
    struct strlist dns;
    enum auth_result result;
    int rc;

    *dn_out = NULL;
    if (uid[0] == '\0')
        return AUTH_NO_SUCH_USER;
    if (build_filter(filter, sizeof(filter), "(&(objectClass=inetOrgPerson)(uid=%s))", uid))
        return AUTH_ERROR;
    strlist_init(&dns);
    /* Two is enough to tell "exactly one" from "ambiguous". */
    rc = search_collect(ld, base, filter, NULL, 2, &dns);
    if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED)
        result = AUTH_ERROR;
    else if (dns.len == 0)
        result = AUTH_NO_SUCH_USER;
    else if (dns.len > 1)
        result = AUTH_AMBIGUOUS_USER;
    else {
        *dn_out = dns.items[0];
        dns.items[0] = NULL;
        dns.len = 0;
        result = AUTH_OK;
    }
    strlist_release(&dns);
    return result;
}

/*
 * Authenticates UID with PW the way quarry's auth module should: an empty password is
 * refused before anything is sent, because a simple bind with a DN and no
 * password is an "unauthenticated bind" that some servers answer with
 * success. The lookup runs as the service account; the user bind uses a
 * connection of its own, so the service connection keeps its identity.
 */
static enum auth_result authenticate(const struct env *env, const char *uid, const char *pw)
{
    char err[256];
    LDAP *svc = NULL;
    LDAP *user = NULL;
    char *dn = NULL;
    enum auth_result result;
    int rc;

    if (!pw || pw[0] == '\0')
        return AUTH_EMPTY_PASSWORD;
    svc = open_bound(env->uri, env->bind_dn, env->bind_pw, err, sizeof(err));
    if (!svc) {
        result = AUTH_ERROR;
        goto out;
    }
    result = find_user_dn(svc, env->base, uid, &dn);
    if (result != AUTH_OK)
        goto out;
    user = open_connection(env->uri, err, sizeof(err));
    if (!user) {
        result = AUTH_ERROR;
        goto out;
    }
    rc = simple_bind(user, dn, pw);
    if (rc == LDAP_SUCCESS)
        result = AUTH_OK;
    else if (rc == LDAP_INVALID_CREDENTIALS)
        result = AUTH_INVALID_CREDENTIALS;
    else
        result = AUTH_ERROR;
out:
    free(dn);
    if (user)
        ldap_unbind_ext_s(user, NULL, NULL);
    if (svc)
        ldap_unbind_ext_s(svc, NULL, NULL);
    return result;
}

static const char *auth_result_name(enum auth_result r)
{
    switch (r) {
    case AUTH_OK: return "ok";
    case AUTH_EMPTY_PASSWORD: return "empty password";
    case AUTH_NO_SUCH_USER: return "no such user";
    case AUTH_AMBIGUOUS_USER: return "ambiguous user";
    case AUTH_INVALID_CREDENTIALS: return "invalid credentials";
    case AUTH_ERROR: break;
    }
    return "error";
}

/* Appends the DNs of groups that list MEMBER_DN as member/uniqueMember. */
static int groups_containing(LDAP *ld, const char *base, const char *member_dn, struct strlist *out)
{
    char filter[FILTER_MAX];

    if (build_filter(filter, sizeof(filter),
                     "(|(&(objectClass=groupOfNames)(member=%s))"
                     "(&(objectClass=groupOfUniqueNames)(uniqueMember=%s)))",
                     member_dn))
        return LDAP_FILTER_ERROR;
    return search_collect(ld, base, filter, NULL, 0, out);
}

/* Turns a list of DNs into the list of their first RDN values. */
static int names_of(const struct strlist *dns, struct strlist *names)
{
    char name[NAME_MAX_LEN];

    for (size_t i = 0; i < dns->len; i++) {
        if (dn_first_value(dns->items[i], name, sizeof(name)) || strlist_push(names, name, strlen(name)))
            return -1;
    }
    return 0;
}

struct expansion {
    struct strlist names; /* every group reached, by cn */
    int max_depth;        /* 1 = direct membership */
    int cycle_seen;       /* a group was reached a second time */
    int depth_of_last;    /* depth at which LAST_NAME was reached */
};

/*
 * Breadth-first expansion from USER_DN over member/uniqueMember links.
 * A visited set keyed by canonical DN stops cycles; MAX_GROUPS bounds the
 * work regardless. WATCH names a group whose depth is reported in
 * X->depth_of_last (0 if never reached). Returns an LDAP result code.
 */
static int expand_groups(LDAP *ld, const char *base, const char *user_dn, const char *watch,
                         struct expansion *x)
{
    struct strlist queue, visited, parents;
    int depths[MAX_GROUPS];
    char key[FILTER_MAX];
    char name[NAME_MAX_LEN];
    size_t head = 0;
    int rc;

    strlist_init(&x->names);
    x->max_depth = 0;
    x->cycle_seen = 0;
    x->depth_of_last = 0;
    strlist_init(&queue);
    strlist_init(&visited);
    strlist_init(&parents);

    rc = groups_containing(ld, base, user_dn, &parents);
    if (rc != LDAP_SUCCESS)
        goto out;
    for (size_t i = 0; i < parents.len; i++) {
        if (dn_key(parents.items[i], key, sizeof(key)) || strlist_push(&visited, key, strlen(key)) ||
            strlist_push(&queue, parents.items[i], strlen(parents.items[i]))) {
            rc = LDAP_NO_MEMORY;
            goto out;
        }
        depths[queue.len - 1] = 1;
    }
    while (head < queue.len) {
        const char *dn = queue.items[head];
        int depth = depths[head];

        head++;
        if (dn_first_value(dn, name, sizeof(name)) || strlist_push(&x->names, name, strlen(name))) {
            rc = LDAP_NO_MEMORY;
            goto out;
        }
        if (depth > x->max_depth)
            x->max_depth = depth;
        if (watch && strcmp(name, watch) == 0)
            x->depth_of_last = depth;

        strlist_release(&parents);
        rc = groups_containing(ld, base, dn, &parents);
        if (rc != LDAP_SUCCESS)
            goto out;
        for (size_t i = 0; i < parents.len; i++) {
            if (dn_key(parents.items[i], key, sizeof(key))) {
                rc = LDAP_INVALID_DN_SYNTAX;
                goto out;
            }
            if (strlist_has(&visited, key)) {
                x->cycle_seen = 1;
                continue;
            }
            if (strlist_push(&visited, key, strlen(key)) ||
                strlist_push(&queue, parents.items[i], strlen(parents.items[i]))) {
                rc = LDAP_NO_MEMORY;
                goto out;
            }
            depths[queue.len - 1] = depth + 1;
        }
    }
out:
    strlist_release(&queue);
    strlist_release(&visited);
    strlist_release(&parents);
    return rc;
}

/*
 * True if GOT holds exactly the N names in WANT, in any order; otherwise
 * also prints what was found, as a diagnostic line.
 */
static int same_set(const struct strlist *got, const char *const *want, size_t n)
{
    int same = got->len == n;

    for (size_t i = 0; same && i < n; i++)
        same = strlist_has(got, want[i]);
    if (!same) {
        printf("# got %zu:", got->len);
        for (size_t i = 0; i < got->len; i++)
            printf(" [%s]", got->items[i]);
        printf("\n# want %zu:", n);
        for (size_t i = 0; i < n; i++)
            printf(" [%s]", want[i]);
        putchar('\n');
    }
    return same;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void check_escape(const char *in, size_t in_len, const char *want)
{
    char out[64];
    int rc = filter_escape(in, in_len, out, sizeof(out));

    check(rc == 0 && strcmp(out, want) == 0, "filter_escape gives '%s'", want);
}

static void check_filter_escape(void)
{
    char small[4];

    check_escape("alice", 5, "alice");
    check_escape("r&d (lab)", 9, "r&d \\28lab\\29");
    check_escape("*", 1, "\\2a");
    check_escape("a\\b", 3, "a\\5cb");
    check_escape("x\0y", 3, "x\\00y");
    check_escape("alice)(uid=*", 12, "alice\\29\\28uid=\\2a");
    check_escape("Zo\xc3\xab", 4, "Zo\\c3\\ab");
    check(filter_escape("abc", 3, small, sizeof(small)) == 0, "filter_escape fits exactly");
    check(filter_escape("abcd", 4, small, sizeof(small)) == -1, "filter_escape refuses a too small buffer");
    check(filter_escape("a*", 2, small, sizeof(small)) == -1,
          "filter_escape refuses a too small buffer for an escape");
}

struct user_expect {
    const char *uid;
    const char *const *direct;
    size_t n_direct;
    const char *const *posix;
    size_t n_posix;
    const char *const *all;
    size_t n_all;
    const char *const *member_of;
    size_t n_member_of;
    int cycle;
};

static void check_user_groups(LDAP *ld, const struct env *env, const struct user_expect *u)
{
    struct strlist dns, names, values;
    struct expansion x;
    char filter[FILTER_MAX];
    char *dn = NULL;
    int rc;

    strlist_init(&dns);
    strlist_init(&names);
    strlist_init(&values);
    strlist_init(&x.names);

    if (find_user_dn(ld, env->base, u->uid, &dn) != AUTH_OK) {
        check(0, "%s: found by uid", u->uid);
        goto out;
    }

    rc = groups_containing(ld, env->base, dn, &dns);
    check(rc == LDAP_SUCCESS && names_of(&dns, &names) == 0 && same_set(&names, u->direct, u->n_direct),
          "%s: direct groupOfNames/groupOfUniqueNames groups (%zu)", u->uid, u->n_direct);

    if (build_filter(filter, sizeof(filter), "(&(objectClass=posixGroup)(memberUid=%s))", u->uid))
        rc = LDAP_FILTER_ERROR;
    else
        rc = search_collect(ld, env->base, filter, "cn", 0, &values);
    check(rc == LDAP_SUCCESS && same_set(&values, u->posix, u->n_posix),
          "%s: posixGroup groups by memberUid (%zu)", u->uid, u->n_posix);

    rc = expand_groups(ld, env->base, dn, NULL, &x);
    check(rc == LDAP_SUCCESS && same_set(&x.names, u->all, u->n_all),
          "%s: nested groups, breadth-first (%zu)", u->uid, u->n_all);
    check(rc == LDAP_SUCCESS && x.cycle_seen == u->cycle, "%s: expansion %s", u->uid,
          u->cycle ? "meets the membership cycle and stops" : "revisits no group");

    strlist_release(&dns);
    strlist_release(&names);
    /* memberOf is operational: it comes back only when asked for. */
    {
        struct timeval timeout = {TIMEOUT_SECONDS, 0};
        char *attrs[] = {"memberOf", NULL};
        LDAPMessage *res = NULL;
        struct berval **vals = NULL;

        rc = ldap_search_ext_s(ld, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL, NULL, &timeout, 1,
                               &res);
        if (rc == LDAP_SUCCESS) {
            LDAPMessage *e = ldap_first_entry(ld, res);

            vals = e ? ldap_get_values_len(ld, e, "memberOf") : NULL;
            for (size_t i = 0; vals && vals[i]; i++)
                if (strlist_push(&dns, vals[i]->bv_val, vals[i]->bv_len))
                    rc = LDAP_NO_MEMORY;
        }
        ldap_value_free_len(vals);
        ldap_msgfree(res);
    }
    check(rc == LDAP_SUCCESS && names_of(&dns, &names) == 0 && same_set(&names, u->member_of, u->n_member_of),
          "%s: memberOf lists the direct groupOfNames groups (%zu)", u->uid, u->n_member_of);
out:
    free(dn);
    strlist_release(&dns);
    strlist_release(&names);
    strlist_release(&values);
    strlist_release(&x.names);
}

static void check_lookups(LDAP *ld, const struct env *env)
{
    struct strlist found;
    char filter[FILTER_MAX];
    char want_dn[FILTER_MAX];
    char *dn = NULL;
    enum auth_result r;
    int rc;

    snprintf(want_dn, sizeof(want_dn), "uid=alice,ou=people,%s", env->base);
    r = find_user_dn(ld, env->base, "alice", &dn);
    check(r == AUTH_OK && dn && strcasecmp(dn, want_dn) == 0, "alice found by uid as %s", want_dn);
    free(dn);

    r = find_user_dn(ld, env->base, "*", &dn);
    check(r == AUTH_NO_SUCH_USER, "uid '*' matches nobody once escaped (%s)", auth_result_name(r));
    free(dn);
    r = find_user_dn(ld, env->base, "alice)(uid=*", &dn);
    check(r == AUTH_NO_SUCH_USER, "uid 'alice)(uid=*' matches nobody once escaped (%s)", auth_result_name(r));
    free(dn);

    /* The same "*" unescaped is a presence filter: escaping matters. */
    strlist_init(&found);
    rc = search_collect(ld, env->base, "(&(objectClass=inetOrgPerson)(uid=*))", NULL, 0, &found);
    check(rc == LDAP_SUCCESS && found.len >= 6, "unescaped uid=* matches every user (%zu)", found.len);
    strlist_release(&found);

    /* A comma in cn, a non-ASCII displayName, a '*' and parentheses. */
    struct {
        const char *format;
        const char *value;
        const char *attr;
        const char *want;
    } cases[] = {
        {"(cn=%s)", "Davis, Dave", "uid", "dave"},
        {"(displayName=%s)", "Zo\xc3\xab Zimmer", "uid", "zoe"},
        {"(&(objectClass=groupOfNames)(cn=%s))", "oncall*", "cn", "oncall*"},
        {"(&(objectClass=groupOfNames)(cn=%s))", "r&d (lab)", "cn", "r&d (lab)"},
        {"(&(objectClass=groupOfNames)(cn=%s))", "sales, emea", "cn", "sales, emea"},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        strlist_init(&found);
        rc = build_filter(filter, sizeof(filter), cases[i].format, cases[i].value)
                 ? LDAP_FILTER_ERROR
                 : search_collect(ld, env->base, filter, cases[i].attr, 0, &found);
        check(rc == LDAP_SUCCESS && found.len == 1 && strcmp(found.items[0], cases[i].want) == 0,
              "escaped filter %s finds exactly '%s'", filter, cases[i].want);
        strlist_release(&found);
    }

    strlist_init(&found);
    rc = search_collect(ld, want_dn, "(objectClass=*)", "userPassword", 0, &found);
    check(rc == LDAP_SUCCESS && found.len == 0, "service account cannot read a user's userPassword");
    strlist_release(&found);

    strlist_init(&found);
    rc = search_collect(ld, env->base, "(objectClass=*)", NULL, 3, &found);
    check(rc == LDAP_SIZELIMIT_EXCEEDED && found.len == 3,
          "a size limit of 3 stops the search with sizeLimitExceeded (%s)", ldap_err2string(rc));
    strlist_release(&found);
}

static void check_authentication(const struct env *env)
{
    struct {
        const char *uid;
        const char *pw;
        enum auth_result want;
        const char *why;
    } cases[] = {
        {"alice", "Alice-pw-1", AUTH_OK, "right password"},
        {"alice", "Alice-pw-2", AUTH_INVALID_CREDENTIALS, "wrong password"},
        {"alice", "alice-pw-1", AUTH_INVALID_CREDENTIALS, "password in the wrong case"},
        {"bob", "Bob-pw-2", AUTH_OK, "{SSHA} password"},
        {"dave", "p@ss, w0rd (*)", AUTH_OK, "password with comma, parentheses and '*'"},
        {"erin", "Erin-pw-5", AUTH_OK, "user in no group"},
        {"zoe", "Zoe-pw-7", AUTH_OK, "right password"},
        {"nobody", "whatever", AUTH_NO_SUCH_USER, "unknown uid"},
        {"*", "Alice-pw-1", AUTH_NO_SUCH_USER, "uid '*'"},
        {"", "Alice-pw-1", AUTH_NO_SUCH_USER, "empty uid"},
    };

    for (size_t i = 0; i < COUNT(cases); i++) {
        enum auth_result r = authenticate(env, cases[i].uid, cases[i].pw);

        check(r == cases[i].want, "bind as '%s', %s: %s", cases[i].uid, cases[i].why, auth_result_name(r));
    }

    int before = binds_sent;
    enum auth_result r = authenticate(env, "alice", "");

    check(r == AUTH_EMPTY_PASSWORD && binds_sent == before, "empty password refused before any bind: %s",
          auth_result_name(r));
    r = authenticate(env, "alice", NULL);
    check(r == AUTH_EMPTY_PASSWORD && binds_sent == before, "missing password refused before any bind: %s",
          auth_result_name(r));
}

static const char *getenv_or_null(const char *name)
{
    const char *v = getenv(name);

    return v && v[0] ? v : NULL;
}

int main(void)
{
    static const char *const none[] = {NULL};
    static const char *const alice_direct[] = {"eng-backend", "auditors"};
    static const char *const alice_all[] = {"eng-backend", "auditors", "engineering", "staff"};
    static const char *const alice_member_of[] = {"eng-backend"};
    static const char *const developers[] = {"developers"};
    static const char *const ops[] = {"ops"};
    static const char *const bob_direct[] = {"eng-frontend"};
    static const char *const bob_all[] = {"eng-frontend", "engineering", "staff"};
    static const char *const carol_direct[] = {"r&d (lab)", "cycle-a"};
    static const char *const carol_all[] = {"r&d (lab)", "cycle-a", "engineering",
                                            "staff",     "cycle-b", "cycle-c"};
    static const char *const dave_direct[] = {"oncall*"};
    static const char *const dave_all[] = {"oncall*", "staff"};
    static const char *const frank_direct[] = {"auditors"};
    static const char *const zoe_direct[] = {"sales, emea"};
    static const char *const zoe_all[] = {"sales, emea", "staff"};
    const struct user_expect users[] = {
        {"alice", alice_direct, 2, developers, 1, alice_all, 4, alice_member_of, 1, 0},
        {"bob", bob_direct, 1, developers, 1, bob_all, 3, bob_direct, 1, 0},
        {"carol", carol_direct, 2, developers, 1, carol_all, 6, carol_direct, 2, 1},
        {"dave", dave_direct, 1, ops, 1, dave_all, 2, dave_direct, 1, 0},
        {"erin", none, 0, none, 0, none, 0, none, 0, 0},
        {"frank", frank_direct, 1, ops, 1, frank_direct, 1, none, 0, 0},
        {"zoe", zoe_direct, 1, none, 0, zoe_all, 2, zoe_direct, 1, 0},
    };
    struct env env;
    struct expansion x;
    char err[256];
    char dn[FILTER_MAX];
    LDAP *svc = NULL;
    LDAP *admin = NULL;
    int rc;

    env.uri = getenv_or_null("QUARRY_TEST_LDAP_URI");
    env.base = getenv_or_null("QUARRY_TEST_LDAP_BASE");
    env.bind_dn = getenv_or_null("QUARRY_TEST_LDAP_BIND_DN");
    env.bind_pw = getenv_or_null("QUARRY_TEST_LDAP_BIND_PW");
    env.admin_dn = getenv_or_null("QUARRY_TEST_LDAP_ADMIN_DN");
    env.admin_pw = getenv_or_null("QUARRY_TEST_LDAP_ADMIN_PW");
    if (!env.uri || !env.base || !env.bind_dn || !env.bind_pw || !env.admin_dn || !env.admin_pw) {
        printf("not ok - QUARRY_TEST_LDAP_* are set (run under "
               "tests/fixtures/slapd-fixture.sh)\n");
        return 2;
    }
    check(1, "QUARRY_TEST_LDAP_* are set, server %s", env.uri);

    check_filter_escape();

    admin = open_bound(env.uri, env.admin_dn, env.admin_pw, err, sizeof(err));
    check(admin != NULL, "bind as the admin %s%s%s", env.admin_dn, admin ? "" : ": ", admin ? "" : err);
    if (admin)
        ldap_unbind_ext_s(admin, NULL, NULL);

    svc = open_bound(env.uri, env.bind_dn, env.bind_pw, err, sizeof(err));
    check(svc != NULL, "bind as the service account %s%s%s", env.bind_dn, svc ? "" : ": ", svc ? "" : err);
    if (!svc)
        goto out;

    check_lookups(svc, &env);
    check_authentication(&env);
    for (size_t i = 0; i < COUNT(users); i++)
        check_user_groups(svc, &env, &users[i]);

    snprintf(dn, sizeof(dn), "uid=alice,ou=people,%s", env.base);
    rc = expand_groups(svc, env.base, dn, "staff", &x);
    check(rc == LDAP_SUCCESS && x.depth_of_last == 3 && x.max_depth == 3,
          "alice reaches staff three levels up (depth %d)", x.depth_of_last);
    strlist_release(&x.names);

out:
    if (svc)
        ldap_unbind_ext_s(svc, NULL, NULL);
    printf("# %d check(s) failed\n", checks_failed);
    return checks_failed ? 1 : 0;
}
