"""``metering consume``: a standalone Event Hubs consumer, for teams on containers instead of Functions.

The same ``Ingestor`` as the Function and ``metering replay`` (one path from bytes to rows), driven by
the azure-eventhub SDK's ``EventHubConsumerClient.receive_batch`` with partitions balanced across
replicas and checkpoints kept in Blob Storage (``BlobCheckpointStore``).

Why the synchronous client and ``azure-eventhub-checkpointstoreblob`` (not the ``aio`` pair): the work
per batch is synchronous SQLAlchemy, and the sync client already runs each owned partition's
callback on its own thread, so one slow partition (a database retry) never stalls the others and
the load-balancing loop keeps renewing ownership meanwhile. The asyncio client would run every
partition's callback on one event loop, so the blocking database call would have to be pushed to a
thread pool anyway, with more moving parts and the same result.

Delivery semantics, the same as the Function's:

* A batch is stored in one transaction (``Ingestor.ingest``), then — only then — the partition's
  checkpoint moves to the batch's last event (``partition_context.update_checkpoint``).
* Bad input never raises (it is quarantined), so only storage fails. Then the batch is *not*
  checkpointed and is retried in place with exponential backoff (5 s doubling to 5 min), until
  the database is back or the consumer stops. A consumer that stops (or crashes) mid-retry left the
  checkpoint where it was, so the batch is delivered again to whichever replica owns the partition
  next, and stored exactly once (rows are keyed by request id).
* A checkpoint write that fails after the batch was stored is logged and not retried: the next
  batch's checkpoint covers it, and a redelivery in between only finds duplicates.
"""

from __future__ import annotations

import logging
import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from metering.ingest import IngestTotals, Ingestor, freeze_startup_heap
from metering.model import RawEvent
from metering.sources.bounds import bounded_event, max_event_bytes_from_env

log = logging.getLogger("metering.sources.consume")

INSTALL_HINT = "pip install 'aoai-metering[consume]'"
BACKOFF_INITIAL_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 300.0


class ConsumerUnavailable(Exception):
    """The optional Azure SDK packages are not installed."""


class ConsumerConfigError(Exception):
    """Settings that cannot make a consumer (missing namespace, bad URL…)."""


# --------------------------------------------------------------------------- batch handling


def to_raw_event(event: Any, partition_id: str | None) -> RawEvent:
    """An ``azure.eventhub.EventData`` as the pipeline's ``RawEvent``: body bytes and where it came from."""
    body = event.body
    if isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
    elif isinstance(body, str):
        data = body.encode("utf-8")
    elif body is None:
        data = b""
    else:  # the AMQP data sections, as the SDK yields them
        data = b"".join(bytes(section) for section in body)
    return RawEvent(
        body=data,
        source_partition=str(partition_id) if partition_id is not None else None,
        source_sequence_number=event.sequence_number,
        enqueued_time=event.enqueued_time,
    )


class Stopped(Exception):
    """The consumer is stopping while a batch waits for storage: the batch stays un-checkpointed."""


@dataclass
class HandlerStats:
    batches: int = 0
    storage_failures: int = 0
    checkpoint_failures: int = 0


