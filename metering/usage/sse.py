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

import functools
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
    "StreamUsage",
    "reported_stream_usage",
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
    templates: list[_Template] = []  # the most recently learnt first
    learn = _LEARN
    literals: list[str] = []  # content literals of events matched by a template, not yet decoded...
    runs: list[tuple[list[str], int]] = []  # ...and the lists they go to: (sink, how many), in order
    pos = 0
    # Blocks are cut exactly as ``text.split("\n\n")`` would (every "\n\n" is the end of a line
    # followed by an empty line: an event boundary), by position, so that runs of events equal to a
    # template but for their holes are read in place (_Template.run).
    while pos < size:
        if templates:
            pending = len(literals)
            progressed = True
            while progressed and pos < size:
                progressed = False
                for template in templates:
                    before = len(literals)
                    pos = template.run(text, pos, literals)
                    if len(literals) > before:
                        runs.append((template.sink, len(literals) - before))
                        template.used = progressed = True
            if len(literals) > pending:
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
        if literals:  # decoded before any other event is folded: a ".done" event may replace a list
            if not _flush(literals, runs):
                return _rebuild_general(original)  # a literal that is not exactly one JSON string
            builder.events += len(literals)
            literals.clear()
            runs.clear()
        if block.startswith("data: ") and "\n" not in block:
            at, event_name, data = 6, None, _payload(block)
        elif block.startswith("event: ") and block.count("\n") == 1 and block.startswith("data: ", block.index("\n") + 1):
            # What _feed_block does with these two lines: the name, then the data dispatched with it.
            at = block.index("\n") + 7
            event_name, data = block[7 : at - 7], block[at:]
        else:
            last_ok = _feed_block(builder, block, last_ok)
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
        builder.feed_object(obj, event_name)
        last_ok = True
        if learn and type(obj) is dict and size - pos >= 2 * len(block):  # room for the probes to pay off
            slot = _content_slot(obj, event_name)
            if slot is not None:
                if templates and not templates[0].used:  # text events that differ in more than text
                    learn = min(learn, 1)
                learn -= 1
                template = _Template.learn(builder, block, at, event_name, slot)
                if template is not None:
                    templates.insert(0, template)
                    del templates[_KEEP:]
    if literals:
        if not _flush(literals, runs):
            return _rebuild_general(original)
        builder.events += len(literals)
    return builder.freeze(not last_ok)


# --- the fast path ----------------------------------------------------------------------------
#
# One mechanism for every wire shape (Azure's sorted keys with content-filter results, the older
# id/object/created/model order, minimal chunks with an ``obfuscation`` pad, api.openai.com's
# chunks, Responses API ``event:`` + ``data:`` events with ``sequence_number``): the events that
# carry the text of a stream differ from each other only in that text and in members the rebuild
# never reads. So the first such event is parsed and folded like any other, and becomes a
# *template*: its block's text with holes where the text literal and the pads (``obfuscation``,
# ``sequence_number``) are. A following block that is the template's text with other literals in
# the holes is not parsed: its text literal is cut out in place, and all the literals of a run are
# decoded in one ``orjson.loads`` of ``[l1,l2,...]``.
#
# Why the result is the general path's, for every input:
#
# * A hole holds exactly one JSON token: the text literal runs from the template's opening quote to
#   the first unescaped quote (so it is one string token, or the joined decode fails and the whole
#   stream takes the general path); a pad is a string without escapes or controls, or an integer
#   of at most 18 digits (else the block is not matched and is parsed like any other). A parser is
#   in the same state after any one token of a kind, so every matched block parses to the
#   template's tree with other leaves at the holes' places.
# * Where those leaves land was checked when the template was made, with two parses of the block
#   with different probe literals in the holes: the text hole's value is the event's text (no later
#   duplicate key replaces it), and each pad is a top-level member, which the fold never reads.
# * The template's event is one whose fold only appends its text to one list of the builder
#   (``_content_slot``: one choice whose delta is the content, a refusal or a legacy text alone,
#   no usage, no finish reason; or a Responses ``*.delta`` event without a ``response``) and
#   otherwise sets fields only while they are unset (id, model, kind, service tier): its second
#   fold changes nothing else, whatever was folded in between. So a matched block folds to
#   "append its text to the template's list", which is what is done; the appends are made before
#   any other event is folded (a ``.done`` event replaces a list's content in place).
#
# tests/usage/test_sse_fast_path.py checks the equality on every shape of the tests, every real
# recording, every cut of them and hypothesis streams.

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
    """The data of a one-line ``data: `` event, without a usual ``content_filter_results``.

    An event parsed one by one (the events before a template, and those no template matches) is
    parsed without the choice's leading member when it is one of Azure's usual values: the rebuild
    never reads it, and it is most of what such a chunk makes orjson build. Exact: the event is one
    line that starts with ``data: {"choices":[{"content_filter_results":<value>,"delta":``, so the
    member sits at a known place (first member of the first choice, no string open), its value is a
    fixed literal and ``"delta":`` follows in both texts: the rest parses identically, and the
    payload is valid JSON exactly when the shortened one is.
    """
    if block.startswith(_CF_HEAD):
        at = len(_CF_HEAD)
        for value in _CF_VALUES:
            if block.startswith(value, at):
                return _CHOICE_HEAD + block[at + len(value):]
    return block[6:]


