"""The ``budgets`` and ``budget_alerts`` tables, and the daily spend budgets are judged by
(``metering budgets``, ``GET /api/budget/{subscriptionId}``).

Daily spend is grouped in SQL per day × subscription × business unit × cost center × model ×
currency; money is summed exactly (``NUMERIC`` on servers, decimal text summed in Python on
SQLite, as in ``db.queries``). Restricted to some subscriptions, the query is a range seek on
``ix_usage_records_subscription_time`` (subscription_id, event_time), not a scan of the month."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from db.queries import ESTIMATED, UNPRICED, _add_exact_costs, _money_sum, _source, _sums_money_exactly, dimension_columns
from db.schema import budget_alerts, budgets, ptu_allocations, subscriptions, usage_records

u = usage_records
s = subscriptions
BUDGET_COLUMNS = ("scope", "scope_id", "amount", "currency", "alert_at", "action")


def replace_budgets(conn: sa.Connection, rows: Sequence[dict[str, Any]], at: datetime) -> int:
    """Upsert budgets by (scope, scope_id); keys: scope, scope_id, amount, currency, alert_at, action."""
    for row in rows:
        conn.execute(budgets.delete().where(budgets.c.scope == row["scope"], budgets.c.scope_id == row["scope_id"]))
        conn.execute(budgets.insert().values(**{k: row[k] for k in BUDGET_COLUMNS}, updated_at=at))
    return len(rows)


def all_budgets(conn: sa.Connection) -> list[dict[str, Any]]:
    query = sa.select(*[budgets.c[k] for k in BUDGET_COLUMNS]).order_by(budgets.c.scope, budgets.c.scope_id)
    return [dict(row._mapping) for row in conn.execute(query)]


def subscription_scopes(conn: sa.Connection, subscription_id: str) -> tuple[str | None, str | None]:
    """The subscription's business unit and cost center (None when unmapped)."""
    row = conn.execute(sa.select(s.c.business_unit, s.c.cost_center).where(s.c.subscription_id == subscription_id)).first()
    return (row.business_unit, row.cost_center) if row else (None, None)


def budgets_for(conn: sa.Connection, subscription_id: str, business_unit: str | None, cost_center: str | None) -> list[dict[str, Any]]:
    """The budgets that apply to a subscription: its own, its business unit's, its cost center's."""
    scopes = [sa.and_(budgets.c.scope == "subscription", budgets.c.scope_id == subscription_id)]
    if business_unit is not None:
        scopes.append(sa.and_(budgets.c.scope == "business_unit", budgets.c.scope_id == business_unit))
    if cost_center is not None:
        scopes.append(sa.and_(budgets.c.scope == "cost_center", budgets.c.scope_id == cost_center))
    query = sa.select(*[budgets.c[k] for k in BUDGET_COLUMNS]).where(sa.or_(*scopes)).order_by(budgets.c.id)
    return [dict(row._mapping) for row in conn.execute(query)]


def subscriptions_in(conn: sa.Connection, scope: str, scope_id: str) -> list[str]:
    """The mapped subscriptions of a business unit or cost center."""
    column = s.c.business_unit if scope == "business_unit" else s.c.cost_center
    return [row[0] for row in conn.execute(sa.select(s.c.subscription_id).where(column == scope_id).order_by(s.c.subscription_id))]


IN_CHUNK = 1000  # subscription ids per statement: SQL Server takes at most 2,100 parameters


def daily_spend(conn: sa.Connection, since: datetime, until: datetime,
                subscription_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """``_daily_spend`` for all subscriptions, or for ``subscription_ids`` a chunk at a time (each
    group belongs to one subscription, so the chunks' rows never overlap)."""
    if subscription_ids is None:
        return _daily_spend(conn, since, until, None)
    ids = sorted(set(subscription_ids))
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), IN_CHUNK):
        found += _daily_spend(conn, since, until, ids[start:start + IN_CHUNK])
    return found


