#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the distributed-tuning test.
# Prints the database URL on stdout; prints why and exits 0 with no URL where it cannot.
set -uo pipefail
PORT=${KERNELAGENT_PG_PORT:-55432}
DATA=${KERNELAGENT_PG_DATA:-/tmp/kernelagent-pg}
say() { echo "start_postgres: $*" >&2; }
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    say "installing Debian's postgresql package"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2 || { say "apt-get failed"; exit 0; }
  else
    say "PostgreSQL is not installed and cannot be installed here (needs root + apt-get)"; exit 0
  fi
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
RUNAS=""
if [ "$(id -u)" = "0" ]; then RUNAS="runuser -u postgres --"; fi
if ! $RUNAS "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  rm -rf "$DATA"; mkdir -p "$DATA"; [ -n "$RUNAS" ] && chown postgres "$DATA"
  $RUNAS "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null || { say "initdb failed"; exit 0; }
  $RUNAS "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-p $PORT -h 127.0.0.1 -k $DATA" start >/dev/null || { say "server did not start: $(tail -5 "$DATA/server.log")"; exit 0; }
fi
$RUNAS "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='kernelagent'" | grep -q 1 \
  || $RUNAS "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres kernelagent
echo "postgresql://postgres@127.0.0.1:$PORT/kernelagent"
