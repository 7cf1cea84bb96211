#!/usr/bin/env bash
# The bundled load test: installs the peers it compares with (nginx, haproxy) and the tools it
# needs if they are missing, then builds and runs the harness. Arguments go to the harness:
#   scripts/bench.sh --quick                  # a smoke run of seconds (what CI can afford)
#   scripts/bench.sh --scenarios S0,P0,S1     # a subset (--list shows every scenario)
# Results: a table on stdout and bench-results/<date>.{json,md,svg}.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
missing=()
for pair in nginx:nginx haproxy:haproxy taskset:util-linux; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # a peer that cannot be installed is skipped by the harness, saying so
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "could not install ${missing[*]}; the harness will skip what is missing"
  fi
fi
exec cargo run --locked --release -p benches --bin loadbench -- "$@"
