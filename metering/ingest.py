"""Ingest: the composition every entry point shares — process a batch (pure), then store it in
one transaction. The Function, ``metering replay`` and ``metering quarantine retry`` use it."""

from __future__ import annotations

import gc
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from db import quarantine as quarantine_store
from db.batches import settle_creators
from db.conflicts import is_write_conflict, without_event_data
from db.llm_usage import MERGED, PENDING, REFUSED, has_pending, settle_pending
from db.store import keep_quarantined, store_batch, utc_now
from db.rate_card import load_rate_card
from metering.model import BatchOutcome, PipelineSettings, RawEvent, StoreResult
from metering.pipeline import conflict_item, process_batch
from metering.price.pricing import RateCard
from metering.usage.batches import BATCH_KEY_PREFIX

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A batch is stored in parts while the next part is processed (``PartWriter``) when it has more events
#: than twice this; each part is ``PART_SHARE`` of what remains, down to ``PART_EVENTS``: processing an
#: event takes several times what the server spends storing its row, so each part's storing is hidden
#: behind the next, smaller part's processing, and only the last, small part's is waited for. Every
#: part costs a few statements of its own (about a millisecond), so parts are few.
PART_EVENTS = 32
PART_SHARE = 0.75


def part_sizes(events: int) -> list[int]:
    """The sizes of the parts of a batch of ``events`` (one part when it is small)."""
    sizes: list[int] = []
    while events > 2 * PART_EVENTS:
        size = int(events * PART_SHARE)
        sizes.append(size)
        events -= size
    if events:
        sizes.append(events)
    return sizes

@dataclass
class IngestTotals:
    """Running totals of what ingest did; ``read == inserted + duplicates + quarantined`` always.

    A truncated event that became a row counts as inserted (or duplicate) only; the copy of its
    bytes kept in ``quarantine`` for audit is not "quarantined". ``truncated`` counts such new rows.
    """

    read: int = 0
    inserted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantined_known: int = 0  # of ``quarantined``: already in quarantine from an earlier delivery
    tokens: int = 0
    cost: Decimal = field(default_factory=lambda: Decimal(0))
    unpriced: int = 0
    batches: int = 0
    # APIM LLM-log records (metering/llm_logs.py), each its own unit of ``read``: applied to a row,
    # kept until their metering event arrives, or ignored (other log categories). With them,
    # ``read == inserted + duplicates + quarantined + merged + pending + ignored``.
    merged: int = 0
    pending: int = 0
    ignored: int = 0
    truncated: int = 0
    batch_jobs_metered: int = 0  # finished Batch API jobs metered (rows ``batch:<id>``, not units of ``read``)
    # LLM-log records kept but applied to no row: ``unsigned`` (signatures on, route not trusted) or
    # ``implausible`` (numbers the row's own event contradicts); a unit of ``read`` like ``pending``.
    llm_refused: int = 0
    # Of ``duplicates``: a different event under a stored request id, kept in quarantine as
    # ``conflicting_duplicate`` (the first stored wins).
    conflicting: int = 0

    def _known(self) -> str:
        """Says how many quarantined events were there already, so a re-replay does not read as new."""
        return f" ({self.quarantined_known:,} already in quarantine)" if self.quarantined_known else ""

    def llm_summary(self) -> str:
        """The LLM-log part of the summary line; empty when the input had no diagnostic logs."""
        if not (self.merged or self.pending or self.ignored or self.llm_refused):
            return ""
        refused = (f" | llm usage refused {self.llm_refused:,} (unsigned or implausible: kept, changed no row)"
                   if self.llm_refused else "")
        return (f" | llm usage merged {self.merged:,} | llm usage pending {self.pending:,}{refused}"
                f" | log records ignored {self.ignored:,}")

    def _conflicting(self) -> str:
        return (f" ({self.conflicting:,} conflicting: different content, kept in quarantine as conflicting_duplicate)"
                if self.conflicting else "")

    def add(self, other: "IngestTotals") -> None:
        self.read += other.read
        self.inserted += other.inserted
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.quarantined_known += other.quarantined_known
        self.tokens += other.tokens
        self.cost += other.cost
        self.unpriced += other.unpriced
        self.batches += other.batches
        self.merged += other.merged
        self.pending += other.pending
        self.ignored += other.ignored
        self.truncated += other.truncated
        self.batch_jobs_metered += other.batch_jobs_metered
        self.llm_refused += other.llm_refused
        self.conflicting += other.conflicting

    def summary(self) -> str:
        text = (
            f"events read {self.read:,} | rows inserted {self.inserted:,} | duplicates skipped {self.duplicates:,}{self._conflicting()}"
            f" | quarantined {self.quarantined:,}{self._known()}{self.llm_summary()} | tokens {self.tokens:,} | cost {self.cost.quantize(Decimal('0.01'))}"
            f" | unpriced rows {self.unpriced:,}"
        )
        if self.truncated:
            text += f" | truncated rows {self.truncated:,} (bytes kept in quarantine for audit)"
        if self.batch_jobs_metered:
            text += f" | batch jobs metered {self.batch_jobs_metered:,}"
        return text


