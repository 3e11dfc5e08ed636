/*
 * `quarry keys create|list|revoke` (service API keys) and `quarry auth flush|whoami|login` (the
 * principal cache, and a look at what LDAP says about a user). Keys are shown once, at creation,
 * on stdout alone so that scripts can capture them; everything else about them goes to stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "cli/cli.h"

#define PASSWORD_MAX 4096

static int fail(const cli_ctx *ctx, qr_status st, const char *err)
{
    fprintf(stderr, "quarry %s: %s (%s)\n", ctx->argv[0], err, qr_status_name(st));
    return CLI_EXIT_FAILURE;
}

static int open_auth(const cli_ctx *ctx, auth_ctx **auth)
{
    char err[QR_ERR_LEN];
    qr_status st = auth_new(ctx->cfg, auth, err);
    if (st) {
        fprintf(stderr, "quarry %s: %s\n", ctx->argv[0], err);
        return st == QR_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

static void iso_time(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- quarry keys ------------------------------------------------------------------------------ */

static int keys_create(cli_ctx *ctx, auth_ctx *auth)
{
    const char *name = NULL, *scopes_text = NULL;
    for (int i = 2; i < ctx->argc; i++) {
        if (strcmp(ctx->argv[i], "--name") == 0 && i + 1 < ctx->argc)
            name = ctx->argv[++i];
        else if (strncmp(ctx->argv[i], "--name=", 7) == 0)
            name = ctx->argv[i] + 7;
        else if (strcmp(ctx->argv[i], "--scopes") == 0 && i + 1 < ctx->argc)
            scopes_text = ctx->argv[++i];
        else if (strncmp(ctx->argv[i], "--scopes=", 9) == 0)
            scopes_text = ctx->argv[i] + 9;
        else
            return cli_usage_error(ctx, "unknown argument '%s'", ctx->argv[i]);
    }
    if (!name || !scopes_text)
        return cli_usage_error(ctx, "keys create needs --name NAME and --scopes LIST");
    char err[QR_ERR_LEN];
    unsigned scopes;
    if (auth_scopes_parse(scopes_text, &scopes, err))
        return cli_usage_error(ctx, "%s", err);
    char *key = NULL;
    auth_key_info info;
    qr_status st = auth_key_create(auth, name, scopes, &key, &info, err);
    if (st)
        return fail(ctx, st, err);
    char scope_names[64];
    auth_scopes_format(info.scopes, scope_names, sizeof(scope_names));
    printf("%s\n", key);
    fflush(stdout);
    fprintf(stderr,
            "created key %s '%s' with scopes %s.\nThe key above is shown this once: quarry keeps only its "
            "hash. Revoke it with: quarry keys revoke %s\n",
            info.id, info.name, scope_names, info.id);
    free(key);
    auth_key_info_release(&info);
    return CLI_EXIT_OK;
}

static int keys_list(cli_ctx *ctx, auth_ctx *auth)
{
    bool json = false;
    for (int i = 2; i < ctx->argc; i++) {
        if (strcmp(ctx->argv[i], "--json") == 0)
            json = true;
        else
            return cli_usage_error(ctx, "unknown argument '%s'", ctx->argv[i]);
    }
    char err[QR_ERR_LEN];
    auth_key_info *keys = NULL;
    size_t n = 0;
    qr_status st = auth_key_list(auth, &keys, &n, err);
    if (st)
        return fail(ctx, st, err);
    qr_buf out;
    qr_buf_init(&out, 64u << 20);
    if (json)
        qr_buf_puts(&out, "{\"keys\":[");
    else
        qr_buf_printf(&out, "%-16s  %-24s  %-32s  %-20s  %s\n", "ID", "NAME", "SCOPES", "CREATED", "STATUS");
    for (size_t i = 0; i < n; i++) {
        char scopes[64], created[32], revoked[32] = "";
        auth_scopes_format(keys[i].scopes, scopes, sizeof(scopes));
        iso_time(keys[i].created_ms, created, sizeof(created));
        if (keys[i].revoked_ms)
            iso_time(keys[i].revoked_ms, revoked, sizeof(revoked));
        if (json) {
            qr_buf_printf(&out, "%s{\"id\":\"%s\",\"name\":", i ? "," : "", keys[i].id);
            qr_json_escape(&out, keys[i].name, strlen(keys[i].name));
            qr_buf_printf(&out, ",\"scopes\":\"%s\",\"created\":\"%s\",\"revoked\":", scopes, created);
            qr_buf_puts(&out, keys[i].revoked_ms ? "\"" : "null");
            if (keys[i].revoked_ms)
                qr_buf_printf(&out, "%s\"", revoked);
            qr_buf_putc(&out, '}');
        } else {
            qr_buf_printf(&out, "%-16s  %-24s  %-32s  %-20s  %s%s\n", keys[i].id, keys[i].name, scopes,
                          created, keys[i].revoked_ms ? "revoked " : "active", revoked);
        }
    }
    if (json)
        qr_buf_puts(&out, "]}\n");
    /* the appends' failure is sticky: print all of the list or none of it */
    st = qr_buf_failed(&out);
    if (!st)
        fputs(qr_buf_str(&out), stdout);
    qr_buf_release(&out);
    auth_key_list_free(keys, n);
    return st ? fail(ctx, st, "the key list is too large to print") : CLI_EXIT_OK;
}

