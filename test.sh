#!/usr/bin/env bash
# Runs every test. PostgreSQL: uses $LOYALTY_TEST_POSTGRES when set; otherwise starts a private,
# throw-away server on a free port of 127.0.0.1 (installing Debian's postgresql package first
# when it is missing and we are root), and stops it again at the end. Installs Chromium (for the
# report page's browser test) the same way when it is missing.
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

# The report page's test renders it in headless Chromium (Debian's chromium package).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing Chromium (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
  else
    echo "test.sh: Chromium is not installed and we are not root: the report page test will fail; install Debian's chromium package." >&2
  fi
fi

rm -rf TestResults
dotnet build LoyaltyGrains.sln -c Release
dotnet test LoyaltyGrains.sln -c Release --no-build --logger "trx" --results-directory TestResults "$@"
