#!/usr/bin/env bash
# Installs the system packages the build, the demo and the tests need on Debian/Ubuntu, if they
# are missing: a C compiler (mimalloc, Pingora), cmake (Pingora's build), redis-server (cluster-wide state tests), curl (the demo
# test runs the printed command), openssl (certs/generate.sh).
set -euo pipefail
missing=()
for pair in cc:build-essential cmake:cmake redis-server:redis-server curl:curl openssl:openssl; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
