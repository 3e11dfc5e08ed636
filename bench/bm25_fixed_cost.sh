#!/usr/bin/env bash
# bench/bm25_fixed_cost.sh: what one BM25 query costs quarry beside Xapian, stage by stage, for
# bench/README.md ("BM25 fixed per-query cost", issue 23).
#
#   bench/bm25_fixed_cost.sh [DOCS...]        (default: 5000 100000)
#
# For each size: builds DOCS abstract-like documents from the shared collections (bench/bm25_corpus.py:
# Cranfield and CISI, further copies perturbed), ingests them into BENCH_DIR/DOCS (once; reused
# while the corpus is the same size), builds the indexes, then in the same run:
#   - quarry: `quarry eval --mode bm25 --k 10 --repeat R` on both collections' 337 queries as
#     administrator: p50/p95 of the whole search (page's JSON included) and of each stage (parse,
#     rank, hydrate, snippets, permit, json, other), each the median over R passes;
#   - the same with --k 100 (what plain `quarry eval` measures: recall@100 needs 100 results);
#   - Xapian (bench/bm25_xapian.py: BM25 1.2/0.75, top 10, one thread) on the same documents and
#     queries, and the top-10 overlap between the two (share of Xapian's 10 in quarry's 10).
# Xapian needs Debian's python3-xapian (`apt-get install python3-xapian`); without it the Xapian
# columns are skipped. The machine is shared: compare quarry with Xapian within one run (ratios).
# Environment: QUARRY_BIN (default build/release/quarry), BENCH_DIR (default build/bench-bm25-fixed),
# DATASETS (default /work/shared/datasets), RUNS (passes, default 5), PYTHON (default /usr/bin/python3).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
quarry=${QUARRY_BIN:-$root/build/release/quarry}
unset QUARRY_BIN # quarry reads QUARRY_* variables as settings
base=${BENCH_DIR:-$root/build/bench-bm25-fixed}
datasets=${DATASETS:-/work/shared/datasets}
runs=${RUNS:-5}
python=${PYTHON:-/usr/bin/python3} # Debian's, where python3-xapian installs
[ $# -gt 0 ] || set -- 5000 100000
have_xapian=1
"$python" -c 'import xapian' 2>/dev/null || {
    have_xapian=0
    echo "note: python3-xapian is missing (apt-get install python3-xapian): Xapian skipped" >&2
}

field() { sed -n "s/^$1 *p50 \([0-9.]*\) ms, p95 \([0-9.]*\) ms.*/\1 \2/p" "$2"; }

echo "| docs | stage | quarry k=10 p50 / p95 ms | quarry k=100 p50 / p95 ms |"
echo "|---|---|---|---|"
summary=()
for docs in "$@"; do
    dir="$base/$docs"
    mkdir -p "$dir"
    export QUARRY_DATA_DIR="$dir/data" QUARRY_LOG_LEVEL=warn
    if [ "$(cat "$dir/docs" 2>/dev/null)" != "$docs" ]; then
        rm -rf "$dir/data" "$dir/xapian"
        "$python" "$root/bench/bm25_corpus.py" "$datasets" "$docs" "$dir"
        "$quarry" ingest --jsonl "$dir/corpus.jsonl" >/dev/null 2>"$dir/ingest.log"
        "$quarry" index build --gpu off >/dev/null 2>>"$dir/ingest.log" || true
        echo "$docs" > "$dir/docs"
    fi
    for k in 10 100; do
        "$quarry" eval --queries "$dir/queries.jsonl" --qrels "$dir/qrels.tsv" --mode bm25 --k "$k" \
            --repeat "$runs" --run "$dir/quarry-k$k.run" > "$dir/eval-k$k.txt"
    done
    read -r q50 q95 <<< "$(field latency "$dir/eval-k10.txt")"
    for stage in parse rank hydrate snippets permit json other; do
        read -r a50 a95 <<< "$(field "stage $stage" "$dir/eval-k10.txt")"
        read -r b50 b95 <<< "$(field "stage $stage" "$dir/eval-k100.txt")"
        echo "| $docs | $stage | $a50 / $a95 | $b50 / $b95 |"
    done
    read -r c50 c95 <<< "$(field latency "$dir/eval-k100.txt")"
    echo "| $docs | **whole search** | **$q50 / $q95** | $c50 / $c95 |"
    line="| $docs | $q50 / $q95 |"
    if [ "$have_xapian" = 1 ]; then
        read -r _ x50 x95 <<< "$("$python" "$root/bench/bm25_xapian.py" "$dir" "$runs")"
        overlap=$(awk -F'\t' 'FNR == NR { q[$1 SUBSEP $3] = 1; next }
                              { n++; if (($1 SUBSEP $3) in q) hit++ }
                              END { printf "%.3f", n ? hit / n : 0 }' "$dir/quarry-k10.run" "$dir/xapian.run")
        ratio=$(awk -v a="$q50" -v b="$x50" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        line="$line $x50 / $x95 | $ratio | $overlap |"
    else
        line="$line skipped | | |"
    fi
    summary+=("$line")
done
echo
echo "| docs | quarry p50 / p95 ms (k=10) | Xapian p50 / p95 ms | quarry p50 / Xapian p50 | top-10 overlap |"
echo "|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
