#!/usr/bin/env bash
# The soak and fault driver: runs bench_load (bench/load/load.c) against a real `quarry serve` on
# loopback, backed by the slapd fixture and the fake inference server, while it injects faults one
# after another: slapd stopped and restarted, slapd silent (SIGSTOP/SIGCONT), the fake backend's
# 500, 429, first-byte stall and mid-stream reset, quarry killed with SIGKILL and started again
# (jobs resume), and the data directory's file system filled (a tmpfs mounted for the run, when
# this runs as root and may mount; otherwise, or with --disk-full rlimit, a file size limit of one
# byte set on the running quarry with prlimit). Clients that drop mid-stream are part of the mix (chat_drop).
# It samples the server's RSS and open descriptors every second from /proc, measures the recovery
# after each fault (the first success of an affected route after the fault ends), and writes a
# report: bench_load's table, the faults, and a gnuplot PNG of RSS and descriptors over time.
#
#   bench/load/soak.sh [--duration S] [--rate R] [--faults LIST|all|none] [--hold S] [--out DIR]
#                      [--repeat N] [--mix FILE] [--mix-set KEY=VALUE]... [--expect-oracle-failure]
#                      [--disk-full tmpfs|rlimit]
#                      QUARRY_BIN BENCH_LOAD
#
# LIST: comma-separated among ldap_stop, ldap_sigstop, backend_500, backend_429, backend_stall,
# backend_reset, disk_full, kill9; each is injected --repeat times (default 1), spread evenly.
# Without QUARRY_TEST_LDAP_URI it starts itself under tests/fixtures/slapd-fixture.sh and
# fake-inference-fixture.sh. Exit: 0 clean; 2 leaks, losses or resurrections; 3 quarry died on
# its own, did not exit 0 after the final SIGTERM, or the store failed its integrity check; 1 the
# run could not be made; 77 a tool is missing (node, curl). --expect-oracle-failure (the oracle's self-test, with --mix-set lie=...):
# 0 when bench_load reported leaks or losses, 1 otherwise.
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
duration=600 rate=20 faults=all hold=8 repeat=1 out= mix="$here/mix.conf" mixset=() expect_fail=
disk_full_by=tmpfs
args=("$@")
while [ $# -gt 0 ]; do
    case $1 in
    --duration) duration=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --faults) faults=$2; shift 2 ;;
    --hold) hold=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --disk-full) disk_full_by=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --mix) mix=$2; shift 2 ;;
    --mix-set) mixset+=("$2"); shift 2 ;;
    --expect-oracle-failure) expect_fail=1; shift ;;
    --) shift; break ;;
    -*) echo "soak: unknown option $1" >&2; exit 1 ;;
    *) break ;;
    esac
done
quarry=$(realpath "${1:?usage: soak.sh [options] QUARRY_BIN BENCH_LOAD}")
bench=$(realpath "${2:?usage: soak.sh [options] QUARRY_BIN BENCH_LOAD}")
for t in curl node awk; do
    command -v "$t" >/dev/null 2>&1 || { echo "soak: $t not installed, skipped" >&2; exit 77; }
done
if [ -z "${QUARRY_TEST_LDAP_URI:-}" ] || [ -z "${QUARRY_TEST_INFERENCE_URL:-}" ]; then
    exec "$src/tests/fixtures/slapd-fixture.sh" -- "$src/tests/fixtures/fake-inference-fixture.sh" -- \
        "$0" "${args[@]}"
fi
# kill9 last in each round: the processes between restarts live as long as they can, so that their
# RSS after warm-up shows growth a restart would hide
[ "$faults" = all ] && faults=ldap_stop,ldap_sigstop,backend_500,backend_429,backend_stall,backend_reset,disk_full,kill9
[ "$faults" = none ] && faults=

