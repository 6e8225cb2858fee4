"""Batch API jobs on SQLite and PostgreSQL: a finished job is metered once, at the batch rates of its
deployment, for the subscription that created it — in any order of creation and retrieves, on
redelivery and replay, and whether a retrieve or `metering batch import` comes first.

The batch object follows Azure OpenAI's batch how-to (retrieve response: ``object: "batch"``,
``id: "batch_…"``, ``endpoint: "/chat/completions"``, ``status``, unix ``created_at`` /
``completed_at``, ``request_counts``), plus the ``usage`` (``input_tokens``,
``input_tokens_details.cached_tokens``, ``output_tokens``, ``output_tokens_details.reasoning_tokens``)
and ``model`` that newer API versions add to it.
"""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
import sqlalchemy as sa

from cli_runner import run
from db import rate_card as rate_card_store
from db import store
from db.schema import batch_jobs, usage_records
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.model import RawEvent
from metering.pipeline import process_batch
from metering.price.mappings import parse_deployments_csv
from metering.price.rate_card import parse_rates_csv

M = Decimal(1_000_000)
BATCH_ID = "batch_6caaf24d-54a5-46be-b1b7-518884fcbdde"
CARD = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-08-06,,USD,2.50,1.25,10.00\n"
    "gpt-4o,global-batch,,2024-08-06,,USD,1.25,,5.00\n"
)
USAGE = {"input_tokens": 22_000, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3_100,
         "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 25_100}
COST = Decimal(22_000) * Decimal("1.25") / M + Decimal(3_100) * 5 / M


def batch_object(status: str, usage: dict | None = USAGE, **extra) -> str:
    body = {
        "cancelled_at": None, "cancelling_at": None, "completed_at": 1792_100_000 if status == "completed" else None,
        "completion_window": "24h", "created_at": 1792_000_000, "error_file_id": None, "expired_at": None,
        "expires_at": 1792_086_400, "failed_at": None, "finalizing_at": None, "id": BATCH_ID, "in_progress_at": None,
        "input_file_id": "file-9f3a7c1d2e4b", "errors": None, "metadata": None, "object": "batch",
        "output_file_id": "file-5e8d2c6a1b0f" if status != "validating" else None,
        "request_counts": {"completed": 3 if status != "validating" else 0, "failed": 0, "total": 3},
        "status": status, "endpoint": "/chat/completions", "model": "gpt-4o-batch",
    }
    if usage is not None and status != "validating":
        body["usage"] = usage
    body.update(extra)
    return orjson.dumps(body).decode()


def create(request_id: str = "create-1") -> RawEvent:
    return RawEvent(encode(v1_event(
        request_id, operation="Batch_Create", deployment=None, model=None, usage=None, capture="full",
        subscription={"id": "sub-claims", "name": "Claims Automation"},
        request={"input_file_id": "file-9f3a7c1d2e4b", "endpoint": "/chat/completions", "completion_window": "24h"},
        response=batch_object("validating"))))


def retrieve(request_id: str, status: str = "completed", usage: dict | None = USAGE, **extra) -> RawEvent:
    # polled by an operations subscription: the job is still the creator's to pay
    body = batch_object(status, usage, **extra)
    return RawEvent(encode(v1_event(
        request_id, operation="Batch_Get", deployment=None, model=None, capture="usage", response=body,
        usage=orjson.loads(body).get("usage"), subscription={"id": "sub-platform-ops", "name": "Platform Ops"})))


def setup(engine) -> Ingestor:
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(CARD))
        rate_card_store.replace_deployments(conn, parse_deployments_csv(
            "backend_id,deployment,model,deployment_type\n,gpt-4o-batch,gpt-4o,global-batch\n"))
    return Ingestor(engine)


def rows(engine) -> dict:
    with engine.connect() as conn:
        return {row.request_id: row for row in conn.execute(sa.select(usage_records))}


def assert_metered_once(engine) -> None:
    stored = rows(engine)
    job = stored[f"batch:{BATCH_ID}"]
    assert (job.subscription_id, job.subscription_name) == ("sub-claims", "Claims Automation")
    assert (job.deployment, job.model, job.deployment_type, job.endpoint) == ("gpt-4o-batch", "gpt-4o", "global-batch",
                                                                           "chat.completions")
    assert (job.prompt_tokens, job.completion_tokens, job.price_status, job.total_cost) == (22_000, 3_100, "priced", COST)
    calls = [row for key, row in stored.items() if not key.startswith("batch:")]
    assert calls and all(row.price_status == "not_billable" and row.total_tokens == 0 for row in calls)
    assert sum(row.total_cost for row in stored.values()) == COST


