"""A seeded month of usage for the report, FOCUS and PTU tests: several subscriptions (one with no
business unit, one request with no subscription at all), pay-as-you-go and provisioned deployments,
cached tokens, an estimated stream, a request without usage, a model without a rate, throttled
requests, and usage just outside October 2026 that must never count in it."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import sqlalchemy as sa

from azure_shapes import chat_stream
from db import rate_card as rate_card_store
from db import subscriptions as subscription_store
from db.schema import usage_records
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.price.mappings import parse_deployments_csv
from metering.model import RawEvent
from metering.price.rate_card import parse_rates_csv

MONTH = "2026-10"
SINCE = datetime(2026, 10, 1, tzinfo=timezone.utc)
UNTIL = datetime(2026, 11, 1, tzinfo=timezone.utc)

RATES = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global,,2024-01-01,,USD,2.50,1.25,10.00\n"
    "gpt-4o-mini,datazone,,2024-07-18,,USD,0.165,0.083,0.66\n"
    "gpt-4.1,global,,2025-04-14,,USD,2.00,,8.00\n"
)
DEPLOYMENTS = (
    "backend_id,deployment,model,deployment_type\n"
    ",chat-prod,gpt-4o-mini,datazone\n"
    ",gpt-4.1,gpt-4.1,global\n"
    "aoai-ptu,gpt-4o-ptu,gpt-4o,provisioned\n"
)
SUBSCRIPTIONS = [
    {"subscription_id": "sub-finance", "business_unit": "Finance", "cost_center": "CC-1042", "owner": "a@contoso.com"},
    {"subscription_id": "sub-care", "business_unit": "Customer Service", "cost_center": "CC-2210", "owner": None},
    {"subscription_id": "sub-legal", "business_unit": "Legal", "cost_center": "CC-3005", "owner": None},
]
CHAT_REQUEST = {"messages": [{"role": "user", "content": "Summarise the quarterly chargeback in one line."}],
                "stream": True}
PTU_COSTS = "deployment,backend_id,month,monthly_cost,currency\ngpt-4o-ptu,aoai-ptu,2026-10,1000.00,USD\n"


def _sub(sid: str | None) -> dict | None:
    return None if sid is None else {"id": sid, "name": sid.replace("sub-", "").title()}


def events() -> list[dict]:
    out: list[dict] = []
    subs = ["sub-finance", "sub-care", "sub-legal", "sub-lab", "sub-care"]  # 5 against 6 kinds: every mix occurs
    for i in range(36):
        day = 1 + (i * 5) % 31
        sid = subs[i % len(subs)]
        time = f"2026-10-{day:02d}T{(i * 7) % 24:02d}:15:00Z"
        kind = i % 6
        if kind in (0, 1):  # gpt-4o global, some with cached tokens
            usage = {"prompt_tokens": 1000 + 37 * i, "completion_tokens": 120 + 11 * i, "total_tokens": 1120 + 48 * i}
            if kind == 1:
                usage["prompt_tokens_details"] = {"cached_tokens": 512}
            out.append(v1_event(f"g-{i}", time=time, subscription=_sub(sid), usage=usage,
                                user={"id": f"user-{i % 4}", "email": None}, product=["ai-standard", "ai-premium"][i % 2]))
        elif kind == 2:  # chat-prod → gpt-4o-mini datazone (model from the mapping)
            out.append(v1_event(f"m-{i}", time=time, subscription=_sub(sid), deployment="chat-prod",
                                model="gpt-4o-mini-2024-07-18",
                                usage={"prompt_tokens": 333 + i, "completion_tokens": 77, "total_tokens": 410 + i}))
        elif kind == 3:  # gpt-4.1 (no cached rate on the card: cached input at the input rate)
            out.append(v1_event(f"f-{i}", time=time, subscription=_sub(sid), deployment="gpt-4.1",
                                model="gpt-4.1-2025-04-14",
                                usage={"prompt_tokens": 2048 + i, "completion_tokens": 256, "total_tokens": 2304 + i,
                                       "prompt_tokens_details": {"cached_tokens": 1024}}))
        elif kind == 4:  # provisioned (PTU): tokens, no per-token cost
            out.append(v1_event(f"p-{i}", time=time, subscription=_sub(sid), deployment="gpt-4o-ptu",
                                model="gpt-4o-2024-08-06",
                                backend={"id": "aoai-ptu", "url": "https://ptu.openai.azure.com/openai",
                                         "region": "Sweden Central"},
                                usage={"prompt_tokens": 900 + 13 * i, "completion_tokens": 100 + i,
                                       "total_tokens": 1000 + 14 * i}))
        else:  # an estimated stream (no usage in the capture)
            out.append(v1_event(f"e-{i}", time=time, subscription=_sub(sid), stream=True, capture="full", usage=None,
                                model=None, request=CHAT_REQUEST,
                                response=chat_stream(["The", " quarter", " closed", " on", " budget", "."])))
    out += [
        v1_event("unknown-model", time="2026-10-09T10:00:00Z", subscription=_sub("sub-legal"), model="mystery-7b",
                 deployment="mystery"),
        v1_event("throttled-1", time="2026-10-10T10:00:00Z", subscription=_sub("sub-care"), status=429, usage=None,
                 model=None),
        v1_event("no-usage", time="2026-10-11T10:00:00Z", subscription=_sub("sub-finance"), usage=None, model=None,
                 capture="usage"),
        v1_event("no-subscription", time="2026-10-12T10:00:00Z", subscription=None),
        v1_event("last-second", time="2026-10-31T23:59:59.999Z", subscription=_sub("sub-lab")),
        v1_event("september", time="2026-09-30T23:59:59Z", subscription=_sub("sub-finance")),
        v1_event("november", time="2026-11-01T00:00:00Z", subscription=_sub("sub-finance")),
    ]
    return out


def seed(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(RATES))
        rate_card_store.replace_deployments(conn, parse_deployments_csv(DEPLOYMENTS))
        subscription_store.replace_subscriptions(conn, SUBSCRIPTIONS)
    Ingestor(engine).ingest([RawEvent(encode(e)) for e in events()])


def db_total(engine: sa.Engine, since: datetime = SINCE, until: datetime = UNTIL) -> tuple[Decimal, int, int]:
    """SUM(total_cost) (exact), requests and tokens over usage_records for the period, straight from the table."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(usage_records.c.total_cost, usage_records.c.total_tokens).where(
            usage_records.c.event_time >= since, usage_records.c.event_time < until)).all()
    return sum((r.total_cost for r in rows if r.total_cost is not None), Decimal(0)), len(rows), sum(r.total_tokens for r in rows)
