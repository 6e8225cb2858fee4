"""`metering report` in every format and grouping: the totals read back from each file equal
SUM(total_cost) over usage_records for the period, to the cent (exactly where the format is exact);
data quality is in every format; unmapped subscriptions never vanish; PTU cost is shown apart."""

from __future__ import annotations

import io
import json
import re
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from conftest import POSTGRES_URL, _postgres_admin
from db.engine import make_engine
from db.migrate import upgrade
from db.queries import DIMENSIONS, UNMAPPED
from db.schema import usage_records
from cli_runner import run
from metering.cli import main
from metering.finance.capacity import parse_ptu_costs_csv
from metering.finance.report.render import render
from metering.finance.report.options import DEFAULT_DIMENSIONS, FORMATS, Period
from metering.finance.report.build import LABELS, build_report, money
from report_data import MONTH, PTU_COSTS, db_total, seed

GROUPINGS = [(d,) for d in DIMENSIONS] + [
    ("business_unit", "subscription"),
    DEFAULT_DIMENSIONS,
    ("day", "model"),
    ("cost_center", "user", "deployment"),
    (),
]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def seeded(request, tmp_path_factory):
    """One seeded database per backend for the whole module (its own PostgreSQL database)."""
    admin = name = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('reports') / 'metering.db'}"
    else:
        admin = _postgres_admin()
        if admin is None:
            pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")
        name = f"metering_reports_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    seed(engine)
    yield engine
    engine.dispose()
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


_reports: dict = {}


def report_for(engine, dims, ptu: bool = False):
    key = (str(engine.url), dims, ptu)
    if key not in _reports:
        costs = parse_ptu_costs_csv(PTU_COSTS) if ptu else None
        with engine.connect() as conn:
            _reports[key] = build_report(conn, Period.month(MONTH), dims, costs, charts=True)
    return _reports[key]


# --------------------------------------------------------------------------- reading files back


def read_back(fmt: str, content, dims) -> dict:
    """Total cost, requests and tokens as each format shows them; ``rows`` = sum of the row costs.
    ``exact``: the format carries exact decimals (else cents)."""
    if fmt == "csv":
        import pandas as pd

        frame = pd.read_csv(io.StringIO(content), dtype=str, keep_default_na=False)
        costs = [Decimal(c) for c in frame["cost"] if c]  # empty: unknown (all unpriced), not $0
        total = sum(costs, Decimal(0))
        return {"cost": total, "rows": total, "requests": sum(int(r) for r in frame["requests"]),
                "tokens": sum(int(t) for t in frame["total_tokens"]), "exact": True}
    if fmt == "json":
        doc = json.loads(content)
        return {"cost": Decimal(doc["total"]["cost"]),
                "rows": sum((Decimal(r["cost"]) for r in doc["rows"] if r["cost"] is not None), Decimal(0)),
                "requests": doc["total"]["requests"], "tokens": doc["total"]["total_tokens"], "exact": True}
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(content))
        costs = [c for c in table.column("cost").to_pylist() if c is not None]
        assert all(isinstance(c, Decimal) for c in costs)
        total = sum(costs, Decimal(0))
        return {"cost": total, "rows": total, "requests": sum(table.column("requests").to_pylist()),
                "tokens": sum(table.column("total_tokens").to_pylist()), "exact": True}
    if fmt == "xlsx":
        from openpyxl import load_workbook

        book = load_workbook(io.BytesIO(content))
        rows = list(book["Chargeback"].iter_rows(values_only=True))
        header = list(rows[0])
        cost, requests, tokens = (header.index(LABELS[c]) for c in ("cost", "requests", "total_tokens"))
        body, total = rows[1:-1], rows[-1]
        assert all(isinstance(r[cost], (int, float)) for r in body + [total] if r[cost] is not None)  # numbers, not text
        summary = {r[0]: r[1] for r in book["Summary"].iter_rows(values_only=True) if r and r[0]}
        assert Decimal(str(summary["Pay-as-you-go cost"])).quantize(Decimal("0.01")) == \
            Decimal(str(total[cost])).quantize(Decimal("0.01"))
        return {"cost": Decimal(str(total[cost])), "rows": Decimal(str(sum(r[cost] for r in body if r[cost] is not None))),
                "requests": total[requests], "tokens": total[tokens], "exact": False}
    if fmt == "html":
        row = re.search(r'<tr class="total"([^>]*)>(.*?)</tr>', content, re.S)
        attributes = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', row.group(1)))
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(2), re.S)
        first = 1 if dims else 0
        shown = re.sub(r"\s*<span class=\"flag\".*", "", cells[first + 2])  # "+ unpriced": the flag, not money
        assert shown == "$" + money(Decimal(attributes["cost"])), shown  # what people read: the cents
        return {"cost": Decimal(attributes["cost"]), "rows": None, "requests": int(cells[first].replace(",", "")),
                "tokens": int(cells[first + 1].replace(",", "")), "exact": True}
    if fmt == "table":
        lines = content.splitlines()
        rules = [i for i, line in enumerate(lines) if line.startswith("---")]
        spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[rules[0]])]
        header = [lines[rules[0] - 1][a:b].strip() for a, b in spans]
        total = [lines[rules[1] + 1][a:b].strip() for a, b in spans]
        body = [[line[a:b].strip() for a, b in spans] for line in lines[rules[0] + 1:rules[1]]]
        cost = header.index("cost")
        # Rows (and the "(rounding)" line) as shown; an empty cost is unknown, not zero.
        return {"cost": Decimal(total[cost]), "rows": sum((Decimal(r[cost]) for r in body if r[cost]), Decimal(0)),
                "requests": int(total[header.index("requests")].replace(",", "")),
                "tokens": int(total[header.index("total tokens")].replace(",", "")), "exact": False}
    raise AssertionError(fmt)