def test_creation_then_retrieves_meter_the_job_once_for_its_creator(engine):
    ingestor = setup(engine)
    ingestor.ingest([create(), retrieve("poll-1", "in_progress", usage=None)])
    first = ingestor.ingest([retrieve("poll-2"), retrieve("poll-3")])
    assert first.batch_jobs_metered == 1 and "batch jobs metered 1" in first.summary()
    again = ingestor.ingest([create(), retrieve("poll-1", "in_progress", usage=None), retrieve("poll-2"),
                             retrieve("poll-3"), retrieve("poll-4")])  # a replay, and one more poll
    assert again.batch_jobs_metered == 0 and again.inserted == 1
    assert_metered_once(engine)


def test_a_retrieve_before_the_creation_is_charged_to_the_creator_when_it_arrives(engine):
    ingestor = setup(engine)
    ingestor.ingest([retrieve("poll-2")])
    assert rows(engine)[f"batch:{BATCH_ID}"].subscription_id is None  # metered; payer not known yet
    ingestor.ingest([create()])
    ingestor.ingest([create(), retrieve("poll-2")])  # redelivered
    assert_metered_once(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(batch_jobs)).scalar() == 1


def test_cancelled_and_expired_jobs_bill_the_work_completed(engine):
    ingestor = setup(engine)
    partial = {"input_tokens": 8_000, "output_tokens": 1_000, "total_tokens": 9_000}
    ingestor.ingest([create(), retrieve("poll-1", "cancelled", usage=partial, cancelled_at=1792_050_000)])
    job = rows(engine)[f"batch:{BATCH_ID}"]
    assert job.total_cost == Decimal(8_000) * Decimal("1.25") / M + Decimal(1_000) * 5 / M
    assert job.event_time.timestamp() == 1792_050_000


def test_batch_import_meters_a_job_without_usage_once(engine, db_url, tmp_path, capsys):
    ingestor = setup(engine)
    ingestor.ingest([create(), retrieve("poll-1", usage=None)])  # an older API version: no usage in the object
    assert f"batch:{BATCH_ID}" not in rows(engine)
    output = tmp_path / "output.jsonl"
    lines = []
    for i, (prompt, completion) in enumerate(((7_000, 1_000), (8_000, 1_100), (7_000, 1_000))):
        body = {"id": f"chatcmpl-{i}", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                          "prompt_tokens_details": {"cached_tokens": 0}}}
        lines.append({"id": f"batch_req_{i}", "custom_id": f"task-{i}",
                      "response": {"status_code": 200, "request_id": f"req-{i}", "body": body}, "error": None})
    lines.append({"id": "batch_req_3", "custom_id": "task-3", "response": {"status_code": 400, "body": {"error": {}}},
                  "error": None})
    output.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    code, out, err = run(capsys, "--db", db_url, "batch", "import", str(output), "--batch-id", BATCH_ID,
                         "--deployment", "gpt-4o-batch")
    assert code == 0, err
    assert "3 request(s) billed, 1 failed" in out and ": metered" in out
    job = rows(engine)[f"batch:{BATCH_ID}"]
    assert (job.subscription_id, job.model, job.deployment_type, job.total_cost) == (
        "sub-claims", "gpt-4o-2024-08-06", "global-batch", COST)
    code, out, _ = run(capsys, "--db", db_url, "batch", "import", str(output), "--batch-id", BATCH_ID)
    assert code == 0 and "already metered" in out
    ingestor.ingest([retrieve("poll-9")])  # a later retrieve that does show usage: still once
    assert rows(engine)[f"batch:{BATCH_ID}"].total_cost == COST
    code, _, err = run(capsys, "--db", db_url, "batch", "import", str(tmp_path / "missing.jsonl"), "--batch-id", "b")
    assert code == 2 and "cannot read" in err


# Two writers that cannot see each other's uncommitted half (two Function instances on two partitions,
# a replay beside the Function, `metering batch import` beside either): the creation and the finished
# job's usage row are each committed unseen, and the row must still end charged to its creator.

def commit_first(target, side: sa.Connection) -> None:
    """Commit ``side`` just before the first transaction of ``target`` (an engine, or ``Engine`` for
    any) commits: that transaction did its reads and writes without seeing ``side``'s."""
    done = []

    def before_commit(conn):
        if not done:
            done.append(True)
            side.commit()

    sa.event.listen(target, "commit", before_commit)
    return before_commit


def stored_unseen(engine, ingestor: Ingestor, raws: list[RawEvent]) -> sa.Connection:
    """``raws`` stored in a transaction left open (committed later by ``commit_first``)."""
    side = engine.connect()
    side.begin()
    store.store_batch(side, process_batch(raws, ingestor.rate_card()))
    return side


