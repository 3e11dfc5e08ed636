#!/usr/bin/env bash
# Draws soak.sh's resources.tsv (time, RSS KiB, open descriptors, pid and, in newer runs, anonymous
# RSS KiB of quarry serve, once a second) as
# DIR/resources.png with gnuplot, the faults of DIR/faults.txt as dashed lines where they began.
# Time 0 is the first sample.
#   bench/load/plot.sh DIR
set -eu
dir=${1:?usage: plot.sh DIR}
command -v gnuplot >/dev/null 2>&1 || { echo "plot: gnuplot not installed (apt-get install gnuplot-nox)" >&2; exit 77; }
t0=$(awk 'NR == 1 { print $1 }' "$dir/resources.tsv")
{
    echo 'set terminal pngcairo size 1000,460 noenhanced'
    echo "set output '$dir/resources.png'"
    echo "set title 'quarry serve under bench/load/soak.sh: RSS and open descriptors (dashed: faults)'"
    echo "set xlabel 'seconds'; set ylabel 'RSS MiB'; set y2label 'open fds'"
    echo 'set y2tics; set ytics nomirror; set yrange [0:*]; set y2range [0:*]; set key bottom right'
    if [ -f "$dir/faults.txt" ]; then
        n=0
        while read -r f s _; do
            n=$((n + 1))
            x=$(awk -v s="$s" -v t="$t0" 'BEGIN { printf "%.1f", s - t }')
            echo "set arrow from $x, graph 0 to $x, graph 1 nohead dashtype 2 lc rgb 'gray'"
            echo "set label '$f' at $x, graph $(awk -v n="$n" 'BEGIN { printf "%.2f", 0.97 - (n % 4) * 0.05 }') font ',8' offset 0.3,0"
        done <"$dir/faults.txt"
    fi
    echo "plot '$dir/resources.tsv' using (\$1-$t0):(\$2/1024) with lines lw 2 title 'RSS MiB', \\"
    # newer runs sample the anonymous part of RSS too (column 5)
    if awk 'NF >= 5 { found = 1; exit } END { exit !found }' "$dir/resources.tsv"; then
        echo "     '$dir/resources.tsv' using (\$1-$t0):(\$5/1024) with lines lw 1 title 'anonymous RSS MiB', \\"
    fi
    echo "     '$dir/resources.tsv' using (\$1-$t0):3 axes x1y2 with lines title 'open fds'"
} | gnuplot
