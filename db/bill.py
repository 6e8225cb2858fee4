"""The Azure bill in SQL: ``backends`` (APIM backend → Azure OpenAI resource) and ``bill_lines``
(imported Cost Management exports), and the metered side of a reconciliation: tokens and cost per
day × backend × model × deployment type × subscription."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from db.queries import UNMAPPED, _add_exact_costs, _day, _money_sum, _period, _sums_money_exactly
from db.rate_card import stored_rates
from db.schema import backends, bill_lines, usage_records
from metering.price.meters import Backend, BillLine, coverage, meter_service_tier
from metering.price.metered_kinds import TOKEN_SUMS, split_metered

u = usage_records


def replace_backends(conn: sa.Connection, rows: Sequence[Backend]) -> int:
    """Upsert backend → resource mappings (a backend not in the file keeps its mapping)."""
    for row in rows:
        conn.execute(backends.delete().where(backends.c.backend_id == row.backend_id))
        conn.execute(backends.insert().values(backend_id=row.backend_id, resource_id=row.resource_id,
                                              region=row.region, owner_subscription_id=row.owner_subscription_id))
    return len(rows)


def load_backends(conn: sa.Connection) -> dict[str, Backend]:
    rows = conn.execute(sa.select(backends).order_by(backends.c.backend_id))
    return {row.backend_id: Backend(row.backend_id, row.resource_id, row.region, row.owner_subscription_id)
            for row in rows}


def metered_backends(conn: sa.Connection, since: datetime | None, until: datetime | None) -> list[str]:
    """The backend ids of the period's metered rows (rows without one are left out)."""
    query = sa.select(u.c.backend_id).distinct().where(*_period(since, until), u.c.backend_id.is_not(None))
    return sorted(row[0] for row in conn.execute(query))


def store_bill_lines(conn: sa.Connection, lines: Sequence[BillLine], source_file: str,
                     now: datetime | None = None) -> tuple[int, int]:
    """Replace the stored lines of every (resource, day) the import covers with its lines, so that a
    re-import or a newer overlapping export never doubles. Returns (lines deleted, lines inserted)."""
    imported_at = now or datetime.now(timezone.utc)
    by_resource: dict[str, set[date]] = {}
    for resource, day in coverage(lines):
        by_resource.setdefault(resource, set()).add(day)
    deleted = 0
    for resource, days in sorted(by_resource.items()):
        result = conn.execute(bill_lines.delete().where(bill_lines.c.resource_id == resource,
                                                        bill_lines.c.day >= min(days), bill_lines.c.day <= max(days)))
        deleted += result.rowcount or 0
    rows = [{
        "day": line.day, "resource_id": line.resource_id, "meter_name": line.meter_name,
        "meter_category": line.meter_category, "meter_subcategory": line.meter_subcategory,
        "model": line.model, "token_kind": line.token_kind, "deployment_type": line.deployment_type,
        "quantity": line.quantity, "unit": line.unit, "tokens": line.tokens, "cost": line.cost,
        "currency": line.currency, "source_format": line.source_format, "source_file": source_file[-400:],
        "imported_at": imported_at, "service_tier": line.service_tier,
    } for line in lines]
    for start in range(0, len(rows), 500):
        conn.execute(bill_lines.insert(), rows[start:start + 500])
    return deleted, len(rows)


def load_bill_lines(conn: sa.Connection, first: date, last: date) -> list[BillLine]:
    """The stored bill lines of the days ``first`` … ``last`` (inclusive)."""
    query = sa.select(bill_lines).where(bill_lines.c.day >= first, bill_lines.c.day <= last).order_by(
        bill_lines.c.day, bill_lines.c.resource_id, bill_lines.c.meter_name)
    return [BillLine(row.day if isinstance(row.day, date) else date.fromisoformat(str(row.day)[:10]),
                     row.resource_id, row.meter_name, row.meter_category, row.meter_subcategory, row.model,
                     row.token_kind, row.deployment_type, row.quantity, row.unit, row.tokens, row.cost,
                     row.currency, row.source_format,
                     meter_service_tier(row.meter_name, row.meter_subcategory) if row.tokens is not None else None)
            for row in conn.execute(query)]


METERED_KEYS = ("day", "backend_id", "model", "deployment_type", "subscription", "price_status")


def metered_usage(conn: sa.Connection, since: datetime, until: datetime,
                  by_usage_source: bool = False) -> list[dict[str, Any]]:
    """The period's metered tokens and cost per day × backend × model × deployment type × subscription
    × price status, per token kind the bill meters apart (``metering.price.metered_kinds.KINDS``:
    ``{kind}_tokens`` and ``{kind}_cost``, exact): the rows are summed per rate row, and each rate row's
    audio, image and cache-write costs are taken out of the text costs they are stored in.
    ``by_usage_source``: also per ``usage_source`` (the true-up tells estimated usage apart)."""
    dialect = conn.dialect.name
    keys = [_day(dialect), u.c.backend_id, u.c.model, u.c.deployment_type, u.c.subscription_id, u.c.price_status]
    group_keys = (*METERED_KEYS, "usage_source") if by_usage_source else METERED_KEYS
    if by_usage_source:
        keys.append(u.c.usage_source)
    keys.append(u.c.rate_id)
    names = (*group_keys, "rate_id")
    tokens = {name: sa.func.coalesce(sa.func.sum(getattr(u.c, name)), 0) for name in TOKEN_SUMS}
    tokens["requests"] = sa.func.count()
    costs = {"input_cost": u.c.input_cost, "cached_input_cost": u.c.cached_input_cost, "output_cost": u.c.output_cost,
             "unit_cost": u.c.unit_cost, "audio_seconds": u.c.audio_seconds}  # exact decimals, summed as money
    exact = _sums_money_exactly(conn)
    columns = [*keys, *(value.label(name) for name, value in tokens.items())]
    if exact:
        columns += [_money_sum(column).label(name) for name, column in costs.items()]
    query = sa.select(*columns).select_from(u).where(*_period(since, until)).group_by(*keys)
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in conn.execute(query):
        values = row._mapping
        group = dict(zip(names, row[:len(keys)]))
        group.update({name: int(values[name]) for name in tokens})
        if exact:
            group.update({name: None if values[name] is None else Decimal(values[name]) for name in costs})
        groups[tuple(row[:len(keys)])] = group
    if not exact:
        _add_exact_costs(conn, groups, keys, _period(since, until), costs)
    for group in groups.values():
        group["day"] = str(group["day"])[:10]
        group["subscription"] = group["subscription"] or UNMAPPED
    rates = {rate.id: rate for rate in stored_rates(conn) if rate.id is not None}
    return split_metered(groups.values(), rates, group_keys)


def subscription_names(conn: sa.Connection, since: datetime, until: datetime) -> dict[str, str]:
    """The name each subscription of the period's metered rows was seen with (the latest)."""
    query = (sa.select(u.c.subscription_id, sa.func.max(u.c.subscription_name))
             .where(*_period(since, until), u.c.subscription_id.is_not(None)).group_by(u.c.subscription_id))
    return {row[0]: row[1] for row in conn.execute(query) if row[1]}
