"""Chargeback reports: aggregated usage rows → a pandas table with totals and data quality
(``finance.render`` turns it into each output format).

Every report carries its data quality (estimated, incomplete and unpriced requests and tokens)
next to the money, so that nobody reads a total without knowing what it rests on. Money stays
``Decimal`` from the database to the file: summed exactly, written as exact decimal text (CSV,
JSON), ``decimal128(28, 12)`` (Parquet), or numbers formatted with two decimals (XLSX, HTML).

Formats: ``table`` (terminal), ``csv``, ``json``, ``xlsx``, ``parquet``, ``html`` (one
self-contained file, see ``metering.finance.report.html``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd
import sqlalchemy as sa

from db import queries
from db.bill import load_backends
from metering.finance.report.options import Period
from metering.finance.capacity import PtuCost, allocate_ptu, by_subscription
from metering.finance.reconcile.true_up import apportion
from metering.finance.reconcile.true_up import headline as true_up_headline
from metering.finance.reconcile.true_up import headline_text as true_up_headline_text

CENT = Decimal("0.01")
MEASURE_COLUMNS = (
    "requests",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost",
    "currency",
    "estimated_requests",
    "estimated_tokens",
    "incomplete_requests",
    "incomplete_tokens",
    "unpriced_requests",
    "unpriced_tokens",
    "not_billable_requests",
    "provisioned_requests",
    "provisioned_tokens",
    "fallback_priced_requests",
    "fallback_priced_tokens",
    "priority_requests",
    # the token kinds Azure bills apart (parts of prompt, cached and completion tokens)
    "cache_write_tokens",
    "audio_prompt_tokens",
    "image_prompt_tokens",
    "cached_audio_tokens",
    "cached_image_tokens",
    "audio_completion_tokens",
    "image_completion_tokens",
    # the units Azure bills beyond tokens, each at its own rate (part of cost): audio in whole seconds
    "audio_seconds",
    "input_characters",
    "web_search_calls",
    "file_search_calls",
    "code_interpreter_sessions",
)
COST_STATUS = "cost_status"  # complete | partial | unknown: whether the cost covers every billable request
PTU_COLUMNS = ("ptu_cost", "total_charge")
MONEY_COLUMNS = ("cost", "ptu_cost", "true_up", "total_charge")
TABLE_COLUMNS = ("requests", "total_tokens", "cost", "currency", "estimated_requests", "unpriced_requests")
TABLE_PTU_COLUMNS = ("requests", "total_tokens", "cost", "ptu_cost", "total_charge", "currency",
                     "estimated_requests", "unpriced_requests")
LABELS = {
    "business_unit": "Business unit",
    "cost_center": "Cost center",
    "subscription": "Subscription",
    "product": "Product",
    "user": "User",
    "api": "API",
    "deployment": "Deployment",
    "model": "Model",
    "deployment_type": "Deployment type",
    "endpoint": "Endpoint",
    "backend_region": "Backend region",
    "month": "Month",
    "day": "Day",
    "requests": "Requests",
    "total_tokens": "Tokens",
    "prompt_tokens": "Prompt tokens",
    "cached_tokens": "Cached tokens",
    "completion_tokens": "Completion tokens",
    "reasoning_tokens": "Reasoning tokens",
    "cost": "Pay-as-you-go cost",
    "ptu_cost": "PTU cost",
    "true_up": "True-up",
    "total_charge": "Total charge",
    "currency": "Currency",
    "estimated_requests": "Estimated requests",
    "estimated_tokens": "Estimated tokens",
    "incomplete_requests": "Incomplete requests",
    "incomplete_tokens": "Incomplete tokens",
    "unpriced_requests": "Unpriced requests",
    "unpriced_tokens": "Unpriced tokens",
    "not_billable_requests": "Not billable requests",
    "provisioned_requests": "PTU requests",
    "provisioned_tokens": "PTU tokens",
    "cost_status": "Cost status",
    "fallback_priced_requests": "Fallback-priced requests",
    "fallback_priced_tokens": "Fallback-priced tokens",
    "priority_requests": "Priority-tier requests",
    "cache_write_tokens": "Cache-write tokens",
    "audio_prompt_tokens": "Audio input tokens",
    "image_prompt_tokens": "Image input tokens",
    "cached_audio_tokens": "Cached audio tokens",
    "cached_image_tokens": "Cached image tokens",
    "audio_completion_tokens": "Audio output tokens",
    "image_completion_tokens": "Image output tokens",
    "audio_seconds": "Audio seconds (transcribed)",
    "input_characters": "Speech characters",
    "web_search_calls": "Web search calls",
    "file_search_calls": "File search calls",
    "code_interpreter_sessions": "Code interpreter sessions",
}


# --------------------------------------------------------------------------- period


def ptu_costs_in(period: Period, costs: Sequence[PtuCost]) -> tuple[list[PtuCost], list[PtuCost]]:
    """The PTU costs whose month the period covers whole, and those it covers only in part.

    A monthly capacity cost is allocated by the whole month's tokens, so a period that cuts a month
    in two cannot carry a fair part of it: such costs are left out and the report says so."""
    whole, partial = [], []
    for cost in costs:
        covered = period.covers_month(cost.month)
        if covered:
            whole.append(cost)
        elif covered is None:
            partial.append(cost)
    return whole, partial


# --------------------------------------------------------------------------- frames


def to_frame(rows: list[dict[str, Any]], dimensions: tuple[str, ...]) -> pd.DataFrame:
    """Aggregated rows as a DataFrame: dimensions first, then measures; cost stays ``Decimal``."""
    columns = list(dimensions) + list(MEASURE_COLUMNS)
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    for column in MEASURE_COLUMNS:
        if column not in ("cost", "currency"):
            frame[column] = frame[column].map(_whole).astype("int64")
    statuses = [cost_status(record) for record in frame.to_dict("records")]
    frame["cost"] = object_series(frame, [None if status == "unknown" else c if isinstance(c, Decimal) else Decimal(0)
                                          for c, status in zip(frame["cost"], statuses)])
    frame["currency"] = object_series(frame, [c if isinstance(c, str) else None for c in frame["currency"]])
    frame[COST_STATUS] = object_series(frame, statuses)
    for dimension in dimensions:
        frame[dimension] = object_series(frame, ["" if v is None else str(v) for v in frame[dimension]])
    return frame


def _whole(value: Any) -> int:
    """A count as a whole number; audio seconds (stored to the millisecond) rounded half up."""
    if value is None or value != value:
        return 0
    if isinstance(value, int):
        return value
    return int(Decimal(str(value)).to_integral_value(rounding=ROUND_HALF_UP))


def cost_status(counts: dict[str, Any]) -> str:
    """Whether a group's cost is ``complete`` (every billable request priced), ``partial`` (the cost
    of its priced requests, some are unpriced) or ``unknown`` (no request priced, some unpriced: the
    cost is null, never $0). PTU and not-billable requests cost nothing per token: they are known."""
    unpriced = int(counts.get("unpriced_requests") or 0)
    if not unpriced:
        return "complete"
    priced = int(counts.get("requests") or 0) - unpriced - int(counts.get("not_billable_requests") or 0)
    return "partial" if priced > 0 else "unknown"


def requests_sentence(counts: Mapping[str, Any]) -> str:
    """The one wording of the request split every format uses: "not billable" is every request with
    no per-token charge (PTU and throttled or failed), as ``not_billable_requests`` counts it."""
    payg, provisioned, failed = request_partition(counts)
    return (f"{payg:,} billable pay-as-you-go, {provisioned + failed:,} not billable per token "
            f"({provisioned:,} PTU, {failed:,} throttled or failed)")


def request_partition(counts: Mapping[str, Any]) -> tuple[int, int, int]:
    """Requests split without overlap: (billable pay-as-you-go, provisioned (PTU), not billable
    (throttled, failed)). Every PTU request is ``not_billable`` per token, so it is taken out of
    that count rather than counted twice."""
    provisioned = int(counts["provisioned_requests"])
    not_billable = int(counts["not_billable_requests"]) - provisioned
    return int(counts["requests"]) - provisioned - not_billable, provisioned, not_billable


def known(value: Decimal | None) -> Decimal:
    """An amount for arithmetic that only adds what is known (charts, sub-totals): None → 0."""
    return Decimal(0) if value is None else value


def add_known(values: Any) -> Decimal | None:
    """The sum of the known amounts; None when every amount is unknown (and there is at least one)."""
    values = list(values)
    amounts = [v for v in values if v is not None]
    if values and not amounts:
        return None
    return sum(amounts, Decimal(0))


def object_series(frame: pd.DataFrame, values: list[Any]) -> pd.Series:
    """A column of Python objects as given (Decimal stays Decimal, None stays None, not NaN)."""
    return pd.Series(values, index=frame.index, dtype=object)


def add_ptu(frame: pd.DataFrame, dimensions: tuple[str, ...], allocations: Sequence[Any]) -> pd.DataFrame:
    """Add ``ptu_cost`` (allocated PTU capacity) and ``total_charge`` (cost + ptu_cost) per group.

    A group that only has PTU cost (an unused deployment, charged to ``(unallocated)``) gets a row of
    its own, so the PTU total is always the sum of the monthly costs."""
    amounts: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    currencies: dict[tuple[str, ...], str] = {}
    for item in allocations:
        key = tuple("" if v is None else str(v) for v in item.group)
        amounts[key] += item.amount
        currencies.setdefault(key, item.cost.currency)
    return add_ptu_amounts(frame, dimensions, amounts, currencies)


def add_ptu_amounts(frame: pd.DataFrame, dimensions: tuple[str, ...], amounts: Mapping[tuple[str, ...], Decimal],
                    currencies: Mapping[tuple[str, ...], str]) -> pd.DataFrame:
    """``add_ptu`` for amounts already summed per group key (the dimension values as text)."""
    keys = [tuple(record) for record in frame[list(dimensions)].itertuples(index=False, name=None)] if dimensions \
        else [()] * len(frame)
    missing = [key for key in amounts if key not in set(keys)]
    if missing:
        extra = to_frame([{**dict(zip(dimensions, key)), "currency": currencies[key]} for key in missing], dimensions)
        frame = pd.concat([frame, extra], ignore_index=True) if len(frame) else extra
        frame = sort_frame(frame, dimensions)
        keys = [tuple(record) for record in frame[list(dimensions)].itertuples(index=False, name=None)] if dimensions \
            else [()] * len(frame)
    frame = frame.copy()
    frame["ptu_cost"] = object_series(frame, [amounts.get(key, Decimal(0)) for key in keys])
    frame["total_charge"] = object_series(frame, [charge(c, p) for c, p in zip(frame["cost"], frame["ptu_cost"])])
    return frame


TRUE_UP_DIMENSIONS = ("month", "business_unit", "cost_center", "subscription")


UNATTRIBUTED = "(unattributed)"  # the true-up's line for bill lines no subscription is charged for


def true_up_by_subscription(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Decimal]]:
    """The stored true-up (``db.true_up.month_rows``) per subscription (``(unattributed)`` for the
    line of no subscription): metered cost, PTU cost, adjustment and final charge, exact."""
    out: dict[str, dict[str, Decimal]] = {}
    for row in rows:
        key = row["subscription_id"] if row["subscription_id"] is not None else UNATTRIBUTED
        entry = out.setdefault(key, {name: Decimal(0) for name in ("metered_cost", "ptu_cost", "adjustment",
                                                                     "final_charge")})
        for name in entry:
            entry[name] += row[name]
    for entry in out.values():
        entry["final_charge"] = entry["final_charge"].quantize(CENT)  # whole cents already: one scale on every engine
    return out


def add_true_up(frame: pd.DataFrame, dimensions: tuple[str, ...], rows: Sequence[Mapping[str, Any]],
                info: Mapping[str, Mapping[str, Any]], month: str) -> tuple[pd.DataFrame, list[str]]:
    """The stored true-up on a per-subscription frame: ``cost`` (metered), ``ptu_cost``, ``true_up``
    (the adjustment) and ``total_charge`` (the final charge, whole cents that add up to the bill) are
    the stored figures, so that every format shows the same numbers. A subscription of the true-up
    without usage rows, and the unattributed line, get rows of their own. Returns the frame and notes
    (usage that changed since the true-up was stored)."""
    if "subscription" not in dimensions or any(d not in TRUE_UP_DIMENSIONS for d in dimensions):
        raise ValueError("--true-up needs --by with subscription, optionally month, business_unit or cost_center")
    stored = true_up_by_subscription(rows)
    currency = next((row["currency"] for row in rows), None)
    frame = add_ptu(frame, dimensions, []) if not has_ptu(frame) else frame
    present = set(frame["subscription"])
    missing = [s for s in stored if s not in present]
    if missing:
        def value(dimension: str, subscription: str) -> str:
            if dimension == "subscription":
                return subscription
            if dimension == "month":
                return month
            if subscription == UNATTRIBUTED:
                return UNATTRIBUTED
            return (info.get(subscription, {}).get(dimension) or queries.UNMAPPED)

        extra = to_frame([{**{d: value(d, s) for d in dimensions}, "currency": currency} for s in missing], dimensions)
        extra = add_ptu(extra, dimensions, [])
        frame = sort_frame(pd.concat([frame, extra], ignore_index=True) if len(frame) else extra, dimensions)
    frame = frame.copy()
    notes = []
    costs, ptu, adjustments, finals = [], [], [], []
    for subscription, cost in zip(frame["subscription"], frame["cost"]):
        entry = stored.get(subscription)
        if entry is None:
            entry = {"metered_cost": known(cost), "ptu_cost": Decimal(0), "final_charge": Decimal(0)}
            entry["adjustment"] = -entry["metered_cost"]
        if known(cost) != entry["metered_cost"] and subscription != UNATTRIBUTED:
            notes.append(f"{subscription}: metered {money(known(cost))} now, {money(entry['metered_cost'])} when the "
                         f"true-up was stored; run `metering true-up --month {month}` again")
        costs.append(entry["metered_cost"])
        ptu.append(entry["ptu_cost"])
        adjustments.append(entry["adjustment"])
        finals.append(entry["final_charge"])
    frame["cost"] = object_series(frame, costs)
    frame[COST_STATUS] = object_series(frame, ["complete" if s in stored else status
                                               for s, status in zip(frame["subscription"], frame[COST_STATUS])])
    frame["currency"] = object_series(frame, [c if isinstance(c, str) else currency for c in frame["currency"]])
    frame["ptu_cost"] = object_series(frame, ptu)
    frame["true_up"] = object_series(frame, adjustments)
    frame["total_charge"] = object_series(frame, finals)
    columns = [c for c in frame.columns if c not in ("true_up", "total_charge")] + ["true_up", "total_charge"]
    return frame[columns], notes


def stored_ptu_amounts(rows: Sequence[Mapping[str, Any]], dimensions: tuple[str, ...],
                       info: Mapping[str, Mapping[str, Any]]) -> tuple[dict[tuple[str, ...], Decimal], dict[tuple[str, ...], str]]:
    """Stored PTU allocations (``ptu_allocations``) summed per group of ``dimensions`` (each one a
    subscription determines: month, business unit, cost center, subscription)."""
    amounts: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    currencies: dict[tuple[str, ...], str] = {}
    for row in rows:
        subscription = row["subscription_id"] or UNALLOCATED_PTU
        known_info = info.get(subscription, {})
        values = {"month": row["month"], "subscription": subscription,
                  "business_unit": known_info.get("business_unit") or (queries.UNMAPPED if row["subscription_id"]
                                                                        else UNALLOCATED_PTU),
                  "cost_center": known_info.get("cost_center") or (queries.UNMAPPED if row["subscription_id"]
                                                                    else UNALLOCATED_PTU)}
        key = tuple(values[d] for d in dimensions)
        amounts[key] += row["allocated_cost"]
        currencies.setdefault(key, row["currency"])
    return amounts, currencies


UNALLOCATED_PTU = "(unallocated)"


def stored_ptu_parts(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Stored PTU allocations as the report's PTU section lists them (``capacity.by_subscription``)."""
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        totals[(row["month"], row["deployment"])] += int(row["tokens"])
    return [{"month": row["month"], "deployment": row["deployment"], "kind": "provisioned",
             "backend_id": row["backend_id"] or "", "subscription": row["subscription_id"] or UNALLOCATED_PTU,
             "requests": int(row["requests"]), "tokens": int(row["tokens"]),
             "token_share": (Decimal(int(row["tokens"])) / totals[(row["month"], row["deployment"])]
                             if totals[(row["month"], row["deployment"])] else Decimal(0)),
             "ptu_cost": row["allocated_cost"], "currency": row["currency"], "monthly_cost": row["monthly_cost"]}
            for row in rows]


