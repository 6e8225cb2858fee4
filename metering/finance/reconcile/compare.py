"""Reconciliation with the Azure bill (pure: values in, values out).

The bill and the meter are compared per day × Azure OpenAI resource × meter (model, token kind,
deployment type). Every difference ``billed_cost − metered_cost`` is split into named parts that add
up to it exactly:

* ``bypass`` — tokens billed beyond those metered, at the billed unit price: calls that did not go
  through APIM (or rows not yet ingested);
* ``price`` — the metered tokens priced at the bill's effective unit price minus their card cost,
  when the bill's unit price for the meter differs from the card's (both prices are shown);
* ``unpriced`` — metered tokens without a card rate (``no_rate``), at the billed unit price;
* ``capacity`` — hourly charges (provisioned throughput, hosting): billed, never metered per token;
* ``unmapped_backend`` — metered cost on a backend with no resource in ``backends``;
* ``day_boundary`` — token differences that cancel across adjacent days (a request near midnight
  billed on the other day);
* ``unknown_meter`` — bill lines whose meter name the parser cannot read;
* ``unexplained`` — what is left (rounding in the export, tokens metered but not billed).

The true-up (``metering.finance.reconcile.true_up``, stored by ``metering true-up``) allocates each
meter's difference to subscriptions in whole cents that add up to the bill exactly.
"""

from __future__ import annotations

import decimal
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

from metering.price.meters import CAPACITY, FIXED_KINDS, Backend, BillLine
from metering.price.metered_kinds import KINDS, TOOL_KINDS, UNIT_KINDS, kind_price, price_unit
from metering.price.pricing import VERSION_SUFFIX, RateCard, model_key

CENT = Decimal("0.01")
MILLION = Decimal(1_000_000)
UNMAPPED_BACKEND = "(unmapped backend)"
UNALLOCATED = "(unallocated)"
CATEGORIES = ("bypass", "price", "unpriced", "capacity", "unmapped_backend", "day_boundary", "unknown_meter")
AMOUNTS = CATEGORIES + ("unexplained",)
GROUPINGS = ("day", "resource", "meter")
TOKEN_KINDS = KINDS  # text, cache-write, audio and image kinds and the units beyond tokens: each on its own meter
PRICED_BY_1M = tuple(kind for kind in KINDS if kind not in UNIT_KINDS)  # the token kinds proper
# Meters billed by time or capacity, never per request: provisioned hours, fine-tune hosting and
# training, vector storage (GB-days). Explained as ``capacity`` (a fixed cost).
FIXED = (CAPACITY, *FIXED_KINDS)
# Unit prices that differ by less than this share are the same price (the export rounds costs).
PRICE_TOLERANCE = Decimal("0.001")
_CONTEXT = decimal.Context(prec=50)


@dataclass(frozen=True)
class MeterKey:
    """What the bill bills: a model's token kind on a deployment type, a capacity meter, or a
    meter the parser cannot read (then only its name)."""

    model: str | None
    kind: str | None
    deployment_type: str | None
    meter_name: str | None = None  # capacity and unknown meters keep their name
    service_tier: str | None = None  # "priority": billed on the priority-processing meter; None: default

    @property
    def label(self) -> str:
        if self.kind in FIXED:
            return f"{self.meter_name} ({self.kind.replace('_', ' ')})"  # type: ignore[union-attr]
        if self.kind is None:
            return f"{self.meter_name} (unknown meter)"
        if self.model is None:  # a tool billed on a meter of no model (file search calls, code interpreter)
            return f"{self.kind} {self.deployment_type}"
        return f"{self.model} {self.kind} {self.deployment_type}" + (f", {self.service_tier} tier" if self.service_tier else "")

    @property
    def detail(self) -> str:
        """What tells meters of one model apart (kind, deployment type, tier), for a label's second line."""
        if self.kind == CAPACITY:
            return "capacity (hourly)"
        if self.kind in FIXED:
            return f"{self.kind.replace('_', ' ')} (fixed cost)"  # type: ignore[union-attr]
        if self.kind is None:
            return "unknown meter"
        return " · ".join([self.kind, self.deployment_type or "?"] + ([f"{self.service_tier} tier"] if self.service_tier else []))

    @property
    def name(self) -> str:
        """The model (or, for capacity and unknown meters, the meter's name), a label's first line."""
        return (self.meter_name if self.kind in FIXED or self.kind is None or self.model is None
                else self.model) or "(unknown)"


