"""``metering budgets import FILE | status [--month YYYY-MM] | check [--webhook URL] [--webhook-format
text|teams]``: monthly money
budgets per business unit, cost center or subscription; where each stands (spend to date, forecast,
anomalies); and alerts to a Teams/Slack/generic webhook, each sent once."""

from __future__ import annotations

import argparse
import os

from metering.finance.budgets.alerts import FORMAT_SETTING, WEBHOOK_FORMATS
from metering.cli.common import UsageError, migrated_engine, out, output_format, read_text, write_file

FORMATS = ("table", "csv", "json", "html")
WEBHOOK_SETTING = "METERING_BUDGET_WEBHOOK_URL"


def _budget_engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    engine = migrated_engine(args)
    if not sa.inspect(engine).has_table("budgets"):
        raise UsageError("the database has no budgets table: run `metering db upgrade` first")
    return engine


def cmd_import(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from db.budgets import replace_budgets
    from metering.finance.budgets.rules import BudgetFileError, parse_budgets_csv

    try:
        found = parse_budgets_csv(read_text(args.file), source=args.file)
    except BudgetFileError as exc:
        raise UsageError(f"budgets not imported: {exc}") from None
    rows = [{"scope": b.scope, "scope_id": b.scope_id, "amount": b.amount, "currency": b.currency,
             "alert_at": ",".join(str(t) for t in b.alert_at), "action": b.action} for b in found]
    with _budget_engine(args).begin() as conn:
        count = replace_budgets(conn, rows, datetime.now(timezone.utc))
    out(f"imported {count} budget(s) from {args.file}\n")
    return 0


def _now(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    if getattr(args, "as_of", None):
        try:
            return datetime.fromisoformat(args.as_of).replace(tzinfo=timezone.utc)
        except ValueError:
            raise UsageError(f"--as-of {args.as_of!r} is not a date (YYYY-MM-DD)") from None
    return datetime.now(timezone.utc)


def cmd_status(args: argparse.Namespace) -> int:
    from metering.finance.budgets.render import render_status
    from metering.finance.budgets.service import month_of, review_month
    from metering.finance.report.options import Period

    now = _now(args)
    try:
        month = Period.month(args.month).label if args.month else month_of(now)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    fmt = output_format(args.output, args.format, FORMATS)
    with _budget_engine(args).connect() as conn:
        review = review_month(conn, month, now)
    text = render_status(review, fmt)
    if args.output:
        write_file(args.output, text)
        out(f"wrote {args.output}\n")
    else:
        out(text)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from metering.finance.budgets.alerts import webhook_format
    from metering.finance.budgets.service import check
    from metering.finance.budgets.webhook import describe

    url = args.webhook or os.environ.get(WEBHOOK_SETTING)
    if not url:
        raise UsageError(f"no webhook: pass --webhook URL or set {WEBHOOK_SETTING}")
    if not url.startswith(("http://", "https://")):
        raise UsageError("--webhook must be an http(s) URL")
    if args.attempts < 1 or args.backoff < 0:
        raise UsageError("--attempts must be at least 1 and --backoff at least 0")
    try:
        fmt = args.webhook_format or webhook_format(os.environ.get(FORMAT_SETTING))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result = check(_budget_engine(args), url, now=_now(args) if args.as_of else None, attempts=args.attempts,
                   backoff_seconds=args.backoff, webhook_format=fmt)
    out(f"{result.new} new alert(s); {result.sent} sent to {describe(url)}; {result.pending} pending\n")
    for error in result.errors:
        out(f"  not delivered (will be sent on the next run): {error}\n")
    return 1 if result.pending else 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    budgets = commands.add_parser("budgets", help="monthly money budgets, forecasts, anomalies and alerts")
    actions = budgets.add_subparsers(dest="budgets_command", required=True, metavar="ACTION")
    imp = actions.add_parser("import", help="import a CSV: scope,scope_id,amount,currency,alert_at,action")
    imp.add_argument("file", metavar="FILE", help="CSV with header scope,scope_id,amount,currency,alert_at,action")
    imp.set_defaults(handler=cmd_import)
    status = actions.add_parser("status", help="spend to date, forecast, status and anomalies of every budget")
    status.add_argument("--month", metavar="YYYY-MM", help="the month (default: the current UTC month)")
    status.add_argument("--as-of", metavar="YYYY-MM-DD", help="status as on this day (default: now)")
    status.add_argument("--format", choices=FORMATS, help="output format (default table)")
    status.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    status.set_defaults(handler=cmd_status)
    chk = actions.add_parser("check", help="post each threshold crossed and each anomaly to a webhook, once")
    chk.add_argument("--webhook", metavar="URL", help=f"webhook URL (default: ${WEBHOOK_SETTING})")
    chk.add_argument("--webhook-format", choices=WEBHOOK_FORMATS,
                     help=f"message shape: text (Slack, generic) or teams (Adaptive Card for a Teams Workflows "
                          f"webhook); default ${FORMAT_SETTING}, else text")
    chk.add_argument("--attempts", type=int, default=4, metavar="N", help="tries per alert (default 4)")
    chk.add_argument("--backoff", type=float, default=1.0, metavar="SECONDS",
                     help="wait before the second try, doubling after (default 1)")
    chk.add_argument("--as-of", metavar="YYYY-MM-DD",
                     help="check as on this day (a past month's alerts; default: now)")
    chk.set_defaults(handler=cmd_check)