static int keys_revoke(cli_ctx *ctx, auth_ctx *auth)
{
    if (ctx->argc != 3)
        return cli_usage_error(ctx, "keys revoke takes one key id");
    char err[QR_ERR_LEN];
    qr_status st = auth_key_revoke(auth, ctx->argv[2], err);
    if (st)
        return fail(ctx, st, err);
    fprintf(stderr, "revoked key %s\n", ctx->argv[2]);
    return CLI_EXIT_OK;
}

int cli_cmd_keys(cli_ctx *ctx)
{
    if (ctx->argc < 2)
        return cli_usage_error(ctx, "missing subcommand (create, list or revoke)");
    const char *sub = ctx->argv[1];
    int (*run)(cli_ctx *, auth_ctx *) = strcmp(sub, "create") == 0   ? keys_create
                                        : strcmp(sub, "list") == 0   ? keys_list
                                        : strcmp(sub, "revoke") == 0 ? keys_revoke
                                                                     : NULL;
    if (!run)
        return cli_usage_error(ctx, "unknown subcommand '%s'", sub);
    auth_ctx *auth = NULL;
    int rc = open_auth(ctx, &auth);
    if (rc == CLI_EXIT_OK)
        rc = run(ctx, auth);
    auth_free(auth);
    return rc;
}

/* ---- quarry auth ------------------------------------------------------------------------------ */

/* Prints all of it or, when it is too large to format (QR_ELIMIT, QR_ENOMEM), nothing. */
static qr_status print_principal(const auth_principal *p, bool json)
{
    qr_buf out;
    qr_buf_init(&out, 16u << 20);
    if (json) {
        const char *fields[][2] = {
            {"uid", p->uid}, {"dn", p->dn}, {"display_name", p->display_name}, {"mail", p->mail}};
        qr_buf_putc(&out, '{');
        for (size_t i = 0; i < 4; i++) {
            qr_buf_printf(&out, "\"%s\":", fields[i][0]);
            qr_json_escape(&out, fields[i][1], strlen(fields[i][1]));
            qr_buf_putc(&out, ',');
        }
        qr_buf_printf(&out, "\"is_admin\":%s,\"groups\":[", p->is_admin ? "true" : "false");
        for (size_t i = 0; i < p->ngroups; i++) {
            if (i)
                qr_buf_putc(&out, ',');
            qr_json_escape(&out, p->groups[i], strlen(p->groups[i]));
        }
        qr_buf_puts(&out, "],\"principals\":[");
        for (size_t i = 0; i < p->nprincipals; i++) {
            if (i)
                qr_buf_putc(&out, ',');
            qr_json_escape(&out, p->principals[i], strlen(p->principals[i]));
        }
        qr_buf_puts(&out, "]}\n");
    } else {
        qr_buf_printf(
            &out,
            "uid:          %s\ndn:           %s\ndisplay name: %s\nmail:         %s\nadmin:        %s\n",
            p->uid, p->dn, p->display_name, p->mail, p->is_admin ? "yes" : "no");
        qr_buf_puts(&out, "groups:      ");
        for (size_t i = 0; i < p->ngroups; i++)
            qr_buf_printf(&out, " %s%s", p->groups[i], i + 1 < p->ngroups ? "," : "");
        qr_buf_puts(&out, p->ngroups ? "\nprincipals:  " : " (none)\nprincipals:  ");
        for (size_t i = 0; i < p->nprincipals; i++)
            qr_buf_printf(&out, " %s", p->principals[i]);
        qr_buf_putc(&out, '\n');
    }
    qr_status st = qr_buf_failed(&out);
    if (!st)
        fputs(qr_buf_str(&out), stdout);
    qr_buf_release(&out);
    return st;
}

