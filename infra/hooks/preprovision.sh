#!/bin/sh
# Before provisioning: the values main.bicep takes that nobody should invent by hand.
#  * the event-signing key and the budget function key: generated once, kept in the environment
#    (.azure/<env>/.env, never committed: .gitignore) and passed on every run, so a re-run writes
#    the same keys (rotation: docs/deployment.md);
#  * the deployer's public IP for the SQL firewall, only while the stack is public.
. "$(dirname "$0")/common.sh"

if [ -n "${AZURE_RESOURCE_GROUP:-}" ] && [ -n "${AZURE_LOCATION:-}" ] && command -v az >/dev/null 2>&1; then
    if [ "$(az group exists -n "$AZURE_RESOURCE_GROUP" 2>/dev/null)" != "true" ]; then
        timeout 300 az group create -n "$AZURE_RESOURCE_GROUP" -l "$AZURE_LOCATION" -o none
        say "created resource group ${AZURE_RESOURCE_GROUP}"
    fi
fi

for name in METERING_SIGNING_KEY METERING_BUDGET_FUNCTION_KEY; do
    if [ -z "$(env_get "$name")" ]; then
        # base64 has no " or \ (the key is used inside a C# string in the policy)
        env_set "$name" "$(openssl rand -base64 48 | tr -d '\n')"
        say "generated ${name} (kept in ${ENV_FILE})"
    fi
done

if [ "$(env_get METERING_PRIVATE_NETWORKING)" != "true" ] && [ -z "$(env_get METERING_SQL_CLIENT_IP)" ]; then
    ip="$(curl -fsS --max-time 10 https://api.ipify.org 2>/dev/null || true)"
    if printf '%s' "$ip" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$'; then
        env_set METERING_SQL_CLIENT_IP "$ip"
        say "SQL firewall will admit this machine's address ${ip} (METERING_SQL_CLIENT_IP)"
    else
        say "could not tell this machine's public address: set METERING_SQL_CLIENT_IP, or run the hooks from inside the network"
    fi
fi

if [ -z "$(env_get METERING_OPENAI_BACKENDS)" ]; then
    say "METERING_OPENAI_BACKENDS is empty: the gateway gets no Azure OpenAI backend (docs/deployment.md, step 1)"
fi