@dataclass
class Cell:
    """One day × resource × meter: both sides and the difference split into named parts."""

    day: str
    resource: str
    meter: MeterKey
    billed_quantity: int = 0
    billed_cost: Decimal = Decimal(0)
    metered_quantity: int = 0
    priced_quantity: int = 0
    unpriced_quantity: int = 0
    metered_cost: Decimal = Decimal(0)
    parts: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    unknown_quantity: Decimal = Decimal(0)  # billed quantity of a meter with a unit we cannot read

    @property
    def difference(self) -> Decimal:
        return self.billed_cost - self.metered_cost


@dataclass
class Reconciliation:
    """A month compared: every cell, the meters' unit prices, and what may not be trusted."""

    month: str
    currency: str
    cells: list[Cell]
    billed_prices: dict[tuple[str, MeterKey], Decimal]  # per resource × meter: per 1M tokens
    card_prices: dict[tuple[str, MeterKey], Decimal]
    unmapped_backends: list[str]
    resources_without_bill: list[str]
    notes: list[str] = field(default_factory=list)
    currency_mismatch: bool = False  # the bill's currency is not the card's: no true-up can add them


# --------------------------------------------------------------------------- matching


def bill_model_for(model: str | None, bill_models: Iterable[str]) -> str | None:
    """The bill's model for a metered model: the same name, or the longest bill model it extends with
    version segments only (``gpt-4.1-2025-04-14`` is billed on the ``gpt-4.1`` meter), or — for a
    versionless name — the only version of it the bill has (``gpt-4o`` → ``gpt-4o-2024-11-20``)."""
    key = model_key(model)
    if key is None:
        return None
    best: str | None = None
    for candidate in bill_models:
        name = model_key(candidate) or ""
        if name == key:
            return candidate
        if key.startswith(name) and VERSION_SUFFIX.fullmatch(key, len(name)) and (best is None or len(name) > len(best)):
            best = candidate
    if best is None:  # a versionless name (a deployment mapped to "gpt-4o"): the one version the bill has
        versions = [c for c in bill_models
                    if (model_key(c) or "").startswith(key) and VERSION_SUFFIX.fullmatch(model_key(c) or "", len(key))]
        best = versions[0] if len(versions) == 1 else None
    return best


def _meter_of(line: BillLine) -> MeterKey:
    if line.token_kind in FIXED or line.token_kind is None:
        return MeterKey(line.model, line.token_kind, line.deployment_type, line.meter_name)
    return MeterKey(line.model, line.token_kind, line.deployment_type, service_tier=line.service_tier)


# --------------------------------------------------------------------------- the comparison


