/*
 * Configuration as one table: every key quarry reads, with its type, default, limits and help.
 * Values come from the defaults, then a JSON config file, then QUARRY_SECTION_KEY environment
 * variables, then command-line --set arguments, each overriding the one before. The file is JSON
 * with // line comments. Every value is validated where it enters; a load that fails leaves the
 * configuration as it was.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core.h"

#define CONFIG_FILE_MAX (1u << 20)

#define CONFIG_ROW(type, section, key, default_str, ...) \
    {#section "." #key, QR_CFG_##type, default_str, __VA_ARGS__, offsetof(qr_settings, section##_##key)},

static const qr_cfg_key config_table[] = {QR_CONFIG_KEYS(CONFIG_ROW)};

#define CONFIG_NKEYS (sizeof(config_table) / sizeof(config_table[0]))

typedef struct {
    char *str; /* text form, always set */
    int64_t i;
    double d;
    bool b;
    qr_cfg_source src;
} cfg_value;

struct qr_config {
    cfg_value v[CONFIG_NKEYS];
    qr_settings settings; /* the same values, typed; refreshed by every change */
};

const qr_cfg_key *qr_config_keys(size_t *count)
{
    *count = CONFIG_NKEYS;
    return config_table;
}

static int key_index(const char *name)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (strcmp(config_table[i].name, name) == 0)
            return (int)i;
    return -1;
}

