"""Event Hubs Capture Avro files for tests, written with fastavro in Capture's exact schema and layout."""

from __future__ import annotations

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
