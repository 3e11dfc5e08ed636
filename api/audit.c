/*
 * The audit log: one JSON line per search, answer and administrative change, in its own file
 * (server.audit_log, default <data.dir>/audit.log, mode 0600), written whole with one write(2) on
 * an O_APPEND descriptor so that lines from concurrent requests never interleave. A line holds
 * the time, the request id, the user, the route, a SHA-256 of the query (never the query: the
 * log must not become a copy of what people asked) and the document ids returned or cited.
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
    const char *setting = qr_config_str(cfg, "server.audit_log");
    if (strcmp(setting, "off") == 0)
        return QR_OK;
    char *path = NULL;
    if (*setting) {
        path = strdup(setting);
    } else {
        const char *dir = qr_config_str(cfg, "data.dir");
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

void api_audit_record(api_audit *a, const api_req *r, const char *query, const char *const *doc_ids,
                      size_t ndoc_ids, const char *action)
{
    if (!a)
        return;
    qr_buf line;
    qr_buf_init(&line, 4 << 20);
    char when[40], hash[65] = "";
    qr_wall_iso8601(when, sizeof(when));
    if (query)
        api_sha256_hex(query, strlen(query), hash);
    qr_buf_printf(&line, "{\"time\":\"%s\",\"request_id\":\"%s\",\"user\":", when, r->request_id);
    qr_json_escape(&line, r->user, strlen(r->user));
    qr_buf_printf(&line,
                  ",\"via\":\"%s\",\"client\":\"%s\",\"route\":\"%s %s\",\"action\":\"%s\",\"query_sha256\":",
                  r->by_key ? "api_key" : "user", r->client, r->route ? r->route->method : r->method,
                  r->route ? r->route->pattern : "-", action);
    if (query)
        qr_buf_printf(&line, "\"%s\"", hash);
    else
        qr_buf_puts(&line, "null");
    qr_buf_puts(&line, ",\"doc_ids\":[");
    for (size_t i = 0; i < ndoc_ids; i++) {
        /* the same document may be returned through several chunks: list it once */
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(doc_ids[j], doc_ids[i]) == 0;
        if (seen)
            continue;
        if (qr_buf_len(&line) > 1 && qr_buf_str(&line)[qr_buf_len(&line) - 1] != '[')
            qr_buf_putc(&line, ',');
        qr_json_escape(&line, doc_ids[i], strlen(doc_ids[i]));
    }
    qr_status st = qr_buf_puts(&line, "]}\n");
    if (!st) {
        ssize_t w = write(a->fd, qr_buf_str(&line), qr_buf_len(&line));
        if (w != (ssize_t)qr_buf_len(&line))
            qr_log(QR_LOG_ERROR, "audit", "cannot write the audit log '%s': %s", a->path,
                   w < 0 ? strerror(errno) : "short write");
    } else {
        qr_log(QR_LOG_ERROR, "audit", "audit line too long for request %s; not written", r->request_id);
    }
    qr_buf_release(&line);
}
