"""The LLM-log pairing is commutative under concurrency: a row and its LLM record stored by two
writers that cannot see each other's uncommitted half still end merged — whichever commits last
settles the pair after its commit — and re-replaying either half completes what was left pending
(issue 13, item 8; PostgreSQL for the races, both databases for the replays)."""

from __future__ import annotations

import multiprocessing
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from db import rate_card as rate_card_store
from db import store
from db.engine import make_engine
from db.llm_usage import SWEEP_WINDOW, _insert_llm_usage, _llm_row
from db.migrate import upgrade
from db.schema import llm_usage, usage_records
from events import encode
from llm_records import envelope, llm_record, streamed_request_mode
from metering.ingest import IngestTotals, Ingestor
from metering.model import RawEvent
from metering.pipeline import process_batch
from metering.price.rate_card import parse_rates_csv

CARD = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
)
PAIR_COST = Decimal("0.006")  # 1200 × 2.50 / 1M + 300 × 10.00 / 1M, each pair once merged


def halves(count: int, prefix: str = "race") -> tuple[list[bytes], list[bytes]]:
    """Streamed requests without usage, and the LLM records with their usage, by request id."""
    ids = [f"{prefix}-{i:05d}" for i in range(count)]
    return [encode(streamed_request_mode(i)) for i in ids], [envelope(llm_record(i)) for i in ids]


def load_card(engine) -> None:
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(CARD))


def statuses(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(llm_usage.c.status, sa.func.count()).group_by(llm_usage.c.status)).all())


def reported_cost(engine) -> tuple[int, Decimal]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(usage_records.c.usage_source, usage_records.c.total_cost)).all()
    return sum(r.usage_source == "reported" for r in rows), sum((r.total_cost for r in rows), Decimal(0))


def commit_first(engine, side: sa.Connection) -> None:
    """Commit ``side`` just before the ingestor's batch transaction commits: each half was written
    without seeing the other, the race of two Function instances on two partitions."""
    done = []

    @sa.event.listens_for(engine, "commit")
    def _before_commit(conn):
        if not done:
            done.append(True)
            side.commit()


@pytest.mark.postgres
@pytest.mark.parametrize("racing", ["llm-half-races-the-events", "events-half-races-the-llm-records"])
def test_halves_committed_unseen_are_settled_by_the_last_commit(postgres_engine, racing):
    load_card(postgres_engine)
    ingestor = Ingestor(postgres_engine, rate_card_ttl=0)
    events, records = halves(20)
    mine, theirs = (events, records) if racing.startswith("llm") else (records, events)
    side = postgres_engine.connect()
    side.begin()
    store.store_batch(side, process_batch([RawEvent(b) for b in theirs], ingestor.rate_card()))  # uncommitted
    commit_first(postgres_engine, side)
    totals = ingestor.ingest([RawEvent(b) for b in mine])
    side.close()
    assert statuses(postgres_engine) == {"merged": 20}
    assert reported_cost(postgres_engine) == (20, 20 * PAIR_COST)
    assert totals.read == (totals.inserted + totals.duplicates + totals.quarantined + totals.merged + totals.pending
                           + totals.llm_refused + totals.ignored)
    if racing.startswith("events"):  # this batch's LLM units: settled after the commit, not left pending
        assert (totals.merged, totals.pending) == (20, 0)


def stored_unseen(engine, ingestor: Ingestor, events: list[bytes], records: list[bytes]) -> None:
    """Both halves stored long ago, each without seeing the other (past the sweep window)."""
    card = ingestor.rate_card()
    long_ago = store.utc_now() - 2 * SWEEP_WINDOW
    with engine.begin() as conn:
        _insert_llm_usage(conn, [{**_llm_row(u, long_ago)} for u in process_batch([RawEvent(b) for b in records], card).llm_usage])
        rows = process_batch([RawEvent(b) for b in events], card).records
        store.insert_records(conn, rows, long_ago)


@pytest.mark.parametrize("again", ["llm-half", "events-half"])
def test_re_replaying_either_half_completes_pending_pairs(engine, again):
    load_card(engine)
    ingestor = Ingestor(engine, rate_card_ttl=0)
    events, records = halves(30, prefix=again)
    stored_unseen(engine, ingestor, events, records)
    ingestor.ingest([RawEvent(b) for b in halves(1, prefix="unrelated")[0]])  # any later batch: not enough
    assert statuses(engine) == {"pending": 30}
    totals = IngestTotals()
    for start in range(0, 30, 7):
        chunk = (records if again == "llm-half" else events)[start:start + 7]
        totals.add(ingestor.ingest([RawEvent(b) for b in chunk]))
    assert statuses(engine) == {"merged": 30}
    assert reported_cost(engine)[0] == 30
    assert totals.duplicates == 30 and totals.inserted == 0  # redeliveries, which completed their pairs


@pytest.mark.parametrize("order", ["events-then-llm", "llm-then-events"])
def test_both_orders_in_separate_replays(engine, order):
    load_card(engine)
    ingestor = Ingestor(engine, rate_card_ttl=0)
    events, records = halves(60, prefix=order)
    first, second = (events, records) if order.startswith("events") else (records, events)
    for half in (first, second):
        for start in range(0, 60, 25):
            ingestor.ingest([RawEvent(b) for b in half[start:start + 25]])
    assert statuses(engine) == {"merged": 60}
    assert reported_cost(engine) == (60, 60 * PAIR_COST)


def replay_half(url: str, which: str, count: int, start) -> dict:
    """One writer process: the events half or the LLM half, in small batches, starting together."""
    events, records = halves(count)
    bodies = events if which == "events" else records
    engine = make_engine(url)
    ingestor = Ingestor(engine)
    ingestor.rate_card()
    start.wait(120)
    began = time.time()
    totals = IngestTotals()
    for position in range(0, count, 25):
        totals.add(ingestor.ingest([RawEvent(b, source_partition=which) for b in bodies[position:position + 25]]))
    engine.dispose()
    return {"read": totals.read, "merged": totals.merged, "pending": totals.pending, "inserted": totals.inserted,
            "began": began, "ended": time.time()}


@pytest.mark.postgres
@pytest.mark.slow
def test_replaying_events_and_llm_logs_concurrently_into_postgres(postgres_url):
    engine = make_engine(postgres_url)
    upgrade(engine)
    load_card(engine)
    count = 1500
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as pool:
        start = manager.Barrier(2)
        running = [pool.apply_async(replay_half, (postgres_url, which, count, start)) for which in ("events", "llm")]
        results = [r.get(timeout=300) for r in running]
    assert max(r["began"] for r in results) < min(r["ended"] for r in results)  # they really overlapped
    assert statuses(engine) == {"merged": count}
    assert reported_cost(engine) == (count, count * PAIR_COST)
    engine.dispose()
