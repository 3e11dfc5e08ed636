#!/usr/bin/env bash
# bench/query_cost.sh: what expensive queries cost a running `quarry serve`, for bench/README.md
# ("Query cost").
#
#   bench/query_cost.sh [CHUNKS] [FLOOD]      (default 100000 chunks, 20 flooding requests)
#
# Builds a corpus of CHUNKS one-chunk documents of 200 words drawn from 5,000 pseudo-words with a
# Zipf law (rank r has weight 1/r, so the first words are in every chunk, as "the" and "of" are in
# English; seeded, so every run has the same text), ingests it into BENCH_DIR (once: a later run
# with the same CHUNKS reuses it), starts `quarry serve` with its defaults (16 workers) and three
# API keys -- user A, user B, and an administrator for /metrics -- and waits for both indexes.
# Then two tables:
#   1. each query alone, as B, on the idle server: its HTTP status and seconds;
#   2. a flood: A sends FLOOD copies of one expensive query at once, with clients that give up
#      after LEAVE_S seconds (curl --max-time); one second in, B sends a 3-word search three times
#      in a row; the table gives B's seconds and what A got. Once the server is idle, the same
#      flood again without B: how long the server stayed busy after A's clients had all left
#      (until /metrics shows no request but its own).
# Needs no LDAP: API keys are principals of their own (key:<id>).
# Environment: QUARRY_BIN (default build/release/quarry), BENCH_DIR (default build/bench-cost),
# LEAVE_S (default 5), SERVE_SET (extra --set KEY=VALUE words for the server).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
chunks=${1:-100000}
flood=${2:-20}
quarry=${QUARRY_BIN:-$root/build/release/quarry}
dir=${BENCH_DIR:-$root/build/bench-cost}
leave=${LEAVE_S:-5}
mkdir -p "$dir"
export QUARRY_DATA_DIR="$dir/data" QUARRY_LOG_LEVEL=warn

if [ "$(cat "$dir/chunks" 2>/dev/null)" != "$chunks" ]; then
    rm -rf "$dir/data"
    awk -v n="$chunks" -v words=200 -v V=5000 'BEGIN {
        srand(7); split("ba ce di fo gu ha je ki lo mu na pe ri so tu va we xi yo zu", syl, " ");
        for (r = 1; r <= V; r++) { x = r - 1; w = "";
            do { w = w syl[1 + x % 20]; x = int(x / 20) } while (x > 0);
            vocab[r] = w; tot += 1 / r; cum[r] = tot }
        for (r = 1; r <= V; r++) cum[r] /= tot
        for (d = 0; d < n; d++) {
            text = "";
            for (j = 0; j < words; j++) { u = rand(); lo = 1; hi = V;
                while (lo < hi) { mid = int((lo + hi) / 2); if (cum[mid] < u) lo = mid + 1; else hi = mid }
                text = text (j ? " " : "") vocab[lo] }
            printf "{\"_id\":\"doc-%06d\",\"title\":\"%s %s\",\"text\":\"%s\",\"acl\":[\"public\"]}\n", d,
                vocab[1 + int(rand() * V)], vocab[1 + int(rand() * V)], text
        }
        for (r = 1; r <= V; r++) print vocab[r] > "'"$dir"'/vocab.txt"
    }' > "$dir/corpus.jsonl"
    t0=$(date +%s)
    "$quarry" ingest --jsonl "$dir/corpus.jsonl" >/dev/null 2>"$dir/ingest.log"
    echo "$chunks" > "$dir/chunks"
    echo "ingested $chunks documents in $(( $(date +%s) - t0 )) s" >&2
fi

