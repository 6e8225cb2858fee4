"""The PTU rows of ``v_chargeback_monthly`` name their subscription, and ``ptu_cost`` is a number on
every engine.

Until now an allocation row (migration 0006) had ``subscription_name`` NULL, so Power BI showed the
allocated PTU cost of a subscription under a blank name beside its usage; it now carries the name
the gateway sent for that subscription in that month (as the usage rows do). ``ptu_cost`` was
``0`` on usage rows and the stored decimal *text* on allocation rows on SQLite (a column of two
types, which Power BI and ODBC refuse to load as a number): it is ``NUMERIC(28, 12)`` on SQL Server
and PostgreSQL, and a number (``REAL``, as every summed cost of the SQLite views) on SQLite; the
allocated costs are whole cents, which a binary float holds to the cent. The view keeps its grain
and columns.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UNMAPPED = "'(unmapped)'"
ESTIMATED = "u.usage_source = 'estimated'"
INCOMPLETE = "u.usage_source IN ('partial', 'none') AND u.price_status <> 'not_billable'"
UNPRICED = "u.price_status IN ('no_rate', 'no_usage')"
NOT_BILLABLE = "u.price_status = 'not_billable'"
PROVISIONED = "u.deployment_type = 'provisioned'"
UNALLOCATED = "'(unallocated)'"


def _module(name: str):
    """An earlier revision (frozen): 0005 has the token kinds, 0006 the view this one replaces."""
    return importlib.import_module(f"migrations.versions.{name}")


def _month(dialect: str, column: str) -> str:
    if dialect == "sqlite":
        return f"strftime('%Y-%m', {column})"
    if dialect == "mssql":
        return f"CONVERT(CHAR(7), {column}, 126)"
    return f"to_char({column}, 'YYYY-MM')"


def _money(dialect: str, value: str) -> str:
    return f"CAST({value} AS REAL)" if dialect == "sqlite" else f"CAST({value} AS NUMERIC(28, 12))"


def _count(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


def _tokens(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN u.total_tokens ELSE 0 END)"


def _chargeback_monthly(dialect: str) -> str:
    month = _month(dialect, "u.event_time")
    kinds_module = _module("0005_token_kinds")
    kinds = ",\n    ".join(f"SUM(u.{name}) AS {name}" for name in kinds_module.TOKEN_KINDS)
    no_kinds = ", ".join(f"0 AS {name}" for name in kinds_module.TOKEN_KINDS)
    allocated_to = f"CASE WHEN a.subscription_id = {UNALLOCATED} THEN {UNALLOCATED} ELSE {UNMAPPED} END"
    return f"""
CREATE VIEW v_chargeback_monthly AS
SELECT
    {month} AS month,
    COALESCE(s.business_unit, {UNMAPPED}) AS business_unit,
    COALESCE(s.cost_center, {UNMAPPED}) AS cost_center,
    u.subscription_id AS subscription_id,
    MAX(u.subscription_name) AS subscription_name,
    u.model AS model,
    COUNT(*) AS requests,
    SUM(u.prompt_tokens) AS prompt_tokens,
    SUM(u.cached_tokens) AS cached_tokens,
    SUM(u.completion_tokens) AS completion_tokens,
    SUM(u.total_tokens) AS total_tokens,
    SUM(u.total_cost) AS total_cost,
    MAX(u.currency) AS currency,
    {_count(ESTIMATED)} AS estimated_requests,
    {_count(UNPRICED)} AS unpriced_requests,
    SUM(u.reasoning_tokens) AS reasoning_tokens,
    SUM(u.input_cost) AS input_cost,
    SUM(u.cached_input_cost) AS cached_input_cost,
    SUM(u.output_cost) AS output_cost,
    {_tokens(ESTIMATED)} AS estimated_tokens,
    {_count(INCOMPLETE)} AS incomplete_requests,
    {_tokens(INCOMPLETE)} AS incomplete_tokens,
    {_tokens(UNPRICED)} AS unpriced_tokens,
    {_count(NOT_BILLABLE)} AS not_billable_requests,
    {_count(PROVISIONED)} AS provisioned_requests,
    {_tokens(PROVISIONED)} AS provisioned_tokens,
    NULL AS ptu_deployment,
    {_money(dialect, "0")} AS ptu_cost,
    {kinds},
    {kinds_module.FALLBACK_PRICED} AS fallback_priced_requests,
    {kinds_module.PRIORITY} AS priority_requests
FROM usage_records u
LEFT JOIN subscriptions s ON s.subscription_id = u.subscription_id
GROUP BY {month}, COALESCE(s.business_unit, {UNMAPPED}), COALESCE(s.cost_center, {UNMAPPED}),
         u.subscription_id, u.model
UNION ALL
SELECT
    a.month AS month,
    COALESCE(s.business_unit, {allocated_to}) AS business_unit,
    COALESCE(s.cost_center, {allocated_to}) AS cost_center,
    a.subscription_id AS subscription_id,
    n.subscription_name AS subscription_name,
    NULL AS model,
    0 AS requests, 0 AS prompt_tokens, 0 AS cached_tokens, 0 AS completion_tokens, 0 AS total_tokens,
    0 AS total_cost,
    a.currency AS currency,
    0 AS estimated_requests, 0 AS unpriced_requests, 0 AS reasoning_tokens,
    0 AS input_cost, 0 AS cached_input_cost, 0 AS output_cost,
    0 AS estimated_tokens, 0 AS incomplete_requests, 0 AS incomplete_tokens, 0 AS unpriced_tokens,
    0 AS not_billable_requests, 0 AS provisioned_requests, 0 AS provisioned_tokens,
    a.deployment AS ptu_deployment,
    {_money(dialect, "a.allocated_cost")} AS ptu_cost,
    {no_kinds}, 0 AS fallback_priced_requests, 0 AS priority_requests
FROM ptu_allocations a
LEFT JOIN subscriptions s ON s.subscription_id = a.subscription_id
LEFT JOIN (SELECT u.subscription_id AS subscription_id, {month} AS month, MAX(u.subscription_name) AS subscription_name
           FROM usage_records u
           WHERE u.subscription_id IS NOT NULL
           GROUP BY u.subscription_id, {month}) n
       ON n.subscription_id = a.subscription_id AND n.month = a.month
"""


def upgrade() -> None:
    op.execute("DROP VIEW v_chargeback_monthly")
    op.execute(_chargeback_monthly(op.get_context().dialect.name))


def downgrade() -> None:
    """Back to the view of revision 0006 (its SQL lives, frozen, in that migration)."""
    op.execute("DROP VIEW v_chargeback_monthly")
    op.execute(_module("0006_reporting_views_dimensions")._chargeback_monthly(op.get_context().dialect.name))
