#!/bin/bash
# Operations checks against a real `quarry serve` (run under tests/fixtures/slapd-fixture.sh, whose
# QUARRY_TEST_LDAP_* variables it reads): the Prometheus exposition, the example alert rules and
# dashboard, SIGHUP reloads and log reopening, and the unauthenticated probes.
#
#   tests/ops_live.sh CASE QUARRY_BIN SOURCE_DIR
#
# CASE: promtool_metrics | promtool_rules | deploy_metric_names | sighup_reload | probes
# Exits 0 when every check passes, 1 at the first that does not (saying which), 77 when a tool it
# needs (promtool, curl, python3) is absent.
set -u

CASE=${1:?case}
QUARRY=${2:?quarry binary}
SRC=${3:?source directory}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/quarry-ops.XXXXXX") || exit 1
PID=""
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

fail() {
    echo "ops_live $CASE: FAIL: $1" >&2
    for f in "$TMP/serve.log" "$TMP/quarry.log"; do
        [ -f "$f" ] && { echo "--- $f (tail):" >&2; tail -n 30 "$f" >&2; }
    done
    exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || { echo "ops_live $CASE: $1 not installed, skipped" >&2; exit 77; }; }
need curl

# config LEVEL ORIGIN MODEL LISTEN [USER_LIMIT]: writes the configuration file the server reads (and
# rereads); USER_LIMIT is auth.rate_limit_user (default 5)
config() {
    cat >"$TMP/quarry.json" <<JSON
{
  "data": {"dir": "$TMP/data"},
  "log": {"level": "$1", "file": "$TMP/quarry.log"},
  "server": {"listen": "$4", "threads": 1, "workers": 4, "access_log": "$TMP/access.log",
             "cors_origins": "$2"},
  "ldap": {"uri": "${QUARRY_TEST_LDAP_URI:-}", "bind_dn": "${QUARRY_TEST_LDAP_BIND_DN:-}",
           "user_base": "ou=people,${QUARRY_TEST_LDAP_BASE:-dc=quarry,dc=test}",
           "group_base": "ou=groups,${QUARRY_TEST_LDAP_BASE:-dc=quarry,dc=test}"},
  "auth": {"admin_groups": "ops", "rate_limit_user": ${5:-5}},
  "inference": {"model": "$3", "base_url": "${QUARRY_TEST_INFERENCE_URL:-http://127.0.0.1:9}/v1", "retries": 0}
}
JSON
}

start() {
    [ -n "${QUARRY_TEST_LDAP_URI:-}" ] || fail "run me under tests/fixtures/slapd-fixture.sh"
    KEY=$("$QUARRY" keys create --name ops --scopes admin,search --data "$TMP/data" 2>/dev/null | head -n 1)
    case $KEY in qk_*) ;; *) fail "quarry keys create gave no key" ;; esac
    QUARRY_LDAP_BIND_PASSWORD=$QUARRY_TEST_LDAP_BIND_PW "$QUARRY" serve --config "$TMP/quarry.json" \
        >"$TMP/serve.log" 2>&1 &
    PID=$!
    BASE=""
    for _ in $(seq 100); do
        BASE=$(sed -n 's/.*listening on \(http:\/\/[^ ]*\) (data.*/\1/p' "$TMP/serve.log" | head -n 1)
        [ -n "$BASE" ] && break
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$BASE" ] || fail "the server did not start"
}

# get PATH [curl arguments...]: body to $TMP/body, status to $STATUS
get() {
    local path=$1
    shift
    STATUS=$(curl -s -o "$TMP/body" -w '%{http_code}' "$@" "$BASE$path") || fail "cannot reach $BASE$path"
}

# preflight ORIGIN: the status of a CORS preflight for POST /v1/search from ORIGIN
preflight() {
    curl -s -o /dev/null -w '%{http_code}' -X OPTIONS -H "Origin: $1" \
        -H 'Access-Control-Request-Method: POST' "$BASE/v1/search"
}

# wait_log PATTERN: waits (5 s at most) for a line of the log (log.file) matching PATTERN (grep -E)
wait_log() {
    for _ in $(seq 50); do
        grep -Eq "$1" "$TMP/quarry.log" && return 0
        sleep 0.1
    done
    fail "the log never said: $1"
}

