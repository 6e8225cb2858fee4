# Shared by the hooks (sourced, POSIX sh). Values live in the azd environment when azd runs the
# hook, else in the same file azd keeps, .azure/<environment>/.env (infra/hooks/deploy-az.sh).

set -eu

ENV_NAME="${AZURE_ENV_NAME:?AZURE_ENV_NAME is not set (azd sets it; deploy-az.sh takes it as its argument)}"
ENV_DIR=".azure/${ENV_NAME}"
ENV_FILE="${ENV_DIR}/.env"
mkdir -p "${ENV_DIR}"
chmod 700 .azure "${ENV_DIR}" 2>/dev/null || true

under_azd() { [ "${METERING_UNDER_AZD:-}" = 1 ]; }   # azure.yaml sets it

# env_get NAME: the stored value, or nothing.
env_get() {
    if under_azd; then
        azd env get-value "$1" 2>/dev/null || true
    elif [ -f "${ENV_FILE}" ]; then
        sed -n "s/^$1=\"\(.*\)\"$/\1/p" "${ENV_FILE}" | tail -n 1
    fi
}

# env_set NAME VALUE: store (never printed).
env_set() {
    if under_azd; then
        azd env set "$1" "$2" >/dev/null
    else
        (
            umask 077
            touch "${ENV_FILE}"
            grep -v "^$1=" "${ENV_FILE}" > "${ENV_FILE}.tmp" || true
            printf '%s="%s"\n' "$1" "$2" >> "${ENV_FILE}.tmp"
            chmod 600 "${ENV_FILE}.tmp"
            mv "${ENV_FILE}.tmp" "${ENV_FILE}"
        )
    fi
}

say() { printf 'metering hook: %s\n' "$*" >&2; }
