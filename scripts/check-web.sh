#!/usr/bin/env bash
# The web pages in a real browser, on real labs (issue 15's acceptance): starts the platform
# (`forge up`, embedded mode) with a data dir of its own on free loopback ports, then drives
# Debian's Chromium with Playwright for Python (tests/web/test_web.py):
#
# - the learner opens the access URL, types `ip route add …` into the terminal, completes a
#   path with Tab, stops a running ping with Ctrl-C, checks (the objectives pass), submits
#   (with the confirmation) and sees the signed score and how to verify it;
# - the instructor sees the lab in the list within 2 s of its spawn, drops into its console
#   read-only and sees what the learner types (the learner is told; the drop-in is in the audit
#   log), and cannot type there;
# - another tenant's instructor sees nothing of it; a learner's token does not open the
#   instructor view; the operator page shows the hosts and a verifying audit chain;
# - every page at 1280×800 and 390×844: no horizontal overflow, key elements visible
#   (screenshots kept in the work directory).
#
# Builds nothing: it runs $CARGO_TARGET_DIR/debug/forge (`cargo build -p forge-cli`). Installs
# what it needs when missing: Playwright (pip) and Chromium (apt; Playwright's own browser
# download is not used). Needs root and a Docker Engine like `forge up`; the labs it caused
# are removed on exit, whatever happened.
#
#   bash scripts/check-web.sh
#
# Settings (environment):
#   CHECK_WEB_KEEP=1     keep the work directory (logs, screenshots) after a passing run
#   CHECK_WEB_HEADED=1   show the browser (needs a display)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/forge-target}"
forge="$CARGO_TARGET_DIR/debug/forge"
template=templates/netplus-routing.yaml

say() { echo "check-web: $*" >&2; }
die() { say "$*"; exit 1; }

[[ -x $forge ]] || die "no $forge: build it first (cargo build -p forge-cli)"
command -v curl >/dev/null || die "curl not found"
if ! command -v chromium >/dev/null 2>&1; then
  say "installing chromium (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
fi
chromium=$(command -v chromium) || die "chromium is not installed"
if ! python3 -c 'import playwright.sync_api' 2>/dev/null; then
  say "installing playwright (pip)"
  python3 -m pip install --quiet playwright 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages playwright
fi
python3 -c 'import playwright.sync_api' 2>/dev/null || die "python3 cannot import playwright after pip install"

# shellcheck source=lib/platform.sh
. scripts/lib/platform.sh
KEEP_VAR=CHECK_WEB_KEEP
platform_init web

# The lab images the test's template needs (only those: the catalog's Debian images are not).
mapfile -t images < <(sed -n 's/^ *image: *\([^ ]*\).*/\1/p' "$template" | sort -u)
say "building lab images if missing: ${images[*]}"
FORGE_DATA_DIR="$data" LOG_FORMAT=text LOG_LEVEL=warn "$forge" images build "${images[@]}" \
  >"$work/images.log" 2>&1 || { cat "$work/images.log" >&2; die "forge images build failed"; }

platform_start 4
platform_wait spawn orchestrator worker observer scoreboard runner opa

mint() { platform_mint "$@"; }

say "browser tests (chromium $("$chromium" --version 2>/dev/null | awk '{print $2}'))"
WEB_SPAWN="http://127.0.0.1:${port[spawn]}" \
  WEB_ORCHESTRATOR="http://127.0.0.1:${port[orchestrator]}" \
  WEB_WORKER="http://127.0.0.1:${port[worker]}" \
  WEB_OBSERVER="http://127.0.0.1:${port[observer]}" \
  WEB_SCOREBOARD="http://127.0.0.1:${port[scoreboard]}" \
  WEB_TEMPLATE="netplus-routing-lab" \
  WEB_LEARNER_TOKEN="$(mint demo forge.spawn,forge.score.read web-learner)" \
  WEB_INSTRUCTOR_TOKEN="$(mint demo forge.instructor web-instructor)" \
  WEB_OTHER_INSTRUCTOR_TOKEN="$(mint acme-training forge.instructor acme-instructor)" \
  WEB_OPERATOR_TOKEN="$(mint demo forge.orchestrator,forge.observer web-operator)" \
  WEB_CHROMIUM="$chromium" \
  WEB_OUT="$work/screenshots" \
  WEB_HEADED="${CHECK_WEB_HEADED:-0}" \
  python3 tests/web/test_web.py
say "every browser check passed (CHECK_WEB_KEEP=1 keeps the screenshots)"
