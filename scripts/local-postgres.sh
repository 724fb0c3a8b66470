# A private, throw-away PostgreSQL on a free port of 127.0.0.1, for ./test.sh and ./cluster.sh.
# Source this file, then call start_postgres; it sets LOYALTY_POSTGRES (an Npgsql connection
# string) and stops the server when the sourcing script exits. Installs Debian's postgresql package
# first when it is missing and the script runs as root.

PG_DIR=""
PG_BIN=""
stop_postgres() {
  if [[ -n "$PG_DIR" && -f "$PG_DIR/data/postmaster.pid" ]]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  # An if, not `[[ … ]] && …`: that would end the trap, and so the script, with status 1 when no
  # server was started (LOYALTY_TEST_POSTGRES given), after every test had passed.
  if [[ -n "$PG_DIR" ]]; then
    rm -rf "$PG_DIR"
  fi
}
trap stop_postgres EXIT

as_pg() {
  if [[ "$(id -u)" == "0" ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

find_pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [[ -n "$dir" && -x "$dir/initdb" ]] && echo "$dir"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || echo $(( 20000 + RANDOM % 20000 ))
}

start_postgres() {
  PG_BIN=$(find_pg_bin || true)
  if [[ -z "$PG_BIN" ]]; then
    if [[ "$(id -u)" != "0" ]]; then
      echo "$(basename "$0"): PostgreSQL is not installed and we are not root; install it or set LOYALTY_TEST_POSTGRES." >&2
      exit 1
    fi
    echo "$(basename "$0"): installing PostgreSQL (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(find_pg_bin)
  fi
  PG_DIR=$(mktemp -d /tmp/loyalty-pg.XXXXXX)
  if [[ "$(id -u)" == "0" ]]; then chown postgres:postgres "$PG_DIR"; fi
  local port
  port=$(free_port)
  as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U loyalty --auth=trust -E UTF8 >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c max_connections=600 -c fsync=on" start >/dev/null
  export LOYALTY_POSTGRES="Host=127.0.0.1;Port=$port;Username=loyalty;Database=postgres;Pooling=true;Maximum Pool Size=50"
  echo "$(basename "$0"): PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

