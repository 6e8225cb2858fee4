"""`metering bill import` against decompression bombs (not a timed test): each file is imported by
a fresh `metering` process and its wall time and peak RSS (wait4) are reported next to a genuine
export's. Targets (issue #26): every bomb refused with exit 2 in under 2 s and under 300 MiB.

Run: .venv/bin/python bench/bench_bill_bombs.py [--keep DIR]

* gzip, rows repeated: a FOCUS CSV.gz of one usage row repeated, 3 GiB of text (about 17 MB);
* gzip, padded rows: the same with 60 KB of spaces in each row's tags, 3 GiB;
* Parquet: 30,000,000 identical rows (dictionary and run-length encoded, about 13 MB);
* Parquet, damaged footer; a missing file (the command's start-up alone) and the sample bill
  (samples/bill-2026-10.focus.csv, imported) as the baselines. On a loaded machine start-up
  dominates: compare each bomb with them (the ratios printed last).
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bill_exports import Charge, focus_csv, focus_parquet  # noqa: E402

USAGE = Charge("2026-10-05", "gpt-4o-1120-Inp-glbl", "0.55", "1M Tokens", "1.375")
GZIP_MAGIC = b"\x1f\x8b"
METERING = [str(Path(sys.executable).parent / "metering")]  # the installed command, as a user runs it


def gzip_rows(gib: int, padding: int = 0) -> bytes:
    text = focus_csv([USAGE]).decode("utf-8-sig")
    header, line = text.splitlines(keepends=True)[:2]
    if padding:
        line = line.replace('"{""env"":""prod""', '"{""env"":""prod' + " " * padding + '""', 1)
    block = gzip.compress((line * max(1, (8 << 20) // len(line))).encode(), 9)
    repeats = (gib << 30) // (len(line) * max(1, (8 << 20) // len(line)))
    return gzip.compress(header.encode()) + block * repeats


def parquet_rows(rows: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    one = pq.read_table(io.BytesIO(focus_parquet([USAGE])))
    chunk = pa.concat_tables([one] * 100_000).combine_chunks()
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, one.schema, compression="zstd") as writer:
        for _ in range(rows // 100_000):
            writer.write_table(chunk)
    return sink.getvalue()


# A small launcher process runs each import, so that the peak RSS it reads (wait4) is the import's,
# not a copy of this process (which holds the files it built).
LAUNCHER = """
import os, subprocess, sys, time
started = time.perf_counter()
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
error = process.stderr.read().decode(errors="replace")
_, status, usage = os.wait4(process.pid, 0)
print(os.waitstatus_to_exitcode(status), time.perf_counter() - started, usage.ru_maxrss / 1024)
print((error.splitlines() or [""])[0][:100])
"""


def measure(path: Path, db: str) -> tuple[int, float, float, str]:
    """(exit status, seconds, peak RSS in MiB, first line of stderr) of one import in a new process."""
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *METERING, "--db", db, "bill", "import", str(path)],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    numbers, message = (result.stdout.splitlines() + [""])[:2]
    code, seconds, rss = numbers.split()
    return int(code), float(seconds), float(rss), message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="DIR", help="write the files here (default: a temporary folder)")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="bill-bombs-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{folder / 'metering.db'}"
    subprocess.run([*METERING, "--db", db, "db", "upgrade"], cwd=ROOT, check=True, capture_output=True)
    parquet = parquet_rows(30_000_000)
    cases = {
        "no such file (start-up only)": b"",
        "sample bill (baseline)": (ROOT / "samples" / "bill-2026-10.focus.csv").read_bytes(),
        "gzip, rows repeated, 3 GiB": gzip_rows(3),
        "gzip, padded rows, 3 GiB": gzip_rows(3, padding=60_000),
        "Parquet, 30M identical rows": parquet,
        "Parquet, damaged footer": parquet[:-12] + b"\0" * 8 + parquet[-4:],
    }
    print(f"{'case':<30} {'file':>10} {'exit':>4} {'seconds':>8} {'peak RSS':>9}  message")
    measured = {}
    for number, (name, data) in enumerate(cases.items()):
        suffix = ".parquet" if data[:4] == b"PAR1" else ".csv.gz" if data[:2] == GZIP_MAGIC else ".csv"
        path = folder / f"case{number}{suffix}"
        if data:
            path.write_bytes(data)
        code, seconds, rss, message = measure(path, db)
        measured[name] = seconds, rss
        print(f"{name:<30} {len(data) / 1e6:>8.1f}MB {code:>4} {seconds:>8.2f} {rss:>7.0f}MiB  {message}")
    start, sample = measured["no such file (start-up only)"], measured["sample bill (baseline)"]
    print(f"\nstart-up alone {start[0]:.2f} s; the sample export {sample[0]:.2f} s, {sample[1]:.0f} MiB; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, (seconds, rss) in measured.items():
        if name not in ("no such file (start-up only)", "sample bill (baseline)"):
            print(f"  {name}: {seconds / sample[0]:.2f}× the sample's time, {rss / sample[1]:.2f}× its RSS, "
                  f"{max(seconds - start[0], 0):.2f} s beyond start-up")


if __name__ == "__main__":
    main()
