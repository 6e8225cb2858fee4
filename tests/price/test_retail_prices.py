"""Azure Retail Prices API pages → rate card: meter names, units, merging, reporting, fetching, CLI."""

from __future__ import annotations

import io
import json
import urllib.error
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from cli_runner import run
from db.engine import make_engine
from db.rate_card import stored_rates
from metering.price.rate_card import RateCardError, find_overlaps
from metering.sources.retail_fetch import FetchError, combined_page, dumps_page, fetch_pages, retail_prices_url
from metering.price.retail_prices import Meter, load_pages, map_retail_items, parse_meter, parse_retail_pages, per_million
from shared_folder import RETAIL_PRICES, needs, shared_path

# Saved Retail Prices pages, read from the shared folder (origins: tests/data/origins.csv); the tests
# reading them are marked SAVED_PAGES and skip without it.
SAVED_PAGES = needs(RETAIL_PRICES)
PRICES = shared_path(RETAIL_PRICES)
PAGE1 = PRICES / "retail_prices_eastus_page1.json"
PAGE2 = PRICES / "retail_prices_eastus_page2.json"
SWEDEN = PRICES / "retail_prices_swedencentral.json"
MEDIA = PRICES / "retail_prices_media_kinds.json"  # real audio, image and cache-write items
UTC = timezone.utc


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def pages(*paths: Path):
    return parse_retail_pages([(p.name, p.read_text()) for p in paths])


def rates_by_key(result):
    return {(r.model, r.deployment_type, r.region, r.effective_from.date().isoformat()): r for r in result.rates}


def prices(rate):
    return (rate.input_per_1m, rate.cached_input_per_1m, rate.output_per_1m)


# --------------------------------------------------------------------------- meter names (as Azure spells them)

MAPPED = [
    # (meterName, productName, model, kind, deployment type)
    ("gpt-4o-0806-Inp-glbl Tokens", "Azure OpenAI", "gpt-4o-2024-08-06", "input", "global"),
    ("gpt 4o 0806 Input global Tokens", "Azure OpenAI", "gpt-4o-2024-08-06", "input", "global"),
    ("gpt 4o 0806 cached Inp glbl Tokens", "Azure OpenAI", "gpt-4o-2024-08-06", "cached_input", "global"),
    ("gpt 4o 0806 Inp Data Zone Tokens", "Azure OpenAI", "gpt-4o-2024-08-06", "input", "datazone"),
    ("gpt 4o 0806 cached Inp Data Zone Tokens", "Azure OpenAI", "gpt-4o-2024-08-06", "cached_input", "datazone"),
    ("gpt-4o-0806-Outp-regnl Tokens", "Azure OpenAI", "gpt-4o-2024-08-06", "output", "regional"),
    ("gpt-4o-0806-Batch-Inp-glbl Tokens", "Azure OpenAI", "gpt-4o-2024-08-06", "input", "global-batch"),
    ("gpt 4o 0806 Batch Outp Data Zone Tokens", "Azure OpenAI", "gpt-4o-2024-08-06", "output", "datazone-batch"),
    ("gpt 4o 1120 cached Inp glbl Tokens", "Azure OpenAI", "gpt-4o-2024-11-20", "cached_input", "global"),
    ("gpt 4o 0513 Output regional Tokens", "Azure OpenAI", "gpt-4o-2024-05-13", "output", "regional"),
    ("gpt-4o-mini-0718-Inp-glbl Tokens", "Azure OpenAI", "gpt-4o-mini-2024-07-18", "input", "global"),
    ("GPT-4o-mini-0718-cached-Inp-DZone Tokens", "Azure OpenAI", "gpt-4o-mini-2024-07-18", "cached_input", "datazone"),
    ("gpt 4o mini0718 BatchOutp DataZone Tokens", "Azure OpenAI", "gpt-4o-mini-2024-07-18", "output", "datazone-batch"),
    ("gpt 4.1 Inp glbl Tokens", "Azure OpenAI", "gpt-4.1", "input", "global"),
    ("gpt 4.1 mini cached Inp glbl Tokens", "Azure OpenAI", "gpt-4.1-mini", "cached_input", "global"),
    ("gpt 4.1 nano Outp glbl 1M Tokens", "Azure OpenAI", "gpt-4.1-nano", "output", "global"),
    ("o3 0416 Inp glbl Tokens", "Azure OpenAI", "o3-2025-04-16", "input", "global"),
    ("o3 Inp glbl Tokens", "Azure OpenAI Reasoning", "o3", "input", "global"),
    ("o3 mini 0131 cached input regnl Tokens", "Azure OpenAI", "o3-mini-2025-01-31", "cached_input", "regional"),
    ("o4-mini 0416 Outp glbl Tokens", "Azure OpenAI Reasoning", "o4-mini-2025-04-16", "output", "global"),
    ("o1 mini Batch Inp Data Zone Tokens", "Azure OpenAI", "o1-mini", "input", "datazone-batch"),
    ("GPT 5 Inpt Glbl 1M Tokens", "Azure OpenAI GPT5", "gpt-5", "input", "global"),
    ("GPT 5 Mini Inpt DZone 1M Tokens", "Azure OpenAI GPT5", "gpt-5-mini", "input", "datazone"),
    ("5.1 cd inp Gl 1M Tokens", "Azure OpenAI GPT5", "gpt-5.1", "cached_input", "global"),
    ("5.4 mini Opt Gl 1M Tokens", "Azure OpenAI GPT5", "gpt-5.4-mini", "output", "global"),
    ("GPT 5.2 pro opt Gl 1M Tokens", "Azure OpenAI GPT5", "gpt-5.2-pro", "output", "global"),
    ("gpt-35-turbo4K-Inp-glbl Tokens", "Azure OpenAI", "gpt-35-turbo", "input", "global"),
    ("gpt-35-turbo-4k-Output-regional Tokens", "Azure OpenAI", "gpt-35-turbo", "output", "regional"),
    ("gpt-35-turbo16K-Batch-Outp-glbl Tokens", "Azure OpenAI", "gpt-35-turbo-16k", "output", "global-batch"),
    ("gpt-4-8K-Input-regional Tokens", "Azure OpenAI", "gpt-4", "input", "regional"),
    ("gpt-4-32K-Outp-glbl Tokens", "Azure OpenAI", "gpt-4-32k", "output", "global"),
    ("gpt-4-turbo128K Inp-glbl Tokens", "Azure OpenAI", "gpt-4-turbo", "input", "global"),
    ("gpt-4-Turbo-Batch-128K Outp-glbl Tokens", "Azure OpenAI", "gpt-4-turbo", "output", "global-batch"),
    ("gpt 4.5 0227 cached Inp DZone Tokens", "Azure OpenAI", "gpt-4.5-preview-2025-02-27", "cached_input", "datazone"),
    ("computer-use-inpt-datazone Tokens", "Azure OpenAI", "computer-use", "input", "datazone"),
    ("Az-Text-Embedding-3-Small Tokens", "Azure OpenAI", "text-embedding-3-small", "input", "regional"),
    ("text embedding 3 large DZ Tokens", "Azure OpenAI Embedding", "text-embedding-3-large", "input", "datazone"),
    ("Az-Embeddings-Ada Tokens", "Azure OpenAI", "text-embedding-ada-002", "input", "regional"),
    ("gpt-4-8K PTU Inp Gl Tokens", "Azure OpenAI", "gpt-4", "input", "provisioned"),
]


