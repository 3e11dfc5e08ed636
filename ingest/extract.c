/*
 * Extraction's front door: limits from the configuration, type detection (declared type, then
 * extension, then magic bytes), the dispatch to one extractor (in this process for the formats
 * whose parsers are quarry's own, in the sandbox for those that go through libxml2, libzip or
 * pdftotext), and the document builder every extractor writes into. The builder normalises
 * paragraphs and headings as they arrive and records where each heading starts, so sections and
 * their heading paths are offsets into the final normalised text and never need remapping.
 */
#define _GNU_SOURCE /* memmem, strndup */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest/ingest_int.h"

#define MIB            (1024u * 1024u)
#define PATH_MAX_BYTES 4096 /* longest heading path kept; deeper text is cut */
#define TITLE_MAX      1024 /* a title or one heading in a path longer than this is cut */

void ingest_limits_default(ingest_limits *out)
{
    out->max_document_bytes = 64 * (size_t)MIB;
    out->timeout_ms = 30000;
    out->memory_bytes = 512 * (size_t)MIB;
    out->zip_max_bytes = 256 * (size_t)MIB;
    out->zip_max_ratio = 100.0;
    out->reject_invalid_utf8 = false;
}

void ingest_limits_from_config(const qr_config *cfg, ingest_limits *out)
{
    const qr_settings *set = qr_config_settings(cfg);
    out->max_document_bytes = (size_t)set->ingest_max_document_bytes;
    out->timeout_ms = (unsigned)set->ingest_extract_timeout_ms;
    out->memory_bytes = (size_t)set->ingest_extract_memory_mb * MIB;
    out->zip_max_bytes = (size_t)set->ingest_zip_max_bytes;
    out->zip_max_ratio = set->ingest_zip_max_ratio;
    out->reject_invalid_utf8 = strcmp(set->ingest_invalid_utf8, "reject") == 0;
}

void ingest_text_release(ingest_text *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nsections; i++)
        free(t->sections[i].heading_path);
    free(t->sections);
    free(t->text);
    free(t->title);
    free(t->content_type);
    memset(t, 0, sizeof(*t));
}

