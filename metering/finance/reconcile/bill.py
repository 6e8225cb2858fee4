"""The Azure bill as data (pure: bytes in, values out, no I/O): the backends CSV that ties an APIM
backend to its Azure OpenAI resource, and Azure Cost Management exports read into bill lines.

Exports read (column names from Microsoft Learn, "Cost Management dataset schema":
``cost-usage-details-focus`` for the FOCUS cost and usage file 1.0, 1.0r2 and 1.2-preview, and
``cost-usage-details-ea`` / ``cost-usage-details-mca`` for the actual and amortized cost details):

* **FOCUS** — ``ChargePeriodStart``, ``ResourceId``, ``ServiceName``, ``ChargeCategory``,
  ``BilledCost``, ``PricingQuantity`` (in blocks of ``x_PricingUnitDescription``, e.g. ``1M Tokens``),
  ``ConsumedQuantity``/``ConsumedUnit``, ``x_SkuMeterName``, ``x_SkuMeterCategory``,
  ``x_SkuMeterSubcategory``, ``BillingCurrency``. 1.0r2 only adds seconds to the dates.
* **Cost details** (EA and MCA, actual or amortized) — ``Date``, ``MeterCategory``,
  ``MeterSubCategory``, ``MeterName``, ``ProductName``, ``Quantity``, ``UnitOfMeasure``,
  ``CostInBillingCurrency`` (or ``Cost`` in older EA files), ``BillingCurrency`` /
  ``BillingCurrencyCode`` / ``Currency``, ``ResourceId``, ``ChargeType``. MCA spells them in
  camelCase: columns are matched case-insensitively.

Files are CSV (UTF-8 with or without BOM, every field quoted as Azure writes them), gzip-compressed
CSV or Parquet, told apart by content. Only Azure OpenAI / Foundry model usage lines are kept; each
meter name is read with the Retail Prices meter parser (``metering.price.retail_prices.parse_meter``)
into model, token kind and deployment type; a meter it cannot read is kept with its name
(``token_kind`` NULL), never dropped. Lines of one file with the same day, resource and meter are
summed into one bill line: that is the key that makes re-imports replace instead of double.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from metering.price.meters import CAPACITY, NO_RESOURCE, Backend, BillLine, coverage
from metering.price.retail_prices import ACCEPTED_SERVICES, OPENAI_PRODUCT_PREFIX, parse_meter

BACKENDS_HEADER = ("backend_id", "resource_id", "region", "owner_subscription_id")
# An Azure OpenAI / AI Services account, as Azure spells its ARM id (compared case-insensitively).
ARM_ACCOUNT_ID = re.compile(
    r"^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"/resourcegroups/[^/]+/providers/microsoft\.cognitiveservices/accounts/[^/]+$",
    re.IGNORECASE,
)


class BillError(ValueError):
    """A backends CSV or bill export that cannot be used; the message lists every problem."""


# --------------------------------------------------------------------------- backends


def parse_backends_csv(text: str, source: str = "backends CSV") -> list[Backend]:
    """``backend_id,resource_id,region[,owner_subscription_id]`` (columns in any order; ``region`` and the
    optional owner — the subscription the true-up charges for the resource's bill lines that no metered
    row explains — may be empty). A column not
    in the header list, a bad ARM id or a backend listed twice is bad input, each with its line."""
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()
    if not rows:
        raise BillError(f"{source}: empty file; expected the header {','.join(BACKENDS_HEADER)}")
    header = [cell.strip().lower() for cell in rows[0]]
    unknown = [name for name in header if name not in BACKENDS_HEADER]
    missing = [name for name in BACKENDS_HEADER[:2] if name not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise BillError(f"{source}: line 1: header must be {','.join(BACKENDS_HEADER[:3])} (optionally "
                        f"{BACKENDS_HEADER[3]})"
                        + (f" (unknown column(s): {', '.join(unknown)})" if unknown else "")
                        + (f" (missing: {', '.join(missing)})" if missing else ""))
    errors: list[str] = []
    backends: dict[str, Backend] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            errors.append(f"{source}: line {number}: expected {len(header)} fields, got {len(row)}")
            continue
        values = {name: cell.strip() for name, cell in zip(header, row)}
        backend_id, resource_id = values["backend_id"], values["resource_id"]
        problems = []
        if not backend_id:
            problems.append("backend_id is empty")
        if not ARM_ACCOUNT_ID.match(resource_id):
            problems.append(f"resource_id {resource_id!r} is not an Azure OpenAI account ARM id "
                            "(/subscriptions/GUID/resourceGroups/NAME/providers/Microsoft.CognitiveServices/accounts/NAME)")
        if backend_id in backends:
            problems.append(f"backend {backend_id!r} is listed twice")
        if problems:
            errors.append(f"{source}: line {number}: " + "; ".join(problems))
            continue
        owner = values.get("owner_subscription_id") or None
        if owner is not None and len(owner) > 200:
            errors.append(f"{source}: line {number}: owner_subscription_id is longer than 200 characters")
            continue
        backends[backend_id] = Backend(backend_id, resource_id.lower(), values.get("region") or None, owner)
    if errors:
        raise BillError("\n".join(errors))
    return list(backends.values())


# --------------------------------------------------------------------------- exports


@dataclass
class BillImport:
    """What one export file gave: its lines, and what was read and left out (shown to the user)."""

    source: str
    source_format: str  # focus | cost-details
    lines: list[BillLine] = field(default_factory=list)
    rows_read: int = 0
    rows_kept: int = 0
    other_services: int = 0  # lines of other Azure services (not Azure OpenAI / Foundry models)
    not_usage: int = 0  # purchases, taxes, credits … of Azure OpenAI (not usage)
    unknown_meters: dict[str, str] = field(default_factory=dict)  # meter name → why it is not read

    @property
    def days(self) -> tuple[date, date] | None:
        days = [line.day for line in self.lines]
        return (min(days), max(days)) if days else None


# Logical field → the column names that carry it, first found wins (lower-case).
FOCUS_COLUMNS = {
    "day": ("chargeperiodstart",),
    "resource_id": ("resourceid",),
    "service": ("servicename",),
    "charge": ("chargecategory",),
    "cost": ("billedcost",),
    "quantity": ("pricingquantity",),
    "unit": ("x_pricingunitdescription",),
    "pricing_unit": ("pricingunit",),
    "block_size": ("x_pricingblocksize",),
    "consumed_quantity": ("consumedquantity",),
    "consumed_unit": ("consumedunit",),
    "meter_name": ("x_skumetername",),
    "meter_category": ("x_skumetercategory",),
    "meter_subcategory": ("x_skumetersubcategory",),
    "product": ("x_skudescription",),
    "currency": ("billingcurrency",),
}
COST_DETAILS_COLUMNS = {
    "day": ("date", "usagedatetime"),
    "resource_id": ("resourceid", "instancename"),
    "service": ("consumedservice",),
    "charge": ("chargetype",),
    "cost": ("costinbillingcurrency", "cost", "pretaxcost"),
    "quantity": ("quantity",),
    "unit": ("unitofmeasure",),
    "meter_name": ("metername",),
    "meter_category": ("metercategory",),
    "meter_subcategory": ("metersubcategory",),
    "product": ("productname", "product"),
    "currency": ("billingcurrency", "billingcurrencycode", "currency"),
}
REQUIRED = ("day", "cost", "quantity", "meter_name", "currency")

_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)?\s*([km])?\s*(tokens?|hours?|hrs?)?\s*$", re.IGNORECASE)


def unit_block(unit: str | None) -> tuple[int, str] | None:
    """``1M Tokens`` → (1000000, tokens), ``1K`` → (1000, tokens), ``Tokens`` → (1, tokens),
    ``1 Hour`` / ``100 Hours`` / ``Hours`` → (n, hours); None for any other unit."""
    match = _UNIT.match(unit or "")
    if match is None or not (match.group(1) or match.group(2) or match.group(3)):
        return None
    size = Decimal(match.group(1) or "1") * {"k": 1000, "m": 1_000_000, None: 1}[(match.group(2) or "").lower() or None]
    if size != size.to_integral_value():
        return None
    word = (match.group(3) or "").lower()
    if word.startswith("h"):
        return (int(size), "hours") if not match.group(2) else None
    if not match.group(2) and not word:
        return None  # a bare number is no unit we know
    return int(size), "tokens"


def _day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo is None else value.astimezone(timezone.utc)).date()
    if isinstance(value, date):
        return value
    text = str(value or "").strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (moment if moment.tzinfo is None else moment.astimezone(timezone.utc)).date()
    except ValueError:
        pass
    for pattern in ("%m/%d/%Y", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M:%S %p"):  # cost details: 10/01/2026
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    return None


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = repr(value)  # Parquet doubles: the shortest text that reads back the same
    text = str(value).strip()
    if not text:
        return Decimal(0)
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def is_openai_line(fields: Mapping[str, str]) -> bool:
    """An Azure OpenAI / Foundry models line: meter category Cognitive Services or Foundry Models
    (renamed in 2025) with an ``Azure OpenAI…`` subcategory or product, or any Foundry Models meter;
    a file without meter categories keeps every line of a Cognitive Services account or an AI service
    (a meter that is not a model's then shows as an unknown meter: visible, never silently dropped)."""
    category = (fields.get("meter_category") or "").strip().lower()
    subcategory = (fields.get("meter_subcategory") or "").strip().lower()
    product = (fields.get("product") or "").strip().lower()
    if category == "foundry models":
        return True
    if category in ACCEPTED_SERVICES:
        return subcategory.startswith(OPENAI_PRODUCT_PREFIX) or product.startswith(OPENAI_PRODUCT_PREFIX)
    if not category and not subcategory:  # no meter category: keep what may be Azure OpenAI, never drop it
        service = (fields.get("service") or "").lower()
        resource = str(fields.get("resource_id") or "").lower()
        return any(word in service for word in ("openai", "foundry", "cognitive", "ai services")) \
            or "/providers/microsoft.cognitiveservices/accounts/" in resource
    return False


def _rows_of(source: str, data: bytes) -> tuple[list[str], Iterable[tuple[int, Mapping[str, Any]]]]:
    """The header and the (line number, row) pairs of a CSV, CSV.gz or Parquet export."""
    if data[:4] == b"PAR1":
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        columns = list(table.column_names)
        return columns, ((number, row) for number, row in enumerate(table.to_pylist(), start=1))
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise BillError(f"{source}: not a readable gzip file ({exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BillError(f"{source}: not UTF-8 text, gzip or Parquet") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise BillError(f"{source}: empty file") from None

    def rows() -> Iterable[tuple[int, Mapping[str, Any]]]:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise BillError(f"{source}: line {reader.line_num}: expected {len(header)} fields, got {len(row)}")
            yield reader.line_num, dict(zip(header, row))
    return header, rows()


def parse_bill_export(source: str, data: bytes) -> BillImport:
    """One Cost Management export (FOCUS or cost details; CSV, CSV.gz or Parquet) → its Azure OpenAI
    bill lines, summed per day × resource × meter. Raises ``BillError`` listing every bad row."""
    header, rows = _rows_of(source, data)
    by_lower = {name.strip().lstrip("\ufeff").lower(): name for name in header}
    if "chargeperiodstart" in by_lower and "billedcost" in by_lower:
        fmt, spec = "focus", FOCUS_COLUMNS
    elif "metername" in by_lower and ("date" in by_lower or "usagedatetime" in by_lower):
        fmt, spec = "cost-details", COST_DETAILS_COLUMNS
    else:
        raise BillError(f"{source}: not an Azure Cost Management export (expected a FOCUS file with "
                        "ChargePeriodStart and BilledCost, or cost details with Date and MeterName)")
    columns = {key: next((by_lower[name] for name in names if name in by_lower), None) for key, names in spec.items()}
    missing = [key for key in REQUIRED if columns[key] is None]
    if missing:
        raise BillError(f"{source}: the export has no column for {', '.join(missing)} "
                        f"(expected one of: {'; '.join('/'.join(spec[key]) for key in missing)})")
    result = BillImport(source, fmt)
    sums: dict[tuple[date, str, str], list[Any]] = {}
    errors: list[str] = []
    currencies: set[str] = set()
    for number, row in rows:
        result.rows_read += 1
        fields = {key: ("" if column is None or row.get(column) is None else row[column])
                  for key, column in columns.items()}
        text = {key: value if isinstance(value, (datetime, date)) else str(value).strip() for key, value in fields.items()}
        if not is_openai_line(text):
            result.other_services += 1
            continue
        charge = str(text.get("charge") or "usage").lower()
        if charge not in ("usage", ""):
            result.not_usage += 1
            continue
        where = f"{source}: {'row' if data[:4] == b'PAR1' else 'line'} {number}"
        day = _day(fields["day"])
        cost = _decimal(fields["cost"])
        quantity = _decimal(fields["quantity"])
        currency = str(text["currency"]).upper()
        problems = []
        if day is None:
            problems.append(f"date {fields['day']!r} is not a date")
        if cost is None:
            problems.append(f"cost {fields['cost']!r} is not a number")
        if quantity is None:
            problems.append(f"quantity {fields['quantity']!r} is not a number")
        if not re.fullmatch(r"[A-Z]{3}", currency):
            problems.append(f"currency {text['currency']!r} is not a three-letter code")
        for name, limit in (("resource_id", 400), ("meter_name", 400), ("meter_category", 200),
                            ("meter_subcategory", 200), ("unit", 100)):
            if len(str(text.get(name) or "")) > limit:
                problems.append(f"{name} is longer than {limit} characters")
        if problems:
            errors.append(f"{where}: " + "; ".join(problems))
            continue
        assert day is not None and cost is not None and quantity is not None
        currencies.add(currency)
        resource = str(text["resource_id"] or "").lower() or NO_RESOURCE
        meter = str(text["meter_name"] or "") or "(no meter name)"
        unit = str(text["unit"] or "") or None
        if fmt == "focus" and unit_block(unit) is None:
            # PricingQuantity counts blocks of x_PricingUnitDescription (1M Tokens); without it, the
            # consumed quantity in base units, else the pricing unit with x_PricingBlockSize.
            consumed = _decimal(fields.get("consumed_quantity"))
            block = _decimal(fields.get("block_size"))
            if consumed is not None and unit_block(str(text.get("consumed_unit") or "")):
                quantity, unit = consumed, str(text["consumed_unit"])
            elif block and text.get("pricing_unit"):
                unit = f"{block.normalize():f} {text['pricing_unit']}"
            else:
                unit = str(text.get("pricing_unit") or "") or None
        key = (day, resource, meter)
        entry = sums.get(key)
        if entry is None:
            sums[key] = [quantity, cost, unit, currency, text]
        else:
            entry[0] += quantity
            entry[1] += cost
            if entry[3] != currency:
                errors.append(f"{where}: {meter} on {day} is billed in {entry[3]} and {currency}")
        result.rows_kept += 1
    if len(currencies) > 1:
        errors.append(f"{source}: more than one billing currency ({', '.join(sorted(currencies))}); "
                      "export one billing profile per file")
    if errors:
        raise BillError("\n".join(errors[:50]) + (f"\n… and {len(errors) - 50} more" if len(errors) > 50 else ""))
    for (day, resource, meter), (quantity, cost, unit, currency, text) in sorted(sums.items()):
        result.lines.append(_line(day, resource, meter, quantity, cost, unit, currency, text, fmt, result))
    return result


def _line(day: date, resource: str, meter: str, quantity: Decimal, cost: Decimal, unit: str | None,
          currency: str, text: Mapping[str, Any], fmt: str, result: BillImport) -> BillLine:
    """A summed bill line with what its meter name and unit say."""
    block = unit_block(unit)
    category = str(text.get("meter_category") or "") or None
    subcategory = str(text.get("meter_subcategory") or "") or None
    model = kind = deployment_type = tier = None
    tokens: int | None = None
    if block is not None and block[1] == "hours":
        kind, deployment_type = CAPACITY, "provisioned"
        parsed = parse_meter(meter, subcategory or str(text.get("product") or "") or "Azure OpenAI")
        if not isinstance(parsed, str):
            model = parsed.model
    elif block is not None:
        tokens = int((quantity * block[0]).to_integral_value(rounding=ROUND_HALF_EVEN))
        parsed = parse_meter(meter, subcategory or str(text.get("product") or "") or "Azure OpenAI")
        if isinstance(parsed, str):
            result.unknown_meters[meter] = parsed
        else:
            model, kind, deployment_type, tier = parsed.model, parsed.kind, parsed.deployment_type, parsed.service_tier
    else:
        result.unknown_meters[meter] = f"unit of measure {unit!r} is not tokens (1K, 1M) or hours"
    return BillLine(day, resource, meter, category, subcategory, model, kind, deployment_type, quantity, unit,
                    tokens, cost, currency, fmt, tier)


def merge_imports(imports: Sequence[BillImport]) -> list[BillLine]:
    """The lines of several files of one import, later files replacing earlier ones for the days and
    resources they cover (Azure re-exports month-to-date every day)."""
    merged: dict[tuple[date, str, str], BillLine] = {}
    for item in imports:
        covered = coverage(item.lines)
        merged = {key: line for key, line in merged.items() if (key[1], key[0]) not in covered}
        for line in item.lines:
            merged[(line.day, line.resource_id, line.meter_name)] = line
    return [merged[key] for key in sorted(merged)]
