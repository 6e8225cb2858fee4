"""Azure Cost Management exports as a scheduled export writes them, for tests: the FOCUS cost and
usage file (1.0, 1.0r2 and 1.2-preview column sets) and the EA / MCA cost details file, as CSV
(UTF-8 with BOM, every field quoted) or Parquet. Column lists from Microsoft Learn, "Cost Management
dataset schema" (cost-usage-details-focus, cost-usage-details-ea, cost-usage-details-mca)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

SUBSCRIPTION = "0f3c2a1b-5d6e-4f70-8a9b-1c2d3e4f5a6b"
RESOURCE = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ai-prod/providers/"
            "Microsoft.CognitiveServices/accounts/aoai-swedencentral")
STORAGE = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ai-prod/providers/Microsoft.Storage/storageAccounts/stcapture"

FOCUS_1_0 = (
    "BilledCost,BillingAccountId,BillingAccountName,BillingAccountType,BillingCurrency,BillingPeriodEnd,"
    "BillingPeriodStart,ChargeCategory,ChargeClass,ChargeDescription,ChargeFrequency,ChargePeriodEnd,"
    "ChargePeriodStart,CommitmentDiscountCategory,CommitmentDiscountId,CommitmentDiscountName,"
    "CommitmentDiscountStatus,CommitmentDiscountType,ConsumedQuantity,ConsumedUnit,ContractedCost,"
    "ContractedUnitPrice,EffectiveCost,InvoiceIssuerName,ListCost,ListUnitPrice,PricingCategory,PricingQuantity,"
    "PricingUnit,ProviderName,PublisherName,RegionId,RegionName,ResourceId,ResourceName,ResourceType,"
    "ServiceCategory,ServiceName,SkuId,SkuPriceId,SubAccountId,SubAccountName,SubAccountType,Tags,x_AccountId,"
    "x_AccountName,x_AccountOwnerId,x_BilledCostInUsd,x_BilledUnitPrice,x_BillingAccountId,x_BillingAccountName,"
    "x_BillingExchangeRate,x_BillingExchangeRateDate,x_BillingProfileId,x_BillingProfileName,x_ChargeId,"
    "x_ContractedCostInUsd,x_CostAllocationRuleName,x_CostCenter,x_CustomerId,x_CustomerName,x_EffectiveCostInUsd,"
    "x_EffectiveUnitPrice,x_InvoiceId,x_InvoiceIssuerId,x_InvoiceSectionId,x_InvoiceSectionName,x_ListCostInUsd,"
    "x_PartnerCreditApplied,x_PartnerCreditRate,x_PricingBlockSize,x_PricingCurrency,x_PricingSubcategory,"
    "x_PricingUnitDescription,x_PublisherCategory,x_PublisherId,x_ResellerId,x_ResellerName,x_ResourceGroupName,"
    "x_ResourceType,x_ServicePeriodEnd,x_ServicePeriodStart,x_SkuDescription,x_SkuDetails,x_SkuIsCreditEligible,"
    "x_SkuMeterCategory,x_SkuMeterId,x_SkuMeterName,x_SkuMeterSubcategory,x_SkuOfferId,x_SkuOrderId,"
    "x_SkuOrderName,x_SkuPartNumber,x_SkuRegion,x_SkuServiceFamily,x_SkuTerm,x_SkuTier"
).split(",")
FOCUS_1_2_EXTRA = ("CapacityReservationId,CapacityReservationStatus,CommitmentDiscountQuantity,CommitmentDiscountUnit,"
                   "InvoiceId,PricingCurrency,PricingCurrencyContractedUnitPrice,PricingCurrencyEffectiveCost,"
                   "PricingCurrencyListUnitPrice,ServiceSubcategory").split(",")
EA = (
    "InvoiceSectionName,AccountName,AccountOwnerId,SubscriptionId,SubscriptionName,ResourceGroup,ResourceLocation,"
    "Date,ProductName,MeterCategory,MeterSubCategory,MeterId,MeterName,MeterRegion,UnitOfMeasure,Quantity,"
    "EffectivePrice,CostInBillingCurrency,CostCenter,ConsumedService,ResourceId,Tags,OfferId,AdditionalInfo,"
    "ServiceInfo1,ServiceInfo2,ResourceName,ReservationId,ReservationName,UnitPrice,ProductOrderId,ProductOrderName,"
    "Term,PublisherType,PublisherName,ChargeType,Frequency,PricingModel,AvailabilityZone,BillingAccountId,"
    "BillingAccountName,BillingCurrencyCode,BillingPeriodStartDate,BillingPeriodEndDate,BillingProfileId,"
    "BillingProfileName,InvoiceSectionId,IsAzureCreditEligible,PartNumber,PayGPrice,PlanName,ServiceFamily,"
    "CostAllocationRuleName,benefitId,benefitName"
).split(",")
MCA = (
    "invoiceId,previousInvoiceId,billingAccountId,billingAccountName,billingProfileId,billingProfileName,"
    "invoiceSectionId,invoiceSectionName,partnerName,resellerName,resellerMpnId,costCenter,billingPeriodEndDate,"
    "billingPeriodStartDate,servicePeriodEndDate,servicePeriodStartDate,date,serviceFamily,productOrderId,"
    "productOrderName,consumedService,meterId,meterName,meterCategory,meterSubCategory,meterRegion,ProductId,"
    "ProductName,SubscriptionId,subscriptionName,publisherType,publisherId,publisherName,resourceGroupName,"
    "ResourceId,resourceLocation,location,effectivePrice,quantity,unitOfMeasure,chargeType,billingCurrency,"
    "pricingCurrency,costInBillingCurrency,costInPricingCurrency,costInUsd,paygCostInBillingCurrency,paygCostInUsd,"
    "exchangeRatePricingToBilling,exchangeRateDate,isAzureCreditEligible,serviceInfo1,serviceInfo2,additionalInfo,"
    "tags,PayGPrice,frequency,term,reservationId,reservationName,pricingModel,unitPrice,benefitId,benefitName,"
    "provider,costAllocationRuleName"
).split(",")


@dataclass(frozen=True)
class Charge:
    """One line of the bill: a meter's usage on a day."""

    day: str  # YYYY-MM-DD
    meter: str
    quantity: str  # in units of ``unit``
    unit: str
    cost: str
    category: str = "Foundry Models"
    subcategory: str = "Azure OpenAI"
    resource: str = RESOURCE
    charge: str = "Usage"
    consumed_unit: str | None = None  # ConsumedUnit of a meter not billed in tokens or hours ("Calls")


