#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every crate's tests (unit, golden
# cases, end to end with the real binary, the ERP simulator and real redis-server processes
# that the tests start on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
cargo build --locked -p gateway --bin gateway --features test-hooks
exec cargo test --locked --workspace "$@"
