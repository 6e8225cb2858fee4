"""Offline encodings, model → encoding, and the OpenAI cookbook's counting rules."""

from __future__ import annotations

import base64
import hashlib
import math
import socket
import struct

import orjson
import pytest
import requests
import tiktoken
import tiktoken.load
import tiktoken.registry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schema_bombs
from azure_shapes import chat_stream, refusal_stream_payloads, sse, tool_call_stream_payloads
from metering.usage import tokens
from metering.usage.sse import rebuild_body, rebuild_stream
from metering.usage.tokens import (
    ENCODING_SHA256,
    ENCODINGS_DIR,
    FALLBACK_ENCODING,
    choose_encoding,
    count_chat_prompt,
    count_completion,
    count_completions_prompt,
    count_embeddings_input,
    count_responses_input,
    count_text,
    forced_function,
    encoding_for_model,
    encoding_name_for_model,
    image_size_from_data_url,
    image_tokens,
    load_encoding,
)

# --- the OpenAI cookbook's examples (How to count tokens with tiktoken, sections 6 and 7) ----

COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
]

COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["location"],
            },
        },
    }
]

COOKBOOK_TOOL_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    "model, expected",
    [
        ("gpt-4", 129),
        ("gpt-4-0613", 129),
        ("gpt-35-turbo", 129),  # Azure spelling
        ("gpt-3.5-turbo", 129),
        ("gpt-35-turbo-0125", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
        ("gpt-4o-2024-08-06", 124),
        ("gpt-4o-mini-2024-07-18", 124),
        ("gpt-35-turbo-0301", 127),  # 4 per message, name −1: the cookbook's 0301 figure
    ],
)
def test_cookbook_conversation(model, expected):
    count = count_chat_prompt({"messages": COOKBOOK_MESSAGES}, model)
    assert count.tokens == expected
    assert count.notes == ()


