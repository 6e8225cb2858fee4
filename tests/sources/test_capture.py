"""Event Hubs Capture replay: Avro files in Capture's schema and layout replay exactly like JSONL."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import fastavro
import pytest
import sqlalchemy as sa

from capture_files import CAPTURE_SCHEMA, ENQUEUED, capture_path, capture_records, write_capture
from db.schema import quarantine, usage_records
from events import encode, jsonl, v1_event
from cli_runner import run
from metering.cli import main
from metering.sources.files import SourceError, capture_partition, discover, read_capture, read_events

RATES = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
)

COMPARED = [c for c in usage_records.c if c.name not in ("id", "ingested_at", "source_partition", "source_sequence_number")]


def partition_bodies() -> dict[str, list[bytes]]:
    """Three partitions' worth of events, including a bad one and a redelivered one."""
    return {
        "0": [encode(v1_event(f"p0-{i}")) for i in range(5)] + [b"{not json"],
        "1": [encode(v1_event(f"p1-{i}", usage={"prompt_tokens": 10 * (i + 1), "completion_tokens": 5, "total_tokens": 10 * (i + 1) + 5}))
              for i in range(4)],
        "2": [encode(v1_event("p2-0", model="mystery-model")), encode(v1_event("p0-1"))],  # p0-1 again: a duplicate
    }


def write_capture_tree(root: Path) -> Path:
    """A Capture folder: several partitions, both codecs, several files per partition, empty windows."""
    bodies = partition_bodies()
    write_capture(capture_path(root, "0"), capture_records(bodies["0"][:3]), codec="deflate")
    later = ENQUEUED.replace(minute=35)
    write_capture(capture_path(root, "0", later), capture_records(bodies["0"][3:], first_sequence=3, enqueued=later),
                  codec="null", sync_interval=64)  # several blocks in one file
    write_capture(capture_path(root, "1"), capture_records(bodies["1"], first_sequence=100), codec="null")
    write_capture(capture_path(root, "2"), capture_records(bodies["2"], first_sequence=7), codec="deflate")
    write_capture(capture_path(root, "3"), [], codec="deflate")  # Capture's empty window: header only
    empty = capture_path(root, "3", ENQUEUED.replace(minute=40))
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_bytes(b"")  # a 0-byte blob
    return root


def rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(*COMPARED).order_by(usage_records.c.request_id))]


def migrated(capsys, url: str, tmp_path: Path) -> None:
    assert run(capsys, "--db", url, "db", "upgrade")[0] == 0
    card = tmp_path / "rates.csv"
    card.write_text(RATES)
    assert run(capsys, "--db", url, "rates", "import", str(card))[0] == 0


def test_capture_tree_replays_to_the_same_rows_as_jsonl_and_twice_changes_nothing(capsys, tmp_path, db_url, postgres_url_or_none):
    from db.engine import make_engine

    root = write_capture_tree(tmp_path / "capture")
    migrated(capsys, db_url, tmp_path)
    code, out, err = run(capsys, "--db", db_url, "replay", str(root))
    assert code == 0, err
    assert "replayed 6 file(s): events read 12 | rows inserted 10 | duplicates skipped 1 | quarantined 1" in out
    code, again, _ = run(capsys, "--db", db_url, "replay", str(root))
    assert "events read 12 | rows inserted 0 | duplicates skipped 11 | quarantined 1" in again

    # The same events as JSONL, into a second database of the same kind.
    jsonl_file = tmp_path / "same.jsonl"
    jsonl_file.write_bytes(jsonl([b for part in ("0", "1", "2") for b in partition_bodies()[part]]))
    other_url = f"sqlite:///{tmp_path / 'jsonl.db'}" if db_url.startswith("sqlite") else postgres_url_or_none
    migrated(capsys, other_url, tmp_path)
    code, out, _ = run(capsys, "--db", other_url, "replay", str(jsonl_file))
    assert "events read 12 | rows inserted 10 | duplicates skipped 1 | quarantined 1" in out

    capture_engine, jsonl_engine = make_engine(db_url), make_engine(other_url)
    try:
        assert rows(capture_engine) == rows(jsonl_engine)
        assert len(rows(capture_engine)) == 10
        with capture_engine.connect() as conn:
            where = {r.request_id: (r.source_partition, r.source_sequence_number)
                     for r in conn.execute(sa.select(usage_records.c.request_id, usage_records.c.source_partition,
                                                     usage_records.c.source_sequence_number))}
            bad = conn.execute(sa.select(quarantine.c.raw, quarantine.c.source_partition,
                                         quarantine.c.source_sequence_number)).one()
        assert where["p0-0"] == ("0", 0) and where["p0-4"] == ("0", 4)
        assert where["p1-3"] == ("1", 103) and where["p2-0"] == ("2", 7)
        assert tuple(bad) == (b"{not json", "0", 5)
    finally:
        capture_engine.dispose()
        jsonl_engine.dispose()


