#!/usr/bin/env bash
# plugins/: validate the Copilot agent's and the Office add-in's manifests (offline) and run the
# add-in's tests. Needs the pinned npm packages (package-lock.json): installs them with npm ci when
# node_modules is missing and the registry answers; otherwise exits 77 (skipped).
set -euo pipefail
cd "$(dirname "$0")"
command -v node >/dev/null 2>&1 || { echo "plugins: node not found; skipping" >&2; exit 77; }
if [ ! -f node_modules/@microsoft/app-manifest/package.json ] || [ ! -f node_modules/office-addin-mock/package.json ]; then
  if ! command -v npm >/dev/null 2>&1 || ! npm ping --fetch-retries=0 --fetch-timeout=10000 >/dev/null 2>&1; then
    echo "plugins: node_modules missing and no npm registry; skipping (run scripts/bootstrap)" >&2
    exit 77
  fi
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
node validate.mjs
node --test test/