traffic() {
    get /healthz
    get /readyz
    get /nonexistent
    get /v1/search -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -d '{"query":"expenses policy"}'
    [ "$STATUS" = 200 ] || fail "search with the key answered $STATUS"
    get /v1/me -u alice:wrong-password
}

scrape() {
    get /metrics -H "Authorization: Bearer $KEY"
    [ "$STATUS" = 200 ] || fail "/metrics answered $STATUS"
    cp "$TMP/body" "$TMP/metrics.txt"
}

case $CASE in
promtool_metrics)
    need promtool
    config warn "" m1 127.0.0.1:0
    start
    traffic
    scrape
    promtool check metrics <"$TMP/metrics.txt" >"$TMP/promtool.out" 2>&1 || {
        cat "$TMP/promtool.out" >&2
        fail "promtool check metrics failed"
    }
    [ -s "$TMP/promtool.out" ] && { cat "$TMP/promtool.out" >&2; fail "promtool check metrics reported problems"; }
    for series in 'quarry_build_info{version="' process_cpu_seconds_total process_resident_memory_bytes \
        process_virtual_memory_bytes process_open_fds process_max_fds process_start_time_seconds \
        'quarry_http_request_duration_seconds_bucket{route="/v1/search",method="POST",status="200",le=' \
        quarry_store_changes quarry_ready quarry_sqlite_memory_bytes; do
        grep -qF "$series" "$TMP/metrics.txt" || fail "no $series in the scrape"
    done
    grep -q '_change_counter' "$TMP/metrics.txt" && fail "a *_change_counter series is still exposed"
    # SQLite's heap after the traffic: the handles' page caches hold something, never nothing
    awk '$1 == "quarry_sqlite_memory_bytes" { found = 1; if ($2 + 0 <= 0) exit 1 } END { exit !found }' \
        "$TMP/metrics.txt" || fail "quarry_sqlite_memory_bytes is not a positive number"
    ;;
promtool_rules)
    need promtool
    promtool check rules "$SRC/deploy/prometheus/quarry-alerts.yml" >"$TMP/check.out" 2>&1 ||
        { cat "$TMP/check.out" >&2; fail "promtool check rules"; }
    (cd "$SRC/deploy/prometheus" && promtool test rules quarry-alerts.test.yml) >"$TMP/test.out" 2>&1 ||
        { cat "$TMP/test.out" >&2; fail "promtool test rules"; }
    ;;
deploy_metric_names)
    need python3
    python3 -m json.tool "$SRC/deploy/grafana/quarry-dashboard.json" >/dev/null ||
        fail "the dashboard is not valid JSON"
    config warn "" m1 127.0.0.1:0
    start
    traffic
    scrape
    # every name the rules and the dashboard use is a series of the scrape ("up" is Prometheus' own)
    names=$(grep -ohE '\b(quarry|process)_[a-z0-9_]+' "$SRC/deploy/prometheus/quarry-alerts.yml" \
        "$SRC/deploy/grafana/quarry-dashboard.json" | sort -u)
    [ "$(echo "$names" | wc -l)" -ge 20 ] || fail "too few metric names found in deploy/"
    for n in $names; do
        grep -qE "^${n}[{ ]" "$TMP/metrics.txt" || fail "deploy/ uses $n, which the scrape does not have"
    done
    ;;
