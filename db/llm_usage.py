"""Merge APIM LLM-log usage into usage rows, whichever arrives first, inside the batch's transaction.

``store_batch`` calls ``begin_llm_merge`` before it inserts the batch's usage rows and
``finish_llm_merge`` after:

1. The batch's LLM-log items go into ``llm_usage`` (unique ``request_id``: a second record for the
   same request is a duplicate and changes nothing), as ``pending``.
2. A usage row about to be inserted whose request has pending LLM usage gets it before the insert
   (reported tokens, repriced by ``metering.llm_logs.merge_usage``), and the LLM row becomes
   ``merged`` once the insert happened — the LLM record came first.
3. Pending LLM usage whose usage row is already stored (the metering event came first, in an
   earlier batch) is applied to the stored row with an ``UPDATE … WHERE usage_source <> 'reported'``,
   so a reported row is never overwritten and two writers never both apply it.

Concurrent writers (two partitions, two Function instances) can each miss the other's uncommitted
half: one stores the row while the other stores the LLM record, neither seeing the other. Step 3
therefore also sweeps LLM usage that became pending in the last ``SWEEP_WINDOW`` and now has its
row, so the next batch from any partition completes the pair; redelivering or replaying either half
completes it too.

That next batch may never come (the last batches of two replays running side by side), so
``Ingestor`` also calls ``settle_pending`` in a short transaction *after* each batch commits, for
the batch's request ids: of two writers that each missed the other's half, the one whose settle
starts last sees both halves committed, so the pair is always completed (commutative under
concurrency, with no lock beyond the row updates). Re-replaying either half completes it too: the
batch's ids are looked up whether its halves were new or duplicates.

Who may change a row (docs/security.md, "LLM logs"): LLM-log usage only fills a row without reported
usage, never changes its model, and must be plausible next to what the row's event showed
(``metering.pipeline.llm_logs.implausible``), else it is kept as ``implausible``. With signatures on,
LLM logs not declared trusted (``METERING_TRUST_LLM_LOGS``) are kept as ``unsigned`` and change no row.

Prices use the same code as ingest (``metering.pricing.price`` through ``merge_usage``) with the
rate card as it is in the database now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from db.bounds import fitted
from db.idempotent import KEY_CHUNK, insert_absent
from db.rate_card import load_rate_card
from db.schema import llm_usage, usage_records
from metering.model import LlmUsage, UsageRecord
from metering.pipeline.llm_logs import implausible, merge_usage
from metering.price.pricing import RateCard

PENDING, MERGED, UNNEEDED = "pending", "merged", "unneeded"
# Kept, never applied: an unsigned record while signatures are required (and the route is not
# declared trusted), or one whose numbers the row's own event contradicts.
UNSIGNED, IMPLAUSIBLE = "unsigned", "implausible"
REFUSED = (UNSIGNED, IMPLAUSIBLE)
SWEEP_WINDOW = timedelta(minutes=15)
RECORD_FIELDS = tuple(f.name for f in fields(UsageRecord))
# Columns a merge changes (everything else about the request, its model too, stays as the metering event said).
MERGED_COLUMNS = (
    "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "total_tokens",
    "usage_source", "rate_id", "input_cost", "cached_input_cost", "output_cost", "total_cost", "currency",
    "price_status", "unit_cost",
)


@dataclass
class LlmMergeCounts:
    """What happened to this batch's LLM-log units, and how much rows stored earlier changed."""

    merged: int = 0
    pending: int = 0
    duplicates: int = 0
    refused: int = 0  # kept as ``unsigned`` or ``implausible``: changed no row
    pending_ids: list[str] = field(default_factory=list)  # this batch's LLM units left pending
    changed_tokens: int = 0
    changed_cost: Decimal = Decimal(0)


@dataclass
class LlmMerge:
    """State between ``begin_llm_merge`` and ``finish_llm_merge`` (one batch, one transaction)."""

    records: list[UsageRecord]
    now: datetime
    card: RateCard | None = None
    new_ids: dict[str, str] = field(default_factory=dict)  # this batch's newly stored LLM ids → status
    applied: dict[str, str] = field(default_factory=dict)  # record id → LLM status once the row is inserted
    duplicates: int = 0
    any_pending: bool = True  # False: nothing waits in llm_usage, so there is nothing to merge
    batch_ids: list[str] = field(default_factory=list)  # every LLM request id of the batch, new or not

    def rate_card(self, conn: sa.Connection) -> RateCard:
        if self.card is None:
            self.card = load_rate_card(conn)
        return self.card


def _chunks(keys: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(keys), KEY_CHUNK):
        yield keys[start:start + KEY_CHUNK]


def _llm_row(item: LlmUsage, now: datetime) -> dict[str, Any]:
    """The ``llm_usage`` row of an item, every value bounded to its column (db/bounds.py)."""
    row, _ = fitted(llm_usage, _llm_values(item, now))
    return row


