"""Idempotent storage of a batch (usage rows, quarantine, LLM-log usage) in the caller's transaction.

A batch is written inside the caller's transaction: rows keyed by ``request_id`` (a redelivered or
replayed event is a duplicate, never a second row) and quarantine items keyed by the SHA-256 of
their bytes. Any database error propagates so that the caller rolls back and the event source
redelivers the whole batch.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import fields
from datetime import datetime, timezone
from decimal import Decimal
from itertools import chain
from operator import attrgetter
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from db import batches as batch_store
from db.bounds import clip, fitted
from db.idempotent import KEY_CHUNK, existing_keys_statement, insert_absent
from db.llm_usage import begin_llm_merge, finish_llm_merge
from db.schema import ExactDecimal, UtcDateTime, quarantine, usage_records
from metering.model import BatchOutcome, ConflictingDuplicate, Quarantined, StoreResult, UsageRecord

RECORD_FIELDS = tuple(f.name for f in fields(UsageRecord))


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def record_row(record: UsageRecord, ingested_at: datetime) -> dict[str, Any]:
    """The ``usage_records`` row of a record."""
    row = {name: getattr(record, name) for name in RECORD_FIELDS}
    row["ingested_at"] = ingested_at
    return row



def _dedupe(records: Iterable[UsageRecord]) -> tuple[list[UsageRecord], int, list[ConflictingDuplicate]]:
    """First occurrence of each request id, sorted by id (one lock order for concurrent writers),
    the number of repeats, and the repeats whose bytes differ from the first's."""
    seen: dict[str, UsageRecord] = {}
    repeats = 0
    conflicts = []
    for record in records:
        first = seen.get(record.request_id)
        if first is None:
            seen[record.request_id] = record
            continue
        repeats += 1
        if not (first.truncated or record.truncated) and _differ(first.event_sha256, record.event_sha256):
            conflicts.append(ConflictingDuplicate(record.request_id, first.event_sha256 or "", record.event_sha256 or ""))
    return [seen[key] for key in sorted(seen)], repeats, conflicts


def _differ(kept: str | None, new: str | None) -> bool:
    """Two digests of events under one request id disagree (unknown for rows stored before 0005)."""
    return kept is not None and new is not None and kept != new


def _stored_conflicts(conn: sa.Connection, duplicates: Sequence[UsageRecord]) -> list[ConflictingDuplicate]:
    """Duplicates of stored rows whose event bytes differ from the stored event's (first wins). A
    truncated event and its whole copy differ in bytes but are one event: not a conflict."""
    wanted = {r.request_id: r for r in duplicates if r.event_sha256 is not None and not r.truncated}
    keys = sorted(wanted)
    conflicts = []
    for start in range(0, len(keys), KEY_CHUNK):
        chunk = keys[start:start + KEY_CHUNK]
        query = sa.select(usage_records.c.request_id, usage_records.c.event_sha256, usage_records.c.truncated).where(
            usage_records.c.request_id.in_(chunk))
        for request_id, stored, truncated in conn.execute(query):
            new = wanted[request_id].event_sha256
            if not truncated and _differ(stored, new):
                conflicts.append(ConflictingDuplicate(request_id, stored, new or ""))
    return conflicts


def insert_records(conn: sa.Connection, records: Sequence[UsageRecord], ingested_at: datetime) -> set[str]:
    """Insert the records whose request id is not stored yet; return the ids actually inserted.

    PostgreSQL takes the whole batch as one JSON parameter, SQLite as VALUES lists of column values
    processed by the dialect's own bind processors (SQLAlchemy's per-row parameter handling was a
    fifth of the time of storing a batch); other servers lock-and-check through ``insert_absent``."""
    if not records:
        return set()
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return _insert_records_postgres(conn, records, ingested_at)
    if dialect == "sqlite":
        return _insert_records_sqlite(conn, records, ingested_at)
    return insert_absent(conn, usage_records, "request_id", [record_row(r, ingested_at) for r in records])


_INSERT_COLUMNS = [c for c in usage_records.columns if c.name != "id"]


_RECORD_COLUMNS = [c for c in _INSERT_COLUMNS if c.name != "ingested_at"]
_RECORD_VALUES = attrgetter(*(c.name for c in _RECORD_COLUMNS))


def _row_values(conn: sa.Connection, records: Sequence[UsageRecord], ingested_at: datetime) -> list[tuple[Any, ...]]:
    """Each record's values in ``_RECORD_COLUMNS`` order, then ``ingested_at``, as the dialect binds them."""
    columns: list[Any] = list(zip(*map(_RECORD_VALUES, records)))
    for position, process in enumerate(_binders(conn.dialect)):
        if process:
            columns[position] = map(process, columns[position])
    columns.append([_bound_ingested_at(conn, ingested_at)] * len(records))
    return list(zip(*columns))


