"""``metering reprice``: recompute the price of stored rows in batches, writing only what changed.

Rows are read in keyset order (``id > last id``, ``batch_size`` at a time), each batch in its own
transaction, so a run over millions of rows holds no long lock and can be stopped and rerun. Each
row is repriced by ``metering.reprice.reprice_row`` (the same pricing as ingest) and updated only
when one of its price columns actually differs, so a second run changes nothing, and only while its
tokens are still those the price was computed from (``INPUT_COLUMNS``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from db.schema import usage_records
from db.rate_card import load_rate_card
from metering.price.pricing import RateCard
from metering.price.reprice import (
    PRICE_COLUMNS, REPRICE_BATCH_SIZE, STORED_COLUMNS, RepriceSummary, StoredUsage, changed_columns, reprice_row,
)


_u = usage_records
_SELECT = sa.select(*(_u.c[name] for name in STORED_COLUMNS))
# The price is computed from these columns as read. A concurrent writer may change them between the
# read and the write (the Function merging APIM LLM-log usage: reported tokens, repriced by itself);
# the update then matches nothing instead of writing a price computed from the old tokens.
INPUT_COLUMNS = ("usage_source", "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens",
                 "audio_prompt_tokens", "cache_write_tokens")
_UPDATE = (
    _u.update()
    .where(_u.c.id == sa.bindparam("row_id"),
           *(_u.c[name] == sa.bindparam(f"old_{name}") for name in INPUT_COLUMNS))
    .values({name: sa.bindparam(f"new_{name}") for name in PRICE_COLUMNS})
)


def reprice(
    engine: Engine,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    card: RateCard | None = None,
    batch_size: int = REPRICE_BATCH_SIZE,
    dry_run: bool = False,
    on_batch: Callable[[RepriceSummary], None] | None = None,
) -> RepriceSummary:
    """Reprice rows with ``since <= event_time < until`` (open ends when ``None``) under ``card``
    (default: the stored card and mappings, read once). ``dry_run`` computes but writes nothing."""
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    if card is None:
        with engine.connect() as conn:
            card = load_rate_card(conn)
    summary = RepriceSummary()
    last_id: int | None = None
    while True:
        query = _SELECT.order_by(_u.c.id).limit(batch_size)
        if last_id is not None:
            query = query.where(_u.c.id > last_id)
        if since is not None:
            query = query.where(_u.c.event_time >= since)
        if until is not None:
            query = query.where(_u.c.event_time < until)
        with engine.begin() as conn:  # one transaction per batch
            rows = [StoredUsage(**row._mapping) for row in conn.execute(query)]
            if not rows:
                break
            updates = []
            for row in rows:
                new = reprice_row(row, card)
                changes = changed_columns(row, new)
                summary.add(row, new, changes)
                if changes:
                    updates.append({"row_id": row.id, **{f"old_{k}": getattr(row, k) for k in INPUT_COLUMNS},
                                    **{f"new_{k}": v for k, v in new.columns().items()}})
            if updates and not dry_run:
                conn.execute(_UPDATE, updates)
        summary.batches += 1
        last_id = rows[-1].id
        if on_batch is not None:
            on_batch(summary)
    return summary
