"""Reading and acting on the ``quarantine`` table: summaries, rows, retry bookkeeping, retention.

Rows are never deleted when they are dealt with: ``metering quarantine retry`` sets ``resolved_at``
(and notes the outcome in ``detail``) and keeps the raw bytes; only ``purge`` deletes, and only rows
resolved before a cut-off. Unresolved rows are never purged: each one may be usage not yet counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from db.bounds import fitted
from db.schema import quarantine

DETAIL_LIMIT = 4000


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    id: int
    received_at: datetime
    reason: str
    detail: str | None
    request_id: str | None
    raw: bytes
    raw_sha256: str
    source_partition: str | None
    source_sequence_number: int | None
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReasonSummary:
    reason: str
    unresolved: int
    resolved: int
    oldest: datetime | None
    newest: datetime | None
    bytes: int


def _row(row: Any) -> QuarantineRow:
    return QuarantineRow(
        id=row.id,
        received_at=row.received_at,
        reason=row.reason,
        detail=row.detail,
        request_id=row.request_id,
        raw=bytes(row.raw),
        raw_sha256=row.raw_sha256,
        source_partition=row.source_partition,
        source_sequence_number=row.source_sequence_number,
        resolved_at=row.resolved_at,
    )


def summary(conn: sa.Connection, *, include_resolved: bool = False) -> list[ReasonSummary]:
    """Per reason: unresolved and resolved counts, oldest and newest ``received_at``, raw bytes."""
    unresolved = sa.case((quarantine.c.resolved_at.is_(None), 1), else_=0)
    # Bytes: LENGTH of a BLOB/bytea elsewhere; SQL Server's LEN counts characters and ignores trailing
    # spaces, DATALENGTH counts the bytes of the VARBINARY(max) (and returns BIGINT: no SUM overflow).
    size = sa.func.datalength(quarantine.c.raw) if conn.dialect.name == "mssql" else sa.func.length(quarantine.c.raw)
    statement = sa.select(
        quarantine.c.reason,
        sa.func.sum(unresolved).label("unresolved"),
        sa.func.count().label("total"),
        sa.func.min(quarantine.c.received_at).label("oldest"),
        sa.func.max(quarantine.c.received_at).label("newest"),
        sa.func.sum(size).label("bytes"),
    ).group_by(quarantine.c.reason).order_by(quarantine.c.reason)
    if not include_resolved:
        statement = statement.where(quarantine.c.resolved_at.is_(None))
    result = []
    for row in conn.execute(statement):
        result.append(ReasonSummary(
            reason=row.reason,
            unresolved=int(row.unresolved or 0),
            resolved=int(row.total) - int(row.unresolved or 0),
            oldest=_aware(row.oldest),
            newest=_aware(row.newest),
            bytes=int(row.bytes or 0),
        ))
    return result


def _aware(value: Any) -> datetime | None:
    """``min``/``max`` over the UTC column bypass its type on SQLite (text): read them back as UTC."""
    return quarantine.c.received_at.type.process_result_value(value, None) if value is not None else None  # type: ignore[attr-defined]


def rows(
    conn: sa.Connection,
    *,
    reason: str | None = None,
    include_resolved: bool = False,
    limit: int | None = None,
    ids: Sequence[int] | None = None,
) -> list[QuarantineRow]:
    """Quarantine rows, oldest first."""
    statement = sa.select(quarantine).order_by(quarantine.c.id)
    if reason is not None:
        statement = statement.where(quarantine.c.reason == reason)
    if ids:
        statement = statement.where(quarantine.c.id.in_(list(ids)))
    if not include_resolved:
        statement = statement.where(quarantine.c.resolved_at.is_(None))
    if limit is not None:
        statement = statement.limit(limit)
    return [_row(r) for r in conn.execute(statement)]


def unresolved_pages(
    engine: sa.Engine,
    *,
    page_size: int = 200,
    reasons: Sequence[str] | None = None,
    exclude_reasons: Sequence[str] = (),
    ids: Sequence[int] | None = None,
    limit: int | None = None,
) -> Iterator[list[QuarantineRow]]:
    """Unresolved rows in pages by id (each page read in its own short transaction), so that rows
    that stay unresolved after a retry are not read again in the same run."""
    after = 0
    remaining = limit
    while remaining is None or remaining > 0:
        size = page_size if remaining is None else min(page_size, remaining)
        statement = (
            sa.select(quarantine)
            .where(quarantine.c.resolved_at.is_(None), quarantine.c.id > after)
            .order_by(quarantine.c.id)
            .limit(size)
        )
        if reasons:
            statement = statement.where(quarantine.c.reason.in_(list(reasons)))
        if exclude_reasons:
            statement = statement.where(quarantine.c.reason.not_in(list(exclude_reasons)))
        if ids:
            statement = statement.where(quarantine.c.id.in_(list(ids)))
        with engine.connect() as conn:
            page = [_row(r) for r in conn.execute(statement)]
        if not page:
            return
        yield page
        after = page[-1].id
        if remaining is not None:
            remaining -= len(page)


def count_unresolved(conn: sa.Connection, reasons: Sequence[str]) -> int:
    statement = sa.select(sa.func.count()).select_from(quarantine).where(
        quarantine.c.resolved_at.is_(None), quarantine.c.reason.in_(list(reasons)))
    return int(conn.execute(statement).scalar() or 0)


def mark_resolved(conn: sa.Connection, row: QuarantineRow, when: datetime, note: str) -> None:
    """The event now became a row: keep the bytes, stamp ``resolved_at``, say how in ``detail``."""
    values, _ = fitted(quarantine, {"detail": f"{note} — originally: {row.detail or row.reason}"[:DETAIL_LIMIT]})
    conn.execute(
        quarantine.update()
        .where(quarantine.c.id == row.id, quarantine.c.resolved_at.is_(None))
        .values(resolved_at=when, **values)
    )


def mark_still_failing(conn: sa.Connection, row: QuarantineRow, reason: str, detail: str, when: datetime) -> None:
    """The event still cannot become a row: today's reason and detail replace the old ones."""
    previous = f" (was {row.reason})" if reason != row.reason else ""
    text = f"retried {when.strftime('%Y-%m-%d %H:%M:%SZ')}{previous}: {detail}"[:DETAIL_LIMIT]
    values, _ = fitted(quarantine, {"reason": reason, "detail": text})  # bounded to the columns (db/bounds.py)
    conn.execute(
        quarantine.update()
        .where(quarantine.c.id == row.id, quarantine.c.resolved_at.is_(None))
        .values(**values)
    )


def purge_resolved(conn: sa.Connection, resolved_before: datetime) -> int:
    """Delete rows resolved before ``resolved_before``; unresolved rows are never deleted."""
    result = conn.execute(
        quarantine.delete().where(quarantine.c.resolved_at.is_not(None), quarantine.c.resolved_at < resolved_before)
    )
    return int(result.rowcount or 0)
