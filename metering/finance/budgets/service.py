"""Budgets composed with the database: a month's status and anomalies (``metering budgets status``),
the alerts due and their delivery (``metering budgets check``, the timer function), and the
gateway's answer for one subscription (``GET /api/budget/{subscriptionId}``)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa

from db import budgets as budget_db
from metering.finance.budgets.rules import (
    FORECAST_WINDOW_DAYS,
    Anomaly,
    AnomalyRule,
    Budget,
    BudgetStatus,
    DailySpend,
    GatewayAnswer,
    alert_months,
    anomalies,
    gateway_answer,
    month_days,
    statuses,
)
from metering.finance.budgets.alerts import WEBHOOK_FORMATS, webhook_body
from metering.finance.budgets.webhook import WebhookError, post_json

log = logging.getLogger("metering.budgets")


def month_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def _bounds(month: str) -> tuple[datetime, datetime, datetime]:
    """History start (forecast and anomaly baselines look back), month start, month end (exclusive)."""
    days = month_days(month)
    start = datetime(days[0].year, days[0].month, days[0].day, tzinfo=timezone.utc)
    end = start + timedelta(days=len(days))
    return start - timedelta(days=FORECAST_WINDOW_DAYS), start, end


def as_of_day(month: str, now: datetime) -> date:
    """The month's last day with data: today within the month, its last day for a past month."""
    days = month_days(month)
    return min(max(now.astimezone(timezone.utc).date(), days[0]), days[-1])


def load_budgets(conn: sa.Connection) -> list[Budget]:
    return [Budget(row["scope"], row["scope_id"], Decimal(row["amount"]), row["currency"],
                   tuple(int(t) for t in row["alert_at"].split(",") if t), row["action"])
            for row in budget_db.all_budgets(conn)]


def _spend_rows(rows: Sequence[dict[str, Any]]) -> list[DailySpend]:
    return [DailySpend(date.fromisoformat(str(r["day"])[:10]), r["subscription"], r["business_unit"], r["cost_center"],
                       r["model"], r["currency"], r["cost"], r["estimated_cost"], int(r["requests"]),
                       int(r["unpriced_requests"])) for r in rows]


def _fixed(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[str, str, Decimal, str]]:
    found: dict[str, tuple[str, str, Decimal, str]] = {}
    for r in rows:
        previous = found.get(r["subscription"])
        cost = Decimal(r["allocated_cost"]) + (previous[2] if previous else Decimal(0))
        found[r["subscription"]] = (r["business_unit"], r["cost_center"], cost, r["currency"])
    return found


@dataclass
class MonthReview:
    month: str
    as_of: date
    statuses: list[BudgetStatus]
    anomalies: list[Anomaly]
    rule: AnomalyRule
    closed: bool = False  # the month had ended at ``now``: its spend is final, nothing to forecast


def review_month(conn: sa.Connection, month: str, now: datetime, rule: AnomalyRule = AnomalyRule()) -> MonthReview:
    """Every budget's status and the month's spend anomalies, as of ``now``."""
    history, start, end = _bounds(month)
    as_of = as_of_day(month, now)
    closed = now >= end
    rows = _spend_rows(budget_db.daily_spend(conn, history, end))
    found = statuses(load_budgets(conn), month, as_of, rows, _fixed(budget_db.fixed_costs(conn, month)), closed)
    return MonthReview(month, as_of, found, anomalies(rows, start.date(), as_of, rule), rule, closed)


def period_anomalies(conn: sa.Connection, since: datetime, until: datetime,
                     rule: AnomalyRule = AnomalyRule()) -> list[Anomaly]:
    """Spend anomalies on the days of ``since <= t < until`` (the HTML chargeback report)."""
    earliest = datetime.min.replace(tzinfo=timezone.utc) + timedelta(days=rule.window_days)
    history = since - timedelta(days=rule.window_days) if since >= earliest else datetime.min.replace(tzinfo=timezone.utc)
    rows = _spend_rows(budget_db.daily_spend(conn, history, until))  # a period at year 1 has no history before it
    return anomalies(rows, since.date(), (until - timedelta(microseconds=1)).date(), rule)


