/*
 * ingest's unit tests: normalisation, type detection, every extractor on sample files the tests
 * build themselves (text, markdown, HTML, a hand-written PDF, DOCX archives written with libzip),
 * the limits (oversized documents, zip bombs by size and ratio, extractors that spin, eat memory
 * or crash in the sandbox), chunker properties on random texts, token counting, hashing, the
 * Porter stemmer, the local embedder, and the JSON-lines scanner against jansson.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zip.h>

#include "ingest/ingest_int.h"
#include "tests/harness.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static ingest_limits test_limits(void)
{
    ingest_limits lim;
    ingest_limits_default(&lim);
    lim.timeout_ms = 10000;
    return lim;
}

static char *normalize_str(const char *in, size_t len, bool reject, qr_status *st, char *err)
{
    qr_buf out;
    qr_buf_init(&out, 1 << 20);
    *st = ingest_normalize(in, len, reject, &out, err);
    char *s = strdup(qr_buf_str(&out));
    qr_buf_release(&out);
    return s;
}

/* The section covering offset off, or NULL. */
static const ingest_section *section_at(const ingest_text *t, size_t off)
{
    for (size_t i = 0; i < t->nsections; i++)
        if (off >= t->sections[i].start && off < t->sections[i].end)
            return &t->sections[i];
    return NULL;
}

/* Sections are in order, contiguous and cover the whole text. */
static bool sections_cover(const ingest_text *t)
{
    size_t pos = 0;
    for (size_t i = 0; i < t->nsections; i++) {
        if (t->sections[i].start != pos || t->sections[i].end < pos)
            return false;
        pos = t->sections[i].end;
    }
    return pos == t->len;
}

static const ingest_section *find_section(const ingest_text *t, const char *path)
{
    for (size_t i = 0; i < t->nsections; i++)
        if (strcmp(t->sections[i].heading_path, path) == 0)
            return &t->sections[i];
    return NULL;
}

typedef struct {
    const char *name;
    const char *data;
    size_t len; /* 0: strlen */
} zip_item;

/* Writes a zip archive of items with libzip (through a temporary file) into *out. */
static bool make_zip(const zip_item *items, size_t n, char **out, size_t *outlen)
{
    char path[] = "/tmp/quarry-test-zip-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return false;
    close(fd);
    int zerr = 0;
    zip_t *za = zip_open(path, ZIP_TRUNCATE, &zerr);
    bool ok = za != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        size_t len = items[i].len ? items[i].len : strlen(items[i].data);
        zip_source_t *src = zip_source_buffer(za, items[i].data, len, 0);
        ok = src && zip_file_add(za, items[i].name, src, ZIP_FL_OVERWRITE) >= 0;
        if (!ok && src)
            zip_source_free(src);
    }
    if (za && (!ok || zip_close(za) != 0)) {
        zip_discard(za);
        ok = false;
    }
    char err[QR_ERR_LEN];
    ok = ok && qr_read_file(path, 1u << 30, out, outlen, err) == QR_OK;
    unlink(path);
    return ok;
}

#define W_NS "http://schemas.openxmlformats.org/wordprocessingml/2006/main"

