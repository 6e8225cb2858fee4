"""Chargeback reports: aggregated usage rows → a pandas table, rendered for people or files.

Every report carries its data quality (estimated, incomplete and unpriced requests and tokens)
next to the money, so that nobody reads a total without knowing what it rests on. Money stays
``Decimal`` from the database to the file: summed exactly, written as exact decimal text (CSV,
JSON), ``decimal128(28, 12)`` (Parquet), or numbers formatted with two decimals (XLSX, HTML).

Formats: ``table`` (terminal), ``csv``, ``json``, ``xlsx``, ``parquet``, ``html`` (one
self-contained file, see ``metering.html_report``).
"""

from __future__ import annotations

import calendar
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd
import sqlalchemy as sa

from db import queries
from metering.ptu import PtuCost, allocate_ptu, by_subscription

CENT = Decimal("0.01")
DEFAULT_DIMENSIONS = ("month", "business_unit", "subscription")
FORMATS = ("table", "csv", "json", "xlsx", "parquet", "html")
BINARY_FORMATS = ("xlsx", "parquet")
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
)
PTU_COLUMNS = ("ptu_cost", "total_charge")
MONEY_COLUMNS = ("cost", "ptu_cost", "total_charge")
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
}


# --------------------------------------------------------------------------- period


@dataclass(frozen=True)
class Period:
    """A half-open reporting period ``[since, until)`` in UTC; ``None`` ends are unbounded."""

    since: datetime | None
    until: datetime | None
    label: str

    @staticmethod
    def month(text: str) -> "Period":
        try:
            year, month = (int(part) for part in text.split("-"))
            start = datetime(year, month, 1, tzinfo=timezone.utc)
        except ValueError:
            raise ValueError(f"--month {text!r} is not YYYY-MM") from None
        days = calendar.monthrange(year, month)[1]
        return Period(start, start + timedelta(days=days), f"{year:04d}-{month:02d}")

    @staticmethod
    def between(since: str | None, until: str | None) -> "Period":
        """``--since`` is inclusive; ``--until`` is an inclusive date (a timestamp is exclusive)."""
        start = _parse_bound(since, "--since") if since else None
        end = _parse_bound(until, "--until") if until else None
        if until and end is not None and len(until.strip()) == 10:
            end += timedelta(days=1)
        if start and end and end <= start:
            raise ValueError("--until must be after --since")
        label = f"{since or 'start'} .. {until or 'now'}"
        return Period(start, end, label)

    def covers_month(self, month: str) -> bool | None:
        """True when the whole month lies in the period, False when none of it does, None when part."""
        whole = Period.month(month)
        assert whole.since is not None and whole.until is not None
        starts_in = self.since is None or self.since <= whole.since
        ends_in = self.until is None or whole.until <= self.until
        if starts_in and ends_in:
            return True
        disjoint = (self.until is not None and self.until <= whole.since) or (
            self.since is not None and whole.until <= self.since
        )
        return False if disjoint else None


def _parse_bound(text: str, flag: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a date (YYYY-MM-DD)") from None
    if isinstance(moment, date) and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


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
    frame["cost"] = _objects(frame, [c if isinstance(c, Decimal) else Decimal(0) for c in frame["cost"]])
    frame["currency"] = _objects(frame, [c if isinstance(c, str) else None for c in frame["currency"]])
    for dimension in dimensions:
        frame[dimension] = _objects(frame, ["" if v is None else str(v) for v in frame[dimension]])
    return frame


def _objects(frame: pd.DataFrame, values: list[Any]) -> pd.Series:
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
    frame["ptu_cost"] = _objects(frame, [amounts.get(key, Decimal(0)) for key in keys])
    frame["total_charge"] = _objects(frame, [c + p for c, p in zip(frame["cost"], frame["ptu_cost"])])
    return frame


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
        if column in dimensions:
            continue
        if column in MONEY_COLUMNS:
            total[column] = sum(frame[column], Decimal(0))
        elif column == "currency":
            currencies = sorted({c for c in frame["currency"] if isinstance(c, str)})
            total[column] = "/".join(currencies)
        else:
            total[column] = int(frame[column].sum())
    for column in MEASURE_COLUMNS:
        total.setdefault(column, Decimal(0) if column == "cost" else "" if column == "currency" else 0)
    return total


def money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


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
    usage = queries.provisioned_tokens(conn, period.since, period.until, dimensions)
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
    ptu: list[dict[str, Any]] | None = None  # allocation per PTU cost × subscription
    notes: list[str] = field(default_factory=list)
    # Fixed breakdowns: "subscription" (business unit × subscription) always; "day", "model" for HTML.
    charts: dict[str, pd.DataFrame] = field(default_factory=dict)

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
        "provisioned_requests", "provisioned_tokens")}
    quality["unmapped_subscriptions"] = sorted(s for s in unmapped["subscription"])
    quality["unmapped_cost"] = sum(unmapped["cost"], Decimal(0))
    quality["unmapped_requests"] = int(unmapped["requests"].sum())
    if quality["unmapped_subscriptions"]:
        count = len(quality["unmapped_subscriptions"])
        one = count == 1
        notes.append(f"{count} subscription{'' if one else 's'} without a business unit "
                     f"({', '.join(quality['unmapped_subscriptions'])}) {'is' if one else 'are'} reported as "
                     f"{queries.UNMAPPED}; map {'it' if one else 'them'} with `metering subscriptions import`.")
    report = Report(
        title=f"Azure OpenAI chargeback — {period.label}" + (f" — by {', '.join(dimensions)}" if dimensions else ""),
        period=period,
        dimensions=dimensions,
        frame=frame,
        generated_at=(now or datetime.now(timezone.utc)).replace(microsecond=0),
        currency=currency,
        quality=quality,
        models_without_rate=queries.data_models_without_rate(conn, period.since, period.until),
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
) -> list[dict[str, Any]]:
    """The FOCUS rows of a month: token usage, plus allocated PTU capacity when costs are given."""
    from metering import focus

    currencies = queries.period_currencies(conn, period.since, period.until)
    ctx = focus.FocusContext(billing_account_id, billing_account_name, period.label,
                             currency=(currencies or ["USD"])[0])
    records = focus.usage_records(queries.focus_usage(conn, period.since, period.until), ctx)
    if ptu_costs:
        included, _ = ptu_costs_in(period, ptu_costs)
        dims = ("subscription",)
        allocations = allocate_ptu(included, queries.provisioned_tokens(conn, period.since, period.until, dims), dims)
        info = {row["subscription"]: row for row in queries.subscription_info(conn)}
        records += focus.ptu_records(by_subscription(allocations), ctx, info)
    return records