def _exact_text(slow: Any) -> Any:
    """What ``ExactDecimal`` binds on SQLite (exact decimal text) without its chain of calls; any
    other value than a ``Decimal`` goes through ``slow``, the dialect's own processor."""
    def bind(value: Any) -> Any:
        if type(value) is Decimal:
            return format(value, "f")
        return None if value is None else slow(value)
    return bind


def _naive_utc_text(slow: Any) -> Any:
    """What ``UtcDateTime`` and SQLite's DATETIME bind (naive UTC text to the microsecond); ``None``
    and naive times (which it refuses) go through ``slow``, the dialect's own processor."""
    def bind(value: Any) -> Any:
        if type(value) is not datetime or value.tzinfo is None:
            return slow(value)
        if value.tzinfo is timezone.utc:  # what the decoder gives: its text, less the "+00:00"
            return value.isoformat(" ", "microseconds")[:-6]
        return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")
    return bind


@functools.lru_cache(maxsize=8)
def _binders(dialect: sa.Dialect) -> tuple[Any, ...]:
    """Per ``_RECORD_COLUMNS`` column, the function that turns a value into what the dialect binds
    (``None``: as it is): the dialect's own processors (``bind_processor`` of a TypeDecorator uses
    the generic impl, which turned costs into floats). On SQLite, where they were a third of storing
    a row, instants and decimals get direct equivalents (tests/storage/test_store_binders.py holds
    them equal) and booleans go as they are (sqlite3 binds ``True`` as 1, as the processor does)."""
    processors = [column.type._cached_bind_processor(dialect) for column in _RECORD_COLUMNS]
    if dialect.name != "sqlite":
        return tuple(processors)
    fast = []
    for column, process in zip(_RECORD_COLUMNS, processors):
        if isinstance(column.type, ExactDecimal):
            process = _exact_text(process)
        elif isinstance(column.type, UtcDateTime):
            process = _naive_utc_text(process)
        elif isinstance(column.type, sa.Boolean):
            process = None
        fast.append(process)
    return tuple(fast)


def _bound_ingested_at(conn: sa.Connection, ingested_at: datetime) -> Any:
    """``ingested_at`` as the dialect binds it (naive UTC; text on SQLite)."""
    return usage_records.c.ingested_at.type._cached_bind_processor(conn.dialect)(ingested_at)


def postgres_json_insert() -> sa.TextClause:
    """One INSERT of a whole batch sent as one JSON array of the records (``json_to_recordset``).

    orjson writes the records in C; psycopg's array parameters (the former ``unnest`` form) were
    dumped value by value in Python, 180,000 values for 5,000 rows. Element types are unconstrained,
    as before: a longer value fails the insert into its VARCHAR(n) column, never silently cut.
    Instants are read as ``timestamptz`` and stored as UTC, whatever offset they carry."""
    dialect = postgresql.dialect()
    fields, values = [], []
    for column in _INSERT_COLUMNS:
        if column.name == "ingested_at":  # one value for the whole batch
            values.append("CAST(:ingested_at AS TIMESTAMP WITHOUT TIME ZONE)")
        elif isinstance(column.type, UtcDateTime):
            fields.append(f"{column.name} TIMESTAMP WITH TIME ZONE")
            values.append(f"r.{column.name} AT TIME ZONE 'UTC'")
        else:
            fields.append(f"{column.name} {column.type.compile(dialect=dialect).split('(')[0]}")
            values.append(f"r.{column.name}")
    names = ", ".join(c.name for c in _INSERT_COLUMNS)
    return sa.text(
        f"INSERT INTO usage_records ({names}) SELECT {', '.join(values)} "
        f"FROM json_to_recordset(CAST(:rows AS JSON)) AS r({', '.join(fields)}) "
        "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
    )


_POSTGRES_JSON_INSERT = postgres_json_insert()


def _exact(value: Any) -> str:
    """orjson's fallback: a Decimal as its exact text (no float on the way)."""
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} to PostgreSQL as JSON")


def _insert_records_postgres(conn: sa.Connection, records: Sequence[UsageRecord], ingested_at: datetime) -> set[str]:
    rows = orjson.dumps(list(records), default=_exact).decode()
    stamp = _bound_ingested_at(conn, ingested_at)
    return set(conn.execute(_POSTGRES_JSON_INSERT, {"rows": rows, "ingested_at": stamp}).scalars())


