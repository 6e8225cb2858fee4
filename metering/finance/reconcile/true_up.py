"""The month's true-up (pure: values in, values out): the chargeback per subscription × bill meter
that adds up to the Azure bill to the cent, and why each amount is what it is.

Per bill meter (resource × model × token kind × deployment type × tier) the difference ``billed −
metered cost`` is allocated in two steps (docs/reconciliation-true-up.md states the rule and its bound):

1. **Hidden usage first.** When the bill has more tokens than were metered, the shortfall goes first
   to the subscriptions whose requests could have hidden usage: estimated rows (streams without
   ``include_usage``, reasoning models whose hidden reasoning an estimate cannot see), ``partial`` rows
   and rows without usage (``usage_source`` ``estimated``, ``partial`` or ``none``). Each such request
   can absorb at most ``q`` tokens of the meter, ``q`` being the mean tokens per request of the
   meter's reported requests this month (no reported request: the meter's shortfall is the only
   bound), less what its estimate already counted; the shortfall is split in proportion to that room.
2. **Token share.** What remains (and a difference that is not a shortfall: a credit, a price
   difference, tokens metered but not billed) goes by each subscription's share of the meter's tokens.

A bill line no metered row explains goes to the resource's owner (``owner_subscription_id`` of the
backends CSV), else to the resource's users, else stays **unattributed** (``subscription_id`` None):
a resource no backend maps to is never spread over everyone. Metered cost on a backend with no
resource, or on a resource the bill does not cover, is not on this bill: it is taken out (adjustment
= −metered cost) and the reason says so. PTU allocations (``metering ptu allocate``) are charged as
stored, and the bill's capacity lines true them up in proportion (a bill without capacity lines
bills PTU as a reservation purchase: the allocation then stands as billed); without stored allocations the
capacity lines are the PTU cost, shared by the resource's provisioned tokens.

Final charges are whole cents: each subscription's exact total is rounded by largest remainder so
that they add up to the bill (rounded to the cent) exactly, then each subscription's cents are spread
over its lines the same way; a line's adjustment is what makes its final charge.
"""

from __future__ import annotations

import decimal
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

from metering.finance.reconcile.compare import TOKEN_KINDS, UNMAPPED_BACKEND, MeterKey, _meter_of, bill_model_for
from metering.price.meters import CAPACITY, Backend, BillLine
from metering.price.metered_kinds import TOOL_KINDS, UNIT_KINDS

CENT = Decimal("0.01")
SUSPECT_SOURCES = ("estimated", "partial", "none")  # usage an estimate or a cut stream may understate
_CONTEXT = decimal.Context(prec=50)

# rule: how a line's adjustment was decided
TOKEN_SHARE = "token_share"  # the meter's difference by share of its tokens
HIDDEN_USAGE = "hidden_usage"  # (part of) the meter's token shortfall, to requests that could hide it
OWNER = "owner"  # a bill line no metered row explains, to the resource's owner (backends CSV)
RESOURCE_USERS = "resource_users"  # a meter nobody metered, to the resource's users by tokens
UNATTRIBUTED = "unattributed"  # a bill line nobody can be charged for: its own line, no subscription
OUTSIDE_BILL = "outside_bill"  # metered cost this bill does not cover (unmapped backend, resource not billed)
PTU = "ptu"  # stored PTU allocation, trued up by the bill's capacity lines
CAPACITY_USERS = "capacity"  # capacity lines as PTU cost (no stored allocation), by provisioned tokens


class TrueUpError(ValueError):
    """The month cannot be trued up (no bill, several currencies); the message says why."""


@dataclass(frozen=True)
class PtuShare:
    """A stored PTU allocation row (``ptu_allocations``)."""

    deployment: str
    backend_id: str | None
    subscription_id: str | None
    allocated_cost: Decimal
    currency: str


