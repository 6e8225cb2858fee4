"""Batch API output files → the usage of one finished job (``metering batch import``), pure.

An output file has one JSON line per request of the job: ``{"id", "custom_id", "response":
{"status_code", "request_id", "body": {… "model", "usage"}}, "error"}``. The job's usage is the sum
of the ``response.body.usage`` of its successful (2xx) requests, read with the same rules as a
single response's usage (``metering.usage.resolve.normalize_usage``); failed requests are not
billed. Used when the batch object the gateway saw had no ``usage``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import orjson

from metering.model import TOKEN_KIND_FIELDS, BadEvent, TokenUsage
from metering.usage.batches import BatchUsage
from metering.usage.resolve import normalize_usage

SUMMED = ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "total_tokens", *TOKEN_KIND_FIELDS)


class BatchOutputError(ValueError):
    """An output file that cannot be metered; the message names the line."""


@dataclass(frozen=True, slots=True)
class BatchOutput:
    """What an output file says: the job's usage, and how many requests it billed and skipped."""

    usage: BatchUsage
    billed_requests: int
    failed_requests: int


def read_batch_output(lines: list[bytes], batch_id: str, finished_at: datetime, source: str = "output file",
                      deployment: str | None = None) -> BatchOutput:
    """Sum a job's output lines into one ``BatchUsage``; raises ``BatchOutputError`` on bad lines."""
    totals = dict.fromkeys(SUMMED, 0)
    models: Counter[str] = Counter()
    endpoints: Counter[str] = Counter()
    billed = failed = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
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
    if billed == 0:
        raise BatchOutputError(f"{source}: no successful request with usage: nothing to meter")
    kind = endpoints.most_common(1)[0][0] if endpoints else ""
    endpoint = {"chat.completion": "chat.completions", "response": "responses", "list": "embeddings",
                "text_completion": "completions"}.get(kind, "other")
    model = models.most_common(1)[0][0] if models else None
    usage = TokenUsage(source="reported", model=model, **totals)
    return BatchOutput(BatchUsage(batch_id, usage, endpoint, deployment, finished_at), billed, failed)