@pytest.mark.parametrize("dims", GROUPINGS, ids=lambda d: ",".join(d) or "total")
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_and_grouping_adds_up_to_the_database(seeded, fmt, dims):
    expected, requests, tokens = db_total(seeded)
    report = report_for(seeded, dims)
    shown = read_back(fmt, render(report, fmt), dims)
    assert money(shown["cost"]) == money(expected)
    assert (shown["requests"], shown["tokens"]) == (requests, tokens)
    if shown["exact"]:
        assert shown["cost"] == expected
    if shown["rows"] is not None:  # no group lost or counted twice
        if shown["exact"] or fmt == "xlsx":
            assert money(shown["rows"]) == money(expected)
        if fmt in ("csv", "json", "parquet"):
            assert shown["rows"] == expected


@pytest.mark.parametrize("fmt", FORMATS)
def test_ptu_cost_is_shown_apart_and_adds_up_exactly(seeded, fmt):
    expected, _, _ = db_total(seeded)
    for dims in (("business_unit",), ("subscription", "day"), ("model",), ()):
        report = report_for(seeded, dims, ptu=True)
        shown = read_back(fmt, render(report, fmt), dims)
        assert money(shown["cost"]) == money(expected)  # pay-as-you-go unchanged by PTU
        total = report.total
        assert total["ptu_cost"] == Decimal("1000.00")
        assert total["total_charge"] == total["cost"] + Decimal("1000.00")
        assert sum((p["ptu_cost"] for p in report.ptu), Decimal(0)) == Decimal("1000.00")


# --------------------------------------------------------------------------- data quality


def test_data_quality_counts(seeded):
    q = report_for(seeded, ("business_unit",)).quality
    assert q["estimated_requests"] == 6 and q["estimated_tokens"] > 0
    # The throttled request has no usage but is not billable: not incomplete. The one without usage is.
    assert q["incomplete_requests"] == 1
    assert q["unpriced_requests"] == 2  # mystery-7b (no_rate) and the request without usage (no_usage)
    assert q["unpriced_tokens"] == 1500
    assert q["not_billable_requests"] == 7  # 6 PTU + 1 throttled
    assert q["provisioned_requests"] == 6


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_shows_data_quality(seeded, fmt):
    report = report_for(seeded, ("business_unit",))
    content = render(report, fmt)
    if fmt in ("csv", "table"):
        for word in ("estimated", "incomplete" if fmt == "csv" else "partial or no usage", "unpriced"):
            assert word in content
    elif fmt == "json":
        quality = json.loads(content)["data_quality"]
        assert (quality["estimated_requests"], quality["incomplete_requests"], quality["unpriced_requests"]) == (6, 1, 2)
        assert quality["models_without_rate"][0]["model"] == "mystery-7b"
    elif fmt == "xlsx":
        from openpyxl import load_workbook

        book = load_workbook(io.BytesIO(content))
        assert book.sheetnames[:3] == ["Summary", "Chargeback", "Data quality"]
        cells = {r[0]: r[1] for r in book["Data quality"].iter_rows(values_only=True) if r and r[0]}
        assert (cells["Estimated"], cells["Incomplete"], cells["Unpriced"]) == (6, 1, 2)
        assert "mystery-7b" in cells
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        metadata = pq.read_table(io.BytesIO(content)).schema.metadata
        assert json.loads(metadata[b"data_quality"])["unpriced_requests"] == 2
    elif fmt == "html":
        assert "Data quality" in content and "mystery-7b" in content and "sub-lab" in content


