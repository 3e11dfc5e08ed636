/*
 * PDF through poppler's pdftotext, run as a separate program. Why a program and not a library:
 * poppler is GPL, which quarry (MIT) may not link, while running a GPL program is fine; and a
 * separate process is what the sandbox wants anyway (a PDF parser is the largest attack surface
 * in the pipeline). The MIT/BSD-licensed alternatives either extract no text (qpdf) or are
 * AGPL (MuPDF). pdftotext reads the document from a memory file on its stdin (no temporary file
 * to leak when it is killed), runs under an absolute address-space limit, and writes
 * `-htmlmeta` output: the document's title, HTML-escaped, in <title>, and the text, not escaped,
 * inside <pre>. Pages end with a form feed, which the normaliser turns into a paragraph break.
 * PDFs carry no reliable heading structure, so a PDF is one section.
 *
 * This runs inside the sandbox child; the parent's deadline kills pdftotext with it (same
 * process group).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ingest/ingest_int.h"

#define PDFTOTEXT "pdftotext"

/* Decodes the five entities pdftotext writes (and numeric ones) into out. */
static qr_status html_unescape(const char *s, size_t n, qr_buf *out)
{
    static const struct {
        const char *name;
        char c;
    } ents[] = {{"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&quot;", '"'}, {"&apos;", '\''}};
    for (size_t i = 0; i < n;) {
        if (s[i] == '&') {
            bool done = false;
            for (size_t e = 0; e < sizeof(ents) / sizeof(ents[0]) && !done; e++) {
                size_t k = strlen(ents[e].name);
                if (n - i >= k && memcmp(s + i, ents[e].name, k) == 0) {
                    if (qr_buf_putc(out, ents[e].c))
                        return QR_ELIMIT;
                    i += k;
                    done = true;
                }
            }
            if (!done && n - i > 3 && s[i + 1] == '#') {
                size_t j = i + 2;
                unsigned long cp = 0;
                bool hex = j < n && (s[j] == 'x' || s[j] == 'X');
                j += hex;
                size_t digits = 0;
                while (j < n && digits < 8) {
                    char c = s[j];
                    int d = c >= '0' && c <= '9'          ? c - '0'
                            : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10
                            : hex && c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                          : -1;
                    if (d < 0)
                        break;
                    cp = cp * (hex ? 16 : 10) + (unsigned long)d;
                    j++;
                    digits++;
                }
                if (digits && j < n && s[j] == ';' && cp > 0 && cp <= 0x10FFFF &&
                    (cp < 0xD800 || cp > 0xDFFF)) {
                    char u[4];
                    size_t k;
                    if (cp < 0x80)
                        u[0] = (char)cp, k = 1;
                    else if (cp < 0x800)
                        u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), k = 2;
                    else if (cp < 0x10000)
                        u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
                        u[2] = (char)(0x80 | (cp & 0x3F)), k = 3;
                    else
                        u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
                        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), k = 4;
                    if (qr_buf_append(out, u, k))
                        return QR_ELIMIT;
                    i = j + 1;
                    done = true;
                }
            }
            if (done)
                continue;
        }
        if (qr_buf_putc(out, s[i]))
            return QR_ELIMIT;
        i++;
    }
    return QR_OK;
}

static const char *find(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle));
}

static const char *find_last(const char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    const char *last = NULL;
    for (const char *p = hay; (p = memmem(p, n - (size_t)(p - hay), needle, k)) != NULL; p += k)
        last = p;
    return last;
}

qr_status extract_pdftotext_output(const char *out, size_t len, doc_builder *b, char *err)
{
    const char *head_end = find(out, len, "</head>");
    const char *body = head_end ? head_end : out;
    if (head_end) {
        const char *t = find(out, (size_t)(head_end - out), "<title>");
        const char *te = t ? find(t, (size_t)(head_end - t), "</title>") : NULL;
        if (t && te) {
            qr_buf title;
            qr_buf_init(&title, 64 * 1024);
            t += 7;
            qr_status st = html_unescape(t, (size_t)(te - t), &title);
            if (!st)
                st = builder_title(b, qr_buf_str(&title), qr_buf_len(&title), err);
            qr_buf_release(&title);
            if (st && st != QR_ELIMIT)
                return st;
        }
    }
    size_t rest = len - (size_t)(body - out);
    const char *pre = find(body, rest, "<pre>");
    const char *pre_end = find_last(body, rest, "</pre>");
    if (!pre || !pre_end || pre_end < pre + 5)
        return qr_fail(err, QR_EINTERNAL, "unexpected output from pdftotext (no <pre> text)");
    pre += 5;
    return builder_paragraph(b, pre, (size_t)(pre_end - pre), 0, err);
}