static const char content_types[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Types "
    "xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\"><Default Extension=\"xml\" "
    "ContentType=\"application/xml\"/></Types>";

/* A paragraph in style `style` (NULL: none) with text. */
static void docx_para(qr_buf *b, const char *style, const char *text)
{
    qr_buf_puts(b, "<w:p>");
    if (style)
        qr_buf_printf(b, "<w:pPr><w:pStyle w:val=\"%s\"/></w:pPr>", style);
    qr_buf_printf(b, "<w:r><w:t xml:space=\"preserve\">%s</w:t></w:r></w:p>", text);
}

/* A minimal PDF with one page, two text lines and a title, with a correct xref table. */
static char *make_pdf(const char *title, const char *line1, const char *line2, size_t *len)
{
    qr_buf content, pdf;
    qr_buf_init(&content, 1 << 20);
    qr_buf_init(&pdf, 1 << 20);
    qr_buf_printf(&content, "BT /F1 24 Tf 72 700 Td (%s) Tj 0 -40 Td /F1 12 Tf (%s) Tj ET", line1, line2);
    char objs[6][512];
    snprintf(objs[0], sizeof(objs[0]), "<< /Type /Catalog /Pages 2 0 R >>");
    snprintf(objs[1], sizeof(objs[1]), "<< /Type /Pages /Kids [3 0 R] /Count 1 >>");
    snprintf(
        objs[2], sizeof(objs[2]),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 "
        "0 R >> >> >>");
    snprintf(objs[3], sizeof(objs[3]), "<< /Length %zu >>\nstream\n%s\nendstream", qr_buf_len(&content),
             qr_buf_str(&content));
    snprintf(objs[4], sizeof(objs[4]), "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>");
    snprintf(objs[5], sizeof(objs[5]), "<< /Title (%s) >>", title);
    size_t offs[6];
    qr_buf_puts(&pdf, "%PDF-1.4\n");
    for (int i = 0; i < 6; i++) {
        offs[i] = qr_buf_len(&pdf);
        qr_buf_printf(&pdf, "%d 0 obj\n%s\nendobj\n", i + 1, objs[i]);
    }
    size_t xref = qr_buf_len(&pdf);
    qr_buf_puts(&pdf, "xref\n0 7\n0000000000 65535 f \n");
    for (int i = 0; i < 6; i++)
        qr_buf_printf(&pdf, "%010zu 00000 n \n", offs[i]);
    qr_buf_printf(&pdf, "trailer\n<< /Size 7 /Root 1 0 R /Info 6 0 R >>\nstartxref\n%zu\n%%%%EOF\n", xref);
    qr_buf_release(&content);
    *len = qr_buf_len(&pdf);
    return qr_buf_detach(&pdf);
}

/* ---- normalisation ------------------------------------------------------------------------- */

TEST(normalize_repairs_invalid_utf8)
{
    char err[QR_ERR_LEN];
    qr_status st;
    /* a lone continuation byte, a truncated 3-byte sequence, an overlong, a surrogate */
    const char in[] = "a\x80 b\xE2\x82 c\xC0\xAF d\xED\xA0\x80 e";
    char *out = normalize_str(in, sizeof(in) - 1, false, &st, err);
    CHECK_OK(st, err);
    CHECK_STR(
        out, "a\xEF\xBF\xBD b\xEF\xBF\xBD c\xEF\xBF\xBD\xEF\xBF\xBD d\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD e");
    CHECK(qr_utf8_valid(out, strlen(out)));
    free(out);
    /* valid multi-byte text passes unchanged */
    const char valid[] = "caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x99\x82";
    out = normalize_str(valid, sizeof(valid) - 1, false, &st, err);
    CHECK_OK(st, err);
    CHECK_STR(out, "caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x99\x82");
    free(out);
}

TEST(normalize_rejects_invalid_utf8)
{
    char err[QR_ERR_LEN] = "";
    qr_status st;
    char *out = normalize_str("ok text \xFF more", 14, true, &st, err);
    CHECK_INT(st, QR_EINVAL);
    CHECK_MSG(strstr(err, "byte 8") != NULL, "error does not name the offset: %s", err);
    free(out);
    /* and through extraction, per ingest.invalid_utf8 */
    ingest_limits lim = test_limits();
    lim.reject_invalid_utf8 = true;
    ingest_text t;
    CHECK_INT(ingest_extract("bad \xC3\x28 byte", 12, "text/plain", NULL, &lim, &t, err), QR_EINVAL);
    CHECK(t.text == NULL);
    lim.reject_invalid_utf8 = false;
    CHECK_OK(ingest_extract("bad \xC3\x28 byte", 12, "text/plain", NULL, &lim, &t, err), err);
    CHECK_STR(t.text, "bad \xEF\xBF\xBD( byte");
    ingest_text_release(&t);
}

TEST(normalize_removes_control_characters)
{
    char err[QR_ERR_LEN];
    qr_status st;
    const char in[] = "\xEF\xBB\xBF"
                      "a\x00"
                      "b\x07"
                      "c\x1B[0m\x7F"
                      "d\xC2\x80"
                      "e\xC2\x9F"
                      "f\xEF\xBF\xBEg";
    char *out = normalize_str(in, sizeof(in) - 1, false, &st, err);
    CHECK_OK(st, err);
    CHECK_STR(out, "abc[0mdefg");
    free(out);
}

TEST(normalize_whitespace)
{
    char err[QR_ERR_LEN];
    qr_status st;
    const char in[] =
        " \t lead  and \t  spaces  \r\n\r\n\r\n\n  next\xC2\xA0word\xE2\x80\x83x \r line\xE2\x80\xA8"
        "sep\fpage \n\n";
    char *out = normalize_str(in, sizeof(in) - 1, false, &st, err);
    CHECK_OK(st, err);
    CHECK_STR(out, "lead and spaces\n\nnext word x\nline\nsep\n\npage");
    free(out);
    out = normalize_str(" \n\t ", 4, false, &st, err);
    CHECK_OK(st, err);
    CHECK_STR(out, "");
    free(out);
}

TEST(normalize_random_properties)
{
    char err[QR_ERR_LEN];
    unsigned seed = 12345;
    static const char *const pieces[] = {"a",
                                         "Z",
                                         "9",
                                         " ",
                                         "\t",
                                         "\n",
                                         "\r\n",
                                         "\r",
                                         "\x00",
                                         "\x1F",
                                         "\x7F",
                                         "\xC3\xA9",
                                         "\xE2\x80\xA8",
                                         "\xE2\x80\xA9",
                                         "\xC2\xA0",
                                         "\xC2\x85",
                                         "\xEF\xBB\xBF",
                                         "\xFF",
                                         "\xE2\x82",
                                         "\xF0\x9F\x99\x82",
                                         "\f",
                                         ".",
                                         "#"};
    for (int iter = 0; iter < 500; iter++) {
        char in[512];
        size_t len = 0;
        int n = rand_r(&seed) % 80;
        for (int i = 0; i < n; i++) {
            const char *p = pieces[rand_r(&seed) % (sizeof(pieces) / sizeof(pieces[0]))];
            size_t k = p[0] ? strlen(p) : 1;
            memcpy(in + len, p, k);
            len += k;
        }
        qr_status st;
        char *once = normalize_str(in, len, false, &st, err);
        CHECK_OK(st, err);
        size_t ol = strlen(once);
        CHECK(qr_utf8_valid(once, ol));
        for (size_t i = 0; i < ol; i++) {
            unsigned char c = (unsigned char)once[i];
            CHECK_MSG(c >= 0x20 || c == '\n', "control byte 0x%02x left at %zu", c, i);
            CHECK(c != 0x7F);
        }
        CHECK(strstr(once, "  ") == NULL && strstr(once, "\n\n\n") == NULL && strstr(once, " \n") == NULL &&
              strstr(once, "\n ") == NULL && strstr(once, "\xEF\xBB\xBF") == NULL);
        CHECK(ol == 0 || (once[0] != ' ' && once[0] != '\n' && once[ol - 1] != ' ' && once[ol - 1] != '\n'));
        char *twice = normalize_str(once, ol, true, &st, err);
        CHECK_OK(st, err);
        CHECK_STR(twice, once); /* idempotent */
        free(once);
        free(twice);
    }
}

/* ---- detection ----------------------------------------------------------------------------- */

TEST(detect_declared_then_extension_then_magic)
{
    char err[QR_ERR_LEN];
    const char *type;
    const char html[] = "<!DOCTYPE html><html><body>x</body></html>";
    /* the declared type wins over the extension and the bytes */
    CHECK_OK(ingest_detect_type(html, strlen(html), "text/plain; charset=utf-8", "page.html", &type, err),
             err);
    CHECK_STR(type, "text/plain");
    /* then the extension wins over the bytes */
    CHECK_OK(ingest_detect_type("%PDF-1.4", 8, NULL, "dir/notes.MD", &type, err), err);
    CHECK_STR(type, "text/markdown");
    CHECK_OK(ingest_detect_type("plain", 5, "application/octet-stream", "x.htm", &type, err), err);
    CHECK_STR(type, "text/html");
    /* then the bytes */
    CHECK_OK(ingest_detect_type("%PDF-1.7\n...", 12, NULL, NULL, &type, err), err);
    CHECK_STR(type, "application/pdf");
    CHECK_OK(ingest_detect_type(html, strlen(html), "", "README", &type, err), err);
    CHECK_STR(type, "text/html");
    CHECK_OK(ingest_detect_type("just words \xC3\xA9", 13, NULL, "notes", &type, err), err);
    CHECK_STR(type, "text/plain");
    zip_item items[] = {{"[Content_Types].xml", content_types, 0},
                        {"word/document.xml", "<w:document xmlns:w=\"" W_NS "\"/>", 0}};
    char *zip;
    size_t zlen;
    CHECK(make_zip(items, 2, &zip, &zlen));
    CHECK_OK(ingest_detect_type(zip, zlen, NULL, "upload.bin", &type, err), err);
    CHECK_STR(type, INGEST_TYPE_DOCX);
    free(zip);
    CHECK_OK(ingest_detect_type("x", 1, "text/html; charset=iso-8859-1", NULL, &type, err), err);
    CHECK_STR(type, "text/html");
}

TEST(detect_unknown_type_is_an_error)
{
    char err[QR_ERR_LEN] = "";
    const char *type = "x";
    const char bin[] = "\x89PNG\r\n\x1A\n\x00\x00\x00\rIHDR";
    CHECK_INT(ingest_detect_type(bin, sizeof(bin) - 1, NULL, "picture", &type, err), QR_EINVAL);
    CHECK(type == NULL);
    CHECK_MSG(strstr(err, "cannot tell the type of 'picture'") != NULL, "%s", err);
    CHECK_INT(ingest_detect_type("x", 1, "image/png", NULL, &type, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "unsupported content type 'image/png'") != NULL, "%s", err);
    CHECK_INT(ingest_detect_type("x", 1, NULL, "budget.xlsx", &type, err), QR_EINVAL);
    CHECK_MSG(strstr(err, ".xlsx") != NULL, "%s", err);
    ingest_limits lim = test_limits();
    ingest_text t;
    CHECK_INT(ingest_extract(bin, sizeof(bin) - 1, NULL, NULL, &lim, &t, err), QR_EINVAL);
    CHECK(t.text == NULL && t.nsections == 0);
}

/* ---- plain text and markdown --------------------------------------------------------------- */

TEST(extract_plain_text)
{
    char err[QR_ERR_LEN];
    ingest_limits lim = test_limits();
    ingest_text t;
    const char doc[] = "First paragraph,\r\nsecond line.\r\n\r\n\r\nSecond   paragraph.\x07\n";
    CHECK_OK(ingest_extract(doc, sizeof(doc) - 1, NULL, "notes.txt", &lim, &t, err), err);
    CHECK_STR(t.content_type, "text/plain");
    CHECK_STR(t.text, "First paragraph,\nsecond line.\n\nSecond paragraph.");
    CHECK_INT(t.len, strlen(t.text));
    CHECK(t.title == NULL);
    CHECK_INT(t.nsections, 1);
    CHECK_INT(t.sections[0].level, 0);
    CHECK_STR(t.sections[0].heading_path, "");
    CHECK(sections_cover(&t));
    ingest_text_release(&t);
    /* UTF-16 with a byte order mark */
    const char u16[] = "\xFF\xFEh\0i\0 \0\xE9\0";
    CHECK_OK(ingest_extract(u16, sizeof(u16) - 1, NULL, "w.txt", &lim, &t, err), err);
    CHECK_STR(t.text, "hi \xC3\xA9");
    ingest_text_release(&t);
    /* an empty document has no text and no sections */
    CHECK_OK(ingest_extract("", 0, "text/plain", NULL, &lim, &t, err), err);
    CHECK_INT(t.len, 0);
    CHECK_INT(t.nsections, 0);
    ingest_text_release(&t);
}

TEST(extract_markdown_headings)
{
    char err[QR_ERR_LEN];
    ingest_limits lim = test_limits();
    ingest_text t;
    const char doc[] = "---\ntitle: \"Policy Handbook\"\nowner: hr\n---\n"
                       "Preamble text.\n\n"
                       "# Travel policy\n\nIntro to travel.\n\n"
                       "## Reimbursement ##\nTrains are paid.\nTaxis are not.\n\n"
                       "```\n# not a heading\n\ncode line\n```\n\n"
                       "### Receipts\nKeep them.\n\n"
                       "Expenses\n========\n\nBody of expenses.\n\n"
                       "***\n\n"
                       "Claims\n------\nLast words.\n";
    CHECK_OK(ingest_extract(doc, sizeof(doc) - 1, NULL, "handbook.md", &lim, &t, err), err);
    CHECK_STR(t.content_type, "text/markdown");
    CHECK_STR(t.title, "Policy Handbook");
    CHECK(strstr(t.text, "owner: hr") == NULL && strstr(t.text, "```") == NULL &&
          strstr(t.text, "***") == NULL);
    CHECK(strstr(t.text, "# not a heading\n\ncode line") != NULL);
    CHECK(sections_cover(&t));
    CHECK_INT(t.nsections, 6);
    CHECK_STR(t.sections[0].heading_path, "");
    CHECK_INT(t.sections[0].level, 0);
    const ingest_section *s = find_section(&t, "Travel policy > Reimbursement");
    CHECK(s != NULL);
    CHECK_INT(s->level, 2);
    CHECK(strncmp(t.text + s->start, "Reimbursement\n\nTrains are paid.\nTaxis are not.", 46) == 0);
    CHECK(strstr(t.text + s->start, "# not a heading") <
          t.text + s->end); /* the fence stays in its section */
    s = find_section(&t, "Travel policy > Reimbursement > Receipts");
    CHECK(s != NULL && s->level == 3);
    s = find_section(&t, "Expenses");
    CHECK(s != NULL && s->level == 1);
    s = find_section(&t, "Expenses > Claims");
    CHECK(s != NULL && s->level == 2);
    CHECK(strcmp(t.text + s->start, "Claims\n\nLast words.") == 0);
    ingest_text_release(&t);
    /* without front matter the first level-1 heading is the title */
    CHECK_OK(ingest_extract("## Minor\n\n# Major\n\ntext", 24, "text/markdown", NULL, &lim, &t, err), err);
    CHECK_STR(t.title, "Major");
    ingest_text_release(&t);
}

TEST(extract_caps_long_titles_and_paths)
{
    char err[QR_ERR_LEN];
    ingest_limits lim = test_limits();
    qr_buf md;
    qr_buf_init(&md, 1 << 20);
    qr_buf_puts(&md, "# ");
    for (int i = 0; i < 3000; i++)
        qr_buf_puts(&md, "\xC3\xA9"); /* 6000 bytes of two-byte characters */
    qr_buf_puts(&md, "\n\n## Next\n\nbody\n");
    ingest_text t;
    CHECK_OK(ingest_extract(qr_buf_str(&md), qr_buf_len(&md), "text/markdown", NULL, &lim, &t, err), err);
    CHECK_INT(strlen(t.title), 1024);
    CHECK(qr_utf8_valid(t.title, strlen(t.title)));
    CHECK_INT(strlen(t.sections[0].heading_path), 256);
    CHECK_INT(strlen(t.sections[1].heading_path), 256 + strlen(" > Next"));
    CHECK(strncmp(t.text + t.sections[1].start - 2, "\n\nNext", 6) == 0);
    CHECK_INT(t.sections[0].end - t.sections[0].start, 6002); /* the heading text itself is whole */
    ingest_text_release(&t);
    qr_buf_release(&md);
}

/* ---- HTML ---------------------------------------------------------------------------------- */

TEST(extract_html_drops_script_style_nav)
{
    char err[QR_ERR_LEN];
    ingest_limits lim = test_limits();
    ingest_text t;
    const char doc[] =
        "<!DOCTYPE html><html><head><title>Travel &amp; Expenses</title>"
        "<style>body { color: red }</style><script>var secret = 'script text';</script></head><body>"
        "<nav><a href=\"/\">Home</a> | <a href=\"/x\">Menu item</a></nav>"
        "<div role=\"navigation\">Breadcrumb trail</div>"
        "<p>Welcome   to the\n handbook.</p>"
        "<h1>Travel policy</h1><p>Book early.<br>Always.</p>"
        "<h2>Reimbursement</h2><ul><li>Trains</li><li>Planes &lt;economy&gt;</li></ul>"
        "<pre>line one\n  line two</pre>"
        "<div hidden>hidden text</div><noscript>enable js</noscript>"
        "<table><tr><td>cell a</td><td>cell b</td></tr></table>"
        "<h2>Per diem</h2><p>Fifty euros.</p><script>document.write('late script')</script>"
        "</body></html>";
    CHECK_OK(ingest_extract(doc, sizeof(doc) - 1, NULL, "page.html", &lim, &t, err), err);
    CHECK_STR(t.content_type, "text/html");
    CHECK_STR(t.title, "Travel & Expenses");
    const char *dropped[] = {"script text", "color: red",  "Home",      "Menu item",
                             "Breadcrumb",  "hidden text", "enable js", "late script"};
    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
        CHECK_MSG(strstr(t.text, dropped[i]) == NULL, "'%s' was not dropped: %s", dropped[i], t.text);
    CHECK_MSG(strncmp(t.text, "Welcome to the handbook.\n\nTravel policy\n\nBook early.\nAlways.", 59) == 0,
              "%s", t.text);
    CHECK(strstr(t.text, "Trains\nPlanes <economy>") != NULL);
    CHECK(strstr(t.text, "line one\nline two") != NULL);
    CHECK(strstr(t.text, "cell a cell b") != NULL);
    CHECK(sections_cover(&t));
    const ingest_section *s = find_section(&t, "Travel policy > Reimbursement");
    CHECK(s != NULL && s->level == 2);
    CHECK(strncmp(t.text + s->start, "Reimbursement", 13) == 0);
    s = find_section(&t, "Travel policy > Per diem");
    CHECK(s != NULL);
    CHECK_STR(t.text + s->start, "Per diem\n\nFifty euros.");
    CHECK(find_section(&t, "Travel policy") != NULL && find_section(&t, "") != NULL);
    ingest_text_release(&t);
}

TEST(extract_html_charsets)
{
    char err[QR_ERR_LEN];
    ingest_limits lim = test_limits();
    ingest_text t;
    const char latin1[] = "<html><head><meta charset=\"ISO-8859-1\"><title>Caf\xE9</title></head>"
                          "<body><p>cr\xE8me br\xFBl\xE9"
                          "e</p></body></html>";
    CHECK_OK(ingest_extract(latin1, sizeof(latin1) - 1, "text/html", NULL, &lim, &t, err), err);
    CHECK_STR(t.title, "Caf\xC3\xA9");
    CHECK_STR(t.text, "cr\xC3\xA8me br\xC3\xBBl\xC3\xA9"
                      "e");
    ingest_text_release(&t);
    /* undeclared: UTF-8, with invalid bytes repaired or rejected */
    const char bad[] = "<html><body><p>ok \xE2\x82 bad</p></body></html>";
    CHECK_OK(ingest_extract(bad, sizeof(bad) - 1, "text/html", NULL, &lim, &t, err), err);
    CHECK_STR(t.text, "ok \xEF\xBF\xBD bad");
    ingest_text_release(&t);
    lim.reject_invalid_utf8 = true;
    CHECK_INT(ingest_extract(bad, sizeof(bad) - 1, "text/html", NULL, &lim, &t, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "invalid UTF-8") != NULL, "%s", err);
    const char odd[] = "<html><head><meta charset=\"x-no-such-charset\"></head><body>x</body></html>";
    CHECK_INT(ingest_extract(odd, sizeof(odd) - 1, "text/html", NULL, &lim, &t, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "x-no-such-charset") != NULL, "%s", err);
}

/* ---- PDF ----------------------------------------------------------------------------------- */

TEST(extract_pdf_with_pdftotext)
{
    char err[QR_ERR_LEN];
    ingest_limits lim = test_limits();
    ingest_text t;
    size_t len;
    char *pdf = make_pdf("Quarry \\(PDF\\) <test> & more", "Travel policy & <rules>",
                         "Employees are reimbursed for trains.", &len);
    qr_status st = ingest_extract(pdf, len, NULL, "scan.pdf", &lim, &t, err);
    free(pdf);
    CHECK_MSG(st == QR_OK,
              "PDF extraction failed (is poppler-utils installed? scripts/bootstrap installs it): %s", err);
    CHECK_STR(t.content_type, "application/pdf");
    CHECK_STR(t.title, "Quarry (PDF) <test> & more");
    CHECK_MSG(strstr(t.text, "Travel policy & <rules>") != NULL, "%s", t.text);
    CHECK(strstr(t.text, "Employees are reimbursed for trains.") != NULL);
    CHECK(strstr(t.text, "<pre>") == NULL && strstr(t.text, "</pre>") == NULL);
    CHECK(sections_cover(&t));
    ingest_text_release(&t);
}

TEST(extract_pdf_damaged)
{
    char err[QR_ERR_LEN] = "";
    ingest_limits lim = test_limits();
    ingest_text t;
    const char junk[] = "%PDF-1.4\nthis is not really a PDF at all\n";
    CHECK_INT(ingest_extract(junk, sizeof(junk) - 1, NULL, NULL, &lim, &t, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "pdftotext cannot read this PDF") != NULL, "%s", err);
    CHECK(t.text == NULL);
}

/* ---- DOCX ---------------------------------------------------------------------------------- */

TEST(extract_docx_styles_and_title)
{
    char err[QR_ERR_LEN];
    ingest_limits lim = test_limits();
    qr_buf body;
    qr_buf_init(&body, 1 << 20);
    qr_buf_puts(&body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><w:document xmlns:w=\"" W_NS "\"><w:body>");
    docx_para(&body, "Titel", "The Handbook");
    docx_para(&body, NULL, "Opening words.");
    docx_para(&body, "Kop1", "Travel policy");
    qr_buf_puts(&body,
                "<w:p><w:r><w:t>Book</w:t></w:r><w:r><w:tab/><w:t>early</w:t><w:br/><w:t>and "
                "often.</w:t></w:r><w:del><w:r><w:delText>deleted words</w:delText></w:r></w:del></w:p>");
    docx_para(&body, "Kop2", "Reimbursement");
    docx_para(&body, NULL, "Trains &amp; planes.");
    qr_buf_puts(&body, "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>cell one</w:t></w:r></w:p></w:tc>"
                       "<w:tc><w:p><w:r><w:t>cell two</w:t></w:r></w:p></w:tc></w:tr></w:tbl>");
    qr_buf_puts(&body, "<w:p><w:pPr><w:outlineLvl w:val=\"0\"/></w:pPr><w:r><w:t>Appendix</w:t></w:r></w:p>");
    docx_para(&body, NULL, "The end.");
    qr_buf_puts(&body, "</w:body></w:document>");
    /* style ids in another language; names say what they are */
    const char styles[] =
        "<?xml version=\"1.0\"?><w:styles xmlns:w=\"" W_NS "\">"
        "<w:style w:type=\"paragraph\" w:styleId=\"Titel\"><w:name w:val=\"Title\"/></w:style>"
        "<w:style w:type=\"paragraph\" w:styleId=\"Kop1\"><w:name w:val=\"heading 1\"/></w:style>"
        "<w:style w:type=\"paragraph\" w:styleId=\"Kop2\"><w:name w:val=\"Kop 2 eigen\"/>"
        "<w:basedOn w:val=\"Kop2Basis\"/></w:style>"
        "<w:style w:type=\"paragraph\" w:styleId=\"Kop2Basis\"><w:name w:val=\"heading 2\"/>"
        "</w:style></w:styles>";
    const char core[] =
        "<?xml version=\"1.0\"?><cp:coreProperties "
        "xmlns:cp=\"http://schemas.openxmlformats.org/package/2006/metadata/core-properties\" "
        "xmlns:dc=\"http://purl.org/dc/elements/1.1/\"><dc:title>Official Title</dc:title>"
        "</cp:coreProperties>";
    zip_item items[] = {{"[Content_Types].xml", content_types, 0},
                        {"word/document.xml", qr_buf_str(&body), qr_buf_len(&body)},
                        {"word/styles.xml", styles, 0},
                        {"docProps/core.xml", core, 0}};
    char *zip;
    size_t zlen;
    CHECK(make_zip(items, 4, &zip, &zlen));
    ingest_text t;
    qr_status st = ingest_extract(zip, zlen, NULL, "handbook.docx", &lim, &t, err);
    CHECK_OK(st, err);
    CHECK_STR(t.content_type, INGEST_TYPE_DOCX);
    CHECK_STR(t.title, "Official Title");
    CHECK_MSG(
        strncmp(t.text, "The Handbook\n\nOpening words.\n\nTravel policy\n\nBook early\nand often.", 66) == 0,
        "%s", t.text);
    CHECK(strstr(t.text, "deleted") == NULL);
    CHECK(strstr(t.text, "Trains & planes.\n\ncell one\n\ncell two") != NULL);
    CHECK(sections_cover(&t));
    CHECK_INT(t.nsections, 4);
    CHECK(find_section(&t, "Travel policy") != NULL);
    const ingest_section *s = find_section(&t, "Travel policy > Reimbursement");
    CHECK(s != NULL && s->level == 2);
    s = find_section(&t, "Appendix");
    CHECK(s != NULL && s->level == 1);
    CHECK_STR(t.text + s->start, "Appendix\n\nThe end.");
    ingest_text_release(&t);
    free(zip);

    /* without core.xml the Title-style paragraph is the title */
    CHECK(make_zip(items, 3, &zip, &zlen));
    CHECK_OK(ingest_extract(zip, zlen, INGEST_TYPE_DOCX, NULL, &lim, &t, err), err);
    CHECK_STR(t.title, "The Handbook");
    ingest_text_release(&t);
    free(zip);
    qr_buf_release(&body);
}

TEST(extract_docx_zip_bomb_ratio)
{
    char err[QR_ERR_LEN] = "";
    ingest_limits lim = test_limits();
    /* 24 MiB of identical paragraphs compresses about a thousand times */
    qr_buf body;
    qr_buf_init(&body, 32u << 20);
    qr_buf_puts(&body, "<w:document xmlns:w=\"" W_NS "\"><w:body>");
    char para[1100];
    memset(para, 'a', 1000);
    para[1000] = '\0';
    while (qr_buf_len(&body) < (24u << 20))
        docx_para(&body, NULL, para);
    qr_buf_puts(&body, "</w:body></w:document>");
    size_t text_len = 0;
    zip_item items[] = {{"[Content_Types].xml", content_types, 0},
                        {"word/document.xml", qr_buf_str(&body), qr_buf_len(&body)}};
    char *zip;
    size_t zlen;
    bool made = make_zip(items, 2, &zip, &zlen);
    qr_buf_release(&body);
    CHECK(made);
    CHECK_MSG(zlen < (1u << 20), "the test archive is %zu bytes", zlen);
    ingest_text t;
    CHECK_INT(ingest_extract(zip, zlen, NULL, "bomb.docx", &lim, &t, err), QR_ELIMIT);
    CHECK_MSG(strstr(err, "zip_max_ratio") != NULL && strstr(err, "zip bomb") != NULL, "%s", err);
    CHECK(t.text == NULL);
    /* a higher ratio limit lets the same file through */
    lim.zip_max_ratio = 100000;
    CHECK_OK(ingest_extract(zip, zlen, NULL, "bomb.docx", &lim, &t, err), err);
    text_len = t.len;
    CHECK_MSG(text_len > (20u << 20), "%zu bytes of text", text_len);
    ingest_text_release(&t);
    free(zip);
}

TEST(extract_docx_zip_bomb_size)
{
    char err[QR_ERR_LEN] = "";
    ingest_limits lim = test_limits();
    qr_buf body;
    qr_buf_init(&body, 1 << 20);
    qr_buf_puts(&body, "<w:document xmlns:w=\"" W_NS "\"><w:body>");
    for (int i = 0; i < 100; i++)
        docx_para(&body, NULL, "An ordinary sentence of an ordinary document.");
    qr_buf_puts(&body, "</w:body></w:document>");
    zip_item items[] = {{"[Content_Types].xml", content_types, 0},
                        {"word/document.xml", qr_buf_str(&body), qr_buf_len(&body)}};
    char *zip;
    size_t zlen;
    CHECK(make_zip(items, 2, &zip, &zlen));
    qr_buf_release(&body);
    ingest_text t;
    lim.zip_max_bytes = 4096;
    CHECK_INT(ingest_extract(zip, zlen, NULL, "big.docx", &lim, &t, err), QR_ELIMIT);
    CHECK_MSG(strstr(err, "zip_max_bytes") != NULL, "%s", err);
    lim.zip_max_bytes = 1 << 20;
    CHECK_OK(ingest_extract(zip, zlen, NULL, "big.docx", &lim, &t, err), err);
    CHECK(strstr(t.text, "ordinary document.\n\nAn ordinary") != NULL);
    ingest_text_release(&t);
    free(zip);
}

TEST(extract_docx_bad_archives)
{
    char err[QR_ERR_LEN] = "";
    ingest_limits lim = test_limits();
    ingest_text t;
    zip_item items[] = {{"[Content_Types].xml", content_types, 0}, {"word/other.xml", "<x/>", 0}};
    char *zip;
    size_t zlen;
    CHECK(make_zip(items, 2, &zip, &zlen));
    CHECK_INT(ingest_extract(zip, zlen, NULL, "x.docx", &lim, &t, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "no word/document.xml") != NULL, "%s", err);
    /* cut in half */
    CHECK_INT(ingest_extract(zip, zlen / 2, NULL, "x.docx", &lim, &t, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "not a valid DOCX") != NULL, "%s", err);
    free(zip);
    /* malformed XML */
    zip_item broken[] = {{"word/document.xml", "<w:document xmlns:w=\"" W_NS "\"><w:body><w:p>", 0}};
    CHECK(make_zip(broken, 1, &zip, &zlen));
    CHECK_INT(ingest_extract(zip, zlen, NULL, "x.docx", &lim, &t, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "not well-formed") != NULL, "%s", err);
    free(zip);
}

/* ---- limits and the sandbox ---------------------------------------------------------------- */

TEST(extract_refuses_oversized_documents)
{
    char err[QR_ERR_LEN] = "";
    ingest_limits lim = test_limits();
    lim.max_document_bytes = 1000;
    char *big = malloc(1001);
    CHECK(big != NULL);
    memset(big, 'x', 1001);
    ingest_text t;
    CHECK_INT(ingest_extract(big, 1001, "text/plain", NULL, &lim, &t, err), QR_ELIMIT);
    CHECK_MSG(strstr(err, "max_document_bytes") != NULL, "%s", err);
    CHECK_OK(ingest_extract(big, 1000, "text/plain", NULL, &lim, &t, err), err);
    ingest_text_release(&t);
    /* text that grows past the limit in extraction: 400 invalid bytes become 1200 */
    memset(big, '\xFF', 400);
    CHECK_INT(ingest_extract(big, 400, "text/plain", NULL, &lim, &t, err), QR_ELIMIT);
    free(big);
}

static qr_status hostile_spin(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b,
                              char *err)
{
    (void)bytes, (void)len, (void)lim, (void)b, (void)err;
    for (volatile unsigned long i = 0;; i++) {
    }
    return QR_OK;
}

void *volatile hostile_alloc_escape; /* see hostile_alloc */

static qr_status hostile_alloc(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b,
                               char *err)
{
    (void)bytes, (void)len, (void)lim, (void)b;
    /* Touch every page so the memory is resident; stop at 8 GiB in case no limit applies. Each
     * block escapes through a volatile pointer: otherwise an optimiser (clang -O2) may drop the
     * unused allocations altogether and no limit is ever reached. */
    for (size_t total = 0; total < (8ull << 30); total += 1 << 20) {
        char *p = malloc(1 << 20);
        if (!p)
            return qr_fail(err, QR_ENOMEM, "out of memory");
        memset(p, 1, 1 << 20);
        hostile_alloc_escape = p;
    }
    return qr_fail(err, QR_EINTERNAL, "no memory limit applied");
}

static qr_status hostile_crash(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b,
                               char *err)
{
    (void)bytes, (void)len, (void)lim, (void)b, (void)err;
    raise(SIGSEGV);
    return QR_OK;
}

static qr_status friendly(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b, char *err)
{
    (void)lim;
    qr_status st = builder_heading_add(b, 1, "Head", 4, err);
    return st ? st : builder_paragraph(b, bytes, len, 0, err);
}

/* The children of pid (all its threads'), from /proc; -1 when unknown. */
static int count_children(pid_t pid, pid_t *first)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char cp[64 + sizeof(e->d_name) + 16];
        snprintf(cp, sizeof(cp), "%s/%s/children", path, e->d_name);
        FILE *f = fopen(cp, "r");
        if (!f) {
            n = -1;
            break;
        }
        int c;
        while (fscanf(f, "%d", &c) == 1)
            if (n++ == 0 && first)
                *first = c;
        fclose(f);
    }
    closedir(d);
    return n;
}

