"""The ``subscriptions`` table: APIM subscription → business unit, cost center, owner
(``metering subscriptions import``)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from db.schema import subscriptions


def replace_subscriptions(conn: sa.Connection, rows: Sequence[dict[str, str | None]]) -> int:
    """Upsert subscription → business unit / cost center / owner mappings."""
    for row in rows:
        conn.execute(subscriptions.delete().where(subscriptions.c.subscription_id == row["subscription_id"]))
        conn.execute(subscriptions.insert().values(**row))
    return len(rows)
