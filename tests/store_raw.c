#include "tests/store_raw.h"

#include <stdio.h>

sqlite3 *store_raw_open(const char *dir, int flags)
{
    char path[1024];
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    if (snprintf(path, sizeof(path), "%s/quarry.db", dir) >= (int)sizeof(path))
        return NULL;
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        snprintf(path, sizeof(path), "%s/quarry.fts", dir);
        rc = sqlite3_prepare_v2(db, "ATTACH DATABASE ?1 AS fts", -1, &q, NULL);
    }
    if (rc == SQLITE_OK && (rc = sqlite3_bind_text(q, 1, path, -1, SQLITE_TRANSIENT)) == SQLITE_OK &&
        (rc = sqlite3_step(q)) == SQLITE_DONE)
        rc = SQLITE_OK;
    sqlite3_finalize(q);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "store_raw_open(%s): %s\n", dir, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    return db;
}
