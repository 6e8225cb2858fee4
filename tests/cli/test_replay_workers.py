"""`metering replay` over many files: a damaged file stops only itself, and `--workers 2` stores
exactly what one process stores (issue 20; issue 13 item 10)."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from capture_files import ENQUEUED, capture_path, capture_records, write_capture
from cli_runner import run
from replay_store import COMPARED, prepared, stored
from db.schema import usage_records
from events import encode, jsonl, v1_event
from metering.sources.files import SourceError, read_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from corpus import CorpusBuilder  # noqa: E402  (the benchmark's realistic mix: streams, embeddings, bad events)

ROOT = Path(__file__).resolve().parents[2]


def readable_before_damage(path: Path) -> list[bytes]:
    """The events a reader gets out of a damaged file before its damage."""
    bodies: list[bytes] = []
    with pytest.raises(SourceError):
        for event in read_file(path):
            bodies.append(event.body)
    return bodies


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_damaged_file_stops_only_itself_and_everything_readable_is_stored(capsys, tmp_path, db, workers):
    good_a = tmp_path / "a_good.jsonl"
    good_a.write_bytes(jsonl([v1_event(f"a-{i}") for i in range(40)]))
    whole_b = gzip.compress(jsonl([v1_event(f"b-{i}") for i in range(300)]))
    cut_b = tmp_path / "b_cut.jsonl.gz"
    cut_b.write_bytes(whole_b[: len(whole_b) // 2])
    good_c = tmp_path / "c_good.jsonl"
    good_c.write_bytes(jsonl([v1_event(f"c-{i}") for i in range(30)]))
    before_damage = readable_before_damage(cut_b)
    assert 0 < len(before_damage) < 300

    code, out, err = run(capsys, "--db", db, "replay", "--workers", workers, str(good_a), str(cut_b), str(good_c))

    assert code == 2
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith("metering: ")]
    assert len(err.splitlines()) == 1 and "b_cut.jsonl.gz: a damaged or cut-short gzip file" in err
    assert "Traceback" not in err
    kept = 40 + len(before_damage) + 30
    assert f"replayed 3 file(s): events read {kept} | rows inserted {kept} | duplicates skipped 0 | quarantined 0" in out
    rows, _ = stored(db)
    ids = {row[COMPARED.index(usage_records.c.request_id)] for row in rows}
    assert ids == {f"a-{i}" for i in range(40)} | {f"b-{i}" for i in range(len(before_damage))} | {f"c-{i}" for i in range(30)}

    # The file repaired: a rerun adds only what was missing, and says all is well.
    cut_b.write_bytes(whole_b)
    code, out, err = run(capsys, "--db", db, "replay", "--workers", workers, str(good_a), str(cut_b), str(good_c))
    assert code == 0 and err == ""
    assert f"rows inserted {300 - len(before_damage)} | duplicates skipped {kept}" in out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_damaged_capture_file_stops_only_itself_in_its_partition(capsys, tmp_path, workers):
    root = tmp_path / "capture"
    write_capture(capture_path(root, "0"), capture_records([encode(v1_event(f"p0-{i}")) for i in range(20)]))
    middle = write_capture(capture_path(root, "0", ENQUEUED.replace(minute=31)),
                           capture_records([encode(v1_event(f"p0-m{i}")) for i in range(60)], first_sequence=20),
                           codec="null", sync_interval=256)
    middle.write_bytes(middle.read_bytes()[:-100])  # cut inside its last block
    write_capture(capture_path(root, "0", ENQUEUED.replace(minute=32)),
                         capture_records([encode(v1_event(f"p0-l{i}")) for i in range(10)], first_sequence=80))
    write_capture(capture_path(root, "1"), capture_records([encode(v1_event(f"p1-{i}")) for i in range(15)]))
    before_damage = readable_before_damage(middle)
    assert 0 < len(before_damage) < 60
    db = prepared(capsys, f"sqlite:///{tmp_path / 'm.db'}")

    code, out, err = run(capsys, "--db", db, "replay", "--workers", workers, str(root))

    assert code == 2
    assert len(err.splitlines()) == 1 and f"{middle.name}: not a readable Event Hubs Capture Avro file" in err
    assert str(middle) in err  # the whole path: which partition and minute
    kept = 20 + len(before_damage) + 10 + 15
    assert f"replayed 4 file(s): events read {kept} | rows inserted {kept}" in out
    ids = {row[COMPARED.index(usage_records.c.request_id)] for row in stored(db)[0]}
    assert {f"p0-l{i}" for i in range(10)} <= ids and {f"p1-{i}" for i in range(15)} <= ids


def corpus_files(folder: Path, files: int, per_file: int) -> list[Path]:
    """The benchmark's realistic mix in several files, with a redelivery inside one of them."""
    folder.mkdir()
    corpus = CorpusBuilder(seed=11, max_stream_chunks=60)
    paths = []
    for f in range(files):
        bodies = list(corpus.events(per_file, start=f * per_file))
        if f == 0:
            bodies.append(bodies[3])  # Event Hubs delivered one event twice
        path = folder / (f"part-{f}.jsonl.gz" if f % 2 else f"part-{f}.jsonl")
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "wb") as out:
            out.write(b"".join(body + b"\n" for body in bodies))
        paths.append(path)
    return paths


