"""Regenerate the demo's Azure bill, ``samples/bill-2026-10.focus.csv``, and ``samples/backends.csv``
(deterministic: same bytes every run) from the demo capture, as a FOCUS 1.0r2 cost export would show it.

The bill charges exactly the metered tokens of every pay-as-you-go meter at the card's prices, except:

* bypass: 65,000 gpt-4o-mini input tokens on aoai-westeurope (14th and 21st) that a script sent to the
  resource directly, not through APIM;
* price: gpt-4.1 output is billed at 7.60 per 1M (a negotiated discount), the card says 8.00;
* priority: the one gpt-4.1 request that ran on the priority tier is billed on its priority meters
  (``gpt-4.1-0414-Inp-pp-glbl``) at the card's priority prices;
* unpriced: Phi-4-mini-instruct, which the card has no rate for, billed at Foundry's price;
* capacity: the provisioned deployment's hours, per day, 2.50 for the month (samples/ptu_costs.csv);
* the bill's own storage line, which the import skips;
* units beyond tokens, as metered: whisper hours, tts-hd characters, file search calls, a code
  interpreter session (``UNIT_METERS``), and three fixed costs of aoai-eastus2 (``FIXED_CHARGES``:
  vector storage GB-days, fine-tuned model hosting hours, fine-tuning training tokens).

Audio, image and cache-write tokens are billed on their own meters, named as Azure names them
(``gpt-4o-aud-1217 Inp glbl``, ``gpt-image-1-output-img-glbl``, ``gpt-4o-transcribe-aud-inp-glbl``,
``5.6 ShortCo Cd Wr Std Gl``: shapes seen in the Retail Prices API, docs/public-data.md).

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
from db.rate_card import stored_rates  # noqa: E402
from metering.cli import main  # noqa: E402
from metering.price.metered_kinds import KINDS, UNIT_KIND_OF_FIELD, UNIT_KINDS, kind_price, price_unit  # noqa: E402
from metering.finance.report.options import Period  # noqa: E402
from metering.price.retail_prices import KNOWN_VERSIONS, parse_meter, parse_unit_meter  # noqa: E402

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


# Meters whose names do not follow the text meters' pattern, by model: kind → name per deployment
# type word (real shapes; the GPT5 product's meters are read with product "Azure OpenAI GPT5").
MEDIA_METERS = {
    "gpt-4o-audio-preview-2024-12-17": ({"input": "gpt-4o-aud-1217-txt Inp {t}", "output": "gpt-4o-aud-1217-txt Outp {t}",
                                         "audio_input": "gpt-4o-aud-1217 Inp {t}", "audio_output": "gpt-4o-aud-1217 Outp {t}"},
                                        {"global": "glbl", "datazone": "DZone", "regional": "regnl"}),
    "gpt-image-1": ({"input": "gpt-image-1-inp-txt-{t}", "cached_input": "gpt-image-1-inp-cached-txt-{t}",
                     "image_input": "gpt-image-1-inp-img-{t}", "cached_image_input": "gpt-image-1-inp-cached-img-{t}",
                     "image_output": "gpt-image-1-output-img-{t}"},
                    {"global": "glbl", "datazone": "dzone", "regional": "rgnl"}),
    "gpt-4o-transcribe": ({"input": "gpt-4o-transcribe-txt-inp-{t}", "output": "gpt-4o-transcribe-txt-out-{t}",
                           "audio_input": "gpt-4o-transcribe-aud-inp-{t}"},
                          {"global": "glbl", "datazone": "dz", "regional": "rgnl"}),
    "gpt-5.6": ({"input": "5.6 ShortCo Inp Std {t}", "cached_input": "5.6 ShortCo Cd Inp Std {t}",
                 "cache_write": "5.6 ShortCo Cd Wr Std {t}", "output": "5.6 ShortCo Opt Std {t}"},
                {"global": "Gl", "datazone": "DZ"}),
}
GPT5_PRODUCT = "Azure OpenAI GPT5"
# The meters of units beyond tokens (real Retail Prices shapes, metering.price.retail_prices.UNIT_METER_SHAPES):
# kind → (meter name by model, deployment type word, the bill's unit of measure and consumed unit).
UNIT_METERS = {
    "audio_ms": ({"whisper": "Speech-to-Text-Batch-Whisper-{t}"}, {"global": "glbl", "regional": "regnl"},
                 "1 Hour", "Hours"),
    "input_characters": ({"tts": "Speech-Text to Speech-{t}", "tts-hd": "Speech-Text to Speech HD-{t}"},
                         {"global": "global", "regional": "Regional"}, "1M", "Characters"),
    "file_search_calls": ({None: "file-search-tool-calls-{t}"}, {"global": "glbl", "datazone": "datazone",
                                                                 "regional": "rgnl"}, "1K", "Calls"),
    "code_interpreter_sessions": ({None: "Code-Interpreter-{t}"}, {"global": "global", "regional": "regnl EP"},
                                  "1", "Session"),
}
# Fixed costs of the month (one line each): vector storage GB-days, a fine-tuned deployment's hosting
# hours, a fine-tuning job's training tokens; reconciled as fixed costs, allocated with ptu_costs.csv.
FIXED_CHARGES = [  # 0.5 GB stored all month; a fine-tuned deployment kept one hour; a 20K-token training job
    ("Assistants-File Search-glbl", "15.5", "1/Day", "1.55", "GB/Day"),
    ("gpt-4o-0806-FT-Hstng-glbl", "1", "1 Hour", "1.70", "Hours"),
    ("gpt-4.1 FT Training global", "20", "1K", "0.50", "Tokens"),
]


def meter_name(model: str, kind: str, deployment_type: str, tier: str | None = None) -> tuple[str, str] | None:
    """The meter Azure bills a model's token kind on, and its product (the bill's meter subcategory):
    ``gpt-4o-mini-0718-Inp-DZone`` (a model whose version code is not known here is named without it),
    or the model's own shape in ``MEDIA_METERS``; a priority-processing meter says ``pp`` before its
    deployment type (``gpt-4.1-0414-Outp-pp-glbl``). Checked by reading it back with the Retail Prices
    meter parser the import uses. ``None`` for a meter that parser does not read."""
    stem, version = model, None
    for (base, code), iso in KNOWN_VERSIONS.items():
        if model == f"{base}-{iso}":
            stem, version = base, code
    candidates: list[tuple[str, str]] = []
    family = MEDIA_METERS.get(model) or MEDIA_METERS.get(VERSIONED.match(model).group(1) if VERSIONED.match(model) else "")
    if family is not None:
        names, types = family
        if kind in names and deployment_type in types:
            product = GPT5_PRODUCT if names[kind][0].isdigit() else "Azure OpenAI"
            name = names[kind].format(t=types[deployment_type])
            if tier:  # "5 pp inp Gl" (a real priority meter): pp where the standard meter says Std
                name = name.replace(" Std ", " pp ") if " Std " in name else name.replace(
                    types[deployment_type], f"pp-{types[deployment_type]}")
            candidates.append((name, product))
    elif kind in KIND_WORDS:
        candidates.append(("-".join([stem, *([version] if version else []), KIND_WORDS[kind], *(["pp"] if tier else []),
                                     TYPE_WORDS[deployment_type]]), "Azure OpenAI"))
        if version is None and VERSIONED.match(model):
            candidates.append(("-".join([VERSIONED.match(model).group(1), KIND_WORDS[kind], TYPE_WORDS[deployment_type]]),
                               "Azure OpenAI"))
    for name, product in candidates:
        parsed = parse_meter(name, product)
        if not isinstance(parsed, str) and (parsed.kind, parsed.deployment_type, parsed.service_tier) == (
                kind, deployment_type, tier):
            return name, product
    return None


def unit_charge(day: str, backend: str, model: str, kind: str, deployment_type: str, count: int,
                card: dict) -> Charge:
    """The bill line of a unit beyond tokens, at the card's price of the row that priced it (a tool's
    price is on its model's row)."""
    names, types, unit, consumed = UNIT_METERS[kind]
    name = (names.get(model) or names[None]).format(t=types[deployment_type])
    parsed = parse_unit_meter(name)
    assert parsed is not None and UNIT_KIND_OF_FIELD[parsed.kind] == kind, name
    per, _ = price_unit(kind)
    stem = next(m for m in (model, VERSIONED.sub(r"\1", model), model.rsplit("-", 3)[0]) if (m, deployment_type, None) in card)
    price = kind_price(card[(stem, deployment_type, None)], kind)
    block = {"1 Hour": Decimal(3_600_000), "1M": Decimal(1_000_000), "1K": Decimal(1000), "1": Decimal(1)}[unit]
    quantity = (Decimal(count) / block).quantize(Decimal("0.00000001")).normalize()  # as an export rounds it
    return Charge(day, name, f"{quantity:f}", unit, str(price * count / per), resource=resource(backend),
                  consumed_unit=consumed)


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
            card = {(rate.model, rate.deployment_type, None if rate.service_tier in (None, "default") else rate.service_tier): rate
                    for rate in stored_rates(conn)}
        engine.dispose()
    tokens: dict[tuple[str, str, str, str, str, str | None], int] = defaultdict(int)
    for group in metered:
        if group["backend_id"] not in REGIONS or group["deployment_type"] == "provisioned" \
                or group["price_status"] == "not_billable":
            continue
        model = {"gpt-4o": "gpt-4o-2024-11-20", "gpt-4o-mini": "gpt-4o-mini-2024-07-18"}.get(group["model"], group["model"])
        for kind in KINDS:
            if group[f"{kind}_tokens"]:
                key = (group["day"], group["backend_id"], model, kind, group["deployment_type"], group["service_tier"])
                tokens[key] += group[f"{kind}_tokens"]
    for day, count in BYPASS:
        tokens[(day, "aoai-westeurope", "gpt-4o-mini-2024-07-18", "input", "datazone", None)] += count
    charges = []
    for (day, backend, model, kind, deployment_type, tier), count in sorted(tokens.items(), key=lambda i: (*i[0][:5], i[0][5] or "")):
        if kind in UNIT_KINDS:
            charges.append(unit_charge(day, backend, model, kind, deployment_type, count, card))
            continue
        found = meter_name(model, kind, deployment_type, tier)
        if found is None:
            raise SystemExit(f"no meter name for {model} {kind} {deployment_type} {tier or ''}: add its shape to MEDIA_METERS")
        name, product = found
        price = PRICES.get((model, kind, deployment_type)) if tier is None else None
        if price is None:  # the card's price, of the tier the request was billed in
            stem = next(m for m in (model, VERSIONED.sub(r"\1", model), model.rsplit("-", 3)[0])
                        if (m, deployment_type, tier) in card)
            price = kind_price(card[(stem, deployment_type, tier)], kind)
        cost = price * count / 1_000_000
        foundry = model.startswith("Phi")
        charges.append(Charge(day, name, str(Decimal(count) / 1_000_000),
                              "1M Tokens", str(cost), resource=resource(backend),
                              subcategory="Phi-4" if foundry else product))
    for day in range(1, 32):  # provisioned throughput: hours, billed per day
        cost = "0.10" if day == 31 else "0.08"
        charges.append(Charge(f"{MONTH}-{day:02d}", "Provisioned Managed Global", "24", "1 Hour", cost,
                              resource=resource("aoai-ptu-swedencentral")))
    for name, quantity, unit, cost, consumed in FIXED_CHARGES:
        charges.append(Charge(f"{MONTH}-31", name, quantity, unit, cost, resource=resource("aoai-eastus2"),
                              consumed_unit=consumed))
    charges.append(Charge(f"{MONTH}-31", "Hot LRS Write Operations", "12.4", "10K", "0.0682", category="Storage",
                          subcategory="Tiered Block Blob", resource=STORAGE))
    (HERE / f"bill-{MONTH}.focus.csv").write_bytes(focus_csv(charges, "1.0r2"))
    (HERE / "backends.csv").write_text("backend_id,resource_id,region\n" + "".join(
        f"{backend},{resource(backend)},{region}\n" for backend, region in sorted(REGIONS.items())))


if __name__ == "__main__":
    main_()
