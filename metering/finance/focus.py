"""FinOps FOCUS 1.2 export: metered usage (and allocated PTU capacity) as FOCUS cost and usage rows.

Pure mapping, no I/O: ``db.queries.focus_usage`` rows (and ``metering.ptu`` allocations) in,
FOCUS records out, then CSV text or an Arrow table. One usage row per day × subscription ×
deployment × model × token kind (input, cached input, output) — split further by deployment type,
backend region, rate and price status so that every row has one unit price. Quantities are in
tokens (``ConsumedUnit`` ``Tokens``) and priced per million (``PricingUnit`` ``1000000 Tokens``,
``PricingQuantity`` = tokens / 1,000,000), as the rate card is.

Every column FOCUS 1.2 marks Mandatory is present (``MANDATORY``), with the conditional and
recommended columns this data can fill, and ``x_``-prefixed extras for chargeback: business unit,
cost center, deployment type, the share of tokens that were estimated, the price status.

Conventions worth knowing (docs/focus.md has the whole story, and the applicability criteria):

* ``BilledCost`` = ``EffectiveCost`` = ``ListCost`` = ``ContractedCost`` on usage rows: the rate
  card's price is what we charge (put negotiated prices in the card). Their sum is the report's cost.
* ``SkuId`` says what is sold (model, deployment type, service tier, token kind), ``SkuPriceId`` one
  price of it (plus the price's region, currency and unit price): stable over time, never a row id.
* Usage without a known unit price (``no_rate``, ``no_usage``) cannot be a FOCUS row (usage rows
  need a unit price, and $0 would be a lie): it is returned apart (``LeftOut``) and the command says so.
* Provisioned (PTU) and not-billable tokens are usage rows at unit price 0; the capacity cost, when a
  PTU cost file is given, is one recurring usage row per month × deployment × subscription priced per
  month (``x_ChargeSource`` ``ptu_allocation``). No commitment discount is claimed.
* ``ResourceId`` is the Azure OpenAI resource's ARM id (``metering backends import``), the
  deployment is in ``x_Deployment``; ``ProviderName``/``InvoiceIssuerName`` are the internal
  platform issuing the chargeback, ``PublisherName`` Microsoft.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from metering.safe_text import spreadsheet_text

FOCUS_VERSION = "1.2"
MILLION = Decimal(1_000_000)
SHARE_QUANTUM = Decimal("0.000001")
QUANTITY_QUANTUM = Decimal("1e-12")

# FOCUS 1.2 columns marked Mandatory (present in every FOCUS dataset).
MANDATORY = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost",
    "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
)
# Conditional and recommended columns this data fills (present because the condition holds). The
# PricingCurrency* columns repeat the billing-currency values: the rate card prices in the currency it bills.
# CommitmentDiscountStatus is always null (no commitment discount exists here): ConsumedQuantity's rules read it.
OPTIONAL = (
    "ChargeFrequency", "CommitmentDiscountStatus", "ConsumedQuantity", "ConsumedUnit", "ContractedUnitPrice",
    "InvoiceId", "ListUnitPrice",
    "PricingCategory", "PricingCurrency", "PricingCurrencyContractedUnitPrice", "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice", "RegionId", "RegionName", "ResourceId", "ResourceName", "ResourceType",
    "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceDetails", "SkuPriceId", "SubAccountId", "SubAccountName",
    "Tags",
)
EXTRA = (
    "x_BusinessUnit", "x_CostCenter", "x_Backend", "x_Deployment", "x_DeploymentType", "x_Model", "x_TokenKind",
    "x_Requests", "x_EstimatedTokens", "x_EstimatedShare", "x_PriceStatus", "x_ChargeSource",
    "x_AllocationShare", "x_FocusVersion",
)
COLUMNS = tuple(sorted(MANDATORY + OPTIONAL)) + EXTRA

DECIMAL_COLUMNS = frozenset({
    "BilledCost", "ContractedCost", "EffectiveCost", "ListCost", "PricingQuantity", "ConsumedQuantity",
    "ContractedUnitPrice", "ListUnitPrice", "PricingCurrencyContractedUnitPrice", "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice", "x_EstimatedShare", "x_AllocationShare",
})
DATETIME_COLUMNS = frozenset({"BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart"})
INTEGER_COLUMNS = frozenset({"x_Requests", "x_EstimatedTokens"})
# Mandatory columns FOCUS allows to be null (ChargeClass: null unless the row is a correction).
NULLABLE_MANDATORY = frozenset({"ChargeClass"})

TOKEN_KINDS = (
    # kind, token column, cost column, unit price column, meter name
    ("input", "input_tokens", "input_cost", "input_per_1m", "Input Tokens"),
    ("cached_input", "cached_input_tokens", "cached_input_cost", "cached_input_per_1m", "Cached Input Tokens"),
    ("output", "output_tokens", "output_cost", "output_per_1m", "Output Tokens"),
)
# The kinds Azure bills apart, each a FOCUS row of its own: kind, the text kind (side) it is carved
# out of, its meter name. Their unit price follows metering.price.pricing.FALLBACKS.
SPECIAL_KINDS = (
    ("cache_write", "input", "Cache Write Tokens"),
    ("audio_input", "input", "Audio Input Tokens"),
    ("image_input", "input", "Image Input Tokens"),
    ("cached_audio_input", "cached_input", "Cached Audio Input Tokens"),
    ("cached_image_input", "cached_input", "Cached Image Input Tokens"),
    ("audio_output", "output", "Audio Output Tokens"),
    ("image_output", "output", "Image Output Tokens"),
)


# The units billed beyond tokens, each a FOCUS row of its own: usage column, meter, ConsumedUnit,
# PricingUnit, and how many consumed units the rate column's price is for (metering.model.UNIT_RATE_COLUMNS).
UNIT_LINES = (
    ("audio_seconds", "Audio Seconds", "Seconds", "Hours"),
    ("input_characters", "Speech Characters", "Characters", "1000000 Characters"),
    ("web_search_calls", "Web Search Calls", "Calls", "1000 Calls"),
    ("file_search_calls", "File Search Calls", "Calls", "1000 Calls"),
    ("code_interpreter_sessions", "Code Interpreter Sessions", "Sessions", "Sessions"),
)
UNIT_OF_KIND = {kind: (consumed, pricing) for kind, _, consumed, pricing in UNIT_LINES}


def _unit_lines(row: Mapping[str, Any]) -> list[tuple[str, Any, Decimal, Decimal | None, str, int]]:
    """(kind, quantity, cost, unit price, meter, 0) of the units of a usage group: each at its rate
    column; the first keeps what the stored ``unit_cost`` has beyond them (audio rounded to 12 places)."""
    from metering.model import UNIT_RATE_COLUMNS

    priced = row["price_status"] == "priced"
    lines: list[tuple[str, Any, Decimal, Decimal | None, str, int]] = []
    total = Decimal(0)
    for kind, meter, _, _ in UNIT_LINES:
        quantity = row.get(kind) or 0
        if not quantity:
            continue
        column, per = UNIT_RATE_COLUMNS[kind]
        price = row.get(column) if priced else None
        cost = Decimal(str(quantity)) * price / per if price is not None else Decimal(0)
        total += cost
        lines.append((kind, Decimal(str(quantity)), cost, price, meter, 0))
    stored = row.get("unit_cost")
    if lines and priced and stored is not None and stored != total:
        kind, quantity, cost, price, meter, estimated = lines[0]
        lines[0] = (kind, quantity, cost + stored - total, price, meter, estimated)
    return lines


def _special_tokens(row: Mapping[str, Any]) -> dict[str, int]:
    """Tokens of each special kind in a usage group (uncached audio/image input: the audio/image
    prompt tokens less their cached part)."""
    def n(key: str) -> int:
        return int(row.get(key) or 0)

    return {
        "cache_write": n("cache_write_tokens"),
        "audio_input": n("audio_prompt_tokens") - n("cached_audio_tokens"),
        "image_input": n("image_prompt_tokens") - n("cached_image_tokens"),
        "cached_audio_input": n("cached_audio_tokens"),
        "cached_image_input": n("cached_image_tokens"),
        "audio_output": n("audio_completion_tokens"),
        "image_output": n("image_completion_tokens"),
    }


def _kind_lines(row: Mapping[str, Any]) -> list[tuple[str, int, Decimal, Decimal | None, str, int]]:
    """(kind, tokens, cost, unit price, meter, estimated tokens) of a usage group, every kind apart.
    A special kind's cost is its tokens at its unit price (with the pricing fallback); the text kind
    of its side keeps the rest of the side's stored cost, so the rows add up to the stored costs."""
    from metering.price.pricing import FALLBACKS

    priced = row["price_status"] == "priced"
    special = _special_tokens(row)
    lines = []
    carved: dict[str, tuple[int, Decimal]] = {}
    for kind, side, meter in SPECIAL_KINDS:
        tokens = special[kind]
        price = next((row.get(name) for name in FALLBACKS[kind] if row.get(name) is not None), None) if priced else None
        cost = Decimal(tokens) * price / MILLION if price is not None else Decimal(0)
        before = carved.get(side, (0, Decimal(0)))
        carved[side] = (before[0] + tokens, before[1] + cost)
        lines.append((kind, tokens, cost, price, meter, 0))
    text = []
    for kind, tokens_key, cost_key, price_key, meter in TOKEN_KINDS:
        tokens_less, cost_less = carved.get(kind, (0, Decimal(0)))
        stored = row[cost_key] if row[cost_key] is not None else Decimal(0)
        price = row.get(price_key) if priced else None
        text.append((kind, int(row[tokens_key] or 0) - tokens_less, stored - cost_less, price, meter,
                     int(row.get(f"estimated_{tokens_key}") or 0)))
    return text + lines + _unit_lines(row)


