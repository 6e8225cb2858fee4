"""``metering export focus``: a month of metered usage (and allocated PTU capacity) as FinOps FOCUS
1.2 cost and usage rows, CSV or Parquet. ``metering export powerbi``: the month as the Power BI
project reads it, one Parquet file per table, for its ``Source`` = ``Parquet`` (no database needed)."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from pathlib import Path

from metering.cli.common import UsageError, migrated_engine, out, period, reports_extra, write_file
from metering.cli.report import ptu_costs
from metering.cli.true_up import stored_true_up


def cmd_focus(args: argparse.Namespace) -> int:
    from metering.finance import focus
    from metering.finance.report.build import export_focus, money

    month = period(argparse.Namespace(month=args.month, since=None, until=None))
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UsageError(f"--output {args.output}: the file name must end in .csv or .parquet")
    if not args.billing_account_id.strip():  # FOCUS: BillingAccountId must not be null
        raise UsageError("--billing-account-id must not be empty (FOCUS requires a BillingAccountId on every row)")
    costs = ptu_costs(args.ptu_costs) if args.ptu_costs else None
    if costs is not None and args.true_up:
        raise UsageError("--true-up exports the stored true-up, whose PTU share comes from `metering ptu allocate` "
                         "(or the bill's capacity lines): leave out --ptu-costs")
    engine = migrated_engine(args)
    left_out: list[focus.LeftOut] = []
    with engine.connect() as conn:
        rows = stored_true_up(conn, month.label) if args.true_up else None
        records = export_focus(conn, month, args.billing_account_id, args.billing_account_name, costs, rows,
                               left_out, args.provider_name)
    with reports_extra("a .parquet --output"):
        content = focus.to_csv(records) if suffix == ".csv" else focus.to_parquet(records)
    write_file(args.output, content)
    out(f"wrote {len(records)} FOCUS {focus.FOCUS_VERSION} row(s) to {args.output}: "
        f"BilledCost {money(focus.billed_total(records))}\n")
    if rows:
        from metering.finance.reconcile.true_up import headline, headline_text

        out(f"true-up: {headline_text(headline(rows), rows[0]['currency'])}\n")
    if left_out:  # never silently: FOCUS usage rows need a unit price, and $0 would be a lie
        models = sorted({item.model or "(unknown)" for item in left_out})
        sys.stderr.write(
            f"warning: {sum(item.tokens for item in left_out):,} unpriced token(s) left out of the FOCUS rows "
            f"(no rate for: {', '.join(models)}): add their rates (`metering rates import`), re-price, export again\n")
    unmapped = sorted({r["x_Backend"] or "(no backend id)" for r in records
                       if r["ResourceId"] is None and r["x_ChargeSource"] != "bill_true_up"})
    if unmapped:
        sys.stderr.write(f"warning: {len(unmapped)} backend(s) without an Azure resource id ({', '.join(unmapped)}): "
                         "their rows have no ResourceId; map them with `metering backends import`\n")
    return 0


def cmd_powerbi(args: argparse.Namespace) -> int:
    """One Parquet file per table the Power BI model reads, the month's rows of each view (the
    dimensions whole), written only once every file is rendered."""
    import sqlalchemy as sa

    from db.powerbi import POWERBI_TABLES, powerbi_tables
    from metering.finance import powerbi

    month = period(argparse.Namespace(month=args.month, since=None, until=None)).label
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output {args.output}: not a folder (the export writes one .parquet file per table into it)")
    engine = migrated_engine(args)
    inspector = sa.inspect(engine)
    present = set(inspector.get_view_names()) | set(inspector.get_table_names())
    missing = [table.name for table in POWERBI_TABLES if table.name not in present]
    if missing:
        raise UsageError(f"the database has no {', '.join(missing)}: run `metering db upgrade` first")
    tables = powerbi_tables(engine, month)
    metadata = {"month": month, "written_by": "metering export powerbi"}
    with reports_extra("export powerbi"):
        files = {f"{table.name}.parquet": powerbi.to_parquet(table.columns, tables[table.name], metadata)
                 for table in POWERBI_TABLES}
    created = not folder.exists()
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            written.append(folder / name)
            written[-1].write_bytes(content)
    except OSError as exc:  # bad input leaves nothing behind
        for path in written:
            path.unlink(missing_ok=True)
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise UsageError(f"--output {args.output}: cannot write ({exc.strerror or exc})") from None
    counts = ", ".join(f"{table.name} {len(tables[table.name])}" for table in POWERBI_TABLES)
    out(f"wrote {len(files)} Parquet file(s) for {month} to {folder} (rows: {counts})\n")
    true_up, bill = tables["v_true_up_monthly"], tables["v_bill_daily"]
    if true_up:  # the page finance signs: the same four figures as every other output
        from metering.finance.reconcile.true_up import cents, headline, headline_text

        figures = headline(true_up)
        out(f"{headline_text(figures, true_up[0]['currency'])}\n")
        billed = cents(sum((row["cost"] for row in bill), Decimal(0)))
        if billed != figures["bill"]:
            sys.stderr.write(f"warning: the bill lines of {month} add up to {billed}, the stored true-up to "
                             f"{figures['bill']}: run `metering true-up --month {month}` again, then export again\n")
    else:
        sys.stderr.write(f"warning: no stored true-up for {month}: the Bill vs chargeback page will be empty; run "
                         f"`metering bill import` and `metering true-up --month {month}`, then export again\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    export = commands.add_parser("export", help="export usage in standard formats")
    formats = export.add_subparsers(dest="export_command", required=True, metavar="FORMAT")
    parser = formats.add_parser("focus", help="FinOps FOCUS 1.2 cost and usage rows (.csv or .parquet)")
    parser.add_argument("--month", metavar="YYYY-MM", required=True, help="the billing period: one calendar month (UTC)")
    parser.add_argument("--output", metavar="FILE", required=True, help="FILE.csv or FILE.parquet")
    parser.add_argument("--ptu-costs", metavar="FILE", help="also export allocated PTU capacity cost (same CSV as report)")
    parser.add_argument("--billing-account-id", default="aoai-metering", help="BillingAccountId (default: aoai-metering)")
    parser.add_argument("--billing-account-name", default="Azure OpenAI via API Management", help="BillingAccountName")
    parser.add_argument("--provider-name", metavar="NAME",
                        help="ProviderName and InvoiceIssuerName: who issues the chargeback (default: the billing account name)")
    parser.add_argument("--true-up", action="store_true",
                        help="export the stored true-up (`metering true-up`): its PTU shares and one Adjustment row "
                        "per subscription, so that each subscription's BilledCost is its final charge")
    parser.set_defaults(handler=cmd_focus)
    parser = formats.add_parser("powerbi", help="the month as the Power BI project reads it: one Parquet file per table")
    parser.add_argument("--month", metavar="YYYY-MM", required=True, help="the month of the facts (UTC)")
    parser.add_argument("--output", metavar="DIR", required=True,
                        help="the folder to write (created if absent); the project's ParquetFolder parameter")
    parser.set_defaults(handler=cmd_powerbi)