def charge(cost: Decimal | None, ptu_cost: Decimal) -> Decimal | None:
    """Total charge of a group: its known pay-as-you-go cost plus its PTU cost; unknown (None) only
    when the pay-as-you-go cost is unknown and there is no PTU cost to show."""
    if cost is None:
        return ptu_cost if ptu_cost else None
    return cost + ptu_cost


def sort_frame(frame: pd.DataFrame, dimensions: tuple[str, ...]) -> pd.DataFrame:
    if not dimensions or frame.empty:
        return frame.reset_index(drop=True)
    order = sorted(range(len(frame)), key=lambda i: tuple(str(frame.iloc[i][d]) for d in dimensions))
    return frame.iloc[order].reset_index(drop=True)


def has_ptu(frame: pd.DataFrame) -> bool:
    return "ptu_cost" in frame.columns


def total_row(frame: pd.DataFrame, dimensions: tuple[str, ...]) -> dict[str, Any]:
    """The grand total of a report frame (money summed exactly as ``Decimal``)."""
    total: dict[str, Any] = {d: "" for d in dimensions}
    if dimensions:
        total[dimensions[0]] = "TOTAL"
    for column in frame.columns:
        if column in dimensions or column == COST_STATUS:
            continue
        if column in MONEY_COLUMNS:
            total[column] = add_known(frame[column])
        elif column == "currency":
            currencies = sorted({c for c in frame["currency"] if isinstance(c, str)})
            total[column] = "/".join(currencies)
        else:
            total[column] = int(frame[column].sum())
    for column in MEASURE_COLUMNS:
        total.setdefault(column, Decimal(0) if column == "cost" else "" if column == "currency" else 0)
    total[COST_STATUS] = cost_status(total)
    if total[COST_STATUS] == "unknown":
        total["cost"] = None  # every billable request of the period is unpriced
    return total