def _quantities(kind: str, quantity: Any) -> dict[str, Any]:
    """Consumed and pricing quantity and unit of a row: tokens priced per million, or a unit beyond
    tokens in its own unit (seconds of audio priced per hour, characters per million, calls per
    thousand, sessions)."""
    from metering.model import UNIT_RATE_COLUMNS

    if kind in UNIT_OF_KIND:
        consumed, pricing = UNIT_OF_KIND[kind]
        return {"ConsumedQuantity": Decimal(quantity), "ConsumedUnit": consumed,
                "PricingQuantity": Decimal(quantity) / UNIT_RATE_COLUMNS[kind][1], "PricingUnit": pricing}
    return {"ConsumedQuantity": Decimal(quantity), "ConsumedUnit": "Tokens",
            "PricingQuantity": Decimal(quantity) / MILLION, "PricingUnit": "1000000 Tokens"}


@dataclass(frozen=True)
class FocusContext:
    """Constants of an export: the billing account and month, the currency of rows without a price,
    and who is who. This is an internal chargeback: the platform team that runs the gateway provides
    the service to business units and issues the chargeback statement (``ProviderName``,
    ``InvoiceIssuerName``, default: the billing account's name); Microsoft publishes it
    (``PublisherName``). Azure's own FOCUS export names Microsoft as provider and issuer of the same
    spend — docs/focus.md says how not to count it twice."""

    billing_account_id: str
    billing_account_name: str
    month: str  # YYYY-MM
    currency: str = "USD"
    provider: str | None = None  # None: the billing account's name
    publisher: str = "Microsoft"
    invoice_issuer: str | None = None  # None: the provider
    service_name: str = "Azure OpenAI"
    service_category: str = "AI and Machine Learning"
    service_subcategory: str = "Generative AI"

    @property
    def billing_period(self) -> tuple[datetime, datetime]:
        return month_bounds(self.month)

    @property
    def provider_name(self) -> str:
        return self.provider or self.billing_account_name

    @property
    def invoice_issuer_name(self) -> str:
        return self.invoice_issuer or self.provider_name

    @property
    def invoice_id(self) -> str:
        """The month's chargeback statement of the billing account (a provisional invoice in FOCUS terms)."""
        return f"{self.billing_account_id}-{self.month}"


