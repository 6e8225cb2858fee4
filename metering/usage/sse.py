"""Rebuild a captured Server-Sent Events stream into what the model produced (pure, no I/O).

Handles Chat Completions, legacy Completions and Responses API streams as Azure OpenAI sends
them through APIM: Azure's leading ``prompt_filter_results`` chunk with empty ``choices``,
content-filter annotation chunks, the final ``include_usage`` chunk (``choices: []``), several
choices (``n > 1``), tool-call and legacy ``function_call`` deltas, refusals, ``event:`` lines,
comments and keep-alives, CRLF/LF/CR line endings, multi-line ``data:`` and captures cut short.

The result carries the text the model produced (for token estimation) and the provider's usage
when the stream included it (which then wins over any estimate).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "FunctionCall",
    "ToolCall",
    "RebuiltChoice",
    "RebuiltStream",
    "rebuild_stream",
    "rebuild_body",
]

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A legacy ``function_call`` the model made: name and JSON arguments as streamed."""

    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call of a choice, its deltas joined by tool-call ``index``."""

    index: int
    id: str | None = None
    type: str | None = None
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class RebuiltChoice:
    """Everything one choice (``index``) produced over the whole stream."""

    index: int
    text: str = ""
    refusal: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    function_call: FunctionCall | None = None
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class RebuiltStream:
    """A stream rebuilt from its events.

    ``complete`` means the stream ended properly (``[DONE]`` or a terminal Responses API event);
    ``truncated`` means the capture was cut inside the last event (its partial JSON is ignored).
    ``usage`` is the provider's usage object when the stream carried one.
    """

    kind: str = "unknown"  # "chat.completions", "completions", "responses" or "unknown"
    id: str | None = None
    model: str | None = None
    choices: tuple[RebuiltChoice, ...] = ()
    usage: dict[str, Any] | None = None
    complete: bool = False
    truncated: bool = False
    events: int = 0  # data events parsed (JSON payloads and [DONE])
    bad_events: int = 0  # data events whose payload was not a JSON object (the cut-off last one included)
    notes: tuple[str, ...] = ()
    service_tier: str | None = None  # the tier the response says it ran on (chunks, or the Responses object)

    @property
    def text(self) -> str:
        """All choices' text joined (handy for single-choice streams and tests)."""
        return "".join(c.text for c in self.choices)


# --- accumulation (mutable, private) -------------------------------------------------------


class _ToolAcc:
    __slots__ = ("index", "id", "type", "name", "args")

    def __init__(self, index: int):
        self.index = index
        self.id: str | None = None
        self.type: str | None = None
        self.name: list[str] = []
        self.args: list[str] = []

    def freeze(self) -> ToolCall:
        return ToolCall(self.index, self.id, self.type, "".join(self.name), "".join(self.args))


class _ChoiceAcc:
    __slots__ = ("index", "text", "refusal", "tools", "fn_name", "fn_args", "has_fn", "finish")

    def __init__(self, index: int):
        self.index = index
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.tools: dict[int, _ToolAcc] = {}
        self.fn_name: list[str] = []
        self.fn_args: list[str] = []
        self.has_fn = False
        self.finish: str | None = None

    def tool(self, index: int) -> _ToolAcc:
        acc = self.tools.get(index)
        if acc is None:
            acc = self.tools[index] = _ToolAcc(index)
        return acc

    def freeze(self) -> RebuiltChoice:
        return RebuiltChoice(
            index=self.index,
            text="".join(self.text),
            refusal="".join(self.refusal),
            tool_calls=tuple(self.tools[i].freeze() for i in sorted(self.tools)),
            function_call=FunctionCall("".join(self.fn_name), "".join(self.fn_args)) if self.has_fn else None,
            finish_reason=self.finish,
        )


_KIND_BY_OBJECT = {
    "chat.completion.chunk": "chat.completions",
    "chat.completion": "chat.completions",
    "text_completion": "completions",
    "response": "responses",
}

_RESPONSES_TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