def _llm_values(item: LlmUsage, now: datetime) -> dict[str, Any]:
    return {
        "request_id": item.request_id,
        "event_time": item.event_time,
        "deployment": item.deployment,
        "model": item.model,
        "prompt_tokens": item.prompt_tokens,
        "cached_tokens": item.cached_tokens,
        "completion_tokens": item.completion_tokens,
        "reasoning_tokens": item.reasoning_tokens,
        "total_tokens": item.total_tokens,
        "status": PENDING if item.trusted else UNSIGNED,
        "received_at": now,
        "merged_at": None,
        "raw": item.raw.decode("utf-8", "replace"),
        "source_partition": item.source_partition,
        "source_sequence_number": item.source_sequence_number,
    }


def _insert_llm_usage(conn: sa.Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert LLM usage for request ids not stored yet; return the ids actually inserted."""
    return insert_absent(conn, llm_usage, "request_id", rows)


def _as_llm(row: Any) -> LlmUsage:
    return LlmUsage(
        request_id=row.request_id,
        event_time=row.event_time,
        deployment=row.deployment,
        model=row.model,
        prompt_tokens=row.prompt_tokens,
        cached_tokens=row.cached_tokens,
        completion_tokens=row.completion_tokens,
        reasoning_tokens=row.reasoning_tokens,
        total_tokens=row.total_tokens,
        raw=b"",
    )


def has_pending(conn: sa.Connection) -> bool:
    """Whether any LLM usage waits for its row (an index probe; lets batches skip the merge work
    entirely where LLM logs are not used, or all are settled)."""
    probe = sa.select(llm_usage.c.id).where(llm_usage.c.status == PENDING).limit(1)
    return conn.execute(probe).first() is not None


def pending_usage(conn: sa.Connection, request_ids: Sequence[str]) -> dict[str, LlmUsage]:
    """Pending LLM usage for these request ids."""
    found: dict[str, LlmUsage] = {}
    for chunk in _chunks(list(request_ids)):
        query = sa.select(llm_usage).where(llm_usage.c.request_id.in_(chunk), llm_usage.c.status == PENDING)
        for row in conn.execute(query):
            found[row.request_id] = _as_llm(row)
    return found


def begin_llm_merge(conn: sa.Connection, items: Sequence[LlmUsage], records: list[UsageRecord],
                    now: datetime, card: RateCard | None = None, pending: bool | None = None) -> LlmMerge:
    """Store the batch's LLM usage and apply pending usage to the rows about to be inserted.
    ``pending``: whether any LLM usage waits, when the caller read it already (``has_pending``)."""
    merge = LlmMerge(records=list(records), now=now, card=card)
    first: dict[str, LlmUsage] = {}
    for item in items:
        if item.request_id in first:
            merge.duplicates += 1  # the same request twice in one batch: the first record wins
        else:
            first[item.request_id] = item
    inserted = _insert_llm_usage(conn, [_llm_row(first[key], now) for key in sorted(first)])
    merge.duplicates += len(first) - len(inserted)
    merge.new_ids = {key: PENDING if first[key].trusted else UNSIGNED for key in inserted}
    merge.batch_ids = sorted(first)
    merge.any_pending = bool(inserted) or (has_pending(conn) if pending is None else pending)
    if not merge.records or not merge.any_pending:
        return merge
    waiting = pending_usage(conn, [r.request_id for r in merge.records])
    for index, record in enumerate(merge.records):
        usage = waiting.get(record.request_id)
        if usage is None:
            continue
        merged = merge_usage(record, usage, merge.rate_card(conn))
        if merged is None:
            merge.applied[record.request_id] = UNNEEDED
        elif implausible(record, usage):
            merge.applied[record.request_id] = IMPLAUSIBLE
        else:
            merge.records[index] = merged
            merge.applied[record.request_id] = MERGED
    return merge


def _set_status(conn: sa.Connection, request_id: str, status: str, now: datetime, claimed: str = PENDING) -> bool:
    """Move one LLM record from ``claimed`` (pending) to ``status``; False when another writer did first."""
    done = conn.execute(
        llm_usage.update()
        .where(llm_usage.c.request_id == request_id, llm_usage.c.status == claimed)
        .values(status=status, merged_at=now)
    )
    return done.rowcount == 1


def _stored_pairs(conn: sa.Connection, request_ids: Sequence[str],
                  since: datetime | None) -> dict[str, tuple[LlmUsage, UsageRecord]]:
    """Pending LLM usage whose usage row is stored: for these ids, and any that became pending since ``since``."""
    columns = [llm_usage.c[name] for name in ("request_id", "event_time", "deployment", "model", "prompt_tokens",
                                              "cached_tokens", "completion_tokens", "reasoning_tokens", "total_tokens")]
    record_columns = [usage_records.c[name].label(f"u_{name}") for name in RECORD_FIELDS]
    joined = sa.select(*columns, *record_columns).select_from(
        llm_usage.join(usage_records, usage_records.c.request_id == llm_usage.c.request_id)
    ).where(llm_usage.c.status == PENDING)
    pairs: dict[str, tuple[LlmUsage, UsageRecord]] = {}

    def collect(statement: sa.Select) -> None:
        for row in conn.execute(statement):
            record = UsageRecord(**{name: getattr(row, f"u_{name}") for name in RECORD_FIELDS})
            pairs[row.request_id] = (_as_llm(row), record)

    for chunk in _chunks(sorted(set(request_ids))):
        collect(joined.where(llm_usage.c.request_id.in_(chunk)))
    if since is not None:
        collect(joined.where(llm_usage.c.received_at >= since))
    return pairs


def _apply_pairs(conn: sa.Connection, pairs: dict[str, tuple[LlmUsage, UsageRecord]], card: Callable[[], RateCard],
                 now: datetime, counts: LlmMergeCounts) -> dict[str, str]:
    """Apply pending LLM usage to stored rows; the status each LLM record got, by request id.

    Each record is claimed first (``pending`` → its new status, one UPDATE that only one writer can
    win), then its row updated only where it still has no reported usage: two writers settling the
    same pair apply it once."""
    settled: dict[str, str] = {}
    for request_id in sorted(pairs):
        usage, row = pairs[request_id]
        merged = merge_usage(row, usage, card())
        if merged is None:
            status = UNNEEDED
        elif implausible(row, usage):
            status = IMPLAUSIBLE
        else:
            status = MERGED
        if not _set_status(conn, request_id, status, now):
            continue  # another writer settled it
        if status == MERGED and merged is not None:
            values = {name: getattr(merged, name) for name in MERGED_COLUMNS}
            updated = conn.execute(
                usage_records.update()
                .where(usage_records.c.request_id == request_id, usage_records.c.usage_source != "reported")
                .values(**values)
            )
            if updated.rowcount == 1:
                counts.changed_tokens += merged.total_tokens - row.total_tokens
                counts.changed_cost += (merged.total_cost or Decimal(0)) - (row.total_cost or Decimal(0))
            else:
                status = UNNEEDED
                _set_status(conn, request_id, status, now, claimed=MERGED)
        settled[request_id] = status
    return settled


def _count(counts: LlmMergeCounts, statuses: dict[str, str]) -> None:
    for request_id, status in statuses.items():
        if status == MERGED:
            counts.merged += 1
        elif status == PENDING:
            counts.pending += 1
            counts.pending_ids.append(request_id)
        elif status in REFUSED:
            counts.refused += 1
        else:
            counts.duplicates += 1  # the row already had the provider's reported usage


def finish_llm_merge(conn: sa.Connection, merge: LlmMerge, inserted_ids: set[str]) -> LlmMergeCounts:
    """After the rows are inserted: settle the LLM usage applied at insert, apply pending usage to rows
    stored earlier, and count this batch's LLM units (merged, pending, refused, or duplicates)."""
    now = merge.now
    counts = LlmMergeCounts(duplicates=merge.duplicates)
    for request_id in sorted(merge.applied):
        if request_id in inserted_ids and _set_status(conn, request_id, merge.applied[request_id], now):
            if request_id in merge.new_ids:
                merge.new_ids[request_id] = merge.applied[request_id]
    if not merge.any_pending:  # (then this batch stored no pending LLM usage either)
        _count(counts, merge.new_ids)
        return counts
    stored_earlier = [r.request_id for r in merge.records if r.request_id not in inserted_ids]
    # every LLM id of the batch, new or a duplicate: re-replaying the LLM half completes what waits
    pairs = _stored_pairs(conn, [*merge.batch_ids, *stored_earlier], now - SWEEP_WINDOW)
    settled = _apply_pairs(conn, pairs, lambda: merge.rate_card(conn), now, counts)
    for request_id, status in settled.items():
        if request_id in merge.new_ids:
            merge.new_ids[request_id] = status
    _count(counts, merge.new_ids)
    return counts


@dataclass
class Settled:
    """What ``settle_pending`` did after a batch committed: this batch's LLM records it settled (by
    their new status) and how much it changed rows."""

    statuses: dict[str, str] = field(default_factory=dict)
    changed_tokens: int = 0
    changed_cost: Decimal = Decimal(0)


def settle_pending(conn: sa.Connection, request_ids: Sequence[str], now: datetime) -> Settled:
    """Apply pending LLM usage for these request ids whose rows are now stored: run in its own
    transaction after a batch commits, it completes pairs whose halves two concurrent writers
    committed without seeing each other (see the module doc)."""
    settled = Settled()
    if not request_ids or not has_pending(conn):
        return settled
    pairs = _stored_pairs(conn, request_ids, since=None)
    if not pairs:
        return settled
    card: list[RateCard] = []

    def rate_card() -> RateCard:
        if not card:
            card.append(load_rate_card(conn))
        return card[0]

    counts = LlmMergeCounts()
    settled.statuses = _apply_pairs(conn, pairs, rate_card, now, counts)
    settled.changed_tokens, settled.changed_cost = counts.changed_tokens, counts.changed_cost
    return settled