tmp=$(mktemp -d "${TMPDIR:-/tmp}/quarry-soak.XXXXXX") || exit 1
out=${out:-$tmp/out}
mkdir -p "$out"
out=$(realpath "$out")
data=$tmp/data
mounted=
pid= sampler= loadpid= slapd_pid=$QUARRY_TEST_SLAPD_PID our_slapd=
cleanup() {
    [ -n "$loadpid" ] && kill "$loadpid" 2>/dev/null
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
    [ -n "$pid" ] && kill -CONT "$slapd_pid" 2>/dev/null
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    [ -n "$our_slapd" ] && kill "$our_slapd" 2>/dev/null && wait "$our_slapd" 2>/dev/null
    [ -n "$mounted" ] && umount "$data" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
log() { printf '%s soak: %s\n' "$(date -u +%T)" "$*" >&2; }

# disk_full fills a 512 MiB tmpfs mounted on the data directory where this may mount (root);
# elsewhere, or with --disk-full rlimit, it sets quarry's RLIMIT_FSIZE to 1 byte with prlimit for
# the fault: no file of the data directory may grow (SQLite's WAL and database, the staged
# uploads, new files), overwriting what is there still works, as on a full disk.
mkdir -p "$data"
case ",$faults," in *,disk_full,*)
    if [ "$disk_full_by" != rlimit ] && [ "$(id -u)" = 0 ] &&
        mount -t tmpfs -o size=512m quarry-soak "$data" 2>/dev/null; then
        mounted=1 disk_full_by=tmpfs
    elif command -v prlimit >/dev/null 2>&1; then
        [ "$disk_full_by" = tmpfs ] && log "cannot mount a tmpfs here (not root, or no mount rights): RLIMIT_FSIZE instead"
        disk_full_by=rlimit
    else
        log "cannot mount a tmpfs here and prlimit is missing: disk_full left out"
        faults=$(echo ",$faults," | sed 's/,disk_full,/,/; s/^,//; s/,$//')
    fi ;;
esac

key=$("$quarry" keys create --name load --scopes admin,search,chat,on_behalf_of --data "$data" 2>/dev/null | head -n 1)
case $key in qk_*) ;; *) echo "soak: quarry keys create gave no key" >&2; exit 1 ;; esac
base_dn=${QUARRY_TEST_LDAP_BASE:-dc=quarry,dc=test}
cat >"$tmp/quarry.json" <<JSON
{
  "data": {"dir": "$data"},
  "log": {"level": "warn", "file": "$tmp/quarry.log"},
  "server": {"listen": "127.0.0.1:0", "workers": 8, "user_share": 64},
  "ldap": {"uri": "$QUARRY_TEST_LDAP_URI", "bind_dn": "$QUARRY_TEST_LDAP_BIND_DN",
           "user_base": "ou=people,$base_dn", "group_base": "ou=groups,$base_dn",
           "cache_ttl_s": 2, "timeout_ms": 2000},
  "auth": {"admin_groups": "ops"},
  "inference": {"model": "fake-chat-model", "base_url": "$QUARRY_TEST_INFERENCE_URL/v1", "retries": 0,
                "first_token_timeout_ms": 2000, "total_timeout_ms": 10000, "breaker_cooldown_ms": 5000}
}
JSON

