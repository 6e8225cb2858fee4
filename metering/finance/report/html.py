"""The HTML chargeback report: one self-contained file (inline CSS, inline SVG charts, no scripts,
no fonts or images from the network) that opens in any browser, prints, and can be mailed.

It shows the headline numbers, a data-quality panel, four charts (cost by business unit, cost
per day, top subscriptions, model mix), the report table grouped as asked, and the PTU allocation.
The total row carries the exact amounts in ``data-*`` attributes for machines; people read cents.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from html import escape
from typing import Any

import pandas as pd

from metering.finance import charts
from metering.finance.charts import Series
from db.queries import UNMAPPED
from metering.finance.report.build import (
    LABELS, Report, has_ptu, known, request_partition, requests_sentence, shown_true_up, total_row, unpriced_note,
)

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹"}
PAYG = Series("Pay-as-you-go", "#4f46e5")
PTU = Series("PTU capacity (allocated)", "#14b8a6")
CHARGE = Series("Charge, trued up to the bill", "#4f46e5")
TOP_SUBSCRIPTIONS = 10
TOP_MODELS = 7
MAX_FILLED_DAYS = 3660  # beyond ten years, "Cost over time" shows only the days with cost
NO_SUBSCRIPTION = "(no subscription id)"  # requests the gateway sent without a subscription
SHORT = {"cost": "Pay-as-you-go", "ptu_cost": "PTU", "total_charge": "Charge", "total_tokens": "Tokens",
         "estimated_requests": "Estimated", "incomplete_requests": "Incomplete", "unpriced_requests": "Unpriced"}


class Money:
    """Formats amounts of one currency for people: ``$1,234.56``, ``< $0.01``, ``1,234.56 CHF``."""

    def __init__(self, currency: str):
        self.currency = currency
        self.symbol = SYMBOLS.get(currency)

    def __call__(self, value: Any, places: int = 2) -> str:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
        if 0 < abs(amount) < Decimal("0.005") and places == 2:
            return "< " + self._wrap("0.01")
        quantum = Decimal(1).scaleb(-places)
        text = f"{amount.quantize(quantum, rounding=ROUND_HALF_UP):,.{places}f}"
        return self._wrap(text)

    def _wrap(self, text: str) -> str:
        if text.startswith("-"):
            return "-" + self._wrap(text[1:])
        return f"{self.symbol}{text}" if self.symbol else f"{text} {self.currency}"

    def axis(self, value: float) -> str:
        """Tick labels: as few decimals as the tick needs."""
        if value == 0:
            return self._wrap("0")
        places = 0 if value >= 10 else 2 if value >= 0.01 else 3 if value >= 0.001 else 4
        if value >= 10 and value != int(value):
            places = 1
        return self._wrap(f"{value:,.{places}f}")


def _int(value: Any) -> str:
    return f"{int(value):,}"


def _share(part: int | Decimal, whole: int | Decimal) -> str:
    if not whole:
        return "–"
    share = Decimal(part) / Decimal(whole) * 100
    if 0 < share < Decimal("0.1"):
        return "< 0.1%"
    return f"{share.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


def _period_heading(report: Report) -> str:
    match = re.fullmatch(r"(\d{4})-(\d{2})", report.period.label)
    if match:
        return f"{calendar.month_name[int(match.group(2))]} {match.group(1)}"
    return report.period.label.replace("..", "to")


# --------------------------------------------------------------------------- charts


def _values(record: dict[str, Any], ptu: bool) -> list[Decimal]:
    """A chart's bar values of a row: the trued-up charge alone; else pay-as-you-go (and PTU)."""
    if "true_up" in record:
        return [record["total_charge"]]
    return [known(record["cost"]), record["ptu_cost"]] if ptu else [known(record["cost"])]


def _by_business_unit(frame: pd.DataFrame, ptu: bool) -> list[tuple[str, None, list[Decimal]]]:
    sums: dict[str, list[Decimal]] = {}
    for record in frame.to_dict("records"):
        values = _values(record, ptu)
        current = sums.setdefault(record["business_unit"], [Decimal(0)] * len(values))
        sums[record["business_unit"]] = [a + b for a, b in zip(current, values)]
    rows = [(name, None, values) for name, values in sums.items()]
    return sorted(rows, key=lambda r: (-sum(r[2]), r[0]))