# Unresolved quarantine rows that ``retry`` never runs through the pipeline, and why.
SKIPPED_WHY = {
    "bad_signature": "signatures are not checked without METERING_SIGNING_SECRET",
    "oversized": "only the first bytes of each were kept, so it cannot be counted (replay the source "
                 "with a larger METERING_MAX_EVENT_BYTES if it is genuine)",
}


@dataclass
class RetryTotals:
    """What ``metering quarantine retry`` did: rows resolved (a new row, or one already stored)
    and rows still failing, by today's reason."""

    retried: int = 0
    resolved: int = 0
    inserted: int = 0
    duplicates: int = 0
    tokens: int = 0
    cost: Decimal = field(default_factory=lambda: Decimal(0))
    still_failing: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        failing = sum(self.still_failing.values())
        text = (
            f"retried {self.retried:,} | resolved {self.resolved:,} (rows inserted {self.inserted:,}, already stored"
            f" {self.duplicates:,}) | still failing {failing:,} | tokens {self.tokens:,}"
            f" | cost {self.cost.quantize(Decimal('0.01'))}"
        )
        if failing:
            text += "\nstill failing by reason: " + ", ".join(f"{r} {n:,}" for r, n in sorted(self.still_failing.items()))
        for reason, count in sorted(self.skipped.items()):
            text += f"\nskipped {count:,} {reason} row(s): {SKIPPED_WHY.get(reason, 'not retried')}"
        return text


def _totals(outcome: BatchOutcome, stored: StoreResult) -> IngestTotals:
    return IngestTotals(
        read=outcome.events_read,
        inserted=stored.inserted,
        duplicates=stored.duplicates,
        quarantined=stored.quarantined,
        quarantined_known=stored.quarantined_known,
        tokens=stored.inserted_tokens + stored.merged_tokens,  # merges change rows stored earlier
        cost=stored.inserted_cost + stored.merged_cost,
        unpriced=stored.inserted_unpriced,
        merged=stored.merged,
        pending=stored.pending,
        ignored=outcome.ignored,
        batches=1,
        truncated=stored.inserted_truncated,
        batch_jobs_metered=stored.batches_metered,
        llm_refused=stored.llm_refused,
        conflicting=len(stored.conflicting),
    )


def store_with_conflicts(conn: sa.Connection, outcome: BatchOutcome, settings: PipelineSettings,
                         now: datetime, llm_pending: bool | None = None) -> StoreResult:
    """``store_batch``, then keep each conflicting duplicate's bytes in quarantine (same transaction)."""
    stored = store_batch(conn, outcome, now, llm_pending)
    items = [conflict_item(outcome.sources[c.new_sha256], c, settings)
             for c in stored.conflicting if c.new_sha256 in outcome.sources]
    if items:
        keep_quarantined(conn, items, now)
    return stored


