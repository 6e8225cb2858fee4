"""Alembic environment: the database URL comes from the caller (``metering db upgrade``), the
``-x db=URL`` argument, ``METERING_DATABASE_URL``, or ``alembic.ini``, in that order."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import pool

from db.engine import make_engine
from db.schema import metadata

config = context.config
target_metadata = metadata


def database_url() -> str:
    x_args = context.get_x_argument(as_dictionary=True)
    return (
        config.attributes.get("database_url")
        or x_args.get("db")
        or os.environ.get("METERING_DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
        or "sqlite:///metering.db"
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (e.g. for a DBA to run on Azure SQL): ``alembic -x db=mssql+pyodbc:// upgrade head --sql``."""
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata,
                          render_as_batch=conn.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
