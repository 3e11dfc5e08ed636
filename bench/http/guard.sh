#!/usr/bin/env bash
# bench/http/guard.sh: abusive clients against `quarry serve` (bench_http_guard), for bench/README.md.
#
#   bench/http/guard.sh [KEY=VALUE]...      (extra settings for the server, as --set arguments)
#
# Starts a fresh server for each scenario (server.max_connections=200 as in issue #16, otherwise
# the defaults and the given settings; no LDAP: every abusive request is unauthenticated and the
# normal client asks the public /healthz), runs bench_http_guard against it and prints the rows:
# bodies sent without credentials (20 and 60 connections, the server's resident memory), one
# slowloris connection (a header line every second), and 250 slow connections from one address
# while a normal client asks from another and from the same one.
# Environment: QUARRY_BIN (default build/release/quarry), GUARD_BIN (default
# build/release/bench_http_guard), BENCH_DIR (default build/bench-guard).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
quarry=${QUARRY_BIN:-$root/build/release/quarry}
guard=${GUARD_BIN:-$root/build/release/bench_http_guard}
dir=${BENCH_DIR:-$root/build/bench-guard}
sets=()
for kv in "$@"; do sets+=(--set "$kv"); done
rm -rf "$dir"
mkdir -p "$dir"
pid=
stop() { if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=; fi; }
trap stop EXIT

# Starts a server on a free port with an empty data directory; sets pid and port.
start() {
    rm -rf "$dir/data"
    port=$(( 20000 + RANDOM % 10000 ))
    QUARRY_LOG_LEVEL=warn "$quarry" --data "$dir/data" --set server.listen=127.0.0.1:$port \
        --set server.max_connections=200 "${sets[@]}" serve >"$dir/serve.out" 2>"$dir/serve.err" &
    pid=$!
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { echo "guard.sh: quarry serve exited: $(tail -3 "$dir/serve.err")" >&2; exit 1; }
        sleep 0.1
    done
    echo "guard.sh: quarry serve did not answer" >&2
    exit 1
}

echo "| scenario | connections | MiB sent | server RSS before (MiB) | RSS while they hold | growth | seconds sending | answers |"
echo "|---|---|---|---|---|---|---|---|"
for conns in 20 60; do
    start
    "$guard" "$port" "$pid" preauth "$conns" 33554432 /v1/documents
    stop
done
start
"$guard" "$port" "$pid" preauth 20 33554432 /v1/search
stop
echo
echo "| scenario | result |"
echo "|---|---|"
start
"$guard" "$port" "$pid" slow-one 1 60
stop
echo
echo "| scenario | slow connections held after 1 s | a normal client meanwhile | slow connections left at the end |"
echo "|---|---|---|---|"
start
"$guard" "$port" "$pid" slow-many 250 10 15
stop
