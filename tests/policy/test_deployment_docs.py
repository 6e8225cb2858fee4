"""docs/deployment.md, the other pages (README.md, docs/*.md) and the Bicep agree with the code they deploy: every setting the
Function reads (function_app.py and the modules it loads: metering/settings.py, the event bounds,
the budget alerts, the database URL) is set by infra/modules/function.bicep and documented in the
deployment page's settings table, with nothing in either that the code does not read; a settings table on any other page names only
settings the deployment page documents; no
connection string is offered where local authentication is disabled; the Bicep loads every policy
file under the id the policies include it by and creates every named value the policies use.
(Parsing and type-checking the Bicep is tests/infra/test_bicep.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = (ROOT / "docs" / "deployment.md").read_text()
#: every page a reader may take a setting from: the README and the manuals
PAGES = {path.relative_to(ROOT).as_posix(): path.read_text()
         for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))}
BICEP = (ROOT / "infra" / "apim-metering.bicep").read_text()
FUNCTION_BICEP = (ROOT / "infra" / "modules" / "function.bicep").read_text()
NAMED_VALUE = re.compile(r"\{\{([A-Za-z0-9._-]+)\}\}")
# What the Functions host and its extensions read, next to the code's own settings: identity-based
# connections (the trigger's EVENTHUB_CONNECTION prefix, host storage) and Application Insights.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId",
    "EVENTHUB_CONNECTION__fullyQualifiedNamespace", "EVENTHUB_CONNECTION__credential", "EVENTHUB_CONNECTION__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# Read by the code, but never set as a value: a connection's prefix (its __ settings are above).
PREFIXES = {"EVENTHUB_CONNECTION"}


def table_settings(markdown: str) -> set[str]:
    """Setting names in the first column of the markdown tables whose header starts with 'setting'."""
    names: set[str] = set()
    in_table = False
    for line in markdown.splitlines():
        if re.match(r"\s*\| [Ss]etting \|", line):
            in_table = True
            continue
        if in_table and not line.strip().startswith("|"):
            in_table = False
        if in_table:
            first = line.strip().strip("|").split("|")[0]
            names.update(re.findall(r"`([^`]+)`", first))
    return names


def settings_the_function_reads() -> set[str]:
    """Every METERING_* / EVENTHUB_* name written as a string in a project module that importing
    function_app loads (in a fresh interpreter without METERING_* settings, as the host would)."""
    code = r'''
import json, re, sys
from pathlib import Path
root = Path.cwd().resolve()
import function_app
names = set()
for module in list(sys.modules.values()):
    file = getattr(module, "__file__", None)
    if file and Path(file).resolve().is_relative_to(root) and ".venv" not in file:
        text = Path(file).read_text()
        names |= set(re.findall(r'"%?((?:METERING|EVENTHUB)_[A-Z0-9_]+)%?"', text))
print(json.dumps(sorted(names)))
'''
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    import json
    return set(json.loads(result.stdout))


def bicep_app_settings() -> set[str]:
    block = FUNCTION_BICEP.split("var appSettings = {", 1)[1].split("\n}\n", 1)[0]
    return set(re.findall(r"^  ([A-Za-z_][A-Za-z0-9_]*): ", block, re.MULTILINE))


def test_every_setting_the_function_reads_is_set_by_the_bicep_and_nothing_else():
    read = settings_the_function_reads()
    assert {"METERING_DATABASE_URL", "EVENTHUB_CONSUMER_GROUP", "METERING_SIGNING_SECRET", "METERING_MAX_EVENT_BYTES"} <= read
    assert bicep_app_settings() == (read - PREFIXES) | PLATFORM_SETTINGS


def test_the_deployment_page_documents_exactly_the_settings_the_bicep_sets():
    assert table_settings(DEPLOYMENT) == bicep_app_settings()


def test_settings_tables_elsewhere_are_the_deployment_pages_settings():
    """A settings table on another page (a short form in the README, say) may leave settings out,
    never name a Function App setting the deployment page does not document. (Tables of the test
    suite's own variables, METERING_SHARED_DIR and the like, are not the Function's.)"""
    deployment = table_settings(DEPLOYMENT)
    function = settings_the_function_reads() | PLATFORM_SETTINGS
    assert len(deployment) >= 15 and "docs/deployment.md" in PAGES
    for name, page in PAGES.items():
        expanded = {s.replace("…", "AzureWebJobsStorage") for s in table_settings(page)}
        assert (expanded & function) - deployment == set(), name


def test_the_readme_sends_deployers_to_the_deployment_page():
    assert "](docs/deployment.md)" in PAGES["README.md"]


def test_the_function_docstring_lists_the_settings_it_reads():
    doc = (ROOT / "function_app.py").read_text().split('"""')[1]
    listed = set(re.findall(r"\b((?:METERING|EVENTHUB)_[A-Z_]+)\b", doc))
    assert (settings_the_function_reads() - {"METERING_QUARANTINE_RETENTION_DAYS"}) - listed == set()


