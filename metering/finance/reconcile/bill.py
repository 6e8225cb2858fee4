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
into model, token kind and deployment type (and ``parse_unit_meter`` reads the meters of units
beyond tokens: whisper hours, speech characters, tool calls, code interpreter sessions, and the
fixed costs: fine-tune hosting and training, vector storage); a meter it cannot read is kept with its name
(``token_kind`` NULL), never dropped. Lines of one file with the same day, resource and meter are
summed into one bill line: that is the key that makes re-imports replace instead of double.

Every file is read bounded and streamed (``BillLimits``): gzip is inflated once without keeping
anything to measure it (refused beyond ``max_bytes`` or an expansion beyond ``max_ratio``: a
decompression bomb costs a fraction of a second, never the memory it claims), CSV is read line by
line (a line longer than ``MAX_LINE`` is refused), and Parquet is checked against its footer's
declared rows and uncompressed sizes before any data is read, then read batch by batch. Amounts and quantities must fit the ``bill_lines`` columns (``db.bounds``); a usage
line with a negative cost or quantity, and a row that repeats an earlier row exactly, are refused
with their line numbers unless the import allows them (``allow_negative``, ``allow_duplicates``),
and then counted in ``BillImport`` for the summary.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import IO, Any

from db.bounds import decimal_limit, integer_range
from db.schema import bill_lines
from metering.price.metered_kinds import UNIT_KIND_OF_FIELD
from metering.price.meters import CAPACITY, FIXED_KINDS, NO_RESOURCE, Backend, BillLine, coverage, unit_quantity
from metering.price.retail_prices import ACCEPTED_SERVICES, OPENAI_PRODUCT_PREFIX, parse_meter, parse_unit_meter

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
    negative_lines: list[tuple[str, Decimal, str]] = field(default_factory=list)  # (where, cost, currency), allowed
    duplicate_rows: list[tuple[str, int, Decimal]] = field(default_factory=list)  # (where, first seen, cost), allowed

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
    # FOCUS columns every generator writes (no Microsoft ``x_`` extension): where a file without
    # ``x_SkuMeterName`` names its meter (``focus_meter_name``).
    "sku_price_details": ("skupricedetails",),
    "charge_description": ("chargedescription",),
    "sku_id": ("skuid",),
    "sku_meter": ("skumeter",),
}
# Where a FOCUS file without x_SkuMeterName names the meter, in the order tried.
FOCUS_METER_SOURCES = ("sku_price_details", "charge_description", "sku_id", "sku_meter", "service")
# A FOCUS value that means "no value": the FinOps Foundation's sample data writes NULL unquoted.
FOCUS_NULL = "NULL"
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


def _meter_candidates(fields: Mapping[str, Any]) -> Iterable[str]:
    """The texts of a FOCUS row that may name its meter, most specific first: string values of
    ``SkuPriceDetails`` (a JSON object in FOCUS 1.2) whose key names a meter, ``ChargeDescription``
    whole and then each `` - ``-separated part from the right (``Azure OpenAI - gpt-4o-0806-Inp-glbl``),
    ``SkuId``, ``SkuMeter``, ``ServiceName``."""
    for source in FOCUS_METER_SOURCES:
        text = str(fields.get(source) or "").strip()
        if not text or text == FOCUS_NULL:
            continue
        if source == "sku_price_details":
            if text.startswith("{") and len(text) <= 4000:
                try:
                    details = json.loads(text)
                except ValueError:
                    continue
                if isinstance(details, dict):
                    yield from (value.strip() for key, value in details.items()
                                if isinstance(value, str) and "meter" in str(key).lower() and value.strip())
            continue
        yield text
        if source == "charge_description" and " - " in text:
            yield from (part.strip() for part in reversed(text.split(" - ")) if part.strip())


