"""Price stage: tokens × the effective-dated rate card → exact ``Decimal`` costs.

Rules (DESIGN.md "Cost rules"), rates per 1,000,000 tokens, each token kind at its own rate:
  input_cost        = uncached text input × input rate + cache_write_tokens × cache-write rate
                      + uncached audio input × audio input rate + uncached image input × image input rate
  cached_input_cost = cached text × cached rate (the input rate where the card has none)
                      + cached audio × cached audio rate + cached image × cached image rate
  output_cost       = text output × output rate (reasoning tokens are text output)
                      + audio output × audio output rate + image output × image output rate
For a request with text tokens only this is exactly the DESIGN.md rule.

Fallbacks (``FALLBACKS``): a kind with tokens whose rate row has no price for it is priced at the
price of the kind it specialises — cache writes at the input rate (what Azure charges for cache
writes on every model before gpt-5.6, and the least a gpt-5.6 cache write costs), audio and image
input at the input rate, their cached tokens at the audio/image input rate (else the input rate),
audio and image output at the output rate. Such a request is still ``priced``, and
``Cost.price_fallback`` names the kinds so priced: ``metering rates list`` and every report's data
quality show them. Never $0, never silent.

Service tier: a rate row's ``service_tier`` (``None`` = ``default``) prices only requests the
response says ran on that tier. A ``priority`` request whose model has no ``priority`` row is priced
at the default tier and flagged (``service_tier`` in ``price_fallback``). Azure downgrades priority
requests of more than 128,000 prompt tokens to standard processing and bills them at the standard
rate (learn.microsoft.com/azure/foundry/openai/concepts/priority-processing): those are priced at
the default tier, not flagged.

A request with no matching rate is ``no_rate`` with unknown (NULL) costs, never $0.

Units beyond tokens (``metering.model.UNIT_RATE_COLUMNS``), each at its own column of the row:
seconds of audio at ``audio_per_hour`` / 3600, speech input characters at ``characters_per_1m``,
web search and file search tool calls at ``web_search_per_1k`` / ``file_search_per_1k``, code
interpreter sessions at ``code_interpreter_per_session``. Their sum is ``unit_cost`` (part of
``total_cost``; input, cached and output costs stay the token costs of the DESIGN.md rule). A unit
has no fallback price: a request with a unit its row has no price for is ``no_rate`` (costs NULL,
repriced once the card has the column), never priced as if the unit were free. An audio cost is
rounded half-even to 12 decimals (the cost columns' scale), as seconds / 3600 need not terminate.

Which row prices a request: the card model (exact, else the longest ``-``-separated prefix), the
deployment type, the rate in force at the event's time (``effective_from <= t < effective_to``),
and among those the rows that apply to the prompt's size (a row with ``min_prompt_tokens`` applies
only when ``prompt_tokens >= min_prompt_tokens``). A region-specific applicable row wins over an
any-region one; within the winning scope the applicable row with the highest threshold wins and
prices the whole request, as providers bill long-context tiers.

Ingest (``metering.pipeline``) and ``metering reprice`` (``metering.reprice``) both price through
``price_tokens`` here: there is one pricing code path.
"""

from __future__ import annotations

import decimal
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from operator import attrgetter

from metering.model import (
    DEFAULT_DEPLOYMENT_TYPE,
    TOKEN_KIND_FIELDS,
    UNIT_RATE_COLUMNS,
    Cost,
    DeploymentMapping,
    Rate,
    TokenUsage,
    UsageEvent,
)
from metering.short_key_cache import LONGEST_NAME
from metering.usage.resolve import is_billable  # re-exported: the one billability rule lives with usage

