"""One number (issue 25): the demo month trued up to the demo bill gives the same final charge per
subscription in every format — table, CSV, JSON, Parquet, XLSX, HTML, FOCUS and the Power BI view
``v_true_up_monthly`` — their sum is the bill to the cent, and every headline shows the same four
figures (bill, metered, PTU, adjustment). On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from cli_runner import run
from db.engine import make_engine

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
MONTH = "2026-10"


def _demo(capsys, db: str) -> str:
    """`make demo`'s commands (without its pay-as-you-go report), then the true-up; its last line."""
    for args in (["rates", "import", str(SAMPLES / "rates.csv")],
                 ["deployments", "import", str(SAMPLES / "deployments.csv")],
                 ["subscriptions", "import", str(SAMPLES / "subscriptions.csv")],
                 ["replay", str(SAMPLES / "events")],
                 ["backends", "import", str(SAMPLES / "backends.csv")],
                 ["bill", "import", str(SAMPLES / f"bill-{MONTH}.focus.csv")],
                 ["true-up", "--month", MONTH]):
        code, out, err = run(capsys, "--db", db, *args)
        assert code == 0, (args, err)
    return out.splitlines()[-1]


def _table(text: str) -> tuple[dict[str, Decimal], str]:
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("---")]
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[rules[0]])]
    header = [lines[rules[0] - 1][a:b].strip() for a, b in spans]
    body = [[line[a:b].strip() for a, b in spans] for line in lines[rules[0] + 1:rules[1]]]
    total = [lines[rules[1] + 1][a:b].strip() for a, b in spans]
    charge, subscription = header.index("total charge"), header.index("subscription")
    # every row adds up across, every column down to its total
    for row in body + [total]:
        parts = [Decimal(row[header.index(c)]) for c in ("cost", "ptu cost", "true up")]
        assert sum(parts) == Decimal(row[charge]), row
    for column in ("cost", "ptu cost", "true up", "total charge"):
        index = header.index(column)
        assert sum(Decimal(row[index]) for row in body) == Decimal(total[index]), column
    assert "(rounding)" not in text
    headline = next(line for line in lines if line.startswith("true-up: bill"))
    return {row[subscription]: Decimal(row[charge]) for row in body}, headline


def _figures(text: str) -> tuple[str, ...]:
    """(bill, metered, PTU, adjustment) as a headline writes them."""
    match = re.search(r"bill\s+\$?([-\d.,]+)(?: USD)?.*?metered \$?([-\d.,]+) \+ PTU \$?([-\d.,]+) \+ adjustment \$?([-\d.,]+)",
                      text)
    assert match, text
    return tuple(Decimal(value.replace(",", "")) for value in match.groups())


