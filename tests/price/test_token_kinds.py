"""Every token kind Azure bills apart, read from Azure-shaped responses and priced exactly.

Shapes: the gpt-4o-audio-preview usage is the one an Azure OpenAI call printed in
csiebler.github.io, "The new gpt-4o-audio-preview in Azure OpenAI … how much will it cost me?"
(2025-01-24: 88 text prompt tokens, 696 completion tokens of which 589 audio, $0.11909 at
$2.50/$10 text and $100/$200 audio); the gpt-image-1 usage follows OpenAI's ImagesResponse.usage
(``input_tokens_details.{text_tokens,image_tokens}``, image ``output_tokens``); the transcription
usage follows the Azure SDK's TranscriptTextUsageTokens (``type: "tokens"``, ``input_token_details``)
and TranscriptTextUsageDuration (``type: "duration"``, ``seconds``); ``cache_write_tokens`` is
the field gpt-5.6-class models add to ``prompt_tokens_details`` / ``input_tokens_details``.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from azure_shapes import (
    chat_body,
    chat_stream,
    image_body,
    responses_stream,
    responses_usage,
    transcription_body,
    usage_object,
)
from events import encode, v1_event
from metering.decode.event import decode_event
from metering.model import BadEvent
from metering.pipeline import build_record
from metering.price.pricing import RateCard
from metering.price.rate_card import parse_rates_csv
from metering.usage.resolve import normalize_usage, resolve_usage

HEADER = "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m"
CARD = parse_rates_csv(
    HEADER + ",service_tier,cache_write_per_1m,audio_input_per_1m,cached_audio_input_per_1m,audio_output_per_1m,"
    "image_input_per_1m,cached_image_input_per_1m,image_output_per_1m\n"
    "gpt-4o-audio-preview,global,,2024-12-17,,USD,2.50,,10.00,,,100.00,,200.00,,,\n"
    "gpt-image-1,global,,2025-04-15,,USD,5.00,1.25,0,,,,,,10.00,2.50,40.00\n"
    "gpt-4o-transcribe,global,,2025-03-20,,USD,2.50,,10.00,,,6.00,,,,,\n"
    "gpt-5.6,global,,2026-07-09,,USD,1.25,0.125,10.00,,1.5625,,,,,,\n"
    "gpt-5.6,global,,2026-07-09,,USD,2.50,0.25,20.00,priority,3.125,,,,,,\n"
    "gpt-5.6-mini,global,,2026-07-09,,USD,0.25,0.025,2.00,,,,,,,,\n"
    "gpt-4o-mini,global,,2024-07-18,,USD,0.15,0.075,0.60,,,,,,,,\n"
)
CARD = [replace(rate, id=number) for number, rate in enumerate(CARD, start=1)]
for_id = {(rate.model, rate.service_tier): rate.id for rate in CARD}
M = Decimal(1_000_000)


def record(**event_fields):
    event = decode_event(encode(v1_event(**event_fields)))
    return build_record(event, RateCard(CARD))


def test_audio_chat_completion_prices_audio_output_at_the_audio_rate():
    """The real Azure gpt-4o-audio-preview call: $0.11909 exactly."""
    usage = usage_object(88, 696, audio_completion=589, image_prompt=0, text_details=True)
    row = record(model="gpt-4o-audio-preview-2024-12-17", usage=None, capture="full",
                 response=chat_body("We are thrilled…", model="gpt-4o-audio-preview-2024-12-17", usage=usage))
    assert (row.prompt_tokens, row.completion_tokens, row.audio_completion_tokens, row.audio_prompt_tokens) == (88, 696, 589, 0)
    assert row.input_cost == Decimal("0.00022")
    assert row.output_cost == Decimal(107) * 10 / M + Decimal(589) * 200 / M == Decimal("0.11887")
    assert row.total_cost == Decimal("0.11909")
    assert row.price_fallback is None


def test_audio_input_and_cached_tokens_are_priced_apart():
    usage = usage_object(2000, 100, cached=1024, audio_prompt=600)
    row = record(model="gpt-4o-audio-preview-2024-12-17", usage=usage)
    assert row.audio_prompt_tokens == 600
    # uncached text 376 at 2.50, audio 600 at 100; cached text 1024 at the input rate (no cached rate)
    assert row.input_cost == Decimal(376) * Decimal("2.50") / M + Decimal(600) * 100 / M
    assert row.cached_input_cost == Decimal(1024) * Decimal("2.50") / M
    assert row.output_cost == Decimal(100) * 10 / M


def test_cache_write_tokens_are_priced_at_the_cache_write_rate():
    usage = usage_object(50_000, 800, cached=30_000, cache_write=15_000, reasoning=300)
    row = record(model="gpt-5.6-2026-07-09", usage=usage)
    assert (row.cached_tokens, row.cache_write_tokens, row.reasoning_tokens) == (30_000, 15_000, 300)
    assert row.input_cost == Decimal(5_000) * Decimal("1.25") / M + Decimal(15_000) * Decimal("1.5625") / M
    assert row.cached_input_cost == Decimal(30_000) * Decimal("0.125") / M
    assert row.output_cost == Decimal(800) * 10 / M
    assert row.total_cost == Decimal("0.00625") + Decimal("0.0234375") + Decimal("0.00375") + Decimal("0.008")
    assert row.price_fallback is None


def test_a_kind_without_its_price_is_priced_by_the_fallback_and_flagged():
    """gpt-5.6-mini's row has no cache-write price: its cache writes cost the input rate, visibly."""
    usage = responses_usage(10_000, 200, cached=4_000, cache_write=6_000)
    row = record(model="gpt-5.6-mini", usage=usage)
    assert row.cache_write_tokens == 6_000
    assert row.price_status == "priced"
    assert row.input_cost == Decimal(6_000) * Decimal("0.25") / M
    assert row.price_fallback == "cache_write"


