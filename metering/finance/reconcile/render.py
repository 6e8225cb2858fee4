"""A reconciliation written out: terminal table, CSV, JSON, XLSX, or one self-contained HTML page
with a chart of billed vs metered cost by meter. Money stays ``Decimal`` (exact text in CSV and
JSON; two decimals in the table, HTML and XLSX); openpyxl is imported only for XLSX."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from decimal import Decimal
from html import escape
from typing import Any

from metering.finance import charts
from metering.finance.reconcile.compare import AMOUNTS, Reconciliation, card_drift, cents, data_quality, group_rows, per_1m, totals

FORMATS = ("table", "csv", "json", "html", "xlsx")
MEASURES = ("billed_quantity", "metered_quantity", "billed_cost", "metered_cost", "difference")
PRICES = ("billed_unit_price", "card_unit_price")


def columns(by: Sequence[str]) -> list[str]:
    return [*by, *MEASURES, "explanation", *AMOUNTS, *PRICES]


def _text(value: Any, column: str) -> str:
    if value is None:
        return ""
    if column in PRICES:
        return per_1m(value)
    if isinstance(value, Decimal):
        return format(value.normalize() if value == value.to_integral_value() else value, "f")
    return str(value)


def _exact(value: Decimal) -> str:
    """Exact decimal text without float noise or an exponent, at most 12 decimals."""
    return format(value.quantize(Decimal("0.000000000001")).normalize(), "f")


def render(result: Reconciliation, by: Sequence[str], fmt: str) -> str | bytes:
    rows = group_rows(result, by)
    if fmt == "csv":
        return render_csv(rows, by)
    if fmt == "json":
        return render_json(result, rows, by)
    if fmt == "html":
        return render_html(result, rows, by)
    if fmt == "xlsx":
        return render_xlsx(result, rows, by)
    return render_table(result, rows, by)


def render_csv(rows: list[dict[str, Any]], by: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = columns(by)
    writer.writerow(names)
    for row in rows:
        writer.writerow([_exact(row[n]) if isinstance(row[n], Decimal) and n not in PRICES else _text(row[n], n)
                         for n in names])
    return buffer.getvalue()


def render_json(result: Reconciliation, rows: list[dict[str, Any]], by: Sequence[str]) -> str:
    def plain(value: Any, column: str = "") -> Any:
        if isinstance(value, Decimal):
            return per_1m(value) if column in PRICES else _exact(value)
        return value

    document = {
        "month": result.month,
        "currency": result.currency,
        "by": list(by),
        "rows": [{n: plain(row[n], n) for n in columns(by)} for row in rows],
        "total": {k: plain(v) for k, v in totals(rows).items()},
        "data_quality": {"unmapped_backends": result.unmapped_backends,
                         "resources_without_bill": result.resources_without_bill,
                         "unknown_meters": sorted({c.meter.meter_name or "" for c in result.cells if c.meter.kind is None}),
                         "unpriced_tokens": sum(c.unpriced_quantity for c in result.cells)},
        "card_drift": [{k: plain(v) for k, v in item.items()} for item in card_drift(result)],
        "notes": result.notes,
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _summary_lines(result: Reconciliation, total: dict[str, Any]) -> list[str]:
    lines = [f"billed {cents(total['billed_cost'])} {result.currency}, metered {cents(total['metered_cost'])} "
             f"{result.currency}, difference {cents(total['difference']):+} {result.currency}"]
    explained = [f"{name} {cents(total[name]):+}" for name in AMOUNTS if abs(total[name]) >= Decimal("0.005")]
    if explained:
        lines.append("explained by: " + ", ".join(explained))
    lines.append(data_quality(result))
    for item in card_drift(result):
        tier = f" {item['service_tier']}" if item["service_tier"] else ""
        lines.append(f"card drift: {item['model']} {item['kind']} {item['deployment_type']}{tier} on {account_name(item['resource'])}: "
                     f"billed {per_1m(item['billed_per_1m'])}/1M, card {per_1m(item['card_per_1m'])}/1M — "
                     "check the rates card row")
    return lines + result.notes


def account_name(resource: str) -> str:
    """The account name of an ARM id (the table is read by people; CSV and JSON keep the whole id)."""
    return resource.rsplit("/", 1)[-1] if resource.startswith("/subscriptions/") else resource


def render_table(result: Reconciliation, rows: list[dict[str, Any]], by: Sequence[str]) -> str:
    names = [*by, "billed_quantity", "metered_quantity", "billed_cost", "metered_cost", "difference", "explanation"]
    total = totals(rows)

    def cell(row: dict[str, Any], name: str) -> str:
        value = row.get(name, "")
        if name == "resource":
            return account_name(str(value))
        if isinstance(value, Decimal):
            return str(cents(value))
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    table = [[n.replace("_", " ") for n in names]] + [[cell(r, n) for n in names] for r in rows]
    table.append(["TOTAL"] + [""] * (len(by) - 1) + [cell(total, n) for n in names[len(by):-1]] + [""])
    widths = [max(len(line[i]) for line in table) for i in range(len(names))]
    numeric = {i for i, n in enumerate(names) if n in MEASURES}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [f"Azure OpenAI bill reconciliation — {result.month} — by {', '.join(by)}", "", line(table[0]),
           line(["-" * w for w in widths])]
    out += [line(r) for r in table[1:-1]]
    out += [line(["-" * w for w in widths]), line(table[-1]), ""]
    out += _summary_lines(result, total)
    return "\n".join(out) + "\n"


def render_html(result: Reconciliation, rows: list[dict[str, Any]], by: Sequence[str]) -> str:
    total = totals(rows)
    by_meter = group_rows(result, ("meter",))
    series = [charts.Series("Billed", charts.PALETTE[0]), charts.Series("Metered", charts.PALETTE[1])]
    bars: list[tuple[str, str | None, Sequence[Decimal]]] = []
    for row in sorted(by_meter, key=lambda r: -max(r["billed_cost"], r["metered_cost"])):
        bars.append((row["meter"], "billed", [row["billed_cost"], Decimal(0)]))
        bars.append((row["meter"], "metered", [Decimal(0), row["metered_cost"]]))
    chart = charts.hbar(bars, series, lambda v: f"{cents(v)} {result.currency}", "Billed vs metered cost by meter")
    names = [*by, *MEASURES, "explanation"]
    head = "".join(f"<th>{escape(n.replace('_', ' '))}</th>" for n in names)
    body = []
    for row in rows:
        cells = []
        for n in names:
            value = row[n]
            if isinstance(value, Decimal):
                cells.append(f'<td class="num" data-exact="{_exact(value)}">{cents(value)}</td>')
            elif isinstance(value, int):
                cells.append(f'<td class="num">{value:,}</td>')
            else:
                cells.append(f"<td>{escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    foot = "<tr><th>TOTAL</th>" + "<td></td>" * (len(by) - 1) + "".join(
        f'<td class="num">{cents(total[n]) if isinstance(total[n], Decimal) else f"{total[n]:,}"}</td>'
        for n in MEASURES) + "<td></td></tr>"
    summary = "".join(f"<p>{escape(line)}</p>" for line in _summary_lines(result, total))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Azure OpenAI bill reconciliation {escape(result.month)}</title>
<style>body{{font-family:system-ui,sans-serif;color:#1f2937;margin:2rem}}table{{border-collapse:collapse}}
td,th{{padding:.25rem .6rem;border-bottom:1px solid #e5e7eb;text-align:left}}.num{{text-align:right;font-variant-numeric:tabular-nums}}
.legend .key{{margin-right:1rem}}.legend i{{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem}}</style></head>
<body><h1>Azure OpenAI bill reconciliation — {escape(result.month)}</h1>
{summary}
<h2>Billed vs metered by meter</h2>{chart}{charts.legend(series)}
<h2>By {escape(', '.join(by))}</h2>
<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody><tfoot>{foot}</tfoot></table>
</body></html>
"""


def render_xlsx(result: Reconciliation, rows: list[dict[str, Any]], by: Sequence[str]) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Reconciliation"
    names = columns(by)
    sheet.append(names)
    for row in rows:
        sheet.append([float(row[n]) if isinstance(row[n], Decimal) and n not in PRICES
                      else (per_1m(row[n]) if n in PRICES and row[n] is not None else row[n]) for n in names])
    for column_cells in sheet.iter_cols(min_row=2):
        if names[column_cells[0].column - 1] in ("billed_cost", "metered_cost", "difference", *AMOUNTS):
            for c in column_cells:
                c.number_format = "#,##0.00"
    notes = workbook.create_sheet("Summary")
    for line in _summary_lines(result, totals(rows)):
        notes.append([line])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