/* No extractor process is left: none reaped late, and the only child is the extraction zygote,
 * itself without children. */
static bool no_children_left(void)
{
    if (waitpid(-1, NULL, WNOHANG) > 0)
        return false; /* a child ended and nobody reaped it */
    pid_t zygote = ingest_sandbox_zygote(), only = 0;
    int mine = count_children(getpid(), &only);
    if (mine == 0)
        return true;
    return mine == 1 && zygote > 0 && only == zygote && count_children(zygote, NULL) == 0;
}

TEST(sandbox_stops_a_spinning_extractor)
{
    char err[QR_ERR_LEN] = "";
    ingest_limits lim = test_limits();
    lim.timeout_ms = 300;
    ingest_text t;
    uint64_t t0 = qr_now_ns();
    CHECK_INT(ingest_sandbox_run(hostile_spin, "x", 1, &lim, &t, err), QR_ETIMEOUT);
    uint64_t ms = (qr_now_ns() - t0) / 1000000;
    CHECK_MSG(ms >= 290 && ms < 2000, "stopped after %llu ms", (unsigned long long)ms);
    CHECK_MSG(strstr(err, "300 ms") != NULL, "%s", err);
    CHECK(no_children_left());
}

TEST(sandbox_limits_memory)
{
    char err[QR_ERR_LEN] = "";
    ingest_limits lim = test_limits();
    lim.memory_bytes = 64u << 20;
    ingest_text t;
    uint64_t t0 = qr_now_ns();
    CHECK_INT(ingest_sandbox_run(hostile_alloc, "x", 1, &lim, &t, err), QR_ELIMIT);
    uint64_t ms = (qr_now_ns() - t0) / 1000000;
    CHECK_MSG(strstr(err, "64 MiB") != NULL, "%s", err);
    CHECK_MSG(ms < 5000, "stopped after %llu ms", (unsigned long long)ms);
    CHECK(no_children_left());
}

