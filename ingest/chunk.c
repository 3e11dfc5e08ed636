/*
 * Chunking: splits normalised text into passages that fit a token budget, following the
 * document's structure. A section (from one heading to the next) is never mixed with another.
 * Inside a section the text is cut into segments, each the largest structural unit that fits
 * the budget: a paragraph if it fits, else its sentences, else a sentence's words, else a word's
 * characters. Segments are then packed greedily into chunks, and each chunk after the first of
 * a section begins with a few whole words from the end of the previous one (the overlap).
 *
 * The budget holds exactly, not roughly: a segment's token count is measured, and counts add
 * up across whitespace boundaries (and only over-estimate inside a word), so a packed chunk
 * never counts more than the sum of its parts. Segments are contiguous, the whitespace after a
 * unit belongs to it, and chunks run from one segment start to the next, so every byte of the
 * section lies in a chunk and each chunk is a plain [start, end) slice of the text.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest_int.h"

#define MIN_TOKENS 8
#define WORD_CHARS 6 /* characters per token inside a word */
#define LEVEL_PARA 1
#define LEVEL_SENT 2
#define LEVEL_WORD 3
#define LEVEL_CHAR 4

void ingest_chunk_opts_from_config(const qr_config *cfg, ingest_chunk_opts *out)
{
    out->max_tokens = (size_t)qr_config_settings(cfg)->chunk_max_tokens;
    out->overlap = qr_config_settings(cfg)->chunk_overlap;
}

/* ---- token counting ------------------------------------------------------------------------ */

typedef enum { CLS_SYMBOL = 0, CLS_SPACE, CLS_WORD } char_class;

/* Decodes the character at s (n > 0 bytes left); invalid bytes are one symbol each. */
static size_t next_char(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t k = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (k == 0 || k > n) {
        *cp = 0xFFFD;
        return 1;
    }
    uint32_t v = k == 1 ? c : k == 2 ? (c & 0x1Fu) : k == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3Fu);
    }
    *cp = v;
    return k;
}

static char_class classify(uint32_t c)
{
    if (c < 0x80) {
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v')
            return CLS_SPACE;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            return CLS_WORD;
        return CLS_SYMBOL;
    }
    /* Latin-1 punctuation and signs, general punctuation through dingbats and arrows, and
     * everything from CJK radicals up (ideographs, kana, hangul, emoji) count one each. */
    if ((c >= 0xA0 && c <= 0xBF) || c == 0xD7 || c == 0xF7 || (c >= 0x2000 && c <= 0x2BFF) || c >= 0x2E80)
        return c == 0xA0 || (c >= 0x2000 && c <= 0x200A) || c == 0x3000 ? CLS_SPACE : CLS_SYMBOL;
    return CLS_WORD;
}

/* Incremental counter: feeding characters one at a time gives the same total as counting the
 * whole span at once. */
typedef struct {
    size_t tokens;
    size_t run; /* characters in the current word */
} tok_counter;

static void count_char(tok_counter *c, char_class cls)
{
    if (cls == CLS_WORD) {
        if (c->run % WORD_CHARS == 0)
            c->tokens++;
        c->run++;
    } else {
        c->run = 0;
        if (cls == CLS_SYMBOL)
            c->tokens++;
    }
}

/* ASCII classes by table: counting runs over every byte of a document several times. */
static const unsigned char ascii_class[128] = {
    /* everything else is CLS_SYMBOL (0) */
    [' '] = CLS_SPACE,        ['\n'] = CLS_SPACE,       ['\t'] = CLS_SPACE,
    ['\r'] = CLS_SPACE,       ['\f'] = CLS_SPACE,       ['\v'] = CLS_SPACE,
    ['0' ... '9'] = CLS_WORD, ['a' ... 'z'] = CLS_WORD, ['A' ... 'Z'] = CLS_WORD,
};

size_t ingest_count_tokens(const char *s, size_t len)
{
    if (!s)
        return 0;
    const unsigned char *p = (const unsigned char *)s;
    tok_counter c = {0, 0};
    size_t i = 0;
    while (i < len) {
        unsigned char b = p[i];
        if (b < 0x80 && ascii_class[b] == CLS_WORD) {
            /* a run of r ASCII word characters at once: count_char would add a token at each
             * position k of [run, run + r) with k % WORD_CHARS == 0 */
            size_t j = i + 1;
            while (j < len && p[j] < 0x80 && ascii_class[p[j]] == CLS_WORD)
                j++;
            size_t r = j - i;
            c.tokens += (c.run + r + WORD_CHARS - 1) / WORD_CHARS - (c.run + WORD_CHARS - 1) / WORD_CHARS;
            c.run += r;
            i = j;
            continue;
        }
        if (b < 0x80) {
            count_char(&c, (char_class)ascii_class[b]);
            i++;
            continue;
        }
        uint32_t cp;
        i += next_char(p + i, len - i, &cp);
        count_char(&c, classify(cp));
    }
    return c.tokens;
}