def gateway_status(conn: sa.Connection, subscription_id: str, now: datetime) -> GatewayAnswer:
    """The budgets that apply to one subscription, from an indexed read of its scopes' month."""
    month = month_of(now)
    unit, center = budget_db.subscription_scopes(conn, subscription_id)
    rows = budget_db.budgets_for(conn, subscription_id, unit, center)
    applicable = [Budget(r["scope"], r["scope_id"], Decimal(r["amount"]), r["currency"],
                         tuple(int(t) for t in r["alert_at"].split(",") if t), r["action"]) for r in rows]
    if not applicable:
        return gateway_answer(subscription_id, month, [])
    members = {subscription_id}
    for budget in applicable:
        if budget.scope != "subscription":
            members.update(budget_db.subscriptions_in(conn, budget.scope, budget.scope_id))
    history, _, end = _bounds(month)
    spend = _spend_rows(budget_db.daily_spend(conn, history, end, sorted(members)))
    fixed = _fixed(budget_db.fixed_costs(conn, month, sorted(members)))
    return gateway_answer(subscription_id, month, statuses(applicable, month, as_of_day(month, now), spend, fixed))


# ------------------------------------------------------------------------------ alerts


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"


def due_alerts(review: MonthReview) -> list[dict[str, Any]]:
    """One alert per threshold crossed per budget in the month, and one per anomaly; each with a
    unique ``alert_key`` and a payload with ``text`` (Slack, older Teams connectors) and the
    structured fields (``alert``), from which ``alert_message`` builds other webhook formats."""
    found = []
    for status in review.statuses:
        b = status.budget
        for threshold in status.thresholds_crossed:
            if review.closed:  # found after the month ended (late spend): no forecast, no block any more
                outlook = f"; the month has ended; status {status.status}"
            else:
                outlook = (f"; forecast {_money(status.forecast)} {b.currency}; status {status.status}"
                           + ("; the gateway blocks it" if status.status == "exceeded" and b.action == "block" else ""))
            text = (f"Budget {b.scope} {b.scope_id}: {_money(status.spent)} {b.currency} spent in {review.month}, "
                    f"{status.percent}% of its {_money(b.amount)} {b.currency} budget; alert threshold {threshold}% "
                    f"({_money(b.amount * threshold / 100)} {b.currency}) crossed" + outlook)
            fields = {"type": "budget_threshold", "threshold": threshold, **status.as_dict()}
            found.append({"alert_key": f"budget|{b.scope}|{b.scope_id}|{review.month}|{threshold}", "kind": "threshold",
                          "month": review.month, "payload": json.dumps({"text": text, "summary": text, "alert": fields})})
    for anomaly in review.anomalies:
        text = (f"Spend anomaly: {anomaly.kind} {anomaly.key} spent {_money(anomaly.spend)} {anomaly.currency} on "
                f"{anomaly.day.isoformat()}, above its baseline threshold {_money(anomaly.threshold)} "
                f"(rule: {review.rule.describe()})")
        fields = {"type": "spend_anomaly", **anomaly.as_dict()}
        found.append({"alert_key": f"anomaly|{anomaly.kind}|{anomaly.key}|{anomaly.day.isoformat()}|{anomaly.currency}",
                      "kind": "anomaly", "month": review.month,
                      "payload": json.dumps({"text": text, "summary": text, "alert": fields})})
    return found


@dataclass
class CheckResult:
    new: int
    sent: int
    pending: int
    errors: list[str]


