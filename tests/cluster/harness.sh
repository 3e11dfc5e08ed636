#!/usr/bin/env bash
# The loopback cluster harness of issue #24: on 127.0.0.1 and free ports it runs one etcd, two
# PostgreSQL 15 nodes under Patroni (synchronous mode) and HAProxy, from the templates in
# deploy/cluster/, everything (data, configurations, logs, pids) under one directory DIR.
#
#   harness.sh up DIR           start a fresh cluster in DIR; waits for a leader and a streaming
#                               synchronous standby; prints the ports as shell assignments
#   harness.sh down DIR         stop everything started in DIR; nothing is left running
#   harness.sh status DIR       the processes, Patroni's view and HAProxy's servers
#   harness.sh kill-leader DIR  SIGKILL the leader's Patroni and PostgreSQL (all its processes)
#   harness.sh env DIR          print the assignments again (DIR/cluster.env)
#   harness.sh stop DIR NAME    stop one component (etcd, patroni-pg1, patroni-pg2, haproxy) with
#                               SIGTERM; Patroni stops its PostgreSQL
#   harness.sh start DIR NAME   start it again as `up` did, on its data (a Patroni node that was
#                               the leader rejoins as a standby, rewound with pg_rewind if needed)
#
# `up` on a DIR that holds a running cluster stops it first; a failed `up` stops what it
# started. PostgreSQL and Patroni run as the `postgres` system user when this runs as root.
# Ports are picked free in 20000-32767 (never 5432); no system-wide cluster is touched.
# Passwords are taken from PATRONI_SUPERUSER_PASSWORD / PATRONI_REPLICATION_PASSWORD when set,
# otherwise generated, and kept in DIR/secrets.env (mode 0600).
#
# Environment: CLUSTER_UP_TIMEOUT (seconds, default 120), CLUSTER_PG_SHARED_BUFFERS (32MB).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
DEPLOY=$REPO/deploy/cluster
PGBIN=/usr/lib/postgresql/15/bin
UP_TIMEOUT=${CLUSTER_UP_TIMEOUT:-120}
MARKER=.quarry-cluster-harness

say() { printf 'harness: %s\n' "$*" >&2; }
die() {
  printf 'harness: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# The prefix that runs a command as the postgres system user when we are root (setpriv execs,
# so a pid recorded for it is the program's own).
AS_PG=()
[ "$(id -u)" -eq 0 ] && AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)

