#!/usr/bin/env bash
# Build the real OPA binary with this machine's Go toolchain into .tools/bin (cached).
# Release binaries are never downloaded: only the Go module proxy is used.
set -euo pipefail
cd "$(dirname "$0")/.."
OPA_VERSION="${OPA_VERSION:-v1.22.2}"
BIN_DIR="$PWD/.tools/bin"
# `opa version` prints several lines. Capture them whole rather than piping into `grep -q` or
# `head`: those exit at the first match, opa then dies of SIGPIPE, and under pipefail the
# script fails with 141 (it did on CI).
installed_version() {
  local out
  out=$("$BIN_DIR/opa" version 2>/dev/null) || return 0
  printf '%s\n' "$out" | sed -n 's/^Version: //p'
}
if [ -x "$BIN_DIR/opa" ] && [ "$(installed_version)" = "${OPA_VERSION#v}" ]; then
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "install-opa: go not found; OPA tests will be skipped (and fail under CI)" >&2
  exit 0
fi
echo "install-opa: building opa ${OPA_VERSION} with $(go version)"
mkdir -p "$BIN_DIR"
GOBIN="$BIN_DIR" GOFLAGS=-mod=mod go install "github.com/open-policy-agent/opa@${OPA_VERSION}"
echo "install-opa: built opa $(installed_version)"
