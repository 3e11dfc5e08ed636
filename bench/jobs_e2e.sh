#!/usr/bin/env bash
# Durable jobs, end to end: what staging an upload costs before its 202 (the upload file written
# and synced, the job's row committed) and the job's throughput (each document written, then
# its result recorded with the job's counts in a second transaction), for uploads of N small
# documents as one request, against `quarry serve` with the test directory (slapd fixture).
# Usage: tests/fixtures/slapd-fixture.sh -- bench/jobs_e2e.sh [QUARRY_BIN]   (SIZES="500 5000")
set -euo pipefail
bin=${1:-build/release/quarry}
sizes=${SIZES:-"500 5000"}
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
base=${QUARRY_TEST_LDAP_BASE:?run under tests/fixtures/slapd-fixture.sh}
"$bin" --data "$tmp/data" --set server.listen=127.0.0.1:0 --set ldap.uri="$QUARRY_TEST_LDAP_URI" \
  --set ldap.bind_dn="$QUARRY_TEST_LDAP_BIND_DN" --set ldap.bind_password="$QUARRY_TEST_LDAP_BIND_PW" \
  --set ldap.user_base="ou=people,$base" --set ldap.group_base="ou=groups,$base" \
  --set auth.admin_groups=ops --set server.max_body_bytes=67108864 --log-level warn serve \
  > "$tmp/out" 2> "$tmp/err" &
pid=$!
for _ in $(seq 100); do grep -q http "$tmp/out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$tmp/out" | head -1)
auth=(-u 'dave:p@ss, w0rd (*)')
printf '| documents | body MB | POST to 202 ms | job s | docs/s |\n|---|---|---|---|---|\n'
for n in $sizes; do
  body="$tmp/body-$n.json"
  awk -v n="$n" -v p="b$n" 'BEGIN { printf "{\"documents\":["; for (i = 0; i < n; i++) printf "%s{\"doc_id\":\"%s-%06d\",\"acl\":[\"public\"],\"text\":\"Note %06d records the survey of marker%06d: bench heights, haul roads, drainage and the pit wall.\"}", (i ? "," : ""), p, i, i, i; printf "]}" }' > "$body"
  out=$(curl -s -o "$tmp/resp" -w '%{http_code} %{time_total}' "${auth[@]}" -H 'Content-Type: application/json' \
    --data-binary @"$body" "$url/v1/documents")
  [ "${out%% *}" = 202 ] || { echo "upload: $out $(cat "$tmp/resp")" >&2; exit 1; }
  id=$(grep -o '"job_id": *"[0-9a-f]*"' "$tmp/resp" | grep -o '[0-9a-f]\{32\}')
  start=$(date +%s.%N)
  while :; do
    state=$(curl -s "${auth[@]}" "$url/v1/jobs/$id" | grep -o '"state": *"[a-z]*"' | head -1 | grep -o '[a-z]*"$' | tr -d '"')
    case $state in succeeded|failed) break ;; esac
    sleep 0.05
  done
  end=$(date +%s.%N)
  [ "$state" = succeeded ] || { echo "job $id $state" >&2; exit 1; }
  secs=$(echo "$end - $start" | bc -l)
  printf '| %d | %.2f | %.0f | %.2f | %.0f |\n' "$n" "$(echo "$(stat -c %s "$body") / 1000000" | bc -l)" \
    "$(echo "${out#* } * 1000" | bc -l)" "$secs" "$(echo "$n / $secs" | bc -l)"
done
