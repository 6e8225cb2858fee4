"""The HTML report: one self-contained file (no scripts, nothing from the network), four charts
as valid inline SVG, and — where Chromium is installed — it renders in a headless browser."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from decimal import Decimal
from pathlib import Path
from xml.etree import ElementTree

import pytest

from metering.finance.charts import nice_max
from metering.finance.report.html import Money
from metering.finance.capacity import parse_ptu_costs_csv
from metering.finance.report.render import render
from metering.finance.report.options import Period
from metering.finance.report.build import build_report
from report_data import MONTH, PTU_COSTS, seed

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or "")
                 if p and Path(p).exists()), None)
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def html(sqlite_engine) -> str:
    seed(sqlite_engine)
    with sqlite_engine.connect() as conn:
        report = build_report(conn, Period.month(MONTH), ("business_unit", "subscription"),
                              parse_ptu_costs_csv(PTU_COSTS), charts=True)
    return render(report, "html")


def test_self_contained(html):
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html.replace("url(#", "")
    assert "<img" not in html and "<iframe" not in html
    addresses = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert addresses <= {"http://www.w3.org/2000/svg"}, addresses


def test_four_charts_of_valid_svg_with_data(html):
    charts = re.findall(r'<svg class="chart".*?</svg>', html, re.S)
    titles = [re.search(r'aria-label="([^"]+)"', c).group(1) for c in charts]
    assert titles == ["Cost by business unit", "Top subscriptions by cost", "Cost per day", "Model mix"]
    for chart in charts:
        tree = ElementTree.fromstring(chart)  # well-formed XML
        bars = [r for r in tree.iter(f"{SVG}rect") if float(r.get("width", 0)) > 0 and r.get("fill") not in ("#f3f4f6",)]
        assert bars, "a chart without data marks"
    for heading in ("Data quality", "Cost by business unit", "Top subscriptions", "Cost over time", "Model mix",
                    "Chargeback by business unit, subscription", "PTU allocation"):
        assert f">{heading}<" in html


def test_people_read_money_in_cents():
    usd = Money("USD")
    assert usd(Decimal("1234.565")) == "$1,234.57"
    assert usd(Decimal("0.004")) == "< $0.01"
    assert Money("CHF")(Decimal("2")) == "2.00 CHF"
    assert nice_max(0.33) == (0.4, 0.1) and nice_max(7.5)[0] >= 7.5


def _png_size_and_variety(png: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the image data): a blank page has almost none."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    data, position = b"", 8
    while position < len(png):
        length = struct.unpack(">I", png[position:position + 4])[0]
        kind = png[position + 4:position + 8]
        if kind == b"IDAT":
            data += png[position + 8:position + 8 + length]
        position += 12 + length
    return width, height, len(set(zlib.decompress(data)))


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_renders_in_headless_chromium(html, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    shot = tmp_path / "report.png"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
               page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    width, height, variety = _png_size_and_variety(shot.read_bytes())
    assert (width, height) == (1280, 2000)
    assert variety > 100, "the screenshot looks blank"
    dom = subprocess.run([c for c in command if not c.startswith("--screenshot")] + ["--dump-dom"],
                         capture_output=True, text=True, timeout=120)
    assert dom.stdout.count('class="chart"') == 4  # the browser parsed all four charts


PDFTOTEXT = shutil.which("pdftotext")
MONEY_COLUMNS = ("PAY-AS-YOU-GO", "PTU", "CHARGE", "ESTIMATED", "INCOMPLETE", "UNPRICED")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(CHROMIUM is None or PDFTOTEXT is None,
                    reason="Chromium and poppler-utils are not installed (apt-get install chromium poppler-utils)")
@pytest.mark.parametrize("paper", ["A4", "letter"])
def test_the_printed_report_has_every_money_column(html, tmp_path, paper):
    """Printed (headless Chromium, landscape, the paper a user picks), the chargeback table keeps
    every column: pay-as-you-go, PTU, charge and the estimated, incomplete and unpriced counts, on
    the same line as its header and its total."""
    page = tmp_path / "report.html"
    page.write_text(html.replace("</style>", f"@page{{size:{paper} landscape}}</style>", 1), encoding="utf-8")
    pdf = tmp_path / "report.pdf"
    result = _chromium(tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri())
    assert pdf.exists() and pdf.stat().st_size > 10_000, result.stderr[-2000:]
    text = subprocess.run([PDFTOTEXT, "-layout", str(pdf), "-"], capture_output=True, text=True, timeout=60).stdout
    header = next((line for line in text.splitlines() if "PAY-AS-YOU" in line), "")
    assert all(name in header for name in MONEY_COLUMNS), header
    total = next(line for line in text.splitlines()[text.splitlines().index(header):] if line.strip().startswith("Total"))
    amounts = re.findall(r"\$[\d,]+\.\d\d", total)
    assert len(amounts) == 3, total  # pay-as-you-go, PTU, charge
    pdf_bytes = pdf.read_bytes()
    width, height = (float(v) for v in re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)", pdf_bytes).groups())
    assert width > height  # landscape
    assert (round(width), round(height)) == ((842, 595) if paper == "A4" else (792, 612))


MEASURE = """<script>addEventListener('load', () => {
  const wide = [...document.querySelectorAll('.table-wrap, .card, main')].filter(e => e.scrollWidth > e.clientWidth + 1);
  document.body.dataset.overflow = JSON.stringify({page: document.documentElement.scrollWidth,
    view: document.documentElement.clientWidth, wide: wide.map(e => e.className)});
});</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_no_sideways_scroll_at_1280_px(html, tmp_path):
    """At 1280 px no part of the report scrolls sideways (measured by a script in a copy of the
    page: the report itself has none)."""
    import json

    page = tmp_path / "measured.html"
    page.write_text(html.replace("</body>", MEASURE + "</body>", 1), encoding="utf-8")
    dom = _chromium(tmp_path, "--window-size=1280,1000", "--dump-dom", page.as_uri()).stdout
    found = re.search(r'data-overflow="([^"]*)"', dom)
    assert found, dom[-2000:]
    measured = json.loads(found.group(1).replace("&quot;", '"'))
    assert measured["wide"] == [] and measured["page"] <= measured["view"], measured
