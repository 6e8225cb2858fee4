"""Event Hubs messages as the Functions host hands them to the trigger (``azure.functions.EventHubEvent``)."""

from __future__ import annotations

from datetime import datetime, timezone

import azure.functions as func


def hub_event(body: bytes, sequence_number: int) -> func.EventHubEvent:
    return func.EventHubEvent(
        body=body,
        sequence_number=sequence_number,
        offset=str(sequence_number * 1024),
        enqueued_time=datetime(2026, 10, 15, 9, 30, tzinfo=timezone.utc),
        partition_key=None,
    )
