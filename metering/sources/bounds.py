"""Hard bounds on what one captured message may cost to read, so that no input file can exhaust memory.

APIM cuts a ``log-to-eventhub`` message at 200 KB and Event Hubs refuses events above 1 MB (Standard)
or 20 MB (Premium/Dedicated), so a real event is far below ``DEFAULT_MAX_EVENT_BYTES``. A longer
line of a JSONL file (or ``Body`` of a Capture record) is never held whole: it is read in bounded
chunks, digested, and becomes a ``RawEvent`` carrying only its first ``OVERSIZED_PREFIX_BYTES``,
which the pipeline quarantines as ``oversized``. ``METERING_MAX_EVENT_BYTES`` changes the bound.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from collections.abc import Callable, Iterator, Mapping
from typing import BinaryIO

from metering.model import RawEvent

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024  # 1 MiB: five times APIM's 200 KB cap
MAX_EVENT_BYTES_SETTING = "METERING_MAX_EVENT_BYTES"
OVERSIZED_PREFIX_BYTES = 4096  # what quarantine keeps of an oversized message
# A Batch API output line is one whole response, read from the operator's own storage: 256 MiB holds
# the largest embeddings response (2,048 inputs of 3,072 dimensions as JSON floats, ~130 MB).
BATCH_OUTPUT_MAX_LINE_BYTES = 256 << 20
_CHUNK = 1024 * 1024


def max_event_bytes_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``METERING_MAX_EVENT_BYTES`` (default 1 MiB, at least 1 KiB); a bad value is a ``ValueError`` naming it."""
    environ = os.environ if environ is None else environ
    value = environ.get(MAX_EVENT_BYTES_SETTING, "").strip()
    if not value:
        return DEFAULT_MAX_EVENT_BYTES
    if not value.isdigit() or not 1024 <= int(value) <= 2**31:
        raise ValueError(f"{MAX_EVENT_BYTES_SETTING} must be a number of bytes from 1024 to 2147483648, got {value!r:.20}")
    return int(value)


def bounded_event(raw: RawEvent, max_bytes: int) -> RawEvent:
    """``raw`` as it is, or, when its body is longer than ``max_bytes``, the ``oversized_event``
    stand-in (first bytes, size, digest) that the pipeline quarantines without decoding: the
    Function and ``metering consume`` get whole bodies from the SDK, and bound what is decoded."""
    if len(raw.body) <= max_bytes:
        return raw
    return oversized_event(raw.body, len(raw.body), hashlib.sha256(raw.body).hexdigest(),
                           source_partition=raw.source_partition, source_sequence_number=raw.source_sequence_number,
                           enqueued_time=raw.enqueued_time)


def oversized_event(prefix: bytes, size: int, sha256: str, **source: object) -> RawEvent:
    """The stand-in for a message too long to read: its first bytes, its size and its digest."""
    return RawEvent(body=prefix[:OVERSIZED_PREFIX_BYTES], oversized_bytes=size, oversized_sha256=sha256, **source)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class LongLine:
    """A line longer than the bound, never held whole: its first bytes, its size and its SHA-256."""

    prefix: bytes
    size: int
    sha256: str


def read_lines(
    stream: BinaryIO, max_bytes: int = DEFAULT_MAX_EVENT_BYTES, progress: Callable[[], None] | None = None
) -> Iterator[bytes | LongLine]:
    """Every line of ``stream`` in order, blank ones included (callers can number them), line ending
    and CR removed; a line longer than ``max_bytes`` is streamed through SHA-256 in 1 MiB chunks and
    yielded as a ``LongLine``. Memory stays within ``max_bytes`` plus one chunk whatever the input.
    ``progress`` is called after each read, so that a caller can report bytes consumed."""
    while True:
        line = stream.readline(max_bytes + 2)  # the bound, and a CRLF line ending
        if progress is not None:
            progress()
        if not line:
            return
        ended = line.endswith(b"\n")
        content = len(line) - (2 if line.endswith(b"\r\n") else 1 if ended else 0)
        if content <= max_bytes:
            yield line.rstrip(b"\r\n")
            continue
        # Digested as before the CRLF allowance: the bytes up to the final LF (a CR before it
        # included), so that an oversized row's digest, its quarantine key, does not change.
        body = line[:-1] if ended else line
        digest = hashlib.sha256(body)
        prefix, size = body[:OVERSIZED_PREFIX_BYTES], len(body)
        del line, body
        while not ended:
            chunk = stream.readline(_CHUNK)
            if progress is not None:
                progress()
            if not chunk:
                break
            ends = chunk.endswith(b"\n")
            part = chunk[:-1] if ends else chunk
            digest.update(part)
            size += len(part)
            if ends:
                break
        yield LongLine(prefix, size, digest.hexdigest())


def bounded_lines(
    stream: BinaryIO, max_bytes: int = DEFAULT_MAX_EVENT_BYTES, progress: Callable[[], None] | None = None
) -> Iterator[RawEvent]:
    """Each non-blank line of ``stream`` as a raw event; a line longer than ``max_bytes`` becomes an
    ``oversized_event`` (``read_lines``: memory stays bounded whatever the input)."""
    for line in read_lines(stream, max_bytes, progress):
        if isinstance(line, LongLine):
            yield oversized_event(line.prefix, line.size, line.sha256)
        elif line.strip():
            yield RawEvent(body=line)
