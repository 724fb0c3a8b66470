#!/usr/bin/env bash
# Measures a cluster with the load tester: starts NODES engines (default 3) on one PostgreSQL,
# each on free loopback ports, with a fresh database, and runs the load tester against them; the
# arguments are the load tester's (its --target and --key are filled in). TARGETS=first sends every
# stream to the first node only (members on the others are then reached through the cluster).
#   NODES=2 scripts/bench-cluster.sh --members 20000 --mode max --duration 30 --json r.json
# Uses $LOYALTY_POSTGRES when it is set, else a private PostgreSQL; stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/local-postgres.sh
source scripts/local-postgres.sh
# shellcheck source=scripts/cluster-nodes.sh
source scripts/cluster-nodes.sh

NODES=${NODES:-3}
trap 'stop_nodes; stop_postgres' EXIT

if [[ -z "${LOYALTY_POSTGRES:-}" ]]; then start_postgres; fi
host=$(sed -E 's/.*Host=([^;]+).*/\1/' <<<"$LOYALTY_POSTGRES")
port=$(sed -E 's/.*Port=([^;]+).*/\1/' <<<"$LOYALTY_POSTGRES")
database="bench_$(date +%s)_$$"
psql "postgresql://loyalty@$host:$port/postgres" -qc "CREATE DATABASE $database" >/dev/null
dotnet build src/Loyalty.Host -c Release -v quiet -nologo >/dev/null
dotnet build loadtest/Loyalty.LoadTest -c Release -v quiet -nologo >/dev/null
folder=$(mktemp -d)
key="lgk_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n').$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
start_nodes "$NODES" "$(sed -E "s/Database=[^;]+/Database=$database/" <<<"$LOYALTY_POSTGRES")" "$folder" "$folder" \
  "--Auth:BootstrapOperatorKey=$key" --Logging:LogLevel:Default=Warning
targets=()
for grpc in "${NODE_GRPC[@]}"; do targets+=("http://127.0.0.1:$grpc"); done
if [[ "${TARGETS:-all}" == first ]]; then targets=("${targets[0]}"); fi
echo "bench-cluster.sh: $NODES nodes, load to ${#targets[@]} of them; logs in $folder" >&2
dotnet loadtest/Loyalty.LoadTest/bin/Release/net10.0/Loyalty.LoadTest.dll \
  --target "$(IFS=,; echo "${targets[*]}")" --key "$key" "$@"