@pytest.mark.parametrize(("meter", "product", "model", "kind", "deployment_type"), MAPPED, ids=[m[0] for m in MAPPED])
def test_real_meter_names_are_read(meter, product, model, kind, deployment_type):
    parsed = parse_meter(meter, product)
    assert isinstance(parsed, Meter), parsed
    assert (parsed.model, parsed.kind, parsed.deployment_type) == (model, kind, deployment_type)


UNMAPPED = [
    ("5 pp inp Rgnl 1M Tokens", "Azure OpenAI GPT5", "priority processing meter for a regional"),
    ("GPT 5.1 inp Gl L 1M Tokens", "Azure OpenAI GPT5", "long-context"),
    ("gpt4o realtimePrvwTxtInp DataZone Tokens", "Azure OpenAI", "realtime"),
    # the first realtime preview's irregular names, and media shapes whose model is not known
    ("gpt4o realtime cached audio inp glbl Tokens", "Azure OpenAI", "shape this parser does not read"),
    ("gpt 4o tcrb d aud inp glbl Tokens", "Azure OpenAI", "shape this parser does not read"),
    ("gpt rt aud 0828 Inp glbl Tokens", "Azure OpenAI", "which model it prices is not known"),
    ("gpt aud 0828 txt Inp glbl Tokens", "Azure OpenAI", "which model it prices is not known"),
    ("gpt img 1 mini inp img glbl Tokens", "Azure OpenAI", "which model it prices is not known"),
    ("6.1-sol LongCo Cd Wr Std Gl 1M Tokens", "Azure OpenAI GPT6", "long-context"),
    ("56sol ShCo Cd Wr Fl Gl 1M Tokens", "Azure OpenAI GPT5", "flex"),
    ("Az-GPT35-Turbo-4K-Fine Tuned-Input Tokens", "Azure OpenAI", "fine-tuning"),
    ("4.1 ft training Dz", "Azure OpenAI", "fine-tuning"),
    ("gpt 4o 0999 Inp glbl Tokens", "Azure OpenAI", "version code 0999 of gpt-4o"),
    ("gpt-4o Inp Tokens", "Azure OpenAI", "no deployment type"),
    ("gpt-4o glbl Tokens", "Azure OpenAI", "no token kind"),
    ("gpt 4o cached Outp glbl Tokens", "Azure OpenAI", "cached output"),
    ("gpt-4o Inp regnl Batch Tokens", "Azure OpenAI", "batch meter for a regional"),
    ("gpt-4o Inp glbl regnl Tokens", "Azure OpenAI", "several deployment types"),
    ("file-search-tool-calls-glbl", "Azure OpenAI", "no token kind"),
    ("Inp glbl Tokens", "Azure OpenAI", "no model name"),
]


