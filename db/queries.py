"""Read-side queries: usage aggregated by any chargeback dimensions over a period."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from db.schema import subscriptions, usage_records

UNMAPPED = "(unmapped)"

u = usage_records
s = subscriptions


def _month(dialect: str) -> sa.ColumnElement[Any]:
    if dialect == "sqlite":
        return sa.func.strftime("%Y-%m", u.c.event_time)
    if dialect == "mssql":
        return sa.func.format(u.c.event_time, "yyyy-MM")
    return sa.func.to_char(u.c.event_time, "YYYY-MM")


def _day(dialect: str) -> sa.ColumnElement[Any]:
    if dialect == "sqlite":
        return sa.func.date(u.c.event_time)
    if dialect == "mssql":
        return sa.func.format(u.c.event_time, "yyyy-MM-dd")
    return sa.func.to_char(u.c.event_time, "YYYY-MM-DD")


def dimension_columns(dialect: str) -> dict[str, sa.ColumnElement[Any]]:
    """Every dimension a report can group by, as a SQL expression."""
    return {
        "month": _month(dialect),
        "day": _day(dialect),
        "business_unit": sa.func.coalesce(s.c.business_unit, UNMAPPED),
        "cost_center": sa.func.coalesce(s.c.cost_center, UNMAPPED),
        "subscription": sa.func.coalesce(u.c.subscription_id, UNMAPPED),
        "product": sa.func.coalesce(u.c.product, "(none)"),
        "user": sa.func.coalesce(u.c.user_id, "(none)"),
        "api": sa.func.coalesce(u.c.api, "(none)"),
        "deployment": sa.func.coalesce(u.c.deployment, "(none)"),
        "model": sa.func.coalesce(u.c.model, "(unknown)"),
        "deployment_type": u.c.deployment_type,
        "endpoint": u.c.endpoint,
        "backend_region": sa.func.coalesce(u.c.backend_region, "(none)"),
    }


DIMENSIONS = tuple(dimension_columns("postgresql"))


def _flag(condition: sa.ColumnElement[bool], value: Any = 1) -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.case((condition, value), else_=0))


UNPRICED = u.c.price_status.in_(("no_rate", "no_usage"))


def usage_summary(
    conn: sa.Connection,
    since: datetime | None,
    until: datetime | None,
    dimensions: Sequence[str],
) -> list[dict[str, Any]]:
    """Requests, tokens, cost and data-quality counts per group, for ``since <= event_time < until``.

    Costs are summed exactly in Python from the stored decimals (SQLite has no exact SUM).
    """
    columns = dimension_columns(conn.dialect.name)
    unknown = [d for d in dimensions if d not in columns]
    if unknown:
        raise ValueError(f"unknown dimension(s) {', '.join(unknown)}; choose from {', '.join(columns)}")
    keys = [columns[d].label(d) for d in dimensions]
    measures = [
        sa.func.count().label("requests"),
        sa.func.coalesce(sa.func.sum(u.c.prompt_tokens), 0).label("prompt_tokens"),
        sa.func.coalesce(sa.func.sum(u.c.cached_tokens), 0).label("cached_tokens"),
        sa.func.coalesce(sa.func.sum(u.c.completion_tokens), 0).label("completion_tokens"),
        sa.func.coalesce(sa.func.sum(u.c.reasoning_tokens), 0).label("reasoning_tokens"),
        sa.func.coalesce(sa.func.sum(u.c.total_tokens), 0).label("total_tokens"),
        sa.func.coalesce(_flag(u.c.usage_source == "estimated"), 0).label("estimated_requests"),
        sa.func.coalesce(_flag(u.c.usage_source == "estimated", u.c.total_tokens), 0).label("estimated_tokens"),
        sa.func.coalesce(_flag(u.c.usage_source.in_(("partial", "none"))), 0).label("incomplete_requests"),
        sa.func.coalesce(_flag(UNPRICED), 0).label("unpriced_requests"),
        sa.func.coalesce(_flag(UNPRICED, u.c.total_tokens), 0).label("unpriced_tokens"),
        sa.func.coalesce(_flag(u.c.price_status == "not_billable"), 0).label("not_billable_requests"),
        sa.func.max(u.c.currency).label("currency"),
    ]
    where = []
    if since is not None:
        where.append(u.c.event_time >= since)
    if until is not None:
        where.append(u.c.event_time < until)
    source = u.outerjoin(s, s.c.subscription_id == u.c.subscription_id)
    grouped = sa.select(*keys, *measures).select_from(source).where(*where)
    if keys:
        grouped = grouped.group_by(*[columns[d] for d in dimensions])
    rows = {tuple(row[:len(keys)]): dict(row._mapping) for row in conn.execute(grouped)}

    # Exact cost per group: stream (group keys, cost) pairs and add Decimals.
    cost_query = sa.select(*keys, u.c.total_cost).select_from(source).where(*where, u.c.total_cost.is_not(None))
    for group in rows.values():
        group["cost"] = Decimal(0)
    for row in conn.execution_options(yield_per=5000).execute(cost_query):
        rows[tuple(row[:len(keys)])]["cost"] += row[-1]
    return sorted(rows.values(), key=lambda r: tuple(str(r[d]) for d in dimensions))


def data_models_without_rate(conn: sa.Connection) -> list[dict[str, Any]]:
    """Models seen in usage whose requests could not be priced for want of a rate."""
    model = sa.func.coalesce(u.c.model, "(unknown)")  # one expression object: one bound parameter
    query = (
        sa.select(
            model.label("model"),
            u.c.deployment_type,
            sa.func.count().label("requests"),
            sa.func.coalesce(sa.func.sum(u.c.total_tokens), 0).label("tokens"),
        )
        .where(u.c.price_status == "no_rate")
        .group_by(model, u.c.deployment_type)
        .order_by(sa.func.count().desc())
    )
    return [dict(row._mapping) for row in conn.execute(query)]
