"""The SSE fast path (issues 20 and 28): for every input, ``rebuild_stream`` returns exactly the
RebuiltStream of the general path (every event through ``_Builder.feed``), on every real wire
shape (Azure's sorted keys, the seed captures' order, minimal chunks with an ``obfuscation`` pad,
api.openai.com's chunks, Responses API events), every real recording, every cut of them and
generated streams."""

from __future__ import annotations

import orjson
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
    minimal_stream,
    obfuscation_pad,
    openai_stream,
    prompt_filter_chunk,
    refusal_stream_payloads,
    responses_stream,
    responses_usage,
    role_choice,
    sample_words,
    seed_order_stream,
    sse,
    tool_call_stream_payloads,
    usage_object,
)
from metering.usage.sse import _payload, _rebuild_general, rebuild_stream, reported_stream_usage
from shared_folder import RECORDINGS, missing, needs

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
        seed_order_stream(words),
        minimal_stream(words),
        openai_stream(words),
        openai_stream(words, usage=usage_object(40, 30)),
        responses_stream(words, usage=responses_usage(12, 30), obfuscation=True),
        responses_stream(words, function_call=("call_1", "lookup", ['{"q":', '"x"}', "}"] * 4), obfuscation=True),
        responses_stream(words, status="incomplete", newline="\r\n", obfuscation=True),
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


LONG_SHAPES = {
    "azure-sorted": lambda words: chat_stream(words),
    "azure-sorted-usage": lambda words: chat_stream(words, usage=usage_object(40, len(words))),
    "seed-order": lambda words: seed_order_stream(words),
    "minimal-obfuscation": lambda words: minimal_stream(words),
    "openai": lambda words: openai_stream(words, usage=usage_object(40, len(words))),
    "responses": lambda words: responses_stream(words, usage=responses_usage(40, len(words)), obfuscation=True),
    "responses-sequence-first": lambda words: responses_stream(words, usage=responses_usage(40, len(words))),
    "refusal": lambda words: sse(refusal_stream_payloads(words)),
    "completions": lambda words: completions_stream(words),
}


@pytest.mark.parametrize("shape", LONG_SHAPES)
def test_a_long_stream_of_every_real_shape_is_not_parsed_event_by_event(monkeypatch, shape):
    """The point of the fast path: 1,000 text events of any shape cost a few parses, one mechanism
    for all of them, and the result is exact."""
    import metering.usage.sse as sse_module

    words = sample_words(1000)
    text = LONG_SHAPES[shape](words)
    calls = []
    real = sse_module._loads
    monkeypatch.setattr(sse_module, "_loads", lambda data: calls.append(1) or real(data))
    rebuilt = rebuild_stream(text)
    monkeypatch.setattr(sse_module, "_loads", real)
    assert len(calls) < 25
    assert "".join(words) in (rebuilt.text, rebuilt.choices[0].refusal)
    assert rebuilt == _rebuild_general(text)


def real_streams() -> list[str]:
    """Every streamed response of the provider recordings (the shared folder's recordings), as recorded and
    as the accuracy tests replay it (usage stripped)."""
    from recordings import load_recordings, strip_usage

    if missing(RECORDINGS):  # without the shared folder: the generated shapes only
        return []

    streams = [r.response for r in load_recordings() if r.response.lstrip().startswith(("data:", "event:"))]
    return streams + [strip_usage(text) for text in streams]


def cuts(text: str) -> list[int]:
    """Where to cut a stream: every character around each line end (where a cut changes how the
    events are framed), and every few characters elsewhere (inside members, literals and pads)."""
    places = set(range(0, len(text) + 1, 19))
    for at, char in enumerate(text):
        if char == "\n":
            places.update(range(max(0, at - 2), min(len(text), at + 3) + 1))
    return sorted(places)


