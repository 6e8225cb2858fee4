"""Event Hubs Capture Avro files for tests, written with fastavro in Capture's exact schema and layout
(and, for hostile files, by hand: ``container`` and ``capture_record`` may lie about any length)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fastavro

# The writer schema of Event Hubs Capture files, as Microsoft documents it ("Exploring captured
# files": avro-tools getschema on a capture file).
CAPTURE_SCHEMA = {
    "type": "record",
    "name": "EventData",
    "namespace": "Microsoft.ServiceBus.Messaging",
    "fields": [
        {"name": "SequenceNumber", "type": "long"},
        {"name": "Offset", "type": "string"},
        {"name": "EnqueuedTimeUtc", "type": "string"},
        {"name": "SystemProperties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Properties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Body", "type": ["null", "bytes"]},
    ],
}

ENQUEUED = datetime(2026, 10, 15, 9, 30, 5, tzinfo=timezone.utc)


def dotnet_time(moment: datetime) -> str:
    """.NET's invariant ``M/d/yyyy h:mm:ss tt``, as Capture writes ``EnqueuedTimeUtc``."""
    hour = moment.hour % 12 or 12
    return f"{moment.month}/{moment.day}/{moment.year} {hour}:{moment.minute:02d}:{moment.second:02d} {'AM' if moment.hour < 12 else 'PM'}"


def capture_records(bodies: Sequence[bytes | None], first_sequence: int = 0, enqueued: datetime = ENQUEUED) -> list[dict]:
    records = []
    for i, body in enumerate(bodies):
        sequence = first_sequence + i
        when = enqueued + timedelta(seconds=i)
        records.append({
            "SequenceNumber": sequence,
            "Offset": str(sequence * 1024),
            "EnqueuedTimeUtc": dotnet_time(when),
            "SystemProperties": {
                "x-opt-sequence-number": sequence,
                "x-opt-offset": str(sequence * 1024),
                "x-opt-enqueued-time": int(when.timestamp() * 1000),
            },
            "Properties": {},
            "Body": body,
        })
    return records


def capture_path(root: Path, partition: str, moment: datetime = ENQUEUED,
                 namespace: str = "evhns-contoso-metering", hub: str = "aoai-usage") -> Path:
    """``{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro``."""
    return (root / namespace / hub / partition / f"{moment.year:04d}" / f"{moment.month:02d}" / f"{moment.day:02d}"
            / f"{moment.hour:02d}" / f"{moment.minute:02d}" / f"{moment.second:02d}.avro")


def write_capture(path: Path, records: list[dict], codec: str = "deflate", sync_interval: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        fastavro.writer(out, CAPTURE_SCHEMA, records, codec=codec, sync_interval=sync_interval)
    return path


# Hand-written containers, so that a test can make a count or length lie (hostile files).


def zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def avro_bytes(data: bytes) -> bytes:
    return zigzag(len(data)) + data


SYNC = b"S" * 16  # any 16 bytes, as long as every block repeats them


def container(schema: dict, blocks: list[tuple[int, int | None, bytes]], codec: str = "null") -> bytes:
    """An Avro object container written by hand, so that its counts and lengths can lie."""
    meta = zigzag(2) + avro_bytes(b"avro.schema") + avro_bytes(json.dumps(schema).encode()) \
        + avro_bytes(b"avro.codec") + avro_bytes(codec.encode()) + zigzag(0)
    body = b"".join(zigzag(count) + zigzag(len(data) if size is None else size) + data + SYNC
                    for count, size, data in blocks)
    return b"Obj\x01" + meta + SYNC + body


def capture_record(body: bytes, sequence: int = 1, body_length: int | None = None) -> bytes:
    """One EventData record in Capture's schema; ``body_length`` lies about Body's length."""
    return (zigzag(sequence) + avro_bytes(b"1024") + avro_bytes(b"10/15/2026 9:30:05 AM") + zigzag(0) + zigzag(0)
            + zigzag(1) + zigzag(len(body) if body_length is None else body_length) + body)
