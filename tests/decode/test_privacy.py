"""Privacy: prompt and completion text never reaches ``usage_records``; quarantine can redact it."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

import function_app
from db import store
from db.schema import quarantine, usage_records
from events import encode, v1_event
from metering.decode.event import decode_event
from metering.ingest import Ingestor
from metering.model import PipelineSettings, RawEvent
from metering.pipeline import process_event
from metering.price.pricing import RateCard
from metering.decode.redact import MAX_UNSTRUCTURED_PREFIX, redact_payloads

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "events"
SECRET_PROMPT = "Our merger with Fabrikam closes on 3 March; draft the staff announcement."
SECRET_ANSWER = "Dear colleagues, we are delighted to announce that Fabrikam joins Contoso."


def sample_bodies() -> list[bytes]:
    bodies = []
    for path in sorted(SAMPLES.iterdir()):
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        bodies.extend(line.rstrip(b"\r") for line in data.split(b"\n") if line.strip())
    return bodies


TEXT_KEYS = {"content", "prompt", "input", "text", "instructions", "arguments", "refusal"}


def texts_in(value: Any, key: str = "") -> list[str]:
    """The strings stored under message-text keys (``content``, ``prompt``, ``input`` …), at any depth."""
    if isinstance(value, str):
        return [value] if key in TEXT_KEYS else []
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in texts_in(v, k if k in TEXT_KEYS else key)]
    if isinstance(value, list):
        return [s for v in value for s in texts_in(v, key)]
    return []


def payload_texts(body: bytes) -> set[str]:
    """The message text of an event: prompts in its request, the answer in its response (a JSON
    body's messages, or a stream's deltas reassembled)."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return set()
    if not isinstance(event, dict):
        return set()
    texts = set(texts_in(event.get("request")))
    response = event.get("response")
    if isinstance(response, str):
        answer = []
        for line in response.splitlines():
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                try:
                    answer.extend(texts_in(orjson.loads(line[5:])))
                except orjson.JSONDecodeError:
                    continue
        texts.add("".join(answer))  # the streamed answer, reassembled
        try:
            texts.update(texts_in(orjson.loads(response)))
        except orjson.JSONDecodeError:
            pass
    # Long enough to be message text rather than a word that may also be a name.
    return {t.strip() for t in texts if len(t.strip()) >= 12}


def test_usage_records_never_hold_prompt_or_completion_text(sqlite_engine):
    bodies = sample_bodies()
    assert len(bodies) > 500
    texts = set().union(*(payload_texts(b) for b in bodies))
    assert len(texts) > 100 and any(" the " in t for t in texts)
    Ingestor(sqlite_engine).ingest([RawEvent(b) for b in bodies])
    with sqlite_engine.connect() as conn:
        rows = conn.execute(sa.select(usage_records)).all()
    assert len(rows) > 500
    values = {v for row in rows for v in row if isinstance(v, str)}
    leaks = [(v, t) for v in values for t in texts if t in v or v in t and len(v) >= 12]
    assert leaks == []
    text_like = {"content", "prompt", "completion", "messages", "request", "response", "body", "text"}
    assert not text_like & {c.name for c in usage_records.columns}


def full_event(request_id: str = "priv-1", **overrides: Any) -> dict:
    return v1_event(request_id, capture="full",
                    request={"messages": [{"role": "user", "content": SECRET_PROMPT}]},
                    response=orjson.dumps({"choices": [{"message": {"content": SECRET_ANSWER}}],
                                           "usage": {"prompt_tokens": 20, "completion_tokens": 15}}).decode(),
                    **overrides)


def test_redacting_json_keeps_the_header_and_usage():
    body = encode(full_event(status="two hundred"))
    redacted, note = redact_payloads(body)
    assert SECRET_PROMPT.encode() not in redacted and SECRET_ANSWER.encode() not in redacted
    event = orjson.loads(redacted)
    request_size = len(orjson.dumps(orjson.loads(body)["request"]))
    response_size = len(orjson.loads(body)["response"].encode())
    assert event["request"] == f"[redacted {request_size} bytes]"
    assert event["response"] == f"[redacted {response_size} bytes]"
    assert event["usage"] == {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500}
    assert (event["requestId"], event["subscription"]["id"]) == ("priv-1", "sub-finance-analytics")
    assert note == "payloads redacted (2 member(s))"
    assert redact_payloads(encode(v1_event("no-payload"))) == (encode(v1_event("no-payload")), "")


