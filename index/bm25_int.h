/*
 * Private to the pruned BM25 index's files (bm25.c, bm25_file.c, bm25_build.c, bm25_catchup.c,
 * bm25_search.c): the index's handle, the generation file's layout, the build's and the delta's
 * structures, and the helpers they share.
 */
#ifndef QUARRY_INDEX_BM25_INT_H
#define QUARRY_INDEX_BM25_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "index/feed.h"
#include "index/text.h"

#define NCOLS       3
#define BLOCK       128              /* postings per block */
#define DOC_KEY_MAX (UINT32_MAX - 1) /* document keys are stored as 32 bits */
#define UNION_CACHE 64               /* callers whose unions of principal sets are kept */

/* ---- the file (bm25_file.c) ------------------------------------------------------------------ */

typedef struct {
    char magic[8];
    uint32_t version, ncols;
    int64_t counter; /* the store change counter the generation was built from */
    uint64_t nrows, nterms, nblocks, total_len, data_len, strings_len;
    uint64_t off_ids, off_docs, off_lens, off_terms, off_strings, off_blocks, off_data, size;
    uint64_t checksum; /* of every byte after the header */
    int64_t store_uid; /* store_uid of the store it was built from */
    uint64_t npostings;
    uint64_t reserved[1];
} file_header;

typedef struct {
    uint64_t str_off;
    uint32_t str_len, df;
    uint64_t first_block;
    uint32_t nblocks, min_len;
    uint32_t max_tf[NCOLS];
    uint32_t pad;
} file_term;

typedef struct {
    uint32_t first_row, last_row;
    uint64_t data_off;
    uint32_t n, min_len;
    uint32_t max_tf[NCOLS];
    uint32_t pad;
} file_block;

/* ---- a string-keyed map (bm25_build.c; open addressing; values are indices) ----------------- */

typedef struct {
    char **keys;
    uint32_t *hashes;
    size_t *vals;
    size_t cap, n; /* cap is 0 or a power of two */
} smap;

/* ---- tokenising a chunk and building a generation (bm25_build.c) --------------------------- */

/* The distinct terms of one chunk with their occurrences per column: a table over a byte pool,
 * reset (not freed) between chunks, since a build tokenises millions of them. */
typedef struct {
    uint32_t hash, off, len; /* the term is pool[off, off + len), NUL-terminated */
    uint32_t tf[NCOLS];
} chunk_term;

typedef struct {
    char *pool;
    size_t pool_len, pool_cap;
    uint32_t *slots; /* 0: empty, else an index into e plus one */
    size_t nslots;
    chunk_term *e;
    size_t n, cap;
    int col;
    uint32_t len; /* tokens over all columns */
} chunk_terms;

typedef struct {
    unsigned char *data;
    size_t len, cap;
    file_block *blocks;
    size_t nblocks, cap_blocks;
    file_block cur; /* the open block (cur.n postings) */
    uint32_t prev_row, df;
    uint32_t max_tf[NCOLS], min_len;
} term_builder;

typedef struct {
    store *s;
    smap terms; /* term -> index into tb */
    term_builder *tb;
    size_t ntb, cap_tb;
    int64_t *ids;
    uint32_t *docs, *lens;
    size_t nrows, cap_rows;
    uint64_t total_len;
    chunk_terms ct;
} builder;

/* ---- the index (bm25.c) --------------------------------------------------------------------- */

/* A term's postings among the rows added since the generation. Frequencies are packed in 32
 * bits: title (7 bits) << 24 | headings (8) << 16 | body (16); larger ones have the top bit set
 * and the index of their three counts in the index's d_over. */
typedef struct {
    uint32_t *rows;
    uint32_t *tfp;
    size_t n, cap;
    uint32_t max_tf[NCOLS], min_len;
} delta_list;

#define TF_OVER 0x80000000u

typedef struct {
    char *name;
    uint64_t *bits;
    size_t nwords;
    uint64_t used; /* tick of the last search that used it */
} pset;

typedef struct {
    size_t dead; /* generation rows of the term among dead_gen[0..upto) */
    size_t upto;
} df_entry;

struct bm25_index {
    char *dir;
    bm25_opts o;
    pthread_rwlock_t lock;      /* searches read; catch-up and swaps write */
    pthread_mutex_t sync_mu;    /* one catch-up or swap at a time (not held while building) */
    pthread_mutex_t build_mu;   /* one build at a time */
    pthread_mutex_t cache_mu;   /* principal sets, the df cache, the tick */
    bool broken;                /* a catch-up failed halfway: rebuild before searching */
    int building;               /* a generation is being built (atomic) */
    bool lagging;               /* the published generation cannot be caught up (under sync_mu) */
    void (*build_hook)(void *); /* tests: runs after a build, before its swap */
    void *build_hook_arg;