/* Reads all of fd into out (up to its cap). Returns false when the cap was reached. */
static bool read_all(int fd, qr_buf *out, int *read_errno)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n == 0)
            return true;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *read_errno = errno;
            return true;
        }
        if (qr_buf_append(out, buf, (size_t)n))
            return false;
    }
}

qr_status extract_pdf(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b, char *err)
{
    int mem = -1, fds[2] = {-1, -1};
    pid_t pid = -1;
    qr_buf out;
    qr_buf_init(&out, lim->max_document_bytes + 64 * 1024);
    qr_status st = QR_OK;

    mem = memfd_create("quarry-pdf", MFD_CLOEXEC);
    if (mem < 0) {
        st = qr_fail(err, QR_EIO, "cannot create a memory file for pdftotext: %s", strerror(errno));
        goto out;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(mem, bytes + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            st = qr_fail(err, QR_EIO, "cannot write the PDF to a memory file: %s", strerror(errno));
            goto out;
        }
        off += (size_t)w;
    }
    if (lseek(mem, 0, SEEK_SET) != 0 || pipe2(fds, O_CLOEXEC) != 0) {
        st = qr_fail(err, QR_EIO, "cannot set up pdftotext: %s", strerror(errno));
        goto out;
    }
    pid = fork();
    if (pid < 0) {
        st = qr_fail(err, QR_EIO, "cannot start pdftotext: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (dup2(mem, 0) < 0 || dup2(fds[1], 1) < 0 || devnull < 0 || dup2(devnull, 2) < 0)
            _exit(126);
        close_range(3, ~0u, 0);
        /* pdftotext starts small, so the limit here is absolute. */
        struct rlimit as = {(rlim_t)lim->memory_bytes, (rlim_t)lim->memory_bytes};
        if (lim->memory_bytes)
            setrlimit(RLIMIT_AS, &as);
        char *const argv[] = {PDFTOTEXT, "-q", "-enc", "UTF-8", "-htmlmeta", "-", "-", NULL};
        execvp(PDFTOTEXT, argv);
        _exit(127);
    }
    close(fds[1]);
    fds[1] = -1;
    int read_errno = 0;
    bool complete = read_all(fds[0], &out, &read_errno);
    if (!complete)
        kill(pid, SIGKILL);
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    pid = -1;
    if (!complete) {
        st = qr_fail(err, QR_ELIMIT, "the PDF's text exceeds %zu bytes (ingest.max_document_bytes)",
                     lim->max_document_bytes);
    } else if (WIFSIGNALED(ws)) {
        st = qr_fail(err, QR_EINVAL, "pdftotext crashed on this PDF (signal %d)", WTERMSIG(ws));
    } else if (WIFEXITED(ws) && WEXITSTATUS(ws) == 127) {
        st = qr_fail(err, QR_EUNAVAILABLE, "cannot run pdftotext: install poppler-utils to ingest PDF files");
    } else if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
        int code = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
        st = qr_fail(err, QR_EINVAL, "pdftotext cannot read this PDF (exit status %d: %s)", code,
                     code == 1   ? "damaged, password-protected or not a PDF"
                     : code == 3 ? "text extraction is not permitted"
                                 : "error");
    } else if (read_errno) {
        st = qr_fail(err, QR_EIO, "cannot read pdftotext's output: %s", strerror(read_errno));
    } else {
        st = extract_pdftotext_output(qr_buf_str(&out), qr_buf_len(&out), b, err);
    }
out:
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    if (mem >= 0)
        close(mem);
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    qr_buf_release(&out);
    return st;
}
