"""Money budgets: the CSV finance writes, the month-end forecast on a known series, the anomaly rule,
and `metering budgets import` / `status` over seven weeks of priced usage on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

import pytest

from budget_data import AS_OF, BUDGETS_CSV, MONTH, SPIKE, seed
from cli_runner import run
from db.engine import make_engine
from metering.finance.budgets.rules import (
    AnomalyRule,
    Budget,
    BudgetFileError,
    DailySpend,
    anomalies,
    budget_status,
    forecast_month,
    parse_budgets_csv,
)

D = Decimal


# ----------------------------------------------------------------------------- the CSV


def test_budgets_csv_is_parsed_with_thresholds_and_actions():
    found = parse_budgets_csv(BUDGETS_CSV)
    assert found[0] == Budget("business_unit", "Finance", D("200.00"), "USD", (50, 80, 100), "alert")
    assert found[1].action == "block" and found[2].alert_at == (80,)


@pytest.mark.parametrize("text, message", [
    ("scope,scope_id,amount,currency,alert_at,action,owner\n", "unknown column(s) owner"),
    ("scope,scope_id,amount,currency,alert_at\n", "missing column(s) action"),
    ("scope,scope_id,amount,currency,alert_at,action\nteam,x,1,USD,50,alert\n", "line 2: scope 'team' is not one of"),
    ("scope,scope_id,amount,currency,alert_at,action\nsubscription,s,12k,USD,50,alert\n", "line 2: amount '12k' is not a number"),
    ("scope,scope_id,amount,currency,alert_at,action\nsubscription,s,-5,USD,50,alert\n", "line 2: amount '-5' must be more than 0"),
    ("scope,scope_id,amount,currency,alert_at,action\nsubscription,s,5,US,50,alert\n", "line 2: currency 'US'"),
    ("scope,scope_id,amount,currency,alert_at,action\nsubscription,s,5,USD,fifty,alert\n", "line 2: alert_at 'fifty'"),
    ("scope,scope_id,amount,currency,alert_at,action\nsubscription,s,5,USD,50,suspend\n", "line 2: action 'suspend'"),
    ("scope,scope_id,amount,currency,alert_at,action\nsubscription,s,5,USD,50,alert\n\nsubscription,s,6,USD,50,block\n",
     "line 4: a second budget for subscription 's'"),
])
def test_bad_budget_rows_name_the_line(text, message):
    with pytest.raises(BudgetFileError) as caught:
        parse_budgets_csv(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


# ----------------------------------------------------------------------------- forecast


def _weekly_series(since: date, until: date, weekday: Decimal, weekend: Decimal) -> dict[date, Decimal]:
    days = {}
    while since <= until:
        days[since] = weekday if since.weekday() < 5 else weekend
        since += timedelta(days=1)
    return days


def test_forecast_is_a_weekday_aware_run_rate():
    """7.00 on weekdays and 1.40 at weekends since October: as of Fri 2026-11-20 the month ends at
    112.00 spent + 6 weekdays × 7.00 + 4 weekend days × 1.40 = 159.60; 140 is crossed on Thu 26th
    (112.00 + 1.40 + 1.40 + 4 × 7.00 = 142.80, 135.80 the day before)."""
    daily = _weekly_series(date(2026, 10, 4), date(2026, 11, 20), D("7.00"), D("1.40"))
    forecast = forecast_month(daily, "2026-11", date(2026, 11, 20), amount=D("140"))
    assert forecast.total == D("159.60")
    assert forecast.crossing_day == date(2026, 11, 26)
    assert "weekday" in forecast.method


def test_a_month_that_has_ended_is_forecast_at_what_it_spent():
    """Reviewed after it ended (the alert check's late-spend window), November's last day (Mon 30th,
    a quiet 1.00) is what it spent, not topped up to a Monday's 7.00."""
    daily = _weekly_series(date(2026, 10, 4), date(2026, 11, 29), D("7.00"), D("1.40"))
    daily[date(2026, 11, 30)] = D("1.00")
    spent = sum((v for d, v in daily.items() if d.month == 11), D(0))
    assert forecast_month(daily, "2026-11", date(2026, 11, 30)).total == spent + 6  # still open: topped up
    closed = forecast_month(daily, "2026-11", date(2026, 11, 30), amount=D("200"), closed=True)
    assert (closed.total, closed.crossing_day, closed.method) == (spent, None, "actual: the month has ended")


def test_forecast_with_little_history_uses_the_mean_of_the_days_seen():
    daily = {date(2026, 11, 1): D("10"), date(2026, 11, 2): D("20"), date(2026, 11, 3): D("30")}
    forecast = forecast_month(daily, "2026-11", date(2026, 11, 3))
    # Nov 1 and 2 actual (30), Nov 3: max(30, mean 15) = 30, then 27 days × 15 (mean of the 2 full days before)
    assert forecast.total == D("30") + D("30") + 27 * D("15")
    assert "run rate" in forecast.method and "weekday" not in forecast.method


def test_status_counts_fixed_cost_and_shows_unpriced_and_estimated_beside_spend():
    budget = Budget("business_unit", "Finance", D("200"), "USD", (50, 80, 100), "alert")
    rows = [DailySpend(d, "sub-finance", "Finance", "CC-1042", "gpt-4o", "USD", v, D("1.00") if d == AS_OF else D(0), 10,
                       1 if d == AS_OF else 0)
            for d, v in _weekly_series(date(2026, 10, 4), AS_OF, D("7.00"), D("1.40")).items()]
    rows.append(DailySpend(AS_OF, "sub-finance", "Finance", "CC-1042", "gpt-4o", "EUR", D("9"), D(0), 1, 0))
    status = budget_status(budget, MONTH, AS_OF, rows, fixed=D("50"))
    assert status.spent == D("162.00") and status.percent == D("81.0")
    assert status.forecast == D("209.60") and status.crossing_day == date(2026, 11, 28)
    assert status.status == "warn" and status.thresholds_crossed == (50, 80)
    assert (status.estimated_cost, status.unpriced_requests, status.other_currency_cost) == (D("1.00"), 1, D("9"))


# ----------------------------------------------------------------------------- anomalies


def test_a_spike_far_above_its_own_baseline_is_an_anomaly_and_a_busy_weekday_is_not():
    rows = [DailySpend(d, "sub-a", "A", "C", "gpt-4o", "USD", v) for d, v in
            _weekly_series(date(2026, 10, 1), date(2026, 10, 31), D("30"), D("2")).items()]
    rows.append(DailySpend(date(2026, 10, 20), "sub-b", "B", "C", "o3", "USD", D("95")))
    rows += [DailySpend(date(2026, 10, 1) + timedelta(days=n), "sub-b", "B", "C", "o3", "USD", D("20")) for n in range(19)]
    found = anomalies(rows, date(2026, 10, 1), date(2026, 10, 31))
    assert [(a.kind, a.key, a.day) for a in found] == [("model", "o3", date(2026, 10, 20)),
                                                        ("subscription", "sub-b", date(2026, 10, 20))]
    assert found[0].median == D("20") and found[0].threshold == D("60")
    # the same spike below the minimum amount is not worth an alert
    assert anomalies(rows, date(2026, 10, 1), date(2026, 10, 31), AnomalyRule(min_amount=D("100"))) == []


# ----------------------------------------------------------------------------- the commands, on both databases


def test_import_and_status_over_seven_weeks_of_usage(db, tmp_path, capsys):
    engine = make_engine(db)
    seed(engine)
    engine.dispose()
    budgets = tmp_path / "budgets.csv"
    budgets.write_text(BUDGETS_CSV)
    code, out, err = run(capsys, "--db", db, "budgets", "import", str(budgets))
    assert (code, out) == (0, f"imported 3 budget(s) from {budgets}\n"), err
    assert run(capsys, "--db", db, "budgets", "import", str(budgets))[0] == 0  # again: replaced, not doubled

    code, out, err = run(capsys, "--db", db, "budgets", "status", "--month", MONTH, "--as-of", AS_OF.isoformat(),
                         "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    by_scope = {b["scope_id"]: b for b in report["budgets"]}
    assert len(report["budgets"]) == 3
    care = by_scope["sub-care"]
    assert (care["spent"], care["percent"], care["status"], care["thresholds_crossed"]) == ("108.50", "108.5", "exceeded", [50, 80, 100])
    assert care["crossing_day"] == "2026-11-18"  # 11 × 3.50 + 42.00 + 6 × 3.50 = 101.50 on the 18th
    finance = by_scope["Finance"]
    assert (finance["spent"], finance["fixed_cost"], finance["status"]) == ("162.00", "50.00", "warn")
    assert finance["forecast"] == "209.60" and finance["crossing_day"] == "2026-11-28"
    legal = by_scope["CC-3005"]
    assert legal["status"] == "ok" and legal["unpriced_requests"] == 20 and Decimal(legal["estimated_cost"]) >= Decimal("0.20")
    # 20 × 0.70 reported, the rest estimated (rounding to the cent either way)
    assert abs(Decimal(legal["spent"]) - Decimal(legal["estimated_cost"]) - Decimal("14.00")) <= Decimal("0.01")
    assert [b["scope_id"] for b in report["budgets"]] == ["sub-care", "Finance", "CC-3005"]  # worst first
    assert {(a["kind"], a["key"], a["day"]) for a in report["anomalies"]} == {
        ("subscription", "sub-care", SPIKE.isoformat()), ("model", "gpt-4o-2024-11-20", SPIKE.isoformat())}

    code, table, _ = run(capsys, "--db", db, "budgets", "status", "--month", MONTH, "--as-of", AS_OF.isoformat())
    assert code == 0 and "exceeded" in table and "weekday-aware run rate" in table and "sub-care" in table
    code, csv_text, _ = run(capsys, "--db", db, "budgets", "status", "--month", MONTH, "--as-of", AS_OF.isoformat(),
                            "--format", "csv")
    assert csv_text.splitlines()[0].startswith("month,as_of,scope,scope_id,amount,currency,spent")
    assert len(csv_text.splitlines()) == 4
    code, html, _ = run(capsys, "--db", db, "budgets", "status", "--month", MONTH, "--as-of", AS_OF.isoformat(),
                        "--format", "html")
    assert code == 0 and "<h2>Spend anomalies</h2>" in html and "2026-11-12" in html


def test_a_bad_budgets_file_is_bad_input(db, tmp_path, capsys):
    bad = tmp_path / "budgets.csv"
    bad.write_text("scope,scope_id,amount,currency,alert_at,action\nbusiness_unit,Finance,lots,USD,80,alert\n")
    code, out, err = run(capsys, "--db", db, "budgets", "import", str(bad))
    assert code == 2 and out == ""
    assert err == f"metering: budgets not imported: {bad}: line 2: amount 'lots' is not a number\n"


def test_the_html_chargeback_report_lists_the_months_spend_anomalies(sqlite_engine, sqlite_url, tmp_path, capsys):
    seed(sqlite_engine)
    out_file = tmp_path / "report.html"
    code, _, err = run(capsys, "--db", sqlite_url, "report", "--month", MONTH, "--format", "html", "--output", str(out_file))
    assert code == 0, err
    html = out_file.read_text()
    section = html.split('<section id="anomalies"', 1)[1].split("</section>", 1)[0]
    assert "<h2>Spend anomalies</h2>" in section and "max(3 × median, median + 4 × MAD)" in section
    assert section.count("<tr><td>2026-11-12</td>") == 2  # sub-care's spike, and gpt-4o's that day
    assert "<td>sub-care</td>" in section and "<td>42.00</td>" in section