@pytest.fixture
def two_databases(tmp_path, db_url):
    """Two empty databases of the same kind: SQLite files, or the session's PostgreSQL database and
    a second one on the same server (dropped afterwards)."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"
        return
    import uuid

    from sqlalchemy.engine import make_url

    admin = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    name = f"replay_two_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield db_url, make_url(db_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_two_workers_store_exactly_what_one_process_stores(capsys, tmp_path, two_databases):
    folder = tmp_path / "corpus"
    corpus_files(folder, files=5, per_file=120)
    one, two = (prepared(capsys, url) for url in two_databases)

    code_one, out_one, err_one = run(capsys, "--db", one, "replay", "--workers", "1", str(folder))
    code_two, out_two, err_two = run(capsys, "--db", two, "replay", "--workers", "2", str(folder))

    assert (code_one, err_one) == (0, "") and (code_two, err_two) == (0, "")
    assert "duplicates skipped 1 |" in out_one and "quarantined 0 |" not in out_one  # the mix has both
    assert out_two == out_one
    assert stored(two) == stored(one)
    assert len(stored(one)[0]) > 500
    # And again with two workers: nothing changes.
    code, again, _ = run(capsys, "--db", two, "replay", "--workers", "2", str(folder))
    assert code == 0 and "rows inserted 0 | duplicates skipped" in again
    assert stored(two) == stored(one)


def test_workers_must_be_positive(capsys, tmp_path, db):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl([v1_event("w-1")]))
    code, _, err = run(capsys, "--db", db, "replay", "--workers", "0", str(path))
    assert code == 2 and err.startswith("metering: --workers")


def test_a_capture_partition_is_one_unit_in_time_order_and_other_files_are_units_alone(tmp_path):
    from metering.cli.replay_units import plan_units
    from metering.sources.files import discover

    root = tmp_path / "capture"
    late = write_capture(capture_path(root, "0", ENQUEUED.replace(hour=11)), capture_records([encode(v1_event("late"))]))
    early = write_capture(capture_path(root, "0"), capture_records([encode(v1_event(f"early-{i}")) for i in range(30)]))
    other = write_capture(capture_path(root, "1"), capture_records([encode(v1_event("p1"))]))
    export = tmp_path / "export.jsonl"
    export.write_bytes(jsonl([v1_event(f"x-{i}") for i in range(200)]))

    units = plan_units(discover([str(root), str(export)]))

    assert {tuple(unit) for unit in units} == {(other,), (export,), (early, late)}
    assert units[0] == [export]  # the largest unit is handed out first


# ---------------------------------------------------------------- a worker or the parent killed (issue #26, item 10)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found.extend(int(child) for child in children)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _replay_process(url: str, files: list[Path]):
    import subprocess

    return subprocess.Popen([sys.executable, "-m", "metering.cli", "--db", url, "replay", "--progress", "off",
                             "--workers", "2", *map(str, files)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_workers(process, count: int = 2, seconds: float = 120) -> list[int]:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        workers = _children(process.pid)
        if len(workers) >= count:
            return workers
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)
    raise AssertionError("the replay started no workers")


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; workers are forked on Linux")


@linux_only
def test_a_killed_worker_is_one_line_exit_2_and_a_rerun_completes(capsys, tmp_path, postgres_url):
    import os
    import signal

    files = corpus_files(tmp_path / "corpus", files=4, per_file=3000)
    killed_url = prepared(capsys, postgres_url)
    process = _replay_process(killed_url, files)
    os.kill(_wait_for_workers(process)[0], signal.SIGKILL)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 2, (out, err)
    assert err.startswith("metering: a replay worker process died") and err.count("\n") == 1, err
    assert run(capsys, "--db", killed_url, "replay", "--progress", "off", "--workers", "2", *map(str, files))[0] == 0
    after_rerun = stored(killed_url)

    clean_url = prepared(capsys, f"sqlite:///{tmp_path / 'clean.db'}")
    assert run(capsys, "--db", clean_url, "replay", "--progress", "off", "--workers", "1", *map(str, files))[0] == 0
    assert after_rerun[0] == stored(clean_url)[0]


@linux_only
def test_workers_exit_when_the_replay_process_is_killed(capsys, tmp_path, postgres_url):
    import os
    import signal
    import time

    files = corpus_files(tmp_path / "corpus", files=4, per_file=3000)
    url = prepared(capsys, postgres_url)
    process = _replay_process(url, files)
    workers = _wait_for_workers(process)
    time.sleep(0.5)  # let the workers open their connections and start a batch
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "workers outlived the killed replay"
