"""The text-only shortcut of ``compute_cost_by_kind`` gives the general sums digit for digit (the
same ``Decimal`` coefficient and exponent, so the same stored text), on random counts and prices."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from metering.model import Rate, TokenUsage
from metering.price.pricing import _cost_of_every_kind, compute_cost_by_kind

counts = st.integers(min_value=0, max_value=10**9)
prices = st.decimals(min_value=Decimal("0"), max_value=Decimal("1000"), places=6, allow_nan=False, allow_infinity=False)


def _rate(input_per_1m: Decimal, cached: Decimal | None, output_per_1m: Decimal) -> Rate:
    return Rate(id=1, model="gpt-4o", deployment_type="global", region=None,
                effective_from=datetime(2024, 1, 1, tzinfo=timezone.utc), effective_to=None, currency="USD",
                input_per_1m=input_per_1m, cached_input_per_1m=cached, output_per_1m=output_per_1m)


@settings(max_examples=400, deadline=None)
@given(prompt=counts, cached_share=st.floats(0, 1), completion=counts,
       input_price=prices, cached_price=st.none() | prices, output_price=prices)
def test_text_only_costs_equal_the_general_sums(prompt, cached_share, completion, input_price, cached_price, output_price):
    usage = TokenUsage(prompt_tokens=prompt, cached_tokens=int(prompt * cached_share), completion_tokens=completion,
                       total_tokens=prompt + completion, source="reported")
    rate = _rate(input_price, cached_price, output_price)
    fast, general = compute_cost_by_kind(usage, rate), _cost_of_every_kind(usage, rate)
    assert fast == general
    assert [str(cost) for cost in fast[:3]] == [str(cost) for cost in general[:3]]
    assert [cost.as_tuple() for cost in fast[:3]] == [cost.as_tuple() for cost in general[:3]]


def test_any_other_token_kind_takes_the_general_sums():
    rate = _rate(Decimal("2.5"), Decimal("1.25"), Decimal("10"))
    usage = TokenUsage(prompt_tokens=100, completion_tokens=50, total_tokens=150, audio_prompt_tokens=40, source="reported")
    assert compute_cost_by_kind(usage, rate) == _cost_of_every_kind(usage, rate)
    assert compute_cost_by_kind(usage, rate)[3] == ["audio_input"]  # priced by fallback, and said so
