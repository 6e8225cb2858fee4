"""The end of a member's value in a cut event is found by orjson first and by a bracket-and-string
scan when orjson cannot tell (metering/decode/salvage.py): both must find the same end, or say the
value was cut, for every value and every cut of it, whatever characters and nesting it holds."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.decode import salvage

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from(
    ['he said \\"hi\\"', "data: {\"x\":1}\n\n", "é世😀", "\\", "\u2028", "}", "]", "\"", "\\u00e9"])
values = st.recursive(
    texts | st.integers(-(2**63), 2**64 - 1) | st.booleans() | st.none() | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
containers = (st.lists(values, max_size=4) | st.dictionaries(texts, values, max_size=4) | texts)


def _ends_agree(body: bytes, pos: int) -> None:
    try:
        scanned = salvage._scanned_end(body, pos, body[pos:pos + 1])
    except salvage._Malformed:
        scanned = "malformed"
    try:
        found = salvage._value_end(body, pos)
    except salvage._Malformed:
        found = "malformed"
    if isinstance(found, int) and isinstance(scanned, int) and found >= 0 and scanned >= 0:
        # orjson stops at what follows the value, the scan right after it: the same once blanks are skipped
        assert salvage._ws(body, found) == salvage._ws(body, scanned)
    else:
        assert found == scanned


@settings(max_examples=300, deadline=None)
@given(value=containers, after=st.sampled_from([b"", b",", b" , ", b"\n}", b'  ,"next":1}', b"   "]),
       lead=st.sampled_from([b"", b'{"k":']), data=st.data())
def test_orjson_and_the_scan_find_the_same_end_at_every_cut(value, after, lead, data):
    body = lead + orjson.dumps(value) + after
    pos = len(lead)
    _ends_agree(body, pos)
    for cut in sorted(set(data.draw(st.lists(st.integers(pos + 1, len(body)), max_size=8)))):
        _ends_agree(body[:cut], pos)


@pytest.mark.parametrize("body", [
    b'"a\x01b", ', b'{"a":"x\\q"}', b'{"a":[}', b'[1,2}', b'{"a": tru', b'"\xff\xfe" ,', b'[' * 2000 + b']' * 2000 + b",",
    b'{"a":1}garbage', b'"caf\xc3\xa9 \xe4\xb8\x96"  ,"x"', b'["\\u12', b'{"a":"b"', b"[" * 3000,
])
def test_odd_and_malformed_values_end_where_the_scan_says(body):
    _ends_agree(body, 0)


@pytest.mark.parametrize("filler", ["a", "é", "世", "😀", '\\"', "\\u00e9", "\n"])
@pytest.mark.parametrize("shift", range(-6, 7))
def test_values_longer_than_orjsons_first_window_end_where_the_scan_says(filler, shift):
    """orjson first reads a 4 KiB window: a value crossing it (a character or an escape cut by the
    window) is read again whole, never mistaken for a cut or a malformed one."""
    head = "x" * (salvage._WINDOW - 2 + shift)
    for value in (head + filler * 3, [head, filler * 3], {"k": head + filler}):
        body = b'{"k":' + orjson.dumps(value) + b', "next": 1}'
        _ends_agree(body, 5)
        for cut in range(len(body) - 20, len(body)):
            _ends_agree(body[:cut], 5)
