"""What a newcomer tripped over: a command that does nothing must say why, a file replay skips must
be named, and text from events must never drive the terminal."""

from __future__ import annotations

import pytest

from cli_runner import run
from db import store
from db.engine import make_engine
from events import encode, jsonl, v1_event
from metering.model import Quarantined

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x9b"


@pytest.fixture
def db(db_url, capsys, monkeypatch):
    monkeypatch.delenv("METERING_SIGNING_SECRET", raising=False)
    assert run(capsys, "--db", db_url, "db", "upgrade")[0] == 0
    return db_url


def test_quarantine_list_shows_control_characters_escaped(db, capsys, tmp_path):
    engine = make_engine(db)
    with engine.begin() as conn:
        store._insert_quarantine(conn, [Quarantined(reason="invalid_field", detail=f"bad value {ESCAPES}",
                                                    raw=b"{}", request_id=f"req-{ESCAPES}",
                                                    source_partition=f"p{ESCAPES}")], store.utc_now())
    engine.dispose()
    for args in (["quarantine", "list"], ["quarantine", "list", "--reason", "invalid_field", "--raw"],
                 ["quarantine", "list", "--reason", f"x{ESCAPES}"]):
        code, out, err = run(capsys, "--db", db, *args)
        assert code == (2 if args[-1].startswith("x") else 0)
        assert not any(c in out + err for c in "\x1b\x07\x9b"), out + err
    code, out, _ = run(capsys, "--db", db, "quarantine", "list", "--reason", "invalid_field")
    assert "request_id req-\\x1b]0;owned\\x07\\x1b[2J\\x9b" in out and "bad value \\x1b]0;owned" in out


def test_report_table_shows_control_characters_escaped(db, capsys, tmp_path):
    capture = tmp_path / "c.jsonl"
    capture.write_bytes(jsonl([v1_event("esc-1", subscription={"id": f"sub{ESCAPES}", "name": "x"},
                                        deployment=f"dep{ESCAPES}")]))
    assert run(capsys, "--db", db, "replay", str(capture))[0] == 0
    for by in ("subscription", "deployment", "model"):
        code, out, err = run(capsys, "--db", db, "report", "--month", "2026-10", "--by", by)
        assert code == 0, err
        assert not any(c in out for c in "\x1b\x07\x9b"), out
    assert "sub\\x1b]0;owned" in run(capsys, "--db", db, "report", "--month", "2026-10", "--by", "subscription")[1]
    # `rates list` names the models in the data that have no rate: escaped too
    code, out, _ = run(capsys, "--db", db, "rates", "list")
    assert code == 0 and not any(c in out for c in "\x1b\x07\x9b")


def test_retry_that_finds_nothing_says_why(db, capsys, tmp_path):
    capture = tmp_path / "bad.jsonl"
    capture.write_bytes(jsonl([b"not json", encode(v1_event("fine"))]))
    assert run(capsys, "--db", db, "replay", str(capture))[0] == 0
    code, out, err = run(capsys, "--db", db, "quarantine", "retry", "--id", "99999")
    assert code == 2 and out == "" and "no quarantine row has id 99999" in err and err.count("\n") == 1
    code, out, err = run(capsys, "--db", db, "quarantine", "retry", "--reason", "bogus")
    assert code == 2 and "--reason bogus: not a quarantine reason" in err
    code, out, _ = run(capsys, "--db", db, "quarantine", "retry", "--reason", "truncated")
    assert code == 0 and "no unresolved rows with reason truncated (reasons with unresolved rows: not_json)" in out
    code, out, _ = run(capsys, "--db", db, "quarantine", "retry", "--id", "1", "--reason", "truncated")
    assert "row #1 has reason not_json, not truncated" in out
    # a retry that does retry something stays as it was
    code, out, _ = run(capsys, "--db", db, "quarantine", "retry")
    assert out.startswith("retried 1") and "no unresolved" not in out


def test_replay_of_a_folder_names_the_files_it_skips(db, capsys, tmp_path):
    folder = tmp_path / "captures"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jsonl").write_bytes(jsonl([v1_event("one")]))
    (folder / "notes.txt").write_text("not events")
    (folder / "sub" / "events.json").write_bytes(jsonl([v1_event("two")]))  # .json is not read
    code, out, err = run(capsys, "--db", db, "replay", str(folder))
    assert code == 0 and "events read 1" in out
    (line,) = [x for x in err.splitlines() if "skipped" in x]
    assert line.startswith("metering: skipped 2 file(s) not recognised") and "notes.txt" in line and "events.json" in line
    (folder / "notes.txt").unlink()
    (folder / "sub" / "events.json").unlink()
    code, out, err = run(capsys, "--db", db, "replay", str(folder))
    assert "skipped" not in err


def test_report_to_a_terminal_in_any_text_format_shows_control_characters_escaped(db, capsys, tmp_path, monkeypatch):
    import json
    import sys

    capture = tmp_path / "c.jsonl"
    capture.write_bytes(jsonl([v1_event("esc-2", subscription={"id": f"sub{ESCAPES}", "name": "x"})]))
    assert run(capsys, "--db", db, "replay", str(capture))[0] == 0
    # JSON escapes every control character itself, losslessly: the document still holds the stored id
    code, out, _ = run(capsys, "--db", db, "report", "--month", "2026-10", "--by", "subscription", "--format", "json")
    assert code == 0 and not any(c in out for c in "\x1b\x07\x9b")
    assert f"sub{ESCAPES}" in {row["subscription"] for row in json.loads(out)["rows"]}
    # CSV has no escapes: on a terminal it is shown escaped; into a pipe or file it stays as stored
    code, out, _ = run(capsys, "--db", db, "report", "--month", "2026-10", "--by", "subscription", "--format", "csv")
    assert f"sub{ESCAPES}" in out
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, "--db", db, "report", "--month", "2026-10", "--by", "subscription", "--format", "csv")
    assert code == 0 and not any(c in out for c in "\x1b\x07\x9b") and "sub\\x1b]0;owned" in out


def test_ptu_allocate_prints_ids_escaped(db, capsys, tmp_path):
    mappings = tmp_path / "deployments.csv"
    mappings.write_text("backend_id,deployment,model,deployment_type\n,gpt-4o-ptu,gpt-4o,provisioned\n")
    assert run(capsys, "--db", db, "deployments", "import", str(mappings))[0] == 0
    capture = tmp_path / "c.jsonl"
    capture.write_bytes(jsonl([v1_event("ptu-1", deployment="gpt-4o-ptu", subscription={"id": f"sub{ESCAPES}", "name": "x"})]))
    assert run(capsys, "--db", db, "replay", str(capture))[0] == 0
    costs = tmp_path / "ptu.csv"
    costs.write_text("deployment,backend_id,month,monthly_cost,currency\ngpt-4o-ptu,,2026-10,100.00,USD\n")
    code, out, err = run(capsys, "--db", db, "ptu", "allocate", "--month", "2026-10", "--ptu-costs", str(costs))
    assert code == 0, err
    assert "sub\\x1b]0;owned" in out and not any(c in out for c in "\x1b\x07\x9b")