def reconcile(
    month: str,
    lines: Sequence[BillLine],
    metered: Sequence[Mapping[str, Any]],
    backends: Mapping[str, Backend],
) -> Reconciliation:
    """Compare a month's bill lines with its metered groups (``db.bill.metered_usage`` rows)."""
    currencies = sorted({line.currency for line in lines})
    cells: dict[tuple[str, str, MeterKey], Cell] = {}

    def cell(day: str, resource: str, meter: MeterKey) -> Cell:
        key = (day, resource, meter)
        if key not in cells:
            cells[key] = Cell(day, resource, meter)
        return cells[key]

    billed_resources = {line.resource_id for line in lines}
    for line in lines:
        target = cell(line.day.isoformat(), line.resource_id, _meter_of(line))
        target.billed_cost += line.cost
        if line.tokens is not None:
            target.billed_quantity += line.tokens
        else:
            target.unknown_quantity += line.quantity
    bill_models = sorted({line.model for line in lines if line.model and line.token_kind in TOKEN_KINDS})
    unmapped: set[str] = set()
    metered_resources: set[str] = set()
    for group in metered:
        if group["deployment_type"] == "provisioned" or group["price_status"] == "not_billable":
            continue  # provisioned capacity is billed by the hour; throttled / failed calls are not billed
        backend = backends.get(group["backend_id"] or "")
        if backend is None:
            unmapped.add(group["backend_id"] or "(no backend id)")
            resource = UNMAPPED_BACKEND
        else:
            resource = backend.resource_id
            metered_resources.add(resource)
        model = bill_model_for(group["model"], bill_models) or group["model"] or "(unknown)"
        priced = group["price_status"] == "priced"
        for kind in TOKEN_KINDS:
            tokens = int(group[f"{kind}_tokens"])
            cost = group.get(f"{kind}_cost")
            if not tokens and not cost:
                continue
            tool = kind in TOOL_KINDS  # billed on the tool's meter, whatever model called it
            target = cell(group["day"], resource, MeterKey(None if tool else model, kind, group["deployment_type"],
                                                           service_tier=None if tool else group.get("service_tier")))
            target.metered_quantity += tokens
            if priced:
                target.priced_quantity += tokens
                target.metered_cost += cost or Decimal(0)
            else:
                target.unpriced_quantity += tokens
    ordered = [cells[key] for key in sorted(cells, key=lambda k: (k[0], k[1], k[2].label))]
    billed_prices, card_prices = _unit_prices(ordered)
    for item in ordered:
        _explain(item, billed_prices.get((item.resource, item.meter)), card_prices.get((item.resource, item.meter)))
    _day_boundaries(ordered, billed_prices)
    for item in ordered:
        item.parts["unexplained"] = item.difference - sum(
            (amount for name, amount in item.parts.items() if name != "unexplained"), Decimal(0))
    notes = []
    if len(currencies) > 1:
        notes.append(f"the bill has several currencies ({', '.join(currencies)}): totals add them as they are")
    return Reconciliation(
        month=month,
        currency=(currencies or ["USD"])[0],
        cells=ordered,
        billed_prices=billed_prices,
        card_prices=card_prices,
        unmapped_backends=sorted(unmapped),
        resources_without_bill=sorted(metered_resources - billed_resources),
        notes=notes,
    )


def _unit_prices(cells: Sequence[Cell]) -> tuple[dict[tuple[str, MeterKey], Decimal], dict[tuple[str, MeterKey], Decimal]]:
    """Per resource × token meter over the month: the bill's effective price and the card's, per 1M
    tokens (a unit kind: per its price unit, ``metered_kinds.price_unit``)."""
    sums: dict[tuple[str, MeterKey], list[Any]] = defaultdict(lambda: [0, Decimal(0), 0, Decimal(0)])
    for item in cells:
        if item.meter.kind not in TOKEN_KINDS:
            continue
        entry = sums[(item.resource, item.meter)]
        entry[0] += item.billed_quantity
        entry[1] += item.billed_cost
        entry[2] += item.priced_quantity
        entry[3] += item.metered_cost
    billed, card = {}, {}
    for key, (billed_tokens, billed_cost, priced_tokens, metered_cost) in sums.items():
        per, _ = price_unit(key[1].kind)
        if billed_tokens:
            billed[key] = _CONTEXT.divide(billed_cost * per, Decimal(billed_tokens))
        if priced_tokens:
            card[key] = _CONTEXT.divide(metered_cost * per, Decimal(priced_tokens))
    return billed, card


def prices_differ(billed: Decimal | None, card: Decimal | None) -> bool:
    """Whether the bill's unit price is not the card's (beyond the export's rounding)."""
    if billed is None or card is None:
        return False
    if card == 0:
        return billed != 0
    return abs(billed - card) > abs(card) * PRICE_TOLERANCE


