#!/usr/bin/env bash
# The failover checks of the loopback cluster (issue #24): with `harness.sh up DIR` done, runs
# failover.py against DIR: a writer through HAProxy, a follower on the read port, then the leader
# SIGKILLed (default) or, with --fault etcd, etcd stopped for --hold seconds. Other arguments:
# --before S, --after S, --timeout S, --payload BYTES. Exit 1 when an acknowledged row was lost or
# writes did not come back in time.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: failover.sh DIR [--fault leader|etcd] [--hold S] [--before S] [--after S] [--timeout S] [--payload BYTES]" >&2; exit 2; }
DIR=$1
shift
[ -r "$DIR/cluster.env" ] || { echo "failover: error: no cluster in $DIR (run tests/cluster/harness.sh up $DIR first)" >&2; exit 1; }
/usr/bin/python3 -c 'import psycopg2' 2>/dev/null ||
  { echo "failover: error: python3-psycopg2 is not installed: run scripts/bootstrap" >&2; exit 1; }
exec /usr/bin/python3 "$(dirname "$0")/failover.py" "$DIR" "$@"
