"""Batch API jobs: what a gateway event about a batch says, and the one usage row of a finished job (pure).

A Batch API job (``POST …/openai/batches`` on a ``global-batch`` or ``datazone-batch`` deployment)
runs its requests inside Azure: they never pass through the gateway. What does pass are the calls
that manage the job, each answered with the *batch object* (``{"object": "batch", "id":
"batch_…", "status": …, "usage": …}``): its creation, and the retrieves that poll it.

* A management call is a request like any other — one row, keyed by its APIM request id — but it
  costs nothing itself: ``not_billable``, whatever ``usage`` its body shows (a retrieve of a
  finished job carries the *job's* usage; metering it per retrieve would count the job again on
  every poll, for whoever polled).
* The creation names the subscription that pays for the job (``BatchJob``).
* A finished job (``completed``, ``cancelled`` or ``expired``: cancelled and expired jobs bill the
  work they completed) whose object carries ``usage`` is metered once, as one row keyed
  ``batch:<batch id>`` (``batch_request_id``), at the batch rates of its deployment, for the
  creating subscription — whichever retrieve shows it first; every later one, a redelivery or a
  replay is a duplicate of that key. ``metering batch import`` meters a job from its output file
  under the same key, when its object had no usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from metering.model import TokenUsage, UsageEvent
from metering.usage.resolve import normalize_usage

BATCH_KEY_PREFIX = "batch:"
FINISHED = ("completed", "cancelled", "expired")
# The Batch API endpoint a job runs against → the usage_records endpoint of its row.
BATCH_ENDPOINTS = {
    "/chat/completions": "chat.completions",
    "/v1/chat/completions": "chat.completions",
    "/responses": "responses",
    "/v1/responses": "responses",
    "/embeddings": "embeddings",
    "/v1/embeddings": "embeddings",
    "/completions": "completions",
    "/v1/completions": "completions",
}
# A deployment mapped to a standard type runs batches at the matching batch type; an unmapped one
# is assumed global-batch (Azure's Batch API runs on global-batch and datazone-batch deployments).
BATCH_TYPES = {"global": "global-batch", "datazone": "datazone-batch", "global-batch": "global-batch",
               "datazone-batch": "datazone-batch"}


def batch_request_id(batch_id: str) -> str:
    """The idempotency key of a batch job's one usage row."""
    return f"{BATCH_KEY_PREFIX}{batch_id}"


def batch_deployment_type(mapped_type: str | None) -> str:
    """The deployment type a batch job is priced at (module notes)."""
    return BATCH_TYPES.get(mapped_type or "", "global-batch")


@dataclass(frozen=True, slots=True)
class BatchJob:
    """A batch job created through the gateway: who pays for it (the creating call's subscription)."""

    batch_id: str
    subscription_id: str | None
    subscription_name: str | None
    product: str | None
    user_id: str | None
    created_at: datetime
    request_id: str  # the APIM request id of the creating call


@dataclass(frozen=True, slots=True)
class BatchUsage:
    """The usage of a finished batch job, to be stored once as the row ``batch:<id>``."""

    batch_id: str
    usage: TokenUsage
    endpoint: str
    deployment: str | None
    finished_at: datetime


def batch_object(event: UsageEvent) -> dict[str, Any] | None:
    """The batch object a gateway response carries (``"object": "batch"``), else ``None``."""
    text = event.response
    if not text or '"batch"' not in text[:2000]:
        return None
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict) and body.get("object") == "batch" and isinstance(body.get("id"), str) and body["id"]:
        return body
    return None


def is_batch_call(event: UsageEvent) -> bool:
    """A call that manages a batch job (create, retrieve, cancel, list): by its response or operation."""
    if batch_object(event) is not None:
        return True
    operation = (event.operation or "").lower().replace("_", "").replace("-", "")
    return operation.startswith("batch") or operation.endswith("batch") or operation.endswith("batches")


def _moment(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    return fallback


def read_batch_event(event: UsageEvent) -> tuple[BatchJob | None, BatchUsage | None]:
    """What a batch management call says: the job it created (a ``POST`` answered 2xx with a batch
    object that has not run yet), and the usage of a finished job. Raises ``BadEvent`` for a
    ``usage`` that is not token counts."""
    body = batch_object(event)
    if body is None or not (event.status_code is None or 200 <= event.status_code < 300):
        return None, None
    status = body.get("status")
    job = None
    if status in ("validating", "in_progress") and _is_creation(event):
        job = BatchJob(body["id"], event.subscription_id, event.subscription_name, event.product, event.user_id,
                       _moment(body.get("created_at"), event.event_time), event.request_id)
    usage = None
    if status in FINISHED and isinstance(body.get("usage"), dict):
        # the object's "model" is the deployment the job ran on (Azure): its model comes from the mapping
        tokens = normalize_usage(body["usage"])
        if tokens is not None:
            finished = body.get(f"{status}_at") if status != "completed" else body.get("completed_at")
            endpoint = BATCH_ENDPOINTS.get(str(body.get("endpoint") or "").lower(), "other")
            deployment = body.get("model") if isinstance(body.get("model"), str) and body.get("model") else None
            usage = BatchUsage(body["id"], tokens, endpoint, deployment, _moment(finished, event.event_time))
    return job, usage


def _is_creation(event: UsageEvent) -> bool:
    """The creating call: a batch-create operation, or (operation unknown) a request whose body
    names the input file, as ``POST …/batches`` does."""
    operation = (event.operation or "").lower()
    if "create" in operation:
        return True
    request = event.request
    if isinstance(request, (str, bytes)):
        try:
            request = orjson.loads(request)
        except orjson.JSONDecodeError:
            return False
    return isinstance(request, dict) and "input_file_id" in request
