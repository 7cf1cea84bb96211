#!/usr/bin/env bash
# Copies the status page's screenshot under load (written by the browser test
# tests/tests/e2e/status_page.rs to target/status-page.png) to docs/status-page.png, running that
# test first when there is no screenshot yet (or with --run).
set -euo pipefail
cd "$(dirname "$0")/.."
shot=target/status-page.png
if [ "${1:-}" = "--run" ] || [ ! -f "$shot" ]; then
  cargo build -p gateway --bin gateway --features test-hooks
  cargo test -p tests --test e2e status_page::the_status_page_updates_with_traffic_and_replays_a_dead_letter
fi
# the test may run with another CARGO_TARGET_DIR; the screenshot is always under the workspace
mkdir -p docs
cp "$shot" docs/status-page.png
echo "docs/status-page.png updated from $shot"
