"""The metered side of a reconciliation, split by the token kinds Azure bills on separate meters:
each kind's cost is what pricing charged for it, and the kinds add up to the stored costs exactly."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from decimal import Decimal

from metering.price.metered_kinds import KINDS, split_group, split_metered
from metering.model import Rate, TokenUsage
from metering.price.pricing import compute_cost_by_kind

AT = datetime(2026, 10, 1, tzinfo=timezone.utc)
# A realtime-style row: text, cached text, audio, cached audio prices; no image or cache-write price,
# so image input falls back to the input rate and a cache write to the input rate (as pricing does).
REALTIME = Rate(model="gpt-4o-realtime-preview", deployment_type="global", region=None, effective_from=AT,
                effective_to=None, currency="USD", input_per_1m=Decimal("5"), cached_input_per_1m=Decimal("2.5"),
                output_per_1m=Decimal("20"), id=7, audio_input_per_1m=Decimal("40"),
                cached_audio_input_per_1m=Decimal("2.5"), audio_output_per_1m=Decimal("80"))
USAGE = TokenUsage(prompt_tokens=5_000, cached_tokens=1_800, completion_tokens=900, source="provider",
                   cache_write_tokens=300, audio_prompt_tokens=2_000, cached_audio_tokens=1_200,
                   image_prompt_tokens=400, audio_completion_tokens=700)


def stored_group(usage: TokenUsage, rate: Rate, requests: int = 1, **keys) -> dict:
    """What ``db.bill.metered_usage`` sums for ``requests`` rows priced at ``rate``."""
    input_cost, cached_cost, output_cost, _ = compute_cost_by_kind(usage, rate)
    counts = {name: value * requests for name, value in asdict(usage).items() if name.endswith("_tokens")}
    return {**keys, "price_status": "priced", "rate_id": rate.id, "requests": requests, **counts,
            "input_cost": input_cost * requests, "cached_input_cost": cached_cost * requests,
            "output_cost": output_cost * requests}


def test_each_kind_gets_its_tokens_and_the_cost_pricing_charged_for_them():
    split = split_group(stored_group(USAGE, REALTIME), REALTIME)
    tokens = {kind: split[f"{kind}_tokens"] for kind in KINDS}
    assert tokens == {"input": 1_700, "cached_input": 600, "output": 200, "cache_write": 300, "audio_input": 800,
                      "cached_audio_input": 1_200, "audio_output": 700, "image_input": 400,
                      "cached_image_input": 0, "image_output": 0,
                      # units beyond tokens (#30): none in this group
                      "audio_ms": 0, "input_characters": 0, "web_search_calls": 0, "file_search_calls": 0,
                      "code_interpreter_sessions": 0}
    assert sum(tokens.values()) == USAGE.prompt_tokens + USAGE.completion_tokens
    million = Decimal(1_000_000)
    assert split["audio_input_cost"] == 800 * Decimal(40) / million
    assert split["cached_audio_input_cost"] == 1_200 * Decimal("2.5") / million
    assert split["audio_output_cost"] == 700 * Decimal(80) / million
    assert split["image_input_cost"] == 400 * Decimal(5) / million  # no image price: the input rate
    assert split["cache_write_cost"] == 300 * Decimal(5) / million  # no cache-write price: the input rate
    assert split["input_cost"] == 1_700 * Decimal(5) / million
    assert split["cached_input_cost"] == 600 * Decimal("2.5") / million
    assert split["output_cost"] == 200 * Decimal(20) / million
    assert sum(split[f"{kind}_cost"] for kind in KINDS) == sum(compute_cost_by_kind(USAGE, REALTIME)[:3])


def test_groups_of_several_rate_rows_merge_into_one_group_per_key():
    older = Rate(**{**asdict(REALTIME), "id": 6, "audio_output_per_1m": Decimal("100")})
    groups = [stored_group(USAGE, REALTIME, 2, day="2026-10-08", model="m"),
              stored_group(USAGE, older, 1, day="2026-10-08", model="m")]
    [merged] = split_metered(groups, {6: older, 7: REALTIME}, ("day", "model"))
    assert merged["requests"] == 3 and merged["audio_output_tokens"] == 2_100
    assert merged["audio_output_cost"] == (2 * 700 * Decimal(80) + 700 * Decimal(100)) / Decimal(1_000_000)


def test_a_priced_group_whose_rate_row_is_gone_keeps_media_tokens_in_the_text_kinds_never_guessed():
    group = stored_group(USAGE, REALTIME)
    split = split_group(group, None)
    assert all(split[f"{kind}_tokens"] == 0 for kind in KINDS[3:])
    assert (split["input_tokens"], split["cached_input_tokens"], split["output_tokens"]) == (3_200, 1_800, 900)
    assert (split["input_cost"], split["cached_input_cost"], split["output_cost"]) == (
        group["input_cost"], group["cached_input_cost"], group["output_cost"])


def test_unpriced_groups_split_their_tokens_with_no_cost():
    group = {**stored_group(USAGE, REALTIME), "price_status": "no_rate", "rate_id": None,
             "input_cost": Decimal(0), "cached_input_cost": Decimal(0), "output_cost": Decimal(0)}
    split = split_group(group, None)
    assert split["audio_output_tokens"] == 700 and split["audio_output_cost"] == 0 and split["input_tokens"] == 1_700