ONE_MILLION = Decimal(1_000_000)
# One or more version segments after a card model: "-2024-11-20", "-0613", "-preview".
VERSION_SUFFIX = re.compile(r"(?:-(?:\d{4}-\d{2}-\d{2}|\d{4}|preview))+")
ZERO = Decimal(0)
DEFAULT_TIER = "default"
# Azure: "Long context requests (requests estimated at larger than 128k prompt tokens) will be
# downgraded to standard processing and you'll be charged at the standard tier rate."
PRIORITY_STANDARD_ABOVE_PROMPT_TOKENS = 128_000
# Token kind → the rate fields that price it, first that the row has wins; any but the first is a
# fallback, named in ``Cost.price_fallback`` by the kind.
FALLBACKS: dict[str, tuple[str, ...]] = {
    "cache_write": ("cache_write_per_1m", "input_per_1m"),
    "audio_input": ("audio_input_per_1m", "input_per_1m"),
    "cached_audio_input": ("cached_audio_input_per_1m", "audio_input_per_1m", "input_per_1m"),
    "image_input": ("image_input_per_1m", "input_per_1m"),
    "cached_image_input": ("cached_image_input_per_1m", "image_input_per_1m", "input_per_1m"),
    "audio_output": ("audio_output_per_1m", "output_per_1m"),
    "image_output": ("image_output_per_1m", "output_per_1m"),
}
TIER_FALLBACK = "service_tier"


def tier_key(tier: str | None) -> str:
    """Service tiers compare lower-cased; no tier (or ``auto``) is the default tier."""
    key = tier.strip().lower() if tier and tier.strip() else DEFAULT_TIER
    return DEFAULT_TIER if key == "auto" else key


def billed_tier(tier: str | None, prompt_tokens: int) -> str:
    """The tier a request is billed at: the response's tier, except that Azure bills a priority
    request of more than 128,000 prompt tokens at the standard (default) rate."""
    key = tier_key(tier)
    if key == "priority" and prompt_tokens > PRIORITY_STANDARD_ABOVE_PROMPT_TOKENS:
        return DEFAULT_TIER
    return key


def normalize_region(region: str | None) -> str | None:
    """Azure spells regions two ways ("East US 2", "eastus2"); compare them as one."""
    if not region:
        return None
    return region.replace(" ", "").replace("-", "").lower()


def model_key(model: str | None) -> str | None:
    """Model names compare case-insensitively and without surrounding blanks."""
    return model.strip().lower() if model and model.strip() else None


