"""`metering export focus`: FOCUS 1.2 rows, CSV or Parquet. Every mandatory column present with its
type; token-level rows (day × subscription × model × token kind); BilledCost adds up to the report."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from metering.finance import focus
from metering.cli import main
from metering.finance.capacity import parse_ptu_costs_csv
from metering.finance.report.options import Period
from metering.finance.report.build import build_report, export_focus
from report_data import MONTH, PTU_COSTS, db_total, seed

CHARGE_CATEGORIES = {"Usage", "Purchase", "Tax", "Credit", "Adjustment"}
TEXT_MANDATORY = [c for c in focus.MANDATORY if c not in focus.DECIMAL_COLUMNS | focus.DATETIME_COLUMNS]


@pytest.fixture
def seeded(engine):
    seed(engine)
    return engine


def records(engine, ptu: bool = False, left_out: list | None = None) -> list[dict]:
    with engine.connect() as conn:
        return export_focus(conn, Period.month(MONTH), "acct-1", "Contoso AI platform",
                            parse_ptu_costs_csv(PTU_COSTS) if ptu else None, left_out=left_out)


def parse_time(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00")


def check_csv(text: str) -> list[dict]:
    """The column and type check: every mandatory column, decimals, UTC ISO 8601 times, no nulls
    where FOCUS forbids them."""
    rows = list(csv.DictReader(io.StringIO(text)))
    header = next(csv.reader(io.StringIO(text)))
    assert set(focus.MANDATORY) <= set(header)
    assert len(header) == len(set(header))
    assert all(c in focus.MANDATORY + focus.OPTIONAL or c.startswith("x_") for c in header)  # extras are x_-prefixed
    for row in rows:
        for column in focus.MANDATORY:
            if column not in focus.NULLABLE_MANDATORY:
                assert row[column] != "", (column, row)
        for column in focus.DECIMAL_COLUMNS:
            if row[column] != "":
                Decimal(row[column])
        for column in focus.DATETIME_COLUMNS:
            parse_time(row[column])
        assert parse_time(row["ChargePeriodStart"]) < parse_time(row["ChargePeriodEnd"])
        assert parse_time(row["BillingPeriodStart"]) <= parse_time(row["ChargePeriodStart"])
        assert parse_time(row["ChargePeriodEnd"]) <= parse_time(row["BillingPeriodEnd"])
        assert row["ChargeCategory"] in CHARGE_CATEGORIES and row["ChargeClass"] == ""
        assert len(row["BillingCurrency"]) == 3
        json.loads(row["Tags"])
    return rows


def test_csv_has_every_mandatory_column_and_adds_up(seeded):
    expected, _, tokens = db_total(seeded)
    left_out: list = []
    rows = check_csv(focus.to_csv(records(seeded, left_out=left_out)))
    assert sum(Decimal(r["BilledCost"]) for r in rows) == expected
    for cost in ("EffectiveCost", "ListCost", "ContractedCost"):
        assert sum(Decimal(r[cost]) for r in rows) == expected
    # Every token once: on a usage row, or left out for want of a unit price (FOCUS needs one).
    assert left_out and {item.price_status for item in left_out} <= {"no_rate", "no_usage"}
    assert sum(Decimal(r["ConsumedQuantity"]) for r in rows) + sum(item.tokens for item in left_out) == tokens
    with seeded.connect() as conn:
        report = build_report(conn, Period.month(MONTH), ("business_unit",))
    assert sum(Decimal(r["BilledCost"]) for r in rows) == report.total["cost"]


def test_rows_are_token_level(seeded):
    rows = records(seeded)
    assert {r["x_TokenKind"] for r in rows} == {"input", "cached_input", "output"}
    for row in rows:
        assert (row["ConsumedUnit"], row["PricingUnit"]) == ("Tokens", "1000000 Tokens")
        assert row["PricingQuantity"] == row["ConsumedQuantity"] / Decimal(1_000_000)
        assert row["ChargePeriodEnd"] - row["ChargePeriodStart"] == (datetime(2026, 10, 2) - datetime(2026, 10, 1))
        if row["x_PriceStatus"] == "priced":
            assert row["ListUnitPrice"] * row["PricingQuantity"] == row["ListCost"]  # one unit price per row
            assert row["SkuPriceId"].startswith(row["SkuId"] + "@")  # a price of the row's SKU, never a rate row id
    grain = Counter((r["ChargePeriodStart"], r["SubAccountId"], r["ResourceId"], r["x_Model"], r["x_DeploymentType"],
                     r["RegionId"], r["SkuPriceId"], r["x_PriceStatus"], r["x_TokenKind"]) for r in rows)
    assert max(grain.values()) == 1
    # gpt-4.1 has no cached rate on the card: cached input is priced at the input rate.
    cached = [r for r in rows if r["x_Model"] == "gpt-4.1-2025-04-14" and r["x_TokenKind"] == "cached_input"]
    assert cached and all(r["ListUnitPrice"] == Decimal("2.00") for r in cached)


def test_unpriced_usage_is_left_out_with_a_reason_and_provisioned_tokens_cost_zero(seeded):
    # FOCUS 1.2: usage rows need a unit price (ListUnitPrice, ContractedUnitPrice, SkuPriceId not null),
    # and a made-up $0 would be a lie: unpriced usage comes back apart, for the command to report.
    left_out: list = []
    rows = records(seeded, left_out=left_out)
    assert not [r for r in rows if r["x_PriceStatus"] in ("no_rate", "no_usage")]
    assert left_out and all(item.tokens > 0 and item.requests > 0 for item in left_out)
    ptu = [r for r in rows if r["x_DeploymentType"] == "provisioned"]
    # No commitment discount exists: PTU tokens are Standard usage at unit price 0, capacity charged apart.
    assert ptu and all(r["BilledCost"] == 0 and r["ListUnitPrice"] == 0 and r["PricingCategory"] == "Standard"
                       for r in ptu)
    estimated = [r for r in rows if r["x_EstimatedShare"]]
    assert estimated and all(Decimal(0) < r["x_EstimatedShare"] <= 1 for r in estimated)
    unmapped = [r for r in rows if r["SubAccountId"] == "sub-lab"]
    assert unmapped and all(r["x_BusinessUnit"] == "(unmapped)" for r in unmapped)
    mapped = next(r for r in rows if r["SubAccountId"] == "sub-finance")
    assert (mapped["x_BusinessUnit"], mapped["x_CostCenter"]) == ("Finance", "CC-1042")
    assert json.loads(mapped["Tags"]) == {"BusinessUnit": "Finance", "CostCenter": "CC-1042"}


def test_ptu_allocation_rows(seeded):
    expected, _, _ = db_total(seeded)
    rows = check_csv(focus.to_csv(records(seeded, ptu=True)))
    allocated = [r for r in rows if r["x_ChargeSource"] == "ptu_allocation"]
    assert sum(Decimal(r["BilledCost"]) for r in allocated) == Decimal("1000.00")
    assert sum(Decimal(r["BilledCost"]) for r in rows) == expected + Decimal("1000.00")
    assert {r["ChargeFrequency"] for r in allocated} == {"Recurring"}
    assert {(r["ChargePeriodStart"], r["ChargePeriodEnd"]) for r in allocated} == {("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")}
    assert sum(Decimal(r["x_AllocationShare"]) for r in allocated) == pytest.approx(Decimal(1), abs=Decimal("1e-9"))


def test_parquet_types(seeded):
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected, _, _ = db_total(seeded)
    table = pq.read_table(io.BytesIO(focus.to_parquet(records(seeded, ptu=True))))
    schema = table.schema
    assert set(focus.MANDATORY) <= set(schema.names)
    for name in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "PricingQuantity"):
        assert schema.field(name).type == pa.decimal128(28, 12)
    for name in focus.DATETIME_COLUMNS:
        assert schema.field(name).type == pa.timestamp("us", tz="UTC")
    for name in TEXT_MANDATORY:
        assert schema.field(name).type == pa.string()
        assert table.column(name).null_count == (len(table) if name == "ChargeClass" else 0)
    assert sum(table.column("BilledCost").to_pylist()) == expected + Decimal("1000.00")


def test_export_command(seeded, tmp_path, capsys):
    db = seeded.url.render_as_string(hide_password=False)
    expected, _, _ = db_total(seeded)
    out = tmp_path / "focus.csv"
    assert main(["--db", db, "export", "focus", "--month", MONTH, "--output", str(out)]) == 0
    assert "BilledCost" in capsys.readouterr().out
    rows = check_csv(out.read_text(encoding="utf-8"))
    assert sum(Decimal(r["BilledCost"]) for r in rows) == expected
    assert {r["BillingAccountId"] for r in rows} == {"aoai-metering"}
    parquet = tmp_path / "focus.parquet"
    assert main(["--db", db, "export", "focus", "--month", MONTH, "--output", str(parquet),
                 "--billing-account-id", "ea-1234"]) == 0
    assert parquet.read_bytes()[:4] == b"PAR1"
    assert main(["--db", db, "export", "focus", "--month", MONTH, "--output", str(tmp_path / "focus.xlsx")]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err
    assert main(["--db", db, "export", "focus", "--month", "October", "--output", str(out)]) == 2


def test_month_bounds_wrap_the_year():
    assert focus.month_bounds("2026-12") == (datetime(2026, 12, 1, tzinfo=timezone.utc), datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert focus.region_id("Sweden Central") == "swedencentral" and focus.region_id(None) is None
