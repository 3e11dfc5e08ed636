#!/usr/bin/env bash
# The failover check of the loopback cluster (issue #24): with `harness.sh up DIR` done, runs
# failover.py against DIR (a writer through HAProxy, the leader SIGKILLed, the failover time, lost
# acknowledged rows, replay lag and a standby follower's visibility delay). Extra arguments go to
# failover.py (--before S, --after S, --timeout S, --payload BYTES). Exit 1 when a row was lost or
# no new primary took writes in time.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: failover.sh DIR [--before S] [--after S] [--timeout S] [--payload BYTES]" >&2; exit 2; }
DIR=$1
shift
[ -r "$DIR/cluster.env" ] || { echo "failover: error: no cluster in $DIR (run tests/cluster/harness.sh up $DIR first)" >&2; exit 1; }
/usr/bin/python3 -c 'import psycopg2' 2>/dev/null ||
  { echo "failover: error: python3-psycopg2 is not installed: run scripts/bootstrap" >&2; exit 1; }
exec /usr/bin/python3 "$(dirname "$0")/failover.py" "$DIR" "$@"
