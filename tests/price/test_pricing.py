"""Pricing: exact Decimal costs, longest-prefix models, effective dates, regions, deployment types."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from metering.model import DeploymentMapping, Rate, TokenUsage, UsageEvent
from metering.price.pricing import RateCard, compute_cost, is_billable, price, resolve_deployment

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


# --------------------------------------------------------------------------- long-context tiers and price changes


def tiered(threshold, input_, output, rate_id, **kw) -> Rate:
    return replace(rate(model="gpt-5", input_=input_, cached=None, output=output, rate_id=rate_id, **kw),
                   min_prompt_tokens=threshold)


LONG_CONTEXT = RateCard([
    tiered(None, "1.25", "10.00", 1),
    tiered(272_000, "2.50", "15.00", 2),
    tiered(1_000_000, "5.00", "20.00", 3),
])
AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("prompt", "rate_id"), [
    (0, 1), (1, 1), (271_999, 1), (272_000, 2), (999_999, 2), (1_000_000, 3), (5_000_000, 3),
])
def test_long_context_tier_is_chosen_by_prompt_size(prompt, rate_id):
    assert LONG_CONTEXT.find_rate("gpt-5-2025-08-07", "global", None, AT, prompt_tokens=prompt).id == rate_id


def test_long_context_tier_prices_the_whole_request():
    cost = price(event(), usage(prompt=300_000, cached=100_000, completion=2_000), "gpt-5", "global", LONG_CONTEXT)
    # every token of the request at the tier's rates (cached at the tier's input rate: it has no cached rate)
    assert cost.rate_id == 2
    assert cost.input_cost == Decimal(200_000) * Decimal("2.50") / 1_000_000 == Decimal("0.5")
    assert cost.cached_input_cost == Decimal("0.25")
    assert cost.output_cost == Decimal("0.03")
    assert cost.total_cost == Decimal("0.78")


def test_find_rate_without_prompt_size_keeps_the_base_tier():
    assert LONG_CONTEXT.find_rate("gpt-5", "global", None, AT).id == 1


def test_a_tier_alone_does_not_price_small_prompts():
    card = RateCard([tiered(200_000, "2.50", "15.00", 7)])
    assert card.find_rate("gpt-5", "global", None, AT, prompt_tokens=199_999) is None
    assert card.find_rate("gpt-5", "global", None, AT, prompt_tokens=200_000).id == 7


def test_region_specific_applicable_rows_win_then_the_highest_threshold():
    card = RateCard([
        tiered(None, "1.25", "10", 1),
        tiered(200_000, "2.50", "15", 2),
        tiered(None, "1.40", "11", 3, region="swedencentral"),
        tiered(500_000, "3.00", "18", 4, region="swedencentral"),
    ])
    assert card.find_rate("gpt-5", "global", "Sweden Central", AT, 300_000).id == 3  # its region's base beats any-region tier
    assert card.find_rate("gpt-5", "global", "Sweden Central", AT, 600_000).id == 4
    assert card.find_rate("gpt-5", "global", "East US", AT, 300_000).id == 2


def test_events_on_both_sides_of_a_price_change_are_priced_at_their_own_rate():
    card = RateCard([
        rate(start="2024-08-06", end="2026-10-10T12:00:00", input_="2.50", cached="1.25", output="10.00", rate_id=1),
        rate(start="2026-10-10T12:00:00", input_="2.00", cached="1.00", output="8.00", rate_id=2),
    ])
    tokens = usage(prompt=123_457, cached=23_457, completion=9_876)
    before = price(event(event_time=datetime(2026, 10, 10, 11, 59, 59, 999999, tzinfo=UTC)), tokens, "gpt-4o-2024-11-20", "global", card)
    after = price(event(event_time=datetime(2026, 10, 10, 12, tzinfo=UTC)), tokens, "gpt-4o-2024-11-20", "global", card)
    assert (before.rate_id, after.rate_id) == (1, 2)
    million = Decimal(1_000_000)
    assert before.total_cost == (100_000 * Decimal("2.50") + 23_457 * Decimal("1.25") + 9_876 * Decimal("10.00")) / million
    assert after.total_cost == (100_000 * Decimal("2.00") + 23_457 * Decimal("1.00") + 9_876 * Decimal("8.00")) / million
    assert before.total_cost == Decimal("0.37808125") and after.total_cost == Decimal("0.302465")


def test_data_zone_deployment_and_cached_tokens_use_their_own_rates():
    card = RateCard(
        [rate(rate_id=1), rate(deployment_type="datazone", input_="2.75", cached="1.375", output="11.00", rate_id=2),
         rate("gpt-4o-mini", input_="0.15", cached="0.075", output="0.60", rate_id=3)],
        [DeploymentMapping("gpt-4o-eu", "gpt-4o", "datazone"), DeploymentMapping("chat-prod", "gpt-4o-mini", "global")],
    )
    eu = event(deployment="gpt-4o-eu")
    model, deployment_type = resolve_deployment(eu, card)
    cost = price(eu, usage(prompt=10_000, cached=4_000, completion=1_000), "gpt-4o-2024-11-20", deployment_type, card)
    assert (cost.rate_id, cost.deployment_type) == (2, "datazone")
    assert cost.input_cost == Decimal("0.0165") and cost.cached_input_cost == Decimal("0.0055") and cost.output_cost == Decimal("0.011")
    chat = event(deployment="chat-prod", model=None)
    model, deployment_type = resolve_deployment(chat, card)
    cost = price(chat, usage(prompt=1_000, completion=1_000), model, deployment_type, card)
    assert model == "gpt-4o-mini" and cost.rate_id == 3 and cost.total_cost == Decimal("0.00075")


@pytest.mark.parametrize(
    "model, expected",
    [
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("gpt-35-turbo-0125", "gpt-35-turbo"),
        ("gpt-4-0613", "gpt-4"),
        ("o1-preview", "o1"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("o3-pro", None),  # a different model that shares a prefix: never priced as o3
        ("o3-pro-2025-06-10", None),
        ("gpt-4-32k-0613", None),
        ("gpt-4-turbo-2024-04-09", None),
        ("gpt-4o-realtime-preview", None),
        ("gpt-4o-mini-2024-07-18.ft-9a8b7c", None),  # fine-tuned models have their own prices
    ],
)
def test_only_version_suffixes_extend_a_card_model(model, expected):
    card = RateCard([rate("gpt-4o", rate_id=1), rate("gpt-4o-mini", rate_id=2), rate("gpt-4", rate_id=3),
                     rate("gpt-35-turbo", rate_id=4), rate("o1", rate_id=5), rate("o3", rate_id=6)])
    assert card.card_model_for(model) == expected


def test_a_sender_cannot_grow_the_card_model_cache():
    """``card_model_for`` remembers the names it has matched; names a sender makes up (long ones,
    or very many) are matched each time instead of growing the cache without bound."""
    from metering.price.pricing import RateCard

    card = RateCard([], [])
    assert card.card_model_for("x" * 100_000) is None and card._model_cache == {}
    for n in range(5000):
        card.card_model_for(f"model-{n}")
    assert len(card._model_cache) == 4096
