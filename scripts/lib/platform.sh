# Sourced by the check scripts that need a running platform (check-api.sh, check-web.sh): starts
# `forge up` (embedded mode) with a data dir of its own on free loopback ports, as a lab host of
# this run only, and removes everything it caused on exit — the process (by its pid), the labs
# of its host label, and whatever of a scenario of its store is left.
#
# The caller defines `say` and `die`, sets `forge` (the binary) and calls, in order:
#   platform_init NAME          work dir, data dir, host id (check-NAME-<run>); installs the trap
#   platform_start CAPACITY     free ports in `port[service]`, `forge up` in the background
#   platform_wait SERVICE...    until each answers /health (180 s each)
#   platform_mint TENANT ROLES SUB
# KEEP_VAR names the variable that keeps the work directory after a passing run.

# Stops the `forge up` this run started, then removes every lab it caused: the containers and
# fabric namespaces of this run's lab host (`forge scenarios cleanup`), and what is left of a
# scenario of this run's store (a lab half built when the platform stopped).
platform_cleanup() {
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
  if [[ ${!KEEP_VAR:-0} == 1 || $rc -ne 0 ]]; then
    say "work directory kept: $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}

platform_init() { # NAME
  work=$(mktemp -d "/tmp/forge-check-$1.XXXXXX")
  run_id=$(basename "$work" | tr -cd 'a-zA-Z0-9' | tr 'A-Z' 'a-z')
  host_id="check-$1-$run_id"
  data="$work/data"
  mkdir -m 700 "$data"
  forge_pid=""
  trap platform_cleanup EXIT
  trap 'exit 130' INT TERM
}

platform_start() { # CAPACITY
  local ports
  # Seven free loopback ports, one per service (held together so none is handed out twice).
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
  declare -gA port=(
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
    FORGE_HOST_ID="$host_id" FORGE_HOST_CAPACITY="$1" \
    FORGE_AUDIT_LOG="$data/audit/audit.jsonl" \
    LOG_FORMAT=json LOG_LEVEL=info \
    "$forge" up >"$work/forge.out" 2>"$work/forge.log" &
  forge_pid=$!
}

platform_wait() { # SERVICE...
  local s
  for s in "$@"; do
    for _ in $(seq 1 1800); do
      curl -fsS -o /dev/null "http://127.0.0.1:${port[$s]}/health" 2>/dev/null && break
      kill -0 "$forge_pid" 2>/dev/null || die "forge up exited; its log: $work/forge.log"
      sleep 0.1
    done
    curl -fsS -o /dev/null "http://127.0.0.1:${port[$s]}/health" ||
      die "$s does not answer on :${port[$s]} after 180s; log: $work/forge.log"
  done
  say "platform up (pid $forge_pid)"
}

platform_mint() { # TENANT ROLES SUB
  FORGE_DATA_DIR="$data" LOG_FORMAT=text LOG_LEVEL=warn \
    "$forge" token mint --tenant "$1" --roles "$2" --sub "$3" --ttl 2h
}
