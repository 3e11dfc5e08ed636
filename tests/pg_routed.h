/*
 * A throwaway PostgreSQL (tests/pg_fixture.c) named as the process's system of record
 * (store_set_primary), one per test case, for the tests of several nodes on PostgreSQL
 * (test_nodes, test_shared, test_jobs_shared, test_limits).
 */
#ifndef QUARRY_TEST_PG_ROUTED_H
#define QUARRY_TEST_PG_ROUTED_H

#include <stdbool.h>

#include "index/store.h"
#include "tests/pg_fixture.h"

/* The running case's server. */
extern pg_fixture fx;

/* Starts it and names it the primary (fence budget 5 s), logging errors only; exits with
 * PG_FIXTURE_SKIP when PostgreSQL is not installed; false (the failure recorded) otherwise. */
bool start_pg(void);
/* Stops and removes it; a no-op once stopped (a case that stops it itself). */
void stop_pg(void);

/* Each case runs on a server of its own, stopped and removed even when a check fails. */
#define RUN_WITH_PG(name)          \
    do {                           \
        if (start_pg()) {          \
            run_##name();          \
            store_clear_primary(); \
            stop_pg();             \
        }                          \
    } while (0)

/* Nothing listens on port 1: a primary this node cannot reach (etcd down: Patroni demoted the
 * leader and HAProxy has none to offer). */
#define NO_PRIMARY "host=127.0.0.1 port=1 user=quarry dbname=postgres connect_timeout=2"

#endif
