#!/usr/bin/env bash
# One-command local trial: installs build prerequisites if missing, builds the release binaries
# (the same build the test command's benchmark makes: scripts/build.sh), then `gatehouse demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
exec "${CARGO_TARGET_DIR:-target}/release/gatehouse" demo "$@"