static const char *source_name(qr_cfg_source src)
{
    switch (src) {
    case QR_CFG_SRC_DEFAULT: return "default";
    case QR_CFG_SRC_FILE: return "file";
    case QR_CFG_SRC_ENV: return "env";
    case QR_CFG_SRC_CLI: return "command line";
    }
    return "?";
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "on", "yes"};
    static const char *const no[] = {"0", "false", "off", "no"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool choice_ok(const char *choices, const char *value)
{
    size_t vlen = strlen(value);
    const char *p = choices;
    while (*p) {
        size_t len = strcspn(p, "|");
        if (len == vlen && strncmp(p, value, len) == 0)
            return true;
        p += len;
        if (*p == '|')
            p++;
    }
    return false;
}

/* Checks that a value has no bytes that would corrupt a log line, a header or a filter. */
static bool text_ok(const char *value)
{
    size_t n = strlen(value);
    if (!qr_utf8_valid(value, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)value[i] < 0x20 || value[i] == 0x7F)
            return false;
    return true;
}

/* Checks an absolute URL that quarry only publishes (in /openapi.json), never fetches: http or
 * https, a host, no user name or password (the document is public), no query, fragment or space.
 * Returns NULL when it is fine, else why not. */
static const char *published_url_problem(const char *url)
{
    size_t scheme = strncasecmp(url, "https://", 8) == 0 ? 8 : strncasecmp(url, "http://", 7) == 0 ? 7 : 0;
    if (!scheme)
        return "is not an http:// or https:// URL";
    const char *host = url + scheme;
    size_t authority = strcspn(host, "/");
    if (authority == 0 || host[0] == ':')
        return "has no host";
    if (memchr(host, '@', authority))
        return "must not hold a user name or password";
    if (strpbrk(url, "?# \t\\\"<>{}|^`"))
        return "must not hold a query, a fragment, spaces or characters a URL cannot";
    return NULL;
}

/* Rules for particular keys beyond type and range. */
static qr_status validate_special(const qr_cfg_key *key, const char *value, char *err)
{
    if ((strcmp(key->name, "server.public_url") == 0 || strcmp(key->name, "oidc.authorization_url") == 0 ||
         strcmp(key->name, "oidc.token_url") == 0) &&
        *value) {
        const char *why = published_url_problem(value);
        if (why)
            return qr_fail(err, QR_EINVAL, "%s: '%s' %s", key->name, value, why);
    }
    if (strcmp(key->name, "ldap.uri") == 0 && *value) {
        char *copy = strdup(value);
        if (!copy)
            return QR_ENOMEM;
        qr_status st = QR_OK;
        char *save = NULL;
        for (char *u = strtok_r(copy, " ,", &save); u; u = strtok_r(NULL, " ,", &save)) {
            if (strncasecmp(u, "ldap://", 7) != 0 && strncasecmp(u, "ldaps://", 8) != 0 &&
                strncasecmp(u, "ldapi://", 8) != 0) {
                st = qr_fail(err, QR_EINVAL, "ldap.uri: '%s' is not an ldap://, ldaps:// or ldapi:// URI", u);
                break;
            }
        }
        free(copy);
        return st;
    }
    if (strcmp(key->name, "inference.base_url") == 0 && *value && strncasecmp(value, "http://", 7) != 0 &&
        strncasecmp(value, "https://", 8) != 0)
        return qr_fail(err, QR_EINVAL, "inference.base_url: '%s' is not an http:// or https:// URL", value);
    if (strcmp(key->name, "server.listen") == 0) {
        const char *colon = strrchr(value, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || colon == value || !end || *end || colon[1] == '\0' || port < 0 || port > 65535)
            return qr_fail(err, QR_EINVAL, "server.listen: '%s' is not host:port", value);
    }
    if (strcmp(key->name, "log.components") == 0) {
        /* validated by the logger's own parser */
        qr_log_level level;
        const char *p = value;
        while (*p) {
            size_t len = strcspn(p, ",");
            const char *eq = memchr(p, '=', len);
            char lvl[16];
            size_t lvl_len = eq ? len - (size_t)(eq - p) - 1 : 0;
            if (!eq || eq == p || lvl_len >= sizeof(lvl))
                return qr_fail(err, QR_EINVAL, "log.components: bad entry '%.*s' (expected component=level)",
                               (int)len, p);
            memcpy(lvl, eq + 1, lvl_len);
            lvl[lvl_len] = '\0';
            if (qr_log_level_parse(lvl, &level, err))
                return QR_EINVAL;
            p += len;
            if (*p == ',')
                p++;
        }
    }
    if (strcmp(key->name, "auth.token_secret") == 0 && *value && strlen(value) < 32)
        return qr_fail(err, QR_EINVAL, "auth.token_secret: too short (%zu characters; at least 32)",
                       strlen(value));
    if ((strcmp(key->name, "ldap.user_filter") == 0 && !strstr(value, "%s")) ||
        (strcmp(key->name, "ldap.group_filter") == 0 && !strstr(value, "%d") && !strstr(value, "%u")))
        return qr_fail(err, QR_EINVAL, "%s: '%s' has no placeholder (%s)", key->name, value,
                       key->name[5] == 'u' ? "%s" : "%d or %u");
    return QR_OK;
}

/* Parses and validates text for key k into *out (out->str is allocated). */
static qr_status parse_value(const qr_cfg_key *key, const char *value, cfg_value *out, char *err)
{
    memset(out, 0, sizeof(*out));
    if (!text_ok(value))
        return qr_fail(err, QR_EINVAL, "%s: value is not valid UTF-8 text without control characters",
                       key->name);
    switch (key->type) {
    case QR_CFG_STRING:
        if (key->choices && !choice_ok(key->choices, value))
            return qr_fail(err, QR_EINVAL, "%s: '%s' is not one of %s", key->name, value, key->choices);
        break;
    case QR_CFG_INT: {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (!*value || errno || !end || *end)
            return qr_fail(err, QR_EINVAL, "%s: '%s' is not an integer", key->name, value);
        if (key->min <= key->max && ((double)v < key->min || (double)v > key->max))
            return qr_fail(err, QR_EINVAL, "%s: %lld is out of range [%.0f, %.0f]", key->name, v, key->min,
                           key->max);
        out->i = v;
        out->d = (double)v;
        break;
    }
    case QR_CFG_DOUBLE: {
        char *end = NULL;
        errno = 0;
        double v = strtod(value, &end);
        if (!*value || errno || !end || *end || !isfinite(v))
            return qr_fail(err, QR_EINVAL, "%s: '%s' is not a number", key->name, value);
        if (key->min <= key->max && (v < key->min || v > key->max))
            return qr_fail(err, QR_EINVAL, "%s: %g is out of range [%g, %g]", key->name, v, key->min,
                           key->max);
        out->d = v;
        break;
    }
    case QR_CFG_BOOL:
        if (!parse_bool(value, &out->b))
            return qr_fail(err, QR_EINVAL, "%s: '%s' is not a boolean (true/false, on/off, yes/no, 1/0)",
                           key->name, value);
        break;
    }
    qr_status st = validate_special(key, value, err);
    if (st)
        return st;
    out->str = strdup(value);
    return out->str ? QR_OK : QR_ENOMEM;
}

/* Copies every value into its typed field. */
static void settings_refresh(qr_config *cfg)
{
    char *base = (char *)&cfg->settings;
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const cfg_value *v = &cfg->v[i];
        void *field = base + config_table[i].offset;
        switch (config_table[i].type) {
        case QR_CFG_STRING: memcpy(field, &v->str, sizeof(v->str)); break;
        case QR_CFG_INT: memcpy(field, &v->i, sizeof(v->i)); break;
        case QR_CFG_DOUBLE: memcpy(field, &v->d, sizeof(v->d)); break;
        case QR_CFG_BOOL: memcpy(field, &v->b, sizeof(v->b)); break;
        }
    }
}

