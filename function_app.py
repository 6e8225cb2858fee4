"""Azure Function: Event Hubs batch → decode → usage → price → idempotent SQL rows.

Settings (application settings, or ``local.settings.json`` locally):

  METERING_DATABASE_URL     SQLAlchemy URL, e.g. Azure SQL with the Function App's managed identity:
                            mssql+pyodbc://@<server>.database.windows.net/<db>?driver=ODBC+Driver+18+for+SQL+Server&Authentication=ActiveDirectoryMsi&Encrypt=yes
  EVENTHUB_NAME             the hub the APIM logger writes to
  EVENTHUB_CONNECTION       the connection's setting prefix; identity-based: set
                            EVENTHUB_CONNECTION__fullyQualifiedNamespace = <ns>.servicebus.windows.net
                            (and __clientId for a user-assigned identity) instead of a connection string
  EVENTHUB_CONSUMER_GROUP   consumer group (default ``$Default``; use a dedicated one, e.g. ``metering``)

Delivery and failure semantics — nothing lost, nothing counted twice:

* Event Hubs delivers at least once, and the trigger advances its checkpoint after the function
  returns *or throws*. So bad input never throws: it becomes a ``quarantine`` row with its bytes.
* A batch is stored in one transaction, keyed by ``request_id``: a redelivered batch inserts nothing
  twice. A storage failure (database down, deadlock, timeout) rolls the transaction back and raises.
* The retry policy below then re-runs the *same* batch with exponential backoff (5 s doubling to
  5 min) and ``max_retry_count = -1``: it retries until the database is back, holding this partition's
  checkpoint, so lag grows but nothing is skipped. Retries live in the host's memory; if the host
  restarts meanwhile, the checkpoint was not advanced and Event Hubs redelivers the batch.
* If you configure a finite retry count and it runs out, the checkpoint moves past the batch. The
  events are still in the hub for its retention period and in Event Hubs Capture (if enabled):
  recover them with ``metering replay <capture folder>``, which is idempotent, so replaying more
  than the missing window is safe.
"""

from __future__ import annotations

import logging
import os
import threading

import azure.functions as func
from sqlalchemy.engine import Engine

from db.engine import make_engine
from metering.ingest import IngestTotals, Ingestor
from metering.model import RawEvent

app = func.FunctionApp()
log = logging.getLogger("metering.function")

# One engine (and connection pool) and one rate-card cache per worker process, reused across
# invocations; created on first use so that importing this module needs no settings.
_ingestor: Ingestor | None = None
_ingestor_lock = threading.Lock()


def get_ingestor() -> Ingestor:
    """The process-wide ingestor (engine + cached rate card)."""
    global _ingestor
    if _ingestor is None:
        with _ingestor_lock:
            if _ingestor is None:
                engine: Engine = make_engine(os.environ.get("METERING_DATABASE_URL"))
                ttl = float(os.environ.get("METERING_RATE_CARD_TTL_SECONDS", "60"))
                _ingestor = Ingestor(engine, rate_card_ttl=ttl)
    return _ingestor


def reset_ingestor() -> None:
    """Forget the process-wide ingestor (tests, or after changing settings)."""
    global _ingestor
    with _ingestor_lock:
        if _ingestor is not None:
            _ingestor.engine.dispose()
        _ingestor = None


def to_raw_event(event: func.EventHubEvent) -> RawEvent:
    """The trigger's event as the pipeline's ``RawEvent`` (body bytes plus where it came from)."""
    metadata = event.metadata or {}
    partition = metadata.get("PartitionContext", {}).get("PartitionId") if isinstance(metadata.get("PartitionContext"), dict) else None
    return RawEvent(
        body=event.get_body() or b"",
        source_partition=str(partition) if partition is not None else None,
        source_sequence_number=event.sequence_number,
        enqueued_time=event.enqueued_time,
    )


def handle_events(events: list[func.EventHubEvent]) -> IngestTotals:
    """Process and store one trigger batch. Raises only when storage fails (so the batch retries)."""
    raws = [to_raw_event(event) for event in events]
    totals = get_ingestor().ingest(raws)
    log.info(
        "metering batch: read=%d inserted=%d duplicates=%d quarantined=%d tokens=%d",
        totals.read, totals.inserted, totals.duplicates, totals.quarantined, totals.tokens,
    )
    return totals


@app.function_name(name="meter_usage")
@app.event_hub_message_trigger(
    arg_name="events",
    event_hub_name="%EVENTHUB_NAME%",
    connection="EVENTHUB_CONNECTION",
    consumer_group="%EVENTHUB_CONSUMER_GROUP%",
    cardinality=func.Cardinality.MANY,
    data_type=func.DataType.BINARY,
)
@app.retry(strategy="exponential_backoff", max_retry_count="-1", minimum_interval="00:00:05", maximum_interval="00:05:00")
def meter_usage(events: list[func.EventHubEvent]) -> None:
    """Event Hubs trigger (cardinality many): one transaction per batch."""
    handle_events(events)
