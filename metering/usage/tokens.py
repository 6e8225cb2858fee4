"""Offline token counting with tiktoken: vendored encodings, model → encoding, and prompt/completion counts.

Pure functions. The only I/O is reading a vendored ``encodings/*.tiktoken`` file the first time
its encoding is needed (sha256-checked by tiktoken); nothing ever downloads, because the Function
App usually runs without outbound internet. ``tiktoken.get_encoding``/``encoding_for_model`` are
never called: they fetch from the network.

Counts start from OpenAI's cookbook "How to count tokens with tiktoken" (3 tokens per chat
message, 1 per ``name``, 3 to prime the reply) and add what real recordings with provider-reported
usage showed (docs/public-data.md; fitted on their calibration split only; docs/estimates.md):
tool definitions rendered as the TypeScript namespace the model is shown, tool calls
as ``to=functions.NAME`` + arguments (several as one ``multi_tool_use.parallel`` call), and the
framing constants of each model family (``_Framing``). They are estimates, used only when the
provider did not report usage; every caveat is returned as a note (e.g. ``image_tokens_defaulted``,
``reasoning_tokens_not_estimated``) so reports can say how good a number is.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import gc
import hashlib
import io
import math
import re
import struct
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import tiktoken
from tiktoken_ext.openai_public import ENDOFPROMPT, ENDOFTEXT, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, r50k_pat_str

from metering.short_key_cache import short_key_cache
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
    "AZURE_TERMINATOR_TOKENS",
    "AZURE_TERMINATOR_SINCE",
    "OPENAI_TERMINATOR_FROM",
    "OPENAI_TERMINATOR_STOP_FROM",
    "OPENAI_TERMINATOR_UNTIL",
    "forced_function",
    "forced_chat_function",
    "json_schema_format",
    "RESPONSE_FORMAT_WITH_SYSTEM",
    "RESPONSE_FORMAT_ALONE",
    "RESPONSE_FORMAT_ALONE_RESPONSES",
    "RESPONSE_FORMAT_WITH_TOOLS",
    "is_reasoning_model",
    "model_in_name",
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
    # a2b_base64 is what b64decode calls after its argument checks; the file is known good (its
    # sha256), and every one of its lines is "token rank": this is a third faster at cold start.
    decode = binascii.a2b_base64
    return {decode(token): int(rank) for token, rank in map(bytes.split, io.BytesIO(data))}


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


@short_key_cache(maxsize=512)
def choose_encoding(model: str | None) -> EncodingChoice:
    """Which vendored encoding counts ``model``'s tokens (Azure and OpenAI spellings, dated versions);
    a gateway has a handful of models, each read once."""
    if model:
        name = _normalize_model(model)
        for stem, encoding, separators in _FAMILIES:
            if name.startswith(stem) and (len(name) == len(stem) or name[len(stem)] in separators):
                return EncodingChoice(encoding, False)
    return EncodingChoice(FALLBACK_ENCODING, True)


_SQUEEZED_GPT = re.compile(r"gpt(?=\d)")


def model_in_name(name: str | None) -> str | None:
    """The known model a free-text name (an Azure deployment name) spells, or None.

    Deployment names often wrap the model in other words (``contoso-gpt-4o-mini-prod``,
    ``eastus-o3-mini``) or squeeze it (``gpt4o``, ``gpt35-turbo``). The model is the rest of the
    name from the first word boundary at which a known model family starts; ``chat-prod`` names
    none. Used to pick the encoding when nothing better says which model served a request.
    """
    if not name:
        return None
    text = _SQUEEZED_GPT.sub("gpt-", _normalize_model(name))
    for start in range(len(text)):
        if start == 0 or text[start - 1] in _SEPARATORS:
            candidate = text[start:]
            if not choose_encoding(candidate).fallback:
                return candidate
    return None


def encoding_name_for_model(model: str | None) -> str:
    """Name of the encoding for ``model``; unknown or missing models get ``FALLBACK_ENCODING``."""
    return choose_encoding(model).name


def encoding_for_model(model: str | None) -> tiktoken.Encoding:
    """The offline ``tiktoken.Encoding`` for ``model`` (see ``encoding_name_for_model``)."""
    return load_encoding(choose_encoding(model).name)


@short_key_cache(maxsize=512)
def is_reasoning_model(model: str | None) -> bool:
    """Models whose hidden reasoning tokens are billed as output but never appear in a stream (each
    model name read once)."""
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


#: Token counts of prompt texts counted lately, one table per encoding, keyed by a 128-bit BLAKE2b
#: digest of the text's UTF-8 (the text itself is never kept). Requests re-send their system prompt,
#: their tool definitions and, in a conversation, every earlier turn, so the same texts come back
#: request after request; hashing one costs a tenth of encoding it. Shorter texts than
#: ``COUNT_CACHE_SHORTEST`` characters encode about as fast as they hash and are not kept. A full
#: table is emptied (``COUNT_CACHE_ENTRIES`` entries, about 2 MB): no sender can grow it further.
COUNT_CACHE_ENTRIES = 16_384
COUNT_CACHE_SHORTEST = 64
_prompt_counts: dict[str, dict[bytes, int]] = {}


class _Counter:
    """Counts text with one encoding and collects notes (each once, in order). ``prompt``: the
    texts are a request's, which repeat across requests (their counts are kept, see
    ``_prompt_counts``); an answer's are counted afresh."""

    __slots__ = ("encode", "notes", "schema_budget", "model", "counts")

    def __init__(self, model: str | None, *, prompt: bool = True):
        self.model = model
        choice = choose_encoding(model)
        self.encode = load_encoding(choice.name).encode_ordinary
        self.counts = _prompt_counts.setdefault(choice.name, {}) if prompt else None
        self.notes: list[str] = ["encoding_fallback"] if choice.fallback else []
        #: what rendering this request's schemas may still spend (set per request, see _SchemaBudget)
        self.schema_budget = _SchemaBudget(0)

    def text(self, value: str) -> int:
        # encode_ordinary: text that looks like "<|endoftext|>" is user text, not a special token.
        if not value:
            return 0
        counts = self.counts
        if counts is None or len(value) < COUNT_CACHE_SHORTEST:
            return len(self.encode(value))
        key = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        tokens = counts.get(key)
        if tokens is None:
            tokens = len(self.encode(value))
            if len(counts) >= COUNT_CACHE_ENTRIES:
                counts.clear()
            counts[key] = tokens
        return tokens

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
#: (A high-detail image of unknown size is counted as 1024×1024: 4 tiles, 765 tokens on gpt-4o.)
#: gpt-4o-mini bills an image 33⅓ times gpt-4o's tokens (OpenAI's pricing: 2,833 base, 5,667 per
#: tile), so that its images cost about what gpt-4o's do; crewAI's gpt-4o-mini recordings of
#: 2-tile images report exactly 2,833 + 2 × 5,667 for each.
_MINI_IMAGE_RATES = (2833, 5667)


