"""Rate card files: parse and validate the rates CSV (DESIGN.md) into ``Rate`` values.

Every problem is reported with its line number; overlapping validity periods for the same model,
deployment type, region and long-context threshold are rejected, because two prices for one
request cannot both be right.

The CSV may carry optional columns after the DESIGN.md header, in any order (``ALLOWED_COLUMNS``):
``min_prompt_tokens`` (a row with a threshold is a long-context tier that applies only from that
prompt size on), ``service_tier`` (empty = ``default``; part of the rate's key) and the prices of
the token kinds Azure bills apart (``KIND_RATE_COLUMNS``: cache writes, audio and image input,
cached and output) and of the units Azure bills beyond tokens (``UNIT_RATE_COLUMNS``:
``audio_per_hour``, ``characters_per_1m``, ``web_search_per_1k``, ``file_search_per_1k``,
``code_interpreter_per_session``). See ``metering.price.pricing``. A card without them is a valid card.
``metering.price.card_files`` reads rates CSVs and saved Azure Retail Prices API pages together.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from metering.model import DEPLOYMENT_TYPES, UNIT_RATE_COLUMNS as MODEL_UNIT_RATES, Rate
from metering.price.pricing import model_key, normalize_region, tier_key


RATES_CSV_COLUMNS = (
    "model",
    "deployment_type",
    "region",
    "effective_from",
    "effective_to",
    "currency",
    "input_per_1m",
    "cached_input_per_1m",
    "output_per_1m",
)
TIER_COLUMN = "min_prompt_tokens"
SERVICE_TIER_COLUMN = "service_tier"
# Optional prices of the token kinds Azure bills apart (metering.price.pricing.FALLBACKS says what
# prices a kind whose column is empty).
KIND_RATE_COLUMNS = (
    "cache_write_per_1m",
    "audio_input_per_1m",
    "cached_audio_input_per_1m",
    "audio_output_per_1m",
    "image_input_per_1m",
    "cached_image_input_per_1m",
    "image_output_per_1m",
)
# Optional prices of the units Azure bills beyond tokens, each per its own unit (per hour of audio,
# per 1M characters, per 1,000 tool calls, per code interpreter session: metering.model.UNIT_RATE_COLUMNS).
UNIT_RATE_COLUMNS = tuple(column for column, _ in MODEL_UNIT_RATES.values())
# The optional columns a rates CSV may add after RATES_CSV_COLUMNS, in any order (DESIGN.md).
# ALLOWED_COLUMNS is the one list of every column a rates CSV may name: any other header is bad
# input, so that a misspelled optional column (``cached_input_per_1M``) is never silently dropped.
EXTRA_COLUMNS = (TIER_COLUMN, SERVICE_TIER_COLUMN, *KIND_RATE_COLUMNS, *UNIT_RATE_COLUMNS)
ALLOWED_COLUMNS = RATES_CSV_COLUMNS + EXTRA_COLUMNS
OPTIONAL_COLUMNS = ("region", "effective_to", "cached_input_per_1m", *EXTRA_COLUMNS)
MAX_RATE_DECIMALS = 6  # costs are stored exactly with 12 decimals: rate (6) × tokens / 10^6
# The highest price per 1M tokens a card may hold: 100 million in the card's currency, far above any
# real price in any currency (USD list prices are below 1,000 per 1M). With at most 10^12 tokens per
# request (metering.pipeline.MAX_TOKENS) a request costs at most 2 × 10^14, well inside the cost
# columns' NUMERIC(28, 12) (16 integer digits): no price can make a batch fail to store.
MAX_PRICE_PER_1M = Decimal(100_000_000)
# What the ``rates`` columns hold (db/schema.py; tests/price/test_import_bounds.py keeps them in step).
RATE_TEXT_LIMITS = {"model": 200, "region": 100}


class RateCardError(ValueError):
    """A rate card that cannot be imported; ``problems`` lists every reason, one per line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def unknown_columns(header: Sequence[str], known: Sequence[str]) -> str | None:
    """Why a CSV header is bad input because it names a column the file type does not have (a
    misspelling of an optional column would otherwise be ignored), or ``None``."""
    unknown = [name for name in header if name and name not in known]
    if not unknown:
        return None
    return (f"unknown column(s) {', '.join(repr(name[:60]) for name in unknown)}; "
            f"the columns are {','.join(known)} (names are case-sensitive)")


