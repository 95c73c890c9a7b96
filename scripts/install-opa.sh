#!/usr/bin/env bash
# Installs the pinned opa (policies/OPA_VERSION) into
#   ${WRIT_TOOLS_DIR:-$HOME/.cache/writ/tools}/opa-<version>/opa
# by compiling it with `go install` (Go and its module proxy are the only source we use).
# Idempotent: does nothing when that binary already reports the pinned version.
# Prints the binary's path on stdout; progress goes to stderr.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(tr -d '[:space:]' < "$repo_root/policies/OPA_VERSION")"
if [[ ! "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "install-opa: policies/OPA_VERSION must hold a version like v1.2.3, got '$version'" >&2
  exit 1
fi

tools_dir="${WRIT_TOOLS_DIR:-$HOME/.cache/writ/tools}"
bin_dir="$tools_dir/opa-$version"
opa="$bin_dir/opa"

installed_version() {
  # `opa version` prints "Version: 1.22.3" (no leading v).
  "$opa" version 2>/dev/null | awk -F': ' '$1 == "Version" { print "v" $2; exit }'
}

if [[ -x "$opa" && "$(installed_version)" == "$version" ]]; then
  echo "$opa"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "install-opa: Go is required to build opa $version (go install); install Go first" >&2
  exit 1
fi

mkdir -p "$bin_dir"
echo "install-opa: building opa $version into $bin_dir (the first build takes several minutes)" >&2
# CGO off: a static binary, no C toolchain needed. GOFLAGS=-buildvcs=false: we build
# from the module cache, not from a checkout.
GOBIN="$bin_dir" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
  go install "github.com/open-policy-agent/opa@$version"

got="$(installed_version)"
if [[ "$got" != "$version" ]]; then
  echo "install-opa: built $opa but it reports '${got:-nothing}', expected $version" >&2
  exit 1
fi
echo "$opa"