def test_cookbook_conversation_with_project_wording_is_one_token_less():
    """The issue quotes the last message as "...for the client project."; the cookbook says
    "deliverable", which is two tokens in both encodings, so that wording counts 128 / 123."""
    messages = [*COOKBOOK_MESSAGES[:-1], {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client project."}]
    assert count_chat_prompt({"messages": messages}, "gpt-4").tokens == 128
    assert count_chat_prompt({"messages": messages}, "gpt-4o").tokens == 123


@pytest.mark.parametrize(
    "model, expected",
    [("gpt-4", 105), ("gpt-35-turbo", 105), ("gpt-3.5-turbo", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101), ("gpt-4o-2024-11-20", 101)],
)
def test_cookbook_tools(model, expected):
    count = count_chat_prompt({"messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS}, model)
    assert count.tokens == expected


def test_legacy_functions_count_like_tools_and_responses_tools_are_framed_cheaper():
    functions = [t["function"] for t in COOKBOOK_TOOLS]
    assert count_chat_prompt({"messages": COOKBOOK_TOOL_MESSAGES, "functions": functions}, "gpt-4").tokens == 105
    flat = [{"type": "function", **t["function"]} for t in COOKBOOK_TOOLS]
    as_responses = count_responses_input({"input": COOKBOOK_TOOL_MESSAGES, "tools": flat}, "gpt-4o")
    # the same namespace, framed 3 tokens cheaper after a system message (calibration recordings)
    assert as_responses.tokens == 101 - 3


def test_builtin_tools_are_noted_not_counted():
    count = count_chat_prompt({"messages": COOKBOOK_TOOL_MESSAGES, "tools": [{"type": "web_search_preview"}]}, "gpt-4o")
    assert count.tokens == count_chat_prompt({"messages": COOKBOOK_TOOL_MESSAGES}, "gpt-4o").tokens
    assert "builtin_tool_not_counted" in count.notes


# --- encodings ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ENCODING_SHA256))
def test_vendored_files_match_published_sha256(name):
    data = (ENCODINGS_DIR / f"{name}.tiktoken").read_bytes()
    assert hashlib.sha256(data).hexdigest() == ENCODING_SHA256[name]


def test_patterns_special_tokens_and_hashes_match_tiktokens_own(monkeypatch):
    from tiktoken_ext import openai_public

    hashes = {}

    def fake_load(url, expected_hash=None):
        hashes[url.rsplit("/", 1)[-1].removesuffix(".tiktoken")] = expected_hash
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    for name in ENCODING_SHA256:
        spec = getattr(openai_public, name)()
        encoding = load_encoding(name)
        assert encoding._pat_str == spec["pat_str"]
        assert encoding._special_tokens == spec["special_tokens"]
        assert hashes[name] == ENCODING_SHA256[name]


@pytest.mark.parametrize(
    "text, expected",  # the cookbook's compare_encodings outputs (p50k, cl100k, o200k)
    [("antidisestablishmentarianism", (5, 6, 6)), ("2 + 2 = 4", (5, 7, 7)), ("お誕生日おめでとう", (14, 9, 8))],
)
def test_encodings_reproduce_cookbook_token_counts(text, expected):
    got = tuple(len(load_encoding(n).encode_ordinary(text)) for n in ("p50k_base", "cl100k_base", "o200k_base"))
    assert got == expected
    assert load_encoding("cl100k_base").encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]


def test_encodings_load_once():
    assert load_encoding("o200k_base") is load_encoding("o200k_base")
    assert encoding_for_model("gpt-4o") is load_encoding("o200k_base")


def test_counting_never_touches_the_network(monkeypatch, tmp_path):
    """Fresh process state, empty tiktoken cache, every network path and downloading API booby-trapped."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tokens, "_ENCODINGS", {})
    read = []
    real_read = tokens._read_vendored

    def local_only(path):
        read.append(str(path))
        return real_read(path)

    def downloading_loader(*args, **kwargs):
        raise AssertionError("tiktoken's loader (which downloads and writes a cache copy) was used")

    def no_network(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(tokens, "_read_vendored", local_only)
    monkeypatch.setattr(tiktoken.load, "read_file", downloading_loader)
    monkeypatch.setattr(tiktoken.load, "load_tiktoken_bpe", downloading_loader)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(requests.Session, "request", no_network)
    monkeypatch.setattr(tiktoken, "get_encoding", no_network)
    monkeypatch.setattr(tiktoken, "encoding_for_model", no_network)
    monkeypatch.setattr(tiktoken.registry, "get_encoding", no_network)

    assert count_chat_prompt({"messages": COOKBOOK_MESSAGES}, "gpt-4o").tokens == 124
    assert count_chat_prompt({"messages": COOKBOOK_MESSAGES}, "gpt-4").tokens == 129
    assert count_completions_prompt("Write a tagline for an ice cream shop.", "text-davinci-003").tokens == 10
    assert sorted(tokens._ENCODINGS) == ["cl100k_base", "o200k_base", "p50k_base"]
    assert sorted(read) == sorted(str(ENCODINGS_DIR / f"{n}.tiktoken") for n in ENCODING_SHA256)
    assert list(tmp_path.iterdir()) == []  # nothing written to the cache directory either


def test_a_tampered_encoding_file_is_refused(monkeypatch, tmp_path):
    vendored = (ENCODINGS_DIR / "p50k_base.tiktoken").read_bytes()
    lines = vendored.split(b"\n")
    token, rank = lines[1000].split()
    lines[1000] = token + b" " + str(int(rank) + 1).encode()
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "p50k_base.tiktoken").write_bytes(b"\n".join(lines))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tokens, "ENCODINGS_DIR", tmp_path / "enc")
    monkeypatch.setattr(tokens, "_ENCODINGS", {})
    with pytest.raises(ValueError, match="Hash mismatch"):
        load_encoding("p50k_base")


def test_unwritable_tiktoken_cache_dir_still_loads(monkeypatch, tmp_path):
    """tiktoken raises when it cannot write its cache copy into a user-set TIKTOKEN_CACHE_DIR."""
    not_a_dir = tmp_path / "cache-is-a-file"
    not_a_dir.write_text("")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(not_a_dir))
    monkeypatch.setattr(tokens, "_ENCODINGS", {})
    assert count_chat_prompt({"messages": COOKBOOK_MESSAGES}, "gpt-4").tokens == 129
    assert load_encoding("cl100k_base").encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]


def test_tampered_file_is_refused_on_the_direct_read_path_too(monkeypatch, tmp_path):
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "p50k_base.tiktoken").write_bytes((ENCODINGS_DIR / "p50k_base.tiktoken").read_bytes()[:-10])

    def cache_unwritable(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(tiktoken.load, "load_tiktoken_bpe", cache_unwritable)
    monkeypatch.setattr(tokens, "ENCODINGS_DIR", tmp_path / "enc")
    monkeypatch.setattr(tokens, "_ENCODINGS", {})
    with pytest.raises(ValueError, match="Hash mismatch"):
        load_encoding("p50k_base")


def test_unknown_encoding_name_is_an_error():
    with pytest.raises(ValueError):
        load_encoding("r50k_base")


# --- model → encoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, encoding",
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-2024-11-20", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("GPT-4o", "o200k_base"),
        ("gpt-4o-realtime-preview", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("gpt-4.1-nano-2025-04-14", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("o1", "o200k_base"),
        ("o1-mini-2024-09-12", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o3-pro", "o200k_base"),
        ("o4-mini-2025-04-16", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini-2025-08-07", "o200k_base"),
        ("gpt-5.1-chat", "o200k_base"),
        ("gpt-image-1", "o200k_base"),
        ("gpt-oss-120b", "o200k_base"),
        ("computer-use-preview", "o200k_base"),
        ("codex-mini", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:contoso::9abcD3Ef", "o200k_base"),
        ("gpt-4o-mini-2024-07-18.ft-0a1b2c3d4e5f", "o200k_base"),  # Azure fine-tune
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-4-32k", "cl100k_base"),
        ("gpt-4-32k-0613", "cl100k_base"),
        ("gpt-4-turbo-2024-04-09", "cl100k_base"),
        ("gpt-4-1106-preview", "cl100k_base"),
        ("gpt-4-vision-preview", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("gpt-35-turbo-0125", "cl100k_base"),
        ("gpt-35-turbo-16k", "cl100k_base"),
        ("gpt-35-turbo-instruct", "cl100k_base"),
        ("gpt-3.5-turbo-0613", "cl100k_base"),
        ("gpt-35-turbo-0613.ft-abc", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-3-large", "cl100k_base"),
        ("ada", "cl100k_base"),  # what Azure's embeddings response says for ada-002
        ("davinci-002", "cl100k_base"),
        ("text-davinci-003", "p50k_base"),
        ("text-davinci-002", "p50k_base"),
        ("code-davinci-002", "p50k_base"),
    ],
)
def test_model_to_encoding(model, encoding):
    assert encoding_name_for_model(model) == encoding
    assert choose_encoding(model).fallback is False


@pytest.mark.parametrize("model", [None, "", "my-chat-prod", "gpt4o-eastus", "mistral-large-2411", "o10", "gpt-40"])
def test_unknown_models_fall_back_to_o200k_and_say_so(model):
    assert choose_encoding(model) == (FALLBACK_ENCODING, True)
    assert FALLBACK_ENCODING == "o200k_base"
    count = count_chat_prompt({"messages": [{"role": "user", "content": "hi"}]}, model)
    assert count.notes == ("encoding_fallback",)


# --- images -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, detail, expected",
    [
        ((1024, 1024), "high", 765),  # OpenAI's worked example: 768x768 → 4 tiles
        ((2048, 4096), "high", 1105),  # → 1024x2048 → 768x1536 → 6 tiles
        ((4096, 8192), "high", 1105),
        ((512, 512), "high", 255),
        ((100, 100), "auto", 255),
        ((1920, 1080), None, 1105),
        ((4096, 4096), "low", 85),
    ],
)
def test_image_tile_formula(size, detail, expected):
    assert image_tokens(*size, detail) == expected


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _png(w: int, h: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0) + b"\x00" * 64


def _jpeg(w: int, h: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof + b"\xff\xda" + b"\x00" * 32


def _webp(w: int, h: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


@pytest.mark.parametrize(
    "url, size",
    [
        (_data_url("image/png", _png(2048, 4096)), (2048, 4096)),
        (_data_url("image/jpeg", _jpeg(1920, 1080)), (1920, 1080)),
        (_data_url("image/gif", b"GIF89a" + struct.pack("<HH", 320, 200) + b"\x00" * 8), (320, 200)),
        (_data_url("image/webp", _webp(800, 600)), (800, 600)),
        (_data_url("image/png", _png(640, 480))[:80], (640, 480)),  # truncated by APIM, header intact
        ("data:image/png;base64,!!!notbase64", None),
        ("https://contoso.blob.core.windows.net/img.png", None),
        ("data:text/plain,hello", None),
        (_data_url("image/jpeg", b"\xff\xd8\xff\xe0\x00"), None),
    ],
)
def test_image_size_from_data_url(url, size):
    assert image_size_from_data_url(url) == size


def _user_with(*parts):
    return {"messages": [{"role": "user", "content": list(parts)}]}


def test_image_parts_use_known_size_or_documented_default():
    text_only = count_chat_prompt(_user_with({"type": "text", "text": "What is in this image?"}), "gpt-4o").tokens
    png = {"type": "image_url", "image_url": {"url": _data_url("image/png", _png(2048, 4096)), "detail": "high"}}
    remote = {"type": "image_url", "image_url": {"url": "https://contoso.example/cat.jpg"}}
    low = {"type": "image_url", "image_url": {"url": "https://contoso.example/cat.jpg", "detail": "low"}}
    text = {"type": "text", "text": "What is in this image?"}

    sized = count_chat_prompt(_user_with(text, png), "gpt-4o")
    assert sized.tokens == text_only + 1105 and sized.notes == ()
    defaulted = count_chat_prompt(_user_with(text, remote), "gpt-4o")
    assert defaulted.tokens == text_only + 765 and defaulted.notes == ("image_tokens_defaulted",)
    cheap = count_chat_prompt(_user_with(text, low), "gpt-4o")
    assert cheap.tokens == text_only + 85 and cheap.notes == ()


def test_text_parts_count_like_string_content():
    as_string = count_chat_prompt({"messages": [{"role": "user", "content": "Summarise the Q3 report."}]}, "gpt-4o")
    as_parts = count_chat_prompt(_user_with({"type": "text", "text": "Summarise the Q3 report."}), "gpt-4o")
    assert as_parts == as_string


def test_odd_content_parts_are_noted_not_fatal():
    count = count_chat_prompt(
        _user_with(
            {"type": "text", "text": "hello"},
            {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
            {"type": "file", "file": {"file_id": "assistant-123"}},
            {"type": "hologram"},
            42,
            None,
        ),
        "gpt-4o",
    )
    assert count.tokens == count_chat_prompt(_user_with({"type": "text", "text": "hello"}), "gpt-4o").tokens
    assert set(count.notes) == {"audio_not_counted", "file_not_counted", "unknown_content_part"}


# --- chat rules beyond the cookbook ---------------------------------------------------------


def test_tool_calls_in_history_and_tool_results():
    """Documented rule (fitted on the calibration recordings): an assistant turn with one call is
    rendered ``assistant to=functions.NAME`` + arguments + 1; the tool result is a message from
    ``functions.NAME`` (+1), its routing id (tool_call_id) not rendered."""
    enc = load_encoding("o200k_base")
    n = lambda s: len(enc.encode_ordinary(s))  # noqa: E731
    args = '{"location":"Paris, FR","unit":"celsius"}'
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_7XQ2m3", "type": "function", "function": {"name": "get_current_weather", "arguments": args}}],
    }
    tool = {"role": "tool", "tool_call_id": "call_7XQ2m3", "content": '{"temperature": 21}'}
    count = count_chat_prompt({"messages": [assistant, tool]}, "gpt-4o")
    expected = (3 + n("assistant") + n(" to=functions.get_current_weather") + n(args) + 1) + (
        3 + n("functions.get_current_weather") + 1 + n('{"temperature": 21}')
    ) + 3
    assert count.tokens == expected and count.notes == ()


def test_gpt_4_1_chat_shows_an_empty_parameters_object():
    """A function whose parameters have no properties is ``(_: {}) => any`` to gpt-4.1 models in
    chat (crewAI's gpt-4.1-mini recordings), ``() => any`` to gpt-4o's and in the Responses API."""
    enc = load_encoding("o200k_base")
    extra = len(enc.encode_ordinary("type say_hi = (_: {}) => any;")) - len(enc.encode_ordinary("type say_hi = () => any;"))
    empty = {"type": "function", "function": {"name": "say_hi", "description": "Say hi", "parameters": {"type": "object", "properties": {}}}}
    bare = {"type": "function", "function": {"name": "say_hi", "description": "Say hi"}}
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    assert extra == 2
    assert count_chat_prompt({**chat, "tools": [empty]}, "gpt-4.1-mini").tokens == count_chat_prompt({**chat, "tools": [bare]}, "gpt-4.1-mini").tokens + extra
    assert count_chat_prompt({**chat, "tools": [empty]}, "gpt-4o-mini").tokens == count_chat_prompt({**chat, "tools": [bare]}, "gpt-4o-mini").tokens
    responses = {"input": "Hi", "instructions": "Be brief."}
    flat = lambda tool: {"type": "function", **tool["function"]}  # noqa: E731
    assert count_responses_input({**responses, "tools": [flat(empty)]}, "gpt-4.1").tokens == (
        count_responses_input({**responses, "tools": [flat(bare)]}, "gpt-4.1").tokens)


def test_chat_shows_the_default_of_a_required_property_only():
    """In chat a required property's default is a trailing ``// default: …`` comment (crewAI's strict
    schemas); an optional property's is not shown (pydantic-ai's recordings)."""
    enc = load_encoding("o200k_base")
    n = lambda text: len(enc.encode_ordinary(text))  # noqa: E731

    def tool(required):
        body = {"default": None, "description": "Issue body", "type": "string"}
        parameters = {"type": "object", "properties": {"body": body}, "required": required}
        return {"type": "function", "function": {"name": "create_issue", "description": "Create an issue", "parameters": parameters}}

    def plain(required):
        parameters = {"type": "object", "properties": {"body": {"description": "Issue body", "type": "string"}}, "required": required}
        return {"type": "function", "function": {"name": "create_issue", "description": "Create an issue", "parameters": parameters}}

    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "File it"}]}
    shown = n("body: string, // default: null\n") - n("body: string,\n")
    assert shown > 0
    assert count_chat_prompt({**chat, "tools": [tool(["body"])]}, "gpt-4o").tokens == (
        count_chat_prompt({**chat, "tools": [plain(["body"])]}, "gpt-4o").tokens + shown)
    assert count_chat_prompt({**chat, "tools": [tool([])]}, "gpt-4o").tokens == count_chat_prompt({**chat, "tools": [plain([])]}, "gpt-4o").tokens


def test_a_tool_results_own_name_is_not_shown_again():
    """crewAI sends ``name`` on tool results: the result is from ``functions.NAME`` already, so it
    costs nothing more; a ``name`` on a result that answers no known call is still counted."""
    assistant = {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "search_web", "arguments": "{}"}}]}
    plain = {"role": "tool", "tool_call_id": "call_1", "content": "Tokyo: 14 million"}
    named = {**plain, "name": "search_web"}
    assert count_chat_prompt({"messages": [assistant, named]}, "gpt-4o-mini").tokens == (
        count_chat_prompt({"messages": [assistant, plain]}, "gpt-4o-mini").tokens
    )
    orphan = {"role": "tool", "tool_call_id": "call_unknown", "content": "Tokyo: 14 million"}
    assert count_chat_prompt({"messages": [{**orphan, "name": "search_web"}]}, "gpt-4o-mini").tokens > (
        count_chat_prompt({"messages": [orphan]}, "gpt-4o-mini").tokens
    )


def test_parallel_calls_in_history_are_one_multi_tool_use_call():
    enc = load_encoding("o200k_base")
    n = lambda s: len(enc.encode_ordinary(s))  # noqa: E731
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
    ]
    wrapper = (
        '{"tool_uses":[{"recipient_name":"functions.get_weather","parameters":{"city":"Paris"}},'
        '{"recipient_name":"functions.get_weather","parameters":{"city":"Oslo"}}]}'
    )
    shown = 3 + n("assistant") + n(" to=multi_tool_use.parallel") + n(wrapper) + 3
    # gpt-4o and gpt-4o-mini: the wrapper costs nothing beyond its text (ten requests each 1 over with
    # a single call's extra token); gpt-4.1 keeps the single call's 1 (not measured apart).
    for model, extra in (("gpt-4o", 0), ("gpt-4o-mini", 0), ("gpt-4.1", 1)):
        count = count_chat_prompt({"messages": [{"role": "assistant", "tool_calls": calls}]}, model)
        assert count.tokens == shown + extra, model


def test_gpt_5_models_see_parallel_calls_in_history_one_by_one():
    """gpt-5 models (harmony: no multi_tool_use.parallel) are shown each call of a parallel turn as
    a call of its own, 4 tokens more each than alone (crewAI's gpt-5-nano turns of 3 calls)."""
    enc = load_encoding("o200k_base")
    n = lambda s: len(enc.encode_ordinary(s))  # noqa: E731
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
    ]
    count = count_chat_prompt({"messages": [{"role": "assistant", "tool_calls": calls}]}, "gpt-5-nano")
    each = sum(n(" to=functions.get_weather") + n(c["function"]["arguments"]) + 1 + 4 for c in calls)
    assert count.tokens == 3 + n("assistant") + each + 2
    one = count_chat_prompt({"messages": [{"role": "assistant", "tool_calls": calls[:1]}]}, "gpt-5-nano")
    assert one.tokens == 3 + n("assistant") + n(" to=functions.get_weather") + n('{"city": "Paris"}') + 1 + 2


def test_legacy_function_call_history_counts_name_and_arguments():
    enc = load_encoding("cl100k_base")
    message = {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": '{"q":"x"}'}}
    result = {"role": "function", "name": "lookup", "content": "42"}
    count = count_chat_prompt({"messages": [message, result]}, "gpt-35-turbo")
    n = lambda s: len(enc.encode_ordinary(s))  # noqa: E731
    assert count.tokens == (3 + n("assistant") + n("lookup") + n('{"q":"x"}')) + (3 + n("function") + n("lookup") + 1 + n("42")) + 3


def test_special_token_lookalikes_are_ordinary_text():
    count = count_chat_prompt({"messages": [{"role": "user", "content": "<|endoftext|> and <|im_start|>"}]}, "gpt-4")
    assert count.tokens > 7


def test_responses_input_counts_like_the_equivalent_chat():
    chat = count_chat_prompt(
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Explain chargeback."}]}, "gpt-4.1"
    )
    responses = count_responses_input({"instructions": "Be brief.", "input": "Explain chargeback."}, "gpt-4.1")
    assert responses == chat
    items = count_responses_input(
        {
            "instructions": "Be brief.",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Explain chargeback."}]}],
        },
        "gpt-4.1",
    )
    assert items == chat


def test_responses_input_items_and_server_state_notes():
    count = count_responses_input(
        {
            "previous_response_id": "resp_abc",
            "input": [
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": -3}'},
                {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAA"},
                {"type": "item_reference", "id": "msg_1"},
                {"role": "user", "content": [{"type": "input_image", "image_url": "https://contoso.example/x.png", "detail": "low"}]},
            ],
        },
        "o4-mini",
    )
    assert count.tokens > 85
    assert {"previous_response_not_counted", "reasoning_input_not_counted", "item_reference_not_counted"} <= set(count.notes)


# --- completions, embeddings, completion tokens ---------------------------------------------


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("Write a tagline for an ice cream shop.", 10),
        (["Write a tagline for an ice cream shop.", "Another one."], 10 + 3),
        ([1639, 389, 257, 7427], 4),
        ([[1639, 389], [257, 7427, 13]], 5),
        ("", 0),
        (None, 0),
    ],
)
def test_completions_prompt_shapes(prompt, expected):
    count = count_completions_prompt(prompt, "gpt-35-turbo-instruct")
    assert count.tokens == expected and count.notes == ()


def test_estimates_match_usage_reported_in_real_azure_captures():
    # completion.txt: text-davinci-003 reported prompt_tokens 10 for this prompt.
    assert count_completions_prompt("Write a tagline for an ice cream shop.", "text-davinci-003").tokens == 10
    # chat_completion.txt: gpt-4 reported prompt_tokens 33 for this conversation (Chinese user text).
    request = {
        "messages": [
            {"role": "system", "content": "You are an AI assistant that helps people find information."},
            {"role": "user", "content": "请讲个笑话，30字左右"},
        ],
        "model": "gpt-4",
        "max_tokens": 1500,
        "temperature": 0,
    }
    assert count_chat_prompt(request, "gpt-4").tokens == 33


def test_embeddings_input_shapes():
    # embedding.txt: "test for embedding" was reported as 3 prompt tokens by ada-002.
    assert count_embeddings_input("test for embedding", "text-embedding-ada-002").tokens == 3
    assert count_embeddings_input(["test for embedding", "second"], "text-embedding-3-small").tokens == 4
    assert count_embeddings_input([[1, 2, 3], [4]], "text-embedding-3-large").tokens == 4
    odd = count_embeddings_input([{"text": "x"}, 1.5, True], "text-embedding-3-small")
    assert odd.tokens == 0 and odd.notes == ("unknown_input_shape",)


def test_completion_tokens_cover_text_refusal_and_tool_calls():
    """As OpenAI's own API bills them (``azure=False``): the text, refusal and calls the model wrote."""
    enc = load_encoding("o200k_base")
    text = rebuild_stream(chat_stream(["The answer", " is 42."]))
    assert count_completion(text, "gpt-4o", azure=False).tokens == len(enc.encode_ordinary("The answer is 42."))
    refusal = rebuild_stream(sse(refusal_stream_payloads(["I can't", " help."])))
    assert count_completion(refusal, "gpt-4o", azure=False).tokens == len(enc.encode_ordinary("I can't help."))
    calls = rebuild_stream(sse(tool_call_stream_payloads([("call_1", "get_current_weather", ['{"location":', '"Paris"}'])])))
    # one call: " to=functions.NAME" + arguments + 4 (fitted on the calibration recordings)
    assert count_completion(calls, "gpt-4o", azure=False).tokens == len(enc.encode_ordinary(" to=functions.get_current_weather")) + len(
        enc.encode_ordinary('{"location":"Paris"}')
    ) + 4
    several = rebuild_stream(chat_stream([["one"], ["two"]]))
    assert count_completion(several, "gpt-4o", azure=False).tokens == 2


@pytest.mark.parametrize("model", ["gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "gpt-4.1-mini-2025-04-14"])
def test_azure_bills_one_terminator_token_per_chat_choice(model):
    """Issue #29's one-token completion gap: Azure's "Hello! How can I assist you today?" (9 tokens
    of text) is billed 10 (gpt-4o-mini, January 2026), twice for n = 2; OpenAI's API bills 9."""
    one = rebuild_stream(chat_stream(["Hello! How can I assist you today?"], model=model))
    assert count_completion(one, model).tokens == 10 == count_completion(one, model, azure=False).tokens + 1
    two = rebuild_stream(chat_stream([["Hello!"], ["Hi!"]], model=model))
    assert count_completion(two, model).tokens == count_completion(two, model, azure=False).tokens + 2


def test_reasoning_models_note_hidden_reasoning():
    stream = rebuild_stream(chat_stream(["ok"], model="o3-mini-2025-01-31"))
    assert "reasoning_tokens_not_estimated" in count_completion(stream, "o3-mini-2025-01-31").notes
    assert count_completion(stream, "gpt-4o").notes == ()


def test_count_text():
    assert count_text("", "gpt-4o") == 0
    assert count_text("hello world", "gpt-4") == 2


# --- robustness -----------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["role", "content", "name", "type", "text", "image_url", "url", "detail", "tool_calls", "function", "arguments",
         "parameters", "properties", "enum", "description", "items", "input", "instructions", "messages", "tools", "prompt", "output"]
    ) | st.text(max_size=5), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=_json)
def test_estimation_never_raises_on_odd_shapes(request):
    for fn in (count_chat_prompt, count_responses_input):
        wrapped = request if isinstance(request, dict) else {"messages": request, "input": request, "tools": request}
        count = fn(wrapped, "gpt-4o")
        assert count.tokens >= 0
    assert count_completions_prompt(request, "gpt-4").tokens >= 0
    assert count_embeddings_input(request, "gpt-4").tokens >= 0


def test_shapes_round_trip_through_json():
    """Requests arrive as parsed JSON: a dumped-and-loaded request counts the same."""
    request = {"messages": COOKBOOK_MESSAGES, "tools": COOKBOOK_TOOLS}
    assert count_chat_prompt(orjson.loads(orjson.dumps(request)), "gpt-4o") == count_chat_prompt(request, "gpt-4o")


@pytest.mark.parametrize(
    "name, model",
    [
        ("gpt-4o", "gpt-4o"),
        ("contoso-gpt-4o-mini-prod", "gpt-4o-mini-prod"),
        ("gpt4o-eastus", "gpt-4o-eastus"),
        ("eastus-gpt35-turbo", "gpt-35-turbo"),
        ("prod_o3-mini", "o3-mini"),
        ("chat-prod", None),
        ("gpt-40", None),
        ("", None),
        (None, None),
    ],
)
def test_model_in_a_deployment_name(name, model):
    from metering.usage.tokens import model_in_name

    assert model_in_name(name) == model
    if model:
        assert choose_encoding(model).fallback is False


def _function_tool(parameters, description="Look up an order."):
    return {"type": "function", "function": {"name": "lookup_order", "description": description, "parameters": parameters}}


def test_tool_definitions_are_counted_as_the_typescript_namespace_the_model_sees():
    """gpt-4o, no system message: the namespace text + 10, minus 2 per function (calibration)."""
    enc = load_encoding("o200k_base")
    parameters = {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "description": "The order number."},
            "status": {"type": "string", "enum": ["open", "shipped"]},
            "lines": {"type": "array", "items": {"type": "integer"}},
        },
        "required": ["order_id"],
    }
    rendered = (
        "namespace functions {\n\n"
        "// Look up an order.\n"
        "// Second line.\n"
        "type lookup_order = (_: {\n"
        "// The order number.\n"
        "order_id: string,\n"
        'status?: "open" | "shipped",\n'
        "lines?: number[],\n"
        "}) => any;\n\n"
        "} // namespace functions"
    )
    messages = [{"role": "user", "content": "Where is order 42?"}]
    without = count_chat_prompt({"messages": messages}, "gpt-4o").tokens
    count = count_chat_prompt({"messages": messages, "tools": [_function_tool(parameters, "Look up an order.\nSecond line.")]}, "gpt-4o")
    assert count.tokens == without + len(enc.encode_ordinary(rendered)) + 10 - 2
    assert count.notes == ()


