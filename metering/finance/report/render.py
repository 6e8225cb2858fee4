"""A built ``Report`` → the bytes or text of one format: ``table`` (terminal), ``csv``, ``json``,
``parquet``, ``xlsx`` (``xlsx_report``), ``html`` (``html_report``). pyarrow and openpyxl are
imported only by the formats that need them."""

from __future__ import annotations

import io
import json
import re
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd

from metering.finance.report.options import FORMATS
from metering.safe_text import spreadsheet_text, terminal_line
from metering.finance.reconcile.true_up import headline_text
from metering.finance.report.build import (
    COST_STATUS, MONEY_COLUMNS, TABLE_COLUMNS, TABLE_PTU_COLUMNS, Report, has_ptu, money, object_series,
    requests_sentence, shown_true_up, total_row, unpriced_note,
)

# The table's flag column: why a row's cost is not the whole story (empty when it is).
FLAGS = {"complete": "", "partial": "partly unpriced", "unknown": "cost unknown"}
ROUNDING = "(rounding)"


_C1 = re.compile("[\x7f-\x9f]")


def _cell(value: Any, column: str) -> str:
    if column in MONEY_COLUMNS:
        return "" if value is None else money(value)
    if column == COST_STATUS:
        return FLAGS[value]
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None or (isinstance(value, float) and value != value) else terminal_line(str(value))


def quality_line(report_or_total: Report | dict[str, Any]) -> str:
    """One sentence of data quality, shown under every table."""
    q = report_or_total.quality if isinstance(report_or_total, Report) else report_or_total
    fallback = q.get("fallback_priced_requests", 0)
    if not (q["estimated_requests"] or q["incomplete_requests"] or q["unpriced_requests"] or fallback):
        return (f"data quality: all {q['requests']:,} requests priced from usage the provider reported "
                f"({requests_sentence(q)})")
    fallback_text = (f"{fallback:,} priced with a fallback rate for a token kind or tier the card lacks "
                     f"({q['fallback_priced_tokens']:,} tokens), " if fallback else "")
    return (
        f"data quality: {q['estimated_requests']:,} estimated requests ({q['estimated_tokens']:,} tokens), "
        f"{q['incomplete_requests']:,} billable with partial or no usage ({q['incomplete_tokens']:,} tokens), "
        f"{q['unpriced_requests']:,} unpriced ({q['unpriced_tokens']:,} tokens), {fallback_text}"
        f"requests: {requests_sentence(q)} — see `metering rates list` for models without a rate"
    )


def rounding_row(records: list[dict[str, Any]], total: dict[str, Any], columns: list[str]) -> dict[str, Decimal]:
    """Per money column, what the cents shown on the rows miss of the TOTAL shown (exact sum, rounded):
    the difference a "(rounding)" line shows so that the rows add up to TOTAL on screen. Only the
    columns that need one."""
    out = {}
    for column in columns:
        if column not in MONEY_COLUMNS or total.get(column) is None:
            continue
        shown = sum((Decimal(money(r[column])) for r in records if r[column] is not None), Decimal(0))
        difference = Decimal(money(total[column])) - shown
        if difference:
            out[column] = difference
    return out


KIND_NAMES = (
    ("cache_write_tokens", "cache writes"), ("audio_prompt_tokens", "audio in"), ("cached_audio_tokens", "cached audio"),
    ("audio_completion_tokens", "audio out"), ("image_prompt_tokens", "image in"), ("cached_image_tokens", "cached image"),
    ("image_completion_tokens", "image out"),
)


UNIT_NAMES = (
    ("audio_seconds", "seconds of audio transcribed"), ("input_characters", "speech characters"),
    ("web_search_calls", "web search calls"), ("file_search_calls", "file search calls"),
    ("code_interpreter_sessions", "code interpreter sessions"),
)