def _explain(item: Cell, billed_price: Decimal | None, card_price: Decimal | None) -> None:
    """Split one cell's difference into its named parts (``unexplained`` is set afterwards)."""
    parts = item.parts
    if item.resource == UNMAPPED_BACKEND:
        parts["unmapped_backend"] = -item.metered_cost
        return
    if item.meter.kind in FIXED:
        parts["capacity"] = item.billed_cost
        return
    if item.meter.kind is None:
        parts["unknown_meter"] = item.billed_cost
        return
    if not item.billed_quantity:
        return  # metered, not billed: unexplained unless a neighbouring day explains it
    per_token = _CONTEXT.divide(item.billed_cost, Decimal(item.billed_quantity))
    if item.unpriced_quantity:
        parts["unpriced"] = per_token * item.unpriced_quantity
    if prices_differ(billed_price, card_price) and item.priced_quantity:
        parts["price"] = per_token * item.priced_quantity - item.metered_cost
    if item.billed_quantity > item.metered_quantity:
        parts["bypass"] = per_token * (item.billed_quantity - item.metered_quantity)


def _day_boundaries(cells: Sequence[Cell], billed_prices: Mapping[tuple[str, MeterKey], Decimal]) -> None:
    """Token differences of one resource × meter that cancel on adjacent days are ``day_boundary``:
    the billed excess of one day is moved out of ``bypass``, the metered excess of the other out of
    what would stay unexplained."""
    series: dict[tuple[str, MeterKey], list[Cell]] = defaultdict(list)
    for item in cells:
        if item.meter.kind in TOKEN_KINDS and item.resource != UNMAPPED_BACKEND:
            series[(item.resource, item.meter)].append(item)
    for key, items in series.items():
        price = billed_prices.get(key)
        if price is None:
            continue
        items.sort(key=lambda c: c.day)
        remaining = {id(item): item.billed_quantity - item.metered_quantity for item in items}
        pairs = [(first, second) for first, second in zip(items, items[1:])
                 if date.fromisoformat(second.day).toordinal() - date.fromisoformat(first.day).toordinal() == 1]
        # The pairs that cancel best first, each day's difference used once.
        pairs.sort(key=lambda pair: (abs(remaining[id(pair[0])] + remaining[id(pair[1])]), pair[0].day))
        for first, second in pairs:
            delta_first, delta_second = remaining[id(first)], remaining[id(second)]
            if delta_first * delta_second >= 0:
                continue
            tokens = min(abs(delta_first), abs(delta_second))
            for item, delta in ((first, delta_first), (second, delta_second)):
                remaining[id(item)] += -tokens if delta > 0 else tokens
                if delta > 0:  # billed more than metered: that much of the bypass is the other day's
                    moved = _CONTEXT.divide(item.billed_cost, Decimal(item.billed_quantity)) * tokens
                    item.parts["bypass"] -= moved
                    item.parts["day_boundary"] += moved
                else:  # metered more than billed: the other day's bill has them
                    item.parts["day_boundary"] -= _CONTEXT.divide(price * tokens, price_unit(key[1].kind)[0])


# --------------------------------------------------------------------------- groups and totals


def group_rows(result: Reconciliation, by: Sequence[str]) -> list[dict[str, Any]]:
    """The cells summed per ``by`` (any of day, resource, meter), each with its explanation."""
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for item in result.cells:
        values = {"day": item.day, "resource": item.resource, "meter": item.meter.label}
        key = tuple(values[name] for name in by)
        row = groups.setdefault(key, {**{name: values[name] for name in by}, "billed_quantity": 0,
                                      "metered_quantity": 0, "billed_cost": Decimal(0), "metered_cost": Decimal(0),
                                      **{name: Decimal(0) for name in AMOUNTS}, "_meters": set(), "_priced": 0,
                                      "_unpriced": 0})
        row["billed_quantity"] += item.billed_quantity
        row["metered_quantity"] += item.metered_quantity
        row["_priced"] += item.priced_quantity
        row["_unpriced"] += item.unpriced_quantity
        row["billed_cost"] += item.billed_cost
        row["metered_cost"] += item.metered_cost
        for name in AMOUNTS:
            row[name] += item.parts.get(name, Decimal(0))
        row["_meters"].add((item.resource, item.meter))
    rows = []
    for key in sorted(groups):
        row = groups[key]
        meters = row.pop("_meters")
        priced, unpriced = row.pop("_priced"), row.pop("_unpriced")
        row["difference"] = row["billed_cost"] - row["metered_cost"]
        if unpriced and not priced and not row["metered_cost"]:
            # Only tokens without a card rate: their cost is unknown, never 0 (``unpriced`` explains it).
            row["metered_cost"] = row["difference"] = None
        billed_price = card_price = None
        if len(meters) == 1:
            meter = next(iter(meters))
            billed_price, card_price = result.billed_prices.get(meter), result.card_prices.get(meter)
        row["billed_unit_price"] = billed_price
        row["card_unit_price"] = card_price
        unit = price_unit(next(iter(meters))[1].kind)[1] if len(meters) == 1 else "1M"
        row["explanation"] = explain_text(row, billed_price, card_price, result.currency, unit)
        rows.append(row)
    return rows