_LEARN = 8  # templates worked out at most this often per stream (each costs two parses)
_KEEP = 4  # templates kept (n > 1 interleaves one per choice)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_PAD_STRING = re.compile('"[^"\\\\\x00-\x1f\ud800-\udfff]*"')
_PAD_NUMBER = re.compile(r"0|[1-9][0-9]{0,17}")
_PADS = (("obfuscation", _PAD_STRING.match), ("sequence_number", _PAD_NUMBER.match))
_PAD_MATCH = dict(_PADS)
# Two probes per hole kind: (unused, probe 1, probe 2) as JSON text, and the values they parse to.
# The text probe omits its opening quote, which the template's text before the hole holds.
_PROBES = {None: ("", '\\u0001p"', '\\u0002p"'), _PAD_STRING.match: ("", '"\\u0003p"', '"\\u0004p"'),
           _PAD_NUMBER.match: ("", "1", "2")}
_PROBE_VALUES = {None: ("", "\x01p", "\x02p"), _PAD_STRING.match: ("", "\x03p", "\x04p"), _PAD_NUMBER.match: ("", 1, 2)}


def _content_slot(obj: dict[str, Any], event_name: str | None) -> tuple[tuple[str, Any], str, str] | None:
    """``(list address, member name, text)`` when folding ``obj`` only appends ``text`` to one of the
    builder's lists and sets nothing but unset fields; else ``None``. Mirrors ``_Builder``'s rules."""
    choices = obj.get("choices")
    if choices is not None or "object" in obj:
        if obj.get("usage") is not None or type(choices) is not list or len(choices) != 1:
            return None
        choice = choices[0]
        if type(choice) is not dict:
            return None
        finish = choice.get("finish_reason")
        if finish and type(finish) is str:
            return None
        index = choice.get("index", 0)
        if type(index) is not int:
            index = 0
        delta = choice.get("delta")
        if delta:
            if type(delta) is not dict or len(delta) != 1:
                return None
            content = delta.get("content")
            if type(content) is str:
                return ("text", index), "content", content
            refusal = delta.get("refusal")
            if type(refusal) is str:
                return ("refusal", index), "refusal", refusal
            return None
        text = choice.get("text")
        return (("text", index), "text", text) if type(text) is str else None
    kind = obj.get("type") or event_name
    delta = obj.get("delta")
    if type(delta) is not str or type(obj.get("response")) is dict:
        return None
    if kind == "response.output_text.delta":
        return ("part", (_int(obj.get("output_index")), _int(obj.get("content_index")))), "delta", delta
    if kind == "response.refusal.delta":
        return ("refusal", 0), "delta", delta
    if kind == "response.function_call_arguments.delta":
        return ("args", _int(obj.get("output_index"))), "delta", delta
    return None


def _sink(builder: _Builder, address: tuple[str, Any]) -> list[str]:
    """The builder's list at ``address`` (made by the template event's fold)."""
    kind, key = address
    if kind == "text":
        return builder.choices[key].text
    if kind == "refusal":
        return builder.choices[key].refusal
    if kind == "part":
        return builder.parts[key]
    return builder.choices[0].tools[key].args