class _Builder:
    """Folds parsed event payloads into choices; one per stream."""

    __slots__ = ("kind", "id", "model", "choices", "usage", "complete", "events", "bad", "notes", "parts", "tier")

    def __init__(self) -> None:
        self.kind = "unknown"
        self.id: str | None = None
        self.model: str | None = None
        self.choices: dict[int, _ChoiceAcc] = {}
        self.usage: dict[str, Any] | None = None
        self.complete = False
        self.events = 0
        self.bad = 0
        self.notes: list[str] = []
        # Responses API text parts keyed by (output_index, content_index), so a ".done" event can
        # replace the deltas with the authoritative full text.
        self.parts: dict[tuple[int, int], list[str]] = {}
        self.tier: str | None = None

    def note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def choice(self, index: int) -> _ChoiceAcc:
        acc = self.choices.get(index)
        if acc is None:
            acc = self.choices[index] = _ChoiceAcc(index)
        return acc

    # One data payload. Returns False when it is not JSON (so the caller can tell a cut-off tail).
    def feed(self, data: str, event_name: str | None) -> bool:
        if data == "[DONE]":
            self.events += 1
            self.complete = True
            return True
        try:
            obj = _loads(data)
        except _JSONDecodeError:
            self.bad += 1
            return False
        self.feed_object(obj, event_name)
        return True

    # One parsed data payload.
    def feed_object(self, obj: Any, event_name: str | None) -> None:
        self.events += 1
        if type(obj) is not dict:
            self.bad += 1
            self.note("non_object_event")
            return
        choices = obj.get("choices")
        if choices is not None or "object" in obj:
            self._chunk(obj, choices)
        else:
            kind = obj.get("type") or event_name
            if isinstance(kind, str):
                self._responses(kind, obj)
            elif "error" in obj:
                self.note("stream_error_event")
            else:
                self.note("unknown_event")

    # Chat Completions / legacy Completions chunk.
    def _chunk(self, obj: dict[str, Any], choices: Any) -> None:
        if self.id is None:
            rid = obj.get("id")
            if rid and isinstance(rid, str):
                self.id = rid
        if self.model is None:
            model = obj.get("model")
            if model and isinstance(model, str):
                self.model = model
        if self.kind == "unknown":
            obj_type = obj.get("object")
            if obj_type:
                self.kind = _KIND_BY_OBJECT.get(obj_type, "unknown") if isinstance(obj_type, str) else "unknown"
        usage = obj.get("usage")
        if usage is not None and type(usage) is dict:
            self.usage = usage
            self._tier(obj.get("service_tier"))
        elif self.tier is None:
            self._tier(obj.get("service_tier"))
        if not choices or type(choices) is not list:
            return
        for choice in choices:
            if type(choice) is not dict:
                self.note("odd_choice")
                continue
            index = choice.get("index", 0)
            if type(index) is not int:
                index = 0
            acc = self.choices.get(index)
            if acc is None:
                acc = self.choices[index] = _ChoiceAcc(index)
            delta = choice.get("delta")
            if delta:
                if type(delta) is dict:
                    content = delta.get("content")
                    if content:
                        if type(content) is str:
                            acc.text.append(content)
                        else:
                            self.note("odd_delta_content")
                    if len(delta) == 1 and content is not None:
                        # The common chunk: {"content": "..."} alone (no refusal, tools or function).
                        finish = choice.get("finish_reason")
                        if finish and type(finish) is str:
                            acc.finish = finish
                        continue
                    refusal = delta.get("refusal")
                    if refusal and type(refusal) is str:
                        acc.refusal.append(refusal)
                    tool_calls = delta.get("tool_calls")
                    if tool_calls:
                        self._tool_deltas(acc, tool_calls)
                    function_call = delta.get("function_call")
                    if function_call and type(function_call) is dict:
                        acc.has_fn = True
                        name = function_call.get("name")
                        if name and type(name) is str:
                            acc.fn_name.append(name)
                        args = function_call.get("arguments")
                        if args and type(args) is str:
                            acc.fn_args.append(args)
            else:
                text = choice.get("text")  # legacy completions
                if text and type(text) is str:
                    acc.text.append(text)
            finish = choice.get("finish_reason")
            if finish and type(finish) is str:
                acc.finish = finish

    def _tool_deltas(self, acc: _ChoiceAcc, tool_calls: Any) -> None:
        if type(tool_calls) is not list:
            self.note("odd_tool_calls")
            return
        for position, tc in enumerate(tool_calls):
            if type(tc) is not dict:
                continue
            index = tc.get("index", position)
            if type(index) is not int:
                index = position
            tool = acc.tool(index)
            tid = tc.get("id")
            if tid and tool.id is None and type(tid) is str:
                tool.id = tid
            ttype = tc.get("type")
            if ttype and type(ttype) is str:
                tool.type = ttype
            fn = tc.get("function")
            if fn and type(fn) is dict:
                name = fn.get("name")
                if name and type(name) is str:
                    tool.name.append(name)
                args = fn.get("arguments")
                if args and type(args) is str:
                    tool.args.append(args)

    # Responses API event (``type`` such as ``response.output_text.delta``).
    def _responses(self, kind: str, obj: dict[str, Any]) -> None:
        if self.kind == "unknown":
            self.kind = "responses"
        if kind == "response.output_text.delta":
            delta = obj.get("delta")
            if isinstance(delta, str):
                self._part(obj).append(delta)
        elif kind == "response.output_text.done":
            text = obj.get("text")
            if isinstance(text, str):
                part = self._part(obj)
                part[:] = [text]
        elif kind == "response.refusal.delta":
            delta = obj.get("delta")
            if isinstance(delta, str):
                self.choice(0).refusal.append(delta)
        elif kind == "response.refusal.done":
            refusal = obj.get("refusal")
            if isinstance(refusal, str):
                self.choice(0).refusal[:] = [refusal]
        elif kind == "response.function_call_arguments.delta":
            delta = obj.get("delta")
            if isinstance(delta, str):
                self.choice(0).tool(_int(obj.get("output_index"))).args.append(delta)
        elif kind == "response.function_call_arguments.done":
            args = obj.get("arguments")
            if isinstance(args, str):
                self.choice(0).tool(_int(obj.get("output_index"))).args[:] = [args]
        elif kind in ("response.output_item.added", "response.output_item.done"):
            item = obj.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                tool = self.choice(0).tool(_int(obj.get("output_index")))
                tool.type = "function"
                call_id = item.get("call_id") or item.get("id")
                if isinstance(call_id, str) and call_id:
                    tool.id = call_id
                name = item.get("name")
                if isinstance(name, str) and name:
                    tool.name[:] = [name]
                args = item.get("arguments")
                if isinstance(args, str) and args:
                    tool.args[:] = [args]
        elif kind.startswith("response.reasoning"):
            self.note("reasoning_summary_not_counted")
        elif kind == "error":
            self.note("stream_error_event")
        response = obj.get("response")
        if isinstance(response, dict):
            self._response_header(response)
            if kind in _RESPONSES_TERMINAL:
                self.complete = True
                usage = response.get("usage")
                if isinstance(usage, dict):
                    self.usage = usage
                status = response.get("status")
                if isinstance(status, str) and status:
                    self.choice(0).finish = status

    def _tier(self, tier: Any) -> None:
        if isinstance(tier, str) and tier and len(tier) <= 32:
            self.tier = tier.lower()

    def _response_header(self, response: dict[str, Any]) -> None:
        tier = response.get("service_tier")
        if tier is not None:
            self._tier(tier)
        if self.id is None:
            rid = response.get("id")
            if isinstance(rid, str) and rid:
                self.id = rid
        if self.model is None:
            model = response.get("model")
            if isinstance(model, str) and model:
                self.model = model

    def _part(self, obj: dict[str, Any]) -> list[str]:
        key = (_int(obj.get("output_index")), _int(obj.get("content_index")))
        part = self.parts.get(key)
        if part is None:
            part = self.parts[key] = []
        return part

    def freeze(self, truncated: bool) -> RebuiltStream:
        if self.parts:
            text = self.choice(0).text
            for key in sorted(self.parts):
                text.extend(self.parts[key])
        notes = list(self.notes)
        if truncated:
            notes.append("stream_truncated")
        elif not self.complete:
            notes.append("stream_incomplete")
        return RebuiltStream(
            kind=self.kind,
            id=self.id,
            model=self.model,
            choices=tuple(self.choices[i].freeze() for i in sorted(self.choices)),
            usage=self.usage,
            complete=self.complete,
            truncated=truncated,
            events=self.events,
            bad_events=self.bad,
            notes=tuple(notes),
            service_tier=self.tier,
        )


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def rebuild_stream(text: str) -> RebuiltStream:
    """Rebuild a captured SSE stream (chat, legacy completions or Responses API) into its choices.

    Never raises on odd input: unparseable events are skipped and counted in ``bad_events``; a
    partial JSON payload at the very end marks the capture ``truncated``.
    """
    builder = _Builder()
    if not text:
        return builder.freeze(False)
    original = text
    text = _normalise(text)
    size = len(text)
    find = text.find
    last_ok = True
    accs = builder.choices
    feed_object = builder.feed_object
    payload = _payload
    common = 0  # common chunks folded here (events, added to the builder's count at the end)
    known = False  # id, model and kind are set: the common chunk cannot change them
    tail = ""  # the text after the content of the last common chunk parsed (see _CONTENT_HEAD)
    raw_head = ""  # ... and that chunk's line up to its content's opening quote (see _next_literals)
    tail_end = ""  # tail + the blank line that ends the event
    templates = 4  # tails worked out at most this often (each costs two parses) per stream
    tail_text: list[str] = []  # the text of the choice that chunk belongs to
    head = len(_CONTENT_HEAD)
    literals: list[str] = []  # content literals of chunks equal to it but for their content...
    slots: list[tuple[list[str], int, int]] = []  # ...and where they go: (texts, first position, count)
    pos = 0
    # Blocks are cut exactly as ``text.split("\n\n")`` would (every "\n\n" is the end of a line
    # followed by an empty line: an event boundary), by position, so that a run of chunks equal to
    # the last parsed one but for their content is read without copying them (_next_literals).
    while pos < size:
        if tail:
            before = len(literals)
            pos = _next_literals(text, pos, raw_head, tail_end, literals)
            if len(literals) > before:
                count = len(literals) - before
                slots.append((tail_text, len(tail_text), count))
                tail_text.extend(literals[before:])  # placeholders, replaced once decoded
                common += count
                last_ok = True
                if pos >= size:
                    break
        end = find("\n\n", pos)
        if end < 0:
            end = size
        block = text[pos:end]
        pos = end + 2
        if not block:
            continue
        if not block.startswith("data: ") or "\n" in block:
            last_ok = _feed_block(builder, block, last_ok)
            known = builder.id is not None and builder.model is not None and builder.kind != "unknown"
            continue
        data = payload(block)
        if tail and data.endswith(tail) and data.startswith(_CONTENT_HEAD) and len(data) > head + len(tail):
            # The same chunk as the last common one but for its content: decoded all at once below.
            literals.append(data[head : len(data) - len(tail)])
            slots.append((tail_text, len(tail_text), 1))
            tail_text.append("")
            common += 1
            last_ok = True
            continue
        if data == "[DONE]":
            builder.events += 1
            builder.complete = True
            last_ok = True
            continue
        try:
            obj = _loads(data)
        except _JSONDecodeError:
            builder.bad += 1
            last_ok = False
            continue
        last_ok = True
        if known and type(obj) is dict and obj.get("usage") is None:
            # The common chunk, exactly as _Builder._chunk folds it: one choice whose delta is
            # {"content": "..."} alone.
            choices = obj.get("choices")
            if type(choices) is list and len(choices) == 1:
                choice = choices[0]
                if type(choice) is dict:
                    delta = choice.get("delta")
                    if type(delta) is dict and len(delta) == 1:
                        content = delta.get("content")
                        if type(content) is str:
                            index = choice.get("index", 0)
                            if type(index) is not int:
                                index = 0
                            acc = accs.get(index)
                            if acc is None:
                                acc = accs[index] = _ChoiceAcc(index)
                            if content:
                                acc.text.append(content)
                            finish = choice.get("finish_reason")
                            if finish and type(finish) is str:
                                acc.finish = finish
                                tail = ""
                            elif templates:
                                templates -= 1
                                tail, tail_text = _template_tail(data), acc.text
                                if tail:
                                    # The literal starts at the same place in the line as in data.
                                    raw_head = block[: len(block) - len(data) + head + 1]
                                    tail_end = tail + "\n\n"
                            common += 1
                            continue
        feed_object(obj, None)
        known = builder.id is not None and builder.model is not None and builder.kind != "unknown"
    if literals:
        contents = _decode_literals(literals)
        if contents is None:  # a "content" that is not exactly one JSON string: the general path
            return _rebuild_general(original)
        at = 0
        for texts, position, count in slots:
            texts[position : position + count] = contents[at : at + count]
            at += count
    builder.events += common
    return builder.freeze(not last_ok)


