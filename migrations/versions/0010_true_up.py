"""The stored true-up, and the bill and the true-up as Power BI reads them (issue 25).

``true_up_allocations`` (new): a month's chargeback trued up to the Azure bill, one row per
subscription × bill meter (``resource_id`` × ``meter``), plus one row per subscription × PTU
deployment (``rule`` ``ptu``) and the unattributed lines (``subscription_id`` NULL: a bill line of a
resource no backend maps to, or a meter nobody metered). Each row: the subscription's metered cost,
its PTU share, the adjustment and the final charge (``final_charge = metered_cost + ptu_cost +
adjustment``; whole cents, and the month's final charges add up to the bill exactly); ``rule`` and
``reason`` say how the adjustment was decided (and why a charge is negative). ``metering true-up``
replaces a month's rows; the unique key keeps a line from being stored twice.

``backends`` gains ``owner_subscription_id``: the subscription charged for a bill line of that
resource which no metered row explains (else such a line stays unattributed). ``bill_lines`` gains
``service_tier`` (``priority`` for a priority-processing meter), set on import and filled here for
the lines already imported.

Views: ``v_true_up_monthly`` (month × subscription, with the unattributed row: metered cost, PTU
cost, adjustment, final charge) and ``v_bill_daily`` (the imported bill lines with their month).
Money columns are exact on every engine: NUMERIC on SQL Server and PostgreSQL; on SQLite, whose
numbers are floats, the stored decimal text is summed exactly (integer and twelve-decimal fraction
parts apart) and returned as decimal text.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UNMAPPED = "'(unmapped)'"
UNATTRIBUTED = "'(unattributed)'"
MONEY_COLUMNS = ("metered_cost", "ptu_cost", "adjustment", "final_charge")
SCALE = 12
ONE = 10 ** SCALE


# Frozen copies of the column types (a migration must not change when application code does).
def Text(length: int) -> sa.types.TypeEngine:
    return sa.Unicode(length)


def Money() -> sa.types.TypeEngine:
    return sa.Numeric(28, 12).with_variant(sa.String(48), "sqlite")


def Timestamp() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(mssql.DATETIME2(), "mssql")


def _month(dialect: str, column: str) -> str:
    if dialect == "sqlite":
        return f"strftime('%Y-%m', {column})"
    if dialect == "mssql":
        return f"CONVERT(CHAR(7), {column}, 126)"
    return f"to_char({column}, 'YYYY-MM')"


def _sqlite_parts(column: str) -> tuple[str, str]:
    """Decimal text (``-12.5``, as the application stores money on SQLite) as two exact integers:
    the signed integer part and the signed fraction in units of 10^-12."""
    sign = f"(CASE WHEN substr({column}, 1, 1) = '-' THEN -1 ELSE 1 END)"
    bare = f"ltrim({column}, '-')"
    dot = f"instr({bare}, '.')"
    whole = f"{sign} * CAST(CASE WHEN {dot} > 0 THEN substr({bare}, 1, {dot} - 1) ELSE {bare} END AS INTEGER)"
    fraction = (f"{sign} * (CASE WHEN {dot} > 0 THEN CAST(substr(substr({bare}, {dot} + 1) || '{'0' * SCALE}', 1, {SCALE})"
                f" AS INTEGER) ELSE 0 END)")
    return whole, fraction


def _true_up_monthly(dialect: str) -> str:
    keys = "t.month, t.subscription_id, t.currency"
    if dialect != "sqlite":
        sums = ",\n        ".join(f"SUM(t.{name}) AS {name}" for name in MONEY_COLUMNS)
        money = ", ".join(f"g.{name} AS {name}" for name in MONEY_COLUMNS)
        grouped = f"""(SELECT {keys}, MAX(t.subscription_name) AS subscription_name, SUM(t.tokens) AS tokens,
        {sums}
    FROM true_up_allocations t
    GROUP BY {keys}) g"""
    else:
        # Exact sums of decimal text: integer parts and 10^-12 fractions summed apart, then carried
        # (n), signs made to agree (g), and written back as decimal text without trailing zeros.
        sums = []
        for name in MONEY_COLUMNS:
            whole, fraction = _sqlite_parts(f"t.{name}")
            sums += [f"SUM({whole}) AS {name}_i", f"SUM({fraction}) AS {name}_f"]
        carried = ", ".join(f"s.{n}_i + s.{n}_f / {ONE} AS {n}_i, s.{n}_f % {ONE} AS {n}_f" for n in MONEY_COLUMNS)
        agreed = ", ".join(
            f"n.{n}_i - (CASE WHEN n.{n}_i > 0 AND n.{n}_f < 0 THEN 1 WHEN n.{n}_i < 0 AND n.{n}_f > 0 THEN -1 ELSE 0 END)"
            f" AS {n}_i, n.{n}_f + (CASE WHEN n.{n}_i > 0 AND n.{n}_f < 0 THEN {ONE} WHEN n.{n}_i < 0 AND n.{n}_f > 0"
            f" THEN -{ONE} ELSE 0 END) AS {n}_f" for n in MONEY_COLUMNS)
        money = ", ".join(
            f"rtrim(rtrim((CASE WHEN g.{n}_i < 0 OR g.{n}_f < 0 THEN '-' ELSE '' END) || abs(g.{n}_i) || '.' || "
            f"printf('%0{SCALE}d', abs(g.{n}_f)), '0'), '.') AS {n}" for n in MONEY_COLUMNS)
        grouped = f"""(SELECT n.month, n.subscription_id, n.currency, n.subscription_name, n.tokens,
        {agreed}
    FROM (SELECT s.month, s.subscription_id, s.currency, s.subscription_name, s.tokens, {carried}
          FROM (SELECT {keys}, MAX(t.subscription_name) AS subscription_name, SUM(t.tokens) AS tokens,
                       {", ".join(sums)}
                FROM true_up_allocations t
                GROUP BY {keys}) s) n) g"""
    return f"""
