"""Values that do not fit a ``usage_records`` column are bad input (quarantined), never a storage
error: a storage error fails the batch on every redelivery and would block its partition for good."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from db.schema import quarantine, usage_records
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.model import RawEvent
from metering.pipeline import MAX_STATUS, MAX_TOKENS, TEXT_LIMITS


def test_limits_match_the_schema():
    lengths = {c.name: c.type.length for c in usage_records.columns if getattr(c.type, "length", None)}
    assert TEXT_LIMITS == lengths
    assert isinstance(usage_records.c.status_code.type, sa.Integer) and MAX_STATUS == 2**31 - 1


@pytest.mark.parametrize(
    "overrides, reason, detail",
    [
        ({"subscription": {"id": "s" * 201, "name": "x"}}, "invalid_field", "subscription_id is longer than 200"),
        ({"deployment": "😀" * 101}, "invalid_field", "deployment is longer than 200"),  # 202 UTF-16 units
        ({"apiVersion": "v" * 65}, "invalid_field", "api_version is longer than 64"),
        ({"status": 2**31}, "invalid_field", "status_code 2147483648 is out of range"),
        ({"usage": {"prompt_tokens": 9.223372036854776e18}}, "invalid_usage", "prompt_tokens"),
        ({"usage": {"prompt_tokens": MAX_TOKENS + 1, "completion_tokens": 0}}, "invalid_usage", "out of range"),
    ],
)
def test_oversize_values_are_quarantined_not_storage_errors(engine, overrides, reason, detail):
    totals = Ingestor(engine).ingest([RawEvent(encode(v1_event("too-big", **overrides))), RawEvent(encode(v1_event("ok")))])
    assert (totals.inserted, totals.quarantined) == (1, 1)
    with engine.connect() as conn:
        row = conn.execute(sa.select(quarantine.c.reason, quarantine.c.detail, quarantine.c.request_id)).one()
    assert row.reason == reason and detail in row.detail and row.request_id == "too-big"


def test_values_at_the_limits_are_stored(engine):
    event = v1_event("a" * 200, subscription={"id": "s" * 200, "name": "n" * 400}, status=MAX_STATUS,
                     deployment="é" * 200, usage={"prompt_tokens": MAX_TOKENS, "completion_tokens": 0})
    totals = Ingestor(engine).ingest([RawEvent(encode(event))])
    assert (totals.inserted, totals.quarantined) == (1, 0)


def test_nul_characters_are_bad_input_not_a_postgres_error(engine):
    body = encode(v1_event("nul\u0000id", subscription={"id": "sub\u0000x", "name": "n"}))
    totals = Ingestor(engine).ingest([RawEvent(body)])
    assert totals.quarantined == 1
    with engine.connect() as conn:
        row = conn.execute(sa.select(quarantine.c.reason, quarantine.c.request_id)).one()
    assert row.reason == "invalid_field" and row.request_id == "nulid"


def test_quarantine_request_ids_fit_nvarchar_200():
    from db.store import _clip

    assert _clip("😀" * 150, 200) == "😀" * 100 and _clip("a" * 300, 200) == "a" * 200


@pytest.mark.parametrize("record, reason", [
    (dict(request_id="huge", prompt=10**19), "invalid_usage"),
    (dict(request_id="nul\u0000id"), "invalid_field"),
])
def test_llm_log_usage_that_cannot_be_stored_is_quarantined(engine, record, reason):
    from llm_records import envelope, llm_record

    record = dict(record)
    request_id = record.pop("request_id")
    body = envelope(llm_record(request_id, record.get("prompt", 10), 5), llm_record("fine", 10, 5))
    totals = Ingestor(engine).ingest([RawEvent(body)])
    assert totals.read == 2 == totals.quarantined + totals.pending
    assert (totals.quarantined, totals.pending) == (1, 1)
    with engine.connect() as conn:
        assert conn.execute(sa.select(quarantine.c.reason)).scalar_one() == reason
