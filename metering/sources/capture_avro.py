"""A bounded reader of Event Hubs Capture Avro files: the container format decoded by hand, with the
writer schema checked against Capture's ``EventData`` record before any record is read.

A general Avro reader trusts the file: a schema that declares ``Body`` a ``long`` of 3e9, a block
or ``bytes`` length of gigabytes, or a deflate block that inflates a thousandfold each make it
allocate what the file says. Here every length is checked against what is left (of the file, of
the block) before anything is allocated, a block may inflate to at most ``MAX_BLOCK_BYTES``, and a
``Body`` above the event bound becomes an ``oversized`` stand-in (metering/sources/bounds.py). A file
that breaks a rule raises ``CaptureFormatError`` with a one-line reason; events before it were yielded.

The format (Avro 1.x object container): ``Obj\\x01``, a metadata map (``avro.schema``,
``avro.codec``), a 16-byte sync marker, then blocks of (record count, byte size, data, sync).
Codecs: ``null`` and ``deflate`` (what Capture writes).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from metering.sources.bounds import DEFAULT_MAX_EVENT_BYTES, OVERSIZED_PREFIX_BYTES

MAGIC = b"Obj\x01"
MAX_HEADER_BYTES = 1024 * 1024  # the metadata map: a schema of a few hundred bytes, a codec name
MAX_BLOCK_BYTES = 256 * 1024 * 1024  # one block, after inflating
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}
# Capture's EventData fields and what each may be declared as (tests/capture_files.py has the schema).
_SCALAR_FIELDS = {"SequenceNumber": {"long", "int"}, "Offset": {"string"}, "EnqueuedTimeUtc": {"string"}}
_MAP_FIELDS = ("SystemProperties", "Properties")
CAPTURE_FIELD_NAMES = ("SequenceNumber", "Offset", "EnqueuedTimeUtc", "SystemProperties", "Properties", "Body")


class CaptureFormatError(ValueError):
    """The file is not a well-formed Event Hubs Capture Avro file (the message says why, in one line)."""


class _Cursor:
    """Reads Avro primitives from a bytes buffer, never past its end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def long(self) -> int:
        data, pos = self.data, self.pos
        if pos < len(data) and data[pos] < 0x80:  # most numbers (lengths, counts, branches) are one byte
            self.pos = pos + 1
            return (data[pos] >> 1) ^ -(data[pos] & 1)
        shift = result = 0
        while True:
            if pos >= len(data):
                raise CaptureFormatError("a number runs past the end of its block")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise CaptureFormatError("a number is longer than 64 bits")
        self.pos = pos
        return (result >> 1) ^ -(result & 1)

    def take(self, size: int) -> memoryview:
        if size < 0 or size > self.remaining():
            raise CaptureFormatError(f"a length of {size:,} bytes runs past the end of its block "
                                     f"({self.remaining():,} bytes left)")
        start = self.pos
        self.pos += size
        return self.data[start:self.pos]

    def sized(self) -> memoryview:
        return self.take(self.long())

    def count(self) -> int:
        """The item count of a map block (a negative count is followed by the block's byte size)."""
        count = self.long()
        if count < 0:
            count = -count
            self.long()
        if count > self.remaining():  # every item takes at least one byte
            raise CaptureFormatError(f"a map declares {count:,} items in {self.remaining():,} bytes")
        return count

    def value(self, kind: str) -> Any:
        if kind == "null":
            return None
        if kind == "boolean":
            return bool(self.take(1)[0])
        if kind in ("int", "long"):
            return self.long()
        if kind == "float":
            return struct.unpack("<f", self.take(4))[0]
        if kind == "double":
            return struct.unpack("<d", self.take(8))[0]
        if kind == "string":
            return str(self.sized(), "utf-8", "replace")
        return bytes(self.sized())


def _type_name(declared: Any) -> str | None:
    """``"long"`` for ``"long"`` or ``{"type": "long"}``; ``None`` for anything else."""
    if isinstance(declared, dict) and set(declared) <= {"type", "logicalType"}:
        declared = declared.get("type")
    return declared if isinstance(declared, str) and declared in _PRIMITIVES else None