sighup_reload)
    need python3
    [ -n "${QUARRY_TEST_INFERENCE_URL:-}" ] || fail "run me under tests/fixtures/fake-inference-fixture.sh"
    config warn https://old.example m1 127.0.0.1:0
    start
    [ "$(preflight https://old.example)" = 204 ] || fail "old origin refused before the reload"
    [ "$(preflight https://new.example)" = 403 ] || fail "new origin allowed before the reload"
    # a document alice may read, so that /v1/ask calls the backend
    get '/v1/documents/ops%2Fnote.md?refresh=wait_for' -X PUT -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' \
        -d '{"title":"Rotation","text":"Logs are rotated weekly by logrotate.","acl":["user:alice"]}'
    [ "$STATUS" = 201 ] || [ "$STATUS" = 200 ] || fail "PUT document answered $STATUS: $(cat "$TMP/body")"
    # model_of_last_ask: the model the backend was asked for by a fresh /v1/ask of alice's
    model_of_last_ask() {
        curl -s -X DELETE "$QUARRY_TEST_INFERENCE_URL/_fake/requests" >/dev/null
        get /v1/ask -u alice:Alice-pw-1 -H 'Content-Type: application/json' \
            -d '{"question":"How often are logs rotated?"}'
        [ "$STATUS" = 200 ] || fail "/v1/ask answered $STATUS: $(cat "$TMP/body")"
        curl -s "$QUARRY_TEST_INFERENCE_URL/_fake/requests" |
            python3 -c 'import json,sys; print(",".join(sorted({r["body"]["model"] for r in json.load(sys.stdin) if r.get("body") and "model" in r["body"]})))'
    }
    [ "$(model_of_last_ask)" = m1 ] || fail "the backend was not asked for m1 before the reload"
    grep -q ' info ' "$TMP/quarry.log" && fail "info lines logged at log.level=warn"
    # at 5 failed logins per user, one failure does not lock carol out
    get /v1/me -u carol:wrong
    get /v1/me -u carol:Carol-pw-3
    [ "$STATUS" = 200 ] || fail "carol locked out after one failure before the reload ($STATUS)"
    get /healthz
    [ -f "$TMP/data/audit.log" ] || fail "no audit log"
    for f in "$TMP/access.log" "$TMP/data/audit.log" "$TMP/quarry.log"; do chmod 0640 "$f"; done
    # logrotate's move, then the reload with new values
    mv "$TMP/access.log" "$TMP/access.log.1"
    mv "$TMP/data/audit.log" "$TMP/data/audit.log.1"
    mv "$TMP/quarry.log" "$TMP/quarry.log.1"
    config info https://new.example m2 127.0.0.1:1 1
    kill -HUP "$PID"
    wait_log 'info +\[reload\] configuration reloaded: applied '
    line=$(grep 'configuration reloaded' "$TMP/quarry.log" | tail -n 1)
    for k in log.level server.cors_origins inference.model auth.rate_limit_user; do
        echo "$line" | grep -q "$k" || fail "the reload line does not name $k: $line"
    done
    grep -q 'server.listen changed: needs restart' "$TMP/quarry.log" || fail "server.listen not reported as needing a restart"
    echo "$line" | grep -q 'server.listen' && fail "server.listen reported as applied"
    kill -0 "$PID" 2>/dev/null || fail "the server died on SIGHUP"
    [ "$(preflight https://new.example)" = 204 ] || fail "new origin refused after the reload"
    [ "$(preflight https://old.example)" = 403 ] || fail "old origin still allowed after the reload"
    [ "$(model_of_last_ask)" = m2 ] || fail "the backend was not asked for m2 after the reload"
    # at 1 failed login per user, erin is refused after one failure, even with her password
    get /v1/me -u erin:wrong
    get /v1/me -u erin:Erin-pw-5
    [ "$STATUS" = 429 ] || fail "auth.rate_limit_user=1 not in force after the reload (erin got $STATUS)"
    get /healthz
    [ "$STATUS" = 200 ] || fail "/healthz answered $STATUS after the reload"
    # the moved logs: new files, with the old ones' mode, holding what came since
    for f in "$TMP/access.log" "$TMP/data/audit.log" "$TMP/quarry.log"; do
        [ -f "$f" ] || fail "no new $f after SIGHUP"
        [ "$(stat -c %a "$f")" = 640 ] || fail "new $f has mode $(stat -c %a "$f"), not 640"
    done
    grep -q '"/healthz"' "$TMP/access.log" || fail "the new access log has no line for /healthz"
    grep -q '"action":"answer"' "$TMP/data/audit.log" || fail "the new audit log has no line for the ask"
    n_old=$(wc -l <"$TMP/access.log.1")
    get /healthz
    [ "$(wc -l <"$TMP/access.log.1")" = "$n_old" ] || fail "the moved access log is still written"
    # a broken file changes nothing
    echo '{"log": {"level": "debug"}, "server": {' >"$TMP/quarry.json"
    kill -HUP "$PID"
    wait_log 'the configuration was not reloaded, nothing changed'
    grep -q ' debug ' "$TMP/quarry.log" && fail "log.level changed by a broken file"
    [ "$(preflight https://new.example)" = 204 ] || fail "a broken file changed the CORS origins"
    [ "$(preflight https://old.example)" = 403 ] || fail "a broken file changed the CORS origins"
    # a well-formed file with a value the server refuses (a CORS origin with a path): nothing changes
    config debug https://bad.example/path m3 127.0.0.1:0
    kill -HUP "$PID"
    wait_log 'SIGHUP: nothing changed'
    [ "$(preflight https://new.example)" = 204 ] || fail "a refused reload changed the CORS origins"
    grep -q ' debug ' "$TMP/quarry.log" && fail "a refused reload changed log.level"
    [ "$(model_of_last_ask)" = m2 ] || fail "a refused reload changed inference.model"
    scrape
    grep -q '^quarry_config_reloads_total 1$' "$TMP/metrics.txt" || fail "quarry_config_reloads_total is not 1"
    grep -q '^quarry_config_reload_failures_total 2$' "$TMP/metrics.txt" || fail "quarry_config_reload_failures_total is not 2"
    grep -q '^quarry_inference_calls_total 3$' "$TMP/metrics.txt" || fail "backend calls of replaced clients not counted: $(grep '^quarry_inference_calls_total' "$TMP/metrics.txt")"
    # SIGTERM stays graceful
    kill -TERM "$PID"
    wait "$PID"
    rc=$?
    PID=""
    [ "$rc" = 0 ] || fail "quarry serve exited $rc on SIGTERM"
    grep -q 'quarry serve: stopped' "$TMP/serve.log" || fail "no graceful stop"
    ;;
