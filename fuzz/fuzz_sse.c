/*
 * Fuzzes the reading of a streamed chat answer: the server-sent-event parser (inference/sse.c),
 * the chat.completion.chunk events on top of it ([DONE], choices[0].delta.content, finish_reason,
 * error events; infer_stream_read in inference/client.c, no transfer) and the citation filter the
 * streamed text goes through (infer_cite_stream). The stream arrives in pieces cut where the input
 * says, so that the buffering across libcurl's write callbacks is exercised.
 *
 * Input: a header, then the stream.
 *   byte 0: cut count (low 3 bits)
 *   byte 1: the parser's cap (low 4 bits; 0: the client's 1 MiB) and the event the callback
 *           refuses (high 4 bits, 1-based; 0: none)
 *   byte 2: the number of sources the citation filter keeps (mod 12)
 *   then two bytes per cut, little-endian, taken modulo the stream's length + 1 (sorted; equal
 *   cuts give empty writes)
 *
 * Invariants:
 *   - the parser fed in pieces hands out the same events and ends with the same status as a
 *     reference parser written here from the WHATWG rules, run over the whole stream;
 *   - every event's type is at most 256 bytes with no line break, its data NUL-terminated, without CR
 *     and within the cap; the parser's buffers stay within the cap after every write (bounded
 *     memory); a failure explains itself, and a refused event is the last one handed out;
 *   - the chunk reader gives the same status, message and completion fed in pieces as in one
 *     write; on success the answer is the concatenation of the deltas (each non-empty, valid
 *     UTF-8) and of the events' delta.content up to [DONE], and the stream had [DONE] or a
 *     finish reason; on failure the completion is empty;
 *   - the deltas through the citation filter, piece by piece, give infer_cite_process's text.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference/inference_int.h"

#define FUZZ_CHECK(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#define HEADER_BYTES   3
#define MAX_CUTS       7
#define CLIENT_CAP     (1u << 20) /* client.c's EVENT_MAX */
#define EVENT_NAME_MAX 256        /* sse.c's SSE_EVENT_NAME_MAX */
#define REFUSED        QR_ECANCELED

/* Events as the parser hands them out: "type\0len:data\0" records. */
typedef struct {
    qr_buf log;
    size_t count;
    size_t cap;
    unsigned refuse; /* 1-based event to refuse, 0 for none */
    bool refused;
} event_log;

static qr_status log_event(event_log *l, const char *type, const char *data, size_t len, char *err)
{
    FUZZ_CHECK(!l->refused); /* a refusal stops the parser */
    FUZZ_CHECK(len <= l->cap);
    l->count++;
    qr_buf_puts(&l->log, type);
    qr_buf_putc(&l->log, '\0');
    qr_buf_printf(&l->log, "%zu:", len);
    qr_buf_append(&l->log, data, len);
    qr_buf_putc(&l->log, '\0');
    if (l->refuse && l->count == l->refuse) {
        l->refused = true;
        return qr_fail(err, REFUSED, "refused by the fuzzer");
    }
    return QR_OK;
}

static qr_status on_event(void *user, const char *type, const char *data, size_t len, char *err)
{
    size_t tlen = strlen(type);
    /* empty only when an event: field's value starts with a NUL, which ends the C string */
    FUZZ_CHECK(tlen <= EVENT_NAME_MAX);
    FUZZ_CHECK(!memchr(type, '\n', tlen) && !memchr(type, '\r', tlen));
    FUZZ_CHECK(data[len] == '\0');
    FUZZ_CHECK(!memchr(data, '\r', len));
    return log_event(user, type, data, len, err);
}

/* The parser's rules over a whole stream, one line at a time, independently of sse.c. */
static qr_status reference_parse(const char *s, size_t n, event_log *l)
{
    qr_buf data, event;
    qr_buf_init(&data, SIZE_MAX / 8);
    qr_buf_init(&event, SIZE_MAX / 8);
    bool have_data = false;
    char err[QR_ERR_LEN];
    qr_status st = QR_OK;
    size_t i = n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    for (;;) {
        size_t j = i;
        while (j < n && s[j] != '\r' && s[j] != '\n')
            j++;
        const char *line = s + i;
        size_t len = j - i;
        if (len > l->cap) {
            st = QR_ELIMIT; /* even an unfinished last line may not outgrow the cap */
            break;
        }
        if (j == n)
            break; /* an unfinished line is never read */
        i = j + 1;
        if (s[j] == '\r' && i < n && s[i] == '\n')
            i++;
        if (len == 0) {
            if (have_data) {
                st = log_event(l, qr_buf_len(&event) ? qr_buf_str(&event) : "message", qr_buf_str(&data),
                               qr_buf_len(&data), err);
                if (st)
                    break;
            }
            qr_buf_reset(&data);
            qr_buf_reset(&event);
            have_data = false;
            continue;
        }
        if (line[0] == ':')
            continue;
        const char *colon = memchr(line, ':', len);
        size_t name_len = colon ? (size_t)(colon - line) : len;
        const char *value = colon ? colon + 1 : line + len;
        size_t value_len = len - (size_t)(value - line);
        if (value_len && *value == ' ') {
            value++;
            value_len--;
        }
        if (name_len == 4 && memcmp(line, "data", 4) == 0) {
            if ((have_data ? qr_buf_len(&data) + 1 : 0) + value_len > l->cap) {
                st = QR_ELIMIT;
                break;
            }
            if (have_data)
                qr_buf_putc(&data, '\n');
            qr_buf_append(&data, value, value_len);
            have_data = true;
        } else if (name_len == 5 && memcmp(line, "event", 5) == 0) {
            if (value_len > EVENT_NAME_MAX) {
                st = QR_ELIMIT;
                break;
            }
            qr_buf_reset(&event);
            qr_buf_append(&event, value, value_len);
        }
    }
    qr_buf_release(&data);
    qr_buf_release(&event);
    return st;
}

