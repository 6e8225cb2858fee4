"""`metering export powerbi --month M --output DIR` writes what the Power BI project reads with its
Source parameter set to "Parquet": one file per table the model imports, with exactly the columns
(and types) the TMDL declares, and figures that are the stored ones, to the last decimal: the same
pay-as-you-go cost as `metering report`, the same PTU cost as `metering ptu allocate`, and final
charges that are `metering true-up`'s and add up to the demo bill. Runs on the demo data (make demo,
with the true-up), on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from cli_runner import run
from conftest import _reset_postgres
from metering.cli import main
from tmdl import read_model

REPO = Path(__file__).parents[2]
MODEL = read_model(REPO / "powerbi" / "AzureOpenAIChargeback.SemanticModel" / "definition")
MONTH = "2026-10"
SAMPLES = REPO / "samples"
CALENDARS = ("Date", "Month")
ARROW = {"string": (pa.string(),), "int64": (pa.int64(),), "decimal": (pa.decimal128(28, 12),),
         "dateTime": (pa.date32(), pa.timestamp("us"))}


def quietly(*args: str) -> tuple[int, str, str]:
    """``metering ARGS...`` in process, for a module-scoped fixture (capsys is per test)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def demo(url: str) -> dict[str, str]:
    """`make demo` and the true-up, in process; the outputs finance reads."""
    outputs = {}
    for name, *args in (
        ("upgrade", "db", "upgrade"),
        ("rates", "rates", "import", str(SAMPLES / "rates.csv")),
        ("deployments", "deployments", "import", str(SAMPLES / "deployments.csv")),
        ("subscriptions", "subscriptions", "import", str(SAMPLES / "subscriptions.csv")),
        ("replay", "replay", str(SAMPLES / "events")),
        ("backends", "backends", "import", str(SAMPLES / "backends.csv")),
        ("bill", "bill", "import", str(SAMPLES / f"bill-{MONTH}.focus.csv")),
        ("ptu", "ptu", "allocate", "--month", MONTH, "--ptu-costs", str(SAMPLES / "ptu_costs.csv")),
        ("true-up", "true-up", "--month", MONTH),
        ("report", "report", "--month", MONTH, "--format", "json"),
    ):
        code, out, err = quietly("--db", url, *args)
        assert code == 0, (name, err)
        outputs[name] = out
    return outputs


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def exported(request, tmp_path_factory):
    """(database URL, the commands' outputs, the export folder, the export's output) of the demo month."""
    folder = tmp_path_factory.mktemp("powerbi")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'metering.db'}"
    else:
        url = request.getfixturevalue("postgres_server_url")
        _reset_postgres(url)
    outputs = demo(url)
    code, out, err = quietly("--db", url, "export", "powerbi", "--month", MONTH, "--output", str(folder / "out"))
    assert code == 0, err
    return url, outputs, folder / "out", out


def imported_tables() -> dict:
    return {name: table for name, table in MODEL.tables.items() if table.partition_kind == "m" and name not in CALENDARS}


def read(folder: Path, table: str) -> pa.Table:
    return pq.read_table(folder / f"{table}.parquet")


def test_one_file_per_table_the_model_reads_with_the_columns_the_tmdl_declares(exported):
    _, _, folder, _ = exported
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name}.parquet" for name in imported_tables())
    for name, table in imported_tables().items():
        schema = read(folder, name).schema
        declared = {str(p["sourceColumn"]): str(p["dataType"]) for p in table.columns.values() if "expression" not in p}
        assert sorted(schema.names) == sorted(declared), name
        for column, data_type in declared.items():
            assert schema.field(column).type in ARROW[data_type], (name, column, schema.field(column).type, data_type)


