"""The `metering` command end to end: migrate, import, replay (idempotent), report, clear errors."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
from decimal import Decimal

from events import encode, jsonl, v1_event
from cli_runner import run

RATES = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
    "gpt-4o-mini,datazone,,2024-07-18,,USD,0.165,0.083,0.66\n"
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rates = tmp_path / "rates.csv"
    rates.write_text(RATES)
    deployments = tmp_path / "deployments.csv"
    deployments.write_text("backend_id,deployment,model,deployment_type\n,chat-prod,gpt-4o-mini,datazone\n")
    subscriptions = tmp_path / "subscriptions.csv"
    subscriptions.write_text("subscription_id,business_unit,cost_center,owner\nsub-finance-analytics,Finance,CC-1042,cfo@contoso.com\n")
    return {"rates": rates, "deployments": deployments, "subscriptions": subscriptions}


def import_all(capsys, db: str, files: dict[str, Path]) -> None:
    for kind in ("rates", "deployments", "subscriptions"):
        code, out, err = run(capsys, "--db", db, kind, "import", str(files[kind]))
        assert code == 0, err


def test_replay_twice_never_double_counts(capsys, db, files, tmp_path):
    import_all(capsys, db, files)
    capture = tmp_path / "capture.jsonl"
    events = [v1_event(f"req-{i}") for i in range(10)] + [v1_event("req-3")]
    capture.write_bytes(jsonl(events))
    code, out, _ = run(capsys, "--db", db, "replay", str(capture))
    assert code == 0
    assert "events read 11 | rows inserted 10 | duplicates skipped 1 | quarantined 0" in out
    code, out, _ = run(capsys, "--db", db, "replay", str(capture))
    assert "events read 11 | rows inserted 0 | duplicates skipped 11" in out
    code, out, _ = run(capsys, "--db", db, "report", "--month", "2026-10", "--format", "csv")
    lines = out.strip().splitlines()
    assert lines[0].startswith("month,business_unit,subscription,requests,")
    assert lines[1].startswith("2026-10,Finance,sub-finance-analytics,10,")
    header = lines[0].split(",")
    assert Decimal(lines[1].split(",")[header.index("cost")]) == Decimal("0.06")  # 10 × (1200 × 2.50 + 300 × 10) / 1M


def test_garbage_lines_are_all_accounted_for(capsys, db, tmp_path):
    capture = tmp_path / "garbage.jsonl.gz"
    lines = [b"not json", b"\xff\xfe\x00garbage", b"[1,2]", encode(v1_event(requestId=None)), b'{"schema":"aoai-usage/1"',
             encode(v1_event("good-1")), encode(v1_event("good-1")), b"{}"]
    with gzip.open(capture, "wb") as out:
        out.write(b"\r\n".join(lines) + b"\r\n\r\n")
    code, out, _ = run(capsys, "--db", db, "replay", str(tmp_path))
    assert code == 0
    assert "events read 8 | rows inserted 1 | duplicates skipped 1 | quarantined 6" in out


def test_report_table_shows_business_units_and_totals(capsys, db, files, tmp_path):
    import_all(capsys, db, files)
    capture = tmp_path / "c.jsonl"
    capture.write_bytes(jsonl([
        v1_event("a"),
        v1_event("b", deployment="chat-prod", model=None, subscription={"id": "sub-other", "name": "Other"}),
        v1_event("c", model="mystery-1", deployment="mystery"),
    ]))
    run(capsys, "--db", db, "replay", str(capture))
    code, out, _ = run(capsys, "--db", db, "report", "--month", "2026-10", "--by", "business_unit,model")
    assert code == 0
    assert "Finance" in out and "(unmapped)" in out
    assert "gpt-4o-mini" in out  # chat-prod priced as its mapped model
    assert "TOTAL" in out and "1 unpriced" in out
    code, out, _ = run(capsys, "--db", db, "rates", "list")
    assert "mystery-1" in out and "no rate" in out


def test_clear_errors_for_bad_input(capsys, db, tmp_path):
    bad_rates = tmp_path / "bad.csv"
    bad_rates.write_text(RATES.replace("2.50", "two fifty"))
    code, _, err = run(capsys, "--db", db, "rates", "import", str(bad_rates))
    assert code == 2 and "line 2" in err and "two fifty" in err
    code, _, err = run(capsys, "--db", db, "replay", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "no such file" in err
    code, _, err = run(capsys, "--db", db, "report", "--month", "2026-13")
    assert code == 2 and "YYYY-MM" in err
    code, _, err = run(capsys, "--db", db, "report", "--by", "planet")
    assert code == 2 and "unknown dimension" in err


def test_overlapping_rate_import_is_rejected(capsys, db, files, tmp_path):
    import_all(capsys, db, files)
    overlapping = tmp_path / "overlap.csv"
    overlapping.write_text(RATES.splitlines()[0] + "\ngpt-4o,global,,2025-01-01,,USD,2.00,1.00,8.00\n")
    code, _, err = run(capsys, "--db", db, "rates", "import", str(overlapping))
    assert code == 2 and "overlapping rates for gpt-4o / global" in err


def test_unmigrated_database_says_what_to_do(capsys, tmp_path):
    code, _, err = run(capsys, "--db", f"sqlite:///{tmp_path / 'empty.db'}", "report")
    assert code == 2 and "metering db upgrade" in err


def test_installed_command_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "metering.cli", "--db", f"sqlite:///{tmp_path / 'x.db'}", "db", "upgrade"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "is at revision" in result.stdout


def test_report_refuses_to_add_costs_in_different_currencies(capsys, db, tmp_path):
    eur_card = tmp_path / "eur.csv"
    eur_card.write_text(RATES.splitlines()[0] + "\ngpt-4.1,global,,2024-01-01,,EUR,1.80,0.45,7.20\n")
    assert run(capsys, "--db", db, "rates", "import", str(eur_card))[0] == 0
    usd_card = tmp_path / "usd.csv"
    usd_card.write_text(RATES)
    assert run(capsys, "--db", db, "rates", "import", str(usd_card))[0] == 0
    capture = tmp_path / "mixed.jsonl"
    capture.write_bytes(jsonl([v1_event("usd-1"), v1_event("eur-1", model="gpt-4.1-2025-04-14", deployment="gpt-4.1")]))
    run(capsys, "--db", db, "replay", str(capture))
    code, out, err = run(capsys, "--db", db, "report", "--month", "2026-10")
    assert code == 2 and "more than one currency (EUR, USD)" in err and out == ""


def test_output_that_cannot_be_written_is_a_one_line_error(capsys, db, tmp_path):
    missing = tmp_path / "no-such-folder"
    for args in (["report", "--month", "2026-10", "--format", "html", "--output", str(missing / "r.html")],
                 ["report", "--month", "2026-10", "--format", "xlsx", "--output", str(missing / "r.xlsx")],
                 ["export", "focus", "--month", "2026-10", "--output", str(missing / "f.csv")]):
        code, _, err = run(capsys, "--db", db, *args)
        assert code == 2, err
        assert err.startswith("metering: ") and "cannot write" in err and "Traceback" not in err


def test_report_format_follows_the_output_extension_unless_given(capsys, db, tmp_path):
    for name, check in (("r.csv", lambda b: b.startswith(b"month,business_unit,subscription,")),
                        ("r.json", lambda b: b.lstrip().startswith(b"{")),
                        ("r.HTML", lambda b: b.lstrip().lower().startswith(b"<!doctype html")),
                        ("r.xlsx", lambda b: b.startswith(b"PK")),
                        ("r.txt", lambda b: b.startswith(b"Azure OpenAI chargeback"))):
        code, _, err = run(capsys, "--db", db, "report", "--month", "2026-10", "--output", str(tmp_path / name))
        assert code == 0, err
        assert check((tmp_path / name).read_bytes()), name
    code, _, err = run(capsys, "--db", db, "report", "--month", "2026-10", "--format", "table", "--output", str(tmp_path / "t.csv"))
    assert code == 0 and (tmp_path / "t.csv").read_bytes().startswith(b"Azure OpenAI chargeback")


def test_binary_formats_without_the_reports_extra_say_what_to_install(capsys, db, tmp_path, monkeypatch):
    for module in ("openpyxl", "pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, module, None)  # as if `pip install aoai-metering` without [reports]
    for args, missing in ((["report", "--month", "2026-10", "--output", str(tmp_path / "r.xlsx")], "openpyxl"),
                          (["report", "--month", "2026-10", "--output", str(tmp_path / "r.parquet")], "pyarrow"),
                          (["export", "focus", "--month", "2026-10", "--output", str(tmp_path / "f.parquet")], "pyarrow")):
        code, _, err = run(capsys, "--db", db, *args)
        assert code == 2, err
        assert missing in err and "aoai-metering[reports]" in err and "Traceback" not in err


def test_every_argument_has_help_text():
    import argparse

    from metering.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif action.help is None and not isinstance(action, argparse._HelpAction):
                missing.append(" ".join([*path, *(action.option_strings or [action.dest])]))

    walk(build_parser(), ["metering"])
    assert missing == []


def test_rates_list_columns_stay_aligned_with_long_names(capsys, db, tmp_path):
    card = tmp_path / "long.csv"
    card.write_text(RATES.splitlines()[0] + "\n"
                    "gpt-4o-mini-2024-07-18.ft-0123456789abcdef,regional,australiasoutheast,2024-07-18,,USD,0.3,,1.2\n")
    assert run(capsys, "--db", db, "rates", "import", str(card))[0] == 0
    code, out, _ = run(capsys, "--db", db, "rates", "list")
    header, _, row = out.splitlines()[:3]
    assert code == 0 and header.index("from") == row.index(" 2024-07-18") + 1 and header.index("cur") == row.index("USD")


def test_overlap_hints_say_what_would_help(capsys, db, tmp_path):
    header = RATES.splitlines()[0]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(header + "\ngpt-4o,global,,2025-01-01,,USD,2.00,1.00,8.00\n")
    b.write_text(header + "\ngpt-4o,global,,2025-06-01,,USD,1.00,0.50,4.00\n")
    code, _, err = run(capsys, "--db", db, "rates", "import", str(a), str(b), "--supersede")
    assert code == 2 and "imported file(s) themselves" in err and "use --supersede" not in err
    assert run(capsys, "--db", db, "rates", "import", str(b))[0] == 0
    code, _, err = run(capsys, "--db", db, "rates", "import", str(a))
    assert code == 2 and "use --supersede" in err
    code, _, err = run(capsys, "--db", db, "rates", "import", str(a), "--supersede")  # stored rate starts later
    assert code == 2 and "only ends a stored open-ended rate that starts before" in err


def test_focus_export_refuses_an_empty_billing_account_id(capsys, db, tmp_path):
    code, _, err = run(capsys, "--db", db, "export", "focus", "--month", "2026-10", "--output", str(tmp_path / "f.csv"),
                       "--billing-account-id", " ")
    assert code == 2 and "--billing-account-id must not be empty" in err
    assert not (tmp_path / "f.csv").exists()


def test_replaying_bad_events_again_says_they_are_already_in_quarantine(capsys, db, tmp_path):
    capture = tmp_path / "bad.jsonl"
    capture.write_bytes(b"not json\n[1]\nnot json\n")
    code, out, _ = run(capsys, "--db", db, "replay", str(capture))
    assert "quarantined 3 (1 already in quarantine)" in out  # the repeated line is kept once
    code, out, _ = run(capsys, "--db", db, "replay", str(capture))
    assert "events read 3 | rows inserted 0 | duplicates skipped 0 | quarantined 3 (3 already in quarantine)" in out
