/*
 * The store's handle for other files of index/ only (index/bm25.c): SQLite stays inside
 * index/. Not part of the public interface in index/index.h.
 */
#ifndef QUARRY_STORE_INT_H
#define QUARRY_STORE_INT_H

#include <sqlite3.h>

#include "index/store.h"

/* The store's connection. The caller must not leave a transaction or statement open on it. */
sqlite3 *store_db(store *s);

#endif
