"""`metering budgets check` posts each threshold crossed and each anomaly to a webhook exactly once,
however often it runs, and an alert the webhook missed is delivered by a later run: a real HTTP
server on 127.0.0.1 stands for the Teams/Slack incoming webhook."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from budget_data import AS_OF, BUDGETS_CSV, seed
from cli_runner import run
from db.schema import budget_alerts
from metering.finance.budget_service import check

NOW = datetime(AS_OF.year, AS_OF.month, AS_OF.day, 18, tzinfo=timezone.utc)
EXPECTED = {  # (type, scope or kind, id, threshold or day)
    ("budget_threshold", "subscription", "sub-care", 50), ("budget_threshold", "subscription", "sub-care", 80),
    ("budget_threshold", "subscription", "sub-care", 100), ("budget_threshold", "business_unit", "Finance", 50),
    ("budget_threshold", "business_unit", "Finance", 80),
    ("spend_anomaly", "subscription", "sub-care", "2026-11-12"), ("spend_anomaly", "model", "gpt-4o-2024-11-20", "2026-11-12"),
}


class Webhook:
    """An incoming webhook: records what it accepted; ``fail_next`` requests get 503 first."""

    def __init__(self) -> None:
        self.accepted: list[dict] = []
        self.refused = 0
        self.fail_next = 0
        self.delay = 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(hook.delay)
                if hook.fail_next:
                    hook.fail_next -= 1
                    hook.refused += 1
                    self.send_response(503)
                else:
                    assert self.headers["Content-Type"].startswith("application/json")
                    hook.accepted.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()
                self.wfile.write(b"1")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhookb2/3f6c2b9e/IncomingWebhook/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def keys(self) -> list[tuple]:
        found = []
        for message in self.accepted:
            alert = message["alert"]
            if alert["type"] == "budget_threshold":
                found.append((alert["type"], alert["scope"], alert["scope_id"], alert["threshold"]))
            else:
                found.append((alert["type"], alert["kind"], alert["key"], alert["day"]))
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def budgeted(sqlite_engine, sqlite_url, tmp_path, capsys):
    seed(sqlite_engine)
    budgets = tmp_path / "budgets.csv"
    budgets.write_text(BUDGETS_CSV)
    assert run(capsys, "--db", sqlite_url, "budgets", "import", str(budgets))[0] == 0
    return sqlite_engine


def test_check_every_five_minutes_sends_each_alert_once(budgeted, sqlite_url, webhook, capsys):
    code, out, err = run(capsys, "--db", sqlite_url, "budgets", "check", "--webhook", webhook.url, "--as-of", AS_OF.isoformat())
    assert code == 0, err
    assert out.startswith("7 new alert(s); 7 sent to http://127.0.0.1:")
    assert "secret-token" not in out  # the webhook's token is never printed
    code, out, _ = run(capsys, "--db", sqlite_url, "budgets", "check", "--webhook", webhook.url, "--as-of", AS_OF.isoformat())
    assert (code, out.split(";")[0]) == (0, "0 new alert(s)")
    assert sorted(webhook.keys(), key=str) == sorted(EXPECTED, key=str)  # each exactly once
    care = next(m for m in webhook.accepted if m["alert"].get("scope_id") == "sub-care" and m["alert"]["threshold"] == 100)
    assert care["text"].startswith("Budget subscription sub-care: 108.5% of 100.00 USD spent in 2026-11")
    assert "the gateway blocks it" in care["text"]
    assert care["alert"]["spent"] == "108.50" and care["alert"]["status"] == "exceeded"


def test_an_alert_the_webhook_missed_is_sent_by_the_next_run(budgeted, webhook):
    waits: list[float] = []
    webhook.fail_next = 10_000  # down for the whole first run
    first = check(budgeted, webhook.url, now=NOW, attempts=3, backoff_seconds=0.5, sleep=waits.append)
    assert (first.new, first.sent, first.pending) == (7, 0, 7)
    assert waits == [0.5, 1.0] and webhook.accepted == [] and webhook.refused == 3  # then it stops trying
    assert "HTTP 503" in first.errors[0] and "secret-token" not in first.errors[0]
    with budgeted.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(budget_alerts.c.sent_at.is_(None))).scalar() == 7

    webhook.fail_next = 2  # fails twice more, then recovers: the first alert's retries carry it
    second = check(budgeted, webhook.url, now=NOW, attempts=3, backoff_seconds=0, sleep=waits.append)
    assert (second.new, second.sent, second.pending) == (0, 7, 0)
    assert sorted(webhook.keys(), key=str) == sorted(EXPECTED, key=str)
    third = check(budgeted, webhook.url, now=NOW, sleep=waits.append)
    assert (third.new, third.sent, third.pending) == (0, 0, 0) and len(webhook.accepted) == 7
    with budgeted.connect() as conn:
        attempts = conn.execute(sa.select(budget_alerts.c.attempts).order_by(budget_alerts.c.id)).scalars().all()
    assert attempts == [3 + 3] + [1] * 6  # 3 failed in run 1; then 503, 503, 200; the others at the first try


def test_two_checks_at_once_post_each_alert_once(budgeted, webhook):
    """The timer and someone at the command line, at the same moment, against a slow webhook."""
    webhook.delay = 0.1
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: check(budgeted, webhook.url, now=NOW), range(2)))
    assert sum(r.sent for r in results) == 7 and sum(r.pending for r in results) == 0
    assert sorted(webhook.keys(), key=str) == sorted(EXPECTED, key=str)  # none twice


def test_an_alert_leased_by_a_check_that_died_is_sent_when_the_lease_expires(budgeted, webhook):
    from db import budgets as budget_db

    webhook.fail_next = 1
    assert check(budgeted, webhook.url, now=NOW, attempts=1).pending == 7
    first = None
    with budgeted.begin() as conn:
        first = budget_db.pending_alerts(conn)[0]["id"]
        now = datetime.now(timezone.utc)
        assert budget_db.claim(conn, first, now, now + timedelta(minutes=5))  # another check is posting it
    assert check(budgeted, webhook.url, now=NOW).sent == 6
    with budgeted.begin() as conn:  # that check died: its lease runs out
        conn.execute(budget_alerts.update().values(claimed_until=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert check(budgeted, webhook.url, now=NOW).sent == 1
    assert sorted(webhook.keys(), key=str) == sorted(EXPECTED, key=str)


def test_check_without_a_webhook_is_bad_input(budgeted, sqlite_url, capsys, monkeypatch):
    monkeypatch.delenv("METERING_BUDGET_WEBHOOK_URL", raising=False)
    code, _, err = run(capsys, "--db", sqlite_url, "budgets", "check")
    assert code == 2 and "METERING_BUDGET_WEBHOOK_URL" in err


def test_an_unreachable_webhook_leaves_alerts_pending_and_exits_1(budgeted, sqlite_url, capsys):
    closed = Webhook()
    url = closed.url
    closed.close()
    code, out, _ = run(capsys, "--db", sqlite_url, "budgets", "check", "--webhook", url, "--as-of", AS_OF.isoformat(),
                       "--attempts", "2", "--backoff", "0")
    assert code == 1 and "7 pending" in out and "will be sent on the next run" in out
