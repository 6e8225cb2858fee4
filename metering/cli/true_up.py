"""``metering true-up``: the month's chargeback trued up to the imported Azure bill, stored per
subscription × bill meter (``true_up_allocations``) so that every report, export and Power BI view
reads the same figures. Run it after ``bill import`` (and ``ptu allocate``); run it again and the
month is replaced."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from metering.cli.common import UsageError, migrated_engine, out

if TYPE_CHECKING:
    import sqlalchemy as sa

    from metering.finance.reconcile.true_up import TrueUp


def month_true_up(conn: sa.Connection, month: str) -> TrueUp:
    """Compute the month's true-up from the stored bill lines, metered usage, backends and PTU allocations."""
    from db import queries
    from db.bill import load_backends, metered_usage, subscription_names
    from db.true_up import ptu_month
    from metering.cli.reconcile import month_bill
    from metering.finance.reconcile.true_up import PtuShare, TrueUpError, compute_true_up

    period, lines = month_bill(conn, month)
    metered = metered_usage(conn, period.since, period.until, by_usage_source=True)
    ptu = [PtuShare(row["deployment"], row["backend_id"], row["subscription_id"], row["allocated_cost"], row["currency"])
           for row in ptu_month(conn, period.label)]
    try:
        return compute_true_up(period.label, lines, metered, load_backends(conn), ptu,
                               subscription_names(conn, period.since, period.until),
                               queries.period_currencies(conn, period.since, period.until))
    except TrueUpError as exc:
        raise UsageError(f"true-up of {period.label}: {exc}") from None


def stored_true_up(conn: sa.Connection, month: str) -> list[dict[str, Any]]:
    """The month's stored true-up (``metering true-up``); none stored is bad input, not a silent zero."""
    import sqlalchemy as sa

    from db.true_up import month_rows

    if not sa.inspect(conn).has_table("true_up_allocations"):
        raise UsageError("the database has no true_up_allocations table: run `metering db upgrade` first")
    rows = month_rows(conn, month)
    if not rows:
        raise UsageError(f"--true-up: no stored true-up for {month}; run `metering true-up --month {month}` "
                         "after `metering bill import`")
    return rows


def cmd_true_up(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from decimal import Decimal

    from db.true_up import replace_month
    from metering.finance.reconcile.true_up import cents, headline, headline_text, subscription_totals
    from metering.safe_text import terminal_line

    engine = migrated_engine(args)
    import sqlalchemy as sa

    if not sa.inspect(engine).has_table("true_up_allocations"):
        raise UsageError("the database has no true_up_allocations table: run `metering db upgrade` first")
    with engine.begin() as conn:
        result = month_true_up(conn, args.month)
        if not args.dry_run:
            replace_month(conn, result.month, [line.as_row() for line in result.lines], datetime.now(timezone.utc))
    names = {line.subscription_id: line.subscription_name for line in result.lines}
    for subscription, amount in sorted(subscription_totals(result.lines).items(),
                                       key=lambda item: (item[0] is None, item[0] or "")):
        label = terminal_line(subscription) if subscription is not None else "(unattributed)"
        name = names.get(subscription)
        out(f"{result.month}  {label:<32} {terminal_line(name) if name and name != subscription else '':<24} "
            f"{amount:>12} {result.currency}\n")
    for note in result.notes:
        out(f"note: {terminal_line(note)}\n")
    verb = "would store" if args.dry_run else "stored"
    figures = headline(result.lines)
    out(f"{verb} {len(result.lines)} true-up line(s) for {result.month}: {headline_text(figures, result.currency)}\n")
    chargeback = sum(subscription_totals(result.lines).values(), Decimal(0))
    verdict = "=" if chargeback == cents(result.bill) else "!="
    out(f"trued-up chargeback {chargeback} {result.currency} {verdict} Azure bill {cents(result.bill)} "
        f"{result.currency} ({result.month}, to the cent)\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    true_up = commands.add_parser("true-up", help="true the month's chargeback up to the imported Azure bill and "
                                                  "store it (replaces that month)")
    true_up.add_argument("--month", required=True, metavar="YYYY-MM", help="the month to true up (UTC)")
    true_up.add_argument("--dry-run", action="store_true", help="print the true-up, store nothing")
    true_up.set_defaults(handler=cmd_true_up)
