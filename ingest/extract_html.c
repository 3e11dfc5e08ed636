/*
 * HTML through libxml2's HTML parser (error-tolerant, no network). The tree is walked without
 * recursion, so nesting depth cannot exhaust the stack. Script, style, navigation (nav and
 * role="navigation"), hidden elements and embedded objects are dropped; <title> becomes the
 * title (the first h1 when there is none); h1-h6 open sections; block elements end paragraphs,
 * list items and table rows end lines; <pre> keeps its line breaks.
 *
 * Encoding: a charset declared in the first 1024 bytes (<meta charset>, http-equiv, or the XML
 * declaration) other than UTF-8 is converted by libxml2; otherwise the document is UTF-8 and
 * invalid bytes are repaired or rejected per ingest.invalid_utf8 before parsing, as for text.
 */
#define _GNU_SOURCE /* memmem, strndup */
#include <libxml/HTMLparser.h>
#include <libxml/encoding.h>
#include <libxml/parser.h>
#include <libxml/xmlerror.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest/ingest_int.h"

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void xml_init_once(void)
{
    xmlInitParser();
}

void ingest_xml_init(void)
{
    pthread_once(&xml_once, xml_init_once);
}

static bool name_in(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(name, *list) == 0)
            return true;
    return false;
}

static const char *const dropped_elements[] = {"script", "style",  "noscript", "template", "nav",    "svg",
                                               "math",   "iframe", "object",   "embed",    "canvas", "select",
                                               "button", "audio",  "video",    NULL};
static const char *const block_elements[] = {
    "address", "article", "aside", "blockquote", "body",       "caption", "center", "details", "dialog",
    "dir",     "div",     "dl",    "fieldset",   "figcaption", "figure",  "footer", "form",    "header",
    "hgroup",  "hr",      "main",  "menu",       "ol",         "p",       "pre",    "section", "summary",
    "table",   "tbody",   "tfoot", "thead",      "ul",         "legend",  NULL};
static const char *const line_elements[] = {"li", "tr", "dt", "dd", "option", NULL};

/* True when the element's attributes hide it or mark it as navigation. */
static bool hidden_element(xmlNode *n)
{
    for (xmlAttr *a = n->properties; a; a = a->next) {
        const char *an = (const char *)a->name;
        if (strcasecmp(an, "hidden") == 0)
            return true;
        if (strcasecmp(an, "role") != 0 && strcasecmp(an, "aria-hidden") != 0)
            continue;
        xmlChar *v = xmlNodeGetContent((xmlNode *)a);
        bool hide = v && (strcasecmp((const char *)v, "navigation") == 0 ||
                          (strcasecmp(an, "aria-hidden") == 0 && strcasecmp((const char *)v, "true") == 0));
        xmlFree(v);
        if (hide)
            return true;
    }
    return false;
}

typedef struct {
    doc_builder *b;
    int pre_depth;
    char *first_h1;
    char *err;
} html_walk;

static int heading_level(const char *name)
{
    if (name[0] == 'h' && name[1] >= '1' && name[1] <= '6' && name[2] == '\0')
        return name[1] - '0';
    return 0;
}

/* Handles entering n. Sets *descend when its children are to be visited. */
static qr_status enter(html_walk *w, xmlNode *n, bool *descend)
{
    *descend = false;
    if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) {
        if (!n->content)
            return QR_OK;
        return builder_inline(w->b, (const char *)n->content, strlen((const char *)n->content),
                              w->pre_depth ? 0 : NORM_FLOW, w->err);
    }
    if (n->type != XML_ELEMENT_NODE || !n->name)
        return QR_OK;
    const char *name = (const char *)n->name;
    if (name_in(name, dropped_elements) || hidden_element(n))
        return QR_OK;
    qr_status st = QR_OK;
    int level = heading_level(name);
    if (strcmp(name, "title") == 0 || level) {
        xmlChar *text = xmlNodeGetContent(n);
        if (text) {
            size_t tn = strlen((const char *)text);
            if (level) {
                st = builder_heading_add(w->b, level, (const char *)text, tn, w->err);
                if (!st && level == 1 && !w->first_h1) {
                    w->first_h1 = strdup((const char *)text);
                    if (!w->first_h1)
                        st = qr_fail(w->err, QR_ENOMEM, "out of memory");
                }
            } else {
                st = builder_title(w->b, (const char *)text, tn, w->err);
            }
            xmlFree(text);
        }
        return st;
    }
    if (strcmp(name, "br") == 0) {
        builder_break(w->b, 1);
        return QR_OK;
    }
    if (name_in(name, block_elements))
        builder_break(w->b, 2);
    else if (name_in(name, line_elements))
        builder_break(w->b, 1);
    else if (strcmp(name, "td") == 0 || strcmp(name, "th") == 0)
        st = builder_inline(w->b, " ", 1, NORM_FLOW, w->err);
    if (strcmp(name, "pre") == 0)
        w->pre_depth++;
    *descend = true;
    return st;
}

