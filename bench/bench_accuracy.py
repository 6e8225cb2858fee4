"""Accuracy of the offline token estimates against real provider-reported usage (not a timed test).

Run: .venv/bin/python bench/bench_accuracy.py [--split heldout|calibration|all] [--by cause|shape] [--markdown]

Replays every recording of <shared folder>/recordings/<split> (METERING_SHARED_DIR, by default
../shared beside the repository: docs/public-data.md; and of the further recordings, when
../shared/recordings-round3 or the folder METERING_EXTRA_RECORDINGS names is there: a second table) with its usage stripped through the
pipeline's usage stage and prints, per cause (what the estimate had to count beyond plain messages:
tests/recordings.py ``cause``) or per model family and request shape, how many estimates equal the
provider's counts (prompt and visible completion both), how many are within 2 and 3 tokens, and the
worst error of each. Reasoning models' completions are compared with the visible part (reported
completion − reasoning tokens): their hidden reasoning is never in a response, so the estimate is a
lower bound ("≤" column), and a short completion of theirs counts as exact here.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from recordings import CAUSES, Recording, cause, extra_recordings_dir, load_recordings, miss  # noqa: E402
from shared_folder import RECORDINGS, missing  # noqa: E402

from metering.usage.tokens import is_reasoning_model  # noqa: E402

REASONING_SLACK = 63  # as tests/usage/test_recorded_usage.py: reasoning_tokens come in steps of 64


def _worst(values: list[int]) -> str:
    worst = max(values, key=abs)
    return f"{worst:+d}" if worst else "0"


def _error(recording: Recording) -> tuple[int, int, bool]:
    """(prompt error, completion error, reasoning) with a reasoning model's short completion as 0."""
    result = miss(recording)
    reasoning = is_reasoning_model(recording.model)
    completion = result.completion
    if reasoning and -REASONING_SLACK <= completion <= 0:
        completion = 0
    return result.prompt, completion, reasoning


def table(recordings: list[Recording], by: str, title: str, markdown: bool) -> None:
    groups: dict[tuple[str, ...], list[tuple[int, int, bool]]] = defaultdict(list)
    for recording in recordings:
        key = (cause(recording),) if by == "cause" else (recording.family, recording.shape)
        groups[key].append(_error(recording))
    header = (*(("cause",) if by == "cause" else ("family", "shape")), "rows", "exact", "±2", "±3",
              "worst prompt", "worst completion", "completion ≤ reported")
    order = {name: i for i, name in enumerate(CAUSES)}
    rows = []
    for key, results in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0])):
        within = lambda bound: sum(1 for p, c, _ in results if abs(p) <= bound and abs(c) <= bound)  # noqa: E731
        lower_bound = all(c <= 0 for _, c, _ in results)
        reasoning = any(r for _, _, r in results)
        rows.append((*key, str(len(results)), str(within(0)), str(within(2)), str(within(3)),
                     _worst([p for p, _, _ in results]), _worst([c for _, c, _ in results]),
                     ("yes" if lower_bound else "no") + (" (reasoning)" if reasoning else "")))
    all_results = [r for results in groups.values() for r in results]
    total = len(all_results)
    print(f"\n{title}")
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    if total:
        exact = sum(1 for p, c, _ in all_results if p == 0 and c == 0)
        near = sum(1 for p, c, _ in all_results if abs(p) <= 3 and abs(c) <= 3)
        prompt_exact = sum(1 for p, _, _ in all_results if p == 0)
        completion_exact = sum(1 for _, c, _ in all_results if c == 0)
        print(f"{title}: {exact}/{total} recordings exact ({100 * exact / total:.0f} %), {near}/{total} within 3 tokens "
              f"(prompt exact {prompt_exact}/{total}, completion exact {completion_exact}/{total})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["heldout", "calibration", "all"], default="heldout")
    parser.add_argument("--by", choices=["cause", "shape"], default="cause")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables (for docs/)")
    args = parser.parse_args()
    reason = missing(RECORDINGS)
    if reason:
        print(f"bench_accuracy: skipped: {reason}", file=sys.stderr)
        return 0
    split = None if args.split == "all" else args.split
    table(load_recordings(split), args.by, f"{args.split} (shared recordings)", args.markdown)
    extra = extra_recordings_dir()
    if extra is not None:
        table(load_recordings(split, extra=True), args.by, f"{args.split} ({extra})", args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
