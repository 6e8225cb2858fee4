"""Mapping files: deployments (name → model and deployment type) and subscriptions (→ business unit).

CSV headers (DESIGN.md):
  deployments:   backend_id,deployment,model,deployment_type
  subscriptions: subscription_id,business_unit,cost_center,owner
"""

from __future__ import annotations

import csv
import io

from metering.model import DEFAULT_DEPLOYMENT_TYPE, DEPLOYMENT_TYPES, DeploymentMapping
from metering.price.rate_card import RateCardError, check_text, unknown_columns

DEPLOYMENTS_CSV_COLUMNS = ("backend_id", "deployment", "model", "deployment_type")
SUBSCRIPTIONS_CSV_COLUMNS = ("subscription_id", "business_unit", "cost_center", "owner")
# What the ``deployments`` and ``subscriptions`` columns hold (db/schema.py; a test keeps them in
# step): a longer value, or a NUL, is bad input with its line number, never a database error.
TEXT_LIMITS = {
    "backend_id": 200, "deployment": 200, "model": 200, "deployment_type": 32,
    "subscription_id": 200, "business_unit": 200, "cost_center": 100, "owner": 200,
}


class MappingFileError(RateCardError):
    """A mapping file that cannot be imported; ``problems`` lists every reason."""


def _rows(text: str, required: tuple[str, ...], expected: tuple[str, ...], source: str) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise MappingFileError([f"{source}: missing column(s) {', '.join(missing)}; expected header: {','.join(expected)}"])
    unknown = unknown_columns(header, expected)
    if unknown:
        raise MappingFileError([f"{source}: {unknown}"])
    reader.fieldnames = header
    rows = []
    problems = []
    for line_number, row in enumerate(reader, start=2):
        cleaned = {k: (v or "").strip() for k, v in row.items() if k}
        if not any(cleaned.values()):
            continue
        try:
            for column, value in cleaned.items():
                check_text(column, value, TEXT_LIMITS[column])
        except ValueError as exc:
            problems.append(f"{source} line {line_number}: {exc}")
            continue
        rows.append((line_number, cleaned))
    if problems:
        raise MappingFileError(problems)
    return rows


def parse_deployments_csv(text: str, source: str = "deployments CSV") -> list[DeploymentMapping]:
    """Deployment mappings; an empty ``backend_id`` applies to every backend."""
    problems: list[str] = []
    found: list[DeploymentMapping] = []
    for line_number, row in _rows(text, ("deployment",), DEPLOYMENTS_CSV_COLUMNS, source):
        deployment_type = (row.get("deployment_type") or DEFAULT_DEPLOYMENT_TYPE).lower()
        if not row.get("deployment"):
            problems.append(f"{source} line {line_number}: deployment is empty")
        elif deployment_type not in DEPLOYMENT_TYPES:
            problems.append(
                f"{source} line {line_number}: deployment_type {deployment_type!r} is not one of {', '.join(DEPLOYMENT_TYPES)}"
            )
        else:
            found.append(DeploymentMapping(
                deployment=row["deployment"],
                model=row.get("model") or None,
                deployment_type=deployment_type,
                backend_id=row.get("backend_id") or None,
            ))
    if problems:
        raise MappingFileError(problems)
    return found


def parse_subscriptions_csv(text: str, source: str = "subscriptions CSV") -> list[dict[str, str | None]]:
    """Subscription → business unit, cost center and owner."""
    problems: list[str] = []
    found: list[dict[str, str | None]] = []
    for line_number, row in _rows(text, ("subscription_id",), SUBSCRIPTIONS_CSV_COLUMNS, source):
        if not row.get("subscription_id"):
            problems.append(f"{source} line {line_number}: subscription_id is empty")
            continue
        found.append({column: row.get(column) or None for column in SUBSCRIPTIONS_CSV_COLUMNS})
    if problems:
        raise MappingFileError(problems)
    return found
