"""Every report survives any row already stored: rows dated 0001-01-01 and 9999-12-31 (stored before
ingest bounded event times, or written by hand) break no report format, no FOCUS export, and a
month past the calendar's end is a one-line message (issue 13, item 4; SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cli_runner import run
from db.engine import make_engine
from db.store import store_batch
from events import encode, v1_event
from metering.model import RawEvent
from metering.pipeline import process_batch
from metering.price.pricing import RateCard
from report_data import seed

ROOT = Path(__file__).resolve().parents[2]
EXTREMES = {"dawn-of-time": datetime(1, 1, 1, tzinfo=timezone.utc),
            "end-of-time": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)}


@pytest.fixture
def extreme_db(db: str) -> str:
    """The report data plus two rows at the ends of the calendar, inserted past the pipeline's checks."""
    engine = make_engine(db)
    seed(engine)
    outcome = process_batch([RawEvent(encode(v1_event(request_id))) for request_id in EXTREMES], RateCard([], []))
    outcome.records = [replace(r, event_time=EXTREMES[r.request_id]) for r in outcome.records]
    with engine.begin() as conn:
        store_batch(conn, outcome)
    engine.dispose()
    return db


FORMATS = [
    ["--format", "table"], ["--format", "csv"], ["--format", "json"], ["--by", "day,model", "--format", "csv"],
    ["--by", "month,day", "--format", "table"], ["--format", "html"], ["--format", "html", "--by", "day"],
    ["--format", "xlsx"],
    ["--format", "parquet"], ["--format", "html", "--ptu-costs", str(ROOT / "samples" / "ptu_costs.csv")],
]


@pytest.mark.parametrize("options", FORMATS, ids=lambda o: " ".join(o[:4]).replace(str(ROOT) + "/", ""))
def test_every_report_format_over_all_time(extreme_db, capsys, tmp_path, options):
    fmt = options[options.index("--format") + 1] if "--format" in options else "txt"
    output = tmp_path / f"report.{'txt' if fmt == 'table' else fmt}"  # an extension that names no format is refused
    code, out, err = run(capsys, "--db", extreme_db, "report", *options, "--output", str(output))
    assert (code, err) == (0, "")
    assert output.stat().st_size > 0


@pytest.mark.parametrize("period", [["--month", "0001-01"], ["--month", "9999-11"], ["--since", "9999-12-30"],
                                    ["--since", "0001-01-01", "--until", "0001-01-31"], ["--month", "2026-10"]])
def test_reports_and_focus_of_the_months_at_the_ends(extreme_db, capsys, tmp_path, period):
    for command in (["report", "--format", "html", "--output", str(tmp_path / "r.html")],
                    ["report", "--by", "day,subscription", "--format", "csv"]):
        code, _, err = run(capsys, "--db", extreme_db, *command, *period)
        assert (code, err) == (0, "")
    if period[0] == "--month":
        code, _, err = run(capsys, "--db", extreme_db, "export", "focus", *period, "--output", str(tmp_path / "f.csv"))
        # Unpriced usage cannot be a FOCUS row: the export says so (a warning), and nothing else.
        assert code == 0 and all(line.startswith("warning: ") for line in err.splitlines())


@pytest.mark.parametrize("args", [["report", "--month", "9999-12"], ["export", "focus", "--month", "9999-12"],
                                  ["report", "--since", "9999-12-31", "--until", "9999-12-31"],
                                  ["report", "--since", "0001-01-01T00:00:00+05:00"]])
def test_a_period_past_the_calendar_is_a_one_line_message(extreme_db, capsys, tmp_path, args):
    code, out, err = run(capsys, "--db", extreme_db, *args, "--output", str(tmp_path / "x.csv"))
    assert code == 2 and out == "" and err.startswith("metering: ") and err.count("\n") == 1
    assert "out of range" in err
