"""The FinOps Foundation's own focus-validator (FOCUS 1.2, the applicability criteria docs/focus.md
declares) finds no failure in a fresh export of the samples, CSV and Parquet, with PTU capacity.

The validator needs Python >= 3.12 and lives in its own venv: METERING_FOCUS_VALIDATOR (its python),
else ``.venv-focus/bin/python`` at the repository root (what .ci/run makes). Without it the test
skips, unless METERING_REQUIRE_FOCUS_VALIDATOR=1 (set by CI once it installed the validator)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from metering.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


def validator_python() -> str | None:
    python = os.environ.get("METERING_FOCUS_VALIDATOR") or str(ROOT / ".venv-focus" / "bin" / "python")
    return python if Path(python).exists() else None


def load_checker():
    spec = importlib.util.spec_from_file_location("focus_validate", ROOT / ".ci" / "focus_validate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def python() -> str:
    python = validator_python()
    if python is None:
        if os.environ.get("METERING_REQUIRE_FOCUS_VALIDATOR") == "1":
            pytest.fail("METERING_REQUIRE_FOCUS_VALIDATOR=1 but no focus-validator venv (.venv-focus)")
        pytest.skip("focus-validator is not installed (.ci/run installs it in .venv-focus)")
    return python


def test_a_fresh_export_of_the_samples_has_no_validator_failure(python, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'metering.db'}"
    for command in (["db", "upgrade"], ["rates", "import", str(SAMPLES / "rates.csv")],
                    ["deployments", "import", str(SAMPLES / "deployments.csv")],
                    ["subscriptions", "import", str(SAMPLES / "subscriptions.csv")],
                    ["backends", "import", str(SAMPLES / "backends.csv")],
                    ["replay", str(SAMPLES / "events")]):
        assert main(["--db", db, *command]) == 0, command
    files = [tmp_path / "focus.csv", tmp_path / "focus.parquet"]
    for output in files:
        assert main(["--db", db, "export", "focus", "--month", "2026-10", "--output", str(output),
                     "--ptu-costs", str(SAMPLES / "ptu_costs.csv")]) == 0
    capsys.readouterr()
    checker = load_checker()
    for output in files:
        failures, text = checker.validate(python, str(output))
        assert "Total: " in text and failures == [], text[-5000:]