# --------------------------------------------------------------------------- unmapped subscriptions


def test_unmapped_subscriptions_never_vanish(seeded):
    with seeded.connect() as conn:
        rows = conn.execute(sa.select(usage_records.c.subscription_id, usage_records.c.total_cost).where(
            usage_records.c.event_time >= Period.month(MONTH).since,
            usage_records.c.event_time < Period.month(MONTH).until)).all()
    unmapped = [r for r in rows if r.subscription_id in (None, "sub-lab")]
    unmapped_cost = sum((r.total_cost for r in unmapped if r.total_cost is not None), Decimal(0))
    by_unit = report_for(seeded, ("business_unit",)).frame.set_index("business_unit")
    assert by_unit.loc[UNMAPPED, "requests"] == len(unmapped) >= 2
    assert by_unit.loc[UNMAPPED, "cost"] == unmapped_cost
    by_subscription = report_for(seeded, ("business_unit", "subscription")).frame
    lab = by_subscription[by_subscription["subscription"] == "sub-lab"]
    assert list(lab["business_unit"]) == [UNMAPPED]
    assert UNMAPPED in set(by_subscription["subscription"])  # the request with no subscription at all
    # The Power BI view keeps them too.
    with seeded.connect() as conn:
        view = conn.execute(sa.text("SELECT SUM(requests) FROM v_chargeback_monthly WHERE month = :m"), {"m": MONTH}).scalar()
        view_unmapped = conn.execute(sa.text(
            "SELECT SUM(requests) FROM v_chargeback_monthly WHERE month = :m AND business_unit = '(unmapped)'"),
            {"m": MONTH}).scalar()
    assert (int(view), int(view_unmapped)) == (len(rows), len(unmapped))


def test_unmapped_note_tells_what_to_do(seeded):
    report = report_for(seeded, ("business_unit",))
    # rows with no subscription at all are not a subscription called (unmapped): they get their own note
    assert report.quality["unmapped_subscriptions"] == ["sub-lab"]
    assert any("metering subscriptions import" in note and UNMAPPED + "," not in note for note in report.notes)
    assert any("with no subscription" in note and "batch import --subscription" in note for note in report.notes)


# --------------------------------------------------------------------------- periods


def test_since_until_is_inclusive_and_matches_the_database(seeded):
    from datetime import datetime, timezone

    period = Period.between("2026-10-10", "2026-10-20")
    with seeded.connect() as conn:
        report = build_report(conn, period, ("day",))
    expected, requests, _ = db_total(seeded, datetime(2026, 10, 10, tzinfo=timezone.utc), datetime(2026, 10, 21, tzinfo=timezone.utc))
    assert report.total["cost"] == expected and report.total["requests"] == requests
    assert set(report.frame["day"]) <= {f"2026-10-{d}" for d in range(10, 21)}


def test_a_period_that_cuts_a_month_leaves_its_ptu_cost_out_and_says_so(seeded):
    with seeded.connect() as conn:
        report = build_report(conn, Period.between("2026-10-15", "2026-11-30"), ("subscription",),
                              parse_ptu_costs_csv(PTU_COSTS))
    assert report.total["ptu_cost"] == 0
    assert any("covers only part of that month" in note for note in report.notes)


def test_an_unused_ptu_is_charged_to_unallocated(seeded):
    costs = parse_ptu_costs_csv(PTU_COSTS + "gpt-4o-ptu-idle,,2026-10,250.00,USD\n")
    with seeded.connect() as conn:
        report = build_report(conn, Period.month(MONTH), ("business_unit",), costs)
    frame = report.frame.set_index("business_unit")
    assert frame.loc["(unallocated)", "ptu_cost"] == Decimal("250.00")
    assert report.total["ptu_cost"] == Decimal("1250.00")


