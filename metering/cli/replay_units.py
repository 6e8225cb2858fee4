"""How ``metering replay`` does its work: capture files grouped into units, each unit replayed
through its own ``Ingestor`` — in this process, or in worker processes for a backfill.

A unit is one Event Hubs Capture partition (its files in time order: a request's redeliveries
share its partition, so "first delivery wins" holds as in one process) or one other file. A
damaged file stops only itself: every complete event read before the damage is stored with the
rest, and the damage is reported once the whole replay is done.

On Linux workers are forked: they start at once with this process's imports (SQLAlchemy, the
pipeline), where a spawned worker spent about a second importing them before its first batch. The
caller disposes of its engine first, so no connection is shared, and each worker opens its own
engine. Elsewhere (macOS, Windows) they are spawned, as fork is unsafe or absent there. Either way
they run top-level functions of this module.
"""

from __future__ import annotations

import gc
import os
import queue as queue_module
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metering.ingest import IngestTotals, Ingestor
    from metering.model import PipelineSettings, RawEvent
    from metering.sources.blob import CaptureBlob

# A worker reports its progress at most every this many bytes read (and after each batch).
_REPORT_BYTES = 1 << 20
# A batch also ends once it holds this many bytes of events: 500 streams captured in full mode
# would otherwise hold ~15 MB of bodies at once, and the heap keeps its high-water mark.
BATCH_BYTES = 4 << 20


def available_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if counter is not None:
        return counter() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_units(files: Sequence[Path | CaptureBlob]) -> list[list[Path | CaptureBlob]]:
    """Files (or Capture blobs) grouped into units of work: a Capture partition's files together
    (in their listed, that is time, order), every other file alone. Units come largest first, so
    that a pool of workers finishes close together."""
    from pathlib import PurePosixPath

    from metering.sources.files import capture_partition

    by_key: dict[tuple[str, ...], list[Path | CaptureBlob]] = {}
    for path in files:
        parts = path.parts
        partition = capture_partition(PurePosixPath(*parts[-7:]) if len(parts) >= 7 else PurePosixPath(parts[-1]))
        key = parts[:-6] if partition is not None else (str(path),)
        by_key.setdefault(key, []).append(path)
    units = list(by_key.values())
    units.sort(key=lambda unit: -sum(file_size(p) for p in unit))
    return units


def file_size(path: Path | CaptureBlob) -> int:
    """Bytes of a local file (0 when it is gone) or of a listed blob."""
    if not isinstance(path, Path):
        return path.size
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class UnitResult:
    """What replaying one unit did: its totals, and one message per damaged file."""

    totals: IngestTotals
    damaged: list[str] = field(default_factory=list)


def _events_of(paths: Sequence[Path | CaptureBlob], on_bytes: Callable[[int], None], damaged: list[str]) -> Iterator[RawEvent]:
    """The events of ``paths`` in order; a damaged file ends itself (its message is kept) and
    the next file goes on."""
    from metering.sources.blob import read_blob
    from metering.sources.files import SourceError, read_file

    for path in paths:
        try:
            yield from read_file(path, on_bytes) if isinstance(path, Path) else read_blob(path, on_bytes)
        except SourceError as exc:
            damaged.append(str(exc))


def batches(events: Iterable[RawEvent], size: int, max_bytes: int = BATCH_BYTES) -> Iterator[list[RawEvent]]:
    """Consecutive batches of at most ``size`` events, each ending early once it holds
    ``max_bytes`` of event bodies (a batch always has at least one event)."""
    batch: list[RawEvent] = []
    held = 0
    for event in events:
        batch.append(event)
        held += len(event.body)
        if len(batch) >= size or held >= max_bytes:
            yield batch
            batch = []
            held = 0
    if batch:
        yield batch