def test_no_connection_string_is_offered_for_event_hubs_or_host_storage():
    """Local authentication is disabled on the namespace and the storage accounts: a connection
    string cannot work, so no page may offer one as a setting, and the Bicep turns it off."""
    for page in PAGES.values():
        settings = table_settings(page)
        assert "EVENTHUB_CONNECTION" not in settings and "AzureWebJobsStorage" not in settings
        assert not re.search(r"EVENTHUB_CONNECTION`?\s*=\s*a connection string", page)
    modules = ROOT / "infra" / "modules"
    assert "disableLocalAuth: true" in (modules / "eventhubs.bicep").read_text()
    storage = (modules / "eventhubs.bicep").read_text() + FUNCTION_BICEP
    assert storage.count("Microsoft.Storage/storageAccounts@") == storage.count("allowSharedKeyAccess: false") == 2
    assert "DisableLocalAuth: true" in (modules / "monitoring.bicep").read_text()
    assert "azureADOnlyAuthentication: true" in (modules / "sql.bicep").read_text()


def test_bicep_loads_every_policy_file_with_the_id_the_policies_include():
    loaded = list(re.findall(r"name: '([a-z0-9-]+)'\n  properties: \{\n(?:    .*\n)*?    value: loadTextContent\('\.\./policy/([a-z0-9-]+\.xml)'\)", BICEP))
    files = {p.name for p in (ROOT / "policy").glob("*.xml")}
    assert set(re.findall(r"loadTextContent\('\.\./policy/([a-z0-9-]+\.xml)'\)", BICEP)) == files
    fragments = {p.name for p in (ROOT / "policy").glob("*.xml") if p.read_text().lstrip().startswith("<fragment")}
    assert len(loaded) == len(files)
    for name, file in loaded:
        assert name == ("aoai-" + Path(file).stem if file in fragments else "policy")
    assert BICEP.count("format: 'xml'") == len(files)   # XML-encoded C# (docs/policies.md)


def test_bicep_creates_every_named_value_the_policies_use():
    used = {m for p in (ROOT / "policy").glob("*.xml") for m in NAMED_VALUE.findall(p.read_text())}
    block = BICEP.split("param namedValues object = {", 1)[1].split("\n}\n", 1)[0]
    defaults = dict(re.findall(r"'([a-z0-9-]+)': '([^']*)'", block))
    # three have their own parameters: the tenant (no sensible default) and the Key Vault-backed keys
    assert set(defaults) | {"entra-tenant-id", "aoai-metering-hmac-key", "aoai-budget-function-key"} == used
    assert defaults["aoai-metering-capture"] == "usage"                  # the recommended start
    assert defaults["aoai-metering-inject-include-usage"] == "false"     # until clients are known to cope
    documented = (ROOT / "policy" / "named-values.md").read_text()
    for name, value in defaults.items():
        assert f"`{name}`" in documented and '"' not in value and "<" not in value and "&" not in value


def test_main_bicep_wires_the_key_vault_backed_named_values_and_the_budget_endpoint():
    main = (ROOT / "infra" / "main.bicep").read_text()
    call = main.split("module apimMetering 'apim-metering.bicep'", 1)[1].split("\n}\n", 1)[0]
    for param in ("hmacKeySecretUri: keyVault.outputs.signingKeySecretUri",
                  "budgetFunctionKeySecretUri: keyVault.outputs.budgetFunctionKeySecretUri",
                  "budgetUrl: 'https://${function.outputs.defaultHostName}/api/budget'"):
        assert param in call
    vault = (ROOT / "infra" / "modules" / "keyvault.bicep").read_text()
    assert "name: 'aoai-metering-hmac-key'" in vault and "name: 'budget-function-key'" in vault
    assert "SecretName='" in FUNCTION_BICEP and "aoai-metering-hmac-key)" in FUNCTION_BICEP


def test_files_the_deployment_page_names_exist():
    paths = set(re.findall(r"(?<![/\w])((?:policy|infra|samples|tests)/[A-Za-z0-9_./-]+\.(?:bicep|xml|json|md|sh|py|csv|yaml))", DEPLOYMENT))
    assert "infra/main.bicep" in paths
    for path in paths:
        assert (ROOT / path).is_file(), path
    assert "azure.yaml" in DEPLOYMENT and (ROOT / "azure.yaml").is_file()
