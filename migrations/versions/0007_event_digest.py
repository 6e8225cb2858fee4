"""Event digest on usage rows: ``usage_records.event_sha256``, the SHA-256 of the event's bytes.

A redelivered or replayed event has the same digest as its stored row and is an ordinary duplicate;
a different event under the same request id (a conflicting duplicate) has another, and is kept in
``quarantine`` as ``conflicting_duplicate`` with both digests (the first stored still wins). Rows
stored before this revision have NULL: a duplicate of one of them cannot be told apart.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on every server (SQLite too: no table copy under the reporting views).
    op.add_column("usage_records", sa.Column("event_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("usage_records", "event_sha256")
