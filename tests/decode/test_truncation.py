"""Events cut at APIM's 200 KB log-to-eventhub limit: the header survives as a truncated row, the
bytes are kept in quarantine for audit, and the event still counts exactly once."""

from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa

import azure_shapes
from db import rate_card as rate_card_store
from db.schema import quarantine, usage_records
from events import encode, v1_event
from metering.decode import salvage
from metering.decode.event import decode_event
from metering.ingest import Ingestor
from metering.model import BadEvent, PipelineSettings, RawEvent
from metering.pipeline import process_batch, process_event
from metering.price.pricing import RateCard
from metering.price.rate_card import parse_rates_csv
from metering.decode.signature import sign

APIM_LIMIT = 200 * 1024
CARD = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
)
EMPTY_CARD = RateCard([], [])


def big_stream_event(request_id: str = "0b1f9a4e-big-stream", *, usage: dict | None = None) -> dict:
    """A full-capture streaming chat event of about 250 KB, as the policy sends it: a long request
    (a document to summarise) and a long answer in Azure's raw chunk shape, without usage."""
    document = " ".join(azure_shapes.sample_words(6000))
    request = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant for Contoso employees."},
            {"role": "user", "content": "Summarise this report for the steering committee:\n" + document},
        ],
        "stream": True,
        "max_tokens": 4000,
    }
    pieces = [(" " if i else "") + w for i, w in enumerate(azure_shapes.sample_words(380))]
    response = azure_shapes.chat_stream(pieces, model="gpt-4o-2024-11-20")
    return v1_event(request_id, stream=True, capture="full", usage=usage, request=request, response=response)


@pytest.fixture(scope="module")
def big_body() -> bytes:
    body = encode(big_stream_event())
    assert 230_000 < len(body) < 300_000
    return body


def test_an_event_cut_at_200_kb_keeps_its_header_as_a_truncated_row(engine, big_body):
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(CARD))
    cut = big_body[:APIM_LIMIT]
    ingestor = Ingestor(engine)
    totals = ingestor.ingest([RawEvent(cut, source_partition="3", source_sequence_number=42)])
    # Counted once, as a row; the audit copy of its bytes is not "quarantined".
    assert (totals.read, totals.inserted, totals.duplicates, totals.quarantined, totals.truncated) == (1, 1, 0, 0, 1)
    with engine.connect() as conn:
        row = conn.execute(sa.select(usage_records)).one()
        audit = conn.execute(sa.select(quarantine)).one()
    assert row.truncated is True
    assert (row.subscription_id, row.subscription_name, row.deployment, row.product, row.backend_region) == (
        "sub-finance-analytics", "Finance Analytics", "gpt-4o", "ai-standard", "Sweden Central")
    assert row.event_time.isoformat() == "2026-10-15T09:30:00.123456+00:00"
    assert (row.source_partition, row.source_sequence_number, row.status_code, row.is_streaming) == ("3", 42, 200, True)
    # The request survived: its prompt is counted; the answer was cut, so usage is partial.
    assert row.usage_source == "partial" and row.prompt_tokens > 5000
    whole = process_event(RawEvent(big_body), EMPTY_CARD).record
    assert 0 < row.completion_tokens < whole.completion_tokens  # what survived of the answer: a lower bound
    assert row.prompt_tokens == whole.prompt_tokens
    assert row.price_status == "priced" and row.total_cost > 0
    assert (audit.reason, audit.request_id, bytes(audit.raw)) == ("truncated", "0b1f9a4e-big-stream", cut)
    assert audit.resolved_at is not None and audit.source_sequence_number == 42
    assert "200 KB" in audit.detail and "partial" in audit.detail

    again = ingestor.ingest([RawEvent(cut, source_partition="3", source_sequence_number=42)])
    assert (again.read, again.inserted, again.duplicates, again.quarantined, again.truncated) == (1, 0, 1, 0, 0)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar() == 1


def test_reported_usage_survives_the_cut(big_body):
    usage = azure_shapes.usage_object(9100, 1500, cached=1024)
    body = encode(big_stream_event(usage=usage))[:APIM_LIMIT]
    result = process_event(RawEvent(body), EMPTY_CARD)
    assert result.audit and result.record.truncated
    record = result.record
    assert (record.usage_source, record.prompt_tokens, record.cached_tokens, record.completion_tokens) == ("reported", 9100, 1024, 1500)


def test_cut_inside_the_request_leaves_no_usage_but_the_header(big_body):
    cut_at = big_body.index(b'"request":') + 2000
    result = process_event(RawEvent(big_body[:cut_at]), EMPTY_CARD)
    record = result.record
    assert record.truncated and record.usage_source == "none" and record.total_tokens == 0
    assert record.price_status == "no_usage"  # billable, tokens unknown: never a silent $0
    assert (record.subscription_id, record.deployment) == ("sub-finance-analytics", "gpt-4o")


