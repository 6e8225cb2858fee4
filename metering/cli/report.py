"""``metering report``: the chargeback for a period, grouped by any dimensions, in any format
(pandas and the format's libraries are imported only when the command runs)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from metering.cli.common import (
    UsageError, migrated_engine, out, output_format, refused, period, read_text, reports_extra, write_file,
)
from metering.cli.true_up import stored_true_up
from metering.finance.report.options import BINARY_FORMATS, DEFAULT_DIMENSIONS, DIMENSIONS, FORMATS

TRUE_UP_DIMENSIONS = ("month", "business_unit", "cost_center", "subscription")

if TYPE_CHECKING:
    from metering.finance.capacity import PtuCost


def _format_from_output(output: str | None, explicit: str | None = None) -> str:
    """Without --format, the --output file's extension picks the format (report.csv → csv), else table."""
    return output_format(output, explicit, FORMATS)


def ptu_costs(path: str) -> list[PtuCost]:
    """The ``--ptu-costs`` CSV; a bad file is bad input listing every problem."""
    from metering.finance.capacity import PtuCostError, parse_ptu_costs_csv

    try:
        return parse_ptu_costs_csv(read_text(path), source=path)
    except PtuCostError as exc:
        raise refused("--ptu-costs not usable", exc) from None


def stored_ptu(conn: Any) -> list[dict[str, Any]]:
    """Stored PTU allocations (``metering ptu allocate``), which a report includes by default."""
    import sqlalchemy as sa

    from db.ptu_allocations import all_rows

    return all_rows(conn) if sa.inspect(conn).has_table("ptu_allocations") else []


def cmd_report(args: argparse.Namespace) -> int:
    from metering.finance.report.render import render
    from metering.finance.report.build import MixedCurrencyError, build_report

    report_period = period(args)
    dimensions = tuple(d.strip() for d in args.by.split(",") if d.strip()) if args.by else DEFAULT_DIMENSIONS
    unknown = [d for d in dimensions if d not in DIMENSIONS]
    if unknown:
        raise UsageError(f"--by: unknown dimension(s) {', '.join(unknown)}; choose from {', '.join(DIMENSIONS)}")
    fmt = _format_from_output(args.output, args.format)
    if fmt in BINARY_FORMATS and not args.output:
        raise UsageError(f"--format {fmt} writes a binary file: give --output FILE")
    costs = ptu_costs(args.ptu_costs) if args.ptu_costs else None
    if args.true_up:
        if not args.month:
            raise UsageError("--true-up needs --month: the bill is reconciled per calendar month")
        if "subscription" not in dimensions or any(d not in TRUE_UP_DIMENSIONS for d in dimensions):
            raise UsageError("--true-up needs --by with subscription (optionally month, business_unit, cost_center): "
                             "the true-up is an amount per subscription")
        if costs is not None:
            raise UsageError("--true-up shows the stored true-up, whose PTU share comes from `metering ptu allocate` "
                             "(or the bill's capacity lines): leave out --ptu-costs")
    engine = migrated_engine(args)
    with engine.connect() as conn:
        try:
            rows = stored_true_up(conn, report_period.label) if args.true_up else None
            report = build_report(conn, report_period, dimensions, costs, charts=fmt == "html", true_up=rows,
                                  stored_ptu=stored_ptu(conn) if costs is None and not args.true_up else None)
        except MixedCurrencyError as exc:
            raise UsageError(f"report not written: {exc}") from None
        if fmt == "html" and report_period.since is not None and report_period.until is not None:
            from metering.finance.budgets.service import AnomalyRule, period_anomalies

            found = period_anomalies(conn, report_period.since, report_period.until)
            report.anomalies = ([a.as_dict() for a in found], AnomalyRule().describe())
    with reports_extra(f"--format {fmt}"):
        content = render(report, fmt)
    if args.output:
        write_file(args.output, content)
        out(f"wrote {len(report.frame)} row(s) to {args.output}\n")
    else:
        text = content if isinstance(content, str) else content.decode()
        if fmt != "table" and sys.stdout.isatty():  # names from events must not drive the terminal
            from metering.safe_text import terminal_text

            text = terminal_text(text)
        out(text)
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    report = commands.add_parser("report", help="chargeback report for a period")
    report.add_argument("--month", metavar="YYYY-MM", help="one calendar month (UTC); or --since/--until; default: all time")
    report.add_argument("--since", metavar="DATE", help="first day (inclusive)")
    report.add_argument("--until", metavar="DATE", help="last day (inclusive)")
    report.add_argument("--by", metavar="DIM,...", help=f"group by (default {','.join(DEFAULT_DIMENSIONS)}); any of {','.join(DIMENSIONS)}")
    report.add_argument("--format", choices=FORMATS, help="table, csv, json, xlsx, parquet, html (xlsx and parquet need --output); "
                        "default: the --output file's extension, else table")
    report.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    report.add_argument("--ptu-costs", metavar="FILE", help="CSV deployment,backend_id,month,monthly_cost,currency: allocate PTU capacity cost by tokens "
                        "(default: the allocations `metering ptu allocate` stored, when grouped by subscription)")
    report.add_argument("--true-up", action="store_true",
                        help="show the month's stored true-up (`metering true-up`): per subscription the metered cost, "
                        "PTU share, adjustment and final charge, whole cents that add up to the bill (needs --month)")
    report.set_defaults(handler=cmd_report)
