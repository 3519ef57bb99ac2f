#!/usr/bin/env bash
# Checks deploy/compose.yaml (docs/distributed.md) without starting anything: it parses, every
# service of the platform is served in it (spawn, observer, scoreboard, opa by `forge serve`;
# orchestrator, worker and runner by `forge serve` or a lab host; at least one lab host), the
# backing servers and the one-shot bus set-up are there, and the rules the deployment relies on
# hold (docs/distributed.md, "Checking the compose file"). Then, when a Compose is
# installed (`docker compose` or `docker-compose`), it validates the file with it too.
# Needs python3 with PyYAML (Debian: python3-yaml). No root, no Docker Engine.
#
#   bash scripts/check-compose.sh [FILE]     # default deploy/compose.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
file="${1:-deploy/compose.yaml}"
[ -f "$file" ] || { echo "check-compose: no $file" >&2; exit 1; }

python3 -c 'import yaml' 2>/dev/null || {
  echo "check-compose: python3 cannot import yaml: apt-get install python3-yaml (or pip install pyyaml)" >&2
  exit 1
}

python3 - "$file" <<'EOF'
import sys
import yaml

path = sys.argv[1]
with open(path) as f:
    doc = yaml.safe_load(f)  # resolves the file's anchors and `<<` merges

errors = []
def fail(msg):
    errors.append(msg)

services = doc.get("services") or {}
if not isinstance(services, dict) or not services:
    sys.exit(f"check-compose: {path}: no services")

def command(svc):
    c = svc.get("command")
    if isinstance(c, str):
        return c.split()
    return list(c or [])

def env(svc):
    e = svc.get("environment") or {}
    if isinstance(e, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in e)
    return e

