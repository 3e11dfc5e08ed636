#!/usr/bin/env bash
# End-to-end ingestion throughput of `quarry ingest --jsonl` (extract, chunk, embed on
# ingest.threads preparing threads; one writer storing documents, chunks, vectors and ACL rows in
# batches; the full-text index written by a thread of its own as the writer hands it each batch)
# against the anchor: a bare FTS5 insert of the same chunk texts (bench_ingest_fts: one
# transaction, WAL, synchronous=FULL, only the inserts timed) in the same run. Corpora: the shared
# collections, and both of them concatenated COPIES times with new ids (a bigger input). For each,
# RUNS rounds of: ingest with ingest.threads=1, ingest with the default (one per core), the bare
# insert, interleaved so that the machine's noise hits all three alike; medians. Wall times are
# from process start to exit (about 0.1 s of it is starting quarry). "writer CPU" is the writing
# thread's CPU time (from the summary line), "process CPU" the user and system time of all the
# process's threads: on a machine where quarry gets both cores the wall is bounded by about half
# of it. `quarry ingest` commits its batches under synchronous=NORMAL and ends with one synced
# commit (store_bulk_begin): the anchor stays at FULL, and is run under NORMAL too, beside it.
# `quarry ingest` also starts with glibc's malloc on transparent huge pages (INGEST_MALLOC_TUNABLES,
# cli/runtime_env.c): the anchor is run with the same tunables too, beside the plain one, which the ratios
# are computed against.
# BEFORE, when set, is another quarry binary (e.g. the integration branch's) run in the same rounds.
# Usage: [BEFORE=path/to/quarry] bench/ingest_e2e.sh [BUILD_DIR] [DATASETS_DIR]   (RUNS=5, COPIES=8)
set -euo pipefail
build=${1:-build/release}
datasets=${2:-../shared/datasets}
runs=${RUNS:-5}
copies=${COPIES:-8}
bin=$build/quarry
fts=$build/bench_ingest_fts
# the same as INGEST_MALLOC_TUNABLES in cli/runtime_env.c
tunables=glibc.malloc.hugetlb=1:glibc.malloc.top_pad=16777216:glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=33554432
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

. "$(dirname "$0")/ingest_corpus.sh"
ingest_corpus "$datasets" "$copies" > "$tmp/both.jsonl"

median() { sort -g | sed -n "$(( (runs + 1) / 2 ))p"; }

# "wall_seconds writer_cpu_seconds process_cpu_seconds" of one fresh `quarry ingest` with
# ingest.threads=$2 on file $1 (binary $3, default this build's); the process's CPU is user + system
# time of every thread (bash's time)
ingest_s() {
  rm -rf "$tmp/data"
  local start end TIMEFORMAT='%U %S'
  start=$(date +%s.%N)
  { time "${3:-$bin}" --data "$tmp/data" --log-level error --set "ingest.threads=$2" ingest --acl public \
    --jsonl "$1" > "$tmp/out" 2>&1; } 2> "$tmp/time"
  end=$(date +%s.%N)
  echo "$(echo "$end - $start" | bc -l) $(grep -o '[0-9.]* s CPU writing' "$tmp/out" | cut -d' ' -f1)" \
    "$(awk '{ print $1 + $2 }' "$tmp/time")"
}

before=${BEFORE:-}
printf '| corpus | MB (jsonl) | docs | chunks | bare FTS5 FULL s (CPU s) | MB/s | bare FTS5 NORMAL s | bare FTS5 FULL, huge pages s | before: all cores s | MB/s | x FTS5 | 1 thread s | x FTS5 | all cores s | MB/s | x FTS5 | writer CPU s | process CPU s |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n'
for c in cranfield cisi both; do
  if [ "$c" = both ]; then f=$tmp/both.jsonl; name="both x$copies"; else f=$datasets/$c/corpus.jsonl; name=$c; fi
  bytes=$(stat -c %s "$f")
  docs=$(wc -l < "$f")
  t0=(); t1=(); tn=(); wn=(); pn=(); tf=(); cf=(); tq=(); th=(); chunks=0
  for _ in $(seq "$runs"); do
    if [ -n "$before" ]; then
      read -r w _ < <(ingest_s "$f" 0 "$before")
      t0+=("$w")
    else
      t0+=(0)
    fi
    read -r w _ < <(ingest_s "$f" 1)
    t1+=("$w")
    read -r w cpu pcpu < <(ingest_s "$f" 0)
    tn+=("$w"); wn+=("$cpu"); pn+=("$pcpu")
    read -r s chunks _ cpu < <("$fts" "$f" "$tmp/bare.db")
    tf+=("$s"); cf+=("$cpu")
    read -r s _ < <("$fts" --normal "$f" "$tmp/bare.db")
    tq+=("$s")
    read -r s _ < <(GLIBC_TUNABLES=$tunables "$fts" "$f" "$tmp/bare.db")
    th+=("$s")
  done
  m0=$(printf '%s\n' "${t0[@]}" | median)
  m1=$(printf '%s\n' "${t1[@]}" | median)
  mn=$(printf '%s\n' "${tn[@]}" | median)
  mw=$(printf '%s\n' "${wn[@]}" | median)
  mp=$(printf '%s\n' "${pn[@]}" | median)
  mf=$(printf '%s\n' "${tf[@]}" | median)
  mc=$(printf '%s\n' "${cf[@]}" | median)
  mq=$(printf '%s\n' "${tq[@]}" | median)
  mh=$(printf '%s\n' "${th[@]}" | median)
  mb=$(echo "$bytes / 1000000" | bc -l)
  if [ -n "$before" ]; then
    b0=$(printf '%.3f | %.1f | %.2f' "$m0" "$(echo "$mb / $m0" | bc -l)" "$(echo "$mf / $m0" | bc -l)")
  else
    b0='- | - | -'
  fi
  printf '| %s | %.2f | %d | %d | %.3f (%.3f) | %.1f | %.3f | %.3f | %s | %.3f | %.2f | %.3f | %.1f | %.2f | %.3f | %.2f |\n' \
    "$name" "$mb" "$docs" "$chunks" "$mf" "$mc" "$(echo "$mb / $mf" | bc -l)" "$mq" "$mh" "$b0" "$m1" \
    "$(echo "$mf / $m1" | bc -l)" "$mn" "$(echo "$mb / $mn" | bc -l)" "$(echo "$mf / $mn" | bc -l)" "$mw" "$mp"
done
