"""``metering rates import | list``: the effective-dated rate card, from rates CSVs or Azure Retail
Prices pages (saved, or ``--fetch``ed), and what the data has that the card cannot price."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from metering.cli.common import FetchFailed, UsageError, migrated_engine, out, read_text, refused, write_file

if TYPE_CHECKING:
    from metering.price.retail_prices import RetailImport

UNMAPPED_SHOWN_PER_REASON = 25
CHANGES_SHOWN = 50


def _read_rate_files(args: argparse.Namespace) -> tuple[RetailImport, list[str]]:
    """The FILE(s) (rates CSVs and saved Retail Prices JSON pages, told apart by content), or the live API."""
    from metering.price.card_files import parse_rate_files
    from metering.price.rate_card import RateCardError
    from metering.price.retail_prices import map_retail_items
    from metering.sources.retail_fetch import FetchError, combined_page, dumps_page, fetch_pages, retail_prices_url

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
            write_file(args.save, dumps_page(page))
        return map_retail_items(page["Items"]), [f"prices.azure.com ({args.region or 'all regions'})"]
    try:
        return parse_rate_files([(path, read_text(path)) for path in args.files]), list(args.files)
    except RateCardError as exc:
        raise refused("rates not imported", exc) from None


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


def cmd_import(args: argparse.Namespace) -> int:
    from db import rate_card as rate_card_store
    from metering.price.rate_card import find_overlaps, merge_for_import, rate_changes, supersede

    result, sources = _read_rate_files(args)
    incoming = result.rates
    report = _unmapped_lines(result) + [f"note: {note}" for note in result.notes]
    if not incoming:
        raise UsageError("\n".join([f"rates not imported: no rate could be read from {', '.join(sources)}", *report]))
    engine = migrated_engine(args)
    with engine.begin() as conn:
        stored = rate_card_store.stored_rates(conn)
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
        changes = rate_changes(stored, incoming)
        added, replaced = rate_card_store.replace_rates(conn, closed + incoming)
    read_from = f" ({result.items_read:,} price-list item(s), {result.meters_used:,} used)" if result.kind == "retail" else ""
    ended = f", {len(closed)} stored rate(s) ended" if closed else ""
    unchanged = replaced - len(closed) - len(changes)
    same = f" ({len(changes)} changed, {unchanged} unchanged)" if replaced - len(closed) else ""
    out(f"imported {len(incoming)} rate(s) from {', '.join(sources)}{read_from}: "
        f"{added} added, {replaced - len(closed)} replaced{same}{ended}\n")
    if changes:
        shown = changes[:CHANGES_SHOWN]
        more = [f"  … and {len(changes) - CHANGES_SHOWN:,} more"] if len(changes) > CHANGES_SHOWN else []
        out("\n".join(["changed rates (per 1M tokens):", *(f"  {line}" for line in shown), *more,
                       "stored rows keep their old cost until `metering reprice` applies the card to them"]) + "\n")
    if report:
        out("\n".join(report) + "\n")
    return 0


def _card_drift(conn: Any, card: Any) -> list[dict[str, Any]]:
    """The bill's effective unit prices that differ from the card (none without an imported bill)."""
    from datetime import date

    import sqlalchemy as sa

    from db.bill import load_backends, load_bill_lines
    from metering.finance.reconcile.compare import card_drift_from_bill
    from metering.price.pricing import RateCard

    if not sa.inspect(conn).has_table("bill_lines"):
        return []
    lines = load_bill_lines(conn, date(1900, 1, 1), date(9999, 12, 31))
    regions = {b.resource_id: b.region for b in load_backends(conn).values()}
    return card_drift_from_bill(lines, RateCard(rates=list(card)), regions)


