#!/usr/bin/env bash
# Spectral with the OWASP API Security ruleset over api/openapi.yaml, at the
# versions pinned in tools/spectral/package-lock.json (installed with
# `npm ci`, so the lock file is the whole truth). Any error fails; warnings
# are printed. The rules turned off, and why, are in tools/spectral/.spectral.yaml.
set -euo pipefail
cd "$(dirname "$0")/../tools/spectral"
if ! command -v npm >/dev/null; then
  echo "spectral: npm (node 20) is needed: apt-get install nodejs npm" >&2
  exit 1
fi
if [ ! -x node_modules/.bin/spectral ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
fi
node_modules/.bin/spectral lint --ruleset .spectral.yaml --fail-severity error --format text ../../api/openapi.yaml
