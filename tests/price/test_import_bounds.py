"""Input files are checked where they are read, so that nothing reaches SQL that SQL would refuse
and nothing is silently ignored: unknown (misspelled) columns, values longer than their column or
holding NUL, and prices so large that a request's cost would not fit the cost columns."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cli_runner import run
from db.schema import MONEY_PRECISION, MONEY_SCALE, RATE_PRECISION, RATE_SCALE, deployments, rates, subscriptions
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.model import RawEvent
from metering.pipeline import MAX_TOKENS
from metering.price.mappings import (
    DEPLOYMENTS_CSV_COLUMNS, SUBSCRIPTIONS_CSV_COLUMNS, TEXT_LIMITS, MappingFileError, parse_deployments_csv,
    parse_subscriptions_csv,
)
from metering.price.rate_card import (
    MAX_PRICE_PER_1M, RATE_TEXT_LIMITS, RATES_CSV_COLUMNS, ALLOWED_COLUMNS, RateCardError, parse_rates_csv,
)

HEADER = ",".join(RATES_CSV_COLUMNS) + "\n"


def test_limits_match_the_schema():
    for table, columns in ((deployments, DEPLOYMENTS_CSV_COLUMNS), (subscriptions, SUBSCRIPTIONS_CSV_COLUMNS)):
        for column in columns:
            assert TEXT_LIMITS[column] == table.c[column].type.length, column
    for column, limit in RATE_TEXT_LIMITS.items():
        assert rates.c[column].type.length == limit


def test_the_largest_price_times_the_most_tokens_fits_the_cost_columns():
    # A request has at most MAX_TOKENS prompt (input + cached) and MAX_TOKENS completion tokens.
    worst = 2 * MAX_TOKENS * MAX_PRICE_PER_1M / 1_000_000
    assert worst < Decimal(10) ** (MONEY_PRECISION - MONEY_SCALE)
    assert MAX_PRICE_PER_1M < Decimal(10) ** (RATE_PRECISION - RATE_SCALE)


@pytest.mark.parametrize("price", ["999999999999.999999", "100000000.000001", "1e12"])
def test_prices_above_the_bound_are_bad_input_with_their_line(price):
    with pytest.raises(RateCardError) as failure:
        parse_rates_csv(HEADER + "gpt-4o,global,,2025-01-01,,USD,2.50,,10.00\n"
                        f"gpt-4o-mini,global,,2025-01-01,,USD,0.15,,{price}\n")
    (problem,) = failure.value.problems
    assert problem.startswith("rates CSV line 3: output_per_1m") and "100,000,000 per 1M tokens" in problem
    (rate,) = parse_rates_csv(HEADER + f"gpt-4o,global,,2025-01-01,,USD,{MAX_PRICE_PER_1M},,{MAX_PRICE_PER_1M}\n")
    assert rate.output_per_1m == MAX_PRICE_PER_1M


def test_a_request_at_the_largest_price_and_token_count_is_stored(engine):
    from db import rate_card as rate_card_store

    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(
            HEADER + f"gpt-4o,global,,2024-01-01,,USD,{MAX_PRICE_PER_1M},,{MAX_PRICE_PER_1M}\n"))
    half = MAX_TOKENS // 2
    usage = {"prompt_tokens": half, "completion_tokens": half, "total_tokens": MAX_TOKENS}
    totals = Ingestor(engine).ingest([RawEvent(encode(v1_event("most-expensive", usage=usage)))])
    assert totals.inserted == 1 and totals.cost == MAX_TOKENS * MAX_PRICE_PER_1M / 1_000_000


@pytest.mark.parametrize("header, unknown", [
    (HEADER.strip() + ",cached_input_per_1M", "'cached_input_per_1M'"),
    (HEADER.strip().replace("cached_input_per_1m", "cached_input_per_1M"), "'cached_input_per_1M'"),
    (HEADER.strip() + ",min_prompt_token", "'min_prompt_token'"),
])
def test_an_unknown_rates_column_is_bad_input_naming_the_allowed_ones(header, unknown):
    with pytest.raises(RateCardError) as failure:
        parse_rates_csv(header + "\n")
    (problem,) = failure.value.problems
    assert f"unknown column(s) {unknown}" in problem and ",".join(ALLOWED_COLUMNS) in problem
    # every known column, in any order, is fine; a trailing comma (an empty name) too
    assert parse_rates_csv(",".join(reversed(ALLOWED_COLUMNS)) + ",\n") == []


@pytest.mark.parametrize("parse, header, unknown", [
    (parse_subscriptions_csv, "subscription_id,business_unit,cost_centre,owner", "'cost_centre'"),
    (parse_deployments_csv, "backend_id,deployment,model,deployment_type,region", "'region'"),
])
def test_an_unknown_mapping_column_is_bad_input(parse, header, unknown):
    with pytest.raises(MappingFileError) as failure:
        parse(header + "\nx,y,z,global\n")
    assert f"unknown column(s) {unknown}" in str(failure.value) and "the columns are" in str(failure.value)


def test_long_or_nul_values_are_bad_input_with_line_numbers():
    with pytest.raises(MappingFileError) as failure:
        parse_subscriptions_csv("subscription_id,business_unit,cost_center,owner\n"
                                "sub-ok,Finance,CC-1,a@contoso.com\n"
                                f"sub-long,Finance,{'C' * 101},\n"
                                "sub-nul,Fin\x00ance,CC-2,\n"
                                f"{'s' * 201},Finance,CC-3,\n")
    assert failure.value.problems == [
        "subscriptions CSV line 3: cost_center is longer than 100 characters",
        "subscriptions CSV line 4: business_unit contains a NUL character",
        "subscriptions CSV line 5: subscription_id is longer than 200 characters",
    ]
    with pytest.raises(MappingFileError, match="line 2: deployment is longer than 200"):
        parse_deployments_csv("backend_id,deployment,model,deployment_type\n" + f",{'😀' * 101},gpt-4o,global\n")
    with pytest.raises(RateCardError, match="line 2: model contains a NUL"):
        parse_rates_csv(HEADER + "gpt\x00-4o,global,,2025-01-01,,USD,1,,1\n")


def test_the_import_commands_refuse_them_in_one_message(db, tmp_path, capsys):
    bad = tmp_path / "subs.csv"
    bad.write_text("subscription_id,business_unit,cost_center,owner\n" + f"sub-1,{'B' * 300},CC,\n")
    code, out, err = run(capsys, "--db", db, "subscriptions", "import", str(bad))
    assert code == 2 and "line 2: business_unit is longer than 200" in err and "Traceback" not in err
    bad.write_text("subscription_id,business_unit,cost_centre,owner\nsub-1,B,CC,\n")
    code, out, err = run(capsys, "--db", db, "subscriptions", "import", str(bad))
    assert code == 2 and "cost_centre" in err
    deployments_csv = tmp_path / "deployments.csv"
    deployments_csv.write_text("backend_id,deployment,model,deployment_type\n,chat\x00prod,gpt-4o,global\n")
    code, out, err = run(capsys, "--db", db, "deployments", "import", str(deployments_csv))
    assert code == 2 and "line 2: deployment contains a NUL" in err


def test_reimport_with_new_prices_says_what_changed_and_how_to_apply_it(db, tmp_path, capsys):
    first = tmp_path / "first.csv"
    first.write_text(HEADER + "gpt-4o,global,,2025-01-01,,USD,2.50,1.25,10.00\n"
                              "gpt-4o-mini,global,,2025-01-01,,USD,0.15,0.075,0.60\n")
    assert run(capsys, "--db", db, "rates", "import", str(first))[0] == 0
    second = tmp_path / "second.csv"
    second.write_text(HEADER + "gpt-4o,global,,2025-01-01,,USD,2.75,1.25,11.00\n"
                               "gpt-4o-mini,global,,2025-01-01,,USD,0.15,0.075,0.60\n")
    code, out, _ = run(capsys, "--db", db, "rates", "import", str(second))
    assert code == 0
    assert "0 added, 2 replaced (1 changed, 1 unchanged)" in out
    assert "gpt-4o global any region from 2025-01-01: input_per_1m 2.50 → 2.75, output_per_1m 10.00 → 11.00" in out
    assert "gpt-4o-mini" not in out.split("changed rates")[1]
    assert "`metering reprice`" in out
