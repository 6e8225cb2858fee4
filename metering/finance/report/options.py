"""What a report is asked for: the period, the grouping dimensions and the output format.

Pure and light (no pandas, no SQL), so the command line can check its options before loading either.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from metering.model import REPORT_DIMENSIONS

DIMENSIONS = REPORT_DIMENSIONS
DEFAULT_DIMENSIONS = ("month", "business_unit", "subscription")
FORMATS = ("table", "csv", "json", "xlsx", "parquet", "html")
BINARY_FORMATS = ("xlsx", "parquet")


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
        try:
            end = start + timedelta(days=days)
        except OverflowError:  # 9999-12 ends after the last date a datetime can hold
            raise ValueError(f"--month {text!r} is out of range (the last month is 9999-11)") from None
        return Period(start, end, f"{year:04d}-{month:02d}")

    @staticmethod
    def between(since: str | None, until: str | None) -> "Period":
        """``--since`` is inclusive; ``--until`` is an inclusive date (a timestamp is exclusive)."""
        start = _parse_bound(since, "--since") if since else None
        end = _parse_bound(until, "--until") if until else None
        if until and end is not None and len(until.strip()) == 10:
            try:
                end += timedelta(days=1)
            except OverflowError:
                raise ValueError(f"--until {until!r} is out of range (the last date is 9999-12-30)") from None
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
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{flag} {text!r} is out of range in UTC") from None
