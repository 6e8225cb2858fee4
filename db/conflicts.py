"""Which database errors mean "another writer got in the way; run the transaction again".

Concurrent writers of overlapping batches take their locks in one order (usage rows by request id,
then quarantine rows by digest), which rules out lock-order deadlocks on PostgreSQL and SQLite; a
batch a server stores in parts (metering/ingest.py, ``PartWriter``) takes them in that order part by
part, and should two such writers deadlock, the victim's batch is stored again whole. The
servers can still pick a victim in rarer cases (SQL Server's key-range locks from
``UPDLOCK, HOLDLOCK``, lock escalation, a serialization failure), and on SQL Server a duplicate-key
error (2601, 2627) means a concurrent writer inserted a request id between our check and our insert.
Each of these is safe to retry: the transaction was rolled back, and the retry sees the other
writer's rows as duplicates. Anything else (connection lost, disk full, schema missing) is not a
conflict; it propagates so that the caller (the Functions retry policy) redelivers the batch.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

# PostgreSQL SQLSTATEs: deadlock_detected, serialization_failure, unique_violation (a race on a key
# that ON CONFLICT did not cover).
POSTGRES_CONFLICTS = frozenset({"40P01", "40001", "23505"})
# SQL Server native errors: deadlock victim, duplicate key in a unique index / constraint, lock
# request time-out. pyodbc reports them in the message as "(1205)"; pymssql as args[0].
MSSQL_CONFLICTS = frozenset({1205, 2601, 2627, 1222})
# pyodbc writes each diagnostic record as "[SQLSTATE] message (native error) (SQLFunction)", records
# joined by "; ". Only the number in that position is the error: a number in parentheses inside the
# message text (a duplicate key value, a truncated value such as "(1205)") is data.
_MSSQL_NUMBER = re.compile(r"\((\d{3,5})\)(?=\s*(?:\(SQL\w*\)|;|$))")


def is_write_conflict(exc: BaseException) -> bool:
    """True when ``exc`` is a concurrency conflict that a fresh transaction may not hit again."""
    if not isinstance(exc, sa.exc.DBAPIError) or exc.connection_invalidated:
        return False
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state:
        return state in POSTGRES_CONFLICTS
    args = getattr(orig, "args", ()) or ()
    if args and isinstance(args[0], int):  # pymssql: (number, message)
        return args[0] in MSSQL_CONFLICTS
    message = " ".join(str(a) for a in args) or str(orig)
    if args and isinstance(args[0], str) and re.fullmatch(r"[0-9A-Z]{5}", args[0]):  # pyodbc: (SQLSTATE, message)
        if args[0] == "40001":
            return True
        return any(int(n) in MSSQL_CONFLICTS for n in _MSSQL_NUMBER.findall(message))
    # SQLite: the busy timeout (60 s) ran out while another writer held the lock.
    return "database is locked" in message or "database table is locked" in message


def without_event_data(exc: sa.exc.DBAPIError) -> sa.exc.DBAPIError:
    """The same kind of error with only the first line of the server's message and no parameters:
    servers echo the failing row (PostgreSQL's "DETAIL: Failing row contains (…)", SQL Server's
    duplicate key value), and a batch's rows hold event data — ids, names, raw bytes with prompts —
    that must not reach a log or a traceback. Raise it ``from None``."""
    first_line = str(exc.orig).strip().splitlines()[0][:500] if str(exc.orig).strip() else type(exc.orig).__name__
    try:
        orig: BaseException = type(exc.orig)(first_line)
    except Exception:  # a driver error class that cannot be built from a message
        orig = RuntimeError(f"{type(exc.orig).__name__}: {first_line}")
    return type(exc)(exc.statement, None, orig, hide_parameters=True,  # type: ignore[arg-type]
                     connection_invalidated=exc.connection_invalidated)
