#!/bin/sh
# The same deployment as `azd up`, with the Azure CLI only (docs/deployment.md, "Without azd"):
#
#   AZURE_LOCATION=swedencentral AZURE_RESOURCE_GROUP=rg-metering-demo \
#     METERING_OPENAI_BACKENDS='[{"name":"aoai-paygo-swedencentral","resourceGroup":"rg-ai","priority":1,"weight":1}]' \
#     sh infra/hooks/deploy-az.sh metering-demo
#
# It runs preprovision.sh, `az deployment group create` with infra/main.bicep, postprovision.sh
# with main.bicep's outputs as environment values, publishes the code (Azure Functions Core
# Tools) and runs postdeploy.sh. Values are kept in .azure/<name>/.env as azd keeps them, so a
# re-run (or a later `azd up` on the same environment) writes the same keys and names.
set -eu
AZURE_ENV_NAME="${1:?usage: deploy-az.sh ENVIRONMENT_NAME}"
export AZURE_ENV_NAME
cd "$(dirname "$0")/../.."
. infra/hooks/common.sh

# Inputs from the environment win; otherwise the stored value; then the default.
for name in AZURE_LOCATION AZURE_RESOURCE_GROUP METERING_OPENAI_BACKENDS METERING_CREATE_APIM METERING_APIM_NAME \
            METERING_APIM_RESOURCE_GROUP METERING_PRIVATE_NETWORKING METERING_OPERATORS_GROUP_ID METERING_OPERATORS_GROUP \
            METERING_FINANCE_READERS_GROUP METERING_PREVIOUS_SIGNING_KEY METERING_BUDGET_WEBHOOK_URL METERING_BUDGET_WEBHOOK_FORMAT METERING_DEPLOYER_TYPE; do
    eval "value=\${$name:-}"
    if [ -n "$value" ]; then env_set "$name" "$value"; fi
done
LOCATION="$(env_get AZURE_LOCATION)"; GROUP="$(env_get AZURE_RESOURCE_GROUP)"
: "${LOCATION:?set AZURE_LOCATION}" "${GROUP:?set AZURE_RESOURCE_GROUP}"

sh infra/hooks/preprovision.sh
timeout 300 az group create -n "$GROUP" -l "$LOCATION" -o none
# The signed-in user, or (CI) the service principal az is logged in as.
principal="$(az ad signed-in-user show --query id -o tsv 2>/dev/null || az ad sp show --id "$(az account show --query user.name -o tsv)" --query id -o tsv)"
get() { value="$(env_get "$1")"; printf '%s' "${value:-$2}"; }

# Secure values travel in a parameters file readable only by this user, never on the command line.
params="${ENV_DIR}/main.parameters.json"
umask 077
P_environmentName="$AZURE_ENV_NAME" P_location="$LOCATION" P_deployerPrincipalId="$principal" \
P_deployerPrincipalType="$(get METERING_DEPLOYER_TYPE User)" P_sqlClientIpAddress="$(get METERING_SQL_CLIENT_IP '')" \
P_openAiBackendsJson="$(get METERING_OPENAI_BACKENDS '[]')" P_createApim="$(get METERING_CREATE_APIM true)" \
P_apimName="$(get METERING_APIM_NAME '')" P_apimResourceGroup="$(get METERING_APIM_RESOURCE_GROUP '')" \
P_privateNetworking="$(get METERING_PRIVATE_NETWORKING false)" P_operatorsGroupId="$(get METERING_OPERATORS_GROUP_ID '')" \
P_operatorsGroupName="$(get METERING_OPERATORS_GROUP '')" P_financeReportingGroupName="$(get METERING_FINANCE_READERS_GROUP '')" \
P_signingKey="$(get METERING_SIGNING_KEY '')" P_previousSigningKey="$(get METERING_PREVIOUS_SIGNING_KEY '')" P_budgetFunctionKey="$(get METERING_BUDGET_FUNCTION_KEY '')" \
P_budgetWebhookUrl="$(get METERING_BUDGET_WEBHOOK_URL '')" P_budgetWebhookFormat="$(get METERING_BUDGET_WEBHOOK_FORMAT text)" \
python3 - "$params" <<'PY'
import json, os, sys
values = {k[2:]: v for k, v in os.environ.items() if k.startswith("P_")}
for flag in ("createApim", "privateNetworking"):
    values[flag] = values[flag].lower() == "true"
json.dump({"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
           "contentVersion": "1.0.0.0", "parameters": {k: {"value": v} for k, v in values.items()}},
          open(sys.argv[1], "w"), indent=1)
PY

say "az deployment group create -g ${GROUP} -f infra/main.bicep"
timeout 3600 az deployment group create -g "$GROUP" -n "metering-${AZURE_ENV_NAME}" -f infra/main.bicep \
    -p "@${params}" -o none

# main.bicep's outputs, as azd would export them to the hooks.
outputs="$(az deployment group show -g "$GROUP" -n "metering-${AZURE_ENV_NAME}" --query properties.outputs -o json)"
eval "$(printf '%s' "$outputs" | python3 -c '
import json, shlex, sys
for name, item in json.load(sys.stdin).items():
    value = item["value"]
    value = json.dumps(value) if isinstance(value, (list, dict)) else str(value).lower() if isinstance(value, bool) else str(value)
    print(f"export {name}={shlex.quote(value)}")
')"
export AZURE_RESOURCE_GROUP="$GROUP"
sh infra/hooks/postprovision.sh

say "publishing the Function code to ${METERING_FUNCTION_APP}"
timeout 1800 func azure functionapp publish "$METERING_FUNCTION_APP" --python
sh infra/hooks/postdeploy.sh