/* SHA-256 fetched once: EVP_sha256() in EVP_Digest looks the implementation up in the provider
 * on every call (half of the hashing's time, three hashes per ingested document). */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void ingest_content_hash(const void *bytes, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[32];
    unsigned int mdlen = 0;
    pthread_once(&sha256_once, sha256_fetch);
    const EVP_MD *type = sha256_md ? sha256_md : EVP_sha256();
    if (!EVP_Digest(bytes ? bytes : "", len, md, &mdlen, type, NULL) || mdlen != 32) {
        /* Only an OpenSSL without SHA-256 gets here; a hash that matches nothing is safe. */
        memset(out, '0', 64);
        out[64] = '\0';
        return;
    }
    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

/* ---- the document builder ------------------------------------------------------------------ */

void builder_init(doc_builder *b, size_t text_cap, bool reject_invalid)
{
    memset(b, 0, sizeof(*b));
    qr_buf_init(&b->text, text_cap);
    qr_buf_init(&b->scratch, text_cap);
    norm_init(&b->norm, reject_invalid);
}

void builder_release(doc_builder *b)
{
    qr_buf_release(&b->text);
    qr_buf_release(&b->scratch);
    for (size_t i = 0; i < b->nheadings; i++)
        free(b->headings[i].path);
    free(b->headings);
    for (int i = 0; i < 7; i++)
        free(b->stack[i]);
    free(b->title);
    memset(b, 0, sizeof(*b));
}

qr_status builder_inline(doc_builder *b, const char *raw, size_t len, unsigned flags, char *err)
{
    return norm_feed(&b->norm, &b->text, raw, len, flags, err);
}

void builder_break(doc_builder *b, int breaks)
{
    norm_break(&b->norm, breaks);
}

qr_status builder_paragraph(doc_builder *b, const char *raw, size_t len, unsigned flags, char *err)
{
    norm_break(&b->norm, 2);
    qr_status st = norm_feed(&b->norm, &b->text, raw, len, flags, err);
    norm_break(&b->norm, 2);
    return st;
}

/* The length of s[0..n) cut to at most max bytes at a character boundary. */
static size_t cut_at(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* Normalises raw onto one line in b->scratch. */
static qr_status one_line(doc_builder *b, const char *raw, size_t len, char *err)
{
    norm_state s;
    norm_init(&s, b->norm.reject_invalid);
    qr_buf_reset(&b->scratch);
    return norm_feed(&s, &b->scratch, raw, len, NORM_FLOW, err);
}

qr_status builder_title(doc_builder *b, const char *raw, size_t len, char *err)
{
    if (b->title)
        return QR_OK;
    qr_status st = one_line(b, raw, len, err);
    if (st || qr_buf_len(&b->scratch) == 0)
        return st;
    b->title =
        strndup(qr_buf_str(&b->scratch), cut_at(qr_buf_str(&b->scratch), qr_buf_len(&b->scratch), TITLE_MAX));
    return b->title ? QR_OK : qr_fail(err, QR_ENOMEM, "out of memory");
}

qr_status builder_heading_add(doc_builder *b, int level, const char *raw, size_t len, char *err)
{
    if (level < 1)
        level = 1;
    if (level > 6)
        level = 6;
    qr_status st = one_line(b, raw, len, err);
    if (st || qr_buf_len(&b->scratch) == 0)
        return st;
    const char *heading = qr_buf_str(&b->scratch);

    /* The path: the nearest enclosing heading of each shallower level, then this one. */
    for (int l = level; l < 7; l++) {
        free(b->stack[l]);
        b->stack[l] = NULL;
    }
    b->stack[level] = strndup(heading, cut_at(heading, qr_buf_len(&b->scratch), TITLE_MAX / 4));
    if (!b->stack[level])
        return qr_fail(err, QR_ENOMEM, "out of memory");
    qr_buf path;
    qr_buf_init(&path, PATH_MAX_BYTES);
    for (int l = 1; l <= level; l++) {
        if (!b->stack[l])
            continue;
        if (qr_buf_len(&path) && qr_buf_append(&path, " > ", 3))
            break;
        if (qr_buf_puts(&path, b->stack[l]))
            break;
    }
    if (b->nheadings == b->heading_alloc) {
        size_t n = b->heading_alloc ? b->heading_alloc * 2 : 16;
        builder_heading *h = realloc(b->headings, n * sizeof(*h));
        if (!h) {
            qr_buf_release(&path);
            return qr_fail(err, QR_ENOMEM, "out of memory");
        }
        b->headings = h;
        b->heading_alloc = n;
    }
    char *p = qr_buf_detach(&path);
    if (!p)
        p = strdup("");
    if (!p)
        return qr_fail(err, QR_ENOMEM, "out of memory");

    norm_break(&b->norm, 2);
    st = norm_flush(&b->norm, &b->text);
    if (!st)
        st = qr_buf_append(&b->text, qr_buf_str(&b->scratch), qr_buf_len(&b->scratch));
    if (st) {
        free(p);
        return st == QR_ELIMIT ? qr_fail(err, st,
                                         "the text exceeds the limit of %zu bytes "
                                         "(ingest.max_document_bytes)",
                                         qr_buf_cap(&b->text))
                               : qr_fail(err, st, "out of memory");
    }
    b->norm.started = true;
    norm_break(&b->norm, 2);
    b->headings[b->nheadings].start = qr_buf_len(&b->text) - qr_buf_len(&b->scratch);
    b->headings[b->nheadings].level = level;
    b->headings[b->nheadings].path = p;
    b->nheadings++;
    return QR_OK;
}

qr_status builder_finish(doc_builder *b, ingest_text *out, char *err)
{
    memset(out, 0, sizeof(*out));
    size_t len = qr_buf_len(&b->text);
    size_t n = b->nheadings + 1;
    ingest_section *sec = calloc(n, sizeof(*sec));
    if (!sec)
        return qr_fail(err, QR_ENOMEM, "out of memory");
    size_t k = 0;
    if (len && (b->nheadings == 0 || b->headings[0].start > 0)) {
        sec[k].heading_path = strdup("");
        if (!sec[k].heading_path)
            goto nomem;
        sec[k].level = 0;
        sec[k].start = 0;
        sec[k].end = b->nheadings ? b->headings[0].start : len;
        k++;
    }
    for (size_t i = 0; i < b->nheadings; i++) {
        sec[k].heading_path = b->headings[i].path;
        b->headings[i].path = NULL;
        sec[k].level = b->headings[i].level;
        sec[k].start = b->headings[i].start;
        sec[k].end = i + 1 < b->nheadings ? b->headings[i + 1].start : len;
        k++;
    }
    out->text = qr_buf_detach(&b->text);
    if (!out->text)
        goto nomem;
    out->len = len;
    out->sections = sec;
    out->nsections = k;
    out->title = b->title;
    b->title = NULL;
    return QR_OK;
nomem:
    for (size_t i = 0; i < n; i++)
        free(sec[i].heading_path);
    free(sec);
    memset(out, 0, sizeof(*out));
    return qr_fail(err, QR_ENOMEM, "out of memory");
}

/* ---- type detection ------------------------------------------------------------------------ */

static const char *const TYPE_TXT = "text/plain";
static const char *const TYPE_MD = "text/markdown";
static const char *const TYPE_HTML = "text/html";
static const char *const TYPE_PDF = "application/pdf";
static const char *const TYPE_DOCX = INGEST_TYPE_DOCX;

static const struct {
    const char *name;
    const char *const *type;
} declared_types[] = {
    {"text/plain", &TYPE_TXT},      {"text/markdown", &TYPE_MD},           {"text/x-markdown", &TYPE_MD},
    {"text/html", &TYPE_HTML},      {"application/xhtml+xml", &TYPE_HTML}, {"application/pdf", &TYPE_PDF},
    {INGEST_TYPE_DOCX, &TYPE_DOCX},
};

static const struct {
    const char *ext;
    const char *const *type;
} extensions[] = {
    {"txt", &TYPE_TXT},     {"text", &TYPE_TXT},  {"md", &TYPE_MD},
    {"markdown", &TYPE_MD}, {"html", &TYPE_HTML}, {"htm", &TYPE_HTML},
    {"xhtml", &TYPE_HTML},  {"pdf", &TYPE_PDF},   {"docx", &TYPE_DOCX},
};

/* Extensions that say what a file is, so that guessing from its bytes would be wrong. */
static const char *const refused_extensions[] = {"doc", "xls", "xlsx", "ppt",  "pptx", "odt", "rtf",
                                                 "zip", "png", "jpg",  "jpeg", "gif",  "exe", "gz"};

static bool starts_with_ci(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && strncasecmp(s, prefix, k) == 0;
}

/* True when p[0..n) looks like an HTML document: after whitespace and a BOM, <!doctype html,
 * <html, or an HTML comment or <head>/<body> start. */
static bool looks_html(const char *p, size_t n)
{
    size_t i = 0;
    if (n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        i = 3;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    p += i;
    n -= i;
    return starts_with_ci(p, n, "<!doctype html") || starts_with_ci(p, n, "<html") ||
           starts_with_ci(p, n, "<head") || starts_with_ci(p, n, "<body");
}

/* True for a zip whose entry names include word/document.xml. The central directory is at the
 * end; the local header of the first entries is at the start, and a DOCX lists that name early,
 * but a search of the whole archive for the name is what libzip would find too. */
static bool looks_docx(const char *p, size_t n)
{
    if (n < 4 || memcmp(p, "PK\x03\x04", 4) != 0)
        return false;
    static const char name[] = "word/document.xml";
    return memmem(p, n, name, sizeof(name) - 1) != NULL;
}

qr_status ingest_detect_type(const void *bytes, size_t len, const char *declared_type, const char *filename,
                             const char **type, char *err)
{
    if (!type || (!bytes && len))
        return qr_fail(err, QR_EINVAL, "ingest_detect_type: NULL argument");
    *type = NULL;
    if (declared_type && *declared_type) {
        size_t n = strcspn(declared_type, ";");
        while (n && (declared_type[n - 1] == ' ' || declared_type[n - 1] == '\t'))
            n--;
        bool octet = n == 24 && strncasecmp(declared_type, "application/octet-stream", 24) == 0;
        if (!octet) {
            for (size_t i = 0; i < sizeof(declared_types) / sizeof(declared_types[0]); i++) {
                if (strlen(declared_types[i].name) == n &&
                    strncasecmp(declared_type, declared_types[i].name, n) == 0) {
                    *type = *declared_types[i].type;
                    return QR_OK;
                }
            }
            return qr_fail(err, QR_EINVAL,
                           "unsupported content type '%.*s' (supported: text/plain, text/markdown, "
                           "text/html, application/pdf, DOCX)",
                           (int)(n > 100 ? 100 : n), declared_type);
        }
    }
    if (filename && *filename) {
        const char *base = strrchr(filename, '/');
        base = base ? base + 1 : filename;
        const char *dot = strrchr(base, '.');
        if (dot && dot != base && dot[1]) {
            for (size_t i = 0; i < sizeof(extensions) / sizeof(extensions[0]); i++) {
                if (strcasecmp(dot + 1, extensions[i].ext) == 0) {
                    *type = *extensions[i].type;
                    return QR_OK;
                }
            }
            for (size_t i = 0; i < sizeof(refused_extensions) / sizeof(refused_extensions[0]); i++)
                if (strcasecmp(dot + 1, refused_extensions[i]) == 0)
                    return qr_fail(err, QR_EINVAL, "unsupported file type '.%s' of '%s'", dot + 1, base);
        }
    }
    const char *p = bytes;
    if (len >= 5 && memcmp(p, "%PDF-", 5) == 0) {
        *type = TYPE_PDF;
    } else if (looks_docx(p, len)) {
        *type = TYPE_DOCX;
    } else if (looks_html(p, len < 1024 ? len : 1024)) {
        *type = TYPE_HTML;
    } else {
        /* Text is judged on its first 4 KiB, cut back to a character boundary so that a
         * multibyte character split at the window's edge does not make a UTF-8 file unknown. */
        size_t w = len < 4096 ? len : 4096;
        for (int k = 0; k < 3 && w < len && w > 0 && ((unsigned char)p[w] & 0xC0) == 0x80; k++)
            w--;
        if (!memchr(p, '\0', w) && qr_utf8_valid(p, w))
            *type = TYPE_TXT;
    }
    if (!*type)
        return qr_fail(err, QR_EINVAL,
                       "cannot tell the type of '%s': no supported declared type or extension, "
                       "and the content is neither PDF, DOCX, HTML nor UTF-8 text",
                       filename && *filename ? filename : "(unnamed document)");
    return QR_OK;
}

/* ---- extraction ---------------------------------------------------------------------------- */

qr_status ingest_extract(const void *bytes, size_t len, const char *declared_type, const char *filename,
                         const ingest_limits *lim, ingest_text *out, char *err)
{
    if (!out)
        return qr_fail(err, QR_EINVAL, "ingest_extract: NULL output");
    memset(out, 0, sizeof(*out));
    if ((!bytes && len) || !lim)
        return qr_fail(err, QR_EINVAL, "ingest_extract: NULL argument");
    if (len > lim->max_document_bytes)
        return qr_fail(err, QR_ELIMIT,
                       "the document is %zu bytes, over the limit of %zu (ingest.max_document_bytes)", len,
                       lim->max_document_bytes);
    const char *type;
    qr_status st = ingest_detect_type(bytes, len, declared_type, filename, &type, err);
    if (st)
        return st;
    sandbox_fn sandboxed = NULL;
    if (type == TYPE_HTML)
        sandboxed = extract_html;
    else if (type == TYPE_PDF)
        sandboxed = extract_pdf;
    else if (type == TYPE_DOCX)
        sandboxed = extract_docx;
    if (sandboxed) {
        st = ingest_sandbox_run(sandboxed, bytes, len, lim, out, err);
    } else {
        doc_builder b;
        builder_init(&b, lim->max_document_bytes, lim->reject_invalid_utf8);
        st = type == TYPE_MD ? extract_markdown(bytes, len, lim, &b, err)
                             : extract_plain(bytes, len, lim, &b, err);
        if (!st)
            st = builder_finish(&b, out, err);
        builder_release(&b);
    }
    if (!st) {
        out->content_type = strdup(type);
        if (!out->content_type) {
            ingest_text_release(out);
            st = qr_fail(err, QR_ENOMEM, "out of memory");
        }
    }
    return st;
}