@dataclass
class RateCard:
    """The rate card and deployment mappings, indexed for per-event lookups without queries."""

    rates: list[Rate] = field(default_factory=list)
    deployments: list[DeploymentMapping] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_model: dict[str, list[Rate]] = defaultdict(list)
        for rate in self.rates:
            self._by_model[model_key(rate.model) or ""].append(rate)
        self._models_longest_first = sorted(self._by_model, key=len, reverse=True)
        self._model_cache: dict[str, str | None] = {}
        self._deployments: dict[tuple[str | None, str], DeploymentMapping] = {}
        for mapping in self.deployments:
            self._deployments[(mapping.backend_id or None, mapping.deployment.lower())] = mapping

    def deployment_for(self, backend_id: str | None, deployment: str | None) -> DeploymentMapping | None:
        """The mapping for this deployment on this backend, else for the deployment on any backend."""
        if not deployment:
            return None
        name = deployment.lower()
        if backend_id:
            found = self._deployments.get((backend_id, name))
            if found is not None:
                return found
        return self._deployments.get((None, name))

    def card_model_for(self, model: str | None) -> str | None:
        """The rate card's model for a model name: exact, else the longest card model of which the
        name is a *version* (``gpt-4o-mini`` wins over ``gpt-4o`` for ``gpt-4o-mini-2024-07-18``).

        What follows the card model must be version segments only — a date (``-2024-11-20``), an
        Azure version code (``-0613``, ``-0125``) or ``-preview`` — so that ``gpt-4`` never prices
        ``gpt-4o``, ``gpt-4.1``, ``gpt-4-32k`` or ``gpt-4-turbo``, and ``o3`` never prices
        ``o3-pro``: a different model with a shared prefix is ``no_rate`` (visible, fixable with a
        card row) rather than silently priced as another model. The match ignores dates and
        deployment types on purpose: when the best-matching model has no rate for the event's type
        or time, the request is ``no_rate`` rather than priced as a different, shorter-named model.
        """
        key = model_key(model)
        if key is None:
            return None
        if key in self._model_cache:
            return self._model_cache[key]
        found: str | None = None
        if key in self._by_model:
            found = key
        else:
            for candidate in self._models_longest_first:
                if candidate and key.startswith(candidate) and VERSION_SUFFIX.fullmatch(key, len(candidate)):
                    found = candidate
                    break
        if len(key) <= LONGEST_NAME and len(self._model_cache) < 4096:  # a sender must not grow it without bound
            self._model_cache[key] = found
        return found

    def find_rate(
        self,
        model: str | None,
        deployment_type: str,
        region: str | None,
        at: datetime,
        prompt_tokens: int = 0,
        service_tier: str | None = None,
    ) -> Rate | None:
        """The rate in force at ``at`` for this model, type, service tier and prompt size.

        Applicable rows: of this service tier (``None``: default), in force at ``at`` and, for a
        long-context tier, ``prompt_tokens >= min_prompt_tokens``. A region-specific applicable row
        wins over an any-region one; within that scope the highest threshold wins (the base tier
        counts as threshold 0).
        """
        card_model = self.card_model_for(model)
        if card_model is None:
            return None
        wanted_region = normalize_region(region)
        wanted_tier = tier_key(service_tier)
        best_regional: Rate | None = None
        best_any: Rate | None = None
        for rate in self._by_model[card_model]:
            if rate.deployment_type != deployment_type:
                continue
            if tier_key(rate.service_tier) != wanted_tier:
                continue
            if not (rate.effective_from <= at and (rate.effective_to is None or at < rate.effective_to)):
                continue
            if (rate.min_prompt_tokens or 0) > prompt_tokens:
                continue
            rate_region = normalize_region(rate.region)
            if rate_region is None:
                if best_any is None or _threshold(rate) > _threshold(best_any):
                    best_any = rate
            elif rate_region == wanted_region:
                if best_regional is None or _threshold(rate) > _threshold(best_regional):
                    best_regional = rate
        return best_regional or best_any


def _threshold(rate: Rate) -> int:
    return rate.min_prompt_tokens or 0


def _per_token(rate: Rate, kind: str, fallbacks: list[str]) -> Decimal:
    """The price per 1M tokens of a token kind at this row, by ``FALLBACKS``; notes a fallback."""
    names = FALLBACKS[kind]
    for position, name in enumerate(names):
        value = getattr(rate, name)
        if value is not None:
            if position:
                fallbacks.append(kind)
            return value
    raise AssertionError(f"{names[-1]} is required")  # input_per_1m and output_per_1m always are


def compute_cost(usage: TokenUsage, rate: Rate) -> tuple[Decimal, Decimal, Decimal]:
    """Exact input, cached-input and output cost of these tokens at this rate."""
    input_cost, cached_cost, output_cost, _ = compute_cost_by_kind(usage, rate)
    return input_cost, cached_cost, output_cost


def compute_cost_by_kind(usage: TokenUsage, rate: Rate) -> tuple[Decimal, Decimal, Decimal, list[str]]:
    """Exact input, cached-input and output cost, each token kind at its own rate (module notes),
    and the kinds that had tokens but no price of their own in the row (priced by fallback)."""
    if any(_token_kinds(usage)):
        return _cost_of_every_kind(usage, rate)
    # Text tokens only (nearly every request): the sums below, whose other terms are all zero
    # (tests/price hold the two equal, digit for digit).
    cached_rate = rate.cached_input_per_1m if rate.cached_input_per_1m is not None else rate.input_per_1m
    return (
        Decimal(usage.prompt_tokens - usage.cached_tokens) * rate.input_per_1m / ONE_MILLION + ZERO,
        Decimal(usage.cached_tokens) * cached_rate / ONE_MILLION + ZERO,
        Decimal(usage.completion_tokens) * rate.output_per_1m / ONE_MILLION + ZERO,
        [],
    )


