"""The FOCUS 1.2 rules the official validator never runs on this data (focus-validator 2.2.1 guards
the "ChargeClass is not Correction" rules with ``ChargeClass = 'Correction'``, so they are skipped on
every ordinary row) and the rules it cannot check (stable ids over time, one name per id), checked
on a seeded month with PTU capacity, an unmapped backend, a model without a rate and a rate card
that changes mid-month."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from decimal import Decimal

import pytest

from db import bill as bill_store
from db import rate_card as rate_card_store
from db import subscriptions as subscription_store
from events import encode
from metering.finance import focus
from metering.finance.reconcile.bill import parse_backends_csv
from metering.finance.capacity import parse_ptu_costs_csv
from metering.finance.report.options import Period
from metering.finance.report.build import export_focus
from metering.ingest import Ingestor
from metering.model import RawEvent
from metering.price.mappings import parse_deployments_csv
from metering.price.rate_card import parse_rates_csv
from report_data import DEPLOYMENTS, MONTH, PTU_COSTS, RATES, SUBSCRIPTIONS, db_total, events

ARM = "/subscriptions/0f3c2a1b-5d6e-4f70-8a9b-1c2d3e4f5a6b/resourcegroups/rg-ai/providers/microsoft.cognitiveservices/accounts/"
# aoai-swedencentral (the default backend of the test events) and the PTU backend are mapped to their
# Azure resources; any other backend is not.
BACKENDS = ("backend_id,resource_id,region\n"
            f"aoai-swedencentral,{ARM}aoai-swedencentral,swedencentral\n"
            f"aoai-ptu,{ARM}aoai-ptu,swedencentral\n")
# gpt-4o's card gets a new row on the 15th at the same prices (a new effective date, the same SKU
# price), gpt-4o-mini's a new output price on the 8th (a new SKU price of the same SKU).
MID_MONTH_RATES = RATES.replace(
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n",
    "gpt-4o,global,,2024-01-01,2026-10-15,USD,2.50,1.25,10.00\n"
    "gpt-4o,global,,2026-10-15,,USD,2.50,1.25,10.00\n",
).replace(
    "gpt-4o-mini,datazone,,2024-07-18,,USD,0.165,0.083,0.66\n",
    "gpt-4o-mini,datazone,,2024-07-18,2026-10-08,USD,0.165,0.083,0.66\n"
    "gpt-4o-mini,datazone,,2026-10-08,,USD,0.165,0.083,0.70\n",
)
USAGE_OR_PURCHASE = ("Usage", "Purchase")


@pytest.fixture
def seeded(engine):
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(MID_MONTH_RATES))
        rate_card_store.replace_deployments(conn, parse_deployments_csv(DEPLOYMENTS))
        subscription_store.replace_subscriptions(conn, SUBSCRIPTIONS)
        bill_store.replace_backends(conn, parse_backends_csv(BACKENDS))
    Ingestor(engine).ingest([RawEvent(encode(e)) for e in events()])
    return engine


def stored_true_up(conn) -> list[dict]:
    """A stored true-up (``true_up_allocations`` rows) with the PTU allocation of ``PTU_COSTS`` and a
    0.25 adjustment for sub-finance: the export then has usage, PTU and Adjustment rows."""
    from metering.finance.report.build import ptu_allocation_rows

    zero = Decimal(0)
    rows = [{"subscription_id": a["subscription_id"], "resource_id": (ARM + "aoai-ptu").lower(),
             "meter": f"PTU {a['deployment']}", "tokens": a["tokens"], "metered_cost": zero,
             "ptu_cost": a["allocated_cost"], "adjustment": zero, "final_charge": a["allocated_cost"], "currency": "USD"}
            for a in ptu_allocation_rows(conn, MONTH, parse_ptu_costs_csv(PTU_COSTS))]
    return rows + [{"subscription_id": "sub-finance", "resource_id": (ARM + "aoai-swedencentral").lower(),
                    "meter": "gpt-4o input global", "tokens": 0, "metered_cost": zero, "ptu_cost": zero,
                    "adjustment": Decimal("0.25"), "final_charge": Decimal("0.25"), "currency": "USD"}]


def export(engine, left_out: list | None = None) -> list[dict]:
    with engine.connect() as conn:
        return export_focus(conn, Period.month(MONTH), "acct-1", "Contoso AI platform",
                            None, stored_true_up(conn), left_out)


def test_rules_guarded_by_not_correction_hold(seeded):
    rows = export(seeded)
    assert {r["ChargeCategory"] for r in rows} == {"Usage", "Adjustment"}
    assert all(r["ChargeClass"] is None for r in rows)  # no row corrects an earlier invoice
    for row in rows:
        if row["ChargeCategory"] in USAGE_OR_PURCHASE:
            for column in ("SkuId", "SkuPriceId", "SkuPriceDetails", "SkuMeter", "ListUnitPrice",
                           "ContractedUnitPrice", "PricingQuantity", "PricingUnit", "PricingCategory"):
                assert row[column] is not None, (column, row)
            # Unit price × pricing quantity is the cost, exactly (no Correction rows excuse a discrepancy).
            assert row["ListUnitPrice"] * row["PricingQuantity"] == row["ListCost"], row
            assert row["ContractedUnitPrice"] * row["PricingQuantity"] == row["ContractedCost"], row
            assert row["ListUnitPrice"] >= 0 and row["ContractedUnitPrice"] >= 0
        if row["ChargeCategory"] == "Usage":
            assert row["ConsumedQuantity"] is not None and row["ConsumedUnit"] is not None
        else:
            assert row["ConsumedQuantity"] is None and row["ConsumedUnit"] is None
        assert row["PricingCategory"] != "Committed" and row["CommitmentDiscountStatus"] is None  # no commitment
        assert (row["SkuPriceDetails"] is None) == (row["SkuPriceId"] is None)
        assert (row["SkuMeter"] is None) == (row["SkuId"] is None)
        assert (row["ResourceType"] is None) == (row["ResourceId"] is None)
        assert (row["SubAccountName"] is None) == (row["SubAccountId"] is None)
        assert row["ChargeFrequency"] != "Usage-Based" or row["ChargeCategory"] != "Purchase"
        if row["SkuPriceDetails"] is not None:
            details = json.loads(row["SkuPriceDetails"])
            assert details and all(key.startswith("x_") for key in details)


def test_sku_price_ids_are_stable_and_have_one_sku_and_one_price(seeded):
    rows = [r for r in export(seeded) if r["SkuPriceId"] is not None]
    skus, prices, details = defaultdict(set), defaultdict(set), defaultdict(set)
    for row in rows:
        skus[row["SkuPriceId"]].add(row["SkuId"])
        prices[row["SkuPriceId"]].add(row["ListUnitPrice"])
        details[row["SkuPriceId"]].add(row["SkuPriceDetails"])
    assert all(len(v) == 1 for v in skus.values()), skus
    assert all(len(v) == 1 for v in prices.values()), prices
    assert all(len(v) == 1 for v in details.values()), details
    # gpt-4o input was priced by two rate rows (a new effective date, the same price): one SKU price.
    gpt4o = [r for r in rows if r["SkuId"] == "gpt-4o/global/standard/input"]
    assert {r["ChargePeriodStart"].day < 15 for r in gpt4o} == {True, False}
    assert {r["SkuPriceId"] for r in gpt4o} == {"gpt-4o/global/standard/input@any-region/USD/2.5"}
    # gpt-4o-mini output changed price on the 8th: two SKU prices of one SKU.
    mini = [r for r in rows if r["x_Model"] == "gpt-4o-mini-2024-07-18" and r["x_TokenKind"] == "output"]
    assert {r["SkuId"] for r in mini} == {"gpt-4o-mini/datazone/standard/output"}
    assert {r["ListUnitPrice"] for r in mini} == {Decimal("0.66"), Decimal("0.70")}
    assert len({r["SkuPriceId"] for r in mini}) == 2
    assert not any(r["SkuPriceId"].startswith("rate-") or r["SkuId"].startswith("rate-") for r in rows)


def test_no_token_counted_twice_and_unpriced_usage_accounted_for(seeded):
    left_out: list = []
    rows = export(seeded, left_out)
    _, _, tokens = db_total(seeded)
    consumed = sum(r["ConsumedQuantity"] for r in rows if r["ConsumedUnit"] == "Tokens")
    assert consumed + sum(item.tokens for item in left_out) == tokens
    assert {item.model for item in left_out} == {"mystery-7b"}
    capacity = [r for r in rows if r["x_ChargeSource"] == "ptu_allocation"]
    assert capacity and {r["ConsumedUnit"] for r in capacity} == {"Months"}
    assert sum(r["BilledCost"] for r in capacity) == Decimal("1000.00")
    assert sum(r["PricingQuantity"] for r in capacity) == pytest.approx(Decimal(1), abs=Decimal("1e-9"))


def test_resource_and_sub_account_identity(seeded):
    rows = export(seeded)
    names = defaultdict(set)
    for row in rows:
        names[row["SubAccountId"]].add(row["SubAccountName"])
    assert all(len(v) == 1 for v in names.values()), names
    by_deployment = defaultdict(set)
    for row in rows:
        if row["x_Deployment"]:
            by_deployment[row["x_Deployment"]].add(row["ResourceId"])
        if row["ResourceId"] is not None:
            assert row["ResourceId"].startswith("/subscriptions/") and "/accounts/" in row["ResourceId"]
            assert row["ResourceName"] == row["ResourceId"].rsplit("/", 1)[-1]
    assert by_deployment["gpt-4o-ptu"] == {ARM + "aoai-ptu"}  # token rows and capacity rows: one resource
    assert {r["InvoiceId"] for r in rows} == {"acct-1-2026-10"}
    assert {(r["ProviderName"], r["InvoiceIssuerName"], r["PublisherName"]) for r in rows} == {
        ("Contoso AI platform", "Contoso AI platform", "Microsoft")}


def test_csv_decimals_read_as_decimals(seeded):
    text = focus.to_csv(export(seeded))
    for row in csv.DictReader(io.StringIO(text)):
        for column in focus.DECIMAL_COLUMNS:
            if row[column]:
                assert "." in row[column] and "e" not in row[column].lower(), (column, row[column])
                Decimal(row[column])


def test_the_command_says_what_it_left_out(seeded, tmp_path, capsys):
    from metering.cli import main

    db = seeded.url.render_as_string(hide_password=False)
    assert main(["--db", db, "export", "focus", "--month", MONTH, "--output", str(tmp_path / "f.csv")]) == 0
    err = capsys.readouterr().err
    assert "unpriced token(s) left out" in err and "mystery-7b" in err
    assert err.count("\n") == 1  # nothing else: every backend of these events is mapped to its Azure resource
