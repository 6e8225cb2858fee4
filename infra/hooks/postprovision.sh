#!/bin/sh
# After provisioning, with the deployer's own Entra token (az login; no browser, no password):
#   1. metering db upgrade                       tables and views (Alembic) on Azure SQL
#   2. infra/hooks/database_users.py             the Function's identity, operators, finance readers
#   3. metering backends import / deployments import   from the Bicep outputs and the accounts'
#      own deployment list (infra/hooks/mappings.py): no account name typed twice
#   4. metering rates import --fetch             Azure's retail prices for the backends' regions
# Every step is safe to repeat. Names come from main.bicep's outputs (environment values).
. "$(dirname "$0")/common.sh"

: "${METERING_SQL_SERVER:?main.bicep output METERING_SQL_SERVER is missing}"
: "${METERING_SQL_DATABASE:?}" "${METERING_FUNCTION_IDENTITY:?}"

VENV=.venv-deploy
if ! "${VENV}/bin/metering" --version >/dev/null 2>&1; then
    say "installing the metering CLI into ${VENV}"
    python3 -m venv "${VENV}"
    timeout 900 "${VENV}/bin/pip" install --quiet ".[mssql]"
fi
if ! odbcinst -q -d 2>/dev/null | grep -q 'ODBC Driver 18 for SQL Server'; then
    say "Microsoft ODBC Driver 18 for SQL Server is not installed here (docs/deployment.md, tools)"
    exit 1
fi

# Authentication=AzureCli: db/engine.py connects with `az account get-access-token` (the deployer).
METERING_DATABASE_URL="mssql+pyodbc://@${METERING_SQL_SERVER}/${METERING_SQL_DATABASE}?driver=ODBC+Driver+18+for+SQL+Server&Authentication=AzureCli&Encrypt=yes"
export METERING_DATABASE_URL

say "metering db upgrade on ${METERING_SQL_SERVER}/${METERING_SQL_DATABASE}"
timeout 1800 "${VENV}/bin/metering" db upgrade

say "database users"
timeout 600 "${VENV}/bin/python" infra/hooks/database_users.py \
    --function-identity "${METERING_FUNCTION_IDENTITY}" \
    --operators "${METERING_OPERATORS_GROUP:-}" --finance-readers "${METERING_FINANCE_READERS_GROUP:-}"

say "backends and deployments of the Azure OpenAI accounts"
timeout 600 "${VENV}/bin/python" infra/hooks/mappings.py --backends-json "${METERING_BACKENDS:-[]}" --output "${ENV_DIR}" --location "${AZURE_LOCATION:-}"
if [ -s "${ENV_DIR}/backends.csv" ] && [ "$(wc -l < "${ENV_DIR}/backends.csv")" -gt 1 ]; then
    timeout 600 "${VENV}/bin/metering" backends import "${ENV_DIR}/backends.csv"
    timeout 600 "${VENV}/bin/metering" deployments import "${ENV_DIR}/deployments.csv"
fi

say "rate card: Azure retail prices for $(cat "${ENV_DIR}/regions.txt" | tr '\n' ' ')"
while read -r region; do
    [ -n "$region" ] || continue
    timeout 900 "${VENV}/bin/metering" rates import --fetch --region "$region" --save "${ENV_DIR}/retail-prices-${region}.json"
done < "${ENV_DIR}/regions.txt"
say "done: see docs/deployment.md for the subscriptions CSV and the monthly operations"