def money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def shown_true_up(records: list[dict[str, Any]], total: dict[str, Any],
                  figures: dict[str, Decimal]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and total of a trued-up report as shown in cents: pay-as-you-go and PTU apportioned so
    that they add up to the headline's metered and PTU figures, the true-up the rest of each row (so
    each row adds up to its final charge and each column to its headline figure)."""
    shown_cost = apportion(figures["metered"], {i: known(r["cost"]) for i, r in enumerate(records)})
    shown_ptu = apportion(figures["ptu"], {i: r["ptu_cost"] for i, r in enumerate(records)})
    rows = []
    for index, record in enumerate(records):
        row = dict(record)
        row["cost"], row["ptu_cost"] = shown_cost.get(index, Decimal(0)), shown_ptu.get(index, Decimal(0))
        row["true_up"] = row["total_charge"] - row["cost"] - row["ptu_cost"]
        rows.append(row)
    total = dict(total) | {"cost": figures["metered"], "ptu_cost": figures["ptu"], "true_up": figures["adjustment"],
                           "total_charge": figures["bill"]}
    return rows, total


def unpriced_note(total: dict[str, Any]) -> str | None:
    """What the total cost leaves out: "plus N unpriced requests" (None when nothing is unpriced)."""
    count = total["unpriced_requests"]
    if not count:
        return None
    what = f"{count:,} unpriced request{'' if count == 1 else 's'}"
    if total["cost"] is None:
        return f"the cost is unknown: all {what} (no rate or no usage); it is not $0"
    return (f"total cost {money(total['cost'])} {total['currency'] or ''}".rstrip()
            + f" plus {what} whose cost is unknown (no rate or no usage), not counted as $0")


def grouped_frame(
    conn: sa.Connection,
    period: Period,
    dimensions: tuple[str, ...],
    ptu_costs: Sequence[PtuCost] | None = None,
) -> tuple[pd.DataFrame, list[Any]]:
    """Usage per group for the period, with allocated PTU cost when ``ptu_costs`` is given (the
    costs of the months the period covers whole). Returns the frame and the PTU allocations."""
    frame = to_frame(queries.usage_summary(conn, period.since, period.until, dimensions), dimensions)
    if ptu_costs is None:
        return frame, []
    usage = queries.provisioned_tokens(conn, period.since, period.until, dimensions,
                                       all_deployment_types=any(not cost.provisioned for cost in ptu_costs))
    allocations = allocate_ptu(ptu_costs, usage, dimensions)
    return add_ptu(frame, dimensions, allocations), allocations


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    """Everything a rendered report shows: the grouped frame, its total, data quality, PTU."""

    title: str
    period: Period
    dimensions: tuple[str, ...]
    frame: pd.DataFrame
    generated_at: datetime
    currency: str
    quality: dict[str, Any]
    models_without_rate: list[dict[str, Any]] = field(default_factory=list)
    # token kinds (or service tiers) the card has no price for, priced by the fallback (model, kinds, requests)
    fallback_pricing: list[dict[str, Any]] = field(default_factory=list)
    ptu: list[dict[str, Any]] | None = None  # allocation per PTU cost × subscription
    notes: list[str] = field(default_factory=list)
    # Fixed breakdowns: "subscription" (business unit × subscription) always; "day", "model" for HTML.
    charts: dict[str, pd.DataFrame] = field(default_factory=dict)
    # Spend anomalies of the period for the HTML report ((rows, rule), metering.finance.budgets.service).
    anomalies: tuple[list[dict[str, Any]], str] | None = None
    # With the stored true-up: bill, metered, ptu, adjustment (whole cents; true_up.headline)
    true_up: dict[str, Decimal] | None = None

    @property
    def total(self) -> dict[str, Any]:
        return total_row(self.frame, self.dimensions)


class MixedCurrencyError(ValueError):
    """The period's priced usage (or PTU costs) spans several currencies that no total may add."""