@needs(RECORDINGS)
def test_every_real_recorded_stream_and_its_cuts_rebuild_as_the_general_path():
    """The 270 provider recordings: every streamed response, whole and cut all along, rebuilds
    exactly as the general path — real chunk shapes, not only ours."""
    streams = real_streams()
    assert len(streams) >= 80
    for text in streams:
        same(text)
        for cut in cuts(text):
            same(text[:cut])


@needs(RECORDINGS)
def test_real_recorded_streams_take_the_fast_path(monkeypatch):
    """The recordings' text events are matched by templates rather than parsed one by one."""
    import metering.usage.sse as sse_module

    calls = []
    real = sse_module._loads
    events = 0
    for text in real_streams():
        monkeypatch.setattr(sse_module, "_loads", lambda data: calls.append(1) or real(data))
        rebuilt = rebuild_stream(text)
        monkeypatch.setattr(sse_module, "_loads", real)
        events += rebuilt.events
    assert len(calls) < 0.9 * events


# --- every wire shape, generated: pads, sequence numbers, Responses API events ---------------------

ODD_PADS = ['"a\\"b"', '"ab\\\\"', '"a\\u0041"', '"a\x01"', '"\ud800"', "null", "5", '"x" ', '"x","obfuscation":"y"', '""']
ODD_SEQUENCES = ["007", "-1", "1.5", "1e3", "12345678901234567890", '"7"', "0", "01"]
PLACEHOLDER = "\u0007PAD\u0007"


def render(payload: dict, pad: str | None = None, sequence: str | None = None) -> str:
    """``payload`` as compact JSON, with a raw ``obfuscation`` / ``sequence_number`` literal put in."""
    text = dumps(payload)
    if pad is not None:
        text = text.replace(dumps(PLACEHOLDER), pad)
    if sequence is not None:
        text = text.replace('"sequence_number":987654', '"sequence_number":' + sequence)
    return text


@st.composite
def pad_literals(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from(ODD_PADS))
    return dumps(draw(st.sampled_from([obfuscation_pad(i) for i in range(8)]) | st.text(max_size=5)))


@st.composite
def shaped_chunks(draw: st.DrawFn) -> list[str]:
    """A chat stream's events in one of the real shapes (sorted keys, seed order, minimal chunks
    with a pad, api.openai.com's), with the odd event between the text chunks."""
    shape = draw(st.sampled_from(["sorted", "seed", "minimal", "openai"]))

    def chunk(delta: dict, index: int = 0, finish: str | None = None, usage: dict | None = None) -> str:
        if shape == "sorted":
            choice = {"content_filter_results": CONTENT_FILTER_SAFE, "delta": delta, "finish_reason": finish, "index": index, "logprobs": None}
            return dumps({**chat_chunk([choice]), **({"usage": usage} if usage else {})})
        if shape == "seed":
            choice = {"index": index, "finish_reason": finish, "delta": delta, "content_filter_results": CONTENT_FILTER_SAFE}
            return dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-35-turbo", "choices": [choice]})
        pad = draw(pad_literals())
        if shape == "minimal":
            choice = {"delta": delta, "index": index} | ({"finish_reason": finish} if finish else {})
            return render({"choices": [choice], "obfuscation": PLACEHOLDER} | ({"usage": usage} if usage else {}), pad)
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return render({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                       "service_tier": draw(st.sampled_from(["default", "priority", None])), "system_fingerprint": None,
                       "choices": [choice], "usage": usage, "obfuscation": PLACEHOLDER}, pad)

    events = [dumps(prompt_filter_chunk())] if shape != "openai" else []
    events.append(dumps({"choices": [{"delta": {"content": "", "role": "assistant"}, "index": 0}], "created": 1,
                         "id": "chatcmpl-1", "model": "gpt-4o-mini", "object": "chat.completion.chunk"}))
    for _ in range(draw(st.integers(0, 20))):
        roll = draw(st.integers(0, 9))
        if roll == 0:
            events.append(chunk({}, finish=draw(st.sampled_from(["stop", "length"]))))
        elif roll == 1:
            events.append(chunk({}, usage=usage_object(3, 2)) if shape != "seed" else dumps({**chat_chunk([]), "usage": usage_object(3, 2)}))
        elif roll == 2:
            events.append(chunk({"refusal": draw(st.text(max_size=4))}))
        elif roll == 3:
            events.append(chunk({"content": draw(st.text(max_size=4))}, index=1))
        else:
            events.append(chunk({"content": draw(st.text(max_size=6))}))
    return events