CREATE VIEW v_true_up_monthly AS
SELECT
    g.month AS month,
    g.subscription_id AS subscription_id,
    g.subscription_name AS subscription_name,
    CASE WHEN g.subscription_id IS NULL THEN {UNATTRIBUTED} ELSE COALESCE(s.business_unit, {UNMAPPED}) END AS business_unit,
    CASE WHEN g.subscription_id IS NULL THEN {UNATTRIBUTED} ELSE COALESCE(s.cost_center, {UNMAPPED}) END AS cost_center,
    {money},
    g.currency AS currency,
    g.tokens AS tokens
FROM {grouped}
LEFT JOIN subscriptions s ON s.subscription_id = g.subscription_id
"""


def _bill_daily(dialect: str) -> str:
    return f"""
CREATE VIEW v_bill_daily AS
SELECT
    b.day AS day,
    {_month(dialect, 'b.day')} AS month,
    b.resource_id AS resource_id,
    b.meter_name AS meter_name,
    b.meter_category AS meter_category,
    b.meter_subcategory AS meter_subcategory,
    b.model AS model,
    b.token_kind AS token_kind,
    b.deployment_type AS deployment_type,
    b.service_tier AS service_tier,
    b.quantity AS quantity,
    b.unit AS unit,
    b.tokens AS tokens,
    b.cost AS cost,
    b.currency AS currency
FROM bill_lines b
"""


def _priority_meter(meter_name: str, token_kind: str | None) -> bool:
    """Frozen reading of a priority-processing meter name (``5 pp inp Gl 1M Tokens``)."""
    if token_kind is None or token_kind == "capacity":
        return False
    return bool({"pp", "priority"} & set(re.split(r"[\s\-_]+", meter_name.lower())))


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    op.create_table(
        "true_up_allocations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("subscription_id", Text(200)),
        sa.Column("subscription_name", Text(200)),
        sa.Column("resource_id", Text(400), nullable=False),
        sa.Column("meter", Text(400), nullable=False),
        sa.Column("meter_name", Text(400)),
        sa.Column("model", Text(200)),
        sa.Column("token_kind", sa.String(32)),
        sa.Column("deployment_type", sa.String(32)),
        sa.Column("service_tier", sa.String(32)),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("metered_cost", Money(), nullable=False),
        sa.Column("ptu_cost", Money(), nullable=False),
        sa.Column("adjustment", Money(), nullable=False),
        sa.Column("final_charge", Money(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("reason", Text(1000)),
        sa.Column("computed_at", Timestamp(), nullable=False),
        sa.UniqueConstraint("month", "subscription_id", "resource_id", "meter", name="uq_true_up_allocations_line"),
    )
    op.create_index("ix_true_up_allocations_month", "true_up_allocations", ["month"])
    with op.batch_alter_table("backends") as batch:
        batch.add_column(sa.Column("owner_subscription_id", Text(200)))
    with op.batch_alter_table("bill_lines") as batch:
        batch.add_column(sa.Column("service_tier", sa.String(32)))
    if not op.get_context().as_sql:  # offline DDL (Azure SQL scripts): there are no lines to fill yet
        _fill_service_tiers(op.get_bind())
    op.execute(_true_up_monthly(dialect))
    op.execute(_bill_daily(dialect))


def _fill_service_tiers(conn: sa.Connection) -> None:
    lines = sa.table("bill_lines", sa.column("id"), sa.column("meter_name"), sa.column("token_kind"),
                     sa.column("service_tier"))
    priority = [row.id for row in conn.execute(sa.select(lines.c.id, lines.c.meter_name, lines.c.token_kind))
                if _priority_meter(row.meter_name, row.token_kind)]
    for start in range(0, len(priority), 500):
        conn.execute(lines.update().where(lines.c.id.in_(priority[start:start + 500])).values(service_tier="priority"))


def downgrade() -> None:
    op.execute("DROP VIEW v_bill_daily")
    op.execute("DROP VIEW v_true_up_monthly")
    with op.batch_alter_table("bill_lines") as batch:
        batch.drop_column("service_tier")
    with op.batch_alter_table("backends") as batch:
        batch.drop_column("owner_subscription_id")
    op.drop_index("ix_true_up_allocations_month", table_name="true_up_allocations")
    op.drop_table("true_up_allocations")
