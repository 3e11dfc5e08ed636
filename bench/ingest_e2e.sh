#!/usr/bin/env bash
# End-to-end ingestion throughput of `quarry ingest` (extract, chunk, embed, store with FTS5, in
# store batches of 50 documents) on the shared collections: median of RUNS fresh runs each.
# Usage: bench/ingest_e2e.sh [QUARRY_BIN] [DATASETS_DIR]   (RUNS=5 by default)
set -euo pipefail
bin=${1:-build/release/quarry}
datasets=${2:-../shared/datasets}
runs=${RUNS:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '| corpus | MB (jsonl) | docs | median s | MB/s | docs/s |\n|---|---|---|---|---|---|\n'
for c in cranfield cisi; do
  f="$datasets/$c/corpus.jsonl"
  bytes=$(stat -c %s "$f")
  docs=$(wc -l < "$f")
  times=()
  for _ in $(seq "$runs"); do
    rm -rf "$tmp/data"
    start=$(date +%s.%N)
    "$bin" --data "$tmp/data" --log-level error ingest --acl public --jsonl "$f" > /dev/null 2>&1
    end=$(date +%s.%N)
    times+=("$(echo "$end - $start" | bc -l)")
  done
  med=$(printf '%s\n' "${times[@]}" | sort -g | sed -n "$(( (runs + 1) / 2 ))p")
  printf '| %s | %.2f | %d | %.3f | %.1f | %.0f |\n' "$c" "$(echo "$bytes / 1000000" | bc -l)" "$docs" "$med" \
    "$(echo "$bytes / 1000000 / $med" | bc -l)" "$(echo "$docs / $med" | bc -l)"
done
