"""Token kinds Azure bills apart, service tiers, and their prices.

``usage_records`` gains ``cache_write_tokens``, ``audio_prompt_tokens``, ``image_prompt_tokens``
(parts of ``prompt_tokens``), ``cached_audio_tokens``, ``cached_image_tokens`` (parts of
``cached_tokens`` and of the audio/image prompt tokens), ``audio_completion_tokens``,
``image_completion_tokens`` (parts of ``completion_tokens``) — 0 for rows stored before —,
``service_tier`` (as the response reports it) and ``price_fallback`` (the token kinds the rate row
had no price for, priced by the documented fallback). ``rates`` gains ``service_tier`` (NULL: the
default tier; part of a rate's key) and a price column per token kind.

``batch_jobs`` keeps the Batch API jobs created through the gateway (batch id → the creating
subscription), so that a finished job's usage row is charged to the subscription that created it.

The views keep their columns and grain and add the token kinds and ``fallback_priced_requests``
at the end (``v_usage_daily`` also ``service_tier``, ``v_chargeback_monthly`` also
``priority_requests``); their SQL is revision 0004's, extended here.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TOKEN_KINDS = (
    "cache_write_tokens",
    "audio_prompt_tokens",
    "image_prompt_tokens",
    "cached_audio_tokens",
    "cached_image_tokens",
    "audio_completion_tokens",
    "image_completion_tokens",
)
KIND_RATES = (
    "cache_write_per_1m",
    "audio_input_per_1m",
    "cached_audio_input_per_1m",
    "audio_output_per_1m",
    "image_input_per_1m",
    "cached_image_input_per_1m",
    "image_output_per_1m",
)
FALLBACK_PRICED = "SUM(CASE WHEN u.price_fallback IS NOT NULL THEN 1 ELSE 0 END)"
PRIORITY = "SUM(CASE WHEN u.service_tier = 'priority' THEN 1 ELSE 0 END)"


def RateAmount() -> sa.types.TypeEngine:
    """Frozen copy of the rate type: NUMERIC(18, 6), exact text on SQLite."""
    return sa.Numeric(18, 6).with_variant(sa.String(48), "sqlite")


def RequestKey() -> sa.types.TypeEngine:
    """Frozen copy of the request-id type: NVARCHAR(200) with a binary collation on SQL Server."""
    return sa.Unicode(200).with_variant(mssql.NVARCHAR(200, collation="Latin1_General_100_BIN2"), "mssql")


def Timestamp() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(mssql.DATETIME2(), "mssql")


def _previous():
    return importlib.import_module("migrations.versions.0004_reporting_views")


def _extend(view_sql: str, extra: list[str], group_extra: str = "") -> str:
    """Revision 0004's view with ``extra`` select items appended (and a grouping column added)."""
    head, tail = view_sql.split("\nFROM usage_records u", 1)
    select = head.rstrip() + ",\n    " + ",\n    ".join(extra)
    if group_extra:
        tail = tail.rstrip() + f", {group_extra}\n"
    return select + "\nFROM usage_records u" + tail


def _kind_sums() -> list[str]:
    return [f"SUM(u.{name}) AS {name}" for name in TOKEN_KINDS]


def _usage_daily(dialect: str) -> str:
    extra = _kind_sums() + [f"{FALLBACK_PRICED} AS fallback_priced_requests", "u.service_tier AS service_tier"]
    return _extend(_previous()._usage_daily(dialect), extra, group_extra="u.service_tier")


def _chargeback_monthly(dialect: str) -> str:
    extra = _kind_sums() + [f"{FALLBACK_PRICED} AS fallback_priced_requests", f"{PRIORITY} AS priority_requests"]
    return _extend(_previous()._chargeback_monthly(dialect), extra)


def _drop_views() -> None:
    op.execute("DROP VIEW v_chargeback_monthly")
    op.execute("DROP VIEW v_usage_daily")


def _add_token_columns(dialect: str) -> None:
    """The token columns, NOT NULL and 0 for stored rows, without a default left behind on SQL Server
    (no default constraints there, so that a DROP COLUMN needs no constraint name)."""
    for name in TOKEN_KINDS:
        if dialect == "mssql":
            op.add_column("usage_records", sa.Column(name, sa.BigInteger(), nullable=True))
            op.execute(f"UPDATE usage_records SET {name} = 0")
            op.alter_column("usage_records", name, existing_type=sa.BigInteger(), nullable=False)
        else:  # SQLite adds the column in place; PostgreSQL (11+) without rewriting the table
            op.add_column("usage_records", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))
            if dialect == "postgresql":
                op.alter_column("usage_records", name, existing_type=sa.BigInteger(), server_default=None)


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    _drop_views()
    _add_token_columns(dialect)
    op.add_column("usage_records", sa.Column("service_tier", sa.String(32), nullable=True))
    op.add_column("usage_records", sa.Column("price_fallback", sa.String(200), nullable=True))
    op.add_column("rates", sa.Column("service_tier", sa.String(32), nullable=True))
    for name in KIND_RATES:
        op.add_column("rates", sa.Column(name, RateAmount(), nullable=True))
    op.execute(_usage_daily(dialect))
    op.execute(_chargeback_monthly(dialect))
    op.create_table(
        "batch_jobs",
        sa.Column("batch_id", RequestKey(), primary_key=True),
        sa.Column("subscription_id", sa.Unicode(200)),
        sa.Column("subscription_name", sa.Unicode(400)),
        sa.Column("product", sa.Unicode(200)),
        sa.Column("user_id", sa.Unicode(200)),
        sa.Column("created_at", Timestamp(), nullable=False),
        sa.Column("request_id", RequestKey(), nullable=False),
    )


def downgrade() -> None:
    """Back to revision 0004: its views, without the new columns and batch_jobs."""
    dialect = op.get_context().dialect.name
    op.drop_table("batch_jobs")
    _drop_views()
    with op.batch_alter_table("rates") as batch:
        for name in ("service_tier", *KIND_RATES):
            batch.drop_column(name)
    with op.batch_alter_table("usage_records") as batch:
        for name in (*TOKEN_KINDS, "service_tier", "price_fallback"):
            batch.drop_column(name)
    previous = _previous()
    op.execute(previous._usage_daily(dialect))
    op.execute(previous._chargeback_monthly(dialect))