TEST(sandbox_reports_a_crash)
{
    char err[QR_ERR_LEN] = "";
    ingest_limits lim = test_limits();
    ingest_text t;
    CHECK_INT(ingest_sandbox_run(hostile_crash, "x", 1, &lim, &t, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "crashed") != NULL, "%s", err);
    CHECK(t.text == NULL);
    /* and the sandbox carries a good result back intact */
    CHECK_OK(ingest_sandbox_run(friendly, "body text", 9, &lim, &t, err), err);
    CHECK_STR(t.text, "Head\n\nbody text");
    CHECK_INT(t.nsections, 1);
    CHECK_STR(t.sections[0].heading_path, "Head");
    ingest_text_release(&t);
    /* the children came from the zygote (a single-threaded helper), not forked from this process */
    CHECK(ingest_sandbox_zygote() > 0);
    CHECK(no_children_left());
}

/* Sandboxed extractions from several threads while others allocate without pause: a child forked
 * straight from this process could inherit an allocator or libxml2 lock another thread held and
 * wait on it until the deadline (with direct forks this test failed 6 runs in 6 under ASan, 0 in 6
 * in release); the zygote's children never do. Every extraction must succeed, none by the
 * deadline. */
typedef struct {
    int ok, failed;
    char err[QR_ERR_LEN];
} extract_job;

