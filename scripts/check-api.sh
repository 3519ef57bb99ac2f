#!/usr/bin/env bash
# Checks that every service answers what its /openapi.json says: starts the platform (`forge up`,
# embedded mode) with a data dir of its own on free loopback ports, mints a token holding every
# role, spawns three labs as test data, and runs `schemathesis run --checks all` against the
# OpenAPI document of each service (spawn, orchestrator, worker, observer, scoreboard, runner and
# the OPA Data API) with the settings of schemathesis.toml (why each exception is there is
# written next to it). Prints a summary per service and exits non-zero when any check failed
# for any of them. Takes one to two minutes.
#
# Builds nothing: it runs $CARGO_TARGET_DIR/debug/forge (`cargo build -p forge-cli`). Installs
# schemathesis (PyPI) when it is missing. Needs what `forge up` needs (root, the Docker Engine:
# the labs are real); everything it started is stopped, by pid, and every lab it caused is
# removed on exit, whatever happened. Traffic stays on loopback.
#
#   bash scripts/check-api.sh
#
# Settings (environment):
#   CHECK_API_MAX_EXAMPLES   test cases per operation and phase (default 50)
#   CHECK_API_SEED           schemathesis's seed, to repeat a run (default: a random one, printed)
#   CHECK_API_SERVICES       the services to check (default: all of them, in the order above)
#   CHECK_API_KEEP=1         keep the work directory (logs, reports, documents) after the run
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/forge-target}"
forge="$CARGO_TARGET_DIR/debug/forge"
max_examples="${CHECK_API_MAX_EXAMPLES:-50}"
services="${CHECK_API_SERVICES:-spawn orchestrator worker observer scoreboard runner opa}"
config="$PWD/schemathesis.toml"

say() { echo "check-api: $*" >&2; }
die() { say "$*"; exit 1; }

[[ -x $forge ]] || die "no $forge: build it first (cargo build -p forge-cli)"
for s in $services; do
  case $s in
    spawn | orchestrator | worker | observer | scoreboard | runner | opa) ;;
    *) die "unknown service $s (spawn orchestrator worker observer scoreboard runner opa)" ;;
  esac
done
[[ -f $config ]] || die "no $config"
command -v curl >/dev/null || die "curl not found"
if ! command -v schemathesis >/dev/null 2>&1; then
  say "installing schemathesis (pip)"
  python3 -m pip install --quiet schemathesis
  hash -r
fi
command -v schemathesis >/dev/null 2>&1 || die "schemathesis is not on PATH after pip install"

work=$(mktemp -d /tmp/forge-check-api.XXXXXX)
run_id=$(basename "$work" | tr -cd 'a-zA-Z0-9' | tr 'A-Z' 'a-z')
host_id="check-api-$run_id"
data="$work/data"
mkdir -m 700 "$data"
forge_pid=""

# Stops the `forge up` this script started (by its pid), then removes every lab it caused: the
# lab containers and fabric namespaces of this run's lab host (label forge.host=<host id>,
# `forge scenarios cleanup`), and whatever of a scenario of this run's store is left (a lab
# half built when the platform stopped).
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
  if [[ -x $forge ]]; then
    FORGE_DATA_DIR="$data" LOG_FORMAT=text LOG_LEVEL=warn \
      "$forge" scenarios cleanup --label "forge.host=$host_id" >"$work/cleanup.log" 2>&1 ||
      say "forge scenarios cleanup failed (see $work/cleanup.log)"
  fi
  if [[ -f $data/forge.db ]] && command -v python3 >/dev/null; then
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
  if [[ ${CHECK_API_KEEP:-0} == 1 || $rc -ne 0 ]]; then
    say "work directory kept: $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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

# A lab host of this run only, so its labs are found and removed by label; a capacity of 3 (the
# labs below) keeps the labs that the tests' own spawns build few (further spawns wait
# `pending`, which the API answers the same).
say "starting forge up (data dir $data, log $work/forge.log)"
FORGE_DATA_DIR="$data" \
  FORGE_BIND=127.0.0.1 FORGE_PUBLIC_HOST=127.0.0.1 \
  FORGE_SPAWN_PORT=${port[spawn]} FORGE_ORCHESTRATOR_PORT=${port[orchestrator]} \
  FORGE_WORKER_PORT=${port[worker]} FORGE_OBSERVER_PORT=${port[observer]} \
  FORGE_SCOREBOARD_PORT=${port[scoreboard]} FORGE_RUNNER_PORT=${port[runner]} \
  FORGE_OPA_PORT=${port[opa]} \
  FORGE_HOST_ID="$host_id" FORGE_HOST_CAPACITY=3 \
  FORGE_AUDIT_LOG="$data/audit/audit.jsonl" \
  LOG_FORMAT=json LOG_LEVEL=info \
  "$forge" up >"$work/forge.out" 2>"$work/forge.log" &
forge_pid=$!

for s in $services; do
  for _ in $(seq 1 1800); do
    curl -fsS -o /dev/null "http://127.0.0.1:${port[$s]}/health" 2>/dev/null && break
    kill -0 "$forge_pid" 2>/dev/null || die "forge up exited; its log: $work/forge.log"
    sleep 0.1
  done
  curl -fsS -o /dev/null "http://127.0.0.1:${port[$s]}/health" ||
    die "$s does not answer on :${port[$s]} after 180s; log: $work/forge.log"
done
say "platform up (pid $forge_pid)"

roles=forge.spawn,forge.orchestrator,forge.score.read,forge.score.read_all,forge.instructor,forge.observer
token=$(FORGE_DATA_DIR="$data" LOG_FORMAT=text LOG_LEVEL=warn \
  "$forge" token mint --tenant demo --roles "$roles" --sub check-api --ttl 2h)

