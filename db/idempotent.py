"""Insert-if-absent by a unique key: the one mechanism behind every idempotent write.

PostgreSQL and SQLite: ``INSERT … ON CONFLICT (key) DO NOTHING RETURNING key``. SQL Server (and any
server without ON CONFLICT): read which keys exist WITH (UPDLOCK, HOLDLOCK) — key-range locks that
make a concurrent writer of the same keys wait until this transaction commits — then insert the
rest with executemany (``fast_executemany`` on pyodbc). Callers pass rows sorted by key, so that
concurrent writers take their locks in one order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

# SQL Server allows 2,100 parameters per statement; stay well below for IN (...) lists.
KEY_CHUNK = 1000


def existing_keys_statement(dialect_name: str, table: sa.Table, key: str, keys: Sequence[Any]) -> sa.Select:
    """Which of these keys are stored (locking them on SQL Server until the transaction ends)."""
    statement = sa.select(table.c[key]).where(table.c[key].in_(keys))
    if dialect_name == "mssql":
        statement = statement.with_hint(table, "WITH (UPDLOCK, HOLDLOCK)", "mssql")
    return statement


def insert_absent_generic(conn: sa.Connection, table: sa.Table, key: str, rows: Sequence[dict[str, Any]]) -> set[Any]:
    """Lock-and-check, then executemany: for servers without ON CONFLICT (SQL Server)."""
    keys = [row[key] for row in rows]
    existing: set[Any] = set()
    for start in range(0, len(keys), KEY_CHUNK):
        chunk = keys[start : start + KEY_CHUNK]
        existing.update(conn.execute(existing_keys_statement(conn.dialect.name, table, key, chunk)).scalars())
    new_rows = [row for row in rows if row[key] not in existing]
    if new_rows:
        conn.execute(table.insert(), new_rows)
    return {row[key] for row in new_rows}


def insert_absent(conn: sa.Connection, table: sa.Table, key: str, rows: Sequence[dict[str, Any]]) -> set[Any]:
    """Insert the rows whose ``key`` is not stored yet; return the keys actually inserted."""
    if not rows:
        return set()
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(table).on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])
        return set(conn.execute(statement, list(rows)).scalars())
    return insert_absent_generic(conn, table, key, rows)
