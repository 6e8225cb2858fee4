"""Read-side queries: usage aggregated by any chargeback dimensions over a period, the token
shares of provisioned (PTU) deployments, and the token-level rows of the FOCUS export.

Money is never added as floats: SQL Server and PostgreSQL sum their ``NUMERIC`` exactly in the
grouped query; on SQLite (money stored as decimal text, no exact SUM) it is summed in Python from
the stored exact decimals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from db.schema import rates, subscriptions, usage_records
from metering.model import REPORT_DIMENSIONS, UNIT_FIELDS
from metering.model import UNIT_RATE_COLUMNS as MODEL_UNIT_RATES

UNMAPPED = "(unmapped)"

u = usage_records
s = subscriptions
r = rates


def _constant(text: str) -> sa.ColumnElement[Any]:
    """A string constant written into the SQL, not a bound parameter: the same expression then
    appears identically in SELECT and GROUP BY, which SQL Server (``?`` parameters) requires."""
    assert "'" not in text
    return sa.literal_column(f"'{text}'", sa.String())


def _convert_iso(length: int) -> sa.ColumnElement[Any]:
    """SQL Server: the first ``length`` characters of the ISO 8601 text of ``event_time`` (7: month,
    10: day), as the views write it. ``CONVERT`` with style 126 is a built-in; ``FORMAT`` runs in the
    CLR, one call per row, many times slower over a month of rows."""
    return sa.func.convert(sa.literal_column(f"CHAR({length})"), u.c.event_time, sa.literal_column("126"),
                           type_=sa.String())


def _month(dialect: str) -> sa.ColumnElement[Any]:
    if dialect == "sqlite":
        return sa.func.strftime(_constant("%Y-%m"), u.c.event_time)
    if dialect == "mssql":
        return _convert_iso(7)
    return sa.func.to_char(u.c.event_time, _constant("YYYY-MM"))


def _day(dialect: str) -> sa.ColumnElement[Any]:
    if dialect == "sqlite":
        return sa.func.date(u.c.event_time)
    if dialect == "mssql":
        return _convert_iso(10)
    return sa.func.to_char(u.c.event_time, _constant("YYYY-MM-DD"))


def dimension_columns(dialect: str) -> dict[str, sa.ColumnElement[Any]]:
    """Every dimension a report can group by, as a SQL expression (no bound parameters)."""
    unmapped, none, unknown = _constant(UNMAPPED), _constant("(none)"), _constant("(unknown)")
    return {
        "month": _month(dialect),
        "day": _day(dialect),
        "business_unit": sa.func.coalesce(s.c.business_unit, unmapped),
        "cost_center": sa.func.coalesce(s.c.cost_center, unmapped),
        "subscription": sa.func.coalesce(u.c.subscription_id, unmapped),
        "product": sa.func.coalesce(u.c.product, none),
        "user": sa.func.coalesce(u.c.user_id, none),
        "api": sa.func.coalesce(u.c.api, none),
        "deployment": sa.func.coalesce(u.c.deployment, none),
        "model": sa.func.coalesce(u.c.model, unknown),
        "deployment_type": u.c.deployment_type,
        "endpoint": u.c.endpoint,
        "backend_region": sa.func.coalesce(u.c.backend_region, none),
    }


DIMENSIONS = REPORT_DIMENSIONS
assert tuple(dimension_columns("postgresql")) == DIMENSIONS, "every report dimension has exactly one SQL expression"


def _flag(condition: sa.ColumnElement[bool], value: Any = 1) -> sa.ColumnElement[Any]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, value), else_=0)), 0)


def _sum(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.func.coalesce(sa.func.sum(column), 0)


UNPRICED = u.c.price_status.in_(("no_rate", "no_usage"))
ESTIMATED = u.c.usage_source == "estimated"
# Incomplete: a *billable* request whose token counts are partial or missing. A throttled (429) or
# failed request has no usage and costs nothing, so it is not a data-quality problem.
INCOMPLETE = sa.and_(u.c.usage_source.in_(("partial", "none")), u.c.price_status != "not_billable")
PROVISIONED = u.c.deployment_type == "provisioned"
# Priced, but some token kind (or the service tier) had no price of its own in the rate row and was
# priced by the documented fallback (metering.price.pricing.FALLBACKS).
FALLBACK_PRICED = u.c.price_fallback.is_not(None)
KIND_RATE_COLUMNS = ("cache_write_per_1m", "audio_input_per_1m", "cached_audio_input_per_1m", "audio_output_per_1m",
                     "image_input_per_1m", "cached_image_input_per_1m", "image_output_per_1m")
UNIT_RATE_COLUMNS = tuple(column for column, _ in MODEL_UNIT_RATES.values())
TOKEN_KIND_COLUMNS = ("cache_write_tokens", "audio_prompt_tokens", "image_prompt_tokens", "cached_audio_tokens",
                      "cached_image_tokens", "audio_completion_tokens", "image_completion_tokens")


def _period(since: datetime | None, until: datetime | None) -> list[sa.ColumnElement[bool]]:
    where = []
    if since is not None:
        where.append(u.c.event_time >= since)
    if until is not None:
        where.append(u.c.event_time < until)
    return where


def _source() -> sa.FromClause:
    return u.outerjoin(s, s.c.subscription_id == u.c.subscription_id)


def _sums_money_exactly(conn: sa.Connection) -> bool:
    """Whether the server adds money exactly (``NUMERIC``), so that it can be summed in the grouped
    query itself. That matters on SQL Server: a case-insensitive collation groups ``GPT4o`` with
    ``gpt4o`` (and ``x`` with ``x ``), so rows streamed by a second query would not find their group."""
    return conn.dialect.name != "sqlite"


def _money_sum(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.func.coalesce(sa.func.sum(column), 0, type_=column.type)


def _add_exact_costs(
    conn: sa.Connection,
    groups: dict[tuple[Any, ...], dict[str, Any]],
    keys: list[sa.ColumnElement[Any]],
    where: list[sa.ColumnElement[bool]],
    costs: dict[str, sa.ColumnElement[Any]],
) -> None:
    """Add exact ``Decimal`` sums of ``costs`` (name → cost column) to each group, by streaming
    (group keys, costs) pairs: the database never adds money as floats."""
    for group in groups.values():
        for name in costs:
            group[name] = Decimal(0)
    any_cost = sa.or_(*[column.is_not(None) for column in costs.values()])
    query = sa.select(*keys, *costs.values()).select_from(_source()).where(*where, any_cost)
    width = len(keys)
    names = list(costs)
    for row in conn.execution_options(yield_per=5000).execute(query):
        group = groups[tuple(row[:width])]
        for name, value in zip(names, row[width:]):
            if value is not None:
                group[name] += value


def usage_summary(
    conn: sa.Connection,
    since: datetime | None,
    until: datetime | None,
    dimensions: Sequence[str],
) -> list[dict[str, Any]]:
    """Requests, tokens, cost and data-quality counts per group, for ``since <= event_time < until``.

    Data quality per group: ``estimated_*`` (tokens counted with tiktoken, not reported),
    ``incomplete_*`` (billable requests with partial or no usage), ``unpriced_*`` (``no_rate`` or
    ``no_usage``: their cost is unknown, not zero), ``not_billable_requests``, ``fallback_priced_*``
    (a token kind or the service tier priced by the documented fallback rate). Also the token kinds
    Azure bills apart (``TOKEN_KIND_COLUMNS``).
    """
    columns = dimension_columns(conn.dialect.name)
    unknown = [d for d in dimensions if d not in columns]
    if unknown:
        raise ValueError(f"unknown dimension(s) {', '.join(unknown)}; choose from {', '.join(columns)}")
    keys = [columns[d].label(d) for d in dimensions]
    measures = [
        sa.func.count().label("requests"),
        _sum(u.c.prompt_tokens).label("prompt_tokens"),
        _sum(u.c.cached_tokens).label("cached_tokens"),
        _sum(u.c.completion_tokens).label("completion_tokens"),
        _sum(u.c.reasoning_tokens).label("reasoning_tokens"),
        _sum(u.c.total_tokens).label("total_tokens"),
        _flag(ESTIMATED).label("estimated_requests"),
        _flag(ESTIMATED, u.c.total_tokens).label("estimated_tokens"),
        _flag(INCOMPLETE).label("incomplete_requests"),
        _flag(INCOMPLETE, u.c.total_tokens).label("incomplete_tokens"),
        _flag(UNPRICED).label("unpriced_requests"),
        _flag(UNPRICED, u.c.total_tokens).label("unpriced_tokens"),
        _flag(u.c.price_status == "not_billable").label("not_billable_requests"),
        _flag(PROVISIONED).label("provisioned_requests"),
        _flag(PROVISIONED, u.c.total_tokens).label("provisioned_tokens"),
        _flag(FALLBACK_PRICED).label("fallback_priced_requests"),
        _flag(FALLBACK_PRICED, u.c.total_tokens).label("fallback_priced_tokens"),
        _flag(u.c.service_tier == "priority").label("priority_requests"),
        *[_sum(u.c[name]).label(name) for name in TOKEN_KIND_COLUMNS],
        *[_sum(u.c[name]).label(name) for name in UNIT_FIELDS],  # units beyond tokens (audio seconds, …)
        sa.func.max(u.c.currency).label("currency"),
    ]
    costs = {"cost": u.c.total_cost}
    in_sql = _sums_money_exactly(conn)
    if in_sql:
        measures += [_money_sum(column).label(name) for name, column in costs.items()]
    where = _period(since, until)
    grouped = sa.select(*keys, *measures).select_from(_source()).where(*where)
    if keys:
        grouped = grouped.group_by(*[columns[d] for d in dimensions])
    rows = {tuple(row[:len(keys)]): dict(row._mapping) for row in conn.execute(grouped)}
    if not keys and rows and next(iter(rows.values()))["requests"] == 0:
        rows = {}  # an aggregate without GROUP BY yields one row even over no data
    if not in_sql:
        _add_exact_costs(conn, rows, keys, where, costs)
    return sorted(rows.values(), key=lambda row: tuple(str(row[d]) for d in dimensions))


def provisioned_tokens(
    conn: sa.Connection,
    since: datetime | None,
    until: datetime | None,
    dimensions: Sequence[str],
    all_deployment_types: bool = False,
) -> list[dict[str, Any]]:
    """Tokens of provisioned (PTU) requests per month × deployment × backend × subscription and
    the report's ``dimensions``: the shares by which a PTU deployment's monthly cost is allocated.
    ``all_deployment_types``: the tokens of every request, for fixed costs of other kinds (a
    fine-tuned deployment's hosting), with ``ptu_provisioned`` telling the PTU rows apart.

    Keys: ``ptu_month``, ``ptu_deployment``, ``ptu_backend_id``, ``ptu_subscription`` (the
    subscription id, or ``(unmapped)``), then the dimensions; measures: ``requests``, ``tokens``.
    """
    columns = dimension_columns(conn.dialect.name)
    fixed = {
        "ptu_month": columns["month"],
        "ptu_deployment": u.c.deployment,
        "ptu_backend_id": u.c.backend_id,
        "ptu_subscription": columns["subscription"],
    }
    if all_deployment_types:
        fixed["ptu_deployment_type"] = u.c.deployment_type
    expressions = list(fixed.values()) + [columns[d] for d in dimensions]
    labels = list(fixed) + list(dimensions)
    query = (
        sa.select(
            *[expression.label(label) for expression, label in zip(expressions, labels)],
            sa.func.count().label("requests"),
            _sum(u.c.total_tokens).label("tokens"),
        )
        .select_from(_source())
        .where(*_period(since, until), u.c.deployment.is_not(None), *(() if all_deployment_types else (PROVISIONED,)))
        .group_by(*expressions)
    )
    rows = [dict(row._mapping) for row in conn.execute(query)]
    if all_deployment_types:
        for row in rows:
            row["ptu_provisioned"] = row.pop("ptu_deployment_type") == "provisioned"
    return rows


def focus_usage(conn: sa.Connection, since: datetime | None, until: datetime | None) -> list[dict[str, Any]]:
    """Usage for the FOCUS export, per day × subscription × backend × deployment × model × deployment type ×
    backend region × rate × price status: tokens by kind (input, cached input, output, and the kinds
    Azure bills apart, ``TOKEN_KIND_COLUMNS``), the same counted by estimation, and exact costs by
    side. With the rate's unit prices (per 1M tokens), those of the kinds too, and what identifies the
    rate's SKU price (model, region, service tier, long-context threshold) — never its row id."""
    columns = dimension_columns(conn.dialect.name)
    keys_by_name: dict[str, sa.ColumnElement[Any]] = {
        "day": columns["day"],
        "subscription_id": u.c.subscription_id,
        "business_unit": s.c.business_unit,
        "cost_center": s.c.cost_center,
        "backend_id": u.c.backend_id,
        "deployment": u.c.deployment,
        "model": u.c.model,
        "deployment_type": u.c.deployment_type,
        "backend_region": u.c.backend_region,
        "rate_id": u.c.rate_id,
        "price_status": u.c.price_status,
        "currency": u.c.currency,
    }
    keys = [expression.label(name) for name, expression in keys_by_name.items()]
    estimated_prompt = _flag(ESTIMATED, u.c.prompt_tokens - u.c.cached_tokens)
    costs = {
        "input_cost": u.c.input_cost,
        "cached_input_cost": u.c.cached_input_cost,
        "output_cost": u.c.output_cost,
        "unit_cost": u.c.unit_cost,  # the units beyond tokens
        "audio_seconds": u.c.audio_seconds,  # exact, to the millisecond
    }
    in_sql = _sums_money_exactly(conn)
    money = [_money_sum(column).label(name) for name, column in costs.items()] if in_sql else []
    query = (
        sa.select(
            *keys,
            sa.func.max(u.c.subscription_name).label("subscription_name"),
            sa.func.count().label("requests"),
            _sum(u.c.prompt_tokens - u.c.cached_tokens).label("input_tokens"),
            _sum(u.c.cached_tokens).label("cached_input_tokens"),
            _sum(u.c.completion_tokens).label("output_tokens"),
            *[_sum(u.c[name]).label(name) for name in TOKEN_KIND_COLUMNS],
            *[_sum(u.c[name]).label(name) for name in UNIT_FIELDS if name != "audio_seconds"],
            estimated_prompt.label("estimated_input_tokens"),
            _flag(ESTIMATED, u.c.cached_tokens).label("estimated_cached_input_tokens"),
            _flag(ESTIMATED, u.c.completion_tokens).label("estimated_output_tokens"),
            *money,
        )
        .select_from(_source())
        .where(*_period(since, until))
        .group_by(*keys_by_name.values())
    )
    rows = {tuple(row[:len(keys)]): dict(row._mapping) for row in conn.execute(query)}
    if not in_sql:
        _add_exact_costs(conn, rows, keys, _period(since, until), costs)
    rate_ids = {row["rate_id"] for row in rows.values() if row["rate_id"] is not None}
    card: dict[int, dict[str, Any]] = {}
    if rate_ids:
        rate_query = sa.select(r.c.id, r.c.model, r.c.region, r.c.service_tier, r.c.min_prompt_tokens,
                               r.c.input_per_1m, r.c.cached_input_per_1m, r.c.output_per_1m,
                               *[r.c[name] for name in (*KIND_RATE_COLUMNS, *UNIT_RATE_COLUMNS)]
                               ).where(r.c.id.in_(sorted(rate_ids)))
        card = {row.id: dict(row._mapping) for row in conn.execute(rate_query)}
    for row in rows.values():
        rate = card.get(row["rate_id"]) if row["rate_id"] is not None else None
        for name in UNIT_RATE_COLUMNS:
            row[name] = rate[name] if rate else None
        row["rate_model"] = rate["model"] if rate else None
        row["rate_region"] = rate["region"] if rate else None
        row["rate_service_tier"] = rate["service_tier"] if rate else None
        row["rate_min_prompt_tokens"] = rate["min_prompt_tokens"] if rate else None
        row["input_per_1m"] = rate["input_per_1m"] if rate else None
        row["cached_input_per_1m"] = (rate["cached_input_per_1m"] if rate["cached_input_per_1m"] is not None
                                      else rate["input_per_1m"]) if rate else None
        row["output_per_1m"] = rate["output_per_1m"] if rate else None
        for name in KIND_RATE_COLUMNS:
            row[name] = rate[name] if rate else None
    return sorted(rows.values(), key=lambda row: tuple("" if row[k] is None else str(row[k]) for k in keys_by_name))


def subscription_info(conn: sa.Connection) -> list[dict[str, Any]]:
    """Each known subscription (mapped, or seen in usage): id, latest name, business unit, cost center."""
    seen = (
        sa.select(u.c.subscription_id.label("subscription"), sa.func.max(u.c.subscription_name).label("subscription_name"))
        .where(u.c.subscription_id.is_not(None))
        .group_by(u.c.subscription_id)
    )
    names = {row.subscription: row.subscription_name for row in conn.execute(seen)}
    info = {sid: {"subscription": sid, "subscription_name": name, "business_unit": None, "cost_center": None}
            for sid, name in names.items()}
    for row in conn.execute(sa.select(s.c.subscription_id, s.c.business_unit, s.c.cost_center)):
        entry = info.setdefault(row.subscription_id, {"subscription": row.subscription_id, "subscription_name": None})
        entry["business_unit"], entry["cost_center"] = row.business_unit, row.cost_center
    return sorted(info.values(), key=lambda item: item["subscription"])


def period_currencies(conn: sa.Connection, since: datetime | None, until: datetime | None) -> list[str]:
    """The currencies of priced usage in the period, most used first."""
    query = (
        sa.select(u.c.currency, sa.func.count().label("n"))
        .where(*_period(since, until), u.c.currency.is_not(None))
        .group_by(u.c.currency)
        .order_by(sa.func.count().desc(), u.c.currency)
    )
    return [row.currency for row in conn.execute(query)]


def data_models_without_rate(
    conn: sa.Connection, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Models seen in usage (in the period, when given) whose requests could not be priced for
    want of a rate."""
    # The constant in the SQL text, not a bound parameter: pyodbc sends one ``?`` per occurrence, and
    # SQL Server rejects ``coalesce(model, @P1)`` in SELECT with ``coalesce(model, @P2)`` in GROUP BY.
    model = sa.func.coalesce(u.c.model, _constant("(unknown)"))
    query = (
        sa.select(
            model.label("model"),
            u.c.deployment_type,
            sa.func.count().label("requests"),
            sa.func.coalesce(sa.func.sum(u.c.total_tokens), 0).label("tokens"),
        )
        .where(u.c.price_status == "no_rate", *_period(since, until))
        .group_by(model, u.c.deployment_type)
        .order_by(sa.func.count().desc())
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def data_fallback_pricing(
    conn: sa.Connection, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Models in usage (in the period, when given) with token kinds the rate card has no price for,
    priced by the documented fallback: model, deployment type, the kinds, requests and tokens."""
    model = sa.func.coalesce(u.c.model, _constant("(unknown)"))
    query = (
        sa.select(
            model.label("model"),
            u.c.deployment_type,
            u.c.price_fallback.label("kinds"),
            sa.func.count().label("requests"),
            sa.func.coalesce(sa.func.sum(u.c.total_tokens), 0).label("tokens"),
        )
        .where(FALLBACK_PRICED, *_period(since, until))
        .group_by(model, u.c.deployment_type, u.c.price_fallback)
        .order_by(sa.func.count().desc())
    )
    return [dict(row._mapping) for row in conn.execute(query)]