@pytest.mark.postgres
@pytest.mark.parametrize("racing", ["creation-races-the-retrieve", "retrieve-races-the-creation"])
def test_a_creation_and_a_retrieve_committed_unseen_still_charge_the_creator(postgres_engine, racing):
    ingestor = setup(postgres_engine)
    theirs, mine = ([create()], [retrieve("poll-2")]) if racing.startswith("creation") else ([retrieve("poll-2")], [create()])
    side = stored_unseen(postgres_engine, ingestor, theirs)
    commit_first(postgres_engine, side)
    totals = ingestor.ingest(mine)
    side.close()
    assert totals.read == 1
    assert_metered_once(postgres_engine)
    again = ingestor.ingest([create(), retrieve("poll-2")])  # a replay changes nothing more
    assert (again.inserted, again.batch_jobs_metered) == (0, 0)
    assert_metered_once(postgres_engine)


@pytest.mark.postgres
def test_a_batch_import_beside_a_creation_committed_unseen_charges_the_creator(postgres_engine, postgres_url, tmp_path,
                                                                                capsys):
    ingestor = setup(postgres_engine)
    output = tmp_path / "output.jsonl"
    body = {"object": "chat.completion", "model": "gpt-4o-2024-08-06",
            "usage": {"prompt_tokens": 22_000, "completion_tokens": 3_100, "total_tokens": 25_100}}
    output.write_bytes(orjson.dumps({"custom_id": "task-0", "response": {"status_code": 200, "body": body}}) + b"\n")
    side = stored_unseen(postgres_engine, ingestor, [create()])
    hook = commit_first(sa.engine.Engine, side)  # the command's own engine: its first commit stores the row
    try:
        code, out, err = run(capsys, "--db", postgres_url, "batch", "import", str(output), "--batch-id", BATCH_ID,
                             "--deployment", "gpt-4o-batch", "--at", "2026-10-15")
    finally:
        sa.event.remove(sa.engine.Engine, "commit", hook)
        side.close()
    assert code == 0 and ": metered" in out, err
    job = rows(postgres_engine)[f"batch:{BATCH_ID}"]
    assert (job.subscription_id, job.subscription_name, job.total_cost) == ("sub-claims", "Claims Automation", COST)


@pytest.mark.parametrize("order", ["creation-first", "retrieve-first", "one-batch"])
def test_creation_and_usage_in_separate_batches_in_either_order(engine, order):
    ingestor = setup(engine)
    if order == "one-batch":
        ingestor.ingest([retrieve("poll-2"), create()])
    else:
        first, second = ([create()], [retrieve("poll-2")]) if order == "creation-first" else ([retrieve("poll-2")], [create()])
        ingestor.ingest(first)
        ingestor.ingest(second)
    assert_metered_once(engine)


def test_a_replayed_creation_charges_a_row_left_without_a_subscription(engine):
    """A row stored with no subscription although the creation is stored (the two committed unseen,
    and the settle after them failed): replaying the creation — a duplicate — completes it."""
    ingestor = setup(engine)
    ingestor.ingest([create()])
    record = process_batch([retrieve("poll-2")], ingestor.rate_card()).batch_usage[0]
    with engine.begin() as conn:
        store.insert_records(conn, [record], store.utc_now())  # as a writer that missed the creation left it
    assert rows(engine)[f"batch:{BATCH_ID}"].subscription_id is None
    again = ingestor.ingest([create()])
    assert (again.duplicates, again.inserted) == (1, 0)
    assert_metered_once(engine)


def test_quarantined_batch_calls_meter_their_job_when_retried(engine):
    """A creation and a finished retrieve that an older release quarantined (a bug): `quarantine
    retry` records the job and meters it once, for its creator, as ingesting them would have."""
    from metering.model import Quarantined

    ingestor = setup(engine)
    with engine.begin() as conn:
        store._insert_quarantine(conn, [Quarantined("internal_error", "KeyError: 'id'", create().body),
                                        Quarantined("internal_error", "KeyError: 'usage'", retrieve("poll-2").body)],
                                 store.utc_now())
    retried = ingestor.retry_quarantined()
    assert (retried.retried, retried.resolved) == (2, 2)
    assert retried.tokens == 25_100 and retried.cost == COST
    assert_metered_once(engine)
    again = ingestor.ingest([create(), retrieve("poll-2")])  # the same calls redelivered: nothing new
    assert again.batch_jobs_metered == 0
    assert_metered_once(engine)
