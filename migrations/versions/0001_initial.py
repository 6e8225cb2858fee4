"""Initial schema: usage_records, rates, deployments, subscriptions, quarantine and the two views.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the column types (a migration must not change when application code does).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def Money() -> sa.types.TypeEngine:
    return sa.Numeric(28, 12).with_variant(sa.String(48), "sqlite")


def RateAmount() -> sa.types.TypeEngine:
    return sa.Numeric(18, 6).with_variant(sa.String(48), "sqlite")


def Text(length: int) -> sa.types.TypeEngine:
    return sa.Unicode(length)


def RequestKey() -> sa.types.TypeEngine:
    """A request id: NVARCHAR(200) with a binary collation on SQL Server, so that it compares as on
    SQLite and PostgreSQL and in Python (``ABC`` and ``abc`` are two requests). Under Azure SQL's
    default case-insensitive collation the unique constraint would reject the second as a duplicate
    key, and the batch would fail on every redelivery."""
    return sa.Unicode(200).with_variant(mssql.NVARCHAR(200, collation="Latin1_General_100_BIN2"), "mssql")


def Timestamp() -> sa.types.TypeEngine:
    """UTC instants without zone; DATETIME2 on SQL Server (DATETIME only keeps 1/300 s)."""
    return sa.DateTime().with_variant(mssql.DATETIME2(), "mssql")


def LongText() -> sa.types.TypeEngine:
    return sa.UnicodeText().with_variant(mssql.NVARCHAR("max"), "mssql")


def Bytes() -> sa.types.TypeEngine:
    return sa.LargeBinary().with_variant(mssql.VARBINARY("max"), "mssql")


def _day(dialect: str) -> str:
    return "date(u.event_time)" if dialect == "sqlite" else "CAST(u.event_time AS DATE)"


def _month(dialect: str) -> str:
    if dialect == "sqlite":
        return "strftime('%Y-%m', u.event_time)"
    if dialect == "mssql":
        return "CONVERT(CHAR(7), u.event_time, 126)"
    return "to_char(u.event_time, 'YYYY-MM')"


UNMAPPED = "'(unmapped)'"


def _usage_daily(dialect: str) -> str:
    day = _day(dialect)
    return f"""
CREATE VIEW v_usage_daily AS
SELECT
    {day} AS usage_date,
    u.subscription_id AS subscription_id,
    MAX(u.subscription_name) AS subscription_name,
    COALESCE(s.business_unit, {UNMAPPED}) AS business_unit,
    COALESCE(s.cost_center, {UNMAPPED}) AS cost_center,
    u.deployment AS deployment,
    u.model AS model,
    u.deployment_type AS deployment_type,
    COUNT(*) AS requests,
    SUM(u.prompt_tokens) AS prompt_tokens,
    SUM(u.cached_tokens) AS cached_tokens,
    SUM(u.completion_tokens) AS completion_tokens,
    SUM(u.reasoning_tokens) AS reasoning_tokens,
    SUM(u.total_tokens) AS total_tokens,
    SUM(u.input_cost) AS input_cost,
    SUM(u.cached_input_cost) AS cached_input_cost,
    SUM(u.output_cost) AS output_cost,
    SUM(u.total_cost) AS total_cost,
    MAX(u.currency) AS currency,
    SUM(CASE WHEN u.usage_source = 'estimated' THEN 1 ELSE 0 END) AS estimated_requests,
    SUM(CASE WHEN u.usage_source IN ('partial', 'none') THEN 1 ELSE 0 END) AS incomplete_requests,
    SUM(CASE WHEN u.price_status IN ('no_rate', 'no_usage') THEN 1 ELSE 0 END) AS unpriced_requests,
    SUM(CASE WHEN u.price_status IN ('no_rate', 'no_usage') THEN u.total_tokens ELSE 0 END) AS unpriced_tokens
FROM usage_records u
LEFT JOIN subscriptions s ON s.subscription_id = u.subscription_id
GROUP BY {day}, u.subscription_id, COALESCE(s.business_unit, {UNMAPPED}), COALESCE(s.cost_center, {UNMAPPED}),
         u.deployment, u.model, u.deployment_type
"""


def _chargeback_monthly(dialect: str) -> str:
    month = _month(dialect)
    return f"""
