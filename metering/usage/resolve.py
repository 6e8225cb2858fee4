"""Usage stage: the token counts of one request, and where they came from (``usage_source``).

Precedence: the provider's reported ``usage`` (attached by the policy, in a JSON body, in the final
``include_usage`` chunk of a stream, or in a Responses API ``response.completed``) always wins. Without
it, tokens are estimated offline with tiktoken (``metering.usage.tokens``) from the captured request and the
rebuilt response (``metering.usage.sse``), and ``usage_source`` says how complete the estimate is.
"""

from __future__ import annotations

from typing import Any

import orjson

from metering.model import NO_USAGE, BadEvent, TokenUsage, UsageEvent
from metering.usage.sse import RebuiltStream, rebuild_body, rebuild_stream
from metering.usage.tokens import (
    TokenCount,
    count_chat_prompt,
    count_completion,
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


def _detail(usage: dict[str, Any], details_key: str, name: str) -> int:
    details = usage.get(details_key)
    if not isinstance(details, dict):
        return 0
    return _count(details.get(name), f"{details_key}.{name}")


def normalize_usage(usage: Any, *, source: str = "reported", model: str | None = None) -> TokenUsage | None:
    """Map a provider usage object to ``TokenUsage``; ``None`` when it carries no token counts.

    Understands the Chat/Completions/Embeddings shape (``prompt_tokens``, ``completion_tokens``,
    ``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``) and the
    Responses/Images shape (``input_tokens``, ``output_tokens`` and their ``*_details``).
    """
    if not isinstance(usage, dict):
        if usage is None:
            return None
        raise BadEvent("invalid_usage", f"usage is a {type(usage).__name__}, not an object")
    if "input_tokens" in usage or "output_tokens" in usage:
        prompt = _count(usage.get("input_tokens"), "input_tokens")
        completion = _count(usage.get("output_tokens"), "output_tokens")
        cached = _detail(usage, "input_tokens_details", "cached_tokens")
        reasoning = _detail(usage, "output_tokens_details", "reasoning_tokens")
    elif "prompt_tokens" in usage or "completion_tokens" in usage or "total_tokens" in usage:
        prompt = _count(usage.get("prompt_tokens"), "prompt_tokens")
        completion = _count(usage.get("completion_tokens"), "completion_tokens")
        cached = _detail(usage, "prompt_tokens_details", "cached_tokens")
        reasoning = _detail(usage, "completion_tokens_details", "reasoning_tokens")
    else:
        return None
    total = usage.get("total_tokens")
    total_tokens = _count(total, "total_tokens") if total is not None else prompt + completion
    if cached > prompt:
        raise BadEvent("invalid_usage", f"cached_tokens {cached} exceed prompt tokens {prompt}")
    if reasoning > completion:
        raise BadEvent("invalid_usage", f"reasoning_tokens {reasoning} exceed completion tokens {completion}")
    return TokenUsage(
        prompt_tokens=prompt,
        cached_tokens=cached,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        total_tokens=total_tokens,
        source=source,  # type: ignore[arg-type]
        model=model,
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


def reported_usage(event: UsageEvent) -> TokenUsage | None:
    """The provider's own usage for this request, from the event or its non-streaming body."""
    body = response_json(event)
    body_model = body.get("model") if body and isinstance(body.get("model"), str) else None
    if event.usage is not None:
        usage = normalize_usage(event.usage, model=body_model or event.model)
        if usage is not None:
            return usage
    if body is not None:
        # The Responses API nests its result under "response" in some captures (e.g. a saved
        # response.completed event); the top-level body is the common case.
        usage_obj = body.get("usage")
        if usage_obj is None and isinstance(body.get("response"), dict):
            usage_obj = body["response"].get("usage")
        return normalize_usage(usage_obj, model=body_model or event.model)
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
    stream = rebuild_stream(text) if text and looks_like_sse(text) else None
    if stream is not None and stream.usage is not None:
        usage = normalize_usage(stream.usage, model=stream.model or event.model)
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
        completion = count_completion(response, count_model, tools_offered=tools_offered)
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
    return TokenUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        source=source,
        model=response_model or event.model,
        notes=tuple(dict.fromkeys(notes)),
    )