class _Template:
    """An event's block with holes, as matchers around the text literal: ``head``, the text before
    it (with its opening quote); ``tail``, the text after it (from its closing quote to the blank
    line); ``cycle``, a tail followed by the next event's head. Each is a plain string
    (``str.startswith``) or, when it holds pads, a compiled pattern of its fixed text and the pads'
    ``_PAD_STRING`` / ``_PAD_NUMBER``."""

    __slots__ = ("head", "head_match", "tail", "tail_match", "cycle", "cycle_match", "sink", "used")

    def __init__(self, head: tuple[str, ...], tail: tuple[str, ...], sink: list[str]):
        (self.head, self.head_match, self.tail, self.tail_match,
         self.cycle, self.cycle_match) = _matchers(head, tail)
        self.sink = sink
        self.used = False  # it matched a block

    @staticmethod
    def learn(builder: _Builder, block: str, at: int, event_name: str | None,
              slot: tuple[tuple[str, Any], str, str]) -> _Template | None:
        """The template of ``block`` (folded already; its JSON starts at ``at``), or ``None`` when the
        probes do not show that its holes hold the text and pads only."""
        address, member, _ = slot
        literal = _member_literal(block, at, member, _STRING.match)
        if literal is None:
            return None
        # (start, end, matcher, pad name); the text hole starts after its opening quote
        holes: list[tuple[int, int, Any, str]] = [(literal[0] + 1, literal[1], None, member)]
        for name, match in _PADS:
            pad = _member_literal(block, at, name, match)
            if pad is not None:
                holes.append((pad[0], pad[1], match, name))
        holes.sort()
        if any(later[0] < earlier[1] for earlier, later in zip(holes, holes[1:])):
            return None
        # The event's JSON around its holes, and each hole's member name: all the probes read.
        around, last = [], at
        for start, stop, _, name in holes:
            around += (block[last:start], name)
            last = stop
        around.append(block[last:])
        shape = (event_name, address, member, tuple(around))
        if not (_kept_probes(shape) if len(block) <= _KEPT_TEMPLATE_TEXT else _probed(shape)):
            return None
        text = next(i for i, hole in enumerate(holes) if hole[2] is None)
        head = _matcher(block, 0, holes[:text], holes[text][0])
        tail = _matcher(block + "\n\n", holes[text][1], holes[text + 1:], len(block) + 2)
        return _Template(head, tail, _sink(builder, address))

    def run(self, text: str, pos: int, literals: list[str]) -> int:
        """Append the text literal of each block from ``pos`` on that is this template with other
        literals in its holes; return the position after the last such block. The text literals
        are checked when decoded (``_flush``); no block is copied or parsed."""
        startswith, find, append = text.startswith, text.find, literals.append
        cycle, cycle_match = self.cycle, self.cycle_match
        cycle_size = len(cycle)
        if self.head_match is None:
            if not startswith(self.head, pos):
                return pos
            at = pos + len(self.head)
        else:
            found = self.head_match(text, pos)
            if found is None:
                return pos
            at = found.end()
        previous = -1  # where the text literal of the last event matched so far closes
        while True:  # at: just after the opening quote of an event's text literal
            close = find('"', at)
            if close < 0:
                break
            if text[close - 1] == "\\":  # an escaped quote, or an escaped backslash before the closing one
                string = _STRING.match(text, at - 1)
                if string is None:
                    break
                close = string.end() - 1
            close += 1
            if cycle_match is None:  # this event's tail, then the next event's head
                if startswith(cycle, close):
                    append(text[at - 1 : close])
                    previous, at = close, close + cycle_size
                    continue
            else:
                found = cycle_match(text, close)
                if found is not None:
                    append(text[at - 1 : close])
                    previous, at = close, found.end()
                    continue
            end = self._tail_end(text, close)  # the last event of the run?
            if end >= 0:
                append(text[at - 1 : close])
                return end
            break
        return pos if previous < 0 else self._tail_end(text, previous)  # the events before this one

    def _tail_end(self, text: str, close: int) -> int:
        """Where the event whose text literal closes at ``close`` ends, or -1 unless its tail is there."""
        if self.tail_match is None:
            return close + len(self.tail) if text.startswith(self.tail, close) else -1
        found = self.tail_match(text, close)
        return found.end() if found is not None else -1


