/*
 * The web console: ui/'s files, compiled into the binary (cmake/EmbedUi.cmake), served at GET /
 * (index.html) and GET /ui/<path> without credentials (the page signs in through the API). Only
 * the table's exact paths are served, so no path reaches the filesystem. Each file has a strong
 * ETag (SHA-256 of its bytes; If-None-Match answers 304) and, when it shrinks by it, a gzip copy
 * made at start for clients that accept gzip. Every answer carries a strict Content-Security-Policy:
 * scripts, styles and connections from this origin only (plus the OpenID providers' origins, for
 * sign-in with PKCE), no inline script or style, no plugins, and frame-ancestors from
 * ui.frame_ancestors (the Office add-in host frames the chat page). GET /ui/config.json tells the
 * page what it cannot know: the OpenID provider and client to sign in with, and the version.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "api/api_int.h"
#include "api/ui_assets.h"

typedef struct {
    const api_ui_asset *a;
    char etag[20];     /* "\"" + 16 hex digits + "\"" */
    unsigned char *gz; /* NULL when gzip would not make it smaller */
    size_t gz_len;
} ui_file;

struct api_ui {
    ui_file *files;
    size_t nfiles;
    char *csp;
    char *config_json;
    char config_etag[20];
};

/* A gzip copy of p[0..n) (free it), NULL when it would not be smaller. */
static unsigned char *gzip_copy(const unsigned char *p, size_t n, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    /* 15 + 16: a gzip wrapper, which is what Content-Encoding: gzip means */
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&z, (uLong)n);
    unsigned char *out = malloc(cap);
    z.next_in = (unsigned char *)p;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = out ? deflate(&z, Z_FINISH) : Z_MEM_ERROR;
    *out_len = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END || *out_len >= n) {
        free(out);
        return NULL;
    }
    return out;
}

static void etag_of(const void *p, size_t n, char out[20])
{
    char hex[65];
    ingest_content_hash(p, n, hex); /* SHA-256 */
    snprintf(out, 20, "\"%.16s\"", hex);
}

/* "https://login.example.com" of "https://login.example.com/tenant/v2.0": the origin a page
 * fetches the provider's discovery document and token endpoint from. */
static void origin_of(const char *url, qr_buf *out)
{
    const char *host = strstr(url, "://");
    if (!host)
        return;
    host += 3;
    size_t n = (size_t)(host - url) + strcspn(host, "/?#");
    /* nothing that could end the directive or start another */
    for (size_t i = 0; i < n; i++)
        if (url[i] == ';' || url[i] == ',' || url[i] == ' ' || url[i] == '\'' || (unsigned char)url[i] < 0x21)
            return;
    qr_buf_putc(out, ' ');
    qr_buf_append(out, url, n);
}

qr_status api_ui_new(const qr_config *cfg, api_ui **out, char *err)
{
    *out = NULL;
    const qr_settings *s = qr_config_settings(cfg);
    if (!s->ui_enabled)
        return QR_OK;
    for (const char *p = s->ui_frame_ancestors; *p; p++)
        if (*p == ';' || *p == ',' || (unsigned char)*p < 0x20)
            return qr_fail(err, QR_EINVAL,
                           "ui.frame_ancestors: a space-separated list of sources ('self', 'none', "
                           "https://host); no ';' or ','");
    api_ui *ui = calloc(1, sizeof(*ui));
    if (!ui || !(ui->files = calloc(api_ui_nassets ? api_ui_nassets : 1, sizeof(ui_file)))) {
        free(ui);
        return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < api_ui_nassets; i++) {
        ui_file *f = &ui->files[ui->nfiles++];
        f->a = &api_ui_assets[i];
        etag_of(f->a->data, f->a->len, f->etag);
        if (strncmp(f->a->content_type, "image/png", 9) != 0 && strncmp(f->a->content_type, "font/", 5) != 0)
            f->gz = gzip_copy(f->a->data, f->a->len, &f->gz_len);
    }
    qr_buf csp;
    qr_buf_init(&csp, 1 << 16);
    qr_buf_puts(&csp, "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                      "connect-src 'self'");
    /* the OpenID providers, for discovery and the token endpoint of sign-in with PKCE */
    char *issuers = strdup(s->oidc_issuer);
    for (char *save = NULL, *tok = issuers ? strtok_r(issuers, ", ", &save) : NULL; tok;
         tok = strtok_r(NULL, ", ", &save))
        origin_of(tok, &csp);
    free(issuers);
    qr_buf_printf(&csp, "; frame-ancestors %s; base-uri 'none'; form-action 'self'; object-src 'none'",
                  *s->ui_frame_ancestors ? s->ui_frame_ancestors : "'none'");
    json_t *conf = json_pack("{s:s}", "version", QUARRY_VERSION);
    if (*s->oidc_issuer && *s->ui_oidc_client_id) {
        char first[1024];
        snprintf(first, sizeof(first), "%.*s", (int)strcspn(s->oidc_issuer, ","), s->oidc_issuer);
        json_object_set_new(conf, "oidc",
                            json_pack("{s:s,s:s,s:s}", "issuer", first, "client_id", s->ui_oidc_client_id,
                                      "scope", s->ui_oidc_scope));
    } else {
        json_object_set_new(conf, "oidc", json_null());
    }
    ui->config_json = json_dumps(conf, JSON_COMPACT);
    json_decref(conf);
    ui->csp = qr_buf_failed(&csp) ? NULL : strdup(qr_buf_str(&csp));
    qr_buf_release(&csp);
    if (!ui->csp || !ui->config_json) {
        api_ui_free(ui);
        return qr_fail(err, QR_ENOMEM, "out of memory");
    }
    etag_of(ui->config_json, strlen(ui->config_json), ui->config_etag);
    *out = ui;
    return QR_OK;
}

void api_ui_free(api_ui *ui)
{
    if (!ui)
        return;
    for (size_t i = 0; i < ui->nfiles; i++)
        free(ui->files[i].gz);
    free(ui->files);
    free(ui->csp);
    free(ui->config_json);
    free(ui);
}

bool api_ui_path(const api_ui *ui, const char *method, const char *url)
{
    return ui && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) &&
           (strcmp(url, "/") == 0 || strncmp(url, "/ui/", 4) == 0);
}

