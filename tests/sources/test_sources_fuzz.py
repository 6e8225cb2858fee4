"""Property-based fuzzing of the replay sources: JSONL (plain and gzip) with over-long lines, and
Capture Avro files with flipped bytes, cut tails and lying counts and lengths.

Whatever a file holds: reading raises nothing but a one-line ``SourceError``; no event handed on is
longer than the bound (an over-long one is an ``oversized`` stand-in of its first bytes); and every
event read before a damaged point is accounted for exactly once when ingested
(``read == inserted + duplicates + quarantined``, plus LLM-log units), with no ``internal_error``.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture_files import CAPTURE_SCHEMA, capture_record, capture_records, container, write_capture, zigzag
from db.engine import make_engine
from db.migrate import upgrade
from db.schema import quarantine
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.sources.bounds import OVERSIZED_PREFIX_BYTES
from metering.sources.files import SourceError, read_file

BOUND = 2048  # small, so that over-long lines are cheap to make
BODIES = [encode(v1_event(f"src-{i}", usage={"prompt_tokens": 10 + i, "completion_tokens": 2, "total_tokens": 12 + i}))
          for i in range(6)]

_directory = Path(tempfile.mkdtemp(prefix="metering-sources-fuzz-"))
_engine = make_engine(f"sqlite:///{_directory / 'fuzz.db'}")
upgrade(_engine)
_ingestor = Ingestor(_engine)
_files = iter(range(10**9))


def line_bodies() -> st.SearchStrategy[bytes]:
    ordinary = st.sampled_from(BODIES)
    long = st.builds(lambda body, size, fill: body[:-1] + b',"pad":"' + fill * size + b'"}',
                     st.sampled_from(BODIES), st.integers(BOUND - 200, 3 * BOUND), st.sampled_from([b"A", b"\xff", b"\r"]))
    noise = st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" "))
    return st.one_of(ordinary, long, noise, st.just(b""), st.just(b"  \r"))


def check_read(path: Path) -> tuple[list, bool]:
    """The events of one file up to any damage, checked against the bound."""
    events, damaged = [], False
    try:
        for event in read_file(path, max_event_bytes=BOUND):
            events.append(event)
    except SourceError as exc:
        damaged = True
        assert "\n" not in str(exc) and str(path) in str(exc)
    for event in events:
        if event.oversized_bytes is None:
            assert len(event.body) <= BOUND
        else:
            assert event.oversized_bytes > BOUND and len(event.body) <= OVERSIZED_PREFIX_BYTES
            assert len(event.oversized_sha256 or "") == 64
    return events, damaged


def ingest_and_check(events: list) -> None:
    with _engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(quarantine)
                              .where(quarantine.c.reason == "internal_error")).scalar()
    totals = _ingestor.ingest(events) if events else None
    if totals is not None:
        assert totals.read == len(events)
        assert totals.read == (totals.inserted + totals.duplicates + totals.quarantined
                               + totals.merged + totals.pending + totals.ignored)
    with _engine.connect() as conn:
        after = conn.execute(sa.select(sa.func.count()).select_from(quarantine)
                             .where(quarantine.c.reason == "internal_error")).scalar()
    assert after == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(line_bodies(), max_size=8), st.sampled_from([b"\n", b"\r\n"]), st.booleans(), st.booleans())
def test_jsonl_with_over_long_lines(bodies, ending, compress, final_newline):
    data = ending.join(bodies) + (ending if final_newline else b"")
    path = _directory / f"f{next(_files)}.jsonl{'.gz' if compress else ''}"
    path.write_bytes(gzip.compress(data) if compress else data)
    events, damaged = check_read(path)
    assert not damaged
    lines = data.split(b"\n")  # a line is over-long when it has more than BOUND bytes before its line feed
    assert sum(e.oversized_bytes is not None for e in events) == sum(1 for line in lines if len(line) > BOUND)
    assert len(events) == sum(1 for line in lines if len(line) > BOUND or line.rstrip(b"\r").strip())
    ingest_and_check(events)


@st.composite
def hostile_capture(draw) -> bytes:
    """A valid Capture file made hostile: bytes flipped, a tail cut, or a count or length that lies."""
    bodies = draw(st.lists(st.sampled_from(BODIES) | st.binary(max_size=BOUND + 500), min_size=1, max_size=5))
    kind = draw(st.sampled_from(["written", "flip", "cut", "lying_length", "lying_count", "lying_size"]))
    if kind in ("written", "flip", "cut"):
        path = _directory / f"w{next(_files)}.avro"
        write_capture(path, capture_records(bodies), codec=draw(st.sampled_from(["null", "deflate"])),
                      sync_interval=draw(st.sampled_from([64, 16000])))
        data = bytearray(path.read_bytes())
        if kind == "flip":
            for _ in range(draw(st.integers(1, 4))):
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[draw(st.integers(0, len(data) - 1)):]
        return bytes(data)
    huge = draw(st.sampled_from([2**31, 3 * 10**9, 2**62, -(2**40)]))
    records = [capture_record(b, sequence=i) for i, b in enumerate(bodies)]
    if kind == "lying_length":
        records[-1] = capture_record(bodies[-1], sequence=9, body_length=huge)
    blocks = [(len(records) if kind != "lying_count" else huge, None, b"".join(records))]
    if kind == "lying_size":
        blocks = [(len(records), huge, b"".join(records))]
    return container(CAPTURE_SCHEMA, blocks) + (zigzag(1) if draw(st.booleans()) else b"")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile_capture())
def test_hostile_capture_files(content):
    path = _directory / f"h{next(_files)}.avro"
    path.write_bytes(content)
    events, _ = check_read(path)
    ingest_and_check(events)
