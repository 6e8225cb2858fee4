"""Ingest: the composition every entry point shares — process a batch (pure), then store it in
one transaction. The Function, ``metering replay`` and ``metering quarantine retry`` use it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.engine import Engine

from db.store import load_rate_card, store_batch
from metering.model import RawEvent
from metering.pipeline import process_batch
from metering.pricing import RateCard


@dataclass
class IngestTotals:
    """Running totals of what ingest did; ``read == inserted + duplicates + quarantined`` always."""

    read: int = 0
    inserted: int = 0
    duplicates: int = 0
    quarantined: int = 0
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

    def llm_summary(self) -> str:
        """The LLM-log part of the summary line; empty when the input had no diagnostic logs."""
        if not (self.merged or self.pending or self.ignored):
            return ""
        return (f" | llm usage merged {self.merged:,} | llm usage pending {self.pending:,}"
                f" | log records ignored {self.ignored:,}")

    def add(self, other: "IngestTotals") -> None:
        self.read += other.read
        self.inserted += other.inserted
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.tokens += other.tokens
        self.cost += other.cost
        self.unpriced += other.unpriced
        self.batches += other.batches
        self.merged += other.merged
        self.pending += other.pending
        self.ignored += other.ignored

    def summary(self) -> str:
        return (
            f"events read {self.read:,} | rows inserted {self.inserted:,} | duplicates skipped {self.duplicates:,}"
            f" | quarantined {self.quarantined:,}{self.llm_summary()} | tokens {self.tokens:,} | cost {self.cost.quantize(Decimal('0.01'))}"
            f" | unpriced rows {self.unpriced:,}"
        )


class Ingestor:
    """Processes and stores batches against one engine, reusing the rate card between batches.

    The rate card is re-read at most every ``rate_card_ttl`` seconds (a long-lived Function host
    picks up a new card within that time without a query per event or per batch).
    """

    def __init__(self, engine: Engine, rate_card_ttl: float = 60.0):
        self.engine = engine
        self.rate_card_ttl = rate_card_ttl
        self._card: RateCard | None = None
        self._card_loaded_at = 0.0

    def rate_card(self) -> RateCard:
        now = time.monotonic()
        if self._card is None or now - self._card_loaded_at > self.rate_card_ttl:
            with self.engine.connect() as conn:
                self._card = load_rate_card(conn)
            self._card_loaded_at = now
        return self._card

    def ingest(self, raws: Sequence[RawEvent]) -> IngestTotals:
        """Process and store one batch atomically. Storage errors propagate (nothing half-written)."""
        outcome = process_batch(raws, self.rate_card())
        with self.engine.begin() as conn:
            stored = store_batch(conn, outcome)
        return IngestTotals(
            read=outcome.events_read,
            inserted=stored.inserted,
            duplicates=stored.duplicates,
            quarantined=stored.quarantined,
            tokens=stored.inserted_tokens + stored.merged_tokens,  # merges change rows stored earlier
            cost=stored.inserted_cost + stored.merged_cost,
            unpriced=stored.inserted_unpriced,
            merged=stored.merged,
            pending=stored.pending,
            ignored=outcome.ignored,
            batches=1,
        )