static atomic_bool churn_stop;

static void *churn(void *arg)
{
    (void)arg;
    while (!atomic_load(&churn_stop)) {
        void *p[64];
        for (int i = 0; i < 64; i++)
            p[i] = malloc((size_t)(16 + i * 97));
        for (int i = 0; i < 64; i++)
            free(p[i]);
    }
    return NULL;
}

static void *extract_many(void *arg)
{
    extract_job *j = arg;
    ingest_limits lim = test_limits();
    lim.timeout_ms = 20000;
    static const char html[] = "<html><head><title>T</title></head><body><h1>Head</h1><p>Some "
                               "<b>bold</b> text.</p></body></html>";
    for (int i = 0; i < 12; i++) {
        ingest_text t;
        char err[QR_ERR_LEN] = "";
        if (ingest_extract(html, sizeof(html) - 1, "text/html", NULL, &lim, &t, err) == QR_OK && t.text &&
            strstr(t.text, "bold")) {
            j->ok++;
        } else {
            j->failed++;
            snprintf(j->err, sizeof(j->err), "%s", err);
        }
        ingest_text_release(&t);
    }
    return NULL;
}

TEST(sandbox_from_many_threads_never_waits_on_a_copied_lock)
{
    pthread_t workers[4], churners[2];
    extract_job jobs[4];
    memset(jobs, 0, sizeof(jobs));
    atomic_store(&churn_stop, false);
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&churners[i], NULL, churn, NULL) == 0);
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&workers[i], NULL, extract_many, &jobs[i]) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(workers[i], NULL);
    atomic_store(&churn_stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(churners[i], NULL);
    /* a child waiting on a copied lock fails its extraction at the 20 s deadline: no timing is
     * asserted here, the machine's speed does not decide the verdict */
    for (int i = 0; i < 4; i++)
        CHECK_MSG(jobs[i].ok == 12 && jobs[i].failed == 0, "thread %d: %d ok, %d failed (%s)", i, jobs[i].ok,
                  jobs[i].failed, jobs[i].err);
    CHECK(no_children_left());
}

/* A zygote that dies (its starting thread ended, or it was killed) is replaced on the next use. */
TEST(sandbox_replaces_a_dead_zygote)
{
    char err[QR_ERR_LEN] = "";
    ingest_limits lim = test_limits();
    ingest_text t;
    CHECK_OK(ingest_sandbox_run(friendly, "one", 3, &lim, &t, err), err);
    ingest_text_release(&t);
    pid_t z = ingest_sandbox_zygote();
    CHECK(z > 0);
    CHECK(kill(z, SIGKILL) == 0);
    for (int i = 0; i < 100 && kill(z, 0) == 0; i++) { /* until it is a zombie or gone */
        char path[64], state = 0;
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)z);
        FILE *f = fopen(path, "r");
        if (f) {
            (void)!fscanf(f, "%*d %*s %c", &state);
            fclose(f);
        }
        if (state == 'Z' || !f)
            break;
        usleep(10000);
    }
    CHECK_OK(ingest_sandbox_run(friendly, "two", 3, &lim, &t, err), err);
    CHECK_STR(t.text, "Head\n\ntwo");
    ingest_text_release(&t);
    CHECK(ingest_sandbox_zygote() > 0 && ingest_sandbox_zygote() != z);
    CHECK(no_children_left());
}

TEST(sandbox_times_out_on_a_real_document)
{
    char err[QR_ERR_LEN] = "";
    ingest_limits lim = test_limits();
    /* 16 MiB of nested markup takes libxml2 far longer than 20 ms */
    qr_buf html;
    qr_buf_init(&html, 32u << 20);
    qr_buf_puts(&html, "<html><body>");
    while (qr_buf_len(&html) < (16u << 20))
        qr_buf_puts(&html, "<div><p>text <b>bold</b> <i>it</i></p><table><tr><td>c</td></tr></table></div>");
    qr_buf_puts(&html, "</body></html>");
    lim.timeout_ms = 20;
    ingest_text t;
    CHECK_INT(ingest_extract(qr_buf_str(&html), qr_buf_len(&html), "text/html", NULL, &lim, &t, err),
              QR_ETIMEOUT);
    CHECK_MSG(strstr(err, "ingest.extract_timeout_ms") != NULL, "%s", err);
    qr_buf_release(&html);
    CHECK(no_children_left());
}

/* ---- chunking ------------------------------------------------------------------------------ */

TEST(count_tokens_approximation)
{
    CHECK_INT(ingest_count_tokens("", 0), 0);
    CHECK_INT(ingest_count_tokens("hello world", 11), 2);
    CHECK_INT(ingest_count_tokens("internationalization", 20), 4);
    CHECK_INT(ingest_count_tokens("a, b.", 5), 4);
    CHECK_INT(ingest_count_tokens("  \n\n ", 5), 0);
    CHECK_INT(ingest_count_tokens("\xE6\x9D\xB1\xE4\xBA\xAC", 6), 2);        /* two ideographs */
    CHECK_INT(ingest_count_tokens("caf\xC3\xA9s", 6), 1);                    /* one word of 5 letters */
    CHECK_INT(ingest_count_tokens("\xD0\xBC\xD0\xB8\xD1\x80", 6), 1);        /* Cyrillic word */
    CHECK_INT(ingest_count_tokens("e = mc\xC2\xB2 \xE2\x80\x94 ok", 14), 6); /* e = mc ² — ok */
    /* random texts against a character-by-character count: a word's run of characters (ASCII or
     * not) costs a token per WORD_CHARS (6) begun, a symbol one, a space none */
    static const struct {
        const char *s;
        int cls; /* 0 symbol, 1 space, 2 word */
    } pieces[] = {{"a", 2},        {"Z", 2},        {"7", 2},
                  {" ", 1},        {"\n", 1},       {".", 0},
                  {"-", 0},        {"\xC3\xA9", 2}, {"\xE6\x9D\xB1", 0},
                  {"\xC2\xA0", 1}, {"\xD0\xBC", 2}};
    unsigned seed = 99;
    for (int round = 0; round < 2000; round++) {
        char text[512];
        size_t n = 0, tokens = 0, run = 0;
        for (int k = rand_r(&seed) % 120; k > 0; k--) {
            /* mostly letters, so that long words occur */
            size_t pick = rand_r(&seed) % 3 ? (size_t)rand_r(&seed) % 3 : (size_t)rand_r(&seed) % 11;
            size_t pn = strlen(pieces[pick].s);
            memcpy(text + n, pieces[pick].s, pn);
            n += pn;
            if (pieces[pick].cls == 2) {
                tokens += run % 6 == 0;
                run++;
            } else {
                run = 0;
                tokens += pieces[pick].cls == 0;
            }
        }
        CHECK_MSG(ingest_count_tokens(text, n) == tokens,
                  "round %d: %zu tokens counted, %zu expected in '%.*s'", round, ingest_count_tokens(text, n),
                  tokens, (int)n, text);
    }
}