def focus_meter_name(fields: Mapping[str, Any]) -> str:
    """The meter of a FOCUS row without ``x_SkuMeterName`` (written by FinOps tools that normalise
    several clouds): the first candidate (``_meter_candidates``) the meter parser reads as a
    token, capacity or unit meter; else, kept by name as an unknown meter, its ``ChargeDescription``,
    ``SkuId``, ``SkuMeter`` or ``ServiceName`` — never a refusal of the file."""
    product = str(fields.get("product") or fields.get("meter_subcategory") or "") or "Azure OpenAI"
    first = None
    for candidate in _meter_candidates(fields):
        candidate = candidate[:400]
        first = first or candidate
        if known_meter(candidate, product):
            return candidate
    return first or "(no meter name)"


def known_meter(meter: str, product: str = "Azure OpenAI") -> bool:
    """Whether the meter parsers read a name as one of the meters reconciliation compares."""
    return parse_unit_meter(meter) is not None or not isinstance(parse_meter(meter, product), str)


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


MIB = 1 << 20
MAX_LINE = 1 * MIB  # one CSV line (a cost export's longest, with tags and additional info, is a few KB)
_CHUNK = 1 << 16
# Before judging a gzip file's expansion: the first bytes of any file may compress far better.
_RATIO_AFTER = 16 * MIB