def test_redacting_the_community_format_at_any_depth():
    legacy = {"ExecTimeUTC": "2026-10-15T09:30:00Z", "SubscriptionId": "s", "Request": {"prompt": SECRET_PROMPT},
              "ResponseString": SECRET_ANSWER, "nested": [{"responseBody": SECRET_ANSWER}]}
    redacted, _ = redact_payloads(orjson.dumps(legacy))
    assert SECRET_PROMPT.encode() not in redacted and SECRET_ANSWER.encode() not in redacted
    assert orjson.loads(redacted)["SubscriptionId"] == "s"


def test_redacting_bytes_that_are_not_json_keeps_only_the_header_prefix():
    body = encode(full_event())
    cut = body[: body.index(SECRET_ANSWER.encode()) + 10]  # cut inside the response
    redacted, note = redact_payloads(cut)
    assert redacted == body[: body.index(b',"request":')]
    assert SECRET_PROMPT.encode() not in redacted and "raw redacted to its first" in note
    header = decode_event(redacted)  # the header still decodes from what was kept
    assert header.truncated and header.subscription_id == "sub-finance-analytics"
    garbage = b"x" * (MAX_UNSTRUCTURED_PREFIX * 2)
    assert redact_payloads(garbage)[0] == b"x" * MAX_UNSTRUCTURED_PREFIX
    assert redact_payloads(b"\x00junk") == (b"\x00junk", "")
    text = b'oops {"messages": [{"content": "' + SECRET_PROMPT.encode() + b'"'
    assert redact_payloads(text)[0] == b"oops {"


@pytest.mark.parametrize("redact", [False, True])
def test_quarantine_redacts_payloads_when_asked(sqlite_engine, redact):
    settings = PipelineSettings(redact_payloads=redact)
    bad = encode(full_event("bad-1", status="two hundred"))
    cut = encode(full_event("cut-1"))
    cut = cut[: cut.index(SECRET_ANSWER.encode()) + 5]
    ingestor = Ingestor(sqlite_engine, settings=settings)
    first = ingestor.ingest([RawEvent(bad), RawEvent(cut)])
    again = ingestor.ingest([RawEvent(bad), RawEvent(cut)])  # redelivered: recognised by the original bytes
    assert (first.inserted, first.quarantined, first.truncated) == (1, 1, 1)
    assert (again.inserted, again.duplicates, again.quarantined) == (0, 1, 1)
    with sqlite_engine.connect() as conn:
        rows = {r.request_id: r for r in conn.execute(sa.select(quarantine))}
    assert set(rows) == {"bad-1", "cut-1"}
    assert rows["bad-1"].raw_sha256 == store.raw_digest(bad) and rows["cut-1"].raw_sha256 == store.raw_digest(cut)
    for row in rows.values():
        leaked = SECRET_PROMPT.encode() in row.raw or SECRET_ANSWER[:5].encode() in row.raw
        assert leaked is not redact
        assert ("redacted" in row.detail) is redact
    if redact:
        assert orjson.loads(rows["bad-1"].raw)["status"] == "two hundred"  # still JSON, still diagnosable


def test_the_function_reads_the_redaction_setting(engine, monkeypatch):
    monkeypatch.setenv("METERING_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("METERING_QUARANTINE_REDACT", "1")
    function_app.reset_ingestor()
    try:
        from hub_events import hub_event

        function_app.handle_events([hub_event(encode(full_event("f-bad", status="x")), 1)])
        with engine.connect() as conn:
            raw = conn.execute(sa.select(quarantine.c.raw)).scalar_one()
        assert SECRET_PROMPT.encode() not in raw
    finally:
        function_app.reset_ingestor()


def test_redaction_does_not_change_what_becomes_a_row():
    card = RateCard([], [])
    body = encode(full_event())
    plain = process_event(RawEvent(body), card).record
    redacting = process_event(RawEvent(body), card, PipelineSettings(redact_payloads=True)).record
    assert plain == redacting


def test_quarantined_diagnostic_log_records_are_redacted_too(sqlite_engine):
    from llm_records import envelope, llm_record

    body = envelope(llm_record("bad-log", 10, 5, cached=50))  # invalid: cached > prompt
    assert b"a secret prompt" in body
    totals = Ingestor(sqlite_engine, settings=PipelineSettings(redact_payloads=True)).ingest([RawEvent(body)])
    assert totals.quarantined == 1
    with sqlite_engine.connect() as conn:
        row = conn.execute(sa.select(quarantine)).one()
    assert b"a secret prompt" not in row.raw and b"a secret answer" not in row.raw
    assert row.raw_sha256 == store.raw_digest(body) and "redacted" in row.detail
    assert orjson.loads(row.raw)["records"][0]["properties"]["promptTokens"] == 10
