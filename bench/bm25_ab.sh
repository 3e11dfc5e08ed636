#!/usr/bin/env bash
# bench/bm25_ab.sh: two (or more) builds of the pruned BM25 search side by side on one store, for
# bench/README.md ("BM25 top-k", depth 100). On a shared machine a single run of each build says
# little; this alternates them, REPS times, and reports per table row the median over the runs of
# each build's p50 and p99, and each build's p50 against the first's.
#
#   bench/bm25_ab.sh STORE K REPS BENCH_BM25...
#
# Each BENCH_BM25 is a bench_bm25 binary (say one linked with main's index/bm25*.c, one with this
# branch's); each run is `nice BENCH_BM25 --k K --queries 200 --fts-queries 0 --add 0 --keep-index
# --dump FILE --reuse STORE $BM25_AB_ARGS` (BM25_AB_ARGS=--cpu: queries timed by the thread's CPU
# clock). STORE's index is built by the first run when it has none. Besides the table it says
# whether every run's hits (the --dump files) were byte for byte the first run's, the load
# averages seen after each run, and each build's user+sys CPU seconds per run. The runs' files
# stay in BM25_AB_DIR (default: a new directory under /tmp).
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 STORE K REPS BENCH_BM25..." >&2; exit 2; }
store=$1 k=$2 reps=$3
shift 3
dir=${BM25_AB_DIR:-$(mktemp -d /tmp/bm25_ab.XXXXXX)}
mkdir -p "$dir"
bins=("$@")
for r in $(seq 1 "$reps"); do
  for i in "${!bins[@]}"; do
    /usr/bin/time -f "%U %S" -o "$dir/$i.$r.time" nice "${bins[$i]}" --k "$k" --queries 200 --fts-queries 0 \
      --add 0 --keep-index --dump "$dir/$i.$r.dump" --reuse "$store" ${BM25_AB_ARGS:-} >"$dir/$i.$r.out" 2>&1
    cut -d' ' -f1 /proc/loadavg >>"$dir/load"
  done
done
echo "runs in $dir"
python3 - "$dir" "$reps" "${bins[@]}" <<'EOF'
import filecmp, statistics, sys
d, reps, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = {}
for i in range(len(bins)):
    for r in range(1, reps + 1):
        for line in open(f"{d}/{i}.{r}.out"):
            f = [x.strip() for x in line.split("|")]
            if len(f) > 9 and f[1].isdigit():
                rows.setdefault((f[1], f[2]), {}).setdefault(i, []).append((float(f[7]), float(f[9])))
same = all(filecmp.cmp(f"{d}/0.1.dump", f"{d}/{i}.{r}.dump", shallow=False)
           for i in range(len(bins)) for r in range(1, reps + 1))
print("hits of every run identical to the first's:", "yes" if same else "NO")
loads = [float(x) for x in open(f"{d}/load")]
print("load average after the runs: min %.2f, median %.2f, max %.2f" % (min(loads), statistics.median(loads), max(loads)))
for i, b in enumerate(bins):
    cpu = [sum(map(float, open(f"{d}/{i}.{r}.time").read().split())) for r in range(1, reps + 1)]
    print("build %d (%s): median CPU s per run %.2f" % (i, b, statistics.median(cpu)))
print()
print("| terms | permitted | " + " | ".join(f"build {i} p50 / p99 ms" for i in range(len(bins))) + " | "
      + " | ".join(f"build {i} / build 0 (p50)" for i in range(1, len(bins))) + " |")
print("|---|---|" + "---|" * (2 * len(bins) - 1))
for (terms, who), v in rows.items():
    p50 = [statistics.median([a for a, _ in v[i]]) for i in range(len(bins))]
    p99 = [statistics.median([b for _, b in v[i]]) for i in range(len(bins))]
    print(f"| {terms} | {who} | " + " | ".join("%.2f / %.2f" % x for x in zip(p50, p99)) + " | "
          + " | ".join("%.2f" % (x / p50[0]) for x in p50[1:]) + " |")
sys.exit(0 if same else 1)
EOF
