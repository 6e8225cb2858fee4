"""The deployment's own files, offline: azure.yaml runs hooks that exist, the parameters file
names only parameters main.bicep declares, the hooks keep their generated keys across runs, and
the mappings and database users they produce are the ones the metering CLI and docs expect."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / "infra" / "hooks"
sys.path.insert(0, str(HOOKS))

import database_users  # noqa: E402
import mappings  # noqa: E402


def main_parameters() -> dict[str, bool]:
    """main.bicep's parameters → whether each has a default."""
    text = (ROOT / "infra" / "main.bicep").read_text()
    return {name: bool(default) for name, default in re.findall(r"^param (\w+) \w+( = .+)?$", text, re.MULTILINE)}


def test_azure_yaml_runs_hooks_that_exist_and_deploys_the_function():
    text = (ROOT / "azure.yaml").read_text()
    scripts = re.findall(r"run: METERING_UNDER_AZD=1 sh (infra/hooks/\w+\.sh)", text)
    assert sorted(Path(s).stem for s in scripts) == ["postdeploy", "postprovision", "preprovision"]
    assert all((ROOT / s).is_file() for s in scripts)
    assert "host: function" in text and "module: main" in text and "path: infra" in text


def test_every_hook_is_valid_shell():
    for script in HOOKS.glob("*.sh"):
        subprocess.run(["sh", "-n", str(script)], check=True, timeout=30)


def test_the_parameters_file_names_only_main_bicep_parameters_and_every_required_one():
    declared = main_parameters()
    given = json.loads(re.sub(r"\$\{[^}]*\}", "x", (ROOT / "infra" / "main.parameters.json").read_text()))["parameters"]
    assert set(given) - set(declared) == set()
    assert {name for name, has_default in declared.items() if not has_default} - set(given) == set()


def test_the_function_app_carries_the_azd_service_tag():
    assert "'azd-service-name': 'metering'" in (ROOT / "infra" / "modules" / "function.bicep").read_text()
    assert re.search(r"^  metering:\n", (ROOT / "azure.yaml").read_text(), re.MULTILINE)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl generates the keys")
def test_preprovision_generates_the_keys_once_and_keeps_them_private(tmp_path):
    env = {"PATH": os.environ["PATH"], "AZURE_ENV_NAME": "demo", "HOME": str(tmp_path)}
    env_file = tmp_path / ".azure" / "demo" / ".env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text('METERING_PRIVATE_NETWORKING="true"\nMETERING_OPENAI_BACKENDS="[]"\n')
    for _ in range(2):
        subprocess.run(["sh", str(HOOKS / "preprovision.sh")], cwd=tmp_path, env=env, check=True, timeout=60,
                       capture_output=True)
        stored = dict(re.findall(r'^(\w+)="(.*)"$', env_file.read_text(), re.MULTILINE))
        keys = (stored["METERING_SIGNING_KEY"], stored["METERING_BUDGET_FUNCTION_KEY"])
        if _ == 0:
            first = keys
    assert keys == first and len(keys[0]) == 64 and keys[0] != keys[1]
    assert not set('"\\') & set(keys[0])                 # usable inside the policy's C# string
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert "METERING_SQL_CLIENT_IP" not in stored          # private: no firewall rule asked for


def test_mappings_from_the_accounts_deployment_list():
    listed = [
        {"name": "gpt-4o", "sku": {"name": "GlobalStandard", "capacity": 450},
         "properties": {"model": {"format": "OpenAI", "name": "gpt-4o", "version": "2024-11-20"}}},
        {"name": "chat-ptu", "sku": {"name": "ProvisionedManaged", "capacity": 50},
         "properties": {"model": {"format": "OpenAI", "name": "gpt-4o-mini", "version": "2024-07-18"}}},
        {"name": "batch-4o", "sku": {"name": "GlobalBatch", "capacity": 100},
         "properties": {"model": {"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"}}},
        {"name": "mystery", "sku": {"name": "DeveloperTier"}, "properties": {"model": {"name": "gpt-4.1"}}},
    ]
    rows = mappings.deployment_rows("aoai-ptu-swedencentral", listed)
    assert rows == [
        {"backend_id": "aoai-ptu-swedencentral", "deployment": "gpt-4o", "model": "gpt-4o", "deployment_type": "global"},
        {"backend_id": "aoai-ptu-swedencentral", "deployment": "chat-ptu", "model": "gpt-4o-mini", "deployment_type": "provisioned"},
        {"backend_id": "aoai-ptu-swedencentral", "deployment": "batch-4o", "model": "gpt-4o", "deployment_type": "global-batch"},
    ]
    from metering.model import DEPLOYMENT_TYPES
    assert set(mappings.SKU_TYPES.values()) <= set(DEPLOYMENT_TYPES)


def test_mappings_without_backends_still_name_the_rate_card_region(tmp_path):
    assert mappings.main(["--backends-json", "[]", "--output", str(tmp_path), "--location", "swedencentral"]) == 0
    assert (tmp_path / "regions.txt").read_text() == "swedencentral\n"
    with (tmp_path / "backends.csv").open() as f:
        assert next(csv.reader(f)) == ["backend_id", "resource_id", "region"]   # what `metering backends import` reads


def test_database_users_grant_what_the_function_operators_and_finance_need():
    sql = database_users.statements("id-func-metering-demo-ab12cd", "sg-metering-operators", "finance-reporting")
    assert "IF DATABASE_PRINCIPAL_ID(N'id-func-metering-demo-ab12cd') IS NULL CREATE USER [id-func-metering-demo-ab12cd] FROM EXTERNAL PROVIDER" in sql
    assert "ALTER ROLE db_datawriter ADD MEMBER [sg-metering-operators]" in sql
    assert "ALTER ROLE chargeback_reader ADD MEMBER [finance-reporting]" in sql
    finance = [s for s in sql if "chargeback_reader" in s and s.startswith("GRANT")]
    assert finance == [f"GRANT SELECT ON dbo.{t} TO chargeback_reader" for t in
                       ("v_usage_daily", "v_chargeback_monthly", "v_true_up_monthly", "v_bill_daily",
                        "subscriptions", "rates")]  # the six objects the Power BI model reads
    powerbi = (ROOT / "docs" / "powerbi.md").read_text()
    assert all(s + ";" in powerbi for s in finance)                 # the grants docs/powerbi.md shows
    assert database_users.statements("id-func-x", "", "") == database_users.statements("id-func-x", "", "")[:3]
    with pytest.raises(SystemExit):
        database_users.statements("x]; DROP TABLE rates; --", "", "")