/* ---- segmentation -------------------------------------------------------------------------- */

typedef struct {
    size_t start, end, tokens;
} segment;

typedef struct {
    const char *text;
    size_t budget;
    segment *segs;
    size_t nsegs, alloc;
    char *err;
} chunker;

static qr_status push_seg(chunker *k, size_t a, size_t b, size_t tokens)
{
    if (k->nsegs == k->alloc) {
        size_t n = k->alloc ? k->alloc * 2 : 64;
        segment *s = realloc(k->segs, n * sizeof(*s));
        if (!s)
            return qr_fail(k->err, QR_ENOMEM, "out of memory while chunking");
        k->segs = s;
        k->alloc = n;
    }
    k->segs[k->nsegs++] = (segment){a, b, tokens};
    return QR_OK;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* End of the unit of `level` that starts at a inside [a, b): the unit and the whitespace after
 * it. Always > a. */
static size_t unit_end(const char *t, size_t a, size_t b, int level)
{
    size_t i = a;
    switch (level) {
    case LEVEL_PARA:
        /* up to and including the next blank line */
        while (i < b) {
            const char *nl = memchr(t + i, '\n', b - i);
            if (!nl)
                return b;
            i = (size_t)(nl - t) + 1;
            if (i < b && t[i] == '\n') {
                while (i < b && is_space(t[i]))
                    i++;
                return i;
            }
        }
        return b;
    case LEVEL_SENT:
        while (i < b) {
            unsigned char c = (unsigned char)t[i];
            if (c == '\n') {
                while (i < b && is_space(t[i]))
                    i++;
                return i;
            }
            if (c == '.' || c == '!' || c == '?') {
                size_t j = i + 1;
                while (j < b && (t[j] == '.' || t[j] == '!' || t[j] == '?' || t[j] == '"' || t[j] == '\'' ||
                                 t[j] == ')' || t[j] == ']'))
                    j++;
                if (j < b && is_space(t[j])) {
                    while (j < b && is_space(t[j]))
                        j++;
                    return j;
                }
                i = j;
                continue;
            }
            /* CJK full stop, exclamation and question marks end a sentence without a space. */
            if (c == 0xE3 && i + 2 < b && (unsigned char)t[i + 1] == 0x80 && (unsigned char)t[i + 2] == 0x82)
                return i + 3 + (i + 3 < b && is_space(t[i + 3]));
            if (c == 0xEF && i + 2 < b && (unsigned char)t[i + 1] == 0xBC &&
                ((unsigned char)t[i + 2] == 0x81 || (unsigned char)t[i + 2] == 0x9F))
                return i + 3 + (i + 3 < b && is_space(t[i + 3]));
            i++;
        }
        return b;
    case LEVEL_WORD:
        while (i < b && !is_space(t[i]))
            i++;
        while (i < b && is_space(t[i]))
            i++;
        return i;
    default: return b;
    }
}

/* Cuts [a, b) into pieces of at most budget tokens at character boundaries. */
static qr_status split_chars(chunker *k, size_t a, size_t b)
{
    const unsigned char *p = (const unsigned char *)k->text;
    size_t start = a, i = a;
    tok_counter c = {0, 0};
    while (i < b) {
        uint32_t cp;
        size_t n = next_char(p + i, b - i, &cp);
        tok_counter next = c;
        count_char(&next, classify(cp));
        if (next.tokens > k->budget) {
            qr_status st = push_seg(k, start, i, c.tokens);
            if (st)
                return st;
            start = i;
            c = (tok_counter){0, 0};
            count_char(&c, classify(cp));
        } else {
            c = next;
        }
        i += n;
    }
    return start < b ? push_seg(k, start, b, c.tokens) : QR_OK;
}

/* Adds [a, b) as one segment if it fits, otherwise its units of the next finer level. */
static qr_status segment_span(chunker *k, size_t a, size_t b, int level)
{
    size_t tokens = ingest_count_tokens(k->text + a, b - a);
    if (tokens <= k->budget)
        return push_seg(k, a, b, tokens);
    if (level + 1 >= LEVEL_CHAR)
        return split_chars(k, a, b);
    for (size_t i = a; i < b;) {
        size_t e = unit_end(k->text, i, b, level + 1);
        qr_status st = segment_span(k, i, e, level + 1);
        if (st)
            return st;
        i = e;
    }
    return QR_OK;
}

/* ---- packing ------------------------------------------------------------------------------- */

typedef struct {
    ingest_chunk *items;
    size_t n, alloc;
} chunk_list;

static qr_status add_chunk(chunk_list *l, size_t start, size_t end, const char *headings, char *err)
{
    if (l->n == l->alloc) {
        size_t n = l->alloc ? l->alloc * 2 : 32;
        ingest_chunk *c = realloc(l->items, n * sizeof(*c));
        if (!c)
            return qr_fail(err, QR_ENOMEM, "out of memory while chunking");
        l->items = c;
        l->alloc = n;
    }
    char *h = strdup(headings);
    if (!h)
        return qr_fail(err, QR_ENOMEM, "out of memory while chunking");
    l->items[l->n++] = (ingest_chunk){start, end, h};
    return QR_OK;
}

/* Where the next chunk starts: as many whole words before `end` (and after `floor`, exclusive)
 * as fit in `limit` tokens; `end` itself when none do. */
static size_t overlap_start(const char *t, size_t floor, size_t end, size_t limit)
{
    size_t best = end, pos = end, tokens = 0;
    while (limit) {
        size_t p = pos;
        while (p > floor && is_space(t[p - 1]))
            p--;
        while (p > floor && !is_space(t[p - 1]))
            p--;
        if (p <= floor || p == pos)
            break;
        tokens += ingest_count_tokens(t + p, pos - p);
        if (tokens > limit)
            break;
        best = pos = p;
    }
    return best;
}

static qr_status chunk_range(chunker *k, size_t a, size_t b, const char *headings, size_t overlap_tokens,
                             chunk_list *out)
{
    if (a >= b)
        return QR_OK;
    k->nsegs = 0;
    qr_status st = segment_span(k, a, b, 0);
    if (st)
        return st;
    size_t start = a, tokens = 0;
    for (size_t i = 0; i < k->nsegs; i++) {
        const segment *s = &k->segs[i];
        if (tokens + s->tokens <= k->budget || s->start == start) {
            tokens += s->tokens;
            continue;
        }
        st = add_chunk(out, start, s->start, headings, k->err);
        if (st)
            return st;
        size_t room = k->budget - s->tokens;
        size_t next = overlap_start(k->text, start, s->start, overlap_tokens < room ? overlap_tokens : room);
        tokens = (next < s->start ? ingest_count_tokens(k->text + next, s->start - next) : 0) + s->tokens;
        start = next;
    }
    return add_chunk(out, start, b, headings, k->err);
}

static bool char_boundary(const ingest_text *t, size_t off)
{
    return off == t->len || ((unsigned char)t->text[off] & 0xC0) != 0x80;
}

qr_status ingest_chunk_text(const ingest_text *t, const ingest_chunk_opts *o, ingest_chunk **chunks,
                            size_t *n, char *err)
{
    if (chunks)
        *chunks = NULL;
    if (n)
        *n = 0;
    if (!t || !o || !chunks || !n || (!t->text && t->len))
        return qr_fail(err, QR_EINVAL, "ingest_chunk_text: NULL argument");
    if (o->max_tokens < MIN_TOKENS)
        return qr_fail(err, QR_EINVAL, "chunk budget of %zu tokens is below the minimum of %d", o->max_tokens,
                       MIN_TOKENS);
    if (!(o->overlap >= 0.0 && o->overlap <= 0.5))
        return qr_fail(err, QR_EINVAL, "chunk overlap %g is outside [0, 0.5]", o->overlap);
    if (!qr_utf8_valid(t->text, t->len))
        return qr_fail(err, QR_EINVAL, "cannot chunk text that is not valid UTF-8");
    size_t prev = 0;
    for (size_t i = 0; i < t->nsections; i++) {
        const ingest_section *s = &t->sections[i];
        if (s->start < prev || s->end < s->start || s->end > t->len || !char_boundary(t, s->start) ||
            !char_boundary(t, s->end))
            return qr_fail(err, QR_EINVAL,
                           "section %zu [%zu, %zu) is out of order or outside the text of %zu bytes", i,
                           s->start, s->end, t->len);
        prev = s->end;
    }

    chunker k = {.text = t->text, .budget = o->max_tokens, .err = err};
    chunk_list list = {0};
    size_t overlap_tokens = (size_t)(o->overlap * (double)o->max_tokens);
    qr_status st = QR_OK;
    size_t pos = 0;
    for (size_t i = 0; i < t->nsections && !st; i++) {
        const ingest_section *s = &t->sections[i];
        if (s->start > pos)
            st = chunk_range(&k, pos, s->start, "", overlap_tokens, &list);
        if (!st)
            st = chunk_range(&k, s->start, s->end, s->heading_path ? s->heading_path : "", overlap_tokens,
                             &list);
        pos = s->end;
    }
    if (!st && pos < t->len)
        st = chunk_range(&k, pos, t->len, "", overlap_tokens, &list);
    free(k.segs);
    if (st) {
        ingest_chunks_free(list.items, list.n);
        return st;
    }
    *chunks = list.items;
    *n = list.n;
    return QR_OK;
}

void ingest_chunks_free(ingest_chunk *c, size_t n)
{
    if (!c)
        return;
    for (size_t i = 0; i < n; i++)
        free(c[i].headings);
    free(c);
}
