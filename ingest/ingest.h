/*
 * ingest: turns documents into chunks and vectors. Type detection, extraction (plain text,
 * markdown, HTML, PDF, DOCX), normalisation to valid UTF-8, sections by headings,
 * structure-aware chunking under a token budget, content hashes, and embedding (an offline
 * local backend and an OpenAI-compatible /embeddings client). The store write lives in index/;
 * the CLI wires the two together.
 *
 * Errors: every fallible function returns a qr_status and fills a QR_ERR_LEN buffer (which may
 * be NULL). Bad input is QR_EINVAL, a configured limit is QR_ELIMIT, a deadline QR_ETIMEOUT, an
 * unreachable embedding server QR_EUNAVAILABLE. On error every output is left empty (NULL, 0).
 */
#ifndef QUARRY_INGEST_H
#define QUARRY_INGEST_H

#include <stdbool.h>
#include <stddef.h>

#include "core/core.h"
#include "index/index.h"

/* ---- extraction ---------------------------------------------------------------------------- */

/* Limits applied to one document. */
typedef struct {
    size_t max_document_bytes; /* input bytes, and extracted text bytes (ingest.max_document_bytes) */
    unsigned timeout_ms;       /* wall clock of a sandboxed extraction (ingest.extract_timeout_ms) */
    size_t memory_bytes;       /* memory a sandboxed extraction may add (ingest.extract_memory_mb) */
    size_t zip_max_bytes;      /* total uncompressed bytes of a zip container (ingest.zip_max_bytes) */
    double zip_max_ratio;      /* uncompressed / compressed, refused above (ingest.zip_max_ratio) */
    bool reject_invalid_utf8;  /* reject instead of repairing with U+FFFD (ingest.invalid_utf8) */
} ingest_limits;

/* The defaults (64 MiB, 30 s, 512 MiB, 256 MiB, 100, repair), without a configuration. */
void ingest_limits_default(ingest_limits *out);
/* Reads the ingest.* keys. Cannot fail: the configuration validated them. */
void ingest_limits_from_config(const qr_config *cfg, ingest_limits *out);

/* A section: the text from one heading up to the next heading of any level. The text before the
 * first heading, if any, is a section of level 0 with an empty heading path. Sections are in
 * order, do not overlap and cover the whole text. */
typedef struct {
    char *heading_path; /* "Travel policy > Reimbursement"; "" for level 0 */
    int level;          /* 1..6 (markdown #, html h1-h6, docx "heading N"); 0 before the first */
    size_t start, end;  /* byte offsets into ingest_text.text */
} ingest_section;

/* An extracted document. text is normalised, valid UTF-8, NUL-terminated; title may be NULL;
 * content_type is the detected type ("text/plain", "text/markdown", "text/html",
 * "application/pdf", INGEST_TYPE_DOCX). All fields are owned (ingest_text_release frees). */
typedef struct {
    char *text;
    size_t len;
    char *title;
    char *content_type;
    ingest_section *sections;
    size_t nsections;
} ingest_text;

#define INGEST_TYPE_DOCX "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

/* Detects the type of a document: the declared type first (a MIME type, parameters such as
 * "; charset=" ignored; NULL, "" or "application/octet-stream" mean undeclared), then the
 * filename's extension (.txt .text .md .markdown .html .htm .xhtml .pdf .docx), then magic bytes
 * (%PDF-, a zip holding word/document.xml, <!doctype html / <html, otherwise valid UTF-8 text
 * without NUL bytes is text/plain). Writes one of the content types above to *type (a static
 * string). An unsupported declared type or extension, or bytes that match nothing, is
 * QR_EINVAL naming what was seen. */
qr_status ingest_detect_type(const void *bytes, size_t len, const char *declared_type, const char *filename,
                             const char **type, char *err);

/* Detects the type, then extracts, normalises and finds sections. Plain text and markdown are
 * parsed in this process (linear parsers of quarry's own); HTML, PDF and DOCX are parsed in a
 * forked child under lim->timeout_ms and lim->memory_bytes, so that a hostile file can neither
 * hang nor crash the caller (QR_ETIMEOUT, QR_ELIMIT, or QR_EINVAL when the child crashes). PDF
 * text comes from poppler's pdftotext, run as a separate program (it is GPL; quarry links none of
 * it). A document over max_document_bytes, or whose text would be, is QR_ELIMIT; a zip over
 * zip_max_bytes or zip_max_ratio is QR_ELIMIT; invalid UTF-8 is repaired or QR_EINVAL per
 * reject_invalid_utf8. A document with no text is not an error (len 0, no sections).
 * declared_type and filename may be NULL. On error *out is empty. */
