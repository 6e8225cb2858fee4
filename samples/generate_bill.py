"""Regenerate the demo's Azure bill, ``samples/bill-2026-10.focus.csv``, and ``samples/backends.csv``
(deterministic: same bytes every run) from the demo capture, as a FOCUS 1.0r2 cost export would show it.

The bill charges exactly the metered tokens of every pay-as-you-go meter at the card's prices, except:

* bypass: 65,000 gpt-4o-mini input tokens on aoai-westeurope (14th and 21st) that a script sent to the
  resource directly, not through APIM;
* price: gpt-4.1 output is billed at 7.60 per 1M (a negotiated discount), the card says 8.00;
* unpriced: Phi-4-mini-instruct, which the card has no rate for, billed at Foundry's price;
* capacity: the provisioned deployment's hours, per day, 2.50 for the month (samples/ptu_costs.csv);
* the bill's own storage line, which the import skips.

Run it after changing the capture: ``python samples/generate_bill.py``.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))
from bill_exports import STORAGE, SUBSCRIPTION, Charge, focus_csv  # noqa: E402

from db.bill import metered_usage  # noqa: E402
from db.engine import make_engine  # noqa: E402
from metering.cli import main  # noqa: E402
from metering.finance.options import Period  # noqa: E402
from metering.price.retail_prices import KNOWN_VERSIONS, parse_meter  # noqa: E402

MONTH = "2026-10"
REGIONS = {"aoai-swedencentral": "swedencentral", "aoai-westeurope": "westeurope", "aoai-eastus2": "eastus2",
           "aoai-ptu-swedencentral": "swedencentral"}
KIND_WORDS = {"input": "Inp", "cached_input": "cached-Inp", "output": "Outp"}
TYPE_WORDS = {"global": "glbl", "datazone": "DZone", "regional": "regnl"}
PRICES = {  # per 1M tokens: the card's, except the price difference and the model the card lacks
    ("gpt-4.1-2025-04-14", "output", "global"): Decimal("7.60"),
    ("Phi-4-mini-instruct", "input", "global"): Decimal("0.075"),
    ("Phi-4-mini-instruct", "output", "global"): Decimal("0.30"),
}
BYPASS = [("2026-10-14", 40_000), ("2026-10-21", 25_000)]  # gpt-4o-mini input on aoai-westeurope
VERSIONED = re.compile(r"^(.+)-\d{4}-\d{2}-\d{2}$")  # gpt-5.6-2026-07-09


def resource(backend: str) -> str:
    return (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-contoso-ai/providers/"
            f"Microsoft.CognitiveServices/accounts/{backend}")


def meter_name(model: str, kind: str, deployment_type: str) -> str | None:
    """The meter Azure bills a model's token kind on: ``gpt-4o-mini-0718-Inp-DZone`` (a model whose
    version code is not known here is named without it); checked by reading it back with the Retail
    Prices meter parser the import uses. ``None`` for a meter that parser does not read (audio, image)."""
    stem, version = model, None
    for (base, code), iso in KNOWN_VERSIONS.items():
        if model == f"{base}-{iso}":
            stem, version = base, code
    candidates = ["-".join([stem, *([version] if version else []), KIND_WORDS[kind], TYPE_WORDS[deployment_type]])]
    if version is None and VERSIONED.match(model):
        candidates.append("-".join([VERSIONED.match(model).group(1), KIND_WORDS[kind], TYPE_WORDS[deployment_type]]))
    for name in candidates:
        parsed = parse_meter(name, "Azure OpenAI")
        if not isinstance(parsed, str) and parsed.kind == kind and parsed.deployment_type == deployment_type:
            return name
    return None


def main_() -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = f"sqlite:///{folder}/demo.db"
        for args in (["db", "upgrade"], ["rates", "import", str(HERE / "rates.csv")],
                     ["deployments", "import", str(HERE / "deployments.csv")], ["replay", str(HERE / "events")]):
            assert main(["--db", db, *args]) == 0
        engine = make_engine(db)
        period = Period.month(MONTH)
        with engine.connect() as conn:
            metered = metered_usage(conn, period.since, period.until)
            card = {(row.model, row.deployment_type): row for row in conn.exec_driver_sql(
                "SELECT model, deployment_type, input_per_1m, cached_input_per_1m, output_per_1m FROM rates"
                " WHERE service_tier IS NULL OR service_tier = 'default'")}  # the standard tier's prices
        engine.dispose()
    tokens: dict[tuple[str, str, str, str, str], int] = defaultdict(int)
    metered_cost: dict[tuple[str, str, str, str, str], Decimal] = defaultdict(Decimal)
    for group in metered:
        if group["backend_id"] not in REGIONS or group["deployment_type"] == "provisioned" \
                or group["price_status"] == "not_billable":
            continue
        model = {"gpt-4o": "gpt-4o-2024-11-20", "gpt-4o-mini": "gpt-4o-mini-2024-07-18"}.get(group["model"], group["model"])
        for kind in KIND_WORDS:
            if group[f"{kind}_tokens"]:
                key = (group["day"], group["backend_id"], model, kind, group["deployment_type"])
                tokens[key] += group[f"{kind}_tokens"]
                metered_cost[key] += Decimal(str(group[f"{kind}_cost"] or 0))
    for day, count in BYPASS:
        tokens[(day, "aoai-westeurope", "gpt-4o-mini-2024-07-18", "input", "datazone")] += count
    charges = []
    for (day, backend, model, kind, deployment_type), count in sorted(tokens.items()):
        name = meter_name(model, kind, deployment_type)
        if name is None:  # audio, image, transcription: billed on meters the import keeps as unknown
            charges.append(Charge(day, f"{model} {kind.replace('_', ' ')} {deployment_type}", str(Decimal(count) / 1_000_000),
                                  "1M Tokens", str(metered_cost[(day, backend, model, kind, deployment_type)]),
                                  resource=resource(backend), subcategory="Azure OpenAI"))
            continue
        price = PRICES.get((model, kind, deployment_type))
        if price is None:
            stem = next(m for m in (model, model.rsplit("-", 3)[0]) if (m, deployment_type) in card)
            rate = card[(stem, deployment_type)]
            price = Decimal(str({"input": rate.input_per_1m, "output": rate.output_per_1m,
                                 "cached_input": rate.cached_input_per_1m or rate.input_per_1m}[kind]))
        cost = price * count / 1_000_000
        key = (day, backend, model, kind, deployment_type)
        if (model, kind, deployment_type) not in PRICES and metered_cost[key] > cost:
            # the meter priced a tier or token kind (priority, cache writes) that this bill's text meter
            # names cannot: Azure bills it on that meter, at what the card says, so the bill matches
            cost = metered_cost[key]
        foundry = model.startswith("Phi")
        charges.append(Charge(day, name, str(Decimal(count) / 1_000_000),
                              "1M Tokens", str(cost), resource=resource(backend),
                              subcategory="Phi-4" if foundry else "Azure OpenAI"))
    for day in range(1, 32):  # provisioned throughput: hours, billed per day
        cost = "0.10" if day == 31 else "0.08"
        charges.append(Charge(f"{MONTH}-{day:02d}", "Provisioned Managed Global", "24", "1 Hour", cost,
                              resource=resource("aoai-ptu-swedencentral")))
    charges.append(Charge(f"{MONTH}-31", "Hot LRS Write Operations", "12.4", "10K", "0.0682", category="Storage",
                          subcategory="Tiered Block Blob", resource=STORAGE))
    (HERE / f"bill-{MONTH}.focus.csv").write_bytes(focus_csv(charges, "1.0r2"))
    (HERE / "backends.csv").write_text("backend_id,resource_id,region\n" + "".join(
        f"{backend},{resource(backend)},{region}\n" for backend, region in sorted(REGIONS.items())))


if __name__ == "__main__":
    main_()