def _matchers(head: tuple[str, ...], tail: tuple[str, ...]) -> tuple[Any, ...]:
    """A template's matchers from the specs of its head and tail (``_matcher``): head, tail and cycle,
    each as ``(plain string, None)`` or ``("", pattern.match)``. The streams of one deployment share
    their templates' text (minimal and Responses chunks carry no id), so the escaped and compiled
    patterns of small ones are kept (``_kept_matchers``) instead of built for every stream."""
    if sum(map(len, head)) + sum(map(len, tail)) <= _KEPT_TEMPLATE_TEXT:
        return _kept_matchers(head, tail)
    return _built_matchers(head, tail)


_KEPT_TEMPLATE_TEXT = 2048  # characters of a template's fixed text, at most, for its matchers to be kept


def _built_matchers(head: tuple[str, ...], tail: tuple[str, ...]) -> tuple[Any, ...]:
    if len(head) == 1 and len(tail) == 1:
        return head[0], None, tail[0], None, tail[0] + head[0], None
    return (*_compiled(head), *_compiled(tail), "", re.compile(_pattern(tail) + _pattern(head)).match)


_kept_matchers = functools.lru_cache(maxsize=256)(_built_matchers)


def _probed(shape: tuple[Any, ...]) -> bool:
    """Whether an event of this shape (``_Template.learn``: its name, the address and member of its
    text, its JSON around the holes with each hole's member name) folds its text, with two different
    probe values in the holes, to that address, and has each pad where it is named: its holes hold
    the text and pads only. Depends on nothing else, so the answers for small shapes are kept."""
    event_name, address, member, around = shape
    for number in (1, 2):
        pieces = [around[0]]
        for position in range(1, len(around), 2):
            name = around[position]
            pieces += (_PROBES[None if name == member else _PAD_MATCH[name]][number], around[position + 1])
        try:
            probe = _loads("".join(pieces))
        except _JSONDecodeError:
            return False
        if type(probe) is not dict:
            return False
        found = _content_slot(probe, event_name)
        if found is None or found[0] != address or found[2] != _PROBE_VALUES[None][number]:
            return False
        for name in around[1::2]:
            if name != member and probe.get(name) != _PROBE_VALUES[_PAD_MATCH[name]][number]:
                return False
    return True


_kept_probes = functools.lru_cache(maxsize=256)(_probed)


def _compiled(spec: tuple[str, ...]) -> tuple[str, Any]:
    """``(plain string, None)``, or ``("", pattern.match)`` when the text holds pads."""
    return (spec[0], None) if len(spec) == 1 else ("", re.compile(_pattern(spec)).match)


def _pattern(spec: tuple[str, ...]) -> str:
    """The pattern of a spec: its texts escaped, its pads' patterns as they are."""
    return "(?:" + ")(?:".join(re.escape(piece) if i % 2 == 0 else piece for i, piece in enumerate(spec)) + ")"


def _matcher(block: str, start: int, pads: list[tuple[int, int, Any, str]], stop: int) -> tuple[str, ...]:
    """The spec of ``block[start:stop]`` with its ``pads``: its texts and the pads' patterns in turn
    (``(text,)`` when there are none)."""
    spec = []
    for pad_start, pad_stop, match, _ in pads:
        spec.append(block[start:pad_start])
        spec.append(match.__self__.pattern)
        start = pad_stop
    spec.append(block[start:stop])
    return tuple(spec)


def _member_literal(block: str, at: int, name: str, match: Any) -> tuple[int, int] | None:
    """Where the value of the last ``name`` member of the JSON from ``at`` is, when ``match`` reads
    it there: (start, end). Which member it is, the probes check."""
    key = '"' + name + '":'
    place = block.rfind(key, at)
    if place < 0:
        return None
    start = place + len(key)
    value = match(block, start)
    return (start, value.end()) if value is not None else None


def _flush(literals: list[str], runs: list[tuple[list[str], int]]) -> bool:
    """Decode the text literals in one ``orjson.loads`` and append them to their lists; ``False``
    when one is not exactly one JSON string (each runs from an opening quote to the first unescaped
    quote, so each is one string token or the decode fails)."""
    try:
        values = _loads("[" + ",".join(literals) + "]")
    except _JSONDecodeError:
        return False
    if len(values) != len(literals):
        return False
    at = 0
    for sink, count in runs:
        sink.extend(values[at : at + count])
        at += count
    return True


