"""Azure Retail Prices API pages → rate card rows (pure: no I/O).

The public price list (``https://prices.azure.com/api/retail/prices``) answers with pages
``{"Items": [...], "NextPageLink": ...}``; every Azure OpenAI token meter is one item, priced per
``unitOfMeasure`` tokens (``"1K"`` for older meters, ``"1M"`` for newer ones — one response mixes
both). Meter names are free text and inconsistent, for example::

    gpt-4o-0806-Inp-glbl Tokens           gpt 4o 0806 cached Inp Data Zone Tokens
    gpt 4o mini0718 BatchOutp DataZone    o3 mini 0131 cached input regnl Tokens
    GPT 5 Mini Inpt DZone 1M Tokens       5.1 cd inp Gl 1M Tokens   (product "Azure OpenAI GPT5")

``parse_meter`` reads one name token by token into a model, a token kind and a deployment type
(global, data zone, regional, their batch variants, provisioned). Token kinds: input, cached input,
output; cache writes (``Cd Wr``); audio input, cached audio input and audio output (``aud``); image
input, cached image input and image output (``img``). Priority-processing meters (``pp``:
``5 pp inp Gl 1M Tokens``) become rows of the ``priority`` service tier (a tier is part of a rate's
key). Audio, image and cache-write meters are read only in the shapes the price list really has
(``MEDIA_METER_SHAPES`` below lists them with where they were seen). Anything it cannot read with
certainty — long-context tiers (their threshold is not in the price list), flex processing,
fine-tuning, the first realtime preview's irregular names, abbreviated media names (``gpt4o mn
trscb``), per-image and per-hour media meters, non-OpenAI models, units other than 1K/1M, unknown
model versions — is *reported* as unmapped, never guessed.

``map_retail_items`` then merges every token kind's meter of one model, type, region and tier into
``Rate`` rows (the audio, image and cache-write prices fill the ``*_per_1m`` columns of the same row
as the model's text prices), one per ``effectiveStartDate`` (a meter's price holds from its start
until a later start supersedes it), with every price normalised to per 1,000,000 tokens. A model
with no text output meter whose only output is images or audio (gpt-image-1, gpt-4o-mini-tts) takes
that output price as its output price: all its output tokens are of that kind.

Regions: global and data-zone deployments are priced the same wherever Azure processes the
request, so their rows are imported for any region (and two regions that disagree are reported,
not merged); regional and provisioned rows keep the meter's ``armRegionName``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from metering.model import UNIT_RATE_COLUMNS, Rate
from metering.price.pricing import normalize_region
from metering.price.rate_card import MAX_RATE_DECIMALS, RateCardError

TokenKind = Literal["input", "cached_input", "output", "cache_write", "audio_input", "cached_audio_input",
                    "audio_output", "image_input", "cached_image_input", "image_output"]
TEXT_KINDS: tuple[TokenKind, ...] = ("input", "cached_input", "output")
MEDIA_KINDS: tuple[TokenKind, ...] = ("cache_write", "audio_input", "cached_audio_input", "audio_output",
                                      "image_input", "cached_image_input", "image_output")
TOKEN_KINDS: tuple[TokenKind, ...] = TEXT_KINDS + MEDIA_KINDS
# Token kind → the rate card column that prices it.
KIND_COLUMNS: dict[str, str] = {
    "input": "input_per_1m", "cached_input": "cached_input_per_1m", "output": "output_per_1m",
    **{kind: f"{kind}_per_1m" for kind in MEDIA_KINDS},
}
ACCEPTED_SERVICES = ("foundry models", "cognitive services")  # renamed from Cognitive Services in 2025
OPENAI_PRODUCT_PREFIX = "azure openai"

# Words of a meter name, after it is split on blanks and dashes and lower-cased.
GLOBAL_WORDS = {"glbl", "gl", "glb", "gbl", "global"}
DATAZONE_WORDS = {"datazone", "dzone", "dz", "dzn"}
REGIONAL_WORDS = {"regnl", "rgnl", "regional", "regn", "rgn"}
PROVISIONED_WORDS = {"ptu", "provisioned", "prvsnd"}
BATCH_WORDS = {"batch", "btch"}
INPUT_WORDS = {"inp", "input", "inpt", "in"}
OUTPUT_WORDS = {"outp", "output", "opt", "out", "outpt"}
CACHED_WORDS = {"cached", "cchd", "ccchd", "cd", "cache"}
NOISE_WORDS = {"std", "standard", "new", "shortco", "shco", "tokens", "token"}
PRIORITY_WORDS = {"pp", "priority"}  # priority processing: the "priority" service tier
WRITE_WORDS = {"wr"}  # "Cd Wr": a cache write
AUDIO_WORDS = {"aud"}  # the token's modality, or (alone) the gpt-4o audio models
TEXT_WORDS = {"txt"}
IMAGE_WORDS = {"img"}
REALTIME_WORDS = {"rt"}  # gpt-4o(-mini) realtime models
# Meter stems (words of the model name) of models that take audio tokens under their own name.
SPEECH_STEM_WORDS = {"transcribe", "tts"}

# The audio, image and cache-write meter shapes read, each seen in saved Azure Retail Prices API
# items (github.com/guygregory/modelmeters.com, monthly/full/*.ndjson, commit d4a64106f74f, and
# monthly/full/2026-10-01.ndjson, commit 24f7e48b15e5; docs/public-data.md lists them):
MEDIA_METER_SHAPES = (
    "gpt-4o-aud-1217 Inp glbl Tokens",  # audio input of gpt-4o-audio-preview-2024-12-17
    "gpt-4o-aud-1217-txt Outp DZone Tokens",  # its text output
    "gpt4omini-aud1217 Outp regnl Tokens",  # gpt-4o-mini-audio-preview-2024-12-17, audio output
    "gpt-4o-rt-aud-1217 cchd Inp glbl Tokens",  # cached audio of gpt-4o-realtime-preview-2024-12-17
    "gpt4omini-rt-txt1217 Inp glbl Tokens",  # gpt-4o-mini-realtime-preview-2024-12-17, text input
    "gpt-4o-transcribe-aud-inp-glbl Tokens",  # gpt-4o-transcribe audio input
    "gpt-4o-mini-tts-aud-out-dz Tokens",  # gpt-4o-mini-tts audio output
    "gpt-image-1-inp-cached-img-glbl Tokens",  # gpt-image-1 cached image input
    "gpt-image-1-output-img-rgnl Tokens",  # gpt-image-1 image output
    "6.1-sol ShortCo Cd Wr Std Gl 1M Tokens",  # cache write (product "Azure OpenAI GPT6")
)
# Context sizes in legacy names: the default size is not part of the model name, the large ones are.
CONTEXT_SIZES_IN_MODEL_NAME = {"16k", "32k"}

# Meters of things this pipeline does not price per token; the reason is shown to the user.
OUT_OF_SCOPE_WORDS: dict[str, str] = {
    **dict.fromkeys(("flex", "fl"), "flex processing meter (not a standard per-token price)"),
    **dict.fromkeys(("lc", "longco", "loco", "long", "l"),
                    "long-context tier meter: the price list does not say from which prompt size it applies; "
                    "add it to a rates CSV with min_prompt_tokens"),
    **dict.fromkeys(("ft", "ftuned", "finetuned", "fine", "tuned", "training", "trng", "hosting", "hstng",
                     "grader", "rft", "dev"), "fine-tuning meter (training, hosting or fine-tuned inference)"),
    **dict.fromkeys(("audio", "realtime", "rtime", "image", "trscb", "tcrb", "whisper", "speech", "sora", "dalle"),
                    "audio, image or realtime meter in a shape this parser does not read (price it in a rates "
                    "CSV with the *_per_1m columns)"),
}
_MEDIA_SHAPE = "audio, image or realtime meter in a shape this parser does not read (price it in a rates CSV " \
    "with the *_per_1m columns)"
OUT_OF_SCOPE_SUBSTRINGS = {  # camel-cased joins such as "realtimePrvwTxtInp"
    "realtime": _MEDIA_SHAPE,
    "audio": _MEDIA_SHAPE,
    "fine tuned": "fine-tuning meter (training, hosting or fine-tuned inference)",
    "ftuned": "fine-tuning meter (training, hosting or fine-tuned inference)",
}

# Meter stems whose model name differs from the one Azure returns in responses.
MODEL_ALIASES = {
    "embeddings-ada": "text-embedding-ada-002",
    "embedding-ada": "text-embedding-ada-002",
    "text-embedding-ada": "text-embedding-ada-002",
    "gpt-4.5": "gpt-4.5-preview",
    "gpt-4omini": "gpt-4o-mini",  # "gpt4omini-aud1217"
    "gptimage-1": "gpt-image-1",  # "gpt-image-1-inp-img-glbl" (read as one word, "image" is a modality)
}

# Model versions named in meters by month and day (``0806``), and the dated model name Azure
# returns for them (``gpt-4o-2024-08-06``). A version code not listed here is reported, not guessed.
KNOWN_VERSIONS: dict[tuple[str, str], str] = {
    ("gpt-4o", "0513"): "2024-05-13",
    ("gpt-4o", "0806"): "2024-08-06",
    ("gpt-4o", "1120"): "2024-11-20",
    ("gpt-4o-mini", "0718"): "2024-07-18",
    ("o1", "1217"): "2024-12-17",
    ("o1-mini", "0912"): "2024-09-12",
    ("o1-preview", "0912"): "2024-09-12",
    ("o3-mini", "0131"): "2025-01-31",
    ("o3", "0416"): "2025-04-16",
    ("o4-mini", "0416"): "2025-04-16",
    ("gpt-4.5-preview", "0227"): "2025-02-27",
    ("gpt-4.1", "0414"): "2025-04-14",
    ("gpt-4.1-mini", "0414"): "2025-04-14",
    ("gpt-4.1-nano", "0414"): "2025-04-14",
    ("gpt-5", "0807"): "2025-08-07",
    ("gpt-5-mini", "0807"): "2025-08-07",
    ("gpt-5-nano", "0807"): "2025-08-07",
    ("gpt-4o-audio-preview", "1217"): "2024-12-17",
    ("gpt-4o-audio-preview", "0603"): "2025-06-03",
    ("gpt-4o-mini-audio-preview", "1217"): "2024-12-17",
    ("gpt-4o-realtime-preview", "1217"): "2024-12-17",
    ("gpt-4o-realtime-preview", "0603"): "2025-06-03",
    ("gpt-4o-mini-realtime-preview", "1217"): "2024-12-17",
}

_VERSION_CODE = re.compile(r"^\d{4}$")  # month and day of a model version: "0806"
_CONTEXT_SIZE = re.compile(r"^\d+k$")
_UNIT = re.compile(r"^\s*1\s*([km])(?:\s*tokens?)?\s*$", re.IGNORECASE)


class RetailPricesError(ValueError):
    """A saved price list that cannot be read at all (not JSON, no ``Items``)."""


@dataclass(frozen=True, slots=True)
class Meter:
    """What a token meter's name says: the card model, the token kind and the deployment type."""

    model: str  # the card model: dated (``gpt-4o-2024-08-06``) when the meter names a version
    stem: str  # the model without version (``gpt-4o``)
    version: str | None  # ISO date of the model version the meter names, if any
    kind: TokenKind
    deployment_type: str
    service_tier: str | None = None  # "priority" for priority-processing meters; None: the default tier


