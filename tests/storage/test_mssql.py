"""SQL Server (Azure SQL) without a server: every statement the code runs, compiled as pyodbc runs it.

The code paths run against a recording connection whose dialect is ``mssql+pyodbc`` with pyodbc's
``?`` parameters; each statement is compiled as SQLAlchemy would send it (IN lists expanded) and
checked for what SQL Server rejects although SQLite and PostgreSQL accept it: a bound parameter in
GROUP BY (each ``?`` is a separate ``@Pn``, so SELECT and GROUP BY no longer match, error 8120), a
non-aggregated SELECT expression missing from GROUP BY, LIMIT, TRUE/FALSE, more than 2,100
parameters. The offline DDL and the compiled statements are parsed as T-SQL by sqlglot, which finds
syntax errors (sqlglot is lenient: LIMIT or ``ADD COLUMN`` parse, hence the explicit checks).
What this cannot show: plans, locking behaviour, collation at run time, pyodbc's parameter binding.
"""

from __future__ import annotations

import io
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.dialects.mssql import pyodbc as mssql_pyodbc
from sqlalchemy.schema import CreateTable

from db import budgets as budget_db
from db import bill as bill_db
from db import rate_card as rate_card_store
from db import subscriptions as subscription_store
from db import quarantine as quarantine_db
from db import queries
from db import reprice as reprice_db
from db import store
from db.migrate import alembic_config, offline_sql
from db.schema import metadata, usage_records
from metering.price.meters import Backend, BillLine
from metering.model import RawEvent
from metering.pipeline import process_batch
from metering.price.pricing import RateCard
from tests.events import encode, v1_event
from tests.llm_records import envelope, llm_record

sqlglot = pytest.importorskip("sqlglot")
exp = sqlglot.exp

DIALECT = mssql_pyodbc.dialect(paramstyle="qmark")  # what the pyodbc DBAPI uses
MAX_PARAMETERS = 2100
T0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
T1 = datetime(2026, 11, 1, tzinfo=timezone.utc)


class _Result:
    rowcount = 1
    inserted_primary_key = (1,)

    def __iter__(self):
        return iter(())

    def scalars(self):
        return iter(())

    def all(self):
        return []

    def first(self):
        return None

    def scalar(self):
        return None

    def one(self):
        return (0, 0)


class Recorder:
    """A stand-in for a Connection (and an Engine) on SQL Server: compiles and records, returns nothing."""

    dialect = DIALECT

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.parameters: list[int] = []

    def execution_options(self, **_: Any) -> Recorder:
        return self

    def execute(self, statement: Any, parameters: Any = None) -> _Result:
        many = isinstance(parameters, list)
        first = (parameters[0] if many else parameters) or {}
        column_keys = list(first) if isinstance(statement, (sa.Insert, sa.Update)) and first else None
        compiled = statement.compile(dialect=DIALECT, column_keys=column_keys, for_executemany=many,
                                     compile_kwargs={"render_postcompile": True})
        text = str(compiled)
        self.sql.append(text)
        self.parameters.append(text.count("?"))
        return _Result()

    @contextmanager
    def connect(self):
        yield self

    begin = connect


def _outcome():
    ids = [f"6f1c2d3e-0000-4000-8000-{n:012d}" for n in range(2500)]  # > 2,100: IN lists are chunked
    raws = [RawEvent(encode(v1_event(request_id)), "0", n) for n, request_id in enumerate(ids)]
    raws.append(RawEvent(b"{not json", "0", 9999))
    raws.append(RawEvent(envelope(*[llm_record(request_id) for request_id in ids[:1200]]), "1", 1))
    return process_batch(raws, RateCard([], []))