@pytest.mark.parametrize(("meter", "product", "reason"), UNMAPPED, ids=[m[0] for m in UNMAPPED])
def test_meters_that_cannot_be_read_with_certainty_are_reported_not_guessed(meter, product, reason):
    parsed = parse_meter(meter, product)
    assert isinstance(parsed, str) and reason in parsed


# Audio, image and cache-write meters as the price list spells them (docs/public-data.md says where
# each was seen): (meterName, productName, model, kind, deployment type, service tier)
MEDIA_METERS = [
    ("gpt-4o-aud-1217 Inp glbl Tokens", "Azure OpenAI", "gpt-4o-audio-preview-2024-12-17", "audio_input", "global", None),
    ("gpt-4o-aud-1217 Outp DZone Tokens", "Azure OpenAI", "gpt-4o-audio-preview-2024-12-17", "audio_output", "datazone", None),
    ("gpt-4o-aud-1217-txt Inp glbl Tokens", "Azure OpenAI", "gpt-4o-audio-preview-2024-12-17", "input", "global", None),
    ("gpt-4o-aud-0603-txt Outp regnl Tokens", "Azure OpenAI", "gpt-4o-audio-preview-2025-06-03", "output", "regional", None),
    ("gpt4omini-aud1217 Outp glbl Tokens", "Azure OpenAI", "gpt-4o-mini-audio-preview-2024-12-17", "audio_output", "global", None),
    ("gpt4omini-aud1217-txt Inp DZone Tokens", "Azure OpenAI", "gpt-4o-mini-audio-preview-2024-12-17", "input", "datazone", None),
    ("gpt-4o-rt-aud-1217 cchd Inp glbl Tokens", "Azure OpenAI", "gpt-4o-realtime-preview-2024-12-17", "cached_audio_input", "global", None),
    ("gpt-4o-rt-aud-0603 cchd Inp DZn Tokens", "Azure OpenAI", "gpt-4o-realtime-preview-2025-06-03", "cached_audio_input", "datazone", None),
    ("gpt-4o-rt-aud-1217 Outp regnl Tokens", "Azure OpenAI", "gpt-4o-realtime-preview-2024-12-17", "audio_output", "regional", None),
    ("gpt-4o-rt-txt-1217 cchd Inp glbl Tokens", "Azure OpenAI", "gpt-4o-realtime-preview-2024-12-17", "cached_input", "global", None),
    ("gpt4omini-rt-aud1217 Inp glbl Tokens", "Azure OpenAI", "gpt-4o-mini-realtime-preview-2024-12-17", "audio_input", "global", None),
    ("gpt4omini-rt-txt1217 Outp DZone Tokens", "Azure OpenAI", "gpt-4o-mini-realtime-preview-2024-12-17", "output", "datazone", None),
    ("gpt-4o-transcribe-aud-inp-glbl Tokens", "Azure OpenAI", "gpt-4o-transcribe", "audio_input", "global", None),
    ("gpt-4o-transcribe-txt-out-rgnl Tokens", "Azure OpenAI", "gpt-4o-transcribe", "output", "regional", None),
    ("gpt-4o-mini-transcribe-aud-inp-dz Tokens", "Azure OpenAI", "gpt-4o-mini-transcribe", "audio_input", "datazone", None),
    ("gpt-4o-mini-tts-aud-out-glbl Tokens", "Azure OpenAI", "gpt-4o-mini-tts", "audio_output", "global", None),
    ("gpt-4o-mini-tts-txt-inp-dz Tokens", "Azure OpenAI", "gpt-4o-mini-tts", "input", "datazone", None),
    ("gpt-image-1-inp-txt-glbl Tokens", "Azure OpenAI", "gpt-image-1", "input", "global", None),
    ("gpt-image-1-inp-img-dzone Tokens", "Azure OpenAI", "gpt-image-1", "image_input", "datazone", None),
    ("gpt-image-1-inp-cached-txt-rgnl Tokens", "Azure OpenAI", "gpt-image-1", "cached_input", "regional", None),
    ("gpt-image-1-inp-cached-img-glbl Tokens", "Azure OpenAI", "gpt-image-1", "cached_image_input", "global", None),
    ("gpt-image-1-output-img-glbl Tokens", "Azure OpenAI", "gpt-image-1", "image_output", "global", None),
    ("6.1-sol ShortCo Cd Wr Std Gl 1M Tokens", "Azure OpenAI GPT6", "gpt-6.1-sol", "cache_write", "global", None),
    ("6.1-sol ShortCo Cd Wr Std DZ 1M Tokens", "Azure OpenAI GPT6", "gpt-6.1-sol", "cache_write", "datazone", None),
    ("6.1-sol ShortCo Cd Inp Std Gl 1M Tokens", "Azure OpenAI GPT6", "gpt-6.1-sol", "cached_input", "global", None),
    ("5.6 sol ShortCo Cd Wr Std Gl 1M Tokens", "Azure OpenAI GPT5", "gpt-5.6-sol", "cache_write", "global", None),
    ("5.6 sol ShortCo Cd Wr PP Gl 1M Tokens", "Azure OpenAI GPT5", "gpt-5.6-sol", "cache_write", "global", "priority"),
]