@dataclass(frozen=True, slots=True)
class StreamUsage:
    """The usage a stream carries, with the model and service tier its rebuild reports."""

    usage: dict[str, Any]
    model: str | None
    service_tier: str | None


def reported_stream_usage(text: str) -> StreamUsage | None:
    """The provider's usage of a stream that carries it (the final ``include_usage`` chunk, or a
    Responses API ``response.completed``), with the model and service tier, exactly as
    ``rebuild_stream(text)`` gives them; ``None`` when that is not proven from the last event and
    the first few (the caller then rebuilds the stream).

    Why it is exact: the last event (before a final ``[DONE]``) is a block of its own in the general
    path's framing (a blank line that no other newline touches on either side), so it is folded
    last: its usage is the stream's. The model is set once, by the first event that names one,
    which the first blocks show when folded as the general path folds them. The tier is the last
    event's when it reports a valid one (it is folded last); else it is ``None`` only when no
    event can hold a ``service_tier`` member (the text spells none, and has no ``\\u`` escape that
    could spell one); otherwise this gives up.
    """
    if not text or not _usage_near_end(text):
        return None  # no usage object in the last events (a usage spelt otherwise is found by the rebuild)
    text = _normalise(text)
    end = len(text) - 2
    if end < 1 or not text.endswith("\n\n") or text[end - 1] == "\n":
        return None
    last, end = _last_block(text, end)
    if last == "data: [DONE]":
        last, end = _last_block(text, end)
    if last is None:
        return None
    if last.startswith("data: ") and "\n" not in last:
        event_name, data = None, last[6:]
    elif last.startswith("event: ") and last.count("\n") == 1 and last.startswith("data: ", last.index("\n") + 1):
        event_name, data = last[7 : last.index("\n")], last[last.index("\n") + 7 :]
    else:
        return None
    try:
        obj = _loads(data)
    except _JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    if obj.get("choices") is not None or "object" in obj:  # a chunk (_Builder._chunk)
        usage, tier = obj.get("usage"), obj.get("service_tier")
    else:  # a Responses API event (_Builder._responses): the terminal one
        response = obj.get("response")
        if (obj.get("type") or event_name) not in _RESPONSES_TERMINAL or type(response) is not dict:
            return None
        usage, tier = response.get("usage"), response.get("service_tier")
    if type(usage) is not dict:
        return None
    if isinstance(tier, str) and tier and len(tier) <= 32:
        tier = tier.lower()
    elif '"service_tier"' not in text and ("\\" not in text or "\\u" not in text):
        tier = None  # (a backslash is one fast scan; the two-character search is 6× slower)
    else:
        return None
    builder = _Builder()
    pos = 0
    for _ in range(4):  # the first blocks, framed and folded as _rebuild_general does
        if builder.model is not None or pos >= end:
            break
        stop = text.find("\n\n", pos)
        block = text[pos : stop if stop >= 0 else len(text)]
        pos = stop + 2 if stop >= 0 else len(text)
        if block.startswith("data: ") and "\n" not in block:
            builder.feed(block[6:], None)
        elif block:
            _feed_block(builder, block, True)
    if builder.model is None:
        return None
    return StreamUsage(usage, builder.model, tier)


_TAIL_SCAN = 65536  # characters at the end of a stream where its carried usage is looked for


def _usage_near_end(text: str) -> bool:
    """Whether ``"usage":{`` is in the last two blocks (the usage event, and a ``[DONE]`` after it),
    looked for within the last ``_TAIL_SCAN`` characters. Only a pre-filter: a stream whose last
    event is not where it says is proven by ``reported_stream_usage`` or rebuilt, never trusted."""
    floor = max(0, len(text) - _TAIL_SCAN)
    start = text.rfind("\n\n", floor, len(text) - 2)
    if start >= 0:
        start = text.rfind("\n\n", floor, start)
    return text.find('"usage":{', max(start, floor)) >= 0


def _last_block(text: str, end: int) -> tuple[str | None, int]:
    """The block that ends at ``end`` (a blank line follows it) and where the one before it ends,
    when ``split("\n\n")`` cuts it there too: the blank line before it touches no other newline."""
    start = text.rfind("\n\n", 0, end)
    if start < 1 or text[start - 1] == "\n" or text[start + 2] == "\n":
        return None, -1
    return text[start + 2 : end], start


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