static void fuzz_parser(const char *const *pieces, const size_t *lens, size_t npieces, const char *s,
                        size_t n, size_t cap, unsigned refuse)
{
    event_log got = {.cap = cap, .refuse = refuse}, want = {.cap = cap, .refuse = refuse};
    qr_buf_init(&got.log, SIZE_MAX / 8);
    qr_buf_init(&want.log, SIZE_MAX / 8);
    infer_sse p;
    infer_sse_init(&p, cap);
    char err[QR_ERR_LEN] = "";
    qr_status st = QR_OK;
    for (size_t i = 0; i < npieces && !st; i++) {
        st = infer_sse_feed(&p, pieces[i], lens[i], on_event, &got, err);
        /* bounded memory: what the parser holds between writes stays within its caps (read through
         * qr_buf's accessors; the fields are otherwise private to sse.c) */
        FUZZ_CHECK(qr_buf_len(&p.line) <= cap && qr_buf_len(&p.data) <= cap);
        FUZZ_CHECK(qr_buf_len(&p.event) <= EVENT_NAME_MAX);
    }
    infer_sse_release(&p);
    qr_status want_st = reference_parse(s, n, &want);
    FUZZ_CHECK(st == want_st);
    FUZZ_CHECK(!st || err[0] != '\0');
    FUZZ_CHECK(st == REFUSED ? got.refused : !got.refused);
    FUZZ_CHECK(got.count == want.count);
    FUZZ_CHECK(qr_buf_len(&got.log) == qr_buf_len(&want.log) &&
               memcmp(qr_buf_str(&got.log), qr_buf_str(&want.log), qr_buf_len(&got.log)) == 0);
    qr_buf_release(&got.log);
    qr_buf_release(&want.log);
}

/* The deltas infer_stream_read passed on. */
typedef struct {
    qr_buf text;
    size_t count;
    infer_cite_stream cites; /* NULL-free deltas, cleaned as they come (run with cuts only) */
    qr_buf cited;
    bool cite;
} delta_log;

static int on_delta(const infer_event *ev, void *user)
{
    delta_log *d = user;
    FUZZ_CHECK(ev->type == INFER_EVENT_DELTA);
    FUZZ_CHECK(ev->len > 0 && qr_utf8_valid(ev->text, ev->len));
    d->count++;
    FUZZ_CHECK(qr_buf_append(&d->text, ev->text, ev->len) == QR_OK);
    if (d->cite) {
        char err[QR_ERR_LEN];
        FUZZ_CHECK(infer_cite_stream_feed(&d->cites, ev->text, ev->len, false, &d->cited, err) == QR_OK);
    }
    return 0;
}

static void delta_log_init(delta_log *d, bool cite, int max_valid)
{
    memset(d, 0, sizeof(*d));
    qr_buf_init(&d->text, SIZE_MAX / 8);
    qr_buf_init(&d->cited, SIZE_MAX / 8);
    infer_cite_stream_init(&d->cites, max_valid);
    d->cite = cite;
}

static void delta_log_release(delta_log *d)
{
    qr_buf_release(&d->text);
    qr_buf_release(&d->cited);
    infer_cite_stream_release(&d->cites);
}

static bool same_string(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* What the answer must be by the events' JSON: delta.content of choices[0] until [DONE]. Also
 * tells whether [DONE] came. */
static void expected_text(const char *s, size_t n, qr_buf *out, bool *done)
{
    event_log l = {.cap = CLIENT_CAP};
    qr_buf_init(&l.log, SIZE_MAX / 8);
    *done = false;
    FUZZ_CHECK(reference_parse(s, n, &l) == QR_OK);
    const char *p = qr_buf_str(&l.log), *end = p + qr_buf_len(&l.log);
    while (p < end && !*done) {
        p += strlen(p) + 1; /* the type */
        char *colon;
        size_t len = strtoul(p, &colon, 10);
        const char *data = colon + 1;
        p = data + len + 1;
        if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
            *done = true;
            break;
        }
        json_t *root = json_loadb(data, len, 0, NULL);
        json_t *content = json_object_get(
            json_object_get(json_array_get(json_object_get(root, "choices"), 0), "delta"), "content");
        if (json_is_string(content))
            qr_buf_append(out, json_string_value(content), json_string_length(content));
        json_decref(root);
    }
    qr_buf_release(&l.log);
}

