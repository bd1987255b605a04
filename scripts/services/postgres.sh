#!/usr/bin/env bash
# Start or stop a throwaway PostgreSQL for tests on 127.0.0.1:$PG_PORT (trust auth).
#   scripts/services/postgres.sh start DIR PORT   -> prints the database URL
#   scripts/services/postgres.sh stop DIR
# Installs Debian's postgresql when missing. Test-only settings: no fsync.
set -euo pipefail
cmd=$1 dir=$2 port=${3:-5433}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
as_pg() { runuser -u postgres -- "$@"; }
case $cmd in
start)
  if [ -z "$bin" ]; then
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 \
      --no-install-recommends postgresql >&2
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  mkdir -p "$dir/data" "$dir/run"
  chown -R postgres:postgres "$dir"
  chmod 700 "$dir/data"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  fi
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w -t 60 start >/dev/null
  as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qtA -c 'CREATE DATABASE dockyard' postgres >/dev/null 2>&1 || true
  echo "postgresql://postgres@127.0.0.1:$port/dockyard"
  ;;
stop)
  [ -f "$dir/data/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
  ;;
esac
