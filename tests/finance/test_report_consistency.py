"""Reports never contradict themselves: an unpriced group is an empty cost with a flag, never $0.00,
in every format and in the totals; the terminal table's rounded rows add up to its TOTAL on screen;
the HTML's request counts split the requests without counting PTU twice."""

from __future__ import annotations

import io
import json
import re
from decimal import Decimal

import pytest

from metering.finance.capacity import parse_ptu_costs_csv
from metering.finance.report.options import FORMATS, Period
from metering.finance.report.render import render
from metering.finance.report.build import LABELS, build_report, money
from report_data import MONTH, PTU_COSTS, seed

UNPRICED_MODEL = "mystery-7b"  # report_data: one request of a model without a rate, in sub-legal


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from db.engine import make_engine
    from db.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('consistency') / 'metering.db'}")
    upgrade(engine)
    seed(engine)
    yield engine
    engine.dispose()


def build(engine, dims, ptu=False, period=None):
    with engine.connect() as conn:
        return build_report(conn, period or Period.month(MONTH), dims,
                            parse_ptu_costs_csv(PTU_COSTS) if ptu else None, charts=True)


# --------------------------------------------------------------------------- (a) unpriced is not $0


def _row_cost(fmt: str, content, key_column: str, key: str) -> tuple[object, str]:
    """(the cost cell as the format gives it, the row's flag) for the row whose ``key_column`` is ``key``."""
    if fmt == "csv":
        import pandas as pd

        frame = pd.read_csv(io.StringIO(content), dtype=str, keep_default_na=False).set_index(key_column)
        return frame.loc[key, "cost"], frame.loc[key, "cost_status"]
    if fmt == "json":
        row = next(r for r in json.loads(content)["rows"] if r[key_column] == key)
        return row["cost"], row["cost_status"]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(io.BytesIO(content)).to_pylist()
        row = next(r for r in rows if r[key_column] == key)
        return row["cost"], row["cost_status"]
    if fmt == "xlsx":
        from openpyxl import load_workbook

        rows = list(load_workbook(io.BytesIO(content))["Chargeback"].iter_rows(values_only=True))
        header = list(rows[0])
        row = next(r for r in rows[1:] if r[header.index(LABELS[key_column])] == key)
        return row[header.index(LABELS["cost"])], row[header.index(LABELS["cost_status"])]
    if fmt == "html":
        table = re.search(r'<table class="data">(.*?)</table>', content, re.S).group(1)  # the chargeback table
        row = next(r for r in re.findall(r"<tr>(.*?)</tr>", table, re.S) if f">{key}<" in r)
        cells = re.findall(r"<td([^>]*)>(.*?)</td>", row, re.S)
        cost_attributes, cost = cells[3]  # key, requests, tokens, cost
        return re.sub(r"<[^>]+>", "", cost).strip(), "flag" if "flag" in cost_attributes + cost else ""
    if fmt == "table":
        lines = content.splitlines()
        rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
        spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[rule])]
        header = [lines[rule - 1][a:b].strip() for a, b in spans]
        row = next([line[a:b].strip() for a, b in spans] for line in lines[rule + 1:] if line.startswith(key + " "))
        return row[header.index("cost")], row[header.index("flag")]
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_model_without_a_rate_shows_no_cost_and_a_flag_in_every_format(engine, fmt):
    report = build(engine, ("model",))
    cost, flag = _row_cost(fmt, render(report, fmt), "model", UNPRICED_MODEL)
    assert cost in ("", None, "unpriced"), cost  # never 0, "0", "0.00" or "$0.00"
    assert flag in ("unknown", "cost unknown", "flag"), flag
    priced, priced_flag = _row_cost(fmt, render(report, fmt), "model", "gpt-4o-2024-08-06")
    assert priced_flag in ("complete", "", None)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_partly_unpriced_group_shows_the_priced_cost_and_a_flag(engine, fmt):
    report = build(engine, ("subscription",))
    row = report.frame.set_index("subscription").loc["sub-legal"]
    assert row["unpriced_requests"] == 1 and row["cost"] > 0 and row["cost_status"] == "partial"
    cost, flag = _row_cost(fmt, render(report, fmt), "subscription", "sub-legal")
    if fmt in ("csv", "json"):
        assert Decimal(cost) == row["cost"]
    elif fmt in ("parquet", "xlsx"):
        assert Decimal(str(cost)).quantize(Decimal("0.01")) == row["cost"].quantize(Decimal("0.01"))
    else:
        assert money(row["cost"]) in cost
    assert flag in ("partial", "partly unpriced", "flag"), flag


def test_totals_say_what_the_cost_leaves_out(engine):
    report = build(engine, ("model",))
    total = report.total
    assert total["cost_status"] == "partial" and total["unpriced_requests"] == 2
    table = render(report, "table")
    assert "plus 2 unpriced requests" in table
    html = render(report, "html")
    assert "plus 2 unpriced requests" in html
    assert json.loads(render(report, "json"))["total"]["cost_status"] == "partial"


