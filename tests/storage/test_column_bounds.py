"""Poison batches from metadata: every value written from event data fits its column — limits read
from db/schema.py's types — or the event is quarantined; audit rows are clipped, never rejected; and
no database error shows the statement's parameters, which hold event bytes (issue 13, item 7;
SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from capture_files import capture_path, capture_records, write_capture
from cli_runner import run
from db.bounds import decimal_limit, integer_range, text_length
from db.schema import llm_usage, quarantine, usage_records
from db.store import store_batch
from events import encode, v1_event
from llm_records import envelope, llm_record
from metering.ingest import Ingestor
from metering.model import BadEvent, RawEvent
from metering.pipeline import check_record, process_batch
from metering.price.pricing import RateCard

LONG_PARTITION = "partition-" + "7" * 60  # a 70-character Capture folder name
SECRET = "Summarise our confidential merger memo"


def test_a_seventy_character_partition_never_fails_the_batch(engine):
    bodies = [b"not json " + SECRET.encode(), encode(v1_event("p-ok")), envelope(llm_record("p-llm"))]
    totals = Ingestor(engine).ingest([RawEvent(b, source_partition=LONG_PARTITION, source_sequence_number=7)
                                      for b in bodies])
    assert totals.read == totals.inserted + totals.duplicates + totals.quarantined + totals.pending
    assert (totals.quarantined, totals.pending) == (2, 1)  # the bad bytes; the row, whose partition does not fit
    with engine.connect() as conn:
        rows = conn.execute(sa.select(quarantine.c.reason, quarantine.c.source_partition, quarantine.c.detail)).all()
        kept = conn.execute(sa.select(llm_usage.c.source_partition)).scalar()
    assert {r.reason for r in rows} == {"not_json", "invalid_field"}
    assert all(r.source_partition == LONG_PARTITION[:64] and "source_partition clipped" in r.detail for r in rows)
    assert kept == LONG_PARTITION[:64]


def test_replaying_a_capture_with_a_long_partition_folder(db, capsys, tmp_path):
    root = tmp_path / "capture"
    write_capture(capture_path(root, LONG_PARTITION), capture_records([encode(v1_event("c-1")), b"\x00broken"]))
    code, out, err = run(capsys, "--db", db, "replay", "--progress", "off", str(root))
    assert code == 0 and "events read 2" in out and "quarantined 2" in out and err == ""


def _too_big(column: sa.Column) -> object:
    if (length := text_length(column)) is not None:
        return "x" * (length + 1)
    if (limit := integer_range(column)) is not None:
        return limit + 1
    return decimal_limit(column)


BOUNDED = [c.name for c in usage_records.columns  # (event_sha256 is the pipeline's own 64 hex digits)
           if c.name not in ("id", "event_sha256") and any(f(c) is not None for f in (text_length, integer_range, decimal_limit))]


@pytest.mark.parametrize("name", BOUNDED)
def test_every_bounded_column_of_usage_records_is_checked_before_storage(name):
    """Whatever the pipeline builds, a value beyond its column (as db/schema.py types it) makes the
    pipeline's one check (``check_record``) quarantine the event, naming the column: it is the only
    check before storage, so a column added to the schema without a bound in it fails here."""
    column = usage_records.c[name]
    record = process_batch([RawEvent(encode(v1_event("b-1")))], RateCard([], [])).records[0]
    check_record(record)  # as built, it fits
    with pytest.raises(BadEvent) as caught:
        check_record(replace(record, **{name: _too_big(column)}))
    assert name in caught.value.detail and caught.value.reason in ("invalid_field", "invalid_usage")


def test_an_unfit_row_is_quarantined_and_the_rest_of_the_batch_stored(engine):
    bodies = [encode(v1_event("u-1", apiVersion="v" * 65)), encode(v1_event("u-2", status=2**31)), encode(v1_event("u-3"))]
    totals = Ingestor(engine).ingest([RawEvent(body) for body in bodies])
    assert (totals.inserted, totals.quarantined) == (1, 2)
    with engine.connect() as conn:
        reasons = conn.execute(sa.select(quarantine.c.request_id, quarantine.c.reason).order_by(quarantine.c.request_id)).all()
    assert [tuple(r) for r in reasons] == [("u-1", "invalid_field"), ("u-2", "invalid_field")]


def test_money_at_the_edge_of_its_column_fits(engine):
    outcome = process_batch([RawEvent(encode(v1_event("m-1")))], RateCard([], []))
    edge = Decimal("9999999999999999.999999999999")  # NUMERIC(28, 12)'s largest value
    exact = Decimal("98765.432109876543")  # 17 digits: a float keeps 16
    outcome.records[0] = replace(outcome.records[0], total_cost=edge, input_cost=exact)
    check_record(outcome.records[0])
    with engine.begin() as conn:
        assert store_batch(conn, outcome).inserted == 1
        stored = conn.execute(sa.select(usage_records.c.total_cost, usage_records.c.input_cost)).one()
    assert tuple(stored) == (edge, exact)


def test_database_errors_never_show_event_data(engine):
    """A storage error still raises (the batch is redelivered), but neither the statement's parameters
    nor the server's echo of the failing row ("DETAIL: Failing row contains …") show event data."""
    import traceback

    from metering.model import Quarantined

    def poison(conn):  # a row the database rejects: NOT NULL reason
        store_batch(conn, process_batch([RawEvent(encode(v1_event("e-1", product=SECRET)))], RateCard([], [])))
        conn.execute(quarantine.insert(), {"received_at": datetime.now(timezone.utc), "reason": None,
                                           "detail": SECRET, "raw": SECRET.encode(), "raw_sha256": "0" * 64})
        return Quarantined

    with pytest.raises(sa.exc.IntegrityError) as caught:
        Ingestor(engine)._in_transaction(poison)
    printed = "".join(traceback.format_exception(caught.value))
    assert SECRET not in printed and SECRET.encode().hex()[:40] not in printed
    assert "not null" in str(caught.value).lower() or "not-null" in str(caught.value).lower()
    with engine.connect() as conn:  # and nothing of the transaction was written
        assert conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar() == 0
