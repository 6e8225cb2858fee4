"""Offline token counting with tiktoken: vendored encodings, model → encoding, and prompt/completion counts.

Pure functions. The only I/O is reading a vendored ``encodings/*.tiktoken`` file the first time
its encoding is needed (sha256-checked by tiktoken); nothing ever downloads, because the Function
App usually runs without outbound internet. ``tiktoken.get_encoding``/``encoding_for_model`` are
never called: they fetch from the network.

Counts follow OpenAI's cookbook "How to count tokens with tiktoken": 3 tokens per chat message,
1 per ``name``, 3 to prime the reply, and its ``num_tokens_for_tools`` rules for tool definitions.
They are estimates, used only when the provider did not report usage; every caveat is returned as
a note (e.g. ``image_tokens_defaulted``) so reports can say how good a number is.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import gc
import hashlib
import io
import math
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import tiktoken
from tiktoken_ext.openai_public import ENDOFPROMPT, ENDOFTEXT, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, r50k_pat_str

from metering.usage.sse import RebuiltStream

__all__ = [
    "ENCODINGS_DIR",
    "ENCODING_SHA256",
    "FALLBACK_ENCODING",
    "EncodingChoice",
    "TokenCount",
    "PromptCount",
    "load_encoding",
    "choose_encoding",
    "encoding_name_for_model",
    "encoding_for_model",
    "count_text",
    "image_tokens",
    "image_size_from_data_url",
    "count_chat_prompt",
    "count_responses_input",
    "count_completions_prompt",
    "count_embeddings_input",
    "count_completion",
]

# --- vendored encodings --------------------------------------------------------------------

ENCODINGS_DIR = Path(__file__).resolve().parent / "encodings"

#: sha256 of each vendored file: the same values tiktoken checks when it downloads them.
ENCODING_SHA256: dict[str, str] = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "p50k_base": "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
}

# tiktoken keeps these two patterns inside its (downloading) constructor functions, so they are
# restated here; tests/test_tokens.py asserts they equal tiktoken_ext.openai_public's own.
_CL100K_PAT = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

_SPEC: dict[str, dict[str, Any]] = {
    "o200k_base": {"pat_str": _O200K_PAT, "special_tokens": {ENDOFTEXT: 199999, ENDOFPROMPT: 200018}},
    "cl100k_base": {
        "pat_str": _CL100K_PAT,
        "special_tokens": {
            ENDOFTEXT: 100257,
            FIM_PREFIX: 100258,
            FIM_MIDDLE: 100259,
            FIM_SUFFIX: 100260,
            ENDOFPROMPT: 100276,
        },
    },
    "p50k_base": {"pat_str": r50k_pat_str, "special_tokens": {ENDOFTEXT: 50256}, "explicit_n_vocab": 50281},
}

_ENCODINGS: dict[str, tiktoken.Encoding] = {}
_LOAD_LOCK = threading.Lock()


def load_encoding(name: str) -> tiktoken.Encoding:
    """The named encoding built from its vendored file, loaded once per process (thread-safe).

    The file's sha256 is checked first (the value tiktoken checks when it downloads it), so a
    corrupted or swapped file fails loudly. Nothing is written anywhere (tiktoken's own loader
    would copy the file into its cache directory, which a Function App may not be able to write).
    """
    encoding = _ENCODINGS.get(name)
    if encoding is not None:
        return encoding
    if name not in _SPEC:
        raise ValueError(f"no vendored encoding {name!r}; have {sorted(_SPEC)}")
    with _LOAD_LOCK:
        encoding = _ENCODINGS.get(name)
        if encoding is None:
            encoding = tiktoken.Encoding(name, mergeable_ranks=_mergeable_ranks(name), **_SPEC[name])
            # The Rust core keeps its own copy of the ranks: drop the Python one (~30 MB for
            # o200k_base, only used to pickle an encoding) and give the freed heap back.
            encoding._mergeable_ranks = {}
            _release_memory()
            _ENCODINGS[name] = encoding
    return encoding


def _read_vendored(path: Path) -> bytes:
    return path.read_bytes()


def _mergeable_ranks(name: str) -> dict[bytes, int]:
    """BPE ranks from the vendored file (``base64-token rank`` per line), its sha256 checked.

    Read line by line into the dict, without the intermediate lists tiktoken's loader makes,
    to keep the peak memory of loading an encoding low.
    """
    path = ENCODINGS_DIR / f"{name}.tiktoken"
    expected = ENCODING_SHA256[name]
    data = _read_vendored(path)
    if hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(f"Hash mismatch for vendored encoding {path} (expected {expected})")
    decode = base64.b64decode
    return {decode(token): int(rank) for token, rank in (line.split() for line in io.BytesIO(data) if not line.isspace())}


def _release_memory() -> None:
    """Return freed heap to the operating system after a large transient allocation (glibc only)."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc (musl has no malloc_trim): nothing to do
        pass