probes)
    config warn "" m1 127.0.0.1:0
    start
    get /healthz
    [ "$STATUS" = 200 ] || fail "/healthz answered $STATUS"
    [ "$(cat "$TMP/body")" = '{"status":"ok"}' ] || fail "/healthz said more than its status: $(cat "$TMP/body")"
    get /readyz
    [ "$STATUS" = 200 ] || fail "/readyz without credentials answered $STATUS: $(cat "$TMP/body")"
    [ "$(cat "$TMP/body")" = '{"status":"ok"}' ] || fail "/readyz said more than its status: $(cat "$TMP/body")"
    # the details: administrators only
    get /v1/status
    [ "$STATUS" = 401 ] || fail "/v1/status anonymous answered $STATUS"
    get /v1/status -u alice:Alice-pw-1
    [ "$STATUS" = 403 ] || fail "/v1/status for alice answered $STATUS"
    get /v1/status -H "Authorization: Bearer $KEY"
    [ "$STATUS" = 200 ] || fail "/v1/status for an admin key answered $STATUS"
    grep -q '"ldap":"ok"' "$TMP/body" || fail "/v1/status has no LDAP check: $(cat "$TMP/body")"
    grep -q '"documents":' "$TMP/body" || fail "/v1/status has no counts for the administrator"
    # many anonymous probes cost LDAP at most one search per API_PROBE_LDAP_NS (2 s)
    scrape
    before=$(sed -n 's/^quarry_ldap_searches_total //p' "$TMP/metrics.txt")
    for _ in $(seq 40); do get /readyz; [ "$STATUS" = 200 ] || fail "/readyz answered $STATUS"; done
    scrape
    after=$(sed -n 's/^quarry_ldap_searches_total //p' "$TMP/metrics.txt")
    [ $((after - before)) -le 4 ] || fail "40 probes made $((after - before)) LDAP searches"
    # LDAP gone: /readyz says unavailable and nothing more
    kill "$QUARRY_TEST_SLAPD_PID" 2>/dev/null
    sleep 2.5
    get /readyz
    [ "$STATUS" = 503 ] || fail "/readyz with LDAP down answered $STATUS"
    [ "$(cat "$TMP/body")" = '{"status":"unavailable"}' ] || fail "/readyz said more than its status: $(cat "$TMP/body")"
    ;;
*)
    echo "ops_live: unknown case $CASE" >&2
    exit 2
    ;;
esac
exit 0
