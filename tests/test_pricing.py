"""Pricing: exact Decimal costs, longest-prefix models, effective dates, regions, deployment types."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from metering.model import DeploymentMapping, Rate, TokenUsage, UsageEvent
from metering.pricing import RateCard, compute_cost, is_billable, price, resolve_deployment

UTC = timezone.utc


def rate(model="gpt-4o", deployment_type="global", region=None, start="2024-01-01", end=None,
         input_="2.50", cached="1.25", output="10.00", rate_id=1) -> Rate:
    return Rate(
        id=rate_id, model=model, deployment_type=deployment_type, region=region,
        effective_from=datetime.fromisoformat(start).replace(tzinfo=UTC),
        effective_to=datetime.fromisoformat(end).replace(tzinfo=UTC) if end else None,
        currency="USD", input_per_1m=Decimal(input_), cached_input_per_1m=Decimal(cached) if cached else None,
        output_per_1m=Decimal(output),
    )


def event(**fields) -> UsageEvent:
    base = dict(request_id="r", event_time=datetime(2026, 10, 15, 12, tzinfo=UTC), status_code=200, deployment="gpt-4o")
    base.update(fields)
    return UsageEvent(**base)


def usage(prompt=1_000_000, cached=0, completion=0, reasoning=0, source="reported") -> TokenUsage:
    return TokenUsage(prompt, cached, completion, reasoning, prompt + completion, source)


def test_cost_rules_are_exact():
    cost = price(event(), usage(prompt=1234, cached=1000, completion=567), "gpt-4o", "global", RateCard([rate()]))
    assert cost.price_status == "priced"
    assert cost.input_cost == Decimal("234") * Decimal("2.50") / Decimal(1_000_000) == Decimal("0.000585")
    assert cost.cached_input_cost == Decimal("0.00125")
    assert cost.output_cost == Decimal("0.00567")
    assert cost.total_cost == Decimal("0.007505")
    assert (cost.currency, cost.rate_id) == ("USD", 1)


def test_cached_tokens_use_the_input_rate_when_the_card_has_no_cached_rate():
    input_cost, cached_cost, _ = compute_cost(usage(prompt=2000, cached=1000), rate(cached=None))
    assert input_cost == cached_cost == Decimal("0.0025")


def test_reasoning_tokens_are_billed_as_output_once():
    cost = price(event(), usage(prompt=0, completion=1000, reasoning=800), "o3", "global", RateCard([rate(model="o3", output="8.00")]))
    assert cost.output_cost == Decimal("0.008")


def test_longest_prefix_wins_and_needs_a_dash_boundary():
    card = RateCard([rate("gpt-4o", rate_id=1), rate("gpt-4o-mini", input_="0.15", rate_id=2), rate("gpt-4", input_="30", rate_id=3)])
    assert card.find_rate("gpt-4o-mini-2024-07-18", "global", None, datetime(2026, 1, 1, tzinfo=UTC)).id == 2
    assert card.find_rate("gpt-4o-2024-11-20", "global", None, datetime(2026, 1, 1, tzinfo=UTC)).id == 1
    assert card.find_rate("GPT-4o", "global", None, datetime(2026, 1, 1, tzinfo=UTC)).id == 1
    assert card.find_rate("gpt-4-0613", "global", None, datetime(2026, 1, 1, tzinfo=UTC)).id == 3
    # gpt-4 must never price gpt-4.1 or gpt-4o-like names that merely start with its letters
    assert RateCard([rate("gpt-4")]).find_rate("gpt-4.1", "global", None, datetime(2026, 1, 1, tzinfo=UTC)) is None
    assert RateCard([rate("gpt-4")]).find_rate("gpt-4o", "global", None, datetime(2026, 1, 1, tzinfo=UTC)) is None


def test_best_model_without_a_rate_for_the_type_is_no_rate_not_a_shorter_model():
    card = RateCard([rate("gpt-4o", "datazone", rate_id=1), rate("gpt-4o-mini", "global", rate_id=2)])
    assert card.find_rate("gpt-4o-mini-2024-07-18", "datazone", None, datetime(2026, 1, 1, tzinfo=UTC)) is None


def test_effective_dates_are_half_open_on_the_events_own_time():
    card = RateCard([
        rate(start="2024-01-01", end="2025-07-01", input_="5.00", rate_id=1),
        rate(start="2025-07-01", input_="2.50", rate_id=2),
    ])
    just_before = datetime(2025, 6, 30, 23, 59, 59, 999999, tzinfo=UTC)
    at_change = datetime(2025, 7, 1, tzinfo=UTC)
    assert card.find_rate("gpt-4o", "global", None, just_before).id == 1
    assert card.find_rate("gpt-4o", "global", None, at_change).id == 2
    assert card.find_rate("gpt-4o", "global", None, datetime(2023, 12, 31, tzinfo=UTC)) is None


def test_region_specific_rate_wins_over_any_region():
    card = RateCard([rate(deployment_type="regional", input_="2.75", rate_id=1),
                     rate(deployment_type="regional", region="swedencentral", input_="3.00", rate_id=2)])
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert card.find_rate("gpt-4o", "regional", "Sweden Central", at).id == 2
    assert card.find_rate("gpt-4o", "regional", "East US", at).id == 1


def test_deployment_mapping_per_backend_then_any_backend():
    card = RateCard(deployments=[
        DeploymentMapping("chat-prod", "gpt-4o-mini", "datazone"),
        DeploymentMapping("chat-prod", "gpt-4o", "provisioned", backend_id="aoai-ptu"),
    ])
    assert resolve_deployment(event(deployment="chat-prod", backend_id="aoai-paygo"), card) == ("gpt-4o-mini", "datazone")
    assert resolve_deployment(event(deployment="CHAT-PROD", backend_id="aoai-ptu"), card) == ("gpt-4o", "provisioned")
    assert resolve_deployment(event(deployment="unknown"), card) == (None, "global")


def test_no_matching_model_is_no_rate_with_unknown_cost():
    cost = price(event(), usage(), "mystery-model", "global", RateCard([rate()]))
    assert cost.price_status == "no_rate"
    assert cost.total_cost is None and cost.input_cost is None


@pytest.mark.parametrize("status", [429, 500, 503, 401, 404])
def test_throttled_failed_and_rejected_requests_are_not_billable(status):
    cost = price(event(status_code=status), usage(), "gpt-4o", "global", RateCard([rate()]))
    assert cost.price_status == "not_billable" and cost.total_cost == 0


def test_content_filter_rejection_bills_its_prompt():
    body = '{"error":{"code":"content_filter","message":"The response was filtered","status":400}}'
    rejected = event(status_code=400, response=body)
    assert is_billable(rejected)
    assert not is_billable(event(status_code=400, response='{"error":{"code":"invalid_request"}}'))
    cost = price(rejected, usage(prompt=1000), "gpt-4o", "global", RateCard([rate()]))
    assert cost.price_status == "priced" and cost.total_cost == Decimal("0.0025")


def test_provisioned_requests_carry_tokens_but_no_per_token_cost():
    cost = price(event(), usage(), "gpt-4o", "provisioned", RateCard([rate()]))
    assert cost.price_status == "not_billable" and cost.deployment_type == "provisioned"


def test_billable_request_without_usage_waits_for_usage_instead_of_costing_zero():
    cost = price(event(), TokenUsage(), "gpt-4o", "global", RateCard([rate()]))
    assert cost.price_status == "no_usage" and cost.total_cost is None
