/*
 * Logging: one line per message, as text or JSON lines, with a default level and per-component
 * overrides. Every line passes through a scrubber that masks secret-looking values, so a
 * careless caller cannot leak a password or a token into the log. Lines go to stderr or to
 * log.file; append-only logs (this one, the access and audit logs) are reopened in place after
 * logrotate moves them (qr_reopen_append), so that writers never see a closed descriptor.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

#define LOG_MAX_COMPONENTS 32
#define LOG_COMPONENT_LEN  32
#define LOG_LINE_MAX       8192

typedef struct {
    char name[LOG_COMPONENT_LEN];
    qr_log_level level;
} log_component;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static qr_log_level log_default = QR_LOG_INFO;
static qr_log_format log_format = QR_LOG_TEXT;
static log_component log_components[LOG_MAX_COMPONENTS];
static size_t log_ncomponents;
static FILE *log_stream;
static FILE *log_file; /* log.file, opened by qr_log_open_file; never closed */
static char *log_file_path;

static const char *const level_names[] = {"trace", "debug", "info", "warn", "error", "off"};

const char *qr_log_level_name(qr_log_level level)
{
    if ((int)level < 0 || level > QR_LOG_OFF)
        return "unknown";
    return level_names[level];
}

qr_status qr_log_level_parse(const char *s, qr_log_level *out, char *err)
{
    for (int i = 0; i <= QR_LOG_OFF; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (qr_log_level)i;
            return QR_OK;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = QR_LOG_WARN;
        return QR_OK;
    }
    return qr_fail(err, QR_EINVAL, "unknown log level '%s' (expected trace, debug, info, warn, error or off)",
                   s);
}

qr_status qr_log_configure(qr_log_level level, qr_log_format format, const char *components, char *err)
{
    log_component parsed[LOG_MAX_COMPONENTS];
    size_t n = 0;
    const char *p = components ? components : "";
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        if (!*p)
            break;
        const char *end = p + strcspn(p, ",");
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (!eq || eq == p)
            return qr_fail(err, QR_EINVAL, "bad log component setting '%.*s' (expected component=level)",
                           (int)(end - p), p);
        size_t name_len = (size_t)(eq - p);
        if (name_len >= LOG_COMPONENT_LEN)
            return qr_fail(err, QR_EINVAL, "log component name too long: '%.*s'", (int)name_len, p);
        if (n == LOG_MAX_COMPONENTS)
            return qr_fail(err, QR_ELIMIT, "too many log components (at most %d)", LOG_MAX_COMPONENTS);
        char lvl[16];
        size_t lvl_len = (size_t)(end - eq - 1);
        if (lvl_len >= sizeof(lvl))
            return qr_fail(err, QR_EINVAL, "unknown log level '%.*s'", (int)lvl_len, eq + 1);
        memcpy(lvl, eq + 1, lvl_len);
        lvl[lvl_len] = '\0';
        memcpy(parsed[n].name, p, name_len);
        parsed[n].name[name_len] = '\0';
        qr_status st = qr_log_level_parse(lvl, &parsed[n].level, err);
        if (st)
            return st;
        n++;
        p = end;
    }
    pthread_mutex_lock(&log_lock);
    log_default = level;
    log_format = format;
    memcpy(log_components, parsed, n * sizeof(parsed[0]));
    log_ncomponents = n;
    pthread_mutex_unlock(&log_lock);
    return QR_OK;
}

void qr_log_set_stream(void *file_stream)
{
    pthread_mutex_lock(&log_lock);
    log_stream = file_stream;
    pthread_mutex_unlock(&log_lock);
}

qr_status qr_reopen_append(int fd, const char *path, char *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return qr_fail(err, QR_EIO, "cannot reopen '%s': %s", path, strerror(errno));
    /* a new file gets the old one's mode; an existing one (not rotated, or made by logrotate's
     * `create`) keeps its own */
    int nfd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 07777);
    if (nfd >= 0) {
        /* past the umask; no log line here: qr_log_reopen holds the log's lock (the file is
         * ours, so this only fails on a read-only or odd file system, where open would have) */
        int chmod_rc = fchmod(nfd, st.st_mode & 07777);
        (void)chmod_rc;
    } else if (errno == EEXIST) {
        nfd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    }
    if (nfd < 0)
        return qr_fail(err, QR_EIO, "cannot reopen '%s': %s", path, strerror(errno));
    qr_status rc = QR_OK;
    if (dup2(nfd, fd) < 0)
        rc = qr_fail(err, QR_EIO, "cannot reopen '%s': %s", path, strerror(errno));
    close(nfd);
    return rc;
}

qr_status qr_log_open_file(const char *path, char *err)
{
    qr_status rc = QR_OK;
    pthread_mutex_lock(&log_lock);
    if (log_file) {
        if (strcmp(log_file_path, path) != 0)
            rc = qr_fail(err, QR_EINVAL, "log.file: already writing to '%s'", log_file_path);
        goto out;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "a");
    char *copy = strdup(path);
    if (!f || !copy) {
        rc = qr_fail(err, QR_EIO, "log.file: cannot open '%s': %s", path, strerror(errno));
        if (f)
            fclose(f);
        else if (fd >= 0)
            close(fd);
        free(copy);
        goto out;
    }
    log_file = f;
    log_file_path = copy;
    log_stream = f;
out:
    pthread_mutex_unlock(&log_lock);
    return rc;
}

