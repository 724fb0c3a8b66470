#!/usr/bin/env bash
# A cluster on this machine, without Docker: a private PostgreSQL and NODES engines (default 3)
# on free loopback ports, one Orleans cluster sharing that database (Orleans:Membership=Postgres).
# The first node writes the operator key to ./data/operator.key; logs go to ./data/node<N>.log.
# Ctrl-C stops the nodes and the database. Uses $LOYALTY_POSTGRES instead when it is set.
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=scripts/local-postgres.sh
source scripts/local-postgres.sh

NODES=${NODES:-3}
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  stop_postgres
}
trap stop_all EXIT

if [[ -z "${LOYALTY_POSTGRES:-}" ]]; then start_postgres; fi
dotnet build src/Loyalty.Host -c Release -v quiet -nologo
mkdir -p data
for i in $(seq 1 "$NODES"); do
  grpc=$(free_port); http=$(free_port); silo=$(free_port); gateway=$(free_port)
  dotnet src/Loyalty.Host/bin/Release/net10.0/Loyalty.Host.dll \
    --Storage:Provider=Postgres "--Storage:ConnectionString=$LOYALTY_POSTGRES" \
    --Orleans:Membership=Postgres "--Orleans:SiloPort=$silo" "--Orleans:GatewayPort=$gateway" \
    "--Kestrel:Endpoints:Grpc:Url=http://127.0.0.1:$grpc" "--Kestrel:Endpoints:Http:Url=http://127.0.0.1:$http" \
    >"data/node$i.log" 2>&1 &
  PIDS+=("$!")
  # Ready when the JSON endpoint answers (401 without a key); the next node joins a running cluster.
  for _ in $(seq 1 120); do
    if curl -s -o /dev/null "http://127.0.0.1:$http/v1/whoami"; then break; fi
    sleep 0.5
  done
  echo "node $i: gRPC 127.0.0.1:$grpc, HTTP/JSON 127.0.0.1:$http, log data/node$i.log"
done
echo "cluster.sh: $NODES nodes; the operator key is in data/operator.key. Ctrl-C stops them."
wait