def damage(draw: st.DrawFn, text: str) -> str:
    edits = draw(st.lists(st.tuples(st.integers(0, 1 << 20), st.sampled_from(
        ["", "\n", "\n\n", "x", "}", "{", ",", '"', ":", " ", "\\", "7", "data: ", "event: message\n", ": keep-alive\n\n"])),
        max_size=3))
    for position, insert in edits:
        at = position % (len(text) + 1)
        text = text[:at] + insert + text[at:] if insert else text[:at]
    return text


@st.composite
def shaped_streams(draw: st.DrawFn) -> str:
    text = sse(draw(shaped_chunks()), newline=draw(st.sampled_from(["\n", "\r\n"])), done=draw(st.booleans()))
    return damage(draw, text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=shaped_streams())
def test_generated_streams_of_every_chat_shape_rebuild_exactly_as_the_general_path(text):
    same(text)


@st.composite
def responses_events(draw: st.DrawFn) -> str:
    """A Responses API stream: text, refusal and argument deltas (two key orders, pads, sequence
    numbers, odd ones too), ``.done`` events that replace the deltas, function-call items, the
    terminal event, errors; ``event:`` lines that match the type, differ from it or stand alone."""
    sequence = 0
    blocks = []
    for _ in range(draw(st.integers(0, 24))):
        roll = draw(st.integers(0, 11))
        output_index = draw(st.sampled_from([0, 0, 0, 1]))
        if roll <= 5:
            kind = draw(st.sampled_from(["response.output_text.delta"] * 4 + ["response.refusal.delta", "response.function_call_arguments.delta"]))
            delta = draw(st.text(max_size=5))
            if draw(st.booleans()):
                body = {"type": kind, "content_index": 0, "delta": delta, "item_id": "msg_1", "logprobs": [],
                        "obfuscation": PLACEHOLDER, "output_index": output_index, "sequence_number": 987654}
            else:
                body = {"type": kind, "sequence_number": 987654, "item_id": "msg_1", "output_index": output_index,
                        "content_index": 0, "delta": delta}
            odd = draw(st.integers(0, 6)) == 0
            data = render(body, draw(pad_literals()), draw(st.sampled_from(ODD_SEQUENCES)) if odd else str(sequence))
        elif roll == 6:
            kind = draw(st.sampled_from(["response.output_text.done", "response.refusal.done", "response.function_call_arguments.done"]))
            data = dumps({"type": kind, "sequence_number": sequence, "output_index": output_index, "content_index": 0,
                          "text": "done text", "refusal": "no", "arguments": "{}"})
        elif roll == 7:
            data = dumps({"type": "response.output_item.added", "sequence_number": sequence, "output_index": output_index,
                          "item": {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": ""}})
        elif roll == 8:
            kind = draw(st.sampled_from(["response.completed", "response.incomplete", "response.created"]))
            data = dumps({"type": kind, "sequence_number": sequence, "response": {
                "id": "resp_1", "model": "gpt-4.1-mini", "status": "completed", "service_tier": "default",
                "usage": responses_usage(5, 3) if kind != "response.created" else None}})
        elif roll == 9:
            data = dumps({"type": "error", "sequence_number": sequence, "message": "overloaded"})
        elif roll == 10:
            data = draw(st.sampled_from(["[DONE]", "[1]", '{"delta":"x"}', '{"type":7,"delta":"x"}']))
        else:
            data = dumps({"type": "response.output_text.delta", "delta": draw(st.text(max_size=3)), "response": {"id": "r"}})
        sequence += 1
        try:
            name = orjson.loads(data).get("type")
        except (orjson.JSONDecodeError, AttributeError):
            name = None
        line = draw(st.sampled_from(["same", "same", "same", "none", "other"]))
        if line == "same" and isinstance(name, str):
            blocks.append(f"event: {name}\ndata: {data}")
        elif line == "other":
            blocks.append(f"event: response.output_text.delta\ndata: {data}")
        else:
            blocks.append(f"data: {data}")
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = "".join((block + "\n\n").replace("\n", newline) for block in blocks)
    return damage(draw, text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=responses_events())
def test_generated_responses_streams_rebuild_exactly_as_the_general_path(text):
    same(text)


@pytest.mark.parametrize("pad", ODD_PADS)
@pytest.mark.parametrize("shape", ["minimal", "openai", "responses"])
def test_an_odd_pad_in_a_run_of_real_events_rebuilds_as_the_general_path(shape, pad):
    """A pad that is not a plain string (escaped quote, trailing backslash, control character, lone
    surrogate, not a string, two members) at the start, middle and end of a run, cut anywhere."""
    words = sample_words(12)
    text = {"minimal": minimal_stream, "openai": openai_stream,
            "responses": lambda w: responses_stream(w, obfuscation=True)}[shape](words)
    blocks = text.split("\n\n")
    padded = [i for i, block in enumerate(blocks) if '"obfuscation":"' in block and ('"content":' in block or '"delta":' in block)]
    for target in (padded[1], padded[len(padded) // 2], padded[-1]):
        block = blocks[target]
        start = block.index('"obfuscation":') + len('"obfuscation":')
        end = block.index('"', start + 1) + 1
        odd = blocks[:target] + [block[:start] + pad + block[end:]] + blocks[target + 1:]
        odd_text = "\n\n".join(odd)
        same(odd_text)
        for cut in range(0, len(odd_text), 11):
            same(odd_text[:cut])


@pytest.mark.parametrize("sequence", ODD_SEQUENCES)
def test_an_odd_sequence_number_in_a_run_of_responses_events_rebuilds_as_the_general_path(sequence):
    text = responses_stream(sample_words(12), obfuscation=True)
    blocks = text.split("\n\n")
    deltas = [i for i, block in enumerate(blocks) if "output_text.delta" in block]
    for target in (deltas[1], deltas[5], deltas[-1]):
        block = blocks[target]
        start = block.index('"sequence_number":') + len('"sequence_number":')
        end = block.index("}", start)
        odd_text = "\n\n".join(blocks[:target] + [block[:start] + sequence + block[end:]] + blocks[target + 1:])
        same(odd_text)


def test_deltas_after_a_done_event_that_replaced_them_rebuild_as_the_general_path():
    """A ``.done`` event replaces the deltas of its part; deltas after it are added to the new text."""
    first = responses_stream(sample_words(8), obfuscation=True).split("\n\n")
    deltas = [block for block in first if "output_text.delta" in block]
    done = next(block for block in first if "output_text.done" in block)
    text = "\n\n".join(first[:4] + deltas + [done] + deltas + [done.replace('"text":"', '"text":"again ')] + deltas) + "\n\n"
    same(text)
    assert rebuild_stream(text).text.startswith("again ")


# --- usage read from a stream's ends ---------------------------------------------------------------


def same_usage(text: str) -> bool:
    """``reported_stream_usage`` is the general rebuild's usage, model and tier whenever it answers."""
    carried = reported_stream_usage(text)
    if carried is None:
        return False
    rebuilt = _rebuild_general(text)
    assert (carried.usage, carried.model, carried.service_tier) == (rebuilt.usage, rebuilt.model, rebuilt.service_tier)
    return True


@pytest.mark.parametrize("shape", ["azure-sorted-usage", "openai", "responses", "responses-sequence-first"])
def test_streams_that_carry_their_usage_are_read_from_their_ends(shape):
    text = LONG_SHAPES[shape](sample_words(50))
    assert same_usage(text)
    assert same_usage(text.replace("\n", "\r\n"))


def test_usage_from_the_ends_equals_the_rebuild_on_every_shape_recording_and_cut():
    texts = [text for text in shapes() if text] + real_streams()
    answered = 0
    for text in texts:
        answered += same_usage(text)
        for cut in cuts(text):
            same_usage(text[:cut])
    assert answered >= (20 if real_streams() else 4)  # the recordings hold 16 streams with usage


@pytest.mark.parametrize("case", [
    "tier_in_the_middle", "tier_escaped", "usage_twice", "two_blank_lines", "no_model_in_the_first_blocks", "done_only",
])
def test_usage_from_the_ends_gives_up_or_agrees_on_odd_streams(case):
    words = sample_words(6)
    if case == "tier_in_the_middle":  # an Azure stream whose usage chunk has no tier, but a chunk has one
        text = chat_stream(words, usage=usage_object(4, 6)).replace('"model":"gpt-4o-2024-11-20"', '"model":"gpt-4o-2024-11-20","service_tier":"priority"', 2)
    elif case == "tier_escaped":
        text = chat_stream(words, usage=usage_object(4, 6)).replace('"object":"chat.completion.chunk"', '"\\u0073ervice_tier":"flex","object":"chat.completion.chunk"', 1)
    elif case == "usage_twice":
        text = openai_stream(words, usage=usage_object(4, 6)).replace("data: [DONE]", "data: " + dumps({**chat_chunk([]), "usage": usage_object(9, 9)}) + "\n\ndata: [DONE]")
    elif case == "two_blank_lines":
        text = openai_stream(words, usage=usage_object(4, 6)).replace("\n\ndata: [DONE]", "\n\n\ndata: [DONE]")
    elif case == "no_model_in_the_first_blocks":
        text = "".join(f"data: {dumps(prompt_filter_chunk())}\n\n" for _ in range(5)) + openai_stream(words, usage=usage_object(4, 6))
    else:
        text = "data: [DONE]\n\n"
    same_usage(text)
    rebuilt = _rebuild_general(text)
    carried = reported_stream_usage(text)
    assert carried is None or (carried.usage, carried.model, carried.service_tier) == (rebuilt.usage, rebuilt.model, rebuilt.service_tier)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=shaped_streams() | responses_events() | streams())
def test_usage_from_the_ends_of_generated_streams_equals_the_rebuild(text):
    same_usage(text)


def test_every_corpus_event_becomes_the_same_row_without_the_fast_paths(monkeypatch):
    """Rows identical to the general path: the benchmark corpus (every real stream shape, with and
    without usage, bad events) through the whole pipeline, once as it runs and once with every
    stream rebuilt event by event and no usage read from a stream's ends."""
    import sys
    from pathlib import Path

    import metering.usage.resolve as resolve_module
    from metering.model import RawEvent
    from metering.pipeline import process_batch
    from metering.price.mappings import parse_deployments_csv
    from metering.price.pricing import RateCard
    from metering.price.rate_card import parse_rates_csv

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "bench"))
    from corpus import CorpusBuilder

    card = RateCard(parse_rates_csv((root / "samples" / "rates.csv").read_text()),
                    parse_deployments_csv((root / "samples" / "deployments.csv").read_text()))
    raws = [RawEvent(body) for body in CorpusBuilder(seed=28, max_stream_chunks=60).events(600)]
    fast = process_batch(raws, card)
    monkeypatch.setattr(resolve_module, "rebuild_stream", _rebuild_general)
    monkeypatch.setattr(resolve_module, "reported_stream_usage", lambda text: None)
    general = process_batch(raws, card)
    assert fast.records == general.records
    assert [q.reason for q in fast.quarantined] == [q.reason for q in general.quarantined]
    assert len(fast.records) > 500
