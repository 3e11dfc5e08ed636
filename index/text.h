/*
 * index/text.h: the pruned BM25 index (bm25_*.c), quarry's own postings beside FTS5 for word
 * queries.
 */
#ifndef QUARRY_INDEX_TEXT_H
#define QUARRY_INDEX_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "index/store.h"

/*
 * BM25 top-k without scoring every match ([bm25-topk]). FTS5's ORDER BY rank computes bm25()
 * for every chunk that matches any query word; this index answers the same question -- the top
 * `limit` chunks for an OR of words, with the caller's permissions and an optional per-document
 * limit -- by MaxScore over postings quarry keeps beside FTS5, skipping every chunk whose upper
 * bound cannot reach the current k-th score. FTS5 stays the source of truth for text, phrases,
 * exclusions and snippets; retrieval uses this path for word queries (retrieval.bm25_path).
 *
 * Exactness: scores are FTS5's bm25() arithmetic, computed in FTS5's order from the same
 * whole-index statistics (rows, tokens, rows per term, as of the store's latest change), and
 * equal scores are ordered by smaller chunk id; so the top k, its scores and its order are those
 * of store_search_bm25 with the expression "w1" OR "w2" ... (tests/test_bm25.c checks it on
 * random corpora with writes, deletes and ACL changes in between).
 *
 * On disk, under <data_dir>/bm25: current.bm25, one generation (rows with their chunk id,
 * document key and length; the sorted vocabulary; postings in blocks of 128 with per-block
 * maxima, delta- and varint-coded), written under a temporary name, synced and renamed, with a
 * checksum checked at open and the store change counter it was built from. Changes after that
 * counter live in memory: chunks added are tokenised with FTS5's own tokenizer into a delta,
 * deleted chunks become tombstones, and documents whose ACL changed update the cached per-
 * principal document sets. A lag of more than bm25.delta_max chunk changes, a store whose counter
 * went backwards or whose tombstones were pruned past the generation, a title rewritten under
 * the same chunk ids, or a damaged file, builds a new generation from the store.
 *
 * Permissions: each principal's readable documents are a bitset over document keys, read once
 * from the acl table and kept (up to bm25.principal_cache principals) and updated as documents
 * change; a search ORs the caller's sets and tests every candidate before it is scored, so a
 * chunk the caller may not read never enters the heap nor takes one of the k places.
 *
 * Threads: one bm25_index may be shared by threads, each with its own store handle; searches
 * run concurrently, catching up with the store takes the index exclusively for the time of the
 * catch-up.
 *
 * Costs: bm25_search costs the postings MaxScore cannot skip (bench/README.md: milliseconds at
 * 1M chunks) plus, for a principal not cached, one indexed read of its documents; bm25_sync and
 * bm25_search's own catch-up cost one indexed read when nothing changed, else a read and
 * tokenisation of what changed; a rebuild (bm25_open without a usable generation, bm25_sync with
 * rebuild) reads and tokenises every chunk (tens of seconds per million chunks) and writes the
 * file. bm25_get_info takes the index's read lock briefly; bm25_peek reads the file's header.
 * In the server, only the maintainer (index/maintainer.h) opens, syncs and rebuilds; request
 * threads only search.
 */
typedef struct bm25_index bm25_index;

typedef struct {
    size_t delta_max;       /* bm25.delta_max: chunk changes kept in memory before a rebuild */
    size_t principal_cache; /* bm25.principal_cache: principals whose document sets are kept */
} bm25_opts;

typedef struct {
    bool rebuilt;          /* a new generation was built and written */
    size_t added, removed; /* chunk changes replayed into the delta */
    size_t docs_changed;   /* documents whose ACL sets were refreshed */
    int64_t counter;       /* the store change counter the index now reflects */
    double seconds;        /* time spent */
} bm25_report;

typedef struct {
    int64_t counter;            /* the store change counter reflected */
    int64_t generation_counter; /* the counter the file on disk was built from */
    size_t rows;                /* live chunks */
    size_t terms;               /* distinct terms in the generation */
    uint64_t postings;          /* postings in the generation */
    size_t delta_rows;          /* chunks added since the generation */
    size_t tombstones;          /* rows deleted since the generation */
    uint64_t file_bytes;        /* size of current.bm25 */
    uint64_t memory_bytes;      /* heap held besides the mapped file (delta, sets, caches) */
    size_t principals_cached;
    /* since open, over all searches: generation blocks of postings decoded, and passed over
     * undecoded because no row they span belongs to a document the caller may read */
    uint64_t blocks_decoded, blocks_skipped;
} bm25_info;

