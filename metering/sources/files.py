"""Replay sources: captured events at rest → ``RawEvent`` batches, streamed (never all in memory).

Supported, and folders of them searched recursively in a stable order:

* ``.jsonl`` / ``.jsonl.gz`` (and ``.ndjson``): one event body per line, exactly as the policy sent it.
* ``.avro``: Event Hubs Capture files. Each record is a ``Microsoft.ServiceBus.Messaging.EventData``
  (``SequenceNumber``, ``Offset``, ``EnqueuedTimeUtc``, ``SystemProperties``, ``Properties``,
  ``Body``); ``Body`` is the message exactly as it was sent. Capture's default blob layout
  ``{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro``
  gives the partition id; ``SequenceNumber`` and ``EnqueuedTimeUtc`` come from the record.
  Files are read block by block with a bounded reader (capture_avro.py: deflate or null codec,
  the writer schema checked, every length bounded; Capture writes header-only
  files for empty windows, and a blob may be 0 bytes); both yield no events.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any, BinaryIO

from metering.model import BadEvent, RawEvent
from metering.sources.bounds import bounded_lines, max_event_bytes_from_env

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
AVRO_SUFFIXES = (".avro",)
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + AVRO_SUFFIXES
# {Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro: the tail of Capture's default blob name.
_CAPTURE_TIME_PARTS = (re.compile(r"\d{4}"),) + (re.compile(r"\d{1,2}"),) * 4
_CAPTURE_SECOND = re.compile(r"\d{1,2}\.avro", re.IGNORECASE)


class SourceError(Exception):
    """A replay path that does not exist or is not a supported capture file."""


class ReadProgress:
    """Reports to ``on_bytes`` how far ``disk`` (opened at its start) has been read since the last
    report: ``hook`` is the callback a reader calls after each step (``None`` when nobody listens)."""

    def __init__(self, disk: BinaryIO, on_bytes: Callable[[int], None] | None) -> None:
        self.disk, self.on_bytes, self.position = disk, on_bytes, 0
        self.hook = self.report if on_bytes is not None else None

    def report(self) -> None:
        now = self.disk.tell()
        if now != self.position:
            self.on_bytes(now - self.position)  # type: ignore[misc]
            self.position = now

    def finish(self, size: int) -> None:
        """Report the rest of a file of ``size`` bytes (what the reader skipped at its end)."""
        if self.on_bytes is not None and size > self.position:
            self.on_bytes(size - self.position)
            self.position = size


def _is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(JSONL_SUFFIXES)


def _is_avro(path: Path) -> bool:
    return path.name.lower().endswith(AVRO_SUFFIXES)


def supported(path: Path) -> bool:
    """Whether replay can read this file."""
    return _is_jsonl(path) or _is_avro(path)


def discover(paths: Iterable[str | Path], skipped: list[Path] | None = None) -> list[Path]:
    """The capture files named by ``paths`` (files, or folders searched recursively), sorted.
    Files found in a folder that replay cannot read are appended to ``skipped``, to be listed."""
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            found.extend(p for p in files if supported(p))
            if skipped is not None:
                skipped.extend(p for p in files if not supported(p))
        elif path.is_file():
            if not supported(path):
                raise SourceError(f"{path}: not a supported capture file (expected {', '.join(SUPPORTED_SUFFIXES)})")
            found.append(path)
        else:
            raise SourceError(f"{path}: no such file or folder")
    return found


def read_jsonl(
    path: Path, on_bytes: Callable[[int], None] | None = None, max_event_bytes: int | None = None
) -> Iterator[RawEvent]:
    """Each non-blank line of a JSONL file as one raw event (CRLF tolerated). A line longer than
    ``max_event_bytes`` is never held in memory: it becomes an ``oversized`` stand-in (its first
    bytes and digest, metering/sources/bounds.py) and the rest of the file goes on.

    ``on_bytes`` receives progress in bytes of the file on disk (compressed bytes for ``.gz``).
    ``max_event_bytes``: default ``METERING_MAX_EVENT_BYTES`` (1 MiB).
    """
    bound = max_event_bytes or max_event_bytes_from_env()
    with open(path, "rb") as disk:
        stream: BinaryIO = gzip.GzipFile(fileobj=disk, mode="rb") if path.name.lower().endswith(".gz") else disk  # type: ignore[assignment]
        try:
            yield from bounded_lines(stream, bound, ReadProgress(disk, on_bytes).hook)
        except (EOFError, OSError, zlib.error) as exc:  # a cut or damaged .gz (gzip.BadGzipFile is an OSError)
            what = "a damaged or cut-short gzip file" if stream is not disk else "could not be read"
            raise SourceError(f"{path}: {what} ({type(exc).__name__}: {exc})") from exc


def capture_partition(path: PurePath) -> str | None:
    """The partition id in Capture's default layout (``…/{PartitionId}/{Y}/{M}/{D}/{h}/{m}/{s}.avro``),
    or ``None`` when the path does not follow it (a custom archive name format, a renamed file)."""
    parts = path.parts
    if len(parts) < 7 or not _CAPTURE_SECOND.fullmatch(parts[-1]):
        return None
    if not all(pattern.fullmatch(part) for pattern, part in zip(_CAPTURE_TIME_PARTS, parts[-6:-1])):
        return None
    return parts[-7]


def capture_time(path: PurePath) -> datetime | None:
    """When Capture opened the window of a file in its default layout (the time in its path, UTC),
    or ``None`` when the path does not follow it or names no real instant."""
    if capture_partition(path) is None:
        return None
    try:
        year, month, day, hour, minute = (int(part) for part in path.parts[-6:-1])
        return datetime(year, month, day, hour, minute, int(path.parts[-1][:-5]), tzinfo=timezone.utc)
    except ValueError:
        return None


def _enqueued_time(value: Any) -> datetime | None:
    """Capture writes ``EnqueuedTimeUtc`` as .NET text (``9/14/2026 10:15:02 AM``); ISO 8601 is accepted too."""
    from metering.decode.event import parse_time

    try:
        return parse_time(value, "EnqueuedTimeUtc")
    except BadEvent:
        return None


def read_capture(
    path: Path, on_bytes: Callable[[int], None] | None = None, max_event_bytes: int | None = None
) -> Iterator[RawEvent]:
    """Each record of an Event Hubs Capture Avro file as one raw event, streamed block by block.

    A 0-byte blob and a header-only file (Capture's empty window) yield nothing. The writer schema
    must be Capture's ``EventData`` and every length is bounded (metering/sources/capture_avro.py);
    a ``Body`` above ``max_event_bytes`` becomes an ``oversized`` stand-in. A file that is not
    Capture's Avro, or is cut short or hostile, raises ``SourceError`` naming the file in one line
    (events before the damage have been yielded; replay is idempotent, so re-running is safe).
    """
    bound = max_event_bytes or max_event_bytes_from_env()
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb") as disk:
        try:
            yield from capture_events(disk, size, str(path), capture_partition(path), bound, on_bytes)
        except OSError as exc:
            raise SourceError(f"{path}: not a readable Event Hubs Capture Avro file ({type(exc).__name__}: {exc})") from None


def capture_events(
    disk: BinaryIO, size: int, label: str, partition: str | None, max_event_bytes: int,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[RawEvent]:
    """The records of an open Capture file of ``size`` bytes (a local file or a blob's stream) as
    raw events; a breach of the format raises ``SourceError`` that starts with ``label``."""
    from metering.sources.capture_avro import CaptureFormatError, read_capture_records

    progress = ReadProgress(disk, on_bytes)
    try:
        for sequence, enqueued, body, oversized, digest in read_capture_records(
            disk, size, max_event_bytes, progress.hook
        ):
            yield RawEvent(
                body=body or b"",
                source_partition=partition,
                source_sequence_number=sequence if isinstance(sequence, int) else None,
                enqueued_time=_enqueued_time(enqueued),
                oversized_bytes=oversized,
                oversized_sha256=digest,
            )
    except CaptureFormatError as exc:
        what = ("an Avro file, but " if str(exc).startswith("not Event Hubs Capture's") else
                "not a readable Event Hubs Capture Avro file: ")
        raise SourceError(f"{label}: {what}{exc}") from None
    progress.finish(size)


def read_file(
    path: Path, on_bytes: Callable[[int], None] | None = None, max_event_bytes: int | None = None
) -> Iterator[RawEvent]:
    """The events of one capture file, whatever its format; no event longer than ``max_event_bytes``
    (default ``METERING_MAX_EVENT_BYTES``, 1 MiB) is held in memory: it becomes an ``oversized`` stand-in."""
    if _is_avro(path):
        return read_capture(path, on_bytes, max_event_bytes)
    return read_jsonl(path, on_bytes, max_event_bytes)


def read_events(
    paths: Iterable[Path], on_bytes: Callable[[int], None] | None = None, max_event_bytes: int | None = None
) -> Iterator[RawEvent]:
    """All events of all files, in order."""
    for path in paths:
        yield from read_file(path, on_bytes, max_event_bytes)


def batched(events: Iterable[RawEvent], size: int) -> Iterator[list[RawEvent]]:
    """Consecutive batches of at most ``size`` events."""
    batch: list[RawEvent] = []
    for event in events:
        batch.append(event)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