@pytest.mark.parametrize("field, lost", [("time", "time"), ("gateway", "subscription"), ("subscription", "subscription")])
def test_cut_before_the_header_is_complete_is_quarantined(big_body, field, lost):
    cut_at = big_body.index(f'"{field}":'.encode()) + len(field) + 6
    outcome = process_batch([RawEvent(big_body[:cut_at])], EMPTY_CARD)
    assert outcome.records == [] and outcome.audit == []
    (item,) = outcome.quarantined
    assert item.reason == "truncated" and lost in item.detail
    assert item.request_id == "0b1f9a4e-big-stream"


def test_a_cut_multibyte_character_is_still_a_truncation():
    event = v1_event("utf8-cut", capture="full", response="Grüße aus Köln — 数据 " * 50)
    body = encode(event)
    cut_at = body.index("数".encode()) + 1  # inside the three bytes of 数
    record = process_event(RawEvent(body[:cut_at]), EMPTY_CARD).record
    assert record is not None and record.truncated and record.usage_source == "reported"


def test_malformed_json_is_not_mistaken_for_truncation():
    body = encode(v1_event("bad"))
    broken = body.replace(b'"status":200', b'"status":2 00')
    with pytest.raises(BadEvent) as caught:
        decode_event(broken)
    assert caught.value.reason == "not_json"
    with pytest.raises(BadEvent) as caught:
        decode_event(body + b" trailing")
    assert caught.value.reason == "not_json"


def test_every_cut_of_an_event_decodes_or_names_a_reason():
    event = v1_event("every-cut", capture="full", stream=True, usage=None,
                     request={"messages": [{"role": "user", "content": "Say \"hi\" \\ and 😀 {[ ]}"}], "stream": True},
                     response=azure_shapes.chat_stream(["Hi", " there", " 😀"], model="gpt-4o-2024-11-20"))
    body = encode(event)
    first_row = None
    for cut in range(len(body) + 1):
        try:
            decoded = decode_event(body[:cut])
        except BadEvent as exc:
            assert exc.reason in ("empty", "not_json", "not_utf8", "truncated"), (cut, exc.reason)
            continue
        first_row = cut if first_row is None else first_row
        assert decoded.truncated is (cut < len(body))
        assert decoded.subscription_id == "sub-finance-analytics"
    assert first_row is not None and first_row <= body.index(b',"product":')


def test_salvage_scans_members_and_stops_at_the_cut():
    found = salvage.scan(b'{"a": 1, "b": {"c": [1, "x]"]}, "d": "tex')
    assert found is not None and found.members == {"a": 1, "b": {"c": [1, "x]"]}} and found.cut_key == "d"
    assert salvage.partial_string(b'{"d": "tex', 6) == "tex"
    assert salvage.partial_string(b'"ab\\u00', 0) == "ab"
    assert salvage.partial_string(b'"ab\\', 0) == "ab"
    assert salvage.partial_string(b'"a\\\\', 0) == "a\\"
    assert salvage.scan(b'{"a": 1}') is None  # complete: not a truncation
    assert salvage.scan(b'{"a": 1] ') is None  # malformed
    assert salvage.scan(b'{"a": [1}') is None
    assert salvage.scan(b"[1, 2") is None  # only objects are salvaged


def test_signed_truncated_events_cannot_be_verified(big_body):
    key = b"k" * 32
    cut = sign(big_body, key)[:APIM_LIMIT]
    required = PipelineSettings(signing_secret=key)
    result = process_event(RawEvent(cut), EMPTY_CARD, required)
    assert result.record is None and result.quarantined.reason == "truncated"
    assert "signature" in result.quarantined.detail
    optional = PipelineSettings(signing_secret=key, require_signature=False)
    assert process_event(RawEvent(cut), EMPTY_CARD, optional).audit


def test_truncated_events_still_satisfy_the_counting_identity(sqlite_engine, big_body):
    bodies = [big_body[:APIM_LIMIT], big_body[:150], b"{\"schema\":\"aoai-usage/1\"", encode(v1_event("whole")), big_body]
    totals = Ingestor(sqlite_engine).ingest([RawEvent(b) for b in bodies])
    assert totals.read == totals.inserted + totals.duplicates + totals.quarantined == 5
    assert (totals.inserted, totals.quarantined, totals.truncated, totals.duplicates) == (2, 2, 1, 1)
    with sqlite_engine.connect() as conn:
        reasons = conn.execute(sa.select(quarantine.c.reason, quarantine.c.resolved_at.is_not(None))
                               .order_by(quarantine.c.id)).all()
    assert sorted(tuple(r) for r in reasons) == [("truncated", False), ("truncated", False), ("truncated", True)]


def test_a_whole_event_and_its_truncated_copy_decode_to_the_same_header(big_body):
    whole = decode_event(big_body)
    cut = decode_event(big_body[:APIM_LIMIT])
    for name in ("request_id", "event_time", "subscription_id", "subscription_name", "deployment", "model", "status_code",
                 "backend_id", "gateway_service", "attributes", "user_id", "api_version", "endpoint", "is_streaming"):
        assert getattr(whole, name) == getattr(cut, name), name
    assert not whole.truncated and cut.truncated
    assert cut.request == whole.request and cut.response and whole.response.startswith(cut.response)
    assert orjson.loads(big_body)["requestId"] == cut.request_id