def _focus_row(c: Charge, version: str) -> dict[str, str]:
    seconds = ":00" if version != "1.0" else ""
    end_day = (date.fromisoformat(c.day) + timedelta(days=1)).isoformat()
    block = {"1M Tokens": "1000000", "1K Tokens": "1000", "1 Hour": "1", "1M": "1000000", "1K": "1000"}.get(c.unit, "1")
    if c.consumed_unit is None and c.unit in ("1M", "1K"):
        block = "1"  # a storage-style "10K" or "1M" block without a consumed unit: as before
    consumed = str(Decimal(c.quantity) * Decimal(block))
    name = c.resource.rsplit("/", 1)[-1]
    return {
        "BilledCost": c.cost, "BillingAccountId": "/providers/Microsoft.Billing/billingAccounts/8611537", "BillingAccountName": "Contoso",
        "BillingAccountType": "Billing Profile", "BillingCurrency": "USD",
        "BillingPeriodEnd": f"2026-11-01T00:00{seconds}Z", "BillingPeriodStart": f"2026-10-01T00:00{seconds}Z",
        "ChargeCategory": c.charge, "ChargeClass": "", "ChargeDescription": c.meter, "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": f"{end_day}T00:00{seconds}Z", "ChargePeriodStart": f"{c.day}T00:00{seconds}Z",
        "ConsumedQuantity": consumed,
        "ConsumedUnit": c.consumed_unit or ("Tokens" if "Token" in c.unit else "Hours"),
        "ContractedCost": c.cost, "EffectiveCost": c.cost, "InvoiceIssuerName": "Microsoft", "ListCost": c.cost,
        "PricingCategory": "Standard", "PricingQuantity": c.quantity, "PricingUnit": c.consumed_unit or ("Tokens" if "Token" in c.unit else "Hours"),
        "ProviderName": "Microsoft", "PublisherName": "Microsoft", "RegionId": "", "RegionName": "",
        "ResourceId": c.resource, "ResourceName": name, "ResourceType": "Azure OpenAI" if "Cognitive" in c.resource else "Storage account",
        "ServiceCategory": "AI and Machine Learning" if "Cognitive" in c.resource else "Storage",
        "ServiceName": "Azure OpenAI Service" if "Cognitive" in c.resource else "Storage Accounts",
        "SubAccountId": f"/subscriptions/{SUBSCRIPTION}", "SubAccountName": "contoso-ai-prod",
        "Tags": '{"env":"prod","owner":"platform \\"AI\\" team"}', "x_PricingBlockSize": block, "x_PricingCurrency": "USD",
        "x_PricingUnitDescription": c.unit, "x_ResourceGroupName": "rg-ai-prod", "x_SkuDescription": c.meter,
        "x_SkuMeterCategory": c.category, "x_SkuMeterId": "3f1a2b4c-0000-4000-8000-00000000aa01", "x_SkuMeterName": c.meter,
        "x_SkuMeterSubcategory": c.subcategory, "x_SkuRegion": "", "x_SkuServiceFamily": "AI + Machine Learning",
    }


