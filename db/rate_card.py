"""The rate card in SQL: the ``rates`` and ``deployments`` tables, read as one ``RateCard`` and imported
by key (``metering rates import``, ``metering deployments import``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from db.schema import deployments, rates
from metering.model import DeploymentMapping, Rate
from metering.price.pricing import RateCard
from metering.price.rate_card import KIND_RATE_COLUMNS, UNIT_RATE_COLUMNS, rate_key


def load_rate_card(conn: sa.Connection) -> RateCard:
    """The whole rate card and deployment mappings (small tables), indexed for lookups."""
    card_rates = [
        Rate(
            id=row.id,
            model=row.model,
            deployment_type=row.deployment_type,
            region=row.region,
            effective_from=row.effective_from,
            effective_to=row.effective_to,
            currency=row.currency,
            input_per_1m=row.input_per_1m,
            cached_input_per_1m=row.cached_input_per_1m,
            output_per_1m=row.output_per_1m,
            min_prompt_tokens=row.min_prompt_tokens,
            service_tier=row.service_tier,
            **{column: getattr(row, column) for column in (*KIND_RATE_COLUMNS, *UNIT_RATE_COLUMNS)},
        )
        for row in conn.execute(sa.select(rates).order_by(rates.c.id))
    ]
    mappings = [
        DeploymentMapping(
            deployment=row.deployment,
            model=row.model,
            deployment_type=row.deployment_type,
            backend_id=row.backend_id,
        )
        for row in conn.execute(sa.select(deployments).order_by(deployments.c.id))
    ]
    return RateCard(card_rates, mappings)


def replace_rates(conn: sa.Connection, new_rates: Sequence[Rate]) -> tuple[int, int]:
    """Import rates: a row with the same model, type, region and ``effective_from`` as a stored one
    replaces it; others are added. Returns (added, replaced). Overlaps are checked by the caller.

    "Same" is ``metering.rates.rate_key``, the key the overlap check and pricing use: model names
    compare case-insensitively and regions as normalised (``East US 2`` = ``eastus2``). Matching the
    stored spelling exactly instead would add a second row for one key, and the older price would
    keep winning at lookup."""
    by_key: dict[tuple[Any, datetime], int] = {}
    for stored in stored_rates(conn):
        if stored.id is not None:
            by_key.setdefault((rate_key(stored), stored.effective_from), stored.id)
    added = replaced = 0
    for rate in new_rates:
        values = {k: v for k, v in asdict(rate).items() if k != "id"}
        existing = by_key.get((rate_key(rate), rate.effective_from))
        if existing is None:
            result = conn.execute(rates.insert().values(**values))
            by_key[(rate_key(rate), rate.effective_from)] = result.inserted_primary_key[0]
            added += 1
        else:
            conn.execute(rates.update().where(rates.c.id == existing).values(**values))
            replaced += 1
    return added, replaced


def stored_rates(conn: sa.Connection) -> list[Rate]:
    return load_rate_card(conn).rates


def replace_deployments(conn: sa.Connection, mappings: Sequence[DeploymentMapping]) -> int:
    """Upsert deployment mappings keyed by (backend_id, deployment)."""
    for mapping in mappings:
        backend = (
            deployments.c.backend_id.is_(None) if mapping.backend_id is None
            else deployments.c.backend_id == mapping.backend_id
        )
        conn.execute(deployments.delete().where(sa.and_(backend, deployments.c.deployment == mapping.deployment)))
        conn.execute(deployments.insert().values(**asdict(mapping)))
    return len(mappings)
