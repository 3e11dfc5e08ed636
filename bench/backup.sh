#!/bin/bash
# bench/backup.sh: what `quarry backup` and `quarry restore` (with its checks) cost on a data
# directory built from the shared collections (Cranfield and CISI, each repeated REPEAT times,
# every document public), indexes built. Prints one table: data size, then per step the median
# wall time of RUNS runs and the peak resident memory. Usage:
#
#   bench/backup.sh [QUARRY_BIN] [REPEAT] [RUNS]      (defaults: build/release/quarry 4 5)
set -euo pipefail
bin=$(realpath "${1:-build/release/quarry}")
repeat=${2:-4}
runs=${3:-5}
datasets=${QUARRY_TEST_DATASETS:-$(dirname "$0")/../../shared/datasets}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$datasets" "$repeat" > "$work/corpus.jsonl" <<'PY'
import json, sys
root, repeat = sys.argv[1], int(sys.argv[2])
for rep in range(repeat):
    for ds in ("cranfield", "cisi"):
        for line in open(f"{root}/{ds}/corpus.jsonl"):
            d = json.loads(line)
            d["_id"] = f"{ds}-{rep}-{d['_id']}"
            d["acl"] = ["public"]
            print(json.dumps(d))
PY
docs=$(wc -l < "$work/corpus.jsonl")
QUARRY_LOG_LEVEL=error "$bin" --data "$work/data" ingest --jsonl "$work/corpus.jsonl" > /dev/null 2>&1
QUARRY_LOG_LEVEL=error "$bin" --data "$work/data" index build --gpu off > /dev/null
size=$(du -sm "$work/data" | cut -f1)
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$work/backup.t"
: > "$work/restore.t"
for _ in $(seq "$runs"); do
  rm -rf "$work/bk" "$work/r"
  /usr/bin/time -f "%e %M" -a -o "$work/backup.t" "$bin" --data "$work/data" backup "$work/bk" > /dev/null
  /usr/bin/time -f "%e %M" -a -o "$work/restore.t" "$bin" --data "$work/r" restore "$work/bk" > /dev/null
done
echo "| documents | data dir MB | backup s (median of $runs) | backup peak RSS MB | restore + verify s | restore peak RSS MB |"
echo "|---|---|---|---|---|---|"
printf '| %s | %s | %s | %s | %s | %s |\n' "$docs" "$size" \
  "$(cut -d' ' -f1 "$work/backup.t" | median)" "$(($(cut -d' ' -f2 "$work/backup.t" | median) / 1024))" \
  "$(cut -d' ' -f1 "$work/restore.t" | median)" "$(($(cut -d' ' -f2 "$work/restore.t" | median) / 1024))"
