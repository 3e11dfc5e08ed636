#!/usr/bin/env bash
# bench/http/run.sh: wrk against quarry's POST /v1/search, for bench/README.md.
#
#   bench/http/run.sh [CHUNKS] [SECONDS]      (default 100000 chunks, 10 s per run)
#
# Builds a corpus of CHUNKS one-chunk documents from a fixed vocabulary (seeded, so every run has
# the same text), spread over four ACL groups, ingests it with `quarry ingest --jsonl` into a
# fresh data directory, starts the slapd fixture and `quarry serve`, gets a bearer token for each
# user, then runs wrk at 1, 16 and 64 connections: GET /v1/me (HTTP and authentication alone, the
# baseline), then searches in bm25, vector and hybrid modes, and prints one table row per run, with
# the share of the server's search time in each stage (from /metrics' quarry_search_stage_seconds,
# read before and after the run). Needs wrk (Debian package `wrk`).
# Environment: QUARRY_BIN (default build/release/quarry), BENCH_DIR (default build/bench-http),
# BENCH_MODES (default "me bm25 vector hybrid"), BENCH_CONNS (default "1 16 64"), BENCH_REUSE=1
# (keep BENCH_DIR's corpus and data directory from an earlier run of the same CHUNKS: at 1M the
# ingest takes a quarter of an hour), BENCH_ACL (how documents are shared: "groups4", the default,
# spreads them over four principals in turn, so alice may read half; "issue" is issue #23's layout:
# 89% readable by group eng-backend (alice), 10% by eng-frontend (bob), 1% by user erin alone),
# BENCH_USERS (who searches: default alice; any of alice, bob, erin, dave), BENCH_MODES=none (only
# ingest and wait for the indexes). The runs start once /v1/status says both indexes are warm and
# the maintainer idle.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
chunks=${1:-100000}
secs=${2:-10}
if [ "${BENCH_INSIDE:-}" != 1 ]; then
    command -v wrk >/dev/null || { echo "bench/http: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
    BENCH_INSIDE=1 exec "$root/tests/fixtures/slapd-fixture.sh" -- "$0" "$@"
fi
quarry=${QUARRY_BIN:-$root/build/release/quarry}
dir=${BENCH_DIR:-$root/build/bench-http}
unset QUARRY_BIN
acl_layout=${BENCH_ACL:-groups4}
case $acl_layout in
    groups4) marker="$dir/ingested-$chunks" ;;
    issue) marker="$dir/ingested-$chunks-issue" ;;
    *) echo "bench/http: BENCH_ACL must be groups4 or issue" >&2; exit 2 ;;
esac
reuse=0
if [ "${BENCH_REUSE:-0}" = 1 ] && [ -f "$marker" ]; then
    reuse=1
else
    rm -rf "$dir"
    mkdir -p "$dir"
fi
export QUARRY_DATA_DIR="$dir/data" QUARRY_LOG_LEVEL=warn
export QUARRY_LDAP_URI="$QUARRY_TEST_LDAP_URI" QUARRY_LDAP_BIND_DN="$QUARRY_TEST_LDAP_BIND_DN"
export QUARRY_LDAP_BIND_PASSWORD="$QUARRY_TEST_LDAP_BIND_PW"
export QUARRY_LDAP_USER_BASE="ou=people,$QUARRY_TEST_LDAP_BASE" QUARRY_LDAP_GROUP_BASE="ou=groups,$QUARRY_TEST_LDAP_BASE"

# 2,000 pseudo-words; each document is 40 to 80 of them (one chunk), titled with three.
[ $reuse = 1 ] || awk -v n="$chunks" -v layout="$acl_layout" 'BEGIN {
    srand(42); split("ba ce di fo gu ha je ki lo mu na pe ri so tu va we xi yo zu", syl, " ");
    for (i = 1; i <= 2000; i++) { w = ""; len = 2 + int(rand() * 3);
        for (j = 0; j < len; j++) w = w syl[1 + int(rand() * 20)]; vocab[i] = w }
    split("group:eng-backend group:eng-frontend group:staff user:erin", acl, " ");
    for (d = 0; d < n; d++) {
        len = 40 + int(rand() * 40); text = "";
        for (j = 0; j < len; j++) { r = rand(); text = text (j ? " " : "") vocab[1 + int(r * r * 2000)] }
        if (layout == "issue") p = d % 100 == 0 ? "user:erin" : d % 100 <= 10 ? "group:eng-frontend" : "group:eng-backend";
        else p = acl[1 + d % 4];
        printf "{\"_id\":\"doc-%06d\",\"title\":\"%s %s %s\",\"text\":\"%s\",\"acl\":[\"%s\"]}\n", d,
            vocab[1 + int(rand() * 2000)], vocab[1 + int(rand() * 2000)], vocab[1 + int(rand() * 2000)], text, p
    }
    words = ""; for (i = 1; i <= 300; i++) words = words vocab[i] " "; print words > "/dev/stderr"
}' > "$dir/corpus.jsonl" 2> "$dir/words.txt"
if [ $reuse = 0 ]; then
    t0=$(date +%s)
    "$quarry" ingest --jsonl "$dir/corpus.jsonl" >/dev/null 2>"$dir/ingest.log"
    echo "ingested $chunks documents in $(( $(date +%s) - t0 )) s" >&2
    touch "$marker"
