"""Concurrent writers: several processes replay shuffled, overlapping copies of one corpus at once.

Every request id must be stored exactly once, no writer may fail (no deadlock, no unique-key error
escaping), and the database must equal one clean pass of the corpus: the same rows with the same
tokens and costs, the same quarantine rows.
"""

from __future__ import annotations

import multiprocessing
import random
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from db import rate_card as rate_card_store
from db import store
from db.engine import make_engine
from db.migrate import upgrade
from db.schema import quarantine, usage_records
from metering.ingest import IngestTotals, Ingestor
from metering.model import RawEvent
from metering.pipeline import process_batch
from metering.price.rate_card import parse_rates_csv

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from corpus import CorpusBuilder  # noqa: E402

SEED = 11
WORKERS = 4


def corpus(size: int) -> list[bytes]:
    return list(CorpusBuilder(seed=SEED, max_stream_chunks=40).events(size))


def worker_plan(size: int, worker: int) -> tuple[list[int], list[int]]:
    """Which events this worker replays, in what order, in which batch sizes. Each event is in 3
    of the 4 streams (so every pair of workers overlaps), some twice. Even workers shuffle only
    locally, so that they write the same request ids at the same moment (the contended case: a
    redelivery racing the first delivery); odd workers shuffle the whole stream."""
    rng = random.Random(1000 + worker)
    indices = [i for i in range(size) if (i + worker) % WORKERS != 0]
    indices += rng.sample(indices, len(indices) // 50)  # redelivered within the same stream
    if worker % 2:
        rng.shuffle(indices)
    else:
        indices.sort(key=lambda i: i + rng.randrange(150))
    sizes = []
    remaining = len(indices)
    while remaining:
        sizes.append(min(remaining, rng.randrange(20, 260)))
        remaining -= sizes[-1]
    return indices, sizes


def replay_worker(url: str, size: int, worker: int, start) -> dict:
    """One writer process: its own engine, the shared pipeline, its shuffled stream."""
    events = corpus(size)
    indices, sizes = worker_plan(size, worker)
    engine = make_engine(url)
    ingestor = Ingestor(engine)
    ingestor.rate_card()
    totals = IngestTotals()
    start.wait(120)  # a barrier: every writer has its corpus, engine and rate card; all begin together
    began = time.time()
    position = 0
    for count in sizes:
        batch = [RawEvent(events[i], source_partition=str(worker)) for i in indices[position : position + count]]
        position += count
        totals.add(ingestor.ingest(batch))
    engine.dispose()
    return {"read": totals.read, "inserted": totals.inserted, "duplicates": totals.duplicates,
            "quarantined": totals.quarantined, "tokens": totals.tokens, "cost": str(totals.cost),
            "began": began, "ended": time.time()}


def load_sample_card(engine) -> None:
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv((ROOT / "samples" / "rates.csv").read_text()))


def run_concurrently(url: str, size: int) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(WORKERS) as pool:
        start = manager.Barrier(WORKERS)
        pending = [pool.apply_async(replay_worker, (url, size, w, start)) for w in range(WORKERS)]
        return [p.get(timeout=240) for p in pending]


def assert_equals_one_clean_pass(engine, size: int, results: list[dict]) -> None:
    events = corpus(size)
    with engine.connect() as conn:
        card = rate_card_store.load_rate_card(conn)
        stored = {r.request_id: r for r in conn.execute(sa.select(usage_records))}
        quarantined = conn.execute(sa.select(quarantine.c.raw_sha256, quarantine.c.reason, quarantine.c.resolved_at)).all()
        repeated = conn.execute(
            sa.select(usage_records.c.request_id).group_by(usage_records.c.request_id).having(sa.func.count() > 1)
        ).all()
    clean = process_batch([RawEvent(e) for e in events], card)
    expected = {r.request_id: r for r in clean.records}
    assert not repeated
    assert set(stored) == set(expected)
    for request_id, row in stored.items():
        want = expected[request_id]
        assert (row.total_tokens, row.prompt_tokens, row.completion_tokens, row.total_cost, row.price_status, row.truncated) == (
            want.total_tokens, want.prompt_tokens, want.completion_tokens, want.total_cost, want.price_status, want.truncated
        ), request_id
    expected_quarantine = {store.raw_digest(q.raw): (q.reason, False) for q in clean.quarantined}
    expected_quarantine.update({store.raw_digest(q.raw): (q.reason, True) for q in clean.audit})
    assert {d: (reason, resolved is not None) for d, reason, resolved in quarantined} == expected_quarantine

    # What the writers reported adds up: every event read once per stream is inserted, a duplicate
    # or quarantined; together they inserted each request id exactly once.
    streams = sum(len(worker_plan(size, w)[0]) for w in range(WORKERS))
    assert sum(r["read"] for r in results) == streams
    for r in results:
        assert r["read"] == r["inserted"] + r["duplicates"] + r["quarantined"]
    assert sum(r["inserted"] for r in results) == len(expected)
    assert sum(r["tokens"] for r in results) == sum(r.total_tokens for r in clean.records)
    assert sum(Decimal(r["cost"]) for r in results) == sum((r.total_cost for r in clean.records if r.total_cost is not None), Decimal(0))
    reasons = Counter(q.reason for q in clean.quarantined)
    assert reasons and len(clean.audit) > 0  # the corpus exercises quarantine and truncation
    # ...and the writers really ran at the same time.
    assert max(r["began"] for r in results) < min(r["ended"] for r in results)


@pytest.mark.postgres
@pytest.mark.slow
def test_four_processes_replaying_overlapping_streams_into_postgres(postgres_url):
    engine = make_engine(postgres_url)
    upgrade(engine)
    load_sample_card(engine)
    results = run_concurrently(postgres_url, 5000)
    assert_equals_one_clean_pass(engine, 5000, results)
    engine.dispose()


@pytest.mark.slow
def test_four_processes_replaying_overlapping_streams_into_sqlite(sqlite_url):
    engine = make_engine(sqlite_url)
    upgrade(engine)
    load_sample_card(engine)
    results = run_concurrently(sqlite_url, 1200)
    assert_equals_one_clean_pass(engine, 1200, results)
    engine.dispose()
