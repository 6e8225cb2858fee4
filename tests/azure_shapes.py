"""Test helpers that build Azure OpenAI responses in their real wire shapes (SSE streams and JSON bodies).

Shapes follow what Azure OpenAI sends through APIM: a first chunk with ``prompt_filter_results``,
empty ``choices`` and empty id/model; a role chunk; content chunks that each carry
``content_filter_results`` for hate/self_harm/sexual/violence; a finish chunk; the optional
``include_usage`` chunk (``choices: []`` and ``usage``); then ``data: [DONE]``. JSON is compact
with raw UTF-8, as Azure writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

CREATED = 1732000000
CHAT_ID = "chatcmpl-AWx9Qk3TmJ8c2s0YhB1fZr7pLd4Ne"
FINGERPRINT = "fp_04751d0b65"

SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER_SAFE = {"hate": SAFE, "self_harm": SAFE, "sexual": SAFE, "violence": SAFE}
PROMPT_FILTER_SAFE = {
    "hate": SAFE,
    "jailbreak": {"filtered": False, "detected": False},
    "self_harm": SAFE,
    "sexual": SAFE,
    "violence": SAFE,
}


def dumps(obj: Any) -> str:
    """Compact JSON with raw UTF-8, like Azure's SSE payloads."""
    return orjson.dumps(obj).decode()


def sse(payloads: Iterable[Any], *, newline: str = "\n", done: bool = True) -> str:
    """Serialise payloads (dicts, or pre-rendered strings) as ``data:`` events, then ``[DONE]``."""
    events = [f"data: {p if isinstance(p, str) else dumps(p)}" for p in payloads]
    if done:
        events.append("data: [DONE]")
    sep = newline + newline
    return sep.join(events) + sep


def usage_object(
    prompt: int,
    completion: int,
    *,
    cached: int = 0,
    reasoning: int = 0,
    cache_write: int | None = None,
    audio_prompt: int = 0,
    audio_completion: int = 0,
    image_prompt: int | None = None,
    text_details: bool = False,
) -> dict[str, Any]:
    """A Chat Completions usage object with the details Azure includes. ``cache_write`` (gpt-5.6 and
    later) and ``image_prompt`` are added only when given; ``text_details`` adds the ``text_tokens``
    that gpt-4o-audio-preview responses carry."""
    completion_details: dict[str, Any] = {
        "accepted_prediction_tokens": 0,
        "audio_tokens": audio_completion,
        "reasoning_tokens": reasoning,
        "rejected_prediction_tokens": 0,
    }
    prompt_details: dict[str, Any] = {"audio_tokens": audio_prompt, "cached_tokens": cached}
    if cache_write is not None:
        prompt_details["cache_write_tokens"] = cache_write
    if image_prompt is not None:
        prompt_details["image_tokens"] = image_prompt
    if text_details:
        completion_details["text_tokens"] = completion - audio_completion
        prompt_details["text_tokens"] = prompt - audio_prompt - (image_prompt or 0)
    return {
        "completion_tokens": completion,
        "completion_tokens_details": completion_details,
        "prompt_tokens": prompt,
        "prompt_tokens_details": prompt_details,
        "total_tokens": prompt + completion,
    }


def prompt_filter_chunk() -> dict[str, Any]:
    """Azure's first chunk: prompt filter results, empty choices, empty id and model."""
    return {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": PROMPT_FILTER_SAFE}],
    }


