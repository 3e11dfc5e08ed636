/*
 * retrieval: permission-trimmed search over the store and the vector index. Query parsing (a
 * small language of words, "exact phrases" and -exclusions that never reaches FTS5 as syntax),
 * BM25 through FTS5, exact top-k vector search, fusion of the two (reciprocal rank or weighted
 * scores), metadata filters, a per-document limit, pagination, snippets with highlighted matches,
 * and the metrics of `quarry eval`.
 *
 * Permissions come first on every path. The caller (the CLI, the HTTP API) resolves who is asking
 * (auth) and embeds the query (ingest); retrieval gets the caller's ACL principals and the query
 * vector. BM25 is restricted in SQL to the chunks of documents whose ACL holds one of the
 * principals; vector search only ever returns permitted chunks: an exact scan of their vectors
 * when they are few (or a small share of the index), otherwise one fetch from the index of a
 * number of candidates fixed by the permitted share of the index, each tested, with an exact scan
 * of the permitted chunks when hidden ones took too many places (so a search's work follows the
 * permitted set, not where hidden chunks rank; see retrieval.c). Filters are applied the same
 * way, before ranking. So a result is never outside what the caller may read, and when k
 * permitted chunks match, k are returned -- for vectors, exactly the k best (equal scores:
 * smaller chunk id first) whenever the index is exact (flat) or the exact path is taken.
 *
 * Threads: a retrieval handle borrows a store handle, and a store handle serves one thread at a
 * time, so a handle is used by one thread at a time too (open one per worker thread, each with
 * its own store handle). The vector index may be shared by all of them. Errors follow core/:
 * a qr_status and a QR_ERR_LEN message; bad input (malformed query, unknown mode, invalid
 * principal, k out of range, a cursor of another query) is QR_EINVAL or QR_ELIMIT and changes
 * nothing.
 */
#ifndef QUARRY_RETRIEVAL_H
#define QUARRY_RETRIEVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "index/index.h"

#define RETRIEVAL_QUERY_MAX 8192  /* bytes of query text */
#define RETRIEVAL_K_MAX     1000  /* results per page */
#define RETRIEVAL_DEPTH_MAX 10000 /* results before the end of a page (offset + k) */

/* True: search is built (kept for the API's readiness check, which asked before it was). */
bool retrieval_available(void);

typedef enum {
    RETRIEVAL_MODE_DEFAULT = 0, /* the configured retrieval.mode */
    RETRIEVAL_HYBRID,           /* BM25 and vectors, fused */
    RETRIEVAL_BM25,
    RETRIEVAL_VECTOR,
} retrieval_mode;

/* "hybrid", "bm25", "vector" ("default" for RETRIEVAL_MODE_DEFAULT). */
const char *retrieval_mode_name(retrieval_mode m);
/* Parses those names; QR_EINVAL names the accepted ones. */
qr_status retrieval_mode_parse(const char *s, retrieval_mode *out, char *err);

typedef enum {
    RETRIEVAL_FUSION_RRF = 0,  /* sum of w / (rrf_k + rank) over the two lists */
    RETRIEVAL_FUSION_WEIGHTED, /* sum of w * score / the list's best score over the two lists */
} retrieval_fusion;

#define RETRIEVAL_REASON_LEN 256

/* Settings, from the retrieval.* configuration keys. Strings are borrowed: they must outlive
 * the handle opened with them. */
typedef struct {
    retrieval_mode mode;     /* used when a request asks for RETRIEVAL_MODE_DEFAULT */
    retrieval_fusion fusion; /* how hybrid mode fuses */
    double rrf_k;            /* RRF's rank offset (60) */
    double vector_weight;    /* weight of the vector list in fusion; BM25's is 1 */
    double weight_title, weight_headings, weight_body; /* BM25 column weights */
    const char *stopwords; /* "default", "none", or words (see retrieval.stopwords) */
    double exact_share;    /* below this share of the index, vectors are searched exactly */
    size_t exact_min;      /* up to this many permitted chunks, always exactly */
    size_t max_per_doc;    /* at most this many chunks of one document per result list; 0: any */
    size_t candidates;     /* depth of each list that hybrid mode fuses */
    const char *snippet_open, *snippet_close; /* markers around matches in snippets */
    size_t snippet_tokens;                    /* words in a snippet */
    bool bm25_pruned; /* retrieval.bm25_path: pruned (true) or fts5; see retrieval_set_bm25 */
    bool parallel;    /* retrieval.parallel: hybrid's two lists at once, on two threads */
    /* what one search may cost: its deadline and the size of its query (see retrieval_search) */
    uint64_t timeout_ms;     /* retrieval.timeout_ms */
    size_t max_terms;        /* retrieval.max_terms: words searched, phrases' words included */
    size_t max_phrase_terms; /* retrieval.max_phrase_terms: words in one phrase */
    size_t max_exclusions;   /* retrieval.max_exclusions: excluded words and phrases */
    /* which default is in force and why (retrieval_opts_from_config): retrieval.mode and
     * retrieval.fusion = auto follow embed.backend (mode_auto, fusion_auto), otherwise they were
     * set; default_reason says it in a sentence, for `quarry stats` and /readyz */
    bool mode_auto, fusion_auto;
    char default_reason[RETRIEVAL_REASON_LEN];
} retrieval_opts;