#: gpt-5 bills 70 + 140 per tile (OpenAI's pricing; a crewAI recording of a 2-tile image: exactly 350).
_GPT5_IMAGE_RATES = (70, 140)
#: Models that bill an image by 32-px patches (OpenAI's pricing: the patches covering it, at most
#: 1,536 after scaling down), times the model's multiplier, plus one token. Calibration recordings
#: (crewAI, pydantic-ai) report exactly ceil(patches × multiplier) + 1 for each image: 640×480 on
#: gpt-4.1-mini (488, one over), o4-mini (517) and gpt-5-nano (451), 540×360 on gpt-4.1-nano (503),
#: 640×480 on gpt-5-mini (361). gpt-5-mini and gpt-5-nano bill 1.2 and 1.5 per patch, not the
#: 1.62 and 2.46 of the gpt-4.1 models (one image size each: a fit, not a documented figure).
_PATCH_MULTIPLIERS: tuple[tuple[str, float], ...] = (
    ("gpt-4.1-mini", 1.62),
    ("gpt-4.1-nano", 2.46),
    ("o4-mini", 1.72),
    ("gpt-5-mini", 1.2),
    ("gpt-5-nano", 1.5),
)
_PATCH = 32
_MAX_PATCHES = 1536


def _model_stem(model: str | None, stem: str) -> bool:
    name = _normalize_model(model) if model else ""
    return name == stem or (name.startswith(stem) and name[len(stem)] in _SEPARATORS)


def _patch_multiplier(model: str | None) -> float | None:
    """The per-patch multiplier of a model that bills images by patches, else None."""
    for stem, multiplier in _PATCH_MULTIPLIERS:
        if _model_stem(model, stem):
            return multiplier
    return None


def _image_rates(model: str | None) -> tuple[int, int]:
    """(base, per tile) image tokens of ``model``: gpt-4o-mini's and gpt-5's own, else gpt-4o's."""
    if _model_stem(model, "gpt-4o-mini"):
        return _MINI_IMAGE_RATES
    name = _normalize_model(model) if model else ""
    if _model_stem(model, "gpt-5") and not name.startswith(("gpt-5.", "gpt-5-chat")):  # gpt-5.x: not measured
        return _GPT5_IMAGE_RATES
    return _IMAGE_BASE_TOKENS, _IMAGE_TILE_TOKENS


def _patches(width: float, height: float) -> int:
    """32-px patches covering an image, scaled down (aspect kept) to at most ``_MAX_PATCHES``."""
    raw = math.ceil(width / _PATCH) * math.ceil(height / _PATCH)
    if raw <= _MAX_PATCHES:
        return raw
    shrink = math.sqrt(_PATCH * _PATCH * _MAX_PATCHES / (width * height))
    shrink *= min(math.floor(width * shrink / _PATCH) / (width * shrink / _PATCH),
                  math.floor(height * shrink / _PATCH) / (height * shrink / _PATCH))
    return min(math.ceil(width * shrink / _PATCH) * math.ceil(height * shrink / _PATCH), _MAX_PATCHES)


def image_tokens(width: int, height: int, detail: str | None = "high", model: str | None = None) -> int:
    """Image input tokens by OpenAI's tile formula (gpt-4o / gpt-4-turbo vision; ``model``
    gpt-4o-mini and gpt-5: their own rates, ``_MINI_IMAGE_RATES``, ``_GPT5_IMAGE_RATES``), or by
    32-px patches for the models of ``_PATCH_MULTIPLIERS``.

    ``low`` detail costs 85. Otherwise the image is scaled to fit 2048×2048, then its shortest
    side down to 768, and costs 85 + 170 per 512-px tile (``auto`` is treated as ``high``).
    """
    multiplier = _patch_multiplier(model)
    if multiplier is not None:  # detail is not known to change a patch model's count: as high
        w, h = (float(width), float(height)) if width > 0 and height > 0 else (1024.0, 1024.0)
        return math.ceil(_patches(w, h) * multiplier) + 1
    base, tile = _image_rates(model)
    if detail == "low":
        return base
    w, h = float(width), float(height)
    if w <= 0 or h <= 0:
        return base + 4 * tile
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


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
    if detail == "low" and _patch_multiplier(counter.model) is None:
        return _image_rates(counter.model)[0]
    size = None
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        size = (width, height)
    elif isinstance(url, str):
        size = image_size_from_data_url(url)
    if size is None or size[0] <= 0 or size[1] <= 0:
        counter.note("image_tokens_defaulted")
        return image_tokens(0, 0, "high", counter.model)
    return image_tokens(size[0], size[1], "high", counter.model)


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


_ID_FIELDS = frozenset({"tool_call_id", "id"})  # routing ids: not rendered into the prompt