/* True when the client's Accept-Encoding takes gzip (listed, and not with q=0). */
static bool accepts_gzip(const char *ae)
{
    for (const char *p = ae; p && *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ",");
        size_t name = strcspn(p, " \t;,");
        if ((name == 4 && strncasecmp(p, "gzip", 4) == 0) || (name == 1 && *p == '*')) {
            const char *q = memchr(p, ';', n);
            if (!q)
                return true;
            const char *qv = strstr(q, "q=");
            if (!qv || qv >= p + n)
                return true;
            return strtod(qv + 2, NULL) > 0;
        }
        p += n;
    }
    return false;
}

/* True when If-None-Match lists etag (or is "*"). */
static bool etag_matches(const char *inm, const char *etag)
{
    if (!inm)
        return false;
    if (strcmp(inm, "*") == 0)
        return true;
    size_t n = strlen(etag);
    for (const char *p = strstr(inm, etag); p; p = strstr(p + 1, etag))
        if ((p == inm || p[-1] == ' ' || p[-1] == ',' || p[-1] == '/') &&
            (p[n] == '\0' || p[n] == ',' || p[n] == ' '))
            return true;
    return false;
}

static void security_headers(api_req *r, const api_ui *ui)
{
    api_reply_header(r, "Content-Security-Policy", ui->csp);
    api_reply_header(r, "X-Content-Type-Options", "nosniff");
    api_reply_header(r, "Referrer-Policy", "no-referrer");
    api_reply_header(r, "Cache-Control",
                     "no-cache"); /* revalidated by ETag: no stale page after an upgrade */
}

void api_ui_serve(api_req *r, const char *url)
{
    const api_ui *ui = r->srv->ui;
    const char *rel = strcmp(url, "/") == 0 ? "index.html" : url + 4;
    const char *inm = api_header(r, "If-None-Match");
    if (strcmp(rel, "config.json") == 0) {
        if (etag_matches(inm, ui->config_etag))
            api_reply_raw(r, 304, NULL, "", 0);
        else
            api_reply_static(r, 200, "application/json", ui->config_json, strlen(ui->config_json));
        security_headers(r, ui);
        api_reply_header(r, "ETag", ui->config_etag);
        return;
    }
    const ui_file *f = NULL;
    for (size_t i = 0; i < ui->nfiles && !f; i++)
        if (strcmp(ui->files[i].a->path, rel) == 0)
            f = &ui->files[i];
    if (!f) {
        api_reply_error(r, 404, "not_found", "no console file '%.200s'", url);
        return;
    }
    bool gz = f->gz && accepts_gzip(api_header(r, "Accept-Encoding"));
    if (etag_matches(inm, f->etag)) {
        api_reply_raw(r, 304, NULL, "", 0);
    } else if (gz) {
        api_reply_static(r, 200, f->a->content_type, (const char *)f->gz, f->gz_len);
        api_reply_header(r, "Content-Encoding", "gzip");
    } else {
        api_reply_static(r, 200, f->a->content_type, (const char *)f->a->data, f->a->len);
    }
    security_headers(r, ui);
    api_reply_header(r, "ETag", f->etag);
    if (f->gz)
        api_reply_header(r, "Vary", "Accept-Encoding");
}
