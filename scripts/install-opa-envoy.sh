#!/usr/bin/env bash
# Build OPA's Envoy plugin (opa-envoy-plugin, Go) with this machine's Go toolchain into
# .tools/bin, for the side-by-side benchmark `python -m bench.opa_envoy` (cached).
# Release binaries are never downloaded: only the Go module proxy is used.
# The build is niced and runs one compile job at a time so it does not starve the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# v1.14.1-envoy (2026-03-09, OPA v1.14.1, go 1.25) is the newest tag the module proxy
# serves here; override with OPA_ENVOY_VERSION=... to try another.
OPA_ENVOY_VERSION="${OPA_ENVOY_VERSION:-v1.14.1-envoy}"
BIN_DIR="$PWD/.tools/bin"
BIN="$BIN_DIR/opa-envoy-plugin"
# `opa-envoy-plugin version` prints the embedded OPA's version, not the plugin tag, so the
# built tag is recorded in a stamp file next to the binary.
STAMP="$BIN_DIR/opa-envoy-plugin.version"
if [ -x "$BIN" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$OPA_ENVOY_VERSION" ]; then
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "install-opa-envoy: go not found; the OPA-Envoy comparison cannot run" >&2
  exit 1
fi
echo "install-opa-envoy: building opa-envoy-plugin ${OPA_ENVOY_VERSION} with $(go version)"
mkdir -p "$BIN_DIR"
rm -f "$STAMP"
start=$(date +%s)
MODULE="github.com/open-policy-agent/opa-envoy-plugin"
# `go install $MODULE/cmd/opa-envoy-plugin@$OPA_ENVOY_VERSION` is the plain way, but it also
# reads the module's version list (for deprecation notices), which the proxy reachable here
# refuses (403), and that aborts the install. The same build without that look-up: download
# the pinned module version (checked against the checksum database) and build its command
# inside the module, with the module's own go.mod and go.sum.
if ! GOBIN="$BIN_DIR" GOFLAGS="-p=1" nice -n 10 go install "$MODULE/cmd/opa-envoy-plugin@${OPA_ENVOY_VERSION}"; then
  echo "install-opa-envoy: go install failed; building the downloaded module instead"
  dir=$(nice -n 10 go mod download -json "$MODULE@${OPA_ENVOY_VERSION}" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "install-opa-envoy: cannot download $MODULE@${OPA_ENVOY_VERSION}" >&2; exit 1; }
  (cd "$dir" && GOWORK=off GOFLAGS="-mod=readonly -p=1" nice -n 10 go build -trimpath -o "$BIN" ./cmd/opa-envoy-plugin)
fi
echo "$OPA_ENVOY_VERSION" >"$STAMP"
echo "install-opa-envoy: built in $(( $(date +%s) - start )) s: $BIN"
