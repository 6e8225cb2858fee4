"""SSE stream rebuild: Azure's real chunk shapes, line endings, framing quirks and cut-off captures."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azure_shapes import (
    annotation_chunk,
    chat_body,
    chat_chunk,
    chat_stream,
    chat_stream_payloads,
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
    sse,
    tool_call_stream_payloads,
    usage_object,
)
from metering.usage.sse import FunctionCall, ToolCall, rebuild_body, rebuild_stream

NEWLINES = ["\n", "\r\n", "\r"]


@pytest.mark.parametrize("newline", NEWLINES, ids=["LF", "CRLF", "CR"])
def test_azure_chat_stream_rebuilds_text_model_id_and_finish(newline):
    text = chat_stream(["有", "一", "天", "，", " the end."], model="gpt-35-turbo", newline=newline)
    stream = rebuild_stream(text)
    assert stream.kind == "chat.completions"
    assert stream.text == "有一天， the end."
    assert stream.model == "gpt-35-turbo"  # the first chunk's empty model is skipped
    assert stream.id and stream.id.startswith("chatcmpl-")
    assert [c.finish_reason for c in stream.choices] == ["stop"]
    assert stream.complete and not stream.truncated
    assert stream.usage is None
    assert stream.bad_events == 0 and stream.notes == ()


def test_prompt_filter_chunk_alone_yields_no_choices():
    stream = rebuild_stream(sse([prompt_filter_chunk()]))
    assert stream.choices == () and stream.model is None and stream.id is None
    assert stream.complete


def test_include_usage_chunk_is_kept_and_null_usage_fields_ignored():
    usage = usage_object(19, 10, cached=0)
    stream = rebuild_stream(chat_stream(["Hi", " there"], usage=usage))
    assert stream.usage == usage
    assert stream.text == "Hi there"
    assert stream.complete


def test_several_choices_are_rebuilt_by_index():
    stream = rebuild_stream(chat_stream([["Red", " apple"], ["Green", " pear", "s"], ["Blue"]]))
    assert [(c.index, c.text, c.finish_reason) for c in stream.choices] == [
        (0, "Red apple", "stop"),
        (1, "Green pears", "stop"),
        (2, "Blue", "stop"),
    ]


def test_parallel_tool_calls_accumulate_by_tool_index():
    payloads = tool_call_stream_payloads(
        [
            ("call_7XQ2m3", "get_current_weather", ['{"loc', 'ation": "Par', 'is, FR"}']),
            ("call_9Lk4p1", "get_current_time", ['{"timezone":', ' "Europe/Paris"}']),
        ]
    )
    stream = rebuild_stream(sse(payloads))
    (choice,) = stream.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.text == ""
    assert choice.tool_calls == (
        ToolCall(0, "call_7XQ2m3", "function", "get_current_weather", '{"location": "Paris, FR"}'),
        ToolCall(1, "call_9Lk4p1", "function", "get_current_time", '{"timezone": "Europe/Paris"}'),
    )


def test_tool_call_deltas_interleaved_across_calls():
    """Deltas for different tool indexes may interleave; each joins by its own index."""
    def delta(i, args, **extra):
        tc = {"function": {"arguments": args}, "index": i, **extra}
        return chat_chunk([{"content_filter_results": {}, "delta": {"tool_calls": [tc]}, "finish_reason": None, "index": 0}])

    payloads = [
        prompt_filter_chunk(),
        delta(0, "", id="call_a", type="function") | {},
        delta(1, "", id="call_b", type="function"),
        delta(0, '{"a":'),
        delta(1, '{"b":'),
        delta(0, "1}"),
        delta(1, "2}"),
    ]
    payloads[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] = "fa"
    payloads[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] = "fb"
    stream = rebuild_stream(sse(payloads))
    calls = stream.choices[0].tool_calls
    assert [(c.id, c.name, c.arguments) for c in calls] == [("call_a", "fa", '{"a":1}'), ("call_b", "fb", '{"b":2}')]


def test_legacy_function_call_deltas():
    stream = rebuild_stream(sse(function_call_stream_payloads("get_stock_price", ['{"sym', 'bol": "MSFT"}'])))
    (choice,) = stream.choices
    assert choice.function_call == FunctionCall("get_stock_price", '{"symbol": "MSFT"}')
    assert choice.finish_reason == "function_call"


def test_refusal_deltas():
    stream = rebuild_stream(sse(refusal_stream_payloads(["I'm sorry,", " I can't", " help with that."])))
    (choice,) = stream.choices
    assert choice.refusal == "I'm sorry, I can't help with that."
    assert choice.text == ""


def test_content_filter_annotation_chunks_do_not_disturb_text_model_or_id():
    payloads = chat_stream_payloads(["Hello", " world"], model="gpt-4o-2024-08-06")
    payloads.insert(4, annotation_chunk(0, 5))
    payloads.append(annotation_chunk(5, 11))
    stream = rebuild_stream(sse(payloads))
    assert stream.text == "Hello world"
    assert stream.model == "gpt-4o-2024-08-06"
    assert stream.id.startswith("chatcmpl-")


def test_content_filter_finish_reason_is_kept():
    payloads = chat_stream_payloads(["Partial answer"], finish_reason="content_filter")
    stream = rebuild_stream(sse(payloads))
    assert stream.choices[0].finish_reason == "content_filter"
    assert stream.text == "Partial answer"


def test_multi_line_data_is_joined_with_newlines():
    chunk = chat_chunk([content_choice("multi\nline ✓")])
    pretty = orjson.dumps(chunk, option=orjson.OPT_INDENT_2).decode()
    event = "\n".join("data: " + line for line in pretty.split("\n"))
    text = f"data: {dumps(prompt_filter_chunk())}\n\n{event}\n\ndata: [DONE]\n\n"
    stream = rebuild_stream(text)
    assert stream.text == "multi\nline ✓"
    assert stream.complete and stream.bad_events == 0


def test_comments_keep_alives_event_id_and_retry_fields_are_ignored():
    payloads = chat_stream_payloads(["a", "b", "c"])
    parts = [": keep-alive", "retry: 3000"]
    for n, p in enumerate(payloads):
        parts.append(f"id: {n}\nevent: message\ndata: {dumps(p)}")
        parts.append(":")
    parts.append(": ping\ndata: [DONE]")
    stream = rebuild_stream("\n\n".join(parts) + "\n\n")
    assert stream.text == "abc"
    assert stream.complete


def test_data_field_without_space_and_extra_blank_lines():
    body = "\n\n\n".join("data:" + dumps(p) for p in chat_stream_payloads(["x", "y"])) + "\n\n\n\ndata:[DONE]"
    stream = rebuild_stream("\n" + body)
    assert stream.text == "xy"
    assert stream.complete


def test_line_separators_inside_json_strings_do_not_split_events():
    tricky = "a\u2028b\u2029c\x85d\x0be\x1cf"
    stream = rebuild_stream(chat_stream([tricky, tricky]))
    assert stream.text == tricky * 2
    assert stream.bad_events == 0


def test_byte_order_mark_is_skipped():
    stream = rebuild_stream("\ufeff" + chat_stream(["ok"]))
    assert stream.text == "ok"


def test_truncated_capture_ignores_partial_last_event():
    full = chat_stream(["The", " quick", " brown", " fox"])
    cut = full[: full.index('"delta":{"content":" fox"}') + 12]  # inside the last content chunk
    stream = rebuild_stream(cut)
    assert stream.text == "The quick brown"
    assert stream.truncated and not stream.complete
    assert stream.bad_events == 1
    assert "stream_truncated" in stream.notes


def test_capture_cut_at_event_boundary_is_incomplete_not_truncated():
    text = sse(chat_stream_payloads(["one", " two"])[:-1], done=False)  # no finish chunk, no [DONE]
    stream = rebuild_stream(text)
    assert stream.text == "one two"
    assert not stream.complete and not stream.truncated
    assert stream.notes == ("stream_incomplete",)


def test_capture_cut_inside_done_marker():
    text = chat_stream(["fin"])
    stream = rebuild_stream(text[: text.rindex("[DONE]") + 3])
    assert stream.text == "fin" and stream.truncated and not stream.complete


def test_bad_event_in_the_middle_is_skipped_without_marking_truncation():
    payloads = [dumps(p) for p in chat_stream_payloads(["keep", " going"])]
    payloads.insert(3, '{"choices": [ this is not json')
    stream = rebuild_stream(sse(payloads))
    assert stream.text == "keep going"
    assert stream.bad_events == 1 and not stream.truncated and stream.complete


def test_error_event_mid_stream_is_noted():
    payloads = chat_stream_payloads(["so far"])[:-1]
    payloads.append({"error": {"code": "server_error", "message": "The server had an error"}})
    stream = rebuild_stream(sse(payloads, done=False))
    assert stream.text == "so far"
    assert "stream_error_event" in stream.notes


@pytest.mark.parametrize("garbage", ["", "\n\n", ":::", "data:", "data: \n\n", "event: x\n\n", "data: 42\n\n", "data: [1,2]\n\n", "\r\r\r", "id: 1"])
def test_odd_input_never_raises(garbage):
    stream = rebuild_stream(garbage)
    assert stream.text == ""


def test_legacy_completions_stream():
    stream = rebuild_stream(completions_stream(["\n", "\n", "这", "是", "一个", "故事", "。"], model="text-davinci-003"))
    assert stream.kind == "completions"
    assert stream.text == "\n\n这是一个故事。"
    assert stream.model == "text-davinci-003"
    assert stream.choices[0].finish_reason == "length"
    assert stream.usage is None  # "usage": null on every chunk


@pytest.mark.parametrize("newline", NEWLINES, ids=["LF", "CRLF", "CR"])
def test_responses_api_stream_with_event_lines(newline):
    usage = responses_usage(36, 87)
    stream = rebuild_stream(responses_stream(["Azure", " meters", " tokens", "."], usage=usage, newline=newline))
    assert stream.kind == "responses"
    assert stream.text == "Azure meters tokens."
    assert stream.model == "gpt-4.1-mini-2025-04-14"
    assert stream.id.startswith("resp_")
    assert stream.usage == usage
    assert stream.complete and stream.choices[0].finish_reason == "completed"


def test_responses_api_function_call_and_done_text_wins_over_lost_deltas():
    text = responses_stream(["Checking", " weather"], function_call=("call_abc", "get_weather", ['{"city"', ': "Oslo"}']))
    lines = text.split("\n\n")
    lost = [b for b in lines if '"delta":" weather"' not in b]  # a delta went missing in capture
    stream = rebuild_stream("\n\n".join(lost))
    (choice,) = stream.choices
    assert choice.text == "Checking weather"  # response.output_text.done carries the whole text
    assert choice.tool_calls == (ToolCall(1, "call_abc", "function", "get_weather", '{"city": "Oslo"}'),)


def test_responses_api_stream_without_completed_is_incomplete():
    stream = rebuild_stream(responses_stream(["partial"], completed=False))
    assert stream.text == "partial"
    assert not stream.complete and stream.usage is None


def test_rebuild_body_chat_and_responses_and_completions():
    chat = rebuild_body(orjson.loads(chat_body("Hello from a body", model="gpt-4o-mini-2024-07-18")))
    assert (chat.kind, chat.text, chat.model, chat.complete) == ("chat.completions", "Hello from a body", "gpt-4o-mini-2024-07-18", True)

    legacy = rebuild_body({"object": "text_completion", "model": "gpt-35-turbo-instruct", "choices": [{"text": "tagline", "index": 0}]})
    assert (legacy.kind, legacy.text) == ("completions", "tagline")

    response = rebuild_body(
        {
            "id": "resp_1",
            "object": "response",
            "model": "o4-mini",
            "status": "completed",
            "output": [
                {"type": "reasoning", "summary": []},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            ],
        }
    )
    assert response.kind == "responses" and response.text == "Done."
    assert response.choices[0].tool_calls[0].name == "f"
    assert "reasoning_summary_not_counted" in response.notes


def test_rebuild_body_tolerates_odd_shapes():
    stream = rebuild_body({"choices": [None, {"message": "text?"}, {"index": "x", "message": {"content": 5}}]})
    assert stream.text == ""


# --- properties ---------------------------------------------------------------------------

_ALPHABET = st.one_of(st.sampled_from('"\\\n\r\t /{}:,[]\u2028\u2029\x85\x00éß数据😀👩‍💻\ufeff'), st.characters(codec="utf-8"))  # wire text is UTF-8: no lone surrogates


def _split(text: str, cuts: list[int]) -> list[str]:
    bounds = sorted({c % (len(text) + 1) for c in cuts})
    edges = [0, *bounds, len(text)]
    return [text[a:b] for a, b in zip(edges, edges[1:])]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(_ALPHABET, max_size=200), cuts=st.lists(st.integers(0, 10_000), max_size=40), newline=st.sampled_from(NEWLINES))
def test_any_text_split_at_any_boundary_rebuilds_to_itself(text, cuts, newline):
    pieces = _split(text, cuts)
    assert rebuild_stream(chat_stream(pieces, newline=newline)).text == text
    assert rebuild_stream(completions_stream(pieces, newline=newline)).text == text


@settings(max_examples=50, deadline=None)
@given(texts=st.lists(st.text(_ALPHABET, max_size=40), min_size=1, max_size=3), cuts=st.lists(st.integers(0, 1000), max_size=10))
def test_any_choices_any_split_rebuild_per_index(texts, cuts):
    stream = rebuild_stream(chat_stream([_split(t, cuts) for t in texts], usage=usage_object(1, 1)))
    assert [c.text for c in stream.choices] == texts
    assert stream.usage is not None


@settings(max_examples=50, deadline=None)
@given(text=st.text(_ALPHABET, min_size=1, max_size=120), cut=st.integers(0, 100_000))
def test_any_cut_never_raises_and_yields_a_prefix(text, cut):
    full = chat_stream(list(text))
    stream = rebuild_stream(full[: cut % (len(full) + 1)])
    assert text.startswith(stream.text)


def test_role_chunk_and_finish_chunk_alone():
    stream = rebuild_stream(sse([prompt_filter_chunk(), chat_chunk([role_choice()]), chat_chunk([finish_choice("length")])]))
    assert stream.text == "" and stream.choices[0].finish_reason == "length"