# --- model → encoding ----------------------------------------------------------------------

#: Used for a model we cannot name. Every current Azure OpenAI text model (gpt-4o onwards, the
#: o-series, gpt-4.1, gpt-5) uses o200k_base, so an unknown name, usually a newer model or a
#: free-text deployment name, is most likely one of them.
FALLBACK_ENCODING = "o200k_base"

_SEPARATORS = "-_.:@ "
# (stem, encoding, separators allowed right after the stem). First match wins, so the o200k
# "gpt-4.1"/"gpt-4o" stems come before cl100k's "gpt-4" (which only accepts "-"/"_" after it).
_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("gpt-4o", "o200k_base", _SEPARATORS),
    ("chatgpt-4o", "o200k_base", _SEPARATORS),
    ("gpt-4.1", "o200k_base", _SEPARATORS),
    ("gpt-4.5", "o200k_base", _SEPARATORS),
    ("gpt-5", "o200k_base", _SEPARATORS),
    ("o1", "o200k_base", _SEPARATORS),
    ("o3", "o200k_base", _SEPARATORS),
    ("o4", "o200k_base", _SEPARATORS),
    ("gpt-image", "o200k_base", _SEPARATORS),
    ("gpt-oss", "o200k_base", _SEPARATORS),  # o200k_harmony: same ordinary tokens as o200k_base
    ("gpt-realtime", "o200k_base", _SEPARATORS),
    ("gpt-audio", "o200k_base", _SEPARATORS),
    ("computer-use", "o200k_base", _SEPARATORS),
    ("codex-mini", "o200k_base", _SEPARATORS),
    ("gpt-4", "cl100k_base", "-_"),  # gpt-4, gpt-4-0613, gpt-4-32k, gpt-4-turbo, gpt-4-vision-preview
    ("gpt-35-turbo", "cl100k_base", _SEPARATORS),  # Azure spelling
    ("gpt-3.5-turbo", "cl100k_base", _SEPARATORS),
    ("text-embedding-ada-002", "cl100k_base", _SEPARATORS),
    ("text-embedding-3", "cl100k_base", _SEPARATORS),
    ("ada", "cl100k_base", ""),  # Azure names text-embedding-ada-002 "ada" in embeddings responses
    ("davinci-002", "cl100k_base", _SEPARATORS),
    ("babbage-002", "cl100k_base", _SEPARATORS),
    ("text-davinci-002", "p50k_base", _SEPARATORS),
    ("text-davinci-003", "p50k_base", _SEPARATORS),
    ("code-davinci", "p50k_base", _SEPARATORS),
    ("code-cushman", "p50k_base", _SEPARATORS),
)


class EncodingChoice(NamedTuple):
    """The encoding for a model, and whether it was the documented fallback for an unknown name."""

    name: str
    fallback: bool


def _normalize_model(model: str) -> str:
    """Lower-case a model name and drop decorations: ``ft:`` fine-tune form, ``provider/`` prefix."""
    name = model.strip().lower()
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    return name.rsplit("/", 1)[-1]


def choose_encoding(model: str | None) -> EncodingChoice:
    """Which vendored encoding counts ``model``'s tokens (Azure and OpenAI spellings, dated versions)."""
    if model:
        name = _normalize_model(model)
        for stem, encoding, separators in _FAMILIES:
            if name.startswith(stem) and (len(name) == len(stem) or name[len(stem)] in separators):
                return EncodingChoice(encoding, False)
    return EncodingChoice(FALLBACK_ENCODING, True)


def encoding_name_for_model(model: str | None) -> str:
    """Name of the encoding for ``model``; unknown or missing models get ``FALLBACK_ENCODING``."""
    return choose_encoding(model).name