/* Builds a random document: headings, paragraphs of sentences, monster words, CJK runs. */
static void random_doc(unsigned *seed, doc_builder *b)
{
    static const char *const words[] = {"the",
                                        "travel",
                                        "policy",
                                        "reimbursement",
                                        "of",
                                        "trains",
                                        "a",
                                        "internationalisation",
                                        "x",
                                        "caf\xC3\xA9",
                                        "\xE6\x9D\xB1\xE4\xBA\xAC",
                                        "42",
                                        "e.g.",
                                        "(see",
                                        "below)",
                                        "\xF0\x9F\x99\x82",
                                        "well-known"};
    char err[QR_ERR_LEN];
    qr_buf para;
    qr_buf_init(&para, 1 << 22);
    int blocks = 1 + rand_r(seed) % 12;
    for (int blk = 0; blk < blocks; blk++) {
        int kind = rand_r(seed) % 10;
        qr_buf_reset(&para);
        if (kind == 0) {
            char h[32];
            snprintf(h, sizeof(h), "Heading %d", blk);
            builder_heading_add(b, 1 + rand_r(seed) % 4, h, strlen(h), err);
            continue;
        }
        if (kind == 1) {
            /* a monster word, or a CJK run without spaces */
            int n = 50 + rand_r(seed) % 3000;
            bool cjk = rand_r(seed) % 2;
            for (int i = 0; i < n; i++)
                qr_buf_puts(&para, cjk ? "\xE8\xAA\x9E" : &"abcdefghij"[i % 10]);
        } else {
            int sentences = 1 + rand_r(seed) % (kind == 2 ? 60 : 8);
            for (int s = 0; s < sentences; s++) {
                int n = 1 + rand_r(seed) % (kind == 3 ? 400 : 25);
                for (int i = 0; i < n; i++) {
                    qr_buf_puts(&para, words[rand_r(seed) % (sizeof(words) / sizeof(words[0]))]);
                    qr_buf_puts(&para, i + 1 < n ? (rand_r(seed) % 15 ? " " : "\n") : "");
                }
                qr_buf_puts(&para, rand_r(seed) % 4 ? ". " : "? ");
            }
        }
        builder_paragraph(b, qr_buf_str(&para), qr_buf_len(&para), 0, err);
    }
    qr_buf_release(&para);
}

/* Checks every property the chunker promises for t and o. */
static void check_chunks(const ingest_text *t, const ingest_chunk_opts *o, const ingest_chunk *c, size_t n)
{
    if (t->len == 0) {
        CHECK_INT(n, 0);
        return;
    }
    CHECK(n > 0);
    CHECK_INT(c[0].start, 0);
    CHECK_INT(c[n - 1].end, t->len);
    size_t covered = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK_MSG(c[i].start < c[i].end, "chunk %zu is empty", i);
        CHECK_MSG(c[i].start <= covered, "gap before chunk %zu (%zu > %zu)", i, c[i].start, covered);
        CHECK(i == 0 || c[i].start > c[i - 1].start);
        CHECK(c[i].end >= covered);
        covered = c[i].end;
        CHECK(((unsigned char)t->text[c[i].start] & 0xC0) != 0x80);
        CHECK(c[i].end == t->len || ((unsigned char)t->text[c[i].end] & 0xC0) != 0x80);
        size_t tokens = ingest_count_tokens(t->text + c[i].start, c[i].end - c[i].start);
        CHECK_MSG(tokens <= o->max_tokens, "chunk %zu has %zu tokens, budget %zu", i, tokens, o->max_tokens);
        /* one section per chunk, and its heading path */
        const ingest_section *s = section_at(t, c[i].start);
        CHECK(s != NULL);
        CHECK_MSG(c[i].end <= s->end, "chunk %zu [%zu,%zu) leaves its section [%zu,%zu)", i, c[i].start,
                  c[i].end, s->start, s->end);
        CHECK_STR(c[i].headings, s->heading_path);
        if (o->overlap == 0 && i > 0)
            CHECK_MSG(c[i].start == c[i - 1].end, "chunks %zu and %zu overlap without overlap", i - 1, i);
        if (i > 0 && c[i].start < c[i - 1].end) {
            size_t ov = ingest_count_tokens(t->text + c[i].start, c[i - 1].end - c[i].start);
            CHECK_MSG(ov <= (size_t)(o->overlap * (double)o->max_tokens), "overlap of %zu tokens", ov);
        }
    }
    CHECK_INT(covered, t->len);
}

TEST(chunk_properties_on_random_texts)
{
    char err[QR_ERR_LEN];
    unsigned seed = 2024;
    const size_t budgets[] = {8, 20, 64, 300};
    const double overlaps[] = {0.0, 0.15, 0.5};
    for (int iter = 0; iter < 120; iter++) {
        doc_builder b;
        builder_init(&b, 1 << 24, false);
        random_doc(&seed, &b);
        ingest_text t;
        CHECK_OK(builder_finish(&b, &t, err), err);
        builder_release(&b);
        for (size_t bi = 0; bi < 4; bi++) {
            for (size_t oi = 0; oi < 3; oi++) {
                ingest_chunk_opts o = {budgets[bi], overlaps[oi]};
                ingest_chunk *c;
                size_t n;
                CHECK_OK(ingest_chunk_text(&t, &o, &c, &n, err), err);
                check_chunks(&t, &o, c, n);
                ingest_chunks_free(c, n);
                if (harness_failed()) {
                    fprintf(stderr, "iteration %d, budget %zu, overlap %g\n", iter, o.max_tokens, o.overlap);
                    ingest_text_release(&t);
                    return;
                }
            }
        }
        ingest_text_release(&t);
    }
}

TEST(chunk_follows_structure)
{
    char err[QR_ERR_LEN];
    /* four paragraphs of about 100 tokens: whole paragraphs are packed, never split */
    qr_buf doc;
    qr_buf_init(&doc, 1 << 20);
    for (int p = 0; p < 4; p++) {
        for (int s = 0; s < 10; s++)
            qr_buf_printf(&doc, "Paragraph %d sentence %d has some words in it. ", p, s);
        qr_buf_puts(&doc, "\n\n");
    }
    ingest_limits lim = test_limits();
    ingest_text t;
    CHECK_OK(ingest_extract(qr_buf_str(&doc), qr_buf_len(&doc), "text/plain", NULL, &lim, &t, err), err);
    ingest_chunk_opts o = {300, 0.0};
    ingest_chunk *c;
    size_t n;
    CHECK_OK(ingest_chunk_text(&t, &o, &c, &n, err), err);
    CHECK_INT(n, 2);
    CHECK(strncmp(t.text + c[1].start, "Paragraph 2 sentence 0", 22) == 0);
    ingest_chunks_free(c, n);
    /* a budget below a paragraph splits between sentences */
    o.max_tokens = 40;
    CHECK_OK(ingest_chunk_text(&t, &o, &c, &n, err), err);
    for (size_t i = 0; i < n; i++)
        CHECK_MSG(strncmp(t.text + c[i].start, "Paragraph ", 10) == 0, "chunk %zu starts mid-sentence: %.30s",
                  i, t.text + c[i].start);
    ingest_chunks_free(c, n);
    /* with overlap, a chunk repeats the end of the one before, in whole words */
    o.max_tokens = 40;
    o.overlap = 0.25;
    CHECK_OK(ingest_chunk_text(&t, &o, &c, &n, err), err);
    size_t overlapping = 0;
    for (size_t i = 1; i < n; i++) {
        if (c[i].start < c[i - 1].end) {
            overlapping++;
            CHECK(t.text[c[i].start - 1] == ' ' || t.text[c[i].start - 1] == '\n');
        }
    }
    CHECK_MSG(overlapping >= n / 2, "only %zu of %zu chunks overlap", overlapping, n);
    check_chunks(&t, &o, c, n);
    ingest_chunks_free(c, n);
    ingest_text_release(&t);
    qr_buf_release(&doc);
}

TEST(chunk_keeps_heading_paths)
{
    char err[QR_ERR_LEN];
    ingest_limits lim = test_limits();
    const char md[] = "# Travel policy\n\nIntro.\n\n## Reimbursement\n\nTrains are paid. Taxis are not.\n";
    ingest_text t;
    CHECK_OK(ingest_extract(md, sizeof(md) - 1, "text/markdown", NULL, &lim, &t, err), err);
    ingest_chunk_opts o = {300, 0.15};
    ingest_chunk *c;
    size_t n;
    CHECK_OK(ingest_chunk_text(&t, &o, &c, &n, err), err);
    CHECK_INT(n, 2);
    CHECK_STR(c[0].headings, "Travel policy");
    CHECK_STR(c[1].headings, "Travel policy > Reimbursement");
    CHECK(strncmp(t.text + c[1].start, "Reimbursement\n\nTrains", 21) == 0);
    ingest_chunks_free(c, n);
    ingest_text_release(&t);
}

