"""The Power BI views (migration 0004): they add up to usage_records, keep unmapped subscriptions,
count data quality as the report does, and relate to the dimension tables by clean keys."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from metering.finance.report.options import Period
from metering.finance.report.build import build_report
from report_data import MONTH, db_total, seed


def test_views_add_up_and_agree_with_the_report(engine):
    seed(engine)
    expected, requests, tokens = db_total(engine)
    with engine.connect() as conn:
        report = build_report(conn, Period.month(MONTH), ("business_unit",))
        monthly = conn.execute(sa.text(
            "SELECT SUM(requests), SUM(total_tokens), SUM(estimated_requests), SUM(incomplete_requests), "
            "SUM(unpriced_requests), SUM(unpriced_tokens), SUM(provisioned_tokens), SUM(not_billable_requests) "
            "FROM v_chargeback_monthly WHERE month = :m"), {"m": MONTH}).one()
        daily = conn.execute(sa.text(
            "SELECT SUM(requests), SUM(total_tokens), SUM(incomplete_requests), SUM(estimated_tokens) "
            "FROM v_usage_daily WHERE usage_month = :m"), {"m": MONTH}).one()
        costs = conn.execute(sa.text("SELECT total_cost FROM v_chargeback_monthly WHERE month = :m"), {"m": MONTH}).scalars()
        view_cost = sum((Decimal(str(c)) for c in costs if c is not None), Decimal(0))
    q = report.quality
    assert tuple(int(v) for v in monthly) == (requests, tokens, q["estimated_requests"], q["incomplete_requests"],
                                              q["unpriced_requests"], q["unpriced_tokens"], q["provisioned_tokens"],
                                              q["not_billable_requests"])
    assert tuple(int(v) for v in daily) == (requests, tokens, q["incomplete_requests"], q["estimated_tokens"])
    assert q["incomplete_requests"] == 1  # the throttled request is not billable, so not incomplete
    # SQLite sums the exact decimal text as floats in a view; the report is exact everywhere.
    assert abs(view_cost - expected) < Decimal("0.000001")


def test_daily_view_relates_to_rates_by_id(engine):
    seed(engine)
    with engine.connect() as conn:
        orphans = conn.execute(sa.text(
            "SELECT COUNT(*) FROM v_usage_daily d LEFT JOIN rates r ON r.id = d.rate_id "
            "WHERE d.rate_id IS NOT NULL AND r.id IS NULL")).scalar()
        priced = conn.execute(sa.text("SELECT COUNT(*) FROM v_usage_daily WHERE rate_id IS NOT NULL")).scalar()
    assert orphans == 0 and priced > 0


# Each `report --by` dimension and the v_usage_daily column that carries it (migration 0006 adds
# product, user_id, api, endpoint and backend_region; month and day are usage_month and usage_date).
VIEW_COLUMN = {"month": "usage_month", "day": "usage_date", "business_unit": "business_unit",
               "cost_center": "cost_center", "subscription": "subscription_id", "product": "product",
               "user": "user_id", "api": "api", "deployment": "deployment", "model": "model",
               "deployment_type": "deployment_type", "endpoint": "endpoint", "backend_region": "backend_region"}


def test_daily_view_carries_every_report_dimension_and_agrees_with_the_report(engine):
    """Per-user, per-product, per-API showback in Power BI: grouped by any dimension `report --by`
    offers, the daily view gives the report's requests, tokens and unpriced requests."""
    from db.queries import DIMENSIONS

    assert set(VIEW_COLUMN) == set(DIMENSIONS)
    seed(engine)
    with engine.connect() as conn:
        for dimension, column in VIEW_COLUMN.items():
            rows = conn.execute(sa.text(
                f"SELECT {column}, SUM(requests), SUM(total_tokens), SUM(unpriced_requests), "
                f"SUM(provisioned_tokens) FROM v_usage_daily WHERE usage_month = :m GROUP BY {column}"),
                {"m": MONTH}).all()
            report = build_report(conn, Period.month(MONTH), (dimension,)).frame
            expected = {(str(r[dimension])): (r["requests"], r["total_tokens"], r["unpriced_requests"],
                                              r["provisioned_tokens"]) for r in report.to_dict("records")}
            # The report names a missing value "(none)", "(unknown)" or "(unmapped)"; the view keeps NULL.
            shown = {}
            for key, *counts in rows:
                name = str(key) if key is not None else next(k for k in expected if k.startswith("("))
                shown[name] = tuple(int(c) for c in counts)
            assert shown == expected, dimension
