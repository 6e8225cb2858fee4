"""SQLAlchemy Core tables of the SQL contract (DESIGN.md). The Alembic migrations create them;
this module describes them for queries. ``tests/test_migrations.py`` checks that both agree."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mssql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData()

# Costs carry up to 12 decimals exactly (a 6-decimal per-1M rate × tokens / 10^6).
MONEY_PRECISION, MONEY_SCALE = 28, 12
RATE_PRECISION, RATE_SCALE = 18, 6
AUDIO_SECONDS_PRECISION, AUDIO_SECONDS_SCALE = 18, 3  # seconds of audio, to the millisecond


class ExactDecimal(TypeDecorator):
    """``NUMERIC(p, s)`` on servers; exact decimal text on SQLite, whose NUMERIC is a float."""

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int):
        super().__init__()
        self.precision = precision
        self.scale = scale

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(48))
        return dialect.type_descriptor(sa.Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value if isinstance(value, Decimal) else Decimal(str(value))
        if dialect.name == "sqlite":
            return format(value, "f")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


class UtcDateTime(TypeDecorator):
    """UTC instants stored without zone (DATETIME2 / timestamp / text) and read back as aware UTC."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "mssql":
            return dialect.type_descriptor(mssql.DATETIME2())
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass timezone-aware UTC")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw text from a SQLite view or expression
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def money() -> ExactDecimal:
    return ExactDecimal(MONEY_PRECISION, MONEY_SCALE)


def rate_amount() -> ExactDecimal:
    return ExactDecimal(RATE_PRECISION, RATE_SCALE)


def text(length: int) -> sa.Unicode:
    """Free text from the gateway (names, ids): NVARCHAR on SQL Server so nothing is mangled."""
    return sa.Unicode(length)


def request_key() -> sa.types.TypeEngine[Any]:
    """A request id (at most 200 characters): binary collation on SQL Server, so that ids compare
    exactly as in Python, SQLite and PostgreSQL (Azure SQL's default collation is case-insensitive:
    ``ABC`` and ``abc`` would be one key to the unique constraint and two to the batch)."""
    return sa.Unicode(200).with_variant(mssql.NVARCHAR(200, collation="Latin1_General_100_BIN2"), "mssql")


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("request_id", request_key(), nullable=False),
    sa.Column("event_time", UtcDateTime(), nullable=False),
    sa.Column("subscription_id", text(200)),
    sa.Column("subscription_name", text(400)),
    sa.Column("product", text(200)),
    sa.Column("user_id", text(200)),
    sa.Column("api", text(200)),
    sa.Column("operation", text(200)),
    sa.Column("gateway_service", text(200)),
    sa.Column("gateway_region", text(100)),
    sa.Column("backend_id", text(200)),
    sa.Column("backend_region", text(100)),
    sa.Column("deployment", text(200)),
    sa.Column("model", text(200)),
    sa.Column("api_version", text(64)),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("is_streaming", sa.Boolean(), nullable=False),
    sa.Column("status_code", sa.Integer()),
    sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
    sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
    sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
    sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
    sa.Column("total_tokens", sa.BigInteger(), nullable=False),
    sa.Column("usage_source", sa.String(16), nullable=False),
    sa.Column("deployment_type", sa.String(32), nullable=False),
    sa.Column("rate_id", sa.Integer()),
    sa.Column("input_cost", money()),
    sa.Column("cached_input_cost", money()),
    sa.Column("output_cost", money()),
    sa.Column("total_cost", money()),
    sa.Column("currency", sa.String(3)),
    sa.Column("price_status", sa.String(16), nullable=False),
    sa.Column("truncated", sa.Boolean(), nullable=False),
    sa.Column("source_partition", sa.String(64)),
    sa.Column("source_sequence_number", sa.BigInteger()),
    sa.Column("ingested_at", UtcDateTime(), nullable=False),
    # Token kinds Azure bills apart (migration 0005): parts of prompt_tokens / cached_tokens /
    # completion_tokens; service_tier as the response reports it; price_fallback names the kinds
    # the rate row had no price for (metering.price.pricing.FALLBACKS).
    sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False),
    sa.Column("audio_prompt_tokens", sa.BigInteger(), nullable=False),
    sa.Column("image_prompt_tokens", sa.BigInteger(), nullable=False),
    sa.Column("cached_audio_tokens", sa.BigInteger(), nullable=False),
    sa.Column("cached_image_tokens", sa.BigInteger(), nullable=False),
    sa.Column("audio_completion_tokens", sa.BigInteger(), nullable=False),
    sa.Column("image_completion_tokens", sa.BigInteger(), nullable=False),
    sa.Column("service_tier", sa.String(32)),
    sa.Column("price_fallback", sa.String(200)),
    sa.Column("event_sha256", sa.String(64)),  # SHA-256 of the event's bytes (migration 0007)
    # Units Azure bills beyond tokens (migration 0012): seconds of audio transcribed (3 decimals),
    # speech input characters, Responses API tool calls, code interpreter sessions; unit_cost is
    # their cost (part of total_cost).
    sa.Column("audio_seconds", ExactDecimal(AUDIO_SECONDS_PRECISION, AUDIO_SECONDS_SCALE), nullable=False),
    sa.Column("input_characters", sa.BigInteger(), nullable=False),
    sa.Column("web_search_calls", sa.BigInteger(), nullable=False),
    sa.Column("file_search_calls", sa.BigInteger(), nullable=False),
    sa.Column("code_interpreter_sessions", sa.BigInteger(), nullable=False),
    sa.Column("unit_cost", money()),
    sa.UniqueConstraint("request_id", name="uq_usage_records_request_id"),
    sa.Index("ix_usage_records_event_time", "event_time"),
    sa.Index("ix_usage_records_subscription_time", "subscription_id", "event_time"),
    sa.Index("ix_usage_records_price_status", "price_status"),
)

