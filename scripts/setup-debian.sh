#!/usr/bin/env bash
# Debian tools only the tests and benchmarks use (`make test-tools`, run by `make test` and
# `make bench`; `make demo` does not need them): h2load/nghttpd (nghttp2), h2o, Prometheus and
# Alertmanager (tests/pipeline/test_monitoring.py delivers a firing alert through a real one).
# Installs only what is missing; needs root (CI and the dev machines run as root).
set -euo pipefail
want=(nghttp2-client nghttp2-server h2o prometheus prometheus-alertmanager)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-debian: missing ${missing[*]}; run as root or install them with apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages start their daemons; the project runs its own instances on other ports.
for svc in prometheus prometheus-alertmanager h2o nghttpx; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || true
  (command -v service >/dev/null && service "$svc" stop >/dev/null 2>&1) || true
done
