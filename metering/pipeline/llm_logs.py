"""APIM's built-in LLM logs: token usage of a request, from the gateway itself (pure, no I/O).

API Management can log the token usage of every language-model request, streamed or not, without
buffering the response (diagnostic category ``GatewayLlmLogs``, Log Analytics table
``ApiManagementGatewayLlmLog``). A diagnostic setting that streams to Event Hubs delivers resource
logs as one message per batch of records::

    {"records": [
        {"time": "2026-10-15T09:30:01.2345678Z", "resourceId": "/SUBSCRIPTIONS/…/SERVICE/APIM-CONTOSO-AI",
         "category": "GatewayLlmLogs", "operationName": "Microsoft.ApiManagement/GatewayLlmLogs",
         "correlationId": "6f1c2d3e-…",
         "properties": {"deploymentName": "gpt-4o", "modelName": "gpt-4o-2024-11-20",
                        "promptTokens": 1200, "completionTokens": 300, "totalTokens": 1500, …}},
        {"category": "GatewayLogs", …}
    ]}

Sources (see docs/consumer.md): the Azure Monitor table reference for ``ApiManagementGatewayLlmLog``
names the columns ``CorrelationId`` ("unique id corresponding with the same field in
ApiManagementGatewayLogs", i.e. APIM's ``context.RequestId``, our ``requestId``), ``DeploymentName``,
``ModelName``, ``PromptTokens``, ``CompletionTokens``, ``TotalTokens``, ``IsStreamCompletion``,
``RequestId`` (the *model's* response id, not APIM's), ``SequenceNumber`` (large prompts and
completions are split over several records), ``RequestMessages``/``ResponseMessages``; Azure
Monitor's resource-log schema puts ``time``, ``category``, ``correlationId`` and ``properties`` at
the top of each record when logs go to Event Hubs or storage, and warns that names there may differ
from the Log Analytics columns. So names are matched case-insensitively, at the top of the record or
inside ``properties``. ``PromptCachedTokens`` (reported in Event Hubs payloads, absent from the
table) and ``ReasoningTokens`` are read when present.

Each record of an envelope is one unit of ``events_read``: a ``GatewayLlmLogs`` record with token
counts becomes an ``LlmUsage`` (stored and merged by ``db/llm_usage.py``); a record of another
category, or an LLM record without token counts (a continuation piece of a split message), is
ignored; an LLM record that cannot be read is quarantined on its own, wrapped in a one-record
envelope so that ``metering quarantine retry`` reads it the same way.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import orjson

from metering.decode.event import UTF8_BOM, integer_text, parse_time
from metering.model import (
    UNIT_FIELDS, BadEvent, BatchOutcome, LlmUsage, Quarantined, RawEvent, TokenUsage, UsageRecord, usage_and_cost_columns,
)
from metering.price.pricing import RateCard, price_tokens
from metering.price.reprice import stored_billable
from metering.usage.resolve import check_total

LLM_CATEGORY = "gatewayllmlogs"
# Prompt and completion text never reach ``llm_usage.raw`` (usage rows carry no payloads either).
MESSAGE_FIELDS = frozenset({"requestmessages", "responsemessages"})
_ENVELOPE = re.compile(rb'\A\s*\{\s*"records"\s*:')



def is_records_envelope(body: bytes) -> bool:
    """True for a diagnostic-settings message (``{"records": [...]}``), told apart from a metering
    event by its first key without parsing the body."""
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM):]
    return _ENVELOPE.match(body[:256]) is not None


def _fields(record: dict[str, Any]) -> dict[str, Any]:
    """The record's fields by lower-case name: top level first, then ``properties``."""
    fields = {str(k).lower(): v for k, v in record.items()}
    properties = fields.get("properties")
    if isinstance(properties, dict):
        for key, value in properties.items():
            fields.setdefault(str(key).lower(), value)
    return fields