@dataclass(frozen=True, slots=True)
class UnmappedMeter:
    """A price-list item that did not become part of a rate, and why."""

    meter_name: str
    product_name: str
    region: str | None
    reason: str


@dataclass
class RetailImport:
    """The rates read from a file, and what could not be used (shown to the user)."""

    rates: list[Rate]
    unmapped: list[UnmappedMeter] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kind: Literal["csv", "retail"] = "retail"
    items_read: int = 0
    meters_used: int = 0


# --------------------------------------------------------------------------- meter names


def _words(name: str) -> list[str]:
    """A meter name as lower-case words: suffixes dropped, glued words split, dashes as blanks."""
    text = re.sub(r"(?i)\s+tokens?\s*$", "", name.strip())
    text = re.sub(r"(?i)data\s*zone", " datazone ", text)
    text = re.sub(r"(?i)(?<![\w.])1\s*[km](?![\w.])", " ", text)  # "... Gl 1M Tokens"
    text = re.sub(r"(?i)batch(?=[a-z])", "batch ", text)  # "BatchOutp"
    text = re.sub(r"(?i)\bgpt-image-", "gptimage-", text)  # "gpt-image-1-...": "image" names the model
    text = re.sub(r"(?i)(?<=[a-z]{3})(?=\d)", " ", text)  # "mini0718", "turbo4K", "gpt4o"
    return [word for word in re.split(r"[\s\-_/,()]+", text.lower()) if word]


