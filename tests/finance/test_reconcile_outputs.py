"""What people read of a reconciliation (issue #25, "Reconcile outputs"), on the demo month: an
unknown cost is empty, never 0; no "-0.00"; in the table, HTML and XLSX the difference is the shown
billed minus the shown metered cents and its parts add up to it; XLSX money and prices are numeric
cells in cents with the currency code; tier and kind never read alike; the chart is readable at
1280 px (one row per resource × meter, labels whole)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from decimal import Decimal
from pathlib import Path
from xml.etree import ElementTree

import pytest

from metering.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
MONTH = "2026-10"
PHI = "phi-4-mini-instruct input global"  # the demo's model without a card rate
BYPASS = "gpt-4o-mini-2024-07-18 input datazone"  # billed 0.0549, metered 0.0339: the 0.05 − 0.03


def metering(*args: str) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(list(args))
    assert code == 0, args
    return buffer.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{folder / 'metering.db'}"
    for args in (["db", "upgrade"], ["rates", "import", str(SAMPLES / "rates.csv")],
                 ["deployments", "import", str(SAMPLES / "deployments.csv")], ["replay", str(SAMPLES / "events")],
                 ["backends", "import", str(SAMPLES / "backends.csv")],
                 ["bill", "import", str(SAMPLES / "bill-2026-10.focus.csv")]):
        metering("--db", url, *args)
    return url, folder


def reconcile(demo, fmt: str, *extra: str) -> str | bytes:
    url, folder = demo
    path = folder / f"reconcile-{'-'.join(extra) or 'default'}.{fmt}"
    metering("--db", url, "reconcile", "--month", MONTH, "--output", str(path), *extra)
    return path.read_bytes() if fmt == "xlsx" else path.read_text(encoding="utf-8")


def _cents(text: str) -> Decimal:
    return Decimal(text.replace(",", "").split()[0])


def test_an_unpriced_model_has_no_metered_cost_anywhere(demo):
    document = json.loads(reconcile(demo, "json"))
    row = next(r for r in document["rows"] if r["meter"] == PHI)
    assert row["metered_cost"] is None and row["difference"] is None and Decimal(row["unpriced"]) > 0
    csv_row = next(r for r in csv.DictReader(io.StringIO(reconcile(demo, "csv"))) if r["meter"] == PHI)
    assert csv_row["metered_cost"] == "" and csv_row["difference"] == ""
    line = next(line for line in reconcile(demo, "table").splitlines() if PHI in line)
    # billed 0.00 (under half a cent), metered unknown, difference empty, explained as unpriced
    assert re.search(r"\s900\s+900\s+0\.00\s+unpriced\s{4,}unpriced \+<0\.01 USD$", line), line
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(reconcile(demo, "xlsx")))["Reconciliation"]
    header = [c.value for c in sheet[1]]
    cells = next(row for row in sheet.iter_rows(min_row=2) if row[header.index("meter")].value == PHI)
    assert cells[header.index("metered_cost")].value is None and cells[header.index("difference")].value is None


def test_no_negative_zero_is_shown(demo):
    for fmt in ("table", "html"):
        text = reconcile(demo, fmt)
        assert "(unmapped backend)" in text
        assert not re.search(r"[-−]0\.00(?!\d)", text), fmt
    for line in reconcile(demo, "csv").splitlines():
        assert not re.search(r"(^|,)-0(,|$)", line)


def test_the_shown_difference_is_the_shown_billed_minus_the_shown_metered(demo):
    table = reconcile(demo, "table").splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("resource"))
    rows = [line for line in table[header + 2:] if line and not line.startswith("-")]
    checked = 0
    for line in rows[:-1]:
        numbers = re.findall(r"(?<=\s)-?[\d,]+\.\d\d(?=\s|$)", line)
        if len(numbers) == 3:
            billed, metered, difference = (_cents(n) for n in numbers)
            assert difference == billed - metered, line
            checked += 1
    assert checked > 40
    bypass = next(line for line in rows if BYPASS in line)
    assert re.search(r"0\.05\s+0\.03\s+0\.02\s+bypass \+0\.02 USD", bypass), bypass
    html = reconcile(demo, "html")
    for row in re.findall(r"<tr>(.*?)</tr>", html.split("<tbody>")[1].split("</tbody>")[0]):
        cells = re.findall(r'data-exact="[^"]*">(-?[\d.]+)<', row)
        if len(cells) == 3:
            assert Decimal(cells[2]) == Decimal(cells[0]) - Decimal(cells[1]), row


def test_xlsx_numbers_are_numeric_cells_in_cents_with_the_currency(demo):
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(reconcile(demo, "xlsx")))["Reconciliation"]
    header = [c.value for c in sheet[1]]
    parts = ("bypass", "price", "unpriced", "capacity", "unmapped_backend", "day_boundary", "unknown_meter", "unexplained")
    prices = 0
    for row in sheet.iter_rows(min_row=2):
        value = {name: row[i] for i, name in enumerate(header)}
        for name in ("billed_cost", "metered_cost", "difference", *parts):
            cell = value[name]
            if cell.value is not None:
                assert isinstance(cell.value, (int, float)) and cell.number_format.startswith('#,##0.00 "USD"'), name
                assert Decimal(str(cell.value)) == Decimal(str(cell.value)).quantize(Decimal("0.01"))
        for name in ("billed_unit_price", "card_unit_price"):
            if value[name].value is not None:
                assert isinstance(value[name].value, (int, float)) and '"USD/1M"' in value[name].number_format
                prices += 1
        if value["metered_cost"].value is not None:
            billed, metered = Decimal(str(value["billed_cost"].value)), Decimal(str(value["metered_cost"].value))
            assert Decimal(str(value["difference"].value)) == billed - metered
            assert sum(Decimal(str(value[p].value)) for p in parts) == billed - metered
    assert prices > 40


def test_tier_and_kind_never_read_alike(demo):
    meters = [row["meter"] for row in json.loads(reconcile(demo, "json", "--by", "meter"))["rows"]]
    assert "gpt-4.1-2025-04-14 input global" in meters and "gpt-4.1-2025-04-14 input global, priority tier" in meters
    assert len(set(meters)) == len(meters)


def test_the_chart_is_one_row_per_resource_and_meter_with_whole_labels(demo):
    html = reconcile(demo, "html")
    svg = re.search(r'<svg class="chart".*?</svg>', html, re.S).group(0)
    tree = ElementTree.fromstring(svg)
    width, height = (float(v) for v in tree.get("viewBox").split()[2:])
    assert width >= 900 and height <= 1200  # at 1280 px it is shown at most 960 px wide: about a screen
    texts = ["".join(t.itertext()) for t in tree.iter("{http://www.w3.org/2000/svg}text")]
    assert not [t for t in texts if "…" in t]  # no label of the demo is cut
    assert "cache_write · global · priority tier — aoai-eastus2" in texts
    assert "input · global — aoai-eastus2" in texts
    assert "capacity (hourly) — aoai-ptu-swedencentral" in texts
    assert "and " in html and "smaller meter(s): see the table" in html