def _top_subscriptions(frame: pd.DataFrame, ptu: bool) -> tuple[list[tuple[str, str | None, list[Decimal]]], int, Decimal]:
    """The largest subscriptions, and how many more there are with their total."""
    rows = []
    for record in frame.to_dict("records"):
        values = _values(record, ptu)
        name = NO_SUBSCRIPTION if record["subscription"] == UNMAPPED else record["subscription"]
        rows.append((name, record["business_unit"], values))
    rows.sort(key=lambda r: (-sum(r[2]), r[0]))
    rest = rows[TOP_SUBSCRIPTIONS:]
    return rows[:TOP_SUBSCRIPTIONS], len(rest), sum((sum(r[2], Decimal(0)) for r in rest), Decimal(0))


def _days(frame: pd.DataFrame, report: Report, ptu: bool) -> list[tuple[str, list[Decimal]]]:
    values = {record["day"]: [known(record["cost"]), record["ptu_cost"]] if ptu else [known(record["cost"])]
              for record in frame.to_dict("records") if re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(record["day"]))}
    if not values:
        return []
    days = sorted(values)
    first, last = date.fromisoformat(days[0]), date.fromisoformat(days[-1])
    if report.period.since is not None and report.period.until is not None:
        start, end = report.period.since.date(), (report.period.until - timedelta(microseconds=1)).date()
        if (end - start).days <= 400:
            first, last = min(first, start), max(last, end)
    zero = [Decimal(0)] * (2 if ptu else 1)
    if (last - first).days > MAX_FILLED_DAYS:  # e.g. a stray row dated 0001 or 9999: plot the days that have cost
        return [(key, values[key]) for key in days]
    # by ordinal: no date arithmetic past date.max (a row stored on 9999-12-31 must not break the page)
    return [(day.isoformat(), values.get(day.isoformat(), zero))
            for day in map(date.fromordinal, range(first.toordinal(), last.toordinal() + 1))]