# --- the fast path ----------------------------------------------------------------------------
#
# Most captured streams are one-line ``data: {...}`` events in Azure's chunk shape. For those,
# ``rebuild_stream`` (1) drops the choice's leading ``content_filter_results`` member when it is
# one of Azure's usual values, before parsing: the builder never reads it, and it is most of what
# a chunk makes orjson build; (2) folds the common content chunk inline; (3) does not parse again
# a content chunk that differs from the last parsed one only in its content (``_template_tail``).
# Everything else goes through ``_Builder.feed``/``feed_object``, so the result is the same
# RebuiltStream as ``_rebuild_general`` gives for every input (tests/usage/test_sse_fast_path.py).
#
# Why dropping the member is exact: the event is one line that starts with the literal
# ``data: {"choices":[{"content_filter_results":<value>,"delta":``, so the member sits at a known
# place in the JSON (first member of the first choice, no string open), its value is a fixed
# literal, and ``"delta":`` follows in both texts: the rest parses identically, and the payload
# is valid JSON exactly when the shortened one is.

_CF_HEAD = 'data: {"choices":[{"content_filter_results":'
_SAFE = '{"filtered":false,"severity":"safe"}'
_UNDETECTED = '{"filtered":false,"detected":false}'
_CF_VALUES = tuple(
    value + ',"delta":'
    for value in (  # the most frequent first: a content chunk's results, then a role or finish chunk's
        '{"hate":' + _SAFE + ',"self_harm":' + _SAFE + ',"sexual":' + _SAFE + ',"violence":' + _SAFE + "}",
        "{}",
        '{"hate":' + _SAFE + ',"protected_material_code":' + _UNDETECTED + ',"protected_material_text":' + _UNDETECTED
        + ',"self_harm":' + _SAFE + ',"sexual":' + _SAFE + ',"violence":' + _SAFE + "}",
        '{"hate":' + _SAFE + ',"protected_material_text":' + _UNDETECTED
        + ',"self_harm":' + _SAFE + ',"sexual":' + _SAFE + ',"violence":' + _SAFE + "}",
    )
)
_CHOICE_HEAD = '{"choices":[{"delta":'


