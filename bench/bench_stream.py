"""Benchmark: rebuild and count one 1,000-chunk stream of every real wire shape (target ≤ 1.0 ms
per stream and shape, on one core).

Run: .venv/bin/python bench/bench_stream.py [--chunks N] [--repeat R] [--shape NAME]
Prints, per shape, the median time of rebuild_stream alone and of rebuild_stream + count_completion,
the best round of the latter, and the general path in the same rounds: one ``orjson.loads`` per
``data:`` line and the count of the joined text, as bench_pipeline.py's floor does (the encodings
are loaded before timing: that is a once-per-process cost, reported separately).
The shapes are measured in turn, round after round, in CPU time (time.process_time), so that a busy
machine slows them alike and a descheduled process is not charged for the wait. On a shared virtual
machine the CPU time itself swells when a neighbour is busy: the best round and the ratio to the
general path, measured in the same rounds, move less than the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import azure_shapes as shapes  # noqa: E402
from floor import general_stream_text  # noqa: E402

from metering.usage.sse import rebuild_stream  # noqa: E402
from metering.usage.tokens import count_completion, encoding_name_for_model, load_encoding  # noqa: E402

# name → (what it is, model, the stream of n content chunks)
SHAPES: dict[str, tuple[str, str, Callable[[list[str]], str]]] = {
    "azure-sorted": ("Azure 2024–25: keys sorted, content-filter results on every chunk", "gpt-4o-2024-11-20",
                     lambda words: shapes.chat_stream(words, model="gpt-4o-2024-11-20")),
    "azure-sorted-usage": ("the same with the final include_usage chunk", "gpt-4o-2024-11-20",
                           lambda words: shapes.chat_stream(words, model="gpt-4o-2024-11-20", usage=shapes.usage_object(40, len(words)))),
    "seed-order": ("the seed captures' order: id, object, created, model, choices", "gpt-35-turbo",
                   lambda words: shapes.seed_order_stream(words, model="gpt-35-turbo")),
    "minimal-obfuscation": ("Azure 2025–26: minimal chunks with an obfuscation pad", "gpt-4.1-mini-2025-04-14",
                            lambda words: shapes.minimal_stream(words)),
    "openai": ("api.openai.com: service_tier, usage null and obfuscation on every chunk, include_usage", "gpt-4o-mini-2024-07-18",
               lambda words: shapes.openai_stream(words, usage=shapes.usage_object(40, len(words)))),
    "responses": ("Responses API: event: + data:, sequence_number, obfuscation", "gpt-4.1-mini-2025-04-14",
                  lambda words: shapes.responses_stream(words, usage=shapes.responses_usage(40, len(words)), obfuscation=True)),
}


def general_path(text: str, model: str) -> int:
    """What a stream costs without the fast path (the floor of bench_pipeline.py, for one stream)."""
    completion = general_stream_text(text)
    return 0 if completion is None else len(load_encoding(encoding_name_for_model(model)).encode_ordinary(completion))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1000, help="content chunks in each stream")
    parser.add_argument("--repeat", type=int, default=15, help="rounds (each times every shape 20 times)")
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="only these shapes (repeatable)")
    args = parser.parse_args()

    names = args.shape or list(SHAPES)
    words = shapes.sample_words(args.chunks)
    texts = {name: SHAPES[name][2](words) for name in names}
    started = time.perf_counter()
    load_encoding("o200k_base")
    load_encoding("cl100k_base")
    load_ms = (time.perf_counter() - started) * 1000

    def rebuild_and_count(name: str) -> int:
        return count_completion(rebuild_stream(texts[name]), SHAPES[name][1]).tokens

    tokens = {name: rebuild_and_count(name) for name in names}  # warm up
    rebuild: dict[str, list[float]] = {name: [] for name in names}
    both: dict[str, list[float]] = {name: [] for name in names}
    general: dict[str, list[float]] = {name: [] for name in names}
    per_round = 20
    for _ in range(args.repeat):
        for name in names:
            text = texts[name]
            t0 = time.process_time()
            for _ in range(per_round):
                rebuild_stream(text)
            t1 = time.process_time()
            for _ in range(per_round):
                rebuild_and_count(name)
            t2 = time.process_time()
            for _ in range(per_round):
                general_path(text, SHAPES[name][1])
            t3 = time.process_time()
            rebuild[name].append((t1 - t0) * 1000 / per_round)
            both[name].append((t2 - t1) * 1000 / per_round)
            general[name].append((t3 - t2) * 1000 / per_round)

    print(f"{args.chunks:,} content chunks per stream; encodings load once per process: {load_ms:.0f} ms")
    print(f"median of {args.repeat} rounds of {per_round} runs each, in ms per stream (target: rebuild + count ≤ 1.0)")
    print("| shape | KiB | tokens | rebuild | rebuild + count | best round | general path (best) | best / general |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        size = len(texts[name].encode()) / 1024
        best, floor = min(both[name]), min(general[name])
        print(f"| {name} | {size:.0f} | {tokens[name]:,} | {statistics.median(rebuild[name]):.2f} | "
              f"{statistics.median(both[name]):.2f} | {best:.2f} | {floor:.2f} | {best / floor:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