class BatchHandler:
    """``on_event_batch`` for ``EventHubConsumerClient.receive_batch``: store, then checkpoint.

    ``on_batch`` blocks its partition's thread while it retries a failing store (backoff from
    ``backoff_initial`` doubling to ``backoff_max``; ``max_attempts=None``: until it works or
    ``stop`` is set). It raises ``Stopped`` (or, with ``max_attempts``, the last storage error)
    without checkpointing, so the SDK closes the partition and the batch is delivered again.
    """

    def __init__(
        self,
        ingestor: Ingestor,
        *,
        backoff_initial: float = BACKOFF_INITIAL_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        max_attempts: int | None = None,
        stop: threading.Event | None = None,
        on_totals: Callable[[str | None, IngestTotals], None] | None = None,
        max_event_bytes: int | None = None,
    ):
        self.ingestor = ingestor
        # As in the Function and ``replay``: a longer body is quarantined as ``oversized``, not decoded.
        self.max_event_bytes = max_event_bytes or max_event_bytes_from_env()
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_attempts = max_attempts
        self.stop = stop or threading.Event()
        self.on_totals = on_totals
        self.stats = HandlerStats()
        self.totals = IngestTotals()
        self._lock = threading.Lock()

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failure (1-based)."""
        return min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))

    def on_batch(self, partition_context: Any, events: Sequence[Any]) -> IngestTotals | None:
        if not events:  # receive_batch with max_wait_time calls back with empty batches
            return None
        partition = getattr(partition_context, "partition_id", None)
        raws = [bounded_event(to_raw_event(event, partition), self.max_event_bytes) for event in events]
        attempt = 0
        while True:
            if self.stop.is_set():
                raise Stopped(f"partition {partition}: stopping; {len(raws)} event(s) not checkpointed")
            try:
                totals = self.ingestor.ingest(raws)
                break
            except Exception as exc:  # only storage fails here: bad input is quarantined, never raised
                attempt += 1
                with self._lock:
                    self.stats.storage_failures += 1
                if self.max_attempts is not None and attempt >= self.max_attempts:
                    raise
                wait = self.delay(attempt)
                log.warning("partition %s: storing %d event(s) failed (attempt %d: %s: %s); retrying in %.0f s,"
                            " checkpoint held", partition, len(raws), attempt, type(exc).__name__, exc, wait)
                if self.stop.wait(wait):
                    raise Stopped(f"partition {partition}: stopping; {len(raws)} event(s) not checkpointed") from exc
        try:
            partition_context.update_checkpoint(events[-1])
        except Exception as exc:  # stored already: a redelivery would only find duplicates
            with self._lock:
                self.stats.checkpoint_failures += 1
            log.warning("partition %s: batch stored but the checkpoint was not written (%s: %s); the next batch's"
                        " checkpoint covers it", partition, type(exc).__name__, exc)
        with self._lock:
            self.stats.batches += 1
            self.totals.add(totals)
        log.info("partition %s: %s", partition, totals.summary())
        if self.on_totals is not None:
            self.on_totals(partition, totals)
        return totals

    def on_error(self, partition_context: Any, error: Exception) -> None:
        partition = getattr(partition_context, "partition_id", None) if partition_context is not None else None
        log.warning("event hubs error (partition %s): %s: %s", partition, type(error).__name__, error)


# --------------------------------------------------------------------------- settings and client


@dataclass(frozen=True)
class ConsumerSettings:
    """Where to read and where to checkpoint. Exactly one Event Hubs auth: ``connection_string`` or
    ``namespace`` (identity); exactly one checkpoint location: ``checkpoint_url`` (a container URL,
    identity or a SAS in the URL) or ``checkpoint_connection_string`` + ``checkpoint_container``."""

    eventhub: str
    consumer_group: str = "$Default"
    namespace: str | None = None
    connection_string: str | None = None
    checkpoint_url: str | None = None
    checkpoint_connection_string: str | None = None
    checkpoint_container: str | None = None
    max_batch_size: int = 300
    max_wait_time: float | None = None  # None: call back only with events
    starting_position: str = "-1"  # with no checkpoint yet: "-1" the oldest retained event, "@latest" new ones
    prefetch: int = 300


def _sdk() -> tuple[Any, Any]:
    try:
        from azure.eventhub import EventHubConsumerClient
        from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
    except ImportError as exc:
        raise ConsumerUnavailable(
            f"metering consume needs the Azure Event Hubs SDK and its blob checkpoint store ({exc.name or exc});"
            f" install them with: {INSTALL_HINT}"
        ) from None
    return EventHubConsumerClient, BlobCheckpointStore


def _credential() -> Any:
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise ConsumerUnavailable(f"identity auth needs azure-identity; install it with: {INSTALL_HINT}") from None
    return DefaultAzureCredential()


def split_container_url(url: str) -> tuple[str, str, str | None]:
    """``https://acct.blob.core.windows.net/container[?sas]`` → (account URL, container, SAS or None)."""
    parts = urlsplit(url)
    container = parts.path.strip("/")
    if parts.scheme not in ("https", "http") or not parts.netloc or not container or "/" in container:
        raise ConsumerConfigError(
            f"checkpoint URL must be a blob container URL like https://<account>.blob.core.windows.net/<container>,"
            f" got {url.split('?', 1)[0]!r}")
    return f"{parts.scheme}://{parts.netloc}", container, parts.query or None


def build_checkpoint_store(settings: ConsumerSettings, credential: Any = None) -> Any:
    _, BlobCheckpointStore = _sdk()
    if settings.checkpoint_connection_string:
        if not settings.checkpoint_container:
            raise ConsumerConfigError("a checkpoint connection string needs --checkpoint-container")
        return BlobCheckpointStore.from_connection_string(settings.checkpoint_connection_string, settings.checkpoint_container)
    if not settings.checkpoint_url:
        raise ConsumerConfigError("no checkpoint store: set --checkpoint-url (METERING_CHECKPOINT_URL) to a blob container URL,"
                                  " or --checkpoint-connection-string with --checkpoint-container")
    account, container, sas = split_container_url(settings.checkpoint_url)
    if sas:
        return BlobCheckpointStore(f"{account}?{sas}", container)
    return BlobCheckpointStore(account, container, credential=credential or _credential())


