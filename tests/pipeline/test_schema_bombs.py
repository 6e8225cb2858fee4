"""Issue #26, item 1: one event with a hostile tool schema never stalls, crashes or fails its batch.

The estimator renders schemas within a budget (metering/usage/tokens.py, ``_SchemaBudget``), so each
of the attacker's shapes, at the attacker's sizes, is an estimated row like any other, and the
events around it in the batch are stored too. (Time and memory per event: bench/bench_schema_bombs.py.)
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from db.schema import quarantine, usage_records
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.model import RawEvent
from schema_bombs import BOMBS, bomb_event


@pytest.mark.parametrize("responses", [False, True], ids=["chat", "responses"])
def test_a_batch_with_every_schema_bomb_is_stored_whole(engine, responses):
    bombs = [RawEvent(bomb_event(f"bomb-{name}", build(), responses=responses)) for name, build in BOMBS.items()]
    totals = Ingestor(engine).ingest([RawEvent(encode(v1_event("before"))), *bombs, RawEvent(encode(v1_event("after")))])
    assert (totals.inserted, totals.quarantined) == (len(BOMBS) + 2, 0)
    with engine.connect() as conn:
        rows = {row.request_id: (row.usage_source, row.prompt_tokens) for row in conn.execute(
            sa.select(usage_records.c.request_id, usage_records.c.usage_source, usage_records.c.prompt_tokens))}
        assert conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar() == 0
    bytes_by_id = {f"bomb-{name}": len(raw.body) for name, raw in zip(BOMBS, bombs)}
    for request_id, size in bytes_by_id.items():
        source, prompt = rows[request_id]
        assert source == "estimated"
        assert 0 < prompt <= 8_192 + 4 * size, request_id  # never more than the request's size allows
