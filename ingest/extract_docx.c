/*
 * DOCX: a zip (libzip, BSD licence) holding WordprocessingML, read with libxml2's streaming
 * reader (no tree, no entity substitution, no network). Before anything is decompressed the
 * archive's declared sizes are checked against ingest.zip_max_bytes and ingest.zip_max_ratio,
 * and while reading, no entry may yield more than it declared nor the total more than the
 * limit, so a zip bomb is refused before it costs memory (libzip also checks each entry's CRC).
 *
 * Headings come from paragraph styles: word/styles.xml maps each style id to its name
 * ("heading 1".."heading 6", whatever the id is in the document's language) or to an outline
 * level, following basedOn; a paragraph's own outline level wins. The title is docProps/core.xml's
 * dc:title, else the first paragraph in the "Title" style, else the first level-1 heading.
 * Text comes from w:t runs, tabs and breaks; deleted text (w:delText) and field codes are left out.
 */
#define _GNU_SOURCE
#include <libxml/xmlerror.h>
#include <libxml/xmlreader.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zip.h>

#include "ingest/ingest_int.h"

#define MIB          (1024u * 1024u)
#define RATIO_FLOOR  MIB /* archives smaller than this are not judged by their ratio */
#define W_NS         "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
#define W_NS_STRICT  "http://purl.oclc.org/ooxml/wordprocessingml/main"
#define DC_NS        "http://purl.org/dc/elements/1.1/"
#define STYLE_TITLE  (-1)
#define MAX_STYLES   100000
#define BASED_ON_MAX 16

typedef struct {
    char *id;
    char *based_on;
    int level; /* 1..9 heading, STYLE_TITLE, 0 body; -2 unresolved */
} docx_style;

typedef struct {
    zip_t *za;
    size_t budget; /* uncompressed bytes still allowed */
    docx_style *styles;
    size_t nstyles;
    doc_builder *b;
    char *err;
} docx;

static void silent_error(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}

static void silent_structured(void *ctx, xmlErrorPtr e)
{
    (void)ctx;
    (void)e;
}

/* Reads one entry into out within the declared size and the remaining budget. Missing entries
 * are QR_ENOTFOUND. */
static qr_status read_entry(docx *d, const char *name, qr_buf *out)
{
    zip_int64_t idx = zip_name_locate(d->za, name, 0);
    if (idx < 0)
        return QR_ENOTFOUND;
    zip_stat_t sb;
    if (zip_stat_index(d->za, (zip_uint64_t)idx, 0, &sb) != 0 || !(sb.valid & ZIP_STAT_SIZE))
        return qr_fail(d->err, QR_EINVAL, "the DOCX entry '%s' is unreadable", name);
    if (sb.size > d->budget)
        return qr_fail(d->err, QR_ELIMIT,
                       "the DOCX entry '%s' is %llu bytes uncompressed, over ingest.zip_max_bytes", name,
                       (unsigned long long)sb.size);
    zip_file_t *f = zip_fopen_index(d->za, (zip_uint64_t)idx, 0);
    if (!f)
        return qr_fail(d->err, QR_EINVAL, "cannot open the DOCX entry '%s': %s", name,
                       zip_error_strerror(zip_get_error(d->za)));
    qr_buf_init(out, (size_t)sb.size);
    qr_status st = QR_OK;
    char buf[65536];
    for (;;) {
        zip_int64_t n = zip_fread(f, buf, sizeof(buf));
        if (n == 0)
            break;
        if (n < 0) {
            st = qr_fail(d->err, QR_EINVAL, "cannot decompress the DOCX entry '%s': %s", name,
                         zip_error_strerror(zip_file_get_error(f)));
            break;
        }
        if (qr_buf_append(out, buf, (size_t)n)) {
            st = qr_fail(d->err, QR_ELIMIT, "the DOCX entry '%s' holds more than it declares", name);
            break;
        }
    }
    zip_fclose(f);
    if (!st)
        d->budget -= qr_buf_len(out);
    else
        qr_buf_release(out);
    return st;
}

