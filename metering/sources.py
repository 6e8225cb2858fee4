"""Replay sources: captured events at rest → ``RawEvent`` batches, streamed (never all in memory).

Supported: ``.jsonl`` and ``.jsonl.gz`` (one event body per line, exactly as the policy sent it),
and folders of them, searched recursively in a stable order.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from metering.model import RawEvent

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")


class SourceError(Exception):
    """A replay path that does not exist or is not a supported capture file."""


def _is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(JSONL_SUFFIXES)


def supported(path: Path) -> bool:
    """Whether replay can read this file."""
    return _is_jsonl(path)


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """The capture files named by ``paths`` (files, or folders searched recursively), sorted."""
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and supported(p)))
        elif path.is_file():
            if not supported(path):
                raise SourceError(f"{path}: not a supported capture file (expected {', '.join(JSONL_SUFFIXES)})")
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
        for line in stream:
            if on_bytes is not None:
                now = disk.tell()
                if now != position:
                    on_bytes(now - position)
                    position = now
            body = line.rstrip(b"\r\n")
            if body.strip():
                yield RawEvent(body=body)


def read_events(paths: Iterable[Path], on_bytes: Callable[[int], None] | None = None) -> Iterator[RawEvent]:
    """All events of all files, in order."""
    for path in paths:
        yield from read_jsonl(path, on_bytes)


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
