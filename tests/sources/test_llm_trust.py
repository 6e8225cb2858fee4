"""Who may change a row: APIM's LLM-log envelopes are not signed, so with signatures required they
change no signed row; where they are trusted, they only fill usage the event lacked, never change
the model, and never claim numbers the row's own event contradicts (issue 13, item 1; SQLite and
PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
import sqlalchemy as sa

from db import rate_card as rate_card_store
from db.schema import llm_usage, usage_records
from events import encode, jsonl, v1_event
from llm_records import envelope, llm_record, streamed_request_mode
from metering.decode.signature import sign
from metering.ingest import Ingestor
from metering.model import PipelineSettings, RawEvent
from metering.pipeline import process_batch
from metering.price.pricing import RateCard
from metering.price.rate_card import parse_rates_csv
from metering.pipeline.llm_logs import MAX_HIDDEN_REASONING_TOKENS, implausible, parse_llm_record

KEY = b"0123456789abcdef0123456789abcdef-not-a-real-key"
CARD = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
    "gpt-5-pro,global,,2024-01-01,,USD,15.00,,120.00\n"
)
SIGNED = PipelineSettings(signing_secret=KEY)
# What the attacker sent: 900 billion tokens on another, dearer model.
FORGED = dict(prompt=600_000_000_000, completion=300_000_000_000, model="gpt-5-pro", deployment="gpt-5-pro")


def ingest(engine, settings: PipelineSettings, *bodies: bytes):
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(CARD))
    return Ingestor(engine, rate_card_ttl=0, settings=settings).ingest([RawEvent(b) for b in bodies])


def row(engine, request_id: str) -> dict:
    with engine.connect() as conn:
        found = conn.execute(sa.select(usage_records).where(usage_records.c.request_id == request_id)).mappings().one()
        status = conn.execute(sa.select(llm_usage.c.status).where(llm_usage.c.request_id == request_id)).scalar()
    return {**found, "llm_status": status}


def units(totals) -> int:
    return (totals.inserted + totals.duplicates + totals.quarantined + totals.merged + totals.pending
            + totals.llm_refused + totals.ignored)


def test_with_signatures_required_unsigned_llm_records_change_no_signed_row(engine):
    ingest(engine, SIGNED, sign(encode(streamed_request_mode("t-1")), KEY))
    before = row(engine, "t-1")
    assert before["usage_source"] == "partial"
    forged = ingest(engine, SIGNED, envelope(llm_record("t-1", **FORGED)))
    assert (forged.read, forged.llm_refused, forged.merged, forged.pending) == (1, 1, 0, 0) and units(forged) == forged.read
    assert "llm usage refused 1 (unsigned or implausible" in forged.summary()
    after = row(engine, "t-1")
    assert (before.pop("llm_status"), after.pop("llm_status")) == (None, "unsigned")
    assert after == before  # not a token, a cent or the model changed


def test_a_forged_record_for_a_request_not_yet_seen_is_not_applied_when_the_signed_event_arrives(engine):
    first = ingest(engine, SIGNED, envelope(llm_record("t-2", **FORGED)))
    assert first.llm_refused == 1 and first.pending == 0
    ingest(engine, SIGNED, sign(encode(streamed_request_mode("t-2")), KEY))
    stored = row(engine, "t-2")
    assert (stored["usage_source"], stored["model"], stored["llm_status"]) == ("partial", "gpt-4o", "unsigned")
    assert stored["total_tokens"] < 1_000 and stored["total_cost"] < Decimal("0.01")


def test_a_route_declared_trusted_fills_rows_but_only_within_what_the_event_showed(engine):
    trusted = replace(SIGNED, trust_llm_logs=True)
    ingest(engine, trusted, sign(encode(streamed_request_mode("t-3")), KEY), sign(encode(streamed_request_mode("t-4")), KEY))
    genuine = ingest(engine, trusted, envelope(llm_record("t-3", 1200, 300, model="gpt-5-pro")))
    assert genuine.merged == 1
    filled = row(engine, "t-3")
    assert (filled["usage_source"], filled["total_tokens"], filled["model"], filled["total_cost"]) == (
        "reported", 1500, "gpt-4o", Decimal("0.006"))  # gpt-4o's price: the log's ModelName chose nothing
    before = row(engine, "t-4")
    forged = ingest(engine, trusted, envelope(llm_record("t-4", **FORGED)))
    assert forged.llm_refused == 1 and forged.merged == 0 and units(forged) == forged.read
    after = row(engine, "t-4")
    assert after["llm_status"] == "implausible" and after["total_tokens"] == before["total_tokens"]


def test_without_signatures_forged_numbers_are_bounded_both_ways(engine):
    ingest(engine, PipelineSettings(), encode(streamed_request_mode("t-5")), encode(streamed_request_mode("t-6")))
    estimate = row(engine, "t-5")["prompt_tokens"]
    inflated = ingest(engine, PipelineSettings(), envelope(llm_record("t-5", **FORGED)))
    shrunk = ingest(engine, PipelineSettings(), envelope(llm_record("t-6", estimate // 10, 1)))  # a cheaper bill
    assert inflated.llm_refused == shrunk.llm_refused == 1
    for request_id in ("t-5", "t-6"):
        kept = row(engine, request_id)
        assert (kept["usage_source"], kept["llm_status"], kept["prompt_tokens"]) == ("partial", "implausible", estimate)


def test_a_reported_row_is_never_touched_whatever_the_record_says(engine):
    ingest(engine, PipelineSettings(), encode(v1_event("t-7")))
    ingest(engine, PipelineSettings(), envelope(llm_record("t-7", 1, 1, model="gpt-5-pro")))
    kept = row(engine, "t-7")
    assert (kept["total_tokens"], kept["model"], kept["llm_status"]) == (1500, "gpt-4o-2024-11-20", "unneeded")


def test_replay_summary_says_what_was_refused(db, tmp_path, capsys, monkeypatch):
    from cli_runner import run

    monkeypatch.setenv("METERING_SIGNING_SECRET", KEY.decode())
    capture = tmp_path / "mixed.jsonl"
    capture.write_bytes(jsonl([sign(encode(streamed_request_mode("t-8")), KEY), envelope(llm_record("t-8"))]))
    code, out, _ = run(capsys, "--db", db, "replay", "--progress", "off", str(capture))
    assert code == 0
    assert "events read 2 | rows inserted 1 | duplicates skipped 0 | quarantined 0 | llm usage merged 0" in out
    assert "llm usage refused 1" in out


# --------------------------------------------------------------------------- the bounds, pure


def estimated_row(prompt: int, completion: int, source: str = "estimated"):
    record = process_batch([RawEvent(encode(streamed_request_mode("p-1")))], RateCard(parse_rates_csv(CARD))).records[0]
    return replace(record, prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                   usage_source=source)


def log(prompt: int, completion: int, reasoning: int = 0):
    return parse_llm_record(llm_record("p-1", prompt, completion, reasoningTokens=reasoning))


@pytest.mark.parametrize(
    "row_tokens, source, record, verdict",
    [
        ((400, 300), "estimated", (420, 310), None),  # the provider's count, a little off the estimate
        ((400, 300), "estimated", (420, 300 + 60_000, 60_000), None),  # hidden reasoning on top of the answer
        ((400, 300), "estimated", (420, 300 + MAX_HIDDEN_REASONING_TOKENS + 2_000), "completion"),  # beyond any model
        ((400, 300), "estimated", (5_000, 310), "prompt"),  # a prompt the captured request could not have been
        ((400, 300), "estimated", (420, 100), "completion"),  # less than the answer the stream showed
        ((400, 300), "partial", (420, 40_000), None),  # a cut stream bounds the completion from below only
        ((400, 0), "partial", (420, 900), None),  # no answer captured
        ((0, 0), "none", (200_000, 30_000), None),  # nothing known: only the ceiling
        ((0, 0), "none", (1_000_000, 200_000), "context"),  # more than any model's context window
    ],
)
def test_plausibility_bounds(row_tokens, source, record, verdict):
    why = implausible(estimated_row(*row_tokens, source), log(*record))
    assert (why is None) if verdict is None else (why is not None and verdict in why)