_token_kinds = attrgetter(*TOKEN_KIND_FIELDS)


def _cost_of_every_kind(usage: TokenUsage, rate: Rate) -> tuple[Decimal, Decimal, Decimal, list[str]]:
    """``compute_cost_by_kind`` for a request with audio, image or cache-write tokens."""
    fallbacks: list[str] = []

    def cost(tokens: int, kind: str | None, base: Decimal) -> Decimal:
        if tokens == 0:
            return ZERO
        per_1m = base if kind is None else _per_token(rate, kind, fallbacks)
        return Decimal(tokens) * per_1m / ONE_MILLION

    cached_text = usage.cached_tokens - usage.cached_audio_tokens - usage.cached_image_tokens
    uncached_audio = usage.audio_prompt_tokens - usage.cached_audio_tokens
    uncached_image = usage.image_prompt_tokens - usage.cached_image_tokens
    uncached_text = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens - uncached_audio - uncached_image
    text_output = usage.completion_tokens - usage.audio_completion_tokens - usage.image_completion_tokens
    cached_rate = rate.cached_input_per_1m if rate.cached_input_per_1m is not None else rate.input_per_1m
    input_cost = (
        Decimal(uncached_text) * rate.input_per_1m / ONE_MILLION
        + cost(usage.cache_write_tokens, "cache_write", ZERO)
        + cost(uncached_audio, "audio_input", ZERO)
        + cost(uncached_image, "image_input", ZERO)
    )
    cached_cost = (
        Decimal(cached_text) * cached_rate / ONE_MILLION
        + cost(usage.cached_audio_tokens, "cached_audio_input", ZERO)
        + cost(usage.cached_image_tokens, "cached_image_input", ZERO)
    )
    output_cost = (
        Decimal(text_output) * rate.output_per_1m / ONE_MILLION
        + cost(usage.audio_completion_tokens, "audio_output", ZERO)
        + cost(usage.image_completion_tokens, "image_output", ZERO)
    )
    return input_cost, cached_cost, output_cost, fallbacks


COST_QUANTUM = Decimal("0.000000000001")  # the cost columns' scale (db.schema.MONEY_SCALE)
_WIDE = decimal.Context(prec=60, rounding=ROUND_HALF_EVEN)  # exact for any bounded quantity × price


def unit_costs(usage: TokenUsage, rate: Rate) -> tuple[Decimal, list[str]]:
    """The cost of the units beyond tokens at this row, and the units it has no price for."""
    total = ZERO
    missing: list[str] = []
    if not usage.has_units:
        return total, missing
    for name, (column, per) in UNIT_RATE_COLUMNS.items():
        quantity = getattr(usage, name)
        if not quantity:
            continue
        price_per = getattr(rate, column)
        if price_per is None:
            missing.append(name)
            continue
        cost = _WIDE.divide(_WIDE.multiply(Decimal(quantity), price_per), per)
        total += _WIDE.quantize(cost, COST_QUANTUM) if cost.as_tuple().exponent < -12 else cost  # type: ignore[operator]
    return total, missing


def price(
    event: UsageEvent,
    usage: TokenUsage,
    model: str | None,
    deployment_type: str,
    card: RateCard,
) -> Cost:
    """Price one decoded request (ingest): billability from its status and body, then ``price_tokens``."""
    return price_tokens(
        billable=is_billable(event),
        usage=usage,
        model=model,
        deployment_type=deployment_type,
        region=event.backend_region,
        at=event.event_time,
        card=card,
    )