def parse_meter(meter_name: str, product_name: str = "Azure OpenAI") -> Meter | str:
    """Read one meter name; returns the ``Meter``, or the reason it cannot be mapped (a string)."""
    lowered = meter_name.lower()
    for needle, reason in OUT_OF_SCOPE_SUBSTRINGS.items():
        if needle in lowered:
            return reason
    words = _words(meter_name)
    if not words:
        return "empty meter name"
    legacy_regional = words[0] == "az"  # "Az-Text-Embedding-3-Small": the regional-only SKUs of old
    if legacy_regional:
        words = words[1:]
    localities: set[str] = set()
    batch = cached = priority = write = realtime = False
    modalities: list[str] = []
    directions: set[str] = set()
    versions: list[str] = []
    stem: list[str] = []
    for word in words:
        if word in OUT_OF_SCOPE_WORDS:
            return OUT_OF_SCOPE_WORDS[word]
        if word in GLOBAL_WORDS:
            localities.add("global")
        elif word in DATAZONE_WORDS:
            localities.add("datazone")
        elif word in REGIONAL_WORDS:
            localities.add("regional")
        elif word in PROVISIONED_WORDS:
            localities.add("provisioned")
        elif word in BATCH_WORDS:
            batch = True
        elif word in PRIORITY_WORDS:
            priority = True
        elif word in WRITE_WORDS:
            write = True
        elif word in AUDIO_WORDS:
            modalities.append("audio")
        elif word in TEXT_WORDS:
            modalities.append("text")
        elif word in IMAGE_WORDS:
            modalities.append("image")
        elif word in REALTIME_WORDS:
            realtime = True
        elif word in CACHED_WORDS:
            cached = True
        elif word in INPUT_WORDS:
            directions.add("input")
        elif word in OUTPUT_WORDS:
            directions.add("output")
        elif word in NOISE_WORDS:
            continue
        elif _VERSION_CODE.match(word):
            versions.append(word)
        elif _CONTEXT_SIZE.match(word):
            if word in CONTEXT_SIZES_IN_MODEL_NAME:
                stem.append(word)
        else:
            stem.append(word)
    if not stem:
        return "no model name in the meter name"
    if stem[0][0].isdigit() and "gpt" in product_name.lower():
        stem.insert(0, "gpt")  # product "Azure OpenAI GPT5": meters "5.1 inp Gl", "5 mini Opt Gl"
    base = "-".join(stem)
    base = MODEL_ALIASES.get(base, base)
    embedding = "embedding" in base
    modality, family = _modality(base, modalities, realtime)
    if modality is None:
        return family  # the reason
    base = family

    if len(directions) > 1:
        return "both input and output in the meter name"
    direction = next(iter(directions), None)
    if cached and direction == "output":
        return "cached output is not a token kind"
    if write:
        if not cached or direction == "output" or modality != "text":
            return "a write meter that is not a text cache write (\"Cd Wr\")"
        kind: TokenKind = "cache_write"
    elif cached:
        kind = "cached_input"
    elif direction is not None:
        kind = "input" if direction == "input" else "output"
    elif embedding:
        kind = "input"  # embedding meters bill input tokens only and often say no direction
    else:
        return "no token kind (input, cached input or output) in the meter name"
    if modality != "text":
        kind = {"input": f"{modality}_input", "cached_input": f"cached_{modality}_input",
                "output": f"{modality}_output"}[kind]  # type: ignore[assignment]

    if "provisioned" in localities:
        localities = {"provisioned"}  # "PTU Inp Gl": global provisioned is still provisioned
    if len(localities) > 1:
        return f"several deployment types in the meter name ({', '.join(sorted(localities))})"
    locality = next(iter(localities), None)
    if locality is None and legacy_regional:
        locality = "regional"
    if locality is None:
        return "no deployment type (global, data zone, regional, provisioned) in the meter name"
    if priority and (batch or locality not in ("global", "datazone")):
        return f"priority processing meter for a {'batch' if batch else locality} deployment (no such tier)"
    if batch:
        if locality not in ("global", "datazone"):
            return f"batch meter for a {locality} deployment (no such deployment type)"
        deployment_type = f"{locality}-batch"
    else:
        deployment_type = locality

    if len(versions) > 1:
        return f"several version codes in the meter name ({', '.join(versions)})"
    version: str | None = None
    model = base
    if versions:
        version = KNOWN_VERSIONS.get((base, versions[0]))
        if version is None:
            return (f"version code {versions[0]} of {base} is not a known model version "
                    "(add it to KNOWN_VERSIONS in metering/retail_prices.py, or price it in a rates CSV)")
        model = f"{base}-{version}"
    return Meter(model=model, stem=base, version=version, kind=kind, deployment_type=deployment_type,
                 service_tier="priority" if priority else None)


