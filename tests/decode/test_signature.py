"""Signed events (optional): HMAC-SHA256 over the received bytes, the rule of docs/policies.md."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

import function_app
from db.schema import quarantine, usage_records
from events import encode, jsonl, v1_event
from metering.decode import signature
from metering.cli import main
from metering.ingest import Ingestor
from metering.settings import settings_from_env
from metering.model import PipelineSettings, RawEvent
from metering.pipeline import process_event
from metering.price.pricing import RateCard

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "policy" / "examples" / "chat-stream-full.json").read_bytes().rstrip(b"\n")
EXAMPLE_KEY = b"example-hmac-key-do-not-use"  # docs/policies.md: the example is signed with it
KEY = b"0123456789abcdef0123456789abcdef-not-a-real-key"
CARD = RateCard([], [])


def signed(event: dict, key: bytes = KEY) -> bytes:
    return signature.sign(orjson.dumps(event), key)


def outcome(body: bytes, settings: PipelineSettings):
    return process_event(RawEvent(body), CARD, settings)


def test_the_policy_example_verifies_with_the_documented_key():
    assert signature.verify(EXAMPLE, [EXAMPLE_KEY]) == ("valid", "")
    assert signature.verify(EXAMPLE + b"\r\n", [EXAMPLE_KEY])[0] == "valid"  # a line ending is not signed
    assert signature.verify(b"\xef\xbb\xbf" + EXAMPLE, [EXAMPLE_KEY])[0] == "valid"
    assert signature.verify(EXAMPLE, [b"another-key"])[0] == "invalid"
    record = outcome(EXAMPLE, PipelineSettings(signing_secret=EXAMPLE_KEY)).record
    assert record is not None and record.request_id == "8a2c6f0d-1b5e-4f7a-a3c9-6e4d2b8f0a57"


def test_sign_matches_the_policy_rule():
    unsigned = orjson.dumps(v1_event("r"))
    body = signature.sign(unsigned, KEY)
    mac = hmac.new(KEY, unsigned, hashlib.sha256).digest()
    assert body == unsigned[:-1] + b',"signature":"hmac-sha256=' + __import__("base64").b64encode(mac) + b'"}'
    assert list(orjson.loads(body))[-1] == "signature"


@pytest.mark.parametrize(
    "mutate, verdict",
    [
        (lambda b: b.replace(b'"prompt_tokens":1200', b'"prompt_tokens":12'), "invalid"),  # altered usage
        (lambda b: b.replace(b'"sub-finance-analytics"', b'"sub-legal-review"'), "invalid"),  # charged to someone else
        (lambda b: b.replace(b"hmac-sha256=", b"hmac-sha1=", 1), "invalid"),
        (lambda b: b[: b.rindex(b'"signature"') - 1] + b"}", "missing"),  # signature removed
        (lambda b: b'{"signature":' + b[b.rindex(b'"hmac-sha256='):-1] + b"," + b[1 : b.rindex(b',"signature"')] + b"}",
         "missing"),  # moved to the front: the signature must be the last member
        (lambda b: b[:-3] + b'A="}', "invalid"),  # another valid-looking signature
    ],
)
def test_tampered_or_unsigned_events_are_bad_signatures(mutate, verdict):
    body = mutate(signed(v1_event("t-1")))
    assert signature.verify(body, [KEY])[0] == verdict
    result = outcome(body, PipelineSettings(signing_secret=KEY))
    assert result.record is None
    assert result.quarantined.reason == "bad_signature" and result.quarantined.request_id == "t-1"
    assert result.quarantined.raw == body


def test_unsigned_events_are_accepted_only_when_signatures_are_optional():
    unsigned = encode(v1_event("u-1"))
    optional = PipelineSettings(signing_secret=KEY, require_signature=False)
    assert outcome(unsigned, optional).record is not None
    assert outcome(signed(v1_event("u-2")), optional).record is not None
    wrong = signed(v1_event("u-3"), b"wrong-key")
    assert outcome(wrong, optional).quarantined.reason == "bad_signature"  # present and wrong: never accepted
    assert outcome(unsigned, PipelineSettings()).record is not None  # signing off: not checked at all
    assert outcome(wrong, PipelineSettings()).record is not None


def test_the_previous_key_is_accepted_while_rotating():
    settings = PipelineSettings(signing_secret=b"new-key", previous_signing_secret=b"old-key")
    assert outcome(signed(v1_event("r-1"), b"old-key"), settings).record is not None
    assert outcome(signed(v1_event("r-2"), b"new-key"), settings).record is not None
    assert outcome(signed(v1_event("r-3"), b"other"), settings).quarantined.reason == "bad_signature"


def test_comparison_is_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(signature.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    signature.verify(signed(v1_event("c")), [KEY, b"second"])
    assert len(calls) == 2  # every key is compared, with compare_digest, even after a match


def test_the_secret_is_never_shown(caplog, monkeypatch):
    secret = "s3cr3t-named-value-text"
    settings = settings_from_env({"METERING_SIGNING_SECRET": secret})
    assert settings.signing_secret == secret.encode() and settings.require_signature
    assert secret not in repr(settings) and secret not in str(settings)
    with caplog.at_level(logging.DEBUG):
        results = [outcome(b, settings) for b in (encode(v1_event("a")), signed(v1_event("b"), b"x"), b"junk")]
    text = caplog.text + " ".join(r.quarantined.detail for r in results if r.quarantined)
    assert secret not in text


def test_settings_from_env():
    assert settings_from_env({}) == PipelineSettings()
    assert not settings_from_env({}).signing
    s = settings_from_env({"METERING_SIGNING_SECRET": "k", "METERING_SIGNING_SECRET_PREVIOUS": "old",
                           "METERING_REQUIRE_SIGNATURE": "0", "METERING_QUARANTINE_REDACT": "true"})
    assert (s.signing_secret, s.previous_signing_secret, s.require_signature, s.redact_payloads) == (b"k", b"old", False, True)
    assert settings_from_env({"METERING_SIGNING_SECRET": "k"}, signing_secret=b"file").signing_secret == b"file"
    with pytest.raises(ValueError, match="METERING_QUARANTINE_REDACT"):
        settings_from_env({"METERING_QUARANTINE_REDACT": "maybe"})


def test_replay_verifies_with_a_secret_file(tmp_path, sqlite_url, capsys, monkeypatch):
    monkeypatch.delenv("METERING_SIGNING_SECRET", raising=False)
    assert main(["--db", sqlite_url, "db", "upgrade"]) == 0
    key_file = tmp_path / "hmac.key"
    key_file.write_bytes(KEY + b"\n")  # a trailing line ending is not part of the key
    capture = tmp_path / "signed.jsonl"
    capture.write_bytes(jsonl([signed(v1_event("ok-1")), signed(v1_event("ok-2")), encode(v1_event("unsigned")),
                               signed(v1_event("forged"), b"guess")]))
    capsys.readouterr()
    assert main(["--db", sqlite_url, "replay", str(capture), "--signing-secret-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert "events read 4 | rows inserted 2 | duplicates skipped 0 | quarantined 2" in out
    assert KEY.decode() not in out
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(usage_records.c.request_id).order_by(usage_records.c.request_id)).scalars().all() == ["ok-1", "ok-2"]
        assert conn.execute(sa.select(quarantine.c.request_id, quarantine.c.reason).order_by(quarantine.c.request_id)).all() == [
            ("forged", "bad_signature"), ("unsigned", "bad_signature")]
    engine.dispose()
    assert main(["--db", sqlite_url, "replay", str(capture), "--signing-secret-file", str(tmp_path / "nope")]) == 2


def test_the_function_reads_the_secret_from_its_settings(engine, monkeypatch):
    monkeypatch.setenv("METERING_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("METERING_SIGNING_SECRET", KEY.decode())
    function_app.reset_ingestor()
    try:
        from hub_events import hub_event

        totals = function_app.handle_events([hub_event(signed(v1_event("f-1")), 1), hub_event(encode(v1_event("f-2")), 2)])
        assert (totals.inserted, totals.quarantined) == (1, 1)
        assert function_app.get_ingestor().settings.signing
    finally:
        function_app.reset_ingestor()


def test_ingestor_holds_its_settings(sqlite_engine):
    ingestor = Ingestor(sqlite_engine, settings=PipelineSettings(signing_secret=KEY))
    totals = ingestor.ingest([RawEvent(signed(v1_event("i-1"))), RawEvent(encode(v1_event("i-2")))])
    assert (totals.inserted, totals.quarantined) == (1, 1)
