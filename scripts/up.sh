#!/usr/bin/env bash
# Brings the whole platform up on one machine with its embedded defaults: prepares the machine,
# builds `forge` in release mode, links it to /usr/local/bin/forge (or says how to reach it),
# and runs `forge up` (all services in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/forge-target}"
bash scripts/bootstrap.sh
cargo build --release -p forge-cli
bin="$CARGO_TARGET_DIR/release/forge"

# The README's next commands (`forge spawn netplus`, …) run in a new shell: put `forge` on the
# PATH there, as a link to this build (a later build updates it in place).
link=/usr/local/bin/forge
if [[ -L $link || ! -e $link ]] && ln -sfn "$bin" "$link" 2>/dev/null; then
  echo "up: forge is on the PATH: $link -> $bin"
else
  if [[ -e $link && ! -L $link ]]; then
    echo "up: $link exists and is not a link to this build; leaving it alone." >&2
  else
    echo "up: cannot write $link (run as root or with sudo to link it)." >&2
  fi
  echo "up: in a new shell, run the forge commands as $bin, or first:" >&2
  echo "      export PATH=\"$(dirname "$bin"):\$PATH\"" >&2
fi
exec "$bin" up "$@"