/* The defaults of the retrieval.* keys with the default embedder (embed.backend=local): BM25,
 * and weighted fusion for hybrid requests. */
void retrieval_opts_default(retrieval_opts *o);
/* Reads the retrieval.* keys; strings point into cfg. Cannot fail: the configuration validated
 * them (the stopword list is checked by retrieval_open). retrieval.mode = auto resolves here, the
 * one place it does: bm25 with embed.backend=local (the offline hash embedder adds the lexical
 * overlap BM25 already has, and lowered nDCG@10 on a held-out collection at every weight), hybrid
 * with any other (a real model). retrieval.fusion = auto: weighted with the local embedder (its
 * vector_weight was tuned for it), rrf with a real model (RRF k=60, the common default: no model
 * could be run here to measure a better fusion), with equal weights unless retrieval.vector_weight
 * is set. */
void retrieval_opts_from_config(const qr_config *cfg, retrieval_opts *o);
/* Sets o's fusion to f with its vector weight: retrieval.vector_weight when it was set, else its
 * default (0.2, tuned for the local embedder with weighted fusion) for weighted fusion and 1 for
 * rrf (equal weights, RRF as commonly run). retrieval_opts_from_config applies it. */
void retrieval_opts_with_fusion(const qr_config *cfg, retrieval_fusion f, retrieval_opts *o);
/* "rrf" or "weighted". */
const char *retrieval_fusion_name(retrieval_fusion f);

typedef struct retrieval retrieval;

/* ---- reranking --------------------------------------------------------------------------- */

/* Scores n passages for query: scores[i] for texts[i] (lens[i] bytes), higher is better. It runs
 * on the searching thread, inside retrieval_search, and is only ever given passages the caller
 * may read (the window is cut from the permission-trimmed, fused ranking and read back through
 * the permission filter). On failure it returns non-OK with *reason set to a short static word
 * ("timeout", "breaker_open", "malformed_reply", "backend_error") and err filled; the search then
 * keeps the first-stage order and reports the reason. Scores must be finite. */
typedef qr_status (*retrieval_rerank_fn)(void *ctx, const char *query, const char *const *texts,
                                         const size_t *lens, size_t n, double *scores, const char **reason,
                                         char *err);

typedef struct {
    retrieval_rerank_fn fn; /* NULL: no reranking */
    void *ctx;
    size_t candidates; /* the window: this many first-stage results are reranked (>= 1) */
    const char *model; /* named in results; borrowed, must outlive the handle */
} retrieval_reranker;

/* What reranking did to a page. */
typedef enum {
    RETRIEVAL_RERANK_OFF = 0,  /* no reranker on the handle */
    RETRIEVAL_RERANK_APPLIED,  /* the page comes from the reranked window */
    RETRIEVAL_RERANK_FALLBACK, /* the reranker failed: first-stage order, rerank_reason says why */
    RETRIEVAL_RERANK_SKIPPED,  /* not asked: the request opted out (rerank_reason "disabled"), the
                                * page lies past the window ("past_window") or nothing matched
                                * ("no_candidates") */
} retrieval_rerank_state;

/* Gives the handle a reranker (copied; NULL or fn NULL removes it). Not while a search runs on
 * the handle. */
void retrieval_set_reranker(retrieval *r, const retrieval_reranker *rr);

/* Opens a search handle over a store and, optionally, its vector index (NULL: no vector search;
 * hybrid requests then run BM25 alone, and say so). Both are borrowed and must outlive the
 * handle. QR_EINVAL for bad options (an invalid stopword entry, a negative weight). On error *out
 * is NULL. */
qr_status retrieval_open(store *s, vindex *v, const retrieval_opts *o, retrieval **out, char *err);
/* Gives the handle the pruned BM25 index of its store (borrowed; NULL: none). With it and
 * retrieval.bm25_path = pruned, BM25 lists of word queries come from bm25_search -- the same
 * top k as FTS5's ranking, without scoring every match; queries with phrases, exclusions or
 * metadata filters, and every query while the index waits for a rebuild, are ranked by FTS5. */