def test_the_figures_are_the_stored_ones_to_the_last_decimal(exported):
    """One number: pay-as-you-go cost as `metering report` prints it (exact, not float), PTU cost as
    allocated, final charges as `metering true-up` stored them, adding up to the bill."""
    url, outputs, folder, export_out = exported
    report = json.loads(outputs["report"])
    usage = read(folder, "v_usage_daily").to_pylist()
    chargeback = read(folder, "v_chargeback_monthly").to_pylist()
    assert sum((r["total_cost"] or Decimal(0) for r in usage), Decimal(0)) == Decimal(report["total"]["cost"])
    assert sum((r["total_cost"] or Decimal(0) for r in chargeback), Decimal(0)) == Decimal(report["total"]["cost"])
    assert sum(r["requests"] for r in usage) == report["total"]["requests"] == sum(r["requests"] for r in chargeback)
    assert all(r["usage_month"] == MONTH for r in usage) and all(r["month"] == MONTH for r in chargeback)

    from db.true_up import month_rows

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        stored = month_rows(conn, MONTH)
        allocated = conn.execute(sa.text("SELECT allocated_cost FROM ptu_allocations WHERE month = :m"), {"m": MONTH})
        ptu = sum((Decimal(str(v)) for v, in allocated), Decimal(0))
    engine.dispose()
    assert ptu == Decimal("2.50")
    assert sum((r["ptu_cost"] for r in chargeback), Decimal(0)) == ptu

    expected: dict[str | None, Decimal] = defaultdict(Decimal)
    for line in stored:
        expected[line["subscription_id"]] += Decimal(str(line["final_charge"]))
    true_up = read(folder, "v_true_up_monthly").to_pylist()
    assert {r["subscription_id"]: r["final_charge"] for r in true_up} == dict(expected)
    assert all(r["final_charge"] == r["final_charge"].quantize(Decimal("0.01")) for r in true_up)  # whole cents
    billed = sum((r["cost"] for r in read(folder, "v_bill_daily").to_pylist()), Decimal(0))
    total = sum((r["final_charge"] for r in true_up), Decimal(0))
    assert total == billed.quantize(Decimal("0.01")) == Decimal("8.48")
    # The same four figures as `metering true-up` prints.
    headline = next(line for line in outputs["true-up"].splitlines() if line.startswith("stored")).split(": ", 1)[1]
    assert headline in export_out
    assert sum(r["ptu_cost"] for r in true_up) == ptu


def test_ptu_rows_of_the_chargeback_view_carry_their_subscription_name_and_a_numeric_cost(exported):
    url, _, folder, _ = exported
    rows = [r for r in read(folder, "v_chargeback_monthly").to_pylist() if r["ptu_deployment"] is not None]
    assert rows and all(r["subscription_name"] for r in rows if r["subscription_id"] != "(unallocated)")
    names = {r["subscription_id"]: r["subscription_name"] for r in read(folder, "v_usage_daily").to_pylist()}
    assert all(r["subscription_name"] == names[r["subscription_id"]] for r in rows)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        values = conn.execute(sa.text("SELECT ptu_cost FROM v_chargeback_monthly")).scalars().all()
    engine.dispose()
    assert values and all(isinstance(v, (int, float, Decimal)) for v in values)  # a number, never text


def test_a_bad_month_or_output_is_one_line_and_leaves_nothing(capsys, tmp_path, exported):
    url = exported[0]
    code, _, err = run(capsys, "--db", url, "export", "powerbi", "--month", "2026-13", "--output", str(tmp_path / "x"))
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "x").exists()
    (tmp_path / "file").write_text("")
    code, _, err = run(capsys, "--db", url, "export", "powerbi", "--month", MONTH, "--output", str(tmp_path / "file"))
    assert code == 2 and "not a folder" in err and (tmp_path / "file").read_text() == ""


def test_a_month_without_a_true_up_is_exported_with_a_warning(capsys, tmp_path, exported):
    url = exported[0]
    code, out, err = run(capsys, "--db", url, "export", "powerbi", "--month", "2026-09", "--output", str(tmp_path / "o"))
    assert code == 0 and "no stored true-up for 2026-09" in err
    assert read(tmp_path / "o", "v_true_up_monthly").num_rows == 0
    assert read(tmp_path / "o", "subscriptions").num_rows > 0  # the dimensions are whole


def test_the_rules_that_need_the_data_hold_on_the_demo_export(exported):
    """The four Best Practice Analyzer rules the TMDL cannot decide (they read VertiPaq statistics of
    a refreshed model), on the rows the model loads from the demo export: every fact row finds its
    day and month (referential integrity), no date carries a time, no table is large."""
    import bpa

    _, _, folder, _ = exported
    rows = {name: read(folder, name).to_pylist() for name in imported_tables()}
    for rule, check in bpa.DATA_RULES.items():
        assert not check(MODEL, rows), rule
    broken = dict(rows, v_true_up_monthly=rows["v_true_up_monthly"] + [dict(rows["v_true_up_monthly"][0], month="2031-01")])
    assert bpa.DATA_RULES["FIX_REFERENTIAL_INTEGRITY_VIOLATIONS"](MODEL, broken) == []  # the calendar follows it
    broken = dict(rows, v_usage_daily=rows["v_usage_daily"] + [dict(rows["v_usage_daily"][0], usage_month="2031-01")])
    assert bpa.DATA_RULES["FIX_REFERENTIAL_INTEGRITY_VIOLATIONS"](MODEL, broken)  # a month the days do not have