# start: quarry serve on $port (0 the first time: it picks one, kept for the restarts)
port=0
start() {
    sed -i "s/\"listen\": \"127.0.0.1:[0-9]*\"/\"listen\": \"127.0.0.1:$port\"/" "$tmp/quarry.json"
    QUARRY_LDAP_BIND_PASSWORD=$QUARRY_TEST_LDAP_BIND_PW "$quarry" serve --config "$tmp/quarry.json" \
        >>"$tmp/serve.log" 2>&1 &
    pid=$!
    echo "$pid" >"$tmp/pid"
    for _ in $(seq 300); do
        if [ "$port" = 0 ]; then
            url=$(sed -n 's/.*listening on \(http:\/\/[^ ]*\) (data.*/\1/p' "$tmp/serve.log" | head -n 1)
            [ -n "$url" ] && port=${url##*:}
        fi
        [ "$port" != 0 ] && curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "soak: quarry serve did not start" >&2
    tail -n 20 "$tmp/serve.log" >&2
    exit 1
}
start
url=http://127.0.0.1:$port
log "quarry serve at $url, data in $data${mounted:+ (a 512 MiB tmpfs)}"

# RSS (KiB), open descriptors, pid and anonymous RSS (KiB) of whichever quarry runs, once a second
(
    while :; do
        p=$(cat "$tmp/pid" 2>/dev/null)
        rss=$(awk '/^VmRSS:/ {r = $2} /^RssAnon:/ {a = $2} END {if (r) print r, a}' "/proc/$p/status" 2>/dev/null)
        fds=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
        [ -n "$rss" ] && set -- $rss && printf '%s %s %s %s %s\n' "$(date +%s.%N)" "$1" "$fds" "$p" "$2"
        sleep 1
    done
) >"$out/resources.tsv" &
sampler=$!

sed -e "s|^url=.*|url=$url|" -e "s|^key=.*|key=$key|" -e "s|^duration_s=.*|duration_s=$duration|" \
    -e "s|^rate=.*|rate=$rate|" -e "s|^events=.*|events=$out/events.txt|" "$mix" >"$tmp/mix.conf"
for kv in ${mixset[@]+"${mixset[@]}"}; do echo "$kv" >>"$tmp/mix.conf"; done
"$bench" "$tmp/mix.conf" >"$out/load.md" 2>"$out/load.log" &
loadpid=$!
t_start=$(date +%s.%N)

fake() { curl -s -o /dev/null -X "$1" -H 'Content-Type: application/json' ${2:+-d "$2"} "$QUARRY_TEST_INFERENCE_URL/_fake/faults"; }
crashed=0
alive() { kill -0 "$pid" 2>/dev/null || { log "quarry died on its own"; crashed=1; start; }; }

# inject NAME: the fault for $hold seconds, then its end
inject() {
    case $1 in
    ldap_stop)
        read -r -a cmd < <(tr '\0' ' ' <"/proc/$slapd_pid/cmdline")
        kill -TERM "$slapd_pid"
        while kill -0 "$slapd_pid" 2>/dev/null; do sleep 0.1; done
        sleep "$hold"
        "${cmd[@]}" >/dev/null 2>&1 &
        slapd_pid=$! our_slapd=$!
        sleep 0.5 ;;
    ldap_sigstop) kill -STOP "$slapd_pid"; sleep "$hold"; kill -CONT "$slapd_pid" ;;
    backend_500) fake POST '{"mode":"500","times":-1}'; sleep "$hold"; fake DELETE ;;
    backend_429) fake POST '{"mode":"429","times":-1,"retry_after":1}'; sleep "$hold"; fake DELETE ;;
    backend_stall) fake POST '{"mode":"stall_first_byte","times":-1,"stall_ms":5000}'; sleep "$hold"; fake DELETE ;;
    backend_reset) fake POST '{"mode":"reset_mid_stream","times":-1}'; sleep "$hold"; fake DELETE ;;
    kill9)
        kill -9 "$pid"
        wait "$pid" 2>/dev/null
        sleep 1
        start ;;
    disk_full)
        if [ "$disk_full_by" = rlimit ]; then
            prlimit --pid "$pid" --fsize=1: || { echo "soak: prlimit --pid $pid failed" >&2; exit 1; }
            sleep "$hold"
            prlimit --pid "$pid" --fsize=unlimited: || { echo "soak: prlimit --pid $pid failed" >&2; exit 1; }
        else
            fallocate -l "$(df -B1 --output=avail "$data" | tail -n 1)" "$data/filler" 2>/dev/null ||
                dd if=/dev/zero of="$data/filler" bs=1M 2>/dev/null
            sleep "$hold"
            rm -f "$data/filler"
        fi ;;
    *) echo "soak: unknown fault $1" >&2; exit 1 ;;
    esac
}