def test_a_period_with_nothing_priced_has_an_unknown_total_not_zero(sqlite_engine):
    """The request of a model without a rate and a throttled one (zero, known): nothing is priced, so
    the cost is unknown, in the rows and in the total."""
    from events import encode
    from metering.ingest import Ingestor
    from metering.model import RawEvent
    from report_data import events

    chosen = [e for e in events() if e["requestId"] in ("unknown-model", "throttled-1")]
    Ingestor(sqlite_engine).ingest([RawEvent(encode(e)) for e in chosen])
    report = build(sqlite_engine, ("model",))
    assert report.total["requests"] == 2 and report.total["not_billable_requests"] == 1
    assert report.total["cost"] is None and report.total["cost_status"] == "unknown"
    assert json.loads(render(report, "json"))["total"]["cost"] is None
    table = render(report, "table")
    assert "the cost is unknown" in table
    total_line = next(line for line in table.splitlines() if line.startswith("TOTAL"))
    assert "0.00" not in total_line and "cost unknown" in total_line
    assert 'data-cost=""' in render(report, "html")


# --------------------------------------------------------------------------- (b) rows add up on screen


def _table_columns(table: str) -> tuple[list[str], list[list[str]], list[str]]:
    lines = table.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("---")]
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[rules[0]])]
    header = [lines[rules[0] - 1][a:b].strip() for a, b in spans]
    body = [[line[a:b].strip() for a, b in spans] for line in lines[rules[0] + 1:rules[1]]]
    total = [lines[rules[1] + 1][a:b].strip() for a, b in spans]
    return header, body, total


@pytest.mark.parametrize("dims,ptu", [(("business_unit", "subscription"), True), (("day",), False),
                                      (("user",), True), (("deployment",), False)])
def test_table_rows_add_up_to_total_on_screen(engine, dims, ptu):
    table = render(build(engine, dims, ptu), "table")
    header, body, total = _table_columns(table)
    for column in ("cost", "ptu cost", "total charge") if ptu else ("cost",):
        index = header.index(column)
        shown = sum((Decimal(row[index]) for row in body if row[index]), Decimal(0))
        assert shown == Decimal(total[index]), (column, shown, total[index])
    assert "TOTAL is the exact sum, rounded" in table


def test_the_demo_table_adds_up(tmp_path, capsys):
    """`make demo`'s table: its rounded rows summed to 1.87 (4.37 with PTU) under a TOTAL of 1.85
    (4.35); now a "(rounding)" line closes the gap on screen, and the unpriced request is flagged."""
    from pathlib import Path

    from cli_runner import run

    samples = Path(__file__).parents[2] / "samples"
    db = ["--db", f"sqlite:///{tmp_path / 'metering.db'}"]
    for args in (["db", "upgrade"], ["rates", "import", str(samples / "rates.csv")],
                 ["deployments", "import", str(samples / "deployments.csv")],
                 ["subscriptions", "import", str(samples / "subscriptions.csv")],
                 ["replay", str(samples / "events")]):
        assert run(capsys, *db, *args)[0] == 0
    code, table, _ = run(capsys, *db, "report", "--month", "2026-10", "--by", "business_unit,subscription",
                         "--ptu-costs", str(samples / "ptu_costs.csv"))
    assert code == 0
    header, body, total = _table_columns(table)
    assert [row[0] for row in body].count("(rounding)") == 1
    for column in ("cost", "ptu cost", "total charge"):
        index = header.index(column)
        assert sum((Decimal(row[index]) for row in body if row[index]), Decimal(0)) == Decimal(total[index])
    assert total[header.index("flag")] == "partly unpriced"
    assert "plus 1 unpriced request whose cost is unknown" in table


def test_a_rounding_line_appears_exactly_when_the_rows_miss_the_total(engine):
    """The "(rounding)" line is shown when the cents of the rows do not add up to the rounded
    TOTAL, and only then."""
    report = build(engine, ("business_unit", "subscription"), ptu=True)
    exact = [c for c in report.frame["cost"] if c is not None]
    rounded_rows = sum((Decimal(money(c)) for c in exact), Decimal(0))
    table = render(report, "table")
    _, body, _ = _table_columns(table)
    if rounded_rows != Decimal(money(report.total["cost"])):
        assert any(row[0] == "(rounding)" for row in body)
    else:
        assert not any(row[0] == "(rounding)" for row in body)


# --------------------------------------------------------------------------- (c) HTML request counts


@pytest.mark.parametrize("ptu", [False, True])
def test_html_request_counts_partition_the_requests(engine, ptu):
    report = build(engine, ("business_unit",), ptu)
    html = render(report, "html")
    text = re.sub(r"<[^>]+>", " ", html)
    assert "(throttled, failed, PTU)" not in text and "billable (PTU included)" not in text
    q = report.quality
    # One definition in every format (requests_sentence): "not billable" is every request without a
    # per-token charge — PTU and throttled or failed — the count the table, CSV and XLSX show.
    sentences = re.findall(r"([\d,]+) billable pay-as-you-go, ([\d,]+) not billable per token \(([\d,]+) PTU, "
                           r"([\d,]+) throttled or failed\)", text)
    assert len(sentences) == 2, "the partition is shown in the KPI and in the data-quality summary"
    for sentence in sentences:
        payg, not_billable, provisioned, failed = (int(n.replace(",", "")) for n in sentence)
        assert payg + not_billable == q["requests"] and not_billable == q["not_billable_requests"]
        assert provisioned == q["provisioned_requests"] == 6
        assert failed == 1  # the throttled request
    assert f"{q['not_billable_requests']:,} not billable per token" in render(report, "table")