@pytest.mark.parametrize(("meter", "product", "model", "kind", "deployment_type", "tier"), MEDIA_METERS,
                         ids=[m[0] for m in MEDIA_METERS])
def test_audio_image_and_cache_write_meters_are_read_into_their_token_kind(meter, product, model, kind,
                                                                           deployment_type, tier):
    parsed = parse_meter(meter, product)
    assert isinstance(parsed, Meter), parsed
    assert (parsed.model, parsed.kind, parsed.deployment_type, parsed.service_tier) == (model, kind, deployment_type, tier)


def kind_prices(rate):
    return {name: getattr(rate, name) for name in (
        "input_per_1m", "cached_input_per_1m", "output_per_1m", "cache_write_per_1m", "audio_input_per_1m",
        "cached_audio_input_per_1m", "audio_output_per_1m", "image_input_per_1m", "cached_image_input_per_1m",
        "image_output_per_1m") if getattr(rate, name) is not None}


@SAVED_PAGES
def test_a_models_audio_and_image_meters_fill_the_kind_columns_of_its_text_rate_row():
    result = pages(MEDIA)
    rates = rates_by_key(result)
    d = Decimal
    assert kind_prices(rates[("gpt-4o-audio-preview-2024-12-17", "global", None, "2025-01-01")]) == {
        "input_per_1m": d("2.5"), "output_per_1m": d("10"), "audio_input_per_1m": d("40"), "audio_output_per_1m": d("80")}
    assert kind_prices(rates[("gpt-4o-audio-preview-2024-12-17", "datazone", None, "2025-01-01")]) == {
        "input_per_1m": d("2.75"), "output_per_1m": d("11"), "audio_input_per_1m": d("44"), "audio_output_per_1m": d("88")}
    assert kind_prices(rates[("gpt-4o-realtime-preview-2024-12-17", "global", None, "2025-01-01")]) == {
        "input_per_1m": d("5"), "cached_input_per_1m": d("2.5"), "output_per_1m": d("20"), "audio_input_per_1m": d("40"),
        "cached_audio_input_per_1m": d("2.5"), "audio_output_per_1m": d("80")}
    assert kind_prices(rates[("gpt-4o-mini-realtime-preview-2024-12-17", "global", None, "2025-01-01")]) == {
        "input_per_1m": d("0.6"), "cached_input_per_1m": d("0.3"), "output_per_1m": d("2.4"),
        "audio_input_per_1m": d("10"), "cached_audio_input_per_1m": d("0.3"), "audio_output_per_1m": d("20")}
    assert kind_prices(rates[("gpt-4o-transcribe", "global", None, "2025-04-01")]) == {
        "input_per_1m": d("2.5"), "output_per_1m": d("10"), "audio_input_per_1m": d("6")}
    # gpt-image-1 bills no text output: its only output, images, is its output price; the cached
    # meters started two months later, so the row is split there
    first, second = (rates[("gpt-image-1", "global", None, day)] for day in ("2025-04-01", "2025-06-01"))
    assert first.effective_to == day("2025-06-01") and second.effective_to is None
    assert kind_prices(first) == {"input_per_1m": d("5"), "output_per_1m": d("40"), "image_input_per_1m": d("10"),
                                  "image_output_per_1m": d("40")}
    assert kind_prices(second) == {"input_per_1m": d("5"), "cached_input_per_1m": d("1.25"), "output_per_1m": d("40"),
                                   "image_input_per_1m": d("10"), "cached_image_input_per_1m": d("2.5"),
                                   "image_output_per_1m": d("40")}
    assert kind_prices(rates[("gpt-image-1", "regional", "swedencentral", "2025-06-01")])["cached_image_input_per_1m"] \
        == d("3.025")
    assert kind_prices(rates[("gpt-4o-mini-tts", "global", None, "2025-04-01")]) == {
        "input_per_1m": d("0.6"), "output_per_1m": d("12"), "audio_output_per_1m": d("12")}
    # versions priced alike also price the versionless name, kinds included
    assert kind_prices(rates[("gpt-4o-audio-preview", "global", None, "2025-01-01")])["audio_output_per_1m"] == d("80")
    reasons = {u.meter_name: u.reason for u in result.unmapped}
    assert set(reasons) == {"gpt4o realtime cached audio inp glbl Tokens", "gpt4o realtimePrvw audio inp glbl Tokens",
                            "Image-DALL-E-2-glbl Images", "6.1-sol LongCo Cd Wr Std Gl 1M Tokens",
                            "6.1-sol ShortCo Cd Wr Std Gl 1M Tokens", "6.1-sol ShortCo Cd Inp Std Gl 1M Tokens",
                            "6.1-sol ShortCo Opt Std Gl 1M Tokens"}
    # the saved 6.1-sol items lack the input meter: its cache write is read, but no row is made without it
    assert reasons["6.1-sol ShortCo Cd Wr Std Gl 1M Tokens"] == "gpt-6.1-sol / global: no input meter"
    assert result.items_read == 42 == result.meters_used + len(result.unmapped)


