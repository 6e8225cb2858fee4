"""A reconciliation written out: terminal table, CSV, JSON, XLSX, or one self-contained HTML page
with a chart of billed vs metered cost per resource and meter. openpyxl is imported only for XLSX.

Two readings of the same figures, each consistent in itself:

* CSV and JSON (for programs) carry the exact amounts (up to 12 decimals), and ``difference`` is
  exactly ``billed_cost − metered_cost``.
* The table, HTML and XLSX (for people) show cents, and their ``difference`` is the shown billed
  cents minus the shown metered cents, so the columns subtract as read (billed 0.05 − metered 0.03
  is 0.02, never 0.01); the named parts of the difference are each rounded to the cent.

A metered cost that is unknown (only tokens without a card rate) is empty (``null`` in JSON), never
0; so is its difference, which the ``unpriced`` part explains. Text from the export and the events
(resource ids, meter and backend names) is shown through ``metering.safe_text``: quoted where a
spreadsheet would run it as a formula (CSV, XLSX), escaped on a terminal (table), HTML-escaped.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from html import escape
from typing import Any

from metering.finance import charts
from metering.finance.reconcile.compare import (
    AMOUNTS, UNMAPPED_BACKEND, MeterKey, Reconciliation, apportion_cents, card_drift, cents, data_quality,
    explain_text, group_rows, negative_bill_cells, per_1m, totals,
)
from metering.safe_text import neutralise_sheet_cells, sheet_value, spreadsheet_text, terminal_line

FORMATS = ("table", "csv", "json", "html", "xlsx")
MEASURES = ("billed_quantity", "metered_quantity", "billed_cost", "metered_cost", "difference")
MONEY = ("billed_cost", "metered_cost", "difference", *AMOUNTS)
PRICES = ("billed_unit_price", "card_unit_price")
TEXT = ("day", "resource", "meter", "explanation")
CHART_ROWS = 24  # the chart shows the largest meters; the table has them all


def columns(by: Sequence[str]) -> list[str]:
    return [*by, *MEASURES, "explanation", *AMOUNTS, *PRICES]


def _exact(value: Decimal) -> str:
    """Exact decimal text without float noise or an exponent, at most 12 decimals (never ``-0``)."""
    return format((value.quantize(Decimal("0.000000000001")) + 0).normalize(), "f")


def shown(row: dict[str, Any], currency: str = "") -> dict[str, Any]:
    """A row as people read it: money in cents, the difference the shown billed minus the shown
    metered cents (``None`` where the metered cost is unknown), and its named parts in cents that
    add up to that difference (largest remainder), with the explanation written from them."""
    view = dict(row)
    for name in MONEY:
        if isinstance(row.get(name), Decimal):
            view[name] = cents(row[name])
    if row.get("metered_cost") is not None:
        view["difference"] = view["billed_cost"] - view["metered_cost"]
        parts = apportion_cents(view["difference"], {name: row[name] for name in AMOUNTS})
        view.update({name: parts.get(name, Decimal("0.00")) for name in AMOUNTS})
    if "explanation" in row:
        # A part too small to show in cents is still named (as <0.01), from its exact amount.
        words = {name: view[name] if view[name] else row[name] for name in AMOUNTS}
        view["explanation"] = explain_text(words, row.get("billed_unit_price"), row.get("card_unit_price"), currency)
    return view


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
    def cell(value: Any, column: str) -> Any:
        if value is None:
            return ""
        if column in PRICES:
            return per_1m(value)
        if isinstance(value, Decimal):
            return _exact(value)
        return spreadsheet_text(value) if column in TEXT else value

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = columns(by)
    writer.writerow(names)
    for row in rows:
        writer.writerow([cell(row[n], n) for n in names])
    return buffer.getvalue()


def render_json(result: Reconciliation, rows: list[dict[str, Any]], by: Sequence[str]) -> str:
    def plain(value: Any, column: str = "") -> Any:
        if isinstance(value, Decimal):
            return per_1m(value) if column in PRICES else _exact(value)
        return value

    negative = negative_bill_cells(result)
    document = {
        "month": result.month,
        "currency": result.currency,
        "by": list(by),
        "rows": [{n: plain(row[n], n) for n in columns(by)} for row in rows],
        "total": {k: plain(v) for k, v in totals(rows).items()},
        "data_quality": {"unmapped_backends": result.unmapped_backends,
                         "resources_without_bill": result.resources_without_bill,
                         "unknown_meters": sorted({c.meter.meter_name or "" for c in result.cells if c.meter.kind is None}),
                         "unpriced_tokens": sum(c.unpriced_quantity for c in result.cells),
                         "negative_bill_lines": [{"day": c.day, "resource": c.resource, "meter": c.meter.label,
                                                  "billed_cost": _exact(c.billed_cost)} for c in negative]},
        "card_drift": [{k: plain(v) for k, v in item.items()} for item in card_drift(result)],
        "notes": result.notes,
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _summary_lines(result: Reconciliation, total: dict[str, Any]) -> list[str]:
    view = shown(total)
    lines = [f"billed {view['billed_cost']} {result.currency}, metered {view['metered_cost']} "
             f"{result.currency}, difference {view['difference']:+} {result.currency}"]
    explained = [f"{name} {view[name]:+}" for name in AMOUNTS if view[name]]
    if explained:
        lines.append("explained by: " + ", ".join(explained))
    lines.append(data_quality(result))
    for item in card_drift(result):
        tier = f", {item['service_tier']} tier" if item["service_tier"] else ""
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
        if value is None:
            return "unpriced" if name == "metered_cost" else ""
        if name == "resource":
            return terminal_line(account_name(str(value)))
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, int):
            return f"{value:,}"
        return terminal_line(str(value))

    table = [[n.replace("_", " ") for n in names]] + [[cell(shown(r, result.currency), n) for n in names] for r in rows]
    table.append(["TOTAL"] + [""] * (len(by) - 1) + [cell(shown(total), n) for n in names[len(by):-1]] + [""])
    widths = [max(len(line[i]) for line in table) for i in range(len(names))]
    numeric = {i for i, n in enumerate(names) if n in MEASURES}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [f"Azure OpenAI bill reconciliation — {result.month} — by {', '.join(by)}", "", line(table[0]),
           line(["-" * w for w in widths])]
    out += [line(r) for r in table[1:-1]]
    out += [line(["-" * w for w in widths]), line(table[-1]), ""]
    out += [terminal_line(text) for text in _summary_lines(result, total)]
    return "\n".join(out) + "\n"


def _chart_rows(result: Reconciliation) -> list[tuple[str, str, list[Decimal | None]]]:
    """Per resource × meter, billed and metered cost (``None``: only unpriced tokens), largest first."""
    sums: dict[tuple[str, MeterKey], list[Any]] = defaultdict(lambda: [Decimal(0), Decimal(0), 0, 0])
    for item in result.cells:
        entry = sums[(item.resource, item.meter)]
        entry[0] += item.billed_cost
        entry[1] += item.metered_cost
        entry[2] += item.priced_quantity
        entry[3] += item.unpriced_quantity
    rows = []
    for (resource, meter), (billed, metered, priced, unpriced) in sums.items():
        known: Decimal | None = None if unpriced and not priced and not metered else metered
        where = UNMAPPED_BACKEND if resource == UNMAPPED_BACKEND else account_name(resource)
        rows.append((meter.name, f"{meter.detail} — {where}", [billed, known]))
    rows.sort(key=lambda r: (-max(abs(r[2][0]), abs(r[2][1] or 0)), r[0], r[1]))
    return rows


CSS = """body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;margin:2rem auto;max-width:1180px;padding:0 1.5rem}
table{border-collapse:collapse;width:100%}
td,th{padding:.25rem .5rem;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}
th{font-size:12px;color:#4b5563}
td.text{overflow-wrap:anywhere}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.muted{color:#6b7280}
.chart{display:block;width:100%;max-width:960px;height:auto}
.legend .key{margin-right:1rem}.legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem}
@page{size:landscape;margin:10mm}
@media print{body{margin:0;max-width:none;padding:0;font-size:10px}th{font-size:9px}.chart{max-width:100%}
tr,.chart{break-inside:avoid}}"""


def render_html(result: Reconciliation, rows: list[dict[str, Any]], by: Sequence[str]) -> str:
    total = totals(rows)
    chart_rows = _chart_rows(result)
    series = [charts.Series("Billed", charts.PALETTE[0]), charts.Series("Metered", charts.PALETTE[1])]

    def money(value: Decimal | None) -> str:
        return "unpriced" if value is None else f"{cents(value)} {result.currency}"

    chart = charts.pairs(chart_rows[:CHART_ROWS], series, money, "Billed vs metered cost by resource and meter")
    more = (f'<p class="muted">and {len(chart_rows) - CHART_ROWS} smaller meter(s): see the table</p>'
            if len(chart_rows) > CHART_ROWS else "")
    names = [*by, *MEASURES, "explanation"]
    head = "".join(f'<th class="{"num" if n in MEASURES else ""}">{escape(n.replace("_", " "))}</th>' for n in names)
    body = []
    for row in rows:
        view = shown(row, result.currency)
        cells = []
        for n in names:
            value = view[n]
            if value is None:
                cells.append('<td class="num muted" title="no card rate: cost unknown">unpriced</td>' if n == "metered_cost"
                             else '<td class="num"></td>')
            elif isinstance(value, Decimal):
                cells.append(f'<td class="num" data-exact="{_exact(row[n])}">{value}</td>')
            elif isinstance(value, int):
                cells.append(f'<td class="num">{value:,}</td>')
            elif n == "resource":
                cells.append(f'<td class="text" title="{escape(str(value))}">{escape(account_name(str(value)))}</td>')
            else:
                cells.append(f'<td class="text">{escape(str(value))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    view = shown(total)
    foot = "<tr><th>TOTAL</th>" + "<td></td>" * (len(by) - 1) + "".join(
        f'<td class="num">{view[n] if isinstance(view[n], Decimal) else f"{view[n]:,}"}</td>'
        for n in MEASURES) + "<td></td></tr>"
    summary = "".join(f"<p>{escape(line)}</p>" for line in _summary_lines(result, total))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Azure OpenAI bill reconciliation {escape(result.month)}</title>
<style>{CSS}</style></head>
<body><h1>Azure OpenAI bill reconciliation — {escape(result.month)}</h1>
{summary}
<h2>Billed vs metered by resource and meter</h2>{chart}{charts.legend(series)}{more}
<h2>By {escape(', '.join(by))}</h2>
<p class="muted">Amounts in {escape(result.currency)}, in cents; each difference is the billed minus the metered cents shown.</p>
<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody><tfoot>{foot}</tfoot></table>
</body></html>
"""


def render_xlsx(result: Reconciliation, rows: list[dict[str, Any]], by: Sequence[str]) -> bytes:
    from openpyxl import Workbook

    currency = result.currency if result.currency.isalpha() else "USD"  # a three-letter code (bill import checks it)
    money_format = f'#,##0.00 "{currency}";-#,##0.00 "{currency}"'
    price_format = f'#,##0.00#### "{currency}/1M"'
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Reconciliation"
    names = columns(by)
    sheet.append(names)
    for row in rows:
        view = shown(row, result.currency)
        values = []
        for n in names:
            value = view[n]
            if n in PRICES and value is not None:
                value = Decimal(per_1m(value))
            values.append(sheet_value(value))
        sheet.append(values)
    for column_cells in sheet.iter_cols(min_row=2):
        name = names[column_cells[0].column - 1]
        form = money_format if name in MONEY else price_format if name in PRICES else \
            "#,##0" if name in ("billed_quantity", "metered_quantity") else None
        if form:
            for c in column_cells:
                c.number_format = form
    notes = workbook.create_sheet("Summary")
    for line in _summary_lines(result, totals(rows)):
        notes.append([sheet_value(line)])
    neutralise_sheet_cells(workbook)  # names from the export never become live formulas
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
