"""The rates CSV: parsing, validation with line numbers, overlap rejection, round trip."""

from __future__ import annotations

from decimal import Decimal

import pytest

from metering.price.rate_card import RateCardError, find_overlaps, parse_rates_csv, rates_to_csv

HEADER = "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"


def test_parses_exact_decimals_and_open_ends():
    rates = parse_rates_csv(HEADER + "gpt-4o-mini,global,,2024-07-18,,USD,0.15,0.075,0.60\n")
    assert len(rates) == 1
    rate = rates[0]
    assert rate.input_per_1m == Decimal("0.15") and rate.cached_input_per_1m == Decimal("0.075")
    assert rate.region is None and rate.effective_to is None
    assert rate.effective_from.isoformat() == "2024-07-18T00:00:00+00:00"


def test_every_bad_line_is_reported_with_its_number():
    text = HEADER + (
        "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
        "gpt-4o,worldwide,,2024-01-01,,USD,2.50,1.25,10.00\n"
        "gpt-4o,global,,not-a-date,,USD,2.50,1.25,10.00\n"
        "gpt-4o,global,,2024-01-01,,USD,two,1.25,10.00\n"
        "gpt-4o,global,,2024-01-01,,USD,0.0000001,,10.00\n"
        "gpt-4o,global,,2024-02-01,2024-01-01,USD,1,,1\n"
    )
    with pytest.raises(RateCardError) as caught:
        parse_rates_csv(text, source="card.csv")
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == [f"card.csv line {n}" for n in (3, 4, 5, 6, 7)]
    assert "worldwide" in problems[0] and "more than 6 decimals" in problems[3]


def test_missing_columns_are_named():
    with pytest.raises(RateCardError, match="input_per_1m"):
        parse_rates_csv("model,deployment_type,effective_from,currency,output_per_1m\n")


def test_overlapping_periods_for_the_same_key_are_rejected():
    rates = parse_rates_csv(HEADER + (
        "gpt-4o,global,,2024-01-01,2025-01-01,USD,5,,15\n"
        "gpt-4o,global,,2024-06-01,,USD,2.5,,10\n"
        "gpt-4o,datazone,,2024-06-01,,USD,2.75,,11\n"
        "gpt-4o,global,eastus,2024-06-01,,USD,2.5,,10\n"
    ))
    problems = find_overlaps(rates)
    assert len(problems) == 1 and "gpt-4o / global / any region" in problems[0]


def test_adjacent_periods_do_not_overlap_and_csv_round_trips():
    rates = parse_rates_csv(HEADER + (
        "gpt-4o,global,,2024-01-01,2025-01-01,USD,5,,15\n"
        "gpt-4o,global,,2025-01-01,,USD,2.5,1.25,10\n"
    ))
    assert find_overlaps(rates) == []
    assert parse_rates_csv(rates_to_csv(rates)) == rates


# --------------------------------------------------------------------------- long-context tiers, supersede, file kinds

from datetime import datetime, timezone  # noqa: E402

from metering.price.card_files import parse_rate_files  # noqa: E402
from metering.price.rate_card import merge_for_import, supersede  # noqa: E402

TIERED = HEADER.rstrip("\n") + ",min_prompt_tokens\n"


def test_optional_min_prompt_tokens_column_marks_long_context_tiers():
    rates = parse_rates_csv(TIERED + (
        "gpt-5,global,,2025-08-07,,USD,1.25,0.125,10.00,\n"
        "gpt-5,global,,2025-08-07,,USD,2.50,0.25,15.00,272000\n"
    ))
    assert [r.min_prompt_tokens for r in rates] == [None, 272_000]
    assert find_overlaps(rates) == []  # a different threshold is a different key
    assert parse_rates_csv(rates_to_csv(rates)) == rates
    assert rates_to_csv(rates).splitlines()[0].endswith(",output_per_1m,min_prompt_tokens")


def test_a_card_without_tiers_keeps_the_design_header():
    rates = parse_rates_csv(HEADER + "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n")
    assert rates_to_csv(rates).splitlines()[0] == HEADER.strip()


