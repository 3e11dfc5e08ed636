/*
 * A test's own SQLite connection to a data directory's store, as the store sees it: quarry.db
 * with the full-text index's quarry.fts attached as "fts" (index/store_fts.c).
 */
#ifndef QUARRY_TEST_STORE_RAW_H
#define QUARRY_TEST_STORE_RAW_H

#include <sqlite3.h>

/* Opens <dir>/quarry.db with flags (SQLITE_OPEN_READWRITE, SQLITE_OPEN_READONLY), a 5 s busy
 * timeout, and <dir>/quarry.fts attached; NULL on failure (said on stderr). */
sqlite3 *store_raw_open(const char *dir, int flags);

#endif