void retrieval_set_bm25(retrieval *r, bm25_index *b);
/* Gives the handle another vector index (borrowed; NULL: none), e.g. the one the maintainer
 * published since the handle was opened. Not while a search runs on the handle. */
void retrieval_set_vindex(retrieval *r, vindex *v);
/* Frees the handle (not the store or index); NULL is a no-op. */
void retrieval_close(retrieval *r);
/* How many times the handle brought a permitted list it kept up to date through the store's
 * changes instead of listing the permitted chunks again (tests, benches). */
uint64_t retrieval_list_updates(const retrieval *r);

/* Who is asking: the ACL principals auth resolved ("public", "user:<uid>", "group:<name>"), or
 * an administrator, who may read every document. */
typedef struct {
    const char *const *principals;
    size_t nprincipals;
    bool is_admin;
} retrieval_caller;

typedef struct {
    const char *query;   /* the user's text (see retrieval_int.h's query language); NULL is "" */
    bool plain;          /* the text is plain words: quotes and dashes are not syntax (questions,
                          * pasted text) */
    const float *vector; /* the query's embedding, dim floats: needed by vector and hybrid
                          * searches (NULL: hybrid runs BM25 alone, vector mode fails) */
    int dim;
    retrieval_mode mode; /* RETRIEVAL_MODE_DEFAULT: the configured mode */
    size_t k;            /* results per page, 1..RETRIEVAL_K_MAX */
    /* filters: all that are set must hold */
    const char *const *doc_ids; /* only these documents */
    size_t ndoc_ids;
    const char *source_prefix; /* only documents whose URI starts with this */
    const char *content_type;  /* only documents of this type ("text/markdown") */
    int64_t updated_after_ms;  /* only documents changed after this time (Unix ms); 0: any */
    size_t max_per_doc;        /* 0: the configured limit; SIZE_MAX: none */
    const char *cursor;        /* next_cursor of the previous page; NULL for the first */
    bool no_rerank;            /* keep the first-stage order even when the handle has a reranker */
    qr_cancel *cancel;         /* the search's deadline and cancellation (the server's: from the request's
                                * arrival, raised when the client leaves); NULL: retrieval.timeout_ms from
                                * the start of retrieval_search */
} retrieval_request;

/* One result. Strings live in the result. */
typedef struct {
    int64_t chunk_id;
    const char *doc_id, *title, *uri;
    const char *headings;          /* heading path "A > B"; "" when none */
    double score;                  /* the mode's score: -bm25, cosine, or the fused score; in a reranked
                                    * window the reranker's relevance score */
    const char *snippet;           /* part of the chunk's text, matches between the snippet markers */
    size_t start, end;             /* the snippet's byte offsets in the document's normalised text */
    size_t chunk_start, chunk_end; /* the whole chunk's */
    const char *text;              /* the whole chunk's text (text_len bytes, NUL-terminated) */
    size_t text_len;
    int bm25_rank, vector_rank; /* 1-based ranks in the lists fused; 0: not in that list */
} retrieval_hit;

typedef struct {
    retrieval_hit *hits;
    size_t nhits;
    retrieval_mode mode;     /* the mode that ran (hybrid without a vector runs bm25) */
    const char *next_cursor; /* for the next page; NULL when this page is the last */
    bool vector_exact;       /* the vector list came from an exact scan of the permitted chunks */
    bool vector_fallback;    /* ... because the index's fixed fetch held too few permitted ones */
    bool vector_scanned;     /* the permitted chunks were listed and tested inside the IVF scan */
    size_t permitted_listed; /* chunks listed for the exact or the IVF scan (0 when not taken) */
    size_t permitted_chunks; /* restricted vector searches: the chunks the caller may read, as
                              * estimated from a sample of the index (counted when listed) */
    size_t vector_fetched;   /* candidates the vector index was asked for (0: not asked) */
    bool bm25_pruned;        /* the BM25 list came from the pruned index, not FTS5's ranking */
    retrieval_rerank_state rerank;
    const char *rerank_reason; /* FALLBACK and SKIPPED: why ("timeout", "past_window", ...); else NULL */
    const char *rerank_model;  /* the handle's reranker's model when one is set; else NULL */
    size_t rerank_candidates;  /* passages the reranker was given (APPLIED and FALLBACK) */
    size_t rerank_window;      /* the window this page's ranking used (0: none) */
    /* where the search's time went, in nanoseconds (quarry eval, bench/bm25_fixed_cost.sh and the
     * server's quarry_search_stage_seconds_total): parsing and stemming the query, ranking (rank_ns:
     * the BM25 list, the vector list and their fusion, each also apart), reading the page's chunks
     * from the store, reranking them, and their snippets; embed_ns (the query's embedding) and
     * permit_ns (the second permission check) are filled by api_service_search, 0 here */
    uint64_t parse_ns, rank_ns, bm25_ns, vector_ns, fusion_ns, hydrate_ns, rerank_ns, snippet_ns;
    uint64_t embed_ns, permit_ns;
    qr_arena arena_; /* private */
} retrieval_result;