def test_same_tier_overlapping_is_rejected_and_bad_thresholds_are_reported():
    rates = parse_rates_csv(TIERED + (
        "gpt-5,global,,2025-08-07,,USD,2.50,,15.00,272000\n"
        "gpt-5,global,,2025-10-01,,USD,2.00,,12.00,272000\n"
    ))
    assert find_overlaps(rates) == [
        "overlapping rates for gpt-5 / global / any region / prompts >= 272,000 tokens: [2025-08-07 → open-ended) and [2025-10-01 → open-ended)"
    ]
    with pytest.raises(RateCardError) as caught:
        parse_rates_csv(TIERED + "gpt-5,global,,2025-08-07,,USD,2.50,,15.00,0\ngpt-5,global,,2025-08-07,,USD,2.50,,15.00,lots\n")
    assert [p.split(":")[0] for p in caught.value.problems] == ["rates CSV line 2", "rates CSV line 3"]
    assert "positive whole number" in caught.value.problems[0]


def test_instants_round_trip_without_losing_the_time_of_day():
    rates = parse_rates_csv(HEADER + (
        "gpt-4o,global,,2024-01-01,2026-10-10T12:00:00Z,USD,2.50,1.25,10.00\n"
        "gpt-4o,global,,2026-10-10T12:00:00Z,,USD,2.00,1.00,8.00\n"
    ))
    assert find_overlaps(rates) == [] and parse_rates_csv(rates_to_csv(rates)) == rates


def test_supersede_ends_open_ended_rates_where_a_new_one_starts():
    stored = parse_rates_csv(HEADER + (
        "gpt-4o,global,,2024-08-06,,USD,2.50,1.25,10.00\n"
        "gpt-4o,datazone,,2024-08-06,,USD,2.75,1.375,11.00\n"
    ))
    incoming = parse_rates_csv(HEADER + "gpt-4o,global,,2026-10-10,,USD,2.00,1.00,8.00\n")
    assert find_overlaps(merge_for_import(stored, incoming))  # without --supersede: rejected
    ended = supersede(stored, incoming)
    assert [(r.deployment_type, r.effective_to) for r in ended] == [("global", datetime(2026, 10, 10, tzinfo=timezone.utc))]
    assert find_overlaps(merge_for_import(stored, ended + incoming)) == []
    # a new rate that starts before the stored one is a genuine conflict, still rejected
    earlier = parse_rates_csv(HEADER + "gpt-4o,datazone,,2024-01-01,,USD,3,,12\n")
    assert supersede(stored, earlier) == [] and find_overlaps(merge_for_import(stored, earlier))


def test_rate_files_are_told_apart_by_content():
    csv_text = HEADER + "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
    page = ('{"Items": [{"meterName": "gpt 4.1 Inp glbl Tokens", "productName": "Azure OpenAI", "unitOfMeasure": "1K",'
            ' "retailPrice": 0.002, "currencyCode": "USD", "armRegionName": "eastus", "type": "Consumption",'
            ' "effectiveStartDate": "2025-04-14T00:00:00Z"}, {"meterName": "gpt 4.1 Outp glbl Tokens",'
            ' "productName": "Azure OpenAI", "unitOfMeasure": "1K", "retailPrice": 0.008, "currencyCode": "USD",'
            ' "armRegionName": "eastus", "type": "Consumption", "effectiveStartDate": "2025-04-14T00:00:00Z"}],'
            ' "NextPageLink": null}')
    result = parse_rate_files([("card.csv", csv_text), ("page.json", "\ufeff  " + page)])
    assert result.kind == "retail" and result.items_read == 2
    assert [(r.model, r.input_per_1m, r.output_per_1m) for r in result.rates] == [
        ("gpt-4o", Decimal("2.50"), Decimal("10.00")), ("gpt-4.1", Decimal("2"), Decimal("8"))]
    with pytest.raises(RateCardError) as caught:
        parse_rate_files([("bad.csv", HEADER + "gpt-4o,global,,x,,USD,1,,1\n"), ("bad.json", "{not json")])
    assert [p.split(":")[0] for p in caught.value.problems] == ["bad.csv line 2", "bad.json"]


