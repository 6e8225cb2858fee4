"""A database prepared for a replay (schema, the sample rate card and deployments) and what a replay
stored in it, for the tests that compare two replays row for row (parallel workers, Blob Storage)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from cli_runner import run
from db.engine import make_engine
from db.schema import quarantine, usage_records

ROOT = Path(__file__).resolve().parent.parent
#: Every usage column but the row's id and its ingest time, which differ from one replay to another.
COMPARED = [c for c in usage_records.c if c.name not in ("id", "ingested_at")]


def prepared(capsys: pytest.CaptureFixture[str], url: str) -> str:
    """``url`` migrated, with the sample rate card and deployments imported."""
    assert run(capsys, "--db", url, "db", "upgrade")[0] == 0
    assert run(capsys, "--db", url, "rates", "import", str(ROOT / "samples" / "rates.csv"))[0] == 0
    assert run(capsys, "--db", url, "deployments", "import", str(ROOT / "samples" / "deployments.csv"))[0] == 0
    return url


def stored(url: str) -> tuple[list[tuple], list[tuple]]:
    """Every usage row (but its id and ingest time) and every quarantine row's digest, reason and partition."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(sa.select(*COMPARED).order_by(usage_records.c.request_id))]
            bad = [tuple(r) for r in conn.execute(
                sa.select(quarantine.c.raw_sha256, quarantine.c.reason, quarantine.c.source_partition)
                .order_by(quarantine.c.raw_sha256, quarantine.c.source_partition))]
    finally:
        engine.dispose()
    return rows, bad