def _cost_details_row(c: Charge, columns: Sequence[str]) -> dict[str, str]:
    us_date = f"{c.day[5:7]}/{c.day[8:10]}/{c.day[:4]}"
    unit = {"1M Tokens": "1M", "1K Tokens": "1K"}.get(c.unit, c.unit)
    values = {
        "date": us_date, "metername": c.meter, "metercategory": "Cognitive Services" if c.category == "Foundry Models" else c.category,
        "metersubcategory": c.subcategory, "productname": f"{c.subcategory} - {c.meter}".strip(" -"),
        "unitofmeasure": unit, "quantity": c.quantity, "costinbillingcurrency": c.cost, "billingcurrencycode": "USD",
        "billingcurrency": "USD", "pricingcurrency": "USD", "resourceid": c.resource, "chargetype": c.charge,
        "subscriptionid": SUBSCRIPTION, "subscriptionname": "contoso-ai-prod", "resourcegroup": "rg-ai-prod",
        "resourcegroupname": "rg-ai-prod", "resourcelocation": "swedencentral", "consumedservice": "Microsoft.CognitiveServices",
        "tags": '"env": "prod","owner": "platform ""AI"" team"', "billingperiodstartdate": "10/01/2026",
        "billingperiodenddate": "10/31/2026", "pricingmodel": "OnDemand", "frequency": "UsageBased",
        "additionalinfo": '{"DeploymentName":"gpt-4o"}',
    }
    return {name: values.get(name.lower(), "") for name in columns}


def focus_csv(charges: Sequence[Charge], version: str = "1.0r2") -> bytes:
    """A FOCUS export as CSV: UTF-8 with BOM, every field quoted, CRLF line ends (as Azure writes)."""
    columns = FOCUS_1_0 + (FOCUS_1_2_EXTRA if version == "1.2-preview" else [])
    return _csv(columns, [_focus_row(c, version) for c in charges])


def cost_details_csv(charges: Sequence[Charge], schema: str = "ea") -> bytes:
    columns = EA if schema == "ea" else MCA
    return _csv(columns, [_cost_details_row(c, columns) for c in charges])


