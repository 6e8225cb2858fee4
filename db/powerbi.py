"""The tables the Power BI model reads, as it reads them: a month of each reporting view and the
dimensions, with the columns the model declares (``POWERBI_TABLES``), for ``metering export powerbi``.

One number: the rows are the views themselves, not a second computation. Money is ``Decimal`` on
every engine. SQL Server and PostgreSQL sum ``NUMERIC`` exactly; SQLite stores money as decimal
text and its ``SUM`` would add binary floats, so for this read (on a connection used for nothing
else and discarded afterwards) SQLite's ``SUM`` is replaced by an exact one over that text."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from db.queries import TOKEN_KIND_COLUMNS


@dataclass(frozen=True)
class PowerBITable:
    """A view or table the model reads: its month column (None: a dimension, read whole) and its
    columns with their kind: ``text``, ``int``, ``money`` (Decimal), ``date`` or ``timestamp`` (UTC)."""

    name: str
    month_column: str | None
    columns: tuple[tuple[str, str], ...]


def _kinds(kind: str, *names: str) -> tuple[tuple[str, str], ...]:
    return tuple((name, kind) for name in names)


_TOKEN_KINDS = _kinds("int", *TOKEN_KIND_COLUMNS)

POWERBI_TABLES = (
    PowerBITable("v_usage_daily", "usage_month", (
        ("usage_date", "date"), *_kinds("text", "subscription_id", "subscription_name", "business_unit", "cost_center",
                                        "deployment", "model", "deployment_type"),
        *_kinds("int", "requests", "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens",
                "total_tokens"),
        *_kinds("money", "input_cost", "cached_input_cost", "output_cost", "total_cost"), ("currency", "text"),
        *_kinds("int", "estimated_requests", "incomplete_requests", "unpriced_requests", "unpriced_tokens"),
        ("usage_month", "text"), ("rate_id", "int"),
        *_kinds("int", "estimated_tokens", "incomplete_tokens", "not_billable_requests"),
        *_kinds("text", "product", "user_id", "api", "endpoint", "backend_region"),
        *_kinds("int", "provisioned_requests", "provisioned_tokens"), *_TOKEN_KINDS,
        ("fallback_priced_requests", "int"), ("service_tier", "text"),
    )),
    PowerBITable("v_chargeback_monthly", "month", (
        *_kinds("text", "month", "business_unit", "cost_center", "subscription_id", "subscription_name", "model"),
        *_kinds("int", "requests", "prompt_tokens", "cached_tokens", "completion_tokens", "total_tokens"),
        ("total_cost", "money"), ("currency", "text"),
        *_kinds("int", "estimated_requests", "unpriced_requests", "reasoning_tokens"),
        *_kinds("money", "input_cost", "cached_input_cost", "output_cost"),
        *_kinds("int", "estimated_tokens", "incomplete_requests", "incomplete_tokens", "unpriced_tokens",
                "not_billable_requests", "provisioned_requests", "provisioned_tokens"),
        ("ptu_deployment", "text"), ("ptu_cost", "money"), *_TOKEN_KINDS,
        *_kinds("int", "fallback_priced_requests", "priority_requests"),
    )),
    PowerBITable("v_true_up_monthly", "month", (
        *_kinds("text", "month", "subscription_id", "subscription_name", "business_unit", "cost_center"),
        *_kinds("money", "metered_cost", "ptu_cost", "adjustment", "final_charge"), ("currency", "text"),
        ("tokens", "int"),
    )),
    PowerBITable("v_bill_daily", "month", (
        ("day", "date"),
        *_kinds("text", "month", "resource_id", "meter_name", "meter_category", "meter_subcategory", "model",
                "token_kind", "deployment_type", "service_tier"),
        ("quantity", "money"), ("unit", "text"), ("tokens", "int"), ("cost", "money"), ("currency", "text"),
    )),
    PowerBITable("subscriptions", None, _kinds("text", "subscription_id", "business_unit", "cost_center", "owner")),
    PowerBITable("rates", None, (
        ("id", "int"), *_kinds("text", "model", "deployment_type", "region"),
        *_kinds("timestamp", "effective_from", "effective_to"), ("currency", "text"),
        *_kinds("money", "input_per_1m", "cached_input_per_1m", "output_per_1m"), ("min_prompt_tokens", "int"),
        ("service_tier", "text"),
        *_kinds("money", "cache_write_per_1m", "audio_input_per_1m", "cached_audio_input_per_1m", "audio_output_per_1m",
                "image_input_per_1m", "cached_image_input_per_1m", "image_output_per_1m"),
        # the units beyond tokens, each priced per its own unit (migration 0012)
        *_kinds("money", "audio_per_hour", "characters_per_1m", "web_search_per_1k", "file_search_per_1k",
                "code_interpreter_per_session"),
    )),
)


class _ExactSum:
    """SQLite ``SUM`` without floats: integers add as integers (the counts); decimal text, the way
    money is stored on SQLite, adds as ``Decimal`` and comes back as decimal text."""

    def __init__(self) -> None:
        self.total: int | Decimal | None = None

    def step(self, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, str):
            value = Decimal(value)
        elif isinstance(value, float):
            value = Decimal(repr(value))
        self.total = value if self.total is None else self.total + value

    def finalize(self) -> int | str | None:
        return str(self.total) if isinstance(self.total, Decimal) else self.total


@contextlib.contextmanager
def _reading(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            yield conn
            return
        # The aggregate cannot be taken back from a sqlite3 connection: it is discarded after the read.
        conn.connection.dbapi_connection.create_aggregate("sum", 1, _ExactSum)  # type: ignore[union-attr]
        try:
            yield conn
        finally:
            conn.invalidate()


def _value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "money":
        return value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else str(value))
    if kind == "int":
        return int(value)
    if kind == "date":
        return value.date() if isinstance(value, datetime) else value if isinstance(value, date) else date.fromisoformat(
            str(value)[:10])
    if kind == "timestamp":
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return str(value)


def powerbi_tables(engine: sa.Engine, month: str) -> dict[str, list[dict[str, Any]]]:
    """Each table of ``POWERBI_TABLES``: the facts' rows of ``month`` (``YYYY-MM``), the dimensions
    whole; each row a dict of the declared columns, typed by their kind."""
    out: dict[str, list[dict[str, Any]]] = {}
    with _reading(engine) as conn:
        for table in POWERBI_TABLES:
            names = [name for name, _ in table.columns]
            query = sa.select(*[sa.column(name) for name in names]).select_from(sa.table(table.name))
            if table.month_column is not None:
                query = query.where(sa.column(table.month_column) == month)
            kinds = [kind for _, kind in table.columns]
            out[table.name] = [{name: _value(kind, value) for name, kind, value in zip(names, kinds, row)}
                               for row in conn.execute(query)]
    return out
