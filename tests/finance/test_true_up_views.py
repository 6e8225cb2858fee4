"""The Power BI views of migration 0010: ``v_true_up_monthly`` sums the stored true-up per month ×
subscription exactly (also on SQLite, whose numbers are floats) and ``v_bill_daily`` shows the
imported bill lines with their month."""

from __future__ import annotations

import random
from datetime import date, datetime, timezone
from decimal import Decimal

import sqlalchemy as sa

from db.schema import bill_lines, subscriptions, true_up_allocations

AT = datetime(2026, 11, 2, 8, tzinfo=timezone.utc)
MONEY = ("metered_cost", "ptu_cost", "adjustment", "final_charge")


def _row(month, subscription, meter, metered, ptu, adjustment, final):
    return {"month": month, "subscription_id": subscription, "subscription_name": subscription and subscription.upper(),
            "resource_id": "/subscriptions/x/accounts/aoai-eastus", "meter": meter, "tokens": 1000,
            "metered_cost": metered, "ptu_cost": ptu, "adjustment": adjustment, "final_charge": final,
            "currency": "USD", "rule": "token_share", "computed_at": AT}


def test_true_up_view_sums_exactly_per_subscription_with_the_unattributed_row(engine):
    rng = random.Random(25)
    rows, expected = [], {}
    for subscription in ("sub-a", "sub-b", None):
        for index in range(40):
            metered = Decimal(rng.randint(0, 10 ** 14)) / Decimal(10 ** 12)  # up to 100 with 12 decimals
            adjustment = Decimal(rng.randint(-10 ** 13, 10 ** 13)) / Decimal(10 ** 12)
            final = (metered + adjustment).quantize(Decimal("0.01"))
            adjustment = final - metered
            row = _row("2026-10", subscription, f"meter {index}", metered, Decimal(0), adjustment, final)
            rows.append(row)
            totals = expected.setdefault(subscription, dict.fromkeys(MONEY, Decimal(0)))
            for name in MONEY:
                totals[name] += row[name]
    rows.append(_row("2026-10", "sub-b", "tiny", Decimal("0.000000000001"), Decimal("-0.5"),
                     Decimal("0.499999999999"), Decimal("0")))
    expected["sub-b"]["metered_cost"] += Decimal("0.000000000001")
    expected["sub-b"]["ptu_cost"] += Decimal("-0.5")
    expected["sub-b"]["adjustment"] += Decimal("0.499999999999")
    rows.append(_row("2026-09", "sub-a", "other month", Decimal("1"), Decimal(0), Decimal(0), Decimal("1")))
    with engine.begin() as conn:
        conn.execute(subscriptions.insert(), [{"subscription_id": "sub-a", "business_unit": "Retail",
                                               "cost_center": "CC-1", "owner": None}])
        conn.execute(true_up_allocations.insert(), rows)
    with engine.connect() as conn:
        view = conn.execute(sa.text(
            "SELECT subscription_id, subscription_name, business_unit, cost_center, metered_cost, ptu_cost, "
            "adjustment, final_charge, currency FROM v_true_up_monthly WHERE month = '2026-10'")).all()
    assert len(view) == 3
    by_subscription = {row.subscription_id: row for row in view}
    for subscription, totals in expected.items():
        row = by_subscription[subscription]
        for name in MONEY:
            value = getattr(row, name)
            assert isinstance(value, (str, Decimal)), name  # never a float
            assert Decimal(str(value)) == totals[name], (subscription, name)
        assert row.currency == "USD"
    assert (by_subscription["sub-a"].business_unit, by_subscription["sub-a"].cost_center) == ("Retail", "CC-1")
    assert by_subscription["sub-b"].business_unit == "(unmapped)"  # not in the subscriptions table
    assert by_subscription[None].business_unit == "(unattributed)" and by_subscription[None].subscription_name is None
    assert by_subscription["sub-a"].subscription_name == "SUB-A"


def test_bill_view_shows_every_line_with_its_month_and_service_tier(engine):
    line = {"resource_id": "/subscriptions/x/accounts/aoai-eastus", "meter_category": "Foundry Models",
            "meter_subcategory": "Azure OpenAI", "model": "gpt-4o", "token_kind": "input",
            "deployment_type": "global", "quantity": Decimal("1.5"), "unit": "1K", "tokens": 1500,
            "cost": Decimal("0.00375"), "currency": "USD", "source_format": "focus", "imported_at": AT}
    with engine.begin() as conn:
        conn.execute(bill_lines.insert(), [
            {**line, "day": date(2026, 10, 31), "meter_name": "gpt 4o 0806 Inp glbl Tokens", "service_tier": None},
            {**line, "day": date(2026, 11, 1), "meter_name": "gpt 4o pp Inp glbl Tokens", "service_tier": "priority"},
        ])
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT day, month, meter_name, service_tier, tokens, cost, currency, quantity "
                                    "FROM v_bill_daily ORDER BY day")).all()
    assert [(str(r.day)[:10], r.month, r.service_tier) for r in rows] == [
        ("2026-10-31", "2026-10", None), ("2026-11-01", "2026-11", "priority")]
    assert all(Decimal(str(r.cost)) == Decimal("0.00375") and r.tokens == 1500 for r in rows)
