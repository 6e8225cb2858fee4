"""Batch API output files → the usage of one finished job (``metering batch import``).

An output file has one JSON line per request of the job: ``{"id", "custom_id", "response":
{"status_code", "request_id", "body": {… "model", "usage"}}, "error"}``. The job's usage is the sum
of the ``response.body.usage`` of its successful (2xx) requests, read with the same rules as a
single response's usage (``metering.usage.resolve.normalize_usage``); failed requests are not
billed. Used when the batch object the gateway saw had no ``usage``.

Files are streamed line by line (an output file can hold 100,000 responses), each line bounded
(``BATCH_OUTPUT_MAX_LINE_BYTES``, ``batch import --max-line-bytes``): a longer line is refused, naming the file and
line, never read whole. The bound is not the event bound (``METERING_MAX_EVENT_BYTES``, 1 MiB): a line
is one whole response, and an embeddings response of a hundred inputs of 3,072 dimensions is some
6 MB of numbers (of 2,048 inputs, over 100 MB). These files come from the operator's own storage,
not from anyone who can send to the hub, so the bound is about memory: one line at a time, parsed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson

from metering.model import TOKEN_KIND_FIELDS, BadEvent, TokenUsage
from metering.sources.bounds import BATCH_OUTPUT_MAX_LINE_BYTES, LongLine, read_lines
from metering.usage.batches import BatchUsage
from metering.usage.resolve import normalize_usage

SUMMED = ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "total_tokens", *TOKEN_KIND_FIELDS)


class BatchOutputError(ValueError):
    """An output file that cannot be metered; the message names the line."""


@dataclass(frozen=True, slots=True)
class BatchOutput:
    """What an output file says: the job's usage, how many requests it billed and skipped, and the
    latest ``created`` time of its responses (``None`` when no response carries one)."""

    usage: BatchUsage
    billed_requests: int
    failed_requests: int
    last_created: datetime | None = None


# A line above this is read without its vectors: an embeddings response of 2,048 inputs is some 200 MB of
# numbers that orjson would turn into Python floats (~8.6× the line); only usage, model and status count.
VECTOR_STRIP_BYTES = 1 << 20
_VECTORS = re.compile(rb'"embedding"\s*:\s*(?:\[[^\]]*\]|"[^"]*")')


def without_vectors(line: bytes) -> bytes:
    """An output line with every ``embedding`` value (a float list or a base64 string) emptied."""
    return _VECTORS.sub(b'"embedding":[]', line)


def output_file_lines(path: str, max_line_bytes: int = BATCH_OUTPUT_MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of one output file, streamed; a line longer than ``max_line_bytes`` (or a file that
    cannot be read) is a ``BatchOutputError`` naming the file and line."""
    try:
        with open(path, "rb") as handle:
            for number, line in enumerate(read_lines(handle, max_line_bytes), start=1):
                if isinstance(line, LongLine):
                    raise BatchOutputError(
                        f"{path} line {number}: {line.size:,} bytes, above the {max_line_bytes:,}-byte bound on "
                        f"one line (--max-line-bytes raises it)")
                yield line
    except OSError as exc:
        raise BatchOutputError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_batch_output(lines: Iterable[bytes], batch_id: str, finished_at: datetime, source: str = "output file",
                      deployment: str | None = None) -> BatchOutput:
    """Sum a job's output lines (any iterable: a list, or ``output_file_lines`` streaming a file) into
    one ``BatchUsage``; raises ``BatchOutputError`` on bad lines, naming ``source`` and the line."""
    return read_batch_outputs([(source, lines)], batch_id, finished_at, deployment=deployment)


def read_batch_outputs(files: Iterable[tuple[str, Iterable[bytes]]], batch_id: str, finished_at: datetime | None,
                       deployment: str | None = None) -> BatchOutput:
    """Sum the lines of a job's output files (``(name, lines)`` pairs, lines numbered per file) into one
    ``BatchUsage``, reading each line once and keeping none; raises ``BatchOutputError`` on bad lines.
    ``finished_at`` ``None``: the job is dated by its latest response's ``created`` time, if any."""
    totals = dict.fromkeys(SUMMED, 0)
    models: Counter[str] = Counter()
    endpoints: Counter[str] = Counter()
    billed = failed = 0
    last_created: int | None = None
    sources = []
    for source, lines in files:
        sources.append(source)
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if len(line) > VECTOR_STRIP_BYTES:
                line = without_vectors(line)
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise BatchOutputError(f"{source} line {number}: not JSON") from None
            response = item.get("response") if isinstance(item, dict) else None
            status = response.get("status_code") if isinstance(response, dict) else None
            body = response.get("body") if isinstance(response, dict) else None
            if not (isinstance(status, int) and 200 <= status < 300 and isinstance(body, dict)):
                failed += 1
                continue
            try:
                usage = normalize_usage(body.get("usage"))
            except BadEvent as exc:
                raise BatchOutputError(f"{source} line {number}: {exc.detail}") from None
            if usage is None:
                raise BatchOutputError(f"{source} line {number}: a successful request without usage")
            billed += 1
            for name in SUMMED:
                totals[name] += getattr(usage, name)
            if isinstance(body.get("model"), str) and body["model"]:
                models[body["model"]] += 1
            if isinstance(body.get("object"), str):
                endpoints[body["object"]] += 1
            created = body.get("created") if isinstance(body.get("created"), int) else body.get("created_at")
            if isinstance(created, int) and not isinstance(created, bool) and 0 < created < 253402300800:
                last_created = max(last_created or 0, created)
    if billed == 0:
        raise BatchOutputError(f"{', '.join(sources)}: no successful request with usage: nothing to meter")
    kind = endpoints.most_common(1)[0][0] if endpoints else ""
    endpoint = {"chat.completion": "chat.completions", "response": "responses", "list": "embeddings",
                "text_completion": "completions"}.get(kind, "other")
    model = models.most_common(1)[0][0] if models else None
    usage = TokenUsage(source="reported", model=model, **totals)
    last = datetime.fromtimestamp(last_created, timezone.utc) if last_created else None
    return BatchOutput(BatchUsage(batch_id, usage, endpoint, deployment, finished_at or last), billed, failed, last)