/* Searches. k results at most, best first; fewer only when fewer chunks are permitted, pass the
 * filters and match (BM25 needs a query word in the chunk; vectors rank every permitted chunk).
 * A query of nothing but punctuation has no words: BM25 then finds nothing and hybrid runs
 * vectors alone. On success *out holds the page (retrieval_result_free).
 * Cost is bounded twice. Before anything runs, a query over retrieval.max_terms words searched,
 * with a phrase over retrieval.max_phrase_terms words or over retrieval.max_exclusions
 * exclusions is refused (QR_EINVAL naming the key). While it runs, the request's cancellation
 * token (or a deadline of retrieval.timeout_ms) is checked between the stages and inside their
 * loops: the store's statements (SQLite's progress handler, FTS5 included), the BM25 index's
 * candidates and the vector scans; a search past its deadline stops with QR_ETIMEOUT, a
 * cancelled one with QR_ECANCELED, and nothing is returned.
 * Errors: QR_EINVAL/QR_ELIMIT for bad requests, QR_ETIMEOUT/QR_ECANCELED as above, QR_EIO/
 * QR_ENOMEM/QR_EINTERNAL from the store and the index. Never logs the query text above debug
 * level. */
qr_status retrieval_search(retrieval *r, const retrieval_caller *caller, const retrieval_request *req,
                           retrieval_result **out, char *err);
/* NULL is a no-op. */
void retrieval_result_free(retrieval_result *res);

/* Tests only: fn(ctx, req, cancel) runs at the start of every retrieval_search whose query parsed,
 * on the searching thread, with the search's token (a hook may wait on it, or outlast its
 * deadline, to make a search slow); the token is checked right after it. NULL removes the hook.
 * Set it while no search runs. */
typedef void (*retrieval_test_hook_fn)(void *ctx, const retrieval_request *req, qr_cancel *cancel);
void retrieval_test_set_hook(retrieval_test_hook_fn fn, void *ctx);
/* Keeps only the hits keep(ctx, hit) accepts, in order (the page's second permission check).
 * Returns how many were dropped. */
size_t retrieval_result_filter(retrieval_result *res, bool (*keep)(void *ctx, const retrieval_hit *h),
                               void *ctx);

/* The FTS5 expressions a query becomes, for `quarry search --explain` and tests: the ranking
 * expression (OR of the words and phrases), the phrases every result must hold (AND) and the
 * excluded words and phrases (OR), each appended to its buffer ("" when none). */
qr_status retrieval_query_expressions(retrieval *r, const char *query, bool plain, qr_buf *rank,
                                      qr_buf *require, qr_buf *exclude, char *err);

/* Appends the page as the JSON of DESIGN.md's contract:
 * {"results":[{"chunk_id","doc_id","title","uri","headings","score","snippet","start","end"}],
 *  "mode":"bm25","next_cursor":"..."|null}, and, when the handle has a reranker,
 *  "rerank":{...} (see retrieval_rerank_json). */
qr_status retrieval_result_json(const retrieval_result *res, qr_buf *out);

/* Appends the rerank object of a page: {"applied":true,"model":M,"candidates":N} or
 * {"applied":false,"reason":R,"model":M} (model omitted when empty). Nothing (QR_OK, nothing
 * appended) for RETRIEVAL_RERANK_OFF. */
qr_status retrieval_rerank_json(const retrieval_result *res, qr_buf *out);

/* ---- evaluation (eval.c) ----------------------------------------------------------------- */

/* A relevance judgment of one query: a document and its grade (> 0: relevant). */
typedef struct {
    const char *doc_id;
    int grade;
} retrieval_judgment;

typedef struct {
    double ndcg10;    /* nDCG@10, gain = grade, discount log2(rank + 1), ideal from all judgments */
    double recall100; /* relevant documents in the top 100 / all relevant */
    double map100;    /* average precision at 100, over all relevant documents */
    double mrr10;     /* 1 / rank of the first relevant document in the top 10, else 0 */
} retrieval_metrics;

/* Scores one ranking (document ids, best first, no duplicates) against the judgments of its
 * query. A query without relevant judgments scores 0 everywhere (callers usually skip it).
 * QR_EINVAL for NULL lists with non-zero lengths. */
qr_status retrieval_eval_ranking(const char *const *ranked, size_t n, const retrieval_judgment *judged,
                                 size_t njudged, retrieval_metrics *out, char *err);

#endif
