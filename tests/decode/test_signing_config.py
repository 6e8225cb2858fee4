"""Signing never fails open: a configuration that asks for signatures but cannot verify them refuses
to start — the Function, `metering consume`, `replay` and `quarantine retry` — with one line naming
the setting, and nothing is stored (issue 13, item 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

import function_app
from cli_runner import run
from db.schema import quarantine, usage_records
from events import encode, jsonl, v1_event
from metering.decode import signature
from metering.settings import settings_from_env

ROOT = Path(__file__).resolve().parents[2]
KEY = b"0123456789abcdef0123456789abcdef-not-a-real-key"
# Each configuration asks for signatures and gives no current key to check them with.
FAIL_OPEN = [
    ({"METERING_SIGNING_SECRET_PREVIOUS": KEY.decode()}, "METERING_SIGNING_SECRET_PREVIOUS"),
    ({"METERING_REQUIRE_SIGNATURE": "1"}, "METERING_REQUIRE_SIGNATURE"),
    ({"METERING_REQUIRE_SIGNATURE": "true", "METERING_SIGNING_SECRET_PREVIOUS": "old"}, "METERING_SIGNING_SECRET"),
]


def tampered_capture(tmp_path: Path) -> Path:
    """What an attacker sends: a signed event altered after signing, one signed with a guessed key."""
    good = signature.sign(encode(v1_event("signed-then-tampered")), KEY)
    capture = tmp_path / "hostile.jsonl"
    capture.write_bytes(jsonl([good.replace(b'"prompt_tokens":1200', b'"prompt_tokens":9200'),
                               signature.sign(encode(v1_event("wrong-key")), b"guess")]))
    return capture


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("METERING_SIGNING_SECRET", "METERING_SIGNING_SECRET_PREVIOUS", "METERING_REQUIRE_SIGNATURE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("environ, setting", FAIL_OPEN)
def test_settings_that_cannot_verify_are_an_error_naming_the_setting(environ, setting):
    with pytest.raises(ValueError, match=setting) as caught:
        settings_from_env(environ)
    assert "\n" not in str(caught.value) and KEY.decode() not in str(caught.value)


def test_configurations_that_can_verify_or_do_not_ask_still_work():
    assert not settings_from_env({}).signing
    assert not settings_from_env({"METERING_REQUIRE_SIGNATURE": "0"}).signing  # explicit "no signatures"
    both = settings_from_env({"METERING_SIGNING_SECRET": "new", "METERING_SIGNING_SECRET_PREVIOUS": "old",
                              "METERING_REQUIRE_SIGNATURE": "1"})
    assert (both.signing_secret, both.previous_signing_secret, both.require_signature) == (b"new", b"old", True)
    # a key from --signing-secret-file satisfies METERING_REQUIRE_SIGNATURE=1
    assert settings_from_env({"METERING_REQUIRE_SIGNATURE": "1"}, signing_secret=KEY).signing_secret == KEY


@pytest.mark.parametrize("environ, setting", FAIL_OPEN)
def test_replay_refuses_and_stores_nothing(db, tmp_path, capsys, clean_env, environ, setting):
    for name, value in environ.items():
        clean_env.setenv(name, value)
    code, out, err = run(capsys, "--db", db, "replay", "--progress", "off", str(tampered_capture(tmp_path)))
    assert code == 2 and out == ""
    assert err.startswith("metering: ") and setting in err and err.count("\n") == 1 and "Traceback" not in err
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar() == 0
    engine.dispose()


def test_quarantine_retry_refuses_too(db, tmp_path, capsys, clean_env):
    assert run(capsys, "--db", db, "replay", "--progress", "off", str(tampered_capture(tmp_path)))[0] == 0
    clean_env.setenv("METERING_SIGNING_SECRET_PREVIOUS", KEY.decode())
    code, out, err = run(capsys, "--db", db, "quarantine", "retry")
    assert code == 2 and "METERING_SIGNING_SECRET_PREVIOUS" in err and err.count("\n") == 1


def test_consume_refuses_with_one_line(db, capsys, clean_env):
    clean_env.setenv("METERING_REQUIRE_SIGNATURE", "1")
    code, _, err = run(capsys, "--db", db, "consume", "--eventhub", "aoai-usage", "--namespace",
                       "ns.servicebus.windows.net", "--checkpoint-url", "https://st.blob.core.windows.net/ckpt")
    assert code == 2 and err.startswith("metering: ") and "METERING_REQUIRE_SIGNATURE" in err and err.count("\n") == 1


@pytest.mark.parametrize("environ, setting", FAIL_OPEN[:2])
def test_the_function_refuses_to_start(environ, setting):
    """The host imports function_app to index its functions: with such settings the import fails
    with one line naming the setting, so no event is consumed or checkpointed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")} | environ
    result = subprocess.run([sys.executable, "-c", "import function_app"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("function_app.ConfigurationError: metering Function refuses to start") and setting in last


def test_a_running_function_host_refuses_the_batch_rather_than_storing_it(engine, clean_env):
    clean_env.setenv("METERING_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    clean_env.setenv("METERING_SIGNING_SECRET_PREVIOUS", KEY.decode())
    function_app.reset_ingestor()
    try:
        from azure.functions import EventHubEvent

        with pytest.raises(function_app.ConfigurationError, match="METERING_SIGNING_SECRET_PREVIOUS"):
            function_app.handle_events([EventHubEvent(body=orjson.dumps(v1_event("x")), sequence_number=1)])
    finally:
        function_app.reset_ingestor()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar() == 0
