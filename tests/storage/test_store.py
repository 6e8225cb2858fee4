"""Storage on SQLite and PostgreSQL: idempotent batches, exact money, quarantine, views."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from db import rate_card as rate_card_store
from db import subscriptions as subscription_store
from db.schema import quarantine, usage_records
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.model import RawEvent
from metering.price.rate_card import parse_rates_csv

CARD = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
    "gpt-4o-mini,global,,2024-07-18,,USD,0.15,0.075,0.60\n"
)


def load_card(engine) -> None:
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(CARD))


def raw(event: dict) -> RawEvent:
    return RawEvent(encode(event))


def test_batch_is_idempotent_by_request_id(engine):
    load_card(engine)
    ingestor = Ingestor(engine)
    batch = [raw(v1_event(f"req-{i}")) for i in range(5)]
    first = ingestor.ingest(batch + [raw(v1_event("req-0"))])
    assert (first.read, first.inserted, first.duplicates, first.quarantined) == (6, 5, 1, 0)
    again = ingestor.ingest(batch)
    assert (again.inserted, again.duplicates) == (0, 5)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar() == 5


def test_costs_round_trip_exactly(engine):
    load_card(engine)
    event = v1_event("exact", usage={"prompt_tokens": 1234567, "completion_tokens": 7654321, "total_tokens": 8888888,
                                     "prompt_tokens_details": {"cached_tokens": 1111}},
                     model="gpt-4o-mini-2024-07-18")
    totals = Ingestor(engine).ingest([raw(event)])
    expected_input = Decimal(1234567 - 1111) * Decimal("0.15") / 1_000_000
    expected_cached = Decimal(1111) * Decimal("0.075") / 1_000_000
    expected_output = Decimal(7654321) * Decimal("0.60") / 1_000_000
    with engine.connect() as conn:
        row = conn.execute(sa.select(usage_records).where(usage_records.c.request_id == "exact")).one()
    assert row.input_cost == expected_input == Decimal("0.1850184")
    assert row.cached_input_cost == expected_cached == Decimal("0.0000833250")
    assert row.output_cost == expected_output
    assert row.total_cost == expected_input + expected_cached + expected_output == totals.cost
    assert row.price_status == "priced" and row.currency == "USD"
    assert row.event_time.tzinfo is not None and row.ingested_at.tzinfo is not None


def test_bad_events_are_quarantined_once_with_their_bytes(engine):
    ingestor = Ingestor(engine)
    garbage = [RawEvent(b"not json", source_partition="2", source_sequence_number=7),
               RawEvent(encode(v1_event(requestId=None)))]
    first = ingestor.ingest(garbage + [garbage[0]])
    assert (first.read, first.inserted, first.quarantined) == (3, 0, 3)
    ingestor.ingest(garbage)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(quarantine).order_by(quarantine.c.id)).all()
    assert [r.reason for r in rows] == ["not_json", "missing_field"]
    assert rows[0].raw == b"not json" and rows[0].source_partition == "2" and rows[0].source_sequence_number == 7
    assert rows[0].resolved_at is None


def test_unpriced_rows_have_null_costs_and_show_in_views(engine):
    load_card(engine)
    Ingestor(engine).ingest([
        raw(v1_event("priced")),
        raw(v1_event("unknown-model", model="llama-3-70b", deployment="llama")),
    ])
    with engine.connect() as conn:
        unknown = conn.execute(sa.select(usage_records).where(usage_records.c.request_id == "unknown-model")).one()
        daily = conn.execute(sa.text("SELECT model, requests, unpriced_requests, total_tokens FROM v_usage_daily ORDER BY model")).all()
        monthly = conn.execute(sa.text("SELECT month, business_unit, requests, total_tokens FROM v_chargeback_monthly")).all()
    assert unknown.price_status == "no_rate" and unknown.total_cost is None
    assert [(r.model, r.requests, r.unpriced_requests) for r in daily] == [("gpt-4o-2024-11-20", 1, 0), ("llama-3-70b", 1, 1)]
    assert [tuple(r) for r in monthly] == [("2026-10", "(unmapped)", 1, 1500), ("2026-10", "(unmapped)", 1, 1500)]


def test_views_join_business_units(engine):
    load_card(engine)
    with engine.begin() as conn:
        subscription_store.replace_subscriptions(conn, [{"subscription_id": "sub-finance-analytics", "business_unit": "Finance",
                                            "cost_center": "CC-1042", "owner": "cfo@contoso.com"}])
    Ingestor(engine).ingest([raw(v1_event(f"r{i}")) for i in range(3)])
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM v_chargeback_monthly")).mappings().one()
    assert (row["month"], row["business_unit"], row["cost_center"], row["requests"]) == ("2026-10", "Finance", "CC-1042", 3)
    assert Decimal(str(row["total_cost"])).quantize(Decimal("0.000001")) == Decimal("0.018000")


def test_rate_card_round_trips_through_the_database(engine):
    load_card(engine)
    with engine.connect() as conn:
        card = rate_card_store.load_rate_card(conn)
    assert [(r.model, r.input_per_1m, r.cached_input_per_1m) for r in card.rates] == [
        ("gpt-4o", Decimal("2.50"), Decimal("1.25")), ("gpt-4o-mini", Decimal("0.15"), Decimal("0.075"))]
    assert card.rates[0].effective_from.tzinfo is not None


def test_storage_failure_leaves_nothing_half_written(engine):
    load_card(engine)
    ingestor = Ingestor(engine)
    ingestor.ingest([raw(v1_event("existing"))])
    # A value too long for its column is bad input (quarantined by the pipeline, tests/test_record_limits.py),
    # so the storage failure is a broken table: the insert of 'new-1' fails.
    too_long = v1_event("x" * 150, subscription={"id": "s" * 5000})
    batch = [raw(v1_event("new-1")), raw(too_long), RawEvent(b"garbage")]
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(sa.text("CREATE TRIGGER fail_insert BEFORE INSERT ON usage_records "
                                 "WHEN NEW.request_id = 'new-1' BEGIN SELECT RAISE(ABORT, 'disk full'); END"))
        else:
            conn.execute(sa.text("CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS "
                                 "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$"))
            conn.execute(sa.text("CREATE TRIGGER fail_insert BEFORE INSERT ON usage_records FOR EACH ROW "
                                 "WHEN (NEW.request_id = 'new-1') EXECUTE FUNCTION fail_insert()"))
    try:
        ingestor.ingest(batch)
        raise AssertionError("a storage failure must raise")
    except sa.exc.DBAPIError:
        pass
    with engine.connect() as conn:
        ids = conn.execute(sa.select(usage_records.c.request_id)).scalars().all()
        quarantined = conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar()
    assert ids == ["existing"] and quarantined == 0


def test_a_batch_larger_than_one_statement_is_stored_once_and_exactly(engine):
    """A replay with --batch-size 2500 goes over SQLite's 32,766 parameters per statement: the rows
    are written in several statements of one transaction, ids already stored are skipped, and every
    value reads back as written (exact decimals, aware UTC)."""
    load_card(engine)
    ingestor = Ingestor(engine)
    earlier = ingestor.ingest([raw(v1_event(f"big-{i:04d}")) for i in range(0, 2500, 5)])
    assert earlier.inserted == 500
    batch = [raw(v1_event(f"big-{i:04d}", usage={"prompt_tokens": 1000 + i, "completion_tokens": 7, "total_tokens": 1007 + i}))
             for i in range(2500)]
    done = ingestor.ingest(batch)
    assert (done.read, done.inserted, done.duplicates) == (2500, 2000, 500)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(usage_records.c.request_id, usage_records.c.prompt_tokens,
                                      usage_records.c.input_cost, usage_records.c.event_time)
                            .order_by(usage_records.c.request_id)).all()
    assert len(rows) == 2500 and len({r.request_id for r in rows}) == 2500
    by_id = {r.request_id: r for r in rows}
    assert by_id["big-0001"].prompt_tokens == 1001  # written by the big batch
    assert by_id["big-0005"].prompt_tokens != 1005  # stored earlier: first wins
    assert by_id["big-0001"].input_cost == Decimal(1001) * Decimal("2.50") / Decimal(1_000_000)
    assert all(r.event_time.tzinfo is not None for r in rows)


def test_rows_keep_their_instant_and_exact_costs_whatever_the_offset(engine):
    """Rows go to PostgreSQL as JSON and to SQLite as VALUES lists: an instant given with an offset
    is stored as the same instant in UTC, and a cost of 16 integer digits and 12 decimals is exact."""
    from datetime import datetime, timedelta, timezone

    from db import store
    from metering.pipeline import process_batch

    load_card(engine)
    record = process_batch([raw(v1_event("offset-1"))], Ingestor(engine).rate_card()).records[0]
    record.event_time = datetime(2026, 10, 15, 14, 30, 0, 123456, tzinfo=timezone(timedelta(hours=5)))
    record.total_cost = Decimal("9999999999999999.123456789012")
    with engine.begin() as conn:
        assert store.insert_records(conn, [record], datetime(2026, 10, 16, tzinfo=timezone.utc)) == {"offset-1"}
    with engine.connect() as conn:
        row = conn.execute(sa.select(usage_records.c.event_time, usage_records.c.total_cost,
                                     usage_records.c.ingested_at)).one()
    assert row.event_time == datetime(2026, 10, 15, 9, 30, 0, 123456, tzinfo=timezone.utc)
    assert row.total_cost == Decimal("9999999999999999.123456789012")
    assert row.ingested_at == datetime(2026, 10, 16, tzinfo=timezone.utc)


def test_sqlite_batches_of_any_size_reuse_a_few_prepared_statements(sqlite_engine):
    """Rows go in INSERTs of 512, 256, … 1 rows, so that SQLite prepares each statement shape once per
    connection instead of once per batch (each batch's row count differs); every batch is stored whole."""
    from db.store import _SQLITE_MAX_ROWS, statement_sizes

    assert _SQLITE_MAX_ROWS == 512
    for rows in range(0, 3000):
        sizes = statement_sizes(rows)
        assert sum(sizes) == rows and sizes == sorted(sizes, reverse=True)
        assert all(size & (size - 1) == 0 and size <= 512 for size in sizes)
    shapes = {size for rows in range(3000) for size in statement_sizes(rows)}
    assert len(shapes) == 10  # 512, 256, …, 1: within sqlite3's 16 cached statements

    load_card(sqlite_engine)
    ingestor = Ingestor(sqlite_engine)
    statements: list[str] = []
    sa.event.listen(sqlite_engine, "before_cursor_execute",
                    lambda conn, cursor, statement, *rest: statements.append(statement))
    start = 0
    for size in (487, 500, 1, 700):
        assert ingestor.ingest([raw(v1_event(f"s-{i:05d}")) for i in range(start, start + size)]).inserted == size
        start += size
    inserts = [s for s in statements if s.startswith("INSERT INTO usage_records")]
    assert len(set(inserts)) <= 10 and len(inserts) == sum(len(statement_sizes(n)) for n in (487, 500, 1, 700))
    with sqlite_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar() == start


def test_a_batch_half_stored_already_counts_only_its_new_rows(engine):
    """SQLite learns which ids it inserted from each statement's row count (a partly stored statement
    from the rowids above the batch's start), PostgreSQL from RETURNING: the same answer."""
    load_card(engine)
    ingestor = Ingestor(engine)
    stored = [raw(v1_event(f"half-{i:03d}")) for i in range(0, 600, 2)]
    ingestor.ingest(stored)
    batch = [raw(v1_event(f"half-{i:03d}")) for i in range(600)]  # every other one is stored
    totals = ingestor.ingest(batch)
    assert (totals.inserted, totals.duplicates) == (300, 300)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar() == 600


def test_near_the_last_rowid_sqlite_asks_each_statement_for_its_ids(sqlite_engine):
    load_card(sqlite_engine)
    ingestor = Ingestor(sqlite_engine)
    ingestor.ingest([raw(v1_event("high-0"))])
    with sqlite_engine.begin() as conn:  # SQLite picks rowids at random past the largest: no order to rely on
        conn.execute(sa.update(usage_records).where(usage_records.c.request_id == "high-0").values(id=2**63 - 3))
    totals = ingestor.ingest([raw(v1_event(f"high-{i}")) for i in range(6)])
    assert (totals.inserted, totals.duplicates) == (5, 1)
    with sqlite_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar() == 6
