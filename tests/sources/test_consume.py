"""``metering consume``: batch handling with the SDK's own types — checkpoint only after the batch is
stored, none when storage fails (retried with backoff), redelivery stored exactly once."""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from azure.eventhub import CheckpointStore, EventData, PartitionContext
from azure.eventhub._constants import PROP_OFFSET, PROP_SEQ_NUMBER, PROP_TIMESTAMP

from db import rate_card as rate_card_store
from db.schema import llm_usage, quarantine, usage_records
from events import encode, v1_event
from llm_records import envelope, llm_record, streamed_request_mode
from metering.sources import consume
from metering.cli import main
from metering.sources.consume import BatchHandler, ConsumerSettings, Stopped, build_client, split_container_url, to_raw_event
from metering.ingest import Ingestor
from metering.price.rate_card import parse_rates_csv

CARD = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
)
ENQUEUED_MS = int(datetime(2026, 10, 15, 9, 30, tzinfo=timezone.utc).timestamp() * 1000)


class RecordingCheckpointStore(CheckpointStore):
    """A checkpoint store that keeps the checkpoints it is given (no Blob Storage is reachable here)."""

    def __init__(self, journal: list[tuple[str, Any]] | None = None, fail: bool = False):
        self.checkpoints: list[dict[str, Any]] = []
        self.journal = journal if journal is not None else []
        self.fail = fail

    def list_ownership(self, fully_qualified_namespace, eventhub_name, consumer_group, **kwargs):
        return []

    def claim_ownership(self, ownership_list, **kwargs):
        return list(ownership_list)

    def update_checkpoint(self, checkpoint, **kwargs):
        if self.fail:
            raise ConnectionError("blob storage unreachable")
        self.checkpoints.append(checkpoint)
        self.journal.append(("checkpoint", checkpoint["sequence_number"]))

    def list_checkpoints(self, fully_qualified_namespace, eventhub_name, consumer_group, **kwargs):
        return list(self.checkpoints)


def received(body: bytes | str, sequence_number: int) -> EventData:
    """An ``EventData`` as the consumer receives it: body plus the service's annotations."""
    event = EventData(body)
    annotations = event.raw_amqp_message.annotations
    annotations[PROP_SEQ_NUMBER] = sequence_number
    annotations[PROP_OFFSET] = str(sequence_number * 1024).encode()
    annotations[PROP_TIMESTAMP] = ENQUEUED_MS
    return event


def context(checkpoints: RecordingCheckpointStore, partition_id: str = "3") -> PartitionContext:
    return PartitionContext("evhns-contoso.servicebus.windows.net", "aoai-usage", "metering", partition_id, checkpoints)


class JournalingIngestor:
    """The real ingestor, noting when a batch was stored, and failing the first ``failures`` times."""

    def __init__(self, inner: Ingestor, journal: list[tuple[str, Any]], failures: int = 0):
        self.inner, self.journal, self.failures = inner, journal, failures

    def ingest(self, raws):
        if self.failures:
            self.failures -= 1
            self.journal.append(("store failed", len(raws)))
            raise sa.exc.OperationalError("INSERT INTO usage_records ...", {}, Exception("database is unavailable"))
        totals = self.inner.ingest(raws)
        self.journal.append(("stored", totals.inserted))
        return totals


@pytest.fixture
def ingestor(engine):
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(CARD))
    return Ingestor(engine, rate_card_ttl=0)


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def test_checkpoint_is_written_after_the_batch_is_stored(ingestor, engine):
    journal: list[tuple[str, Any]] = []
    checkpoints = RecordingCheckpointStore(journal)
    handler = BatchHandler(JournalingIngestor(ingestor, journal))
    events = [received(encode(v1_event(f"c-{i}")), 40 + i) for i in range(3)] + [received(b"{garbage", 43)]
    totals = handler.on_batch(context(checkpoints), events)
    assert (totals.read, totals.inserted, totals.quarantined) == (4, 3, 1)
    assert journal == [("stored", 3), ("checkpoint", 43)]
    (checkpoint,) = checkpoints.checkpoints
    assert (checkpoint["partition_id"], checkpoint["offset"], checkpoint["sequence_number"]) == ("3", str(43 * 1024), 43)
    assert checkpoint["consumer_group"] == "metering" and checkpoint["eventhub_name"] == "aoai-usage"
    with engine.connect() as conn:
        rows = conn.execute(sa.select(usage_records.c.request_id, usage_records.c.source_partition,
                                      usage_records.c.source_sequence_number).order_by(usage_records.c.request_id)).all()
    assert [tuple(r) for r in rows] == [("c-0", "3", 40), ("c-1", "3", 41), ("c-2", "3", 42)]