/* Reads one line from stdin without echo when it is a terminal. Returns its length or -1. */
static long read_password(char *buf, size_t size)
{
    struct termios saved, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (tty) {
        fputs("Password: ", stderr);
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char *line = fgets(buf, (int)size, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        fputc('\n', stderr);
    }
    if (!line)
        return -1;
    size_t len = strlen(buf);
    if (len == size - 1 && buf[len - 1] != '\n')
        return -1; /* longer than any password auth accepts */
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    buf[len] = '\0';
    return (long)len;
}

/* `quarry auth audit-hash QUERY`: the audit log's query_hmac for QUERY, so that an administrator
 * holding the data directory can find who asked it (the log never holds the text). */
static int audit_hash(cli_ctx *ctx)
{
    if (ctx->argc != 3)
        return cli_usage_error(ctx, "auth audit-hash needs exactly one QUERY (quote it)");
    auth_ctx *auth = NULL;
    int rc = open_auth(ctx, &auth);
    if (rc != CLI_EXIT_OK)
        return rc;
    char err[QR_ERR_LEN], hash[65];
    qr_status st =
        auth_keyed_hash(auth, AUTH_PURPOSE_AUDIT_QUERY, ctx->argv[2], strlen(ctx->argv[2]), hash, err);
    auth_free(auth);
    if (st)
        return fail(ctx, st, err);
    printf("%s\n", hash);
    return CLI_EXIT_OK;
}

/* Prints what an OIDC token said, as far as it was read. */
static void print_oidc_info(const auth_oidc_info *info, bool json)
{
    char when[32] = "";
    if (info->expires_at)
        iso_time(info->expires_at * 1000, when, sizeof(when));
    const char *fields[][2] = {{"issuer", info->issuer}, {"alg", info->alg},         {"kid", info->kid},
                               {"claim", info->claim},   {"subject", info->subject}, {"expires", when}};
    qr_buf out;
    qr_buf_init(&out, 1 << 16);
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (json) {
            qr_buf_printf(&out, "%s\"%s\":", i ? "," : "{", fields[i][0]);
            qr_json_escape(&out, fields[i][1], strlen(fields[i][1]));
        } else {
            qr_buf_printf(&out, "%-13s %s\n", fields[i][0], *fields[i][1] ? fields[i][1] : "-");
        }
    }
    if (json)
        qr_buf_puts(&out, "}\n");
    if (!qr_buf_failed(&out))
        fputs(qr_buf_str(&out), stdout);
    qr_buf_release(&out);
}

/* `quarry auth whoami --token JWT`: how an OpenID Connect token maps to a directory user (issuer,
 * claim, uid, groups), or why it is refused. "-" reads the token from standard input, which keeps
 * it out of the shell's history. */
static int whoami_token(cli_ctx *ctx, const char *jwt, bool json)
{
    char line[1 << 20];
    if (strcmp(jwt, "-") == 0) {
        if (!fgets(line, sizeof(line), stdin))
            return cli_usage_error(ctx, "cannot read a token from standard input");
        line[strcspn(line, "\r\n")] = '\0';
        jwt = line;
    }
    auth_ctx *auth = NULL;
    int rc = open_auth(ctx, &auth);
    if (rc != CLI_EXIT_OK)
        return rc;
    char err[QR_ERR_LEN];
    auth_oidc_info info;
    auth_principal *p = NULL;
    qr_status st = auth_oidc_principal(auth, jwt, &info, &p, err);
    print_oidc_info(&info, json);
    if (!st && (st = print_principal(p, json)))
        snprintf(err, sizeof(err), "the principal is too large to print");
    rc = st ? fail(ctx, st, err) : CLI_EXIT_OK;
    auth_principal_release(p);
    auth_free(auth);
    return rc;
}