def _union(declared: Any) -> tuple[str, ...] | None:
    """A union (or a single type) of primitives as a tuple of their names, else ``None``."""
    members = declared if isinstance(declared, list) else [declared]
    names = tuple(_type_name(m) for m in members)
    return None if not names or None in names else names  # type: ignore[return-value]


def capture_layout(schema: Any) -> list[tuple[str, str, tuple[str, ...]]]:
    """Each field of a Capture writer schema, in declared order, as (name, kind, types) where kind is
    ``scalar``, ``map`` or ``body``; a schema that is not Capture's raises ``CaptureFormatError``."""
    fields = schema.get("fields") if isinstance(schema, dict) and schema.get("type") == "record" else None
    if not isinstance(fields, list) or not all(isinstance(f, dict) for f in fields):
        raise CaptureFormatError("not Event Hubs Capture's EventData records (the schema is not a record)")
    names = [f.get("name") for f in fields]
    missing = [n for n in CAPTURE_FIELD_NAMES if n not in names]
    if missing:
        raise CaptureFormatError(f"not Event Hubs Capture's EventData records (missing {', '.join(missing)})")
    extra = [str(n) for n in names if n not in CAPTURE_FIELD_NAMES]
    if extra or len(names) != len(CAPTURE_FIELD_NAMES):
        raise CaptureFormatError(f"not Event Hubs Capture's EventData records (unexpected fields {', '.join(extra)[:200]})")
    layout = []
    for field in fields:
        name, declared = field["name"], field.get("type")
        if name in _SCALAR_FIELDS:
            kind = _type_name(declared)
            if kind not in _SCALAR_FIELDS[name]:
                raise CaptureFormatError(f"not Event Hubs Capture's EventData records ({name} must be "
                                         f"{' or '.join(sorted(_SCALAR_FIELDS[name]))}, not {json.dumps(declared)[:80]})")
            layout.append((name, "scalar", (kind,)))
        elif name in _MAP_FIELDS:
            values = _union(declared.get("values")) if isinstance(declared, dict) and declared.get("type") == "map" else None
            if values is None:
                raise CaptureFormatError(f"not Event Hubs Capture's EventData records ({name} must be a map "
                                         f"of primitive values, not {json.dumps(declared)[:80]})")
            layout.append((name, "map", values))
        else:
            body = _union(declared)
            if body is None or not set(body) <= {"null", "bytes"} or "bytes" not in body or len(set(body)) != len(body):
                raise CaptureFormatError(f"not Event Hubs Capture's EventData records (Body must be bytes or "
                                         f"[\"null\", \"bytes\"], not {json.dumps(declared)[:80]})")
            layout.append((name, "body", body))
    return layout


def _read_exact(disk: BinaryIO, size: int, what: str) -> bytes:
    data = disk.read(size)
    if len(data) != size:
        raise CaptureFormatError(f"cut short in {what} ({len(data):,} of {size:,} bytes)")
    return data


def _read_long(disk: BinaryIO) -> int | None:
    """A zigzag varint straight from the file; ``None`` at a clean end of file."""
    shift = result = 0
    for i in range(10):
        byte = disk.read(1)
        if not byte:
            if i == 0:
                return None
            raise CaptureFormatError("cut short in a block header")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return (result >> 1) ^ -(result & 1)
        shift += 7
    raise CaptureFormatError("a block header number is longer than 64 bits")


