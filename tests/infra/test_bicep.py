"""The Bicep files, checked offline: every file parses (pycep-parser), every resource's
``type@apiVersion`` exists in Microsoft's generated Bicep types (Azure/bicep-types-az) with the
property names, required and read-only properties it declares there, every module call passes the
parameters its file declares, and checkov finds no failed check (each skip carries its reason).

The tools live in a venv of their own (.ci/run makes .venv-infra); the types are a subset of
bicep-types-az (infra/tools/bicep_types_subset.py) in METERING_BICEP_TYPES_DIR. Without them these
tests skip, saying why; .ci/run sets METERING_REQUIRE_INFRA_TOOLS=1 and METERING_REQUIRE_BICEP_TYPES=1
once it has them, and then a missing piece fails instead."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from infra.bicep_check import (
    ROOT, TYPES_SETTING, TypeIndex, bicep_files, check_modules, check_resources, infra_python, parse_all,
    required,
)

TYPES_REQUIRE_SETTING = "METERING_REQUIRE_BICEP_TYPES"


def _missing(what: str, require: bool) -> None:
    if require:
        pytest.fail(f"{what} (required here)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def python() -> Path:
    found = infra_python()
    if found is None:
        _missing("no Python with pycep-parser and checkov (METERING_INFRA_PYTHON or .venv-infra; .ci/run installs it)",
                 required())
    probe = subprocess.run([str(found), "-c", "import pycep, checkov"], capture_output=True, timeout=120)
    if probe.returncode != 0:
        _missing(f"{found} lacks pycep-parser or checkov", required())
    return found


@pytest.fixture(scope="module")
def parsed(python: Path) -> dict[Path, dict]:
    return parse_all(python, bicep_files())


@pytest.fixture(scope="module")
def types() -> TypeIndex:
    folder = os.environ.get(TYPES_SETTING, "")
    require = os.environ.get(TYPES_REQUIRE_SETTING, "") == "1"
    if not folder or not Path(folder).is_dir():
        _missing(f"{TYPES_SETTING} names no folder of bicep-types-az type files (infra/tools/bicep_types_subset.py)", require)
    index = TypeIndex(Path(folder))
    if not index.resources:
        _missing(f"{folder} holds no types.json", require)
    return index


def test_the_stack_is_in_bicep_files():
    names = {p.relative_to(ROOT).as_posix() for p in bicep_files()}
    assert {"infra/main.bicep", "infra/apim-metering.bicep", "policy/backends.bicep"} <= names
    assert len([n for n in names if n.startswith("infra/modules/")]) >= 8


def test_every_bicep_file_parses(parsed):
    errors = {p.relative_to(ROOT).as_posix(): d["error"] for p, d in parsed.items() if "error" in d}
    assert errors == {}
    assert all(d.get("resources") or d.get("modules") for d in parsed.values())


def test_every_resource_matches_microsofts_generated_types(parsed, types):
    """type@apiVersion exists; property names, required and read-only properties agree with the type."""
    findings = check_resources(types, {p: d for p, d in parsed.items() if "error" not in d})
    assert findings.problems == []
    assert findings.checked >= 60     # every resource of the stack was looked up


def test_the_types_say_where_they_come_from(types):
    origin = (types.folder / "ORIGIN").read_text()
    assert "Azure/bicep-types-az" in origin and re.search(r"commit: [0-9a-f]{40}", origin)


def test_every_module_call_passes_the_parameters_its_file_declares(parsed):
    findings = check_modules({p: d for p, d in parsed.items() if "error" not in d})
    assert findings.problems == []
    assert findings.checked >= 10


def test_checkov_finds_no_failed_check_and_every_skip_has_a_reason(python):
    checkov = python.parent / "checkov"
    result = subprocess.run([str(checkov), "-d", "infra", "--framework", "bicep", "--config-file", "infra/.checkov.yaml",
                             "--quiet", "--compact", "--skip-download"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    summary = re.search(r"Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", result.stdout)
    assert summary, result.stdout[-2000:] + result.stderr[-2000:]
    passed, failed, skipped = map(int, summary.groups())
    assert failed == 0 and result.returncode == 0, result.stdout[-4000:]
    assert passed >= 30                 # it looked at the stack, not at an empty folder
    inline = [line for p in ROOT.glob("infra/**/*.bicep") for line in p.read_text().splitlines() if "checkov:skip=" in line]
    assert inline
    for line in inline:
        assert re.search(r"// checkov:skip=CKV2?_AZURE_\d+: \S.{20,}", line), f"a skip without its reason: {line.strip()}"
    config = (ROOT / "infra" / ".checkov.yaml").read_text()
    for check in re.findall(r"^\s+- (CKV2?_AZURE_\d+)$", config, re.MULTILINE):
        assert re.search(rf"^# {check} \(", config, re.MULTILINE), f"{check} is skipped without a reason"


def test_the_type_check_catches_a_drifted_property(python, types, tmp_path):
    """The check itself: a misspelled, a read-only and a missing required property are each named."""
    drifted = tmp_path / "drifted.bicep"
    drifted.write_text("""param location string
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-drifted'
  location: location
  properties: {
    tenantId: subscription().tenantId
    enableRbacAuthorisation: true
    hsmPoolResourceId: 'x'
  }
}
resource missing 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-missing'
  location: location
}
resource unknown 'Microsoft.KeyVault/vaults@2031-01-01' = {
  name: 'kv-future'
}
""")
    parsed = parse_all(python, [drifted])
    problems = "\\n".join(check_resources(types, {ROOT / "drifted.bicep": parsed[drifted]}).problems)
    assert "'enableRbacAuthorisation' is not in the type" in problems
    assert "'hsmPoolResourceId' is read-only" in problems
    assert "required property 'sku' is missing" in problems            # in vault.properties
    assert "required property 'properties' is missing" in problems     # the second vault
    assert "Microsoft.KeyVault/vaults@2031-01-01" in problems and "not in Microsoft's generated" in problems
