"""`GET /api/budget/{subscriptionId}` and the scheduled budget check, called as the Functions host
calls them (azure.functions.HttpRequest), over seven weeks of priced usage."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import azure.functions as func
import pytest
import sqlalchemy as sa

import function_app
from budget_data import AS_OF, BUDGETS_CSV, seed
from db import budgets as budget_db
from db.schema import budget_alerts
from metering.finance.budgets.rules import parse_budgets_csv

NOW = datetime(AS_OF.year, AS_OF.month, AS_OF.day, 15, 30, tzinfo=timezone.utc)


def _configure(engine, monkeypatch):
    monkeypatch.setenv("METERING_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    function_app.reset_ingestor()
    seed(engine)
    rows = [{"scope": b.scope, "scope_id": b.scope_id, "amount": b.amount, "currency": b.currency,
             "alert_at": ",".join(map(str, b.alert_at)), "action": b.action} for b in parse_budgets_csv(BUDGETS_CSV)]
    with engine.begin() as conn:
        budget_db.replace_budgets(conn, rows, NOW)


@pytest.fixture
def budgeted(engine, monkeypatch):
    """SQLite and PostgreSQL."""
    _configure(engine, monkeypatch)
    yield engine
    function_app.reset_ingestor()


@pytest.fixture
def budgeted_sqlite(sqlite_engine, monkeypatch):
    _configure(sqlite_engine, monkeypatch)
    yield sqlite_engine
    function_app.reset_ingestor()


def ask(subscription_id: str) -> tuple[int, dict]:
    req = func.HttpRequest(method="GET", url=f"/api/budget/{subscription_id}", route_params={"subscriptionId": subscription_id},
                           body=b"")
    response = function_app.answer_budget(req, now=NOW)
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


def test_the_gateway_hears_ok_warn_and_blocked(budgeted):
    # forecast: 108.50 + 9 days × 3.50 + Thu 26th at the mean of the last four Thursdays, one of
    # them the 42.00 spike: (3 × 3.50 + 42.00) / 4 = 13.125 → 153.125, rounded half up
    assert ask("sub-care") == (200, {
        "subscription_id": "sub-care", "status": "blocked", "spent": "108.50", "limit": "100.00", "currency": "USD",
        "forecast": "153.13", "period": "2026-11", "budget": "subscription:sub-care", "until": "2026-12-01T00:00:00Z"})
    status, finance = ask("sub-finance")  # Finance's business-unit budget: 81 % with the PTU allocation
    assert (status, finance["status"], finance["spent"], finance["limit"], finance["budget"], finance["until"]) == (
        200, "warn", "162.00", "200.00", "business_unit:Finance", None)
    assert finance["forecast"] == "209.60"
    status, legal = ask("sub-legal")  # CC-3005: far below its 500
    assert (status, legal["status"], legal["budget"], legal["limit"]) == (200, "ok", "cost_center:CC-3005", "500.00")
    assert ask("sub-lab") == (200, {"subscription_id": "sub-lab", "status": "ok", "spent": None, "limit": None,
                                    "currency": None, "forecast": None, "period": "2026-11", "budget": None, "until": None})


def registered() -> dict:
    """The app's functions as the host indexes them (the SDK refuses to index twice in one process,
    so forget the previous indexing first)."""
    function_app.app.functions_bindings = None
    try:
        return {f.get_function_name(): f for f in function_app.app.get_functions()}
    finally:
        function_app.app.functions_bindings = None


def test_the_registered_http_function_is_a_get_route_with_a_function_key(budgeted_sqlite):
    functions = registered()
    trigger = json.loads(functions["budget_status"].get_function_json())["bindings"][0]
    assert trigger["type"] == "httpTrigger" and trigger["route"] == "budget/{subscriptionId}"
    assert trigger["authLevel"].lower() == "function" and [m.lower() for m in trigger["methods"]] == ["get"]
    user_function = functions["budget_status"].get_user_function()
    req = func.HttpRequest(method="GET", url="/api/budget/sub-care", route_params={"subscriptionId": "sub-care"}, body=b"")
    assert json.loads(user_function(req).get_body())["subscription_id"] == "sub-care"
    timer = json.loads(functions["budget_check"].get_function_json())["bindings"][0]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "0 */5 * * * *"


def test_a_database_that_does_not_answer_is_503_so_the_gateway_fails_open(budgeted_sqlite):
    with budgeted_sqlite.begin() as conn:
        conn.execute(sa.text("DROP TABLE budgets"))
    status, body = ask("sub-care")
    assert (status, body) == (503, {"error": "budget status unavailable"})
    req = func.HttpRequest(method="GET", url="/api/budget/", route_params={}, body=b"")
    assert function_app.answer_budget(req, now=NOW).status_code == 400


def test_the_timer_posts_nothing_without_a_webhook_and_records_alerts_with_one(budgeted_sqlite, monkeypatch):
    monkeypatch.delenv("METERING_BUDGET_WEBHOOK_URL", raising=False)
    function_app.run_budget_check(now=NOW)
    with budgeted_sqlite.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(budget_alerts)).scalar() == 0
    monkeypatch.setenv("METERING_BUDGET_WEBHOOK_URL", "http://127.0.0.1:9/closed")  # discard port: refused
    monkeypatch.setattr("metering.finance.budgets.service.time.sleep", lambda seconds: None)
    function_app.run_budget_check(now=NOW)
    with budgeted_sqlite.connect() as conn:
        pending = conn.execute(sa.select(sa.func.count()).where(budget_alerts.c.sent_at.is_(None))).scalar()
    assert pending == 7  # recorded, none lost: the next run sends them


def test_the_timer_posts_nothing_with_an_unknown_webhook_format(budgeted_sqlite, monkeypatch, caplog):
    monkeypatch.setenv("METERING_BUDGET_WEBHOOK_URL", "http://127.0.0.1:9/closed")
    monkeypatch.setenv("METERING_BUDGET_WEBHOOK_FORMAT", "adaptivecard")
    function_app.run_budget_check(now=NOW)
    with budgeted_sqlite.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(budget_alerts)).scalar() == 0
    assert "METERING_BUDGET_WEBHOOK_FORMAT='adaptivecard' is not one of text, teams" in caplog.text


# ---------------------------------------------------------------- a hung database, hostile ids (issue #26, item 2)


class SilentServer:
    """A listener that accepts every connection and never says a word (a hung database or proxy)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


@pytest.mark.postgres
def test_a_database_that_accepts_and_never_answers_is_503_within_the_deadline(monkeypatch, postgres_server_url):
    import time

    silent = SilentServer()
    monkeypatch.setenv("METERING_DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{silent.port}/test")
    function_app.reset_ingestor()
    try:
        for _ in range(6):  # more than the lookup threads: none stays blocked on the Function's side
            started = time.monotonic()
            assert ask("sub-care") == (503, {"error": "budget status unavailable"})
            assert time.monotonic() - started < 2.0  # the gateway's default aoai-budget-timeout-seconds
    finally:
        function_app.reset_ingestor()
        silent.close()


@pytest.mark.parametrize("subscription_id", ["sub\x00care", "sub\ud800care", "sub\x1b[2Jcare"])
def test_an_id_with_nul_control_or_lone_surrogate_is_400_without_a_traceback(budgeted, subscription_id, caplog):
    assert ask(subscription_id)[0] == 400
    assert not [r for r in caplog.records if r.exc_info]
