#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every crate's tests (unit, golden
# cases, end to end with the real binary, the ERP simulator and real redis-server processes
# that the tests start on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
# The gateway binary (with the clock the tests move) and every test target in one feature
# resolution: built alone (`-p gateway`), the binary resolves tokio, hyper, Pingora and the
# proc macros with other features than the workspace's tests do, and the test build then
# compiles them all a second time.
cargo build --locked --workspace --bin gateway --tests --features gateway/test-hooks
# The tests start this binary instead of building one themselves (tests/src/lib.rs), whose
# `cargo build -p gateway` would resolve features apart and rebuild the tree.
GATEWAY_BIN="$(realpath -m "${CARGO_TARGET_DIR:-target}")/debug/gateway"
export GATEWAY_BIN
exec cargo test --locked --workspace --features gateway/test-hooks "$@"