class _Framing(NamedTuple):
    """How one model family frames a conversation, in tokens beyond the text it carries.

    Derived from real recordings with provider-reported usage (the calibration split of the
    recordings in docs/public-data.md, origins in tests/data/origins.csv) and the cookbook; see
    docs/estimates.md.
    """

    #: the prompt's last tokens, which start the reply (``<|im_start|>assistant<|im_sep|>``)
    reply_priming: int
    #: function tools, rendered as a TypeScript ``namespace functions`` (``_functions_namespace``),
    #: cost this much more when the conversation has no system/developer message (the namespace
    #: then opens a system message of its own) …
    tools_alone: int
    #: … and this much, plus what a newline adds to that message's text, when it is appended to
    #: the first system/developer message;
    tools_with_system: int
    #: and each function beyond the text of its rendering (the separators between functions)
    tools_per_function: int
    #: cl100k models see the namespace after a newline appended to the system text
    system_newline: bool
    #: a tool call the model makes: ``to=functions.NAME`` + arguments + this (completion) …
    call: int
    #: … and the same call in the conversation's history (prompt)
    history_call: int
    #: a tool result is a message from ``functions.NAME``: per-message overhead + this
    tool_result: int
    #: a text answer when tools were offered costs this much more (the model chose not to call)
    answer_with_tools: int
    #: completion tokens per choice beyond its text and calls (before the Azure terminator below)
    per_choice: int
    #: a Responses API output message, or its turn of tool calls: one more token (the item's end)
    output_item: int
    #: a reasoning model's visible answer is framed by channel tokens (chat / Responses)
    answer_chat: int
    answer_responses: int
    #: (tools_alone, tools_with_system, tools_per_function) of a Responses API request, whose
    #: tools framing is not chat's (gpt-4o: 5 / 4 against chat's 10 / 7; gpt-5 family: its Chat
    #: Completions tools preamble is not billed there); None: as in chat
    responses_tools: tuple[int, int, int] | None = None
    #: a tool call's framing in a Responses API output, when it differs from chat's; None: ``call``
    responses_call: int | None = None
    #: in chat, a function whose parameters are an object with no properties is shown
    #: ``(_: {}) => any`` (2 tokens more than ``() => any``, the rendering of one without parameters):
    #: gpt-4.1-mini's 16 crewAI recordings of such tools were 2 short each; gpt-4o's and
    #: gpt-4o-mini's are exact without it, and so are gpt-4.1's in the Responses API
    empty_parameters_shown: bool = False
    #: a text answer in a ``json_schema`` response format when tools were offered costs this much
    #: more again (the answer is routed to the format rather than to a tool): every such gpt-4o and
    #: gpt-4o-mini answer of the calibration recordings (crewAI, pydantic-ai; chat and Responses)
    #: was 4 tokens short without it (one 3), while their calls, and their answers without tools,
    #: are exact. Not measured for the other families (0 there).
    structured_answer_with_tools: int = 0
    #: the calls of one assistant turn in the history are shown one by one, not as one
    #: ``multi_tool_use.parallel`` call, each costing this much more than the same call alone
    #: (None: as one parallel call). gpt-5 models (harmony: there is no parallel wrapper, each call
    #: is a message of its own): crewAI's five gpt-5-nano recordings of a turn of 3 calls were 7
    #: over as one parallel call, exact with 4 per call
    history_parallel_call: int | None = None
    #: a ``multi_tool_use.parallel`` call in the history costs this much beyond its text, not
    #: ``history_call`` (None: ``history_call``). gpt-4o and gpt-4o-mini: pydantic-ai's and elastic's
    #: requests after a turn of two calls the model made were 1 over each with ``history_call`` (nine
    #: distinct requests, shared and further), while the same calls as the model writes them (the
    #: completion) are exact and a single call in the history costs ``history_call``: the
    #: wrapper's call is not marked as a single call's is (the one token ``history_call`` stands for)
    history_parallel_wrapper: int | None = None
    #: in a request with a ``json_schema`` response format, each assistant text answer in the history
    #: costs this much more than the same message without one: it is shown as the structured answer it
    #: was (the format's answer header, the same 4 tokens ``structured_answer_with_tools`` bills when the
    #: model writes it). crewAI's gpt-4o, gpt-4o-mini and gpt-4.1-mini requests that carry an earlier
    #: JSON answer were 4 short each next to their siblings without one (ScoreOutput's second title,
    #: CalculationResult after its tool result); a tool-call turn in the history costs nothing more
    #: (four such requests exact without it). 0: not measured (gpt-5, o-series, cl100k models).
    structured_history_answer: int = 0
    #: in chat, two or more functions after a system message cost this much more than
    #: ``tools_with_system`` (once per request, not per function). gpt-4.1 models: crewAI's nine
    #: gpt-4.1-mini requests with 2 or 3 functions (four tool sets: the coworker pair in three
    #: variants, the memory pair in two, a multiplier with the pair; first turns and follow-ups
    #: after a tool result) were 3 short each (one 4), while its 40 one-function requests after a
    #: system message are exact in 31 (7 within 1). gpt-4o's and gpt-4o-mini's several-function requests are exact
    #: without it (dd-trace-py, pydantic-ai). Fitted, not known: no public renderer shows what the
    #: 3 tokens are (0: not seen)
    tools_several_with_system: int = 0


#: cl100k models: a text answer when tools were offered costs 1 more (``answer_with_tools``, as
#: gpt-4o's): crewAI's three gpt-3.5-turbo-0125 and one gpt-4-0125-preview answers after tool
#: results (2026) were each one completion token short without it, every calibration answer of the
#: kind; their calls (16 of 17 exact) and answers without tools are unchanged (sixth pass of round three)
_FRAMING_CL100K = _Framing(
    reply_priming=3, tools_alone=9, tools_with_system=5, tools_per_function=0, system_newline=True,
    call=4, history_call=1, tool_result=1, answer_with_tools=1, per_choice=0,
    output_item=1, answer_chat=0, answer_responses=0,
)
#: gpt-4o and gpt-4.1 in the Responses API: the tools framing is 5 tokens (alone) / 4 (after a
#: system message or instructions), against chat's 10 / 7 (responses_tools).
_FRAMING_GPT4O = _Framing(
    reply_priming=3, tools_alone=10, tools_with_system=7, tools_per_function=-2, system_newline=False,
    call=4, history_call=1, tool_result=1, answer_with_tools=1, per_choice=0,
    output_item=1, answer_chat=0, answer_responses=0, responses_tools=(5, 4, -2),
    structured_answer_with_tools=4, structured_history_answer=4, history_parallel_wrapper=0,
)
#: gpt-4 (0613): a call costs 3 tokens less than gpt-3.5-turbo's
_FRAMING_GPT4_0613 = _FRAMING_CL100K._replace(call=1)
_FRAMING_GPT41 = _FRAMING_GPT4O._replace(
    tools_with_system=6, tools_several_with_system=3, empty_parameters_shown=True, structured_answer_with_tools=0,
    history_parallel_wrapper=None,
)
#: Azure OpenAI's Chat Completions bill one completion token per choice beyond what the model wrote
#: (its terminator): Azure recordings of gpt-4o, gpt-4o-mini, gpt-4.1-mini and gpt-5 models from
#: November 2025 (issue #29's hidden set) to March 2026 show it, streamed or not, once per choice
#: with n > 1, while OpenAI's own backends do not bill it (the same models, same months: exact
#: without it). Azure recordings of April 2024 (gpt-35-turbo) and March 2025 (gpt-4o) are exact
#: without it, so it applies to events from AZURE_TERMINATOR_SINCE on (the earliest month it was
#: seen; when between March and November 2025 it started is not known). Not seen in the Responses API.
AZURE_TERMINATOR_TOKENS = 1
AZURE_TERMINATOR_SINCE = datetime(2025, 11, 1, tzinfo=UTC)
#: OpenAI's own backends billed the same token from January to late May 2025, on every answer that
#: ended by itself: on the calibration recordings of that window without a ``stop`` parameter, 49
#: Chat Completions answers are one token short per choice without it and 3 exact; with ``stop``,
#: 25 are exact without it (an answer cut by a stop sequence writes no terminator) and 7 short.
#: Recordings of 2024-12-18 and from 2025-05-21 on are exact without it; the last one billed it is
#: of 2025-05-14, so the window ends between the two (OPENAI_TERMINATOR_UNTIL is a midpoint).
#: The 7 short answers with ``stop`` are those from OPENAI_TERMINATOR_STOP_FROM on that ended by
#: themselves (crewAI's "Final Answer", 2025-03-26 to 2025-05-14): with ``stop``, the token was billed
#: from later than without it. Before, 14 such answers (2025-01-03 to 2025-03-17) are exact without
#: it; after, the 3 answers cut by the stop sequence ("Action Input: …" then "\nObservation:") are
#: exact without it too, but a capture cannot tell them from the others (they are 1 over now).
OPENAI_TERMINATOR_FROM = datetime(2025, 1, 1, tzinfo=UTC)
OPENAI_TERMINATOR_STOP_FROM = datetime(2025, 3, 22, tzinfo=UTC)
OPENAI_TERMINATOR_UNTIL = datetime(2025, 5, 18, tzinfo=UTC)
#: A Chat Completions call forced by name costs the prompt its header, the call's framing and this
#: (gpt-4o and gpt-4o-mini recordings; the Responses API's forced header costs no more than a call)
CHAT_FORCED_CALL = 3

