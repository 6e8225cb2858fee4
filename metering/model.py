"""Typed values that flow through the pipeline: bytes → UsageEvent → TokenUsage → Pricing → UsageRecord.

Every stage is a pure function over these dataclasses; only ``db/`` turns them into SQL rows.
Money is ``Decimal``, time is timezone-aware UTC, tokens are ``int``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any, Literal

SCHEMA_V1 = "aoai-usage/1"
# The event-time window (``PipelineSettings``): ten years back, so that old captures replay; a day
# ahead, for a gateway whose clock runs fast. Both are settings (metering/settings.py).
DEFAULT_MAX_EVENT_AGE_DAYS = 3660
DEFAULT_MAX_EVENT_SKEW_MINUTES = 1440

Endpoint = Literal["chat.completions", "completions", "embeddings", "responses", "images", "audio", "other"]
UsageSource = Literal["reported", "estimated", "partial", "none"]
# "no_usage" extends DESIGN.md's three values: a billable request whose tokens are unknown (a stream
# captured without usage or request) is neither priced nor rate-less; it waits for usage (or repricing).
PriceStatus = Literal["priced", "no_rate", "not_billable", "no_usage"]
DeploymentType = Literal["global", "datazone", "regional", "global-batch", "datazone-batch", "provisioned"]

ENDPOINTS: tuple[str, ...] = ("chat.completions", "completions", "embeddings", "responses", "images", "audio", "other")
USAGE_SOURCES: tuple[str, ...] = ("reported", "estimated", "partial", "none")
PRICE_STATUSES: tuple[str, ...] = ("priced", "no_rate", "not_billable", "no_usage")
DEPLOYMENT_TYPES: tuple[str, ...] = ("global", "datazone", "regional", "global-batch", "datazone-batch", "provisioned")
DEFAULT_DEPLOYMENT_TYPE = "global"
# What a report can group by (``metering report --by``); ``db.queries`` maps each to SQL.
REPORT_DIMENSIONS = (
    "month", "day", "business_unit", "cost_center", "subscription", "product", "user", "api", "deployment",
    "model", "deployment_type", "endpoint", "backend_region",
)


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One message as it arrived: its body bytes and where it came from (for audit and replay)."""

    body: bytes
    source_partition: str | None = None
    source_sequence_number: int | None = None
    enqueued_time: datetime | None = None
    # Set when the message was longer than the source's bound (metering/sources/bounds.py): its size
    # in bytes and the SHA-256 (hex) of all of it; ``body`` then holds only its first bytes, and the
    # pipeline quarantines it as ``oversized`` without decoding.
    oversized_bytes: int | None = None
    oversized_sha256: str | None = None


