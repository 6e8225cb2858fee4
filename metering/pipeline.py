"""The one path from bytes to rows: decode → usage → price → ``UsageRecord`` (pure, no I/O).

The Function, ``metering replay`` and the tests all call ``process_batch``; storage is ``db/``'s job.
Bad input never raises out of here: it becomes a ``Quarantined`` item with its bytes and a reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from metering.decode import decode_event
from metering.llm_logs import add_log_records, is_records_envelope
from metering.model import BadEvent, BatchOutcome, Quarantined, RawEvent, TokenUsage, UsageEvent, UsageRecord
from metering.pricing import RateCard, price, resolve_deployment
from metering.usage import resolve_usage

log = logging.getLogger(__name__)


def pricing_model(event: UsageEvent, usage: TokenUsage, mapped_model: str | None) -> str | None:
    """The model a request ran on: what the response said, else what the event or the deployments
    table says, else the deployment name (often, but not always, the model's name)."""
    return usage.model or event.model or mapped_model or event.deployment


def build_record(event: UsageEvent, card: RateCard) -> UsageRecord:
    """Usage and price for a decoded event, as the row to store."""
    mapped_model, deployment_type = resolve_deployment(event, card)
    usage = resolve_usage(event, model_hint=mapped_model)
    model = pricing_model(event, usage, mapped_model)
    cost = price(event, usage, model, deployment_type, card)
    return UsageRecord(
        request_id=event.request_id,
        event_time=event.event_time,
        subscription_id=event.subscription_id,
        subscription_name=event.subscription_name,
        product=event.product,
        user_id=event.user_id,
        api=event.api,
        operation=event.operation,
        gateway_service=event.gateway_service,
        gateway_region=event.gateway_region,
        backend_id=event.backend_id,
        backend_region=event.backend_region,
        deployment=event.deployment,
        model=model,
        api_version=event.api_version,
        endpoint=event.endpoint,
        is_streaming=event.is_streaming,
        status_code=event.status_code,
        prompt_tokens=usage.prompt_tokens,
        cached_tokens=usage.cached_tokens,
        completion_tokens=usage.completion_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        total_tokens=usage.total_tokens,
        usage_source=usage.source,
        deployment_type=cost.deployment_type,
        rate_id=cost.rate_id,
        input_cost=cost.input_cost,
        cached_input_cost=cost.cached_input_cost,
        output_cost=cost.output_cost,
        total_cost=cost.total_cost,
        currency=cost.currency,
        price_status=cost.price_status,
        truncated=event.truncated,
        source_partition=event.source_partition,
        source_sequence_number=event.source_sequence_number,
    )


def process_event(raw: RawEvent, card: RateCard) -> UsageRecord | Quarantined:
    """One message → a row, or a quarantine item that says why not."""
    try:
        event = decode_event(
            raw.body,
            source_partition=raw.source_partition,
            source_sequence_number=raw.source_sequence_number,
        )
        return build_record(event, card)
    except BadEvent as exc:
        return Quarantined(
            reason=exc.reason,
            detail=exc.detail,
            raw=raw.body,
            request_id=exc.request_id,
            source_partition=raw.source_partition,
            source_sequence_number=raw.source_sequence_number,
        )
    except Exception as exc:  # a bug must not lose the event: keep it for `metering quarantine retry`
        log.exception("unexpected error processing an event; quarantined as internal_error")
        return Quarantined(
            reason="internal_error",
            detail=f"{type(exc).__name__}: {exc}"[:2000],
            raw=raw.body,
            source_partition=raw.source_partition,
            source_sequence_number=raw.source_sequence_number,
        )


def process_batch(raws: Iterable[RawEvent], card: RateCard) -> BatchOutcome:
    """A batch of messages → rows and quarantine items; ``events_read`` counts every message."""
    outcome = BatchOutcome()
    for raw in raws:
        if is_records_envelope(raw.body):  # APIM diagnostic logs: LLM token usage by request id
            add_log_records(outcome, raw)
            continue
        outcome.events_read += 1
        result = process_event(raw, card)
        if isinstance(result, UsageRecord):
            outcome.records.append(result)
        else:
            outcome.quarantined.append(result)
    return outcome