#: Reasoning models (harmony format): the prompt is primed with one token less, and the visible
#: answer is framed by channel tokens. Their hidden reasoning is not in the response (and several
#: of them report reasoning_tokens in steps of 64), so their completion is a lower bound.
_FRAMING_GPT5 = _FRAMING_GPT4O._replace(
    reply_priming=2,
    tools_alone=87,
    tools_with_system=81,
    tools_per_function=3,
    call=13,
    answer_with_tools=0,
    structured_answer_with_tools=0,
    structured_history_answer=0,
    history_parallel_call=4,
    answer_chat=9,
    answer_responses=5,
    responses_tools=(10, 7, -2),
    responses_call=9,
)
_FRAMING_GPT5X = _FRAMING_GPT5._replace(call=7, answer_chat=3, answer_responses=3, responses_tools=(25, 22, 0), responses_call=None)
#: (no Responses recording with tools: its tools are counted as in chat)
_FRAMING_O_SERIES = _FRAMING_GPT4O._replace(
    reply_priming=2, answer_chat=11, responses_tools=None, structured_answer_with_tools=0, structured_history_answer=0,
    history_parallel_wrapper=None,
)

#: (stem, encoding, framing): the first stem that starts the model name (then ends it, or is
#: followed by a separator; "gpt-5." takes any gpt-5.x) for a model of that encoding wins;
#: other models get their encoding's default (gpt-4o's rules for o200k, gpt-3.5-turbo's else).
_FRAMING_BY_FAMILY: tuple[tuple[str, str, _Framing], ...] = (
    ("gpt-4.1", "o200k_base", _FRAMING_GPT41),
    ("gpt-5-chat", "o200k_base", _FRAMING_GPT4O),  # not a reasoning model
    ("gpt-5.", "o200k_base", _FRAMING_GPT5X),
    ("gpt-5", "o200k_base", _FRAMING_GPT5),
    ("o1", "o200k_base", _FRAMING_O_SERIES),
    ("o3", "o200k_base", _FRAMING_O_SERIES),
    ("o4", "o200k_base", _FRAMING_O_SERIES),
    ("gpt-4", "cl100k_base", _FRAMING_GPT4_0613),
)


@short_key_cache(maxsize=512)
def _framing(model: str | None) -> _Framing:
    """The framing rules for ``model``'s family (cached: a process sees a handful of models)."""
    encoding = choose_encoding(model).name
    if model:
        name = _normalize_model(model)
        for stem, stem_encoding, framing in _FRAMING_BY_FAMILY:
            if stem_encoding == encoding and name.startswith(stem):
                if stem.endswith(".") or len(name) == len(stem) or name[len(stem)] in _SEPARATORS:
                    return framing
    return _FRAMING_GPT4O if encoding == "o200k_base" else _FRAMING_CL100K


def _call_tokens(name: Any, arguments: Any, counter: _Counter) -> int:
    """Tokens of a function/tool call's name and JSON arguments."""
    tokens = counter.text(name) if isinstance(name, str) else 0
    if isinstance(arguments, str):
        tokens += counter.text(arguments)
    elif arguments is not None:
        counter.note("unknown_tool_call_shape")
    return tokens


def _parallel_wrapper(calls: list[tuple[str, str]]) -> str | None:
    """The ``multi_tool_use.parallel`` call a model makes for several tool calls at once.

    The API splits it into separate ``tool_calls``; the model wrote (and is billed for) one JSON
    object ``{"tool_uses":[{"recipient_name":"functions.NAME","parameters":{…}},…]}``.
    ``None`` when an argument string is not JSON (then the calls are counted one by one).
    """
    uses = []
    for name, arguments in calls:
        try:
            parameters = orjson.loads(arguments) if arguments else {}
        except orjson.JSONDecodeError:
            return None
        uses.append({"recipient_name": f"functions.{name}", "parameters": parameters})
    try:
        return orjson.dumps({"tool_uses": uses}).decode()
    except TypeError:
        return None


def _calls_tokens(calls: list[tuple[str, str]], counter: _Counter, framing: _Framing, overhead: int) -> int:
    """Tokens of the tool calls of one assistant turn: one call is ``to=functions.NAME`` plus its
    arguments; several are one ``multi_tool_use.parallel`` call (``_parallel_wrapper``)."""
    if not calls:
        return 0
    if len(calls) > 1:
        wrapper = _parallel_wrapper(calls)
        if wrapper is not None:
            return counter.text(" to=multi_tool_use.parallel") + counter.text(wrapper) + overhead
    return sum(counter.text(f" to=functions.{name}") + counter.text(arguments) + overhead for name, arguments in calls)


def _history_calls(value: Any, counter: _Counter) -> list[tuple[str, str]]:
    calls = []
    for call in value:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            arguments = fn.get("arguments")
            if not isinstance(arguments, str):
                counter.note("unknown_tool_call_shape")
                arguments = ""
            calls.append((fn["name"], arguments))
        else:
            counter.note("unknown_tool_call_shape")
    return calls


def _message_tokens(
    message: Any, counter: _Counter, per_message: int, per_name: int, framing: _Framing, call_names: dict[str, str]
) -> int:
    """Tokens of one chat message: the cookbook rule, extended to parts and tool calls.

    Every string field is encoded (as the cookbook does) except routing ids (``tool_call_id``).
    An assistant turn's ``tool_calls`` are rendered as the model wrote them (``_calls_tokens``);
    a ``tool`` result is a message from ``functions.NAME`` (the name of the call it answers), not
    from "tool", and its own ``name`` field is not shown again (crewAI sends one: its recordings are
    exact without it, 3 to 18 tokens over with it); ``function_call`` costs name + arguments.
    """
    if not isinstance(message, dict):
        counter.note("unknown_message_shape")
        return 0
    tokens = per_message
    calls: list[tuple[str, str]] = []
    role = message.get("role")
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, str):
            if key in _ID_FIELDS:
                continue
            if key == "role" and value == "tool" and isinstance(message.get("tool_call_id"), str):
                name = call_names.get(message["tool_call_id"])
                if name is not None:
                    tokens += counter.text(f"functions.{name}") + framing.tool_result
                    continue
            if key == "name" and role == "tool" and message.get("tool_call_id") in call_names:
                continue  # a result's own "name" is not shown: functions.NAME above says it
            tokens += counter.text(value)
            if key == "name":
                tokens += per_name
        elif key == "content":
            tokens += _content_tokens(value, counter)
        elif key == "tool_calls" and isinstance(value, list):
            calls = _history_calls(value, counter)
            for call, (name, _) in zip(value, calls):
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    call_names[call["id"]] = name
        elif key == "function_call" and isinstance(value, dict):
            tokens += _call_tokens(value.get("name"), value.get("arguments"), counter)
        elif key == "audio":
            counter.note("audio_not_counted")
        else:
            counter.note("message_field_not_counted")
    if calls and role == "assistant":
        if len(calls) > 1 and framing.history_parallel_call is not None:
            extra = framing.history_call + framing.history_parallel_call
            tokens += sum(_calls_tokens([call], counter, framing, extra) for call in calls)
        elif (len(calls) > 1 and framing.history_parallel_wrapper is not None
              and _parallel_wrapper(calls) is not None):
            tokens += _calls_tokens(calls, counter, framing, framing.history_parallel_wrapper)
        else:
            tokens += _calls_tokens(calls, counter, framing, framing.history_call)
    return tokens


