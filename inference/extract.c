/*
 * The extractive answer: what quarry says when no model can draft one (no backend configured, the
 * backend failing, the breaker open). It picks the sentences of the top passages that share the
 * most words with the question and cites each with its source's number, so the asker still gets
 * grounded, attributed text rather than an error. It is plain word overlap, not summarisation.
 */
#include <stdlib.h>
#include <string.h>

#include "inference/inference_int.h"

#define MAX_TERMS        48
#define TERM_MAX_LEN     48
#define SENTENCE_MAX     400 /* bytes of one quoted sentence */
#define PER_PASSAGE      2   /* sentences taken from one passage at most */
#define MIN_WORDS        4   /* shorter lines are usually headings or list debris */
#define NO_SOURCE_ANSWER "No permitted source was found for this question."

typedef struct {
    char t[MAX_TERMS][TERM_MAX_LEN];
    size_t n;
} term_set;

typedef struct {
    size_t passage; /* index into passages */
    size_t start, end;
    size_t words;
    int score;
    bool chosen;
} sentence;

static const char *const stopwords[] = {
    "a",    "about", "an",    "and",   "are",   "as",   "at",   "be",   "by",    "can",    "could", "did",
    "do",   "does",  "for",   "from",  "has",   "have", "how",  "i",    "if",    "in",     "is",    "it",
    "its",  "me",    "my",    "no",    "not",   "of",   "on",   "or",   "our",   "should", "so",    "that",
    "the",  "their", "them",  "there", "these", "they", "this", "to",   "us",    "was",    "we",    "were",
    "what", "when",  "where", "which", "who",   "why",  "will", "with", "would", "you",    "your",
};

static bool word_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

/* Reads the next word at or after *i in s[0..n) into w (lowercased ASCII, plural 's' dropped so
 * that "policies"/"policy" do not match but "days"/"day" do). Returns false at the end. */
