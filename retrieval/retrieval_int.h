/*
 * Private to retrieval/: the query language and its tokenizer, which the engine (retrieval.c),
 * the tests and the query fuzzer (fuzz/fuzz_query.c) share. This part depends on core/ only, so
 * that the fuzzer builds without SQLite or FAISS.
 *
 * The query language. A query is free text; its words are searched with OR semantics (any word
 * may match, more and rarer matches rank higher) after stopwords are dropped. A word that occurs
 * twice is searched twice: BM25's query term frequency, which long, example-like queries need.
 * Two constructs are quarry's own (plain mode turns them off: quotes and dashes are then mere
 * punctuation, for natural-language questions that quote for emphasis):
 *   "exact phrase"   a quoted sequence of words that must appear in that order in every result
 *                    (one quoted word: a word that must appear); an unclosed quote ends at the end
 *                    of the query;
 *   -word, -"phrase" a word or phrase that no result may contain (a '-' that starts a word).
 * Everything else -- FTS5 operators (AND, OR, NOT, NEAR), column filters, '*', '^', parentheses
 * -- is ordinary text: words are split out of it and each one is quoted, so no user input is ever
 * read as FTS5 syntax.
 *
 * Words are what SQLite FTS5's unicode61 tokenizer calls tokens: maximal runs of token
 * characters (Unicode letters, numbers and private-use characters, and the diacritics
 * unicode61 folds away), so a query word is exactly one indexed token. ASCII letters are
 * lower-cased for stopword tests and duplicate removal; FTS5 folds case itself inside the quotes.
 */
#ifndef QUARRY_RETRIEVAL_INT_H
#define QUARRY_RETRIEVAL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

#define RQ_TOKEN_MAX  256  /* bytes of one word; longer is QR_ELIMIT */
#define RQ_TOKENS_MAX 1024 /* words in a query (phrases and exclusions included); more is QR_ELIMIT */
#define RQ_TEXT_MAX   8192 /* bytes of query text; more is QR_ELIMIT */

/* True when code point cp is a token character for FTS5's unicode61 tokenizer (remove_diacritics
 * 1, the default), as measured on SQLite 3.40.1: see tokenchars.c. */
bool rq_token_char(uint32_t cp);

/* Finds the next token of s[0..len) at or after *pos: on true, [*start, *end) is the token and
 * *pos is *end. Invalid UTF-8 bytes count as separators. */
bool rq_next_token(const char *s, size_t len, size_t *pos, size_t *start, size_t *end);

/* ---- stopwords --------------------------------------------------------------------------- */

typedef struct rq_stopwords rq_stopwords;

/* Builds a stopword set from a spec: "default" (quarry's English list), "none", or a
 * comma-separated list of words (ASCII letters are lower-cased; "default,word,..." extends the
 * default list). QR_EINVAL for an entry that is not one token. On error *out is NULL. */
qr_status rq_stopwords_new(const char *spec, rq_stopwords **out, char *err);
void rq_stopwords_free(rq_stopwords *sw);
/* w[0..n) is a lower-cased token. A NULL set holds nothing. */
bool rq_stopwords_has(const rq_stopwords *sw, const char *w, size_t n);

/* ---- parsed queries ---------------------------------------------------------------------- */

/* A phrase: one or more lower-cased tokens, to be matched in order. */
typedef struct {
    const char **tokens;
    size_t ntokens;
} rq_phrase;

/* A parsed query. Every string lives in the arena given to rq_parse. */
typedef struct {
    const char **terms; /* OR terms in query order, repeats kept, stopwords dropped (unless every
                         * word is one) */
    size_t nterms;
    rq_phrase *phrases; /* required phrases (quoted), unique */
    size_t nphrases;
    rq_phrase *excluded; /* excluded words and phrases, unique */
    size_t nexcluded;
} rq_query;

/* What one query may ask for (the retrieval.max_* keys), so that its cost stays bounded: every word
 * searched is a posting list FTS5 or the BM25 index walks, every word of a phrase a position list
 * compared in every chunk that holds them all, every exclusion a posting list read for each search. */
typedef struct {
    size_t max_terms;        /* words searched: OR terms (repeats count) and the words of required
                              * phrases, after stopwords are dropped */
    size_t max_phrase_terms; /* words in one quoted or excluded phrase */
    size_t max_exclusions;   /* excluded words and phrases (distinct) */
} rq_limits;

/* Parses text[0..len) into q; plain: no phrases or exclusions. Text must be valid UTF-8 without
 * NUL bytes (QR_EINVAL otherwise); control characters are separators. QR_ELIMIT past RQ_TEXT_MAX bytes,
 * RQ_TOKENS_MAX words or a word over RQ_TOKEN_MAX bytes; QR_EINVAL, with a message naming the key,
 * past one of lim's limits (lim NULL: none but those built in); QR_ENOMEM when the arena is full. A
 * query may come out empty (nothing but punctuation). sw may be NULL (no stopwords). On error q is
 * empty. */
qr_status rq_parse(const char *text, size_t len, const rq_stopwords *sw, bool plain, const rq_limits *lim,
                   qr_arena *a, rq_query *q, char *err);

/* FTS5 MATCH expressions built from a parsed query, every word inside double quotes. Each
 * appends to out and leaves it unchanged when the query has nothing for it (out stays "");
 * QR_ELIMIT/QR_ENOMEM from the buffer.
 *   rq_fts_rank:    the ranking expression: terms and required phrases joined by OR;
 *   rq_fts_require: the required phrases joined by AND;
 *   rq_fts_exclude: the excluded words and phrases joined by OR. */
qr_status rq_fts_rank(const rq_query *q, qr_buf *out);
qr_status rq_fts_require(const rq_query *q, qr_buf *out);
qr_status rq_fts_exclude(const rq_query *q, qr_buf *out);

#endif
