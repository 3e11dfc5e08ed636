/* tests/pg_routed.c: see pg_routed.h. */
#include <stdio.h>
#include <stdlib.h>

#include "core/core.h"
#include "tests/harness.h"
#include "tests/pg_routed.h"

pg_fixture fx;
static bool pg_running;

void stop_pg(void)
{
    if (pg_running)
        pg_fixture_stop(&fx);
    pg_running = false;
}

bool start_pg(void)
{
    char err[512];
    int rc = pg_fixture_start(&fx, err);
    if (rc == PG_FIXTURE_SKIP) {
        printf("skipped: %s\n", err);
        exit(PG_FIXTURE_SKIP);
    }
    if (rc) {
        harness_fail(__FILE__, __LINE__, "cannot start PostgreSQL: %s", err);
        return false;
    }
    pg_running = true;
    char e2[QR_ERR_LEN];
    if (store_set_primary(fx.conninfo, NULL, 5000, e2)) {
        harness_fail(__FILE__, __LINE__, "store_set_primary: %s", e2);
        stop_pg();
        return false;
    }
    qr_log_configure(QR_LOG_ERROR, QR_LOG_TEXT, NULL, e2);
    return true;
}
