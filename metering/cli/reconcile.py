"""``metering reconcile``: a month's Azure bill against what was metered through APIM, per day ×
resource × meter (or coarser), every difference explained."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import TYPE_CHECKING

from metering.cli.common import UsageError, migrated_engine, out, output_format, reports_extra, write_file

if TYPE_CHECKING:
    import sqlalchemy as sa

    from metering.finance.reconcile.compare import Reconciliation
    from metering.finance.report.options import Period

DEFAULT_BY = ("resource", "meter")


def month_bill(conn: sa.Connection, month: str) -> tuple[Period, list]:
    """The ``--month`` period (bad input: one line) and the bill lines stored for its days."""
    from db.bill import load_bill_lines
    from metering.finance.report.options import Period

    try:
        period = Period.month(month)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    assert period.since is not None and period.until is not None
    return period, load_bill_lines(conn, period.since.date(), period.until.date() - timedelta(days=1))


def month_reconciliation(conn: sa.Connection, month: str) -> tuple[Reconciliation, list, dict]:
    """The month's bill lines and metered usage compared; also the metered groups and backends."""
    from db import queries
    from db.bill import load_backends, metered_usage
    from metering.finance.reconcile.compare import reconcile

    period, lines = month_bill(conn, month)
    metered = metered_usage(conn, period.since, period.until)
    backends = load_backends(conn)
    result = reconcile(period.label, lines, metered, backends)
    card_currencies = queries.period_currencies(conn, period.since, period.until)
    if lines and any(currency != result.currency for currency in card_currencies):
        result.notes.append(f"the bill is in {result.currency} and the metered cost in {', '.join(card_currencies)}: "
                            "the differences include the exchange rate (keep the card in the billing currency)")
        result.currency_mismatch = True
    return result, metered, backends


def cmd_reconcile(args: argparse.Namespace) -> int:
    from metering.finance.reconcile.compare import GROUPINGS
    from metering.finance.reconcile.render import FORMATS, render

    by = tuple(d.strip() for d in args.by.split(",") if d.strip()) if args.by else DEFAULT_BY
    unknown = [d for d in by if d not in GROUPINGS]
    if unknown or not by or len(set(by)) != len(by):
        raise UsageError(f"--by: choose one or more of {', '.join(GROUPINGS)} (got {args.by})")
    fmt = output_format(args.output, args.format, FORMATS)
    if fmt == "xlsx" and not args.output:
        raise UsageError("--format xlsx writes a binary file: give --output FILE")
    engine = migrated_engine(args)
    with engine.connect() as conn:
        result, _, _ = month_reconciliation(conn, args.month)
    if not result.cells:
        raise UsageError(f"nothing to reconcile for {result.month}: no bill lines and no metered usage "
                         "(import the month's export with `metering bill import`)")
    with reports_extra(f"--format {fmt}"):
        content = render(result, by, fmt)
    if args.output:
        write_file(args.output, content)
        out(f"wrote the {result.month} reconciliation to {args.output}\n")
    else:
        out(content if isinstance(content, str) else content.decode())
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    reconcile = commands.add_parser("reconcile", help="compare a month's Azure bill with the metered usage")
    reconcile.add_argument("--month", metavar="YYYY-MM", required=True, help="the calendar month (UTC)")
    reconcile.add_argument("--by", metavar="DIM,...", help="group by any of day,resource,meter (default resource,meter)")
    reconcile.add_argument("--format", choices=("table", "csv", "json", "html", "xlsx"),
                           help="default: the --output file's extension, else table")
    reconcile.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    reconcile.set_defaults(handler=cmd_reconcile)
