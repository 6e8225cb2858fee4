"""``metering bill import``: Azure Cost Management exports (FOCUS or actual/amortized cost details;
CSV, CSV.gz or Parquet) → the ``bill_lines`` of their Azure OpenAI usage, replacing what an earlier
export said about the same days and resources (never doubling)."""

from __future__ import annotations

import argparse

from metering.cli.common import input_file, migrated_engine, out, refused, reports_extra


def cmd_bill_import(args: argparse.Namespace) -> int:
    from db.bill import store_bill_lines
    from metering.finance.reconcile.bill import BillError, parse_bill_export

    imports = []
    for path in args.files:
        file = input_file(path)
        try:
            with reports_extra(f"{path} (Parquet)"):
                imports.append(parse_bill_export(path, file.read_bytes()))
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
                out(f"  unknown meter kept as is: {meter} ({reason})\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bill = commands.add_parser("bill", help="the Azure bill: import Cost Management exports")
    actions = bill.add_subparsers(dest="bill_command", required=True, metavar="ACTION")
    bill_import = actions.add_parser("import", help="import FOCUS or cost details exports (CSV, CSV.gz, Parquet)")
    bill_import.add_argument("files", nargs="+", metavar="FILE", help="export files; later files replace the days they cover")
    bill_import.set_defaults(handler=cmd_bill_import)