def test_audio_tokens_without_an_audio_price_fall_back_to_text_rates_and_are_flagged():
    usage = usage_object(1000, 500, audio_prompt=400, audio_completion=300)
    row = record(model="gpt-4o-mini-2024-07-18", usage=usage)
    assert row.total_cost == Decimal(1000) * Decimal("0.15") / M + Decimal(500) * Decimal("0.60") / M
    assert row.price_fallback == "audio_input,audio_output"


def test_image_generation_prices_text_input_image_input_and_image_output():
    row = record(model=None, deployment="gpt-image-1", operation="Images_Edit", usage=None, capture="full",
                 response=image_body(48, 1_530, 4_160))
    assert row.endpoint == "images"
    assert (row.prompt_tokens, row.image_prompt_tokens, row.completion_tokens, row.image_completion_tokens) == (1_578, 1_530, 4_160, 4_160)
    assert row.input_cost == Decimal(48) * 5 / M + Decimal(1_530) * 10 / M == Decimal("0.01554")
    assert row.output_cost == Decimal(4_160) * 40 / M == Decimal("0.1664")
    assert row.price_fallback is None


def test_newer_image_usage_splits_output_by_kind():
    usage = normalize_usage(
        {"input_tokens": 25, "input_tokens_details": {"image_tokens": 0, "text_tokens": 25}, "output_tokens": 229,
         "output_tokens_details": {"image_tokens": 229, "text_tokens": 0}, "total_tokens": 254},
        endpoint="images",
    )
    assert (usage.image_prompt_tokens, usage.image_completion_tokens) == (0, 229)


def test_token_billed_transcription_prices_audio_input():
    row = record(model=None, deployment="gpt-4o-transcribe", operation="Audio_Transcriptions_Create", usage=None,
                 capture="full", response=transcription_body("Hello there.", audio=1_250, prompt_text=12, output=9))
    assert row.endpoint == "audio"
    assert (row.prompt_tokens, row.audio_prompt_tokens, row.completion_tokens) == (1_262, 1_250, 9)
    assert row.input_cost == Decimal(12) * Decimal("2.50") / M + Decimal(1_250) * 6 / M
    assert row.output_cost == Decimal(9) * 10 / M


def test_duration_billed_transcription_is_no_rate_without_an_hourly_price_never_zero():
    """Whisper reports seconds of audio, billed per hour (#30): kept to the millisecond; a card with
    no audio_per_hour price for it leaves the request unpriced, never free."""
    row = record(model=None, deployment="whisper", operation="Audio_Transcriptions_Create", usage=None,
                 capture="full", response=transcription_body("Hello there.", seconds=9.4))
    assert row.audio_seconds == Decimal("9.4") and row.total_tokens == 0
    assert row.price_status == "no_rate"
    assert row.total_cost is None


def test_responses_stream_incomplete_carries_the_usage_and_service_tier():
    stream = responses_stream(["Par", "tial"], model="gpt-5.6-2026-07-09", status="incomplete", service_tier="priority",
                              usage=responses_usage(2_000, 64, cached=1_024, cache_write=512, reasoning=60))
    row = record(model=None, usage=None, stream=True, capture="full", response=stream,
                 operation="Responses_Create", deployment="gpt-5.6")
    assert (row.usage_source, row.service_tier, row.cache_write_tokens) == ("reported", "priority", 512)
    assert row.rate_id == for_id[("gpt-5.6", "priority")]
    assert row.input_cost == Decimal(464) * Decimal("2.50") / M + Decimal(512) * Decimal("3.125") / M
    assert row.output_cost == Decimal(64) * 20 / M


def test_chat_stream_service_tier_selects_the_priority_row():
    stream = chat_stream(["Hi", "!"], model="gpt-5.6-2026-07-09", service_tier="priority", usage=usage_object(1_000, 10))
    row = record(model=None, usage=None, stream=True, capture="full", response=stream, deployment="gpt-5.6")
    assert row.service_tier == "priority"
    assert row.total_cost == Decimal(1_000) * Decimal("2.50") / M + Decimal(10) * 20 / M
    assert row.price_fallback is None


