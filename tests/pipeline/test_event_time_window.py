"""Event times are accepted only in a window around the time of ingest (ten years back, a day ahead,
both settings): year-0001 and year-9999 events are ``invalid_field``, never rows that break every
report, and a time that overflows UTC is a clear reason, not ``internal_error``. A total that is
not prompt + completion is ``invalid_usage`` (issue 13, items 4 and 12)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from azure_shapes import chat_body, responses_usage, usage_object
from cli_runner import run
from db.schema import llm_usage, quarantine, usage_records
from events import encode, jsonl, v1_event
from llm_records import envelope, llm_record
from metering.ingest import Ingestor
from metering.model import PipelineSettings, RawEvent
from metering.pipeline import process_event
from metering.price.pricing import RateCard
from metering.settings import settings_from_env

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
CARD = RateCard([], [])


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def verdict(time: str, settings: PipelineSettings = PipelineSettings()):
    result = process_event(RawEvent(encode(v1_event("w-1", time=time))), CARD, settings, NOW)
    return result.quarantined


@pytest.mark.parametrize("time", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+05:00",
                                  "9999-12-31T23:00:00-05:00", "1970-01-01T00:00:00Z", "2026-12-02T12:00:00Z"])
def test_times_outside_the_window_are_invalid_fields(time):
    item = verdict(time)
    assert item is not None and item.reason == "invalid_field" and item.request_id == "w-1"
    assert "out of range" in item.detail or "outside the accepted window" in item.detail


@pytest.mark.parametrize("age", [timedelta(0), timedelta(days=400), timedelta(days=9 * 365), -timedelta(hours=20)])
def test_old_captures_and_a_fast_clock_are_accepted(age):
    assert verdict(iso(NOW - age)) is None


def test_the_window_is_configurable_and_checked():
    tight = settings_from_env({"METERING_MAX_EVENT_AGE_DAYS": "30", "METERING_MAX_EVENT_FUTURE_MINUTES": "5"})
    assert (tight.max_event_age, tight.max_event_skew) == (timedelta(days=30), timedelta(minutes=5))
    assert verdict(iso(NOW - timedelta(days=40)), tight).reason == "invalid_field"
    assert verdict(iso(NOW + timedelta(minutes=10)), tight).reason == "invalid_field"
    assert verdict(iso(NOW - timedelta(days=29)), tight) is None
    wide = settings_from_env({"METERING_MAX_EVENT_AGE_DAYS": "3000000", "METERING_MAX_EVENT_FUTURE_MINUTES": "3000000"})
    assert verdict("0001-01-01T00:00:00Z", wide) is None  # a window wider than the calendar: no overflow
    for name, bad in (("METERING_MAX_EVENT_AGE_DAYS", "ten years"), ("METERING_MAX_EVENT_FUTURE_MINUTES", "-5"),
                      ("METERING_MAX_EVENT_AGE_DAYS", "99999999999")):
        with pytest.raises(ValueError, match=name):
            settings_from_env({name: bad})


def test_stored_as_quarantine_never_as_rows(engine):
    bodies = [encode(v1_event("far-future", time="9999-12-31T23:59:59Z")),
              encode(v1_event("before-utc", time="0001-01-01T00:00:00+05:00")),
              encode(v1_event("on-time", time=iso(datetime.now(timezone.utc) - timedelta(days=365)))),
              envelope(llm_record("llm-future", time="9999-12-31T23:59:59Z"))]
    totals = Ingestor(engine).ingest([RawEvent(b) for b in bodies])
    assert (totals.read, totals.inserted, totals.quarantined) == (4, 1, 3)
    with engine.connect() as conn:
        assert conn.execute(sa.select(usage_records.c.request_id)).scalars().all() == ["on-time"]
        reasons = dict(conn.execute(sa.select(quarantine.c.request_id, quarantine.c.reason)).all())
        assert conn.execute(sa.select(sa.func.count()).select_from(llm_usage)).scalar() == 0
    assert reasons == {"far-future": "invalid_field", "before-utc": "invalid_field", "llm-future": "invalid_field"}


def test_replay_of_a_year_old_capture_still_counts(db, capsys, tmp_path):
    old = datetime.now(timezone.utc) - timedelta(days=400)
    capture = tmp_path / "old.jsonl"
    capture.write_bytes(jsonl([v1_event(f"old-{i}", time=iso(old + timedelta(minutes=i))) for i in range(3)]))
    code, out, _ = run(capsys, "--db", db, "replay", "--progress", "off", str(capture))
    assert code == 0 and "events read 3 | rows inserted 3" in out


# --------------------------------------------------------------------------- total = prompt + completion


@pytest.mark.parametrize("usage", [
    usage_object(1200, 300, cached=1024, reasoning=128),  # chat completions
    {"prompt_tokens": 41, "total_tokens": 41},  # embeddings: no completion tokens (policy/examples/embeddings-full.json)
    responses_usage(800, 200, reasoning=64),  # Responses API
    {"prompt_tokens": 10, "completion_tokens": 5},  # no total: it is the sum
])
def test_azure_usage_shapes_are_consistent(usage):
    result = process_event(RawEvent(encode(v1_event("t-ok", usage=usage))), CARD, PipelineSettings(), NOW)
    assert result.quarantined is None and result.record.usage_source == "reported"


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 999_999_999_999},
    {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 15},
    {"total_tokens": 5000},  # a total with no parts: nothing to price
    {"input_tokens": 10, "output_tokens": 10, "total_tokens": 21},
])
def test_a_total_that_is_not_its_parts_is_invalid_usage(usage):
    result = process_event(RawEvent(encode(v1_event("t-bad", usage=usage))), CARD, PipelineSettings(), NOW)
    assert result.record is None and result.quarantined.reason == "invalid_usage"
    assert "is not prompt + completion tokens" in result.quarantined.detail


def test_the_rule_holds_for_bodies_and_llm_logs_too(engine):
    inconsistent = chat_body("Hello", usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 999_999_999_999})
    bodies = [encode(v1_event("body", usage=None, capture="full", response=inconsistent)),
              envelope(llm_record("log", 1, 1, totalTokens=999_999_999_999))]
    totals = Ingestor(engine).ingest([RawEvent(b) for b in bodies])
    assert (totals.inserted, totals.quarantined, totals.pending) == (0, 2, 0)
    with engine.connect() as conn:
        assert set(conn.execute(sa.select(quarantine.c.reason)).scalars()) == {"invalid_usage"}