def test_no_usage_renders_in_every_format(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    upgrade(engine)
    with engine.connect() as conn:
        report = build_report(conn, Period.month(MONTH), ("business_unit",), parse_ptu_costs_csv(PTU_COSTS), charts=True)
    for fmt in FORMATS:
        assert render(report, fmt)
    assert report.total["cost"] == 0 and report.total["ptu_cost"] == Decimal("1000.00")  # idle all month
    engine.dispose()


# --------------------------------------------------------------------------- the command


@pytest.fixture
def seeded_sqlite(sqlite_engine):
    seed(sqlite_engine)
    return sqlite_engine


def test_report_command_writes_each_format(seeded_sqlite, tmp_path, capsys):
    seeded = seeded_sqlite
    ptu = tmp_path / "ptu.csv"
    ptu.write_text(PTU_COSTS)
    expected, _, _ = db_total(seeded)
    for fmt in FORMATS:
        out = tmp_path / f"report.{fmt}"
        code = main(["--db", seeded.url.render_as_string(hide_password=False), "report", "--month", MONTH, "--by", "business_unit,model",
                     "--format", fmt, "--output", str(out), "--ptu-costs", str(ptu)])
        assert code == 0, capsys.readouterr().err
        content = out.read_bytes() if fmt in ("xlsx", "parquet") else out.read_text(encoding="utf-8")
        assert money(read_back(fmt, content, ("business_unit", "model"))["cost"]) == money(expected)
    assert "wrote" in capsys.readouterr().out


def test_report_command_errors(seeded_sqlite, tmp_path, capsys):
    db = str(seeded_sqlite.url)
    assert main(["--db", db, "report", "--month", MONTH, "--format", "xlsx"]) == 2
    assert "--output" in capsys.readouterr().err
    bad = tmp_path / "ptu.csv"
    bad.write_text("deployment,backend_id,month,monthly_cost,currency\ngpt-4o-ptu,,2026-13,lots,usd\n")
    assert main(["--db", db, "report", "--month", MONTH, "--ptu-costs", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "YYYY-MM" in err and "'lots'" in err and "three-letter" in err
    assert main(["--db", db, "report", "--month", MONTH, "--ptu-costs", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_table_always_has_a_data_quality_line(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["--db", db, "db", "upgrade"]) == 0
    assert main(["--db", db, "report", "--month", MONTH]) == 0
    assert "data quality:" in capsys.readouterr().out


def test_sample_ptu_costs_file_parses():
    costs = parse_ptu_costs_csv((Path(__file__).parents[2] / "samples" / "ptu_costs.csv").read_text())
    assert costs and all(c.monthly_cost > 0 for c in costs)


@pytest.mark.parametrize("dialect", ["mssql", "postgresql", "sqlite"])
def test_dimensions_have_no_bound_parameters(dialect):
    """SQL Server sends parameters as ``?``: an expression with one in both SELECT and GROUP BY is two
    different expressions to it. Constants are written into the SQL instead."""
    from sqlalchemy.dialects import mssql, postgresql, sqlite

    from db.queries import dimension_columns

    compiler = {"mssql": mssql, "postgresql": postgresql, "sqlite": sqlite}[dialect].dialect()
    for name, expression in dimension_columns(dialect).items():
        assert expression.compile(dialect=compiler).params == {}, name


def test_fixed_costs_of_other_kinds_are_shown_by_kind_in_every_format(seeded_sqlite, tmp_path, capsys):
    """gpt-4.1 (pay-as-you-go, priced per token) also has a monthly hosting cost: it is allocated by
    the deployment's tokens and shown with its kind next to the PTU cost."""
    costs = tmp_path / "fixed.csv"
    costs.write_text(PTU_COSTS.replace("currency\n", "currency,kind\n").replace("USD\n", "USD,\n")
                     + ",".join(["gpt-4.1", "", MONTH, "60.00", "USD", "fine_tune_hosting"]) + "\n")
    with seeded_sqlite.connect() as conn:
        report = build_report(conn, Period.month(MONTH), ("subscription",), parse_ptu_costs_csv(costs.read_text()))
    assert report.total["ptu_cost"] == Decimal("1060.00")
    hosting = [p for p in report.ptu if p["kind"] == "fine_tune_hosting"]
    assert sum((p["ptu_cost"] for p in hosting), Decimal(0)) == Decimal("60.00") and len(hosting) == 4  # the 4 subscriptions that used gpt-4.1
    url = seeded_sqlite.url.render_as_string(hide_password=False)
    code, out, _ = run(capsys, "--db", url, "report", "--month", MONTH, "--ptu-costs", str(costs))
    assert code == 0 and "gpt-4.1 (fine_tune_hosting)" in out
    code, out, _ = run(capsys, "--db", url, "report", "--month", MONTH, "--ptu-costs", str(costs), "--format", "json")
    assert {p["kind"] for p in json.loads(out)["ptu_allocation"]} == {"provisioned", "fine_tune_hosting"}