def text_length(value: str) -> int:
    """Length as SQL Server's NVARCHAR counts it (UTF-16 code units), the strictest of the servers."""
    return len(value) if value.isascii() else len(value.encode("utf-16-le", "surrogatepass")) // 2


def check_text(column: str, value: str, limit: int) -> None:
    """``ValueError`` when ``value`` does not fit a text column of ``limit`` characters or holds NUL."""
    if "\x00" in value:
        raise ValueError(f"{column} contains a NUL character")
    if text_length(value.strip()) > limit:
        raise ValueError(f"{column} is longer than {limit} characters")


def check_price_bounds(rate: Rate, source: str) -> list[str]:
    """Problems of a rate from a price list whose prices do not fit the card (``MAX_PRICE_PER_1M``)."""
    problems = []
    for column in ("input_per_1m", "cached_input_per_1m", "output_per_1m"):
        amount = getattr(rate, column)
        if amount is not None and not 0 <= amount <= MAX_PRICE_PER_1M:
            problems.append(f"{source}: {rate.model} {rate.deployment_type}: {column} {amount} is outside 0 to "
                            f"{MAX_PRICE_PER_1M:,} per 1M tokens")
    for column, limit in RATE_TEXT_LIMITS.items():
        try:
            check_text(column, getattr(rate, column) or "", limit)
        except ValueError as exc:
            problems.append(f"{source}: {rate.model[:60]!r}: {exc}")
    return problems


def parse_date(text: str, column: str) -> datetime:
    """A date (``2025-01-01``, midnight UTC) or an ISO 8601 instant, as aware UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a date (use YYYY-MM-DD or ISO 8601)") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def parse_amount(text: str, column: str) -> Decimal:
    """A non-negative price per 1M tokens with at most six decimals, exactly as written."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{column} {text!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{column} {text!r} must be a non-negative number")
    if amount > MAX_PRICE_PER_1M:
        raise ValueError(f"{column} {text!r} is above the largest price a card may hold "
                         f"({MAX_PRICE_PER_1M:,} per 1M tokens)")
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_RATE_DECIMALS:
        raise ValueError(f"{column} {text!r} has more than {MAX_RATE_DECIMALS} decimals (prices are per 1M tokens)")
    return amount


def parse_threshold(text: str) -> int | None:
    """A long-context threshold: empty (the base tier) or a positive whole number of prompt tokens."""
    text = text.strip().replace("_", "")
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{TIER_COLUMN} {text!r} must be a positive whole number of tokens (leave it empty for the base tier)")
    return int(text)


def parse_service_tier(text: str) -> str | None:
    """A rate row's service tier: empty (or ``default``) is the default tier, stored as ``None``."""
    tier = text.strip().lower()
    if not tier or tier == "default":
        return None
    if len(tier) > 32 or not tier.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"{SERVICE_TIER_COLUMN} {text!r} is not a service tier name (e.g. priority)")
    return tier


def _optional_amount(row: dict[str, str], column: str) -> Decimal | None:
    text = (row.get(column) or "").strip()
    return parse_amount(text, column) if text else None


