#!/usr/bin/env bash
# A profile-guided build of gatehouse and of the benchmark's binaries (the bare Pingora
# proxy among them, so the benchmark compares builds made alike):
#   1. an instrumented release build in $target/pgo-train;
#   2. training: the load benchmark's cases in smoke mode (bench/run.sh --smoke --no-peer),
#      run by those instrumented binaries, which write their profiles on exit;
#   3. the profiles merged (llvm-profdata from rustup's llvm-tools, added if missing);
#   4. a release build that uses them, in $target/pgo: $target/pgo/release/gatehouse.
# Two full release builds (about 20 minutes on 2 cores) and a minute of training. The result
# records what it was built from in $target/pgo/STAMP (bench/run.sh --pgo reads it).
# The demo, the tests and CI use the plain release build (scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
profiles="$target/pgo-profiles"
base_flags="${RUSTFLAGS:-}"

host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  echo "pgo: adding rustup's llvm-tools (llvm-profdata)" >&2
  rustup component add llvm-tools >&2 || {
    echo "pgo: llvm-profdata is missing and 'rustup component add llvm-tools' failed" >&2
    exit 1
  }
fi

echo "== pgo: instrumented build ($target/pgo-train)" >&2
rm -rf "$profiles"
mkdir -p "$profiles"
train_flags="$base_flags -Cprofile-generate=$profiles"
RUSTFLAGS="$train_flags" CARGO_TARGET_DIR="$target/pgo-train" bash scripts/build.sh >&2

echo "== pgo: training on the benchmark's cases" >&2
# bench/run.sh builds through scripts/build.sh with the same flags and target, which finds
# the instrumented binaries up to date, and runs them.
RUSTFLAGS="$train_flags" CARGO_TARGET_DIR="$target/pgo-train" \
  bash bench/run.sh --smoke --no-peer --no-latency --no-memory --duration 3 >&2
shopt -s nullglob
raw=("$profiles"/*.profraw)
if [ ${#raw[@]} -eq 0 ]; then
  echo "pgo: the training wrote no profile" >&2
  exit 1
fi
"$profdata" merge -o "$profiles/merged.profdata" "${raw[@]}"
# Named by its content: cargo tracks RUSTFLAGS, not the file they name, so a new profile must
# change the flags to be used.
sum=$(sha256sum "$profiles/merged.profdata" | cut -c1-16)
mv "$profiles/merged.profdata" "$profiles/merged-$sum.profdata"

echo "== pgo: optimized build ($target/pgo)" >&2
RUSTFLAGS="$base_flags -Cprofile-use=$profiles/merged-$sum.profdata" CARGO_TARGET_DIR="$target/pgo" \
  bash scripts/build.sh >&2
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- src alloc examples Cargo.toml Cargo.lock gateway.toml policies || commit="$commit with changes"
build_inputs_stamp >"$target/pgo/STAMP"
echo "$commit" >"$target/pgo/COMMIT"
echo "$target/pgo/release/gatehouse (built from $commit)"
