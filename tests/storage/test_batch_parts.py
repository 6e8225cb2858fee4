"""A batch stored in parts while the next part is processed (metering/ingest.py, ``PartWriter``): on a
database server, every batch ends as the plain way stores it (the same rows, quarantine and totals),
nothing of a failed batch is written, and batches that need the whole batch at once are stored so."""

from __future__ import annotations

import random
import sys
import threading
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

import metering.ingest as ingest_module
from db.schema import llm_usage
from llm_records import envelope, llm_record
from metering.ingest import PART_EVENTS, Ingestor, PartWriter, part_sizes
from metering.model import RawEvent
from test_storage_faults import Faults, counts, deliver_until_stored, load_card, snapshot

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from corpus import CorpusBuilder  # noqa: E402

pytestmark = pytest.mark.postgres


def large_batches(seed: int = 11, events: int = 1400) -> list[list[RawEvent]]:
    """Batches of 150–500 events, as the Function gets them; half carry a redelivered stretch of an
    earlier batch, and some an event of their own twice (a request id in two parts)."""
    rng = random.Random(seed)
    bodies = list(CorpusBuilder(seed=31, max_stream_chunks=30).events(events))
    out, position = [], 0
    while position < len(bodies):
        size = rng.randrange(150, 500)
        batch = [RawEvent(b, source_partition="1", source_sequence_number=position + i)
                 for i, b in enumerate(bodies[position:position + size])]
        if position and rng.random() < 0.5:
            start = rng.randrange(position)
            batch += [RawEvent(b, source_partition="1", source_sequence_number=start + i)
                      for i, b in enumerate(bodies[start:start + rng.randrange(5, 40)])]
        if rng.random() < 0.3:
            batch.append(batch[rng.randrange(len(batch) // 4)])  # again, in the last part
        out.append(batch)
        position += size
    return out


class Spy:
    """Counts how each batch was stored: committed in parts, or abandoned for the plain way."""

    def __init__(self, monkeypatch):
        self.finished = self.abandoned = 0
        finish, abandon = PartWriter.finish, PartWriter.abandon

        def counted_finish(writer):
            self.finished += 1
            return finish(writer)

        def counted_abandon(writer):
            self.abandoned += 1
            return abandon(writer)

        monkeypatch.setattr(PartWriter, "finish", counted_finish)
        monkeypatch.setattr(PartWriter, "abandon", counted_abandon)


def clear(engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE usage_records, quarantine, llm_usage"))


def test_part_sizes_cover_the_batch_in_few_shrinking_parts():
    for events in range(1, 5001, 7):
        sizes = part_sizes(events)
        assert sum(sizes) == events
        assert sizes == sorted(sizes, reverse=True) or len(sizes) == 1
        assert len(sizes) == 1 or min(sizes) >= min(events, PART_EVENTS) // 2
        assert len(sizes) <= 6  # a few statements' fixed cost per part, not per event
    assert part_sizes(2 * PART_EVENTS) == [2 * PART_EVENTS] and part_sizes(500) == [375, 93, 32]


def test_parts_store_what_the_whole_batch_stores(postgres_engine, monkeypatch):
    load_card(postgres_engine)
    batches = large_batches()
    monkeypatch.setattr(ingest_module, "PART_EVENTS", 10**9)  # the plain way: one store per batch
    whole = [Ingestor(postgres_engine).ingest(batch).summary() for batch in batches]
    whole_state = snapshot(postgres_engine)
    monkeypatch.undo()

    clear(postgres_engine)
    load_card(postgres_engine)
    spy = Spy(monkeypatch)
    parts = [Ingestor(postgres_engine).ingest(batch).summary() for batch in batches]
    assert spy.finished >= 2 and spy.abandoned >= 1  # both ways were taken: in parts, and whole for repeats
    assert parts == whole
    assert snapshot(postgres_engine) == whole_state
    assert len(whole_state[0]) > 1000 and any(r for *_, r in whole_state[1])  # rows, and truncated events' audit copies
    assert not [t for t in threading.enumerate() if t.name == "metering-part-writer"]


def test_a_batch_with_llm_log_records_is_stored_whole(postgres_engine, monkeypatch):
    load_card(postgres_engine)
    bodies = list(CorpusBuilder(seed=41, max_stream_chunks=20).events(200))
    ids = [orjson.loads(b)["requestId"] for b in bodies[:150] if b.endswith(b"}") and b"requestId" in b][:5]
    batch = [RawEvent(b) for b in bodies[:150]] + [RawEvent(envelope(*(llm_record(i) for i in ids)))] + \
            [RawEvent(b) for b in bodies[150:]]
    spy = Spy(monkeypatch)
    totals = Ingestor(postgres_engine).ingest(batch)
    assert spy.abandoned == 1 and spy.finished == 0
    assert totals.read == 200 + len(ids) and totals.read == totals.inserted + totals.duplicates + totals.quarantined + \
        totals.merged + totals.pending + totals.ignored + totals.llm_refused
    with postgres_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(llm_usage)).scalar() == len(ids)


def test_a_bug_while_processing_a_later_part_writes_nothing(postgres_engine, monkeypatch):
    load_card(postgres_engine)
    batch = [RawEvent(b) for b in CorpusBuilder(seed=43, max_stream_chunks=20).events(300)]
    process = ingest_module.process_batch
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a bug in the pipeline")
        return process(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "process_batch", failing)
    with pytest.raises(RuntimeError, match="a bug"):
        Ingestor(postgres_engine).ingest(batch)
    assert counts(postgres_engine) == (0, 0)  # the first part was stored, then rolled back
    assert not [t for t in threading.enumerate() if t.name == "metering-part-writer"]


@pytest.mark.slow
def test_random_storage_faults_in_parts_end_equal_to_a_run_without_faults(postgres_engine, monkeypatch):
    load_card(postgres_engine)
    batches = large_batches(seed=13, events=1400)
    ingestor = Ingestor(postgres_engine)
    for batch in batches:
        ingestor.ingest(batch)
    clean = snapshot(postgres_engine)
    clear(postgres_engine)

    spy = Spy(monkeypatch)
    faults = Faults(postgres_engine, probability=0.15, seed=17)
    retried = 0
    for batch in batches:
        retried += deliver_until_stored(ingestor.ingest, batch, faults, postgres_engine) - 1
    faults.enabled = False
    assert faults.raised > 3 and retried > 3 and spy.finished > 0
    assert snapshot(postgres_engine) == clean


def test_an_ingestor_told_not_to_stores_every_batch_whole(postgres_engine, monkeypatch):
    load_card(postgres_engine)
    spy = Spy(monkeypatch)
    batch = [RawEvent(b) for b in CorpusBuilder(seed=47, max_stream_chunks=20).events(300)]
    totals = Ingestor(postgres_engine, store_in_parts=False).ingest(batch)
    assert spy.finished == spy.abandoned == 0 and totals.read == 300