qr_config *qr_config_new(void)
{
    qr_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        char err[QR_ERR_LEN];
        if (parse_value(&config_table[i], config_table[i].default_str, &cfg->v[i], err)) {
            /* a default that fails its own validation is a bug in the table */
            fprintf(stderr, "quarry: bad default in config table: %s\n", err);
            abort();
        }
    }
    settings_refresh(cfg);
    return cfg;
}

void qr_config_free(qr_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        free(cfg->v[i].str);
    free(cfg);
}

/* A staged change: values replaced in a load, applied only when the whole load succeeds. */
typedef struct {
    cfg_value v[CONFIG_NKEYS];
    bool set[CONFIG_NKEYS];
} cfg_stage;

static void stage_release(cfg_stage *s)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (s->set[i])
            free(s->v[i].str);
}

static void stage_commit(qr_config *cfg, cfg_stage *s)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        if (!s->set[i])
            continue;
        free(cfg->v[i].str);
        cfg->v[i] = s->v[i];
        s->set[i] = false;
    }
    settings_refresh(cfg);
}

static qr_status stage_set(cfg_stage *s, const char *name, const char *value, qr_cfg_source src, char *err)
{
    int k = key_index(name);
    if (k < 0)
        return qr_fail(err, QR_EINVAL, "unknown configuration key '%s'", name);
    cfg_value v;
    qr_status st = parse_value(&config_table[k], value, &v, err);
    if (st)
        return st;
    v.src = src;
    if (s->set[k])
        free(s->v[k].str);
    s->v[k] = v;
    s->set[k] = true;
    return QR_OK;
}

qr_status qr_config_set(qr_config *cfg, const char *name, const char *value, qr_cfg_source src, char *err)
{
    cfg_stage stage = {0};
    qr_status st = stage_set(&stage, name, value, src, err);
    if (!st)
        stage_commit(cfg, &stage);
    stage_release(&stage);
    return st;
}

qr_status qr_config_set_arg(qr_config *cfg, const char *assignment, char *err)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return qr_fail(err, QR_EINVAL, "bad setting '%s' (expected section.key=value)", assignment);
    char name[128];
    size_t len = (size_t)(eq - assignment);
    if (len >= sizeof(name))
        return qr_fail(err, QR_EINVAL, "unknown configuration key '%.*s'", (int)len, assignment);
    memcpy(name, assignment, len);
    name[len] = '\0';
    return qr_config_set(cfg, name, eq + 1, QR_CFG_SRC_CLI, err);
}

