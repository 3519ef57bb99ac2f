#!/usr/bin/env bash
# Brings the whole platform up on one machine with its embedded defaults: prepares the machine,
# builds `forge` in release mode, and runs `forge up` (all services in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/forge-target}"
bash scripts/bootstrap.sh
cargo build --release -p forge-cli
exec "$CARGO_TARGET_DIR/release/forge" up "$@"