@pytest.fixture(scope="module")
def runtime_sql() -> list[str]:
    """Every statement of the write path, the reports, quarantine and reprice, as sent to SQL Server."""
    rec = Recorder()
    outcome = _outcome()
    assert outcome.records and outcome.quarantined and outcome.llm_usage
    store.store_batch(rec, outcome, now=T0)
    rate_card_store.load_rate_card(rec)
    rate_card_store.replace_deployments(rec, [])
    subscription_store.replace_subscriptions(rec, [{"subscription_id": "s", "business_unit": "b", "cost_center": None,
                                       "owner": None}])
    store.totals(rec)
    everything = list(queries.DIMENSIONS)
    queries.usage_summary(rec, T0, T1, everything)
    queries.usage_summary(rec, None, None, [])
    queries.provisioned_tokens(rec, T0, T1, everything)
    queries.focus_usage(rec, T0, T1)
    queries.subscription_info(rec)
    queries.period_currencies(rec, T0, T1)
    queries.data_models_without_rate(rec, T0, T1)
    quarantine_db.summary(rec, include_resolved=True)
    quarantine_db.rows(rec, reason="invalid_json", limit=10, ids=[1, 2])
    list(quarantine_db.unresolved_pages(rec, reasons=["truncated"], exclude_reasons=["x"], limit=5))
    quarantine_db.count_unresolved(rec, ["truncated"])
    row = quarantine_db.QuarantineRow(1, T0, "truncated", None, None, b"", "0" * 64, None, None, None)
    quarantine_db.mark_resolved(rec, row, T0, "ok")
    quarantine_db.mark_still_failing(rec, row, "invalid_json", "bad", T0)
    quarantine_db.purge_resolved(rec, T0)
    reprice_db.reprice(rec, T0, T1, card=RateCard([], []))
    rec.execute(reprice_db._SELECT.order_by(usage_records.c.id).limit(5000).where(usage_records.c.id > 7))
    rec.execute(reprice_db._UPDATE, [{"row_id": 1, **{f"new_{k}": None for k in reprice_db.PRICE_COLUMNS}}])
    budget_db.replace_budgets(rec, [{"scope": "subscription", "scope_id": "s", "amount": Decimal("100"), "currency": "USD",
                                     "alert_at": "50,80,100", "action": "block"}], T0)
    budget_db.all_budgets(rec)
    budget_db.subscription_scopes(rec, "s")
    budget_db.budgets_for(rec, "s", "b", "c")
    budget_db.subscriptions_in(rec, "business_unit", "b")
    budget_db.daily_spend(rec, T0, T1)
    budget_db.daily_spend(rec, T0, T1, ["s", "t"])
    budget_db.daily_spend(rec, T0, T1, [f"sub-{n}" for n in range(2500)])  # a business unit of 2,500: chunked
    budget_db.fixed_costs(rec, "2026-10", ["s"])
    budget_db.record_alerts(rec, [{"alert_key": "k", "kind": "threshold", "month": "2026-10", "payload": "{}"}], T0)
    budget_db.pending_alerts(rec)
    budget_db.claim(rec, 1, T0, T1)
    budget_db.mark_sent(rec, 1, T0, 1)
    budget_db.mark_failed(rec, 1, "down", 4)
    bill_db.replace_backends(rec, [Backend("aoai-sc", "/subscriptions/x/accounts/aoai-sc", "swedencentral")])
    bill_db.load_backends(rec)
    bill_db.metered_backends(rec, T0, T1)
    bill_db.metered_usage(rec, T0, T1)
    bill_db.load_bill_lines(rec, T0.date(), T1.date())
    line = BillLine(T0.date(), "/subscriptions/x/accounts/aoai-sc", "gpt-4o-1120-Inp-glbl", "Foundry Models", "Azure OpenAI",
                    "gpt-4o-2024-11-20", "input", "global", Decimal("0.5"), "1M Tokens", 500_000, Decimal("1.25"), "USD",
                    "focus")
    bill_db.store_bill_lines(rec, [line], "bill.csv", now=T0)
    return rec.sql


def _views_and_batches(sql: str) -> list[str]:
    return [batch.strip() for batch in re.split(r"^GO$", sql, flags=re.M) if batch.strip()]


