"""Repricing stored rows after the rate card or the deployments mapping changed (pure, no I/O).

``db.reprice`` reads ``usage_records`` in batches and writes back what ``reprice_row`` says; this
module decides, from a row's stored fields alone, what its price is under the current card, with
the same ``metering.pricing.price_tokens`` that ingest uses (one pricing code path).

What a stored row can and cannot tell:

* **Billable**: 2xx (or unknown status) rows are billable; 429, 5xx and other 4xx are not. A 400
  is billable only when it was a content-filter rejection, which ingest saw in the response body;
  the row does not keep the body, so a stored 400 that ingest judged billable (stored as anything
  but ``not_billable``) stays billable, and a 400 stored as ``not_billable`` stays not billable.
* **Deployment type** is re-resolved from ``backend_id`` and ``deployment`` with the current
  ``deployments`` table, exactly as ingest resolves it.
* **Model**: the stored model is kept (usually the response's own model name). Only when it is the
  deployment name itself — ingest's last resort — and the ``deployments`` table now maps that
  deployment to a model, the mapped model is used, as ingest would now do. (A model that came from
  an earlier mapping cannot be told apart from a response's model; replay the capture for that.)
  A stored model the card does not know that is a short name of the mapped model (``ada`` for
  ``text-embedding-ada-002``) takes the mapped model, as at ingest (``pricing.resolve_alias``).
* **Tokens** are the stored counts, every kind (cache writes, audio, image); a row whose
  ``usage_source`` is ``none`` stays ``no_usage``.
* **Service tier** is the stored one (what the response said); the rate of that tier is looked up
  again, with the same priority long-prompt rule and fallback as ingest.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from metering.model import TOKEN_KIND_FIELDS, UNIT_FIELDS, Cost, TokenUsage
from metering.price.pricing import RateCard, price_tokens, resolve_alias, resolve_deployment_of

REPRICE_BATCH_SIZE = 5000  # stored rows read, repriced and written per transaction


@dataclass(frozen=True, slots=True)
class StoredUsage:
    """The columns of a stored ``usage_records`` row that its price depends on, and its current price."""

    id: int
    event_time: datetime
    backend_id: str | None
    backend_region: str | None
    deployment: str | None
    model: str | None
    status_code: int | None
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    usage_source: str
    deployment_type: str
    price_status: str
    rate_id: int | None
    currency: str | None
    input_cost: Decimal | None
    cached_input_cost: Decimal | None
    output_cost: Decimal | None
    total_cost: Decimal | None
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


STORED_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(StoredUsage))
# What repricing may change in a row.
PRICE_COLUMNS: tuple[str, ...] = (
    "model", "deployment_type", "price_status", "rate_id", "currency",
    "input_cost", "cached_input_cost", "output_cost", "total_cost", "price_fallback", "unit_cost",
)


@dataclass(frozen=True, slots=True)
class Repriced:
    """A row's price under the current card: the (possibly re-mapped) model and its ``Cost``."""

    model: str | None
    cost: Cost

    def columns(self) -> dict[str, Any]:
        """The values of ``PRICE_COLUMNS`` for this price."""
        cost = self.cost
        return {
            "model": self.model,
            "deployment_type": cost.deployment_type,
            "price_status": cost.price_status,
            "rate_id": cost.rate_id,
            "currency": cost.currency,
            "input_cost": cost.input_cost,
            "cached_input_cost": cost.cached_input_cost,
            "output_cost": cost.output_cost,
            "total_cost": cost.total_cost,
            "price_fallback": cost.price_fallback,
            "unit_cost": cost.unit_cost,
        }


def stored_billable(row: StoredUsage) -> bool:
    """Whether Azure bills this stored request (see the module notes on 400 rejections)."""
    status = row.status_code
    if status is None or 200 <= status < 300:
        return True
    if status == 400:
        return row.price_status != "not_billable"  # judged a billable content-filter rejection at ingest
    return False


