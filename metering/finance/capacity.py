"""Fixed monthly costs of a deployment, allocated to the subscriptions that used it.

A PTU deployment costs the same each month however much it is used; its requests are stored with
tokens but no per-token cost (``not_billable``). Finance still wants to charge it back, so the
monthly cost (from a small CSV, ``deployment,backend_id,month,monthly_cost,currency[,kind]``) is
split over the subscriptions by their share of the deployment's tokens that month.

Any other fixed monthly cost of a deployment is allocated the same way: the hosting hours of a
fine-tuned model's deployment, a support contract, anything finance adds, named by ``kind``
(``provisioned`` when the column is absent or empty, so PTU cost files without it still work). A
``provisioned`` cost is shared by the deployment's *provisioned* tokens; any other kind by all of
the deployment's tokens that month (a fine-tuned deployment is also billed per token).

The split is exact: every part is a whole number of the cost's smallest unit (the cent, or finer
when the cost has more decimals), the parts add up to the monthly cost exactly, and the remainder
units go to the largest fractional remainders, ties broken by subscription id, so the result is
the same on every run. A month with no provisioned tokens is charged to ``(unallocated)``: the
capacity was paid for, and the cost never disappears from the totals.

Pure functions, no I/O.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

UNALLOCATED = "(unallocated)"
HEADER = ("deployment", "backend_id", "month", "monthly_cost", "currency")
KIND_HEADER = HEADER + ("kind",)
PROVISIONED = "provisioned"
KIND = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,39}$")
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
CURRENCY = re.compile(r"^[A-Z]{3}$")

K = TypeVar("K", bound=Hashable)


class PtuCostError(ValueError):
    """A PTU costs file that cannot be used: the message names the line and the problem."""


@dataclass(frozen=True)
class PtuCost:
    """One provisioned deployment's cost for one month (``backend_id`` None: on any backend)."""

    deployment: str
    backend_id: str | None
    month: str
    monthly_cost: Decimal
    currency: str
    kind: str = PROVISIONED  # what the fixed cost is: provisioned capacity, fine-tune hosting, …

    @property
    def label(self) -> str:
        where = f" on {self.backend_id}" if self.backend_id else ""
        what = "" if self.kind == PROVISIONED else f" ({self.kind})"
        return f"{self.deployment}{where} {self.month}{what}"

    @property
    def provisioned(self) -> bool:
        """A PTU cost: shared by the deployment's provisioned tokens only."""
        return self.kind == PROVISIONED

    def matches(self, deployment: str | None, backend_id: str | None, month: str) -> bool:
        return (
            deployment == self.deployment
            and month == self.month
            and (self.backend_id is None or backend_id == self.backend_id)
        )


def parse_ptu_costs_csv(text: str, source: str = "PTU costs") -> list[PtuCost]:
    """Parse ``deployment,backend_id,month,monthly_cost,currency[,kind]`` (empty backend_id: any
    backend; no or empty kind: ``provisioned``).

    All problems are collected and raised together, each with its line number."""
    reader = csv.reader(io.StringIO(text))
    rows = [row for row in reader]
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()
    if not rows:
        raise PtuCostError(f"{source}: empty file; expected the header {','.join(HEADER)}")
    header = tuple(cell.strip().lower() for cell in rows[0])
    if header not in (HEADER, KIND_HEADER):
        raise PtuCostError(f"{source}: line 1: header must be {','.join(KIND_HEADER)} (kind optional; "
                           f"got {','.join(header)})")
    costs: list[PtuCost] = []
    errors: list[str] = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            errors.append(f"{source}: line {number}: expected {len(header)} fields, got {len(row)}")
            continue
        deployment, backend_id, month, amount, currency = (cell.strip() for cell in row[:5])
        kind = (row[5].strip().lower() if len(row) > 5 else "") or PROVISIONED
        problems = []
        if not KIND.match(kind):
            problems.append(f"kind {kind!r} is not a short name such as provisioned or fine_tune_hosting")
        if not deployment:
            problems.append("deployment is empty")
        if not MONTH.match(month):
            problems.append(f"month {month!r} is not YYYY-MM")
        try:
            cost = Decimal(amount)
            if not cost.is_finite() or cost < 0:
                raise InvalidOperation
        except InvalidOperation:
            problems.append(f"monthly_cost {amount!r} is not a non-negative decimal number")
            cost = Decimal(0)
        if not CURRENCY.match(currency):
            problems.append(f"currency {currency!r} is not a three-letter code such as USD")
        if problems:
            errors.append(f"{source}: line {number}: " + "; ".join(problems))
            continue
        costs.append(PtuCost(deployment, backend_id or None, month, cost, currency, kind))
    errors.extend(_overlaps(costs, source))
    if errors:
        raise PtuCostError("\n".join(errors))
    return costs


def _overlaps(costs: Sequence[PtuCost], source: str) -> list[str]:
    """A deployment's month may be priced once per backend, or once for all backends, not both
    (per kind of cost: a deployment may have capacity and hosting costs in one month)."""
    by_key: dict[tuple[str, str, str], list[PtuCost]] = defaultdict(list)
    for cost in costs:
        by_key[(cost.deployment, cost.month, cost.kind)].append(cost)
    errors = []
    for (deployment, month, kind), items in sorted(by_key.items()):
        backends = [c.backend_id for c in items]
        if len(set(backends)) != len(backends) or (None in backends and len(backends) > 1):
            what = "" if kind == PROVISIONED else f" ({kind})"
            errors.append(f"{source}: {deployment} {month}{what} is priced more than once (each backend once, "
                          "or one row with an empty backend_id for all of them)")
    return errors