@dataclass(frozen=True)
class TrueUpLine:
    """One subscription × bill meter (or PTU deployment, or unattributed line) of the true-up."""

    subscription_id: str | None
    subscription_name: str | None
    resource_id: str
    meter: str
    meter_name: str | None
    model: str | None
    token_kind: str | None
    deployment_type: str | None
    service_tier: str | None
    tokens: int
    metered_cost: Decimal
    ptu_cost: Decimal
    adjustment: Decimal
    final_charge: Decimal
    currency: str
    rule: str
    reason: str

    def as_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class TrueUp:
    """A month trued up: its lines, the bill they add up to, and notes for the person running it."""

    month: str
    currency: str
    bill: Decimal  # the exact sum of the month's bill lines (and of a PTU allocation the lines do not have)
    lines: list[TrueUpLine]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Usage:
    """A subscription's metered usage of one bill meter."""

    tokens: int = 0
    cost: Decimal = Decimal(0)
    suspect_requests: int = 0  # requests of the meter's model that could hide usage
    suspect_tokens: int = 0  # what those requests' estimates counted on this meter
    reported_requests: int = 0


@dataclass
class _Part:
    """One line before rounding: exact amounts and how they were decided."""

    subscription: str | None
    resource: str
    meter: MeterKey | None
    label: str
    tokens: int = 0
    metered: Decimal = Decimal(0)
    ptu: Decimal = Decimal(0)
    adjustment: Decimal = Decimal(0)
    rule: str = TOKEN_SHARE
    reasons: list[str] = field(default_factory=list)

    @property
    def exact(self) -> Decimal:
        return self.metered + self.ptu + self.adjustment


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def _suspect(group: Mapping[str, Any]) -> bool:
    return group.get("usage_source") in SUSPECT_SOURCES or group.get("price_status") == "no_usage"


