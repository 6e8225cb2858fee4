"""Storage faults: the database fails at random points over many batches; each failed batch raises,
leaves nothing half-written, and is redelivered as the Functions retry policy would. In the end the
database equals a run without faults: the same rows, tokens, costs and quarantine."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

import function_app
from db import rate_card as rate_card_store
from db.engine import make_engine
from db.migrate import upgrade
from db.schema import quarantine, usage_records
from metering.ingest import Ingestor
from metering.model import RawEvent
from metering.price.rate_card import parse_rates_csv

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from corpus import CorpusBuilder  # noqa: E402

RECORD_COLUMNS = [c for c in usage_records.columns if c.name not in ("id", "ingested_at")]
QUARANTINE_COLUMNS = [c for c in quarantine.columns if c.name not in ("id", "received_at", "resolved_at")]


def batches(seed: int = 5, events: int = 700) -> list[list[RawEvent]]:
    """A stream with redeliveries: batches of 5–40 events, about 10% of them seen before."""
    rng = random.Random(seed)
    bodies = list(CorpusBuilder(seed=23, max_stream_chunks=40).events(events))
    out: list[list[RawEvent]] = []
    position = 0
    while position < len(bodies):
        size = rng.randrange(5, 40)
        batch = [RawEvent(b, source_partition="0", source_sequence_number=position + i)
                 for i, b in enumerate(bodies[position : position + size])]
        if position and rng.random() < 0.5:  # an earlier stretch delivered again
            start = rng.randrange(position)
            batch += [RawEvent(b, source_partition="0", source_sequence_number=start + i)
                      for i, b in enumerate(bodies[start : start + rng.randrange(1, 6)])]
        out.append(batch)
        position += size
    return out


def load_card(engine) -> None:
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv((ROOT / "samples" / "rates.csv").read_text()))


def snapshot(engine) -> tuple[set, set]:
    with engine.connect() as conn:
        rows = {tuple(r) for r in conn.execute(sa.select(*RECORD_COLUMNS))}
        bad = {(*r[:-1], r[-1] is not None) for r in conn.execute(sa.select(*QUARANTINE_COLUMNS, quarantine.c.resolved_at))}
    return rows, bad


def counts(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar(),
                conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar())


class Faults:
    """Fail statements (and commits) at random, seeded, with the driver's own OperationalError."""

    def __init__(self, engine, probability: float, seed: int):
        self.rng = random.Random(seed)
        self.probability = probability
        self.enabled = True
        self.raised = 0
        error = engine.dialect.loaded_dbapi.OperationalError

        @sa.event.listens_for(engine, "before_cursor_execute")
        def statement(conn, cursor, text, parameters, context, executemany):
            self.maybe_fail(error, "statement")

        real_commit = engine.dialect.do_commit

        def commit(dbapi_connection):  # fails before the server commits; the driver's error is wrapped
            self.maybe_fail(error, "commit")
            real_commit(dbapi_connection)

        engine.dialect.do_commit = commit

    def maybe_fail(self, error, where: str) -> None:
        if self.enabled and self.rng.random() < self.probability:
            self.raised += 1
            raise error(f"injected fault at {where}: server closed the connection unexpectedly")


def deliver_until_stored(ingest, batch, faults: Faults, engine, max_attempts: int = 60) -> int:
    """What the Functions retry policy does: run the same batch again until it succeeds."""
    for attempt in range(1, max_attempts + 1):
        faults.enabled = False
        before = counts(engine)
        faults.enabled = True
        try:
            ingest(batch)
            return attempt
        except sa.exc.DBAPIError as exc:
            assert "injected fault" in str(exc)
            faults.enabled = False
            assert counts(engine) == before  # nothing of the failed batch was written
            faults.enabled = True
    raise AssertionError("the batch never got through")


@pytest.fixture(scope="module")
def fault_free(tmp_path_factory) -> tuple[set, set]:
    url = f"sqlite:///{tmp_path_factory.mktemp('clean') / 'clean.db'}"
    engine = make_engine(url)
    upgrade(engine)
    load_card(engine)
    ingestor = Ingestor(engine)
    for batch in batches():
        ingestor.ingest(batch)
    result = snapshot(engine)
    engine.dispose()
    return result


@pytest.mark.slow
def test_random_storage_faults_end_equal_to_a_run_without_faults(engine, fault_free):
    load_card(engine)
    ingestor = Ingestor(engine, rate_card_ttl=0)  # re-read the card per batch: more places to fail
    faults = Faults(engine, probability=0.12, seed=99)
    rng = random.Random(7)
    retried = 0
    for batch in batches():
        attempts = deliver_until_stored(ingestor.ingest, batch, faults, engine)
        retried += attempts - 1
        if rng.random() < 0.1:  # the ack was lost after the commit: the batch comes again
            deliver_until_stored(ingestor.ingest, batch, faults, engine)
    faults.enabled = False
    assert faults.raised > 20 and retried > 20  # the faults really hit, many times
    rows, bad = snapshot(engine)
    clean_rows, clean_bad = fault_free
    assert len(rows) == len(clean_rows) > 500
    assert rows == clean_rows
    assert bad == clean_bad and any(resolved for *_, resolved in bad)  # incl. truncated events' audit copies


def test_the_function_raises_on_storage_faults_and_redelivery_matches(engine, fault_free, monkeypatch):
    load_card(engine)
    monkeypatch.setenv("METERING_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    function_app.reset_ingestor()
    from hub_events import hub_event

    try:
        ingestor = function_app.get_ingestor()
        faults = Faults(ingestor.engine, probability=0.2, seed=3)

        def trigger(batch):
            function_app.handle_events([hub_event(r.body, r.source_sequence_number) for r in batch])

        failures = 0
        for batch in batches()[:8]:
            failures += deliver_until_stored(trigger, batch, faults, engine) - 1
        faults.enabled = False
        assert failures > 0
        rows, _ = snapshot(engine)
        partition = [c.name for c in RECORD_COLUMNS].index("source_partition")  # the hub events carry none
        project = lambda r: r[:partition] + r[partition + 1 :]  # noqa: E731
        stored = {project(r) for r in rows}
        assert len(stored) == len(rows) > 100
        assert stored <= {project(r) for r in fault_free[0]}
    finally:
        function_app.reset_ingestor()