# The gpt-4o models whose audio and realtime meters name the family with "aud" / "rt"
# ("gpt-4o-aud-1217", "gpt4omini-rt-txt1217"); their Azure model names end in "-audio-preview" and
# "-realtime-preview". Later audio models ("gpt aud 0828", "gpt rt aud 0828") are other models.
PREVIEW_FAMILY_STEMS = {"gpt-4o", "gpt-4o-mini"}


def _modality(base: str, modalities: Sequence[str], realtime: bool) -> tuple[str | None, str]:
    """The token modality (text, audio, image) and the card model stem of a meter's words, or
    (None, reason). "aud" is the modality, except that with "txt" beside it (or alone on a gpt-4o
    stem that is not a speech model) it names the gpt-4o audio family: ``gpt-4o-aud-1217-txt Inp``
    is text input of gpt-4o-audio-preview, ``gpt-4o-aud-1217 Inp`` its audio input."""
    kinds = set(modalities)
    words = set(base.split("-"))
    speech = bool(words & SPEECH_STEM_WORDS)
    if len(kinds - {"text"}) > 1:
        return None, f"several modalities in the meter name ({', '.join(sorted(kinds))})"
    family = base
    unknown = (f"audio, image or realtime meter of {base!r}: which model it prices is not known "
               "(price it in a rates CSV with the *_per_1m columns)")
    if realtime or ("audio" in kinds and not speech):
        if speech or base not in PREVIEW_FAMILY_STEMS:
            return None, unknown
        family = f"{base}-realtime-preview" if realtime else f"{base}-audio-preview"
        if not realtime:
            if "text" not in kinds:
                return "audio", family  # "gpt-4o-aud-1217 Inp": the audio tokens of the audio model
            kinds.discard("audio")  # "gpt-4o-aud-1217-txt Inp": the text tokens of the audio model
    elif kinds and not speech and not base.startswith("gpt-image-"):
        return None, unknown  # "txt" / "img" on a model not known to bill them apart
    if "image" in kinds and not base.startswith("gpt-image-"):
        return None, unknown
    if len(kinds) > 1:
        return None, f"several modalities in the meter name ({', '.join(sorted(kinds))})"
    return (next(iter(kinds)) if kinds else "text"), family


# --------------------------------------------------------------------------- meters of units beyond tokens

