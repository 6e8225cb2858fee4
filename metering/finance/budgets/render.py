"""``metering budgets status`` as a table, CSV, JSON or one self-contained HTML page."""

from __future__ import annotations

import csv
import io
import json
from html import escape
from typing import TYPE_CHECKING

from metering.safe_text import spreadsheet_text, terminal_line

if TYPE_CHECKING:
    from metering.finance.budgets.service import MonthReview

COLUMNS = ("scope", "scope_id", "amount", "currency", "spent", "percent", "forecast", "crossing_day", "status",
           "action", "fixed_cost", "estimated_cost", "unpriced_requests", "other_currency_cost")


def anomaly_rows(review: MonthReview) -> list[dict[str, object]]:
    return [a.as_dict() for a in review.anomalies]


def render_status(review: MonthReview, fmt: str) -> str:
    rows = [s.as_dict() for s in review.statuses]
    method = review.statuses[0].forecast_method if review.statuses else "no budgets"
    if fmt == "json":
        return json.dumps({"month": review.month, "as_of": review.as_of.isoformat(), "budgets": rows,
                           "anomalies": anomaly_rows(review), "anomaly_rule": review.rule.describe()}, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=("month", "as_of", *COLUMNS), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: spreadsheet_text(value) for key, value in row.items()})
        return buffer.getvalue()
    if fmt == "html":
        return html_page(review)
    lines = [f"Budgets — {review.month} — as of {review.as_of.isoformat()}", ""]
    table = [COLUMNS] + [tuple("" if row[c] is None else terminal_line(str(row[c])) for c in COLUMNS) for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for n, row in enumerate(table):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    if not rows:
        lines.append("(no budgets: import some with `metering budgets import FILE`)")
    lines += ["", f"forecast: {method}",
              "spent includes allocated fixed (PTU) cost; estimated_cost is the part of spent from estimated "
              "token counts; unpriced_requests have no known cost and are not in spent", ""]
    lines.append(f"anomalies ({review.rule.describe()}):")
    lines += [f"  {a.day.isoformat()}  {a.kind:<12} {terminal_line(a.key):<30} {a.spend:.2f} {terminal_line(a.currency)} "
              f"(baseline median {a.median:.2f}, threshold {a.threshold:.2f})" for a in review.anomalies] or ["  none"]
    return "\n".join(lines) + "\n"


def anomalies_html(anomalies: list[dict[str, object]], rule: str) -> str:
    """The anomalies as an HTML section (also used by the chargeback HTML report)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in ("day", "kind", "key", "spend", "baseline median", "threshold", "currency"))
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(a[k]))}</td>" for k in ("day", "kind", "key", "spend", "baseline_median",
                                                                      "threshold", "currency")) + "</tr>"
        for a in anomalies) or '<tr><td colspan="7">none</td></tr>'
    return (f'<section id="anomalies"><h2>Spend anomalies</h2><p>{escape(rule)}</p>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>")


def html_page(review: MonthReview) -> str:
    rows = [s.as_dict() for s in review.statuses]
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape('' if r[c] is None else str(r[c]))}</td>" for c in COLUMNS) + "</tr>"
                   for r in rows)
    method = escape(review.statuses[0].forecast_method) if review.statuses else ""
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>Budgets {escape(review.month)}</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:2px 6px}</style></head><body>"
            f"<h1>Budgets — {escape(review.month)} — as of {review.as_of.isoformat()}</h1>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><p>forecast: {method}</p>"
            f"{anomalies_html(anomaly_rows(review), review.rule.describe())}</body></html>\n")