# tool definitions --------------------------------------------------------------------------


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


_MAX_SCHEMA_DEPTH = 16  # deeper schemas are rendered "object" (and noted): no recursion limit on odd input


class _SchemaBudget:
    """What rendering one request's schemas may spend, so that no schema costs more than its size.

    A caller-controlled schema can be built to make its rendering exponential (``$ref``s forming a
    DAG, ``anyOf`` of several ``$ref``s per level, definitions that all reference each other,
    ``type`` lists): each ``$ref`` is expanded at most once per path, and the whole rendering is
    held to a number of schema nodes, ``$ref`` expansions and characters that grows with the bytes
    of the schemas themselves. Past it, the rest is rendered ``any`` and the estimate is noted
    ``schema_budget_approximated``: the estimate is then capped by what the request's size allows,
    and one event costs milliseconds whatever its schema.
    """

    __slots__ = ("nodes", "refs", "chars", "exceeded")

    #: every request may spend this much (real tool schemas render in far less) …
    NODES_FLOOR, REFS_FLOOR, CHARS_FLOOR = 1_000, 100, 8_192
    #: … plus, per byte of its schemas' JSON, this much (a node is at least ~10 bytes of JSON, and a
    #: real schema inlines each definition a few times at most)
    NODES_PER_BYTE, REFS_PER_BYTE, CHARS_PER_BYTE = 0.125, 1 / 64, 2

    def __init__(self, schema_bytes: int):
        self.nodes = self.NODES_FLOOR + int(schema_bytes * self.NODES_PER_BYTE)
        self.refs = self.REFS_FLOOR + int(schema_bytes * self.REFS_PER_BYTE)
        self.chars = self.CHARS_FLOOR + schema_bytes * self.CHARS_PER_BYTE
        self.exceeded = False

    @classmethod
    def for_request(cls, request: dict[str, Any]) -> _SchemaBudget:
        """The budget of a request: from the JSON size of its tools, functions and response format."""
        size = 0
        for key in ("tools", "functions", "response_format", "text"):
            value = request.get(key)
            if value is not None:
                try:
                    size += len(orjson.dumps(value))
                except TypeError:  # nested beyond orjson's limit or an odd number: its floor only
                    pass
        return cls(size)

    def spend(self, counter: _Counter, *, nodes: int = 1, chars: int = 0, refs: int = 0) -> bool:
        """Take ``nodes``/``chars``/``refs`` from the budget; False (and the note) once it is spent."""
        if self.exceeded:
            return False
        self.nodes -= nodes
        self.chars -= chars
        self.refs -= refs
        if self.nodes < 0 or self.chars < 0 or self.refs < 0:
            self.exceeded = True
            counter.note("schema_budget_approximated")
            return False
        return True


def _literal(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # e.g. an integer beyond 64 bits
        return str(value)


class _SchemaStyle(NamedTuple):
    """How a tool's JSON schema is rendered. Both APIs inline local ``$ref`` definitions
    (``defs``; ``resolving``: the refs being inlined, so a recursive one stops); the Responses
    API (``responses``) also shows the parameters' title, and the default of an optional property
    (Chat Completions: of a required one only), as comments."""

    responses: bool = False
    defs: dict[str, Any] = {}
    resolving: tuple[str, ...] = ()


_CHAT_SCHEMA = _SchemaStyle()


def _resolve_ref(schema: dict[str, Any], style: _SchemaStyle) -> tuple[Any, _SchemaStyle] | None:
    """The local definition a ``$ref`` (``#/$defs/X``, ``#/definitions/X``) names and the style to
    render it with, or None (not local, unknown, or already being inlined: recursive)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or ref in style.resolving:
        return None
    prefix, _, key = ref.rpartition("/")
    if prefix not in ("#/$defs", "#/definitions") or key not in style.defs:
        return None
    return style.defs[key], style._replace(resolving=(*style.resolving, ref))


def _ts_type(schema: Any, indent: int, counter: _Counter, style: _SchemaStyle = _CHAT_SCHEMA) -> str:
    """A JSON-schema type as the TypeScript the model is shown (``string``, ``"a" | "b"``, ``{…}``),
    within the request's ``_SchemaBudget`` (``any`` past it)."""
    if not isinstance(schema, dict):
        return "any"
    if not counter.schema_budget.spend(counter):
        return "any"
    if indent > 2 * _MAX_SCHEMA_DEPTH or len(style.resolving) > _MAX_SCHEMA_DEPTH:
        counter.note("tool_schema_approximated")
        return "object"
    resolved = _resolve_ref(schema, style)
    if resolved is not None:
        if not counter.schema_budget.spend(counter, nodes=0, refs=1):
            return "any"
        return _ts_type(resolved[0], indent, counter, resolved[1])
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        rendered = " | ".join(_literal(v) for v in enum)
        return rendered if counter.schema_budget.spend(counter, nodes=0, chars=len(rendered)) else "any"
    for union in ("anyOf", "oneOf"):
        if isinstance(schema.get(union), list):
            counter.note("tool_schema_approximated")
            return " | ".join(_ts_type(s, indent + 2, counter, style) for s in schema[union])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_ts_kind(schema, k, indent, counter, style) if isinstance(k, str) else "any" for k in kind)
    return _ts_kind(schema, kind, indent, counter, style)


def _ts_kind(schema: dict[str, Any], kind: Any, indent: int, counter: _Counter, style: _SchemaStyle) -> str:
    """The TypeScript of ``schema`` read as the one JSON type ``kind`` (one entry of a type list)."""
    if kind == "string":
        return "string"
    if kind in ("number", "integer"):
        return "number"
    if kind in ("boolean", "null"):
        return kind
    if kind == "object":
        if isinstance(schema.get("properties"), dict) and schema["properties"]:
            counter.note("tool_schema_approximated")
            if not counter.schema_budget.spend(counter, chars=indent + 4):
                return "any"
            return "{\n" + _ts_properties(schema, indent + 2, counter, style) + "\n" + " " * indent + "}"
        return "object"
    if kind == "array":
        items = schema.get("items")
        return f"{_ts_type(items, indent + 2, counter, style)}[]" if isinstance(items, dict) else "any[]"
    if "$ref" in schema:
        counter.note("tool_schema_approximated")
    return "any"


def _comment(text: str) -> list[str]:
    """A description as ``//`` comment lines, one per line of text."""
    return [f"// {line}" for line in text.split("\n")]


def _default_comment(spec: dict[str, Any]) -> str:
    """A Responses property's default, as the trailing comment the model is shown ('' when none)."""
    if "default" not in spec:
        return ""
    default = spec["default"]
    return f' // default: "{default}"' if isinstance(default, str) else f" // default: {_literal(default)}"


