"""The rate card in the database (SQLite and PostgreSQL) and `metering reprice`: exact costs on both sides
of a price change, deployment types, cached tokens, mapped deployments, long-context tiers, and
repricing that changes exactly the affected rows, once."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import sqlalchemy as sa

from db import rate_card as rate_card_store
from db.reprice import reprice
from db.schema import usage_records
from events import encode, jsonl, v1_event
from metering.cli import main
from metering.ingest import Ingestor
from metering.price.mappings import parse_deployments_csv
from metering.model import RawEvent
from metering.price.pricing import RateCard
from metering.price.rate_card import parse_rates_csv
from metering.price.reprice import StoredUsage, changed_columns, reprice_row

UTC = timezone.utc
MILLION = Decimal(1_000_000)
HEADER = "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m,min_prompt_tokens\n"
CARD = HEADER + (
    # gpt-4o global changes price at noon on 2026-10-10
    "gpt-4o,global,,2024-08-06,2026-10-10T12:00:00Z,USD,2.50,1.25,10.00,\n"
    "gpt-4o,global,,2026-10-10T12:00:00Z,,USD,2.00,1.00,8.00,\n"
    "gpt-4o,datazone,,2024-08-06,,USD,2.75,1.375,11.00,\n"
    "gpt-4o-mini,global,,2024-07-18,,USD,0.15,0.075,0.60,\n"
    "gpt-5,global,,2025-08-07,,USD,1.25,0.125,10.00,\n"
    "gpt-5,global,,2025-08-07,,USD,2.50,0.25,15.00,272000\n"
)
DEPLOYMENTS = "backend_id,deployment,model,deployment_type\n,gpt-4o-eu,gpt-4o,datazone\n,chat-prod,gpt-4o-mini,global\n"


def usage(prompt: int, completion: int, cached: int = 0) -> dict:
    body = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached:
        body["prompt_tokens_details"] = {"cached_tokens": cached}
    return body


def load(engine, card: str = CARD, deployments: str | None = DEPLOYMENTS) -> None:
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(card))
        if deployments:
            rate_card_store.replace_deployments(conn, parse_deployments_csv(deployments))


def ingest(engine, *events: dict) -> None:
    Ingestor(engine, rate_card_ttl=0).ingest([RawEvent(encode(e)) for e in events])


def rows(engine) -> dict[str, sa.Row]:
    with engine.connect() as conn:
        return {r.request_id: r for r in conn.execute(sa.select(usage_records))}


def card_of(engine) -> RateCard:
    with engine.connect() as conn:
        return rate_card_store.load_rate_card(conn)


# --------------------------------------------------------------------------- priced at ingest, exactly


def test_events_on_both_sides_of_a_price_change_are_priced_at_their_own_rate(engine):
    load(engine)
    tokens = usage(987_654, 12_345, cached=321_987)
    ingest(engine,
           v1_event("before", time="2026-10-10T11:59:59.9999999Z", usage=tokens),
           v1_event("after", time="2026-10-10T12:00:00Z", usage=tokens))
    stored = rows(engine)
    old = (Decimal(987_654 - 321_987) * Decimal("2.50") + Decimal(321_987) * Decimal("1.25") + Decimal(12_345) * Decimal("10.00")) / MILLION
    new = (Decimal(987_654 - 321_987) * Decimal("2.00") + Decimal(321_987) * Decimal("1.00") + Decimal(12_345) * Decimal("8.00")) / MILLION
    assert stored["before"].total_cost == old == Decimal("2.19010125")
    assert stored["after"].total_cost == new == Decimal("1.752081")
    assert stored["before"].input_cost == Decimal(665_667) * Decimal("2.50") / MILLION
    assert stored["after"].cached_input_cost == Decimal(321_987) * Decimal("1.00") / MILLION
    card = card_of(engine)
    by_price = {r.input_per_1m: r.id for r in card.rates if r.model == "gpt-4o" and r.deployment_type == "global"}
    assert (stored["before"].rate_id, stored["after"].rate_id) == (by_price[Decimal("2.50")], by_price[Decimal("2.00")])


def test_data_zone_cached_tokens_and_mapped_deployments_are_priced_at_their_rates(engine):
    load(engine)
    ingest(engine,
           v1_event("eu", deployment="gpt-4o-eu", usage=usage(10_000, 1_000, cached=4_000)),
           v1_event("chat", deployment="chat-prod", model=None, usage=usage(2_000, 500, cached=1_000)))
    stored = rows(engine)
    eu = stored["eu"]
    assert (eu.deployment_type, eu.price_status, eu.model) == ("datazone", "priced", "gpt-4o-2024-11-20")
    assert eu.input_cost == Decimal(6_000) * Decimal("2.75") / MILLION == Decimal("0.0165")
    assert eu.cached_input_cost == Decimal(4_000) * Decimal("1.375") / MILLION == Decimal("0.0055")
    assert eu.output_cost == Decimal("0.011") and eu.total_cost == Decimal("0.033")
    chat = stored["chat"]
    assert (chat.model, chat.deployment_type) == ("gpt-4o-mini", "global")
    assert chat.total_cost == (1_000 * Decimal("0.15") + 1_000 * Decimal("0.075") + 500 * Decimal("0.60")) / MILLION == Decimal("0.000525")


def test_long_context_tier_is_chosen_by_prompt_size(engine):
    load(engine)
    ingest(engine,
           v1_event("short", model="gpt-5-2025-08-07", usage=usage(271_999, 1_000)),
           v1_event("long", model="gpt-5-2025-08-07", usage=usage(272_000, 1_000, cached=72_000)))
    stored = rows(engine)
    tiers = {r.min_prompt_tokens: r.id for r in card_of(engine).rates if r.model == "gpt-5"}
    assert stored["short"].rate_id == tiers[None] and stored["long"].rate_id == tiers[272_000]
    assert stored["short"].total_cost == (271_999 * Decimal("1.25") + 1_000 * Decimal("10")) / MILLION
    assert stored["long"].total_cost == (200_000 * Decimal("2.50") + 72_000 * Decimal("0.25") + 1_000 * Decimal("15")) / MILLION


# --------------------------------------------------------------------------- repricing


def mixed_month(engine) -> None:
    """Rows of every kind: priced, mapped, unpriced, no usage, throttled, content-filtered, PTU."""
    filtered = '{"error":{"code":"content_filter","message":"The response was filtered","status":400}}'
    ingest(engine,
           v1_event("gpt4o-before", time="2026-10-05T08:00:00Z", usage=usage(1_000, 100)),
           v1_event("gpt4o-after", time="2026-10-20T08:00:00Z", usage=usage(1_000, 100, cached=500)),
           v1_event("eu", time="2026-10-20T09:00:00Z", deployment="gpt-4o-eu", usage=usage(3_000, 300)),
           v1_event("mini", time="2026-10-21T09:00:00Z", model="gpt-4o-mini-2024-07-18", usage=usage(5_000, 50)),
           v1_event("o3", time="2026-10-22T09:00:00Z", model="o3-2025-04-16", deployment="o3", usage=usage(7_000, 2_000)),
           v1_event("chat", time="2026-10-23T09:00:00Z", deployment="chat-prod", model=None, usage=usage(1_000, 100)),
           v1_event("stream", time="2026-10-24T09:00:00Z", stream=True, usage=None),
           v1_event("throttled", time="2026-10-25T09:00:00Z", status=429, usage=None, model=None),
           v1_event("filtered", time="2026-10-26T09:00:00Z", status=400, model=None, usage=None, capture="full",
                    request={"messages": [{"role": "user", "content": "something the filter rejects"}]}, response=filtered),
           v1_event("rejected", time="2026-10-26T10:00:00Z", status=400, usage=None, model=None,
                    response='{"error":{"code":"invalid_request"}}'),
           v1_event("november", time="2026-11-02T09:00:00Z", usage=usage(1_000, 100)))


def test_reprice_after_a_new_card_changes_exactly_the_affected_rows_once(engine):
    load(engine, deployments=None)
    mixed_month(engine)
    before = rows(engine)
    assert before["o3"].price_status == "no_rate" and before["chat"].price_status == "no_rate"
    assert before["eu"].deployment_type == "global" and before["stream"].price_status == "no_usage"
    assert before["filtered"].price_status == "priced" and before["rejected"].price_status == "not_billable"

    assert reprice(engine).changed == 0  # nothing changed yet: nothing to write

    # the new card: o3 gets a rate, gpt-4o global gets cheaper from 2026-10-15; and the mapping arrives
    new_card = HEADER + (
        "gpt-4o,global,,2026-10-10T12:00:00Z,2026-10-15,USD,2.00,1.00,8.00,\n"
        "gpt-4o,global,,2026-10-15,,USD,1.80,0.90,7.20,\n"
        "o3,global,,2025-06-01,,USD,2.00,0.50,8.00,\n"
    )
    load(engine, card=new_card, deployments=DEPLOYMENTS)
    summary = reprice(engine, since=datetime(2026, 10, 1, tzinfo=UTC), until=datetime(2026, 11, 1, tzinfo=UTC))
    after = rows(engine)

    # "stream" keeps no_usage and NULL costs, but the rate in force for it is now the new one
    expected_changed = {"gpt4o-after", "eu", "o3", "chat", "filtered", "stream"}
    assert {k for k in before if any(getattr(before[k], c) != getattr(after[k], c) for c in
                                     ("model", "deployment_type", "price_status", "rate_id", "currency", "total_cost"))} == expected_changed
    assert summary.examined == 10 and summary.changed == 6
    assert dict(summary.transitions) == {("no_rate", "priced"): 2, ("priced", "priced"): 3, ("no_usage", "no_usage"): 1}
    assert after["gpt4o-after"].total_cost == (500 * Decimal("1.80") + 500 * Decimal("0.90") + 100 * Decimal("7.20")) / MILLION
    assert after["o3"].total_cost == (7_000 * Decimal("2.00") + 2_000 * Decimal("8.00")) / MILLION
    assert (after["chat"].model, after["chat"].price_status) == ("gpt-4o-mini", "priced")
    assert (after["eu"].deployment_type, after["eu"].total_cost) == ("datazone", (3_000 * Decimal("2.75") + 300 * Decimal("11")) / MILLION)
    assert after["filtered"].price_status == "priced"  # the stored 400 was a billable content-filter rejection
    assert after["filtered"].total_cost == Decimal(after["filtered"].prompt_tokens) * Decimal("1.80") / MILLION
    assert after["stream"].price_status == "no_usage" and after["stream"].total_cost is None
    assert after["stream"].rate_id != before["stream"].rate_id is not None
    assert after["throttled"].price_status == "not_billable" and after["rejected"].price_status == "not_billable"
    assert after["november"] == before["november"]  # outside --since/--until
    assert summary.new_totals["USD"] - summary.old_totals["USD"] == sum(
        (after[k].total_cost or 0) - (before[k].total_cost or 0) for k in expected_changed)
    unchanged = [k for k in before if k not in expected_changed]
    assert all(tuple(before[k]) == tuple(after[k]) for k in unchanged)

    again = reprice(engine, since=datetime(2026, 10, 1, tzinfo=UTC), until=datetime(2026, 11, 1, tzinfo=UTC))
    assert (again.examined, again.changed) == (10, 0) and not again.transitions
    assert rows(engine) == after
    everything = reprice(engine)  # now November too: it was priced under the old card
    assert (everything.examined, everything.changed) == (11, 1) and dict(everything.transitions) == {("priced", "priced"): 1}
    assert reprice(engine).changed == 0


def test_reprice_walks_the_table_in_batches_and_dry_run_writes_nothing(engine):
    load(engine, deployments=None)
    ingest(engine, *[v1_event(f"r{i:02d}", deployment="chat-prod", model=None, usage=usage(1_000 + i, 10)) for i in range(11)])
    load(engine, deployments=DEPLOYMENTS)
    dry = reprice(engine, batch_size=4, dry_run=True)
    assert (dry.examined, dry.changed, dry.batches) == (11, 11, 3)
    assert {r.price_status for r in rows(engine).values()} == {"no_rate"}
    seen = []
    done = reprice(engine, batch_size=4, on_batch=lambda s: seen.append(s.examined))
    assert seen == [4, 8, 11] and done.changed == 11
    assert {r.price_status for r in rows(engine).values()} == {"priced"}
    assert reprice(engine, batch_size=4).changed == 0


def stored(**fields) -> StoredUsage:
    base = dict(id=1, event_time=datetime(2026, 10, 15, tzinfo=UTC), backend_id=None, backend_region=None,
                deployment="gpt-4o", model="gpt-4o-2024-11-20", status_code=200, prompt_tokens=1_000, cached_tokens=0,
                completion_tokens=100, reasoning_tokens=0, total_tokens=1_100, usage_source="reported",
                deployment_type="global", price_status="no_rate", rate_id=None, currency=None, input_cost=None,
                cached_input_cost=None, output_cost=None, total_cost=None)
    base.update(fields)
    return StoredUsage(**base)


def test_reprice_row_uses_the_ingest_rules_from_stored_fields():
    card = RateCard(parse_rates_csv(CARD), parse_deployments_csv(DEPLOYMENTS))
    for index, rate in enumerate(card.rates):
        object.__setattr__(rate, "id", index + 1)
    priced = reprice_row(stored(), card)
    assert (priced.cost.price_status, priced.cost.total_cost) == ("priced", Decimal("0.002") + Decimal("0.0008"))
    assert reprice_row(stored(status_code=503), card).cost.price_status == "not_billable"
    assert reprice_row(stored(status_code=400, price_status="priced"), card).cost.price_status == "priced"
    assert reprice_row(stored(status_code=400, price_status="no_rate"), card).cost.price_status == "priced"
    assert reprice_row(stored(status_code=400, price_status="not_billable"), card).cost.price_status == "not_billable"
    assert reprice_row(stored(usage_source="none", prompt_tokens=0, completion_tokens=0), card).cost.price_status == "no_usage"
    # a response's own model is never replaced by the mapping; a bare deployment name is
    assert reprice_row(stored(deployment="chat-prod", model="gpt-4o-2024-11-20"), card).model == "gpt-4o-2024-11-20"
    assert reprice_row(stored(deployment="chat-prod", model="chat-prod"), card).model == "gpt-4o-mini"
    assert reprice_row(stored(deployment="CHAT-PROD", model="chat-prod"), card).model == "gpt-4o-mini"
    # numbers compare by value: a stored 0.002000000000 is the same price as 0.002
    same = stored(price_status="priced", rate_id=priced.cost.rate_id, currency="USD", input_cost=Decimal("0.002000000000"),
                  cached_input_cost=Decimal("0E-12"), output_cost=Decimal("0.000800"), total_cost=Decimal("0.0028"))
    assert changed_columns(same, priced) == {}


def test_cli_reprice_reports_what_changed(capsys, db_url, tmp_path):
    def run(*args):
        code = main(["--db", db_url, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert run("db", "upgrade")[0] == 0
    card = tmp_path / "card.csv"
    card.write_text(CARD)
    assert run("rates", "import", str(card))[0] == 0
    capture = tmp_path / "october.jsonl"
    capture.write_bytes(jsonl([v1_event("chat", deployment="chat-prod", model=None, usage=usage(1_000, 100)),
                               v1_event("o4", usage=usage(2_000, 200))]))
    assert run("replay", str(capture))[0] == 0
    deployments = tmp_path / "deployments.csv"
    deployments.write_text(DEPLOYMENTS)
    assert run("deployments", "import", str(deployments))[0] == 0

    code, out, _ = run("reprice", "--since", "2026-10-01", "--until", "2026-10-31", "--dry-run")
    assert code == 0 and out.startswith("would reprice (dry run, nothing written)") and "rows changed 1" in out
    code, out, _ = run("reprice", "--since", "2026-10-01", "--until", "2026-10-31")
    assert code == 0
    assert "rows examined 2 | rows changed 1 | batches 1" in out
    assert "total cost USD: old 0.0056 → new 0.00581 (change +0.00021)" in out  # NULL (no_rate) costs are not summed
    assert "no_rate → priced" in out
    code, out, _ = run("reprice")
    assert code == 0 and "rows changed 0" in out and "→ priced" not in out
    code, _, err = run("reprice", "--since", "2026-10-31", "--until", "2026-10-01")
    assert code == 2 and "--until must be after --since" in err
    code, _, err = run("reprice", "--batch-size", "0")
    assert code == 2 and "--batch-size" in err


def test_supersede_import_then_reprice(capsys, db_url, tmp_path):
    def run(*args):
        code = main(["--db", db_url, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    run("db", "upgrade")
    old = tmp_path / "old.csv"
    old.write_text(HEADER + "gpt-4o,global,,2024-08-06,,USD,2.50,1.25,10.00,\n")
    run("rates", "import", str(old))
    capture = tmp_path / "c.jsonl"
    capture.write_bytes(jsonl([v1_event("early", time="2026-10-01T00:00:00Z"), v1_event("late", time="2026-10-20T00:00:00Z")]))
    run("replay", str(capture))
    new = tmp_path / "new.csv"
    new.write_text(HEADER + "gpt-4o,global,,2026-10-15,,USD,2.00,1.00,8.00,\n")
    code, _, err = run("rates", "import", str(new))
    assert code == 2 and "overlapping rates for gpt-4o / global" in err and "--supersede" in err
    code, out, err = run("rates", "import", "--supersede", str(new))
    assert code == 0, err
    assert "1 added, 0 replaced, 1 stored rate(s) ended" in out
    code, out, _ = run("reprice")
    assert "rows changed 1" in out and "priced → priced" in out


def test_tiers_are_separate_rows_in_the_database_and_reimport_replaces_them(engine):
    load(engine)
    load(engine)
    gpt5 = sorted((r.min_prompt_tokens or 0, r.input_per_1m) for r in card_of(engine).rates if r.model == "gpt-5")
    assert gpt5 == [(0, Decimal("1.25")), (272_000, Decimal("2.50"))]


def test_reprice_never_writes_a_price_computed_from_tokens_that_changed_meanwhile(postgres_engine, monkeypatch):
    """A Function merging APIM LLM-log usage into a row while `metering reprice` works on the same
    batch: reprice must not overwrite the merged row's price with one computed from its old tokens."""
    import db.reprice as db_reprice
    from llm_records import envelope, llm_record, streamed_request_mode

    engine = postgres_engine
    partial = streamed_request_mode("race-1")  # a prompt the log's 1,200 tokens are plausible for
    ingest(engine, partial)  # no card yet: partial usage, no_rate
    before = rows(engine)["race-1"]
    assert (before.usage_source, before.price_status) == ("partial", "no_rate")
    load(engine)
    real_reprice_row = db_reprice.reprice_row

    def reprice_row_while_a_merge_lands(row, card):
        result = real_reprice_row(row, card)  # computed from the tokens reprice read
        ingest_merge = Ingestor(engine, rate_card_ttl=0)
        totals = ingest_merge.ingest([RawEvent(envelope(llm_record("race-1")))])  # commits on its own connection
        assert totals.merged == 1
        return result

    monkeypatch.setattr(db_reprice, "reprice_row", reprice_row_while_a_merge_lands)
    reprice(engine)
    monkeypatch.undo()
    row = rows(engine)["race-1"]
    assert (row.usage_source, row.prompt_tokens, row.completion_tokens) == ("reported", 1200, 300)
    assert row.price_status == "priced"
    # the card's gpt-4o global price from 2026-10-10 noon: 2.00 input, 8.00 output
    assert row.total_cost == Decimal(1200) * Decimal("2.00") / MILLION + Decimal(300) * Decimal("8.00") / MILLION
    assert reprice(engine, dry_run=True).changed == 0


def test_cli_reprice_prints_no_currencyless_zero_total_for_not_billable_rows(capsys, db_url, tmp_path):
    assert main(["--db", db_url, "db", "upgrade"]) == 0
    card = tmp_path / "card.csv"
    card.write_text(CARD)
    capture = tmp_path / "october.jsonl"
    capture.write_bytes(jsonl([v1_event("ok", usage=usage(1_000, 100)), v1_event("throttled", status=429, usage=None)]))
    assert main(["--db", db_url, "rates", "import", str(card)]) == 0
    assert main(["--db", db_url, "replay", str(capture)]) == 0
    capsys.readouterr()
    assert main(["--db", db_url, "reprice"]) == 0
    out = capsys.readouterr().out
    assert "rows examined 2" in out and "total cost USD:" in out
    assert "total cost:" not in out
