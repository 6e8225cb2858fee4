"""The reporting views carry every dimension `metering report --by` offers, and allocated PTU cost.

``v_usage_daily`` gains ``product``, ``user_id``, ``api``, ``endpoint`` and ``backend_region`` (so
per-user, per-product or per-API showback works in Power BI), and ``provisioned_requests`` /
``provisioned_tokens`` (PTU usage per day, as ``v_chargeback_monthly`` has per month). Its grain
becomes day × subscription × product × user × API × endpoint × deployment × model × deployment
type × backend region × rate. The new columns come last, so the existing ones keep their order;
values are as stored (NULL when the gateway sent none), like ``subscription_id`` and ``deployment``.

``ptu_allocations`` (new) holds a month's provisioned-throughput (PTU) capacity cost as allocated to
subscriptions by ``metering ptu allocate`` (the same whole-cent split as ``metering report
--ptu-costs``). ``v_chargeback_monthly`` keeps its grain and columns and gains ``ptu_deployment``
and ``ptu_cost``: its usage rows have ``ptu_cost`` 0, and each allocation is one more row (model
NULL, every count and pay-as-you-go cost 0, so nothing is counted twice), so that the view's total
charge is ``SUM(total_cost) + SUM(ptu_cost)`` by business unit, cost center and subscription.

Revision ID: 0006
Revises: 0004 (chained to 0004 so this branch stands alone; re-chain onto 0005 when both are merged)
Create Date: 2026-11-30
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

UNMAPPED = "'(unmapped)'"
ESTIMATED = "u.usage_source = 'estimated'"
INCOMPLETE = "u.usage_source IN ('partial', 'none') AND u.price_status <> 'not_billable'"
UNPRICED = "u.price_status IN ('no_rate', 'no_usage')"
NOT_BILLABLE = "u.price_status = 'not_billable'"
PROVISIONED = "u.deployment_type = 'provisioned'"
UNALLOCATED = "'(unallocated)'"


def Text(length: int) -> sa.types.TypeEngine:
    """Frozen copies of the column types (a migration must not change when application code does)."""
    return sa.Unicode(length)


def Money() -> sa.types.TypeEngine:
    return sa.Numeric(28, 12).with_variant(sa.String(48), "sqlite")


def Timestamp() -> sa.types.TypeEngine:
    from sqlalchemy.dialects import mssql

    return sa.DateTime().with_variant(mssql.DATETIME2(), "mssql")


def _day(dialect: str) -> str:
    return "date(u.event_time)" if dialect == "sqlite" else "CAST(u.event_time AS DATE)"


def _month(dialect: str) -> str:
    if dialect == "sqlite":
        return "strftime('%Y-%m', u.event_time)"
    if dialect == "mssql":
        return "CONVERT(CHAR(7), u.event_time, 126)"
    return "to_char(u.event_time, 'YYYY-MM')"


def _count(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


def _tokens(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN u.total_tokens ELSE 0 END)"


def _usage_daily(dialect: str) -> str:
    day, month = _day(dialect), _month(dialect)
    return f"""
CREATE VIEW v_usage_daily AS
SELECT
    {day} AS usage_date,
    u.subscription_id AS subscription_id,
    MAX(u.subscription_name) AS subscription_name,
    COALESCE(s.business_unit, {UNMAPPED}) AS business_unit,
    COALESCE(s.cost_center, {UNMAPPED}) AS cost_center,
    u.deployment AS deployment,
    u.model AS model,
    u.deployment_type AS deployment_type,
    COUNT(*) AS requests,
    SUM(u.prompt_tokens) AS prompt_tokens,
    SUM(u.cached_tokens) AS cached_tokens,
    SUM(u.completion_tokens) AS completion_tokens,
    SUM(u.reasoning_tokens) AS reasoning_tokens,
    SUM(u.total_tokens) AS total_tokens,
    SUM(u.input_cost) AS input_cost,
    SUM(u.cached_input_cost) AS cached_input_cost,
    SUM(u.output_cost) AS output_cost,
    SUM(u.total_cost) AS total_cost,
    MAX(u.currency) AS currency,
    {_count(ESTIMATED)} AS estimated_requests,
    {_count(INCOMPLETE)} AS incomplete_requests,
    {_count(UNPRICED)} AS unpriced_requests,
    {_tokens(UNPRICED)} AS unpriced_tokens,
    {month} AS usage_month,
    u.rate_id AS rate_id,
    {_tokens(ESTIMATED)} AS estimated_tokens,
    {_tokens(INCOMPLETE)} AS incomplete_tokens,
    {_count(NOT_BILLABLE)} AS not_billable_requests,
    u.product AS product,
    u.user_id AS user_id,
    u.api AS api,
    u.endpoint AS endpoint,
    u.backend_region AS backend_region,
    {_count(PROVISIONED)} AS provisioned_requests,
    {_tokens(PROVISIONED)} AS provisioned_tokens
FROM usage_records u
LEFT JOIN subscriptions s ON s.subscription_id = u.subscription_id
GROUP BY {day}, {month}, u.subscription_id, COALESCE(s.business_unit, {UNMAPPED}), COALESCE(s.cost_center, {UNMAPPED}),
         u.deployment, u.model, u.deployment_type, u.rate_id, u.product, u.user_id, u.api, u.endpoint,
         u.backend_region
"""


def _chargeback_monthly(dialect: str) -> str:
    month = _month(dialect)
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
    0 AS ptu_cost
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
    NULL AS subscription_name,
    NULL AS model,
    0 AS requests, 0 AS prompt_tokens, 0 AS cached_tokens, 0 AS completion_tokens, 0 AS total_tokens,
    0 AS total_cost,
    a.currency AS currency,
    0 AS estimated_requests, 0 AS unpriced_requests, 0 AS reasoning_tokens,
    0 AS input_cost, 0 AS cached_input_cost, 0 AS output_cost,
    0 AS estimated_tokens, 0 AS incomplete_requests, 0 AS incomplete_tokens, 0 AS unpriced_tokens,
    0 AS not_billable_requests, 0 AS provisioned_requests, 0 AS provisioned_tokens,
    a.deployment AS ptu_deployment,
    a.allocated_cost AS ptu_cost
FROM ptu_allocations a
LEFT JOIN subscriptions s ON s.subscription_id = a.subscription_id
"""


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    op.create_table(
        "ptu_allocations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("deployment", Text(200), nullable=False),
        sa.Column("backend_id", Text(200)),
        sa.Column("subscription_id", Text(200)),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("allocated_cost", Money(), nullable=False),
        sa.Column("monthly_cost", Money(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("allocated_at", Timestamp(), nullable=False),
    )
    op.create_index("ix_ptu_allocations_month", "ptu_allocations", ["month"])
    op.execute("DROP VIEW v_chargeback_monthly")
    op.execute("DROP VIEW v_usage_daily")
    op.execute(_usage_daily(dialect))
    op.execute(_chargeback_monthly(dialect))


def downgrade() -> None:
    """Back to the views of revision 0004 (their SQL lives, frozen, in that migration)."""
    previous = importlib.import_module("migrations.versions.0004_reporting_views")
    dialect = op.get_context().dialect.name
    op.execute("DROP VIEW v_chargeback_monthly")
    op.execute("DROP VIEW v_usage_daily")
    op.execute(previous._usage_daily(dialect))
    op.execute(previous._chargeback_monthly(dialect))
    op.drop_index("ix_ptu_allocations_month", table_name="ptu_allocations")
    op.drop_table("ptu_allocations")
