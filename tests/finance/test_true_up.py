"""The true-up (metering.finance.reconcile.true_up): whole cents that add up to the bill, a meter's
shortfall first to the requests that could hide usage (the two evasions of issue 25), a bill line of
an unmapped resource charged to nobody, and a negative charge that says why."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from metering.finance.reconcile.true_up import (
    HIDDEN_USAGE, OUTSIDE_BILL, UNATTRIBUTED, PtuShare, compute_true_up, headline, subscription_totals,
)
from metering.price.meters import Backend, BillLine
from metering.price.metered_kinds import KINDS

RESOURCE = "/subscriptions/0f3c/resourcegroups/rg/providers/microsoft.cognitiveservices/accounts/aoai-eastus2"
OTHER = "/subscriptions/0f3c/resourcegroups/rg/providers/microsoft.cognitiveservices/accounts/aoai-shadow"
BACKENDS = {"aoai-eastus2": Backend("aoai-eastus2", RESOURCE, "eastus2")}
MILLION = Decimal(1_000_000)
# o4-mini, global: 1.10 input and 4.40 output per 1M tokens
INPUT, OUTPUT = Decimal("1.10"), Decimal("4.40")


def group(subscription, *, input_tokens=0, output_tokens=0, requests=100, usage_source="reported",
          price_status="priced", backend="aoai-eastus2", model="o4-mini", day="2026-10-15"):
    """A metered group as db.bill.metered_usage(by_usage_source=True) returns it."""
    priced = price_status == "priced"
    row = {"day": day, "backend_id": backend, "model": model, "deployment_type": "global",
           "subscription": subscription, "price_status": price_status, "usage_source": usage_source,
           "service_tier": None, "requests": requests}
    for kind in KINDS:
        row[f"{kind}_tokens"] = 0
        row[f"{kind}_cost"] = Decimal(0) if priced else None
    row["input_tokens"], row["output_tokens"] = input_tokens, output_tokens
    if priced:
        row["input_cost"] = Decimal(input_tokens) * INPUT / MILLION
        row["output_cost"] = Decimal(output_tokens) * OUTPUT / MILLION
    return row


def bill_line(kind, tokens, cost, resource=RESOURCE, day=date(2026, 10, 15), meter=None):
    name = meter or f"o4-mini {'Inp' if kind == 'input' else 'Outp'} glbl Tokens"
    return BillLine(day, resource, name, "Foundry Models", "Azure OpenAI", "o4-mini", kind, "global",
                    Decimal(tokens) / 1000, "1K", tokens, Decimal(cost), "USD", "focus")


# Two subscriptions with the same true usage: 100 requests, 200,000 input and 1,000,000 output
# tokens each = 4.62 USD; the bill has both: 9.24.
BILL = [bill_line("input", 400_000, "0.44"), bill_line("output", 2_000_000, "8.80")]
TRUE_SHARE = Decimal("4.62")


def charges(result):
    return subscription_totals(result.lines)


def test_stream_without_usage_cannot_shift_its_reasoning_tokens_onto_others():
    """The evader streams with include_usage:false: its rows are lower-bound estimates (22,200 of its
    1,000,000 completion tokens seen). Token share charged it 0.45 and the other 8.79."""
    metered = [group("sub-honest", input_tokens=200_000, output_tokens=1_000_000),
               group("sub-evader", input_tokens=200_000, output_tokens=22_200, usage_source="estimated")]
    result = compute_true_up("2026-10", BILL, metered, BACKENDS)
    paid = charges(result)
    assert paid == {"sub-honest": TRUE_SHARE, "sub-evader": TRUE_SHARE}
    assert sum(paid.values()) == Decimal("9.24")
    evader_output = next(l for l in result.lines if l.subscription_id == "sub-evader" and l.token_kind == "output")
    assert evader_output.rule == HIDDEN_USAGE and "977,800-token shortfall" in evader_output.reason


def test_capture_usage_rows_without_usage_pay_their_true_share():
    """capture=usage: the evader's rows have no usage at all (no_usage). Token share charged it 0.04."""
    metered = [group("sub-honest", input_tokens=200_000, output_tokens=1_000_000),
               group("sub-evader", usage_source="none", price_status="no_usage")]
    paid = charges(compute_true_up("2026-10", BILL, metered, BACKENDS))
    assert paid == {"sub-honest": TRUE_SHARE, "sub-evader": TRUE_SHARE}


