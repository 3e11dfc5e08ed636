/*
 * The audit log: one JSON line per search, answer and administrative change, in its own file
 * (server.audit_log, default <data.dir>/audit.log, mode 0600), written whole with one write(2) on
 * an O_APPEND descriptor so that lines from concurrent requests never interleave. A line holds
 * the time, the request id, the user, the route, a keyed hash of the query (never the query: the
 * log must not become a copy of what people asked; keyed, so that common queries cannot be
 * recovered by hashing guesses without the data directory's secret, see auth_keyed_hash) and the
 * document ids returned or cited.
 */
#define _GNU_SOURCE /* asprintf, memmem, strptime, timegm, explicit_bzero */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api_int.h"

struct api_audit {
    int fd;
    char *path;
};

qr_status api_audit_open(const qr_config *cfg, api_audit **out, char *err)
{
    *out = NULL;
    const char *setting = qr_config_settings(cfg)->server_audit_log;
    if (strcmp(setting, "off") == 0)
        return QR_OK;
    char *path = NULL;
    if (*setting) {
        path = strdup(setting);
    } else {
        const char *dir = qr_config_settings(cfg)->data_dir;
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return qr_fail(err, QR_EIO, "cannot create data directory '%s': %s", dir, strerror(errno));
        if (asprintf(&path, "%s/audit.log", dir) < 0)
            path = NULL;
    }
    if (!path)
        return qr_fail(err, QR_ENOMEM, "out of memory opening the audit log");
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        qr_status st = qr_fail(err, QR_EIO, "server.audit_log: cannot open '%s': %s", path, strerror(errno));
        free(path);
        return st;
    }
    api_audit *a = calloc(1, sizeof(*a));
    if (!a) {
        close(fd);
        free(path);
        return qr_fail(err, QR_ENOMEM, "out of memory opening the audit log");
    }
    a->fd = fd;
    a->path = path;
    *out = a;
    return QR_OK;
}

void api_audit_close(api_audit *a)
{
    if (!a)
        return;
    close(a->fd);
    free(a->path);
    free(a);
}

qr_status api_audit_reopen(api_audit *a, char *err)
{
    return a ? qr_reopen_append(a->fd, a->path, err) : QR_OK;
}

/* The fields before doc_ids, all bounded in size (the user is at most 300 bytes, the end user 256). */
static void audit_head(qr_buf *line, const api_req *r, const char *query_hmac, const char *action,
                       const char *when)
{
    qr_buf_printf(line, "{\"time\":\"%s\",\"request_id\":\"%s\",\"user\":", when, r->request_id);
    qr_json_escape(line, r->user, strlen(r->user));
    qr_buf_printf(line, ",\"via\":\"%s\",\"auth\":\"%s\"", r->by_key ? "api_key" : "user",
                  r->auth_scheme ? r->auth_scheme : "-");
    /* a key acting for a user: both identities, the user above and the key here */
    if (*r->key_id)
        qr_buf_printf(line, ",\"key_id\":\"%s\"", r->key_id);
    /* the end user a client names in a chat request's `user`: its word, next to the signed-in one */
    if (*r->end_user) {
        qr_buf_puts(line, ",\"end_user\":");
        qr_json_escape(line, r->end_user, strlen(r->end_user));
    }
    qr_buf_printf(line, ",\"client\":\"%s\",\"route\":\"%s %s\",\"action\":\"%s\",\"query_hmac\":", r->client,
                  r->route ? r->route->method : r->method, r->route ? r->route->pattern : "-", action);
    if (query_hmac)
        qr_buf_printf(line, "\"%.64s\"", query_hmac);
    else
        qr_buf_puts(line, "null");
}

/* Room kept for what closes a cut record: `],"truncated":true}` and the newline. */
#define AUDIT_TAIL_RESERVE 32

qr_status api_audit_format(qr_buf *line, const api_req *r, const char *query_hmac, const char *const *doc_ids,
                           size_t ndoc_ids, const char *action, const char *when)
{
    qr_buf_reset(line);
    audit_head(line, r, query_hmac, action, when);
    qr_buf_puts(line, ",\"doc_ids\":[");
    /* Each id is escaped on its own first, so that one that would not fit is left out whole
     * instead of failing the line. */
    qr_buf one;
    qr_buf_init(&one, qr_buf_cap(line));
    bool truncated = false, first = true;
    for (size_t i = 0; i < ndoc_ids && !truncated; i++) {
        /* the same document may be returned through several chunks: list it once */
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(doc_ids[j], doc_ids[i]) == 0;
        if (seen)
            continue;
        qr_buf_reset(&one);
        qr_json_escape(&one, doc_ids[i], strlen(doc_ids[i]));
        size_t need = qr_buf_len(&one) + 1 + AUDIT_TAIL_RESERVE;
        if (qr_buf_failed(&one) || qr_buf_len(line) > qr_buf_cap(line) ||
            need > qr_buf_cap(line) - qr_buf_len(line)) {
            truncated = true;
            break;
        }
        if (!first)
            qr_buf_putc(line, ',');
        qr_buf_append(line, qr_buf_str(&one), qr_buf_len(&one));
        first = false;
    }
    qr_buf_release(&one);
    qr_buf_putc(line, ']');
    if (truncated)
        qr_buf_puts(line, ",\"truncated\":true");
    qr_buf_puts(line, "}\n");
    if (!qr_buf_failed(line))
        return QR_OK;
    /* Out of memory partway: a record without its doc ids is still one. */
    qr_buf_reset(line);
    audit_head(line, r, query_hmac, action, when);
    qr_buf_puts(line, ",\"doc_ids\":null,\"truncated\":true}\n");
    return qr_buf_failed(line);
}

