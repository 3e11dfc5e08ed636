/*
 * Citations in a drafted answer. Models cite the numbered sources as [1], [1, 3], [1-3] or
 * [1][3]; they also invent numbers that were never sent ([7] of three sources, [0], [-1],
 * [1000]), which a reader would follow to nothing. This file finds the citation groups, keeps the
 * numbers that name a source that was sent, removes the rest from the text, and lists the sources
 * cited in order of first appearance.
 *
 * The same cleaning runs on a whole answer (infer_cite_process) and on an answer as it streams
 * (infer_cite_stream): the stream passes on at once whatever the rest of the answer cannot change
 * and holds back the few bytes it can (an unfinished "[12", the space before it), so the streamed
 * text is exactly the cleaned answer, whatever the pieces it arrives in.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference/inference_int.h"

#define GROUP_MAX    64  /* numbers in one bracket, ranges expanded; more is not a citation */
#define GROUP_BYTES  256 /* bytes of one bracket; longer is not a citation */
#define DIGITS_MAX   9   /* a longer run of digits is a number of another kind, not a citation */
#define YEAR_MIN     1800
#define YEAR_MAX     2199
#define NOT_A_SOURCE (-1) /* a number no source can have: signed, or more than INFER_CITE_MAX */

typedef struct {
    size_t end; /* index just past ']' */
    int numbers[GROUP_MAX];
    size_t count;
} cite_group;

typedef enum { GROUP_NO, GROUP_YES, GROUP_MORE } group_parse;

static size_t skip_blanks(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t'))
        i++;
    return i;
}

/* Reads an optionally signed number at s[*i]: its value (NOT_A_SOURCE when signed or too
 * large), or GROUP_NO/GROUP_MORE when there is none or the text ends inside it. *year says
 * whether it could be a year (four digits, YEAR_MIN..YEAR_MAX, no sign). */
static group_parse read_number(const char *s, size_t len, size_t *i, int *value, bool *year)
{
    bool sign = *i < len && (s[*i] == '-' || s[*i] == '+');
    if (sign)
        ++*i;
    long n = 0;
    size_t digits = 0;
    while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
        if (++digits > DIGITS_MAX)
            return GROUP_NO;
        n = n * 10 + (s[*i] - '0');
        ++*i;
    }
    if (*i == len)
        return GROUP_MORE;
    if (digits == 0)
        return GROUP_NO;
    *value = sign || n > INFER_CITE_MAX ? NOT_A_SOURCE : (int)n;
    *year = !sign && digits == 4 && n >= YEAR_MIN && n <= YEAR_MAX;
    return GROUP_YES;
}

/* Parses a citation group starting at s[i] == '[' within s[0..len). GROUP_MORE when the text
 * ends before the group is decided. A lone four-digit number that can be a year ("[2023]") is
 * not a citation: it stays text. */
static group_parse parse_group(const char *s, size_t len, size_t i, cite_group *g)
{
    size_t start = i;
    g->count = 0;
    bool year = false;
    i = skip_blanks(s, len, i + 1);
    for (;;) {
        /* blanks cannot make a group of any length: the stream holds at most this much back */
        if (i - start > GROUP_BYTES)
            return GROUP_NO;
        int first = 0, last = 0;
        bool could_be_year = false, unused;
        group_parse r = read_number(s, len, &i, &first, &could_be_year);
        if (r != GROUP_YES)
            return r;
        year = g->count == 0 && could_be_year;
        last = first;
        i = skip_blanks(s, len, i);
        if (i - start > GROUP_BYTES)
            return GROUP_NO;
        if (i < len && s[i] == '-') {
            /* a range n-m of plain numbers */
            if (first < 1 || (i + 1 < len && (s[i + 1] == '-' || s[i + 1] == '+')))
                return GROUP_NO;
            i = skip_blanks(s, len, i + 1);
            if (i - start > GROUP_BYTES)
                return GROUP_NO;
            if ((r = read_number(s, len, &i, &last, &unused)) != GROUP_YES)
                return r;
            if (last != NOT_A_SOURCE && last < first)
                return GROUP_NO;
            if (last == NOT_A_SOURCE || last - first >= GROUP_MAX)
                last = first + GROUP_MAX; /* more than a group holds: not a citation */
            year = false;
            i = skip_blanks(s, len, i);
            if (i - start > GROUP_BYTES)
                return GROUP_NO;
        }
        for (int n = first;; n++) {
            if (g->count == GROUP_MAX)
                return GROUP_NO;
            g->numbers[g->count++] = n;
            if (n == NOT_A_SOURCE || n >= last)
                break;
        }
        if (i == len)
            return GROUP_MORE;
        if (s[i] == ']') {
            g->end = i + 1;
            return year && g->count == 1 ? GROUP_NO : GROUP_YES;
        }
        if (s[i] != ',' && s[i] != ';')
            return GROUP_NO;
        i = skip_blanks(s, len, i + 1);
    }
}

