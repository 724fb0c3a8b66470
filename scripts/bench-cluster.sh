#!/usr/bin/env bash
# Measures a cluster with the load tester: starts NODES engines (default 3) on one PostgreSQL,
# each on free loopback ports, with a fresh database, and runs the load tester against them; the
# arguments are the load tester's (its --target is filled in). TARGETS=first sends every stream
# to the first node only (members on the others are then reached through the cluster).
#   NODES=2 scripts/bench-cluster.sh --members 20000 --mode max --duration 30 --json r.json
# Uses $LOYALTY_POSTGRES when it is set, else a private PostgreSQL; stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

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
database="bench_$(date +%s)_$$"
psql "postgresql://loyalty@$(sed -E 's/.*Host=([^;]+).*/\1/' <<<"$LOYALTY_POSTGRES"):$(sed -E 's/.*Port=([^;]+).*/\1/' <<<"$LOYALTY_POSTGRES")/postgres" \
  -qc "CREATE DATABASE $database" >/dev/null
connection="$(sed -E "s/Database=[^;]+/Database=$database/" <<<"$LOYALTY_POSTGRES")"
dotnet build src/Loyalty.Host -c Release -v quiet -nologo >/dev/null
dotnet build loadtest/Loyalty.LoadTest -c Release -v quiet -nologo >/dev/null
folder=$(mktemp -d)
key="lgk_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n').$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
targets=()
for i in $(seq 1 "$NODES"); do
  grpc=$(free_port); http=$(free_port); silo=$(free_port); gateway=$(free_port)
  (cd "$folder" && exec dotnet "$OLDPWD/src/Loyalty.Host/bin/Release/net10.0/Loyalty.Host.dll" \
    --Storage:Provider=Postgres "--Storage:ConnectionString=$connection" "--Auth:BootstrapOperatorKey=$key" \
    --Orleans:Membership=Postgres "--Orleans:SiloPort=$silo" "--Orleans:GatewayPort=$gateway" \
    "--Kestrel:Endpoints:Grpc:Url=http://127.0.0.1:$grpc" "--Kestrel:Endpoints:Http:Url=http://127.0.0.1:$http" \
    --Logging:LogLevel:Default=Warning >"$folder/node$i.log" 2>&1) &
  PIDS+=("$!")
  for _ in $(seq 1 120); do
    if curl -s -o /dev/null "http://127.0.0.1:$http/v1/whoami"; then break; fi
    sleep 0.5
  done
  targets+=("http://127.0.0.1:$grpc")
done
if [[ "${TARGETS:-all}" == first ]]; then targets=("${targets[0]}"); fi
echo "bench-cluster.sh: $NODES nodes, load to ${#targets[@]} of them; logs in $folder" >&2
dotnet loadtest/Loyalty.LoadTest/bin/Release/net10.0/Loyalty.LoadTest.dll \
  --target "$(IFS=,; echo "${targets[*]}")" --key "$key" "$@"