int cli_cmd_auth(cli_ctx *ctx)
{
    if (ctx->argc < 2)
        return cli_usage_error(ctx, "missing subcommand (flush, whoami, login or audit-hash)");
    const char *sub = ctx->argv[1];
    const char *as = NULL, *uid = NULL, *jwt = NULL;
    bool json = false, token = false;
    if (strcmp(sub, "audit-hash") == 0)
        return audit_hash(ctx);
    if (strcmp(sub, "flush") != 0 && strcmp(sub, "whoami") != 0 && strcmp(sub, "login") != 0)
        return cli_usage_error(ctx, "unknown subcommand '%s'", sub);
    for (int i = 2; i < ctx->argc; i++) {
        const char *a = ctx->argv[i];
        if (strcmp(sub, "whoami") == 0 && strcmp(a, "--as") == 0 && i + 1 < ctx->argc)
            as = ctx->argv[++i];
        else if (strcmp(sub, "whoami") == 0 && strncmp(a, "--as=", 5) == 0)
            as = a + 5;
        else if (strcmp(sub, "whoami") == 0 && strcmp(a, "--token") == 0 && i + 1 < ctx->argc)
            jwt = ctx->argv[++i];
        else if (strcmp(sub, "whoami") == 0 && strncmp(a, "--token=", 8) == 0)
            jwt = a + 8;
        else if (strcmp(sub, "flush") != 0 && strcmp(a, "--json") == 0)
            json = true;
        else if (strcmp(sub, "login") == 0 && strcmp(a, "--token") == 0)
            token = true;
        else if (strcmp(sub, "login") == 0 && a[0] != '-' && !uid)
            uid = a;
        else
            return cli_usage_error(ctx, "unknown argument '%s'", a);
    }
    if (strcmp(sub, "whoami") == 0 && !as == !jwt)
        return cli_usage_error(ctx,
                               "auth whoami needs --as UID or --token JWT (- reads it from standard input)");
    if (jwt)
        return whoami_token(ctx, jwt, json);
    if (strcmp(sub, "login") == 0 && !uid)
        return cli_usage_error(ctx, "auth login needs a user name");

    auth_ctx *auth = NULL;
    int rc = open_auth(ctx, &auth);
    if (rc != CLI_EXIT_OK)
        return rc;
    char err[QR_ERR_LEN];
    auth_principal *p = NULL;
    qr_status st = QR_OK;
    if (strcmp(sub, "flush") == 0) {
        st = auth_flush(auth, err);
        if (!st)
            fprintf(stderr,
                    "principal cache flushed (running servers sharing this data directory follow within "
                    "a second)\n");
    } else if (as) {
        st = auth_resolve(auth, as, &p, err);
    } else {
        char password[PASSWORD_MAX + 2];
        long len = read_password(password, sizeof(password));
        if (len < 0) {
            st = qr_fail(err, QR_EINVAL, "cannot read a password from standard input");
        } else {
            st = auth_authenticate(auth, uid, strlen(uid), password, (size_t)len, NULL, &p, err);
            memset(password, 0, sizeof(password));
        }
        if (!st && token) {
            char *t = NULL;
            int64_t exp = 0;
            st = auth_token_issue(auth, p->uid, 0, &t, &exp, err);
            if (!st) {
                char when[32];
                iso_time(exp * 1000, when, sizeof(when));
                printf("%s\n", t);
                fprintf(stderr, "bearer token for %s, valid until %s\n", p->uid, when);
                free(t);
                auth_principal_release(p);
                p = NULL;
            }
        }
    }
    if (p && (st = print_principal(p, json)))
        snprintf(err, sizeof(err), "the principal is too large to print");
    rc = st ? fail(ctx, st, err) : CLI_EXIT_OK;
    auth_principal_release(p);
    auth_free(auth);
    return rc;
}
