"""The one path from bytes to rows: decode → usage → price → ``UsageRecord`` (pure, no I/O).

The Function, ``metering replay``, ``metering quarantine retry`` and the tests all call
``process_batch`` / ``process_event``; storage is ``db/``'s job. Bad input never raises out of here:
it becomes a ``Quarantined`` item with its bytes and a reason. ``PipelineSettings`` switch on
signature checks (``metering.signature``) and payload redaction in quarantine (``metering.redact``).

An ``aoai-usage/1`` event cut at APIM's 200 KB limit whose request id, time and subscription
survived becomes a row (``truncated = true``, the best usage available) *and* an audit item with its
bytes (reason ``truncated``), stored in ``quarantine`` as already resolved. It counts once, as a row:
``events read = rows inserted + duplicates + quarantined`` still holds.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace

from metering.decode.event import decode_event
from metering.sources.llm_logs import add_log_records, is_records_envelope
from metering.model import (
    BadEvent,
    BatchOutcome,
    PipelineSettings,
    Quarantined,
    RawEvent,
    TokenUsage,
    UsageEvent,
    UsageRecord,
    usage_and_cost_columns,
)
from metering.price.pricing import RateCard, price, resolve_deployment
from metering.decode.redact import redact_payloads
from metering.decode.signature import verify as verify_signature
from metering.usage.resolve import resolve_usage

log = logging.getLogger(__name__)

DEFAULT_SETTINGS = PipelineSettings()


def pricing_model(event: UsageEvent, usage: TokenUsage, mapped_model: str | None) -> str | None:
    """The model a request ran on: what the response said, else what the event or the deployments
    table says, else the deployment name (often, but not always, the model's name)."""
    return usage.model or event.model or mapped_model or event.deployment


# What a ``usage_records`` row can hold (db/schema.py; tests/test_record_limits.py keeps the two in
# step). A value beyond these is bad input: quarantined here, never a storage error that would fail
# the batch on every redelivery (a poison batch). Text is measured in UTF-16 code units, as SQL
# Server's NVARCHAR counts them (stricter than PostgreSQL's characters; SQLite does not check).
TEXT_LIMITS: dict[str, int] = {
    "request_id": 200, "subscription_id": 200, "subscription_name": 400, "product": 200, "user_id": 200,
    "api": 200, "operation": 200, "gateway_service": 200, "gateway_region": 100, "backend_id": 200,
    "backend_region": 100, "deployment": 200, "model": 200, "api_version": 64, "endpoint": 32,
    "usage_source": 16, "deployment_type": 32, "currency": 3, "price_status": 16, "source_partition": 64,
}
MAX_STATUS = 2**31 - 1  # INTEGER
MAX_TOKENS = 10**12  # no request has a trillion tokens; also keeps every cost far inside NUMERIC(28, 12)
MAX_SEQUENCE = 2**63 - 1  # BIGINT
TOKEN_FIELDS = ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "total_tokens")


def _utf16_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-16-le", "surrogatepass")) // 2


def check_record(record: UsageRecord) -> None:
    """Raise ``BadEvent`` when a value does not fit its ``usage_records`` column."""
    for name, limit in TEXT_LIMITS.items():
        value = getattr(record, name)
        if value is None:
            continue
        if _utf16_length(value) > limit:
            raise BadEvent("invalid_field", f"{name} is longer than {limit} characters", record.request_id[:200])
        if "\x00" in value:  # PostgreSQL text cannot hold NUL
            raise BadEvent("invalid_field", f"{name} contains a NUL character", record.request_id[:200])
    if record.status_code is not None and not -MAX_STATUS <= record.status_code <= MAX_STATUS:
        raise BadEvent("invalid_field", f"status {record.status_code} is out of range", record.request_id)
    for name in TOKEN_FIELDS:
        if not 0 <= getattr(record, name) <= MAX_TOKENS:
            raise BadEvent("invalid_usage", f"{name} {getattr(record, name)} is out of range (0 to {MAX_TOKENS:,})",
                           record.request_id)
    sequence = record.source_sequence_number
    if sequence is not None and not -MAX_SEQUENCE <= sequence <= MAX_SEQUENCE:
        raise BadEvent("invalid_field", f"source sequence number {sequence} is out of range", record.request_id)


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
        **usage_and_cost_columns(usage, cost),
        truncated=event.truncated,
        source_partition=event.source_partition,
        source_sequence_number=event.source_sequence_number,
    )


