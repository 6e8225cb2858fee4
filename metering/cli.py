"""``metering``: the command line (DESIGN.md "CLI contract").

Database: ``--db URL`` or ``METERING_DATABASE_URL``, default ``sqlite:///metering.db``.
Exit status: 0 on success, 2 for bad input (a clear message on stderr), 1 for other failures.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from db import queries, store
from db.engine import database_url, make_engine, safe_url
from db.migrate import head_revision, upgrade
from db.reprice import DEFAULT_BATCH_SIZE as REPRICE_BATCH_SIZE
from db.reprice import reprice as reprice_rows
from metering import quarantine_cli
from metering.ingest import IngestTotals, Ingestor
from metering.mappings import parse_deployments_csv, parse_subscriptions_csv
from metering.rates import RateCardError, find_overlaps, merge_for_import, parse_rate_files, supersede
from metering.retail_fetch import FetchError, combined_page, dumps_page, fetch_pages, retail_prices_url
from metering.retail_prices import RetailImport, map_retail_items
from metering import focus
from metering.ptu import PtuCost, PtuCostError, parse_ptu_costs_csv
from metering.report import (
    BINARY_FORMATS, DEFAULT_DIMENSIONS, FORMATS, MixedCurrencyError, Period, build_report, export_focus, money, render,
)
from metering.sources import SourceError, batched, discover, read_events

DEFAULT_BATCH_SIZE = 500


class UsageError(Exception):
    """Bad input from the user: printed as a one-line message, exit status 2."""


class FetchFailed(Exception):
    """A download that failed for reasons outside the user's input (no internet): exit status 1."""

# --------------------------------------------------------------------------- helpers


def _engine(args: argparse.Namespace) -> Engine:
    """The engine for ``--db`` / ``METERING_DATABASE_URL``; a URL that cannot be used is bad input
    (the message never repeats the URL, which may carry a password)."""
    try:
        return make_engine(database_url(args.db))
    except sa.exc.NoSuchModuleError as exc:  # a dialect or driver SQLAlchemy does not know
        raise UsageError(f"--db / METERING_DATABASE_URL: not a usable database URL ({exc}); "
                         "expected e.g. sqlite:///metering.db or postgresql+psycopg://user@host/db") from None
    except sa.exc.ArgumentError:
        raise UsageError("--db / METERING_DATABASE_URL: not a database URL; expected e.g. sqlite:///metering.db, "
                         "postgresql+psycopg://user@host/db or mssql+pyodbc://@server/db?driver=...") from None
    except ImportError as exc:  # a known dialect whose driver package is not installed
        extra = {"pyodbc": "mssql", "psycopg": "postgres"}.get(exc.name or "")
        hint = f": pip install 'aoai-metering[{extra}]'" if extra else ""
        raise UsageError(f"--db / METERING_DATABASE_URL: the database URL's driver is not installed ({exc.name or exc})"
                         f"{hint}") from None


def _require_schema(engine: Engine) -> None:
    """Fail with a helpful message when the database has not been migrated yet."""
    if not sa.inspect(engine).has_table("usage_records"):
        raise UsageError(f"database {safe_url(engine.url)} has no metering tables: run `metering db upgrade` first")


