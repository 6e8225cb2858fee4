"""Conflicting duplicates are never silent: a second event under a stored request id with different
bytes leaves the first stored (first wins), is kept in quarantine as ``conflicting_duplicate`` with
both digests, and is counted in every summary; an identical redelivery stays an ordinary duplicate
(issue 13, item 9; SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import logging

import pytest
import sqlalchemy as sa

from cli_runner import run
from db.schema import quarantine, usage_records
from events import encode, jsonl, v1_event
from metering.ingest import Ingestor
from metering.model import RawEvent

GENUINE = encode(v1_event("dup-1"))
# The attacker's copy: the same request id, ten times the tokens.
FORGED = encode(v1_event("dup-1", usage={"prompt_tokens": 12_000, "completion_tokens": 3_000, "total_tokens": 15_000}))


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def stored(engine) -> tuple[list[tuple], list[tuple]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(usage_records.c.request_id, usage_records.c.total_tokens,
                                      usage_records.c.event_sha256)).all()
        kept = conn.execute(sa.select(quarantine.c.reason, quarantine.c.request_id, quarantine.c.detail,
                                      quarantine.c.raw, quarantine.c.resolved_at)).all()
    return [tuple(r) for r in rows], [tuple(q) for q in kept]


@pytest.mark.parametrize("first, second", [(GENUINE, FORGED), (FORGED, GENUINE)], ids=["genuine-first", "forged-first"])
def test_first_wins_and_the_other_is_kept_with_both_digests(engine, first, second):
    ingestor = Ingestor(engine)
    ingestor.ingest([RawEvent(first)])
    totals = ingestor.ingest([RawEvent(second)])
    assert (totals.read, totals.inserted, totals.duplicates, totals.conflicting, totals.quarantined) == (1, 0, 1, 1, 0)
    assert "duplicates skipped 1 (1 conflicting: different content, kept in quarantine as conflicting_duplicate)" in totals.summary()
    rows, kept = stored(engine)
    assert rows == [("dup-1", 1_500 if first is GENUINE else 15_000, digest(first))]
    [(reason, request_id, detail, raw, resolved)] = kept
    assert (reason, request_id, raw, resolved) == ("conflicting_duplicate", "dup-1", second, None)
    assert digest(first) in detail and digest(second) in detail


def test_an_identical_redelivery_is_an_ordinary_duplicate(engine):
    ingestor = Ingestor(engine)
    ingestor.ingest([RawEvent(GENUINE)])
    totals = ingestor.ingest([RawEvent(GENUINE), RawEvent(GENUINE)])
    assert (totals.duplicates, totals.conflicting) == (2, 0) and "conflicting" not in totals.summary()
    assert stored(engine)[1] == []


def test_within_one_batch_and_on_redelivery_of_the_conflict(engine):
    ingestor = Ingestor(engine)
    totals = ingestor.ingest([RawEvent(GENUINE), RawEvent(FORGED), RawEvent(GENUINE)])
    assert (totals.inserted, totals.duplicates, totals.conflicting) == (1, 2, 1)
    again = ingestor.ingest([RawEvent(FORGED)])  # the conflicting event redelivered: noted, not stored twice
    assert again.conflicting == 1
    rows, kept = stored(engine)
    assert [r[1] for r in rows] == [1_500] and [q[0] for q in kept] == ["conflicting_duplicate"]


def test_replay_list_and_retry(db, capsys, tmp_path):
    capture = tmp_path / "two.jsonl"
    capture.write_bytes(jsonl([GENUINE, FORGED, encode(v1_event("other"))]))
    code, out, _ = run(capsys, "--db", db, "replay", "--progress", "off", str(capture))
    assert code == 0
    assert ("events read 3 | rows inserted 2 | duplicates skipped 1 (1 conflicting: different content, kept in "
            "quarantine as conflicting_duplicate) | quarantined 0") in out
    code, out, _ = run(capsys, "--db", db, "quarantine", "list")
    assert code == 0 and "conflicting_duplicate" in out
    code, out, _ = run(capsys, "--db", db, "quarantine", "retry")
    assert code == 0 and "resolved 0" in out and "conflicting_duplicate 1" in out  # still a conflict: stays for review


def test_the_function_logs_the_count(engine, monkeypatch, caplog):
    import function_app
    from azure.functions import EventHubEvent

    monkeypatch.setenv("METERING_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    function_app.reset_ingestor()
    try:
        with caplog.at_level(logging.INFO, logger="metering.function"):
            totals = function_app.handle_events([EventHubEvent(body=GENUINE, sequence_number=1),
                                                 EventHubEvent(body=FORGED, sequence_number=2)])
    finally:
        function_app.reset_ingestor()
    assert totals.conflicting == 1 and "conflicting=1" in caplog.text and "conflicting_duplicate" in caplog.text
