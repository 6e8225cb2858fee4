"""Write conflicts between concurrent writers: which errors are retried, the retry itself, and the
SQL Server statements (compiled with the mssql dialect; no server in the test environment)."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from db import store
from db.conflicts import is_write_conflict
from db.idempotent import insert_absent_generic
from db.schema import quarantine, usage_records
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.model import BatchOutcome, Quarantined, RawEvent


def dbapi_error(orig: BaseException, invalidated: bool = False) -> sa.exc.DBAPIError:
    return sa.exc.DBAPIError("INSERT ...", {}, orig, connection_invalidated=invalidated)


class PgError(Exception):
    def __init__(self, sqlstate: str):
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    "orig, conflict",
    [
        (PgError("40P01"), True),  # deadlock_detected
        (PgError("40001"), True),  # serialization_failure
        (PgError("23505"), True),  # unique_violation
        (PgError("53100"), False),  # disk_full
        (PgError("08006"), False),  # connection_failure
        (PgError("42P01"), False),  # undefined_table
        # pyodbc: (SQLSTATE, message with the native error number in parentheses)
        (Exception("40001", "[40001] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Transaction (Process ID 57) "
                            "was deadlocked on lock resources with another process and has been chosen as the deadlock "
                            "victim. Rerun the transaction. (1205) (SQLExecDirectW)"), True),
        (Exception("23000", "[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Violation of UNIQUE KEY "
                            "constraint 'uq_usage_records_request_id'. Cannot insert duplicate key in object "
                            "'dbo.usage_records'. (2627) (SQLExecDirectW)"), True),
        (Exception("23000", "[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Cannot insert duplicate key "
                            "row in object 'dbo.quarantine' with unique index 'uq_quarantine_raw_sha256'. (2601)"), True),
        (Exception("23000", "[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Cannot insert the value NULL "
                            "into column 'event_time' (515) (SQLExecDirectW)"), False),
        (Exception("08S01", "[08S01] [Microsoft][ODBC Driver 18 for SQL Server]Communication link failure (0)"), False),
        # a number in parentheses in the message's data is not the error number (2628: truncation)
        (Exception("22001", "[22001] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]String or binary data would "
                            "be truncated in table 'metering.dbo.usage_records', column 'model'. Truncated value: "
                            "'gpt (1205)'. (2628) (SQLExecute); [01000] [Microsoft][ODBC Driver 18 for SQL Server]"
                            "[SQL Server]The statement has been terminated. (3621)"), False),
        (Exception("23000", "[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Violation of UNIQUE KEY "
                            "constraint 'uq_llm_usage_request_id'. Cannot insert duplicate key in object "
                            "'dbo.llm_usage'. The duplicate key value is (4711). (2627) (SQLExecute); [01000] "
                            "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]The statement has been "
                            "terminated. (3621)"), True),
        (Exception(1205, b"Transaction was deadlocked"), True),  # pymssql
        (Exception(2627, b"Violation of PRIMARY KEY constraint"), True),
        (Exception(4060, b"Cannot open database"), False),
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("disk I/O error"), False),
        (sqlite3.IntegrityError("NOT NULL constraint failed: usage_records.event_time"), False),
    ],
)
def test_which_errors_are_write_conflicts(orig, conflict):
    assert is_write_conflict(dbapi_error(orig)) is conflict


def test_a_lost_connection_is_not_a_conflict_and_other_exceptions_are_not_either():
    assert not is_write_conflict(dbapi_error(PgError("40P01"), invalidated=True))
    assert not is_write_conflict(ValueError("40P01"))


def inject_once(engine, error_factory, match: str = "INSERT INTO usage_records"):
    """Fail the first statement that matches, once, with the driver's own exception class."""
    state = {"left": 1, "seen": 0}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def fail(conn, cursor, statement, parameters, context, executemany):
        if match in statement:
            state["seen"] += 1
            if state["left"]:
                state["left"] -= 1
                raise error_factory()

    return state


def test_a_conflict_is_retried_in_a_fresh_transaction(sqlite_engine):
    Ingestor(sqlite_engine).ingest([RawEvent(encode(v1_event("first")))])
    state = inject_once(sqlite_engine, lambda: sqlite3.OperationalError("database is locked"))
    pauses: list[float] = []
    ingestor = Ingestor(sqlite_engine, sleep=pauses.append)
    # (four rows: one INSERT statement per attempt, db/store.py's statement_sizes)
    totals = ingestor.ingest([RawEvent(encode(v1_event(f"r{i}"))) for i in range(4)] + [RawEvent(b"junk")])
    assert (totals.inserted, totals.quarantined) == (4, 1)
    assert state["seen"] == 2 and len(pauses) == 1 and 0 < pauses[0] < 1
    with sqlite_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar() == 5
        assert conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar() == 1


