"""Hostile tool schemas (issue #26, item 1): small request bodies whose naive rendering explodes.

The API caller controls the request body, so a tool or response-format schema can be built to make
the estimator's TypeScript rendering exponential: ``$ref``s forming a DAG, ``anyOf`` of several
``$ref``s per level, definitions that all reference each other, ``type`` lists of ``"object"``
nested a few deep, and a ``$ref`` chain longer than Python's recursion limit. Each builder returns
the ``parameters`` schema of one function tool; ``bomb_event`` wraps one into an ``aoai-usage/1``
event (capture ``full``, no provider usage, so the estimator must count it).
"""

from __future__ import annotations

from typing import Any

import orjson

from events import encode, v1_event


def ref_dag(levels: int = 16, children: int = 3) -> dict[str, Any]:
    """Definitions L0…L(levels−1), each an object with ``children`` properties that all point to the
    next level: ``children ** levels`` paths, each ``$ref`` expanded once per path."""
    defs: dict[str, Any] = {}
    for level in range(levels):
        if level == levels - 1:
            defs[f"L{level}"] = {"type": "string"}
        else:
            defs[f"L{level}"] = {
                "type": "object",
                "properties": {f"c{i}": {"$ref": f"#/$defs/L{level + 1}"} for i in range(children)},
            }
    return {"type": "object", "properties": {"root": {"$ref": "#/$defs/L0"}}, "$defs": defs}


def anyof_refs(levels: int = 16, branches: int = 3) -> dict[str, Any]:
    """Each level is ``anyOf`` of ``branches`` ``$ref``s to the next level."""
    defs: dict[str, Any] = {}
    for level in range(levels):
        if level == levels - 1:
            defs[f"A{level}"] = {"type": "integer"}
        else:
            defs[f"A{level}"] = {"anyOf": [{"$ref": f"#/$defs/A{level + 1}"} for _ in range(branches)]}
    return {"type": "object", "properties": {"root": {"$ref": "#/$defs/A0"}}, "$defs": defs}


def mutual_refs(definitions: int = 16) -> dict[str, Any]:
    """``definitions`` objects, each with a property pointing to every other one: no ``$ref`` repeats
    on a path, yet the paths number (definitions − 1)!."""
    defs = {
        f"D{i}": {
            "type": "object",
            "properties": {f"p{j}": {"$ref": f"#/$defs/D{j}"} for j in range(definitions) if j != i},
        }
        for i in range(definitions)
    }
    return {"type": "object", "properties": {"root": {"$ref": "#/$defs/D0"}}, "$defs": defs}


def object_type_lists(depth: int = 3, width: int = 200) -> dict[str, Any]:
    """``type: ["object", "object", …]`` (``width`` entries) nested ``depth`` deep: each entry renders
    the object's properties again, ``width ** depth`` times at the bottom."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": ["object"] * width, "properties": {"x": schema}}
    return {"type": "object", "properties": {"root": schema}}


def ref_chain(length: int = 5000) -> dict[str, Any]:
    """A chain of ``$ref``s longer than Python's recursion limit (R0 → R1 → … → a string)."""
    defs: dict[str, Any] = {f"R{i}": {"$ref": f"#/$defs/R{i + 1}"} for i in range(length)}
    defs[f"R{length}"] = {"type": "string"}
    return {"type": "object", "properties": {"root": {"$ref": "#/$defs/R0"}}, "$defs": defs}


#: the shapes of the issue, at the sizes the attacker used (each event a few KB)
BOMBS: dict[str, Any] = {
    "ref_dag_3": lambda: ref_dag(16, 3),
    "ref_dag_4": lambda: ref_dag(16, 4),
    "anyof_refs": lambda: anyof_refs(16, 3),
    "mutual_refs": lambda: mutual_refs(16),
    "object_type_lists": lambda: object_type_lists(3, 200),
    "ref_chain": lambda: ref_chain(5000),
}


def tool_request(parameters: dict[str, Any], *, responses: bool = False) -> dict[str, Any]:
    """A Chat Completions (or Responses) request offering one function tool with ``parameters``."""
    if responses:
        return {"model": "gpt-4o-mini", "input": "Plan it.",
                "tools": [{"type": "function", "name": "plan", "description": "Plan.", "parameters": parameters}]}
    return {"messages": [{"role": "user", "content": "Plan it."}],
            "tools": [{"type": "function", "function": {"name": "plan", "description": "Plan.", "parameters": parameters}}]}


def bomb_event(request_id: str, parameters: dict[str, Any], *, responses: bool = False) -> bytes:
    """An ``aoai-usage/1`` event carrying a request with the hostile schema and a response without
    usage: the pipeline must estimate it."""
    if responses:
        response = orjson.dumps({"object": "response", "model": "gpt-4o-mini", "status": "completed",
                                 "output": [{"type": "message", "role": "assistant",
                                             "content": [{"type": "output_text", "text": "Done."}]}]}).decode()
        operation = "Responses_Create"
    else:
        response = orjson.dumps({"object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": "Done."}}]}).decode()
        operation = "ChatCompletions_Create"
    return encode(v1_event(request_id, capture="full", usage=None, model="gpt-4o-mini", operation=operation,
                           request=tool_request(parameters, responses=responses), response=response))
