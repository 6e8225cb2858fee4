"""The SSE fast path (issue 20): for every input, ``rebuild_stream`` returns exactly the
RebuiltStream of the general path (every event through ``_Builder.feed``)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azure_shapes import (
    CONTENT_FILTER_SAFE,
    annotation_chunk,
    chat_chunk,
    chat_stream,
    completions_stream,
    content_choice,
    dumps,
    finish_choice,
    function_call_stream_payloads,
    prompt_filter_chunk,
    refusal_stream_payloads,
    responses_stream,
    responses_usage,
    role_choice,
    sample_words,
    sse,
    tool_call_stream_payloads,
    usage_object,
)
from metering.usage.sse import _payload, _rebuild_general, rebuild_stream
from shared_folder import RECORDINGS, needs

UNDETECTED = {"filtered": False, "detected": False}
PROTECTED = dict(sorted({**CONTENT_FILTER_SAFE, "protected_material_code": UNDETECTED, "protected_material_text": UNDETECTED}.items()))  # Azure sorts keys
FILTERED = {**CONTENT_FILTER_SAFE, "violence": {"filtered": True, "severity": "medium"}}


def same(text: str) -> None:
    assert rebuild_stream(text) == _rebuild_general(text)


def shapes() -> list[str]:
    """Every stream shape the SSE tests use: Azure chat (with and without usage, several choices),
    tool calls, function calls, refusals, annotations, legacy completions, the Responses API."""
    words = sample_words(30)
    return [
        chat_stream(words),
        chat_stream(words, usage=usage_object(40, 30)),
        chat_stream(words, newline="\r\n"),
        chat_stream([["a", "b", "c"], ["x", "y"]]),
        sse(tool_call_stream_payloads([("call_1", "get_weather", ['{"city":', '"Oslo"}']), ("call_2", "get_time", ["{}"])])),
        sse(function_call_stream_payloads("lookup", ['{"q":', '"x"}'])),
        sse(refusal_stream_payloads(["I can't", " help with that."])),
        sse([prompt_filter_chunk(), chat_chunk([role_choice()]), chat_chunk([content_choice("Hi")]),
             annotation_chunk(0, 2), chat_chunk([finish_choice("content_filter")])]),
        completions_stream(["Once", " upon"]),
        responses_stream(["Hello", " world"], usage=responses_usage(12, 2)),
        "",
        "data: [DONE]\n\n",
    ]


@pytest.mark.parametrize("index", range(len(shapes())))
def test_every_known_shape_and_every_cut_of_it_rebuilds_as_the_general_path(index):
    text = shapes()[index]
    same(text)
    for cut in range(0, len(text), max(1, len(text) // 150)):
        same(text[:cut])


def test_azure_content_chunks_take_the_fast_path():
    """The filter results of Azure's content chunks are dropped before parsing (what makes the path fast)."""
    for results in ({}, CONTENT_FILTER_SAFE, PROTECTED):
        block = "data: " + dumps(chat_chunk([{**content_choice("Hi"), "content_filter_results": results}]))
        assert _payload(block).startswith('{"choices":[{"delta":{"content":"Hi"}')
    filtered = "data: " + dumps(chat_chunk([{**content_choice("Hi"), "content_filter_results": FILTERED}]))
    assert _payload(filtered) == filtered[6:]  # an unusual value is parsed as it is


HEAD = 'data: {"choices":[{"content_filter_results":{},"delta":'


@pytest.mark.parametrize("payload", [
    HEAD + '{"content":"x"}}]}',            # missing the choice's closing brace: bad in both
    HEAD + '}]}',                           # nothing after "delta": bad in both
    HEAD + '{"content":"x"},"content_filter_results":{"hate":1},"index":0}],"id":"a","model":"m","object":"chat.completion.chunk"}',
    HEAD + '{"content":"x"},"index":"1"}],"id":"a","model":"m","object":"chat.completion.chunk"}',
    HEAD + '{"content":7},"index":0}],"id":"a","model":"m","object":"chat.completion.chunk"}',
    HEAD + '{"content":"x","role":"assistant"},"finish_reason":"stop"}],"id":"a","model":"m","object":"chat.completion.chunk"}',
    HEAD + '{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}',
    'data: {"choices":[{"content_filter_results":{},"delta" :{"content":"x"}}]}',
    'data: {"choices":[{"content_filter_results":{} ,"delta":{"content":"x"}}]}',
    'data: [1, 2]',
    'data: "text"',
])
def test_odd_payloads_after_a_real_stream_rebuild_as_the_general_path(payload):
    head = chat_stream(sample_words(5)).removesuffix("data: [DONE]\n\n")
    for text in (head + payload + "\n\n", head + payload + "\n\ndata: [DONE]\n\n", payload + "\n\n" + head):
        same(text)