def build_client(settings: ConsumerSettings, credential: Any = None) -> Any:
    """The SDK client with its checkpoint store (no network traffic until ``receive_batch``)."""
    EventHubConsumerClient, _ = _sdk()
    if settings.connection_string:
        store = build_checkpoint_store(settings, credential)
        return EventHubConsumerClient.from_connection_string(
            settings.connection_string,
            consumer_group=settings.consumer_group,
            eventhub_name=settings.eventhub,
            checkpoint_store=store,
        )
    if not settings.namespace:
        raise ConsumerConfigError("no Event Hubs to read: set --namespace (EVENTHUB_NAMESPACE, identity auth)"
                                  " or --connection-string (EVENTHUB_CONNECTION)")
    credential = credential or _credential()
    store = build_checkpoint_store(settings, credential)
    return EventHubConsumerClient(
        fully_qualified_namespace=settings.namespace,
        eventhub_name=settings.eventhub,
        consumer_group=settings.consumer_group,
        credential=credential,
        checkpoint_store=store,
    )


def run(client: Any, handler: BatchHandler, settings: ConsumerSettings) -> None:
    """Receive until interrupted; on the way out stop retrying batches and close the client."""
    try:
        client.receive_batch(
            on_event_batch=handler.on_batch,
            on_error=handler.on_error,
            max_batch_size=settings.max_batch_size,
            max_wait_time=settings.max_wait_time,
            starting_position=settings.starting_position,
            prefetch=settings.prefetch,
        )
    finally:
        handler.stop.set()  # first: a partition thread waiting to retry a batch gives up (not checkpointed)
        client.close()


def make_ingestor(database_url: str | None) -> Ingestor:
    """The Function's ingestor, built from the same settings (database, rate-card TTL, pipeline settings)."""
    from db.engine import make_engine

    from metering.settings import rate_card_ttl_from_env, settings_from_env

    try:  # a malformed setting is the operator's to fix: a one-line message, not a traceback
        ttl, pipeline_settings = rate_card_ttl_from_env(), settings_from_env()
        max_event_bytes_from_env()   # read again by the handler; a bad value stops here, in one line
    except ValueError as exc:
        raise ConsumerConfigError(str(exc)) from None
    ingestor = Ingestor(make_engine(database_url), rate_card_ttl=ttl, settings=pipeline_settings)
    freeze_startup_heap()
    return ingestor



# --------------------------------------------------------------------------- command line


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def settings_from_args(args: argparse.Namespace) -> ConsumerSettings:
    eventhub = args.eventhub or _env("EVENTHUB_NAME")
    if not eventhub:
        raise ConsumerConfigError("no event hub: set --eventhub or EVENTHUB_NAME")
    connection = args.connection_string or _env("EVENTHUB_CONNECTION_STRING")
    if connection is None:
        legacy = _env("EVENTHUB_CONNECTION")  # the Function's setting, when it holds a connection string
        connection = legacy if legacy and "endpoint=" in legacy.lower() else None
    namespace = args.namespace or _env("EVENTHUB_NAMESPACE", "EVENTHUB_CONNECTION__fullyQualifiedNamespace")
    if connection and args.namespace:
        raise ConsumerConfigError("use either --namespace (identity) or --connection-string, not both")
    if args.batch_size < 1:
        raise ConsumerConfigError("--batch-size must be at least 1")
    return ConsumerSettings(
        eventhub=eventhub,
        consumer_group=args.consumer_group or _env("EVENTHUB_CONSUMER_GROUP") or "$Default",
        namespace=None if connection else namespace,
        connection_string=connection,
        checkpoint_url=args.checkpoint_url or _env("METERING_CHECKPOINT_URL"),
        checkpoint_connection_string=args.checkpoint_connection_string or _env("METERING_CHECKPOINT_CONNECTION_STRING"),
        checkpoint_container=args.checkpoint_container or _env("METERING_CHECKPOINT_CONTAINER"),
        max_batch_size=args.batch_size,
        starting_position="-1" if args.start == "earliest" else "@latest",
        prefetch=max(args.batch_size, 300),
    )


def command(args: argparse.Namespace, database_url: str | None) -> int:
    """Run the consumer until SIGINT/SIGTERM; print what it stored. Raises ``ConsumerUnavailable`` /
    ``ConsumerConfigError`` for the command line to report."""
    settings = settings_from_args(args)
    client = build_client(settings)
    handler = BatchHandler(make_ingestor(database_url))

    def _terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    where = settings.namespace or "the connection string's namespace"
    log.warning("consuming %s/%s (consumer group %s); Ctrl-C or SIGTERM to stop", where, settings.eventhub,
                settings.consumer_group)
    try:
        run(client, handler, settings)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.stdout.write(f"consumed {handler.stats.batches:,} batch(es): {handler.totals.summary()}\n")
    return 0