qr_status ingest_extract(const void *bytes, size_t len, const char *declared_type, const char *filename,
                         const ingest_limits *lim, ingest_text *out, char *err);
/* Frees the contents of t and empties it; NULL or an empty t is a no-op. */
void ingest_text_release(ingest_text *t);

/* Appends the normalised form of in[0..len) to out: invalid UTF-8 becomes U+FFFD (one per
 * maximal invalid subsequence) or, when reject_invalid, is QR_EINVAL naming the byte offset;
 * a leading BOM, C0/C1 control characters (except line breaks and tabs), DEL and noncharacters
 * are removed; CR LF, CR, NEL and U+2028 become LF, U+2029 and form feed a paragraph break;
 * tabs and Unicode spaces become a space; runs of spaces collapse to one, spaces at line
 * starts and ends are dropped, more than one blank line becomes one, and the result has no
 * leading or trailing whitespace. Idempotent. QR_ELIMIT past out's cap. On error out may hold
 * part of the text. */
qr_status ingest_normalize(const char *in, size_t len, bool reject_invalid, qr_buf *out, char *err);

/* Hex SHA-256 of bytes, NUL-terminated in out. */
void ingest_content_hash(const void *bytes, size_t len, char out[65]);

/* ---- chunking ------------------------------------------------------------------------------ */

typedef struct {
    size_t max_tokens; /* budget per chunk, overlap included (chunk.max_tokens, default 300) */
    double overlap;    /* fraction of the budget repeated from the previous chunk, 0..0.5 */
} ingest_chunk_opts;

void ingest_chunk_opts_from_config(const qr_config *cfg, ingest_chunk_opts *out);

/* A chunk: t->text[start, end). headings is the section's heading path ("" before the first
 * heading), owned by the chunk. */
typedef struct {
    size_t start, end;
    char *headings;
} ingest_chunk;

/* Token approximation (no vocabulary): a run of word characters (ASCII letters and digits, and
 * letters of alphabetic scripts up to U+2E7F) counts one token per 6 characters or part thereof,
 * so that long words cost more, as with subword tokenisers; every other visible character
 * (punctuation, symbols, CJK ideographs, kana, hangul, emoji) counts one; whitespace counts
 * nothing. On the prose of Cranfield and CISI this gives about 4.3 bytes per token (1.4 to 1.5
 * tokens per whitespace-separated word), close to BPE tokenisers' 4 characters per token. */
size_t ingest_count_tokens(const char *s, size_t len);

/* Splits t into chunks, structure first: a chunk never spans two sections; inside a section,
 * whole paragraphs are packed while they fit, a paragraph over the budget is split between
 * sentences, a sentence over the budget between words, a word over the budget between UTF-8
 * characters. Each chunk after the first of a section starts with up to overlap * max_tokens
 * tokens (whole words) of its predecessor, where that still leaves room for what follows.
 * Guarantees: ingest_count_tokens of every chunk <= max_tokens; chunks are in order, each
 * starts at a character boundary, and together they cover every byte of the text; text[start,
 * end) is the chunk's text. An empty text gives no chunks. t->sections may be empty (one section);
 * sections that are out of order, overlap or leave the text are QR_EINVAL, as are text that is
 * not valid UTF-8, max_tokens < 8 and overlap outside [0, 0.5]. On success *chunks is allocated
 * (ingest_chunks_free); on error *chunks is NULL and *n 0. */
qr_status ingest_chunk_text(const ingest_text *t, const ingest_chunk_opts *o, ingest_chunk **chunks,
                            size_t *n, char *err);
/* Frees n chunks and their heading strings; NULL is a no-op. */
void ingest_chunks_free(ingest_chunk *c, size_t n);

/* ---- embeddings ---------------------------------------------------------------------------- */

typedef struct ingest_embedder ingest_embedder;

/* Opens the backend named by embed.backend: "local" (offline feature hashing, dimension
 * embed.dim) or an embeddings server at embed.base_url in its wire shape: "openai" (POST
 * /embeddings; also llama.cpp's server and vLLM), "azure" (a deployment URL, ?api-version=
 * embed.api_version, api-key header), "ollama" (POST /api/embed) or "tei" (POST /embed), with
 * embed.model, embed.api_key, embed.batch_size, embed.timeout_ms, embed.retries, and for openai
 * and azure `dimensions` = embed.dim unless embed.send_dimensions is off. Checks the settings only
 * (no request is sent): a missing or non-HTTP base URL, a missing model (azure: a base URL naming
 * no deployment) or api-version, or a prefix longer than 1 KiB is QR_EINVAL. */
