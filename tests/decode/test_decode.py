"""Decode: bytes → UsageEvent for both formats; everything undecodable is a BadEvent with a reason."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest

from events import chat_body, encode, v1_event
from metering.decode.event import classify_endpoint, decode_event, legacy_request_id
from metering.model import BadEvent


def test_v1_event_decodes_every_contract_field():
    event = decode_event(encode(v1_event()), source_partition="3", source_sequence_number=42)
    assert event.request_id == "6f1c2d3e-0000-4000-8000-000000000001"
    assert event.event_time == datetime(2026, 10, 15, 9, 30, 0, 123456, tzinfo=timezone.utc)
    assert (event.subscription_id, event.subscription_name) == ("sub-finance-analytics", "Finance Analytics")
    assert (event.product, event.api, event.operation) == ("ai-standard", "azure-openai", "ChatCompletions_Create")
    assert (event.user_id, event.user_email) == ("jane.doe", "jane.doe@contoso.com")
    assert (event.gateway_service, event.gateway_region) == ("apim-contoso-ai", "West Europe")
    assert (event.backend_id, event.backend_region) == ("aoai-swedencentral", "Sweden Central")
    assert (event.deployment, event.api_version, event.model) == ("gpt-4o", "2024-10-21", "gpt-4o-2024-11-20")
    assert (event.status_code, event.duration_ms, event.is_streaming) == (200, 812, False)
    assert event.attributes == {"x-cost-center": "CC-1042", "appid": "3f2a9c1e-app"}
    assert event.endpoint == "chat.completions"
    assert (event.source_partition, event.source_sequence_number) == ("3", 42)


def test_time_with_offset_is_converted_to_utc_and_naive_time_is_utc():
    assert decode_event(encode(v1_event(time="2026-10-15T11:30:00+02:00"))).event_time == datetime(
        2026, 10, 15, 9, 30, tzinfo=timezone.utc
    )
    assert decode_event(encode(v1_event(time="2026-10-15T09:30:00"))).event_time.tzinfo == timezone.utc


def test_apim_double_duration_and_utf8_bom_are_accepted():
    event = decode_event(b"\xef\xbb\xbf" + encode(v1_event(durationMs=812.6)))
    assert event.duration_ms == 813


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"\xff\xfe{\x00", "not_utf8"),
        (b"{\"schema\": \"aoai-usage/1\", \"requestId\": \"x\", \"time\": \"2026-10-15T09:30:00Z\", \"subscription\": {\"id\": \"caf\xe9\"}}", "not_utf8"),
        (b"<html>502 Bad Gateway</html>", "not_json"),
        (b'{"schema": "aoai-usage/1", "requestId": "abc", "time": "2026-10-1', "truncated"),  # cut: header lost
        (b'{"schema": "aoai-usage/1", "requestId": "abc", "time": 2026-10-1}', "not_json"),
        (b"[1, 2, 3]", "not_object"),
        (b'"just a string"', "not_object"),
        (b"   ", "empty"),
        (b"", "empty"),
        (b'{"hello": "world"}', "unknown_schema"),
        (b'{"schema": "aoai-usage/9", "requestId": "a", "time": "2026-01-01T00:00:00Z"}', "unknown_schema"),
    ],
)
def test_undecodable_bodies_name_their_reason(body: bytes, reason: str):
    with pytest.raises(BadEvent) as caught:
        decode_event(body)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"requestId": None}, "missing_field"),
        ({"requestId": ""}, "missing_field"),
        ({"requestId": 12345}, "invalid_field"),
        ({"time": "yesterday"}, "invalid_field"),
        ({"time": 1700000000}, "invalid_field"),
        ({"status": "OK"}, "invalid_field"),
        ({"stream": "maybe"}, "invalid_field"),
        ({"subscription": "sub-a"}, "invalid_field"),
        ({"subscription": {"id": ["a"]}}, "invalid_field"),
        ({"usage": [1, 2]}, "invalid_field"),
        ({"capture": "everything"}, "invalid_field"),
    ],
)
def test_wrong_types_are_bad_events_that_keep_the_request_id(overrides, reason):
    event = v1_event(**overrides)
    with pytest.raises(BadEvent) as caught:
        decode_event(encode(event))
    assert caught.value.reason == reason
    if isinstance(event["requestId"], str) and event["requestId"]:
        assert caught.value.request_id == event["requestId"]


def test_missing_time_is_a_missing_field():
    event = v1_event()
    del event["time"]
    with pytest.raises(BadEvent) as caught:
        decode_event(encode(event))
    assert caught.value.reason == "missing_field"


def legacy_event() -> dict:
    request = {"messages": [{"role": "user", "content": "Tell me a joke"}], "model": "gpt-4", "max_tokens": 1500}
    return {
        "ExecTimeUTC": "2023-11-28T02:19:24.4402735Z",
        "SubscriptionId": "8d3a7b1c6e5f4a2b",
        "OperationId": "ChatCompletions_Create",
        "RequestIp": "198.51.100.7",
        "ServiceName": "apim-legacy.azure-api.net",
        "RequestUrl": "https://aoai.openai.azure.com/openai/deployments/gpt-4/chat/completions?api-version=2023-05-15",
        "Request": orjson.dumps(request).decode(),
        "ResponseString": orjson.dumps(chat_body(33, 45, model="gpt-4")).decode(),
    }


def test_community_format_decodes_with_a_deterministic_content_key():
    body = encode(legacy_event())
    first, second = decode_event(body), decode_event(body)
    assert first.request_id == second.request_id == legacy_request_id(legacy_event())
    assert first.request_id.startswith("legacy-")
    assert first.event_time == datetime(2023, 11, 28, 2, 19, 24, 440273, tzinfo=timezone.utc)
    assert first.subscription_id == "8d3a7b1c6e5f4a2b"
    assert first.deployment == "gpt-4"
    assert first.api_version == "2023-05-15"
    assert first.endpoint == "chat.completions"
    assert first.request["messages"][0]["content"] == "Tell me a joke"
    assert first.is_streaming is False


def test_community_format_key_changes_with_content_and_ignores_key_order():
    event = legacy_event()
    reordered = dict(reversed(list(event.items())))
    assert legacy_request_id(event) == legacy_request_id(reordered)
    other = dict(event, ExecTimeUTC="2023-11-28T02:19:25.0000000Z")
    assert legacy_request_id(other) != legacy_request_id(event)


def test_community_format_accepts_dotnet_default_time_format():
    event = decode_event(encode(dict(legacy_event(), ExecTimeUTC="11/28/2023 2:19:24 AM")))
    assert event.event_time == datetime(2023, 11, 28, 2, 19, 24, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "operation, url, request_body, response, expected",
    [
        ("ChatCompletions_Create", None, None, None, "chat.completions"),
        ("Completions_Create", None, None, None, "completions"),
        ("embeddings_create", None, None, None, "embeddings"),
        ("Embeddings_Create", None, None, None, "embeddings"),
        ("ImageGenerations_Create", None, None, None, "images"),
        ("Transcriptions_Create", None, None, None, "audio"),
        ("createResponse", None, None, None, "responses"),
        (None, "/openai/deployments/d/chat/completions?api-version=1", None, None, "chat.completions"),
        (None, "/openai/deployments/d/completions", None, None, "completions"),
        (None, "/openai/deployments/d/embeddings", None, None, "embeddings"),
        (None, "/openai/v1/responses", None, None, "responses"),
        (None, "/openai/deployments/d/images/generations", None, None, "images"),
        (None, "/openai/deployments/d/audio/transcriptions", None, None, "audio"),
        (None, None, None, '{"id":"x","object":"text_completion","model":"gpt-35-turbo-instruct"}', "completions"),
        (None, None, None, '{"id":"resp_1","object":"response","status":"completed"}', "responses"),
        (None, None, {"messages": []}, None, "chat.completions"),
        (None, None, {"prompt": "Say hi"}, None, "completions"),
        (None, None, None, None, "other"),
    ],
)
def test_endpoint_classification(operation, url, request_body, response, expected):
    assert classify_endpoint(operation, url, request_body, response) == expected


def test_azure_stream_first_chunk_with_empty_object_still_classifies_as_chat():
    stream = (
        'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[]}\n\n'
        'data: {"choices":[{"delta":{"role":"assistant"},"index":0}],"id":"chatcmpl-1","model":"gpt-4o","object":"chat.completion.chunk"}\n\n'
        "data: [DONE]\n\n"
    )
    assert classify_endpoint(None, None, None, stream) == "chat.completions"


@pytest.mark.parametrize("text", ["²", "--5", "٣٠٠", "1_000", "+-3", "9" * 5000])
def test_integer_text_is_ascii_digits_or_a_clear_invalid_field(text):
    """A string number must be plain ASCII digits: anything else is bad input (invalid_field),
    not a crash of int() quarantined as internal_error, and not a status read from other scripts."""
    from metering.model import RawEvent
    from metering.pipeline import process_event
    from metering.price.pricing import RateCard

    result = process_event(RawEvent(encode(v1_event("req-int", status=text))), RateCard())
    assert result.record is None
    assert result.quarantined is not None and result.quarantined.reason == "invalid_field"
    assert decode_event(encode(v1_event("req-int", status=" 200 "))).status_code == 200
    assert decode_event(encode(v1_event("req-int", durationMs="-12"))).duration_ms == -12


def test_community_format_request_id_is_stripped_like_v1():
    event = decode_event(encode(dict(legacy_event(), RequestId="  8c1f-0042  ")))
    assert event.request_id == "8c1f-0042"


def test_operation_ids_are_read_once_but_a_sender_cannot_fill_the_cache():
    """The operation → API reading is cached for the few ids a gateway has; an id longer than the
    column (never stored: quarantined) is read each time and never kept."""
    from metering.decode.event import _operation_endpoint

    _operation_endpoint.cache_clear()
    for _ in range(3):
        assert classify_endpoint("ChatCompletions_Create", None, None, None) == "chat.completions"
    assert _operation_endpoint.cache_info().misses == 1
    huge = "ChatCompletions_Create" + "x" * 1_000_000
    assert classify_endpoint(huge, None, None, None) == "chat.completions"
    assert _operation_endpoint.cache_info().currsize == 1
    for n in range(1000):
        classify_endpoint(f"custom-op-{n}", None, None, None)
    assert _operation_endpoint.cache_info().currsize == 256