def test_the_starter_card_is_valid_and_covers_the_common_models():
    from pathlib import Path

    from metering.price.pricing import RateCard

    rates = parse_rates_csv((Path(__file__).parents[2] / "samples" / "rates.csv").read_text(), source="samples/rates.csv")
    assert find_overlaps(rates) == []
    card = RateCard(rates)
    at = datetime(2026, 10, 15, tzinfo=timezone.utc)
    for model, deployment_type in [
        ("gpt-5-2025-08-07", "global"), ("gpt-5-mini-2025-08-07", "datazone"), ("gpt-5-nano-2025-08-07", "global"),
        ("gpt-4.1-2025-04-14", "global"), ("gpt-4.1-mini-2025-04-14", "datazone"), ("gpt-4.1-nano-2025-04-14", "global"),
        ("gpt-4o-2024-11-20", "global"), ("gpt-4o-2024-08-06", "datazone"), ("gpt-4o-2024-05-13", "global"),
        ("gpt-4o-mini-2024-07-18", "global"), ("o3-2025-04-16", "global"), ("o4-mini-2025-04-16", "global"),
        ("gpt-35-turbo", "regional"), ("gpt-4", "regional"), ("text-embedding-3-small", "regional"),
        ("text-embedding-3-large", "global"), ("text-embedding-ada-002", "regional"),
    ]:
        assert card.find_rate(model, deployment_type, None, at) is not None, (model, deployment_type)
    assert card.find_rate("gpt-4o-2024-05-13", "global", None, at).input_per_1m == Decimal("5.00")
    assert card.find_rate("gpt-4o-mini-2024-07-18", "global", None, at).input_per_1m == Decimal("0.15")


KINDS_HEADER = HEADER.rstrip("\n") + (
    ",image_output_per_1m,service_tier,cache_write_per_1m,audio_input_per_1m,cached_audio_input_per_1m,"
    "audio_output_per_1m,image_input_per_1m,cached_image_input_per_1m\n"
)


def test_token_kind_prices_and_service_tier_are_optional_columns_in_any_order():
    rates = parse_rates_csv(KINDS_HEADER + (
        "gpt-5.6,global,,2026-07-09,,USD,1.25,0.125,10.00,,,1.5625,,,,,\n"
        "gpt-5.6,global,,2026-07-09,,USD,2.50,0.25,20.00,,Priority,3.125,,,,,\n"
        "gpt-realtime,global,,2025-08-28,,USD,4.00,0.40,16.00,,,,32.00,0.40,64.00,5.00,0.50\n"
        "gpt-image-1,global,,2025-04-15,,USD,5.00,1.25,0,40.00,default,,,,,10.00,2.50\n"
    ))
    standard, priority, realtime, image = rates
    assert (standard.service_tier, standard.cache_write_per_1m) == (None, Decimal("1.5625"))
    assert (priority.service_tier, priority.cache_write_per_1m) == ("priority", Decimal("3.125"))
    assert (realtime.audio_input_per_1m, realtime.cached_audio_input_per_1m, realtime.audio_output_per_1m) == (
        Decimal("32.00"), Decimal("0.40"), Decimal("64.00"))
    assert (realtime.image_input_per_1m, realtime.cached_image_input_per_1m) == (Decimal("5.00"), Decimal("0.50"))
    assert (image.service_tier, image.image_output_per_1m, image.audio_input_per_1m) == (None, Decimal("40.00"), None)
    assert find_overlaps(rates) == []  # a priority row is another key than the default row
    assert parse_rates_csv(rates_to_csv(rates)) == rates


def test_the_same_service_tier_overlapping_is_rejected():
    rates = parse_rates_csv(KINDS_HEADER + (
        "gpt-5.6,global,,2026-07-09,,USD,2.50,0.25,20.00,,priority,,,,,,\n"
        "gpt-5.6,global,,2026-08-01,,USD,2.00,0.20,16.00,,priority,,,,,,\n"
    ))
    assert find_overlaps(rates) == [
        "overlapping rates for gpt-5.6 / global / any region / priority tier: [2026-07-09 → open-ended) and [2026-08-01 → open-ended)"
    ]


def test_bad_token_kind_prices_and_tiers_are_reported_with_their_line():
    with pytest.raises(RateCardError) as caught:
        parse_rates_csv(KINDS_HEADER + (
            "gpt-5.6,global,,2026-07-09,,USD,1.25,0.125,10.00,,,-1,,,,,\n"
            "gpt-5.6,global,,2026-07-09,,USD,1.25,0.125,10.00,,pri ority,,,,,,\n"
            "gpt-4o-audio,global,,2026-07-09,,USD,1.25,,10.00,,,,lots,,,,\n"
        ))
    assert [p.split(": ", 1)[0] for p in caught.value.problems] == [
        "rates CSV line 2", "rates CSV line 3", "rates CSV line 4"]
    assert "cache_write_per_1m" in caught.value.problems[0] and "audio_input_per_1m" in caught.value.problems[2]
    assert "service_tier" in caught.value.problems[1]
