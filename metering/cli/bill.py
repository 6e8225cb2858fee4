"""``metering bill import``: Azure Cost Management exports (FOCUS or actual/amortized cost details;
CSV, CSV.gz or Parquet) → the ``bill_lines`` of their Azure OpenAI usage, replacing what an earlier
export said about the same days and resources (never doubling)."""

from __future__ import annotations

import argparse
import os
from decimal import Decimal

from metering.cli.common import UsageError, input_file, migrated_engine, out, refused, reports_extra
from metering.safe_text import terminal_line


LIMIT_SETTINGS = {"max_bytes": "METERING_BILL_MAX_BYTES", "max_rows": "METERING_BILL_MAX_ROWS",
                  "max_ratio": "METERING_BILL_MAX_RATIO"}


def _limits(args: argparse.Namespace):  # -> BillLimits
    """``--max-bytes/--max-rows/--max-ratio``, else ``METERING_BILL_MAX_*``, else the defaults."""
    from metering.finance.reconcile.bill import BillLimits

    values = {}
    for name, setting in LIMIT_SETTINGS.items():
        value = getattr(args, name, None)
        flag = "--" + name.replace("_", "-")
        if value is None and os.environ.get(setting, "").strip():
            value, flag = os.environ[setting].strip(), setting
        if value is None:
            continue
        try:
            number = int(str(value).replace("_", ""))
        except ValueError:
            raise UsageError(f"{flag}: expected a whole number, got {terminal_line(str(value))[:40]!r}") from None
        if number < (0 if name == "max_ratio" else 1):
            raise UsageError(f"{flag}: must be {'0 or more' if name == 'max_ratio' else 'at least 1'}, got {number}")
        values[name] = number
    return BillLimits(**values)


def cmd_bill_import(args: argparse.Namespace) -> int:
    from db.bill import store_bill_lines
    from metering.finance.reconcile.bill import BillError, parse_bill_export

    limits = _limits(args)
    imports = []
    for path in args.files:
        file = input_file(path)
        shown = terminal_line(path)
        try:
            with reports_extra(f"{shown} (Parquet)"), file.open("rb") as stream:
                imports.append(parse_bill_export(shown, stream, limits, allow_negative=args.allow_negative,
                                                 allow_duplicates=args.allow_duplicates))
        except BillError as exc:
            raise refused("bill not imported", exc) from None
    engine = migrated_engine(args)
    with engine.begin() as conn:
        for item in imports:  # in the order given: a later export replaces the days it covers
            deleted, inserted = store_bill_lines(conn, item.lines, item.source)
            span = item.days
            cost = sum((line.cost for line in item.lines), start=0)
            currency = item.lines[0].currency if item.lines else ""
            out(f"{item.source}: {item.source_format}, {item.rows_read} row(s) read, {item.rows_kept} Azure OpenAI "
                f"usage row(s) → {inserted} bill line(s)"
                + (f" for {span[0]} … {span[1]}" if span else "")
                + f", cost {cost} {currency}".rstrip()
                + f"; {deleted} earlier line(s) of those days replaced; {item.other_services} other-service and "
                f"{item.not_usage} non-usage row(s) skipped\n")
            for meter, reason in sorted(item.unknown_meters.items()):
                out(f"  unknown meter kept as is: {terminal_line(meter)} ({terminal_line(reason)})\n")
            if item.negative_lines:
                total = sum((c for _, c, _ in item.negative_lines), Decimal(0))
                out(f"  warning: {len(item.negative_lines)} usage line(s) with a negative cost or quantity imported "
                    f"(--allow-negative), {total} {currency} together: "
                    + ", ".join(where.rsplit(": ", 1)[-1] for where, _, _ in item.negative_lines[:10])
                    + (" …" if len(item.negative_lines) > 10 else "") + "\n")
            if item.duplicate_rows:
                total = sum((c for _, _, c in item.duplicate_rows), Decimal(0))
                out(f"  warning: {len(item.duplicate_rows)} row(s) repeating an earlier row exactly imported and summed "
                    f"(--allow-duplicates), {total} {currency} together: "
                    + ", ".join(f"{where.rsplit(': ', 1)[-1]} (= {first})" for where, first, _ in item.duplicate_rows[:10])
                    + (" …" if len(item.duplicate_rows) > 10 else "") + "\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bill = commands.add_parser("bill", help="the Azure bill: import Cost Management exports")
    actions = bill.add_subparsers(dest="bill_command", required=True, metavar="ACTION")
    bill_import = actions.add_parser("import", help="import FOCUS or cost details exports (CSV, CSV.gz, Parquet)")
    bill_import.add_argument("files", nargs="+", metavar="FILE", help="export files; later files replace the days they cover")
    bill_import.add_argument("--max-bytes", metavar="N", help="refuse a file whose text (after gzip) or declared Parquet "
                             "data is larger (default 1 GiB; METERING_BILL_MAX_BYTES)")
    bill_import.add_argument("--max-rows", metavar="N", help="refuse a file with more rows (default 10,000,000; "
                             "METERING_BILL_MAX_ROWS)")
    bill_import.add_argument("--max-ratio", metavar="N", help="refuse a gzip file that expands more than N times "
                             "(default 100; 0: no check; METERING_BILL_MAX_RATIO)")
    bill_import.add_argument("--allow-negative", action="store_true",
                             help="import usage lines with a negative cost or quantity (refused by default), with a warning")
    bill_import.add_argument("--allow-duplicates", action="store_true",
                             help="import rows that repeat an earlier row exactly, summed (refused by default), with a warning")
    bill_import.set_defaults(handler=cmd_bill_import)
