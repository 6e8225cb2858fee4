"""`metering ptu allocate` puts a month's PTU capacity cost in the database, allocated exactly as
`metering report --ptu-costs` does, and v_chargeback_monthly carries it beside the pay-as-you-go
cost (so Power BI shows the total charge) without counting a request or a token twice."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from cli_runner import run
from db import ptu_allocations
from db.engine import make_engine
from metering.finance.capacity import parse_ptu_costs_csv
from metering.finance.report.options import Period
from metering.finance.report.build import build_report
from report_data import MONTH, PTU_COSTS, db_total, seed

CENT = Decimal("0.01")
COSTS = PTU_COSTS + "gpt-4o-ptu-idle,,2026-10,250.00,USD\ngpt-4o-ptu,aoai-ptu,2026-11,900.00,USD\n"


def _allocate(capsys, db: str, tmp_path, *extra: str):
    costs = tmp_path / "ptu.csv"
    costs.write_text(COSTS)
    return run(capsys, "--db", db, "ptu", "allocate", "--month", MONTH, "--ptu-costs", str(costs), *extra)


def test_allocation_in_the_database_equals_the_report_and_reruns_replace_it(db, tmp_path, capsys):
    engine = make_engine(db)
    seed(engine)
    code, out, err = _allocate(capsys, db, tmp_path)
    assert code == 0, err
    assert "stored 5 allocation(s) for 2026-10: 1250.00 of 2 monthly PTU cost(s)" in out
    assert _allocate(capsys, db, tmp_path)[0] == 0  # again: the month is replaced, nothing doubles
    with engine.connect() as conn:
        stored = ptu_allocations.month_rows(conn, MONTH)
        report = build_report(conn, Period.month(MONTH), ("subscription",), parse_ptu_costs_csv(COSTS))
    assert sum((row["allocated_cost"] for row in stored), Decimal(0)) == Decimal("1250.00")
    assert all(row["allocated_cost"] == row["allocated_cost"].quantize(CENT) for row in stored)  # whole cents
    expected = {row["subscription"]: row["ptu_cost"] for row in report.frame.to_dict("records") if row["ptu_cost"]}
    shown = {row["subscription_id"] or "(unmapped)": row["allocated_cost"] for row in stored}
    assert shown == expected
    assert shown["(unallocated)"] == Decimal("250.00")  # the idle deployment's cost never disappears
    engine.dispose()


def test_the_monthly_view_carries_the_allocation_without_counting_usage_twice(db, tmp_path, capsys):
    engine = make_engine(db)
    seed(engine)
    assert _allocate(capsys, db, tmp_path)[0] == 0
    expected, requests, tokens = db_total(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT business_unit, subscription_id, requests, total_tokens, total_cost, ptu_cost, ptu_deployment "
            "FROM v_chargeback_monthly WHERE month = :m"), {"m": MONTH}).all()
        report = build_report(conn, Period.month(MONTH), ("business_unit",), parse_ptu_costs_csv(COSTS))
    assert sum(int(r.requests) for r in rows) == requests and sum(int(r.total_tokens) for r in rows) == tokens
    cost = sum((Decimal(str(r.total_cost)) for r in rows if r.total_cost is not None), Decimal(0))
    assert abs(cost - expected) < Decimal("0.000001")  # SQLite adds in floats; servers exactly
    by_unit: dict[str, Decimal] = {}
    for r in rows:
        by_unit[r.business_unit] = by_unit.get(r.business_unit, Decimal(0)) + Decimal(str(r.ptu_cost))
    assert {k: v.quantize(CENT) for k, v in by_unit.items() if v} == \
        {r["business_unit"]: r["ptu_cost"] for r in report.frame.to_dict("records") if r["ptu_cost"]}
    assert {r.ptu_deployment for r in rows if r.ptu_deployment} == {"gpt-4o-ptu", "gpt-4o-ptu-idle"}
    engine.dispose()


def test_dry_run_stores_nothing_and_bad_input_is_a_usage_error(db, tmp_path, capsys):
    engine = make_engine(db)
    seed(engine)
    code, out, _ = _allocate(capsys, db, tmp_path, "--dry-run")
    assert code == 0 and "would store 5 allocation(s)" in out
    with engine.connect() as conn:
        assert ptu_allocations.month_rows(conn, MONTH) == []
    costs = tmp_path / "ptu.csv"
    code, _, err = run(capsys, "--db", db, "ptu", "allocate", "--month", "2026-13", "--ptu-costs", str(costs))
    assert code == 2 and "YYYY-MM" in err
    code, _, err = run(capsys, "--db", db, "ptu", "allocate", "--month", "2026-09", "--ptu-costs", str(costs))
    assert code == 2 and "no cost for 2026-09" in err
    engine.dispose()