@dataclass(slots=True)
class UsageEvent:
    """A decoded metering event (``aoai-usage/1`` or the earlier community format), before usage and price."""

    request_id: str
    event_time: datetime
    subscription_id: str | None = None
    subscription_name: str | None = None
    product: str | None = None
    api: str | None = None
    operation: str | None = None
    user_id: str | None = None
    user_email: str | None = None
    client_ip: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    gateway_service: str | None = None
    gateway_region: str | None = None
    backend_id: str | None = None
    backend_url: str | None = None
    backend_region: str | None = None
    deployment: str | None = None
    api_version: str | None = None
    status_code: int | None = None
    duration_ms: int | None = None
    is_streaming: bool = False
    capture: str | None = None
    model: str | None = None
    service_tier: str | None = None  # ``serviceTier``: the response's tier, when the policy saw it
    endpoint: str = "other"
    usage: dict[str, Any] | None = None
    request: Any = None
    response: str | None = None
    truncated: bool = False
    lenient_payload: bool = False  # request payload not strict JSON: header read alone (decode/event.py)
    schema: str = SCHEMA_V1
    source_partition: str | None = None
    source_sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of one request and where they came from.

    ``prompt_tokens`` includes ``cached_tokens``, ``cache_write_tokens``, ``audio_prompt_tokens``
    and ``image_prompt_tokens``; ``cached_tokens`` includes ``cached_audio_tokens`` and
    ``cached_image_tokens`` (which are also part of the audio and image prompt tokens);
    ``completion_tokens`` includes ``reasoning_tokens``, ``audio_completion_tokens`` and
    ``image_completion_tokens``. Whatever is not audio or image is text.
    """

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    source: UsageSource = "none"
    model: str | None = None  # model named by the provider's response, when it said one
    notes: tuple[str, ...] = ()  # estimation caveats, e.g. "image_tokens_defaulted"
    cache_write_tokens: int = 0
    audio_prompt_tokens: int = 0
    image_prompt_tokens: int = 0
    cached_audio_tokens: int = 0
    cached_image_tokens: int = 0
    audio_completion_tokens: int = 0
    image_completion_tokens: int = 0
    service_tier: str | None = None  # as the response reports it ("default", "priority", "flex", ...)
    # Units Azure bills beyond tokens (``UNIT_FIELDS``): seconds of audio transcribed (whisper's
    # ``usage.type = duration``), characters of speech input (tts), Responses API built-in tool calls
    # and code interpreter sessions (containers) of the request.
    audio_seconds: Decimal = Decimal(0)
    input_characters: int = 0
    web_search_calls: int = 0
    file_search_calls: int = 0
    code_interpreter_sessions: int = 0

    @property
    def has_units(self) -> bool:
        return any(_unit_values(self))


NO_USAGE = TokenUsage()


@dataclass(frozen=True, slots=True)
class Rate:
    """One row of the rate card: prices per 1,000,000 tokens, valid for ``effective_from <= t < effective_to``.

    ``min_prompt_tokens`` marks a long-context tier: the row applies only to requests whose prompt
    has at least that many tokens, and then prices the whole request (``None``: the base tier).
    """

    model: str
    deployment_type: str
    region: str | None
    effective_from: datetime
    effective_to: datetime | None
    currency: str
    input_per_1m: Decimal
    cached_input_per_1m: Decimal | None
    output_per_1m: Decimal
    id: int | None = None
    min_prompt_tokens: int | None = None
    service_tier: str | None = None  # None: the default tier
    cache_write_per_1m: Decimal | None = None
    audio_input_per_1m: Decimal | None = None
    cached_audio_input_per_1m: Decimal | None = None
    audio_output_per_1m: Decimal | None = None
    image_input_per_1m: Decimal | None = None
    cached_image_input_per_1m: Decimal | None = None
    image_output_per_1m: Decimal | None = None
    # Prices of the units Azure bills beyond tokens (``UNIT_RATE_COLUMNS``), each per its own unit.
    audio_per_hour: Decimal | None = None
    characters_per_1m: Decimal | None = None
    web_search_per_1k: Decimal | None = None
    file_search_per_1k: Decimal | None = None
    code_interpreter_per_session: Decimal | None = None


@dataclass(frozen=True, slots=True)
class DeploymentMapping:
    """What a deployment name means: its model and Azure deployment type, optionally for one backend only."""

    deployment: str
    model: str | None
    deployment_type: str
    backend_id: str | None = None


@dataclass(frozen=True, slots=True)
class Cost:
    """The price of one request. Costs are ``None`` when unknown (``no_rate``), never a silent zero.

    ``input_cost`` covers every uncached input kind (text, cache writes, audio, image),
    ``cached_input_cost`` every cached kind, ``output_cost`` every output kind. ``price_fallback``
    names the token kinds the rate row had no price for, priced by the documented fallback
    (``metering.price.pricing.FALLBACKS``), comma-separated; ``None`` when there were none.
    """

    price_status: PriceStatus
    deployment_type: str
    rate_id: int | None = None
    currency: str | None = None
    input_cost: Decimal | None = None
    cached_input_cost: Decimal | None = None
    output_cost: Decimal | None = None
    total_cost: Decimal | None = None
    price_fallback: str | None = None
    unit_cost: Decimal | None = None  # the units beyond tokens (part of total_cost); None: the request has none


@dataclass(slots=True)
class UsageRecord:
    """One row of ``usage_records``: a priced request with no prompt or completion text."""

    request_id: str
    event_time: datetime
    subscription_id: str | None
    subscription_name: str | None
    product: str | None
    user_id: str | None
    api: str | None
    operation: str | None
    gateway_service: str | None
    gateway_region: str | None
    backend_id: str | None
    backend_region: str | None
    deployment: str | None
    model: str | None
    api_version: str | None
    endpoint: str
    is_streaming: bool
    status_code: int | None
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    usage_source: str
    deployment_type: str
    rate_id: int | None
    input_cost: Decimal | None
    cached_input_cost: Decimal | None
    output_cost: Decimal | None
    total_cost: Decimal | None
    currency: str | None
    price_status: str
    truncated: bool
    source_partition: str | None
    source_sequence_number: int | None
    # SHA-256 (hex) of the event's bytes as received: a redelivery has the same, a different event
    # under the same request id (a conflicting duplicate) does not. ``None`` on rows stored before 0007.
    event_sha256: str | None = None
    cache_write_tokens: int = 0
    audio_prompt_tokens: int = 0
    image_prompt_tokens: int = 0
    cached_audio_tokens: int = 0
    cached_image_tokens: int = 0
    audio_completion_tokens: int = 0
    image_completion_tokens: int = 0
    service_tier: str | None = None
    price_fallback: str | None = None
    audio_seconds: Decimal = Decimal(0)
    input_characters: int = 0
    web_search_calls: int = 0
    file_search_calls: int = 0
    code_interpreter_sessions: int = 0
    unit_cost: Decimal | None = None


# The token kinds Azure bills apart, beyond prompt/cached/completion/reasoning (usage_records columns).
TOKEN_KIND_FIELDS: tuple[str, ...] = (
    "cache_write_tokens", "audio_prompt_tokens", "image_prompt_tokens", "cached_audio_tokens",
    "cached_image_tokens", "audio_completion_tokens", "image_completion_tokens",
)


# The units Azure bills beyond tokens (usage_records columns, migration 0012), and the rate card
# column that prices each with how many units its price is for (metering.price.pricing.unit_costs).
UNIT_FIELDS: tuple[str, ...] = (
    "audio_seconds", "input_characters", "web_search_calls", "file_search_calls", "code_interpreter_sessions",
)
_unit_values = attrgetter(*UNIT_FIELDS)
UNIT_RATE_COLUMNS: dict[str, tuple[str, Decimal]] = {
    "audio_seconds": ("audio_per_hour", Decimal(3600)),
    "input_characters": ("characters_per_1m", Decimal(1_000_000)),
    "web_search_calls": ("web_search_per_1k", Decimal(1000)),
    "file_search_calls": ("file_search_per_1k", Decimal(1000)),
    "code_interpreter_sessions": ("code_interpreter_per_session", Decimal(1)),
}


def usage_and_cost_columns(usage: TokenUsage, cost: Cost) -> dict[str, Any]:
    """The ``usage_records`` columns that tokens and their price decide (ingest and LLM-log merge)."""
    columns = {
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "completion_tokens": usage.completion_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "total_tokens": usage.total_tokens,
        "unit_cost": cost.unit_cost,
        "service_tier": usage.service_tier,
        "usage_source": usage.source,
        "deployment_type": cost.deployment_type,
        "rate_id": cost.rate_id,
        "input_cost": cost.input_cost,
        "cached_input_cost": cost.cached_input_cost,
        "output_cost": cost.output_cost,
        "total_cost": cost.total_cost,
        "currency": cost.currency,
        "price_status": cost.price_status,
        "price_fallback": cost.price_fallback,
    }
    columns.update(zip(_KIND_AND_UNIT_FIELDS, _kind_and_unit_values(usage)))
    return columns


_KIND_AND_UNIT_FIELDS = (*TOKEN_KIND_FIELDS, *UNIT_FIELDS)
_kind_and_unit_values = attrgetter(*_KIND_AND_UNIT_FIELDS)


@dataclass(frozen=True, slots=True)
class LlmUsage:
    """Token usage of one request from APIM's LLM log, keyed by APIM's request id (``CorrelationId``).

    ``prompt_tokens`` includes ``cached_tokens``; ``completion_tokens`` includes ``reasoning_tokens``.
    ``raw`` is the record as JSON without its prompt and completion messages.
    """

    request_id: str
    event_time: datetime | None
    deployment: str | None
    model: str | None
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    raw: bytes
    source_partition: str | None = None
    source_sequence_number: int | None = None
    # False: read while signatures are on, from a route not declared trusted (METERING_TRUST_LLM_LOGS):
    # kept for audit as ``unsigned`` and never applied to a row.
    trusted: bool = True


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An event the pipeline could not turn into a row (or kept for audit), with its original bytes."""

    reason: str
    detail: str
    raw: bytes
    request_id: str | None = None
    source_partition: str | None = None
    source_sequence_number: int | None = None
    # SHA-256 (hex) of the bytes as received, when ``raw`` is a redacted copy of them: a redelivered
    # event is recognised by its original bytes. ``None``: the digest of ``raw``.
    raw_sha256: str | None = None