/* Checks the declared sizes of every entry: the total and the ratio to the archive's size. */
static qr_status check_bomb(docx *d, size_t archive_len, const ingest_limits *lim)
{
    zip_int64_t n = zip_get_num_entries(d->za, 0);
    uint64_t total = 0;
    for (zip_int64_t i = 0; i < n; i++) {
        zip_stat_t sb;
        if (zip_stat_index(d->za, (zip_uint64_t)i, 0, &sb) != 0)
            return qr_fail(d->err, QR_EINVAL, "the DOCX archive is damaged (entry %lld)", (long long)i);
        if (!(sb.valid & ZIP_STAT_SIZE))
            continue;
        if (sb.size > UINT64_MAX - total)
            total = UINT64_MAX;
        else
            total += sb.size;
        if ((sb.valid & ZIP_STAT_COMP_SIZE) && sb.size > RATIO_FLOOR &&
            (double)sb.size > lim->zip_max_ratio * (double)(sb.comp_size ? sb.comp_size : 1))
            return qr_fail(
                d->err, QR_ELIMIT,
                "the DOCX entry '%s' expands %.0f times (%llu bytes), over ingest.zip_max_ratio %g: "
                "refused as a zip bomb",
                sb.name ? sb.name : "?", (double)sb.size / (double)(sb.comp_size ? sb.comp_size : 1),
                (unsigned long long)sb.size, lim->zip_max_ratio);
    }
    if (total > lim->zip_max_bytes)
        return qr_fail(
            d->err, QR_ELIMIT,
            "the DOCX archive expands to %llu bytes, over ingest.zip_max_bytes %zu: refused as a zip bomb",
            (unsigned long long)total, lim->zip_max_bytes);
    if (total > RATIO_FLOOR && (double)total > lim->zip_max_ratio * (double)(archive_len ? archive_len : 1))
        return qr_fail(
            d->err, QR_ELIMIT,
            "the DOCX archive expands %.0f times (%llu bytes from %zu), over ingest.zip_max_ratio %g: "
            "refused as a zip bomb",
            (double)total / (double)archive_len, (unsigned long long)total, archive_len, lim->zip_max_ratio);
    d->budget = lim->zip_max_bytes;
    return QR_OK;
}

