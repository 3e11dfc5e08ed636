/*
 * index/backup.h: consistent copies of what index/ keeps in a data directory (backup.c), for
 * `quarry backup` and `quarry restore`: the store through SQLite's online backup API, the
 * published generation of each index, and the checks a restored directory must pass.
 */
#ifndef QUARRY_INDEX_BACKUP_H
#define QUARRY_INDEX_BACKUP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"

/* What a backup of index/'s files holds, or what a checked data directory holds. */
typedef struct {
    int schema_version;        /* the store's schema version */
    int64_t change_counter;    /* the store's change counter in the copy */
    int64_t tombstones_pruned; /* deletions the store no longer lists, up to this counter */
    int64_t store_uid;
    bool has_vector;            /* a vector index generation was copied (or found) */
    uint64_t vector_generation; /* its number */
    int64_t vector_counter;     /* the store counter it reflects */
    bool has_bm25;              /* a BM25 generation was copied (or found) */
    int64_t bm25_counter;       /* the store counter it reflects */
    char note[256];             /* why an index was left out, or "" */
} index_backup_info;

/* The schema version this quarry writes and understands (the store's migrations). */
int index_store_schema_version(void);

/* Copies data_dir's store and published index generations into dest_dir, which must exist and be
 * empty: quarry.db (SQLite's backup API: one read transaction, so a snapshot of one commit,
 * while writers go on), vindex/ (MANIFEST and the generation it names) and bm25/current.bm25.
 * The indexes are copied before the store, so neither reflects a change the copied store lacks;
 * when the store forgot deletions an index copy still needs (the maintainer published and pruned
 * in between), everything is copied again (a few times), and an index that still lags is left
 * out, with info->note saying so: the maintainer rebuilds it after a restore. Every file is
 * synced. Works while `quarry serve` runs on data_dir (it never takes a lock a writer or the
 * maintainer waits on) and on a stopped one. On error dest_dir holds a partial copy (the caller
 * removes it). QR_ENOTFOUND when data_dir has no store. */
qr_status index_backup(const char *data_dir, const char *dest_dir, index_backup_info *info, char *err);

/* Checks the data directory index/ would serve: opens the store (migrating it when older; a
 * newer schema is refused with QR_EINVAL), PRAGMA integrity_check, foreign keys, the store's own
 * consistency rules and the FTS5 integrity-check (store_verify), then the vector index's files
 * against their manifest and the BM25 file against its checksum. info gets what was found. */
qr_status index_backup_verify(const char *data_dir, index_backup_info *info, char *err);

#endif
