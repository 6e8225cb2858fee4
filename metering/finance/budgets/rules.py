"""Monthly money budgets: the budgets CSV, spend to date, the month-end forecast, status, and spend
anomalies. Pure (no SQL, no I/O): ``db/budgets.py`` reads the daily spend, this module judges it.

Forecast (``forecast_month``): each remaining day of the month is expected to cost what the same
weekday cost on average over the trailing ``FORECAST_WINDOW_DAYS`` (28) days before the as-of day
(four Mondays, four Tuesdays, … so a quiet weekend is not projected onto weekdays); while fewer than
``FORECAST_MIN_HISTORY_DAYS`` (7) days of history exist, the plain mean daily spend of the days seen
so far is used instead. Today counts with what it has spent so far, topped up to its weekday's
expectation. Allocated fixed costs (PTU) are added to spend and forecast as a lump, not projected.

Late spend (``alert_months``): spend can land in SQL after its month has ended (events delivered
late, a replay or backfill), so during the first ``LATE_SPEND_DAYS`` (3) days of a month the alert
check also reviews the previous month, closed: its thresholds and anomalies found then are still
alerted (each once, by key). Later than that, late spend shows in reports but is not alerted.

Anomaly (``AnomalyRule``): a day whose spend for one subscription or one model is more than
``max(3 × median, median + 4 × MAD)`` of the same key's previous 14 days (days without spend count
as 0; at least 7 days of history needed) and at least 10 currency units.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

SCOPES = ("business_unit", "cost_center", "subscription")
ACTIONS = ("alert", "block")
COLUMNS = ("scope", "scope_id", "amount", "currency", "alert_at", "action")
STATUSES = ("ok", "warn", "exceeded")
FORECAST_WINDOW_DAYS = 28
FORECAST_MIN_HISTORY_DAYS = 7
LATE_SPEND_DAYS = 3  # the alert check reviews the previous month too on days 1..3 of a month
UNMAPPED = "(unmapped)"
CENT = Decimal("0.01")


class BudgetFileError(ValueError):
    """A budgets CSV that cannot be imported; the message names each bad line, on one line."""


@dataclass(frozen=True)
class Budget:
    """A monthly money budget for one business unit, cost center or subscription."""

    scope: str
    scope_id: str
    amount: Decimal
    currency: str
    alert_at: tuple[int, ...]
    action: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.scope, self.scope_id)


@dataclass(frozen=True)
class DailySpend:
    """One day's spend of one subscription on one model (a row of ``db.budgets.daily_spend``).

    ``cost``: priced cost in ``currency``; ``estimated_cost``: the part of it from token counts
    estimated with tiktoken; ``unpriced_requests``: billable requests whose cost is unknown."""

    day: date
    subscription_id: str
    business_unit: str
    cost_center: str
    model: str
    currency: str | None
    cost: Decimal
    estimated_cost: Decimal = Decimal(0)
    requests: int = 0
    unpriced_requests: int = 0

    def scope_id(self, scope: str) -> str:
        return {"subscription": self.subscription_id, "business_unit": self.business_unit,
                "cost_center": self.cost_center}[scope]


@dataclass
class BudgetStatus:
    """Where a budget stands in a month: spend to date, forecast, status."""

    budget: Budget
    month: str
    as_of: date
    spent: Decimal
    fixed_cost: Decimal
    estimated_cost: Decimal
    unpriced_requests: int
    other_currency_cost: Decimal
    forecast: Decimal
    crossing_day: date | None
    status: str
    thresholds_crossed: tuple[int, ...]
    forecast_method: str

    @property
    def percent(self) -> Decimal:
        return (self.spent * 100 / self.budget.amount).quantize(Decimal("0.1"), ROUND_HALF_UP)

    def as_dict(self) -> dict[str, object]:
        b = self.budget
        return {
            "scope": b.scope, "scope_id": b.scope_id, "month": self.month, "as_of": self.as_of.isoformat(),
            "amount": str(b.amount), "currency": b.currency, "action": b.action,
            "alert_at": ",".join(str(t) for t in b.alert_at),
            "spent": str(self.spent.quantize(CENT, ROUND_HALF_UP)), "fixed_cost": str(self.fixed_cost.quantize(CENT, ROUND_HALF_UP)),
            "percent": str(self.percent), "forecast": str(self.forecast.quantize(CENT, ROUND_HALF_UP)),
            "crossing_day": self.crossing_day.isoformat() if self.crossing_day else None,
            "status": self.status, "thresholds_crossed": list(self.thresholds_crossed),
            "estimated_cost": str(self.estimated_cost.quantize(CENT, ROUND_HALF_UP)), "unpriced_requests": self.unpriced_requests,
            "other_currency_cost": str(self.other_currency_cost.quantize(CENT, ROUND_HALF_UP)),
            "forecast_method": self.forecast_method,
        }


@dataclass(frozen=True)
class AnomalyRule:
    """A day is anomalous when its spend > max(factor × median, median + mad_factor × MAD) of the
    previous ``window_days`` days, with at least ``min_history_days`` of history, and ≥ ``min_amount``."""

    factor: Decimal = Decimal(3)
    mad_factor: Decimal = Decimal(4)
    window_days: int = 14
    min_history_days: int = 7
    min_amount: Decimal = Decimal(10)

    def describe(self) -> str:
        return (f"spend > max({self.factor} × median, median + {self.mad_factor} × MAD) of the previous "
                f"{self.window_days} days (≥ {self.min_history_days} days of history) and ≥ {self.min_amount}")


@dataclass(frozen=True)
class Anomaly:
    """A day whose spend for one subscription or model is far above its own recent baseline."""

    kind: str  # "subscription" or "model"
    key: str
    day: date
    spend: Decimal
    median: Decimal
    mad: Decimal
    threshold: Decimal
    currency: str

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "key": self.key, "day": self.day.isoformat(),
                "spend": str(self.spend.quantize(CENT, ROUND_HALF_UP)), "baseline_median": str(self.median.quantize(CENT, ROUND_HALF_UP)),
                "baseline_mad": str(self.mad.quantize(CENT, ROUND_HALF_UP)), "threshold": str(self.threshold.quantize(CENT, ROUND_HALF_UP)),
                "currency": self.currency}


# ----------------------------------------------------------------------------------- the CSV


def parse_budgets_csv(text: str, source: str = "budgets CSV") -> list[Budget]:
    """Budgets from ``scope,scope_id,amount,currency,alert_at,action``; every bad line is named."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in next(reader, [])]
    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in COLUMNS if c not in header]
    if unknown or missing:
        parts = ([f"unknown column(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"missing column(s) {', '.join(missing)}"] if missing else [])
        raise BudgetFileError(f"{source}: {'; '.join(parts)}; expected header: {','.join(COLUMNS)}")
    problems: list[str] = []
    budgets: dict[tuple[str, str], Budget] = {}
    for line_number, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            problems.append(f"line {line_number}: {len(cells)} fields, expected {len(header)}")
            continue
        row = {name: cell.strip() for name, cell in zip(header, cells)}
        try:
            budget = _budget(row)
        except ValueError as exc:
            problems.append(f"line {line_number}: {exc}")
            continue
        if budget.key in budgets:
            problems.append(f"line {line_number}: a second budget for {budget.scope} {budget.scope_id!r}")
            continue
        budgets[budget.key] = budget
    if problems:
        raise BudgetFileError(f"{source}: " + "; ".join(problems))
    if not budgets:
        raise BudgetFileError(f"{source}: no budgets")
    return list(budgets.values())


def _budget(row: dict[str, str]) -> Budget:
    scope = row["scope"].lower()
    if scope not in SCOPES:
        raise ValueError(f"scope {row['scope']!r} is not one of {', '.join(SCOPES)}")
    if not row["scope_id"]:
        raise ValueError("scope_id is empty")
    try:
        amount = Decimal(row["amount"])
    except InvalidOperation:
        raise ValueError(f"amount {row['amount']!r} is not a number") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"amount {row['amount']!r} must be more than 0")
    currency = row["currency"].upper()
    if len(currency) != 3 or not currency.isalpha():
        raise ValueError(f"currency {row['currency']!r} is not a three-letter code")
    try:
        alert_at = tuple(sorted({int(part) for part in row["alert_at"].replace(" ", "").split(",") if part}))
    except ValueError:
        raise ValueError(f"alert_at {row['alert_at']!r} is not a list of percentages like 50,80,100") from None
    if not alert_at or any(t <= 0 or t > 1000 for t in alert_at):
        raise ValueError(f"alert_at {row['alert_at']!r} must list percentages from 1 to 1000, like 50,80,100")
    action = row["action"].lower()
    if action not in ACTIONS:
        raise ValueError(f"action {row['action']!r} is not one of {', '.join(ACTIONS)}")
    return Budget(scope, row["scope_id"], amount, currency, alert_at, action)


# ----------------------------------------------------------------------------------- forecast


@dataclass(frozen=True)
class Forecast:
    total: Decimal
    crossing_day: date | None
    method: str


def month_days(month: str) -> list[date]:
    year, number = (int(p) for p in month.split("-"))
    first = date(year, number, 1)
    following = date(year + number // 12, number % 12 + 1, 1)
    return [first + timedelta(days=n) for n in range((following - first).days)]


def forecast_month(daily: dict[date, Decimal], month: str, as_of: date, amount: Decimal | None = None,
                   fixed: Decimal = Decimal(0), closed: bool = False) -> Forecast:
    """Month-end spend from the daily spend (``daily``; days may reach back before the month for
    history) as of ``as_of`` (a day of the month; its spend so far is included), by the weekday-aware
    run rate described in the module docstring; and the first day the cumulative spend (actual, then
    forecast) reaches ``amount``. A ``closed`` month (it has ended) is its actual spend: its last
    day is not topped up to an expectation."""
    days = month_days(month)
    history_start = min(daily) if daily else as_of
    window = [as_of - timedelta(days=n) for n in range(1, FORECAST_WINDOW_DAYS + 1)]
    window = [d for d in window if d >= history_start]
    by_weekday: dict[int, list[Decimal]] = defaultdict(list)
    for d in window:
        by_weekday[d.weekday()].append(daily.get(d, Decimal(0)))
    if len(window) >= FORECAST_MIN_HISTORY_DAYS:
        method = f"weekday-aware run rate: mean of the same weekday over the trailing {FORECAST_WINDOW_DAYS} days"

        def expected(d: date) -> Decimal:
            values = by_weekday.get(d.weekday())
            return sum(values, Decimal(0)) / len(values) if values else Decimal(0)
    else:
        seen = [daily.get(d, Decimal(0)) for d in window] or [daily.get(as_of, Decimal(0))]
        mean = sum(seen, Decimal(0)) / len(seen)
        method = f"run rate: mean daily spend of the {len(seen)} day(s) seen (under {FORECAST_MIN_HISTORY_DAYS} days of history)"

        def expected(d: date) -> Decimal:
            return mean

    total = fixed
    crossing: date | None = None
    if closed:
        method = "actual: the month has ended"
    for d in days:
        if d < as_of or closed:
            spend = daily.get(d, Decimal(0))
        elif d == as_of:
            spend = max(daily.get(d, Decimal(0)), expected(d))
        else:
            spend = expected(d)
        before = total
        total += spend
        if amount is not None and crossing is None and total >= amount and (before < amount or d == days[0]):
            crossing = d
    if amount is not None and crossing is None and fixed >= amount:
        crossing = days[0]
    return Forecast(total, crossing, method)


# ----------------------------------------------------------------------------------- status


def matches(budget: Budget, row: DailySpend) -> bool:
    return row.scope_id(budget.scope) == budget.scope_id


def budget_status(budget: Budget, month: str, as_of: date, rows: Iterable[DailySpend],
                  fixed: Decimal = Decimal(0), closed: bool = False) -> BudgetStatus:
    """The budget's month as of ``as_of``: ``rows`` may include days before the month (forecast
    history); ``fixed``: the allocated fixed cost (PTU) of the budget's scope for the month;
    ``closed``: the month has ended (its forecast is its spend)."""
    first = month_days(month)[0]
    daily: dict[date, Decimal] = defaultdict(Decimal)
    spent = estimated = other = Decimal(0)
    unpriced = 0
    for row in rows:
        if not matches(budget, row):
            continue
        if row.currency not in (None, budget.currency):
            if row.day >= first:
                other += row.cost
            continue
        daily[row.day] += row.cost
        if first <= row.day <= as_of:
            spent += row.cost
            estimated += row.estimated_cost
            unpriced += row.unpriced_requests
    spent += fixed
    forecast = forecast_month(dict(daily), month, as_of, budget.amount, fixed, closed)
    crossed = tuple(t for t in budget.alert_at if spent * 100 >= budget.amount * t)
    return BudgetStatus(budget, month, as_of, spent, fixed, estimated, unpriced, other, forecast.total,
                        forecast.crossing_day, judge(budget, spent, forecast.total), crossed, forecast.method)


def judge(budget: Budget, spent: Decimal, forecast: Decimal) -> str:
    """``exceeded`` at 100 %; ``warn`` past the first alert threshold below 100 %, or when the
    forecast reaches the amount; else ``ok``."""
    if spent >= budget.amount:
        return "exceeded"
    warn_at = min(budget.alert_at)
    if (warn_at < 100 and spent * 100 >= budget.amount * warn_at) or forecast >= budget.amount:
        return "warn"
    return "ok"


def fixed_costs_for(budget: Budget, fixed_by_subscription: dict[str, tuple[str, str, Decimal, str]]) -> dict[str, Decimal]:
    """``fixed_by_subscription``: subscription → (business unit, cost center, cost, currency); the
    part that belongs to this budget, keyed by subscription."""
    found = {}
    for subscription, (unit, center, cost, currency) in fixed_by_subscription.items():
        owner = {"subscription": subscription, "business_unit": unit, "cost_center": center}[budget.scope]
        if owner == budget.scope_id and currency == budget.currency:
            found[subscription] = cost
    return found


def statuses(budgets: Sequence[Budget], month: str, as_of: date, rows: Sequence[DailySpend],
             fixed_by_subscription: dict[str, tuple[str, str, Decimal, str]] | None = None,
             closed: bool = False) -> list[BudgetStatus]:
    """Every budget's status for the month, worst first."""
    found = []
    for budget in budgets:
        fixed = sum(fixed_costs_for(budget, fixed_by_subscription or {}).values(), Decimal(0))
        found.append(budget_status(budget, month, as_of, rows, fixed, closed))
    order = {"exceeded": 0, "warn": 1, "ok": 2}
    return sorted(found, key=lambda s: (order[s.status], -s.spent / s.budget.amount, s.budget.scope, s.budget.scope_id))


def previous_month(month: str) -> str:
    first = month_days(month)[0] - timedelta(days=1)
    return f"{first.year:04d}-{first.month:02d}"


def alert_months(today: date) -> list[str]:
    """The months the alert check reviews on ``today`` (UTC), oldest first: the current month, and
    during its first ``LATE_SPEND_DAYS`` days the previous one too, for spend that landed late."""
    month = f"{today.year:04d}-{today.month:02d}"
    return [previous_month(month), month] if today.day <= LATE_SPEND_DAYS else [month]


# ----------------------------------------------------------------------------------- anomalies


def anomalies(rows: Sequence[DailySpend], since: date, until: date, rule: AnomalyRule = AnomalyRule()) -> list[Anomaly]:
    """Anomalous days in ``since <= day <= until``, per subscription and per model (per currency)."""
    series: dict[tuple[str, str, str], dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in rows:
        if row.currency is None:
            continue
        series[("subscription", row.subscription_id, row.currency)][row.day] += row.cost
        series[("model", row.model, row.currency)][row.day] += row.cost
    found = []
    for (kind, key, currency), daily in series.items():
        first = min(daily)
        for day in sorted(daily):
            if not since <= day <= until:
                continue
            spend = daily[day]
            if spend < rule.min_amount:
                continue
            history = [day - timedelta(days=n) for n in range(1, rule.window_days + 1)]
            history = [d for d in history if d >= first]
            if len(history) < rule.min_history_days:
                continue
            values = [daily.get(d, Decimal(0)) for d in history]
            median = Decimal(statistics.median(values))
            mad = Decimal(statistics.median([abs(v - median) for v in values]))
            threshold = max(rule.factor * median, median + rule.mad_factor * mad)
            if spend > threshold:
                found.append(Anomaly(kind, key, day, spend, median, mad, threshold, currency))
    return sorted(found, key=lambda a: (a.day, a.kind, a.key))


# ----------------------------------------------------------------------------------- gateway


@dataclass(frozen=True)
class GatewayAnswer:
    """What ``GET /api/budget/{subscriptionId}`` answers: the worst budget that applies."""

    subscription_id: str
    status: str  # ok | warn | blocked
    spent: Decimal | None
    limit: Decimal | None
    currency: str | None
    forecast: Decimal | None
    period: str
    budget: str | None = None
    until: str | None = None

    def as_dict(self) -> dict[str, object]:
        def money(value: Decimal | None) -> str | None:
            return None if value is None else str(value.quantize(CENT, ROUND_HALF_UP))

        return {"subscription_id": self.subscription_id, "status": self.status, "spent": money(self.spent),
                "limit": money(self.limit), "currency": self.currency, "forecast": money(self.forecast),
                "period": self.period, "budget": self.budget, "until": self.until}


def gateway_answer(subscription_id: str, month: str, found: Sequence[BudgetStatus]) -> GatewayAnswer:
    """``blocked`` when a ``block`` budget is exceeded; ``warn`` when any budget is past a warning
    (or an ``alert`` budget is exceeded); else ``ok``. The budget that decides is named."""
    following = month_days(month)[-1] + timedelta(days=1)
    if not found:
        return GatewayAnswer(subscription_id, "ok", None, None, None, None, month)

    def gate(status: BudgetStatus) -> str:
        if status.status == "exceeded" and status.budget.action == "block":
            return "blocked"
        return "ok" if status.status == "ok" else "warn"

    rank = {"blocked": 0, "warn": 1, "ok": 2}
    worst = min(found, key=lambda s: (rank[gate(s)], -s.spent / s.budget.amount))
    state = gate(worst)
    b = worst.budget
    return GatewayAnswer(subscription_id, state, worst.spent, b.amount, b.currency, worst.forecast, month,
                         f"{b.scope}:{b.scope_id}", f"{following.isoformat()}T00:00:00Z" if state == "blocked" else None)
