#!/usr/bin/env bash
# CPU time of each thread of `quarry ingest --jsonl` (the writer, the preparing workers, the
# checkpointing thread, OpenBLAS's idle thread where it has one), from perf samples at 2 kHz, for
# one or more quarry binaries in alternating rounds on the same input: the shared collections
# concatenated COPIES times with new ids, as bench/ingest_e2e.sh builds it. A line per run: the
# binary, then each thread's seconds, busiest first (the first is the writer, which also reads the
# input and starts the process). Needs perf (perf_event_paranoid <= 2 or root).
# Usage: bench/ingest_thread_cpu.sh DATASETS_DIR QUARRY [QUARRY...]   (RUNS=3, COPIES=8)
set -euo pipefail
datasets=$1
shift
runs=${RUNS:-3}
copies=${COPIES:-8}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/ingest_corpus.sh"
ingest_corpus "$datasets" "$copies" > "$tmp/both.jsonl"
for _ in $(seq "$runs"); do
  for bin in "$@"; do
    rm -rf "$tmp/data"
    perf record -q -F 2000 -o "$tmp/perf.data" -- "$bin" --data "$tmp/data" --log-level error ingest \
      --acl public --jsonl "$tmp/both.jsonl" > /dev/null 2>&1
    printf '%s:' "$bin"
    perf script -i "$tmp/perf.data" -F tid 2> /dev/null | sort | uniq -c | sort -rn |
      awk '{ printf " %.2f", $1 / 2000 } END { print "" }'
  done
done