/* Text form of a JSON value for key `name`; arrays of strings join with commas. */
static qr_status json_to_text(const char *path, const char *name, json_t *val, qr_buf *out, char *err)
{
    char num[64];
    switch (json_typeof(val)) {
    case JSON_STRING:
        return qr_buf_append(out, json_string_value(val), json_string_length(val)) ? QR_ENOMEM : QR_OK;
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(val));
        return qr_buf_puts(out, num);
    case JSON_REAL: snprintf(num, sizeof(num), "%.17g", json_real_value(val)); return qr_buf_puts(out, num);
    case JSON_TRUE: return qr_buf_puts(out, "true");
    case JSON_FALSE: return qr_buf_puts(out, "false");
    case JSON_ARRAY: {
        size_t i;
        json_t *item;
        json_array_foreach(val, i, item)
        {
            if (!json_is_string(item))
                return qr_fail(err, QR_EINVAL, "%s: %s: a list may hold only strings", path, name);
            if ((i && qr_buf_putc(out, ',')) || qr_buf_puts(out, json_string_value(item)))
                return QR_ENOMEM;
        }
        return QR_OK;
    }
    default: return qr_fail(err, QR_EINVAL, "%s: %s: expected a string, number, boolean or list", path, name);
    }
}

static qr_status stage_json(cfg_stage *stage, const char *path, const char *name, json_t *val, char *err)
{
    int k = key_index(name);
    if (k < 0)
        return qr_fail(err, QR_EINVAL, "%s: unknown configuration key '%s'", path, name);
    const qr_cfg_key *key = &config_table[k];
    bool type_ok = json_is_string(val) || (key->type == QR_CFG_INT && json_is_integer(val)) ||
                   (key->type == QR_CFG_DOUBLE && json_is_number(val)) ||
                   (key->type == QR_CFG_BOOL && json_is_boolean(val)) ||
                   (key->type == QR_CFG_STRING && json_is_array(val));
    if (!type_ok)
        return qr_fail(err, QR_EINVAL, "%s: %s: wrong type for a %s value", path, name,
                       key->type == QR_CFG_INT      ? "integer"
                       : key->type == QR_CFG_DOUBLE ? "number"
                       : key->type == QR_CFG_BOOL   ? "boolean"
                                                    : "string");
    qr_buf text;
    qr_buf_init(&text, CONFIG_FILE_MAX);
    qr_status st = json_to_text(path, name, val, &text, err);
    if (!st) {
        char inner[QR_ERR_LEN];
        st = stage_set(stage, name, qr_buf_str(&text), QR_CFG_SRC_FILE, inner);
        if (st)
            qr_fail(err, st, "%s: %s", path, inner);
    }
    qr_buf_release(&text);
    return st;
}

/* Blanks out the // comments of a config file (whole-line or trailing, outside strings) with
 * spaces, in place, so that jansson's line and column numbers still point into the file as
 * written. A '/' outside a string that does not start "//" (a C-style comment, say) is an error
 * naming its line and column; an unterminated string is left for jansson to report. */
static qr_status strip_comments(const char *path, char *text, size_t len, char *err)
{
    bool in_string = false;
    int line = 1, col = 0;
    for (size_t i = 0; i < len; i++) {
        col++;
        if (text[i] == '\n') {
            line++;
            col = 0;
            continue;
        }
        if (in_string) {
            if (text[i] == '\\' && i + 1 < len && text[i + 1] != '\n') {
                i++;
                col++;
            } else if (text[i] == '"') {
                in_string = false;
            }
            continue;
        }
        if (text[i] == '"') {
            in_string = true;
        } else if (text[i] == '/') {
            if (i + 1 >= len || text[i + 1] != '/')
                return qr_fail(err, QR_EINVAL,
                               "%s:%d:%d: unexpected '/' (comments are whole or trailing lines "
                               "starting with //; /* */ is not supported)",
                               path, line, col);
            while (i < len && text[i] != '\n')
                text[i++] = ' ';
            i--; /* the newline, if any, is counted on the next turn */
        }
    }
    return QR_OK;
}