fi

port=$(( 20000 + RANDOM % 10000 ))
# Requests already run in parallel on the server's workers: FAISS's own OpenMP threads per search
# would only spin against them (OMP_NUM_THREADS is read when the library loads, hence here).
# wrk's 64 connections all come from one address: no per-address limit (default 64) in the way.
# Every request is alice's: without a share as large as the workers, most would get 429
# (server.user_share keeps one user to 4 of the 16 workers by default); this measures the server,
# not the fairness.
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$quarry" --set server.listen=127.0.0.1:$port \
    --set server.per_ip_connections=0 --set server.user_share=1024 --set auth.admin_groups=ops serve \
    >"$dir/serve.out" 2>"$dir/serve.err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
# the first start builds the vector index generation from the stored vectors (IVF at this size)
t0=$(date +%s)
for _ in $(seq 1 6000); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    kill -0 $pid 2>/dev/null || { echo "bench/http: quarry serve exited: $(tail -3 "$dir/serve.err")" >&2; exit 1; }
    sleep 0.1
done
echo "quarry serve answered after $(( $(date +%s) - t0 )) s" >&2
# the maintainer builds or opens the indexes in the background: measure once both are warm and
# its pass is over (GET /v1/status is an administrator's: dave, of the ops group)
admin=$(curl -s -u 'dave:p@ss, w0rd (*)' -X POST "http://127.0.0.1:$port/v1/auth/token" |
    sed 's/.*"access_token":"\([^"]*\)".*/\1/')
for _ in $(seq 1 36000); do
    curl -s -H "Authorization: Bearer $admin" "http://127.0.0.1:$port/v1/status" | grep '"bm25": *"warm"' | grep '"vector": *"warm"' | grep -q '"maintainer_busy": *false' && break
    sleep 0.1
done
echo "indexes warm after $(( $(date +%s) - t0 )) s: $(curl -s -H "Authorization: Bearer $admin" "http://127.0.0.1:$port/v1/status")" >&2
[ "${BENCH_MODES:-}" = none ] && exit 0
password() {
    case $1 in
        alice) echo 'Alice-pw-1' ;; bob) echo 'Bob-pw-2' ;; erin) echo 'Erin-pw-5' ;; dave) echo 'p@ss, w0rd (*)' ;;
        *) echo "bench/http: unknown user $1 (alice, bob, erin or dave)" >&2; exit 2 ;;
    esac
}
# seconds spent in each search stage so far, as "stage=seconds" lines (quarry_search_stage_seconds_total)
stages() {
    curl -s -H "Authorization: Bearer $admin" "http://127.0.0.1:$port/metrics" |
        sed -n 's/^quarry_search_stage_seconds_total{stage="\([a-z0-9_]*\)"} \([0-9.e+-]*\)$/\1=\2/p'
}
stage_names="auth embed parse bm25 vector fusion hydrate rerank snippets permit json"
export BENCH_WORDS="$(cat "$dir/words.txt")"
echo "| user | mode | connections | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors | ms per search: $stage_names |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for user in ${BENCH_USERS:-alice}; do
    pw=$(password "$user")
    token=$(curl -s -u "$user:$pw" -X POST "http://127.0.0.1:$port/v1/auth/token" |
        sed 's/.*"access_token":"\([^"]*\)".*/\1/')
    export BENCH_TOKEN="$token"
    for mode in ${BENCH_MODES:-me bm25 vector hybrid}; do
        for conns in ${BENCH_CONNS:-1 16 64}; do
            threads=$(( conns < 2 ? 1 : 2 ))
            before=$(stages)
            out=$(BENCH_MODE=$mode wrk -t$threads -c$conns -d${secs}s --timeout 10s -s "$root/bench/http/search.lua" \
                "http://127.0.0.1:$port/v1/search" | grep '^RESULT')
            after=$(stages)
            eval "${out#RESULT }"
            # mean milliseconds per answered search in each stage (the server's clock)
            split=$(printf '%s\n%s\n' "$before" "$after" | awk -F= -v names="$stage_names" -v n="$requests" '
                { if ($1 in first) last[$1] = $2; else first[$1] = $2 }
                END { k = split(names, s, " "); out = "";
                      for (i = 1; i <= k; i++) out = out (i > 1 ? " / " : "") \
                          (n > 0 && (s[i] in last) ? sprintf("%.2f", (last[s[i]] - first[s[i]]) * 1000 / n) : "-");
                      print out }')
            [ "$mode" = me ] && split=-
            echo "| $user | $mode | $conns | $qps | $p50 | $p90 | $p99 | $max | $((errors + non200)) | $split |"
        done
    done
done