def month_bounds(month: str) -> tuple[datetime, datetime]:
    year, number = (int(part) for part in month.split("-"))
    start = datetime(year, number, 1, tzinfo=timezone.utc)
    end = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


def region_id(name: str | None) -> str | None:
    """``Sweden Central`` → ``swedencentral`` (Azure's region ids)."""
    if not name:
        return None
    return re.sub(r"[^a-z0-9]", "", name.lower()) or None


def _tags(business_unit: str | None, cost_center: str | None) -> str:
    tags = {}
    if business_unit:
        tags["BusinessUnit"] = business_unit
    if cost_center:
        tags["CostCenter"] = cost_center
    return json.dumps(tags, ensure_ascii=False, sort_keys=True)


def _share(part: int, whole: int) -> Decimal:
    if not whole:
        return Decimal(0)
    return (Decimal(part) / Decimal(whole)).quantize(SHARE_QUANTUM, rounding=ROUND_HALF_EVEN)


def price_text(price: Decimal) -> str:
    """A unit price as it appears in a SkuPriceId: plain digits, no exponent, no trailing zeros."""
    text = format(price.normalize(), "f") if price else "0"
    return text.rstrip("0").rstrip(".") if "." in text else text


def sku_id(model: str, deployment_type: str, kind: str, tier: str | None = None,
           min_prompt_tokens: int | None = None) -> str:
    """What the SKU is — the model, how it is deployed, its service tier (and long-context tier), the
    token kind — stable over time and across accounts; never a rate row id."""
    parts = [model, deployment_type, tier or "standard"]
    if min_prompt_tokens:
        parts.append(f"from{int(min_prompt_tokens)}tokens")
    return "/".join(parts + [kind])


