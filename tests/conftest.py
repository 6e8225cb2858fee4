"""Shared fixtures: migrated SQLite databases always, PostgreSQL when the server is reachable.

PostgreSQL tests run against ``METERING_TEST_POSTGRES_URL`` (default: the local server's ``test``
database). Each test session creates its own throwaway database there, so concurrent runs do not
collide. They skip when the server is unreachable, unless ``METERING_REQUIRE_POSTGRES=1`` (CI),
where an unreachable server fails the run instead of silently skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from db.engine import make_engine
from db.migrate import upgrade

POSTGRES_URL = os.environ.get("METERING_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("METERING_REQUIRE_POSTGRES") == "1"


def _postgres_admin() -> Engine | None:
    try:
        engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return engine
    except Exception as exc:  # unreachable server, missing driver
        if REQUIRE_POSTGRES:
            raise RuntimeError(f"PostgreSQL required but unreachable at {POSTGRES_URL}: {exc}") from exc
        return None


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test session (dropped afterwards)."""
    admin = _postgres_admin()
    if admin is None:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")
    name = f"metering_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _reset_postgres(url: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'metering.db'}"


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> str:
    """The session's PostgreSQL database, emptied for this test (not migrated)."""
    _reset_postgres(postgres_server_url)
    return postgres_server_url


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A database URL (not yet migrated), once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine, once for SQLite and once for PostgreSQL."""
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def db(db_url: str, capsys: pytest.CaptureFixture[str]) -> str:
    """A database URL migrated with `metering db upgrade`, once for SQLite and once for PostgreSQL."""
    from cli_runner import run

    assert run(capsys, "--db", db_url, "db", "upgrade")[0] == 0
    return db_url
