"""``metering replay PATH...``: captured events (JSONL, JSONL.gz, Event Hubs Capture Avro, folders)
→ the same pipeline as the Function, idempotently, with a progress bar and a summary; files (or
Capture partitions) in parallel worker processes with ``--workers``."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from metering.cli.common import UsageError, migrated_engine, out, pipeline_settings

DEFAULT_BATCH_SIZE = 500


def skipped_line(skipped: list[Path], shown: int = 10) -> str:
    """One line naming the files of the given folders that replay does not read (first ``shown``)."""
    from metering.safe_text import terminal_line

    names = ", ".join(terminal_line(str(p)) for p in skipped[:shown])
    more = f", and {len(skipped) - shown:,} more" if len(skipped) > shown else ""
    return (f"metering: skipped {len(skipped):,} file(s) not recognised (replay reads .jsonl, .jsonl.gz, .ndjson, "
            f".avro): {names}{more}")


def check_event_bound() -> None:
    """``METERING_MAX_EVENT_BYTES`` is read by the sources; a bad value is bad input, said before reading."""
    from metering.sources.bounds import max_event_bytes_from_env

    try:
        max_event_bytes_from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def capture_window(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    """``--since``/``--until`` as ``[since, until)`` in UTC (an ``--until`` date is inclusive)."""
    if not args.since and not args.until:
        return None, None
    from metering.finance.report.options import Period

    try:
        period = Period.between(args.since, args.until)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return period.since, period.until


def in_window(files: list[Path], since: datetime | None, until: datetime | None) -> list[Path]:
    """The local Capture files whose folder time lies in ``[since, until)``; a file outside
    Capture's layout cannot be placed in time, so a window refuses it."""
    from metering.safe_text import terminal_line
    from metering.sources.files import capture_time

    kept = []
    for path in files:
        moment = capture_time(path)
        if moment is None:
            raise UsageError(f"{terminal_line(str(path))}: --since/--until select Event Hubs Capture files by their "
                             "time folders ({PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro); this "
                             "file is not in that layout")
        if (since is None or since <= moment) and (until is None or moment < until):
            kept.append(path)
    return kept


def list_urls(urls: list[str], since: datetime | None, until: datetime | None) -> list[Any]:
    """The Capture blobs named by storage URLs (containers or prefixes), listed before anything is stored."""
    if not urls:
        return []
    from metering.safe_text import terminal_line
    from metering.sources.blob import BlobSourceError, list_capture, parse_blob_url

    found: list[Any] = []
    for url in urls:
        try:
            container, prefix = parse_blob_url(url)
            listing = list_capture(container, prefix, since, until)
        except (ValueError, BlobSourceError) as exc:
            raise UsageError(terminal_line(str(exc))) from None
        if listing.skipped:
            print(skipped_line([Path(container.url(n)) for n in listing.skipped]), file=sys.stderr)
        if listing.outside_layout:
            print(f"metering: {len(listing.outside_layout):,} .avro blob(s) under {terminal_line(container.url(prefix))} are "
                  f"not in Capture's time layout, so --since/--until cannot select them (not read), e.g. "
                  f"{terminal_line(listing.outside_layout[0])}", file=sys.stderr)
        found.extend(listing.blobs)
    return found


def cmd_replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metering.cli.replay_units import WorkerDied, available_cores, file_size, plan_units, replay_parallel, replay_unit
    from metering.ingest import IngestTotals, Ingestor, freeze_startup_heap
    from metering.sources.blob import is_blob_url
    from metering.sources.files import SourceError, discover

    if args.batch_size <= 0:
        raise UsageError("--batch-size must be a positive number of events")
    if args.workers is not None and args.workers <= 0:
        raise UsageError("--workers must be a positive number of processes")
    since, until = capture_window(args)
    engine = migrated_engine(args)
    check_event_bound()
    skipped: list[Path] = []
    local = [p for p in args.paths if not is_blob_url(p)]
    try:
        files: list[Any] = discover(local, skipped) if local else []
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    if since is not None or until is not None:
        files = in_window(files, since, until)
    files += list_urls([p for p in args.paths if is_blob_url(p)], since, until)
    if skipped:
        print(skipped_line(skipped), file=sys.stderr)
    if not files:
        shown = ", ".join(p.split("?", 1)[0] for p in args.paths)
        raise UsageError("no capture files found (.jsonl, .jsonl.gz, .avro) under " + shown
                         + (" in the --since/--until window" if since or until else ""))
    settings = pipeline_settings(args)
    units = plan_units(files)
    workers = min(args.workers or available_cores(), len(units))
    if engine.url.get_backend_name() == "sqlite" and engine.url.database in (None, "", ":memory:"):
        workers = 1  # an in-memory database exists only in this process
    totals = IngestTotals()
    damaged: list[str] = []
    total_bytes = sum(file_size(f) for f in files)
    show = None if args.progress == "auto" else args.progress == "on"
    tqdm.monitor_interval = 0  # no monitor thread: worker processes are forked (cli/replay_units.py)
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="replay", disable=not show if show is not None else None,
              file=sys.stderr, leave=False) as bar:
        events = inserted = 0

        def progress(count: int, read: int, new: int) -> None:
            nonlocal events, inserted
            events += read
            inserted += new
            bar.update(count)
            bar.set_postfix(events=events, inserted=inserted, refresh=False)

        if workers <= 1:
            ingestor = Ingestor(engine, settings=settings)
            freeze_startup_heap()
            for unit in units:
                result = replay_unit(unit, ingestor, args.batch_size, lambda n, done: progress(n, done.read, done.inserted))
                totals.add(result.totals)
                damaged.extend(result.damaged)
        else:
            url = engine.url.render_as_string(hide_password=False)
            engine.dispose()
            try:
                results = replay_parallel(units, url, settings, args.batch_size, workers, progress)
            except WorkerDied as exc:
                raise UsageError(str(exc)) from None
            for result in results:
                totals.add(result.totals)
                damaged.extend(result.damaged)
    out(f"replayed {len(files)} file(s): {totals.summary()}\n")
    if damaged:
        # Everything else is stored; replay is idempotent, so a rerun after fixing the file only adds what is missing.
        for message in sorted(damaged):
            print(f"metering: {message}; the events before the damage are stored", file=sys.stderr)
        return 2
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    replay = commands.add_parser("replay", help="ingest captured events (.jsonl, .jsonl.gz, Event Hubs Capture .avro, folders); idempotent")
    replay.add_argument("paths", nargs="+", metavar="PATH",
                        help="capture files (.jsonl, .jsonl.gz, .avro) or folders of them, e.g. samples/events; or the URL of"
                             " a Capture container or prefix, https://ACCOUNT.blob.core.windows.net/CONTAINER/NAMESPACE/HUB"
                             " or abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/... (a SAS in the URL, else"
                             " DefaultAzureCredential; docs/backfill.md)")
    replay.add_argument("--since", metavar="DATE", help="Capture files whose time folder is on or after DATE (UTC)")
    replay.add_argument("--until", metavar="DATE", help="...and on or before DATE (a date: inclusive; a time: exclusive)")
    replay.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"events per transaction (default {DEFAULT_BATCH_SIZE})")
    replay.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes reading files (or Capture partitions) in parallel (default: the cores available; 1: in this process)")
    replay.add_argument("--progress", choices=("auto", "on", "off"), default="auto", help="progress bar on stderr (auto: when a terminal)")
    replay.add_argument("--signing-secret-file", metavar="FILE", help="verify event signatures with this HMAC key (default: $METERING_SIGNING_SECRET)")
    replay.set_defaults(handler=cmd_replay)