rates = sa.Table(
    "rates",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("model", text(200), nullable=False),
    sa.Column("deployment_type", sa.String(32), nullable=False),
    sa.Column("region", text(100)),
    sa.Column("effective_from", UtcDateTime(), nullable=False),
    sa.Column("effective_to", UtcDateTime()),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("input_per_1m", rate_amount(), nullable=False),
    sa.Column("cached_input_per_1m", rate_amount()),
    sa.Column("output_per_1m", rate_amount(), nullable=False),
    sa.Column("min_prompt_tokens", sa.Integer()),  # long-context tier: applies from this prompt size on
    sa.Column("service_tier", sa.String(32)),  # NULL: the default tier (migration 0005)
    sa.Column("cache_write_per_1m", rate_amount()),
    sa.Column("audio_input_per_1m", rate_amount()),
    sa.Column("cached_audio_input_per_1m", rate_amount()),
    sa.Column("audio_output_per_1m", rate_amount()),
    sa.Column("image_input_per_1m", rate_amount()),
    sa.Column("cached_image_input_per_1m", rate_amount()),
    sa.Column("image_output_per_1m", rate_amount()),
    # Prices of the units beyond tokens, each per its own unit (migration 0012).
    sa.Column("audio_per_hour", rate_amount()),
    sa.Column("characters_per_1m", rate_amount()),
    sa.Column("web_search_per_1k", rate_amount()),
    sa.Column("file_search_per_1k", rate_amount()),
    sa.Column("code_interpreter_per_session", rate_amount()),
    sa.Index("ix_rates_model_type", "model", "deployment_type"),
)

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("backend_id", text(200)),
    sa.Column("deployment", text(200), nullable=False),
    sa.Column("model", text(200)),
    sa.Column("deployment_type", sa.String(32), nullable=False),
    sa.Index("ix_deployments_deployment", "deployment"),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("subscription_id", text(200), primary_key=True),
    sa.Column("business_unit", text(200)),
    sa.Column("cost_center", text(100)),
    sa.Column("owner", text(200)),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("detail", sa.UnicodeText().with_variant(mssql.NVARCHAR("max"), "mssql")),
    sa.Column("request_id", request_key()),
    sa.Column("raw", sa.LargeBinary().with_variant(mssql.VARBINARY("max"), "mssql"), nullable=False),
    sa.Column("raw_sha256", sa.String(64), nullable=False),
    sa.Column("source_partition", sa.String(64)),
    sa.Column("source_sequence_number", sa.BigInteger()),
    sa.Column("resolved_at", UtcDateTime()),
    sa.UniqueConstraint("raw_sha256", name="uq_quarantine_raw_sha256"),
    sa.Index("ix_quarantine_reason", "reason"),
)

