/*
 * ingest's private header: the pieces the extractors share (the incremental normaliser, the
 * document builder that turns paragraphs and headings into normalised text with sections, the
 * sandbox that runs an extractor in a child process) and the local embedder's feature options,
 * which bench/embed_eval varies. Only the files of ingest/, tests/test_ingest.c, fuzz/ and bench/ include it.
 */
#ifndef QUARRY_INGEST_INT_H
#define QUARRY_INGEST_INT_H

#include <sys/types.h>

#include "ingest/ingest.h"

/* ---- incremental normaliser (normalize.c) -------------------------------------------------- */

/* Whitespace seen but not yet written: it is written, collapsed, only when visible text
 * follows, so that the output never ends or begins with whitespace. */
typedef struct {
    bool reject_invalid;
    bool started; /* visible text written: separators may be written before more */
    bool pending_space;
    int pending_breaks; /* 0, 1 (line break) or 2 (paragraph break) */
    size_t consumed;    /* input bytes seen so far, for error offsets */
} norm_state;

/* Flow mode: line breaks in the input are spaces (HTML text, headings). */
#define NORM_FLOW 1u

void norm_init(norm_state *s, bool reject_invalid);
/* Normalises in[0..len) onto out, continuing from s. Whitespace pending at the end is kept in s. */
qr_status norm_feed(norm_state *s, qr_buf *out, const char *in, size_t len, unsigned flags, char *err);
/* Requests a line (1) or paragraph (2) break before the next visible text. */
void norm_break(norm_state *s, int breaks);
/* Makes in[0..len) valid UTF-8 without other changes: *res is in itself when it is valid,
 * otherwise a copy in buf with U+FFFD for each maximal invalid subsequence, or QR_EINVAL
 * naming the offset when reject. For formats whose markup must reach a parser intact. */
qr_status norm_utf8_repair(const char *in, size_t len, bool reject, qr_buf *buf, const char **res,
                           size_t *rlen, char *err);
/* Writes the pending separator now (used before a heading whose offset must be known). */
qr_status norm_flush(norm_state *s, qr_buf *out);

/* ---- document builder (extract.c) ---------------------------------------------------------- */

typedef struct {
    size_t start;
    int level;
    char *path;
} builder_heading;

typedef struct {
    qr_buf text;
    norm_state norm;
    qr_buf scratch;
    builder_heading *headings;
    size_t nheadings, heading_alloc;
    char *stack[7]; /* heading texts by level, for paths */
    char *title;
} doc_builder;

/* text_cap bounds the normalised text (QR_ELIMIT past it). */
void builder_init(doc_builder *b, size_t text_cap, bool reject_invalid);
void builder_release(doc_builder *b);
/* Appends a paragraph (normalised; NORM_FLOW joins its lines). Empty text adds nothing. */
qr_status builder_paragraph(doc_builder *b, const char *raw, size_t len, unsigned flags, char *err);
/* Appends raw text to the current paragraph without a break before it. */
qr_status builder_inline(doc_builder *b, const char *raw, size_t len, unsigned flags, char *err);
/* Ends the current paragraph. */
void builder_break(doc_builder *b, int breaks);
/* Appends a heading of level 1..6 as its own paragraph and opens a section. A heading with no
 * visible text is ignored. */
qr_status builder_heading_add(doc_builder *b, int level, const char *raw, size_t len, char *err);
/* Sets the title (normalised to one line) unless one is set; empty is ignored. */
qr_status builder_title(doc_builder *b, const char *raw, size_t len, char *err);
/* Moves the result into out (content_type is set by the caller). */
qr_status builder_finish(doc_builder *b, ingest_text *out, char *err);

/* ---- extractors ---------------------------------------------------------------------------- */

/* Each appends to b. bytes are the raw document; lim gives the limits. */
qr_status extract_plain(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b, char *err);
qr_status extract_markdown(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b,
                           char *err);
qr_status extract_html(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b, char *err);
qr_status extract_pdf(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b, char *err);
qr_status extract_docx(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b, char *err);
/* Parses the <pre> text and <title> that `pdftotext -htmlmeta` writes (exposed for fuzzing). */
qr_status extract_pdftotext_output(const char *out, size_t len, doc_builder *b, char *err);

/* Sets up libxml2 once per process (thread-safe); every libxml2 user calls it first. */
void ingest_xml_init(void);

/* ---- sandbox (sandbox.c) ------------------------------------------------------------------- */