    /* the generation, mapped */
    void *map;
    size_t map_len;
    const file_header *h;
    const int64_t *gen_ids;
    const uint32_t *gen_docs, *gen_lens;
    const file_term *terms;
    const char *strings;
    const file_block *blocks;
    const unsigned char *data;
    size_t gen_rows;

    /* rows after the generation's */
    int64_t *d_ids;
    uint32_t *d_docs, *d_lens;
    size_t d_rows, d_cap;
    smap d_terms; /* term -> index into dl */
    delta_list *dl;
    size_t ndl, cap_dl;
    uint32_t (*d_over)[NCOLS]; /* frequencies too large to pack */
    size_t n_over, cap_over;

    /* tombstones */
    uint64_t *dead; /* bitset over all rows */
    size_t dead_words;
    uint32_t *dead_gen; /* generation rows deleted, in the order they were */
    size_t ndead_gen, cap_dead_gen;
    size_t ndead;

    uint64_t live_rows, live_len;
    uint32_t max_doc; /* largest document key of any row */
    int64_t counter;
    size_t changes; /* chunk changes since the generation */

    /* permissions and caches (cache_mu) */
    pset *ps;
    size_t nps;
    /* callers' unions of sets, by principal list; emptied (under the write lock) whenever a
     * document's ACL may have changed, so a search may use one while it holds the read lock */
    struct caller_union {
        uint64_t key;
        char **principals; /* sorted copies */
        size_t np;
        uint64_t *bits;
        size_t nwords;
        /* groups[g] = how many of the 64-row groups before g hold a row of a readable document,
         * for g <= ngroups (the whole groups of rows when the union was made): a block of
         * postings within groups holding none is skipped undecoded (bm25_search.c) */
        uint32_t *groups;
        size_t ngroups;
        uint64_t *rows; /* a bit per generation row (nrows of them): its document is readable */
        size_t nrows;
        uint64_t used; /* tick of the last search that took it */
        int refs;      /* searches using it now: it is not evicted while > 0 */
    } unions[UNION_CACHE];
    size_t nunions;
    uint64_t tick;
    uint64_t blocks_decoded, blocks_skipped; /* atomic counters, for bm25_info */
    smap df_terms;                           /* term -> index into dfc */
    df_entry *dfc;
    size_t ndfc;
};

/* A row's document key, its length in tokens, whether it is tombstoned (inline: a search asks
 * for every candidate row). */
static inline uint32_t bm25_row_doc(const bm25_index *x, uint32_t row)
{
    return row < x->gen_rows ? x->gen_docs[row] : x->d_docs[row - x->gen_rows];
}

static inline uint32_t bm25_row_len(const bm25_index *x, uint32_t row)
{
    return row < x->gen_rows ? x->gen_lens[row] : x->d_lens[row - x->gen_rows];
}

static inline bool bm25_row_dead(const bm25_index *x, uint32_t row)
{
    return (size_t)(row >> 6) < x->dead_words && (x->dead[row >> 6] >> (row & 63) & 1);
}

/* bm25.c */
void bm25_unions_clear(bm25_index *x);
void bm25_psets_clear(bm25_index *x);
void bm25_dfcache_clear(bm25_index *x);
void bm25_drop_state(bm25_index *x);

/* bm25_catchup.c: the row of chunk_id (generation or delta, dead or alive), or UINT32_MAX. Caller
 * holds x->lock. */
uint32_t bm25_find_row(const bm25_index *x, int64_t chunk_id);

/* bm25_file.c */
const unsigned char *bm25_get_varint(const unsigned char *p, const unsigned char *end, uint32_t *v);
size_t bm25_encode_posting(unsigned char *out, uint32_t delta, const uint32_t tf[NCOLS]);
qr_status bm25_write_generation(builder *b, const char *dir, int64_t counter, int64_t uid, char *err);
void bm25_remove_leftovers(const char *dir);
qr_status bm25_load_generation(bm25_index *x, char *err);

/* bm25_build.c */
bool bm25_close_block(term_builder *b);
uint32_t bm25_hash_str(const char *s, size_t n);
void bm25_smap_free(smap *m);
bool bm25_smap_get(const smap *m, const char *key, size_t n, size_t *val);
bool bm25_smap_put(smap *m, const char *key, size_t n, size_t *val, bool *added);
void bm25_chunk_terms_free(chunk_terms *c);
/* The store_token_fn that gathers a chunk's terms into a chunk_terms (ctx). */
qr_status bm25_on_chunk_token(void *ctx, const char *form, size_t form_len, size_t start, size_t end,
                              char *err);
qr_status bm25_tokenize_chunk(store *s, const store_text *t, chunk_terms *c, char *err);
qr_status bm25_rebuild(bm25_index *x, store *s, bm25_report *rep, char *err);

/* bm25_catchup.c */
bool bm25_set_bit(uint64_t **bits, size_t *nwords, size_t bit);

#endif