# Batch API jobs created through the gateway (migration 0005, db/batches.py): the subscription that
# created a job pays for it; its usage is the usage_records row ``batch:<batch_id>``.
batch_jobs = sa.Table(
    "batch_jobs",
    metadata,
    sa.Column("batch_id", request_key(), primary_key=True),
    sa.Column("subscription_id", text(200)),
    sa.Column("subscription_name", text(400)),
    sa.Column("product", text(200)),
    sa.Column("user_id", text(200)),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("request_id", request_key(), nullable=False),
)

# Token usage from APIM's built-in LLM log (migration 0003, db/llm_usage.py). ``status``: ``pending``
# (no metering event yet), ``merged`` (applied to the row), ``unneeded`` (the row already had
# reported usage). ``raw``: the log record as JSON, without prompt and completion messages.
llm_usage = sa.Table(
    "llm_usage",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("request_id", request_key(), nullable=False),
    sa.Column("event_time", UtcDateTime()),
    sa.Column("deployment", text(200)),
    sa.Column("model", text(200)),
    sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
    sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
    sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
    sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
    sa.Column("total_tokens", sa.BigInteger(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.Column("merged_at", UtcDateTime()),
    sa.Column("raw", sa.UnicodeText().with_variant(mssql.NVARCHAR("max"), "mssql")),
    sa.Column("source_partition", sa.String(64)),
    sa.Column("source_sequence_number", sa.BigInteger()),
    sa.UniqueConstraint("request_id", name="uq_llm_usage_request_id"),
    sa.Index("ix_llm_usage_status_received", "status", "received_at"),
)

# Provisioned (PTU) capacity cost allocated to subscriptions for a month (migration 0006,
# db/ptu_allocations.py, `metering ptu allocate`): one row per monthly cost × subscription, whole
# cents that add up to the monthly cost. ``subscription_id``: NULL for requests that carried no
# subscription, ``(unallocated)`` for a deployment nobody used that month.
ptu_allocations = sa.Table(
    "ptu_allocations",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("month", sa.String(7), nullable=False),
    sa.Column("deployment", text(200), nullable=False),
    sa.Column("backend_id", text(200)),
    sa.Column("subscription_id", text(200)),
    sa.Column("requests", sa.BigInteger(), nullable=False),
    sa.Column("tokens", sa.BigInteger(), nullable=False),
    sa.Column("allocated_cost", money(), nullable=False),
    sa.Column("monthly_cost", money(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("allocated_at", UtcDateTime(), nullable=False),
    sa.Index("ix_ptu_allocations_month", "month"),
)

# Monthly money budgets (migration 0008, db/budgets.py, `metering budgets import`): one per scope
# (business_unit, cost_center, subscription) and scope id. ``alert_at``: percentages, "50,80,100".
budgets = sa.Table(
    "budgets",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("scope", sa.String(32), nullable=False),
    sa.Column("scope_id", text(200), nullable=False),
    sa.Column("amount", money(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("alert_at", sa.String(200), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("scope", "scope_id", name="uq_budgets_scope"),
)

# Alerts `metering budgets check` decided to send (migration 0008): unique by ``alert_key`` so none
# is sent twice; ``sent_at`` NULL while the webhook has not accepted it (sent on the next run).
budget_alerts = sa.Table(
    "budget_alerts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("alert_key", text(400), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("month", sa.String(7), nullable=False),
    sa.Column("payload", sa.UnicodeText().with_variant(mssql.NVARCHAR("max"), "mssql"), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("sent_at", UtcDateTime()),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("last_error", text(1000)),
    sa.Column("claimed_until", UtcDateTime()),  # lease of the check that is posting it
    sa.UniqueConstraint("alert_key", name="uq_budget_alerts_alert_key"),
    sa.Index("ix_budget_alerts_sent_at", "sent_at"),
)

# APIM backend → the Azure OpenAI resource behind it (migration 0009, db/bill.py, `metering backends
# import`): what ties a metered row to a line of the Azure bill. ``resource_id`` is the ARM id, lower-cased.
backends = sa.Table(
    "backends",
    metadata,
    sa.Column("backend_id", text(200), primary_key=True),
    sa.Column("resource_id", text(400), nullable=False),
    sa.Column("region", text(100)),
    # Who pays for a bill line of this resource that no metered row explains (migration 0010); NULL:
    # such a line stays unattributed in the true-up.
    sa.Column("owner_subscription_id", text(200)),
)

# Azure OpenAI lines of imported Azure Cost Management exports (migration 0009, db/bill.py, `metering
# bill import`): one row per day × resource × meter (lines of one export with the same key are summed),
# so that re-importing an export, or a newer export of the same days, replaces and never doubles.
# ``model``, ``token_kind`` (input, cached_input, output, cache_write, audio_input, cached_audio_input,
# audio_output, image_input, cached_image_input, image_output, capacity) and ``deployment_type`` are what the
# meter name says (NULL for a meter the parser cannot read); ``tokens`` is the quantity in tokens.
bill_lines = sa.Table(
    "bill_lines",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("day", sa.Date().with_variant(mssql.DATE(), "mssql"), nullable=False),
    sa.Column("resource_id", text(400), nullable=False),
    sa.Column("meter_name", text(400), nullable=False),
    sa.Column("meter_category", text(200)),
    sa.Column("meter_subcategory", text(200)),
    sa.Column("model", text(200)),
    sa.Column("token_kind", sa.String(32)),
    sa.Column("deployment_type", sa.String(32)),
    sa.Column("quantity", money(), nullable=False),
    sa.Column("unit", text(100)),
    sa.Column("tokens", sa.BigInteger()),
    sa.Column("cost", money(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("source_format", sa.String(32), nullable=False),
    sa.Column("source_file", text(400)),
    sa.Column("imported_at", UtcDateTime(), nullable=False),
    sa.Column("service_tier", sa.String(32)),  # "priority" for a priority-processing meter (migration 0010)
    sa.UniqueConstraint("day", "resource_id", "meter_name", name="uq_bill_lines_day_resource_meter"),
)

# A month's chargeback trued up to the Azure bill (migration 0010, db/true_up.py, `metering true-up`):
# one row per subscription × bill meter (resource_id × meter), per subscription × PTU deployment
# (rule "ptu"), and the unattributed lines (subscription_id NULL). final_charge = metered_cost +
# ptu_cost + adjustment, whole cents; a month's final charges add up to its bill exactly.
true_up_allocations = sa.Table(
    "true_up_allocations",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("month", sa.String(7), nullable=False),
    sa.Column("subscription_id", text(200)),
    sa.Column("subscription_name", text(200)),
    sa.Column("resource_id", text(400), nullable=False),
    sa.Column("meter", text(400), nullable=False),
    sa.Column("meter_name", text(400)),
    sa.Column("model", text(200)),
    sa.Column("token_kind", sa.String(32)),
    sa.Column("deployment_type", sa.String(32)),
    sa.Column("service_tier", sa.String(32)),
    sa.Column("tokens", sa.BigInteger(), nullable=False),
    sa.Column("metered_cost", money(), nullable=False),
    sa.Column("ptu_cost", money(), nullable=False),
    sa.Column("adjustment", money(), nullable=False),
    sa.Column("final_charge", money(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("rule", sa.String(32), nullable=False),
    sa.Column("reason", text(1000)),
    sa.Column("computed_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("month", "subscription_id", "resource_id", "meter", name="uq_true_up_allocations_line"),
    sa.Index("ix_true_up_allocations_month", "month"),
)
