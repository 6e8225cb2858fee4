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
from datetime import datetime, timezone
from decimal import Decimal
from operator import attrgetter

from metering.decode.event import decode_event
from metering.pipeline.llm_logs import add_log_records, is_records_envelope
from metering.model import (
    NO_USAGE,
    BadEvent,
    BatchOutcome,
    Cost,
    ConflictingDuplicate,
    PipelineSettings,
    Quarantined,
    RawEvent,
    TOKEN_KIND_FIELDS,
    UNIT_FIELDS,
    TokenUsage,
    UsageEvent,
    UsageRecord,
    usage_and_cost_columns,
)
from metering.price.pricing import ZERO, RateCard, price, price_tokens, resolve_alias, resolve_deployment
from metering.usage.batches import (
    BatchJob, BatchUsage, batch_deployment_type, batch_request_id, is_batch_call, read_batch_event,
)
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
    "service_tier": 32, "price_fallback": 200,
    "event_sha256": 64,
}
MAX_STATUS = 2**31 - 1  # INTEGER
MAX_RATE_ID = 2**31 - 1  # INTEGER
MAX_TOKENS = 10**12  # no request has a trillion tokens; also keeps every cost far inside NUMERIC(28, 12)
MAX_SEQUENCE = 2**63 - 1  # BIGINT
MAX_COST = Decimal(10) ** 16  # NUMERIC(28, 12): 16 digits before the point (exclusive)
MAX_AUDIO_SECONDS = Decimal(10) ** 15  # NUMERIC(18, 3)
TOKEN_FIELDS = ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "total_tokens")
# Whole counts a row holds: tokens and the units billed beyond them (each 0 to MAX_TOKENS).
COUNT_FIELDS = (*TOKEN_FIELDS, *TOKEN_KIND_FIELDS, *(name for name in UNIT_FIELDS if name != "audio_seconds"))
COST_FIELDS = ("input_cost", "cached_input_cost", "output_cost", "total_cost", "unit_cost")
_texts = attrgetter(*TEXT_LIMITS)
_text_limits = tuple(TEXT_LIMITS.values())
_counts = attrgetter(*COUNT_FIELDS)
_costs = attrgetter(*COST_FIELDS)


def _utf16_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-16-le", "surrogatepass")) // 2


def check_record(record: UsageRecord) -> None:
    """Raise ``BadEvent`` when a value does not fit its ``usage_records`` column: every bounded
    column is checked here (tests/storage/test_column_bounds.py derives them from db/schema.py), so
    storage never meets a value its column rejects. One pass per kind: rows are nearly always ASCII
    text well inside its limits, whole counts and small costs, and then this costs a few microseconds."""
    texts = _texts(record)
    joined = "".join(filter(None, texts))  # one test of every value for NUL and for plain ASCII
    plain = joined.isascii() and "\x00" not in joined
    for value, limit, name in zip(texts, _text_limits, TEXT_LIMITS):
        if value is None or (plain and len(value) <= limit):
            continue
        if _utf16_length(value) > limit:
            raise BadEvent("invalid_field", f"{name} is longer than {limit} characters", record.request_id[:200])
        if "\x00" in value:  # PostgreSQL text cannot hold NUL
            raise BadEvent("invalid_field", f"{name} contains a NUL character", record.request_id[:200])
    if record.status_code is not None and not -MAX_STATUS <= record.status_code <= MAX_STATUS:
        raise BadEvent("invalid_field", f"status_code {record.status_code} is out of range", record.request_id)
    counts = _counts(record)
    if min(counts) < 0 or max(counts) > MAX_TOKENS:
        for name, value in zip(COUNT_FIELDS, counts):
            if not 0 <= value <= MAX_TOKENS:
                raise BadEvent("invalid_usage", f"{name} {value} is out of range (0 to {MAX_TOKENS:,})", record.request_id)
    for name, cost in zip(COST_FIELDS, _costs(record)):
        if cost is not None and not abs(cost) < MAX_COST:
            raise BadEvent("invalid_usage", f"{name} {cost} does not fit NUMERIC(28, 12)", record.request_id)
    if not 0 <= record.audio_seconds < MAX_AUDIO_SECONDS:
        raise BadEvent("invalid_usage", f"audio_seconds {record.audio_seconds} does not fit NUMERIC(18, 3)",
                       record.request_id)
    if record.rate_id is not None and not 0 <= record.rate_id <= MAX_RATE_ID:
        raise BadEvent("invalid_field", f"rate_id {record.rate_id} is out of range", record.request_id)
    sequence = record.source_sequence_number
    if sequence is not None and not -MAX_SEQUENCE <= sequence <= MAX_SEQUENCE:
        raise BadEvent("invalid_field", f"source_sequence_number {sequence} is out of range", record.request_id)


