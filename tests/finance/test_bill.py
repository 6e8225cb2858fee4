"""The Azure bill: backends, Cost Management exports (FOCUS and cost details; CSV, CSV.gz, Parquet),
reconciliation with every difference explained, and the true-up that makes the chargeback add up to
the bill to the cent — on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from bill_exports import RESOURCE, STORAGE, Charge, cost_details_csv, focus_csv, focus_parquet
from cli_runner import run
from db import rate_card as rate_card_store
from db.engine import make_engine
from db.schema import bill_lines
from azure_shapes import usage_object
from events import encode, v1_event
from metering.finance.reconcile.bill import BillError, parse_backends_csv, parse_bill_export, unit_block
from metering.finance.reconcile.compare import apportion_cents
from metering.ingest import Ingestor
from metering.model import RawEvent
from metering.price.rate_card import parse_rates_csv

RATES = ("model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
         "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n")
BACKENDS = f"backend_id,resource_id,region\naoai-swedencentral,{RESOURCE},swedencentral\n"
SWEDEN = {"id": "aoai-swedencentral", "url": "https://aoai-sc.openai.azure.com/openai", "region": "Sweden Central"}
EASTUS = {"id": "aoai-eastus2", "url": "https://aoai-eastus2.openai.azure.com/openai", "region": "East US 2"}


def _usage(prompt: int, completion: int, cached: int | None = None) -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def _sub(sid: str) -> dict:
    return {"id": sid, "name": sid}


# The metered month: gpt-4o (card 2.50 / 1.25 / 10.00 per 1M) on the Sweden Central resource, one
# gpt-4o-mini request without a card rate, a request at 23:59:59 that Azure bills on the next day,
# and a request on a backend with no resource mapping.
EVENTS = [
    v1_event("r1", time="2026-10-05T10:00:00Z", subscription=_sub("sub-finance"), backend=SWEDEN, usage=_usage(400_000, 100_000)),
    v1_event("r2", time="2026-10-05T11:00:00Z", subscription=_sub("sub-care"), backend=SWEDEN,
             usage=_usage(200_000, 50_000, cached=100_000)),
    v1_event("r3", time="2026-10-06T23:59:59.500Z", subscription=_sub("sub-finance"), backend=SWEDEN, usage=_usage(300_000, 0)),
    v1_event("r4", time="2026-10-07T09:00:00Z", subscription=_sub("sub-care"), backend=SWEDEN, usage=_usage(100_000, 20_000)),
    v1_event("r5", time="2026-10-05T12:00:00Z", subscription=_sub("sub-legal"), backend=SWEDEN, deployment="gpt-4o-mini",
             model="gpt-4o-mini-2024-07-18", usage=_usage(1_000_000, 0)),
    v1_event("r6", time="2026-10-05T13:00:00Z", subscription=_sub("sub-legal"), backend=EASTUS, usage=_usage(10_000, 1_000)),
]

# The bill: 50,000 input tokens on the 5th that never went through APIM (bypass, 0.125), output billed
# at 11.00 instead of the card's 10.00 (price, 0.15 + 0.02), the gpt-4o-mini tokens the card cannot
# price (unpriced, 0.15), r3's tokens on the 7th (day boundary, ±0.75), provisioned hours (capacity,
# 2.00), an audio meter the parser does not read (unknown meter, 0.04), and a storage line (skipped).
CHARGES = [
    Charge("2026-10-05", "gpt-4o-1120-Inp-glbl", "0.55", "1M Tokens", "1.375"),
    Charge("2026-10-05", "gpt-4o-1120-cached-Inp-glbl", "0.1", "1M Tokens", "0.125"),
    Charge("2026-10-05", "gpt-4o-1120-Outp-glbl", "0.15", "1M Tokens", "1.65"),
    Charge("2026-10-05", "gpt-4o-mini-0718-Inp-glbl", "1", "1M Tokens", "0.15"),
    Charge("2026-10-07", "gpt-4o-1120-Inp-glbl", "0.4", "1M Tokens", "1.0"),
    Charge("2026-10-07", "gpt-4o-1120-Outp-glbl", "0.02", "1M Tokens", "0.22"),
    Charge("2026-10-07", "Provisioned Managed Global", "2", "1 Hour", "2.00"),
    Charge("2026-10-07", "gpt4o realtimePrvw audio inp glbl", "0.001", "1M Tokens", "0.04"),
    Charge("2026-10-07", "Hot LRS Write Operations", "3", "10K", "0.0165", category="Storage",
           subcategory="Tiered Block Blob", resource=STORAGE),
]
BILLED = Decimal("6.56")  # the Azure OpenAI lines
EXPECTED = {"bypass": Decimal("0.125"), "price": Decimal("0.17"), "unpriced": Decimal("0.15"),
            "capacity": Decimal("2.00"), "day_boundary": Decimal(0), "unknown_meter": Decimal("0.04"),
            "unmapped_backend": Decimal("-0.035"), "unexplained": Decimal(0)}


def seed(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(RATES))
    Ingestor(engine).ingest([RawEvent(encode(e)) for e in EVENTS])
    engine.dispose()


def _write(tmp_path: Path, name: str, content: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


# --------------------------------------------------------------------------- parsing


def test_backends_csv_checks_arm_ids_columns_and_duplicates():
    rows = parse_backends_csv("\ufeff" + BACKENDS)
    assert rows[0].resource_id == RESOURCE.lower() and rows[0].region == "swedencentral"
    with pytest.raises(BillError, match="unknown column"):
        parse_backends_csv("backend_id,resource_id,regoin\n")
    with pytest.raises(BillError) as problem:
        parse_backends_csv(f"backend_id,resource_id,region\nb1,{STORAGE},\nb2,/subscriptions/x/accounts/y,\n"
                           f"aoai-swedencentral,{RESOURCE},\naoai-swedencentral,{RESOURCE},\n")
    message = str(problem.value)
    assert "line 2:" in message and "line 3:" in message and "line 5: backend 'aoai-swedencentral' is listed twice" in message


def test_units_normalise_to_tokens_or_hours():
    assert unit_block("1M Tokens") == (1_000_000, "tokens")
    assert unit_block("1K") == (1000, "tokens")
    assert unit_block("1 Hour") == (1, "hours") and unit_block("100 Hours") == (100, "hours")
    assert unit_block("10K") == (10_000, "tokens") and unit_block("1 GB") is None
    assert unit_block("Tokens") == (1, "tokens") and unit_block("1000000 Tokens") == (1_000_000, "tokens")


def test_a_focus_file_without_unit_description_or_meter_categories_is_read_by_consumed_tokens():
    """PricingUnit is just "Tokens" while PricingQuantity counts 1M blocks: without
    x_PricingUnitDescription the quantity comes from ConsumedQuantity, never 0.55 tokens."""
    import csv as csv_module
    import io

    rows = list(csv_module.DictReader(io.StringIO(focus_csv(CHARGES).decode("utf-8-sig"))))
    dropped = ("x_PricingUnitDescription", "x_SkuMeterCategory", "x_SkuMeterSubcategory")
    buffer = io.StringIO()
    writer = csv_module.DictWriter(buffer, [c for c in rows[0] if c not in dropped], quoting=csv_module.QUOTE_ALL)
    writer.writeheader()
    writer.writerows({k: v for k, v in row.items() if k not in dropped} for row in rows)
    result = parse_bill_export("narrow.csv", buffer.getvalue().encode())
    assert result.other_services == 1 and len(result.lines) == 8  # the storage account is still left out
    first = next(line for line in result.lines if line.meter_name == "gpt-4o-1120-Inp-glbl")
    assert (first.tokens, first.token_kind) == (550_000, "input")
    assert next(line for line in result.lines if line.meter_name == "Provisioned Managed Global").token_kind == "capacity"


@pytest.mark.parametrize("variant", ["focus-1.0", "focus-1.0r2", "focus-1.2-preview", "focus-gz", "focus-parquet",
                                     "ea", "mca"])
def test_every_export_variant_reads_to_the_same_lines(variant):
    data = {
        "focus-1.0": lambda: focus_csv(CHARGES, "1.0"),
        "focus-1.0r2": lambda: focus_csv(CHARGES, "1.0r2"),
        "focus-1.2-preview": lambda: focus_csv(CHARGES, "1.2-preview"),
        "focus-gz": lambda: gzip.compress(focus_csv(CHARGES)),
        "focus-parquet": lambda: focus_parquet(CHARGES),
        "ea": lambda: cost_details_csv(CHARGES, "ea"),
        "mca": lambda: cost_details_csv(CHARGES, "mca"),
    }[variant]()
    result = parse_bill_export(variant, data)
    assert result.rows_read == 9 and result.other_services == 1 and len(result.lines) == 8
    assert sum(line.cost for line in result.lines) == BILLED
    by_meter = {(line.day.isoformat(), line.meter_name): line for line in result.lines}
    first = by_meter[("2026-10-05", "gpt-4o-1120-Inp-glbl")]
    assert (first.model, first.token_kind, first.deployment_type, first.tokens) == ("gpt-4o-2024-11-20", "input", "global", 550_000)
    assert first.resource_id == RESOURCE.lower()
    cached = by_meter[("2026-10-05", "gpt-4o-1120-cached-Inp-glbl")]
    assert (cached.token_kind, cached.tokens) == ("cached_input", 100_000)
    capacity = by_meter[("2026-10-07", "Provisioned Managed Global")]
    assert (capacity.token_kind, capacity.tokens, capacity.quantity) == ("capacity", None, Decimal(2))
    unknown = by_meter[("2026-10-07", "gpt4o realtimePrvw audio inp glbl")]
    assert unknown.token_kind is None and unknown.cost == Decimal("0.04")  # kept, never dropped
    assert "gpt4o realtimePrvw audio inp glbl" in result.unknown_meters


def test_lines_of_one_key_are_summed_and_other_charges_are_counted_not_kept():
    charges = [CHARGES[0], Charge("2026-10-05", "gpt-4o-1120-Inp-glbl", "0.05", "1M Tokens", "0.125"),
               Charge("2026-10-05", "gpt-4o-1120-Inp-glbl", "0", "1M Tokens", "-0.10", charge="Credit")]
    result = parse_bill_export("x.csv", focus_csv(charges))
    assert [(line.tokens, line.cost) for line in result.lines] == [(600_000, Decimal("1.5"))]
    assert result.not_usage == 1


def test_a_file_that_is_no_export_or_has_bad_rows_is_refused_with_line_numbers():
    with pytest.raises(BillError, match="not an Azure Cost Management export"):
        parse_bill_export("rates.csv", RATES.encode())
    bad = focus_csv(CHARGES[:2]).replace(b'"1.375"', b'"1,375.00"')
    with pytest.raises(BillError, match="line 2: cost '1,375.00' is not a number"):
        parse_bill_export("bad.csv", bad)


def test_apportion_cents_adds_up_exactly_with_negative_parts():
    parts = apportion_cents(Decimal("0.10"), {"a": Decimal("0.333"), "b": Decimal("-0.2"), "c": Decimal("-0.031")})
    assert sum(parts.values()) == Decimal("0.10")
    assert all(abs(parts[k] - v) < Decimal("0.01") for k, v in {"a": Decimal("0.333"), "b": Decimal("-0.2"),
                                                                  "c": Decimal("-0.031")}.items())


# --------------------------------------------------------------------------- the command line, both databases


def _import_all(capsys, db: str, tmp_path: Path, export: bytes, name: str = "bill.csv") -> str:
    seed(db)
    assert run(capsys, "--db", db, "rates", "import", _write(tmp_path, "rates.csv", RATES))[0] == 0
    code, out, err = run(capsys, "--db", db, "backends", "import", _write(tmp_path, "backends.csv", BACKENDS))
    assert code == 0, err
    assert "aoai-eastus2" in out  # unmapped backends are listed, never guessed
    code, out, err = run(capsys, "--db", db, "bill", "import", _write(tmp_path, name, export))
    assert code == 0, err
    return out


def _reconcile_json(capsys, db: str, *by: str) -> dict:
    args = ["--db", db, "reconcile", "--month", "2026-10", "--format", "json"] + (["--by", ",".join(by)] if by else [])
    code, out, err = run(capsys, *args)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("export", ["focus", "parquet"])
def test_reconcile_explains_every_known_difference_exactly(capsys, db, tmp_path, export):
    data, name = (focus_csv(CHARGES), "focus.csv") if export == "focus" else (focus_parquet(CHARGES), "focus.parquet")
    out = _import_all(capsys, db, tmp_path, data, name)
    assert "8 bill line(s)" in out and "unknown meter kept as is: gpt4o realtimePrvw audio inp glbl" in out
    report = _reconcile_json(capsys, db)
    total = {k: Decimal(v) for k, v in report["total"].items() if k not in ("billed_quantity", "metered_quantity")}
    assert total["billed_cost"] == BILLED
    assert total["metered_cost"] == Decimal("4.11")  # 4.075 on the resource + 0.035 on the unmapped backend
    for name, amount in EXPECTED.items():
        assert total[name] == amount, name
    rows = {row["meter"]: row for row in report["rows"] if row["resource"] == RESOURCE.lower()}
    output = rows["gpt-4o-2024-11-20 output global"]
    assert (output["billed_unit_price"], output["card_unit_price"]) == ("11", "10")
    assert "price +0.17 USD (billed 11/1M, card 10/1M)" in output["explanation"]
    assert Decimal(rows["gpt-4o-mini-2024-07-18 input global"]["unpriced"]) == Decimal("0.15")
    assert report["data_quality"]["unmapped_backends"] == ["aoai-eastus2"]
    assert [item["kind"] for item in report["card_drift"]] == ["output"]
    days = _reconcile_json(capsys, db, "day", "resource", "meter")
    boundary = {row["day"]: Decimal(row["day_boundary"]) for row in days["rows"]
                if row["meter"] == "gpt-4o-2024-11-20 input global"}
    assert boundary == {"2026-10-05": 0, "2026-10-06": Decimal("-0.75"), "2026-10-07": Decimal("0.75")}


def test_reimport_and_newer_month_to_date_export_never_double(capsys, db, tmp_path):
    early = [c for c in CHARGES if c.day == "2026-10-05"] + [Charge("2026-10-06", "gpt-4o-1120-Outp-glbl", "0.5", "1M Tokens", "5.5")]
    _import_all(capsys, db, tmp_path, focus_csv(early), "mtd-06.csv")
    full = _write(tmp_path, "mtd-07.csv", cost_details_csv(CHARGES, "ea"))
    for _ in range(2):  # the newer export replaces the 5th and the 6th (a line it no longer has goes too)
        assert run(capsys, "--db", db, "bill", "import", full)[0] == 0
    engine = make_engine(db)
    with engine.connect() as conn:
        costs = [row.cost for row in conn.execute(sa.select(bill_lines.c.cost))]
    engine.dispose()
    assert len(costs) == 8 and sum(costs) == BILLED


def _true_up(capsys, db: str) -> str:
    code, out, err = run(capsys, "--db", db, "true-up", "--month", "2026-10")
    assert code == 0, err
    return out


def test_true_up_makes_the_chargeback_equal_the_bill_to_the_cent(capsys, db, tmp_path):
    _import_all(capsys, db, tmp_path, focus_csv(CHARGES, "1.2-preview"))
    code, plain, _ = run(capsys, "--db", db, "report", "--month", "2026-10", "--by", "subscription", "--format", "json")
    assert code == 0 and "true_up" not in plain  # without --true-up nothing changes
    code, _, err = run(capsys, "--db", db, "report", "--month", "2026-10", "--by", "subscription", "--true-up")
    assert code == 2 and "metering true-up --month 2026-10" in err  # nothing stored yet: said, not a silent zero
    stored = _true_up(capsys, db)
    assert "trued-up chargeback 6.56 USD = Azure bill 6.56 USD" in stored
    code, out, err = run(capsys, "--db", db, "report", "--month", "2026-10", "--by", "subscription", "--format", "json",
                         "--true-up")
    assert code == 0, err
    document = json.loads(out)
    rows = {row["subscription"]: row for row in document["rows"]}
    charges = {sub: Decimal(row["total_charge"]) for sub, row in rows.items()}
    assert all(amount == amount.quantize(Decimal("0.01")) for amount in charges.values())
    assert sum(charges.values()) == BILLED
    for row in rows.values():
        assert Decimal(row["cost"]) + Decimal(row["ptu_cost"]) + Decimal(row["true_up"]) == Decimal(row["total_charge"])
    # sub-legal's gpt-4o-mini tokens have no card rate: the bill's 0.15 for them is its charge
    assert charges["sub-legal"] >= Decimal("0.15")
    # the provisioned hours: no provisioned usage, no owner: on their own line, nobody charged for them
    assert charges["(unattributed)"] == Decimal("2.00")
    assert document["true_up"] == {"bill": "6.56", "metered": str(document["true_up"]["metered"]),
                                   "ptu": "0.00", "adjustment": document["true_up"]["adjustment"]}
    code, table, _ = run(capsys, "--db", db, "report", "--month", "2026-10", "--by", "subscription", "--true-up")
    assert code == 0 and "true up" in table and "(rounding)" not in table


def test_bad_input_is_a_one_line_message(capsys, db, tmp_path):
    code, _, err = run(capsys, "--db", db, "backends", "import", _write(tmp_path, "b.csv", "backend_id,resource_id\nx,y\n"))
    assert code == 2 and "line 2" in err
    code, _, err = run(capsys, "--db", db, "bill", "import", _write(tmp_path, "x.csv", "a,b\n1,2\n"))
    assert code == 2 and "not an Azure Cost Management export" in err
    code, _, err = run(capsys, "--db", db, "reconcile", "--month", "2026-10", "--by", "model")
    assert code == 2 and "--by" in err
    code, _, err = run(capsys, "--db", db, "reconcile", "--month", "2026-10")
    assert code == 2 and "nothing to reconcile" in err


@pytest.mark.parametrize("fmt", ["table", "csv", "html", "xlsx"])
def test_reconcile_formats(capsys, db, tmp_path, fmt):
    _import_all(capsys, db, tmp_path, focus_csv(CHARGES))
    output = tmp_path / f"reconcile.{fmt}"
    code, out, err = run(capsys, "--db", db, "reconcile", "--month", "2026-10", "--output", str(output))
    assert code == 0, err
    content = output.read_bytes()
    if fmt == "table":
        text = content.decode()
        assert "TOTAL" in text and "data quality: 1 unmapped backend(s) (aoai-eastus2" in text
        assert "card drift: gpt-4o-2024-11-20 output global" in text
    elif fmt == "csv":
        header = content.decode().splitlines()[0].split(",")
        assert header[:2] == ["resource", "meter"] and "bypass" in header and "explanation" in header
    elif fmt == "html":
        text = content.decode()
        assert "<svg" in text and "Billed vs metered" in text and "6.56" in text
    else:
        assert content[:2] == b"PK"


def test_rates_list_flags_card_rows_the_bill_contradicts(capsys, db, tmp_path):
    _import_all(capsys, db, tmp_path, cost_details_csv(CHARGES, "mca"))
    code, out, _ = run(capsys, "--db", db, "rates", "list")
    assert code == 0
    drift = out[out.index("card drift"):]
    assert "2026-10  gpt-4o-2024-11-20" in drift and "output" in drift and "billed 11/1M, card 10/1M" in drift
    assert "gpt-4o-mini-2024-07-18" in drift and "no card row" in drift
    assert "input        global          billed 2.5/1M" not in drift  # input matches the card



# Audio, image and cache-write tokens are billed on their own meters (real meter names: tests/data/
# README.md). The card: gpt-4o-audio-preview's text and audio prices, gpt-image-1's text and image
# prices (its output is images), gpt-5.6-sol's cache write at 1.25 × input.
KIND_RATES = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m,"
    "cache_write_per_1m,audio_input_per_1m,audio_output_per_1m,image_input_per_1m,cached_image_input_per_1m,"
    "image_output_per_1m\n"
    "gpt-4o-audio-preview,global,,2024-12-17,,USD,2.50,,10.00,,40.00,80.00,,,\n"
    "gpt-image-1,global,,2025-04-15,,USD,5.00,1.25,40.00,,,,10.00,2.50,40.00\n"
    "gpt-5.6-sol,global,,2026-07-09,,USD,4.00,0.40,20.00,5.00,,,,,\n"
)
KIND_EVENTS = [
    # the usage of a real gpt-4o-audio-preview call: 200 of 288 prompt tokens and 589 of 696 output tokens are audio
    v1_event("k1", time="2026-10-08T10:00:00Z", subscription=_sub("sub-care"), deployment="gpt-4o-audio",
             model="gpt-4o-audio-preview-2024-12-17",
             usage=usage_object(288, 696, audio_prompt=200, audio_completion=589, text_details=True)),
    v1_event("k2", time="2026-10-08T11:00:00Z", subscription=_sub("sub-finance"), deployment="gpt-5.6-sol",
             model="gpt-5.6-sol-2026-07-09", usage=usage_object(10_000, 500, cached=2_000, cache_write=6_000)),
    v1_event("k3", time="2026-10-08T12:00:00Z", subscription=_sub("sub-marketing"), deployment="gpt-image-1",
             model="gpt-image-1", operation="Images_Edit",
             usage={"input_tokens": 1_578, "output_tokens": 4_160, "total_tokens": 5_738,
                    "input_tokens_details": {"image_tokens": 1_530, "text_tokens": 48},
                    "output_tokens_details": {"image_tokens": 4_160, "text_tokens": 0}}),
]
GPT5 = "Azure OpenAI GPT5"
# The bill: every kind at the card's price, except gpt-4o-audio-preview's audio output at 84 (not 80).
KIND_CHARGES = [
    Charge("2026-10-08", "gpt-4o-aud-1217-txt Inp glbl", "0.000088", "1M Tokens", "0.00022"),
    Charge("2026-10-08", "gpt-4o-aud-1217 Inp glbl", "0.0002", "1M Tokens", "0.008"),
    Charge("2026-10-08", "gpt-4o-aud-1217-txt Outp glbl", "0.000107", "1M Tokens", "0.00107"),
    Charge("2026-10-08", "gpt-4o-aud-1217 Outp glbl", "0.000589", "1M Tokens", "0.049476"),
    Charge("2026-10-08", "5.6 sol ShortCo Inp Std Gl", "0.002", "1M Tokens", "0.008", subcategory=GPT5),
    Charge("2026-10-08", "5.6 sol ShortCo Cd Inp Std Gl", "0.002", "1M Tokens", "0.0008", subcategory=GPT5),
    Charge("2026-10-08", "5.6 sol ShortCo Cd Wr Std Gl", "0.006", "1M Tokens", "0.03", subcategory=GPT5),
    Charge("2026-10-08", "5.6 sol ShortCo Opt Std Gl", "0.0005", "1M Tokens", "0.01", subcategory=GPT5),
    Charge("2026-10-08", "gpt-image-1-inp-txt-glbl", "0.000048", "1M Tokens", "0.00024"),
    Charge("2026-10-08", "gpt-image-1-inp-img-glbl", "0.00153", "1M Tokens", "0.0153"),
    Charge("2026-10-08", "gpt-image-1-output-img-glbl", "0.00416", "1M Tokens", "0.1664"),
]


def test_reconcile_compares_audio_image_and_cache_write_meters_kind_by_kind(capsys, db, tmp_path):
    engine = make_engine(db)
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(KIND_RATES))
    Ingestor(engine).ingest([RawEvent(encode(e)) for e in KIND_EVENTS])
    engine.dispose()
    assert run(capsys, "--db", db, "backends", "import", _write(tmp_path, "backends.csv", BACKENDS))[0] == 0
    code, out, err = run(capsys, "--db", db, "bill", "import", _write(tmp_path, "kinds.csv", focus_csv(KIND_CHARGES)))
    assert code == 0 and "unknown meter" not in out, out + err
    report = _reconcile_json(capsys, db, "meter")
    rows = {row["meter"]: row for row in report["rows"]}
    expected = {  # meter: (tokens billed = metered, metered cost)
        "gpt-4o-audio-preview-2024-12-17 input global": (88, "0.00022"),
        "gpt-4o-audio-preview-2024-12-17 audio_input global": (200, "0.008"),
        "gpt-4o-audio-preview-2024-12-17 output global": (107, "0.00107"),
        "gpt-4o-audio-preview-2024-12-17 audio_output global": (589, "0.04712"),
        "gpt-5.6-sol input global": (2_000, "0.008"),
        "gpt-5.6-sol cached_input global": (2_000, "0.0008"),
        "gpt-5.6-sol cache_write global": (6_000, "0.03"),
        "gpt-5.6-sol output global": (500, "0.01"),
        "gpt-image-1 input global": (48, "0.00024"),
        "gpt-image-1 image_input global": (1_530, "0.0153"),
        "gpt-image-1 image_output global": (4_160, "0.1664"),
    }
    assert set(rows) == set(expected)
    for meter, (tokens, cost) in expected.items():
        row = rows[meter]
        assert (row["billed_quantity"], row["metered_quantity"]) == (tokens, tokens), meter
        assert Decimal(row["metered_cost"]) == Decimal(cost), meter
    audio_out = rows["gpt-4o-audio-preview-2024-12-17 audio_output global"]
    assert Decimal(audio_out["price"]) == Decimal("0.002356")  # 589 tokens × (84 − 80) per 1M
    assert (audio_out["billed_unit_price"], audio_out["card_unit_price"]) == ("84", "80")
    assert all(rows[m]["explanation"] == "matches" for m in expected)  # under half a cent is not worth a word
    total = {k: Decimal(v) for k, v in report["total"].items() if k not in ("billed_quantity", "metered_quantity")}
    assert (total["unknown_meter"], total["unexplained"], total["bypass"]) == (0, 0, 0)
    assert total["billed_cost"] - total["metered_cost"] == total["price"] == Decimal("0.002356")
    assert [(item["model"], item["kind"]) for item in report["card_drift"]] == [
        ("gpt-4o-audio-preview-2024-12-17", "audio_output")]


SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_the_sample_bill_reconciles_with_the_demo_capture(capsys, sqlite_url):
    """`make demo`'s bill: a little bypass, one price difference, the PTU hours; the true-up makes the
    chargeback equal the bill to the cent."""
    for args in (["db", "upgrade"], ["rates", "import", str(SAMPLES / "rates.csv")],
                 ["deployments", "import", str(SAMPLES / "deployments.csv")], ["replay", str(SAMPLES / "events")],
                 ["backends", "import", str(SAMPLES / "backends.csv")],
                 ["bill", "import", str(SAMPLES / "bill-2026-10.focus.csv")]):
        code, _, err = run(capsys, "--db", sqlite_url, *args)
        assert code == 0, err
    report = _reconcile_json(capsys, sqlite_url, "meter")
    rows = {row["meter"]: row for row in report["rows"]}
    bypass = rows["gpt-4o-mini-2024-07-18 input datazone"]
    assert bypass["billed_quantity"] - bypass["metered_quantity"] == 65_000 and Decimal(bypass["bypass"]) > 0
    # the discount is against the card's 8.00 exactly: the one gpt-4.1 request of the demo that ran on
    # the priority tier is billed on its priority meter and compared there, at the card's priority price
    assert "billed 7.6/1M, card 8/1M" in rows["gpt-4.1-2025-04-14 output global"]["explanation"]
    priority = rows["gpt-4.1-2025-04-14 output global, priority tier"]
    assert priority["explanation"] == "matches" and (priority["billed_quantity"], priority["metered_quantity"]) == (90, 90)
    assert (priority["billed_unit_price"], priority["card_unit_price"]) == ("14", "14")
    assert rows["gpt-5.6 cache_write global, priority tier"]["explanation"] == "matches"
    assert Decimal(rows["Provisioned Managed Global (capacity)"]["capacity"]) == Decimal("2.50")
    total = report["total"]
    # audio, image, transcription and cache-write tokens are billed on their own meters, each compared
    # with the metered tokens of its kind: nothing is unknown, nothing unexplained
    assert Decimal(total["unknown_meter"]) == 0 and Decimal(total["unexplained"]) == 0
    assert rows["gpt-4o-audio-preview-2024-12-17 audio_output global"]["explanation"] == "matches"
    assert (rows["gpt-5.6 cache_write global, priority tier"]["billed_quantity"], rows["gpt-image-1 image_output global"]["billed_quantity"],
            rows["gpt-4o-transcribe audio_input global"]["metered_quantity"]) == (6_144, 4_160, 1_250)
    by_resource = _reconcile_json(capsys, sqlite_url, "resource")["rows"]
    unmapped = sum(Decimal(row["metered_cost"]) for row in by_resource if row["resource"] == "(unmapped backend)")
    assert unmapped > 0  # a request without a backend id: not on the bill, taken out of the true-up (and said)
    stored = _true_up(capsys, sqlite_url)
    billed = Decimal(total["billed_cost"]).quantize(Decimal("0.01"))
    assert f"trued-up chargeback {billed} USD = Azure bill {billed} USD" in stored.splitlines()[-1]
    code, out, err = run(capsys, "--db", sqlite_url, "report", "--month", "2026-10", "--by", "subscription",
                         "--format", "json", "--true-up")
    assert code == 0, err
    assert Decimal(json.loads(out)["total"]["total_charge"]) == billed


def test_focus_export_with_true_up_adds_up_to_the_bill(capsys, db, tmp_path):
    from metering.finance.focus import MANDATORY, NULLABLE_MANDATORY

    _import_all(capsys, db, tmp_path, focus_csv(CHARGES))
    _true_up(capsys, db)
    output = tmp_path / "focus.csv"
    code, out, err = run(capsys, "--db", db, "export", "focus", "--month", "2026-10", "--output", str(output), "--true-up")
    assert code == 0, err
    import csv

    rows = list(csv.DictReader(output.open(encoding="utf-8")))
    adjustments = [row for row in rows if row["ChargeCategory"] == "Adjustment"]
    assert {row["SubAccountId"] for row in adjustments} == {"sub-finance", "sub-care", "sub-legal", ""}
    assert all(row[column] for row in adjustments for column in MANDATORY if column not in NULLABLE_MANDATORY)
    assert sum(Decimal(row["BilledCost"]) for row in rows) == BILLED
    per_subscription: dict[str, Decimal] = {}
    for row in rows:
        per_subscription[row["SubAccountId"]] = per_subscription.get(row["SubAccountId"], Decimal(0)) + Decimal(row["BilledCost"])
    assert all(amount == amount.quantize(Decimal("0.01")) for amount in per_subscription.values())


def test_true_up_takes_out_usage_the_bill_does_not_cover_and_says_so(capsys, db, tmp_path):
    """A resource whose Azure subscription the export does not cover has no bill line: its usage is
    not on this bill, so the true-up (which adds up to this bill) takes it out and says why; the
    reconciliation lists it in the data quality."""
    other = ("/subscriptions/9a8b7c6d-1111-4222-8333-444455556666/resourceGroups/rg-other/providers/"
             "Microsoft.CognitiveServices/accounts/aoai-eastus2")
    seed(db)
    assert run(capsys, "--db", db, "rates", "import", _write(tmp_path, "rates.csv", RATES))[0] == 0
    backends = BACKENDS + f"aoai-eastus2,{other},eastus2\n"
    assert run(capsys, "--db", db, "backends", "import", _write(tmp_path, "backends.csv", backends))[0] == 0
    assert run(capsys, "--db", db, "bill", "import", _write(tmp_path, "bill.csv", focus_csv(CHARGES)))[0] == 0
    report = _reconcile_json(capsys, db)
    assert report["data_quality"]["resources_without_bill"] == [other.lower()]
    stored = _true_up(capsys, db)
    assert f"resource {other.lower()} has no line on this bill" in stored
    code, out, _ = run(capsys, "--db", db, "report", "--month", "2026-10", "--by", "subscription", "--format", "json",
                       "--true-up")
    charges = {row["subscription"]: Decimal(row["total_charge"]) for row in json.loads(out)["rows"]}
    assert sum(charges.values()) == BILLED


def test_a_bill_in_another_currency_than_the_card_is_never_trued_up(capsys, db, tmp_path):
    euro = focus_csv(CHARGES).replace(b'"USD"', b'"EUR"')
    _import_all(capsys, db, tmp_path, euro)
    code, out, _ = run(capsys, "--db", db, "reconcile", "--month", "2026-10")
    assert code == 0 and "the bill is in EUR and the metered cost in USD" in out
    code, _, err = run(capsys, "--db", db, "true-up", "--month", "2026-10")
    assert code == 2 and "EUR" in err


TIER_RATES = ("model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,"
              "output_per_1m,service_tier\n"
              "gpt-4.1,global,,2025-04-14,,USD,2.00,0.50,8.00,\n"
              "gpt-4.1,global,,2025-04-14,,USD,3.50,0.875,14.00,priority\n")


def test_priority_tokens_are_reconciled_on_the_priority_meters(capsys, db, tmp_path):
    """Azure bills priority processing on its own meters (``pp``) at its own prices. Metered priority
    tokens are compared with those lines, standard ones with the standard lines: a discount on the
    standard output meter shows against the card's 8.00 exactly (not an average of both tiers), the
    priority meters match, and `rates list` sees no drift on them (it compares them with the
    card's priority row)."""
    engine = make_engine(db)
    from db.migrate import upgrade

    upgrade(engine)
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(TIER_RATES))
    model = {"deployment": "gpt-4.1", "model": "gpt-4.1-2025-04-14", "backend": SWEDEN}
    Ingestor(engine).ingest([RawEvent(encode(e)) for e in (
        v1_event("std-1", time="2026-10-05T10:00:00Z", usage=_usage(1_000_000, 500_000), **model),
        # (under 128k prompt tokens: a longer priority request is billed at the standard tier)
        v1_event("pp-1", time="2026-10-05T11:00:00Z", serviceTier="priority", usage=_usage(100_000, 100_000), **model),
    )])
    engine.dispose()
    charges = [
        Charge("2026-10-05", "gpt-4.1-0414-Inp-glbl", "1", "1M Tokens", "2.00"),
        Charge("2026-10-05", "gpt-4.1-0414-Outp-glbl", "0.5", "1M Tokens", "3.80"),  # 7.60 per 1M: a discount
        Charge("2026-10-05", "gpt-4.1-0414-Inp-pp-glbl", "0.1", "1M Tokens", "0.35"),
        Charge("2026-10-05", "gpt-4.1-0414-Outp-pp-glbl", "0.1", "1M Tokens", "1.40"),
    ]
    for args in (["backends", "import", _write(tmp_path, "backends.csv", BACKENDS)],
                 ["bill", "import", _write(tmp_path, "bill.csv", focus_csv(charges))]):
        code, _, err = run(capsys, "--db", db, *args)
        assert code == 0, err
    report = _reconcile_json(capsys, db, "meter")
    rows = {row["meter"]: row for row in report["rows"]}
    output = rows["gpt-4.1-2025-04-14 output global"]
    assert (output["billed_unit_price"], output["card_unit_price"]) == ("7.6", "8")
    assert Decimal(output["price"]) == Decimal("-0.20")
    for meter in ("input global, priority tier", "output global, priority tier", "input global"):
        assert rows[f"gpt-4.1-2025-04-14 {meter}"]["explanation"] == "matches", meter
    assert rows["gpt-4.1-2025-04-14 output global, priority tier"]["billed_quantity"] == 100_000
    total = report["total"]
    assert Decimal(total["unexplained"]) == 0 and Decimal(total["bypass"]) == 0
    assert [(item["kind"], item["service_tier"]) for item in report["card_drift"]] == [("output", None)]
    code, out, err = run(capsys, "--db", db, "rates", "list")
    assert code == 0, err
    drift = out[out.index("card drift"):]
    assert "billed 7.6/1M, card 8/1M" in drift and "priority" not in drift