static bool next_word(const char *s, size_t n, size_t *i, char w[TERM_MAX_LEN])
{
    while (*i < n && !word_byte((unsigned char)s[*i]))
        (*i)++;
    if (*i >= n)
        return false;
    size_t len = 0;
    while (*i < n && word_byte((unsigned char)s[*i])) {
        char c = s[*i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (len + 1 < TERM_MAX_LEN)
            w[len++] = c;
        (*i)++;
    }
    if (len > 3 && w[len - 1] == 's' && w[len - 2] != 's')
        len--;
    w[len] = '\0';
    return true;
}

static bool is_stopword(const char *w)
{
    for (size_t k = 0; k < sizeof(stopwords) / sizeof(stopwords[0]); k++)
        if (strcmp(w, stopwords[k]) == 0)
            return true;
    return false;
}

static int term_index(const term_set *ts, const char *w)
{
    for (size_t k = 0; k < ts->n; k++)
        if (strcmp(ts->t[k], w) == 0)
            return (int)k;
    return -1;
}

static void question_terms(const char *q, term_set *ts)
{
    char w[TERM_MAX_LEN];
    size_t i = 0, n = strlen(q);
    ts->n = 0;
    while (ts->n < MAX_TERMS && next_word(q, n, &i, w))
        if (strlen(w) >= 2 && !is_stopword(w) && term_index(ts, w) < 0)
            strcpy(ts->t[ts->n++], w);
}

/* Distinct question terms in s[0..n), and its word count. */
static int overlap(const term_set *ts, const char *s, size_t n, size_t *words)
{
    bool hit[MAX_TERMS] = {false};
    char w[TERM_MAX_LEN];
    size_t i = 0;
    int score = 0;
    *words = 0;
    while (next_word(s, n, &i, w)) {
        (*words)++;
        int k = term_index(ts, w);
        if (k >= 0 && !hit[k]) {
            hit[k] = true;
            score++;
        }
    }
    return score;
}

/* Splits text into sentences: at '.', '!' or '?' followed by a space or the end, and at line
 * breaks. Appends to *list. */
static qr_status split_sentences(const char *text, size_t passage, const term_set *ts, sentence **list,
                                 size_t *count, size_t *alloc)
{
    size_t n = strlen(text), start = 0;
    for (size_t i = 0; i <= n; i++) {
        bool end = i == n || text[i] == '\n' || text[i] == '\r' ||
                   ((text[i] == '.' || text[i] == '!' || text[i] == '?') &&
                    (i + 1 == n || text[i + 1] == ' ' || text[i + 1] == '\n' || text[i + 1] == '\r'));
        if (!end)
            continue;
        size_t stop = i < n && text[i] != '\n' && text[i] != '\r' ? i + 1 : i;
        while (start < stop && (text[start] == ' ' || text[start] == '\t'))
            start++;
        if (stop > start) {
            if (*count == *alloc) {
                size_t grow = *alloc ? 2 * *alloc : 32;
                sentence *bigger = realloc(*list, grow * sizeof(**list));
                if (!bigger)
                    return QR_ENOMEM;
                *list = bigger;
                *alloc = grow;
            }
            sentence *s = &(*list)[(*count)++];
            s->passage = passage;
            s->start = start;
            s->end = stop;
            s->score = overlap(ts, text + start, stop - start, &s->words);
            s->chosen = false;
        }
        start = i + 1;
    }
    return QR_OK;
}

/* Appends one sentence, cleaned and capped, with its citation before the final punctuation. */
static qr_status append_sentence(qr_buf *out, const char *s, size_t n, int number)
{
    qr_buf raw, clean;
    qr_buf_init(&raw, 4 * SENTENCE_MAX);
    qr_buf_init(&clean, 4 * SENTENCE_MAX);
    char *stripped = NULL;
    int *cited = NULL;
    size_t ncited = 0;
    bool truncated = n > SENTENCE_MAX;
    if (truncated) {
        size_t cut = SENTENCE_MAX;
        while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
            cut--;
        size_t space = cut;
        while (space > SENTENCE_MAX / 2 && s[space] != ' ')
            space--;
        n = s[space] == ' ' ? space : cut;
    }
    qr_status st = qr_buf_append(&raw, s, n);
    if (!st)
        st = infer_fence_text(&clean, qr_buf_str(&raw), NULL);
    /* a document's own "[3]" would read as one of quarry's citations */
    if (!st)
        st = infer_cite_process(qr_buf_str(&clean), 0, &stripped, &cited, &ncited, NULL);
    if (st)
        goto out;
    size_t len = strlen(stripped);
    while (len > 0 && (stripped[len - 1] == ' ' || stripped[len - 1] == '\t'))
        len--;
    bool punct =
        len > 0 && (stripped[len - 1] == '.' || stripped[len - 1] == '!' || stripped[len - 1] == '?');
    size_t body = punct ? len - 1 : len;
    if (qr_buf_len(out))
        st = qr_buf_putc(out, ' ');
    if (!st)
        st = qr_buf_append(out, stripped, body);
    if (!st && truncated)
        st = qr_buf_puts(out, "…");
    char end[2] = {punct ? stripped[len - 1] : '.', '\0'};
    if (!st)
        st = qr_buf_printf(out, " [%d]%s", number, end);
out:
    free(stripped);
    free(cited);
    qr_buf_release(&raw);
    qr_buf_release(&clean);
    return st;
}

qr_status infer_extract(const char *question, const infer_passage *passages, size_t count, char **text,
                        size_t cited[INFER_EXTRACT_PASSAGES], size_t *ncited, char *err)
{
    term_set *ts = malloc(sizeof(*ts));
    sentence *list = NULL;
    size_t nlist = 0, alloc = 0;
    qr_buf out;
    qr_buf_init(&out, 1u << 20);
    qr_status st = QR_OK;
    *text = NULL;
    *ncited = 0;
    if (!ts) {
        st = QR_ENOMEM;
        goto out;
    }
    question_terms(question ? question : "", ts);
    size_t top = count < INFER_EXTRACT_PASSAGES ? count : INFER_EXTRACT_PASSAGES;
    for (size_t p = 0; p < top && !st; p++)
        st = split_sentences(passages[p].text ? passages[p].text : "", p, ts, &list, &nlist, &alloc);
    if (st)
        goto out;

    /* Greedy pick: most question terms first, then higher-ranked passage, then earlier text. */
    size_t per[INFER_EXTRACT_PASSAGES] = {0}, picked = 0;
    while (picked < INFER_EXTRACT_SENTENCES) {
        sentence *best = NULL;
        for (size_t k = 0; k < nlist; k++) {
            sentence *s = &list[k];
            if (s->chosen || s->score == 0 || s->words < MIN_WORDS || per[s->passage] >= PER_PASSAGE)
                continue;
            if (!best || s->score > best->score)
                best = s;
        }
        if (!best)
            break;
        best->chosen = true;
        per[best->passage]++;
        picked++;
    }
    if (picked == 0) {
        /* nothing shares a word with the question: the top passage's opening is the best guess */
        for (size_t k = 0; k < nlist && !picked; k++)
            if (list[k].passage == 0 && list[k].words >= 1) {
                list[k].chosen = true;
                picked++;
            }
    }
    /* list is already in rank and reading order */
    for (size_t k = 0; k < nlist && !st; k++) {
        sentence *s = &list[k];
        if (!s->chosen)
            continue;
        st = append_sentence(&out, passages[s->passage].text + s->start, s->end - s->start,
                             (int)s->passage + 1);
        bool known = false;
        for (size_t c = 0; c < *ncited; c++)
            known |= cited[c] == s->passage;
        if (!known)
            cited[(*ncited)++] = s->passage;
    }
    if (!st && picked == 0)
        st = qr_buf_puts(&out, NO_SOURCE_ANSWER);
    if (!st && !(*text = qr_buf_detach(&out)))
        st = QR_ENOMEM;
out:
    if (st) {
        *ncited = 0;
        qr_fail(err, st, "cannot build the extractive answer: %s", qr_status_name(st));
    }
    free(list);
    free(ts);
    qr_buf_release(&out);
    return st;
}
