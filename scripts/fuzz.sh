#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time each (libFuzzer through cargo fuzz, on
# the stable toolchain with RUSTC_BOOTSTRAP=1). Each run starts from fuzz/corpus/<target>/
# (minimized with `cargo fuzz cmin` after long runs) and fuzz/seeds/<target>/ (hand-written
# inputs and every input that once crashed); new inputs that add coverage land in the
# corpus; a crash stops the run and leaves its input in fuzz/artifacts/.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 30 s, every target)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(normalize cookies forwarded jwt config policy session)
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
# One instrumented build for every target, in fuzz/target.
cargo fuzz build -O --debug-assertions
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
  echo "== fuzz $t for ${seconds}s"
  status=0
  cargo fuzz run -O --debug-assertions "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E "^#[0-9]+ +DONE|^stat::(number_of_executed_units|peak_rss_mb|new_units_added)" "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz target $t failed (exit $status); its input is in fuzz/artifacts/$t/" >&2
    exit "$status"
  fi
done
