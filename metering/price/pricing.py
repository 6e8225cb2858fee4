"""Price stage: tokens × the effective-dated rate card → exact ``Decimal`` costs.

Rules (DESIGN.md "Cost rules"), rates per 1,000,000 tokens:
  input_cost        = (prompt_tokens − cached_tokens) × input rate
  cached_input_cost = cached_tokens × cached rate (the input rate where the card has none)
  output_cost       = completion_tokens × output rate   (reasoning tokens are part of completion)

A request with no matching rate is ``no_rate`` with unknown (NULL) costs, never $0.

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

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from metering.model import (
    DEFAULT_DEPLOYMENT_TYPE,
    Cost,
    DeploymentMapping,
    Rate,
    TokenUsage,
    UsageEvent,
)
from metering.usage.resolve import is_billable  # re-exported: the one billability rule lives with usage

ONE_MILLION = Decimal(1_000_000)
# One or more version segments after a card model: "-2024-11-20", "-0613", "-preview".
VERSION_SUFFIX = re.compile(r"(?:-(?:\d{4}-\d{2}-\d{2}|\d{4}|preview))+")
ZERO = Decimal(0)


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
        self._model_cache[key] = found
        return found

    def find_rate(
        self,
        model: str | None,
        deployment_type: str,
        region: str | None,
        at: datetime,
        prompt_tokens: int = 0,
    ) -> Rate | None:
        """The rate in force at ``at`` for this model, type and prompt size.

        Applicable rows: in force at ``at`` and, for a long-context tier, ``prompt_tokens >=
        min_prompt_tokens``. A region-specific applicable row wins over an any-region one; within
        that scope the highest threshold wins (the base tier counts as threshold 0).
        """
        card_model = self.card_model_for(model)
        if card_model is None:
            return None
        wanted_region = normalize_region(region)
        best_regional: Rate | None = None
        best_any: Rate | None = None
        for rate in self._by_model[card_model]:
            if rate.deployment_type != deployment_type:
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


def compute_cost(usage: TokenUsage, rate: Rate) -> tuple[Decimal, Decimal, Decimal]:
    """Exact input, cached-input and output cost of these tokens at this rate."""
    uncached = usage.prompt_tokens - usage.cached_tokens
    cached_rate = rate.cached_input_per_1m if rate.cached_input_per_1m is not None else rate.input_per_1m
    input_cost = Decimal(uncached) * rate.input_per_1m / ONE_MILLION
    cached_cost = Decimal(usage.cached_tokens) * cached_rate / ONE_MILLION
    output_cost = Decimal(usage.completion_tokens) * rate.output_per_1m / ONE_MILLION
    return input_cost, cached_cost, output_cost


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
    rate = card.find_rate(model, deployment_type, region, at, usage.prompt_tokens)
    if usage.source == "none":
        return Cost("no_usage", deployment_type, rate_id=rate.id if rate else None,
                    currency=rate.currency if rate else None)
    if rate is None:
        return Cost("no_rate", deployment_type)
    input_cost, cached_cost, output_cost = compute_cost(usage, rate)
    return Cost(
        "priced",
        deployment_type,
        rate_id=rate.id,
        currency=rate.currency,
        input_cost=input_cost,
        cached_input_cost=cached_cost,
        output_cost=output_cost,
        total_cost=input_cost + cached_cost + output_cost,
    )


def resolve_deployment(event: UsageEvent, card: RateCard) -> tuple[str | None, str]:
    """The mapped model (if any) and the deployment type (``global`` when unmapped)."""
    return resolve_deployment_of(event.backend_id, event.deployment, card)


def resolve_deployment_of(backend_id: str | None, deployment: str | None, card: RateCard) -> tuple[str | None, str]:
    """``resolve_deployment`` from bare fields (a stored row has them too): mapped model, deployment type."""
    mapping = card.deployment_for(backend_id, deployment)
    if mapping is None:
        return None, DEFAULT_DEPLOYMENT_TYPE
    return mapping.model, mapping.deployment_type or DEFAULT_DEPLOYMENT_TYPE
