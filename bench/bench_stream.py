"""Benchmark: rebuild and count one realistic 1,000-chunk Azure chat stream (target ≤ 2 ms per stream on one core).

Run: .venv/bin/python bench/bench_stream.py [--chunks N] [--repeat R]
Prints the best and median per-stream time of rebuild_stream + count_completion (the encoding is
loaded before timing: that is a once-per-process cost, reported separately).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from azure_shapes import chat_stream, sample_words, usage_object  # noqa: E402

from metering.usage.sse import rebuild_stream  # noqa: E402
from metering.usage.tokens import count_completion, load_encoding  # noqa: E402

MODEL = "gpt-4o-2024-11-20"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1000, help="content chunks in the stream")
    parser.add_argument("--repeat", type=int, default=200, help="timed runs")
    parser.add_argument("--usage", action="store_true", help="end the stream with an include_usage chunk")
    args = parser.parse_args()

    text = chat_stream(sample_words(args.chunks), model=MODEL, usage=usage_object(40, args.chunks) if args.usage else None)
    started = time.perf_counter()
    load_encoding("o200k_base")
    load_ms = (time.perf_counter() - started) * 1000

    def once() -> int:
        stream = rebuild_stream(text)
        return count_completion(stream, MODEL).tokens

    tokens = once()
    for _ in range(5):  # warm up
        once()
    timings = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        once()
        timings.append((time.perf_counter() - t0) * 1000)
    rebuild_only = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        rebuild_stream(text)
        rebuild_only.append((time.perf_counter() - t0) * 1000)

    print(f"stream: {args.chunks} content chunks, {len(text.encode()) / 1024:.0f} KiB, {tokens} completion tokens")
    print(f"encoding load (once per process): {load_ms:.0f} ms")
    print(f"rebuild only:     best {min(rebuild_only):.2f} ms, median {statistics.median(rebuild_only):.2f} ms")
    print(f"rebuild + count:  best {min(timings):.2f} ms, median {statistics.median(timings):.2f} ms per stream (target ≤ 2 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
