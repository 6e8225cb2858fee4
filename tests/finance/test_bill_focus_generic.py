"""FOCUS files written by FinOps tools that normalise several clouds: the FOCUS columns only, without
Microsoft's x_ extension (the FinOps Foundation's public sample data has this shape). The meter is
read from SkuPriceDetails, ChargeDescription, SkuId or ServiceName; a line no parser reads is kept by
name as an unknown meter, and the file is never refused for it."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from bill_exports import FOCUS_1_2_COLUMNS, Charge, focus_csv_without_extensions
from metering.finance.reconcile.bill import parse_bill_export
from shared_folder import shared_path

from finance.test_bill import BILLED, CHARGES, EXPECTED, RESOURCE, _import_all, _reconcile_json

SHARED_SAMPLE = shared_path("focus-sample-data/FOCUS-1.0/focus_sample.csv")


def test_a_focus_file_without_x_columns_reads_the_meter_from_the_charge_description():
    result = parse_bill_export("tool.csv", focus_csv_without_extensions(CHARGES))
    assert result.source_format == "focus"
    assert result.rows_read == 9 and result.other_services == 1 and len(result.lines) == 8
    assert sum(line.cost for line in result.lines) == BILLED
    by_meter = {(line.day.isoformat(), line.meter_name): line for line in result.lines}
    first = by_meter[("2026-10-05", "gpt-4o-1120-Inp-glbl")]
    assert (first.model, first.token_kind, first.deployment_type, first.tokens) == (
        "gpt-4o-2024-11-20", "input", "global", 550_000)
    assert by_meter[("2026-10-07", "Provisioned Managed Global")].token_kind == "capacity"
    assert "gpt4o realtimePrvw audio inp glbl" in result.unknown_meters  # kept by name, never a refusal


def test_a_charge_description_that_prefixes_the_product_still_names_the_meter():
    data = focus_csv_without_extensions(CHARGES, FOCUS_1_2_COLUMNS, description="{product} - {meter}")
    result = parse_bill_export("tool-1.2.csv", data)
    meters = {line.meter_name for line in result.lines}
    assert "gpt-4o-1120-Outp-glbl" in meters and "gpt-4o-mini-0718-Inp-glbl" in meters
    assert sum(line.cost for line in result.lines) == BILLED


def test_lines_no_column_names_are_kept_as_unknown_meters_by_their_best_name():
    charges = [Charge("2026-10-05", "gpt-4o-1120-Inp-glbl", "0.5", "1M Tokens", "1.25"),
               Charge("2026-10-05", "Azure OpenAI", "3", "1M Tokens", "0.30")]
    data = focus_csv_without_extensions(charges, description="{meter}").replace(b"gpt-4o-1120-Inp-glbl", b"Model usage")
    result = parse_bill_export("opaque.csv", data)
    assert {line.meter_name for line in result.lines} == {"Model usage", "Azure OpenAI"}
    assert all(line.token_kind is None for line in result.lines)
    assert sum(line.cost for line in result.lines) == Decimal("1.55")  # nothing dropped, nothing refused


def test_the_tool_written_focus_file_imports_and_reconciles(capsys, db, tmp_path):
    out = _import_all(capsys, db, tmp_path, focus_csv_without_extensions(CHARGES), "tool.csv")
    assert "8 bill line(s)" in out
    report = _reconcile_json(capsys, db)
    total = {k: Decimal(v) for k, v in report["total"].items() if k not in ("billed_quantity", "metered_quantity")}
    assert total["billed_cost"] == BILLED
    for name, amount in EXPECTED.items():
        assert total[name] == amount, name
    rows = {row["meter"]: row for row in report["rows"] if row["resource"] == RESOURCE.lower()}
    assert "price +0.17 USD" in rows["gpt-4o-2024-11-20 output global"]["explanation"]


def _sample_text() -> str:
    if SHARED_SAMPLE.is_file():
        return SHARED_SAMPLE.read_text(encoding="utf-8")
    pytest.skip("the FinOps Foundation's FOCUS sample (FOCUS-1.0/focus_sample.csv) is in no shared folder yet")


def test_the_foundation_sample_file_is_read_whole_and_keeps_no_foreign_line():
    """The public sample (AWS, GCP and Microsoft rows, no Azure OpenAI) is a FOCUS file to us: read to
    the end with NULL values, no line of another service kept, nothing refused."""
    text = _sample_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    result = parse_bill_export("focus_sample.csv", text.encode("utf-8"), allow_duplicates=True, allow_negative=True)
    assert result.source_format == "focus" and result.rows_read == len(rows)
    assert result.lines == [] and result.other_services + result.not_usage == len(rows)


def test_openai_rows_in_the_foundation_sample_shape_reconcile(capsys, db, tmp_path):
    """The sample's exact header with Azure OpenAI rows added: imported and every difference explained."""
    header = next(csv.reader(io.StringIO(_sample_text())))
    out = _import_all(capsys, db, tmp_path, focus_csv_without_extensions(CHARGES, header), "sample-shape.csv")
    assert "8 bill line(s)" in out
    total = _reconcile_json(capsys, db)["total"]
    assert Decimal(total["billed_cost"]) == BILLED and Decimal(total["unexplained"]) == 0
