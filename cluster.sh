#!/usr/bin/env bash
# A cluster on this machine, without Docker: a private PostgreSQL and NODES engines (default 3)
# on free loopback ports, one Orleans cluster sharing that database (Orleans:Membership=Postgres).
# The first node writes the operator key to ./data/operator.key; logs go to ./data/node<N>.log.
# Ctrl-C stops the nodes and the database. Uses $LOYALTY_POSTGRES instead when it is set.
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=scripts/local-postgres.sh
source scripts/local-postgres.sh
# shellcheck source=scripts/cluster-nodes.sh
source scripts/cluster-nodes.sh

NODES=${NODES:-3}
trap 'stop_nodes; stop_postgres' EXIT

if [[ -z "${LOYALTY_POSTGRES:-}" ]]; then start_postgres; fi
dotnet build src/Loyalty.Host -c Release -v quiet -nologo
mkdir -p data
start_nodes "$NODES" "$LOYALTY_POSTGRES" "$PWD" "$PWD/data" --Dashboard:Enabled=true
for i in $(seq 1 "$NODES"); do
  echo "node $i: gRPC 127.0.0.1:${NODE_GRPC[$((i - 1))]}, HTTP/JSON 127.0.0.1:${NODE_HTTP[$((i - 1))]}, log data/node$i.log"
done
echo "cluster.sh: $NODES nodes; the operator key is in data/operator.key (also the dashboard's password:"
echo "  http://127.0.0.1:${NODE_HTTP[0]}/dashboard/). Ctrl-C stops them."
wait