TEST(chunk_rejects_bad_arguments)
{
    char err[QR_ERR_LEN] = "";
    ingest_section sec[2] = {{"b", 1, 5, 10}, {"a", 1, 0, 5}};
    ingest_text t = {.text = "0123456789", .len = 10, .sections = sec, .nsections = 2};
    ingest_chunk *c = (ingest_chunk *)&t;
    size_t n = 7;
    ingest_chunk_opts o = {300, 0.15};
    CHECK_INT(ingest_chunk_text(&t, &o, &c, &n, err), QR_EINVAL);
    CHECK(c == NULL && n == 0);
    CHECK_MSG(strstr(err, "out of order") != NULL, "%s", err);
    t.nsections = 0;
    o.max_tokens = 4;
    CHECK_INT(ingest_chunk_text(&t, &o, &c, &n, err), QR_EINVAL);
    o.max_tokens = 300;
    o.overlap = 0.6;
    CHECK_INT(ingest_chunk_text(&t, &o, &c, &n, err), QR_EINVAL);
    o.overlap = 0;
    ingest_text bad = {.text = "ab\xFF", .len = 3};
    CHECK_INT(ingest_chunk_text(&bad, &o, &c, &n, err), QR_EINVAL);
    CHECK_INT(ingest_chunk_text(NULL, &o, &c, &n, err), QR_EINVAL);
    /* no sections: the whole text is one */
    CHECK_OK(ingest_chunk_text(&t, &o, &c, &n, err), err);
    CHECK_INT(n, 1);
    CHECK_STR(c[0].headings, "");
    ingest_chunks_free(c, n);
}

/* ---- hashing, stemming, embedding ---------------------------------------------------------- */