void bm25_opts_default(bm25_opts *o);
/* The bm25.* keys. */
void bm25_opts_from_config(const qr_config *cfg, bm25_opts *o);

/* Opens the index under <data_dir>/bm25 (creating the directory, mode 0700) and brings it up to
 * the store's latest change, building a generation when there is none or it cannot be caught up
 * (see above); force builds one whatever. rep may be NULL. QR_EIO when files cannot be written,
 * QR_ENOMEM, and the store's errors. On error *out is NULL. */
qr_status bm25_open(store *s, const char *data_dir, const bm25_opts *o, bool force, bm25_index **out,
                    bm25_report *rep, char *err);

/* Brings x up to s's latest change: a no-op costing one read when nothing changed, a replay of
 * the change log otherwise. With rebuild false, a lag that needs a new generation is refused
 * with QR_EUNAVAILABLE (the index is left as it was: callers fall back to FTS5 and rebuild
 * elsewhere); with rebuild true it is built (force: always). rep may be NULL. A handle with an
 * open batch sees writes that may be rolled back, so the index never learns from one: unless
 * nothing changed, QR_EUNAVAILABLE (QR_EINVAL with force).
 * Threads: any, each with its own store handle; catch-ups run one at a time. A build holds
 * nothing a search takes: while it reads the store and writes the new file, searches (and their
 * catch-ups of the published generation) go on; only the swap and the catch-up after it, both
 * short, make a search's catch-up wait. Once a catch-up found the lag too big for a replay,
 * searches answer QR_EUNAVAILABLE at once (no repeated replay attempts) until a build swaps. */
qr_status bm25_sync(bm25_index *x, store *s, bool rebuild, bool force, bm25_report *rep, char *err);

/* For tests: fn(arg) runs on the building thread after each build has written its file and
 * before it is swapped in (a slow build, made visible). NULL removes it. Set before builds run. */
void bm25_set_build_hook(bm25_index *x, void (*fn)(void *arg), void *arg);

/* Frees the index; NULL is a no-op. Every other call on it must have returned. */
void bm25_close(bm25_index *x);

void bm25_get_info(bm25_index *x, bm25_info *out);

/* What <data_dir>/bm25/current.bm25's header says (generation counter, rows, terms, file size;
 * counter = generation_counter), without opening, checking or catching up the index: for
 * `quarry stats`. QR_ENOTFOUND when there is no file, QR_EIO when it is not a BM25 index. */
qr_status bm25_peek(const char *data_dir, bm25_info *out, char *err);

#define BM25_TERMS_MAX 1024 /* words in one search (repeats count) */

/* The top `limit` chunks for the OR of terms (indexed forms as store_tokenize gives them;
 * repeats count twice, as in FTS5) with column weights weights[0..3) (title, headings, body;
 * finite, >= 0), best first, scores negated bm25 (higher is better), ties by smaller chunk id;
 * at most max_per_doc per document when > 0 (each document's best). Only chunks of documents
 * whose ACL holds one of principals pass, or every chunk for all_documents. First catches up
 * with s as bm25_sync(x, s, false, false): QR_EUNAVAILABLE when that needs a rebuild. s is also
 * read for principals not cached yet. *n gets the number written to out (room for limit).
 * cancel (NULL: none) is checked before anything and every few hundred candidates: the search
 * then stops with its status (QR_ETIMEOUT, QR_ECANCELED; *n is 0). QR_EINVAL for bad arguments
 * or an invalid principal, QR_ELIMIT past BM25_TERMS_MAX or STORE_FILTER_PRINCIPALS_MAX. */
qr_status bm25_search(bm25_index *x, store *s, const char *const *terms, size_t nterms,
                      const double weights[3], const char *const *principals, size_t nprincipals,
                      bool all_documents, size_t max_per_doc, size_t limit, store_hit *out, size_t *n,
                      qr_cancel *cancel, char *err);

/* Which of the chunks ids[0..n) the caller may read, from the index's own rows and permission
 * sets instead of a store lookup per chunk (the vector list's permission test: retrieval.c):
 * docs[i] gets the chunk's document key, or -1 when the chunk is gone (deleted, or never in the
 * store) or, unless all_documents, its document's ACL holds none of principals. Catches up with s
 * first, as bm25_search does (QR_EUNAVAILABLE when that needs a rebuild); chunks the index does
 * not hold get -2: the caller asks the store about those. The same answers as store_filter_ids
 * with a filter of principals (or all_documents) alone, as of the store's latest change. */
qr_status bm25_filter_chunks(bm25_index *x, store *s, const char *const *principals, size_t nprincipals,
                             bool all_documents, const int64_t *ids, size_t n, int64_t *docs, char *err);

#endif
