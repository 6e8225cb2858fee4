"""Backends and the Azure bill: ``backends`` ties an APIM backend to the Azure OpenAI resource
behind it (ARM id, region); ``bill_lines`` holds the Azure OpenAI lines of imported Azure Cost
Management exports, one per day × resource × meter, so that re-importing never doubles a line
(``metering backends import``, ``metering bill import``, ``metering reconcile``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


# Frozen copies of the column types (a migration must not change when application code does).
def Text(length: int) -> sa.types.TypeEngine:
    return sa.Unicode(length)


def Money() -> sa.types.TypeEngine:
    return sa.Numeric(28, 12).with_variant(sa.String(48), "sqlite")


def Timestamp() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(mssql.DATETIME2(), "mssql")


def upgrade() -> None:
    op.create_table(
        "backends",
        sa.Column("backend_id", Text(200), primary_key=True),
        sa.Column("resource_id", Text(400), nullable=False),
        sa.Column("region", Text(100)),
    )
    op.create_table(
        "bill_lines",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("day", sa.Date().with_variant(mssql.DATE(), "mssql"), nullable=False),
        sa.Column("resource_id", Text(400), nullable=False),
        sa.Column("meter_name", Text(400), nullable=False),
        sa.Column("meter_category", Text(200)),
        sa.Column("meter_subcategory", Text(200)),
        sa.Column("model", Text(200)),
        sa.Column("token_kind", sa.String(32)),
        sa.Column("deployment_type", sa.String(32)),
        sa.Column("quantity", Money(), nullable=False),
        sa.Column("unit", Text(100)),
        sa.Column("tokens", sa.BigInteger()),
        sa.Column("cost", Money(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("source_format", sa.String(32), nullable=False),
        sa.Column("source_file", Text(400)),
        sa.Column("imported_at", Timestamp(), nullable=False),
        sa.UniqueConstraint("day", "resource_id", "meter_name", name="uq_bill_lines_day_resource_meter"),
    )


def downgrade() -> None:
    op.drop_table("bill_lines")
    op.drop_table("backends")