def test_cache_write_meters_fill_the_cache_write_column_of_their_tier():
    # 6-astra's Global meters of 2026-09-01 (docs/public-data.md): standard and priority cache writes
    product = {"productName": "Azure OpenAI GPT6"}
    rows = map_retail_items([
        item(f"6-astra ShortCo {kind} {tier} Gl 1M Tokens", Decimal(price), unit="1M", start="2026-09-01T00:00:00Z",
             **product)
        for kind, tier, price in (("Inp", "Std", "10"), ("Cd Inp", "Std", "1"), ("Cd Wr", "Std", "12.5"),
                                  ("Opt", "Std", "50"), ("Inp", "PP", "20"), ("Cd Inp", "PP", "2"),
                                  ("Cd Wr", "PP", "25"), ("Opt", "PP", "100"))
    ])
    assert rows.unmapped == []
    by_tier = {rate.service_tier: rate for rate in rows.rates}
    assert kind_prices(by_tier[None]) == {"input_per_1m": Decimal("10"), "cached_input_per_1m": Decimal("1"),
                                          "cache_write_per_1m": Decimal("12.5"), "output_per_1m": Decimal("50")}
    assert by_tier["priority"].cache_write_per_1m == Decimal("25") and by_tier["priority"].model == "gpt-6-astra"


@pytest.mark.parametrize(("price", "unit", "expected"), [
    ("0.0025", "1K", "2.5"), ("0.01", "1K", "10"), ("2e-05", "1K", "0.02"), ("0.000083", "1K", "0.083"),
    ("2.5", "1M", "2.5"), ("10.0", "1M", "10"), ("0.0025", "1K Tokens", "2.5"), ("1.25", "1m", "1.25"),
])
def test_units_are_normalised_to_per_million_exactly(price, unit, expected):
    amount = per_million(Decimal(price), unit)
    assert amount == Decimal(expected) and str(amount) == expected


@pytest.mark.parametrize("unit", ["1/Hour", "1 Hour", "100", "1", "10K", "", "1/Month"])
def test_other_units_are_not_per_token(unit):
    assert per_million(Decimal("1"), unit) is None


# --------------------------------------------------------------------------- saved pages → rates


@SAVED_PAGES
def test_mixed_1k_and_1m_pages_import_to_the_same_per_million_rates():
    eastus = rates_by_key(pages(PAGE1))  # gpt-4.1 and gpt-4o meters per 1K
    sweden = rates_by_key(pages(SWEDEN))  # the same global meters per 1M
    both = rates_by_key(pages(PAGE1, PAGE2, SWEDEN))
    for key in [("gpt-4.1", "global", None, "2025-04-14"), ("gpt-4o-2024-08-06", "global", None, "2024-10-01")]:
        assert prices(eastus[key]) == prices(sweden[key]) == prices(both[key])
    assert prices(both[("gpt-4.1", "global", None, "2025-04-14")]) == (Decimal("2"), Decimal("0.5"), Decimal("8"))
    # 1M meters of the same response: gpt-5 and gpt-4.1-nano next to the 1K ones
    assert prices(both[("gpt-5", "global", None, "2025-08-07")]) == (Decimal("1.25"), Decimal("0.125"), Decimal("10"))
    assert prices(both[("gpt-4.1-nano", "global", None, "2025-04-14")]) == (Decimal("0.1"), Decimal("0.025"), Decimal("0.4"))
    assert prices(both[("gpt-4o-mini", "datazone", None, "2024-11-01")]) == (Decimal("0.165"), Decimal("0.083"), Decimal("0.66"))


@SAVED_PAGES
def test_input_cached_and_output_meters_merge_into_rows_per_start_date():
    result = rates_by_key(pages(PAGE1, PAGE2))
    # the cached meter started later: before it, cached tokens are billed at the input rate (no cached price)
    first = result[("gpt-4o-2024-08-06", "global", None, "2024-08-06")]
    second = result[("gpt-4o-2024-08-06", "global", None, "2024-10-01")]
    assert prices(first) == (Decimal("2.5"), None, Decimal("10")) and first.effective_to == day("2024-10-01")
    assert prices(second) == (Decimal("2.5"), Decimal("1.25"), Decimal("10")) and second.effective_to is None
    assert first.currency == "USD" and first.min_prompt_tokens is None


@SAVED_PAGES
def test_regions_global_and_data_zone_prices_are_for_any_region_regional_keep_theirs():
    result = rates_by_key(pages(PAGE1, SWEDEN))
    assert ("gpt-4o-2024-08-06", "datazone", None, "2024-11-01") in result
    assert prices(result[("gpt-4o-2024-08-06", "regional", "eastus", "2024-10-01")]) == (Decimal("2.75"), Decimal("1.375"), Decimal("11"))
    assert prices(result[("gpt-4o-2024-08-06", "regional", "swedencentral", "2024-08-06")]) == (Decimal("3"), None, Decimal("12"))
    assert prices(result[("gpt-35-turbo", "regional", "eastus", "2024-01-25")]) == (Decimal("0.5"), None, Decimal("1.5"))
    assert prices(result[("text-embedding-3-small", "regional", "eastus", "2024-01-25")]) == (Decimal("0.02"), None, Decimal("0"))