@st.composite
def content_chunks(draw: st.DrawFn) -> dict:
    choice = content_choice(draw(st.text(max_size=8)), index=draw(st.sampled_from([0, 0, 0, 1])))
    choice["content_filter_results"] = draw(st.sampled_from([{}, CONTENT_FILTER_SAFE, PROTECTED, FILTERED]))
    if draw(st.booleans()):
        choice["finish_reason"] = draw(st.sampled_from(["stop", "length", None, 3]))
    return chat_chunk([choice], model=draw(st.sampled_from(["gpt-4o-2024-11-20", "", None])))


@st.composite
def payloads(draw: st.DrawFn) -> list:
    """A chat stream's chunks in Azure's shape, with the odd chunk every kind of stream may carry."""
    chunks: list = [prompt_filter_chunk()] if draw(st.booleans()) else []
    if draw(st.booleans()):
        chunks.append(chat_chunk([role_choice()]))
    odd = st.sampled_from([
        chat_chunk([finish_choice()]),
        annotation_chunk(0, 3),
        chat_chunk([content_choice("a", 0), content_choice("b", 1)]),
        {**chat_chunk([]), "usage": usage_object(10, 5)},
        {**chat_chunk([content_choice("u")]), "usage": usage_object(3, 1)},
        {**chat_chunk([content_choice("u")]), "usage": None},
        chat_chunk([{"index": 0, "delta": {"refusal": "no"}, "finish_reason": None}]),
        chat_chunk([{"index": 0, "delta": {"content": None}, "finish_reason": None}]),
        chat_chunk([{"index": 0, "text": "legacy", "finish_reason": None}]),
        {"type": "response.output_text.delta", "delta": "r", "output_index": 0, "content_index": 0},
        {"error": {"message": "overloaded"}},
        [1, 2],
        "[DONE]",
    ])
    for _ in range(draw(st.integers(0, 25))):
        chunks.append(draw(odd) if draw(st.integers(0, 4)) == 0 else draw(content_chunks()))
    return chunks


@st.composite
def streams(draw: st.DrawFn) -> str:
    parts = []
    for chunk in draw(payloads()):
        parts.append(chunk if chunk == "[DONE]" else dumps(chunk))
    text = sse(parts, newline=draw(st.sampled_from(["\n", "\r\n"])), done=draw(st.booleans()))
    edits = draw(st.lists(st.tuples(st.integers(0, 1 << 20), st.sampled_from(
        ["", "\n", "\n\n", "x", "}", "{", ",", '"', ":", " ", "data: ", "event: message\n", ": keep-alive\n\n"])),
        max_size=3))
    for position, insert in edits:  # damage: cut, doubled blank lines, stray characters, comments
        at = position % (len(text) + 1)
        text = text[:at] + insert + text[at:] if insert else text[:at]
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=streams())
def test_generated_streams_rebuild_exactly_as_the_general_path(text):
    same(text)


TOKENS = list('data: {}[]",:\n\r01truefalsnuchoiceslt_ré数\\') + [HEAD, "\n\ndata: ", "[DONE]", "\\\""]


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=120))
def test_arbitrary_text_rebuilds_exactly_as_the_general_path(tokens):
    same("".join(tokens))


CHUNK = dumps(chat_chunk([content_choice("x")]))


@pytest.mark.parametrize("literal", [
    '"a","b"',                      # two values where the content should be
    '"a" ,"content":"b"',           # a second content key after the first
    '"a"1',                         # a string and a number
    '"tr"',                         # fine on its own; next to a literal true below
    '"true"',                       # content that says true
    '"\\u00e9\\"quoted\\" \\\\"',   # escapes of every kind
    '"a\\',                          # an escape cut short
    ' "spaced" ',                   # JSON whitespace around the string
])
def test_chunks_that_differ_only_in_their_content_text_rebuild_as_the_general_path(literal):
    """The fast path reuses a parsed chunk's text after its content for the following chunks."""
    head = chat_stream(sample_words(3)).removesuffix("data: [DONE]\n\n")
    chunks = [CHUNK, CHUNK.replace('"content":"x"', '"content":"y"'), CHUNK.replace('"content":"x"', '"content":' + literal)]
    for order in (chunks, chunks[::-1], chunks + chunks):
        same(head + "".join(f"data: {c}\n\n" for c in order) + "data: [DONE]\n\n")