def kinds_line(total: dict[str, Any]) -> str:
    """The tokens of the kinds Azure bills apart (each priced at its own rate), and the units billed
    beyond tokens, when there are any."""
    parts = [f"{label} {total.get(name, 0):,}" for name, label in KIND_NAMES if total.get(name, 0)]
    if total.get("priority_requests", 0):
        parts.append(f"{total['priority_requests']:,} requests on the priority tier")
    units = [f"{total.get(name, 0):,} {label}" for name, label in UNIT_NAMES if total.get(name, 0)]
    lines = []
    if parts:
        lines.append("token kinds billed apart (part of the tokens above, each at its own rate): " + ", ".join(parts))
    if units:
        lines.append("units billed beyond tokens (in the cost above, each at its own rate): " + ", ".join(units))
    return "\n".join(lines)


def render_table(frame: pd.DataFrame, dimensions: tuple[str, ...], title: str,
                 report: Report | None = None) -> str:
    """A fixed-width terminal table with a total line and a data-quality footnote. Amounts are rounded
    to the cent; a "(rounding)" line makes the rows add up to TOTAL (the exact sum, rounded)."""
    columns = list(dimensions) + list(TABLE_PTU_COLUMNS if has_ptu(frame) else TABLE_COLUMNS)
    if "true_up" in frame.columns:
        columns.insert(columns.index("total_charge"), "true_up")
    records = frame.to_dict("records")
    if any(r[COST_STATUS] != "complete" for r in records):
        columns.append(COST_STATUS)
    header = [c.replace("_", " ") if c != COST_STATUS else "flag" for c in columns]
    total = total_row(frame, dimensions)
    figures = report.true_up if report is not None else None
    if figures is not None:
        # The stored true-up: every column in cents that add up, across (to the total charge) and down
        # (to the four headline figures), so no "(rounding)" line is needed.
        records, total = shown_true_up(records, total, figures)
        rounding = {}
    else:
        rounding = rounding_row(records, total, columns) if len(records) > 1 else {}
    body = [[_cell(record[c], c) for c in columns] for record in records]
    if rounding:
        label = [ROUNDING if i == 0 else "" for i in range(len(dimensions))]
        body.append(label + [f"{rounding[c]:+}" if c in rounding else "" for c in columns[len(dimensions):]])
    body.append([_cell(total[c], c) for c in columns])
    numeric = {c for c in columns if c not in dimensions and c not in ("currency", COST_STATUS)}
    widths = [max(len(header[i]), *(len(row[i]) for row in body)) for i in range(len(columns))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if columns[i] in numeric else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [title, ""]
    if figures is not None:
        out += [f"true-up: {headline_text(figures, report.currency if report is not None else '')}", ""]
    out += [line(header), rule]
    out.extend(line(row) for row in body[:-1])
    out.extend([rule, line(body[-1]), ""])
    if figures is not None:
        out.append("total charge: each subscription's final charge, whole cents that add up to the bill; pay-as-you-go "
                   "and PTU shown in cents that add up to their totals, true-up the rest of each row")
    else:
        out.append("amounts rounded to the cent; TOTAL is the exact sum, rounded"
                   + (f"; the {ROUNDING} line is the difference, so that the rows add up to it" if rounding else ""))
    note = unpriced_note(total)
    if note:
        out.append(f"unpriced: {note}")
    out.append(quality_line(report if report is not None else total))
    kinds = kinds_line(total)
    if kinds:
        out.append(kinds)
    if report is not None:
        if report.ptu:
            out.append("")
            out.append("PTU allocation (monthly capacity cost split by each subscription's share of the deployment's tokens):")
            for part in report.ptu:
                kind = "" if part["kind"] == "provisioned" else f" ({part['kind']})"
                out.append(f"  {part['month']}  {terminal_line(str(part['deployment'])) + kind:<20} "
                           f"{terminal_line(str(part['subscription'])):<28} "
                           f"{part['tokens']:>12,} tokens  {_percent(part['token_share']):>7}  "
                           f"{money(part['ptu_cost']):>12} {part['currency']}")
        for note in report.notes:
            out.append(f"note: {terminal_line(note)}")
    return "\n".join(out) + "\n"


def _percent(share: Decimal) -> str:
    return f"{(share * 100).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


def to_csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as written to files: money as exact decimal strings."""
    out = frame.copy()
    for column in MONEY_COLUMNS:
        if column in out.columns:
            out[column] = object_series(out, ["" if c is None else format(c, "f") for c in out[column]])
    return out


def render_csv(report: Report) -> str:
    """The report's rows as CSV; text a spreadsheet would run as a formula is quoted (``safe_text``)."""
    frame = to_csv_frame(report.frame)
    for column in frame.columns:
        if column not in MONEY_COLUMNS and frame[column].dtype == object:
            frame[column] = object_series(frame, [spreadsheet_text(v) for v in frame[column]])
    return frame.to_csv(index=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def render_json(report: Report) -> str:
    """An object: the period, the rows, the total, data quality and (when given) the PTU allocation.
    Money is exact decimal text."""
    document = {
        "title": report.title,
        "period": {"label": report.period.label, "since": _jsonable(report.period.since),
                   "until": _jsonable(report.period.until)},
        "generated_at": _jsonable(report.generated_at),
        "currency": report.currency,
        "dimensions": list(report.dimensions),
        "rows": [{k: _jsonable(v) for k, v in record.items()} for record in report.frame.to_dict("records")],
        "total": {k: _jsonable(v) for k, v in report.total.items() if k not in report.dimensions},
        "data_quality": {k: _jsonable(v) for k, v in report.quality.items()}
        | {"models_without_rate": [{k: _jsonable(v) for k, v in row.items()} for row in report.models_without_rate]},
        "notes": report.notes,
    }
    if report.true_up is not None:
        document["true_up"] = {name: _jsonable(value) for name, value in report.true_up.items()}
    if report.ptu is not None:
        document["ptu_allocation"] = [{k: _jsonable(v) for k, v in part.items()} for part in report.ptu]
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    # JSON escapes C0 controls itself; DEL and C1 (a terminal's 8-bit CSI) too, losslessly, as \u00XX.
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def parquet_table(report: Report) -> Any:
    """The report frame as an Arrow table: money ``decimal128(28, 12)``, counts ``int64``."""
    import pyarrow as pa

    frame = report.frame
    fields, arrays = [], []
    for column in frame.columns:
        values = list(frame[column])
        if column in MONEY_COLUMNS:
            kind = pa.decimal128(28, 12)
            values = [None if v is None else v.quantize(Decimal("1e-12")) for v in values]
        elif column == "day":
            kind = pa.date32()
            values = [date.fromisoformat(v) if v and v[:1].isdigit() else None for v in values]
        elif column in report.dimensions or column in ("currency", COST_STATUS):
            kind = pa.string()
            values = [v if isinstance(v, str) else None for v in values]
        else:
            kind = pa.int64()
            values = [int(v) for v in values]
        nullable = column in ("currency", "cost", "total_charge") or column in report.dimensions
        fields.append(pa.field(column, kind, nullable=nullable))
        arrays.append(pa.array(values, type=kind))
    metadata = {
        "title": report.title,
        "period": report.period.label,
        "generated_at": _jsonable(report.generated_at),
        "data_quality": json.dumps({k: _jsonable(v) for k, v in report.quality.items()}),
    }
    if report.true_up is not None:
        metadata["true_up"] = json.dumps({name: _jsonable(value) for name, value in report.true_up.items()})
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata))


def render_parquet(report: Report) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(parquet_table(report), buffer)
    return buffer.getvalue()


def render(report: Report, fmt: str) -> str | bytes:
    """The report in ``fmt`` (one of ``FORMATS``): text, or bytes for XLSX and Parquet."""
    if fmt == "table":
        return render_table(report.frame, report.dimensions, report.title, report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return render_json(report)
    if fmt == "parquet":
        return render_parquet(report)
    if fmt == "xlsx":
        from metering.finance.report.xlsx import render_xlsx

        return render_xlsx(report)
    if fmt == "html":
        from metering.finance.report.html import render_html

        return render_html(report)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