def test_every_format_shows_the_same_trued_up_charges_that_add_up_to_the_bill(capsys, db, tmp_path):
    last = _demo(capsys, db)
    engine = make_engine(db)
    with engine.connect() as conn:
        bill = sum(Decimal(str(c)) for c in conn.execute(sa.text("SELECT cost FROM bill_lines")).scalars())
        view = {row.subscription_id or "(unattributed)": Decimal(str(row.final_charge)) for row in conn.execute(sa.text(
            "SELECT subscription_id, final_charge FROM v_true_up_monthly WHERE month = :m"), {"m": MONTH})}
    engine.dispose()
    bill = bill.quantize(Decimal("0.01"))
    assert last == f"trued-up chargeback {bill} USD = Azure bill {bill} USD ({MONTH}, to the cent)"

    def report(fmt: str) -> str | bytes:
        path = tmp_path / f"report.{fmt}"
        args = ["--db", db, "report", "--month", MONTH, "--by", "subscription", "--true-up"]
        if fmt == "table":
            code, out, err = run(capsys, *args)
            assert code == 0, err
            return out
        code, _, err = run(capsys, *args, "--output", str(path))
        assert code == 0, err
        return path.read_bytes() if fmt in ("xlsx", "parquet") else path.read_text(encoding="utf-8")

    charges: dict[str, dict[str, Decimal]] = {"view": view}
    headlines: dict[str, tuple[Decimal, ...]] = {}

    charges["table"], line = _table(report("table"))
    headlines["table"] = _figures(line)

    rows = list(csv.DictReader(io.StringIO(report("csv"))))
    charges["csv"] = {row["subscription"]: Decimal(row["total_charge"]) for row in rows}

    document = json.loads(report("json"))
    charges["json"] = {row["subscription"]: Decimal(row["total_charge"]) for row in document["rows"]}
    figures = document["true_up"]
    headlines["json"] = tuple(Decimal(figures[k]) for k in ("bill", "metered", "ptu", "adjustment"))

    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(report("parquet")))
    charges["parquet"] = {row["subscription"]: row["total_charge"] for row in table.to_pylist()}
    figures = json.loads(table.schema.metadata[b"true_up"])
    headlines["parquet"] = tuple(Decimal(figures[k]) for k in ("bill", "metered", "ptu", "adjustment"))

    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(report("xlsx")))
    sheet = book["Chargeback"]
    header = [cell.value for cell in sheet[1]]
    charges["xlsx"] = {row[header.index("Subscription")]: Decimal(str(row[header.index("Total charge")]))
                       for row in sheet.iter_rows(min_row=2, values_only=True)
                       if row[0] not in (None, "TOTAL")}
    summary = {row[0]: row[1] for row in book["Summary"].iter_rows(values_only=True) if row and row[0]}
    headlines["xlsx"] = tuple(Decimal(str(summary[k])).quantize(Decimal("0.01")) for k in (
        "Azure bill", "Pay-as-you-go cost", "PTU cost", "True-up adjustment"))
    units = [row for row in book["Summary"].iter_rows(values_only=True) if row and row[0] == "Total"]
    assert units and Decimal(str(units[-1][-2])) == bill  # the business units' Total charge is the bill

    page = report("html")
    body = page[page.index('<table class="data">'):]
    body = body[:body.index("</table>")]
    heads = [html.unescape(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", body)]
    charge_index = heads.index("Charge")
    charges["html"] = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body[body.index("<tbody>"):body.index("</tbody>")]):
        cells = [re.sub(r"<[^>]+>", "", html.unescape(c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        charges["html"][cells[0]] = Decimal(cells[charge_index].replace("$", "").replace(",", ""))
    kpi = page[page.index('<div class="kpis">'):]
    kpi = html.unescape(re.sub(r"<[^>]+>", " ", kpi[:kpi.index("</div></div>") + 12]))
    headlines["html"] = _figures(kpi.replace("Total charge = Azure bill", "bill"))

    focus_path = tmp_path / "focus.csv"
    code, out, err = run(capsys, "--db", db, "export", "focus", "--month", MONTH, "--true-up", "--output", str(focus_path))
    assert code == 0, err
    headlines["focus"] = _figures(out.splitlines()[-1])
    charges["focus"] = {}
    for row in csv.DictReader(focus_path.open(encoding="utf-8")):
        key = row["SubAccountId"] or "(unattributed)"
        charges["focus"][key] = charges["focus"].get(key, Decimal(0)) + Decimal(row["BilledCost"])

    expected = charges["view"]
    assert sum(expected.values()) == bill
    for fmt, values in charges.items():
        shown = {subscription: amount for subscription, amount in values.items() if amount or subscription in expected}
        assert shown == expected, fmt
        assert all(Decimal(amount) == Decimal(amount).quantize(Decimal("0.01")) for amount in values.values()), fmt
    assert len(set(headlines.values())) == 1, headlines
    bill_figure, metered, ptu, adjustment = headlines["table"]
    assert bill_figure == bill and metered + ptu + adjustment == bill


SHADOW = ("/subscriptions/0f3c2a1b-5d6e-4f70-8a9b-1c2d3e4f5a6b/resourceGroups/rg-contoso-ai/providers/"
          "Microsoft.CognitiveServices/accounts/aoai-shadow")


def test_a_resource_no_backend_maps_to_is_charged_to_nobody_and_an_owner_can_be_named(capsys, db, tmp_path):
    """Issue 25: a 100 USD line of a resource no backend maps to was spread over all six demo
    subscriptions (14.22–18.98 each). Now it stays on the unattributed line; a re-run replaces the
    month; an owner named in the backends CSV pays it."""
    from bill_exports import Charge, focus_csv

    _demo(capsys, db)
    before = _stored(db)
    shadow = tmp_path / "shadow.csv"
    shadow.write_bytes(focus_csv([Charge("2026-10-15", "gpt-4o-1120-Outp-glbl", "10", "1M Tokens", "100", resource=SHADOW)]))
    assert run(capsys, "--db", db, "bill", "import", str(shadow))[0] == 0
    for _ in range(2):  # run again: the month is replaced, never doubled
        code, out, err = run(capsys, "--db", db, "true-up", "--month", MONTH)
        assert code == 0, err
    after = _stored(db)
    assert after.pop(None) == Decimal("100.00")
    assert after == {k: v for k, v in before.items() if k is not None}  # no subscription pays for it
    code, out, _ = run(capsys, "--db", db, "report", "--month", MONTH, "--by", "business_unit,subscription", "--true-up")
    assert code == 0 and "(unattributed)" in out and "100.00" in out

    owned = tmp_path / "backends.csv"
    owned.write_text((SAMPLES / "backends.csv").read_text(encoding="utf-8").replace(
        "backend_id,resource_id,region", "backend_id,resource_id,region,owner_subscription_id").replace("\n", ",\n")
        .replace("owner_subscription_id,\n", "owner_subscription_id\n")
        + f"shadow-direct,{SHADOW},eastus2,sub-engineering-copilot\n", encoding="utf-8")
    assert run(capsys, "--db", db, "backends", "import", str(owned))[0] == 0
    assert run(capsys, "--db", db, "true-up", "--month", MONTH)[0] == 0
    owner = _stored(db)
    assert None not in owner
    assert owner["sub-engineering-copilot"] == before["sub-engineering-copilot"] + Decimal("100.00")


def _stored(db: str) -> dict[str | None, Decimal]:
    engine = make_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT subscription_id, final_charge FROM true_up_allocations WHERE month = :m"),
                            {"m": MONTH}).all()
    engine.dispose()
    out: dict[str | None, Decimal] = {}
    for subscription, amount in rows:
        out[subscription] = out.get(subscription, Decimal(0)) + Decimal(str(amount))
    return {k: v.quantize(Decimal("0.01")) for k, v in out.items()}


def test_a_plain_report_includes_the_stored_ptu_allocation_and_says_so(capsys, sqlite_url):
    """`metering ptu allocate` stored PTU that a plain `report` ignored (2.14) while `budgets status`
    and v_chargeback_monthly (Power BI) included it (4.64): now the report includes it and says so."""
    for args in (["db", "upgrade"], ["rates", "import", str(SAMPLES / "rates.csv")],
                 ["deployments", "import", str(SAMPLES / "deployments.csv")],
                 ["subscriptions", "import", str(SAMPLES / "subscriptions.csv")], ["replay", str(SAMPLES / "events")],
                 ["ptu", "allocate", "--month", MONTH, "--ptu-costs", str(SAMPLES / "ptu_costs.csv")]):
        code, _, err = run(capsys, "--db", sqlite_url, *args)
        assert code == 0, (args, err)
    code, out, err = run(capsys, "--db", sqlite_url, "report", "--month", MONTH, "--format", "json")
    assert code == 0, err
    document = json.loads(out)
    assert Decimal(document["total"]["ptu_cost"]) == Decimal("2.50")
    assert any("the stored allocation of 2026-10 (`metering ptu allocate`) is included" in n for n in document["notes"])
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        view = conn.execute(sa.text("SELECT total_cost, ptu_cost FROM v_chargeback_monthly WHERE month = :m"),
                            {"m": MONTH}).all()
    engine.dispose()
    power_bi = sum(Decimal(str(cost or 0)) + Decimal(str(ptu or 0)) for cost, ptu in view)
    assert abs(power_bi - Decimal(document["total"]["total_charge"])) < Decimal("0.000001")  # SQLite views sum floats
    code, out, _ = run(capsys, "--db", sqlite_url, "report", "--month", MONTH, "--by", "model")
    assert code == 0 and "cannot split" in out  # grouped by model: said, never spread by guess
