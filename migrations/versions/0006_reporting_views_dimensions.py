"""The daily reporting view carries every dimension `metering report --by` offers.

``v_usage_daily`` gains ``product``, ``user_id``, ``api``, ``endpoint`` and ``backend_region`` (so
per-user, per-product or per-API showback works in Power BI), and ``provisioned_requests`` /
``provisioned_tokens`` (PTU usage per day, as ``v_chargeback_monthly`` has per month). Its grain
becomes day × subscription × product × user × API × endpoint × deployment × model × deployment
type × backend region × rate. The new columns come last, so the existing ones keep their order;
values are as stored (NULL when the gateway sent none), like ``subscription_id`` and ``deployment``.
``v_chargeback_monthly`` keeps its grain.

Revision ID: 0006
Revises: 0004 (chained to 0004 so this branch stands alone; re-chain onto 0005 when both are merged)
Create Date: 2026-11-30
"""

from __future__ import annotations

import importlib

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


def upgrade() -> None:
    op.execute("DROP VIEW v_usage_daily")
    op.execute(_usage_daily(op.get_context().dialect.name))


def downgrade() -> None:
    """Back to the daily view of revision 0004 (its SQL lives, frozen, in that migration)."""
    previous = importlib.import_module("migrations.versions.0004_reporting_views")
    op.execute("DROP VIEW v_usage_daily")
    op.execute(previous._usage_daily(op.get_context().dialect.name))