@dataclass(frozen=True, slots=True)
class EventResult:
    """What one message became: a row, a quarantine item saying why not, or both — a row salvaged
    from a truncated event plus its bytes kept for audit (``audit``)."""

    record: UsageRecord | None = None
    quarantined: Quarantined | None = None

    @property
    def audit(self) -> bool:
        """The quarantine item is an audit copy of an event that did become a row."""
        return self.record is not None and self.quarantined is not None


def oversized_item(raw: RawEvent, settings: PipelineSettings) -> Quarantined:
    """A message longer than the source's bound, kept as its first bytes and the digest of all of
    it: never decoded (a prefix could be salvaged into a row of a forged or hostile event)."""
    item = Quarantined(
        reason="oversized",
        detail=(f"message of {raw.oversized_bytes:,} bytes is longer than the replay bound (METERING_MAX_EVENT_BYTES; "
                f"APIM caps an event at 200 KB): its first {len(raw.body):,} bytes are kept, the rest was not read; "
                f"SHA-256 {raw.oversized_sha256}"),
        raw=raw.body,
        source_partition=raw.source_partition,
        source_sequence_number=raw.source_sequence_number,
        raw_sha256=raw.oversized_sha256,
    )
    return redacted(item) if settings.redact_payloads else item


def redacted(item: Quarantined) -> Quarantined:
    """``item`` with prompt and completion text removed from its bytes (``metering.redact``); it
    keeps the digest of the bytes as received, so that a redelivery is still recognised."""
    body, note = redact_payloads(item.raw)
    if not note:
        return item
    return replace(item, raw=body, detail=f"{item.detail} [{note}]"[:4000],
                   raw_sha256=item.raw_sha256 or hashlib.sha256(item.raw).hexdigest())


def _quarantine_item(
    raw: RawEvent, reason: str, detail: str, request_id: str | None, settings: PipelineSettings
) -> Quarantined:
    item = Quarantined(
        reason=reason,
        detail=detail[:4000],
        raw=raw.body,
        request_id=request_id,
        source_partition=raw.source_partition,
        source_sequence_number=raw.source_sequence_number,
    )
    return redacted(item) if settings.redact_payloads else item


def check_signature(raw: RawEvent, event: UsageEvent, settings: PipelineSettings) -> None:
    """Raise ``BadEvent`` unless the event is signed as ``settings`` require (docs/policies.md)."""
    keys = [k for k in (settings.signing_secret, settings.previous_signing_secret) if k]
    verdict, why = verify_signature(raw.body, keys)
    if verdict == "valid":
        return
    if verdict == "missing" and event.truncated:
        if not settings.require_signature:
            return
        # Cut at 200 KB, the signature went with the tail: truncated, not forged, but not verifiable.
        raise BadEvent(
            "truncated",
            "event cut short: its signature was lost with the tail, so it cannot be verified and is not "
            "counted while signatures are required (review it, then `metering quarantine retry --reason "
            "truncated` with METERING_REQUIRE_SIGNATURE=0)",
            event.request_id,
        )
    if verdict == "missing" and not settings.require_signature:
        return
    raise BadEvent("bad_signature", why, event.request_id)


