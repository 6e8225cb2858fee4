"""Money budgets and the alerts sent about them (``metering budgets``, issue 17).

``budgets``: one monthly budget per scope (``business_unit``, ``cost_center`` or ``subscription``)
and scope id: amount, currency, alert thresholds (``50,80,100``) and action (``alert`` or
``block``). ``budget_alerts``: every alert ``metering budgets check`` decided to send, keyed by a
unique ``alert_key`` (budget × month × threshold, or anomaly × day) so that no alert is sent twice;
``sent_at`` stays NULL until the webhook accepted it, so an alert the webhook missed is sent on the
next run; ``claimed_until`` is a short lease, so that two checks running at once (the timer and a
person at the command line) never post the same alert twice. The gateway's per-subscription month spend uses ``ix_usage_records_subscription_time``,
which revision 0001 already creates.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Frozen copies of the column types (a migration must not change when application code does).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def Text(length: int) -> sa.types.TypeEngine:
    return sa.Unicode(length)


def Money() -> sa.types.TypeEngine:
    return sa.Numeric(28, 12).with_variant(sa.String(48), "sqlite")


def Timestamp() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(mssql.DATETIME2(), "mssql")


def LongText() -> sa.types.TypeEngine:
    return sa.UnicodeText().with_variant(mssql.NVARCHAR("max"), "mssql")


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("scope_id", Text(200), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("alert_at", sa.String(200), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("updated_at", Timestamp(), nullable=False),
        sa.UniqueConstraint("scope", "scope_id", name="uq_budgets_scope"),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("alert_key", Text(400), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("payload", LongText(), nullable=False),
        sa.Column("created_at", Timestamp(), nullable=False),
        sa.Column("sent_at", Timestamp()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", Text(1000)),
        sa.Column("claimed_until", Timestamp()),
        sa.UniqueConstraint("alert_key", name="uq_budget_alerts_alert_key"),
    )
    op.create_index("ix_budget_alerts_sent_at", "budget_alerts", ["sent_at"])


def downgrade() -> None:
    op.drop_index("ix_budget_alerts_sent_at", table_name="budget_alerts")
    op.drop_table("budget_alerts")
    op.drop_table("budgets")
