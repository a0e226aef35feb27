#!/usr/bin/env bash
# The one run command (README): installs what is missing and runs the whole
# system locally (`orbit dev`) on embedded NATS and etcd. Flags go to orbit dev:
#   tools/dev.sh --data-dir /tmp/orbit
# ORBIT_WITH=bazel runs it through `bazel run //tools/orbit -- dev` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
if [ "${ORBIT_WITH:-go}" = bazel ]; then
  tools/bazel/setup.sh
  exec bazel run //tools/orbit -- dev "$@"
fi
exec go run ./tools/orbit dev "$@"
