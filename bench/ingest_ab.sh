#!/usr/bin/env bash
# Alternating rounds of `quarry ingest --jsonl` builds against the bare FTS5 insert (bench_ingest_fts),
# for comparing two or more builds of the same code on a noisy machine: each round runs the anchor
# once, then every build, one after the other, on both shared collections concatenated COPIES
# times (23 MB for 8); the ratio anchor/wall is taken per round and its median reported, beside
# the medians of the wall, of the process's CPU (user + system, all threads), of the writer's CPU
# (the summary line) and of the full-text thread's (the debug log's line).
# A build is LABEL=PATH, PATH a quarry binary (the launcher or quarry-core of any build).
# Usage: [RUNS=8] [COPIES=8] bench/ingest_ab.sh BUILD_DIR DATASETS_DIR LABEL=PATH...
set -euo pipefail
build=$1
datasets=$2
shift 2
[ $# -ge 1 ] || { echo "usage: bench/ingest_ab.sh BUILD_DIR DATASETS_DIR LABEL=PATH..." >&2; exit 2; }
runs=${RUNS:-8}
copies=${COPIES:-8}
fts=$build/bench_ingest_fts
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/ingest_corpus.sh"
ingest_corpus "$datasets" "$copies" > "$tmp/in.jsonl"
: > "$tmp/rows"
for r in $(seq "$runs"); do
  anchor=$("$fts" "$tmp/in.jsonl" "$tmp/bare.db" | cut -d' ' -f1)
  for v in "$@"; do
    label=${v%%=*}
    bin=${v#*=}
    rm -rf "$tmp/data"
    /usr/bin/time -f "TIME %e %U %S" env -u QUARRY_CONFIG "$bin" --data "$tmp/data" --log-level debug ingest \
      --acl public --jsonl "$tmp/in.jsonl" > "$tmp/out" 2> "$tmp/err"
    read -r _ wall user sys < <(grep '^TIME ' "$tmp/err")
    writer=$(grep -o '[0-9.]* s CPU writing' "$tmp/out" | cut -d' ' -f1)
    follower=$(grep -o 'bulk load: [0-9.]* s CPU' "$tmp/err" | cut -d' ' -f3)
    echo "$label $wall $anchor $user $sys ${writer:-nan} ${follower:-nan}" >> "$tmp/rows"
  done
done
python3 - "$tmp/rows" "$runs" <<'PY'
import collections, statistics, sys
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    label, wall, anchor, user, sys_, writer, follower = line.split()
    rows.setdefault(label, []).append((float(wall), float(anchor), float(user) + float(sys_),
                                       float(writer), float(follower)))
print("%d rounds, median of each column; ratio = the anchor's time / the build's, per round" % int(sys.argv[2]))
print("| build | wall s | anchor s | ratio (min-max) | process CPU s | writer CPU s | full-text thread CPU s |")
print("|---|---|---|---|---|---|---|")
for label, v in rows.items():
    med = lambda i: statistics.median(x[i] for x in v)
    ratios = [a / w for w, a, *_ in v]
    print("| %s | %.3f | %.3f | %.2f (%.2f-%.2f) | %.2f | %.2f | %.2f |" % (
        label, med(0), med(1), statistics.median(ratios), min(ratios), max(ratios), med(2), med(3), med(4)))
PY