def check(engine: sa.Engine, webhook_url: str, now: datetime | None = None, attempts: int = 4,
          backoff_seconds: float = 1.0, timeout_seconds: float = 10.0,
          sleep: Callable[[float], None] = time.sleep, webhook_format: str = "text") -> CheckResult:
    """Record the alerts due (once each, by key) and post every pending one to the webhook in
    ``webhook_format`` (``alert_message.WEBHOOK_FORMATS``): each
    with ``attempts`` tries, waiting ``backoff_seconds`` × 2^n between them; one that still fails
    stays pending (sent on the next run), never lost, and the run stops posting (the webhook is down). Delivery is at least once: an alert the webhook
    accepted but whose success could not be recorded is sent again. Each alert is leased
    (``claimed_until``) while it is posted, so concurrent checks never post it twice. The months
    reviewed are ``budgets.alert_months``: early in a month the previous one too (late spend)."""
    if webhook_format not in WEBHOOK_FORMATS:
        raise ValueError(f"webhook format {webhook_format!r} is not one of {', '.join(WEBHOOK_FORMATS)}")
    now = now or datetime.now(timezone.utc)
    with engine.connect() as conn:
        reviews = [review_month(conn, month, now) for month in alert_months(now.astimezone(timezone.utc).date())]
    due = list({a["alert_key"]: a for review in reviews for a in due_alerts(review)}.values())
    try:
        with engine.begin() as conn:
            new = budget_db.record_alerts(conn, due, now)
    except sa.exc.IntegrityError:  # a concurrent run recorded some of them first
        with engine.begin() as conn:
            new = budget_db.record_alerts(conn, due, now)
    with engine.connect() as conn:
        pending = budget_db.pending_alerts(conn)
    sent, errors, skipped = 0, [], 0
    # The lease outlasts every try of one message: each post has one deadline for all of it
    # (webhook.post_json), so attempts × deadline plus the backoff waits bound the time it is held.
    lease = timedelta(seconds=attempts * timeout_seconds + backoff_seconds * 2 ** attempts + 30)
    for group in message_groups(pending):
        claimed_at = datetime.now(timezone.utc)
        with engine.begin() as conn:
            claimed = [alert for alert in group if budget_db.claim(conn, alert["id"], claimed_at, claimed_at + lease)]
        skipped += len(group) - len(claimed)  # sent by another check meanwhile, or being sent by it now
        if not claimed:
            continue
        payload = grouped_payload(claimed)
        error = None
        for attempt in range(attempts):
            if attempt:
                sleep(backoff_seconds * 2 ** (attempt - 1))
            try:
                post_json(webhook_url, webhook_body(payload, webhook_format), timeout_seconds)
                error = None
                break
            except WebhookError as exc:
                error = str(exc)
        with engine.begin() as conn:
            for alert in claimed:
                if error is None:
                    budget_db.mark_sent(conn, alert["id"], datetime.now(timezone.utc), attempt + 1)
                    sent += 1
                else:
                    budget_db.mark_failed(conn, alert["id"], error, attempts)
        if error is not None:
            keys = ", ".join(alert["alert_key"] for alert in claimed)
            errors.append(f"{keys}: {error}")
            log.warning("budget alert %s not delivered after %d attempts: %s", keys, attempts, error)
            break  # the webhook is down: the rest stay pending for the next run, not hammered now
    return CheckResult(new, sent, len(pending) - sent - skipped, errors)


def _threshold_of(alert: dict[str, Any]) -> int:
    return int(alert["alert_key"].rsplit("|", 1)[1])


def message_groups(pending: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The pending alerts as messages: the thresholds of one budget and month crossed together are one
    message (a first check of a month already at 120 % posts once, not 50, 80 and 100 % at once);
    each anomaly is its own."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for alert in pending:
        key = alert["alert_key"].rsplit("|", 1)[0] if alert.get("kind") == "threshold" else alert["alert_key"]
        groups.setdefault(key, []).append(alert)
    return [sorted(group, key=_threshold_of) if group[0].get("kind") == "threshold" else group
            for group in groups.values()]


def grouped_payload(group: Sequence[dict[str, Any]]) -> str:
    """The stored payload of a group's message: the highest threshold's, naming the others crossed."""
    if len(group) == 1:
        return group[0]["payload"]
    message = json.loads(group[-1]["payload"])
    others = [_threshold_of(alert) for alert in group[:-1]]
    also = ", ".join(f"{t}%" for t in others)
    for field in ("text", "summary"):
        if isinstance(message.get(field), str):
            message[field] += f"; also crossed: {also}"
    if isinstance(message.get("alert"), dict):
        message["alert"]["also_crossed"] = others
    return json.dumps(message)
