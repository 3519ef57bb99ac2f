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

work=$(mktemp -d /tmp/forge-check-web.XXXXXX)
run_id=$(basename "$work" | tr -cd 'a-zA-Z0-9' | tr 'A-Z' 'a-z')
host_id="check-web-$run_id"
data="$work/data"
mkdir -m 700 "$data"
forge_pid=""

# Stops the `forge up` this script started (by its pid), then removes every lab it caused:
# the containers and fabric namespaces of this run's lab host (label forge.host=<host id>),
# and whatever of a scenario of this run's store is left.
cleanup() {
  local rc=$?
  set +e
  if [[ -n $forge_pid ]] && kill -0 "$forge_pid" 2>/dev/null; then
    kill -TERM "$forge_pid" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$forge_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$forge_pid" 2>/dev/null; then
      say "forge up (pid $forge_pid) did not stop in 15s; killing it"
      kill -KILL "$forge_pid" 2>/dev/null
    fi
    wait "$forge_pid" 2>/dev/null
  fi
  FORGE_DATA_DIR="$data" LOG_FORMAT=text LOG_LEVEL=warn \
    "$forge" scenarios cleanup --label "forge.host=$host_id" >"$work/cleanup.log" 2>&1 ||
    say "forge scenarios cleanup failed (see $work/cleanup.log)"
  if [[ -f $data/forge.db ]]; then
    local id c
    for id in $(python3 -c 'import sqlite3,sys; [print(r[0]) for r in sqlite3.connect(sys.argv[1]).execute("select scenario_id from scenarios")]' "$data/forge.db" 2>/dev/null); do
      [[ $id =~ ^scn-[0-9a-f]{12}$ ]] || continue
      for c in $(docker ps -aq --filter "label=forge.scenario_id=$id" 2>/dev/null); do
        docker rm -f "$c" >/dev/null 2>&1
      done
      if [[ -e /run/netns/forge_scn_${id#scn-} ]]; then
        ip netns delete "forge_scn_${id#scn-}" 2>/dev/null
      fi
    done
  fi
  if [[ ${CHECK_WEB_KEEP:-0} == 1 || $rc -ne 0 ]]; then
    say "work directory kept: $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The lab images the test's template needs (only those: the catalog's Debian images are not).
mapfile -t images < <(sed -n 's/^ *image: *\([^ ]*\).*/\1/p' "$template" | sort -u)
say "building lab images if missing: ${images[*]}"
FORGE_DATA_DIR="$data" LOG_FORMAT=text LOG_LEVEL=warn "$forge" images build "${images[@]}" \
  >"$work/images.log" 2>&1 || { cat "$work/images.log" >&2; die "forge images build failed"; }

# Seven free loopback ports, one per service.
read -r -a ports <<<"$(python3 - <<'EOF'
import socket
socks, ports = [], []
while len(ports) < 7:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    if p not in ports:
        ports.append(p)
        socks.append(s)
print(" ".join(map(str, ports)))
EOF
)"
declare -A port=(
  [spawn]=${ports[0]} [orchestrator]=${ports[1]} [worker]=${ports[2]} [observer]=${ports[3]}
  [scoreboard]=${ports[4]} [runner]=${ports[5]} [opa]=${ports[6]}
)

say "starting forge up (data dir $data, log $work/forge.log)"
FORGE_DATA_DIR="$data" \
  FORGE_BIND=127.0.0.1 FORGE_PUBLIC_HOST=127.0.0.1 \
  FORGE_SPAWN_PORT=${port[spawn]} FORGE_ORCHESTRATOR_PORT=${port[orchestrator]} \
  FORGE_WORKER_PORT=${port[worker]} FORGE_OBSERVER_PORT=${port[observer]} \
  FORGE_SCOREBOARD_PORT=${port[scoreboard]} FORGE_RUNNER_PORT=${port[runner]} \
  FORGE_OPA_PORT=${port[opa]} \
  FORGE_HOST_ID="$host_id" FORGE_HOST_CAPACITY=4 \
  FORGE_AUDIT_LOG="$data/audit/audit.jsonl" \
  LOG_FORMAT=json LOG_LEVEL=info \
  "$forge" up >"$work/forge.out" 2>"$work/forge.log" &
forge_pid=$!

for s in "${!port[@]}"; do
  for _ in $(seq 1 1800); do
    curl -fsS -o /dev/null "http://127.0.0.1:${port[$s]}/health" 2>/dev/null && break
    kill -0 "$forge_pid" 2>/dev/null || die "forge up exited; its log: $work/forge.log"
    sleep 0.1
  done
  curl -fsS -o /dev/null "http://127.0.0.1:${port[$s]}/health" ||
    die "$s does not answer on :${port[$s]} after 180s; log: $work/forge.log"
done
say "platform up (pid $forge_pid)"

mint() {
  FORGE_DATA_DIR="$data" LOG_FORMAT=text LOG_LEVEL=warn \
    "$forge" token mint --tenant "$1" --roles "$2" --sub "$3" --ttl 2h
}

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
