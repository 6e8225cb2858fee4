"""Chargeback reports: aggregated usage rows → a pandas table, rendered for people or files.

Every report carries its data quality (estimated, incomplete and unpriced requests) next to the
money, so that nobody reads a total without knowing what it rests on.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd

CENT = Decimal("0.01")
DEFAULT_DIMENSIONS = ("month", "business_unit", "subscription")
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
    "unpriced_requests",
    "unpriced_tokens",
    "not_billable_requests",
)
TABLE_COLUMNS = ("requests", "total_tokens", "cost", "currency", "estimated_requests", "unpriced_requests")


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


def _parse_bound(text: str, flag: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a date (YYYY-MM-DD)") from None
    if isinstance(moment, date) and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def to_frame(rows: list[dict[str, Any]], dimensions: tuple[str, ...]) -> pd.DataFrame:
    """Aggregated rows as a DataFrame: dimensions first, then measures; cost stays ``Decimal``."""
    columns = list(dimensions) + list(MEASURE_COLUMNS)
    frame = pd.DataFrame(rows, columns=columns)
    for column in MEASURE_COLUMNS:
        if column not in ("cost", "currency"):
            frame[column] = frame[column].fillna(0).astype("int64")
    frame["cost"] = frame["cost"].map(lambda c: c if isinstance(c, Decimal) else Decimal(0))
    return frame


def total_row(frame: pd.DataFrame, dimensions: tuple[str, ...]) -> dict[str, Any]:
    """The grand total of a report frame (cost summed exactly)."""
    total: dict[str, Any] = {d: "" for d in dimensions}
    if dimensions:
        total[dimensions[0]] = "TOTAL"
    for column in MEASURE_COLUMNS:
        if column == "cost":
            total[column] = sum(frame["cost"], Decimal(0))
        elif column == "currency":
            currencies = sorted({c for c in frame["currency"] if isinstance(c, str)})
            total[column] = "/".join(currencies)
        else:
            total[column] = int(frame[column].sum())
    return total


def money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def render_table(frame: pd.DataFrame, dimensions: tuple[str, ...], title: str) -> str:
    """A fixed-width terminal table with a total line and a data-quality footnote."""
    columns = list(dimensions) + list(TABLE_COLUMNS)
    header = [c.replace("_", " ") for c in columns]
    body: list[list[str]] = []
    for record in frame.to_dict("records") + [total_row(frame, dimensions)]:
        cells = []
        for column in columns:
            value = record[column]
            if column == "cost":
                cells.append(money(value))
            elif isinstance(value, (int,)) and not isinstance(value, bool):
                cells.append(f"{value:,}")
            else:
                cells.append("" if value is None or (isinstance(value, float) and value != value) else str(value))
        body.append(cells)
    numeric = {c for c in columns if c not in dimensions and c != "currency"}
    widths = [max(len(header[i]), *(len(row[i]) for row in body)) for i in range(len(columns))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if columns[i] in numeric else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [title, "", line(header), rule]
    out.extend(line(row) for row in body[:-1])
    out.extend([rule, line(body[-1])])
    total = total_row(frame, dimensions)
    if total["unpriced_requests"] or total["estimated_requests"] or total["incomplete_requests"]:
        out.append("")
        out.append(
            f"data quality: {total['estimated_requests']:,} estimated requests ({total['estimated_tokens']:,} tokens), "
            f"{total['incomplete_requests']:,} with partial or no usage, "
            f"{total['unpriced_requests']:,} unpriced ({total['unpriced_tokens']:,} tokens) — "
            "see `metering rates list` for models without a rate"
        )
    return "\n".join(out) + "\n"


def to_csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as written to files: cost as an exact decimal string."""
    out = frame.copy()
    out["cost"] = out["cost"].map(lambda c: format(c, "f"))
    return out
