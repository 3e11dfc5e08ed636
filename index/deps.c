/*
 * Versions and self-checks of the libraries under the index module: SQLite (FTS5) and FAISS
 * (C API). The store and the vector index build on these; a broken installation is reported here
 * with the library's own message instead of failing later in the middle of an ingest.
 */
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "index/gpu/gpu.h"
#include "index/index.h"

#ifndef QUARRY_FAISS_VERSION
#error "QUARRY_FAISS_VERSION must be set by the build (parsed from faiss/Index.h)"
#endif
#ifndef QUARRY_FAISS_OPT_LEVEL
#define QUARRY_FAISS_OPT_LEVEL "generic"
#endif

const char *index_faiss_version(void)
{
    return QUARRY_FAISS_VERSION " (" QUARRY_FAISS_OPT_LEVEL ")";
}

const char *index_sqlite_version(void)
{
    return sqlite3_libversion();
}

static qr_status check_fts5(char *err)
{
    sqlite3 *db = NULL;
    char *msg = NULL;
    qr_status st = QR_OK;
    if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        st = qr_fail(err, QR_EINTERNAL, "cannot open an in-memory SQLite database: %s",
                     db ? sqlite3_errmsg(db) : "out of memory");
        goto out;
    }
    if (sqlite3_exec(db,
                     "CREATE VIRTUAL TABLE t USING fts5(body, tokenize = 'porter unicode61');"
                     "INSERT INTO t(body) VALUES ('Running quickly over bridges');",
                     NULL, NULL, &msg) != SQLITE_OK) {
        st = qr_fail(err, QR_EINTERNAL, "SQLite %s has no usable FTS5: %s", sqlite3_libversion(),
                     msg ? msg : sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_stmt *stmt = NULL;
    /* the porter stemmer must map "run" onto "Running" */
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM t WHERE t MATCH 'run'", -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW || sqlite3_column_int(stmt, 0) != 1) {
        st = qr_fail(err, QR_EINTERNAL, "SQLite FTS5 porter tokenizer does not stem: %s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(stmt);
out:
    sqlite3_free(msg);
    sqlite3_close(db);
    return st;
}

static qr_status check_faiss(char *err)
{
    FaissIndexFlatIP *index = NULL;
    qr_status st = QR_OK;
    const float vectors[3 * 4] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0.6f, 0.8f, 0};
    const float query[4] = {0, 0.8f, 0.6f, 0};
    float distances[2];
    idx_t labels[2];
    if (faiss_IndexFlatIP_new_with(&index, 4) != 0) {
        st = qr_fail(err, QR_EINTERNAL, "FAISS cannot create a flat index: %s", faiss_get_last_error());
        goto out;
    }
    if (faiss_Index_add((FaissIndex *)index, 3, vectors) != 0 ||
        faiss_Index_search((FaissIndex *)index, 1, query, 2, distances, labels) != 0) {
        st = qr_fail(err, QR_EINTERNAL, "FAISS flat index add/search failed: %s", faiss_get_last_error());
        goto out;
    }
    /* 0.8*0.6 + 0.6*0.8 = 0.96 beats 0.8 */
    if (labels[0] != 2 || labels[1] != 1 || distances[0] < 0.95f || distances[0] > 0.97f) {
        st = qr_fail(err, QR_EINTERNAL, "FAISS returned wrong neighbours (%lld, %lld)", (long long)labels[0],
                     (long long)labels[1]);
    }
out:
    faiss_Index_free((FaissIndex *)index);
    return st;
}

qr_status index_selfcheck(char *err)
{
    qr_status st = check_fts5(err);
    if (!st)
        st = check_faiss(err);
    return st;
}

bool index_gpu_compiled(void)
{
    return gpu_compiled();
}

int index_gpu_device_count(void)
{
    return gpu_device_count();
}

const char *index_gpu_cuda_version(void)
{
    return gpu_cuda_version();
}
