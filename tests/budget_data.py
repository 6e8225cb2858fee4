"""Seven weeks of priced usage (2026-10-04 .. 2026-11-20) for the budget tests, with spend known to
the cent: each gpt-4o request of 200,000 prompt and 20,000 completion tokens costs 0.50 + 0.20 =
0.70 USD on the card below.

* sub-finance (Finance, CC-1042): 10 requests on weekdays (7.00), 2 on weekends (1.40); a PTU
  allocation of 50.00 for November. Nov 1..20: 15 weekdays, 5 weekend days → 112.00 + 50.00.
* sub-care (Customer Service, CC-2210): 5 requests a day (3.50), and 60 on Thu 2026-11-12 (42.00),
  a spike: Nov 1..20 = 19 × 3.50 + 42.00 = 108.50.
* sub-legal (Legal, CC-3005): one request a day (0.70), one to a model without a rate (unpriced),
  one stream of ~2,000 tokens captured without usage (estimated,
  about 0.02 a day).
* sub-lab: unmapped, no budget, one request a day.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache
from decimal import Decimal

import sqlalchemy as sa

from azure_shapes import chat_stream, sample_words
from db import ptu_allocations
from db import rate_card as rate_card_store
from db import subscriptions as subscription_store
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.model import RawEvent
from metering.price.rate_card import parse_rates_csv

FIRST, AS_OF, SPIKE = date(2026, 10, 4), date(2026, 11, 20), date(2026, 11, 12)
MONTH = "2026-11"
REQUEST_COST = Decimal("0.70")
RATES = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
)
SUBSCRIPTIONS = [
    {"subscription_id": "sub-finance", "business_unit": "Finance", "cost_center": "CC-1042", "owner": "cfo@contoso.com"},
    {"subscription_id": "sub-care", "business_unit": "Customer Service", "cost_center": "CC-2210", "owner": None},
    {"subscription_id": "sub-legal", "business_unit": "Legal", "cost_center": "CC-3005", "owner": None},
]
BUDGETS_CSV = (
    "scope,scope_id,amount,currency,alert_at,action\n"
    'business_unit,Finance,200.00,USD,"50,80,100",alert\n'
    'subscription,sub-care,100,USD,"50,80,100",block\n'
    "cost_center,CC-3005,500,USD,80,alert\n"
)
USAGE = {"prompt_tokens": 200_000, "completion_tokens": 20_000, "total_tokens": 220_000}
STREAM_REQUEST = {"messages": [{"role": "user", "content": "Draft a reply to the supplier."}], "stream": True}


def daily_requests(subscription: str, day: date) -> int:
    if subscription == "sub-finance":
        return 10 if day.weekday() < 5 else 2
    if subscription == "sub-care":
        return 60 if day == SPIKE else 5
    return 1


def events() -> list[dict]:
    found = []
    day = FIRST
    while day <= AS_OF:
        for sid in ("sub-finance", "sub-care", "sub-legal", "sub-lab"):
            for n in range(daily_requests(sid, day)):
                found.append(v1_event(f"{sid}-{day.isoformat()}-{n}", time=f"{day.isoformat()}T{8 + n % 12:02d}:{n % 60:02d}:00Z",
                                      subscription={"id": sid, "name": sid[4:].title()}, usage=dict(USAGE)))
        found.append(v1_event(f"legal-unpriced-{day.isoformat()}", time=f"{day.isoformat()}T10:00:00Z",
                              subscription={"id": "sub-legal", "name": "Legal"}, model="mystery-7b", deployment="mystery"))
        found.append(v1_event(f"legal-stream-{day.isoformat()}", time=f"{day.isoformat()}T11:00:00Z",
                              subscription={"id": "sub-legal", "name": "Legal"}, stream=True, capture="full", usage=None,
                              model=None, request=STREAM_REQUEST,
                              response=chat_stream(sample_words(2000))))
        day += timedelta(days=1)
    return found


@lru_cache(maxsize=1)
def _raw_events() -> tuple[RawEvent, ...]:
    return tuple(RawEvent(encode(e)) for e in events())


def seed(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(RATES))
        subscription_store.replace_subscriptions(conn, SUBSCRIPTIONS)
    totals = Ingestor(engine).ingest(list(_raw_events()))
    assert totals.quarantined == 0
    from datetime import datetime, timezone

    with engine.begin() as conn:
        ptu_allocations.replace_month(conn, MONTH, [
            {"deployment": "gpt-4o-ptu", "backend_id": "aoai-ptu", "subscription_id": "sub-finance", "requests": 40,
             "tokens": 400_000, "allocated_cost": Decimal("50.00"), "monthly_cost": Decimal("50.00"), "currency": "USD"},
        ], datetime(2026, 11, 20, tzinfo=timezone.utc))