def test_priority_prompts_over_128k_tokens_are_billed_at_the_standard_rate():
    body = chat_body("ok", model="gpt-5.6-2026-07-09", usage=usage_object(128_001, 10), service_tier="priority")
    row = record(model=None, usage=None, capture="full", response=body, deployment="gpt-5.6")
    assert row.service_tier == "priority"
    assert row.rate_id == for_id[("gpt-5.6", None)]
    assert row.price_fallback is None
    at_limit = record(model=None, usage=None, capture="full", deployment="gpt-5.6",
                      response=chat_body("ok", model="gpt-5.6-2026-07-09", usage=usage_object(128_000, 10), service_tier="priority"))
    assert at_limit.rate_id == for_id[("gpt-5.6", "priority")]


def test_priority_without_a_priority_row_is_priced_at_default_and_flagged():
    body = chat_body("ok", model="gpt-4o-mini-2024-07-18", usage=usage_object(1_000, 10), service_tier="priority")
    row = record(model=None, usage=None, capture="full", response=body)
    assert row.rate_id == for_id[("gpt-4o-mini", None)]
    assert row.price_fallback == "service_tier"
    assert row.total_cost == Decimal(1_000) * Decimal("0.15") / M + Decimal(10) * Decimal("0.60") / M


def test_default_tier_in_the_response_is_the_default_row():
    body = chat_body("ok", model="gpt-5.6-2026-07-09", usage=usage_object(1_000, 10), service_tier="default")
    row = record(model=None, usage=None, capture="full", response=body, deployment="gpt-5.6")
    assert (row.service_tier, row.rate_id, row.price_fallback) == ("default", for_id[("gpt-5.6", None)], None)


def test_event_service_tier_field_is_used_when_only_usage_was_captured():
    row = record(model="gpt-5.6-2026-07-09", usage=usage_object(1_000, 10), serviceTier="priority")
    assert (row.service_tier, row.rate_id) == ("priority", for_id[("gpt-5.6", "priority")])


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 100, "completion_tokens": 0, "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 50}},
    {"prompt_tokens": 100, "completion_tokens": 0, "prompt_tokens_details": {"audio_tokens": 70, "image_tokens": 40}},
    {"prompt_tokens": 1, "completion_tokens": 10, "completion_tokens_details": {"reasoning_tokens": 6, "audio_tokens": 5}},
    {"prompt_tokens": 10, "completion_tokens": 0, "prompt_tokens_details": {"cache_write_tokens": -1}},
])
def test_details_that_do_not_add_up_are_invalid_usage(usage):
    with pytest.raises(BadEvent) as caught:
        normalize_usage(usage)
    assert caught.value.reason == "invalid_usage"


def test_realtime_shape_cached_audio_tokens():
    usage = normalize_usage({
        "input_tokens": 1_000, "output_tokens": 300, "total_tokens": 1_300,
        "input_token_details": {"cached_tokens": 640, "text_tokens": 200, "audio_tokens": 800,
                                "cached_tokens_details": {"text_tokens": 128, "audio_tokens": 512}},
        "output_token_details": {"text_tokens": 60, "audio_tokens": 240},
    })
    assert (usage.audio_prompt_tokens, usage.cached_tokens, usage.cached_audio_tokens) == (800, 640, 512)
    assert usage.audio_completion_tokens == 240


def test_resolve_usage_keeps_the_tier_of_an_estimated_stream():
    stream = chat_stream(["Hello", " world"], model="gpt-4o-mini-2024-07-18", service_tier="priority")
    event = decode_event(encode(v1_event(usage=None, stream=True, capture="full", response=stream)))
    usage = resolve_usage(event)
    assert (usage.source, usage.service_tier) == ("partial", "priority")


def test_short_model_names_price_through_the_mapping_but_different_models_do_not():
    from metering.model import DeploymentMapping
    from metering.price.pricing import resolve_alias

    card = RateCard(
        parse_rates_csv(HEADER + "\ntext-embedding-ada-002,global,,2023-01-01,,USD,0.10,,0\no3,global,,2025-04-16,,USD,2,0.5,8\n"),
        [DeploymentMapping("embeddings", "text-embedding-ada-002", "global"), DeploymentMapping("reasoner", "o3", "global")],
    )
    assert resolve_alias("ada", "text-embedding-ada-002", card) == "text-embedding-ada-002"
    assert resolve_alias("o3-pro", "o3", card) == "o3-pro"  # a different model: no_rate, visible
    assert resolve_alias("gpt-4o", "text-embedding-ada-002", card) == "gpt-4o"
    assert resolve_alias("ada", None, card) == "ada"
