"""The metered side of a reconciliation by the token kinds Azure bills on separate meters (pure).

A stored row keeps three costs (input, cached input, output) whose token kinds are priced apart
(``metering.price.pricing``: cache writes, audio and image input and cached input, audio and image
output each at their own rate, else by ``FALLBACKS``). The bill has one meter per kind, so the metered
groups are split the same way: each audio, image and cache-write kind's tokens times the price of its
kind in the row's rate (``rate_id``), and the text kinds keep what is left of their cost. The split is
exact in ``Decimal`` because the cost of a kind is linear in its tokens. A priced group whose rate row
is gone keeps its audio, image and cache-write tokens in the text kinds (no split is guessed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from metering.model import Rate
from metering.price.pricing import DEFAULT_TIER, FALLBACKS, tier_key

MILLION = Decimal(1_000_000)
TEXT_KINDS = ("input", "cached_input", "output")
# Kind → (the text cost it is priced inside, how its tokens are counted from the stored token sums).
MEDIA_KINDS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "cache_write": ("input", ("cache_write_tokens",), ()),
    "audio_input": ("input", ("audio_prompt_tokens",), ("cached_audio_tokens",)),
    "image_input": ("input", ("image_prompt_tokens",), ("cached_image_tokens",)),
    "cached_audio_input": ("cached_input", ("cached_audio_tokens",), ()),
    "cached_image_input": ("cached_input", ("cached_image_tokens",), ()),
    "audio_output": ("output", ("audio_completion_tokens",), ()),
    "image_output": ("output", ("image_completion_tokens",), ()),
}
# The units Azure bills beyond tokens, as reconciliation counts them: whole numbers of a base unit
# (milliseconds of audio, characters, calls, sessions). Kind → (the usage_records sum, its base units
# per stored unit, the rate column, base units per the column's price, the price's unit as shown).
UNIT_KINDS: dict[str, tuple[str, int, str, int, str]] = {
    "audio_ms": ("audio_seconds", 1000, "audio_per_hour", 3_600_000, "hour"),
    "input_characters": ("input_characters", 1, "characters_per_1m", 1_000_000, "1M characters"),
    "web_search_calls": ("web_search_calls", 1, "web_search_per_1k", 1000, "1K calls"),
    "file_search_calls": ("file_search_calls", 1, "file_search_per_1k", 1000, "1K calls"),
    "code_interpreter_sessions": ("code_interpreter_sessions", 1, "code_interpreter_per_session", 1, "session"),
}
# The unit kinds of a tool, billed on a meter of no model (``file-search-tool-calls-glbl``).
TOOL_KINDS = ("web_search_calls", "file_search_calls", "code_interpreter_sessions")
# Usage kind of the rate card (metering.model.UNIT_FIELDS) → its reconciliation kind.
UNIT_KIND_OF_FIELD = {field: kind for kind, (field, *_) in UNIT_KINDS.items()}
KINDS = TEXT_KINDS + tuple(MEDIA_KINDS) + tuple(UNIT_KINDS)
# The stored token sums a metered group carries (``db.bill.metered_usage``); audio seconds and the
# units' cost are summed as exact decimals with the costs.
TOKEN_SUMS = ("prompt_tokens", "cached_tokens", "completion_tokens", "cache_write_tokens", "audio_prompt_tokens",
              "cached_audio_tokens", "audio_completion_tokens", "image_prompt_tokens", "cached_image_tokens",
              "image_completion_tokens", "input_characters", "web_search_calls", "file_search_calls",
              "code_interpreter_sessions")


def price_unit(kind: str | None) -> tuple[Decimal, str]:
    """How a kind's unit price is compared and shown: per 1M tokens, or per its unit (an hour of audio,
    1M characters, 1K calls, a session), as base units per price and the words shown."""
    if kind in UNIT_KINDS:
        _, _, _, per, shown = UNIT_KINDS[kind]
        return Decimal(per), shown
    return MILLION, "1M"


def kind_price(rate: Rate, kind: str) -> Decimal | None:
    """The price per 1M tokens of a token kind in a rate row, as pricing charges it (fallbacks included);
    for a unit kind, its column's price (per ``price_unit``). ``None``: a unit the row has no price for."""
    if kind in UNIT_KINDS:
        return getattr(rate, UNIT_KINDS[kind][2])
    if kind in TEXT_KINDS:
        if kind == "cached_input" and rate.cached_input_per_1m is None:
            return rate.input_per_1m
        return getattr(rate, f"{kind}_per_1m")
    for name in FALLBACKS[kind]:
        value = getattr(rate, name)
        if value is not None:
            return value
    raise AssertionError(f"{kind}: the rate row has no input or output price")