def test_hidden_usage_is_bounded_by_what_reported_requests_use():
    """The bound the docs state: each suspect request absorbs at most the meter's mean reported tokens
    per request (less what its estimate counted); the rest of a shortfall (here: 1,000,000 output
    tokens billed that nobody metered, calls around the gateway) goes by token share."""
    bill = [bill_line("input", 400_000, "0.44"), bill_line("output", 3_000_000, "13.20")]
    metered = [group("sub-honest", input_tokens=200_000, output_tokens=1_000_000),
               group("sub-evader", input_tokens=200_000, output_tokens=22_200, usage_source="estimated")]
    result = compute_true_up("2026-10", bill, metered, BACKENDS)
    paid = charges(result)
    # the evader: its true share plus a token share (22,200 of 1,022,200) of the unexplained 4.40
    assert paid["sub-evader"] >= TRUE_SHARE
    assert paid["sub-evader"] == (TRUE_SHARE + Decimal("4.40") * 22_200 / 1_022_200).quantize(Decimal("0.01"))
    assert sum(paid.values()) == Decimal("13.64")


def test_a_resource_no_backend_maps_to_is_charged_to_nobody():
    metered = [group("sub-a", input_tokens=200_000, output_tokens=1_000_000),
               group("sub-b", input_tokens=200_000, output_tokens=1_000_000)]
    bill = BILL + [bill_line("output", 22_727_272, "100.00", resource=OTHER)]
    result = compute_true_up("2026-10", bill, metered, BACKENDS)
    paid = charges(result)
    assert paid == {"sub-a": TRUE_SHARE, "sub-b": TRUE_SHARE, None: Decimal("100.00")}
    (line,) = [l for l in result.lines if l.subscription_id is None]
    assert line.rule == UNATTRIBUTED and line.resource_id == OTHER and "no backend maps to this resource" in line.reason


def test_an_owner_named_in_the_backends_csv_pays_for_its_resource():
    backends = {**BACKENDS, "shadow": Backend("shadow", OTHER, "eastus2", owner_subscription_id="sub-platform")}
    metered = [group("sub-a", input_tokens=200_000, output_tokens=1_000_000),
               group("sub-b", input_tokens=200_000, output_tokens=1_000_000)]
    bill = BILL + [bill_line("output", 22_727_272, "100.00", resource=OTHER)]
    paid = charges(compute_true_up("2026-10", bill, metered, backends))
    assert paid == {"sub-a": TRUE_SHARE, "sub-b": TRUE_SHARE, "sub-platform": Decimal("100.00")}


def test_final_charges_are_whole_cents_that_add_up_to_the_bill():
    """Metered costs with fractions of a cent, three subscriptions: rounded on the final charge, not on
    the adjustment, so the charges add up to the bill (rounded to the cent) exactly, on every line too."""
    metered = [group("sub-a", input_tokens=333_333, output_tokens=111_111),
               group("sub-b", input_tokens=333_333, output_tokens=111_111),
               group("sub-c", input_tokens=333_334, output_tokens=111_112)]
    bill = [bill_line("input", 1_000_000, "1.1000004"), bill_line("output", 333_334, "1.4666696")]
    result = compute_true_up("2026-10", bill, metered, BACKENDS)
    for line in result.lines:
        assert line.final_charge == line.final_charge.quantize(Decimal("0.01"))
        assert line.metered_cost + line.ptu_cost + line.adjustment == line.final_charge
    assert sum(charges(result).values()) == Decimal("2.57")
    figures = headline(result.lines)
    assert figures["bill"] == Decimal("2.57")
    assert figures["metered"] + figures["ptu"] + figures["adjustment"] == figures["bill"]


def test_a_negative_charge_says_why():
    """The bill credits a meter (a refund line) beyond what a subscription was metered: its charge is
    negative, and both its line and the notes say why."""
    metered = [group("sub-a", input_tokens=200_000, output_tokens=100_000)]
    bill = [bill_line("input", 200_000, "0.22"), bill_line("output", 100_000, "-1.00")]
    result = compute_true_up("2026-10", bill, metered, BACKENDS)
    assert charges(result) == {"sub-a": Decimal("-0.78")}
    negative = [l for l in result.lines if l.final_charge < 0]
    assert negative and all(l.reason.startswith("negative: the bill charged less than was metered") for l in negative)
    assert any("sub-a has a negative charge -0.78 USD" in note for note in result.notes)