@dataclass(frozen=True)
class BillLimits:
    """How much one export may make us read (``metering bill import --max-bytes/--max-rows/--max-ratio``,
    or ``METERING_BILL_MAX_BYTES`` / ``_MAX_ROWS`` / ``_MAX_RATIO``). ``max_bytes``: the CSV text
    (after gzip) or the declared uncompressed size of a Parquet file; ``max_rows``: rows
    read (Parquet: declared in its footer); ``max_ratio``: how many times a gzip file may expand
    (the sample FOCUS export compresses 30 times, an export of one row repeated 170, a crafted bomb
    up to a thousand; 0: no check); a Parquet row group
    may declare at most ``max_bytes // 4`` (it is held in memory while its batches are read)."""

    max_bytes: int = 1024 * MIB
    max_rows: int = 10_000_000
    max_ratio: int = 100

    @property
    def max_row_group_bytes(self) -> int:
        return max(self.max_bytes // 4, 1)


Rows = Iterable[tuple[int, Mapping[str, Any]]]


def _stream(data: bytes | IO[bytes]) -> IO[bytes]:
    return io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data


def _size(stream: IO[bytes]) -> int:
    here = stream.tell()
    size = stream.seek(0, io.SEEK_END)
    stream.seek(here)
    return size


def _measure_gzip(source: str, stream: IO[bytes], limits: BillLimits) -> None:
    """Inflate the whole gzip file once, keeping nothing, so that a bomb is refused before a single
    row is parsed: beyond ``max_bytes`` of text, or an expansion beyond ``max_ratio``."""
    inflater = zlib.decompressobj(wbits=47)
    inflated = consumed = 0
    pending = b""
    while True:
        piece = pending or stream.read(_CHUNK)
        pending = b""
        if not piece:
            break
        consumed += len(piece)
        if inflater.eof:  # another member after a finished one
            inflater = zlib.decompressobj(wbits=47)
        while piece:
            try:
                out = inflater.decompress(piece, _CHUNK * 16)
            except zlib.error as exc:
                raise BillError(f"{source}: not a readable gzip file ({exc})") from None
            inflated += len(out)
            if inflated > limits.max_bytes:
                raise BillError(f"{source}: more than {limits.max_bytes:,} bytes once decompressed; refused "
                                "(raise --max-bytes if this export is genuine)")
            if limits.max_ratio and inflated > _RATIO_AFTER and inflated > limits.max_ratio * consumed:
                raise BillError(f"{source}: expands more than {limits.max_ratio} times when decompressed "
                                f"({consumed:,} bytes → over {inflated:,}): a decompression bomb, not a cost "
                                "export; refused (--max-ratio 0 turns this check off)")
            piece = inflater.unconsumed_tail
            if inflater.eof:  # gzip files may hold several members one after another
                rest = inflater.unused_data + piece
                consumed -= len(rest)
                pending, piece = rest, b""
    if not inflater.eof and (inflated or consumed):
        raise BillError(f"{source}: not a readable gzip file (it ends early: truncated?)")


def _lines(source: str, text: IO[str]) -> Iterable[str]:
    """The lines of a CSV text stream, none longer than ``MAX_LINE``."""
    while True:
        try:
            line = text.readline(MAX_LINE)
        except UnicodeDecodeError:
            raise BillError(f"{source}: not UTF-8 text, gzip or Parquet") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise BillError(f"{source}: not a readable gzip file ({exc})") from None
        if not line:
            return
        if len(line) >= MAX_LINE and not line.endswith("\n"):
            raise BillError(f"{source}: a line longer than {MAX_LINE:,} characters: not a cost export")
        yield line


def _csv_rows(source: str, stream: IO[bytes], limits: BillLimits) -> tuple[list[str], Rows]:
    import gzip

    head = stream.read(2)
    stream.seek(0)
    if head == b"\x1f\x8b":
        _measure_gzip(source, stream, limits)
        stream.seek(0)
        binary: IO[bytes] = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
    else:
        if _size(stream) > limits.max_bytes:
            raise BillError(f"{source}: larger than {limits.max_bytes:,} bytes; refused "
                            "(raise --max-bytes if this export is genuine)")
        binary = stream
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")  # type: ignore[arg-type]
    reader = csv.reader(_lines(source, text))
    try:
        header = next(reader)
    except StopIteration:
        raise BillError(f"{source}: empty file") from None
    except csv.Error as exc:
        raise BillError(f"{source}: line 1: not CSV ({exc})") from None

    def rows() -> Rows:
        read = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise BillError(f"{source}: line {reader.line_num}: not CSV ({exc})") from None
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise BillError(f"{source}: line {reader.line_num}: expected {len(header)} fields, got {len(row)}")
            read += 1
            if read > limits.max_rows:
                raise BillError(f"{source}: more than {limits.max_rows:,} rows; refused (raise --max-rows if this "
                                "export is genuine)")
            yield reader.line_num, dict(zip(header, row))
    return header, rows()


def _parquet_rows(source: str, stream: IO[bytes], limits: BillLimits) -> tuple[list[str], Rows]:
    """Parquet by its footer first: the declared rows and uncompressed sizes are checked against
    ``limits`` before any data is read; then batch by batch (every column: a repeated row is one
    equal in all of them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(stream)
        meta = parquet.metadata
        columns = list(parquet.schema_arrow.names)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BillError(f"{source}: not a readable Parquet file ({_first_line(exc)})") from None
    if meta.num_rows > limits.max_rows or meta.num_rows < 0:
        raise BillError(f"{source}: declares {meta.num_rows:,} rows, more than {limits.max_rows:,}; refused "
                        "(raise --max-rows if this export is genuine)")
    declared = 0
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        size = 0
        for column in range(row_group.num_columns):
            chunk = row_group.column(column)
            size += max(chunk.total_uncompressed_size, 0)
        if size > limits.max_row_group_bytes:
            raise BillError(f"{source}: row group {group} declares {size:,} bytes uncompressed, more than "
                            f"{limits.max_row_group_bytes:,}; refused (raise --max-bytes if this export is genuine)")
        declared += size
    if declared > limits.max_bytes:
        raise BillError(f"{source}: declares {declared:,} bytes uncompressed, more than {limits.max_bytes:,}; "
                        "refused (raise --max-bytes if this export is genuine)")

    def rows() -> Rows:
        number = 0
        try:
            for batch in parquet.iter_batches(batch_size=2048, use_threads=False):
                for row in batch.to_pylist():
                    number += 1
                    if number > meta.num_rows:
                        raise BillError(f"{source}: more rows than its footer declares; refused")
                    yield number, row
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise BillError(f"{source}: not a readable Parquet file ({_first_line(exc)})") from None
    return columns, rows()


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split("\n")[0].split())
    return text[:200] or type(exc).__name__


def _row_digest(row: Mapping[str, Any]) -> bytes:
    """A digest of every value of a row, to find rows an export repeats exactly."""
    digest = hashlib.blake2b(digest_size=16)
    for value in row.values():
        digest.update(repr(value).encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return digest.digest()


_COST_BOUND = decimal_limit(bill_lines.c.cost)
_QUANTITY_BOUND = decimal_limit(bill_lines.c.quantity)
_TOKENS_BOUND = integer_range(bill_lines.c.tokens)


def _out_of_range(name: str, value: Decimal, bound: Decimal | None) -> str | None:
    if bound is not None and not abs(value) < bound:
        return f"{name} {value} is out of range (|{name}| must be below {bound:.0E})"
    return None


def parse_bill_export(source: str, data: bytes | IO[bytes], limits: BillLimits = BillLimits(), *,
                      allow_negative: bool = False, allow_duplicates: bool = False) -> BillImport:
    """One Cost Management export (FOCUS or cost details; CSV, CSV.gz or Parquet; bytes or a seekable
    binary file) → its Azure OpenAI bill lines, summed per day × resource × meter. Raises
    ``BillError`` listing every bad row, or naming the limit a file exceeds."""
    stream = _stream(data)
    parquet = stream.read(4) == b"PAR1"
    stream.seek(0)
    if parquet:
        header, rows = _parquet_rows(source, stream, limits)
    else:
        header, rows = _csv_rows(source, stream, limits)
    by_lower = {name.strip().lstrip("\ufeff").lower(): name for name in header}
    if "chargeperiodstart" in by_lower and "billedcost" in by_lower:
        fmt, spec = "focus", FOCUS_COLUMNS
    elif "metername" in by_lower and ("date" in by_lower or "usagedatetime" in by_lower):
        fmt, spec = "cost-details", COST_DETAILS_COLUMNS
    else:
        raise BillError(f"{source}: not an Azure Cost Management export (expected a FOCUS file with "
                        "ChargePeriodStart and BilledCost, or cost details with Date and MeterName)")
    columns = {key: next((by_lower[name] for name in names if name in by_lower), None) for key, names in spec.items()}
    # A FOCUS file without Microsoft's x_ columns names its meter in the FOCUS columns instead.
    meter_from_focus = fmt == "focus" and columns["meter_name"] is None and any(
        columns[key] is not None for key in FOCUS_METER_SOURCES)
    missing = [key for key in REQUIRED if columns[key] is None and not (key == "meter_name" and meter_from_focus)]
    if missing:
        raise BillError(f"{source}: the export has no column for {', '.join(missing)} "
                        f"(expected one of: {'; '.join('/'.join(spec[key]) for key in missing)})")
    result = BillImport(source, fmt)
    sums: dict[tuple[date, str, str], list[Any]] = {}
    errors: list[str] = []
    error_count = 0
    currencies: set[str] = set()
    seen: dict[bytes, int] = {}
    unit_word = "row" if parquet else "line"

    def problem(text: str) -> None:
        nonlocal error_count
        error_count += 1
        if len(errors) < 50:
            errors.append(text)

    for number, row in rows:
        result.rows_read += 1
        fields = {key: ("" if column is None or row.get(column) is None else row[column])
                  for key, column in columns.items()}
        if fmt == "focus":
            fields = {key: "" if value == FOCUS_NULL else value for key, value in fields.items()}
            if meter_from_focus:
                fields["meter_name"] = focus_meter_name(fields)
        text = {key: value if isinstance(value, (datetime, date)) else str(value).strip() for key, value in fields.items()}
        if not is_openai_line(text):
            result.other_services += 1
            continue
        charge = str(text.get("charge") or "usage").lower()
        if charge not in ("usage", ""):
            result.not_usage += 1
            continue
        where = f"{source}: {unit_word} {number}"
        day = _day(fields["day"])
        cost = _decimal(fields["cost"])
        quantity = _decimal(fields["quantity"])
        currency = str(text["currency"]).upper()
        problems = []
        if day is None:
            problems.append(f"date {fields['day']!r:.80} is not a date")
        if cost is None:
            problems.append(f"cost {fields['cost']!r:.80} is not a number")
        elif (why := _out_of_range("cost", cost, _COST_BOUND)) is not None:
            problems.append(why)
        if quantity is None:
            problems.append(f"quantity {fields['quantity']!r:.80} is not a number")
        elif (why := _out_of_range("quantity", quantity, _QUANTITY_BOUND)) is not None:
            problems.append(why)
        if not re.fullmatch(r"[A-Z]{3}", currency):
            problems.append(f"currency {text['currency']!r:.20} is not a three-letter code")
        for name, limit in (("resource_id", 400), ("meter_name", 400), ("meter_category", 200),
                            ("meter_subcategory", 200), ("unit", 100)):
            value = str(text.get(name) or "")
            if len(value) > limit:
                problems.append(f"{name} is longer than {limit} characters")
            elif "\x00" in value:
                problems.append(f"{name} contains a NUL character")
        if not problems and (cost < 0 or quantity < 0):  # type: ignore[operator]
            if allow_negative:
                result.negative_lines.append((where, cost, currency))  # type: ignore[arg-type]
            else:
                problems.append(f"a usage line with a negative {'cost' if cost < 0 else 'quantity'} "  # type: ignore[operator]
                                f"({cost} {currency}, quantity {quantity}): usage is never negative (a refund "
                                "or correction is a credit or adjustment charge); --allow-negative imports it")
        if not problems:
            digest = _row_digest(row)
            first = seen.get(digest)
            if first is None:
                seen[digest] = number
            elif allow_duplicates:
                result.duplicate_rows.append((where, first, cost))  # type: ignore[arg-type]
            else:
                problems.append(f"repeats {unit_word} {first} exactly (every column): a row listed twice would be "
                                "billed twice; --allow-duplicates imports it")
        if problems:
            problem(f"{where}: " + "; ".join(problems))
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
            consumed_unit = str(text.get("consumed_unit") or "")
            if consumed is not None and (unit_block(consumed_unit) or consumed_unit and parse_unit_meter(
                    str(text["meter_name"] or "")) is not None):  # "Calls", "Characters", "Session" of a unit meter
                if (why := _out_of_range("consumed quantity", consumed, _QUANTITY_BOUND)) is not None:
                    problem(f"{where}: {why}")
                    continue
                quantity, unit = consumed, str(text["consumed_unit"])
            elif block and text.get("pricing_unit") and abs(block) < _QUANTITY_BOUND:  # type: ignore[operator]
                unit = f"{block.normalize():f} {text['pricing_unit']}"
            else:
                unit = str(text.get("pricing_unit") or "") or None
        key = (day, resource, meter)
        entry = sums.get(key)
        if entry is None:
            sums[key] = [quantity, cost, unit, currency, text, where]
        else:
            entry[0] += quantity
            entry[1] += cost
            if entry[3] != currency:
                problem(f"{where}: {meter} on {day} is billed in {entry[3]} and {currency}")
        result.rows_kept += 1
    if len(currencies) > 1:
        problem(f"{source}: more than one billing currency ({', '.join(sorted(currencies))}); "
                "export one billing profile per file")
    for (day, resource, meter), (quantity, cost, unit, currency, text, where) in sums.items():
        block = unit_block(unit)
        tokens = quantity * block[0] if block is not None and block[1] == "tokens" else Decimal(0)
        for why in (_out_of_range("cost", cost, _COST_BOUND), _out_of_range("quantity", quantity, _QUANTITY_BOUND),
                    _out_of_range("tokens", tokens, Decimal(_TOKENS_BOUND) if _TOKENS_BOUND else None)):
            if why is not None:
                problem(f"{source}: {meter} on {day}: the lines summed: {why}")
    if errors:
        more = error_count - len(errors)
        raise BillError("\n".join(errors) + (f"\n… and {more} more" if more > 0 else ""))
    for (day, resource, meter), (quantity, cost, unit, currency, text, _) in sorted(sums.items()):
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
    unit_meter = parse_unit_meter(meter)
    if unit_meter is not None and unit_meter.kind in FIXED_KINDS:
        kind, deployment_type = unit_meter.kind, unit_meter.deployment_type  # a fixed cost (hours, GB-days)
    elif unit_meter is not None:
        kind = UNIT_KIND_OF_FIELD[unit_meter.kind]
        model, deployment_type = unit_meter.model, unit_meter.deployment_type
        tokens = unit_quantity(kind, quantity, unit)
        if tokens is None:
            kind = model = deployment_type = None
            result.unknown_meters[meter] = f"unit of measure {unit!r} is not one this meter is billed in"
    elif block is not None and block[1] == "hours":
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
