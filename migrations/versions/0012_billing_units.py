"""Units Azure bills beyond tokens: seconds of audio, speech characters, tool calls, sessions.

``usage_records`` gains ``audio_seconds`` (whisper transcription, billed per hour of audio:
``NUMERIC(18, 3)``), ``input_characters`` (tts input, billed per 1M characters),
``web_search_calls`` and ``file_search_calls`` (Responses API built-in tools, per 1,000 calls),
``code_interpreter_sessions`` (per session) — 0 for rows stored before — and ``unit_cost``, their
cost (part of ``total_cost``; NULL on rows stored before, whose total has no such part). ``rates``
gains a price column per unit: ``audio_per_hour``, ``characters_per_1m``, ``web_search_per_1k``,
``file_search_per_1k``, ``code_interpreter_per_session``. The views are unchanged: they sum
``total_cost``, which includes the units.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

COUNTS = ("input_characters", "web_search_calls", "file_search_calls", "code_interpreter_sessions")
UNIT_RATES = ("audio_per_hour", "characters_per_1m", "web_search_per_1k", "file_search_per_1k",
              "code_interpreter_per_session")


def RateAmount() -> sa.types.TypeEngine:
    """Frozen copy of the rate type: NUMERIC(18, 6), exact text on SQLite."""
    return sa.Numeric(18, 6).with_variant(sa.String(48), "sqlite")


def Money() -> sa.types.TypeEngine:
    """Frozen copy of the money type: NUMERIC(28, 12), exact text on SQLite."""
    return sa.Numeric(28, 12).with_variant(sa.String(48), "sqlite")


def Seconds() -> sa.types.TypeEngine:
    """Seconds of audio to the millisecond: NUMERIC(18, 3), exact text on SQLite."""
    return sa.Numeric(18, 3).with_variant(sa.String(48), "sqlite")


def _add_not_null(dialect: str, name: str, kind: sa.types.TypeEngine) -> None:
    """A NOT NULL column that is 0 on stored rows, without a default left behind on SQL Server or
    PostgreSQL (as revision 0005 adds the token kinds)."""
    if dialect == "mssql":
        op.add_column("usage_records", sa.Column(name, kind, nullable=True))
        op.execute(f"UPDATE usage_records SET {name} = 0")
        op.alter_column("usage_records", name, existing_type=kind, nullable=False)
    else:
        op.add_column("usage_records", sa.Column(name, kind, nullable=False, server_default="0"))
        if dialect == "postgresql":
            op.alter_column("usage_records", name, existing_type=kind, server_default=None)


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    _add_not_null(dialect, "audio_seconds", Seconds())
    for name in COUNTS:
        _add_not_null(dialect, name, sa.BigInteger())
    op.add_column("usage_records", sa.Column("unit_cost", Money(), nullable=True))
    for name in UNIT_RATES:
        op.add_column("rates", sa.Column(name, RateAmount(), nullable=True))


def _module(name: str):
    """An earlier revision (frozen): the views over usage_records are 0006's and 0011's."""
    return importlib.import_module(f"migrations.versions.{name}")


def downgrade() -> None:
    """Back to revision 0011. SQLite rebuilds the table to drop columns, so its views over
    usage_records are dropped and made again; the servers drop the columns in place (no view
    reads them)."""
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        op.execute("DROP VIEW v_chargeback_monthly")
        op.execute("DROP VIEW v_usage_daily")
    with op.batch_alter_table("rates") as batch:
        for name in UNIT_RATES:
            batch.drop_column(name)
    with op.batch_alter_table("usage_records") as batch:
        for name in ("audio_seconds", *COUNTS, "unit_cost"):
            batch.drop_column(name)
    if dialect == "sqlite":
        op.execute(_module("0006_reporting_views_dimensions")._usage_daily(dialect))
        op.execute(_module("0011_chargeback_ptu_rows")._chargeback_monthly(dialect))
