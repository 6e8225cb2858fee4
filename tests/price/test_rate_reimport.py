"""Re-importing a rate whose model or region is spelled differently (case, "East US 2" vs
"eastus2") replaces the stored rate: the card compares those spellings as one key, so storage must too."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import sqlalchemy as sa

from db import rate_card as rate_card_store
from db.schema import rates
from metering.cli import main

HEADER = "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"


def test_reimport_with_another_spelling_replaces_the_stored_rate(capsys, db_url, tmp_path):
    assert main(["--db", db_url, "db", "upgrade"]) == 0
    first = tmp_path / "first.csv"
    first.write_text(HEADER + "GPT-4o,regional,East US 2,2025-01-01,,USD,2.50,1.25,10.00\n")
    corrected = tmp_path / "corrected.csv"
    corrected.write_text(HEADER + "gpt-4o,regional,eastus2,2025-01-01,,USD,2.75,1.375,11.00\n")
    assert main(["--db", db_url, "rates", "import", str(first)]) == 0
    assert main(["--db", db_url, "rates", "import", str(corrected)]) == 0
    out = capsys.readouterr().out
    assert "0 added, 1 replaced" in out

    from db.engine import make_engine

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(rates)).scalar() == 1
            card = rate_card_store.load_rate_card(conn)
        rate = card.find_rate("gpt-4o-2024-11-20", "regional", "East US 2", datetime(2026, 10, 1, tzinfo=timezone.utc))
        assert rate is not None and rate.input_per_1m == Decimal("2.75")  # the corrected price, not the old one
    finally:
        engine.dispose()
    # ... and the card stays importable (no self-overlap left behind)
    assert main(["--db", db_url, "rates", "import", str(corrected)]) == 0