spawn_url="http://127.0.0.1:${port[spawn]}"
api() { # METHOD URL [BODY]: the answer's body; fails on a non-2xx answer
  curl -fsS -X "$1" "$2" -H "Authorization: Bearer $token" \
    ${3:+-H 'Content-Type: application/json' --data "$3"}
}
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
wait_status() { # ID STATUS: waits up to 180s for the scenario to reach STATUS
  local now=""
  for _ in $(seq 1 360); do
    now=$(api GET "http://127.0.0.1:${port[orchestrator]}/v1/scenarios/$1" | field status) || true
    [[ $now == "$2" ]] && return 0
    [[ $now == failed || $now == timeout ]] && break
    sleep 0.5
  done
  die "scenario $1 is ${now:-unknown}, not $2 (log: $work/forge.log)"
}

# Test data: labs of this run, so that the routes on a scenario answer more than 404. `work`
# takes the worker's check and exec, `ended` the worker's submit, and `scored` is submitted here
# and read back from the scoreboard.
declare -A lab
for name in work ended scored; do
  lab[$name]=$(api POST "$spawn_url/v1/spawn" "{\"track\": \"netplus\", \"request_id\": \"check-api-$name\"}" |
    field scenario_id) || die "spawning the $name lab failed (log: $work/forge.log)"
done
for name in work ended scored; do wait_status "${lab[$name]}" running; done
api POST "http://127.0.0.1:${port[worker]}/v1/scenarios/${lab[scored]}/submit" >/dev/null
wait_status "${lab[scored]}" completed
say "labs: ${lab[work]} (check, exec), ${lab[ended]} (submit), ${lab[scored]} (scores)"

# The run's configuration: schemathesis.toml plus the labs as path parameters of the worker's
# and the scoreboard's routes (written back as top-level keys with inline values).
python3 - "$config" "$work/schemathesis.toml" "${lab[work]}" "${lab[ended]}" "${lab[scored]}" <<'PY'
import json
import sys
import tomllib

source, target, work, ended, scored = sys.argv[1:]
with open(source, "rb") as f:
    cfg = tomllib.load(f)

def project(title):
    for p in cfg.setdefault("project", []):
        if p.get("title") == title:
            return p
    cfg["project"].append({"title": title})
    return cfg["project"][-1]

def operation(p, path):
    for op in p.setdefault("operations", []):
        if op.get("include-path") == path:
            return op
    p["operations"].append({"include-path": path})
    return p["operations"][-1]

worker = project("forge_worker_agent")
worker.setdefault("parameters", {})["id"] = work
operation(worker, "/v1/scenarios/{id}/submit").setdefault("parameters", {})["id"] = ended
project("forge_scoreboard").setdefault("parameters", {})["id"] = scored

def toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(map(toml, v)) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {v!r}")

with open(target, "w") as f:
    for k, v in cfg.items():
        f.write(f"{json.dumps(k)} = {toml(v)}\n")
PY
config="$work/schemathesis.toml"

failed=()
summary=()
for s in $services; do
  url="http://127.0.0.1:${port[$s]}"
  say "schemathesis: $s ($url/openapi.json)"
  curl -fsS -o "$work/$s.openapi.json" "$url/openapi.json" || die "$s serves no /openapi.json"
  # Every check on every service, but use_after_free on the orchestrator: its DELETE ends a
  # lab and keeps the scenario readable, by design (schemathesis.toml says more; a check that
  # `--checks all` names cannot be turned off there).
  exclude=()
  [[ $s == orchestrator ]] && exclude=(--exclude-checks use_after_free)
  set +e
  # From the work directory: schemathesis and hypothesis keep their caches in the current one.
  (cd "$work" && schemathesis --config-file "$config" run "$url/openapi.json" \
    --checks all "${exclude[@]}" --max-examples "$max_examples" \
    ${CHECK_API_SEED:+--seed "$CHECK_API_SEED"} \
    -H "Authorization: Bearer $token" \
    --report junit --report-junit-path "$work/$s.junit.xml" \
    >"$work/$s.out" 2>&1)
  rc=$?
  set -e
  line=$(python3 - "$work/$s.junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception as e:
    print(f"no report ({e})")
    sys.exit()
cases = root.iter("testcase")
ops = fails = errs = skips = 0
for c in cases:
    ops += 1
    fails += c.find("failure") is not None
    errs += c.find("error") is not None
    skips += c.find("skipped") is not None
print(f"{ops} operations, {ops - fails - errs - skips} passed, {fails} failed, {errs} errors, {skips} skipped")
EOF
)
  # "Test cases:" is followed by e.g. "812 generated, 812 passed, 6 skipped"; the last line
  # is the verdict, e.g. "No issues found in 27.13s"; the seed repeats the run.
  cases=$(sed -n '/^Test cases:/{n;p;q}' "$work/$s.out" | sed 's/^ *//')
  verdict=$(grep -E '^=+ .* =+$' "$work/$s.out" | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')
  seed=$(sed -n 's/^Seed: *//p' "$work/$s.out" | tail -1)
  if [[ $rc -eq 0 ]]; then
    summary+=("$(printf '%-13s ok    %s; test cases: %s; %s (seed %s)' "$s" "$line" "$cases" "$verdict" "$seed")")
  else
    summary+=("$(printf '%-13s FAIL  %s; test cases: %s; %s (seed %s, exit %s, output %s)' "$s" "$line" "$cases" "$verdict" "$seed" "$rc" "$work/$s.out")")
    failed+=("$s")
    cat "$work/$s.out" >&2
  fi
done

echo
echo "check-api: schemathesis --checks all, --max-examples $max_examples, per service:"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  say "failed: ${failed[*]}"
  exit 1
fi
say "every service answers as documented"
