#!/bin/sh
# After the code is deployed: the budget_status function key that APIM sends (named value
# aoai-budget-function-key, a Key Vault reference) gets the value main.bicep stored in Key Vault.
. "$(dirname "$0")/common.sh"

: "${METERING_FUNCTION_APP:?main.bicep output METERING_FUNCTION_APP is missing}"
key="$(env_get METERING_BUDGET_FUNCTION_KEY)"
[ -n "$key" ] || { say "METERING_BUDGET_FUNCTION_KEY is not set (preprovision.sh makes it)"; exit 1; }
group="${AZURE_RESOURCE_GROUP:?AZURE_RESOURCE_GROUP is not set}"
timeout 300 az functionapp function keys set -g "$group" -n "$METERING_FUNCTION_APP" \
    --function-name budget_status --key-name apim --key-value "$key" -o none
say "budget_status function key set (key name apim); budget enforcement is on"
