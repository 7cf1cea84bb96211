#!/usr/bin/env bash
# The main job: the gateway with the example policy set in front of the ERP simulator, on
# loopback. Prints the URLs and a curl command that goes through the whole chain.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
exec cargo run --locked -p gateway --bin gateway -- demo "$@"