qr_status ingest_embedder_open(const qr_config *cfg, ingest_embedder **out, char *err);
/* The identity recorded in the store and compared before a search: "local-hash-v1" for the local
 * backend, embed.model for the others (azure without one: its deployment name), followed by
 * " +prefixes:" and 12 hex digits of a hash of embed.query_prefix and embed.document_prefix when
 * either is set. Owned by the embedder. */
const char *ingest_embedder_model(const ingest_embedder *e);
int ingest_embedder_dim(const ingest_embedder *e);
/* Embeds n document texts (texts[i] of lens[i] bytes; lens may be NULL for NUL-terminated texts)
 * into out[n * dim], embed.document_prefix before each non-empty one, each row L2-normalised (an
 * empty text gives a zero row). Server backends send batches of embed.batch_size, retry 429
 * (honouring Retry-After) and 5xx and transport errors with jittered exponential backoff up to
 * embed.retries times, and check that the answer holds one vector per text, each of embed.dim
 * finite numbers (QR_EINVAL otherwise); a server that cannot be reached is QR_EUNAVAILABLE, a
 * request past embed.timeout_ms QR_ETIMEOUT, an answer larger than n vectors can be QR_ELIMIT. On
 * error out is all zeros. Not thread-safe per embedder. */
qr_status ingest_embed(ingest_embedder *e, const char *const *texts, const size_t *lens, size_t n, float *out,
                       char *err);
/* Embeds one query (NUL-terminated) into out[dim] as ingest_embed does, with embed.query_prefix
 * before it instead. */
qr_status ingest_embed_query(ingest_embedder *e, const char *text, float *out, char *err);
/* Frees the embedder; NULL is a no-op. */
void ingest_embedder_free(ingest_embedder *e);

/* ---- the pipeline (pipeline.c) ------------------------------------------------------------ */

/* An ingestion session: the store under data.dir, the configured embedder (whose model and
 * dimension the store must accept), the limits and the chunking settings. One thread at a time. */
typedef struct ingest_session ingest_session;

/* Opens the store and the embedder. Errors: those of store_open and ingest_embedder_open, and
 * QR_EINVAL when the store was filled with another embedding model or dimension. */
qr_status ingest_session_open(const qr_config *cfg, ingest_session **out, char *err);
/* Closes the session (rolling back an open batch); NULL is a no-op. */
void ingest_session_close(ingest_session *s);
/* The session's store, for reads (stats, documents). Owned by the session. */
store *ingest_session_store(ingest_session *s);
const char *ingest_session_model(const ingest_session *s);

/* Batches of documents in one store transaction (see store_batch_begin); faster for bulk loads. */
qr_status ingest_session_batch_begin(ingest_session *s, char *err);
qr_status ingest_session_batch_commit(ingest_session *s, char *err);
void ingest_session_batch_rollback(ingest_session *s);
/* A bulk load's durability (store_bulk_begin/end): batches commit without an fdatasync each, and
 * the end's synced commit makes all of them durable; outside a batch. */
qr_status ingest_session_bulk_begin(ingest_session *s, char *err);
qr_status ingest_session_bulk_end(ingest_session *s, char *err);

/* One document to ingest. Strings are borrowed for the call. */
typedef struct {
    const char *doc_id;        /* required: stable external id */
    const char *title;         /* NULL: the title found by extraction */
    const char *uri;           /* may be NULL */
    const char *declared_type; /* MIME type, or NULL to detect from filename and bytes */
    const char *filename;      /* for detection by extension; may be NULL */
    const char *metadata_json; /* a JSON object or NULL */
    const char *const *acl;    /* principals; none = administrators only */
    size_t nacl;
    const void *bytes;
    size_t len;
} ingest_source;

/* Ingests one document. When its content hash (the bytes, plus the chunking settings, declared
 * type, a given title and the embedding model) equals the stored one, nothing is extracted or embedded and
 * only ACL, title, URI or metadata changes are written (STORE_UNCHANGED or STORE_ACL_UPDATED); otherwise the
 * document is extracted, chunked, embedded and written in one store transaction (STORE_ADDED or
 * STORE_UPDATED). *nchunks gets its number of chunks. On error (bad source, extraction, chunking,
 * embedding or store failure, each named in err) the store is unchanged. */
qr_status ingest_put(ingest_session *s, const ingest_source *src, store_put_result *result, size_t *nchunks,
                     char *err);
/* ---- the same in parts, for several threads (pipeline.c, pool.c) ---------------------------- */

/* A document on its way through ingest_put's stages, holding copies of its source. */
typedef struct ingest_prepared ingest_prepared;
/* Copies src (strings, ACL, bytes) into a new prepared document. QR_ENOMEM. */
qr_status ingest_prepared_new(const ingest_source *src, ingest_prepared **out, char *err);
/* Checks the source, hashes it, and extracts, chunks and embeds it with e, keeping any failure
 * for ingest_put_prepared to report. Reads only the session's settings: any thread, one
 * embedder per thread; e NULL: only the checks and the hash (the write does the rest). ro, when given, is a
 * store connection of this thread: a document whose committed hash is already this one is left unextracted
 * (the write does it if needed after all). */