def _payload(block: str) -> str:
    """The data of a one-line ``data: `` event, without a usual ``content_filter_results``."""
    if block.startswith(_CF_HEAD):
        at = len(_CF_HEAD)
        for value in _CF_VALUES:
            if block.startswith(value, at):
                return _CHOICE_HEAD + block[at + len(value):]
    return block[6:]


# Content chunks of one stream differ only in their content: once one has been parsed, the next
# whose text is ``_CONTENT_HEAD`` + a literal + the same tail is that chunk with the literal as its
# content, provided the literal is exactly one JSON string: the parser is in the same state after
# the literal in both, and two probe parses (two different contents) showed that the content at
# that place is the one the chunk ends up with (no later duplicate key replaces it). The literals
# are decoded in one ``orjson.loads`` of ``[l1,true,l2,true,...]``: no literal holds ``true``, so
# when the result alternates string, True, string, ... with exactly one string per literal, every
# separator sits at the top level and each literal is exactly one JSON string. Otherwise the whole
# stream takes the general path.

_CONTENT_HEAD = _CHOICE_HEAD + '{"content":'
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_PROBES = (('"\\u0001probe"', "\u0001probe"), ('"\\u0002probe"', "\u0002probe"))


def _next_literals(text: str, pos: int, raw_head: str, tail_end: str, literals: list[str]) -> int:
    """Append the content literal of each event from ``pos`` on that is ``raw_head`` + a literal +
    ``tail_end`` (the line of the last parsed common chunk but for its content, and the blank line);
    return the position after the last such event.

    No copy of the events is made and none is parsed: the literals are checked and decoded together
    by ``_decode_literals``. Each such event is exactly one ``split("\n\n")`` block: it starts where
    a block starts, and once its literal is known to be one JSON string (no raw newline) the first
    "\n\n" after it is the one in ``tail_end`` (neither ``raw_head`` nor the tail holds a newline).
    """
    startswith, find, append = text.startswith, text.find, literals.append
    quote = len(raw_head) - 1  # raw_head ends with the literal's opening quote
    after = len(tail_end)
    while startswith(raw_head, pos):
        start = pos + quote
        close = find('"', start + 1)
        if close < 0:
            break
        if text[close - 1] == "\\":  # an escaped quote, or an escaped backslash before the closing one
            literal = _STRING.match(text, start)
            if literal is None:
                break
            close = literal.end() - 1
        close += 1
        if not startswith(tail_end, close):
            break
        append(text[start:close])
        pos = close + after
    return pos