def build_report(
    conn: sa.Connection,
    period: Period,
    dimensions: tuple[str, ...],
    ptu_costs: Sequence[PtuCost] | None = None,
    charts: bool = False,
    now: datetime | None = None,
    true_up: Sequence[Mapping[str, Any]] | None = None,
    stored_ptu: Sequence[Mapping[str, Any]] | None = None,
) -> Report:
    """Query and assemble a report. ``ptu_costs``: the PTU cost config (None: no PTU section);
    ``charts``: also gather the fixed breakdowns the HTML report draws; ``true_up``: the month's
    stored true-up (``db.true_up.month_rows``), whose figures the report then shows; ``stored_ptu``:
    stored PTU allocations (``ptu_allocations``), included when neither of the others is given."""
    notes: list[str] = []
    included: list[PtuCost] | None = None
    if ptu_costs is not None:
        included, partial = ptu_costs_in(period, ptu_costs)
        for cost in partial:
            notes.append(f"PTU cost of {cost.label} ({money(cost.monthly_cost)} {cost.currency}) is not included: "
                         "the period covers only part of that month; report whole months to allocate it.")
    frame, allocations = grouped_frame(conn, period, dimensions, included)
    info = {row["subscription"]: row for row in queries.subscription_info(conn)}
    by_subscription_frame, sub_allocations = grouped_frame(conn, period, ("business_unit", "subscription"), included)
    figures = None
    stored_parts = None
    if true_up is not None:
        month = period.label
        frame, changed = add_true_up(frame, dimensions, true_up, info, month)
        by_subscription_frame, _ = add_true_up(by_subscription_frame, ("business_unit", "subscription"), true_up,
                                               info, month)
        figures = true_up_headline(true_up)
        currency_of = next((row["currency"] for row in true_up), "")
        notes.append(f"true-up: {true_up_headline_text(figures, currency_of)}; stored by `metering true-up` "
                     "(every format shows these figures): each subscription's final charge is whole cents and the "
                     "charges add up to the bill; docs/reconciliation-true-up.md explains the rule")
        notes.extend(changed)
        unattributed = [row for row in true_up if row["subscription_id"] is None]
        if unattributed:
            amount = sum((row["final_charge"] for row in unattributed), Decimal(0))
            notes.append(f"{UNATTRIBUTED}: {money(amount)} {currency_of} billed for resources no subscription is "
                         "charged for (no backend maps to them); name an owner with owner_subscription_id in the "
                         "backends CSV")
        for row in true_up:
            if row["final_charge"] < 0:
                notes.append(f"{row['subscription_id'] or UNATTRIBUTED} is charged {money(row['final_charge'])} "
                             f"on {row['meter']}: {row['reason']}")
    elif included is None and stored_ptu:
        rows = [row for row in stored_ptu if period.covers_month(row["month"])]
        months = ", ".join(sorted({row["month"] for row in rows}))
        if rows and all(d in TRUE_UP_DIMENSIONS for d in dimensions):
            frame = add_ptu_amounts(frame, dimensions, *stored_ptu_amounts(rows, dimensions, info))
            by_subscription_frame = add_ptu_amounts(by_subscription_frame, ("business_unit", "subscription"),
                                                    *stored_ptu_amounts(rows, ("business_unit", "subscription"), info))
            stored_parts = stored_ptu_parts(rows)
            notes.append(f"PTU cost: the stored allocation of {months} (`metering ptu allocate`) is included, as in "
                         "v_chargeback_monthly and `budgets status`")
        elif rows:
            notes.append(f"PTU cost: the stored allocation of {months} is not shown: grouped by "
                         f"{', '.join(d for d in dimensions if d not in TRUE_UP_DIMENSIONS)}, which an allocation per "
                         "subscription cannot split (group by subscription, or give --ptu-costs)")
    currencies = queries.period_currencies(conn, period.since, period.until)
    ptu_currencies = sorted({c.currency for c in included or []})
    currency = (currencies or ptu_currencies or ["USD"])[0]
    if len(set(currencies) | set(ptu_currencies)) > 1:
        # A total of EUR and USD amounts is no number at all: refuse rather than print one.
        raise MixedCurrencyError(
            "the period's costs are in more than one currency ("
            + ", ".join(sorted(set(currencies) | set(ptu_currencies)))
            + "), and a report total cannot add them; keep one currency in the rate card and PTU costs"
            " (convert with your finance team's rate), then `metering reprice`"
        )
    total = total_row(frame, dimensions)
    unmapped = by_subscription_frame[by_subscription_frame["business_unit"] == queries.UNMAPPED]
    quality = {key: total[key] for key in (
        "requests", "total_tokens", "estimated_requests", "estimated_tokens", "incomplete_requests",
        "incomplete_tokens", "unpriced_requests", "unpriced_tokens", "not_billable_requests",
        "provisioned_requests", "provisioned_tokens", "fallback_priced_requests", "fallback_priced_tokens")}
    # Rows with no subscription at all (a Batch API job whose creation the gateway never saw) are
    # grouped as (unmapped) too; they are not a subscription, and the note says what they are.
    unattributed = unmapped[unmapped["subscription"] == queries.UNMAPPED]
    quality["unmapped_subscriptions"] = sorted(s for s in unmapped["subscription"] if s != queries.UNMAPPED)
    quality["unmapped_cost"] = sum((known(c) for c in unmapped["cost"]), Decimal(0))
    quality["unmapped_requests"] = int(unmapped["requests"].sum())
    if quality["unmapped_subscriptions"]:
        count = len(quality["unmapped_subscriptions"])
        one = count == 1
        notes.append(f"{count} subscription{'' if one else 's'} without a business unit "
                     f"({', '.join(quality['unmapped_subscriptions'])}) {'is' if one else 'are'} reported as "
                     f"{queries.UNMAPPED}; map {'it' if one else 'them'} with `metering subscriptions import`.")
    if len(unattributed) and int(unattributed["requests"].sum()):
        requests = int(unattributed["requests"].sum())
        notes.append(f"{requests:,} request{'' if requests == 1 else 's'} with no subscription (Batch API jobs whose "
                     f"creation the gateway did not see) {'is' if requests == 1 else 'are'} shown as "
                     f"{queries.UNMAPPED}: charge such a job with `metering batch import --subscription ID`.")
    report = Report(
        title=f"Azure OpenAI chargeback — {period.label}" + (f" — by {', '.join(dimensions)}" if dimensions else ""),
        period=period,
        dimensions=dimensions,
        frame=frame,
        generated_at=(now or datetime.now(timezone.utc)).replace(microsecond=0),
        currency=currency,
        quality=quality,
        models_without_rate=queries.data_models_without_rate(conn, period.since, period.until),
        fallback_pricing=queries.data_fallback_pricing(conn, period.since, period.until),
        ptu=by_subscription(sub_allocations) if included is not None else stored_parts,
        notes=notes,
        charts={"subscription": by_subscription_frame},
        true_up=figures,
    )
    if charts:
        report.charts["day"] = grouped_frame(conn, period, ("day",), included)[0]
        report.charts["model"] = grouped_frame(conn, period, ("model",), included)[0]
        if has_ptu(by_subscription_frame) and not has_ptu(report.charts["day"]):
            # a stored allocation or true-up is per subscription: it has no day or model to draw by
            report.charts["day"] = add_ptu(report.charts["day"], ("day",), [])
            report.charts["model"] = add_ptu(report.charts["model"], ("model",), [])
    return report


