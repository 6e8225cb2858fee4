"""Throughput and memory benchmark of the whole pipeline (issue: one instance keeps up with
several Event Hubs throughput units). Not a test: it prints figures; targets are in docs/throughput.md.

  python bench/bench_pipeline.py [--events 10000] [--rounds 3] [--postgres URL] [--skip-memory]

Measured in one run, pinned to one core:
  * end-to-end events/s of the batch handler (decode → usage → price → store) into SQLite (file)
    and, when reachable, PostgreSQL;
  * the floor: the same corpus through only JSON parsing plus the tiktoken counts that cannot be
    avoided (prompt and rebuilt completion of streams without usage), and our ratio to it;
  * peak memory (max RSS) of `metering replay --workers 1` on the corpus and on 10× the corpus
    (each worker of a parallel replay is such a process: bench/bench_replay.py).
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from corpus import CorpusBuilder, write_jsonl  # noqa: E402
from floor import general_stream_text  # noqa: E402

from db import rate_card as rate_card_store  # noqa: E402
from db.engine import make_engine  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from metering.ingest import IngestTotals, Ingestor, freeze_startup_heap  # noqa: E402
from metering.model import RawEvent  # noqa: E402
from metering.price.rate_card import parse_rates_csv  # noqa: E402
from metering.usage.tokens import encoding_for_model  # noqa: E402

BATCH = 500
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pin_to_one_core() -> str:
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        return f"pinned to CPU {min(os.sched_getaffinity(0))}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity)"


def prepare(url: str) -> Ingestor:
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv((ROOT / "samples" / "rates.csv").read_text()))
        from metering.price.mappings import parse_deployments_csv

        rate_card_store.replace_deployments(conn, parse_deployments_csv((ROOT / "samples" / "deployments.csv").read_text()))
    ingestor = Ingestor(engine, rate_card_ttl=3600)
    freeze_startup_heap()  # as the Function does once it has built its ingestor
    return ingestor


def run_pipeline(ingestor: Ingestor, bodies: list[bytes]) -> tuple[float, IngestTotals]:
    raws = [RawEvent(body) for body in bodies]
    ingestor.rate_card()  # warm: the card is cached across batches in production too
    encoding_for_model("gpt-4o")
    encoding_for_model("gpt-4")
    totals = IngestTotals()
    gc.collect()
    start = time.perf_counter()
    for i in range(0, len(raws), BATCH):
        totals.add(ingestor.ingest(raws[i : i + BATCH]))
    return time.perf_counter() - start, totals


def interleaved(make_ingestor, bodies: list[bytes], rounds: int) -> tuple[float, float, IngestTotals]:
    """Seconds of the floor and of the pipeline over ``bodies``, measured batch by batch in turn
    (floor of a batch, then the pipeline on it), best round of each. On a busy machine both see
    the same load within a fraction of a second, so their ratio holds better than either figure."""
    best_floor = best_pipeline = float("inf")
    totals = IngestTotals()
    for round_number in range(rounds):
        ingestor = make_ingestor(round_number)
        floor_seconds = pipeline_seconds = 0.0
        totals = IngestTotals()
        for i in range(0, len(bodies), BATCH):
            chunk = bodies[i : i + BATCH]
            floor_seconds += floor(chunk)
            seconds, done = run_pipeline(ingestor, chunk)
            pipeline_seconds += seconds
            totals.add(done)
        ingestor.engine.dispose()
        best_floor, best_pipeline = min(best_floor, floor_seconds), min(best_pipeline, pipeline_seconds)
    return best_floor, best_pipeline, totals


def floor(bodies: list[bytes]) -> float:
    """Only what cannot be avoided: parse each event, parse each SSE chunk of streams (chat chunks
    of every shape, Responses API events) to get the text or the usage, and count prompt and
    completion tokens with tiktoken where no usage was reported."""
    o200k, cl100k = encoding_for_model("gpt-4o"), encoding_for_model("gpt-4")
    gc.collect()
    start = time.perf_counter()
    for body in bodies:
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(event, dict) or event.get("usage") is not None:
            continue
        response = event.get("response")
        request = event.get("request")
        if not response or not isinstance(request, dict):
            continue
        encoding = cl100k if str(event.get("model", "")).startswith(("gpt-35", "gpt-4-")) else o200k
        text = general_stream_text(response)
        if text is None:
            continue
        encoding.encode_ordinary(text)
        for message in request.get("messages", ()):
            encoding.encode_ordinary(message.get("content") or "")
    return time.perf_counter() - start


def replay_peak_rss(path: Path, db: Path) -> int:
    """Max RSS in KiB of a `metering replay` child process."""
    script = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    metering = [sys.executable, "-m", "metering.cli", "--db", f"sqlite:///{db}"]
    subprocess.run(metering + ["db", "upgrade"], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    result = subprocess.run([sys.executable, "-c", script, *metering, "replay", "--progress", "off", "--workers", "1", str(path)],
                            check=True, capture_output=True, text=True, cwd=ROOT)
    return int(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres", default=os.environ.get("METERING_BENCH_POSTGRES_URL", DEFAULT_POSTGRES))
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="runs of the floor and the pipeline, batch by batch in turn; the best of each is kept")
    args = parser.parse_args()

    print(f"corpus: {args.events:,} events, seed {args.seed}; {pin_to_one_core()}")
    bodies = list(CorpusBuilder(args.seed).events(args.events))
    print(f"corpus size: {sum(map(len, bodies)) / 1e6:.1f} MB, mean {sum(map(len, bodies)) / len(bodies) / 1024:.1f} KiB/event")

    with tempfile.TemporaryDirectory() as tmp:
        floor_seconds, seconds, totals = interleaved(lambda n: prepare(f"sqlite:///{tmp}/bench{n}.db"), bodies, args.rounds)
    floor_rate = args.events / floor_seconds
    print(f"floor (JSON parse + unavoidable tiktoken): {floor_rate:,.0f} events/s")
    rate = args.events / seconds
    print(f"end to end into SQLite (file): {rate:,.0f} events/s = {rate / floor_rate:.2f} of the floor "
          f"[{totals.summary()}]")

    try:
        import sqlalchemy as sa

        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        names = [f"metering_bench_{os.getpid()}_{n}" for n in range(args.rounds)]

        def postgres_ingestor(round_number: int) -> Ingestor:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{names[round_number]}"'))
            url = sa.engine.make_url(args.postgres).set(database=names[round_number])
            return prepare(url.render_as_string(hide_password=False))

        try:
            floor_seconds, seconds, postgres_totals = interleaved(postgres_ingestor, bodies, args.rounds)
            rate, floor_rate = args.events / seconds, args.events / floor_seconds
            print(f"end to end into PostgreSQL: {rate:,.0f} events/s = {rate / floor_rate:.2f} of the floor "
                  f"(floor {floor_rate:,.0f} events/s in the same rounds) [{postgres_totals.summary()}]")
        finally:
            with admin.connect() as conn:
                for name in names:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except Exception as exc:  # noqa: BLE001 - the benchmark reports what it could not measure
        print(f"PostgreSQL: not measured ({type(exc).__name__}: {str(exc).splitlines()[0]})")

    if args.skip_memory:
        return
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "corpus.jsonl", Path(tmp) / "corpus10.jsonl"
        write_jsonl(small, iter(bodies))
        write_jsonl(large, CorpusBuilder(args.seed).events(args.events * 10))
        rss_small = replay_peak_rss(small, Path(tmp) / "m1.db")
        rss_large = replay_peak_rss(large, Path(tmp) / "m10.db")
        print(f"replay peak memory: {rss_small / 1024:.0f} MiB for {args.events:,} events, "
              f"{rss_large / 1024:.0f} MiB for {args.events * 10:,} events ({rss_large / rss_small:.2f}x)")


if __name__ == "__main__":
    main()
