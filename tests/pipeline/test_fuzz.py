"""Property-based fuzzing of a whole batch: mutated, truncated, re-encoded and random events, event
times anywhere in (and past the ends of) the calendar, and hostile tool schemas (tests/schema_bombs.py).

Whatever arrives, no exception escapes a batch, every event is accounted for exactly once
(``read == inserted + duplicates + quarantined``, plus the LLM-log units ``merged + pending +
refused + ignored`` when diagnostic logs are in the mix), and no event hits an unexpected code path
(quarantine reason ``internal_error`` would be a bug in the pipeline).
"""

from __future__ import annotations

import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.engine import make_engine
from db.migrate import upgrade
from db.schema import quarantine, usage_records
from events import encode, v1_event
from llm_records import envelope, gateway_record, llm_record
from metering.ingest import Ingestor
from metering.model import PipelineSettings, RawEvent
from metering.pipeline import process_batch
from metering.price.pricing import RateCard
from metering.decode.signature import sign
import schema_bombs
from schema_bombs import BOMBS, bomb_event

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from corpus import CorpusBuilder  # noqa: E402

KEY = b"fuzz-key"
_builder = CorpusBuilder(seed=3, max_stream_chunks=24)
BASES: list[bytes] = [_builder.event(i) for i in range(24)] + [
    encode(v1_event("fuzz-plain")),
    encode(v1_event("fuzz-full", capture="full", request={"messages": [{"role": "user", "content": "Grüße 😀"}]},
                    response='{"choices":[{"message":{"content":"Hallo"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}}')),
    sign(encode(v1_event("fuzz-signed")), KEY),
    orjson.dumps({"ExecTimeUTC": "2026-10-15T09:30:00Z", "SubscriptionId": "s-1", "OperationId": "ChatCompletions_Create",
                  "Request": {"messages": [{"role": "user", "content": "hi"}]}, "ResponseString": "data: [DONE]\n\n"}),
    (ROOT / "policy" / "examples" / "chat-stream-full.json").read_bytes().rstrip(b"\n"),
    envelope(llm_record("fuzz-plain", 100, 20), gateway_record("fuzz-plain")),
] + [bomb_event(f"fuzz-bomb-{name}", build(), responses=responses) for name, build in BOMBS.items() for responses in (False, True)]
TOP_LEVEL = ["schema", "requestId", "time", "gateway", "subscription", "user", "backend", "deployment", "status",
             "durationMs", "stream", "capture", "model", "usage", "request", "response", "attributes", "signature"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


# Times at and past the ends of the calendar, in any offset (0001-01-01T00:00:00+05:00 is before
# year 1 in UTC), and anywhere between: each is a row or an ``invalid_field``, never a crash.
extreme_times = st.sampled_from([
    "9999-12-31T23:59:59Z", "9999-12-31T23:59:59.9999999Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:00:00-05:00", "1970-01-01T00:00:00Z", "2026-10-15T09:30:00+14:00",
]) | st.datetimes(timezones=st.timezones() | st.just(None)).map(lambda moment: moment.isoformat())


@st.composite
def mutated(draw) -> bytes:
    body = draw(st.sampled_from(BASES))
    kind = draw(st.sampled_from(["as_is", "truncate", "bytes", "reencode", "field", "usage", "random", "bom", "llm",
                                 "time", "schema"]))
    if kind == "schema":  # a hostile tool schema of any shape and size (the estimator's budget holds)
        shape = draw(st.sampled_from([schema_bombs.ref_dag, schema_bombs.anyof_refs, schema_bombs.object_type_lists]))
        size = (draw(st.integers(1, 24)), draw(st.integers(1, 6)))
        parameters = draw(st.sampled_from([shape(*size), schema_bombs.mutual_refs(draw(st.integers(1, 20))),
                                           schema_bombs.ref_chain(draw(st.integers(1, 3000)))]))
        return bomb_event(draw(st.sampled_from(["fuzz-bomb", "fuzz-plain"])), parameters, responses=draw(st.booleans()))
    if kind == "time":
        moment = draw(extreme_times)
        if draw(st.booleans()):
            return envelope(llm_record(draw(st.sampled_from(["fuzz-plain", "fuzz-time"])), time=moment))
        return encode(v1_event(draw(st.sampled_from(["fuzz-plain", "fuzz-time"])), time=moment))
    if kind == "llm":  # an APIM diagnostic-log envelope with odd values in its LLM record
        fields = draw(st.dictionaries(st.sampled_from(["promptTokens", "completionTokens", "totalTokens",
                                                       "promptCachedTokens", "deploymentName", "modelName"]),
                                      json_values | st.integers(-5, 2**64), max_size=3))
        request_id = draw(st.text(min_size=1, max_size=8) | st.sampled_from(["fuzz-plain", "r" * 250]))
        try:
            return envelope(llm_record(request_id, **fields))
        except TypeError:  # an integer beyond 64 bits
            return envelope(llm_record(request_id))
    if kind == "truncate":
        return body[: draw(st.integers(0, len(body)))]
    if kind == "bytes":
        data = bytearray(body)
        for _ in range(draw(st.integers(1, 6))):
            position = draw(st.integers(0, len(data) - 1))
            action = draw(st.sampled_from(["flip", "delete", "insert"]))
            if action == "flip":
                data[position] = draw(st.integers(0, 255))
            elif action == "delete":
                del data[position]
            else:
                data.insert(position, draw(st.integers(0, 255)))
        return bytes(data)
    if kind == "reencode":
        encoding = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "utf-8-sig"]))
        return body.decode("utf-8", "replace").encode(encoding, "replace")
    if kind in ("field", "usage"):
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if kind == "usage":
            event["usage"] = draw(st.dictionaries(
                st.sampled_from(["prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens",
                                 "prompt_tokens_details", "completion_tokens_details"]),
                json_values | st.integers(-5, 10**12), max_size=5))
        else:
            event[draw(st.sampled_from(TOP_LEVEL))] = draw(json_values)
        try:
            return orjson.dumps(event)
        except TypeError:  # an integer beyond 64 bits
            return orjson.dumps({k: str(v) for k, v in event.items()})
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "bom":
        return b"\xef\xbb\xbf" + body
    return body