def sku_price_id(sku: str, region: str | None, currency: str, price: Decimal) -> str:
    """One price of one SKU: the SKU, where the price applies, its currency and unit price. A new rate
    card row at the same price keeps the id; a new price is a new SKU price, of the same SKU."""
    return f"{sku}@{region_id(region) or 'any-region'}/{currency}/{price_text(price)}"


def _price_details(**properties: Any) -> str:
    """SkuPriceDetails: provider-defined (``x_``) properties of a SKU price, those that apply."""
    return json.dumps({f"x_{key}": value for key, value in properties.items() if value is not None},
                      ensure_ascii=False, sort_keys=True)


def _resource(backend_id: str | None, backends: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(ResourceId, ResourceName, region) of an APIM backend: the Azure OpenAI resource's ARM id from
    ``metering backends import``; all None when the backend is not mapped (the export says so)."""
    backend = backends.get(backend_id) if backend_id else None
    if backend is None:
        return None, None, None
    return backend.resource_id, backend.resource_id.rstrip("/").rsplit("/", 1)[-1], backend.region


def _common(ctx: FocusContext) -> dict[str, Any]:
    start, end = ctx.billing_period
    return {
        "BillingAccountId": ctx.billing_account_id,
        "BillingAccountName": ctx.billing_account_name,
        "BillingPeriodStart": start,
        "BillingPeriodEnd": end,
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "CommitmentDiscountStatus": None,
        "InvoiceId": ctx.invoice_id,
        "InvoiceIssuerName": ctx.invoice_issuer_name,
        "ProviderName": ctx.provider_name,
        "PublisherName": ctx.publisher,
        "ServiceName": ctx.service_name,
        "ServiceCategory": ctx.service_category,
        "ServiceSubcategory": ctx.service_subcategory,
        "x_FocusVersion": FOCUS_VERSION,
    }


def _priced(record: dict[str, Any]) -> dict[str, Any]:
    """Fill the PricingCurrency* columns: prices are in the billing currency."""
    return record | {
        "PricingCurrency": record["BillingCurrency"],
        "PricingCurrencyListUnitPrice": record["ListUnitPrice"],
        "PricingCurrencyContractedUnitPrice": record["ContractedUnitPrice"],
        "PricingCurrencyEffectiveCost": record["EffectiveCost"],
    }


def subaccount_id(subscription: str | None) -> str | None:
    """The SubAccountId a subscription's rows carry (None for rows of no subscription)."""
    return _subaccount(subscription, None, {})[0]


def _subaccount(subscription: str | None, name: str | None,
                subscriptions: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, str | None]:
    """(SubAccountId, SubAccountName): one name per id (the subscription's latest name, else its id)."""
    if not subscription or subscription in ("(unmapped)", "(unattributed)"):
        return None, None
    known = subscriptions.get(subscription, {}).get("subscription_name")
    return subscription, known or name or subscription


@dataclass(frozen=True)
class LeftOut:
    """Usage a FOCUS row cannot carry: tokens whose unit price is unknown (FOCUS requires a unit price
    on every usage row, and a guessed $0 would be a lie). ``metering report`` shows them as unpriced."""

    day: str
    subscription: str | None
    deployment: str | None
    model: str | None
    token_kind: str
    price_status: str
    requests: int
    tokens: int


def usage_records(
    rows: Iterable[Mapping[str, Any]],
    ctx: FocusContext,
    subscriptions: Mapping[str, Mapping[str, Any]] | None = None,
    backends: Mapping[str, Any] | None = None,
    left_out: list[LeftOut] | None = None,
) -> list[dict[str, Any]]:
    """One FOCUS usage row per usage group and token kind with a known unit price (kinds with no
    tokens and no cost are left out). Provisioned (PTU) and not-billable tokens have a unit price of
    0: their cost is the capacity, exported apart. Tokens without a price go to ``left_out``.
    ``subscriptions``: id → name, ``backends``: backend id → ``Backend`` (ARM id, region)."""
    common = _common(ctx)
    subscriptions = subscriptions or {}
    backends = backends or {}
    out = []
    for row in rows:
        day = date.fromisoformat(str(row["day"])[:10])
        start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        status = row["price_status"]
        provisioned = row["deployment_type"] == "provisioned"
        free = status == "not_billable"
        model = row["model"] or "(unknown)"
        deployment = row["deployment"] or "(none)"
        currency = row["currency"] or ctx.currency
        resource_id, resource_name, _ = _resource(row.get("backend_id"), backends)
        subaccount_id, subaccount_name = _subaccount(row["subscription_id"], row.get("subscription_name"), subscriptions)
        for kind, tokens, cost, price, meter, estimated in _kind_lines(row):
            if tokens == 0 and cost == 0:
                continue
            if free:
                price = Decimal(0)
            if price is None:
                if left_out is not None:
                    left_out.append(LeftOut(day.isoformat(), row["subscription_id"], row["deployment"], row["model"],
                                            kind, status, int(row["requests"]), tokens))
                continue
            description = f"{model} {meter.lower()}, {row['deployment_type']} deployment {deployment}"
            if provisioned:
                description += " (provisioned throughput: tokens cost nothing, the capacity is charged apart)"
            elif free:
                description += " (not billable: throttled or failed)"
            sku_model = row.get("rate_model") or model
            tier = row.get("rate_service_tier")
            sku = sku_id(sku_model, row["deployment_type"], kind, tier, row.get("rate_min_prompt_tokens"))
            price_region = row.get("rate_region")
            out.append(_priced(common | {
                "BilledCost": cost,
                "EffectiveCost": cost,
                "ListCost": cost,
                "ContractedCost": cost,
                "BillingCurrency": currency,
                "ChargePeriodStart": start,
                "ChargePeriodEnd": start + timedelta(days=1),
                "ChargeDescription": description,
                "ChargeFrequency": "Usage-Based",
                **_quantities(kind, tokens),
                "PricingCategory": "Standard",
                "ListUnitPrice": price,
                "ContractedUnitPrice": price,
                "RegionId": region_id(row["backend_region"]),
                "RegionName": row["backend_region"],
                "ResourceId": resource_id,
                "ResourceName": resource_name,
                "ResourceType": "Azure OpenAI resource" if resource_id else None,
                "SkuId": sku,
                "SkuMeter": meter,
                "SkuPriceId": sku_price_id(sku, price_region, currency, price),
                "SkuPriceDetails": _price_details(Model=sku_model, DeploymentType=row["deployment_type"],
                                                  ServiceTier=tier or "standard", TokenKind=kind,
                                                  MinPromptTokens=row.get("rate_min_prompt_tokens"),
                                                  PriceRegion=region_id(price_region) or "any-region",
                                                  PricedBy="provisioned capacity" if provisioned else
                                                  "not billable" if free else "rate card"),
                "SubAccountId": subaccount_id,
                "SubAccountName": subaccount_name,
                "Tags": _tags(row["business_unit"], row["cost_center"]),
                "x_BusinessUnit": row["business_unit"] or "(unmapped)",
                "x_CostCenter": row["cost_center"] or "(unmapped)",
                "x_Backend": row.get("backend_id"),
                "x_Deployment": deployment,
                "x_DeploymentType": row["deployment_type"],
                "x_Model": model,
                "x_TokenKind": kind,
                "x_Requests": int(row["requests"]),
                "x_EstimatedTokens": estimated,
                "x_EstimatedShare": _share(estimated, tokens),
                "x_PriceStatus": status,
                "x_ChargeSource": "usage",
                "x_AllocationShare": None,
            }))
    return out


def _decimals(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def ptu_records(
    parts: Iterable[Mapping[str, Any]],
    ctx: FocusContext,
    subscriptions: Mapping[str, Mapping[str, Any]] | None = None,
    backends: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One FOCUS row per PTU (or other fixed monthly) cost × subscription (``metering.ptu.by_subscription``
    rows): a recurring usage charge for the deployment's capacity, its month priced at the monthly
    cost (``PricingUnit`` ``Months``) and allocated by tokens (``PricingQuantity`` = the subscription's
    share of the month). ``BilledCost`` is the whole-cent allocation, the amounts of a cost adding up
    to it; ``ListCost``/``ContractedCost`` = unit price × quantity exactly. No commitment discount
    exists, so ``PricingCategory`` is ``Standard``; the tokens are on the usage rows, not here.
    ``subscriptions``: id → name, business_unit, cost_center; ``backends``: id → ``Backend``."""
    common = _common(ctx)
    subscriptions = subscriptions or {}
    backends = backends or {}
    out = []
    for part in parts:
        start, end = month_bounds(part["month"])
        info = subscriptions.get(part["subscription"], {})
        deployment = part["deployment"]
        kind = part.get("kind", "provisioned")
        monthly = Decimal(part["monthly_cost"])
        # The quantity keeps as many digits as make unit price × quantity exact in decimal128(28, 12).
        share = Decimal(part["token_share"]).quantize(Decimal(1).scaleb(-max(0, 12 - _decimals(monthly))),
                                                      rounding=ROUND_HALF_EVEN)
        amount = part["ptu_cost"]
        resource_id, resource_name, region = _resource(part.get("backend_id"), backends)
        subaccount_id, subaccount_name = _subaccount(part["subscription"], None, subscriptions)
        sku = f"capacity/{kind}" if kind != "provisioned" else "capacity/provisioned-throughput"
        out.append(_priced(common | {
            "BilledCost": amount,
            "EffectiveCost": amount,
            "ListCost": monthly * share,
            "ContractedCost": monthly * share,
            "BillingCurrency": part["currency"],
            "ChargePeriodStart": start,
            "ChargePeriodEnd": end,
            "ChargeDescription": (f"Provisioned throughput {deployment}" if kind == "provisioned"
                                  else f"Fixed cost ({kind}) of {deployment}")
                                 + f", {part['month']}: {(share * 100).quantize(Decimal('0.1'))}% of the deployment's tokens",
            "ChargeFrequency": "Recurring",
            "ConsumedQuantity": share,
            "ConsumedUnit": "Months",
            "PricingQuantity": share,
            "PricingUnit": "Months",
            "PricingCategory": "Standard",
            "ListUnitPrice": monthly,
            "ContractedUnitPrice": monthly,
            "RegionId": region_id(region),
            "RegionName": region,
            "ResourceId": resource_id,
            "ResourceName": resource_name,
            "ResourceType": "Azure OpenAI resource" if resource_id else None,
            "SkuId": sku,
            "SkuMeter": "Provisioned Throughput Units" if kind == "provisioned" else f"Fixed monthly cost: {kind}",
            "SkuPriceId": sku_price_id(f"{sku}/{deployment}", region, part["currency"], monthly),
            "SkuPriceDetails": _price_details(CostKind=kind, Deployment=deployment),
            "SubAccountId": subaccount_id,
            "SubAccountName": subaccount_name,
            "Tags": _tags(info.get("business_unit"), info.get("cost_center")),
            "x_BusinessUnit": info.get("business_unit") or "(unmapped)",
            "x_CostCenter": info.get("cost_center") or "(unmapped)",
            "x_Backend": part.get("backend_id") or None,
            "x_Deployment": deployment,
            "x_DeploymentType": "provisioned",
            "x_Model": None,
            "x_TokenKind": None,
            "x_Requests": int(part["requests"]),
            "x_EstimatedTokens": None,
            "x_EstimatedShare": None,
            "x_PriceStatus": "allocated",
            "x_ChargeSource": "ptu_allocation",
            "x_AllocationShare": share,
        }))
    return out


def true_up_records(
    amounts: Mapping[str, Decimal],
    ctx: FocusContext,
    subscriptions: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One ``Adjustment`` row per subscription with a true-up (``metering true-up``, stored): what
    makes the subscription's BilledCost its final charge — its share of each billed meter's difference
    to the metered cost — so that the export's BilledCost adds up to the bill."""
    common = _common(ctx)
    subscriptions = subscriptions or {}
    start, end = ctx.billing_period
    out = []
    for subscription, amount in sorted(amounts.items()):
        if not amount:
            continue
        info = subscriptions.get(subscription, {})
        subaccount_id, subaccount_name = _subaccount(subscription, None, subscriptions)
        unattributed = subscription == "(unattributed)"
        out.append(_priced(common | {
            "BilledCost": amount, "EffectiveCost": amount, "ListCost": amount, "ContractedCost": amount,
            "BillingCurrency": ctx.currency,
            "ChargeCategory": "Adjustment",
            "ChargePeriodStart": start, "ChargePeriodEnd": end,
            "ChargeDescription": (f"Azure bill lines of {ctx.month} no subscription is charged for (resources no "
                                  "backend maps to)" if unattributed else
                                  f"True-up to the Azure bill, {ctx.month}: this subscription's share of each billed "
                                  "meter's difference to the metered cost (metering true-up)"),
            "ChargeFrequency": "Recurring",
            "ConsumedQuantity": None, "ConsumedUnit": None,
            "PricingQuantity": Decimal(1), "PricingUnit": "Months", "PricingCategory": "Other",
            "ListUnitPrice": None, "ContractedUnitPrice": None, "RegionId": None, "RegionName": None,
            "ResourceId": None, "ResourceName": None, "ResourceType": None,
            "SkuId": None, "SkuMeter": None, "SkuPriceId": None, "SkuPriceDetails": None,
            "SubAccountId": subaccount_id,
            "SubAccountName": subaccount_name,
            "Tags": _tags(info.get("business_unit"), info.get("cost_center")),
            "x_BusinessUnit": info.get("business_unit") or ("(unattributed)" if unattributed else "(unmapped)"),
            "x_CostCenter": info.get("cost_center") or ("(unattributed)" if unattributed else "(unmapped)"),
            "x_Backend": None, "x_Deployment": None, "x_DeploymentType": None, "x_Model": None, "x_TokenKind": None,
            "x_Requests": None, "x_EstimatedTokens": None, "x_EstimatedShare": None,
            "x_PriceStatus": "trued_up", "x_ChargeSource": "bill_true_up", "x_AllocationShare": None,
        }))
    return out


def billed_total(records: Iterable[Mapping[str, Any]]) -> Decimal:
    return sum((record["BilledCost"] for record in records), Decimal(0))


# --------------------------------------------------------------------------- writers


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):  # always with a fraction digit: a reader must infer a decimal, not an integer
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0")
        return text + "0" if text.endswith(".") else text if "." in text else text + ".0"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str):  # names from events: never a live formula in a spreadsheet
        return spreadsheet_text(value)
    return str(value)


def to_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """FOCUS rows as CSV: exact decimals (``1500.0``, never ``1500``), ISO 8601 UTC times (``Z``), empty for null, text that a
    spreadsheet would run as a formula quoted (``safe_text.spreadsheet_text``; Parquet keeps values as stored)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for record in records:
        writer.writerow([_text(record.get(column)) for column in COLUMNS])
    return buffer.getvalue()


def arrow_schema() -> Any:
    import pyarrow as pa

    fields = []
    for column in COLUMNS:
        if column in DECIMAL_COLUMNS:
            kind = pa.decimal128(28, 12)
        elif column in DATETIME_COLUMNS:
            kind = pa.timestamp("us", tz="UTC")
        elif column in INTEGER_COLUMNS:
            kind = pa.int64()
        else:
            kind = pa.string()
        nullable = column not in MANDATORY or column in NULLABLE_MANDATORY
        fields.append(pa.field(column, kind, nullable=nullable))
    return pa.schema(fields, metadata={"focus_version": FOCUS_VERSION})


def to_arrow(records: Sequence[Mapping[str, Any]]) -> Any:
    """FOCUS rows as an Arrow table: money and quantities ``decimal128(28, 12)``, times UTC."""
    import pyarrow as pa

    schema = arrow_schema()
    arrays = []
    for field in schema:
        values = [record.get(field.name) for record in records]
        if field.name in DECIMAL_COLUMNS:
            values = [None if v is None else Decimal(v).quantize(QUANTITY_QUANTUM) for v in values]
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def to_parquet(records: Sequence[Mapping[str, Any]]) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(to_arrow(records), buffer)
    return buffer.getvalue()