def export_focus(
    conn: sa.Connection,
    period: Period,
    billing_account_id: str,
    billing_account_name: str,
    ptu_costs: Sequence[PtuCost] | None = None,
    true_up: Sequence[Mapping[str, Any]] | None = None,
    left_out: list[Any] | None = None,
    provider: str | None = None,
) -> list[dict[str, Any]]:
    """The FOCUS rows of a month: token usage, plus allocated PTU capacity when costs are given. With
    the month's stored true-up (``db.true_up.month_rows``): its PTU shares, and one Adjustment row per
    subscription that makes the subscription's BilledCost its final charge (whole cents that add up to
    the bill). Usage without a unit price is appended to ``left_out`` (``focus.LeftOut``) instead;
    ``provider``: the ProviderName and InvoiceIssuerName (default: the billing account's name)."""
    from metering.finance import focus

    currencies = queries.period_currencies(conn, period.since, period.until)
    ctx = focus.FocusContext(billing_account_id, billing_account_name, period.label,
                             currency=(currencies or ["USD"])[0], provider=provider)
    info = {row["subscription"]: row for row in queries.subscription_info(conn)}
    backends = load_backends(conn)
    records = focus.usage_records(queries.focus_usage(conn, period.since, period.until), ctx, info, backends,
                                  left_out)
    if ptu_costs and not true_up:
        included, _ = ptu_costs_in(period, ptu_costs)
        dims = ("subscription",)
        usage = queries.provisioned_tokens(conn, period.since, period.until, dims,
                                           all_deployment_types=any(not cost.provisioned for cost in included))
        allocations = allocate_ptu(included, usage, dims)
        records += focus.ptu_records(by_subscription(allocations), ctx, info, backends)
    if true_up:
        records += focus.ptu_records(true_up_ptu_parts(true_up, period.label, backends), ctx, info, backends)
        billed: dict[str | None, Decimal] = defaultdict(Decimal)
        for record in records:
            billed[record["SubAccountId"]] += record["BilledCost"]
        final: dict[str | None, Decimal] = defaultdict(Decimal)
        labels: dict[str | None, str] = {}
        for subscription, entry in true_up_by_subscription(true_up).items():
            key = focus.subaccount_id(subscription)
            final[key] += entry["final_charge"]
            labels.setdefault(key, subscription)
        amounts = {labels.get(key, key if key is not None else queries.UNMAPPED): final[key] - billed.get(key, Decimal(0))
                   for key in sorted(set(final) | set(billed), key=lambda k: (k is None, k or ""))}
        records += focus.true_up_records(amounts, ctx, info)
    return records


