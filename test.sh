#!/usr/bin/env bash
# Runs every test. PostgreSQL: uses $LOYALTY_TEST_POSTGRES when set; otherwise starts a private,
# throw-away server on a free port of 127.0.0.1 (installing Debian's postgresql package first
# when it is missing and we are root), and stops it again at the end.
# Test results (TRX) land in ./TestResults/.
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=scripts/local-postgres.sh
source scripts/local-postgres.sh

if [[ -z "${LOYALTY_TEST_POSTGRES:-}" ]]; then
  start_postgres
  export LOYALTY_TEST_POSTGRES="$LOYALTY_POSTGRES"
else
  echo "test.sh: using LOYALTY_TEST_POSTGRES"
fi

rm -rf TestResults
dotnet build LoyaltyGrains.sln -c Release
dotnet test LoyaltyGrains.sln -c Release --no-build --logger "trx" --results-directory TestResults "$@"