@SAVED_PAGES
def test_versions_priced_alike_also_get_a_plain_row_versions_priced_differently_do_not():
    result = pages(PAGE1, PAGE2)
    keys = rates_by_key(result)
    assert ("gpt-4o-mini", "global", None, "2024-10-01") in keys  # only one version: unambiguous
    assert ("o4-mini", "global", None, "2025-04-16") in keys
    assert not any(model == "gpt-4o" and kind == "global" for model, kind, _, _ in keys)  # 0513 costs more than 0806
    assert any("gpt-4o / global: imported per version" in note for note in result.notes)
    assert {("gpt-4o-2024-05-13", "global"), ("gpt-4o-2024-08-06", "global"), ("gpt-4o-2024-11-20", "global")} <= {
        (m, t) for m, t, _, _ in keys}


@SAVED_PAGES
def test_everything_not_mapped_is_reported_with_a_reason():
    result = pages(PAGE1, PAGE2, SWEDEN)
    reasons = {u.meter_name: u.reason for u in result.unmapped}
    # a priority-tier input meter without its output meter cannot make a row
    assert reasons["5 pp inp Gl 1M Tokens"] == "gpt-5 / global / priority tier: no output meter"
    assert "min_prompt_tokens" in reasons["GPT 5.1 inp Gl L 1M Tokens"]
    assert "not Azure OpenAI" in reasons["R1 Inp glbl Tokens"]
    assert "0999" in reasons["gpt 4o 0999 Inp glbl Tokens"]
    # realtime text input without its output meter in these pages: read, but no row can be made
    assert reasons["gpt-4o-rt-txt-1217 Inp glbl Tokens"] == "gpt-4o-realtime-preview-2024-12-17 / global: no output meter"
    assert "per hour" in reasons["Az-GPT4o-mini-FTuned Training Unit"]
    assert {u.reason for u in result.unmapped if u.meter_name == "Provisioned Managed Global Unit"} == {
        "billed per hour ('1/Hour': provisioned capacity or hosting), not per token",
        "price type 'Reservation' is not pay-as-you-go (Consumption)",
    }
    assert result.items_read == 69 and result.items_read == result.meters_used + len(result.unmapped)


def item(meter, price, region="eastus", unit="1K", start="2025-01-01T00:00:00Z", **extra):
    return {"meterName": meter, "productName": "Azure OpenAI", "retailPrice": price, "unitOfMeasure": unit,
            "armRegionName": region, "effectiveStartDate": start, "currencyCode": "USD", "type": "Consumption", **extra}


def test_regions_that_disagree_on_a_global_price_are_reported_not_merged():
    result = map_retail_items([
        item("gpt 4.1 Inp glbl Tokens", Decimal("0.002")), item("gpt 4.1 Outp glbl Tokens", Decimal("0.008")),
        item("gpt 4.1 Inp glbl Tokens", Decimal("0.0022"), region="brazilsouth"),
        item("gpt 4.1 Outp glbl Tokens", Decimal("0.008"), region="brazilsouth"),
    ])
    assert result.rates == []
    assert len(result.unmapped) == 4 and "conflicting input prices from 2025-01-01" in result.unmapped[0].reason


def test_a_model_without_an_output_meter_is_reported_never_priced_at_zero_output():
    result = map_retail_items([item("gpt 4.1 Inp glbl Tokens", Decimal("0.002"))])
    assert result.rates == [] and result.unmapped[0].reason == "gpt-4.1 / global: no output meter"


def test_later_price_change_of_one_meter_starts_a_new_row():
    result = map_retail_items([
        item("gpt 4.1 Inp glbl Tokens", Decimal("0.002"), start="2025-04-14T00:00:00Z"),
        item("gpt 4.1 Outp glbl Tokens", Decimal("0.008"), start="2025-04-14T00:00:00Z"),
        item("gpt 4.1 Inp glbl Tokens", Decimal("0.0018"), start="2025-09-01T00:00:00Z"),
    ])
    assert [(r.effective_from.date().isoformat(), r.effective_to and r.effective_to.date().isoformat(), r.input_per_1m)
            for r in result.rates] == [("2025-04-14", "2025-09-01", Decimal("2")), ("2025-09-01", None, Decimal("1.8"))]


