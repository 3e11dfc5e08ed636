/*
 * index: quarry's storage, as the rest of quarry sees it. This header gathers the module's
 * public headers, one per subsystem:
 *
 *   index/store.h       the document store (SQLite with FTS5) and the queries retrieval runs;
 *   index/text.h        the pruned BM25 index (bm25_*.c);
 *   index/vector.h      the vector index (FAISS; vindex*.c), sync.c which keeps it in step with
 *                       the store, and the GPU build path (gpu/);
 *   index/maintainer.h  the thread that keeps both indexes caught up;
 *   index/backup.h      consistent copies of the store and the indexes, and their checks.
 *
 * and declares the dependency layer (deps.c): library versions and runtime checks that the
 * libraries quarry links behave as the build promised. Only this module sees sqlite3 and FAISS
 * types. The store's change log and the indexes' feeds are private (index/feed.h). Files of
 * index/ include only the headers they need.
 */
#ifndef QUARRY_INDEX_H
#define QUARRY_INDEX_H

#include <stdbool.h>

#include "core/core.h"
#include "index/backup.h"
#include "index/maintainer.h"
#include "index/store.h"
#include "index/text.h"
#include "index/vector.h"

/* "1.7.3 (avx2)": the FAISS quarry was built against and its SIMD level. */
const char *index_faiss_version(void);
/* The SQLite library in use at run time ("3.40.1"). */
const char *index_sqlite_version(void);

/* Checks at run time that SQLite has FTS5 with the porter and unicode61 tokenizers, and that the
 * FAISS C API builds and searches an inner-product index. On failure returns QR_EINTERNAL with
 * the library's message in err. */
qr_status index_selfcheck(char *err);

/* Whether the CUDA build path was compiled in, and how many devices the driver reports (0 when
 * not compiled, no driver or no device). */
bool index_gpu_compiled(void);
int index_gpu_device_count(void);
/* CUDA runtime version the GPU path was compiled with ("13.0"), or "" when not compiled. */
const char *index_gpu_cuda_version(void);

#endif