static void leave(html_walk *w, xmlNode *n)
{
    if (n->type != XML_ELEMENT_NODE || !n->name)
        return;
    const char *name = (const char *)n->name;
    if (strcmp(name, "pre") == 0 && w->pre_depth > 0)
        w->pre_depth--;
    if (name_in(name, block_elements))
        builder_break(w->b, 2);
    else if (name_in(name, line_elements))
        builder_break(w->b, 1);
    else if (strcmp(name, "td") == 0 || strcmp(name, "th") == 0)
        builder_inline(w->b, " ", 1, NORM_FLOW, NULL);
}

/* Visits the tree in document order without recursion. */
static qr_status walk(html_walk *w, xmlNode *root)
{
    xmlNode *n = root;
    while (n) {
        bool descend;
        qr_status st = enter(w, n, &descend);
        if (st)
            return st;
        if (descend && n->children) {
            n = n->children;
            continue;
        }
        if (descend)
            leave(w, n);
        while (n != root && !n->next) {
            n = n->parent;
            leave(w, n);
        }
        if (n == root)
            break;
        n = n->next;
    }
    return QR_OK;
}

/* Finds a charset declared near the start of the document; writes it into out (lower case). */
static bool declared_charset(const char *p, size_t n, char *out, size_t outlen)
{
    if (n > 1024)
        n = 1024;
    static const char key[] = "charset";
    for (size_t i = 0; i + sizeof(key) < n; i++) {
        if (strncasecmp(p + i, key, sizeof(key) - 1) != 0)
            continue;
        size_t j = i + sizeof(key) - 1;
        while (j < n && (p[j] == ' ' || p[j] == '\t'))
            j++;
        if (j >= n || p[j] != '=')
            continue;
        j++;
        while (j < n && (p[j] == ' ' || p[j] == '"' || p[j] == '\''))
            j++;
        size_t k = 0;
        while (j < n && k + 1 < outlen &&
               ((p[j] >= 'a' && p[j] <= 'z') || (p[j] >= 'A' && p[j] <= 'Z') ||
                (p[j] >= '0' && p[j] <= '9') || p[j] == '-' || p[j] == '_' || p[j] == ':' || p[j] == '.'))
            out[k++] = (char)(p[j] >= 'A' && p[j] <= 'Z' ? p[j] + 32 : p[j]), j++;
        out[k] = '\0';
        if (k)
            return true;
    }
    /* <?xml version="1.0" encoding="..."?> */
    if (n > 5 && strncmp(p, "<?xml", 5) == 0) {
        const char *e = memmem(p, n, "encoding=", 9);
        const char *end = memmem(p, n, "?>", 2);
        if (e && end && e < end) {
            e += 9;
            if (*e == '"' || *e == '\'')
                e++;
            size_t k = 0;
            while (e < end && k + 1 < outlen && *e != '"' && *e != '\'')
                out[k++] = (char)(*e >= 'A' && *e <= 'Z' ? *e + 32 : *e), e++;
            out[k] = '\0';
            return k > 0;
        }
    }
    return false;
}

static void silent_error(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}

qr_status extract_html(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b, char *err)
{
    qr_buf fixed;
    qr_buf_init(&fixed, lim->max_document_bytes);
    htmlDocPtr doc = NULL;
    html_walk w = {.b = b, .err = err};
    qr_status st = QR_OK;
    ingest_xml_init();
    xmlSetGenericErrorFunc(NULL, silent_error);

    char charset[64];
    const char *encoding = "UTF-8";
    if (declared_charset(bytes, len, charset, sizeof(charset)) && strcmp(charset, "utf-8") != 0 &&
        strcmp(charset, "utf8") != 0 && strcmp(charset, "us-ascii") != 0) {
        xmlCharEncodingHandlerPtr h = xmlFindCharEncodingHandler(charset);
        if (!h) {
            st = qr_fail(err, QR_EINVAL, "unsupported HTML charset '%s'", charset);
            goto out;
        }
        xmlCharEncCloseFunc(h);
        encoding = charset;
    } else {
        st = norm_utf8_repair(bytes, len, lim->reject_invalid_utf8, &fixed, &bytes, &len, err);
        if (st)
            goto out;
    }
    if (len > (size_t)INT32_MAX) {
        st = qr_fail(err, QR_ELIMIT, "the HTML document is too large for the parser");
        goto out;
    }
    doc = htmlReadMemory(bytes, (int)len, NULL, encoding,
                         HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_NONET |
                             HTML_PARSE_COMPACT);
    if (!doc) {
        /* An empty or whitespace-only document has no tree: that is no text, not an error. */
        bool blank = true;
        for (size_t i = 0; i < len && blank; i++)
            blank = bytes[i] == ' ' || bytes[i] == '\n' || bytes[i] == '\r' || bytes[i] == '\t';
        if (!blank)
            st = qr_fail(err, QR_EINVAL, "cannot parse the HTML document");
        goto out;
    }
    xmlNode *root = xmlDocGetRootElement(doc);
    if (root)
        st = walk(&w, root);
    if (!st && w.first_h1)
        st = builder_title(b, w.first_h1, strlen(w.first_h1), err);
out:
    free(w.first_h1);
    if (doc)
        xmlFreeDoc(doc);
    qr_buf_release(&fixed);
    return st;
}
