"""The ``true_up_allocations`` table: a month's chargeback trued up to the Azure bill (``metering
true-up``), the one stored figure every report, export and Power BI view reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from db.schema import ptu_allocations, true_up_allocations

t = true_up_allocations


def replace_month(conn: sa.Connection, month: str, rows: Sequence[dict[str, Any]], at: datetime) -> int:
    """Replace the month's true-up with ``rows`` (``TrueUpLine.as_row()``); run again, nothing doubles."""
    conn.execute(t.delete().where(t.c.month == month))
    if rows:
        for start in range(0, len(rows), 500):
            conn.execute(t.insert(), [{**row, "month": month, "computed_at": at} for row in rows[start:start + 500]])
    return len(rows)


def month_rows(conn: sa.Connection, month: str) -> list[dict[str, Any]]:
    """The month's stored true-up lines, in a stable order (unattributed last)."""
    query = (sa.select(t).where(t.c.month == month)
             .order_by(sa.case((t.c.subscription_id.is_(None), 1), else_=0), t.c.subscription_id, t.c.resource_id,
                       t.c.meter))
    return [dict(row._mapping) for row in conn.execute(query)]


def ptu_month(conn: sa.Connection, month: str) -> list[dict[str, Any]]:
    """The month's stored PTU allocation rows (``metering ptu allocate``)."""
    query = sa.select(ptu_allocations).where(ptu_allocations.c.month == month).order_by(
        ptu_allocations.c.deployment, ptu_allocations.c.subscription_id)
    return [dict(row._mapping) for row in conn.execute(query)]
