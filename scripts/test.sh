#!/usr/bin/env bash
# The whole test suite: style, lints, the load benchmark in smoke mode, every test, then
# every fuzz target for a short bounded time.
# This is what CI runs (.ci/run) and what the README's second command runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# A CI run builds once from a clean clone: incremental caches would only take disk
# (several GB across the test binaries) and a CI machine's disk has run out before.
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== load benchmark, smoke mode (no speed assertion)"
bash bench/run.sh --smoke

echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
if [ "$status" -ne 0 ]; then
  exit "$status"
fi

echo "== fuzz targets, ${FUZZ_SECONDS:-20}s each"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
