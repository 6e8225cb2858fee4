"""Start-up cost of the command line and the Function (issue: heavy libraries only where used).
Not a test: it prints figures; the target (`metering --help` ≤ 0.3 s) is in docs/throughput.md.

  python bench/bench_startup.py [--runs 15]

Each figure is the median wall time of fresh interpreters, with the modules' bytecode cached.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "metering --help": [sys.executable, "-m", "metering.cli", "--help"],
    "import function_app": [sys.executable, "-c", "import function_app"],
    "python (bare interpreter)": [sys.executable, "-c", "pass"],
}


def median_seconds(command: list[str], runs: int) -> float:
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # warm the bytecode cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    for name, command in CASES.items():
        print(f"{name:<28} {median_seconds(command, args.runs):.3f} s (median of {args.runs})")


if __name__ == "__main__":
    main()