def _header(disk: BinaryIO, size: int) -> tuple[Any, str, bytes]:
    """The writer schema, codec and sync marker of the file."""
    if _read_exact(disk, 4, "the header") != MAGIC:
        raise CaptureFormatError("not an Avro object container file (no Obj\\x01 magic)")
    limit = min(size, MAX_HEADER_BYTES)
    meta: dict[str, bytes] = {}
    used = 4
    while True:
        count = _read_long(disk)
        if count is None:
            raise CaptureFormatError("cut short in the header")
        if count == 0:
            break
        if count < 0:
            count = -count
            _read_long(disk)
        for _ in range(count):
            parts = []
            for what in ("a metadata key", "a metadata value"):
                length = _read_long(disk)
                if length is None or not 0 <= length <= limit - used:
                    raise CaptureFormatError(f"{what} of {length} bytes does not fit the header's bound "
                                             f"({MAX_HEADER_BYTES:,} bytes)")
                parts.append(_read_exact(disk, length, what))
                used += length + 1
            meta[parts[0].decode("utf-8", "replace")] = parts[1]
            if len(meta) > 1000:
                raise CaptureFormatError("the header has more than 1,000 metadata entries")
    sync = _read_exact(disk, 16, "the header's sync marker")
    try:
        schema = json.loads(meta["avro.schema"])
    except KeyError:
        raise CaptureFormatError("the header has no avro.schema") from None
    except ValueError:
        raise CaptureFormatError("the header's avro.schema is not JSON") from None
    codec = meta.get("avro.codec", b"null").decode("utf-8", "replace")
    if codec not in ("null", "deflate"):
        raise CaptureFormatError(f"codec {codec[:40]!r} is not supported (Event Hubs Capture writes deflate or null)")
    return schema, codec, sync


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data, MAX_BLOCK_BYTES + 1)
    except zlib.error as exc:
        raise CaptureFormatError(f"a deflate block is damaged ({exc})") from None
    if len(out) > MAX_BLOCK_BYTES or inflater.unconsumed_tail:
        raise CaptureFormatError(f"a deflate block inflates beyond {MAX_BLOCK_BYTES // 2**20} MiB")
    return out


def read_capture_records(
    disk: BinaryIO, size: int, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    progress: Callable[[], None] | None = None,
) -> Iterator[tuple[Any, Any, bytes | None, int | None, str | None]]:
    """(sequence number, enqueued time, body, oversized size, oversized digest) of each record of an
    open Capture file of ``size`` bytes, block by block; ``CaptureFormatError`` at the first breach."""
    schema, codec, sync = _header(disk, size)
    layout = capture_layout(schema)
    while True:
        count = _read_long(disk)
        if count is None:
            return
        length = _read_long(disk)
        left = size - disk.tell()
        if length is None or not 0 <= length <= min(left, MAX_BLOCK_BYTES + MAX_BLOCK_BYTES // 100 + 64):
            raise CaptureFormatError(f"a block declares {length} bytes, but {left:,} bytes of the file are left")
        if not 0 <= count <= (length if codec == "null" else MAX_BLOCK_BYTES):
            raise CaptureFormatError(f"a block declares {count:,} records in {length:,} bytes")
        data = _read_exact(disk, length, "a block")
        if codec == "deflate":
            data = _inflate(data)
        if count > len(data):
            raise CaptureFormatError(f"a block declares {count:,} records in {len(data):,} bytes")
        if _read_exact(disk, 16, "a block's sync marker") != sync:
            raise CaptureFormatError("a block's sync marker does not match the header's (damaged file)")
        if progress is not None:
            progress()
        cursor = _Cursor(data)
        del data
        for _ in range(count):
            sequence = enqueued = body = None
            oversized: tuple[int, str] | None = None
            for name, kind, types in layout:
                if kind == "scalar":
                    value = cursor.value(types[0])
                    if name == "SequenceNumber":
                        sequence = value
                    elif name == "EnqueuedTimeUtc":
                        enqueued = value
                elif kind == "map":
                    while True:
                        items = cursor.count()
                        if not items:
                            break
                        for _ in range(items):
                            cursor.sized()
                            branch = cursor.long() if len(types) > 1 else 0
                            if not 0 <= branch < len(types):
                                raise CaptureFormatError(f"{name}: union branch {branch} out of range")
                            cursor.value(types[branch])
                else:
                    branch = cursor.long() if len(types) > 1 else 0
                    if not 0 <= branch < len(types):
                        raise CaptureFormatError(f"Body: union branch {branch} out of range")
                    if types[branch] == "bytes":
                        view = cursor.sized()
                        if len(view) > max_event_bytes:
                            oversized = (len(view), hashlib.sha256(view).hexdigest())
                            body = bytes(view[:OVERSIZED_PREFIX_BYTES])
                        else:
                            body = bytes(view)
            yield sequence, enqueued, body, *(oversized or (None, None))
        if cursor.remaining():
            raise CaptureFormatError(f"a block has {cursor.remaining():,} bytes after its {count:,} records")