@pytest.fixture
def postgres_url_or_none(request, db_url):
    """For the PostgreSQL run of a test: a second, empty PostgreSQL database on the same server."""
    if db_url.startswith("sqlite"):
        yield None
        return
    import uuid

    from sqlalchemy.engine import make_url

    admin = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    name = f"capture_jsonl_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(db_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_records_carry_partition_sequence_and_enqueued_time(tmp_path):
    path = write_capture(capture_path(tmp_path, "7"), capture_records([b"a", None, b"c"], first_sequence=41), codec="null")
    events = list(read_capture(path))
    assert [e.body for e in events] == [b"a", b"", b"c"]  # a null Body is an empty message (quarantined as empty)
    assert [e.source_sequence_number for e in events] == [41, 42, 43]
    assert {e.source_partition for e in events} == {"7"}
    assert events[0].enqueued_time == datetime(2026, 10, 15, 9, 30, 5, tzinfo=timezone.utc)
    assert events[2].enqueued_time == datetime(2026, 10, 15, 9, 30, 7, tzinfo=timezone.utc)


def test_iso_enqueued_time_and_null_valued_properties_are_read(tmp_path):
    # Some Capture files declare "null" among the Properties map's value types; ISO times appear in
    # files written by other archivers. Both read the same.
    schema = {**CAPTURE_SCHEMA, "fields": [
        *(f for f in CAPTURE_SCHEMA["fields"] if f["name"] != "Properties" and f["name"] != "Body"),
        {"name": "Properties", "type": {"type": "map", "values": ["long", "double", "string", "bytes", "null"]}},
        {"name": "Body", "type": ["null", "bytes"]},
    ]}
    record = {**capture_records([b"x"])[0], "EnqueuedTimeUtc": "2026-10-15T09:30:05.1230000Z", "Properties": {"k": None}}
    path = capture_path(tmp_path, "0")
    path.parent.mkdir(parents=True)
    with open(path, "wb") as out:
        fastavro.writer(out, schema, [record], codec="deflate")
    (event,) = read_capture(path)
    assert event.enqueued_time == datetime(2026, 10, 15, 9, 30, 5, 123000, tzinfo=timezone.utc)


def test_partition_comes_only_from_the_capture_layout():
    assert capture_partition(Path("ns/hub/12/2026/10/15/09/30/05.avro")) == "12"
    assert capture_partition(Path("/data/ns/hub/0/2026/1/5/9/3/5.avro")) == "0"
    assert capture_partition(Path("exports/events.avro")) is None
    assert capture_partition(Path("ns/hub/0/2026/10/15/09/30/latest.avro")) is None


def test_progress_counts_every_byte_of_every_file(tmp_path):
    root = write_capture_tree(tmp_path / "capture")
    files = discover([root])
    assert len(files) == 6 and all(f.suffix == ".avro" for f in files)
    seen: list[int] = []
    events = list(read_events(files, seen.append))
    assert len(events) == 12
    assert sum(seen) == sum(f.stat().st_size for f in files)


def test_streams_block_by_block_without_reading_the_whole_file(tmp_path, monkeypatch):
    bodies = [encode(v1_event(f"big-{i}")) for i in range(400)]
    path = write_capture(capture_path(tmp_path, "0"), capture_records(bodies), codec="deflate", sync_interval=2048)
    size = path.stat().st_size
    positions: list[int] = []
    reader = read_capture(path, positions.append)
    next(reader)
    assert sum(positions) < size / 2  # the first event came before most of the file was read
    assert len(list(reader)) == 399


def test_damaged_or_foreign_avro_is_a_clear_error(tmp_path, capsys):
    good = write_capture(capture_path(tmp_path, "0"), capture_records([encode(v1_event(f"d-{i}")) for i in range(50)]),
                         codec="null", sync_interval=256)
    cut = good.with_name("06.avro")
    cut.write_bytes(good.read_bytes()[: good.stat().st_size - 100])
    with pytest.raises(SourceError, match="06.avro: not a readable Event Hubs Capture Avro file"):
        list(read_capture(cut))
    foreign = tmp_path / "other.avro"
    with open(foreign, "wb") as out:
        fastavro.writer(out, {"type": "record", "name": "R", "fields": [{"name": "x", "type": "int"}]}, [{"x": 1}])
    with pytest.raises(SourceError, match="not Event Hubs Capture's EventData"):
        list(read_capture(foreign))
    not_avro = tmp_path / "fake.avro"
    not_avro.write_bytes(b"{\"schema\": \"aoai-usage/1\"}\n")
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["--db", db, "db", "upgrade"]) == 0
    capsys.readouterr()
    code = main(["--db", db, "replay", str(not_avro)])
    assert code == 2
    assert "fake.avro: not a readable Event Hubs Capture Avro file" in capsys.readouterr().err


def test_damaged_or_cut_gzip_is_a_clear_error_after_storing_what_came_before(tmp_path, capsys):
    import gzip

    whole = gzip.compress(jsonl([v1_event(f"gz-{i}") for i in range(200)]))
    cut = tmp_path / "a-cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    not_gzip = tmp_path / "b-not.jsonl.gz"
    not_gzip.write_bytes(b"this is not gzip\n")
    with pytest.raises(SourceError, match="a-cut.jsonl.gz: a damaged or cut-short gzip file"):
        list(read_events([cut]))
    with pytest.raises(SourceError, match="b-not.jsonl.gz: a damaged or cut-short gzip file"):
        list(read_events([not_gzip]))
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["--db", db, "db", "upgrade"]) == 0
    capsys.readouterr()
    assert main(["--db", db, "replay", str(cut)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metering: ") and "a-cut.jsonl.gz" in err and "Traceback" not in err