def parse_rate_row(row: dict[str, str]) -> Rate:
    """One CSV row → ``Rate``; raises ``ValueError`` naming the bad column."""
    model = (row.get("model") or "").strip()
    if not model:
        raise ValueError("model is empty")
    for column, limit in RATE_TEXT_LIMITS.items():
        check_text(column, row.get(column) or "", limit)
    deployment_type = (row.get("deployment_type") or "").strip().lower()
    if deployment_type not in DEPLOYMENT_TYPES:
        raise ValueError(f"deployment_type {deployment_type!r} is not one of {', '.join(DEPLOYMENT_TYPES)}")
    currency = (row.get("currency") or "").strip().upper()
    if len(currency) != 3 or not currency.isalpha():
        raise ValueError(f"currency {currency!r} is not a 3-letter ISO code")
    if not (row.get("effective_from") or "").strip():
        raise ValueError("effective_from is empty")
    effective_from = parse_date(row["effective_from"], "effective_from")
    effective_to_text = (row.get("effective_to") or "").strip()
    effective_to = parse_date(effective_to_text, "effective_to") if effective_to_text else None
    if effective_to is not None and effective_to <= effective_from:
        raise ValueError("effective_to must be after effective_from")
    cached_text = (row.get("cached_input_per_1m") or "").strip()
    return Rate(
        model=model,
        deployment_type=deployment_type,
        region=(row.get("region") or "").strip() or None,
        effective_from=effective_from,
        effective_to=effective_to,
        currency=currency,
        input_per_1m=parse_amount(row.get("input_per_1m") or "", "input_per_1m"),
        cached_input_per_1m=parse_amount(cached_text, "cached_input_per_1m") if cached_text else None,
        output_per_1m=parse_amount(row.get("output_per_1m") or "0", "output_per_1m"),
        min_prompt_tokens=parse_threshold(row.get(TIER_COLUMN) or ""),
        service_tier=parse_service_tier(row.get(SERVICE_TIER_COLUMN) or ""),
        **{column: _optional_amount(row, column) for column in (*KIND_RATE_COLUMNS, *UNIT_RATE_COLUMNS)},
    )


