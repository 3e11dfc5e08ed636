/*
 * A throwaway PostgreSQL 15 server for tests: initdb into a temporary directory, postgres on a
 * free loopback port (its unix socket in the same directory, fsync off), run as the postgres
 * system user when the test runs as root (through setpriv), as the test's user otherwise.
 *
 * A watchdog process, detached from the test, owns the server: it stops it and removes the
 * directory when pg_fixture_stop asks, and just as well when the test process ends in any other
 * way (a failed check that exits, a crash, a SIGKILL from ctest's timeout), because then the pipe
 * it waits on closes. Nothing is left running or on disk after a test.
 */
#ifndef QUARRY_TEST_PG_FIXTURE_H
#define QUARRY_TEST_PG_FIXTURE_H

#ifndef PG_FIXTURE_BIN /* another PostgreSQL's programs: -DPG_FIXTURE_BIN=... */
#define PG_FIXTURE_BIN "/usr/lib/postgresql/15/bin"
#endif
#define PG_FIXTURE_SKIP 77 /* PostgreSQL is not installed here: the case reports "skipped" */

typedef struct {
    char dir[128];      /* the temporary directory: data/, the socket, the logs */
    int port;           /* on 127.0.0.1 */
    char conninfo[256]; /* libpq conninfo of the server as the superuser "quarry" */
    int ctl_fd;         /* closing it tells the watchdog to stop the server */
    int done_fd;        /* reads EOF once the watchdog has stopped it and removed dir */
} pg_fixture;

/* Starts a fresh server and waits (up to 60 s) until it accepts connections. Returns 0, or
 * PG_FIXTURE_SKIP when PostgreSQL (or, as root, the postgres user) is missing, or 1 on failure;
 * err (512 bytes) says why. Nothing is left behind on failure. */
int pg_fixture_start(pg_fixture *f, char *err);
/* Starts a hot standby of primary (pg_basebackup, streaming replication); same returns. */
int pg_fixture_start_standby(pg_fixture *f, const pg_fixture *primary, char *err);
/* Stops the server and removes its directory; waits until both are done. */
void pg_fixture_stop(pg_fixture *f);

#endif