def test_items_with_bad_fields_are_reported():
    result = map_retail_items([
        item("gpt 4.1 Inp glbl Tokens", None), item("gpt 4.1 Inp glbl Tokens", Decimal("1"), start=None),
        item("gpt 4.1 Inp glbl Tokens", Decimal("1"), currencyCode=""),
        item("gpt 4.1 Inp glbl Tokens", Decimal("0.0000000001")),
        item("gpt 4.1 Inp glbl Tokens", Decimal("1"), tierMinimumUnits=Decimal("1000")),
        item("gpt 4.1 Inp glbl Tokens", Decimal("1"), serviceName="Virtual Machines"),
        item("gpt-4o-0806-Inp-regnl Tokens", Decimal("1"), region=""),
    ])
    assert [u.reason.split(" (")[0].split(":")[0] for u in result.unmapped] == [
        "no usable retailPrice", "no effectiveStartDate", "no currencyCode",
        "price 0.0000001 per 1M tokens has more than 6 decimals", "volume tier from 1000 units",
        "service 'Virtual Machines' is not Foundry Models / Cognitive Services", "regional meter without armRegionName"]


def test_one_models_meters_on_different_pages_and_files_are_merged():
    first = {"Items": [item("gpt 4.1 Inp glbl Tokens", 0.002)], "NextPageLink": "https://prices.azure.com/next"}
    second = {"Items": [item("gpt 4.1 Outp glbl Tokens", 0.008)], "NextPageLink": None}
    result = parse_retail_pages([("p1.json", json.dumps(first)), ("p2.json", json.dumps(second))])
    assert [prices(r) for r in result.rates] == [(Decimal("2"), None, Decimal("8"))] and result.notes == []
    only_first = parse_retail_pages([("p1.json", json.dumps(first))])
    assert only_first.rates == [] and "every saved page has a NextPageLink" in only_first.notes[0]


@SAVED_PAGES
def test_saved_pages_in_every_shape():
    page1, page2 = json.loads(PAGE1.read_text()), json.loads(PAGE2.read_text())
    as_array = json.dumps([page1, page2])
    as_lines = json.dumps(page1) + "\n" + json.dumps(page2) + "\n"
    as_items = json.dumps(page1["Items"] + page2["Items"])
    counts = {len(load_pages(text).items) for text in (as_array, as_lines, as_items)}
    assert counts == {61}
    assert len(load_pages(as_array).items) == len(page1["Items"]) + len(page2["Items"])
    for bad, message in [("{nope", "not valid JSON"), ('{"Items": []}', "no items"), ('{"value": 1}', "expected Azure Retail Prices")]:
        with pytest.raises(RateCardError, match=message):
            parse_retail_pages([("x.json", bad)])


def test_prices_are_read_as_exact_decimals_not_floats():
    page = '{"Items": [' + json.dumps(item("gpt 4.1 Inp glbl Tokens", 0))[:-1] + '}], "NextPageLink": null}'
    page = page.replace('"retailPrice": 0', '"retailPrice": 0.000165')
    saved = load_pages(page)
    assert saved.items[0]["retailPrice"] == Decimal("0.000165") and isinstance(saved.items[0]["retailPrice"], Decimal)


# --------------------------------------------------------------------------- fetching (with saved pages only)


class FakeApi:
    """Serves saved pages for the first URL and the page's NextPageLink; records requests."""

    def __init__(self, responses: dict[str, bytes]):
        self.responses = responses
        self.requested: list[str] = []

    def __call__(self, url, timeout=None):
        self.requested.append(url)
        for needle, body in self.responses.items():
            if needle in url:
                return io.BytesIO(body)
        raise AssertionError(f"unexpected request {url}")


def saved_api() -> FakeApi:
    return FakeApi({"$skip=1000": PAGE2.read_bytes(), "%24filter": PAGE1.read_bytes()})


@SAVED_PAGES
def test_fetch_follows_next_page_links_and_keeps_exact_prices():
    url = retail_prices_url("East US")
    assert "serviceName%20eq%20%27Foundry%20Models%27" in url and "armRegionName%20eq%20%27eastus%27" in url
    api = saved_api()
    fetched = fetch_pages(url, opener=api)
    assert len(fetched) == 2 and len(api.requested) == 2 and api.requested[1].endswith("$skip=1000")
    combined = combined_page(fetched, url)
    assert combined["Count"] == 61 and combined["NextPageLink"] is None
    assert json.loads(dumps_page(combined), parse_float=Decimal)["Items"][0]["retailPrice"] == Decimal("0.0025")
    assert map_retail_items(combined["Items"]).rates == pages(PAGE1, PAGE2).rates


def test_fetch_without_internet_says_so():
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(FetchError, match="needs internet access"):
        fetch_pages(retail_prices_url("eastus"), opener=offline)


def test_fetch_stops_a_next_page_loop():
    looping = json.dumps({"Items": [], "NextPageLink": "https://prices.azure.com/api/retail/prices?again"}).encode()
    with pytest.raises(FetchError, match="did not end"):
        fetch_pages("https://prices.azure.com/api/retail/prices?again", opener=FakeApi({"again": looping}))


# --------------------------------------------------------------------------- the command