def true_up_ptu_parts(rows: Sequence[Mapping[str, Any]], month: str,
                      backends: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stored true-up's PTU shares as PTU parts (``capacity.by_subscription`` rows) for FOCUS."""
    by_meter: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        by_meter[row["meter"]] += row["ptu_cost"]
    backend_of = {backend.resource_id: backend.backend_id for backend in backends.values()}
    parts = []
    for row in rows:
        if not row["ptu_cost"]:
            continue
        monthly = by_meter[row["meter"]]
        name = row["meter"][4:] if row["meter"].startswith("PTU ") else row["meter"]
        parts.append({"month": month, "deployment": name, "kind": "provisioned",
                      "backend_id": backend_of.get(row["resource_id"], ""),
                      "subscription": row["subscription_id"] or UNATTRIBUTED, "requests": 0, "tokens": int(row["tokens"]),
                      "token_share": (row["ptu_cost"] / monthly) if monthly else Decimal(0),
                      "ptu_cost": row["ptu_cost"], "currency": row["currency"], "monthly_cost": monthly})
    return parts


def ptu_allocation_rows(conn: sa.Connection, month: str, ptu_costs: Sequence[PtuCost]) -> list[dict[str, Any]]:
    """A month's PTU costs allocated to subscriptions as ``metering report --ptu-costs`` does (whole
    cents that add up to each monthly cost), as rows of the ``ptu_allocations`` table."""
    period = Period.month(month)
    costs = [cost for cost in ptu_costs if cost.month == period.label]
    dims = ("subscription",)
    allocations = allocate_ptu(costs, queries.provisioned_tokens(conn, period.since, period.until, dims), dims)
    return [{
        "deployment": part["deployment"],
        "backend_id": part["backend_id"] or None,
        "subscription_id": None if part["subscription"] == queries.UNMAPPED else part["subscription"],
        "requests": part["requests"],
        "tokens": part["tokens"],
        "allocated_cost": part["ptu_cost"],
        "monthly_cost": part["monthly_cost"],
        "currency": part["currency"],
    } for part in by_subscription(allocations)]
