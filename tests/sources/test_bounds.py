"""No input file can exhaust replay's memory: an over-long JSONL line is quarantined as ``oversized``
(its digest and first bytes) and the file goes on; a hostile Avro file (a non-Capture schema, a
length or count that the file cannot hold, a block that inflates without bound) is one line of
error, never an allocation of what the file claims."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import fastavro
import pytest
import sqlalchemy as sa

from capture_files import CAPTURE_SCHEMA, capture_path, capture_record, capture_records, container, write_capture
from cli_runner import run
from db.schema import quarantine, usage_records
from events import encode, jsonl, v1_event
from metering.sources.bounds import DEFAULT_MAX_EVENT_BYTES, OVERSIZED_PREFIX_BYTES, max_event_bytes_from_env
from metering.sources.capture_avro import MAX_BLOCK_BYTES
from metering.sources.files import SourceError, read_capture, read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def oversized_line(size: int) -> bytes:
    """An event whose request payload makes the line ``size`` bytes long (a 'capture = full' gone wild)."""
    head = encode(v1_event("huge-1"))[:-1] + b',"padding":"'
    return head + b"A" * (size - len(head) - 2) + b'"}'


def test_an_oversized_line_is_a_stand_in_and_the_file_goes_on(tmp_path):
    big = oversized_line(3 * DEFAULT_MAX_EVENT_BYTES)
    path = tmp_path / "c.jsonl"
    path.write_bytes(jsonl([v1_event("before"), big, v1_event("after")]).replace(b"\n", b"\r\n", 1))
    events = list(read_jsonl(path))
    assert [json.loads(e.body)["requestId"] for e in (events[0], events[2])] == ["before", "after"]
    stand_in = events[1]
    assert stand_in.oversized_bytes == len(big)
    assert stand_in.oversized_sha256 == hashlib.sha256(big).hexdigest()
    assert stand_in.body == big[:OVERSIZED_PREFIX_BYTES]
    # A line of exactly the bound is an ordinary event; one byte more is not.
    exact = tmp_path / "exact.jsonl"
    exact.write_bytes(b"x" * 2048 + b"\n" + b"y" * 2049 + b"\n" + b"z" * 2048)
    lines = list(read_jsonl(exact, max_event_bytes=2048))
    assert [(len(e.body), e.oversized_bytes) for e in lines] == [(2048, None), (2049, 2049), (2048, None)]


def test_replay_quarantines_an_oversized_line_once_and_counts_it(db, tmp_path, capsys):
    big = oversized_line(2 * DEFAULT_MAX_EVENT_BYTES)
    path = tmp_path / "mixed.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl([v1_event("ok-1"), big, v1_event("ok-2")])))
    code, out, err = run(capsys, "--db", db, "replay", str(path))
    assert code == 0, err
    assert "events read 3 | rows inserted 2 | duplicates skipped 0 | quarantined 1" in out
    code, out, _ = run(capsys, "--db", db, "replay", str(path))
    assert "events read 3 | rows inserted 0 | duplicates skipped 2 | quarantined 1 (1 already in quarantine)" in out
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        (row,) = conn.execute(sa.select(quarantine)).all()
        assert conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar() == 2
    engine.dispose()
    assert row.reason == "oversized" and row.raw_sha256 == hashlib.sha256(big).hexdigest()
    assert bytes(row.raw) == big[:OVERSIZED_PREFIX_BYTES] and f"{len(big):,} bytes" in row.detail
    # retry never decodes a prefix (it could be salvaged into a row): it says why it skipped it
    code, out, _ = run(capsys, "--db", db, "quarantine", "retry")
    assert code == 0 and "skipped 1 oversized row(s)" in out and "resolved 0" in out


def test_the_bound_is_configurable(monkeypatch, tmp_path, capsys):
    assert max_event_bytes_from_env({}) == DEFAULT_MAX_EVENT_BYTES
    assert max_event_bytes_from_env({"METERING_MAX_EVENT_BYTES": "4096"}) == 4096
    for bad in ("0", "12", "1MB", "-5"):
        with pytest.raises(ValueError, match="METERING_MAX_EVENT_BYTES"):
            max_event_bytes_from_env({"METERING_MAX_EVENT_BYTES": bad})
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert run(capsys, "--db", db, "db", "upgrade")[0] == 0
    path = tmp_path / "c.jsonl"
    path.write_bytes(jsonl([v1_event("small"), oversized_line(5000)]))
    monkeypatch.setenv("METERING_MAX_EVENT_BYTES", "4096")
    code, out, _ = run(capsys, "--db", db, "replay", str(path))
    assert code == 0 and "events read 2 | rows inserted 1 | duplicates skipped 0 | quarantined 1" in out
    monkeypatch.setenv("METERING_MAX_EVENT_BYTES", "1MB")
    code, _, err = run(capsys, "--db", db, "replay", str(path))
    assert code == 2 and err.startswith("metering: METERING_MAX_EVENT_BYTES must be a number of bytes")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak memory from Linux /proc")
def test_replay_of_a_multi_hundred_megabyte_line_stays_far_below_a_gibibyte(tmp_path):
    # 2.2 MB of gzip held a 2 GB line that drove replay to 7.5 GB; here 512 MiB compress to ~0.5 MB.
    path = tmp_path / "poison.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(encode(v1_event("good-1")) + b"\n")
        out.write(b'{"schema":"aoai-usage/1","padding":"')
        chunk = b"A" * (1 << 20)
        for _ in range(512):
            out.write(chunk)
        out.write(b'"}\n' + encode(v1_event("good-2")) + b"\n")
    assert path.stat().st_size < 4 * 1024 * 1024
    db = f"sqlite:///{tmp_path / 'm.db'}"
    script = textwrap.dedent(f"""
        import sys
        from metering.cli import main
        assert main(["--db", {db!r}, "db", "upgrade"]) == 0
        code = main(["--db", {db!r}, "replay", "--progress", "off", {str(path)!r}])
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking pytest process
        peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print("exit", code, "peak_kib", peak)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "events read 3 | rows inserted 2 | duplicates skipped 0 | quarantined 1" in done.stdout
    peak_kib = int(done.stdout.split("peak_kib")[1].split()[0])
    assert peak_kib < 1024 * 1024, f"replay peaked at {peak_kib / 1024:.0f} MiB"
    assert peak_kib < 400 * 1024, f"{peak_kib / 1024:.0f} MiB"  # in practice: the interpreter, SQLAlchemy and one bounded line


