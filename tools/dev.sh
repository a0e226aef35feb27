#!/usr/bin/env bash
# The one run command (README): installs what is missing and runs the whole
# system locally (`orbit dev`) on embedded NATS and etcd, with the web UI
# (web/, built here with npm) served by the gateway. Flags go to orbit dev:
#   tools/dev.sh --data-dir /tmp/orbit
# ORBIT_WITH=bazel runs it through `bazel run //tools/orbit -- dev` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
tools/web.sh build || echo "dev.sh: the web UI could not be built; orbit dev runs without it" >&2
if [ "${ORBIT_WITH:-go}" = bazel ]; then
  tools/bazel/setup.sh
  exec bazel run //tools/orbit -- dev "$@"
fi
exec go run ./tools/orbit dev "$@"