def chat_chunk(
    choices: list[dict[str, Any]],
    *,
    model: str = "gpt-4o-2024-11-20",
    chunk_id: str = CHAT_ID,
    with_usage_field: bool = False,
    service_tier: str | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with the given choices (and ``service_tier`` when given)."""
    chunk: dict[str, Any] = {
        "choices": choices,
        "created": CREATED,
        "id": chunk_id,
        "model": model,
        "object": "chat.completion.chunk",
        "system_fingerprint": FINGERPRINT,
    }
    if service_tier is not None:
        chunk["service_tier"] = service_tier
    if with_usage_field:
        chunk["usage"] = None  # OpenAI/Azure send "usage": null on every chunk when include_usage is on
    return chunk


def role_choice(index: int = 0) -> dict[str, Any]:
    return {
        "content_filter_results": {},
        "delta": {"content": "", "refusal": None, "role": "assistant"},
        "finish_reason": None,
        "index": index,
        "logprobs": None,
    }


def content_choice(text: str, index: int = 0) -> dict[str, Any]:
    return {
        "content_filter_results": CONTENT_FILTER_SAFE,
        "delta": {"content": text},
        "finish_reason": None,
        "index": index,
        "logprobs": None,
    }


def finish_choice(reason: str = "stop", index: int = 0) -> dict[str, Any]:
    return {"content_filter_results": {}, "delta": {}, "finish_reason": reason, "index": index, "logprobs": None}


def annotation_chunk(start: int, end: int, index: int = 0) -> dict[str, Any]:
    """Azure's asynchronous content-filter annotation chunk (no delta, empty id/model)."""
    return {
        "choices": [
            {
                "content_filter_offsets": {"check_offset": start, "start_offset": start, "end_offset": end},
                "content_filter_results": CONTENT_FILTER_SAFE,
                "finish_reason": None,
                "index": index,
            }
        ],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
    }


def chat_stream_payloads(
    pieces: Sequence[str] | Sequence[Sequence[str]],
    *,
    model: str = "gpt-4o-2024-11-20",
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = None,
    prompt_filter: bool = True,
    service_tier: str | None = None,
) -> list[dict[str, Any]]:
    """The payloads of an Azure chat stream. ``pieces`` is one list of deltas, or one per choice (n > 1).
    ``service_tier``: stamped on every model chunk, as the service does when it reports a tier."""
    per_choice: list[Sequence[str]] = (
        [pieces] if not pieces or isinstance(pieces[0], str) else list(pieces)  # type: ignore[list-item]
    )
    with_usage = usage is not None
    payloads: list[dict[str, Any]] = [prompt_filter_chunk()] if prompt_filter else []
    for i in range(len(per_choice)):
        payloads.append(chat_chunk([role_choice(i)], model=model, with_usage_field=with_usage, service_tier=service_tier))
    longest = max((len(p) for p in per_choice), default=0)
    for step in range(longest):  # interleave choices, as the service does for n > 1
        for i, choice_pieces in enumerate(per_choice):
            if step < len(choice_pieces):
                payloads.append(
                    chat_chunk([content_choice(choice_pieces[step], i)], model=model, with_usage_field=with_usage, service_tier=service_tier)
                )
    for i in range(len(per_choice)):
        payloads.append(chat_chunk([finish_choice(finish_reason, i)], model=model, with_usage_field=with_usage, service_tier=service_tier))
    if usage is not None:
        payloads.append(chat_chunk([], model=model, service_tier=service_tier) | {"usage": usage})
    return payloads


def chat_stream(pieces: Sequence[str] | Sequence[Sequence[str]], *, newline: str = "\n", **kwargs: Any) -> str:
    """A whole Azure chat completions SSE stream, ``[DONE]`` included."""
    return sse(chat_stream_payloads(pieces, **kwargs), newline=newline)


def obfuscation_pad(seed: int) -> str:
    """The random-looking ``obfuscation`` string that 2025–26 streams put on each event (it pads the
    event's length so that a token's size cannot be read off the wire); deterministic in ``seed``."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    state = seed * 2654435761 + 12345
    chars = []
    for _ in range(1 + seed * 7 % 16):
        state = (state * 1103515245 + 12345) % 2**31
        chars.append(alphabet[state % len(alphabet)])
    return "".join(chars)


def seed_order_stream(pieces: Sequence[str], *, model: str = "gpt-35-turbo", newline: str = "\n") -> str:
    """An Azure chat stream in the field order of the seed captures (2023–24: ``id, object, created,
    model, choices`` and, in a choice, ``index, finish_reason, delta, content_filter_results``),
    as ``shared/reference/seed-captures/chat_completion_stream.txt`` shows it."""

    def chunk(choices: list[Any], *, empty: bool = False) -> dict[str, Any]:
        return {"id": "" if empty else CHAT_ID, "object": "" if empty else "chat.completion.chunk",
                "created": 0 if empty else CREATED, "model": "" if empty else model, "choices": choices}

    first = chunk([], empty=True)
    first = {**{k: first[k] for k in ("id", "object", "created", "model")},
             "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": CONTENT_FILTER_SAFE}], "choices": []}
    payloads: list[dict[str, Any]] = [first]
    payloads.append(chunk([{"index": 0, "finish_reason": None, "delta": {"role": "assistant"}, "content_filter_results": {}}]))
    for piece in pieces:
        payloads.append(chunk([{"index": 0, "finish_reason": None, "delta": {"content": piece}, "content_filter_results": CONTENT_FILTER_SAFE}]))
    payloads.append(chunk([{"index": 0, "finish_reason": "stop", "delta": {}, "content_filter_results": {}}]))
    return sse(payloads, newline=newline)


def minimal_stream(pieces: Sequence[str], *, model: str = "gpt-4.1-mini-2025-04-14", newline: str = "\n") -> str:
    """A 2025–26 Azure chat stream of minimal chunks: the first model chunk carries id, model and
    object; every content chunk is only ``{"choices":[{"delta":{"content":…},"index":0}],"obfuscation":…}``."""
    payloads: list[dict[str, Any]] = [prompt_filter_chunk()]
    payloads.append({"choices": [{"delta": {"content": "", "role": "assistant"}, "index": 0}], "created": CREATED,
                     "id": CHAT_ID, "model": model, "obfuscation": obfuscation_pad(0), "object": "chat.completion.chunk"})
    for i, piece in enumerate(pieces, 1):
        payloads.append({"choices": [{"delta": {"content": piece}, "index": 0}], "obfuscation": obfuscation_pad(i)})
    payloads.append({"choices": [{"delta": {}, "finish_reason": "stop", "index": 0}], "obfuscation": obfuscation_pad(len(pieces) + 1)})
    return sse(payloads, newline=newline)


def openai_stream(pieces: Sequence[str], *, model: str = "gpt-4o-mini-2024-07-18", usage: dict[str, Any] | None = None,
                  newline: str = "\n") -> str:
    """A chat stream as api.openai.com sends it (2025–26 recordings): ``id, object, created, model,
    service_tier, system_fingerprint, choices, usage, obfuscation`` on every chunk, the
    ``include_usage`` chunk when ``usage`` is given."""

    def chunk(i: int, choices: list[Any], chunk_usage: Any = None) -> dict[str, Any]:
        return {"id": CHAT_ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                "service_tier": "default", "system_fingerprint": FINGERPRINT, "choices": choices,
                "usage": chunk_usage, "obfuscation": obfuscation_pad(i)}

    payloads = [chunk(0, [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}, "logprobs": None, "finish_reason": None}])]
    for i, piece in enumerate(pieces, 1):
        payloads.append(chunk(i, [{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]))
    payloads.append(chunk(len(pieces) + 1, [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
    if usage is not None:
        payloads.append(chunk(len(pieces) + 2, [], usage))
    return sse(payloads, newline=newline)


def tool_call_stream_payloads(
    calls: Sequence[tuple[str, str, Sequence[str]]], *, model: str = "gpt-4o-2024-11-20"
) -> list[dict[str, Any]]:
    """A stream where the model calls tools: ``calls`` is (call id, function name, argument pieces)."""
    payloads: list[dict[str, Any]] = [prompt_filter_chunk(), chat_chunk([role_choice()], model=model)]
    for tool_index, (call_id, name, arg_pieces) in enumerate(calls):
        first = {
            "function": {"arguments": "", "name": name},
            "id": call_id,
            "index": tool_index,
            "type": "function",
        }
        payloads.append(
            chat_chunk(
                [{"content_filter_results": {}, "delta": {"tool_calls": [first]}, "finish_reason": None, "index": 0, "logprobs": None}],
                model=model,
            )
        )
        for piece in arg_pieces:
            delta = {"tool_calls": [{"function": {"arguments": piece}, "index": tool_index}]}
            payloads.append(
                chat_chunk(
                    [{"content_filter_results": {}, "delta": delta, "finish_reason": None, "index": 0, "logprobs": None}],
                    model=model,
                )
            )
    payloads.append(chat_chunk([finish_choice("tool_calls")], model=model))
    return payloads


def function_call_stream_payloads(name: str, arg_pieces: Sequence[str], *, model: str = "gpt-35-turbo") -> list[dict[str, Any]]:
    """A legacy ``functions`` stream (``delta.function_call``), as gpt-35-turbo-0613 sends it."""
    payloads: list[dict[str, Any]] = [prompt_filter_chunk()]
    payloads.append(
        chat_chunk(
            [{"content_filter_results": {}, "delta": {"content": None, "function_call": {"arguments": "", "name": name}, "role": "assistant"}, "finish_reason": None, "index": 0}],
            model=model,
        )
    )
    for piece in arg_pieces:
        payloads.append(
            chat_chunk(
                [{"content_filter_results": {}, "delta": {"function_call": {"arguments": piece}}, "finish_reason": None, "index": 0}],
                model=model,
            )
        )
    payloads.append(chat_chunk([finish_choice("function_call")], model=model))
    return payloads


def refusal_stream_payloads(pieces: Sequence[str], *, model: str = "gpt-4o-2024-08-06") -> list[dict[str, Any]]:
    """A structured-outputs refusal: ``delta.refusal`` pieces instead of content."""
    payloads: list[dict[str, Any]] = [prompt_filter_chunk(), chat_chunk([role_choice()], model=model)]
    for piece in pieces:
        payloads.append(
            chat_chunk(
                [{"content_filter_results": CONTENT_FILTER_SAFE, "delta": {"refusal": piece}, "finish_reason": None, "index": 0, "logprobs": None}],
                model=model,
            )
        )
    payloads.append(chat_chunk([finish_choice("stop")], model=model))
    return payloads


def completions_stream(pieces: Sequence[str], *, model: str = "gpt-35-turbo-instruct", newline: str = "\n") -> str:
    """A legacy Completions stream (``text_completion`` chunks with ``choices[].text``)."""
    payloads: list[dict[str, Any]] = [prompt_filter_chunk()]
    for piece in pieces:
        payloads.append(
            {
                "choices": [
                    {"content_filter_results": CONTENT_FILTER_SAFE, "finish_reason": None, "index": 0, "logprobs": None, "text": piece}
                ],
                "created": CREATED,
                "id": "cmpl-AWxA1b2c3d4e5f6g7h8i9j0k",
                "model": model,
                "object": "text_completion",
                "usage": None,
            }
        )
    payloads.append(
        {
            "choices": [{"content_filter_results": {}, "finish_reason": "length", "index": 0, "logprobs": None, "text": ""}],
            "created": CREATED,
            "id": "cmpl-AWxA1b2c3d4e5f6g7h8i9j0k",
            "model": model,
            "object": "text_completion",
            "usage": None,
        }
    )
    return sse(payloads, newline=newline)


RESP_ID = "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
MSG_ID = "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b"


def _response_object(
    model: str, status: str, output: list[Any], usage: dict[str, Any] | None, service_tier: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": RESP_ID,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }
    if service_tier is not None:
        body["service_tier"] = service_tier
    return body


def responses_stream(
    pieces: Sequence[str],
    *,
    model: str = "gpt-4.1-mini-2025-04-14",
    usage: dict[str, Any] | None = None,
    function_call: tuple[str, str, Sequence[str]] | None = None,
    newline: str = "\n",
    completed: bool = True,
    status: str = "completed",
    service_tier: str | None = None,
    obfuscation: bool = False,
) -> str:
    """A Responses API stream with ``event:`` lines: created → deltas → done events → response.completed
    (``status="incomplete"``: ``response.incomplete``, as when ``max_output_tokens`` cut the answer).
    ``obfuscation``: delta events as 2025–26 services send them (``logprobs``, an ``obfuscation`` pad)."""
    text = "".join(pieces)
    events: list[tuple[str, dict[str, Any]]] = []
    seq = 0

    def add(kind: str, body: dict[str, Any]) -> None:
        nonlocal seq
        events.append((kind, {"type": kind, "sequence_number": seq, **body}))
        seq += 1

    add("response.created", {"response": _response_object(model, "in_progress", [], None)})
    add("response.in_progress", {"response": _response_object(model, "in_progress", [], None)})
    message_item = {"id": MSG_ID, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
    add("response.output_item.added", {"output_index": 0, "item": message_item})
    add(
        "response.content_part.added",
        {"item_id": MSG_ID, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "annotations": [], "text": ""}},
    )
    for piece in pieces:
        if obfuscation:  # the key order and fields of 2025–26 recordings
            events.append(("response.output_text.delta", {
                "type": "response.output_text.delta", "content_index": 0, "delta": piece, "item_id": MSG_ID, "logprobs": [],
                "obfuscation": obfuscation_pad(seq), "output_index": 0, "sequence_number": seq}))
            seq += 1
        else:
            add("response.output_text.delta", {"item_id": MSG_ID, "output_index": 0, "content_index": 0, "delta": piece})
    add("response.output_text.done", {"item_id": MSG_ID, "output_index": 0, "content_index": 0, "text": text})
    done_part = {"type": "output_text", "annotations": [], "text": text}
    add("response.content_part.done", {"item_id": MSG_ID, "output_index": 0, "content_index": 0, "part": done_part})
    done_item = {**message_item, "status": "completed", "content": [done_part]}
    add("response.output_item.done", {"output_index": 0, "item": done_item})
    output: list[Any] = [done_item]
    if function_call is not None:
        call_id, name, arg_pieces = function_call
        item = {"id": "fc_12345xyz", "type": "function_call", "status": "in_progress", "arguments": "", "call_id": call_id, "name": name}
        add("response.output_item.added", {"output_index": 1, "item": item})
        for piece in arg_pieces:
            add("response.function_call_arguments.delta", {"item_id": "fc_12345xyz", "output_index": 1, "delta": piece})
        arguments = "".join(arg_pieces)
        add("response.function_call_arguments.done", {"item_id": "fc_12345xyz", "output_index": 1, "arguments": arguments})
        done_call = {**item, "status": "completed", "arguments": arguments}
        add("response.output_item.done", {"output_index": 1, "item": done_call})
        output.append(done_call)
    if completed:
        add(f"response.{status}", {"response": _response_object(model, status, output, usage, service_tier)})
    sep = newline + newline
    return sep.join(f"event: {kind}{newline}data: {dumps(body)}" for kind, body in events) + sep


def responses_usage(
    input_tokens: int, output_tokens: int, *, cached: int = 0, reasoning: int = 0, cache_write: int | None = None
) -> dict[str, Any]:
    """A Responses API usage object (``cache_write_tokens`` only when given: gpt-5.6 and later)."""
    input_details: dict[str, Any] = {"cached_tokens": cached}
    if cache_write is not None:
        input_details["cache_write_tokens"] = cache_write
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": input_details,
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def chat_body(
    text: str, *, model: str = "gpt-4o-2024-11-20", usage: dict[str, Any] | None = None, service_tier: str | None = None
) -> str:
    """A non-streamed chat completion body (``usage`` and ``service_tier`` omitted when None)."""
    body: dict[str, Any] = {
        "choices": [
            {
                "content_filter_results": CONTENT_FILTER_SAFE,
                "finish_reason": "stop",
                "index": 0,
                "logprobs": None,
                "message": {"content": text, "refusal": None, "role": "assistant"},
            }
        ],
        "created": CREATED,
        "id": CHAT_ID,
        "model": model,
        "object": "chat.completion",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": PROMPT_FILTER_SAFE}],
        "system_fingerprint": FINGERPRINT,
    }
    if usage is not None:
        body["usage"] = usage
    if service_tier is not None:
        body["service_tier"] = service_tier
    return dumps(body)


def image_body(input_text: int, input_image: int, output: int, *, output_details: bool = False) -> str:
    """An images generations/edits body of gpt-image-1: base64 data and token usage by kind (text and
    image input; output tokens are image tokens — newer models split them in ``output_tokens_details``)."""
    usage: dict[str, Any] = {
        "input_tokens": input_text + input_image,
        "input_tokens_details": {"image_tokens": input_image, "text_tokens": input_text},
        "output_tokens": output,
        "total_tokens": input_text + input_image + output,
    }
    if output_details:
        usage["output_tokens_details"] = {"image_tokens": output, "text_tokens": 0}
    return dumps({
        "created": CREATED,
        "background": "opaque",
        "data": [{"b64_json": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="}],
        "output_format": "png",
        "quality": "medium",
        "size": "1024x1024",
        "usage": usage,
    })


def transcription_body(text: str, *, audio: int | None = None, prompt_text: int = 0, output: int = 0,
                       seconds: float | None = None) -> str:
    """An audio transcription body: gpt-4o-transcribe reports ``usage`` of ``type: "tokens"``
    (``input_token_details`` — singular "token" — with audio and text tokens), whisper ``type:
    "duration"`` (seconds of audio, billed per minute, not per token)."""
    if seconds is not None:
        usage: dict[str, Any] = {"type": "duration", "seconds": seconds}
    else:
        assert audio is not None
        usage = {
            "type": "tokens",
            "input_tokens": audio + prompt_text,
            "input_token_details": {"text_tokens": prompt_text, "audio_tokens": audio},
            "output_tokens": output,
            "total_tokens": audio + prompt_text + output,
        }
    return dumps({"text": text, "usage": usage})


def content_filter_error_body() -> str:
    """Azure's HTTP 400 body when the prompt trips the content filter."""
    return dumps(
        {
            "error": {
                "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
                "Please modify your prompt and retry.",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {
                        "hate": {"filtered": False, "severity": "safe"},
                        "jailbreak": {"filtered": False, "detected": False},
                        "self_harm": {"filtered": False, "severity": "safe"},
                        "sexual": {"filtered": False, "severity": "safe"},
                        "violence": {"filtered": True, "severity": "high"},
                    },
                },
            }
        }
    )


def sample_words(n: int) -> list[str]:
    """``n`` realistic token-sized deltas (words with leading spaces, punctuation, some non-ASCII)."""
    vocab = [" the", " quarterly", " cost", " of", " Azure", " OpenAI", " tokens", ",", " per", " business", " unit",
             " is", " allocated", " by", " usage", ".", " Über", " naïve", " 数据", " —", " \"quoted\"", "\n"]
    return [vocab[i % len(vocab)] for i in range(n)]