def _ts_properties(schema: dict[str, Any], indent: int, counter: _Counter, style: _SchemaStyle = _CHAT_SCHEMA) -> str:
    required = schema.get("required") if isinstance(schema.get("required"), list) else ()
    lines = []
    for name, spec in schema["properties"].items():
        start = len(lines)
        spec_dict = spec if isinstance(spec, dict) else {}
        # a top-level property's title is shown as a comment of its own, then an empty "//" line,
        # in both APIs (Chat Completions since round three: crewAI's pydantic schemas carry one per
        # property, 2 to 33 tokens short without it); not a nested one's (closer on the only
        # Responses recordings with one, a $ref'd object, though ~17 short)
        title = spec_dict.get("title")
        if indent == 0 and isinstance(title, str) and title:
            lines += [*_comment(title), "//"]
        description = spec_dict.get("description")
        if isinstance(description, str) and description:
            lines += _comment(description)
        optional = "" if name in required else "?"
        # a default is a trailing comment (harmony's rendering): in the Responses API always; in Chat
        # Completions on a required property only (crewAI's strict schemas, every property required:
        # gpt-3.5 and gpt-4.1-mini recordings 5 to 13 short without it), not an optional one
        # (pydantic-ai's gpt-4o ``value?: boolean`` with ``default: false`` and an optional object
        # with ``default: null``: 9 recordings within 2, 5 over with it)
        shows_default = style.responses or name in required
        default = _default_comment(spec_dict) if shows_default else ""
        own = indent + len(name) + len(default) + sum(len(line) + indent + 1 for line in lines[start:]) + 4
        if not counter.schema_budget.spend(counter, chars=own):
            del lines[start:]
            break
        lines.append(f"{name}{optional}: {_ts_type(spec, indent, counter, style)},{default}")
    return "\n".join(" " * indent + line for line in lines)


def _functions_namespace(functions: list[dict[str, Any]], counter: _Counter, *, responses: bool = False) -> str:
    """Function tools as the model sees them: a TypeScript ``namespace functions`` with one
    ``type NAME = (_: {…}) => any;`` per function, its description and each parameter's as
    ``//`` comments, optional parameters marked ``?``, local ``$ref`` definitions inlined. The
    Responses API renders schemas its own way (``_SchemaStyle``) and shows the parameters' title
    as a comment before their ``{``."""
    lines = ["namespace functions {", ""]
    for fn in functions:
        description = fn.get("description")
        if isinstance(description, str) and description:
            lines += _comment(description)
        name = fn.get("name") if isinstance(fn.get("name"), str) else ""
        parameters = fn.get("parameters")
        if isinstance(parameters, dict) and isinstance(parameters.get("properties"), dict) and parameters["properties"]:
            defs = parameters.get("$defs", parameters.get("definitions"))
            style = _SchemaStyle(responses=responses, defs=defs if isinstance(defs, dict) else {})
            opening = f"type {name} = (_: {{"
            if responses:
                title = parameters.get("title")
                if isinstance(title, str) and title:
                    opening = "\n".join([f"type {name} = (_: // {title.replace(chr(10), ' ')}", "{"])
            lines += [opening, _ts_properties(parameters, 0, counter, style), "}) => any;"]
        elif (not responses and isinstance(parameters, dict) and parameters.get("properties") == {}
              and _framing(counter.model).empty_parameters_shown):
            lines.append(f"type {name} = (_: {{}}) => any;")
        else:
            lines.append(f"type {name} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def _tools_tokens(tools: Any, counter: _Counter, framing: _Framing, system: str | None, *, responses: bool = False) -> int:
    """Prompt tokens of function tool definitions (``_functions_namespace`` plus its framing).

    ``system`` is the text of the conversation's first system/developer message (None when it
    has none): the namespace follows it after a newline, which may or may not merge with its
    last token. ``responses``: a Responses API request (its own schema rendering)."""
    if not isinstance(tools, list) or not tools:
        return 0
    functions = [fn for fn in (_function_definition(tool, counter) for tool in tools) if fn is not None]
    if not functions:
        return 0
    if system is None:
        overhead = framing.tools_alone
    else:
        overhead = framing.tools_with_system
        if len(functions) > 1 and not responses:
            overhead += framing.tools_several_with_system
        if framing.system_newline:
            overhead += counter.text(system + "\n") - counter.text(system)
    namespace = _functions_namespace(functions, counter, responses=responses)
    return counter.text(namespace) + overhead + framing.tools_per_function * len(functions)


def _system_text(messages: Any) -> str | None:
    """The text of the first system/developer message (``""`` when it is not plain text), or None."""
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and message.get("role") in ("system", "developer"):
                content = message.get("content")
                if isinstance(content, list):
                    content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
                return content if isinstance(content, str) else ""
    return None


#: A ``json_schema`` response format is shown to the model at the end of the system message as
#: harmony renders it for gpt-oss (github.com/openai/harmony, docs/format.md "Structured output"):
#: ``# Response Formats`` / ``## NAME`` / the schema as compact JSON. Fitted on 127 gpt-4o, gpt-4o-mini
#: and gpt-4.1-mini recordings (crewAI, dd-trace-py, elastic cassettes): the schema's ``title``s are
#: not shown, the format's own ``description`` is a ``//`` comment before the schema (crewAI's Azure
#: requests carry one and were 6 tokens more than the same requests without it: the comment line),
#: and the block costs this many tokens beyond its text after a system message …
RESPONSE_FORMAT_WITH_SYSTEM = 5
#: … but this many when function tools are offered too (their namespace shares that message):
#: crewAI's gpt-4o and gpt-4o-mini requests with a system message, tools and a format were 3 to 4
#: over with 5 (8 of 9; the ninth exact) …
RESPONSE_FORMAT_WITH_TOOLS = 1
#: … and this many when it opens a system message of its own (its role and framing included) …
RESPONSE_FORMAT_ALONE = 7
#: … but this many in a Responses API request without instructions or a system message: the
#: pydantic-ai gpt-4o and gpt-4o-mini recordings without them were 6 over with chat's 7 (and every
#: Responses recording with a format, with tools or not, is over, never under).
RESPONSE_FORMAT_ALONE_RESPONSES = 1
#: When function tools are offered and the conversation has no system message (nor instructions),
#: the format shares the system message the tools' namespace opens, and its schema is shown without
#: its ``additionalProperties`` and ``required`` keywords (``_TOOLS_ALONE_HIDDEN``), at this many
#: tokens beyond the block's text in chat (``RESPONSE_FORMAT_ALONE_RESPONSES`` in the Responses API).
#: pydantic-ai's gpt-4o requests of that shape (two schemas, chat and Responses, first and second
#: turns) were 12 to 59 over with the whole schema and 0 to 2 over without the two keywords; the
#: same schemas' rows with a system message, or without tools, are within a few tokens whole.
#: Fitted on one source's eight recordings (the mechanism is not known).
RESPONSE_FORMAT_WITH_TOOLS_ALONE = 2
_TOOLS_ALONE_HIDDEN = frozenset({"title", "additionalProperties", "required"})
_TITLES = frozenset({"title"})
_MAX_FORMAT_DEPTH = 64  # deeper schemas keep their titles (a bound on recursion, not a rule)


def _without_titles(schema: Any, depth: int = 0, hidden: frozenset[str] = _TITLES) -> Any:
    """A JSON schema without its ``title`` keywords (a property named "title" stays), or without
    every keyword in ``hidden`` (a ``title`` only when it is a string)."""
    if depth > _MAX_FORMAT_DEPTH:
        return schema
    if isinstance(schema, dict):
        shown = {}
        for key, value in schema.items():
            if key in hidden and (key != "title" or isinstance(value, str)):
                continue
            if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, dict):
                shown[key] = {name: _without_titles(spec, depth + 1, hidden) for name, spec in value.items()}
            else:
                shown[key] = _without_titles(value, depth + 1, hidden)
        return shown
    if isinstance(schema, list):
        return [_without_titles(item, depth + 1, hidden) for item in schema]
    return schema