static xmlTextReaderPtr open_reader(const qr_buf *xml, const char *name)
{
    if (qr_buf_len(xml) > (size_t)INT32_MAX)
        return NULL;
    xmlTextReaderPtr r = xmlReaderForMemory(qr_buf_str(xml), (int)qr_buf_len(xml), name, NULL,
                                            XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (r)
        xmlTextReaderSetStructuredErrorHandler(r, silent_structured, NULL);
    return r;
}

static bool is_w(xmlTextReaderPtr r, const char *local)
{
    const char *ns = (const char *)xmlTextReaderConstNamespaceUri(r);
    const char *ln = (const char *)xmlTextReaderConstLocalName(r);
    return ns && ln && strcmp(ln, local) == 0 && (strcmp(ns, W_NS) == 0 || strcmp(ns, W_NS_STRICT) == 0);
}

/* The w:val (or w:styleId) attribute; xmlFree it. */
static char *w_attr(xmlTextReaderPtr r, const char *name)
{
    const char *ns = (const char *)xmlTextReaderConstNamespaceUri(r);
    return (char *)xmlTextReaderGetAttributeNs(r, (const xmlChar *)name, (const xmlChar *)ns);
}

/* "heading 3" -> 3, "Title" -> STYLE_TITLE, else 0. */
static int level_from_name(const char *name)
{
    if (strncasecmp(name, "heading", 7) == 0) {
        const char *p = name + 7;
        while (*p == ' ')
            p++;
        if (*p >= '1' && *p <= '9' && p[1] == '\0')
            return *p - '0';
    }
    if (strcasecmp(name, "title") == 0)
        return STYLE_TITLE;
    return 0;
}

static int outline_level(const char *val)
{
    if (!val || val[0] < '0' || val[0] > '8' || val[1])
        return 0; /* 9 is body text */
    return val[0] - '0' + 1;
}

static qr_status parse_styles(docx *d)
{
    qr_buf xml;
    qr_status st = read_entry(d, "word/styles.xml", &xml);
    if (st == QR_ENOTFOUND)
        return QR_OK;
    if (st)
        return st;
    xmlTextReaderPtr r = open_reader(&xml, "styles.xml");
    size_t alloc = 0;
    docx_style *cur = NULL;
    int ret;
    while (r && (ret = xmlTextReaderRead(r)) == 1) {
        if (xmlTextReaderNodeType(r) != XML_READER_TYPE_ELEMENT)
            continue;
        if (is_w(r, "style")) {
            char *id = w_attr(r, "styleId");
            cur = NULL;
            if (!id)
                continue;
            if (d->nstyles == alloc) {
                size_t n = alloc ? alloc * 2 : 64;
                docx_style *s = n <= MAX_STYLES ? realloc(d->styles, n * sizeof(*s)) : NULL;
                if (!s) {
                    xmlFree(id);
                    st = qr_fail(d->err, n <= MAX_STYLES ? QR_ENOMEM : QR_ELIMIT, "too many DOCX styles");
                    break;
                }
                d->styles = s;
                alloc = n;
            }
            cur = &d->styles[d->nstyles++];
            cur->id = id;
            cur->based_on = NULL;
            cur->level = -2;
        } else if (cur && is_w(r, "name")) {
            char *v = w_attr(r, "val");
            if (v && cur->level == -2)
                cur->level = level_from_name(v) ? level_from_name(v) : -2;
            xmlFree(v);
        } else if (cur && is_w(r, "basedOn")) {
            char *v = w_attr(r, "val");
            if (v && !cur->based_on)
                cur->based_on = v;
            else
                xmlFree(v);
        } else if (cur && is_w(r, "outlineLvl")) {
            char *v = w_attr(r, "val");
            if (cur->level == -2 || cur->level == 0)
                cur->level = outline_level(v) ? outline_level(v) : cur->level;
            xmlFree(v);
        }
    }
    /* A broken styles part costs headings, not the document. */
    if (r)
        xmlFreeTextReader(r);
    qr_buf_release(&xml);
    return st;
}

/* The heading level of style id (following basedOn), STYLE_TITLE, or 0. */
static int style_level(const docx *d, const char *id)
{
    for (int hop = 0; id && hop < BASED_ON_MAX; hop++) {
        const docx_style *s = NULL;
        for (size_t i = 0; i < d->nstyles; i++) {
            if (strcmp(d->styles[i].id, id) == 0) {
                s = &d->styles[i];
                break;
            }
        }
        if (!s)
            break;
        if (s->level != -2)
            return s->level;
        id = s->based_on;
    }
    /* Documents without styles.xml still name their built-in styles Heading1..Heading9. */
    if (!d->nstyles && id && strncasecmp(id, "heading", 7) == 0 && id[7] >= '1' && id[7] <= '9' && !id[8])
        return id[7] - '0';
    return 0;
}

static qr_status parse_title(docx *d)
{
    qr_buf xml;
    qr_status st = read_entry(d, "docProps/core.xml", &xml);
    if (st == QR_ENOTFOUND)
        return QR_OK;
    if (st)
        return st;
    xmlTextReaderPtr r = open_reader(&xml, "core.xml");
    bool in_title = false;
    while (r && !st && xmlTextReaderRead(r) == 1) {
        int type = xmlTextReaderNodeType(r);
        const char *ns = (const char *)xmlTextReaderConstNamespaceUri(r);
        const char *ln = (const char *)xmlTextReaderConstLocalName(r);
        bool title = ns && ln && strcmp(ns, DC_NS) == 0 && strcmp(ln, "title") == 0;
        if (type == XML_READER_TYPE_ELEMENT && title && !xmlTextReaderIsEmptyElement(r))
            in_title = true;
        else if (type == XML_READER_TYPE_END_ELEMENT && title)
            in_title = false;
        else if (in_title && (type == XML_READER_TYPE_TEXT || type == XML_READER_TYPE_CDATA)) {
            const char *v = (const char *)xmlTextReaderConstValue(r);
            if (v)
                st = builder_title(d->b, v, strlen(v), d->err);
        }
    }
    if (r)
        xmlFreeTextReader(r);
    qr_buf_release(&xml);
    return st;
}

typedef struct {
    qr_buf text;
    int level; /* heading level, STYLE_TITLE or 0 */
    int outline;
} docx_para;

static qr_status flush_para(docx *d, docx_para *p, char **first_h1)
{
    qr_status st = QR_OK;
    const char *s = qr_buf_str(&p->text);
    size_t n = qr_buf_len(&p->text);
    int level = p->outline ? p->outline : p->level;
    if (n) {
        if (level == STYLE_TITLE) {
            st = builder_title(d->b, s, n, d->err);
            if (!st)
                st = builder_paragraph(d->b, s, n, NORM_FLOW, d->err);
        } else if (level > 0) {
            if (level == 1 && !*first_h1 && !(*first_h1 = strndup(s, n)))
                st = qr_fail(d->err, QR_ENOMEM, "out of memory");
            if (!st)
                st = builder_heading_add(d->b, level, s, n, d->err);
        } else {
            /* Within a paragraph, w:br is a line break; other line ends in the XML are not text. */
            st = builder_paragraph(d->b, s, n, 0, d->err);
        }
    }
    qr_buf_reset(&p->text);
    p->level = p->outline = 0;
    return st;
}

static qr_status para_append(docx *d, docx_para *p, const char *s, size_t n)
{
    if (qr_buf_append(&p->text, s, n))
        return qr_fail(d->err, QR_ELIMIT,
                       "the text exceeds the limit of %zu bytes (ingest.max_document_bytes)",
                       qr_buf_cap(&p->text));
    return QR_OK;
}

static qr_status parse_document(docx *d, const ingest_limits *lim)
{
    qr_buf xml;
    qr_status st = read_entry(d, "word/document.xml", &xml);
    if (st == QR_ENOTFOUND)
        return qr_fail(d->err, QR_EINVAL, "not a DOCX document: the archive has no word/document.xml");
    if (st)
        return st;
    xmlTextReaderPtr r = open_reader(&xml, "document.xml");
    if (!r) {
        qr_buf_release(&xml);
        return qr_fail(d->err, QR_EINVAL, "cannot read word/document.xml");
    }
    docx_para p = {.level = 0};
    qr_buf_init(&p.text, lim->max_document_bytes);
    char *first_h1 = NULL;
    bool in_t = false, in_ppr = false;
    int ret;
    while (!st && (ret = xmlTextReaderRead(r)) == 1) {
        int type = xmlTextReaderNodeType(r);
        if (type == XML_READER_TYPE_ELEMENT) {
            bool empty = xmlTextReaderIsEmptyElement(r);
            if (is_w(r, "p")) {
                st = flush_para(d, &p, &first_h1); /* a paragraph nested in a text box ends the outer part */
            } else if (is_w(r, "pPr")) {
                in_ppr = !empty;
            } else if (in_ppr && is_w(r, "pStyle")) {
                char *v = w_attr(r, "val");
                if (v)
                    p.level = style_level(d, v);
                xmlFree(v);
            } else if (in_ppr && is_w(r, "outlineLvl")) {
                char *v = w_attr(r, "val");
                p.outline = outline_level(v);
                xmlFree(v);
            } else if (is_w(r, "t")) {
                in_t = !empty;
            } else if (is_w(r, "tab")) {
                if (!in_ppr)
                    st = para_append(d, &p, "\t", 1);
            } else if (is_w(r, "br") || is_w(r, "cr")) {
                st = para_append(d, &p, "\n", 1);
            } else if (is_w(r, "noBreakHyphen")) {
                st = para_append(d, &p, "-", 1);
            }
        } else if (type == XML_READER_TYPE_END_ELEMENT) {
            if (is_w(r, "p"))
                st = flush_para(d, &p, &first_h1);
            else if (is_w(r, "pPr"))
                in_ppr = false;
            else if (is_w(r, "t"))
                in_t = false;
        } else if (in_t && (type == XML_READER_TYPE_TEXT || type == XML_READER_TYPE_SIGNIFICANT_WHITESPACE ||
                            type == XML_READER_TYPE_WHITESPACE || type == XML_READER_TYPE_CDATA)) {
            const char *v = (const char *)xmlTextReaderConstValue(r);
            if (v) {
                /* Line ends inside w:t are XML whitespace, not breaks. */
                size_t n = strlen(v);
                for (size_t i = 0; i < n && !st; i++)
                    st = para_append(d, &p, v[i] == '\n' || v[i] == '\r' ? " " : v + i, 1);
            }
        }
    }
    if (!st && ret < 0)
        st = qr_fail(d->err, QR_EINVAL, "word/document.xml is not well-formed XML");
    if (!st)
        st = flush_para(d, &p, &first_h1);
    if (!st && first_h1)
        st = builder_title(d->b, first_h1, strlen(first_h1), d->err);
    free(first_h1);
    qr_buf_release(&p.text);
    xmlFreeTextReader(r);
    qr_buf_release(&xml);
    return st;
}

qr_status extract_docx(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b, char *err)
{
    docx d = {.b = b, .err = err};
    zip_error_t ze;
    zip_error_init(&ze);
    qr_status st = QR_OK;
    ingest_xml_init();
    xmlSetGenericErrorFunc(NULL, silent_error);
    zip_source_t *src = zip_source_buffer_create(bytes, len, 0, &ze);
    if (!src) {
        st = qr_fail(err, QR_ENOMEM, "cannot read the DOCX archive: %s", zip_error_strerror(&ze));
        goto out;
    }
    d.za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
    if (!d.za) {
        zip_source_free(src);
        st = qr_fail(err, QR_EINVAL, "not a valid DOCX (zip) archive: %s", zip_error_strerror(&ze));
        goto out;
    }
    st = check_bomb(&d, len, lim);
    if (!st)
        st = parse_styles(&d);
    if (!st)
        st = parse_title(&d);
    if (!st)
        st = parse_document(&d, lim);
out:
    if (d.za)
        zip_discard(d.za);
    for (size_t i = 0; i < d.nstyles; i++) {
        xmlFree(d.styles[i].id);
        xmlFree(d.styles[i].based_on);
    }
    free(d.styles);
    zip_error_fini(&ze);
    return st;
}