def _day_label(points: list[tuple[str, list[Decimal]]]):
    count = len(points)

    def label(index: int, key: str) -> str | None:
        day = date.fromisoformat(key)
        if count <= 45:
            if index % 7 == 0 or index == count - 1 and count - 1 - (index // 7) * 7 >= 4:
                return f"{day.day} {calendar.month_abbr[day.month]}"
            return None
        return f"{calendar.month_abbr[day.month]} {day.year % 100:02d}" if day.day == 1 else None

    return label


def _model_mix(frame: pd.DataFrame, ptu: bool) -> tuple[list[str], list[Decimal], list[int]]:
    column = "total_charge" if ptu else "cost"
    records = sorted(frame.to_dict("records"), key=lambda r: (-known(r[column]), -r["total_tokens"], r["model"]))
    names = [r["model"] for r in records]
    costs = [known(r[column]) for r in records]
    tokens = [int(r["total_tokens"]) for r in records]
    if len(records) > TOP_MODELS:
        keep = TOP_MODELS - 1
        names = names[:keep] + [f"{len(records) - keep} other models"]
        costs = costs[:keep] + [sum(costs[keep:], Decimal(0))]
        tokens = tokens[:keep] + [sum(tokens[keep:])]
    return names, costs, tokens


def _chart_card(title: str, subtitle: str, svg: str, extra: str = "", wide: bool = False) -> str:
    return (
        f'<section class="card{" wide" if wide else ""}"><header><h2>{escape(title)}</h2>'
        f'<p class="sub">{escape(subtitle)}</p></header>{svg}{extra}</section>'
    )


def _charts(report: Report, money: Money) -> str:
    if "day" not in report.charts:
        return ""
    ptu = has_ptu(report.charts["subscription"])
    trued_up = "true_up" in report.charts["subscription"].columns
    series = [CHARGE] if trued_up else [PAYG, PTU] if ptu else [PAYG]
    cost_word = "Charge" if ptu else "Pay-as-you-go cost"
    cards = []
    business_units = _by_business_unit(report.charts["subscription"], ptu)
    cards.append(_chart_card(
        "Cost by business unit",
        f"{cost_word} per business unit" + (", trued up to the Azure bill" if trued_up else
                                            ", pay-as-you-go and allocated PTU capacity" if ptu else ""),
        charts.hbar(business_units, series, money, "Cost by business unit"),
        charts.legend(series) if ptu else "",
    ))
    subscriptions, more, more_cost = _top_subscriptions(report.charts["subscription"], ptu)
    series_by_day = [PAYG, PTU] if ptu else [PAYG]
    rest = (f'<p class="more">and {more:,} more subscription{"" if more == 1 else "s"}, {money(more_cost)} together</p>'
            if more else "")
    cards.append(_chart_card(
        "Top subscriptions",
        f"The {len(subscriptions)} APIM subscriptions with the largest {cost_word.lower()}",
        charts.hbar(subscriptions, series, money, "Top subscriptions by cost"),
        (charts.legend(series) if ptu else "") + rest,
    ))
    per_day = f"{cost_word} per day (UTC)" + (" — PTU capacity follows each day's share of the tokens" if ptu else "")
    daily_ptu = has_ptu(report.charts["day"]) and any(known(v) for v in report.charts["day"]["ptu_cost"])
    if ptu and not daily_ptu:  # a stored allocation or true-up is per subscription and month, not per day
        per_day = ("Pay-as-you-go cost per day (UTC), as metered: the "
                   + ("true-up and PTU are" if trued_up else "stored PTU allocation is") + " per subscription and month")
        series_by_day = [PAYG]
    days = _days(report.charts["day"], report, len(series_by_day) > 1)
    cards.append(_chart_card(
        "Cost over time",
        per_day,
        charts.columns(days, series_by_day, money.axis, money, "Cost per day", _day_label(days), height=290),
        charts.legend(series_by_day) if len(series_by_day) > 1 else "",
    ))
    ptu = ptu and daily_ptu  # the model mix, like the days, only has PTU when it is allocated by tokens
    names, costs, tokens = _model_mix(report.charts["model"], ptu)
    colors = [charts.PALETTE[i % len(charts.PALETTE)] for i in range(len(names))]
    if names and names[-1].endswith("other models"):
        colors[-1] = charts.OTHER
    total_cost, total_tokens = sum(costs, Decimal(0)), sum(tokens)
    rows = "".join(
        f'<tr><td><i class="swatch" style="background:{color}"></i>{escape(name)}</td>'
        f'<td class="num">{money(cost)}</td><td class="num muted">{_share(cost, total_cost)}</td>'
        f'<td class="num">{_int(count)}</td><td class="num muted">{_share(count, total_tokens)}</td></tr>'
        for name, cost, count, color in zip(names, costs, tokens, colors)
    )
    table = (f'<table class="mini"><thead><tr><th>Model</th><th class="num">{"Charge" if ptu else "Cost"}</th>'
             f'<th class="num">share</th><th class="num">Tokens</th><th class="num">share</th></tr></thead>'
             f"<tbody>{rows}</tbody></table>")
    cards.append(_chart_card(
        "Model mix",
        "Share of the " + ("charge" if ptu else "cost") + " and of the tokens, by model",
        charts.mix([("Cost", costs), ("Tokens", tokens)], names, colors, "Model mix"),
        table,
    ))
    return '<div class="grid">' + "".join(cards) + "</div>"


# --------------------------------------------------------------------------- panels


def _kpis(report: Report, money: Money) -> str:
    total = report.total
    ptu = has_ptu(report.frame)
    charge = known(total["total_charge"] if ptu else total["cost"])
    tokens = total["total_tokens"]
    payg, provisioned, not_billable = request_partition(total)
    unpriced = total["unpriced_requests"]
    plus = f" plus {_int(unpriced)} unpriced request{'' if unpriced == 1 else 's'} (cost unknown)" if unpriced else ""
    # Tokens the charge pays for: priced pay-as-you-go tokens, and PTU tokens only when their cost is in.
    paid_tokens = tokens - total["unpriced_tokens"] - (0 if ptu else total["provisioned_tokens"])
    per_million = (charge / paid_tokens * 1_000_000) if paid_tokens > 0 else Decimal(0)
    figures = report.true_up
    if figures is not None:  # the stored true-up: the same four figures as every other format
        headline = ("Total charge = Azure bill", money(figures["bill"]),
                    f"metered {money(figures['metered'])} + PTU {money(figures['ptu'])} + adjustment "
                    f"{money(figures['adjustment'])} (true-up)" + plus, "accent")
    else:
        headline = ("Total charge" if ptu else "Pay-as-you-go cost", money(charge),
                    (f"pay-as-you-go {money(known(total['cost']))} + PTU {money(total['ptu_cost'])}" if ptu
                     else f"{report.currency}, exact to the cent") + plus, "accent")
    cards = [
        headline,
        ("Requests", _int(total["requests"]), requests_sentence(total), ""),
        ("Tokens", _int(tokens), f"{_int(total['provisioned_tokens'])} on provisioned (PTU) deployments", ""),
        ("Cost per 1M tokens", money(per_million),
         "blended over priced tokens" + (", PTU included" if ptu else ", PTU tokens excluded"), ""),
    ]
    return '<div class="kpis">' + "".join(
        f'<div class="kpi {cls}"><div class="label">{escape(label)}</div><div class="value num">{escape(value)}</div>'
        f'<div class="note">{escape(note)}</div></div>'
        for label, value, note, cls in cards
    ) + "</div>"


def _quality(report: Report, money: Money) -> str:
    q = report.quality
    payg, provisioned, not_billable = request_partition(q)
    billable = payg + provisioned
    items = [
        ("Estimated", "warn", q["estimated_requests"], q["estimated_tokens"],
         "No usage in the response: tokens counted offline with tiktoken from the request and stream."),
        ("Incomplete", "warn", q["incomplete_requests"], q["incomplete_tokens"],
         "Billable requests with partial or no token counts (e.g. a stream cut off, a truncated capture)."),
        ("Unpriced", "bad", q["unpriced_requests"], q["unpriced_tokens"],
         "No rate for the model (no_rate) or tokens unknown (no_usage): cost unknown, not counted as zero."),
        ("Fallback-priced", "warn", q["fallback_priced_requests"], q["fallback_priced_tokens"],
         "A token kind (cache write, audio, image) or service tier without its own price in the card: "
         "priced at the text or default-tier rate. See `metering rates list`."),
    ]
    tiles = []
    for title, level, requests, tokens, text in items:
        state = level if requests else "ok"
        tiles.append(
            f'<div class="dq {state}"><div class="dq-head"><span class="dot"></span>{escape(title)}</div>'
            f'<div class="dq-value num">{_int(requests)} <small>request{"" if requests == 1 else "s"}</small></div>'
            f'<div class="dq-sub num">{_int(tokens)} tokens · {_share(requests, q["requests"])} of requests</div>'
            f'<p>{escape(text)}</p></div>'
        )
    unmapped = q["unmapped_subscriptions"]
    tiles.append(
        f'<div class="dq {"warn" if unmapped else "ok"}"><div class="dq-head"><span class="dot"></span>Unmapped</div>'
        f'<div class="dq-value num">{len(unmapped)} <small>subscription{"" if len(unmapped) == 1 else "s"}</small></div>'
        f'<div class="dq-sub num">{_int(q["unmapped_requests"])} requests · {money(q["unmapped_cost"])}</div>'
        f'<p>No business unit in the subscriptions table: reported as (unmapped), still in every total.</p></div>'
    )
    details = []
    if report.models_without_rate:
        rows = "".join(
            f'<tr><td>{escape(str(r["model"]))}</td><td>{escape(str(r["deployment_type"]))}</td>'
            f'<td class="num">{_int(r["requests"])}</td><td class="num">{_int(r["tokens"])}</td></tr>'
            for r in report.models_without_rate
        )
        details.append(
            '<div class="dq-detail"><h3>Models without a rate</h3><table class="mini"><thead><tr><th>Model</th>'
            '<th>Deployment type</th><th class="num">Requests</th><th class="num">Tokens</th></tr></thead>'
            f"<tbody>{rows}</tbody></table><p class=\"muted\">Add them to the rate card and run "
            "<code>metering reprice</code>.</p></div>"
        )
    if report.fallback_pricing:
        rows = "".join(
            f'<tr><td>{escape(str(r["model"]))}</td><td>{escape(str(r["deployment_type"]))}</td>'
            f'<td>{escape(str(r["kinds"]))}</td><td class="num">{_int(r["requests"])}</td></tr>'
            for r in report.fallback_pricing
        )
        details.append(
            '<div class="dq-detail"><h3>Token kinds priced by a fallback rate</h3><table class="mini"><thead><tr>'
            '<th>Model</th><th>Deployment type</th><th>Kinds</th><th class="num">Requests</th></tr></thead>'
            f"<tbody>{rows}</tbody></table><p class=\"muted\">Add their prices to the rate card and run "
            "<code>metering reprice</code>.</p></div>"
        )
    if unmapped:
        details.append('<div class="dq-detail"><h3>Subscriptions without a business unit</h3><p>'
                       + ", ".join(f"<em>{NO_SUBSCRIPTION}</em>" if s == UNMAPPED else f"<code>{escape(s)}</code>"
                                   for s in unmapped)
                       + '</p><p class="muted">Map them with <code>metering subscriptions import</code>.</p></div>')
    clean = billable - q["estimated_requests"] - q["incomplete_requests"] - q["unpriced_requests"]
    summary = (f"{_int(q['requests'])} requests: {requests_sentence(q)}. {_share(clean, billable)} of the "
               "pay-as-you-go and PTU requests rest on token counts the provider reported and a known price."
               if billable else "No billable requests in this period.")
    return (
        '<section class="card wide quality"><header><h2>Data quality</h2>'
        f'<p class="sub">{escape(summary)} Read the totals with these in mind.</p></header>'
        f'<div class="dq-grid">{"".join(tiles)}</div>{"".join(details)}</section>'
    )


def _table(report: Report, money: Money) -> str:
    dims = report.dimensions
    ptu = has_ptu(report.frame)
    measures = ["requests", "total_tokens", "cost"] + (["ptu_cost", "total_charge"] if ptu else []) + [
        "estimated_requests", "incomplete_requests", "unpriced_requests"]
    if "true_up" in report.frame.columns:
        measures.insert(measures.index("total_charge"), "true_up")
    head = "".join(f"<th>{escape(LABELS.get(d, d))}</th>" for d in dims) + "".join(
        f'<th class="num">{escape(SHORT.get(m, LABELS[m]))}</th>' for m in measures)

    def dimension_cells(record: dict[str, Any]) -> str:
        out = []
        for d in dims:
            value = str(record[d])
            css = "dim muted" if value.startswith("(") else "dim"  # (unmapped), (none), (unknown)
            out.append(f'<td class="{css}" title="{escape(value)}">{escape(value)}</td>')
        return "".join(out)

    def measure_cells(record: dict[str, Any]) -> str:
        out = []
        for m in measures:
            value = record[m]
            if m in ("cost", "ptu_cost", "true_up", "total_charge"):
                out.append(_money_cell(value, record["cost_status"] if m not in ("ptu_cost", "true_up") else "complete",
                                       money))
            elif value or m in ("requests", "total_tokens"):
                flag = " flag" if m == "unpriced_requests" else ""
                out.append(f'<td class="num{flag}">{_int(value)}</td>')
            else:
                out.append('<td class="num"><span class="zero">–</span></td>')
        return "".join(out)

    records = report.frame.to_dict("records")
    total = total_row(report.frame, dims)
    if report.true_up is not None:  # cents that add up across and down, as in the table format
        records, total = shown_true_up(records, total, report.true_up)
    body = "".join(f"<tr>{dimension_cells(r)}{measure_cells(r)}</tr>" for r in records)
    data = (f' data-cost="{_exact(total["cost"])}" data-cost-status="{total["cost_status"]}"'
            f' data-requests="{total["requests"]}" data-tokens="{total["total_tokens"]}"')
    if ptu:
        data += f' data-ptu-cost="{_exact(total["ptu_cost"])}" data-total-charge="{_exact(total["total_charge"])}"'
    note = unpriced_note(total)
    note_html = (f'<p class="sub unpriced">Unpriced: {escape(note)}.</p>' if note else "")
    total_cells = (f'<td colspan="{len(dims)}">Total</td>' if dims else "") + measure_cells(total)
    by = ", ".join(LABELS.get(d, d).lower() for d in dims) or "total"
    return (
        f'<section class="card wide"><header><h2>Chargeback by {escape(by)}</h2>'
        f'<p class="sub">{len(report.frame):,} rows · amounts in {escape(report.currency)}, rounded to the cent for display '
        "(totals add the exact amounts)</p></header>"
        f'<div class="table-wrap"><table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        f'<tfoot><tr class="total"{data}>{total_cells}</tr></tfoot></table></div>{note_html}</section>'
    )


def _exact(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def _money_cell(value: Decimal | None, status: str, money: Money) -> str:
    """A cost cell: cents, flagged when part of the group is unpriced; empty and flagged when the
    cost is unknown (never $0.00)."""
    if value is None:
        return '<td class="num flag" title="No request priced: cost unknown (no rate or no usage)">unpriced</td>'
    if status == "partial":
        return (f'<td class="num">{escape(money(value))} <span class="flag" '
                'title="Plus unpriced requests whose cost is unknown">+ unpriced</span></td>')
    return f'<td class="num">{escape(money(value))}</td>'


def _ptu(report: Report, money: Money) -> str:
    if report.ptu is None:
        return ""
    if not report.ptu:
        return ('<section class="card wide"><header><h2>PTU allocation</h2><p class="sub">No provisioned-throughput '
                "cost for a month this period covers whole.</p></header></section>")
    rows = []
    for part in report.ptu:
        share = part["token_share"]
        width = float(share) * 100
        rows.append(
            f'<tr><td>{escape(part["month"])}</td><td>{escape(part["deployment"])}'
            + (f' <span class="muted small">({escape(part["kind"])})</span>' if part["kind"] != "provisioned" else "")
            + (f'<div class="muted small">{escape(part["backend_id"])}</div>' if part["backend_id"] else "")
            + f'</td><td>{escape(part["subscription"])}</td><td class="num">{_int(part["tokens"])}</td>'
            f'<td class="num share"><span class="bar"><i style="width:{width:.1f}%"></i></span><span class="pct">{_share(share, 1)}</span></td>'
            f'<td class="num">{money(part["ptu_cost"])}</td></tr>'
        )
    total = sum((p["ptu_cost"] for p in report.ptu), Decimal(0))
    monthly: dict[tuple[str, str, str, str], Decimal] = {}
    for p in report.ptu:
        monthly[(p["month"], p["deployment"], p["backend_id"], p["kind"])] = p["monthly_cost"]
    config = sum(monthly.values(), Decimal(0))
    return (
        '<section class="card wide"><header><h2>PTU allocation</h2>'
        '<p class="sub">Each provisioned deployment\'s monthly cost, split by each subscription\'s share of its tokens. '
        "Parts are whole cents and add up to the monthly cost exactly; the leftover cents go to the largest "
        "remainders.</p></header>"
        '<div class="table-wrap"><table class="data"><thead><tr><th>Month</th><th>Deployment</th><th>Subscription</th>'
        '<th class="num">Tokens</th><th class="num">Share</th><th class="num">Allocated</th></tr></thead>'
        f'<tbody>{"".join(rows)}</tbody><tfoot><tr class="total" data-ptu-cost="{format(total, "f")}">'
        f'<td colspan="5">Total of {len(monthly)} monthly PTU cost(s), {money(config)}</td>'
        f'<td class="num">{money(total)}</td></tr></tfoot></table></div></section>'
    )


def _code(text: str) -> str:
    """Escape text and show `commands` as code."""
    parts = escape(text).split("`")
    return "".join(f"<code>{part}</code>" if index % 2 else part for index, part in enumerate(parts))


def _notes(report: Report) -> str:
    if not report.notes:
        return ""
    items = "".join(f"<li>{_code(note)}</li>" for note in report.notes)
    return f'<section class="card wide notes"><header><h2>Notes</h2></header><ul>{items}</ul></section>'


CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:#f4f5f7;color:#1f2937;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif}
.num,td.num,th.num{font-variant-numeric:tabular-nums;text-align:right;white-space:nowrap}
.page{max-width:1240px;margin:0 auto;padding:32px 24px 48px}
.top{display:flex;justify-content:space-between;align-items:flex-end;gap:24px;margin-bottom:24px}
.eyebrow{font-size:12px;font-weight:600;letter-spacing:.08em;text-transform:uppercase;color:#4f46e5;margin:0 0 4px}
h1{font-size:30px;line-height:1.15;margin:0;font-weight:700;letter-spacing:-.01em}
.meta{color:#6b7280;font-size:13px;text-align:right}
.meta div{white-space:nowrap}
.kpis{display:grid;grid-template-columns:repeat(4,1fr);gap:16px;margin-bottom:16px}
.kpi{background:#fff;border:1px solid #e5e7eb;border-radius:12px;padding:16px 18px}
.kpi .label{font-size:12px;color:#6b7280;font-weight:600;text-transform:uppercase;letter-spacing:.05em}
.kpi .value{font-size:28px;font-weight:700;margin:4px 0 2px;text-align:left;letter-spacing:-.01em}
.kpi .note{font-size:12px;color:#6b7280}
.kpi.accent{background:#4f46e5;border-color:#4f46e5;color:#fff}
.kpi.accent .label,.kpi.accent .note{color:#e0e7ff}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px;margin-bottom:16px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:12px;padding:18px 20px 20px;margin-bottom:16px;min-width:0}
.grid .card{margin-bottom:0}
.card header{margin-bottom:12px}
h2{font-size:16px;margin:0;font-weight:650}
h3{font-size:13px;margin:0 0 6px;font-weight:650}
.sub{margin:2px 0 0;color:#6b7280;font-size:12.5px}
.chart{display:block;overflow:visible}
.chart text{font-family:inherit}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin-top:10px;font-size:12px;color:#4b5563}
.legend .key{display:inline-flex;align-items:center;gap:6px}
.legend i,.swatch{display:inline-block;width:10px;height:10px;border-radius:2px}
.swatch{margin-right:8px;vertical-align:-1px}
.dq-grid{display:grid;grid-template-columns:repeat(4,1fr);gap:12px}
.dq{border:1px solid #e5e7eb;border-radius:10px;padding:12px 14px;border-left-width:4px}
.dq p{margin:6px 0 0;font-size:12px;color:#6b7280;line-height:1.4}
.dq-head{font-weight:650;font-size:13px;display:flex;align-items:center;gap:8px}
.dq .dot{width:8px;height:8px;border-radius:50%;background:currentColor;display:inline-block}
.dq-value{font-size:22px;font-weight:700;text-align:left;margin-top:4px}
.dq-value small{font-size:12px;font-weight:500;color:#6b7280}
.dq-sub{font-size:12px;color:#4b5563;text-align:left}
.dq.ok{border-left-color:#10b981}.dq.ok .dq-head{color:#047857}
.dq.warn{border-left-color:#f59e0b}.dq.warn .dq-head{color:#b45309}
.dq.bad{border-left-color:#ef4444}.dq.bad .dq-head{color:#b91c1c}
.dq-detail{margin-top:14px;padding-top:12px;border-top:1px solid #f0f1f3}
.dq-detail p{margin:4px 0}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f3f4f6;border-radius:4px;padding:1px 5px}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%}
table.data{font-size:13px}
table.data th{font-size:11px;font-weight:600;text-transform:uppercase;letter-spacing:.03em;color:#6b7280;text-align:left;padding:8px 7px;border-bottom:1px solid #e5e7eb;vertical-align:bottom;hyphens:auto}
table.data td{padding:7px 7px;border-bottom:1px solid #f0f1f3;vertical-align:top}
table.data td.dim{white-space:nowrap;max-width:220px;overflow:hidden;text-overflow:ellipsis}
table.data tbody tr:nth-child(even){background:#fafafb}
table.data tfoot td{font-weight:700;border-top:2px solid #1f2937;border-bottom:none;padding-top:9px}
table.data th.num{text-align:right}
table.mini{margin-top:12px;font-size:12.5px}
.dq-detail table.mini{width:auto;min-width:480px;margin-top:4px}
.dq-detail table.mini th,.dq-detail table.mini td{padding-right:24px}
table.mini th{font-weight:600;color:#6b7280;text-align:left;padding:4px 6px;border-bottom:1px solid #e5e7eb;font-size:11.5px}
table.mini td{padding:4px 6px;border-bottom:1px solid #f3f4f6}
.muted{color:#6b7280}.small{font-size:11.5px}
.zero{color:#c4c7cc}
td.flag,span.flag{color:#b91c1c;font-weight:650}
span.flag{font-size:11px}
td.num span.flag{display:block;line-height:1.2}
p.unpriced{color:#b91c1c;margin-top:8px}
td.share{min-width:150px}
.bar{display:inline-block;width:70px;height:6px;background:#eef0f3;border-radius:3px;margin-right:8px;vertical-align:middle;overflow:hidden}
.bar i{display:block;height:100%;background:#14b8a6}
.pct{display:inline-block;min-width:48px}
.dq-detail code{white-space:nowrap;display:inline-block;margin:2px 0}
.more{margin:10px 0 0;font-size:12.5px;color:#6b7280}
.notes ul{margin:0;padding-left:18px}
.notes li{margin:4px 0}
footer.foot{color:#6b7280;font-size:12px;margin-top:8px;line-height:1.6}
@media (max-width:900px){.kpis,.dq-grid{grid-template-columns:1fr 1fr}.grid{grid-template-columns:1fr}.top{display:block}.meta{text-align:left;margin-top:8px}}
@page{size:landscape;margin:10mm}
@media print{
body{background:#fff;font-size:11px}
.page{padding:0;max-width:none}
.card,.kpi{break-inside:avoid}
.card.wide{break-inside:auto}
.kpis{gap:8px;grid-template-columns:repeat(4,1fr)}.kpi{padding:10px 12px}.kpi .value{font-size:20px}
.dq-grid{grid-template-columns:repeat(4,1fr)}.grid{grid-template-columns:1fr 1fr}
.top{display:flex}.meta{text-align:right;margin-top:0}
.table-wrap{overflow:visible}
table.data{font-size:9.5px}
table.data th{font-size:8.5px;letter-spacing:0;padding:4px 4px;white-space:normal}
table.data td{padding:3px 4px}
table.data td.dim{white-space:normal;max-width:180px;overflow:visible;overflow-wrap:anywhere}
table.data thead{display:table-header-group}
table.data tr{break-inside:avoid}
span.flag{font-size:8.5px}
td.share{min-width:0}
}
"""


def _anomalies(report: Report) -> str:
    """Days whose spend for a subscription or model is far above its own baseline (budgets)."""
    if report.anomalies is None:
        return ""
    from metering.finance.budgets.render import anomalies_html

    rows, rule = report.anomalies
    return anomalies_html(rows, rule).replace('<section id="anomalies">', '<section id="anomalies" class="card wide">', 1)


def render_html(report: Report) -> str:
    """The whole report as one HTML document (UTF-8 text)."""
    money = Money(report.currency)
    dims = ", ".join(LABELS.get(d, d).lower() for d in report.dimensions) or "total"
    generated = report.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    head = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(report.title)}</title>"
        f'<meta name="generator" content="metering report">'
        f"<style>{CSS}</style></head>"
    )
    header = (
        '<div class="top"><div><p class="eyebrow">Azure OpenAI chargeback</p>'
        f"<h1>{escape(_period_heading(report))}</h1></div>"
        f'<div class="meta"><div>Grouped by {escape(dims)}</div><div>Amounts in {escape(report.currency)}</div>'
        f"<div>Generated {escape(generated)}</div></div></div>"
    )
    footer = (
        '<footer class="foot">Pay-as-you-go cost is the sum of each request\'s exact cost from the rate card '
        "(input, cached input and output tokens × the rate per 1M tokens in force at the request's time). "
        "PTU capacity cost comes from the PTU cost file and is allocated by tokens. Days are UTC. "
        "Unpriced requests are excluded from the cost, never counted as zero: see Data quality.</footer>"
    )
    body = (
        f'<body><main class="page">{header}{_kpis(report, money)}{_quality(report, money)}'
        f"{_charts(report, money)}{_table(report, money)}{_ptu(report, money)}{_anomalies(report)}{_notes(report)}{footer}</main></body></html>"
    )
    return head + body + "\n"