qr_status qr_config_load_file(qr_config *cfg, const char *path, char *err)
{
    char *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    cfg_stage stage = {0};
    qr_status st = qr_read_file(path, CONFIG_FILE_MAX, &text, &len, err);
    if (st)
        goto out;
    st = strip_comments(path, text, len, err);
    if (st)
        goto out;
    json_error_t jerr;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        st = qr_fail(err, QR_EINVAL, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        st = qr_fail(err, QR_EINVAL, "%s: the configuration must be a JSON object of sections", path);
        goto out;
    }
    const char *section;
    json_t *sval;
    json_object_foreach(root, section, sval)
    {
        if (strchr(section, '.')) {
            st = stage_json(&stage, path, section, sval, err);
        } else if (json_is_object(sval)) {
            const char *key;
            json_t *kval;
            json_object_foreach(sval, key, kval)
            {
                char name[160];
                if ((size_t)snprintf(name, sizeof(name), "%s.%s", section, key) >= sizeof(name)) {
                    st = qr_fail(err, QR_EINVAL, "%s: unknown configuration key '%s.%s'", path, section, key);
                    break;
                }
                st = stage_json(&stage, path, name, kval, err);
                if (st)
                    break;
            }
        } else {
            st = qr_fail(err, QR_EINVAL, "%s: '%s' must be an object of keys (or a dotted key)", path,
                         section);
        }
        if (st)
            goto out;
    }
    stage_commit(cfg, &stage);
out:
    stage_release(&stage);
    json_decref(root);
    free(text);
    return st;
}

/* QUARRY_ variables that are not configuration keys. */
static bool env_ignored(const char *name)
{
    return strncmp(name, "QUARRY_TEST_", 12) == 0 || strncmp(name, "QUARRY_FAISS_", 13) == 0 ||
           strncmp(name, "QUARRY_BOOTSTRAP_", 17) == 0 || strcmp(name, "QUARRY_CONFIG") == 0;
}

static void env_name(const char *key, char *out, size_t len)
{
    size_t j = (size_t)snprintf(out, len, "QUARRY_");
    for (size_t i = 0; key[i] && j + 1 < len; i++)
        out[j++] = key[i] == '.' ? '_' : (char)toupper((unsigned char)key[i]);
    out[j] = '\0';
}

extern char **environ;

qr_status qr_config_load_env(qr_config *cfg, char *const *envp, char *err)
{
    cfg_stage stage = {0};
    qr_status st = QR_OK;
    if (!envp)
        envp = environ;
    for (size_t e = 0; envp[e]; e++) {
        const char *var = envp[e];
        if (strncmp(var, "QUARRY_", 7) != 0)
            continue;
        const char *eq = strchr(var, '=');
        if (!eq)
            continue;
        size_t nlen = (size_t)(eq - var);
        bool matched = false;
        for (size_t k = 0; k < CONFIG_NKEYS; k++) {
            char name[160];
            env_name(config_table[k].name, name, sizeof(name));
            if (strlen(name) != nlen || strncmp(name, var, nlen) != 0)
                continue;
            matched = true;
            char inner[QR_ERR_LEN];
            st = stage_set(&stage, config_table[k].name, eq + 1, QR_CFG_SRC_ENV, inner);
            if (st) {
                qr_fail(err, st, "environment variable %s: %s", name, inner);
                goto out;
            }
        }
        if (!matched) {
            char name[160];
            snprintf(name, sizeof(name), "%.*s", (int)nlen, var);
            if (!env_ignored(name))
                qr_log(QR_LOG_WARN, "config", "ignoring environment variable %s: no such configuration key",
                       name);
        }
    }
    stage_commit(cfg, &stage);
out:
    stage_release(&stage);
    return st;
}

const qr_settings *qr_config_settings(const qr_config *cfg)
{
    return &cfg->settings;
}

