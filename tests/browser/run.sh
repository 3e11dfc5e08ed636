#!/usr/bin/env bash
# tests/browser: quarry's web console (ui/) in headless Debian chromium, against a real `quarry
# serve` with the slapd and fake inference fixtures. Exits 77 (skipped) without /usr/bin/chromium,
# or without node_modules when the npm registry does not answer.
#   tests/browser/run.sh [FILE.test.mjs ...]     QUARRY_BIN (default build/release/quarry).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
chromium="${QUARRY_CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] || { echo "browser: $chromium not found (apt-get install chromium); skipping" >&2; exit 77; }
command -v node >/dev/null 2>&1 || { echo "browser: node not found; skipping" >&2; exit 77; }
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || { echo "browser: slapd not found; skipping" >&2; exit 77; }
export QUARRY_BIN="${QUARRY_BIN:-$root/build/release/quarry}"
[ -x "$QUARRY_BIN" ] || { echo "browser: $QUARRY_BIN not built" >&2; exit 1; }
cd "$here"
if [ ! -f node_modules/puppeteer-core/package.json ] || [ ! -f node_modules/axe-core/package.json ]; then
  if ! command -v npm >/dev/null 2>&1 || ! npm ping --fetch-retries=0 --fetch-timeout=10000 >/dev/null 2>&1; then
    echo "browser: node_modules missing and no npm registry; skipping (cd tests/browser && npm ci)" >&2
    exit 77
  fi
  PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
exec "$root/tests/fixtures/slapd-fixture.sh" -- "$root/tests/fixtures/fake-inference-fixture.sh" -- node run.mjs "$@"