def compute_true_up(
    month: str,
    lines: Sequence[BillLine],
    metered: Iterable[Mapping[str, Any]],
    backends: Mapping[str, Backend],
    ptu: Sequence[PtuShare] = (),
    names: Mapping[str, str] | None = None,
    metered_currencies: Sequence[str] = (),
) -> TrueUp:
    """The month's true-up. ``metered``: ``db.bill.metered_usage(..., by_usage_source=True)`` groups
    (per day × backend × model × deployment type × subscription × price status × usage source × tier,
    with ``{kind}_tokens``, ``{kind}_cost`` and ``requests``); ``names``: subscription id → name."""
    if not lines:
        raise TrueUpError(f"no bill lines for {month}: import the month's Cost Management export with "
                          "`metering bill import` first")
    currencies = sorted({line.currency for line in lines} | {c for c in ptu_currencies(ptu)})
    if len(currencies) > 1:
        raise TrueUpError(f"the bill and PTU costs of {month} are in several currencies ({', '.join(currencies)}): "
                          "no total can add them")
    currency = currencies[0]
    foreign = sorted(c for c in metered_currencies if c != currency)
    if foreign:
        raise TrueUpError(f"the bill is in {currency} and the metered cost in {', '.join(foreign)}: a true-up would "
                          "add the exchange rate to the charges (keep the card in the billing currency)")
    names = names or {}
    notes: list[str] = []
    resources_of = {b.backend_id: b.resource_id for b in backends.values()}
    owners = {b.resource_id: b.owner_subscription_id for b in backends.values() if b.owner_subscription_id}

    billed: dict[tuple[str, MeterKey], list[Any]] = defaultdict(lambda: [Decimal(0), 0, None])
    for line in lines:
        entry = billed[(line.resource_id, _meter_of(line))]
        entry[0] += line.cost
        entry[1] += line.tokens or 0
        entry[2] = entry[2] or line.meter_name
    billed_resources = {resource for resource, _ in billed}
    bill_models = sorted({meter.model for _, meter in billed if meter.model and meter.kind in TOKEN_KINDS})

    usage: dict[tuple[str, MeterKey], dict[str, _Usage]] = defaultdict(lambda: defaultdict(_Usage))
    suspects: dict[tuple[str, str, str | None, str | None], dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0]))
    provisioned: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    outside: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, Decimal(0), ""])
    for group in metered:
        subscription = group["subscription"]
        tokens = {kind: int(group.get(f"{kind}_tokens") or 0) for kind in TOKEN_KINDS}
        resource = resources_of.get(group.get("backend_id") or "")
        if group["deployment_type"] == "provisioned":
            if resource is not None:
                provisioned[resource][subscription] += sum(tokens.values())
            continue
        if group["price_status"] == "not_billable":
            continue  # throttled or failed: Azure bills nothing for it
        cost = sum((group.get(f"{kind}_cost") or Decimal(0) for kind in TOKEN_KINDS), Decimal(0))
        if resource is None or resource not in billed_resources:
            why = ("requests without a backend id: no resource to find on the bill" if not group.get("backend_id")
                   else f"backend {group['backend_id']} maps to no resource (map it with `metering backends import`)"
                   if resource is None else f"resource {resource} has no line on this bill")
            place = outside[(subscription, resource or UNMAPPED_BACKEND)]
            place[0] += sum(tokens.values())
            place[1] += cost
            place[2] = why
            continue
        model = bill_model_for(group["model"], bill_models) or group["model"] or "(unknown)"
        tier = group.get("service_tier")
        if _suspect(group):
            suspects[(resource, model, group["deployment_type"], tier)][subscription][0] += int(group.get("requests") or 0)
        for kind in TOKEN_KINDS:
            kind_cost = group.get(f"{kind}_cost") or Decimal(0)
            if not tokens[kind] and not kind_cost:
                continue
            tool = kind in TOOL_KINDS  # billed on the tool's meter, whatever model called it (compare.reconcile)
            meter = MeterKey(None if tool else model, kind, group["deployment_type"], service_tier=None if tool else tier)
            entry = usage[(resource, meter)][subscription]
            entry.tokens += tokens[kind]
            entry.cost += kind_cost
            if _suspect(group):
                entry.suspect_tokens += tokens[kind]
            elif group.get("usage_source") == "reported":
                entry.reported_requests += int(group.get("requests") or 0)
    # Suspect requests apply to every token meter of their model (an estimate may miss any kind).
    token_meters = {key for key in billed if key[1].kind in TOKEN_KINDS} | set(usage)
    for resource, meter in token_meters:
        for subscription, (count,) in suspects.get((resource, meter.model, meter.deployment_type, meter.service_tier),
                                                   {}).items():
            usage[(resource, meter)][subscription].suspect_requests = count

    by_resource: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (resource, meter), users in usage.items():
        if meter.kind in UNIT_KINDS:
            continue  # milliseconds of audio, characters, calls are no tokens: a resource's users by tokens only
        for subscription, entry in users.items():
            by_resource[resource][subscription] += entry.tokens

    parts: list[_Part] = []
    for (resource, meter) in sorted(set(billed) | set(usage), key=lambda k: (k[0], k[1].label)):
        bill_cost, bill_tokens, meter_name = billed.get((resource, meter), (Decimal(0), 0, None))
        if meter.kind == CAPACITY:
            continue  # capacity: with the PTU allocations below
        users = usage.get((resource, meter), {})
        line_parts = {s: _Part(s, resource, meter, meter.label, tokens=u.tokens, metered=u.cost)
                      for s, u in users.items() if u.tokens or u.cost or u.suspect_requests}
        difference = bill_cost - sum((p.metered for p in line_parts.values()), Decimal(0))
        if line_parts:
            _allocate_meter(difference, bill_cost, bill_tokens, users, line_parts, currency)
            parts.extend(line_parts.values())
            continue
        if not difference:
            continue
        owner = owners.get(resource)
        if owner is not None:
            parts.append(_Part(owner, resource, meter, meter.label, adjustment=difference, rule=OWNER, reasons=[
                f"{_money(difference)} {currency} billed on a meter nobody metered; charged to the resource's owner "
                "(owner_subscription_id in the backends CSV)"]))
        elif sum(by_resource.get(resource, {}).values()) > 0:
            weights = by_resource[resource]
            total = sum(weights.values())
            for subscription, weight in sorted(weights.items()):
                if weight:
                    parts.append(_Part(subscription, resource, meter, meter.label, rule=RESOURCE_USERS,
                                       adjustment=_CONTEXT.divide(difference * weight, Decimal(total)), reasons=[
                                           f"{_money(difference)} {currency} billed on a meter nobody metered, spread "
                                           f"over the resource's users by tokens ({weight:,} of {total:,})"]))
        else:
            why = ("no backend maps to this resource" if resource not in set(resources_of.values())
                   else "nobody metered this resource this month")
            parts.append(_Part(None, resource, meter, meter.label, adjustment=difference, rule=UNATTRIBUTED, reasons=[
                f"{_money(difference)} {currency} billed, {why}: no subscription is charged for it "
                "(name an owner with owner_subscription_id in the backends CSV)"]))
    for (subscription, resource), (tokens, cost, why) in sorted(outside.items(), key=lambda i: (i[0][0], i[0][1])):
        if cost or tokens:
            parts.append(_Part(subscription, resource, None, "(not on this bill)", tokens=tokens, metered=cost,
                               adjustment=-cost, rule=OUTSIDE_BILL, reasons=[
                                   f"{tokens:,} tokens ({_money(cost)} {currency}) metered that this bill does not "
                                   f"cover: {why}"]))
            notes.append(f"{subscription}: {tokens:,} tokens ({_money(cost)} {currency}) metered outside this bill "
                         f"({why})")
    parts.extend(_capacity_parts(billed, ptu, provisioned, resources_of, owners, currency, notes))

    bill = sum((line.cost for line in lines), Decimal(0))
    if ptu and not any(meter.kind == CAPACITY for _, meter in billed):
        bill += sum((share.allocated_cost for share in ptu), Decimal(0))  # billed as a reservation (see above)
    final = _finalise(parts, cents(bill), names, currency)
    for subscription, amount in sorted(subscription_totals(final).items(), key=lambda i: (i[0] is None, i[0] or "")):
        if amount < 0:
            why = "; ".join(dict.fromkeys(line.reason for line in final
                                          if line.subscription_id == subscription and line.final_charge < 0))
            notes.append(f"{subscription or '(unattributed)'} has a negative charge {_money(amount)} {currency}: {why}")
    return TrueUp(month, currency, bill, final, notes)