def test_other_errors_are_not_retried(sqlite_engine):
    state = inject_once(sqlite_engine, lambda: sqlite3.OperationalError("disk I/O error"))
    pauses: list[float] = []
    with pytest.raises(sa.exc.OperationalError):
        Ingestor(sqlite_engine, sleep=pauses.append).ingest([RawEvent(encode(v1_event("x")))])
    assert state["seen"] == 1 and pauses == []


def test_conflicts_that_persist_give_up_and_raise(sqlite_engine):
    state = inject_once(sqlite_engine, lambda: sqlite3.OperationalError("database is locked"))
    state["left"] = 100
    ingestor = Ingestor(sqlite_engine, conflict_retries=3, sleep=lambda _: None)
    with pytest.raises(sa.exc.OperationalError):
        ingestor.ingest([RawEvent(encode(v1_event("x")))])
    assert state["seen"] == 4


def test_mssql_lock_and_check_statements_hold_key_range_locks():
    dialect = mssql.dialect()
    statement = store.existing_request_ids_statement("mssql", ["b", "a"])
    sql = str(statement.compile(dialect=dialect))
    assert "usage_records WITH (UPDLOCK, HOLDLOCK)" in sql and "IN (__[POSTCOMPILE_request_id_1])" in sql
    assert "WITH" not in str(store.existing_request_ids_statement("postgresql", ["a"]).compile(dialect=dialect))


class Recorder:
    """A connection stand-in that records what the generic (SQL Server) path would send."""

    def __init__(self, dialect_name: str, existing: set[str]):
        self.dialect = type("D", (), {"name": dialect_name})()
        self.existing = existing
        self.sent: list[tuple[str, object]] = []

    def execute(self, statement, parameters=None):
        compiled = str(statement.compile(dialect=mssql.dialect()))
        self.sent.append((compiled, parameters))
        if compiled.startswith("SELECT"):
            keys = statement.compile(dialect=mssql.dialect(), compile_kwargs={"render_postcompile": True}).params
            wanted = {v for k, vs in keys.items() for v in (vs if isinstance(vs, list) else [vs])}
            return type("R", (), {"scalars": lambda self_: [k for k in self.existing if k in wanted]})()
        return None


def test_mssql_quarantine_insert_checks_under_lock_in_digest_order():
    items = [Quarantined("not_json", "x", raw) for raw in (b"zz", b"aa", b"mm", b"aa")]
    existing = {store.raw_digest(b"mm")}
    conn = Recorder("mssql", existing)
    written = store._insert_quarantine(conn, items, store.utc_now())  # type: ignore[arg-type]
    select, insert = conn.sent
    assert "quarantine WITH (UPDLOCK, HOLDLOCK)" in select[0]
    assert insert[0].startswith("INSERT INTO quarantine")
    digests = [row["raw_sha256"] for row in insert[1]]  # type: ignore[union-attr]
    assert written == 2 and digests == sorted({store.raw_digest(b"zz"), store.raw_digest(b"aa")})


def test_mssql_usage_insert_skips_ids_stored_by_another_writer():
    conn = Recorder("mssql", {"b"})
    rows = [{"request_id": k} for k in ("a", "b", "c")]
    inserted = insert_absent_generic(conn, usage_records, "request_id", rows)  # type: ignore[arg-type]
    assert inserted == {"a", "c"}
    assert "WITH (UPDLOCK, HOLDLOCK)" in conn.sent[0][0]
    assert [r["request_id"] for r in conn.sent[1][1]] == ["a", "c"]  # type: ignore[index]


def test_store_orders_rows_and_quarantine_the_same_way_in_every_writer(sqlite_engine):
    statements: list[tuple[str, object]] = []

    @sa.event.listens_for(sqlite_engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    outcome = BatchOutcome(
        records=[],
        quarantined=[Quarantined("not_json", "x", raw) for raw in (b"3", b"1", b"2")],
        events_read=3,
    )
    from metering.pipeline import process_batch
    from metering.price.pricing import RateCard

    # (four rows: one INSERT statement, db/store.py's statement_sizes)
    processed = process_batch([RawEvent(encode(v1_event(k))) for k in ("c", "a", "d", "b")], RateCard([], []))
    outcome.records = processed.records
    with sqlite_engine.begin() as conn:
        store.store_batch(conn, outcome)
    inserts = [(s, p) for s, p in statements if s.startswith("INSERT")]
    record_params, quarantine_params = inserts[0][1], inserts[1][1]
    assert "usage_records" in inserts[0][0] and "quarantine" in inserts[1][0]
    flat = [v for v in (record_params if isinstance(record_params, (list, tuple)) else [record_params])]
    assert [str(p) for p in flat if p in ("a", "b", "c", "d")] == ["a", "b", "c", "d"]
    digests = [p for p in (quarantine_params if isinstance(quarantine_params, (list, tuple)) else []) if isinstance(p, str) and len(p) == 64]
    assert digests == sorted(store.raw_digest(r) for r in (b"1", b"2", b"3"))