def split_group(group: Mapping[str, Any], rate: Rate | None) -> dict[str, Any]:
    """One metered group (raw token sums, three costs) → ``{kind}_tokens`` and ``{kind}_cost`` for
    every kind. Costs are ``None`` where the group has none (not priced)."""
    sums = {name: int(group.get(name) or 0) for name in TOKEN_SUMS}
    tokens = {kind: sum(sums[n] for n in plus) - sum(sums[n] for n in minus)
              for kind, (_, plus, minus) in MEDIA_KINDS.items()}
    costs: dict[str, Decimal | None] = {kind: group.get(f"{kind}_cost") for kind in TEXT_KINDS}
    priced = group.get("price_status") == "priced"
    if priced and rate is None and any(tokens.values()):
        tokens = dict.fromkeys(MEDIA_KINDS, 0)  # no rate row to split by: the text kinds keep them
    text = {
        "input": sums["prompt_tokens"] - sums["cached_tokens"] - tokens["cache_write"] - tokens["audio_input"]
        - tokens["image_input"],
        "cached_input": sums["cached_tokens"] - tokens["cached_audio_input"] - tokens["cached_image_input"],
        "output": sums["completion_tokens"] - tokens["audio_output"] - tokens["image_output"],
    }
    out: dict[str, Any] = {f"{kind}_tokens": count for kind, count in {**text, **tokens}.items()}
    for kind, (bucket, _, _) in MEDIA_KINDS.items():
        if priced and rate is not None and costs[bucket] is not None:
            cost = Decimal(tokens[kind]) * kind_price(rate, kind) / MILLION if tokens[kind] else Decimal(0)
            costs[bucket] = costs[bucket] - cost  # type: ignore[operator]
            out[f"{kind}_cost"] = cost
        else:
            out[f"{kind}_cost"] = None if costs[bucket] is None else Decimal(0)
    for kind in TEXT_KINDS:
        out[f"{kind}_cost"] = costs[kind]
    out.update(_split_units(group, rate, priced))
    return out


def _split_units(group: Mapping[str, Any], rate: Rate | None, priced: bool) -> dict[str, Any]:
    """The units beyond tokens of a group: base quantities and each kind's cost at its rate column.
    A priced group whose rate row is gone keeps the units' whole cost on its first unit kind."""
    out: dict[str, Any] = {}
    unit_cost = group.get("unit_cost")
    left = unit_cost
    first: str | None = None
    for kind, (field_name, scale, column, per, _) in UNIT_KINDS.items():
        stored = group.get(field_name) or 0
        quantity = int((Decimal(stored) * scale).to_integral_value())
        out[f"{kind}_tokens"] = quantity
        price = getattr(rate, column) if rate is not None else None
        if not priced or not quantity:
            out[f"{kind}_cost"] = None if not priced else Decimal(0)
            continue
        first = first or kind
        if price is None:
            out[f"{kind}_cost"] = Decimal(0)
            continue
        cost = Decimal(stored) * scale * price / per
        out[f"{kind}_cost"] = cost
        left = None if left is None else left - cost
    if priced and first is not None and left:
        out[f"{first}_cost"] += left  # the stored cost wins: audio rounded to the cost scale, or a rate row gone
    return out


def rate_tier(rate: Rate | None) -> str | None:
    """The service tier a group was priced in (its rate row's), as bill lines name it: ``None`` for
    the default tier. Pricing chose the row by ``pricing.billed_tier`` (a priority request over the
    long-context limit is billed at the default tier), so the group lands on the meter Azure used."""
    tier = tier_key(rate.service_tier) if rate is not None else DEFAULT_TIER
    return None if tier == DEFAULT_TIER else tier


def split_metered(groups: Iterable[Mapping[str, Any]], rates: Mapping[int, Rate], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Metered groups of ``keys`` + ``rate_id`` → groups of ``keys`` and ``service_tier`` (the
    tier of its rate, ``rate_tier``) with tokens and cost per kind (``KINDS``) and ``requests``: each
    group split by its rate row, then the rate ids of one tier merged."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for group in groups:
        rate_id = group.get("rate_id")
        rate = rates.get(rate_id) if rate_id is not None else None
        split = split_group(group, rate)
        tier = rate_tier(rate)
        key = (*(group[name] for name in keys), tier)
        target = merged.get(key)
        if target is None:
            merged[key] = {**{name: group[name] for name in keys}, "service_tier": tier,
                           "requests": int(group.get("requests") or 0), **split}
            continue
        target["requests"] += int(group.get("requests") or 0)
        for name, value in split.items():
            if name.endswith("_tokens"):
                target[name] += value
            elif value is not None:
                target[name] = value if target[name] is None else target[name] + value
    return list(merged.values())