# The meters Azure bills per hour, character, call, session or GB-day, read only in the shapes the
# price list has (github.com/guygregory/modelmeters.com, monthly/full/2024-05-01.ndjson to
# 2025-05-01.ndjson, commit d4a64106f74f; tests/data/origins.csv):
UNIT_METER_SHAPES = (
    "Speech-to-Text-Batch-Whisper-glbl Unit",  # whisper, per 1 Hour of audio (also -regnl)
    "Speech-Text to Speech-global Characters",  # tts, per 1M characters (also -Regional)
    "Speech-Text to Speech HD-Regional Characters",  # tts-hd, per 1M characters (also -global)
    "file-search-tool-calls-glbl Calls",  # Responses file search, per 1K calls (also -rgnl, -datazone)
    "Code-Interpreter-global Session",  # per session, unit "1" (also "Code-Interpreter-regnl EP Session")
    "Assistants-File Search-glbl GB",  # vector storage, per GB and day ("1/Day"; also -regnl)
    "gpt-4o-0806-FT-Hstng-regnl Unit",  # fine-tuned model hosting, per 1 Hour
    "gpt-4.1-ft hosting global Unit",  # the same, newer spelling
    "davinci-002-FT-Trng-regnl Unit",  # fine-tuning training, per 1 Hour
    "gpt-4.1 FT Training global Tokens",  # fine-tuning training, per 1K tokens
    "o4-mini RFT Training regional Unit",  # reinforcement fine-tuning, per 1 Hour
    "gpt-4o-ft model grader input Tokens",  # a fine-tuning job's grader model
)
# Unit kinds priced per request (a usage_records column and a rate column each) and the fixed kinds
# the bill charges by time or capacity (reconciled as fixed costs, never per request).
UNIT_KIND_COLUMNS = {kind: column for kind, (column, _) in UNIT_RATE_COLUMNS.items()}
FIXED_KINDS = ("fine_tune_hosting", "fine_tune_training", "vector_storage")
# How many base units (seconds, characters, calls, sessions) one unit of the price list's unit of
# measure is, for each unit kind, and what the rate column is priced per.
_HOURS = re.compile(r"^\s*1\s*(?:/\s*)?hours?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class UnitMeter:
    """What a meter of a unit beyond tokens bills: the unit kind (a ``UNIT_FIELDS`` name, or one of
    ``FIXED_KINDS``), the card model it prices (``None``: a tool of every model), the deployment type."""

    kind: str
    model: str | None
    deployment_type: str | None  # None: a fine-tuning meter that names none (a grader's tokens)


def parse_unit_meter(meter_name: str) -> UnitMeter | None:
    """Read a meter of a unit beyond tokens (``UNIT_METER_SHAPES``); ``None`` for any other meter."""
    lowered = meter_name.lower()
    words = set(_words(meter_name))
    if words & PROVISIONED_WORDS:
        return None
    locality = ("datazone" if words & DATAZONE_WORDS else "regional" if words & REGIONAL_WORDS
                else "global" if words & GLOBAL_WORDS else None)
    fine_tune = words & {"ft", "rft", "ftuned"} or any(w.endswith("-ft") for w in lowered.split())
    if fine_tune or "grader" in words:  # a grader is a model a reinforcement fine-tuning job calls
        if words & {"hstng", "hosting"}:
            return UnitMeter("fine_tune_hosting", None, locality)
        if words & {"trng", "training", "grader"}:
            return UnitMeter("fine_tune_training", None, locality)
    if locality is None:
        return None
    # The price list's meterName ends in its unit ("... Session"); a cost export may name the SKU without it.
    if "whisper" in lowered and "speech-to-text" in lowered:
        return UnitMeter("audio_seconds", "whisper", locality)
    if "text to speech" in lowered and not lowered.endswith(("tokens", "token")):
        return UnitMeter("input_characters", "tts-hd" if "speech hd" in lowered else "tts", locality)
    if lowered.startswith("file-search-tool-calls"):
        return UnitMeter("file_search_calls", None, locality)
    if lowered.startswith("code-interpreter"):
        return UnitMeter("code_interpreter_sessions", None, locality)
    if lowered.startswith("assistants-file search"):
        return UnitMeter("vector_storage", None, locality)
    return None


def unit_price(kind: str, price: Decimal, unit: str) -> Decimal | None:
    """A unit meter's price as its rate column is priced (per hour, per 1M characters, per 1K calls,
    per session), from its unit of measure; ``None`` for a unit of measure not seen for the kind."""
    unit = (unit or "").strip()
    if kind == "audio_seconds":
        return price if _HOURS.match(unit) else None
    if kind == "input_characters":
        block = _UNIT.match(unit)
        return None if block is None else _plain(price * (1000 if block.group(1).lower() == "k" else 1))
    if kind in ("file_search_calls", "web_search_calls"):
        if unit.lower() in ("1k", "1 k", "1000"):
            return price
        return _plain(price * 1000) if unit == "1" else None
    if kind == "code_interpreter_sessions":
        return price if unit == "1" else None
    return None


# --------------------------------------------------------------------------- items → priced meters


def per_million(price: Decimal, unit: str) -> Decimal | None:
    """A price per ``unit`` tokens as a price per 1M tokens ("1K" × 1000, "1M" as is); ``None``
    for any other unit of measure."""
    match = _UNIT.match(unit or "")
    if match is None:
        return None
    amount = price * 1000 if match.group(1).lower() == "k" else price
    return _plain(amount)


def _plain(amount: Decimal) -> Decimal:
    """The same number without trailing zeros or an exponent (``10``, not ``1E+1``)."""
    amount = amount.normalize()
    return amount.quantize(Decimal(1)) if amount == amount.to_integral_value() else amount


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def _instant(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


@dataclass(frozen=True, slots=True)
class _Priced:
    meter: Meter
    region: str | None  # None: any region
    currency: str
    start: datetime
    price: Decimal  # per 1M tokens
    item_region: str | None
    meter_name: str
    product_name: str


def _classify(item: Mapping[str, Any], default_currency: str | None) -> _Priced | UnmappedMeter:
    """One price-list item → a priced meter, or the reason it is not used."""
    meter_name = str(item.get("meterName") or item.get("skuName") or "").strip()
    product = str(item.get("productName") or "").strip()
    raw_region = str(item.get("armRegionName") or "").strip()
    item_region = raw_region if raw_region and raw_region.lower() != "global" else None

    def unmapped(reason: str) -> UnmappedMeter:
        return UnmappedMeter(meter_name or "(no meterName)", product, item_region, reason)

    service = str(item.get("serviceName") or "").strip()
    if service and service.lower() not in ACCEPTED_SERVICES:
        return unmapped(f"service {service!r} is not Foundry Models / Cognitive Services")
    if not product.lower().startswith(OPENAI_PRODUCT_PREFIX):
        return unmapped(f"product {product or '(none)'!r} is not Azure OpenAI")
    price_type = str(item.get("type") or "Consumption")
    if price_type.lower() != "consumption":
        return unmapped(f"price type {price_type!r} is not pay-as-you-go (Consumption)")
    tier = _decimal(item.get("tierMinimumUnits"))
    if tier is not None and tier > 0:
        return unmapped(f"volume tier from {tier} units (not supported)")
    unit = str(item.get("unitOfMeasure") or "")
    price = _decimal(item.get("retailPrice"))
    if price is None:
        price = _decimal(item.get("unitPrice"))
    if price is None or price < 0:
        return unmapped("no usable retailPrice")
    normalized = per_million(price, unit)
    if normalized is None:
        if "hour" in unit.lower():
            return unmapped(f"billed per hour ({unit!r}: provisioned capacity or hosting), not per token")
        return unmapped(f"unit of measure {unit!r} is not 1K or 1M tokens")
    exponent = normalized.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_RATE_DECIMALS:
        return unmapped(f"price {normalized:f} per 1M tokens has more than {MAX_RATE_DECIMALS} decimals")
    start = _instant(item.get("effectiveStartDate"))
    if start is None:
        return unmapped("no effectiveStartDate")
    currency = str(item.get("currencyCode") or default_currency or "").strip().upper()
    if len(currency) != 3 or not currency.isalpha():
        return unmapped("no currencyCode")
    parsed = parse_meter(meter_name, product)
    if isinstance(parsed, str):
        return unmapped(parsed)
    region = item_region if parsed.deployment_type in ("regional", "provisioned") else None
    if parsed.deployment_type in ("regional", "provisioned") and region is None:
        return unmapped(f"{parsed.deployment_type} meter without armRegionName")
    return _Priced(parsed, region, currency, start, normalized, item_region, meter_name, product)


# --------------------------------------------------------------------------- priced meters → rates

_GroupKey = tuple[str, str, str | None, str, str]  # model, deployment type, region, currency, service tier ("" default)


def _timeline(
    model: str, deployment_type: str, region: str | None, currency: str, entries: Sequence[_Priced],
    service_tier: str | None = None,
) -> tuple[list[Rate], str | None]:
    """The rate rows of one model/type/region/currency: one per start date at which the input and
    output prices are known, each kind at its latest price started on or before that date.
    Returns (rows, problem); a problem means no row can be built."""
    by_kind: dict[str, dict[datetime, Decimal]] = defaultdict(dict)
    for entry in entries:
        by_kind[entry.meter.kind][entry.start] = entry.price
    embedding = "embedding" in model
    if "input" not in by_kind:
        return [], "no input meter"
    # A model with no text output meter whose only output is images or audio (gpt-image-1,
    # gpt-4o-mini-tts): every output token is of that kind, so that is its output price.
    media_outputs = [kind for kind in ("image_output", "audio_output") if kind in by_kind]
    output_kind = "output" if "output" in by_kind or len(media_outputs) != 1 else media_outputs[0]
    if output_kind not in by_kind and not embedding:
        return [], "no output meter"

    def at(kind: str, moment: datetime) -> Decimal | None:
        started = [start for start in by_kind.get(kind, {}) if start <= moment]
        return by_kind[kind][max(started)] if started else None

    rows: list[Rate] = []
    for start in sorted({e.start for e in entries}):
        input_price = at("input", start)
        output_price = at(output_kind, start) if output_kind in by_kind else Decimal(0)
        if input_price is None or output_price is None:
            continue
        cached_price = at("cached_input", start)
        kind_prices = {KIND_COLUMNS[kind]: at(kind, start) for kind in MEDIA_KINDS}
        if rows and (rows[-1].input_per_1m, rows[-1].cached_input_per_1m, rows[-1].output_per_1m,
                     *(getattr(rows[-1], column) for column in kind_prices)) == (
            input_price, cached_price, output_price, *kind_prices.values()
        ):
            continue
        rows.append(Rate(model=model, deployment_type=deployment_type, region=region, effective_from=start,
                         effective_to=None, currency=currency, input_per_1m=input_price,
                         cached_input_per_1m=cached_price, output_per_1m=output_price, service_tier=service_tier,
                         **kind_prices))
    if not rows:
        return [], "no date at which both input and output prices are known"
    closed = [replace(row, effective_to=following.effective_from) for row, following in zip(rows, rows[1:])]
    return closed + [rows[-1]], None


def _conflicts(entries: Sequence[_Priced]) -> str | None:
    """Two different prices for the same token kind from the same start (e.g. two regions of a
    global meter that disagree): nothing can be imported for the group without guessing."""
    seen: dict[tuple[str, datetime], _Priced] = {}
    for entry in entries:
        key = (entry.meter.kind, entry.start)
        other = seen.setdefault(key, entry)
        if other.price != entry.price:
            return (f"conflicting {entry.meter.kind.replace('_', ' ')} prices from {entry.start.date()}: "
                    f"{other.price} ({other.meter_name}, {other.item_region or 'no region'}) and "
                    f"{entry.price} ({entry.meter_name}, {entry.item_region or 'no region'})")
    return None


def map_retail_items(items: Iterable[Mapping[str, Any]], default_currency: str | None = None) -> RetailImport:
    """Price-list items → merged per-1M ``Rate`` rows, plus every item that could not be used."""
    result = RetailImport(rates=[])
    groups: dict[_GroupKey, list[_Priced]] = defaultdict(list)
    unit_entries: list[_UnitPriced] = []
    for item in items:
        result.items_read += 1
        if not isinstance(item, Mapping):
            result.unmapped.append(UnmappedMeter("(not an object)", "", None, "item is not a JSON object"))
            continue
        unit_priced = _classify_unit(item, default_currency)
        if unit_priced is not None:
            if isinstance(unit_priced, UnmappedMeter):
                result.unmapped.append(unit_priced)
            else:
                unit_entries.append(unit_priced)
            continue
        classified = _classify(item, default_currency)
        if isinstance(classified, UnmappedMeter):
            result.unmapped.append(classified)
            continue
        meter = classified.meter
        groups[(meter.model, meter.deployment_type, classified.region, classified.currency,
                meter.service_tier or "")].append(classified)

    def build(key: _GroupKey, entries: list[_Priced]) -> bool:
        model, deployment_type, region, currency, tier = key
        problem = _conflicts(entries)
        rows: list[Rate] = []
        if problem is None:
            rows, problem = _timeline(model, deployment_type, region, currency, entries, tier or None)
        if problem is not None:
            where = f"{model} / {deployment_type}" + (f" / {tier} tier" if tier else "")
            for entry in entries:
                result.unmapped.append(UnmappedMeter(entry.meter_name, entry.product_name, entry.item_region,
                                                     f"{where}: {problem}"))
            return False
        result.rates.extend(rows)
        result.meters_used += len(entries)
        return True

    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2] or "", k[3], k[4])):
        build(key, groups[key])
    _add_versionless_rows(groups, result)
    _add_unit_prices(unit_entries, result)
    result.rates.sort(key=lambda r: (r.model, r.deployment_type, r.region or "", r.service_tier or "", r.effective_from))
    return result