def price_tokens(
    *,
    billable: bool,
    usage: TokenUsage,
    model: str | None,
    deployment_type: str,
    region: str | None,
    at: datetime,
    card: RateCard,
) -> Cost:
    """The one pricing rule, shared by ingest and repricing. Not billable → zero cost; provisioned
    (PTU) → no per-token cost; tokens unknown → ``no_usage``; no rate → ``no_rate``; else exact costs."""
    if not billable:
        return Cost("not_billable", deployment_type, currency=None, input_cost=ZERO, cached_input_cost=ZERO,
                    output_cost=ZERO, total_cost=ZERO)
    if deployment_type == "provisioned":
        # PTU capacity is paid by the hour, not per token: the report allocates it by token share.
        return Cost("not_billable", deployment_type, input_cost=ZERO, cached_input_cost=ZERO,
                    output_cost=ZERO, total_cost=ZERO)
    tier = billed_tier(usage.service_tier, usage.prompt_tokens)
    rate = card.find_rate(model, deployment_type, region, at, usage.prompt_tokens, tier)
    fallbacks: list[str] = []
    if rate is None and tier != DEFAULT_TIER:
        rate = card.find_rate(model, deployment_type, region, at, usage.prompt_tokens, DEFAULT_TIER)
        if rate is not None:
            fallbacks.append(TIER_FALLBACK)
    if usage.source == "none":
        return Cost("no_usage", deployment_type, rate_id=rate.id if rate else None,
                    currency=rate.currency if rate else None)
    if rate is None:
        return Cost("no_rate", deployment_type)
    input_cost, cached_cost, output_cost, kinds = compute_cost_by_kind(usage, rate)
    fallbacks.extend(kinds)
    units_cost, unpriced_units = unit_costs(usage, rate)
    if unpriced_units:  # no fallback for a unit: visible and repriceable, never free
        return Cost("no_rate", deployment_type)
    return Cost(
        "priced",
        deployment_type,
        rate_id=rate.id,
        currency=rate.currency,
        input_cost=input_cost,
        cached_input_cost=cached_cost,
        output_cost=output_cost,
        total_cost=input_cost + cached_cost + output_cost + units_cost,
        price_fallback=",".join(sorted(fallbacks)) or None,
        unit_cost=units_cost if usage.has_units else None,  # NULL: a request without such units
    )


def is_alias_of(model: str, mapped_model: str) -> bool:
    """Whether a response's model name is a short name of the mapped model: its ``-``-separated
    words appear, in order and together, among the mapped model's (Azure answers ``"model": "ada"``
    for text-embedding-ada-002). ``o3-pro`` is no alias of ``o3``: a different model is never
    priced as another."""
    short, full = model.strip().lower().split("-"), mapped_model.strip().lower().split("-")
    return short != full and any(full[i:i + len(short)] == short for i in range(len(full) - len(short) + 1))


def resolve_alias(model: str | None, mapped_model: str | None, card: RateCard) -> str | None:
    """The model to price: ``model``, unless the card does not know it, the deployments mapping
    names a card model for the deployment, and ``model`` is a short name of it (``is_alias_of``)."""
    if (model and mapped_model and card.card_model_for(model) is None
            and card.card_model_for(mapped_model) is not None and is_alias_of(model, mapped_model)):
        return mapped_model
    return model


def resolve_deployment(event: UsageEvent, card: RateCard) -> tuple[str | None, str]:
    """The mapped model (if any) and the deployment type (``global`` when unmapped)."""
    return resolve_deployment_of(event.backend_id, event.deployment, card)


def resolve_deployment_of(backend_id: str | None, deployment: str | None, card: RateCard) -> tuple[str | None, str]:
    """``resolve_deployment`` from bare fields (a stored row has them too): mapped model, deployment type."""
    mapping = card.deployment_for(backend_id, deployment)
    if mapping is None:
        return None, DEFAULT_DEPLOYMENT_TYPE
    return mapping.model, mapping.deployment_type or DEFAULT_DEPLOYMENT_TYPE
