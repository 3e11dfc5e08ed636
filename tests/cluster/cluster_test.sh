#!/usr/bin/env bash
# The quarry cluster test of issue #24 (`make cluster-test`):
#
#   cluster_test.sh DIR QUARRY_BIN [cluster_test.py options]
#
# Starts a throwaway slapd (tests/fixtures/slapd-fixture.sh) and the loopback cluster in DIR
# (tests/cluster/harness.sh up: etcd, two PostgreSQL under Patroni, HAProxy), runs
# tests/cluster/cluster_test.py against them (three `quarry serve` nodes with store.backend =
# postgres on the ports the harness reserved, a fourth started during the run, one on the SQLite
# backend for comparison), then stops every quarry node it started and the cluster, also when a
# step fails or the run is interrupted. The driver's last line is the summary
# `cluster: lost=N stale=N fresh_p99_ms=N order_mismatch=N bootstrap_mismatch=N failover_s=N ...`;
# the exit status is non-zero when it failed. The whole run is cut at CLUSTER_TEST_TIMEOUT
# seconds (default 600).
set -euo pipefail
[ $# -ge 2 ] || {
  echo "usage: cluster_test.sh DIR QUARRY_BIN [cluster_test.py options]" >&2
  exit 2
}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DIR=$(realpath -m "$1")
QUARRY=$(realpath -m "$2")
shift 2
/usr/bin/python3 -c 'import psycopg2' 2>/dev/null ||
  { echo "cluster: error: python3-psycopg2 is not installed: run scripts/bootstrap" >&2; exit 1; }
[ -x "$QUARRY" ] || { echo "cluster: error: $QUARRY is not an executable quarry binary (make build)" >&2; exit 1; }

# SIGTERM to every quarry process this run started (their pids in DIR/quarry-pids, checked to be
# a quarry naming DIR, so that a recycled pid is never signalled), SIGKILL after 15 s.
stop_nodes() {
  local f pid
  [ -d "$DIR/quarry-pids" ] || return 0
  for f in "$DIR"/quarry-pids/*; do
    [ -r "$f" ] || continue
    pid=$(cat "$f")
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$DIR/"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 75); do
        [ -d "/proc/$pid" ] || break
        sleep 0.2
      done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

fixture_log=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_nodes
  "$HERE/harness.sh" down "$DIR" || rc=1
  [ -n "$fixture_log" ] && rm -f "$fixture_log"
  exit "$rc"
}

# A quarry data directory left by an earlier run would not be a fresh follower of this cluster.
if [ -e "$DIR/quarry" ]; then
  stop_nodes
  rm -rf "${DIR:?}/quarry" "${DIR:?}/quarry-pids"
fi
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$HERE/harness.sh" up "$DIR" >/dev/null

# The driver runs inside the slapd fixture, in this process group (timeout --foreground), so that
# Ctrl-C reaches it and it stops its nodes before the cluster goes down. The fixture's own words
# and the slapd log it prints when its command fails go to a file, out of the way of the summary
# line (shown when the fixture itself could not start: 125); the driver's stderr stays ours.
fixture_log=$(mktemp)
rc=0
timeout --foreground --signal=TERM --kill-after=30 "${CLUSTER_TEST_TIMEOUT:-600}" \
  "$REPO/tests/fixtures/slapd-fixture.sh" -- \
  /bin/sh -c 'exec 2>&3 3>&-; exec "$@"' sh /usr/bin/python3 "$HERE/cluster_test.py" "$DIR" "$QUARRY" "$@" \
  3>&2 2>"$fixture_log" || rc=$?
[ $rc -eq 125 ] && cat "$fixture_log" >&2
[ $rc -eq 124 ] && echo "cluster: error: the run was cut after ${CLUSTER_TEST_TIMEOUT:-600} s" >&2
exit $rc