def _template_tail(data: str) -> str:
    """The text after the content string of a parsed common chunk, when any content put in its
    place becomes the chunk's content; else "" (no template)."""
    if not data.startswith(_CONTENT_HEAD):
        return ""
    literal = _STRING.match(data, len(_CONTENT_HEAD))  # the chunk parsed: a string here is well formed
    if literal is None:
        return ""
    tail = data[literal.end():]
    for probe, value in _PROBES:
        try:
            obj = _loads(_CONTENT_HEAD + probe + tail)
        except _JSONDecodeError:
            return ""
        choices = obj.get("choices") if type(obj) is dict else None
        choice = choices[0] if type(choices) is list and len(choices) == 1 else None
        delta = choice.get("delta") if type(choice) is dict else None
        if type(delta) is not dict or len(delta) != 1 or delta.get("content") != value:
            return ""
    return tail


def _decode_literals(literals: list[str]) -> list[str] | None:
    """Each literal's string, or ``None`` unless every literal is exactly one JSON string."""
    joined = ",true,".join(literals)
    if joined.count("true") != len(literals) - 1:
        return None
    try:
        parsed = _loads("[" + joined + "]")
    except _JSONDecodeError:
        return None
    if len(parsed) != 2 * len(literals) - 1:
        return None
    marks, strings = parsed[1::2], parsed[0::2]
    if set(map(type, marks)) - {bool} or not all(marks) or set(map(type, strings)) - {str}:
        return None
    return strings


