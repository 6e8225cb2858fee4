"""Replay sources: captured events at rest → ``RawEvent`` batches, streamed (never all in memory).

Supported, and folders of them searched recursively in a stable order:

* ``.jsonl`` / ``.jsonl.gz`` (and ``.ndjson``): one event body per line, exactly as the policy sent it.
* ``.avro``: Event Hubs Capture files. Each record is a ``Microsoft.ServiceBus.Messaging.EventData``
  (``SequenceNumber``, ``Offset``, ``EnqueuedTimeUtc``, ``SystemProperties``, ``Properties``,
  ``Body``); ``Body`` is the message exactly as it was sent. Capture's default blob layout
  ``{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro``
  gives the partition id; ``SequenceNumber`` and ``EnqueuedTimeUtc`` come from the record.
  Files are read block by block with fastavro (deflate or null codec; Capture writes header-only
  files for empty windows, and a blob may be 0 bytes); both yield no events.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from datetime import datetime
from typing import Any, BinaryIO

from metering.model import BadEvent, RawEvent

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
AVRO_SUFFIXES = (".avro",)
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + AVRO_SUFFIXES
# The fields of Capture's record (``Microsoft.ServiceBus.Messaging.EventData``) that replay needs.
CAPTURE_FIELDS = ("SequenceNumber", "EnqueuedTimeUtc", "Body")
# {Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro: the tail of Capture's default blob name.
_CAPTURE_TIME_PARTS = (re.compile(r"\d{4}"),) + (re.compile(r"\d{1,2}"),) * 4
_CAPTURE_SECOND = re.compile(r"\d{1,2}\.avro", re.IGNORECASE)


class SourceError(Exception):
    """A replay path that does not exist or is not a supported capture file."""


def _is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(JSONL_SUFFIXES)


def _is_avro(path: Path) -> bool:
    return path.name.lower().endswith(AVRO_SUFFIXES)


def supported(path: Path) -> bool:
    """Whether replay can read this file."""
    return _is_jsonl(path) or _is_avro(path)


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """The capture files named by ``paths`` (files, or folders searched recursively), sorted."""
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and supported(p)))
        elif path.is_file():
            if not supported(path):
                raise SourceError(f"{path}: not a supported capture file (expected {', '.join(SUPPORTED_SUFFIXES)})")
            found.append(path)
        else:
            raise SourceError(f"{path}: no such file or folder")
    return found


def read_jsonl(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[RawEvent]:
    """Each non-blank line of a JSONL file as one raw event (CRLF tolerated).

    ``on_bytes`` receives progress in bytes of the file on disk (compressed bytes for ``.gz``).
    """
    with open(path, "rb") as disk:
        stream: BinaryIO = gzip.GzipFile(fileobj=disk, mode="rb") if path.name.lower().endswith(".gz") else disk  # type: ignore[assignment]
        position = 0
        try:
            for line in stream:
                if on_bytes is not None:
                    now = disk.tell()
                    if now != position:
                        on_bytes(now - position)
                        position = now
                body = line.rstrip(b"\r\n")
                if body.strip():
                    yield RawEvent(body=body)
        except (EOFError, OSError, zlib.error) as exc:  # a cut or damaged .gz (gzip.BadGzipFile is an OSError)
            what = "a damaged or cut-short gzip file" if stream is not disk else "could not be read"
            raise SourceError(f"{path}: {what} ({type(exc).__name__}: {exc})") from exc


def capture_partition(path: Path) -> str | None:
    """The partition id in Capture's default layout (``…/{PartitionId}/{Y}/{M}/{D}/{h}/{m}/{s}.avro``),
    or ``None`` when the path does not follow it (a custom archive name format, a renamed file)."""
    parts = path.parts
    if len(parts) < 7 or not _CAPTURE_SECOND.fullmatch(parts[-1]):
        return None
    if not all(pattern.fullmatch(part) for pattern, part in zip(_CAPTURE_TIME_PARTS, parts[-6:-1])):
        return None
    return parts[-7]


def _enqueued_time(value: Any) -> datetime | None:
    """Capture writes ``EnqueuedTimeUtc`` as .NET text (``9/14/2026 10:15:02 AM``); ISO 8601 is accepted too."""
    from metering.decode.event import parse_time

    try:
        return parse_time(value, "EnqueuedTimeUtc")
    except BadEvent:
        return None


def read_capture(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[RawEvent]:
    """Each record of an Event Hubs Capture Avro file as one raw event, streamed block by block.

    A 0-byte blob and a header-only file (Capture's empty window) yield nothing. A file that is not
    Capture's Avro, or that is cut short, raises ``SourceError`` naming the file (events before
    the damage have been yielded; replay is idempotent, so re-running after a fix is safe).
    """
    import fastavro

    size = path.stat().st_size
    if size == 0:
        return
    partition = capture_partition(path)
    with open(path, "rb") as disk:
        position = 0
        try:
            records = fastavro.reader(disk)
            schema = records.writer_schema
            names = {f.get("name") for f in schema.get("fields", [])} if isinstance(schema, dict) else set()
            missing = [name for name in CAPTURE_FIELDS if name not in names]
            if missing:
                raise SourceError(f"{path}: an Avro file, but not Event Hubs Capture's EventData records "
                                  f"(missing {', '.join(missing)})")
            for record in records:
                if on_bytes is not None:
                    now = disk.tell()
                    if now != position:
                        on_bytes(now - position)
                        position = now
                body = record.get("Body")
                sequence = record.get("SequenceNumber")
                yield RawEvent(
                    body=bytes(body) if body is not None else b"",
                    source_partition=partition,
                    source_sequence_number=sequence if isinstance(sequence, int) else None,
                    enqueued_time=_enqueued_time(record.get("EnqueuedTimeUtc")),
                )
        except SourceError:
            raise
        except (ValueError, EOFError, OSError, StopIteration, TypeError, KeyError, IndexError) as exc:
            raise SourceError(f"{path}: not a readable Event Hubs Capture Avro file ({type(exc).__name__}: {exc})") from exc
        if on_bytes is not None and size > position:
            on_bytes(size - position)


def read_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[RawEvent]:
    """The events of one capture file, whatever its format."""
    if _is_avro(path):
        return read_capture(path, on_bytes)
    return read_jsonl(path, on_bytes)


def read_events(paths: Iterable[Path], on_bytes: Callable[[int], None] | None = None) -> Iterator[RawEvent]:
    """All events of all files, in order."""
    for path in paths:
        yield from read_file(path, on_bytes)


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
