"""docs/deployment.md, the other pages (README.md, docs/*.md) and infra/apim-metering.bicep agree
with the code they deploy: every setting the Function reads is in the deployment page's table, a
settings table on any other page names only settings that table documents, no page offers a
connection string where local authentication is disabled, the Bicep loads every policy file under
the id the policies include it by, and it creates every named value the policies use. (The Bicep
itself is not compiled here: no Bicep CLI in the test environment.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = (ROOT / "docs" / "deployment.md").read_text()
#: every page a reader may take a setting from: the README and the manuals
PAGES = {path.relative_to(ROOT).as_posix(): path.read_text()
         for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))}
BICEP = (ROOT / "infra" / "apim-metering.bicep").read_text()
NAMED_VALUE = re.compile(r"\{\{([A-Za-z0-9._-]+)\}\}")


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


def function_settings() -> set[str]:
    """The settings function_app.py documents (and reads) for the Function App."""
    doc = (ROOT / "function_app.py").read_text().split('"""')[1]
    return set(re.findall(r"^\s+((?:METERING|EVENTHUB)_[A-Z_]+)\s", doc, re.MULTILINE))


def test_every_function_setting_is_in_the_deployment_page():
    needed = function_settings() - {"EVENTHUB_CONNECTION"} | {
        "EVENTHUB_CONNECTION__fullyQualifiedNamespace", "AzureWebJobsStorage__accountName"}
    assert needed - table_settings(DEPLOYMENT) == set()
    assert {"METERING_DATABASE_URL", "EVENTHUB_CONSUMER_GROUP", "METERING_SIGNING_SECRET"} <= needed


def test_settings_tables_elsewhere_are_the_deployment_pages_settings():
    """A settings table on another page (a short form in the README, say) may leave settings out,
    never name one the deployment page does not document."""
    deployment = table_settings(DEPLOYMENT)
    assert len(deployment) >= 15 and "docs/deployment.md" in PAGES
    for name, page in PAGES.items():
        expanded = {s.replace("…", "AzureWebJobsStorage") for s in table_settings(page)}
        assert expanded - deployment == set(), name


def test_the_readme_sends_deployers_to_the_deployment_page():
    assert "](docs/deployment.md)" in PAGES["README.md"]


def test_no_connection_string_is_offered_for_event_hubs_or_host_storage():
    """Local authentication is disabled on the namespace and the storage accounts: a connection
    string cannot work, so no page may offer one as a setting."""
    for page in PAGES.values():
        settings = table_settings(page)
        assert "EVENTHUB_CONNECTION" not in settings and "AzureWebJobsStorage" not in settings
        assert not re.search(r"EVENTHUB_CONNECTION`?\s*=\s*a connection string", page)
    assert "--disable-local-auth true" in DEPLOYMENT and "--allow-shared-key-access false" in DEPLOYMENT


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


def test_files_the_deployment_page_names_exist():
    for path in set(re.findall(r"\b((?:policy|infra)/[A-Za-z0-9_.-]+\.(?:bicep|xml|json|md))", DEPLOYMENT)):
        assert (ROOT / path).is_file(), path