def _downgrade_sql() -> str:
    buffer = io.StringIO()
    config = alembic_config("mssql+pyodbc://")
    config.output_buffer = buffer
    command.downgrade(config, "head:base", sql=True)
    return buffer.getvalue()


def _parse(sql: str) -> list[Any]:
    return sqlglot.parse(sql, read="tsql", error_level=sqlglot.ErrorLevel.RAISE)


def group_by_problems(sql: str) -> list[str]:
    """T-SQL's rule: each non-aggregated SELECT expression must appear, as written, in GROUP BY; and
    GROUP BY must hold no parameter (pyodbc sends each ``?`` as its own ``@Pn``)."""
    problems = []
    for tree in _parse(sql):
        for select in tree.find_all(exp.Select):
            group = select.args.get("group")
            grouped = {g.sql("tsql") for g in group.expressions} if group else set()
            if group and any(g.find(exp.Placeholder, exp.Parameter) for g in group.expressions):
                problems.append(f"parameter in GROUP BY: {group.sql('tsql')}")
            has_aggregate = any(e.find(exp.AggFunc) for e in select.expressions)
            if not group and not has_aggregate:
                continue
            for projection in select.expressions:
                inner = projection.this if isinstance(projection, exp.Alias) else projection
                if inner.find(exp.AggFunc) or isinstance(inner, (exp.Literal, exp.Null, exp.Placeholder, exp.Star)):
                    continue
                if inner.sql("tsql") not in grouped:
                    problems.append(f"{inner.sql('tsql')} is neither aggregated nor in GROUP BY")
    return problems


# --------------------------------------------------------------------------- the checker itself


def test_the_group_by_check_catches_what_sql_server_rejects():
    assert group_by_problems("SELECT coalesce(m, ?) AS m, count(*) FROM t GROUP BY coalesce(m, ?)")
    assert group_by_problems("SELECT a, b, count(*) FROM t GROUP BY a")
    assert group_by_problems("SELECT a, count(*) FROM t")
    assert not group_by_problems("SELECT coalesce(m, '(x)') AS m, sum(CASE WHEN a = ? THEN 1 ELSE 0 END) "
                                 "FROM t GROUP BY coalesce(m, '(x)')")
    assert not group_by_problems("SELECT m, NULL AS n, 0 AS z, count(*) FROM t GROUP BY m")  # constants are fine
    with pytest.raises(sqlglot.errors.ParseError):
        _parse("CREATE TABLE t (id BIGINT NOT NULL IDENTITY, PRIMARY KEY (id)")


# --------------------------------------------------------------------------- DDL (Alembic offline SQL)


@pytest.mark.parametrize("which", ["upgrade", "downgrade"])
def test_offline_ddl_parses_as_t_sql_batch_by_batch(which):
    sql = offline_sql("mssql+pyodbc://") if which == "upgrade" else _downgrade_sql()
    batches = _views_and_batches(sql)
    assert len(batches) > 10
    for batch in batches:
        _parse(batch)  # raises on a syntax error
        body = re.sub(r"^--.*$", "", batch, flags=re.M).strip()
        if "CREATE VIEW" in body:
            assert body.startswith("CREATE VIEW"), "CREATE VIEW must be the first statement of its batch"
            assert "ORDER BY" not in body
            assert group_by_problems(body) == []
        assert not re.search(r"\b(TRUE|FALSE|LIMIT|ADD COLUMN)\b", body), body[:200]


