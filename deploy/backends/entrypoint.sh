#!/bin/sh
# forge-backend nats|postgres|s3|edge [extra arguments for the server]
#
# The entrypoint of the forge/backends image (deploy/backends/Dockerfile): runs one backing
# server of deploy/compose.yaml in the foreground, as PID 1, with its data in /data (NATS,
# SeaweedFS) or /var/lib/postgresql/data (PostgreSQL). See docs/distributed.md.
set -eu

die() {
  echo "forge-backend: $*" >&2
  exit 1
}

# An S3 key or secret goes into JSON unescaped: allow the characters S3 keys use.
check_key() {
  case "$2" in
    '') die "$1 is empty" ;;
    *[!A-Za-z0-9._~+/=-]*) die "$1 may contain only letters, digits and . _ ~ + / = -" ;;
  esac
}

server="${1:-}"
[ -n "$server" ] || die "usage: forge-backend nats|postgres|s3|edge [arguments]"
shift

case "$server" in
  nats)
    # JetStream with file storage in the volume; monitoring (/healthz) on 8222.
    exec nats-server -js -sd /data -m 8222 "$@"
    ;;

  postgres)
    # Runs as the postgres user (compose sets `user: postgres`): PostgreSQL refuses root.
    [ "$(id -u)" = "$(id -u postgres)" ] || die "run the postgres server as the postgres user (user: postgres)"
    bin=/usr/lib/postgresql/15/bin
    data="${PGDATA:-/var/lib/postgresql/data}"
    user="${POSTGRES_USER:-forge}"
    db="${POSTGRES_DB:-forge}"
    case "$user$db" in
      *[!A-Za-z0-9_]*) die "POSTGRES_USER and POSTGRES_DB may contain only letters, digits and _" ;;
    esac
    # .forge-initialized is written last: a cluster without it was interrupted while being made.
    if [ -s "$data/PG_VERSION" ] && [ ! -e "$data/.forge-initialized" ]; then
      die "$data holds a cluster whose creation was interrupted; remove the volume and start again"
    fi
    if [ ! -s "$data/PG_VERSION" ]; then
      [ -n "${POSTGRES_PASSWORD:-}" ] || die "POSTGRES_PASSWORD is empty; it is needed to create the database"
      echo "forge-backend: creating the database cluster in $data (user $user, database $db)"
      "$bin/initdb" --pgdata="$data" --username=postgres --encoding=UTF8 --no-locale \
        --auth-local=peer --auth-host=scram-sha-256
      # Other containers connect over the compose network, with a password.
      printf '%s\n' 'host all all all scram-sha-256' >> "$data/pg_hba.conf"
      # Single-user mode: no server listens while the role and database are made. It exits 0
      # even when a statement fails, so its log is searched for errors (only ERROR and FATAL
      # lines are shown: the STATEMENT lines carry the password).
      quoted=$(printf '%s' "$POSTGRES_PASSWORD" | sed "s/'/''/g")
      log=$(printf '%s\n' \
        "CREATE ROLE $user LOGIN PASSWORD '$quoted';" \
        "CREATE DATABASE $db OWNER $user;" |
        "$bin/postgres" --single -D "$data" postgres 2>&1 >/dev/null) ||
        die "postgres --single failed: $(printf '%s\n' "$log" | grep -E 'ERROR|FATAL')"
      case "$log" in
        *ERROR:*|*FATAL:*)
          die "cannot create role $user and database $db: $(printf '%s\n' "$log" | grep -E 'ERROR|FATAL')" ;;
      esac
      : > "$data/.forge-initialized"
    fi
    exec "$bin/postgres" -D "$data" -c listen_addresses='*' "$@"
    ;;

  s3)
    # SeaweedFS all-in-one (master, volume, filer, S3 gateway on 8333) with one identity: the
    # platform's MINIO_ROOT_USER / MINIO_ROOT_PASSWORD. `-ip` is the name the components
    # advertise to each other: the compose service name.
    check_key MINIO_ROOT_USER "${MINIO_ROOT_USER:-}"
    check_key MINIO_ROOT_PASSWORD "${MINIO_ROOT_PASSWORD:-}"
    umask 077
    printf '{"identities":[{"name":"forge","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
      "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" > /etc/seaweed/s3.json
    # Off: telemetry, the admin UI (no password), WebDAV, the Iceberg and Lance endpoints, and
    # deleting a bucket that still holds objects.
    exec weed mini -dir=/data -ip="${S3_ADVERTISE:-s3}" -ip.bind=0.0.0.0 \
      -master.telemetry=false -s3.config=/etc/seaweed/s3.json \
      -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
      -s3.allowDeleteBucketNotEmpty=false \
      -filer.localSocket=/data/filer.sock -s3.localSocket=/data/s3.sock "$@"
    ;;

  edge)
    # nginx in front of the replicated services (/etc/forge/nginx.conf), unprivileged.
    exec nginx -e stderr -c /etc/forge/nginx.conf -g 'daemon off;' "$@"
    ;;

  *)
    die "unknown server \`$server\`: nats, postgres, s3 or edge"
    ;;
esac
