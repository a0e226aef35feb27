#!/usr/bin/env bash
# The web UI's build steps (docs/web.md), shared by tools/dev.sh and
# tools/test.sh:
#   tools/web.sh build     npm ci when needed, type-check, vite build → web/dist
#   tools/web.sh check     generated TypeScript current (buf + protoc-gen-es), web/test unit tests
#   tools/web.sh e2e DEV_JSON  browser tests in Debian's chromium (playwright-core)
#                              against the orbit dev system DEV_JSON describes
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
command -v npm >/dev/null || { echo "web.sh: npm not found (Node.js 20 from Debian or nodejs.org)" >&2; exit 1; }

deps() { # node_modules matching package-lock.json, installed from the npm registry
  if [ ! -f web/node_modules/.package-lock.json ] || ! cmp -s web/package-lock.json web/node_modules/.orbit-lock; then
    (cd web && npm ci --no-audit --no-fund --loglevel=error) >&2
    cp web/package-lock.json web/node_modules/.orbit-lock
  fi
}

case "${1:-}" in
build)
  deps
  (cd web && npm run --silent build)
  ;;
check)
  deps
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  sed "s#out: web/src/gen#out: $tmp/gen#" buf.gen.web.yaml >"$tmp/buf.gen.web.yaml"
  go tool -modfile=tools/buf/go.mod buf generate --template "$tmp/buf.gen.web.yaml"
  diff -r "$tmp/gen" web/src/gen >/dev/null || {
    diff -r "$tmp/gen" web/src/gen | head -20 || true
    echo "web/src/gen is stale: run 'npm --prefix web run generate'" >&2
    exit 1
  }
  # Unit tests of the UI's helpers (web/test): bundled, then node's runner.
  for t in web/test/*.test.ts; do
    out="$tmp/$(basename "$t" .ts).cjs"
    web/node_modules/.bin/rolldown "$t" --platform node --format cjs -o "$out" --log-level silent >/dev/null
    node --test "$out"
  done
  ;;
e2e)
  deps
  [ -x /usr/bin/chromium ] || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium libnss3-tools >/dev/null
  }
  info=${2:?usage: tools/web.sh e2e DEV_JSON}
  field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "$info" | head -n1; }
  ORBIT_ENDPOINT=$(field gateway_url) ORBIT_API_KEY=$(field api_key) ORBIT_ADMIN_TOKEN=$(field admin_token) \
    ORBIT_CA_CERT=$(field ca_cert) ORBIT_SCREENSHOTS=${ORBIT_SCREENSHOTS:-$root/web/e2e/out} node web/e2e/browser.mjs
  ;;
*)
  echo "usage: tools/web.sh build|check|e2e DEV_JSON" >&2
  exit 2
  ;;
esac
