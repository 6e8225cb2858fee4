"""Capture replay from Blob Storage against the same files on disk (issue 32): the benchmark's corpus
written as Event Hubs Capture Avro files (4 partitions, a file per 5-minute window), uploaded to a
local Azurite, then `metering replay --workers 1 URL` and `metering replay --workers 1 FOLDER` into
two fresh SQLite databases. Not a test: it prints whether every stored row (and quarantine row) is
identical, each run's peak memory against the replay bound (150 MiB, docs/throughput.md), and the
time of each (one run each; a busy machine moves those).

  python bench/bench_blob_replay.py [--events 10000] [--partitions 4] [--per-file 250]

Needs Azurite (`npm install --prefix .azurite azurite`, as .ci/run does) and node.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import azurite  # noqa: E402  (tests/azurite.py: start and stop the server)
from bench_replay import TIMED, metering, prepared  # noqa: E402  (the same child process, measured the same way)
from capture_files import ENQUEUED, capture_path, capture_records, write_capture  # noqa: E402
from corpus import CorpusBuilder  # noqa: E402
from replay_store import stored  # noqa: E402  (tests/replay_store.py: what a replay stored, row for row)

REPLAY_BOUND_MIB = 150


def replay(url: str, source: str) -> tuple[float, str, int]:
    """Seconds, summary line and peak RSS (KiB) of one `metering replay --workers 1`."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", TIMED, *metering(url, "replay", "--progress", "off", "--workers", "1", source)],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    summary, status = done.stdout.strip().splitlines()[-2:]
    code, peak = status.split()
    if code != "0":
        raise SystemExit(f"replay of {source.split('?', 1)[0]} exited {code}: {done.stderr[-500:]}")
    return seconds, summary, int(peak)


def write_corpus(root: Path, events: int, partitions: int, per_file: int) -> list[Path]:
    corpus = CorpusBuilder(seed=7)
    files, index, window = [], 0, 0
    sequences = [0] * partitions
    while index < events:
        for partition in range(partitions):
            count = min(per_file, events - index)
            if count <= 0:
                break
            moment = ENQUEUED + timedelta(minutes=5 * window)
            records = capture_records(list(corpus.events(count, start=index)), first_sequence=sequences[partition], enqueued=moment)
            files.append(write_capture(capture_path(root, str(partition), moment), records))
            sequences[partition] += count
            index += count
        window += 1
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--per-file", type=int, default=250, help="events per Capture file")
    args = parser.parse_args()
    command = azurite.launcher()
    if command is None:
        raise SystemExit("Azurite not found: npm install --prefix .azurite azurite (and node on PATH)")
    with tempfile.TemporaryDirectory() as tmp_name, azurite.running(command) as server:
        tmp = Path(tmp_name)
        root = tmp / "capture"
        files = write_corpus(root, args.events, args.partitions, args.per_file)
        size = sum(p.stat().st_size for p in files)
        client = server.service().create_container("capture")
        for path in files:
            with open(path, "rb") as data:
                client.upload_blob(path.relative_to(root).as_posix(), data)
        print(f"corpus: {args.events:,} events in {len(files)} Capture files ({size / 2**20:.1f} MiB deflated), "
              f"{args.partitions} partitions, uploaded to Azurite")
        on_disk = prepared(f"sqlite:///{tmp / 'disk.db'}")
        from_blob = prepared(f"sqlite:///{tmp / 'blob.db'}")
        disk_seconds, disk_summary, disk_peak = replay(on_disk, str(root))
        blob_seconds, blob_summary, blob_peak = replay(from_blob, server.container_url("capture"))
        disk_rows, blob_rows = stored(on_disk), stored(from_blob)
        same = disk_rows == blob_rows and disk_summary == blob_summary
        digest = hashlib.sha256(repr(blob_rows).encode()).hexdigest()[:16]
        print(f"on disk:   {disk_summary}")
        print(f"from blob: {blob_summary}")
        print(f"rows: {len(blob_rows[0]):,} usage + {len(blob_rows[1]):,} quarantine, digest {digest}; "
              f"identical to the replay on disk: {'yes' if same else 'NO'}")
        print(f"peak RSS: from blob {blob_peak / 1024:.0f} MiB, on disk {disk_peak / 1024:.0f} MiB "
              f"({blob_peak / disk_peak:.2f}x); bound {REPLAY_BOUND_MIB} MiB: "
              f"{'within' if blob_peak / 1024 <= REPLAY_BOUND_MIB else 'EXCEEDED'}")
        print(f"time (one run, busy machine): from blob {blob_seconds:.1f} s, on disk {disk_seconds:.1f} s "
              f"({blob_seconds / disk_seconds:.2f}x)")
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
