"""Migrations: upgrade/downgrade on SQLite and PostgreSQL, models agree with them, SQL Server DDL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.dialects import mssql

from db.engine import make_engine
from db.migrate import alembic_config, head_revision, offline_sql, upgrade
from db.schema import metadata, quarantine, usage_records
from db.store import existing_request_ids_statement

TABLES = {
    "usage_records", "rates", "deployments", "subscriptions", "quarantine", "batch_jobs", "budgets", "budget_alerts",
    "backends", "bill_lines", "ptu_allocations", "true_up_allocations",
}
VIEWS = {"v_usage_daily", "v_chargeback_monthly", "v_true_up_monthly", "v_bill_daily"}


def test_upgrade_creates_tables_and_views_and_is_repeatable(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    upgrade(engine)  # already at head: nothing to do, no error
    inspector = sa.inspect(engine)
    assert TABLES <= set(inspector.get_table_names())
    assert VIEWS <= set(inspector.get_view_names())
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head_revision()
    engine.dispose()


def test_models_match_the_migrations(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), metadata)
    assert diff == []
    engine.dispose()


def test_downgrade_removes_everything(db_url):
    from alembic import command

    engine = make_engine(db_url)
    upgrade(engine)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    inspector = sa.inspect(engine)
    assert not (TABLES & set(inspector.get_table_names()))
    assert not (VIEWS & set(inspector.get_view_names()))
    engine.dispose()


def test_offline_sql_for_azure_sql():
    ddl = offline_sql("mssql+pyodbc://")
    assert "CREATE TABLE usage_records" in ddl
    assert "request_id NVARCHAR(200) COLLATE Latin1_General_100_BIN2 NOT NULL" in ddl
    assert "total_cost NUMERIC(28, 12)" in ddl
    assert "raw VARBINARY(max) NOT NULL" in ddl
    assert "event_time DATETIME2 NOT NULL" in ddl and "detail NVARCHAR(max) NULL" in ddl
    assert "CONSTRAINT uq_usage_records_request_id UNIQUE (request_id)" in ddl
    assert "CREATE VIEW v_chargeback_monthly" in ddl and "CONVERT(CHAR(7), u.event_time, 126)" in ddl
    assert "CREATE VIEW v_usage_daily" in ddl and "CAST(u.event_time AS DATE)" in ddl
    assert "CONSTRAINT uq_budgets_scope UNIQUE (scope, scope_id)" in ddl and "amount NUMERIC(28, 12) NOT NULL" in ddl
    assert "CONSTRAINT uq_budget_alerts_alert_key UNIQUE (alert_key)" in ddl and "payload NVARCHAR(max) NOT NULL" in ddl
    # migration 0010: the stored true-up, exact money, and the two views Power BI reads
    assert "CREATE TABLE true_up_allocations" in ddl and "final_charge NUMERIC(28, 12) NOT NULL" in ddl
    assert "CONSTRAINT uq_true_up_allocations_line UNIQUE (month, subscription_id, resource_id, meter)" in ddl
    assert "CREATE VIEW v_true_up_monthly" in ddl and "SUM(t.final_charge) AS final_charge" in ddl
    assert "CREATE VIEW v_bill_daily" in ddl and "CONVERT(CHAR(7), b.day, 126) AS month" in ddl
    assert "ALTER TABLE backends ADD owner_subscription_id NVARCHAR(200)" in ddl


def test_offline_sql_for_postgresql_and_sqlite():
    assert "to_char(u.event_time, 'YYYY-MM')" in offline_sql("postgresql+psycopg://")
    assert "strftime('%Y-%m', u.event_time)" in offline_sql("sqlite://")


def test_sql_server_statements_compile():
    dialect = mssql.dialect()
    check = str(existing_request_ids_statement("mssql", ["a", "b"]).compile(dialect=dialect))
    assert "usage_records WITH (UPDLOCK, HOLDLOCK)" in check
    insert = str(usage_records.insert().compile(dialect=dialect))
    assert insert.startswith("INSERT INTO usage_records (")
    assert "ingested_at" in insert
    assert str(quarantine.insert().compile(dialect=dialect)).startswith("INSERT INTO quarantine")


def test_0010_fills_the_service_tier_of_bill_lines_already_imported(db_url):
    """Lines imported before 0010 get their service tier from the meter name (``pp``: priority)."""
    from alembic import command

    engine = make_engine(db_url)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0009")
        lines = sa.table("bill_lines", *(sa.column(c) for c in (
            "day", "resource_id", "meter_name", "token_kind", "quantity", "cost", "currency", "source_format",
            "imported_at")))
        common = {"day": "2026-10-01", "resource_id": "/subscriptions/x/accounts/a", "quantity": "1", "cost": "1",
                  "currency": "USD", "source_format": "focus", "imported_at": "2026-10-02 00:00:00"}
        if conn.dialect.name != "sqlite":
            from datetime import date, datetime

            common |= {"day": date(2026, 10, 1), "imported_at": datetime(2026, 10, 2)}
        conn.execute(lines.insert(), [
            {**common, "meter_name": "gpt-4.1 pp Outp Gl 1M Tokens", "token_kind": "output"},
            {**common, "meter_name": "gpt-4.1-0414-Outp-glbl", "token_kind": "output"},
            {**common, "meter_name": "Provisioned Managed Global Hourly", "token_kind": "capacity"},
        ])
        command.upgrade(config, "head")
        tiers = dict(conn.execute(sa.text("SELECT meter_name, service_tier FROM bill_lines")).all())
    engine.dispose()
    assert tiers == {"gpt-4.1 pp Outp Gl 1M Tokens": "priority", "gpt-4.1-0414-Outp-glbl": None,
                     "Provisioned Managed Global Hourly": None}