def parse_rates_csv(text: str, source: str = "rates CSV") -> list[Rate]:
    """Parse a whole rates CSV; raises ``RateCardError`` listing every bad line."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in RATES_CSV_COLUMNS if c not in header and c not in OPTIONAL_COLUMNS]
    if missing:
        raise RateCardError([f"{source}: missing column(s) {', '.join(missing)}; expected header: {','.join(RATES_CSV_COLUMNS)}"])
    unknown = unknown_columns(header, ALLOWED_COLUMNS)
    if unknown:
        raise RateCardError([f"{source}: {unknown}"])
    reader.fieldnames = header
    found: list[Rate] = []
    problems: list[str] = []
    for line_number, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        if any((v or "").strip() for v in row.get(None) or ()):  # type: ignore[call-overload]  # fields beyond the header
            problems.append(f"{source} line {line_number}: more fields than the header's {len(header)} columns")
            continue
        try:
            found.append(parse_rate_row(row))
        except ValueError as exc:
            problems.append(f"{source} line {line_number}: {exc}")
    if problems:
        raise RateCardError(problems)
    return found


RateKey = tuple[str, str, str | None, int, str]


def rate_key(rate: Rate) -> RateKey:
    """Rates for the same key must not overlap in time; different long-context tiers and
    different service tiers are different keys."""
    return (model_key(rate.model) or "", rate.deployment_type, normalize_region(rate.region), rate.min_prompt_tokens or 0,
            tier_key(rate.service_tier))


def find_overlaps(card: Sequence[Rate]) -> list[str]:
    """Pairs of rates for the same model, type, region and tier whose validity periods overlap."""
    by_key: dict[RateKey, list[Rate]] = defaultdict(list)
    for rate in card:
        by_key[rate_key(rate)].append(rate)
    problems = []
    for (model, deployment_type, region, threshold, service_tier), group in sorted(
        by_key.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "", kv[0][3], kv[0][4])
    ):
        group.sort(key=lambda r: r.effective_from)
        tier = f" / prompts >= {threshold:,} tokens" if threshold else ""
        if service_tier != "default":
            tier += f" / {service_tier} tier"
        for earlier, later in zip(group, group[1:]):
            if earlier.effective_to is None or later.effective_from < earlier.effective_to:
                problems.append(
                    f"overlapping rates for {model} / {deployment_type} / {region or 'any region'}{tier}: "
                    f"{_period(earlier)} and {_period(later)}"
                )
    return problems


def _period(rate: Rate) -> str:
    end = rate.effective_to.date().isoformat() if rate.effective_to else "open-ended"
    return f"[{rate.effective_from.date().isoformat()} → {end})"


def merge_for_import(stored: Sequence[Rate], incoming: Sequence[Rate]) -> list[Rate]:
    """The card after an import: incoming rows replace stored rows with the same key and start."""
    replaced = {(rate_key(r), r.effective_from) for r in incoming}
    return [r for r in stored if (rate_key(r), r.effective_from) not in replaced] + list(incoming)


def rate_changes(stored: Sequence[Rate], incoming: Sequence[Rate]) -> list[str]:
    """One line per incoming rate that replaces a stored rate of the same key and start with other
    values: model, deployment type, region, start, and each changed column as ``old → new``."""
    by_key = {(rate_key(r), r.effective_from): r for r in stored}
    key_fields = {"id", "model", "deployment_type", "region", "effective_from", "min_prompt_tokens"}
    lines = []
    for rate in incoming:
        old = by_key.get((rate_key(rate), rate.effective_from))
        if old is None:
            continue
        changed = []
        for field in fields(Rate):
            if field.name in key_fields:
                continue
            before, after = getattr(old, field.name), getattr(rate, field.name)
            if before != after:
                changed.append(f"{field.name} {_shown(before)} → {_shown(after)}")
        if changed:
            tier = f" prompts >= {rate.min_prompt_tokens:,}" if rate.min_prompt_tokens else ""
            lines.append(f"{rate.model} {rate.deployment_type} {rate.region or 'any region'}{tier} from "
                         f"{_csv_instant(rate.effective_from)}: {', '.join(changed)}")
    return lines


def _shown(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, datetime):
        return _csv_instant(value)
    if isinstance(value, Decimal):  # as a price is written: 2.50, 0.075 (not 2.500000 as a server returns it)
        value = value.normalize()
        return str(value.quantize(Decimal("0.01")) if value.as_tuple().exponent > -2 else value)  # type: ignore[operator]
    return str(value)


def supersede(stored: Sequence[Rate], incoming: Sequence[Rate]) -> list[Rate]:
    """Stored open-ended rates that an incoming rate of the same key supersedes, ended where the
    first such incoming rate starts (``rates import --supersede``: "this price holds from then on").

    Only a stored rate that started *before* the incoming one is ended; anything else that overlaps
    is still rejected by ``find_overlaps``.
    """
    starts: dict[RateKey, list[datetime]] = defaultdict(list)
    for rate in incoming:
        starts[rate_key(rate)].append(rate.effective_from)
    replaced = {(rate_key(r), r.effective_from) for r in incoming}
    ended = []
    for rate in stored:
        if rate.effective_to is not None or (rate_key(rate), rate.effective_from) in replaced:
            continue
        later = [start for start in starts.get(rate_key(rate), []) if start > rate.effective_from]
        if later:
            ended.append(replace(rate, effective_to=min(later)))
    return ended


def rates_to_csv(card: Sequence[Rate]) -> str:
    """The rates CSV for a card (round-trips through ``parse_rates_csv``). Optional columns are
    written only when some rate uses them, so a plain card keeps the DESIGN.md header."""
    extra = [column for column in EXTRA_COLUMNS if any(getattr(rate, column) is not None for rate in card)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RATES_CSV_COLUMNS + tuple(extra))
    for rate in card:
        row = [
            rate.model,
            rate.deployment_type,
            rate.region or "",
            _csv_instant(rate.effective_from),
            "" if rate.effective_to is None else _csv_instant(rate.effective_to),
            rate.currency,
            rate.input_per_1m,
            "" if rate.cached_input_per_1m is None else rate.cached_input_per_1m,
            rate.output_per_1m,
        ]
        row.extend("" if getattr(rate, column) is None else getattr(rate, column) for column in extra)
        writer.writerow(row)
    return out.getvalue()


def _csv_instant(moment: datetime) -> str:
    """A date when the instant is midnight UTC, else the full ISO 8601 instant (nothing is lost)."""
    return moment.date().isoformat() if moment.time() == datetime.min.time() else moment.isoformat()