def check_event_time(when: datetime, now: datetime, settings: PipelineSettings, request_id: str | None,
                     what: str = "time") -> None:
    """Raise ``BadEvent`` (``invalid_field``) for a time outside the accepted window around ``now``:
    a year-0001 or year-9999 row would be counted in no real month and break date arithmetic in
    every report. The window is wide (``METERING_MAX_EVENT_AGE_DAYS``, default ten years back, so
    old captures replay) and a day ahead (``METERING_MAX_EVENT_FUTURE_MINUTES``, a fast clock)."""
    try:
        earliest = now - settings.max_event_age
    except OverflowError:  # a window wider than the calendar
        earliest = datetime.min.replace(tzinfo=timezone.utc)
    try:
        latest = now + settings.max_event_skew
    except OverflowError:
        latest = datetime.max.replace(tzinfo=timezone.utc)
    if not earliest <= when <= latest:
        raise BadEvent(
            "invalid_field",
            f"{what} {when:%Y-%m-%dT%H:%M:%SZ} is outside the accepted window {earliest:%Y-%m-%d} to "
            f"{latest:%Y-%m-%dT%H:%MZ} (METERING_MAX_EVENT_AGE_DAYS, METERING_MAX_EVENT_FUTURE_MINUTES)",
            request_id,
        )


def build_record(event: UsageEvent, card: RateCard) -> UsageRecord:
    """Usage and price for a decoded event, as the row to store. A call that manages a Batch API
    job costs nothing itself (``not_billable``, no tokens): the job is metered once, apart
    (``build_batch_usage``)."""
    mapped_model, deployment_type = resolve_deployment(event, card)
    if is_batch_call(event):
        usage = NO_USAGE
        model = event.model or mapped_model
        cost = Cost("not_billable", deployment_type, input_cost=ZERO, cached_input_cost=ZERO, output_cost=ZERO,
                    total_cost=ZERO)
    else:
        usage = resolve_usage(event, model_hint=mapped_model)
        model = resolve_alias(pricing_model(event, usage, mapped_model), mapped_model, card)
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


def build_batch_usage(event: UsageEvent | None, batch: BatchUsage, card: RateCard) -> UsageRecord:
    """The one row of a finished Batch API job (``batch:<id>``), priced at the batch rates of its
    deployment; its subscription is the creating call's, filled in by storage (db/batches.py).
    ``event``: the gateway call that showed the finished job (``None``: an imported output file)."""
    if event is None:
        event = UsageEvent(request_id=batch_request_id(batch.batch_id), event_time=batch.finished_at)
    mapping = card.deployment_for(event.backend_id, batch.deployment)
    mapped_model = mapping.model if mapping else None
    deployment_type = batch_deployment_type(mapping.deployment_type if mapping else None)
    model = resolve_alias(batch.usage.model or mapped_model or batch.deployment, mapped_model, card)
    cost = price_tokens(billable=True, usage=batch.usage, model=model, deployment_type=deployment_type,
                        region=event.backend_region, at=batch.finished_at, card=card)
    return UsageRecord(
        request_id=batch_request_id(batch.batch_id), event_time=batch.finished_at, subscription_id=None,
        subscription_name=None, product=None, user_id=None, api=event.api, operation="batch",
        gateway_service=event.gateway_service, gateway_region=event.gateway_region, backend_id=event.backend_id,
        backend_region=event.backend_region, deployment=batch.deployment, model=model, api_version=event.api_version,
        endpoint=batch.endpoint, is_streaming=False, status_code=200, **usage_and_cost_columns(batch.usage, cost),
        truncated=False, source_partition=event.source_partition, source_sequence_number=event.source_sequence_number,
    )


