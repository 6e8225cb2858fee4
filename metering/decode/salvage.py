"""Salvage of an event cut short: the complete top-level members of a JSON object's prefix.

APIM's ``log-to-eventhub`` cuts a message above 200 KB, so a long request or answer turns the event
into a prefix of a JSON object, which no JSON parser accepts. The policy writes the small header
fields first and the payloads (``request``, ``response``) last, so the header survives: this module
walks the prefix member by member (each member's value found by a bracket-and-string scan and parsed
with orjson), keeps every member that is complete and stops at the one that was cut.

A body is *truncated* only when it is a valid prefix of a JSON object that ends before the object
closes; a body with a syntax error before its end is malformed, not truncated (``scan`` returns
``None``). Pure functions over bytes, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

_WS = re.compile(rb"[ \t\r\n]*")
# A JSON string: complete (group 1 is the closing quote) or running to the end of the input.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:(")|\\?\Z)', re.DOTALL)
# Inside an array or object: a string (as above) or a bracket; everything else is skipped.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:(")|\\?\Z)|[\[\]{}]', re.DOTALL)
_SCALAR = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_SCALAR_PREFIX = re.compile(rb"-?[0-9.eE+-]*\Z|t(?:r(?:u)?)?\Z|f(?:a(?:l(?:s)?)?)?\Z|n(?:u(?:l)?)?\Z")


class _Malformed(Exception):
    """The bytes are not a prefix of valid JSON."""


@dataclass(slots=True)
class Salvage:
    """The complete top-level members of a cut JSON object, and where it was cut.

    ``cut_key``: the member whose value was cut (``None`` when the cut fell between members or
    inside a key); ``cut_offset``: where that value starts; ``offsets``: where each complete
    member's key starts (for redaction of the payloads that follow the header).
    """

    members: dict[str, Any] = field(default_factory=dict)
    cut_key: str | None = None
    cut_offset: int | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    length: int = 0


def _ws(body: bytes, pos: int) -> int:
    return _WS.match(body, pos).end()  # type: ignore[union-attr]


def _value_end(body: bytes, pos: int) -> int:
    """Where the value starting at ``pos`` ends, or -1 when the input ends inside it.

    A string, object or array is handed to orjson first, which reads it in C and says where it
    stopped: at the end of the data (the value was cut) or at what follows a complete value (its end,
    give or take whitespace, which the walk skips anyway). The cut member of a truncated event is a
    payload of up to 200 KB, which the scanning patterns below took 6 ns a byte to cross. Anything
    else orjson says (a syntax error, nesting deeper than it reads) goes to the scan, which decides."""
    first = body[pos : pos + 1]
    if first in (b'"', b"{", b"["):
        end = _parsed_end(body, pos)
        if end is not None:
            return end
    return _scanned_end(body, pos, first)


def _parsed_end(body: bytes, pos: int) -> int | None:
    """``_value_end`` by orjson, or ``None`` when it cannot tell. A small value is read from a window
    first: orjson's error carries the decoded text it was given, and the rest of a 200 KB body,
    decoded for each header member, would cost more than the scan."""
    for window in (_WINDOW, len(body)):
        try:
            orjson.loads(memoryview(body)[pos:pos + window])
        except orjson.JSONDecodeError as exc:
            if exc.msg == "unexpected content after document" and exc.doc:
                # orjson counts characters of the decoded text; the walk counts bytes.
                return pos + len(exc.doc[: exc.pos].encode("utf-8", "surrogatepass"))
            if pos + window < len(body):
                continue  # the window may have cut the value (or a character): read all of it
            return -1 if exc.msg == "unexpected end of data" else None
        return min(pos + window, len(body))  # the value, then only whitespace, to the end of what was read
    return None


_WINDOW = 4096


def _scanned_end(body: bytes, pos: int, first: bytes) -> int:
    """``_value_end`` by a bracket-and-string scan."""
    if first == b'"':
        match = _STRING.match(body, pos)
        assert match is not None  # the pattern always matches at a quote
        return match.end() if match.group(1) else -1
    if first in (b"{", b"["):
        stack = [first]
        position = pos + 1
        while True:
            match = _TOKEN.search(body, position)
            if match is None:
                return -1
            token = match.group()
            if token[:1] == b'"':
                if not match.group(1):
                    return -1
            elif token in (b"{", b"["):
                stack.append(token)
            else:
                opener = stack.pop()
                if (opener == b"{") != (token == b"}"):
                    raise _Malformed
                if not stack:
                    return match.end()
            position = match.end()
    match = _SCALAR.match(body, pos)
    if match is None or match.end() == len(body):
        # A scalar running to the end (a number may go on, "tru" is cut) is cut; anything else is bad.
        if _SCALAR_PREFIX.match(body, pos):
            return -1
        raise _Malformed
    return match.end()


def scan(body: bytes) -> Salvage | None:
    """The complete members of ``body`` when it is a JSON object cut short; else ``None``.

    ``None`` also for a complete object (parse it instead) and for malformed bytes.
    """
    return _walk(body, None)


def members_before(body: bytes, key: str) -> dict[str, Any] | None:
    """The top-level members of a JSON object that precede member ``key``, when each of them is strict
    JSON; ``None`` when something before ``key`` is malformed or ``key`` never comes. What follows ``key``
    is not read: an event whose ``request`` payload is JSON that JSON.NET accepts but JSON does not
    (comments, single quotes, trailing commas, ``NaN``) still has a readable header."""
    found = _walk(body, key)
    return found.members if found is not None and found.cut_key == key else None


def _walk(body: bytes, stop_at: str | None) -> Salvage | None:
    size = len(body)
    pos = _ws(body, 0)
    if body[pos : pos + 1] != b"{":
        return None
    salvage = Salvage(length=size)
    pos += 1
    try:
        while True:
            pos = _ws(body, pos)
            if pos >= size:
                return salvage
            if body[pos : pos + 1] == b"}" and not salvage.members:
                return None  # "{}" and whatever follows: complete, not cut
            key_start = pos
            match = _STRING.match(body, pos)
            if match is None:
                return None
            if not match.group(1):
                return salvage  # cut inside a key
            key = orjson.loads(match.group())
            if key == stop_at:
                salvage.cut_key, salvage.cut_offset = key, None
                return salvage
            pos = _ws(body, match.end())
            if pos >= size:
                salvage.cut_key, salvage.cut_offset = key, None
                return salvage
            if body[pos : pos + 1] != b":":
                return None
            pos = _ws(body, pos + 1)
            if pos >= size:
                salvage.cut_key, salvage.cut_offset = key, None
                return salvage
            end = _value_end(body, pos)
            if end < 0:
                salvage.cut_key, salvage.cut_offset = key, pos
                return salvage
            salvage.members[key] = orjson.loads(body[pos:end])
            salvage.offsets.setdefault(key, key_start)
            pos = _ws(body, end)
            if pos >= size:
                return salvage
            separator = body[pos : pos + 1]
            if separator == b",":
                pos += 1
                continue
            return None  # "}" closes a complete object (orjson would have parsed it) or garbage
    except (_Malformed, orjson.JSONDecodeError, IndexError):
        return None


def partial_string(body: bytes, offset: int) -> str | None:
    """The text of a JSON string value that starts at ``offset`` and was cut: what survived.

    A cut escape (``\\``, ``\\u00``, half a surrogate pair) or UTF-8 sequence at the end is dropped.
    """
    if body[offset : offset + 1] != b'"':
        return None
    content = body[offset + 1 :]
    for trim in range(13):
        candidate = content[: len(content) - trim] if trim else content
        backslashes = len(candidate) - len(candidate.rstrip(b"\\"))
        if backslashes % 2:
            candidate = candidate[:-1]
        try:
            value = orjson.loads(b'"' + candidate + b'"')
        except orjson.JSONDecodeError:
            continue
        return value if isinstance(value, str) else None
    return None


def valid_utf8_prefix(body: bytes) -> bool:
    """True when ``body`` is UTF-8, except perhaps for a multi-byte character cut at its very end."""
    try:
        body.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        return exc.reason == "unexpected end of data" and exc.end == len(body)
