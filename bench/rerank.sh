#!/usr/bin/env bash
# bench/rerank.sh: what the rerank stage adds to a search, for bench/README.md ("Reranking").
#
#   bench/rerank.sh [N]       (default 100 queries)
#
# Ingests the shared Cranfield collection into BENCH_DIR once (BM25 only: embed.backend stays
# local), starts the fake inference server (tests/fake_inference) as a Cohere-shaped reranker on
# loopback, and runs build/release/bench_rerank: N queries with the first stage alone, then with
# windows of 10, 50 and 200 passages.
# Environment: QUARRY_BIN (default build/release/quarry), BENCH_DIR (default build/bench-rerank),
# QUARRY_TEST_DATASETS (default ../shared/datasets).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-100}
quarry=${QUARRY_BIN:-$root/build/release/quarry}
dir=${BENCH_DIR:-$root/build/bench-rerank}
data=${QUARRY_TEST_DATASETS:-$root/../shared/datasets}/cranfield
mkdir -p "$dir"
if [ ! -f "$dir/ingested" ]; then
    rm -rf "$dir/data"
    "$quarry" --data "$dir/data" --set log.level=warn ingest --acl public --jsonl "$data/corpus.jsonl" >/dev/null
    touch "$dir/ingested"
fi
exec "$root/tests/fixtures/fake-inference-fixture.sh" -- sh -c \
    "'$root/build/release/bench_rerank' '$dir/data' '$data/queries.jsonl' \"\$QUARRY_TEST_INFERENCE_URL/v1\" $n"
