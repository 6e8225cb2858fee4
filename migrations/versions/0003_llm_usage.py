"""LLM-log usage: token counts from APIM's built-in LLM log (``GatewayLlmLogs``), by request id.

A record that arrives before its metering event waits here (``status = 'pending'``) and is applied
when the event is stored; one that arrives after is applied to the stored row at once. Either way
the row becomes ``usage_source = 'reported'`` exactly once (``request_id`` is unique here too).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies of the column types (a migration must not change when application code does).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def Text(length: int) -> sa.types.TypeEngine:
    return sa.Unicode(length)


def RequestKey() -> sa.types.TypeEngine:
    """As in 0001: binary collation on SQL Server (case-sensitive, like the other databases)."""
    return sa.Unicode(200).with_variant(mssql.NVARCHAR(200, collation="Latin1_General_100_BIN2"), "mssql")


def Timestamp() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(mssql.DATETIME2(), "mssql")


def LongText() -> sa.types.TypeEngine:
    return sa.UnicodeText().with_variant(mssql.NVARCHAR("max"), "mssql")


def upgrade() -> None:
    op.create_table(
        "llm_usage",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("request_id", RequestKey(), nullable=False),
        sa.Column("event_time", Timestamp()),
        sa.Column("deployment", Text(200)),
        sa.Column("model", Text(200)),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("received_at", Timestamp(), nullable=False),
        sa.Column("merged_at", Timestamp()),
        sa.Column("raw", LongText()),
        sa.Column("source_partition", sa.String(64)),
        sa.Column("source_sequence_number", sa.BigInteger()),
        sa.UniqueConstraint("request_id", name="uq_llm_usage_request_id"),
    )
    op.create_index("ix_llm_usage_status_received", "llm_usage", ["status", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_llm_usage_status_received", table_name="llm_usage")
    op.drop_table("llm_usage")