def encoding_for_model(model: str | None) -> tiktoken.Encoding:
    """The offline ``tiktoken.Encoding`` for ``model`` (see ``encoding_name_for_model``)."""
    return load_encoding(choose_encoding(model).name)


def _is_reasoning_model(model: str | None) -> bool:
    """Models whose hidden reasoning tokens are billed as output but never appear in a stream."""
    if not model:
        return False
    name = _normalize_model(model)
    if name.startswith("gpt-5") and "chat" in name:
        return False
    return any(name == s or name.startswith(s + "-") or name.startswith(s + ".") for s in ("o1", "o3", "o4", "gpt-5", "gpt-oss"))


# --- counting ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A token estimate and the caveats that came with it (e.g. ``encoding_fallback``)."""

    tokens: int
    notes: tuple[str, ...] = ()


PromptCount = TokenCount  # the name the issue uses for prompt estimates


class _Counter:
    """Counts text with one encoding and collects notes (each once, in order)."""

    __slots__ = ("encode", "notes")

    def __init__(self, model: str | None):
        choice = choose_encoding(model)
        self.encode = load_encoding(choice.name).encode_ordinary
        self.notes: list[str] = ["encoding_fallback"] if choice.fallback else []

    def text(self, value: str) -> int:
        # encode_ordinary: text that looks like "<|endoftext|>" is user text, not a special token.
        return len(self.encode(value)) if value else 0

    def note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def result(self, tokens: int) -> TokenCount:
        return TokenCount(max(tokens, 0), tuple(self.notes))


def count_text(text: str, model: str | None) -> int:
    """Tokens of plain text for ``model`` (special-token lookalikes count as ordinary text)."""
    return len(encoding_for_model(model).encode_ordinary(text)) if text else 0


# images -----------------------------------------------------------------------------------

_IMAGE_BASE_TOKENS = 85
_IMAGE_TILE_TOKENS = 170
#: A high-detail image of unknown size is counted as 1024×1024: 4 tiles → 765 tokens.
_DEFAULT_IMAGE_TOKENS = 765


def image_tokens(width: int, height: int, detail: str | None = "high") -> int:
    """Image input tokens by OpenAI's tile formula (gpt-4o / gpt-4-turbo vision).

    ``low`` detail costs 85. Otherwise the image is scaled to fit 2048×2048, then its shortest
    side down to 768, and costs 85 + 170 per 512-px tile (``auto`` is treated as ``high``).
    """
    if detail == "low":
        return _IMAGE_BASE_TOKENS
    w, h = float(width), float(height)
    if w <= 0 or h <= 0:
        return _DEFAULT_IMAGE_TOKENS
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    return _IMAGE_BASE_TOKENS + _IMAGE_TILE_TOKENS * math.ceil(w / 512) * math.ceil(h / 512)


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_size_from_data_url(url: str) -> tuple[int, int] | None:
    """Width and height of a base64 ``data:`` image URL from its header (PNG, JPEG, GIF, WebP).

    Only the first 256 KiB of the payload is decoded, so a capture truncated by APIM still
    yields the size when the header survived. ``None`` when the size cannot be read.
    """
    if not url.startswith("data:"):
        return None
    comma = url.find(",")
    if comma < 0 or ";base64" not in url[:comma]:
        return None
    payload = url[comma + 1 : comma + 1 + 256 * 1024]
    payload = payload[: len(payload) - len(payload) % 4]
    try:
        data = base64.b64decode(payload)
    except (binascii.Error, ValueError):
        return None
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            chunk = data[12:16]
            if chunk == b"VP8X":
                return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            return None
        if data[:2] == b"\xff\xd8":
            i = 2
            while i + 9 <= len(data):
                if data[i] != 0xFF:
                    i += 1
                    continue
                marker = data[i + 1]
                if marker in _JPEG_SOF:
                    h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                    return w, h
                if marker == 0xFF:
                    i += 1
                elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
                    i += 2
                else:
                    i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    except struct.error:
        return None
    return None


