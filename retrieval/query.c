/*
 * Query parsing: user text to words, phrases and exclusions, and from those to FTS5 MATCH
 * expressions in which every word sits inside double quotes. This is the only place where text a
 * user typed turns into full-text syntax, so it never copies anything into an expression but
 * tokens made of token characters (see tokenchars.c), and it escapes quotes anyway should a
 * token ever hold one. The language is described in retrieval_int.h.
 */
#include <stdlib.h>
#include <string.h>

#include "retrieval/retrieval_int.h"

/* ---- UTF-8 and tokens -------------------------------------------------------------------- */

/* Decodes the code point at s[i]; *n gets its length. Invalid sequences decode as U+FFFD of one
 * byte (U+FFFD is not a token character), so a bad byte separates tokens. */
static uint32_t decode(const char *s, size_t len, size_t i, size_t *n)
{
    const unsigned char *p = (const unsigned char *)s + i;
    size_t left = len - i;
    *n = 1;
    if (p[0] < 0x80)
        return p[0];
    size_t need;
    uint32_t cp, min;
    if ((p[0] & 0xe0) == 0xc0) {
        need = 2, cp = p[0] & 0x1f, min = 0x80;
    } else if ((p[0] & 0xf0) == 0xe0) {
        need = 3, cp = p[0] & 0x0f, min = 0x800;
    } else if ((p[0] & 0xf8) == 0xf0) {
        need = 4, cp = p[0] & 0x07, min = 0x10000;
    } else {
        return 0xfffd;
    }
    if (left < need)
        return 0xfffd;
    for (size_t k = 1; k < need; k++) {
        if ((p[k] & 0xc0) != 0x80)
            return 0xfffd;
        cp = cp << 6 | (p[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0xfffd;
    *n = need;
    return cp;
}

bool rq_next_token(const char *s, size_t len, size_t *pos, size_t *start, size_t *end)
{
    size_t i = *pos, n;
    while (i < len && !rq_token_char(decode(s, len, i, &n)))
        i += n;
    if (i >= len) {
        *pos = len;
        return false;
    }
    *start = i;
    while (i < len && rq_token_char(decode(s, len, i, &n)))
        i += n;
    *end = *pos = i;
    return true;
}

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* ---- stopwords --------------------------------------------------------------------------- */

/* English function words (articles, pronouns, auxiliaries, prepositions, conjunctions and the
 * commonest adverbs): words that match most chunks and say nothing about the topic. Sorted. */
static const char *const default_stopwords[] = {
    "a",     "about",   "above",  "after",  "again",  "against", "all",     "also",    "am",      "an",
    "and",   "any",     "are",    "as",     "at",     "be",      "because", "been",    "before",  "being",
    "below", "between", "both",   "but",    "by",     "can",     "could",   "did",     "do",      "does",
    "doing", "down",    "during", "each",   "few",    "for",     "from",    "further", "had",     "has",
    "have",  "having",  "he",     "her",    "here",   "hers",    "herself", "him",     "himself", "his",
    "how",   "i",       "if",     "in",     "into",   "is",      "it",      "its",     "itself",  "just",
    "me",    "more",    "most",   "my",     "myself", "no",      "nor",     "not",     "now",     "of",
    "off",   "on",      "once",   "only",   "or",     "other",   "our",     "ours",    "out",     "over",
    "own",   "same",    "she",    "should", "so",     "some",    "such",    "than",    "that",    "the",
    "their", "theirs",  "them",   "then",   "there",  "these",   "they",    "this",    "those",   "through",
    "to",    "too",     "under",  "until",  "up",     "very",    "was",     "we",      "were",    "what",
    "when",  "where",   "which",  "while",  "who",    "whom",    "why",     "will",    "with",    "would",
    "you",   "your",    "yours",
};

struct rq_stopwords {
    char **words; /* sorted, unique, lower-cased */
    size_t n;
};

static int cmp_word(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void rq_stopwords_free(rq_stopwords *sw)
{
    if (!sw)
        return;
    for (size_t i = 0; i < sw->n; i++)
        free(sw->words[i]);
    free(sw->words);
    free(sw);
}

static qr_status add_word(rq_stopwords *sw, size_t *cap, const char *w, size_t n, char *err)
{
    if (sw->n == *cap) {
        size_t grown = *cap ? *cap * 2 : 256;
        char **v = realloc(sw->words, grown * sizeof(*v));
        if (!v)
            return qr_fail(err, QR_ENOMEM, "out of memory for stopwords");
        sw->words = v;
        *cap = grown;
    }
    char *copy = malloc(n + 1);
    if (!copy)
        return qr_fail(err, QR_ENOMEM, "out of memory for stopwords");
    for (size_t i = 0; i < n; i++)
        copy[i] = ascii_lower(w[i]);
    copy[n] = '\0';
    sw->words[sw->n++] = copy;
    return QR_OK;
}

qr_status rq_stopwords_new(const char *spec, rq_stopwords **out, char *err)
{
    if (!out)
        return qr_fail(err, QR_EINVAL, "rq_stopwords_new: NULL output");
    *out = NULL;
    if (!spec)
        spec = "default";
    size_t speclen = strlen(spec);
    if (!qr_utf8_valid(spec, speclen))
        return qr_fail(err, QR_EINVAL, "invalid retrieval.stopwords: not valid UTF-8");
    rq_stopwords *sw = calloc(1, sizeof(*sw));
    size_t cap = 0;
    qr_status st = QR_OK;
    if (!sw)
        return qr_fail(err, QR_ENOMEM, "out of memory for stopwords");
    if (strcmp(spec, "none") == 0)
        goto out;
    const char *p = spec;
    while (*p && !st) {
        size_t n = strcspn(p, ",");
        /* trim white space around an entry */
        const char *w = p;
        size_t wn = n;
        while (wn && (*w == ' ' || *w == '\t'))
            w++, wn--;
        while (wn && (w[wn - 1] == ' ' || w[wn - 1] == '\t'))
            wn--;
        if (wn == 7 && strncmp(w, "default", 7) == 0) {
            for (size_t i = 0; i < sizeof(default_stopwords) / sizeof(default_stopwords[0]) && !st; i++)
                st = add_word(sw, &cap, default_stopwords[i], strlen(default_stopwords[i]), err);
        } else if (wn) {
            size_t pos = 0, s0, e0;
            if (!rq_next_token(w, wn, &pos, &s0, &e0) || s0 != 0 || e0 != wn || wn > RQ_TOKEN_MAX)
                st = qr_fail(
                    err, QR_EINVAL,
                    "invalid retrieval.stopwords entry '%.*s': expected one word of letters or digits",
                    (int)(wn > 64 ? 64 : wn), w);
            else
                st = add_word(sw, &cap, w, wn, err);
        }
        p += n;
        if (*p == ',')
            p++;
    }
    if (st)
        goto out;
    if (sw->n)
        qsort(sw->words, sw->n, sizeof(char *), cmp_word);
    size_t u = 0;
    for (size_t i = 0; i < sw->n; i++) {
        if (u && strcmp(sw->words[u - 1], sw->words[i]) == 0)
            free(sw->words[i]);
        else
            sw->words[u++] = sw->words[i];
    }
    sw->n = u;
out:
    if (st) {
        rq_stopwords_free(sw);
        return st;
    }
    *out = sw;
    return QR_OK;
}

bool rq_stopwords_has(const rq_stopwords *sw, const char *w, size_t n)
{
    if (!sw || !sw->n)
        return false;
    size_t lo = 0, hi = sw->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *m = sw->words[mid];
        int c = strncmp(m, w, n);
        if (c == 0)
            c = m[n] ? 1 : 0;
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* ---- parsing ----------------------------------------------------------------------------- */

/* Growable list of phrases in the arena (the arena cannot realloc: lists double by copying). */
typedef struct {
    rq_phrase *v;
    size_t n, cap;
} phrase_list;

typedef struct {
    const char **v;
    size_t n, cap;
} word_list;

typedef struct {
    const char *text;
    size_t len;
    const rq_stopwords *sw;
    bool plain;
    const rq_limits *lim; /* NULL: none */
    qr_arena *a;
    size_t ntokens; /* every token seen, for the limit */
    word_list terms, stopped, scratch;
    phrase_list phrases, excluded;
    char *err;
} parser;

static qr_status nomem(parser *p)
{
    return qr_fail(p->err, QR_ENOMEM, "out of memory parsing the query");
}

static qr_status words_push(parser *p, word_list *l, const char *w)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        const char **v = qr_arena_alloc(p->a, cap * sizeof(*v));
        if (!v)
            return nomem(p);
        if (l->n)
            memcpy(v, l->v, l->n * sizeof(*v));
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = w;
    return QR_OK;
}

static bool phrase_equal(const rq_phrase *x, const rq_phrase *y)
{
    if (x->ntokens != y->ntokens)
        return false;
    for (size_t i = 0; i < x->ntokens; i++)
        if (strcmp(x->tokens[i], y->tokens[i]) != 0)
            return false;
    return true;
}

static qr_status phrases_push(parser *p, phrase_list *l, const char **tokens, size_t n)
{
    rq_phrase ph = {tokens, n};
    for (size_t i = 0; i < l->n; i++)
        if (phrase_equal(&l->v[i], &ph))
            return QR_OK;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        rq_phrase *v = qr_arena_alloc(p->a, cap * sizeof(*v));
        if (!v)
            return nomem(p);
        if (l->n)
            memcpy(v, l->v, l->n * sizeof(*v));
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = ph;
    return QR_OK;
}

/* Copies the token text[s, e) lower-cased into the arena, counting it against the limits. */
static qr_status take_token(parser *p, size_t s, size_t e, const char **out)
{
    if (++p->ntokens > RQ_TOKENS_MAX)
        return qr_fail(p->err, QR_ELIMIT, "the query has more than %d words", RQ_TOKENS_MAX);
    if (e - s > RQ_TOKEN_MAX)
        return qr_fail(p->err, QR_ELIMIT, "a word of the query is longer than %d bytes", RQ_TOKEN_MAX);
    char *w = qr_arena_alloc(p->a, e - s + 1);
    if (!w)
        return nomem(p);
    for (size_t i = s; i < e; i++)
        w[i - s] = ascii_lower(p->text[i]);
    w[e - s] = '\0';
    *out = w;
    return QR_OK;
}

/* Reads a quoted phrase whose opening quote is at *pos; leaves *pos after the closing quote (or
 * at the end). The phrase's tokens go to *tokens (arena), possibly none; `what` names the phrase
 * in the message of one over the length limit. */
static qr_status read_phrase(parser *p, size_t *pos, const char *what, const char ***tokens, size_t *n)
{
    size_t close = *pos + 1;
    while (close < p->len && p->text[close] != '"')
        close++;
    p->scratch.n = 0;
    size_t i = *pos + 1, s, e;
    qr_status st;
    while (rq_next_token(p->text, close, &i, &s, &e)) {
        const char *w = NULL;
        if ((st = take_token(p, s, e, &w)) || (st = words_push(p, &p->scratch, w)))
            return st;
    }
    if (p->lim && p->scratch.n > p->lim->max_phrase_terms)
        return qr_fail(p->err, QR_EINVAL,
                       "%s of the query has %zu words, more than retrieval.max_phrase_terms (%zu)", what,
                       p->scratch.n, p->lim->max_phrase_terms);
    *pos = close < p->len ? close + 1 : p->len;
    *n = p->scratch.n;
    *tokens = NULL;
    if (!*n)
        return QR_OK;
    const char **v = qr_arena_alloc(p->a, *n * sizeof(*v));
    if (!v)
        return nomem(p);
    memcpy(v, p->scratch.v, *n * sizeof(*v));
    *tokens = v;
    return QR_OK;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool single_in(const phrase_list *l, const char *w)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].ntokens == 1 && strcmp(l->v[i].tokens[0], w) == 0)
            return true;
    return false;
}

static qr_status parse(parser *p)
{
    size_t pos = 0, n;
    qr_status st;
    while (pos < p->len) {
        char c = p->text[pos];
        bool word_start = pos == 0 || is_space(p->text[pos - 1]);
        if (p->plain) {
            /* plain text: quotes and dashes are punctuation like any other */
        } else if (c == '"') {
            const char **tokens;
            if ((st = read_phrase(p, &pos, "a quoted phrase", &tokens, &n)))
                return st;
            if (n && (st = phrases_push(p, &p->phrases, tokens, n)))
                return st;
            continue;
        }
        if (!p->plain && c == '-' && word_start && pos + 1 < p->len) {
            if (p->text[pos + 1] == '"') {
                const char **tokens;
                pos++;
                if ((st = read_phrase(p, &pos, "an excluded phrase", &tokens, &n)))
                    return st;
                if (n && (st = phrases_push(p, &p->excluded, tokens, n)))
                    return st;
                continue;
            }
            size_t s, e, i = pos + 1;
            if (rq_next_token(p->text, p->len, &i, &s, &e) && s == pos + 1) {
                const char **one = qr_arena_alloc(p->a, sizeof(*one));
                if (!one)
                    return nomem(p);
                if ((st = take_token(p, s, e, &one[0])) || (st = phrases_push(p, &p->excluded, one, 1)))
                    return st;
                pos = e;
                continue;
            }
        }
        if (!rq_token_char(decode(p->text, p->len, pos, &n))) {
            pos += n;
            continue;
        }
        size_t s, e;
        rq_next_token(p->text, p->len, &pos, &s, &e);
        const char *w = NULL;
        if ((st = take_token(p, s, e, &w)))
            return st;
        bool stop = rq_stopwords_has(p->sw, w, e - s);
        if ((st = words_push(p, stop ? &p->stopped : &p->terms, w)))
            return st;
    }
    return QR_OK;
}

/* The limits on the parsed query as a whole: what it searches and what it excludes. */
static qr_status check_limits(const rq_limits *lim, const rq_query *q, char *err)
{
    size_t searched = q->nterms;
    for (size_t i = 0; i < q->nphrases; i++)
        searched += q->phrases[i].ntokens;
    if (searched > lim->max_terms)
        return qr_fail(err, QR_EINVAL, "the query searches %zu words, more than retrieval.max_terms (%zu)",
                       searched, lim->max_terms);
    if (q->nexcluded > lim->max_exclusions)
        return qr_fail(err, QR_EINVAL,
                       "the query excludes %zu words and phrases, more than retrieval.max_exclusions (%zu)",
                       q->nexcluded, lim->max_exclusions);
    return QR_OK;
}

qr_status rq_parse(const char *text, size_t len, const rq_stopwords *sw, bool plain, const rq_limits *lim,
                   qr_arena *a, rq_query *q, char *err)
{
    if (!q || !a || (len && !text))
        return qr_fail(err, QR_EINVAL, "rq_parse: NULL argument");
    memset(q, 0, sizeof(*q));
    if (len > RQ_TEXT_MAX)
        return qr_fail(err, QR_ELIMIT, "the query is %zu bytes long, more than %d", len, RQ_TEXT_MAX);
    if (!qr_utf8_valid(text, len))
        return qr_fail(err, QR_EINVAL, "the query is not valid UTF-8");
    if (memchr(text, '\0', len))
        return qr_fail(err, QR_EINVAL, "the query contains a NUL byte");
    parser p = {.text = text, .len = len, .sw = sw, .plain = plain, .lim = lim, .a = a, .err = err};
    qr_status st = parse(&p);
    if (st)
        return st;
    /* a query of nothing but stopwords ("to be or not to be") searches them after all */
    word_list *terms = p.terms.n || p.phrases.n ? &p.terms : &p.stopped;
    /* an excluded word is not also searched */
    size_t kept = 0;
    for (size_t i = 0; i < terms->n; i++) {
        const char *w = terms->v[i];
        if (!single_in(&p.excluded, w))
            terms->v[kept++] = w;
    }
    q->terms = terms->v;
    q->nterms = kept;
    q->phrases = p.phrases.v;
    q->nphrases = p.phrases.n;
    q->excluded = p.excluded.v;
    q->nexcluded = p.excluded.n;
    if (lim && (st = check_limits(lim, q, err))) {
        memset(q, 0, sizeof(*q));
        return st;
    }
    return QR_OK;
}

/* ---- FTS5 expressions -------------------------------------------------------------------- */

/* Appends tokens as one FTS5 string: "a b c". Tokens hold only token characters, so the quote
 * doubling can never trigger; it stays as the rule FTS5 defines for quotes inside strings. */
static qr_status quoted(qr_buf *out, const char *const *tokens, size_t n)
{
    qr_status st = qr_buf_putc(out, '"');
    for (size_t i = 0; i < n && !st; i++) {
        if (i)
            st = qr_buf_putc(out, ' ');
        for (const char *c = tokens[i]; *c && !st; c++)
            st = *c == '"' ? qr_buf_puts(out, "\"\"") : qr_buf_putc(out, *c);
    }
    return st ? st : qr_buf_putc(out, '"');
}

/* Joins terms and phrases with op into a scratch buffer first, so that out is unchanged on
 * error. */
static qr_status join(qr_buf *out, const char *op, const char *const *terms, size_t nterms,
                      const rq_phrase *phrases, size_t nphrases)
{
    qr_buf tmp;
    qr_buf_init(&tmp, (size_t)RQ_TEXT_MAX * 4 + 4096);
    size_t count = 0;
    qr_status st = QR_OK;
    for (size_t i = 0; i < nterms && !st; i++, count++) {
        if (count)
            st = qr_buf_puts(&tmp, op);
        if (!st)
            st = quoted(&tmp, &terms[i], 1);
    }
    for (size_t i = 0; i < nphrases && !st; i++, count++) {
        if (count)
            st = qr_buf_puts(&tmp, op);
        if (!st)
            st = quoted(&tmp, phrases[i].tokens, phrases[i].ntokens);
    }
    if (!st && count)
        st = qr_buf_append(out, qr_buf_str(&tmp), qr_buf_len(&tmp));
    qr_buf_release(&tmp);
    return st;
}

qr_status rq_fts_rank(const rq_query *q, qr_buf *out)
{
    return join(out, " OR ", q->terms, q->nterms, q->phrases, q->nphrases);
}

qr_status rq_fts_require(const rq_query *q, qr_buf *out)
{
    return join(out, " AND ", NULL, 0, q->phrases, q->nphrases);
}

qr_status rq_fts_exclude(const rq_query *q, qr_buf *out)
{
    return join(out, " OR ", NULL, 0, q->excluded, q->nexcluded);
}
