"""``metering db upgrade``: create or migrate the tables and views (Alembic)."""

from __future__ import annotations

import argparse

from metering.cli.common import UsageError, engine, out


def cmd_upgrade(args: argparse.Namespace) -> int:
    from db.engine import safe_url
    from db.migrate import SchemaMismatch, head_revision, upgrade

    db = engine(args)
    try:
        upgrade(db)
    except SchemaMismatch as exc:
        raise UsageError(str(exc)) from None
    out(f"database {safe_url(db.url)} is at revision {head_revision()}\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("db", help="database schema")
    actions = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    actions.add_parser("upgrade", help="create or migrate the tables and views").set_defaults(handler=cmd_upgrade)