def explain_text(row: Mapping[str, Any], billed_price: Decimal | None, card_price: Decimal | None, currency: str,
                 unit: str = "1M") -> str:
    """The named parts of a group's difference that amount to at least half a cent, largest first."""
    # Rounding noise in price and unexplained is not worth a word; any other part is, however small.
    shown = [(name, row[name]) for name in AMOUNTS
             if abs(row[name]) >= Decimal("0.005") or (row[name] and name not in ("price", "unexplained"))]
    shown.sort(key=lambda item: -abs(item[1]))
    words = []
    for name, amount in shown:
        text = f"{name} {cents(amount):+} {currency}" if abs(amount) >= Decimal("0.005") else \
            f"{name} {'+' if amount > 0 else '-'}<0.01 {currency}"
        if name == "price" and billed_price is not None and card_price is not None:
            text += f" (billed {per_1m(billed_price)}/{unit}, card {per_1m(card_price)}/{unit})"
        words.append(text)
    return "; ".join(words) if words else "matches"


def totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The rows summed; the metered cost of unpriced tokens is unknown and left out of it (the
    ``unpriced`` part of the difference says how much the bill has for them)."""
    total: dict[str, Any] = {"billed_quantity": 0, "metered_quantity": 0, "billed_cost": Decimal(0),
                             "metered_cost": Decimal(0), "difference": Decimal(0),
                             **{name: Decimal(0) for name in AMOUNTS}}
    for row in rows:
        for name in total:
            total[name] += row[name] or 0  # an unknown metered cost (None) adds nothing
    total["difference"] = total["billed_cost"] - total["metered_cost"]
    return total


def data_quality(result: Reconciliation) -> str:
    """One line: what the comparison may not be trusted for."""
    unknown = sorted({c.meter.meter_name or "" for c in result.cells if c.meter.kind is None and c.billed_cost})
    unpriced = sum(c.unpriced_quantity for c in result.cells)
    parts = [
        f"{len(result.unmapped_backends)} unmapped backend(s)"
        + (f" ({', '.join(result.unmapped_backends)}: map backends with `metering backends import`)"
           if result.unmapped_backends else ""),
        f"{len(unknown)} unknown meter(s)" + (f" ({', '.join(unknown)})" if unknown else ""),
        f"{unpriced:,} unpriced metered token(s)",
        f"{len(result.resources_without_bill)} metered resource(s) with no bill line"
        + (f" ({', '.join(result.resources_without_bill)})" if result.resources_without_bill else ""),
    ]
    negative = negative_bill_cells(result)
    if negative:
        parts.append(f"{len(negative)} bill line(s) with a negative usage cost "
                     f"({cents(sum((c.billed_cost for c in negative), Decimal(0)))} {result.currency}: usage is never "
                     "negative; check the export)")
    return "data quality: " + ", ".join(parts)


def negative_bill_cells(result: Reconciliation) -> list[Cell]:
    """Day × resource × meter cells whose billed usage cost is negative (imported with
    ``--allow-negative``): never silent in any output."""
    return [c for c in result.cells if c.billed_cost < 0]


def card_drift(result: Reconciliation) -> list[dict[str, Any]]:
    """Meters whose billed unit price differs from the card's: the card row to check."""
    drift = []
    for key in sorted(result.billed_prices, key=lambda k: (k[0], k[1].label)):
        if key[1].kind not in PRICED_BY_1M:
            continue  # a unit's price differs per its own unit: its cell's explanation says so
        billed, card = result.billed_prices[key], result.card_prices.get(key)
        if prices_differ(billed, card):
            drift.append({"resource": key[0], "model": key[1].model, "kind": key[1].kind,
                          "deployment_type": key[1].deployment_type, "service_tier": key[1].service_tier,
                          "billed_per_1m": billed, "card_per_1m": card})
    return drift


