"""Provider-reported usage for each endpoint's non-streaming body, and the policy-attached usage."""

from __future__ import annotations

import orjson
import pytest

from events import chat_body, encode, v1_event
from metering.decode.event import decode_event
from metering.model import BadEvent
from metering.usage.resolve import normalize_usage, resolve_usage


def usage_of(**overrides):
    return resolve_usage(decode_event(encode(v1_event(**overrides))))


def test_policy_attached_chat_usage_is_reported():
    usage = usage_of(usage={"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.source) == (1200, 300, 1500, "reported")


def test_cached_and_reasoning_tokens_come_from_the_details():
    body = chat_body(2000, 900, model="o3-mini-2025-01-31", cached_tokens=1536, reasoning_tokens=640)
    usage = usage_of(usage=None, capture="full", response=orjson.dumps(body).decode())
    assert usage.prompt_tokens == 2000 and usage.cached_tokens == 1536
    assert usage.completion_tokens == 900 and usage.reasoning_tokens == 640
    assert usage.total_tokens == 2900
    assert usage.model == "o3-mini-2025-01-31"
    assert usage.source == "reported"


def test_legacy_completions_body():
    body = {
        "id": "cmpl-8Pi0", "object": "text_completion", "created": 1701138000, "model": "gpt-35-turbo-instruct",
        "choices": [{"text": " Paris.", "index": 0, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }
    usage = usage_of(usage=None, operation="Completions_Create", response=orjson.dumps(body).decode())
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (7, 2, 9)


def test_embeddings_usage_has_input_only():
    body = {
        "object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0023, -0.0094, 0.0158]}],
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    usage = usage_of(usage=None, operation="embeddings_create", response=orjson.dumps(body).decode())
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (8, 0, 8)
    assert usage.model == "text-embedding-3-small"


def test_responses_api_usage_with_details():
    body = {
        "id": "resp_67ccd2bed1ec8190", "object": "response", "status": "completed", "model": "gpt-4.1-2025-04-14",
        "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}],
        "usage": {
            "input_tokens": 328, "input_tokens_details": {"cached_tokens": 256},
            "output_tokens": 52, "output_tokens_details": {"reasoning_tokens": 12}, "total_tokens": 380,
        },
    }
    usage = usage_of(usage=None, operation="createResponse", response=orjson.dumps(body).decode())
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, usage.reasoning_tokens) == (328, 256, 52, 12)
    assert usage.total_tokens == 380


def test_policy_usage_wins_over_body_usage():
    body = chat_body(10, 10)
    usage = usage_of(usage={"prompt_tokens": 99, "completion_tokens": 1, "total_tokens": 100}, response=orjson.dumps(body).decode())
    assert usage.prompt_tokens == 99


def test_total_defaults_to_prompt_plus_completion():
    usage = normalize_usage({"prompt_tokens": 5, "completion_tokens": 7})
    assert usage is not None and usage.total_tokens == 12


@pytest.mark.parametrize(
    "bad",
    [
        {"prompt_tokens": "12", "completion_tokens": 1},
        {"prompt_tokens": -1, "completion_tokens": 1},
        {"prompt_tokens": True, "completion_tokens": 1},
        {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 11}},
        {"prompt_tokens": 10, "completion_tokens": 1, "completion_tokens_details": {"reasoning_tokens": 2}},
    ],
)
def test_invalid_provider_usage_is_a_bad_event(bad):
    with pytest.raises(BadEvent) as caught:
        normalize_usage(bad)
    assert caught.value.reason == "invalid_usage"


def test_no_usage_anywhere_is_none_not_zero_priced():
    usage = usage_of(usage=None, response=None, request=None, capture="usage")
    assert usage.source == "none" and usage.total_tokens == 0
