/*
 * Private to the files of the vector index (vindex.c, vindex_files.c, vindex_build.c,
 * vindex_search.c, vindex_scan.c): the handle, its snapshots and manifest, and the helpers they share. FAISS
 * types appear here, so nothing outside those files includes it.
 */
#ifndef QUARRY_INDEX_VINDEX_IMPL_H
#define QUARRY_INDEX_VINDEX_IMPL_H

#include <faiss/c_api/Index_c.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/core.h"
#include "index/vector.h"
#include "index/vindex_int.h"

#define MANIFEST_NAME "MANIFEST"
#define MANIFEST_TMP  "MANIFEST.tmp"
#define MANIFEST_MAX  (64u << 10)

typedef struct {
    int64_t *keys; /* -1: empty */
    int64_t *vals;
    size_t cap, n; /* cap is a power of two */
} idmap;

typedef struct {
    uint64_t generation;
    vtype type;
    int dim;
    uint64_t count;
    uint64_t nlist;
    int64_t store_counter;
    uint64_t index_size, index_hash;
    uint64_t vectors_size, vectors_hash;
    uint64_t skipped; /* chunks without a usable vector, listed in gen-N.skip (none: no file) */
    uint64_t skip_size, skip_hash;
    bool external; /* rows mode: gen-N.vec holds the ids only, the rows are rows_uid's */
    int64_t rows_uid;
} manifest;

/* What a search sees. The main part (index, mapped vectors) never changes; the delta and the
 * tombstones grow under `lock`. */
typedef struct vsnap {
    int refs; /* guarded by vindex.snap_lock */
    uint64_t generation;
    vtype type;
    int dim;
    size_t nlist;
    int64_t built_counter;
    FaissIndex *index;
    void *map;
    size_t map_len;
    const int64_t *ids; /* count ascending chunk ids */
    const float *rows;  /* count * dim; NULL in rows mode */
    const float *base;  /* rows mode: the row of chunk id i at base + i * dim; NULL otherwise */
    size_t count;

    pthread_rwlock_t lock;
    int64_t *d_ids;
    float *d_rows;
    int64_t *d_counter;
    size_t d_n, d_cap;
    idmap d_pos;         /* id -> position in the delta */
    idmap tomb;          /* id -> counter of the removal */
    idmap skip;          /* id -> counter: chunks without a usable vector, never searched */
    size_t skip_removed; /* ids of `skip` that are also in `tomb` */
    int64_t store_counter;

    /* IVF generations: the inverted lists' members, their chunk ids and their positions into
     * ids/rows (list l holds lay_ids/lay_pos[lay_off[l] .. lay_off[l + 1])), read by the first
     * vindex_search_permitted (vindex_scan.c) under lay_lock; lay_ready is set once complete. */
    pthread_mutex_t lay_lock;
    bool lay_ready;
    uint32_t *lay_off;
    int64_t *lay_ids;
    uint32_t *lay_pos;
    /* built with the layout (vindex_i8.c): the rows' int8 codes and scales in layout order, the
     * coarse centroids as floats and as int8 codes */
    int8_t *i8_codes;
    float *i8_scale;
    uint32_t *i8_at; /* row -> place in the layout */
    float *cent;
    int8_t *i8_cent;
    float *i8_cscale;
} vsnap;

struct vindex {
    char *dir;
    int dim;
    vindex_opts opts;
    char type_str[16];
    vtype type;
    int lock_fd;
    uint64_t next_gen;
    bool external; /* rows mode (vindex_open_rows): the main rows are read through `rows` */
    vindex_rows rows;

    pthread_mutex_t snap_lock; /* guards cur and every snapshot's refs */
    vsnap *cur;
    pthread_mutex_t write_lock;     /* serialises add, remove and the commit of a build */
    pthread_mutex_t build_lock;     /* one build at a time */
    uint64_t searches, exact_scans; /* atomic counters, for metrics */
};

/* vindex.c */
bool vindex_is_ivf(vtype t);
/* FAISS reports failures through a thread-local message; vindex_faiss_fail is the one place it
 * is read. */
qr_status vindex_faiss_fail(char *err, const char *what);
float vindex_dot_exact(const float *a, const float *b, int dim);
bool vindex_idmap_get(const idmap *m, int64_t key, int64_t *val);
qr_status vindex_idmap_reserve(idmap *m, size_t more);
void vindex_idmap_put(idmap *m, int64_t key, int64_t val);
void vindex_idmap_release(idmap *m);
vsnap *vindex_snap_new(int dim);
void vindex_snap_free(vsnap *s);
vsnap *vindex_snap_acquire(vindex *v);
void vindex_snap_release(vindex *v, vsnap *s);
ssize_t vindex_main_find(const vsnap *s, int64_t id);
/* The normalised row of the main rows' position pos, whose chunk id is id (s->ids[pos]): in the
 * generation's own copy, or in rows mode where the provider keeps it. */