void api_audit_record(api_audit *a, const api_req *r, const char *query, const char *const *doc_ids,
                      size_t ndoc_ids, const char *action)
{
    if (!a)
        return;
    char when[40];
    qr_wall_iso8601(when, sizeof(when));
    qr_buf line;
    qr_buf_init(&line, API_AUDIT_LINE_MAX);
    char hmac[65], err[QR_ERR_LEN];
    bool hashed = false;
    if (query && !(hashed = auth_keyed_hash(r->srv->auth, AUTH_PURPOSE_AUDIT_QUERY, query, strlen(query),
                                            hmac, err) == QR_OK))
        qr_log(QR_LOG_ERROR, "audit", "cannot hash the query of request %s (written as null): %s",
               r->request_id, err);
    if (api_audit_format(&line, r, hashed ? hmac : NULL, doc_ids, ndoc_ids, action, when) == QR_OK) {
        ssize_t w = write(a->fd, qr_buf_str(&line), qr_buf_len(&line));
        if (w != (ssize_t)qr_buf_len(&line))
            qr_log(QR_LOG_ERROR, "audit", "cannot write the audit log '%s': %s", a->path,
                   w < 0 ? strerror(errno) : "short write");
    } else {
        qr_log(QR_LOG_ERROR, "audit", "cannot format the audit line for request %s (%s); not written",
               r->request_id, qr_status_name(qr_buf_failed(&line)));
    }
    qr_buf_release(&line);
}

void api_audit_refused(api_audit *a, const api_req *r, const char *scheme, int status, const char *reason,
                       const auth_oidc_info *oidc)
{
    if (!a)
        return;
    char when[40];
    qr_wall_iso8601(when, sizeof(when));
    qr_buf line;
    qr_buf_init(&line, API_AUDIT_LINE_MAX);
    qr_buf_printf(&line, "{\"time\":\"%s\",\"request_id\":\"%s\",\"user\":null,\"auth\":\"%s\",", when,
                  r->request_id, scheme);
    qr_buf_printf(&line, "\"client\":\"%s\",\"route\":\"%s %s\",\"action\":\"auth_refused\",\"status\":%d,",
                  r->client, r->route ? r->route->method : r->method, r->route ? r->route->pattern : "-",
                  status);
    qr_buf_puts(&line, "\"reason\":");
    qr_json_escape(&line, reason, strlen(reason));
    if (oidc && *oidc->issuer) {
        qr_buf_puts(&line, ",\"issuer\":");
        qr_json_escape(&line, oidc->issuer, strlen(oidc->issuer));
        if (*oidc->subject) { /* set only once the signature verified */
            qr_buf_puts(&line, ",\"subject\":");
            qr_json_escape(&line, oidc->subject, strlen(oidc->subject));
        }
    }
    qr_buf_puts(&line, "}\n");
    if (!qr_buf_failed(&line)) {
        ssize_t w = write(a->fd, qr_buf_str(&line), qr_buf_len(&line));
        if (w != (ssize_t)qr_buf_len(&line))
            qr_log(QR_LOG_ERROR, "audit", "cannot write the audit log '%s': %s", a->path,
                   w < 0 ? strerror(errno) : "short write");
    }
    qr_buf_release(&line);
}

qr_status api_audit_tail(api_audit *a, size_t n, json_t **out, char *err)
{
    *out = NULL;
    char *buf = NULL;
    json_t *list = NULL;
    qr_status st = QR_OK;
    int fd = open(a->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qr_fail(err, QR_EIO, "cannot read the audit log '%s': %s", a->path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = qr_fail(err, QR_EIO, "cannot read the audit log '%s': %s", a->path, strerror(errno));
        goto out;
    }
    off_t from = sb.st_size > (off_t)API_AUDIT_TAIL_MAX ? sb.st_size - (off_t)API_AUDIT_TAIL_MAX : 0;
    size_t want = (size_t)(sb.st_size - from), got = 0;
    if (!(buf = malloc(want + 1)) || !(list = json_array())) {
        st = qr_fail(err, QR_ENOMEM, "out of memory reading the audit log");
        goto out;
    }
    /* the file only grows (O_APPEND): bytes written after the fstat are left for the next read */
    while (got < want) {
        ssize_t k = pread(fd, buf + got, want - got, from + (off_t)got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            st = qr_fail(err, QR_EIO, "cannot read the audit log '%s': %s", a->path, strerror(errno));
            goto out;
        }
        if (k == 0)
            break;
        got += (size_t)k;
    }
    /* Complete lines only: the first one is cut when the read starts inside the file, the last
     * one may still be being written by another process. */
    size_t start = 0;
    if (from > 0) {
        char *nl = memchr(buf, '\n', got);
        start = nl ? (size_t)(nl - buf) + 1 : got;
    }
    size_t end = got;
    while (end > start && buf[end - 1] != '\n')
        end--;
    while (end > start && json_array_size(list) < n) {
        size_t line_end = end - 1; /* the newline */
        size_t line_start = line_end;
        while (line_start > start && buf[line_start - 1] != '\n')
            line_start--;
        json_t *rec =
            line_end > line_start ? json_loadb(buf + line_start, line_end - line_start, 0, NULL) : NULL;
        if (json_is_object(rec))
            json_array_append_new(list, rec);
        else
            json_decref(rec);
        end = line_start;
    }
out:
    close(fd);
    free(buf);
    if (st)
        json_decref(list);
    else
        *out = list;
    return st;
}
