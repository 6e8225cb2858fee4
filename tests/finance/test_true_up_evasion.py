"""The two evasions of issue 25 end to end — gateway events through the pipeline into the database,
the Azure bill imported, `metering true-up` stored — on SQLite and PostgreSQL: two subscriptions with
the same true o4-mini usage (10 requests each, 200,000 input and 1,000,000 output tokens: 4.62 USD),
one hiding it. Token share charged the evader 0.45 (streams without include_usage) or 0.04
(capture=usage, no usage) and the honest team the rest of the 9.24 bill."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from azure_shapes import chat_stream
from bill_exports import RESOURCE, Charge, focus_csv
from cli_runner import run
from db.engine import make_engine
from events import encode, v1_event
from metering.ingest import Ingestor
from metering.model import RawEvent

RATES = ("model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
         "o4-mini,global,,2025-04-16,,USD,1.10,0.275,4.40\n")
DEPLOYMENTS = "backend_id,deployment,model,deployment_type\n,o4-mini,o4-mini,global\n"
BACKENDS = f"backend_id,resource_id,region\naoai-swedencentral,{RESOURCE},swedencentral\n"
BILL = [Charge("2026-10-15", "o4-mini-0416-Inp-glbl", "0.4", "1M Tokens", "0.44"),
        Charge("2026-10-15", "o4-mini-0416-Outp-glbl", "2", "1M Tokens", "8.80")]
TRUE_SHARE = Decimal("4.62")
REQUEST = {"messages": [{"role": "user", "content": "Plan the quarter's chargeback review, step by step."}],
           "stream": True}


def _honest(index: int) -> dict:
    return v1_event(f"honest-{index}", time=f"2026-10-15T{index:02d}:00:00Z",
                    subscription={"id": "sub-honest", "name": "Honest"}, deployment="o4-mini",
                    model="o4-mini-2025-04-16",
                    usage={"prompt_tokens": 20_000, "completion_tokens": 100_000, "total_tokens": 120_000,
                           "completion_tokens_details": {"reasoning_tokens": 97_000}})


def _evader(index: int, how: str) -> dict:
    common = {"time": f"2026-10-15T{index:02d}:30:00Z", "subscription": {"id": "sub-evader", "name": "Evader"},
              "deployment": "o4-mini", "stream": True}
    if how == "stream_without_usage":  # the policy captured the stream; it has no usage chunk
        return v1_event(f"evader-{index}", **common, capture="full", model=None, usage=None, request=REQUEST,
                        response=chat_stream(["Step 1: list the meters. ", "Step 2: compare them."],
                                             model="o4-mini-2025-04-16"))
    return v1_event(f"evader-{index}", **common, capture="usage", model="o4-mini-2025-04-16", usage=None)


@pytest.mark.parametrize("how,source", [("stream_without_usage", "estimated"), ("capture_usage", "none")])
def test_an_evader_pays_at_least_its_true_share(capsys, db, tmp_path, how, source):
    for name, text in (("rates.csv", RATES), ("deployments.csv", DEPLOYMENTS), ("backends.csv", BACKENDS)):
        (tmp_path / name).write_text(text, encoding="utf-8")
    for args in (["rates", "import", str(tmp_path / "rates.csv")],
                 ["deployments", "import", str(tmp_path / "deployments.csv")],
                 ["backends", "import", str(tmp_path / "backends.csv")]):
        assert run(capsys, "--db", db, *args)[0] == 0
    engine = make_engine(db)
    Ingestor(engine).ingest([RawEvent(encode(e)) for i in range(10) for e in (_honest(i), _evader(i, how))])
    with engine.connect() as conn:
        sources = set(conn.execute(sa.text(
            "SELECT DISTINCT usage_source FROM usage_records WHERE subscription_id = 'sub-evader'")).scalars())
    assert sources == {source}
    (tmp_path / "bill.csv").write_bytes(focus_csv(BILL))
    assert run(capsys, "--db", db, "bill", "import", str(tmp_path / "bill.csv"))[0] == 0
    code, out, err = run(capsys, "--db", db, "true-up", "--month", "2026-10")
    assert code == 0, err
    assert "trued-up chargeback 9.24 USD = Azure bill 9.24 USD" in out
    with engine.connect() as conn:
        charged = dict(conn.execute(sa.text(
            "SELECT subscription_id, final_charge FROM v_true_up_monthly WHERE month = '2026-10'")).all())
        reasons = conn.execute(sa.text(
            "SELECT reason FROM true_up_allocations WHERE subscription_id = 'sub-evader' AND rule = 'hidden_usage'"
        )).scalars().all()
    engine.dispose()
    charged = {k: Decimal(str(v)) for k, v in charged.items()}
    assert charged["sub-evader"] >= TRUE_SHARE  # within the documented bound: exactly its true share
    assert charged == {"sub-honest": TRUE_SHARE, "sub-evader": TRUE_SHARE}
    assert reasons and all("estimated, partial or missing" in reason for reason in reasons)
