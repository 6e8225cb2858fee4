"""APIM's built-in LLM log: records in diagnostic-setting envelopes complete a metering row's usage,
whichever arrives first, exactly once (pure parsing, then SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from db import rate_card as rate_card_store
from db import store
from db.llm_usage import SWEEP_WINDOW, begin_llm_merge, finish_llm_merge, _insert_llm_usage
from db.schema import llm_usage, usage_records
from events import encode, jsonl, v1_event
from llm_records import envelope, gateway_record, llm_record, streamed_request_mode
from metering.ingest import IngestTotals, Ingestor
from metering.pipeline.llm_logs import is_records_envelope, parse_llm_record
from metering.model import RawEvent
from metering.pipeline import process_batch
from metering.price.pricing import RateCard
from metering.price.rate_card import parse_rates_csv

CARD = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
)


def raws(*bodies: bytes) -> list[RawEvent]:
    return [RawEvent(body=b, source_partition="0", source_sequence_number=i) for i, b in enumerate(bodies)]


def identity(t: IngestTotals) -> bool:
    return t.read == t.inserted + t.duplicates + t.quarantined + t.merged + t.pending + t.llm_refused + t.ignored


# --------------------------------------------------------------------------- pure


def test_envelopes_are_told_apart_from_metering_events_without_parsing():
    assert is_records_envelope(envelope(llm_record("a")))
    assert is_records_envelope(b'\xef\xbb\xbf \n{ "records" : []}')
    assert not is_records_envelope(encode(v1_event("a")))
    assert not is_records_envelope(b'{"schema":"aoai-usage/1","records":[]}')
    assert not is_records_envelope(b"not json")


@pytest.mark.parametrize("pascal", [False, True], ids=["event-hubs-camelCase", "log-analytics-PascalCase"])
def test_llm_record_fields_in_either_casing(pascal):
    usage = parse_llm_record(llm_record("req-1", 1200, 300, cached=1024, pascal=pascal))
    assert usage is not None
    assert (usage.request_id, usage.deployment, usage.model) == ("req-1", "gpt-4o", "gpt-4o-2024-11-20")
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, usage.total_tokens) == (1200, 1024, 300, 1500)
    assert usage.event_time == datetime(2026, 10, 15, 9, 30, 1, 500000, tzinfo=timezone.utc)


def test_prompts_and_completions_never_reach_the_stored_raw():
    usage = parse_llm_record(llm_record("req-1"))
    assert b"secret" not in usage.raw and b"promptTokens" in usage.raw


def test_every_record_is_one_unit_and_lands_somewhere():
    batch = raws(
        encode(v1_event("m-1")),
        envelope(llm_record("m-1"), gateway_record("m-1"), llm_record("m-2", 0, 0),  # no tokens: a continuation piece
                 llm_record("m-3", -5, 1), {k: v for k, v in llm_record("m-4").items() if k != "correlationId"}),
        envelope(),
        b'{"records": "nope"}',
        b'{"records": [ {"category": "GatewayLlmLogs"',  # cut short
    )
    outcome = process_batch(batch, RateCard())
    assert outcome.events_read == 1 + 5 + 1 + 1 + 1
    assert [u.request_id for u in outcome.llm_usage] == ["m-1"]
    assert outcome.ignored == 3  # the gateway log, the token-less LLM record, the empty envelope
    reasons = sorted(q.reason for q in outcome.quarantined)
    assert reasons == ["invalid_field", "invalid_usage", "missing_field", "not_json"]
    assert outcome.events_read == len(outcome.records) + len(outcome.quarantined) + len(outcome.llm_usage) + outcome.ignored
    bad = next(q for q in outcome.quarantined if q.reason == "invalid_usage")
    assert bad.request_id == "m-3" and orjson.loads(bad.raw)["records"][0]["correlationId"] == "m-3"  # retryable alone


# --------------------------------------------------------------------------- storage


@pytest.fixture
def ingestor(engine):
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(CARD))
    return Ingestor(engine, rate_card_ttl=0)


def stored(engine, request_id: str) -> dict:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(usage_records).where(usage_records.c.request_id == request_id)).mappings().all()
        llm = conn.execute(sa.select(llm_usage.c.status).where(llm_usage.c.request_id == request_id)).scalars().all()
    assert len(rows) == 1
    return {**rows[0], "llm_status": llm}


def assert_reported(row: dict) -> None:
    assert row["usage_source"] == "reported"
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (1200, 300, 1500)
    assert row["model"] == "gpt-4o"  # the event's (its deployment's): an LLM log never changes the model
    assert row["price_status"] == "priced" and row["currency"] == "USD"
    assert row["total_cost"] == Decimal("0.006")  # 1200 × 2.50 / 1M + 300 × 10.00 / 1M
    assert (row["input_cost"], row["output_cost"]) == (Decimal("0.003"), Decimal("0.003"))
    assert row["llm_status"] == ["merged"]
    assert row["is_streaming"] is True and row["subscription_id"] == "sub-finance-analytics"


def test_the_metering_event_alone_is_a_partial_estimate(ingestor, engine):
    ingestor.ingest(raws(encode(streamed_request_mode("s-0"))))
    row = stored(engine, "s-0")
    assert row["usage_source"] == "partial" and row["completion_tokens"] == 0 and row["llm_status"] == []


@pytest.mark.parametrize("order", ["llm-first", "metering-first"])
def test_one_batch_either_order_ends_as_one_reported_row(ingestor, engine, order):
    bodies = [envelope(llm_record("s-1"), gateway_record("s-1")), encode(streamed_request_mode("s-1"))]
    if order == "metering-first":
        bodies.reverse()
    totals = ingestor.ingest(raws(*bodies))
    assert (totals.read, totals.inserted, totals.merged, totals.pending, totals.ignored, totals.duplicates) == (3, 1, 1, 0, 1, 0)
    assert identity(totals)
    assert totals.tokens == 1500 and totals.cost == Decimal("0.006")
    assert_reported(stored(engine, "s-1"))


def test_across_batches_llm_record_first(ingestor, engine):
    first = ingestor.ingest(raws(envelope(llm_record("s-2"))))
    assert (first.read, first.pending, first.merged, first.inserted) == (1, 1, 0, 0) and identity(first)
    second = ingestor.ingest(raws(encode(streamed_request_mode("s-2"))))
    assert (second.read, second.inserted, second.merged, second.pending) == (1, 1, 0, 0) and identity(second)
    assert second.tokens == 1500 and second.cost == Decimal("0.006")  # inserted already reported and priced
    assert_reported(stored(engine, "s-2"))


def test_across_batches_metering_event_first(ingestor, engine):
    first = ingestor.ingest(raws(encode(streamed_request_mode("s-3"))))
    partial = stored(engine, "s-3")
    assert partial["usage_source"] == "partial" and partial["price_status"] == "priced"
    second = ingestor.ingest(raws(envelope(gateway_record("s-3"), llm_record("s-3"))))
    assert (second.read, second.merged, second.ignored, second.inserted, second.pending) == (2, 1, 1, 0, 0) and identity(second)
    # The run's tokens and cost are what it changed: the row went from the estimate to the reported numbers.
    assert second.tokens == 1500 - partial["total_tokens"]
    assert second.cost == Decimal("0.006") - partial["total_cost"]
    assert first.tokens + second.tokens == 1500
    assert_reported(stored(engine, "s-3"))


def test_redelivery_and_second_llm_record_change_nothing(ingestor, engine):
    ingestor.ingest(raws(encode(streamed_request_mode("s-4")), envelope(llm_record("s-4"))))
    before = stored(engine, "s-4")
    again = ingestor.ingest(raws(encode(streamed_request_mode("s-4")), envelope(llm_record("s-4", 9999, 9999))))
    assert (again.read, again.duplicates, again.inserted, again.merged, again.pending) == (2, 2, 0, 0, 0)
    assert again.tokens == 0 and again.cost == 0 and identity(again)
    same_batch = ingestor.ingest(raws(envelope(llm_record("s-5"), llm_record("s-5", 7, 7)), encode(streamed_request_mode("s-5"))))
    assert (same_batch.merged, same_batch.duplicates, same_batch.inserted) == (1, 1, 1) and identity(same_batch)
    assert stored(engine, "s-4") == before
    assert_reported(stored(engine, "s-5"))


def test_a_reported_row_is_never_overwritten(ingestor, engine):
    policy_reported = v1_event("s-6", usage={"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100})
    ingestor.ingest(raws(encode(policy_reported)))
    later = ingestor.ingest(raws(envelope(llm_record("s-6"))))
    assert (later.duplicates, later.merged, later.pending) == (1, 0, 0) and identity(later)
    row = stored(engine, "s-6")
    assert (row["usage_source"], row["total_tokens"], row["llm_status"]) == ("reported", 1100, ["unneeded"])
    # and the other order: the LLM record waits, the event with its own usage is inserted as it is
    ingestor.ingest(raws(envelope(llm_record("s-7"))))
    ingestor.ingest(raws(encode(v1_event("s-7"))))
    row = stored(engine, "s-7")
    assert (row["usage_source"], row["total_tokens"], row["llm_status"]) == ("reported", 1500, ["unneeded"])
    assert row["prompt_tokens"] == 1200 and row["total_cost"] == Decimal("0.006")  # v1_event's own usage


def test_estimates_and_rows_without_usage_are_completed_too(ingestor, engine):
    no_usage = v1_event("s-8", stream=True, capture="usage", model=None, usage=None)
    ingestor.ingest(raws(encode(no_usage)))
    assert stored(engine, "s-8")["price_status"] == "no_usage"
    ingestor.ingest(raws(envelope(llm_record("s-8", cached=1024))))
    row = stored(engine, "s-8")
    assert (row["usage_source"], row["price_status"], row["cached_tokens"]) == ("reported", "priced", 1024)
    # (1200 − 1024) × 2.50 + 1024 × 1.25 + 300 × 10.00, per 1M
    assert row["total_cost"] == Decimal("0.00044") + Decimal("0.00128") + Decimal("0.003")


def test_a_throttled_request_stays_not_billable(ingestor, engine):
    ingestor.ingest(raws(encode(streamed_request_mode("s-9", status=429))))
    ingestor.ingest(raws(envelope(llm_record("s-9", 12, 0))))
    row = stored(engine, "s-9")
    assert (row["usage_source"], row["price_status"], row["total_cost"]) == ("reported", "not_billable", Decimal(0))


def test_concurrent_writers_that_miss_each_other_are_completed_by_the_next_batch(ingestor, engine):
    """Two transactions commit the two halves without seeing each other (different partitions, two
    Function instances): the LLM record stays pending next to its row until any next batch sweeps it."""
    outcome = process_batch(raws(envelope(llm_record("s-10"))), ingestor.rate_card())
    with engine.begin() as conn:  # writer B: the LLM record, no row visible yet
        merge = begin_llm_merge(conn, outcome.llm_usage, [], store.utc_now())
        assert finish_llm_merge(conn, merge, set()).pending == 1
    row_only = process_batch(raws(encode(streamed_request_mode("s-10"))), ingestor.rate_card())
    with engine.begin() as conn:  # writer A: the row, inserted without looking at llm_usage (it saw none)
        store.insert_records(conn, row_only.records, store.utc_now())
    assert stored(engine, "s-10")["usage_source"] == "partial"
    unrelated = ingestor.ingest(raws(encode(v1_event("other-request"))))
    assert unrelated.merged == 0 and identity(unrelated)  # not this run's unit, but the row is completed
    assert_reported(stored(engine, "s-10"))


def test_pending_records_past_the_sweep_window_wait_for_a_redelivery(ingestor, engine):
    card = ingestor.rate_card()
    items = process_batch(raws(envelope(llm_record("s-11"))), card).llm_usage
    rows = process_batch(raws(encode(streamed_request_mode("s-11"))), card).records
    with engine.begin() as conn:  # both halves stored long ago, each without seeing the other
        _insert_llm_usage(conn, [{**_row_for(items[0]), "received_at": store.utc_now() - 2 * SWEEP_WINDOW}])
        store.insert_records(conn, rows, store.utc_now())
    ingestor.ingest(raws(encode(v1_event("unrelated"))))
    assert stored(engine, "s-11")["usage_source"] == "partial"
    redelivered = ingestor.ingest(raws(encode(streamed_request_mode("s-11"))))
    assert redelivered.duplicates == 1 and identity(redelivered)
    assert_reported(stored(engine, "s-11"))


def _row_for(item):
    from db.llm_usage import _llm_row

    return _llm_row(item, store.utc_now())


def test_replay_summary_keeps_the_identity(capsys, engine, tmp_path):
    from metering.cli import main

    url = engine.url.render_as_string(hide_password=False)
    card = tmp_path / "rates.csv"
    card.write_text(CARD)
    assert main(["--db", url, "rates", "import", str(card)]) == 0
    capture = tmp_path / "mixed.jsonl"
    capture.write_bytes(jsonl([
        envelope(llm_record("r-1"), gateway_record("r-1"), gateway_record("r-2")),
        streamed_request_mode("r-1"), streamed_request_mode("r-2"), envelope(llm_record("r-3")),
    ]))
    capsys.readouterr()
    assert main(["--db", url, "replay", str(capture)]) == 0
    out = capsys.readouterr().out
    assert ("events read 6 | rows inserted 2 | duplicates skipped 0 | quarantined 0 | llm usage merged 1"
            " | llm usage pending 1 | log records ignored 2 | tokens ") in out
    assert main(["--db", url, "replay", str(capture)]) == 0
    out = capsys.readouterr().out
    assert ("events read 6 | rows inserted 0 | duplicates skipped 4 | quarantined 0 | llm usage merged 0"
            " | llm usage pending 0 | log records ignored 2 | tokens 0 | cost 0.00") in out
    assert_reported(stored(engine, "r-1"))


def test_capture_avro_with_llm_log_envelopes_replays_the_same(capsys, engine, tmp_path):
    from capture_files import capture_path, capture_records, write_capture
    from metering.cli import main

    url = engine.url.render_as_string(hide_password=False)
    card = tmp_path / "rates.csv"
    card.write_text(CARD)
    assert main(["--db", url, "rates", "import", str(card)]) == 0
    write_capture(capture_path(tmp_path / "cap", "0"), capture_records([envelope(llm_record("c-1"))]), codec="deflate")
    write_capture(capture_path(tmp_path / "cap", "1"), capture_records([encode(streamed_request_mode("c-1"))]), codec="null")
    capsys.readouterr()
    assert main(["--db", url, "replay", str(tmp_path / "cap")]) == 0
    assert "events read 2 | rows inserted 1 | duplicates skipped 0 | quarantined 0 | llm usage merged" in capsys.readouterr().out
    assert_reported(stored(engine, "c-1"))


def test_merge_statements_compile_for_sql_server():
    dialect = mssql.dialect()
    insert = str(llm_usage.insert().compile(dialect=dialect))
    assert insert.startswith("INSERT INTO llm_usage (")
    update = usage_records.update().where(usage_records.c.request_id == "x", usage_records.c.usage_source != "reported")
    assert "usage_source !=" in str(update.values(total_tokens=1).compile(dialect=dialect))
    hinted = sa.select(llm_usage.c.request_id).with_hint(llm_usage, "WITH (UPDLOCK, HOLDLOCK)", "mssql")
    assert "llm_usage WITH (UPDLOCK, HOLDLOCK)" in str(hinted.compile(dialect=dialect))


def test_migration_ddl_for_sql_server():
    from db.migrate import offline_sql

    ddl = offline_sql("mssql+pyodbc://")
    assert "CREATE TABLE llm_usage" in ddl and "CONSTRAINT uq_llm_usage_request_id UNIQUE (request_id)" in ddl
    assert "raw NVARCHAR(max) NULL" in ddl and "received_at DATETIME2 NOT NULL" in ddl


def test_merge_keeps_the_rows_billability_and_deployment_type():
    from dataclasses import replace

    from metering.pipeline.llm_logs import merge_usage

    card = RateCard(parse_rates_csv(CARD))
    row = process_batch(raws(encode(streamed_request_mode("b-1"))), card).records[0]
    usage = parse_llm_record(llm_record("b-1"))
    filtered = merge_usage(replace(row, status_code=400, price_status="priced"), usage, card)  # a content-filter rejection
    assert (filtered.price_status, filtered.total_cost) == ("priced", Decimal("0.006"))
    rejected = merge_usage(replace(row, status_code=400, price_status="not_billable"), usage, card)
    assert (rejected.price_status, rejected.total_cost, rejected.total_tokens) == ("not_billable", Decimal(0), 1500)
    ptu = merge_usage(replace(row, deployment_type="provisioned", price_status="not_billable"), usage, card)
    assert (ptu.price_status, ptu.deployment_type, ptu.total_tokens) == ("not_billable", "provisioned", 1500)
    other_model = merge_usage(row, replace(usage, model="gpt-5-pro"), card)  # the log's ModelName chooses no price
    assert (other_model.model, other_model.price_status, other_model.total_cost) == ("gpt-4o", "priced", Decimal("0.006"))
    assert merge_usage(replace(row, usage_source="reported"), usage, card) is None


@pytest.mark.parametrize("text", ["²", "٣٠٠", "1_000"])
def test_llm_token_counts_as_text_must_be_ascii_digits(text):
    record = llm_record("req-text-tokens")
    record["properties"]["promptTokens"] = text
    outcome = process_batch([RawEvent(envelope(record))], RateCard())
    assert not outcome.llm_usage
    assert [q.reason for q in outcome.quarantined] == ["invalid_usage"]
    record["properties"]["promptTokens"] = " 1200 "
    ok = process_batch([RawEvent(envelope(record))], RateCard())
    assert [u.prompt_tokens for u in ok.llm_usage] == [1200]
