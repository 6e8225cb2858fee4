"""The files given to ``metering rates import``: rates CSVs and saved Azure Retail Prices API pages
(JSON), told apart by content → one ``RetailImport`` (rates plus what could not be mapped)."""

from __future__ import annotations

from collections.abc import Sequence

from metering.price.rate_card import RateCardError, check_price_bounds, parse_rates_csv
from metering.price.retail_prices import RetailImport, parse_retail_pages


def looks_like_json(text: str) -> bool:
    """Saved Azure Retail Prices API pages are JSON; a rates CSV starts with its header."""
    return text.lstrip("\ufeff \t\r\n")[:1] in ("{", "[")


def parse_rate_files(files: Sequence[tuple[str, str]]) -> RetailImport:
    """Rates CSVs and saved Azure Retail Prices API pages (told apart by content), as ``(source,
    text)`` pairs → the rates of all of them and a report. All JSON pages are mapped together,
    because the API splits one model's meters across pages.

    Raises ``RateCardError`` listing every file problem; price-list meters that cannot be mapped are
    *reported* in the result (``unmapped``), never guessed.
    """
    problems: list[str] = []
    result = RetailImport(rates=[], kind="csv")
    pages = [(source, text) for source, text in files if looks_like_json(text)]
    for source, text in files:
        if looks_like_json(text):
            continue
        try:
            result.rates.extend(parse_rates_csv(text, source=source))
        except RateCardError as exc:
            problems.extend(exc.problems)
    if pages:
        try:
            retail = parse_retail_pages(pages)
        except RateCardError as exc:
            problems.extend(exc.problems)
        else:
            for rate in retail.rates:
                problems.extend(check_price_bounds(rate, "price list"))
            result.rates.extend(retail.rates)
            result.unmapped, result.notes = retail.unmapped, retail.notes
            result.items_read, result.meters_used, result.kind = retail.items_read, retail.meters_used, "retail"
    if problems:
        raise RateCardError(problems)
    return result
