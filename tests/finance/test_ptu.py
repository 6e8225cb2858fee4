"""PTU allocation: exact parts in whole cents that add up to the monthly cost, deterministic
remainders, the same subscription amounts whatever the report is grouped by, and a strict CSV."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering.finance.capacity import UNALLOCATED, PtuCost, PtuCostError, allocate, allocate_ptu, by_subscription, parse_ptu_costs_csv, unit_of

COST = PtuCost("gpt-4o-ptu", "aoai-ptu", "2026-10", Decimal("1000.00"), "USD")


def test_thirds_give_the_leftover_cent_to_the_first_key():
    parts = allocate(Decimal("100.00"), {"b": 1, "a": 1, "c": 1})
    assert parts == {"a": Decimal("33.34"), "b": Decimal("33.33"), "c": Decimal("33.33")}
    assert sum(parts.values()) == Decimal("100.00")


def test_largest_remainder_wins_the_cent():
    # exact shares 0.0166…, 0.0333…, 0.0500 of 0.10 → 1.67, 3.33, 5 cents: the 0.67 remainder gets the cent
    assert allocate(Decimal("0.10"), {"x": 1, "y": 2, "z": 3}) == {"x": Decimal("0.02"), "y": Decimal("0.03"), "z": Decimal("0.05")}


def test_zero_weight_gets_nothing_and_all_zero_is_refused():
    assert allocate(Decimal("10.00"), {"a": 0, "b": 5}) == {"a": Decimal("0.00"), "b": Decimal("10.00")}
    with pytest.raises(ValueError):
        allocate(Decimal("10.00"), {"a": 0})


def test_costs_with_more_decimals_are_split_in_their_own_unit():
    assert unit_of(Decimal("12")) == Decimal("0.01")
    assert unit_of(Decimal("0.125")) == Decimal("0.001")
    parts = allocate(Decimal("0.125"), {"a": 1, "b": 1})
    assert sum(parts.values()) == Decimal("0.125") and set(parts.values()) == {Decimal("0.063"), Decimal("0.062")}


@given(
    cents=st.integers(min_value=0, max_value=10**9),
    weights=st.dictionaries(st.text(min_size=1, max_size=5), st.integers(min_value=0, max_value=10**7), min_size=1, max_size=12),
)
def test_parts_are_exact_and_within_a_cent_of_the_true_share(cents, weights):
    if sum(weights.values()) == 0:
        return
    amount = Decimal(cents).scaleb(-2)
    parts = allocate(amount, weights)
    assert sum(parts.values()) == amount
    total = sum(weights.values())
    for key, part in parts.items():
        exact = Fraction(cents, 100) * weights[key] / total
        assert abs(Fraction(part) - exact) < Fraction(1, 100)
        assert part == part.quantize(Decimal("0.01"))
    assert allocate(amount, dict(reversed(list(weights.items())))) == parts  # order of input does not matter


def usage(subscription: str, tokens: int, **dims) -> dict:
    return {"ptu_month": "2026-10", "ptu_deployment": "gpt-4o-ptu", "ptu_backend_id": "aoai-ptu",
            "ptu_subscription": subscription, "requests": 1, "tokens": tokens} | dims


def test_subscription_amounts_do_not_depend_on_the_grouping():
    rows = [usage("sub-a", 700, day="2026-10-01", model="m"), usage("sub-a", 300, day="2026-10-02", model="m"),
            usage("sub-b", 1000, day="2026-10-01", model="m"), usage("sub-c", 1, day="2026-10-03", model="m")]
    by_sub = {p["subscription"]: p["ptu_cost"] for p in by_subscription(allocate_ptu([COST], rows, ()))}
    assert sum(by_sub.values()) == Decimal("1000.00")
    for dims in (("day",), ("model",), ("day", "model")):
        allocations = allocate_ptu([COST], rows, dims)
        assert {p["subscription"]: p["ptu_cost"] for p in by_subscription(allocations)} == by_sub
        assert sum(a.amount for a in allocations) == Decimal("1000.00")
    assert by_sub == {"sub-a": Decimal("499.75"), "sub-b": Decimal("499.75"), "sub-c": Decimal("0.50")}


def test_other_deployments_backends_and_months_are_not_counted():
    rows = [usage("sub-a", 100), usage("sub-b", 100) | {"ptu_backend_id": "other"},
            usage("sub-c", 100) | {"ptu_month": "2026-09"}, usage("sub-d", 100) | {"ptu_deployment": "gpt-4o"}]
    parts = by_subscription(allocate_ptu([COST], rows, ()))
    assert [(p["subscription"], p["ptu_cost"]) for p in parts] == [("sub-a", Decimal("1000.00"))]
    any_backend = PtuCost("gpt-4o-ptu", None, "2026-10", Decimal("10.00"), "USD")
    assert {p["subscription"] for p in by_subscription(allocate_ptu([any_backend], rows, ()))} == {"sub-a", "sub-b"}


def test_unused_capacity_goes_to_unallocated():
    allocations = allocate_ptu([COST], [], ("business_unit", "month"))
    assert [(a.subscription, a.group, a.amount) for a in allocations] == [(UNALLOCATED, (UNALLOCATED, "2026-10"), Decimal("1000.00"))]


def test_csv_parses_and_rejects_what_it_cannot_use():
    text = ("deployment,backend_id,month,monthly_cost,currency\n"
            "gpt-4o-ptu,aoai-ptu,2026-10,11160.00,USD\n"
            "gpt-4o-ptu,aoai-ptu-2,2026-10,5580,USD\n\n")
    assert parse_ptu_costs_csv(text)[1] == PtuCost("gpt-4o-ptu", "aoai-ptu-2", "2026-10", Decimal("5580"), "USD")
    with pytest.raises(PtuCostError, match="header"):
        parse_ptu_costs_csv("deployment,month,cost\n")
    with pytest.raises(PtuCostError) as error:
        parse_ptu_costs_csv("deployment,backend_id,month,monthly_cost,currency\n,x,2026-1,-5,dollars\ngpt,,2026-10\n")
    message = str(error.value)
    assert "line 2" in message and "deployment is empty" in message and "not YYYY-MM" in message
    assert "non-negative" in message and "three-letter" in message and "line 3: expected 5 fields" in message
    with pytest.raises(PtuCostError, match="priced more than once"):
        parse_ptu_costs_csv("deployment,backend_id,month,monthly_cost,currency\nd,,2026-10,1,USD\nd,b,2026-10,1,USD\n")


def test_any_fixed_cost_kind_is_allocated_by_all_of_the_deployments_tokens():
    """A fine-tuned deployment's hosting hours: its requests are priced per token (not provisioned),
    and its monthly hosting is shared by those tokens; a provisioned cost still counts PTU rows only."""
    text = ("deployment,backend_id,month,monthly_cost,currency,kind\n"
            "gpt-4o-ptu,aoai-ptu,2026-10,1000.00,USD,\n"
            "gpt-4o-ptu,aoai-ptu,2026-10,30.00,USD,Support\n"
            "ft-claims,,2026-10,1224.00,USD,fine_tune_hosting\n")
    ptu, support, hosting = parse_ptu_costs_csv(text)
    assert (ptu.kind, support.kind, hosting.kind) == ("provisioned", "support", "fine_tune_hosting")
    assert hosting.label == "ft-claims 2026-10 (fine_tune_hosting)"
    rows = [usage("sub-a", 300) | {"ptu_provisioned": True}, usage("sub-b", 100) | {"ptu_provisioned": False},
            usage("sub-a", 1) | {"ptu_deployment": "ft-claims", "ptu_backend_id": "aoai-ft", "ptu_provisioned": False},
            usage("sub-c", 2) | {"ptu_deployment": "ft-claims", "ptu_backend_id": "aoai-ft", "ptu_provisioned": False}]
    parts = {(p["deployment"], p["kind"], p["subscription"]): p["ptu_cost"]
             for p in by_subscription(allocate_ptu([ptu, support, hosting], rows, ()))}
    assert parts == {
        ("gpt-4o-ptu", "provisioned", "sub-a"): Decimal("1000.00"),  # PTU rows only
        ("gpt-4o-ptu", "support", "sub-a"): Decimal("22.50"), ("gpt-4o-ptu", "support", "sub-b"): Decimal("7.50"),
        ("ft-claims", "fine_tune_hosting", "sub-a"): Decimal("408.00"),
        ("ft-claims", "fine_tune_hosting", "sub-c"): Decimal("816.00"),
    }


def test_kinds_are_keys_of_the_overlap_check_and_must_be_names():
    header = "deployment,backend_id,month,monthly_cost,currency,kind\n"
    assert len(parse_ptu_costs_csv(header + "d,,2026-10,1,USD,provisioned\nd,,2026-10,1,USD,hosting\n")) == 2
    with pytest.raises(PtuCostError, match=r"d 2026-10 \(hosting\) is priced more than once"):
        parse_ptu_costs_csv(header + "d,,2026-10,1,USD,hosting\nd,b,2026-10,1,USD,hosting\n")
    with pytest.raises(PtuCostError, match="kind 'fine tune' is not a short name"):
        parse_ptu_costs_csv(header + "d,,2026-10,1,USD,fine tune\n")
