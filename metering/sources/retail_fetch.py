"""Download the Azure Retail Prices API's Azure OpenAI meters (``metering rates import --fetch``).

The only network code of the rate card: it follows ``NextPageLink`` and returns the pages as the
API sent them (prices as exact decimals), for ``metering.retail_prices`` to map. Tests hand it a
fake ``opener`` that serves saved pages; nothing here is needed on a machine without internet.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from typing import Any

RETAIL_PRICES_URL = "https://prices.azure.com/api/retail/prices"
API_VERSION = "2023-01-01-preview"
SERVICE_NAME = "Foundry Models"  # Azure OpenAI meters moved here from "Cognitive Services" in 2025
MAX_PAGES = 500  # a region has a few thousand Foundry meters at 1,000 per page; stop a runaway loop
TIMEOUT_SECONDS = 60

Opener = Callable[..., Any]


class FetchError(Exception):
    """The price list could not be downloaded (no internet, HTTP error, not JSON)."""


def retail_prices_url(region: str | None = None, service: str = SERVICE_NAME) -> str:
    """The first page's URL: pay-as-you-go meters of the service, in one region when given."""
    terms = [f"serviceName eq '{service}'", "type eq 'Consumption'"]
    if region:
        terms.append(f"armRegionName eq '{region.strip().lower().replace(' ', '')}'")
    query = urllib.parse.urlencode({"api-version": API_VERSION, "$filter": " and ".join(terms)},
                                   quote_via=urllib.parse.quote)
    return f"{RETAIL_PRICES_URL}?{query}"


def fetch_pages(url: str, opener: Opener | None = None, max_pages: int = MAX_PAGES) -> list[dict[str, Any]]:
    """Every page from ``url`` on, following ``NextPageLink``; raises ``FetchError`` with a clear message.
    ``opener`` defaults to ``urllib.request.urlopen`` (looked up at call time)."""
    opener = opener or urllib.request.urlopen
    pages: list[dict[str, Any]] = []
    seen: set[str] = set()
    next_url: str | None = url
    while next_url:
        if next_url in seen or len(pages) >= max_pages:
            raise FetchError(f"the price list did not end after {len(pages)} page(s) (NextPageLink loops)")
        seen.add(next_url)
        try:
            with opener(next_url, timeout=TIMEOUT_SECONDS) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise FetchError(f"prices.azure.com answered HTTP {exc.code} for {next_url}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(
                f"cannot reach prices.azure.com ({reason}): --fetch needs internet access. On a machine "
                "without it, save the API's pages elsewhere and run `metering rates import FILE...`"
            ) from None
        try:
            page = json.loads(body, parse_float=Decimal)
        except ValueError:
            raise FetchError(f"prices.azure.com sent something that is not JSON for {next_url}") from None
        if not isinstance(page, dict) or not isinstance(page.get("Items"), list):
            raise FetchError(f"prices.azure.com sent a page without an Items list for {next_url}")
        pages.append(page)
        next_url = page.get("NextPageLink") or None
    return pages


def combined_page(pages: list[dict[str, Any]], source_url: str) -> dict[str, Any]:
    """All pages as one saved page (``NextPageLink`` null), for ``--save`` and for the mapper."""
    currencies = {page.get("BillingCurrency") for page in pages if page.get("BillingCurrency")}
    return {
        "BillingCurrency": currencies.pop() if len(currencies) == 1 else None,
        "Items": [item for page in pages for item in page["Items"]],
        "NextPageLink": None,
        "Count": sum(len(page["Items"]) for page in pages),
        "SourceUrl": source_url,
    }


def dumps_page(page: dict[str, Any]) -> str:
    """JSON text of a page. Prices go back out as JSON numbers, as the API sent them: a decimal of up
    to 15 significant digits survives the trip through a float and reads back as the same Decimal."""
    return json.dumps(page, indent=1, default=_number)


def _number(value: Any) -> float:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
