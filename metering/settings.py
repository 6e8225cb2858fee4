"""Settings from the environment (the Function's application settings, ``metering consume``'s and the
CLI's environment) → ``PipelineSettings`` and the rate card's cache time. Light: no SQL, no SDKs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

from metering.model import DEFAULT_MAX_EVENT_AGE_DAYS, DEFAULT_MAX_EVENT_SKEW_MINUTES, PipelineSettings

# Settings read by ``settings_from_env`` (the Function's application settings, the CLI's environment).
SIGNING_SECRET_SETTING = "METERING_SIGNING_SECRET"
PREVIOUS_SIGNING_SECRET_SETTING = "METERING_SIGNING_SECRET_PREVIOUS"
REQUIRE_SIGNATURE_SETTING = "METERING_REQUIRE_SIGNATURE"
REDACT_SETTING = "METERING_QUARANTINE_REDACT"
RETENTION_SETTING = "METERING_QUARANTINE_RETENTION_DAYS"
RATE_CARD_TTL_SETTING = "METERING_RATE_CARD_TTL_SECONDS"
TRUST_LLM_LOGS_SETTING = "METERING_TRUST_LLM_LOGS"
MAX_EVENT_AGE_SETTING = "METERING_MAX_EVENT_AGE_DAYS"
MAX_EVENT_SKEW_SETTING = "METERING_MAX_EVENT_FUTURE_MINUTES"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be 1 or 0 (true/false), got {value!r:.20}")


def settings_from_env(environ: Mapping[str, str] | None = None, *, signing_secret: bytes | None = None) -> PipelineSettings:
    """``PipelineSettings`` from ``METERING_SIGNING_SECRET`` (the key as text; its UTF-8 bytes are the
    HMAC key, as in APIM), ``METERING_SIGNING_SECRET_PREVIOUS`` (accepted too, while rotating),
    ``METERING_REQUIRE_SIGNATURE`` (default 1 when a secret is set: unsigned events are quarantined;
    0 accepts unsigned events, e.g. while the gateway's policies are rolled out),
    ``METERING_TRUST_LLM_LOGS`` (default 0: with signatures on, unsigned LLM-log records change no
    row), ``METERING_MAX_EVENT_AGE_DAYS`` / ``METERING_MAX_EVENT_FUTURE_MINUTES`` (the accepted
    event-time window) and ``METERING_QUARANTINE_REDACT`` (default 0). ``signing_secret`` overrides
    the environment's.

    A configuration that asks for signatures but cannot verify them fails open no more: a previous
    key without a current one, or ``METERING_REQUIRE_SIGNATURE=1`` without a key, is a
    ``ValueError`` naming the setting (every entry point refuses to start with it)."""
    environ = os.environ if environ is None else environ
    secret = signing_secret or environ.get(SIGNING_SECRET_SETTING, "").encode("utf-8") or None
    previous = environ.get(PREVIOUS_SIGNING_SECRET_SETTING, "").encode("utf-8") or None
    if previous and not secret:
        raise ValueError(f"{PREVIOUS_SIGNING_SECRET_SETTING} is set but {SIGNING_SECRET_SETTING} is not: "
                         f"set the current key too (signatures cannot be checked with only the previous one)")
    if not secret and environ.get(REQUIRE_SIGNATURE_SETTING, "").strip() and _flag(environ, REQUIRE_SIGNATURE_SETTING, False):
        raise ValueError(f"{REQUIRE_SIGNATURE_SETTING}=1 but {SIGNING_SECRET_SETTING} is not set: "
                         f"give the signing key (or --signing-secret-file), or unset {REQUIRE_SIGNATURE_SETTING}")
    return PipelineSettings(
        signing_secret=secret,
        previous_signing_secret=previous,
        require_signature=_flag(environ, REQUIRE_SIGNATURE_SETTING, True),
        redact_payloads=_flag(environ, REDACT_SETTING, False),
        trust_llm_logs=_flag(environ, TRUST_LLM_LOGS_SETTING, False),
        max_event_age=timedelta(days=_number(environ, MAX_EVENT_AGE_SETTING, DEFAULT_MAX_EVENT_AGE_DAYS, "days")),
        max_event_skew=timedelta(minutes=_number(environ, MAX_EVENT_SKEW_SETTING, DEFAULT_MAX_EVENT_SKEW_MINUTES, "minutes")),
    )


def _number(environ: Mapping[str, str], name: str, default: int, unit: str) -> int:
    """A whole, non-negative number setting (bounded so that a window never leaves ``datetime``'s range)."""
    value = environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) > 3_000_000:
        raise ValueError(f"{name} must be a whole number of {unit} (0 to 3,000,000), got {value!r:.20}")
    return int(value)


def rate_card_ttl_from_env(environ: Mapping[str, str] | None = None) -> float:
    """``METERING_RATE_CARD_TTL_SECONDS`` (default 60): how long the Function and ``metering consume``
    keep a loaded rate card; a value that is not a number of seconds is a ``ValueError`` naming it."""
    environ = os.environ if environ is None else environ
    value = environ.get(RATE_CARD_TTL_SETTING, "").strip()
    if not value:
        return 60.0
    try:
        ttl = float(value)
    except ValueError:
        ttl = -1.0
    if not 0 <= ttl < float("inf"):
        raise ValueError(f"{RATE_CARD_TTL_SETTING} must be a number of seconds (0 or more), got {value!r:.20}")
    return ttl
