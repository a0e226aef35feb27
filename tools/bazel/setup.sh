#!/usr/bin/env bash
# Prepares everything Bazel needs on a fresh machine of this project's kind, offline:
# Debian's Bazel 4.2.3, and rules_go v0.34.0 / gazelle v0.27.0 (Go modules from the
# module proxy) with the small patches in tools/bazel/patches, under .bazeldeps/.
# Idempotent: a second run with nothing changed does nothing and takes ~1 s.
# Why these versions and patches: docs/bazel.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
deps="$root/.bazeldeps"
mkdir -p "$deps/bin"

if ! command -v bazel >/dev/null 2>&1 || [ ! -d /usr/share/bazel/tools/skylib ] || ! command -v patch >/dev/null 2>&1; then
  echo "setup: installing Debian's bazel-bootstrap, bazel-skylib, bazel-platforms, patch" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq bazel-bootstrap bazel-skylib bazel-platforms patch >/dev/null
fi

# prepare NAME MODULE VERSION: copy the module, apply its patch, record a stamp.
prepare() {
  local name=$1 module=$2 version=$3
  local patch="$root/tools/bazel/patches/$name-$version.patch"
  [ -s "$patch" ] || { echo "setup: $patch is missing or empty" >&2; exit 1; }
  local stamp="$version $(go version | cut -d' ' -f3) $(sha256sum "$patch" | cut -c1-16)"
  if [ -f "$deps/$name.stamp" ] && [ "$(cat "$deps/$name.stamp")" = "$stamp" ]; then
    return 1
  fi
  local dir
  dir=$(cd "$deps" && GOFLAGS=-mod=mod go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "setup: cannot download $module@$version" >&2; exit 1; }
  rm -rf "${deps:?}/$name"
  cp -r "$dir" "$deps/$name"
  chmod -R u+w "$deps/$name"
  patch -s -p1 -d "$deps/$name" < "$patch"
  echo "$stamp" > "$deps/$name.stamp.new"
  return 0
}

if prepare rules_go github.com/bazelbuild/rules_go v0.34.0; then
  mv "$deps/rules_go.stamp.new" "$deps/rules_go.stamp"
fi
if prepare gazelle github.com/bazelbuild/bazel-gazelle v0.27.0; then
  (
    cd "$deps/gazelle"
    # The module zip has no vendor/; go_repository builds gazelle in GOPATH mode from it.
    GOFLAGS=-mod=mod go mod vendor
    # Gazelle's std package list predates slices, iter, log/slog...: regenerate it.
    go list std > "$deps/std_packages.txt"
    GOFLAGS=-mod=vendor go run ./language/go/gen_std_package_list "$deps/std_packages.txt" language/go/std_package_list.go
    GOFLAGS=-mod=vendor go build -o "$deps/bin/gazelle" ./cmd/gazelle
  )
  mv "$deps/gazelle.stamp.new" "$deps/gazelle.stamp"
fi