def _response_format(request: dict[str, Any]) -> dict[str, Any] | None:
    """The ``json_schema`` format a request asks for, as ``{name, schema, …}`` (Chat Completions
    ``response_format.json_schema``, Responses ``text.format``); None for text and ``json_object``,
    which add nothing to the prompt (recordings: exact without them)."""
    chat = request.get("response_format")
    if isinstance(chat, dict) and chat.get("type") == "json_schema" and isinstance(chat.get("json_schema"), dict):
        return chat["json_schema"]
    text = request.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict) and text["format"].get("type") == "json_schema":
        return text["format"]
    return None


def json_schema_format(request: Any) -> bool:
    """Whether a Chat Completions or Responses request asks for a ``json_schema`` response format."""
    return isinstance(request, dict) and _response_format(request) is not None


def _response_format_tokens(request: dict[str, Any], counter: _Counter, system: str | None, *, responses: bool = False) -> int:
    """Prompt tokens of a ``json_schema`` response format (``RESPONSE_FORMAT_WITH_SYSTEM``), within
    the request's schema budget. The rendering is fitted, not known: within a few tokens on the
    recordings (noted ``response_format_approximated``)."""
    spec = _response_format(request)
    if spec is None:
        return 0
    name = spec.get("name") if isinstance(spec.get("name"), str) else ""
    offers_functions = _offers_functions(request)
    tools_alone = system is None and offers_functions
    try:
        schema = orjson.dumps(_without_titles(spec.get("schema"), hidden=_TOOLS_ALONE_HIDDEN if tools_alone else _TITLES)).decode()
    except (TypeError, RecursionError):  # nested beyond what JSON encoders allow: not shown whole
        counter.note("response_format_not_counted")
        return 0
    remaining = counter.schema_budget.chars
    if not counter.schema_budget.spend(counter, nodes=0, chars=len(schema)):
        schema = schema[: max(remaining, 0)]  # what the budget has left of it
    counter.note("response_format_approximated")
    description = spec.get("description")
    comment = "\n".join(_comment(description)) + "\n" if isinstance(description, str) and description else ""
    block = f"# Response Formats\n\n## {name}\n\n{comment}{schema}"
    if system is None:
        if responses:
            return counter.text(block) + RESPONSE_FORMAT_ALONE_RESPONSES
        return counter.text(block) + (RESPONSE_FORMAT_WITH_TOOLS_ALONE if tools_alone else RESPONSE_FORMAT_ALONE)
    framing = RESPONSE_FORMAT_WITH_TOOLS if offers_functions else RESPONSE_FORMAT_WITH_SYSTEM
    return counter.text(f"{system}\n\n{block}") - counter.text(system) + framing


def _structured_history_tokens(request: dict[str, Any], messages: Any, framing: _Framing) -> int:
    """What the assistant text answers in the history of a request with a ``json_schema`` response
    format cost beyond their text (``_Framing.structured_history_answer`` each; tool-call turns
    without text are not answers)."""
    if not framing.structured_history_answer or _response_format(request) is None or not isinstance(messages, list):
        return 0
    answers = sum(
        1
        for message in messages
        if isinstance(message, dict) and message.get("role") == "assistant" and message.get("content")
    )
    return answers * framing.structured_history_answer


def _offers_functions(request: dict[str, Any]) -> bool:
    tools, functions = request.get("tools"), request.get("functions")
    return bool(tools) and isinstance(tools, list) or bool(functions) and isinstance(functions, list)


def count_chat_prompt(request: dict[str, Any], model: str | None) -> TokenCount:
    """Prompt tokens of a Chat Completions request: messages (+ the family's reply priming) and
    tools/functions (``_tools_tokens``)."""
    counter = _Counter(model)
    if not isinstance(request, dict):
        counter.note("unknown_request_shape")
        return counter.result(0)
    counter.schema_budget = _SchemaBudget.for_request(request)
    per_message, per_name = _chat_overheads(model)
    framing = _framing(model)
    messages = request.get("messages")
    tokens = 0
    if isinstance(messages, list):
        call_names: dict[str, str] = {}
        for message in messages:
            tokens += _message_tokens(message, counter, per_message, per_name, framing, call_names)
        tokens += framing.reply_priming
    else:
        counter.note("messages_missing")
    system = _system_text(messages)
    tokens += _tools_tokens(request.get("tools"), counter, framing, system)
    tokens += _tools_tokens(request.get("functions"), counter, framing, system)
    forced = forced_chat_function(request, model)
    if forced is not None:  # the reply starts with the call's header: it is part of the prompt
        tokens += counter.text(f" to=functions.{forced}") + framing.call + CHAT_FORCED_CALL
    tokens += _response_format_tokens(request, counter, system)
    tokens += _structured_history_tokens(request, messages, framing)
    return counter.result(tokens)