typedef qr_status (*sandbox_fn)(const char *bytes, size_t len, const ingest_limits *lim, doc_builder *b,
                                char *err);

/* Runs fn in a forked child in its own process group, under lim->memory_bytes (RLIMIT_AS above
 * the child's starting size, plus a resident-size watch from the parent) and lim->timeout_ms
 * (the parent kills the whole group). The child builds the document and sends it back through
 * a pipe; on success *out holds it. Timeouts are QR_ETIMEOUT, the memory limit QR_ELIMIT, a
 * crash QR_EINVAL, and fn's own error is returned as fn returned it. */
qr_status ingest_sandbox_run(sandbox_fn fn, const char *bytes, size_t len, const ingest_limits *lim,
                             ingest_text *out, char *err);
/* The pid of this process's extraction zygote (see sandbox.c), 0 while none runs; for tests. */
pid_t ingest_sandbox_zygote(void);

/* ---- local embedder (embed_local.c) -------------------------------------------------------- */

enum { EMBED_TF_RAW = 0, EMBED_TF_LOG, EMBED_TF_SQRT };

/* Feature options of the local embedder; bench/embed_eval measures variants. */
typedef struct {
    int dim;
    bool stopwords; /* drop English stopwords */
    int stem;       /* 0 none, 1 plural "s" stripping, 2 Porter */
    bool bigrams;   /* word bigrams (of kept words) */
    int char_ngram; /* 0 none, else n-grams of this length inside "<word>" */
    double ngram_weight;
    double bigram_weight;
    int tf;        /* EMBED_TF_RAW, EMBED_TF_LOG (1 + ln tf) or EMBED_TF_SQRT */
    uint64_t seed; /* perturbs every hash: bench/embed_eval measures collision noise; 0 in use */
} embed_local_opts;

/* The default options of "local-hash-v1" with dimension dim. */
void embed_local_defaults(embed_local_opts *o, int dim);
/* A cache of words' features for one set of options (not thread-safe): it only saves time.
 * embed_cache_new returns NULL on allocation failure; embed_cache_free(NULL) is a no-op. */
typedef struct embed_cache embed_cache;
embed_cache *embed_cache_new(void);
void embed_cache_free(embed_cache *c);
/* Embeds one text into out[o->dim] (L2-normalised; zero for a text without features). cache may
 * be NULL. Returns QR_ENOMEM only. */
qr_status embed_local_one(const embed_local_opts *o, embed_cache *cache, const char *text, size_t len,
                          float *out);
/* Lower-cases and splits text into words (ASCII letters and digits, and any non-ASCII letters),
 * calling fn for each; the tokenisation the local embedder uses (also the bench's BM25). */
void embed_words(const char *text, size_t len, void (*fn)(const char *w, size_t n, void *arg), void *arg);
bool embed_is_stopword(const char *w, size_t n);
/* Porter (1980) stemmer, in place on a lower-case ASCII word; returns the new length. */
size_t embed_porter_stem(char *w, size_t n);

/* ---- embedder backends (embed.c, embed_http.c) --------------------------------------------- */

struct ingest_embedder {
    const struct embed_backend *backend;
    char *model; /* the identity the store records (see embed.c) */
    char *query_prefix, *document_prefix;
    int dim;
    void *state;
};

typedef struct embed_backend {
    qr_status (*embed)(ingest_embedder *e, const char *const *texts, const size_t *lens, size_t n, float *out,
                       char *err);
    void (*free_state)(void *state);
} embed_backend;

/* The wire shapes of embedding servers (embed_http.c). */
typedef enum {
    EMBED_WIRE_OPENAI, /* POST {base}/embeddings, data[].embedding: OpenAI, llama.cpp, vLLM */
    EMBED_WIRE_AZURE,  /* the same under a deployment URL, ?api-version=, api-key header */
    EMBED_WIRE_OLLAMA, /* POST {base}/api/embed, {model, input} -> {embeddings: [[...]]} */
    EMBED_WIRE_TEI,    /* POST {base}/embed, {inputs, normalize, truncate} -> [[...]] */
} embed_wire;

/* Opens an HTTP backend of the given shape on e (e->dim set): fills e->backend, e->state and
 * e->model (the server's model name; for azure without embed.model, the deployment). Checks the
 * settings only; on error e is unchanged. */
qr_status embed_http_open(const qr_config *cfg, embed_wire wire, ingest_embedder *e, char *err);

#endif
