"""`metering quarantine list | retry | purge`: quarantine you can act on."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from db import quarantine as quarantine_store
from db import store
from db.engine import make_engine
from db.schema import quarantine, usage_records
from events import encode, jsonl, v1_event
from cli_runner import run
from metering.model import PipelineSettings, Quarantined, RawEvent
from metering.ingest import Ingestor
from metering.decode.signature import sign

KEY = b"quarantine-test-key"


@pytest.fixture
def db(db_url, capsys, monkeypatch):
    for name in ("METERING_SIGNING_SECRET", "METERING_QUARANTINE_RETENTION_DAYS", "METERING_QUARANTINE_REDACT"):
        monkeypatch.delenv(name, raising=False)
    assert run(capsys, "--db", db_url, "db", "upgrade")[0] == 0
    engine = make_engine(db_url)
    yield db_url, engine
    engine.dispose()


def put(engine, *items: Quarantined, when: datetime | None = None) -> None:
    """Quarantine rows as an older release of the pipeline would have left them."""
    with engine.begin() as conn:
        store._insert_quarantine(conn, list(items), when or store.utc_now())


def all_rows(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(quarantine).order_by(quarantine.c.id)).all()


def test_list_groups_by_reason_and_shows_the_rows_of_one(db, capsys, tmp_path):
    url, engine = db
    assert run(capsys, "--db", url, "quarantine", "list")[1] == "no unresolved quarantine rows\n"
    capture = tmp_path / "bad.jsonl"
    capture.write_bytes(jsonl([b"not json at all", b"{also not", encode(v1_event(requestId=None)),
                               encode(v1_event("bad-status", status="two hundred")), encode(v1_event("fine"))]))
    assert run(capsys, "--db", url, "replay", str(capture))[0] == 0
    code, out, _ = run(capsys, "--db", url, "quarantine", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["reason", "unresolved", "oldest"]
    counts = {line.split()[0]: int(line.split()[1]) for line in lines[2:-1]}
    assert counts == {"invalid_field": 1, "missing_field": 1, "not_json": 2}
    assert "4 unresolved row(s)" in lines[-1]
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert all(today in line for line in lines[2:-1])

    code, out, _ = run(capsys, "--db", url, "quarantine", "list", "--reason", "invalid_field", "--raw", "40")
    assert code == 0
    assert "request_id bad-status" in out and "status must be an integer" in out
    assert "raw: b'{\"schema\":\"aoai-usage/1\",\"requestId\":\"ba' …" in out
    assert out.rstrip().endswith("1 row(s)")


def test_retry_resolves_what_todays_code_accepts_and_keeps_the_bytes(db, capsys):
    url, engine = db
    fixed_bug = encode(v1_event("was-a-bug"))
    truncated = encode(v1_event("was-cut", capture="full", response="data: x\n\n" * 200))[:900]
    already_stored = encode(v1_event("redelivered-ok"))
    Ingestor(engine).ingest([RawEvent(already_stored)])
    put(engine,
        Quarantined("internal_error", "KeyError: 'usage'", fixed_bug, source_partition="1", source_sequence_number=5),
        Quarantined("not_json", "the body is not JSON", truncated),  # before truncated events were salvaged
        Quarantined("internal_error", "boom", already_stored),
        Quarantined("not_json", "the body is not JSON", b"still garbage"),
        Quarantined("bad_signature", "the event has no signature", encode(v1_event("unsigned"))))
    code, out, _ = run(capsys, "--db", url, "quarantine", "retry")
    assert code == 0, out
    assert out.splitlines()[0] == ("retried 4 | resolved 3 (rows inserted 2, already stored 1) | still failing 1 | "
                                   "tokens 3,000 | cost 0.00")
    assert "still failing by reason: not_json 1" in out
    assert "skipped 1 bad_signature row(s)" in out
    rows = {bytes(r.raw): r for r in all_rows(engine)}
    assert len(rows) == 5  # nothing deleted, nothing added (the truncated row is its own audit copy)
    for body in (fixed_bug, truncated, already_stored):
        assert rows[body].resolved_at is not None and "resolved by retry" in rows[body].detail
    assert "truncated row" in rows[truncated].detail and rows[truncated].reason == "not_json"
    assert rows[fixed_bug].detail.endswith("originally: KeyError: 'usage'")
    garbage = rows[b"still garbage"]
    assert garbage.resolved_at is None and garbage.detail.startswith("retried ") and "not JSON" in garbage.detail
    assert rows[encode(v1_event("unsigned"))].resolved_at is None
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(usage_records.c.request_id, usage_records.c.truncated)).all())
    assert stored == {"redelivered-ok": False, "was-a-bug": False, "was-cut": True}
    with engine.connect() as conn:
        conn_row = conn.execute(sa.select(usage_records).where(usage_records.c.request_id == "was-a-bug")).one()
    assert (conn_row.source_partition, conn_row.source_sequence_number) == ("1", 5)

    code, out, _ = run(capsys, "--db", url, "quarantine", "retry")  # idempotent: only the garbage is left
    assert out.startswith("retried 1 | resolved 0")
    code, out, _ = run(capsys, "--db", url, "quarantine", "list", "--all")
    assert "resolved" in out.splitlines()[0]


def test_retry_checks_signatures_when_a_key_is_configured(db, capsys, tmp_path, monkeypatch):
    url, engine = db
    good = sign(encode(v1_event("signed-late")), KEY)
    put(engine, Quarantined("bad_signature", "the event has no signature", encode(v1_event("unsigned"))),
        Quarantined("bad_signature", "wrong key (key rotated)", good))
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    code, out, _ = run(capsys, "--db", url, "quarantine", "retry", "--signing-secret-file", str(key_file))
    assert out.startswith("retried 2 | resolved 1 (rows inserted 1, already stored 0) | still failing 1")
    monkeypatch.setenv("METERING_SIGNING_SECRET", KEY.decode())
    monkeypatch.setenv("METERING_REQUIRE_SIGNATURE", "0")  # an operator's explicit decision
    code, out, _ = run(capsys, "--db", url, "quarantine", "retry", "--reason", "bad_signature")
    assert out.startswith("retried 1 | resolved 1")


def test_retry_filters_by_reason_id_and_limit(db, capsys):
    url, engine = db
    put(engine, *[Quarantined("internal_error", "old bug", encode(v1_event(f"e{i}"))) for i in range(5)],
        Quarantined("not_json", "x", encode(v1_event("n1"))))
    assert run(capsys, "--db", url, "quarantine", "retry", "--reason", "not_json")[1].startswith("retried 1 | resolved 1")
    ids = [r.id for r in all_rows(engine) if r.resolved_at is None]
    assert run(capsys, "--db", url, "quarantine", "retry", "--id", str(ids[0]))[1].startswith("retried 1 | resolved 1")
    assert run(capsys, "--db", url, "quarantine", "retry", "--limit", "2")[1].startswith("retried 2 | resolved 2")
    settings = PipelineSettings()
    totals = Ingestor(engine, settings=settings).retry_quarantined(page_size=1)
    assert (totals.retried, totals.resolved) == (2, 2)


def test_purge_deletes_only_old_resolved_rows(db, capsys, monkeypatch):
    url, engine = db
    long_ago = datetime.now(timezone.utc) - timedelta(days=100)
    put(engine, Quarantined("internal_error", "old", encode(v1_event("old-ok"))), when=long_ago)
    put(engine, Quarantined("not_json", "old", b"old garbage"), when=long_ago)
    Ingestor(engine).retry_quarantined()  # resolves old-ok now
    with engine.begin() as conn:  # ...pretend it was resolved 90 days ago
        conn.execute(quarantine.update().where(quarantine.c.resolved_at.is_not(None)).values(resolved_at=long_ago))
    put(engine, Quarantined("internal_error", "new", encode(v1_event("new-ok"))))
    Ingestor(engine).retry_quarantined()

    assert run(capsys, "--db", url, "quarantine", "purge")[0] == 2  # no retention given
    assert run(capsys, "--db", url, "quarantine", "purge", "--older-than", "30", "--resolved-before", "2020-01-01")[0] == 2
    code, out, _ = run(capsys, "--db", url, "quarantine", "purge", "--resolved-before", "2000-01-01")
    assert out.startswith("purged 0 ")
    monkeypatch.setenv("METERING_QUARANTINE_RETENTION_DAYS", "30")
    code, out, _ = run(capsys, "--db", url, "quarantine", "purge")
    assert code == 0 and out.startswith("purged 1 quarantine row(s)")
    remaining = {(r.reason, r.resolved_at is not None) for r in all_rows(engine)}
    assert remaining == {("not_json", False), ("internal_error", True)}  # unresolved rows are never purged
    code, out, _ = run(capsys, "--db", url, "quarantine", "purge", "--older-than", "0")
    assert out.startswith("purged 1 ")
    assert [(r.reason, r.resolved_at) for r in all_rows(engine)] == [("not_json", None)]


def test_summary_counts_bytes_and_resolution(db):
    _, engine = db
    put(engine, Quarantined("not_json", "x", b"12345"), Quarantined("not_json", "y", b"123"))
    with engine.connect() as conn:
        (group,) = quarantine_store.summary(conn)
    assert (group.reason, group.unresolved, group.resolved, group.bytes) == ("not_json", 2, 0, 8)
    assert group.oldest is not None and group.oldest.tzinfo is not None


def test_retry_routes_diagnostic_log_envelopes_like_ingest(db, capsys):
    from llm_records import envelope, llm_record

    url, engine = db
    Ingestor(engine).ingest([RawEvent(encode(v1_event("streamed", usage=None, stream=True, capture="usage")))])
    good = envelope(llm_record("streamed", 700, 90))
    still_bad = envelope(llm_record("other", 10, 5, cached=50))  # cached > prompt: still invalid
    put(engine, Quarantined("internal_error", "old bug in the log parser", good),
        Quarantined("invalid_usage", "cached tokens 50 exceed prompt tokens 10", still_bad))
    code, out, _ = run(capsys, "--db", url, "quarantine", "retry")
    assert code == 0 and out.startswith("retried 2 | resolved 1 ") and "still failing by reason: invalid_usage 1" in out
    rows = {bytes(r.raw): r for r in all_rows(engine)}
    assert "kept as LLM-log usage" in rows[good].detail and rows[good].resolved_at is not None
    assert rows[still_bad].resolved_at is None and rows[still_bad].reason == "invalid_usage"
    with engine.connect() as conn:
        row = conn.execute(sa.select(usage_records).where(usage_records.c.request_id == "streamed")).one()
    assert (row.prompt_tokens, row.completion_tokens, row.usage_source) == (700, 90, "reported")


def test_limits_below_one_are_bad_input_not_an_empty_or_unlimited_listing(db, capsys, tmp_path):
    url, _ = db
    for args in (["quarantine", "list", "--reason", "not_json", "--limit", "0"],
                 ["quarantine", "list", "--reason", "not_json", "--limit", "-1"],
                 ["quarantine", "list", "--reason", "not_json", "--raw", "-5"],
                 ["quarantine", "retry", "--limit", "0"],
                 ["replay", "--batch-size", "0", str(tmp_path)]):
        code, _, err = run(capsys, "--db", url, *args)
        assert code == 2, args
        assert err.startswith("metering: ") and "must be" in err and "Traceback" not in err


def test_list_of_a_reason_without_rows_names_the_reasons_that_have_some(db, capsys, tmp_path):
    url, _ = db
    capture = tmp_path / "bad.jsonl"
    capture.write_bytes(jsonl([b"not json at all", encode(v1_event("fine"))]))
    assert run(capsys, "--db", url, "replay", str(capture))[0] == 0
    code, out, _ = run(capsys, "--db", url, "quarantine", "list", "--reason", "truncated")
    assert code == 0 and out == "no unresolved rows with reason truncated (reasons with rows: not_json)\n"
    code, out, err = run(capsys, "--db", url, "quarantine", "list", "--reason", "not-json")
    assert code == 2 and out == "" and "not a quarantine reason" in err and "not_json" in err