def replay_unit(paths: Sequence[Path | CaptureBlob], ingestor: Ingestor, batch_size: int,
                progress: Callable[[int, IngestTotals], None]) -> UnitResult:
    """Store the events of ``paths`` batch by batch; ``progress(bytes, totals)`` after each batch.

    A batch may span files of the unit; the batch open when a file turns out damaged holds only
    complete events and is stored like any other.
    """
    from metering.ingest import IngestTotals

    totals = IngestTotals()
    damaged: list[str] = []
    pending = 0

    def on_bytes(count: int) -> None:
        nonlocal pending
        pending += count

    for batch in batches(_events_of(paths, on_bytes, damaged), batch_size):
        done = ingestor.ingest(batch)
        totals.add(done)
        progress(pending, done)
        pending = 0
    if pending:
        progress(pending, IngestTotals())
    return UnitResult(totals, damaged)


# --- worker processes ------------------------------------------------------------------------

_worker: dict[str, Any] = {}


class WorkerDied(RuntimeError):
    """A worker process ended without finishing its unit (killed, out of memory): what every worker
    committed is kept, and a rerun stores only what is missing (replay is idempotent)."""


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send this worker SIGTERM when the replay process dies (``PR_SET_PDEATHSIG``): a
    worker whose parent was killed would otherwise finish its unit and then wait on the pool's pipe
    forever, holding a database connection. If the parent is already gone, leave now."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)


def _start_worker(url: str, settings: PipelineSettings, batch_size: int, reports: Any, parent: int,
                  store_in_parts: bool) -> None:
    """Pool initializer: this worker dies with the replay process, and has its own engine and ``Ingestor``
    (``store_in_parts``: see ``Ingestor``; off when the workers fill every core)."""
    _die_with_parent(parent)
    from db.engine import make_engine
    from metering.ingest import Ingestor

    _worker["ingestor"] = Ingestor(make_engine(url), settings=settings, store_in_parts=store_in_parts)
    _worker["batch_size"] = batch_size
    _worker["reports"] = reports


def _replay_in_worker(paths: list[Path | CaptureBlob]) -> UnitResult:
    reports = _worker["reports"]
    read = [0]

    def progress(count: int, done: IngestTotals) -> None:
        read[0] += count
        if read[0] >= _REPORT_BYTES or done.read:
            reports.put((read[0], done.read, done.inserted))
            read[0] = 0

    result = replay_unit(paths, _worker["ingestor"], _worker["batch_size"], progress)
    if read[0]:
        reports.put((read[0], 0, 0))
    return result


def start_method() -> str:
    """``fork`` on Linux (no second import of everything), ``spawn`` elsewhere."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


def replay_parallel(units: Sequence[list[Path | CaptureBlob]], url: str, settings: PipelineSettings, batch_size: int,
                    workers: int, progress: Callable[[int, int, int], None]) -> list[UnitResult]:
    """Replay ``units`` in ``workers`` processes; ``progress(bytes, events, inserted)`` as they
    report. The first storage error stops the replay and is raised here. The caller holds no
    database connection and runs no other thread (see the module's docstring)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context(start_method())
    # A forked worker would write out whatever this process still holds in its buffers on exit.
    sys.stdout.flush()
    sys.stderr.flush()
    forking = context.get_start_method() == "fork"
    if forking:
        # What the workers inherit is never collected in them: the collector would otherwise touch
        # every inherited object's header and copy the pages they share with this process.
        gc.freeze()
    reports = context.Queue()
    results: list[UnitResult] = []

    def drain() -> None:
        while True:
            try:
                progress(*reports.get_nowait())
            except queue_module.Empty:
                return

    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                             initargs=(url, settings, batch_size, reports, os.getpid(),
                                       workers < available_cores())) as pool:
        pending: set = set()
        try:
            # A worker killed while the rest are still being submitted breaks the pool here already.
            for unit in units:
                pending.add(pool.submit(_replay_in_worker, list(unit)))  # the first submit forks every worker
            if forking:
                gc.unfreeze()  # only the workers keep their inherited objects frozen
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                drain()
                for future in done:
                    results.append(future.result())
        except BrokenProcessPool:
            for future in pending:
                future.cancel()
            raise WorkerDied("a replay worker process died (killed, or out of memory) before finishing its files; "
                             "every batch committed is kept: run the same replay again to store the rest") from None
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    drain()
    reports.close()
    return results