SETTINGS = [
    PipelineSettings(),
    PipelineSettings(signing_secret=KEY),
    PipelineSettings(signing_secret=KEY, require_signature=False, redact_payloads=True),
    PipelineSettings(redact_payloads=True),
]

_directory = tempfile.mkdtemp(prefix="metering-fuzz-")
_engine = make_engine(f"sqlite:///{_directory}/fuzz.db")
upgrade(_engine)
_ingestors = [Ingestor(_engine, settings=s) for s in SETTINGS]


def stored_counts() -> tuple[int, int]:
    with _engine.connect() as conn:
        return (conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar(),
                conn.execute(sa.select(sa.func.count()).select_from(quarantine).where(quarantine.c.reason == "internal_error")).scalar())


def rows_outside_the_window() -> int:
    """Rows whose time no report could handle: before the accepted age or past the allowed skew."""
    now = datetime.now(timezone.utc)
    earliest, latest = now - PipelineSettings().max_event_age - timedelta(days=1), now + timedelta(days=2)
    with _engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(usage_records).where(
            (usage_records.c.event_time < earliest) | (usage_records.c.event_time > latest))).scalar()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(mutated(), min_size=1, max_size=8), st.integers(0, len(SETTINGS) - 1), st.booleans())
def test_no_batch_raises_and_every_event_is_counted_once(bodies, which, redeliver):
    raws = [RawEvent(b) for b in bodies]
    if redeliver:
        raws += raws[: len(raws) // 2 + 1]
    pure = process_batch(raws, RateCard([], []), SETTINGS[which])
    # Every metering event is one unit; every record of a diagnostic-log envelope is one too.
    assert pure.events_read == len(pure.records) + len(pure.quarantined) + len(pure.llm_usage) + pure.ignored
    assert all(q.reason != "internal_error" for q in pure.quarantined), [q.detail for q in pure.quarantined]
    # one audit copy per truncated row, and per row stored from the header of a lenient payload
    assert sum(q.reason == "truncated" for q in pure.audit) == sum(r.truncated for r in pure.records)
    assert all(q.reason in ("truncated", "lenient_payload") for q in pure.audit)

    rows_before, _ = stored_counts()
    totals = _ingestors[which].ingest(raws)
    rows_after, internal_errors = stored_counts()
    assert totals.read == pure.events_read
    assert totals.read == (totals.inserted + totals.duplicates + totals.quarantined
                           + totals.merged + totals.pending + totals.llm_refused + totals.ignored)
    assert totals.quarantined == len(pure.quarantined)
    assert rows_after - rows_before == totals.inserted
    assert internal_errors == 0
    assert rows_outside_the_window() == 0


@pytest.mark.postgres
def test_no_batch_raises_on_postgres_either(postgres_url):
    """PostgreSQL checks what SQLite does not (text lengths, NUL, integer ranges): whatever arrives
    is a row or a quarantine item there too, never a storage error that would fail the batch forever."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    ingestors = [Ingestor(engine, settings=s) for s in SETTINGS]

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(mutated(), min_size=1, max_size=8), st.integers(0, len(SETTINGS) - 1))
    def batch_on_postgres(bodies, which):
        totals = ingestors[which].ingest([RawEvent(b) for b in bodies])
        assert totals.read == (totals.inserted + totals.duplicates + totals.quarantined
                               + totals.merged + totals.pending + totals.llm_refused + totals.ignored)

    try:
        batch_on_postgres()
    finally:
        engine.dispose()
