"""Batch API jobs in SQL: who created a job, and its one usage row charged to that subscription.

``batch_jobs`` is keyed by batch id (a redelivered creation is not recorded twice). A finished job's
usage row (``usage_records.request_id = 'batch:<id>'``) is inserted once, whichever of its
retrieves or ``metering batch import`` comes first; the subscription is the creating call's:

* the creation was stored before: the row takes its subscription when inserted;
* the row was stored first (the creation arrives later, e.g. from another partition): the row has
  no subscription until the creation's batch sets it — or a redelivery or replay of the creation.

Both paths run in the caller's transaction, in batch-id order. Two concurrent writers can each miss
the other's uncommitted half (one stores the creation while the other stores the row): the row
would keep no subscription. So, as for LLM-log usage (db/llm_usage.py), the writers call
``settle_creators`` in a short transaction after each commit, for the batch ids they stored: the
settle that starts last sees both halves committed. It only fills rows that still have no
subscription, so it is idempotent and two settles never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

import sqlalchemy as sa

from db.idempotent import KEY_CHUNK, insert_absent
from db.schema import batch_jobs, usage_records
from metering.model import UsageRecord
from metering.usage.batches import BATCH_KEY_PREFIX, BatchJob, batch_request_id

ATTRIBUTED = ("subscription_id", "subscription_name", "product", "user_id")


def record_jobs(conn: sa.Connection, jobs: Sequence[BatchJob]) -> int:
    """Keep each job's creator once; charge already-metered rows of these jobs to it (a redelivered
    creation too, so that a replay completes a row left without a subscription). Returns the number
    of jobs recorded now."""
    by_id = {job.batch_id: job for job in jobs}  # first creation of each id wins within a batch
    if not by_id:
        return 0
    rows = [{k: v for k, v in asdict(by_id[key]).items()} for key in sorted(by_id)]
    inserted = insert_absent(conn, batch_jobs, "batch_id", rows)
    settle_creators(conn, list(by_id))
    return len(inserted)


def settle_creators(conn: sa.Connection, batch_ids: Sequence[str]) -> int:
    """Charge the stored usage rows of these jobs that have no subscription yet to their stored
    creators (in batch-id order); returns the number of rows changed. Idempotent: run again, or by
    two writers at once, it changes nothing more (see the module doc)."""
    keys = sorted({batch_request_id(batch_id) for batch_id in batch_ids})
    waiting: list[str] = []
    for start in range(0, len(keys), KEY_CHUNK):
        query = sa.select(usage_records.c.request_id).where(
            usage_records.c.request_id.in_(keys[start:start + KEY_CHUNK]), usage_records.c.subscription_id.is_(None))
        waiting.extend(conn.execute(query).scalars())
    if not waiting:
        return 0
    creators = _creators(conn, [key[len(BATCH_KEY_PREFIX):] for key in waiting])
    changed = 0
    for batch_id in sorted(creators):
        creator = creators[batch_id]
        done = conn.execute(
            usage_records.update()
            .where(usage_records.c.request_id == batch_request_id(batch_id), usage_records.c.subscription_id.is_(None))
            .values(**{name: getattr(creator, name) for name in ATTRIBUTED})
        )
        changed += done.rowcount
    return changed


def _creators(conn: sa.Connection, batch_ids: Sequence[str]) -> dict[str, Any]:
    """The stored ``batch_jobs`` rows of these jobs, by batch id."""
    ids = sorted(set(batch_ids))
    creators: dict[str, Any] = {}
    for start in range(0, len(ids), KEY_CHUNK):
        query = sa.select(batch_jobs).where(batch_jobs.c.batch_id.in_(ids[start:start + KEY_CHUNK]))
        creators.update({row.batch_id: row for row in conn.execute(query)})
    return creators


def attribute(conn: sa.Connection, records: Sequence[UsageRecord]) -> list[UsageRecord]:
    """Batch usage rows with their creating subscription, where the job's creation is stored."""
    ids = [r.request_id[len(BATCH_KEY_PREFIX):] for r in records if r.subscription_id is None]
    if not ids:
        return list(records)
    creators = _creators(conn, ids)
    out = []
    for record in records:
        creator = creators.get(record.request_id[len(BATCH_KEY_PREFIX):]) if record.subscription_id is None else None
        out.append(replace(record, **{name: getattr(creator, name) for name in ATTRIBUTED}) if creator else record)
    return out


def job_creator(conn: sa.Connection, batch_id: str) -> str | None:
    """The subscription the gateway saw create the job (``None``: not seen, or no subscription)."""
    return conn.execute(sa.select(batch_jobs.c.subscription_id).where(batch_jobs.c.batch_id == batch_id)).scalar()


def job_created_at(conn: sa.Connection, batch_id: str) -> Any:
    """When the gateway saw the job created (``None`` when it did not: created outside APIM)."""
    return conn.execute(sa.select(batch_jobs.c.created_at).where(batch_jobs.c.batch_id == batch_id)).scalar()