def _tokens(fields: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = fields.get(name)
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            raise BadEvent("invalid_usage", f"{name} must be a number, got a boolean")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and (number := integer_text(value)) is not None:
            value = number
        if not isinstance(value, int):
            raise BadEvent("invalid_usage", f"{name} must be a whole number, got {value!r:.40}")
        if value < 0:
            raise BadEvent("invalid_usage", f"{name} is negative: {value}")
        return value
    return None


def _text(fields: dict[str, Any], name: str, limit: int = 200) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    return str(value)[:limit]


def _without_messages(record: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in record.items() if str(k).lower() not in MESSAGE_FIELDS}
    for key, value in record.items():
        if str(key).lower() == "properties" and isinstance(value, dict):
            kept[key] = {k: v for k, v in value.items() if str(k).lower() not in MESSAGE_FIELDS}
    return kept


def is_llm_record(record: dict[str, Any]) -> bool:
    """A ``GatewayLlmLogs`` record (or, without a category, one that carries LLM token columns)."""
    fields = _fields(record)
    category = fields.get("category")
    if isinstance(category, str) and category:
        return category.lower() == LLM_CATEGORY
    return "correlationid" in fields and any(k in fields for k in ("prompttokens", "completiontokens", "totaltokens"))


def parse_llm_record(record: dict[str, Any], raw: RawEvent | None = None) -> LlmUsage | None:
    """One LLM-log record → ``LlmUsage``; ``None`` when it carries no token usage (all counts absent
    or zero: a continuation piece of a split prompt or completion). Raises ``BadEvent`` when unreadable."""
    fields = _fields(record)
    request_id = _text(fields, "correlationid", limit=10_000)
    if request_id is None or not request_id.strip():
        raise BadEvent("missing_field", "the LLM log record has no CorrelationId (APIM's request id)")
    request_id = request_id.strip()
    if len(request_id) > 200:
        raise BadEvent("invalid_field", "CorrelationId must be 1 to 200 characters")
    try:
        prompt = _tokens(fields, "prompttokens")
        completion = _tokens(fields, "completiontokens")
        total = _tokens(fields, "totaltokens")
        if not (prompt or completion or total):
            return None
        prompt = prompt or 0
        completion = completion or 0
        cached = _tokens(fields, "promptcachedtokens", "cachedtokens", "cachedprompttokens") or 0
        reasoning = _tokens(fields, "reasoningtokens", "completionreasoningtokens") or 0
        if cached > prompt:
            raise BadEvent("invalid_usage", f"cached tokens {cached} exceed prompt tokens {prompt}")
        if reasoning > completion:
            raise BadEvent("invalid_usage", f"reasoning tokens {reasoning} exceed completion tokens {completion}")
        if total is not None:
            check_total(prompt, completion, total)
        when = fields.get("time") or fields.get("timegenerated")
        event_time = parse_time(when, "time") if when is not None else (raw.enqueued_time if raw else None)
        return LlmUsage(
            request_id=request_id,
            event_time=event_time,
            deployment=_text(fields, "deploymentname"),
            model=_text(fields, "modelname"),
            prompt_tokens=prompt,
            cached_tokens=cached,
            completion_tokens=completion,
            reasoning_tokens=reasoning,
            total_tokens=total if total is not None else prompt + completion,
            raw=orjson.dumps(_without_messages(record)),
            source_partition=raw.source_partition if raw else None,
            source_sequence_number=raw.source_sequence_number if raw else None,
        )
    except BadEvent as exc:
        exc.request_id = exc.request_id or request_id
        raise


def _quarantine(raw: RawEvent, body: bytes, exc: BadEvent) -> Quarantined:
    return Quarantined(
        reason=exc.reason,
        detail=exc.detail,
        raw=body,
        request_id=exc.request_id,
        source_partition=raw.source_partition,
        source_sequence_number=raw.source_sequence_number,
    )


def add_log_records(outcome: BatchOutcome, raw: RawEvent) -> None:
    """Split a ``{"records": [...]}`` message into its units (see the module doc) and add them to
    ``outcome``. Never raises: an unreadable envelope is one quarantined unit."""
    from metering.decode.event import parse_json_object

    try:
        envelope = parse_json_object(raw.body)
        records = envelope.get("records")
        if not isinstance(records, list):
            raise BadEvent("invalid_field", f"records must be an array, got {type(records).__name__}")
    except BadEvent as exc:
        outcome.events_read += 1
        outcome.quarantined.append(_quarantine(raw, raw.body, exc))
        return
    if not records:
        outcome.events_read += 1  # an empty envelope is still a message that was read
        outcome.ignored += 1
        return
    for record in records:
        outcome.events_read += 1
        if not isinstance(record, dict) or not is_llm_record(record):
            outcome.ignored += 1  # GatewayLogs and other categories: the metering event has their facts
            continue
        try:
            usage = parse_llm_record(record, raw)
        except BadEvent as exc:
            body = raw.body if len(records) == 1 else orjson.dumps({"records": [record]})
            outcome.quarantined.append(_quarantine(raw, body, exc))
            continue
        except Exception as exc:  # a bug must not lose the record
            body = raw.body if len(records) == 1 else orjson.dumps({"records": [record]})
            outcome.quarantined.append(_quarantine(raw, body, BadEvent("internal_error", f"{type(exc).__name__}: {exc}"[:2000])))
            continue
        if usage is None:
            outcome.ignored += 1
        else:
            outcome.llm_usage.append(usage)


# --------------------------------------------------------------------------- merge


def reported_usage(llm: LlmUsage) -> TokenUsage:
    return TokenUsage(
        prompt_tokens=llm.prompt_tokens,
        cached_tokens=llm.cached_tokens,
        completion_tokens=llm.completion_tokens,
        reasoning_tokens=llm.reasoning_tokens,
        total_tokens=llm.total_tokens,
        source="reported",
        model=llm.model,
    )


# Plausibility of LLM-log usage next to what the row's own event showed (``implausible``).
# No Azure OpenAI model reads and writes more than ~1.05M tokens in one request (GPT-4.1's context
# window is 1,047,576 tokens); the ceiling leaves margin above it.
MAX_REQUEST_TOKENS = 1_100_000
# Reasoning tokens are hidden from the stream: a reasoning model may spend up to its maximum output
# (128,000 for the gpt-5 family, 100,000 for o-series) beyond the visible answer.
MAX_HIDDEN_REASONING_TOKENS = 128_000
# What a tiktoken estimate of a captured request cannot see exactly (tool-schema formatting, image
# detail defaults, per-message framing), on top of a factor of two either way.
ESTIMATE_SLACK = 1_024


def implausible(row: UsageRecord, llm: LlmUsage) -> str | None:
    """Why the LLM log's numbers cannot replace the row's (``None``: they may).

    The row's event is the evidence: a prompt it counted (``estimated``/``partial`` rows count the
    captured request) is the prompt within a factor of two, give or take ``ESTIMATE_SLACK``; the
    visible answer it counted is a *lower* bound of the completion, which hidden reasoning may exceed
    by up to ``MAX_HIDDEN_REASONING_TOKENS`` (a cut stream, ``partial``, bounds it from below only);
    and nothing exceeds ``MAX_REQUEST_TOKENS``. A row with no usage at all (``none``) is bounded by
    that ceiling alone. So a forged record can neither inflate a request beyond what it could have
    cost nor shrink it below what was seen."""
    if llm.prompt_tokens + llm.completion_tokens > MAX_REQUEST_TOKENS:
        return f"{llm.prompt_tokens + llm.completion_tokens:,} tokens exceed any model's context ({MAX_REQUEST_TOKENS:,})"
    counted_prompt, counted_completion = row.prompt_tokens, row.completion_tokens
    if row.usage_source in ("estimated", "partial") and counted_prompt > 0:
        low, high = counted_prompt // 2, 2 * counted_prompt + ESTIMATE_SLACK
        if not low <= llm.prompt_tokens <= high:
            return f"prompt tokens {llm.prompt_tokens:,} are not within {low:,} to {high:,} (the event counted {counted_prompt:,})"
    if row.usage_source in ("estimated", "partial") and counted_completion > 0:
        low = counted_completion // 2
        high = 2 * counted_completion + ESTIMATE_SLACK + MAX_HIDDEN_REASONING_TOKENS
        if llm.completion_tokens < low or (row.usage_source == "estimated" and llm.completion_tokens > high):
            return (f"completion tokens {llm.completion_tokens:,} do not fit the {counted_completion:,} the event's "
                    f"answer showed (plus hidden reasoning)")
    return None


def merge_usage(row: UsageRecord, llm: LlmUsage, card: RateCard) -> UsageRecord | None:
    """The row with the LLM log's reported tokens, repriced with the same pricing code as ingest and
    ``metering reprice`` (``price_tokens``);
    ``None`` when the row already has reported usage (the provider's own numbers are never replaced).

    The row keeps its model (the response's, the deployments mapping's or the deployment's: the
    LLM log's ``ModelName`` is not trusted to choose a price), its deployment type and billability
    (decided from the full event at ingest: status, content-filter body). Callers check
    ``implausible`` first.
    """
    if row.usage_source == "reported":
        return None
    # the log has no tier (the response had) and its model is not trusted to choose a price
    # ... and it counts tokens only: the units the event showed (tool calls, audio seconds) stay
    usage = replace(reported_usage(llm), model=row.model, service_tier=row.service_tier,
                    **{name: getattr(row, name) for name in UNIT_FIELDS})
    cost = price_tokens(
        billable=stored_billable(row),  # as `metering reprice` judges a stored row (a 400 keeps ingest's verdict)
        usage=usage,
        model=row.model,
        deployment_type=row.deployment_type,
        region=row.backend_region,
        at=row.event_time,
        card=card,
    )
    return replace(row, **usage_and_cost_columns(usage, cost))  # usage.source is "reported"
