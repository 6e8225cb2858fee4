"""``metering reprice``: recompute stored rows' prices after the rate card or mappings changed."""

from __future__ import annotations

import argparse

from metering.cli.common import UsageError, migrated_engine, out
from metering.price.reprice import REPRICE_BATCH_SIZE


def cmd_reprice(args: argparse.Namespace) -> int:
    """Reprice stored rows with the current card and mappings; only rows whose price changes are written."""
    from db.reprice import reprice
    from metering.finance.report.options import Period

    try:
        period = Period.between(args.since, args.until)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.batch_size <= 0:
        raise UsageError("--batch-size must be a positive number of rows")
    engine = migrated_engine(args)
    summary = reprice(engine, period.since, period.until, batch_size=args.batch_size, dry_run=args.dry_run)
    verb = "would reprice (dry run, nothing written)" if args.dry_run else "repriced"
    out(f"{verb} usage records {period.label}: " + "\n".join(summary.lines()) + "\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "reprice", help="recompute stored rows' costs after the rate card or deployments changed; idempotent")
    parser.add_argument("--since", metavar="DATE", help="first day (inclusive)")
    parser.add_argument("--until", metavar="DATE", help="last day (inclusive)")
    parser.add_argument("--batch-size", type=int, default=REPRICE_BATCH_SIZE,
                        help=f"rows per transaction (default {REPRICE_BATCH_SIZE:,})")
    parser.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    parser.set_defaults(handler=cmd_reprice)
