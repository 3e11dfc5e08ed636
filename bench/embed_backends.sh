#!/bin/sh
# What ingesting through an embeddings server costs, per wire shape: `quarry ingest --jsonl` of a
# collection into a fresh data directory with embed.backend = local, openai, azure, ollama and tei,
# the servers being the fake inference server (tests/fake_inference/server.js) on loopback. Prints
# a table: wall seconds (one run each), embedding requests the server recorded, and milliseconds
# per request. The fake computes its vectors in JavaScript, so the times are an upper bound of
# quarry's own share of a request (JSON writing, HTTP, parsing and checking the answer).
#
# THREADS sets ingest.threads (default: quarry's own, one per core).
#
# usage: [THREADS=N] bench/embed_backends.sh QUARRY_BIN [CORPUS_JSONL]
set -eu
QUARRY=${1:?usage: bench/embed_backends.sh QUARRY_BIN [CORPUS_JSONL]}
HERE=$(cd "$(dirname "$0")" && pwd)
CORPUS=${2:-$HERE/../../shared/datasets/cranfield/corpus.jsonl}
NODE=${NODE:-node}
WORK=$(mktemp -d /tmp/quarry-bench-embed-XXXXXX)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

"$NODE" "$HERE/../tests/fake_inference/server.js" --port 0 >"$WORK/server.out" 2>&1 &
SERVER_PID=$!
i=0
until grep -q '^listening ' "$WORK/server.out" 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt 100 ] && { echo "the fake server did not start" >&2; exit 1; }
    sleep 0.1
done
BASE=$(sed -n 's/^listening //p' "$WORK/server.out")

count_requests() {
    curl -s "$BASE/_fake/requests" | "$NODE" -e \
        'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).length))'
}

printf '| backend | s | requests | ms/request |\n|---|---|---|---|\n'
for backend in local openai azure ollama tei; do
    case $backend in
    local) set -- ;;
    openai) set -- --set embed.base_url="$BASE/v1" --set embed.model=fake-embedding-model ;;
    azure) set -- --set embed.base_url="$BASE/openai/deployments/d" --set embed.api_version=2024-10-21 \
        --set embed.api_key=k ;;
    ollama) set -- --set embed.base_url="$BASE" --set embed.model=fake-embedding-model ;;
    tei) set -- --set embed.base_url="$BASE" --set embed.model=bge --set embed.batch_size=32 ;;
    esac
    curl -s -X POST "$BASE/_fake/reset" -d '{}' >/dev/null
    start=$(date +%s.%N)
    "$QUARRY" ingest --data "$WORK/$backend" --acl public --set embed.backend=$backend --set embed.retries=0 \
        --set ingest.threads="${THREADS:-0}" "$@" --jsonl "$CORPUS" >/dev/null 2>&1
    end=$(date +%s.%N)
    n=$(count_requests)
    awk -v b=$backend -v s="$start" -v e="$end" -v n="$n" 'BEGIN {
        printf "| %s | %.2f | %d | %s |\n", b, e - s, n, (n > 0 ? sprintf("%.2f", (e - s) * 1000 / n) : "-") }'
done
