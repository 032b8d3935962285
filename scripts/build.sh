#!/usr/bin/env bash
# The one release build. The demo (scripts/demo.sh), the benchmark (bench/run.sh) and
# bench/callgrind.sh all run these binaries, so the test command's smoke benchmark leaves the
# demo nothing to compile. The examples are part of it on purpose: building any example turns
# on the features the dev-dependencies ask of shared crates (serde, time, reqwest, ...), so a
# release build of the binary alone would compile most crates a second time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin gatehouse --examples "$@"