TEST(content_hash_is_sha256)
{
    char hex[65];
    ingest_content_hash("abc", 3, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ingest_content_hash("", 0, hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(porter_stemmer)
{
    /* pairs from Porter's paper and the reference vocabulary */
    static const char *const cases[][2] = {
        {"caresses", "caress"},
        {"ponies", "poni"},
        {"cats", "cat"},
        {"feed", "feed"},
        {"agreed", "agre"},
        {"plastered", "plaster"},
        {"motoring", "motor"},
        {"sing", "sing"},
        {"conflated", "conflat"},
        {"troubled", "troubl"},
        {"sized", "size"},
        {"hopping", "hop"},
        {"falling", "fall"},
        {"hissing", "hiss"},
        {"filing", "file"},
        {"happy", "happi"},
        {"relational", "relat"},
        {"conditional", "condit"},
        {"rational", "ration"},
        {"valenci", "valenc"},
        {"generalization", "gener"},
        {"oscillators", "oscil"},
        {"electrical", "electr"},
        {"adjustment", "adjust"},
        {"controlling", "control"},
        {"roll", "roll"},
        {"probate", "probat"},
        {"rate", "rate"},
        {"cease", "ceas"},
        {"aerodynamics", "aerodynam"},
        {"boundary", "boundari"},
        {"is", "is"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char w[64];
        snprintf(w, sizeof(w), "%s", cases[i][0]);
        size_t n = embed_porter_stem(w, strlen(w));
        w[n] = '\0';
        CHECK_MSG(strcmp(w, cases[i][1]) == 0, "stem(%s) = %s, expected %s", cases[i][0], w, cases[i][1]);
    }
}

static double cosine(const float *a, const float *b, int dim)
{
    double s = 0;
    for (int i = 0; i < dim; i++)
        s += (double)a[i] * b[i];
    return s;
}

TEST(embed_local_deterministic_and_normalised)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    CHECK(cfg != NULL);
    ingest_embedder *e;
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    CHECK_STR(ingest_embedder_model(e), "local-hash-v1");
    int dim = ingest_embedder_dim(e);
    CHECK_INT(dim, 384);
    const char *texts[] = {"Employees travelling by train are reimbursed.",
                           "Reimbursement of train travel for employees",
                           "Lattice quantum chromodynamics at finite temperature", "",
                           "Employees travelling by train are reimbursed."};
    float *v = calloc(5 * (size_t)dim, sizeof(float));
    CHECK_OK(ingest_embed(e, texts, NULL, 5, v, err), err);
    for (int i = 0; i < 5; i++) {
        double norm = sqrt(cosine(v + i * dim, v + i * dim, dim));
        CHECK_MSG(i == 3 ? norm == 0 : fabs(norm - 1.0) < 1e-5, "row %d has norm %g", i, norm);
    }
    CHECK(memcmp(v, v + 4 * dim, (size_t)dim * sizeof(float)) == 0);
    double related = cosine(v, v + dim, dim), unrelated = cosine(v, v + 2 * dim, dim);
    CHECK_MSG(related > 0.5 && related > unrelated + 0.3, "related %g, unrelated %g", related, unrelated);
    /* a second embedder gives the same vectors: no state */
    ingest_embedder *e2;
    CHECK_OK(ingest_embedder_open(cfg, &e2, err), err);
    float *w = calloc((size_t)dim, sizeof(float));
    size_t len = strlen(texts[2]);
    CHECK_OK(ingest_embed(e2, texts + 2, &len, 1, w, err), err);
    CHECK(memcmp(w, v + 2 * dim, (size_t)dim * sizeof(float)) == 0);
    /* another dimension */
    CHECK_OK(qr_config_set(cfg, "embed.dim", "64", QR_CFG_SRC_CLI, err), err);
    ingest_embedder *e3;
    CHECK_OK(ingest_embedder_open(cfg, &e3, err), err);
    CHECK_INT(ingest_embedder_dim(e3), 64);
    CHECK_OK(ingest_embed(e3, texts, NULL, 1, w, err), err);
    CHECK(fabs(sqrt(cosine(w, w, 64)) - 1.0) < 1e-5);
    /* bad input */
    const char *bad[] = {"ok", "\xFF"};
    CHECK_INT(ingest_embed(e, bad, NULL, 2, v, err), QR_EINVAL);
    const char *null_text[] = {NULL};
    CHECK_INT(ingest_embed(e, null_text, NULL, 1, v, err), QR_EINVAL);
    ingest_embedder_free(e);
    ingest_embedder_free(e2);
    ingest_embedder_free(e3);
    free(v);
    free(w);
    qr_config_free(cfg);
}

/* The word cache (with the positions of each word's features it keeps) only saves time: every
 * vector is bit for bit the one computed without it, whatever the options, for words seen
 * before, words too long for a slot, and n-gram lengths whose features do not fit a slot. */
TEST(embed_local_cache_changes_no_bit)
{
    static const char *const words[] = {"the",
                                        "Travel",
                                        "reimbursement",
                                        "trains",
                                        "a",
                                        "x",
                                        "42",
                                        "internationalisation",
                                        "caf\xC3\xA9",
                                        "\xE6\x9D\xB1\xE4\xBA\xAC",
                                        "electroencephalographically",
                                        "of",
                                        "Lattice",
                                        "QCD",
                                        "e.g.",
                                        "thermodynamics",
                                        "ab"};
    embed_local_opts opts[6];
    embed_local_defaults(&opts[0], 384);
    embed_local_defaults(&opts[1], 64);
    embed_local_defaults(&opts[2], 384);
    opts[2].char_ngram = 1; /* more features than a slot keeps */
    embed_local_defaults(&opts[3], 384);
    opts[3].char_ngram = 3;
    opts[3].seed = 7;
    embed_local_defaults(&opts[4], 384);
    opts[4].tf = EMBED_TF_LOG;
    embed_local_defaults(&opts[5], 384);
    opts[5].bigrams = true;
    opts[5].bigram_weight = 0.5;
    unsigned seed = 5;
    float a[384], b[384];
    for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
        embed_cache *cache = embed_cache_new();
        CHECK(cache != NULL);
        for (int round = 0; round < 300; round++) {
            char text[1024];
            size_t n = 0;
            for (int w = rand_r(&seed) % 40; w > 0; w--) {
                const char *word = words[rand_r(&seed) % (sizeof(words) / sizeof(words[0]))];
                size_t wn = strlen(word);
                memcpy(text + n, word, wn);
                n += wn;
                text[n++] = rand_r(&seed) % 4 ? ' ' : ',';
            }
            CHECK_INT(embed_local_one(&opts[k], cache, text, n, a), QR_OK);
            CHECK_INT(embed_local_one(&opts[k], NULL, text, n, b), QR_OK);
            CHECK_MSG(memcmp(a, b, (size_t)opts[k].dim * sizeof(float)) == 0, "options %zu, round %d: '%.*s'",
                      k, round, (int)n, text);
        }
        embed_cache_free(cache);
    }
}

TEST(embed_open_checks_settings)
{
    char err[QR_ERR_LEN] = "";
    qr_config *cfg = qr_config_new();
    CHECK(cfg != NULL);
    ingest_embedder *e = (ingest_embedder *)cfg;
    CHECK_OK(qr_config_set(cfg, "embed.backend", "openai", QR_CFG_SRC_CLI, err), err);
    CHECK_INT(ingest_embedder_open(cfg, &e, err), QR_EINVAL);
    CHECK(e == NULL);
    CHECK_MSG(strstr(err, "embed.base_url") != NULL, "%s", err);
    CHECK_OK(qr_config_set(cfg, "embed.base_url", "ftp://example.invalid", QR_CFG_SRC_CLI, err), err);
    CHECK_INT(ingest_embedder_open(cfg, &e, err), QR_EINVAL);
    CHECK_OK(qr_config_set(cfg, "embed.base_url", "http://127.0.0.1:9/v1", QR_CFG_SRC_CLI, err), err);
    CHECK_INT(ingest_embedder_open(cfg, &e, err), QR_EINVAL);
    CHECK_MSG(strstr(err, "embed.model") != NULL, "%s", err);
    CHECK_OK(qr_config_set(cfg, "embed.model", "m", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(ingest_embedder_open(cfg, &e, err), err);
    CHECK_STR(ingest_embedder_model(e), "m");
    ingest_embedder_free(e);
    CHECK(qr_config_set(cfg, "embed.backend", "word2vec", QR_CFG_SRC_CLI, err) != QR_OK);
    qr_config_free(cfg);
}

TEST(limits_from_config)
{
    char err[QR_ERR_LEN];
    qr_config *cfg = qr_config_new();
    CHECK(cfg != NULL);
    ingest_limits lim, def;
    ingest_limits_default(&def);
    ingest_limits_from_config(cfg, &lim);
    CHECK(lim.max_document_bytes == def.max_document_bytes && lim.timeout_ms == def.timeout_ms &&
          lim.memory_bytes == def.memory_bytes && lim.zip_max_bytes == def.zip_max_bytes &&
          lim.zip_max_ratio == def.zip_max_ratio && lim.reject_invalid_utf8 == def.reject_invalid_utf8);
    CHECK_OK(qr_config_set(cfg, "ingest.invalid_utf8", "reject", QR_CFG_SRC_CLI, err), err);
    CHECK_OK(qr_config_set(cfg, "ingest.extract_memory_mb", "100", QR_CFG_SRC_CLI, err), err);
    ingest_limits_from_config(cfg, &lim);
    CHECK(lim.reject_invalid_utf8);
    CHECK_INT(lim.memory_bytes, 100u << 20);
    ingest_chunk_opts o;
    ingest_chunk_opts_from_config(cfg, &o);
    CHECK_INT(o.max_tokens, 300);
    CHECK(fabs(o.overlap - 0.15) < 1e-12);
    CHECK(qr_config_set(cfg, "chunk.overlap", "0.7", QR_CFG_SRC_CLI, err) != QR_OK);
    CHECK_OK(qr_config_set(cfg, "chunk.overlap", "0", QR_CFG_SRC_CLI, err), err);
    qr_config_free(cfg);
}

/* ---- JSON lines ---------------------------------------------------------------------------- */

/* NULL when ingest_jsonl_scan and json_loadb(JSON_REJECT_DUPLICATES) agree on line: the scanner
 * declined it, or jansson read the same fields from it; otherwise what differs. *accepted tells
 * whether the scanner read it. */
static const char *jsonl_disagreement(const char *line, size_t len, bool *accepted)
{
    ingest_jsonl_line l;
    char *block = NULL;
    *accepted = ingest_jsonl_scan(line, len, &l, &block);
    if (!*accepted)
        return block ? "a block without a result" : NULL;
    const char *why = NULL;
    json_error_t jerr;
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(obj)) {
        why = "read a line jansson refuses";
        goto out;
    }
    const char *names[] = {"_id", "text", "title", "url", "uri"};
    const char *mine[] = {l.id, l.text, l.title, l.url, l.uri};
    for (size_t i = 0; i < 5; i++) {
        json_t *v = json_object_get(obj, names[i]);
        if (!v != !mine[i] || (v && (!json_is_string(v) || strcmp(json_string_value(v), mine[i]) != 0))) {
            why = names[i];
            goto out;
        }
    }
    if (l.text && json_string_length(json_object_get(obj, "text")) != l.text_len) {
        why = "text length";
        goto out;
    }
    json_t *acl = json_object_get(obj, "acl");
    if (!acl != !l.has_acl || (acl && json_array_size(acl) != l.nacl)) {
        why = "acl";
        goto out;
    }
    const char *p = l.acl;
    for (size_t i = 0; acl && i < l.nacl; i++, p += strlen(p) + 1) {
        if (!json_is_string(json_array_get(acl, i)) ||
            strcmp(json_string_value(json_array_get(acl, i)), p) != 0) {
            why = "an acl principal";
            goto out;
        }
    }
    json_t *meta = json_object_get(obj, "metadata");
    if (!meta != !l.metadata_empty || (meta && (!json_is_object(meta) || json_object_size(meta) != 0)))
        why = "metadata";
out:
    json_decref(obj);
    free(block);
    return why;
}

TEST(jsonl_scan_reads_common_lines_as_jansson_does)
{
    static const char *const lines[] = {
        "{\"_id\": \"1\", \"title\": \"T\", \"text\": \"hello world\"}",
        "{\"_id\":\"a\\u00e9\\ud83d\\ude00\\u6771\",\"text\":\"x\\n\\t\\\"\\\\\\/"
        "y\\b\\f\\r\",\"title\":\"\"}",
        "{\"_id\":\"d\",\"text\":\"t\",\"acl\":[\"group:eng\", \"user:b\\u00f6b\"],\"url\":\"http://x/1\"}",
        "{\"_id\":\"d\",\"text\":\"t\",\"acl\":[ ],\"uri\":\"file:///a\"}",
        "{\"_id\":\"d\",\"text\":\"t\",\"metadata\": { }, \"lang\": \"en\"}",
        " \t{ \"text\" : \"caf\xC3\xA9 \xE6\x9D\xB1 \xF0\x9F\x99\x82 \x7F\" , \"_id\" : \"\xF4\x8F\xBF\xBF\" "
        "} \r",
        "{}",
        "{\"_id\":\"only\"}",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        bool accepted = false;
        const char *why = jsonl_disagreement(lines[i], strlen(lines[i]), &accepted);
        CHECK_MSG(accepted && !why, "line %zu: %s", i, why ? why : "declined");
    }
    /* what the scanner leaves to jansson: errors, other value types, repeated or escaped keys */
    static const char *const declined[] = {
        "{\"_id\":\"a\",\"_id\":\"b\",\"text\":\"t\"}",
        "{\"_id\":\"a\",\"text\":\"t\\u0000\"}",
        "{\"_id\":\"a\",\"text\":\"\\ud800\"}",
        "{\"_id\":\"a\",\"text\":\"\\udc00\"}",
        "{\"_id\":\"a\",\"text\":\"\\ud800\\u0041\"}",
        "{\"_id\":\"a\",\"text\":\"\\x\"}",
        "{\"_id\":\"a\",\"text\":\"\\u12\"}",
        "{\"_id\":\"a\",\"text\":\"t\"} x",
        "{\"_id\":\"a\",\"text\":\"t\",}",
        "{\"_id\":1,\"text\":\"t\"}",
        "{\"_id\":\"a\",\"text\":\"t\",\"metadata\":{\"k\":\"v\"}}",
        "{\"_id\":\"a\",\"text\":\"t\",\"acl\":\"public\"}",
        "{\"_id\":\"a\",\"text\":\"t\",\"acl\":[\"a\",1]}",
        "{\"\\u005fid\":\"a\",\"text\":\"t\"}",
        "{\"_id\":\"a\",\"text\":\"\xC3\"}",
        "{\"_id\":\"a\",\"text\":\"\xED\xA0\x80\"}",
        "{\"_id\":\"a\",\"text\":\"tab\there\"}",
        "[\"_id\"]",
        "{\"_id\":\"a\",\"text\":\"t\"",
        "",
    };
    for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++) {
        ingest_jsonl_line l;
        char *block = (char *)1;
        CHECK_MSG(!ingest_jsonl_scan(declined[i], strlen(declined[i]), &l, &block) && !block, "line %zu read",
                  i);
    }
}

TEST(jsonl_scan_agrees_with_jansson_on_mutated_lines)
{
    static const char *const seeds[] = {
        "{\"_id\": \"d1\", \"title\": \"T\\u00e9\", \"text\": \"a \\\"b\\\" \\ud83d\\ude00 caf\xC3\xA9\"}",
        "{\"_id\":\"d2\",\"text\":\"t\",\"acl\":[\"group:eng\",\"user:b\"],\"metadata\":{}}",
    };
    static const unsigned char bytes[] = {'"',  '\\', '{',  '}',  '[',  ']',  ',',  ':',  ' ',  'u',  '0',
                                          'd',  'D',  '8',  'n',  0x00, 0x1F, 0x7F, 0x80, 0xA9, 0xBF, 0xC3,
                                          0xE0, 0xED, 0xF0, 0xF4, 0xFF, 'x',  '1',  '\t', '/'};
    unsigned seed = 4242;
    size_t accepted_mutants = 0;
    for (int round = 0; round < 20000; round++) {
        const char *base = seeds[round % 2];
        char line[256];
        size_t n = strlen(base);
        memcpy(line, base, n);
        for (int m = 1 + rand_r(&seed) % 3; m > 0; m--) {
            size_t at = (size_t)rand_r(&seed) % (n + 1);
            unsigned char b = bytes[rand_r(&seed) % sizeof(bytes)];
            int op = rand_r(&seed) % 3;
            if (op == 0 && at < n) {
                line[at] = (char)b;
            } else if (op == 1 && n + 1 < sizeof(line)) {
                memmove(line + at + 1, line + at, n - at);
                line[at] = (char)b;
                n++;
            } else if (at < n) {
                memmove(line + at, line + at + 1, n - at - 1);
                n--;
            }
        }
        bool accepted = false;
        const char *why = jsonl_disagreement(line, n, &accepted);
        CHECK_MSG(!why, "round %d: %s on '%.*s'", round, why, (int)n, line);
        accepted_mutants += accepted;
    }
    CHECK(accepted_mutants > 100); /* many mutants are still good lines: the comparison ran */
}