@dataclass(frozen=True, slots=True)
class _UnitPriced:
    meter: UnitMeter
    region: str | None  # None: any region
    currency: str
    start: datetime
    price: Decimal  # as the rate column is priced (per hour, per 1M characters, per 1K calls, per session)
    item_region: str | None
    meter_name: str
    product_name: str


def _classify_unit(item: Mapping[str, Any], default_currency: str | None) -> _UnitPriced | UnmappedMeter | None:
    """A price-list item of a unit beyond tokens (``parse_unit_meter``) → its price as the rate column
    holds it, or why not; ``None`` for a token or capacity meter (``_classify`` reads those)."""
    meter_name = str(item.get("meterName") or item.get("skuName") or "").strip()
    product = str(item.get("productName") or "").strip()
    if not product.lower().startswith(OPENAI_PRODUCT_PREFIX):
        return None
    meter = parse_unit_meter(meter_name)
    if meter is None:
        return None
    raw_region = str(item.get("armRegionName") or "").strip()
    item_region = raw_region if raw_region and raw_region.lower() != "global" else None

    def unmapped(reason: str) -> UnmappedMeter:
        return UnmappedMeter(meter_name, product, item_region, reason)

    if meter.kind not in UNIT_KIND_COLUMNS:
        unit = str(item.get("unitOfMeasure") or "")
        per = "hour" if "hour" in unit.lower() else f"{unit!r}"
        return unmapped(f"{meter.kind.replace('_', ' ')} meter billed per {per}: a fixed cost, not a price per "
                        "request (reconcile shows it; allocate it with a PTU costs file of that kind)")
    if str(item.get("type") or "Consumption").lower() != "consumption":
        return unmapped("price type is not pay-as-you-go (Consumption)")
    tier = _decimal(item.get("tierMinimumUnits"))
    if tier is not None and tier > 0:
        return unmapped(f"volume tier from {tier} units (not supported)")
    price = _decimal(item.get("retailPrice"))
    price = price if price is not None else _decimal(item.get("unitPrice"))
    unit = str(item.get("unitOfMeasure") or "")
    converted = None if price is None or price < 0 else unit_price(meter.kind, price, unit)
    if converted is None:
        return unmapped(f"no usable price per {UNIT_KIND_COLUMNS[meter.kind]} (unit of measure {unit!r})")
    exponent = converted.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_RATE_DECIMALS:
        return unmapped(f"price {converted:f} has more than {MAX_RATE_DECIMALS} decimals")
    start = _instant(item.get("effectiveStartDate"))
    currency = str(item.get("currencyCode") or default_currency or "").strip().upper()
    if start is None or len(currency) != 3 or not currency.isalpha():
        return unmapped("no effectiveStartDate or currencyCode")
    regional = meter.deployment_type in ("regional", "provisioned")
    if regional and item_region is None:
        return unmapped("regional meter without armRegionName")
    return _UnitPriced(meter, item_region if regional else None, currency, start, converted, item_region, meter_name,
                       product)


