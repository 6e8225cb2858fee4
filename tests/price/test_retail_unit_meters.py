"""Retail Prices meters of the units Azure bills beyond tokens (#30): read only in the shapes the price
list has (``metering.price.retail_prices.UNIT_METER_SHAPES``), imported into their own rate columns.

The items below carry the real meter names, units of measure, prices, regions and start dates of
Retail Prices API items in the public daily snapshots of github.com/guygregory/modelmeters.com
(``monthly/full/2024-05-01.ndjson`` … ``2025-05-01.ndjson``, commit d4a64106f74f; tests/data/origins.csv);
the whole items are read from the shared folder's retail-prices/retail_prices_unit_meters.json when present
(tests/shared_folder.py; it skips until that file is added there, docs/public-data.md)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from metering.price.retail_prices import map_retail_items, parse_unit_meter
from shared_folder import shared_path

SHARED = shared_path("retail-prices/retail_prices_unit_meters.json")


def item(meter, price, unit, region, start):
    return {"meterName": meter, "productName": "Azure OpenAI", "serviceName": "Cognitive Services",
            "retailPrice": price, "unitPrice": price, "unitOfMeasure": unit, "armRegionName": region,
            "effectiveStartDate": start, "currencyCode": "USD", "type": "Consumption", "tierMinimumUnits": 0.0}


UNIT_ITEMS = [
    item("Speech-to-Text-Batch-Whisper-glbl Unit", 0.36, "1 Hour", "northcentralus", "2024-06-01T00:00:00Z"),
    item("Speech-to-Text-Batch-Whisper-regnl Unit", 0.36, "1 Hour", "westeurope", "2024-05-01T00:00:00Z"),
    item("Speech-Text to Speech-global Characters", 15.0, "1M", "swedencentral", "2024-06-01T00:00:00Z"),
    item("Speech-Text to Speech HD-global Characters", 30.0, "1M", "northcentralus", "2024-06-01T00:00:00Z"),
    item("file-search-tool-calls-glbl Calls", 2.5, "1K", "westus3", "2025-03-01T00:00:00Z"),
    item("file-search-tool-calls-datazone Calls", 2.75, "1K", "westus3", "2025-03-01T00:00:00Z"),
    item("Code-Interpreter-global Session", 0.03, "1", "eastus", "2024-06-01T00:00:00Z"),
    item("Assistants-File Search-glbl GB", 0.1, "1/Day", "brazilsouth", "2024-06-01T00:00:00Z"),
    item("gpt-4o-0806-FT-Hstng-glbl Unit", 1.7, "1 Hour", "swedencentral", "2024-12-01T00:00:00Z"),
]
# A model's text meters (eastus page of tests/price/test_retail_prices.py's shapes): the tool prices fill its row.
TEXT_ITEMS = [
    item("gpt-4o-1120-Inp-glbl Tokens", 0.0025, "1K", "eastus", "2024-11-20T00:00:00Z"),
    item("gpt-4o-1120-Outp-glbl Tokens", 0.01, "1K", "eastus", "2024-11-20T00:00:00Z"),
]


@pytest.mark.parametrize(("meter", "kind", "model", "deployment_type"), [
    ("Speech-to-Text-Batch-Whisper-glbl Unit", "audio_seconds", "whisper", "global"),
    ("Speech-Text to Speech-Regional Characters", "input_characters", "tts", "regional"),
    ("Speech-Text to Speech HD-global Characters", "input_characters", "tts-hd", "global"),
    ("file-search-tool-calls-rgnl Calls", "file_search_calls", None, "regional"),
    ("Code-Interpreter-regnl EP Session", "code_interpreter_sessions", None, "regional"),
    ("Assistants-File Search-regnl GB", "vector_storage", None, "regional"),
    ("gpt-4o-mini-0718-FT-Hstng-regnl Unit", "fine_tune_hosting", None, "regional"),
    ("gpt-4.1-nano-ft hosting global Unit", "fine_tune_hosting", None, "global"),
    ("gpt-35-turbo4K-FT-Trng-regnl Unit", "fine_tune_training", None, "regional"),
    ("gpt-4.1-mini FT Training regional Tokens", "fine_tune_training", None, "regional"),
    ("o4-mini RFT Training global Unit", "fine_tune_training", None, "global"),
    ("o3-mini-ft model grader output Tokens", "fine_tune_training", None, None),
])
def test_real_unit_meter_names_are_read(meter, kind, model, deployment_type):
    parsed = parse_unit_meter(meter)
    assert parsed is not None and (parsed.kind, parsed.model, parsed.deployment_type) == (kind, model, deployment_type)


@pytest.mark.parametrize("meter", ["gpt-4o-0806-Inp-glbl Tokens", "Provisioned Managed Global Unit",
                                   "Image-Dall-E-3 HD HighRes-glbl Images", "Sora 720p 1-5s glbl Video"])
def test_token_capacity_and_other_meters_are_no_unit_meters(meter):
    assert parse_unit_meter(meter) is None


def _by_model(result):
    return {(rate.model, rate.deployment_type, rate.region): rate for rate in result.rates}


def test_unit_prices_fill_their_own_columns():
    result = map_retail_items(UNIT_ITEMS + TEXT_ITEMS)
    rates = _by_model(result)
    assert rates[("whisper", "global", None)].audio_per_hour == Decimal("0.36")
    assert rates[("whisper", "regional", "westeurope")].audio_per_hour == Decimal("0.36")
    assert rates[("tts", "global", None)].characters_per_1m == Decimal(15)
    assert rates[("tts-hd", "global", None)].characters_per_1m == Decimal(30)
    assert rates[("whisper", "global", None)].input_per_1m == 0  # billed by the hour only: it has no tokens
    gpt4o = rates[("gpt-4o-2024-11-20", "global", None)]
    assert (gpt4o.file_search_per_1k, gpt4o.code_interpreter_per_session) == (Decimal("2.5"), Decimal("0.03"))
    assert gpt4o.web_search_per_1k is None  # no web search meter in the price list: never guessed
    unmapped = {u.meter_name: u.reason for u in result.unmapped}
    assert "fixed cost" in unmapped["Assistants-File Search-glbl GB"]
    assert "fixed cost" in unmapped["gpt-4o-0806-FT-Hstng-glbl Unit"]
    assert "no datazone model row" in unmapped["file-search-tool-calls-datazone Calls"]
    assert result.items_read == result.meters_used + len(result.unmapped)


def test_the_saved_unit_meter_items_import():
    if not SHARED.is_file():
        pytest.skip(f"{SHARED} (Retail Prices items of unit meters) is not in the shared folder yet")
    result = map_retail_items(json.loads(SHARED.read_text())["Items"] + TEXT_ITEMS)
    rates = _by_model(result)
    assert rates[("whisper", "global", None)].audio_per_hour == Decimal("0.36")
    assert rates[("gpt-4o-2024-11-20", "global", None)].file_search_per_1k == Decimal("2.5")