@dataclass(frozen=True, slots=True)
class EventResult:
    """What one message became: a row, a quarantine item saying why not, or both — a row salvaged
    from a truncated event plus its bytes kept for audit (``audit``)."""

    record: UsageRecord | None = None
    quarantined: Quarantined | None = None
    batch_job: BatchJob | None = None  # a Batch API job this call created
    batch_usage: UsageRecord | None = None  # the usage row of a finished job this call showed

    @property
    def audit(self) -> bool:
        """The quarantine item is an audit copy of an event that did become a row."""
        return self.record is not None and self.quarantined is not None


def oversized_item(raw: RawEvent, settings: PipelineSettings) -> Quarantined:
    """A message longer than the source's bound, kept as its first bytes and the digest of all of
    it: never decoded (a prefix could be salvaged into a row of a forged or hostile event)."""
    item = Quarantined(
        reason="oversized",
        detail=(f"message of {raw.oversized_bytes:,} bytes is longer than the bound (METERING_MAX_EVENT_BYTES; "
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
    raw: RawEvent, reason: str, detail: str, request_id: str | None, settings: PipelineSettings,
    raw_sha256: str | None = None,
) -> Quarantined:
    """The quarantine item of these bytes; ``raw_sha256``: their digest when already known (an
    audit copy of an event that became a row has it as the row's ``event_sha256``)."""
    item = Quarantined(
        reason=reason,
        detail=detail[:4000],
        raw=raw.body,
        request_id=request_id,
        source_partition=raw.source_partition,
        source_sequence_number=raw.source_sequence_number,
        raw_sha256=raw_sha256,
    )
    return redacted(item) if settings.redact_payloads else item


def conflict_item(raw: RawEvent, conflict: ConflictingDuplicate, settings: PipelineSettings = DEFAULT_SETTINGS) -> Quarantined:
    """The quarantine item for a second, different event under a stored request id: its bytes and
    both digests. The first stored event stays counted (first wins); this one is not counted."""
    detail = (f"request id already stored from an event with SHA-256 {conflict.kept_sha256}; this event "
              f"(SHA-256 {conflict.new_sha256}) has the same request id but different content and was not "
              f"counted (the first stored wins): compare the two before trusting either")
    return _quarantine_item(raw, "conflicting_duplicate", detail, conflict.request_id, settings)


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


def process_event(raw: RawEvent, card: RateCard, settings: PipelineSettings = DEFAULT_SETTINGS,
                  now: datetime | None = None) -> EventResult:
    """One message → a row, or a quarantine item that says why not (or, when truncated, both).
    ``now``: the time of ingest, which the event's time must lie near (default: the clock)."""
    try:
        event = decode_event(
            raw.body,
            source_partition=raw.source_partition,
            source_sequence_number=raw.source_sequence_number,
        )
        if settings.signing:
            check_signature(raw, event, settings)
        check_event_time(event.event_time, now or datetime.now(timezone.utc), settings, event.request_id)
        record = build_record(event, card)
        check_record(record)
        record.event_sha256 = hashlib.sha256(raw.body).hexdigest()
        job = batch_row = None
        if is_batch_call(event):
            job, batch = read_batch_event(event)
            if batch is not None:
                batch_row = build_batch_usage(event, batch, card)
                check_record(batch_row)
        if event.lenient_payload:
            detail = ("the request payload is JSON that the gateway's parser (JSON.NET) accepts but JSON does not; "
                      f"stored from the header with the usage the gateway reported ({record.usage_source}); "
                      "bytes kept for audit")
            return EventResult(record, _quarantine_item(raw, "lenient_payload", detail, event.request_id, settings,
                                                             record.event_sha256))
        if not event.truncated:
            return EventResult(record=record, batch_job=job, batch_usage=batch_row)
        detail = (f"event cut at {len(raw.body):,} bytes (APIM's 200 KB limit); stored from its header as a "
                  f"truncated row (usage {record.usage_source}); bytes kept for audit")
        return EventResult(record, _quarantine_item(raw, "truncated", detail, event.request_id, settings,
                                                    record.event_sha256))
    except BadEvent as exc:
        return EventResult(quarantined=_quarantine_item(raw, exc.reason, exc.detail, exc.request_id, settings))
    except Exception as exc:  # a bug must not lose the event: keep it for `metering quarantine retry`
        log.exception("unexpected error processing an event; quarantined as internal_error")
        return EventResult(quarantined=_quarantine_item(
            raw, "internal_error", f"{type(exc).__name__}: {exc}"[:2000], None, settings))


def _quarantine_unstorable_llm_usage(outcome: BatchOutcome, first: int, raw: RawEvent, now: datetime,
                                     settings: PipelineSettings) -> None:
    """LLM-log usage that would not fit ``llm_usage`` (tokens beyond ``MAX_TOKENS``, a NUL or an
    over-long id, a time outside the accepted window) is bad input: quarantined like a metering
    event, never a storage error. The rest is marked trusted or not (``PipelineSettings.llm_logs_trusted``)."""
    kept = []
    for usage in outcome.llm_usage[first:]:
        problem = None
        if usage.event_time is not None:
            try:
                check_event_time(usage.event_time, now, settings, usage.request_id, "LLM log time")
            except BadEvent as exc:
                problem = (exc.reason, exc.detail)
        for name in TOKEN_FIELDS:
            if not 0 <= getattr(usage, name) <= MAX_TOKENS:
                problem = ("invalid_usage", f"{name} {getattr(usage, name)} is out of range (0 to {MAX_TOKENS:,})")
        for name in ("request_id", "deployment", "model"):
            value = getattr(usage, name)
            if value is not None and (_utf16_length(value) > 200 or "\x00" in value):
                problem = ("invalid_field", f"LLM log {name} is longer than 200 characters or contains NUL")
        if problem is None:
            kept.append(usage if settings.llm_logs_trusted else replace(usage, trusted=False))
            continue
        outcome.quarantined.append(Quarantined(
            reason=problem[0], detail=problem[1], raw=b'{"records":[' + usage.raw + b"]}",
            request_id=usage.request_id, source_partition=raw.source_partition,
            source_sequence_number=raw.source_sequence_number,
        ))
    outcome.llm_usage[first:] = kept


def process_batch(
    raws: Iterable[RawEvent], card: RateCard, settings: PipelineSettings = DEFAULT_SETTINGS,
    now: datetime | None = None,
) -> BatchOutcome:
    """A batch of messages → rows and quarantine items; ``events_read`` counts every unit read.

    Every metering event becomes exactly one row or one quarantine item; a truncated event that
    became a row also leaves its bytes in ``audit`` (not counted). Every record of an APIM
    diagnostic-log envelope is one unit too (``llm_usage``, ``ignored`` or ``quarantined``), so
    ``events_read == len(records) + len(quarantined) + len(llm_usage) + ignored``.
    """
    outcome = BatchOutcome()
    now = now or datetime.now(timezone.utc)
    for raw in raws:
        if raw.oversized_bytes is not None:  # only a prefix was read (metering/sources/bounds.py)
            outcome.events_read += 1
            outcome.quarantined.append(oversized_item(raw, settings))
            continue
        if is_records_envelope(raw.body):  # APIM diagnostic logs: LLM token usage by request id
            first, first_usage = len(outcome.quarantined), len(outcome.llm_usage)
            add_log_records(outcome, raw)
            _quarantine_unstorable_llm_usage(outcome, first_usage, raw, now, settings)
            if settings.redact_payloads:
                outcome.quarantined[first:] = [redacted(q) for q in outcome.quarantined[first:]]
            continue
        outcome.events_read += 1
        result = process_event(raw, card, settings, now)
        if result.batch_job is not None:
            outcome.batch_jobs.append(result.batch_job)
        if result.batch_usage is not None:
            outcome.batch_usage.append(result.batch_usage)
        if result.record is not None:
            outcome.records.append(result.record)
            outcome.sources[result.record.event_sha256 or ""] = raw
            if result.quarantined is not None:
                outcome.audit.append(result.quarantined)
        elif result.quarantined is not None:
            outcome.quarantined.append(result.quarantined)
    return outcome
