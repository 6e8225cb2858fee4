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
            frame[column] = frame[column].map(lambda v: int(v) if v is not None and v == v else 0).astype("int64")
    statuses = [cost_status(record) for record in frame.to_dict("records")]
    frame["cost"] = object_series(frame, [None if status == "unknown" else c if isinstance(c, Decimal) else Decimal(0)
                                          for c, status in zip(frame["cost"], statuses)])
    frame["currency"] = object_series(frame, [c if isinstance(c, str) else None for c in frame["currency"]])
    frame[COST_STATUS] = object_series(frame, statuses)
    for dimension in dimensions:
        frame[dimension] = object_series(frame, ["" if v is None else str(v) for v in frame[dimension]])
    return frame


def cost_status(counts: dict[str, Any]) -> str:
    """Whether a group's cost is ``complete`` (every billable request priced), ``partial`` (the cost
    of its priced requests, some are unpriced) or ``unknown`` (no request priced, some unpriced: the
    cost is null, never $0). PTU and not-billable requests cost nothing per token: they are known."""
    unpriced = int(counts.get("unpriced_requests") or 0)
    if not unpriced:
        return "complete"
    priced = int(counts.get("requests") or 0) - unpriced - int(counts.get("not_billable_requests") or 0)
    return "partial" if priced > 0 else "unknown"


def request_partition(counts: dict[str, Any]) -> tuple[int, int, int]:
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


def add_true_up(frame: pd.DataFrame, dimensions: tuple[str, ...], amounts: Mapping[str, Decimal]) -> pd.DataFrame:
    """Add ``true_up`` (each subscription's whole-cent share of what the bill charged beyond, or short
    of, the metered cost; ``metering.finance.reconcile.compare.true_up``) and add it to ``total_charge``.

    The grouping must be per subscription (it may add month, business unit or cost center, which a
    subscription determines), so that each row carries exactly its subscription's true-up. A
    subscription without metered rows (``(unallocated)``) gets a row of its own."""
    if "subscription" not in dimensions or any(d not in TRUE_UP_DIMENSIONS for d in dimensions):
        raise ValueError("--true-up needs --by with subscription, optionally month, business_unit or cost_center")
    if not has_ptu(frame):
        frame = add_ptu(frame, dimensions, [])
    subscriptions = list(frame["subscription"])
    missing = [s for s, amount in amounts.items() if s not in subscriptions and amount]
    if missing:
        extra = to_frame([{**{d: queries.UNMAPPED if d != "subscription" else s for d in dimensions},
                           "currency": None} for s in missing], dimensions)
        extra = add_ptu(extra, dimensions, [])
        frame = sort_frame(pd.concat([frame, extra], ignore_index=True) if len(frame) else extra, dimensions)
        subscriptions = list(frame["subscription"])
    frame = frame.copy()
    seen: set[str] = set()
    values = []
    for subscription in subscriptions:  # a subscription on two rows (two months) is trued up once
        values.append(Decimal(0) if subscription in seen else amounts.get(subscription, Decimal(0)))
        seen.add(subscription)
    frame["true_up"] = object_series(frame, values)
    totals = [charge(c, p) for c, p in zip(frame["cost"], frame["ptu_cost"])]
    frame["total_charge"] = object_series(frame, [t + u if t is not None else (u or None)
                                                  for t, u in zip(totals, frame["true_up"])])
    columns = [c for c in frame.columns if c not in ("true_up", "total_charge")] + ["true_up", "total_charge"]
    return frame[columns]


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
    true_up: Mapping[str, Decimal] | None = None,
) -> Report:
    """Query and assemble a report. ``ptu_costs``: the PTU cost config (None: no PTU section);
    ``charts``: also gather the fixed breakdowns the HTML report draws."""
    notes: list[str] = []
    included: list[PtuCost] | None = None
    if ptu_costs is not None:
        included, partial = ptu_costs_in(period, ptu_costs)
        for cost in partial:
            notes.append(f"PTU cost of {cost.label} ({money(cost.monthly_cost)} {cost.currency}) is not included: "
                         "the period covers only part of that month; report whole months to allocate it.")
    frame, allocations = grouped_frame(conn, period, dimensions, included)
    if true_up is not None:
        frame = add_true_up(frame, dimensions, true_up)
        notes.append(f"true-up: {money(sum(true_up.values(), Decimal(0)))} spread over subscriptions by their share "
                     "of each billed meter's tokens, so that the chargeback of the reconciled resources equals the "
                     "Azure bill to the cent (`metering reconcile` explains it)")
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
    by_subscription_frame, sub_allocations = grouped_frame(conn, period, ("business_unit", "subscription"), included)
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
        ptu=by_subscription(sub_allocations) if included is not None else None,
        notes=notes,
        charts={"subscription": by_subscription_frame},
    )
    if charts:
        report.charts["day"] = grouped_frame(conn, period, ("day",), included)[0]
        report.charts["model"] = grouped_frame(conn, period, ("model",), included)[0]
    return report


def export_focus(
    conn: sa.Connection,
    period: Period,
    billing_account_id: str,
    billing_account_name: str,
    ptu_costs: Sequence[PtuCost] | None = None,
    true_up: Mapping[str, Decimal] | None = None,
    left_out: list[Any] | None = None,
    provider: str | None = None,
) -> list[dict[str, Any]]:
    """The FOCUS rows of a month: token usage, plus allocated PTU capacity when costs are given, plus
    one Adjustment row per subscription's true-up to the Azure bill when ``true_up`` is given. Usage
    without a unit price is appended to ``left_out`` (``focus.LeftOut``) instead; ``provider``: the
    ProviderName and InvoiceIssuerName (default: the billing account's name)."""
    from metering.finance import focus

    currencies = queries.period_currencies(conn, period.since, period.until)
    ctx = focus.FocusContext(billing_account_id, billing_account_name, period.label,
                             currency=(currencies or ["USD"])[0], provider=provider)
    info = {row["subscription"]: row for row in queries.subscription_info(conn)}
    backends = load_backends(conn)
    records = focus.usage_records(queries.focus_usage(conn, period.since, period.until), ctx, info, backends,
                                  left_out)
    if ptu_costs:
        included, _ = ptu_costs_in(period, ptu_costs)
        dims = ("subscription",)
        usage = queries.provisioned_tokens(conn, period.since, period.until, dims,
                                           all_deployment_types=any(not cost.provisioned for cost in included))
        allocations = allocate_ptu(included, usage, dims)
        records += focus.ptu_records(by_subscription(allocations), ctx, info, backends)
    if true_up:
        records += focus.true_up_records(true_up, ctx, info)
    return records


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