def test_metered_cost_this_bill_does_not_cover_is_taken_out_and_said():
    metered = [group("sub-a", input_tokens=200_000, output_tokens=1_000_000),
               group("sub-a", input_tokens=1_000, backend="aoai-unknown")]
    result = compute_true_up("2026-10", BILL, metered, BACKENDS)
    assert charges(result) == {"sub-a": Decimal("9.24")}
    (outside,) = [l for l in result.lines if l.rule == OUTSIDE_BILL]
    assert outside.final_charge == 0 and outside.metered_cost == Decimal("0.0011")
    assert "backend aoai-unknown maps to no resource" in outside.reason


def test_ptu_allocations_are_charged_and_trued_up_by_the_capacity_lines():
    capacity = BillLine(date(2026, 10, 15), RESOURCE, "Provisioned Managed Global Hourly", "Foundry Models",
                        "Azure OpenAI", None, "capacity", "provisioned", Decimal(24), "1 Hour", None,
                        Decimal("3.00"), "USD", "focus")
    metered = [group("sub-a", input_tokens=200_000, output_tokens=1_000_000)]
    ptu = [PtuShare("gpt-4o-ptu", "aoai-eastus2", "sub-a", Decimal("1.50"), "USD"),
           PtuShare("gpt-4o-ptu", "aoai-eastus2", "sub-b", Decimal("0.50"), "USD")]
    result = compute_true_up("2026-10", [*BILL, capacity], metered, BACKENDS, ptu)
    paid = charges(result)
    assert paid == {"sub-a": Decimal("9.24") + Decimal("2.25"), "sub-b": Decimal("0.75")}
    assert headline(result.lines) == {"bill": Decimal("12.24"), "metered": Decimal("4.62"), "ptu": Decimal("2.00"),
                                      "adjustment": Decimal("5.62")}


def test_no_bill_and_two_currencies_are_refused():
    from metering.finance.reconcile.true_up import TrueUpError

    with pytest.raises(TrueUpError, match="no bill lines"):
        compute_true_up("2026-10", [], [], BACKENDS)
    with pytest.raises(TrueUpError, match="metered cost in EUR"):
        compute_true_up("2026-10", BILL, [], BACKENDS, metered_currencies=["EUR"])


def test_the_backends_csv_names_an_optional_owner():
    from metering.finance.reconcile.bill import BillError, parse_backends_csv

    rows = parse_backends_csv(f"backend_id,resource_id,region,owner_subscription_id\n"
                              f"aoai-eastus2,/subscriptions/0f3c2a1b-5d6e-4f70-8a9b-1c2d3e4f5a6b/resourceGroups/rg/"
                              f"providers/Microsoft.CognitiveServices/accounts/aoai-eastus2,eastus2,sub-platform\n"
                              f"aoai-west,/subscriptions/0f3c2a1b-5d6e-4f70-8a9b-1c2d3e4f5a6b/resourceGroups/rg/"
                              f"providers/Microsoft.CognitiveServices/accounts/aoai-west,westeurope,\n")
    assert [(b.backend_id, b.owner_subscription_id) for b in rows] == [("aoai-eastus2", "sub-platform"), ("aoai-west", None)]
    with pytest.raises(BillError, match="owner_subscription_id is longer than 200"):
        parse_backends_csv("backend_id,resource_id,owner_subscription_id\n"
                           "b,/subscriptions/0f3c2a1b-5d6e-4f70-8a9b-1c2d3e4f5a6b/resourceGroups/rg/providers/"
                           f"Microsoft.CognitiveServices/accounts/a,{'x' * 201}\n")


def test_two_allocations_of_one_deployment_and_subscription_are_one_line():
    """ptu_allocations may hold a deployment twice for a subscription (two backends, neither mapped):
    the stored true-up has one line per subscription × resource × meter, its unique key."""
    ptu = [PtuShare("gpt-4o-ptu", "ptu-a", "sub-a", Decimal("1.00"), "USD"),
           PtuShare("gpt-4o-ptu", "ptu-b", "sub-a", Decimal("0.50"), "USD")]
    result = compute_true_up("2026-10", BILL, [group("sub-a", input_tokens=400_000, output_tokens=2_000_000)],
                             BACKENDS, ptu)
    keys = [(l.subscription_id, l.resource_id, l.meter) for l in result.lines]
    assert len(keys) == len(set(keys))
    assert sum(l.ptu_cost for l in result.lines) == Decimal("1.50")
    # no capacity line: PTU billed as a reservation (a purchase): the allocation stands, counted as billed
    assert charges(result) == {"sub-a": Decimal("10.74")} and result.bill == Decimal("10.74")
    assert any("the bill has no capacity lines" in note for note in result.notes)