static inline const float *vindex_main_row(const vsnap *s, size_t pos, int64_t id)
{
    return s->base ? s->base + (size_t)id * (size_t)s->dim : s->rows + pos * (size_t)s->dim;
}
qr_status vindex_apply_search_params(FaissIndex *index, vtype type, const vindex_opts *o, char *err);
int vindex_cmp_i64(const void *a, const void *b);

/* vindex_files.c */
char *vindex_path_join(const char *dir, const char *name);
qr_status vindex_hash_file(const char *path, uint64_t *size, uint64_t *hash, char *err);
qr_status vindex_mkdir_p(const char *dir, char *err);
void vindex_gen_name(char *out, size_t len, uint64_t gen, const char *ext);
qr_status vindex_manifest_format(const manifest *m, qr_buf *out);
qr_status vindex_manifest_parse(const char *path, const char *text, size_t len, manifest *m, char *err);
/* Writes gen-N.vec: ids (ascending) and rows, or the ids only (rows mode: rows unused). */
qr_status vindex_vec_write(const char *path, int dim, const int64_t *ids, const float *rows, size_t count,
                           bool ids_only, uint64_t *size, uint64_t *hash, char *err);
qr_status vindex_vec_map(vsnap *s, const char *path, const manifest *m, bool check_hash, char *err);
/* Rows mode: asks v's provider for the rows of s's ids (s->base); nothing to do for another mode
 * or no rows. On error s->base stays NULL and err has the provider's message. */
qr_status vindex_rows_attach(const vindex *v, vsnap *s, char *err);
/* Writes ascending chunk ids to path (gen-N.skip), syncs it, and returns its size and checksum. */
qr_status vindex_skip_write(const char *path, const int64_t *ids, size_t count, uint64_t *size,
                            uint64_t *hash, char *err);
qr_status vindex_load_generation(const vindex *v, const manifest *m, vsnap **out, char *err);
uint64_t vindex_max_generation_on_disk(const char *dir);
void vindex_remove_leftovers(const char *dir, uint64_t keep);

/* vindex_scan.c: the IVF layout (and with i8 the int8 codes), read by the first search that needs
 * it (*built_ms: how long that took, when this call read it). A handle asks with the same i8
 * always (vindex.scan). */
qr_status vindex_layout_get(vsnap *s, bool i8, double *built_ms, char *err);
/* Reads the layout and the int8 codes of a snapshot that will be served (vindex_open, a build's
 * publication) when o scans it by its codes, so that no search pays for it (about 2 s at 1M
 * vectors); on failure logs it, and the first search tries again. */
void vindex_layout_warm(const vindex_opts *o, vsnap *s);
/* The int8 scan of the main rows of IVF snapshot s (the caller holds s->lock for reading): the
 * probes lists nearest q (normalised) by the int8 centroids, re-ranked exactly; their live
 * members (those in permitted too when it is not NULL: n ascending ids) ranked by int8 codes;
 * the best max(rerank, 2k) of them scored exactly into cids/cscores (room for that many), their
 * number in *ncand. rep (may be NULL) gets walked and scored. */
qr_status vindex_i8_scan_main(vsnap *s, const float *q, size_t k, size_t probes, size_t rerank,
                              const int64_t *permitted, size_t n, qr_cancel *cancel, int64_t *cids,
                              float *cscores, size_t *ncand, vindex_scan_report *rep, char *err);

/* vindex_search_subset's exact top k by the int8 codes (the caller holds s->lock for reading;
 * list ascending, duplicates allowed): every listed row ranked by its codes with a bound on
 * their error, and those that may belong to the top k scored exactly; into out (k entries). */
qr_status vindex_i8_subset(vsnap *s, const float *q, size_t k, const int64_t *list, size_t n,
                           qr_cancel *cancel, int64_t *ids, float *scores, size_t *found, char *err);

/* vindex_i8.c */
/* True when o asks for the int8 scan (vindex.scan; NULL means the default, int8). */
bool vindex_scan_int8(const vindex_opts *o);
/* True when a generation of this type is scanned by the int8 codes under o: ivf_flat and ivf_sq8
 * (ivf_pq keeps FAISS's fast scan: its point is a small index, and the codes take 385 MB at 1M). */
bool vindex_i8_serves(const vindex_opts *o, vtype type);
/* Fills s->i8_codes, i8_scale, cent, i8_cent and i8_cscale from the rows in layout order and
 * the IVF quantizer; called under s->lay_lock once the layout is read. */
qr_status vindex_i8_prepare(vsnap *s, char *err);
/* out[j] = scale[at[j]] times the dot product of q with the codes of row at[j] (rows far
 * apart: the next ones are prefetched). */
void vindex_i8_dots_at(const int8_t *codes, const float *scale, const uint32_t *at, size_t n, int dim,
                       const int8_t *q, float *out);
/* The candidates an int8 scan re-scores exactly for top k under o. */
size_t vindex_i8_rerank(const vindex_opts *o, size_t k);

/* vindex_build.c: the test hook (vindex_test_set_hook) at a named stage */
void vindex_hook(const char *stage);

#endif