def _image_part_tokens(image: Any, detail: Any, counter: _Counter) -> int:
    """Tokens of one image part; unknown size → the documented 765 default with a note."""
    if isinstance(image, dict):
        detail = image.get("detail", detail)
        url = image.get("url")
        width, height = image.get("width"), image.get("height")  # non-standard, used when a client sends them
    else:
        url, width, height = image, None, None
    if detail == "low":
        return _IMAGE_BASE_TOKENS
    size = None
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        size = (width, height)
    elif isinstance(url, str):
        size = image_size_from_data_url(url)
    if size is None or size[0] <= 0 or size[1] <= 0:
        counter.note("image_tokens_defaulted")
        return _DEFAULT_IMAGE_TOKENS
    return image_tokens(size[0], size[1], "high")


# content and messages ----------------------------------------------------------------------

_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


def _content_tokens(content: Any, counter: _Counter) -> int:
    """Tokens of message content: a string, or a list of parts (text, image, refusal, …)."""
    if isinstance(content, str):
        return counter.text(content)
    if not isinstance(content, list):
        if content is not None:
            counter.note("unknown_content_shape")
        return 0
    tokens = 0
    for part in content:
        if isinstance(part, str):
            tokens += counter.text(part)
            continue
        if not isinstance(part, dict):
            counter.note("unknown_content_part")
            continue
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            text = part.get("text")
            tokens += counter.text(text) if isinstance(text, str) else 0
        elif kind == "image_url":
            tokens += _image_part_tokens(part.get("image_url"), part.get("detail"), counter)
        elif kind == "input_image":  # Responses API: image_url is a string, detail beside it
            tokens += _image_part_tokens(part.get("image_url") or part.get("file_id"), part.get("detail"), counter)
        elif kind == "refusal":
            refusal = part.get("refusal")
            tokens += counter.text(refusal) if isinstance(refusal, str) else 0
        elif kind in ("input_audio", "audio"):
            counter.note("audio_not_counted")
        elif kind in ("file", "input_file"):
            counter.note("file_not_counted")
        else:
            counter.note("unknown_content_part")
    return tokens


def _chat_overheads(model: str | None) -> tuple[int, int]:
    """(tokens per message, tokens per name): 4 and −1 for the 0301 snapshot, else 3 and 1."""
    if model:
        name = _normalize_model(model)
        if "0301" in name and ("gpt-35" in name or "gpt-3.5" in name):
            return 4, -1
    return 3, 1


_REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>
_ID_FIELDS = frozenset({"tool_call_id", "id"})  # routing ids: not rendered into the prompt


def _call_tokens(name: Any, arguments: Any, counter: _Counter) -> int:
    """Tokens of a function/tool call's name and JSON arguments."""
    tokens = counter.text(name) if isinstance(name, str) else 0
    if isinstance(arguments, str):
        tokens += counter.text(arguments)
    elif arguments is not None:
        counter.note("unknown_tool_call_shape")
    return tokens


def _message_tokens(message: Any, counter: _Counter, per_message: int, per_name: int) -> int:
    """Tokens of one chat message: the cookbook rule, extended to parts and tool calls.

    Every string field is encoded (as the cookbook does) except routing ids (``tool_call_id``);
    each ``tool_calls`` entry in assistant history costs ``per_message`` plus its name and
    arguments, as if the call were a message of its own; ``function_call`` costs name + arguments.
    """
    if not isinstance(message, dict):
        counter.note("unknown_message_shape")
        return 0
    tokens = per_message
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, str):
            if key in _ID_FIELDS:
                continue
            tokens += counter.text(value)
            if key == "name":
                tokens += per_name
        elif key == "content":
            tokens += _content_tokens(value, counter)
        elif key == "tool_calls" and isinstance(value, list):
            for call in value:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    tokens += per_message + _call_tokens(fn.get("name"), fn.get("arguments"), counter)
                else:
                    counter.note("unknown_tool_call_shape")
        elif key == "function_call" and isinstance(value, dict):
            tokens += _call_tokens(value.get("name"), value.get("arguments"), counter)
        elif key == "audio":
            counter.note("audio_not_counted")
        else:
            counter.note("message_field_not_counted")
    return tokens


# tool definitions --------------------------------------------------------------------------


class _ToolConstants(NamedTuple):
    func_init: int
    prop_init: int
    prop_key: int
    enum_init: int
    enum_item: int
    func_end: int