@dataclass(slots=True)
class BatchOutcome:
    """What the pure pipeline made of a batch: rows to store and events to quarantine.

    ``audit`` holds the raw bytes of events that *did* become rows but are kept for audit (an event
    truncated at APIM's 200 KB limit); they are stored in ``quarantine`` as already resolved and are
    not counted: such an event is one of ``records``, not one of ``quarantined``.
    """

    records: list[UsageRecord] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    events_read: int = 0
    # APIM diagnostic logs (``{"records": [...]}``, metering/llm_logs.py): each record is one unit of
    # ``events_read`` and lands in ``llm_usage`` (GatewayLlmLogs token usage), ``ignored`` (other
    # categories, records without tokens) or ``quarantined``.
    llm_usage: list[LlmUsage] = field(default_factory=list)
    ignored: int = 0
    audit: list[Quarantined] = field(default_factory=list)
    # Batch API jobs (metering/usage/batches.py): jobs created through the gateway (batch id → the
    # paying subscription) and the one usage row of each finished job, keyed ``batch:<id>``, whose
    # subscription storage fills in from the job. Neither is a unit of ``events_read``.
    batch_jobs: list[Any] = field(default_factory=list)
    batch_usage: list[UsageRecord] = field(default_factory=list)
    # The message each record came from, by ``event_sha256``: a conflicting duplicate's bytes are
    # kept in quarantine (metering/ingest.py).
    sources: dict[str, RawEvent] = field(default_factory=dict)


