"""The rates CSV: parsing, validation with line numbers, overlap rejection, round trip."""

from __future__ import annotations

from decimal import Decimal

import pytest

from metering.rates import RateCardError, find_overlaps, parse_rates_csv, rates_to_csv

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
