"""Token kinds, service tiers and kind prices in SQL (SQLite and PostgreSQL): stored by ingest,
summed by the views, repriced from the stored row, and 0 for rows stored before migration 0005."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import sqlalchemy as sa

from azure_shapes import chat_body, image_body, usage_object
from db import rate_card as rate_card_store
from db.engine import make_engine
from db.migrate import upgrade
from db.reprice import reprice
from db.schema import usage_records
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.model import RawEvent
from metering.price.rate_card import parse_rates_csv

M = Decimal(1_000_000)
HEADER = ("model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m,"
          "service_tier,cache_write_per_1m,audio_input_per_1m,audio_output_per_1m,image_input_per_1m,image_output_per_1m\n")
CARD = HEADER + (
    "gpt-5.6,global,,2026-07-09,,USD,1.25,0.125,10.00,,1.5625,,,,\n"
    "gpt-5.6,global,,2026-07-09,,USD,2.50,0.25,20.00,priority,3.125,,,,\n"
    "gpt-4o-audio-preview,global,,2024-12-17,,USD,2.50,,10.00,,,100.00,200.00,,\n"
    "gpt-image-1,global,,2025-04-15,,USD,5.00,1.25,0,,,,,10.00,40.00\n"
)


def load(engine, text: str = CARD) -> None:
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(text))


def events() -> list[RawEvent]:
    return [RawEvent(encode(e)) for e in (
        v1_event("cache-write", model="gpt-5.6-2026-07-09", deployment="gpt-5.6",
                 usage=usage_object(50_000, 800, cached=30_000, cache_write=15_000, reasoning=300)),
        v1_event("priority", model=None, deployment="gpt-5.6", usage=None, capture="full",
                 response=chat_body("ok", model="gpt-5.6-2026-07-09", usage=usage_object(1_000, 10), service_tier="priority")),
        v1_event("audio", model="gpt-4o-audio-preview-2024-12-17", deployment="gpt-4o-audio",
                 usage=usage_object(88, 696, audio_completion=589, audio_prompt=40)),
        v1_event("image", model=None, deployment="gpt-image-1", operation="Images_Generate", usage=None, capture="full",
                 response=image_body(48, 1_530, 4_160)),
    )]


def rows(engine) -> dict[str, sa.Row]:
    with engine.connect() as conn:
        return {row.request_id: row for row in conn.execute(sa.select(usage_records))}


def test_ingest_stores_every_kind_and_tier_exactly(engine):
    load(engine)
    Ingestor(engine).ingest(events())
    stored = rows(engine)
    assert (stored["cache-write"].cache_write_tokens, stored["cache-write"].cached_tokens) == (15_000, 30_000)
    assert stored["cache-write"].total_cost == (Decimal(5_000) * Decimal("1.25") + Decimal(15_000) * Decimal("1.5625")
                                                + Decimal(30_000) * Decimal("0.125") + Decimal(800) * 10) / M
    assert (stored["priority"].service_tier, stored["priority"].total_cost) == ("priority", Decimal("0.0027"))
    audio = stored["audio"]
    assert (audio.audio_prompt_tokens, audio.audio_completion_tokens) == (40, 589)
    assert audio.total_cost == (Decimal(48) * Decimal("2.50") + Decimal(40) * 100 + Decimal(107) * 10 + Decimal(589) * 200) / M
    image = stored["image"]
    assert (image.image_prompt_tokens, image.image_completion_tokens, image.endpoint) == (1_530, 4_160, "images")
    assert image.total_cost == Decimal("0.01554") + Decimal("0.1664")
    assert all(row.price_fallback is None for row in stored.values())


def test_views_sum_the_token_kinds(engine):
    load(engine)
    Ingestor(engine).ingest(events())
    with engine.connect() as conn:
        monthly = conn.execute(sa.text(
            "SELECT SUM(cache_write_tokens), SUM(audio_prompt_tokens), SUM(audio_completion_tokens), "
            "SUM(image_prompt_tokens), SUM(image_completion_tokens), SUM(priority_requests), "
            "SUM(fallback_priced_requests) FROM v_chargeback_monthly")).one()
        daily_tiers = dict(conn.execute(sa.text(
            "SELECT COALESCE(service_tier, '-'), SUM(requests) FROM v_usage_daily GROUP BY COALESCE(service_tier, '-')")).all())
    assert tuple(int(v) for v in monthly) == (15_000, 40, 589, 1_530, 4_160, 1, 0)
    assert {k: int(v) for k, v in daily_tiers.items()} == {"-": 3, "priority": 1}


def test_reprice_prices_each_kind_from_the_stored_row(engine):
    """Ingested before the card knew cache-write, priority and audio prices: fallbacks, flagged;
    after importing them, `reprice` prices every kind from the stored counts and clears the flags."""
    load(engine, HEADER + (
        "gpt-5.6,global,,2026-07-09,,USD,1.25,0.125,10.00,,,,,,\n"
        "gpt-4o-audio-preview,global,,2024-12-17,,USD,2.50,,10.00,,,,,,\n"
        "gpt-image-1,global,,2025-04-15,,USD,5.00,1.25,0,,,,,10.00,40.00\n"
    ))
    Ingestor(engine).ingest(events())
    before = rows(engine)
    assert before["cache-write"].price_fallback == "cache_write"
    assert before["priority"].price_fallback == "service_tier"
    assert before["audio"].price_fallback == "audio_input,audio_output"
    assert before["audio"].total_cost == (Decimal(88) * Decimal("2.50") + Decimal(696) * 10) / M
    load(engine)  # the same keys and starts: the rows are updated in place; the priority row is new
    summary = reprice(engine)
    assert summary.changed == 3
    after = rows(engine)
    assert all(row.price_fallback is None for row in after.values())
    assert after["priority"].total_cost == Decimal("0.0027")
    assert after["audio"].total_cost == (Decimal(48) * Decimal("2.50") + Decimal(40) * 100 + Decimal(107) * 10
                                         + Decimal(589) * 200) / M
    assert reprice(engine).changed == 0


def test_rows_stored_before_0005_have_no_kinds_and_keep_their_price(db_url):
    engine = make_engine(db_url)
    upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO usage_records (request_id, event_time, endpoint, is_streaming, prompt_tokens, cached_tokens, "
            "completion_tokens, reasoning_tokens, total_tokens, usage_source, deployment_type, price_status, truncated, "
            "ingested_at, input_cost, total_cost) VALUES ('old', :t, 'chat.completions', :f, 10, 0, 5, 0, 15, 'reported', "
            "'global', 'priced', :f, :t, :c, :c)"), {"t": datetime(2026, 10, 1, tzinfo=timezone.utc).replace(tzinfo=None),
                                                      "f": False, "c": "0.000025" if engine.dialect.name == "sqlite" else Decimal("0.000025")})
    upgrade(engine)
    row = rows(engine)["old"]
    assert (row.cache_write_tokens, row.audio_prompt_tokens, row.image_completion_tokens, row.service_tier) == (0, 0, 0, None)
    assert row.total_cost == Decimal("0.000025")
    engine.dispose()


def test_focus_rows_carry_each_kind_at_its_unit_price_and_add_up(engine):
    from metering.finance.report.options import Period
    from metering.finance.report.build import export_focus

    load(engine)
    Ingestor(engine).ingest(events())
    with engine.connect() as conn:
        records = export_focus(conn, Period.month("2026-10"), "acct", "Contoso")
        stored = sum((row.total_cost for row in conn.execute(sa.select(usage_records.c.total_cost))), Decimal(0))
    assert sum((r["BilledCost"] for r in records), Decimal(0)) == stored
    by = {(r["x_Model"], r["x_TokenKind"]): r for r in records}
    cache_write = by[("gpt-5.6-2026-07-09", "cache_write")]
    assert (cache_write["ConsumedQuantity"], cache_write["ListUnitPrice"]) == (Decimal(15_000), Decimal("1.5625"))
    assert cache_write["BilledCost"] == Decimal(15_000) * Decimal("1.5625") / M
    inputs = [r for r in records if (r["x_Model"], r["x_TokenKind"]) == ("gpt-5.6-2026-07-09", "input")]
    assert sorted((r["ConsumedQuantity"], r["ListUnitPrice"]) for r in inputs) == [
        (Decimal(1_000), Decimal("2.50")), (Decimal(5_000), Decimal("1.25"))]  # priority and default rows
    audio_out = by[("gpt-4o-audio-preview-2024-12-17", "audio_output")]
    assert (audio_out["ConsumedQuantity"], audio_out["BilledCost"]) == (Decimal(589), Decimal(589) * 200 / M)
    assert by[("gpt-4o-audio-preview-2024-12-17", "output")]["ConsumedQuantity"] == Decimal(107)
    image = {kind: by[("gpt-image-1", kind)]["ConsumedQuantity"] for kind in ("input", "image_input", "image_output")}
    assert image == {"input": Decimal(48), "image_input": Decimal(1_530), "image_output": Decimal(4_160)}
    assert ("gpt-image-1", "output") not in by  # no text output tokens, no cost: no row