# From the cookbook's num_tokens_for_tools: gpt-4o/gpt-4o-mini (and, by encoding, every o200k
# model) vs gpt-3.5-turbo/gpt-4 (every other encoding).
_TOOLS_O200K = _ToolConstants(7, 3, 3, -3, 3, 12)
_TOOLS_CL100K = _ToolConstants(10, 3, 3, -3, 3, 12)


def _strip_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text


def _type_label(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " | ".join(str(v) for v in value)
    return ""


def _properties_tokens(properties: dict[str, Any], c: _ToolConstants, counter: _Counter) -> int:
    """The cookbook's per-property rule; nested object/array properties use the same rule."""
    tokens = c.prop_init
    for key, spec in properties.items():
        tokens += c.prop_key
        if not isinstance(spec, dict):
            tokens += counter.text(f"{key}::")
            counter.note("tool_schema_approximated")
            continue
        enum = spec.get("enum")
        if isinstance(enum, list):
            tokens += c.enum_init
            for item in enum:
                tokens += c.enum_item + counter.text(item if isinstance(item, str) else str(item))
        description = spec.get("description")
        description = _strip_period(description) if isinstance(description, str) else ""
        tokens += counter.text(f"{key}:{_type_label(spec.get('type'))}:{description}")
        nested = spec.get("properties")
        if not nested and isinstance(spec.get("items"), dict):
            nested = spec["items"].get("properties")
        if isinstance(nested, dict) and nested:
            counter.note("tool_schema_approximated")
            tokens += _properties_tokens(nested, c, counter)
    return tokens


def _function_definition(tool: Any, counter: _Counter) -> dict[str, Any] | None:
    """The function definition inside a tool: Chat ``{type, function:{…}}``, Responses flat
    ``{type:"function", name, …}`` or a legacy ``functions`` entry. Built-in tools → None + note."""
    if not isinstance(tool, dict):
        counter.note("unknown_tool_shape")
        return None
    kind = tool.get("type")
    if isinstance(tool.get("function"), dict) and kind in (None, "function"):
        return tool["function"]
    if kind in (None, "function") and isinstance(tool.get("name"), str):
        return tool
    counter.note("builtin_tool_not_counted")
    return None


def _tools_tokens(tools: Any, counter: _Counter, model: str | None) -> int:
    """Tool definition tokens per the cookbook's ``num_tokens_for_tools`` (without the messages)."""
    if not isinstance(tools, list) or not tools:
        return 0
    c = _TOOLS_O200K if choose_encoding(model).name == "o200k_base" else _TOOLS_CL100K
    tokens = 0
    counted = False
    for tool in tools:
        fn = _function_definition(tool, counter)
        if fn is None:
            continue
        counted = True
        tokens += c.func_init
        name = fn.get("name")
        description = fn.get("description")
        description = _strip_period(description) if isinstance(description, str) else ""
        tokens += counter.text(f"{name if isinstance(name, str) else ''}:{description}")
        parameters = fn.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        if isinstance(properties, dict) and properties:
            tokens += _properties_tokens(properties, c, counter)
    return tokens + (c.func_end if counted else 0)


def _response_format_note(request: dict[str, Any], counter: _Counter) -> None:
    response_format = request.get("response_format")
    text_format = request.get("text")
    if (isinstance(response_format, dict) and response_format.get("type") == "json_schema") or (
        isinstance(text_format, dict)
        and isinstance(text_format.get("format"), dict)
        and text_format["format"].get("type") == "json_schema"
    ):
        counter.note("response_format_not_counted")


def count_chat_prompt(request: dict[str, Any], model: str | None) -> TokenCount:
    """Prompt tokens of a Chat Completions request: messages (+3 reply priming) and tools/functions."""
    counter = _Counter(model)
    if not isinstance(request, dict):
        counter.note("unknown_request_shape")
        return counter.result(0)
    per_message, per_name = _chat_overheads(model)
    messages = request.get("messages")
    tokens = 0
    if isinstance(messages, list):
        for message in messages:
            tokens += _message_tokens(message, counter, per_message, per_name)
        tokens += _REPLY_PRIMING
    else:
        counter.note("messages_missing")
    tokens += _tools_tokens(request.get("tools"), counter, model)
    tokens += _tools_tokens(request.get("functions"), counter, model)
    _response_format_note(request, counter)
    return counter.result(tokens)


def count_responses_input(request: dict[str, Any], model: str | None) -> TokenCount:
    """Prompt tokens of a Responses API request, counted as a chat conversation.

    ``instructions`` is a system message; a string ``input`` is one user message; input items
    are messages (role + content), ``function_call`` (name + arguments) and ``function_call_output``
    (its output), each with the per-message overhead; +3 reply priming; function tools as in chat.
    Reasoning items and item references (server-side state) cannot be counted and are noted.
    """
    counter = _Counter(model)
    if not isinstance(request, dict):
        counter.note("unknown_request_shape")
        return counter.result(0)
    per_message, per_name = _chat_overheads(model)
    tokens = _REPLY_PRIMING
    instructions = request.get("instructions")
    if isinstance(instructions, str) and instructions:
        tokens += per_message + counter.text("system") + counter.text(instructions)
    items = request.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    elif not isinstance(items, list):
        items = []
        counter.note("input_missing")
    for item in items:
        if isinstance(item, str):
            tokens += per_message + counter.text("user") + counter.text(item)
            continue
        if not isinstance(item, dict):
            counter.note("unknown_input_item")
            continue
        kind = item.get("type")
        if kind in (None, "message"):
            role = item.get("role")
            tokens += per_message + (counter.text(role) if isinstance(role, str) else 0)
            tokens += _content_tokens(item.get("content"), counter)
            if isinstance(item.get("name"), str):
                tokens += counter.text(item["name"]) + per_name
        elif kind == "function_call":
            tokens += per_message + _call_tokens(item.get("name"), item.get("arguments"), counter)
        elif kind == "function_call_output":
            output = item.get("output")
            tokens += per_message + (counter.text(output) if isinstance(output, str) else _content_tokens(output, counter))
        elif kind == "reasoning":
            counter.note("reasoning_input_not_counted")
        elif kind == "item_reference":
            counter.note("item_reference_not_counted")
        else:
            counter.note("unknown_input_item")
    if request.get("previous_response_id"):
        counter.note("previous_response_not_counted")
    tokens += _tools_tokens(request.get("tools"), counter, model)
    _response_format_note(request, counter)
    return counter.result(tokens)


def _inputs_tokens(value: Any, counter: _Counter) -> int:
    """Tokens of a prompt/input: string, list of strings, token array, or list of token arrays."""
    if isinstance(value, str):
        return counter.text(value)
    if not isinstance(value, list):
        if value is not None:
            counter.note("unknown_input_shape")
        return 0
    tokens = 0
    for item in value:
        if isinstance(item, str):
            tokens += counter.text(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            tokens += 1  # a token id
        elif isinstance(item, list):
            ids = sum(1 for token in item if isinstance(token, int) and not isinstance(token, bool))
            if ids != len(item):
                counter.note("unknown_input_shape")
            tokens += ids
        else:
            counter.note("unknown_input_shape")
    return tokens


def count_completions_prompt(prompt: Any, model: str | None) -> TokenCount:
    """Prompt tokens of a legacy Completions request (no per-message overhead)."""
    counter = _Counter(model)
    return counter.result(_inputs_tokens(prompt, counter))


def count_embeddings_input(input: Any, model: str | None) -> TokenCount:  # noqa: A002 - the API's name
    """Input tokens of an Embeddings request (strings or token arrays, each input summed)."""
    counter = _Counter(model)
    return counter.result(_inputs_tokens(input, counter))


def count_completion(stream: RebuiltStream, model: str | None) -> TokenCount:
    """Completion tokens of a rebuilt stream or body: every choice's text, refusal and calls.

    Tool and function calls count their name and arguments only. Hidden reasoning tokens of
    reasoning models cannot be seen, so the estimate is a lower bound for them (noted).
    """
    counter = _Counter(model)
    tokens = 0
    for choice in stream.choices:
        tokens += counter.text(choice.text) + counter.text(choice.refusal)
        for call in choice.tool_calls:
            tokens += counter.text(call.name) + counter.text(call.arguments)
        if choice.function_call is not None:
            tokens += counter.text(choice.function_call.name) + counter.text(choice.function_call.arguments)
    if _is_reasoning_model(model):
        counter.note("reasoning_tokens_not_estimated")
    return counter.result(tokens)