def mounts(svc):
    """(source, target, propagation) of every volume entry, short or long syntax."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            out.append((parts[0], parts[1] if len(parts) > 1 else parts[0], None))
        else:
            out.append((v.get("source"), v.get("target"), (v.get("bind") or {}).get("propagation")))
    return out

def depends(svc):
    d = svc.get("depends_on") or {}
    if isinstance(d, list):
        return {name: "service_started" for name in d}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in d.items()}

PLATFORM = ["spawn", "orchestrator", "worker", "observer", "scoreboard", "runner", "opa"]
# The services that drive a Docker Engine: the parts of a lab host, and the lab host itself
# (`forge serve host` runs the three).
LAB_SIDE = {"orchestrator", "worker", "runner", "host"}
IN_HOST = {"orchestrator", "worker", "runner"}
PORTS = {"spawn": 8082, "orchestrator": 8083, "worker": 8084, "observer": 8085,
         "scoreboard": 8086, "runner": 8087, "opa": 8181, "host": 8084}
LAB_HOST_CAPS = {"SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"}
SHARED_ENV = ["FORGE_DATA_DIR", "NATS_URL", "DATABASE_URL", "FORGE_S3_ENDPOINT",
              "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MINIO_BUCKET", "FORGE_BIND",
              "FORGE_PUBLIC_HOST", "LOG_LEVEL"]

def caps_of(svc):
    return {c.upper().removeprefix("CAP_") for c in svc.get("cap_add") or []}

# Which services run `forge serve X`.
serving = {}
for name, svc in services.items():
    c = command(svc)
    if len(c) >= 2 and c[0] == "serve":
        serving.setdefault(c[1], []).append(name)

if "host" not in serving:
    fail("no lab host (`forge serve host`)")
for what in PLATFORM:
    if what not in serving and not (what in IN_HOST and "host" in serving):
        fail(f"nothing serves {what} (`forge serve {what}`"
             + (", or a lab host" if what in IN_HOST else "") + ")")

for backing in ["nats", "postgres", "s3"]:
    if backing not in services:
        fail(f"no `{backing}` service (the platform's NATS_URL, DATABASE_URL and FORGE_S3_ENDPOINT name it)")

setup = [n for n, s in services.items() if "nats setup" in " ".join(command(s))]
if not setup:
    fail("no one-shot service runs `forge nats setup`")

data_dir = None
for what, names in serving.items():
    if what not in PORTS:
        fail(f"{', '.join(names)}: `forge serve {what}` is no service of the platform")
        continue
    for name in names:
        svc = services[name]
        e = env(svc)
        hc = svc.get("healthcheck") or {}
        test = " ".join(map(str, hc.get("test") or []))
        port = PORTS[what]
        if f":{port}/health" not in test:
            fail(f"{name}: no healthcheck on GET /health of port {port}")
        if what == "opa":
            continue  # the policy endpoint needs nothing but its policies
        for key in SHARED_ENV:
            if key not in e:
                fail(f"{name}: environment lacks {key}")
        if e.get("OPA_URL") in (None, ""):
            fail(f"{name}: environment lacks OPA_URL")
        dd = e.get("FORGE_DATA_DIR")
        data_dir = data_dir or dd
        if dd != data_dir:
            fail(f"{name}: FORGE_DATA_DIR {dd} differs from {data_dir}")
        if not any(dst == dd for _, dst, _ in mounts(svc)):
            fail(f"{name}: nothing is mounted at FORGE_DATA_DIR {dd} (keys must be shared)")
        deps = depends(svc)
        if not any(deps.get(s) == "service_completed_successfully" for s in setup):
            fail(f"{name}: does not wait for `forge nats setup` (service_completed_successfully)")
        if what in LAB_SIDE:
            m = mounts(svc)
            if not any(dst == "/var/run/docker.sock" for _, dst, _ in m):
                fail(f"{name}: `forge serve {what}` drives the Docker Engine, but the socket is not mounted")
            if svc.get("pid") != "host":
                fail(f"{name}: `forge serve {what}` needs pid: host (lab containers' PIDs are host PIDs)")
            if not any(dst == "/run/netns" and prop in ("shared", "rshared") for _, dst, prop in m):
                fail(f"{name}: /run/netns is not mounted with shared propagation")
            if not svc.get("privileged") and not LAB_HOST_CAPS <= caps_of(svc):
                fail(f"{name}: `forge serve {what}` needs {', '.join(sorted(LAB_HOST_CAPS))} "
                     "(netns, nftables, entering lab containers)")
            for key in ["FORGE_HOST_ID", "FORGE_HOST_URL", "FORGE_HOST_CAPACITY", "FORGE_HOST_LEASE"]:
                if key not in e:
                    fail(f"{name}: environment lacks {key}")

# Distinct lab-host identities.
ids = {}
for name in serving.get("host", []):
    hid = env(services[name]).get("FORGE_HOST_ID")
    if hid in ids:
        fail(f"{name}: FORGE_HOST_ID {hid} is also {ids[hid]}'s")
    ids[hid] = name

# Only the lab side gets the Docker socket (and the one-shot image build) or capabilities; the
# rest drops them all; nothing is pulled.
lab_side = {n for what in LAB_SIDE for n in serving.get(what, [])}
for name, svc in services.items():
    if name not in lab_side:
        if svc.get("privileged") or caps_of(svc):
            fail(f"{name}: privileged or given capabilities, but not a lab host")
        if "ALL" not in {c.upper() for c in svc.get("cap_drop") or []}:
            fail(f"{name}: does not drop all capabilities")
        docker_sock = any(dst == "/var/run/docker.sock" for _, dst, _ in mounts(svc))
        if docker_sock and command(svc)[:2] != ["images", "build"]:
            fail(f"{name}: mounts the Docker socket, but is neither a lab host nor the lab image build")
    if svc.get("image") and svc.get("pull_policy") != "never":
        fail(f"{name}: pull_policy is not `never` (no registry is reachable)")

if errors:
    for e in errors:
        print(f"check-compose: {path}: {e}", file=sys.stderr)
    sys.exit(1)
hosts = ", ".join(serving["host"])
own = ", ".join(w for w in PLATFORM if w in serving)
print(f"check-compose: {path}: {len(services)} services; forge serve {own}, "
      f"and lab hosts {hosts} (orchestrator, worker, runner): ok")
EOF

# A Compose, when there is one, validates the file itself (interpolation, schema). The
# required variables get placeholder values; deploy/.env is not read.
envfile=$(mktemp)
trap 'rm -f "$envfile"' EXIT
cat >"$envfile" <<'EOF'
COMPOSE_PROJECT_NAME=forge-check
FORGE_PUBLIC_HOST=forge.invalid
FORGE_DB_PASSWORD=check
MINIO_ROOT_USER=check
MINIO_ROOT_PASSWORD=check
EOF
if docker compose version >/dev/null 2>&1; then
  docker compose --env-file "$envfile" -f "$file" config -q
  echo "check-compose: $file: docker compose config: ok"
elif command -v docker-compose >/dev/null 2>&1; then
  docker-compose --env-file "$envfile" -f "$file" config -q
  echo "check-compose: $file: docker-compose config: ok"
else
  echo "check-compose: no docker compose or docker-compose here; checked the YAML only"
fi