void ingest_prepare(const ingest_session *s, ingest_embedder *e, store *ro, ingest_prepared *p);
/* Writes a prepared document exactly as ingest_put writes its source (same results, same errors);
 * on the session's thread. p stays the caller's. */
qr_status ingest_put_prepared(ingest_session *s, ingest_prepared *p, store_put_result *result,
                              size_t *nchunks, char *err);
const ingest_source *ingest_prepared_source(const ingest_prepared *p);
void ingest_prepared_free(ingest_prepared *p);

/* Raw input that becomes a source on a pool thread (a JSON line, parsed by its reader's code, so
 * that the writing thread never parses). parse fills *src, whose strings stay valid until
 * release(*hold); or it fails with a message, and the input is then no document: the writer
 * reports it in input order (ingest_prepared_unparsed). Called on any thread: ctx is read only. */
typedef struct {
    qr_status (*parse)(void *ctx, const char *raw, size_t len, ingest_source *src, void **hold, char *err);
    void (*release)(void *hold);
    void *ctx;
} ingest_parser;
/* Takes raw (malloc'd, len bytes) over, with a copy of the label where (e.g. "file:line") to report
 * a failure under; parser must outlive the document. QR_ENOMEM (raw is freed). */
qr_status ingest_prepared_new_raw(const ingest_parser *parser, char *raw, size_t len, const char *where,
                                  ingest_prepared **out, char *err);
/* For raw input that did not parse: true, with the label and the parser's message. */
bool ingest_prepared_unparsed(const ingest_prepared *p, const char **where, const char **why);

/* The fields of a JSON-lines corpus line as ingest_jsonl_scan decodes them: NUL-terminated
 * strings in its block, NULL when absent. */
typedef struct {
    const char *id, *text, *title, *url, *uri;
    size_t text_len;
    bool has_acl; /* an "acl" list: its nacl strings follow each other from acl */
    const char *acl;
    size_t nacl;
    bool metadata_empty; /* "metadata": {} */
} ingest_jsonl_line;
/* Reads a line shaped as most corpus lines are (an object of string fields, an "acl" list of
 * strings, an empty "metadata" object) without a general JSON parser; true with *out filled and
 * its strings in *buf (free() it) when the line is such an object and json_loadb with
 * JSON_REJECT_DUPLICATES would read the same values from it. False, *buf NULL, for any other line,
 * valid or not, and when out of memory: parse it with a general parser (which words the errors). */
bool ingest_jsonl_scan(const char *raw, size_t len, ingest_jsonl_line *out, char **buf);

/* A pool of threads preparing documents (ingest_prepare) while the caller's thread writes them in
 * the order they were submitted: extraction, chunking and embedding on every core, one writer
 * owning the store's transaction. threads 0: one per online core; 1: no thread, each document is
 * prepared by ingest_pool_next on the caller's thread. */
typedef struct ingest_pool ingest_pool;
qr_status ingest_pool_open(ingest_session *s, const qr_config *cfg, int threads, ingest_pool **out,
                           char *err);
/* Worker threads (0 when documents are prepared on the caller's thread). */
int ingest_pool_threads(const ingest_pool *p);
/* True when ingest_pool_submit would exceed the queue's room (documents or bytes): take a
 * result with ingest_pool_next first. */
bool ingest_pool_full(const ingest_pool *p);
/* Queues a copy of src. QR_ENOMEM; QR_EINVAL when the pool is full. */
qr_status ingest_pool_submit(ingest_pool *p, const ingest_source *src, char *err);
/* Queues raw input to be parsed by parser on a pool thread, then prepared (see
 * ingest_prepared_new_raw: raw is taken over, even on failure). QR_ENOMEM; QR_EINVAL when full. */
qr_status ingest_pool_submit_raw(ingest_pool *p, const ingest_parser *parser, char *raw, size_t len,
                                 const char *where, char *err);
/* The oldest submitted document once prepared (waiting for it when wait), to be written with
 * ingest_put_prepared and freed with ingest_prepared_free; NULL when none is queued or (without
 * wait) the oldest is not ready. */
ingest_prepared *ingest_pool_next(ingest_pool *p, bool wait);
/* Stops the threads and frees documents not taken; NULL is a no-op. */
void ingest_pool_close(ingest_pool *p);

/* Deletes a document and everything of it. QR_ENOTFOUND when it is not stored. */
qr_status ingest_remove(ingest_session *s, const char *doc_id, char *err);

#endif
