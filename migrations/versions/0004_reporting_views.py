"""Reporting views for Power BI: same grain and columns as before, plus what a star model needs.

``v_usage_daily`` (day × subscription × deployment × model × deployment type × rate) gains
``usage_month`` (to relate to the monthly view and a date table), ``rate_id`` (a clean key to the
``rates`` dimension), ``estimated_tokens``, ``incomplete_tokens`` and ``not_billable_requests``.
``v_chargeback_monthly`` (month × business unit × cost center × subscription × model) gains
``reasoning_tokens``, the cost by token kind, the data-quality token counts, ``not_billable_*``
and ``provisioned_*`` (PTU) counts.

``incomplete_requests`` now counts *billable* requests with partial or no usage only, as
``metering report`` does: a throttled (429) or failed request has no usage and costs nothing, so it
is not a data-quality problem.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0004"
down_revision = "0003"
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
    {_count(NOT_BILLABLE)} AS not_billable_requests
FROM usage_records u
LEFT JOIN subscriptions s ON s.subscription_id = u.subscription_id
GROUP BY {day}, {month}, u.subscription_id, COALESCE(s.business_unit, {UNMAPPED}), COALESCE(s.cost_center, {UNMAPPED}),
         u.deployment, u.model, u.deployment_type, u.rate_id
"""


def _chargeback_monthly(dialect: str) -> str:
    month = _month(dialect)
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
    {_tokens(PROVISIONED)} AS provisioned_tokens
FROM usage_records u
LEFT JOIN subscriptions s ON s.subscription_id = u.subscription_id
GROUP BY {month}, COALESCE(s.business_unit, {UNMAPPED}), COALESCE(s.cost_center, {UNMAPPED}),
         u.subscription_id, u.model
"""


def _drop_views() -> None:
    op.execute("DROP VIEW v_chargeback_monthly")
    op.execute("DROP VIEW v_usage_daily")


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    _drop_views()
    op.execute(_usage_daily(dialect))
    op.execute(_chargeback_monthly(dialect))


def downgrade() -> None:
    """Back to the views of revision 0001 (their SQL lives, frozen, in that migration)."""
    initial = importlib.import_module("migrations.versions.0001_initial")
    dialect = op.get_context().dialect.name
    _drop_views()
    op.execute(initial._usage_daily(dialect))
    op.execute(initial._chargeback_monthly(dialect))
