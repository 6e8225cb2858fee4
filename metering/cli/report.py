"""``metering report``: the chargeback for a period, grouped by any dimensions, in any format
(pandas and the format's libraries are imported only when the command runs)."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from metering.cli.common import (
    UsageError, migrated_engine, out, output_format, refused, period, read_text, reports_extra, write_file,
)
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


def bill_true_up(conn: Any, month: str, include_capacity: bool) -> dict[str, Decimal]:
    """Each subscription's true-up for the month (``metering.finance.reconcile.compare.true_up``); a month
    without imported bill lines is bad input, not a silent zero."""
    from metering.cli.reconcile import month_reconciliation
    from metering.finance.reconcile.compare import true_up

    result, metered, backends = month_reconciliation(conn, month)
    if not any(cell.billed_cost or cell.billed_quantity for cell in result.cells):
        raise UsageError(f"--true-up: no bill lines for {month}; import the month's Cost Management export with "
                         "`metering bill import` first")
    if result.currency_mismatch:
        raise UsageError(f"--true-up: {result.notes[-1]}; no total can add them")
    return true_up(result, metered, backends, include_capacity=include_capacity)


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
    engine = migrated_engine(args)
    with engine.connect() as conn:
        try:
            amounts = bill_true_up(conn, args.month, costs is None) if args.true_up else None
            report = build_report(conn, report_period, dimensions, costs, charts=fmt == "html", true_up=amounts)
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
    report.add_argument("--ptu-costs", metavar="FILE", help="CSV deployment,backend_id,month,monthly_cost,currency: allocate PTU capacity cost by tokens")
    report.add_argument("--true-up", action="store_true",
                        help="add true_up per subscription: the imported Azure bill's difference to the metered cost, "
                        "spread by token share in whole cents, so total_charge equals the bill (needs --month)")
    report.set_defaults(handler=cmd_report)