def test_offline_ddl_types_keys_and_collation():
    ddl = offline_sql("mssql+pyodbc://")
    for table in ("usage_records", "quarantine", "llm_usage", "budget_alerts"):
        assert re.search(rf"CREATE TABLE {table} \(\n    id BIGINT NOT NULL IDENTITY, ", ddl)
    assert "id INTEGER NOT NULL IDENTITY" in ddl  # rates, deployments
    assert ddl.count("request_id NVARCHAR(200) COLLATE Latin1_General_100_BIN2 NOT NULL") == 3  # usage, llm, batch_jobs
    assert "batch_id NVARCHAR(200) COLLATE Latin1_General_100_BIN2 NOT NULL" in ddl
    assert "ALTER TABLE usage_records ALTER COLUMN cache_write_tokens BIGINT NOT NULL" in ddl  # no default constraint
    assert "request_id NVARCHAR(200) COLLATE Latin1_General_100_BIN2 NULL" in ddl  # quarantine
    for constraint in ("uq_usage_records_request_id UNIQUE (request_id)", "uq_llm_usage_request_id UNIQUE (request_id)",
                       "uq_quarantine_raw_sha256 UNIQUE (raw_sha256)"):
        assert f"CONSTRAINT {constraint}" in ddl
    assert "is_streaming BIT NOT NULL" in ddl and "truncated BIT NOT NULL" in ddl
    assert "input_per_1m NUMERIC(18, 6) NOT NULL" in ddl and "output_cost NUMERIC(28, 12) NULL" in ddl
    assert "raw NVARCHAR(max) NULL" in ddl  # llm_usage
    assert "CONSTRAINT uq_bill_lines_day_resource_meter UNIQUE (day, resource_id, meter_name)" in ddl
    assert "resource_id NVARCHAR(400) NOT NULL" in ddl and "day DATE NOT NULL" in ddl  # backends, bill_lines
    assert "ALTER TABLE rates ADD min_prompt_tokens INTEGER NULL;" in ddl
    assert " DATETIME " not in ddl and "TIMESTAMP" not in ddl  # DATETIME2 only: DATETIME keeps 1/300 s
    assert "DEFAULT" not in ddl  # no default constraints: DROP COLUMN needs no constraint name


def test_models_compile_to_the_migrations_ddl_on_sql_server():
    ddl = offline_sql("mssql+pyodbc://")
    for table in metadata.sorted_tables:
        for line in str(CreateTable(table).compile(dialect=DIALECT)).splitlines():
            line = line.strip().rstrip(",").strip()
            if line and not line.startswith(("CREATE TABLE", ")", "PRIMARY KEY", "min_prompt_tokens")):
                assert line in ddl, f"{table.name}: {line}"


# --------------------------------------------------------------------------- run-time statements


def test_budget_spend_of_a_subscription_is_an_index_range_and_grouped_without_parameters(runtime_sql):
    """The gateway's question (one subscription's month) seeks ix_usage_records_subscription_time:
    an IN list on subscription_id and a range on event_time, grouped by constants only."""
    spend = [sql for sql in runtime_sql if "AS unpriced_requests" in sql and "usage_records.subscription_id IN (?, ?)" in sql]
    assert len(spend) == 1
    assert "usage_records.event_time >= ? AND usage_records.event_time < ?" in spend[0]
    assert group_by_problems(spend[0]) == []


def test_every_run_time_statement_parses_as_t_sql(runtime_sql):
    assert len(runtime_sql) > 30
    for sql in runtime_sql:
        _parse(sql)
        assert "POSTCOMPILE" not in sql
        assert not re.search(r"\b(LIMIT|TRUE|FALSE)\b", sql, re.I), sql[:200]


def test_group_by_holds_every_select_expression_and_no_parameter(runtime_sql):
    grouped = [sql for sql in runtime_sql if "GROUP BY" in sql]
    assert len(grouped) >= 7
    for sql in grouped:
        assert group_by_problems(sql) == [], sql


def test_no_statement_exceeds_the_parameter_limit(runtime_sql):
    biggest_in_list = max(sql.count("?") for sql in runtime_sql if " IN (" in sql)
    assert 900 <= biggest_in_list <= MAX_PARAMETERS  # the 2,500-id batch was chunked, not sent at once
    assert all(sql.count("?") <= MAX_PARAMETERS for sql in runtime_sql)


def test_lock_and_check_reads_take_update_and_range_locks(runtime_sql):
    for table in ("usage_records", "llm_usage", "quarantine"):
        checks = [sql for sql in runtime_sql if f"FROM {table} WITH (UPDLOCK, HOLDLOCK)" in sql]
        assert checks, table
        assert all(" IN (" in sql for sql in checks)
    inserts = [sql for sql in runtime_sql if sql.startswith("INSERT INTO usage_records")]
    assert inserts and not re.search(r"[(\s]id,", inserts[0].split("VALUES")[0])  # IDENTITY left to the server