IFS=, read -r -a flist <<<"$faults"
schedule=()
for _ in $(seq "$repeat"); do schedule+=("${flist[@]}"); done
n=${#schedule[@]}
: >"$out/faults.txt"
i=0
for f in "${schedule[@]}"; do
    [ -z "$f" ] && continue
    i=$((i + 1))
    # evenly spread in the middle of the run: the first minute and the last stay fault-free
    at=$(awk -v s="$t_start" -v d="$duration" -v i="$i" -v n="$n" 'BEGIN { w = d * 0.8; printf "%.3f", s + d * 0.1 + w * (i - 0.5) / n }')
    while [ "$(awk -v a="$at" -v t="$(date +%s.%N)" 'BEGIN { print (t < a) }')" = 1 ]; do
        alive
        sleep 0.5
    done
    alive
    f_start=$(date +%s.%N)
    log "fault $f"
    inject "$f"
    f_end=$(date +%s.%N)
    echo "$f $f_start $f_end" >>"$out/faults.txt"
done
while kill -0 "$loadpid" 2>/dev/null; do alive; sleep 1; done
wait "$loadpid"
rc=$?
alive

# the store after it all: a clean stop, then SQLite's integrity check and quarry's own
# (its exit status too: a graceful stop exits 0; a sanitizer build reports leaks and fails here)
kill -TERM "$pid"
wait "$pid" 2>/dev/null
stop_rc=$?
pid=
integrity=skipped
if command -v sqlite3 >/dev/null 2>&1; then
    integrity=$(for db in "$data"/*.db; do sqlite3 "$db" 'PRAGMA integrity_check'; done | sort -u | tr '\n' ' ')
fi
"$quarry" stats --data "$data" >"$out/stats.txt" 2>&1 || integrity="$integrity; quarry stats failed"

# recovery: the first success of a route the fault touches, after the fault ended
recovery() {
    local re
    case $1 in
    ldap_*) re='^search_(bm25|hybrid|filter|page)$|^chat$' ;;
    backend_*) re='^chat$' ;; # a generative answer: the extractive fallback is marked in events.txt
    disk_full) re='^put$|^acl$|^upload_job$' ;;
    *) re='.' ;;
    esac
    awk -v e="$2" -v re="$re" '$1 > e && $2 >= 200 && $2 < 299 && $3 ~ re && $4 != "extractive" { printf "%.2f", $1 - e; found = 1; exit }
        END { if (!found) printf "none" }' "$out/events.txt"
}
{
    echo "Command: \`bench/load/soak.sh --duration $duration --rate $rate --hold $hold --repeat $repeat --faults $faults${disk_full_by:+ --disk-full $disk_full_by}\`"
    echo "($(nproc) cores, $(date -u +%F))"
    echo
    cat "$out/load.md"
    echo
    echo "| fault | at s | held s | recovered s after its end |"
    echo "|---|---|---|---|"
    while read -r f s e; do
        printf '| %s | %.0f | %.1f | %s |\n' "$f" "$(echo "$s - $t_start" | bc -l)" "$(echo "$e - $s" | bc -l)" "$(recovery "$f" "$e")"
    done <"$out/faults.txt"
    echo
    awk -v s="$t_start" -v d="$duration" 'NR == 1 { first = $2 } $1 - s > d * 0.1 && !w { w = $2 }
        { if ($2 > max) max = $2; if ($3 > maxfd) maxfd = $3; last = $2; lastfd = $3 }
        END { printf "RSS: %.1f MiB at start, %.1f after warm-up (the first 10%% of the run), %.1f at the end (%+.1f%% since warm-up; peak %.1f); open fds at the end %d (peak %d)\n",
              first / 1024, w / 1024, last / 1024, w ? 100 * (last - w) / w : 0, max / 1024, lastfd, maxfd }' "$out/resources.tsv"
    # a kill9 starts a new process: RSS per process, each after its own warm-up (its first 10% of
    # the run's length, at least 60 s), so that a restart cannot hide a slow leak
    echo
    echo "| quarry process | lived s | RSS after its warm-up MiB | at its end MiB | growth | peak MiB | anonymous RSS after warm-up / at end MiB |"
    echo "|---|---|---|---|---|---|---|"
    awk -v d="$duration" '{ p = $4; if (!(p in t0)) { order[++n] = p; t0[p] = $1; w[p] = -1 }
        warm = d * 0.1 < 60 ? 60 : d * 0.1
        if ($1 - t0[p] >= warm && w[p] < 0) { w[p] = $2; wa[p] = $5 }
        t1[p] = $1; last[p] = $2; lasta[p] = $5; if ($2 > max[p]) max[p] = $2 }
        END { for (i = 1; i <= n; i++) { p = order[i]
            if (w[p] < 0) printf "| %d | %.0f | - (shorter than its warm-up) | %.1f | - | %.1f | - |\n", i, t1[p] - t0[p], last[p] / 1024, max[p] / 1024
            else printf "| %d | %.0f | %.1f | %.1f | %+.1f%% | %.1f | %s |\n", i, t1[p] - t0[p], w[p] / 1024, last[p] / 1024, 100 * (last[p] - w[p]) / w[p], max[p] / 1024,
                wa[p] != "" ? sprintf("%.1f / %.1f", wa[p] / 1024, lasta[p] / 1024) : "-" } }' "$out/resources.tsv"
    echo
    echo "Store integrity after the run: $integrity; quarry died on its own: $([ "$crashed" = 1 ] && echo yes || echo no); exit status after SIGTERM: $stop_rc"
} >"$out/report.md"
"$here/plot.sh" "$out" || log "no plot (gnuplot missing or failed)"
cat "$out/report.md"
grep -E '^(LEAK|LOSS|RESURRECTION)' "$out/load.log" | head -20 >&2
case $rc in 0 | 2) ;; *) log "bench_load exited $rc:"; grep -vE '^(LEAK|LOSS|RESURRECTION)' "$out/load.log" | tail -n 5 >&2 ;; esac
if [ -n "$expect_fail" ]; then # the oracle's self-test: it must have caught the lie
    [ "$rc" = 2 ] && { log "the oracle caught the lie, as it must"; exit 0; }
    log "the oracle did not catch the lie (bench_load exited $rc)"
    exit 1
fi
[ "$rc" -ne 0 ] && exit "$rc"
case $integrity in skipped | "ok "*) ;; *) log "integrity: $integrity"; exit 3 ;; esac
[ "$crashed" = 1 ] && exit 3
[ "$stop_rc" -ne 0 ] && { log "quarry exited $stop_rc after SIGTERM:"; tail -n 20 "$tmp/serve.log" >&2; exit 3; }
exit 0