def _responses_messages(items: list[Any], counter: _Counter) -> list[dict[str, Any]]:
    """Responses API input items as the chat messages the model sees.

    Message items keep role and content. ``function_call`` items are the assistant's tool calls:
    consecutive ones form one assistant turn, so several are one parallel call as in chat; an
    assistant message item before them stays a message of its own, even when empty (then the
    recordings bill it 3 tokens: its role is not counted). A ``function_call_output`` is the ``tool`` message
    answering its ``call_id``. Reasoning items and item references (server-side state) cannot be
    counted and are noted.
    """
    messages: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            messages.append({"role": "user", "content": item})
            continue
        if not isinstance(item, dict):
            counter.note("unknown_input_item")
            continue
        kind = item.get("type")
        if kind in (None, "message"):
            message = {"role": item.get("role"), "content": item.get("content")}
            if isinstance(item.get("name"), str):
                message["name"] = item["name"]
            messages.append(message)
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
            last = messages[-1] if messages else None
            if last is not None and last.get("role") == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                if last is not None and last.get("role") == "assistant" and not last.get("content"):
                    last.pop("role")  # an empty assistant item before calls is billed 3 tokens, not 4
                messages.append({"role": "assistant", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": output})
        elif kind == "reasoning":
            counter.note("reasoning_input_not_counted")
        elif kind == "item_reference":
            counter.note("item_reference_not_counted")
        else:
            counter.note("unknown_input_item")
    return messages


def count_responses_input(request: dict[str, Any], model: str | None) -> TokenCount:
    """Prompt tokens of a Responses API request, counted as a chat conversation.

    ``instructions`` is a system message; a string ``input`` is one user message; input items are
    the messages they stand for (``_responses_messages``), counted as in chat, plus the family's
    reply priming; function tools as in chat (the gpt-5 family with its Responses framing).
    Server-side state (``previous_response_id``, a stored ``conversation``, reasoning items, item
    references) cannot be counted and is noted.
    """
    counter = _Counter(model)
    if not isinstance(request, dict):
        counter.note("unknown_request_shape")
        return counter.result(0)
    counter.schema_budget = _SchemaBudget.for_request(request)
    per_message, per_name = _chat_overheads(model)
    framing = _framing(model)
    tokens = framing.reply_priming
    instructions = request.get("instructions")
    if isinstance(instructions, str) and instructions:
        tokens += per_message + counter.text("system") + counter.text(instructions)
    items = request.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    elif not isinstance(items, list):
        items = []
        counter.note("input_missing")
    call_names: dict[str, str] = {}
    for message in _responses_messages(items, counter):
        tokens += _message_tokens(message, counter, per_message, per_name, framing, call_names)
    if request.get("previous_response_id"):
        counter.note("previous_response_not_counted")
    if request.get("conversation"):  # a stored conversation's items are prepended server-side
        counter.note("conversation_not_counted")
    system = instructions if isinstance(instructions, str) and instructions else _system_text(items)
    if framing.responses_tools is not None:
        alone, with_system, per_function = framing.responses_tools
        framing = framing._replace(tools_alone=alone, tools_with_system=with_system, tools_per_function=per_function)
    tokens += _tools_tokens(request.get("tools"), counter, framing, system, responses=True)
    forced = forced_function(request, model)
    if forced is not None:  # the reply starts with the call's header: it is part of the prompt
        tokens += counter.text(f" to=functions.{forced}") + framing.call
    tokens += _response_format_tokens(request, counter, system, responses=True)
    # no ``structured_history_answer`` here: an earlier answer in a Responses request's input is an
    # ``output_text`` item the API shows as the text it is (Mirascope's six gpt-4o requests after a
    # JSON answer, streamed or not, were 4 over with it, the same +1 as their first turns without it)
    return counter.result(tokens)


def forced_function(request: Any, model: str | None) -> str | None:
    """The function a Responses API request makes the model call, or None.

    ``tool_choice`` naming a function, or ``"required"`` with a single function tool, leaves the
    model no choice: the API writes the call's ``to=functions.NAME`` header into the prompt and
    the model only writes the arguments (recordings of gpt-4o-mini and gpt-4.1-nano show the
    header's tokens billed as input). Not applied to reasoning models (not measured).
    """
    if not isinstance(request, dict) or is_reasoning_model(model):
        return None
    tools = request.get("tools")
    functions = [t for t in tools if isinstance(t, dict) and t.get("type") == "function"] if isinstance(tools, list) else []
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        name = choice["name"]
    elif choice == "required" and len(functions) == 1 == len(tools):  # functions is non-empty: tools is a list
        name = functions[0].get("name")
    else:
        return None
    return name if isinstance(name, str) and any(fn.get("name") == name for fn in functions) else None


def forced_chat_function(request: Any, model: str | None) -> str | None:
    """The function a Chat Completions request names in ``tool_choice`` (``{"type": "function",
    "function": {"name": …}}``), or None.

    As in the Responses API, the call's header is then written into the prompt and the model only
    writes the arguments (gpt-4o and gpt-4o-mini recordings: the completion is the arguments
    alone). ``"required"`` is not such a call in chat: the model still writes the header (a
    single-tool gpt-4o-mini recording is exact without moving it). Not applied to reasoning models.
    """
    if not isinstance(request, dict) or is_reasoning_model(model):
        return None
    choice = request.get("tool_choice")
    function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    tools = request.get("tools") if isinstance(request.get("tools"), list) else []
    offered = any(isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name") == name for t in tools)
    return name if isinstance(name, str) and offered else None


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


def count_completion(
    stream: RebuiltStream,
    model: str | None,
    *,
    tools_offered: bool = False,
    structured: bool = False,
    forced_call: str | None = None,
    azure: bool = True,
) -> TokenCount:
    """Completion tokens of a rebuilt stream or body: every choice's text, refusal and calls.

    Tool calls are counted as the model wrote them (``_calls_tokens``: one call to
    ``functions.NAME``, several as one ``multi_tool_use.parallel`` call); the family's framing
    adds its per-choice and Responses per-item tokens (``structured``: the request asks for a
    ``json_schema`` response format, ``json_schema_format``). A call the request forced
    (``forced_call``, from ``forced_function``) had its header written into the prompt: only its
    arguments are the model's. ``azure``: served by an Azure OpenAI backend that bills
    ``AZURE_TERMINATOR_TOKENS`` per Chat Completions choice (``resolve.bills_terminator``). Hidden
    reasoning tokens of reasoning models cannot be seen, so the estimate is a lower bound for them
    (noted).
    """
    counter = _Counter(model, prompt=False)
    framing = _framing(model)
    responses = stream.kind == "responses"
    tokens = 0
    for choice in stream.choices:
        answered = bool(choice.text or choice.refusal)
        tokens += counter.text(choice.text) + counter.text(choice.refusal)
        calls = [(call.name, call.arguments) for call in choice.tool_calls]
        if responses:
            # the calls are written as in chat (one call, or one multi_tool_use.parallel call) and
            # end like any other output item
            if forced_call is not None and len(calls) == 1 and calls[0][0] == forced_call:
                tokens += counter.text(calls[0][1]) + framing.output_item
            elif calls:
                call = framing.call if framing.responses_call is None else framing.responses_call
                tokens += _calls_tokens(calls, counter, framing, call) + framing.output_item
            tokens += framing.output_item if answered else 0
        else:
            if forced_call is not None and len(calls) == 1 and calls[0][0] == forced_call:
                tokens += counter.text(calls[0][1]) + framing.per_choice  # the header was the prompt's
            else:
                tokens += _calls_tokens(calls, counter, framing, framing.call) + framing.per_choice
            # written when the choice ends (a forced call's too: crewAI's forced calls of February
            # 2025, OPENAI_TERMINATOR_FROM); a choice cut short in the capture has not shown it
            finished = choice.finish_reason is not None
            tokens += AZURE_TERMINATOR_TOKENS if azure and finished and stream.kind != "completions" else 0
        if answered and not calls and tools_offered:
            tokens += framing.answer_with_tools + (framing.structured_answer_with_tools if structured else 0)
        if answered:
            tokens += framing.answer_responses if responses else framing.answer_chat
        if choice.function_call is not None:  # legacy functions: the same call as one tool call
            tokens += _calls_tokens([(choice.function_call.name, choice.function_call.arguments)], counter, framing, framing.call)
    if is_reasoning_model(model):
        counter.note("reasoning_tokens_not_estimated")
    return counter.result(tokens)