def _daily_spend(conn: sa.Connection, since: datetime, until: datetime,
                 subscription_ids: Sequence[str] | None) -> list[dict[str, Any]]:
    """Spend per day × subscription × business unit × cost center × model × currency, for
    ``since <= event_time < until`` (and only ``subscription_ids`` when given): ``cost`` (priced
    cost), ``estimated_cost`` (its part from estimated token counts), ``requests``,
    ``unpriced_requests`` (billable, cost unknown). Unpriced rows have no currency (NULL)."""
    columns = dimension_columns(conn.dialect.name)
    names = ("day", "subscription", "business_unit", "cost_center", "model")
    keys = [columns[n].label(n) for n in names] + [u.c.currency.label("currency")]
    groups = [columns[n] for n in names] + [u.c.currency]
    where = [u.c.event_time >= since, u.c.event_time < until]
    if subscription_ids is not None:
        where.append(u.c.subscription_id.in_(list(subscription_ids)))
    costs = {"cost": u.c.total_cost, "estimated_cost": sa.case((ESTIMATED, u.c.total_cost), else_=None)}
    in_sql = _sums_money_exactly(conn)
    measures = [sa.func.count().label("requests"),
                sa.func.coalesce(sa.func.sum(sa.case((UNPRICED, 1), else_=0)), 0).label("unpriced_requests")]
    if in_sql:
        measures += [_money_sum(u.c.total_cost).label("cost"),
                     sa.func.coalesce(sa.func.sum(costs["estimated_cost"]), 0, type_=u.c.total_cost.type).label("estimated_cost")]
    query = sa.select(*keys, *measures).select_from(_source()).where(*where).group_by(*groups)
    rows = {tuple(row[:len(keys)]): dict(row._mapping) for row in conn.execute(query)}
    if not in_sql:
        _add_exact_costs(conn, rows, keys, where, costs)
    for row in rows.values():
        row["cost"] = Decimal(row["cost"] or 0)
        row["estimated_cost"] = Decimal(row["estimated_cost"] or 0)
    return sorted(rows.values(), key=lambda r: tuple("" if r[k] is None else str(r[k]) for k in (*names, "currency")))


def fixed_costs(conn: sa.Connection, month: str, subscription_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Allocated fixed (PTU) cost per subscription for the month (``ptu_allocations``, when
    ``metering ptu allocate`` has run), with the subscription's business unit and cost center."""
    a = ptu_allocations
    unmapped = sa.literal_column("'(unmapped)'", sa.String())
    subscription = sa.func.coalesce(a.c.subscription_id, unmapped)
    unit, center = sa.func.coalesce(s.c.business_unit, unmapped), sa.func.coalesce(s.c.cost_center, unmapped)
    query = (sa.select(subscription.label("subscription"), unit.label("business_unit"), center.label("cost_center"),
                       a.c.currency, a.c.allocated_cost)
             .select_from(a.outerjoin(s, s.c.subscription_id == a.c.subscription_id))
             .where(a.c.month == month))
    if subscription_ids is not None:
        query = query.where(a.c.subscription_id.in_(list(subscription_ids)))
    return [dict(row._mapping) for row in conn.execute(query)]


# ------------------------------------------------------------------------------ alerts


def record_alerts(conn: sa.Connection, alerts: Sequence[dict[str, Any]], at: datetime) -> int:
    """Record alerts not yet recorded (keys: alert_key, kind, month, payload), as pending.
    Returns how many were new. A concurrent run that recorded the same key first wins (the
    unique key); the caller then retries in a new transaction."""
    if not alerts:
        return 0
    keys = [a["alert_key"] for a in alerts]
    known: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        known |= {row[0] for row in conn.execute(sa.select(budget_alerts.c.alert_key).where(budget_alerts.c.alert_key.in_(chunk)))}
    new = [a for a in alerts if a["alert_key"] not in known]
    if new:
        conn.execute(budget_alerts.insert(), [{**a, "created_at": at, "attempts": 0} for a in new])
    return len(new)


def pending_alerts(conn: sa.Connection) -> list[dict[str, Any]]:
    """Alerts not yet accepted by the webhook, oldest first."""
    query = (sa.select(budget_alerts.c.id, budget_alerts.c.alert_key, budget_alerts.c.kind, budget_alerts.c.payload,
                       budget_alerts.c.attempts)
             .where(budget_alerts.c.sent_at.is_(None)).order_by(budget_alerts.c.id))
    return [dict(row._mapping) for row in conn.execute(query)]


def claim(conn: sa.Connection, alert_id: int, now: datetime, until: datetime) -> bool:
    """Take the lease on a pending alert (until ``until``); False when it was sent meanwhile or
    another check holds an unexpired lease on it. One conditional UPDATE: atomic on every server."""
    result = conn.execute(
        budget_alerts.update()
        .where(budget_alerts.c.id == alert_id, budget_alerts.c.sent_at.is_(None),
               sa.or_(budget_alerts.c.claimed_until.is_(None), budget_alerts.c.claimed_until < now))
        .values(claimed_until=until))
    return result.rowcount == 1


def mark_sent(conn: sa.Connection, alert_id: int, at: datetime, attempts: int) -> None:
    conn.execute(budget_alerts.update().where(budget_alerts.c.id == alert_id)
                 .values(sent_at=at, attempts=budget_alerts.c.attempts + attempts, last_error=None, claimed_until=None))


def mark_failed(conn: sa.Connection, alert_id: int, error: str, attempts: int) -> None:
    conn.execute(budget_alerts.update().where(budget_alerts.c.id == alert_id)
                 .values(attempts=budget_alerts.c.attempts + attempts, last_error=error[:1000], claimed_until=None))
