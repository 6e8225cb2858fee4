"""``metering ptu allocate``: store a month's provisioned-throughput (PTU) capacity cost, allocated
to subscriptions by tokens, in the database, so that ``v_chargeback_monthly`` (and Power BI) carry
the total charge. Run it when the month is complete; run it again and the month is replaced."""

from __future__ import annotations

import argparse

from metering.cli.common import UsageError, migrated_engine, out
from metering.cli.report import ptu_costs


def cmd_allocate(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone
    from decimal import Decimal

    from db import ptu_allocations
    from metering.finance.report.options import Period
    from metering.finance.report.build import money, ptu_allocation_rows
    from metering.safe_text import terminal_line

    try:
        month = Period.month(args.month).label
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    costs = [cost for cost in ptu_costs(args.ptu_costs) if cost.month == month]
    if not costs:
        raise UsageError(f"--ptu-costs has no cost for {month}: nothing to allocate")
    engine = migrated_engine(args)
    import sqlalchemy as sa

    if not sa.inspect(engine).has_table("ptu_allocations"):
        raise UsageError("the database has no ptu_allocations table: run `metering db upgrade` first")
    with engine.begin() as conn:
        rows = ptu_allocation_rows(conn, month, costs)
        if not args.dry_run:
            ptu_allocations.replace_month(conn, month, rows, datetime.now(timezone.utc))
    for row in rows:
        out(f"{month}  {terminal_line(row['deployment']):<20} "
            f"{terminal_line(row['subscription_id'] or '(no subscription id)'):<28} "
            f"{row['tokens']:>12,} tokens  {money(row['allocated_cost']):>12} {row['currency']}\n")
    total = sum((row["allocated_cost"] for row in rows), Decimal(0))
    verb = "would store" if args.dry_run else "stored"
    out(f"{verb} {len(rows)} allocation(s) for {month}: {money(total)} of {len(costs)} monthly PTU cost(s)\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ptu = commands.add_parser("ptu", help="provisioned throughput (PTU) capacity cost in the database")
    actions = ptu.add_subparsers(dest="ptu_command", required=True, metavar="ACTION")
    allocate = actions.add_parser("allocate", help="allocate a month's PTU costs to subscriptions and store them "
                                                   "(replaces that month)")
    allocate.add_argument("--month", required=True, metavar="YYYY-MM", help="the month to allocate (UTC)")
    allocate.add_argument("--ptu-costs", required=True, metavar="FILE",
                          help="CSV deployment,backend_id,month,monthly_cost,currency")
    allocate.add_argument("--dry-run", action="store_true", help="print the allocation, store nothing")
    allocate.set_defaults(handler=cmd_allocate)
