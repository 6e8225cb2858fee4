"""Parallel replay benchmark (issue 20): `metering replay` with 1 and N worker processes, the same
corpus split into files, into fresh PostgreSQL (and optionally SQLite) databases. Not a test: it
prints events/s, the speed-up, each run's peak memory and whether the stored rows and the summary
are identical to the one-worker run.

  python bench/bench_replay.py [--events 100000] [--files 16] [--workers 2] [--rounds 2] [--sqlite]

The default is a backfill-sized corpus (100,000 events, ~3 GB, about 17 minutes of traffic at 100
requests/s): a replay's fixed costs (the interpreter and imports, about 0.3 s; each worker's
encodings and first connection, about 0.5 s) are paid once by one worker and by two alike, so a
small corpus measures them rather than the scaling.

Each run is a real `metering replay` process (spawned workers included), timed wall-clock from
start to exit; runs alternate (1, N, 1, N, ...) and the best of each is kept, so that a busy
machine disturbs both alike.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import sqlalchemy as sa  # noqa: E402

from corpus import CorpusBuilder, write_jsonl  # noqa: E402

from db.schema import quarantine, usage_records  # noqa: E402

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
COMPARED = [c for c in usage_records.c if c.name not in ("id", "ingested_at")]
# Runs `metering ...` as a child and prints its exit status and peak RSS (KiB; the largest of the
# replay process and its workers).
TIMED = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True)\n"
    "print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else '')\n"
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def metering(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "metering.cli", "--db", url, *args]


def prepared(url: str) -> str:
    """``url`` migrated, with the sample rate card and deployments imported (by `metering` children)."""
    for args in (("db", "upgrade"), ("rates", "import", str(ROOT / "samples" / "rates.csv")),
                 ("deployments", "import", str(ROOT / "samples" / "deployments.csv"))):
        subprocess.run(metering(url, *args), check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return url


def digest(url: str) -> str:
    """A digest of every stored row (but its id and ingest time) and every quarantine row."""
    engine = sa.create_engine(url)
    sha = hashlib.sha256()
    with engine.connect() as conn:
        for row in conn.execute(sa.select(*COMPARED).order_by(usage_records.c.request_id)):
            sha.update(repr(tuple(row)).encode())
        for row in conn.execute(sa.select(quarantine.c.raw_sha256, quarantine.c.reason).order_by(quarantine.c.raw_sha256)):
            sha.update(repr(tuple(row)).encode())
    engine.dispose()
    return sha.hexdigest()[:16]


def replay(url: str, folder: Path, workers: int) -> tuple[float, str, int]:
    """Seconds, summary line and peak RSS (KiB) of one `metering replay` into ``url``."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", TIMED, *metering(url, "replay", "--progress", "off",
                                                                 "--workers", str(workers), str(folder))],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    summary, status = done.stdout.strip().splitlines()[-2:]
    code, rss = (int(v) for v in status.split())
    if code != 0:
        raise SystemExit(f"replay failed ({code}): {done.stderr}")
    return seconds, summary, rss


class Databases:
    """Fresh databases of one kind, dropped at the end."""

    def __init__(self, kind: str, postgres: str, tmp: Path):
        self.kind, self.postgres, self.tmp = kind, postgres, tmp
        self.created: list[str] = []

    def fresh(self) -> str:
        name = f"metering_replay_bench_{os.getpid()}_{len(self.created)}"
        self.created.append(name)
        if self.kind == "sqlite":
            url = f"sqlite:///{self.tmp / (name + '.db')}"
        else:
            admin = sa.create_engine(self.postgres, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            url = sa.engine.make_url(self.postgres).set(database=name).render_as_string(hide_password=False)
        prepared(url)
        return url

    def drop(self) -> None:
        if self.kind != "postgresql":
            return
        admin = sa.create_engine(self.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in self.created:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bench(kind: str, folder: Path, events: int, workers: int, rounds: int, postgres: str, tmp: Path) -> None:
    databases = Databases(kind, postgres, tmp)
    try:
        best: dict[int, float] = {}
        seen: dict[int, set[tuple[str, str]]] = {1: set(), workers: set()}
        rss: dict[int, int] = {}
        for _ in range(rounds):
            for n in (1, workers):
                url = databases.fresh()
                seconds, summary, peak = replay(url, folder, n)
                best[n] = min(best.get(n, seconds), seconds)
                rss[n] = max(rss.get(n, 0), peak)
                seen[n].add((summary.split(": ", 1)[-1], digest(url)))
        same = len(seen[1] | seen[workers]) == 1
        one, many = events / best[1], events / best[workers]
        print(f"{kind}: 1 worker {one:,.0f} events/s (peak {rss[1] / 1024:.0f} MiB); {workers} workers {many:,.0f} events/s "
              f"(peak {rss[workers] / 1024:.0f} MiB per process) = {many / one:.2f}x; "
              f"rows and summary identical: {'yes' if same else 'NO'}")
        if not same:
            for n, results in seen.items():
                for summary, rows in sorted(results):
                    print(f"  {n} worker(s): rows {rows}: {summary}")
    finally:
        databases.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=16, help="files the corpus is split into")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each worker count (the best is kept)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres", default=os.environ.get("METERING_BENCH_POSTGRES_URL", DEFAULT_POSTGRES))
    parser.add_argument("--sqlite", action="store_true", help="also into SQLite (writers take turns there)")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"corpus: {args.events:,} events in {args.files} files, seed {args.seed}; {cores} cores available")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "corpus"
        folder.mkdir()
        per_file = -(-args.events // args.files)
        corpus = CorpusBuilder(args.seed)
        for f in range(args.files):
            count = min(per_file, args.events - f * per_file)
            write_jsonl(folder / f"part-{f:02d}.jsonl", corpus.events(count, start=f * per_file))
        for kind in (["postgresql"] + (["sqlite"] if args.sqlite else [])):
            try:
                bench(kind, folder, args.events, args.workers, args.rounds, args.postgres, tmp)
            except Exception as exc:  # noqa: BLE001 - the benchmark reports what it could not measure
                print(f"{kind}: not measured ({type(exc).__name__}: {str(exc).splitlines()[0]})")


if __name__ == "__main__":
    main()