def test_deep_or_odd_tool_schemas_are_approximated_not_fatal():
    deep = {"type": "string"}
    for _ in range(600):
        deep = {"type": "object", "properties": {"inner": deep}}
    odd = {"type": "object", "properties": {"n": {"enum": [2**70, None]}, "u": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/x"}]}, "t": {"type": [1, "null"]}}}
    for parameters in (deep, odd):
        count = count_chat_prompt({"messages": [{"role": "user", "content": "hi"}], "tools": [_function_tool(parameters)]}, "gpt-4o")
        assert count.tokens > 0 and "tool_schema_approximated" in count.notes


HOSTILE_SCHEMAS = {
    "ref_dag": schema_bombs.ref_dag(10, 3),  # 3**10 paths in 1.3 KB: 187,019 tokens before the budget
    "anyof_refs": schema_bombs.anyof_refs(10, 3),
    "mutual_refs": schema_bombs.mutual_refs(7),
    "object_type_lists": schema_bombs.object_type_lists(3, 20),
    "ref_chain": schema_bombs.ref_chain(5000),  # deeper than Python's recursion limit
}


@pytest.mark.parametrize("responses", [False, True], ids=["chat", "responses"])
@pytest.mark.parametrize("name", sorted(HOSTILE_SCHEMAS))
def test_a_hostile_schema_costs_no_more_than_the_request_size_allows(name, responses):
    """Issue #26: a caller-built schema whose rendering explodes ($ref DAGs, anyOf of $refs, mutually
    referencing definitions, type lists) is rendered within a budget that grows with its own bytes;
    past it the estimate says ``schema_budget_approximated`` instead of spending seconds and GiBs."""
    request = schema_bombs.tool_request(HOSTILE_SCHEMAS[name], responses=responses)
    count = (count_responses_input if responses else count_chat_prompt)(request, "gpt-4o-mini")
    size = len(orjson.dumps(request))
    # the rendering's characters are at most 8 KiB + 4 per byte of schema JSON, and a token is at
    # least one character
    assert 0 < count.tokens <= 8_192 + 4 * size
    if name != "ref_chain":  # a chain is cut by depth (16), within budget
        assert "schema_budget_approximated" in count.notes


def test_a_schema_within_its_budget_renders_whole_and_says_nothing_of_it():
    """Real schemas (the recordings' largest spend under 3 % of their budget) are never cut."""
    parameters = schema_bombs.ref_dag(4, 3)  # 27 leaves: a legitimately reused definition
    count = count_chat_prompt(schema_bombs.tool_request(parameters), "gpt-4o")
    assert "schema_budget_approximated" not in count.notes
    assert count.tokens > count_chat_prompt(schema_bombs.tool_request(schema_bombs.ref_dag(3, 3)), "gpt-4o").tokens


def test_parallel_calls_whose_arguments_are_not_json_are_counted_one_by_one():
    enc = load_encoding("o200k_base")
    n = lambda s: len(enc.encode_ordinary(s))  # noqa: E731
    calls = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{not json"}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    count = count_chat_prompt({"messages": [{"role": "assistant", "tool_calls": calls}]}, "gpt-4o")
    assert count.tokens == 3 + n("assistant") + (n(" to=functions.f") + n("{not json") + 1) + (n(" to=functions.g") + n("{}") + 1) + 3


# --- Responses API function tools ------------------------------------------------------------

#: a pydantic-style schema (what pydantic-ai and the openai-agents SDK send): titles everywhere
TITLED_PARAMETERS = {
    "properties": {"city": {"title": "City", "type": "string"}},
    "required": ["city"],
    "title": "get_weather_args",
    "type": "object",
    "additionalProperties": False,
}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Gets the weather for a city.", "parameters": TITLED_PARAMETERS, "strict": True}


def test_responses_tools_show_titles_and_are_framed_by_the_responses_constants():
    """gpt-4.1 (Responses): the parameters' title and each property's title are comments the model
    is shown (chat shows the property's only); the namespace costs 4 more after instructions, 5 alone, minus 2
    per function."""
    enc = load_encoding("o200k_base")
    rendered = (
        "namespace functions {\n\n"
        "// Gets the weather for a city.\n"
        "type get_weather = (_: // get_weather_args\n"
        "{\n"
        "// City\n"
        "//\n"
        "city: string,\n"
        "}) => any;\n\n"
        "} // namespace functions"
    )
    request = {"instructions": "Use the tool.", "input": "Weather in London?"}
    without = count_responses_input(request, "gpt-4.1").tokens
    assert count_responses_input({**request, "tools": [WEATHER_TOOL]}, "gpt-4.1").tokens == without + len(enc.encode_ordinary(rendered)) + 4 - 2
    alone = {"input": "Weather in London?"}
    assert count_responses_input({**alone, "tools": [WEATHER_TOOL]}, "gpt-4.1").tokens == (
        count_responses_input(alone, "gpt-4.1").tokens + len(enc.encode_ordinary(rendered)) + 5 - 2
    )
    chat_tool = {"type": "function", "function": {k: v for k, v in WEATHER_TOOL.items() if k != "type"}}
    untitled = {k: v for k, v in TITLED_PARAMETERS.items() if k != "title"}
    untitled["properties"] = {"city": {"type": "string"}}
    untitled_tool = {"type": "function", "function": {**chat_tool["function"], "parameters": untitled}}
    chat = {"messages": [{"role": "user", "content": "Weather in London?"}]}
    # chat shows the property's title the same way, not the parameters' title (crewAI's recordings)
    shown = len(enc.encode_ordinary("type get_weather = (_: {\n// City\n//\ncity: string,\n}) => any;"))
    plain = len(enc.encode_ordinary("type get_weather = (_: {\ncity: string,\n}) => any;"))
    assert count_chat_prompt({**chat, "tools": [chat_tool]}, "gpt-4.1").tokens == (
        count_chat_prompt({**chat, "tools": [untitled_tool]}, "gpt-4.1").tokens + shown - plain
    )


def test_local_refs_are_inlined_and_a_recursive_one_stops():
    enc = load_encoding("o200k_base")
    parameters = {
        "$defs": {"Line": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}, "required": ["sku", "qty"]}},
        "type": "object",
        "properties": {"line": {"$ref": "#/$defs/Line"}},
        "required": ["line"],
    }
    inlined = {**parameters, "properties": {"line": parameters["$defs"]["Line"]}}
    chat = {"messages": [{"role": "user", "content": "Add a line."}]}
    with_ref = count_chat_prompt({**chat, "tools": [_function_tool(parameters)]}, "gpt-4o")
    assert with_ref == count_chat_prompt({**chat, "tools": [_function_tool(inlined)]}, "gpt-4o")
    any_line = count_chat_prompt({**chat, "tools": [_function_tool({**parameters, "$defs": {}})]}, "gpt-4o")
    assert with_ref.tokens >= any_line.tokens + len(enc.encode_ordinary("sku: string, qty: number"))  # not "line: any"
    recursive = {
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/Node"}},
    }
    count = count_responses_input({"input": "hi", "tools": [{"type": "function", "name": "walk", "parameters": recursive}]}, "gpt-4o")
    assert count.tokens > 0 and "tool_schema_approximated" in count.notes


def test_a_forced_call_is_written_into_the_prompt_not_the_completion():
    """tool_choice naming the function (or "required" with one function): the API writes the
    call's ``to=functions.NAME`` header itself, so it is billed as input (gpt-4o-mini and
    gpt-4.1-nano recordings); the model only writes the arguments."""
    enc = load_encoding("o200k_base")
    header = len(enc.encode_ordinary(" to=functions.get_weather")) + 4
    request = {"input": "Weather in London?", "tools": [WEATHER_TOOL]}
    free = count_responses_input({**request, "tool_choice": "auto"}, "gpt-4o-mini").tokens
    for choice in ({"type": "function", "name": "get_weather"}, "required"):
        assert forced_function({**request, "tool_choice": choice}, "gpt-4o-mini") == "get_weather"
        assert count_responses_input({**request, "tool_choice": choice}, "gpt-4o-mini").tokens == free + header
    other = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    assert forced_function({**request, "tools": [WEATHER_TOOL, other], "tool_choice": "required"}, "gpt-4o-mini") is None
    assert forced_function({**request, "tool_choice": {"type": "function", "name": "missing"}}, "gpt-4o-mini") is None
    assert forced_function({**request, "tool_choice": "required"}, "gpt-5") is None  # not measured for reasoning models

    body = {
        "object": "response",
        "status": "completed",
        "output": [{"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"London"}'}],
    }
    response = rebuild_body(body)
    arguments = len(enc.encode_ordinary('{"city":"London"}'))
    assert count_completion(response, "gpt-4o-mini", tools_offered=True, forced_call="get_weather").tokens == arguments + 1
    assert count_completion(response, "gpt-4o-mini", tools_offered=True).tokens == header + arguments + 1


def test_an_empty_assistant_item_before_calls_is_its_own_message_without_its_role():
    """Recordings bill an empty assistant message item before function calls 3 tokens (not merged
    into the calls' turn, and its role not counted)."""
    call = {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"}
    user = {"role": "user", "content": "Weather?"}
    plain = count_responses_input({"input": [user, call]}, "gpt-4o").tokens
    with_empty = count_responses_input({"input": [user, {"role": "assistant", "content": ""}, call]}, "gpt-4o").tokens
    assert with_empty == plain + 3


# --- response formats (issue #29) ------------------------------------------------------------

#: the elastic-otel-python-instrumentations recording's format (gpt-4o-mini, 69 prompt tokens reported)
REASON_FORMAT = {"type": "json_schema", "json_schema": {"schema": {
    "properties": {"reason": {"title": "Reason", "type": "string"}}, "required": ["reason"], "title": "Reason",
    "type": "object", "additionalProperties": False}, "name": "Reason", "strict": True}}
REASON_MESSAGES = [{"role": "user", "content": "Provide up to 3 words explaining why 2 + 2 equals 4 in JSON format with a 'reason' key."}]


def test_a_json_schema_response_format_is_counted_as_harmony_renders_it():
    """``# Response Formats`` / ``## NAME`` / the schema as compact JSON without its titles, in a
    system message of its own when the conversation has none (fitted: RESPONSE_FORMAT_ALONE)."""
    enc = load_encoding("o200k_base")
    without = count_chat_prompt({"messages": REASON_MESSAGES}, "gpt-4o-mini")
    count = count_chat_prompt({"messages": REASON_MESSAGES, "response_format": REASON_FORMAT}, "gpt-4o-mini")
    block = '# Response Formats\n\n## Reason\n\n{"properties":{"reason":{"type":"string"}},"required":["reason"],"type":"object","additionalProperties":false}'
    assert count.tokens == without.tokens + len(enc.encode_ordinary(block)) + tokens.RESPONSE_FORMAT_ALONE
    assert abs(count.tokens - 69) <= 2  # what the provider reported
    assert "response_format_approximated" in count.notes
    # after a system message, the block follows its text after a blank line
    system = [{"role": "system", "content": "You are terse."}, *REASON_MESSAGES]
    with_system = count_chat_prompt({"messages": system, "response_format": REASON_FORMAT}, "gpt-4o-mini")
    assert with_system.tokens == count_chat_prompt({"messages": system}, "gpt-4o-mini").tokens + len(
        enc.encode_ordinary("You are terse.\n\n" + block)) - len(enc.encode_ordinary("You are terse.")) + tokens.RESPONSE_FORMAT_WITH_SYSTEM


def test_a_response_formats_own_description_is_shown_as_a_comment_before_its_schema():
    """crewAI's Azure requests carry ``json_schema.description`` ("Schema for AnalysisResult"): they
    were 6 tokens more than the same request without it, the comment line's tokens."""
    enc = load_encoding("o200k_base")
    described = {"type": "json_schema", "json_schema": {**REASON_FORMAT["json_schema"], "description": "Schema for Reason"}}
    plain = count_chat_prompt({"messages": REASON_MESSAGES, "response_format": REASON_FORMAT}, "gpt-4o-mini")
    count = count_chat_prompt({"messages": REASON_MESSAGES, "response_format": described}, "gpt-4o-mini")
    assert count.tokens == plain.tokens + len(enc.encode_ordinary("// Schema for Reason\n"))


def test_json_object_and_text_formats_add_nothing_and_responses_formats_count_too():
    plain = count_chat_prompt({"messages": REASON_MESSAGES}, "gpt-4o-mini")
    for response_format in ({"type": "json_object"}, {"type": "text"}):
        assert count_chat_prompt({"messages": REASON_MESSAGES, "response_format": response_format}, "gpt-4o-mini") == plain
    spec = REASON_FORMAT["json_schema"]
    responses = {"input": REASON_MESSAGES[0]["content"], "text": {"format": {"type": "json_schema", **spec}}}
    assert count_responses_input(responses, "gpt-4o-mini").tokens > count_responses_input({"input": responses["input"]}, "gpt-4o-mini").tokens


@pytest.mark.parametrize("name", sorted(HOSTILE_SCHEMAS))
def test_a_hostile_response_format_is_bounded_too(name):
    request = {"messages": REASON_MESSAGES, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": HOSTILE_SCHEMAS[name]}}}
    count = count_chat_prompt(request, "gpt-4o-mini")
    assert 0 < count.tokens <= 8_192 + 4 * len(orjson.dumps(request))


def test_gpt_4o_mini_images_cost_its_own_rates():
    """gpt-4o-mini bills 2,833 + 5,667 per tile (crewAI's recordings of 2-tile images: exact)."""
    assert image_tokens(1024, 512, "high", "gpt-4o-mini-2024-07-18") == 2833 + 2 * 5667
    assert image_tokens(1024, 512, "low", "gpt-4o-mini") == 2833
    assert image_tokens(1024, 512, "high", "gpt-4o") == 85 + 2 * 170
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
    request = {"messages": [{"role": "user", "content": [part]}]}
    assert count_chat_prompt(request, "gpt-4o-mini").tokens - count_chat_prompt(request, "gpt-4o").tokens == 2833 - 85


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4.1-mini-2025-04-14", 488),  # 20 × 15 patches × 1.62, rounded up, + 1 (a crewAI recording: 488)
    ("o4-mini-2025-04-16", 517),  # × 1.72 (crewAI: 517)
    ("gpt-5-mini-2025-08-07", 361),  # × 1.2 (crewAI: 361)
    ("gpt-5-nano-2025-08-07", 451),  # × 1.5 (crewAI: 451)
    ("gpt-5-2025-08-07", 70 + 2 * 140),  # tiles at gpt-5's own rates (crewAI: 350)
    ("gpt-4o-2024-08-06", 85 + 2 * 170),
])
def test_images_cost_each_models_own_rates(model, expected):
    assert image_tokens(640, 480, "high", model) == expected


def test_patch_models_scale_a_large_image_down_to_1536_patches():
    """A 4096 × 4096 image would be 16,384 patches: it is scaled down to at most 1,536."""
    assert image_tokens(4096, 4096, "high", "gpt-4.1-nano") == math.ceil(1521 * 2.46) + 1  # 39 × 39 patches
    assert image_tokens(4096, 4096, "high", "gpt-4.1-nano") <= math.ceil(1536 * 2.46) + 1
    assert image_tokens(100, 100, "low", "o4-mini") == image_tokens(100, 100, "high", "o4-mini") == math.ceil(16 * 1.72) + 1


def test_a_chat_call_forced_by_name_moves_its_header_into_the_prompt():
    """crewAI's gpt-4o recording: tool_choice names ScoreOutput; the completion is the arguments
    alone (5 tokens, api.openai.com) and the prompt carries the header (CHAT_FORCED_CALL)."""
    enc = load_encoding("o200k_base")
    tool = _function_tool({"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]})
    tool["function"]["name"] = "ScoreOutput"
    chat = {"messages": [{"role": "user", "content": "Score it."}], "tools": [tool]}
    forced = {**chat, "tool_choice": {"type": "function", "function": {"name": "ScoreOutput"}}}
    assert tokens.forced_chat_function(forced, "gpt-4o") == "ScoreOutput"
    assert tokens.forced_chat_function({**chat, "tool_choice": "required"}, "gpt-4o") is None
    assert count_chat_prompt(forced, "gpt-4o").tokens == count_chat_prompt(chat, "gpt-4o").tokens + len(
        enc.encode_ordinary(" to=functions.ScoreOutput")) + 4 + tokens.CHAT_FORCED_CALL
    call = rebuild_stream(sse(tool_call_stream_payloads([("call_1", "ScoreOutput", ['{"score":4}'])])))
    assert count_completion(call, "gpt-4o", forced_call="ScoreOutput", azure=False).tokens == len(enc.encode_ordinary('{"score":4}'))
    # a forced call ends like any answer: a backend that bills the terminator bills it here too
    assert count_completion(call, "gpt-4o", forced_call="ScoreOutput", azure=True).tokens == (
        len(enc.encode_ordinary('{"score":4}')) + tokens.AZURE_TERMINATOR_TOKENS)


def test_a_structured_answer_when_tools_were_offered_costs_four_more_on_gpt_4o():
    """A text answer in a json_schema format to a request that offers tools: 4 tokens more than the
    same answer without tools' choice (crewAI's and pydantic-ai's gpt-4o/gpt-4o-mini answers, chat
    and Responses); a call, or an answer without tools, is unchanged; other families: not measured."""
    enc = load_encoding("o200k_base")
    answer = '{"reason":"basic arithmetic"}'
    body = {"object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}]}
    response = rebuild_body(body)
    plain = count_completion(response, "gpt-4o-mini", tools_offered=True, azure=False).tokens
    assert plain == len(enc.encode_ordinary(answer)) + 1  # answer_with_tools
    assert count_completion(response, "gpt-4o-mini", tools_offered=True, structured=True, azure=False).tokens == plain + 4
    assert count_completion(response, "gpt-4o-mini", structured=True, azure=False).tokens == plain - 1
    assert count_completion(response, "gpt-4.1-mini", tools_offered=True, structured=True, azure=False).tokens == len(
        enc.encode_ordinary(answer)) + 1
    request = {"messages": REASON_MESSAGES, "response_format": REASON_FORMAT}
    assert tokens.json_schema_format(request)
    assert tokens.json_schema_format({"input": "x", "text": {"format": {"type": "json_schema", **REASON_FORMAT["json_schema"]}}})
    assert not tokens.json_schema_format({"messages": REASON_MESSAGES, "response_format": {"type": "json_object"}})


def test_a_responses_format_without_instructions_costs_one_token_beyond_its_text():
    """pydantic-ai's gpt-4o and gpt-4o-mini Responses requests with a format and no instructions:
    exact with 1 token beyond the block's text (chat's RESPONSE_FORMAT_ALONE, 7, was 6 over)."""
    enc = load_encoding("o200k_base")
    spec = REASON_FORMAT["json_schema"]
    request = {"input": REASON_MESSAGES[0]["content"]}
    block = '# Response Formats\n\n## Reason\n\n{"properties":{"reason":{"type":"string"}},"required":["reason"],"type":"object","additionalProperties":false}'
    with_format = count_responses_input({**request, "text": {"format": {"type": "json_schema", **spec}}}, "gpt-4o-mini")
    assert with_format.tokens == count_responses_input(request, "gpt-4o-mini").tokens + len(enc.encode_ordinary(block)) + 1
    assert tokens.RESPONSE_FORMAT_ALONE_RESPONSES == 1


def test_a_format_after_a_system_message_costs_less_when_tools_are_offered_too():
    """crewAI's requests with a system message, function tools and a format: the format costs
    RESPONSE_FORMAT_WITH_TOOLS beyond its text, not RESPONSE_FORMAT_WITH_SYSTEM (3 to 4 over)."""
    system = [{"role": "system", "content": "You are terse."}, *REASON_MESSAGES]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    def format_cost(request):
        return (count_chat_prompt({**request, "response_format": REASON_FORMAT}, "gpt-4o-mini").tokens
                - count_chat_prompt(request, "gpt-4o-mini").tokens)
    without_tools = format_cost({"messages": system})
    assert format_cost({"messages": system, "tools": tools}) == without_tools - (
        tokens.RESPONSE_FORMAT_WITH_SYSTEM - tokens.RESPONSE_FORMAT_WITH_TOOLS) == without_tools - 4


#: crewAI's ScoreOutput format (gpt-4o and gpt-4.1-mini recordings: one request before and one after
#: the first title's structured answer, with a second system message)
SCORE_FORMAT = {"type": "json_schema", "json_schema": {"schema": {
    "properties": {"score": {"title": "Score", "type": "integer"}}, "required": ["score"], "title": "ScoreOutput",
    "type": "object", "additionalProperties": False}, "name": "ScoreOutput", "strict": True}}


@pytest.mark.parametrize("model", ["gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "gpt-4.1-mini-2025-04-14"])
def test_an_earlier_answer_in_a_structured_conversation_costs_four_more(model):
    """With a json_schema format, each assistant text answer in the history is shown as the structured
    answer it was: 4 tokens beyond the same history without a format (crewAI's gpt-4o, gpt-4o-mini and
    gpt-4.1-mini requests were 4 short each next to their siblings without an earlier answer)."""
    system = {"role": "system", "content": "You are Scorer."}
    history = [system, {"role": "user", "content": "Score the first title."},
               {"role": "assistant", "content": '{"score":4}'}, system, {"role": "user", "content": "Score the second."}]
    first = [system, {"role": "user", "content": "Score the first title."}]

    def format_cost(messages):
        return (count_chat_prompt({"messages": messages, "response_format": SCORE_FORMAT}, model).tokens
                - count_chat_prompt({"messages": messages}, model).tokens)

    assert format_cost(history) == format_cost(first) + 4
    # two earlier answers: 4 each
    twice = [*history, {"role": "assistant", "content": '{"score":3}'}, {"role": "user", "content": "Again."}]
    assert format_cost(twice) == format_cost(first) + 8
    # a tool-call turn is not an answer (crewAI's CalculationResult follow-ups: exact without it)
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a":1}'}}]}
    calls = [*first, call, {"role": "tool", "tool_call_id": "call_1", "content": "2"}]
    assert format_cost(calls) == format_cost(first)
    # json_object formats show nothing, so nothing more either
    plain = count_chat_prompt({"messages": history}, model).tokens
    assert count_chat_prompt({"messages": history, "response_format": {"type": "json_object"}}, model).tokens == plain


def test_an_earlier_structured_answer_costs_nothing_more_where_not_measured():
    system = {"role": "system", "content": "You are Scorer."}
    history = [system, {"role": "user", "content": "Score it."}, {"role": "assistant", "content": '{"score":4}'},
               {"role": "user", "content": "Again."}]
    first = [system, {"role": "user", "content": "Score it."}]
    for model in ("gpt-5-mini", "o3-mini", "gpt-3.5-turbo"):
        def format_cost(messages):
            return (count_chat_prompt({"messages": messages, "response_format": SCORE_FORMAT}, model).tokens
                    - count_chat_prompt({"messages": messages}, model).tokens)
        assert format_cost(history) == format_cost(first), model



#: Mirascope's Responses format: pydantic's wrapper of an int answer (gpt-4o, first turn and after an answer)
INT_FORMAT = {"type": "json_schema", "name": "int", "strict": True, "schema": {
    "description": "Wrapper for primitive type int", "properties": {"output": {"title": "Output", "type": "integer"}},
    "required": ["output"], "title": "intOutput", "type": "object", "additionalProperties": False}}


def test_an_earlier_structured_answer_in_a_responses_input_costs_only_its_text():
    """The Responses API shows an earlier answer (an ``output_text`` item) as its text, not as the
    structured answer chat shows: Mirascope's six gpt-4o requests after a JSON answer were 4 over
    with chat's 4, the same +1 as their first turns without it."""
    first = [{"role": "user", "content": "Pick a number."}]
    answer = {"type": "message", "role": "assistant", "status": "completed", "content": [
        {"type": "output_text", "text": '{"output":3}', "annotations": []}]}
    history = [*first, answer, {"role": "user", "content": "Another one."}]

    def format_cost(items):
        return (count_responses_input({"input": items, "text": {"format": INT_FORMAT}}, "gpt-4o-2024-08-06").tokens
                - count_responses_input({"input": items}, "gpt-4o-2024-08-06").tokens)

    assert format_cost(first) > 0
    assert format_cost(history) == format_cost(first)
    # chat's history answer still costs its 4 (crewAI's requests)
    chat_format = {"type": "json_schema", "json_schema": {k: v for k, v in INT_FORMAT.items() if k != "type"}}
    chat = [*first, {"role": "assistant", "content": '{"output":3}'}, history[-1]]

    def chat_cost(messages):
        return (count_chat_prompt({"messages": messages, "response_format": chat_format}, "gpt-4o-2024-08-06").tokens
                - count_chat_prompt({"messages": messages}, "gpt-4o-2024-08-06").tokens)

    assert chat_cost(chat) == chat_cost(first) + 4


#: pydantic-ai's gpt-4o shape: one function tool without parameters, no system message, a format
COUNTRY_TOOL = {"type": "function", "function": {"description": "", "name": "get_user_country", "parameters": {
    "additionalProperties": False, "properties": {}, "type": "object"}}}
CITY_SCHEMA = {"additionalProperties": False, "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
               "required": ["city", "country"], "type": "object"}


def test_a_format_beside_tools_without_a_system_message_hides_additional_properties_and_required():
    """pydantic-ai's gpt-4o requests with a tool, a format and no system message were 12 to 59 over
    with the whole schema: it is shown without ``additionalProperties`` and ``required`` there
    (RESPONSE_FORMAT_WITH_TOOLS_ALONE in chat, RESPONSE_FORMAT_ALONE_RESPONSES in the Responses API)."""
    enc = load_encoding("o200k_base")
    user = [{"role": "user", "content": "Where?"}]
    response_format = {"type": "json_schema", "json_schema": {"name": "CityLocation", "schema": CITY_SCHEMA, "strict": True}}
    shown = '# Response Formats\n\n## CityLocation\n\n{"properties":{"city":{"type":"string"},"country":{"type":"string"}},"type":"object"}'
    chat = {"messages": user, "tools": [COUNTRY_TOOL]}
    cost = count_chat_prompt({**chat, "response_format": response_format}, "gpt-4o").tokens - count_chat_prompt(chat, "gpt-4o").tokens
    assert cost == len(enc.encode_ordinary(shown)) + tokens.RESPONSE_FORMAT_WITH_TOOLS_ALONE == len(enc.encode_ordinary(shown)) + 2
    flat_tool = {"type": "function", **COUNTRY_TOOL["function"]}
    responses = {"input": user, "tools": [flat_tool]}
    text = {"format": {"type": "json_schema", **response_format["json_schema"]}}
    cost = (count_responses_input({**responses, "text": text}, "gpt-4o").tokens
            - count_responses_input(responses, "gpt-4o").tokens)
    assert cost == len(enc.encode_ordinary(shown)) + tokens.RESPONSE_FORMAT_ALONE_RESPONSES
    # without tools, or after a system message, the schema is shown whole (crewAI, dd-trace-py, elastic)
    whole = '# Response Formats\n\n## CityLocation\n\n' + orjson.dumps(CITY_SCHEMA).decode()
    alone = (count_chat_prompt({"messages": user, "response_format": response_format}, "gpt-4o").tokens
             - count_chat_prompt({"messages": user}, "gpt-4o").tokens)
    assert alone == len(enc.encode_ordinary(whole)) + tokens.RESPONSE_FORMAT_ALONE
    system = [{"role": "system", "content": "Be brief"}, *user]
    with_system = {"messages": system, "tools": [COUNTRY_TOOL]}
    cost = (count_chat_prompt({**with_system, "response_format": response_format}, "gpt-4o").tokens
            - count_chat_prompt(with_system, "gpt-4o").tokens)
    assert cost == len(enc.encode_ordinary("Be brief\n\n" + whole)) - len(enc.encode_ordinary("Be brief")) + tokens.RESPONSE_FORMAT_WITH_TOOLS
    # a property named like a hidden keyword stays
    named = {"type": "object", "properties": {"required": {"type": "boolean"}, "title": {"type": "string"}}}
    assert tokens._without_titles(named, hidden=tokens._TOOLS_ALONE_HIDDEN) == named


def _coworker_tool(name: str, field: str) -> dict:
    """A tool of crewAI's coworker-pair shape (titled and described string properties, all required)."""
    properties = {
        key: {"description": f"The {key} for the work", "title": key.title(), "type": "string"}
        for key in (field, "context", "coworker")
    }
    return {"type": "function", "function": {
        "name": name, "description": "Hand work to a coworker: Scorer\nShare everything they need.",
        "parameters": {"properties": properties, "required": list(properties), "type": "object"}}}


def test_gpt41_several_functions_after_a_system_message_cost_three_more():
    # crewAI's gpt-4.1-mini requests with 2 or 3 functions after a system message were 3 short each
    # (nine requests, four tool sets), its one-function ones exact: once per request, gpt-4.1 only.
    one = [_coworker_tool("delegate_work_to_coworker", "task")]
    two = [*one, _coworker_tool("ask_question_to_coworker", "question")]
    three = [*two, _coworker_tool("review_work_of_coworker", "work")]
    system = [{"role": "system", "content": "You are Scorer."}, {"role": "user", "content": "Score it."}]
    alone = system[1:]

    def extra(model: str, messages: list, tools: list) -> int:
        return (count_chat_prompt({"messages": messages, "tools": tools}, model).tokens
                - count_chat_prompt({"messages": messages, "tools": one}, model).tokens)

    for model in ("gpt-4.1-mini", "gpt-4.1", "gpt-4.1-nano"):
        assert extra(model, system, two) == extra("gpt-4o", system, two) + 3
        assert extra(model, system, three) == extra("gpt-4o", system, three) + 3
        # without a system message (the namespace opens its own): not seen, not counted
        assert extra(model, alone, two) == extra("gpt-4o", alone, two)
    # the Responses API renders tools its own way: not counted there either
    responses = lambda model, tools: count_responses_input(  # noqa: E731
        {"instructions": "You are Scorer.", "input": "Score it.",
         "tools": [{"type": "function", **tool["function"]} for tool in tools]}, model).tokens
    assert responses("gpt-4.1-mini", two) - responses("gpt-4.1-mini", one) == (
        responses("gpt-4o", two) - responses("gpt-4o", one))


def test_a_cl100k_text_answer_when_tools_were_offered_costs_one_more():
    """gpt-3.5-turbo and gpt-4 (cl100k) answer in text after tool results one token beyond the text,
    as gpt-4o does (crewAI's three gpt-3.5-turbo-0125 and one gpt-4-0125-preview answers were each
    one short without it); a call, and an answer to a request without tools, are unchanged."""
    enc = load_encoding("cl100k_base")
    answer = "The total is 42."
    body = {"object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}]}
    response = rebuild_body(body)
    for model in ("gpt-3.5-turbo-0125", "gpt-4-0125-preview", "gpt-4-0613"):
        assert count_completion(response, model, azure=False).tokens == len(enc.encode_ordinary(answer))
        assert count_completion(response, model, tools_offered=True, azure=False).tokens == len(
            enc.encode_ordinary(answer)) + 1
    call = rebuild_body({"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "counting_tool", "arguments": '{"value":"one"}'}}]}}]})
    assert count_completion(call, "gpt-3.5-turbo-0125", tools_offered=True, azure=False).tokens == (
        count_completion(call, "gpt-3.5-turbo-0125", azure=False).tokens)


def test_a_sender_cannot_fill_the_framing_cache_with_model_names():
    """The framing rules are cached per model name; a name longer than any model's (a sender writes
    it) is read each time and never kept, so a batch of megabyte names holds no memory."""
    from metering.usage.tokens import _framing

    _framing.cache_clear()
    assert _framing("gpt-4o-2024-11-20") is _framing("gpt-4o")
    before = _framing.cache_info().currsize
    huge = "gpt-4o-" + "x" * 1_000_000
    assert _framing(huge) is _framing("gpt-4o")
    assert _framing.cache_info().currsize == before
