"""Redaction of prompt and completion text from the bytes kept in ``quarantine``.

``usage_records`` never holds payload text (only ids, names, counts and money). ``quarantine`` keeps
the raw bytes of an event for audit and ``metering quarantine retry``; with redaction on
(``METERING_QUARANTINE_REDACT=1``) the payloads are removed first:

* bytes that parse as JSON: every member named ``request``, ``response`` (and the community
  format's ``Request``, ``ResponseString``, ``requestBody``, ``responseBody``, and APIM LLM logs'
  ``requestMessages``, ``responseMessages``; any case, at any depth)
  is replaced by the string ``"[redacted N bytes]"``, N being the size of the value removed. The
  result is still JSON, and the header still decodes (its usage, if reported, is kept);
* bytes that do not (an event cut at 200 KB, garbage): only the prefix before the first payload
  member is kept, at most ``MAX_UNSTRUCTURED_PREFIX`` bytes of it.

Pure functions over bytes.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from metering.decode import salvage

PAYLOAD_KEYS = frozenset({"request", "response", "responsestring", "requestbody", "responsebody",
                          "requestmessages", "responsemessages"})  # the last two: APIM LLM logs
MAX_UNSTRUCTURED_PREFIX = 4096
_PAYLOAD_KEY_IN_TEXT = re.compile(
    rb'"(?:request|response|responsestring|requestbody|responsebody|requestmessages|responsemessages|messages|prompt'
    rb'|input|choices|content)"\s*:',
    re.IGNORECASE,
)
UTF8_BOM = b"\xef\xbb\xbf"


def marker(size: int) -> str:
    return f"[redacted {size} bytes]"


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    return len(orjson.dumps(value))


def _redact_value(value: Any) -> tuple[Any, int]:
    """``value`` with payload members replaced; and how many were."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        count = 0
        for key, item in value.items():
            if key.lower() in PAYLOAD_KEYS and item is not None:
                out[key] = marker(_size(item))
                count += 1
            else:
                out[key], inner = _redact_value(item)
                count += inner
        return out, count
    if isinstance(value, list):
        items = []
        count = 0
        for item in value:
            redacted, inner = _redact_value(item)
            items.append(redacted)
            count += inner
        return items, count
    return value, 0


def redact_payloads(body: bytes) -> tuple[bytes, str]:
    """``body`` without prompt or completion text, and a note on what was removed ('' if nothing)."""
    text = body[len(UTF8_BOM) :] if body.startswith(UTF8_BOM) else body
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = _NOT_JSON
    if parsed is not _NOT_JSON:
        if isinstance(parsed, (dict, list)):
            redacted, count = _redact_value(parsed)
            if not count:
                return body, ""
            try:
                return orjson.dumps(redacted), f"payloads redacted ({count} member(s))"
            except TypeError:  # e.g. an integer beyond 64 bits: fall back to the prefix rule
                return _redact_unstructured(text, len(body))
        if isinstance(parsed, str) and parsed:
            return orjson.dumps(marker(_size(parsed))), "payloads redacted (a JSON string)"
        return body, ""
    return _redact_unstructured(text, len(body))


_NOT_JSON = object()


def _redact_unstructured(text: bytes, original_size: int) -> tuple[bytes, str]:
    """Bytes that are not JSON: keep the prefix before the first payload member (header fields)."""
    cut = len(text)
    found = salvage.scan(text) if text.lstrip()[:1] == b"{" else None
    if found is not None:
        starts = [offset for key, offset in found.offsets.items() if key.lower() in PAYLOAD_KEYS]
        if found.cut_key is not None and found.cut_key.lower() in PAYLOAD_KEYS:
            starts.append(_key_start(text, found))
        if starts:
            cut = min(starts)
    match = _PAYLOAD_KEY_IN_TEXT.search(text, 0, cut)
    if match is not None:
        cut = match.start()
    cut = min(cut, MAX_UNSTRUCTURED_PREFIX)
    if cut >= len(text):
        return text, ""
    prefix = text[:cut].rstrip(b", \t\r\n")
    return prefix, f"raw redacted to its first {len(prefix):,} of {original_size:,} bytes"


def _key_start(text: bytes, found: salvage.Salvage) -> int:
    """Where the member that was cut begins (its key), searching back from its value."""
    end = found.cut_offset if found.cut_offset is not None else len(text)
    start = text.rfind(b'"' + orjson.dumps(found.cut_key)[1:-1] + b'"', 0, end)
    return start if start >= 0 else end
