#!/usr/bin/env bash
# Source this file after scripts/local-postgres.sh. start_nodes COUNT CONNECTION WORKDIR LOGDIR [ARG...]
# starts COUNT engines of the built host (src/Loyalty.Host, Release) as one cluster on the PostgreSQL
# of CONNECTION (Orleans:Membership=Postgres), each on free loopback ports, one after another (each
# serving before the next starts), in WORKDIR, logging to LOGDIR/node<N>.log, with any further
# arguments. It fills NODE_PIDS, NODE_GRPC and NODE_HTTP (ports); stop_nodes stops exactly those PIDs.

NODE_PIDS=()
NODE_GRPC=()
NODE_HTTP=()
NODES_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

stop_nodes() {
  for pid in "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}

start_nodes() {
  local count=$1 connection=$2 workdir=$3 logdir=$4
  shift 4
  local i grpc http silo gateway
  for i in $(seq 1 "$count"); do
    grpc=$(free_port); http=$(free_port); silo=$(free_port); gateway=$(free_port)
    (cd "$workdir" && exec dotnet "$NODES_ROOT/src/Loyalty.Host/bin/Release/net10.0/Loyalty.Host.dll" \
      --Storage:Provider=Postgres "--Storage:ConnectionString=$connection" \
      --Orleans:Membership=Postgres "--Orleans:SiloPort=$silo" "--Orleans:GatewayPort=$gateway" \
      "--Kestrel:Endpoints:Grpc:Url=http://127.0.0.1:$grpc" "--Kestrel:Endpoints:Http:Url=http://127.0.0.1:$http" \
      "$@" >"$logdir/node$i.log" 2>&1) &
    NODE_PIDS+=("$!")
    # Ready when the JSON endpoint answers (401 without a key); the next node joins a running cluster.
    for _ in $(seq 1 120); do
      if curl -s -o /dev/null "http://127.0.0.1:$http/v1/whoami"; then break; fi
      sleep 0.5
    done
    NODE_GRPC+=("$grpc")
    NODE_HTTP+=("$http")
  done
}