def test_no_checkpoint_while_storage_fails_and_the_batch_is_retried_with_backoff(ingestor, engine):
    journal: list[tuple[str, Any]] = []
    checkpoints = RecordingCheckpointStore(journal)
    waits: list[float] = []

    class RecordingStop(threading.Event):
        def wait(self, timeout=None):
            waits.append(timeout)
            return False

    handler = BatchHandler(JournalingIngestor(ingestor, journal, failures=3), stop=RecordingStop())
    events = [received(encode(v1_event(f"r-{i}")), i) for i in range(5)]
    totals = handler.on_batch(context(checkpoints), events)
    assert journal == [("store failed", 5)] * 3 + [("stored", 5), ("checkpoint", 4)]
    assert waits == [5.0, 10.0, 20.0]  # the Function's policy: 5 s doubling...
    assert [handler.delay(n) for n in (6, 7, 12)] == [160.0, 300.0, 300.0]  # ...to 5 min
    assert totals.inserted == 5 and handler.stats.storage_failures == 3


def test_a_real_storage_failure_never_checkpoints_and_redelivery_stores_exactly_once(ingestor, engine):
    checkpoints = RecordingCheckpointStore()
    handler = BatchHandler(ingestor, max_attempts=2, backoff_initial=0.001)
    events = [received(encode(v1_event(f"d-{i}")), i) for i in range(4)] + [received(b"garbage", 4)]
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE usage_records RENAME TO usage_records_offline"))
    with pytest.raises(sa.exc.DBAPIError):
        handler.on_batch(context(checkpoints), events)
    assert checkpoints.checkpoints == []
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE usage_records_offline RENAME TO usage_records"))
    assert count(engine, quarantine) == 0  # the failed transaction left nothing behind
    first = handler.on_batch(context(checkpoints), events)  # Event Hubs delivers the batch again
    again = handler.on_batch(context(checkpoints), events)  # ...and once more, after a rebalance
    assert (first.inserted, first.quarantined) == (4, 1)
    assert (again.inserted, again.duplicates, again.quarantined) == (0, 4, 1)
    assert count(engine, usage_records) == 4 and count(engine, quarantine) == 1
    assert [c["sequence_number"] for c in checkpoints.checkpoints] == [4, 4]


def test_stopping_during_a_retry_leaves_the_checkpoint_alone(ingestor):
    journal: list[tuple[str, Any]] = []
    checkpoints = RecordingCheckpointStore(journal)
    stop = threading.Event()
    handler = BatchHandler(JournalingIngestor(ingestor, journal, failures=100), stop=stop, backoff_initial=30)
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(Stopped):
        handler.on_batch(context(checkpoints), [received(encode(v1_event("s-1")), 7)])
    assert checkpoints.checkpoints == [] and journal == [("store failed", 1)]


def test_a_failed_checkpoint_write_after_storing_is_not_an_error(ingestor, engine, caplog):
    handler = BatchHandler(ingestor)
    totals = handler.on_batch(context(RecordingCheckpointStore(fail=True)), [received(encode(v1_event("k-1")), 1)])
    assert totals.inserted == 1 and handler.stats.checkpoint_failures == 1
    assert "checkpoint was not written" in caplog.text