qr_cfg_source qr_config_source(const qr_config *cfg, const char *name)
{
    int k = key_index(name);
    return k < 0 ? QR_CFG_SRC_DEFAULT : cfg->v[k].src;
}

qr_status qr_config_dump(const qr_config *cfg, bool json, qr_buf *out)
{
    qr_status st = json ? qr_buf_putc(out, '{') : QR_OK;
    for (size_t k = 0; k < CONFIG_NKEYS && !st; k++) {
        const qr_cfg_key *key = &config_table[k];
        const cfg_value *v = &cfg->v[k];
        const char *shown = key->secret && *v->str ? "********" : v->str;
        if (json) {
            if (k)
                st = qr_buf_putc(out, ',');
            if (!st)
                st = qr_json_escape(out, key->name, strlen(key->name));
            if (!st)
                st = qr_buf_putc(out, ':');
            if (st)
                break;
            if (key->type == QR_CFG_STRING || (key->secret && *v->str))
                st = qr_json_escape(out, shown, strlen(shown));
            else if (key->type == QR_CFG_BOOL)
                st = qr_buf_puts(out, v->b ? "true" : "false");
            else if (key->type == QR_CFG_INT)
                st = qr_buf_printf(out, "%lld", (long long)v->i);
            else
                st = qr_buf_printf(out, "%.17g", v->d);
        } else {
            st = qr_buf_printf(out, "%-24s = %-40s # %s\n", key->name,
                               key->type == QR_CFG_BOOL ? (v->b ? "on" : "off") : shown, source_name(v->src));
        }
    }
    if (json && !st)
        st = qr_buf_puts(out, "}\n");
    return st;
}

qr_status qr_config_apply_logging(const qr_config *cfg, char *err)
{
    qr_log_level level;
    const qr_settings *set = qr_config_settings(cfg);
    qr_status st = qr_log_level_parse(set->log_level, &level, err);
    if (st)
        return st;
    qr_log_format format = strcmp(set->log_format, "json") == 0 ? QR_LOG_JSON : QR_LOG_TEXT;
    if ((st = qr_log_configure(level, format, set->log_components, err)))
        return st;
    return *set->log_file ? qr_log_open_file(set->log_file, err) : QR_OK;
}

qr_config *qr_config_clone(const qr_config *cfg)
{
    qr_config *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        c->v[i] = cfg->v[i];
        if (!(c->v[i].str = strdup(cfg->v[i].str))) {
            qr_config_free(c);
            return NULL;
        }
    }
    settings_refresh(c);
    return c;
}

static bool value_equal(qr_cfg_type type, const cfg_value *a, const cfg_value *b)
{
    switch (type) {
    case QR_CFG_INT: return a->i == b->i;
    case QR_CFG_DOUBLE: return a->d == b->d;
    case QR_CFG_BOOL: return a->b == b->b;
    case QR_CFG_STRING: break;
    }
    return strcmp(a->str, b->str) == 0;
}

qr_status qr_config_reload(qr_config *live, const qr_config *loaded, qr_buf *changed, qr_buf *restart)
{
    cfg_stage stage;
    memset(&stage, 0, sizeof(stage));
    qr_status st = QR_OK;
    for (size_t i = 0; i < CONFIG_NKEYS && !st; i++) {
        if (value_equal(config_table[i].type, &live->v[i], &loaded->v[i]))
            continue;
        qr_buf *list = config_table[i].reload ? changed : restart;
        st = qr_buf_printf(list, "%s%s", qr_buf_len(list) ? ", " : "", config_table[i].name);
        if (st || !config_table[i].reload)
            continue;
        stage.v[i] = loaded->v[i];
        if (!(stage.v[i].str = strdup(loaded->v[i].str)))
            st = QR_ENOMEM;
        else
            stage.set[i] = true;
    }
    if (st)
        stage_release(&stage);
    else
        stage_commit(live, &stage);
    return st;
}
