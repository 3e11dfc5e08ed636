/*
 * Private to index/: the checksum the files of the vector index (vindex_*.c) and of the BM25
 * index (bm25_file.c) are checked with. They are written with core's atomic file steps
 * (qr_write_all, qr_file_finish, ... in core/core.h).
 */
#ifndef QUARRY_INDEX_FILES_INT_H
#define QUARRY_INDEX_FILES_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* A 64-bit checksum over 32-byte stripes in four lanes, for catching truncated, torn or
 * bit-flipped files (not an adversary: the directories are ours). Fed in any number of pieces:
 * the value depends on the bytes only. */
typedef struct {
    uint64_t lane[4];
    uint8_t tail[32];
    size_t tail_n;
    uint64_t total;
} qhash;

void qhash_init(qhash *h);
void qhash_update(qhash *h, const void *data, size_t n);
uint64_t qhash_final(const qhash *h);
uint64_t qhash_bytes(const void *p, size_t n);

/* ---- backups (backup.c) ----------------------------------------------------------------------- */

/* What an index directory copied or checked for a backup holds: its published generation. */
typedef struct {
    bool present;        /* false: nothing built there yet */
    uint64_t generation; /* the vector index's generation number (0 for BM25) */
    int64_t counter;     /* the store change counter the generation reflects */
    int64_t store_uid;   /* BM25 only: the store it was built from */
} index_gen_copy;

/* Copies what fd reads to the new file dest (mode 0600, O_EXCL), synced and closed. src names
 * the source in errors. */
qr_status index_copy_fd(int fd, const char *src, const char *dest, char *err);

/* Copies the generation src_dir's MANIFEST names, and then the MANIFEST, into the existing,
 * empty dest_dir. The generation's files are opened before anything is copied, so a generation
 * published meanwhile (which removes the old files) makes the copy start again rather than mix
 * two; the copy is then checked against the manifest (vindex_check_files). */
qr_status vindex_backup_files(const char *src_dir, const char *dest_dir, index_gen_copy *out, char *err);
/* Checks dir's MANIFEST and every file it names (sizes and checksums). QR_EIO naming the file on
 * a mismatch; out->present false when there is no MANIFEST. */
qr_status vindex_check_files(const char *dir, index_gen_copy *out, char *err);
/* Copies src_dir/current.bm25 (the generation published when it is opened: generations replace
 * it by rename) into dest_dir and checks the copy (bm25_check_file). */
qr_status bm25_backup_file(const char *src_dir, const char *dest_dir, index_gen_copy *out, char *err);
/* Checks dir/current.bm25 whole: header, size and checksum. out->present false when absent. */
qr_status bm25_check_file(const char *dir, index_gen_copy *out, char *err);

#endif
