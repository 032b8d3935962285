#!/usr/bin/env bash
# A profile-guided build of gatehouse and of the benchmark's binaries (the bare Pingora
# proxy among them, so the benchmark compares builds made alike):
#   1. an instrumented release build in $target/pgo-train;
#   2. training: the load benchmark's cases in smoke mode (bench/run.sh --smoke --no-peer),
#      run by those instrumented binaries, which write their profiles on exit;
#   3. the profiles merged (llvm-profdata from rustup's llvm-tools, added if missing);
#   4. a release build that uses them, in $target/pgo: $target/pgo/release/gatehouse.
# Two full release builds (about 20 minutes on 2 cores) and a minute of training. What it was
# built from is recorded in $target/pgo/STAMP (bench/run.sh --pgo compares it) and COMMIT.
# The profile is the benchmark's workload (its config logs no access or audit lines); a
# deployment whose hot paths differ gains less. Flags come from RUSTFLAGS (the user's kept);
# rustflags set in a cargo config file are overridden by it, as cargo always does.
# The demo, the tests and CI use the plain release build (scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
profiles="$target/pgo-profiles"
base_flags="${RUSTFLAGS:-}"

# Everything the training needs, before 20 minutes of building.
for tool in git wrk curl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "pgo: $tool is missing (bash scripts/setup.sh installs it)" >&2; exit 1; }
done
if [ -n "${CARGO_ENCODED_RUSTFLAGS:-}" ]; then
  echo "pgo: CARGO_ENCODED_RUSTFLAGS is set and would override the profile flags; unset it" >&2
  exit 1
fi
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  echo "pgo: adding rustup's llvm-tools (llvm-profdata)" >&2
  rustup component add llvm-tools >&2 || {
    echo "pgo: llvm-profdata is missing and 'rustup component add llvm-tools' failed" >&2
    exit 1
  }
fi
# Taken now: a change made while this builds is not in the build.
stamp=$(build_inputs_stamp)
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- "${build_sources[@]}" || commit="$commit with changes"

echo "== pgo: instrumented build ($target/pgo-train)" >&2
train_flags="$base_flags -Cprofile-generate=$profiles"
# The flags instrument build scripts and proc macros too, which write profiles while cargo
# builds; those go elsewhere.
LLVM_PROFILE_FILE="$target/pgo-train/build-profiles/%m.profraw" \
  RUSTFLAGS="$train_flags" CARGO_TARGET_DIR="$target/pgo-train" bash scripts/build.sh >&2

echo "== pgo: training on the benchmark's cases" >&2
rm -rf "$profiles"
mkdir -p "$profiles"
# bench/run.sh builds through scripts/build.sh with the same flags and target, which finds
# the instrumented binaries up to date, and runs them.
LLVM_PROFILE_FILE="$profiles/%m_%p.profraw" \
  RUSTFLAGS="$train_flags" CARGO_TARGET_DIR="$target/pgo-train" \
  bash bench/run.sh --smoke --no-peer --no-latency --no-memory --duration 3 >&2
shopt -s nullglob
raw=("$profiles"/*.profraw)
if [ ${#raw[@]} -eq 0 ]; then
  echo "pgo: the training wrote no profile" >&2
  exit 1
fi
"$profdata" merge -o "$profiles/merged.profdata" "${raw[@]}"
shown=$("$profdata" show --function=GatehouseProxy "$profiles/merged.profdata" \
  | sed -n 's/^Functions shown: //p')
if [ "${shown:-0}" -eq 0 ]; then
  echo "pgo: the training left no profile of gatehouse's proxy" >&2
  exit 1
fi
# Named by its content: cargo tracks RUSTFLAGS, not the file they name, so a new profile must
# change the flags to be used.
sum=$(sha256sum "$profiles/merged.profdata" | cut -c1-16)
mv "$profiles/merged.profdata" "$profiles/merged-$sum.profdata"

echo "== pgo: optimized build ($target/pgo)" >&2
RUSTFLAGS="$base_flags -Cprofile-use=$profiles/merged-$sum.profdata" CARGO_TARGET_DIR="$target/pgo" \
  bash scripts/build.sh >&2
echo "$stamp" >"$target/pgo/STAMP"
echo "$commit" >"$target/pgo/COMMIT"
echo "$target/pgo/release/gatehouse (built from $commit)"
