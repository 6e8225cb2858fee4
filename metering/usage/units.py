"""Units Azure bills beyond tokens, read from the shapes the APIs return (pure, no I/O).

* **Audio seconds** — a transcription billed by duration (whisper) reports
  ``"usage": {"type": "duration", "seconds": 9}`` (OpenAI API reference, ``TranscriptionVerbose.usage``
  / ``Transcription.usage``: ``seconds`` is a number). Kept to the millisecond.
* **Speech input characters** — a speech request (``/audio/speech``, tts and tts-hd, billed per 1M
  characters) answers with audio bytes and no usage. In ``usage`` capture mode the policy sends the
  request's input length without its text, as ``"usage": {"type": "characters", "characters": N}``
  (policy/metering.xml); with the request attached, its ``input`` is counted here. Characters are
  Unicode code points (the policy counts the same: UTF-16 units less low surrogates).
* **Responses API built-in tools** — output items ``{"type": "web_search_call", ...}`` and
  ``{"type": "file_search_call", ...}`` are one billed call each; ``{"type": "code_interpreter_call",
  "container_id": "cntr_..."}`` runs in a container, billed per session: the distinct containers of a
  response are its sessions. Read from a JSON body (``output``, or ``response.output``) or a stream's
  ``response.output_item.done`` / ``response.completed`` events.
* **Assistants runs** — a streamed run's ``thread.run.step.completed`` events carry
  ``step_details.tool_calls`` of ``"type": "code_interpreter"``: a run that used the code interpreter
  is one session. (Listing a run's steps later is not metered: a client that lists them twice would
  count the session twice.)

A request whose response was not attached (``usage`` capture) has no output items: its tool calls are
not known, and ``reconcile`` shows the bill's tool-call meters as traffic the gateway did not see.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import orjson

from metering.model import BadEvent

MILLISECOND = Decimal("0.001")
# Bounds: a transcription is at most hours long, a speech input at most 4,096 characters; anything
# beyond these is not usage anyone can bill (invalid_usage), never a row that breaks a report.
MAX_AUDIO_SECONDS = Decimal(10**9)
MAX_COUNT = 10**12
# A stream is scanned for tool items only up to this many events (a response has a handful of items).
MAX_STREAM_EVENTS = 100_000
WEB_SEARCH, FILE_SEARCH, CODE_INTERPRETER = "web_search_call", "file_search_call", "code_interpreter_call"


@dataclass(frozen=True, slots=True)
class ToolUse:
    """Billed tool units of one response."""

    web_search_calls: int = 0
    file_search_calls: int = 0
    code_interpreter_sessions: int = 0


NO_TOOLS = ToolUse()


def duration_seconds(usage: Any) -> Decimal | None:
    """Seconds of a ``{"type": "duration", "seconds": N}`` usage, to the millisecond; ``None`` for any
    other usage. A value that is not a non-negative number is ``invalid_usage``."""
    if not isinstance(usage, Mapping) or usage.get("type") != "duration":
        return None
    return _seconds(usage.get("seconds"))


def _seconds(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadEvent("invalid_usage", f"usage seconds {value!r:.40} is not a number")
    try:
        seconds = Decimal(str(value))
    except InvalidOperation:
        raise BadEvent("invalid_usage", f"usage seconds {value!r:.40} is not a number") from None
    if not seconds.is_finite() or not 0 <= seconds <= MAX_AUDIO_SECONDS:
        raise BadEvent("invalid_usage", f"usage seconds {value!r:.40} is out of range (0 to {MAX_AUDIO_SECONDS:,})")
    return seconds.quantize(MILLISECOND, rounding=ROUND_HALF_EVEN)


def reported_characters(usage: Any) -> int | None:
    """Characters of the policy's ``{"type": "characters", "characters": N}``; ``None`` otherwise."""
    if not isinstance(usage, Mapping) or usage.get("type") != "characters":
        return None
    value = usage.get("characters")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise BadEvent("invalid_usage", f"usage characters {value!r:.40} is not a whole number from 0 to {MAX_COUNT:,}")
    return value


