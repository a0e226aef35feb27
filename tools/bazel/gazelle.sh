#!/usr/bin/env bash
# Regenerates BUILD files and go_deps.bzl (Gazelle owns both); CI fails when
# they are stale.
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/bazel/setup.sh
.bazeldeps/bin/gazelle update-repos -from_file=go.mod -to_macro=go_deps.bzl%go_dependencies -prune -build_file_proto_mode=disable_global
.bazeldeps/bin/gazelle -repo_root .
