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

# shellcheck source=lib/platform.sh
. scripts/lib/platform.sh
KEEP_VAR=CHECK_API_KEEP
platform_init api
# A capacity of 3 (the labs below) keeps the labs that the tests' own spawns build few (further
# spawns wait `pending`, which the API answers the same).
platform_start 3
# shellcheck disable=SC2086 # a list of service names
platform_wait $services

roles=forge.spawn,forge.orchestrator,forge.score.read,forge.score.read_all,forge.instructor,forge.observer
token=$(platform_mint demo "$roles" check-api)

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