@dataclass(slots=True)
class StoreResult:
    """What storage did with a batch: new rows, rows that already existed, quarantine rows written."""

    inserted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantined_known: int = 0  # of ``quarantined``: bytes already kept (a redelivery or replay)
    inserted_tokens: int = 0
    inserted_cost: Decimal = Decimal(0)
    inserted_unpriced: int = 0
    # LLM-log usage (db/llm_usage.py): records of this batch applied to a row (``merged``) or kept
    # for a metering event still to come (``pending``); already-known ones count as ``duplicates``.
    # ``merged_tokens``/``merged_cost``: how much merging changed rows stored by earlier batches.
    merged: int = 0
    pending: int = 0
    merged_tokens: int = 0
    merged_cost: Decimal = Decimal(0)
    inserted_truncated: int = 0  # new rows salvaged from truncated events (part of ``inserted``)
    # Batch API jobs: finished jobs metered now (new ``batch:<id>`` rows, their tokens and cost are in
    # ``inserted_tokens``/``inserted_cost``, not in ``inserted``), and jobs' creations recorded now.
    batches_metered: int = 0
    batch_jobs_recorded: int = 0
    llm_refused: int = 0  # LLM-log records of this batch kept as ``unsigned`` or ``implausible``
    pending_ids: list[str] = field(default_factory=list)  # request ids of this batch's ``pending`` LLM units
    # Of ``duplicates``: events whose request id is stored from *different* bytes (first wins).
    conflicting: list[ConflictingDuplicate] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ConflictingDuplicate:
    """A second, different event under a request id already stored (or earlier in the batch): the
    first stays; the second is kept in quarantine as ``conflicting_duplicate``."""

    request_id: str
    kept_sha256: str
    new_sha256: str


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """How the pipeline treats events beyond the contract (all off by default).

    ``signing_secret``: the HMAC-SHA256 key (the UTF-8 bytes of APIM's ``aoai-metering-hmac-key``);
    when set, an event with a wrong signature is quarantined as ``bad_signature``, and so is an
    unsigned one while ``require_signature`` is on. ``previous_signing_secret`` is also accepted,
    for key rotation. ``redact_payloads``: quarantine keeps the raw bytes with the ``request`` and
    ``response`` payloads replaced by a marker (or, for bytes that are not JSON, only the prefix
    before them). Secrets never appear in ``repr`` or logs.
    """

    signing_secret: bytes | None = field(default=None, repr=False)
    require_signature: bool = True
    redact_payloads: bool = False
    previous_signing_secret: bytes | None = field(default=None, repr=False)
    # With signatures on, APIM's LLM-log envelopes (not signed by APIM) change no row unless the
    # operator declares that they arrive by a route only the diagnostic setting can write (docs/security.md).
    trust_llm_logs: bool = False
    # Event times accepted, relative to the time of ingest: older than ``max_event_age`` or later than
    # ``max_event_skew`` ahead is ``invalid_field`` (a year-9999 row would break every report).
    max_event_age: timedelta = timedelta(days=DEFAULT_MAX_EVENT_AGE_DAYS)
    max_event_skew: timedelta = timedelta(minutes=DEFAULT_MAX_EVENT_SKEW_MINUTES)

    @property
    def signing(self) -> bool:
        return bool(self.signing_secret)

    @property
    def llm_logs_trusted(self) -> bool:
        """Whether LLM-log usage may fill rows: always without signatures, else only when declared."""
        return not self.signing or self.trust_llm_logs


# Every reason a quarantine row can carry (docs/security.md); tests/pipeline keeps it in step with the code.
QUARANTINE_REASONS = (
    "empty", "not_utf8", "not_json", "not_object", "unknown_schema", "missing_field", "invalid_field",
    "invalid_usage", "truncated", "lenient_payload", "bad_signature", "conflicting_duplicate", "oversized",
    "internal_error",
)


class BadEvent(Exception):
    """Raised inside a stage for input that cannot become a row; the pipeline turns it into a quarantine row."""

    def __init__(self, reason: str, detail: str, request_id: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.request_id = request_id
