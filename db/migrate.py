"""Run the Alembic migrations from code (``metering db upgrade``, tests) or emit their SQL offline."""

from __future__ import annotations

import io
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
import sqlalchemy as sa
from sqlalchemy.engine import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the project's migrations, independent of the working directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        config.attributes["database_url"] = url
    return config


class SchemaMismatch(RuntimeError):
    """The database claims a revision whose tables or columns it does not have: a migration was skipped
    (a build whose migration chain differed marked it as done). One line says what is missing."""


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (idempotent: an up-to-date database is left as it is). At the
    head, the result is checked against the schema the code expects; a database that claims the head
    but lacks a table or column raises ``SchemaMismatch`` instead of failing later, on every batch."""
    config = alembic_config()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    except sa.exc.SQLAlchemyError:
        missing = missing_schema(engine)
        if missing:  # a step failed on what an earlier, skipped step should have made
            raise SchemaMismatch(_mismatch_message(engine, missing)) from None
        raise
    if revision == "head":
        missing = missing_schema(engine)
        if missing:
            raise SchemaMismatch(_mismatch_message(engine, missing))


def missing_schema(engine: Engine) -> list[str]:
    """The tables (``name``) and columns (``table.column``) of ``db.schema`` the database lacks."""
    from db.schema import metadata

    inspector = sa.inspect(engine)
    present = set(inspector.get_table_names())
    missing: list[str] = []
    for table in metadata.sorted_tables:
        if table.name not in present:
            missing.append(table.name)
            continue
        columns = {column["name"] for column in inspector.get_columns(table.name)}
        missing.extend(f"{table.name}.{column.name}" for column in table.columns if column.name not in columns)
    return missing


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _mismatch_message(engine: Engine, missing: list[str]) -> str:
    # Columns of tables that exist first: they show which migration was skipped; tables that later
    # migrations would have made (but could not, after the failed step) come after.
    missing = sorted(missing, key=lambda name: "." not in name)
    shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    return (f"the database says it is at revision {current_revision(engine)} but lacks {shown}: a migration was "
            "skipped (it was upgraded by a build whose migration chain differed); restore a backup taken before "
            "that upgrade, or add what is missing by hand, then run `metering db upgrade` again")


def head_revision() -> str:
    """The newest migration's revision id."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def offline_sql(url: str, revision: str = "head") -> str:
    """The DDL a DBA would run, for any dialect (e.g. ``mssql+pyodbc://`` for Azure SQL)."""
    buffer = io.StringIO()
    config = alembic_config(url)
    config.output_buffer = buffer
    command.upgrade(config, revision, sql=True)
    return buffer.getvalue()