def test_limits_compile_to_top_with_order_by(runtime_sql):
    limited = [sql for sql in runtime_sql if re.search(r"SELECT TOP", sql)]
    assert len(limited) >= 4  # has_pending probe, quarantine rows and pages, reprice pages
    for sql in limited:
        assert "OFFSET" not in sql
        if "llm_usage.status" not in sql:  # the existence probe needs no order
            assert "ORDER BY" in sql
    assert any("SELECT TOP 5000" in sql and "usage_records.id > ?" in sql and "ORDER BY usage_records.id" in sql
               for sql in runtime_sql)


def test_reports_use_built_ins_constants_and_sum_money_in_the_grouped_query(runtime_sql):
    summary = next(sql for sql in runtime_sql if "AS estimated_requests" in sql and "GROUP BY" in sql)
    assert "convert(CHAR(7), usage_records.event_time, 126) AS month" in summary
    assert "convert(CHAR(10), usage_records.event_time, 126) AS day" in summary
    assert "format(" not in " ".join(runtime_sql).lower()  # FORMAT is CLR, one call per row
    assert "coalesce(subscriptions.business_unit, '(unmapped)')" in summary
    assert "sum(usage_records.total_cost)" in summary  # exact NUMERIC sum, in the same grouped query
    focus = next(sql for sql in runtime_sql if "AS estimated_input_tokens" in sql)
    assert "sum(usage_records.input_cost)" in focus and "GROUP BY" in focus
    # no second query streams costs to be matched to groups in Python (a case-insensitive collation
    # groups 'GPT4o' with 'gpt4o', so that match would fail)
    assert not any("total_cost IS NOT NULL" in sql or "input_cost IS NOT NULL" in sql for sql in runtime_sql)
    rates_list = next(sql for sql in runtime_sql if "usage_records.price_status = ?" in sql and "GROUP BY" in sql)
    assert rates_list.count("coalesce(usage_records.model, '(unknown)')") == 2
    quarantine_summary = next(sql for sql in runtime_sql if "GROUP BY quarantine.reason" in sql)
    assert "sum(datalength(quarantine.raw))" in quarantine_summary


def test_utc_instants_bind_as_naive_utc_datetime2_and_money_as_decimal():
    event_time = usage_records.c.event_time.type
    assert event_time.load_dialect_impl(DIALECT).__class__.__name__ == "DATETIME2"
    aware = datetime(2026, 10, 15, 11, 30, 0, 123456, tzinfo=timezone.utc).astimezone()
    bound = event_time.process_bind_param(aware, DIALECT)
    assert bound == datetime(2026, 10, 15, 11, 30, 0, 123456) and bound.tzinfo is None
    with pytest.raises(ValueError):
        event_time.process_bind_param(datetime(2026, 10, 15), DIALECT)
    assert usage_records.c.total_cost.type.process_bind_param(Decimal("0.000001234567"), DIALECT) == \
        Decimal("0.000001234567")
    assert str(usage_records.c.total_cost.type.dialect_impl(DIALECT).compile(dialect=DIALECT)) == "NUMERIC(28, 12)"


def test_reconciliation_sums_money_in_the_grouped_query_and_keys_bill_lines_by_date(runtime_sql):
    metered = next(sql for sql in runtime_sql if "AS cached_input_tokens" in sql)
    assert "convert(CHAR(10), usage_records.event_time, 126)" in metered and "GROUP BY" in metered
    assert "sum(usage_records.input_cost)" in metered
    assert any(sql.startswith("DELETE FROM bill_lines WHERE bill_lines.resource_id = ?") for sql in runtime_sql)
    assert any(sql.startswith("INSERT INTO bill_lines (day, resource_id, meter_name") for sql in runtime_sql)
