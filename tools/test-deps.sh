#!/usr/bin/env bash
# Installs what the full test suite needs beyond Rust, gcc, python3 and node (Debian packages,
# as root): Redis and Sentinel for the backplane tests, Chromium and curl for the browser and
# console tests, valgrind/pkg-config/binutils/make for the C API tests, systemd for
# `systemd-analyze verify` of the units, openssl for test certificates, python3-httpx for the
# TLS client test; then the console tests' npm packages (playwright-core drives Debian's
# Chromium; no browser is downloaded).
# Without these the suite still passes, printing one "SKIPPED …" line per missing tool.
#
#   sudo tools/test-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(redis-server redis-sentinel chromium fonts-dejavu-core curl valgrind pkg-config
          binutils make systemd openssl python3-httpx)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
(cd tests/console && npm ci --no-audit --no-fund)
