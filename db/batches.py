"""Batch API jobs in SQL: who created a job, and its one usage row charged to that subscription.

``batch_jobs`` is keyed by batch id (a redelivered creation is not recorded twice). A finished job's
usage row (``usage_records.request_id = 'batch:<id>'``) is inserted once, whichever of its
retrieves or ``metering batch import`` comes first; the subscription is the creating call's:

* the creation was stored before: the row takes its subscription when inserted;
* the row was stored first (the creation arrives later, e.g. from another partition): the row has
  no subscription until the creation's batch sets it.

Both paths run in the caller's transaction, in batch-id order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

import sqlalchemy as sa

from db.idempotent import insert_absent
from db.schema import batch_jobs, usage_records
from metering.model import UsageRecord
from metering.usage.batches import BATCH_KEY_PREFIX, BatchJob, batch_request_id

ATTRIBUTED = ("subscription_id", "subscription_name", "product", "user_id")


def record_jobs(conn: sa.Connection, jobs: Sequence[BatchJob]) -> int:
    """Keep each job's creator once; charge already-metered rows of these jobs to it. Returns the
    number of jobs recorded now."""
    by_id = {job.batch_id: job for job in jobs}  # first creation of each id wins within a batch
    if not by_id:
        return 0
    rows = [{k: v for k, v in asdict(by_id[key]).items()} for key in sorted(by_id)]
    inserted = insert_absent(conn, batch_jobs, "batch_id", rows)
    for batch_id in sorted(inserted):
        job = by_id[batch_id]
        conn.execute(
            usage_records.update()
            .where(usage_records.c.request_id == batch_request_id(batch_id), usage_records.c.subscription_id.is_(None))
            .values(**{name: getattr(job, name) for name in ATTRIBUTED})
        )
    return len(inserted)


def attribute(conn: sa.Connection, records: Sequence[UsageRecord]) -> list[UsageRecord]:
    """Batch usage rows with their creating subscription, where the job's creation is stored."""
    ids = sorted({r.request_id[len(BATCH_KEY_PREFIX):] for r in records if r.subscription_id is None})
    if not ids:
        return list(records)
    creators: dict[str, Any] = {}
    for start in range(0, len(ids), 1000):
        query = sa.select(batch_jobs).where(batch_jobs.c.batch_id.in_(ids[start:start + 1000]))
        creators.update({row.batch_id: row for row in conn.execute(query)})
    out = []
    for record in records:
        creator = creators.get(record.request_id[len(BATCH_KEY_PREFIX):]) if record.subscription_id is None else None
        out.append(replace(record, **{name: getattr(creator, name) for name in ATTRIBUTED}) if creator else record)
    return out


def job_created_at(conn: sa.Connection, batch_id: str) -> Any:
    """When the gateway saw the job created (``None`` when it did not: created outside APIM)."""
    return conn.execute(sa.select(batch_jobs.c.created_at).where(batch_jobs.c.batch_id == batch_id)).scalar()