def process_event(raw: RawEvent, card: RateCard, settings: PipelineSettings = DEFAULT_SETTINGS) -> EventResult:
    """One message → a row, or a quarantine item that says why not (or, when truncated, both)."""
    try:
        event = decode_event(
            raw.body,
            source_partition=raw.source_partition,
            source_sequence_number=raw.source_sequence_number,
        )
        if settings.signing:
            check_signature(raw, event, settings)
        record = build_record(event, card)
        check_record(record)
        if not event.truncated:
            return EventResult(record=record)
        detail = (f"event cut at {len(raw.body):,} bytes (APIM's 200 KB limit); stored from its header as a "
                  f"truncated row (usage {record.usage_source}); bytes kept for audit")
        return EventResult(record, _quarantine_item(raw, "truncated", detail, event.request_id, settings))
    except BadEvent as exc:
        return EventResult(quarantined=_quarantine_item(raw, exc.reason, exc.detail, exc.request_id, settings))
    except Exception as exc:  # a bug must not lose the event: keep it for `metering quarantine retry`
        log.exception("unexpected error processing an event; quarantined as internal_error")
        return EventResult(quarantined=_quarantine_item(
            raw, "internal_error", f"{type(exc).__name__}: {exc}"[:2000], None, settings))


def _quarantine_unstorable_llm_usage(outcome: BatchOutcome, first: int, raw: RawEvent) -> None:
    """LLM-log usage that would not fit ``llm_usage`` (tokens beyond ``MAX_TOKENS``, a NUL or an
    over-long id) is bad input: quarantined like a metering event, never a storage error."""
    kept = []
    for usage in outcome.llm_usage[first:]:
        problem = None
        for name in TOKEN_FIELDS:
            if not 0 <= getattr(usage, name) <= MAX_TOKENS:
                problem = ("invalid_usage", f"{name} {getattr(usage, name)} is out of range (0 to {MAX_TOKENS:,})")
        for name in ("request_id", "deployment", "model"):
            value = getattr(usage, name)
            if value is not None and (_utf16_length(value) > 200 or "\x00" in value):
                problem = ("invalid_field", f"LLM log {name} is longer than 200 characters or contains NUL")
        if problem is None:
            kept.append(usage)
            continue
        outcome.quarantined.append(Quarantined(
            reason=problem[0], detail=problem[1], raw=b'{"records":[' + usage.raw + b"]}",
            request_id=usage.request_id, source_partition=raw.source_partition,
            source_sequence_number=raw.source_sequence_number,
        ))
    outcome.llm_usage[first:] = kept


def process_batch(
    raws: Iterable[RawEvent], card: RateCard, settings: PipelineSettings = DEFAULT_SETTINGS
) -> BatchOutcome:
    """A batch of messages → rows and quarantine items; ``events_read`` counts every unit read.

    Every metering event becomes exactly one row or one quarantine item; a truncated event that
    became a row also leaves its bytes in ``audit`` (not counted). Every record of an APIM
    diagnostic-log envelope is one unit too (``llm_usage``, ``ignored`` or ``quarantined``), so
    ``events_read == len(records) + len(quarantined) + len(llm_usage) + ignored``.
    """
    outcome = BatchOutcome()
    for raw in raws:
        if raw.oversized_bytes is not None:  # only a prefix was read (metering/sources/bounds.py)
            outcome.events_read += 1
            outcome.quarantined.append(oversized_item(raw, settings))
            continue
        if is_records_envelope(raw.body):  # APIM diagnostic logs: LLM token usage by request id
            first, first_usage = len(outcome.quarantined), len(outcome.llm_usage)
            add_log_records(outcome, raw)
            _quarantine_unstorable_llm_usage(outcome, first_usage, raw)
            if settings.redact_payloads:
                outcome.quarantined[first:] = [redacted(q) for q in outcome.quarantined[first:]]
            continue
        outcome.events_read += 1
        result = process_event(raw, card, settings)
        if result.record is not None:
            outcome.records.append(result.record)
            if result.quarantined is not None:
                outcome.audit.append(result.quarantined)
        elif result.quarantined is not None:
            outcome.quarantined.append(result.quarantined)
    return outcome
