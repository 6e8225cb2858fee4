"""`metering consume` against a real Azure Storage server (Azurite): the SDK's ``BlobCheckpointStore``
keeps partition ownership and checkpoints, two consumers share the partitions, a partition handed
over resumes from its checkpoint, and a restart resumes where the checkpoints say (issue 32).

Nothing here can serve the Event Hubs AMQP protocol, so the hub is a stand-in: the production
``EventHubConsumerClient`` (its ``receive_batch``, load balancing and checkpointing, unchanged) with
only the two calls that reach the service replaced — the partition ids, and a partition's receiver,
which delivers the stand-in's events after the position the SDK asks for (the checkpoint's offset).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from azure.eventhub import EventData, EventHubConsumerClient
from azure.eventhub._constants import PROP_OFFSET, PROP_SEQ_NUMBER, PROP_TIMESTAMP

from azurite import azurite, container  # noqa: F401  (fixtures)
from db import rate_card as rate_card_store
from db.schema import usage_records
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.price.rate_card import parse_rates_csv
from metering.sources.consume import BatchHandler, ConsumerSettings, build_checkpoint_store, run

NAMESPACE = "evhns-contoso.servicebus.windows.net"
HUB = "aoai-usage"
GROUP = "metering"
CONNECTION = f"Endpoint=sb://{NAMESPACE}/;SharedAccessKeyName=listen;SharedAccessKey=bm90LWEta2V5;EntityPath={HUB}"
PARTITIONS = ("0", "1", "2", "3")
CARD = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
)
ENQUEUED_MS = int(datetime(2026, 10, 15, 9, 30, tzinfo=timezone.utc).timestamp() * 1000)


class StandInHub:
    """The events of each partition, appended as a producer would; offsets are 1024 × sequence number."""

    def __init__(self) -> None:
        self.events: dict[str, list[EventData]] = {p: [] for p in PARTITIONS}
        self.lock = threading.Lock()

    def send(self, per_partition: int, tag: str) -> None:
        with self.lock:
            for partition, events in self.events.items():
                for _ in range(per_partition):
                    sequence = len(events)
                    event = EventData(encode(v1_event(f"{tag}-p{partition}-{sequence}")))
                    annotations = event.raw_amqp_message.annotations
                    annotations[PROP_SEQ_NUMBER] = sequence
                    annotations[PROP_OFFSET] = str(sequence * 1024).encode()
                    annotations[PROP_TIMESTAMP] = ENQUEUED_MS
                    events.append(event)

    def after(self, partition: str, offset: str, inclusive: bool, limit: int) -> list[EventData]:
        position = int(offset)  # "-1": the start of the partition
        with self.lock:
            return [e for e in self.events[partition]
                    if int(e.offset) > position or (inclusive and int(e.offset) == position)][:limit]


class StandInReceiver:
    """What the SDK's ``EventProcessor`` drives for one owned partition: ``receive`` hands over the
    next batch after the position the processor started it at (a checkpoint's offset, or "-1")."""

    def __init__(self, hub: StandInHub, partition: str, position: Any, inclusive: bool,
                 on_received: Callable[[list[EventData]], None], log: list[tuple[str, str]]) -> None:
        self.hub, self.partition, self.on_received, self.log = hub, partition, on_received, log
        self.position = str(position)
        self.inclusive = inclusive
        self.stop = False
        log.append(("start", f"{partition}@{self.position}"))

    def receive(self, batch: bool, max_batch_size: int, max_wait_time: float | None) -> None:
        events = self.hub.after(self.partition, self.position, self.inclusive, max_batch_size)
        if not events:
            time.sleep(0.02)
            return
        self.position, self.inclusive = events[-1].offset, False
        self.on_received(events)

    def close(self) -> None:
        self.log.append(("close", self.partition))


class StandInClient(EventHubConsumerClient):
    """The production client; only the partition list and the partition receiver are the stand-in's."""

    hub: StandInHub
    log: list[tuple[str, str]]

    def get_partition_ids(self) -> list[str]:
        return list(PARTITIONS)

    def _create_consumer(self, consumer_group, partition_id, event_position, on_event_received, **kwargs):
        return StandInReceiver(self.hub, partition_id, event_position, kwargs.get("event_position_inclusive", False),
                               on_event_received, self.log)


class Consumer:
    """One `metering consume` replica: its client, its ``BatchHandler``, ``run`` on a thread."""

    running: list[Consumer] = []

    def __init__(self, hub: StandInHub, settings: ConsumerSettings, engine: sa.Engine) -> None:
        self.log: list[tuple[str, str]] = []
        self.client = StandInClient.from_connection_string(
            CONNECTION, consumer_group=GROUP, eventhub_name=HUB, checkpoint_store=build_checkpoint_store(settings),
            load_balancing_interval=0.4, partition_ownership_expiration_interval=30)
        self.client.hub, self.client.log = hub, self.log
        self.handler = BatchHandler(Ingestor(engine, rate_card_ttl=0), backoff_initial=0.05)
        self.thread = threading.Thread(target=run, args=(self.client, self.handler, settings), daemon=True)
        self.thread.start()
        Consumer.running.append(self)

    def stop(self) -> None:
        self.client.close()  # stops the SDK's processor: it releases its partitions
        self.thread.join(timeout=30)
        Consumer.running.remove(self)
        assert not self.thread.is_alive()


@pytest.fixture(autouse=True)
def no_replica_left_running():
    yield
    for consumer in list(Consumer.running):
        consumer.stop()


def wait_for(condition: Callable[[], Any], what: str, seconds: float = 90) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def engine(sqlite_engine):
    with sqlite_engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(CARD))
    return sqlite_engine


def rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar()


def test_two_consumers_share_the_partitions_a_handed_over_partition_and_a_restart_resume_from_the_checkpoint(
        azurite, container, engine):
    settings = ConsumerSettings(eventhub=HUB, consumer_group=GROUP, connection_string=CONNECTION,
                                checkpoint_connection_string=azurite.connection_string, checkpoint_container=container,
                                max_batch_size=7)
    store = build_checkpoint_store(settings)

    def owners() -> dict[str, str]:
        return {o["partition_id"]: o["owner_id"] for o in store.list_ownership(NAMESPACE, HUB, GROUP) if o["owner_id"]}

    def checkpoints() -> dict[str, int]:
        return {c["partition_id"]: c["sequence_number"] for c in store.list_checkpoints(NAMESPACE, HUB, GROUP)}

    hub = StandInHub()
    hub.send(20, "first")
    first = Consumer(hub, settings, engine)
    # Alone, the first replica owns every partition and stores and checkpoints all it finds.
    wait_for(lambda: checkpoints() == {p: 19 for p in PARTITIONS}, "the first replica's checkpoints")
    assert set(owners()) == set(PARTITIONS) and len(set(owners().values())) == 1
    assert rows(engine) == 80 and first.handler.totals.duplicates == 0

    # A second replica takes its share: two partitions are handed over, each resumed from its checkpoint.
    second = Consumer(hub, settings, engine)
    wait_for(lambda: sorted(list(owners().values()).count(o) for o in set(owners().values())) == [2, 2],
             "the partitions shared two and two")
    wait_for(lambda: len(started(second)) == 2, "the second replica's receivers")
    taken = started(second)
    assert taken == {p: str(19 * 1024) for p in taken}  # each resumed after the first replica's checkpoint
    now = owners()
    assert len({now[p] for p in taken}) == 1 and not {now[p] for p in taken} & {now[p] for p in set(PARTITIONS) - set(taken)}
    # The first replica lets go at its next load-balancing pass (until then both may read a partition:
    # an overlap that the store counts as duplicates, never as rows).
    wait_for(lambda: {e[1] for e in first.log if e[0] == "close"} == set(taken), "the first replica letting go")
    hub.send(10, "second")
    wait_for(lambda: checkpoints() == {p: 29 for p in PARTITIONS}, "checkpoints after the second send")
    assert rows(engine) == 120
    assert second.handler.totals.inserted == 20 and second.handler.totals.duplicates == 0
    assert first.handler.totals.inserted == 100 and first.handler.totals.duplicates == 0

    # Both stop (releasing their partitions); a new replica resumes every partition from its checkpoint.
    first.stop()
    second.stop()
    hub.send(5, "third")
    third = Consumer(hub, settings, engine)
    wait_for(lambda: checkpoints() == {p: 34 for p in PARTITIONS}, "the restarted replica's checkpoints")
    assert started(third) == {p: str(29 * 1024) for p in PARTITIONS}
    assert third.handler.totals.inserted == 20 and third.handler.totals.duplicates == 0
    assert rows(engine) == 140
    third.stop()

    # What the server holds: one ownership and one checkpoint blob per partition, in the SDK's layout.
    names = sorted(b.name for b in azurite.service().get_container_client(container).list_blobs())
    prefix = f"{NAMESPACE}/{HUB}/{GROUP}"
    assert names == sorted([f"{prefix}/checkpoint/{p}" for p in PARTITIONS] + [f"{prefix}/ownership/{p}" for p in PARTITIONS])


def test_of_two_replicas_claiming_the_same_partition_at_once_only_one_wins(azurite, container):
    """Ownership is an ETag-conditional write: a claim made from a stale listing fails on the server."""
    settings = ConsumerSettings(eventhub=HUB, checkpoint_connection_string=azurite.connection_string,
                                checkpoint_container=container)
    store = build_checkpoint_store(settings)
    seed = {"fully_qualified_namespace": NAMESPACE, "eventhub_name": HUB, "consumer_group": GROUP,
            "partition_id": "0", "owner_id": "replica-a"}
    (claimed,) = store.claim_ownership([seed])
    (listed,) = store.list_ownership(NAMESPACE, HUB, GROUP)
    claim_a, claim_b = {**listed, "owner_id": "replica-a"}, {**listed, "owner_id": "replica-b"}
    assert store.claim_ownership([claim_b]) != []  # replica B renews first, with the listing's ETag
    assert store.claim_ownership([claim_a]) == []  # replica A's ETag is stale now: the server refuses it
    (owner,) = store.list_ownership(NAMESPACE, HUB, GROUP)
    assert owner["owner_id"] == "replica-b" and claimed["etag"] != owner["etag"]


def started(consumer: Consumer) -> dict[str, str]:
    """The partitions the replica's processor started a receiver for, and the offset it started after."""
    return dict(e[1].split("@") for e in consumer.log if e[0] == "start")
