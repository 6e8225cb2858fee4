"""The Azure Function, called with `func.EventHubEvent` batches as the Functions host would."""

from __future__ import annotations

import json
import os
from pathlib import Path

import azure.functions as func

import pytest
import sqlalchemy as sa

import function_app
from db import rate_card as rate_card_store
from db.schema import quarantine, usage_records
from events import encode, v1_event
from hub_events import hub_event
from metering.price.rate_card import parse_rates_csv

CARD = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
)



@pytest.fixture
def configured(engine, monkeypatch):
    monkeypatch.setenv("METERING_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    function_app.reset_ingestor()
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(CARD))
    yield engine
    function_app.reset_ingestor()


def test_batch_is_stored_and_bad_events_quarantined(configured):
    events = [hub_event(encode(v1_event(f"req-{i}")), i) for i in range(3)]
    events += [hub_event(b"{truncated", 3), hub_event(encode(v1_event("req-0")), 4)]
    totals = function_app.handle_events(events)
    assert (totals.read, totals.inserted, totals.duplicates, totals.quarantined) == (5, 3, 1, 1)
    with configured.connect() as conn:
        rows = conn.execute(sa.select(usage_records.c.request_id, usage_records.c.source_sequence_number,
                                      usage_records.c.price_status).order_by(usage_records.c.request_id)).all()
        bad = conn.execute(sa.select(quarantine.c.reason, quarantine.c.raw, quarantine.c.source_sequence_number)).one()
    assert [tuple(r) for r in rows] == [("req-0", 0, "priced"), ("req-1", 1, "priced"), ("req-2", 2, "priced")]
    assert tuple(bad) == ("not_json", b"{truncated", 3)


def test_the_decorated_trigger_runs_the_same_handler(configured):
    meter_usage = function_app.meter_usage
    user_function = meter_usage.build().get_user_function() if hasattr(meter_usage, "build") else meter_usage
    user_function([hub_event(encode(v1_event("via-trigger")), 1)])
    with configured.connect() as conn:
        assert conn.execute(sa.select(usage_records.c.request_id)).scalars().all() == ["via-trigger"]


def test_storage_failure_raises_and_redelivery_stores_exactly_once(configured):
    batch = [hub_event(encode(v1_event(f"retry-{i}")), i) for i in range(4)] + [hub_event(b"garbage", 9)]
    with configured.begin() as conn:
        conn.execute(sa.text("ALTER TABLE usage_records RENAME TO usage_records_offline"))
    with pytest.raises(sa.exc.DBAPIError):
        function_app.handle_events(batch)
    with configured.begin() as conn:
        conn.execute(sa.text("ALTER TABLE usage_records_offline RENAME TO usage_records"))
        assert conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar() == 0
    totals = function_app.handle_events(batch)  # the retry policy redelivers the same batch
    assert (totals.inserted, totals.quarantined) == (4, 1)
    again = function_app.handle_events(batch)  # and a second delivery changes nothing
    assert (again.inserted, again.duplicates) == (0, 4)


def test_trigger_binding_is_a_batch_trigger_with_retries():
    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    definition = json.loads(functions["meter_usage"].get_function_json())
    trigger = definition["bindings"][0]
    assert trigger["type"] == "eventHubTrigger"
    assert trigger["cardinality"].lower() == "many"
    assert trigger["eventHubName"] == "%EVENTHUB_NAME%"
    assert trigger["connection"] == "EVENTHUB_CONNECTION"
    assert trigger["consumerGroup"] == "%EVENTHUB_CONSUMER_GROUP%"
    retry = functions["meter_usage"].get_settings_dict("retry_policy")
    assert retry["strategy"] == "exponential_backoff" and retry["max_retry_count"] == "-1"
    assert retry["minimum_interval"] == "00:00:05" and retry["maximum_interval"] == "00:05:00"


def test_host_json_batches_and_uses_the_v4_bundle():
    with open("host.json") as handle:
        host = json.load(handle)
    hubs = host["extensions"]["eventHubs"]
    assert hubs["maxEventBatchSize"] >= 100 and hubs["prefetchCount"] >= hubs["maxEventBatchSize"]
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"


# ---------------------------------------------------------------- no database URL (issue #26, item 11)


def test_the_functions_host_refuses_to_start_without_a_database_url(tmp_path):
    """Under the host (FUNCTIONS_WORKER_RUNTIME is set) the import fails with one line naming the
    setting; no metering.db (or -wal, -shm) appears in the app's folder."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")} | {
        "FUNCTIONS_WORKER_RUNTIME": "python", "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-c", "import function_app"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("function_app.ConfigurationError: metering Function refuses to start") \
        and "METERING_DATABASE_URL" in last
    assert list(tmp_path.iterdir()) == []


def test_a_batch_without_a_database_url_creates_no_database_file(tmp_path, monkeypatch):
    monkeypatch.delenv("METERING_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    function_app.reset_ingestor()
    try:
        with pytest.raises(function_app.ConfigurationError, match="METERING_DATABASE_URL"):
            function_app.handle_events([func.EventHubEvent(body=b"{}", sequence_number=1)])
    finally:
        function_app.reset_ingestor()
    assert list(tmp_path.iterdir()) == []


def test_an_event_longer_than_the_bound_is_quarantined_as_oversized_not_decoded(configured, monkeypatch):
    """METERING_MAX_EVENT_BYTES bounds the Function as it bounds ``metering replay``: a longer body
    is kept as its first bytes with its size and digest, and never decoded into a row."""
    monkeypatch.setenv("METERING_MAX_EVENT_BYTES", "2048")
    small = encode(v1_event("small"))
    large = encode(v1_event("large", request={"messages": [{"role": "user", "content": "x" * 6000}]}))
    assert len(small) <= 2048 < len(large)
    totals = function_app.handle_events([hub_event(small, 1), hub_event(large, 2)])
    assert (totals.read, totals.inserted, totals.quarantined) == (2, 1, 1)
    with configured.connect() as conn:
        assert conn.execute(sa.select(usage_records.c.request_id)).scalars().all() == ["small"]
        reason, raw, detail = conn.execute(sa.select(quarantine.c.reason, quarantine.c.raw, quarantine.c.detail)).one()
    assert reason == "oversized" and raw == large[:4096] and f"{len(large):,} bytes" in detail


def test_a_bad_event_bound_stops_the_function_from_starting():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(function_app.__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")} | {"METERING_MAX_EVENT_BYTES": "1MB"}
    result = subprocess.run([sys.executable, "-c", "import function_app"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=120)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and "refuses to start" in last and "METERING_MAX_EVENT_BYTES" in last
