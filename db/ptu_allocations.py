"""The ``ptu_allocations`` table: a month's PTU capacity cost as allocated to subscriptions, so
that the reporting views (and Power BI) carry the total charge (``metering ptu allocate``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from db.schema import ptu_allocations


def replace_month(conn: sa.Connection, month: str, rows: Sequence[dict[str, Any]], at: datetime) -> int:
    """Replace the month's allocation with ``rows`` (keys: deployment, backend_id, subscription_id,
    requests, tokens, allocated_cost, monthly_cost, currency); run it again and nothing doubles."""
    conn.execute(ptu_allocations.delete().where(ptu_allocations.c.month == month))
    if rows:
        conn.execute(ptu_allocations.insert(), [{**row, "month": month, "allocated_at": at} for row in rows])
    return len(rows)


def month_rows(conn: sa.Connection, month: str) -> list[dict[str, Any]]:
    """The month's stored allocation, in a stable order."""
    query = (sa.select(ptu_allocations).where(ptu_allocations.c.month == month)
             .order_by(ptu_allocations.c.deployment, ptu_allocations.c.backend_id, ptu_allocations.c.subscription_id))
    return [dict(row._mapping) for row in conn.execute(query)]


def all_rows(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every stored allocation (one row per month × cost × subscription: a small table)."""
    query = sa.select(ptu_allocations).order_by(ptu_allocations.c.month, ptu_allocations.c.deployment,
                                                ptu_allocations.c.subscription_id)
    return [dict(row._mapping) for row in conn.execute(query)]