def speech_input_characters(request: Any) -> int | None:
    """Characters of a speech request's ``input`` (code points), when the request is attached."""
    if isinstance(request, (str, bytes)):
        try:
            request = orjson.loads(request)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(request, Mapping) or not isinstance(request.get("input"), str):
        return None
    return len(request["input"])


def speech_characters(request: Any) -> int | None:
    """Characters of a text-to-speech request (``input`` with a ``voice``: the speech API's body;
    a transcription is multipart, never attached), else ``None``."""
    if isinstance(request, (str, bytes)):
        try:
            request = orjson.loads(request)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(request, Mapping) or "voice" not in request:
        return None
    return speech_input_characters(request)


#: What a response that used a built-in tool spells: web and file search items (``"web_search_call"``
#: and ``"file_search_call"`` share the ending searched for), code interpreter items, Assistants run
#: steps. Each is a scan of the whole text, so they are as few as can cover the four.
TOOL_MARKERS = ('_search_call"', '"code_interpreter', '"thread.run.step"')


def may_have_tools(text: str | None) -> bool:
    """A cheap test before any parsing: only a response that names a built-in tool is scanned."""
    return bool(text) and any(map(text.__contains__, TOOL_MARKERS))  # type: ignore[union-attr]


def tools_in_items(items: Iterable[Any]) -> ToolUse:
    """Billed tool units of Responses output items: a call per web and file search item, a session
    per distinct code interpreter container (an item without ``container_id`` is its own session)."""
    web = files = 0
    containers: set[str] = set()
    anonymous = 0
    for item in items:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if kind == WEB_SEARCH:
            web += 1
        elif kind == FILE_SEARCH:
            files += 1
        elif kind == CODE_INTERPRETER:
            container = item.get("container_id")
            if isinstance(container, str) and container:
                containers.add(container[:200])
            else:
                anonymous += 1
    return ToolUse(web, files, len(containers) + anonymous)


def tools_in_body(body: Mapping[str, Any] | None) -> ToolUse:
    """Tool units of a Responses JSON body (``output``, or ``response.output`` of a saved event)."""
    if body is None:
        return NO_TOOLS
    output = body.get("output")
    if output is None and isinstance(body.get("response"), Mapping):
        output = body["response"].get("output")
    return tools_in_items(output) if isinstance(output, list) else NO_TOOLS


def tools_in_stream(text: str) -> ToolUse:
    """Tool units of a Responses or Assistants stream (SSE text): the items of ``response.completed``
    when the stream has it, else each ``response.output_item.done`` item; an Assistants run with a
    completed code interpreter step is one session."""
    done: list[Any] = []
    completed: list[Any] | None = None
    run_used_code = False
    events = 0
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        events += 1
        if events > MAX_STREAM_EVENTS:
            break
        data = line[5:].strip()
        if not data.startswith("{") or ('"type"' not in data and '"step_details"' not in data):
            continue
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(payload, dict):
            continue
        kind = payload.get("type")
        if kind == "response.output_item.done":
            done.append(payload.get("item"))
        elif kind in ("response.completed", "response.incomplete") and isinstance(payload.get("response"), dict):
            output = payload["response"].get("output")
            if isinstance(output, list):
                completed = output
        elif payload.get("object") == "thread.run.step" and payload.get("status") == "completed":
            details = payload.get("step_details")
            calls = details.get("tool_calls") if isinstance(details, dict) else None
            if isinstance(calls, list) and any(isinstance(c, dict) and c.get("type") == "code_interpreter" for c in calls):
                run_used_code = True
    found = tools_in_items(completed if completed is not None else done)
    if run_used_code and not found.code_interpreter_sessions:
        found = ToolUse(found.web_search_calls, found.file_search_calls, 1)
    return found
