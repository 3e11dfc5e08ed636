#!/bin/sh
# CORS from the outside, with curl: a preflight and an actual request from an allowed origin and
# from a refused one, as a browser would send them.
#
#   tests/cors_curl.sh BASE_URL ALLOWED_ORIGIN      against a running server whose
#                                                   server.cors_origins lists ALLOWED_ORIGIN
#   tests/cors_curl.sh --quarry BIN ALLOWED_ORIGIN  starts `BIN serve` on a free loopback port
#                                                   with a scratch data directory, then the same
#
# Exits 0 when every check passes, 1 at the first that does not (saying which).
set -u

usage() {
    echo "usage: $0 BASE_URL ALLOWED_ORIGIN | $0 --quarry BIN ALLOWED_ORIGIN" >&2
    exit 2
}

QUARRY=""
if [ "${1:-}" = "--quarry" ]; then
    [ $# -eq 3 ] || usage
    QUARRY=$2
    ORIGIN=$3
else
    [ $# -eq 2 ] || usage
    BASE=${1%/}
    ORIGIN=$2
fi
REFUSED="https://refused-origin.example"
[ "$ORIGIN" = "$REFUSED" ] && REFUSED="https://another-refused-origin.example"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/quarry-cors-curl.XXXXXX") || exit 1
PID=""
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

if [ -n "$QUARRY" ]; then
    "$QUARRY" serve --data "$TMP/data" --log-level info --set server.listen=127.0.0.1:0 \
        --set server.workers=2 --set server.threads=1 --set "server.cors_origins=$ORIGIN" \
        >"$TMP/serve.log" 2>&1 &
    PID=$!
    BASE=""
    i=0
    while [ $i -lt 100 ] && [ -z "$BASE" ]; do
        BASE=$(sed -n 's/.*listening on \(https\{0,1\}:\/\/[^ ]*\).*/\1/p' "$TMP/serve.log" | head -n 1)
        [ -n "$BASE" ] && break
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    if [ -z "$BASE" ]; then
        echo "cors_curl: the server did not start:" >&2
        cat "$TMP/serve.log" >&2
        exit 1
    fi
fi

fail() {
    echo "cors_curl: FAIL: $1" >&2
    echo "--- answer:" >&2
    cat "$TMP/headers" >&2
    exit 1
}

# request METHOD PATH [curl header arguments...]: headers to $TMP/headers, status to $STATUS
request() {
    method=$1
    path=$2
    shift 2
    STATUS=$(curl -s -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X "$method" "$@" "$BASE$path") ||
        { echo "cors_curl: cannot reach $BASE$path" >&2; exit 1; }
}

# header NAME: the value of response header NAME (any case), or nothing
header() {
    tr -d '\r' <"$TMP/headers" | awk -v n="$1" 'BEGIN { n = tolower(n) ":" }
        tolower(substr($0, 1, length(n))) == n { sub(/^[^:]*:[ \t]*/, ""); print; exit }'
}

no_cors_headers() {
    ! tr -d '\r' <"$TMP/headers" | grep -qi '^access-control-'
}

# 1. preflight from the allowed origin
request OPTIONS /v1/chat/completions -H "Origin: $ORIGIN" -H 'Access-Control-Request-Method: POST' \
    -H 'Access-Control-Request-Headers: authorization, content-type'
[ "$STATUS" = 204 ] || fail "preflight from $ORIGIN: status $STATUS, expected 204"
[ "$(header Access-Control-Allow-Origin)" = "$ORIGIN" ] || fail "preflight from $ORIGIN: Access-Control-Allow-Origin"
header Access-Control-Allow-Methods | grep -q POST || fail "preflight: Access-Control-Allow-Methods lacks POST"
header Access-Control-Allow-Headers | grep -qi authorization || fail "preflight: Access-Control-Allow-Headers lacks Authorization"
[ "$(header Access-Control-Max-Age)" = 600 ] || fail "preflight: Access-Control-Max-Age"
[ -z "$(header Access-Control-Allow-Credentials)" ] || fail "preflight: Access-Control-Allow-Credentials sent"
echo "ok preflight from $ORIGIN: 204 with Access-Control-Allow-*"

# 2. preflight from a refused origin, and for a header quarry does not read
request OPTIONS /v1/chat/completions -H "Origin: $REFUSED" -H 'Access-Control-Request-Method: POST'
[ "$STATUS" = 403 ] || fail "preflight from $REFUSED: status $STATUS, expected 403"
no_cors_headers || fail "preflight from $REFUSED: Access-Control-* headers sent"
grep -q '"type":"permission_error"' "$TMP/body" || fail "preflight from $REFUSED: not an OpenAI error object"
request OPTIONS /v1/chat/completions -H "Origin: $ORIGIN" -H 'Access-Control-Request-Method: POST' \
    -H 'Access-Control-Request-Headers: cookie'
[ "$STATUS" = 403 ] || fail "preflight asking for Cookie: status $STATUS, expected 403"
no_cors_headers || fail "preflight asking for Cookie: Access-Control-* headers sent"
echo "ok preflight from $REFUSED, or asking for Cookie: 403 without Access-Control-*"

# 3. actual requests: one that needs no credentials, and one refused for want of them
request GET /healthz -H "Origin: $ORIGIN"
[ "$STATUS" = 200 ] || fail "GET /healthz from $ORIGIN: status $STATUS"
[ "$(header Access-Control-Allow-Origin)" = "$ORIGIN" ] || fail "GET /healthz from $ORIGIN: Access-Control-Allow-Origin"
header Access-Control-Expose-Headers | grep -q X-Request-Id || fail "GET /healthz: Access-Control-Expose-Headers"
header Vary | grep -q Origin || fail "GET /healthz: Vary lacks Origin"
request GET /v1/me -H "Origin: $ORIGIN"
[ "$STATUS" = 401 ] || fail "GET /v1/me without credentials from $ORIGIN: status $STATUS, expected 401"
[ "$(header Access-Control-Allow-Origin)" = "$ORIGIN" ] || fail "401 from $ORIGIN: Access-Control-Allow-Origin"
grep -q '"type":"authentication_error"' "$TMP/body" || fail "401: not an OpenAI error object"
echo "ok actual requests from $ORIGIN: Access-Control-Allow-Origin on 200 and 401"

request GET /healthz -H "Origin: $REFUSED"
[ "$STATUS" = 200 ] || fail "GET /healthz from $REFUSED: status $STATUS"
no_cors_headers || fail "GET /healthz from $REFUSED: Access-Control-* headers sent"
request GET /v1/me -H "Origin: $REFUSED"
no_cors_headers || fail "GET /v1/me from $REFUSED: Access-Control-* headers sent"
echo "ok actual requests from $REFUSED: served without Access-Control-*"
