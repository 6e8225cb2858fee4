"""A request body that JSON.NET accepts but JSON does not, attached raw by the policy (issue #26, item
13): the gateway saw the usage, so it is billed from the header; the bytes stay for audit."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from events import v1_event
from metering.decode.signature import sign
from metering.model import PipelineSettings, RawEvent
from metering.pipeline import process_event
from metering.price.rate_card import parse_rates_csv
from metering.price.pricing import RateCard

CARD_CSV = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
)
KEY = b"k" * 32

# What JSON.NET's JObject.Parse accepts (the policy's check in metering-inbound.xml) and orjson refuses.
LENIENT_BODIES = {
    "comment": b'{"messages":[{"role":"user","content":"hi"}] /* the client left a comment */}',
    "single quotes": b"{'messages':[{'role':'user','content':'hi'}]}",
    "trailing comma": b'{"messages":[{"role":"user","content":"hi"},],"max_tokens":50,}',
    "NaN": b'{"messages":[{"role":"user","content":"hi"}],"temperature":NaN}',
}


@pytest.fixture(scope="module")
def card() -> RateCard:
    rates = parse_rates_csv(CARD_CSV)
    return RateCard(rates, [])


def with_raw_request(event: dict, raw_request: bytes) -> bytes:
    """The event as the policy writes it: ``request`` is a JRaw, its text as the client sent it."""
    event["request"] = "__RAW__"
    return orjson.dumps(event).replace(b'"__RAW__"', raw_request)


@pytest.mark.parametrize("name", sorted(LENIENT_BODIES))
def test_reported_usage_is_billed_when_the_request_payload_is_lenient_json(card, name):
    body = with_raw_request(v1_event("lenient-1", capture="request"), LENIENT_BODIES[name])
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    result = process_event(RawEvent(body), card)
    record = result.record
    assert record is not None and record.usage_source == "reported"
    assert (record.prompt_tokens, record.completion_tokens) == (1200, 300)
    assert record.total_cost == Decimal("1200") * Decimal("2.50") / 1_000_000 + Decimal("300") * Decimal("10.00") / 1_000_000
    assert result.audit and result.quarantined.reason == "lenient_payload" and result.quarantined.raw == body


def test_a_signed_event_with_a_lenient_payload_verifies_on_its_bytes(card):
    unsigned = with_raw_request(v1_event("lenient-signed", capture="full"), LENIENT_BODIES["single quotes"])
    settings = PipelineSettings(signing_secret=KEY, require_signature=True)
    assert process_event(RawEvent(sign(unsigned, KEY)), card, settings).record.prompt_tokens == 1200
    forged = sign(unsigned, KEY).replace(b'"prompt_tokens":1200', b'"prompt_tokens":12')
    assert process_event(RawEvent(forged), card, settings).quarantined.reason == "bad_signature"


def test_without_reported_usage_the_event_stays_in_quarantine(card):
    body = with_raw_request(v1_event("lenient-no-usage", capture="full", usage=None), LENIENT_BODIES["comment"])
    result = process_event(RawEvent(body), card)
    assert result.record is None and result.quarantined.reason == "not_json"


def test_a_header_that_is_itself_not_json_stays_not_json(card):
    body = orjson.dumps(v1_event("broken-header")).replace(b'"status":200', b'"status":NaN')
    result = process_event(RawEvent(body), card)
    assert result.record is None and result.quarantined.reason == "not_json"
