"""Verification of the optional event signature (docs/policies.md, "Signature").

The policy serialises the event without ``signature`` as compact UTF-8 JSON ``U``, computes
``S = base64(HMAC-SHA256(key, U))`` and sends ``U`` minus its final ``}`` followed by
``,"signature":"hmac-sha256=S"}``: the signature is always the last member. A verifier works on
the received bytes, never on re-serialised JSON: it removes that suffix, puts the ``}`` back, and
compares the HMAC of those bytes with ``S`` in constant time (``hmac.compare_digest``).

The key is the UTF-8 bytes of the APIM named value ``aoai-metering-hmac-key``. A leading UTF-8 BOM
and trailing whitespace (a line ending) around the received bytes are not part of what was signed.
Pure functions; the key never appears in a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Literal

SIGNATURE_PREFIX = "hmac-sha256="
_SUFFIX = re.compile(rb',"signature":"hmac-sha256=([A-Za-z0-9+/]{43}=)"\}[ \t\r\n]*\Z')
_ANY_SIGNATURE = re.compile(rb'"signature"\s*:')
UTF8_BOM = b"\xef\xbb\xbf"

Verdict = Literal["valid", "invalid", "missing"]


def sign(unsigned: bytes, key: bytes) -> bytes:
    """What the policy sends for the compact JSON ``unsigned`` (for tests and tools)."""
    if not unsigned.endswith(b"}"):
        raise ValueError("the unsigned event must be a JSON object ending with '}'")
    mac = base64.b64encode(hmac.new(key, unsigned, hashlib.sha256).digest())
    return unsigned[:-1] + b',"signature":"hmac-sha256=' + mac + b'"}'


def verify(body: bytes, keys: Iterable[bytes]) -> tuple[Verdict, str]:
    """Whether ``body`` carries a valid signature by any of ``keys``, and a reason for the record.

    ``missing``: no signature member at the end (unsigned, or cut by APIM's 200 KB limit);
    ``invalid``: a signature member that is malformed, not last, or does not match.
    """
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM) :]
    match = _SUFFIX.search(body)
    if match is None:
        if _ANY_SIGNATURE.search(body[-200:]):
            return "invalid", "the signature member is malformed or not the last member of the event"
        return "missing", "the event has no signature"
    try:
        claimed = base64.b64decode(match.group(1), validate=True)
    except (binascii.Error, ValueError):
        return "invalid", "the signature is not valid base64"
    signed = body[: match.start()] + b"}"
    matched = False
    for key in keys:
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        matched |= hmac.compare_digest(claimed, expected)  # no early exit: every key costs the same
    if matched:
        return "valid", ""
    return "invalid", "the signature does not match the event (wrong key, or the event was altered)"
