"""``metering quarantine list | retry | purge``: see what could not be counted, and act on it.

Rows are never deleted when they are dealt with: retry marks them resolved; purge removes resolved
rows past a retention.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from metering.cli.common import UsageError, migrated_engine, out, pipeline_settings
from metering.safe_text import terminal_line
from metering.settings import RETENTION_SETTING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

def _when(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _positive(value: int | None, option: str, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise UsageError(f"{option} must be a whole number of at least {minimum}, got {value}")


def cmd_list(args: argparse.Namespace) -> int:
    from db import quarantine as quarantine_store

    _positive(args.limit, "--limit")
    _positive(args.raw, "--raw", minimum=0)
    engine = migrated_engine(args)
    if args.reason is None:
        with engine.connect() as conn:
            groups = quarantine_store.summary(conn, include_resolved=args.all)
        if not groups:
            out("quarantine is empty\n" if args.all else "no unresolved quarantine rows\n")
            return 0
        header = f"{'reason':<20} {'unresolved':>10}" + (f" {'resolved':>9}" if args.all else "") + f" {'oldest (UTC)':<19}  {'newest (UTC)':<19} {'raw bytes':>12}"
        lines = [header, "-" * len(header)]
        for group in groups:
            lines.append(
                f"{terminal_line(group.reason):<20} {group.unresolved:>10,}" + (f" {group.resolved:>9,}" if args.all else "")
                + f" {_when(group.oldest):<19}  {_when(group.newest):<19} {group.bytes:>12,}"
            )
        total = sum(g.unresolved for g in groups)
        lines.append(f"{total:,} unresolved row(s); `metering quarantine list --reason REASON` shows them, "
                     "`metering quarantine retry` re-runs them through today's pipeline")
        out("\n".join(lines) + "\n")
        return 0
    _known_reasons([args.reason])
    with engine.connect() as conn:
        found = quarantine_store.rows(conn, reason=args.reason, include_resolved=args.all, limit=args.limit)
    if not found:
        with engine.connect() as conn:  # a mistyped reason: say which ones there are
            present = [g.reason for g in quarantine_store.summary(conn, include_resolved=args.all) if args.all or g.unresolved]
        hint = f" (reasons with rows: {', '.join(present)})" if present else ""
        out(f"no {'' if args.all else 'unresolved '}rows with reason {terminal_line(args.reason)}{terminal_line(hint)}\n")
        return 0
    lines = []
    for row in found:
        source = (f" partition {terminal_line(row.source_partition or '-')} seq {row.source_sequence_number}"
                  if row.source_partition or row.source_sequence_number is not None else "")
        resolved = f" resolved {_when(row.resolved_at)}" if row.resolved_at else ""
        lines.append(f"#{row.id} received {_when(row.received_at)} request_id {terminal_line(row.request_id or '-')}{source}"
                     f" {len(row.raw):,} bytes{resolved}")
        lines.append(f"    {terminal_line(row.detail or '')}")
        if args.raw:
            lines.append(f"    raw: {row.raw[: args.raw]!r}{' …' if len(row.raw) > args.raw else ''}")
    shown = f"{len(found)} row(s)" + (f" (first {args.limit}; --limit to see more)" if args.limit and len(found) == args.limit else "")
    lines.append(shown)
    out("\n".join(lines) + "\n")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from metering.ingest import Ingestor

    _positive(args.limit, "--limit")
    _known_reasons(args.reason or [])
    engine = migrated_engine(args)
    if args.id:
        _existing_ids(engine, args.id)
    ingestor = Ingestor(engine, settings=pipeline_settings(args))
    totals = ingestor.retry_quarantined(reasons=args.reason or None, ids=args.id or None, limit=args.limit)
    out(totals.summary() + "\n")
    if not totals.retried and (args.id or args.reason):
        out("".join(f"{line}\n" for line in _why_none_retried(engine, args.id or [], args.reason or [], totals.skipped)))
    return 0


def _known_reasons(reasons: list[str]) -> None:
    """A reason no quarantine row can have is a typo: bad input, with the reasons there are."""
    from metering.model import QUARANTINE_REASONS

    unknown = [reason for reason in reasons if reason not in QUARANTINE_REASONS]
    if unknown:
        raise UsageError(f"--reason {terminal_line(unknown[0])}: not a quarantine reason; one of "
                         f"{', '.join(QUARANTINE_REASONS)}")


def _existing_ids(engine: Engine, ids: list[int]) -> None:
    """``retry --id`` of rows that do not exist is bad input: nothing is retried."""
    from db import quarantine as quarantine_store

    with engine.connect() as conn:
        found = {row.id for row in quarantine_store.rows(conn, ids=ids, include_resolved=True)}
    missing = [str(ident) for ident in dict.fromkeys(ids) if ident not in found]
    if missing:
        raise UsageError(f"--id: no quarantine row has id {', '.join(missing)}; nothing retried "
                         "(`metering quarantine list --all --reason REASON` shows the ids)")


def _why_none_retried(engine: Engine, ids: list[int], reasons: list[str], skipped: dict[str, int]) -> list[str]:
    """Why ``retry --id``/``--reason`` found nothing to retry: no such row, already resolved, skipped,
    another reason, or a reason with no unresolved rows (and the reasons that have some)."""
    from db import quarantine as quarantine_store

    with engine.connect() as conn:
        found = {row.id: row for row in quarantine_store.rows(conn, ids=ids, include_resolved=True)} if ids else {}
        present = [g.reason for g in quarantine_store.summary(conn) if g.unresolved]
    lines = []
    for ident in dict.fromkeys(ids):
        row = found.get(ident)
        if row is None:
            lines.append(f"no quarantine row has id {ident}")
        elif row.resolved_at is not None:
            lines.append(f"row #{ident} was already resolved at {_when(row.resolved_at)} UTC")
        elif reasons and row.reason not in reasons:
            lines.append(f"row #{ident} has reason {terminal_line(row.reason)}, not {', '.join(map(terminal_line, reasons))}")
        elif row.reason in skipped:
            lines.append(f"row #{ident} ({row.reason}) was skipped, as said above")
    if not ids:
        hint = f" (reasons with unresolved rows: {', '.join(present)})" if present else " (no unresolved rows at all)"
        for reason in dict.fromkeys(reasons):
            if reason not in present:
                lines.append(f"no unresolved rows with reason {terminal_line(reason)}{hint}")
    return lines


def _date(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--resolved-before: not a date: {text!r}") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def cmd_purge(args: argparse.Namespace) -> int:
    from db import quarantine as quarantine_store

    if args.resolved_before and args.older_than is not None:
        raise UsageError("use either --resolved-before or --older-than, not both")
    if args.resolved_before:
        cutoff = _date(args.resolved_before)
    else:
        days = args.older_than
        if days is None:
            setting = os.environ.get(RETENTION_SETTING, "").strip()
            if not setting:
                raise UsageError(f"give --older-than DAYS or --resolved-before DATE, or set {RETENTION_SETTING}")
            try:
                days = float(setting)
            except ValueError:
                raise UsageError(f"{RETENTION_SETTING} must be a number of days, got {setting!r:.20}") from None
        if days < 0:
            raise UsageError("the retention must be zero or more days")
        cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    engine = migrated_engine(args)
    with engine.begin() as conn:
        deleted = quarantine_store.purge_resolved(conn, cutoff)
    out(f"purged {deleted:,} quarantine row(s) resolved before {_when(cutoff)} UTC (unresolved rows are kept)\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``quarantine list | retry | purge`` to the ``metering`` parser."""
    parser = commands.add_parser("quarantine", help="events that could not be counted: list, retry, purge")
    actions = parser.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="unresolved rows grouped by reason; --reason R shows the rows")
    listing.add_argument("--reason", metavar="REASON", help="show the rows of this reason, with detail and request id")
    listing.add_argument("--all", action="store_true", help="include resolved rows (and truncated events' audit copies)")
    listing.add_argument("--limit", type=int, default=50, help="rows to show with --reason (default 50)")
    listing.add_argument("--raw", type=int, nargs="?", const=200, default=0, metavar="BYTES",
                         help="also print the first BYTES (default 200) of each row's raw bytes")
    listing.set_defaults(handler=cmd_list)

    retry = actions.add_parser("retry", help="re-run unresolved rows through today's pipeline; resolved rows are kept, marked resolved")
    retry.add_argument("--reason", action="append", metavar="REASON", help="only this reason (repeatable)")
    retry.add_argument("--id", action="append", type=int, metavar="ID", help="only this row (repeatable)")
    retry.add_argument("--limit", type=int, help="at most this many rows")
    retry.add_argument("--signing-secret-file", metavar="FILE", help="HMAC key for signed events (default: $METERING_SIGNING_SECRET)")
    retry.set_defaults(handler=cmd_retry)

    purge = actions.add_parser("purge", help=f"delete resolved rows older than a retention (default ${RETENTION_SETTING})")
    purge.add_argument("--resolved-before", metavar="DATE", help="delete rows resolved before this date (UTC)")
    purge.add_argument("--older-than", type=float, metavar="DAYS", help="delete rows resolved more than DAYS ago")
    purge.set_defaults(handler=cmd_purge)