# --------------------------------------------------------------------------- renderers


def _cell(value: Any, column: str) -> str:
    if column in MONEY_COLUMNS:
        return money(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def quality_line(report_or_total: Report | dict[str, Any]) -> str:
    """One sentence of data quality, shown under every table."""
    q = report_or_total.quality if isinstance(report_or_total, Report) else report_or_total
    if not (q["estimated_requests"] or q["incomplete_requests"] or q["unpriced_requests"]):
        return (f"data quality: all {q['requests']:,} requests priced from usage the provider reported "
                f"({q['not_billable_requests']:,} not billable)")
    return (
        f"data quality: {q['estimated_requests']:,} estimated requests ({q['estimated_tokens']:,} tokens), "
        f"{q['incomplete_requests']:,} billable with partial or no usage ({q['incomplete_tokens']:,} tokens), "
        f"{q['unpriced_requests']:,} unpriced ({q['unpriced_tokens']:,} tokens), "
        f"{q['not_billable_requests']:,} not billable — see `metering rates list` for models without a rate"
    )


def render_table(frame: pd.DataFrame, dimensions: tuple[str, ...], title: str,
                 report: Report | None = None) -> str:
    """A fixed-width terminal table with a total line and a data-quality footnote."""
    columns = list(dimensions) + list(TABLE_PTU_COLUMNS if has_ptu(frame) else TABLE_COLUMNS)
    header = [c.replace("_", " ") for c in columns]
    total = total_row(frame, dimensions)
    body = [[_cell(record[c], c) for c in columns] for record in frame.to_dict("records") + [total]]
    numeric = {c for c in columns if c not in dimensions and c != "currency"}
    widths = [max(len(header[i]), *(len(row[i]) for row in body)) for i in range(len(columns))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if columns[i] in numeric else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [title, "", line(header), rule]
    out.extend(line(row) for row in body[:-1])
    out.extend([rule, line(body[-1]), ""])
    out.append(quality_line(report if report is not None else total))
    if report is not None:
        if report.ptu:
            out.append("")
            out.append("PTU allocation (monthly capacity cost split by each subscription's share of the deployment's tokens):")
            for part in report.ptu:
                out.append(f"  {part['month']}  {part['deployment']:<20} {part['subscription']:<28} "
                           f"{part['tokens']:>12,} tokens  {_percent(part['token_share']):>7}  "
                           f"{money(part['ptu_cost']):>12} {part['currency']}")
        for note in report.notes:
            out.append(f"note: {note}")
    return "\n".join(out) + "\n"


def _percent(share: Decimal) -> str:
    return f"{(share * 100).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


def to_csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as written to files: money as exact decimal strings."""
    out = frame.copy()
    for column in MONEY_COLUMNS:
        if column in out.columns:
            out[column] = _objects(out, [format(c, "f") for c in out[column]])
    return out


def render_csv(report: Report) -> str:
    return to_csv_frame(report.frame).to_csv(index=False)


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
    if report.ptu is not None:
        document["ptu_allocation"] = [{k: _jsonable(v) for k, v in part.items()} for part in report.ptu]
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def parquet_table(report: Report) -> Any:
    """The report frame as an Arrow table: money ``decimal128(28, 12)``, counts ``int64``."""
    import pyarrow as pa

    frame = report.frame
    fields, arrays = [], []
    for column in frame.columns:
        values = list(frame[column])
        if column in MONEY_COLUMNS:
            kind = pa.decimal128(28, 12)
            values = [v.quantize(Decimal("1e-12")) for v in values]
        elif column == "day":
            kind = pa.date32()
            values = [date.fromisoformat(v) if v and v[:1].isdigit() else None for v in values]
        elif column in report.dimensions or column == "currency":
            kind = pa.string()
            values = [v if isinstance(v, str) else None for v in values]
        else:
            kind = pa.int64()
            values = [int(v) for v in values]
        fields.append(pa.field(column, kind, nullable=column == "currency" or column in report.dimensions))
        arrays.append(pa.array(values, type=kind))
    metadata = {
        "title": report.title,
        "period": report.period.label,
        "generated_at": _jsonable(report.generated_at),
        "data_quality": json.dumps({k: _jsonable(v) for k, v in report.quality.items()}),
    }
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
        from metering.xlsx_report import render_xlsx

        return render_xlsx(report)
    if fmt == "html":
        from metering.html_report import render_html

        return render_html(report)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
