/*
 * Private to index/: what the files of the vector index (vindex.c) and of the BM25 index
 * (bm25.c) are written and checked with. Not part of the public interface in index/index.h.
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

/* Writes all n bytes to fd (path names it in the error), retrying short writes and EINTR. */
qr_status index_write_all(int fd, const void *data, size_t n, const char *path, char *err);
/* fsync of a file, or of a directory (dir) after a rename in it. */
qr_status index_fsync_path(const char *path, bool dir, char *err);

#endif