def ptu_currencies(ptu: Sequence[PtuShare]) -> set[str]:
    return {share.currency for share in ptu}


def _allocate_meter(difference: Decimal, bill_cost: Decimal, bill_tokens: int, users: Mapping[str, _Usage],
                    parts: Mapping[str, _Part], currency: str) -> None:
    """Spread one meter's difference over its users: a token shortfall first to the requests that
    could hide it (bounded, see the module docstring), the rest by token share."""
    metered_tokens = sum(u.tokens for u in users.values())
    shortfall = bill_tokens - metered_tokens
    rest = difference
    if difference > 0 and shortfall > 0 and bill_tokens:
        reported_requests = sum(u.reported_requests for u in users.values())
        reported_tokens = sum(u.tokens - u.suspect_tokens for u in users.values())
        per_request = (_CONTEXT.divide(Decimal(reported_tokens), Decimal(reported_requests))
                       if reported_requests else None)
        room: dict[str, Decimal] = {}
        for subscription, entry in users.items():
            if not entry.suspect_requests or subscription not in parts:
                continue
            if per_request is None:
                room[subscription] = Decimal(entry.suspect_requests)  # unbounded: in proportion to requests
            else:
                room[subscription] = max(Decimal(0), per_request * entry.suspect_requests - entry.suspect_tokens)
        total_room = sum(room.values(), Decimal(0))
        if total_room > 0:
            hidden_tokens = Decimal(shortfall) if per_request is None else min(Decimal(shortfall), total_room)
            price = _CONTEXT.divide(bill_cost, Decimal(bill_tokens))
            hidden = min(difference, price * hidden_tokens)
            for subscription, share in room.items():
                if not share:
                    continue
                amount = _CONTEXT.divide(hidden * share, total_room)
                part = parts[subscription]
                part.adjustment += amount
                part.rule = HIDDEN_USAGE
                bound = ("no reported request to bound it" if per_request is None
                         else f"up to {per_request.quantize(Decimal(1), rounding=ROUND_HALF_UP):,} tokens each")
                part.reasons.append(
                    f"{_money(amount)} {currency} of the meter's {shortfall:,}-token shortfall for "
                    f"{users[subscription].suspect_requests:,} request(s) whose usage was estimated, partial or "
                    f"missing ({bound})")
            rest = difference - hidden
    if not rest:
        return
    weights = {s: Decimal(users[s].tokens) for s in parts}
    if not sum(weights.values()):
        weights = {s: Decimal(users[s].suspect_requests or 1) for s in parts}
    total = sum(weights.values(), Decimal(0))
    for subscription, weight in weights.items():
        if not weight:
            continue
        amount = _CONTEXT.divide(rest * weight, total)
        part = parts[subscription]
        part.adjustment += amount
        part.reasons.append(f"{_money(amount)} {currency} by token share ({int(weight):,} of {int(total):,}) of the "
                            f"meter's {'remaining ' if rest != difference else ''}difference {_money(rest)}"
                            + (" (metered more than billed)" if rest < 0 else ""))


