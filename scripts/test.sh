#!/usr/bin/env bash
# The test command of the README and of CI: prepares the machine, then runs every test suite
# against the real Docker Engine, the bundled Rego tests, and the solvability test of every
# bundled template.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/forge-target}"
# Incremental caches grow the shared target dir by tens of GB over a few runs; tests gain nothing.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
bash scripts/bootstrap.sh

# --all-features: the Docker-backed end-to-end binary of forge-lifecycle (feature `docker`) and
# the runtime's fake (feature `fake`, for its conformance run) are built and run here; a plain
# `cargo test -p forge-lifecycle` runs only the fast suite, without root or Docker.
cargo build --workspace --all-targets --all-features
forge="$CARGO_TARGET_DIR/debug/forge"
# Every lab image first: on a fresh machine the Debian base alone takes a minute or two, which
# no test's start-up wait should absorb (`forge up` builds what is missing before it is ready).
"$forge" images build
cargo test --workspace --all-features --no-fail-fast
bash scripts/check-compose.sh
bash scripts/check-monitoring.sh
# Every service's /openapi.json against the running platform (schemathesis, all checks).
bash scripts/check-api.sh
# The learner's, instructor's and operator's pages in a real browser (Playwright + chromium).
bash scripts/check-web.sh
"$forge" template validate templates/*.yaml
if "$forge" policy --help >/dev/null 2>&1; then
  "$forge" policy test policies
  bash scripts/check-opa-parity.sh
fi
if "$forge" template test --help >/dev/null 2>&1; then
  "$forge" template test templates/*.yaml
fi