# Runs a command as the postgres system user when we are root, as ourselves otherwise.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds.
wait_for() {
  local what=$1 limit=$2 start
  shift 2
  start=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    if [ $(($(date +%s) - start)) -ge "$limit" ]; then
      say "timed out after ${limit}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# N distinct TCP ports nobody listens on, from 20000-32767 (below Linux's ephemeral range, so no
# outgoing connection takes one between now and the daemon binding it).
free_ports() {
  local n=$1 used p out=()
  used=" $(ss -Htln 2>/dev/null | awk '{n=split($4,a,":"); printf "%s ", a[n]}') "
  while [ ${#out[@]} -lt "$n" ]; do
    p=$((20000 + RANDOM % 12768))
    case "$used" in *" $p "*) continue ;; esac
    used="$used$p "
    out+=("$p")
  done
  echo "${out[@]}"
}

# render TEMPLATE OUTPUT: replaces every ${NAME} by the environment's NAME; an unset one fails.
render() {
  perl -pe 's/\$\{([A-Z0-9_]+)\}/defined $ENV{$1} ? $ENV{$1} : die "harness: $ARGV: \${$1} is not set\n"/ge' \
    "$1" >"$2"
}

# start NAME LOG COMMAND...: starts COMMAND in a session of its own, its pid in DIR/pids/NAME,
# the command line in DIR/cmds/NAME for `harness.sh start`.
start() {
  local name=$1 log=$2
  shift 2
  mkdir -p "$DIR/cmds"
  printf '%s\0' "$log" "$@" >"$DIR/cmds/$name"
  setsid "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$DIR/pids/$name"
}

# True when PID runs and its command line names DIR (so a recycled pid is never signalled).
ours() {
  local pid=$1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$DIR/"
}

gone() { ! ours "$1"; }
pid_of() { if [ -r "$DIR/pids/$1" ]; then cat "$DIR/pids/$1"; fi; }
postmaster_pid() { if [ -r "$DIR/$1/data/postmaster.pid" ]; then head -n 1 "$DIR/$1/data/postmaster.pid"; fi; }

# stop PID [SECONDS]: SIGTERM, then SIGKILL after SECONDS (default 20).
stop_pid() {
  local pid=$1 limit=${2:-20} i=0
  ours "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while ours "$pid" && [ $i -lt $((limit * 5)) ]; do
    sleep 0.2
    i=$((i + 1))
  done
  if ours "$pid"; then
    say "pid $pid did not stop in ${limit}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

# Pids of the cluster's programs (never a shell) whose command line names DIR.
survivors() {
  local f pid comm
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
    case $comm in
      postgres | patroni | etcd | haproxy | psql | pg_basebackup | pg_rewind | initdb | pg_ctl) ;;
      *) continue ;;
    esac
    tr '\0' ' ' 2>/dev/null <"$f" | grep -qF "$DIR/" && echo "$pid"
  done
  return 0
}

load_env() {
  [ -r "$DIR/cluster.env" ] || die "$DIR/cluster.env not found: no cluster was started in $DIR"
  # shellcheck disable=SC1091
  . "$DIR/cluster.env"
  # shellcheck disable=SC1091
  . "$DIR/secrets.env"
}

do_down() {
  local n pid
  [ -d "$DIR/pids" ] || return 0
  stop_pid "$(pid_of haproxy)" 10
  # Patroni stops its PostgreSQL (fast shutdown) when it receives SIGTERM.
  for n in pg1 pg2; do
    pid=$(pid_of "patroni-$n")
    if ours "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for n in pg1 pg2; do stop_pid "$(pid_of "patroni-$n")" 40; done
  for n in pg1 pg2; do
    pid=$(postmaster_pid "$n")
    if ours "$pid"; then as_pg "$PGBIN/pg_ctl" -D "$DIR/$n/data" -m immediate -w -t 20 stop >/dev/null 2>&1 || true; fi
    stop_pid "$pid" 10
  done
  stop_pid "$(pid_of etcd)" 10
  # Anything else still naming DIR (a postgres child whose postmaster was SIGKILLed, a psql).
  for pid in $(survivors); do
    say "left over: pid $pid ($(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-80)): SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  done
  sleep 0.3
  if [ -n "$(survivors)" ]; then
    say "processes still running in $DIR: $(survivors | tr '\n' ' ')"
    return 1
  fi
  rm -f "$DIR"/pids/*
  return 0
}

cmd_down() {
  if [ ! -e "$DIR/$MARKER" ]; then
    say "no cluster in $DIR"
    return 0
  fi
  do_down || die "could not stop everything in $DIR"
  say "stopped everything in $DIR"
}

http_ok() { curl -fsS -m 2 -o /dev/null "$1" 2>/dev/null; }

psql_write() { PGPASSWORD=$PATRONI_SUPERUSER_PASSWORD psql -X -q -At -h 127.0.0.1 -p "$PG_WRITE_PORT" -U "$PATRONI_SUPERUSER_USERNAME" -d postgres "$@"; }
psql_read() { PGPASSWORD=$PATRONI_SUPERUSER_PASSWORD psql -X -q -At -h 127.0.0.1 -p "$PG_READ_PORT" -U "$PATRONI_SUPERUSER_USERNAME" -d postgres "$@"; }

sync_standby_streaming() {
  [ "$(psql_write -c "select count(*) from pg_stat_replication where state = 'streaming' and sync_state = 'sync'" 2>/dev/null)" = 1 ]
}
read_port_on_standby() { [ "$(psql_read -c 'select pg_is_in_recovery()' 2>/dev/null)" = t ]; }

on_up_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if [ $rc -ne 0 ]; then
    say "up failed (exit $rc); the logs, last lines:"
    local f
    for f in "$DIR"/logs/*.log; do
      [ -r "$f" ] || continue
      printf -- '--- %s\n' "$f" >&2
      tail -n 15 "$f" >&2
    done
    say "stopping what was started"
    do_down || true
  fi
  exit $rc
}

cmd_up() {
  local ports n i pr pg
  if [ -e "$DIR" ] && [ ! -e "$DIR/$MARKER" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    die "$DIR exists, is not empty and was not made by this harness: refusing to use it"
  fi
  if [ -e "$DIR/$MARKER" ]; then
    do_down || die "could not stop the cluster already running in $DIR"
    rm -rf "${DIR:?}"/etcd "${DIR:?}"/pg1 "${DIR:?}"/pg2 "${DIR:?}"/haproxy "${DIR:?}"/logs "${DIR:?}"/pids "${DIR:?}"/cmds \
      "$DIR/cluster.env" "$DIR/secrets.env"
  fi
  for b in etcd patroni haproxy curl psql ss setpriv perl; do
    command -v "$b" >/dev/null || die "$b not found: run scripts/bootstrap (it installs patroni, etcd-server, haproxy, postgresql-15)"
  done
  [ -x "$PGBIN/postgres" ] || die "$PGBIN/postgres not found: run scripts/bootstrap (postgresql-15)"
  if [ "$(id -u)" -eq 0 ]; then id postgres >/dev/null 2>&1 || die "no postgres system user (postgresql-15 creates it)"; fi

  mkdir -p "$DIR"
  touch "$DIR/$MARKER"
  trap on_up_exit EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$DIR/etcd" "$DIR/pg1" "$DIR/pg2" "$DIR/haproxy" "$DIR/logs" "$DIR/pids"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$DIR/pg1" "$DIR/pg2"
    chmod 0700 "$DIR/pg1" "$DIR/pg2"
    as_pg test -x "$DIR" || die "the postgres user cannot reach $DIR (every directory above it needs o+x): choose another DIR"
  fi

  read -r -a ports <<<"$(free_ports 13)"
  export ETCD_CLIENT_PORT=${ports[0]} ETCD_PEER_PORT=${ports[1]}
  export PG1_PORT=${ports[2]} PG2_PORT=${ports[3]} PATRONI1_PORT=${ports[4]} PATRONI2_PORT=${ports[5]}
  export PG_WRITE_PORT=${ports[6]} PG_READ_PORT=${ports[7]} HAPROXY_STATS_PORT=${ports[8]}
  export QUARRY_HTTP_PORT=${ports[9]} QUARRY1_PORT=${ports[10]} QUARRY2_PORT=${ports[11]} QUARRY3_PORT=${ports[12]}

  # Secrets: from the environment, or made up here; never in the templates.
  umask 077
  export PATRONI_SUPERUSER_USERNAME=${PATRONI_SUPERUSER_USERNAME:-postgres}
  export PATRONI_REPLICATION_USERNAME=${PATRONI_REPLICATION_USERNAME:-replicator}
  export PATRONI_SUPERUSER_PASSWORD=${PATRONI_SUPERUSER_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')}
  export PATRONI_REPLICATION_PASSWORD=${PATRONI_REPLICATION_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')}
  {
    printf 'PATRONI_SUPERUSER_USERNAME=%q\nPATRONI_SUPERUSER_PASSWORD=%q\n' "$PATRONI_SUPERUSER_USERNAME" "$PATRONI_SUPERUSER_PASSWORD"
    printf 'PATRONI_REPLICATION_USERNAME=%q\nPATRONI_REPLICATION_PASSWORD=%q\n' "$PATRONI_REPLICATION_USERNAME" "$PATRONI_REPLICATION_PASSWORD"
  } >"$DIR/secrets.env"
  umask 022

  # etcd
  export ETCD_NAME=etcd1 ETCD_DATA_DIR=$DIR/etcd/data ETCD_CLUSTER_TOKEN=quarry-loopback-$$
  export ETCD_CLIENT_ADDR=127.0.0.1:$ETCD_CLIENT_PORT ETCD_PEER_ADDR=127.0.0.1:$ETCD_PEER_PORT
  export ETCD_INITIAL_CLUSTER=etcd1=http://127.0.0.1:$ETCD_PEER_PORT
  render "$DEPLOY/etcd.yml" "$DIR/etcd/etcd.yml"
  start etcd "$DIR/logs/etcd.log" etcd --config-file "$DIR/etcd/etcd.yml"
  wait_for "etcd on $ETCD_CLIENT_ADDR (see $DIR/logs/etcd.log)" 30 \
    sh -c "curl -fsS -m 2 http://$ETCD_CLIENT_ADDR/health | grep -q '\"health\":\"true\"'"
  say "etcd up on $ETCD_CLIENT_ADDR"

  # Two Patroni nodes, started together: one wins the initialize key in etcd and runs initdb,
  # the other clones it with pg_basebackup once it leads.
  export PATRONI_SCOPE=quarry ETCD_HOSTS=127.0.0.1:$ETCD_CLIENT_PORT CLUSTER_CIDR=127.0.0.1/32
  export PG_SHARED_BUFFERS=${CLUSTER_PG_SHARED_BUFFERS:-32MB}
  for i in 1 2; do
    pg=pg$i
    pr=PATRONI${i}_PORT
    n=PG${i}_PORT
    PATRONI_NAME=$pg PATRONI_RESTAPI_ADDR=127.0.0.1:${!pr} PG_ADDR=127.0.0.1:${!n} \
      PG_DATA_DIR=$DIR/$pg/data PG_PGPASS=$DIR/$pg/pgpass PG_SOCKET_DIR=$DIR/$pg \
      render "$DEPLOY/patroni.yml" "$DIR/$pg/patroni.yml"
    chmod 0644 "$DIR/$pg/patroni.yml"
    touch "$DIR/logs/patroni-$pg.log"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$DIR/logs/patroni-$pg.log"
    start "patroni-$pg" "$DIR/logs/patroni-$pg.log" "${AS_PG[@]}" env HOME="$DIR/$pg" patroni "$DIR/$pg/patroni.yml"
  done
  wait_for "a Patroni leader (see $DIR/logs/patroni-pg*.log)" "$UP_TIMEOUT" \
    sh -c "curl -fsS -m 2 -o /dev/null http://127.0.0.1:$PATRONI1_PORT/primary || curl -fsS -m 2 -o /dev/null http://127.0.0.1:$PATRONI2_PORT/primary"
  say "Patroni elected a leader"

  # HAProxy
  export HAPROXY_STATS_ADDR=127.0.0.1:$HAPROXY_STATS_PORT PG_WRITE_ADDR=127.0.0.1:$PG_WRITE_PORT
  export PG_READ_ADDR=127.0.0.1:$PG_READ_PORT PG1_ADDR=127.0.0.1:$PG1_PORT PG2_ADDR=127.0.0.1:$PG2_PORT
  export QUARRY_HTTP_ADDR=127.0.0.1:$QUARRY_HTTP_PORT QUARRY1_ADDR=127.0.0.1:$QUARRY1_PORT
  export QUARRY2_ADDR=127.0.0.1:$QUARRY2_PORT QUARRY3_ADDR=127.0.0.1:$QUARRY3_PORT
  render "$DEPLOY/haproxy.cfg" "$DIR/haproxy/haproxy.cfg"
  haproxy -c -q -f "$DIR/haproxy/haproxy.cfg" >"$DIR/logs/haproxy-check.log" 2>&1 ||
    die "haproxy rejects $DIR/haproxy/haproxy.cfg: $(cat "$DIR/logs/haproxy-check.log")"
  start haproxy "$DIR/logs/haproxy.log" haproxy -db -f "$DIR/haproxy/haproxy.cfg"

  {
    echo "CLUSTER_DIR=$DIR"
    for v in ETCD_CLIENT_PORT PG_WRITE_PORT PG_READ_PORT PG1_PORT PG2_PORT PATRONI_API_1 PATRONI_API_2 \
      HAPROXY_STATS_PORT QUARRY_HTTP_PORT QUARRY1_PORT QUARRY2_PORT QUARRY3_PORT; do
      case $v in
        PATRONI_API_1) echo "PATRONI_API_1=$PATRONI1_PORT" ;;
        PATRONI_API_2) echo "PATRONI_API_2=$PATRONI2_PORT" ;;
        *) echo "$v=${!v}" ;;
      esac
    done
  } >"$DIR/cluster.env"

  wait_for "a streaming synchronous standby behind HAProxy's write port $PG_WRITE_PORT" "$UP_TIMEOUT" sync_standby_streaming
  wait_for "HAProxy's read port $PG_READ_PORT to reach the standby" 30 read_port_on_standby
  say "up: leader $(leader_name), synchronous standby streaming; logs in $DIR/logs"
  trap - EXIT INT TERM
  cat "$DIR/cluster.env"
}

# The name of the member answering /primary, empty when none does.
leader_name() {
  local i pr
  for i in 1 2; do
    pr=PATRONI${i}_PORT
    [ -n "${!pr:-}" ] || pr=PATRONI_API_$i
    if http_ok "http://127.0.0.1:${!pr}/primary"; then
      echo "pg$i"
      return 0
    fi
  done
}

cmd_kill_leader() {
  local leader ppid pm p
  load_env
  leader=$(leader_name)
  [ -n "$leader" ] || die "no member answers /primary: no leader to kill"
  ppid=$(pid_of "patroni-$leader")
  pm=$(postmaster_pid "$leader")
  # Patroni first, so that it cannot restart PostgreSQL, then the postmaster and its children
  # together, as a crashed host would lose them.
  ours "$ppid" && kill -KILL "$ppid"
  if ours "$pm"; then
    local kids
    read -r -a kids <<<"$(ps -o pid= --ppid "$pm" | tr '\n' ' ')"
    kill -KILL "$pm" "${kids[@]}" 2>/dev/null || true
  fi
  for p in $ppid $pm; do
    wait_for "pid $p to die" 10 gone "$p" || true
  done
  echo "KILLED=$leader"
}

cmd_stop_one() {
  local name=$1
  load_env
  [ -r "$DIR/cmds/$name" ] || die "no component $name in $DIR (etcd, patroni-pg1, patroni-pg2, haproxy)"
  ours "$(pid_of "$name")" || die "$name is not running"
  stop_pid "$(pid_of "$name")" 40
  say "stopped $name"
}

cmd_start_one() {
  local name=$1 cmd
  load_env
  [ -r "$DIR/cmds/$name" ] || die "no component $name in $DIR (etcd, patroni-pg1, patroni-pg2, haproxy)"
  if ours "$(pid_of "$name")"; then die "$name is already running"; fi
  export PATRONI_SUPERUSER_USERNAME PATRONI_SUPERUSER_PASSWORD PATRONI_REPLICATION_USERNAME PATRONI_REPLICATION_PASSWORD
  mapfile -d '' cmd <"$DIR/cmds/$name"
  start "$name" "${cmd[@]}"
  say "started $name (pid $(pid_of "$name"))"
}

cmd_status() {
  local n pid state
  load_env
  for n in etcd patroni-pg1 patroni-pg2 haproxy; do
    pid=$(pid_of "$n")
    if ours "$pid"; then state="running (pid $pid)"; else state=stopped; fi
    printf '%-12s %s\n' "$n" "$state"
  done
  for n in pg1 pg2; do
    pid=$(postmaster_pid "$n")
    if ours "$pid"; then state="running (pid $pid)"; else state=stopped; fi
    printf '%-12s %s\n' "postgres-$n" "$state"
  done
  if ours "$(pid_of etcd)"; then
    patronictl -c "$DIR/pg1/patroni.yml" list 2>/dev/null || echo "patronictl list failed"
  fi
  if ours "$(pid_of haproxy)"; then
    echo "HAProxy servers (proxy server status):"
    curl -fsS -m 2 "http://127.0.0.1:$HAPROXY_STATS_PORT/;csv" 2>/dev/null |
      awk -F, '$1 ~ /^pg_|^quarry/ && $2 != "FRONTEND" && $2 != "BACKEND" {print "  " $1, $2, $18}'
  fi
}

[ $# -ge 2 ] || usage
DIR=$(realpath -m "$2")
case $1 in
  stop | start) [ $# -eq 3 ] || usage ;;
  *) [ $# -eq 2 ] || usage ;;
esac
case $1 in
  stop) cmd_stop_one "$3" ;;
  start) cmd_start_one "$3" ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kill-leader) cmd_kill_leader ;;
  env) load_env && cat "$DIR/cluster.env" ;;
  *) usage ;;
esac