def cmd_list(args: argparse.Namespace) -> int:
    from db import queries
    from db import rate_card as rate_card_store
    from metering.price.rate_card import KIND_RATE_COLUMNS, UNIT_RATE_COLUMNS
    from metering.safe_text import terminal_line

    engine = migrated_engine(args)
    with engine.connect() as conn:
        card = rate_card_store.stored_rates(conn)
        missing = queries.data_models_without_rate(conn)
        fallbacks = queries.data_fallback_pricing(conn)
        drift = _card_drift(conn, card)
    mw = max([28, *(len(rate.model) for rate in card)])  # long region and fine-tuned model names keep the columns aligned
    rw = max([12, *(len(rate.region or "") for rate in card)])
    header = (f"{'model':<{mw}} {'type':<15} {'region':<{rw}} {'from':<10} {'to':<10} {'cur':<3} {'input/1M':>10} "
              f"{'cached/1M':>10} {'output/1M':>10} {'prompt >=':>10} {'tier':<8} other prices (per 1M tokens unless named)")
    lines = [header, "-" * len(header)]
    for rate in sorted(card, key=lambda r: (r.model, r.deployment_type, r.region or "", r.service_tier or "",
                                            r.min_prompt_tokens or 0, r.effective_from)):
        others = " ".join([f"{column.removesuffix('_per_1m')}={getattr(rate, column)}"
                           for column in KIND_RATE_COLUMNS if getattr(rate, column) is not None]
                          + [f"{column}={getattr(rate, column)}"  # units beyond tokens: the column names the unit
                             for column in UNIT_RATE_COLUMNS if getattr(rate, column) is not None])
        lines.append((
            f"{rate.model:<{mw}} {rate.deployment_type:<15} {rate.region or '*':<{rw}} "
            f"{rate.effective_from.date().isoformat():<10} {rate.effective_to.date().isoformat() if rate.effective_to else '':<10} "
            f"{rate.currency:<3} {rate.input_per_1m:>10} {'' if rate.cached_input_per_1m is None else rate.cached_input_per_1m:>10} "
            f"{rate.output_per_1m:>10} {'' if rate.min_prompt_tokens is None else f'{rate.min_prompt_tokens:,}':>10} "
            f"{rate.service_tier or '':<8} {others}"
        ).rstrip())
    lines.append(f"{len(card)} rate(s)")
    if missing:
        lines.append("")
        lines.append("models in the data with no rate (their requests are stored as no_rate, never at $0):")
        for row in missing:
            lines.append(f"  {terminal_line(str(row['model'])):<28} {row['deployment_type']:<15} {row['requests']:>8,} requests {row['tokens']:>12,} tokens")
    if fallbacks:
        lines.append("")
        lines.append("warning: token kinds in the data that the card cannot price (priced by the fallback: cache writes,"
                     " audio and image at the text rates, a tier without its row at the default tier; add the"
                     " *_per_1m or service_tier rows and run `metering reprice`):")
        for row in fallbacks:
            lines.append(f"  {terminal_line(str(row['model'])):<28} {row['deployment_type']:<15} {row['kinds']:<28} "
                         f"{row['requests']:>8,} requests {row['tokens']:>12,} tokens")
    if drift:
        from metering.finance.reconcile.compare import per_1m

        lines.append("")
        lines.append("card drift: the imported Azure bill's unit price differs from the card (check these rows):")
        for row in drift:
            card_price = f"card {per_1m(row['card_per_1m'])}/1M" if row["card_per_1m"] is not None else "no card row"
            tier = f" ({row['service_tier']} tier)" if row["service_tier"] else ""
            lines.append(f"  {row['month']}  {terminal_line(str(row['model'])):<28} {row['kind']:<12} {row['deployment_type']:<15} "
                         f"billed {per_1m(row['billed_per_1m'])}/1M, {card_price} ({row['tokens']:,} tokens){tier}")
    out("\n".join(lines) + "\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rates = commands.add_parser("rates", help="the rate card")
    actions = rates.add_subparsers(dest="rates_command", required=True, metavar="ACTION")
    rates_import = actions.add_parser(
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
    rates_import.set_defaults(handler=cmd_import)
    actions.add_parser("list", help="show the card and the models in the data without a rate").set_defaults(handler=cmd_list)
