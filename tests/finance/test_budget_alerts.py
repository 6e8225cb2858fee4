"""`metering budgets check` posts each threshold crossed and each anomaly to a webhook exactly once,
however often it runs, and an alert the webhook missed is delivered by a later run: a real HTTP
server on 127.0.0.1 stands for the Teams/Slack incoming webhook."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from budget_data import AS_OF, BUDGETS_CSV, RATES, SUBSCRIPTIONS, USAGE, seed
from cli_runner import run
from db import budgets as budget_db
from db import rate_card as rate_card_store
from db import subscriptions as subscription_store
from db.schema import budget_alerts
from events import encode, v1_event
from metering.finance.budgets.alerts import markdown_literal
from metering.finance.budgets.service import check
from metering.finance.budgets.rules import alert_months
from metering.ingest import Ingestor
from metering.model import RawEvent
from metering.price.rate_card import parse_rates_csv

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
        self.bodies: list[bytes] = []
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
                    hook.bodies.append(body)
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
            if alert["type"] == "budget_threshold":  # one message: its threshold and those crossed with it
                for threshold in (alert["threshold"], *alert.get("also_crossed", ())):
                    found.append((alert["type"], alert["scope"], alert["scope_id"], threshold))
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
    assert care["text"].startswith("Budget subscription sub-care: 108.50 USD spent in 2026-11, 108.5% of its 100.00 USD budget")
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
    assert (third.new, third.sent, third.pending) == (0, 0, 0) and len(webhook.accepted) == 4  # 2 budgets, 2 anomalies
    with budgeted.connect() as conn:
        attempts = conn.execute(sa.select(budget_alerts.c.attempts).order_by(budget_alerts.c.id)).scalars().all()
    # the first message (sub-care's 50, 80 and 100 %, one post): 3 failed in run 1, then 503, 503, 200;
    # the other messages at the first try
    assert attempts == [3 + 3] * 3 + [1] * 4


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


# ------------------------------------------------------------------ late spend at a month boundary


def _care_events(day: date, count: int, hour: int, prefix: str = "") -> list[RawEvent]:
    """``count`` requests of sub-care on ``day`` (0.70 USD each), a minute apart from ``hour``:00."""
    return [RawEvent(encode(v1_event(f"care-{prefix}{day.isoformat()}-{n}",
                                     time=f"{day.isoformat()}T{hour + n // 60:02d}:{n % 60:02d}:00Z",
                                     subscription={"id": "sub-care", "name": "Care"}, usage=dict(USAGE))))
            for n in range(count)]


@pytest.fixture
def month_end(sqlite_engine):
    """sub-care spends 2.10 USD a day (3 requests) from 2026-10-17 to 2026-11-30: November ends at
    63.00 of its 100 USD budget (50 % crossed). Its budget alerts at 50, 80 and 100 %."""
    with sqlite_engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(RATES))
        subscription_store.replace_subscriptions(conn, SUBSCRIPTIONS)
        budget_db.replace_budgets(conn, [{"scope": "subscription", "scope_id": "sub-care", "amount": Decimal("100"),
                                          "currency": "USD", "alert_at": "50,80,100", "action": "block"}], NOW)
    events = [e for n in range(45) for e in _care_events(date(2026, 10, 17) + timedelta(days=n), 3, 8)]
    assert Ingestor(sqlite_engine).ingest(events).quarantined == 0
    return sqlite_engine


def test_spend_that_lands_after_midnight_is_alerted_for_the_month_it_belongs_to_once(month_end, webhook):
    """The last check of 30 November runs at 23:55; the evening's spike (55 requests, 38.50 USD, from
    23:00) reaches SQL only after midnight. It is an anomaly of 30 November and takes November past 80
    and 100 %: the checks of 1 December alert both, once, however often they run."""
    last_of_day = check(month_end, webhook.url, now=datetime(2026, 11, 30, 23, 55, tzinfo=timezone.utc))
    assert (last_of_day.new, last_of_day.sent) == (1, 1)  # 63.00 of 100: the 50 % threshold
    assert Ingestor(month_end).ingest(_care_events(date(2026, 11, 30), 55, 23, "late-")).quarantined == 0

    after_midnight = check(month_end, webhook.url, now=datetime(2026, 12, 1, 0, 5, tzinfo=timezone.utc))
    assert (after_midnight.new, after_midnight.sent, after_midnight.pending) == (4, 4, 0)
    for again in (datetime(2026, 12, 1, 0, 10), datetime(2026, 12, 3, 23, 59), datetime(2026, 12, 4, 0, 0)):
        result = check(month_end, webhook.url, now=again.replace(tzinfo=timezone.utc))
        assert (result.new, result.sent, result.pending) == (0, 0, 0)

    assert sorted(webhook.keys(), key=str) == sorted([
        ("budget_threshold", "subscription", "sub-care", 50), ("budget_threshold", "subscription", "sub-care", 80),
        ("budget_threshold", "subscription", "sub-care", 100), ("spend_anomaly", "subscription", "sub-care", "2026-11-30"),
        ("spend_anomaly", "model", "gpt-4o-2024-11-20", "2026-11-30")], key=str)  # each exactly once
    late = next(m for m in webhook.accepted if m["alert"].get("threshold") == 100)
    assert late["text"] == ("Budget subscription sub-care: 101.50 USD spent in 2026-11, 101.5% of its 100.00 USD "
                            "budget; alert threshold 100% (100.00 USD) crossed; the month has ended; status exceeded; "
                            "also crossed: 80%")  # no block: December has begun
    assert late["alert"]["month"] == "2026-11" and late["alert"]["forecast"] == late["alert"]["spent"] == "101.50"
    spike = next(m for m in webhook.accepted if m["alert"].get("kind") == "subscription")
    assert "sub-care spent 40.60 USD on 2026-11-30" in spike["text"]
    with month_end.connect() as conn:
        months = conn.execute(sa.select(budget_alerts.c.month).order_by(budget_alerts.c.id)).scalars().all()
    assert months == ["2026-11"] * 5


def test_the_previous_month_is_reviewed_on_the_first_three_days_only():
    assert alert_months(date(2026, 12, 1)) == ["2026-11", "2026-12"]
    assert alert_months(date(2027, 1, 3)) == ["2026-12", "2027-01"]
    assert alert_months(date(2026, 12, 4)) == ["2026-12"]
    assert alert_months(date(2026, 11, 30)) == ["2026-11"]


# ------------------------------------------------------------------ Teams Workflows (Adaptive Card)


def _cards(webhook: Webhook) -> list[dict]:
    cards = []
    for message in webhook.accepted:
        assert set(message) == {"type", "attachments"} and message["type"] == "message"
        (attachment,) = message["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive" and attachment["contentUrl"] is None
        card = attachment["content"]
        assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
        assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
        cards.append(card)
    return cards


def _facts(card: dict) -> dict[str, str]:
    return {f["title"]: f["value"] for block in card["body"] if block["type"] == "FactSet" for f in block["facts"]}


def _runs(card: dict) -> list[str]:
    return [run["text"] for block in card["body"] if block["type"] == "RichTextBlock" for run in block["inlines"]]


def test_teams_format_posts_an_adaptive_card_per_alert(budgeted, sqlite_url, webhook, capsys):
    code, out, err = run(capsys, "--db", sqlite_url, "budgets", "check", "--webhook", webhook.url, "--as-of",
                         AS_OF.isoformat(), "--webhook-format", "teams")
    assert code == 0, err
    cards = _cards(webhook)
    assert len(cards) == 4  # sub-care (50, 80, 100 %), Finance (50, 80 %) and two anomalies
    care = next(c for c in cards if _runs(c)[0] == "Budget subscription sub-care: 100% threshold crossed in 2026-11")
    assert [b["type"] for b in care["body"]] == ["RichTextBlock", "RichTextBlock", "FactSet"]
    assert _runs(care)[1].startswith("Budget subscription sub-care: 108.50 USD spent in 2026-11, 108.5% of its 100.00 USD budget")
    assert _facts(care) == {"Month": "2026-11", "Threshold": "100%", "Spent": "108.50 USD (108.5%)",
                            "Budget": "100 USD", "Forecast": _facts(care)["Forecast"], "Status": "exceeded",
                            "Action": "block", "Scope": "subscription"}
    assert re.fullmatch(r"1\d\d\.\d\d USD", _facts(care)["Forecast"])
    spike = next(c for c in cards if _runs(c)[0] == "Spend anomaly: subscription sub-care on 2026-11-12")
    assert _facts(spike)["Spend"] == "42.00 USD" and _facts(spike)["Day"] == "2026-11-12"


def test_the_webhook_format_setting_is_read_and_checked(budgeted, sqlite_url, webhook, capsys, monkeypatch):
    monkeypatch.setenv("METERING_BUDGET_WEBHOOK_FORMAT", "adaptive")
    code, _, err = run(capsys, "--db", sqlite_url, "budgets", "check", "--webhook", webhook.url)
    assert code == 2 and "METERING_BUDGET_WEBHOOK_FORMAT='adaptive' is not one of text, teams" in err
    assert webhook.accepted == []
    monkeypatch.setenv("METERING_BUDGET_WEBHOOK_FORMAT", "Teams")
    code, _, err = run(capsys, "--db", sqlite_url, "budgets", "check", "--webhook", webhook.url, "--as-of", AS_OF.isoformat())
    assert code == 0, err
    assert len(_cards(webhook)) == 4


HOSTILE = ('Care"}]}, "x": {"type": "Action.OpenUrl"} **[Approve refund](https://evil.example/pay)** '
           "{{DATE(2017-02-14T06:00:00Z, SHORT)}}\n- injected <at>all</at> _it_ `code` # head")


def test_names_from_data_cannot_inject_card_markup(budgeted, webhook):
    """A business unit named like Markdown, JSON and card markup arrives as literal text: the card
    has exactly its three blocks, the name only in TextRuns (not Markdown), never in a Markdown field."""
    with budgeted.begin() as conn:
        subscription_store.replace_subscriptions(conn, [{"subscription_id": "sub-care", "business_unit": HOSTILE,
                                                         "cost_center": "CC-2210", "owner": None}])
        budget_db.replace_budgets(conn, [{"scope": "business_unit", "scope_id": HOSTILE, "amount": Decimal("100"),
                                          "currency": "USD", "alert_at": "100", "action": "alert"}], NOW)
    assert check(budgeted, webhook.url, now=NOW, webhook_format="teams").sent == 8
    cards = _cards(webhook)
    hostile = [c for c in cards if HOSTILE.split()[0] in " ".join(_runs(c))]
    assert len(hostile) == 1
    card = hostile[0]
    assert [b["type"] for b in card["body"]] == ["RichTextBlock", "RichTextBlock", "FactSet"]
    assert all(set(b) <= {"type", "inlines", "facts"} for b in card["body"])
    assert all(set(r) <= {"type", "text", "weight", "size"} and r["type"] == "TextRun"
               for b in card["body"] if b["type"] == "RichTextBlock" for r in b["inlines"])
    one_line = " ".join(HOSTILE.split())
    assert _runs(card)[0] == f"Budget business_unit {one_line}: 100% threshold crossed in 2026-11"
    assert one_line in _runs(card)[1]
    markdown_fields = [text for c in cards for fact in _facts(c).items() for text in fact]
    markdown_fields += [b["text"] for c in cards for b in c["body"] if b["type"] == "TextBlock"]
    assert len(markdown_fields) > 8 * 8
    for text in markdown_fields:
        assert not any(mark in text for mark in ("[", "**", "{{", "<", "evil.example", "\\")), text
    assert [body.count(b"evil.example") for body in webhook.bodies].count(2) == 1  # the two runs of one card


def test_markdown_literal_escapes_what_teams_would_render():
    assert markdown_literal("**[Pay](https://evil.example)** {{DATE(2017-02-14T06:00:00Z)}}") == (
        "\\*\\*\\[Pay\\](https://evil.example)\\*\\* \\{\\{DATE(2017-02-14T06:00:00Z)\\}\\}")
    assert markdown_literal("- one\n2. two") == "\\- one 2. two"
    assert markdown_literal("1. first") == "1\\. first"
    assert markdown_literal("108.50 USD (108.5%)") == "108.50 USD (108.5%)"
    assert markdown_literal("2026-11-12") == "2026-11-12"



# ---------------------------------------------------------------- one message per budget; words that say what they mean (#25)


def test_thresholds_crossed_in_one_check_are_one_message_naming_the_highest(budgeted, sqlite_url, webhook, capsys):
    code, _, err = run(capsys, "--db", sqlite_url, "budgets", "check", "--webhook", webhook.url, "--as-of", AS_OF.isoformat())
    assert code == 0, err
    thresholds = [m for m in webhook.accepted if m["alert"]["type"] == "budget_threshold"]
    assert len(thresholds) == 2  # sub-care (50, 80, 100) and Finance (50, 80): two messages, not five
    care = next(m for m in thresholds if m["alert"]["scope_id"] == "sub-care")
    assert care["alert"]["threshold"] == 100 and care["alert"]["also_crossed"] == [50, 80]
    assert "also crossed: 50%, 80%" in care["text"]


def test_the_alert_text_names_spend_budget_and_threshold_each_for_what_it_is(budgeted, sqlite_url, webhook, capsys):
    assert run(capsys, "--db", sqlite_url, "budgets", "check", "--webhook", webhook.url, "--as-of", AS_OF.isoformat())[0] == 0
    care = next(m for m in webhook.accepted if m["alert"].get("scope_id") == "sub-care")
    alert = care["alert"]
    spent, amount = Decimal(alert["spent"]), Decimal(alert["amount"])
    text = care["text"]
    assert text.startswith(f"Budget subscription sub-care: {spent:,.2f} {alert['currency']} spent in ")
    assert f"of its {amount:,.2f} {alert['currency']} budget" in text
    assert f"alert threshold 100% ({amount:,.2f} {alert['currency']}) crossed" in text


def test_names_cannot_mention_or_link_in_slack_nor_drive_the_terminal(sqlite_engine, sqlite_url, tmp_path, webhook, capsys):
    seed(sqlite_engine)
    hostile = "<!channel> <https://evil.example/x|Approve budget>"
    budgets = tmp_path / "budgets.csv"
    budgets.write_text("scope,scope_id,amount,currency,alert_at,action\n"
                       f"subscription,sub-care,1,USD,50,alert\nbusiness_unit,\"{hostile}\",1,USD,50,alert\n")
    assert run(capsys, "--db", sqlite_url, "budgets", "import", str(budgets))[0] == 0
    with sqlite_engine.begin() as conn:
        conn.execute(sa.text("UPDATE subscriptions SET business_unit = :bu WHERE subscription_id = 'sub-care'"), {"bu": hostile})
    assert run(capsys, "--db", sqlite_url, "budgets", "check", "--webhook", webhook.url, "--as-of", AS_OF.isoformat())[0] == 0
    texts = " ".join(m["text"] for m in webhook.accepted)  # what Slack renders
    assert "<!channel>" not in texts and "<https://" not in texts and "&lt;!channel&gt;" in texts
    code, out, _ = run(capsys, "--db", sqlite_url, "budgets", "status", "--month", AS_OF.strftime("%Y-%m"),
                       "--as-of", AS_OF.isoformat())
    assert code == 0 and hostile in out  # the terminal shows the name as it is: no control characters in it


def test_budgets_status_escapes_control_characters_and_line_breaks(sqlite_engine, sqlite_url, tmp_path, capsys):
    seed(sqlite_engine)
    evil = "Fin\x1b]8;;https://evil.example\x07ance\nInjected row"
    budgets = tmp_path / "budgets.csv"
    budgets.write_text("scope,scope_id,amount,currency,alert_at,action\n"
                       f"business_unit,\"{evil}\",1,USD,50,alert\n", encoding="utf-8")
    code, _, err = run(capsys, "--db", sqlite_url, "budgets", "import", str(budgets))
    if code != 0:  # refusing such a name at import is as good as escaping it
        assert code == 2 and err.count("\n") == 1
        return
    code, out, _ = run(capsys, "--db", sqlite_url, "budgets", "status", "--month", AS_OF.strftime("%Y-%m"),
                       "--as-of", AS_OF.isoformat())
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    assert not any(line.startswith("Injected row") for line in out.splitlines())


# ---------------------------------------------------------------- a webhook that trickles (issue #26, item 3)


class Trickler:
    """A receiver that accepts the connection and sends its answer one byte every ``pace`` seconds."""

    def __init__(self, pace: float = 0.2) -> None:
        import socket

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.posts = 0
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.pace = pace
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.posts += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn) -> None:
        try:
            received = b""
            while b"\r\n\r\n" not in received:  # the headers, then exactly Content-Length bytes of body
                chunk = conn.recv(65536)
                if not chunk:
                    return
                received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            self.requests.append(body)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                if self.stop.is_set():
                    return
                conn.sendall(bytes([byte]))
                time.sleep(self.pace)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


def test_a_post_has_one_deadline_however_slowly_the_answer_trickles():
    from metering.finance.budgets.webhook import WebhookError, post_json

    trickler = Trickler(pace=0.05)  # every read gets a byte well within any per-read timeout
    try:
        started = time.monotonic()
        with pytest.raises(WebhookError, match="did not answer within 1 s"):
            post_json(f"http://127.0.0.1:{trickler.port}/hook", b"{}", timeout=1.0)
        assert time.monotonic() - started < 3
    finally:
        trickler.close()


def test_a_second_check_never_posts_what_the_first_is_still_posting(budgeted):
    """The lease covers every try of a message, each bounded by its deadline: a check started while
    the first is stuck on a slow receiver posts nothing of what the first holds."""
    trickler = Trickler(pace=0.05)
    url = f"http://127.0.0.1:{trickler.port}/hook"
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(check, budgeted, url, now=NOW, attempts=2, backoff_seconds=0, timeout_seconds=0.5)
            time.sleep(0.3)
            second = pool.submit(check, budgeted, url, now=NOW, attempts=2, backoff_seconds=0, timeout_seconds=0.5)
            results = [first.result(timeout=30), second.result(timeout=30)]
        from collections import Counter

        # each check posts one message, twice (its tries), and gives up: the webhook is down; the
        # second check took another message, never the one the first was still posting
        assert sorted(Counter(trickler.requests).values()) == [2, 2]
        assert all(r.sent == 0 for r in results)
    finally:
        trickler.close()