def cents(amount: Decimal) -> Decimal:
    """Rounded to the cent, half up; never ``-0.00`` (an amount under half a cent is 0.00 either way)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP) + 0


def per_1m(price: Decimal) -> str:
    """A unit price per 1M tokens with up to six decimals, without trailing zeros."""
    text = format(price.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# --------------------------------------------------------------------------- true-up


def apportion_cents(target: Decimal, exact: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Whole cents per key that add up to ``target`` (a whole number of cents), each within a cent of
    its exact (possibly negative) part: every part is rounded down, the cents left over go one each to
    the largest remainders, ties by key. ``allocate`` in ``capacity`` needs non-negative weights; a
    true-up may be negative (metered more than billed), hence this signed variant."""
    if not exact:
        return {UNALLOCATED: target} if target else {}
    floors = {key: value.quantize(CENT, rounding=ROUND_FLOOR) for key, value in exact.items()}
    left = int((target - sum(floors.values(), Decimal(0))) / CENT)
    order = sorted(exact, key=lambda key: (-(exact[key] - floors[key]), key))
    parts = dict(floors)
    if left >= 0:
        for index in range(left):
            parts[order[index % len(order)]] += CENT
    else:
        for index in range(-left):
            parts[order[::-1][index % len(order)]] -= CENT
    return {key: value for key, value in sorted(parts.items())}


def card_drift_from_bill(lines: Sequence[BillLine], card: RateCard, regions: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """Per month × model × token kind × deployment type in the imported bill: the bill's effective unit
    price (cost ÷ tokens, per 1M) next to the card's rate in force then, for the meters where they
    differ or the card has no row — so a wrong card row is found the first month, not the tenth.
    ``regions``: resource id → region (from ``backends``), for regional card rows."""
    sums: dict[tuple[str, str, str, str, str | None, str | None], list[Any]] = defaultdict(lambda: [0, Decimal(0), None])
    for line in lines:
        if line.token_kind not in PRICED_BY_1M or not line.tokens or line.model is None or line.deployment_type is None:
            continue
        key = (line.day.isoformat()[:7], line.model, line.token_kind, line.deployment_type, regions.get(line.resource_id),
               line.service_tier)
        entry = sums[key]
        entry[0] += line.tokens
        entry[1] += line.cost
        entry[2] = line.day if entry[2] is None else min(entry[2], line.day)
    drift = []
    for (month, model, kind, deployment_type, region, tier), (tokens, cost, first_day) in sorted(
            sums.items(), key=lambda item: (item[0][0], item[0][1], item[0][2], item[0][3], item[0][4] or "", item[0][5] or "")):
        billed = _CONTEXT.divide(cost * MILLION, Decimal(tokens))
        at = datetime.combine(first_day, time(12), tzinfo=timezone.utc)
        rate = card.find_rate(model, deployment_type, region, at, service_tier=tier)
        card_price = kind_price(rate, kind) if rate is not None else None
        if rate is None or prices_differ(billed, card_price):
            drift.append({"month": month, "model": model, "kind": kind, "deployment_type": deployment_type,
                          "region": region, "service_tier": tier, "billed_per_1m": billed, "card_per_1m": card_price,
                          "tokens": tokens})
    return drift