def _read_text(path: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None


def _write_file(path: str, content: str | bytes) -> None:
    """Write an output file; a path that cannot be written is bad input, not a traceback."""
    try:
        if isinstance(content, bytes):
            Path(path).write_bytes(content)
        else:
            Path(path).write_text(content, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from None


@contextlib.contextmanager
def _reports_extra(what: str) -> Iterator[None]:
    """XLSX and Parquet need the optional ``reports`` packages: say how to install them, no traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in ("openpyxl", "pyarrow"):
            raise
        raise UsageError(f"{what} needs {exc.name.split('.')[0]}, which is not installed: "
                         "pip install 'aoai-metering[reports]'") from None


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# --------------------------------------------------------------------------- commands


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    engine = _engine(args)
    upgrade(engine)
    _out(f"database {safe_url(engine.url)} is at revision {head_revision()}\n")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.batch_size <= 0:
        raise UsageError("--batch-size must be a positive number of events")
    engine = _engine(args)
    _require_schema(engine)
    try:
        files = discover(args.paths)
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    if not files:
        raise UsageError("no capture files found (.jsonl, .jsonl.gz, .avro) under " + ", ".join(args.paths))
    ingestor = Ingestor(engine, settings=quarantine_cli.pipeline_settings(args))
    totals = IngestTotals()
    total_bytes = sum(f.stat().st_size for f in files)
    show = None if args.progress == "auto" else args.progress == "on"
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="replay", disable=not show if show is not None else None,
              file=sys.stderr, leave=False) as bar:
        try:
            for batch in batched(read_events(files, bar.update), args.batch_size):
                totals.add(ingestor.ingest(batch))
                bar.set_postfix(events=totals.read, inserted=totals.inserted, refresh=False)
        except SourceError as exc:  # a damaged file: what came before it is stored, and replay is idempotent
            raise UsageError(f"{exc}\nstopped there; before it: {totals.summary()}") from None
    _out(f"replayed {len(files)} file(s): {totals.summary()}\n")
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    """Standalone Event Hubs consumer (metering/consume.py, docs/consumer.md); SDKs imported lazily."""
    from metering import consume

    engine = _engine(args)
    _require_schema(engine)
    engine.dispose()
    try:
        return consume.command(args, database_url(args.db))
    except (consume.ConsumerUnavailable, consume.ConsumerConfigError) as exc:
        raise UsageError(str(exc)) from None


UNMAPPED_SHOWN_PER_REASON = 25


def _read_rate_files(args: argparse.Namespace) -> tuple[RetailImport, list[str]]:
    """The FILE(s) (rates CSVs and saved Retail Prices JSON pages, told apart by content), or the live API."""
    if args.fetch and args.files:
        raise UsageError("rates import: give FILE(s) or --fetch, not both")
    if not args.fetch and not args.files:
        raise UsageError("rates import: give a rates CSV or saved Azure Retail Prices JSON, or --fetch")
    if (args.region or args.save) and not args.fetch:
        raise UsageError("--region and --save go with --fetch")
    if args.fetch:
        url = retail_prices_url(args.region)
        try:
            page = combined_page(fetch_pages(url), url)
        except FetchError as exc:
            raise FetchFailed(str(exc)) from None
        if args.save:
            _write_file(args.save, dumps_page(page))
        return map_retail_items(page["Items"]), [f"prices.azure.com ({args.region or 'all regions'})"]
    try:
        return parse_rate_files([(path, _read_text(path)) for path in args.files]), list(args.files)
    except RateCardError as exc:
        raise UsageError(f"rates not imported:\n{exc}") from None


def _unmapped_lines(result: RetailImport) -> list[str]:
    """Meters that did not become rates, grouped by reason (never guessed, always shown)."""
    by_reason: dict[str, set[str]] = {}
    for meter in result.unmapped:
        by_reason.setdefault(meter.reason, set()).add(meter.meter_name)
    if not by_reason:
        return []
    total = sum(len(names) for names in by_reason.values())
    lines = [f"{total:,} meter(s) not mapped (never guessed; price them in a rates CSV if you need them):"]
    for reason in sorted(by_reason, key=lambda r: (-len(by_reason[r]), r)):
        names = sorted(by_reason[reason], key=str.lower)
        lines.append(f"  {reason} ({len(names):,}):")
        lines.extend(f"    {name}" for name in names[:UNMAPPED_SHOWN_PER_REASON])
        if len(names) > UNMAPPED_SHOWN_PER_REASON:
            lines.append(f"    … and {len(names) - UNMAPPED_SHOWN_PER_REASON:,} more")
    return lines


def cmd_rates_import(args: argparse.Namespace) -> int:
    result, sources = _read_rate_files(args)
    incoming = result.rates
    report = _unmapped_lines(result) + [f"note: {note}" for note in result.notes]
    if not incoming:
        raise UsageError("\n".join([f"rates not imported: no rate could be read from {', '.join(sources)}", *report]))
    engine = _engine(args)
    _require_schema(engine)
    with engine.begin() as conn:
        stored = store.stored_rates(conn)
        closed = supersede(stored, incoming) if args.supersede else []
        overlaps = find_overlaps(merge_for_import(stored, closed + incoming))
        if overlaps:
            if find_overlaps(incoming):  # the files disagree among themselves: --supersede cannot help
                hint = ("\n(these come from the imported file(s) themselves: keep one rate per period, ending the earlier "
                        "with effective_to, or import the files one at a time with --supersede)")
            elif not args.supersede:
                hint = "\n(use --supersede to end open-ended stored rates where a new one starts)"
            else:
                hint = ("\n(--supersede only ends a stored open-ended rate that starts before the imported one; "
                        "a stored rate that starts later must be ended or replaced by a rates CSV)")
            raise UsageError("rates not imported:\n" + "\n".join(overlaps) + hint)
        added, replaced = store.replace_rates(conn, closed + incoming)
    read_from = f" ({result.items_read:,} price-list item(s), {result.meters_used:,} used)" if result.kind == "retail" else ""
    ended = f", {len(closed)} stored rate(s) ended" if closed else ""
    _out(f"imported {len(incoming)} rate(s) from {', '.join(sources)}{read_from}: "
         f"{added} added, {replaced - len(closed)} replaced{ended}\n")
    if report:
        _out("\n".join(report) + "\n")
    return 0


def cmd_rates_list(args: argparse.Namespace) -> int:
    engine = _engine(args)
    _require_schema(engine)
    with engine.connect() as conn:
        card = store.stored_rates(conn)
        missing = queries.data_models_without_rate(conn)
    mw = max([28, *(len(rate.model) for rate in card)])  # long region and fine-tuned model names keep the columns aligned
    rw = max([12, *(len(rate.region or "") for rate in card)])
    header = (f"{'model':<{mw}} {'type':<15} {'region':<{rw}} {'from':<10} {'to':<10} {'cur':<3} {'input/1M':>10} "
              f"{'cached/1M':>10} {'output/1M':>10} {'prompt >=':>10}")
    lines = [header, "-" * len(header)]
    for rate in sorted(card, key=lambda r: (r.model, r.deployment_type, r.region or "", r.min_prompt_tokens or 0, r.effective_from)):
        lines.append(
            f"{rate.model:<{mw}} {rate.deployment_type:<15} {rate.region or '*':<{rw}} "
            f"{rate.effective_from.date().isoformat():<10} {rate.effective_to.date().isoformat() if rate.effective_to else '':<10} "
            f"{rate.currency:<3} {rate.input_per_1m:>10} {'' if rate.cached_input_per_1m is None else rate.cached_input_per_1m:>10} "
            f"{rate.output_per_1m:>10} {'' if rate.min_prompt_tokens is None else f'{rate.min_prompt_tokens:,}':>10}"
        )
    lines.append(f"{len(card)} rate(s)")
    if missing:
        lines.append("")
        lines.append("models in the data with no rate (their requests are stored as no_rate, never at $0):")
        for row in missing:
            lines.append(f"  {row['model']:<28} {row['deployment_type']:<15} {row['requests']:>8,} requests {row['tokens']:>12,} tokens")
    _out("\n".join(lines) + "\n")
    return 0


def _import_mappings(args: argparse.Namespace, parse: Callable[..., list[Any]],
                     replace: Callable[[sa.Connection, list[Any]], int], noun: str) -> int:
    """Parse a mapping CSV (every problem reported), then upsert it in one transaction."""
    text = _read_text(args.file)
    try:
        rows = parse(text, source=args.file)
    except RateCardError as exc:
        raise UsageError(f"{noun}s not imported:\n{exc}") from None
    engine = _engine(args)
    _require_schema(engine)
    with engine.begin() as conn:
        count = replace(conn, rows)
    _out(f"imported {count} {noun} mapping(s) from {args.file}\n")
    return 0


def cmd_deployments_import(args: argparse.Namespace) -> int:
    return _import_mappings(args, parse_deployments_csv, store.replace_deployments, "deployment")


def cmd_subscriptions_import(args: argparse.Namespace) -> int:
    return _import_mappings(args, parse_subscriptions_csv, store.replace_subscriptions, "subscription")


def cmd_reprice(args: argparse.Namespace) -> int:
    """Reprice stored rows with the current card and mappings; only rows whose price changes are written."""
    try:
        period = Period.between(args.since, args.until)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.batch_size <= 0:
        raise UsageError("--batch-size must be a positive number of rows")
    engine = _engine(args)
    _require_schema(engine)
    summary = reprice_rows(engine, period.since, period.until, batch_size=args.batch_size, dry_run=args.dry_run)
    verb = "would reprice (dry run, nothing written)" if args.dry_run else "repriced"
    _out(f"{verb} usage records {period.label}: " + "\n".join(summary.lines()) + "\n")
    return 0


def _period(args: argparse.Namespace) -> Period:
    try:
        if args.month:
            if args.since or args.until:
                raise UsageError("use either --month or --since/--until, not both")
            return Period.month(args.month)
        return Period.between(args.since, args.until)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _format_from_output(output: str | None) -> str:
    """Without --format, the --output file's extension picks the format (report.csv → csv), else table."""
    suffix = Path(output).suffix.lower().lstrip(".") if output else ""
    suffix = "html" if suffix == "htm" else suffix
    return suffix if suffix in FORMATS and suffix != "table" else "table"


def cmd_report(args: argparse.Namespace) -> int:
    period = _period(args)
    dimensions = tuple(d.strip() for d in args.by.split(",") if d.strip()) if args.by else DEFAULT_DIMENSIONS
    unknown = [d for d in dimensions if d not in queries.DIMENSIONS]
    if unknown:
        raise UsageError(f"--by: unknown dimension(s) {', '.join(unknown)}; choose from {', '.join(queries.DIMENSIONS)}")
    fmt = args.format or _format_from_output(args.output)
    if fmt in BINARY_FORMATS and not args.output:
        raise UsageError(f"--format {fmt} writes a binary file: give --output FILE")
    ptu_costs = _ptu_costs(args.ptu_costs) if args.ptu_costs else None
    engine = _engine(args)
    _require_schema(engine)
    with engine.connect() as conn:
        try:
            report = build_report(conn, period, dimensions, ptu_costs, charts=fmt == "html")
        except MixedCurrencyError as exc:
            raise UsageError(f"report not written: {exc}") from None
    with _reports_extra(f"--format {fmt}"):
        content = render(report, fmt)
    if args.output:
        _write_file(args.output, content)
        _out(f"wrote {len(report.frame)} row(s) to {args.output}\n")
    else:
        _out(content if isinstance(content, str) else content.decode())
    return 0


def _ptu_costs(path: str) -> list[PtuCost]:
    try:
        return parse_ptu_costs_csv(_read_text(path), source=path)
    except PtuCostError as exc:
        raise UsageError(f"--ptu-costs not usable:\n{exc}") from None


def cmd_export_focus(args: argparse.Namespace) -> int:
    period = _period(argparse.Namespace(month=args.month, since=None, until=None))
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UsageError(f"--output {args.output}: the file name must end in .csv or .parquet")
    if not args.billing_account_id.strip():  # FOCUS: BillingAccountId must not be null
        raise UsageError("--billing-account-id must not be empty (FOCUS requires a BillingAccountId on every row)")
    ptu_costs = _ptu_costs(args.ptu_costs) if args.ptu_costs else None
    engine = _engine(args)
    _require_schema(engine)
    with engine.connect() as conn:
        records = export_focus(conn, period, args.billing_account_id, args.billing_account_name, ptu_costs)
    with _reports_extra("a .parquet --output"):
        content = focus.to_csv(records) if suffix == ".csv" else focus.to_parquet(records)
    _write_file(args.output, content)
    _out(f"wrote {len(records)} FOCUS {focus.FOCUS_VERSION} row(s) to {args.output}: "
         f"BilledCost {money(focus.billed_total(records))}\n")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metering",
        description="Usage metering and chargeback for Azure OpenAI behind Azure API Management.",
    )
    parser.add_argument("--db", metavar="URL", help="database URL (default: $METERING_DATABASE_URL or sqlite:///metering.db)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db_parser = commands.add_parser("db", help="database schema")
    db_commands = db_parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="create or migrate the tables and views").set_defaults(handler=cmd_db_upgrade)

    replay = commands.add_parser("replay", help="ingest captured events (.jsonl, .jsonl.gz, Event Hubs Capture .avro, folders); idempotent")
    replay.add_argument("paths", nargs="+", metavar="PATH",
                        help="capture files (.jsonl, .jsonl.gz, .avro) or folders of them, e.g. samples/events")
    replay.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"events per transaction (default {DEFAULT_BATCH_SIZE})")
    replay.add_argument("--progress", choices=("auto", "on", "off"), default="auto", help="progress bar on stderr (auto: when a terminal)")
    replay.add_argument("--signing-secret-file", metavar="FILE", help="verify event signatures with this HMAC key (default: $METERING_SIGNING_SECRET)")
    replay.set_defaults(handler=cmd_replay)

    consume_parser = commands.add_parser(
        "consume", help="read the event hub continuously with checkpoints in Blob Storage (containers; see docs/consumer.md)")
    from metering.consume import add_arguments as add_consume_arguments

    add_consume_arguments(consume_parser)
    consume_parser.set_defaults(handler=cmd_consume)

    rates = commands.add_parser("rates", help="the rate card")
    rate_commands = rates.add_subparsers(dest="rates_command", required=True, metavar="ACTION")
    rates_import = rate_commands.add_parser(
        "import", help="import a rates CSV or saved Azure Retail Prices API pages (JSON), or --fetch them")
    rates_import.add_argument("files", nargs="*", metavar="FILE",
                              help="rates CSV(s) and/or saved Retail Prices JSON page(s), told apart by content")
    rates_import.add_argument("--fetch", action="store_true",
                              help="download the Azure OpenAI meters from prices.azure.com (needs internet)")
    rates_import.add_argument("--region", metavar="ARM_REGION",
                              help="with --fetch: one region's prices, e.g. swedencentral (default: all regions, slow)")
    rates_import.add_argument("--save", metavar="FILE", help="with --fetch: also save the downloaded price list as JSON")
    rates_import.add_argument("--supersede", action="store_true",
                              help="end open-ended stored rates where an imported rate of the same key starts")
    rates_import.set_defaults(handler=cmd_rates_import)
    rate_commands.add_parser("list", help="show the card and the models in the data without a rate").set_defaults(handler=cmd_rates_list)

    deployments = commands.add_parser("deployments", help="deployment → model and deployment type")
    deployment_commands = deployments.add_subparsers(dest="deployments_command", required=True, metavar="ACTION")
    deployments_import = deployment_commands.add_parser("import", help="import a CSV: backend_id,deployment,model,deployment_type")
    deployments_import.add_argument("file", metavar="FILE", help="CSV with header backend_id,deployment,model,deployment_type")
    deployments_import.set_defaults(handler=cmd_deployments_import)

    subscriptions = commands.add_parser("subscriptions", help="APIM subscription → business unit")
    subscription_commands = subscriptions.add_subparsers(dest="subscriptions_command", required=True, metavar="ACTION")
    subscriptions_import = subscription_commands.add_parser("import", help="import a CSV: subscription_id,business_unit,cost_center,owner")
    subscriptions_import.add_argument("file", metavar="FILE", help="CSV with header subscription_id,business_unit,cost_center,owner")
    subscriptions_import.set_defaults(handler=cmd_subscriptions_import)

    reprice_parser = commands.add_parser(
        "reprice", help="recompute stored rows' costs after the rate card or deployments changed; idempotent")
    reprice_parser.add_argument("--since", metavar="DATE", help="first day (inclusive)")
    reprice_parser.add_argument("--until", metavar="DATE", help="last day (inclusive)")
    reprice_parser.add_argument("--batch-size", type=int, default=REPRICE_BATCH_SIZE,
                                help=f"rows per transaction (default {REPRICE_BATCH_SIZE:,})")
    reprice_parser.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    reprice_parser.set_defaults(handler=cmd_reprice)

    report = commands.add_parser("report", help="chargeback report for a period")
    report.add_argument("--month", metavar="YYYY-MM", help="one calendar month (UTC); or --since/--until; default: all time")
    report.add_argument("--since", metavar="DATE", help="first day (inclusive)")
    report.add_argument("--until", metavar="DATE", help="last day (inclusive)")
    report.add_argument("--by", metavar="DIM,...", help=f"group by (default {','.join(DEFAULT_DIMENSIONS)}); any of {','.join(queries.DIMENSIONS)}")
    report.add_argument("--format", choices=FORMATS, help="table, csv, json, xlsx, parquet, html (xlsx and parquet need --output); "
                        "default: the --output file's extension, else table")
    report.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    report.add_argument("--ptu-costs", metavar="FILE", help="CSV deployment,backend_id,month,monthly_cost,currency: allocate PTU capacity cost by tokens")
    report.set_defaults(handler=cmd_report)

    export = commands.add_parser("export", help="export usage in standard formats")
    export_commands = export.add_subparsers(dest="export_command", required=True, metavar="FORMAT")
    export_focus_parser = export_commands.add_parser("focus", help="FinOps FOCUS 1.2 cost and usage rows (.csv or .parquet)")
    export_focus_parser.add_argument("--month", metavar="YYYY-MM", required=True, help="the billing period: one calendar month (UTC)")
    export_focus_parser.add_argument("--output", metavar="FILE", required=True, help="FILE.csv or FILE.parquet")
    export_focus_parser.add_argument("--ptu-costs", metavar="FILE", help="also export allocated PTU capacity cost (same CSV as report)")
    export_focus_parser.add_argument("--billing-account-id", default="aoai-metering", help="BillingAccountId (default: aoai-metering)")
    export_focus_parser.add_argument("--billing-account-name", default="Azure OpenAI via API Management", help="BillingAccountName")
    export_focus_parser.set_defaults(handler=cmd_export_focus)

    quarantine_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return 2
    except FetchFailed as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return 1
    except sa.exc.OperationalError as exc:
        print(f"metering: database error: {exc.orig}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
