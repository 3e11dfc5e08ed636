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

#endif