# ---------------------------------------------------------------- hostile Avro


def hostile(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_a_schema_that_is_not_captures_is_refused_before_any_record(tmp_path):
    # The 537-byte bomb: Body declared a long of 3e9 (a general reader's bytes(3e9) is 3 GB).
    schema = {**CAPTURE_SCHEMA, "fields": [*CAPTURE_SCHEMA["fields"][:5], {"name": "Body", "type": "long"}]}
    path = tmp_path / "bomb.avro"
    with open(path, "wb") as out:
        fastavro.writer(out, schema, [{**capture_records([None])[0], "Body": 3_000_000_000}])
    assert path.stat().st_size < 1024
    with pytest.raises(SourceError, match=r"bomb.avro: an Avro file, but not Event Hubs Capture's EventData records "
                                          r"\(Body must be bytes"):
        list(read_capture(path))
    extra = {**CAPTURE_SCHEMA, "fields": [*CAPTURE_SCHEMA["fields"], {"name": "Extra", "type": "string"}]}
    with pytest.raises(SourceError, match="unexpected fields Extra"):
        list(read_capture(hostile(tmp_path, "extra.avro", container(extra, []))))
    recursive = {**CAPTURE_SCHEMA, "fields": [*CAPTURE_SCHEMA["fields"][:3],
                                              {"name": "SystemProperties", "type": {"type": "map", "values": "EventData"}},
                                              *CAPTURE_SCHEMA["fields"][4:]]}
    with pytest.raises(SourceError, match="SystemProperties must be a map of primitive values"):
        list(read_capture(hostile(tmp_path, "rec.avro", container(recursive, []))))
    with pytest.raises(SourceError, match="codec 'snappy' is not supported"):
        list(read_capture(hostile(tmp_path, "snappy.avro", container(CAPTURE_SCHEMA, [], codec="snappy"))))


@pytest.mark.parametrize("name, blocks, message", [
    ("body-length", [(1, None, capture_record(b"{}", body_length=3_000_000_000))],
     r"a length of 3,000,000,000 bytes runs past the end of its block"),
    ("block-size", [(1, 2**40, capture_record(b"{}"))], r"a block declares 1099511627776 bytes, but \d+ bytes of the file"),
    ("record-count", [(10**12, None, capture_record(b"{}"))], r"a block declares 1,000,000,000,000 records"),
    ("negative", [(1, -5, capture_record(b"{}"))], r"a block declares -5 bytes"),
    ("trailing", [(1, None, capture_record(b"{}") + b"junk")], r"a block has 4 bytes after its 1 records"),
])
def test_lengths_that_the_file_cannot_hold_are_refused(tmp_path, name, blocks, message):
    path = hostile(tmp_path, f"{name}.avro", container(CAPTURE_SCHEMA, blocks))
    with pytest.raises(SourceError, match=f"{name}.avro: not a readable Event Hubs Capture Avro file: {message}"):
        list(read_capture(path))


def test_a_deflate_block_cannot_inflate_without_bound(tmp_path):
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    data = b"".join(squeeze.compress(zeros) for _ in range(MAX_BLOCK_BYTES // len(zeros) + 8)) + squeeze.flush()
    assert len(data) < 1024 * 1024  # ~0.3 MB on disk, 264 MiB inflated
    path = hostile(tmp_path, "inflate.avro", container(CAPTURE_SCHEMA, [(1, None, data)], codec="deflate"))
    with pytest.raises(SourceError, match=f"inflates beyond {MAX_BLOCK_BYTES // 2**20} MiB"):
        list(read_capture(path))


def test_good_blocks_before_a_hostile_one_are_read_and_a_long_body_is_oversized(tmp_path):
    good = capture_record(encode(v1_event("avro-1")), sequence=7)
    path = hostile(tmp_path, "partly.avro", container(CAPTURE_SCHEMA, [(1, None, good), (10**12, None, good)]))
    events = read_capture(path)
    assert json.loads(next(events).body)["requestId"] == "avro-1"
    with pytest.raises(SourceError, match="records"):
        next(events)
    body = oversized_line(5000)
    path = write_capture(capture_path(tmp_path, "3"), capture_records([encode(v1_event("small")), body]))
    small, big = read_capture(path, max_event_bytes=4096)
    assert small.oversized_bytes is None and big.oversized_bytes == 5000
    assert big.oversized_sha256 == hashlib.sha256(body).hexdigest() and big.source_sequence_number == 1
    assert big.source_partition == "3"


def test_replay_reports_a_hostile_avro_in_one_line(db, tmp_path, capsys):
    schema = {**CAPTURE_SCHEMA, "fields": [*CAPTURE_SCHEMA["fields"][:5], {"name": "Body", "type": "long"}]}
    path = tmp_path / "bomb.avro"
    with open(path, "wb") as out:
        fastavro.writer(out, schema, [{**capture_records([None])[0], "Body": 3_000_000_000}])
    good = tmp_path / "a-good.jsonl"
    good.write_bytes(jsonl([v1_event("first")]))
    code, out, err = run(capsys, "--db", db, "replay", str(good), str(path))
    assert code != 0 and "Traceback" not in err  # (what happens to other files is replay's rule for damaged files)
    (line,) = [x for x in err.splitlines() if "bomb.avro" in x]
    assert line.startswith("metering: ") and "Body must be bytes" in line


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_a_line_of_exactly_the_bound_is_read_whatever_its_line_ending(ending):
    """Windows-written JSONL (CRLF) is read like LF: a line of exactly the bound is a line; one byte
    more is oversized, with the same digest and size as before CRLF lines were allowed for."""
    import io

    from metering.sources.bounds import LongLine, read_lines

    bound = 2048
    exact, over = b"a" * bound, b"b" * (bound + 1)
    lines = list(read_lines(io.BytesIO(exact + ending + over + ending + b"tail"), bound))
    assert lines[0] == exact and lines[2] == b"tail"
    long = lines[1]
    assert isinstance(long, LongLine)
    stored = over + ending[:-1]  # the bytes up to the final LF, as digested before
    assert (long.size, long.sha256, long.prefix) == (len(stored), hashlib.sha256(stored).hexdigest(), stored[:OVERSIZED_PREFIX_BYTES])