@SAVED_PAGES
def test_cli_imports_saved_pages_and_lists_the_unmapped_meters(capsys, db):
    code, out, err = run(capsys, "--db", db, "rates", "import", str(PAGE1), str(PAGE2), str(SWEDEN))
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("imported ") and "(69 price-list item(s), 60 used)" in first
    assert "9 meter(s) not mapped (never guessed" in out
    assert "    5 pp inp Gl 1M Tokens" in out and "    R1 Inp glbl Tokens" in out
    assert "note: gpt-4o / global: imported per version" in out
    code, out, _ = run(capsys, "--db", db, "rates", "import", str(PAGE1), str(PAGE2), str(SWEDEN))
    assert code == 0 and " 0 added, " in out  # importing the same list again replaces, never duplicates
    code, out, _ = run(capsys, "--db", db, "rates", "list")
    line = next(l for l in out.splitlines() if l.startswith("gpt-5-mini ") and "datazone" in l)
    assert [Decimal(x) for x in line.split()[-3:]] == [Decimal("0.275"), Decimal("0.0275"), Decimal("2.2")]


@SAVED_PAGES
def test_cli_stores_the_audio_image_prices_of_saved_pages_in_the_kind_columns(capsys, db):
    code, out, err = run(capsys, "--db", db, "rates", "import", str(MEDIA))
    assert code == 0, err
    assert "(42 price-list item(s), 35 used)" in out.splitlines()[0] and "7 meter(s) not mapped" in out
    engine = make_engine(db)
    with engine.connect() as conn:
        card = {(rate.model, rate.deployment_type, rate.region, rate.effective_from.date().isoformat()): rate
                for rate in stored_rates(conn)}
    engine.dispose()
    image = card[("gpt-image-1", "global", None, "2025-06-01")]
    assert (image.image_input_per_1m, image.cached_image_input_per_1m, image.image_output_per_1m) == (
        Decimal("10"), Decimal("2.5"), Decimal("40"))
    realtime = card[("gpt-4o-realtime-preview-2024-12-17", "global", None, "2025-01-01")]
    assert (realtime.audio_input_per_1m, realtime.cached_audio_input_per_1m, realtime.audio_output_per_1m) == (
        Decimal("40"), Decimal("2.5"), Decimal("80"))


@SAVED_PAGES
def test_cli_fetch_imports_the_live_list_and_saves_it(capsys, db, monkeypatch, tmp_path):
    api = saved_api()
    monkeypatch.setattr("urllib.request.urlopen", api)
    saved = tmp_path / "prices.json"
    code, out, err = run(capsys, "--db", db, "rates", "import", "--fetch", "--region", "eastus", "--save", str(saved))
    assert code == 0, err
    assert "from prices.azure.com (eastus) (61 price-list item(s)" in out
    assert len(load_pages(saved.read_text()).items) == 61


def test_cli_fetch_without_internet_fails_clearly(capsys, db, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Network is unreachable")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    code, _, err = run(capsys, "--db", db, "rates", "import", "--fetch", "--region", "eastus")
    assert code == 1 and "needs internet access" in err and "rates import FILE" in err


def test_cli_rejects_unusable_price_lists_and_bad_flag_combinations(capsys, db, tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text(json.dumps({"Items": [item("R1 Inp glbl Tokens", 0.001, productName="Azure Deepseek Models")]}))
    code, _, err = run(capsys, "--db", db, "rates", "import", str(junk))
    assert code == 2 and "no rate could be read" in err and "not Azure OpenAI" in err
    code, _, err = run(capsys, "--db", db, "rates", "import", str(junk), "--fetch")
    assert code == 2 and "not both" in err
    code, _, err = run(capsys, "--db", db, "rates", "import", str(junk), "--region", "eastus")
    assert code == 2 and "go with --fetch" in err
    code, _, err = run(capsys, "--db", db, "rates", "import")
    assert code == 2


def test_priority_processing_meters_become_priority_tier_rows():
    assert parse_meter("5 mini pp Opt Gl 1M Tokens", "Azure OpenAI GPT5") == Meter(
        model="gpt-5-mini", stem="gpt-5-mini", version=None, kind="output", deployment_type="global",
        service_tier="priority")
    items = [
        {"serviceName": "Foundry Models", "productName": "Azure OpenAI GPT5", "meterName": name, "type": "Consumption",
         "unitOfMeasure": "1M", "retailPrice": price, "currencyCode": "USD", "armRegionName": "eastus",
         "effectiveStartDate": "2025-10-01T00:00:00Z"}
        for name, price in (("5 inp Gl 1M Tokens", 1.25), ("5 opt Gl 1M Tokens", 10), ("5 pp inp Gl 1M Tokens", 2.5),
                            ("5 pp cd inp Gl 1M Tokens", 0.25), ("5 pp opt Gl 1M Tokens", 20))
    ]
    result = map_retail_items(items)
    assert result.unmapped == []
    rows = {rate.service_tier: rate for rate in result.rates}
    assert (rows[None].input_per_1m, rows[None].output_per_1m) == (Decimal("1.25"), Decimal("10"))
    priority = rows["priority"]
    assert (priority.model, priority.input_per_1m, priority.cached_input_per_1m, priority.output_per_1m) == (
        "gpt-5", Decimal("2.5"), Decimal("0.25"), Decimal("20"))
    assert find_overlaps(result.rates) == []