def test_a_body_longer_than_the_bound_is_quarantined_as_oversized(ingestor, engine, monkeypatch):
    monkeypatch.setenv("METERING_MAX_EVENT_BYTES", "2048")
    large = encode(v1_event("large", request={"messages": [{"role": "user", "content": "x" * 6000}]}))
    handler = BatchHandler(ingestor)
    handler.on_batch(context(RecordingCheckpointStore()), [received(encode(v1_event("small")), 1), received(large, 2)])
    with engine.connect() as conn:
        assert conn.execute(sa.select(usage_records.c.request_id)).scalars().all() == ["small"]
        assert conn.execute(sa.select(quarantine.c.reason, quarantine.c.raw)).one() == ("oversized", large[:4096])


def test_empty_batches_do_nothing(ingestor):
    checkpoints = RecordingCheckpointStore()
    assert BatchHandler(ingestor).on_batch(context(checkpoints), []) is None
    assert checkpoints.checkpoints == []


def test_llm_log_envelopes_from_the_hub_complete_rows(ingestor, engine):
    checkpoints = RecordingCheckpointStore()
    handler = BatchHandler(ingestor)
    stream = streamed_request_mode("l-1")  # a prompt the log's 1,200 tokens are plausible for
    handler.on_batch(context(checkpoints, "0"), [received(encode(stream), 1)])
    handler.on_batch(context(checkpoints, "1"), [received(envelope(llm_record("l-1")), 9)])
    with engine.connect() as conn:
        row = conn.execute(sa.select(usage_records.c.usage_source, usage_records.c.total_tokens)).one()
        assert conn.execute(sa.select(llm_usage.c.source_partition, llm_usage.c.status)).one() == ("1", "merged")
    assert tuple(row) == ("reported", 1500)
    assert handler.totals.merged == 1 and handler.totals.read == 2


def test_event_bodies_and_metadata():
    raw = to_raw_event(received(b'{"a":1}', 12), "5")
    assert (raw.body, raw.source_partition, raw.source_sequence_number) == (b'{"a":1}', "5", 12)
    assert raw.enqueued_time == datetime(2026, 10, 15, 9, 30, tzinfo=timezone.utc)
    assert to_raw_event(EventData("text body"), None).body == b"text body"


# --------------------------------------------------------------------------- client and command line


def test_identity_and_connection_string_clients_are_built_without_connecting():
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential()
    client = build_client(ConsumerSettings(eventhub="aoai-usage", consumer_group="metering",
                                           namespace="evhns-contoso.servicebus.windows.net",
                                           checkpoint_url="https://stcontoso.blob.core.windows.net/checkpoints"),
                          credential=credential)
    assert (client.eventhub_name, client._consumer_group, client._address.hostname) == (
        "aoai-usage", "metering", "evhns-contoso.servicebus.windows.net")
    assert client._checkpoint_store._container_client.url == "https://stcontoso.blob.core.windows.net/checkpoints"
    client = build_client(ConsumerSettings(
        eventhub="aoai-usage",
        connection_string="Endpoint=sb://evhns-contoso.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=a2V5",
        checkpoint_url="https://stcontoso.blob.core.windows.net/checkpoints?sv=2024-05-04&sp=racwdl&sig=c2ln"))
    assert client._consumer_group == "$Default"
    assert client._checkpoint_store._container_client.url.endswith("/checkpoints?sv=2024-05-04&sp=racwdl&sig=c2ln")


def test_container_urls():
    assert split_container_url("https://st.blob.core.windows.net/ckpt") == ("https://st.blob.core.windows.net", "ckpt", None)
    assert split_container_url("https://st.blob.core.windows.net/ckpt/?sig=x")[1:] == ("ckpt", "sig=x")
    for bad in ("st.blob.core.windows.net/ckpt", "https://st.blob.core.windows.net", "https://st/a/b"):
        with pytest.raises(consume.ConsumerConfigError):
            split_container_url(bad)


def test_missing_sdk_is_a_clear_message(capsys, engine, monkeypatch):
    url = engine.url.render_as_string(hide_password=False)
    monkeypatch.setitem(sys.modules, "azure.eventhub.extensions.checkpointstoreblob", None)
    code = main(["--db", url, "consume", "--eventhub", "aoai-usage", "--namespace", "ns.servicebus.windows.net",
                 "--checkpoint-url", "https://st.blob.core.windows.net/ckpt"])
    assert code == 2
    assert "pip install 'aoai-metering[consume]'" in capsys.readouterr().err


