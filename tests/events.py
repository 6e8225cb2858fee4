"""Builders for realistic ``aoai-usage/1`` events and Azure OpenAI bodies, for tests."""

from __future__ import annotations

import copy
from typing import Any

import orjson

CONTENT_FILTER_OK = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


def chat_body(
    prompt_tokens: int = 33,
    completion_tokens: int = 45,
    *,
    model: str = "gpt-4o-2024-11-20",
    cached_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    content: str = "Hello! How can I help you today?",
) -> dict[str, Any]:
    """A non-streaming Azure chat completion body, as Azure returns it."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens, "audio_tokens": 0}
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return {
        "id": "chatcmpl-AZ1x2y3z",
        "object": "chat.completion",
        "created": 1761955200,
        "model": model,
        "system_fingerprint": "fp_b705f0c291",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": CONTENT_FILTER_OK}],
        "choices": [{
            "index": 0,
            "finish_reason": "stop",
            "logprobs": None,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "content_filter_results": CONTENT_FILTER_OK,
        }],
        "usage": usage,
    }


def v1_event(request_id: str = "6f1c2d3e-0000-4000-8000-000000000001", **overrides: Any) -> dict[str, Any]:
    """A complete ``aoai-usage/1`` event for a non-streaming gpt-4o chat completion."""
    event: dict[str, Any] = {
        "schema": "aoai-usage/1",
        "requestId": request_id,
        "time": "2026-10-15T09:30:00.1234567Z",
        "gateway": {"service": "apim-contoso-ai", "region": "West Europe"},
        "subscription": {"id": "sub-finance-analytics", "name": "Finance Analytics"},
        "product": "ai-standard",
        "api": "azure-openai",
        "operation": "ChatCompletions_Create",
        "user": {"id": "jane.doe", "email": "jane.doe@contoso.com"},
        "clientIp": "203.0.113.10",
        "attributes": {"x-cost-center": "CC-1042", "appid": "3f2a9c1e-app"},
        "backend": {"id": "aoai-swedencentral", "url": "https://aoai-sc.openai.azure.com/openai", "region": "Sweden Central"},
        "deployment": "gpt-4o",
        "apiVersion": "2024-10-21",
        "status": 200,
        "durationMs": 812,
        "stream": False,
        "capture": "usage",
        "model": "gpt-4o-2024-11-20",
        "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500},
        "request": None,
        "response": None,
    }
    for key, value in overrides.items():
        event[key] = value
    return copy.deepcopy(event)


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def jsonl(events: list[dict[str, Any] | bytes]) -> bytes:
    return b"".join((e if isinstance(e, bytes) else encode(e)) + b"\n" for e in events)
