"""Accuracy of the offline token estimates against real provider-reported usage (not a timed test).

Run: .venv/bin/python bench/bench_accuracy.py [--split heldout|calibration|all] [--markdown]

Replays every recording of <shared folder>/recordings/<split> (METERING_SHARED_DIR, by default
../shared beside the repository: docs/public-data.md) with its usage stripped through the
pipeline's usage stage and prints, per model family and request shape, how many estimates equal
the provider's counts (prompt and visible completion both) and the worst error of each. Reasoning
models' completions are compared with the visible part (reported completion − reasoning tokens):
their hidden reasoning is never in a response, so the estimate is a lower bound ("≤" column).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from recordings import load_recordings, miss  # noqa: E402
from shared_folder import RECORDINGS, missing  # noqa: E402

from metering.usage.tokens import is_reasoning_model  # noqa: E402


def _worst(values: list[int]) -> str:
    worst = max(values, key=abs)
    return f"{worst:+d}" if worst else "0"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["heldout", "calibration", "all"], default="heldout")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for docs/estimates.md)")
    args = parser.parse_args()
    reason = missing(RECORDINGS)
    if reason:
        print(f"bench_accuracy: skipped: {reason}", file=sys.stderr)
        return 0
    recordings = load_recordings(None if args.split == "all" else args.split)
    groups: dict[tuple[str, str], list[tuple[int, int, bool]]] = defaultdict(list)
    for recording in recordings:
        result = miss(recording)
        groups[(recording.family, recording.shape)].append((result.prompt, result.completion, is_reasoning_model(recording.model)))

    header = ("family", "shape", "exact", "worst prompt", "worst completion", "completion ≤ reported")
    rows = []
    for (family, shape), results in sorted(groups.items()):
        exact = sum(1 for p, c, _ in results if p == 0 and c == 0)
        lower_bound = all(c <= 0 for _, c, _ in results)
        reasoning = any(r for _, _, r in results)
        rows.append(
            (
                family,
                shape,
                f"{exact}/{len(results)}",
                _worst([p for p, _, _ in results]),
                _worst([c for _, c, _ in results]),
                ("yes" if lower_bound else "no") + (" (reasoning)" if reasoning else ""),
            )
        )
    total = sum(len(r) for r in groups.values())
    exact_total = sum(1 for r in groups.values() for p, c, _ in r if p == 0 and c == 0)
    prompt_exact = sum(1 for r in groups.values() for p, _, _ in r if p == 0)
    completion_exact = sum(1 for r in groups.values() for _, c, _ in r if c == 0)
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    print(
        f"\n{args.split}: {exact_total}/{total} recordings exact "
        f"(prompt {prompt_exact}/{total}, completion {completion_exact}/{total})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
