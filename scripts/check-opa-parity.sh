#!/usr/bin/env bash
# Checks the bundled gates decide alike under OPA's own engine (what OPA_URL points at in the
# distributed deployment) and the embedded one (regorus, what `forge up` uses): every Rego test
# in policies/ must pass under OPA, and each gate must give the same allow, deny reasons and
# extra outputs under both engines on every input its tests use plus generated variations
# (scripts/opa_parity.py). Exits non-zero on any failed test or mismatch.
#
# OPA's engine comes from PyPI's opa-golib-python-bindings (OPA's Go `rego` package built as a
# shared library, driven through ctypes), installed on first use under $FORGE_TOOLS_DIR. Its
# wheel declares Python >= 3.14 but its ctypes code runs on 3.11, so it is downloaded for 3.14
# and unzipped rather than pip-installed. The embedded side is `forge policy eval --lines`.
#
#   bash scripts/check-opa-parity.sh [POLICY_DIR]     # default policies
set -euo pipefail
cd "$(dirname "$0")/.."
policy_dir="${1:-policies}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/forge-target}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
tools="${FORGE_TOOLS_DIR:-/var/tmp/forge-tools}"
wheel_version=0.4.4
lib="$tools/opa-golib-$wheel_version"

if [ ! -f "$lib/opa_bindings/libopabridge.so" ]; then
  echo "opa-parity: installing opa-golib-python-bindings $wheel_version into $lib"
  mkdir -p "$tools"
  staging="$(mktemp -d "$tools/.opa-golib.XXXXXX")"
  trap 'rm -rf "$staging"' EXIT
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --python-version 3.14 --only-binary=:all: --dest "$staging" \
    "opa-golib-python-bindings==$wheel_version"
  python3 -m zipfile -e "$staging"/opa_golib_python_bindings-*.whl "$staging/lib"
  # Moved into place whole, so an interrupted install is never mistaken for a finished one.
  rm -rf "$lib"
  mv "$staging/lib" "$lib"
fi

forge="${FORGE:-$CARGO_TARGET_DIR/debug/forge}"
# A forge built before `policy eval --lines` existed (or none at all) is rebuilt.
case "$("$forge" policy eval --help 2>/dev/null || true)" in
  *--lines*) ;;
  *) cargo build --quiet -p forge-cli ;;
esac

python3 scripts/opa_parity.py --forge "$forge" --opa-lib "$lib" "$policy_dir"