CREATE VIEW v_chargeback_monthly AS
SELECT
    {month} AS month,
    COALESCE(s.business_unit, {UNMAPPED}) AS business_unit,
    COALESCE(s.cost_center, {UNMAPPED}) AS cost_center,
    u.subscription_id AS subscription_id,
    MAX(u.subscription_name) AS subscription_name,
    u.model AS model,
    COUNT(*) AS requests,
    SUM(u.prompt_tokens) AS prompt_tokens,
    SUM(u.cached_tokens) AS cached_tokens,
    SUM(u.completion_tokens) AS completion_tokens,
    SUM(u.total_tokens) AS total_tokens,
    SUM(u.total_cost) AS total_cost,
    MAX(u.currency) AS currency,
    SUM(CASE WHEN u.usage_source = 'estimated' THEN 1 ELSE 0 END) AS estimated_requests,
    SUM(CASE WHEN u.price_status IN ('no_rate', 'no_usage') THEN 1 ELSE 0 END) AS unpriced_requests
FROM usage_records u
LEFT JOIN subscriptions s ON s.subscription_id = u.subscription_id
GROUP BY {month}, COALESCE(s.business_unit, {UNMAPPED}), COALESCE(s.cost_center, {UNMAPPED}),
         u.subscription_id, u.model
"""


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("request_id", RequestKey(), nullable=False),
        sa.Column("event_time", Timestamp(), nullable=False),
        sa.Column("subscription_id", Text(200)),
        sa.Column("subscription_name", Text(400)),
        sa.Column("product", Text(200)),
        sa.Column("user_id", Text(200)),
        sa.Column("api", Text(200)),
        sa.Column("operation", Text(200)),
        sa.Column("gateway_service", Text(200)),
        sa.Column("gateway_region", Text(100)),
        sa.Column("backend_id", Text(200)),
        sa.Column("backend_region", Text(100)),
        sa.Column("deployment", Text(200)),
        sa.Column("model", Text(200)),
        sa.Column("api_version", Text(64)),
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
        sa.Column("input_cost", Money()),
        sa.Column("cached_input_cost", Money()),
        sa.Column("output_cost", Money()),
        sa.Column("total_cost", Money()),
        sa.Column("currency", sa.String(3)),
        sa.Column("price_status", sa.String(16), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("source_partition", sa.String(64)),
        sa.Column("source_sequence_number", sa.BigInteger()),
        sa.Column("ingested_at", Timestamp(), nullable=False),
        sa.UniqueConstraint("request_id", name="uq_usage_records_request_id"),
    )
    op.create_index("ix_usage_records_event_time", "usage_records", ["event_time"])
    op.create_index("ix_usage_records_subscription_time", "usage_records", ["subscription_id", "event_time"])
    op.create_index("ix_usage_records_price_status", "usage_records", ["price_status"])

    op.create_table(
        "rates",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", Text(200), nullable=False),
        sa.Column("deployment_type", sa.String(32), nullable=False),
        sa.Column("region", Text(100)),
        sa.Column("effective_from", Timestamp(), nullable=False),
        sa.Column("effective_to", Timestamp()),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("input_per_1m", RateAmount(), nullable=False),
        sa.Column("cached_input_per_1m", RateAmount()),
        sa.Column("output_per_1m", RateAmount(), nullable=False),
    )
    op.create_index("ix_rates_model_type", "rates", ["model", "deployment_type"])

    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("backend_id", Text(200)),
        sa.Column("deployment", Text(200), nullable=False),
        sa.Column("model", Text(200)),
        sa.Column("deployment_type", sa.String(32), nullable=False),
    )
    op.create_index("ix_deployments_deployment", "deployments", ["deployment"])

    op.create_table(
        "subscriptions",
        sa.Column("subscription_id", Text(200), primary_key=True),
        sa.Column("business_unit", Text(200)),
        sa.Column("cost_center", Text(100)),
        sa.Column("owner", Text(200)),
    )

    op.create_table(
        "quarantine",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("received_at", Timestamp(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", LongText()),
        sa.Column("request_id", RequestKey()),
        sa.Column("raw", Bytes(), nullable=False),
        sa.Column("raw_sha256", sa.String(64), nullable=False),
        sa.Column("source_partition", sa.String(64)),
        sa.Column("source_sequence_number", sa.BigInteger()),
        sa.Column("resolved_at", Timestamp()),
        sa.UniqueConstraint("raw_sha256", name="uq_quarantine_raw_sha256"),
    )
    op.create_index("ix_quarantine_reason", "quarantine", ["reason"])

    dialect = op.get_context().dialect.name
    op.execute(_usage_daily(dialect))
    op.execute(_chargeback_monthly(dialect))


def downgrade() -> None:
    op.execute("DROP VIEW v_chargeback_monthly")
    op.execute("DROP VIEW v_usage_daily")
    op.drop_table("quarantine")
    op.drop_table("subscriptions")
    op.drop_table("deployments")
    op.drop_table("rates")
    op.drop_table("usage_records")
