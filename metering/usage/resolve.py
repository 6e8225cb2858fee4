"""Usage stage: the token counts of one request, and where they came from (``usage_source``).

Precedence: the provider's reported ``usage`` (attached by the policy, in a JSON body, in the final
``include_usage`` chunk of a stream, or in a Responses API ``response.completed``) always wins. Without
it, tokens are estimated offline with tiktoken (``metering.usage.tokens``) from the captured request and the
rebuilt response (``metering.usage.sse``), and ``usage_source`` says how complete the estimate is.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from metering.model import NO_USAGE, BadEvent, TokenUsage, UsageEvent
from metering.usage.sse import RebuiltStream, rebuild_body, rebuild_stream, reported_stream_usage
from metering.usage.units import (
    NO_TOOLS,
    duration_seconds,
    may_have_tools,
    reported_characters,
    speech_characters,
    tools_in_body,
    tools_in_stream,
)
from metering.usage.tokens import (
    AZURE_TERMINATOR_SINCE,
    OPENAI_TERMINATOR_FROM,
    OPENAI_TERMINATOR_STOP_FROM,
    OPENAI_TERMINATOR_UNTIL,
    TokenCount,
    count_chat_prompt,
    count_completion,
    forced_chat_function,
    forced_function,
    is_reasoning_model,
    json_schema_format,
    model_in_name,
    count_completions_prompt,
    count_embeddings_input,
    count_responses_input,
)


def _count(value: Any, name: str) -> int:
    """A token count as the provider sent it: a non-negative integer (``None`` means 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and value >= 0:
            return int(value)
        raise BadEvent("invalid_usage", f"usage field {name!r} is not an integer: {value!r}")
    if value < 0:
        raise BadEvent("invalid_usage", f"usage field {name!r} is negative: {value}")
    return value


def _detail(details: Any, details_key: str, name: str) -> int:
    """``details[name]`` of a details object (``None`` or not an object: 0) as a token count."""
    if not isinstance(details, dict):
        return 0
    value = details.get(name)
    if value is None:
        return 0
    if type(value) is int and value >= 0:  # the usual case, without building the field's name
        return value
    return _count(value, f"{details_key}.{name}")


def check_total(prompt: int, completion: int, total: int) -> None:
    """Raise ``BadEvent`` unless ``total == prompt + completion``: how Azure OpenAI reports every
    shape (chat, completions, Responses, images; embeddings have no completion tokens, so their
    total is the prompt). A total that disagrees with its parts is not usage anyone can bill."""
    if total != prompt + completion:
        raise BadEvent("invalid_usage", f"total_tokens {total:,} is not prompt + completion tokens "
                                        f"({prompt:,} + {completion:,})")


def _cached_detail(details: Any, details_key: str, name: str) -> int:
    """``<details_key>.cached_tokens_details.<name>``: cached audio or image tokens (Realtime shape)."""
    if not isinstance(details, dict) or not isinstance(details.get("cached_tokens_details"), dict):
        return 0
    return _count(details["cached_tokens_details"].get(name), f"{details_key}.cached_tokens_details.{name}")


def _has_detail(details: Any, name: str) -> bool:
    return isinstance(details, dict) and details.get(name) is not None


def _service_tier(value: Any) -> str | None:
    """The service tier a response reports (``default``, ``priority``, ``flex``…), lower-cased."""
    if isinstance(value, str) and value.strip() and len(value) <= 32:
        return value.strip().lower()
    return None


def normalize_usage(
    usage: Any,
    *,
    source: str = "reported",
    model: str | None = None,
    endpoint: str | None = None,
    service_tier: str | None = None,
) -> TokenUsage | None:
    """Map a provider usage object to ``TokenUsage``; ``None`` when it carries no token counts.

    Shapes (field names as Azure OpenAI returns them):

    - Chat Completions / Completions / Embeddings: ``prompt_tokens``, ``completion_tokens`` and
      ``prompt_tokens_details.{cached_tokens, cache_write_tokens, audio_tokens, image_tokens}``,
      ``completion_tokens_details.{reasoning_tokens, audio_tokens, image_tokens}``;
    - Responses (also ``response.completed`` / ``response.incomplete`` of a stream) and Realtime:
      ``input_tokens``, ``output_tokens`` and ``input_tokens_details.{cached_tokens,
      cache_write_tokens, audio_tokens, image_tokens, cached_tokens_details.{audio_tokens,
      image_tokens}}``, ``output_tokens_details.{reasoning_tokens, audio_tokens, image_tokens}``;
    - Images (gpt-image-1): ``input_tokens_details.{text_tokens, image_tokens}``; its
      ``output_tokens`` are image tokens unless ``output_tokens_details`` splits them;
    - Transcription ``type: "tokens"`` (gpt-4o-transcribe): ``input_token_details.{audio_tokens,
      text_tokens}``; ``type: "duration"`` (whisper, billed per hour of audio, not per token):
      its ``seconds`` as ``audio_seconds``, no tokens (``metering.usage.units``);
    - the policy's ``type: "characters"`` (a speech request's input length): ``input_characters``.

    Kinds are parts of their side: cached, cache-write, audio and image input tokens are part of
    the prompt; reasoning, audio and image output tokens part of the completion. Details that
    add up to more than their side are ``invalid_usage``.
    """
    if not isinstance(usage, dict):
        if usage is None:
            return None
        raise BadEvent("invalid_usage", f"usage is a {type(usage).__name__}, not an object")
    if "type" in usage:
        seconds = duration_seconds(usage)
        if seconds is not None:  # whisper: billed per hour of audio, no tokens
            return TokenUsage(source=source, model=model, audio_seconds=seconds, service_tier=service_tier)  # type: ignore[arg-type]
        characters = reported_characters(usage)
        if characters is not None:  # the policy's count of a speech request's input (usage capture mode)
            return TokenUsage(source=source, model=model, input_characters=characters, service_tier=service_tier)  # type: ignore[arg-type]
    if "input_tokens" in usage or "output_tokens" in usage:
        prompt = _count(usage.get("input_tokens"), "input_tokens")
        completion = _count(usage.get("output_tokens"), "output_tokens")
        # Realtime and transcription spell the details "input_token_details" / "output_token_details"
        inputs = "input_tokens_details" if isinstance(usage.get("input_tokens_details"), dict) else "input_token_details"
        outputs = "output_tokens_details" if isinstance(usage.get("output_tokens_details"), dict) else "output_token_details"
    elif "prompt_tokens" in usage or "completion_tokens" in usage or "total_tokens" in usage:
        prompt = _count(usage.get("prompt_tokens"), "prompt_tokens")
        completion = _count(usage.get("completion_tokens"), "completion_tokens")
        inputs, outputs = "prompt_tokens_details", "completion_tokens_details"
    else:
        return None
    input_details, output_details = usage.get(inputs), usage.get(outputs)
    cached = _detail(input_details, inputs, "cached_tokens")
    cache_write = _detail(input_details, inputs, "cache_write_tokens")
    audio_prompt = _detail(input_details, inputs, "audio_tokens")
    image_prompt = _detail(input_details, inputs, "image_tokens")
    cached_audio = _cached_detail(input_details, inputs, "audio_tokens")
    cached_image = _cached_detail(input_details, inputs, "image_tokens")
    reasoning = _detail(output_details, outputs, "reasoning_tokens")
    audio_completion = _detail(output_details, outputs, "audio_tokens")
    image_completion = _detail(output_details, outputs, "image_tokens")
    if endpoint == "images" and not _has_detail(output_details, "image_tokens") and not _has_detail(output_details, "text_tokens"):
        image_completion = completion  # gpt-image-1: every output token is an image token
    total = usage.get("total_tokens")
    total_tokens = _count(total, "total_tokens") if total is not None else prompt + completion
    check_total(prompt, completion, total_tokens)
    if cached > prompt:
        raise BadEvent("invalid_usage", f"cached_tokens {cached} exceed prompt tokens {prompt}")
    if reasoning > completion:
        raise BadEvent("invalid_usage", f"reasoning_tokens {reasoning} exceed completion tokens {completion}")
    if cached_audio > min(cached, audio_prompt) or cached_image > min(cached, image_prompt):
        raise BadEvent("invalid_usage", "cached audio or image tokens exceed the cached or the audio/image tokens")
    billed_input = cached + cache_write + (audio_prompt - cached_audio) + (image_prompt - cached_image)
    if billed_input > prompt:
        raise BadEvent("invalid_usage", f"cached, cache-write, audio and image input tokens ({billed_input}) "
                                        f"exceed prompt tokens {prompt}")
    if reasoning + audio_completion + image_completion > completion:
        raise BadEvent("invalid_usage", f"reasoning, audio and image output tokens exceed completion tokens {completion}")
    return TokenUsage(
        prompt_tokens=prompt,
        cached_tokens=cached,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        total_tokens=total_tokens,
        source=source,  # type: ignore[arg-type]
        model=model,
        cache_write_tokens=cache_write,
        audio_prompt_tokens=audio_prompt,
        image_prompt_tokens=image_prompt,
        cached_audio_tokens=cached_audio,
        cached_image_tokens=cached_image,
        audio_completion_tokens=audio_completion,
        image_completion_tokens=image_completion,
        service_tier=service_tier,
    )


def looks_like_sse(text: str) -> bool:
    """True when a captured response body is a Server-Sent Events stream rather than JSON."""
    head = text.lstrip()[:16]
    return head.startswith(("data:", "event:", ":", "id:", "retry:"))


def response_json(event: UsageEvent) -> dict[str, Any] | None:
    """The captured response body as a JSON object, or ``None`` when absent, a stream, or not JSON."""
    text = event.response
    if not text or looks_like_sse(text):
        return None
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def body_service_tier(body: dict[str, Any] | None) -> str | None:
    """The ``service_tier`` of a response body (Chat Completions top level; Responses' ``response``)."""
    if body is None:
        return None
    tier = _service_tier(body.get("service_tier"))
    if tier is None and isinstance(body.get("response"), dict):
        tier = _service_tier(body["response"].get("service_tier"))
    return tier


def reported_usage(event: UsageEvent) -> TokenUsage | None:
    """The provider's own usage for this request, from the event or its non-streaming body."""
    body = response_json(event)
    body_model = body.get("model") if body and isinstance(body.get("model"), str) else None
    tier = body_service_tier(body) or _service_tier(event.service_tier)
    if event.usage is not None:
        usage = normalize_usage(event.usage, model=body_model or event.model, endpoint=event.endpoint, service_tier=tier)
        if usage is not None:
            return usage
    if body is not None:
        # The Responses API nests its result under "response" in some captures (e.g. a saved
        # response.completed event); the top-level body is the common case.
        usage_obj = body.get("usage")
        if usage_obj is None and isinstance(body.get("response"), dict):
            usage_obj = body["response"].get("usage")
            body_model = body_model or (body["response"].get("model") if isinstance(body["response"].get("model"), str) else None)
        return normalize_usage(usage_obj, model=body_model or event.model, endpoint=event.endpoint, service_tier=tier)
    return None


def is_content_filter_rejection(status: int | None, body: dict[str, Any] | None) -> bool:
    """True for Azure's HTTP 400 ``content_filter`` error: the prompt was processed, so it is billable."""
    if status != 400 or body is None:
        return False
    error = body.get("error")
    if not isinstance(error, dict):
        return False
    inner = error.get("innererror")
    return error.get("code") == "content_filter" or (
        isinstance(inner, dict) and inner.get("code") == "ResponsibleAIPolicyViolation"
    )


def _request_object(request: Any) -> dict[str, Any] | None:
    """The captured request as a JSON object (it may arrive as JSON text), or ``None``."""
    if isinstance(request, (str, bytes)):
        try:
            request = orjson.loads(request)
        except orjson.JSONDecodeError:
            return None
    return request if isinstance(request, dict) else None


def _endpoint(event: UsageEvent, request: dict[str, Any] | None, response: RebuiltStream | None) -> str:
    """The API to count for: the decoder's classification, else (when it said ``other``) the
    response's or request's shape. Images and audio are never estimated."""
    if event.endpoint != "other":
        return event.endpoint
    if response is not None and response.kind != "unknown":
        return response.kind
    if request is not None:
        if "messages" in request:
            return "chat.completions"
        if "prompt" in request and "size" not in request:
            return "completions"
        if "input" in request:
            items = request["input"]
            dict_items = isinstance(items, list) and any(isinstance(i, dict) for i in items)
            return "responses" if dict_items or "instructions" in request else "embeddings"
    return event.endpoint


def _prompt_count(endpoint: str, request: dict[str, Any], model: str | None) -> TokenCount | None:
    """Estimated prompt tokens for a request of ``endpoint``; ``None`` for APIs we do not estimate."""
    if endpoint == "chat.completions":
        return count_chat_prompt(request, model)
    if endpoint == "completions":
        return count_completions_prompt(request.get("prompt"), model)
    if endpoint == "embeddings":
        return count_embeddings_input(request.get("input"), model)
    if endpoint == "responses":
        return count_responses_input(request, model)
    return None


def bills_terminator(backend_url: str | None, event_time: datetime | None, request: Any = None,
                     model: str | None = None) -> bool:
    """Whether the backend bills Azure's per-choice terminator token (``AZURE_TERMINATOR_TOKENS``):
    Azure OpenAI from ``AZURE_TERMINATOR_SINCE`` on; an unknown backend is Azure's, the backends this
    pipeline meters. OpenAI's own API (api.openai.com) did only between ``OPENAI_TERMINATOR_FROM`` and
    ``OPENAI_TERMINATOR_UNTIL``, for a request with a ``stop`` sequence only from
    ``OPENAI_TERMINATOR_STOP_FROM`` (before, its answers that ended by themselves are exact without
    it; an answer the stop sequence cut never writes it), and not for reasoning models (their
    o-series recordings of that window are exact without it)."""
    host = ""
    if backend_url:
        host = urlsplit(backend_url if "//" in backend_url else f"//{backend_url}").hostname or ""
    if host == "api.openai.com":
        stop = request.get("stop") if isinstance(request, dict) else None
        start = OPENAI_TERMINATOR_STOP_FROM if stop else OPENAI_TERMINATOR_FROM
        return (event_time is not None and start <= event_time < OPENAI_TERMINATOR_UNTIL
                and not is_reasoning_model(model))
    return event_time is None or event_time >= AZURE_TERMINATOR_SINCE


def is_billable(event: UsageEvent) -> bool:
    """Whether Azure bills this request: successes (and an unknown status) do; throttled (429),
    failed (5xx) and rejected (other 4xx) requests do not, except a 400 content-filter rejection,
    whose prompt was processed. The one rule for both the usage and the price stage."""
    status = event.status_code
    if status is None or 200 <= status < 300:
        return True
    if status != 400:
        return False
    body = response_json(event)
    if body is not None:
        return is_content_filter_rejection(status, body)
    return "content_filter" in (event.response or "")  # a cut or unparsable error body


def resolve_usage(event: UsageEvent, model_hint: str | None = None) -> TokenUsage:
    """Usage of one event: its tokens (``resolve_tokens``) and the units billed beyond them
    (``with_units``: speech characters, built-in tool calls and sessions)."""
    return with_units(event, resolve_tokens(event, model_hint))


#: APIs that have no built-in tools, so their responses are not scanned for tool items (four
#: substring searches over a 100 KB stream cost more than rebuilding it).
NO_BUILT_IN_TOOLS = frozenset({"chat.completions", "completions", "embeddings", "images", "audio"})


def with_units(event: UsageEvent, usage: TokenUsage) -> TokenUsage:
    """``usage`` with the units the request and response show (``metering.usage.units``): the
    characters of an attached speech request, the built-in tool calls and code interpreter sessions of
    an attached Responses body or stream (or Assistants run stream). Counted only when billable."""
    if not is_billable(event):
        return usage
    changes: dict[str, Any] = {}
    if event.endpoint == "audio" and not usage.input_characters and event.request is not None:
        characters = speech_characters(event.request)
        if characters is not None:
            changes["input_characters"] = characters
            if usage.source == "none":
                changes["source"] = "estimated"  # counted here, not reported by the provider
    text = event.response
    if event.endpoint not in NO_BUILT_IN_TOOLS and may_have_tools(text):
        assert text is not None
        found = tools_in_stream(text) if looks_like_sse(text) else tools_in_body(response_json(event))
        if found != NO_TOOLS:
            changes.update(web_search_calls=found.web_search_calls, file_search_calls=found.file_search_calls,
                           code_interpreter_sessions=found.code_interpreter_sessions)
    return replace(usage, **changes) if changes else usage


def resolve_tokens(event: UsageEvent, model_hint: str | None = None) -> TokenUsage:
    """Token usage for one event: reported when the provider said it, else estimated offline.

    Precedence: reported usage (policy-attached, JSON body, the stream's final usage chunk or
    ``response.completed``) → estimate. Estimation counts the prompt from the captured request
    (chat messages + tools, completions prompt, embeddings input, Responses ``instructions`` +
    ``input``) and the completion from the rebuilt stream or a body without usage:

    - both sides counted → ``estimated`` (also a 400 content-filter rejection or an embeddings
      request: they have no completion, so the prompt alone is the whole bill);
    - only one side (request-only capture, missing/unparseable response, a stream cut short,
      response without request) → ``partial``;
    - nothing countable, or a failed request (429, 5xx, other 4xx) with no reported usage → ``NO_USAGE``.

    Counting uses the response's model, else ``event.model``, else ``model_hint`` (the deployments
    table's model), else the request body's ``model`` when it names a known model (OpenAI-style and
    Azure v1 clients send it), else the model the deployment name spells (``contoso-gpt4o-prod`` →
    gpt-4o, ``model_in_name``), else the deployment name as is (the fallback encoding, noted). So a
    content-filter 400, whose error body names no model, on an unmapped deployment is still
    counted with its model's encoding whenever the request or the deployment name says which.
    Only ``BadEvent`` (invalid reported usage) is raised.
    """
    usage = reported_usage(event)
    if usage is not None:
        return usage
    text = event.response
    stream = None
    if text and looks_like_sse(text):
        carried = reported_stream_usage(text)  # read from the stream's ends when provably the rebuild's
        if carried is not None:
            usage = normalize_usage(carried.usage, model=carried.model or event.model, endpoint=event.endpoint,
                                    service_tier=carried.service_tier or _service_tier(event.service_tier))
            if usage is not None:
                return usage
        stream = rebuild_stream(text)
    if stream is not None and stream.usage is not None:
        usage = normalize_usage(stream.usage, model=stream.model or event.model, endpoint=event.endpoint,
                                service_tier=stream.service_tier or _service_tier(event.service_tier))
        if usage is not None:
            return usage

    if not is_billable(event):
        return NO_USAGE
    body = response_json(event) if stream is None else None
    content_filtered = is_content_filter_rejection(event.status_code, body)

    notes: list[str] = []
    response: RebuiltStream | None = stream
    if body is not None and not content_filtered:
        if "error" in body and "choices" not in body and "output" not in body:
            notes.append("response_is_error")
        elif isinstance(body.get("choices"), list) or isinstance(body.get("output"), list):
            response = rebuild_body(body)
        else:
            notes.append("response_not_understood")
    elif text and stream is None and body is None:
        notes.append("response_unparseable")
    elif not text and event.capture != "request":
        notes.append("response_missing")

    response_model = response.model if response is not None else None
    if response_model is None and body is not None and isinstance(body.get("model"), str) and body["model"]:
        response_model = body["model"]
    request = _request_object(event.request)
    if request is None and event.request is not None:
        notes.append("request_unparseable")
    endpoint = _endpoint(event, request, response)

    count_model = response_model or event.model
    if not count_model and model_hint:
        count_model = model_hint
        notes.append("model_from_deployment_mapping")
    requested = request.get("model") if request is not None else None
    if not count_model and isinstance(requested, str) and model_in_name(requested):
        count_model = model_in_name(requested)
        notes.append("model_from_request")
    if not count_model and event.deployment:
        count_model = model_in_name(event.deployment) or event.deployment
        notes.append("model_from_deployment_name")

    prompt: TokenCount | None = None
    if request is not None:
        prompt = _prompt_count(endpoint, request, count_model)
        if prompt is None:
            notes.append("endpoint_not_estimated")

    completion_tokens = 0
    completion_seen = False  # some completion was counted
    completion_whole = False  # ...and it is all of it
    if content_filtered:
        notes.append("content_filter_rejection")
        completion_whole = True
    elif endpoint == "embeddings":
        completion_whole = True  # embeddings have no completion
    elif response is not None and response.events + len(response.choices) > 0:
        tools_offered = request is not None and bool(request.get("tools") or request.get("functions"))
        forced = (forced_function if endpoint == "responses" else forced_chat_function)(request, count_model)
        completion = count_completion(response, count_model, tools_offered=tools_offered,
                                      structured=json_schema_format(request), forced_call=forced,
                                      azure=bills_terminator(event.backend_url, event.event_time, request,
                                                                             count_model))
        completion_tokens = completion.tokens
        notes.extend(completion.notes)
        notes.extend(response.notes)
        completion_seen = True
        completion_whole = response.complete and not response.truncated

    if prompt is None and not completion_seen:
        return NO_USAGE
    prompt_tokens = prompt.tokens if prompt is not None else 0
    if prompt is not None:
        notes[:0] = prompt.notes
    source = "estimated" if prompt is not None and completion_whole else "partial"
    tier = (stream.service_tier if stream is not None else body_service_tier(body)) or _service_tier(event.service_tier)
    return TokenUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        source=source,
        model=response_model or event.model,
        notes=tuple(dict.fromkeys(notes)),
        service_tier=tier,
    )