_heap_frozen = False


def freeze_startup_heap() -> None:
    """Take what the process holds after its setup (imports, SQLAlchemy's tables, the engine) out of
    the collector's generations for good (``gc.freeze``), once per process. A process that ingests for
    hours keeps all of it, and each full collection, about one per 5,000 events, walked it: 36 ms
    each, 2.5 ms once frozen. For the long-lived entry points (the Function, ``metering consume``,
    ``metering replay``), after they built their ingestor."""
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()


class PartWriter:
    """Stores the parts of one batch, in order, in one transaction of a thread of its own, while the
    caller processes the next part: on a database server, the server's time (PostgreSQL spends about
    30 µs a row parsing, indexing and logging, twice the client's own) passes while this process
    works instead of while it waits. SQLite runs in this process: there is nothing to hide.

    The rows and counts are the plain way's: each part is ``store_with_conflicts`` in the batch's
    transaction, and the parts written so have disjoint request ids, so each part deduplicates as
    the whole batch would and meets only earlier batches' rows as stored. Nothing is half-written:
    ``finish()`` commits once every part is stored, and ``abandon()`` or an error rolls it all back.
    The caller abandons, and stores the batch the plain way (``Ingestor.ingest``), when a request id
    comes back in a later part (a redelivery inside the batch) or a part holds LLM-log records or
    Batch API jobs (matched across the whole batch at once).
    """

    _COMMIT, _ABANDON = object(), object()

    def __init__(self, engine: Engine, store: Callable[[sa.Connection, BatchOutcome], StoreResult]):
        self._engine = engine
        self._store = store
        self._parts: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._results: list[StoreResult] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, name="metering-part-writer", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        try:
            with self._engine.begin() as conn:
                while (part := self._parts.get()) is not self._COMMIT:
                    if part is self._ABANDON:
                        raise _Abandoned
                    self._results.append(self._store(conn, part))  # type: ignore[arg-type]
        except _Abandoned:
            self._results = []
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread by finish()
            self.error = exc

    def put(self, outcome: BatchOutcome) -> None:
        self._parts.put(outcome)

    def abandon(self) -> None:
        """Roll back every part stored; returns when the thread has ended."""
        self._parts.put(self._ABANDON)
        self._thread.join()

    def finish(self) -> list[StoreResult]:
        """Commit every part; each part's result, in order. Raises the error that rolled them back."""
        self._parts.put(self._COMMIT)
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self._results


class _Abandoned(Exception):
    """The batch is stored the plain way: roll its parts back."""


def _needs_whole_batch(outcome: BatchOutcome) -> bool:
    return bool(outcome.llm_usage or outcome.batch_jobs or outcome.batch_usage)


def _merged(outcomes: Sequence[BatchOutcome], *, with_quarantine: bool = True) -> BatchOutcome:
    """The parts of a batch as one outcome (what processing the whole batch at once gives);
    ``with_quarantine=False``: without their quarantine items and audit copies (a retry's are the
    quarantine rows being retried)."""
    whole = BatchOutcome()
    for part in outcomes:
        whole.records += part.records
        whole.events_read += part.events_read
        whole.llm_usage += part.llm_usage
        whole.ignored += part.ignored
        whole.batch_jobs += part.batch_jobs  # a Batch API call: its job, or its finished job's row
        whole.batch_usage += part.batch_usage
        whole.sources.update(part.sources)
        if with_quarantine:
            whole.quarantined += part.quarantined
            whole.audit += part.audit
    return whole


