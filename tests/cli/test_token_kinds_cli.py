"""What the card cannot price is never silent: `rates list` warns about token kinds priced by the
fallback, reports count them in their data quality, and a short model name (Azure's ``ada``)
prices through the deployments mapping."""

from __future__ import annotations

import json
from decimal import Decimal

from azure_shapes import usage_object
from cli_runner import run
from events import jsonl, v1_event

RATES = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m,"
    "audio_output_per_1m\n"
    "gpt-4o-mini,global,,2024-07-18,,USD,0.15,0.075,0.60,\n"
    "gpt-4o-audio-preview,global,,2024-12-17,,USD,2.50,,10.00,200.00\n"
    "text-embedding-ada-002,global,,2023-01-01,,USD,0.10,,0,\n"
)


def setup(capsys, db, tmp_path):
    rates = tmp_path / "rates.csv"
    rates.write_text(RATES)
    deployments = tmp_path / "deployments.csv"
    deployments.write_text("backend_id,deployment,model,deployment_type\n,embeddings,text-embedding-ada-002,global\n")
    capture = tmp_path / "capture.jsonl"
    capture.write_bytes(jsonl([
        # audio input without an audio_input price: priced at the text input rate, flagged
        v1_event("audio", model="gpt-4o-audio-preview-2024-12-17", deployment="gpt-4o-audio",
                 usage=usage_object(1_000, 700, audio_prompt=400, audio_completion=589)),
        v1_event("mini", model="gpt-4o-mini-2024-07-18", deployment="chat", usage=usage_object(1_000, 10)),
        v1_event("ada", model="ada", deployment="embeddings", operation="embeddings_create",
                 usage={"prompt_tokens": 2_000, "total_tokens": 2_000}),
    ]))
    for args in (("rates", "import", str(rates)), ("deployments", "import", str(deployments)),
                 ("replay", str(capture))):
        code, _, err = run(capsys, "--db", db, *args)
        assert code == 0, err


def test_rates_list_warns_about_kinds_the_card_cannot_price(capsys, db, tmp_path):
    setup(capsys, db, tmp_path)
    code, out, _ = run(capsys, "--db", db, "rates", "list")
    assert code == 0
    warning = out[out.index("warning: token kinds"):]
    assert "gpt-4o-audio-preview-2024-12-17" in warning and "audio_input" in warning and "1 requests" in warning
    assert "audio_output=200.00" in out  # the card shows the kind prices it has
    assert "text-embedding-ada-002" not in warning and "no rate" not in out  # ada priced through the mapping


def test_reports_count_fallback_priced_requests_and_price_the_alias(capsys, db, tmp_path):
    setup(capsys, db, tmp_path)
    code, out, _ = run(capsys, "--db", db, "report", "--month", "2026-10")
    assert code == 0 and "1 priced with a fallback rate" in out
    code, out, _ = run(capsys, "--db", db, "report", "--month", "2026-10", "--by", "model", "--format", "json")
    report = json.loads(out)
    assert report["data_quality"]["fallback_priced_requests"] == 1
    rows = {row["model"]: row for row in report["rows"]}
    assert Decimal(rows["text-embedding-ada-002"]["cost"]) == Decimal("0.0002")
    audio = rows["gpt-4o-audio-preview-2024-12-17"]
    assert (audio["audio_prompt_tokens"], audio["audio_completion_tokens"]) == (400, 589)
    assert Decimal(audio["cost"]) == (Decimal(1_000) * Decimal("2.50") + Decimal(111) * 10 + Decimal(589) * 200) / 1_000_000