def unit_of(amount: Decimal) -> Decimal:
    """The smallest unit to allocate ``amount`` in: the cent, or finer when it has more decimals."""
    exponent = amount.normalize().as_tuple().exponent
    places = max(2, -exponent if isinstance(exponent, int) else 2)
    return Decimal(1).scaleb(-places)


def allocate(amount: Decimal, weights: Mapping[K, int], unit: Decimal | None = None) -> dict[K, Decimal]:
    """Split ``amount`` over ``weights`` in whole ``unit`` s (largest remainder method).

    The parts add up to ``amount`` exactly. Each key first gets the whole units of its exact share;
    the units left over go one each to the largest fractional remainders, ties broken by key order
    (``str`` of the key), so the split is deterministic. Keys with zero weight get zero. With no
    weight at all, nothing can be allocated: the caller decides where the amount goes.
    """
    unit = unit if unit is not None else unit_of(amount)
    total_weight = sum(weights.values())
    if total_weight <= 0:
        raise ValueError("nothing to allocate by: all weights are zero")
    units = amount / unit
    if units != units.to_integral_value():
        raise ValueError(f"{amount} is not a whole number of {unit}")
    total_units = int(units)
    parts: dict[K, int] = {}
    remainders: list[tuple[int, str, K]] = []
    for key, weight in weights.items():
        if weight < 0:
            raise ValueError("weights must not be negative")
        whole, remainder = divmod(total_units * weight, total_weight)  # exact integer arithmetic
        parts[key] = whole
        remainders.append((remainder, str(key), key))
    left = total_units - sum(parts.values())
    # Largest remainder first; equal remainders in key order (smallest key first).
    for _, _, key in sorted(remainders, key=lambda item: (-item[0], item[1]))[:left]:
        parts[key] += 1
    return {key: unit * count for key, count in parts.items()}


@dataclass(frozen=True)
class Allocation:
    """One part of a PTU cost: the cost it comes from, the subscription and the group it is charged to."""

    cost: PtuCost
    subscription: str
    group: tuple[Any, ...]
    tokens: int
    requests: int
    amount: Decimal


def allocate_ptu(
    costs: Iterable[PtuCost],
    usage: Sequence[Mapping[str, Any]],
    dimensions: Sequence[str],
) -> list[Allocation]:
    """Allocate each PTU cost to subscriptions by tokens, then each subscription's part to the
    report's groups (``dimensions``) by tokens. ``usage`` rows come from
    ``db.queries.provisioned_tokens`` (keys ``ptu_month``, ``ptu_deployment``, ``ptu_backend_id``,
    ``ptu_subscription``, the dimensions, ``requests`` and ``tokens``).

    Because the subscription split comes first, a subscription is charged the same amount whatever
    the report is grouped by; the group split only spreads that amount over its days, models, users…
    """
    allocations: list[Allocation] = []
    for cost in costs:
        rows = [row for row in usage
                if cost.matches(row["ptu_deployment"], row["ptu_backend_id"], row["ptu_month"])
                and (row.get("ptu_provisioned", True) or not cost.provisioned)]
        unit = unit_of(cost.monthly_cost)
        by_subscription: dict[str, int] = defaultdict(int)
        for row in rows:
            by_subscription[row["ptu_subscription"]] += int(row["tokens"])
        if sum(by_subscription.values()) <= 0:
            allocations.append(Allocation(cost, UNALLOCATED, idle_group(cost, dimensions), 0, 0, cost.monthly_cost))
            continue
        for subscription, amount in sorted(allocate(cost.monthly_cost, by_subscription, unit).items()):
            groups: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
            for row in rows:
                if row["ptu_subscription"] == subscription:
                    key = tuple(row[d] for d in dimensions)
                    groups[key][0] += int(row["tokens"])
                    groups[key][1] += int(row["requests"])
            weights = {key: tokens for key, (tokens, _) in groups.items()}
            if sum(weights.values()) <= 0:
                continue  # requests without tokens: no share, amount is 0
            for key, part in sorted(allocate(amount, weights, unit).items(), key=lambda item: str(item[0])):
                allocations.append(Allocation(cost, subscription, key, groups[key][0], groups[key][1], part))
    return allocations


def idle_group(cost: PtuCost, dimensions: Sequence[str]) -> tuple[Any, ...]:
    """The group an unused PTU's cost is charged to: its month and deployment, otherwise ``(unallocated)``."""
    known = {"month": cost.month, "deployment": cost.deployment}
    if cost.provisioned:
        known["deployment_type"] = "provisioned"
    return tuple(known.get(d, UNALLOCATED) for d in dimensions)


def by_subscription(allocations: Iterable[Allocation]) -> list[dict[str, Any]]:
    """The allocation per PTU cost × subscription: what finance charges back, with the token share."""
    parts: dict[tuple[PtuCost, str], dict[str, Any]] = {}
    for item in allocations:
        key = (item.cost, item.subscription)
        part = parts.setdefault(key, {
            "month": item.cost.month,
            "deployment": item.cost.deployment,
            "kind": item.cost.kind,
            "backend_id": item.cost.backend_id or "",
            "subscription": item.subscription,
            "requests": 0,
            "tokens": 0,
            "ptu_cost": Decimal(0),
            "currency": item.cost.currency,
            "monthly_cost": item.cost.monthly_cost,
        })
        part["requests"] += item.requests
        part["tokens"] += item.tokens
        part["ptu_cost"] += item.amount
    totals: dict[PtuCost, int] = defaultdict(int)
    for (cost, _), part in parts.items():
        totals[cost] += part["tokens"]
    rows = []
    for (cost, _), part in parts.items():
        part["token_share"] = (Decimal(part["tokens"]) / totals[cost]) if totals[cost] else Decimal(0)
        rows.append(part)
    return sorted(rows, key=lambda p: (p["month"], p["deployment"], p["kind"], p["backend_id"], p["subscription"]))

