"""What the Azure bill charges, as typed values: a bill line (day × resource × meter), the APIM
backend that ties a metered row to the resource behind it, and the small rules storage applies to
them (which days an export covers, which service tier a meter bills). Pure; ``finance.reconcile.bill``
reads export files into these values, ``db.bill`` stores and loads them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from metering.price.retail_prices import FIXED_KINDS, parse_meter

CAPACITY = "capacity"  # token_kind of a meter billed by the hour (provisioned throughput, hosting)
# FIXED_KINDS: token_kind of the other meters billed by time or capacity, never per request
# (retail_prices.parse_unit_meter: fine-tune hosting and training, vector storage): fixed costs.
NO_RESOURCE = "(no resource)"


@dataclass(frozen=True)
class Backend:
    """An APIM backend and the Azure OpenAI resource (ARM id, lower-cased) behind it."""

    backend_id: str
    resource_id: str
    region: str | None
    # who pays for a bill line of the resource that no metered row explains (the true-up); None: nobody
    owner_subscription_id: str | None = None


@dataclass(frozen=True)
class BillLine:
    """One day × resource × meter of the bill: the quantity as billed and in tokens, and its cost."""

    day: date
    resource_id: str
    meter_name: str
    meter_category: str | None
    meter_subcategory: str | None
    model: str | None
    token_kind: str | None  # a metered_kinds.KINDS kind, capacity or a FIXED_KINDS kind; None: a meter we cannot read
    deployment_type: str | None
    quantity: Decimal
    unit: str | None
    tokens: int | None  # of a unit meter: its base units (milliseconds of audio, characters, calls, sessions)
    cost: Decimal
    currency: str
    source_format: str
    service_tier: str | None = None  # "priority" for a priority-processing meter; None: the default tier


def meter_service_tier(meter_name: str, subcategory: str | None) -> str | None:
    """The service tier a token meter's name bills (``priority`` for ``pp`` meters), else ``None``.
    Read again from the stored meter name, so lines imported before tiers were read have theirs."""
    parsed = parse_meter(meter_name, subcategory or "Azure OpenAI")
    return None if isinstance(parsed, str) else parsed.service_tier


def coverage(lines: Iterable[BillLine]) -> set[tuple[str, date]]:
    """The (resource, day) pairs an export covers: each resource from its first to its last day in
    the file, so a newer export replaces every meter of those days, including meters it no longer has."""
    spans: dict[str, list[date]] = defaultdict(list)
    for line in lines:
        spans[line.resource_id].append(line.day)
    covered: set[tuple[str, date]] = set()
    for resource, days in spans.items():
        first, last = min(days), max(days)
        current = first
        while current <= last:
            covered.add((resource, current))
            current = date.fromordinal(current.toordinal() + 1)
    return covered


def unit_quantity(kind: str, quantity: Decimal, unit: str | None) -> int | None:
    """A unit meter's billed quantity in the base units reconciliation counts
    (``metered_kinds.UNIT_KINDS``: milliseconds of audio, characters, calls, sessions), from its unit
    of measure (``1 Hour``, ``1M``, ``1K``, ``1``); ``None`` for a unit of measure not seen for it."""
    from metering.price.metered_kinds import UNIT_KINDS

    text = (unit or "").strip().lower()
    if kind == "audio_ms":
        match = re.fullmatch(r"(\d+)?\s*(?:/\s*)?hours?", text)
        size = Decimal(3_600_000) * int(match.group(1) or 1) if match else None
    elif kind in UNIT_KINDS:
        match = re.fullmatch(r"(\d+)?\s*([km])?\s*(?:[a-z ]*)", text)
        size = (Decimal(int(match.group(1) or 1)) * {"k": 1000, "m": 1_000_000, None: 1}[match.group(2)]
                if match and (match.group(1) or match.group(2) or text) else None)
    else:
        return None
    if size is None:
        return None
    return int((quantity * size).to_integral_value())
