"""The floor's way of reading a stream: what any implementation must at least do, without our fast
path (shared by bench_pipeline.py's floor and bench_stream.py's general-path column)."""

from __future__ import annotations

import orjson


def general_stream_text(response: str) -> str | None:
    """The text of a captured stream, every ``data:`` payload parsed on its own (chat chunks of every
    shape, Responses API events); ``None`` when the stream carried its usage (the ``include_usage``
    chunk, or ``response.completed``), so that nothing needs counting."""
    pieces: list[str] = []
    reported = False
    for line in response.split("\n"):
        if line.startswith("data: {"):
            chunk = orjson.loads(line[6:])
            if chunk.get("usage") or (type(chunk.get("response")) is dict and chunk["response"].get("usage")):
                reported = True
            if chunk.get("type") == "response.output_text.delta":
                pieces.append(chunk["delta"])
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    pieces.append(content)
    return None if reported else "".join(pieces)
