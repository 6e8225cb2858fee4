"""Time and memory of one event carrying a hostile tool schema (issue #26, item 1). Not a test: it
prints figures against the targets (each bomb stored in under 50 ms and under 50 MiB).

  python bench/bench_schema_bombs.py [--rounds 5]

For each shape of tests/schema_bombs.py (chat and Responses requests), in a fresh process with the
encoding already loaded and one ordinary event processed: the fastest of the rounds (least disturbed by other load) of storing the
event into SQLite (decode → usage estimate → price → store), the same for an ordinary event with one
small tool in the same process ("× plain": the ratio, which a loaded machine changes less), the pure
stages alone without storage ("pure ms"), and the growth of the process's peak
RSS while doing so or, when larger, the Python heap's peak (tracemalloc) while storing it once
more (the process's RSS peak is usually set by loading the encoding, before the bomb). Then one 401-event batch (400 ordinary events and a bomb), as in the attack.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TARGET_MS, TARGET_MIB = 50.0, 50.0


def _measure(name: str, responses: bool, rounds: int) -> dict[str, float]:
    """Run in a child: the median time and the peak-RSS growth of storing the bomb event."""
    from db.engine import make_engine
    from db.migrate import upgrade
    from events import encode, v1_event
    from metering.ingest import Ingestor
    from metering.model import PipelineSettings, RawEvent
    from metering.pipeline import process_batch
    from metering.price.pricing import RateCard
    from schema_bombs import BOMBS, bomb_event

    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{folder}/bench.db")
        upgrade(engine)
        ingestor = Ingestor(engine)
        ingestor.ingest([RawEvent(encode(v1_event("warm-up")))])
        ingestor.ingest([RawEvent(bomb_event("warm-up-tools", {"type": "object", "properties": {"a": {"type": "string"}}}, responses=responses))])
        ordinary = bomb_event("plain", {"type": "object", "properties": {"city": {"type": "string"}}}, responses=responses)
        plain_times = []
        for i in range(rounds):
            start = time.perf_counter()
            ingestor.ingest([RawEvent(ordinary.replace(b'"plain"', f'"plain-{i}"'.encode(), 1))])
            plain_times.append((time.perf_counter() - start) * 1000)
        body = bomb_event("bomb", BOMBS[name](), responses=responses)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        times = []
        for i in range(rounds):
            raw = RawEvent(body.replace(b'"bomb"', f'"bomb-{i}"'.encode(), 1))
            start = time.perf_counter()
            totals = ingestor.ingest([raw])
            times.append((time.perf_counter() - start) * 1000)
            assert totals.inserted == 1, totals
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        pure = []
        for _ in range(rounds):  # the pure stages alone (decode → usage → price), no storage
            start = time.perf_counter()
            process_batch([RawEvent(body)], RateCard([], []), PipelineSettings())
            pure.append((time.perf_counter() - start) * 1000)
        tracemalloc.start()
        ingestor.ingest([RawEvent(body.replace(b'"bomb"', b'"bomb-traced"', 1))])
        heap = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        engine.dispose()
    return {"bytes": len(body), "ms": min(times), "plain_ms": min(plain_times), "pure_ms": min(pure),
            "mib": max(grown, heap)}


def _batch_of_401(name: str) -> float:
    from db.engine import make_engine
    from db.migrate import upgrade
    from events import encode, v1_event
    from metering.ingest import Ingestor
    from metering.model import RawEvent
    from schema_bombs import BOMBS, bomb_event

    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{folder}/bench.db")
        upgrade(engine)
        ingestor = Ingestor(engine)
        ingestor.ingest([RawEvent(encode(v1_event("warm-up")))])
        raws = [RawEvent(encode(v1_event(f"plain-{i}"))) for i in range(400)]
        raws.insert(200, RawEvent(bomb_event("bomb", BOMBS[name]())))
        start = time.perf_counter()
        totals = ingestor.ingest(raws)
        elapsed = time.perf_counter() - start
        engine.dispose()
    assert totals.inserted == 401, totals
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, api = args.child
        print(json.dumps(_measure(name, api == "responses", args.rounds)))
        return 0
    from schema_bombs import BOMBS

    print(f"{'shape':<20} {'api':<10} {'bytes':>8} {'ms':>8} {'× 50 ms':>8} {'× plain':>8} {'pure ms':>8} {'MiB':>8} {'× 50 MiB':>9}")
    worst_ms = worst_mib = 0.0
    for name in BOMBS:
        for api in ("chat", "responses"):
            out = subprocess.run([sys.executable, __file__, "--rounds", str(args.rounds), "--child", name, api],
                                 capture_output=True, text=True, check=True).stdout
            figures = json.loads(out)
            worst_ms, worst_mib = max(worst_ms, figures["ms"]), max(worst_mib, figures["mib"])
            print(f"{name:<20} {api:<10} {figures['bytes']:>8} {figures['ms']:>8.1f} {figures['ms'] / TARGET_MS:>8.2f}"
                  f" {figures['ms'] / figures['plain_ms']:>8.1f} {figures['pure_ms']:>8.1f} {figures['mib']:>8.1f}"
                  f" {figures['mib'] / TARGET_MIB:>9.2f}")
    print(f"\nworst: {worst_ms:.1f} ms ({worst_ms / TARGET_MS:.2f} of the target), "
          f"{worst_mib:.1f} MiB ({worst_mib / TARGET_MIB:.2f} of the target)")
    print(f"a 401-event batch with one ref_dag_4 bomb: {_batch_of_401('ref_dag_4'):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