def _add_unit_prices(entries: Sequence[_UnitPriced], result: RetailImport) -> None:
    """Unit prices into the card: a model billed only by its unit (whisper per hour, tts and tts-hd
    per 1M characters) gets rows of its own (token prices 0: it has no tokens); a tool's price
    (file search calls, code interpreter sessions) fills its column on every row of the same
    deployment type, currency (and region, for regional rows): the price in force at the row's start,
    else the tool meter's first price (no call can have been billed on it before it existed).
    Two prices of one meter from the same start (regions that disagree) import nothing for it."""
    by_key: dict[tuple[str, str | None, str, str | None, str], dict[datetime, _UnitPriced]] = defaultdict(dict)
    conflicts: set[tuple[str, str | None, str, str | None, str]] = set()
    for entry in entries:
        assert entry.meter.deployment_type is not None
        key = (entry.meter.kind, entry.meter.model, entry.meter.deployment_type, entry.region, entry.currency)
        other = by_key[key].setdefault(entry.start, entry)
        if other.price != entry.price:
            conflicts.add(key)
    for key in sorted(conflicts, key=str):
        for entry in by_key.pop(key).values():
            result.unmapped.append(UnmappedMeter(entry.meter_name, entry.product_name, entry.item_region,
                                                 f"conflicting prices from {entry.start.date()} in different regions"))
    token_rows = len(result.rates)  # the model rows a tool price may fill (not whisper's or tts's own)
    for (kind, model, deployment_type, region, currency), prices in sorted(by_key.items(), key=lambda kv: str(kv[0])):
        column = UNIT_KIND_COLUMNS[kind]
        starts = sorted(prices)
        if model is not None:
            rows = [Rate(model=model, deployment_type=deployment_type, region=region, effective_from=start,
                         effective_to=following, currency=currency, input_per_1m=Decimal(0), cached_input_per_1m=None,
                         output_per_1m=Decimal(0), **{column: prices[start].price})
                    for start, following in zip(starts, [*starts[1:], None])]
            result.rates.extend(rows)
            result.meters_used += len(prices)
            continue
        filled = 0
        for position in range(token_rows):
            rate = result.rates[position]
            if rate.deployment_type != deployment_type or rate.currency != currency:
                continue
            if region is not None and normalize_region(rate.region) != normalize_region(region):
                continue
            in_force = [start for start in starts if start <= rate.effective_from]
            result.rates[position] = replace(rate, **{column: prices[max(in_force) if in_force else starts[0]].price})
            filled += 1
        if filled:
            result.meters_used += len(prices)
        else:
            for entry in prices.values():
                result.unmapped.append(UnmappedMeter(entry.meter_name, entry.product_name, entry.item_region,
                                                     f"no {deployment_type} model row in this price list to add "
                                                     f"{column} to"))