def test_settings_problems_are_clear(capsys, engine, monkeypatch):
    for name in ("EVENTHUB_NAME", "EVENTHUB_NAMESPACE", "EVENTHUB_CONNECTION", "EVENTHUB_CONNECTION_STRING",
                 "EVENTHUB_CONNECTION__fullyQualifiedNamespace", "METERING_CHECKPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    url = engine.url.render_as_string(hide_password=False)
    assert main(["--db", url, "consume"]) == 2
    assert "no event hub" in capsys.readouterr().err
    assert main(["--db", url, "consume", "--eventhub", "h", "--checkpoint-url", "https://st.blob.core.windows.net/c"]) == 2
    assert "--namespace" in capsys.readouterr().err
    monkeypatch.setenv("EVENTHUB_CONNECTION__fullyQualifiedNamespace", "ns.servicebus.windows.net")  # the Function's setting
    assert main(["--db", url, "consume", "--eventhub", "h"]) == 2
    assert "no checkpoint store" in capsys.readouterr().err


def test_the_command_runs_the_sdk_loop_with_the_handler(capsys, ingestor, engine, monkeypatch):
    """The whole command, with the SDK's receive loop replaced by one delivery (no Event Hubs here)."""
    from azure.eventhub import EventHubConsumerClient

    seen: dict[str, Any] = {}
    checkpoints = RecordingCheckpointStore()

    def receive_batch(self, on_event_batch, **kwargs):
        seen.update(kwargs, eventhub=self.eventhub_name, group=self._consumer_group)
        on_event_batch(context(checkpoints, "2"), [received(encode(v1_event(f"cli-{i}")), i) for i in range(3)])
        raise KeyboardInterrupt  # Ctrl-C / SIGTERM

    monkeypatch.setattr(EventHubConsumerClient, "receive_batch", receive_batch)
    monkeypatch.setenv("EVENTHUB_CONNECTION", "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=l;SharedAccessKey=a2V5")
    monkeypatch.setenv("METERING_CHECKPOINT_URL", "https://st.blob.core.windows.net/ckpt?sig=abc")
    url = engine.url.render_as_string(hide_password=False)
    code = main(["--db", url, "consume", "--eventhub", "aoai-usage", "--consumer-group", "metering", "--batch-size", "100"])
    out = capsys.readouterr().out
    assert code == 0
    assert "consumed 1 batch(es): events read 3 | rows inserted 3" in out
    assert (seen["eventhub"], seen["group"], seen["max_batch_size"], seen["starting_position"]) == ("aoai-usage", "metering", 100, "-1")
    assert [c["sequence_number"] for c in checkpoints.checkpoints] == [2]
    assert count(engine, usage_records) == 3


def test_malformed_pipeline_settings_are_a_one_line_error(capsys, engine, monkeypatch):
    url = engine.url.render_as_string(hide_password=False)
    args = ["--db", url, "consume", "--eventhub", "aoai-usage", "--namespace", "ns.servicebus.windows.net",
            "--checkpoint-url", "https://st.blob.core.windows.net/ckpt"]
    for name, value in (("METERING_RATE_CARD_TTL_SECONDS", "one minute"), ("METERING_REQUIRE_SIGNATURE", "maybe"),
                        ("METERING_MAX_EVENT_BYTES", "1MB")):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            assert main(args) == 2
            err = capsys.readouterr().err
            assert err.startswith("metering: ") and name in err and "Traceback" not in err


def test_rate_card_ttl_setting():
    from metering.settings import rate_card_ttl_from_env

    assert rate_card_ttl_from_env({}) == 60
    assert rate_card_ttl_from_env({"METERING_RATE_CARD_TTL_SECONDS": " 5 "}) == 5
    assert rate_card_ttl_from_env({"METERING_RATE_CARD_TTL_SECONDS": "0"}) == 0
    for bad in ("abc", "-1", "inf", "nan"):
        with pytest.raises(ValueError, match="METERING_RATE_CARD_TTL_SECONDS"):
            rate_card_ttl_from_env({"METERING_RATE_CARD_TTL_SECONDS": bad})
