"""Units Azure bills beyond tokens (#30): seconds of whisper audio, speech input characters,
Responses API built-in tool calls and code interpreter sessions — read from the shapes the APIs
return, priced from their own rate columns, stored on their own usage_records columns, never $0.

Shapes: transcription ``usage`` ``{"type": "duration", "seconds": N}`` (OpenAI API reference,
``TranscriptionVerbose.usage`` / ``Transcription.usage`` in openai-python); Responses output items
``web_search_call`` (``id``, ``action``, ``status``), ``file_search_call`` (``id``, ``queries``,
``status``, ``results``) and ``code_interpreter_call`` (``id``, ``code``, ``container_id``,
``outputs``, ``status``) as openai-python's ``types/responses`` define them; Assistants run steps
``{"object": "thread.run.step", "type": "tool_calls", "step_details": {"tool_calls": [{"type":
"code_interpreter", ...}]}}``."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest
import sqlalchemy as sa

from cli_runner import run
from db.engine import make_engine
from db.schema import usage_records
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.model import BadEvent, RawEvent, TokenUsage
from metering.price.pricing import RateCard, price_tokens
from metering.price.rate_card import RateCardError, parse_rates_csv, rates_to_csv
from metering.usage.resolve import normalize_usage
from metering.usage.units import tools_in_body, tools_in_stream

HEADER = ("model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,"
          "output_per_1m,audio_per_hour,characters_per_1m,web_search_per_1k,file_search_per_1k,"
          "code_interpreter_per_session\n")
# Prices of the Retail Prices meters (tests/data/origins: Speech-to-Text-Batch-Whisper-glbl 0.36/hour,
# Speech-Text to Speech-global 15 and HD 30 per 1M characters, file-search-tool-calls-glbl 2.50 per 1K,
# Code-Interpreter-global 0.03 per session); the web search price is the card's own (no Azure meter seen).
CARD = HEADER + (
    "whisper,global,,2024-01-01,,USD,0,,0,0.36,,,,\n"
    "tts,global,,2024-01-01,,USD,0,,0,,15,,,\n"
    "tts-hd,global,,2024-01-01,,USD,0,,0,,30,,,\n"
    "gpt-4.1,global,,2024-01-01,,USD,2.00,0.50,8.00,,,10,2.50,0.03\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00,,,,,\n"
)
DEPLOYMENTS = "backend_id,deployment,model,deployment_type\n,whisper,whisper,global\n,tts,tts,global\n,tts-hd,tts-hd,global\n"
NOW = datetime(2026, 10, 15, 9, 30, tzinfo=timezone.utc)

WHISPER_VERBOSE = {"task": "transcribe", "language": "english", "duration": 8.470000267028809,
                   "text": "The beach was a popular spot on a hot summer day.",
                   "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": 3.319999933242798,
                                 "text": " The beach was a popular spot on a hot summer day.",
                                 "tokens": [50364, 440, 7534, 390, 257, 3743, 4008, 322, 257, 2368, 4266, 786, 13],
                                 "temperature": 0.0, "avg_logprob": -0.2860786020755768,
                                 "compression_ratio": 1.2363636493682861, "no_speech_prob": 0.00985979475080967}],
                   "usage": {"type": "duration", "seconds": 9}}
SPEECH_REQUEST = {"model": "tts", "input": "Your parcel arrives tomorrow before noon. Thank you!", "voice": "alloy"}
RESPONSE_WITH_TOOLS = {
    "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41", "object": "response", "created_at": 1741476777,
    "status": "completed", "model": "gpt-4.1-2025-04-14",
    "output": [
        {"type": "web_search_call", "id": "ws_67ccd3acc8548190a1f33bc1a0ea8a5c05e9c2ab32f5f8d3", "status": "completed",
         "action": {"type": "search", "query": "parcel delivery times Sweden"}},
        {"type": "file_search_call", "id": "fs_67ccd3b1d4e08190b9b0e4ae2f1d1b6e", "status": "completed",
         "queries": ["delivery guarantee", "refund policy"], "results": None},
        {"type": "file_search_call", "id": "fs_67ccd3b2f8a48190a33bc1a0ea8a5c05", "status": "completed",
         "queries": ["opening hours"], "results": None},
        {"type": "code_interpreter_call", "id": "ci_67ccd3b6a0c08190a7e1", "status": "completed",
         "code": "print(4 * 3.82)", "container_id": "cntr_6878f3ea4a1c8191a2a1", "outputs": None},
        {"type": "code_interpreter_call", "id": "ci_67ccd3b9b1d08190b8f2", "status": "completed",
         "code": "import math; print(math.sqrt(15.28))", "container_id": "cntr_6878f3ea4a1c8191a2a1", "outputs": None},
        {"type": "message", "id": "msg_67ccd3bf", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "It arrives tomorrow.", "annotations": []}]},
    ],
    "usage": {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 300,
              "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1500},
}


def card() -> RateCard:
    from metering.price.mappings import parse_deployments_csv

    return RateCard(parse_rates_csv(CARD), parse_deployments_csv(DEPLOYMENTS))


def _price(usage: TokenUsage, model: str):
    return price_tokens(billable=True, usage=usage, model=model, deployment_type="global", region=None, at=NOW,
                        card=card())


# --------------------------------------------------------------------------- reading the shapes


def test_whisper_duration_usage_is_audio_seconds_not_no_usage():
    usage = normalize_usage(WHISPER_VERBOSE["usage"], endpoint="audio")
    assert usage is not None and usage.audio_seconds == Decimal(9) and usage.total_tokens == 0
    assert normalize_usage({"type": "duration", "seconds": 3.4567}).audio_seconds == Decimal("3.457")
    with pytest.raises(BadEvent, match="seconds"):
        normalize_usage({"type": "duration", "seconds": "-1"})
    with pytest.raises(BadEvent, match="seconds"):
        normalize_usage({"type": "duration", "seconds": True})


def test_responses_tool_items_are_calls_and_containers_are_sessions():
    found = tools_in_body(RESPONSE_WITH_TOOLS)
    assert (found.web_search_calls, found.file_search_calls, found.code_interpreter_sessions) == (1, 2, 1)


def test_a_stream_counts_the_completed_responses_tools_once():
    items = RESPONSE_WITH_TOOLS["output"]
    events = [{"type": "response.output_item.done", "output_index": i, "item": item} for i, item in enumerate(items)]
    events.append({"type": "response.completed", "response": RESPONSE_WITH_TOOLS})
    text = "".join(f"event: {e['type']}\ndata: {orjson.dumps(e).decode()}\n\n" for e in events)
    found = tools_in_stream(text)
    assert (found.web_search_calls, found.file_search_calls, found.code_interpreter_sessions) == (1, 2, 1)
    cut = "".join(f"event: {e['type']}\ndata: {orjson.dumps(e).decode()}\n\n" for e in events[:2])
    assert tools_in_stream(cut).web_search_calls == 1  # a stream cut short: the items it has


def test_an_assistants_run_stream_with_a_code_interpreter_step_is_one_session():
    step = {"id": "step_abc123", "object": "thread.run.step", "created_at": 1699063291, "run_id": "run_abc123",
            "assistant_id": "asst_abc123", "thread_id": "thread_abc123", "type": "tool_calls", "status": "completed",
            "step_details": {"type": "tool_calls", "tool_calls": [
                {"id": "call_abc", "type": "code_interpreter",
                 "code_interpreter": {"input": "2 + 2", "outputs": [{"type": "logs", "logs": "4"}]}}]},
            "usage": {"prompt_tokens": 123, "completion_tokens": 456, "total_tokens": 579}}
    text = f"event: thread.run.step.completed\ndata: {orjson.dumps(step).decode()}\n\n"
    assert tools_in_stream(text).code_interpreter_sessions == 1


def test_tool_units_are_read_only_from_apis_that_have_built_in_tools():
    """A Responses body is read for its tool items; the same text answered on Chat Completions (an API
    without built-in tools, where such text can only be content or a forgery) bills no tool units."""
    from metering.decode.event import decode_event
    from metering.usage.resolve import resolve_usage

    body = orjson.dumps(RESPONSE_WITH_TOOLS).decode()
    responses = decode_event(encode(v1_event("u-resp", operation="Responses_Create", usage=None, capture="full",
                                             response=body)))
    chat = decode_event(encode(v1_event("u-chat", operation="ChatCompletions_Create", usage=None, capture="full",
                                        response=body)))
    assert (responses.endpoint, chat.endpoint) == ("responses", "chat.completions")
    assert resolve_usage(responses).web_search_calls == 1
    assert resolve_usage(chat).web_search_calls == 0 and resolve_usage(chat).file_search_calls == 0


# --------------------------------------------------------------------------- pricing


def test_each_unit_is_priced_at_its_own_column():
    whisper = _price(normalize_usage(WHISPER_VERBOSE["usage"]), "whisper")
    assert (whisper.price_status, whisper.total_cost, whisper.unit_cost) == ("priced", Decimal("0.0009"), Decimal("0.0009"))
    tts = _price(TokenUsage(source="reported", input_characters=52), "tts-hd")
    assert tts.total_cost == Decimal(52) * 30 / 1_000_000
    tools = _price(TokenUsage(prompt_tokens=1200, completion_tokens=300, total_tokens=1500, source="reported",
                              web_search_calls=1, file_search_calls=2, code_interpreter_sessions=1), "gpt-4.1-2025-04-14")
    tokens = Decimal(1200) * 2 / 1_000_000 + Decimal(300) * 8 / 1_000_000
    assert tools.unit_cost == Decimal("0.01") + Decimal("0.005") + Decimal("0.03")
    assert tools.total_cost == tokens + tools.unit_cost and tools.input_cost + tools.output_cost == tokens


def test_audio_that_does_not_divide_evenly_is_rounded_to_the_cost_scale():
    cost = _price(TokenUsage(source="reported", audio_seconds=Decimal(7)), "whisper")
    assert cost.unit_cost == Decimal("0.000700000000")  # 7 × 0.36 / 3600 exactly
    odd = price_tokens(billable=True, usage=TokenUsage(source="reported", audio_seconds=Decimal(7)), model="whisper",
                       deployment_type="global", region=None, at=NOW,
                       card=RateCard(parse_rates_csv(HEADER + "whisper,global,,2024-01-01,,USD,0,,0,0.37,,,,\n")))
    assert odd.unit_cost == Decimal("0.000719444444")


def test_a_unit_the_row_cannot_price_is_no_rate_never_free():
    cost = _price(TokenUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15, source="reported",
                             file_search_calls=3), "gpt-4o-2024-11-20")
    assert cost.price_status == "no_rate" and cost.total_cost is None


def test_the_unit_columns_round_trip_and_a_misspelled_one_is_refused():
    rates = parse_rates_csv(CARD)
    assert parse_rates_csv(rates_to_csv(rates)) == rates
    with pytest.raises(RateCardError, match="unknown column"):
        parse_rates_csv(CARD.replace("audio_per_hour", "audio_per_hr"))


# --------------------------------------------------------------------------- stored rows and the CLI


def _events() -> list[dict]:
    whisper = {"id": "aoai-swedencentral", "url": "https://aoai-sc.openai.azure.com/openai", "region": "Sweden Central"}
    return [
        v1_event("u-whisper", operation="Transcriptions_Create", deployment="whisper", model=None, backend=whisper,
                 usage=WHISPER_VERBOSE["usage"]),
        v1_event("u-tts-usage", operation="Speech_Create", deployment="tts", model=None,
                 usage={"type": "characters", "characters": 52}),
        v1_event("u-tts-request", operation="Speech_Create", deployment="tts-hd", model=None, usage=None,
                 capture="request", request=SPEECH_REQUEST),
        v1_event("u-tools", operation="Responses_Create", deployment="gpt-4.1", model="gpt-4.1-2025-04-14",
                 capture="full", usage=None, response=orjson.dumps(RESPONSE_WITH_TOOLS).decode()),
    ]


def test_units_are_stored_on_their_columns_and_listed(capsys, db, tmp_path):
    (tmp_path / "rates.csv").write_text(CARD)
    (tmp_path / "deployments.csv").write_text(DEPLOYMENTS)
    assert run(capsys, "--db", db, "rates", "import", str(tmp_path / "rates.csv"))[0] == 0
    assert run(capsys, "--db", db, "deployments", "import", str(tmp_path / "deployments.csv"))[0] == 0
    engine = make_engine(db)
    Ingestor(engine).ingest([RawEvent(encode(e)) for e in _events()])
    with engine.connect() as conn:
        rows = {r.request_id: r for r in conn.execute(sa.select(usage_records))}
    engine.dispose()
    whisper = rows["u-whisper"]
    assert (whisper.price_status, whisper.audio_seconds, whisper.total_cost) == ("priced", Decimal(9), Decimal("0.0009"))
    assert rows["u-tts-usage"].input_characters == 52 and rows["u-tts-usage"].total_cost == Decimal("0.00078")
    request_mode = rows["u-tts-request"]
    assert request_mode.input_characters == len(SPEECH_REQUEST["input"]) and request_mode.price_status == "priced"
    tools = rows["u-tools"]
    assert (tools.web_search_calls, tools.file_search_calls, tools.code_interpreter_sessions) == (1, 2, 1)
    assert tools.unit_cost == Decimal("0.045") and tools.total_cost == Decimal("0.0024") + Decimal("0.0024") + Decimal("0.045")
    code, out, err = run(capsys, "--db", db, "rates", "list")
    assert code == 0, err
    assert "audio_per_hour=0.36" in out and "characters_per_1m=30" in out and "file_search_per_1k=2.5" in out
    assert "code_interpreter_per_session=0.03" in out
    # repricing the stored rows changes nothing: one pricing path
    code, out, err = run(capsys, "--db", db, "reprice")
    assert code == 0 and "rows changed 0" in out, (out, err)


def test_the_report_shows_the_units(capsys, sqlite_url, tmp_path):
    (tmp_path / "rates.csv").write_text(CARD)
    (tmp_path / "deployments.csv").write_text(DEPLOYMENTS)
    for args in (["db", "upgrade"], ["rates", "import", str(tmp_path / "rates.csv")],
                 ["deployments", "import", str(tmp_path / "deployments.csv")]):
        assert run(capsys, "--db", sqlite_url, *args)[0] == 0
    engine = make_engine(sqlite_url)
    Ingestor(engine).ingest([RawEvent(encode(e)) for e in _events()])
    engine.dispose()
    code, out, err = run(capsys, "--db", sqlite_url, "report", "--month", "2026-10", "--by", "model", "--format", "json")
    assert code == 0, err
    report = orjson.loads(out)
    total = report["total"]
    assert (total["audio_seconds"], total["input_characters"], total["file_search_calls"],
            total["code_interpreter_sessions"], total["web_search_calls"]) == (9, 52 + len(SPEECH_REQUEST["input"]), 2, 1, 1)
    code, out, err = run(capsys, "--db", sqlite_url, "report", "--month", "2026-10", "--by", "model")
    assert code == 0, err
    assert "units billed beyond tokens (in the cost above, each at its own rate): 9 seconds of audio transcribed" in out


def test_the_focus_export_carries_the_units_and_adds_up_to_the_report(capsys, sqlite_url, tmp_path):
    import csv

    test_the_report_shows_the_units(capsys, sqlite_url, tmp_path)
    code, out, err = run(capsys, "--db", sqlite_url, "report", "--month", "2026-10", "--format", "json")
    assert code == 0, err
    reported = Decimal(str(orjson.loads(out)["total"]["cost"]))
    code, _, err = run(capsys, "--db", sqlite_url, "export", "focus", "--month", "2026-10",
                       "--output", str(tmp_path / "focus.csv"))
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "focus.csv").open(encoding="utf-8-sig")))
    assert sum(Decimal(row["BilledCost"]) for row in rows) == reported
    units = {row["x_TokenKind"]: row for row in rows if row["ConsumedUnit"] != "Tokens"}
    assert (units["audio_seconds"]["ConsumedUnit"], Decimal(units["audio_seconds"]["ConsumedQuantity"])) == ("Seconds", 9)
    assert Decimal(units["audio_seconds"]["BilledCost"]) == Decimal("0.0009")
    assert units["file_search_calls"]["PricingUnit"] == "1000 Calls"
    assert Decimal(units["code_interpreter_sessions"]["BilledCost"]) == Decimal("0.03")


def test_the_marker_scan_lets_every_tool_item_through_to_the_count():
    from metering.usage.units import may_have_tools

    for item in RESPONSE_WITH_TOOLS["output"]:
        body = orjson.dumps({"output": [item]}).decode()
        if tools_in_body(orjson.loads(body)) != tools_in_body(None):  # an item that bills a unit
            assert may_have_tools(body)
    for kind in ("web_search_call", "file_search_call", "code_interpreter_call"):
        assert may_have_tools(orjson.dumps({"output": [{"type": kind, "id": "x"}]}).decode())
    assert may_have_tools('data: {"object":"thread.run.step","status":"completed"}')
    assert not may_have_tools('data: {"type":"response.output_text.delta","delta":"a search call"}')
    assert not may_have_tools(None) and not may_have_tools("")
