#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL server on loopback for the tests.
#   .ci/postgres.sh start DIR   -> prints a DATABASE URL on stdout
#   .ci/postgres.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?data dir}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
run_as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
start)
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  run_as_pg "$bin/initdb" -D "$dir/db" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
  run_as_pg "$bin/pg_ctl" -D "$dir/db" -l "$dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=on -c max_connections=300" start >/dev/null
  run_as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres playground_test
  echo "postgresql+psycopg://postgres@127.0.0.1:$port/playground_test"
  ;;
stop)
  run_as_pg "$bin/pg_ctl" -D "$dir/db" -m fast stop >/dev/null 2>&1 || true
  ;;
esac