def stored_model(row: StoredUsage, mapped_model: str | None) -> str | None:
    """The model to price: the stored one, unless it is only the deployment's name and the
    deployments table now says which model that deployment runs."""
    if mapped_model and (not row.model or (row.deployment and row.model.lower() == row.deployment.lower())):
        return mapped_model
    return row.model


def reprice_row(row: StoredUsage, card: RateCard) -> Repriced:
    """The price of a stored row under ``card``, through the same ``price_tokens`` as ingest."""
    mapped_model, deployment_type = resolve_deployment_of(row.backend_id, row.deployment, card)
    model = resolve_alias(stored_model(row, mapped_model), mapped_model, card)
    usage = TokenUsage(
        prompt_tokens=row.prompt_tokens,
        cached_tokens=row.cached_tokens,
        completion_tokens=row.completion_tokens,
        reasoning_tokens=row.reasoning_tokens,
        total_tokens=row.total_tokens,
        source=row.usage_source,  # type: ignore[arg-type]
        service_tier=row.service_tier,
        **{name: getattr(row, name) for name in TOKEN_KIND_FIELDS},
        **{name: getattr(row, name) for name in UNIT_FIELDS},
    )
    cost = price_tokens(
        billable=stored_billable(row),
        usage=usage,
        model=model,
        deployment_type=deployment_type,
        region=row.backend_region,
        at=row.event_time,
        card=card,
    )
    return Repriced(model, cost)


def changed_columns(row: StoredUsage, new: Repriced) -> dict[str, Any]:
    """The price columns whose value differs (numbers compare by value: 0.50 == 0.5); empty when
    the row is already priced as the card says, which makes repricing idempotent."""
    return {name: value for name, value in new.columns().items() if getattr(row, name) != value}


@dataclass
class RepriceSummary:
    """What a repricing run examined and changed: counts, totals per currency, status transitions."""

    examined: int = 0
    changed: int = 0
    batches: int = 0
    old_totals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    new_totals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    changed_by_column: Counter[str] = field(default_factory=Counter)

    def add(self, row: StoredUsage, new: Repriced, changes: dict[str, Any]) -> None:
        self.examined += 1
        if row.total_cost is not None:
            self.old_totals[row.currency or "?"] += row.total_cost
        if new.cost.total_cost is not None:
            self.new_totals[new.cost.currency or "?"] += new.cost.total_cost
        if changes:
            self.changed += 1
            self.transitions[(row.price_status, new.cost.price_status)] += 1
            self.changed_by_column.update(changes.keys())

    def lines(self) -> list[str]:
        """A readable account of the run; amounts are exact (nothing rounded away)."""
        out = [f"rows examined {self.examined:,} | rows changed {self.changed:,} | batches {self.batches:,}"]
        currencies = sorted(set(self.old_totals) | set(self.new_totals))
        for currency in currencies:
            old, new = self.old_totals.get(currency, Decimal(0)), self.new_totals.get(currency, Decimal(0))
            if currency == "?" and old == 0 and new == 0:
                continue  # not-billable rows (no currency, cost 0): a "total cost: 0.00" line says nothing
            label = "" if currency == "?" else f" {currency}"
            out.append(f"total cost{label}: old {_exact(old)} → new {_exact(new)} (change {_exact(new - old, sign=True)})")
        if self.transitions:
            out.append("changed rows by price_status:")
            width = max(len(f"{a} → {b}") for a, b in self.transitions)
            for (before, after), count in sorted(self.transitions.items()):
                out.append(f"  {f'{before} → {after}':<{width}}  {count:>10,}")
        return out


def _exact(amount: Decimal, sign: bool = False) -> str:
    """A Decimal in plain notation with at least two decimals and no trailing noise."""
    text = format(amount.normalize(), "f") if amount != 0 else "0"
    if "." not in text:
        text += ".00"
    elif len(text.split(".")[1]) < 2:
        text += "0"
    return f"+{text}" if sign and amount > 0 else text
