#!/usr/bin/env bash
# Installs the system packages the build, the demo and the tests need on Debian/Ubuntu, if they
# are missing: a C compiler (mimalloc, Pingora), cmake (Pingora's build), redis-server (cluster-wide state tests), curl (the demo
# test runs the printed command), openssl (certs/generate.sh), chromium and python3-venv (the
# admin sign-in test drives a headless Chromium with playwright, installed from PyPI into
# target/browser-venv; playwright's own browser download is not used).
set -euo pipefail
missing=()
for pair in cc:build-essential cmake:cmake redis-server:redis-server curl:curl openssl:openssl chromium:chromium; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# playwright (Python) for the browser test, in a venv of its own (Debian's pip refuses system-wide
# installs); tests/tests/e2e/admin_auth.rs finds it there
venv="$(dirname "$0")/../target/browser-venv"
if ! "$venv/bin/python" -c 'import playwright' >/dev/null 2>&1; then
  echo "installing playwright into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q playwright
fi

# The OpenAPI tests (tests/tests/e2e/openapi.rs): openapi-spec-validator checks the document
# `gateway openapi` writes, schemathesis drives a running gateway from it. Pinned, in a venv of
# their own (target/openapi-venv), installed only when the pinned versions are not there yet.
openapi_venv="$(dirname "$0")/../target/openapi-venv"
openapi_pins=(schemathesis==4.32.5 openapi-spec-validator==0.9.0)
if ! "$openapi_venv/bin/python" - "${openapi_pins[@]}" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
PY
then
  echo "installing ${openapi_pins[*]} into $openapi_venv"
  python3 -m venv "$openapi_venv"
  "$openapi_venv/bin/pip" install -q "${openapi_pins[@]}"
fi