def _csv(columns: Sequence[str], rows: Sequence[dict[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(name, "") for name in columns])
    return "\ufeff".encode() + buffer.getvalue().encode("utf-8")


def focus_parquet(charges: Sequence[Charge]) -> bytes:
    """A FOCUS export as Parquet: costs and quantities as decimals, dates as UTC timestamps."""
    from datetime import datetime, timezone

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_focus_row(c, "1.0r2") for c in charges]
    decimals = {"BilledCost", "EffectiveCost", "ContractedCost", "ListCost", "PricingQuantity", "ConsumedQuantity"}
    times = {"ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingPeriodEnd"}
    arrays = {}
    for name in FOCUS_1_0:
        values = [row.get(name, "") for row in rows]
        if name in decimals:
            arrays[name] = pa.array([Decimal(v) for v in values], type=pa.decimal128(28, 12))
        elif name in times:
            arrays[name] = pa.array([datetime.fromisoformat(v.replace("Z", "+00:00")).astimezone(timezone.utc)
                                     for v in values], type=pa.timestamp("us", tz="UTC"))
        else:
            arrays[name] = pa.array([v or None for v in values], type=pa.string())
    buffer = io.BytesIO()
    pq.write_table(pa.table(arrays), buffer)
    return buffer.getvalue()


# The columns of the FinOps Foundation's public FOCUS 1.0 sample data (github.com/FinOps-Open-Cost-and-
# Usage-Spec/FOCUS-Sample-Data, FOCUS-1.0/focus_sample.csv, commit adbdd17a1329): FOCUS columns only,
# no Microsoft x_ extension, in the file's order.
FOCUS_SAMPLE_1_0 = (
    "AvailabilityZone,BilledCost,BillingAccountId,BillingAccountName,BillingCurrency,BillingPeriodEnd,"
    "BillingPeriodStart,ChargeCategory,ChargeClass,ChargeDescription,ChargeFrequency,ChargePeriodEnd,"
    "ChargePeriodStart,CommitmentDiscountCategory,CommitmentDiscountId,CommitmentDiscountName,"
    "CommitmentDiscountStatus,CommitmentDiscountType,ConsumedQuantity,ConsumedUnit,ContractedCost,"
    "ContractedUnitPrice,EffectiveCost,InvoiceIssuerName,ListCost,ListUnitPrice,PricingCategory,PricingQuantity,"
    "PricingUnit,ProviderName,PublisherName,RegionId,RegionName,ResourceId,ResourceName,ResourceType,"
    "ServiceCategory,Id,ServiceName,SkuId,SkuPriceId,SubAccountId,SubAccountName,Tags"
).split(",")
# FOCUS 1.2 adds, among others, SkuMeter and SkuPriceDetails (a JSON object of the SKU's properties).
FOCUS_1_2_COLUMNS = FOCUS_SAMPLE_1_0 + ["SkuMeter", "SkuPriceDetails", "ServiceSubcategory", "PricingCurrency"]


def focus_csv_without_extensions(charges: Sequence[Charge], columns: Sequence[str] = FOCUS_SAMPLE_1_0,
                                 description: str = "{meter}") -> bytes:
    """A FOCUS file as a FinOps tool that normalises several clouds writes it, in the shape of the
    Foundation's sample: no x_ columns, no BOM, header quoted, values quoted only when needed, NULL
    (unquoted) for no value, times ``YYYY-MM-DD HH:MM:SS`` without a zone. ``description`` formats
    ChargeDescription (``{meter}``, ``{product}``); SkuId is Azure's product id, not a meter name."""
    buffer = io.StringIO()
    buffer.write(",".join(f'"{name}"' for name in columns) + "\n")
    writer = csv.writer(buffer, lineterminator="\n")
    for c in charges:
        row = _focus_row(c, "1.0")
        end_day = (date.fromisoformat(c.day) + timedelta(days=1)).isoformat()
        row.update({
            "ChargePeriodStart": f"{c.day} 00:00:00", "ChargePeriodEnd": f"{end_day} 00:00:00",
            "BillingPeriodStart": "2026-10-01 00:00:00", "BillingPeriodEnd": "2026-11-01 00:00:00",
            "ChargeDescription": description.format(meter=c.meter, product=c.subcategory),
            "SkuId": "DZH318Z0BQ4L", "SkuPriceId": "DZH318Z0BQ4L/00JJ", "Id": f"{c.day}-{c.meter}",
            "SkuMeter": "Tokens" if "Token" in c.unit else "Hours",
            "SkuPriceDetails": '{"CoreCount":null}' if "Token" in c.unit else "NULL",
        })
        writer.writerow([row.get(name) or "NULL" for name in columns])
    return buffer.getvalue().encode("utf-8")
