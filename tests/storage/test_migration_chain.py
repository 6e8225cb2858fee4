"""Migrations that shipped keep their place in the chain, and a database whose claimed revision does
not match its schema is refused with one line (issue #26, item 9)."""

from __future__ import annotations

import sqlalchemy as sa
import pytest
from alembic.script import ScriptDirectory

from cli_runner import run
from db.engine import make_engine
from db.migrate import alembic_config, upgrade

# (revision, down_revision) of every migration that has shipped on main: never re-parent one of these.
SHIPPED = {
    "0001": None, "0002": "0001", "0003": "0002", "0004": "0003", "0005": "0004", "0006": "0005",
    "0007": "0006", "0008": "0007", "0009": "0008", "0010": "0009", "0011": "0010", "0012": "0011",
}


def test_shipped_revisions_are_never_re_parented():
    script = ScriptDirectory.from_config(alembic_config())
    chain = {rev.revision: rev.down_revision for rev in script.walk_revisions()}
    assert {rev: chain.get(rev, "(missing)") for rev in SHIPPED} == SHIPPED
    assert len(script.get_heads()) == 1, "the chain has one head"


def a_database_made_by_4b80690(url: str) -> None:
    """What main at 4b80690 made: migrations up to 0004, then its 0006 (chained to 0004 then), so the
    version table says 0006 while 0005's columns were never added."""
    engine = make_engine(url)
    upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0006'"))
    engine.dispose()


def test_db_upgrade_refuses_a_database_that_skipped_a_migration(db_url, capsys):
    a_database_made_by_4b80690(db_url)
    code, out, err = run(capsys, "--db", db_url, "db", "upgrade")
    assert code == 2 and out == "" and err.count("\n") == 1, (code, out, err)
    assert "lacks" in err and "a migration was skipped" in err


def test_a_sound_database_upgrades_and_says_its_revision(db_url, capsys):
    code, out, err = run(capsys, "--db", db_url, "db", "upgrade")
    assert code == 0 and "is at revision" in out, err
    assert run(capsys, "--db", db_url, "db", "upgrade")[0] == 0