def _rebuild_general(text: str) -> RebuiltStream:
    """``rebuild_stream`` without the fast path: every event through ``_Builder.feed``. The
    reference the fast path must equal; not used in production."""
    builder = _Builder()
    if not text:
        return builder.freeze(False)
    text = _normalise(text)
    last_ok = True
    for block in text.split("\n\n"):
        if not block:
            continue
        if block.startswith("data: ") and "\n" not in block:
            last_ok = builder.feed(block[6:], None)
            continue
        last_ok = _feed_block(builder, block, last_ok)
    return builder.freeze(not last_ok)


def _normalise(text: str) -> str:
    """Without a byte-order mark, with every SSE line end (CRLF, LF or CR) as LF."""
    if text[0] == "\ufeff":
        text = text[1:]
    # Two C-level replaces rather than str.splitlines(), which would also split on U+2028/U+0085
    # that JSON may carry unescaped.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _feed_block(builder: _Builder, block: str, last_ok: bool) -> bool:
    """An event block of several lines (``event:``, multi-line ``data:``, comments, other fields)."""
    data: list[str] = []
    event_name: str | None = None
    for line in block.split("\n"):
        if not line:
            if data:  # a blank line left at a block edge: dispatch
                last_ok = builder.feed("\n".join(data), event_name)
                data = []
            event_name = None
            continue
        if line[0] == ":":  # comment / keep-alive
            continue
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event_name = value
        # "id" and "retry" fields (and unknown ones) do not affect the content.
    if data:
        last_ok = builder.feed("\n".join(data), event_name)
    return last_ok