qr_status qr_log_reopen(char *err)
{
    qr_status rc = QR_OK;
    pthread_mutex_lock(&log_lock);
    if (log_file) {
        fflush(log_file);
        rc = qr_reopen_append(fileno(log_file), log_file_path, err);
    }
    pthread_mutex_unlock(&log_lock);
    return rc;
}

/* Caller holds log_lock. */
static qr_log_level level_for(const char *component)
{
    for (size_t i = 0; i < log_ncomponents; i++)
        if (component && strcmp(log_components[i].name, component) == 0)
            return log_components[i].level;
    return log_default;
}

bool qr_log_enabled(const char *component, qr_log_level level)
{
    pthread_mutex_lock(&log_lock);
    bool on = level != QR_LOG_OFF && level >= level_for(component);
    pthread_mutex_unlock(&log_lock);
    return on;
}

/* Words after which a value is a secret. Matched case-insensitively at a word start. */
static const char *const secret_words[] = {
    "password", "passwd",  "pwd",           "secret", "token",      "api_key",
    "apikey",   "api-key", "authorization", "bearer", "credential", "bind_password",
};

static bool is_word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

/* If a secret word starts at s[i] (as a word), returns its length, else 0. */
static size_t secret_word_at(const char *s, size_t i)
{
    if (i > 0 && (isalnum((unsigned char)s[i - 1]) || s[i - 1] == '_'))
        return 0;
    for (size_t w = 0; w < sizeof(secret_words) / sizeof(secret_words[0]); w++) {
        size_t len = strlen(secret_words[w]);
        if (strncasecmp(s + i, secret_words[w], len) == 0) {
            /* "tokens", "password_file" and the like count too: masking too much is safe */
            size_t j = i + len;
            while (is_word_char(s[j]))
                j++;
            return j - i;
        }
    }
    return 0;
}

void qr_log_scrub(char *s)
{
    size_t i = 0;
    while (s[i]) {
        size_t wlen = secret_word_at(s, i);
        if (!wlen) {
            i++;
            continue;
        }
        size_t j = i + wlen;
        /* separators: '=', ':', '":"', spaces, quotes; "Bearer xyz" has only a space */
        size_t k = j;
        while (s[k] == ' ' || s[k] == '"' || s[k] == '\'' || s[k] == '=' || s[k] == ':')
            k++;
        bool has_sep = k > j;
        if (!has_sep || !s[k]) {
            i = j;
            continue;
        }
        /* "Authorization: Bearer abc": the value after Bearer is masked by the bearer rule. */
        if (strncasecmp(s + k, "bearer", 6) == 0 && !is_word_char(s[k + 6])) {
            i = k;
            continue;
        }
        size_t v = k;
        while (s[v] && s[v] != ' ' && s[v] != '"' && s[v] != '\'' && s[v] != ',' && s[v] != '&' &&
               s[v] != ';' && s[v] != '}' && s[v] != '\n')
            v++;
        if (v > k) {
            /* values shorter than the mask keep their length: the line never grows */
            size_t mlen = v - k < 3 ? v - k : 3;
            memmove(s + k + mlen, s + v, strlen(s + v) + 1);
            memset(s + k, '*', mlen);
            i = k + mlen;
        } else {
            i = k;
        }
    }
}

void qr_logv(qr_log_level level, const char *component, const char *fmt, va_list ap)
{
    if (!qr_log_enabled(component, level))
        return;
    char msg[LOG_LINE_MAX];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    qr_log_scrub(msg);
    char ts[40];
    qr_wall_iso8601(ts, sizeof(ts));

    qr_buf line;
    /* room for the message escaped at its worst (a control character takes six bytes), so that
     * only running out of memory can fail the line */
    qr_buf_init(&line, LOG_LINE_MAX * 6 + 512);
    pthread_mutex_lock(&log_lock);
    qr_log_format format = log_format;
    FILE *out = log_stream ? log_stream : stderr;
    pthread_mutex_unlock(&log_lock);
    if (format == QR_LOG_JSON) {
        qr_buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":", ts, qr_log_level_name(level));
        qr_json_escape(&line, component ? component : "quarry", strlen(component ? component : "quarry"));
        qr_buf_puts(&line, ",\"msg\":");
        qr_json_escape(&line, msg, strlen(msg));
        qr_buf_puts(&line, "}\n");
    } else {
        for (char *c = msg; *c; c++)
            if (*c == '\n' || *c == '\r')
                *c = ' '; /* one message, one line: no forged log lines */
        qr_buf_printf(&line, "%s %-5s [%s] %s\n", ts, qr_log_level_name(level),
                      component ? component : "quarry", msg);
    }
    pthread_mutex_lock(&log_lock);
    if (!qr_buf_failed(&line))
        fwrite(qr_buf_str(&line), 1, qr_buf_len(&line), out);
    else if (format == QR_LOG_JSON) /* never half a record; this one needs no memory */
        fprintf(out,
                "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"log\",\"msg\":\"a message was lost: %s\"}\n",
                ts, qr_log_level_name(level), qr_status_name(qr_buf_failed(&line)));
    else
        fprintf(out, "%s %-5s [log] a message was lost: %s\n", ts, qr_log_level_name(level),
                qr_status_name(qr_buf_failed(&line)));
    fflush(out);
    pthread_mutex_unlock(&log_lock);
    qr_buf_release(&line);
}

void qr_log(qr_log_level level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qr_logv(level, component, fmt, ap);
    va_end(ap);
}
