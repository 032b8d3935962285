#!/usr/bin/env bash
# The whole test suite: style, lints, the load benchmark in smoke mode, then every test.
# This is what CI runs (.ci/run) and what the README's second command runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

echo "== load benchmark, smoke mode (no speed assertion)"
if [ -f bench/run.sh ]; then bash bench/run.sh --smoke; else echo "bench/run.sh not present yet"; fi

echo "== cargo test"
cargo test --all-targets --locked