def rebuild_body(body: dict[str, Any]) -> RebuiltStream:
    """The same view of a non-streamed JSON response (chat, completions or Responses API).

    Lets completion tokens be estimated from a body that came without ``usage`` exactly as from
    a stream. ``complete`` is True: a parsed body is whole by construction.
    """
    builder = _Builder()
    builder.complete = True
    obj_type = body.get("object")
    builder.kind = _KIND_BY_OBJECT.get(obj_type, "unknown") if isinstance(obj_type, str) else "unknown"
    if builder.kind == "responses" or (builder.kind == "unknown" and isinstance(body.get("output"), list)):
        builder.kind = "responses"
        builder._response_header(body)
        _responses_output(builder, body.get("output"))
        usage = body.get("usage")
        builder.usage = usage if isinstance(usage, dict) else None
        status = body.get("status")
        if isinstance(status, str) and status:
            builder.choice(0).finish = status
        return builder.freeze(False)
    rid, model = body.get("id"), body.get("model")
    builder.id = rid if isinstance(rid, str) and rid else None
    builder.model = model if isinstance(model, str) and model else None
    usage = body.get("usage")
    builder.usage = usage if isinstance(usage, dict) else None
    choices = body.get("choices")
    for position, choice in enumerate(choices if isinstance(choices, list) else ()):
        if not isinstance(choice, dict):
            builder.note("odd_choice")
            continue
        acc = builder.choice(_int(choice.get("index", position)))
        finish = choice.get("finish_reason")
        acc.finish = finish if isinstance(finish, str) else None
        message = choice.get("message")
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                acc.text.append(content)
            refusal = message.get("refusal")
            if isinstance(refusal, str):
                acc.refusal.append(refusal)
            tool_calls = message.get("tool_calls")
            if tool_calls:
                builder._tool_deltas(acc, tool_calls)
            function_call = message.get("function_call")
            if isinstance(function_call, dict):
                acc.has_fn = True
                name, args = function_call.get("name"), function_call.get("arguments")
                acc.fn_name.append(name if isinstance(name, str) else "")
                acc.fn_args.append(args if isinstance(args, str) else "")
        else:
            text = choice.get("text")
            if isinstance(text, str):
                acc.text.append(text)
    return builder.freeze(False)


def _responses_output(builder: _Builder, output: Any) -> None:
    """Fold a Responses API ``output`` list (messages and function calls) into choice 0."""
    acc = builder.choice(0)
    if not isinstance(output, list):
        return
    for position, item in enumerate(output):
        if not isinstance(item, dict):
            continue
        item_type = item.get("type")
        if item_type == "message":
            for part in item.get("content") or ():
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    acc.text.append(part["text"])
                elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                    acc.refusal.append(part["refusal"])
        elif item_type == "function_call":
            tool = acc.tool(position)
            tool.type = "function"
            call_id = item.get("call_id") or item.get("id")
            tool.id = call_id if isinstance(call_id, str) else None
            name, args = item.get("name"), item.get("arguments")
            tool.name.append(name if isinstance(name, str) else "")
            tool.args.append(args if isinstance(args, str) else "")
        elif item_type == "reasoning":
            builder.note("reasoning_summary_not_counted")
        elif isinstance(item_type, str):
            builder.note("output_item_not_counted")
