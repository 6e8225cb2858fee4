"""A new user's careless input (issue #26, item 12): each is one line on stderr, exit status 2, and
leaves no file behind; `metering --version` answers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import run
from metering.model import QUARANTINE_REASONS

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


@pytest.fixture
def demo_db(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("METERING_SIGNING_SECRET", raising=False)
    db = f"sqlite:///{tmp_path / 'metering.db'}"
    assert run(capsys, "--db", db, "db", "upgrade")[0] == 0
    assert run(capsys, "--db", db, "replay", "--progress", "off", str(SAMPLES / "events" / "2026-10-special-cases.jsonl"))[0] == 0
    capsys.readouterr()
    return db


def one_line_refusal(code: int, out: str, err: str) -> None:
    assert code == 2, (code, out, err)
    assert err.startswith("metering: ") and err.count("\n") == 1, err


def test_version():
    result = subprocess.run([sys.executable, "-m", "metering.cli", "--version"], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("metering 0."), result


@pytest.mark.parametrize("command", [["report", "--month", "2026-10"], ["reconcile", "--month", "2026-10"],
                                     ["budgets", "status", "--month", "2026-10"]])
@pytest.mark.parametrize("name", ["x.xls", "report", "out.docx"])
def test_an_output_extension_that_names_no_format_is_refused_and_nothing_written(demo_db, capsys, tmp_path,
                                                                                  command, name):
    target = tmp_path / name
    code, out, err = run(capsys, "--db", demo_db, *command, "--output", str(target))
    one_line_refusal(code, out, err)
    assert "is not a format" in err or "no extension" in err
    assert not target.exists()


def test_budgets_status_picks_the_format_from_the_extension(demo_db, capsys, tmp_path):
    target = tmp_path / "budgets.csv"
    code, _, err = run(capsys, "--db", demo_db, "budgets", "status", "--month", "2026-10", "--output", str(target))
    assert code == 0, err
    assert target.read_text(encoding="utf-8").splitlines()[0].count(",") >= 3


def test_a_mistyped_sqlite_database_is_not_created(tmp_path, capsys):
    typo = tmp_path / "metring.db"
    code, out, err = run(capsys, "--db", f"sqlite:///{typo}", "report", "--month", "2026-10")
    one_line_refusal(code, out, err)
    assert "does not exist" in err and not typo.exists()


@pytest.mark.parametrize("command", [["bill", "import"], ["rates", "import"], ["deployments", "import"],
                                     ["subscriptions", "import"], ["backends", "import"], ["budgets", "import"],
                                     ["ptu", "allocate", "--month", "2026-10", "--ptu-costs"]])
def test_a_folder_given_as_a_file_is_named_a_folder(demo_db, capsys, tmp_path, command):
    folder = tmp_path / "exports"
    folder.mkdir()
    code, out, err = run(capsys, "--db", demo_db, *command, str(folder))
    one_line_refusal(code, out, err)
    assert "is a folder" in err


@pytest.mark.parametrize("command, content", [
    (["rates", "import"], "model,deployment_type,price\ngpt-4o,global,1\n"),
    (["subscriptions", "import"], "subscription,unit\nsub-a,Finance\n"),
    (["bill", "import"], "%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"),
    (["ptu", "allocate", "--month", "2026-10", "--ptu-costs"], "month,deployment,cost,currency\n2026-13,gpt-4o-ptu,10,USD\n"),
])
def test_a_single_problem_is_one_line(demo_db, capsys, tmp_path, command, content):
    bad = tmp_path / "input.csv"
    bad.write_text(content, encoding="utf-8")
    code, out, err = run(capsys, "--db", demo_db, *command, str(bad))
    one_line_refusal(code, out, err)


def test_quarantine_list_of_an_unknown_reason_is_bad_input(demo_db, capsys):
    code, out, err = run(capsys, "--db", demo_db, "quarantine", "list", "--reason", "nonsense")
    one_line_refusal(code, out, err)
    assert "not_json" in err  # the reasons there are


def test_every_quarantine_reason_in_the_code_is_in_the_catalogue():
    """``--reason`` refuses what is not in ``QUARANTINE_REASONS``: a reason the code can write must be there."""
    found = set()
    for path in list((ROOT / "metering").rglob("*.py")) + list((ROOT / "db").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                    "BadEvent", "Quarantined") and node.args and isinstance(node.args[0], ast.Constant):
                found.add(node.args[0].value)
            for keyword in getattr(node, "keywords", []) if isinstance(node, ast.Call) else []:
                if keyword.arg == "reason" and isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str):
                    found.add(keyword.value.value)
    assert found and found <= set(QUARANTINE_REASONS), found - set(QUARANTINE_REASONS)