def test_a_later_duplicate_delta_that_replaces_the_content_is_honoured():
    """A chunk whose choice repeats "delta" after the content: the last one wins, as in the general path."""
    head = chat_stream(sample_words(3)).removesuffix("data: [DONE]\n\n")
    doubled = CHUNK.replace('"index":0', '"index":0,"delta":{"content":"last"}')
    events = ["data: " + doubled.replace('"content":"x"', '"content":"' + word + '"') for word in "abcdef"]
    text = head + "\n\n".join(events) + "\n\ndata: [DONE]\n\n"
    same(text)
    assert rebuild_stream(text).text.endswith("last" * 6)


def test_content_texts_that_only_line_up_when_decoded_together_rebuild_as_the_general_path():
    """Three bad chunks whose content texts, joined, would read as three strings: each is bad alone."""
    head = chat_stream(sample_words(3)).removesuffix("data: [DONE]\n\n")
    literals = ['"x"', '"x",true,"y"', '"p', 'q"']
    events = ["data: " + CHUNK.replace('"content":"x"', '"content":' + literal) for literal in literals]
    text = head + "\n\n".join(events) + "\n\ndata: [DONE]\n\n"
    same(text)
    assert rebuild_stream(text).bad_events == 3


RUN_LITERALS = ['"plain"', '"say \\"hi\\""', '"ends in a backslash \\\\"', '"\\\\"', '"\\u00e9\\n"', '"数"',
                '"\\"},\\"finish_reason\\":null"', '""', '"a\\', '"two"  ', '"x"}', '7']


@pytest.mark.parametrize("literal", RUN_LITERALS)
def test_a_run_of_chunks_equal_but_for_their_content_rebuilds_as_the_general_path(literal):
    """Runs of such chunks are read by position without parsing (``_next_literals``): every kind of
    literal, at the start, middle and end of a run, with the stream cut anywhere in the run."""
    head = chat_stream(sample_words(3)).removesuffix("data: [DONE]\n\n")
    chunk = CONTENT_CHUNK_AZURE
    run = [chunk.replace('"content":"x"', '"content":"w%d"' % i) for i in range(6)]
    odd = chunk.replace('"content":"x"', '"content":' + literal)
    for events in (run[:3] + [odd] + run[3:], [odd] + run, run + [odd]):
        text = head + "".join(f"data: {c}\n\n" for c in events) + "data: [DONE]\n\n"
        same(text)
        for cut in range(len(head), len(text), 7):
            same(text[:cut])


CONTENT_CHUNK_AZURE = dumps(chat_chunk([{**content_choice("x"), "content_filter_results": CONTENT_FILTER_SAFE}]))


def test_a_long_azure_stream_is_not_parsed_chunk_by_chunk(monkeypatch):
    """The point of the fast path: 1,000 content chunks cost a few parses, and the text is exact."""
    import metering.usage.sse as sse_module

    words = sample_words(1000)
    text = chat_stream(words)
    calls = []
    real = sse_module._loads
    monkeypatch.setattr(sse_module, "_loads", lambda data: calls.append(1) or real(data))
    rebuilt = rebuild_stream(text)
    assert len(calls) < 20
    assert rebuilt.text == "".join(words)
    assert rebuilt == _rebuild_general(text)


@needs(RECORDINGS)
def test_every_real_recorded_stream_rebuilds_as_the_general_path():
    """The 270 provider recordings (the shared folder's): every streamed response, whole and cut
    at a dozen places, rebuilds exactly as the general path — real chunk shapes, not only ours."""
    from recordings import load_recordings

    streams = [r.response for r in load_recordings() if r.response.lstrip().startswith(("data:", "event:"))]
    assert len(streams) >= 40
    for text in streams:
        same(text)
        for cut in range(0, len(text), max(1, len(text) // 12)):
            same(text[:cut])