# SQLite binds at most 32,766 parameters per statement (since 3.32; RETURNING needs 3.35 anyway).
_SQLITE_MAX_PARAMETERS = 32_766
# The most rows one INSERT takes: the largest power of two within that (512 rows of 52 columns).
_SQLITE_MAX_ROWS = 1 << ((_SQLITE_MAX_PARAMETERS // len(_INSERT_COLUMNS)).bit_length() - 1)


@functools.lru_cache(maxsize=32)
def sqlite_values_insert(rows: int, returning: bool = True) -> str:
    """``INSERT … VALUES (?, …), … ON CONFLICT DO NOTHING [RETURNING request_id]`` for ``rows`` rows."""
    names = ", ".join([*(c.name for c in _RECORD_COLUMNS), "ingested_at"])
    row = "(" + ", ".join("?" * len(_INSERT_COLUMNS)) + ")"
    return (f"INSERT INTO usage_records ({names}) VALUES {', '.join([row] * rows)} "
            "ON CONFLICT (request_id) DO NOTHING" + (" RETURNING request_id" if returning else ""))


def statement_sizes(rows: int, largest: int = _SQLITE_MAX_ROWS) -> list[int]:
    """``rows`` as INSERTs of ``largest`` rows, then of decreasing powers of two: a batch of 487 rows
    is 256 + 128 + 64 + 32 + 4 + 2 + 1. SQLite prepares a statement once per connection and text
    (sqlite3 keeps 16); one statement of each batch's own row count was prepared anew for nearly
    every batch, a third of the time of inserting it."""
    sizes = [largest] * (rows // largest)
    size = largest
    rows %= largest
    while rows:
        size //= 2
        if rows >= size:
            sizes.append(size)
            rows -= size
    return sizes


def _insert_records_sqlite(conn: sa.Connection, records: Sequence[UsageRecord], ingested_at: datetime) -> set[str]:
    """The rows, and the ids of those inserted, without ``RETURNING`` (a fifth of the time of inserting
    a row): a statement that inserted as many rows as it holds inserted all its ids, the usual case;
    otherwise its new rows are those whose rowid is above the table's largest before the batch. SQLite
    has one writer at a time, from that read to the commit (WAL fails a writer whose snapshot another
    commit made stale), so no other row can come in between; near the end of the rowids, where SQLite
    would pick them at random, each statement returns its ids instead."""
    rows = _row_values(conn, records, ingested_at)
    before = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM usage_records").scalar_one()
    returning = before > _LAST_ROWID - len(rows)
    inserted: set[str] = set()
    start = 0
    for size in statement_sizes(len(rows)):
        chunk = rows[start : start + size]
        start += size
        result = conn.exec_driver_sql(sqlite_values_insert(size, returning), tuple(chain.from_iterable(chunk)))
        if returning:
            inserted.update(result.scalars())
            continue
        ids = [row[_REQUEST_ID_AT] for row in chunk]
        if result.rowcount == size:
            inserted.update(ids)
        elif result.rowcount:
            marks = ", ".join("?" * size)
            inserted.update(conn.exec_driver_sql(
                f"SELECT request_id FROM usage_records WHERE id > ? AND request_id IN ({marks})", (before, *ids)).scalars())
    return inserted


_REQUEST_ID_AT = [column.name for column in _RECORD_COLUMNS].index("request_id")
_LAST_ROWID = 2**63 - 1


def existing_request_ids_statement(dialect_name: str, keys: Sequence[str]) -> sa.Select:
    """Which of these request ids are stored (with UPDLOCK, HOLDLOCK on SQL Server)."""
    return existing_keys_statement(dialect_name, usage_records, "request_id", keys)


_clip = clip  # (db.bounds)


def raw_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def keep_quarantined(conn: sa.Connection, items: Sequence[Quarantined], received_at: datetime) -> set[str]:
    """Keep these items' bytes in ``quarantine`` (once per digest); the digests written now."""
    return _keep_bytes(conn, items, received_at)


def _insert_quarantine(
    conn: sa.Connection, items: Sequence[Quarantined], received_at: datetime, audit: Sequence[Quarantined] = ()
) -> int:
    """Keep each bad event's bytes once; the number of quarantine rows written (see ``_keep_bytes``)."""
    return len(_keep_bytes(conn, items, received_at, audit))


def _keep_bytes(
    conn: sa.Connection, items: Sequence[Quarantined], received_at: datetime, audit: Sequence[Quarantined] = ()
) -> set[str]:
    """Keep each bad event's bytes once (a redelivered bad event is not stored twice); return the
    digests of the rows written now.

    Rows are keyed by the SHA-256 of the bytes as received and written in digest order, so that
    concurrent writers of overlapping batches take their locks in one order (no deadlock).
    ``audit`` copies (of a truncated event that did become a row) are stored as resolved.
    """
    if not items and not audit:
        return set()
    rows: dict[str, dict[str, Any]] = {}
    for position, item in enumerate([*items, *audit]):
        resolved = position >= len(items)
        digest = item.raw_sha256 or raw_digest(item.raw)
        if digest in rows:
            continue
        # Every value bounded to its column (db/bounds.py): a 70-character partition name or a NUL
        # in an id must not make the database reject the batch on every redelivery.
        row, notes = fitted(quarantine, {
            "received_at": received_at,
            "reason": item.reason,
            "detail": item.detail[:4000],
            "request_id": item.request_id or None,
            "raw": item.raw,
            "raw_sha256": digest,
            "source_partition": item.source_partition,
            "source_sequence_number": item.source_sequence_number,
            "resolved_at": received_at if resolved else None,
        })
        if notes and any(not note.startswith("detail") for note in notes):
            row["detail"] = f"{row['detail']} [{', '.join(notes)}]"[:4000]
        rows[digest] = row
    return insert_absent(conn, quarantine, "raw_sha256", [rows[digest] for digest in sorted(rows)])


def store_batch(conn: sa.Connection, outcome: BatchOutcome, now: datetime | None = None,
                llm_pending: bool | None = None) -> StoreResult:
    """Write a processed batch in the caller's transaction; return what was new and what was not.

    Order, the same in every writer: usage rows by request id, then quarantine rows by digest.
    Audit copies of truncated events go to ``quarantine`` as resolved and are not counted.
    ``llm_pending``: whether LLM usage waits for its row, when the caller read it for this transaction.
    """
    now = now or utc_now()
    records, repeats, conflicts = _dedupe(outcome.records)
    # APIM LLM-log usage (db/llm_usage.py): stored first, applied to new rows before they are inserted
    llm = begin_llm_merge(conn, outcome.llm_usage, records, now, pending=llm_pending)
    records = llm.records
    inserted_ids = insert_records(conn, records, now)
    llm_counts = finish_llm_merge(conn, llm, inserted_ids)  # ... and to rows stored by earlier batches
    result = StoreResult(duplicates=repeats + len(records) - len(inserted_ids))
    result.conflicting = conflicts + _stored_conflicts(conn, [r for r in records if r.request_id not in inserted_ids])
    for record in records:
        if record.request_id in inserted_ids:
            result.inserted += 1
            result.inserted_tokens += record.total_tokens
            if record.total_cost is not None:
                result.inserted_cost += record.total_cost
            if record.price_status in ("no_rate", "no_usage"):
                result.inserted_unpriced += 1
            if record.truncated:
                result.inserted_truncated += 1
    _store_batch_jobs(conn, outcome, result, now)
    written = _keep_bytes(conn, outcome.quarantined, now, audit=outcome.audit)
    result.quarantined = len(outcome.quarantined)
    new_digests = {item.raw_sha256 or raw_digest(item.raw) for item in outcome.quarantined} & written
    result.quarantined_known = result.quarantined - len(new_digests)  # bytes quarantine already held
    result.duplicates += llm_counts.duplicates
    result.merged, result.pending, result.llm_refused = llm_counts.merged, llm_counts.pending, llm_counts.refused
    result.pending_ids = llm_counts.pending_ids
    result.merged_tokens, result.merged_cost = llm_counts.changed_tokens, llm_counts.changed_cost
    return result


def _store_batch_jobs(conn: sa.Connection, outcome: BatchOutcome, result: StoreResult, now: datetime) -> None:
    """Batch API jobs (db/batches.py): creators first, then each finished job's one usage row,
    charged to its creator when known; a row already stored (an earlier retrieve, a redelivery, a
    replay, or `metering batch import`) is a duplicate, not counted."""
    result.batch_jobs_recorded = batch_store.record_jobs(conn, outcome.batch_jobs)
    usage, _, _ = _dedupe(outcome.batch_usage)
    if not usage:
        return
    usage = batch_store.attribute(conn, usage)
    inserted = insert_records(conn, usage, now)
    for record in usage:
        if record.request_id in inserted:
            result.batches_metered += 1
            result.inserted_tokens += record.total_tokens
            if record.total_cost is not None:
                result.inserted_cost += record.total_cost
            if record.price_status in ("no_rate", "no_usage"):
                result.inserted_unpriced += 1


def totals(conn: sa.Connection) -> dict[str, Any]:
    """Row count, tokens and cost over all usage records (for summaries and checks)."""
    row = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(usage_records.c.total_tokens), 0),
        )
    ).one()
    cost = sum((c for c in conn.execute(sa.select(usage_records.c.total_cost)).scalars() if c is not None), Decimal(0))
    return {"rows": row[0], "tokens": int(row[1]), "cost": cost}