class Ingestor:
    """Processes and stores batches against one engine, reusing the rate card between batches.

    The rate card is re-read at most every ``rate_card_ttl`` seconds (a long-lived Function host
    picks up a new card within that time without a query per event or per batch).

    A write conflict with a concurrent writer (deadlock victim, serialization failure, SQL Server
    duplicate key, SQLite busy) rolls the batch back and stores it again, up to
    ``conflict_retries`` times with a short jittered pause; any other database error propagates
    at once (nothing of the batch is written) so that the caller's retry policy redelivers it.
    """

    def __init__(
        self,
        engine: Engine,
        rate_card_ttl: float = 60.0,
        settings: PipelineSettings | None = None,
        conflict_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        store_in_parts: bool = True,
    ):
        self.engine = engine
        self.rate_card_ttl = rate_card_ttl
        self.settings = settings or PipelineSettings()
        self.conflict_retries = conflict_retries
        self._sleep = sleep
        # On a database server, store a batch in parts while the next part is processed (PartWriter).
        # Off where sibling processes keep every core busy (a replay with a worker per core): the
        # server's time cannot be hidden then, and the writer threads cost a tenth of the throughput
        # (bench_replay.py, two workers on two cores: 7,055 events/s with them, 7,823 without).
        self.store_in_parts = store_in_parts
        self._card: RateCard | None = None
        self._card_loaded_at = 0.0

    def rate_card(self) -> RateCard:
        now = time.monotonic()
        if self._card is None or now - self._card_loaded_at > self.rate_card_ttl:
            with self.engine.connect() as conn:
                self._card = load_rate_card(conn)
            self._card_loaded_at = now
        return self._card

    def _in_transaction(self, work: Callable[[sa.Connection], T]) -> T:
        for attempt in range(self.conflict_retries + 1):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except sa.exc.DBAPIError as exc:
                if attempt >= self.conflict_retries or not is_write_conflict(exc):
                    raise without_event_data(exc) from None
                pause = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
                log.warning("write conflict storing a batch (attempt %d): %s; retrying in %.2f s",
                            attempt + 1, type(exc.orig).__name__, pause)
                self._sleep(pause)
        raise AssertionError("unreachable")

    def ingest(self, raws: Sequence[RawEvent]) -> IngestTotals:
        """Process and store one batch atomically. Storage errors propagate (nothing half-written).

        After the commit, LLM-log usage waiting for this batch's request ids is settled in a short
        second transaction (``settle_pending``), and so are the creators of this batch's Batch API
        jobs (``settle_creators``): a concurrent writer may have committed the other half unseen,
        and the settle that starts last sees both."""
        now = utc_now()
        card = self.rate_card()
        if not self.store_in_parts or self.engine.dialect.name == "sqlite" or len(raws) <= 2 * PART_EVENTS:
            outcome = process_batch(raws, card, self.settings, now)
            totals, pending = self._store_whole(outcome, now)
        else:
            outcome, totals, pending = self._ingest_in_parts(raws, card, now)
        self._settle(outcome, totals, pending)
        self._settle_batch_jobs(outcome)
        return totals

    def _store_whole(self, outcome: BatchOutcome, now: datetime) -> tuple[IngestTotals, list[str]]:
        stored = self._in_transaction(lambda conn: store_with_conflicts(conn, outcome, self.settings, now))
        return _totals(outcome, stored), stored.pending_ids

    def _ingest_in_parts(self, raws: Sequence[RawEvent], card: RateCard,
                         now: datetime) -> tuple[BatchOutcome, IngestTotals, list[str]]:
        """``ingest`` on a database server: each part (``part_sizes``) is stored (``PartWriter``) while the
        next is processed. A write conflict, or a part that needs the whole batch, sends the
        batch the plain way, with its retries; any other storage error propagates, nothing written."""
        outcomes: list[BatchOutcome] = []
        stored_ids: set[str] = set()  # parts with disjoint request ids deduplicate as the whole batch does
        pending: list[bool] = []  # whether LLM usage waits: read once per batch, as the plain way does

        def store_part(conn: sa.Connection, part: BatchOutcome) -> StoreResult:
            if not pending:
                pending.append(has_pending(conn))
            return store_with_conflicts(conn, part, self.settings, now, llm_pending=pending[0])

        writer: PartWriter | None = PartWriter(self.engine, store_part)
        try:
            start = 0
            for size in part_sizes(len(raws)):
                part = process_batch(raws[start:start + size], card, self.settings, now)
                start += size
                outcomes.append(part)
                ids = {record.request_id for record in part.records}
                if writer is not None and (_needs_whole_batch(part) or writer.error is not None
                                           or not stored_ids.isdisjoint(ids)):
                    writer.abandon()
                    failed, writer = writer.error, None
                    if failed is not None:
                        self._raise_unless_conflict(failed)
                if writer is not None:
                    writer.put(part)
                    stored_ids |= ids
        except BaseException:
            if writer is not None:
                writer.abandon()  # processing raised (a bug): nothing of the batch is committed
            raise
        results = None
        if writer is not None:
            try:
                results = writer.finish()
            except sa.exc.DBAPIError as exc:
                self._raise_unless_conflict(exc)
        whole = _merged(outcomes)
        if results is None:
            totals, pending = self._store_whole(whole, now)
            return whole, totals, pending
        totals = IngestTotals()
        for part, stored in zip(outcomes, results):
            totals.add(_totals(part, stored))
        totals.batches = 1
        return whole, totals, [key for stored in results for key in stored.pending_ids]

    @staticmethod
    def _raise_unless_conflict(exc: BaseException) -> None:
        """A write conflict is retried the plain way; any other error propagates."""
        if isinstance(exc, sa.exc.DBAPIError):
            if is_write_conflict(exc):
                log.warning("write conflict storing a batch in parts (%s); storing it whole", type(exc.orig).__name__)
                return
            raise without_event_data(exc) from None
        raise exc

    def _settle_unseen(self, ids: Sequence[str], work: Callable[[sa.Connection, list[str]], T], failure: str) -> T | None:
        """``work(conn, ids)`` in a short transaction after a batch's commit, for what a concurrent
        writer committed unseen; ``None`` on SQLite (writers are serialised: BEGIN IMMEDIATE, so the
        batch saw every earlier commit), without ids, or when it fails — the batch is committed, so
        that is logged (``failure``: what waits, and for what), not raised."""
        if self.engine.dialect.name == "sqlite" or not ids:
            return None
        try:
            return self._in_transaction(lambda conn: work(conn, list(ids)))
        except sa.exc.DBAPIError as exc:
            log.warning(failure, type(exc.orig).__name__)
            return None

    def _settle_batch_jobs(self, outcome: BatchOutcome) -> None:
        """Charge this batch's Batch API job rows to creators a concurrent writer committed unseen
        (db/batches.py), or this batch's creations to rows a concurrent writer stored unseen."""
        ids = sorted({*(job.batch_id for job in outcome.batch_jobs),
                      *(row.request_id[len(BATCH_KEY_PREFIX):] for row in outcome.batch_usage)})
        self._settle_unseen(ids, settle_creators,
                            "could not charge Batch API jobs to their creators after a batch (%s); a row without a "
                            "subscription stays so until the creation is replayed")

    def _settle(self, outcome: BatchOutcome, totals: IngestTotals, stored_pending: Sequence[str]) -> None:
        """Complete LLM-log pairs whose halves were committed concurrently (see ``ingest``)."""
        ids = sorted({*(r.request_id for r in outcome.records), *(u.request_id for u in outcome.llm_usage)})
        settled = self._settle_unseen(ids, lambda conn, keys: settle_pending(conn, keys, utc_now()),
                                      "could not settle LLM-log usage after a batch (%s); it stays pending until a "
                                      "later batch or a replay of either half completes it")
        if settled is None:
            return
        waiting = set(stored_pending)  # this batch's LLM units, counted pending a moment ago
        for request_id, status in settled.statuses.items():
            if request_id not in waiting or status == PENDING:
                continue
            totals.pending -= 1
            if status == MERGED:
                totals.merged += 1
            elif status in REFUSED:
                totals.llm_refused += 1
            else:
                totals.duplicates += 1  # the row had reported usage after all (as finish_llm_merge counts it)
        totals.tokens += settled.changed_tokens
        totals.cost += settled.changed_cost

    def retry_quarantined(
        self,
        *,
        reasons: Sequence[str] | None = None,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
        page_size: int = 200,
    ) -> RetryTotals:
        """Run unresolved quarantine rows through today's pipeline again (``process_batch`` per
        row, then ``store_batch`` for a page of rows in one transaction, as ``ingest`` does).

        A row whose bytes now become a usage row (new, or already stored by a later delivery) or
        LLM-log usage is marked ``resolved_at`` with a note in ``detail``; its bytes stay. A row that
        still fails keeps its place with today's reason and detail. No quarantine row is inserted:
        the row being retried already holds these bytes (and stays the audit copy of a truncated
        event), so the unique ``raw_sha256`` is never hit. Without a signing secret,
        ``bad_signature`` rows are skipped, never accepted unverified.
        """
        totals = RetryTotals()
        exclude: list[str] = []
        if reasons is None or "oversized" in reasons:  # a prefix only: decoding it could salvage a forged row
            exclude.append("oversized")
            with self.engine.connect() as conn:
                skipped = quarantine_store.count_unresolved(conn, ["oversized"])
            if skipped:
                totals.skipped["oversized"] = skipped
        if not self.settings.signing and (reasons is None or "bad_signature" in reasons):
            exclude.append("bad_signature")
            with self.engine.connect() as conn:
                skipped = quarantine_store.count_unresolved(conn, ["bad_signature"])
            if skipped:
                totals.skipped["bad_signature"] = skipped
        card = self.rate_card()
        for page in quarantine_store.unresolved_pages(
            self.engine, page_size=page_size, reasons=reasons, exclude_reasons=exclude, ids=ids, limit=limit
        ):
            started = utc_now()
            results = [(row, process_batch([RawEvent(row.raw, row.source_partition, row.source_sequence_number)],
                                           card, self.settings, started)) for row in page]
            outcome = _merged([alone for _, alone in results], with_quarantine=False)

            failing: dict[int, str] = {}  # quarantine row id → today's reason, for rows that still fail

            def work(conn: sa.Connection) -> StoreResult:
                now = utc_now()
                stored = store_with_conflicts(conn, outcome, self.settings, now)
                conflicting = {c.new_sha256: c for c in stored.conflicting}
                failing.clear()
                for row, alone in results:
                    problems = list(alone.quarantined)
                    clash = next((conflicting[r.event_sha256] for r in alone.records if r.event_sha256 in conflicting), None)
                    if clash is not None:  # still a different event under a stored request id
                        problems.append(conflict_item(RawEvent(row.raw), clash, self.settings))
                    if problems:
                        failing[row.id] = problems[0].reason
                        reason = problems[0].reason
                        detail = "; ".join(q.detail for q in problems)
                        quarantine_store.mark_still_failing(conn, row, reason, detail, now)
                        continue
                    if alone.records:
                        how = "stored as a truncated row" if alone.records[0].truncated else "stored as a row"
                    elif alone.llm_usage:
                        how = "kept as LLM-log usage"
                    else:
                        how = "nothing to store (ignored)"
                    quarantine_store.mark_resolved(conn, row, now, f"resolved by retry at {now:%Y-%m-%d %H:%M:%SZ}: {how}")
                return stored

            stored = self._in_transaction(work)
            self._settle_batch_jobs(outcome)
            totals.retried += len(page)
            totals.inserted += stored.inserted
            totals.duplicates += stored.duplicates
            totals.tokens += stored.inserted_tokens + stored.merged_tokens
            totals.cost += stored.inserted_cost + stored.merged_cost
            for row, _ in results:
                if row.id in failing:
                    reason = failing[row.id]
                    totals.still_failing[reason] = totals.still_failing.get(reason, 0) + 1
                else:
                    totals.resolved += 1
        return totals