# The queries, as request bodies. Phrases use the 8 commonest words (every chunk holds them all,
# so FTS5 compares positions in every chunk); exclusions use words of rank 1,000 and up (each in
# about 2% of the chunks).
awk -v out="$dir" 'BEGIN { srand(1) }
    { v[NR] = $0 }
    function phrase(n,   s, i) { s = ""; for (i = 0; i < n; i++) s = s (i ? " " : "") v[1 + int(rand() * 8)]; return s }
    function excl(n,   s, i) { s = v[600] " " v[601]; for (i = 0; i < n; i++) s = s " -" v[1000 + i]; return s }
    function terms(n,   s, i) { s = ""; for (i = 1; i <= n; i++) s = s (i > 1 ? " " : "") v[i]; return s }
    function body(name, q) { printf "{\"query\":\"%s\"}", q > (out "/q_" name ".json"); close(out "/q_" name ".json") }
    END {
        body("words3", v[100] " " v[200] " " v[300]);
        body("phrase32", "\\\"" phrase(32) "\\\"");
        body("phrase800", "\\\"" phrase(800) "\\\"");
        body("excl32", excl(32));
        body("excl500", excl(500));
        body("terms256", terms(256));
        body("terms300", terms(300));
    }' "$dir/vocab.txt"

key() { "$quarry" keys create --name "$1" --scopes "$2" 2>/dev/null | head -1; }
key_a=$(key bench-a search)
key_b=$(key bench-b search)
key_m=$(key bench-metrics admin)

port=$(( 20000 + RANDOM % 10000 ))
url="http://127.0.0.1:$port"
# shellcheck disable=SC2086
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$quarry" --set server.listen=127.0.0.1:$port ${SERVE_SET:-} serve \
    >"$dir/serve.out" 2>"$dir/serve.err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 1 6000); do
    ready=$(curl -s -H "Authorization: Bearer $key_m" "$url/v1/status" || true)
    case "$ready" in *'"bm25":"warm"'*'"vector":"warm"'*) break ;; esac
    kill -0 $pid 2>/dev/null || { echo "bench/query_cost: quarry serve exited: $(tail -3 "$dir/serve.err")" >&2; exit 1; }
    sleep 0.2
done

# search KEY QUERY MAX_TIME: prints "status seconds"
search() {
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time "$3" -H "Authorization: Bearer $1" \
        -H 'Content-Type: application/json' --data-binary @"$dir/q_$2.json" "$url/v1/search" || true
}
in_flight() {
    curl -s --max-time 600 -H "Authorization: Bearer $key_m" "$url/metrics" |
        awk '$1 == "quarry_http_requests_in_flight" { print $2 }'
}

echo "| query (hybrid, k 10) | bytes | status | seconds |"
echo "|---|---|---|---|"
for q in words3 phrase32 phrase800 excl32 excl500 terms256 terms300; do
    read -r code secs < <(search "$key_b" $q 600)
    echo "| $q | $(wc -c < "$dir/q_$q.json") | $code | $secs |"
done
echo
# flood QUERY: FLOOD requests of A at once, each giving up after LEAVE_S; their pids in pids
flood() {
    rm -f "$dir"/flood.*
    pids=()
    for i in $(seq 1 "$flood"); do
        search "$key_a" "$1" "$leave" > "$dir/flood.$i" &
        pids+=($!)
    done
}
idle() { while [ "$(in_flight)" -gt 1 ]; do sleep 0.2; done; }

echo "| flood: $flood x A | B's 3 searches, 1 s in (s) | A's answers | server busy after A's clients left (s) |"
echo "|---|---|---|---|"
for q in phrase800 excl32; do
    # B's searches during a flood
    flood $q
    sleep 1
    b=""
    for _ in 1 2 3; do
        read -r code secs < <(search "$key_b" words3 600)
        b="$b${b:+, }$secs ($code)"
    done
    wait "${pids[@]}"
    answers=$(cat "$dir"/flood.* | awk '{ n[$1]++ } END { for (c in n) printf "%s%dx %s", (s++ ? ", " : ""), n[c], (c == "000" ? "gave up" : c) }')
    idle
    # the same flood alone: how long the server works on after its clients are gone
    flood $q
    wait "${pids[@]}"
    left=$(date +%s.%N)
    idle
    busy=$(awk -v a="$left" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    printf '| %s | %s | %s | %.1f |\n' "$q" "$b" "$answers" "$busy"
done