def _capacity_parts(billed: Mapping[tuple[str, MeterKey], list[Any]], ptu: Sequence[PtuShare],
                    provisioned: Mapping[str, Mapping[str, int]], resources_of: Mapping[str, str],
                    owners: Mapping[str, str], currency: str, notes: list[str]) -> list[_Part]:
    """Stored PTU allocations, trued up by the bill's capacity lines (in proportion to each share);
    without allocations, each capacity line to its resource's provisioned users by tokens."""
    capacity = {key: entry for key, entry in billed.items() if key[1].kind == CAPACITY}
    capacity_total = sum((entry[0] for entry in capacity.values()), Decimal(0))
    parts: list[_Part] = []
    if ptu:
        allocated = sum((share.allocated_cost for share in ptu), Decimal(0))
        # No capacity line at all: the PTU is billed as a reservation (a purchase, which `bill import`
        # does not keep), so the allocation stands as stored and counts as billed.
        difference = capacity_total - allocated if capacity else Decimal(0)
        if not capacity:
            notes.append(f"the bill has no capacity lines: the stored PTU allocation ({_money(allocated)} {currency}) "
                         "is charged as stored and counted as billed (a PTU reservation is a purchase, not usage)")
        for share in sorted(ptu, key=lambda s: (s.deployment, s.subscription_id or "")):
            resource = resources_of.get(share.backend_id or "", "(PTU)")
            part = _Part(share.subscription_id, resource, None, f"PTU {share.deployment}", ptu=share.allocated_cost,
                         rule=PTU, reasons=[f"PTU allocation {_money(share.allocated_cost)} {currency} "
                                            f"(`metering ptu allocate`)"])
            if difference and allocated:
                part.adjustment = _CONTEXT.divide(difference * share.allocated_cost, allocated)
                part.reasons.append(f"{_money(part.adjustment)} {currency}: the bill's capacity lines "
                                    f"({_money(capacity_total)}) differ from the allocated PTU cost "
                                    f"({_money(allocated)}), in proportion")
            parts.append(part)
        if difference and not allocated:
            parts.append(_Part(None, "(PTU)", None, "capacity", adjustment=difference, rule=UNATTRIBUTED,
                               reasons=[f"{_money(difference)} {currency} of capacity billed, nothing allocated"]))
        if difference:
            notes.append(f"the bill's capacity lines ({_money(capacity_total)} {currency}) differ from the stored PTU "
                         f"allocation ({_money(allocated)} {currency}): the difference is spread over it in proportion")
        return parts
    for (resource, meter), (cost, _, meter_name) in sorted(capacity.items(), key=lambda i: (i[0][0], i[0][1].label)):
        users = provisioned.get(resource, {})
        total = sum(users.values())
        owner = owners.get(resource)
        if total:
            for subscription, weight in sorted(users.items()):
                if weight:
                    parts.append(_Part(subscription, resource, meter, meter.label, rule=CAPACITY_USERS,
                                       ptu=_CONTEXT.divide(cost * weight, Decimal(total)), reasons=[
                                           f"capacity billed {_money(cost)} {currency}, by provisioned tokens "
                                           f"({weight:,} of {total:,}); no stored PTU allocation"]))
        elif owner is not None:
            parts.append(_Part(owner, resource, meter, meter.label, adjustment=cost, rule=OWNER, reasons=[
                f"capacity billed {_money(cost)} {currency} with no provisioned usage: to the resource's owner"]))
        elif cost:
            parts.append(_Part(None, resource, meter, meter.label, adjustment=cost, rule=UNATTRIBUTED, reasons=[
                f"capacity billed {_money(cost)} {currency} with no provisioned usage: no subscription is charged"]))
    return parts


def apportion(target: Decimal, exact: Mapping[Any, Decimal]) -> dict[Any, Decimal]:
    """Whole cents per key that add up to ``target`` (whole cents), each within a cent of its exact
    (possibly negative) amount: floors first, the cents left go to the largest remainders (ties by
    key order); a negative rest is taken from the smallest remainders."""
    keys = list(exact)
    if not keys:
        return {}
    floors = {key: exact[key].quantize(CENT, rounding=ROUND_FLOOR) for key in keys}
    left = int((target - sum(floors.values(), Decimal(0))) / CENT)
    order = sorted(range(len(keys)), key=lambda i: (-(exact[keys[i]] - floors[keys[i]]), i))
    out = dict(floors)
    step = CENT if left >= 0 else -CENT
    sequence = order if left >= 0 else order[::-1]
    for index in range(abs(left)):
        out[keys[sequence[index % len(keys)]]] += step
    return out