static bool ends_word(char c)
{
    return c == '\0' || c == ' ' || c == '\t' || c == '\n' || c == '.' || c == ',' || c == ';' || c == ':' ||
           c == '!' || c == '?' || c == ')';
}

/* The cleaned text as it is written: grows as needed, and the last byte can be taken back (the
 * space before a dropped marker). A failed growth is sticky. */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} cite_out;

static void out_reserve(cite_out *o, size_t more)
{
    if (o->oom || o->len + more + 1 <= o->cap)
        return;
    size_t cap = o->cap ? o->cap : 256;
    while (cap < o->len + more + 1)
        cap *= 2;
    char *p = realloc(o->p, cap);
    if (!p) {
        o->oom = true;
        return;
    }
    o->p = p;
    o->cap = cap;
}

static void out_put(cite_out *o, const char *s, size_t n)
{
    out_reserve(o, n);
    if (o->oom)
        return;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static bool out_ends_with_space(const cite_out *o)
{
    return !o->oom && o->len > 0 && o->p[o->len - 1] == ' ';
}

/* Where the numbers found go: the batch call lists them, the stream only cleans. */
typedef struct {
    bool seen[INFER_CITE_MAX + 1];
    int *list; /* INFER_CITE_MAX entries, or NULL */
    size_t nlist;
} cite_list;

/* Cleans text[0..len) onto out. Unless final, stops before anything that text after len could
 * change, and returns how much was consumed. */
static size_t clean_text(const char *text, size_t len, bool final, int max_valid, cite_out *out,
                         cite_list *cl)
{
    size_t i = 0;
    cite_group g;
    g.end = g.count = 0;
    /* where in text the space that ends out came from, while only dropped markers followed it
     * (SIZE_MAX: out does not end with such a space) */
    size_t space_at = SIZE_MAX;
    while (i < len) {
        group_parse r = text[i] == '[' ? parse_group(text, len, i, &g) : GROUP_NO;
        /* "the answer [7]" drops the space too when a word ends after it: wait for that byte */
        if (r == GROUP_YES && g.end == len && !final)
            r = GROUP_MORE;
        if (r == GROUP_MORE && final)
            r = GROUP_NO; /* the text ended inside it: not a citation */
        if (r == GROUP_MORE || (text[i] == ' ' && i + 1 == len && !final)) {
            /* the space before an undecided group (and any dropped markers between) may yet go
             * with it: hold them back too */
            if (r == GROUP_MORE && space_at != SIZE_MAX && out_ends_with_space(out)) {
                out->p[--out->len] = '\0';
                i = space_at;
            }
            return i;
        }
        if (r == GROUP_NO) {
            space_at = text[i] == ' ' ? i : SIZE_MAX;
            out_put(out, text + i++, 1);
            continue;
        }
        size_t valid = 0;
        for (size_t k = 0; k < g.count; k++)
            if (g.numbers[k] >= 1 && g.numbers[k] <= max_valid)
                valid++;
        if (valid > 0)
            space_at = SIZE_MAX;
        if (valid == g.count) {
            out_put(out, text + i, g.end - i);
        } else if (valid > 0) {
            out_put(out, "[", 1);
            bool first = true;
            for (size_t k = 0; k < g.count; k++) {
                int n = g.numbers[k];
                if (n < 1 || n > max_valid)
                    continue;
                char num[8];
                int w = snprintf(num, sizeof(num), "%s%d", first ? "" : ", ", n);
                out_put(out, num, (size_t)w);
                first = false;
            }
            out_put(out, "]", 1);
        } else if (out_ends_with_space(out) && ends_word(g.end < len ? text[g.end] : '\0')) {
            /* "the answer [7]." reads "the answer." once the dangling marker is gone */
            out->len--;
            out->p[out->len] = '\0';
            space_at = SIZE_MAX;
        }
        for (size_t k = 0; cl && k < g.count; k++) {
            int n = g.numbers[k];
            if (n >= 1 && n <= max_valid && !cl->seen[n]) {
                cl->seen[n] = true;
                if (cl->list)
                    cl->list[cl->nlist++] = n;
            }
        }
        i = g.end;
    }
    return i;
}

qr_status infer_cite_process(const char *text, int max_valid, char **clean, int **cited, size_t *ncited,
                             char *err)
{
    *clean = NULL;
    *cited = NULL;
    *ncited = 0;
    if (!text)
        return qr_fail(err, QR_EINVAL, "no text to read citations from");
    if (max_valid > INFER_CITE_MAX)
        max_valid = INFER_CITE_MAX;
    size_t len = strlen(text);
    cite_out out = {0};
    out_reserve(&out, len);
    if (!out.oom)
        out.p[0] = '\0';
    cite_list *cl = calloc(1, sizeof(*cl));
    int *list = malloc(sizeof(int) * (INFER_CITE_MAX + 1));
    if (cl && list) {
        cl->list = list;
        clean_text(text, len, true, max_valid, &out, cl);
    }
    if (out.oom || !cl || !list) {
        free(out.p);
        free(cl);
        free(list);
        return qr_fail(err, QR_ENOMEM, "out of memory reading citations");
    }
    *clean = out.p;
    if (cl->nlist) {
        *cited = list;
        *ncited = cl->nlist;
    } else {
        free(list);
    }
    free(cl);
    return QR_OK;
}

void infer_cite_stream_init(infer_cite_stream *cs, int max_valid)
{
    cs->max_valid = max_valid > INFER_CITE_MAX ? INFER_CITE_MAX : max_valid;
    qr_buf_init(&cs->pending, SIZE_MAX / 8);
}

void infer_cite_stream_release(infer_cite_stream *cs)
{
    qr_buf_release(&cs->pending);
}

qr_status infer_cite_stream_feed(infer_cite_stream *cs, const char *text, size_t len, bool final, qr_buf *out,
                                 char *err)
{
    if (len && qr_buf_append(&cs->pending, text, len))
        return qr_fail(err, QR_ENOMEM, "out of memory cleaning citations");
    size_t plen = qr_buf_len(&cs->pending);
    cite_out clean = {0};
    size_t used = clean_text(qr_buf_str(&cs->pending), plen, final, cs->max_valid, &clean, NULL);
    qr_status st = clean.oom ? QR_ENOMEM : clean.len ? qr_buf_append(out, clean.p, clean.len) : QR_OK;
    free(clean.p);
    if (st)
        return qr_fail(err, QR_ENOMEM, "out of memory cleaning citations");
    /* what was used is out; the undecided rest waits for the next piece */
    qr_buf rest;
    qr_buf_init(&rest, SIZE_MAX / 8);
    if (qr_buf_append(&rest, qr_buf_str(&cs->pending) + used, plen - used)) {
        qr_buf_release(&rest);
        return qr_fail(err, QR_ENOMEM, "out of memory cleaning citations");
    }
    qr_buf_release(&cs->pending);
    cs->pending = rest;
    return QR_OK;
}
