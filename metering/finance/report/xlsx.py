"""The XLSX chargeback report (openpyxl): a Summary sheet (totals, cost by business unit), the
Chargeback sheet (the report's rows and a total), a Data quality sheet and, with PTU costs, a PTU
allocation sheet.

Money is written as numbers (not text) with at least two decimals shown; the cell holds the exact
amount as far as Excel's 15 significant digits go. Exact decimal text is in CSV, JSON and Parquet.
Text is always a string cell: a name that looks like a formula gets Excel's quote prefix (safe_text).
"""

from __future__ import annotations

import io
from collections import defaultdict
from decimal import Decimal
from typing import Any

from metering.finance.report.build import (
    LABELS, MONEY_COLUMNS, Report, charge, cost_status, has_ptu, known, requests_sentence, total_row, unpriced_note,
)
from metering.safe_text import neutralise_sheet_cells, sheet_value

MONEY_FORMAT = "#,##0.00##"
COUNT_FORMAT = "#,##0"
SHARE_FORMAT = "0.0%"


def render_xlsx(report: Report) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
    from openpyxl.utils import get_column_letter

    bold = Font(bold=True)
    title_font = Font(bold=True, size=14)
    muted = Font(color="6B7280")
    header_fill = PatternFill("solid", fgColor="EEF0F4")
    header_font = Font(bold=True, color="374151")
    top_rule = Border(top=Side(style="thin", color="1F2937"))
    warn_font = Font(bold=True, color="B45309")
    bad_font = Font(bold=True, color="B91C1C")

    def number_format(column: str) -> str | None:
        if column in MONEY_COLUMNS or column in ("monthly_cost", "unmapped_cost"):
            return MONEY_FORMAT
        if column in ("token_share",):
            return SHARE_FORMAT
        return None

    def write_table(sheet: Any, first_row: int, columns: list[str], records: list[dict[str, Any]],
                    total: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> int:
        names = labels or LABELS
        for index, column in enumerate(columns, start=1):
            cell = sheet.cell(row=first_row, column=index, value=names.get(column, column))
            cell.font, cell.fill = header_font, header_fill
            cell.alignment = Alignment(horizontal="left" if isinstance(records[0].get(column) if records else "", str)
                                       else "right")
        row = first_row
        for record in records + ([total] if total else []):
            row += 1
            for index, column in enumerate(columns, start=1):
                value = record.get(column)
                if isinstance(value, Decimal) and column not in MONEY_COLUMNS and column != "monthly_cost" \
                        and column != "token_share":
                    value = int(value)
                if hasattr(value, "item"):
                    value = value.item()
                cell = sheet.cell(row=row, column=index, value=sheet_value(value))
                fmt = number_format(column)
                if fmt:
                    cell.number_format = fmt
                elif isinstance(value, int) and not isinstance(value, bool):
                    cell.number_format = COUNT_FORMAT
                if total is not None and record is total:
                    cell.font = bold
                    cell.border = top_rule
        return row

    def autosize(sheet: Any, minimum: int = 8, maximum: int = 48) -> None:
        widths: dict[int, int] = defaultdict(int)
        for row in sheet.iter_rows():
            for cell in row:
                if cell.value is None:
                    continue
                text = f"{cell.value:,.2f}" if isinstance(cell.value, (float, Decimal)) else \
                    f"{cell.value:,}" if isinstance(cell.value, int) else str(cell.value)
                widths[cell.column] = max(widths[cell.column], len(text) + 2)
        for column, width in widths.items():
            sheet.column_dimensions[get_column_letter(column)].width = max(minimum, min(maximum, width))

    book = Workbook()
    total = report.total
    ptu = has_ptu(report.frame)
    q = report.quality

    # ---- Summary
    summary = book.active
    summary.title = "Summary"
    summary["A1"] = report.title
    summary["A1"].font = title_font
    summary["A2"] = f"Period: {report.period.label} (UTC)"
    summary["A3"] = f"Generated: {report.generated_at.strftime('%Y-%m-%d %H:%M UTC')}"
    summary["A2"].font = summary["A3"].font = muted
    rows: list[tuple[str, Any, str | None]] = [
        ("Requests", total["requests"], COUNT_FORMAT),
        ("Tokens", total["total_tokens"], COUNT_FORMAT),
        ("Pay-as-you-go cost", total["cost"], MONEY_FORMAT),
    ]
    figures = report.true_up
    if figures is not None:  # the stored true-up: the same four figures as every other format
        rows = rows[:2] + [("Azure bill", figures["bill"], MONEY_FORMAT),
                           ("Pay-as-you-go cost", figures["metered"], MONEY_FORMAT),
                           ("PTU cost", figures["ptu"], MONEY_FORMAT),
                           ("True-up adjustment", figures["adjustment"], MONEY_FORMAT),
                           ("Total charge", figures["bill"], MONEY_FORMAT)]
    elif ptu:
        rows += [("PTU cost (allocated)", total["ptu_cost"], MONEY_FORMAT),
                 ("Total charge", total["total_charge"], MONEY_FORMAT)]
    rows += [("Currency", report.currency, None)]
    summary["A5"] = "Totals"
    summary["A5"].font = bold
    line = 5
    for label, value, fmt in rows:
        line += 1
        summary.cell(row=line, column=1, value=label)
        cell = summary.cell(row=line, column=2, value=value)
        if fmt:
            cell.number_format = fmt
        if label in ("Pay-as-you-go cost", "Total charge", "Azure bill"):
            summary.cell(row=line, column=1).font = cell.font = bold
        if label == "Requests":
            summary.cell(row=line, column=3, value=requests_sentence(total)).font = muted
        if label == "Pay-as-you-go cost" and unpriced_note(total):
            # The cost leaves the unpriced requests out (empty when none is priced): say so beside it.
            summary.cell(row=line, column=3, value=unpriced_note(total)).font = bad_font
    line += 2
    summary.cell(row=line, column=1, value="Data quality").font = bold
    for label, requests, tokens, font in (
        ("Estimated (tokens counted offline)", q["estimated_requests"], q["estimated_tokens"], warn_font),
        ("Incomplete (billable, partial or no usage)", q["incomplete_requests"], q["incomplete_tokens"], warn_font),
        ("Unpriced (no rate or no usage: cost unknown)", q["unpriced_requests"], q["unpriced_tokens"], bad_font),
    ):
        line += 1
        summary.cell(row=line, column=1, value=label)
        cell = summary.cell(row=line, column=2, value=requests)
        cell.number_format = COUNT_FORMAT
        if requests:
            cell.font = font
        summary.cell(row=line, column=3, value=f"{tokens:,} tokens").font = muted
    line += 1
    summary.cell(row=line, column=1, value="See the Data quality sheet.").font = muted

    by_unit: dict[str, dict[str, Any]] = {}
    for record in report.charts.get("subscription", report.frame.iloc[0:0]).to_dict("records"):
        unit = by_unit.setdefault(record["business_unit"], {"business_unit": record["business_unit"], "requests": 0,
                                                            "total_tokens": 0, "cost": Decimal(0),
                                                            "ptu_cost": Decimal(0), "true_up": Decimal(0),
                                                            "total_charge": Decimal(0), "unpriced_requests": 0,
                                                            "not_billable_requests": 0, "provisioned_requests": 0})
        for column in ("requests", "total_tokens", "unpriced_requests", "not_billable_requests", "provisioned_requests"):
            unit[column] += int(record[column])
        for column in ("cost", "ptu_cost", "true_up"):
            if column in record:
                unit[column] += known(record[column])
        unit["total_charge"] += known(record["total_charge"]) if "total_charge" in record else known(record["cost"])
    for unit in by_unit.values():
        if cost_status(unit) == "unknown" and report.true_up is None:  # nothing priced: cost unknown, not $0
            unit["cost"] = None
            unit["total_charge"] = charge(None, unit["ptu_cost"])
    if by_unit:
        line += 2
        summary.cell(row=line, column=1, value="By business unit").font = bold
        trued_up = "true_up" in report.frame.columns
        columns = ["business_unit", "requests", "total_tokens", "cost"] + (["ptu_cost"] if ptu else []) \
            + (["true_up"] if trued_up else []) + (["total_charge"] if ptu else []) + ["unpriced_requests"]
        units = sorted(by_unit.values(), key=lambda u: -known(u["total_charge" if ptu else "cost"]))
        unit_total = {"business_unit": "Total"} | {c: total[c] for c in columns[1:]}
        write_table(summary, line + 1, columns, units, unit_total)
    autosize(summary)
    summary.column_dimensions["A"].width = 46

    # ---- Chargeback (the report's rows)
    data = book.create_sheet("Chargeback")
    columns = list(report.frame.columns)
    records = report.frame.to_dict("records")
    last = write_table(data, 1, columns, records, total_row(report.frame, report.dimensions))
    data.freeze_panes = "A2"
    if records:
        data.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{last - 1}"
    autosize(data)

    # ---- Data quality
    quality = book.create_sheet("Data quality")
    quality["A1"] = "Data quality"
    quality["A1"].font = title_font
    measures = [
        {"measure": "All requests", "requests": q["requests"], "tokens": q["total_tokens"],
         "meaning": "Every stored request in the period"},
        {"measure": "Estimated", "requests": q["estimated_requests"], "tokens": q["estimated_tokens"],
         "meaning": "No usage in the response: tokens counted offline with tiktoken"},
        {"measure": "Incomplete", "requests": q["incomplete_requests"], "tokens": q["incomplete_tokens"],
         "meaning": "Billable requests with partial or no token counts"},
        {"measure": "Unpriced", "requests": q["unpriced_requests"], "tokens": q["unpriced_tokens"],
         "meaning": "No rate for the model (no_rate) or tokens unknown (no_usage): cost unknown, excluded, not zero"},
        {"measure": "Fallback-priced", "requests": q["fallback_priced_requests"], "tokens": q["fallback_priced_tokens"],
         "meaning": "A token kind or service tier without its own price in the card, priced at the text or default-tier rate"},
        {"measure": "Not billable", "requests": q["not_billable_requests"], "tokens": None,
         "meaning": "Throttled (429), failed, and PTU requests: no per-token cost"},
        {"measure": "Provisioned (PTU)", "requests": q["provisioned_requests"], "tokens": q["provisioned_tokens"],
         "meaning": "Requests on provisioned deployments; their capacity cost is allocated by tokens"},
        {"measure": "Unmapped subscriptions", "requests": q["unmapped_requests"], "tokens": None,
         "meaning": f"{len(q['unmapped_subscriptions'])} subscription(s) without a business unit, reported as (unmapped)"},
    ]
    for m in measures:
        m["share"] = (m["requests"] / q["requests"]) if q["requests"] else 0.0
    labels = {"measure": "Measure", "requests": "Requests", "tokens": "Tokens", "share": "Share of requests",
              "meaning": "Meaning"}
    line = write_table(quality, 3, ["measure", "requests", "tokens", "share", "meaning"], measures, labels=labels)
    for row in quality.iter_rows(min_row=4, max_row=line, min_col=4, max_col=4):
        for cell in row:
            cell.number_format = SHARE_FORMAT
    if report.models_without_rate:
        line += 2
        quality.cell(row=line, column=1, value="Models without a rate").font = bold
        line = write_table(quality, line + 1, ["model", "deployment_type", "requests", "tokens"],
                           report.models_without_rate,
                           labels={"model": "Model", "deployment_type": "Deployment type", "requests": "Requests",
                                   "tokens": "Tokens"})
    if q["unmapped_subscriptions"]:
        line += 2
        quality.cell(row=line, column=1, value="Subscriptions without a business unit").font = bold
        for subscription in q["unmapped_subscriptions"]:
            line += 1
            quality.cell(row=line, column=1, value=sheet_value(subscription))
    if report.notes:
        line += 2
        quality.cell(row=line, column=1, value="Notes").font = bold
        for note in report.notes:
            line += 1
            quality.cell(row=line, column=1, value=sheet_value(note))
    autosize(quality, maximum=90)

    # ---- PTU allocation
    if report.ptu is not None:
        sheet = book.create_sheet("PTU allocation")
        columns = ["month", "deployment", "kind", "backend_id", "subscription", "requests", "tokens", "token_share",
                   "ptu_cost", "currency", "monthly_cost"]
        labels = {"month": "Month", "deployment": "Deployment", "kind": "Kind", "backend_id": "Backend",
                  "subscription": "Subscription",
                  "requests": "Requests", "tokens": "Tokens", "token_share": "Token share", "ptu_cost": "Allocated",
                  "currency": "Currency", "monthly_cost": "Monthly cost"}
        parts = [dict(p) | {"token_share": float(p["token_share"])} for p in report.ptu]
        allocated = {"month": "Total", "ptu_cost": sum((p["ptu_cost"] for p in report.ptu), Decimal(0))}
        write_table(sheet, 1, columns, parts, allocated if parts else None, labels=labels)
        sheet.freeze_panes = "A2"
        autosize(sheet)

    neutralise_sheet_cells(book)  # names from events never become live formulas
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()