def _add_versionless_rows(groups: Mapping[_GroupKey, list[_Priced]], result: RetailImport) -> None:
    """Requests that name a model without its version (``gpt-4o``, e.g. a deployment name when the
    response was not captured) are priced by a plain row, added only when every version of the
    model in the price list has the same prices; otherwise a note says why it is missing."""
    plain_keys = {key for key, entries in groups.items() if entries and entries[0].meter.version is None}
    by_stem: dict[_GroupKey, list[_Priced]] = defaultdict(list)
    for (_, deployment_type, region, currency, tier), entries in groups.items():
        for entry in entries:
            if entry.meter.version is not None:
                by_stem[(entry.meter.stem, deployment_type, region, currency, tier)].append(entry)
    for key in sorted(by_stem, key=lambda k: (k[0], k[1], k[2] or "", k[3], k[4])):
        if key in plain_keys:
            continue  # the price list has versionless meters for this model: they price it
        stem, deployment_type, region, currency, tier = key
        entries = by_stem[key]
        prices_by_kind: dict[str, set[Decimal]] = defaultdict(set)
        for entry in entries:
            prices_by_kind[entry.meter.kind].add(entry.price)
        versions = sorted({e.meter.version for e in entries if e.meter.version})
        if any(len(prices) > 1 for prices in prices_by_kind.values()):
            result.notes.append(
                f"{stem} / {deployment_type}{' / ' + region if region else ''}: imported per version "
                f"({', '.join(stem + '-' + v for v in versions)}) only, because the versions are priced "
                f"differently; requests that name just {stem!r} stay no_rate unless a rates CSV prices them"
            )
            continue
        rows, problem = _timeline(stem, deployment_type, region, currency, _earliest_per_kind(entries), tier or None)
        if problem is None:
            result.rates.extend(rows)


def _earliest_per_kind(entries: Sequence[_Priced]) -> list[_Priced]:
    """Versions with equal prices: each kind from the first date any version had that price."""
    first: dict[str, _Priced] = {}
    for entry in sorted(entries, key=lambda e: e.start):
        first.setdefault(entry.meter.kind, entry)
    return list(first.values())


# --------------------------------------------------------------------------- saved pages


@dataclass
class SavedPages:
    """The items of one saved file, and how many of its pages point to a next page."""

    items: list[Mapping[str, Any]]
    pages: int = 0
    pages_with_next: int = 0


def load_pages(text: str, source: str = "price list") -> SavedPages:
    """Saved API responses → their items. Accepts one page (``{"Items": [...], "NextPageLink": ...}``),
    a JSON array of pages or of items, or one page per line (pages appended to one file). Prices are
    read as exact decimals; an item without ``currencyCode`` takes its page's ``BillingCurrency``."""
    text = text.lstrip("\ufeff")
    try:
        documents = [json.loads(text, parse_float=Decimal)]
    except json.JSONDecodeError as whole_error:
        documents = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                documents.append(json.loads(line, parse_float=Decimal))
            except json.JSONDecodeError:
                raise RetailPricesError(f"{source}: not valid JSON ({whole_error.msg} at line {whole_error.lineno}; "
                                        f"line {number} is not a JSON page either)") from None
    saved = SavedPages(items=[])
    for document in documents:
        for element in document if isinstance(document, list) else [document]:
            if isinstance(element, Mapping) and isinstance(element.get("Items"), list):
                saved.pages += 1
                saved.pages_with_next += bool(element.get("NextPageLink"))
                currency = element.get("BillingCurrency")
                for item in element["Items"]:
                    if isinstance(item, Mapping) and currency and not item.get("currencyCode"):
                        item = {**item, "currencyCode": currency}
                    saved.items.append(item)
            elif isinstance(element, Mapping) and ("meterName" in element or "skuName" in element):
                saved.items.append(element)
            else:
                raise RetailPricesError(f"{source}: expected Azure Retail Prices API pages (objects with an "
                                        "\"Items\" list) or their items")
    if not saved.items:
        raise RetailPricesError(f"{source}: the price list has no items (a $filter that matches nothing "
                                "returns an empty page)")
    return saved


def parse_retail_pages(files: Sequence[tuple[str, str]]) -> RetailImport:
    """Saved Azure Retail Prices API responses, as ``(source, text)`` pairs, mapped together (one
    model's meters may sit on different pages) → rates and a report. Raises ``RateCardError``."""
    problems: list[str] = []
    items: list[Mapping[str, Any]] = []
    pages = pages_with_next = 0
    for source, text in files:
        try:
            saved = load_pages(text, source)
        except RetailPricesError as exc:
            problems.append(str(exc))
            continue
        items.extend(saved.items)
        pages += saved.pages
        pages_with_next += saved.pages_with_next
    if problems:
        raise RateCardError(problems)
    result = map_retail_items(items)
    if pages and pages_with_next == pages:
        result.notes.append(
            f"{', '.join(source for source, _ in files)}: every saved page has a NextPageLink, so the price "
            "list may be incomplete (save every page, including the last, or use --fetch)"
        )
    return result


def parse_retail_json(text: str, source: str = "price list") -> RetailImport:
    """One saved Azure Retail Prices API response (one or more pages) → rates and a report."""
    return parse_retail_pages([(source, text)])
