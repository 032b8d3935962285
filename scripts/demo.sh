#!/usr/bin/env bash
# One-command local trial: installs build prerequisites if missing, then `gatehouse demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --release --locked -- demo "$@"