def _finalise(parts: Sequence[_Part], target: Decimal, names: Mapping[str, str], currency: str) -> list[TrueUpLine]:
    """Whole-cent final charges: per subscription (largest remainder to the rounded bill), then per line
    within each subscription; the adjustment is what makes each line's final charge."""
    merged: dict[tuple[str | None, str, str], _Part] = {}
    for part in parts:  # one line per subscription × resource × meter (the table's unique key)
        if not (part.tokens or part.metered or part.ptu or part.adjustment):
            continue
        key = (part.subscription, part.resource, part.label)
        if key not in merged:
            merged[key] = part
            continue
        into = merged[key]
        into.tokens += part.tokens
        into.metered += part.metered
        into.ptu += part.ptu
        into.adjustment += part.adjustment
        into.reasons += part.reasons
    parts = list(merged.values())
    per_subscription: dict[str | None, Decimal] = defaultdict(Decimal)
    for part in parts:
        per_subscription[part.subscription] += part.exact
    order = sorted(per_subscription, key=lambda s: (s is None, s or ""))
    totals = apportion(target, {s: per_subscription[s] for s in order})
    lines: list[TrueUpLine] = []
    for subscription in order:
        own = [p for p in parts if p.subscription == subscription]
        own.sort(key=lambda p: (p.resource, p.label))
        charges = apportion(totals[subscription], {index: part.exact for index, part in enumerate(own)})
        for index, part in enumerate(own):
            final = charges[index]
            reason = "; ".join(part.reasons) or "matches the bill"
            if final < 0:
                reason = (f"negative: the bill charged less than was metered or allocated here ({reason})")
            meter = part.meter
            lines.append(TrueUpLine(
                subscription_id=subscription, subscription_name=names.get(subscription or ""),
                resource_id=part.resource, meter=part.label,
                meter_name=meter.meter_name if meter is not None else None,
                model=meter.model if meter is not None else None,
                token_kind=meter.kind if meter is not None else (CAPACITY if part.rule == PTU else None),
                deployment_type=meter.deployment_type if meter is not None else None,
                service_tier=meter.service_tier if meter is not None else None,
                tokens=part.tokens, metered_cost=part.metered, ptu_cost=part.ptu,
                adjustment=final - part.metered - part.ptu, final_charge=final, currency=currency,
                rule=part.rule, reason=reason[:1000]))
    return lines


def subscription_totals(rows: Iterable[Any]) -> dict[str | None, Decimal]:
    """Final charge per subscription (None: the unattributed line) of true-up lines or stored rows."""
    out: dict[str | None, Decimal] = defaultdict(Decimal)
    for row in rows:
        out[_get(row, "subscription_id")] += _get(row, "final_charge")
    return dict(out)


def headline(rows: Iterable[Any]) -> dict[str, Decimal]:
    """The four figures every output heads with, whole cents that add up: the bill (the final charges'
    sum), metered cost and PTU cost (each rounded to the cent) and the adjustment (the rest)."""
    rows = list(rows)
    bill = cents(sum((_get(r, "final_charge") for r in rows), Decimal(0)))  # whole cents already; one scale
    metered = cents(sum((_get(r, "metered_cost") for r in rows), Decimal(0)))
    ptu = cents(sum((_get(r, "ptu_cost") for r in rows), Decimal(0)))
    return {"bill": bill, "metered": metered, "ptu": ptu, "adjustment": bill - metered - ptu}


def headline_text(figures: Mapping[str, Decimal], currency: str) -> str:
    """``bill 4.64 USD = metered 2.14 + PTU 2.50 + adjustment 0.00``: one wording for every format."""
    return (f"bill {_money(figures['bill'])} {currency} = metered {_money(figures['metered'])} + PTU "
            f"{_money(figures['ptu'])} + adjustment {_money(figures['adjustment'])}")


def _get(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def _money(amount: Decimal) -> str:
    return str(cents(amount))