static void fuzz_reader(const char *const *pieces, const size_t *lens, size_t npieces, const char *s,
                        size_t n, int max_valid)
{
    delta_log cut, whole;
    delta_log_init(&cut, true, max_valid);
    delta_log_init(&whole, false, max_valid);
    infer_completion a, b;
    char err_a[QR_ERR_LEN] = "", err_b[QR_ERR_LEN] = "";
    qr_status st_a = infer_stream_read(pieces, lens, npieces, on_delta, &cut, &a, err_a);
    const char *one[1] = {s};
    size_t one_len[1] = {n};
    qr_status st_b = infer_stream_read(one, one_len, 1, on_delta, &whole, &b, err_b);

    /* the pieces make no difference */
    FUZZ_CHECK(st_a == st_b);
    FUZZ_CHECK(strcmp(err_a, err_b) == 0);
    FUZZ_CHECK(cut.count == whole.count);
    FUZZ_CHECK(qr_buf_len(&cut.text) == qr_buf_len(&whole.text) &&
               memcmp(qr_buf_str(&cut.text), qr_buf_str(&whole.text), qr_buf_len(&cut.text)) == 0);
    FUZZ_CHECK(same_string(a.content, b.content) && same_string(a.finish_reason, b.finish_reason) &&
               same_string(a.model, b.model));
    FUZZ_CHECK(a.prompt_tokens == b.prompt_tokens && a.completion_tokens == b.completion_tokens);

    if (st_a) {
        FUZZ_CHECK(err_a[0] != '\0');
        FUZZ_CHECK(st_a == QR_EIO || st_a == QR_ELIMIT || st_a == QR_ENOMEM);
        FUZZ_CHECK(!a.content && !a.finish_reason && !a.model);
    } else {
        FUZZ_CHECK(a.content && strlen(a.content) == qr_buf_len(&cut.text) &&
                   memcmp(a.content, qr_buf_str(&cut.text), qr_buf_len(&cut.text)) == 0);
        qr_buf want;
        qr_buf_init(&want, SIZE_MAX / 8);
        bool done;
        expected_text(s, n, &want, &done);
        FUZZ_CHECK(done || a.finish_reason);
        FUZZ_CHECK(strcmp(a.content, qr_buf_str(&want)) == 0);
        qr_buf_release(&want);
    }

    /* the citation filter, fed the deltas as they came, cleans as the whole-text pass does */
    char err[QR_ERR_LEN];
    FUZZ_CHECK(infer_cite_stream_feed(&cut.cites, NULL, 0, true, &cut.cited, err) == QR_OK);
    char *clean = NULL;
    int *cited = NULL;
    size_t ncited = 0;
    FUZZ_CHECK(infer_cite_process(qr_buf_str(&cut.text), max_valid, &clean, &cited, &ncited, err) == QR_OK);
    FUZZ_CHECK(strcmp(clean, qr_buf_str(&cut.cited)) == 0);
    for (size_t i = 0; i < ncited; i++)
        FUZZ_CHECK(cited[i] >= 1 && cited[i] <= max_valid);
    free(clean);
    free(cited);

    infer_completion_release(&a);
    infer_completion_release(&b);
    delta_log_release(&cut);
    delta_log_release(&whole);
}

static int by_value(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER_BYTES)
        return 0;
    size_t ncuts = data[0] & 7;
    unsigned capsel = data[1] & 15, refuse = data[1] >> 4;
    int max_valid = data[2] % 12;
    if (size < HEADER_BYTES + 2 * ncuts)
        return 0;
    const char *s = (const char *)data + HEADER_BYTES + 2 * ncuts;
    size_t n = size - HEADER_BYTES - 2 * ncuts;
    size_t cuts[MAX_CUTS + 2];
    cuts[0] = 0;
    for (size_t i = 0; i < ncuts; i++)
        cuts[i + 1] = (data[HEADER_BYTES + 2 * i] | (size_t)data[HEADER_BYTES + 2 * i + 1] << 8) % (n + 1);
    qsort(cuts + 1, ncuts, sizeof(size_t), by_value);
    cuts[ncuts + 1] = n;
    const char *pieces[MAX_CUTS + 1];
    size_t lens[MAX_CUTS + 1];
    for (size_t i = 0; i <= ncuts; i++) {
        pieces[i] = s + cuts[i];
        lens[i] = cuts[i + 1] - cuts[i];
    }

    size_t cap = capsel == 0 ? CLIENT_CAP : (size_t)capsel * capsel * 4;
    fuzz_parser(pieces, lens, ncuts + 1, s, n, cap, refuse);
    fuzz_reader(pieces, lens, ncuts + 1, s, n, max_valid);
    return 0;
}
